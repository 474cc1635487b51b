"""Generated code runs only in the sandbox, and the sandbox holds its limits."""

from __future__ import annotations

from configs.loader import load_settings
from configs.schema import SandboxConfig
from tests.conftest import Stack
from workers.sandbox import run_python

LIMITS = SandboxConfig(enabled=True, cpu_seconds=2, memory_mb=128, output_bytes=4096, wall_seconds=5)


def test_execution_is_off_by_default() -> None:
    assert load_settings(environ={}).sandbox.enabled is False


def test_good_code_runs_and_returns_its_output() -> None:
    result = run_python("print(sum(range(10)))", LIMITS)
    assert result.exit_code == 0 and result.stdout.strip() == "45" and not result.limits_hit


def test_infinite_loop_is_killed_at_its_limit() -> None:
    result = run_python("while True:\n    pass\n", LIMITS)
    assert result.exit_code != 0
    assert result.limits_hit and set(result.limits_hit) <= {"cpu", "wall_clock"}
    assert result.seconds < LIMITS.wall_seconds + 2


def test_memory_hog_hits_the_memory_limit() -> None:
    result = run_python("x = bytearray(1024 * 1024 * 1024)\nprint('allocated')", LIMITS)
    assert result.exit_code != 0 and "allocated" not in result.stdout
    assert "memory" in result.limits_hit


def test_network_is_unreachable() -> None:
    code = ("import socket\n"
            "try:\n    socket.create_connection(('127.0.0.1', 22), timeout=2)\n    print('CONNECTED')\n"
            "except OSError as e:\n    print('BLOCKED', e)\n")
    result = run_python(code, LIMITS)
    assert "BLOCKED" in result.stdout and "CONNECTED" not in result.stdout


def test_output_is_capped() -> None:
    result = run_python("print('x' * 100000)", LIMITS)
    assert len(result.stdout) <= LIMITS.output_bytes and "output" in result.limits_hit


def test_code_cannot_read_the_data_directory(stack: Stack) -> None:
    token_file = stack.settings.token_file
    token_file.parent.chmod(0o700)
    result = run_python(f"print(open({str(token_file)!r}).read())", LIMITS)
    assert result.exit_code != 0 and "PermissionError" in result.stderr


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
