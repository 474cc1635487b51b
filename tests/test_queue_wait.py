"""Waiting behind busy workers is not "no worker" (issue 16, "nobody left hanging").

A real stack whose chat worker is alive but busy: its (single) pool process is stopped
with SIGSTOP, so the worker's main process keeps saying it is present (workers/
worker_presence.py) while nothing it holds gets started, exactly what a worker busy
with a long generation looks like to a request queued behind it. pickup_timeout_s is
3 s here and queue_wait_timeout_s 20 s.

- requests queued past pickup_timeout_s keep waiting and are answered once the worker
  moves on; a streaming one is told it is queued (SSE comment lines, which the official
  `openai` client ignores);
- past queue_wait_timeout_s: 503 `queue_busy` with Retry-After, and the dropped task
  never runs later;
- a streaming client that leaves while queued cancels its task;
- with no worker alive on the queue the 503 `no_worker` still comes.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from typing import Iterator

import httpx
import pytest

from bench.harness import faults
from bench.harness.stack import Stack, running_stack, stack_env

PICKUP_S = 3
QUEUE_WAIT_S = 20
BODY = {"model": "core", "max_tokens": 8, "temperature": 0.0, "mode": "direct",
        "messages": [{"role": "user", "content": "Name a fruit."}]}


@pytest.fixture(scope="module")
def busy_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = stack_env(tmp_path_factory.mktemp("queue-wait-data"))
    env.update({"APPLIANCE_CELERY__PICKUP_TIMEOUT_S": str(PICKUP_S),
                "APPLIANCE_CELERY__QUEUE_WAIT_TIMEOUT_S": str(QUEUE_WAIT_S),
                "APPLIANCE_CELERY__HEARTBEAT_S": "1", "APPLIANCE_CELERY__HEARTBEAT_TIMEOUT_S": "5",
                "APPLIANCE_MEMORY__ENABLED": "false",
                "APPLIANCE_WORKERS__VISION__ENABLED": "false", "APPLIANCE_WORKERS__CODE__ENABLED": "false"})
    with running_stack(env) as stack:
        with stack.http() as http:  # warm: the model is loaded before the worker is held
            assert http.post("/v1/chat/completions", json=BODY).status_code == 200
        yield stack


@contextmanager
def worker_held(stack: Stack) -> Iterator[None]:
    """The chat worker stays alive (its main process) but starts nothing until the end."""
    [child] = faults.children_of(faults.service_pid(stack, "worker-chat"))
    os.kill(child, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(child, signal.SIGCONT)


def read_until_queued(lines: Iterator[str], timeout_s: float = 120) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    for line in lines:
        seen.append(line)
        if line.startswith(": queued"):
            return seen
        assert time.monotonic() < deadline, f"no queued comment within {timeout_s}s: {seen}"
    raise AssertionError(f"the stream ended without saying it was queued: {seen}")


def stored_answers(stack: Stack, conversation_id: str) -> list[dict]:
    with stack.http() as http:
        messages = http.get(f"/conversations/{conversation_id}/messages").json()
    return [m for m in messages if m["role"] == "assistant"]


def test_requests_behind_a_busy_worker_wait_past_the_pickup_timeout_and_are_answered(busy_stack: Stack) -> None:
    def plain_chat() -> httpx.Response:
        with busy_stack.http(timeout=300) as own:
            return own.post("/v1/chat/completions", json=BODY)

    def openai_stream() -> str:
        chunks = busy_stack.openai().chat.completions.create(
            model=BODY["model"], messages=BODY["messages"], max_tokens=BODY["max_tokens"], stream=True,
            extra_body={"mode": "direct"})
        return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)

    with busy_stack.http(timeout=300) as http:
        with worker_held(busy_stack):
            plain = faults.Background(plain_chat)
            via_openai = faults.Background(openai_stream)
            raw = http.stream("POST", "/v1/chat/completions", json={**BODY, "stream": True})
            response = raw.__enter__()
            lines = response.iter_lines()
            # The stream opened (200) and says it waits in the queue: past the pickup
            # timeout, with the worker alive, nobody got "no worker".
            before = read_until_queued(lines)
            assert response.status_code == 200
            assert plain.result is None and plain.error is None  # sent first, still waiting, no 503
        # The worker moves on: every queued request is answered.
        rest = [line for line in lines if line]
        raw.__exit__(None, None, None)
    assert rest[-1] == "data: [DONE]" and not any('"error"' in line for line in rest), rest
    assert any('"content"' in line for line in before + rest)
    answer = plain.join()
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"]
    assert [m["task_id"] for m in stored_answers(busy_stack, answer.json()["conversation_id"])] == \
        [answer.json()["task_id"]]
    assert via_openai.join()  # the official client read past the comment lines


def test_a_request_over_the_queue_wait_limit_gets_a_busy_503_with_retry_after(busy_stack: Stack) -> None:
    with busy_stack.http(timeout=300) as http:
        with worker_held(busy_stack):
            response = http.post("/v1/chat/completions", json=BODY)
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "queue_busy", error
        assert "busy" in error["message"] and "no worker" not in error["message"]
        assert int(response.headers["Retry-After"]) >= 1
        task_id, conversation_id = response.headers["X-Task-Id"], response.headers["X-Conversation-Id"]
        # The dropped task does not run once the worker is free: the next request is
        # answered and the dropped one never gets an answer stored.
        assert http.post("/v1/chat/completions", json=BODY).status_code == 200
        task = faults.wait_task_settled(busy_stack, task_id)
        assert task["status"] == "failed" and "queue_wait_timeout_s" in task["error"], task
        events = http.get(f"/tasks/{task_id}/events", timeout=30).text
        assert '"type": "token"' not in events and '"type":"token"' not in events
    answers = [m for m in stored_answers(busy_stack, conversation_id) if m["task_id"] == task_id] \
        if conversation_id else []
    assert answers == []


def test_a_streaming_client_leaving_while_queued_cancels_its_task(busy_stack: Stack) -> None:
    with busy_stack.http(timeout=300) as http:
        with worker_held(busy_stack):
            with http.stream("POST", "/v1/chat/completions", json={**BODY, "stream": True}) as response:
                read_until_queued(response.iter_lines())
                task_id = response.headers["X-Task-Id"]
            # The connection is closed: the turn is cancelled while still queued.
            task = faults.wait_task_settled(busy_stack, task_id)
        assert task["status"] == "cancelled", task
        assert http.post("/v1/chat/completions", json=BODY).status_code == 200  # the worker is free again
        events = http.get(f"/tasks/{task_id}/events", timeout=30).text
        assert '"type": "token"' not in events and '"type":"token"' not in events


def test_a_plain_client_leaving_while_queued_cancels_its_task(busy_stack: Stack) -> None:
    with busy_stack.http(timeout=300) as http:
        with worker_held(busy_stack):
            with pytest.raises(httpx.ReadTimeout):  # gives up once it is queued, and hangs up
                http.post("/v1/chat/completions", json=BODY, timeout=PICKUP_S + 5)
            [task] = http.get("/tasks", params={"limit": 1}).json()
            settled = faults.wait_task_settled(busy_stack, task["id"])
        assert settled["status"] == "cancelled", settled
        assert http.post("/v1/chat/completions", json=BODY).status_code == 200  # the worker is free again
        events = http.get(f"/tasks/{task['id']}/events", timeout=30).text
        assert '"type": "token"' not in events and '"type":"token"' not in events


def test_with_no_worker_alive_on_the_queue_the_503_says_so(busy_stack: Stack) -> None:
    # The last test of the module: the chat worker stays down. A clean stop withdraws
    # its presence at once.
    pid = faults.kill_service(busy_stack, "worker-chat", signal.SIGTERM)
    faults.wait_gone(pid, timeout_s=60)
    with busy_stack.http(timeout=300) as http:
        response = http.post("/v1/chat/completions", json=BODY)
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "no_worker" and "appliance up" in error["message"], error
    assert "Retry-After" not in response.headers


def test_a_queue_wait_limit_shorter_than_the_pickup_timeout_is_refused_naming_both_keys() -> None:
    from pydantic import ValidationError

    from configs.schema import CeleryConfig
    with pytest.raises(ValidationError) as refused:
        CeleryConfig(pickup_timeout_s=60, queue_wait_timeout_s=30)
    assert "celery.queue_wait_timeout_s" in str(refused.value) and "celery.pickup_timeout_s" in str(refused.value)
