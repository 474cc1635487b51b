"""A SQLite file we keep state in (core stores, the rag document registry): WAL mode,
one connection per thread, a transaction per call.

A connection per thread (not one per process) keeps the stores safe to use from any
thread of the API, and WAL lets readers proceed while a writer commits. The connection
is kept for the thread's next call: opening one (connect + two PRAGMAs, ~0.1 ms of CPU)
was the largest single cost of a chat request's own store work (issue 17, the API's
per-request CPU). Each call is still its own transaction: committed when the `with`
block ends, rolled back on error.

Two settings keep a write at ~0.1 ms instead of ~30 ms on a busy disk (measured for
issue 17, bench/bench_sqlite_writes.py: several such writes stand before an
answer's first token):
- `synchronous=NORMAL`, SQLite's advice for WAL: a commit no longer waits for fsync;
  the WAL is synced at checkpoints. An application crash loses nothing; a power cut or
  OS crash may lose the last commits, never the file's consistency.
- one idle "keeper" connection per file: when the last connection to a WAL database
  closes, SQLite checkpoints and deletes the WAL (two fsyncs) and the next commit
  re-creates it. With the keeper open, a thread's connection closing (its thread
  ended, or it failed) never costs that.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class SqliteFile:
    def __init__(self, path: Path, *schemas: str) -> None:
        self.path = path
        self._threads = threading.local()
        # One transaction at a time per file in this process: threads queue on this lock
        # and are woken the moment it is free. Left to SQLite, a second writer polls the
        # file lock with its busy handler's sleeps of 1, 2, 5, 10... ms. (Other processes
        # writing the same file still meet that busy handler.)
        self._turn = threading.Lock()
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
        """This thread's connection, in a transaction that commits on success and rolls
        back on error. A call made inside another one (same thread) joins the outer
        transaction, which commits or rolls back both."""
        local = self._local()
        if local.depth:
            local.depth += 1
            try:
                yield local.db
            finally:
                local.depth -= 1
            return
        local.depth = 1
        try:
            with self._turn, local.db:
                yield local.db
        except sqlite3.Error as exc:
            # A connection that failed (disk, corruption) is not trusted with the next call;
            # a broken constraint (e.g. two requests creating one conversation) is no failure of it.
            if not isinstance(exc, sqlite3.IntegrityError):
                self._drop(local)
            raise
        finally:
            local.depth = 0

    def _local(self) -> threading.local:
        local = self._threads
        if getattr(local, "pid", None) != os.getpid():  # never reuse a connection across fork()
            db = sqlite3.connect(self.path, timeout=30)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA synchronous=NORMAL")
            local.db, local.pid, local.depth = db, os.getpid(), 0
        return local

    @staticmethod
    def _drop(local: threading.local) -> None:
        try:
            local.db.close()
        finally:
            local.pid = None
