"""The real UI (served by the stack, as `appliance up` starts it) in headless Chromium.

Claim: the owner logs in, asks a question, watches the answer stream in, and the page
then shows exactly the turn the API stored: the typed question, the answer text the
API saved for that conversation, and the panel naming the task that produced it. The
max-tokens option set in the page reaches the API. A screenshot is saved to
tests/.cache/ui-chat.png (for people; nothing is asserted on it).

Independent references: the conversation's messages and the task record read from the
API over HTTP (not through the UI's client), the conversation id read from the
sidebar button's Streamlit key, and a MutationObserver in the page recording every
text the answer bubble showed while it streamed. Broken builds watched failing:
ui/views/chat.py keeping only the first half of the answer in the page's history (the
redrawn answer no longer equals the stored one); LiveAnswer sending no max_tokens (the stored answer's
usage exceeds 48 tokens).
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import Stack

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is missing. Fix: pip install -e '.[test]'")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = Path(__file__).resolve().parent / ".cache" / "ui-chat.png"
MAX_TOKENS = 48
ANSWER_TIMEOUT_MS = 240_000
# Records every distinct text of the answer as the DOM changes: the last Markdown block of
# the second chat message, where st.write_stream writes (live step lines come before it).
RECORD_ANSWER_TEXTS = """() => {
  window.__answerTexts = [];
  const record = () => {
    const bubble = document.querySelectorAll('[data-testid="stChatMessage"]')[1];
    const blocks = bubble ? bubble.querySelectorAll('[data-testid="stMarkdownContainer"]') : [];
    const text = blocks.length ? blocks[blocks.length - 1].innerText.trim() : "";
    const seen = window.__answerTexts;
    if (text && (seen.length === 0 || seen[seen.length - 1] !== text)) seen.push(text);
  };
  new MutationObserver(record).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def words(text: str) -> list[str]:
    """The words of a text, so Markdown as rendered compares equal to Markdown as stored."""
    return re.findall(r"[^\W\d_]+", text.lower())


def is_beginning(partial: str, full: str) -> bool:
    """`partial` shows the first words of `full` (its last word may be cut mid-token)."""
    shown, whole = words(partial), words(full)
    return (0 < len(shown) <= len(whole) and shown[:-1] == whole[:len(shown) - 1]
            and whole[len(shown) - 1].startswith(shown[-1]))


def stored_turn(stack: Stack, conversation_id: str) -> tuple[list[dict], dict]:
    headers = {"Authorization": f"Bearer {stack.token}"}
    messages = httpx.get(f"{stack.url}/conversations/{conversation_id}/messages", headers=headers, timeout=30)
    assert messages.status_code == 200, messages.text
    turn = messages.json()
    assert [m["role"] for m in turn] == ["user", "assistant"], turn
    task = httpx.get(f"{stack.url}/tasks/{turn[1]['task_id']}", headers=headers, timeout=30)
    assert task.status_code == 200, task.text
    return turn, task.json()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (scripts/install.sh --test)")
def test_owner_sees_a_streamed_answer_in_the_browser(stack: Stack) -> None:
    expect = sync_api.expect
    question = f"Tell me about Paris, the capital of France. ({uuid.uuid4().hex[:6]})"
    url = f"http://{stack.settings.ui_host}:{stack.settings.ui_port}/"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            expect.set_options(timeout=60_000)
            page.goto(url)
            page.get_by_role("textbox", name="Owner token").fill(stack.token)
            page.get_by_role("button", name="Log in").click()
            chat_box = page.get_by_placeholder("Ask anything")
            expect(chat_box).to_be_visible()

            page.get_by_text("Options").click()
            tokens = page.get_by_role("spinbutton", name="Max answer tokens (0 = profile default)")
            tokens.fill(str(MAX_TOKENS))
            tokens.press("Enter")
            # Streamlit took the value once its rerun is over and the field still shows it.
            expect(tokens).to_have_value(str(MAX_TOKENS))
            expect(page.locator('[data-testid="stApp"]')).to_have_attribute("data-test-script-state", "notRunning")

            page.evaluate(RECORD_ANSWER_TEXTS)
            chat_box.fill(question)
            chat_box.press("Enter")
            messages = page.locator('[data-testid="stChatMessage"]')
            expect(messages.nth(0)).to_contain_text(question)
            # The page redraws from the stored turn when the answer is done: the sidebar
            # then marks the new conversation (its Streamlit key holds the id) as open.
            current = page.locator('[class*="st-key-conv-"]').filter(
                has=page.get_by_role("button", name=re.compile(r"^» Tell me about Paris")))
            expect(current).to_have_count(1, timeout=ANSWER_TIMEOUT_MS)
            conversation_id = re.search(r"st-key-conv-([\w-]+)", current.get_attribute("class") or "").group(1)
            seen: list[str] = page.evaluate("window.__answerTexts")

            turn, task = stored_turn(stack, conversation_id)
            answer = messages.nth(1)
            expect(answer.get_by_text("How this answer was made")).to_be_visible()
            answer.get_by_text("How this answer was made").click()
            # The panel names the task the API recorded for this answer.
            expect(answer).to_contain_text(f"task {turn[1]['task_id']}")
            shown_question = messages.nth(0).inner_text()
            shown_answer = answer.locator('[data-testid="stMarkdownContainer"]').first.inner_text()
            page.get_by_text("Options").click()  # fold the options so the panel fits on screen
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()

    assert turn[0]["content"] == question and question in shown_question
    stored_answer = turn[1]["content"]
    assert words(stored_answer), f"the API stored an empty answer: {turn}"
    assert words(shown_answer) == words(stored_answer), (shown_answer, stored_answer)
    assert task["status"] == "succeeded", task
    # The option set in the page reached the API: the model stopped within 48 tokens.
    assert 0 < turn[1]["meta"]["usage"]["completion_tokens"] <= MAX_TOKENS, turn[1]["meta"]
    # The answer grew on the page while it was generated: the page showed at least two
    # different beginnings of the stored answer, one of them stopping short of its end.
    beginnings = [t for t in seen if is_beginning(t, stored_answer)]
    assert len(beginnings) >= 2, (seen, stored_answer)
    assert any(len(words(t)) < len(words(stored_answer)) for t in beginnings), (seen, stored_answer)
