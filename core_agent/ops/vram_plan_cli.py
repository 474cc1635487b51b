"""`appliance vram-plan`: print the GPU memory plan, refuse one that does not fit,
and write the vLLM arguments compose.yaml reads into .env (--write-env)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from core_agent.ops.vram_plan import (
    DEFAULT_STACK_FILE,
    GIB,
    PlanConfigError,
    PlanRefused,
    VramPlan,
    check_fits,
    env_values,
    load_stack,
    plan_stack,
    render_env_block,
    replace_env_block,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _gib(n: int) -> str:
    return f"{n / GIB:.2f}"


def plan_table(plan: VramPlan) -> Table:
    table = Table(title="VRAM plan (GiB)", show_lines=False)
    for col in ("service", "model", "card", "weights", "KV/token", "context x seqs", "KV cache",
                "LoRA", "overhead", "total", "--gpu-memory-utilization"):
        table.add_column(col, justify="left" if col in ("service", "model") else "right")
    for s in plan.services:
        k = s.knobs
        table.add_row(s.service, s.hf_repo, str(s.card), _gib(s.weights_bytes),
                      f"{s.kv_bytes_per_token // 1024} KiB", f"{k.max_model_len:,} x {k.max_num_seqs}",
                      _gib(s.kv_cache_bytes), _gib(s.lora_bytes), _gib(s.overhead_bytes),
                      _gib(s.total_bytes), f"{s.gpu_memory_utilization:.2f}")
    return table


def card_lines(plan: VramPlan) -> list[str]:
    return [
        f"card {c.index} {c.name}: {_gib(c.memory_bytes)} GiB; fractions sum {c.fraction_sum:.2f} of "
        f"max {c.max_total_fraction:.2f} ({_gib(c.planned_bytes)} GiB planned); "
        + (f"fits, {_gib(c.headroom_bytes)} GiB to spare" if c.fits else "DOES NOT FIT")
        for c in plan.cards
    ]


def write_env_file(env_file: Path, plan: VramPlan) -> None:
    """Replace the generated block of `env_file` (created from .env.example if missing)."""
    if env_file.exists():
        text = env_file.read_text(encoding="utf-8")
    else:
        example = PROJECT_ROOT / ".env.example"
        text = example.read_text(encoding="utf-8") if example.exists() else ""
    new_text = replace_env_block(text, render_env_block(env_values(plan)))
    # Write to a temp file and rename: never leave a half-written .env behind.
    tmp = env_file.with_name(env_file.name + ".tmp")
    tmp.write_text(new_text, encoding="utf-8")
    os.chmod(tmp, 0o600)  # .env holds secrets (Qdrant key, API token)
    tmp.replace(env_file)


def vram_plan(
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    write_env: bool = typer.Option(False, "--write-env", help="Write the vLLM arguments into the .env file compose.yaml reads."),
    env_file: Path = typer.Option(PROJECT_ROOT / ".env", "--env-file", help="The .env file for --write-env."),
    config: Path = typer.Option(DEFAULT_STACK_FILE, "--config", help="The GPU stack file with the knobs."),
) -> None:
    """Plan GPU memory for the production stack (configs/gpu-stack.yaml); exit 1 if it does not fit."""
    try:
        plan = plan_stack(load_stack(config))
    except PlanConfigError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(plan.as_json(), indent=2))
    else:
        console = Console(width=200)
        console.print(plan_table(plan))
        for line in card_lines(plan):
            console.print(line, highlight=False)
        for s in plan.services:
            for warning in s.warnings:
                console.print(f"[yellow]warning ({s.service}):[/yellow] {warning}", highlight=False)
    try:
        check_fits(plan)
    except PlanRefused as exc:
        typer.secho(f"refused: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None
    if write_env:
        write_env_file(env_file, plan)
        typer.echo(f"wrote the plan's vLLM arguments to {env_file}", err=as_json)
