"""A small HTTP client for the core API, used by the Streamlit pages (HTTP only, no core imports).

Errors come back as ApiError with the API's own readable message, so pages can
show them without tracebacks.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator

import httpx


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _message(resp: httpx.Response) -> str:
    try:
        return resp.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {resp.status_code}: {(resp.text or resp.reason_phrase)[:300]}"


def sse_data(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """JSON objects from `data:` lines of a server-sent event stream, until [DONE]."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        if data:
            yield json.loads(data)


class ApiClient:
    def __init__(self, base_url: str, token: str, timeout: float = 300.0) -> None:
        self.base_url = base_url.rstrip("/")
        # X-Appliance-Client: the API applies the UI's memory default (configs/traffic.yaml).
        self.headers = {"Authorization": f"Bearer {token}", "X-Appliance-Client": "ui"}
        self.timeout = timeout

    def _unreachable(self, exc: Exception) -> ApiError:
        return ApiError(0, f"cannot reach the API at {self.base_url} ({type(exc).__name__}). "
                           f"Is the appliance running? Check with scripts/status.sh")

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        timeout = kwargs.pop("timeout", self.timeout)
        try:
            resp = httpx.request(method, self.base_url + path, headers=self.headers, timeout=timeout, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, _message(resp))
        return resp.json() if resp.content else None

    # --- login and conversations ---

    def check_token(self) -> None:
        self._request("GET", "/v1/models", timeout=10)

    def models(self) -> list[str]:
        return [m["id"] for m in self._request("GET", "/v1/models")["data"]]

    def conversations(self, query: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if query:
            params["q"] = query
        return self._request("GET", "/conversations", params=params)

    def messages(self, conversation_id: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/conversations/{conversation_id}/messages")

    def create_conversation(self, title: str = "New conversation") -> dict[str, Any]:
        return self._request("POST", "/conversations", json={"title": title})

    def rename_conversation(self, conversation_id: str, title: str) -> dict[str, Any]:
        return self._request("PATCH", f"/conversations/{conversation_id}", json={"title": title})

    def delete_conversation(self, conversation_id: str) -> None:
        self._request("DELETE", f"/conversations/{conversation_id}")

    # --- chat and tasks ---

    def stream_chat(self, message: str, conversation_id: str | None, *, model: str | None = None,
                    profile: str | None = None, adapter: str | None = None, mode: str | None = None,
                    max_tokens: int | None = None, plan: dict[str, Any] | None = None,
                    on_headers: Callable[[dict[str, str]], None] | None = None,
                    on_reasoning: Callable[[str], None] | None = None) -> Iterator[str]:
        """Yield answer text pieces; `on_headers` gets the task and conversation ids first,
        `on_reasoning` the model's reasoning pieces (reasoning_content), which are not text.
        `plan` sends explicit steps instead of asking the planner (workflow-style requests)."""
        body: dict[str, Any] = {"messages": [{"role": "user", "content": message}], "stream": True}
        optional = {"conversation_id": conversation_id, "model": model, "profile": profile, "adapter": adapter,
                    "mode": mode, "max_tokens": max_tokens, "plan": plan}
        body.update({k: v for k, v in optional.items() if v})
        try:
            with httpx.stream("POST", f"{self.base_url}/v1/chat/completions", json=body,
                              headers=self.headers, timeout=self.timeout) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise ApiError(resp.status_code, _message(resp))
                if on_headers is not None:
                    on_headers({"task_id": resp.headers.get("x-task-id", ""),
                                "conversation_id": resp.headers.get("x-conversation-id", "")})
                for chunk in sse_data(resp.iter_lines()):
                    if "error" in chunk:
                        err = chunk["error"]
                        raise ApiError(int(err.get("code") or 500) if str(err.get("code", "")).isdigit() else 500,
                                       err.get("message", "the answer failed"))
                    for choice in chunk.get("choices", []):
                        delta = choice.get("delta") or {}
                        if delta.get("reasoning_content") and on_reasoning is not None:
                            on_reasoning(delta["reasoning_content"])
                        piece = delta.get("content")
                        if piece:
                            yield piece
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc

    def task(self, task_id: str) -> dict[str, Any]:
        return self._request("GET", f"/tasks/{task_id}", timeout=15)

    def task_events(self, task_id: str) -> Iterator[dict[str, Any]]:
        """Live state changes of a task (SSE) until it ends."""
        try:
            with httpx.stream("GET", f"{self.base_url}/tasks/{task_id}/events", headers=self.headers,
                              timeout=httpx.Timeout(15, read=self.timeout)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise ApiError(resp.status_code, _message(resp))
                yield from sse_data(resp.iter_lines())
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc

    # --- memory and documents ---

    def memory_search(self, query: str, k: int = 5) -> dict[str, Any]:
        return self._request("POST", "/memory/search", json={"query": query, "k": k})

    def documents(self) -> list[dict[str, Any]]:
        return self._request("GET", "/documents")

    def upload_document(self, name: str, data: bytes) -> dict[str, Any]:
        return self._request("POST", "/documents", files=[("files", (name, data))])

    def remove_document(self, source: str) -> dict[str, Any]:
        return self._request("DELETE", "/documents", params={"source": source})

    def forget_conversation(self, conversation_id: str) -> None:
        self._request("DELETE", f"/memory/conversations/{conversation_id}")

    # --- adapters ---

    def adapters(self, task: str | None = None, source: str | None = None) -> Any:
        """All adapters, or only those the policy allows for (task, source)."""
        params = {k: v for k, v in {"task": task, "source": source}.items() if v}
        return self._request("GET", "/adapters", params=params or None, timeout=30)

    def adapter_action(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs)
