"""The API's Prometheus metrics (docs/observability.md).

Counted where things happen: HTTP requests in a middleware, task outcomes and tokens
where the dispatcher reads a task's last event. Read at scrape time: queue depths
(Redis), the memory outbox (SQLite) and the workers' own counters (configs/contracts/
metrics.py). One registry per API process, so tests and reloads never collide with
prometheus_client's global default registry.
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric

from configs.contracts.errors import ErrorInfo
from configs.contracts.metrics import WORKER_METRICS, parse_field
from configs.contracts.tasks import TaskResult

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter("appliance_http_requests_total", "HTTP requests by method, route and status",
                        ["method", "route", "status"], registry=REGISTRY)
HTTP_SECONDS = Histogram("appliance_http_request_seconds",
                         "HTTP request duration until the last body byte (streams included)",
                         ["method", "route"], registry=REGISTRY,
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
TASK_OUTCOMES = Counter("appliance_task_outcomes_total",
                        "Tasks the core dispatched, by queue, worker host, model, adapter and outcome",
                        ["queue", "worker", "model", "adapter", "outcome"], registry=REGISTRY)
TOKENS = Counter("appliance_tokens_total", "Tokens of the tasks the core dispatched (prompt / completion)",
                 ["kind", "model", "adapter"], registry=REGISTRY)
QUEUE_DEPTH = Gauge("appliance_queue_depth", "Messages waiting on each Celery queue", ["queue"],
                    registry=REGISTRY)
UNACKED = Gauge("appliance_tasks_unacked", "Messages handed to a worker and not yet acknowledged",
                registry=REGISTRY)
OUTBOX = Gauge("appliance_memory_outbox_size", "Stored turns not yet indexed into the memory",
               registry=REGISTRY)


def _host(worker: str | None) -> str:
    """'chat@box:1234' -> 'chat@box': the pid would make a new series per pool child."""
    return (worker or "unknown").split(":", 1)[0]


def task_succeeded(queue: str, result: TaskResult) -> None:
    adapter = result.adapter or ""
    TASK_OUTCOMES.labels(queue, _host(result.worker), result.model, adapter, "succeeded").inc()
    TOKENS.labels("prompt", result.model, adapter).inc(result.usage.prompt_tokens)
    TOKENS.labels("completion", result.model, adapter).inc(result.usage.completion_tokens)


def task_failed(queue: str, error: ErrorInfo) -> None:
    TASK_OUTCOMES.labels(queue, "unknown", "", "", error.code).inc()


class WorkerCounters:
    """Exports the workers' counters (read from Redis just before each scrape)."""

    def __init__(self) -> None:
        self.fields: dict[str, float] = {}

    def collect(self) -> Iterable[Metric]:
        families: dict[str, CounterMetricFamily] = {}
        for field, value in self.fields.items():
            name, labels = parse_field(field)
            if name not in WORKER_METRICS:
                continue
            family = families.get(name)
            if family is None:
                family = families[name] = CounterMetricFamily(
                    name.removesuffix("_total"), WORKER_METRICS[name], labels=sorted(labels))
            family.add_metric([labels[k] for k in sorted(labels)], value)
        return list(families.values())


WORKER_COUNTERS = WorkerCounters()
REGISTRY.register(WORKER_COUNTERS)


async def render(queue_depths: dict[str, int], unacked: int, outbox: int,
                 worker_fields: dict[str, float]) -> bytes:
    """The exposition text, after setting the values read at scrape time."""
    for queue, depth in queue_depths.items():
        QUEUE_DEPTH.labels(queue).set(depth)
    UNACKED.set(unacked)
    OUTBOX.set(outbox)
    WORKER_COUNTERS.fields = worker_fields
    return generate_latest(REGISTRY)


class HttpMetrics:
    """ASGI middleware: count every request by its route template (not its raw path,
    which would make a series per conversation id) and time it to the last byte."""

    def __init__(self, app: Callable[..., Awaitable[Any]]) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500, "observed": False}

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                status["observed"] = True
                self._observe(scope, status["code"], started)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            if not status["observed"]:  # a failure after the last byte was already counted
                self._observe(scope, 500, started)
            raise

    @staticmethod
    def _observe(scope: dict, status: int, started: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        method = scope.get("method", "")
        HTTP_REQUESTS.labels(method, template, str(status)).inc()
        HTTP_SECONDS.labels(method, template).observe(time.perf_counter() - started)
