"""Open the configured memory engine: the one place that knows both implementations
of the store interface (rag/store.py), so neither engine module imports the other
and the interface imports neither."""

from __future__ import annotations

from pathlib import Path

from configs.schema import MemoryConfig
from rag.store import EmbeddingSpec, MemoryStore, edge_dir, resolved_engine


def open_store(config: MemoryConfig, data_dir: Path, spec: EmbeddingSpec) -> MemoryStore:
    """The configured engine's store (imports only the engine in use)."""
    if resolved_engine(config) == "qdrant":
        from rag.store_qdrant import QdrantServerStore

        return QdrantServerStore(config, spec)
    from rag.store_edge import EdgeStore

    return EdgeStore(config, edge_dir(config, data_dir), spec)
