"""OpenAI-compatible POST /v1/embeddings, served by the `embed` queue."""

from __future__ import annotations

import base64
import time
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict

from core_agent.access.principal import Principal
from core_agent.api.deps import get_state, require_principal
from core_agent.api.errors import error_response
from core_agent.orchestration.dispatcher import DispatchError
from configs.contracts.memory import EMBED_TEXTS, EmbedResult
from configs.contracts.tasks import result_value

router = APIRouter(prefix="/v1", tags=["openai"])
EMBED_TIMEOUT_S = 120.0


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # e.g. `user`, `dimensions` from OpenAI clients

    input: str | list[str] | list[int] | list[list[int]]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"


def _encode(vector: list[float], fmt: str) -> list[float] | str:
    if fmt == "base64":  # what the official client asks for by default: little-endian float32
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    return vector


@router.post("/embeddings")
async def embeddings(body: EmbeddingsRequest, request: Request,
                     principal: Principal = Depends(require_principal)) -> Any:
    principal.require_worker("embed", "compute embeddings")
    state = get_state(request)
    models = state.settings.embeddings.models
    model = body.model or state.settings.embeddings.default_model
    if model not in models:
        return error_response(404, f"embedding model '{model}' does not exist. Available: {sorted(models)}",
                              "model_not_found")
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts or not all(isinstance(t, str) for t in texts):
        return error_response(400, "input must be a non-empty string or list of strings (token id arrays "
                                   "are not supported: send the text)", "invalid_request")
    try:
        answer = await state.dispatcher.call(EMBED_TEXTS, {"texts": texts, "model": model}, queue="embed",
                                             timeout_s=EMBED_TIMEOUT_S, expires=True)
    except DispatchError as exc:  # TaskFailed too: the worker's own message and status
        return error_response(exc.info.status, exc.info.message, exc.info.code)
    result = EmbedResult.model_validate(result_value(answer))
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
                 for i, v in enumerate(result.vectors)],
        "model": model,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
        "created": int(time.time()),
    }
