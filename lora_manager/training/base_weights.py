"""Which weights to train on: exactly the base the model server serves.

- `--base FOLDER` (HF config.json + safetensors): used as given, after checking that its
  shapes are the served base's (an adapter trained on other weights is refused later
  anyway; refusing before training saves the hours).
- llama.cpp (embedded default): the served GGUF itself, dequantized by transformers
  (`from_pretrained(folder, gguf_file=...)`), so the adapter learns on the very weights
  llama.cpp runs.
- vLLM: the served folder (adapters.base_config, or what /v1/models reports).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from configs.model_files import resolve_gguf_path
from configs.schema import Settings
from lora_manager.base_model import BaseModelSpec
from lora_manager.training.spec import TrainingRefused, TrainingSpec


@dataclass(frozen=True)
class BaseWeights:
    folder: Path
    gguf_file: str | None = None

    def describe(self) -> str:
        return str(self.folder / self.gguf_file) if self.gguf_file else str(self.folder)


def resolve(settings: Settings, spec: TrainingSpec) -> BaseWeights:
    if spec.base:
        return BaseWeights(Path(spec.base).expanduser())
    model = spec.model or settings.default_model
    cfg = settings.models[model]
    if cfg.backend == "llamacpp":
        path = resolve_gguf_path(model, cfg)
        return BaseWeights(path.parent, path.name)
    if settings.adapters.base_config is not None:
        folder = Path(settings.adapters.base_config)
        return BaseWeights(folder if folder.is_dir() else folder.parent)
    from lora_manager.settings_glue import served_base

    return BaseWeights(Path(served_base(settings, model).source).parent)


def load(weights: BaseWeights, quantize: str = "none") -> tuple[Any, Any]:
    """(model, tokenizer) in float32 on the CPU, or bfloat16 on a GPU (4-bit NF4 for QLoRA)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"gguf_file": weights.gguf_file} if weights.gguf_file else {}
    if quantize == "nf4":
        kwargs["quantization_config"] = _nf4_config(weights)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(str(weights.folder), **kwargs)
    model = AutoModelForCausalLM.from_pretrained(str(weights.folder), dtype=dtype, **kwargs)
    if weights.gguf_file:  # dequantized already: drop the quantizer marker so peft treats it as plain
        model.hf_quantizer = None
        if hasattr(model, "is_quantized"):
            model.is_quantized = False
    if quantize == "nf4":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    elif torch.cuda.is_available():
        model = model.to("cuda")
        # Recompute activations in the backward pass: the memory plan (train_plan.py) counts on it.
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _nf4_config(weights: BaseWeights) -> Any:
    import importlib.util

    import torch
    from transformers import BitsAndBytesConfig

    if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
        raise TrainingRefused("--quantize nf4 (QLoRA) needs a CUDA GPU and the bitsandbytes package; this machine "
                              "has " + ("no CUDA GPU" if not torch.cuda.is_available() else "no bitsandbytes") +
                              ". Fix: train without --quantize here (the CPU trains in float32), or run the "
                              "`trainer` service of compose.yaml (profile train) on the GPU.")
    if weights.gguf_file:
        raise TrainingRefused("--quantize nf4 needs HF weights, not a GGUF file. Fix: give --base the HF folder.")
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def check_same_base(model: Any, served: BaseModelSpec, weights: BaseWeights) -> None:
    cfg = model.config
    heads = cfg.num_attention_heads
    facts = {"layers": (cfg.num_hidden_layers, served.num_layers), "hidden size": (cfg.hidden_size, served.hidden_size),
             "attention heads": (heads, served.num_heads),
             "KV heads": (getattr(cfg, "num_key_value_heads", None) or heads, served.num_kv_heads),
             "head size": (getattr(cfg, "head_dim", None) or cfg.hidden_size // heads, served.head_dim)}
    wrong = {k: v for k, v in facts.items() if v[0] != v[1]}
    if wrong:
        detail = ", ".join(f"{k} {a} vs {b}" for k, (a, b) in wrong.items())
        raise TrainingRefused(f"the training weights {weights.describe()} are not the served base ({detail}; served: "
                              f"{served.describe()}). Fix: give --base the HF folder of the served model, or "
                              f"leave --base out.")
