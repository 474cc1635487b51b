"""Faults injected into a running stack, and a chat client that records what it saw.

Shared by bench/chaos.py (the fault matrix) and tests/test_liveness.py. Processes are
found through the launcher's PID records (core_agent/ops/launcher.py), so only the
stack's own processes are ever signalled.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx

from bench.harness.stack import Stack
from core_agent.ops import launcher


def children_of(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def service_pid(stack: Stack, name: str) -> int:
    pid = launcher.running(stack.settings, name)
    if pid is None:
        raise RuntimeError(f"service {name} is not running in this stack")
    return pid


def kill_service(stack: Stack, name: str, sig: int = signal.SIGKILL) -> int:
    """Signal a whole service: its main process and every child (its process group)."""
    pid = service_pid(stack, name)
    os.killpg(pid, sig)
    return pid


def kill_pool_child(stack: Stack, name: str) -> int:
    """SIGKILL the (single) pool process of a Celery worker; the main process stays."""
    [child] = children_of(service_pid(stack, name))
    os.kill(child, signal.SIGKILL)
    return child


def wait_gone(pid: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while launcher.process_alive(pid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"pid {pid} still runs {timeout_s:g}s after it was signalled")
        time.sleep(0.05)


def restart(stack: Stack, *names: str) -> float:
    """Start these services again (as `appliance up` would); seconds until healthy."""
    t0 = time.monotonic()
    launcher.up(stack.settings, progress=lambda line: None, only=set(names))
    return time.monotonic() - t0


class Background:
    """Run a restart (or any slow repair) without blocking the client that is reading."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.result = fn()
        except BaseException as exc:  # reported by join()
            self.error = exc

    def join(self, timeout_s: float = 180.0) -> Any:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise RuntimeError(f"background repair still running after {timeout_s:g}s")
        if self.error is not None:
            raise self.error
        return self.result


@dataclass
class StreamOutcome:
    """What a streaming chat client saw, with monotonic timestamps."""

    task_id: str = ""
    conversation_id: str = ""
    pieces: list[str] = field(default_factory=list)
    before_fault: int = 0            # characters received before the fault
    error: dict[str, Any] | None = None
    done: bool = False               # the end marker arrived
    broken: str | None = None        # the connection broke (what httpx said)
    fault_at: float | None = None
    heard_at: float | None = None    # first thing after the fault: text, error, end or break
    ended_at: float | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def heard_after_s(self) -> float | None:
        return None if self.fault_at is None or self.heard_at is None else self.heard_at - self.fault_at

    def seen(self) -> str:
        """One line for the fault matrix."""
        if self.error is not None:
            how = f"error `{self.error.get('type')}` + end" if self.done else f"error `{self.error.get('type')}`"
        elif self.done:
            how = "full answer + end"
        elif self.broken:
            how = "connection dropped"
        else:
            how = "stream still open at the reader's time limit"
        return how


def stream_chat(stack: Stack, body: dict[str, Any], fault: Callable[[], Any] | None = None,
                after_chars: int = 40, timeout_s: float = 240.0) -> StreamOutcome:
    """POST a streaming chat; once `after_chars` characters of answer arrived, call `fault`
    and go on reading until the end marker, an error, a dropped connection or `timeout_s`."""
    out = StreamOutcome()
    deadline = time.monotonic() + timeout_s

    def note() -> None:
        if out.fault_at is not None and out.heard_at is None:
            out.heard_at = time.monotonic()

    try:
        with stack.http(timeout=httpx.Timeout(timeout_s, read=timeout_s)) as http, \
                http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as resp:
            resp.raise_for_status()
            out.task_id = resp.headers.get("x-task-id", "")
            out.conversation_id = resp.headers.get("x-conversation-id", "")
            for line in resp.iter_lines():
                if time.monotonic() > deadline:
                    break
                if line == "data: [DONE]":
                    note()
                    out.done = True
                    break
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    note()
                    out.error = chunk["error"]
                    continue
                delta = (chunk.get("choices") or [{}])[0].get("delta", {}).get("content")
                if delta:
                    note()
                    out.pieces.append(delta)
                    if fault is not None and out.fault_at is None and len(out.text) >= after_chars:
                        out.before_fault = len(out.text)
                        fault()
                        out.fault_at = time.monotonic()
    except httpx.HTTPError as exc:
        note()
        out.broken = f"{exc.__class__.__name__}: {exc}"
    out.ended_at = time.monotonic()
    return out


def poll_until(stack: Stack, path: str, done: Callable[[dict[str, Any]], bool],
               timeout_s: float = 120.0) -> dict[str, Any]:
    """Poll GET `path` until `done(body)` (the API may be restarting meanwhile)."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            with stack.http(timeout=10) as http:
                resp = http.get(path)
            if resp.status_code == 200:
                last = resp.json()
                if done(last):
                    return last
        except httpx.HTTPError:
            pass  # the API is not back yet
        time.sleep(0.2)
    raise AssertionError(f"{path} not as expected after {timeout_s:g}s: {last}")


def wait_task_settled(stack: Stack, task_id: str, timeout_s: float = 120.0) -> dict[str, Any]:
    """Poll GET /tasks/{id} until it is no longer queued or running."""
    return poll_until(stack, f"/tasks/{task_id}", lambda task: task["status"] not in ("queued", "running"),
                      timeout_s)


def stored_answers(stack: Stack, conversation_id: str, task_id: str) -> list[dict[str, Any]]:
    """The assistant messages stored for this task."""
    with stack.http(timeout=30) as http:
        resp = http.get(f"/conversations/{conversation_id}/messages")
    if resp.status_code == 404:
        return []
    resp.raise_for_status()
    return [m for m in resp.json() if m["role"] == "assistant" and m.get("task_id") == task_id]
