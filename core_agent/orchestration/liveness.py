"""How long the core waits on a task, and what it does when the worker goes quiet.

A running task sends a heartbeat every `celery.heartbeat_s` (workers/heartbeat.py).
The reader (dispatcher.events) feeds every stream event to a LivenessWatch, which
keeps one deadline and says what to do when it passes:

- before any worker started the task (`pickup`): when celery.pickup_timeout_s passes, the
  reader asks whether a live worker serves the queue (CHECK_WORKERS, worker presence:
  configs/contracts/presence.py). None: nobody can pick it up (503 `no_worker`). Some:
  they are busy with earlier tasks, so the task keeps its place (`queued`; the reader
  tells the caller, QUEUED), rechecked every heartbeat_timeout_s, until
  celery.queue_wait_timeout_s from sending: then 503 `queue_busy` with Retry-After. If
  the workers vanish while it waits, the usual pickup patience runs again;
- while an attempt runs: silence longer than `heartbeat_timeout_s` means its worker is
  gone (the whole worker killed leaves the message unacknowledged in Redis for the
  broker's visibility timeout, an hour). A task that may run again (`resendable`) is
  queued again by the core under the same id, at most `max_takeovers` times; the next
  delivery is a new attempt and continues from the text already sent
  (workers/continuation.py). Any other task fails with `worker_lost`;
- after a takeover: if no attempt speaks within `takeover_timeout_s`, the task fails
  with `worker_lost` (no worker is there to run it).

Events of superseded attempts are dropped by the shared fold (configs/contracts/
attempts.py), so a late original delivery can neither count as alive nor answer.
"""

from __future__ import annotations

import time
from enum import Enum

from configs.contracts.attempts import AttemptFold
from configs.contracts.errors import ErrorInfo
from configs.contracts.tasks import StreamEvent
from configs.schema import CeleryConfig

# Tasks that may safely run again from the start or from a sent prefix: generations and
# plan steps (text in, text out). Memory writes and the like are failed instead.
RESENDABLE_SUFFIXES = (".generate", ".step")


# Queues whose tasks may hold the GIL for longer than heartbeat_timeout_s, so their
# heartbeat thread cannot beat: the rag worker's embedded Qdrant Edge loads a shard in
# native code without releasing it (measured: opening a 1M-point shard, 18.6 s on the
# loaded 2-core machine; index builds, minutes long, now run in a child process). Their
# silence limit is celery.gil_holding_silence_s instead.
GIL_HOLDING_QUEUES = frozenset({"rag"})


def resendable(task_name: str) -> bool:
    return task_name.endswith(RESENDABLE_SUFFIXES)


class Verdict(Enum):
    WAIT = "wait"          # keep reading
    TAKE_OVER = "take_over"  # queue the task again, then call taken_over()
    FAIL = "fail"          # give up: error() says why
    CHECK_WORKERS = "check_workers"  # not picked up in time: call workers_checked(live workers?)
    QUEUED = "queued"      # workers are alive but busy: the task keeps waiting in the queue


class LivenessWatch:
    def __init__(self, config: CeleryConfig, queue: str, timeout_s: float | None = None) -> None:
        self.config = config
        self.queue = queue
        self.timeout_s = timeout_s
        self.fold = AttemptFold()
        now = time.monotonic()
        self.hard_deadline = now + timeout_s if timeout_s is not None else None
        self.deadline = now + (timeout_s if timeout_s is not None else config.pickup_timeout_s)
        self.phase = "pickup"          # pickup <-> queued -> running <-> taken_over
        # The whole wait for a pickup, behind busy workers included.
        self.queue_deadline = (self.hard_deadline if self.hard_deadline is not None
                               else now + config.queue_wait_timeout_s)
        self.takeovers = 0
        self._error: ErrorInfo | None = None
        self.silence_s = (config.gil_holding_silence_s if queue in GIL_HOLDING_QUEUES
                          else config.heartbeat_timeout_s)

    # --- events ---------------------------------------------------------------------

    def seen(self, event: StreamEvent) -> bool:
        """Take in one stream event; True when it should be passed on (not stale, not a beat)."""
        if not self.fold.accept(event):
            return False
        if event.type == "attempt" or self.phase != "pickup":
            # A worker runs the task (core-run streams, like webhook jobs, never send
            # `attempt`: their wait stays bounded by its timeout only).
            self.phase = "running"
            self._extend(self.silence_s)
        return event.type != "heartbeat"

    def _extend(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        if self.hard_deadline is not None:
            self.deadline = min(self.deadline, self.hard_deadline)

    # --- deadlines ------------------------------------------------------------------

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def verdict(self, can_resend: bool) -> Verdict:
        """What to do now (WAIT while the deadline has not passed)."""
        if self.remaining() > 0:
            return Verdict.WAIT
        if self.phase in ("pickup", "queued"):
            return Verdict.CHECK_WORKERS
        if self.hard_deadline is not None and time.monotonic() >= self.hard_deadline:
            self._error = self._timeout_error()
        elif self.phase == "running" and can_resend and self.takeovers < self.config.max_takeovers:
            return Verdict.TAKE_OVER
        else:
            self._error = self._lost_error()
        return Verdict.FAIL

    def workers_checked(self, live: int) -> Verdict:
        """The answer to CHECK_WORKERS: how many live workers serve the queue."""
        now = time.monotonic()
        if live:
            self.phase = "queued"  # a task given up now is revoked: it would still run later
            if now < self.queue_deadline:
                self.deadline = min(now + self.config.heartbeat_timeout_s, self.queue_deadline)
                return Verdict.QUEUED
            self._error = self._busy_error()
        elif self.phase == "queued":
            # The busy workers are gone: give a restarting one the usual pickup patience.
            self.phase = "pickup"
            self.deadline = min(now + self.config.pickup_timeout_s, self.queue_deadline)
            return Verdict.WAIT
        else:
            self._error = self._timeout_error()
        return Verdict.FAIL

    def taken_over(self) -> None:
        self.takeovers += 1
        self.phase = "taken_over"
        self._extend(self.config.takeover_timeout_s)

    def error(self) -> ErrorInfo:
        assert self._error is not None
        return self._error

    def _timeout_error(self) -> ErrorInfo:
        if self.phase == "pickup":
            limit = self.timeout_s if self.timeout_s is not None else self.config.pickup_timeout_s
            return ErrorInfo(
                code="no_worker", status=503,
                message=(f"no worker picked up the task on queue '{self.queue}' within {limit:g}s. Fix: start "
                         f"the workers (`appliance up`, or `appliance status` to see what runs)."))
        return ErrorInfo(code="task_slow", status=504,
                         message=f"the {self.queue} worker did not finish within {self.timeout_s:g}s")

    def _busy_error(self) -> ErrorInfo:
        waited = self.timeout_s if self.timeout_s is not None else self.config.queue_wait_timeout_s
        retry = max(1, round(self.config.pickup_timeout_s))
        return ErrorInfo(
            code="queue_busy", status=503, retry_after_s=retry,
            message=(f"the workers on queue '{self.queue}' are alive but busy with earlier requests; this one "
                     f"waited {waited:g}s in the queue without being started (celery.queue_wait_timeout_s), "
                     f"so it was dropped. Fix: send it again later (Retry-After), or add capacity "
                     f"(more worker concurrency under `workers:` in configs/appliance.yaml, or a faster "
                     f"model)."))

    def _lost_error(self) -> ErrorInfo:
        beat = self.silence_s
        if self.phase == "taken_over":
            detail = (f"it was queued again ({self.takeovers}x), but no worker started it within "
                      f"{self.config.takeover_timeout_s:g}s")
        elif self.takeovers:
            detail = f"it had already been queued again {self.takeovers}x (celery.max_takeovers)"
        else:
            detail = "this kind of task is not run twice"
        return ErrorInfo(code="worker_lost", status=503, message=(
            f"the worker on queue '{self.queue}' stopped while running this task (no heartbeat for "
            f"{beat:g}s); {detail}. Fix: check the workers (`appliance status`, logs in the data dir's "
            f"logs/), restart them with `appliance up`, then send the request again."))
