"""kombu's Redis transport, with one Redis client per channel instead of one per command.

With `task_acks_late` (workers/celery_app.py) every message a worker takes is first
recorded in the broker's `unacked` hash and index, and removed from them when the
task is acknowledged: two MULTI/EXEC round trips per task, the first in the worker's
consumer thread, which also takes every other message off the queue. kombu builds a
new `redis.Redis` client object for each of them (`Channel.conn_or_acquire`, which
also serves its other commands: queue sizes, purges, fanout publishes), and a
client's constructor in redis-py 8 fills a table of several hundred response
callbacks: ~12% of the consumer thread's time when 8 chat requests arrive at once
(py-spy, issue 17, docs/architecture.md "Time to first token under concurrent
streams"). That thread's time is what the k-th task of a burst waits for before a
pool thread starts it.

Here the channel keeps one client for every `conn_or_acquire()` without a client. A
client is a thin front for the channel's connection pool (each command borrows a
connection), so sharing it between threads is what redis-py intends; it is rebuilt
whenever the channel's pool is replaced (kombu drops the pool when the connection to
the broker is reset).
Everything else, including what is written, is kombu's.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _shared_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        cached = self._shared_client
        if cached is None or cached.connection_pool is not self.pool:
            cached = self._shared_client = self._create_client()
        yield cached


class Transport(kombu_redis.Transport):
    Channel = Channel


# Celery's `broker_transport` setting names this class (a kombu transport by import path).
TRANSPORT_PATH = f"{__name__}:Transport"
