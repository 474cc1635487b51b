"""Back up and restore the appliance's memory: conversation store, document registry, Qdrant.

One .tar.gz with a manifest (format, time, sha256 of every file). Every SQLite file
is copied with SQLite's online backup API, so a backup taken while the stack runs
is consistent per file. The Qdrant Edge index (memory.engine edge) is copied by the
process that holds its shards, between writes and after a flush (rag/index_copy.py):
this process when the stack is stopped, else the rag worker (task rag.copy_index).
An old qdrant-client local-mode folder, if still present, is copied as SQLite files.
With a Qdrant server (memory.qdrant_url) the archive holds the sources of truth
only; after restoring run `appliance memory reindex` to rebuild the server's index.

Order: conversation store first, then the registry, then the index, so nothing in
the store can be missing from the restored index without also being pending in
the store's outbox (re-indexed after restore). Turns written during the backup
itself may appear in the index but not in the store; `appliance memory reindex`
removes such strays.

Restore refuses while any appliance process of this data directory runs, checks
every file's hash, and moves the replaced files aside (never deletes them).
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import sqlite3
import tarfile
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel
from redis.exceptions import RedisError

from configs.schema import Settings
from core_agent.ops import launcher
from rag.store import edge_dir, legacy_local_dir, resolved_engine

EDGE_TOP = "memory-edge"        # the Edge index folder's name inside the archive
COPY_TIMEOUT_S = 600

FORMAT = 1
MANIFEST = "manifest.json"
SQLITE_SUFFIXES = (".sqlite", ".sqlite3")


class BackupError(Exception):
    """The backup or restore cannot go on; the message says why and what to do."""


class Manifest(BaseModel):
    format: int = FORMAT
    created_at: float
    qdrant: str                 # "edge" / "local" (index files included) or the server URL (not included)
    files: dict[str, str]       # path relative to the data directory -> sha256


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy_sqlite(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=30)
    target = sqlite3.connect(dst)
    try:
        with target:
            source.backup(target)
        target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
    finally:
        source.close()
        target.close()


def _qdrant_dir(settings: Settings) -> Path:
    return legacy_local_dir(settings.memory, settings.data_dir)


def _copy_edge_index(settings: Settings, target: Path) -> None:
    """A consistent copy of the Edge index into `target` (see rag/index_copy.py)."""
    from rag.index_copy import IndexBusy, copy_closed_index

    root = edge_dir(settings.memory, settings.data_dir)
    if not root.is_dir():
        return
    try:
        copy_closed_index(root, target)
        return
    except IndexBusy:
        pass  # the rag worker holds the shards: it makes the copy
    shutil.rmtree(target, ignore_errors=True)
    from configs.contracts.memory import RAG_COPY_INDEX
    from core_agent.orchestration.dispatcher import DispatchError, TaskFailed

    try:
        asyncio.run(_ask_worker_to_copy(settings, RAG_COPY_INDEX, {"target": str(target)}))
    except TaskFailed as exc:
        raise BackupError(f"the rag worker could not copy the memory index: {exc}") from None
    except (DispatchError, OSError, RedisError) as exc:  # Redis down, worker gone, timeout
        raise BackupError(f"the memory index is held by the rag worker, which did not copy it ({exc}). Fix: "
                          f"check `appliance status`, or stop the appliance (`appliance down`) and back up "
                          f"again.") from None


async def _ask_worker_to_copy(settings: Settings, task: str, payload: dict) -> None:
    """Wait on the task the one way the core waits on any task (its event stream)."""
    import redis.asyncio as aioredis

    from core_agent.orchestration.dispatcher import Dispatcher
    from workers.celery_app import create_celery_app

    redis = aioredis.Redis.from_url(settings.redis_url)
    try:
        await Dispatcher(settings, create_celery_app(settings), redis).call(
            task, payload, queue="rag", timeout_s=COPY_TIMEOUT_S)
    finally:
        await redis.aclose()


def _sources(settings: Settings) -> list[tuple[Path, str]]:
    """(file, name in the archive) in backup order."""
    out = []
    for path in (settings.conversations_db, settings.memory_dir / "documents.sqlite3"):
        if path.is_file():
            out.append((path, str(path.relative_to(settings.data_dir))))
    qdir = _qdrant_dir(settings)
    if resolved_engine(settings.memory) != "qdrant" and qdir.is_dir():
        for path in sorted(qdir.rglob("*")):
            if path.is_file() and (path.suffix in SQLITE_SUFFIXES or path.name == "meta.json"):
                out.append((path, str(Path("qdrant") / path.relative_to(qdir))))
    return out


def create_backup(settings: Settings, archive: Path) -> Manifest:
    files = _sources(settings)
    edge = resolved_engine(settings.memory) == "edge"
    if not files and not (edge and edge_dir(settings.memory, settings.data_dir).is_dir()):
        raise BackupError(f"nothing to back up in {settings.data_dir} (no conversation store, registry or index)")
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".backup-", dir=archive.parent) as tmp:
        staging = Path(tmp)
        hashes: dict[str, str] = {}
        for src, name in files:
            dst = staging / name
            if src.suffix in SQLITE_SUFFIXES:
                _copy_sqlite(src, dst)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
            hashes[name] = _sha256(dst)
        if edge:  # after the store and the registry, like the local-mode index before it
            _copy_edge_index(settings, staging / EDGE_TOP)
            for path in sorted((staging / EDGE_TOP).rglob("*")):
                if path.is_file():
                    hashes[str(path.relative_to(staging))] = _sha256(path)
        kind = "edge" if edge else ("local" if resolved_engine(settings.memory) != "qdrant" else None)
        manifest = Manifest(created_at=time.time(), files=hashes, qdrant=kind or settings.memory.qdrant_url or "?")
        (staging / MANIFEST).write_text(manifest.model_dump_json(indent=2))
        partial = archive.with_name(archive.name + ".partial")
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(staging / MANIFEST, arcname=MANIFEST)
            for name in hashes:
                tar.add(staging / name, arcname=name)
        partial.replace(archive)  # a crash never leaves a truncated archive under the final name
    return manifest


def _refuse_if_running(settings: Settings) -> None:
    running = [name for name, info in launcher.status(settings).items() if info["running"]]
    if running:
        raise BackupError(f"the appliance is running ({', '.join(running)}); restoring under it would corrupt "
                          f"its files. Fix: `appliance down` (or scripts/down.sh), then restore again.")


def _read_archive(archive: Path, into: Path) -> Manifest:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(into, filter="data")
        manifest = Manifest.model_validate_json((into / MANIFEST).read_text())
    except (OSError, EOFError, tarfile.TarError, ValueError) as exc:
        raise BackupError(f"{archive} is not a readable appliance backup ({exc})") from None
    if manifest.format != FORMAT:
        raise BackupError(f"{archive} has backup format {manifest.format}; this version reads {FORMAT}")
    for name, digest in manifest.files.items():
        path = into / name
        if not path.is_file() or _sha256(path) != digest:
            raise BackupError(f"{archive} is damaged: {name} is missing or does not match its checksum")
    return manifest


def restore_backup(settings: Settings, archive: Path) -> tuple[Manifest, Path]:
    """Restore into settings.data_dir; returns the manifest and where replaced files were moved."""
    _refuse_if_running(settings)
    data = settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = data / f"pre-restore-{stamp}"
    with tempfile.TemporaryDirectory(prefix=".restore-", dir=data) as tmp:
        staging = Path(tmp)
        manifest = _read_archive(archive, staging)  # everything verified before anything is touched
        targets = {"qdrant": _qdrant_dir(settings), EDGE_TOP: edge_dir(settings.memory, settings.data_dir)}
        tops = sorted({Path(name).parts[0] for name in manifest.files})
        if "qdrant" in tops and EDGE_TOP not in tops and targets[EDGE_TOP].exists():
            # An archive from before Edge: its local-mode folder is migrated again on start,
            # so the current Edge index (migrated from something else) goes aside too.
            tops.append(EDGE_TOP)
        for top in tops:
            live = targets.get(top, data / top)
            restored = staging / top
            # The old copy, with any -wal/-shm beside a database, goes aside, never deleted.
            olds = ([live] if live.exists() else []) + sorted(live.parent.glob(live.name + "-*"))
            for old in olds:
                dest = aside / (old.relative_to(data) if old.is_relative_to(data) else old.name)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(old), str(dest))
            if restored.exists():
                live.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(restored), str(live))
    return manifest, aside
