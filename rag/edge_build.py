"""Build an Edge shard's indexes in a child process, so the rag worker keeps answering.

Why a child process: `EdgeShard.optimize()` holds Python's GIL for the whole build
(measured with qdrant-edge-py 0.9: a thread beside a 2-minute build of 30k points did
not run once), so neither a thread nor asyncio keeps the worker responsive; and the
shard's file lock keeps a second process off the open shard.

How (the owner = the rag worker, which runs one task at a time):
1. `start`: the owner flushes the shard and copies its folder, between writes, into
   `<edge root>/.build/<name>` (a flushed shard copied between writes is consistent,
   see rag/index_copy.py); a child `python -m rag.edge_build <copy>` loads the copy at
   low priority, runs Edge's optimizers (HNSW + sparse index) and writes `built.json`.
2. Meanwhile the owner keeps searching and writing the original shard (points written
   since the last build are searched by brute force) and journals every update.
3. `swap`, when the child is done: close the original, move it to
   `.build/<name>.old`, move the built copy in, load it, replay the journal, flush,
   then delete the old folder: that deletion is the commit point.
4. `recover` on open: if an `.old` folder exists the swap did not commit, so the old
   folder (which received every write) goes back in place and the build is discarded;
   leftover build copies are deleted. A lost build costs only time: the pending
   points are still searched by brute force and the next write past the mark
   starts a new one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("appliance.rag.store")

BUILD_DIR = ".build"
DONE_MARK = "built.json"
CHILD_NICENESS = 10   # the build yields the CPU to searches, chat and the other workers


def work_dir(root: Path) -> Path:
    return root / BUILD_DIR


def recover(root: Path, name: str) -> None:
    """Undo an interrupted build or swap of shard `name` under `root` (see the docstring)."""
    work = work_dir(root)
    old, live = work / f"{name}.old", root / name
    if old.is_dir():
        shutil.rmtree(live, ignore_errors=True)
        old.rename(live)
        log.warning("an index swap of %s was interrupted: kept the shard as it was before the build", name)
    shutil.rmtree(work / name, ignore_errors=True)


class BackgroundBuild:
    """One index build of one shard in a child process, with the journal of updates made meanwhile."""

    def __init__(self, root: Path, name: str) -> None:
        self.root, self.name = root, name
        self.copy = work_dir(root) / name
        self.journal: list = []   # UpdateOperation objects applied to the live shard since the copy
        self.points = 0           # unindexed points the build covers (pending again if it is lost)
        self.started = time.perf_counter()
        self.process: subprocess.Popen | None = None

    def start(self, flush) -> None:
        """`flush` flushes the live shard (the caller holds it and writes nothing meanwhile)."""
        flush()
        shutil.rmtree(self.copy, ignore_errors=True)
        self.copy.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        shutil.copytree(self.root / self.name, self.copy)
        copy_s = time.perf_counter() - t0
        logfile = open(self.copy.parent / f"{self.name}.log", "wb")
        with logfile:
            self.process = subprocess.Popen([sys.executable, "-m", "rag.edge_build", str(self.copy)],
                                            stdout=logfile, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=os.environ.copy())
        log.info("index build of %s started in the background (pid %d; shard copied in %.1f s)",
                 self.name, self.process.pid, copy_s)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def succeeded(self) -> bool:
        return (self.process is not None and self.process.poll() == 0
                and (self.copy / DONE_MARK).is_file())

    def failure(self) -> str:
        path = self.copy.parent / f"{self.name}.log"
        tail = path.read_text(errors="replace")[-2000:] if path.is_file() else ""
        return f"exit status {self.process.returncode if self.process else None}: {tail.strip()}"

    def cancel(self) -> None:
        if self.running():
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.copy, ignore_errors=True)

    def swap(self, close_live, load, replay) -> object:
        """Put the built copy in place of the live shard; returns the loaded new shard.

        close_live(): flush and close the live shard; load(path) -> shard; replay(shard, ops).
        On any failure the live folder is put back and loaded again (the build is lost)."""
        live, old = self.root / self.name, work_dir(self.root) / f"{self.name}.old"
        (self.copy / DONE_MARK).unlink()
        close_live()
        live.rename(old)
        self.copy.rename(live)
        try:
            shard = load(live)
            replay(shard, self.journal)
            shard.flush()
        except Exception:
            log.exception("swapping in the built index of %s failed; keeping the shard as it was", self.name)
            try:
                shard.close()  # type: ignore[possibly-undefined]
            except Exception:
                pass
            recover(self.root, self.name)
            return load(live)
        shutil.rmtree(old)   # the commit point
        log.info("index of %s built in the background in %.1f s (%d updates replayed)",
                 self.name, time.perf_counter() - self.started, len(self.journal))
        return shard


def main() -> None:
    """The child: optimize the shard copy given as the only argument."""
    from qdrant_edge import EdgeShard

    path = Path(sys.argv[1])
    os.nice(CHILD_NICENESS)
    t0 = time.perf_counter()
    shard = EdgeShard.load(str(path))
    shard.optimize()
    info = shard.info()
    shard.close()
    (path / DONE_MARK).write_text(json.dumps({"seconds": time.perf_counter() - t0, "points": info.points_count,
                                              "indexed_vectors": info.indexed_vectors_count}))
    print(f"built {path} in {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
