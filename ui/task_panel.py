"""The per-answer panel: plan, each step's state, worker, model, adapter, timings, sources.

Built from GET /tasks/{id} once an answer is done, and from the live events while it
runs. When the API has no task record (older API, or the record expired) the panel
says so and shows what the stored message knows (model, tokens).
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from ui.api_client import ApiClient, ApiError
from ui.live_answer import LiveTask

# Plain symbols (not emoji): they render with the fonts every browser has.
STATE_ICONS = {"pending": "○", "queued": "○", "running": "◐", "succeeded": "✓", "failed": "✗",
               "skipped": "↷", "cancelled": "⊘"}


def _icon(state: str | None) -> str:
    return STATE_ICONS.get(state or "", "•")


def _seconds(value: Any) -> str:
    return f"{value:.2f} s" if isinstance(value, (int, float)) else "–"


def step_rows(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for s in steps:
        tokens = (s.get("prompt_tokens") or 0) + (s.get("completion_tokens") or 0)
        rows.append({"step": s.get("id"), "state": f"{_icon(s.get('state'))} {s.get('state', '?')}",
                     "worker": s.get("worker"), "model": s.get("model") or "–", "adapter": s.get("adapter") or "–",
                     "time": _seconds(s.get("seconds")), "tokens": tokens or (s.get("tokens") or "–"),
                     "depends on": ", ".join(s.get("depends_on") or []) or "–"})
    return rows


def render_live(task: LiveTask) -> None:
    """Step lines while the answer is being made (inside a placeholder)."""
    lines = [f"{_icon(task.status)} task **{task.status}**" + (f" · mode {task.mode}" if task.mode else "")]
    for sid, step in task.steps.items():
        extra = " · ".join(str(step[k]) for k in ("worker", "model", "adapter") if step.get(k))
        secs = f" · {_seconds(step.get('seconds'))}" if step.get("seconds") is not None else ""
        lines.append(f"- {_icon(step.get('state'))} `{sid}` {step.get('state', 'pending')}"
                     + (f" · {extra}" if extra else "") + secs)
    if task.error:
        lines.append(f"- ✗ {task.error}")
    st.markdown("\n".join(lines))


def render_record(record: dict[str, Any]) -> None:
    status = record.get("status", "?")
    head = f"{_icon(status)} **{status}** · mode `{record.get('mode', '?')}`"
    if record.get("route_reason"):
        head += f" ({record['route_reason']})"
    if record.get("source") and record["source"] != "owner":
        head += f" · from {record['source']}"
    if record.get("created_at") and record.get("finished_at"):
        head += f" · {_seconds(record['finished_at'] - record['created_at'])}"
    st.markdown(head)
    if record.get("error"):
        st.error(record["error"])
    steps = record.get("steps") or []
    if steps:
        st.markdown("**Steps**")
        st.table(step_rows(steps))
        for s in steps:
            detail = s.get("error") or s.get("result_summary")
            st.caption(f"`{s.get('id')}` {s.get('instruction', '')}" + (f" → {detail}" if detail else ""))
    sources = record.get("sources") or []
    st.markdown("**Memory sources**" if sources else "_No memory sources were used._")
    for i, src in enumerate(sources, 1):
        n = src.get("n", i)
        where = src.get("title") or src.get("source") or "?"
        if src.get("heading_path"):
            where += f" › {src['heading_path']}"
        score = src.get("score")
        st.markdown(f"[{n}] {where} · {src.get('kind', '')}" + (f" · score {score:.2f}" if isinstance(score, (int, float)) else ""))


def render_message_meta(meta: dict[str, Any]) -> None:
    usage = meta.get("usage") or {}
    parts = [f"{k.replace('_', ' ')}: {v}" for k, v in usage.items() if isinstance(v, (int, float))]
    if meta.get("finish_reason"):
        parts.append(f"finish: {meta['finish_reason']}")
    if parts:
        st.caption(" · ".join(parts))


def task_record(client: ApiClient, task_id: str) -> dict[str, Any] | str:
    """The task record (cached once finished) or a readable reason why there is none."""
    cache: dict[str, Any] = st.session_state.setdefault("task_cache", {})
    if task_id in cache:
        return cache[task_id]
    try:
        record = client.task(task_id)
    except ApiError as exc:
        return ("this API does not report task details yet" if exc.status == 404 and "does not exist" not in str(exc)
                else f"no task details: {exc}")
    if record.get("status") in ("succeeded", "failed", "cancelled"):
        cache[task_id] = record
    return record


def render_panel(client: ApiClient, task_id: str | None, meta: dict[str, Any] | None = None,
                 model: str | None = None) -> None:
    """The collapsible 'how this answer was made' panel under an answer."""
    if not task_id:
        return
    with st.expander("How this answer was made", expanded=False):
        st.caption(f"task `{task_id}`" + (f" · model `{model}`" if model else ""))
        render_message_meta(meta or {})
        record = task_record(client, task_id)
        if isinstance(record, str):
            st.info(record)
        else:
            render_record(record)
