"""The Streamlit UI's flows with streamlit's AppTest, against the real stack API over HTTP."""

from __future__ import annotations

import uuid
from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.conftest import MISSING_MODEL, Stack
from ui.api_client import ApiClient
from ui.live_answer import LiveAnswer, LiveTask

APP = str(Path(__file__).resolve().parents[1] / "ui" / "app.py")
QUESTION = "What is the capital of France? Answer in one short sentence."


def _problems(at: AppTest) -> list[str]:
    """Tracebacks must never reach the owner."""
    return [e.value for e in at.exception]


def logged_in(stack: Stack) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.text_input(key="login-token").set_value(stack.token)
    at.button[0].click().run()
    assert not at.error and not _problems(at), [e.value for e in at.error]
    return at


def _set_options(at: AppTest, max_tokens: int = 24, model: str | None = None) -> None:
    at.number_input(key="max_tokens").set_value(max_tokens)
    if model:
        at.selectbox(key="model").set_value(model)


def _panels(at: AppTest) -> list:
    return [e for e in at.expander if e.label == "How this answer was made"]


def _sidebar_button(at: AppTest, label: str):
    return next(b for b in at.sidebar.button if b.label == label)


def test_login_refuses_a_wrong_token_readably(stack: Stack, monkeypatch) -> None:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert "owner token" in at.info[0].value
    # The API URL comes from the configuration, never from the visitor: no field for it.
    assert [t.key for t in at.text_input] == ["login-token"]
    at.text_input(key="login-token").set_value("not-the-token")
    at.button[0].click().run()
    assert at.error and "Login failed" in at.error[0].value and "owner.token" in at.error[0].value
    # A configured API that is down: the URL is the configured one (APPLIANCE_API_PUBLIC_URL).
    monkeypatch.setenv("APPLIANCE_API_PUBLIC_URL", "http://127.0.0.1:9")
    unreachable = AppTest.from_file(APP, default_timeout=60)
    unreachable.run()
    unreachable.text_input(key="login-token").set_value(stack.token)
    unreachable.button[0].click().run()
    assert "cannot reach the API" in unreachable.error[0].value
    assert not _problems(at) and not _problems(unreachable)


def test_streamed_answer_with_its_panel_and_the_new_conversation(stack: Stack) -> None:
    at = logged_in(stack)
    _set_options(at)
    at.segmented_control(key="profile").set_value("fast")
    at.chat_input[0].set_value(QUESTION).run()
    assert not at.error and not _problems(at), [e.value for e in at.error]
    user, assistant = at.chat_message[-2], at.chat_message[-1]
    assert user.markdown[0].value == QUESTION
    answer = assistant.markdown[0].value
    assert answer.strip()
    panel = _panels(at)[-1]
    assert any("succeeded" in m.value for m in panel.markdown), [m.value for m in panel.markdown]
    # The conversation now exists on the API with both turns, and the sidebar lists it.
    cid = at.session_state.conversation_id
    with stack.http() as http:
        stored = http.get(f"/conversations/{cid}/messages").json()
    assert [m["content"] for m in stored] == [QUESTION, answer]
    at.run()
    assert any(b.label.startswith("» ") for b in at.sidebar.button)


def test_conversation_sidebar_search_rename_delete(stack: Stack) -> None:
    marker = uuid.uuid4().hex[:8]
    with stack.http() as http:
        conv = http.post("/conversations", json={"title": f"Holiday plans {marker}"}).json()
        http.post("/conversations", json={"title": f"Tax return {marker}"})
    at = logged_in(stack)
    at.text_input(key="conversation-search").set_value(f"Holiday plans {marker}").run()
    titles = [b.label for b in at.sidebar.button if marker in b.label]
    assert titles == [f"Holiday plans {marker}"]
    _sidebar_button(at, titles[0]).click().run()
    assert at.title[0].value == f"Holiday plans {marker}"

    at.text_input(key=f"title-{conv['id']}").set_value(f"Trip to Rome {marker}")
    at.button(key=f"rename-{conv['id']}").click().run()
    with stack.http() as http:
        assert http.get(f"/conversations/{conv['id']}").json()["title"] == f"Trip to Rome {marker}"
    assert at.title[0].value == f"Trip to Rome {marker}"

    at.button(key=f"delete-{conv['id']}").click().run()
    assert "cannot be undone" in at.warning[0].value
    at.button(key=f"confirm-delete-{conv['id']}").click().run()
    with stack.http() as http:
        assert http.get(f"/conversations/{conv['id']}").status_code == 404
    assert at.session_state.conversation_id is None
    assert not _problems(at)


def test_api_errors_are_shown_as_sentences(stack: Stack) -> None:
    at = logged_in(stack)
    _set_options(at, model=MISSING_MODEL)
    at.chat_input[0].set_value("Hello?").run()
    assert at.error, "a failed answer must be shown"
    assert "could not answer" in at.error[0].value and "missing.gguf" in at.error[0].value
    assert not _problems(at)


def test_planned_answer_shows_live_steps_then_the_panel(stack: Stack) -> None:
    """A planned answer (an explicit one-step plan, as a workflow would send it): its step is
    visible live before the answer text starts, and the panel shows it afterwards."""
    client = ApiClient(stack.url, stack.token)
    title = f"Live plan {uuid.uuid4().hex[:8]}"
    cid = client.create_conversation(title)["id"]
    live = LiveAnswer(client, "Which city is the capital of France?", cid, mode="plan", max_tokens=16,
                      plan={"steps": [{"id": "recall", "worker": "rag", "instruction": "capital of France"}]})
    pieces: list[str] = []
    before_text: list[dict[str, str]] = []

    def on_change(task: LiveTask) -> None:
        if not pieces:
            before_text.append({sid: step.get("state", "") for sid, step in task.steps.items()})

    for piece in live.start().text(on_change):
        pieces.append(piece)
    assert "".join(pieces).strip()
    assert any(states.get("recall") in ("running", "succeeded") for states in before_text), before_text

    at = logged_in(stack)
    at.text_input(key="conversation-search").set_value(title).run()
    _sidebar_button(at, title).click().run()
    panel = _panels(at)[-1]
    text = " ".join(m.value for m in panel.markdown)
    assert "mode `plan`" in text and "Steps" in text, text
    rows = panel.table[0].value
    assert list(rows["step"]) == ["recall"] and list(rows["worker"]) == ["rag"]
    assert "succeeded" in rows["state"].iloc[0]
    assert not _problems(at)


def test_memory_page_upload_with_progress_search_and_forget(stack: Stack) -> None:
    marker = uuid.uuid4().hex[:8]
    name = f"ui-note-{marker}.md"
    at = logged_in(stack)
    at.sidebar.radio(key="page").set_value("Memory").run()
    assert at.title[0].value == "Memory"
    uploader = next(u for u in at.get("file_uploader") if u.label == "Add documents to the memory")
    uploader.set_value((name, f"# Garden\n\nThe zucchini {marker} grows by the east fence.\n".encode(), "text/markdown"))
    at.run()
    at.button(key="memory-docs-upload").click().run()
    assert not at.error, [e.value for e in at.error]
    assert "1 of 1" in at.get("progress")[0].proto.text
    assert any(name in s.value for s in at.success)

    at.text_input(key="memory-query").set_value(f"zucchini {marker}")
    next(b for b in at.button if b.label == "Search").click().run()
    assert any(name in m.value for m in at.markdown), [m.value for m in at.markdown]

    at.selectbox(key="forget-doc").set_value(name)
    at.button(key="forget-doc-button").click().run()
    assert any(f"Forgot {name}" in s.value for s in at.success)
    with stack.http() as http:
        assert name not in [d["source"] for d in http.get("/documents").json()]
    assert not _problems(at)


def test_adapters_page_add_load_unload_pick_and_remove(stack: Stack) -> None:
    from bench.harness.tiny_lora import tiny_lora_dir

    name = f"ui-quokka-{uuid.uuid4().hex[:6]}"
    at = logged_in(stack)
    at.sidebar.radio(key="page").set_value("Adapters").run()
    assert at.title[0].value == "Adapters"
    at.text_input(key="adapter-name").set_value(name)
    at.text_input(key="adapter-path").set_value(str(tiny_lora_dir("quokka")))
    at.text_input(key="adapter-description").set_value("answers like a quokka")
    next(b for b in at.button if b.label == "Add").click().run()
    assert not at.error, [e.value for e in at.error]
    assert any(f"Adding {name}: done" in s.value for s in at.success)
    assert name in list(at.dataframe[0].value["name"])

    at.selectbox(key="adapter-selected").set_value(name)
    at.button(key="adapter-load").click().run()
    assert any(f"Loading {name}: done" in s.value for s in at.success), [e.value for e in at.error]
    at.button(key="adapter-unload").click().run()
    assert any(f"Unloading {name}: done" in s.value for s in at.success), [e.value for e in at.error]

    # The chat page offers it: registered for chat, and the default policy lets the owner use it.
    at.sidebar.radio(key="page").set_value("Chat").run()
    assert name in at.selectbox(key="adapter").options

    at.sidebar.radio(key="page").set_value("Adapters").run()
    at.selectbox(key="adapter-selected").set_value(name)
    at.button(key="adapter-remove").click().run()
    with stack.http() as http:
        assert http.get(f"/adapters/{name}").status_code == 404
    assert not _problems(at)


def test_bad_adapter_folder_is_refused_readably(stack: Stack, tmp_path: Path) -> None:
    at = logged_in(stack)
    at.sidebar.radio(key="page").set_value("Adapters").run()
    at.text_input(key="adapter-name").set_value("not-an-adapter")
    at.text_input(key="adapter-path").set_value(str(tmp_path))
    next(b for b in at.button if b.label == "Add").click().run()
    assert at.error and "Adding not-an-adapter failed" in at.error[0].value
    assert not _problems(at)
