"""One error shape for every route: {"error": {"message", "type", "code"}} (OpenAI's)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
# Starlette's class, not FastAPI's subclass: unknown routes (404) and wrong methods (405)
# are raised by the router as Starlette's, and must get the same envelope.
from starlette.exceptions import HTTPException

import logging

from core_agent.access.principal import ScopeDenied
from core_agent.api.openai_protocol import ErrorBody, ErrorResponse
from configs.redis_connect import BROKER_DOWN, broker_down_info
from configs.contracts.errors import ErrorInfo

log = logging.getLogger("appliance.api")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 405: "invalid_request_error", 409: "conflict_error", 413: "request_too_large",
          415: "unsupported_media_type", 422: "invalid_request_error", 429: "rate_limit_error",
          503: "service_unavailable", 504: "timeout"}


def error_response(status: int, message: str, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(message=message, type=_TYPES.get(status, "server_error"), code=code))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def retry_headers(info: ErrorInfo, headers: dict[str, str] | None = None) -> dict[str, str] | None:
    """`headers` plus Retry-After when the error says when to try again (a busy queue)."""
    if info.retry_after_s is None:
        return headers
    return {**(headers or {}), "Retry-After": str(info.retry_after_s)}


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if p != "body")
        parts.append(f"{loc or 'body'}: {err['msg']}")
    return "invalid request: " + "; ".join(parts)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def _http_message(request: Request, exc: HTTPException) -> str:
    """The router's bare "Not Found" / "Method Not Allowed" say which route and what to do."""
    if exc.status_code == 404 and exc.detail == "Not Found":
        return f"no route {request.method} {request.url.path}; see /docs for the routes this API has"
    if exc.status_code == 405 and exc.detail == "Method Not Allowed":
        headers = {k.lower(): v for k, v in (getattr(exc, "headers", None) or {}).items()}
        allowed = headers.get("allow", "")
        return f"{request.method} is not allowed on {request.url.path}" + (f"; use {allowed}" if allowed else "")
    return str(exc.detail)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, _http_message(request, exc), _HTTP_CODES.get(exc.status_code),
                              headers=getattr(exc, "headers", None))

    @app.exception_handler(ScopeDenied)
    async def _denied(_: Request, exc: ScopeDenied) -> JSONResponse:
        return error_response(403, exc.message, "scope_missing")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, _validation_message(exc), "invalid_request")

    for broker_error in BROKER_DOWN:
        @app.exception_handler(broker_error)
        async def _broker_down(request: Request, exc: Exception) -> JSONResponse:
            info = broker_down_info(request.app.state.appliance.settings.redis_url, exc)
            return error_response(info.status, info.message, info.code, headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's ServerErrorMiddleware calls this for anything unhandled: the body is
        # still our envelope (not text/plain "Internal Server Error"); the log has the trace.
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, f"internal error ({exc.__class__.__name__}); the API log has the details",
                              "internal")
