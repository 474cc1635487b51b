"""Adapter weights are read through the safetensors library; its refusals become
messages that say how the file is broken (tests/test_lora_validation.py covers the
same through the whole adapter check)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from lora_manager.safetensors_file import SafetensorsError, read_header, read_tensors


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "adapter_model.safetensors"
    save_file({"a": np.arange(1200, dtype=np.float32).reshape(300, 4), "b": np.ones(5, dtype=np.float16)},
              str(path), metadata={"format": "pt"})
    return path


def test_header_and_tensors_of_a_good_file(weights: Path) -> None:
    header = read_header(weights)
    assert {n: (t.dtype, t.shape) for n, t in header.tensors.items()} == {"a": ("F32", (300, 4)), "b": ("F16", (5,))}
    assert header.metadata == {"format": "pt"}
    tensors = read_tensors(weights)
    assert tensors["a"].dtype == np.float32 and tensors["a"][2, 3] == 11.0 and tensors["a"].shape == (300, 4)
    assert tensors["b"].tolist() == [1.0] * 5


def test_bf16_is_widened_to_float32(tmp_path: Path) -> None:
    # Written by hand: numpy cannot produce bfloat16. 1.5 in bf16 is 0x3FC0.
    header = b'{"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}'
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + struct.pack("<HH", 0x3FC0, 0xBF80))
    assert read_tensors(path)["w"].tolist() == [1.5, -1.0]


@pytest.mark.parametrize("cut, words", [
    (0.5, ["truncated", "describes"]),      # data cut short
    (5, ["too short", "truncated"]),        # shorter than the length field
    (20, ["truncated", "header needs"]),    # header cut short
])
def test_a_cut_file_is_called_truncated(weights: Path, cut: float, words: list[str]) -> None:
    data = weights.read_bytes()
    weights.write_bytes(data[: int(len(data) * cut) if cut < 1 else int(cut)])
    with pytest.raises(SafetensorsError) as caught:
        read_header(weights)
    assert all(w in str(caught.value) for w in words), str(caught.value)


def test_extra_bytes_and_garbage_are_refused_clearly(weights: Path) -> None:
    weights.write_bytes(weights.read_bytes() + b"junk")
    with pytest.raises(SafetensorsError, match="4 bytes after its last tensor"):
        read_header(weights)
    weights.write_bytes(b"PK\x03\x04 this is a zip file, not safetensors" * 4)
    with pytest.raises(SafetensorsError, match="not plausible|not a valid safetensors"):
        read_header(weights)


def test_an_unsupported_dtype_is_named(tmp_path: Path) -> None:
    path = tmp_path / "ints.safetensors"
    save_file({"i": np.arange(4, dtype=np.int32)}, str(path))
    with pytest.raises(SafetensorsError, match="dtype I32; supported: F32, F16, BF16, F64"):
        read_header(path)
