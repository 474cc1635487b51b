"""The durable conversation store: the source of truth for every turn.

SQLite in the data directory (WAL mode, one connection per call) so the API can
write from any thread. Memory indexes (Qdrant) are rebuilt from here, never the
other way round.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from configs.sqlite_file import SqliteFile

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    created_at REAL NOT NULL,
    task_id TEXT,
    model TEXT,
    meta TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, id);
"""

# Memory outbox (issue 4): every stored turn is queued here, in the same transaction
# as the turn itself (triggers), until the rag worker has embedded and indexed it;
# deleting a conversation queues its removal from the index. core_agent/orchestration/memory_client.py
# drains it. Rows stay until the index confirms them, so a down worker loses nothing.
MEMORY_OUTBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS memory_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL,                -- 'index_turn' | 'forget_conversation'
    message_id INTEGER,
    conversation_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE TRIGGER IF NOT EXISTS memory_outbox_turn AFTER INSERT ON messages BEGIN
    INSERT INTO memory_outbox(op, message_id, conversation_id, created_at)
    VALUES ('index_turn', NEW.id, NEW.conversation_id, NEW.created_at);
END;
CREATE TRIGGER IF NOT EXISTS memory_outbox_forget AFTER DELETE ON conversations BEGIN
    INSERT INTO memory_outbox(op, conversation_id, created_at)
    VALUES ('forget_conversation', OLD.id, (julianday('now') - 2440587.5) * 86400.0);
END;
"""


# Whose a conversation is (core_agent/access/principal.py): "owner", "key:<name>",
# "webhook:<name>" or a scope's namespace. Added after the first release: rows from
# before have no namespace and belong to the owner (the column default migrates them).
NAMESPACE_COLUMN = "ALTER TABLE conversations ADD COLUMN namespace TEXT NOT NULL DEFAULT 'owner'"
OWNER_NAMESPACE = "owner"


class Conversation(BaseModel):
    id: str
    title: str
    created_at: float
    updated_at: float
    message_count: int = 0
    namespace: str = OWNER_NAMESPACE


class StoredMessage(BaseModel):
    id: int
    conversation_id: str
    role: str
    content: str
    created_at: float
    task_id: str | None = None
    model: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


class ConversationNotFound(KeyError):
    pass


class MemoryOutboxItem(BaseModel):
    """One pending memory operation; for 'index_turn' the turn's fields are filled in
    (`content` is None when the message was deleted before it was indexed)."""

    id: int
    op: str
    conversation_id: str
    message_id: int | None = None
    role: str | None = None
    content: str | None = None
    created_at: float
    conversation_title: str = ""
    namespace: str = OWNER_NAMESPACE
    attempts: int = 0


class ConversationStore(SqliteFile):
    def __init__(self, path: Path) -> None:
        super().__init__(path, SCHEMA, MEMORY_OUTBOX_SCHEMA)
        self._add_namespace_column()

    def _add_namespace_column(self) -> None:
        with self._connect() as db:
            columns = {r["name"] for r in db.execute("PRAGMA table_info(conversations)").fetchall()}
            if "namespace" not in columns:
                db.execute(NAMESPACE_COLUMN)
            db.execute("CREATE INDEX IF NOT EXISTS conversations_by_namespace ON conversations(namespace, updated_at)")

    def create(self, title: str = "New conversation", conversation_id: str | None = None,
               namespace: str = OWNER_NAMESPACE) -> Conversation:
        now = time.time()
        conv = Conversation(id=conversation_id or uuid.uuid4().hex, title=title[:200] or "New conversation",
                            created_at=now, updated_at=now, namespace=namespace)
        with self._connect() as db:
            db.execute("INSERT INTO conversations(id, title, created_at, updated_at, namespace) VALUES (?,?,?,?,?)",
                       (conv.id, conv.title, conv.created_at, conv.updated_at, conv.namespace))
        return conv

    def namespace_of(self, conversation_id: str) -> str | None:
        """Whose the conversation is, or None if it does not exist."""
        with self._connect() as db:
            row = db.execute("SELECT namespace FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        return None if row is None else str(row[0])

    def ids_in(self, namespaces: list[str]) -> list[str]:
        """Ids of every conversation stored in these namespaces."""
        if not namespaces:
            return []
        marks = ",".join("?" * len(namespaces))
        with self._connect() as db:
            rows = db.execute(f"SELECT id FROM conversations WHERE namespace IN ({marks})", namespaces).fetchall()
        return [str(r[0]) for r in rows]

    def get(self, conversation_id: str) -> Conversation:
        with self._connect() as db:
            row = db.execute(
                "SELECT c.*, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS message_count "
                "FROM conversations c WHERE c.id = ?", (conversation_id,)).fetchone()
        if row is None:
            raise ConversationNotFound(conversation_id)
        return Conversation(**dict(row))

    def exists(self, conversation_id: str) -> bool:
        with self._connect() as db:
            return db.execute("SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)).fetchone() is not None

    def list(self, limit: int = 100, offset: int = 0, query: str | None = None,
             namespaces: list[str] | None = None) -> list[Conversation]:
        """Newest first; `namespaces` (None = all) limits it to those principals' conversations."""
        sql = ("SELECT c.*, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS message_count "
               "FROM conversations c WHERE 1=1")
        args: list[Any] = []
        if namespaces is not None:
            if not namespaces:
                return []
            sql += f" AND c.namespace IN ({','.join('?' * len(namespaces))})"
            args += namespaces
        if query:
            sql += (" AND (c.title LIKE ? OR EXISTS (SELECT 1 FROM messages m WHERE "
                    "m.conversation_id = c.id AND m.content LIKE ?))")
            args += [f"%{query}%", f"%{query}%"]
        sql += " ORDER BY c.updated_at DESC LIMIT ? OFFSET ?"
        args += [limit, offset]
        with self._connect() as db:
            return [Conversation(**dict(r)) for r in db.execute(sql, args).fetchall()]

    def rename(self, conversation_id: str, title: str) -> Conversation:
        with self._connect() as db:
            cur = db.execute("UPDATE conversations SET title = ?, updated_at = ? WHERE id = ?",
                             (title[:200], time.time(), conversation_id))
        if cur.rowcount == 0:
            raise ConversationNotFound(conversation_id)
        return self.get(conversation_id)

    def delete(self, conversation_id: str) -> None:
        with self._connect() as db:
            cur = db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
        if cur.rowcount == 0:
            raise ConversationNotFound(conversation_id)

    def append(self, conversation_id: str, role: str, content: str, *, task_id: str | None = None,
               model: str | None = None, meta: dict[str, Any] | None = None) -> StoredMessage:
        now = time.time()
        with self._connect() as db:
            cur = db.execute(
                "INSERT INTO messages(conversation_id, role, content, created_at, task_id, model, meta) "
                "VALUES (?,?,?,?,?,?,?)",
                (conversation_id, role, content, now, task_id, model, json.dumps(meta or {})))
            db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id))
            message_id = int(cur.lastrowid or 0)
        return StoredMessage(id=message_id, conversation_id=conversation_id, role=role, content=content,
                             created_at=now, task_id=task_id, model=model, meta=meta or {})

    def delete_message(self, message_id: int) -> None:
        """Remove one message (the question of a refused turn) and its pending memory
        outbox row, so the refused text is neither in the thread nor indexed later."""
        with self._connect() as db:
            db.execute("DELETE FROM memory_outbox WHERE op = 'index_turn' AND message_id = ?", (message_id,))
            db.execute("DELETE FROM messages WHERE id = ?", (message_id,))

    def messages(self, conversation_id: str, limit: int | None = None) -> list[StoredMessage]:
        """Messages oldest first; with `limit`, only the most recent ones."""
        if not self.exists(conversation_id):
            raise ConversationNotFound(conversation_id)
        sql = "SELECT * FROM messages WHERE conversation_id = ? ORDER BY id DESC"
        args: list[Any] = [conversation_id]
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._connect() as db:
            rows = db.execute(sql, args).fetchall()
        out = []
        for row in reversed(rows):
            data = dict(row)
            data["meta"] = json.loads(data["meta"] or "{}")
            out.append(StoredMessage(**data))
        return out

    # --- memory outbox (issue 4; drained by core_agent/orchestration/memory_client.py) ---------------

    def memory_outbox(self, limit: int = 64) -> list[MemoryOutboxItem]:
        """The oldest pending memory operations, in the order they happened."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT o.id, o.op, o.conversation_id, o.message_id, o.created_at, o.attempts, "
                "m.role, m.content, COALESCE(c.title, '') AS conversation_title, "
                "COALESCE(c.namespace, 'owner') AS namespace "
                "FROM memory_outbox o LEFT JOIN messages m ON m.id = o.message_id "
                "LEFT JOIN conversations c ON c.id = o.conversation_id ORDER BY o.id LIMIT ?",
                (limit,)).fetchall()
        return [MemoryOutboxItem(**dict(r)) for r in rows]

    def memory_outbox_done(self, ids: list[int]) -> None:
        with self._connect() as db:
            db.executemany("DELETE FROM memory_outbox WHERE id = ?", [(i,) for i in ids])

    def memory_outbox_failed(self, ids: list[int], error: str) -> None:
        with self._connect() as db:
            db.executemany("UPDATE memory_outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                           [(error[:1000], i) for i in ids])

    def memory_outbox_count(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM memory_outbox").fetchone()[0])

    def memory_outbox_requeue_all_turns(self) -> int:
        """Queue every stored turn for indexing again (after the turns index was rebuilt)."""
        with self._connect() as db:
            db.execute("DELETE FROM memory_outbox WHERE op = 'index_turn'")
            cur = db.execute("INSERT INTO memory_outbox(op, message_id, conversation_id, created_at) "
                             "SELECT 'index_turn', id, conversation_id, created_at FROM messages ORDER BY id")
            return cur.rowcount

    def recent_message_ids(self, conversation_id: str, limit: int) -> list[int]:
        """Ids of the newest `limit` messages of a conversation (none if it does not exist)."""
        with self._connect() as db:
            rows = db.execute("SELECT id FROM messages WHERE conversation_id = ? ORDER BY id DESC LIMIT ?",
                              (conversation_id, limit)).fetchall()
        return [int(r[0]) for r in rows]
