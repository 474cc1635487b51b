"""Small pieces several pages share: document upload with progress, error display."""

from __future__ import annotations

from typing import Any

import streamlit as st

from ui.api_client import ApiClient, ApiError

UPLOAD_TYPES = ["md", "markdown", "txt", "pdf", "docx", "html", "htm"]


def show_error(what: str, exc: ApiError) -> None:
    """An API failure as one readable sentence (the API's own message names the fix)."""
    st.error(f"{what}: {exc}")


def flash(message: str) -> None:
    """Show `message` after the rerun that follows a change (so lists are fresh)."""
    st.session_state.flash = message
    st.rerun()


def show_flash() -> None:
    message = st.session_state.pop("flash", None)
    if message:
        st.success(message)


def upload_documents(client: ApiClient, key: str) -> None:
    """File picker + button; files go one by one to POST /documents with a progress bar."""
    files = st.file_uploader("Add documents to the memory", type=UPLOAD_TYPES, accept_multiple_files=True,
                             key=f"{key}-files", help="Markdown, text, PDF, Word or HTML; they become searchable "
                                                      "and the assistant can quote them.")
    if not files or not st.button("Upload", key=f"{key}-upload"):
        return
    total = sum(f.size for f in files) or 1
    bar = st.progress(0.0, text="Uploading…")
    done_bytes = 0
    results: list[tuple[bool, str]] = []
    for i, f in enumerate(files, 1):
        bar.progress(done_bytes / total, text=f"Uploading {f.name} ({i}/{len(files)})…")
        try:
            report = client.upload_document(f.name, f.getvalue())
        except ApiError as exc:
            show_error(f"{f.name} was not added", exc)
        else:
            results.append(_ingest_line(f.name, report))
        done_bytes += f.size
    added = sum(ok for ok, _ in results)
    bar.progress(1.0, text=f"Done: {added} of {len(files)} file(s) in the memory")
    for ok, line in results:
        (st.success if ok else st.warning)(line)


def _ingest_line(name: str, report: dict[str, Any]) -> tuple[bool, str]:
    """(ok, sentence) for one file's ingest report (configs.contracts.memory.IngestReport)."""
    failed = report.get("failed") or []
    if failed:
        return False, f"{name} was not added: " + "; ".join(f.get("reason", "?") for f in failed)
    if report.get("unchanged"):
        return True, f"{name} is already in the memory, unchanged"
    if report.get("duplicates"):
        return True, f"{name} has the same content as {', '.join(report['duplicates'].values())}"
    verb = "updated" if report.get("updated") else "added"
    return True, f"{name} {verb} ({report.get('chunks', 0)} passages)"
