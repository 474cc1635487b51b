"""The memory's index on a Qdrant server through qdrant-client (the compose stack).

Same collection model as the Edge engine (rag/store.py). The embedding model's
identity is kept in the collection metadata; a collection built for another model
or size is a CollectionMismatch telling the owner to run `appliance memory reindex`.
qdrant-client's local mode (`QdrantClient(path=...)`) speaks the same API, so tests
and the migration of old local-mode folders reach this class with such a client.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from configs.schema import MemoryConfig
from rag.lexical import SparseVector
from rag.store import (
    COLLECTION_KINDS,
    LEGACY_DENSE,
    LEXICAL,
    PAYLOAD_INDEXES,
    CollectionKind,
    EmbeddingSpec,
    MemoryStore,
    PointRecord,
    StoredPoint,
    StoreUnavailable,
    Where,
    filter_items,
    mismatch_error,
)

log = logging.getLogger("appliance.rag.store")

DISTANCES = {"cosine": qm.Distance.COSINE, "dot": qm.Distance.DOT, "euclid": qm.Distance.EUCLID}
INDEX_TYPES = {"keyword": qm.PayloadSchemaType.KEYWORD, "integer": qm.PayloadSchemaType.INTEGER,
               "float": qm.PayloadSchemaType.FLOAT}


def conditions(where: Where | None) -> list[qm.FieldCondition]:
    return [qm.FieldCondition(key=key, match=qm.MatchAny(any=value) if many else qm.MatchValue(value=value))
            for key, value, many in filter_items(where)]


def to_filter(where: Where | None, exclude: Where | None = None) -> qm.Filter | None:
    must, must_not = conditions(where), conditions(exclude)
    if not must and not must_not:
        return None
    return qm.Filter(must=must or None, must_not=must_not or None)


def sparse(vector: SparseVector) -> qm.SparseVector:
    return qm.SparseVector(indices=list(vector.indices), values=list(vector.values))


class QdrantServerStore(MemoryStore):
    engine = "qdrant"

    def __init__(self, config: MemoryConfig, spec: EmbeddingSpec, client: QdrantClient | None = None) -> None:
        self.config = config
        self.spec = spec
        self.location = config.qdrant_url or "qdrant-client"
        self.client = client or self._connect(config)
        # Collections made before one vector name per model keep their `dense` vector.
        self.vector_names: dict[str, str] = {}
        for kind in COLLECTION_KINDS:
            if self.client.collection_exists(self.name(kind)):
                self._check(kind)
            else:
                self._create(kind)

    @staticmethod
    def _connect(config: MemoryConfig) -> QdrantClient:
        if not config.qdrant_url:
            raise StoreUnavailable("memory.engine is 'qdrant' but memory.qdrant_url is not set. Fix: set "
                                   "memory.qdrant_url (APPLIANCE_MEMORY__QDRANT_URL) or use engine 'edge'.")
        key = config.qdrant_api_key.get_secret_value() if config.qdrant_api_key else None
        return QdrantClient(url=config.qdrant_url, api_key=key, timeout=30)

    # --- collections ---------------------------------------------------------

    def _create(self, kind: CollectionKind) -> None:
        name = self.name(kind)
        self.client.create_collection(
            name,
            vectors_config={self.dense_name: qm.VectorParams(size=self.spec.dimension,
                                                             distance=DISTANCES[self.spec.distance])},
            sparse_vectors_config={LEXICAL: qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
            metadata={"embedding_model": self.spec.model},
        )
        for field, kind_of_index in PAYLOAD_INDEXES.items():
            self.client.create_payload_index(name, field, INDEX_TYPES[kind_of_index], wait=True)
        log.info("created collection %s (%s, %d dims)", name, self.spec.model, self.spec.dimension)

    def _check(self, kind: CollectionKind) -> None:
        info = self.client.get_collection(self.name(kind))
        vectors = info.config.params.vectors
        dense = vectors.get(self.dense_name) if isinstance(vectors, dict) else None
        model = (info.config.metadata or {}).get("embedding_model")
        if dense is None and isinstance(vectors, dict) and LEGACY_DENSE in vectors and model == self.spec.model:
            dense = vectors[LEGACY_DENSE]   # same model, older name: no reindex needed
            self.vector_names[kind] = LEGACY_DENSE
        problems = []
        if dense is None:
            names = sorted(vectors) if isinstance(vectors, dict) else []
            problems.append(f"it has no dense vector '{self.dense_name}' (it has {names or 'none'})")
        else:
            if dense.size != self.spec.dimension:
                problems.append(f"its vectors have {dense.size} dimensions, the model gives {self.spec.dimension}")
            if dense.distance != DISTANCES[self.spec.distance]:
                problems.append(f"its distance is {dense.distance}, the model uses {self.spec.distance}")
        if model and model != self.spec.model:
            problems.append(f"it was built with embedding model '{model}', now '{self.spec.model}' is configured")
        if problems:
            raise mismatch_error(self.name(kind), problems)

    def vector_name(self, kind: CollectionKind) -> str:
        return self.vector_names.get(kind, self.dense_name)

    def recreate(self, kind: CollectionKind) -> None:
        self.drop(kind)
        self.vector_names.pop(kind, None)
        self._create(kind)

    def drop(self, kind: CollectionKind) -> None:
        if self.client.collection_exists(self.name(kind)):
            self.client.delete_collection(self.name(kind))

    def count(self, kind: CollectionKind, where: Where | None = None) -> int:
        return self.client.count(self.name(kind), count_filter=to_filter(where), exact=True).count

    # --- points --------------------------------------------------------------

    def upsert(self, kind: CollectionKind, ids: list[str], dense: list[list[float]],
               lexical: list[SparseVector], payloads: list[dict[str, Any]]) -> None:
        records = [PointRecord(id=pid, dense={self.vector_name(kind): vec}, sparse={LEXICAL: lex} if lex else {},
                               payload=payload)
                   for pid, vec, lex, payload in zip(ids, dense, lexical, payloads, strict=True)]
        self.upsert_records(kind, records)

    def upsert_records(self, kind: CollectionKind, records: list[PointRecord], optimize: bool = True) -> None:
        points = [qm.PointStruct(id=r.id, vector={**r.dense, **{k: sparse(v) for k, v in r.sparse.items()}},
                                 payload=r.payload) for r in records]
        for start in range(0, len(points), 256):
            self.client.upsert(self.name(kind), points=points[start:start + 256], wait=True)

    def delete(self, kind: CollectionKind, where: Where, unless: Where | None = None) -> None:
        flt = to_filter(where, unless) or qm.Filter()
        self.client.delete(self.name(kind), points_selector=qm.FilterSelector(filter=flt), wait=True)

    def set_payload(self, kind: CollectionKind, where: Where, values: dict[str, Any]) -> None:
        self.client.set_payload(self.name(kind), payload=values, points=qm.FilterSelector(filter=to_filter(where)),
                                wait=True)

    def search(self, kind: CollectionKind, dense: list[float] | None, lexical: SparseVector | None,
               limit: int, where: Where | None = None,
               exclude: Where | None = None) -> tuple[list[StoredPoint], list[StoredPoint]]:
        flt = to_filter(where, exclude)
        out: list[list[StoredPoint]] = []
        for query, using in ((dense, self.vector_name(kind)), (sparse(lexical) if lexical else None, LEXICAL)):
            if query is None:
                out.append([])
                continue
            response = self.client.query_points(self.name(kind), query=query, using=using, limit=limit,
                                                query_filter=flt, with_payload=True)
            out.append([StoredPoint(id=str(p.id), score=float(p.score), payload=p.payload or {})
                        for p in response.points])
        return out[0], out[1]

    def scroll_payloads(self, kind: CollectionKind, where: Where | None = None) -> Iterable[dict[str, Any]]:
        for record in self.scroll_records(kind, where, with_vectors=False):
            yield record.payload

    def scroll_records(self, kind: CollectionKind, where: Where | None = None, with_vectors: bool = True,
                       batch: int = 512) -> Iterable[PointRecord]:
        offset = None
        while True:
            points, offset = self.client.scroll(self.name(kind), scroll_filter=to_filter(where), limit=batch,
                                                offset=offset, with_payload=True, with_vectors=with_vectors)
            for p in points:
                yield record_of(p)
            if offset is None:
                return

    def retrieve_payloads(self, kind: CollectionKind, ids: list[str]) -> dict[str, dict[str, Any]]:
        points = self.client.retrieve(self.name(kind), ids=ids, with_payload=True)
        return {str(p.id): p.payload or {} for p in points}

    def close(self) -> None:
        self.client.close()


def record_of(point: Any) -> PointRecord:
    dense: dict[str, list[float]] = {}
    sparse_vectors: dict[str, SparseVector] = {}
    vectors = point.vector if isinstance(point.vector, dict) else ({} if point.vector is None else {"": point.vector})
    for name, value in vectors.items():
        if isinstance(value, qm.SparseVector):
            sparse_vectors[name] = SparseVector(indices=list(value.indices), values=list(value.values))
        else:
            dense[name] = list(value)
    return PointRecord(id=str(point.id), dense=dense, sparse=sparse_vectors, payload=point.payload or {})
