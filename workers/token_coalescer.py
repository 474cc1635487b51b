"""Batch a generating task's text pieces into fewer stream events.

Without it every token costs one Redis XADD in the worker, one XREAD wake-up and one
SSE chunk in the API: at GPU rates (150-200 tokens/s per stream, many streams) the
event rate, not the text, is what the pipeline pays for. The coalescer is a leading-
edge throttle with a trailing timer:

- a piece that arrives when the last send is at least `interval_s` old goes out at
  once, so the first token (and every token of a slow model) adds no delay;
- a piece that arrives sooner is buffered; the buffer goes out when the interval since
  the last send has passed (a background timer, so a model that stalls after a burst
  does not hold text back), when it reaches `max_chars`, or when the caller flushes
  (before 'done'/'error'/'attempt', so events stay in order);
- a change of kind (reasoning -> answer text) sends the buffered kind first.

So the added delay is at most `interval_s` per piece and the event rate at most about
1 / interval_s per stream, whatever the token rate. `interval_s = 0` sends every piece
on its own (the behaviour before coalescing).
"""

from __future__ import annotations

import threading
import time
from typing import Callable

# Buffered text is sent at once beyond this size (a huge piece never waits).
MAX_BUFFERED_CHARS = 2048
# The timer thread ends after this long with nothing to send; it restarts on demand.
TIMER_IDLE_EXIT_S = 2.0

# (kind, text, pieces) -> publish one event holding `pieces` model deltas joined
Send = Callable[[str, str, int], None]


class TokenCoalescer:
    def __init__(self, send: Send, interval_s: float, max_chars: int = MAX_BUFFERED_CHARS) -> None:
        self._send = send
        self._interval = interval_s
        self._max_chars = max_chars
        self._lock = threading.Condition()
        self._kind = ""
        self._parts: list[str] = []
        self._chars = 0
        self._last_send = float("-inf")
        self._timer: threading.Thread | None = None

    def add(self, kind: str, text: str) -> None:
        with self._lock:
            if self._parts and kind != self._kind:
                self._flush_locked()
            self._kind = kind
            self._parts.append(text)
            self._chars += len(text)
            if time.monotonic() - self._last_send >= self._interval or self._chars >= self._max_chars:
                self._flush_locked()
            else:
                self._ensure_timer()
                self._lock.notify()

    def flush(self) -> None:
        """Send what is buffered now (call before any other event of the task)."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._parts:
            return
        text, pieces = "".join(self._parts), len(self._parts)
        self._parts, self._chars = [], 0
        # Sent under the lock: the timer and the generating thread never reorder events.
        self._send(self._kind, text, pieces)
        self._last_send = time.monotonic()

    def _ensure_timer(self) -> None:
        if self._timer is None or not self._timer.is_alive():
            self._timer = threading.Thread(target=self._run_timer, name="token-coalescer", daemon=True)
            self._timer.start()

    def _run_timer(self) -> None:
        with self._lock:
            idle_since = time.monotonic()
            while True:
                now = time.monotonic()
                if self._parts:
                    due = self._last_send + self._interval
                    if now >= due:
                        try:
                            self._flush_locked()
                        except Exception:
                            # Redis went away: the task's own next send reports it.
                            return
                        idle_since = time.monotonic()
                    else:
                        self._lock.wait(due - now)
                elif now - idle_since >= TIMER_IDLE_EXIT_S:
                    self._timer = None
                    return
                else:
                    self._lock.wait(TIMER_IDLE_EXIT_S)
