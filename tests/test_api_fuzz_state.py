"""The second half of issue 16's schemathesis run: every operation that changes state
(the ones tests/test_api_fuzz.py leaves out because it shares the session stack), on a
stack of its own, with the owner's token, a fixed seed and a fixed example budget.

Covered: every DELETE (conversations, tasks, memory conversations, documents, adapters,
training jobs), PATCH /conversations/{cid}, and POST /conversations, /documents,
/memory/reindex, /sandbox/run, /adapters, /adapters/train, /adapters/train/{job}/resume,
/adapters/{name}/load and /adapters/{name}/unload. Real things are seeded first
(conversations, a finished task, two documents, a registered adapter, an ended training
job), and tests/support/fuzz_state_hooks.py lets the fuzzer draw their ids, so deletes,
renames, loads and resumes reach past the 404. Costs are bounded there too (3 s
sandbox runs, one-step training). Phases: examples, coverage (boundary values: it found
the 4096-character adapter path), fuzzing, and stateful, which follows the schema's
links (core_agent/api/openapi_links.py) from a created conversation to its rename and
deletes. Passing means: no 5xx, every response documented by
the schema, and afterwards nothing half-written (no staging folder of a refused
adapter, no half-created job, no job left running) and no process left once the stack
is down.

The errors this run found are fixed, each with a focused test below. Deliberate break,
recorded: with check_files' OSError guard removed (lora_manager/validation.py), the
coverage phase's 4096-character adapter path gets a 500 and this test fails.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jsonschema
import pytest

from bench.harness.faults import children_of
from bench.harness.tiny_lora import tiny_lora_dir
from core_agent.ops import launcher
from lora_manager import settings_glue
from lora_manager.training.jobs import FINISHED, JobStore, current_status
from lora_manager.training.spec import TrainingSpec
from tests.conftest import Stack, running_stack, stack_env
from tests.test_api_fuzz import CHECKS, EXCLUDED
from tests.support.fuzz_state_hooks import FUZZ_SEEDS_ENV

ROOT = Path(__file__).resolve().parents[1]
SEED = 42
MAX_EXAMPLES = 20
# What tests/test_api_fuzz.py leaves out (on the shared stack) is what this run covers,
# so the two runs together cover every operation, including ones added later.
STATE_CHANGING_METHODS = ("DELETE", "PATCH")
SETTLE_S = 120.0

pytestmark = pytest.mark.timeout(900)


def seed_real_things(stack: Stack, seeds_file: Path) -> dict:
    """Things the fuzzer can find by id: it draws these besides its own random values."""
    with stack.http() as client:
        cids = [client.post("/conversations", json={"title": f"fuzz {i}"}).json()["id"] for i in range(6)]
        chat = client.post("/v1/chat/completions", json={
            "model": "core", "mode": "direct", "memory": "off", "max_tokens": 2, "conversation_id": cids[0],
            "messages": [{"role": "user", "content": "Say hi."}]})
        assert chat.status_code == 200, chat.text
        sources = ["fuzz-notes-a.txt", "fuzz-notes-b.txt"]
        upload = client.post("/documents", files=[("files", (s, b"The quokka lives on Rottnest Island.\n"))
                                                   for s in sources])
        assert upload.status_code == 200, upload.text
        adapter = client.post("/adapters", json={"name": "fuzz-quokka", "path": str(tiny_lora_dir("quokka"))})
        assert adapter.status_code == 201, adapter.text
    # An ended job to cancel (409) and resume: its source is a memory query that finds
    # too little to train on, so a resumed run is refused within seconds.
    jobs = JobStore(settings_glue.training_dir(stack.settings))
    job = jobs.create(TrainingSpec(name="fuzz-job", sources=["memory:zebra crossings"], max_steps=1))
    job.update(state="cancelled", message="seeded by the fuzz test")
    seeds = {"cid": cids, "task_id": [chat.headers["x-task-id"]], "source": sources,
             "name": ["fuzz-quokka"], "job_id": [job.id], "adapter_path": str(tiny_lora_dir("quokka"))}
    seeds_file.write_text(json.dumps(seeds), encoding="utf-8")
    return seeds


def state_changing_operations(stack: Stack) -> list[str]:
    with stack.http() as client:
        paths = client.get("/openapi.json").json()["paths"]
    operations = [f"{method.upper()} {path}" for path, item in paths.items() for method in item]
    return [op for op in operations if op.split()[0] in STATE_CHANGING_METHODS or op in EXCLUDED]


def run_schemathesis(stack: Stack, seeds_file: Path, report_dir: Path) -> str:
    st = Path(sys.executable).with_name("st")
    argv = [str(st), "run", f"{stack.url}/openapi.json",
            "--header", f"Authorization: Bearer {stack.token}",
            "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES), "--phases", "examples,coverage,fuzzing,stateful",
            "--checks", ",".join(CHECKS), "--request-timeout", "120", "--workers", "1", "--no-shrink",
            "--max-failures", "20", "--report", "junit", "--report-dir", str(report_dir)]
    for method in STATE_CHANGING_METHODS:
        argv += ["--include-method", method]
    for name in EXCLUDED:
        argv += ["--include-name", name]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.support.fuzz_state_hooks", FUZZ_SEEDS_ENV: str(seeds_file),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run(argv, cwd=report_dir, env=env, capture_output=True, text=True, timeout=900)
    output = run.stdout + run.stderr
    (report_dir / "schemathesis.txt").write_text(output, encoding="utf-8")
    print(output[-6000:])
    operations = state_changing_operations(stack)
    assert len(operations) >= 16, operations  # all DELETEs and PATCHes, and the POSTs above
    assert f"Operations:       {len(operations)} selected" in output, output[-3000:]
    assert f"Tested: {len(operations)}" in output, output[-3000:]
    assert run.returncode == 0, f"schemathesis found problems:\n{output[-8000:]}"
    generated = re.search(r"(\d+) generated", output)
    assert generated and int(generated.group(1)) >= len(operations) * 3, output[-3000:]
    return output


def assert_nothing_half_written(stack: Stack) -> None:
    """Every adapter folder is a registered adapter, every job folder a whole job that
    has ended: no staging folder of a refused registration or a half-created job."""
    registry = settings_glue.registry(stack.settings)
    with stack.http() as client:
        listed = {a["name"] for a in client.get("/adapters").json()}
    folders = {p.name for p in registry.root.iterdir() if p.is_dir() and p.name != registry.cache_dir.name}
    assert folders == listed, f"adapter folders {sorted(folders)} but registered {sorted(listed)}"
    store = JobStore(settings_glue.training_dir(stack.settings))
    leftovers = [p.name for p in store.root.iterdir() if p.name.startswith(".")]
    assert not leftovers, f"half-created training jobs: {leftovers}"
    deadline = time.monotonic() + SETTLE_S
    while True:  # a resumed job may still be refusing its data
        statuses = [current_status(store.get(p.name)) for p in store.root.iterdir()]
        running = [s for s in statuses if s.state not in FINISHED]
        if not running:
            break
        assert time.monotonic() < deadline, f"training jobs still running: {running}"
        time.sleep(1.0)
    for status in statuses:
        assert not status.pid or not Path(f"/proc/{status.pid}").exists() or _zombie(status.pid), status


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# Processes a request may start; none may outlive it (sandbox runs, training preparation
# and job runners). The services' own processes and their Celery pool children stay.
STRAY = ("bwrap", "workers.training.runner", "workers.training.prepare", "appliance-sandbox")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def stray_processes(stack: Stack) -> list[str]:
    """Sandbox or training processes still alive under any of the stack's services."""
    found, todo = [], [launcher.running(stack.settings, svc.name) for svc in launcher.services(stack.settings)]
    todo = [pid for pid in todo if pid]
    while todo:
        for child in children_of(todo.pop()):
            todo.append(child)
            if not _zombie(child) and any(word in _cmdline(child) for word in STRAY):
                found.append(f"{child}: {_cmdline(child)[:200]}")
    return found


def processes_of(data_dir: Path) -> list[str]:
    """Live processes started for this stack (their environment names its data dir)."""
    marker = f"APPLIANCE_DATA_DIR={data_dir}".encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        if int(proc.name) == os.getpid() or _zombie(int(proc.name)):
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")[:200]
                found.append(f"{proc.name}: {cmdline!r}")
        except OSError:
            continue
    return found


def test_every_state_changing_operation_survives_the_fuzzer(tmp_path_factory) -> None:
    data_dir = tmp_path_factory.mktemp("fuzz-state-data")
    work = tmp_path_factory.mktemp("fuzz-state-run")
    started = time.monotonic()
    with running_stack(stack_env(data_dir), progress=lambda line: print(line, flush=True)) as stack:
        seed_real_things(stack, work / "seeds.json")
        run_schemathesis(stack, work / "seeds.json", work)
        assert_nothing_half_written(stack)
        assert stray_processes(stack) == [], "sandbox or training processes outlived their request"
        with stack.http() as client:  # the stack still answers after the fuzzer
            assert client.get("/health").status_code == 200
    print(f"fuzz-state run: {time.monotonic() - started:.0f} s including the stack")
    assert processes_of(data_dir) == [], "processes left after the stack went down"


# --- the errors the run found: each refused with a clear 400, nothing written ----------

@pytest.fixture()
def client(stack: Stack) -> httpx.Client:
    with stack.http() as http:
        yield http


def _refused(reply: httpx.Response, words: str) -> dict:
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert words in error["message"] and error["type"] == "invalid_request_error", error
    return error


def test_adapter_paths_that_cannot_be_folders_are_a_400_and_write_nothing(stack: Stack,
                                                                          client: httpx.Client) -> None:
    root = settings_glue.registry(stack.settings).root
    before = sorted(p.name for p in root.glob("*")) if root.exists() else []
    _refused(client.post("/adapters", json={"name": "long-path", "path": "0" * 4000}), "cannot be read")
    _refused(client.post("/adapters", json={"name": "odd-home", "path": "~no-such-user-here/adapter"}),
             "is not a folder")
    assert (sorted(p.name for p in root.glob("*")) if root.exists() else []) == before


def test_adapter_for_an_unknown_model_is_a_400_naming_the_configured_ones(stack: Stack,
                                                                        client: httpx.Client) -> None:
    reply = client.post("/adapters", json={"name": "some-adapter", "path": str(tiny_lora_dir("quokka")),
                                           "model": "no-such-model"})
    _refused(reply, "model 'no-such-model' is not configured (configured: ")
    assert client.get("/adapters/some-adapter").status_code == 404
    added = client.post("/adapters", json={"name": "model-check", "path": str(tiny_lora_dir("quokka"))})
    assert added.status_code == 201, added.text
    try:
        for action in ("load", "unload"):
            _refused(client.post(f"/adapters/model-check/{action}", json={"model": "nope"}),
                     "model 'nope' is not configured")
    finally:
        assert client.delete("/adapters/model-check").status_code == 204


def test_training_sources_that_cannot_be_paths_are_a_400(client: httpx.Client) -> None:
    for source in ("~no-such-user-here/notes", "n" * 5000):
        _refused(client.post("/adapters/train", json={"name": "odd-source", "sources": [source]}), "does not exist")
    _refused(client.post("/adapters/train", json={"name": "odd-base", "sources": ["memory:x"], "base": "b" * 5000}),
             "is not a folder")


def test_schema_has_no_tuple_items_and_loss_points_are_pairs(client: httpx.Client) -> None:
    """schemathesis could not read any /adapters/train response schema: pydantic wrote the
    [step, loss] pairs as a 2020-12 `prefixItems` tuple, which draft-4 minded tools misread."""
    schema = client.get("/openapi.json").json()
    assert "prefixItems" not in json.dumps(schema)
    points = schema["components"]["schemas"]["JobStatus"]["properties"]["loss_history"]
    validator = jsonschema.Draft202012Validator(points)
    assert validator.is_valid([[1, 2.5], [2, 1.25]])
    assert not validator.is_valid([[1]]) and not validator.is_valid([[1, 2.0, 3.0]])


def test_schema_links_lead_from_a_created_conversation_to_its_routes(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    operation_ids = {op["operationId"]: (method, path) for path, item in schema["paths"].items()
                     for method, op in item.items()}
    links = schema["paths"]["/conversations"]["post"]["responses"]["201"]["links"]
    targets = {operation_ids[link["operationId"]] for link in links.values()}
    assert ("patch", "/conversations/{cid}") in targets and ("delete", "/conversations/{cid}") in targets
    created = client.post("/conversations", json={"title": "linked"}).json()
    rename = links[next(k for k, v in links.items() if operation_ids[v["operationId"]][0] == "patch")]
    assert rename["parameters"] == {"cid": "$response.body#/id"}
    cid = created["id"]  # what the link's expression points at
    assert client.patch(f"/conversations/{cid}", json={"title": "renamed"}).json()["title"] == "renamed"
    assert client.delete(f"/conversations/{cid}").status_code == 204
