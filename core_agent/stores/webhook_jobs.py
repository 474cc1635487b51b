"""Durable webhook jobs: one row per accepted webhook request, in <data dir>/webhooks.sqlite3.

The row is written before the work starts, so an idempotency key always maps to one
job (a UNIQUE index decides races between concurrent duplicates), and a job's answer
and callback state survive the request that created it. Seen signatures are kept for
the replay window so a captured signed request cannot be sent twice.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from configs.sqlite_file import SqliteFile

JobStatus = Literal["queued", "running", "succeeded", "failed"]
CallbackStatus = Literal["none", "pending", "delivered", "failed"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_jobs (
    id TEXT PRIMARY KEY,
    hook TEXT NOT NULL,
    idempotency_key TEXT,
    body_sha256 TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL,
    task_id TEXT,
    conversation_id TEXT,
    result TEXT,
    error TEXT,
    callback_url TEXT,
    callback_status TEXT NOT NULL DEFAULT 'none',
    callback_attempts INTEGER NOT NULL DEFAULT 0,
    callback_error TEXT,
    owner_pid INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS webhook_jobs_idempotency
    ON webhook_jobs(hook, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS webhook_signatures (
    hook TEXT NOT NULL,
    signature TEXT NOT NULL,
    seen_at REAL NOT NULL,
    PRIMARY KEY (hook, signature)
);
"""


class CallbackState(BaseModel):
    url: str
    status: CallbackStatus
    attempts: int
    error: str | None = None


class Job(BaseModel):
    """A webhook job as GET /jobs/{id}, the sync answer and the callback body show it."""

    id: str
    hook: str
    status: JobStatus
    created_at: float
    updated_at: float
    finished_at: float | None = None
    answer: str | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    task_id: str | None = None
    conversation_id: str | None = None
    callback: CallbackState | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("succeeded", "failed")


class JobStore(SqliteFile):
    def __init__(self, path: Path) -> None:
        super().__init__(path, SCHEMA)


    @staticmethod
    def _job(row: sqlite3.Row) -> Job:
        data = dict(row)
        result = json.loads(data["result"]) if data["result"] else None
        callback = None
        if data["callback_url"]:
            callback = CallbackState(url=data["callback_url"], status=data["callback_status"],
                                     attempts=data["callback_attempts"], error=data["callback_error"])
        return Job(id=data["id"], hook=data["hook"], status=data["status"], created_at=data["created_at"],
                   updated_at=data["updated_at"], finished_at=data["finished_at"],
                   answer=(result or {}).get("answer"), result=result,
                   error=json.loads(data["error"]) if data["error"] else None,
                   task_id=data["task_id"], conversation_id=data["conversation_id"], callback=callback)

    def create(self, hook: str, body_sha256: str, idempotency_key: str | None,
               callback_url: str | None) -> tuple[Job, bool]:
        """Insert a queued job; with a key already used for this hook, return that job instead.
        Returns (job, created)."""
        now = time.time()
        job_id = uuid.uuid4().hex
        try:
            with self._connect() as db:
                db.execute(
                    "INSERT INTO webhook_jobs(id, hook, idempotency_key, body_sha256, status, created_at, "
                    "updated_at, callback_url, callback_status, owner_pid) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (job_id, hook, idempotency_key, body_sha256, "queued", now, now, callback_url,
                     "pending" if callback_url else "none", os.getpid()))
        except sqlite3.IntegrityError:
            existing = self.by_key(hook, idempotency_key or "")
            if existing is None:  # purged between the insert and the read: try once more
                return self.create(hook, body_sha256, idempotency_key, callback_url)
            return existing, False
        return self.get(job_id), True  # type: ignore[return-value]

    def get(self, job_id: str) -> Job | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM webhook_jobs WHERE id = ?", (job_id,)).fetchone()
        return self._job(row) if row else None

    def by_key(self, hook: str, idempotency_key: str) -> Job | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM webhook_jobs WHERE hook = ? AND idempotency_key = ?",
                             (hook, idempotency_key)).fetchone()
        return self._job(row) if row else None

    def body_sha256(self, job_id: str) -> str | None:
        with self._connect() as db:
            row = db.execute("SELECT body_sha256 FROM webhook_jobs WHERE id = ?", (job_id,)).fetchone()
        return row[0] if row else None

    def _update(self, job_id: str, **fields: Any) -> None:
        fields["updated_at"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._connect() as db:
            db.execute(f"UPDATE webhook_jobs SET {cols} WHERE id = ?", (*fields.values(), job_id))

    def running(self, job_id: str, task_id: str, conversation_id: str) -> None:
        self._update(job_id, status="running", task_id=task_id, conversation_id=conversation_id)

    def succeeded(self, job_id: str, result: dict[str, Any]) -> None:
        self._update(job_id, status="succeeded", result=json.dumps(result), finished_at=time.time())

    def failed(self, job_id: str, error: dict[str, Any]) -> None:
        self._update(job_id, status="failed", error=json.dumps(error), finished_at=time.time())

    def callback_attempt(self, job_id: str, attempts: int, status: CallbackStatus, error: str | None) -> None:
        self._update(job_id, callback_attempts=attempts, callback_status=status,
                     callback_error=error[:1000] if error else None)

    def orphans(self, alive: Any) -> tuple[list[str], list[str]]:
        """Jobs whose API process is gone: (unfinished job ids, finished ids with a callback pending).
        `alive(pid)` says whether a process still runs."""
        with self._connect() as db:
            rows = db.execute("SELECT id, status, callback_status, owner_pid FROM webhook_jobs "
                              "WHERE (status IN ('queued', 'running') OR callback_status = 'pending') "
                              "AND owner_pid != ?", (os.getpid(),)).fetchall()
        dead = [r for r in rows if not alive(r["owner_pid"])]
        unfinished = [r["id"] for r in dead if r["status"] in ("queued", "running")]
        callbacks = [r["id"] for r in dead if r["status"] not in ("queued", "running")]
        return unfinished, callbacks

    def adopt(self, job_id: str) -> None:
        self._update(job_id, owner_pid=os.getpid())

    def remember_signature(self, hook: str, signature: str, window_s: int) -> bool:
        """Record a signature; False when it was already seen (a replay)."""
        now = time.time()
        with self._connect() as db:
            # Older signatures are outside the window: their timestamps are refused anyway.
            db.execute("DELETE FROM webhook_signatures WHERE seen_at < ?", (now - 2 * window_s,))
            cur = db.execute("INSERT OR IGNORE INTO webhook_signatures(hook, signature, seen_at) VALUES (?,?,?)",
                             (hook, signature, now))
        return cur.rowcount == 1

    def purge(self, older_than_s: float) -> int:
        with self._connect() as db:
            cur = db.execute("DELETE FROM webhook_jobs WHERE created_at < ? AND status IN ('succeeded', 'failed') "
                             "AND callback_status != 'pending'", (time.time() - older_than_s,))
        return cur.rowcount
