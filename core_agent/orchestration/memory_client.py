"""The core's side of the memory: retrieve context before an answer, drain the outbox.

Contract for the chat path (core_agent/orchestration/chat_service.py calls these; nothing here
opens Qdrant or loads a model: every memory operation is a task on the `rag` queue):

    from core_agent.orchestration import memory_client as memory
    ctx = await memory.retrieve_context(state, user_text, conversation_id=cid)
    prompt = with_recalled(prompt, ctx.messages)   # zero or one system message, before the question (prompt_layout.py)
    ... answer ...
    result sources: [s.model_dump() for s in ctx.sources]
    memory.index_pending(state)           # optional nudge after storing turns

- `retrieve_context(state, query, conversation_id=None, exclude_recent=None)` ->
  MemoryContext(messages, sources, error). It searches documents and past turns
  (hybrid), leaves out the newest `exclude_recent` turns of `conversation_id`
  (default: settings.history_messages, i.e. what the prompt already holds), and
  fits the hits into memory.context_budget_tokens. It never raises: when the rag
  worker or the model is down it returns no messages and `error` says why, so the
  answer goes on without memory.
- `index_pending(state)` wakes the outbox drainer; it returns at once. The drainer
  (one asyncio task per API process, started on first use) sends pending outbox
  rows of the conversation store to the rag worker in order, marks them done only
  when the index confirmed them, and retries with backoff while the worker or the
  embedding model is down: turns wait, none is lost.
- `memory_for(state)` gives the MemoryClient behind both (also used by the
  /memory and /documents routes).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from celery import Celery
from pydantic import BaseModel

from configs.schema import Settings
from core_agent.orchestration.dispatcher import DispatchError, Dispatcher, TaskFailed
from core_agent.stores.conversations import ConversationStore, MemoryOutboxItem
from rag.chunking import count_tokens, truncate_tokens
from configs.contracts.memory import (
    RAG_FORGET_CONVERSATIONS,
    RAG_INDEX_TURNS,
    RAG_SEARCH,
    Hit,
    MemoryScopeFilter,
    SearchRequest,
    SearchResult,
    TurnToIndex,
)
from configs.contracts.tasks import ChatMessage, result_value
from configs.contracts.errors import ErrorInfo

log = logging.getLogger("appliance.memory")

CONTEXT_HEADER = ("Memory: passages from the owner's documents and past conversations that may be relevant "
                  "to the next message. Use them only if they help, and name the source in brackets, e.g. [1].")
MIN_PASSAGE_TOKENS = 24


class MemoryUnavailable(Exception):
    """`ran`: a worker ran the task and it failed (sending it again may help); otherwise
    nobody ran it, or it did not finish in time (it may still run)."""

    def __init__(self, info: ErrorInfo, ran: bool = False) -> None:
        super().__init__(info.message)
        self.info = info
        self.ran = ran


class MemorySource(BaseModel):
    """One memory used for an answer, as returned to the client."""

    n: int
    source: str
    kind: str
    score: float
    title: str | None = None
    heading_path: str | None = None
    conversation_id: str | None = None
    message_id: int | None = None
    chunk_index: int | None = None


@dataclass
class MemoryContext:
    messages: list[ChatMessage] = field(default_factory=list)
    sources: list[MemorySource] = field(default_factory=list)
    error: str | None = None


def _label(hit: Hit) -> str:
    if hit.kind == "conversation":
        when = time.strftime("%Y-%m-%d", time.localtime(hit.created_at)) if hit.created_at else "?"
        return f"conversation {hit.conversation_id} ({hit.role}, {when})"
    return " > ".join(p for p in (hit.source, hit.heading_path) if p)


def fit_context(hits: list[Hit], budget_tokens: int) -> MemoryContext:
    """Add hits best first until the token budget is spent (the last one may be cut)."""
    remaining = budget_tokens - count_tokens(CONTEXT_HEADER)
    parts: list[str] = []
    sources: list[MemorySource] = []
    for hit in hits:
        head = f"[{len(sources) + 1}] {_label(hit)}"
        room = remaining - count_tokens(head)
        if room < MIN_PASSAGE_TOKENS:
            break
        text = truncate_tokens(hit.text, room)
        parts.append(f"{head}\n{text}")
        remaining -= count_tokens(head) + count_tokens(text)
        sources.append(MemorySource(n=len(sources) + 1, source=hit.source, kind=hit.kind, score=hit.score,
                                    title=hit.title, heading_path=hit.heading_path,
                                    conversation_id=hit.conversation_id, message_id=hit.message_id,
                                    chunk_index=hit.chunk_index))
    if not parts:
        return MemoryContext()
    content = CONTEXT_HEADER + "\n\n" + "\n\n".join(parts)
    return MemoryContext(messages=[ChatMessage(role="system", content=content)], sources=sources)


class MemoryClient:
    def __init__(self, settings: Settings, store: ConversationStore, celery: Celery,
                 redis: aioredis.Redis) -> None:
        self.settings = settings
        self.config = settings.memory
        self.store = store
        self.celery = celery
        self.redis = redis
        self.dispatcher = Dispatcher(settings, celery, redis)
        self._wake = asyncio.Event()
        self._drainer: asyncio.Task | None = None
        self._inflight: dict[tuple[int, ...], str] = {}   # outbox ids -> task id already sent
        self._backoff_s = 0.0

    # --- tasks: sent and awaited through the dispatcher, like every other task ---------

    async def send(self, task_name: str, payload: dict[str, Any], expires_s: float | None = None) -> str:
        return await self.dispatcher.submit(task_name, payload, expires_s=expires_s)

    async def wait(self, task_id: str, timeout_s: float, queue: str = "rag") -> Any:
        """The task's value; MemoryUnavailable if it failed or nobody ran it in time."""
        try:
            result = await self.dispatcher.wait(task_id, queue, timeout_s)
        except TaskFailed as exc:
            raise MemoryUnavailable(exc.info, ran=True) from None
        except DispatchError as exc:
            raise MemoryUnavailable(exc.info) from None
        return result_value(result)

    async def call(self, task_name: str, payload: dict[str, Any], timeout_s: float,
                   expires: bool = False) -> Any:
        """Send a task and wait for its result. `expires`: drop it if not started in time
        (a search nobody waits for any more is useless work)."""
        queue = task_name.split(".", 1)[0]
        task_id = await self.send(task_name, payload, expires_s=timeout_s if expires else None)
        return await self.wait(task_id, timeout_s, queue)

    # --- search and context ------------------------------------------------------

    async def search(self, request: SearchRequest, timeout_s: float | None = None) -> SearchResult:
        result = await self.call(RAG_SEARCH, request.model_dump(), timeout_s or self.config.search_timeout_s,
                                 expires=True)
        return SearchResult.model_validate(result)

    async def retrieve_context(self, query: str, conversation_id: str | None = None,
                               exclude_recent: int | None = None,
                               scope: MemoryScopeFilter | None = None) -> MemoryContext:
        """`scope`: what the asking principal may read (None: everything, the owner)."""
        self.ensure_drainer()
        if not self.config.enabled or self.config.context_top_k == 0 or self.config.context_budget_tokens <= 0:
            return MemoryContext()
        exclude: list[int] = []
        if conversation_id:
            recent = self.settings.history_messages if exclude_recent is None else exclude_recent
            exclude = await asyncio.to_thread(self.store.recent_message_ids, conversation_id, recent + 1)
        request = SearchRequest(query=query[:8000] or " ", k=self.config.context_top_k,
                                exclude_message_ids=exclude, scope=scope)
        try:
            result = await self.search(request)
        except MemoryUnavailable as exc:
            log.warning("answering without memory: %s", exc)
            return MemoryContext(error=str(exc))
        return fit_context(result.hits, self.config.context_budget_tokens)

    # --- outbox ----------------------------------------------------------------

    def kick(self) -> None:
        self.ensure_drainer()
        self._wake.set()

    def ensure_drainer(self) -> None:
        """Start the background drainer on the running loop (idempotent)."""
        if not self.config.enabled or (self._drainer is not None and not self._drainer.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._drainer = loop.create_task(self._drain_forever(), name="memory-outbox-drainer")

    async def stop(self) -> None:
        if self._drainer is not None:
            self._drainer.cancel()
            try:
                await self._drainer
            except (asyncio.CancelledError, Exception):
                pass
            self._drainer = None

    async def _drain_forever(self) -> None:
        while True:
            try:
                while await self.index_pending() > 0:
                    pass
                self._backoff_s = 0.0
            except MemoryUnavailable as exc:
                self._backoff_s = min(max(self._backoff_s * 2, self.config.outbox_poll_s), 60.0)
                log.warning("memory outbox waits (%s); retry in %.0fs", exc, self._backoff_s)
            except Exception:  # never let the drainer die: it is the only one
                log.exception("memory outbox drain failed")
                self._backoff_s = 10.0
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._backoff_s or self.config.outbox_poll_s)
            except asyncio.TimeoutError:
                pass

    async def index_pending(self) -> int:
        """Send the oldest run of same-kind outbox rows to the rag worker; mark them done
        once indexed. Returns how many rows were completed (0: nothing pending)."""
        items = await asyncio.to_thread(self.store.memory_outbox, self.config.outbox_batch)
        if not items:
            return 0
        group: list[MemoryOutboxItem] = []
        for item in items:  # order matters: a forget must not overtake the turns before it
            if group and item.op != group[0].op:
                break
            group.append(item)
        waiting = set(next(iter(self._inflight), ()))
        if waiting and waiting <= {i.id for i in group}:
            # A task for the first rows is already queued (worker was down): wait for that
            # one instead of queueing the same turns again with the newer ones.
            group = [i for i in group if i.id in waiting]
        ids = [i.id for i in group]
        try:
            if group[0].op == "forget_conversation":
                payload = {"conversation_ids": sorted({i.conversation_id for i in group})}
                await self._run_once(tuple(ids), RAG_FORGET_CONVERSATIONS, payload)
            else:
                turns = [TurnToIndex(message_id=i.message_id or 0, conversation_id=i.conversation_id,
                                     conversation_title=i.conversation_title, role=i.role or "user",
                                     content=i.content, created_at=i.created_at, namespace=i.namespace)
                         for i in group if i.content is not None]  # None: deleted before indexing
                if turns:
                    await self._run_once(tuple(ids), RAG_INDEX_TURNS,
                                         {"turns": [t.model_dump() for t in turns]})
        except MemoryUnavailable as exc:
            await asyncio.to_thread(self.store.memory_outbox_failed, ids, str(exc))
            raise
        await asyncio.to_thread(self.store.memory_outbox_done, ids)
        return len(ids)

    async def _run_once(self, key: tuple[int, ...], task_name: str, payload: dict[str, Any]) -> Any:
        """Send the task for these outbox rows unless it is already queued; wait for it.

        While the rag worker is down the task waits in Redis; later passes wait on the
        same task instead of queueing copies of it."""
        task_id = self._inflight.get(key)
        if task_id is None:
            task_id = await self.send(task_name, payload)
            self._inflight = {key: task_id}
        try:
            result = await self.wait(task_id, self.config.index_timeout_s)
        except MemoryUnavailable as exc:
            if exc.ran:
                self._inflight.pop(key, None)  # it ran and failed: send it again next time
            raise
        self._inflight.pop(key, None)
        return result


def memory_for(state: Any) -> MemoryClient:
    """The MemoryClient of this API process (kept on the AppState)."""
    client = getattr(state, "memory", None)
    if client is None:
        client = MemoryClient(state.settings, state.store, state.celery, state.redis)
        setattr(state, "memory", client)
    client.ensure_drainer()
    return client


async def retrieve_context(state: Any, query: str, conversation_id: str | None = None,
                           exclude_recent: int | None = None) -> MemoryContext:
    return await memory_for(state).retrieve_context(query, conversation_id, exclude_recent)


def index_pending(state: Any) -> None:
    memory_for(state).kick()
