"""Webhooks end to end: a signed request becomes a real chat turn on the real stack.

A second API process (uvicorn in a thread, real HTTP) is started on the stack's Redis
and workers with test hooks configured; a real local HTTP receiver gets the signed
async callbacks and checks their signatures itself (plain hmac, not our code).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from configs.loader import load_settings
from configs.schema import Settings
from core_agent.stores.webhook_jobs import JobStore
from core_agent.webhooks.service import WebhookError, render_prompt
from tests.support.api_server import api_process
from tests.conftest import Stack, free_port

HMAC_SECRET = "hmac-secret-for-tests"
ASYNC_SECRET = "async-secret-for-tests"
BEARER = "bearer-token-for-tests"
TEMPLATE = "Answer with one short sentence: {{ question }}"
QUESTION = {"question": "What is the capital of France?"}

HOOKS = {
    "signed": {"secret": HMAC_SECRET, "mode": "sync", "prompt_template": TEMPLATE, "max_tokens": 12,
               "max_body_bytes": 2048},
    "bearer": {"bearer_token": BEARER, "mode": "sync", "prompt_template": TEMPLATE, "max_tokens": 12},
    "later": {"secret": ASYNC_SECRET, "mode": "async", "prompt_template": TEMPLATE, "max_tokens": 12},
    "impatient": {"bearer_token": BEARER, "mode": "sync", "prompt_template": TEMPLATE, "max_tokens": 12,
                  "sync_timeout_s": 0.001},
}


@dataclass
class HookApi:
    url: str
    token: str

    def post(self, hook: str, body: Any = None, *, raw: bytes | None = None, headers: dict | None = None,
             secret: str | None = None, timestamp: int | None = None) -> httpx.Response:
        data = raw if raw is not None else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        if secret is not None:
            ts = int(time.time()) if timestamp is None else timestamp
            hdrs["X-Appliance-Timestamp"] = str(ts)
            hdrs["X-Appliance-Signature"] = "sha256=" + hmac.new(
                secret.encode(), f"{ts}.".encode() + data, hashlib.sha256).hexdigest()
        return httpx.post(f"{self.url}/webhooks/{hook}", content=data, headers=hdrs, timeout=180)

    def job(self, job_id: str, headers: dict | None = None) -> httpx.Response:
        return httpx.get(f"{self.url}/jobs/{job_id}",
                         headers=headers if headers is not None else {"Authorization": f"Bearer {self.token}"})

    def messages(self, conversation_id: str) -> list[dict]:
        return httpx.get(f"{self.url}/conversations/{conversation_id}/messages",
                         headers={"Authorization": f"Bearer {self.token}"}).json()


def hook_settings(data_dir: Path) -> Settings:
    return load_settings(overrides={
        "data_dir": str(data_dir), "api_port": free_port(),
        # The test receiver listens on loopback, which callbacks reach only when allowlisted.
        "webhooks": {"callback_backoff_s": 0.2, "callback_attempts": 3, "hooks": HOOKS,
                     "callback_hosts": ["127.0.0.1"]},
        # This process has its own conversation store; it must not index its turns into
        # the stack's shared memory (other tests search it).
        "memory": {"enabled": False},
    })


@pytest.fixture(scope="module")
def hook_api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HookApi]:
    """An API process with the test hooks, sharing the stack's Redis and workers."""
    with api_process(hook_settings(tmp_path_factory.mktemp("webhook-api"))) as url:
        yield HookApi(url=url, token=stack.token)


@dataclass
class Receiver:
    """A real HTTP server that records callbacks and answers with scripted statuses."""

    statuses: list[int] = field(default_factory=list)
    received: "queue.Queue[tuple[dict[str, str], bytes]]" = field(default_factory=queue.Queue)
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            rec.received.put(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(rec.statuses.pop(0) if rec.statuses else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/callback"
    yield rec
    server.shutdown()
    server.server_close()


def _error(resp: httpx.Response) -> str:
    return resp.json()["error"]["message"]


def _signature_ok(secret: str, headers: dict[str, str], body: bytes) -> bool:
    ts = headers["x-appliance-timestamp"]
    expected = "sha256=" + hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["x-appliance-signature"]) and abs(time.time() - int(ts)) < 300


# --- templates (no stack needed) ---------------------------------------------------

def test_prompt_template_fills_fields_and_names_a_missing_one() -> None:
    body = {"ticket": {"title": "Printer", "tags": ["hw", "urgent"]}, "n": 3}
    assert render_prompt("{{ ticket.title }} / {{ ticket.tags.1 }} / {{n}}", body) == "Printer / urgent / 3"
    assert json.loads(render_prompt("{{ . }}", body)) == body
    with pytest.raises(WebhookError) as exc:
        render_prompt("Summarise {{ ticket.body }}", body)
    assert exc.value.status == 400 and "ticket.body" in exc.value.message


# --- refusals -------------------------------------------------------------------------

def test_shipped_example_hook_is_off_until_it_has_a_secret(stack: Stack) -> None:
    resp = httpx.post(f"{stack.url}/webhooks/summarize", json={"text": "hello"})
    assert resp.status_code == 503
    assert "APPLIANCE_WEBHOOKS__HOOKS__SUMMARIZE__SECRET" in _error(resp)


def test_unknown_hook_is_404(hook_api: HookApi) -> None:
    resp = hook_api.post("nope", QUESTION, secret=HMAC_SECRET)
    assert resp.status_code == 404 and "configs/webhooks.yaml" in _error(resp)


def test_wrong_content_type_is_415(hook_api: HookApi) -> None:
    resp = hook_api.post("signed", raw=b"question=hi", headers={"Content-Type": "application/x-www-form-urlencoded"},
                         secret=HMAC_SECRET)
    assert resp.status_code == 415 and "application/json" in _error(resp)


def test_oversized_body_is_413(hook_api: HookApi) -> None:
    resp = hook_api.post("signed", {"question": "x" * 5000}, secret=HMAC_SECRET)
    assert resp.status_code == 413 and "2048 bytes" in _error(resp)


def test_bad_missing_and_stale_signatures_are_401(hook_api: HookApi) -> None:
    wrong = hook_api.post("signed", QUESTION, secret="not-the-secret")
    assert wrong.status_code == 401 and "does not match" in _error(wrong)
    missing = hook_api.post("signed", QUESTION)
    assert missing.status_code == 401 and "X-Appliance-Signature" in _error(missing)
    old = hook_api.post("signed", QUESTION, secret=HMAC_SECRET, timestamp=int(time.time()) - 301)
    assert old.status_code == 401 and "old" in _error(old)
    wrong_bearer = hook_api.post("bearer", QUESTION, headers={"Authorization": "Bearer nope"})
    assert wrong_bearer.status_code == 401


def test_bad_bodies_are_400_with_the_reason(hook_api: HookApi) -> None:
    auth = {"Authorization": f"Bearer {BEARER}"}
    cases = [
        (hook_api.post("bearer", raw=b"{not json", headers=auth), "not valid"),
        (hook_api.post("bearer", ["a list"], headers=auth), "JSON object"),
        (hook_api.post("bearer", {"other": 1}, headers=auth), "'question'"),
        (hook_api.post("bearer", {**QUESTION, "adapter": "evil"}, headers=auth), "not allowed"),
        (hook_api.post("bearer", {**QUESTION, "callback_url": "http://x"}, headers=auth), "synchronously"),
        (hook_api.post("bearer", QUESTION, headers={**auth, "Idempotency-Key": "has space"}), "Idempotency-Key"),
        (hook_api.post("later", QUESTION, secret=ASYNC_SECRET), "callback_url"),
        (hook_api.post("later", {**QUESTION, "callback_url": "ftp://x/y"}, secret=ASYNC_SECRET), "http(s)"),
    ]
    for resp, needle in cases:
        assert resp.status_code == 400, resp.text
        assert needle in _error(resp), (needle, resp.text)


# --- real runs --------------------------------------------------------------------------

def test_sync_hook_answers_as_json_and_refuses_a_replay(hook_api: HookApi) -> None:
    raw = json.dumps(QUESTION).encode()
    ts = int(time.time())
    resp = hook_api.post("signed", raw=raw, secret=HMAC_SECRET, timestamp=ts)
    assert resp.status_code == 200, resp.text
    job = resp.json()
    assert job["status"] == "succeeded" and job["answer"].strip()
    assert job["result"]["usage"]["completion_tokens"] > 0
    stored = hook_api.messages(job["conversation_id"])
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert "capital of France" in stored[0]["content"]

    replay = hook_api.post("signed", raw=raw, secret=HMAC_SECRET, timestamp=ts)
    assert replay.status_code == 409 and "replay" in _error(replay)

    # The job can be read back: owner token, or the job id signed with the hook's secret; not by strangers.
    assert hook_api.job(job["id"]).json()["answer"] == job["answer"]
    signed = {"X-Appliance-Timestamp": str(ts), "X-Appliance-Signature": "sha256=" + hmac.new(
        HMAC_SECRET.encode(), f"{ts}.{job['id']}".encode(), hashlib.sha256).hexdigest()}
    assert hook_api.job(job["id"], headers=signed).status_code == 200
    assert hook_api.job(job["id"], headers={}).status_code == 404


def test_same_idempotency_key_returns_the_same_job_without_a_second_run(hook_api: HookApi) -> None:
    headers = {"Authorization": f"Bearer {BEARER}", "Idempotency-Key": f"order-{uuid.uuid4().hex}"}
    first = hook_api.post("bearer", QUESTION, headers=headers)
    assert first.status_code == 200, first.text
    again = hook_api.post("bearer", QUESTION, headers=headers)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["answer"] == first.json()["answer"]
    # One question and one answer stored: the model ran once.
    assert len(hook_api.messages(first.json()["conversation_id"])) == 2
    other_body = hook_api.post("bearer", {"question": "Something else?"}, headers=headers)
    assert other_body.status_code == 422 and "different body" in _error(other_body)


def test_sync_hook_that_takes_too_long_answers_202_and_the_job_can_be_polled(hook_api: HookApi) -> None:
    resp = hook_api.post("impatient", QUESTION, headers={"Authorization": f"Bearer {BEARER}"})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    assert resp.headers["location"] == f"/jobs/{job_id}"
    deadline = time.monotonic() + 120
    job = resp.json()
    while job["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(0.3)
        job = hook_api.job(job_id, headers={"Authorization": f"Bearer {BEARER}"}).json()
    assert job["status"] == "succeeded" and job["answer"].strip()


def test_async_hook_calls_back_signed_and_retries_after_a_receiver_error(
        hook_api: HookApi, receiver: Receiver) -> None:
    receiver.statuses = [500]  # first delivery fails; the retry must succeed
    key = {"Idempotency-Key": f"async-{uuid.uuid4().hex}"}
    body = {**QUESTION, "callback_url": receiver.url}
    resp = hook_api.post("later", body, secret=ASYNC_SECRET, headers=key)
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    assert resp.json()["status"] in ("queued", "running")

    deliveries = [receiver.received.get(timeout=120), receiver.received.get(timeout=60)]
    for attempt, (headers, payload) in enumerate(deliveries, 1):
        assert _signature_ok(ASYNC_SECRET, headers, payload), "callback signature must verify"
        assert headers["x-appliance-job-id"] == job_id
        delivered = json.loads(payload)
        assert delivered["id"] == job_id and delivered["status"] == "succeeded"
        assert delivered["answer"].strip() and delivered["callback_attempt"] == attempt
    assert deliveries[0][0]["x-appliance-signature"] != deliveries[1][0]["x-appliance-signature"], \
        "each attempt is signed anew"

    deadline = time.monotonic() + 30
    while (job := hook_api.job(job_id).json())["callback"]["status"] == "pending" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job["callback"] == {"url": receiver.url, "status": "delivered", "attempts": 2, "error": None}

    # The same key (signed anew) gives the same job: no second run, no further callback.
    # Signatures carry whole seconds: sign with the next second (inside the window), so
    # this is a new signature and not a replay, without sleeping until that second.
    again = hook_api.post("later", body, secret=ASYNC_SECRET, headers=key, timestamp=int(time.time()) + 1)
    assert again.status_code == 202 and again.json()["id"] == job_id
    assert len(hook_api.messages(job["conversation_id"])) == 2
    assert hook_api.job(job_id).json()["callback"]["attempts"] == 2


def test_jobs_of_a_stopped_api_are_failed_and_their_callbacks_resumed(
        stack: Stack, receiver: Receiver, tmp_path: Path) -> None:
    """An API that stopped mid-job: the next API marks the job failed (interrupted) and
    still delivers the pending callback, so the workflow hears about it."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    store = JobStore(tmp_path / "webhooks.sqlite3")
    job, _ = store.create("later", "0" * 64, "crash-1", receiver.url)
    with store._connect() as db:  # as the stopped API process left it
        db.execute("UPDATE webhook_jobs SET status = 'running', owner_pid = ? WHERE id = ?", (gone.pid, job.id))
    settings = hook_settings(tmp_path)
    with api_process(settings) as url:
        seen = httpx.get(f"{url}/jobs/{job.id}", headers={"Authorization": f"Bearer {stack.token}"}).json()
        assert seen["status"] == "failed" and seen["error"]["code"] == "interrupted"
        headers, payload = receiver.received.get(timeout=30)
    assert _signature_ok(ASYNC_SECRET, headers, payload)
    assert json.loads(payload)["error"]["code"] == "interrupted"


# --- the n8n example workflows (docs/n8n/) ------------------------------------------------

N8N_DIR = Path(__file__).resolve().parents[1] / "docs" / "n8n"


def _workflow(name: str) -> dict[str, Any]:
    wf = json.loads((N8N_DIR / name).read_text())
    names = {n["name"] for n in wf["nodes"]}
    for source, kinds in wf["connections"].items():
        assert source in names
        for outputs in kinds.values():
            assert all(link["node"] in names for branch in outputs for link in branch)
    return wf


def _node(wf: dict[str, Any], node_type: str) -> dict[str, Any]:
    return next(n for n in wf["nodes"] if n["type"] == node_type)


def test_n8n_workflows_are_wired_and_call_the_right_endpoints() -> None:
    bearer = _node(_workflow("webhook-bearer.json"), "n8n-nodes-base.httpRequest")
    assert bearer["parameters"]["url"].endswith("/webhooks/summarize")
    assert "httpHeaderAuth" in bearer["credentials"]
    chat = _workflow("openai-chat.json")
    model = _node(chat, "@n8n/n8n-nodes-langchain.lmChatOpenAi")
    assert "openAiApi" in model["credentials"] and "/v1" in model["credentials"]["openAiApi"]["name"]
    assert chat["connections"]["Appliance model"]["ai_languageModel"][0][0]["node"] == "Ask the appliance"


# The HMAC workflow itself runs in the real n8n: tests/test_n8n_workflows.py.
