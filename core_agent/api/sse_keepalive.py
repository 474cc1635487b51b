"""Keep an SSE stream talking while its answer waits behind busy workers.

A streamed chat whose answer has not been picked up within celery.pickup_timeout_s
while workers serving its queue are alive (all busy) opens its stream early (ChatRun.
first_piece) and waits in the queue, up to celery.queue_wait_timeout_s. Meanwhile this
wrapper sends an SSE comment line (`: ...`) whenever the stream has been quiet for
KEEPALIVE_S: proxies and load balancers that cut idle connections (often at 60 s) keep
it open, and a client reading the raw stream sees that it is queued. Comment lines are
part of the SSE format and ignored by SSE parsers, the official `openai` client's
included (tests/test_queue_wait.py streams through it).

A client that leaves while its answer still waits in the queue cancels the turn (the
queued task is revoked: no worker spends a generation on an answer nobody reads),
streaming or not (`result_unless_gone` asks the connection every DISCONNECT_POLL_S while
the answer is queued). Once a worker runs it, leaving does not stop it: the answer is
finished and stored, as before.
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Awaitable, Callable

from fastapi.responses import StreamingResponse

from configs.contracts.tasks import TaskResult
from core_agent.api.request_options import run_headers
from core_agent.orchestration.chat_service import ChatRun

KEEPALIVE_S = 10.0
DISCONNECT_POLL_S = 1.0
QUEUE_NOTE = "queued: the workers are busy with earlier requests"

log = logging.getLogger("appliance.api.sse")


# Cancellations started by a leaving client; kept so they are not garbage-collected mid-way.
_cancelling: set[asyncio.Task] = set()


def turn_stream_response(stream: AsyncIterator[str], run: ChatRun,
                         cancel: Callable[[str], Awaitable[bool]]) -> StreamingResponse:
    """The SSE response of a streamed turn (chat completions, Responses): kept alive while
    queued, with the turn's headers."""
    return StreamingResponse(with_keepalive(stream, run, cancel), media_type="text/event-stream",
                             headers={**run_headers(run), "Cache-Control": "no-cache"})


async def with_keepalive(stream: AsyncIterator[str], run: ChatRun, cancel: Callable[[str], Awaitable[bool]],
                         keepalive_s: float = KEEPALIVE_S, queue_note: str = QUEUE_NOTE) -> AsyncIterator[str]:
    """`stream` with a comment line after every `keepalive_s` of silence while `run` is
    queued; `cancel(task_id)` is called if the client leaves while it is still queued."""
    it = stream.__aiter__()
    ended = False
    pending: asyncio.Future | None = None
    try:
        if run.queued.is_set():
            yield f": {queue_note}\n\n"
        while True:
            pending = pending or asyncio.ensure_future(it.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=keepalive_s)
            if not done:
                if run.queued.is_set():
                    yield f": {queue_note}\n\n"
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                ended = True
                return
            pending = None
            yield item
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
        if not ended and run.queued.is_set():
            # No await here: the client is gone and this generator may be closing under
            # cancellation; the cancel runs on its own.
            log.info("task %s: the client left while its answer was queued; cancelling it", run.task_id)
            job = asyncio.ensure_future(cancel(run.task_id))
            _cancelling.add(job)
            job.add_done_callback(_cancelling.discard)


async def result_unless_gone(run: ChatRun, is_disconnected: Callable[[], Awaitable[bool]],
                             cancel: Callable[[str], Awaitable[bool]]) -> TaskResult:
    """`run.result()` for a non-streaming request; a client that leaves while the answer
    is still queued cancels the turn (the result then raises ChatFailed `cancelled`)."""
    outcome = asyncio.ensure_future(run.result())
    try:
        while True:
            done, _ = await asyncio.wait({outcome}, timeout=DISCONNECT_POLL_S)
            if done:
                return outcome.result()
            if run.queued.is_set() and await is_disconnected():
                log.info("task %s: the client left while its answer was queued; cancelling it", run.task_id)
                await cancel(run.task_id)
    finally:
        if not outcome.done():
            outcome.cancel()
