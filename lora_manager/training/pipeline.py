"""A prepared job, end to end: train -> evaluate -> save -> validate/convert/register.

All or nothing: the adapter is registered by AdapterService.add (validation against
the served base, GGUF conversion for llama.cpp, its own rollback), as the very last
step, with the evaluation in its record; a failure or a cancel anywhere before leaves
the registry and the adapters folder untouched. Checkpoints stay in the job folder so a
cancelled or crashed job resumes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

from configs.contracts.errors import BackendError
from configs.schema import Settings
from lora_manager import settings_glue
from lora_manager.service import AdapterService
from lora_manager.training import base_weights
from lora_manager.training.evaluation import evaluate
from lora_manager.training.jobs import Job, JobStatus
from lora_manager.training.loop import LoopResult, Progress, total_steps, train, windows
from lora_manager.training.spec import TrainingCancelled, TrainingRefused, TrainingSpec

Say = Callable[[str], None]


def target_modules(settings: Settings) -> list[str]:
    """Exactly the projections the serving runtime accepts (adapters.supported_target_modules)."""
    return sorted(settings.adapters.supported_target_modules)


def _layers(spec: TrainingSpec, num_layers: int) -> list[int] | None:
    if not spec.top_layers or spec.top_layers >= num_layers:
        return None
    return list(range(num_layers - spec.top_layers, num_layers))


def _save_adapter(model, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".adapter-", dir=target.parent))
    model.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(target, ignore_errors=True)
    os.rename(tmp, target)


def training_record(spec: TrainingSpec, job: Job, status: JobStatus, evaluation: dict, seconds: float,
                    base: str, targets: list[str], loop: LoopResult) -> dict:
    report = job.read_data().report
    return {"job": job.id, "kind": spec.kind, "sources": spec.sources, "base_weights": base,
            "target_modules": targets, "rank": spec.rank, "alpha": spec.lora_alpha,
            "learning_rate": spec.learning_rate, "steps": status.total_steps, "seq_len": spec.seq_len,
            "batch_size": spec.batch_size, "top_layers": spec.top_layers, "quantize": spec.quantize, "eval_share": spec.eval_share,
            "data": report.model_dump(), "evaluation": evaluation,
            "loss_history": status.loss_history, "seconds": round(seconds, 1), "trained_at": time.time(),
            "train_tokens": loop.tokens, "train_seconds": round(loop.seconds, 1),
            "tokens_per_second": round(loop.tokens / loop.seconds, 1) if loop.seconds > 0 else None}


def run(job: Job, settings: Settings, say: Say = print) -> JobStatus:
    """Train, evaluate and register; returns the final status (never raises for job failures)."""
    started = time.perf_counter()
    spec = job.spec()
    try:
        return _run(job, spec, settings, say, started)
    except TrainingCancelled as exc:
        say(str(exc))
        return job.update(state="cancelled", message=str(exc), seconds=time.perf_counter() - started)
    except BackendError as exc:
        say(f"error: {exc}")
        return job.update(state="failed", message=str(exc), seconds=time.perf_counter() - started,
                          error={"message": str(exc), "type": exc.code, "code": exc.code, "status": exc.status})
    except Exception as exc:  # a bug or out-of-memory still ends as a failed job with the reason
        say("error: " + "".join(traceback.format_exception(exc)))
        message = f"training failed: {exc.__class__.__name__}: {exc}. Nothing was registered; see {job.log_path}."
        return job.update(state="failed", message=message, seconds=time.perf_counter() - started,
                          error={"message": message, "type": "training_error", "code": "training_error",
                                 "status": 500})


def _run(job: Job, spec: TrainingSpec, settings: Settings, say: Say, started: float) -> JobStatus:
    from peft import LoraConfig, get_peft_model

    data = job.read_data()
    job.update(state="training", message="loading the base model", pid=os.getpid(), error=None,
               train_examples=len(data.train), eval_examples=len(data.eval))
    served = settings_glue.served_base(settings, spec.model)
    weights = base_weights.resolve(settings, spec)
    say(f"base weights: {weights.describe()}")
    model, tok = base_weights.load(weights, spec.quantize)
    base_weights.check_same_base(model, served, weights)
    train_windows = windows(data.train, tok, spec.seq_len)
    eval_windows = windows(data.eval, tok, spec.seq_len)
    if not train_windows or not eval_windows:
        raise TrainingRefused("after tokenising, the training or evaluation split is empty. Fix: add documents.")
    targets = target_modules(settings)
    model = get_peft_model(model, LoraConfig(
        r=spec.rank, lora_alpha=spec.lora_alpha, lora_dropout=0.0, target_modules=targets,
        layers_to_transform=_layers(spec, model.config.num_hidden_layers), task_type="CAUSAL_LM"))
    steps = total_steps(len(train_windows), spec.batch_size, spec.epochs, spec.max_steps)
    say(f"training {spec.name}: {len(train_windows)} windows from {len(data.train)} examples, {steps} steps, "
        f"rank {spec.rank}, targets {','.join(targets)}")

    def on_step(step: int, total: int, history: list[tuple[int, float]]) -> None:
        loss = history[-1][1]
        job.update(step=step, total_steps=total, loss_history=list(history),
                   message=f"step {step}/{total} loss {loss:.4f}")
        say(f"step {step}/{total}  loss {loss:.4f}")

    job.update(total_steps=steps, message="training")
    result = train(model, train_windows, pad_id=tok.pad_token_id, steps=steps, batch_size=spec.batch_size,
                   peak_lr=spec.learning_rate, seed=spec.seed, checkpoints=job.checkpoints_dir,
                   checkpoint_every=spec.checkpoint_every,
                   progress=Progress(on_step=on_step, should_stop=job.cancel_requested,
                                     on_checkpoint=lambda s: say(f"checkpoint at step {s}")))
    job.update(state="evaluating", message="evaluating on the held-out split", resumed_from=result.resumed_from,
               loss_history=result.loss_history, step=steps)
    say("evaluating: held-out loss base vs adapter, leakage probe")
    evaluation = evaluate(model, tok, eval_windows, spec.batch_size, spec.leakage_questions)
    say(f"eval loss base {evaluation['eval_loss_base']:.4f} -> adapter {evaluation['eval_loss_adapter']:.4f}; "
        f"leakage {evaluation['leakage_probe']['leakage']:.2f}")
    if job.cancel_requested():
        raise TrainingCancelled("training was cancelled before registration; nothing was registered.")
    _save_adapter(model, job.output_dir)
    seconds = time.perf_counter() - started
    status = job.update(state="registering", message="validating, converting and registering", evaluation=evaluation)
    record = training_record(spec, job, status, evaluation, seconds, weights.describe(), targets, result)
    AdapterService(settings).add(spec.name, job.output_dir, tasks=spec.tasks, description=spec.description
                                 or f"trained ({spec.kind}) from {', '.join(spec.sources)}", model=spec.model,
                                 training=record)
    say(f"registered adapter '{spec.name}' for tasks {','.join(spec.tasks)}")
    return job.update(state="done", adapter=spec.name, message="registered", seconds=time.perf_counter() - started)
