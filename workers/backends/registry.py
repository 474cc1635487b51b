"""Pick the backend implementation for a configured model: the only place that does.

Backends are cached per process (a worker child loads its model once). Adding a
backend kind means one entry in CHAT_BACKENDS, nothing else.
"""

from __future__ import annotations

from typing import Callable

from configs.schema import ChatModelConfig, EmbeddingModelConfig, Settings, VisionConfig
from workers.backends.base import ChatBackend
from configs.contracts.errors import ModelUnavailable
from workers.backends.embeddings import (
    EmbeddingBackend,
    OpenAICompatibleEmbeddings,
    SentenceTransformerEmbeddings,
)
from workers.backends.llamacpp_chat import LlamaCppChat
from workers.backends.openai_chat import OpenAICompatibleChat
from workers.backends.synthetic_rate import SyntheticRateChat
from workers.backends.vision import OpenAICompatibleVision, RapidOcrVision, VisionBackend

CHAT_BACKENDS: dict[str, Callable[[str, ChatModelConfig, Settings], ChatBackend]] = {
    "llamacpp": LlamaCppChat,
    "openai": OpenAICompatibleChat,
    "synthetic_rate": SyntheticRateChat,  # bench/test only (allow_synthetic_backends)
}

VISION_BACKENDS: dict[str, Callable[[VisionConfig], VisionBackend]] = {
    "rapidocr": RapidOcrVision,
    "openai": OpenAICompatibleVision,
}

_chat_cache: dict[str, ChatBackend] = {}
_vision_cache: dict[str, VisionBackend] = {}


def chat_backend(settings: Settings, model_name: str) -> ChatBackend:
    """The process-wide backend instance for `model_name`."""
    if model_name not in settings.models:
        raise ModelUnavailable(
            f"unknown model '{model_name}'. Configured models: {sorted(settings.models)} "
            f"(configs/models.yaml)."
        )
    backend = _chat_cache.get(model_name)
    if backend is None:
        config = settings.models[model_name]
        backend = CHAT_BACKENDS[config.backend](model_name, config, settings)
        _chat_cache[model_name] = backend
    return backend


EMBEDDING_BACKENDS: dict[str, Callable[[str, EmbeddingModelConfig], EmbeddingBackend]] = {
    "sentence_transformers": SentenceTransformerEmbeddings,
    "openai": OpenAICompatibleEmbeddings,
}

_embedding_cache: dict[str, EmbeddingBackend] = {}


def embedding_backend(settings: Settings, model_name: str | None = None) -> EmbeddingBackend:
    """The process-wide embeddings backend for `model_name` (default: embeddings.default_model)."""
    name = model_name or settings.embeddings.default_model
    if name not in settings.embeddings.models:
        raise ModelUnavailable(
            f"unknown embedding model '{name}'. Configured: {sorted(settings.embeddings.models)} "
            f"(configs/memory.yaml, embeddings.models).")
    backend = _embedding_cache.get(name)
    if backend is None:
        config = settings.embeddings.models[name]
        backend = EMBEDDING_BACKENDS[config.backend](name, config)
        _embedding_cache[name] = backend
    return backend


def vision_backend(settings: Settings) -> VisionBackend:
    """The process-wide vision backend chosen by `vision.backend`."""
    kind = settings.vision.backend
    if kind not in _vision_cache:
        _vision_cache[kind] = VISION_BACKENDS[kind](settings.vision)
    return _vision_cache[kind]


def clear_cache() -> None:
    _chat_cache.clear()
    _vision_cache.clear()
    _embedding_cache.clear()
