"""A SQLite file we keep state in (core stores, the rag document registry): WAL mode,
one short connection per call.

One connection per call (not one per process) keeps the stores safe to use from any
thread of the API, and WAL lets readers proceed while a writer commits.
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

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection that commits on success and rolls back on error."""
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys=ON")
        try:
            with db:
                yield db
        finally:
            db.close()
