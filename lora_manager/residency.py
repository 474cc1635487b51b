"""Which adapters are resident on one model server: at most `max_loras`, least
recently used evicted first, pinned adapters and adapters in use never evicted.

All requests go through `use(name)`, which loads the adapter if needed and holds a
lease on it until the request ends, so an adapter is never unloaded under a running
request. For servers that can lose adapters (a vLLM restart), every `use` first
compares what the server has with what should be resident and reloads the difference.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from contextlib import contextmanager
from typing import Iterator

from lora_manager.drivers.base import AdapterDriver
from lora_manager.errors import AdapterCapacity, AdapterServerError
from lora_manager.metrics import AdapterMetrics
from lora_manager.registry import AdapterRecord, AdapterRegistry


class Residency:
    def __init__(self, driver: AdapterDriver, registry: AdapterRegistry, max_loras: int,
                 metrics: AdapterMetrics | None = None) -> None:
        self.driver = driver
        self.registry = registry
        self.max_loras = max_loras
        self.metrics = metrics or AdapterMetrics()
        self._lock = threading.RLock()
        self._lru: OrderedDict[str, AdapterRecord] = OrderedDict()  # oldest first
        self._in_use: Counter[str] = Counter()

    def resident(self) -> list[str]:
        """Resident adapters, least recently used first."""
        with self._lock:
            return list(self._lru)

    def reconcile(self) -> list[str]:
        """Reload what the server lost (it restarted); returns the reloaded names."""
        with self._lock:
            on_server = self.driver.server_resident()
            if on_server is None:
                return []
            missing = [name for name in self._lru if name not in on_server]
            for name in missing:
                self.driver.load(self._lru[name])
            if missing:
                self.metrics.reloaded_after_restart(len(missing))
            return missing

    def load(self, name: str) -> AdapterRecord:
        """Make `name` resident (evicting if needed) and mark it most recently used."""
        with self._lock:
            self.reconcile()
            record = self.registry.get(name)
            held = self._lru.get(name)
            if held is not None and held.checksum == record.checksum:
                held.pinned = record.pinned  # pinning can change after loading
                self._lru.move_to_end(name)
                return held
            if held is not None:  # removed and re-added with other weights: replace it
                self._drop(name, evicted=False)
            self._make_room()
            started = time.perf_counter()
            self.driver.load(record)
            self.metrics.loaded(name, time.perf_counter() - started)
            self._lru[name] = record
            return record

    def _make_room(self) -> None:
        while len(self._lru) >= self.max_loras:
            victim = next((n for n, r in self._lru.items() if not r.pinned and not self._in_use[n]), None)
            if victim is None:
                raise AdapterCapacity(
                    f"all {self.max_loras} adapter slots hold pinned or busy adapters "
                    f"({', '.join(self._lru)}). Fix: raise adapters.max_loras (and the server's "
                    f"--max-loras), or unpin an adapter.")
            self._drop(victim, evicted=True)

    def _drop(self, name: str, evicted: bool) -> None:
        self.driver.unload(name)
        del self._lru[name]
        self.metrics.unloaded(name, evicted=evicted)

    def unload(self, name: str) -> bool:
        """Unload now; False if it was not resident. Refused while a request uses it."""
        with self._lock:
            if name not in self._lru:
                return False
            if self._in_use[name]:
                raise AdapterServerError(f"adapter '{name}' is serving {self._in_use[name]} request(s); "
                                         f"try again when they finish.")
            self._drop(name, evicted=False)
            return True

    def preload(self, names: list[str]) -> None:
        for name in names:
            self.load(name)

    @contextmanager
    def use(self, name: str) -> Iterator[AdapterRecord]:
        """Hold `name` resident for the duration of one request."""
        with self._lock:
            record = self.load(name)
            self._in_use[name] += 1
        self.metrics.request(name)
        try:
            yield record
        finally:
            with self._lock:
                self._in_use[name] -= 1
