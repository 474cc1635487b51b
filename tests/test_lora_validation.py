"""Adapter validation and the registry: each bad adapter is refused with a message that
names the problem and the fix, and a refused adapter leaves nothing behind."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from lora_manager.base_model import BaseModelSpec
from lora_manager.errors import AdapterExists, AdapterRefused
from lora_manager.registry import AdapterRegistry
from lora_manager.validation import ValidationLimits
from bench.harness.tiny_lora import tiny_lora_dir
from bench.harness.tiny_model import tiny_gguf_path, tiny_hf_model_dir

LIMITS = ValidationLimits(max_rank=64, max_size_bytes=256 * 2**20,
                          supported_modules=frozenset({"q_proj", "k_proj", "v_proj", "o_proj"}))


@pytest.fixture(scope="module")
def base() -> BaseModelSpec:
    return BaseModelSpec.from_gguf(tiny_gguf_path())


@pytest.fixture(scope="module")
def adapter_dir() -> Path:
    return tiny_lora_dir("quokka")


@pytest.fixture
def registry(tmp_path: Path) -> AdapterRegistry:
    return AdapterRegistry(tmp_path / "adapters")


def _peft_adapter_for_tiny_random_llama(target: Path, modules: list[str]) -> Path:
    """A real PEFT adapter, but for another (random, tiny) llama: hidden 64, 2 layers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=128))
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=modules))
    peft_model.save_pretrained(target, safe_serialization=True)
    return target


def _leaves_no_trace(registry: AdapterRegistry) -> None:
    left = sorted(p.name for p in registry.root.iterdir()) if registry.root.exists() else []
    assert left in ([], [".lock"]), f"refused adapter left {left}"
    assert registry.list() == []


def _refused(registry: AdapterRegistry, name: str, source: Path, base: BaseModelSpec,
             limits: ValidationLimits = LIMITS) -> str:
    with pytest.raises(AdapterRefused) as info:
        registry.add(name, source, base, limits)
    _leaves_no_trace(registry)
    assert info.value.status == 400
    return str(info.value)


def test_base_shapes_from_gguf_and_hf_config_agree(base: BaseModelSpec) -> None:
    hf = BaseModelSpec.from_hf_config(tiny_hf_model_dir())
    assert hf.same_shapes(base), (hf, base)
    assert (base.architecture, base.num_layers, base.hidden_size, base.num_heads, base.num_kv_heads) == \
        ("llama", 30, 576, 9, 3)


def test_good_adapter_is_registered_with_checksum(registry: AdapterRegistry, base: BaseModelSpec,
                                                  adapter_dir: Path) -> None:
    record = registry.add("quokka", adapter_dir, base, LIMITS, tasks=["chat", "sport"], pinned=True,
                          description="answers like a quokka")
    expected = hashlib.sha256((adapter_dir / "adapter_config.json").read_bytes()
                              + (adapter_dir / "adapter_model.safetensors").read_bytes()).hexdigest()
    assert record.checksum == expected
    assert (record.facts.rank, record.facts.alpha, record.facts.layers) == (8, 16.0, 15)
    assert record.facts.target_modules == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert record.tasks == ["chat", "sport"] and record.pinned
    stored = registry.root / "quokka"
    # Only the PEFT files (and peft's README) are copied, plus our record.
    assert sorted(p.name for p in stored.iterdir()) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors", "appliance-adapter.json"]
    assert [r.name for r in registry.list()] == ["quokka"]
    assert not [p for p in registry.root.iterdir() if p.name.startswith(".incoming")]
    with pytest.raises(AdapterExists, match="already registered"):
        registry.add("quokka", adapter_dir, base, LIMITS)
    registry.remove("quokka")
    _leaves_no_trace(registry)


def test_adapter_for_another_base_is_refused(registry: AdapterRegistry, base: BaseModelSpec,
                                             tmp_path: Path) -> None:
    other = _peft_adapter_for_tiny_random_llama(tmp_path / "other", ["q_proj", "v_proj"])
    message = _refused(registry, "other-base", other, base)
    assert "another base model" in message and "576" in message  # names the served base's shapes


def test_rank_above_server_limit_is_refused(registry: AdapterRegistry, base: BaseModelSpec,
                                            adapter_dir: Path) -> None:
    strict = ValidationLimits(max_rank=4, max_size_bytes=LIMITS.max_size_bytes,
                              supported_modules=LIMITS.supported_modules)
    message = _refused(registry, "quokka", adapter_dir, base, strict)
    assert "r=8" in message and "max LoRA rank 4" in message and "max_rank" in message


def test_unsupported_target_modules_are_refused(registry: AdapterRegistry, base: BaseModelSpec,
                                                tmp_path: Path) -> None:
    mlp = _peft_adapter_for_tiny_random_llama(tmp_path / "mlp", ["q_proj", "gate_proj"])
    message = _refused(registry, "mlp", mlp, base)
    assert "['gate_proj']" in message and "not supported" in message


def test_pickled_bin_is_refused(registry: AdapterRegistry, base: BaseModelSpec, adapter_dir: Path,
                                tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(adapter_dir / "adapter_config.json", pickled)
    torch.save(load_file(adapter_dir / "adapter_model.safetensors"), pickled / "adapter_model.bin")
    message = _refused(registry, "pickled", pickled, base)
    assert "adapter_model.bin" in message and "pickle" in message and "safe_serialization=True" in message
    # A .bin beside a good safetensors file is refused too: we never keep pickles around.
    shutil.copy(adapter_dir / "adapter_model.safetensors", pickled)
    assert "pickle" in _refused(registry, "pickled", pickled, base)


@pytest.mark.parametrize("bad_name", ["../evil", "a/b", "Bad Name", "", ".hidden", "x" * 80, "core:quokka", "base"])
def test_unsafe_names_are_refused(registry: AdapterRegistry, base: BaseModelSpec, adapter_dir: Path,
                                  bad_name: str) -> None:
    message = _refused(registry, bad_name, adapter_dir, base)
    assert "is not allowed" in message and "lower-case" in message
    assert not (registry.root.parent / "evil").exists()


def test_truncated_safetensors_is_refused(registry: AdapterRegistry, base: BaseModelSpec,
                                          adapter_dir: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut"
    shutil.copytree(adapter_dir, cut)
    weights = cut / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    message = _refused(registry, "cut", cut, base)
    assert "truncated" in message and "copy" in message
    weights.write_bytes(data[:5])  # shorter than the header length field
    assert "truncated" in _refused(registry, "cut", cut, base)


def test_size_limit_and_missing_files(registry: AdapterRegistry, base: BaseModelSpec, adapter_dir: Path,
                                      tmp_path: Path) -> None:
    tiny = ValidationLimits(max_rank=64, max_size_bytes=1024, supported_modules=LIMITS.supported_modules)
    assert "over the limit" in _refused(registry, "big", adapter_dir, base, tiny)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "has no adapter_config.json" in _refused(registry, "empty", empty, base)
    assert "is not a folder" in _refused(registry, "nowhere", tmp_path / "missing", base)


def test_non_lora_peft_options_are_refused(registry: AdapterRegistry, base: BaseModelSpec,
                                           adapter_dir: Path, tmp_path: Path) -> None:
    dora = tmp_path / "dora"
    shutil.copytree(adapter_dir, dora)
    cfg = json.loads((dora / "adapter_config.json").read_text())
    cfg["use_dora"] = True
    (dora / "adapter_config.json").write_text(json.dumps(cfg))
    assert "DoRA" in _refused(registry, "dora", dora, base)
