"""Adapters inside an in-process llama.cpp model (llama-cpp-python low-level API).

load:     convert PEFT -> GGUF LoRA (cached), then llama_adapter_lora_init(model, path)
          once; the adapter then lives beside the model weights, ready to apply.
activate: llama_set_adapters_lora(ctx, [adapter], [1.0]) (or none for the base) per
          request, then clear the KV cache: cached prefixes computed under the previous
          adapter would otherwise leak into this request's answer.

The model is never reloaded. The caller serialises requests on one context (the chat
backend's lock), so exactly one adapter set is active while a request generates.
"""

from __future__ import annotations

import ctypes
import time
from pathlib import Path
from typing import Any

from lora_manager.base_model import BaseModelSpec
from lora_manager.errors import AdapterServerError
from lora_manager.gguf_convert import convert_to_gguf
from lora_manager.metrics import AdapterMetrics
from lora_manager.registry import AdapterRecord, AdapterRegistry


class LlamaCppAdapterDriver:
    kind = "llamacpp"

    def __init__(self, llama: Any, model_path: Path, registry: AdapterRegistry,
                 metrics: AdapterMetrics | None = None) -> None:
        self.llama = llama  # llama_cpp.Llama
        self.registry = registry
        self.base = BaseModelSpec.from_gguf(model_path)
        self.metrics = metrics or AdapterMetrics()
        self._handles: dict[str, Any] = {}
        self.active: str | None = None

    def load(self, record: AdapterRecord) -> None:
        import llama_cpp

        if not record.base.same_shapes(self.base):
            raise AdapterServerError(
                f"adapter '{record.name}' was validated for another base ({record.base.describe()}); "
                f"this server runs {self.base.describe()}. Fix: register an adapter trained on this base.")
        path = convert_to_gguf(self.registry, record, self.base)
        handle = llama_cpp.llama_adapter_lora_init(self.llama.model, str(path).encode())
        if not handle:
            raise AdapterServerError(f"llama.cpp could not load adapter '{record.name}' from {path}. Fix: "
                                     f"delete {path} (it is re-converted) and check the worker log.")
        self._handles[record.name] = handle

    def unload(self, name: str) -> None:
        import llama_cpp

        handle = self._handles.pop(name, None)
        if handle is None:
            return
        if self.active == name:
            self.activate(None)
        llama_cpp.llama_adapter_lora_free(handle)

    def server_resident(self) -> set[str] | None:
        return None

    def activate(self, name: str | None, scale: float = 1.0) -> bool:
        """Make `name` (None = base model) the active adapter; True if that was a switch."""
        import llama_cpp

        if name == self.active:
            return False
        started = time.perf_counter()
        ctx = self.llama.ctx
        if name is None:
            rc = llama_cpp.llama_set_adapters_lora(ctx, None, 0, None)
        else:
            handle = self._handles.get(name)
            if handle is None:
                raise AdapterServerError(f"adapter '{name}' is not loaded in this worker")
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(handle)
            scales = (ctypes.c_float * 1)(scale)
            rc = llama_cpp.llama_set_adapters_lora(ctx, adapters, 1, scales)
        if rc != 0:
            raise AdapterServerError(f"llama.cpp refused to activate adapter '{name}' (code {rc})")
        self.active = name
        self._clear_kv_cache()
        self.metrics.swapped(time.perf_counter() - started)
        return True

    def _clear_kv_cache(self) -> None:
        import llama_cpp

        memory = llama_cpp.llama_get_memory(self.llama.ctx)
        if memory:
            # Metadata only (data=False): the cells become free and are never attended to
            # again; zeroing the buffers too would cost milliseconds for nothing.
            llama_cpp.llama_memory_clear(memory, False)
        # Llama reuses the longest matching token prefix of the previous prompt; after
        # reset() it has none, so every token is evaluated under the new adapter.
        self.llama.reset()
