"""The memory's index: one interface, two engines, one collection model.

Engines (chosen by `memory.engine`, see `rag/engines.py` open_store):
- "edge": Qdrant Edge (pip qdrant-edge-py), Qdrant's own segment engine in this
  process: HNSW, sparse inverted index, payload indexes. The embedded default; one
  shard folder per collection under `memory.edge_path` (rag/store_edge.py).
- "qdrant": a Qdrant server through qdrant-client (`memory.qdrant_url`, the compose
  stack; rag/store_qdrant.py).
"auto" picks "qdrant" when a server URL is configured, else "edge".

The collection model is the same for both, so switching is configuration:
- `<prefix>_documents` and `<prefix>_turns`;
- one named dense vector per embedding model, `dense-<model>` (size and distance of
  that model), so a collection built for another model is detected by name and size;
- one named sparse vector `lexical` with Qdrant's IDF modifier;
- payload indexes (PAYLOAD_INDEXES) on the fields search filters use: kind, source,
  conversation_id, namespace, tags, content_hash (keyword), message_id (integer),
  created_at (float).

Filters are plain dicts, `{field: value}` or `{field: [values]}` (match any of the
values; for an array field like `tags`, any element), ANDed over fields. `where`
keeps matching points, `exclude` drops them. Both engines translate the same dict,
so a scope (owner namespace, conversation, tags) is one `where` for either.

Only one process opens an Edge shard (it takes a file lock): the rag worker. A second
opener gets StoreUnavailable naming the fix.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

from configs.schema import MemoryConfig
from rag.lexical import SparseVector

CollectionKind = Literal["documents", "turns"]
COLLECTION_KINDS: tuple[CollectionKind, ...] = ("documents", "turns")
LEXICAL = "lexical"
LEGACY_DENSE = "dense"   # the dense vector name before one name per model (migration reads it)

# Field -> index type. Keyword fields take `match any`; the others serve ranges/ordering.
PAYLOAD_INDEXES: dict[str, Literal["keyword", "integer", "float"]] = {
    "kind": "keyword",
    "source": "keyword",
    "conversation_id": "keyword",
    "namespace": "keyword",
    "tags": "keyword",
    "content_hash": "keyword",
    "message_id": "integer",
    "created_at": "float",
}

Where = Mapping[str, Any]


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

    @property
    def vector_name(self) -> str:
        return dense_vector_name(self.model)


def dense_vector_name(model: str) -> str:
    return "dense-" + re.sub(r"[^A-Za-z0-9_.-]", "_", model)


@dataclass
class StoredPoint:
    id: str
    score: float
    payload: dict[str, Any]


@dataclass
class PointRecord:
    """A whole point (for migration and copies): dense vector by name, sparse, payload."""

    id: str
    dense: dict[str, list[float]]
    sparse: dict[str, SparseVector]
    payload: dict[str, Any]


def mismatch_error(name: str, problems: list[str]) -> CollectionMismatch:
    return CollectionMismatch(
        f"the memory collection '{name}' does not fit the configured embedding model: "
        f"{'; '.join(problems)}. Fix: run `appliance memory reindex` to rebuild the index from the "
        f"conversation store and the document registry (or switch the model back).")


def filter_items(where: Where | None) -> list[tuple[str, list[Any] | Any, bool]]:
    """(field, value(s), is_many) for each condition of a filter dict."""
    out = []
    for key, value in (where or {}).items():
        if isinstance(value, (list, tuple, set, frozenset)):
            out.append((key, list(value), True))
        else:
            out.append((key, value, False))
    return out


class MemoryStore(ABC):
    """The index of the memory, whatever engine holds it."""

    config: MemoryConfig
    spec: EmbeddingSpec
    location: str
    engine: str

    def name(self, kind: CollectionKind) -> str:
        return f"{self.config.collection_prefix}_{kind}"

    @property
    def dense_name(self) -> str:
        return self.spec.vector_name

    @abstractmethod
    def recreate(self, kind: CollectionKind) -> None: ...

    @abstractmethod
    def drop(self, kind: CollectionKind) -> None:
        """Remove the collection entirely (a lost index; `reindex` recreates it)."""

    @abstractmethod
    def count(self, kind: CollectionKind, where: Where | None = None) -> int: ...

    @abstractmethod
    def upsert(self, kind: CollectionKind, ids: list[str], dense: list[list[float]],
               lexical: list[SparseVector], payloads: list[dict[str, Any]]) -> None: ...

    @abstractmethod
    def upsert_records(self, kind: CollectionKind, records: list[PointRecord], optimize: bool = True) -> None:
        """Write whole points as they are (migration, bulk loads); vectors keep their names.
        optimize=False leaves the index build to an explicit `optimize()` after the load."""

    @abstractmethod
    def delete(self, kind: CollectionKind, where: Where, unless: Where | None = None) -> None:
        """Delete points whose payload matches `where`, except those matching `unless`."""

    @abstractmethod
    def set_payload(self, kind: CollectionKind, where: Where, values: dict[str, Any]) -> None: ...

    @abstractmethod
    def search(self, kind: CollectionKind, dense: list[float] | None, lexical: SparseVector | None,
               limit: int, where: Where | None = None,
               exclude: Where | None = None) -> tuple[list[StoredPoint], list[StoredPoint]]:
        """The dense and the lexical candidate lists (best first), each up to `limit`;
        a side whose query vector is None or empty is []."""

    def dense_search(self, kind: CollectionKind, vector: list[float], limit: int,
                     exclude: Where | None = None, where: Where | None = None) -> list[StoredPoint]:
        return self.search(kind, vector, None, limit, where, exclude)[0]

    def lexical_search(self, kind: CollectionKind, vector: SparseVector, limit: int,
                       exclude: Where | None = None, where: Where | None = None) -> list[StoredPoint]:
        return self.search(kind, None, vector, limit, where, exclude)[1]

    @abstractmethod
    def scroll_payloads(self, kind: CollectionKind, where: Where | None = None) -> Iterable[dict[str, Any]]: ...

    @abstractmethod
    def retrieve_payloads(self, kind: CollectionKind, ids: list[str]) -> dict[str, dict[str, Any]]: ...

    def optimize(self, wait: bool = True) -> None:
        """Build indexes for points written since the last build (no-op where the engine does it)."""

    @abstractmethod
    def close(self) -> None: ...


def resolved_engine(config: MemoryConfig) -> str:
    if config.engine == "auto":
        return "qdrant" if config.qdrant_url else "edge"
    return config.engine


def edge_dir(config: MemoryConfig, data_dir: Path) -> Path:
    return Path(config.edge_path or data_dir / "memory-edge")


def legacy_local_dir(config: MemoryConfig, data_dir: Path) -> Path:
    """Where qdrant-client's local mode kept the index before Qdrant Edge (migrated on start)."""
    return Path(config.qdrant_path or data_dir / "qdrant")
