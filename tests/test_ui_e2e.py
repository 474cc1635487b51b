"""The real UI (served by the stack, as `appliance up` starts it) in headless Chromium.

The owner logs in, asks a question, watches the answer stream in, and sees the panel
under it. A screenshot is saved to tests/.cache/ui-chat.png.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.conftest import Stack

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = Path(__file__).resolve().parent / ".cache" / "ui-chat.png"
QUESTION = "Tell me about Paris, the capital of France."


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (scripts/install.sh --test)")
def test_owner_sees_a_streamed_answer_in_the_browser(stack: Stack) -> None:
    url = f"http://{stack.settings.ui_host}:{stack.settings.ui_port}/"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(url)
            page.get_by_role("textbox", name="Owner token").fill(stack.token)
            page.get_by_role("button", name="Log in").click()
            chat_box = page.get_by_placeholder("Ask anything")
            chat_box.wait_for()

            page.get_by_text("Options").click()
            tokens = page.get_by_role("spinbutton", name="Max answer tokens (0 = profile default)")
            tokens.fill("48")
            tokens.press("Enter")
            page.wait_for_timeout(500)  # let Streamlit take the new value before the question

            chat_box.fill(QUESTION)
            chat_box.press("Enter")
            answer = page.locator('[data-testid="stChatMessage"]').nth(1)
            answer.wait_for()
            seen: list[str] = []
            panel = page.get_by_text("How this answer was made")
            deadline = time.monotonic() + 240
            while not panel.is_visible() and time.monotonic() < deadline:
                text = answer.inner_text().strip()
                if text and (not seen or text != seen[-1]):
                    seen.append(text)
                page.wait_for_timeout(100)
            final = answer.inner_text()
            # After the answer the page redraws from the stored turn; the sidebar then marks
            # the new conversation as the open one. Open the panel on the redrawn page.
            page.get_by_role("button", name=re.compile(r"^» Tell me about Paris")).wait_for()
            page.get_by_text("How this answer was made").click()
            page.get_by_text("Options").click()  # fold the options so the panel fits on screen
            page.get_by_text("succeeded").first.scroll_into_view_if_needed()
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    assert panel_text_ok(final), final
    # The answer grew on the page while it was generated: several partial texts were seen.
    assert len(seen) >= 2, seen
    assert SCREENSHOT.stat().st_size > 10_000


def panel_text_ok(text: str) -> bool:
    return "How this answer was made" in text and len(text.replace("How this answer was made", "").strip()) > 0
