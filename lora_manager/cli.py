"""`appliance adapters ...`: list, add, remove, load, unload and stats of LoRA adapters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from configs.loader import ConfigError, load_settings
from configs.private_files import private_umask
from lora_manager.service import AdapterService
from configs.contracts.errors import BackendError

adapters_app = typer.Typer(help="Manage LoRA adapters (see docs/lora.md).", no_args_is_help=True)


def _service() -> AdapterService:
    try:
        private_umask()  # adapter files are owner-only (docs/security.md)
        return AdapterService(load_settings())
    except ConfigError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None


def _fail(exc: BackendError) -> typer.Exit:
    typer.secho(f"error: {exc}", fg="red", err=True)
    return typer.Exit(1)


@adapters_app.command("list")
def list_adapters(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show the registered adapters."""
    records = _service().list()
    if as_json:
        typer.echo(json.dumps([json.loads(r.model_dump_json()) for r in records], indent=2))
        return
    if not records:
        typer.echo("no adapters registered (add one: scripts/add-adapter.sh NAME PATH)")
    for r in records:
        pin = " pinned" if r.pinned else ""
        typer.echo(f"  {r.name:<24} r={r.facts.rank:<3} tasks={','.join(r.tasks):<16}{pin}  "
                   f"{r.facts.checksum[:12]}  {r.description}")


@adapters_app.command("add")
def add(
    name: str = typer.Argument(..., help="Name requests use, e.g. sport-worldview."),
    path: Path = typer.Argument(..., help="Folder with adapter_config.json + adapter_model.safetensors."),
    tasks: str = typer.Option("chat", "--tasks", help="Comma-separated task kinds it may serve."),
    pin: bool = typer.Option(False, "--pin", help="Never evict it from the model servers."),
    description: str = typer.Option("", "--description", help="What it is for."),
    model: Optional[str] = typer.Option(None, "--model", help="Base model it is for (default: default_model)."),
) -> None:
    """Validate a PEFT LoRA adapter and register it (all or nothing)."""
    service = _service()
    try:
        record = service.add(name, path, tasks=[t.strip() for t in tasks.split(",") if t.strip()],
                             pinned=pin, description=description, model=model)
    except BackendError as exc:
        raise _fail(exc) from None
    typer.secho(f"registered adapter '{record.name}' (rank {record.facts.rank}, "
                f"{', '.join(record.facts.target_modules)}, sha256 {record.checksum[:12]})", fg="green")


@adapters_app.command("remove")
def remove(name: str = typer.Argument(...)) -> None:
    """Unregister an adapter and delete its files."""
    try:
        _service().remove(name)
    except BackendError as exc:
        raise _fail(exc) from None
    typer.echo(f"removed adapter '{name}'")


@adapters_app.command("load")
def load(name: str = typer.Argument(...), model: Optional[str] = typer.Option(None, "--model")) -> None:
    """Make an adapter resident on the model server."""
    try:
        typer.echo(f"{name}: {_service().load(name, model)}")
    except BackendError as exc:
        raise _fail(exc) from None


@adapters_app.command("unload")
def unload(name: str = typer.Argument(...), model: Optional[str] = typer.Option(None, "--model")) -> None:
    """Free an adapter's slot on the model server."""
    try:
        typer.echo(f"{name}: {_service().unload(name, model)}")
    except BackendError as exc:
        raise _fail(exc) from None


@adapters_app.command("stats")
def stats() -> None:
    """Loads, evictions, swap latency and requests per adapter (all worker processes)."""
    typer.echo(json.dumps(_service().stats(), indent=2))


@adapters_app.command("train")
def train(
    name: str = typer.Argument(..., help="Name of the new adapter, e.g. my-style."),
    sources: list[str] = typer.Argument(..., help="Folders or files of documents (.md .txt .pdf .docx .html), "
                                                  ".jsonl chat examples, or memory:<query>."),
    kind: str = typer.Option("style", "--kind", help="style: learn the owner's prose and turns; knowledge: "
                                                     "question/answer pairs the core model writes from the texts."),
    tasks: str = typer.Option("chat", "--tasks", help="Comma-separated task kinds it may serve (the policy gate)."),
    rank: int = typer.Option(8, "--rank", help="LoRA rank (at most adapters.max_rank)."),
    max_steps: int = typer.Option(0, "--max-steps", help="Exactly this many optimizer steps (0: use --epochs)."),
    epochs: float = typer.Option(1.0, "--epochs", help="Passes over the training split (when --max-steps is 0)."),
    eval_share: float = typer.Option(0.10, "--eval-share", help="Share of DOCUMENTS held out for evaluation."),
    learning_rate: float = typer.Option(2e-4, "--learning-rate", help="Peak learning rate."),
    batch_size: int = typer.Option(4, "--batch-size"),
    seq_len: int = typer.Option(512, "--seq-len", help="Tokens per example (longer texts are cut)."),
    top_layers: Optional[int] = typer.Option(None, "--top-layers", help="Adapt only the top N layers (cheaper)."),
    base: Optional[str] = typer.Option(None, "--base", help="HF folder of the served base (default: the served "
                                                            "model's own weights)."),
    model: Optional[str] = typer.Option(None, "--model", help="Served model it is for (default: default_model)."),
    description: str = typer.Option("", "--description"),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", help="Steps between checkpoints (0: ~5 per run)."),
    leakage_questions: int = typer.Option(4, "--leakage-questions", help="General questions in the leakage probe."),
    quantize: str = typer.Option("none", "--quantize", help="nf4 = QLoRA (CUDA + bitsandbytes; see train-plan)."),
    nice: int = typer.Option(10, "--nice", help="CPU priority of the training process (0-19; chat goes first)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Train a LoRA adapter on the owner's texts, evaluate it and register it (all or nothing).

    Exit status: 0 registered, 1 refused or failed (the reason is printed), 3 cancelled."""
    import subprocess

    from pydantic import ValidationError

    from lora_manager import settings_glue
    from lora_manager.training.jobs import JobStore, runner_argv
    from lora_manager.training.spec import TrainingSpec, preflight

    service = _service()
    try:
        spec = preflight(TrainingSpec(
            name=name, sources=sources, kind=kind, tasks=[t.strip() for t in tasks.split(",") if t.strip()],
            rank=rank, max_steps=max_steps, epochs=epochs, eval_share=eval_share, learning_rate=learning_rate,
            batch_size=batch_size, seq_len=seq_len, top_layers=top_layers, base=base, model=model,
            description=description, checkpoint_every=checkpoint_every, leakage_questions=leakage_questions,
            nice=nice, quantize=quantize),
            service.settings)
    except ValidationError as exc:
        typer.secho(f"error: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}", fg="red", err=True)
        raise typer.Exit(2) from None
    except BackendError as exc:
        raise _fail(exc) from None
    job = JobStore(settings_glue.training_dir(service.settings)).create(spec)
    typer.echo(f"training job {job.id} (state and loss: {job.dir / 'status.json'})", err=True)
    raise typer.Exit(_runner_exit(job.id, subprocess.run(runner_argv(job, as_json)).returncode))


def _runner_exit(job_id: str, code: int) -> int:
    """The runner's exit status; a runner killed by a signal (the kernel's OOM killer) is a failure
    the owner can resume from the last checkpoint."""
    if code >= 0:
        return code
    typer.secho(f"error: the training process was killed by signal {-code} (out of memory?). Nothing was "
                f"registered. Fix: free memory, then continue from the last checkpoint with: appliance adapters "
                f"train-resume {job_id}", fg="red", err=True)
    return 1


@adapters_app.command("train-resume")
def train_resume(job_id: str = typer.Argument(..., help="Job id printed by `adapters train`."),
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """Continue a cancelled or failed training job from its last checkpoint."""
    import subprocess

    from lora_manager import settings_glue
    from lora_manager.training.jobs import JobStore, current_status, runner_argv

    store = JobStore(settings_glue.training_dir(_service().settings))
    try:
        job = store.get(job_id)
    except BackendError as exc:
        raise _fail(exc) from None
    state = current_status(job).state
    if state not in ("failed", "cancelled"):
        typer.secho(f"error: job {job_id} is {state}; only failed or cancelled jobs resume.", fg="red", err=True)
        raise typer.Exit(1)
    job.cancel_flag.unlink(missing_ok=True)
    raise typer.Exit(_runner_exit(job_id, subprocess.run(runner_argv(job, as_json)).returncode))
