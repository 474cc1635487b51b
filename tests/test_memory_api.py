"""Memory end to end on the real stack: CLI -> API -> Redis/Celery -> rag worker ->
Qdrant local mode + MiniLM, and back. The conversation store's outbox feeds the index."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from core_agent.ops import launcher
from core_agent.stores.conversations import ConversationStore
from configs.schema import Settings
from core_agent.orchestration.memory_client import MemoryClient
from core_agent.ops.memory_backup import restore_backup
from configs.contracts.memory import RAG_INDEX_TURNS, SearchRequest
from rag.service import MemoryService
from tests.conftest import Stack
from tests.support.memory_vault import BAD_FILES, make_vault
from workers.backends.registry import embedding_backend
from workers.celery_app import create_celery_app

ROOT = Path(__file__).resolve().parents[1]


def appliance(*args: str) -> subprocess.CompletedProcess:
    """The real `appliance` command (its settings come from the stack's APPLIANCE_* env)."""
    return subprocess.run([sys.executable, "-m", "core_agent.ops.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def search(stack: Stack, query: str, k: int = 5, **extra) -> list[dict]:
    with stack.http() as http:
        resp = http.post("/memory/search", json={"query": query, "k": k, **extra})
    assert resp.status_code == 200, resp.text
    return resp.json()["hits"]


def wait_outbox_empty(stack: Stack, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    with stack.http() as http:
        while time.monotonic() < deadline:
            status = http.get("/memory/status").json()
            if status.get("outbox_pending") == 0:
                return
            time.sleep(0.5)
    raise AssertionError(f"outbox still has {status.get('outbox_pending')} turns after {timeout_s}s")


@pytest.fixture(scope="module")
def vault(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_vault(tmp_path_factory.mktemp("vault"))
    done = appliance("docs", "add", str(root), "--json")
    assert done.returncode == 1, "bad files make the exit status 1"
    assert done.stdout.strip(), f"no report; the command said: {done.stderr[-2000:]}"
    report = json.loads(done.stdout)
    failed = {Path(f["source"]).name: f["reason"] for f in report["failed"]}
    assert set(failed) == set(BAD_FILES), report
    assert "PDF" in failed["broken.pdf"] and "binary" in failed["binary.md"]
    assert len(report["added"]) == 5 and report["chunks"] >= 5
    return root


def test_documents_are_found_in_both_languages(stack: Stack, vault: Path) -> None:
    out = appliance("search", "how many solar panels charge the battery", "--k", "5", "--json")
    assert out.returncode == 0, out.stderr
    hits = json.loads(out.stdout)
    assert {"source", "score", "kind", "text"} <= set(hits[0])
    assert hits[0]["source"] == str(vault / "en/cabin.md") and hits[0]["kind"] == "document"

    out = appliance("search", "как варить борщ со свёклой", "--k", "5", "--json")
    assert json.loads(out.stdout)[0]["source"] == str(vault / "ru/borsch.md")
    assert search(stack, "акклиматизация при восхождении")[0]["source"] == str(vault / "ru/elbrus.md")
    assert search(stack, "when to clean the heat pump coil")[0]["source"] == str(vault / "manuals/heat-pump.pdf")


def test_adding_again_skips_unchanged_files_and_prunes_deleted_ones(stack: Stack, vault: Path) -> None:
    (vault / "en/sourdough.md").unlink()
    for bad in BAD_FILES:
        (vault / bad).unlink()
    out = appliance("docs", "add", str(vault), "--prune", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert len(report["unchanged"]) == 4 and not report["added"]
    assert report["removed"] == [str(vault / "en/sourdough.md")]
    assert all(h["source"] != str(vault / "en/sourdough.md") for h in search(stack, "sourdough rye starter"))

    pdf = str(vault / "manuals/heat-pump.pdf")
    out = appliance("docs", "remove", pdf)
    assert out.returncode == 0 and f"removed {pdf}" in out.stdout, out.stderr
    assert all(h["source"] != pdf for h in search(stack, "heat pump coil"))
    assert appliance("docs", "remove", pdf).returncode == 1, "removing it again is an error"


def test_upload_through_the_api_and_forget_the_document(stack: Stack) -> None:
    with stack.http() as http:
        resp = http.post("/documents", files=[("files", ("plan.md", "# Plan\nMove the beehives in April."))],
                         data={"sources": ["uploads/plan.md"]})
        assert resp.status_code == 200 and resp.json()["added"] == ["uploads/plan.md"], resp.text
        assert search(stack, "beehives")[0]["source"] == "uploads/plan.md"
        assert http.delete("/documents", params={"source": "uploads/plan.md"}).status_code == 200
        assert http.delete("/documents", params={"source": "uploads/plan.md"}).status_code == 404
    assert all(h["source"] != "uploads/plan.md" for h in search(stack, "beehives"))


def test_a_turn_said_earlier_is_recalled_in_a_later_conversation(stack: Stack) -> None:
    fact = "Remember this: my bicycle is a green Surly called Rocinante."
    reply = stack.openai().chat.completions.with_raw_response.create(
        model="core", messages=[{"role": "user", "content": fact}], max_tokens=8, temperature=0)
    first_conversation = reply.headers["x-conversation-id"]
    wait_outbox_empty(stack)

    async def later_context():
        settings = stack.settings
        client = MemoryClient(settings, ConversationStore(settings.conversations_db), create_celery_app(settings),
                              aioredis.Redis.from_url(settings.redis_url))
        later = client.store.create("later").id
        client.store.append(later, "user", "What is my bicycle called?")
        try:
            return await client.retrieve_context("What is my bicycle called?", conversation_id=later)
        finally:
            await client.stop()
            await client.redis.aclose()

    context = asyncio.run(later_context())
    assert context.error is None
    assert "Rocinante" in context.messages[0].content
    assert any(s.conversation_id == first_conversation for s in context.sources)

    # The real chat path does the same before answering and returns the sources.
    with stack.http() as http:
        answer = http.post("/v1/chat/completions", json={
            "model": "core", "mode": "direct", "max_tokens": 8, "temperature": 0,
            "messages": [{"role": "user", "content": "What is my bicycle called?"}]})
    assert answer.status_code == 200, answer.text
    assert f"conversation:{first_conversation}" in [s["source"] for s in answer.json()["sources"]]

    # Forgetting the conversation removes it from the index too (through the outbox).
    with stack.http() as http:
        assert http.delete(f"/memory/conversations/{first_conversation}").status_code == 204
    wait_outbox_empty(stack)
    hits = search(stack, "bicycle Rocinante", kinds=["conversation"])
    assert all(h["source"] != f"conversation:{first_conversation}" for h in hits)


def test_online_backup_restores_into_another_data_directory(stack: Stack, vault: Path, tmp_path: Path) -> None:
    archive = tmp_path / "online.tar.gz"
    out = appliance("memory", "backup", str(archive))
    assert out.returncode == 0, out.stderr
    restored = Settings(data_dir=tmp_path / "restored")
    restore_backup(restored, archive)
    service = MemoryService(restored, embedding_backend(restored))
    try:
        hits = service.search(SearchRequest(query="как варить борщ со свёклой", k=1)).hits
        assert hits[0].source == str(vault / "ru/borsch.md")
    finally:
        service.close()


def queued_index_task_texts(settings: Settings) -> list[str]:
    """The turn texts of every rag.index_turns task waiting in the rag queue in Redis
    (kombu's message format: the JSON envelope, the task's args base64 in `body`)."""
    texts = []
    client = redis.Redis.from_url(settings.redis_url)
    try:
        for raw in client.lrange("rag", 0, -1):
            envelope = json.loads(raw)
            if envelope.get("headers", {}).get("task") != RAG_INDEX_TURNS:
                continue
            args, kwargs, _ = json.loads(base64.b64decode(envelope["body"]))
            texts.append(json.dumps([args, kwargs]))
    finally:
        client.close()
    return texts


def test_turns_wait_while_the_rag_worker_is_down_and_are_indexed_after(stack: Stack) -> None:
    """Claim: with the rag worker down, a stored turn stays in the outbox while the API's
    drainer has already handed it to the rag queue; once the worker is back the drainer
    finishes: the outbox empties and the turn is found. Each step is a state only the
    drainer (or the worker it fed) causes, polled to a deadline. Broken build watched
    failing: MemoryClient.ensure_drainer returning at once (no drainer runs): the turn
    never reaches the rag queue and the first poll times out."""
    settings = stack.settings
    fact = f"The spare house key is hidden under the blue flowerpot ({uuid.uuid4().hex[:6]})."
    [rag] = [s for s in launcher.services(settings) if s.name == "worker-rag"]
    launcher.stop_service(settings, "worker-rag")
    store = ConversationStore(settings.conversations_db)
    try:
        cid = store.create("while down").id
        store.append(cid, "user", fact)
        with stack.http() as http:  # wakes the drainer; the search itself fails clearly
            resp = http.post("/memory/search", json={"query": "spare key"}, timeout=60)
            assert resp.status_code == 503 and "appliance up" in resp.json()["error"]["message"]
        deadline = time.monotonic() + 60
        while not any(fact in t for t in queued_index_task_texts(settings)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert any(fact in t for t in queued_index_task_texts(settings)), \
            "the drainer never sent the turn to the rag queue"
        assert fact in [i.content for i in store.memory_outbox()], "sent, but not done: the turn waits in the outbox"
    finally:
        launcher.wait_healthy(settings, rag, launcher.start_service(settings, rag))
    wait_outbox_empty(stack)
    hits = search(stack, "where is the spare house key", kinds=["conversation"])
    assert hits and hits[0]["source"] == f"conversation:{cid}" and fact in hits[0]["text"]


def test_reindex_rebuilds_both_collections_from_the_sources_of_truth(stack: Stack, vault: Path) -> None:
    out = appliance("memory", "reindex")
    assert out.returncode == 0, out.stderr
    assert "documents re-indexed" in out.stdout
    wait_outbox_empty(stack)
    assert search(stack, "как варить борщ со свёклой")[0]["source"] == str(vault / "ru/borsch.md")
    hits = search(stack, "where is the spare house key", kinds=["conversation"])
    assert hits and "flowerpot" in hits[0]["text"]
