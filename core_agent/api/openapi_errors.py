"""Make the OpenAPI schema say which error statuses the API really sends, in which shape.

FastAPI documents a 422 with its own `{"detail": [...]}` body on every route that
validates input; this API answers those with 400 and `{"error": {...}}` (errors.py).
So the generated schema is rewritten once: the 422 goes, and every operation lists the
statuses any route may answer (400 bad input, 401 no/wrong token, 403 scope, 404,
413 body too large, 503 Redis/worker/model unavailable, and `default` for the rest:
409, 429, 500, 504), each with the ErrorResponse model.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from core_agent.api.openai_protocol import ErrorResponse
from core_agent.api.openapi_links import add_links

ERROR_STATUSES = {
    "400": "Invalid request: the message names the field and what to send instead",
    "401": "Missing or wrong API token",
    "403": "The API key's scope does not allow this",
    "404": "No such route or resource",
    "413": "Request body (or an image/archive inside it) larger than the limit",
    "503": "Redis, a worker or a model is not available; retry later",
    "default": "Another error (409 conflict, 429 busy, 500 internal, 504 timeout)",
}
_REF = {"$ref": "#/components/schemas/ErrorResponse"}
# Routes that answer 200 with a Server-Sent Events stream (when asked to stream, or always).
STREAMING = {"/v1/chat/completions", "/v1/responses", "/tasks/{task_id}/events"}
SSE = {"text/event-stream": {"schema": {
    "type": "object", "description": "one Server-Sent Event: `data` is a JSON chunk, the last one is [DONE]",
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}}}}}


def _with_errors(schema: dict[str, Any]) -> dict[str, Any]:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    model_schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(model_schema.pop("$defs", {}))
    components["ErrorResponse"] = model_schema
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for route, path in schema.get("paths", {}).items():
        for operation in path.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            if route in STREAMING and "200" in responses:
                responses["200"].setdefault("content", {}).update(SSE)
            responses.pop("422", None)
            for status, description in ERROR_STATUSES.items():
                responses.setdefault(status, {"description": description,
                                              "content": {"application/json": {"schema": _REF}}})
    return schema


def install_error_schema(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_links(_with_errors(get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes)))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
