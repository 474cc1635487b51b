"""Read safetensors files with numpy only, checking they are complete.

Our own small reader (the format is an 8-byte header length, a JSON header, raw
little-endian data) so that validation can say *how* a file is broken (truncated,
bad header) and the llama.cpp worker can convert adapters without importing torch.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_DTYPES: dict[str, tuple[np.dtype, int]] = {
    "F32": (np.dtype("<f4"), 4),
    "F16": (np.dtype("<f2"), 2),
    "BF16": (np.dtype("<u2"), 2),  # widened to float32 by hand (numpy has no bfloat16)
    "F64": (np.dtype("<f8"), 8),
}
MAX_HEADER_BYTES = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    """The file is not a complete, well-formed safetensors file."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # offsets relative to the start of the data section
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_start: int


def read_header(path: Path) -> SafetensorsHeader:
    """Parse and check the header; raise SafetensorsError if the file is cut short or malformed."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        raw_len = fh.read(8)
        if len(raw_len) < 8:
            raise SafetensorsError(f"{path.name} is {size} bytes: too short to be safetensors (truncated?)")
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len > MAX_HEADER_BYTES:
            raise SafetensorsError(f"{path.name}: header length {header_len} is not plausible (not safetensors?)")
        if 8 + header_len > size:
            raise SafetensorsError(f"{path.name} is truncated: its header needs {8 + header_len} bytes, "
                                   f"the file has {size}")
        try:
            header = json.loads(fh.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SafetensorsError(f"{path.name}: header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path.name}: header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data_start = 8 + header_len
    tensors: dict[str, TensorInfo] = {}
    data_end = 0
    for name, entry in header.items():
        try:
            dtype, shape, (start, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError(f"{path.name}: tensor {name!r} has a malformed header entry") from None
        if dtype not in _DTYPES:
            raise SafetensorsError(f"{path.name}: tensor {name!r} has dtype {dtype}; "
                                   f"supported: {', '.join(_DTYPES)}")
        expected = int(np.prod(shape, dtype=np.int64)) * _DTYPES[dtype][1]
        if end - start != expected or start < 0:
            raise SafetensorsError(f"{path.name}: tensor {name!r} claims {end - start} bytes for shape "
                                   f"{list(shape)} ({expected} expected)")
        tensors[name] = TensorInfo(name, dtype, shape, start, end)
        data_end = max(data_end, end)
    if data_start + data_end > size:
        raise SafetensorsError(f"{path.name} is truncated: the header describes {data_start + data_end} "
                               f"bytes, the file has {size} (copy it again from the training output)")
    return SafetensorsHeader(tensors=tensors, metadata=metadata, data_start=data_start)


def read_tensors(path: Path) -> dict[str, np.ndarray]:
    """All tensors of a (checked) file as float32 numpy arrays."""
    header = read_header(path)
    out: dict[str, np.ndarray] = {}
    with path.open("rb") as fh:
        for info in header.tensors.values():
            fh.seek(header.data_start + info.start)
            buf = fh.read(info.end - info.start)
            arr = np.frombuffer(buf, dtype=_DTYPES[info.dtype][0])
            if info.dtype == "BF16":
                arr = (arr.astype(np.uint32) << 16).view(np.float32)
            out[info.name] = arr.astype(np.float32).reshape(info.shape)
    return out
