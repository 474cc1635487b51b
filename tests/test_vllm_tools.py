"""Tool calling and logprobs on the production path: the `openai` chat backend against
vLLM's CPU build (tiny model), started with the core server's flags
(--enable-auto-tool-choice --tool-call-parser hermes).

The backend must pass tools through and bring the calls back whole from the streamed
fragments. vLLM 0.32's CPU build does not hold the tiny model to the parameters schema
for "required" (it answered `"Paris"` for an object schema), so these tests also check
that the core's validation (core_agent/orchestration/tool_calls.py) never lets such a
call through: a valid call passes, an invalid one fails the turn with 502.
"""

from __future__ import annotations

import json
from typing import Iterator

import jsonschema
import pytest

from configs.contracts.tasks import ChatMessage, FunctionCall, GenerationParams, ToolCall
from configs.schema import ChatModelConfig, Settings
from tests.support.vllm_server import SERVED_NAME, VllmServer, vllm_server  # noqa: F401
from core_agent.orchestration import tool_calls
from configs.contracts.errors import ErrorInfo
from configs.contracts.tasks import TaskResult
from workers.backends import registry
from workers.backends.openai_chat import OpenAICompatibleChat

pytestmark = pytest.mark.vllm

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}},
                   "required": ["city"], "additionalProperties": False}}}
ADD = {"type": "function", "function": {
    "name": "add", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                                  "required": ["a", "b"], "additionalProperties": False}}}
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, ADD)}
QUESTION = [ChatMessage(role="user", content="What is the weather in Paris?")]


@pytest.fixture
def backend(vllm_server: VllmServer) -> Iterator[OpenAICompatibleChat]:
    registry.clear_cache()
    settings = Settings(models={"core": ChatModelConfig(backend="openai", base_url=vllm_server.base_url,
                                                        served_model=SERVED_NAME, max_tokens=96, temperature=0.0)})
    chosen = registry.chat_backend(settings, "core")
    assert isinstance(chosen, OpenAICompatibleChat)
    yield chosen
    registry.clear_cache()


def calls_of(backend: OpenAICompatibleChat, messages: list[ChatMessage], params: GenerationParams):
    deltas = list(backend.stream(messages, params))
    calls = [c for d in deltas for c in d.tool_calls]
    return calls, deltas[-1].finish_reason, "".join(d.text for d in deltas)


def assert_core_passes_only_valid_calls(calls: list[ToolCall], params: GenerationParams) -> None:
    outcome = tool_calls.checked(TaskResult(text="", model="core", tool_calls=calls, finish_reason="tool_calls"),
                                 params)
    arguments = json.loads(calls[0].function.arguments)
    try:
        jsonschema.validate(arguments, SCHEMAS[calls[0].function.name])
    except jsonschema.ValidationError:
        assert isinstance(outcome, ErrorInfo) and outcome.status == 502, outcome
        assert calls[0].function.name in outcome.message
    else:
        assert isinstance(outcome, TaskResult) and outcome.tool_calls == calls[:1]


def test_required_call_comes_back_whole(backend: OpenAICompatibleChat) -> None:
    params = GenerationParams(tools=[WEATHER], tool_choice="required")
    calls, finish, _ = calls_of(backend, QUESTION, params)
    assert finish == "tool_calls" and len(calls) == 1
    assert calls[0].id and calls[0].function.name == "get_weather"
    json.loads(calls[0].function.arguments)  # the fragments joined into one JSON text
    assert_core_passes_only_valid_calls(calls, params)


def test_named_function_is_called(backend: OpenAICompatibleChat) -> None:
    params = GenerationParams(tools=[WEATHER, ADD], tool_choice={"type": "function", "function": {"name": "add"}})
    calls, _, _ = calls_of(backend, [ChatMessage(role="user", content="2 plus 3?")], params)
    assert [c.function.name for c in calls] == ["add"]
    assert_core_passes_only_valid_calls(calls, params)


def test_auto_is_served_by_the_hermes_parser(backend: OpenAICompatibleChat) -> None:
    """The server accepts "auto" (a server without the parser flags answers 400); the
    tiny model then usually just talks, and whatever it returns is well-formed."""
    calls, finish, text = calls_of(backend, QUESTION, GenerationParams(tools=[WEATHER], tool_choice="auto"))
    if calls:
        assert finish == "tool_calls"
    else:
        assert text


def test_tool_results_are_accepted_in_the_history(backend: OpenAICompatibleChat) -> None:
    call = ToolCall(id="call_1", function=FunctionCall(name="get_weather", arguments='{"city": "Paris"}'))
    history = QUESTION + [ChatMessage(role="assistant", content=None, tool_calls=[call]),
                          ChatMessage(role="tool", tool_call_id="call_1", content='{"temperature_c": 18}')]
    calls, finish, text = calls_of(backend, history, GenerationParams(tools=[WEATHER], tool_choice="none",
                                                                      max_tokens=16))
    assert not calls and text and finish in ("stop", "length")


def test_logprobs_and_penalties_pass_through(backend: OpenAICompatibleChat) -> None:
    deltas = list(backend.stream(QUESTION, GenerationParams(max_tokens=5, logprobs=True, top_logprobs=2,
                                                            presence_penalty=0.5, frequency_penalty=0.5,
                                                            logit_bias={"0": -100})))
    tokens = [t for d in deltas for t in (d.logprobs or [])]
    assert 0 < len(tokens) <= 5
    assert all(len(t["top_logprobs"]) == 2 and t["logprob"] <= 0 for t in tokens)
