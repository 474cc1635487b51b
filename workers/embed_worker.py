"""The `embed` queue: texts -> vectors with the configured embedding model.

Serves POST /v1/embeddings (core_agent/api/routes_embeddings.py) and any plan step
that needs vectors. The rag worker embeds in-process instead (see docs/memory.md).
"""

from __future__ import annotations

import logging

from celery.signals import celeryd_after_setup, worker_process_init

from typing import Any

from configs.contracts.errors import BackendError
from configs.contracts.memory import EMBED_TEXTS, EmbedRequest, EmbedResult
from configs.contracts.tasks import TaskResult, Usage, value_result
from workers.backends.embeddings import use_torch_threads
from workers.backends.registry import embedding_backend
from workers.events import EventPublisher
from workers.published_task import published_task
from workers.runtime import settings

log = logging.getLogger("appliance.worker.embed")
_serves_embed = False


@celeryd_after_setup.connect
def _note_queues(sender: str, instance, **_: object) -> None:
    # Every worker imports every task module; only the one consuming "embed" preloads.
    global _serves_embed
    queues = instance.app.amqp.queues
    _serves_embed = "embed" in (queues.consume_from or queues)  # no -Q: the worker consumes every queue


@worker_process_init.connect
def _preload(**_: object) -> None:
    if not _serves_embed:
        return
    try:
        backend = embedding_backend(settings())
        backend.check()
        log.info("embedding model %s ready (%d dims)", backend.model_name, backend.dimension)
    except BackendError as exc:
        log.error("cannot preload the embedding model: %s", exc)


def embed_texts(request: EmbedRequest) -> EmbedResult:
    use_torch_threads(settings().embeddings.torch_threads)
    backend = embedding_backend(settings(), request.model)
    batch = backend.embed(request.texts)
    return EmbedResult(model=backend.model_name, dimension=len(batch.vectors[0]), vectors=batch.vectors,
                       prompt_tokens=batch.prompt_tokens)


@published_task(EMBED_TEXTS, max_retries=2)
def texts(payload: dict[str, Any], publisher: EventPublisher) -> TaskResult:
    result = embed_texts(EmbedRequest.model_validate(payload))
    answer = value_result(result, model=result.model)
    answer.usage = Usage(prompt_tokens=result.prompt_tokens)
    return answer
