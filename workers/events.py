"""Publish a running task's events (attempts, tokens, result, error) to Redis.

The API reads the same Redis stream and forwards tokens to the client as SSE. A
stream (not pub/sub) is used so a reader that attaches late still sees every event.
"""

from __future__ import annotations

import json
from typing import Callable

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


# A new attempt in one round trip (it sits on every task's pickup path): count the
# delivery, append its `attempt` event carrying that count, keep both keys alive, and
# say whether the task was cancelled already. KEYS: attempt counter, stream, cancel
# key; ARGV: ttl, stream maxlen, the event's JSON for attempt 1, and the text before
# and after the number for a later attempt.
START_ATTEMPT_LUA = """
local n = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
local data = ARGV[3]
if n ~= 1 then data = ARGV[4] .. n .. ARGV[5] end
local entry = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'e', data)
redis.call('EXPIRE', KEYS[2], ARGV[1])
return {n, entry, redis.call('EXISTS', KEYS[3])}
"""
_NUMBER_MARK = 987654321


def _attempt_event_json() -> tuple[str, str, str]:
    """The `attempt` event as StreamEvent serialises it: for attempt 1, and the text
    around the number for a later one (so the script writes what _emit would)."""
    first = StreamEvent(type="attempt", attempt=1).model_dump_json(exclude_defaults=True)
    before, after = StreamEvent(type="attempt", attempt=_NUMBER_MARK).model_dump_json(
        exclude_defaults=True).split(str(_NUMBER_MARK))
    return first, before, after


ATTEMPT_EVENT_JSON = _attempt_event_json()


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
        self._cancelled_at_start: bool | None = None  # read with the attempt (start_attempt)

    def start_attempt(self) -> int:
        """Count this delivery of the task; >1 means a redelivery after a lost worker."""
        attempt, entry, cancelled = self.client.register_script(START_ATTEMPT_LUA)(
            keys=[attempt_key(self.task_id), self.key, cancel_key(self.task_id)],
            args=[self.ttl_s, STREAM_MAXLEN, *ATTEMPT_EVENT_JSON])
        self.attempt = int(attempt)
        self.attempt_entry = entry.decode() if isinstance(entry, bytes) else str(entry)
        self._cancelled_at_start = bool(cancelled)
        return self.attempt

    def cancelled_at_start(self) -> bool:
        """Whether the task was cancelled (or given up) before this attempt began: read
        in start_attempt's round trip, else asked now."""
        if self._cancelled_at_start is None:
            return bool(self.client.exists(cancel_key(self.task_id)))
        return self._cancelled_at_start

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

    def done(self, result: TaskResult, also: Callable[[redis.client.Pipeline], None] | None = None) -> None:
        """`also` adds commands to the same round trip (the task's metrics); their
        errors are not the task's: only the event's own commands must succeed."""
        self._pieces.flush()
        event = StreamEvent(type="done", attempt=self.attempt, result=result)
        if also is None:
            self._emit(event)
            return
        pipe = self.client.pipeline()
        pipe.xadd(self.key, {"e": event.model_dump_json(exclude_defaults=True)}, maxlen=STREAM_MAXLEN,
                  approximate=True)
        pipe.expire(self.key, self.ttl_s)
        also(pipe)
        replies = pipe.execute(raise_on_error=False)
        for reply in replies[:2]:
            if isinstance(reply, Exception):
                raise reply

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
