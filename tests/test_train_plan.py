"""The GPU training plan (core_agent/ops/train_plan.py) and the pause/resume scripts.

The plan is arithmetic over configs/gpu-stack.yaml; the scripts drive `docker compose`,
which cannot run here, so a fake `docker` (named so) on PATH records what it was asked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from core_agent.ops.train_plan import TrainKnobs, plan_training, trainable_params
from core_agent.ops.vram_plan import GIB, load_stack

ROOT = Path(__file__).resolve().parents[1]


def test_qwen3_moe_rank16_plan_keeps_the_core_serving_with_qlora() -> None:
    stack = load_stack()
    plan = plan_training(stack, TrainKnobs(rank=16))
    # 48 layers x 16 x ((2048+4096) + (2048+512) x 2 + (4096+2048))
    assert plan.trainable_params == 48 * 16 * (6144 + 2560 * 2 + 6144) == 13_369_344
    bf16, qlora = plan.methods
    assert 55 * GIB < bf16.items["base weights"] < 58 * GIB          # 30.5B x 2 B
    assert 14 * GIB < qlora.items["base weights"] < 18 * GIB         # ~4 bit
    assert bf16.fits and "vllm-core" in bf16.pause and not bf16.core_keeps_serving
    assert qlora.fits and qlora.core_keeps_serving and "vllm-core" not in qlora.pause
    assert plan.recommended == "qlora"
    # A longer sequence grows the logits and activations, not the weights.
    longer = plan_training(stack, TrainKnobs(rank=16, seq_len=8192, micro_batch=2)).methods[1]
    assert longer.items["base weights"] == qlora.items["base weights"]
    per_token = ("activations (checkpointed)", "logits and their gradient")
    assert all(longer.items[k] == 8 * qlora.items[k] for k in per_token)   # 8x the tokens per step
    # 20 GiB more: pausing vision is no longer enough, the code server must stop too
    # (numbers of the current plan: 22.0 GiB short, 41.9 GiB long; vision frees 27.7 GiB).
    assert qlora.pause == ["vllm-vision"]
    assert longer.pause == ["vllm-vision", "vllm-code"] and longer.core_keeps_serving
    assert trainable_params(stack.models["qwen3-30b-a3b-instruct-2507-fp8"], TrainKnobs(rank=8)) == \
        plan.trainable_params // 2


def test_pause_and_resume_scripts_stop_and_start_what_the_plan_says(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "docker-calls.txt"
    fake = bin_dir / "docker"  # fake docker: records its arguments (no Docker engine here)
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    fake.chmod(0o755)
    state = ROOT / "data" / "run" / "train-paused.txt"
    assert not state.exists(), "a previous run left servers paused"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}

    def script(name: str) -> subprocess.CompletedProcess:
        return subprocess.run([f"scripts/{name}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)

    try:
        paused = script("train-pause.sh")
        assert paused.returncode == 0, paused.stderr
        assert "Recommended: qlora" in paused.stdout
        assert calls.read_text().split() == ["compose", "stop", "vllm-vision"]
        again = script("train-pause.sh")
        assert again.returncode == 1 and "already paused" in again.stderr
        resumed = script("train-resume.sh")
        assert resumed.returncode == 0, resumed.stderr
        assert calls.read_text().splitlines()[-1].split() == ["compose", "start", "vllm-vision"]
        assert not state.exists()
        assert script("train-resume.sh").returncode == 1  # nothing paused any more
    finally:
        state.unlink(missing_ok=True)


def test_train_plan_cli_json() -> None:
    done = subprocess.run([sys.executable, "-m", "core_agent.ops.cli", "train-plan", "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["recommended"] == "qlora" and data["pause"] == ["vllm-vision"]
