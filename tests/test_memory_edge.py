"""The memory on Qdrant Edge: migration from local mode, payload filters on both engines,
Markdown parsing and model-token chunking on owner-style notes, and what keeps a large
memory from drowning (recency, near-duplicates, per-conversation cap).

Real components: Qdrant Edge, qdrant-client local mode (the old engine, and the same
client API a Qdrant server answers), MiniLM and its tokenizer.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from configs.contracts.memory import SearchRequest, TurnToIndex
from configs.schema import RecallConfig, Settings
from rag.chunking import chunk_sections
from rag.fusion import Fused
from rag.lexical import LexicalEncoder, SparseVector
from rag.migration import RECORD
from rag.parsers import parse_file
from rag.recall import select
from rag.service import MemoryService, point_id
from rag.store import PAYLOAD_INDEXES, EmbeddingSpec
from rag.store_edge import EdgeStore
from rag.store_qdrant import QdrantServerStore
from workers.backends.registry import embedding_backend

NOTES = Path(__file__).resolve().parents[1] / "bench" / "data" / "notes"
DAY = 86_400.0


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory):
    return embedding_backend(Settings(data_dir=tmp_path_factory.mktemp("embedder")))


def note(name: str) -> bytes:
    return (NOTES / name).read_bytes()


# --- Markdown and chunking -----------------------------------------------------

def test_markdown_setext_headings_and_both_fence_kinds() -> None:
    doc = parse_file(note("ru-domashniy-server.md"), "ru-domashniy-server.md")
    assert doc.title == "Домашний сервер" and doc.meta["tags"] == ["сервер", "резервные-копии"]
    paths = [s.heading_path for s in doc.sections]
    assert paths == ["Домашний сервер", "Домашний сервер > Резервное копирование",
                     "Домашний сервер > Резервное копирование > Что проверять после обновления",
                     "Домашний сервер > Электричество"]
    by_path = {s.heading_path: s.text for s in doc.sections}
    # Lines starting with # inside ``` and ~~~ fences are code, kept as text, not headings.
    assert "# не заголовок" in by_path["Домашний сервер > Резервное копирование"]
    assert "## тоже не заголовок" in by_path[paths[2]]
    assert all("===" not in text and "-----" not in text for text in by_path.values()), "underlines are markup"

    doc = parse_file(note("en-homelab.md"), "en-homelab.md")
    assert [s.heading_path for s in doc.sections] == ["Homelab notes", "Homelab notes > Networking",
                                                       "Homelab notes > Power"]
    assert "# also not a heading" in doc.sections[-1].text


def test_chunks_are_sized_in_the_embedding_models_word_pieces(embedder, tmp_path: Path) -> None:
    service = MemoryService(Settings(data_dir=tmp_path), embedder)
    try:
        spans = service.token_spans
        tokenizer = embedder.model.tokenizer

        def pieces(text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

        ru = parse_file(note("ru-domashniy-server.md"), "ru.md")
        en = parse_file(note("en-homelab.md"), "en.md")
        chunks = chunk_sections(ru.sections, size=48, overlap=8, spans_of=spans)
        assert len(chunks) > len(ru.sections), "long sections are split"
        for chunk in chunks:
            assert chunk.tokens == pieces(chunk.text) or abs(chunk.tokens - pieces(chunk.text)) <= 2
            assert pieces(chunk.text) <= 48 + 2
        # Cyrillic costs far more word pieces per word than English in this vocabulary.
        ratio = lambda doc: pieces(doc.text) / len(doc.text.split())  # noqa: E731
        assert ratio(ru) > 2 * ratio(en)
        # With the configured size, every chunk plus its heading context fits what the model reads.
        limit = embedder.max_input_tokens()
        for chunk in service._chunks(ru.sections, ru.title):
            assert pieces(chunk.embedding_text(ru.title)) + 2 <= limit
    finally:
        service.close()


# --- one collection model, one filter language, two engines ----------------------

def sample_points(n: int = 8):
    ids = [point_id("filter-test", i) for i in range(n)]
    dense = [[1.0, float(i), 0.5, 0.0] for i in range(n)]
    lexical = [SparseVector(indices=[7, 100 + i], values=[1.0, 1.0]) for i in range(n)]
    payloads = [{"kind": "conversation", "text": f"point {i}", "message_id": i,
                 "conversation_id": f"c{i % 3}", "namespace": "owner" if i % 2 else "guest",
                 "tags": ["a", "b"] if i < 4 else ["c"]} for i in range(n)]
    return ids, dense, lexical, payloads


@pytest.mark.parametrize("engine", ["edge", "qdrant"])
def test_payload_filters_are_applied_inside_the_store(engine: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    spec = EmbeddingSpec(model="probe", dimension=4)
    if engine == "edge":
        store = EdgeStore(settings.memory, tmp_path / "edge", spec)
        schema = store.shards["turns"].info().payload_schema
        assert set(PAYLOAD_INDEXES) <= set(schema), "kind/source/conversation/namespace/tags are indexed"
    else:  # the server engine's code, on qdrant-client's local mode (same client API)
        store = QdrantServerStore(settings.memory, spec, client=QdrantClient(path=str(tmp_path / "local")))
    try:
        ids, dense, lexical, payloads = sample_points()
        store.upsert("turns", ids, dense, lexical, payloads)

        def found(where=None, exclude=None) -> set[int]:
            d, s = store.search("turns", [1.0, 2.0, 0.5, 0.0], SparseVector([7], [1.0]), 20, where, exclude)
            assert {p.id for p in d} == {p.id for p in s}, "both sides honour the filter"
            return {p.payload["message_id"] for p in d}

        assert found() == set(range(8))
        assert found({"namespace": "owner"}) == {1, 3, 5, 7}
        assert found({"conversation_id": ["c0", "c2"]}) == {0, 2, 3, 5, 6}
        assert found({"tags": ["b", "zzz"]}) == {0, 1, 2, 3}, "an array field matches any element"
        assert found({"namespace": "owner", "tags": ["c"]}) == {5, 7}, "conditions are ANDed"
        assert found({"namespace": "owner"}, {"message_id": [1, 5]}) == {3, 7}
        assert store.count("turns", {"tags": ["c"]}) == 4
        store.delete("turns", {"conversation_id": "c1"}, unless={"message_id": 4})
        assert found() == {0, 2, 3, 4, 5, 6}
    finally:
        store.close()


# --- migration of an old local-mode folder ----------------------------------------

def old_local_folder(path: Path, embedder, n_filler: int = 700) -> dict[str, dict]:
    """A memory folder exactly as the pre-Edge code wrote it: qdrant-client local mode,
    dense vector named 'dense', sparse 'lexical' with IDF, the embedding model in metadata."""
    client = QdrantClient(path=str(path))
    lexical = LexicalEncoder(Settings().memory.lexical)
    texts = {"turns": "My bicycle is a green Surly named Rocinante.",
             "documents": "The greenhouse key hangs behind the kitchen door."}
    written: dict[str, dict] = {}
    for kind, text in texts.items():
        name = f"appliance_{kind}"
        client.create_collection(
            name, vectors_config={"dense": qm.VectorParams(size=embedder.dimension, distance=qm.Distance.COSINE)},
            sparse_vectors_config={"lexical": qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
            metadata={"embedding_model": embedder.model_name})
        filler = [f"{kind} filler note number {i} about nothing in particular" for i in range(n_filler)]
        all_texts = [text] + filler
        vectors = embedder.embed([text]).vectors + [[0.0] * (embedder.dimension - 1) + [1.0]] * n_filler
        points = []
        for i, (t, v) in enumerate(zip(all_texts, vectors)):
            payload = {"kind": "conversation" if kind == "turns" else "document", "text": t,
                       "source": f"old/{i}", "chunk_index": 0, "created_at": 1_700_000_000.0 + i,
                       "conversation_id": f"old-{i % 5}", "message_id": 10_000 + i, "meta": {"n": i}}
            sparse = lexical.document(t)
            pid = point_id("old", kind, i)
            written[pid] = payload
            points.append(qm.PointStruct(id=pid, vector={"dense": v, "lexical": qm.SparseVector(
                indices=sparse.indices, values=sparse.values)}, payload=payload))
        client.upsert(name, points=points)
    client.close()
    return written


def test_an_old_local_mode_folder_is_migrated_once_with_nothing_lost(embedder, tmp_path: Path, caplog) -> None:
    settings = Settings(data_dir=tmp_path)
    old = tmp_path / "qdrant"
    written = old_local_folder(old, embedder)
    caplog.set_level(logging.INFO, logger="appliance.rag.migration")

    service = MemoryService(settings, embedder)
    try:
        progress = [r.getMessage() for r in caplog.records if r.name == "appliance.rag.migration"]
        assert any("points (" in line and "%" in line for line in progress), progress
        assert service.store.count("turns") + service.store.count("documents") == len(written)
        migrated = {**service.store.retrieve_payloads("turns", list(written)),
                    **service.store.retrieve_payloads("documents", list(written))}
        assert migrated == written, "every payload arrives unchanged"
        hit = service.search(SearchRequest(query="what is my bicycle called", k=1, kinds=["conversation"])).hits[0]
        assert "Rocinante" in hit.text
        hit = service.search(SearchRequest(query="where is the greenhouse key", k=1, kinds=["document"])).hits[0]
        assert "kitchen door" in hit.text
    finally:
        service.close()
    record = settings.data_dir / "memory-edge" / RECORD
    assert record.is_file() and f"rm -rf {old}" in record.read_text()
    assert (old / "collection").is_dir(), "the old folder is kept for the owner to remove"

    caplog.clear()
    service = MemoryService(settings, embedder)  # second start: nothing to do
    service.close()
    assert not [r for r in caplog.records if r.name == "appliance.rag.migration"]

    record.unlink()  # an interrupted run (no record) runs again and overwrites, never duplicates
    service = MemoryService(settings, embedder)
    try:
        assert service.store.count("turns") + service.store.count("documents") == len(written)
    finally:
        service.close()


# --- memory that does not drown -----------------------------------------------------

def fused(pid: str, score: float, **payload) -> Fused:
    return Fused(id=pid, score=score, payload={"kind": "conversation", **payload})


def test_recall_rules_on_a_ranking() -> None:
    now = 1_800_000_000.0
    config = RecallConfig(recency_weight=0.1, recency_half_life_days=30, duplicate_similarity=0.9,
                          per_conversation_cap=2)
    ranked = [
        fused("old", 1.00, conversation_id="a", created_at=now - 400 * DAY, text="the boat is called Marlin"),
        fused("new", 1.00, conversation_id="b", created_at=now - 1 * DAY, text="the boat is now called Petrel"),
        fused("a2", 0.90, conversation_id="a", created_at=now - 400 * DAY, text="we sailed to the island"),
        fused("a3", 0.85, conversation_id="a", created_at=now - 400 * DAY, text="the mast was repaired in May"),
        fused("dup", 0.80, conversation_id="c", created_at=now - 400 * DAY, text="We sailed to the island!"),
        fused("better-old", 1.50, conversation_id="d", created_at=now - 900 * DAY, text="mooring fee is 40 euro"),
    ]
    chosen = [f.id for f in select(ranked, 10, config, now=now)]
    assert chosen[0] == "better-old", "a clearly better old turn still wins"
    assert chosen.index("new") < chosen.index("old"), "a recent turn wins the tie"
    assert "dup" not in chosen, "a near-identical chunk is shown once"
    assert sum(1 for pid in chosen if pid in ("old", "a2", "a3")) == 2, "per-conversation cap"
    uncapped = [f.id for f in select(ranked, 10, RecallConfig(recency_weight=0.0, per_conversation_cap=0), now=now)]
    assert uncapped.index("old") < uncapped.index("new"), "without recency the tie keeps the fused order"
    assert sum(1 for pid in uncapped if pid in ("old", "a2", "a3")) == 3


def test_search_applies_recency_dedup_and_the_cap_to_real_turns(embedder, tmp_path: Path) -> None:
    service = MemoryService(Settings(data_dir=tmp_path), embedder)
    now = time.time()
    old = now - 500 * DAY
    turns = [TurnToIndex(message_id=i, conversation_id="long-old-trip", role="user", created_at=old + i,
                         content=f"In Lisbon we stayed at the hotel in Alfama, note {word}.")
             for i, word in enumerate(["one", "two", "three", "four", "five"], start=1)]
    turns += [
        TurnToIndex(message_id=20, conversation_id="old-twin", role="user", created_at=old,
                    content="The spare bike lock key is in the blue drawer."),
        TurnToIndex(message_id=21, conversation_id="new-twin", role="user", created_at=now,
                    content="The spare bike lock key is in the blue drawer."),
    ]
    try:
        service.index_turns(turns)
        hits = service.search(SearchRequest(query="Lisbon hotel Alfama", k=6, kinds=["conversation"])).hits
        assert sum(h.conversation_id == "long-old-trip" for h in hits) == 2
        hits = service.search(SearchRequest(query="where is the spare bike lock key", k=3,
                                            kinds=["conversation"])).hits
        assert hits[0].conversation_id == "new-twin", "the recent of two identical turns comes first"
        assert "old-twin" not in [h.conversation_id for h in hits], "its duplicate is not shown again"
    finally:
        service.close()


def test_a_server_collection_from_before_the_per_model_vector_name_still_serves(embedder, tmp_path: Path) -> None:
    """Upgrading the compose stack must not force a re-embedding of everything: a collection
    with the old `dense` vector built by the same model keeps working (qdrant-client local
    mode stands in for the server: same client API)."""
    path = tmp_path / "server-like"
    old_local_folder(path, embedder, n_filler=20)
    settings = Settings(data_dir=tmp_path)
    spec = EmbeddingSpec(model=embedder.model_name, dimension=embedder.dimension)
    store = QdrantServerStore(settings.memory, spec, client=QdrantClient(path=str(path)))
    try:
        assert store.vector_name("turns") == "dense"
        vector = embedder.embed(["what is my bicycle called"]).vectors[0]
        dense, _ = store.search("turns", vector, None, 1)
        assert "Rocinante" in dense[0].payload["text"]
        store.recreate("turns")
        assert store.vector_name("turns") == store.dense_name
    finally:
        store.close()
