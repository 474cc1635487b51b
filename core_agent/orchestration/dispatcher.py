"""Send work to the queues and follow it back: the core's side of the task contract.

`submit` puts a task on its queue by name (the core never imports worker code, so
llama.cpp and torch stay out of the API process). `events` reads the task's Redis
stream and yields StreamEvents until the task is done or failed; `wait` and `call`
are built on it. This is the one way the core waits on any task (chat, plan steps,
memory, embeddings, the readiness probe): every worker task reports through
workers/published_task.py, so a redelivery, a retry or an error looks the same
whichever queue ran it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from typing import Any, AsyncIterator

import redis.asyncio as aioredis
from celery import Celery

from configs.schema import Settings
from configs.telemetry import trace_headers
from core_agent.observability import metrics
from core_agent.orchestration.liveness import LivenessWatch, Verdict, resendable
from core_agent.orchestration import queue_publish
from core_agent.orchestration.queue_presence import live_workers
from configs.contracts.tasks import StreamEvent, TaskResult, cancel_key, stream_key
from configs.contracts.errors import ErrorInfo


READ_BLOCK_S = 2.0
# Tasks this process sent and may queue again when their worker is lost (liveness.py);
# bounded, oldest forgotten first (a forgotten task is failed instead of resent).
SENT_KEPT = 2048

log = logging.getLogger("appliance.dispatch")


class DispatchError(Exception):
    """The task could not be run: no worker picked it up, or it went silent."""

    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(info.message)
        self.info = info


class TaskFailed(DispatchError):
    """The worker ran the task and reported an error."""


class Dispatcher:
    def __init__(self, settings: Settings, celery: Celery, redis: aioredis.Redis) -> None:
        self.settings = settings
        self.celery = celery
        self.redis = redis
        self._sent: OrderedDict[str, tuple[str, dict[str, Any], dict[str, Any]]] = OrderedDict()
        # Publish with our own asyncio client (queue_publish.py) when it talks to the broker.
        self._direct = (celery.conf.broker_url == settings.redis_url
                        and queue_publish.publishes_directly(celery))

    async def submit(self, task_name: str, payload: dict[str, Any], task_id: str | None = None,
                     queue: str | None = None, expires_s: float | None = None) -> str:
        """Queue a task by name; `queue` overrides the queue its name prefix routes to;
        `expires_s` drops it if no worker started it in time (nobody waits any more)."""
        task_id = task_id or uuid.uuid4().hex
        # ignore_result: the outcome comes on the task's stream; without it Celery would
        # SUBSCRIBE to a result channel per task (a round trip, and never unsubscribed).
        options: dict[str, Any] = {"queue": queue, "ignore_result": True} if queue else {"ignore_result": True}
        headers = trace_headers()  # the worker's spans join this request's trace
        if headers:
            options["headers"] = headers
        if expires_s is not None:
            options["expires"] = expires_s
        if resendable(task_name):
            self._sent[task_id] = (task_name, payload, {k: v for k, v in options.items() if k != "expires"})
            while len(self._sent) > SENT_KEPT:
                self._sent.popitem(last=False)
        await self._publish(task_name, payload, task_id, options)
        return task_id

    async def _publish(self, task_name: str, payload: dict[str, Any], task_id: str, options: dict[str, Any]) -> None:
        if self._direct:  # one LPUSH on the event loop (queue_publish.py says why)
            await queue_publish.publish(self.redis, self.celery, task_name, [payload], task_id, options.get("queue"),
                                        options.get("headers"), options.get("expires"))
            return
        # kombu's publish is a blocking socket write; keep it off the event loop.
        await asyncio.to_thread(self.celery.send_task, task_name, args=[payload], task_id=task_id, **options)

    async def call(self, task_name: str, payload: dict[str, Any], queue: str, task_id: str | None = None,
                   timeout_s: float | None = None, expires: bool = False) -> TaskResult:
        """Run a task and return its result; raise TaskFailed with the worker's error.
        `timeout_s` bounds the whole wait; `expires` also drops the task if nobody
        started it within that time (a search nobody waits for is useless work)."""
        task_id = await self.submit(task_name, payload, task_id=task_id, queue=queue,
                                    expires_s=timeout_s if expires else None)
        return await self.wait(task_id, queue, timeout_s)

    async def wait(self, task_id: str, queue: str, timeout_s: float | None = None) -> TaskResult:
        """The result of a task already sent (its stream keeps every event, so waiting
        late or twice loses nothing); TaskFailed with the worker's error, DispatchError
        when nobody ran it or it did not finish in time."""
        async for event in self.events(task_id, queue, timeout_s):
            if event.type == "done" and event.result is not None:
                return event.result
            if event.type == "error" and event.error is not None:
                raise TaskFailed(event.error)
        raise TaskFailed(ErrorInfo(code="internal", status=500, message=f"task {task_id} ended without a result"))

    async def events(self, task_id: str, queue: str, timeout_s: float | None = None) -> AsyncIterator[StreamEvent]:
        """Yield the task's events until 'done' or 'error' of its latest attempt.

        Without `timeout_s` a task must be picked up within celery.pickup_timeout_s and
        may then run as long as its worker sends heartbeats; with it, the whole wait
        ends after `timeout_s`. A worker that goes silent is handled by LivenessWatch
        (the task queued again, or failed with `worker_lost`). Heartbeats and events of
        superseded attempts are not passed on."""
        key = stream_key(task_id)
        last_id = "0-0"
        watch = LivenessWatch(self.settings.celery, queue, timeout_s)
        try:
            while True:
                verdict = watch.verdict(can_resend=task_id in self._sent)
                if verdict is Verdict.CHECK_WORKERS:  # not picked up yet: busy, or nobody there?
                    verdict = watch.workers_checked(await live_workers(self.redis, queue))
                if verdict is Verdict.QUEUED:  # tells the caller; not on the task's stream
                    yield StreamEvent(type="queued")
                elif verdict is Verdict.TAKE_OVER:
                    await self._resend(task_id, queue)
                    watch.taken_over()
                elif verdict is Verdict.FAIL:
                    await self._abandon(task_id, watch)
                    metrics.task_failed(queue, watch.error())
                    raise DispatchError(watch.error())
                # Short blocking reads: a Redis client's socket timeout must never cut a
                # long wait, and the deadline is checked between reads.
                block_ms = max(1, int(min(max(watch.remaining(), 0.001), READ_BLOCK_S) * 1000))
                reply = await self.redis.xread({key: last_id}, block=block_ms, count=256)
                if not reply:
                    continue
                for entry_id, fields in reply[0][1]:
                    last_id = entry_id
                    event = StreamEvent.model_validate_json(fields[b"e"])
                    if not watch.seen(event):
                        continue
                    if event.type == "done" and event.result is not None:
                        metrics.task_succeeded(queue, event.result)
                    elif event.type == "error" and event.error is not None:
                        metrics.task_failed(queue, event.error)
                    yield event
                    if event.type in ("done", "error"):
                        if watch.takeovers:
                            await self.revoke(task_id)  # a copy still queued must not run again
                        return
        finally:
            self._sent.pop(task_id, None)

    async def _resend(self, task_id: str, queue: str) -> None:
        """Queue a task whose worker went silent again, under the same id: the next
        delivery is a new attempt (and continues the text already sent)."""
        name, payload, options = self._sent[task_id]
        log.warning("task %s: the %s worker went silent; queueing it again", task_id, queue)
        await self._publish(name, payload, task_id, options)

    async def _abandon(self, task_id: str, watch: LivenessWatch) -> None:
        """A task given up as lost must not run later (a restarted worker, or the broker
        handing the unacknowledged message out again after its visibility timeout)."""
        if watch.phase != "pickup":  # also `queued`: behind busy workers, it would run later
            try:
                await self.revoke(task_id)
            except Exception:  # the error the caller gets matters more
                log.exception("could not revoke abandoned task %s", task_id)

    async def announce(self, task_id: str, event: StreamEvent) -> None:
        """Append an event to a task's stream from the core itself, for work the core runs
        (a webhook job), so its waiters use the same `wait` as for worker tasks."""
        key = stream_key(task_id)
        pipe = self.redis.pipeline()
        pipe.xadd(key, {"e": event.model_dump_json(exclude_defaults=True)}, maxlen=1000, approximate=True)
        pipe.expire(key, self.settings.celery.result_expires_s)
        await pipe.execute()

    async def revoke(self, task_id: str) -> None:
        """Stop a task: Celery drops it if not started; a running one sees the cancel key."""
        await self.redis.set(cancel_key(task_id), "1", ex=self.settings.celery.result_expires_s)
        await asyncio.to_thread(self.celery.control.revoke, task_id)
