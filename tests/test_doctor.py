"""`appliance doctor` and `fetch-models` on a machine without a GPU, Docker or the hub.

The GPU, Docker and the container toolkit cannot exist here: stand-in executables in
folders named fake-* are put first on PATH. The stand-in nvidia-smi answers the exact
query the doctor makes (`--query-gpu=... --format=csv,noheader,nounits`) and refuses
any other, so the doctor's reading of it is checked too.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core_agent.ops.doctor import GPU_FIELDS
from core_agent.ops.vram_plan import DEFAULT_STACK_FILE, env_values, load_stack, plan_stack, render_env_block

ROOT = Path(__file__).resolve().parents[1]
GOOD_GPU = "0, NVIDIA RTX PRO 6000 Blackwell Workstation Edition, 580.95.05, 97887, 512, 97375"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_bin(root: Path, name: str, script: str) -> Path:
    folder = root / f"fake-{name}"
    folder.mkdir(exist_ok=True)
    exe = folder / name
    exe.write_text("#!/usr/bin/env bash\n" + script)
    exe.chmod(0o755)
    return folder


@pytest.fixture
def machine(tmp_path: Path) -> dict:
    """A complete owner machine: .env with secrets and plan, models cached, fakes on PATH."""
    query = f"--query-gpu={','.join(GPU_FIELDS)}"
    nvidia = fake_bin(tmp_path, "nvidia-smi",
                      f'[[ "$1" == "{query}" && "$2" == "--format=csv,noheader,nounits" ]] '
                      '|| { echo "fake nvidia-smi: unexpected arguments $*" >&2; exit 9; }\n'
                      'echo "$FAKE_GPU_CSV"\n')
    docker = fake_bin(tmp_path, "docker", '[[ "$*" == "compose version --short" ]] && echo "${FAKE_COMPOSE:-2.29.7}"\n')
    ctk = fake_bin(tmp_path, "nvidia-ctk", 'echo "NVIDIA Container Toolkit CLI version 1.17.8"\n')
    models = tmp_path / "models"
    plan = plan_stack(load_stack())
    for s in plan.services:  # a cached snapshot per planned model (only what doctor looks at)
        repo = models / "hf" / "hub" / f"models--{s.hf_repo.replace('/', '--')}"
        (repo / "snapshots" / "c0ffee").mkdir(parents=True, exist_ok=True)
        (repo / "snapshots" / "c0ffee" / "config.json").write_text("{}")
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / s.revision).write_text("c0ffee")
    env_file = tmp_path / ".env"
    env_file.write_text(
        f"APPLIANCE_API_KEY=a\nQDRANT_API_KEY=b\nFLOWER_PASSWORD=c\nMODELS_DIR={models}\n"
        f"API_PORT={free_port()}\nUI_PORT={free_port()}\nFLOWER_PORT={free_port()}\n"
        + render_env_block(env_values(plan)))
    path = os.pathsep.join([str(nvidia), str(docker), str(ctk), os.environ["PATH"]])
    return {"env_file": env_file, "PATH": path, "FAKE_GPU_CSV": GOOD_GPU, "models": models}


def doctor(machine: dict, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    run_env = {**os.environ, "PATH": machine["PATH"], "FAKE_GPU_CSV": machine["FAKE_GPU_CSV"], **env}
    return subprocess.run([sys.executable, "-m", "core_agent.ops.cli", "doctor", "--env-file",
                           str(machine["env_file"]), *args], capture_output=True, text=True, timeout=120,
                          env=run_env, cwd=ROOT)


def checks(result: subprocess.CompletedProcess[str]) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(result.stdout)["checks"]}


def test_a_ready_machine_passes_every_check(machine: dict) -> None:
    result = doctor(machine, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    found = checks(result)
    assert all(c["status"] != "fail" for c in found.values())
    assert "580.95.05" in found["NVIDIA driver"]["detail"]
    assert "97,375 MiB free" in found["GPU 0 memory"]["detail"]
    text = doctor(machine)
    assert text.returncode == 0 and "[ OK ] NVIDIA driver" in text.stdout and "ready for" in text.stdout


def test_an_old_driver_blocks_with_the_fix(machine: dict) -> None:
    result = doctor(machine, FAKE_GPU_CSV=GOOD_GPU.replace("580.95.05", "575.57.08"))
    assert result.returncode == 1
    assert "[FAIL] NVIDIA driver: 575.57.08 is too old for CUDA 13" in result.stdout
    assert "Fix: install driver 580 or newer" in result.stdout


def test_too_little_gpu_memory_blocks(machine: dict) -> None:
    small = "0, NVIDIA GeForce RTX 4090, 580.95.05, 24564, 300, 24264"
    found = checks(doctor(machine, "--json", FAKE_GPU_CSV=small))
    assert found["GPU 0 memory"]["status"] == "fail"
    assert "24,564 MiB" in found["GPU 0 memory"]["detail"] and "memory_mib: 24564" in found["GPU 0 memory"]["fix"]
    busy = GOOD_GPU.replace("512, 97375", "60000, 37887")  # something else holds 60 GB
    found = checks(doctor(machine, "--json", FAKE_GPU_CSV=busy))
    assert found["GPU 0 memory"]["status"] == "fail" and "37,887 MiB free" in found["GPU 0 memory"]["detail"]


def test_missing_models_secrets_busy_port_and_old_compose_each_block(machine: dict) -> None:
    text = machine["env_file"].read_text().replace("QDRANT_API_KEY=b", "QDRANT_API_KEY=")
    machine["env_file"].write_text(text)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        machine["env_file"].write_text(text + f"UI_PORT={port}\n")
        (machine["models"] / "hf" / "hub" / "models--BAAI--bge-m3").rename(machine["models"] / "elsewhere")
        result = doctor(machine, "--json", FAKE_COMPOSE="2.17.3")
    assert result.returncode == 1
    found = checks(result)
    assert found[".env secrets"]["status"] == "fail" and "QDRANT_API_KEY" in found[".env secrets"]["detail"]
    assert found[f"port {port} (ui)"]["status"] == "fail"
    assert found["models for offline start"]["status"] == "fail" and "BAAI/bge-m3" in found["models for offline start"]["detail"]
    assert "fetch-models.sh" in found["models for offline start"]["fix"]
    assert found["docker compose"]["status"] == "fail"


def test_no_nvidia_smi_at_all(machine: dict) -> None:
    path = os.pathsep.join(p for p in machine["PATH"].split(os.pathsep) if "fake-nvidia-smi" not in p)
    result = doctor({**machine, "PATH": path}, "--json")
    assert result.returncode == 1 and checks(result)["NVIDIA driver"]["detail"] == "nvidia-smi not found"


# --- fetch-models -------------------------------------------------------------------

def fetch(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    run_env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"} | env
    return subprocess.run([sys.executable, "-m", "core_agent.ops.cli", "fetch-models", *args],
                          capture_output=True, text=True, timeout=120, env=run_env, cwd=ROOT)


def test_fetch_plan_lists_every_planned_model_at_its_revision(tmp_path: Path) -> None:
    result = fetch("--dry-run", "--json", "--models-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    plan = plan_stack(load_stack())
    assert {(i["repo"], i["revision"]) for i in data["items"]} == {(s.hf_repo, s.revision) for s in plan.services}
    assert data["hf_home"] == str(tmp_path / "hf") and data["needed_bytes"] == sum(i["download_bytes"] for i in data["items"])
    core = next(i for i in data["items"] if i["repo"] == plan.service("vllm-core").hf_repo)
    assert core["download_bytes"] == 32_500_000_000 and not core["present"]
    assert any(p.endswith(".safetensors") for p in core["allow_patterns"])


def test_fetch_fails_fast_without_the_hub(tmp_path: Path) -> None:
    # Only the 2.3 GB embedding model, so the free-disk check (done first) passes here.
    raw = yaml.safe_load(DEFAULT_STACK_FILE.read_text())
    raw["services"] = {"vllm-embed": raw["services"]["vllm-embed"]}
    config = tmp_path / "gpu-stack.yaml"
    config.write_text(yaml.safe_dump(raw))
    # No network here: the first hub request fails and nothing is written.
    result = fetch("--models-dir", str(tmp_path), "--config", str(config))
    assert result.returncode == 1
    assert "cannot reach the Hugging Face hub" in result.stderr and "Fix:" in result.stderr
    assert not (tmp_path / "hf" / "hub").exists() or not any((tmp_path / "hf" / "hub").iterdir())
    offline = fetch("--models-dir", str(tmp_path), "--config", str(config), HF_HUB_OFFLINE="1")
    assert offline.returncode == 1 and "HF_HUB_OFFLINE is set" in offline.stderr
