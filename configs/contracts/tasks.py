"""What travels through the queues: task payloads, results and stream events.

The core sends these as JSON through Celery; a worker answers with a result and,
while it runs, publishes StreamEvents to a Redis stream the API reads. This module
is the whole contract between core_agent and workers: both import it, neither
imports the other's internals.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from configs.contracts.errors import ErrorInfo
from configs.contracts.memory import MemoryScopeFilter

STREAM_KEY_PREFIX = "appliance:stream:"
ATTEMPT_KEY_PREFIX = "appliance:attempts:"
CANCEL_KEY_PREFIX = "appliance:cancel:"


def stream_key(task_id: str) -> str:
    return f"{STREAM_KEY_PREFIX}{task_id}"


def attempt_key(task_id: str) -> str:
    return f"{ATTEMPT_KEY_PREFIX}{task_id}"


def cancel_key(task_id: str) -> str:
    """Set by the core to stop a task that is already running (Celery's revoke only
    stops tasks that have not started)."""
    return f"{CANCEL_KEY_PREFIX}{task_id}"


class FunctionCall(BaseModel):
    name: str
    arguments: str          # a JSON object as a string (OpenAI's wire format)


class ToolCall(BaseModel):
    """A function call the model asks the client to run (OpenAI's `tool_calls` item)."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "tool"]
    # A string, or OpenAI content parts (text / image_url) for vision requests; None for
    # an assistant message that only carries tool calls.
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[ToolCall] | None = None     # assistant: the calls it made
    tool_call_id: str | None = None              # tool: which call this result answers
    name: str | None = None

    @field_validator("role", mode="before")
    @classmethod
    def _developer_is_system(cls, role: Any) -> Any:
        # OpenAI's "developer" role is the system prompt of newer models.
        return "system" if role == "developer" else role

    @model_validator(mode="after")
    def _content_or_calls(self) -> "ChatMessage":
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a '{self.role}' message needs content (only an assistant message "
                             "with tool_calls may have content null)")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a 'tool' message needs tool_call_id (the id of the call it answers)")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.get("text", "") for p in self.content if p.get("type") == "text")

    def wire(self) -> dict[str, Any]:
        """The OpenAI wire form (fields that are not set are left out)."""
        return self.model_dump(exclude_none=True)


class GenerationParams(BaseModel):
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    seed: int | None = None
    # OpenAI-style response_format, e.g. {"type": "json_schema", "json_schema": {...}}
    response_format: dict[str, Any] | None = None
    adapter: str | None = None
    # Qwen3 thinking (vLLM chat_template_kwargs.enable_thinking); None = model default.
    thinking: bool | None = None
    # OpenAI tool calling: function tools ({"type": "function", "function": {name,
    # description, parameters}}), "none" | "auto" | "required" | {"type": "function",
    # "function": {"name": ...}}, and whether several calls may come in one answer.
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    # Sampling controls every backend honours (llama.cpp and vLLM both have them).
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    # The last message is an assistant message whose text the answer continues (a
    # redelivered generation resuming from the text the client already has:
    # workers/continuation.py). vLLM: continue_final_message; llama.cpp: prompt cut.
    continue_final_message: bool | None = None


class ChatTask(BaseModel):
    model: str
    messages: list[ChatMessage]
    params: GenerationParams = Field(default_factory=GenerationParams)
    stream: bool = True


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class TaskResult(BaseModel):
    """What every worker task returns: text for the next step or the owner, plus facts."""

    text: str
    # The model's reasoning (think profile), never part of `text` nor stored in memory.
    reasoning: str | None = None
    finish_reason: str = "stop"
    model: str
    adapter: str | None = None
    usage: Usage = Field(default_factory=Usage)
    attempt: int = 1
    seconds: float = 0.0
    # Function calls the model made (finish_reason "tool_calls"); arguments are JSON strings.
    tool_calls: list[ToolCall] = Field(default_factory=list)
    # OpenAI-shaped per-token logprobs ({"token", "logprob", "bytes", "top_logprobs"}), if asked.
    logprobs: list[dict[str, Any]] | None = None
    # Worker-specific details (sandbox exit code, OCR boxes, vector sizes, ...).
    data: dict[str, Any] = Field(default_factory=dict)
    # Who ran it and when (wall clock), filled in by the worker's task wrapper.
    worker: str | None = None
    started_at: float | None = None
    finished_at: float | None = None


# Tasks whose answer is not text (embeddings, memory operations, the model check) carry
# their JSON value in `data` under this key, so every task reports the same way.
VALUE_KEY = "value"


def value_result(value: Any, model: str = "") -> TaskResult:
    """A TaskResult carrying a JSON value (a pydantic model is dumped first)."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    return TaskResult(text="", model=model, data={VALUE_KEY: value})


def result_value(result: TaskResult) -> Any:
    """The value a `value_result` carries."""
    return result.data.get(VALUE_KEY)


class Attachment(BaseModel):
    """An image sent with a request, as a data URL (validated by the API)."""

    data_url: str
    name: str = "image"


class StepTask(BaseModel):
    """One plan step for a worker: do `instruction`, given the results it depends on."""

    task_id: str
    step_id: str
    instruction: str
    inputs: dict[str, str] = Field(default_factory=dict)   # step id -> that step's result text
    model: str | None = None
    params: GenerationParams = Field(default_factory=GenerationParams)
    attachments: list[Attachment] = Field(default_factory=list)
    allow_code_execution: bool = False
    # What a memory (rag) step may read: the asking principal's scope (None: everything).
    memory_scope: MemoryScopeFilter | None = None


class StreamEvent(BaseModel):
    # "reasoning": a piece of the model's thinking (text), sent before the answer's tokens.
    # "heartbeat": the attempt's worker is alive (workers/heartbeat.py); the core's
    # reader uses it for liveness and does not pass it on.
    # "queued": never on a stream; the core's reader yields it while the task waits
    # behind busy workers (core_agent/orchestration/liveness.py).
    type: Literal["attempt", "token", "reasoning", "done", "error", "heartbeat", "queued"]
    attempt: int = 1
    text: str = ""
    # How many model deltas (about one token each) a token/reasoning event joins: the
    # worker coalesces pieces (workers/token_coalescer.py); a continuation counts them.
    pieces: int = 1
    result: TaskResult | None = None
    error: ErrorInfo | None = None
