"""The VRAM plan tables for docs/benchmarks.md: the default stack (configs/gpu-stack.yaml)
and the same stack with a ~90k-token core context (90,112 tokens, 2 sequences: YaRN
x2.75 over Qwen3-30B-A3B's native 32,768). Pure arithmetic from core_agent/ops/vram_plan.py.

Run: .venv/bin/python -m bench.bench_plan_tables
"""

from __future__ import annotations

import yaml

from bench.report import write_section
from core_agent.ops.vram_plan import DEFAULT_STACK_FILE, GIB, GpuStack, VramPlan, load_stack, plan_stack


def table(plan: VramPlan) -> str:
    rows = ["| service | model | context x seqs | weights | KV cache (= --kv-cache-memory-bytes) | LoRA | overhead "
            "| total | --gpu-memory-utilization |", "|---|---|---|---|---|---|---|---|---|"]
    for s in plan.services:
        k = s.knobs
        rows.append(f"| {s.service} | {s.hf_repo} | {k.max_model_len:,} x {k.max_num_seqs} | "
                    f"{s.weights_bytes / GIB:.2f} GiB | {s.kv_cache_bytes / GIB:.2f} GiB | {s.lora_bytes / GIB:.2f} GiB | "
                    f"{s.overhead_bytes / GIB:.2f} GiB | {s.total_bytes / GIB:.2f} GiB | {s.gpu_memory_utilization:.2f} |")
    card = plan.cards[0]
    rows.append(f"\nCard 0: fractions sum {card.fraction_sum:.2f} of max {card.max_total_fraction:.2f} "
                f"({'fits' if card.fits else 'DOES NOT FIT'}, {card.headroom_bytes / GIB:.2f} GiB to spare).")
    core = plan.service("vllm-core")
    if core.hf_overrides:
        rows.append(f"vllm-core --hf-overrides: `{core.hf_overrides}`.")
    return "\n".join(rows)


def long_context_stack() -> GpuStack:
    raw = yaml.safe_load(DEFAULT_STACK_FILE.read_text())
    raw["services"]["vllm-core"].update(max_model_len=90112, max_num_seqs=2)
    return GpuStack.model_validate(raw)


def main() -> None:
    default, long = plan_stack(load_stack()), plan_stack(long_context_stack())
    markdown = ("## VRAM plan (issue 12)\n\nDefault stack (configs/gpu-stack.yaml):\n\n" + table(default)
                + "\n\nWith a ~90k-token core context (`max_model_len: 90112`, `max_num_seqs: 2`):\n\n" + table(long))
    print(markdown)
    write_section("vram-plan", markdown)


if __name__ == "__main__":
    main()
