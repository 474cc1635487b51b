"""Start, stop and inspect the embedded stack: Redis, Celery workers, API, UI.

Every process is started in its own session with its PID recorded under
<data_dir>/run/, so `down` stops exactly what `up` started and nothing else.
`up` is idempotent: services whose recorded process is alive are left alone.

A PID alone does not say a process is ours: after a reboot or a long uptime the
number may belong to an unrelated process. The record therefore also keeps the
boot id, the process's start time (from /proc, in clock ticks since boot) and its
command line; a process is only signalled, or taken as running, when all match.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import httpx
import redis

from configs.schema import Settings
from configs.private_files import protect_data_dir
from configs.processes import boot_id, proc_cmdline, proc_start_ticks, process_alive
from core_agent.stores.owner_token import ensure_owner_token

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# uvicorn's C event loop and HTTP parser (dependencies in pyproject.toml), named rather
# than left to `auto`, which would silently fall back to asyncio + h11 where they are
# missing: one API process serves every request on this loop (issue 17's figures were
# taken with them; docs/architecture.md). compose.yaml and the Dockerfile say the same.
API_SERVER_FLAGS = ("--loop", "uvloop", "--http", "httptools")
Progress = Callable[[str], None]


class LaunchError(Exception):
    """A service could not be started; the message says which and where its log is."""


@dataclass
class Service:
    name: str
    argv: list[str]
    healthy: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 120.0
    # Folder the service keeps its state in; created before it starts.
    state_dir: Path | None = None
    # CPU niceness, set in the child before it runs the service (not a `nice` wrapper
    # command: the recorded command line must be the one the process shows).
    nice: int = 0


def _redis_port(settings: Settings) -> int:
    return urlparse(settings.redis_url).port or 6379


def redis_ok(settings: Settings) -> bool:
    try:
        return bool(redis.Redis.from_url(settings.redis_url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def worker_ok(settings: Settings, queue: str) -> bool:
    """True when a worker consuming `queue` answers a broadcast ping."""
    from workers.celery_app import create_celery_app

    try:
        replies = create_celery_app(settings).control.inspect(timeout=1.0).active_queues() or {}
    except Exception:
        return False
    return any(q["name"] == queue for queues in replies.values() for q in queues)


def worker_argv(settings: Settings, queue: str, node_name: str | None = None) -> list[str]:
    pool = settings.workers[queue]
    return [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
            "-Q", queue, "-c", str(pool.concurrency), "-P", pool.pool,
            "-n", node_name or f"{queue}@%h", "--loglevel", "INFO",
            "--without-gossip", "--without-mingle"]


def worker_env(settings: Settings, queue: str) -> dict[str, str]:
    # Chat workers load the default model as their process starts, not on first use.
    return {"APPLIANCE_PRELOAD_MODELS": settings.default_model} if queue in ("chat", "chat_bg") else {}


def background_chat_service(settings: Settings) -> Service | None:
    """The worker of the chat queue's background lane (configs/traffic.yaml), at a lower
    CPU priority so that the owner's chat keeps the cores; None when there is no lane."""
    cfg = settings.traffic
    if cfg.background_queue == "chat" or not cfg.background_worker.enabled or not settings.workers["chat"].enabled:
        return None
    pool = cfg.background_worker
    argv = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
            "-Q", cfg.background_queue, "-c", str(pool.concurrency), "-P", pool.pool,
            "-n", f"{cfg.background_queue}@%h", "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
    return Service(name=f"worker-{cfg.background_queue}", argv=argv, nice=pool.nice,
                   env=worker_env(settings, cfg.background_queue),
                   healthy=lambda: worker_ok(settings, cfg.background_queue))


def services(settings: Settings) -> list[Service]:
    out: list[Service] = []
    if settings.manage_redis:
        redis_dir = settings.data_dir / "redis"
        out.append(Service(
            name="redis",
            argv=["redis-server", "--port", str(_redis_port(settings)), "--bind", "127.0.0.1",
                  "--dir", str(redis_dir), "--appendonly", "yes", "--save", "", "--daemonize", "no"],
            healthy=lambda: redis_ok(settings), timeout_s=30, state_dir=redis_dir))
    for queue, pool in settings.workers.items():
        if pool.enabled:
            out.append(Service(name=f"worker-{queue}", argv=worker_argv(settings, queue),
                               env=worker_env(settings, queue),
                               healthy=lambda q=queue: worker_ok(settings, q)))
    background = background_chat_service(settings)
    if background is not None:
        out.append(background)
    out.append(Service(
        name="api",
        argv=[sys.executable, "-m", "uvicorn", "core_agent.api.app:create_app", "--factory", *API_SERVER_FLAGS,
              "--host", settings.api_host, "--port", str(settings.api_port), "--log-level", "info"],
        healthy=lambda: http_ok(f"{settings.api_url}/health")))
    out.append(Service(
        name="ui",
        argv=[sys.executable, "-m", "streamlit", "run", str(PROJECT_ROOT / "ui" / "app.py"),
              "--server.address", settings.ui_host, "--server.port", str(settings.ui_port),
              "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        healthy=lambda: http_ok(f"http://{settings.ui_host}:{settings.ui_port}/_stcore/health")))
    return out


# --- PID records -------------------------------------------------------------

def _pid_file(settings: Settings, name: str) -> Path:
    return settings.run_dir / f"{name}.json"


def _same_program(cmdline: list[str], argv: list[str]) -> bool:
    """The running command line is the one we started. Some programs rewrite their
    title (redis-server shows `redis-server 127.0.0.1:6379`): the program name then
    has to match. Only a rewritten title (one argument holding spaces) gets that
    leniency: otherwise any Python process would pass for a recorded Celery worker."""
    if cmdline == argv:
        return True
    rewritten_title = len(cmdline) == 1 and " " in cmdline[0]
    return rewritten_title and bool(argv) and Path(cmdline[0].split()[0]).name == Path(argv[0]).name


def process_identity(pid: int) -> dict[str, object]:
    """What a PID record keeps, beside the PID and command, to recognise the process later."""
    return {"boot_id": boot_id(), "start_ticks": proc_start_ticks(pid)}


def _read_record(settings: Settings, name: str) -> dict | None:
    try:
        record = json.loads(_pid_file(settings, name).read_text())
        record["pid"] = int(record["pid"])
        return record
    except (OSError, ValueError, KeyError, TypeError):
        return None


def stale_reason(record: dict) -> str | None:
    """Why the recorded PID is not (any more) the process we started; None when it is."""
    pid = record["pid"]
    if not process_alive(pid):
        return f"pid {pid} is not running"
    boot = boot_id()
    if record.get("boot_id") and boot and record["boot_id"] != boot:
        return f"the record is from before the last reboot; pid {pid} is now another process"
    ticks = proc_start_ticks(pid)
    if ticks is None:
        return f"cannot read /proc/{pid} to check that pid {pid} is ours"
    if record.get("start_ticks") is not None and record["start_ticks"] != ticks:
        return f"pid {pid} now belongs to a process started at another time"
    cmdline = proc_cmdline(pid) or []
    if not _same_program(cmdline, list(record.get("argv") or [])):
        return f"pid {pid} runs `{' '.join(cmdline)[:120]}`, not the recorded command"
    return None


def recorded_pid(settings: Settings, name: str) -> int | None:
    record = _read_record(settings, name)
    return record["pid"] if record else None


def running(settings: Settings, name: str) -> int | None:
    """The PID of the service when its recorded process is alive and still ours."""
    record = _read_record(settings, name)
    return record["pid"] if record and stale_reason(record) is None else None


def _base_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    # Children must see the same settings as this process, whatever their cwd.
    env["APPLIANCE_DATA_DIR"] = str(settings.data_dir)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return env


def start_service(settings: Settings, svc: Service) -> int:
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    if svc.state_dir is not None:
        svc.state_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.log_dir / f"{svc.name}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(svc.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=PROJECT_ROOT, env={**_base_env(settings), **svc.env},
                                start_new_session=True,
                                preexec_fn=(lambda: os.nice(svc.nice)) if svc.nice else None)
    # Popen returns once the child has exec'd, so its start time and command line are final.
    _pid_file(settings, svc.name).write_text(json.dumps(
        {"pid": proc.pid, "argv": svc.argv, "started": time.time(), "log": str(log_path),
         **process_identity(proc.pid)}))
    return proc.pid


def wait_healthy(settings: Settings, svc: Service, pid: int) -> None:
    deadline = time.monotonic() + svc.timeout_s
    log_path = settings.log_dir / f"{svc.name}.log"
    while time.monotonic() < deadline:
        if svc.healthy():
            return
        if not process_alive(pid):
            tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            raise LaunchError(f"{svc.name} exited during start-up. Last log lines ({log_path}):\n{tail}")
        time.sleep(0.3)
    raise LaunchError(f"{svc.name} did not become healthy within {svc.timeout_s:.0f}s; see {log_path}")


def preflight(settings: Settings) -> None:
    if settings.manage_redis and shutil.which("redis-server") is None:
        raise LaunchError("redis-server is not installed. Fix: `sudo apt-get install redis-server` "
                          "(scripts/up.sh does this when run as root), or point redis_url at a "
                          "running Redis and set manage_redis: false.")


def up(settings: Settings, progress: Progress = print, only: set[str] | None = None) -> str:
    """Start every service (or just those named in `only`) not already running; wait until
    each is healthy. Returns the owner token."""
    preflight(settings)
    protect_data_dir(settings.data_dir)  # 0700, umask 077 for us and every service we start
    token = ensure_owner_token(settings)
    started: list[str] = []
    for svc in services(settings):
        if only is not None and svc.name not in only:
            continue
        pid = running(settings, svc.name)
        if pid is not None:
            progress(f"  {svc.name:<14} already running (pid {pid})")
        elif svc.name == "redis" and redis_ok(settings):
            raise LaunchError(f"something else already answers on {settings.redis_url}. Fix: stop it, "
                              f"or use it by setting manage_redis: false.")
        else:
            progress(f"  {svc.name:<14} starting ...")
            pid = start_service(settings, svc)
            started.append(svc.name)
        t0 = time.monotonic()
        try:
            wait_healthy(settings, svc, pid)
        except LaunchError:
            for name in reversed(started):  # leave nothing half-started behind
                stop_service(settings, name)
            raise
        progress(f"  {svc.name:<14} healthy (pid {pid}, {time.monotonic() - t0:.1f}s)")
    return token


def stop_service(settings: Settings, name: str, grace_s: float = 15.0,
                 progress: Progress | None = None) -> bool:
    """Stop a recorded service and its process group. True if something was stopped.
    A stale record (the PID is gone or now another process) is removed without
    signalling anything."""
    record = _read_record(settings, name)
    path = _pid_file(settings, name)
    if record is None:
        path.unlink(missing_ok=True)
        return False
    pid = record["pid"]
    reason = stale_reason(record)
    if reason is not None:
        if process_alive(pid) and progress is not None:
            progress(f"  {name:<14} stale record ({reason}): removed, nothing signalled")
        path.unlink(missing_ok=True)
        return False
    stopped = False
    if process_alive(pid):
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace_s
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if process_alive(pid):
            os.killpg(pid, signal.SIGKILL)
        stopped = True
    # Children of the group (e.g. Celery pool processes) may outlive the leader briefly.
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    path.unlink(missing_ok=True)
    return stopped


def down(settings: Settings, progress: Progress = print) -> None:
    for svc in reversed(services(settings)):
        if stop_service(settings, svc.name, progress=progress):
            progress(f"  {svc.name:<14} stopped")
    # Records of services no longer configured (e.g. a disabled queue) are stopped too.
    if settings.run_dir.is_dir():
        for path in settings.run_dir.glob("*.json"):
            if stop_service(settings, path.stem, progress=progress):
                progress(f"  {path.stem:<14} stopped")


def status(settings: Settings) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for svc in services(settings):
        pid = running(settings, svc.name)
        out[svc.name] = {"pid": pid, "running": pid is not None,
                         "healthy": bool(pid) and svc.healthy()}
    return out
