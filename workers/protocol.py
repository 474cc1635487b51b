"""What travels through the queues: task payloads, results and stream events.

The core sends these as JSON through Celery; a worker answers with a result and,
while it runs, publishes StreamEvents to a Redis stream the API reads. This module
is the whole contract between core_agent and workers: both import it, neither
imports the other's internals.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

STREAM_KEY_PREFIX = "appliance:stream:"
ATTEMPT_KEY_PREFIX = "appliance:attempts:"


def stream_key(task_id: str) -> str:
    return f"{STREAM_KEY_PREFIX}{task_id}"


def attempt_key(task_id: str) -> str:
    return f"{ATTEMPT_KEY_PREFIX}{task_id}"


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


class ChatResult(BaseModel):
    text: str
    finish_reason: str = "stop"
    model: str
    usage: Usage = Field(default_factory=Usage)
    attempt: int = 1
    seconds: float = 0.0


class ErrorInfo(BaseModel):
    """A failure the owner can act on: what is wrong, what to do, which HTTP status."""

    code: str
    message: str
    status: int = 500


class StreamEvent(BaseModel):
    type: Literal["attempt", "token", "done", "error"]
    attempt: int = 1
    text: str = ""
    result: ChatResult | None = None
    error: ErrorInfo | None = None
