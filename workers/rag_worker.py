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
from configs.contracts.tasks import TaskResult, value_result
from workers.backends.embeddings import use_torch_threads
from workers.backends.registry import embedding_backend
from workers.events import EventPublisher
from workers.published_task import published_task
from workers.runtime import settings

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
            use_torch_threads(s.embeddings.torch_threads)  # the query embedding is on every answer's path
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


def rag_task(name: str, max_retries: int = 0):
    """A memory task: its value travels in the TaskResult; StoreErrors reach the owner as
    they are (message, code, status)."""
    def decorate(body):
        def run(payload: dict[str, Any], publisher: EventPublisher) -> TaskResult:
            return value_result(body(payload), model="memory")
        run.__name__ = body.__name__
        return published_task(name, max_retries=max_retries, known=KNOWN)(run)
    return decorate


@rag_task(RAG_SEARCH, max_retries=1)
def search(payload: dict[str, Any]) -> Any:
    return service().search(SearchRequest.model_validate(payload))


@rag_task(RAG_INGEST, max_retries=2)
def ingest_files(payload: dict[str, Any]) -> Any:
    return ingest(IngestRequest.model_validate(payload))


@rag_task(RAG_REMOVE_DOCUMENT)
def remove_documents(payload: dict[str, Any]) -> Any:
    return service().remove(RemoveRequest.model_validate(payload).sources)


@rag_task(RAG_LIST_DOCUMENTS)
def list_documents(payload: dict[str, Any]) -> Any:
    return [d.model_dump() for d in service().list_documents(payload.get("prefix"))]


@rag_task(RAG_INDEX_TURNS, max_retries=2)
def index_turns(payload: dict[str, Any]) -> Any:
    return service().index_turns(IndexTurnsRequest.model_validate(payload).turns)


@rag_task(RAG_FORGET_CONVERSATIONS)
def forget_conversations(payload: dict[str, Any]) -> Any:
    return service().forget_conversations(ForgetConversationsRequest.model_validate(payload).conversation_ids)


@rag_task(RAG_RESET_TURNS)
def reset_turns(payload: dict[str, Any]) -> Any:
    return service().reset_turns()


@rag_task(RAG_REINDEX_DOCUMENTS)
def reindex_documents(payload: dict[str, Any]) -> Any:
    return {"chunks": service().reindex_documents()}


@rag_task(RAG_STATUS)
def status(payload: dict[str, Any]) -> Any:
    return service().status()


def copy_index(target: str) -> dict[str, Any]:
    """A consistent copy of the open Edge shards (backups while the stack runs)."""
    from pathlib import Path

    from rag.index_copy import copy_open_store

    store = service().store
    if not isinstance(store, EdgeStore):
        raise StoreError(f"the memory index is on {store.location}, not in-process: nothing to copy "
                         f"(after a restore run `appliance memory reindex`)")
    return {"copied": copy_open_store(store, Path(target))}


@rag_task(RAG_COPY_INDEX)
def copy_index_task(payload: dict[str, Any]) -> Any:
    return copy_index(str(payload["target"]))
