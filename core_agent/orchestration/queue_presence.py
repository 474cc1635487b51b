"""Does any live worker serve this queue? (configs/contracts/presence.py)

Asked by the dispatcher only when a task has waited celery.pickup_timeout_s without
being picked up, and then once per recheck while it waits behind busy workers, and by
/ready (which chat workers to ask what they run): one Redis script call, never on the
hot path of a task that starts promptly."""

from __future__ import annotations

import redis.asyncio as aioredis

from configs.contracts.presence import NAMES_SCRIPT, presence_key


async def live_worker_names(redis: aioredis.Redis, queue: str) -> list[str]:
    """The hostnames of the workers serving `queue` whose presence has not lapsed."""
    names = await redis.eval(NAMES_SCRIPT, 1, presence_key(queue))
    return sorted(n.decode() if isinstance(n, bytes) else str(n) for n in names)


async def live_workers(redis: aioredis.Redis, queue: str) -> int:
    return len(await live_worker_names(redis, queue))
