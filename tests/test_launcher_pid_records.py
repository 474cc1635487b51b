"""`appliance down` signals only processes it can prove it started.

A PID file outlives a reboot, and a PID number is reused: a stale record can point at
an unrelated process. These tests point records at a real sleeping process we start here (the
"unrelated process") and check that `down` leaves it alive and says the record was
stale, while a process the launcher really started is still stopped.

The unrelated process is a Python process, like the recorded Celery workers: with
`sleep` these tests could not see that the launcher took any Python process for a
recorded worker (it compared only the program name; fixed in launcher._same_program).
Broken builds watched failing: stop_service sending SIGTERM to the process group of a
stale record before removing it (the unrelated process shows SIGTERM pending); the old
name-only _same_program (the record with the Celery command line "matches").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from configs.schema import Settings
from configs.processes import boot_id, proc_start_ticks
from core_agent.ops import launcher

ROOT = Path(__file__).resolve().parents[1]


# The unrelated process blocks the catchable stop signals, so a signal sent to it stays
# pending in /proc/<pid>/status instead of killing it at some later moment: "nothing was
# signalled" is then read at once, without sleeping for a delivery.
BLOCK_SIGNALS_AND_SLEEP = ("import signal, sys, time\n"
                           "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})\n"
                           "print('ready', flush=True)\ntime.sleep(300)\n")


@pytest.fixture
def unrelated() -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen([sys.executable, "-c", BLOCK_SIGNALS_AND_SLEEP], start_new_session=True,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings(data_dir=tmp_path / "data")
    s.run_dir.mkdir(parents=True)
    return s


def write_record(settings: Settings, name: str, **record: object) -> Path:
    path = settings.run_dir / f"{name}.json"
    path.write_text(json.dumps(record))
    return path


def celery_argv() -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", "chat"]


def stale_records(proc: subprocess.Popen) -> dict[str, dict]:
    """Records that name the unrelated process's PID but not the process itself."""
    ticks = proc_start_ticks(proc.pid)
    assert ticks is not None
    return {
        # Written by an older launcher (PID and command only), e.g. before a reboot.
        "pid_and_other_command": {"pid": proc.pid, "argv": celery_argv()},
        # Same command line, but the PID was reused by a process started at another time.
        "pid_reused": {"pid": proc.pid, "argv": list(proc.args), "start_ticks": ticks - 1,
                       "boot_id": boot_id()},
        # Same start time, but another program (a record edited or copied by hand).
        "other_program": {"pid": proc.pid, "argv": celery_argv(), "start_ticks": ticks,
                          "boot_id": boot_id()},
        # From another boot of the machine.
        "other_boot": {"pid": proc.pid, "argv": list(proc.args), "start_ticks": ticks,
                       "boot_id": "00000000-0000-0000-0000-000000000000"},
    }


def signals_received(proc: subprocess.Popen) -> str | None:
    """What the process shows of a signal sent to it: dead or dying (state Z/X, or gone;
    SIGKILL), or a pending signal (the blocked SIGTERM/SIGINT/SIGHUP). None: untouched."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines())
    except FileNotFoundError:
        return "the process is gone"
    state = fields["State"].strip()
    pending = {name: int(fields[name], 16) for name in ("SigPnd", "ShdPnd")}
    if state[0] in "ZX" or any(pending.values()):
        return f"state {state}, pending {pending}"
    return None


@pytest.mark.parametrize("case", ["pid_and_other_command", "pid_reused", "other_program", "other_boot"])
def test_down_leaves_an_unrelated_process_alive_and_says_the_record_was_stale(
        settings: Settings, unrelated: subprocess.Popen, case: str) -> None:
    path = write_record(settings, "worker-chat", **stale_records(unrelated)[case])
    lines: list[str] = []
    launcher.down(settings, progress=lines.append)
    received = signals_received(unrelated)
    assert received is None, f"down signalled a process it did not start: {received}"
    assert any("worker-chat" in line and "stale record" in line and "nothing signalled" in line
               for line in lines), lines
    assert not path.exists(), "the stale record is removed"
    assert launcher.running(settings, "worker-chat") is None


def test_a_stale_record_is_not_taken_as_a_running_service(settings: Settings, unrelated: subprocess.Popen) -> None:
    write_record(settings, "api", pid=unrelated.pid, argv=celery_argv())
    assert launcher.running(settings, "api") is None
    assert launcher.status(settings)["api"]["running"] is False


def test_the_appliance_down_command_reports_a_stale_record(settings: Settings, unrelated: subprocess.Popen) -> None:
    write_record(settings, "worker-chat", **stale_records(unrelated)["pid_reused"])
    env = {**os.environ, "APPLIANCE_DATA_DIR": str(settings.data_dir),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-m", "core_agent.ops.cli", "down"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "stale record" in out.stdout and str(unrelated.pid) in out.stdout, out.stdout
    assert signals_received(unrelated) is None


def test_a_process_the_launcher_started_is_still_stopped(settings: Settings) -> None:
    # A Python process with an absolute executable, like the recorded Celery workers.
    svc = launcher.Service(name="worker-chat", argv=[sys.executable, "-c", "import time; time.sleep(300)"],
                           healthy=lambda: True)
    pid = launcher.start_service(settings, svc)
    record = json.loads((settings.run_dir / "worker-chat.json").read_text())
    assert record["start_ticks"] is not None and record["start_ticks"] == proc_start_ticks(pid)
    assert record["boot_id"]
    assert launcher.running(settings, "worker-chat") == pid, launcher.stale_reason(record)
    lines: list[str] = []
    launcher.down(settings, progress=lines.append)
    deadline = time.monotonic() + 20
    while launcher.process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not launcher.process_alive(pid)
    assert any("worker-chat" in line and "stopped" in line for line in lines), lines
