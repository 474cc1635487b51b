"""Generated code runs only in the sandbox, and the sandbox holds its limits.

Each limit is attacked for real (workers/sandbox.py run directly, as the code worker
calls it). Broken builds these tests were watched failing against: the network test
with `--share-net` added to the bwrap command (the sandbox then reaches the listener);
the unprivileged process test with RLIMIT_NPROC removed from the launcher (all 200
forks start).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path

import pytest
from configs.loader import ConfigError

from configs.loader import load_settings
from configs.schema import SandboxConfig
from tests.conftest import Stack
from workers import sandbox
from workers.sandbox import SandboxRefused, run_python

LIMITS = SandboxConfig(enabled=True, cpu_seconds=2, memory_mb=128, output_bytes=4096, wall_seconds=5,
                       max_processes=16)


def test_execution_is_off_by_default() -> None:
    assert load_settings(environ={}).sandbox.enabled is False


def test_there_is_no_switch_to_run_without_isolation() -> None:
    with pytest.raises(ConfigError, match="sandbox.allow_without_network_isolation.*unknown key"):
        load_settings(environ={}, overrides={"sandbox": {"allow_without_network_isolation": True}})


def test_good_code_runs_and_returns_its_output() -> None:
    result = run_python("print(sum(range(10)))", LIMITS)
    assert result.exit_code == 0 and result.stdout.strip() == "45" and not result.limits_hit


def test_infinite_loop_is_killed_at_its_limit() -> None:
    result = run_python("while True:\n    pass\n", LIMITS)
    assert result.exit_code != 0
    assert result.limits_hit and set(result.limits_hit) <= {"cpu", "wall_clock"}


def test_sleeping_code_is_stopped_by_the_wall_clock() -> None:
    result = run_python("import time\ntime.sleep(60)\nprint('woke')", LIMITS.model_copy(update={"wall_seconds": 1}))
    assert result.timed_out and "wall_clock" in result.limits_hit and "woke" not in result.stdout


def test_memory_hog_hits_the_memory_limit() -> None:
    result = run_python("x = bytearray(1024 * 1024 * 1024)\nprint('allocated')", LIMITS)
    assert result.exit_code != 0 and "allocated" not in result.stdout
    assert "memory" in result.limits_hit


def test_output_is_capped() -> None:
    result = run_python("print('x' * 100000)", LIMITS)
    assert len(result.stdout) <= LIMITS.output_bytes and "output" in result.limits_hit


def test_network_is_unreachable_even_where_a_listener_answers() -> None:
    """A real listener on the host's loopback: the host reaches it, the sandbox must not."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # the listener is real: without a sandbox this connect succeeds
        code = ("import socket\n"
                f"try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    print('CONNECTED')\n"
                "except OSError as e:\n    print('BLOCKED', e)\n"
                "print('interfaces', [n for _, n in socket.if_nameindex()])\n")
        result = run_python(code, LIMITS)
        assert "BLOCKED" in result.stdout and "CONNECTED" not in result.stdout, result
        assert "interfaces ['lo']" in result.stdout, result.stdout  # no way out but its own loopback
    finally:
        server.close()


SYSTEM_PYTHON = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
FORK_200 = ("import os, time\nstarted = 0\n"
            "try:\n    for _ in range(200):\n        if os.fork() == 0:\n            time.sleep(5)\n            os._exit(0)\n"
            "        started += 1\nexcept OSError as e:\n    print('REFUSED', e)\nprint('STARTED', started)\n")


@pytest.mark.skipif(os.geteuid() != 0 or not SYSTEM_PYTHON.exists() or shutil.which("setpriv") is None,
                    reason="needs root (to become uid 65534), setpriv and a system Python of this version")
def test_an_unprivileged_worker_holds_the_process_limit_with_rlimit_nproc() -> None:
    """Compose runs the code worker as uid 1000, where RLIMIT_NPROC (not a pids cgroup) is
    the limit. Run the sandbox as uid 65534 with the system Python (this venv's Python
    lives under root's 0700 home) and fork 200 times."""
    script = ("import json\nfrom configs.schema import SandboxConfig\nfrom workers.sandbox import run_python\n"
              f"r = run_python({FORK_200!r}, SandboxConfig(max_processes=16))\n"
              "print(json.dumps({'stdout': r.stdout, 'limits_hit': r.limits_hit, 'stderr': r.stderr}))\n")
    path = os.pathsep.join([str(Path(__file__).resolve().parents[1]), sysconfig.get_paths()["purelib"]])
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(SYSTEM_PYTHON),
                           "-c", script], capture_output=True, text=True, timeout=120, cwd="/",
                          env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONPATH": path})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    started = int(result["stdout"].split("STARTED")[1].split()[0])
    assert started < 16 and "REFUSED" in result["stdout"], result
    assert "processes" in result["limits_hit"], result


def test_a_missing_bubblewrap_is_a_clear_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    """No fallback: without bwrap on PATH nothing runs, and the message says what to install."""
    monkeypatch.setattr(sandbox, "_checked", False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SandboxRefused, match="apt-get install bubblewrap"):
        run_python("print('ran')", LIMITS)


def test_code_step_runs_generated_code_only_when_allowed(stack: Stack) -> None:
    plan = {"steps": [{"id": "c", "worker": "code", "instruction": "print the number 7 using print(7)"}]}
    with stack.http() as http:
        for allow in (False, True):
            resp = http.post("/v1/chat/completions", json={
                "plan": plan, "allow_code_execution": allow, "max_tokens": 40, "temperature": 0,
                "messages": [{"role": "user", "content": "run it"}]})
            assert resp.status_code == 200, resp.text
            task = http.get(f"/tasks/{resp.headers['x-task-id']}").json()
            summary = task["steps"][0]["result_summary"]
            assert ("Execution: exit code" in summary) is allow, summary
