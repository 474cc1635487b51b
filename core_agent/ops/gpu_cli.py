"""`appliance doctor` and `appliance fetch-models`: the owner's GPU machine, before and
for the first `docker compose up`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from core_agent.ops.doctor import run_checks
from core_agent.ops.model_fetch import FetchError, check_hub_reachable, download, fetch_plan, write_pins
from core_agent.ops.vram_plan import DEFAULT_STACK_FILE, GIB, PlanConfigError, load_stack, plan_stack

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _plan(config: Path):
    try:
        return plan_stack(load_stack(config))
    except PlanConfigError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None


def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON."),
    env_file: Path = typer.Option(PROJECT_ROOT / ".env", "--env-file", help="The .env compose.yaml reads."),
    config: Path = typer.Option(DEFAULT_STACK_FILE, "--config", help="The GPU stack file."),
) -> None:
    """Preflight the GPU machine: driver, toolkit, GPU memory, disk, models, .env, ports, compose.
    Exit 1 when something blocks the stack."""
    checks = run_checks(_plan(config), env_file)
    blocked = any(c.status == "fail" for c in checks)
    if as_json:
        typer.echo(json.dumps({"ok": not blocked, "checks": [c.__dict__ for c in checks]}, indent=2))
    else:
        for check in checks:
            typer.echo(check.line())
        typer.echo("ready for `docker compose up -d`" if not blocked else "blocked: fix the [FAIL] lines above")
    raise typer.Exit(1 if blocked else 0)


def fetch_models(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would be downloaded."),
    as_json: bool = typer.Option(False, "--json", help="Print the download plan as JSON."),
    # On by default: weights must not change under the owner, and a commit can only be
    # learnt from the hub, so the first fetch records what it downloads (a lock file).
    pin: bool = typer.Option(True, "--pin/--no-pin",
                             help="Record the commit of each unpinned model in configs/model-pins.yaml first (default)."),
    models_dir: Path = typer.Option(PROJECT_ROOT / "models", "--models-dir", envvar="MODELS_DIR",
                                    help="The folder compose.yaml mounts as /models (HF cache in its hf/)."),
    config: Path = typer.Option(DEFAULT_STACK_FILE, "--config", help="The GPU stack file."),
) -> None:
    """Download every model the plan serves, at its pinned revision, into MODELS_DIR/hf."""
    hf_home = models_dir / "hf"
    fp = fetch_plan(_plan(config), hf_home)
    if as_json:
        typer.echo(json.dumps({**fp.model_dump(), "fits_on_disk": fp.fits_on_disk}, indent=2))
    else:
        for item in fp.items:
            state = "present" if item.present else f"{item.download_bytes / 1e9:,.1f} GB to fetch"
            typer.echo(f"{item.repo}@{item.revision[:12]} ({', '.join(item.services)}): {state}")
        typer.echo(f"to download: {fp.needed_bytes / 1e9:,.1f} GB; free at {hf_home}: {fp.free_bytes / GIB:,.0f} GiB")
    if dry_run:
        return
    if not fp.fits_on_disk:
        typer.secho(f"not enough disk at {hf_home}: {fp.needed_bytes / 1e9:,.1f} GB of weights + caches needed, "
                    f"{fp.free_bytes / 1e9:,.1f} GB free. Fix: free space or point MODELS_DIR at a bigger disk.",
                    fg="red", err=True)
        raise typer.Exit(1)
    try:
        pins = {}
        for item in fp.items:
            commit = check_hub_reachable(item.repo, item.revision)  # fails fast without a hub
            if pin and not item.pinned:
                pins[item.repo] = commit
        if pins:
            typer.echo(f"pinned {len(pins)} models in {write_pins(config, pins)}; "
                       "run ./scripts/vram-plan.sh --write-env so compose serves these commits")
            fp = fetch_plan(_plan(config), hf_home)
        for item in fp.items:
            if not item.present:
                typer.echo(f"downloading {item.repo}@{item.revision} (resumable: run again if interrupted)")
                download(item, hf_home)
    except FetchError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo("all models present: the stack can start offline (HF_HUB_OFFLINE=1)")
