"""Tool calls and logprobs on /v1/chat/completions: request fields in, wire shapes out.

Legacy `functions` / `function_call` are the same thing in an older shape: they become
tools on the way in, and the answer comes back as `message.function_call` with
finish_reason "function_call" (one call), as OpenAI answers such requests.
"""

from __future__ import annotations

from typing import Any

from core_agent.api.openai_protocol import ChatCompletionRequest, ChoiceLogprobs, DeltaMessage, ResponseMessage
from core_agent.orchestration.chat_service import BadChatRequest
from core_agent.orchestration.tool_calls import ToolCallsRefused, calls_tools
from configs.contracts.tasks import GenerationParams, TaskResult


def _legacy_choice(function_call: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    if isinstance(function_call, dict):
        return {"type": "function", "function": {"name": function_call.get("name")}}
    return function_call


def is_legacy(body: ChatCompletionRequest) -> bool:
    return body.functions is not None


def tool_fields(body: ChatCompletionRequest) -> dict[str, Any]:
    """GenerationParams fields for tools, penalties and logprobs (checked: 400 if unusable)."""
    if body.functions is not None and body.tools is not None:
        raise BadChatRequest("send either tools or the legacy functions, not both")
    if body.function_call is not None and body.tool_choice is not None:
        raise BadChatRequest("send either tool_choice or the legacy function_call, not both")
    if body.top_logprobs and not body.logprobs:
        raise BadChatRequest("top_logprobs needs logprobs: true")
    for key, value in (body.logit_bias or {}).items():
        if not -100 <= value <= 100:
            raise BadChatRequest(f"logit_bias[{key!r}] = {value}: values must be between -100 and 100")
    tools = body.tools
    choice = body.tool_choice
    parallel = body.parallel_tool_calls
    if is_legacy(body):
        tools = [{"type": "function", "function": f} for f in body.functions or []]
        choice = _legacy_choice(body.function_call)
        parallel = False  # the legacy shape carries one call
    fields = dict(tools=tools or None, tool_choice=choice, parallel_tool_calls=parallel,
                  presence_penalty=body.presence_penalty, frequency_penalty=body.frequency_penalty,
                  logit_bias=body.logit_bias, logprobs=body.logprobs, top_logprobs=body.top_logprobs)
    try:
        if calls_tools(GenerationParams(**fields)) and body.mode == "plan":
            raise BadChatRequest("mode 'plan' cannot be combined with tools: a request with tools goes "
                                 "straight to the model (its caller plans); drop mode or the tools")
    except ToolCallsRefused as exc:
        raise BadChatRequest(str(exc)) from None
    return fields


def finish_reason(result: TaskResult, legacy: bool) -> str:
    if result.tool_calls:
        return "function_call" if legacy else "tool_calls"
    return result.finish_reason


def response_message(result: TaskResult, legacy: bool) -> ResponseMessage:
    if not result.tool_calls:
        return ResponseMessage(content=result.text)
    content = result.text or None
    if legacy:
        call = result.tool_calls[0].function
        return ResponseMessage(content=content, function_call={"name": call.name, "arguments": call.arguments})
    return ResponseMessage(content=content, tool_calls=result.tool_calls)


def tool_call_deltas(result: TaskResult, legacy: bool) -> list[DeltaMessage]:
    """Stream chunks for the calls: per call, its id and name, then its arguments
    (the fragments OpenAI's clients join by index)."""
    deltas: list[DeltaMessage] = []
    for index, call in enumerate(result.tool_calls[:1] if legacy else result.tool_calls):
        if legacy:
            deltas.append(DeltaMessage(function_call={"name": call.function.name, "arguments": ""}))
            deltas.append(DeltaMessage(function_call={"arguments": call.function.arguments}))
            continue
        deltas.append(DeltaMessage(tool_calls=[{"index": index, "id": call.id, "type": "function",
                                                "function": {"name": call.function.name, "arguments": ""}}]))
        deltas.append(DeltaMessage(tool_calls=[{"index": index,
                                                "function": {"arguments": call.function.arguments}}]))
    return deltas


def choice_logprobs(result: TaskResult) -> ChoiceLogprobs | None:
    return ChoiceLogprobs(content=result.logprobs) if result.logprobs is not None else None
