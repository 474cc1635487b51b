"""The chat backend interface every model server implementation follows.

A backend turns messages into a stream of text pieces. Which implementation serves
a model is decided once, by `ChatModelConfig.backend`, in registry.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol

from configs.contracts.tasks import ChatMessage, GenerationParams, ToolCall, Usage


@dataclass
class ChatDelta:
    """One piece of a streamed answer. The last one carries finish_reason and usage.

    Tool calls arrive whole (id, name, complete JSON arguments), never as fragments:
    a backend emits a call only once it has parsed it, so a half-written call never
    leaves the worker (finish_reason is then "tool_calls")."""

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    # OpenAI-shaped logprobs of this piece's tokens (when params.logprobs is set).
    logprobs: list[dict[str, Any]] | None = None


class ChatBackend(Protocol):
    model_name: str

    def check(self) -> None:
        """Raise ModelUnavailable with a fix if the model cannot serve now."""

    def stream(self, messages: list[ChatMessage], params: GenerationParams) -> Iterator[ChatDelta]:
        """Generate an answer piece by piece (text, then tool calls if the model made any).

        params.tools / tool_choice / parallel_tool_calls follow OpenAI's semantics; a
        backend must honour them (or raise BadGenerationRequest naming what it cannot do)."""
