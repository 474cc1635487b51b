"""A webhook job whose chat turn finished while the API was down (SIGKILL mid-generation,
then a restart) ends as its turn does: TaskRecovery stores the answer the worker
finished, and the job succeeds with that same answer and sends its signed callback
(core_agent/webhooks/recovery.py), instead of failing as "interrupted".

A stack of its own (module scope): the test kills its API process.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import time
from typing import Iterator

import httpx
import pytest
import redis

from bench.harness import faults
from bench.harness.stack import Stack, running_stack, stack_env
from configs.contracts.tasks import stream_key
from tests.test_webhooks import Receiver, _signature_ok, receiver  # noqa: F401 (the fixture)

SECRET = "recovery-hook-secret-0123456789"
STORY = "Write a long story about a lighthouse keeper and a storm."


@pytest.fixture(scope="module")
def hook_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = stack_env(tmp_path_factory.mktemp("webhook-recovery-data"))
    env.update({"APPLIANCE_WEBHOOKS__HOOKS__LATER__SECRET": SECRET,
                "APPLIANCE_WEBHOOKS__HOOKS__LATER__MODE": "async",
                "APPLIANCE_WEBHOOKS__HOOKS__LATER__PROMPT_TEMPLATE": "Story: {{ question }}",
                "APPLIANCE_WEBHOOKS__HOOKS__LATER__MAX_TOKENS": "90",
                "APPLIANCE_WEBHOOKS__CALLBACK_HOSTS": '["127.0.0.1"]',
                "APPLIANCE_WEBHOOKS__CALLBACK_BACKOFF_S": "0.2",
                "APPLIANCE_WORKERS__VISION__ENABLED": "false", "APPLIANCE_WORKERS__CODE__ENABLED": "false"})
    with running_stack(env) as stack:
        yield stack


def _signed_post(stack: Stack, body: dict) -> httpx.Response:
    data = json.dumps(body).encode()
    ts = str(int(time.time()))
    signature = "sha256=" + hmac.new(SECRET.encode(), f"{ts}.".encode() + data, hashlib.sha256).hexdigest()
    return httpx.post(f"{stack.url}/webhooks/later", content=data, timeout=60, headers={
        "Content-Type": "application/json", "X-Appliance-Timestamp": ts, "X-Appliance-Signature": signature})


def _job_when(stack: Stack, job_id: str, done: callable, timeout_s: float = 180) -> dict:
    return faults.poll_until(stack, f"/jobs/{job_id}", done, timeout_s)


def _generating(stack: Stack, task_id: str, timeout_s: float = 120) -> None:
    """Until the worker has streamed text of the turn's answer (the fault lands mid-generation)."""
    client = redis.Redis.from_url(stack.settings.redis_url)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if any(b'"token"' in fields[b"e"] for _, fields in client.xrange(stream_key(task_id))):
                return
            time.sleep(0.05)
    finally:
        client.close()
    raise AssertionError(f"the answer of task {task_id} did not start within {timeout_s:g}s")


def test_a_job_whose_answer_finished_while_the_api_was_down_succeeds_with_it(
        hook_stack: Stack, receiver: Receiver) -> None:  # noqa: F811 (the fixture)
    accepted = _signed_post(hook_stack, {"question": STORY, "callback_url": receiver.url})
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    running = _job_when(hook_stack, job_id, lambda j: j["status"] == "running" and j.get("task_id"))
    _generating(hook_stack, running["task_id"])

    faults.kill_service(hook_stack, "api")  # SIGKILL while the worker streams the answer
    faults.restart(hook_stack, "api")

    job = _job_when(hook_stack, job_id, lambda j: j["status"] in ("succeeded", "failed"))
    assert job["status"] == "succeeded", job
    task = faults.wait_task_settled(hook_stack, running["task_id"])
    assert task["status"] == "succeeded", task
    [stored] = faults.stored_answers(hook_stack, job["conversation_id"], running["task_id"])
    assert stored["meta"]["recovered"] is True  # the answer came through the restart's recovery
    assert job["answer"] == stored["content"] and job["answer"]
    # The callback carries the same answer, signed.
    headers, body = receiver.received.get(timeout=60)
    assert _signature_ok(SECRET, headers, body)
    sent = json.loads(body)
    assert sent["id"] == job_id and sent["status"] == "succeeded" and sent["answer"] == stored["content"]
    assert _job_when(hook_stack, job_id, lambda j: j["callback"]["status"] == "delivered")


def test_a_job_whose_answer_never_started_fails_with_the_reason_and_its_callback_says_so(
        hook_stack: Stack, receiver: Receiver) -> None:  # noqa: F811 (the fixture)
    # The background chat worker (webhooks answer in the chat_bg lane) is alive but starts
    # nothing (its pool process stopped): the job's turn is sent, and the API dies before
    # any answer exists.
    [child] = faults.children_of(faults.service_pid(hook_stack, "worker-chat_bg"))
    os.kill(child, signal.SIGSTOP)
    try:
        accepted = _signed_post(hook_stack, {"question": STORY, "callback_url": receiver.url})
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["id"]
        running = _job_when(hook_stack, job_id, lambda j: j["status"] == "running" and j.get("task_id"))
        faults.kill_service(hook_stack, "api")
        faults.restart(hook_stack, "api")
        job = _job_when(hook_stack, job_id, lambda j: j["status"] in ("succeeded", "failed"))
    finally:
        os.kill(child, signal.SIGCONT)
    assert job["status"] == "failed" and job["error"]["code"] == "interrupted", job
    assert "before its answer was started" in job["error"]["message"], job["error"]
    headers, body = receiver.received.get(timeout=60)
    assert _signature_ok(SECRET, headers, body)
    sent = json.loads(body)
    assert sent["id"] == job_id and sent["status"] == "failed" and sent["error"] == job["error"]
    # The turn that was still queued does not run later for nobody: once the worker is
    # free, a new job is answered and the old turn never streamed a token.
    again = _signed_post(hook_stack, {"question": "Name a fruit.", "callback_url": receiver.url})
    assert _job_when(hook_stack, again.json()["id"], lambda j: j["status"] == "succeeded")
    client = redis.Redis.from_url(hook_stack.settings.redis_url)
    try:
        assert not any(b'"token"' in f[b"e"] for _, f in client.xrange(stream_key(running["task_id"])))
    finally:
        client.close()
