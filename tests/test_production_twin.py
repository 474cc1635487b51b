"""The production core on the CPU: a Qwen3-MoE twin served by vLLM with the planner's
vllm-core flags (tests/support/twin_server.py), and the appliance in front of it.

What this proves for the owner's GPU: the think profile shows reasoning apart from the
answer and fast answers without it (issue 12 item 2, reproduced first as the bug it
was); an adapter is validated against the served base found by hub repo id in the
model cache (item 3); the active-experts knob reaches the served model's config.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import httpx
import openai
import pytest

from tests.conftest import Stack, running_stack, stack_env
from bench.harness.qwen3_moe_twin import (
    INSTRUCT_ANSWER,
    INSTRUCT_QUESTION,
    QA,
    SERVED_NAME,
    TWIN_REPO,
    twin_hf_home,
    twin_revision,
)
from tests.support.twin_server import ACTIVE_EXPERTS, CORE, TwinServer, twin_plan, twin_server  # noqa: F401

pytestmark = pytest.mark.vllm
QUESTION = "What is the capital of France?"
REASONING, ANSWER = QA[QUESTION]


def reasoning_of(message) -> str | None:
    """vLLM 0.32 names the field `reasoning` (older: reasoning_content)."""
    extra = message.model_extra or {}
    return extra.get("reasoning") or extra.get("reasoning_content")


# --- the server as the planner configures it ------------------------------------------

def test_twin_is_served_with_the_planners_core_flags(twin_server: TwinServer) -> None:
    argv = twin_server.argv()
    for flag in ("--reasoning-parser=qwen3", "--enable-auto-tool-choice", "--tool-call-parser=hermes",
                 f"--model={TWIN_REPO}", f"--revision={twin_revision()}",
                 f'--hf-overrides={{"num_experts_per_tok":{ACTIVE_EXPERTS}}}'):
        assert flag in argv
    assert any(a.startswith("--kv-cache-memory-bytes=") for a in argv)
    models = httpx.get(f"{twin_server.base_url}/models", timeout=30).json()["data"]
    # Served by hub repo id from the offline cache, as on the GPU: with HF_HUB_OFFLINE=1
    # vLLM resolves the id to the pinned snapshot folder and reports that (the app
    # containers mount the same folder at the same path, so it resolves there too).
    snapshot = twin_hf_home() / "hub" / f"models--{TWIN_REPO.replace('/', '--')}" / "snapshots" / twin_revision()
    assert [m["id"] for m in models] == [SERVED_NAME]
    assert models[0]["root"] in (TWIN_REPO, str(snapshot))


def test_active_experts_knob_reaches_the_served_models_config(twin_server: TwinServer) -> None:
    """The plan's active_experts (3; the twin is trained with 2) is in the running
    server's model config. That vLLM's ModelConfig applies hf_overrides to the model's
    hf_config is checked in tests/test_vram_plan.py::test_vllm_applies_the_planned_overrides."""
    info = httpx.get(f"{twin_server.url}/server_info", params={"config_format": "json"}, timeout=30).json()
    model_config = info["vllm_config"]["model_config"]
    assert model_config["hf_overrides"] == {"num_experts_per_tok": ACTIVE_EXPERTS}
    assert model_config["max_model_len"] == twin_plan().knobs.max_model_len
    assert model_config["revision"] == twin_revision()


def test_item2_bug_reasoning_parser_on_a_model_that_never_thinks_leaves_content_empty(
        twin_server: TwinServer) -> None:
    """The bug of issue 12 item 2, reproduced: Instruct-2507 writes no <think>; with
    --reasoning-parser qwen3 and thinking on, vLLM returns content null and the whole
    answer as reasoning. (The twin answers INSTRUCT_QUESTION the Instruct-2507 way.)"""
    client = openai.OpenAI(base_url=twin_server.base_url, api_key="x", max_retries=0, timeout=120)
    reply = client.chat.completions.create(model=SERVED_NAME, temperature=0, max_tokens=40,
                                           messages=[{"role": "user", "content": INSTRUCT_QUESTION}])
    message = reply.choices[0].message
    assert message.content is None
    assert INSTRUCT_ANSWER in (reasoning_of(message) or "")


# --- through the appliance ----------------------------------------------------------

@pytest.fixture(scope="module")
def twin_stack(twin_server: TwinServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The appliance with the core on the openai backend pointed at the twin, and the
    adapter settings of the GPU profile: base found by repo id in HF_HOME, at the pin."""
    env = stack_env(tmp_path_factory.mktemp("twin-stack"))
    env.update({
        "APPLIANCE_MODELS__CORE__BACKEND": "openai",
        "APPLIANCE_MODELS__CORE__BASE_URL": twin_server.base_url,
        "APPLIANCE_MODELS__CORE__SERVED_MODEL": SERVED_NAME,
        "APPLIANCE_MODELS__CORE__N_CTX": str(twin_plan().knobs.max_model_len),
        "APPLIANCE_ADAPTERS__BASE_REVISION": twin_plan().revision,
        "HF_HOME": str(twin_hf_home()),
        "HF_HUB_OFFLINE": "1",
        # No recalled memory in the prompt: the twin answers exactly only the prompts it
        # was trained on (memory itself is covered by its own tests).
        "APPLIANCE_MEMORY__ENABLED": "false",
        # The chat lane as compose.yaml runs it on the GPU: a threads pool waiting on vLLM.
        "APPLIANCE_WORKERS__CHAT__POOL": "threads",
        "APPLIANCE_WORKERS__CHAT__CONCURRENCY": "4",
    })
    with running_stack(env) as stack:
        wait_ready(stack)
        yield stack


def wait_ready(stack: Stack, timeout_s: float = 600) -> None:
    """Until /ready says the workers and the core model answer (slow on a loaded machine)."""
    deadline = time.monotonic() + timeout_s
    last = ""
    with stack.http(timeout=60) as http:
        while time.monotonic() < deadline:
            try:
                ready = http.get("/ready")
                if ready.status_code == 200:
                    return
                last = ready.text
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(2)
    raise AssertionError(f"the twin stack did not become ready: {last[:500]}")


def test_think_profile_returns_reasoning_and_answer_apart(twin_stack: Stack) -> None:
    client = twin_stack.openai()
    reply = client.chat.completions.create(model="core", messages=[{"role": "user", "content": QUESTION}],
                                           temperature=0, extra_body={"profile": "think", "mode": "direct"})
    message = reply.choices[0].message
    assert message.content.strip() == ANSWER
    assert REASONING in (message.model_extra or {}).get("reasoning_content", "")
    assert "<think>" not in message.content and REASONING not in message.content


def test_think_profile_streams_reasoning_content_before_content(twin_stack: Stack) -> None:
    stream = twin_stack.openai().chat.completions.create(
        model="core", stream=True, messages=[{"role": "user", "content": QUESTION}],
        temperature=0, extra_body={"profile": "think", "mode": "direct"})
    kinds, reasoning, content = [], "", ""
    for chunk in stream:
        for choice in chunk.choices:
            piece = (choice.delta.model_extra or {}).get("reasoning_content")
            if piece:
                reasoning += piece
                kinds.append("reasoning")
            if choice.delta.content:
                content += choice.delta.content
                kinds.append("content")
    assert REASONING in reasoning and content.strip() == ANSWER
    assert kinds.index("content") > kinds.index("reasoning") and "reasoning" not in kinds[kinds.index("content"):]


def test_fast_profile_answers_without_reasoning_and_memory_keeps_answers_only(twin_stack: Stack) -> None:
    client = twin_stack.openai()
    reply = client.chat.completions.create(model="core", messages=[{"role": "user", "content": QUESTION}],
                                           temperature=0, extra_body={"profile": "fast", "mode": "direct"})
    message = reply.choices[0].message
    assert message.content.strip() == ANSWER
    assert (message.model_extra or {}).get("reasoning_content") is None
    think = client.chat.completions.create(model="core", messages=[{"role": "user", "content": QUESTION}],
                                           temperature=0, extra_body={"profile": "think", "mode": "direct"})
    conversation = think.model_extra["conversation_id"]
    with twin_stack.http() as http:
        stored = http.get(f"/conversations/{conversation}/messages").json()
    stored = stored.get("messages", stored) if isinstance(stored, dict) else stored
    # Stored: the answer exactly as returned, and nothing of the reasoning.
    assert [m["content"] for m in stored if m["role"] == "assistant"] == [think.choices[0].message.content]
    assert not any(REASONING in m["content"] or "<think>" in m["content"] for m in stored)


def test_the_threads_chat_lane_answers_concurrent_streams_each_in_full(twin_stack: Stack) -> None:
    """Four streamed turns at once on the chat lane's threads pool (as on the GPU): all four
    are generated side by side by the vLLM twin, and each client gets its own full answer."""
    def ask(_: int) -> tuple[str, str]:
        stream = twin_stack.openai().chat.completions.create(
            model="core", stream=True, messages=[{"role": "user", "content": QUESTION}],
            temperature=0, extra_body={"profile": "think", "mode": "direct", "memory": "off"})
        reasoning = content = ""
        for chunk in stream:
            for choice in chunk.choices:
                reasoning += (choice.delta.model_extra or {}).get("reasoning_content") or ""
                content += choice.delta.content or ""
        return reasoning, content

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, range(4)))
    assert all(REASONING in reasoning and content.strip() == ANSWER for reasoning, content in answers), answers


def _train_twin_lora(out: Path) -> Path:
    """A real PEFT attention LoRA on the twin (a few steps; the weights change)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = twin_hf_home() / "hub" / f"models--{TWIN_REPO.replace('/', '--')}" / "snapshots" / twin_revision()
    tok = AutoTokenizer.from_pretrained(base)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                      task_type="CAUSAL_LM"))
    ids = torch.tensor([tok("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>").input_ids])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out, safe_serialization=True)
    return out


def test_gpu_only_moe_lora_loading_but_attention_lora_registers_against_served_twin_config(
        twin_stack: Stack, tmp_path: Path) -> None:
    """Registration on the GPU profile: vLLM reports a hub repo id; the LoRA manager finds
    that repo's config.json at the pinned revision in HF_HOME and validates the adapter
    against it. Loading the LoRA into the MoE twin is left to the GPU (the CPU build's
    MoE LoRA path needs Triton kernels that do not run on CPU)."""
    adapter = _train_twin_lora(tmp_path / "twin-lora")
    with twin_stack.http() as http:
        added = http.post("/adapters", json={"name": "twin-attn", "path": str(adapter)})
        assert added.status_code == 201, added.text
        base = added.json()["base"]
        assert base["source"].endswith(f"models--appliance-twin--qwen3-moe-tiny/snapshots/{twin_revision()}/config.json")
        assert (base["architecture"], base["num_layers"], base["head_dim"]) == ("qwen3moe", 2, 64)
        # An adapter for another base (rank fine, shapes wrong) is refused, nothing kept.
        cfg = json.loads((adapter / "adapter_config.json").read_text())
        wrong = tmp_path / "wrong-base"
        wrong.mkdir()
        import torch
        from safetensors.torch import load_file, save_file

        tensors = {k: torch.zeros(v.shape[0], v.shape[1] * 2) if "lora_A" in k else v
                   for k, v in load_file(adapter / "adapter_model.safetensors").items()}
        save_file(tensors, wrong / "adapter_model.safetensors")
        (wrong / "adapter_config.json").write_text(json.dumps(cfg))
        refused = http.post("/adapters", json={"name": "wrong-base", "path": str(wrong)})
        assert 400 <= refused.status_code < 500, refused.text
        assert http.get("/adapters/wrong-base").status_code == 404
