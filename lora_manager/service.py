"""What the CLI (`appliance adapters ...`) and the HTTP routes (/adapters) do.

list/add/remove work on the adapters directory and need no running stack.
load/unload act on the model server of a model:
  - vLLM (backend `openai`): POST /v1/load_lora_adapter / unload_lora_adapter now.
  - llama.cpp (backend `llamacpp`, in the worker processes): `load` converts the
    adapter to GGUF now, so no request pays for it; each worker process then loads
    it on first use (llama_adapter_lora_init, milliseconds) and keeps it under its
    own LRU (adapters.max_loras). `unload` has nothing to free outside the workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from configs.schema import Settings
from lora_manager import settings_glue
from lora_manager.drivers.vllm import VllmAdapterDriver
from lora_manager.errors import AdapterRefused
from lora_manager.gguf_convert import convert_to_gguf
from lora_manager.metrics import collect
from lora_manager.registry import AdapterRecord


class AdapterService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = settings_glue.registry(settings)

    def _model(self, model: str | None) -> str:
        """The served model an operation is for; an unknown one is a 400 naming the choices."""
        model = model or self.settings.default_model
        if model not in self.settings.models:
            raise AdapterRefused(f"model '{model}' is not configured (configured: "
                                 f"{', '.join(sorted(self.settings.models))}). Fix: name one of those, or "
                                 f"leave `model` out for the default model.")
        return model

    def _vllm(self, model: str) -> VllmAdapterDriver:
        cfg = self.settings.models[model]
        return VllmAdapterDriver(cfg.base_url or "", self.registry,
                                 api_key=cfg.api_key.get_secret_value() if cfg.api_key else None,
                                 server_dir=self.settings.adapters.server_dir)

    def list(self) -> list[AdapterRecord]:
        return self.registry.list()

    def get(self, name: str) -> AdapterRecord:
        return self.registry.get(name)

    def add(self, name: str, path: Path, tasks: list[str] | None = None, pinned: bool = False,
            description: str = "", model: str | None = None,
            training: dict[str, Any] | None = None) -> AdapterRecord:
        """Validate against the served base and register; llama.cpp: convert right away."""
        model = self._model(model)
        # A bad name or folder is refused before the base model is read (that takes seconds).
        self.registry.precheck(name, path, settings_glue.limits(self.settings), tasks)
        base = settings_glue.served_base(self.settings, model)
        record = self.registry.add(name, path, base, settings_glue.limits(self.settings), tasks=tasks,
                                   pinned=pinned, description=description, training=training)
        if self.settings.models[model].backend == "llamacpp":
            try:
                convert_to_gguf(self.registry, record, base)
            except BaseException:
                self.registry.remove(name)  # all or nothing: no half-usable adapter
                raise
        return record

    def remove(self, name: str) -> AdapterRecord:
        record = self.registry.get(name)
        for model, cfg in self.settings.models.items():
            if cfg.backend == "openai":
                driver = self._vllm(model)
                try:
                    driver.unload(name)
                except Exception:  # server down: it has nothing loaded then
                    pass
                finally:
                    driver.close()
        self.registry.remove(name)
        # Converted files are shared by adapters with the same content: keep them while one remains.
        if not any(r.checksum == record.checksum for r in self.registry.list()):
            for cached in (self.registry.cache_dir / "gguf").glob(f"{record.checksum[:32]}-*.gguf"):
                cached.unlink(missing_ok=True)
        return record

    def load(self, name: str, model: str | None = None) -> str:
        """Make `name` ready on `model`'s server; returns what was done."""
        model = self._model(model)
        record = self.registry.get(name)
        if self.settings.models[model].backend == "openai":
            driver = self._vllm(model)
            try:
                driver.load(record)
            finally:
                driver.close()
            return f"loaded on the vLLM server of '{model}'"
        base = settings_glue.served_base(self.settings, model)
        path = convert_to_gguf(self.registry, record, base)
        return f"converted for llama.cpp ({path.name}); workers activate it per request"

    def unload(self, name: str, model: str | None = None) -> str:
        model = self._model(model)
        self.registry.get(name)
        if self.settings.models[model].backend == "openai":
            driver = self._vllm(model)
            try:
                driver.unload(name)
            finally:
                driver.close()
            return f"unloaded from the vLLM server of '{model}'"
        return "llama.cpp workers free it by LRU when its slot is needed (nothing to do now)"

    def stats(self) -> dict[str, Any]:
        return collect(settings_glue.metrics_dir(self.settings))
