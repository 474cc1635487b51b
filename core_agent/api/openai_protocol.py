"""The OpenAI-compatible wire format of /v1 (requests, responses, stream chunks).

Our own extensions are marked; everything else follows the OpenAI API so any
OpenAI client (the `openai` package, n8n's OpenAI credential) works unchanged.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core_agent.api.openai_params import refuse_unsupported
from core_agent.orchestration.plans import Plan
from configs.contracts.tasks import ChatMessage, ToolCall


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    # No silent ignoring: a field we do not honour is refused with a 400 that names it
    # (core_agent/api/openai_params.py).
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=32768)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = 1
    response_format: dict[str, Any] | None = None
    user: str | None = None                         # end-user id; recorded nowhere (one owner)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = None   # legacy form of tools
    function_call: str | dict[str, Any] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    # --- extensions ---
    conversation_id: str | None = None
    adapter: str | None = None
    profile: str | None = None                      # fast | think | code | dialog (configs/routes.yaml)
    mode: Literal["auto", "direct", "plan"] = "auto"
    plan: Plan | None = None                        # run these steps instead of asking the planner
    allow_code_execution: bool = False              # also needs sandbox.enabled
    memory: str | None = None                       # on | read | off (configs/traffic.yaml has the defaults)
    priority: str | None = None                     # interactive | background (lane of the answer)

    @model_validator(mode="after")
    def _no_unknown_fields(self) -> "ChatCompletionRequest":
        refuse_unsupported(self.model_extra, "chat.completions")
        return self

    @field_validator("n")
    @classmethod
    def _single_choice(cls, v: int) -> int:
        if v != 1:
            raise ValueError("only n=1 is supported")
        return v

    def stop_list(self) -> list[str] | None:
        if self.stop is None:
            return None
        return [self.stop] if isinstance(self.stop, str) else self.stop


class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    # The model's reasoning (think profile), apart from the answer; None without it.
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = None
    function_call: dict[str, str] | None = None     # legacy `functions` requests


class ChoiceLogprobs(BaseModel):
    content: list[dict[str, Any]] | None = None


class Choice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: str | None = "stop"
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: UsageInfo
    # --- extensions ---
    conversation_id: str
    task_id: str
    sources: list[dict[str, Any]] = Field(default_factory=list)


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None   # {index, id?, type?, function: {name?, arguments}}
    function_call: dict[str, str] | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChunkChoice]
    usage: UsageInfo | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "appliance"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
