"""Memory routes: search, documents (upload, list, remove), forgetting, reindex.

Every operation is a task on the `rag` queue (only the rag worker opens Qdrant);
these handlers validate, dispatch and translate errors into the usual shape.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import PurePosixPath
from typing import Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from core_agent.access.principal import Principal, ScopeDenied
from core_agent.api.deps import get_state, require_owner, require_principal
from core_agent.api.errors import error_response
from core_agent.stores.conversations import ConversationNotFound
from core_agent.orchestration.memory_client import MemoryClient, MemoryUnavailable, memory_for
from rag.archive_check import ArchiveRefused, check_zip
from configs.contracts.memory import (
    RAG_INGEST,
    RAG_LIST_DOCUMENTS,
    RAG_REINDEX_DOCUMENTS,
    RAG_REMOVE_DOCUMENT,
    RAG_RESET_TURNS,
    RAG_STATUS,
    DocumentInfo,
    HitKind,
    IngestReport,
    RemoveReport,
    SearchMode,
    SearchRequest,
    SearchResult,
    UploadedFile,
)

router = APIRouter(dependencies=[Depends(require_principal)], tags=["memory"])
# Everything but search changes or lists the whole memory: the owner's alone.
OWNER_ONLY = [Depends(require_owner)]


class SearchBody(BaseModel):
    query: str = Field(min_length=1, max_length=8000)
    k: int = Field(default=5, ge=1, le=100)
    kinds: list[HitKind] = Field(default_factory=lambda: ["document", "conversation"], min_length=1)
    mode: SearchMode = "hybrid"


class ReindexReport(BaseModel):
    document_chunks: int
    turns_queued: int


def _client(request: Request) -> MemoryClient:
    return memory_for(get_state(request))


def _failed(exc: MemoryUnavailable) -> JSONResponse:
    return error_response(exc.info.status, exc.info.message, exc.info.code)


def _long_timeout(request: Request) -> float:
    return float(get_state(request).settings.celery.task_time_limit_s)


@router.post("/memory/search", response_model=SearchResult)
async def search(body: SearchBody, request: Request, principal: Principal = Depends(require_principal)) -> Any:
    """Search what the principal may read: its scope becomes a filter inside the store query."""
    if not principal.reads_memory():
        raise ScopeDenied(principal, "memory.threads or memory.documents", "search memory")
    try:
        return await _client(request).search(SearchRequest(**body.model_dump(), scope=principal.memory_filter()))
    except MemoryUnavailable as exc:
        return _failed(exc)


@router.get("/memory/status", dependencies=OWNER_ONLY)
async def memory_status(request: Request) -> Any:
    client = _client(request)
    try:
        status = await client.call(RAG_STATUS, {}, client.config.search_timeout_s, expires=True)
    except MemoryUnavailable as exc:
        return _failed(exc)
    return {**status, "outbox_pending": await asyncio.to_thread(client.store.memory_outbox_count)}


@router.post("/memory/reindex", response_model=ReindexReport, dependencies=OWNER_ONLY)
async def reindex(request: Request) -> Any:
    """Rebuild both collections: documents from the registry, turns from the conversation store."""
    client = _client(request)
    timeout = _long_timeout(request)
    try:
        await client.call(RAG_RESET_TURNS, {}, timeout)
        queued = await asyncio.to_thread(client.store.memory_outbox_requeue_all_turns)
        result = await client.call(RAG_REINDEX_DOCUMENTS, {}, timeout)
    except MemoryUnavailable as exc:
        return _failed(exc)
    client.kick()
    return ReindexReport(document_chunks=int(result["chunks"]), turns_queued=queued)


@router.delete("/memory/conversations/{cid}", status_code=204, dependencies=OWNER_ONLY)
async def forget_conversation(cid: str, request: Request) -> Response:
    """Forget a conversation: deleted from the store now, from the index by the outbox."""
    client = _client(request)
    try:
        await asyncio.to_thread(client.store.delete, cid)
    except ConversationNotFound:
        return error_response(404, f"conversation '{cid}' does not exist", "not_found")
    client.kick()
    return Response(status_code=204)


def _source_name(upload: UploadFile, given: str | None) -> str:
    name = (given or upload.filename or "").strip()
    if not name:
        raise ValueError("every uploaded file needs a name (filename or a `sources` entry)")
    return str(PurePosixPath(name))


def _refuse_bomb(data: bytes, source: str) -> None:
    """A zip bomb is refused here (413), before the rag worker inflates anything; a merely
    damaged .docx goes on to the worker, which reports it in the batch like any bad file."""
    try:
        check_zip(data, source)
    except ArchiveRefused as exc:
        if exc.too_large:
            raise


@router.post("/documents", response_model=IngestReport, dependencies=OWNER_ONLY)
async def upload_documents(request: Request, files: list[UploadFile] = File(...),
                           sources: list[str] | None = Form(None)) -> Any:
    """Ingest uploaded files. `sources` (optional, one per file, same order) names each
    file as the owner knows it, e.g. its path on their machine; default: the filename."""
    if sources is not None and len(sources) != len(files):
        return error_response(400, f"got {len(files)} files but {len(sources)} sources; send one source per "
                                   f"file or none", "invalid_request")
    uploaded = []
    try:
        for i, upload in enumerate(files):
            data = await upload.read()
            source = _source_name(upload, sources[i] if sources else None)
            if source.lower().endswith(".docx"):
                _refuse_bomb(data, source)
            uploaded.append(UploadedFile(source=source, content_b64=base64.b64encode(data).decode()))
    except ArchiveRefused as exc:
        return error_response(413, f"nothing was ingested: {exc}", "archive_too_large")
    except ValueError as exc:
        return error_response(400, str(exc), "invalid_request")
    try:
        return await _client(request).call(RAG_INGEST, {"files": [u.model_dump() for u in uploaded]},
                                           _long_timeout(request))
    except MemoryUnavailable as exc:
        return _failed(exc)


@router.get("/documents", response_model=list[DocumentInfo], dependencies=OWNER_ONLY)
async def list_documents(request: Request, prefix: str | None = None) -> Any:
    client = _client(request)
    try:
        return await client.call(RAG_LIST_DOCUMENTS, {"prefix": prefix}, client.config.search_timeout_s,
                                 expires=True)
    except MemoryUnavailable as exc:
        return _failed(exc)


@router.delete("/documents", response_model=RemoveReport, dependencies=OWNER_ONLY)
async def remove_documents(request: Request, source: list[str] = Query(..., min_length=1)) -> Any:
    """Forget documents (by source, repeatable): removed from the index and the registry."""
    try:
        report = RemoveReport.model_validate(
            await _client(request).call(RAG_REMOVE_DOCUMENT, {"sources": source}, _long_timeout(request)))
    except MemoryUnavailable as exc:
        return _failed(exc)
    if not report.removed:
        return error_response(404, f"no such document: {', '.join(report.missing)} (see GET /documents)",
                              "not_found")
    return report
