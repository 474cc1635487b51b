"""Celery tasks that report their progress on the task's Redis stream.

Every worker task is registered through `published_task`, so each one, whatever its
queue, tells the core the same things in the same way: a new attempt started, text
pieces (optional), the result, or an error with an owner-facing message. Transient
backend errors are retried with exponential backoff; other errors fail the task.
Tasks whose answer is a value rather than text (embed, rag, the model check) return
`value_result(...)`; the core reads every task the same way (dispatcher.wait).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable

from configs.contracts.errors import BackendError, TransientBackendError
from workers.celery_app import app
from workers.events import EventPublisher
from configs.contracts.tasks import TaskResult
from configs.contracts.errors import ErrorInfo
from workers.runtime import redis_client, settings

log = logging.getLogger("appliance.worker")

TaskBody = Callable[[dict[str, Any], EventPublisher], TaskResult]


def published_task(name: str, max_retries: int | None = None,
                   known: tuple[type[Exception], ...] = ()) -> Callable[[TaskBody], Any]:
    """Register `body(payload, publisher) -> TaskResult` as the Celery task `name`.
    `known`: exception types that carry an owner-facing message and `code`/`status`
    (like BackendError, but from a library that must not depend on workers)."""

    def decorate(body: TaskBody) -> Any:
        @app.task(name=name, bind=True, max_retries=max_retries if max_retries is not None else 2)
        def task(self, payload: dict[str, Any]) -> dict[str, Any]:
            publisher = EventPublisher(redis_client(), self.request.id, settings().celery.result_expires_s)
            publisher.start_attempt()
            started_at = time.time()
            try:
                result = body(payload, publisher)
            except TransientBackendError as exc:
                if self.request.retries < self.max_retries:
                    backoff = settings().planner.retry_backoff_s * (2 ** self.request.retries)
                    log.warning("%s %s: transient error, retry in %.1fs: %s", name, self.request.id, backoff, exc)
                    raise self.retry(exc=exc, countdown=backoff)
                publisher.error(exc.info())
                raise
            except BackendError as exc:
                publisher.error(exc.info())
                raise
            except known as exc:
                publisher.error(ErrorInfo(code=getattr(exc, "code", "error"), message=str(exc),
                                          status=getattr(exc, "status", 500)))
                raise
            except Exception as exc:  # a bug still reaches the owner as a clear error
                log.exception("%s %s failed", name, self.request.id)
                publisher.error(ErrorInfo(code="worker_error", status=500,
                                          message=f"{name} failed: {exc.__class__.__name__}: {exc}"))
                raise
            result = result.model_copy(update={
                "worker": f"{self.request.hostname}:{os.getpid()}", "started_at": started_at,
                "finished_at": time.time(), "attempt": publisher.attempt})
            publisher.done(result)
            return result.model_dump()

        return task

    return decorate
