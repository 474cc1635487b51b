"""Run generated Python in a bubblewrap sandbox (Debian `bubblewrap`, docs/security.md).

What the code sees and may do:
- a root made of read-only binds of /usr (with /bin, /lib* as links or read-only binds)
  and the Python installation the worker runs, nothing else: no /etc, no /home, no
  data directory, no project folder; the root itself is remounted read-only;
- a private tmpfs /work (the working directory and HOME, holding main.py) and a
  private tmpfs /tmp, each limited to sandbox.tmpfs_mb;
- new user, PID, IPC, network, UTS and cgroup namespaces (`--unshare-all`): no
  network interface but its own loopback, no view of the host's processes
  (/proc is the sandbox's own), no System V IPC of the host;
- no environment from the worker (`--clearenv`; PATH, HOME, LANG, TMPDIR only);
- `--die-with-parent` and `--new-session` (no terminal injection); when the code's
  main process ends, bwrap's PID 1 exits and the kernel kills every process left in
  the PID namespace, so a detached (double-forked, setsid) child dies with the run;
- limits: CPU seconds, address space, file size and no core dumps as rlimits set
  inside the sandbox before the code starts; a process-count limit (RLIMIT_NPROC in
  the fresh user namespace, or a pids cgroup when the worker runs as root, where the
  kernel ignores RLIMIT_NPROC); a wall clock; output cut at a byte limit.

There is no fallback: where bwrap is missing or cannot create its namespaces (user
namespaces disabled, a container's seccomp profile), a run is refused with the fix.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from configs.contracts.errors import BackendError
from configs.schema import SandboxConfig
from workers import sandbox_pids

SANDBOX_UID = 65534  # "nobody" inside the sandbox's user namespace
WORKDIR = "/work"
SCRIPT = f"{WORKDIR}/main.py"
# Host folders the sandbox's root is made of (read-only); links such as /bin -> usr/bin
# are recreated as links.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Runs first inside the sandbox: set the limits on itself, then become the code.
# Rlimits are inherited across exec and fork, and lowering them needs no privilege.
LAUNCHER = (
    "import os, resource as r, sys\n"
    "cpu, mem, fsize, nproc = map(int, sys.argv[1:5])\n"
    "r.setrlimit(r.RLIMIT_CPU, (cpu, cpu + 1))\n"
    "r.setrlimit(r.RLIMIT_AS, (mem, mem))\n"
    "r.setrlimit(r.RLIMIT_FSIZE, (fsize, fsize))\n"
    "r.setrlimit(r.RLIMIT_CORE, (0, 0))\n"
    "r.setrlimit(r.RLIMIT_NPROC, (nproc, nproc))\n"
    f"os.execv(sys.executable, [sys.executable, '-I', {SCRIPT!r}])\n"
)


class SandboxRefused(BackendError):
    """The sandbox cannot run code safely here; the message says why and what to change."""

    code = "sandbox_unavailable"
    status = 503


class SandboxResult(BaseModel):
    stdout: str
    stderr: str
    exit_code: int                # negative: killed by that signal
    seconds: float
    timed_out: bool = False       # wall-clock limit
    cpu_limited: bool = False     # killed by the CPU-time limit
    memory_limited: bool = False  # ran out of its address-space limit
    output_truncated: bool = False
    processes_limited: bool = False  # a fork was refused by the process limit

    @property
    def limits_hit(self) -> list[str]:
        names = {"wall_clock": self.timed_out, "cpu": self.cpu_limited, "memory": self.memory_limited,
                 "output": self.output_truncated, "processes": self.processes_limited}
        return [name for name, hit in names.items() if hit]


# --- the command line ----------------------------------------------------------------

def _python() -> tuple[str, Path]:
    """The real interpreter (not a venv's link to it) and the installation it needs."""
    return os.path.realpath(sys.executable), Path(sys.base_prefix).resolve()


def _root_args() -> list[str]:
    args: list[str] = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    _, prefix = _python()
    if not any(prefix == Path(d) or Path(d) in prefix.parents for d in SYSTEM_DIRS):
        args += ["--ro-bind", str(prefix), str(prefix)]
    return args


def bwrap_command(config: SandboxConfig, code_fd: int, nproc: int) -> list[str]:
    python, _ = _python()
    tmpfs = str(config.tmpfs_mb * 1024 * 1024)
    return [
        "bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--clearenv",
        "--cap-drop", "ALL", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
        "--hostname", "sandbox",
        *_root_args(),
        "--proc", "/proc", "--dev", "/dev",
        "--size", tmpfs, "--tmpfs", "/tmp",
        "--size", tmpfs, "--tmpfs", WORKDIR,
        "--perms", "0644", "--file", str(code_fd), SCRIPT,
        "--remount-ro", "/",
        "--chdir", WORKDIR,
        "--setenv", "HOME", WORKDIR, "--setenv", "TMPDIR", "/tmp",
        "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8",
        "--", python, "-I", "-c", LAUNCHER,
        str(config.cpu_seconds), str(config.memory_mb * 1024 * 1024), str(config.output_bytes * 4), str(nproc),
    ]


# --- is isolation available? ---------------------------------------------------------

_checked = False


def ensure_isolation_available(config: SandboxConfig) -> None:
    """Raise SandboxRefused with the fix unless bwrap can build the whole sandbox here."""
    global _checked
    if _checked:
        return
    if shutil.which("bwrap") is None:
        raise SandboxRefused("code cannot run: bubblewrap is not installed, and generated code never runs "
                             "without isolation. Fix: `sudo apt-get install bubblewrap` (scripts/install.sh "
                             "does this), or set sandbox.enabled: false.")
    if os.geteuid() == 0 and not sandbox_pids.available():
        raise SandboxRefused("code cannot run: the code worker runs as root, where the kernel ignores the "
                             "process-count limit (RLIMIT_NPROC), and no pids cgroup is writable here. Fix: "
                             "run the code worker as an unprivileged user (compose does), or mount the pids "
                             "cgroup controller.")
    with tempfile.TemporaryFile() as code:
        code.write(b"pass\n")
        code.flush()
        code.seek(0)
        probe = subprocess.run(bwrap_command(config, code.fileno(), 64), pass_fds=(code.fileno(),),
                               capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    if probe.returncode != 0:
        raise SandboxRefused(
            "code cannot run: bubblewrap could not create its namespaces here "
            f"({probe.stderr.strip()[-300:] or 'exit ' + str(probe.returncode)}). Generated code never runs without "
            "isolation. Fix: allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 "
            "and user.max_user_namespaces > 0; on Ubuntu also kernel.apparmor_restrict_unprivileged_userns=0); "
            "in a container, start the code worker with the seccomp/AppArmor settings compose.yaml gives "
            "worker-code (docs/security.md).")
    _checked = True


# --- running ---------------------------------------------------------------------------

@dataclass
class _Run:
    returncode: int
    seconds: float
    timed_out: bool
    processes_limited: bool | None  # None: no pids cgroup, so the kernel's count cannot be read


def _signal_code(returncode: int) -> int:
    """bwrap reports a child killed by signal N as 128+N; give it back as -N."""
    if returncode > 128 and returncode - 128 in {s.value for s in signal.Signals}:
        return -(returncode - 128)
    return returncode


def _execute(config: SandboxConfig, code_fd: int, out, err) -> _Run:
    group = sandbox_pids.PidsCgroup(config.max_processes + 2) if os.geteuid() == 0 else None
    # +1/+2: bwrap's own processes (its PID 1, and the outer one in the cgroup).
    argv = bwrap_command(config, code_fd, config.max_processes + 1)
    started = time.monotonic()
    timed_out = False
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, pass_fds=(code_fd,),
                                start_new_session=True, env={"PATH": "/usr/bin:/bin"},
                                preexec_fn=group.join_self if group else None)
        try:
            proc.wait(timeout=config.wall_seconds)
        except subprocess.TimeoutExpired:
            timed_out = True
            # The outer bwrap dies; --die-with-parent kills the sandbox's PID 1, and with it
            # every process of the run.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        seconds = time.monotonic() - started
        return _Run(_signal_code(proc.returncode), seconds, timed_out, group.limit_hit() if group else None)
    finally:
        if group is not None:
            group.kill_all_and_remove()


def _read_capped(path: Path, limit: int) -> tuple[str, bool]:
    data = path.read_bytes()
    return data[:limit].decode("utf-8", errors="replace"), len(data) > limit


# How a refused fork (EAGAIN) shows in Python's output: the only trace RLIMIT_NPROC leaves.
FORK_REFUSED = "Resource temporarily unavailable"


def run_python(code: str, config: SandboxConfig) -> SandboxResult:
    """Run `code` in the sandbox under the limits in `config` and report what happened."""
    ensure_isolation_available(config)
    # Host-side scratch (0700, outside the sandbox): the code's source and its output.
    scratch = Path(tempfile.mkdtemp(prefix="appliance-sandbox-"))
    try:
        out_path, err_path = scratch / "stdout", scratch / "stderr"
        with tempfile.TemporaryFile(dir=scratch) as source, out_path.open("wb") as out, err_path.open("wb") as err:
            source.write(code.encode("utf-8"))
            source.flush()
            source.seek(0)
            run = _execute(config, source.fileno(), out, err)
        stdout, out_cut = _read_capped(out_path, config.output_bytes)
        stderr, err_cut = _read_capped(err_path, config.output_bytes)
        code_ = run.returncode
        return SandboxResult(
            stdout=stdout, stderr=stderr, exit_code=code_, seconds=run.seconds, timed_out=run.timed_out,
            # SIGXCPU (soft limit) or SIGKILL at the hard CPU limit, without a wall timeout.
            cpu_limited=not run.timed_out and code_ in (-24, -9),
            memory_limited="MemoryError" in stderr or "Cannot allocate memory" in stderr,
            output_truncated=out_cut or err_cut or code_ == -25,  # -25: SIGXFSZ, the file-size limit
            # Exact with a pids cgroup; under RLIMIT_NPROC read from the code's own output, so
            # a refusal the code swallows silently goes unreported (the limit still holds).
            processes_limited=(run.processes_limited if run.processes_limited is not None
                               else FORK_REFUSED in stdout or FORK_REFUSED in stderr),
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
