"""A SQLite file we keep state in (core stores, the rag document registry): WAL mode,
one short connection per call.

One connection per call (not one per process) keeps the stores safe to use from any
thread of the API, and WAL lets readers proceed while a writer commits.

Two settings keep a write at ~0.1 ms instead of ~30 ms on a busy disk (measured for
issue 17, bench/bench_sqlite_writes.py: several such writes stand before an
answer's first token):
- `synchronous=NORMAL`, SQLite's advice for WAL: a commit no longer waits for fsync;
  the WAL is synced at checkpoints. An application crash loses nothing; a power cut or
  OS crash may lose the last commits, never the file's consistency.
- one idle "keeper" connection per file: when the last connection to a WAL database
  closes, SQLite checkpoints and deletes the WAL (two fsyncs) and the next commit
  re-creates it. With the keeper open, per-call connections close in microseconds.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class SqliteFile:
    def __init__(self, path: Path, *schemas: str) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            for schema in schemas:
                db.executescript(schema)
        # Holds the WAL open (see above); never used for statements after this read.
        self._keeper = sqlite3.connect(self.path, check_same_thread=False)
        self._keeper.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection that commits on success and rolls back on error."""
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA synchronous=NORMAL")
        try:
            with db:
                yield db
        finally:
            db.close()
