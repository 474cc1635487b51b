"""One answer in flight: its text stream and its task's live events, read side by side.

Streamlit runs a page in one thread, so two background threads read the HTTP streams
(the chat SSE and /tasks/{id}/events) into queues, and the page's generator drains
both: text goes to st.write_stream, events refresh the live step panel in between.
The threads never call Streamlit.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ui.api_client import ApiClient, ApiError

POLL_S = 0.2


@dataclass
class LiveTask:
    """What the events have said so far about the task (plan, steps by id, status)."""

    status: str = "running"
    mode: str | None = None
    plan: dict[str, Any] | None = None
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None

    def apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "task":
            self.status = event.get("status") or self.status
            self.mode = event.get("mode") or self.mode
            self.error = event.get("error") or self.error
        elif kind == "plan" and isinstance(event.get("plan"), dict):
            self.plan = event["plan"]
            for step in self.plan.get("steps", []):
                if isinstance(step, dict) and "id" in step:
                    self.steps.setdefault(str(step["id"]), {"id": step["id"], "state": "pending", **step})
        elif kind == "step":
            sid = str(event.get("step_id") or event.get("id") or "?")
            fields = {k: v for k, v in event.items() if k not in ("type", "step_id", "task_id", "at")}
            self.steps.setdefault(sid, {"id": sid}).update(fields)


class LiveAnswer:
    """Start with `start()`, then iterate `text()`.

    The API answers with the stream's headers (X-Task-Id) as soon as the answer text
    starts or, for a planned answer, as soon as its plan starts; the task's events are
    followed from then on, so the steps show while they run.
    """

    def __init__(self, client: ApiClient, prompt: str, conversation_id: str, **chat_options: Any) -> None:
        self.client = client
        self.prompt = prompt
        self.conversation_id = conversation_id
        self.options = chat_options
        self.meta: dict[str, str] = {}
        self.task = LiveTask()
        self._text: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._events_lock = threading.Lock()
        self._events_task: str | None = None

    def start(self) -> LiveAnswer:
        threading.Thread(target=self._read_answer, daemon=True, name="ui-answer").start()
        return self

    def _follow_events(self, task_id: str) -> None:
        with self._events_lock:
            if self._events_task is not None:
                return
            self._events_task = task_id
        self.meta.setdefault("task_id", task_id)
        threading.Thread(target=self._read_events, args=(task_id,), daemon=True, name="ui-task-events").start()

    def _on_headers(self, meta: dict[str, str]) -> None:
        self.meta.update({k: v for k, v in meta.items() if v})
        if meta.get("task_id"):
            self._follow_events(meta["task_id"])

    def _read_answer(self) -> None:
        try:
            for piece in self.client.stream_chat(self.prompt, self.conversation_id, on_headers=self._on_headers,
                                                 on_reasoning=lambda r: self._text.put(("reasoning", r)),
                                                 **self.options):
                self._text.put(("text", piece))
        except ApiError as exc:
            self._text.put(("error", exc))
        except Exception as exc:  # never let a reader thread die silently
            self._text.put(("error", ApiError(0, f"the answer stream broke: {type(exc).__name__}: {exc}")))
        finally:
            self._text.put(("end", None))

    def _read_events(self, task_id: str) -> None:
        try:
            for event in self.client.task_events(task_id):
                self._events.put(event)
        except (ApiError, ValueError):
            pass  # the panel falls back to GET /tasks/{id} once the answer is done

    def _drain_events(self, on_change: Callable[[LiveTask], None]) -> None:
        changed = False
        while True:
            try:
                self.task.apply(self._events.get_nowait())
                changed = True
            except queue.Empty:
                break
        if changed:
            on_change(self.task)

    def text(self, on_change: Callable[[LiveTask], None] = lambda _: None,
             on_reasoning: Callable[[str], None] = lambda _: None) -> Iterator[str]:
        """Answer pieces as they come (reasoning goes to `on_reasoning`); raises ApiError
        if the answer fails."""
        while True:
            try:
                kind, value = self._text.get(timeout=POLL_S)
            except queue.Empty:
                self._drain_events(on_change)
                continue
            self._drain_events(on_change)
            if kind == "text":
                yield value
            elif kind == "reasoning":
                on_reasoning(value)
            elif kind == "error":
                raise value
            else:
                return
