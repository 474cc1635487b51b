"""Schema of configs/traffic.yaml: per-request memory control and interactive-first lanes.

Kept apart from configs/schema.py (which holds one `traffic:` field pointing here).
Every chat turn belongs to one request class; the class picks the turn's memory default
and whether its answer runs in the interactive lane (queue `chat`) or the background
lane (`background_queue`). docs/architecture.md explains the design and the measurement.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# on: read memory (recall + stored history) and store the turn; read: read, store nothing;
# off: neither (the turn leaves no conversation, no memory entry).
MemoryMode = Literal["on", "read", "off"]
MEMORY_MODES: tuple[MemoryMode, ...] = ("on", "read", "off")
# owner: the owner's API calls; ui: the Streamlit UI (X-Appliance-Client: ui);
# webhook: POST /webhooks/<name>; chore: a client's background chore recognised by
# `chore_patterns` (Open WebUI titles/tags/follow-ups); background: an owner request
# that asked for the background lane (X-Appliance-Priority: background / "priority").
RequestClass = Literal["owner", "ui", "webhook", "chore", "background"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _default_memory() -> dict[RequestClass, MemoryMode]:
    return {"owner": "on", "ui": "on", "webhook": "on", "chore": "off", "background": "on"}


class BackgroundWorkerConfig(_Strict):
    """The worker that serves the background lane (started by `appliance up`)."""

    enabled: bool = True
    concurrency: int = Field(default=1, ge=1, le=64)
    pool: Literal["prefork", "threads", "solo"] = "prefork"
    # CPU niceness of the background worker: on a CPU-only machine the owner's chat
    # keeps the cores while background work runs (0 = same priority, 19 = lowest).
    nice: int = Field(default=15, ge=0, le=19)


class TrafficConfig(_Strict):
    # Memory mode per request class when the request does not say (body `memory`,
    # header X-Appliance-Memory).
    memory_defaults: dict[RequestClass, MemoryMode] = Field(default_factory=_default_memory)
    # Request classes whose answers go to the background lane.
    background_classes: list[RequestClass] = Field(default_factory=lambda: ["webhook", "chore", "background"])
    # Case-sensitive regexes searched in the last user message; a match makes the
    # request a chore. Open WebUI's task templates (title, tags, follow-ups, queries,
    # autocomplete, emoji) all begin with "### Task:".
    chore_patterns: list[str] = Field(default_factory=lambda: [r"^\s*### Task:"])
    # Queue of the background lane; "chat" puts background answers on the interactive
    # queue (no separate lane: use where the chat worker batches, e.g. vLLM with many slots).
    background_queue: Literal["chat", "chat_bg"] = "chat_bg"
    background_worker: BackgroundWorkerConfig = Field(default_factory=BackgroundWorkerConfig)

    @field_validator("chore_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"chore pattern {pattern!r} is not a valid regex: {exc}") from None
        return patterns

    @field_validator("memory_defaults")
    @classmethod
    def _every_class(cls, defaults: dict[RequestClass, MemoryMode]) -> dict[RequestClass, MemoryMode]:
        # A partial mapping in YAML keeps the built-in defaults for the classes it omits.
        return {**_default_memory(), **defaults}
