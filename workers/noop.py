"""`<queue>.noop` on every queue: a step that does nothing, for measuring dispatch overhead
(bench/bench_dispatch.py) and for checking a queue end to end."""

from __future__ import annotations

from typing import Any

from configs.schema import QUEUE_NAMES
from workers.events import EventPublisher
from configs.contracts.tasks import TaskResult
from workers.published_task import published_task


def noop(payload: dict[str, Any], publisher: EventPublisher) -> TaskResult:
    return TaskResult(text=str(payload.get("echo", "")), model="noop")


NOOP_TASKS = {queue: published_task(f"{queue}.noop", max_retries=0)(noop) for queue in QUEUE_NAMES}
