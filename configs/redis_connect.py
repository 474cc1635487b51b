"""Redis clients that survive a Redis restart, and what the API says while Redis is down.

Every long-lived client (the API's asyncio client, each worker's client) is built here,
so they all behave the same way:
- `health_check_interval`: a pooled connection idle for longer is PINGed before use, so a
  connection the old Redis closed is noticed and replaced, not used for a real command;
- a bounded retry with exponential backoff on ConnectionError/TimeoutError (3 tries,
  0.1 s doubling to 1 s): a restart that takes a moment is bridged, a Redis that stays
  down fails within ~2 s instead of hanging the request;
- connect timeout 5 s.

While Redis stays down, the API answers 503 with `redis_unavailable`
(core_agent/api/errors.py); see docs/api.md "Errors".
"""

from __future__ import annotations

import redis
import redis.asyncio as aioredis
from kombu.exceptions import OperationalError
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from configs.contracts.errors import ErrorInfo

HEALTH_CHECK_INTERVAL_S = 10
RETRIES = 3
BACKOFF_BASE_S = 0.1
BACKOFF_CAP_S = 1.0
CONNECT_TIMEOUT_S = 5.0
RETRY_ON = [redis.ConnectionError, redis.TimeoutError]

# Raised when the broker (Redis) cannot be reached: redis-py's own errors, and kombu's
# OperationalError from the Celery producer (send_task) after its connection retries.
BROKER_DOWN: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError, OperationalError)


def _backoff() -> ExponentialBackoff:
    return ExponentialBackoff(cap=BACKOFF_CAP_S, base=BACKOFF_BASE_S)


def sync_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, health_check_interval=HEALTH_CHECK_INTERVAL_S,
                                socket_connect_timeout=CONNECT_TIMEOUT_S,
                                retry=Retry(_backoff(), RETRIES), retry_on_error=list(RETRY_ON))


def async_client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, health_check_interval=HEALTH_CHECK_INTERVAL_S,
                                   socket_connect_timeout=CONNECT_TIMEOUT_S,
                                   retry=AsyncRetry(_backoff(), RETRIES), retry_on_error=list(RETRY_ON))


def broker_down_info(redis_url: str, exc: BaseException) -> ErrorInfo:
    """The 503 an API caller gets while Redis is unreachable: what is down and what to do."""
    where = redis_url.split("@")[-1]  # never echo a password from the URL
    return ErrorInfo(code="redis_unavailable", status=503, message=(
        f"Redis (the task queue) at {where} is unreachable ({exc.__class__.__name__}: {exc}); "
        f"nothing was queued. Retry in a few seconds; if it persists, check `appliance status` "
        f"and start it with `appliance up`."))
