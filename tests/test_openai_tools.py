"""OpenAI tool calling on /v1/chat/completions, through the official `openai` client,
against the real stack (API -> Celery -> llama.cpp with the tiny SmolLM2 model).

The tiny model cannot be relied on to *want* a tool; "required" and a named function
go through the grammar (workers/backends/llamacpp_tools.py), so every call must come
back well-formed and valid against its schema. Also here: the tool-result round trip,
the developer role, legacy functions, logprobs, refused parameters, error envelopes.
"""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

from tests.conftest import Stack

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"], "additionalProperties": False}}}
ADD = {"type": "function", "function": {
    "name": "add", "description": "Add two integers",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "required": ["a", "b"]}}}
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, ADD)}


def assert_valid_call(call) -> dict:
    assert call.type == "function"
    assert call.id.startswith("call_")
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, SCHEMAS[call.function.name])
    return arguments


def test_required_tool_call_is_valid(stack: Stack) -> None:
    completion = stack.openai().chat.completions.create(
        model="core", messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER], tool_choice="required", max_tokens=120)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls and choice.message.tool_calls[0].function.name == "get_weather"
    assert_valid_call(choice.message.tool_calls[0])


def test_named_function_is_the_one_called(stack: Stack) -> None:
    completion = stack.openai().chat.completions.create(
        model="core", messages=[{"role": "user", "content": "What is 2 plus 3?"}],
        tools=[WEATHER, ADD], tool_choice={"type": "function", "function": {"name": "add"}}, max_tokens=120)
    calls = completion.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["add"]
    assert set(assert_valid_call(calls[0])) == {"a", "b"}


def test_auto_answers_with_a_valid_call_or_with_text(stack: Stack) -> None:
    """The model decides; whatever it decides must be well-formed."""
    completion = stack.openai().chat.completions.create(
        model="core", messages=[{"role": "user", "content": "What is the weather in Berlin?"}],
        tools=[WEATHER, ADD], tool_choice="auto", max_tokens=80)
    choice = completion.choices[0]
    if choice.message.tool_calls:
        assert choice.finish_reason == "tool_calls"
        for call in choice.message.tool_calls:
            assert_valid_call(call)
    else:
        assert choice.finish_reason in ("stop", "length")
        assert choice.message.content and "<tool_call>" not in choice.message.content


def test_streamed_tool_call_is_reassembled_by_the_client(stack: Stack) -> None:
    with stack.openai().chat.completions.stream(
            model="core", messages=[{"role": "user", "content": "Weather in Rome, in celsius?"}],
            tools=[WEATHER], tool_choice="required", max_tokens=120) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_completion()
    assert "tool_calls.function.arguments.done" in kinds
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert_valid_call(choice.message.tool_calls[0])


def test_tool_result_round_trip(stack: Stack) -> None:
    client = stack.openai()
    messages = [{"role": "user", "content": "What is the weather in Oslo?"}]
    first = client.chat.completions.create(model="core", messages=messages, tools=[WEATHER],
                                           tool_choice="required", max_tokens=120)
    call = first.choices[0].message.tool_calls[0]
    messages.append({"role": "assistant", "content": None, "tool_calls": [call.model_dump()]})
    messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature_c": 21})})
    second = client.chat.completions.create(model="core", messages=messages, tools=[WEATHER],
                                            tool_choice="none", max_tokens=40)
    choice = second.choices[0]
    assert choice.message.tool_calls is None
    assert choice.finish_reason in ("stop", "length") and choice.message.content
    # The tool-call answer is not stored as an answer; the final one is.
    with stack.http() as http:
        first_turns = http.get(f"/conversations/{first.conversation_id}/messages").json()
        second_turns = http.get(f"/conversations/{second.conversation_id}/messages").json()
    assert [m["role"] for m in first_turns] == ["user"]
    assert second_turns[-1]["role"] == "assistant"
    assert second_turns[-1]["content"] == choice.message.content


def test_a_tool_message_without_its_call_id_is_a_clear_400(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        stack.openai().chat.completions.create(model="core", messages=[
            {"role": "user", "content": "hi"}, {"role": "tool", "content": "21 C"}])
    assert "tool_call_id" in err.value.message


def test_developer_role_is_the_system_prompt(stack: Stack) -> None:
    completion = stack.openai().chat.completions.create(
        model="core", max_tokens=16,
        messages=[{"role": "developer", "content": "Answer in one word."},
                  {"role": "user", "content": "Name a colour."}])
    assert completion.choices[0].message.content


def test_legacy_functions_answer_with_function_call(stack: Stack) -> None:
    completion = stack.openai().chat.completions.create(
        model="core", messages=[{"role": "user", "content": "Add 4 and 5"}],
        functions=[ADD["function"]], function_call={"name": "add"}, max_tokens=120)
    choice = completion.choices[0]
    assert choice.finish_reason == "function_call"
    jsonschema.validate(json.loads(choice.message.function_call.arguments), SCHEMAS["add"])


def test_unknown_tool_choice_name_is_a_400_naming_it(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        stack.openai().chat.completions.create(
            model="core", messages=[{"role": "user", "content": "hi"}], tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "launch_rocket"}})
    assert "launch_rocket" in err.value.message


def test_logprobs_are_returned(stack: Stack) -> None:
    completion = stack.openai().chat.completions.create(
        model="core", messages=[{"role": "user", "content": "Say hello."}], max_tokens=6,
        logprobs=True, top_logprobs=2, presence_penalty=0.5, frequency_penalty=0.2)
    choice = completion.choices[0]
    tokens = choice.logprobs.content
    assert tokens, "logprobs were asked for and must come back"
    assert "".join(t.token for t in tokens) == choice.message.content
    for token in tokens:
        assert token.logprob <= 0 and len(token.top_logprobs) == 2
        assert token.top_logprobs[0].logprob >= token.top_logprobs[1].logprob


def test_logit_bias_is_honoured(stack: Stack) -> None:
    """A +100 bias on one token makes the model say it, whatever the question."""
    client = stack.openai()
    probe = client.chat.completions.create(model="core", messages=[{"role": "user", "content": "Say hello."}],
                                           max_tokens=1, logprobs=True, top_logprobs=5)
    forced = probe.choices[0].logprobs.content[0].top_logprobs[-1]   # not the likeliest token
    token_id = _token_id(forced.token)
    biased = client.chat.completions.create(model="core", messages=[{"role": "user", "content": "Say hello."}],
                                            max_tokens=1, logit_bias={str(token_id): 100})
    assert biased.choices[0].message.content == forced.token


def _token_id(token: str) -> int:
    from llama_cpp import Llama

    from configs.loader import get_settings
    from configs.model_files import resolve_gguf_path

    settings = get_settings()
    llm = Llama(model_path=str(resolve_gguf_path("core", settings.models["core"])), vocab_only=True, verbose=False)
    ids = llm.tokenize(token.encode(), add_bos=False, special=False)
    assert len(ids) == 1, f"{token!r} is not a single token: {ids}"
    return ids[0]


def test_unsupported_parameter_is_refused_by_name(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        stack.openai().chat.completions.create(model="core", messages=[{"role": "user", "content": "hi"}],
                                               reasoning_effort="low")
    assert "reasoning_effort" in err.value.message
    assert err.value.body["type"] == "invalid_request_error"


def test_unknown_route_and_wrong_method_use_the_openai_envelope(stack: Stack) -> None:
    with stack.http() as http:
        missing = http.get("/v1/no-such-route")
        wrong = http.delete("/v1/chat/completions")
    assert missing.status_code == 404
    assert set(missing.json()["error"]) == {"message", "type", "code"}
    assert "/v1/no-such-route" in missing.json()["error"]["message"]
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed" and "POST" in wrong.json()["error"]["message"]


def test_model_by_id(stack: Stack) -> None:
    client = stack.openai()
    assert client.models.retrieve("core").id == "core"
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("no-such-model")
    assert err.value.body["code"] == "model_not_found"
    assert httpx.get(f"{stack.url}/v1/models/core").status_code == 401  # still needs the owner token
