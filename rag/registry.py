"""The document registry: which documents are ingested, their hash, and their text.

SQLite in <data_dir>/memory/documents.sqlite3, owned by the rag worker. It is the
source of truth for documents as the conversation store is for turns: it keeps
each document's parsed sections, so `appliance memory reindex` rebuilds the
Qdrant index (e.g. for a new embedding model) without the original files, which
may have been uploaded from another machine.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from configs.contracts.memory import DocumentInfo
from configs.sqlite_file import SqliteFile
from rag.parsers import ParsedDocument, Section

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    source TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    chunk_count INTEGER NOT NULL,
    ingested_at REAL NOT NULL,
    duplicate_of TEXT,
    meta TEXT NOT NULL DEFAULT '{}',
    sections TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS documents_by_hash ON documents(content_hash);
"""


class DocumentRegistry(SqliteFile):
    def __init__(self, path: Path) -> None:
        super().__init__(path, SCHEMA)

    @staticmethod
    def _info(row: sqlite3.Row) -> DocumentInfo:
        return DocumentInfo(source=row["source"], title=row["title"], content_hash=row["content_hash"],
                            chunk_count=row["chunk_count"], ingested_at=row["ingested_at"],
                            duplicate_of=row["duplicate_of"], meta=json.loads(row["meta"] or "{}"))

    def get(self, source: str) -> DocumentInfo | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM documents WHERE source = ?", (source,)).fetchone()
        return self._info(row) if row else None

    def original_with_hash(self, content_hash: str, other_than: str) -> str | None:
        """An indexed (non-duplicate) document with this exact content, if any."""
        with self._connect() as db:
            row = db.execute("SELECT source FROM documents WHERE content_hash = ? AND source != ? "
                             "AND duplicate_of IS NULL LIMIT 1", (content_hash, other_than)).fetchone()
        return row["source"] if row else None

    def duplicates_of(self, source: str) -> list[str]:
        with self._connect() as db:
            rows = db.execute("SELECT source FROM documents WHERE duplicate_of = ? ORDER BY source",
                              (source,)).fetchall()
        return [r["source"] for r in rows]

    def put(self, source: str, document: ParsedDocument, content_hash: str, chunk_count: int,
            duplicate_of: str | None = None) -> None:
        sections = [{"heading_path": s.heading_path, "text": s.text} for s in document.sections]
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO documents(source, title, content_hash, chunk_count, ingested_at, "
                "duplicate_of, meta, sections) VALUES (?,?,?,?,?,?,?,?)",
                (source, document.title, content_hash, chunk_count, time.time(), duplicate_of,
                 json.dumps(document.meta, ensure_ascii=False), json.dumps(sections, ensure_ascii=False)))

    def promote(self, duplicate: str, chunk_count: int) -> None:
        """A duplicate becomes the indexed copy (its original was removed)."""
        with self._connect() as db:
            db.execute("UPDATE documents SET duplicate_of = NULL, chunk_count = ? WHERE source = ?",
                       (chunk_count, duplicate))

    def repoint_duplicates(self, old: str, new: str) -> None:
        with self._connect() as db:
            db.execute("UPDATE documents SET duplicate_of = ? WHERE duplicate_of = ? AND source != ?",
                       (new, old, new))

    def remove(self, source: str) -> bool:
        with self._connect() as db:
            return db.execute("DELETE FROM documents WHERE source = ?", (source,)).rowcount > 0

    def document(self, source: str) -> ParsedDocument | None:
        with self._connect() as db:
            row = db.execute("SELECT title, meta, sections FROM documents WHERE source = ?", (source,)).fetchone()
        if row is None:
            return None
        sections = [Section(**s) for s in json.loads(row["sections"])]
        return ParsedDocument(title=row["title"], sections=sections, meta=json.loads(row["meta"] or "{}"))

    def list(self, prefix: str | None = None) -> list[DocumentInfo]:
        sql, args = "SELECT * FROM documents", []  # type: tuple[str, list[Any]]
        if prefix:
            sql += " WHERE substr(source, 1, ?) = ?"
            args = [len(prefix), prefix]
        with self._connect() as db:
            return [self._info(r) for r in db.execute(sql + " ORDER BY source", args).fetchall()]

    def count(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM documents").fetchone()[0])
