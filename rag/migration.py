"""Move an old qdrant-client local-mode memory folder into the Qdrant Edge shards.

Runs when the rag worker opens the memory (MemoryService) with the Edge engine and
finds the old folder (`memory.qdrant_path`, default <data_dir>/qdrant) holding the
appliance's collections, and no record that it was migrated already:

- every point is copied as it is: same id, same payload, the dense vector (old name
  `dense`) written under the model's name, the sparse `lexical` vector unchanged;
  progress is logged per batch (and passed to a callback);
- idempotent: ids are kept, so an interrupted run simply runs again from the start
  and overwrites what it wrote; the record is written only after the check passed;
- nothing lost: afterwards the point count of every collection must match and a
  sample of payloads (first, last and every 97th point) must be identical, or the
  migration fails loudly and the old folder stays the source;
- the old folder is never modified or deleted: the record (`migrated-from-local.json`
  in the Edge folder) tells the owner it can be removed (`rm -rf <folder>`).

The old vectors are only usable if they come from the configured embedding model
(same dimension and recorded model); otherwise nothing is copied and the owner is
told to run `appliance memory reindex`, which rebuilds from the sources of truth.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable

from rag.store import COLLECTION_KINDS, LEGACY_DENSE, PointRecord, StoreUnavailable
from rag.store_edge import EdgeStore

log = logging.getLogger("appliance.rag.migration")

RECORD = "migrated-from-local.json"
BATCH = 1024
SAMPLE_EVERY = 97
Progress = Callable[[str], None]


class MigrationError(StoreUnavailable):
    code = "memory_migration_failed"


def record_path(store: EdgeStore) -> Path:
    return store.root / RECORD


def needs_migration(store: EdgeStore, old: Path) -> bool:
    return old.is_dir() and (old / "collection").is_dir() and not record_path(store).is_file()


def migrate_local_folder(store: EdgeStore, old: Path, progress: Progress | None = None) -> dict[str, int] | None:
    """Copy the old local-mode folder into `store`; returns points per collection, or
    None if there was nothing to migrate."""
    if not needs_migration(store, old):
        return None
    say = progress or (lambda line: log.info("%s", line))
    from qdrant_client import QdrantClient

    try:
        client = QdrantClient(path=str(old))
    except RuntimeError as exc:  # portalocker: another process holds the old folder
        raise MigrationError(f"cannot migrate {old}: it is in use by another process ({exc}). Stop the "
                             f"process that holds it (`appliance down`) and start again.") from None
    counts: dict[str, int] = {}
    try:
        say(f"migrating the memory from {old} (qdrant-client local mode) into Qdrant Edge at {store.root}")
        for kind in COLLECTION_KINDS:
            name = store.name(kind)
            if not client.collection_exists(name):
                continue
            if not _compatible(client, name, store, say):
                counts[name] = 0
                continue
            counts[name] = _copy(client, name, kind, store, say)
            _verify(client, name, kind, store)
            say(f"{name}: {counts[name]} points copied and checked")
        store.optimize()
        record_path(store).write_text(json.dumps({
            "from": str(old), "at": time.time(), "points": counts,
            "note": f"the old folder is no longer used; remove it when satisfied: rm -rf {old}"}, indent=2))
        say(f"memory migrated ({counts}); the old folder {old} is kept: remove it when satisfied (rm -rf {old})")
        return counts
    finally:
        client.close()


def _compatible(client, name: str, store: EdgeStore, say: Progress) -> bool:
    info = client.get_collection(name)
    vectors = info.config.params.vectors if isinstance(info.config.params.vectors, dict) else {}
    dense = vectors.get(LEGACY_DENSE) or vectors.get(store.dense_name)
    model = (info.config.metadata or {}).get("embedding_model")
    if dense is None or dense.size != store.spec.dimension or (model and model != store.spec.model):
        say(f"{name}: built for another embedding model ({model}, {getattr(dense, 'size', '?')} dims); not "
            f"copied. Run `appliance memory reindex` to rebuild it from the sources of truth.")
        return False
    return True


def _records(client, name: str, offset=None, limit: int = BATCH):
    from rag.store_qdrant import record_of

    points, offset = client.scroll(name, limit=limit, offset=offset, with_payload=True, with_vectors=True)
    return [record_of(p) for p in points], offset


def _renamed(record: PointRecord, store: EdgeStore) -> PointRecord:
    dense = {store.dense_name if k in (LEGACY_DENSE, store.dense_name) else k: v for k, v in record.dense.items()}
    return PointRecord(id=record.id, dense=dense, sparse=record.sparse, payload=record.payload)


def _copy(client, name: str, kind, store: EdgeStore, say: Progress) -> int:
    total = client.count(name, exact=True).count
    done, offset, started = 0, None, time.perf_counter()
    while True:
        records, offset = _records(client, name, offset)
        if records:
            store.upsert_records(kind, [_renamed(r, store) for r in records], optimize=False)
            done += len(records)
            rate = done / max(time.perf_counter() - started, 1e-9)
            say(f"{name}: {done}/{total} points ({100 * done / max(total, 1):.0f}%, {rate:.0f} points/s)")
        if offset is None:
            return done


def _verify(client, name: str, kind, store: EdgeStore) -> None:
    old_count = client.count(name, exact=True).count
    new_count = store.count(kind)
    if new_count < old_count:
        raise MigrationError(f"migration of {name} incomplete: {old_count} points in the old folder, {new_count} "
                             f"in Edge. Nothing was removed; restart to try again, or report this.")
    sample: dict[str, dict] = {}
    offset, seen = None, 0
    while True:
        records, offset = _records(client, name, offset)
        for i, record in enumerate(records):
            if (seen + i) % SAMPLE_EVERY == 0 or (offset is None and i == len(records) - 1):
                sample[record.id] = record.payload
        seen += len(records)
        if offset is None:
            break
    copied = store.retrieve_payloads(kind, list(sample))
    wrong = [pid for pid, payload in sample.items() if copied.get(pid) != payload]
    if wrong:
        raise MigrationError(f"migration of {name}: {len(wrong)} of {len(sample)} sampled points differ after "
                             f"copying (e.g. {wrong[0]}). Nothing was removed; report this.")
