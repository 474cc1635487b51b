"""Training the owner's own adapter, end to end on the tiny model (SmolLM2-135M):

`appliance adapters train` on a folder of short notes in Russian and English
(tests/fixtures/owner_notes) -> dedup + split by document -> PEFT training on CPU ->
evaluation (held-out loss base vs adapter, leakage probe) -> validation, GGUF conversion
and registration in the running stack's registry. Then the adapter is served by the
real stack's llama.cpp worker and by vLLM CPU, and the policy keeps it to its task kinds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from lora_manager import settings_glue
from lora_manager.base_model import BaseModelSpec
from lora_manager.drivers.vllm import VllmAdapterDriver
from lora_manager.errors import AdapterForbidden
from lora_manager.policy import OWNER, AdapterGate, webhook_source
from lora_manager.registry import AdapterRegistry
from lora_manager.training.jobs import Job
from lora_manager.validation import ValidationLimits
from tests.conftest import Stack
from tests.support.vllm_server import SERVED_NAME, VllmServer, vllm_server  # noqa: F401  (fixture)

# Training on two busy CPU cores takes minutes; the default 600 s per test is too short.
pytestmark = pytest.mark.timeout(2400)
ROOT = Path(__file__).resolve().parents[1]
NOTES = ROOT / "tests" / "fixtures" / "owner_notes"
NAME = "owner-notes"
# In the notes' own domain: the adapter's answer should move toward the owner's voice.
PROMPT = "Write a short note about the garden."
# Small and fast on two cores: 16 steps of 2 windows of <= 96 tokens, top 10 of 30 layers.
TRAIN_ARGS = ["--eval-share", "0.25", "--max-steps", "16", "--batch-size", "2", "--seq-len", "96",
              "--top-layers", "10", "--learning-rate", "3e-3", "--rank", "8", "--leakage-questions", "2",
              "--checkpoint-every", "8", "--nice", "0", "--tasks", "chat,notes", "--json"]


def appliance(args: list[str], env: dict[str, str] | None = None, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core_agent.ops.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def trained(stack: Stack) -> dict:
    """Train through the CLI into the running stack's data folder (its env is in os.environ).
    The base weights are the served GGUF itself (no --base): what llama.cpp runs."""
    done = appliance(["adapters", "train", NAME, str(NOTES), *TRAIN_ARGS])
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_cli_trains_evaluates_and_registers(stack: Stack, trained: dict) -> None:
    assert trained["adapter"] == NAME and trained["state"] == "done"
    # 12 notes, a quarter of the documents held out.
    assert (trained["train_examples"], trained["eval_examples"]) == (9, 3)
    # It learned something that carries over to notes it never saw.
    assert trained["eval_loss_adapter"] < trained["eval_loss_base"]
    assert trained["seconds"] > 0 and 0.0 <= trained["leakage"] <= 1.0

    record = settings_glue.registry(stack.settings).get(NAME)
    assert record.tasks == ["chat", "notes"]
    assert sorted(record.facts.target_modules) == sorted(stack.settings.adapters.supported_target_modules)
    evaluation = record.training["evaluation"]
    assert evaluation["eval_loss_adapter"] == trained["eval_loss_adapter"]
    assert len(evaluation["leakage_probe"]["answers"]) == 2
    assert [step for step, _ in record.training["loss_history"]] == list(range(1, 17))

    # Split by document: no held-out note contributed a single training example.
    job = Job(settings_glue.training_dir(stack.settings) / record.training["job"])
    data = job.read_data()
    held_out = {e.doc for e in data.eval}
    assert held_out and not held_out & {e.doc for e in data.train}
    assert {Path(d).name[:2] for d in held_out | {e.doc for e in data.train}} == {"en", "ru"}


def _ask(client: httpx.Client, model: str) -> str:
    # memory off: no earlier answer is recalled into the prompt, so the two base answers
    # see the same prompt and only the adapter can make a difference.
    body = {"model": model, "mode": "direct", "max_tokens": 24, "temperature": 0, "seed": 1, "memory": "off",
            "messages": [{"role": "user", "content": PROMPT}]}
    reply = client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    return reply.json()["choices"][0]["message"]["content"]


def test_llamacpp_through_the_stack_answers_differently_with_it(stack: Stack, trained: dict) -> None:
    # The base answers the same before and after (greedy, same prompt): the adapter was
    # switched off again; the adapter's answer differs from it.
    with stack.http() as client:
        before = _ask(client, "core")
        tuned = _ask(client, f"core:{NAME}")
        after = _ask(client, "core")
    assert before == after, (before, after)
    assert tuned != before, (before, tuned)


def test_policy_keeps_it_off_requests_it_was_not_trained_for(stack: Stack, trained: dict) -> None:
    gate = AdapterGate(stack.settings.adapters, settings_glue.registry(stack.settings))
    gate.check(NAME, "notes", OWNER)
    for task in ("code", "sport"):
        with pytest.raises(AdapterForbidden, match=f"may not serve task kind '{task}'"):
            gate.check(NAME, task, OWNER)
        assert gate.select(task, OWNER).adapter is None
    with pytest.raises(AdapterForbidden, match="webhook:n8n"):  # no policy entry: the owner only
        gate.check(NAME, "chat", webhook_source("n8n"))
    with stack.http() as client:
        allowed = {a["name"] for a in client.get("/adapters", params={"task": "code", "source": "owner"}).json()}
        assert NAME not in allowed


@pytest.mark.vllm
def test_vllm_cpu_serves_it_and_answers_differently(stack: Stack, trained: dict, vllm_server: VllmServer,  # noqa: F811
                                                     tmp_path: Path) -> None:
    trained_dir = settings_glue.registry(stack.settings).path(NAME)
    registry = AdapterRegistry(tmp_path / "adapters")
    limits = ValidationLimits(max_rank=16, max_size_bytes=256 * 2**20,
                              supported_modules=frozenset(stack.settings.adapters.supported_target_modules))
    registry.add(NAME, trained_dir, BaseModelSpec.from_hf_config(Path(vllm_server.model_dir)), limits)
    driver = VllmAdapterDriver(vllm_server.base_url, registry)
    client = openai.OpenAI(base_url=vllm_server.base_url, api_key="unused", max_retries=0, timeout=300)

    def ask(model: str) -> str:
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPT}],
                                               max_tokens=24, temperature=0.0)
        return reply.choices[0].message.content or ""

    try:
        driver.load(registry.get(NAME))
        assert ask(NAME) != ask(SERVED_NAME)
    finally:
        driver.unload(NAME)
        driver.close()
