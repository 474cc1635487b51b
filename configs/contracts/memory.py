"""Payloads of the `embed.*` and `rag.*` tasks: the contract between core and workers.

Pure pydantic, no heavy imports: the API process imports this module to build task
payloads and read results (every task answers with a TaskResult carrying its value,
configs/contracts/tasks.py `value_result`); the workers import it to parse them. Neither side imports
the other's internals (the API never opens Qdrant or loads a model).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

EMBED_TEXTS = "embed.texts"
RAG_SEARCH = "rag.search"
RAG_INGEST = "rag.ingest"
RAG_REMOVE_DOCUMENT = "rag.remove_document"
RAG_LIST_DOCUMENTS = "rag.list_documents"
RAG_INDEX_TURNS = "rag.index_turns"
RAG_FORGET_CONVERSATIONS = "rag.forget_conversations"
RAG_RESET_TURNS = "rag.reset_turns"
RAG_REINDEX_DOCUMENTS = "rag.reindex_documents"
RAG_STATUS = "rag.status"
RAG_COPY_INDEX = "rag.copy_index"      # payload {"target": folder}: consistent copy of the Edge index

HitKind = Literal["document", "conversation"]
SearchMode = Literal["hybrid", "dense", "lexical"]


# --- embed -------------------------------------------------------------------

class EmbedRequest(BaseModel):
    texts: list[str] = Field(min_length=1)
    model: str | None = None


class EmbedResult(BaseModel):
    model: str
    dimension: int
    vectors: list[list[float]]
    prompt_tokens: int = 0


# --- search ------------------------------------------------------------------

class MemoryScopeFilter(BaseModel):
    """Which points a search may return, applied inside the store query (never after
    retrieval, so a top-k is never filled with points the caller may not see).

    Each field: None = no restriction on that kind; [] = nothing of that kind.
    - namespaces: turns whose payload "namespace" is one of these. Turns indexed
      before namespaces existed have no "namespace" and belong to the owner, who
      searches without a filter; a filter never matches them.
    - document_tags: document chunks whose payload "tags" (a list) shares at least
      one value with these; untagged documents match only document_tags=None.
    """

    namespaces: list[str] | None = None
    document_tags: list[str] | None = None


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=8000)
    k: int = Field(default=5, ge=1, le=100)
    kinds: list[HitKind] = Field(default_factory=lambda: ["document", "conversation"])
    mode: SearchMode = "hybrid"
    # Turns already in the prompt are not "memories": they are left out.
    exclude_message_ids: list[int] = Field(default_factory=list)
    # What the asking principal may read (None: everything, the owner).
    scope: MemoryScopeFilter | None = None


class Hit(BaseModel):
    source: str          # the path as ingested, or conversation:<id>
    score: float
    kind: HitKind
    text: str
    title: str | None = None
    chunk_index: int | None = None
    heading_path: str | None = None
    conversation_id: str | None = None
    role: str | None = None
    message_id: int | None = None
    created_at: float | None = None
    language: str | None = None


class SearchResult(BaseModel):
    hits: list[Hit]
    mode: SearchMode
    seconds: float = 0.0


# --- documents ---------------------------------------------------------------

class UploadedFile(BaseModel):
    source: str              # the name the owner knows the file by (path as ingested)
    content_b64: str


class IngestRequest(BaseModel):
    files: list[UploadedFile]


class FileFailure(BaseModel):
    source: str
    reason: str


class IngestReport(BaseModel):
    added: list[str] = Field(default_factory=list)
    updated: list[str] = Field(default_factory=list)
    unchanged: list[str] = Field(default_factory=list)
    duplicates: dict[str, str] = Field(default_factory=dict)   # source -> identical earlier source
    failed: list[FileFailure] = Field(default_factory=list)
    chunks: int = 0
    seconds: float = 0.0

    def merge(self, other: IngestReport) -> None:
        self.added += other.added
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.duplicates.update(other.duplicates)
        self.failed += other.failed
        self.chunks += other.chunks
        self.seconds += other.seconds


class DocumentInfo(BaseModel):
    source: str
    title: str
    content_hash: str
    chunk_count: int
    ingested_at: float
    duplicate_of: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


class RemoveRequest(BaseModel):
    sources: list[str] = Field(min_length=1)


class RemoveReport(BaseModel):
    removed: list[str] = Field(default_factory=list)
    missing: list[str] = Field(default_factory=list)


# --- conversation turns ------------------------------------------------------

class TurnToIndex(BaseModel):
    message_id: int
    conversation_id: str
    conversation_title: str = ""
    role: str
    content: str
    created_at: float
    namespace: str = "owner"     # whose conversation (core_agent/access/principal.py)


class IndexTurnsRequest(BaseModel):
    turns: list[TurnToIndex]


class IndexTurnsResult(BaseModel):
    indexed: int
    skipped_empty: int = 0


class ForgetConversationsRequest(BaseModel):
    conversation_ids: list[str] = Field(min_length=1)


class MemoryStatus(BaseModel):
    backend: str               # "local:<path>" or the server URL
    embedding_model: str
    dimension: int
    collections: dict[str, int]
    documents: int
