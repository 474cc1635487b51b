"""Webhooks in plan mode end to end: a signed request to a hook with `task_mode: plan`
runs its steps on the real queues, and the signed callback carries the answer composed
from them.

An extra API process with the hook (uvicorn in a thread, real HTTP) shares the session
stack's Redis and workers; a real local HTTP receiver gets the callback and checks its
signature with plain hmac, not our code.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Iterator

import httpx
import pytest

from configs.loader import load_settings
from tests.conftest import Stack, free_port
from tests.support.api_server import api_process
from tests.test_webhooks import Receiver, receiver  # noqa: F401 (receiver is a fixture: a real callback listener)

SECRET = "plan-hook-secret-for-tests"
HOOK = {"secret": SECRET, "mode": "async", "task_mode": "plan", "allowed_workers": ["chat", "rag"],
        "profile": "fast", "prompt_template": "{{ question }}", "max_tokens": 16}
CALLBACK_WAIT_S = 420


@pytest.fixture(scope="module")
def plan_hook_api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = load_settings(overrides={
        "data_dir": str(tmp_path_factory.mktemp("webhook-plans")), "api_port": free_port(),
        "webhooks": {"hooks": {"planned": HOOK}, "callback_hosts": ["127.0.0.1"]},
        "memory": {"enabled": False},
        # Steps queue behind whatever the one chat worker is doing on a loaded machine.
        "celery": {"pickup_timeout_s": CALLBACK_WAIT_S}})
    with api_process(settings) as url:
        yield url


def signed(body: bytes) -> dict[str, str]:
    ts = str(int(time.time()))
    return {"Content-Type": "application/json", "X-Appliance-Timestamp": ts,
            "X-Appliance-Signature": "sha256=" + hmac.new(SECRET.encode(), f"{ts}.".encode() + body,
                                                          hashlib.sha256).hexdigest()}


def test_a_plan_mode_webhook_runs_steps_on_the_queues_and_calls_back_the_composed_answer(
        stack: Stack, plan_hook_api: str, receiver: Receiver) -> None:
    """Claim: a signed call to a `task_mode: plan` hook runs a plan (steps on their queues,
    only the hook's allowed workers) and its signed callback carries the final answer,
    written by the chat worker after the last step finished (the composer's turn).

    References: the callback's signature checked with plain hmac; the worker-side clocks
    (the answer's started_at vs each step's finished_at, both written by the workers).
    Break tried locally: ChatService._traced_turn not planning (`decision.route == "plan"`
    check changed to never match) — red: the record's plan_origin was None, no steps."""
    url, received = receiver.url, receiver.received
    body = json.dumps({"question": "What is 2 + 2?", "callback_url": url}).encode()
    resp = httpx.post(f"{plan_hook_api}/webhooks/planned", content=body, headers=signed(body), timeout=60)
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    headers, raw = received.get(timeout=CALLBACK_WAIT_S)  # blocks until the callback arrives
    ts = headers["x-appliance-timestamp"]
    expected = "sha256=" + hmac.new(SECRET.encode(), f"{ts}.".encode() + raw, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, headers["x-appliance-signature"])
    job = json.loads(raw)
    assert job["id"] == job_id and job["status"] == "succeeded", job
    answer = job["result"]["answer"]
    assert answer.strip()
    with httpx.Client(base_url=plan_hook_api, headers={"Authorization": f"Bearer {stack.token}"},
                      timeout=60) as http:
        task = http.get(f"/tasks/{job['task_id']}").json()
        stored = http.get(f"/conversations/{job['conversation_id']}/messages").json()
    assert task["source"] == "webhook:planned" and task["mode"] == "plan", task
    assert task["route_reason"] == "request mode 'plan'"
    assert task["plan_origin"] in ("model", "repaired", "template"), task["plan"]
    ran = [s for s in task["steps"] if s["state"] == "succeeded"]
    assert ran and all(s["worker"] in HOOK["allowed_workers"] for s in task["steps"]), task["steps"]
    for step in ran:
        assert step["worker_process"].startswith(step["queue"] + "@"), step
    # The answer in the callback is the one the chat worker wrote after every step had finished.
    assert job["result"]["worker"].split("@")[0] in ("chat", "chat_bg"), job["result"]  # webhooks: background lane
    assert job["result"]["started_at"] >= max(s["finished_at"] for s in ran), (job["result"], ran)
    assert stored[-1]["role"] == "assistant" and stored[-1]["content"] == answer
