"""The model-based router end to end: `router.use_model` on a real API process (real
HTTP) on the session stack's Redis, Celery chat worker and llama.cpp tiny model.

Two extra API processes share the stack's workers (seconds, not a second stack): one
with `router.use_model: true`, one that also cuts the router's model call to 4 tokens,
so the real model's answer is truncated JSON (garbage). What the model said is read
from the route call's own event stream in Redis (`<task>.route`, written by the chat
worker), independently of how the router read it.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from configs.loader import load_settings
from core_agent.orchestration.plans import turn_call_id
from core_agent.orchestration.router import Router
from tests.conftest import Stack, free_port
from tests.support.api_server import api_process
from tests.support.planning import model_text

# No rule of configs/routes.yaml decides these (checked below): the model does.
QUESTIONS = ["What is 2 + 2?", "Tell me about the history of tea in China."]
DEADLINE_S = 480


def router_api(stack: Stack, data_dir: Path, router: dict) -> Iterator[str]:
    # A cancelled turn's plan call keeps the one chat worker busy until its prompt is read
    # (the cancel is checked between tokens): the next route call must be able to wait it out.
    settings = load_settings(overrides={"data_dir": str(data_dir), "api_port": free_port(),
                                        "memory": {"enabled": False}, "router": router,
                                        "celery": {"pickup_timeout_s": DEADLINE_S}})
    with api_process(settings) as url:
        yield url


@pytest.fixture(scope="module")
def model_router(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from router_api(stack, tmp_path_factory.mktemp("router-model"), {"use_model": True})


@pytest.fixture(scope="module")
def garbage_router(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from router_api(stack, tmp_path_factory.mktemp("router-garbage"),
                          {"use_model": True, "model_max_tokens": 4})


def owner(stack: Stack, url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=180)


def routed(stack: Stack, url: str, question: str) -> dict:
    """Send the question and return its task record as soon as it exists (the route is
    decided then); the rest of the turn is cancelled, the route is all this test needs."""
    cid = f"route-{uuid.uuid4().hex[:10]}"

    def send() -> None:
        with owner(stack, url) as http:
            http.post("/v1/chat/completions", json={"conversation_id": cid, "max_tokens": 1, "temperature": 0,
                                                    "messages": [{"role": "user", "content": question}]})

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + DEADLINE_S
    with owner(stack, url) as http:
        while time.monotonic() < deadline:
            tasks = http.get("/tasks", params={"conversation_id": cid}).json()
            if tasks:
                break
            time.sleep(0.2)
        assert tasks, f"no task recorded for {question!r} within {DEADLINE_S}s"
        http.delete(f"/tasks/{tasks[0]['id']}")  # 409 if it already finished: fine
    sender.join(timeout=DEADLINE_S)
    return tasks[0]


def test_the_model_routes_what_no_rule_decides(stack: Stack, model_router: str) -> None:
    """Claim: with router.use_model, a request no rule decides (the rules alone would
    answer it directly, "no rule matched") is routed by the core model, and the turn
    follows exactly what the model answered.

    Break tried locally: Router._by_model returning "direct" whatever the model said —
    red: the record said 'direct' where the model's own answer on its stream said
    '{ "route": "plan"}'."""
    rules = Router(stack.settings.router)
    routes = {}
    for question in QUESTIONS:
        assert rules.by_rules(question) is None, f"a rule decides {question!r}: pick another question"
        task = routed(stack, model_router, question)
        said = model_text(stack.settings.redis_url, turn_call_id(task["id"], "route"))
        assert said is not None, f"the model was not asked to route {question!r}: {task}"
        assert task["route_reason"] == "core model", task
        assert task["mode"] == json.loads(said)["route"], (question, said, task)
        routes[question] = task["mode"]
    # Otherwise the test could not tell the model's decision from the default (direct).
    assert "plan" in routes.values(), f"the model routed nothing to a plan: {routes}"


def test_garbage_from_the_routing_model_falls_back_to_a_direct_answer(stack: Stack, garbage_router: str) -> None:
    """Claim: when the routing model's answer is not a usable route (here real output cut
    at 4 tokens), the request is still answered, directly, and the record says why,
    quoting what the model said.

    Break tried locally: Router._by_model without its `except` (the model's answer parsed
    unguarded) — red: the turn failed with a 500 'JSONDecodeError'."""
    with owner(stack, garbage_router) as http:
        resp = http.post("/v1/chat/completions", json={
            "max_tokens": 4, "temperature": 0, "messages": [{"role": "user", "content": QUESTIONS[0]}]})
        assert resp.status_code == 200, resp.text
        task = http.get(f"/tasks/{resp.headers['x-task-id']}").json()
    said = model_text(stack.settings.redis_url, turn_call_id(task["id"], "route"))
    assert said is not None, "the model was not asked to route"
    with pytest.raises(ValueError):
        json.loads(said)  # the model's answer really is garbage
    assert task["mode"] == "direct" and task["status"] == "succeeded", task
    assert task["route_reason"].startswith("core model gave no usable route"), task
    assert repr(said)[:20] in task["route_reason"], (said, task["route_reason"])
    assert "x-appliance-plan" not in resp.headers  # routed direct: no plan was attempted
    assert resp.json()["choices"][0]["message"]["content"] is not None
