"""scripts/up.sh brings the embedded appliance up; its curl line works; down.sh stops it all."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from configs.processes import process_alive
from tests.conftest import stack_env

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / "scripts" / name)], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_up_twice_then_down_leaves_nothing_running(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {**os.environ, **stack_env(data_dir)}
    env.pop("APPLIANCE_API_KEY")  # the token must be generated into the data directory

    first = run_script("up.sh", env)
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    token_file = data_dir / "owner.token"
    token = token_file.read_text().strip()
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    assert f"Token: {token}" in out
    assert f"http://127.0.0.1:{env['APPLIANCE_API_PORT']}" in out
    assert f"http://127.0.0.1:{env['APPLIANCE_UI_PORT']}" in out

    [curl] = [line.strip() for line in out.splitlines() if line.strip().startswith("curl ")]
    answer = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=300)
    reply = json.loads(answer.stdout)
    assert reply["choices"][0]["message"]["content"].strip(), reply

    pid_files = sorted((data_dir / "run").glob("*.json"))
    pids = {p.stem: json.loads(p.read_text())["pid"] for p in pid_files}
    assert {"redis", "worker-chat", "api", "ui"} <= set(pids)

    again = run_script("up.sh", env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already running" in again.stdout
    assert {p.stem: json.loads(p.read_text())["pid"] for p in (data_dir / "run").glob("*.json")} == pids

    status = subprocess.run([str(ROOT / ".venv" / "bin" / "appliance"), "status"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stdout + status.stderr

    down = run_script("down.sh", env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not any(process_alive(pid) for pid in pids.values()), "a recorded process survived down.sh"
    assert not list((data_dir / "run").glob("*.json"))
    # Nothing else with this data dir in its environment/command line is left either.
    leftovers = subprocess.run(["pgrep", "-f", re.escape(str(data_dir / "redis"))], capture_output=True)
    assert leftovers.returncode == 1


def test_scripts_explain_themselves() -> None:
    for name in ("up.sh", "down.sh", "status.sh", "test.sh", "install.sh"):
        result = subprocess.run([str(ROOT / "scripts" / name), "--help"], capture_output=True, text=True)
        assert result.returncode == 0 and "Usage" in result.stdout, name
    bad = subprocess.run([str(ROOT / "scripts" / "up.sh"), "--bogus"], capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown option" in bad.stderr
