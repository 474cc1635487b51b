"""Adapters through the owner's tools: scripts/add-adapter.sh, `appliance adapters ...`,
the /adapters HTTP routes, and a chat request through the whole stack (API -> Celery
-> llama.cpp worker) that names an adapter."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx

from tests.conftest import Stack
from bench.harness.tiny_lora import recipe, tiny_lora_dir

ROOT = Path(__file__).resolve().parents[1]
APPLIANCE = ROOT / ".venv" / "bin" / "appliance"
MARKER = recipe("quokka").marker


def run(args: list[str], data_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "APPLIANCE_DATA_DIR": str(data_dir)}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_add_adapter_script_and_cli_round_trip(tmp_path: Path) -> None:
    data = tmp_path / "data"
    done = run(["scripts/add-adapter.sh", "quokka", str(tiny_lora_dir("quokka")), "--tasks", "chat,sport",
                "--pin", "--description", "answers like a quokka"], data)
    assert done.returncode == 0, done.stderr
    assert "registered adapter 'quokka'" in done.stdout

    listed = run([str(APPLIANCE), "adapters", "list", "--json"], data)
    assert listed.returncode == 0, listed.stderr
    [record] = json.loads(listed.stdout)
    assert (record["name"], record["tasks"], record["pinned"], record["description"]) == \
        ("quokka", ["chat", "sport"], True, "answers like a quokka")
    assert len(record["facts"]["checksum"]) == 64

    loaded = run([str(APPLIANCE), "adapters", "load", "quokka"], data)
    assert loaded.returncode == 0 and "converted for llama.cpp" in loaded.stdout, loaded.stderr
    assert list((data / "adapters" / ".cache" / "gguf").glob("*.gguf"))
    unloaded = run([str(APPLIANCE), "adapters", "unload", "quokka"], data)
    assert unloaded.returncode == 0, unloaded.stderr

    again = run(["scripts/add-adapter.sh", "quokka", str(tiny_lora_dir("quokka"))], data)
    assert again.returncode == 1 and "already registered" in again.stderr

    removed = run([str(APPLIANCE), "adapters", "remove", "quokka"], data)
    assert removed.returncode == 0, removed.stderr
    assert json.loads(run([str(APPLIANCE), "adapters", "list", "--json"], data).stdout) == []
    assert not list((data / "adapters" / ".cache" / "gguf").glob("*.gguf"))


def test_add_adapter_script_refuses_with_a_readable_reason(tmp_path: Path) -> None:
    data = tmp_path / "data"
    usage = run(["scripts/add-adapter.sh", "--help"], data)
    assert usage.returncode == 0 and "Usage: scripts/add-adapter.sh NAME PATH" in usage.stdout
    missing = run(["scripts/add-adapter.sh", "quokka"], data)
    assert missing.returncode == 2 and "NAME and PATH are required" in missing.stderr
    nowhere = run(["scripts/add-adapter.sh", "quokka", str(tmp_path / "nope")], data)
    assert nowhere.returncode == 2 and "does not exist" in nowhere.stderr
    bad_option = run(["scripts/add-adapter.sh", "quokka", str(tmp_path), "--force"], data)
    assert bad_option.returncode == 2 and "unknown option: --force" in bad_option.stderr

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_lora_dir("quokka"), pickled)
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04not really weights")
    refused = run(["scripts/add-adapter.sh", "pickled", str(pickled)], data)
    assert refused.returncode == 1 and "pickle" in refused.stderr and "Traceback" not in refused.stderr
    bad_name = run(["scripts/add-adapter.sh", "../evil", str(tiny_lora_dir("quokka"))], data)
    assert bad_name.returncode == 1 and "is not allowed" in bad_name.stderr
    assert not (data / "evil").exists()
    assert json.loads(run([str(APPLIANCE), "adapters", "list", "--json"], data).stdout) == []


def _chat(client: httpx.Client, adapter: str | None) -> httpx.Response:
    body = {"model": "core", "mode": "direct", "max_tokens": 16, "temperature": 0, "seed": 1,
            "messages": [{"role": "user", "content": "What is the tallest mountain on Earth?"}]}
    if adapter:
        body["adapter"] = adapter
    return client.post("/v1/chat/completions", json=body)


def test_http_routes_and_a_chat_through_the_stack(stack: Stack, tmp_path: Path) -> None:
    assert httpx.get(f"{stack.url}/adapters", timeout=30).status_code == 401
    with stack.http() as client:
        created = client.post("/adapters", json={"name": "quokka", "path": str(tiny_lora_dir("quokka")),
                                                 "tasks": ["chat"], "description": "quokka voice"})
        assert created.status_code == 201, created.text
        assert created.json()["facts"]["rank"] == 8
        assert [a["name"] for a in client.get("/adapters").json()] == ["quokka"]
        assert client.get("/adapters/quokka").json()["description"] == "quokka voice"

        # Through API -> Redis/Celery -> llama.cpp worker, which activates the adapter per request.
        base = _chat(client, None)
        tuned = _chat(client, "quokka")
        assert base.status_code == tuned.status_code == 200, (base.text, tuned.text)
        assert MARKER not in base.json()["choices"][0]["message"]["content"]
        assert MARKER in tuned.json()["choices"][0]["message"]["content"]
        stats = client.get("/stats/adapters").json()
        assert stats["requests"].get("quokka", 0) >= 1 and stats["loads"].get("quokka", 0) >= 1
        assert stats["swaps"] >= 1 and stats["swap_ms_mean"] is not None
        assert client.get("/adapters/stats").json()["requests"] == stats["requests"]

        cut = tmp_path / "cut"
        shutil.copytree(tiny_lora_dir("quokka"), cut)
        weights = cut / "adapter_model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
        refused = client.post("/adapters", json={"name": "cut", "path": str(cut)})
        assert refused.status_code == 400 and "truncated" in refused.json()["error"]["message"]
        assert client.post("/adapters", json={"name": "quokka", "path": str(cut)}).status_code == 409
        assert client.get("/adapters/nope").status_code == 404
        assert client.post("/adapters/quokka/load").json()["result"].startswith("converted for llama.cpp")

        assert client.delete("/adapters/quokka").status_code == 204
        assert client.get("/adapters").json() == []
        gone = _chat(client, "quokka")
        assert gone.status_code == 404 and "not registered" in gone.json()["error"]["message"]
