"""Per-process resources a worker task needs: settings and a Redis client.

Created lazily in each worker child (after fork), never at import time, so a
prefork parent does not share sockets with its children.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache

import redis

from configs.loader import get_settings
from configs.redis_connect import sync_client
from configs.schema import Settings

log = logging.getLogger("appliance.worker")

# Comma-separated model names a chat worker loads as soon as its process starts.
PRELOAD_ENV = "APPLIANCE_PRELOAD_MODELS"


def settings() -> Settings:
    return get_settings()


@lru_cache(maxsize=1)
def redis_client() -> redis.Redis:
    # Health-checked and retried: a worker keeps working across a Redis restart.
    return sync_client(settings().redis_url)


def models_to_preload() -> list[str]:
    return [m for m in os.environ.get(PRELOAD_ENV, "").split(",") if m]
