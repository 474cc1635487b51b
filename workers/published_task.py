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

from celery.exceptions import Retry
from opentelemetry.trace import SpanKind, Status, StatusCode

from configs.contracts.errors import BackendError, TransientBackendError
from configs.telemetry import context_from, tracer
from workers.celery_app import app
from workers.events import EventPublisher
from workers.heartbeat import Heartbeat
from workers.metrics import add_task_metrics, record_task
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
            queue = (self.request.delivery_info or {}).get("routing_key") or name.split(".", 1)[0]
            host = self.request.hostname or "unknown"
            # A child of the span that dispatched it (trace context in the message headers).
            with tracer().start_as_current_span(
                    name, context=context_from(self.request), kind=SpanKind.CONSUMER,
                    attributes={"appliance.queue": queue, "appliance.worker": host,
                                "celery.task_id": self.request.id or ""}) as span:
                started_at = time.time()
                outcome, result, recorded = "worker_error", None, False

                def count_success(pipe: Any, done: TaskResult) -> None:  # travels with the 'done' event
                    add_task_metrics(pipe, name, queue, host, "succeeded", time.time() - started_at, done)

                try:
                    result = _run(self, name, body, payload, known, count_success)
                    outcome, recorded = "succeeded", True
                    span.set_attributes({"appliance.model": result.model, "appliance.adapter": result.adapter or "",
                                         "gen_ai.usage.input_tokens": result.usage.prompt_tokens,
                                         "gen_ai.usage.output_tokens": result.usage.completion_tokens})
                    return result.model_dump()
                except Retry:
                    outcome = "retried"
                    raise
                except (BackendError, *known) as exc:
                    outcome = getattr(exc, "code", "error")
                    span.set_status(Status(StatusCode.ERROR, str(exc)))
                    raise
                finally:
                    if not recorded:
                        record_task(redis_client(), name, queue, host, outcome, time.time() - started_at, result)

        return task

    return decorate


def _run(task: Any, name: str, body: TaskBody, payload: dict[str, Any],
         known: tuple[type[Exception], ...],
         count_success: Callable[[Any, TaskResult], None] | None = None) -> TaskResult:
    """Run the body once, publishing the attempt, its result or its error.
    `count_success(pipeline, result)` adds the task's metrics to the 'done' round trip."""
    publisher = EventPublisher(redis_client(), task.request.id, settings().celery.result_expires_s,
                               flush_interval_s=settings().celery.token_flush_ms / 1000)
    publisher.start_attempt()
    started_at = time.time()
    try:
        with Heartbeat(publisher, settings().celery.heartbeat_s):  # liveness for the core
            result = body(payload, publisher)
    except TransientBackendError as exc:
        if task.request.retries < task.max_retries:
            backoff = settings().planner.retry_backoff_s * (2 ** task.request.retries)
            log.warning("%s %s: transient error, retry in %.1fs: %s", name, task.request.id, backoff, exc)
            raise task.retry(exc=exc, countdown=backoff)
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
        log.exception("%s %s failed", name, task.request.id)
        publisher.error(ErrorInfo(code="worker_error", status=500,
                                  message=f"{name} failed: {exc.__class__.__name__}: {exc}"))
        raise
    result = result.model_copy(update={
        "worker": f"{task.request.hostname}:{os.getpid()}", "started_at": started_at,
        "finished_at": time.time(), "attempt": publisher.attempt})
    publisher.done(result, also=(lambda pipe: count_success(pipe, result)) if count_success else None)
    return result
