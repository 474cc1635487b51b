"""GET /health (liveness, no auth) and GET /ready (Redis, workers and models usable)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from core_agent.api.deps import AppState, get_state, require_owner
from core_agent.orchestration.dispatcher import DispatchError
from core_agent.orchestration.queue_presence import live_worker_names
from configs.contracts.tasks import result_value

router = APIRouter(tags=["health"])

CHECK_MODELS_TASK = "chat.check_models"
CHECK_MODELS_TIMEOUT_S = 10.0


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


# How long /ready waits for the chat workers to say what they run. It returns as soon
# as every live one answered (usually milliseconds); the bound only matters on a machine
# so loaded that a worker's main process answers late.
LOAD_REPLY_TIMEOUT_S = 3.0


def _chat_worker_load(state: AppState, chat_workers: list[str]) -> tuple[set[str], dict[str, int]]:
    """Chat-queue workers (by their presence entries) that run nothing now, and those
    running tasks -> how many. Asked through Celery's control channel, which a worker's
    main process answers even while its pool generates; only the chat workers are asked,
    and the call ends when all of them replied, not after a fixed broadcast wait."""
    if not chat_workers:
        return set(), {}
    inspect = state.celery.control.inspect(destination=chat_workers, limit=len(chat_workers),
                                           timeout=LOAD_REPLY_TIMEOUT_S)
    active = inspect.active() or {}
    busy = {w: len(tasks) for w, tasks in active.items() if w in chat_workers and tasks}
    return set(chat_workers) - set(busy), busy


async def _chat_load(state: AppState) -> tuple[set[str], dict[str, int]]:
    try:
        chat_workers = await live_worker_names(state.redis, "chat")
        return await asyncio.to_thread(_chat_worker_load, state, chat_workers)
    except Exception:
        return set(), {}


def _busy_check(busy: dict[str, int]) -> Check:
    return Check(ok=True, detail={"busy": busy, "note": "the chat worker is generating; "
                                                        "models were not re-checked"})


async def _check_models(state: AppState) -> Check:
    idle, busy = await _chat_load(state)
    if busy and not idle:
        # Every chat worker is generating: a probe would only queue behind the generation
        # (and stay in the queue after we gave up on it). Serving is ready, not a 503.
        return _busy_check(busy)
    try:
        # expires: a probe nobody waits for any more must not pile up behind a generation.
        answer = await state.dispatcher.call(CHECK_MODELS_TASK, {}, queue="chat",
                                             timeout_s=CHECK_MODELS_TIMEOUT_S, expires=True)
    except DispatchError as exc:
        if exc.info.code in ("no_worker", "queue_busy"):
            # The worker became busy between the look and the probe (`queue_busy`: it is
            # alive, by its presence entry).
            _idle, busy = await _chat_load(state)
            if busy:
                return _busy_check(busy)
        return Check(ok=False, detail=f"no chat worker answered the model check: {exc}")
    status = result_value(answer) or {}
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


