"""Per-request memory control (configs/traffic.yaml), tested with the official `openai`
client against the real stack: body field `memory` (extra_body), header
X-Appliance-Memory (extra_headers), and Open WebUI's "### Task:" chores."""

from __future__ import annotations

import time
import uuid

import openai
import pytest

from tests.conftest import Stack

# Open WebUI's default title template (open_webui/config.py,
# DEFAULT_TITLE_GENERATION_PROMPT_TEMPLATE) with its {{MESSAGES:END:2}} filled in.
OPEN_WEBUI_TITLE_PROMPT = """### Task:
Generate a concise, 3-5 word title with an emoji summarizing the chat history.
### Guidelines:
- The title should clearly represent the main theme or subject of the conversation.
- Avoid quotation marks or special formatting.
### Output:
JSON format: { "title": "your concise title here" }
### Chat History:
<chat_history>
USER: {fact}
ASSISTANT: Noted.
</chat_history>"""


def unique_word(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def search_memory(stack: Stack, query: str) -> list[dict]:
    with stack.http() as http:
        resp = http.post("/memory/search", json={"query": query, "k": 10, "kinds": ["conversation"]})
    assert resp.status_code == 200, resp.text
    return resp.json()["hits"]


def wait_until_recalled(stack: Stack, word: str, timeout_s: float = 180) -> list[dict]:
    """Deadline-poll memory search until a hit contains `word` (the positive control)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        hits = [h for h in search_memory(stack, word) if word in h["text"]]
        if hits:
            return hits
        time.sleep(0.5)
    raise AssertionError(f"'{word}' was never indexed into memory within {timeout_s}s")


def conversation_exists(stack: Stack, cid: str) -> bool:
    with stack.http() as http:
        return http.get(f"/conversations/{cid}").status_code == 200


def all_conversation_text(stack: Stack) -> str:
    with stack.http() as http:
        conversations = http.get("/conversations", params={"limit": 1000}).json()
        return "\n".join(m["content"] for c in conversations
                         for m in http.get(f"/conversations/{c['id']}/messages").json())


def chat(stack: Stack, text: str, **kwargs):
    return stack.openai().chat.completions.create(
        model="core", messages=[{"role": "user", "content": text}], max_tokens=8, temperature=0, **kwargs)


@pytest.fixture(scope="module")
def remembered(stack: Stack) -> str:
    """A turn stored with memory on (the default): the control that indexing works."""
    word = unique_word("kept")
    reply = chat(stack, f"Remember the project codename {word}.")
    assert conversation_exists(stack, reply.model_extra["conversation_id"])
    wait_until_recalled(stack, word)
    return word


def test_memory_off_turn_is_neither_stored_nor_recalled(stack: Stack, remembered: str) -> None:
    secret = unique_word("offword")
    reply = chat(stack, f"My locker code is {secret}.", extra_body={"memory": "off"})
    assert reply.choices[0].message.content is not None
    cid = reply.model_extra["conversation_id"]
    assert not conversation_exists(stack, cid)
    assert secret not in all_conversation_text(stack)
    # "off" also reads nothing: a question naming the remembered word gets no sources.
    probe = chat(stack, f"What is {remembered}?", extra_body={"memory": "off"})
    assert probe.model_extra["sources"] == []
    # A later turn with memory on is indexed; the "off" turn never is.
    later = unique_word("later")
    chat(stack, f"Another note: {later}.")
    wait_until_recalled(stack, later)
    assert not [h for h in search_memory(stack, secret) if secret in h["text"]]


def test_memory_read_recalls_but_stores_nothing(stack: Stack, remembered: str) -> None:
    asked = unique_word("readq")
    reply = chat(stack, f"What is {remembered}? ({asked})", extra_headers={"X-Appliance-Memory": "read"})
    sources = reply.model_extra["sources"]
    assert any(s["kind"] == "conversation" for s in sources), sources  # memory was read
    assert not conversation_exists(stack, reply.model_extra["conversation_id"])
    assert asked not in all_conversation_text(stack)
    later = unique_word("after")
    chat(stack, f"One more note: {later}.")
    wait_until_recalled(stack, later)
    assert not [h for h in search_memory(stack, asked) if asked in h["text"]]


def test_body_field_wins_over_header(stack: Stack) -> None:
    word = unique_word("bodywins")
    reply = chat(stack, f"Note {word}.", extra_body={"memory": "off"}, extra_headers={"X-Appliance-Memory": "on"})
    assert not conversation_exists(stack, reply.model_extra["conversation_id"])


def test_open_webui_title_chore_is_not_stored(stack: Stack, remembered: str) -> None:
    fact = unique_word("chorefact")
    stream = stack.openai().chat.completions.create(
        model="core", stream=True, max_tokens=12, temperature=0,
        messages=[{"role": "user", "content": OPEN_WEBUI_TITLE_PROMPT.replace("{fact}", f"I like {fact}")}])
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text  # the chore is answered (by the background lane's worker)
    assert fact not in all_conversation_text(stack)
    later = unique_word("afterchore")
    chat(stack, f"Note {later}.")
    wait_until_recalled(stack, later)
    assert not [h for h in search_memory(stack, fact) if fact in h["text"]]


def test_chore_can_opt_in_explicitly(stack: Stack) -> None:
    fact = unique_word("optin")
    reply = stack.openai().chat.completions.create(
        model="core", max_tokens=8, temperature=0, extra_body={"memory": "on"},
        messages=[{"role": "user", "content": OPEN_WEBUI_TITLE_PROMPT.replace("{fact}", fact)}])
    assert conversation_exists(stack, reply.model_extra["conversation_id"])
    assert fact in all_conversation_text(stack)


@pytest.mark.parametrize("kwargs, named, allowed", [
    ({"extra_body": {"memory": "sometimes"}}, "memory", "on, read, off"),
    ({"extra_headers": {"X-Appliance-Memory": "maybe"}}, "X-Appliance-Memory", "on, read, off"),
    ({"extra_headers": {"X-Appliance-Priority": "urgent"}}, "X-Appliance-Priority", "'background'"),
])
def test_unknown_values_are_a_400_naming_the_field(stack: Stack, kwargs: dict, named: str, allowed: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        chat(stack, "hello", **kwargs)
    assert named in err.value.message and allowed in err.value.message


def test_responses_api_takes_the_same_memory_field(stack: Stack) -> None:
    word = unique_word("respoff")
    response = stack.openai().responses.create(model="core", input=f"Note {word}.", max_output_tokens=8,
                                               extra_body={"memory": "off"})
    assert response.status in ("completed", "incomplete") and response.output_text  # answered (8 tokens)
    assert word not in all_conversation_text(stack)
    with pytest.raises(openai.BadRequestError) as err:
        stack.openai().responses.create(model="core", input="hi", max_output_tokens=8,
                                        extra_headers={"X-Appliance-Memory": "never"})
    assert "X-Appliance-Memory" in err.value.message
