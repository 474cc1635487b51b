"""Embeddings: real MiniLM vectors in-process, and our OpenAI-compatible /v1/embeddings
(embed queue) through the official `openai` client and through our own `openai` backend."""

from __future__ import annotations

import numpy as np
import openai
import pytest

from configs.schema import EmbeddingModelConfig, Settings
from tests.conftest import Stack
from configs.contracts.errors import BadGenerationRequest, ModelUnavailable
from workers.backends.embeddings import OpenAICompatibleEmbeddings, SentenceTransformerEmbeddings
from workers.backends.registry import embedding_backend

ANCHOR = "The cat is sleeping on the sofa."
RELATED = "A kitten naps on the couch."
UNRELATED = "Quarterly tax returns are due in April."


def cosines(vectors: list[list[float]]) -> tuple[float, float]:
    a, b, c = (np.asarray(v) / np.linalg.norm(v) for v in vectors)
    return float(a @ b), float(a @ c)


def test_minilm_vectors_put_related_texts_closer_than_unrelated() -> None:
    backend = embedding_backend(Settings())
    batch = backend.embed([ANCHOR, RELATED, UNRELATED])
    assert backend.dimension == 384 and all(len(v) == 384 for v in batch.vectors)
    related, unrelated = cosines(batch.vectors)
    assert related > unrelated + 0.3
    assert abs(np.linalg.norm(batch.vectors[0]) - 1) < 1e-4, "cosine models return unit vectors"
    assert batch.prompt_tokens > 0


def test_batches_give_the_same_vectors_as_single_calls() -> None:
    backend = SentenceTransformerEmbeddings("small-batches", EmbeddingModelConfig(batch_size=2))
    texts = [f"note number {i} about gardening" for i in range(5)]
    together = np.asarray(backend.embed(texts).vectors)
    alone = np.asarray([backend.embed([t]).vectors[0] for t in texts])
    assert np.allclose(together, alone, atol=1e-5)


def test_bad_input_and_missing_model_are_clear_errors(tmp_path) -> None:
    with pytest.raises(BadGenerationRequest, match="empty"):
        embedding_backend(Settings()).embed([])
    missing = SentenceTransformerEmbeddings("gone", EmbeddingModelConfig(path=tmp_path / "nope"))
    with pytest.raises(ModelUnavailable, match="folder not found"):
        missing.check()
    down = OpenAICompatibleEmbeddings("remote", EmbeddingModelConfig(backend="openai",
                                                                      base_url="http://127.0.0.1:9/v1"))
    with pytest.raises(ModelUnavailable, match="not reachable"):
        down.embed(["hello"])


def test_our_v1_embeddings_through_the_official_openai_client(stack: Stack) -> None:
    client = stack.openai()
    result = client.embeddings.create(model="minilm", input=[ANCHOR, RELATED, UNRELATED])  # base64 by default
    vectors = [d.embedding for d in result.data]
    assert [d.index for d in result.data] == [0, 1, 2] and len(vectors[0]) == 384
    related, unrelated = cosines(vectors)
    assert related > unrelated + 0.3
    floats = client.embeddings.create(model="minilm", input=ANCHOR, encoding_format="float")
    assert np.allclose(floats.data[0].embedding, vectors[0], atol=1e-5)
    assert result.usage.prompt_tokens > 0
    with pytest.raises(openai.NotFoundError, match="minilm"):
        client.embeddings.create(model="text-embedding-3-small", input="x")


def test_the_openai_backend_talks_to_an_openai_compatible_server(stack: Stack) -> None:
    # Our own /v1/embeddings is a real OpenAI-compatible server: point the backend at it.
    config = EmbeddingModelConfig(backend="openai", base_url=f"{stack.url}/v1", served_model="minilm",
                                  api_key=stack.token, batch_size=2)
    remote = OpenAICompatibleEmbeddings("remote-minilm", config)
    batch = remote.embed([ANCHOR, RELATED, UNRELATED])
    assert remote.dimension == 384
    local = embedding_backend(Settings()).embed([ANCHOR, RELATED, UNRELATED])
    assert np.allclose(batch.vectors, local.vectors, atol=1e-4)
