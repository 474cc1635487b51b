"""Everything the adapter code derives from the appliance Settings, in one place."""

from __future__ import annotations

from pathlib import Path

from configs.model_files import resolve_gguf_path
from configs.schema import Settings
from lora_manager.base_model import BaseModelError, BaseModelSpec
from lora_manager.hub_cache import cached_config, hub_dir, looks_like_repo_id
from lora_manager.registry import AdapterRegistry
from lora_manager.validation import ValidationLimits


def adapters_dir(settings: Settings) -> Path:
    return Path(settings.adapters.dir or settings.data_dir / "adapters").expanduser()


def metrics_dir(settings: Settings) -> Path:
    """Where each process that serves adapters writes its counters (see metrics.py)."""
    return adapters_dir(settings) / ".metrics"


def training_dir(settings: Settings) -> Path:
    """Training jobs (lora_manager/training/jobs.py): beside the adapters, not inside them."""
    return Path(settings.data_dir).expanduser() / "training"


def registry(settings: Settings) -> AdapterRegistry:
    return AdapterRegistry(adapters_dir(settings))


def limits(settings: Settings) -> ValidationLimits:
    cfg = settings.adapters
    return ValidationLimits(max_rank=cfg.max_rank, max_size_bytes=cfg.max_size_mb * 2**20,
                            supported_modules=frozenset(cfg.supported_target_modules))


def served_base(settings: Settings, model_name: str | None = None) -> BaseModelSpec:
    """Architecture and shapes of the base model that serves adapters (the default model)."""
    name = model_name or settings.default_model
    model = settings.models[name]
    if model.backend == "llamacpp":
        return BaseModelSpec.from_gguf(resolve_gguf_path(name, model))
    if settings.adapters.base_config is not None:
        return BaseModelSpec.from_hf_config(settings.adapters.base_config)
    from lora_manager.drivers.vllm import VllmAdapterDriver

    driver = VllmAdapterDriver(model.base_url or "", registry(settings),
                               api_key=model.api_key.get_secret_value() if model.api_key else None)
    try:
        root = driver.served_root()
    except Exception as exc:  # unreachable server: say how to proceed without it
        raise BaseModelError(f"cannot ask the model server of '{name}' which base it serves ({exc}). Fix: "
                             f"start it, or set adapters.base_config to the base model's config.json.") from None
    finally:
        driver.close()
    if root and looks_like_repo_id(root):
        # Served by hub repo id (production): the same cache vLLM read, mounted here.
        config = cached_config(root, settings.adapters.base_revision)
        if config is None:
            raise BaseModelError(
                f"the model server of '{name}' serves {root!r} (a hub repo id), but its config.json is not in "
                f"the Hugging Face cache at {hub_dir()} (revision {settings.adapters.base_revision or 'main'}). "
                f"Fix: mount the models volume with HF_HOME as in compose.yaml, run ./scripts/fetch-models.sh, "
                f"or set adapters.base_config to the base model's config.json.")
        return BaseModelSpec.from_hf_config(config)
    if not root or not Path(root).exists():
        raise BaseModelError(f"the model server of '{name}' serves {root!r}, which is not a folder here. Fix: set "
                             f"adapters.base_config to the base model's config.json.")
    return BaseModelSpec.from_hf_config(Path(root))
