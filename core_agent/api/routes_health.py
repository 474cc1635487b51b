"""GET /health (liveness, no auth) and GET /ready (Redis, workers and models usable)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from core_agent.api.deps import AppState, get_state, require_owner

router = APIRouter(tags=["health"])

CHECK_MODELS_TASK = "chat.check_models"


class Check(BaseModel):
    ok: bool
    detail: Any = None


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, Check]


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


async def _check_redis(state: AppState) -> Check:
    try:
        await asyncio.wait_for(state.redis.ping(), timeout=2)
        return Check(ok=True)
    except Exception as exc:
        return Check(ok=False, detail=f"Redis at {state.settings.redis_url} unreachable: {exc}")


def _consumed_queues(state: AppState) -> dict[str, list[str]]:
    replies = state.celery.control.inspect(timeout=1.0).active_queues() or {}
    return {worker: [q["name"] for q in queues] for worker, queues in replies.items()}


async def _check_workers(state: AppState) -> Check:
    try:
        by_worker = await asyncio.to_thread(_consumed_queues, state)
    except Exception as exc:
        return Check(ok=False, detail=f"cannot ask workers: {exc}")
    consumed = {q for queues in by_worker.values() for q in queues}
    wanted = {name for name, pool in state.settings.workers.items() if pool.enabled}
    missing = sorted(wanted - consumed)
    detail = {"consumed": sorted(consumed), "missing": missing, "workers": len(by_worker)}
    return Check(ok=not missing, detail=detail)


async def _check_models(state: AppState) -> Check:
    def ask() -> dict[str, str]:
        result = state.celery.send_task(CHECK_MODELS_TASK)
        try:
            return result.get(timeout=10)
        finally:
            result.forget()

    try:
        status = await asyncio.to_thread(ask)
    except Exception as exc:
        return Check(ok=False, detail=f"no chat worker answered the model check: {exc}")
    default = state.settings.default_model
    return Check(ok=status.get(default) == "ok", detail=status)


@router.get("/ready", response_model=Readiness, dependencies=[Depends(require_owner)])
async def ready(request: Request) -> JSONResponse:
    state = get_state(request)
    redis_check = await _check_redis(state)
    checks = {"redis": redis_check}
    if redis_check.ok:
        checks["workers"], checks["models"] = await asyncio.gather(_check_workers(state), _check_models(state))
    body = Readiness(ready=all(c.ok for c in checks.values()), checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


