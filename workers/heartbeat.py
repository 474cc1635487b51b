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
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

import redis

from configs.contracts.tasks import attempt_key, cancel_key
from workers.events import EventPublisher, TaskCancelled

log = logging.getLogger("appliance.worker.heartbeat")


class Heartbeat:
    def __init__(self, publisher: EventPublisher, interval_s: float) -> None:
        self.publisher = publisher
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{publisher.task_id}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        # A delivery of a task nobody waits for any more (the core failed or finished it
        # after taking it over; the owner cancelled it) does no work.
        if self.publisher.client.exists(cancel_key(self.publisher.task_id)):
            raise TaskCancelled(f"task {self.publisher.task_id} was already answered, abandoned or cancelled")
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 1)

    def _beat(self) -> None:
        client, task_id = self.publisher.client, self.publisher.task_id
        while not self._stop.wait(self.interval_s):
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
