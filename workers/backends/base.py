"""The chat backend interface every model server implementation follows.

A backend turns messages into a stream of text pieces. Which implementation serves
a model is decided once, by `ChatModelConfig.backend`, in registry.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol

from configs.contracts.tasks import ChatMessage, GenerationParams, Usage


@dataclass
class ChatDelta:
    """One piece of a streamed answer. The last one carries finish_reason and usage."""

    text: str = ""
    # The model's reasoning (Qwen3 thinking), kept apart from the answer text.
    reasoning: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None


class ChatBackend(Protocol):
    model_name: str

    def check(self) -> None:
        """Raise ModelUnavailable with a fix if the model cannot serve now."""

    def stream(self, messages: list[ChatMessage], params: GenerationParams) -> Iterator[ChatDelta]:
        """Generate an answer piece by piece."""
