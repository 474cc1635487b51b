"""The memory as the rag worker runs it: ingest, forget, index turns, search.

Composes the parts (parsers, chunking, embeddings, lexical vectors, Qdrant store,
document registry). It is plain Python with no Celery in it, so tests and
benchmarks use it directly; workers/rag_worker.py wraps it in tasks.

Write order for a document (nothing half-indexed): parse, chunk and embed first
(a bad file fails here with nothing written); then upsert the new points (ids
depend on the content hash, so old and new versions never collide); then delete
the old version's points; then record the new hash in the registry. A crash
between these steps leaves the registry at the old hash, so the next ingest of
that file redoes the work.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from configs.schema import EmbeddingModelConfig, FusionConfig, Settings
from rag.chunking import Chunk, TokenSpans, chunk_sections, model_token_spans, word_spans
from rag.fusion import Fused, dense_weight, fuse
from rag.lexical import LexicalEncoder, detect_language
from rag.lexical_bm25 import QdrantBm25Encoder
from rag.recall import select
from rag.parsers import ParsedDocument, ParseError, Section, parse_file
from configs.contracts.memory import (
    DocumentInfo,
    FileFailure,
    Hit,
    IndexTurnsResult,
    IngestReport,
    MemoryScopeFilter,
    MemoryStatus,
    RemoveReport,
    SearchRequest,
    SearchResult,
    TurnToIndex,
)
from rag.registry import DocumentRegistry
from rag.engines import open_store
from rag.store import (
    COLLECTION_KINDS,
    CollectionKind,
    EmbeddingSpec,
    MemoryStore,
    StoredPoint,
    Where,
    legacy_local_dir,
)

log = logging.getLogger("appliance.rag")

POINT_NAMESPACE = uuid.UUID("0b9f6c1e-4a43-4f0e-9b8e-6d1f3c2a7e55")
KIND_COLLECTION: dict[str, CollectionKind] = {"document": "documents", "conversation": "turns"}
Progress = Callable[[str], None]


class Embedder(Protocol):
    """What the memory needs from an embedding model. The rag worker passes in the
    workers' embedding backend; rag/ declares the shape instead of importing workers/."""

    model_name: str
    config: EmbeddingModelConfig

    @property
    def dimension(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> "EmbeddingVectors": ...


class EmbeddingVectors(Protocol):
    vectors: list[list[float]]


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Candidates:
    language: str
    dense: list[StoredPoint] = field(default_factory=list)
    lexical: list[StoredPoint] = field(default_factory=list)


NOTHING: dict = {"__nothing__": True}  # a kind the caller may not read at all: not searched


def scope_conditions(scope: MemoryScopeFilter | None) -> dict[CollectionKind, dict]:
    """The caller's scope as payload conditions per collection (store `where`), applied
    inside the query. Missing kind: unrestricted; NOTHING: skip that collection."""
    if scope is None:
        return {}
    out: dict[CollectionKind, dict] = {}
    if scope.namespaces is not None:
        out["turns"] = {"namespace": list(scope.namespaces)} if scope.namespaces else NOTHING
    if scope.document_tags is not None:
        out["documents"] = {"tags": list(scope.document_tags)} if scope.document_tags else NOTHING
    return out


def point_id(*parts: object) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, "\x00".join(str(p) for p in parts)))


class MemoryService:
    def __init__(self, settings: Settings, embedder: Embedder, store: MemoryStore | None = None,
                 registry: DocumentRegistry | None = None) -> None:
        self.settings = settings
        self.config = settings.memory
        self.embedder = embedder
        spec = EmbeddingSpec(model=embedder.model_name, dimension=embedder.dimension,
                             distance=embedder.config.distance)
        self.store = store or open_store(self.config, settings.data_dir, spec)
        if store is None:
            self._migrate_old_folder()
        self.registry = registry or DocumentRegistry(settings.memory_dir / "documents.sqlite3")
        # memory.lexical.encoder: ours (rag/lexical.py) or Qdrant's BM25, compared in docs/memory.md.
        self.lexical = (QdrantBm25Encoder(self.config.lexical) if self.config.lexical.encoder == "qdrant_bm25"
                        else LexicalEncoder(self.config.lexical))
        self._token_spans: TokenSpans | None = None

    def _migrate_old_folder(self, progress: Progress | None = None) -> None:
        """An old qdrant-client local-mode folder is copied into Edge once (rag/migration.py)."""
        if self.store.engine != "edge":
            return
        from rag.migration import migrate_local_folder

        migrate_local_folder(self.store, legacy_local_dir(self.config, self.settings.data_dir), progress)

    # --- shared ----------------------------------------------------------------

    def _embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        size = max(self.embedder.config.batch_size, 1) * 4
        for start in range(0, len(texts), size):
            vectors.extend(self.embedder.embed(texts[start:start + size]).vectors)
        return vectors

    @property
    def token_spans(self) -> TokenSpans:
        """The embedding model's own tokenizer (chunks are sized in the tokens it reads)."""
        if self._token_spans is None:
            self._token_spans = model_token_spans(self.embedder)
        return self._token_spans

    def _model_limit(self) -> int | None:
        """How many tokens the embedding model reads, when it runs here (None: unknown)."""
        limit = getattr(self.embedder, "max_input_tokens", None)
        return int(limit()) if callable(limit) and self.token_spans is not word_spans else None

    def _chunks(self, sections: list[Section], title: str = "") -> list[Chunk]:
        return chunk_sections(sections, self.config.chunk_tokens, self.config.chunk_overlap, self.token_spans,
                              model_limit=self._model_limit(), title=title)

    # --- documents -------------------------------------------------------------

    def ingest(self, files: Sequence[tuple[str, bytes]], progress: Progress | None = None) -> IngestReport:
        """Ingest each (source, bytes); bad files are reported and skipped, the rest go in."""
        report = IngestReport()
        started = time.perf_counter()
        for source, data in files:
            try:
                self._ingest_one(source, data, report)
            except ParseError as exc:
                report.failed.append(FileFailure(source=source, reason=str(exc)))
                log.warning("skipped %s: %s", source, exc)
            if progress:
                progress(source)
        report.seconds = time.perf_counter() - started
        return report

    def _ingest_one(self, source: str, data: bytes, report: IngestReport) -> None:
        if len(data) > self.config.max_file_bytes:
            raise ParseError(f"larger than memory.max_file_bytes ({self.config.max_file_bytes} bytes); "
                             f"split it or raise the limit in configs/memory.yaml")
        digest = content_hash(data)
        existing = self.registry.get(source)
        if existing and existing.content_hash == digest:
            report.unchanged.append(source)
            return
        document = parse_file(data, source)
        original = self.registry.original_with_hash(digest, other_than=source)
        if original is not None:
            # Same bytes as a document already indexed: remember it, index nothing twice.
            if existing:
                self._drop_points(source, existing)
            self.registry.put(source, document, digest, 0, duplicate_of=original)
            report.duplicates[source] = original
            return
        chunks = self._index_document(source, document, digest)
        if existing:
            self.store.delete("documents", {"source": source}, unless={"content_hash": digest})
            self._repoint_duplicates_after_change(source)
        self.registry.put(source, document, digest, len(chunks))
        (report.updated if existing else report.added).append(source)
        report.chunks += len(chunks)

    def _index_document(self, source: str, document: ParsedDocument, digest: str) -> list[Chunk]:
        chunks, seen = [], set()
        for chunk in self._chunks(document.sections, document.title):
            chunk_digest = hashlib.sha256(chunk.text.encode()).hexdigest()
            if chunk_digest not in seen:  # repeated boilerplate is stored once per document
                seen.add(chunk_digest)
                chunks.append(chunk)
        texts = [c.embedding_text(document.title) for c in chunks]
        vectors = self._embed(texts)
        now = time.time()
        tags = document.meta.get("tags") if isinstance(document.meta.get("tags"), list) else None
        payloads = [{
            "kind": "document", "source": source, "title": document.title, "chunk_index": i,
            "heading_path": c.heading_path, "content_hash": digest, "language": detect_language(c.text),
            "ingested_at": now, "text": c.text, "tokens": c.tokens, "tags": tags, "meta": document.meta,
        } for i, c in enumerate(chunks)]
        ids = [point_id("doc", source, digest, i) for i in range(len(chunks))]
        self.store.upsert("documents", ids, vectors, [self.lexical.document(t) for t in texts], payloads)
        return chunks

    def _repoint_duplicates_after_change(self, source: str) -> None:
        """Copies of the old content are no longer copies: the first becomes the indexed one."""
        duplicates = self.registry.duplicates_of(source)
        if not duplicates:
            return
        first = duplicates[0]
        document = self.registry.document(first)
        info = self.registry.get(first)
        if document is None or info is None:
            return
        chunks = self._index_document(first, document, info.content_hash)
        self.registry.promote(first, len(chunks))
        self.registry.repoint_duplicates(source, first)

    def _drop_points(self, source: str, info: DocumentInfo) -> None:
        if info.duplicate_of is not None:
            return
        duplicates = self.registry.duplicates_of(source)
        if duplicates:
            # Hand the indexed chunks to the first identical copy instead of re-embedding.
            first = duplicates[0]
            self.store.set_payload("documents", {"source": source}, {"source": first})
            self.registry.promote(first, info.chunk_count)
            self.registry.repoint_duplicates(source, first)
        else:
            self.store.delete("documents", {"source": source})

    def remove(self, sources: Sequence[str]) -> RemoveReport:
        report = RemoveReport()
        for source in sources:
            info = self.registry.get(source)
            if info is None:
                report.missing.append(source)
                continue
            self._drop_points(source, info)
            self.registry.remove(source)
            report.removed.append(source)
        return report

    def list_documents(self, prefix: str | None = None) -> list[DocumentInfo]:
        return self.registry.list(prefix)

    def reindex_documents(self, progress: Progress | None = None) -> int:
        """Rebuild the documents collection from the registry (new model, lost index)."""
        self.store.recreate("documents")
        total = 0
        for info in self.registry.list():
            document = self.registry.document(info.source)
            if info.duplicate_of is None and document is not None:
                total += len(self._index_document(info.source, document, info.content_hash))
            if progress:
                progress(info.source)
        self.store.optimize()  # a bulk load: build the indexes now, not on the next write
        return total

    # --- conversation turns ----------------------------------------------------

    def index_turns(self, turns: Sequence[TurnToIndex]) -> IndexTurnsResult:
        ids, texts, payloads, skipped = [], [], [], 0
        for turn in turns:
            if not turn.content.strip():
                skipped += 1
                continue
            for chunk in self._chunks([Section("", turn.content)]):
                ids.append(point_id("turn", turn.message_id, chunk.index))
                texts.append(chunk.text)
                payloads.append({
                    "kind": "conversation", "source": f"conversation:{turn.conversation_id}",
                    "title": turn.conversation_title, "conversation_id": turn.conversation_id,
                    "role": turn.role, "message_id": turn.message_id, "chunk_index": chunk.index,
                    "created_at": turn.created_at, "language": detect_language(chunk.text),
                    "text": chunk.text, "tokens": chunk.tokens, "namespace": turn.namespace,
                })
        if texts:
            vectors = self._embed(texts)
            self.store.upsert("turns", ids, vectors, [self.lexical.document(t) for t in texts], payloads)
        return IndexTurnsResult(indexed=len(turns) - skipped, skipped_empty=skipped)

    def forget_conversations(self, conversation_ids: Sequence[str]) -> None:
        self.store.delete("turns", {"conversation_id": list(conversation_ids)})

    def reset_turns(self) -> None:
        self.store.recreate("turns")

    # --- search ----------------------------------------------------------------

    def candidates(self, request: SearchRequest, where: Where | None = None) -> Candidates:
        """The dense and lexical candidate lists (best first) over the requested kinds.
        `where` is a payload filter applied inside the index on both engines
        ({field: value or [values]}); the request's scope (what the asking principal may
        read) adds its own conditions per collection, also inside the query."""
        scoped = scope_conditions(request.scope)
        kinds = [KIND_COLLECTION[k] for k in dict.fromkeys(request.kinds)
                 if scoped.get(KIND_COLLECTION[k]) is not NOTHING]
        exclude = {"message_id": request.exclude_message_ids} if request.exclude_message_ids else None
        limit = max(self.config.fusion.candidates, request.k)
        out = Candidates(language=detect_language(request.query))
        vector = self._embed([request.query])[0] if kinds and request.mode in ("hybrid", "dense") else None
        sparse = self.lexical.query(request.query) if kinds and request.mode in ("hybrid", "lexical") else None
        for kind in kinds:
            kind_where = {**(where or {}), **(scoped.get(kind) or {})} or None
            dense, lexical = self.store.search(kind, vector, sparse, limit, kind_where,
                                               exclude if kind == "turns" else None)
            out.dense += dense
            out.lexical += lexical
        # Scores of one model are comparable across the two collections: merge by score.
        out.dense = sorted(out.dense, key=lambda p: p.score, reverse=True)[:limit]
        out.lexical = sorted(out.lexical, key=lambda p: p.score, reverse=True)[:limit]
        return out

    def rank(self, found: Candidates, mode: str, fusion: FusionConfig | None = None) -> list[Fused]:
        fusion = fusion or self.config.fusion
        if mode == "dense":
            return fuse(found.dense, [], fusion, 1.0)
        if mode == "lexical":
            return fuse([], found.lexical, fusion, 0.0)
        weight = dense_weight(fusion, found.language, self.embedder.config.languages)
        return fuse(found.dense, found.lexical, fusion, weight)

    def search(self, request: SearchRequest, where: Where | None = None) -> SearchResult:
        started = time.perf_counter()
        ranked = self.rank(self.candidates(request, where), request.mode)
        hits = [self._hit(item.payload, item.score) for item in select(ranked, request.k, self.config.recall)]
        return SearchResult(hits=hits, mode=request.mode, seconds=time.perf_counter() - started)

    @staticmethod
    def _hit(payload: dict, score: float) -> Hit:
        return Hit(source=payload.get("source", "?"), score=round(score, 6), kind=payload.get("kind", "document"),
                   text=payload.get("text", ""), title=payload.get("title"),
                   chunk_index=payload.get("chunk_index"), heading_path=payload.get("heading_path") or None,
                   conversation_id=payload.get("conversation_id"), role=payload.get("role"),
                   message_id=payload.get("message_id"),
                   created_at=payload.get("created_at") or payload.get("ingested_at"),
                   language=payload.get("language"))

    def status(self) -> MemoryStatus:
        return MemoryStatus(backend=self.store.location, embedding_model=self.embedder.model_name,
                            dimension=self.store.spec.dimension,
                            collections={self.store.name(k): self.store.count(k) for k in COLLECTION_KINDS},
                            documents=self.registry.count())

    def close(self) -> None:
        self.store.close()
