"""The Edge index build runs beside the rag worker, not inside it: while a shard past
`memory.edge_index_after` is being indexed (a child process on a copy of the shard),
searches answer correctly, writes go on, and the built copy is swapped in with the
writes made meanwhile. An interrupted swap comes back as the shard was before.

Real components: Qdrant Edge shards and the real child process; vectors are random
(seeded) because what is tested is the build's plumbing, not meaning.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from configs.schema import MemoryConfig
from rag.edge_build import BUILD_DIR
from rag.lexical import SparseVector
from rag.store import LEXICAL, EmbeddingSpec, PointRecord
from rag.store_edge import EdgeStore

DIM = 384
POINTS = 8000   # 384-dim float vectors: above Edge's default indexing threshold (10 MB), so HNSW is built
SPEC = EmbeddingSpec(model="minilm", dimension=DIM, distance="cosine")


def unit_vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype("float32")
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def record(i: int, vector: np.ndarray) -> PointRecord:
    # term 1_000_000 + i is unique to point i: a lexical query for it must find exactly i
    lexical = SparseVector(indices=[7, 1_000_000 + i], values=[1.0, 1.0])
    return PointRecord(id=f"00000000-0000-0000-0000-{i:012d}", dense={"dense-minilm": vector.tolist()},
                       sparse={LEXICAL: lexical}, payload={"kind": "document", "source": f"s/{i}.md", "n": i})


def pid(i: int) -> str:
    return f"00000000-0000-0000-0000-{i:012d}"


def open_store(root: Path, threshold: int) -> EdgeStore:
    config = MemoryConfig(edge_index_after=threshold)
    store = EdgeStore(config, root, SPEC)
    assert store.dense_name == "dense-minilm"
    return store


def finds(store: EdgeStore, i: int, vector: np.ndarray) -> bool:
    dense, lexical = store.search("documents", vector.tolist(), SparseVector(indices=[1_000_000 + i], values=[1.0]), 5)
    return bool(dense) and dense[0].id == pid(i) and [p.id for p in lexical] == [pid(i)]


def test_searches_answer_while_the_index_builds_and_writes_made_meanwhile_survive_the_swap(tmp_path: Path) -> None:
    vectors = unit_vectors(POINTS + 1, seed=1)
    store = open_store(tmp_path, threshold=POINTS // 2)
    try:
        store.upsert_records("documents", [record(i, vectors[i]) for i in range(POINTS)])
        assert store.building("documents"), "crossing edge_index_after starts a background build"
        build = store._builds["documents"]
        # writes go on during the build: one new point, one deleted
        store.upsert_records("documents", [record(POINTS, vectors[POINTS])])
        store.delete("documents", {"source": "s/5.md"})
        assert build.running() and store.building("documents")
        assert finds(store, POINTS, vectors[POINTS])

        answered_during_build, probe = 0, 0
        while build.running() and answered_during_build < 40:
            i = (probe * 997) % POINTS
            probe += 1
            if i == 5:
                continue
            assert finds(store, i, vectors[i]), f"point {i} not found while the index builds"
            if build.running():  # the child was still building after the search returned
                answered_during_build += 1
        assert answered_during_build >= 3, "searches must answer while the build runs"

        assert store.wait_for_builds(timeout_s=600), "the background build did not finish in 10 minutes"
        assert not store.building("documents")
        info = store.shards["documents"].info()
        # the build indexed the dense vectors of the points present when it started
        assert info.indexed_vectors_count >= 2 * (POINTS - 1), info.indexed_vectors_count
        assert store.count("documents") == POINTS  # POINTS + 1 written, 1 deleted during the build
        assert finds(store, POINTS, vectors[POINTS]), "a point written during the build is lost"
        assert store.count("documents", {"source": "s/5.md"}) == 0, "a delete made during the build is lost"
        assert finds(store, 1234, vectors[1234])
    finally:
        store.close()

    reopened = open_store(tmp_path, threshold=POINTS // 2)
    try:
        assert not reopened.building("documents"), "nothing left to build after the swap"
        assert reopened.count("documents") == POINTS and finds(reopened, POINTS, vectors[POINTS])
        assert not (tmp_path / BUILD_DIR / reopened.name("documents")).exists()
    finally:
        reopened.close()


def test_an_interrupted_swap_keeps_the_shard_as_it_was(tmp_path: Path) -> None:
    vectors = unit_vectors(50, seed=2)
    store = open_store(tmp_path, threshold=10_000)
    name = store.name("documents")
    try:
        store.upsert_records("documents", [record(i, vectors[i]) for i in range(50)])
    finally:
        store.close()
    # A crash after the live shard was moved aside and a (here: empty) built copy moved in.
    live, old = tmp_path / name, tmp_path / BUILD_DIR / f"{name}.old"
    old.parent.mkdir()
    live.rename(old)
    live.mkdir()
    (live / "half-written").write_text("x")
    reopened = open_store(tmp_path, threshold=10_000)
    try:
        assert reopened.count("documents") == 50 and finds(reopened, 7, vectors[7])
        assert not old.exists()
    finally:
        reopened.close()


def test_closing_during_a_build_leaves_the_points_pending_and_searchable(tmp_path: Path) -> None:
    kind = "documents"
    vectors = unit_vectors(3000, seed=3)
    store = open_store(tmp_path, threshold=1000)
    try:
        store.upsert_records(kind, [record(i, vectors[i]) for i in range(3000)])
        assert store.building(kind)
    finally:
        store.close()  # the worker stops mid-build: the child is stopped, its copy removed
    assert not (tmp_path / BUILD_DIR / store.name(kind)).exists()
    reopened = open_store(tmp_path, threshold=1000)
    try:
        assert reopened.building(kind), "still unindexed on open: the build starts again"
        assert finds(reopened, 42, vectors[42])
        assert reopened.wait_for_builds(timeout_s=600)
        assert reopened.count(kind) == 3000 and finds(reopened, 42, vectors[42])
    finally:
        reopened.close()
