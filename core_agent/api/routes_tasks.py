"""What a request did: GET /tasks/{id}, live GET /tasks/{id}/events, DELETE /tasks/{id},
and the routing summary GET /stats/routes."""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from core_agent.access.principal import Principal
from core_agent.api.deps import AppState, get_state, require_owner, require_principal
from core_agent.stores.task_store import EVENTS_KEY, TERMINAL_TASK, RouteStat, TaskNotFound, TaskRecord

router = APIRouter(dependencies=[Depends(require_principal)], tags=["tasks"])

EVENTS_BLOCK_MS = 2000
# A stream with no news for this long is closed; the client can reconnect.
EVENTS_IDLE_S = 600


def _task(state: AppState, task_id: str, principal: Principal | None = None) -> TaskRecord:
    """The task, if it exists and belongs to a conversation the principal may read (else 404)."""
    try:
        record = state.tasks.get(task_id)
    except TaskNotFound:
        raise HTTPException(404, f"task '{task_id}' does not exist") from None
    if principal is not None and not principal.is_owner:
        namespace = state.store.namespace_of(record.conversation_id) if record.conversation_id else None
        if namespace is None or not principal.may_read(namespace):
            raise HTTPException(404, f"task '{task_id}' does not exist")
    return record


@router.get("/tasks", response_model=list[TaskRecord])
def list_tasks(request: Request, conversation_id: str | None = None, status: str | None = None,
               limit: int = Query(50, ge=1, le=500),
               principal: Principal = Depends(require_principal)) -> list[TaskRecord]:
    state = get_state(request)
    visible = principal.visible_namespaces()
    ids = None if visible is None else state.store.ids_in(visible)
    return state.tasks.list(conversation_id=conversation_id, status=status, limit=limit, conversation_ids=ids)


@router.get("/tasks/{task_id}", response_model=TaskRecord)
def get_task(task_id: str, request: Request, principal: Principal = Depends(require_principal)) -> TaskRecord:
    return _task(get_state(request), task_id, principal)


async def _event_stream(state: AppState, task_id: str) -> AsyncIterator[str]:
    """Every recorded event from the start, then live ones, until the task ends."""
    key = EVENTS_KEY.format(task_id)
    last_id = "0-0"
    idle = 0.0
    while idle < EVENTS_IDLE_S:
        reply = await state.redis.xread({key: last_id}, block=EVENTS_BLOCK_MS, count=100)
        if not reply:
            idle += EVENTS_BLOCK_MS / 1000
            if _task(state, task_id).status in TERMINAL_TASK:
                break  # finished before the client attached and its events expired
            continue
        idle = 0.0
        for entry_id, fields in reply[0][1]:
            last_id = entry_id
            event = json.loads(fields[b"e"])
            yield f"data: {json.dumps(event)}\n\n"
            if event.get("type") == "task" and event.get("status") in TERMINAL_TASK:
                yield "data: [DONE]\n\n"
                return
    yield "data: [DONE]\n\n"


@router.get("/tasks/{task_id}/events")
async def task_events(task_id: str, request: Request,
                      principal: Principal = Depends(require_principal)) -> StreamingResponse:
    state = get_state(request)
    await asyncio.to_thread(_task, state, task_id, principal)
    await state.redis.ping()  # Redis down: a 503 now (errors.py), not a stream cut after its 200
    return StreamingResponse(_event_stream(state, task_id), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


@router.delete("/tasks/{task_id}", response_model=TaskRecord)
async def cancel_task(task_id: str, request: Request, principal: Principal = Depends(require_principal)) -> TaskRecord:
    state = get_state(request)
    record = await asyncio.to_thread(_task, state, task_id, principal)
    namespace = await asyncio.to_thread(state.store.namespace_of, record.conversation_id or "")
    if not principal.may_address(namespace or ""):
        raise HTTPException(404, f"task '{task_id}' does not exist")
    if record.status in TERMINAL_TASK:
        raise HTTPException(409, f"task '{task_id}' already {record.status}; nothing to cancel")
    if not await state.chat.cancel(task_id):
        raise HTTPException(409, f"task '{task_id}' is not running in this API process")
    for _ in range(50):  # the turn records its cancellation as it unwinds
        record = await asyncio.to_thread(_task, state, task_id)
        if record.status in TERMINAL_TASK:
            break
        await asyncio.sleep(0.05)
    return record


@router.get("/stats/routes", response_model=list[RouteStat], dependencies=[Depends(require_owner)])
def route_stats(request: Request) -> list[RouteStat]:
    return get_state(request).tasks.route_stats()
