"""A consistent copy of the Edge index folders, for backups.

Edge segments are memory-mapped files changed in place, a write-ahead log is
truncated after each flush, and the optimizer replaces whole segment folders, so a
plain file copy taken while the shard is being written can mix states. A copy is
consistent when it is taken by the shard's owner between writes, after a flush:
- `copy_open_store`: the rag worker copies its own open shards (task `rag.copy_index`;
  the worker runs one task at a time, so no write or optimization runs meanwhile);
- `copy_closed_index`: nobody holds the shards (stack stopped): this process takes
  their locks by opening them, flushes, copies and closes them.
Edge 0.9 can read snapshots (`update_from_snapshot`) but not write them from Python,
so the copy is the folder itself (what `EdgeShard.load` opens).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rag.edge_build import BUILD_DIR
from rag.store_edge import EdgeStore


class IndexBusy(Exception):
    """Another process holds the shards; ask it (the rag worker) to make the copy."""


def _copy_tree(root: Path, target: Path) -> list[str]:
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for path in sorted(root.iterdir()):
        if path.name == BUILD_DIR:  # a background index build's scratch copy, not the index
            continue
        if path.is_dir():
            shutil.copytree(path, target / path.name, dirs_exist_ok=True)
        else:
            shutil.copy2(path, target / path.name)
        copied.append(path.name)
    return copied


def copy_open_store(store: EdgeStore, target: Path) -> list[str]:
    """Copy the open store's folder (shards, sidecars, migration record) into `target`."""
    store.flush()
    return _copy_tree(store.root, target)


def copy_closed_index(root: Path, target: Path) -> list[str]:
    """Copy the index at `root` while holding every shard's lock; IndexBusy if one is held."""
    from qdrant_edge import EdgeShard

    shards = []
    try:
        for folder in sorted(p for p in root.iterdir() if (p / "edge_config.json").is_file()):
            try:
                shards.append(EdgeShard.load(str(folder)))
            except Exception as exc:
                if "WouldBlock" in str(exc):
                    raise IndexBusy(f"{folder} is held by another process") from None
                raise
        for shard in shards:
            shard.flush()
        return _copy_tree(root, target)
    finally:
        for shard in shards:
            shard.close()
