"""Training as a background job over HTTP (/adapters/train), next to a running chat.

One small job on the tiny model: started by POST (202), followed by GET (step, loss
history), cancelled by DELETE after its first checkpoint (nothing registered), resumed
from that checkpoint (the loss history continues, no step twice) and finished: the
adapter is registered with its evaluation. While it trains, a chat request is answered.
The refusals a bad request gets at once (HTTP 400, nothing written) are checked first.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
import pytest

from lora_manager import settings_glue
from tests.conftest import Stack

# Training on two busy CPU cores takes minutes; the default 600 s per test is too short.
pytestmark = pytest.mark.timeout(2400)
ROOT = Path(__file__).resolve().parents[1]
NOTES = ROOT / "tests" / "fixtures" / "owner_notes"
NAME = "notes-job"
JOB = {"name": NAME, "sources": [str(NOTES)], "tasks": ["chat"], "eval_share": 0.25, "max_steps": 9,
       "checkpoint_every": 3, "batch_size": 2, "seq_len": 64, "top_layers": 6, "learning_rate": 3e-3,
       "leakage_questions": 1, "nice": 0}
DEADLINE_S = 1500.0


def wait_for(client: httpx.Client, job: str, done, what: str) -> dict:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        status = client.get(f"/adapters/train/{job}").json()
        if done(status):
            return status
        assert status["state"] not in ("failed",), status
        assert time.monotonic() < deadline, f"job did not reach '{what}': {status}"
        time.sleep(1.0)


def test_bad_requests_are_400_and_write_nothing(stack: Stack, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt"
    shutil.copytree(NOTES, corrupt)
    (corrupt / "report.docx").write_bytes(b"PK\x03\x04 not really a word file")
    small = tmp_path / "small"
    small.mkdir()
    shutil.copy(sorted(NOTES.iterdir())[0], small)
    cases = [({**JOB, "rank": 4096}, "max LoRA rank"), ({**JOB, "sources": [str(corrupt)]}, "report.docx"),
             ({**JOB, "sources": [str(small)]}, "too few"), ({**JOB, "sources": [str(tmp_path / "nope")]},
                                                              "does not exist"),
             ({**JOB, "name": "../evil"}, "is not allowed"), ({**JOB, "name": "train"}, "is not allowed")]
    training_dir = settings_glue.training_dir(stack.settings)
    jobs_before = sorted(training_dir.iterdir()) if training_dir.exists() else []
    with stack.http() as client:
        adapters_before = client.get("/adapters").json()
        for body, words in cases:
            reply = client.post("/adapters/train", json=body)
            assert reply.status_code == 400, (body, reply.text)
            error = reply.json()["error"]
            assert words in error["message"] and error["type"] == "invalid_request_error", error
        assert client.get("/adapters").json() == adapters_before
        assert client.get("/adapters/train/no-such-job").status_code == 404
    assert (sorted(training_dir.iterdir()) if training_dir.exists() else []) == jobs_before


def test_job_runs_beside_chat_cancels_resumes_and_registers(stack: Stack) -> None:
    with stack.http() as client:
        started = client.post("/adapters/train", json=JOB)
        assert started.status_code == 202, started.text
        job = started.json()["job"]
        assert started.json()["data"]["eval_documents"] == 3

        # Training runs in its own process: the chat worker still answers meanwhile.
        running = wait_for(client, job, lambda s: s["state"] == "training" and s["step"] >= 1, "first step")
        chat = client.post("/v1/chat/completions", json={
            "model": "core", "mode": "direct", "max_tokens": 8, "temperature": 0,
            "messages": [{"role": "user", "content": "Say hello."}]})
        assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"]
        assert running["loss_history"] and running["total_steps"] == 9

        wait_for(client, job, lambda s: s["step"] >= 3, "the first checkpoint")
        assert client.delete(f"/adapters/train/{job}").status_code == 202
        cancelled = wait_for(client, job, lambda s: s["state"] == "cancelled", "cancelled")
        assert cancelled["step"] < 9 and "nothing was registered" in cancelled["message"]
        assert client.get(f"/adapters/{NAME}").status_code == 404
        assert not settings_glue.registry(stack.settings).path(NAME).exists()
        assert client.delete(f"/adapters/train/{job}").status_code == 409  # already ended

        assert client.post(f"/adapters/train/{job}/resume").status_code == 202
        done = wait_for(client, job, lambda s: s["state"] in ("done", "cancelled"), "done")
        assert done["state"] == "done", done
        assert done["resumed_from"] is not None and 3 <= done["resumed_from"] < 9
        assert [step for step, _ in done["loss_history"]] == list(range(1, 10))  # continued, no step twice
        evaluation = done["evaluation"]
        assert evaluation["eval_loss_base"] > 0 and evaluation["eval_loss_adapter"] > 0
        assert evaluation["leakage_probe"]["questions"] == 1

        record = client.get(f"/adapters/{NAME}").json()
        assert record["training"]["job"] == job and record["training"]["evaluation"] == evaluation
        assert job in [j["job"] for j in client.get("/adapters/train").json()]
        check_adapters_page(stack, job, done)
        assert client.delete(f"/adapters/{NAME}").status_code == 204


def check_adapters_page(stack: Stack, job: str, done: dict) -> None:
    """The owner sees the job, its loss curve and the evaluation as plots (over HTTP only)."""
    from streamlit.testing.v1 import AppTest

    from tests.test_ui_app import APP

    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.text_input(key="login-token").set_value(stack.token)
    at.button[0].click().run()
    at.sidebar.radio(key="page").set_value("Adapters").run()
    at.selectbox(key="adapter-selected").set_value(NAME)
    at.selectbox(key="train-job-picked").set_value(job).run()
    assert not at.exception, [e.value for e in at.exception]
    text = " ".join(m.value for m in at.markdown)
    assert f"Job {job}" in text and "**done**" in text
    charts = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    # Loss curve of the job + held-out loss and perplexity bars (job) + the same for the adapter.
    assert len(charts) >= 5, len(charts)
    assert any("training loss" in json.dumps(c) for c in charts)
    assert any("held-out loss" in json.dumps(c) for c in charts)
    captions = " ".join(c.value for c in at.caption)
    assert "Leakage probe" in captions and f"{done['evaluation']['leakage_probe']['leakage']:.2f}" in captions

    # A refused start is one readable sentence, not a traceback.
    at.text_input(key="train-name").set_value("too-big")
    at.text_area(key="train-sources").set_value(str(NOTES))
    at.number_input(key="train-rank").set_value(1000)
    next(b for b in at.button if b.label == "Start training").click().run()
    assert at.error and "Training refused" in at.error[0].value and "max LoRA rank" in at.error[0].value
    assert not at.exception
