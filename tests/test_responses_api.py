"""POST /v1/responses through the official `openai` client (`client.responses`), against
the real stack (llama.cpp with the tiny model): plain, streamed, function tools and
their results, previous_response_id, text.format json_schema, refused parameters.
"""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from tests.conftest import Stack

WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"], "additionalProperties": False}}


def test_plain_response(stack: Stack) -> None:
    response = stack.openai().responses.create(model="core", input="Name a fruit.", instructions="Be brief.",
                                               max_output_tokens=16, temperature=0.2)
    assert response.object == "response" and response.status in ("completed", "incomplete")
    assert response.output_text
    assert response.output[0].type == "message" and response.output[0].role == "assistant"
    assert response.usage.output_tokens > 0
    with stack.http() as http:
        task = http.get(f"/tasks/{response.task_id}").json()
    assert task["status"] == "succeeded"


def test_a_planned_response_says_which_plan_ran(stack: Stack) -> None:
    """mode "plan" through /v1/responses: the X-Appliance-Plan header (as on chat
    completions) names the plan that ran, the same as the task record."""
    raw = stack.openai().responses.with_raw_response.create(
        model="core", input="Summarise the benefits of tea in two steps.", max_output_tokens=8,
        extra_body={"mode": "plan", "memory": "off"})
    response = raw.parse()
    with stack.http() as http:
        task = http.get(f"/tasks/{response.task_id}").json()
    assert raw.headers["x-appliance-plan"] == task["plan_origin"]
    assert task["plan_origin"] in ("model", "repaired", "template", "direct")


def test_message_items_with_input_text_parts(stack: Stack) -> None:
    response = stack.openai().responses.create(model="core", max_output_tokens=12, input=[
        {"role": "developer", "content": "Answer in one word."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Name a colour."}]}])
    assert response.output_text


def test_streamed_response_events(stack: Stack) -> None:
    with stack.openai().responses.stream(model="core", input="Say hello.", max_output_tokens=12) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    assert "response.output_item.added" in kinds and "response.output_text.delta" in kinds
    assert kinds.index("response.output_item.added") < kinds.index("response.output_text.delta")
    assert final.output_text


def test_function_tool_round_trip(stack: Stack) -> None:
    client = stack.openai()
    first = client.responses.create(model="core", input="What is the weather in Paris?", tools=[WEATHER],
                                    tool_choice="required", max_output_tokens=120)
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather"
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER["parameters"])
    second = client.responses.create(
        model="core", tools=[WEATHER], tool_choice="none", max_output_tokens=30,
        input=[{"role": "user", "content": "What is the weather in Paris?"},
               {"type": "function_call", "call_id": calls[0].call_id, "name": calls[0].name,
                "arguments": calls[0].arguments},
               {"type": "function_call_output", "call_id": calls[0].call_id, "output": '{"temperature_c": 18}'}])
    assert second.output_text
    assert not [item for item in second.output if item.type == "function_call"]


def test_streamed_function_call(stack: Stack) -> None:
    with stack.openai().responses.stream(model="core", input="Weather in Oslo?", tools=[WEATHER],
                                         tool_choice={"type": "function", "name": "get_weather"},
                                         max_output_tokens=120) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    call = next(item for item in final.output if item.type == "function_call")
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])


def test_previous_response_id_continues_the_conversation(stack: Stack) -> None:
    client = stack.openai()
    first = client.responses.create(model="core", input="My name is Ada.", max_output_tokens=8)
    second = client.responses.create(model="core", input="What is my name?", max_output_tokens=8,
                                     previous_response_id=first.id)
    assert second.previous_response_id == first.id
    assert second.conversation_id == first.conversation_id
    with stack.http() as http:
        turns = http.get(f"/conversations/{first.conversation_id}/messages").json()
    assert [m["content"] for m in turns if m["role"] == "user"] == ["My name is Ada.", "What is my name?"]
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="core", input="hi", previous_response_id="resp_unknown")
    assert "previous_response_id" in err.value.message


def test_text_format_json_schema(stack: Stack) -> None:
    schema = {"type": "object", "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}},
              "required": ["colour"], "additionalProperties": False}
    response = stack.openai().responses.create(
        model="core", input="Pick a colour.", max_output_tokens=40,
        text={"format": {"type": "json_schema", "name": "pick", "schema": schema, "strict": True}})
    jsonschema.validate(json.loads(response.output_text), schema)


def test_unsupported_parameter_is_refused_by_name(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        stack.openai().responses.create(model="core", input="hi", reasoning={"effort": "high"})
    assert "reasoning" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        stack.openai().responses.create(model="core", input="hi", tools=[{"type": "web_search"}])
    assert "web_search" in err.value.message
