"""Run a task body and turn every failure into an owner-facing TaskOutcome.

The embed and rag tasks answer with an envelope instead of raising, so the API
gets the message and HTTP status intact (a pickled exception would lose both).
Transient failures are retried by Celery before they are reported.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from celery import Task

from configs.contracts.memory import TaskOutcome
from configs.contracts.errors import BackendError, TransientBackendError
from configs.contracts.errors import ErrorInfo

log = logging.getLogger("appliance.worker")


def run_task(task: Task, body: Callable[[], Any], known: tuple[type[Exception], ...] = ()) -> dict:
    try:
        result = body()
    except TransientBackendError as exc:
        if task.request.retries < (task.max_retries or 0):
            raise task.retry(exc=exc, countdown=2 ** task.request.retries)
        return TaskOutcome(ok=False, error=exc.info()).model_dump()
    except BackendError as exc:
        return TaskOutcome(ok=False, error=exc.info()).model_dump()
    except known as exc:
        info = ErrorInfo(code=getattr(exc, "code", "error"), message=str(exc), status=getattr(exc, "status", 500))
        return TaskOutcome(ok=False, error=info).model_dump()
    except Exception as exc:  # an unexpected bug still reaches the owner as a clear error
        log.exception("task %s failed", task.name)
        info = ErrorInfo(code="worker_error", message=f"{task.name}: {exc.__class__.__name__}: {exc}", status=500)
        return TaskOutcome(ok=False, error=info).model_dump()
    if hasattr(result, "model_dump"):
        result = result.model_dump()
    return TaskOutcome(ok=True, result=result).model_dump()
