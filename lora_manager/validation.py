"""Check a PEFT LoRA folder before anything is registered.

Every refusal is an AdapterRefused whose message names the problem and the fix.
The checks read only the adapter's JSON config and safetensors header (plus one pass
over the bytes for the checksum), so a wrong adapter is refused in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from lora_manager.base_model import BaseModelSpec
from lora_manager.errors import AdapterRefused
from lora_manager.safetensors_file import SafetensorsError, read_header

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
# Files a PEFT adapter folder may carry besides the two above (copied along, never executed).
HARMLESS_FILES = {"README.md"}
# Python pickles execute code when loaded: never accepted, whatever their name says.
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}
KEY_RE = re.compile(r"^base_model\.model\.(?:model\.)?layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")


@dataclass(frozen=True)
class ValidationLimits:
    max_rank: int
    max_size_bytes: int
    supported_modules: frozenset[str]


class AdapterFacts(BaseModel):
    """What validation learned about an adapter; stored in its registry record."""

    rank: int
    alpha: float
    # The factor llama.cpp multiplies by alpha/rank: 1 normally, sqrt(rank) for rsLoRA.
    scaling: float
    target_modules: list[str]
    layers: int
    size_bytes: int
    checksum: str              # sha256 over adapter_config.json + adapter_model.safetensors
    base_model_name: str = ""  # informative only: shapes decide compatibility


def _refuse(message: str) -> AdapterRefused:
    return AdapterRefused(message)


def check_files(folder: Path, limits: ValidationLimits) -> None:
    """The folder holds a PEFT adapter in safetensors, no pickles, within the size limit."""
    try:
        _check_files(folder, limits)
    except OSError as exc:  # a name longer than the filesystem allows, an unreadable folder...
        raise _refuse(f"the path {str(folder)[:200]!r} cannot be read ({exc.strerror or exc}). Fix: give the "
                      f"folder that holds {CONFIG_FILE} and {WEIGHTS_FILE}, readable by the appliance.") from None


def _check_files(folder: Path, limits: ValidationLimits) -> None:
    if not folder.is_dir():
        raise _refuse(f"{folder} is not a folder. Fix: give the folder that holds {CONFIG_FILE} and "
                      f"{WEIGHTS_FILE} (the output of peft's save_pretrained).")
    files = [p for p in folder.iterdir() if p.is_file()]
    pickles = sorted(p.name for p in files if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise _refuse(f"{folder} contains pickled weights ({', '.join(pickles)}): pickle files can run "
                      f"code when loaded and are refused. Fix: save the adapter with "
                      f"save_pretrained(..., safe_serialization=True) to get {WEIGHTS_FILE}.")
    for needed in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / needed).is_file():
            raise _refuse(f"{folder} has no {needed}. Fix: give the folder written by peft's "
                          f"save_pretrained (it holds {CONFIG_FILE} and {WEIGHTS_FILE}).")
    size = sum((folder / n).stat().st_size for n in (CONFIG_FILE, WEIGHTS_FILE))
    if size > limits.max_size_bytes:
        raise _refuse(f"the adapter is {size / 2**20:.1f} MiB, over the limit of "
                      f"{limits.max_size_bytes / 2**20:.0f} MiB. Fix: train a smaller rank or fewer target "
                      f"modules, or raise adapters.max_size_mb in configs/adapters.yaml.")


def read_peft_config(folder: Path) -> dict:
    try:
        cfg = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _refuse(f"{CONFIG_FILE} is not readable JSON ({exc}). Fix: copy the file again from "
                      f"the training output.") from None
    if not isinstance(cfg, dict):
        raise _refuse(f"{CONFIG_FILE} must be a JSON object")
    return cfg


def _check_config(cfg: dict, limits: ValidationLimits) -> tuple[int, float, float, list[str]]:
    if cfg.get("peft_type", "LORA") != "LORA":
        raise _refuse(f"peft_type is {cfg.get('peft_type')!r}; only LoRA adapters are supported.")
    for flag, what in (("use_dora", "DoRA"), ("modules_to_save", "modules_to_save (full copies of layers)"),
                       ("rank_pattern", "per-module ranks (rank_pattern)"),
                       ("alpha_pattern", "per-module alphas (alpha_pattern)")):
        if cfg.get(flag):
            raise _refuse(f"the adapter uses {what}, which the model servers cannot hot-swap. "
                          f"Fix: train a plain LoRA without {flag}.")
    try:
        rank, alpha = int(cfg["r"]), float(cfg.get("lora_alpha", cfg["r"]))
    except (KeyError, TypeError, ValueError):
        raise _refuse(f"{CONFIG_FILE} has no valid rank 'r'. Fix: use peft's LoraConfig output.") from None
    if not 1 <= rank <= limits.max_rank:
        raise _refuse(f"rank r={rank} is above the server's max LoRA rank {limits.max_rank}. Fix: train "
                      f"with r <= {limits.max_rank}, or raise adapters.max_rank (and the server's "
                      f"--max-lora-rank) in configs/adapters.yaml.")
    targets = cfg.get("target_modules") or []
    if isinstance(targets, str):
        raise _refuse(f"target_modules is a pattern ({targets!r}); list the modules explicitly, "
                      f"e.g. [\"q_proj\", \"k_proj\", \"v_proj\", \"o_proj\"].")
    unsupported = sorted(set(targets) - limits.supported_modules)
    if unsupported:
        raise _refuse(f"target modules {unsupported} are not supported by the model servers "
                      f"(supported: {sorted(limits.supported_modules)}). Fix: train on the supported "
                      f"modules only, or extend adapters.supported_target_modules if the server handles them.")
    scaling = math.sqrt(rank) if cfg.get("use_rslora") else 1.0
    return rank, alpha, scaling, sorted(targets)


def _check_tensors(weights: Path, rank: int, base: BaseModelSpec, limits: ValidationLimits) -> int:
    """Tensor names and shapes fit the base model; returns the number of adapted layers."""
    try:
        header = read_header(weights)
    except SafetensorsError as exc:
        raise _refuse(f"{exc}. Fix: copy {WEIGHTS_FILE} again from the training output.") from None
    if not header.tensors:
        raise _refuse(f"{WEIGHTS_FILE} holds no tensors.")
    layers: set[int] = set()
    for info in header.tensors.values():
        match = KEY_RE.match(info.name)
        if not match:
            raise _refuse(f"tensor {info.name!r} is not a LoRA A/B matrix of a decoder layer projection "
                          f"(embedding or head adapters are not supported). Fix: train with "
                          f"target_modules among {sorted(limits.supported_modules)}.")
        layer, module, ab = int(match[1]), match[2], match[3]
        if module not in limits.supported_modules:
            raise _refuse(f"tensor {info.name!r} adapts {module}, which the model servers do not support "
                          f"(supported: {sorted(limits.supported_modules)}).")
        if layer >= base.num_layers:
            raise _refuse(f"the adapter has layer {layer}, the served base model has {base.num_layers} "
                          f"layers: it was trained for another base model. Fix: train it on the served "
                          f"base ({base.describe()}).")
        fan_in, fan_out = base.projection_shape(module) or (0, 0)
        expected = (rank, fan_in) if ab == "A" else (fan_out, rank)
        if tuple(info.shape) != expected:
            raise _refuse(f"{info.name} has shape {list(info.shape)}, the served base model needs "
                          f"{list(expected)}: the adapter was trained for another base model (or another "
                          f"rank). Fix: train it on the served base ({base.describe()}, from {base.source}).")
        layers.add(layer)
    return len(layers)


def checksum(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        with (folder / name).open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def validate_adapter(folder: Path, base: BaseModelSpec, limits: ValidationLimits) -> AdapterFacts:
    """Raise AdapterRefused unless `folder` is a PEFT LoRA that fits `base` within `limits`."""
    folder = Path(folder)
    check_files(folder, limits)
    cfg = read_peft_config(folder)
    rank, alpha, scaling, targets = _check_config(cfg, limits)
    layers = _check_tensors(folder / WEIGHTS_FILE, rank, base, limits)
    size = sum((folder / n).stat().st_size for n in (CONFIG_FILE, WEIGHTS_FILE))
    return AdapterFacts(rank=rank, alpha=alpha, scaling=scaling, target_modules=targets, layers=layers,
                        size_bytes=size, checksum=checksum(folder),
                        base_model_name=str(cfg.get("base_model_name_or_path") or ""))
