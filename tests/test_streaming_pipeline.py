"""The streaming hot path at GPU rates (issue 17): the synthetic_rate token source is for
benches and tests only, coalescing keeps the text exact and in order without holding the
first token, and cancelling mid-stream still stops the worker.

The stack here runs only Redis, the chat worker (threads, so the streams below do not
queue behind each other) and the API, with two made-up-token models."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Iterator

import pytest
import redis

from bench.harness.stack import Stack, running_stack, stack_env
from configs.contracts.tasks import StreamEvent, stream_key
from configs.loader import ConfigError, load_settings
from workers.backends.synthetic_rate import synthetic_token, synthetic_tokens
from workers.token_coalescer import TokenCoalescer

FAST = "synth"            # 1000 tokens/s: far faster than the 10 ms flush interval
PAUSED = "synth_pause"    # token 1, then a 5 s pause, then the rest
PAUSE_S = 5.0


@pytest.fixture(scope="module")
def synth_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {**stack_env(tmp_path_factory.mktemp("streaming-data")),
           "APPLIANCE_ALLOW_SYNTHETIC_BACKENDS": "true",
           "APPLIANCE_DEFAULT_MODEL": FAST,
           "APPLIANCE_MEMORY__ENABLED": "false",
           "APPLIANCE_WORKERS__CHAT__POOL": "threads",
           "APPLIANCE_WORKERS__CHAT__CONCURRENCY": "4",
           f"APPLIANCE_MODELS__{FAST.upper()}__BACKEND": "synthetic_rate",
           f"APPLIANCE_MODELS__{FAST.upper()}__SYNTHETIC_TOKENS_PER_S": "1000",
           f"APPLIANCE_MODELS__{FAST.upper()}__MAX_TOKENS": "8192",
           f"APPLIANCE_MODELS__{PAUSED.upper()}__BACKEND": "synthetic_rate",
           f"APPLIANCE_MODELS__{PAUSED.upper()}__SYNTHETIC_PAUSE_AFTER_FIRST_S": str(PAUSE_S)}
    with running_stack(env, only={"redis", "worker-chat", "api"}) as stack:
        yield stack


def _events(stack: Stack, task_id: str) -> list[StreamEvent]:
    client = redis.Redis.from_url(stack.settings.redis_url)
    try:
        return [StreamEvent.model_validate_json(f[b"e"]) for _, f in client.xrange(stream_key(task_id))]
    finally:
        client.close()


def test_synthetic_backend_is_refused_in_normal_settings() -> None:
    environ = {"APPLIANCE_MODELS__BENCH__BACKEND": "synthetic_rate"}
    with pytest.raises(ConfigError) as refused:
        load_settings(environ=environ)
    message = str(refused.value)
    assert "'models.bench.backend' (from environment APPLIANCE_MODELS__BENCH__BACKEND)" in message
    assert "'synthetic_rate'" in message and "allow_synthetic_backends" in message
    allowed = load_settings(environ={**environ, "APPLIANCE_ALLOW_SYNTHETIC_BACKENDS": "true"})
    assert allowed.models["bench"].backend == "synthetic_rate"
    assert load_settings(environ={}).allow_synthetic_backends is False  # the shipped configs


def test_coalescer_keeps_order_and_kinds_and_flushes_a_stalled_tail() -> None:
    sent: list[tuple[str, str, int]] = []
    pieces = TokenCoalescer(lambda kind, text, n: sent.append((kind, text, n)), interval_s=0.05)

    def wait_until_sent(count: int) -> None:  # sends happen in the coalescer's thread
        deadline = time.monotonic() + 10
        while len(sent) < count and time.monotonic() < deadline:
            time.sleep(0.005)

    pieces.add("reasoning", "think ")
    wait_until_sent(1)
    assert sent == [("reasoning", "think ", 1)]       # the first piece goes out at once
    pieces.add("reasoning", "more ")
    pieces.add("token", "a")                           # a new kind sends the buffered one first,
    pieces.add("token", "b")                           # and its first piece at once too
    pieces.add("token", "c")
    wait_until_sent(4)                                 # nothing else comes: the timer sends the tail
    # Each event says how many deltas it joins (a continuation counts max_tokens with it).
    assert sent == [("reasoning", "think ", 1), ("reasoning", "more ", 1), ("token", "a", 1), ("token", "bc", 2)]


def test_many_tokens_arrive_exactly_and_in_fewer_events(synth_stack: Stack) -> None:
    count = 3000
    stream = synth_stack.openai().chat.completions.create(
        model=FAST, stream=True, max_tokens=count, extra_body={"mode": "direct"},
        messages=[{"role": "user", "content": "Stream many tokens."}])
    chunks = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert "".join(chunks) == "".join(synthetic_tokens(count))
    # The event rate no longer equals the token rate: pieces share events and chunks.
    task_id = stream.response.headers["x-task-id"]
    token_events = [e for e in _events(synth_stack, task_id) if e.type == "token"]
    assert "".join(e.text for e in token_events) == "".join(synthetic_tokens(count))
    assert len(token_events) < count / 2, len(token_events)
    assert len(chunks) < count / 2, len(chunks)


def test_first_token_is_not_held_back_until_the_next_one(synth_stack: Stack) -> None:
    body = {"model": PAUSED, "stream": True, "max_tokens": 20, "mode": "direct",
            "messages": [{"role": "user", "content": "One, pause, the rest."}]}
    arrivals: list[tuple[float, str]] = []
    with synth_stack.http() as http, http.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                    arrivals.append((time.monotonic(), chunk["choices"][0]["delta"]["content"]))
    assert arrivals[0][1] == synthetic_token(0)       # alone: not coalesced with what follows
    assert "".join(text for _, text in arrivals) == "".join(synthetic_tokens(20))
    # Token 1 reached the client while the source was still pausing, not with token 2.
    assert arrivals[1][0] - arrivals[0][0] > PAUSE_S / 2, arrivals[:2]


def test_cancelling_mid_stream_stops_the_worker(synth_stack: Stack) -> None:
    count = 30_000  # 30 s of tokens at 1000/s: only a working cancel ends it early
    body = {"model": FAST, "stream": True, "max_tokens": count, "mode": "direct",
            "messages": [{"role": "user", "content": "Stream until cancelled."}]}
    received: list[str] = []
    with synth_stack.http() as http, http.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        task_id = resp.headers["x-task-id"]
        cancelled: dict = {}
        lines = resp.iter_lines()
        for line in lines:
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                    received.append(chunk["choices"][0]["delta"]["content"])
                if len(received) >= 20 and not cancelled:
                    def cancel() -> None:
                        with synth_stack.http() as other:
                            cancelled["resp"] = other.delete(f"/tasks/{task_id}")
                    canceller = threading.Thread(target=cancel)
                    canceller.start()
                    cancelled["started"] = True
                if "error" in chunk:
                    assert chunk["error"]["type"] == "cancelled", chunk
        canceller.join(timeout=60)
    assert cancelled["resp"].status_code == 200 and cancelled["resp"].json()["status"] == "cancelled"
    full = "".join(synthetic_tokens(count))
    assert full.startswith("".join(received))
    # The worker saw the cancel key and stopped: its stream ends with a 'cancelled' error.
    deadline, events = time.monotonic() + 60, []
    while time.monotonic() < deadline:
        events = _events(synth_stack, task_id)
        if events and events[-1].type == "error":
            break
        time.sleep(0.2)
    assert events[-1].type == "error" and events[-1].error.code == "cancelled", events[-1]
    sent = "".join(e.text for e in events if e.type == "token")
    assert full.startswith(sent) and len(sent) < len(full) // 2


def test_api_sends_queued_pieces_as_one_and_keeps_kinds_apart() -> None:
    from core_agent.orchestration.chat_service import Thought
    from core_agent.orchestration.piece_batching import take_queued

    queue: asyncio.Queue = asyncio.Queue()
    for piece in ["b", "c", Thought("t1"), Thought("t2"), "d", None]:
        queue.put_nowait(piece)
    merged, held = take_queued(queue, "a")
    assert (merged, held) == ("abc", [Thought("t1")])
    merged, held = take_queued(queue, held[0])
    assert (merged, held) == (Thought("t1t2"), ["d"])
    merged, held = take_queued(queue, held[0])
    assert (merged, held) == ("d", [None])            # the end marker is handed back, in order
