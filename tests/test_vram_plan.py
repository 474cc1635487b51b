"""The VRAM planner against hand computation, and its refusal of plans that do not fit.

Every expected number is a literal worked out by hand (the arithmetic is in the comment
next to it), never recomputed with the planner's own formula. Broken builds watched
failing: kv_bytes_per_token using q_heads instead of kv_heads (the KV tests and the
shipped-plan table go red); utilization_fraction rounding to nearest instead of up.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core_agent.ops.vram_plan import (
    DEFAULT_STACK_FILE,
    GpuStack,
    PlanConfigError,
    PlanRefused,
    check_fits,
    env_values,
    load_stack,
    plan_stack,
    read_env_block,
    render_env_block,
    replace_env_block,
)

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
CORE = "vllm-core"
# config.json fields the facts in configs/gpu-stack.yaml do not carry (architecture names).
HF_ARCHITECTURES = {
    "qwen3-30b-a3b-fp8": {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
                                        "moe_intermediate_size": 768, "vocab_size": 151936},
    "qwen2.5-coder-7b-instruct": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
                                  "intermediate_size": 18944, "vocab_size": 152064},
}


def stack_with(**core_knobs) -> GpuStack:
    """The shipped stack with some of vllm-core's knobs changed."""
    raw = yaml.safe_load(DEFAULT_STACK_FILE.read_text())
    raw["services"][CORE].update(core_knobs)
    return GpuStack.model_validate(raw)


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "core_agent.ops.cli", "vram-plan", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=60)


def test_qwen3_30b_a3b_kv_cache_is_96_kib_per_token_in_bf16_by_hand() -> None:
    core = plan_stack(stack_with(kv_cache_dtype="auto", max_model_len=65536)).service(CORE)
    # By hand: 2 (K,V) x 48 layers x 4 KV heads x 128 head_dim x 2 bytes = 98,304 = 96 KiB
    assert core.kv_bytes_per_token == 98_304
    # By hand: 65,536 tokens x 4 sequences x 98,304 B = 25,769,803,776 B = 24 GiB
    assert core.kv_cache_bytes == 25_769_803_776
    # vLLM gets exactly that as --kv-cache-memory-bytes (no start-up profiling).
    assert core.kv_cache_memory_bytes == 25_769_803_776


def test_fp8_kv_cache_halves_it() -> None:
    bf16 = plan_stack(stack_with(kv_cache_dtype="auto")).service(CORE)
    fp8 = plan_stack(stack_with(kv_cache_dtype="fp8")).service(CORE)
    assert fp8.kv_bytes_per_token == 49_152  # by hand: 2 x 48 x 4 x 128 x 1 byte
    # By hand, shipped knobs (32,768 tokens x 4 sequences): 49,152 x 131,072 = 6,442,450,944 B
    # = 6 GiB in FP8, against 98,304 x 131,072 = 12,884,901,888 B = 12 GiB in BF16.
    assert fp8.kv_cache_bytes == 6_442_450_944
    assert bf16.kv_cache_bytes == 12_884_901_888


def test_qwen3_30b_a3b_fp8_weights_are_about_31_gb() -> None:
    core = plan_stack(load_stack()).service(CORE)
    # By hand: 29.897 B params x 1 byte + 0.635 B params x 2 bytes = 29.897e9 + 1.27e9
    assert core.weights_bytes == 31_167_000_000
    assert 30e9 < core.weights_bytes < 32e9  # "~31 GB of FP8 weights"


def test_lora_slots_by_hand() -> None:
    core = plan_stack(load_stack()).service(CORE)
    # By hand, rank 16, hidden 2048, q out 4096, k/v out 512, per layer (A: r x in, B: out x r):
    # q 16 x (2048 + 4096) = 98,304; k and v 2 x 16 x (2048 + 512) = 81,920; o 16 x (4096 + 2048)
    # = 98,304; sum 278,528 values x 48 layers x 2 bytes x 4 slots = 106,954,752 bytes.
    assert core.lora_bytes == 106_954_752


# The shipped configs/gpu-stack.yaml worked out by hand (GiB = 1,073,741,824 B; the card is
# 97,887 MiB x 1,048,576 = 102,641,958,912 B). Per service: weights, KV cache, LoRA,
# overhead, total, and --gpu-memory-utilization = total / card rounded UP to 0.01.
SHIPPED_BY_HAND = {
    # weights 31,167,000,000 (above); KV 98,304 B x 32,768 x 4 = 12,884,901,888; LoRA
    # 106,954,752 (above); overhead 4 GiB = 4,294,967,296. Total 48,453,823,936 B;
    # 48,453,823,936 / 102,641,958,912 = 0.4721 -> 0.48.
    "vllm-core": (31_167_000_000, 12_884_901_888, 106_954_752, 4_294_967_296, 48_453_823_936, 0.48),
    # Qwen2.5-Coder-7B online FP8: (7.616 - 1.090) = 6.526e9 x 1 B + 1.090e9 x 2 B = 8,706,000,000;
    # KV 2 x 28 layers x 4 heads x 128 x 2 B = 57,344 B/token x 32,768 x 2 = 3,758,096,384;
    # overhead 2.5 GiB = 2,684,354,560. Total 15,148,450,944 B = 0.1476 of the card -> 0.15.
    "vllm-code": (8_706_000_000, 3_758_096_384, 0, 2_684_354_560, 15_148_450_944, 0.15),
    # Qwen2.5-VL-7B online FP8: (8.292 - 1.766) = 6.526e9 x 1 B + 1.766e9 x 2 B = 10,058,000,000;
    # KV 57,344 x 16,384 x 2 = 1,879,048,192; overhead 4 GiB = 4,294,967,296.
    # Total 16,232,015,488 B = 0.1581 -> 0.16.
    "vllm-vision": (10_058_000_000, 1_879_048_192, 0, 4_294_967_296, 16_232_015_488, 0.16),
    # bge-m3 in BF16: 0.568e9 x 2 B = 1,136,000,000; an encoder keeps no KV cache;
    # overhead 1.5 GiB = 1,610,612,736. Total 2,746,612,736 B = 0.0268 -> 0.03.
    "vllm-embed": (1_136_000_000, 0, 0, 1_610_612_736, 2_746_612_736, 0.03),
}


def test_utilization_is_the_services_share_of_the_card_rounded_up() -> None:
    """Every number of the shipped plan against the table above. Broken build watched
    failing: utilization_fraction rounding to nearest instead of up (the core gets 0.47,
    less than it needs)."""
    plan = plan_stack(load_stack())
    got = {s.service: (s.weights_bytes, s.kv_cache_bytes, s.lora_bytes, s.overhead_bytes, s.total_bytes,
                       s.gpu_memory_utilization) for s in plan.services}
    assert got == SHIPPED_BY_HAND
    assert plan.cards[0].memory_bytes == 102_641_958_912
    # By hand: 0.48 + 0.15 + 0.16 + 0.03 = 0.82 of the card, under the 0.95 ceiling.
    assert plan.cards[0].fraction_sum == pytest.approx(0.82)
    assert plan.fits


def test_active_experts_change_overrides_not_memory() -> None:
    eight = plan_stack(stack_with(active_experts=8)).service(CORE)
    ten = plan_stack(stack_with(active_experts=10)).service(CORE)
    assert ten.hf_overrides["num_experts_per_tok"] == 10
    assert ten.total_bytes == eight.total_bytes
    assert any("active_experts 10" in w for w in ten.warnings)


def test_context_beyond_native_window_adds_yarn_with_a_quality_warning() -> None:
    raw = yaml.safe_load(DEFAULT_STACK_FILE.read_text())
    raw["models"]["qwen2.5-coder-7b-instruct"]["native_context"] = 32768
    raw["services"]["vllm-code"]["max_model_len"] = 131072
    raw["services"]["vllm-code"]["max_num_seqs"] = 1
    code = plan_stack(GpuStack.model_validate(raw)).service("vllm-code")
    assert code.hf_overrides["rope_parameters"] == {
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768, "rope_theta": 1000000.0}
    assert code.hf_overrides["max_position_embeddings"] == 131072
    assert any("YaRN" in w and "quality" in w for w in code.warnings)
    # Within the native window: no rope scaling at all.
    assert "rope_parameters" not in plan_stack(load_stack()).service(CORE).hf_overrides


def test_over_budget_plan_is_refused_naming_the_biggest_item_and_the_fix() -> None:
    plan = plan_stack(stack_with(max_model_len=262144, max_num_seqs=8))
    assert not plan.fits
    with pytest.raises(PlanRefused) as refused:
        check_fits(plan)
    message = str(refused.value)
    assert "vllm-core kv cache 192.0 GiB" in message  # 96 KiB x 262,144 x 8
    assert "services.vllm-core.max_num_seqs" in message and "kv_cache_dtype: fp8" in message
    assert "configs/gpu-stack.yaml" in message


def test_cli_refuses_over_budget_plan_and_writes_nothing(tmp_path: Path) -> None:
    raw = yaml.safe_load(DEFAULT_STACK_FILE.read_text())
    raw["services"]["vllm-code"]["model"] = "qwen3-30b-a3b-instruct-2507-fp8"  # a second 29 GiB model
    config = tmp_path / "gpu-stack.yaml"
    config.write_text(yaml.safe_dump(raw))
    env_file = tmp_path / ".env"
    result = run_cli("--config", str(config), "--write-env", "--env-file", str(env_file))
    assert result.returncode == 1
    assert "refused" in result.stderr and "weights 29.0 GiB" in result.stderr
    assert not env_file.exists()


def test_cli_json_and_write_env_keep_other_lines(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("QDRANT_API_KEY=my-secret\n")
    result = run_cli("--json", "--write-env", "--env-file", str(env_file))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["fits"] is True
    assert {s["service"] for s in data["services"]} == {"vllm-core", "vllm-code", "vllm-vision", "vllm-embed"}
    text = env_file.read_text()
    assert text.startswith("QDRANT_API_KEY=my-secret\n")
    assert read_env_block(text) == env_values(plan_stack(load_stack()))
    # Running it again replaces the block instead of appending a second one.
    assert run_cli("--write-env", "--env-file", str(env_file)).returncode == 0
    assert env_file.read_text() == text


def test_bad_knob_names_the_key(tmp_path: Path) -> None:
    raw = yaml.safe_load(DEFAULT_STACK_FILE.read_text())
    raw["services"][CORE]["active_experts"] = 200
    raw["services"][CORE]["lora"]["max_lora_rank"] = 12
    raw["services"][CORE]["max_model_lenn"] = 4096
    config = tmp_path / "gpu-stack.yaml"
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(PlanConfigError) as bad:
        load_stack(config)
    message = str(bad.value)
    assert "services.vllm-core.max_model_lenn" in message and "unknown key" in message
    assert "max_lora_rank must be one of" in message
    result = run_cli("--config", str(config))
    assert result.returncode == 2 and "max_model_lenn" in result.stderr
    raw["services"][CORE].pop("max_model_lenn")
    raw["services"][CORE]["lora"]["max_lora_rank"] = 16
    with pytest.raises(ValueError, match="active_experts 200 exceeds the model's 128 experts"):
        GpuStack.model_validate(raw)


def test_env_block_round_trip() -> None:
    values = env_values(plan_stack(load_stack()))
    block = render_env_block(values)
    text = replace_env_block("A=1\n", block)
    assert read_env_block(text) == values
    assert replace_env_block(text, block) == text


def hf_config_from_facts(stack: GpuStack, model: str) -> dict:
    facts = stack.models[model]
    config = {"hidden_size": facts.hidden_size, "num_hidden_layers": facts.layers,
              "num_attention_heads": facts.q_heads, "num_key_value_heads": facts.kv_heads,
              "head_dim": facts.head_dim, "max_position_embeddings": facts.native_context,
              "rope_theta": facts.rope_theta, "torch_dtype": "bfloat16", "tie_word_embeddings": False,
              **HF_ARCHITECTURES[model]}
    if facts.experts:
        config |= {"num_experts": facts.experts, "num_experts_per_tok": facts.experts_per_tok}
    return config


@pytest.mark.skipif(not VLLM_PYTHON.exists(), reason="no .venv-vllm: run scripts/setup-vllm-cpu.sh")
def test_vllm_applies_the_planned_overrides(tmp_path: Path) -> None:
    """vLLM 0.32's own ModelConfig takes the plan's --hf-overrides and --max-model-len:
    10 active experts on the core, and YaRN beyond the native window on core and coder."""
    raw = yaml.safe_load(DEFAULT_STACK_FILE.read_text())
    raw["services"][CORE].update(active_experts=10, max_model_len=131072, max_num_seqs=1, kv_cache_dtype="fp8")
    raw["services"]["vllm-code"].update(max_model_len=131072, max_num_seqs=1)
    stack = GpuStack.model_validate(raw)
    plan = plan_stack(stack)
    cases = {}
    for service in (CORE, "vllm-code"):
        s = plan.service(service)
        folder = tmp_path / service
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(hf_config_from_facts(stack, s.model)))
        cases[service] = {"model": str(folder), "hf_overrides": s.hf_overrides, "max_model_len": s.knobs.max_model_len}
    script = (
        "import json, sys\n"
        "from vllm.config import ModelConfig\n"
        "out = {}\n"
        "for name, case in json.load(sys.stdin).items():\n"
        "    mc = ModelConfig(skip_tokenizer_init=True, **case)\n"
        "    out[name] = {'max_model_len': mc.max_model_len, 'rope': mc.hf_config.rope_parameters,\n"
        "                 'experts': getattr(mc.hf_config, 'num_experts_per_tok', None)}\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run([str(VLLM_PYTHON), "-c", script], input=json.dumps(cases), capture_output=True,
                            text=True, timeout=300, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen[CORE]["experts"] == 10 and seen[CORE]["max_model_len"] == 131072
    # The hybrid Qwen3-30B-A3B's native window is 32,768: 131,072 is YaRN x4.
    assert seen[CORE]["rope"]["rope_type"] == "yarn" and seen[CORE]["rope"]["factor"] == 4.0
    assert seen["vllm-code"]["max_model_len"] == 131072 and seen["vllm-code"]["rope"]["factor"] == 4.0
