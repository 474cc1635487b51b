"""Publish a running task's events (attempts, tokens, result, error) to Redis.

The API reads the same Redis stream and forwards tokens to the client as SSE. A
stream (not pub/sub) is used so a reader that attaches late still sees every event.
"""

from __future__ import annotations

import redis

from workers.protocol import TaskResult, ErrorInfo, StreamEvent, attempt_key, stream_key

STREAM_MAXLEN = 20_000


class EventPublisher:
    def __init__(self, client: redis.Redis, task_id: str, ttl_s: int) -> None:
        self.client = client
        self.task_id = task_id
        self.ttl_s = ttl_s
        self.key = stream_key(task_id)
        self.attempt = 1

    def start_attempt(self) -> int:
        """Count this delivery of the task; >1 means a redelivery after a lost worker."""
        akey = attempt_key(self.task_id)
        pipe = self.client.pipeline()
        pipe.incr(akey)
        pipe.expire(akey, self.ttl_s)
        self.attempt = int(pipe.execute()[0])
        self._emit(StreamEvent(type="attempt", attempt=self.attempt))
        return self.attempt

    def token(self, text: str) -> None:
        self._emit(StreamEvent(type="token", attempt=self.attempt, text=text), expire=False)

    def done(self, result: TaskResult) -> None:
        self._emit(StreamEvent(type="done", attempt=self.attempt, result=result))

    def error(self, info: ErrorInfo) -> None:
        self._emit(StreamEvent(type="error", attempt=self.attempt, error=info))

    def _emit(self, event: StreamEvent, expire: bool = True) -> None:
        data = event.model_dump_json(exclude_defaults=True)
        if expire:
            pipe = self.client.pipeline()
            pipe.xadd(self.key, {"e": data}, maxlen=STREAM_MAXLEN, approximate=True)
            pipe.expire(self.key, self.ttl_s)
            pipe.execute()
        else:
            self.client.xadd(self.key, {"e": data}, maxlen=STREAM_MAXLEN, approximate=True)
