"""Convert a registered PEFT LoRA into the GGUF LoRA file llama.cpp loads.

llama.cpp wants, per adapted weight `blk.N.<tensor>.weight`, two tensors
`...weight.lora_a` (numpy shape [rank, in]) and `...weight.lora_b` ([out, rank]),
which is exactly PEFT's lora_A / lora_B layout, plus the metadata general.type =
adapter, adapter.type = lora and adapter.lora.alpha (llama.cpp scales by
alpha / rank, as PEFT does).

One subtlety: when llama.cpp's converter turned the HF llama weights into GGUF it
permuted the rows of q_proj and k_proj (HF and llama.cpp lay out the rotary halves
differently). The adapter's update B·A is added to those permuted weights, so the
rows of lora_b of q_proj / k_proj must get the same permutation; lora_a (columns)
is untouched. Without it the adapter loads fine and silently computes garbage.

Results are cached by the adapter's checksum and the base's head layout, so a
worker converts an adapter once, ever.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from lora_manager.base_model import BaseModelSpec
from lora_manager.registry import AdapterRecord, AdapterRegistry
from lora_manager.safetensors_file import read_tensors
from lora_manager.validation import KEY_RE, WEIGHTS_FILE

CONVERTER_VERSION = "1"
GGUF_TENSOR_NAMES = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
                     "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}


def permute_rows(rows: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder output rows from HF's rotary layout to llama.cpp's.

    Within each head HF stores the first halves of all rotary pairs, then the second
    halves; llama.cpp interleaves them (pair i = rows 2i, 2i+1). Applied to lora_b of
    q_proj (n_head = attention heads) and k_proj (n_head = KV heads).
    """
    out = rows.shape[0]
    return (rows.reshape(n_head, 2, out // n_head // 2, *rows.shape[1:])
            .swapaxes(1, 2).reshape(rows.shape))


def gguf_tensors(peft_tensors: dict[str, np.ndarray], base: BaseModelSpec) -> dict[str, np.ndarray]:
    """PEFT tensor dict -> GGUF LoRA tensor dict (names mapped, q/k lora_b permuted)."""
    out: dict[str, np.ndarray] = {}
    for key, value in peft_tensors.items():
        match = KEY_RE.match(key)
        if not match:  # validation already refused such files; never convert them silently
            raise ValueError(f"unexpected tensor {key!r} in a validated adapter")
        layer, module, ab = int(match[1]), match[2], match[3].lower()
        if ab == "b" and base.permutes_qk and module in ("q_proj", "k_proj"):
            value = permute_rows(value, base.num_heads if module == "q_proj" else base.num_kv_heads)
        out[f"blk.{layer}.{GGUF_TENSOR_NAMES[module]}.weight.lora_{ab}"] = np.ascontiguousarray(value, np.float32)
    return out


def write_gguf_lora(tensors: dict[str, np.ndarray], alpha: float, architecture: str, target: Path) -> None:
    """Write a GGUF LoRA file atomically (temp file in the same folder, then rename)."""
    import gguf

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp_name, arch=architecture)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
        for name in sorted(tensors):
            writer.add_tensor(name, tensors[name])
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def gguf_alpha(record: AdapterRecord) -> float:
    """The alpha to store: llama.cpp always scales by alpha/rank, so rsLoRA's
    alpha/sqrt(rank) is expressed as (alpha*sqrt(rank))/rank."""
    return record.facts.alpha * record.facts.scaling


def cached_gguf_path(registry: AdapterRegistry, record: AdapterRecord, base: BaseModelSpec) -> Path:
    layout = f"{base.architecture}-h{base.num_heads}-kv{base.num_kv_heads}"
    return registry.cache_dir / "gguf" / f"{record.checksum[:32]}-{layout}-v{CONVERTER_VERSION}.gguf"


def convert_to_gguf(registry: AdapterRegistry, record: AdapterRecord, base: BaseModelSpec) -> Path:
    """The GGUF LoRA of a registered adapter for `base`, converting on first use."""
    target = cached_gguf_path(registry, record, base)
    if target.is_file():
        return target
    tensors = read_tensors(registry.path(record.name) / WEIGHTS_FILE)
    write_gguf_lora(gguf_tensors(tensors, base), gguf_alpha(record), base.architecture, target)
    return target
