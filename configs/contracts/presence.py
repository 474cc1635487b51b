"""Worker presence: which queues have a live worker right now (alive, busy or not).

A task's own heartbeats (workers/heartbeat.py) prove that *its* attempt runs; they say
nothing about a task still waiting in the queue. When nobody has picked a task up
within celery.pickup_timeout_s the core must tell two cases apart: no worker serves the
queue (503 `no_worker`: start the workers) or every worker is busy with earlier tasks
(keep waiting, up to celery.queue_wait_timeout_s). Each Celery worker's main process
refreshes its entry here every celery.heartbeat_s (workers/worker_presence.py); the
core asks before it answers "no worker" (core_agent/orchestration/queue_presence.py).

One sorted set per queue: member = the worker's hostname, score = the moment its entry
lapses. Both sides take "now" from the Redis server (TIME inside a script), so clocks of
the API and worker hosts (containers) need not agree; a worker that stops cleanly
removes its entry, one that dies lapses after celery.heartbeat_timeout_s.
"""

from __future__ import annotations

PRESENCE_PREFIX = "appliance:presence:"

# KEYS[1] = the queue's set; ARGV = hostname, seconds until it lapses. Also drops lapsed
# members and keeps the key itself from outliving its last worker.
REFRESH_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 1)
return 1
"""

# KEYS[1] = the queue's set; the hostnames of the workers whose entry has not lapsed.
NAMES_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
"""


def presence_key(queue: str) -> str:
    return f"{PRESENCE_PREFIX}{queue}"
