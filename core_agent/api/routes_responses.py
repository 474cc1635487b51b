"""POST /v1/responses: OpenAI's Responses API on the same chat path as /v1/chat/completions.

Same core path (ChatService), same task ids (X-Task-Id), same memory, adapter and tool
rules. `previous_response_id` continues a stored response: the messages of that
exchange (its input and output, without its instructions, as OpenAI does) are kept in
Redis for `celery.result_expires_s` and the turn joins the same conversation.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse

from core_agent.api import responses_protocol as wire
from core_agent.access.principal import Principal
from core_agent.api.deps import AppState, get_state, require_principal
from core_agent.api.sse_keepalive import result_unless_gone, turn_stream_response
from core_agent.api.responses_protocol import BadResponsesInput, ResponsesRequest
from core_agent.api.routes_openai import _attachments
from core_agent.api.request_options import failed_turn_response, run_headers, with_request_options
from core_agent.orchestration.chat_service import BadChatRequest, ChatFailed, ChatRun, ChatTurn
from core_agent.orchestration.tool_calls import ToolCallsRefused, calls_tools
from configs.contracts.tasks import ChatMessage, GenerationParams, TaskResult
from lora_manager.naming import split_model

router = APIRouter(prefix="/v1", dependencies=[Depends(require_principal)], tags=["openai"])

RESPONSE_KEY_PREFIX = "appliance:response:"


def _key(rid: str) -> str:
    return f"{RESPONSE_KEY_PREFIX}{rid}"


async def _previous(state: AppState, rid: str, principal: Principal) -> tuple[list[ChatMessage], str | None]:
    raw = await state.redis.get(_key(rid))
    # Another principal's response is as unknown as an expired one (its text is theirs).
    if raw is None or json.loads(raw).get("principal", "owner") != principal.id:
        raise BadChatRequest(f"previous_response_id '{rid}' is unknown or expired (responses are kept "
                             f"{state.settings.celery.result_expires_s} s, and only with store: true); "
                             "send the whole conversation in input instead")
    saved = json.loads(raw)
    return [ChatMessage.model_validate(m) for m in saved["messages"]], saved.get("conversation_id")


async def _remember(state: AppState, rid: str, messages: list[ChatMessage], result: TaskResult,
                    conversation_id: str, principal: Principal) -> None:
    """Keep this exchange (minus system messages) for a later previous_response_id."""
    answer = ChatMessage(role="assistant", content=result.text or None, tool_calls=result.tool_calls or None) \
        if (result.text or result.tool_calls) else ChatMessage(role="assistant", content="")
    kept = [m.model_dump(exclude_none=True) for m in messages if m.role != "system"] + \
        [answer.model_dump(exclude_none=True)]
    await state.redis.set(_key(rid), json.dumps({"messages": kept, "conversation_id": conversation_id,
                                                      "principal": principal.id}),
                          ex=state.settings.celery.result_expires_s)


async def _turn(body: ResponsesRequest, state: AppState, conversation_header: str | None,
                principal: Principal) -> tuple[ChatTurn, list[ChatMessage]]:
    try:
        messages = wire.input_messages(body)
        params = GenerationParams(
            max_tokens=body.max_output_tokens, temperature=body.temperature, top_p=body.top_p,
            response_format=wire.response_format(body.text), tools=wire.chat_tools(body.tools),
            tool_choice=wire.chat_tool_choice(body.tool_choice), parallel_tool_calls=body.parallel_tool_calls)
        if calls_tools(params) and body.mode == "plan":
            raise BadChatRequest("mode 'plan' cannot be combined with tools; drop mode or the tools")
    except (BadResponsesInput, ToolCallsRefused) as exc:
        raise BadChatRequest(str(exc)) from None
    except ValueError as exc:  # a message the chat contract refuses (e.g. empty content)
        raise BadChatRequest(f"input: {exc}") from None
    conversation_id = body.conversation_id or conversation_header
    if body.previous_response_id:
        earlier, previous_conversation = await _previous(state, body.previous_response_id, principal)
        system = [m for m in messages if m.role == "system"]
        messages = system + earlier + [m for m in messages if m.role != "system"]
        conversation_id = conversation_id or previous_conversation
    to_model, attachments = _attachments(messages, state)
    model, named_adapter = split_model(body.model or state.settings.default_model)
    if named_adapter and body.adapter and named_adapter != body.adapter:
        raise BadChatRequest(f"model names adapter '{named_adapter}' but the adapter field says "
                             f"'{body.adapter}'; name it once")
    params.adapter = body.adapter or named_adapter
    turn = ChatTurn(model=model, messages=to_model, params=params, conversation_id=conversation_id,
                    stream=body.stream, mode=body.mode, profile=body.profile, source="owner",
                    attachments=attachments, principal=principal)
    return turn, messages


def _extensions(run: ChatRun) -> dict[str, Any]:
    return {"conversation_id": run.conversation_id, "task_id": run.task_id, "sources": run.sources}


class _Events:
    """Numbered server-sent events of one streamed response."""

    def __init__(self) -> None:
        self.sequence = 0

    def __call__(self, kind: str, **fields: Any) -> str:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(event)}\n\n"


async def _stream(body: ResponsesRequest, run: ChatRun, first: object, state: AppState,
                  messages: list[ChatMessage], principal: Principal) -> AsyncIterator[str]:
    event = _Events()
    rid = wire.response_id(run.task_id)
    yield event("response.created", response=wire.response_object(body, rid, run.model, status="in_progress",
                                                                   output=[], extensions=_extensions(run)))
    yield event("response.in_progress", response=wire.response_object(body, rid, run.model, status="in_progress",
                                                                       output=[], extensions=_extensions(run)))
    message_id = wire.new_message_id()
    text = ""
    started = False

    def start_text() -> list[str]:
        return [event("response.output_item.added", output_index=0,
                      item=wire.message_item("", message_id, status="in_progress")),
                event("response.content_part.added", item_id=message_id, output_index=0, content_index=0,
                      part={"type": "output_text", "text": "", "annotations": []})]

    try:
        # Reasoning (Thought pieces) is not part of the output text; the Responses wire
        # format would need reasoning items, which we do not emit.
        pieces: list[str] = [first] if isinstance(first, str) and first else []
        for piece in pieces:
            started = True
            for line in start_text():
                yield line
            text += piece
            yield event("response.output_text.delta", item_id=message_id, output_index=0, content_index=0,
                        delta=piece, logprobs=[])
        if first is not None:
            async for piece in run.pieces():
                if not isinstance(piece, str):
                    continue
                if not started:
                    started = True
                    for line in start_text():
                        yield line
                text += piece
                yield event("response.output_text.delta", item_id=message_id, output_index=0, content_index=0,
                            delta=piece, logprobs=[])
        result = await run.result()
    except ChatFailed as exc:
        error = {"code": exc.info.code, "message": exc.info.message}
        yield event("error", code=exc.info.code, message=exc.info.message, param=None)
        failed = wire.response_object(body, rid, run.model, status="failed", output=[], extensions=_extensions(run))
        failed["error"] = error
        yield event("response.failed", response=failed)
        return
    output: list[dict[str, Any]] = []
    if started or not result.tool_calls:
        if not started:
            for line in start_text():
                yield line
        item = wire.message_item(result.text, message_id)
        yield event("response.output_text.done", item_id=message_id, output_index=0, content_index=0,
                    text=result.text, logprobs=[])
        yield event("response.content_part.done", item_id=message_id, output_index=0, content_index=0,
                    part=item["content"][0])
        yield event("response.output_item.done", output_index=0, item=item)
        output.append(item)
    for call in result.tool_calls:
        index = len(output)
        item = wire.function_call_item(call)
        yield event("response.output_item.added", output_index=index,
                    item=wire.function_call_item(call, status="in_progress"))
        yield event("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                    delta=call.function.arguments)
        yield event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                    arguments=call.function.arguments, name=call.function.name)
        yield event("response.output_item.done", output_index=index, item=item)
        output.append(item)
    if body.store:
        await _remember(state, rid, messages, result, run.conversation_id, principal)
    final = wire.response_object(body, rid, run.model, status="completed", output=output, result=result,
                                 extensions=_extensions(run))
    # Always "response.completed", also when the response itself is "incomplete"
    # (max_output_tokens): the official SDK's stream helper only finishes on that event.
    yield event("response.completed", response=final)


@router.post("/responses")
async def create_response(body: ResponsesRequest, request: Request,
                          x_conversation_id: str | None = Header(default=None),
                          principal: Principal = Depends(require_principal)):
    state = get_state(request)
    run: ChatRun | None = None
    try:
        turn, messages = await _turn(body, state, x_conversation_id, principal)
        run = await state.chat.start(with_request_options(turn, body, request))
        if body.stream:
            first = await run.first_piece()
            return turn_stream_response(_stream(body, run, first, state, messages, principal), run,
                                        state.chat.cancel)
        result = await result_unless_gone(run, request.is_disconnected, state.chat.cancel)
    except ChatFailed as exc:
        return failed_turn_response(exc.info, run)
    rid = wire.response_id(run.task_id)
    if body.store:
        await _remember(state, rid, messages, result, run.conversation_id, principal)
    response = wire.response_object(body, rid, run.model, status="completed",
                                    output=wire.output_items(result, wire.new_message_id()), result=result,
                                    extensions=_extensions(run))
    return JSONResponse(response, headers=run_headers(run))
