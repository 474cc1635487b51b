"""Send what arrived: answer pieces already queued behind the one being sent go out with
it, as one piece (one SSE chunk instead of several).

The worker already coalesces tokens into events (workers/token_coalescer.py); this
covers the API's side when it falls behind (one Redis read can hand over many events):
each chunk costs a pydantic model, a JSON dump and a pass through every ASGI
middleware's send wrapper, whatever its size. Text and reasoning never merge with each
other, and their order is kept.
"""

from __future__ import annotations

import asyncio
from typing import Any

# Answer text is str; reasoning is a frozen dataclass with a `text` field (chat_service.Thought).


def take_queued(queue: asyncio.Queue, item: Any) -> tuple[Any, list[Any]]:
    """`item` extended with the same-kind pieces already waiting in `queue`; also returns
    what was taken but could not be merged (a piece of the other kind, or the end marker
    None), to be handled next, in order."""
    while not queue.empty():
        nxt = queue.get_nowait()
        if isinstance(item, str) and isinstance(nxt, str):
            item += nxt
        elif nxt is not None and not isinstance(item, str) and not isinstance(nxt, str) \
                and type(nxt) is type(item):
            item = type(item)(item.text + nxt.text)
        else:
            return item, [nxt]
    return item, []
