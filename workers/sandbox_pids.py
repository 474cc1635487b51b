"""A pids cgroup per sandbox run: the process limit where RLIMIT_NPROC cannot work.

The kernel never applies RLIMIT_NPROC to processes whose real user is root (uid 0
outside every user namespace), so a code worker running as root (the embedded
default on a root shell, and this test machine) needs another limit: a pids cgroup
whose `pids.max` bounds every process of the run, with a counter that says when
the limit refused a fork. Unprivileged workers (compose runs them as uid 1000) use
RLIMIT_NPROC inside the sandbox's fresh user namespace instead; see sandbox.py.

cgroup v1 (a `pids` hierarchy) and v2 (the unified hierarchy with the pids
controller) are both handled; only what the running kernel offers is used.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

V1_ROOT = Path("/sys/fs/cgroup/pids")
V2_ROOT = Path("/sys/fs/cgroup")
GROUP_DIR = "appliance-sandbox"


def _v2_has_pids() -> bool:
    controllers = V2_ROOT / "cgroup.controllers"
    return controllers.is_file() and "pids" in controllers.read_text().split()


def _parent() -> Path | None:
    """The folder our run groups go in, created once; None when no pids cgroup is writable."""
    if (V1_ROOT / "pids.max").exists() or (V1_ROOT / "cgroup.procs").is_file():
        candidates = [(V1_ROOT, False)]
    elif _v2_has_pids():
        candidates = [(V2_ROOT, True)]
    else:
        return None
    for root, v2 in candidates:
        parent = root / GROUP_DIR
        try:
            parent.mkdir(exist_ok=True)
            if v2:  # children of `parent` only get a pids.max when the controller is enabled for them
                for level in (root, parent):
                    (level / "cgroup.subtree_control").write_text("+pids")
            return parent
        except OSError:
            continue
    return None


def available() -> bool:
    return _parent() is not None


class PidsCgroup:
    """One run's group: join it before exec, ask whether the limit bit, kill what is left."""

    def __init__(self, max_pids: int) -> None:
        parent = _parent()
        if parent is None:
            raise OSError("no writable pids cgroup")
        self.path = parent / f"run-{uuid.uuid4().hex[:12]}"
        self.path.mkdir()
        (self.path / "pids.max").write_text(str(max_pids))

    def join_self(self) -> None:
        """Called in the child between fork and exec, so nothing escapes the count."""
        (self.path / "cgroup.procs").write_text("0")

    def limit_hit(self) -> bool:
        try:
            for line in (self.path / "pids.events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "max" and int(value) > 0:
                    return True
        except (OSError, ValueError):
            pass
        return False

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def kill_all_and_remove(self, timeout_s: float = 5.0) -> None:
        """Belt and braces after the PID namespace died: nothing of the run may remain."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = self.pids()
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                self.path.rmdir()
                return
            except OSError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.05)
