"""The dispatcher's own publish (core_agent/orchestration/queue_publish.py) writes the
message Celery's `send_task` writes, and real workers run what it sends.

- The same task sent both ways to a queue no worker reads: the two Redis messages are
  the same (protocol 2 headers incl. trace headers and `expires`, body, routing,
  envelope) except for what is fresh per message (delivery tag, expiry instant) and the
  payload's repr for monitoring tools, which ours leaves out (it cost CPU per request).
- Through the dispatcher, a no-op on every queue runs on that queue's worker, a task
  routed by its name prefix runs, and an expired task is dropped by the worker (its
  expiry header is honoured), not run.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import datetime

import redis
import redis.asyncio as aioredis

from configs.contracts.tasks import stream_key
from configs.schema import QUEUE_NAMES
from core_agent.orchestration import queue_publish
from core_agent.orchestration.dispatcher import Dispatcher
from tests.conftest import Stack
from workers.celery_app import create_celery_app


def _decoded(raw: bytes) -> dict:
    message = json.loads(raw)
    message["body"] = json.loads(base64.b64decode(message["body"]))
    return message


def test_the_message_is_the_one_send_task_writes(stack: Stack) -> None:
    settings = stack.settings
    celery = create_celery_app(settings, follows_streams=True)
    assert queue_publish.publishes_directly(celery)
    queue = f"nobody-reads-{uuid.uuid4().hex[:8]}"
    headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    payload = {"echo": "ü", "n": [1, 2.5, None]}
    celery.send_task("chat.noop", args=[payload], task_id="same-id", queue=queue, ignore_result=True,
                     headers=headers, expires=30)

    async def ours() -> None:
        client = aioredis.Redis.from_url(settings.redis_url)
        await queue_publish.publish(client, celery, "chat.noop", [payload], "same-id", queue, headers, 30)
        await client.aclose()

    asyncio.run(ours())
    sync = redis.Redis.from_url(settings.redis_url)
    try:
        raw = sync.lrange(queue, 0, -1)
    finally:
        sync.delete(queue)
    assert len(raw) == 2, raw
    theirs, mine = _decoded(raw[1]), _decoded(raw[0])  # LPUSH: the newest first
    expiries = [datetime.fromisoformat(m["headers"].pop("expires")) for m in (theirs, mine)]
    assert abs((expiries[1] - expiries[0]).total_seconds()) < 5
    tags = [m["properties"].pop("delivery_tag") for m in (theirs, mine)]
    assert tags[0] != tags[1]
    reprs = [m["headers"].pop("argsrepr") for m in (theirs, mine)]
    assert "ü" in reprs[0] and reprs[1] == queue_publish.ARGS_REPR, reprs
    assert mine == theirs
    assert mine["properties"]["delivery_info"] == {"exchange": "", "routing_key": queue}
    assert mine["headers"]["traceparent"] == headers["traceparent"]


def test_the_workers_run_what_the_dispatcher_publishes(stack: Stack) -> None:
    settings = stack.settings

    async def scenario() -> tuple[list[str], str]:
        client = aioredis.Redis.from_url(settings.redis_url)
        dispatcher = Dispatcher(settings, create_celery_app(settings, follows_streams=True), client)
        assert dispatcher._direct, "the dispatcher should publish on its own client"
        try:
            texts = [(await dispatcher.call(f"{q}.noop", {"echo": q}, queue=q, timeout_s=120)).text
                     for q in QUEUE_NAMES]
            by_prefix = await dispatcher.call("code.noop", {"echo": "routed"}, queue=None, timeout_s=120)
            return texts, by_prefix.worker or ""
        finally:
            await client.aclose()

    texts, worker = asyncio.run(scenario())
    assert texts == list(QUEUE_NAMES)
    assert worker, "the result names the worker that ran it"


def test_an_expired_task_is_dropped_by_the_worker(stack: Stack) -> None:
    settings = stack.settings
    expired, after = f"expired-{uuid.uuid4().hex}", f"after-{uuid.uuid4().hex}"

    async def scenario() -> tuple[int, str]:
        client = aioredis.Redis.from_url(settings.redis_url)
        celery = create_celery_app(settings, follows_streams=True)
        dispatcher = Dispatcher(settings, celery, client)
        try:
            # Its expiry a minute ago: the worker must drop it, not run it. The queue is
            # first in, first out, so once the next task ran, this one was seen.
            await queue_publish.publish(client, celery, "chat.noop", [{"echo": "late"}], expired, "chat",
                                        expires_s=-60)
            result = await dispatcher.call("chat.noop", {"echo": "next"}, queue="chat", task_id=after,
                                           timeout_s=120)
            return await client.exists(stream_key(expired)), result.text
        finally:
            await client.aclose()

    ran, text = asyncio.run(scenario())
    assert text == "next"
    assert ran == 0, "the expired task ran: its `expires` header was not honoured"
