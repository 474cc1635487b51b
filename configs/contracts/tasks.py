"""What travels through the queues: task payloads, results and stream events.

The core sends these as JSON through Celery; a worker answers with a result and,
while it runs, publishes StreamEvents to a Redis stream the API reads. This module
is the whole contract between core_agent and workers: both import it, neither
imports the other's internals.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

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


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "tool"]
    # A string, or OpenAI content parts (text / image_url) for vision requests.
    content: str | list[dict[str, Any]]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.get("text", "") for p in self.content if p.get("type") == "text")


class GenerationParams(BaseModel):
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    # The core always sets a seed, so a redelivered task regenerates the same text.
    seed: int | None = None
    # OpenAI-style response_format, e.g. {"type": "json_schema", "json_schema": {...}}
    response_format: dict[str, Any] | None = None
    adapter: str | None = None
    # Qwen3 thinking (vLLM chat_template_kwargs.enable_thinking); None = model default.
    thinking: bool | None = None


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
    finish_reason: str = "stop"
    model: str
    adapter: str | None = None
    usage: Usage = Field(default_factory=Usage)
    attempt: int = 1
    seconds: float = 0.0
    # Worker-specific details (sandbox exit code, OCR boxes, vector sizes, ...).
    data: dict[str, Any] = Field(default_factory=dict)
    # Who ran it and when (wall clock), filled in by the worker's task wrapper.
    worker: str | None = None
    started_at: float | None = None
    finished_at: float | None = None


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
    type: Literal["attempt", "token", "done", "error"]
    attempt: int = 1
    text: str = ""
    result: TaskResult | None = None
    error: ErrorInfo | None = None
