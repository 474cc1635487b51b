"""A running task proves it is alive: a heartbeat event on its stream every few seconds.

Why events on the task's own stream rather than a Redis key with a TTL: the core is
already blocked reading that stream (dispatcher.events), so a beat wakes it with no
extra round trip or polling, the beat carries the attempt number (a superseded
delivery's beats do not count), and a reader that attaches late sees the same
history. The beat comes from a thread, so it keeps coming while the task body is busy
in native code (llama.cpp releases the GIL) or in a step that streams nothing.

The same thread watches for two reasons to stop: a newer attempt of this task has
started (the core gave this delivery up as lost and queued the task again), or the
task was cancelled. It only flags the publisher; the body stops at its next
`progress()` call (workers/events.py).

One beat thread per worker process serves every running task of that process (a
threads pool runs many at once): starting and joining a thread per task cost the
dispatch path a thread start-up (waiting for the new thread to be scheduled and take
the GIL: ~10% of a pool process's py-spy samples for no-op tasks on a loaded 2-core
machine; docs/architecture.md "Dispatch path"). A task's first beat still comes `interval_s` after it
started, and none comes after its `with Heartbeat(...)` block ended.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from types import TracebackType

import redis

from configs.contracts.tasks import attempt_key, cancel_key
from workers.events import EventPublisher, TaskCancelled

log = logging.getLogger("appliance.worker.heartbeat")

# The idle beat thread looks for new tasks this often; a task whose first beat is due
# later than that is added without waking the thread (a wake-up on the pickup path
# costs a thread switch and the GIL, like a thread start).
IDLE_POLL_S = 0.5


class Heartbeat:
    def __init__(self, publisher: EventPublisher, interval_s: float) -> None:
        self.publisher = publisher
        self.interval_s = interval_s
        # Held while this task's beat is being sent, so that __exit__ returns only when
        # no beat of this task is in flight (none may follow its 'done').
        self.sending = threading.Lock()
        self.active = False

    def __enter__(self) -> "Heartbeat":
        # A delivery of a task nobody waits for any more (the core failed or finished it
        # after taking it over; the owner cancelled it) does no work.
        if self.publisher.cancelled_at_start():
            raise TaskCancelled(f"task {self.publisher.task_id} was already answered, abandoned or cancelled")
        self.active = True
        _beater().add(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.active = False
        with self.sending:  # waits only for a beat already being sent
            pass

    def beat(self) -> None:
        """One beat, and the checks whether this delivery should stop (beat thread)."""
        client, task_id = self.publisher.client, self.publisher.task_id
        try:
            self.publisher.heartbeat()
            newest = int(client.get(attempt_key(task_id)) or 0)
            if newest > self.publisher.attempt:
                self.publisher.stop(f"attempt {self.publisher.attempt} of task {task_id} was superseded by "
                                    f"attempt {newest} (the core took it as lost)")
            elif client.exists(cancel_key(task_id)):
                self.publisher.stop(f"task {task_id} was cancelled")
        except redis.RedisError as exc:  # Redis away for a moment: the core notices silence
            log.warning("heartbeat of task %s not sent: %s", task_id, exc)


class _Beater:
    """The process's beat thread: a schedule of (next beat time, heartbeat)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._due: list[tuple[float, int, Heartbeat]] = []
        self._order = itertools.count()  # ties never compare Heartbeats
        self._wake = threading.Condition()
        threading.Thread(target=self._run, name="heartbeats", daemon=True).start()

    def add(self, hb: Heartbeat) -> None:
        due = time.monotonic() + hb.interval_s
        with self._wake:
            wake = (self._due[0][0] > due) if self._due else hb.interval_s < IDLE_POLL_S
            heapq.heappush(self._due, (due, next(self._order), hb))
            if wake:
                self._wake.notify()

    def _next(self) -> Heartbeat:
        """Wait for the next beat that is due and still wanted."""
        with self._wake:
            while True:
                while self._due and not self._due[0][2].active:
                    heapq.heappop(self._due)  # its task ended
                if not self._due:
                    self._wake.wait(IDLE_POLL_S)
                    continue
                delay = self._due[0][0] - time.monotonic()
                if delay > 0:
                    self._wake.wait(delay)
                    continue
                _, _, hb = heapq.heappop(self._due)
                return hb

    def _run(self) -> None:
        while True:
            hb = self._next()
            with hb.sending:
                if not hb.active:
                    continue
                hb.beat()
            if hb.active:
                with self._wake:
                    heapq.heappush(self._due, (time.monotonic() + hb.interval_s, next(self._order), hb))


_beater_lock = threading.Lock()
_the_beater: _Beater | None = None


def _beater() -> _Beater:
    """This process's beat thread, started on first use (a forked pool child starts its own)."""
    global _the_beater
    with _beater_lock:
        if _the_beater is None or _the_beater.pid != os.getpid():
            _the_beater = _Beater()
        return _the_beater
