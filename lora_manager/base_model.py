"""What an adapter must fit: the served base model's architecture and shapes.

Read from the served model itself, never from a name: the GGUF metadata for
llama.cpp, the HF config.json for vLLM. Two models with the same name but other
shapes are different bases; an adapter for one must not load on the other.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel

from lora_manager.errors import AdapterError

# HF model_type -> llama.cpp architecture name, for the families we convert.
HF_TO_GGUF_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3",
                   "qwen3_moe": "qwen3moe"}
# llama.cpp's HF->GGUF converter permutes q/k rows (rotary layout) for these only;
# NEOX-rope families (qwen*) keep the HF row order.
PERMUTED_QK_ARCHS = {"llama"}


class BaseModelError(AdapterError):
    code = "base_model_unreadable"
    status = 503


class BaseModelSpec(BaseModel):
    architecture: str          # llama.cpp architecture name ("llama", "qwen3", ...)
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    source: str = ""           # where these facts were read (for messages)

    def projection_shape(self, module: str) -> tuple[int, int] | None:
        """(in_features, out_features) of a linear module, None if unknown."""
        q_out, kv_out = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        return {
            "q_proj": (self.hidden_size, q_out), "k_proj": (self.hidden_size, kv_out),
            "v_proj": (self.hidden_size, kv_out), "o_proj": (q_out, self.hidden_size),
            "gate_proj": (self.hidden_size, self.intermediate_size),
            "up_proj": (self.hidden_size, self.intermediate_size),
            "down_proj": (self.intermediate_size, self.hidden_size),
        }.get(module)

    def describe(self) -> str:
        return (f"{self.architecture}, {self.num_layers} layers, hidden {self.hidden_size}, "
                f"{self.num_heads} heads / {self.num_kv_heads} KV heads of {self.head_dim}")

    @property
    def permutes_qk(self) -> bool:
        return self.architecture in PERMUTED_QK_ARCHS

    @classmethod
    def from_hf_config(cls, path: Path) -> BaseModelSpec:
        """From an HF config.json (or the model folder holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise BaseModelError(f"cannot read the base model config {path}: {exc}. Fix: set "
                                 f"adapters.base_config to the served model's config.json") from None
        model_type = cfg.get("model_type", "")
        if model_type not in HF_TO_GGUF_ARCH:
            raise BaseModelError(f"base model type {model_type!r} ({path}) is not supported for "
                                 f"adapters; supported: {sorted(HF_TO_GGUF_ARCH)}")
        heads = cfg["num_attention_heads"]
        return cls(architecture=HF_TO_GGUF_ARCH[model_type], hidden_size=cfg["hidden_size"],
                   num_layers=cfg["num_hidden_layers"], num_heads=heads,
                   num_kv_heads=cfg.get("num_key_value_heads") or heads,
                   head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
                   intermediate_size=cfg.get("intermediate_size") or 0, source=str(path))

    @classmethod
    def from_gguf(cls, path: Path) -> BaseModelSpec:
        """From a GGUF model file's metadata (no weights are read). Remembered per file
        version: parsing the metadata (a whole vocabulary) takes seconds on a busy CPU,
        and every adapter registration, load and conversion asks."""
        try:
            stat = Path(path).stat()
        except OSError:
            return cls._read_gguf(path)
        return _gguf_spec_cached(str(path), stat.st_mtime_ns, stat.st_size).model_copy()

    @classmethod
    def _read_gguf(cls, path: Path) -> BaseModelSpec:
        from gguf import GGUFReader

        try:
            reader = GGUFReader(str(path), "r")
        except (OSError, ValueError) as exc:
            raise BaseModelError(f"cannot read GGUF metadata of {path}: {exc}") from None

        def value(key: str, default: object = None) -> object:
            field = reader.fields.get(key)
            return default if field is None else field.contents()

        arch = str(value("general.architecture", ""))
        if not arch:
            raise BaseModelError(f"{path} has no general.architecture; not a model GGUF")
        hidden = int(value(f"{arch}.embedding_length"))
        heads = int(value(f"{arch}.attention.head_count"))
        return cls(architecture=arch, hidden_size=hidden, num_layers=int(value(f"{arch}.block_count")),
                   num_heads=heads, num_kv_heads=int(value(f"{arch}.attention.head_count_kv", heads)),
                   head_dim=int(value(f"{arch}.attention.key_length", hidden // heads)),
                   intermediate_size=int(value(f"{arch}.feed_forward_length", 0)), source=str(path))

    def same_shapes(self, other: BaseModelSpec) -> bool:
        return self.model_dump(exclude={"source"}) == other.model_dump(exclude={"source"})


@lru_cache(maxsize=16)
def _gguf_spec_cached(path: str, mtime_ns: int, size: int) -> BaseModelSpec:
    return BaseModelSpec._read_gguf(Path(path))
