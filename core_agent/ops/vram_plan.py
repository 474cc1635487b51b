"""The VRAM planner: how much GPU memory each vLLM server of the production stack needs.

Pure functions over configs/gpu-stack.yaml (model facts + the owner's knobs). For each
service: weights, KV cache at the configured context x concurrency, LoRA slots and a
runtime overhead; the `--gpu-memory-utilization` fraction that implies; and the total
per card against its memory. A plan over a card is refused with the biggest item and
what to change. compose.yaml gets its vLLM arguments from `env_values(plan)` (written
into .env by `appliance vram-plan --write-env`), so compose and plan cannot drift.

Units: bytes inside; GiB (2^30) when shown, as nvidia-smi and vLLM's logs do.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

GIB = 2**30
MIB = 2**20
DEFAULT_STACK_FILE = Path(__file__).resolve().parents[2] / "configs" / "gpu-stack.yaml"
PINS_FILE_NAME = "model-pins.yaml"
# The order compose.yaml starts the servers in (each waits for the previous one to be
# healthy): memory (embeddings) right after the core, so it never depends on vision.
START_ORDER = ("vllm-core", "vllm-embed", "vllm-code", "vllm-vision")
# What an unpinned model is served at until fetch-models.sh --pin records a commit.
UNPINNED_REVISION = "main"
# vLLM refuses a zero KV budget; an encoder keeps none, so it gets this token amount.
MIN_KV_CACHE_BYTES = 64 * 2**20

WeightDtype = Literal["bf16", "fp8"]
KvCacheDtype = Literal["auto", "fp8"]
BYTES_PER_WEIGHT: dict[str, int] = {"bf16": 2, "fp8": 1}
# "auto" stores the KV cache in the model's dtype, BF16 for every model here.
BYTES_PER_KV_VALUE: dict[str, int] = {"auto": 2, "fp8": 1}
# LoRA weights are kept in the model dtype (vLLM --lora-dtype auto = BF16).
LORA_BYTES_PER_VALUE = 2
# Ranks vLLM accepts for --max-lora-rank.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# vLLM module names the core's LoRA slots cover (compose.yaml passes them as
# --lora-target-modules): attention only, the safe default on Qwen3-MoE. Expert
# LoRA would cost ~1.7 GB per slot at rank 16 (docs/gpu.md).
LORA_TARGET_MODULES = ("qkv_proj", "o_proj")
# Qwen's guidance: YaRN is validated up to a factor of 4 over the native window.
MAX_TESTED_YARN_FACTOR = 4.0
ItemKind = Literal["weights", "kv_cache", "lora", "overhead"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- configs/gpu-stack.yaml --------------------------------------------------

class CardSpec(_Strict):
    name: str
    memory_mib: int = Field(gt=0)
    max_total_fraction: float = Field(default=0.95, gt=0.0, le=1.0)

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * MIB


class ModelFacts(_Strict):
    """Architecture facts of one checkpoint (config.json); not knobs."""

    hf_repo: str
    # The commit every server and scripts/fetch-models.sh use (vLLM --revision). None =
    # not pinned yet: `./scripts/fetch-models.sh --pin` records the commit it downloads
    # in configs/model-pins.yaml, which load_stack() merges in.
    revision: str | None = Field(default=None, pattern=r"^[0-9a-f]{40}$")
    # vLLM parsers for this checkpoint's chat format (None: the model has none).
    reasoning_parser: str | None = None
    tool_call_parser: str | None = None
    # Bytes on disk (what fetch-models.sh checks free space against); ~weights at the
    # checkpoint dtype when not given.
    download_gb: float | None = Field(default=None, gt=0)
    params_b: float = Field(gt=0)
    unquantized_params_b: float = Field(ge=0)
    checkpoint_dtype: WeightDtype
    hidden_size: int = Field(gt=0)
    layers: int = Field(gt=0)
    q_heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    native_context: int = Field(gt=0)
    rope_theta: float = Field(ge=0)
    experts: int = Field(default=0, ge=0)
    experts_per_tok: int = Field(default=0, ge=0)
    encoder_only: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> ModelFacts:
        if self.unquantized_params_b > self.params_b:
            raise ValueError("unquantized_params_b cannot exceed params_b")
        if self.experts and not 0 < self.experts_per_tok <= self.experts:
            raise ValueError("experts_per_tok must be between 1 and experts")
        return self


class LoraKnobs(_Strict):
    max_loras: int = Field(ge=1, le=64)
    max_lora_rank: int
    max_cpu_loras: int = Field(ge=1)

    @model_validator(mode="after")
    def _valid(self) -> LoraKnobs:
        if self.max_lora_rank not in VLLM_LORA_RANKS:
            raise ValueError(f"max_lora_rank must be one of {VLLM_LORA_RANKS} (what vLLM accepts)")
        if self.max_cpu_loras < self.max_loras:
            raise ValueError("max_cpu_loras must be >= max_loras (vLLM refuses it otherwise)")
        return self


class ServiceKnobs(_Strict):
    """The owner's knobs for one vLLM server."""

    model: str
    served_name: str
    card: int = Field(default=0, ge=0)
    weight_dtype: WeightDtype
    max_model_len: int = Field(ge=256)
    max_num_seqs: int = Field(ge=1, le=1024)
    kv_cache_dtype: KvCacheDtype = "auto"
    active_experts: int | None = Field(default=None, ge=1)
    overhead_gib: float = Field(ge=0)
    lora: LoraKnobs | None = None
    # Vision only: the largest image (pixels) the processor keeps; bigger ones are
    # downscaled, which bounds the image tokens per request (Qwen2.5-VL: 28x28 px/token).
    max_image_pixels: int | None = Field(default=None, ge=28 * 28)


class GpuStack(_Strict):
    cards: list[CardSpec] = Field(min_length=1)
    models: dict[str, ModelFacts]
    services: dict[str, ServiceKnobs] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> GpuStack:
        problems = [p for name, svc in self.services.items() for p in _service_problems(self, name, svc)]
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _service_problems(stack: GpuStack, name: str, svc: ServiceKnobs) -> list[str]:
    """Knob values that contradict the model facts or the cards (owner-facing)."""
    key = f"services.{name}"
    if svc.model not in stack.models:
        return [f"{key}.model '{svc.model}' is not one of models: {sorted(stack.models)}"]
    facts = stack.models[svc.model]
    out = []
    if svc.card >= len(stack.cards):
        out.append(f"{key}.card {svc.card} does not exist (cards 0..{len(stack.cards) - 1}); add the card under cards:")
    if facts.checkpoint_dtype == "fp8" and svc.weight_dtype == "bf16":
        out.append(f"{key}.weight_dtype bf16 cannot be served from the FP8 checkpoint {facts.hf_repo}; use fp8 or a BF16 checkpoint")
    if svc.active_experts is not None and not facts.experts:
        out.append(f"{key}.active_experts is set but {facts.hf_repo} is not a mixture-of-experts model; remove it")
    if svc.active_experts is not None and facts.experts and svc.active_experts > facts.experts:
        out.append(f"{key}.active_experts {svc.active_experts} exceeds the model's {facts.experts} experts")
    if facts.encoder_only and svc.max_model_len > facts.native_context:
        out.append(f"{key}.max_model_len {svc.max_model_len} exceeds {facts.hf_repo}'s {facts.native_context} tokens (no rope scaling for this encoder)")
    if svc.lora is not None and facts.encoder_only:
        out.append(f"{key}.lora: LoRA slots are for generative models, not the encoder {facts.hf_repo}")
    return out


class PlanConfigError(Exception):
    """configs/gpu-stack.yaml is missing or invalid; the message names the key."""


def pins_file_for(stack_file: Path) -> Path:
    """The revision pins written by fetch-models.sh --pin, beside the stack file."""
    return stack_file.with_name(PINS_FILE_NAME)


def read_pins(path: Path) -> dict[str, str]:
    """hf_repo -> commit, from a pins file (empty when there is none yet)."""
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise PlanConfigError(f"{path}: not valid YAML: {exc}. Fix: delete it and run ./scripts/fetch-models.sh --pin") from None
    pins = data.get("revisions", {}) if isinstance(data, dict) else {}
    if not isinstance(pins, dict):
        raise PlanConfigError(f"{path}: key 'revisions' must map hf_repo to a commit")
    return {str(k): str(v) for k, v in pins.items()}


def _apply_pins(raw: Any, pins: dict[str, str]) -> Any:
    """Fill each model's revision from the pins file unless gpu-stack.yaml sets one."""
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), dict):
        return raw
    for facts in raw["models"].values():
        if isinstance(facts, dict) and facts.get("revision") is None and facts.get("hf_repo") in pins:
            facts["revision"] = pins[facts["hf_repo"]]
    return raw


def load_stack(path: Path = DEFAULT_STACK_FILE, pins_path: Path | None = None) -> GpuStack:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlanConfigError(f"cannot read {path}: {exc.strerror}. Fix: restore configs/gpu-stack.yaml from git") from None
    except yaml.YAMLError as exc:
        raise PlanConfigError(f"{path}: not valid YAML: {exc}") from None
    raw = _apply_pins(raw, read_pins(pins_path or pins_file_for(path)))
    try:
        return GpuStack.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{path}: invalid GPU stack configuration:"]
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = "unknown key (check the spelling)" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"  - key '{where}': {msg}")
        raise PlanConfigError("\n".join(lines)) from None


# --- the arithmetic ------------------------------------------------------------

def weight_bytes(facts: ModelFacts, weight_dtype: WeightDtype) -> int:
    """Quantized parameters at the weight dtype, the rest (embeddings, norms...) at BF16."""
    quantized = (facts.params_b - facts.unquantized_params_b) * 1e9
    unquantized = facts.unquantized_params_b * 1e9
    return round(quantized * BYTES_PER_WEIGHT[weight_dtype] + unquantized * BYTES_PER_WEIGHT["bf16"])


def kv_bytes_per_token(facts: ModelFacts, kv_cache_dtype: KvCacheDtype) -> int:
    """2 (K and V) x layers x KV heads x head_dim x bytes per value; 0 for an encoder."""
    if facts.encoder_only:
        return 0
    return 2 * facts.layers * facts.kv_heads * facts.head_dim * BYTES_PER_KV_VALUE[kv_cache_dtype]


def kv_cache_bytes(facts: ModelFacts, knobs: ServiceKnobs) -> int:
    """Every sequence at full context at once: the worst case vLLM must be able to hold."""
    return kv_bytes_per_token(facts, knobs.kv_cache_dtype) * knobs.max_model_len * knobs.max_num_seqs


def lora_slot_bytes(facts: ModelFacts, rank: int) -> int:
    """One GPU LoRA slot at `rank` over q/k/v/o of every layer (A: r x in, B: out x r)."""
    q_out = facts.q_heads * facts.head_dim
    kv_out = facts.kv_heads * facts.head_dim
    h = facts.hidden_size
    per_layer = rank * ((h + q_out) + 2 * (h + kv_out) + (q_out + h))
    return per_layer * facts.layers * LORA_BYTES_PER_VALUE


def lora_bytes(facts: ModelFacts, lora: LoraKnobs | None) -> int:
    return 0 if lora is None else lora.max_loras * lora_slot_bytes(facts, lora.max_lora_rank)


def yarn_factor(facts: ModelFacts, max_model_len: int) -> float | None:
    """The YaRN rope-scaling factor a context beyond the native window needs (2 decimals, up)."""
    if max_model_len <= facts.native_context:
        return None
    return math.ceil(max_model_len / facts.native_context * 100) / 100


def hf_overrides(facts: ModelFacts, knobs: ServiceKnobs) -> dict[str, Any]:
    """vLLM --hf-overrides: active experts and YaRN rope scaling, when they apply."""
    out: dict[str, Any] = {}
    if knobs.active_experts is not None:
        out["num_experts_per_tok"] = knobs.active_experts
    factor = yarn_factor(facts, knobs.max_model_len)
    if factor is not None:
        # transformers 5 / vLLM 0.32 name this rope_parameters (older: rope_scaling);
        # vLLM replaces the whole dict, so rope_theta is repeated here.
        out["rope_parameters"] = {"rope_type": "yarn", "factor": factor,
                                  "original_max_position_embeddings": facts.native_context,
                                  "rope_theta": facts.rope_theta}
        # vLLM 0.32 takes a YaRN model's max_position_embeddings as already scaled (it
        # does not multiply by factor) and refuses a longer max_model_len otherwise.
        out["max_position_embeddings"] = math.ceil(facts.native_context * factor)
    return out


def utilization_fraction(needed_bytes: int, card_bytes: int) -> float:
    """--gpu-memory-utilization: the needed share of the card, rounded up to 0.01."""
    return math.ceil(needed_bytes / card_bytes * 100 - 1e-9) / 100


def vllm_quantization(facts: ModelFacts, knobs: ServiceKnobs) -> str:
    """vLLM --quantization value: fp8 (checkpoint or online at load) or None."""
    return "fp8" if knobs.weight_dtype == "fp8" else "None"


# --- the plan -------------------------------------------------------------------

class PlanItem(BaseModel):
    service: str
    kind: ItemKind
    bytes: int
    detail: str


class ServicePlan(BaseModel):
    service: str
    model: str
    hf_repo: str
    card: int
    weights_bytes: int
    kv_bytes_per_token: int
    kv_cache_bytes: int
    lora_bytes: int
    overhead_bytes: int
    total_bytes: int
    gpu_memory_utilization: float
    hf_overrides: dict[str, Any]
    quantization: str
    warnings: list[str]
    knobs: ServiceKnobs
    facts: ModelFacts

    @property
    def revision(self) -> str:
        return self.facts.revision or UNPINNED_REVISION

    @property
    def kv_cache_memory_bytes(self) -> int:
        """vLLM --kv-cache-memory-bytes: the planned KV cache, fixed up front, so vLLM
        skips its start-up memory profiling (no race when servers start together)."""
        return max(self.kv_cache_bytes, MIN_KV_CACHE_BYTES)

    def items(self) -> list[PlanItem]:
        k = self.knobs
        return [
            PlanItem(service=self.service, kind="weights", bytes=self.weights_bytes,
                     detail=f"{self.hf_repo} at {k.weight_dtype}"),
            PlanItem(service=self.service, kind="kv_cache", bytes=self.kv_cache_bytes,
                     detail=f"{self.kv_bytes_per_token // 1024} KiB/token x {k.max_model_len:,} context x {k.max_num_seqs} sequences"),
            PlanItem(service=self.service, kind="lora", bytes=self.lora_bytes,
                     detail=f"{k.lora.max_loras} slots at rank {k.lora.max_lora_rank}" if k.lora else "no LoRA"),
            PlanItem(service=self.service, kind="overhead", bytes=self.overhead_bytes,
                     detail="CUDA context, activations, CUDA graphs (estimate)"),
        ]


class CardPlan(BaseModel):
    index: int
    name: str
    memory_bytes: int
    max_total_fraction: float
    services: list[str]
    fraction_sum: float
    planned_bytes: int

    @property
    def fits(self) -> bool:
        return self.fraction_sum <= self.max_total_fraction + 1e-9

    @property
    def headroom_bytes(self) -> int:
        return round((self.max_total_fraction - self.fraction_sum) * self.memory_bytes)


class VramPlan(BaseModel):
    services: list[ServicePlan]
    cards: list[CardPlan]

    @property
    def fits(self) -> bool:
        return all(card.fits for card in self.cards)

    def service(self, name: str) -> ServicePlan:
        return next(s for s in self.services if s.service == name)

    def as_json(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        for card, out in zip(self.cards, data["cards"]):
            out["fits"] = card.fits
            out["headroom_bytes"] = card.headroom_bytes
        data["fits"] = self.fits
        return data


def service_warnings(facts: ModelFacts, knobs: ServiceKnobs) -> list[str]:
    out = []
    if facts.revision is None:
        out.append(f"{facts.hf_repo} is not pinned to a commit (served at '{UNPINNED_REVISION}'): run "
                   f"./scripts/fetch-models.sh --pin once, so the weights cannot change under you.")
    factor = yarn_factor(facts, knobs.max_model_len)
    if factor is not None:
        out.append(
            f"max_model_len {knobs.max_model_len:,} is above the native {facts.native_context:,}: YaRN "
            f"x{factor} rope scaling is applied to every request (static), which can lower quality on "
            f"short texts. Use it only if you need the long context.")
        if factor > MAX_TESTED_YARN_FACTOR:
            out.append(f"YaRN factor {factor} is beyond the x{MAX_TESTED_YARN_FACTOR:g} the model authors validated.")
    if facts.experts and knobs.active_experts not in (None, facts.experts_per_tok):
        out.append(
            f"active_experts {knobs.active_experts} differs from the trained {facts.experts_per_tok}: "
            f"compute per token changes by x{knobs.active_experts / facts.experts_per_tok:.2f} "
            f"for the expert layers, memory does not; check answer quality on your own prompts.")
    return out


def plan_service(stack: GpuStack, name: str) -> ServicePlan:
    knobs = stack.services[name]
    facts = stack.models[knobs.model]
    card = stack.cards[knobs.card]
    weights = weight_bytes(facts, knobs.weight_dtype)
    kv = kv_cache_bytes(facts, knobs)
    lora = lora_bytes(facts, knobs.lora)
    overhead = round(knobs.overhead_gib * GIB)
    total = weights + kv + lora + overhead
    return ServicePlan(
        service=name, model=knobs.model, hf_repo=facts.hf_repo, card=knobs.card,
        weights_bytes=weights, kv_bytes_per_token=kv_bytes_per_token(facts, knobs.kv_cache_dtype),
        kv_cache_bytes=kv, lora_bytes=lora, overhead_bytes=overhead, total_bytes=total,
        gpu_memory_utilization=utilization_fraction(total, card.memory_bytes),
        hf_overrides=hf_overrides(facts, knobs), quantization=vllm_quantization(facts, knobs),
        warnings=service_warnings(facts, knobs), knobs=knobs, facts=facts,
    )


def plan_card(stack: GpuStack, index: int, services: list[ServicePlan]) -> CardPlan:
    card = stack.cards[index]
    on_card = [s for s in services if s.card == index]
    return CardPlan(
        index=index, name=card.name, memory_bytes=card.memory_bytes,
        max_total_fraction=card.max_total_fraction, services=[s.service for s in on_card],
        fraction_sum=round(sum(s.gpu_memory_utilization for s in on_card), 2),
        planned_bytes=sum(s.total_bytes for s in on_card),
    )


def plan_stack(stack: GpuStack) -> VramPlan:
    services = [plan_service(stack, name) for name in stack.services]
    cards = [plan_card(stack, i, services) for i in range(len(stack.cards))]
    return VramPlan(services=services, cards=cards)


# --- refusing a plan that does not fit ----------------------------------------

class PlanRefused(Exception):
    """The plan does not fit a card; the message names the biggest item and the fix."""


def _gib(n: int | float) -> str:
    return f"{n / GIB:.1f} GiB"


def fix_for(item: PlanItem) -> str:
    key = f"services.{item.service}"
    return {
        "kv_cache": f"lower {key}.max_num_seqs or {key}.max_model_len, or set {key}.kv_cache_dtype: fp8 (halves it)",
        "weights": f"pick a smaller model for {key}.model, use {key}.weight_dtype: fp8, or move it to another card ({key}.card)",
        "lora": f"lower {key}.lora.max_loras or {key}.lora.max_lora_rank",
        "overhead": f"lower {key}.overhead_gib only if vLLM's start-up log shows it needs less",
    }[item.kind]


def refusal_message(plan: VramPlan, card: CardPlan) -> str:
    items = [i for s in plan.services if s.card == card.index for i in s.items()]
    biggest = max(items, key=lambda i: i.bytes)
    limit = card.max_total_fraction * card.memory_bytes
    over = card.fraction_sum * card.memory_bytes - limit
    return (
        f"the plan does not fit card {card.index} ({card.name}, {_gib(card.memory_bytes)}): the services "
        f"{', '.join(card.services)} need --gpu-memory-utilization {card.fraction_sum:.2f} in total "
        f"({_gib(card.planned_bytes)}), over the limit {card.max_total_fraction:.2f} ({_gib(limit)}) "
        f"by {_gib(over)}. Biggest item: {biggest.service} {biggest.kind.replace('_', ' ')} "
        f"{_gib(biggest.bytes)} ({biggest.detail}). Fix: {fix_for(biggest)} in configs/gpu-stack.yaml, "
        f"then run ./scripts/vram-plan.sh again."
    )


def check_fits(plan: VramPlan) -> None:
    for card in plan.cards:
        if not card.fits:
            raise PlanRefused(refusal_message(plan, card))


# --- what compose.yaml reads (.env) ---------------------------------------------

ENV_BLOCK_BEGIN = "# >>> vram-plan: generated by `appliance vram-plan --write-env` from configs/gpu-stack.yaml; do not edit"
ENV_BLOCK_END = "# <<< vram-plan"


def env_prefix(service: str) -> str:
    return service.upper().replace("-", "_")


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


# Images per prompt: bounds the encoder's activations (inside overhead_gib).
MAX_IMAGES_PER_PROMPT = 4


def vllm_settings(s: ServicePlan) -> list[tuple[str, str | None]]:
    """The vLLM arguments this service's plan implies, as (flag, value or None) in the
    order compose.yaml lists them. compose.yaml passes each through a .env variable
    (service_env); tests/ and the CPU twin start vLLM from vllm_args() directly."""
    k, f = s.knobs, s.facts
    args: list[tuple[str, str | None]] = [
        ("model", s.hf_repo), ("revision", s.revision), ("served-model-name", k.served_name),
    ]
    if f.encoder_only:
        args.append(("runner", "pooling"))
    args += [
        ("gpu-memory-utilization", f"{s.gpu_memory_utilization:.2f}"),
        ("kv-cache-memory-bytes", str(s.kv_cache_memory_bytes)),
        ("max-model-len", str(k.max_model_len)),
        ("max-num-seqs", str(k.max_num_seqs)),
    ]
    if not f.encoder_only:
        args.append(("kv-cache-dtype", k.kv_cache_dtype))
    args.append(("quantization", s.quantization))
    if not f.encoder_only:
        args += [("hf-overrides", _json(s.hf_overrides)), ("enable-prefix-caching", None)]
    if f.reasoning_parser:
        args.append(("reasoning-parser", f.reasoning_parser))
    if f.tool_call_parser:
        args += [("enable-auto-tool-choice", None), ("tool-call-parser", f.tool_call_parser)]
    if k.max_image_pixels is not None:
        args += [("limit-mm-per-prompt", _json({"image": MAX_IMAGES_PER_PROMPT})),
                 ("mm-processor-kwargs", _json({"max_pixels": k.max_image_pixels}))]
    if k.lora is not None:
        args += [("enable-lora", None), ("max-loras", str(k.lora.max_loras)),
                 ("max-lora-rank", str(k.lora.max_lora_rank)), ("max-cpu-loras", str(k.lora.max_cpu_loras))]
    return args


def vllm_args(s: ServicePlan, host: str = "0.0.0.0", port: int = 8000) -> list[str]:
    """`vllm serve` arguments for this service (what compose.yaml's command resolves to)."""
    out = []
    for flag, value in vllm_settings(s)[:3]:
        out.append(f"--{flag}={value}")
    out += [f"--host={host}", f"--port={port}"]
    for flag, value in vllm_settings(s)[3:]:
        out.append(f"--{flag}" if value is None else f"--{flag}={value}")
    if s.knobs.lora is not None:
        out += ["--lora-target-modules", *LORA_TARGET_MODULES]
    return out


def service_env(s: ServicePlan) -> dict[str, str]:
    """The .env variables compose.yaml reads for this service: one per valued vLLM
    flag (VLLM_<SERVICE>_<FLAG>), plus the GPU id."""
    p = env_prefix(s.service)
    out = {f"{p}_GPU_ID": str(s.card)}
    for flag, value in vllm_settings(s):
        if value is not None:
            out[f"{p}_{flag.upper().replace('-', '_')}"] = value
    return out


def app_context_env(plan: VramPlan) -> dict[str, str]:
    """What the app containers learn from the plan (compose.yaml's x-planned-context):
    each chat model's context is its server's --max-model-len, never a separate number,
    and the LoRA manager validates against the core's pinned snapshot."""
    return {"APPLIANCE_MODELS__CORE__N_CTX": str(plan.service("vllm-core").knobs.max_model_len),
            "APPLIANCE_MODELS__CODE__N_CTX": str(plan.service("vllm-code").knobs.max_model_len),
            "APPLIANCE_ADAPTERS__BASE_REVISION": plan.service("vllm-core").revision}


def env_values(plan: VramPlan) -> dict[str, str]:
    return {key: value for s in plan.services for key, value in service_env(s).items()}


def render_env_block(values: dict[str, str]) -> str:
    # Single quotes: docker compose takes the value literally (the JSON keeps its quotes).
    lines = [ENV_BLOCK_BEGIN, *(f"{k}='{v}'" for k, v in values.items()), ENV_BLOCK_END]
    return "\n".join(lines) + "\n"


def replace_env_block(text: str, block: str) -> str:
    """`text` with its generated block replaced by `block` (appended when absent)."""
    start, end = text.find(ENV_BLOCK_BEGIN), text.find(ENV_BLOCK_END)
    if start == -1 or end == -1:
        return text + ("" if text.endswith("\n") or not text else "\n") + block
    stop = text.find("\n", end)
    return text[:start] + block + (text[stop + 1:] if stop != -1 else "")


def read_env_block(text: str) -> dict[str, str]:
    """The KEY='value' pairs of the generated block in a .env text."""
    start, end = text.find(ENV_BLOCK_BEGIN), text.find(ENV_BLOCK_END)
    if start == -1 or end == -1:
        return {}
    out = {}
    for line in text[start:end].splitlines()[1:]:
        key, _, value = line.partition("=")
        if key and not key.startswith("#"):
            out[key.strip()] = value.strip().strip("'")
    return out
