"""The chat backend interface every model server implementation follows.

A backend turns messages into a stream of text pieces. Which implementation serves
a model is decided once, by `ChatModelConfig.backend`, in registry.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol

from workers.protocol import ChatMessage, ErrorInfo, GenerationParams, Usage


class BackendError(Exception):
    """A failure with an owner-facing message and the HTTP status the API should use."""

    code = "backend_error"
    status = 500

    def info(self) -> ErrorInfo:
        return ErrorInfo(code=self.code, message=str(self), status=self.status)


class ModelUnavailable(BackendError):
    """The model cannot be used: file missing or unreadable, server unreachable."""

    code = "model_unavailable"
    status = 503


class TransientBackendError(BackendError):
    """Worth retrying: a timeout or a dropped connection to a model server."""

    code = "backend_transient"
    status = 503


class BadGenerationRequest(BackendError):
    """The request cannot be served as asked (too long for the context, bad schema)."""

    code = "bad_request"
    status = 400


@dataclass
class ChatDelta:
    """One piece of a streamed answer. The last one carries finish_reason and usage."""

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None


class ChatBackend(Protocol):
    model_name: str

    def check(self) -> None:
        """Raise ModelUnavailable with a fix if the model cannot serve now."""

    def stream(self, messages: list[ChatMessage], params: GenerationParams) -> Iterator[ChatDelta]:
        """Generate an answer piece by piece."""
