"""Qdrant collections for conversation turns and document chunks.

One code path for both deployments: `memory.qdrant_url` set -> a Qdrant server;
unset -> qdrant-client local mode in a folder under the data directory. Local mode
allows one process per folder, so only the `rag` worker opens it (see
docs/memory.md); a second opener gets StoreUnavailable naming the fix.

Each collection has a named dense vector "dense" (size and distance of the
configured embedding model) and a named sparse vector "lexical" with Qdrant's IDF
modifier. The embedding model's identity is kept in the collection metadata; an
existing collection built for another model or size is a CollectionMismatch
telling the owner to run `appliance memory reindex`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from configs.schema import MemoryConfig
from rag.lexical import SparseVector

log = logging.getLogger("appliance.rag.store")

DENSE = "dense"
LEXICAL = "lexical"
CollectionKind = Literal["documents", "turns"]
COLLECTION_KINDS: tuple[CollectionKind, ...] = ("documents", "turns")

DISTANCES = {"cosine": qm.Distance.COSINE, "dot": qm.Distance.DOT, "euclid": qm.Distance.EUCLID}


class StoreError(Exception):
    """A memory store problem with an owner-facing message (what is wrong, what to do)."""

    code = "memory_store_error"
    status = 500


class StoreUnavailable(StoreError):
    code = "memory_unavailable"
    status = 503


class CollectionMismatch(StoreError):
    code = "memory_index_mismatch"
    status = 409


@dataclass(frozen=True)
class EmbeddingSpec:
    """What the dense vectors of a collection must look like."""

    model: str
    dimension: int
    distance: str = "cosine"


@dataclass
class StoredPoint:
    id: str
    score: float
    payload: dict[str, Any]


def qdrant_location(config: MemoryConfig, data_dir: Path) -> str:
    if config.qdrant_url:
        return config.qdrant_url
    return f"local:{config.qdrant_path or data_dir / 'qdrant'}"


def open_client(config: MemoryConfig, data_dir: Path) -> QdrantClient:
    if config.qdrant_url:
        key = config.qdrant_api_key.get_secret_value() if config.qdrant_api_key else None
        return QdrantClient(url=config.qdrant_url, api_key=key, timeout=30)
    path = Path(config.qdrant_path or data_dir / "qdrant")
    path.mkdir(parents=True, exist_ok=True)
    try:
        return QdrantClient(path=str(path))
    except RuntimeError as exc:  # portalocker: the folder is held by another process
        raise StoreUnavailable(
            f"the Qdrant folder {path} is in use by another process ({exc}). In local mode only the "
            f"rag worker opens it: search and ingest through the API (`appliance search`, "
            f"`appliance docs add`), or stop the stack (`appliance down`) before touching the folder."
        ) from None


def relax_local_durability(client: QdrantClient) -> None:
    """Local mode writes each point in its own SQLite transaction, fsynced: ~50 points/s
    on this machine. WAL with synchronous=NORMAL keeps the file consistent but skips the
    per-commit fsync (a power cut may lose the last writes; the index is rebuilt from the
    sources of truth by `appliance memory reindex`). Reaches into qdrant-client's local
    mode internals, so any surprise there leaves the defaults untouched."""
    local = getattr(client, "_client", None)
    for collection in getattr(local, "collections", {}).values():
        conn = getattr(getattr(collection, "storage", None), "storage", None)
        if conn is None:
            continue
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        except Exception as exc:  # sqlite3.Error or an unexpected object: keep the defaults
            log.warning("could not tune local-mode storage: %s", exc)


class MemoryStore:
    def __init__(self, config: MemoryConfig, data_dir: Path, spec: EmbeddingSpec,
                 client: QdrantClient | None = None) -> None:
        self.config = config
        self.spec = spec
        self.location = qdrant_location(config, data_dir)
        self.client = client or open_client(config, data_dir)
        self.ensure_collections()

    def name(self, kind: CollectionKind) -> str:
        return f"{self.config.collection_prefix}_{kind}"

    # --- collections ---------------------------------------------------------

    def _create(self, kind: CollectionKind) -> None:
        self.client.create_collection(
            self.name(kind),
            vectors_config={DENSE: qm.VectorParams(size=self.spec.dimension,
                                                   distance=DISTANCES[self.spec.distance])},
            sparse_vectors_config={LEXICAL: qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
            metadata={"embedding_model": self.spec.model},
        )
        log.info("created collection %s (%s, %d dims)", self.name(kind), self.spec.model, self.spec.dimension)

    def _check(self, kind: CollectionKind) -> None:
        info = self.client.get_collection(self.name(kind))
        vectors = info.config.params.vectors
        dense = vectors.get(DENSE) if isinstance(vectors, dict) else None
        model = (info.config.metadata or {}).get("embedding_model")
        problems = []
        if dense is None:
            problems.append("it has no dense vector named 'dense'")
        else:
            if dense.size != self.spec.dimension:
                problems.append(f"its vectors have {dense.size} dimensions, the model gives {self.spec.dimension}")
            if dense.distance != DISTANCES[self.spec.distance]:
                problems.append(f"its distance is {dense.distance}, the model uses {self.spec.distance}")
        if model and model != self.spec.model:
            problems.append(f"it was built with embedding model '{model}', now '{self.spec.model}' is configured")
        if problems:
            raise CollectionMismatch(
                f"the memory collection '{self.name(kind)}' does not fit the configured embedding model: "
                f"{'; '.join(problems)}. Fix: run `appliance memory reindex` to rebuild the index from the "
                f"conversation store and the document registry (or switch the model back).")

    def ensure_collections(self) -> None:
        for kind in COLLECTION_KINDS:
            if self.client.collection_exists(self.name(kind)):
                self._check(kind)
            else:
                self._create(kind)
        relax_local_durability(self.client)

    def recreate(self, kind: CollectionKind) -> None:
        if self.client.collection_exists(self.name(kind)):
            self.client.delete_collection(self.name(kind))
        self._create(kind)
        relax_local_durability(self.client)

    def count(self, kind: CollectionKind, where: dict[str, Any] | None = None) -> int:
        return self.client.count(self.name(kind), count_filter=match_filter(where), exact=True).count

    # --- points --------------------------------------------------------------

    def upsert(self, kind: CollectionKind, ids: list[str], dense: list[list[float]],
               lexical: list[SparseVector], payloads: list[dict[str, Any]]) -> None:
        points = []
        for pid, vec, sparse, payload in zip(ids, dense, lexical, payloads, strict=True):
            vectors: dict[str, Any] = {DENSE: vec}
            if sparse:
                vectors[LEXICAL] = qm.SparseVector(indices=sparse.indices, values=sparse.values)
            points.append(qm.PointStruct(id=pid, vector=vectors, payload=payload))
        for start in range(0, len(points), 256):
            self.client.upsert(self.name(kind), points=points[start:start + 256], wait=True)

    def delete(self, kind: CollectionKind, where: dict[str, Any], unless: dict[str, Any] | None = None) -> None:
        """Delete points whose payload matches `where` (value or list of values), except `unless`."""
        flt = match_filter(where) or qm.Filter()
        if unless:
            flt.must_not = match_filter(unless).must  # type: ignore[union-attr]
        self.client.delete(self.name(kind), points_selector=qm.FilterSelector(filter=flt), wait=True)

    def set_payload(self, kind: CollectionKind, where: dict[str, Any], values: dict[str, Any]) -> None:
        self.client.set_payload(self.name(kind), payload=values, points=qm.FilterSelector(filter=match_filter(where)),
                                wait=True)

    def dense_search(self, kind: CollectionKind, vector: list[float], limit: int,
                     exclude: dict[str, Any] | None = None,
                     where: dict[str, Any] | None = None) -> list[StoredPoint]:
        """`where`: only points whose payload matches (value or any of a list; a list
        payload field matches when it shares a value), inside the query, before the limit."""
        return self._query(kind, vector, DENSE, limit, exclude, where)

    def lexical_search(self, kind: CollectionKind, vector: SparseVector, limit: int,
                       exclude: dict[str, Any] | None = None,
                       where: dict[str, Any] | None = None) -> list[StoredPoint]:
        if not vector:
            return []
        return self._query(kind, qm.SparseVector(indices=vector.indices, values=vector.values), LEXICAL,
                           limit, exclude, where)

    def _query(self, kind: CollectionKind, query: Any, using: str, limit: int,
               exclude: dict[str, Any] | None, where: dict[str, Any] | None = None) -> list[StoredPoint]:
        flt = match_filter(where)
        if exclude:
            flt = flt or qm.Filter()
            flt.must_not = match_filter(exclude).must  # type: ignore[union-attr]
        response = self.client.query_points(self.name(kind), query=query, using=using, limit=limit,
                                            query_filter=flt, with_payload=True)
        return [StoredPoint(id=str(p.id), score=float(p.score), payload=p.payload or {}) for p in response.points]

    def scroll_payloads(self, kind: CollectionKind, where: dict[str, Any] | None = None) -> Iterable[dict[str, Any]]:
        offset = None
        while True:
            points, offset = self.client.scroll(self.name(kind), scroll_filter=match_filter(where), limit=512,
                                                offset=offset, with_payload=True, with_vectors=False)
            for p in points:
                yield p.payload or {}
            if offset is None:
                return

    def close(self) -> None:
        self.client.close()


def match_filter(where: dict[str, Any] | None) -> qm.Filter | None:
    if not where:
        return None
    conditions: list[Any] = []
    for key, value in where.items():
        if isinstance(value, (list, tuple, set)):
            conditions.append(qm.FieldCondition(key=key, match=qm.MatchAny(any=list(value))))
        else:
            conditions.append(qm.FieldCondition(key=key, match=qm.MatchValue(value=value)))
    return qm.Filter(must=conditions)
