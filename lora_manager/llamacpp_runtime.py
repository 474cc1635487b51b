"""Adapters of one in-process llama.cpp model: residency plus per-request activation.

The chat backend calls `serving(adapter)` while it holds its generation lock, so
the adapter set is switched only between requests: a request never runs under
another request's adapter, and the KV cache is cleared on every switch.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from configs.schema import Settings
from lora_manager import settings_glue
from lora_manager.drivers.llamacpp import LlamaCppAdapterDriver
from lora_manager.errors import AdapterError
from lora_manager.metrics import AdapterMetrics
from lora_manager.registry import AdapterRegistry
from lora_manager.residency import Residency

log = logging.getLogger("appliance.adapters")


class LlamaCppAdapters:
    def __init__(self, llama: Any, model_path: Path, registry: AdapterRegistry, max_loras: int,
                 preload: list[str] | None = None, metrics: AdapterMetrics | None = None) -> None:
        self.metrics = metrics or AdapterMetrics()
        self.driver = LlamaCppAdapterDriver(llama, model_path, registry, self.metrics)
        self.residency = Residency(self.driver, registry, max_loras, self.metrics)
        for name in preload or []:
            try:
                self.residency.load(name)
            except AdapterError as exc:  # a bad preload entry must not stop the worker
                log.error("cannot preload adapter %s: %s", name, exc)

    @classmethod
    def for_settings(cls, llama: Any, model_path: Path, settings: Settings) -> LlamaCppAdapters:
        registry = settings_glue.registry(settings)
        pinned = [r.name for r in registry.list() if r.pinned]
        preload = list(dict.fromkeys([*pinned, *settings.adapters.preload]))
        return cls(llama, model_path, registry, settings.adapters.max_loras, preload,
                   metrics=AdapterMetrics(persist_dir=settings_glue.metrics_dir(settings)))

    @contextmanager
    def serving(self, adapter: str | None) -> Iterator[None]:
        """Run the body with exactly `adapter` active (None = the base model)."""
        try:
            if adapter is None:
                self.driver.activate(None)
                self.metrics.request(None)
                yield
                return
            with self.residency.use(adapter):
                self.driver.activate(adapter)
                yield
        finally:
            self.metrics.flush()
