"""After an API restart: settle the chat tasks the previous API process left `running`.

The API runs a turn as an asyncio task; killed (SIGKILL, a crash, a reboot) it leaves
the task record `running`, the conversation without its answer, and anyone following
/tasks/{id}/events waiting. The worker may well have finished the answer: its result is
in the answer's Redis stream. On start, for every task still `running`:

- the answer's stream holds a `done` (or the worker is still generating and finishes):
  the answer is stored in the conversation, exactly once (only when the turn stored its
  question, and only if no answer with this task id is there yet), and the task succeeds;
- the worker reports an error, goes silent (liveness.py) or the answer was never sent
  (the API died while planning): the task fails with a reason that says so.

Either way the task record ends and its event stream is closed, so GET /tasks/{id},
/tasks/{id}/events and DELETE /tasks/{id} behave; while an answer is still being
awaited, DELETE cancels it like a live turn. As with webhook jobs
(core_agent/webhooks/service.py), this assumes one API process per data directory:
every `running` task at start belongs to a process that is gone.
"""

from __future__ import annotations

import asyncio
import logging

from configs.contracts.tasks import TaskResult, stream_key
from core_agent.orchestration import tool_calls
from core_agent.orchestration.chat_service import CHAT_QUEUE, TURN_CALLS, ChatService
from core_agent.orchestration.dispatcher import DispatchError
from core_agent.orchestration.plans import turn_call_id

log = logging.getLogger("appliance.recovery")

INTERRUPTED = "the API restarted while this task ran"


class TaskRecovery:
    def __init__(self, chat: ChatService) -> None:
        self.chat = chat
        self.tasks = chat.tasks
        self.store = chat.store
        self.dispatcher = chat.dispatcher

    async def start(self) -> list[str]:
        """Begin settling every task left `running`; returns their ids."""
        ids = await asyncio.to_thread(self.tasks.running_ids)
        for task_id in ids:
            job = asyncio.get_running_loop().create_task(self._settle(task_id))
            self.chat.track(task_id, job)
        if ids:
            log.warning("settling %d task(s) left running by the previous API process", len(ids))
        return ids

    async def answer_stream(self, task_id: str) -> str | None:
        """The Celery id of the task's final answer, if it was ever sent to a worker."""
        for answer_id in (turn_call_id(task_id, "answer"), task_id):  # a planned turn answers under :answer
            if await self.dispatcher.redis.exists(stream_key(answer_id)):
                return answer_id
        return None

    async def _settle(self, task_id: str) -> None:
        status, error = "failed", None
        try:
            answer_id = await self.answer_stream(task_id)
            if answer_id is None:
                error = f"{INTERRUPTED}, before its answer was started; send the request again"
                # It may still wait in a queue: it must not run later for nobody.
                for celery_id in (task_id, *(turn_call_id(task_id, call) for call in TURN_CALLS)):
                    await self.dispatcher.revoke(celery_id)
            else:
                result = await self.dispatcher.wait(answer_id, CHAT_QUEUE)
                await self._store_answer(task_id, result)
                status = "succeeded"
        except asyncio.CancelledError:
            status, error = "cancelled", "cancelled by the owner"
            for celery_id in (task_id, turn_call_id(task_id, "answer")):
                await self.dispatcher.revoke(celery_id)
        except DispatchError as exc:
            error = f"{INTERRUPTED}, and its answer did not finish: {exc.info.message}"
        except Exception as exc:  # the record must end whatever happened
            log.exception("could not settle task %s", task_id)
            error = f"{INTERRUPTED}; settling it failed: {exc.__class__.__name__}: {exc}"
        finally:
            await asyncio.shield(self._finish(task_id, status, error))

    async def _finish(self, task_id: str, status: str, error: str | None) -> None:
        if error is not None:
            await asyncio.to_thread(self.tasks.fail_open_steps, task_id, INTERRUPTED)
        await self.tasks.finish(task_id, status, error=error)  # type: ignore[arg-type]
        log.warning("task %s settled after restart: %s%s", task_id, status, f" ({error})" if error else "")

    async def _store_answer(self, task_id: str, result: TaskResult) -> None:
        record = await asyncio.to_thread(self.tasks.get, task_id)
        cid = record.conversation_id
        if not cid or not tool_calls.stores_answer(result):
            return
        if not await asyncio.to_thread(self.store.exists, cid):
            return  # the turn stored nothing (memory off)
        stored = await asyncio.to_thread(self.store.messages, cid)
        mine = [m for m in stored if m.task_id == task_id]
        if not any(m.role == "user" for m in mine) or any(m.role == "assistant" for m in mine):
            return  # its question was not stored (memory off), or the answer already is
        meta = {"usage": result.usage.model_dump(), "finish_reason": result.finish_reason,
                "attempt": result.attempt, "sources": record.sources, "recovered": True}
        await asyncio.to_thread(self.store.append, cid, "assistant", result.text, task_id=task_id,
                                model=result.model, meta=meta)
        if self.chat.memory is not None:
            self.chat.memory.kick()
