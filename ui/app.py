"""Streamlit app for the owner: chat, memory, adapters. It talks to core_agent over HTTP only.

Run: streamlit run ui/app.py  (`appliance up` starts it on ui_port).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import streamlit as st

# `streamlit run ui/app.py` puts ui/ on sys.path, not the project root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ui.api_client import ApiClient, ApiError  # noqa: E402
from ui.views import adapters, chat, memory  # noqa: E402

log = logging.getLogger("appliance.ui")
PAGES = {"Chat": chat.render, "Memory": memory.render, "Adapters": adapters.render}


def configured_api_url() -> str:
    """The API URL from the appliance's settings (configs only; the UI never imports the core).

    Never from the visitor: a URL typed into the login form would make the UI server
    fetch any address a visitor names (and show what came back)."""
    try:
        from configs.loader import load_settings

        return load_settings().api_url
    except Exception:  # the UI must still open with a broken config, to show the error
        return os.environ.get("APPLIANCE_API_PUBLIC_URL", "http://127.0.0.1:8000")


def login() -> ApiClient | None:
    """The owner token from the sidebar, checked once against the configured API."""
    sb = st.sidebar
    sb.header("Appliance")
    if st.session_state.get("logged_in"):
        client = ApiClient(st.session_state.api_url, st.session_state.token)
        sb.caption(f"Connected to {st.session_state.api_url}")
        if sb.button("Log out", key="logout"):
            for key in list(st.session_state.keys()):
                del st.session_state[key]
            st.rerun()
        return client
    with sb.form("login"):
        token = st.text_input("Owner token", type="password", key="login-token",
                              help="Printed by scripts/up.sh; stored in <data dir>/owner.token")
        submitted = st.form_submit_button("Log in")
    st.title("Appliance")
    if not submitted or not token.strip():
        st.info("Enter the owner token in the sidebar to start (scripts/up.sh prints it; it is also in "
                "<data dir>/owner.token).")
        return None
    api_url = configured_api_url()
    client = ApiClient(api_url, token.strip())
    try:
        client.check_token()
    except ApiError as exc:
        st.error(f"Login failed: {exc}")
        return None
    st.session_state.update(logged_in=True, api_url=api_url, token=token.strip())
    st.rerun()
    return None


def main() -> None:
    st.set_page_config(page_title="Appliance", layout="wide")
    client = login()
    if client is None:
        return
    page = st.sidebar.radio("Page", list(PAGES), key="page", label_visibility="collapsed")
    try:
        PAGES[page](client)
    except ApiError as exc:
        st.error(f"The appliance answered with an error: {exc}")
    except Exception as exc:  # the owner sees a sentence, the traceback goes to the UI log
        log.exception("UI page %s failed", page)
        st.error(f"Something went wrong in this page ({type(exc).__name__}: {exc}). "
                 f"Reload the page; details are in the UI log (<data dir>/logs/ui.log).")


main()
