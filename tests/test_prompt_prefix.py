"""Consecutive turns of one conversation share their prompt prefix (issue 17), observed
through a real vLLM server's own prefix-cache counters, not through our code.

A real stack (chat and rag workers, memory recall on) answers with the session's vLLM
server. Turn 2 sends [system, turn 1, notes, question 2]; turn 3 must start with exactly
turn 2's system prompt and history, so vLLM serves at least those tokens (whole cache
blocks of them) from its prefix cache. With the recalled notes first, as before, turn 3
started with notes that differ from turn 2's, and vLLM could reuse nothing.
"""

from __future__ import annotations

import re
import uuid
from typing import Iterator

import httpx
import pytest

from configs.contracts.tasks import ChatMessage, FunctionCall, TaskResult, ToolCall
from configs.schema import QUEUE_NAMES
from core_agent.orchestration.composer import answer_messages
from core_agent.orchestration.plan_runner import StepOutcome
from core_agent.orchestration.plans import Plan, PlanStep
from core_agent.orchestration.prompt_layout import history_window, with_recalled
from tests.conftest import Stack, running_stack, stack_env
from tests.support.vllm_server import SERVED_NAME, VllmServer, vllm_server  # noqa: F401  (fixture)

NOTES = {
    "garden.md": "# Garden\n\nThe tomato beds get water every second morning. The compost heap is turned on "
                 "Sundays. Basil grows next to the tomatoes.\n",
    "car.md": "# Car\n\nThe car needs an oil change every 15,000 kilometres; the last one was at 82,400 "
              "kilometres. Winter tyres go on in November.\n",
}
# Long enough to fill several of vLLM's cache blocks (128 tokens on CPU), so a reused
# prefix shows up as hits whatever the block size.
SYSTEM = ("You are the owner's assistant. " + " ".join(
    f"Rule {i}: answer in plain words, keep answers short, and say so when you do not know." for i in range(1, 31)))


@pytest.fixture(scope="module")
def prefix_stack(vllm_server: VllmServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:  # noqa: F811
    overrides = stack_env(tmp_path_factory.mktemp("prefix-stack"))
    overrides |= {"APPLIANCE_MODELS__CORE__BACKEND": "openai",
                  "APPLIANCE_MODELS__CORE__BASE_URL": vllm_server.base_url,
                  "APPLIANCE_MODELS__CORE__SERVED_MODEL": SERVED_NAME,
                  "APPLIANCE_MEMORY__ENABLED": "true"}
    overrides |= {f"APPLIANCE_WORKERS__{q.upper()}__ENABLED": "false" for q in QUEUE_NAMES if q not in ("chat", "rag")}
    with running_stack(overrides) as running:
        yield running


def counter(server: VllmServer, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:_total)?(?:{{[^}}]*}})? ([0-9.eE+-]+)$",
                                            text, re.MULTILINE))


def block_size(server: VllmServer) -> int:
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    found = re.search(r'^vllm:cache_config_info\{[^}]*block_size="(\d+)"', text, re.MULTILINE)
    assert found, "vLLM's /metrics has no cache_config_info with a block_size"
    return int(found.group(1))


def rendered_tokens(server: VllmServer, messages: list[dict], generation_prompt: bool = False) -> int:
    """How many tokens vLLM's chat template makes of these messages (its /tokenize)."""
    resp = httpx.post(f"{server.url}/tokenize", timeout=60, json={
        "model": SERVED_NAME, "messages": messages, "add_generation_prompt": generation_prompt})
    resp.raise_for_status()
    return int(resp.json()["count"])


def ask(stack: Stack, cid: str, question: str) -> dict:
    with stack.http(timeout=300) as http:
        resp = http.post("/v1/chat/completions", json={
            "model": "core", "mode": "direct", "conversation_id": cid, "max_tokens": 32, "temperature": 0,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]})
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_the_next_turn_starts_with_the_previous_turns_system_prompt_and_history(
        prefix_stack: Stack, vllm_server: VllmServer) -> None:  # noqa: F811
    with prefix_stack.http(timeout=300) as http:
        files = [("files", (name, text.encode(), "text/markdown")) for name, text in NOTES.items()]
        assert http.post("/documents", files=files).status_code == 200
    cid = f"prefix-{uuid.uuid4().hex[:10]}"
    q1, q2, q3 = ("Hello, I have a few questions today.", "How often do the tomato beds get water?",
                  "When is the next oil change for the car due?")
    a1 = ask(prefix_stack, cid, q1)["choices"][0]["message"]["content"]
    second = ask(prefix_stack, cid, q2)
    a2 = second["choices"][0]["message"]["content"]

    queries, hits = counter(vllm_server, "vllm:prefix_cache_queries"), counter(vllm_server, "vllm:prefix_cache_hits")
    third = ask(prefix_stack, cid, q3)
    turn3_hits = counter(vllm_server, "vllm:prefix_cache_hits") - hits
    assert counter(vllm_server, "vllm:prefix_cache_queries") - queries == third["usage"]["prompt_tokens"]

    # Memory was recalled, and differently for the two questions (the notes change per turn).
    assert second["sources"] and third["sources"]
    assert second["sources"][0]["source"] != third["sources"][0]["source"], (second["sources"], third["sources"])
    history = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q1},
               {"role": "assistant", "content": a1}]
    without_notes = rendered_tokens(vllm_server, history + [
        {"role": "user", "content": q2}, {"role": "assistant", "content": a2}, {"role": "user", "content": q3}],
        generation_prompt=True)
    assert third["usage"]["prompt_tokens"] > without_notes, "turn 3's prompt carries no recalled notes"

    # Turn 2's system prompt and history (system, q1, a1) start turn 3's prompt: vLLM served
    # every whole cache block of them from its prefix cache.
    prefix = rendered_tokens(vllm_server, history)
    block = block_size(vllm_server)
    assert prefix >= 2 * block, "the test's system prompt must span several cache blocks"
    assert turn3_hits >= (prefix // block) * block, (turn3_hits, prefix, block)


# --- the layout itself (pure functions; the test above checks it on the wire) ----------------

def _m(role: str, content: str | None = None, **kw) -> ChatMessage:
    return ChatMessage(role=role, content=content, **kw)  # type: ignore[arg-type]


NOTE = _m("system", "Memory: ...")


def test_recalled_notes_go_right_before_the_question_after_system_prompt_and_history() -> None:
    prompt = [_m("system", "S"), _m("user", "q1"), _m("assistant", "a1"), _m("user", "q2")]
    assert with_recalled(prompt, [NOTE]) == prompt[:3] + [NOTE, prompt[3]]
    assert with_recalled(prompt, [NOTE], "first") == [NOTE] + prompt  # the old layout, for the bench
    assert with_recalled(prompt, []) == prompt


def test_in_a_tool_loop_the_notes_stay_before_the_loops_question() -> None:
    """Each request of a tool-call loop ends with tool results; the notes stay in front of
    the question, so the loop's requests share everything before them."""
    call = ToolCall(id="c1", function=FunctionCall(name="f", arguments="{}"))
    first = [_m("system", "S"), _m("user", "q")]
    loop = first + [_m("assistant", None, tool_calls=[call]), _m("tool", "42", tool_call_id="c1")]
    sent_first, sent_loop = with_recalled(first, [NOTE]), with_recalled(loop, [NOTE])
    assert sent_loop[:len(sent_first)] == sent_first


def test_a_planned_answer_starts_with_the_same_system_prompt_and_history_as_a_direct_one() -> None:
    prompt = [_m("system", "S"), _m("user", "q1"), _m("assistant", "a1"), _m("user", "q2")]
    step = PlanStep(id="s1", worker="chat", instruction="look it up")
    outcomes = {"s1": StepOutcome(step=step, state="succeeded", result=TaskResult(text="found", model="core"))}
    composed = answer_messages(prompt, "q2", Plan(steps=[step]), outcomes)
    assert composed[:3] == prompt[:3]
    assert composed[-1].role == "user" and composed[-1].text().startswith("q2") and "found" in composed[-1].text()


def test_a_long_conversations_history_window_moves_in_steps_and_keeps_the_newest_messages() -> None:
    keep = 20
    starts = []
    for stored in range(0, 80, 2):            # two messages per turn
        conversation = list(range(stored))
        window = history_window(conversation, keep)
        assert window == conversation[len(conversation) - len(window):]   # a suffix: the newest
        assert len(window) >= min(keep, stored) and len(window) < keep + keep // 2
        starts.append(window[0] if window else None)
    moves = sum(1 for a, b in zip(starts[1:], starts[2:]) if a != b)
    # 40 turns: the start moves once per keep // 4 = 5 turns, not every turn past the first 10.
    assert moves <= 40 // 5, starts
    assert history_window(list(range(5)), 0) == []
