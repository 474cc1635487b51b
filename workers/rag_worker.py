"""The `rag` queue: the only process that opens the memory index.

A Qdrant Edge shard is held by one process (a file lock), so every read and write
of the memory (search, ingest, forget, index turns, the backup copy) runs here, in
one pool process (concurrency 1). On first open an old qdrant-client local-mode
folder is migrated into Edge (rag/migration.py, progress in this worker's log). The embedding model is loaded in this process too, so a
search costs one queue hop, not two (reasons in docs/memory.md).
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from typing import Any

from celery.signals import celeryd_after_setup, worker_process_init, worker_process_shutdown

from configs.contracts.memory import (
    RAG_FORGET_CONVERSATIONS,
    RAG_COPY_INDEX,
    RAG_INDEX_TURNS,
    RAG_INGEST,
    RAG_LIST_DOCUMENTS,
    RAG_REINDEX_DOCUMENTS,
    RAG_REMOVE_DOCUMENT,
    RAG_RESET_TURNS,
    RAG_SEARCH,
    RAG_STATUS,
    ForgetConversationsRequest,
    IndexTurnsRequest,
    IngestReport,
    IngestRequest,
    FileFailure,
    RemoveRequest,
    SearchRequest,
)
from rag.service import MemoryService
from rag.store import StoreError
from rag.store_edge import EdgeStore
from configs.contracts.errors import BackendError
from workers.backends.registry import embedding_backend
from workers.celery_app import app
from workers.runtime import settings
from workers.task_outcome import run_task

log = logging.getLogger("appliance.worker.rag")
_serves_rag = False
_service: MemoryService | None = None
_lock = threading.Lock()
KNOWN = (StoreError,)


@celeryd_after_setup.connect
def _note_queues(sender: str, instance, **_: object) -> None:
    # Every worker imports every task module; only the one consuming "rag" opens Qdrant.
    global _serves_rag
    queues = instance.app.amqp.queues
    _serves_rag = "rag" in (queues.consume_from or queues)  # no -Q: the worker consumes every queue


def service() -> MemoryService:
    """The process-wide memory service, opened on first use (after fork)."""
    global _service
    with _lock:
        if _service is None:
            s = settings()
            _service = MemoryService(s, embedding_backend(s, s.memory.embedding_model))
        return _service


def close_service() -> None:
    global _service
    with _lock:
        if _service is not None:
            _service.close()
            _service = None


@worker_process_init.connect
def _open_memory(**_: object) -> None:
    if not _serves_rag:
        return
    try:
        status = service().status()
        log.info("memory ready: %s", status.model_dump())
    except (BackendError, StoreError) as exc:
        # Not fatal: each task reports the same message until the cause is fixed.
        log.error("memory not ready: %s", exc)


@worker_process_shutdown.connect
def _close_memory(**_: object) -> None:
    close_service()  # releases the local-mode folder lock for the next process


def _decoded(request: IngestRequest) -> tuple[list[tuple[str, bytes]], list[FileFailure]]:
    files, bad = [], []
    for item in request.files:
        try:
            files.append((item.source, base64.b64decode(item.content_b64, validate=True)))
        except (binascii.Error, ValueError):
            bad.append(FileFailure(source=item.source, reason="upload was not valid base64"))
    return files, bad


def ingest(request: IngestRequest) -> IngestReport:
    files, bad = _decoded(request)
    report = service().ingest(files)
    report.failed = bad + report.failed
    return report


@app.task(name=RAG_SEARCH, bind=True, max_retries=1)
def search(self, payload: dict) -> dict:
    return run_task(self, lambda: service().search(SearchRequest.model_validate(payload)), KNOWN)


@app.task(name=RAG_INGEST, bind=True, max_retries=2)
def ingest_files(self, payload: dict) -> dict:
    return run_task(self, lambda: ingest(IngestRequest.model_validate(payload)), KNOWN)


@app.task(name=RAG_REMOVE_DOCUMENT, bind=True)
def remove_documents(self, payload: dict) -> dict:
    return run_task(self, lambda: service().remove(RemoveRequest.model_validate(payload).sources), KNOWN)


@app.task(name=RAG_LIST_DOCUMENTS, bind=True)
def list_documents(self, payload: dict) -> dict:
    def body() -> list[dict[str, Any]]:
        return [d.model_dump() for d in service().list_documents(payload.get("prefix"))]
    return run_task(self, body, KNOWN)


@app.task(name=RAG_INDEX_TURNS, bind=True, max_retries=2)
def index_turns(self, payload: dict) -> dict:
    return run_task(self, lambda: service().index_turns(IndexTurnsRequest.model_validate(payload).turns), KNOWN)


@app.task(name=RAG_FORGET_CONVERSATIONS, bind=True)
def forget_conversations(self, payload: dict) -> dict:
    request = ForgetConversationsRequest.model_validate(payload)
    return run_task(self, lambda: service().forget_conversations(request.conversation_ids), KNOWN)


@app.task(name=RAG_RESET_TURNS, bind=True)
def reset_turns(self, payload: dict) -> dict:
    return run_task(self, lambda: service().reset_turns(), KNOWN)


@app.task(name=RAG_REINDEX_DOCUMENTS, bind=True)
def reindex_documents(self, payload: dict) -> dict:
    return run_task(self, lambda: {"chunks": service().reindex_documents()}, KNOWN)


@app.task(name=RAG_STATUS, bind=True)
def status(self, payload: dict) -> dict:
    return run_task(self, lambda: service().status(), KNOWN)


def copy_index(target: str) -> dict[str, Any]:
    from pathlib import Path

    from rag.index_copy import copy_open_store

    store = service().store
    if not isinstance(store, EdgeStore):
        raise StoreError(f"the memory index is on {store.location}, not in-process: nothing to copy "
                         f"(after a restore run `appliance memory reindex`)")
    return {"copied": copy_open_store(store, Path(target))}


@app.task(name=RAG_COPY_INDEX, bind=True)
def copy_index_task(self, payload: dict) -> dict:
    return run_task(self, lambda: copy_index(str(payload["target"])), KNOWN)
