"""Real attacks from generated code, sent through POST /sandbox/run on the real stack.

Every attack first shows that the target is real and reachable from outside the
sandbox (a readable file, a readable environ holding the owner token, a Redis that
answers PING, a process visible in /proc), so a test cannot pass because the target
was missing. Each must then be refused from inside.

Broken builds watched failing: binding the data directory into the sandbox
(`--ro-bind data_dir data_dir`) fails the data-directory test; `--share-net` fails
the Redis test; dropping `--unshare-pid` (PID 1 no longer takes the run's processes
with it) fails the /proc test, and together with the pids cgroup's final kill (the
second layer when the worker is root) the detached-child test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

from core_agent.ops.launcher import recorded_pid
from tests.conftest import OWNER_TOKEN, Stack


def run(stack: Stack, code: str, **limits: Any) -> dict[str, Any]:
    with stack.http() as http:
        resp = http.post("/sandbox/run", json={"code": code, "limits": limits})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"stdout", "stderr", "exit_code", "timed_out", "limits_hit"}
    return body


def processes_with(marker: str) -> list[int]:
    """Host PIDs whose command line contains `marker` (every PID namespace shows up here)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_the_route_needs_the_owner_token_and_refuses_limits_above_the_maximum(stack: Stack) -> None:
    resp = httpx.post(f"{stack.url}/sandbox/run", json={"code": "print(1)"}, timeout=30)
    assert resp.status_code == 401 and "token" in resp.json()["error"]["message"]
    with stack.http() as http:
        resp = http.post("/sandbox/run", json={"code": "print(1)", "limits": {"wall_seconds": 10_000}})
    assert resp.status_code == 400 and "wall_seconds" in resp.json()["error"]["message"]


def test_code_runs_and_a_lowered_limit_applies(stack: Stack) -> None:
    assert run(stack, "print(6 * 7)")["stdout"].strip() == "42"
    slow = run(stack, "import time\ntime.sleep(30)\nprint('woke')", wall_seconds=1)
    assert slow["timed_out"] and "wall_clock" in slow["limits_hit"] and "woke" not in slow["stdout"]


def test_a_world_readable_file_in_the_data_directory_stays_out_of_reach(stack: Stack) -> None:
    """The same code, run by plain Python outside the sandbox, reads the planted secret
    and lists the data directory; inside the sandbox both must be refused. The test does
    not change the directory's permissions: keeping it out is the sandbox's job."""
    planted = stack.settings.data_dir.resolve() / f"planted-{uuid.uuid4().hex[:8]}.txt"
    secret = f"SECRET-{uuid.uuid4().hex}"
    planted.write_text(secret)
    planted.chmod(0o644)
    try:
        code = (f"import os\nfor p in [{str(planted)!r}, {str(stack.settings.data_dir.resolve())!r}]:\n"
                "    try:\n        print('READ', open(p).read() if os.path.isfile(p) else os.listdir(p))\n"
                "    except OSError as e:\n        print('REFUSED', type(e).__name__)\n")
        outside = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
        assert secret in outside.stdout and outside.stdout.count("READ") == 2, outside
        body = run(stack, code)
        assert secret not in body["stdout"] and "READ" not in body["stdout"], body
        assert body["stdout"].count("REFUSED") == 2, body
    finally:
        planted.unlink()


def test_the_environment_of_the_worker_and_the_api_cannot_be_read(stack: Stack) -> None:
    for service in ("worker-code", "api"):
        pid = recorded_pid(stack.settings, service)
        assert pid is not None, f"{service} has no recorded pid"
        # From outside, the target is real: its environment holds the owner token.
        assert OWNER_TOKEN.encode() in Path(f"/proc/{pid}/environ").read_bytes()
        code = ("import os\n"
                f"try:\n    print('READ', open('/proc/{pid}/environ', 'rb').read())\n"
                "except OSError as e:\n    print('REFUSED', type(e).__name__)\n"
                "print('ENV', dict(os.environ))\n"
                "print('PROCS', sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n")
        body = run(stack, code)
        assert OWNER_TOKEN not in body["stdout"] and "READ" not in body["stdout"], body
        assert "APPLIANCE" not in body["stdout"], body  # no setting of the worker leaked into its env
        procs = eval(body["stdout"].split("PROCS", 1)[1].strip())  # noqa: S307 (a list of ints we printed)
        assert max(procs) < 10, f"the sandbox sees host processes: {procs}"


def test_the_real_redis_on_loopback_cannot_be_reached(stack: Stack) -> None:
    url = urlparse(stack.settings.redis_url)
    host, port = url.hostname or "127.0.0.1", url.port or 6379
    with socket.create_connection((host, port), timeout=5) as conn:  # the stack's Redis listens here
        conn.sendall(b"PING\r\n")
        assert conn.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    code = ("import socket\n"
            f"try:\n    c = socket.create_connection(({host!r}, {port}), timeout=3)\n"
            "    c.sendall(b'PING\\r\\n'); print('CONNECTED', c.recv(64))\n"
            "except OSError as e:\n    print('BLOCKED', type(e).__name__)\n")
    body = run(stack, code)
    assert "BLOCKED" in body["stdout"] and "CONNECTED" not in body["stdout"], body


def test_two_hundred_processes_hit_the_process_limit(stack: Stack) -> None:
    code = ("import os, time\nstarted = 0\n"
            "try:\n    for _ in range(200):\n        if os.fork() == 0:\n            time.sleep(5)\n            os._exit(0)\n"
            "        started += 1\nexcept OSError as e:\n    print('REFUSED', e)\n"
            "print('STARTED', started)\n")
    body = run(stack, code)
    started = int(body["stdout"].split("STARTED")[1].split()[0])
    assert started < stack.settings.sandbox.max_processes, body
    assert "REFUSED" in body["stdout"] and "processes" in body["limits_hit"], body


def test_a_detached_child_dies_with_the_run(stack: Stack) -> None:
    """Double fork + setsid: the grandchild runs under a unique marker in its argv. The
    host sees it while the run lasts (so the check can see it at all), and it must be
    gone once the run has returned."""
    marker = f"sandbox-survivor-{uuid.uuid4().hex}"
    code = ("import os, sys, time\n"
            "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        os.execv(sys.executable, [sys.executable, '-c',\n"
            "                 \"open('/work/alive', 'w').close()\\nimport time\\nwhile True: time.sleep(1)\","
            f" {marker!r}])\n"
            "    os._exit(0)\n"
            "deadline = time.time() + 5\n"
            "while not os.path.exists('/work/alive') and time.time() < deadline:\n    time.sleep(0.05)\n"
            "print('CHILD_ALIVE', os.path.exists('/work/alive'))\n"
            "time.sleep(4)\n")
    seen: list[int] = []
    result: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: result.update(run(stack, code)))
    runner.start()
    deadline = time.monotonic() + 60
    while runner.is_alive() and not seen and time.monotonic() < deadline:
        seen = processes_with(marker)
        time.sleep(0.05)
    runner.join(timeout=120)
    assert "CHILD_ALIVE True" in result.get("stdout", ""), result
    assert seen, "the detached child was never visible on the host, so this test could not see a survivor"
    deadline = time.monotonic() + 15
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not processes_with(marker), "the detached child outlived the run"


def test_nothing_outside_the_work_dir_can_be_written(stack: Stack, tmp_path: Path) -> None:
    host_target = tmp_path / "escaped.txt"  # exists on the host, writable there
    targets = [str(host_target), "/escaped.txt", "/usr/escaped.txt", "/usr/lib/escaped.txt",
               f"{os.path.realpath(os.sys.executable)}.escaped", "/proc/escaped.txt"]
    code = ("results = {}\n"
            f"for path in {targets!r} + ['/work/ok.txt', '/tmp/ok.txt']:\n"
            "    try:\n        open(path, 'w').write('x')\n        results[path] = 'WROTE'\n"
            "    except OSError as e:\n        results[path] = type(e).__name__\n"
            "print(results)\n")
    body = run(stack, code)
    results = eval(body["stdout"])  # noqa: S307 (a dict of strings we printed)
    assert results["/work/ok.txt"] == "WROTE" and results["/tmp/ok.txt"] == "WROTE", results
    for path in targets:
        assert results[path] != "WROTE", f"sandbox wrote {path}: {results}"
    assert not host_target.exists() and not Path("/usr/escaped.txt").exists()
