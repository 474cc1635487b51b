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
