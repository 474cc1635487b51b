"""Errors every layer reports the same way: an owner-facing message (what is wrong and
what to do) and the HTTP status the API answers with.

A worker turns a BackendError into an ErrorInfo on its event stream; the API turns an
ErrorInfo into `{"error": {...}}`. Adapter and memory errors subclass BackendError.
"""

from __future__ import annotations

from pydantic import BaseModel


class ErrorInfo(BaseModel):
    """A failure the owner can act on: what is wrong, what to do, which HTTP status."""

    code: str
    message: str
    status: int = 500
    # When trying again later makes sense (a busy queue): the API's Retry-After header.
    retry_after_s: int | None = None


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
