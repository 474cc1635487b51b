"""Crashes mid-stream on a real stack: the whole chat worker and the API are killed
(SIGKILL) while a real llama.cpp generation streams. The client always hears either the
whole answer or an error and the end marker, the task never stays `running`, and the
answer is stored at most once and equals what was streamed.

A stack of its own (module scope): these tests kill its processes. Its liveness
settings are shorter than the defaults so the faults resolve in seconds.
"""

from __future__ import annotations

import signal
from typing import Iterator

import pytest

from bench.harness import faults
from bench.harness.stack import Stack, running_stack, stack_env

BODY = {"model": "core", "max_tokens": 90, "temperature": 0.7,
        "messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]}


@pytest.fixture(scope="module")
def crash_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = stack_env(tmp_path_factory.mktemp("liveness-data"))
    env.update({"APPLIANCE_CELERY__HEARTBEAT_S": "1", "APPLIANCE_CELERY__HEARTBEAT_TIMEOUT_S": "5",
                "APPLIANCE_CELERY__TAKEOVER_TIMEOUT_S": "25",
                # Not needed here; fewer processes on a busy machine.
                "APPLIANCE_WORKERS__VISION__ENABLED": "false", "APPLIANCE_WORKERS__CODE__ENABLED": "false"})
    with running_stack(env) as stack:
        yield stack


def test_api_killed_mid_stream_the_answer_is_stored_once_after_restart(crash_stack: Stack) -> None:
    seen = faults.stream_chat(crash_stack, BODY,
                              fault=lambda: faults.kill_service(crash_stack, "api", signal.SIGKILL))
    assert seen.broken is not None and not seen.done  # the connection died with the API
    faults.restart(crash_stack, "api")
    task = faults.wait_task_settled(crash_stack, seen.task_id)
    # The worker went on generating while the API was down; the restarted API found the
    # finished answer in the task's stream and stored it, exactly once.
    assert task["status"] == "succeeded", task
    [stored] = faults.stored_answers(crash_stack, seen.conversation_id, seen.task_id)
    assert stored["content"].startswith(seen.text) and stored["meta"]["recovered"] is True
    with crash_stack.http() as http:
        events = http.get(f"/tasks/{seen.task_id}/events", timeout=30)
        assert events.text.rstrip().endswith("data: [DONE]")
        assert '"status": "succeeded"' in events.text
        assert http.delete(f"/tasks/{seen.task_id}").status_code == 409


def test_whole_chat_worker_killed_then_restarted_the_answer_continues(crash_stack: Stack) -> None:
    repair: list[faults.Background] = []

    def kill_and_restart() -> None:
        pid = faults.kill_service(crash_stack, "worker-chat")  # the Celery main process and its pool
        faults.wait_gone(pid)
        repair.append(faults.Background(lambda: faults.restart(crash_stack, "worker-chat")))

    seen = faults.stream_chat(crash_stack, BODY, fault=kill_and_restart)
    repair[0].join()

    assert seen.error is None, seen.error
    assert seen.done, f"the stream ended without the end marker ({seen.broken})"
    assert seen.fault_at is not None and len(seen.text) > seen.before_fault, "nothing came after the kill"
    task = faults.wait_task_settled(crash_stack, seen.task_id)
    assert task["status"] == "succeeded", task
    [stored] = faults.stored_answers(crash_stack, seen.conversation_id, seen.task_id)
    # A second attempt continued the text the client already had: what was streamed is
    # exactly what is stored, with no spliced or repeated part.
    assert stored["meta"]["attempt"] >= 2
    assert stored["content"] == seen.text


def test_whole_chat_worker_killed_and_gone_the_client_gets_an_error_and_the_end(crash_stack: Stack) -> None:
    # The last test of the module: the chat worker stays down.
    seen = faults.stream_chat(crash_stack, BODY, fault=lambda: faults.kill_service(crash_stack, "worker-chat"))
    assert seen.done, f"no end marker ({seen.broken})"
    assert seen.error is not None and seen.error["type"] == "worker_lost", seen.error
    assert "appliance up" in seen.error["message"]  # it says what to do
    task = faults.wait_task_settled(crash_stack, seen.task_id)
    assert task["status"] == "failed" and "heartbeat" in task["error"], task
    assert faults.stored_answers(crash_stack, seen.conversation_id, seen.task_id) == []


