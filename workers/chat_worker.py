"""The `chat` queue: run a chat model and stream its tokens back to the core."""

from __future__ import annotations

import logging
import time

from celery.signals import worker_process_init

from workers.backends.base import BackendError, TransientBackendError
from workers.backends.registry import chat_backend
from workers.celery_app import app
from workers.events import EventPublisher
from workers.protocol import ChatResult, ChatTask, ErrorInfo, Usage
from workers.runtime import models_to_preload, redis_client, settings

log = logging.getLogger("appliance.worker.chat")


@worker_process_init.connect
def _preload_models(**_: object) -> None:
    """Load the configured models when the child starts, not on the first request."""
    for name in models_to_preload():
        try:
            backend = chat_backend(settings(), name)
            backend.check()
            getattr(backend, "llama", None)  # llama.cpp loads the GGUF here
            log.info("preloaded model %s", name)
        except BackendError as exc:
            # Not fatal: the request will get the same message as a clear error.
            log.error("cannot preload model %s: %s", name, exc)


def run_chat(task: ChatTask, publisher: EventPublisher) -> ChatResult:
    """Generate the answer, publishing each piece as it arrives."""
    started = time.perf_counter()
    backend = chat_backend(settings(), task.model)
    parts: list[str] = []
    finish, usage = "stop", Usage()
    for delta in backend.stream(task.messages, task.params):
        if delta.text:
            parts.append(delta.text)
            if task.stream:
                publisher.token(delta.text)
        if delta.finish_reason:
            finish = delta.finish_reason
        if delta.usage:
            usage = delta.usage
    return ChatResult(text="".join(parts), finish_reason=finish, model=task.model, usage=usage,
                      attempt=publisher.attempt, seconds=time.perf_counter() - started)


@app.task(name="chat.generate", bind=True, max_retries=2)
def generate(self, payload: dict) -> dict:
    task = ChatTask.model_validate(payload)
    publisher = EventPublisher(redis_client(), self.request.id, settings().celery.result_expires_s)
    publisher.start_attempt()
    try:
        result = run_chat(task, publisher)
    except TransientBackendError as exc:
        if self.request.retries < self.max_retries:
            raise self.retry(exc=exc, countdown=2 ** self.request.retries)
        publisher.error(exc.info())
        raise
    except BackendError as exc:
        publisher.error(exc.info())
        raise
    except Exception as exc:  # an unexpected bug still reaches the owner as a clear error
        log.exception("chat task %s failed", self.request.id)
        publisher.error(ErrorInfo(code="worker_error", message=f"{exc.__class__.__name__}: {exc}", status=500))
        raise
    publisher.done(result)
    return result.model_dump()


@app.task(name="chat.check_models")
def check_models() -> dict[str, str]:
    """Readiness probe: can this worker serve each configured model? name -> 'ok' or why not."""
    status: dict[str, str] = {}
    for name in settings().models:
        try:
            chat_backend(settings(), name).check()
            status[name] = "ok"
        except BackendError as exc:
            status[name] = str(exc)
    return status
