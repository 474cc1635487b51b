"""`langchain-openai` (a client we did not write) against the real stack (llama.cpp,
tiny model): `bind_tools` gets tool calls, and `with_structured_output` returns a
parsed object with method="function_calling" and with method="json_schema".
"""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

from tests.conftest import Stack

langchain_openai = pytest.importorskip(
    "langchain_openai", reason="langchain-openai is missing. Fix: pip install -e '.[test]'")


class GetWeather(BaseModel):
    """Current weather in a city."""

    city: str = Field(description="City name")


class Colour(BaseModel):
    """A colour the model picked."""

    name: str = Field(description="The colour", json_schema_extra={"enum": ["red", "green", "blue"]})


def chat_model(stack: Stack, **kwargs) -> "langchain_openai.ChatOpenAI":
    return langchain_openai.ChatOpenAI(model="core", base_url=f"{stack.url}/v1", api_key=stack.token,
                                       max_retries=0, timeout=180, max_tokens=120, **kwargs)


def test_bind_tools_returns_tool_calls(stack: Stack) -> None:
    model = chat_model(stack).bind_tools([GetWeather], tool_choice="required")
    message = model.invoke("What is the weather in Madrid?")
    assert message.tool_calls, f"no tool calls in {message!r}"
    call = message.tool_calls[0]
    assert call["name"] == "GetWeather"
    assert GetWeather.model_validate(call["args"]).city
    assert message.invalid_tool_calls == []


def test_structured_output_by_function_calling(stack: Stack) -> None:
    picked = chat_model(stack).with_structured_output(Colour, method="function_calling").invoke("Pick a colour.")
    assert isinstance(picked, Colour) and picked.name in ("red", "green", "blue")


def test_structured_output_by_json_schema(stack: Stack) -> None:
    picked = chat_model(stack).with_structured_output(Colour, method="json_schema").invoke("Pick a colour.")
    assert isinstance(picked, Colour) and picked.name in ("red", "green", "blue")
