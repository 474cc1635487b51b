"""Redis goes away and comes back (issue 16): the stack's real redis-server, the one the
launcher started and recorded, is stopped and restarted between requests.

While it is down, every route that needs it answers 503 `redis_unavailable` with the
reason (it used to be a 500 `internal`, and a 19 s hang then a 500 on the memory
routes), and a refused chat leaves no half-written conversation. The first request
after it returns works (it used to fail on stale pooled connections and on Celery's
result subscription, which gives up for good after a few reconnects).
"""

from __future__ import annotations

import time

import httpx
import pytest

from core_agent.ops import launcher

CHEAP_CHAT = {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 2, "mode": "direct"}

# Routes that need Redis (the queue or the task streams), with a valid request each.
NEEDS_REDIS = [
    ("POST", "/v1/chat/completions", CHEAP_CHAT),
    ("POST", "/v1/chat/completions", {**CHEAP_CHAT, "stream": True}),
    ("POST", "/v1/chat/completions", {**CHEAP_CHAT, "mode": "auto", "conversation_id": "redis-down-thread"}),
    ("POST", "/v1/responses", {"input": "Say hi", "max_output_tokens": 2, "mode": "direct"}),
    ("POST", "/v1/embeddings", {"model": "minilm", "input": "kiwi"}),
    ("POST", "/memory/search", {"query": "kiwi"}),
    ("GET", "/memory/status", None),
    ("GET", "/documents", None),
    ("GET", "/metrics", None),
]


def _redis_down(stack) -> None:
    assert launcher.stop_service(stack.settings, "redis"), "the stack's redis-server was not running"
    assert not launcher.redis_ok(stack.settings)


def _redis_up(stack) -> None:
    launcher.up(stack.settings, only={"redis"}, progress=lambda line: None)


def _ready_within(stack, seconds: float) -> httpx.Response:
    """/ready once the workers are back on the restarted Redis (they reconnect themselves)."""
    deadline = time.monotonic() + seconds
    with stack.http() as client:
        while True:
            response = client.get("/ready")
            if response.status_code == 200 or time.monotonic() > deadline:
                return response
            time.sleep(1)


@pytest.fixture
def a_task_id(stack) -> str:
    """A task whose events exist (asked before Redis goes down)."""
    with stack.http() as client:
        tasks = client.get("/tasks").json()
        if tasks:
            return tasks[0]["id"]
        response = client.post("/v1/chat/completions", json=CHEAP_CHAT)
        assert response.status_code == 200, response.text
        return response.json()["task_id"]


@pytest.fixture
def redis_restarted(stack):
    """Stop the stack's Redis for the test; always restart it (other tests share it)."""
    _redis_down(stack)
    try:
        yield
    finally:
        if not launcher.redis_ok(stack.settings):
            _redis_up(stack)
        assert _ready_within(stack, 120).status_code == 200


def test_every_route_that_needs_redis_answers_503_with_the_reason(stack, a_task_id, redis_restarted):
    with stack.http(timeout=60) as client:
        conversations_before = len(client.get("/conversations", params={"limit": 1000}).json())
        for method, path, body in NEEDS_REDIS:
            response = client.request(method, path, json=body)
            assert response.status_code == 503, f"{method} {path}: {response.status_code} {response.text[:300]}"
            error = response.json()["error"]
            assert error["code"] == "redis_unavailable", f"{method} {path}: {error}"
            assert "Redis" in error["message"] and "appliance up" in error["message"], error
        events = client.get(f"/tasks/{a_task_id}/events")  # its record is in the API's own files
        assert events.status_code == 503 and events.json()["error"]["code"] == "redis_unavailable", events.text
        ready = client.get("/ready")
        assert ready.status_code == 503 and not ready.json()["checks"]["redis"]["ok"]
        # Routes that need only the API's own files keep working.
        assert client.get("/v1/models").status_code == 200
        assert client.get("/health").status_code == 200
        # The refused chats stored nothing: no new conversation, no orphan question.
        assert len(client.get("/conversations", params={"limit": 1000}).json()) == conversations_before
        assert client.get("/conversations/redis-down-thread").status_code == 404


def test_the_first_request_after_a_redis_restart_works(stack):
    with stack.http() as client:
        assert client.post("/v1/chat/completions", json=CHEAP_CHAT).status_code == 200  # pools warm
        _redis_down(stack)
        _redis_up(stack)
        first = client.post("/v1/chat/completions", json=CHEAP_CHAT)
        assert first.status_code == 200, first.text
        assert first.json()["choices"][0]["message"]["content"]
        streamed = client.post("/v1/chat/completions", json={**CHEAP_CHAT, "stream": True})
        assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]"), streamed.text
        assert client.post("/v1/embeddings", json={"model": "minilm", "input": "kiwi"}).status_code == 200
    assert _ready_within(stack, 120).status_code == 200
