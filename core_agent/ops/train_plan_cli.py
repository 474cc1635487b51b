"""`appliance train-plan`: memory and pauses for training a LoRA on the GPU stack."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from core_agent.ops.train_plan import TrainKnobs, describe, plan_training
from core_agent.ops.vram_plan import DEFAULT_STACK_FILE, PlanConfigError, load_stack


def train_plan(
    rank: int = typer.Option(16, "--rank", help="LoRA rank to train."),
    seq_len: int = typer.Option(2048, "--seq-len", help="Tokens per training sequence."),
    micro_batch: int = typer.Option(1, "--micro-batch", help="Sequences per step on the GPU."),
    service: str = typer.Option("vllm-core", "--service", help="The served model the adapter is for."),
    config: Optional[Path] = typer.Option(None, "--config", help="GPU stack file (default configs/gpu-stack.yaml)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (scripts/train-pause.sh reads `pause`)."),
) -> None:
    """Training plan: memory for a LoRA on the served model, and which servers must pause."""
    try:
        stack = load_stack(config or DEFAULT_STACK_FILE)
        plan = plan_training(stack, TrainKnobs(service=service, rank=rank, seq_len=seq_len, micro_batch=micro_batch))
    except (PlanConfigError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None
    if as_json:
        chosen = plan.chosen()
        typer.echo(json.dumps({**plan.model_dump(mode="json"), "pause": chosen.pause if chosen else None}, indent=2))
    else:
        typer.echo("\n".join(describe(plan)))
    if plan.recommended is None:
        raise typer.Exit(1)
