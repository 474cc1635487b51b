"""GET /metrics: Prometheus text exposition of the API's and the workers' metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST

from configs.contracts.metrics import WORKER_METRICS_KEY
from core_agent.api.deps import AppState, get_state, require_principal
from core_agent.observability import metrics

router = APIRouter(tags=["health"])


async def _queue_depths(state: AppState) -> tuple[dict[str, int], int]:
    """Waiting messages per queue (a Redis list per queue) and unacknowledged ones."""
    names = [queue.name for queue in state.celery.conf.task_queues or []]
    async with state.redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.llen(name)
        pipe.hlen("unacked")
        replies = await pipe.execute()
    return dict(zip(names, (int(r) for r in replies[:-1]))), int(replies[-1])


async def _worker_fields(state: AppState) -> dict[str, float]:
    raw = await state.redis.hgetall(WORKER_METRICS_KEY)
    return {k.decode(): float(v) for k, v in raw.items()}


_bearer = HTTPBearer(auto_error=False)


async def metrics_access(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
    """Metrics may be switched off, and need the owner token unless configured otherwise."""
    observability = get_state(request).settings.observability
    if not observability.metrics:
        raise HTTPException(status_code=404, detail="metrics are switched off (observability.metrics)")
    if observability.metrics_require_token:
        (await require_principal(request, credentials)).require_owner("read the metrics")


@router.get("/metrics", include_in_schema=False, dependencies=[Depends(metrics_access)])
async def prometheus_metrics(request: Request) -> Response:
    state = get_state(request)
    (depths, unacked), workers, outbox = await asyncio.gather(
        _queue_depths(state), _worker_fields(state), asyncio.to_thread(state.store.memory_outbox_count))
    body = await metrics.render(depths, unacked, outbox, workers)
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)

