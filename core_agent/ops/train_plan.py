"""The GPU training plan: how much memory training a LoRA on the served core takes, and
which model servers must pause for it (configs/gpu-stack.yaml, beside vram_plan.py).

Memory of one training process (estimates; the arithmetic is in docs/lora.md):
  base weights   bf16: params x 2 B;  qlora: NF4 ~0.53 B/param (4 bit + double-quantized
                 scales) for the quantized layers, embeddings/head kept at 2 B
  LoRA state     trainable params x 16 B (fp32 weight 4 + grad 4 + Adam moments 8)
  activations    gradient checkpointing: the hidden state at each layer boundary
                 (tokens x hidden x 2 B x layers) + one layer's recompute working set
                 (~20 x tokens x hidden x 2 B)
  logits         tokens x vocab x 8 B (fp32 logits and their gradient)
  overhead       CUDA context, cuBLAS workspaces, allocator fragmentation (3 GiB)
Free memory on the card = max_total_fraction x card - what the servers that keep
running reserve (their --gpu-memory-utilization share). Servers are paused in order:
the others before the core (so the owner's chat keeps answering if at all possible),
largest first, and whatever turns out unnecessary is resumed. The recommended method is
the one that keeps the core answering, then the one that pauses least; with equal pauses,
bf16 (no quantization error on top of the served base).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from core_agent.ops.vram_plan import GIB, GpuStack, ModelFacts, VramPlan, plan_stack

Method = Literal["bf16", "qlora"]
ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
QWEN3_VOCAB = 151_936
NF4_BYTES_PER_PARAM = 0.53
OVERHEAD_BYTES = 3 * GIB
LAYER_WORKSET_FACTOR = 20


class TrainKnobs(BaseModel):
    service: str = "vllm-core"        # whose model the adapter is for
    rank: int = 16
    seq_len: int = 2048
    micro_batch: int = 1
    targets: tuple[str, ...] = ATTENTION_TARGETS
    vocab: int = QWEN3_VOCAB


class MethodPlan(BaseModel):
    method: Method
    items: dict[str, int]              # what -> bytes
    total_bytes: int
    pause: list[str]                   # compose services to stop first
    free_bytes: int                    # on the card once they are stopped
    fits: bool
    core_keeps_serving: bool


class TrainPlan(BaseModel):
    knobs: TrainKnobs
    model: str
    trainable_params: int
    methods: list[MethodPlan]
    recommended: Method | None

    def chosen(self) -> MethodPlan | None:
        return next((m for m in self.methods if m.method == self.recommended), None)


def trainable_params(facts: ModelFacts, knobs: TrainKnobs) -> int:
    q_out, kv_out = facts.q_heads * facts.head_dim, facts.kv_heads * facts.head_dim
    shapes = {"q_proj": (facts.hidden_size, q_out), "k_proj": (facts.hidden_size, kv_out),
              "v_proj": (facts.hidden_size, kv_out), "o_proj": (q_out, facts.hidden_size)}
    return facts.layers * sum(knobs.rank * (shapes[t][0] + shapes[t][1]) for t in knobs.targets)


def training_items(facts: ModelFacts, knobs: TrainKnobs, method: Method) -> dict[str, int]:
    params = facts.params_b * 1e9
    plain = facts.unquantized_params_b * 1e9
    weights = params * 2 if method == "bf16" else (params - plain) * NF4_BYTES_PER_PARAM + plain * 2
    tokens = knobs.seq_len * knobs.micro_batch
    return {"base weights": int(weights), "LoRA weights, gradients, Adam": trainable_params(facts, knobs) * 16,
            "activations (checkpointed)": tokens * facts.hidden_size * 2 * (facts.layers + LAYER_WORKSET_FACTOR),
            "logits and their gradient": tokens * knobs.vocab * 8, "overhead": OVERHEAD_BYTES}


def _pause_order(plan: VramPlan, core: str, card: int) -> list[str]:
    others = sorted((s for s in plan.services if s.card == card and s.service != core),
                    key=lambda s: s.gpu_memory_utilization, reverse=True)
    return [s.service for s in others] + [core]


def plan_method(stack: GpuStack, plan: VramPlan, knobs: TrainKnobs, method: Method) -> MethodPlan:
    core = plan.service(knobs.service)
    card = next(c for c in plan.cards if c.index == core.card)
    items = training_items(stack.models[core.model], knobs, method)
    needed = sum(items.values())
    usage = {s.service: s.gpu_memory_utilization * card.memory_bytes for s in plan.services if s.card == card.index}
    budget = card.max_total_fraction * card.memory_bytes
    def free_without(stopped: list[str]) -> float:
        return budget - sum(v for k, v in usage.items() if k not in stopped)

    paused: list[str] = []
    for candidate in [None, *_pause_order(plan, knobs.service, card.index)]:
        if candidate:
            paused.append(candidate)
        if free_without(paused) >= needed:
            break
    # Keep running whatever turned out not to be needed (pausing the core may have been enough).
    for name in reversed(paused[:-1]):
        if free_without([p for p in paused if p != name]) >= needed:
            paused.remove(name)
    free = free_without(paused)
    return MethodPlan(method=method, items=items, total_bytes=needed, pause=paused, free_bytes=int(free),
                      fits=free >= needed, core_keeps_serving=knobs.service not in paused)


def plan_training(stack: GpuStack, knobs: TrainKnobs | None = None) -> TrainPlan:
    knobs = knobs or TrainKnobs()
    if knobs.service not in stack.services:
        raise ValueError(f"service '{knobs.service}' is not in the GPU stack (services: "
                         f"{', '.join(stack.services)}); pass --service")
    plan = plan_stack(stack)
    methods = [plan_method(stack, plan, knobs, m) for m in ("bf16", "qlora")]
    feasible = [m for m in methods if m.fits]
    best = min(feasible, key=lambda m: (not m.core_keeps_serving, len(m.pause), m.method != "bf16")) \
        if feasible else None
    model = stack.services[knobs.service].model
    return TrainPlan(knobs=knobs, model=stack.models[model].hf_repo,
                     trainable_params=trainable_params(stack.models[model], knobs), methods=methods,
                     recommended=best.method if best else None)


def describe(plan: TrainPlan) -> list[str]:
    k = plan.knobs
    lines = [f"Training a rank-{k.rank} LoRA on {plan.model} ({', '.join(k.targets)}; "
             f"{plan.trainable_params / 1e6:.1f}M trainable parameters), {k.micro_batch} x {k.seq_len} tokens per step:"]
    for m in plan.methods:
        parts = ", ".join(f"{what} {b / GIB:.1f}" for what, b in m.items.items())
        pause = ", ".join(m.pause) or "nothing"
        verdict = (f"fits after pausing {pause} ({m.free_bytes / GIB:.1f} GiB free)" if m.fits
                   else f"does NOT fit even with every server paused ({m.free_bytes / GIB:.1f} GiB free)")
        chat = "the core keeps answering" if m.core_keeps_serving else "the core's chat pauses"
        lines.append(f"  {m.method:<5} needs {m.total_bytes / GIB:.1f} GiB ({parts}); {verdict}; {chat}")
    chosen = plan.chosen()
    if chosen is None:
        lines.append("No method fits: lower --seq-len / --micro-batch, or the rank.")
    else:
        lines.append(f"Recommended: {chosen.method}. Pause with scripts/train-pause.sh (stops: "
                     f"{', '.join(chosen.pause) or 'nothing'}), train, then scripts/train-resume.sh.")
    return lines
