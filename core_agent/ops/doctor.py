"""`appliance doctor`: a preflight of the owner's machine for the GPU stack.

One line per check, a fix for each failure; a failure blocks (exit 1), a warning does
not. The GPU is read the way the owner can read it too:
`nvidia-smi --query-gpu=<fields> --format=csv,noheader,nounits`.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from core_agent.ops.model_fetch import CACHE_HEADROOM_BYTES, fetch_plan
from core_agent.ops.vram_plan import GIB, MIB, VramPlan, env_values, read_env_block

# vllm/vllm-openai:v0.32.0 is a CUDA 13 build (torch 2.13): driver 580 or newer.
MIN_DRIVER = (580, 0)
IMAGE_CUDA = "CUDA 13 (vllm/vllm-openai:v0.32.0)"
MIN_COMPOSE = (2, 20, 0)   # `service_healthy` + profiles + merge keys as compose.yaml uses them
GPU_FIELDS = ("index", "name", "driver_version", "memory.total", "memory.used", "memory.free")
SECRETS = ("APPLIANCE_API_KEY", "QDRANT_API_KEY", "FLOWER_PASSWORD")
PORTS = (("API", "8000"), ("UI", "8501"), ("FLOWER", "5555"))
Status = Literal["ok", "warn", "fail"]


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    def line(self) -> str:
        tag = {"ok": "[ OK ]", "warn": "[WARN]", "fail": "[FAIL]"}[self.status]
        return f"{tag} {self.name}: {self.detail}" + (f"\n       Fix: {self.fix}" if self.fix else "")


@dataclass
class Gpu:
    index: int
    name: str
    driver: str
    total_mib: int
    used_mib: int
    free_mib: int


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def read_gpus(run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> list[Gpu]:
    """Parse nvidia-smi's CSV (raises OSError / ValueError when it cannot be read)."""
    out = run(["nvidia-smi", f"--query-gpu={','.join(GPU_FIELDS)}", "--format=csv,noheader,nounits"],
              capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise ValueError((out.stderr or out.stdout).strip() or f"exit code {out.returncode}")
    gpus = []
    for row in out.stdout.strip().splitlines():
        cells = [c.strip() for c in row.split(",")]
        if len(cells) != len(GPU_FIELDS):
            raise ValueError(f"unexpected nvidia-smi line: {row!r}")
        gpus.append(Gpu(int(cells[0]), cells[1], cells[2], int(float(cells[3])), int(float(cells[4])),
                        int(float(cells[5]))))
    if not gpus:
        raise ValueError("nvidia-smi lists no GPU")
    return gpus


def check_gpu(plan: VramPlan) -> list[Check]:
    if shutil.which("nvidia-smi") is None:
        return [Check("NVIDIA driver", "fail", "nvidia-smi not found",
                      "install the NVIDIA driver 580 or newer (e.g. apt install nvidia-driver-580), then reboot")]
    try:
        gpus = read_gpus()
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        return [Check("NVIDIA driver", "fail", f"nvidia-smi failed: {exc}",
                      "reboot after a driver install; check `nvidia-smi` runs")]
    out = []
    driver = gpus[0].driver
    if version_tuple(driver) < MIN_DRIVER:
        out.append(Check("NVIDIA driver", "fail", f"{driver} is too old for {IMAGE_CUDA}",
                         "install driver 580 or newer (apt install nvidia-driver-580-open), then reboot"))
    else:
        out.append(Check("NVIDIA driver", "ok", f"{driver} (>= {MIN_DRIVER[0]}, fits {IMAGE_CUDA})"))
    for card in plan.cards:
        gpu = next((g for g in gpus if g.index == card.index), None)
        name = f"GPU {card.index} memory"
        if gpu is None:
            out.append(Check(name, "fail", f"the plan uses card {card.index}, nvidia-smi lists {len(gpus)}",
                             "move the services to an existing card in configs/gpu-stack.yaml"))
            continue
        planned_mib = card.planned_bytes / MIB
        if gpu.total_mib < card.memory_bytes / MIB * 0.99:
            out.append(Check(name, "fail", f"{gpu.name} has {gpu.total_mib:,} MiB; the plan is for "
                             f"{card.memory_bytes // MIB:,} MiB ({planned_mib:,.0f} MiB planned)",
                             f"set cards[{card.index}].memory_mib: {gpu.total_mib} in configs/gpu-stack.yaml and "
                             f"run ./scripts/vram-plan.sh --write-env (it refuses what does not fit)"))
        elif gpu.free_mib < planned_mib:
            out.append(Check(name, "fail", f"{gpu.free_mib:,} MiB free of {gpu.total_mib:,}; the stack needs "
                             f"{planned_mib:,.0f} MiB", "stop what uses the GPU (nvidia-smi lists it), e.g. a desktop "
                             "session or another model server; `docker compose down` if an old stack runs"))
        else:
            out.append(Check(name, "ok", f"{gpu.name}: {gpu.free_mib:,} MiB free of {gpu.total_mib:,}; "
                             f"plan needs {planned_mib:,.0f} MiB"))
    return out


def check_toolkit() -> Check:
    for tool in ("nvidia-ctk", "nvidia-container-cli"):
        if shutil.which(tool):
            return Check("nvidia-container-toolkit", "ok", f"{tool} found")
    return Check("nvidia-container-toolkit", "fail", "not installed: containers cannot see the GPU",
                 "apt install nvidia-container-toolkit && sudo nvidia-ctk runtime configure --runtime=docker "
                 "&& sudo systemctl restart docker")


def check_compose() -> Check:
    if shutil.which("docker") is None:
        return Check("docker compose", "fail", "docker not found", "install Docker Engine with the compose plugin")
    try:
        out = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return Check("docker compose", "fail", str(exc), "install the docker-compose-plugin package")
    version = out.stdout.strip().lstrip("v")
    if out.returncode != 0 or not version:
        return Check("docker compose", "fail", "the compose plugin is missing", "apt install docker-compose-plugin")
    if version_tuple(version) < MIN_COMPOSE:
        return Check("docker compose", "fail", f"{version} is older than {'.'.join(map(str, MIN_COMPOSE))}",
                     "apt install --only-upgrade docker-compose-plugin")
    return Check("docker compose", "ok", version)


def check_env(env_text: str | None, plan: VramPlan, env_path: Path) -> list[Check]:
    if env_text is None:
        return [Check(".env", "fail", f"{env_path} does not exist",
                      "cp .env.example .env, fill in the secrets, then ./scripts/vram-plan.sh --write-env")]
    values = dict(line.split("=", 1) for line in env_text.splitlines() if "=" in line and not line.startswith("#"))
    values = {k.strip(): v.strip().strip("'\"") for k, v in values.items()}
    out = []
    empty = [k for k in SECRETS if not values.get(k)]
    out.append(Check(".env secrets", "fail", f"empty: {', '.join(empty)}",
                     f"set them in {env_path} (python3 -c \"import secrets; print(secrets.token_urlsafe(32))\")")
               if empty else Check(".env secrets", "ok", "all set"))
    if read_env_block(env_text) != env_values(plan):
        out.append(Check(".env plan", "fail", "the vLLM arguments in .env differ from configs/gpu-stack.yaml's plan",
                         "./scripts/vram-plan.sh --write-env"))
    else:
        out.append(Check(".env plan", "ok", "matches configs/gpu-stack.yaml"))
    return out


def check_ports(values: dict[str, str]) -> list[Check]:
    out = []
    for name, default in PORTS:
        host, port = values.get(f"{name}_BIND", "127.0.0.1"), int(values.get(f"{name}_PORT", default))
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
                out.append(Check(f"port {port} ({name.lower()})", "ok", f"free on {host}"))
            except OSError:
                out.append(Check(f"port {port} ({name.lower()})", "fail", f"in use on {host}",
                                 f"stop what listens there (ss -ltnp 'sport = :{port}') or set {name}_PORT in .env"))
    return out


def check_models(plan: VramPlan, models_dir: Path) -> list[Check]:
    fp = fetch_plan(plan, models_dir / "hf")
    missing = [f"{i.repo}@{i.revision[:12]}" for i in fp.items if not i.present]
    out = [Check("models for offline start", "fail", f"not in {models_dir}/hf: {', '.join(missing)}",
                 "./scripts/fetch-models.sh (downloads them at the pinned revisions)")
           if missing else Check("models for offline start", "ok", f"all {len(fp.items)} in {models_dir}/hf")]
    unpinned = [i.repo for i in fp.items if not i.pinned]
    if unpinned:
        out.append(Check("revision pins", "warn", f"not pinned: {', '.join(unpinned)}",
                         "./scripts/fetch-models.sh --pin (records the commits in configs/model-pins.yaml)"))
    need = fp.needed_bytes + CACHE_HEADROOM_BYTES
    out.append(Check("disk for weights and caches", "ok" if fp.free_bytes >= need else "fail",
                     f"{fp.free_bytes / GIB:,.0f} GiB free at {models_dir}, {need / GIB:,.0f} GiB needed",
                     "" if fp.free_bytes >= need else "free disk space or set MODELS_DIR in .env to a bigger disk"))
    return out


def run_checks(plan: VramPlan, env_path: Path) -> list[Check]:
    env_text = env_path.read_text(encoding="utf-8") if env_path.exists() else None
    values = {}
    if env_text:
        for line in env_text.splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                k, v = line.split("=", 1)
                values[k.strip()] = v.strip().strip("'\"")
    models_dir = Path(values.get("MODELS_DIR") or env_path.parent / "models")
    return [*check_gpu(plan), check_toolkit(), check_compose(), *check_env(env_text, plan, env_path),
            *check_ports(values), *check_models(plan, models_dir)]
