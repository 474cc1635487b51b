"""The adapters page: registered LoRA adapters, add, load, unload, train (ui/views/training.py), the policy."""

from __future__ import annotations

from typing import Any

import streamlit as st

from ui.api_client import ApiClient, ApiError
from ui.components import flash, show_error, show_flash
from ui.views import training


def _items(listing: Any) -> list[dict[str, Any]]:
    items = listing.get("adapters", []) if isinstance(listing, dict) else listing or []
    return [i for i in items if isinstance(i, dict)]


def _row(item: dict[str, Any]) -> dict[str, Any]:
    facts = item.get("facts") or {}
    size = facts.get("size_bytes")
    return {"name": item.get("name"), "tasks": ", ".join(item.get("tasks") or []),
            "pinned": "yes" if item.get("pinned") else "", "rank": facts.get("rank"),
            "targets": ", ".join(facts.get("target_modules") or []),
            "size": f"{size / 1e6:.1f} MB" if isinstance(size, (int, float)) else "",
            "description": item.get("description", "")}


def _act(client: ApiClient, label: str, method: str, path: str, **kwargs: Any) -> None:
    try:
        result = client.adapter_action(method, path, **kwargs)
    except ApiError as exc:
        show_error(f"{label} failed", exc)
    else:
        detail = result.get("result") if isinstance(result, dict) else None
        flash(f"{label}: done" + (f" — {detail}" if isinstance(detail, str) else ""))


def add_form(client: ApiClient) -> None:
    with st.form("add-adapter"):
        st.markdown("**Add an adapter** (a PEFT folder on the appliance's machine)")
        name = st.text_input("Name", key="adapter-name", placeholder="my-style")
        path = st.text_input("Folder", key="adapter-path", placeholder="/home/me/adapters/my-style")
        tasks = st.text_input("Task kinds", value="chat", key="adapter-tasks", help="comma-separated, e.g. chat,code")
        description = st.text_input("Description", key="adapter-description")
        pin = st.checkbox("Pin (never evicted)", key="adapter-pin")
        if st.form_submit_button("Add"):
            if not name.strip() or not path.strip():
                st.warning("Give the adapter a name and the folder that holds adapter_config.json.")
                return
            _act(client, f"Adding {name}", "POST", "/adapters",
                 json={"name": name.strip(), "path": path.strip(), "description": description.strip(),
                       "tasks": [t.strip() for t in tasks.split(",") if t.strip()], "pinned": pin})


def render(client: ApiClient) -> None:
    st.title("Adapters")
    show_flash()
    try:
        listing = client.adapters()
    except ApiError as exc:
        if exc.status == 404:
            st.info("This API has no adapter service (GET /adapters is missing). Adapters arrive with the LoRA "
                    "manager; until then every answer uses the base model.")
        else:
            show_error("Could not list adapters", exc)
        return
    items = _items(listing)
    if items:
        st.dataframe([_row(i) for i in items], hide_index=True, use_container_width=True)
        name = st.selectbox("Adapter", [i["name"] for i in items], key="adapter-selected")
        cols = st.columns(3)
        if cols[0].button("Load", key="adapter-load"):
            _act(client, f"Loading {name}", "POST", f"/adapters/{name}/load")
        if cols[1].button("Unload", key="adapter-unload"):
            _act(client, f"Unloading {name}", "POST", f"/adapters/{name}/unload")
        if cols[2].button("Remove", key="adapter-remove"):
            _act(client, f"Removing {name}", "DELETE", f"/adapters/{name}")
        training.trained_evaluation(next(i for i in items if i["name"] == name))
    else:
        st.info("No adapters registered yet. Add one below or with scripts/add-adapter.sh.")
    add_form(client)
    training.render(client)
    st.subheader("Policy and residency")
    st.caption("Which task kinds and request sources may use each adapter is set in configs/adapters.yaml "
               "(adapters.policy); a request for a forbidden adapter is refused with the reason.")
    for label, path in (("Policy", "/adapters/policy"), ("Residency and metrics", "/adapters/stats")):
        try:
            data = client.adapter_action("GET", path)
        except ApiError as exc:
            if exc.status != 404:
                st.caption(f"{label} unavailable: {exc}")
            continue
        st.markdown(f"**{label}**")
        st.json(data, expanded=False)
