"""What a webhook job left unfinished by a killed API process ends as.

The job ran a chat turn; on restart TaskRecovery (core_agent/orchestration/
task_recovery.py) settles that turn: the worker usually finished the answer while the
API was down, and it is stored. The job follows its turn: when the turn was recovered
with its answer, the job succeeds with that answer (and its callback is sent, if it has
one), exactly as if the API had stayed up; otherwise it fails with the turn's reason.
A job whose turn never started (the API died before it) fails saying so.

The turn's settling runs in this process (started when the API starts), bounded by the
dispatcher's liveness limits; this waits for it by polling the task record, bounded by
celery.task_time_limit_s (no generation runs longer).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from core_agent.orchestration.chat_service import CHAT_QUEUE, ChatService
from core_agent.orchestration.dispatcher import DispatchError
from core_agent.orchestration.task_recovery import TaskRecovery
from core_agent.stores.task_store import TaskNotFound, TaskRecord

RESTARTED = "the API restarted while this job ran"
POLL_S = 0.5


def interrupted(detail: str) -> dict[str, Any]:
    return {"code": "interrupted", "status": 503, "message": f"{RESTARTED}, {detail}; send the request again"}


async def _settled(chat: ChatService, task_id: str) -> TaskRecord | None:
    deadline = time.monotonic() + chat.settings.celery.task_time_limit_s
    while True:
        try:
            record = await asyncio.to_thread(chat.tasks.get, task_id)
        except TaskNotFound:
            return None
        if record.status != "running" or time.monotonic() > deadline:
            return record
        await asyncio.sleep(POLL_S)


async def recovered_outcome(chat: ChatService, task_id: str | None) -> tuple[Any, dict[str, Any] | None]:
    """(the turn's TaskResult, None) when its answer was recovered; (None, error) otherwise."""
    if task_id is None:
        return None, interrupted("before its chat turn started")
    record = await _settled(chat, task_id)
    if record is None:
        return None, interrupted("before its chat turn was recorded")
    if record.status != "succeeded":
        return None, interrupted(f"and its chat turn ended {record.status}: {record.error or 'no reason given'}")
    answer_id = await TaskRecovery(chat).answer_stream(task_id)
    if answer_id is None:
        return None, interrupted("and its answer is no longer in Redis")
    try:  # the answer's stream holds its `done`: this returns at once
        return await chat.dispatcher.wait(answer_id, CHAT_QUEUE), None
    except DispatchError as exc:
        return None, interrupted(f"and its answer could not be read back: {exc.info.message}")
