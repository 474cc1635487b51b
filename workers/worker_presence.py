"""Each Celery worker says, per queue it consumes, that it is alive (configs/contracts/
presence.py): the core then tells "no worker" from "every worker busy" when a task
waits in the queue longer than celery.pickup_timeout_s.

The entry is refreshed by a thread of the worker's *main* process, every
celery.heartbeat_s, lapsing after celery.heartbeat_timeout_s. Under the prefork pool
(the default) the main process only hands out messages, so a generation or a native
index build holding the GIL in a pool child never delays it; a main process that dies
(the whole worker killed) stops refreshing and its entry lapses. Under the `threads` or
`solo` pool a task holding the GIL for longer than heartbeat_timeout_s makes the
worker look absent meanwhile: a waiting caller then gets `no_worker` after
pickup_timeout_s (the same as before presence existed), never a wrong "busy".
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

import redis
from celery.signals import worker_ready, worker_shutdown

from configs.contracts.presence import REFRESH_SCRIPT, presence_key
from configs.loader import get_settings
from configs.redis_connect import sync_client

log = logging.getLogger("appliance.worker.presence")


class PresenceKeeper:
    def __init__(self, client: redis.Redis, hostname: str, queues: list[str], interval_s: float,
                 ttl_s: float) -> None:
        self.client, self.hostname, self.queues = client, hostname, queues
        self.interval_s, self.ttl_s = interval_s, ttl_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-presence", daemon=True)

    def start(self) -> None:
        self.refresh()  # present from the moment the worker is ready, not one interval later
        self._thread.start()

    def refresh(self) -> None:
        try:
            for queue in self.queues:
                self.client.eval(REFRESH_SCRIPT, 1, presence_key(queue), self.hostname, self.ttl_s)
        except redis.RedisError as exc:  # Redis away for a moment: the entry lapses, waiters see "no worker"
            log.warning("worker presence not refreshed: %s", exc)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.refresh()

    def stop(self) -> None:
        """A clean stop withdraws the entry at once: waiters need not wait for it to lapse."""
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 1)
        try:
            for queue in self.queues:
                self.client.zrem(presence_key(queue), self.hostname)
        except redis.RedisError as exc:
            log.warning("worker presence not withdrawn (it lapses by itself): %s", exc)


_keeper: PresenceKeeper | None = None


def consumed_queues(consumer: Any) -> list[str]:
    return sorted({queue.name for queue in consumer.task_consumer.queues})


@worker_ready.connect
def _start(sender: Any = None, **_: object) -> None:
    global _keeper
    settings = get_settings()
    hostname = getattr(sender, "hostname", None) or socket.gethostname()
    _keeper = PresenceKeeper(sync_client(settings.redis_url), hostname, consumed_queues(sender),
                             settings.celery.heartbeat_s, settings.celery.heartbeat_timeout_s)
    _keeper.start()
    log.info("worker %s present on queues %s", hostname, ", ".join(_keeper.queues))


@worker_shutdown.connect
def _stop(**_: object) -> None:
    if _keeper is not None:
        _keeper.stop()
