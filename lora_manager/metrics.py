"""Adapter counters: loads, unloads, evictions, swap latency, requests per adapter.

Kept per process (each llama.cpp worker process has its own adapters). A process
given `persist_dir` writes its snapshot there (one small JSON file per process, after
every adapter request), and `collect()` adds the files of all processes together for
/adapters/stats and `appliance adapters stats`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any


class AdapterMetrics:
    def __init__(self, persist_dir: Path | None = None) -> None:
        self._lock = threading.Lock()
        self.persist_dir = persist_dir
        self.loads: Counter[str] = Counter()
        self.unloads: Counter[str] = Counter()
        self.evictions: Counter[str] = Counter()
        self.reloads_after_restart = 0
        self.requests: Counter[str] = Counter()  # key "" = base model
        self.swaps = 0
        self.swap_seconds_total = 0.0
        self.swap_seconds_max = 0.0
        self.load_seconds_total = 0.0

    def loaded(self, name: str, seconds: float) -> None:
        with self._lock:
            self.loads[name] += 1
            self.load_seconds_total += seconds

    def unloaded(self, name: str, evicted: bool) -> None:
        with self._lock:
            self.unloads[name] += 1
            if evicted:
                self.evictions[name] += 1

    def reloaded_after_restart(self, count: int) -> None:
        with self._lock:
            self.reloads_after_restart += count

    def swapped(self, seconds: float) -> None:
        """The active adapter changed (llama.cpp) or a request waited for a load (vLLM)."""
        with self._lock:
            self.swaps += 1
            self.swap_seconds_total += seconds
            self.swap_seconds_max = max(self.swap_seconds_max, seconds)

    def request(self, name: str | None) -> None:
        with self._lock:
            self.requests[name or ""] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "loads": dict(self.loads), "unloads": dict(self.unloads), "evictions": dict(self.evictions),
                "reloads_after_restart": self.reloads_after_restart,
                "requests": {("(base)" if k == "" else k): v for k, v in self.requests.items()},
                "swaps": self.swaps,
                "swap_ms_mean": round(1000 * self.swap_seconds_total / self.swaps, 4) if self.swaps else None,
                "swap_ms_max": round(1000 * self.swap_seconds_max, 4) if self.swaps else None,
                "load_ms_mean": (round(1000 * self.load_seconds_total / sum(self.loads.values()), 3)
                                 if self.loads else None),
            }

    def flush(self) -> None:
        """Write this process's snapshot to persist_dir (atomically; a few hundred bytes)."""
        if self.persist_dir is None:
            return
        self.persist_dir.mkdir(parents=True, exist_ok=True)
        target = self.persist_dir / f"{os.uname().nodename}-{os.getpid()}.json"
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "at": time.time(), **self.snapshot()}))
        os.replace(tmp, target)


def collect(persist_dir: Path) -> dict[str, Any]:
    """Sum the snapshots of every process that wrote one (counts since each process started)."""
    total: dict[str, Any] = {"processes": 0, "loads": Counter(), "unloads": Counter(), "evictions": Counter(),
                             "requests": Counter(), "reloads_after_restart": 0, "swaps": 0,
                             "swap_ms_max": None, "swap_ms_mean": None}
    weighted = 0.0
    for path in sorted(persist_dir.glob("*.json")) if persist_dir.is_dir() else []:
        try:
            snap = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a file being replaced right now
        total["processes"] += 1
        for key in ("loads", "unloads", "evictions", "requests"):
            total[key].update(snap.get(key, {}))
        total["reloads_after_restart"] += snap.get("reloads_after_restart", 0)
        total["swaps"] += snap.get("swaps", 0)
        if snap.get("swaps"):
            weighted += snap["swaps"] * snap["swap_ms_mean"]
            total["swap_ms_max"] = max(total["swap_ms_max"] or 0.0, snap["swap_ms_max"])
    if total["swaps"]:
        total["swap_ms_mean"] = round(weighted / total["swaps"], 4)
    for key in ("loads", "unloads", "evictions", "requests"):
        total[key] = dict(total[key])
    return total
