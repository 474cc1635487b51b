"""The real n8n from npm (scripts/setup-n8n.sh installs it into .n8n/), run headless in
an isolated user folder: import workflows and credentials, execute workflows with
`n8n execute`, read the execution's data back.

Every n8n process gets its own free ports (HTTP, task broker) and listens on loopback
only; diagnostics, telemetry and version checks are off.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
N8N_DIR = Path(os.environ.get("APPLIANCE_N8N_DIR", ROOT / ".n8n"))
N8N_BIN = N8N_DIR / "node_modules" / ".bin" / "n8n"


def ensure_installed() -> Path:
    """Run the project's idempotent installer (a no-op once its stamp says done)."""
    subprocess.run([str(ROOT / "scripts" / "setup-n8n.sh")], check=True)
    return N8N_BIN


class N8nFailed(AssertionError):
    pass


@dataclass
class N8n:
    user_folder: Path
    env: dict[str, str]

    @classmethod
    def isolated(cls, user_folder: Path, http_port: int, broker_port: int) -> "N8n":
        env = {
            **os.environ,
            "N8N_USER_FOLDER": str(user_folder),
            "N8N_PORT": str(http_port),
            "N8N_LISTEN_ADDRESS": "127.0.0.1",
            "N8N_HOST": "127.0.0.1",
            "N8N_RUNNERS_BROKER_PORT": str(broker_port),
            "N8N_RUNNERS_BROKER_LISTEN_ADDRESS": "127.0.0.1",
            "N8N_DIAGNOSTICS_ENABLED": "false",
            "N8N_VERSION_NOTIFICATIONS_ENABLED": "false",
            "N8N_PERSONALIZATION_ENABLED": "false",
            "N8N_ENCRYPTION_KEY": "appliance-test-encryption-key-0123",
            # The signing Code node of docs/n8n/webhook-hmac.json needs Node's crypto.
            "NODE_FUNCTION_ALLOW_BUILTIN": "crypto",
            "DB_SQLITE_POOL_SIZE": "1",
        }
        return cls(user_folder=user_folder, env=env)

    def run(self, *args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(N8N_BIN), *args], env=self.env, cwd=self.user_folder, text=True,
                              capture_output=True, timeout=timeout_s)
        return proc

    def _checked(self, *args: str) -> str:
        proc = self.run(*args)
        if proc.returncode != 0:
            raise N8nFailed(f"n8n {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc.stdout

    def import_workflow(self, workflow: dict[str, Any]) -> str:
        path = self.user_folder / f"workflow-{workflow['id']}.json"
        path.write_text(json.dumps(workflow))
        self._checked("import:workflow", f"--input={path}")
        return workflow["id"]

    def import_credentials(self, credentials: list[dict[str, Any]]) -> None:
        path = self.user_folder / "credentials.json"
        path.write_text(json.dumps(credentials))
        self._checked("import:credentials", f"--input={path}")
        path.unlink()

    def execute(self, workflow_id: str) -> dict[str, Any]:
        """Run the workflow in the CLI; return the execution (its `data.resultData`)."""
        proc = self.run("execute", f"--id={workflow_id}", "--rawOutput")
        start = proc.stdout.find("\n{")
        if start < 0 and proc.stdout.startswith("{"):
            start = 0
        if start < 0:
            raise N8nFailed(f"n8n execute printed no execution (exit {proc.returncode}):\n"
                            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        execution = json.loads(proc.stdout[start:].strip())
        execution["_exit_code"], execution["_stderr"] = proc.returncode, proc.stderr
        return execution


def node_runs(execution: dict[str, Any], node: str) -> list[dict[str, Any]]:
    return execution["data"]["resultData"]["runData"].get(node, [])


def node_output(execution: dict[str, Any], node: str) -> list[dict[str, Any]]:
    """The items (json) the node's last run put on its main output."""
    runs = node_runs(execution, node)
    assert runs, f"node '{node}' did not run; ran: {sorted(execution['data']['resultData']['runData'])}"
    main = (runs[-1].get("data") or {}).get("main") or [[]]
    return [item["json"] for item in (main[0] or [])]


def error_of(execution: dict[str, Any]) -> str | None:
    err = execution["data"]["resultData"].get("error")
    return None if err is None else f"{err.get('message')} {err.get('description') or ''}"
