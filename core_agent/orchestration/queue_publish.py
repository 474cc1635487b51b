"""Put a Celery task message on its Redis queue from the API's event loop.

Why not `celery.send_task` in a thread (what the dispatcher did): kombu's publish is a
blocking socket write, so it ran in asyncio's thread pool, and that hop (a thread
wake-up, the GIL passed back and forth with the event loop, then the loop woken again)
plus kombu's per-publish work (a Redis client object, the producer pool, declare
caching) cost ~2.9 ms of an 8.3 ms no-op step on a quiet machine, and concurrent
requests queued behind each other for the GIL (docs/benchmarks.md, "dispatch"). Here
Celery still builds the message (`amqp.create_task_message`: protocol 2 headers, body,
routing); only the last step, kombu's Redis envelope and LPUSH, is done with the
API's asyncio Redis client: one round trip on the loop, with that client's
reconnect-and-retry policy (configs/redis_connect.py), so a Redis restart looks the
same to the caller (redis.ConnectionError -> 503 `redis_unavailable`).

The envelope is kombu's virtual transport format for the Redis transport with the
settings of workers/celery_app.py: the anonymous exchange (the routing key is the
queue), JSON, no compression, priority 0 (the queue key is the queue name), body
base64. For anything else (another serializer, compression, a non-direct exchange)
`publishes_directly` is False and the dispatcher falls back to `send_task`.
tests/test_queue_publish.py checks the message against the one `send_task` writes.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import redis.asyncio as aioredis
from celery import Celery
from kombu.serialization import dumps as serialize
from kombu.utils.json import dumps as json_dumps

DELIVERY_MODE_PERSISTENT = 2
ARGS_REPR = "(payload not shown: see the task's event stream)"


def publishes_directly(celery: Celery) -> bool:
    """Whether this app's messages have the simple form this module writes."""
    conf = celery.conf
    broker = (conf.broker_url or "")
    return (broker.startswith(("redis://", "rediss://", "unix://"))
            and conf.task_serializer == "json" and not conf.task_compression
            and not conf.task_queue_max_priority and not conf.task_default_priority
            and all((q.exchange is None or q.exchange.type == "direct") for q in celery.amqp.queues.values()))


def queue_of(celery: Celery, task_name: str, queue: str | None) -> str:
    """The queue a task goes to: `queue`, else the app's routes (task name prefix)."""
    route = celery.amqp.router.route({"queue": queue} if queue else {}, task_name, (), {})
    return route["queue"].name


def task_envelope(celery: Celery, task_name: str, args: list[Any], task_id: str, queue: str,
                  headers: dict[str, str] | None = None, expires_s: float | None = None,
                  ignore_result: bool = True) -> str:
    """The JSON string kombu's Redis transport would LPUSH for `send_task(...)`."""
    # argsrepr: Celery would saferepr() the payload (a whole prompt) for monitoring tools,
    # ~3% of a chat request's API CPU; the payload is in the task's event stream anyway.
    message = celery.amqp.create_task_message(
        task_id, task_name, args, {}, expires=expires_s, reply_to=celery.thread_oid,
        create_sent_event=False, ignore_result=ignore_result, argsrepr=ARGS_REPR, kwargsrepr="{}")
    task_headers, properties, body, _ = message
    if headers:
        task_headers.update(headers)
    content_type, content_encoding, data = serialize(body, serializer="json")
    properties.update(
        delivery_mode=DELIVERY_MODE_PERSISTENT,
        delivery_info={"exchange": "", "routing_key": queue},
        priority=0,
        body_encoding="base64",
        delivery_tag=str(uuid.uuid4()),
    )
    if expires_s is not None:  # as Celery passes `expires` on to kombu (AMQP's per-message TTL)
        properties["expiration"] = str(int(expires_s * 1000))
    raw = data.encode(content_encoding) if isinstance(data, str) else data
    return json_dumps({
        "body": base64.b64encode(raw).decode(),
        "content-encoding": content_encoding,
        "content-type": content_type,
        "headers": task_headers,
        "properties": properties,
    })


async def publish(redis: aioredis.Redis, celery: Celery, task_name: str, args: list[Any], task_id: str,
                  queue: str | None, headers: dict[str, str] | None = None,
                  expires_s: float | None = None) -> None:
    """Queue the task: one LPUSH on the event loop."""
    name = queue_of(celery, task_name, queue)
    envelope = task_envelope(celery, task_name, args, task_id, name, headers, expires_s)
    await redis.lpush(name, envelope)
