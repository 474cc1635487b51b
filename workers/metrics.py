"""The workers' own metrics: every finished task adds to counters in Redis, which the
API exports on /metrics (the contract: configs/contracts/metrics.py)."""

from __future__ import annotations

import logging

import redis

from configs.contracts.metrics import WORKER_METRICS_KEY, metric_field
from configs.contracts.tasks import TaskResult

log = logging.getLogger("appliance.worker")


def record_task(client: redis.Redis, task: str, queue: str, host: str, outcome: str, seconds: float,
                result: TaskResult | None = None) -> None:
    """Count one finished task. Never fails the task: metrics are best effort."""
    try:
        pipe = client.pipeline(transaction=False)
        add_task_metrics(pipe, task, queue, host, outcome, seconds, result)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("could not record metrics of %s: %s", task, exc)


def add_task_metrics(pipe: redis.client.Pipeline, task: str, queue: str, host: str, outcome: str, seconds: float,
                     result: TaskResult | None = None) -> None:
    """The counter updates of one finished task, added to `pipe` (a succeeded task's go
    with its `done` event: one round trip less per task, see workers/published_task.py)."""
    labels = {"task": task, "queue": queue, "worker": host}
    pipe.hincrbyfloat(WORKER_METRICS_KEY, metric_field("appliance_worker_tasks_total",
                                                       {**labels, "outcome": outcome}), 1)
    pipe.hincrbyfloat(WORKER_METRICS_KEY, metric_field("appliance_worker_task_seconds_total", labels), seconds)
    if result is not None:
        model = {"model": result.model, "adapter": result.adapter or "", "worker": host}
        for kind, count in (("prompt", result.usage.prompt_tokens), ("completion", result.usage.completion_tokens)):
            if count:
                pipe.hincrbyfloat(WORKER_METRICS_KEY,
                                  metric_field("appliance_worker_tokens_total", {**model, "kind": kind}), count)
