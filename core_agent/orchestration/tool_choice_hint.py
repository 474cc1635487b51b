"""X-Appliance-Tool-Choice: a tool-choice hint for clients that cannot set `tool_choice`.

n8n's AI Agent (and LangChain agents generally) send their tools with no tool_choice, so
the model decides ("auto"). Qwen3 on vLLM decides well; a small local model (the embedded
default's SmolLM2-135M) almost never starts a tool call by itself. With the header
`X-Appliance-Tool-Choice: required-once` (n8n: the OpenAI credential's custom header)
the appliance requires one tool call for each new question and, once a tool result
follows the question, forbids further calls, so the agent gets its final answer in the
next round. An explicit `tool_choice` in the body always wins; `auto` changes nothing.
"""

from __future__ import annotations

from configs.contracts.tasks import ChatMessage, GenerationParams

HEADER = "X-Appliance-Tool-Choice"
VALUES = ("auto", "required-once")


class BadToolChoiceHint(ValueError):
    pass


def answered_by_tool(messages: list[ChatMessage]) -> bool:
    """True when a tool result follows the last user message."""
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
    return any(m.role == "tool" for m in messages[last_user + 1:])


def apply(params: GenerationParams, messages: list[ChatMessage], header: str | None) -> None:
    if header is None or header.strip() == "":
        return
    hint = header.strip().lower()
    if hint not in VALUES:
        raise BadToolChoiceHint(f"{HEADER} must be one of {', '.join(VALUES)} (got {header[:40]!r})")
    if hint == "auto" or not params.tools or params.tool_choice not in (None, "auto"):
        return
    params.tool_choice = "none" if answered_by_tool(messages) else "required"
