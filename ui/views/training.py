"""The Adapters page's training part: start a job, follow it (progress, loss curve), see
the evaluation as plots, cancel or resume. Everything through /adapters/train (HTTP only)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from ui.api_client import ApiClient, ApiError
from ui.components import flash, show_error

RUNNING = {"queued", "preparing", "generating", "training", "evaluating", "registering"}


def train_form(client: ApiClient) -> None:
    with st.form("train-adapter"):
        st.markdown("**Train an adapter** from your own texts (folders/files on the appliance's machine, "
                    "a .jsonl of chat examples, or `memory:<query>`)")
        name = st.text_input("Name", key="train-name", placeholder="my-style")
        sources = st.text_area("Sources, one per line", key="train-sources",
                               placeholder="/home/me/notes\nmemory:my training diary")
        cols = st.columns(4)
        kind = cols[0].selectbox("Kind", ["style", "knowledge"], key="train-kind")
        tasks = cols[1].text_input("Task kinds", value="chat", key="train-tasks")
        rank = cols[2].number_input("Rank", min_value=1, max_value=1024, value=8, key="train-rank")
        steps = cols[3].number_input("Max steps (0 = epochs)", min_value=0, value=0, key="train-steps")
        cols = st.columns(2)
        epochs = cols[0].number_input("Epochs", min_value=0.1, value=1.0, key="train-epochs")
        eval_share = cols[1].number_input("Held-out share", min_value=0.05, max_value=0.45, value=0.10,
                                          key="train-eval-share")
        if st.form_submit_button("Start training"):
            lines = [s.strip() for s in sources.splitlines() if s.strip()]
            if not name.strip() or not lines:
                st.warning("Give the adapter a name and at least one source.")
                return
            body = {"name": name.strip(), "sources": lines, "kind": kind, "rank": int(rank),
                    "tasks": [t.strip() for t in tasks.split(",") if t.strip()], "max_steps": int(steps),
                    "epochs": float(epochs), "eval_share": float(eval_share)}
            try:
                started = client.adapter_action("POST", "/adapters/train", json=body, timeout=600)
            except ApiError as exc:
                show_error("Training refused", exc)
                return
            st.session_state["train-job"] = started["job"]
            flash(f"Training job {started['job']} started ({started['data']['train_examples']} training / "
                  f"{started['data']['eval_examples']} held-out examples)")


def loss_chart(status: dict[str, Any]) -> None:
    history = status.get("loss_history") or []
    if history:
        st.line_chart({"training loss": {int(step): loss for step, loss in history}}, x_label="step",
                      y_label="loss", height=220)


def evaluation_charts(evaluation: dict[str, Any]) -> None:
    """Held-out loss and perplexity, base vs adapter, and how much general answers moved."""
    cols = st.columns(2)
    cols[0].bar_chart({"held-out loss": {"base": evaluation["eval_loss_base"],
                                         "adapter": evaluation["eval_loss_adapter"]}}, height=220)
    cols[1].bar_chart({"perplexity": {"base": evaluation["perplexity_base"],
                                      "adapter": evaluation["perplexity_adapter"]}}, height=220)
    probe = evaluation.get("leakage_probe") or {}
    if probe:
        st.caption(f"Leakage probe: {probe.get('changed_share', 0):.0%} of {probe.get('questions')} general "
                   f"answers changed; leakage {probe.get('leakage', 0):.2f} (0 = general answers untouched, "
                   f"1 = rewritten). Keep a leaky adapter to its task kinds.")
        with st.expander("General answers with and without the adapter"):
            st.dataframe(probe.get("answers") or [], hide_index=True, width="stretch")


def job_panel(client: ApiClient, status: dict[str, Any]) -> None:
    job, state = status["job"], status["state"]
    total = status.get("total_steps") or 0
    st.markdown(f"**Job {job}** — adapter `{status['name']}` ({status['kind']}): **{state}** {status.get('message', '')}")
    if total:
        st.progress(min(1.0, status.get("step", 0) / total), text=f"step {status.get('step', 0)} of {total}")
    loss_chart(status)
    if status.get("evaluation"):
        evaluation_charts(status["evaluation"])
    if status.get("error"):
        st.error(status["error"].get("message", "the job failed"))
    cols = st.columns(3)
    if state in RUNNING and cols[0].button("Cancel training", key="train-cancel"):
        try:
            client.adapter_action("DELETE", f"/adapters/train/{job}")
        except ApiError as exc:
            show_error("Cancel failed", exc)
        else:
            flash(f"Job {job}: cancel requested (it stops after the current step)")
    if state in ("cancelled", "failed") and cols[0].button("Resume", key="train-resume"):
        try:
            client.adapter_action("POST", f"/adapters/train/{job}/resume")
        except ApiError as exc:
            show_error("Resume failed", exc)
        else:
            flash(f"Job {job} resumed from its last checkpoint")
    if state in RUNNING and cols[1].button("Refresh", key="train-refresh"):
        st.rerun()


def render(client: ApiClient) -> None:
    st.subheader("Training")
    try:
        jobs = client.adapter_action("GET", "/adapters/train", timeout=30) or []
    except ApiError as exc:
        if exc.status != 404:
            show_error("Could not list training jobs", exc)
        jobs = []
    if jobs:
        ids = [j["job"] for j in jobs]
        chosen = st.session_state.get("train-job")
        index = ids.index(chosen) if chosen in ids else 0
        job = st.selectbox("Training job", ids, index=index, key="train-job-picked",
                           format_func=lambda i: next(f"{i} · {j['name']} · {j['state']}" for j in jobs if j["job"] == i))
        job_panel(client, next(j for j in jobs if j["job"] == job))
    else:
        st.caption("No training jobs yet.")
    train_form(client)


def trained_evaluation(item: dict[str, Any]) -> None:
    """For an adapter the appliance trained: its stored evaluation as plots."""
    training = item.get("training") or {}
    if training.get("evaluation"):
        st.markdown(f"**Evaluation of `{item['name']}`** (trained {training.get('kind')} on "
                    f"{training.get('data', {}).get('train_examples')} examples, {training.get('steps')} steps)")
        evaluation_charts(training["evaluation"])
