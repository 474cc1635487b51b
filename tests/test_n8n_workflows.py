"""The real n8n (npm, scripts/setup-n8n.sh) runs our shipped workflows (docs/n8n/*.json)
against the real appliance stack: imported with `n8n import:workflow`, credentials with
`n8n import:credentials`, executed with `n8n execute`. Marker `n8n` (slow: n8n starts
a Node process per command); part of the default run."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.conftest import Stack, free_port, running_stack, stack_env
from tests.support import n8n_cli
from tests.support.n8n_cli import N8n, error_of, node_output

pytestmark = pytest.mark.n8n

DOCS = Path(__file__).resolve().parents[1] / "docs" / "n8n"
HOOK_SECRET = "n8n-test-hook-secret-0123456789abcdef"
HOOK_TOKEN = "n8n-test-hook-token-0123456789abcdef"
SHIPPED_URL = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def hook_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = stack_env(tmp_path_factory.mktemp("appliance-n8n"))
    env |= {"APPLIANCE_WEBHOOKS__HOOKS__SUMMARIZE__SECRET": HOOK_SECRET,
            "APPLIANCE_WEBHOOKS__HOOKS__SUMMARIZE__BEARER_TOKEN": HOOK_TOKEN,
            "APPLIANCE_WEBHOOKS__HOOKS__SUMMARIZE__MAX_TOKENS": "24",
            "APPLIANCE_WEBHOOKS__HOOKS__SUMMARIZE__SYNC_TIMEOUT_S": "240",
            # No recalled memory in the prompts: the earlier tests' turns carry random ids, so
            # recall made every run's agent prompt different, and the tiny model sometimes
            # answered the AI Agent without its (required) tool call. Turns are still stored
            # as conversations; memory itself has its own tests.
            "APPLIANCE_MEMORY__ENABLED": "false"}
    with running_stack(env, progress=lambda line: print(line, flush=True)) as stack:
        yield stack


@pytest.fixture(scope="module")
def n8n(tmp_path_factory: pytest.TempPathFactory, hook_stack: Stack) -> N8n:
    n8n_cli.ensure_installed()
    cli = N8n.isolated(tmp_path_factory.mktemp("n8n-user"), http_port=free_port(), broker_port=free_port())
    # Credentials as an owner would create them in n8n's UI; the workflows name them by id.
    cli.import_credentials([
        {"id": "applianceHookTok", "name": "Appliance hook token (Authorization: Bearer ...)",
         "type": "httpHeaderAuth", "data": {"name": "Authorization", "value": f"Bearer {HOOK_TOKEN}"}},
        {"id": "applianceOpenAi1", "name": "Appliance (OpenAI-compatible)", "type": "openAiApi",
         # The credential's custom header: a tool call per new question (the tiny model
         # would rarely decide on one by itself; see docs/n8n.md).
         "data": {"apiKey": hook_stack.token, "url": f"{hook_stack.url}/v1", "header": True,
                  "headerName": "X-Appliance-Tool-Choice", "headerValue": "required-once"}},
    ])
    return cli


def shipped(name: str, stack: Stack, replace: dict[str, str] | None = None) -> dict[str, Any]:
    """A shipped workflow as the owner would use it: pointed at this stack, secrets and
    credentials filled in, under a fresh id."""
    text = (DOCS / name).read_text().replace(SHIPPED_URL, stack.url)
    for old, new in (replace or {}).items():
        assert old in text, f"{name} does not contain {old!r}"
        text = text.replace(old, new)
    wf = json.loads(text)
    for node in wf["nodes"]:
        for kind, cred in (node.get("credentials") or {}).items():
            cred["id"] = {"httpHeaderAuth": "applianceHookTok", "openAiApi": "applianceOpenAi1"}[kind]
    wf["id"] = uuid.uuid4().hex[:16]
    return wf


def job(stack: Stack, job_id: str) -> dict[str, Any]:
    with stack.http() as http:
        resp = http.get(f"/jobs/{job_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_bearer_workflow_calls_the_hook(n8n: N8n, hook_stack: Stack) -> None:
    execution = n8n.execute(n8n.import_workflow(shipped("webhook-bearer.json", hook_stack)))
    assert error_of(execution) is None, error_of(execution)
    [answer] = node_output(execution, "Call appliance hook")
    stored = job(hook_stack, answer["id"])
    assert stored["hook"] == "summarize" and stored["status"] == "succeeded" and stored["answer"]
    [keyed] = node_output(execution, "Idempotency key")
    assert uuid.UUID(keyed["idempotencyKey"]).version == 4
    with hook_stack.http() as http:  # the appliance stored the turn as a conversation
        assert http.get(f"/conversations/{stored['conversation_id']}").status_code == 200


class DropFirstResponse:
    """A loopback proxy in front of the API that forwards every request but loses the
    answer to the first one (the appliance did the work; the caller never heard back)."""

    def __init__(self, upstream: str) -> None:
        self.requests: list[dict[str, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("content-type", "authorization", "idempotency-key")
                           or k.lower().startswith("x-appliance-")}
                proxy.requests.append(headers)
                resp = httpx.post(upstream + self.path, content=body, headers=headers, timeout=600)
                if len(proxy.requests) == 1:
                    self.close_connection = True  # drop: no status line, no body
                    return
                self.send_response(resp.status_code)
                self.send_header("Content-Type", resp.headers.get("content-type", "application/json"))
                self.send_header("Content-Length", str(len(resp.content)))
                self.end_headers()
                self.wfile.write(resp.content)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_hmac_workflow_survives_retry_on_fail_after_a_lost_answer(n8n: N8n, hook_stack: Stack) -> None:
    proxy = DropFirstResponse(hook_stack.url)
    marker = f"hmac-{uuid.uuid4().hex[:10]}"
    try:
        wf = shipped("webhook-hmac.json", hook_stack, {
            "PASTE-THE-HOOK-SECRET-HERE": HOOK_SECRET,
            "The appliance runs a planner": f"The appliance ({marker}) runs a planner",
            f"{hook_stack.url}/webhooks/summarize": f"{proxy.url}/webhooks/summarize"})
        execution = n8n.execute(n8n.import_workflow(wf))
    finally:
        proxy.close()
    assert error_of(execution) is None, error_of(execution)
    first, second = proxy.requests[:2]
    # n8n's Retry On Fail re-ran the signing node: a fresh signature, the same key.
    assert first["X-Appliance-Signature"] != second["X-Appliance-Signature"] or \
        first["X-Appliance-Timestamp"] != second["X-Appliance-Timestamp"]
    assert first["Idempotency-Key"] == second["Idempotency-Key"]
    [answer] = node_output(execution, "Sign and call appliance hook")
    stored = job(hook_stack, answer["id"])
    assert stored["status"] == "succeeded" and stored["answer"]
    with hook_stack.http() as http:  # two deliveries, one job: the text was summarised once
        assert len(http.get("/conversations", params={"q": marker}).json()) == 1


def test_openai_chat_workflow_asks_the_appliance(n8n: N8n, hook_stack: Stack) -> None:
    question = f"Give me one idea for a weekend trip by train ({uuid.uuid4().hex[:8]})."
    wf = shipped("openai-chat.json", hook_stack, {"Give me three ideas for a weekend trip by train.": question})
    execution = n8n.execute(n8n.import_workflow(wf))
    assert error_of(execution) is None, error_of(execution)
    [answer] = node_output(execution, "Ask the appliance")
    assert answer["text"].strip()
    with hook_stack.http() as http:  # the appliance really answered it: the turn is stored
        conversations = http.get("/conversations", params={"q": question[-10:-2]}).json()
        texts = [m["content"] for c in conversations for m in http.get(f"/conversations/{c['id']}/messages").json()]
    assert question in texts and answer["text"].strip() in [t.strip() for t in texts]


@pytest.mark.parametrize("responses_api", [True, False], ids=["responses-api", "chat-completions"])
def test_ai_agent_runs_its_tool_and_answers(n8n: N8n, hook_stack: Stack, responses_api: bool) -> None:
    """n8n's AI Agent with an OpenAI Chat Model (v1.3) and a Code tool: the model's tool
    call reaches n8n, n8n runs the tool, the result goes back and a final answer comes.
    "Use Responses API" on (n8n's default: POST /v1/responses) and off (chat completions)."""
    wf = shipped("ai-agent-tools.json", hook_stack)
    model = next(n for n in wf["nodes"] if n["name"] == "Appliance model")
    model["parameters"]["responsesApiEnabled"] = responses_api
    execution = n8n.execute(n8n.import_workflow(wf))
    assert error_of(execution) is None, error_of(execution)
    tool_runs = execution["data"]["resultData"]["runData"].get("get_secret_word", [])
    assert tool_runs, "the agent never called its tool"
    tool_output = json.dumps(tool_runs[0]["data"])
    assert "The secret word is marmalade" in tool_output
    [answer] = node_output(execution, "AI Agent")
    assert answer["output"].strip()
