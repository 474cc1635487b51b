"""Refuse JSON bodies whose text is not valid Unicode, before any route sees them.

JSON may spell a lone UTF-16 surrogate as an escape ("a\\ud800b"); Python's json module
decodes it into a str that cannot be encoded as UTF-8, so it would fail later wherever the
text is written (SQLite, Redis, a tokenizer) as a 500, possibly after something was
stored. Checked here, at the protocol boundary, for every route: a 400 naming the field.
Raw bytes that are not UTF-8 are refused the same way.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from core_agent.api.body_limit import replay_body

# A \uD800-\uDFFF escape somewhere in the raw body: only then is the body parsed here.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _is_json(scope: Scope) -> bool:
    content_type = dict(scope.get("headers") or []).get(b"content-type", b"").split(b";")[0].strip().lower()
    return content_type == b"application/json" or content_type.endswith(b"+json")


def _broken(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def lone_surrogate_path(value: Any, path: str = "body") -> str | None:
    """Where in a decoded JSON value the first string with a lone surrogate is; None if none."""
    if isinstance(value, str):
        return path if _broken(value) else None
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = lone_surrogate_path(item, f"{path}[{i}]")
            if found:
                return found
    if isinstance(value, dict):
        for key, item in value.items():
            if _broken(key):
                return f"{path} (a key)"
            found = lone_surrogate_path(item, f"{path}.{key}")
            if found:
                return found
    return None


def invalid_text_reason(body: bytes) -> str | None:
    """Why this JSON body's text is not valid Unicode; None when it is (or is not JSON at
    all: the route's own parser reports that)."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (f"the request body is not valid UTF-8 (byte {exc.start}); send JSON text encoded "
                f"as UTF-8")
    if not _SURROGATE_ESCAPE.search(body):
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return None
    where = lone_surrogate_path(value)
    if where is None:
        return None
    return (f"{where.removeprefix('body.')} contains an unpaired UTF-16 surrogate escape (e.g. \\ud800 "
            f"without its low half): that is not valid Unicode text. Send the character itself or a "
            f"complete surrogate pair")


class RejectInvalidText:
    """ASGI middleware: 400 for JSON bodies that are not valid Unicode text."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH") or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        # The body is bounded: BodySizeLimit, outside this middleware, refuses larger ones.
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        reason = invalid_text_reason(body)
        if reason is not None:
            await _send_error(send, reason)
            return
        await self.app(scope, replay_body(body, receive), send)


async def _send_error(send: Send, message: str) -> None:
    payload = json.dumps({"error": {"message": message, "type": "invalid_request_error",
                                    "code": "invalid_unicode"}}).encode()
    await send({"type": "http.response.start", "status": 400,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
