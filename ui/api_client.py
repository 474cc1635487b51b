"""A small HTTP client for the core API, used by the Streamlit pages.

Errors come back as ApiError with the API's own readable message, so pages can
show them without tracebacks.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import httpx


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _message(resp: httpx.Response) -> str:
    try:
        return resp.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return resp.text or resp.reason_phrase


class ApiClient:
    def __init__(self, base_url: str, token: str, timeout: float = 300.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}
        self.timeout = timeout

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = httpx.request(method, self.base_url + path, headers=self.headers, timeout=self.timeout, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach the API at {self.base_url}: {exc}") from exc
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, _message(resp))
        return resp.json() if resp.content else None

    def conversations(self) -> list[dict[str, Any]]:
        return self._request("GET", "/conversations")

    def messages(self, conversation_id: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/conversations/{conversation_id}/messages")

    def create_conversation(self, title: str = "New conversation") -> dict[str, Any]:
        return self._request("POST", "/conversations", json={"title": title})

    def check_token(self) -> None:
        self._request("GET", "/v1/models")

    def stream_chat(self, message: str, conversation_id: str | None, model: str | None = None,
                    meta: dict[str, str] | None = None) -> Iterator[str]:
        """Yield answer text pieces; `meta` receives the task and conversation ids."""
        body: dict[str, Any] = {"messages": [{"role": "user", "content": message}], "stream": True}
        if conversation_id:
            body["conversation_id"] = conversation_id
        if model:
            body["model"] = model
        try:
            with httpx.stream("POST", f"{self.base_url}/v1/chat/completions", json=body,
                              headers=self.headers, timeout=self.timeout) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise ApiError(resp.status_code, _message(resp))
                if meta is not None:
                    meta["task_id"] = resp.headers.get("x-task-id", "")
                    meta["conversation_id"] = resp.headers.get("x-conversation-id", "")
                for line in resp.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        raise ApiError(chunk["error"].get("code") or 500, chunk["error"]["message"])
                    for choice in chunk.get("choices", []):
                        piece = (choice.get("delta") or {}).get("content")
                        if piece:
                            yield piece
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach the API at {self.base_url}: {exc}") from exc
