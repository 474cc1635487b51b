"""OpenAI-compatible routes: POST /v1/chat/completions, GET /v1/models."""

from __future__ import annotations

import json
from typing import AsyncIterator

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse

from core_agent.access.principal import Principal
from core_agent.api.deps import AppState, get_state, require_principal
from core_agent.api.errors import error_response
from core_agent.api.sse_keepalive import result_unless_gone, turn_stream_response
from core_agent.api.openai_protocol import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    ChunkChoice,
    DeltaMessage,
    ModelCard,
    ModelList,
    UsageInfo,
)
from core_agent.api import openai_tools_wire as tools_wire
from core_agent.api.sse_chunks import PieceChunks
from core_agent.orchestration.chat_service import BadChatRequest, ChatFailed, ChatRun, ChatTurn, Thought
from core_agent.api.request_options import failed_turn_response, run_headers, with_request_options
from lora_manager.naming import split_model
from configs.contracts.images import BadImage, decode_data_url
from configs.contracts.tasks import Attachment, ChatMessage, GenerationParams, TaskResult

router = APIRouter(prefix="/v1", dependencies=[Depends(require_principal)], tags=["openai"])


def _usage(result: TaskResult) -> UsageInfo:
    u = result.usage
    return UsageInfo(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                     total_tokens=u.total_tokens)


def _image_url(part: dict) -> str:
    image_url = part.get("image_url")
    if not isinstance(image_url, dict) or not isinstance(image_url.get("url"), str):
        raise BadChatRequest('an image_url part must be {"type": "image_url", "image_url": {"url": '
                             '"data:image/png;base64,..."}} (image_url is an object with a string url)')
    return image_url["url"]


def _attachments(messages: list[ChatMessage], state: AppState) -> tuple[list[ChatMessage], list[Attachment]]:
    """Split image parts off the messages (validated here, so a bad image is a 400/413
    before anything is queued); the model sees the text, the vision worker the images."""
    limits = state.settings.vision
    attachments: list[Attachment] = []
    cleaned: list[ChatMessage] = []
    for message in messages:
        if not isinstance(message.content, list):
            cleaned.append(message)
            continue
        for part in message.content:
            if part.get("type") == "image_url":
                url = _image_url(part)
                try:
                    decode_data_url(url, limits.max_image_bytes, limits.max_pixels)
                except BadImage as exc:
                    raise ChatFailed(exc.info()) from None
                attachments.append(Attachment(data_url=url, name=f"image-{len(attachments) + 1}"))
            elif part.get("type") == "text" and not isinstance(part.get("text"), str):
                raise BadChatRequest('a text part must be {"type": "text", "text": "..."} with a string text')
            elif part.get("type") != "text":
                raise BadChatRequest(f"content part type '{part.get('type')}' is not supported; use text or image_url")
        cleaned.append(message.model_copy(update={"content": message.text()}))
    return cleaned, attachments


def _turn(body: ChatCompletionRequest, state: AppState, conversation_header: str | None,
          principal: Principal) -> ChatTurn:
    params = GenerationParams(
        max_tokens=body.max_completion_tokens or body.max_tokens, temperature=body.temperature,
        top_p=body.top_p, stop=body.stop_list(), seed=body.seed,
        response_format=body.response_format, adapter=body.adapter, **tools_wire.tool_fields(body),
    )
    messages, attachments = _attachments(body.messages, state)
    # "model": "core:sport" names the base model and an adapter in one field.
    model, named_adapter = split_model(body.model or state.settings.default_model)
    if named_adapter and body.adapter and named_adapter != body.adapter:
        raise BadChatRequest(f"model names adapter '{named_adapter}' but the adapter field says "
                             f"'{body.adapter}'; name it once")
    params.adapter = body.adapter or named_adapter
    return ChatTurn(model=model, messages=messages,
                    params=params, conversation_id=body.conversation_id or conversation_header,
                    stream=body.stream, mode=body.mode, profile=body.profile, source="owner",
                    allow_code_execution=body.allow_code_execution, attachments=attachments, plan=body.plan,
                    principal=principal)


DONE = "data: [DONE]\n\n"


def _sse(chunk: ChatCompletionChunk | dict) -> str:
    data = chunk.model_dump_json(exclude_none=True) if isinstance(chunk, ChatCompletionChunk) else json.dumps(chunk)
    return f"data: {data}\n\n"


async def _sse_stream(run: ChatRun, first: str | Thought | None, include_usage: bool,
                      legacy: bool = False) -> AsyncIterator[str]:
    def chunk(**delta: str) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=f"chatcmpl-{run.task_id}", model=run.model,
                                   choices=[ChunkChoice(delta=DeltaMessage(**delta))])

    rendered = PieceChunks(f"chatcmpl-{run.task_id}", run.model)  # one template per stream

    def piece_sse(piece: str | Thought) -> str:
        # Reasoning travels in its own field, never inside content.
        return rendered.reasoning(piece.text) if isinstance(piece, Thought) else rendered.content(piece)

    # The role chunk and the first text go out in one write, as do the last chunks and
    # [DONE]: each write is a socket send through every middleware (issue 17, API CPU).
    opening = _sse(chunk(role="assistant", content=""))
    yield opening + piece_sse(first) if first else opening
    try:
        if first is not None:  # None: the answer already ended (no text, e.g. only tool calls)
            async for piece in run.pieces():
                yield piece_sse(piece)
        result = await run.result()
    except ChatFailed as exc:
        # The status line is already sent; report the failure in-band, as OpenAI does.
        yield _sse({"error": {"message": exc.info.message, "type": exc.info.code, "code": exc.info.status}}) + DONE
        return
    closing = [_sse(ChatCompletionChunk(id=f"chatcmpl-{run.task_id}", model=run.model,
                                        choices=[ChunkChoice(delta=delta)]))
               for delta in tools_wire.tool_call_deltas(result, legacy)]
    closing.append(_sse(ChatCompletionChunk(
        id=f"chatcmpl-{run.task_id}", model=run.model,
        choices=[ChunkChoice(delta=DeltaMessage(), logprobs=tools_wire.choice_logprobs(result),
                             finish_reason=tools_wire.finish_reason(result, legacy))])))
    if include_usage:
        closing.append(_sse(ChatCompletionChunk(id=f"chatcmpl-{run.task_id}", model=run.model, choices=[],
                                                usage=_usage(result))))
    yield "".join(closing) + DONE


@router.post("/chat/completions", response_model=ChatCompletionResponse)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    x_conversation_id: str | None = Header(default=None),
    principal: Principal = Depends(require_principal),
):
    state = get_state(request)
    run: ChatRun | None = None
    try:
        run = await state.chat.start(with_request_options(_turn(body, state, x_conversation_id, principal),
                                                          body, request))
        if body.stream:
            first = await run.first_piece()
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return turn_stream_response(_sse_stream(run, first, include_usage, tools_wire.is_legacy(body)), run,
                                        state.chat.cancel)
        result = await result_unless_gone(run, request.is_disconnected, state.chat.cancel)
    except ChatFailed as exc:
        return failed_turn_response(exc.info, run)
    response = ChatCompletionResponse(
        id=f"chatcmpl-{run.task_id}", model=run.model,
        choices=[Choice(message=tools_wire.response_message(result, tools_wire.is_legacy(body)),
                        finish_reason=tools_wire.finish_reason(result, tools_wire.is_legacy(body)),
                        logprobs=tools_wire.choice_logprobs(result))],
        usage=_usage(result), conversation_id=run.conversation_id, task_id=run.task_id, sources=run.sources,
    )
    return JSONResponse(response.model_dump(), headers=run_headers(run))


@router.get("/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    state = get_state(request)
    return ModelList(data=[ModelCard(id=name) for name in state.settings.models])


@router.get("/models/{model_id:path}", response_model=ModelCard)
async def get_model(model_id: str, request: Request):
    state = get_state(request)
    base, _adapter = split_model(model_id)
    if base not in state.settings.models:
        return error_response(404, f"model '{model_id}' does not exist. Available: {sorted(state.settings.models)}",
                              "model_not_found")
    return ModelCard(id=model_id)
