"""Run generated Python in a sandbox: a throwaway process with hard limits.

Isolation, in layers:
- a fresh temporary directory as working directory and HOME, removed afterwards;
- `unshare -n`: a new network namespace with no interfaces up, so no network at all;
- when we are root, the code runs as `nobody` (setpriv), so files readable only by
  the owner (the data directory is created 0700) stay out of reach;
- rlimits: CPU seconds, address space, file size; a wall-clock timeout; output cut
  at a byte limit; `python -I` (no environment variables, no user site-packages).
If no network namespace can be made, the run is refused unless the config says
otherwise.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel

from configs.schema import SandboxConfig

NOBODY_UID = 65534


class SandboxRefused(Exception):
    """The sandbox cannot run code safely here; the message says why and what to change."""


class SandboxResult(BaseModel):
    stdout: str
    stderr: str
    exit_code: int
    seconds: float
    timed_out: bool = False       # wall-clock limit
    cpu_limited: bool = False     # killed by the CPU-time limit
    memory_limited: bool = False  # ran out of its address-space limit
    output_truncated: bool = False

    @property
    def limits_hit(self) -> list[str]:
        names = {"wall_clock": self.timed_out, "cpu": self.cpu_limited, "memory": self.memory_limited,
                 "output": self.output_truncated}
        return [name for name, hit in names.items() if hit]


def _network_isolation_works() -> bool:
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _command(script: Path, config: SandboxConfig) -> list[str]:
    argv = [sys.executable, "-I", str(script)]
    if os.geteuid() == 0 and shutil.which("setpriv"):
        argv = ["setpriv", f"--reuid={NOBODY_UID}", f"--regid={NOBODY_UID}", "--clear-groups", "--"] + argv
    if _network_isolation_works():
        return ["unshare", "-n", "--"] + argv
    if not config.allow_without_network_isolation:
        raise SandboxRefused(
            "cannot create a network namespace here (`unshare -n` failed), so generated code could "
            "reach the network. Fix: run the code worker as root or with CAP_SYS_ADMIN, or set "
            "sandbox.allow_without_network_isolation: true in configs/routes.yaml if you accept that.")
    return argv


def _limits(config: SandboxConfig):
    memory = config.memory_mb * 1024 * 1024

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (config.cpu_seconds, config.cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_FSIZE, (config.output_bytes * 4, config.output_bytes * 4))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.setsid()

    return apply


def _read_capped(path: Path, limit: int) -> tuple[str, bool]:
    data = path.read_bytes()
    return data[:limit].decode("utf-8", errors="replace"), len(data) > limit


def run_python(code: str, config: SandboxConfig) -> SandboxResult:
    """Run `code` under the limits in `config` and report what happened."""
    workdir = Path(tempfile.mkdtemp(prefix="appliance-sandbox-"))
    try:
        script = workdir / "main.py"
        script.write_text(code, encoding="utf-8")
        out_path, err_path = workdir / ".stdout", workdir / ".stderr"
        if os.geteuid() == 0:
            os.chown(workdir, NOBODY_UID, NOBODY_UID)
            os.chown(script, NOBODY_UID, NOBODY_UID)
        argv = _command(script, config)
        env = {"HOME": str(workdir), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        started = time.monotonic()
        timed_out = False
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=err, preexec_fn=_limits(config))
            try:
                proc.wait(timeout=config.wall_seconds)
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(proc.pid, 9)
                proc.wait()
        seconds = time.monotonic() - started
        stdout, out_cut = _read_capped(out_path, config.output_bytes)
        stderr, err_cut = _read_capped(err_path, config.output_bytes)
        code_ = proc.returncode
        return SandboxResult(
            stdout=stdout, stderr=stderr, exit_code=code_, seconds=seconds, timed_out=timed_out,
            # SIGXCPU (soft limit) or SIGKILL at the hard CPU limit, without a wall timeout.
            cpu_limited=not timed_out and code_ in (-24, -9),
            memory_limited="MemoryError" in stderr or "Cannot allocate memory" in stderr,
            output_truncated=out_cut or err_cut or code_ == -25,  # -25: SIGXFSZ, the file-size limit
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
