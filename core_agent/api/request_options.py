"""The appliance's per-request options shared by /v1/chat/completions and /v1/responses:
memory (body `memory` / X-Appliance-Memory), lane (body `priority` / X-Appliance-Priority),
the client (X-Appliance-Client) and the tool-choice hint (X-Appliance-Tool-Choice).
A body field wins over its header; a bad value is a 400 naming the field or header.
Also the headers both answer with (run_headers)."""

from __future__ import annotations

from typing import Protocol

from fastapi import Request
from fastapi.responses import JSONResponse

from core_agent.api.errors import error_response, retry_headers

from core_agent.orchestration import tool_choice_hint, traffic
from configs.contracts.errors import ErrorInfo
from core_agent.orchestration.chat_service import BadChatRequest, ChatRun, ChatTurn


class HasOptions(Protocol):
    memory: str | None
    priority: str | None


def with_request_options(turn: ChatTurn, body: HasOptions, request: Request) -> ChatTurn:
    try:
        turn.memory = traffic.parse_memory(body.memory, request.headers.get(traffic.MEMORY_HEADER))
        turn.priority = traffic.parse_priority(body.priority, request.headers.get(traffic.PRIORITY_HEADER))
        tool_choice_hint.apply(turn.params, turn.messages, request.headers.get(tool_choice_hint.HEADER))
    except (traffic.BadTrafficOption, tool_choice_hint.BadToolChoiceHint) as exc:
        raise BadChatRequest(str(exc)) from None
    turn.client = request.headers.get(traffic.CLIENT_HEADER)
    return turn


def run_headers(run: ChatRun) -> dict[str, str]:
    """The turn's ids, and for planned turns which plan ran (docs/api.md)."""
    headers = {"X-Task-Id": run.task_id, "X-Conversation-Id": run.conversation_id}
    if run.plan_origin:
        headers["X-Appliance-Plan"] = run.plan_origin
    return headers


def failed_turn_response(info: ErrorInfo, run: ChatRun | None) -> JSONResponse:
    """A turn that failed before its answer was sent: OpenAI's error envelope, the turn's
    headers when it got that far, Retry-After when the error says when to retry."""
    return error_response(info.status, info.message, info.code,
                          headers=retry_headers(info, run_headers(run) if run else None))
