"""A chat backend that makes up tokens at a fixed rate, without a model (bench/test only).

It stands in for a GPU-speed model server so the pipeline's own ceiling (API, Redis,
Celery, worker, SSE) can be measured on a CPU machine: on the owner's card a stream
decodes ~150-200 tokens/s, far faster than any model runs here. configs/schema.py
refuses it unless `allow_synthetic_backends` is set, so it never answers the owner.

Tokens follow a fixed schedule (token i at start + i / rate), like a GPU that does not
wait for its reader: if the pipeline falls behind, the lag shows at the client instead
of slowing the source. The text is deterministic (`synthetic_tokens`), so a test can
compare what a client received with what was emitted, character for character.
"""

from __future__ import annotations

import time
from typing import Iterator

from configs.schema import ChatModelConfig, Settings
from configs.contracts.tasks import ChatMessage, GenerationParams, Usage
from workers.backends.base import ChatDelta

# Mixed scripts and widths on purpose: coalescing must keep every character exact.
_WORDS = ("alpha", "бета", "gamma", "дельта", "ε", "zeta", "эта", "θ", "iota", "каппа")


def synthetic_token(i: int) -> str:
    """The i-th token's text (0-based); every 16th ends a line."""
    return f"{_WORDS[i % len(_WORDS)]}{i}" + ("\n" if i % 16 == 15 else " ")


def synthetic_tokens(n: int) -> list[str]:
    return [synthetic_token(i) for i in range(n)]


class SyntheticRateChat:
    """ChatBackend emitting `max_tokens` made-up tokens at `synthetic_tokens_per_s`."""

    def __init__(self, model_name: str, config: ChatModelConfig, settings: Settings | None = None) -> None:
        self.model_name = model_name
        self.config = config

    def check(self) -> None:
        """Always ready: there is no model to load."""

    def stream(self, messages: list[ChatMessage], params: GenerationParams) -> Iterator[ChatDelta]:
        count = params.max_tokens or self.config.max_tokens
        interval = 1.0 / self.config.synthetic_tokens_per_s
        pause = self.config.synthetic_pause_after_first_s
        start = time.perf_counter()
        for i in range(count):
            due = start + i * interval + (pause if i > 0 else 0.0)
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            yield ChatDelta(text=synthetic_token(i))
        prompt = sum(len(m.text().split()) for m in messages)
        yield ChatDelta(finish_reason="length",
                        usage=Usage(prompt_tokens=prompt, completion_tokens=count))
