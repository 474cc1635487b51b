"""The memory's index in-process with Qdrant Edge (pip qdrant-edge-py), the embedded default.

One Edge shard per collection: `<edge_path>/<prefix>_<kind>/`, with a sidecar
`<prefix>_<kind>.json` beside it recording the embedding model, dimension and
distance. The sidecar is read before the shard is opened, so a shard built for
another model is refused (CollectionMismatch -> `appliance memory reindex`) without
touching it, even while another process holds it.

Indexing: new points land in an appendable segment that is searched by brute force;
Edge's optimizers turn them into HNSW + sparse-index segments only when asked, and
`EdgeShard.optimize()` holds the shard and Python's GIL until done. So after
`memory.edge_index_after` points written since the last build (and on open when that
many are unindexed) the build runs in a child process on a copy of the shard while
this one keeps answering (rag/edge_build.py); the built copy is swapped in at the next
call. An explicit `optimize()` (after a bulk load: migration, reindex) runs the same child
build and waits for it.

Durability: Edge writes a WAL, so an acknowledged write survives a crash; `close()`
flushes the segments.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Iterable

from qdrant_edge import (
    CountRequest,
    Distance,
    EdgeConfig,
    EdgeOptimizersConfig,
    EdgeShard,
    EdgeSparseVectorParams,
    EdgeVectorParams,
    FieldCondition,
    Filter,
    Memory,
    MatchAny,
    MatchValue,
    Modifier,
    PayloadSchemaType,
    Point,
    QuantizationSearchParams,
    Query,
    QueryBatchRequest,
    QueryRequest,
    ScalarQuantizationConfig,
    ScalarType,
    ScrollRequest,
    SearchParams,
    UpdateOperation,
)
from qdrant_edge import SparseVector as EdgeSparse

from configs.schema import MemoryConfig
from rag.edge_build import BackgroundBuild, recover
from rag.lexical import SparseVector
from rag.store import (
    COLLECTION_KINDS,
    LEXICAL,
    PAYLOAD_INDEXES,
    CollectionKind,
    EmbeddingSpec,
    MemoryStore,
    PointRecord,
    StoredPoint,
    StoreError,
    StoreUnavailable,
    Where,
    filter_items,
    mismatch_error,
)

log = logging.getLogger("appliance.rag.store")

DISTANCES = {"cosine": Distance.Cosine, "dot": Distance.Dot, "euclid": Distance.Euclid}
INDEX_TYPES = {"keyword": PayloadSchemaType.Keyword, "integer": PayloadSchemaType.Integer,
               "float": PayloadSchemaType.Float}
BATCH = 512
# With int8 copies the HNSW walk uses them; the float originals then rescore twice the
# asked number of candidates. Without rescoring, 100k points' top 10 lost 5% against an
# exact search; with it none, at the same CPU as float (docs/memory.md).
DENSE_PARAMS = SearchParams(quantization=QuantizationSearchParams(rescore=True, oversampling=2.0))
BUILD_RETRY_S = 600.0   # after a failed background build, wait before trying again


def conditions(where: Where | None) -> list[FieldCondition]:
    return [FieldCondition(key, match=MatchAny(value) if many else MatchValue(value))
            for key, value, many in filter_items(where)]


def to_filter(where: Where | None, exclude: Where | None = None) -> Filter | None:
    must, must_not = conditions(where), conditions(exclude)
    if not must and not must_not:
        return None
    return Filter(must=must or None, must_not=must_not or None)


def edge_sparse(vector: SparseVector) -> EdgeSparse:
    return EdgeSparse(list(vector.indices), list(vector.values))


class EdgeStore(MemoryStore):
    engine = "edge"

    def __init__(self, config: MemoryConfig, root: Path, spec: EmbeddingSpec) -> None:
        self.config = config
        self.spec = spec
        self.root = root
        self.location = f"edge:{root}"
        root.mkdir(parents=True, exist_ok=True)
        for kind in COLLECTION_KINDS:
            self._check_sidecar(kind)
            recover(root, self.name(kind))
        self.shards: dict[str, EdgeShard] = {}
        self._unindexed: dict[str, int] = {}
        self._builds: dict[str, BackgroundBuild] = {}
        self._build_retry_at: dict[str, float] = {}
        try:
            for kind in COLLECTION_KINDS:
                self.shards[kind] = self._open(kind)
        except Exception:
            self.close()
            raise
        for kind in COLLECTION_KINDS:
            self._unindexed[kind] = self._pending_points(kind)
            self._maybe_optimize(kind)

    # --- shards --------------------------------------------------------------

    def shard_dir(self, kind: CollectionKind) -> Path:
        return self.root / self.name(kind)

    def sidecar(self, kind: CollectionKind) -> Path:
        return self.root / f"{self.name(kind)}.json"

    def _check_sidecar(self, kind: CollectionKind) -> None:
        path = self.sidecar(kind)
        if not path.is_file():
            return
        meta = json.loads(path.read_text())
        problems = []
        if meta.get("embedding_model") != self.spec.model:
            problems.append(f"it was built with embedding model '{meta.get('embedding_model')}', "
                            f"now '{self.spec.model}' is configured")
        if meta.get("dimension") != self.spec.dimension:
            problems.append(f"its vectors have {meta.get('dimension')} dimensions, the model gives "
                            f"{self.spec.dimension}")
        if meta.get("distance") != self.spec.distance:
            problems.append(f"its distance is {meta.get('distance')}, the model uses {self.spec.distance}")
        if problems:
            raise mismatch_error(self.name(kind), problems)

    def _edge_config(self) -> EdgeConfig:
        return EdgeConfig(
            vectors={self.dense_name: EdgeVectorParams(size=self.spec.dimension,
                                                       distance=DISTANCES[self.spec.distance])},
            # int8 copies in RAM for the HNSW build and search, the float originals rescore
            # the candidates: measured at 100k points the build ran in well under half the
            # time, search no slower (docs/memory.md). Fixed when a shard is created.
            quantization_config=(ScalarQuantizationConfig(type=ScalarType.Int8, quantile=0.99,
                                                          memory=Memory.Pinned)
                                 if self.config.edge_quantization == "int8" else None),
            sparse_vectors={LEXICAL: EdgeSparseVectorParams(modifier=Modifier.Idf)},
            # Few, large segments: each search visits every segment.
            optimizers=EdgeOptimizersConfig(default_segment_number=2),
        )

    def _open(self, kind: CollectionKind) -> EdgeShard:
        path = self.shard_dir(kind)
        try:
            if (path / "edge_config.json").is_file():
                shard = EdgeShard.load(str(path))
            else:
                shard = self._create(kind)
        except Exception as exc:  # the Rust side reports a held lock as a runtime error
            if "WouldBlock" in str(exc) or "lock" in str(exc).lower():
                raise StoreUnavailable(
                    f"the memory index {path} is in use by another process. Only the rag worker opens it: "
                    f"search and ingest through the API (`appliance search`, `appliance docs add`), or stop "
                    f"the stack (`appliance down`) before touching the folder.") from None
            raise StoreUnavailable(f"cannot open the memory index {path}: {exc}. If it is damaged, move it "
                                   f"aside and run `appliance memory reindex`.") from None
        return shard

    def _create(self, kind: CollectionKind) -> EdgeShard:
        path = self.shard_dir(kind)
        if path.exists():
            shutil.rmtree(path)  # an incomplete create (no edge_config.json) holds nothing
        shard = EdgeShard.create(str(path), self._edge_config())
        for field, index in PAYLOAD_INDEXES.items():
            shard.update(UpdateOperation.create_field_index(field, INDEX_TYPES[index]))
        self.sidecar(kind).write_text(json.dumps({
            "embedding_model": self.spec.model, "dimension": self.spec.dimension,
            "distance": self.spec.distance, "dense_vector": self.dense_name, "sparse_vector": LEXICAL,
            "created_at": time.time()}, indent=2))
        log.info("created Edge shard %s (%s, %d dims)", path, self.spec.model, self.spec.dimension)
        return shard

    def _pending_points(self, kind: CollectionKind) -> int:
        # indexed_vectors_count counts dense and sparse vectors, and the appendable
        # segment's sparse vectors are already indexed: of a point's two vectors only the
        # dense one waits for a build (measured on 0.9). Points without a lexical vector
        # make this an over-estimate, which costs at most one early build.
        info = self.shards[kind].info()
        return max(2 * info.points_count - info.indexed_vectors_count, 0)

    def recreate(self, kind: CollectionKind) -> None:
        self._cancel_build(kind)
        self.drop(kind)
        self.shards[kind] = self._create(kind)
        self._unindexed[kind] = 0

    def drop(self, kind: CollectionKind) -> None:
        self._cancel_build(kind)
        shard = self.shards.pop(kind, None)
        if shard is not None:
            shard.close()
        shutil.rmtree(self.shard_dir(kind), ignore_errors=True)
        self.sidecar(kind).unlink(missing_ok=True)

    def _shard(self, kind: CollectionKind) -> EdgeShard:
        build = self._builds.get(kind)
        if build is not None and not build.running():
            self._finish_build(kind, build)
        shard = self.shards.get(kind)
        if shard is None:  # dropped (a lost index): start empty, `reindex` refills it
            shard = self.shards[kind] = self._create(kind)
        return shard

    def count(self, kind: CollectionKind, where: Where | None = None) -> int:
        return self._shard(kind).count(CountRequest(exact=True, filter=to_filter(where)))

    # --- points --------------------------------------------------------------

    def upsert(self, kind: CollectionKind, ids: list[str], dense: list[list[float]],
               lexical: list[SparseVector], payloads: list[dict[str, Any]]) -> None:
        records = [PointRecord(id=pid, dense={self.dense_name: vec}, sparse={LEXICAL: lex} if lex else {},
                               payload=payload)
                   for pid, vec, lex, payload in zip(ids, dense, lexical, payloads, strict=True)]
        self.upsert_records(kind, records)

    def upsert_records(self, kind: CollectionKind, records: list[PointRecord], optimize: bool = True) -> None:
        shard = self._shard(kind)
        for start in range(0, len(records), BATCH):
            points = [Point(r.id, {**r.dense, **{k: edge_sparse(v) for k, v in r.sparse.items()}}, r.payload)
                      for r in records[start:start + BATCH]]
            self._update(kind, shard, UpdateOperation.upsert_points(points))
        self._unindexed[kind] = self._unindexed.get(kind, 0) + len(records)
        if optimize:
            self._maybe_optimize(kind)

    def _update(self, kind: CollectionKind, shard: EdgeShard, operation: UpdateOperation) -> None:
        shard.update(operation)
        build = self._builds.get(kind)
        if build is not None:
            build.journal.append(operation)  # replayed on the built copy when it is swapped in

    # --- index builds --------------------------------------------------------

    def building(self, kind: CollectionKind) -> bool:
        """True while a background index build of `kind` runs (its result not yet swapped in)."""
        return kind in self._builds

    def _maybe_optimize(self, kind: CollectionKind) -> None:
        if (self._unindexed.get(kind, 0) >= self.config.edge_index_after and kind not in self._builds
                and time.monotonic() >= self._build_retry_at.get(kind, 0.0)):
            self._start_build(kind)

    def _start_build(self, kind: CollectionKind) -> None:
        shard = self._shard(kind)
        build = BackgroundBuild(self.root, self.name(kind))
        build.points = self._unindexed.get(kind, 0)
        build.start(flush=shard.flush)
        self._builds[kind] = build
        self._unindexed[kind] = 0

    def _finish_build(self, kind: CollectionKind, build: BackgroundBuild) -> None:
        del self._builds[kind]
        if not build.succeeded():
            log.warning("background index build of %s failed (%s); its points stay searchable by brute "
                        "force, next try in %.0f s", self.name(kind), build.failure(), BUILD_RETRY_S)
            build.cancel()
            self._unindexed[kind] = self._unindexed.get(kind, 0) + build.points
            self._build_retry_at[kind] = time.monotonic() + BUILD_RETRY_S
            return

        def close_live() -> None:
            live = self.shards.pop(kind)
            live.flush()
            live.close()

        def replay(shard: EdgeShard, operations: list) -> None:
            for operation in operations:
                shard.update(operation)

        self.shards[kind] = build.swap(close_live, lambda path: EdgeShard.load(str(path)), replay)

    def _cancel_build(self, kind: CollectionKind) -> None:
        build = self._builds.pop(kind, None)
        if build is not None:
            build.cancel()
            self._unindexed[kind] = self._unindexed.get(kind, 0) + build.points

    def wait_for_builds(self, timeout_s: float) -> bool:
        """Wait (polling) until background builds finished and swap them in; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while any(b.running() for b in self._builds.values()):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        for kind in list(self._builds):
            self._shard(kind)
        return True

    def optimize_kind(self, kind: CollectionKind) -> None:
        """Build now and wait (bulk loads): replaces a background build of the same shard.

        The build runs in the child process like the background ones, not in-process:
        an in-process optimize holds the GIL for minutes, so the rag worker's heartbeat
        thread could not beat and the core would take a reindex for a lost worker."""
        self._cancel_build(kind)
        started = time.perf_counter()
        self._start_build(kind)
        build = self._builds[kind]
        while build.running():
            time.sleep(0.2)
        built = build.succeeded()
        self._finish_build(kind, build)
        if not built:
            raise StoreError(f"building the index of {self.name(kind)} failed ({build.failure()[-500:]}). "
                             f"Its points stay searchable, more slowly; the next write tries again. Fix: "
                             f"free memory or disk, then run `appliance memory reindex`.")
        log.info("indexed %s in %.1f s", self.name(kind), time.perf_counter() - started)

    def optimize(self, wait: bool = True) -> None:
        for kind in COLLECTION_KINDS:
            self.optimize_kind(kind)

    def delete(self, kind: CollectionKind, where: Where, unless: Where | None = None) -> None:
        flt = to_filter(where, unless) or Filter()
        self._update(kind, self._shard(kind), UpdateOperation.delete_points_by_filter(flt))

    def set_payload(self, kind: CollectionKind, where: Where, values: dict[str, Any]) -> None:
        self._update(kind, self._shard(kind),
                     UpdateOperation.set_payload_by_filter(to_filter(where) or Filter(), values))

    def search(self, kind: CollectionKind, dense: list[float] | None, lexical: SparseVector | None,
               limit: int, where: Where | None = None,
               exclude: Where | None = None) -> tuple[list[StoredPoint], list[StoredPoint]]:
        flt = to_filter(where, exclude)
        sides = [(Query.Nearest(dense, using=self.dense_name) if dense is not None else None),
                 (Query.Nearest(edge_sparse(lexical), using=LEXICAL) if lexical else None)]
        requests = [QueryRequest(limit=limit, query=q, filter=flt, with_payload=True,
                                 params=DENSE_PARAMS if q is sides[0] else None)
                    for q in sides if q is not None]
        # Both sides in one planned batch: one pass over the segments.
        answers = iter(self._shard(kind).query_batch(QueryBatchRequest(requests)) if requests else [])
        out = []
        for query in sides:
            points = next(answers) if query is not None else []
            out.append([StoredPoint(id=str(p.id), score=float(p.score), payload=p.payload or {}) for p in points])
        return out[0], out[1]

    def scroll_payloads(self, kind: CollectionKind, where: Where | None = None) -> Iterable[dict[str, Any]]:
        offset = None
        shard = self._shard(kind)
        while True:
            records, offset = shard.scroll(ScrollRequest(offset=offset, limit=BATCH, filter=to_filter(where),
                                                         with_payload=True, with_vector=False))
            for record in records:
                yield record.payload or {}
            if offset is None:
                return

    def retrieve_payloads(self, kind: CollectionKind, ids: list[str]) -> dict[str, dict[str, Any]]:
        records = self._shard(kind).retrieve(list(ids), with_payload=True, with_vector=False)
        return {str(r.id): r.payload or {} for r in records}

    def flush(self) -> None:
        for shard in self.shards.values():
            shard.flush()

    def close(self) -> None:
        for kind in list(self._builds):  # an unfinished build is lost; its points stay pending
            self._cancel_build(kind)
        for shard in self.shards.values():
            try:
                shard.flush()
            finally:
                shard.close()
        self.shards = {}
