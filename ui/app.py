"""Streamlit chat against the core API (HTTP only).

Run: streamlit run ui/app.py  (`appliance up` starts it on ui_port).
"""

from __future__ import annotations

import os

import streamlit as st

from ui.api_client import ApiClient, ApiError


def default_api_url() -> str:
    try:
        from configs.loader import load_settings

        return load_settings().api_url
    except Exception:  # the UI must still open with a broken config, to show the error
        return os.environ.get("APPLIANCE_API_PUBLIC_URL", "http://127.0.0.1:8000")


def login() -> ApiClient | None:
    st.sidebar.header("Appliance")
    api_url = st.sidebar.text_input("API URL", value=st.session_state.get("api_url") or default_api_url())
    token = st.sidebar.text_input("Owner token", type="password", value=st.session_state.get("token", ""),
                                  help="Printed by scripts/up.sh; stored in <data dir>/owner.token")
    if not token:
        st.info("Enter the owner token in the sidebar to start.")
        return None
    client = ApiClient(api_url, token)
    if st.session_state.get("token") != token or st.session_state.get("api_url") != api_url:
        try:
            client.check_token()
        except ApiError as exc:
            st.error(f"Login failed: {exc}")
            return None
        st.session_state.token, st.session_state.api_url = token, api_url
    return client


def conversation_sidebar(client: ApiClient) -> None:
    if st.sidebar.button("New conversation"):
        st.session_state.conversation_id = None
        st.session_state.history = []
    try:
        conversations = client.conversations()
    except ApiError as exc:
        st.sidebar.error(str(exc))
        return
    for conv in conversations[:50]:
        if st.sidebar.button(conv["title"] or conv["id"], key=f"conv-{conv['id']}"):
            st.session_state.conversation_id = conv["id"]
            st.session_state.history = [
                {"role": m["role"], "content": m["content"]} for m in client.messages(conv["id"])]


def main() -> None:
    st.set_page_config(page_title="Appliance chat", layout="wide")
    st.session_state.setdefault("history", [])
    st.session_state.setdefault("conversation_id", None)
    client = login()
    if client is None:
        return
    conversation_sidebar(client)
    st.title("Chat")
    for turn in st.session_state.history:
        with st.chat_message(turn["role"]):
            st.markdown(turn["content"])
    prompt = st.chat_input("Ask anything")
    if not prompt:
        return
    st.session_state.history.append({"role": "user", "content": prompt})
    with st.chat_message("user"):
        st.markdown(prompt)
    meta: dict[str, str] = {}
    with st.chat_message("assistant"):
        try:
            answer = st.write_stream(client.stream_chat(prompt, st.session_state.conversation_id, meta=meta))
        except ApiError as exc:
            st.error(f"The appliance could not answer: {exc}")
            return
    st.session_state.conversation_id = meta.get("conversation_id") or st.session_state.conversation_id
    st.session_state.history.append({"role": "assistant", "content": answer})


main()
