"""Read adapter safetensors files through the `safetensors` library, with errors that
say how a file is broken.

The library parses and checks the format (header, offsets, dtypes, that the data
covers the file exactly); its messages are terse ("incomplete metadata, file not
fully covered"), so they are translated here into what the owner needs to know
(truncated? not safetensors at all?). Tensors come back as float32 numpy arrays, so
the llama.cpp worker converts adapters without importing torch; BF16 is widened by
hand because numpy has no bfloat16.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, deserialize, safe_open

_DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # widened to float32 by hand
    "F64": np.dtype("<f8"),
}


class SafetensorsError(ValueError):
    """The file is not a complete, well-formed safetensors file."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]


def _described_size(path: Path) -> int | None:
    """How many bytes the file's header says the file has (None: header unreadable).
    Only used to explain a refusal: the library says "not fully covered" both for a
    file cut short and for one with bytes appended."""
    try:
        with path.open("rb") as fh:
            (header_len,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(header_len))
        ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
        return 8 + header_len + max(ends, default=0)
    except (OSError, struct.error, ValueError, KeyError, TypeError, IndexError):
        return None


def _explain(path: Path, error: SafetensorError) -> SafetensorsError:
    """Our message for the library's refusal."""
    size = path.stat().st_size
    detail = str(error).removeprefix("Error while deserializing header: ")
    if "header too small" in detail:
        return SafetensorsError(f"{path.name} is {size} bytes: too short to be safetensors (truncated?)")
    if "invalid header length" in detail:
        (header_len,) = struct.unpack("<Q", path.read_bytes()[:8])
        return SafetensorsError(f"{path.name} is truncated: its header needs {8 + header_len} bytes, "
                                f"the file has {size}")
    if "header too large" in detail:
        return SafetensorsError(f"{path.name}: the header length is not plausible (not safetensors?)")
    if "not fully covered" in detail:
        described = _described_size(path)
        if described is not None and described > size:
            return SafetensorsError(f"{path.name} is truncated: the header describes {described} bytes, "
                                    f"the file has {size} (copy it again from the training output)")
        if described is not None:
            return SafetensorsError(f"{path.name} has {size - described} bytes after its last tensor "
                                    f"(damaged or not written by a safetensors writer)")
    return SafetensorsError(f"{path.name} is not a valid safetensors file: {detail}")


def read_header(path: Path) -> SafetensorsHeader:
    """Names, dtypes and shapes of the tensors, checked by the library without reading
    the data; raise SafetensorsError if the file is cut short or malformed."""
    try:
        with safe_open(str(path), framework="numpy") as fh:
            metadata = fh.metadata() or {}
            tensors = {}
            for name in fh.keys():
                piece = fh.get_slice(name)
                tensors[name] = TensorInfo(name, piece.get_dtype(), tuple(piece.get_shape()))
    except SafetensorError as exc:
        raise _explain(path, exc) from None
    for info in tensors.values():
        if info.dtype not in _DTYPES:
            raise SafetensorsError(f"{path.name}: tensor {info.name!r} has dtype {info.dtype}; "
                                   f"supported: {', '.join(_DTYPES)}")
    return SafetensorsHeader(tensors=tensors, metadata=dict(metadata))


def read_tensors(path: Path) -> dict[str, np.ndarray]:
    """All tensors of a (checked) file as float32 numpy arrays."""
    read_header(path)
    try:
        entries = deserialize(path.read_bytes())
    except SafetensorError as exc:
        raise _explain(path, exc) from None
    out: dict[str, np.ndarray] = {}
    for name, entry in entries:
        arr = np.frombuffer(bytes(entry["data"]), dtype=_DTYPES[entry["dtype"]])
        if entry["dtype"] == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = arr.astype(np.float32).reshape(entry["shape"])
    return out
