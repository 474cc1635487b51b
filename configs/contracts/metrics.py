"""How workers report their metrics to the API's /metrics: counters in one Redis hash.

Celery's prefork children come and go and have no port to scrape, so every worker
process adds to shared counters in Redis (HINCRBYFLOAT, atomic) and the API exports
them at scrape time. A field is `<metric>` + a JSON object of its labels.
"""

from __future__ import annotations

import json

WORKER_METRICS_KEY = "appliance:metrics:workers"

# metric name -> help text; all are counters (monotonic sums).
WORKER_METRICS = {
    "appliance_worker_tasks_total": "Tasks the workers finished, by task, queue, worker host and outcome",
    "appliance_worker_task_seconds_total": "Seconds the workers spent in tasks, by task, queue and worker host",
    "appliance_worker_tokens_total": "Tokens the workers' models read (prompt) and wrote (completion)",
}


def metric_field(metric: str, labels: dict[str, str]) -> str:
    return metric + json.dumps(labels, sort_keys=True, separators=(",", ":"))


def parse_field(field: str) -> tuple[str, dict[str, str]]:
    brace = field.index("{")
    return field[:brace], json.loads(field[brace:])
