"""What to train, and every check that needs neither data nor a model (milliseconds).

The CLI and the HTTP route run `preflight` before anything is written, so a wrong
rank, a taken name or a missing source is refused at once (exit 1 / HTTP 400).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from configs.schema import Settings
from lora_manager import owner_paths, settings_glue
from lora_manager.errors import AdapterError, AdapterExists
from lora_manager.naming import NAME_RE, check_name
from lora_manager.registry import check_tasks

MEMORY_PREFIX = "memory:"
TrainingKind = Literal["style", "knowledge"]


class TrainingRefused(AdapterError):
    """The request or its data cannot train an adapter; nothing was trained or registered."""

    code = "training_refused"
    status = 400


class TrainingCancelled(AdapterError):
    code = "training_cancelled"
    status = 409


class TrainingSpec(BaseModel):
    # The pattern is documented (OpenAPI); preflight's check_name enforces it with the fix.
    name: str = Field(json_schema_extra={"pattern": NAME_RE.pattern})
    sources: list[str] = Field(min_length=1)
    kind: TrainingKind = "style"
    tasks: list[str] = Field(default_factory=lambda: ["chat"])
    description: str = ""
    model: str | None = None            # the served model the adapter is for (default_model)
    base: str | None = None             # HF weights to train on; None = derived from the served model
    rank: int = 8
    alpha: float | None = None          # None = 2 x rank
    learning_rate: float = 2e-4
    max_steps: int = 0                  # > 0: exactly this many optimizer steps (epochs cycle)
    epochs: float = 1.0                 # used when max_steps is 0
    batch_size: int = 4
    seq_len: int = 512                  # tokens per example (longer ones are cut into pieces)
    top_layers: int | None = None       # adapt only the top N decoder layers (None = all)
    eval_share: float = 0.10
    checkpoint_every: int = 0           # 0 = about five checkpoints per run
    leakage_questions: int = 4          # how many general questions the leakage probe asks
    seed: int = 0
    nice: int = Field(default=10, ge=0, le=19)
    # nf4 = QLoRA: the frozen base in 4 bit (bitsandbytes, CUDA only), when the training
    # plan (appliance train-plan) says bf16 does not fit beside the servers that keep running.
    quantize: Literal["none", "nf4"] = "none"  # CPU priority of the job process: chat goes first

    @property
    def lora_alpha(self) -> float:
        return self.alpha if self.alpha is not None else 2.0 * self.rank


def _refuse(message: str) -> TrainingRefused:
    return TrainingRefused(message)


def check_source(source: str) -> None:
    if source.startswith(MEMORY_PREFIX):
        if not source[len(MEMORY_PREFIX):].strip():
            raise _refuse("memory: needs a query, e.g. memory:'my notes on training'. Fix: write what to look "
                          "for after the colon.")
        return
    if not owner_paths.exists(owner_paths.expanded(source)):
        raise _refuse(f"source {source} does not exist. Fix: give a folder or file of documents, a .jsonl of "
                      f"chat examples, or memory:<query>.")


def preflight(spec: TrainingSpec, settings: Settings) -> TrainingSpec:
    """Refuse what can be refused without data or a model; returns the normalised spec."""
    check_name(spec.name)
    tasks = check_tasks(spec.tasks)
    registry = settings_glue.registry(settings)
    if registry.exists(spec.name):
        raise AdapterExists(f"adapter '{spec.name}' is already registered. Fix: choose another name, or remove "
                            f"it first (appliance adapters remove {spec.name}).")
    limit = settings.adapters.max_rank
    if not 1 <= spec.rank <= limit:
        raise _refuse(f"rank {spec.rank} is above the model server's max LoRA rank {limit} (or below 1). Fix: "
                      f"train with --rank between 1 and {limit}, or raise adapters.max_rank (and the server's "
                      f"--max-lora-rank) in configs/adapters.yaml.")
    model = spec.model or settings.default_model
    if model not in settings.models:
        raise _refuse(f"model '{model}' is not configured (configured: {', '.join(sorted(settings.models))}).")
    if not 0.0 < spec.eval_share < 0.5:
        raise _refuse(f"--eval-share {spec.eval_share} must be above 0 and below 0.5 (the held-out share of "
                      f"documents; default 0.1).")
    for number, what in ((spec.max_steps, "--max-steps"), (spec.batch_size - 1, "batch size"),
                         (spec.seq_len - 16, "sequence length")):
        if number < 0:
            raise _refuse(f"{what} is too small.")
    if spec.max_steps == 0 and spec.epochs <= 0:
        raise _refuse("give --epochs above 0 or --max-steps.")
    if not 0 < spec.learning_rate < 1:
        raise _refuse(f"learning rate {spec.learning_rate} is out of range (typical: 1e-4 .. 2e-3).")
    if spec.base is not None and not owner_paths.is_dir(owner_paths.expanded(spec.base)):
        raise _refuse(f"--base {spec.base} is not a folder. Fix: give the HF folder (config.json + safetensors) "
                      f"of the served base model, or leave it out to use the served model's own weights.")
    for source in spec.sources:
        check_source(source)
    return spec.model_copy(update={"tasks": tasks, "model": model})
