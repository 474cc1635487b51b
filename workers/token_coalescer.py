"""Batch a generating task's text pieces into fewer stream events, sent off the decode thread.

Without it every token costs one Redis XADD in the worker, one XREAD wake-up and one
SSE chunk in the API: at GPU rates (150-200 tokens/s per stream, many streams) the
event rate, not the text, is what the pipeline pays for. And when the XADD ran in the
generating thread, every token also waited for a Redis round trip before the model
could decode the next one (py-spy: ~12% of the decode thread on a busy 2-core machine).

So `add()` only appends to a buffer and never does I/O; one sender thread per task
does the sends:

- the first piece of each kind (reasoning, answer text) goes out at once, from the
  generating thread itself (no thread wake-up in its way): no added time to first
  token, one round trip per kind;
- any later piece opens a window (if none is open) of `interval_s` measured from that
  piece; the window's pieces go out as one event when it closes, when they reach
  `max_chars`, or when the caller flushes (before 'done'/'error', so events stay in
  order). Measured from the first unflushed piece, not the last send: a stream whose
  tokens come ~15 ms apart still shares events, where a throttle from the last send
  would send each token alone;
- a change of kind (reasoning -> answer text) closes the open batch: the two never
  share an event, and their order is kept.

So the added delay is at most `interval_s` per piece (never for a first piece) and
the event rate at most about 1 / interval_s per stream, whatever the token rate.
`interval_s = 0` sends every piece on its own (the behaviour before coalescing).

A failed send (Redis went away) is raised to the generating thread at its next
`add()` or `flush()`, as the synchronous send used to raise it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Callable

# Buffered text is sent at once beyond this size (a huge piece never waits).
MAX_BUFFERED_CHARS = 2048
# The sender thread ends after this long with nothing to send; it restarts on demand.
SENDER_IDLE_EXIT_S = 2.0

# (kind, text, pieces) -> publish one event holding `pieces` model deltas joined
Send = Callable[[str, str, int], None]
Batch = tuple[str, str, int]


class TokenCoalescer:
    def __init__(self, send: Send, interval_s: float, max_chars: int = MAX_BUFFERED_CHARS) -> None:
        self._send = send
        self._interval = interval_s
        self._max_chars = max_chars
        self._cond = threading.Condition()   # guards everything below except _sending
        # Held from taking a batch to having sent it: the sender thread and flush()
        # never reorder events.
        self._sending = threading.Lock()
        self._ready: deque[Batch] = deque()  # closed batches, oldest first
        self._kind = ""
        self._parts: list[str] = []
        self._chars = 0
        self._due = math.inf                 # when the open batch closes
        self._started: set[str] = set()      # kinds whose first piece was handed over
        self._failure: BaseException | None = None
        self._sender: threading.Thread | None = None

    def add(self, kind: str, text: str) -> None:
        with self._cond:
            if self._failure is not None:
                raise self._failure
            if self._parts and kind != self._kind:
                self._close_locked()
            self._kind = kind
            self._parts.append(text)
            self._chars += len(text)
            first = kind not in self._started
            if first or self._interval <= 0 or self._chars >= self._max_chars:
                self._started.add(kind)
                self._close_locked()
            elif len(self._parts) == 1:
                self._due = time.monotonic() + self._interval
            else:
                return  # joined the open window: the sender already waits for its end
            if not first:
                self._ensure_sender()
                self._cond.notify()
                return
        # A first piece is sent from this thread: on a busy machine, waking the sender
        # could add a scheduler delay to the time to first token. Once per kind.
        self._send_ready()

    def flush(self) -> None:
        """Send everything buffered now, in this thread, after any send in flight
        (call before any other event of the task)."""
        with self._sending:
            with self._cond:
                if self._failure is not None:
                    raise self._failure
                self._close_locked()
                batches = list(self._ready)
                self._ready.clear()
            for batch in batches:
                self._send(*batch)

    def _close_locked(self) -> None:
        if self._parts:
            self._ready.append((self._kind, "".join(self._parts), len(self._parts)))
            self._parts, self._chars, self._due = [], 0, math.inf

    def _ensure_sender(self) -> None:
        if self._sender is None or not self._sender.is_alive():
            self._sender = threading.Thread(target=self._run_sender, name="token-sender", daemon=True)
            self._sender.start()

    def _run_sender(self) -> None:
        idle_since = time.monotonic()
        while True:
            with self._cond:
                now = time.monotonic()
                if self._parts and now >= self._due:
                    self._close_locked()
                if not self._ready:
                    if now - idle_since >= SENDER_IDLE_EXIT_S and not self._parts:
                        self._sender = None
                        return
                    self._cond.wait(min(self._due - now, SENDER_IDLE_EXIT_S))
                    continue
            try:
                self._send_ready()
            except Exception as exc:  # noqa: BLE001 - handed to the generating thread
                with self._cond:
                    self._failure = exc
                    self._sender = None
                return
            idle_since = time.monotonic()

    def _send_ready(self) -> None:
        with self._sending:
            while True:
                with self._cond:
                    if not self._ready:
                        return
                    batch = self._ready.popleft()
                self._send(*batch)
