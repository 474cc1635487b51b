"""The chat page: conversation sidebar, streamed answers, per-answer panels, profile and adapter."""

from __future__ import annotations

from typing import Any

import streamlit as st

from ui.api_client import ApiClient, ApiError
from ui.components import show_error, upload_documents
from ui.live_answer import LiveAnswer
from ui.thinking import ThinkingSection, show_thinking
from ui.task_panel import render_live, render_panel

PROFILES = ["fast", "think", "code", "dialog"]
DEFAULT_PROFILE = "dialog"
MODES = ["auto", "direct", "plan"]
BASE_MODEL = "(base model)"
DEFAULT_MODEL = "(default)"
PANEL_HISTORY = 20  # older answers show no panel, to keep reruns light


def _open(client: ApiClient, conversation: dict[str, Any] | None) -> None:
    st.session_state.conversation_id = conversation["id"] if conversation else None
    st.session_state.conversation_title = conversation["title"] if conversation else None
    st.session_state.confirm_delete = None
    st.session_state.history = []
    if conversation:
        try:
            st.session_state.history = client.messages(conversation["id"])
        except ApiError as exc:
            show_error("Could not open the conversation", exc)


def conversation_sidebar(client: ApiClient) -> None:
    sb = st.sidebar
    sb.subheader("Conversations")
    if sb.button("+ New conversation", key="new-conversation", use_container_width=True):
        _open(client, None)
    query = sb.text_input("Search conversations", key="conversation-search", placeholder="words in titles or messages")
    try:
        conversations = client.conversations(query=query.strip() or None)
    except ApiError as exc:
        sb.error(f"Could not list conversations: {exc}")
        return
    if query and not conversations:
        sb.caption("No conversation matches.")
    current = st.session_state.get("conversation_id")
    for conv in conversations[:50]:
        label = ("» " if conv["id"] == current else "") + (conv["title"] or conv["id"])
        if conv.get("namespace", "owner") != "owner":
            label += f"  [{conv['namespace']}]"  # a key's or webhook's thread (docs/security.md)
        if sb.button(label, key=f"conv-{conv['id']}", use_container_width=True):
            _open(client, conv)
            st.rerun()
    if current:
        _manage_current(client, current)


def _manage_current(client: ApiClient, cid: str) -> None:
    with st.sidebar.expander("This conversation"):
        title = st.text_input("Title", value=st.session_state.get("conversation_title") or "", key=f"title-{cid}")
        if st.button("Rename", key=f"rename-{cid}"):
            try:
                conv = client.rename_conversation(cid, title.strip())
            except ApiError as exc:
                show_error("Could not rename", exc)
            else:
                st.session_state.conversation_title = conv["title"]
                st.rerun()
        if st.session_state.get("confirm_delete") != cid:
            if st.button("Delete conversation", key=f"delete-{cid}"):
                st.session_state.confirm_delete = cid
                st.rerun()
        else:
            st.warning("Delete this conversation and its messages? This cannot be undone.")
            if st.button("Yes, delete it", key=f"confirm-delete-{cid}", type="primary"):
                try:
                    client.delete_conversation(cid)
                except ApiError as exc:
                    show_error("Could not delete", exc)
                else:
                    _open(client, None)
                    st.toast("Conversation deleted")
                    st.rerun()
            if st.button("Keep it", key=f"keep-{cid}"):
                st.session_state.confirm_delete = None
                st.rerun()


def allowed_adapters(client: ApiClient) -> tuple[list[str], str | None]:
    """Adapter names the policy lets the owner's chat use, and a note when there are none."""
    try:
        listing = client.adapters(task="chat", source="owner")  # filtered by the policy
    except ApiError as exc:
        if exc.status == 404:
            return [], "adapters are not available on this API"
        return [], f"adapters unavailable: {exc}"
    items = listing.get("adapters", []) if isinstance(listing, dict) else listing or []
    names = []
    for item in items:
        if not isinstance(item, dict) or "name" not in item:
            continue
        allowed = item.get("allowed_for_owner", item.get("allowed"))
        tasks = item.get("tasks")
        if allowed is False or (isinstance(tasks, list) and tasks and "chat" not in tasks):
            continue
        names.append(item["name"])
    return names, None if names else "no adapter is allowed for chat"


def _models(client: ApiClient) -> list[str]:
    if "models" not in st.session_state:
        try:
            st.session_state.models = client.models()
        except ApiError:
            return [DEFAULT_MODEL]  # the chat itself will show why the API is unhappy
    return [DEFAULT_MODEL, *st.session_state.models]


def chat_settings(client: ApiClient) -> dict[str, Any]:
    cols = st.columns([3, 2])
    with cols[0]:
        profile = st.segmented_control("Profile", PROFILES, default=DEFAULT_PROFILE, key="profile",
                                       help="fast: short answers · think: reasons first · code: programming · "
                                            "dialog: conversation")
    with cols[1]:
        names, note = allowed_adapters(client)
        adapter = st.selectbox("Adapter", [BASE_MODEL, *names], key="adapter",
                               help="Only adapters the policy allows for chat are listed. " + (note or ""))
    with st.expander("Options"):
        mode = st.radio("How to answer", MODES, horizontal=True, key="mode",
                        help="auto: the appliance decides · direct: one answer · plan: split into steps")
        model = st.selectbox("Model", _models(client), key="model",
                             help="The chat model for direct answers (the planner picks models for plan steps)")
        max_tokens = st.number_input("Max answer tokens (0 = profile default)", min_value=0, max_value=32768,
                                     value=0, step=64, key="max_tokens")
        upload_documents(client, key="chat-docs")
    return {"profile": profile or DEFAULT_PROFILE, "adapter": None if adapter == BASE_MODEL else adapter,
            "mode": mode, "max_tokens": int(max_tokens) or None, "model": None if model == DEFAULT_MODEL else model}


def show_history(client: ApiClient) -> None:
    history = st.session_state.history
    first_panel = max(0, len(history) - 2 * PANEL_HISTORY)
    for i, msg in enumerate(history):
        with st.chat_message(msg["role"]):
            show_thinking(msg.get("thinking"))
            st.markdown(msg["content"])
            if msg["role"] == "assistant" and i >= first_panel:
                render_panel(client, msg.get("task_id"), msg.get("meta"), msg.get("model"))


def answer(client: ApiClient, prompt: str, options: dict[str, Any]) -> None:
    st.session_state.history.append({"role": "user", "content": prompt})
    with st.chat_message("user"):
        st.markdown(prompt)
    if not st.session_state.conversation_id:
        # Created first, so the sidebar knows the conversation (id and title) while it streams.
        try:
            conv = client.create_conversation(title=prompt[:60])
        except ApiError as exc:
            show_error("Could not start a conversation", exc)
            return
        st.session_state.conversation_id, st.session_state.conversation_title = conv["id"], conv["title"]
    live = LiveAnswer(client, prompt, st.session_state.conversation_id, **options).start()
    with st.chat_message("assistant"):
        steps = st.empty()
        thinking = ThinkingSection()
        try:
            text = st.write_stream(live.text(on_change=lambda task: _show_live(steps, task),
                                             on_reasoning=thinking.add))
        except ApiError as exc:
            steps.empty()
            show_error("The appliance could not answer", exc)
            return
        steps.empty()
        if not isinstance(text, str):
            text = "".join(str(t) for t in text)
        render_panel(client, live.meta.get("task_id"))
    st.session_state.history.append({"role": "assistant", "content": text, "task_id": live.meta.get("task_id"),
                                     "thinking": thinking.text or None})
    st.rerun()  # redraw from the stored turn: the sidebar now lists and marks this conversation


def _show_live(placeholder: Any, task: Any) -> None:
    with placeholder.container():
        render_live(task)


def render(client: ApiClient) -> None:
    st.session_state.setdefault("history", [])
    st.session_state.setdefault("conversation_id", None)
    conversation_sidebar(client)
    st.title(st.session_state.get("conversation_title") or "Chat")
    options = chat_settings(client)
    show_history(client)
    prompt = st.chat_input("Ask anything")
    if prompt:
        answer(client, prompt, options)
