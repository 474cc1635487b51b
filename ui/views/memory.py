"""The memory page: search documents and past conversations, add documents, forget things."""

from __future__ import annotations

import time

import streamlit as st

from ui.api_client import ApiClient, ApiError
from ui.components import flash, show_error, show_flash, upload_documents


def search(client: ApiClient) -> None:
    st.subheader("Search")
    with st.form("memory-search"):
        query = st.text_input("What are you looking for?", key="memory-query")
        k = st.number_input("Results", min_value=1, max_value=50, value=5, key="memory-k")
        submitted = st.form_submit_button("Search")
    if not submitted:
        return
    if not query.strip():
        st.warning("Type something to search for.")
        return
    try:
        result = client.memory_search(query.strip(), int(k))
    except ApiError as exc:
        show_error("Search failed", exc)
        return
    hits = result.get("hits", [])
    st.caption(f"{len(hits)} result(s) in {result.get('seconds', 0):.2f} s ({result.get('mode', '')})")
    if not hits:
        st.info("Nothing in the memory matches. Add documents below, or chat first: conversations are remembered.")
    for i, hit in enumerate(hits, 1):
        where = hit.get("title") or hit.get("source")
        if hit.get("heading_path"):
            where = f"{where} › {hit['heading_path']}"
        source = f" — `{hit['source']}`" if hit.get("source") and hit["source"] != where else ""
        st.markdown(f"**[{i}] {where}**{source} · {hit.get('kind')} · score {hit.get('score', 0):.2f}")
        st.caption(hit.get("text", "")[:600])


def documents(client: ApiClient) -> None:
    st.subheader("Documents")
    upload_documents(client, key="memory-docs")
    try:
        docs = client.documents()
    except ApiError as exc:
        show_error("Could not list documents", exc)
        return
    if not docs:
        st.info("No documents yet.")
        return
    st.dataframe([{"source": d["source"], "title": d.get("title"), "passages": d.get("chunk_count"),
                   "added": time.strftime("%Y-%m-%d %H:%M", time.localtime(d.get("ingested_at", 0)))}
                  for d in docs], hide_index=True, use_container_width=True)
    source = st.selectbox("Document to forget", [d["source"] for d in docs], key="forget-doc")
    if st.button("Forget this document", key="forget-doc-button"):
        try:
            client.remove_document(source)
        except ApiError as exc:
            show_error("Could not forget the document", exc)
        else:
            flash(f"Forgot {source}: it is no longer searched or quoted.")


def forget_conversation(client: ApiClient) -> None:
    st.subheader("Forget a conversation")
    try:
        conversations = client.conversations()
    except ApiError as exc:
        show_error("Could not list conversations", exc)
        return
    if not conversations:
        st.info("No conversations.")
        return
    labels = {f"{c['title']} ({c['id'][:8]})": c["id"] for c in conversations}
    label = st.selectbox("Conversation", list(labels), key="forget-conv")
    if st.button("Forget this conversation", key="forget-conv-button"):
        try:
            client.forget_conversation(labels[label])
        except ApiError as exc:
            show_error("Could not forget the conversation", exc)
        else:
            if st.session_state.get("conversation_id") == labels[label]:
                st.session_state.conversation_id, st.session_state.history = None, []
            flash("Forgotten: its messages are deleted and it leaves the search index shortly.")


def render(client: ApiClient) -> None:
    st.title("Memory")
    show_flash()
    search(client)
    st.divider()
    documents(client)
    st.divider()
    forget_conversation(client)
