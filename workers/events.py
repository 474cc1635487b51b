"""Publish a running task's events (attempts, tokens, result, error) to Redis.

The API reads the same Redis stream and forwards tokens to the client as SSE. A
stream (not pub/sub) is used so a reader that attaches late still sees every event.
"""

from __future__ import annotations

import json

import redis

from configs.contracts.errors import BackendError
from configs.contracts.tasks import StreamEvent, TaskResult, attempt_key, cancel_key, stream_key
from configs.contracts.errors import ErrorInfo
from workers.token_coalescer import TokenCoalescer

STREAM_MAXLEN = 20_000
# How often (in tokens) a generating task checks whether the owner cancelled it.
CANCEL_CHECK_EVERY = 8
# Text pieces within this window of the first unsent one share one event (workers/token_coalescer.py).
TOKEN_FLUSH_INTERVAL_S = 0.015


def piece_event_json(kind: str, attempt: int, text: str, pieces: int) -> str:
    """The hottest event, written without building a StreamEvent: the same JSON as
    StreamEvent(...).model_dump_json(exclude_defaults=True) (tests/test_stream_events.py)."""
    event: dict[str, object] = {"type": kind, "text": text}
    if attempt != 1:
        event["attempt"] = attempt
    if pieces != 1:
        event["pieces"] = pieces
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


class TaskCancelled(BackendError):
    code = "cancelled"
    status = 409


class EventPublisher:
    def __init__(self, client: redis.Redis, task_id: str, ttl_s: int,
                 flush_interval_s: float = TOKEN_FLUSH_INTERVAL_S) -> None:
        self.client = client
        self.task_id = task_id
        self.ttl_s = ttl_s
        self.key = stream_key(task_id)
        self.attempt = 1
        self.attempt_entry = "0-0"   # stream id of this attempt's `attempt` event
        self._tokens = 0
        self._pieces = TokenCoalescer(self._emit_piece, flush_interval_s)
        self._stop_reason: str | None = None  # set by the heartbeat thread (workers/heartbeat.py)

    def start_attempt(self) -> int:
        """Count this delivery of the task; >1 means a redelivery after a lost worker."""
        akey = attempt_key(self.task_id)
        pipe = self.client.pipeline()
        pipe.incr(akey)
        pipe.expire(akey, self.ttl_s)
        self.attempt = int(pipe.execute()[0])
        self.attempt_entry = self._emit(StreamEvent(type="attempt", attempt=self.attempt))
        return self.attempt

    def token(self, text: str) -> None:
        self._pieces.add("token", text)
        self.progress()

    def reasoning(self, text: str) -> None:
        self._pieces.add("reasoning", text)
        self.progress()

    def _emit_piece(self, kind: str, text: str, pieces: int) -> None:
        # Runs in the coalescer's sender thread, never in the generating one.
        self.client.xadd(self.key, {"e": piece_event_json(kind, self.attempt, text, pieces)},
                         maxlen=STREAM_MAXLEN, approximate=True)

    def progress(self) -> None:
        """Call while working; raises TaskCancelled once the core asked to stop."""
        self._tokens += 1
        if self._stop_reason is not None:
            raise TaskCancelled(self._stop_reason)
        if self._tokens % CANCEL_CHECK_EVERY == 0 and self.client.exists(cancel_key(self.task_id)):
            raise TaskCancelled(f"task {self.task_id} was cancelled")

    def heartbeat(self) -> None:
        self._emit(StreamEvent(type="heartbeat", attempt=self.attempt), expire=False)

    def stop(self, reason: str) -> None:
        """Ask the body to stop at its next progress() (from another thread)."""
        self._stop_reason = reason

    def done(self, result: TaskResult) -> None:
        self._pieces.flush()
        self._emit(StreamEvent(type="done", attempt=self.attempt, result=result))

    def error(self, info: ErrorInfo) -> None:
        self._pieces.flush()
        self._emit(StreamEvent(type="error", attempt=self.attempt, error=info))

    def _emit(self, event: StreamEvent, expire: bool = True) -> str:
        """Append the event; returns its stream entry id."""
        data = event.model_dump_json(exclude_defaults=True)
        if expire:
            pipe = self.client.pipeline()
            pipe.xadd(self.key, {"e": data}, maxlen=STREAM_MAXLEN, approximate=True)
            pipe.expire(self.key, self.ttl_s)
            entry = pipe.execute()[0]
        else:
            entry = self.client.xadd(self.key, {"e": data}, maxlen=STREAM_MAXLEN, approximate=True)
        return entry.decode() if isinstance(entry, bytes) else str(entry)
