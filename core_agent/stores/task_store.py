"""What happened to each request: its plan, each step's state, and the routing log.

SQLite (<data_dir>/tasks.sqlite3) keeps the record for GET /tasks/{id} and the
/stats/routes summary; every change is also appended to a Redis stream
(appliance:task-events:<id>) that GET /tasks/{id}/events forwards live to the UI.

The async writers (create, set_plan, update_step, finish) run their SQLite part in a
thread, so the API's event loop never waits on the disk; the plain methods are for
threads (async callers use asyncio.to_thread).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Literal

import redis.asyncio as aioredis
from pydantic import BaseModel, Field

from configs.sqlite_file import SqliteFile

TaskStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
StepState = Literal["pending", "running", "succeeded", "failed", "skipped", "cancelled"]
TERMINAL_TASK = ("succeeded", "failed", "cancelled")
EVENTS_KEY = "appliance:task-events:{}"
EVENTS_TTL_S = 86400

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, conversation_id TEXT, mode TEXT NOT NULL, route_reason TEXT,
    status TEXT NOT NULL, source TEXT NOT NULL, plan TEXT, sources TEXT NOT NULL DEFAULT '[]',
    error TEXT, created_at REAL NOT NULL, finished_at REAL
);
CREATE TABLE IF NOT EXISTS steps (
    task_id TEXT NOT NULL, step_id TEXT NOT NULL, position INTEGER NOT NULL, worker TEXT NOT NULL,
    queue TEXT NOT NULL, instruction TEXT NOT NULL, depends_on TEXT NOT NULL, state TEXT NOT NULL,
    model TEXT, adapter TEXT, worker_process TEXT, queued_at REAL, started_at REAL, finished_at REAL,
    seconds REAL,
    prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0, result_summary TEXT, error TEXT,
    PRIMARY KEY (task_id, step_id)
);
CREATE TABLE IF NOT EXISTS route_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL, step_id TEXT NOT NULL,
    worker TEXT NOT NULL, model TEXT, adapter TEXT, prompt_tokens INTEGER, completion_tokens INTEGER,
    latency_s REAL, outcome TEXT NOT NULL, created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS route_log_by_worker ON route_log(worker, model, adapter);
"""


class StepRecord(BaseModel):
    id: str
    worker: str
    queue: str
    instruction: str
    depends_on: list[str] = Field(default_factory=list)
    state: StepState = "pending"
    model: str | None = None
    adapter: str | None = None
    worker_process: str | None = None   # Celery node and pid that ran it
    queued_at: float | None = None      # sent to the queue (API clock)
    started_at: float | None = None     # the worker began (worker clock)
    finished_at: float | None = None
    seconds: float | None = None        # queued -> result, as the owner waited
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 0
    result_summary: str | None = None
    error: str | None = None


class TaskRecord(BaseModel):
    id: str
    conversation_id: str | None
    mode: str
    route_reason: str | None = None
    status: TaskStatus
    source: str
    plan: dict[str, Any] | None = None
    # Where the plan came from: caller | model | repaired | template | direct (planned
    # but answered directly, why in plan.fallback); None for turns routed direct.
    plan_origin: str | None = None
    steps: list[StepRecord] = Field(default_factory=list)
    sources: list[dict[str, Any]] = Field(default_factory=list)
    error: str | None = None
    created_at: float
    finished_at: float | None = None


class RouteStat(BaseModel):
    worker: str
    model: str | None
    adapter: str | None
    steps: int
    failures: int
    prompt_tokens: int
    completion_tokens: int
    latency_p50_s: float
    latency_max_s: float


class TaskNotFound(KeyError):
    pass


def summarize(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class TaskStore(SqliteFile):
    def __init__(self, path: Path, redis: aioredis.Redis) -> None:
        super().__init__(path, SCHEMA)
        self.redis = redis


    async def _event(self, task_id: str, event: dict[str, Any]) -> None:
        key = EVENTS_KEY.format(task_id)
        pipe = self.redis.pipeline(transaction=False)  # one round trip; MULTI/EXEC buys nothing here
        pipe.xadd(key, {"e": json.dumps({**event, "task_id": task_id, "at": time.time()})}, maxlen=5000)
        pipe.expire(key, EVENTS_TTL_S)
        await pipe.execute()

    # --- writes ----------------------------------------------------------------

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        with self._connect() as db:
            db.execute(sql, args)

    def _write_plan(self, task_id: str, plan: dict[str, Any], queues: dict[str, str], mode: str) -> None:
        with self._connect() as db:
            db.execute("UPDATE tasks SET plan = ?, mode = ? WHERE id = ?", (json.dumps(plan), mode, task_id))
            for position, step in enumerate(plan["steps"]):
                db.execute("INSERT OR REPLACE INTO steps(task_id, step_id, position, worker, queue, instruction, "
                           "depends_on, state, adapter) VALUES (?,?,?,?,?,?,?,?,?)",
                           (task_id, step["id"], position, step["worker"], queues[step["worker"]],
                            step["instruction"], json.dumps(step.get("depends_on", [])), "pending",
                            step.get("adapter")))

    async def create(self, task_id: str, conversation_id: str | None, mode: str, source: str,
                     route_reason: str | None = None) -> None:
        await asyncio.to_thread(self._write, "INSERT INTO tasks(id, conversation_id, mode, route_reason, status, "
                                "source, created_at) VALUES (?,?,?,?,?,?,?)",
                                (task_id, conversation_id, mode, route_reason, "running", source, time.time()))
        await self._event(task_id, {"type": "task", "status": "running", "mode": mode})

    async def set_plan(self, task_id: str, plan: dict[str, Any], queues: dict[str, str],
                       mode: str = "plan") -> None:
        await asyncio.to_thread(self._write_plan, task_id, plan, queues, mode)
        await self._event(task_id, {"type": "plan", "plan": plan})

    async def update_step(self, task_id: str, step_id: str, **fields: Any) -> None:
        allowed = set(StepRecord.model_fields) - {"id", "worker", "queue", "instruction", "depends_on"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown step fields {unknown}")
        if fields:
            sets = ", ".join(f"{k} = ?" for k in fields)
            await asyncio.to_thread(self._write, f"UPDATE steps SET {sets} WHERE task_id = ? AND step_id = ?",
                                    (*fields.values(), task_id, step_id))
        await self._event(task_id, {"type": "step", "step_id": step_id, **fields})

    async def finish(self, task_id: str, status: TaskStatus, error: str | None = None,
                     sources: list[dict[str, Any]] | None = None) -> None:
        await asyncio.to_thread(self._write, "UPDATE tasks SET status = ?, error = ?, sources = ?, finished_at = ? "
                                "WHERE id = ?", (status, error, json.dumps(sources or []), time.time(), task_id))
        await self._event(task_id, {"type": "task", "status": status, "error": error})

    def running_ids(self) -> list[str]:
        """Tasks recorded as running (after a restart: left behind by the previous process)."""
        with self._connect() as db:
            return [r["id"] for r in db.execute("SELECT id FROM tasks WHERE status = 'running'").fetchall()]

    def fail_open_steps(self, task_id: str, error: str) -> None:
        """Steps that never ended (their runner is gone) are marked failed."""
        self._write("UPDATE steps SET state = 'failed', error = ?, finished_at = ? WHERE task_id = ? "
                    "AND state IN ('pending', 'running')", (error, time.time(), task_id))

    def log_route(self, task_id: str, step_id: str, worker: str, model: str | None, adapter: str | None,
                  prompt_tokens: int, completion_tokens: int, latency_s: float, outcome: str) -> None:
        with self._connect() as db:
            db.execute("INSERT INTO route_log(task_id, step_id, worker, model, adapter, prompt_tokens, "
                       "completion_tokens, latency_s, outcome, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                       (task_id, step_id, worker, model, adapter, prompt_tokens, completion_tokens,
                        latency_s, outcome, time.time()))

    # --- reads -----------------------------------------------------------------

    def get(self, task_id: str) -> TaskRecord:
        with self._connect() as db:
            row = db.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
            if row is None:
                raise TaskNotFound(task_id)
            steps = db.execute("SELECT * FROM steps WHERE task_id = ? ORDER BY position", (task_id,)).fetchall()
        data = dict(row)
        data["plan"] = json.loads(data["plan"]) if data["plan"] else None
        data["plan_origin"] = (data["plan"] or {}).get("origin")
        data["sources"] = json.loads(data["sources"] or "[]")
        records = []
        for s in steps:
            step = dict(s)
            step["id"] = step.pop("step_id")
            step["depends_on"] = json.loads(step["depends_on"])
            for key in ("task_id", "position"):
                step.pop(key)
            records.append(StepRecord(**step))
        return TaskRecord(**data, steps=records)

    def list(self, conversation_id: str | None = None, status: str | None = None,
             limit: int = 50, conversation_ids: list[str] | None = None) -> list[TaskRecord]:
        """Newest first; `conversation_ids` (None = any) limits it to tasks of those conversations."""
        sql, args = "SELECT id FROM tasks WHERE 1=1", []
        if conversation_ids is not None:
            if not conversation_ids:
                return []
            sql += f" AND conversation_id IN ({','.join('?' * len(conversation_ids))})"
            args += conversation_ids
        if conversation_id:
            sql += " AND conversation_id = ?"
            args.append(conversation_id)
        if status:
            sql += " AND status = ?"
            args.append(status)
        sql += " ORDER BY created_at DESC LIMIT ?"
        args.append(limit)
        with self._connect() as db:
            ids = [r["id"] for r in db.execute(sql, args).fetchall()]
        return [self.get(i) for i in ids]

    def route_stats(self) -> list[RouteStat]:
        with self._connect() as db:
            rows = db.execute("SELECT worker, model, adapter, latency_s, outcome, prompt_tokens, completion_tokens "
                              "FROM route_log").fetchall()
        groups: dict[tuple, list[sqlite3.Row]] = {}
        for row in rows:
            groups.setdefault((row["worker"], row["model"], row["adapter"]), []).append(row)
        stats = []
        for (worker, model, adapter), items in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
            latencies = sorted(r["latency_s"] or 0.0 for r in items)
            stats.append(RouteStat(
                worker=worker, model=model, adapter=adapter, steps=len(items),
                failures=sum(r["outcome"] != "succeeded" for r in items),
                prompt_tokens=sum(r["prompt_tokens"] or 0 for r in items),
                completion_tokens=sum(r["completion_tokens"] or 0 for r in items),
                latency_p50_s=latencies[len(latencies) // 2], latency_max_s=latencies[-1]))
        return stats
