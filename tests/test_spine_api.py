"""The spine end to end: OpenAI client -> API -> Redis/Celery -> llama.cpp worker -> back."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import MISSING_MODEL, MISSING_MODEL_PATH, Stack

QUESTION = "What is the capital of France? Answer in one short sentence."


def test_health_needs_no_token(stack: Stack) -> None:
    assert httpx.get(f"{stack.url}/health").json() == {"status": "ok"}


def test_every_other_route_needs_the_owner_token(stack: Stack) -> None:
    for method, path in [("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("GET", "/ready"),
                         ("GET", "/conversations"), ("POST", "/conversations")]:
        resp = httpx.request(method, f"{stack.url}{path}", json={})
        assert resp.status_code == 401, (method, path, resp.text)
        assert "owner.token" in resp.json()["error"]["message"]
    wrong = httpx.get(f"{stack.url}/v1/models", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401


def test_openai_client_rejects_a_wrong_token(stack: Stack) -> None:
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="not-the-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_models_are_listed(stack: Stack) -> None:
    ids = [m.id for m in stack.openai().models.list().data]
    assert "core" in ids


def test_non_streaming_answer_through_the_openai_client(stack: Stack) -> None:
    completion = stack.openai().chat.completions.create(
        model="core", messages=[{"role": "user", "content": QUESTION}], max_tokens=40, temperature=0)
    answer = completion.choices[0].message.content
    assert "paris" in answer.lower()
    assert completion.usage.completion_tokens > 0
    assert completion.usage.prompt_tokens > 0
    assert completion.choices[0].finish_reason in ("stop", "length")


def test_streamed_answer_reassembles_and_is_stored(stack: Stack) -> None:
    raw = stack.openai().chat.completions.with_raw_response.create(
        model="core", messages=[{"role": "user", "content": QUESTION}], max_tokens=40,
        temperature=0, stream=True)
    conversation_id = raw.headers["x-conversation-id"]
    assert raw.headers["x-task-id"]
    pieces = [chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices]
    streamed = "".join(pieces)
    assert len([p for p in pieces if p]) > 1, "the answer should arrive in several chunks"
    assert "paris" in streamed.lower()

    with stack.http() as http:
        messages = http.get(f"/conversations/{conversation_id}/messages").json()
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["content"] == QUESTION
    assert messages[1]["content"] == streamed
    assert messages[1]["task_id"] == raw.headers["x-task-id"]


def test_conversation_continues_by_header(stack: Stack) -> None:
    with stack.http() as http:
        conv = http.post("/conversations", json={"title": "capitals"}).json()
        first = http.post("/v1/chat/completions", headers={"X-Conversation-Id": conv["id"]}, json={
            "messages": [{"role": "user", "content": "My name is Boris. Remember it."}],
            "max_tokens": 20, "temperature": 0})
        assert first.status_code == 200, first.text
        second = http.post("/v1/chat/completions", json={
            "conversation_id": conv["id"], "max_tokens": 20, "temperature": 0,
            "messages": [{"role": "user", "content": QUESTION}]})
        assert second.status_code == 200, second.text
        assert second.json()["conversation_id"] == conv["id"]
        stored = http.get(f"/conversations/{conv['id']}/messages").json()
        listed = http.get("/conversations").json()
    assert [m["role"] for m in stored] == ["user", "assistant", "user", "assistant"]
    assert stored[0]["content"].startswith("My name is Boris")
    assert any(c["id"] == conv["id"] and c["message_count"] == 4 for c in listed)


def test_missing_model_file_is_a_clear_503(stack: Stack) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        stack.openai().chat.completions.create(
            model=MISSING_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    assert caught.value.status_code == 503
    message = caught.value.response.json()["error"]["message"]
    assert MISSING_MODEL_PATH in message and "not found" in message
    assert "models.missing.path" in message  # says what to change


def test_missing_model_file_is_a_503_when_streaming_too(stack: Stack) -> None:
    with stack.http() as http:
        resp = http.post("/v1/chat/completions", json={
            "model": MISSING_MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 503
    assert "not found" in resp.json()["error"]["message"]


def test_unknown_model_is_404_and_bad_body_is_400(stack: Stack) -> None:
    with stack.http() as http:
        unknown = http.post("/v1/chat/completions", json={
            "model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]})
        no_messages = http.post("/v1/chat/completions", json={"model": "core", "messages": []})
        not_json = http.post("/v1/chat/completions", content=b"{oops", headers={"Content-Type": "application/json"})
    assert unknown.status_code == 404 and "no-such-model" in unknown.json()["error"]["message"]
    assert no_messages.status_code == 400 and "messages" in no_messages.json()["error"]["message"]
    assert not_json.status_code == 400


def test_oversized_body_is_413(stack: Stack) -> None:
    too_big = "x" * (stack.settings.max_request_bytes + 10)
    with stack.http() as http:
        resp = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": too_big}]})
    assert resp.status_code == 413
    assert "max_request_bytes" in resp.json()["error"]["message"]


def test_ready_reports_redis_workers_and_model(stack: Stack) -> None:
    with stack.http() as http:
        resp = http.get("/ready")
    body = resp.json()
    assert resp.status_code == 200, body
    assert body["ready"] is True
    assert set(body["checks"]) == {"redis", "workers", "models"}
    assert body["checks"]["models"]["detail"]["core"] == "ok"
    # The broken model is reported with its reason, without making the appliance unready.
    assert "not found" in body["checks"]["models"]["detail"][MISSING_MODEL]
    assert "chat" in body["checks"]["workers"]["detail"]["consumed"]


def test_appliance_chat_command_streams_an_answer(stack: Stack) -> None:
    import os
    import subprocess
    from pathlib import Path

    cli = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "appliance"
    result = subprocess.run([str(cli), "chat", QUESTION], capture_output=True, text=True, timeout=300,
                            env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    answer = result.stdout.strip()
    assert answer  # the default profile samples (temperature 0.7): check the text arrived, not its words
    conversation_id = result.stderr.split("[conversation ")[1].split("]")[0]
    with stack.http() as http:
        stored = http.get(f"/conversations/{conversation_id}/messages").json()
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[0]["content"] == QUESTION and stored[1]["content"].strip() == answer


def test_appliance_chat_command_explains_a_down_api(tmp_path) -> None:
    import os
    import subprocess
    from pathlib import Path

    from tests.conftest import free_port

    cli = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "appliance"
    env = {**os.environ, "APPLIANCE_API_PORT": str(free_port()), "APPLIANCE_DATA_DIR": str(tmp_path)}
    result = subprocess.run([str(cli), "chat", "hi"], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1 and "appliance up" in result.stderr
