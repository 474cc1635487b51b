"""A worker process killed in the middle of a task does not lose the task."""

from __future__ import annotations

import json
import os
import signal
import time

from bench.harness.faults import children_of
from core_agent.ops import launcher
from tests.conftest import Stack


def test_sigkilled_worker_task_is_redelivered_and_answered(stack: Stack) -> None:
    parent = launcher.running(stack.settings, "worker-chat")
    assert parent, "the chat worker is not running"
    [child] = children_of(parent)  # concurrency 1: one pool process runs the model

    body = {"model": "core", "stream": True, "max_tokens": 120, "temperature": 0,
            "messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]}
    pieces: list[str] = []
    with stack.http() as http, http.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        conversation_id = resp.headers["x-conversation-id"]
        lines = resp.iter_lines()
        for line in lines:
            if line.startswith("data: {"):
                delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
                if delta:
                    pieces.append(delta)
                    break
        # The model is mid-answer now: kill the process that runs it, without warning.
        os.kill(child, signal.SIGKILL)
        killed_at = time.monotonic()
        for line in lines:
            if line == "data: [DONE]":
                break
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                assert "error" not in chunk, chunk
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    pieces.append(chunk["choices"][0]["delta"]["content"])
    assert time.monotonic() - killed_at < 120
    assert child not in children_of(parent), "the killed pool process should have been replaced"

    with stack.http() as http:
        stored = http.get(f"/conversations/{conversation_id}/messages").json()
    answer = stored[-1]
    assert answer["role"] == "assistant"
    # The answer was produced by a second delivery of the same task, and the client
    # received it without duplicated text: the streamed text equals the stored one.
    assert answer["meta"]["attempt"] == 2
    assert "".join(pieces) == answer["content"]
    assert len(answer["content"]) > 20
