"""How the chat path treats requests with OpenAI function tools (docs/api.md).

- A request with callable tools goes straight to the model: no router, no planner
  (the client's agent is the planner; ours would answer instead of calling its tools).
- Every call a backend returns is checked against the tool's JSON schema here, so a
  malformed call never reaches a client whatever the backend; when the request demanded
  a call ("required" or a named function) and none is valid, the turn fails (502).
- Memory: a tool-call answer is an instruction to the client, not an answer, so it is
  not stored as an assistant turn (nor indexed into memory); the final answer after
  the tool results is. Tool results are not stored as turns. A request that only
  carries tool results for a conversation that already holds its question does not
  store that question again.
"""

from __future__ import annotations

import json

from configs.contracts.errors import BadGenerationRequest, ErrorInfo
from configs.contracts.tasks import ChatMessage, GenerationParams, TaskResult
from configs.contracts.tool_schemas import tool_specs, validate_arguments


class ToolCallsRefused(Exception):
    """The tools or tool_choice of a request are unusable (a 400 with the reason)."""


def calls_tools(params: GenerationParams) -> bool:
    """Whether the model may call a tool in this request (tools given, choice not "none")."""
    try:
        return tool_specs(params.tools, params.tool_choice) is not None
    except BadGenerationRequest as exc:
        raise ToolCallsRefused(str(exc)) from None


def continues_tool_calls(messages: list[ChatMessage]) -> bool:
    """Whether the request only brings tool results back (its last message is a tool result)."""
    return bool(messages) and messages[-1].role == "tool"


def stores_answer(result: TaskResult) -> bool:
    return not result.tool_calls


def checked(result: TaskResult, params: GenerationParams) -> TaskResult | ErrorInfo:
    """The result with only schema-valid calls, or why the turn must fail."""
    if not result.tool_calls:
        return result
    specs = tool_specs(params.tools, params.tool_choice)
    if specs is None:  # a backend that called a tool it was not offered
        return result.model_copy(update={"tool_calls": [], "finish_reason": "stop"})
    mode, tools = specs
    by_name = {t.name: t for t in tools}
    valid, problems = [], []
    for call in result.tool_calls:
        tool = by_name.get(call.function.name)
        if tool is None:
            problems.append(f"unknown function {call.function.name!r}")
            continue
        try:
            problem = validate_arguments(tool, json.loads(call.function.arguments or "{}"))
        except json.JSONDecodeError as exc:
            problem = f"arguments of {tool.name} are not JSON: {exc}"
        if problem:
            problems.append(problem)
        else:
            valid.append(call)
    if params.parallel_tool_calls is False:
        valid = valid[:1]
    if valid:
        return result.model_copy(update={"tool_calls": valid, "finish_reason": "tool_calls"})
    if mode == "required":
        return ErrorInfo(code="invalid_tool_call", status=502,
                         message="the model did not produce a valid call of the required tool: "
                                 + "; ".join(problems) + ". Retry, or raise max_tokens.")
    return result.model_copy(update={"tool_calls": [], "finish_reason": "stop" if result.finish_reason ==
                                     "tool_calls" else result.finish_reason})
