"""The wire format of OpenAI's Responses API (POST /v1/responses), and its mapping onto
the chat path: input items -> chat messages, function tools -> chat tools, a finished
turn -> a Response object (or the stream of events that builds one).

What n8n's OpenAI Chat Model (v1.3, "Use Responses API"), n8n's OpenAI node v2 and
`openai.responses.create` send is covered; anything else is refused by name.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core_agent.api.openai_params import refuse_unsupported
from configs.contracts.tasks import ChatMessage, FunctionCall, TaskResult, ToolCall


class BadResponsesInput(ValueError):
    """The request cannot be mapped onto a chat turn (a 400 with this message)."""


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1, le=32768)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    previous_response_id: str | None = None
    store: bool = True               # kept so previous_response_id can continue it
    stream: bool = False
    user: str | None = None          # end-user id; recorded nowhere (one owner)
    # --- extensions (as on /v1/chat/completions) ---
    conversation_id: str | None = None
    adapter: str | None = None
    profile: str | None = None
    mode: Literal["auto", "direct", "plan"] = "auto"
    memory: str | None = None        # on | read | off (core_agent/api/request_options.py)
    priority: str | None = None      # interactive | background

    @model_validator(mode="after")
    def _no_unknown_fields(self) -> "ResponsesRequest":
        refuse_unsupported(self.model_extra, "responses")
        return self


# --- request -> chat ---------------------------------------------------------------

def _text_of(content: Any, where: str) -> str | list[dict[str, Any]]:
    """Message content: a string, or content parts (input_text/output_text/input_image)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadResponsesInput(f"{where}.content must be a string or a list of content parts")
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            parts.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
        else:
            raise BadResponsesInput(f"{where}.content[{i}]: part type {kind!r} is not supported; "
                                    "use input_text, output_text or input_image (with image_url)")
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def input_messages(body: ResponsesRequest) -> list[ChatMessage]:
    """`instructions` + `input` as chat messages (function calls join into one assistant turn)."""
    messages: list[ChatMessage] = []
    if body.instructions:
        messages.append(ChatMessage(role="system", content=body.instructions))
    if isinstance(body.input, str):
        messages.append(ChatMessage(role="user", content=body.input))
        return messages
    for i, item in enumerate(body.input):
        where = f"input[{i}]"
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "system", "developer", "assistant"):
                raise BadResponsesInput(f"{where}.role {role!r} is not supported; use user, system, developer "
                                        "or assistant")
            messages.append(ChatMessage(role=role, content=_text_of(item.get("content", ""), where)))
        elif kind == "function_call":
            call = ToolCall(id=item.get("call_id") or item.get("id") or "",
                            function=FunctionCall(name=item.get("name", ""), arguments=item.get("arguments") or "{}"))
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant" and last.tool_calls and not last.text():
                last.tool_calls.append(call)
            else:
                messages.append(ChatMessage(role="assistant", content=None, tool_calls=[call]))
        elif kind == "function_call_output":
            output = item.get("output")
            if not isinstance(output, str):
                output = _text_of(output, where) if isinstance(output, list) else str(output)
            if not item.get("call_id"):
                raise BadResponsesInput(f"{where}: function_call_output needs call_id")
            messages.append(ChatMessage(role="tool", tool_call_id=item["call_id"],
                                        content=output if isinstance(output, str) else str(output)))
        else:
            raise BadResponsesInput(f"{where}: item type {kind!r} is not supported; use message, "
                                    "function_call or function_call_output")
    return messages


def chat_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Responses function tools ({type, name, parameters}) in the chat shape."""
    if tools is None:
        return None
    out = []
    for i, tool in enumerate(tools):
        if tool.get("type") != "function":
            raise BadResponsesInput(f"tools[{i}]: tool type {tool.get('type')!r} is not available here; "
                                    "only function tools are")
        out.append({"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}})
    return out


def chat_tool_choice(choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    if isinstance(choice, dict):
        if choice.get("type") != "function":
            raise BadResponsesInput(f"tool_choice type {choice.get('type')!r} is not supported; use \"none\", "
                                    "\"auto\", \"required\" or {\"type\": \"function\", \"name\": ...}")
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


def response_format(text: dict[str, Any] | None) -> dict[str, Any] | None:
    """`text.format` as a chat response_format."""
    fmt = (text or {}).get("format")
    if not fmt or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise BadResponsesInput("text.format json_schema needs schema (an object)")
        return {"type": "json_schema", "json_schema": {"name": fmt.get("name", "output"), "schema": fmt["schema"],
                                                       "strict": fmt.get("strict")}}
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    raise BadResponsesInput(f"text.format type {fmt.get('type')!r} is not supported; use text, json_schema "
                            "or json_object")


# --- chat -> response --------------------------------------------------------------

def response_id(task_id: str) -> str:
    return f"resp_{task_id}"


def message_item(text: str, item_id: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if status == "completed" else []
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def function_call_item(call: ToolCall, status: str = "completed") -> dict[str, Any]:
    return {"type": "function_call", "id": f"fc_{call.id.removeprefix('call_')}", "call_id": call.id,
            "name": call.function.name, "arguments": call.function.arguments if status == "completed" else "",
            "status": status}


def output_items(result: TaskResult, message_id: str) -> list[dict[str, Any]]:
    items = [message_item(result.text, message_id)] if result.text or not result.tool_calls else []
    return items + [function_call_item(c) for c in result.tool_calls]


def response_object(body: ResponsesRequest, rid: str, model: str, *, status: str,
                    output: list[dict[str, Any]], result: TaskResult | None = None,
                    extensions: dict[str, Any] | None = None) -> dict[str, Any]:
    usage = None
    incomplete = None
    if result is not None:
        u = result.usage
        usage = {"input_tokens": u.prompt_tokens, "output_tokens": u.completion_tokens,
                 "total_tokens": u.total_tokens, "input_tokens_details": {"cached_tokens": 0},
                 "output_tokens_details": {"reasoning_tokens": 0}}
        if result.finish_reason == "length":
            status, incomplete = "incomplete", {"reason": "max_output_tokens"}
    return {
        "id": rid, "object": "response", "created_at": int(time.time()), "status": status,
        "error": None, "incomplete_details": incomplete, "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens, "model": model, "output": output,
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "previous_response_id": body.previous_response_id, "temperature": body.temperature,
        "top_p": body.top_p, "text": body.text or {"format": {"type": "text"}},
        "tool_choice": body.tool_choice or "auto", "tools": body.tools or [], "store": body.store,
        "metadata": {}, "usage": usage, "user": body.user, **(extensions or {}),
    }


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"
