"""Which request class a chat turn belongs to, and what that means for it: whether it
reads and stores memory, and whether it answers in the interactive or background lane.

The HTTP layer passes what the request said (body `memory`/`priority`, headers
X-Appliance-Memory / X-Appliance-Priority / X-Appliance-Client); ChatService fills in
the rest from configs/traffic.yaml. An explicit choice by the request always wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from configs.contracts.tasks import ChatMessage
from configs.traffic_schema import MEMORY_MODES, MemoryMode, RequestClass, TrafficConfig

MEMORY_HEADER = "X-Appliance-Memory"
PRIORITY_HEADER = "X-Appliance-Priority"
CLIENT_HEADER = "X-Appliance-Client"
INTERACTIVE_QUEUE = "chat"
Priority = Literal["interactive", "background"]


class BadTrafficOption(ValueError):
    """A memory or priority value the appliance does not know (the message names it)."""


@dataclass(frozen=True)
class TurnPolicy:
    request_class: RequestClass
    memory: MemoryMode
    queue: str

    @property
    def reads_memory(self) -> bool:
        return self.memory != "off"

    @property
    def stores_turn(self) -> bool:
        return self.memory == "on"


def parse_memory(body_value: str | None, header_value: str | None) -> MemoryMode | None:
    """The memory mode the request asked for (body wins over header), or None."""
    for where, value in (("memory", body_value), (MEMORY_HEADER, header_value)):
        if value is None or value == "":
            continue
        mode = value.strip().lower()
        if mode not in MEMORY_MODES:
            raise BadTrafficOption(f"{where} must be one of {', '.join(MEMORY_MODES)} (got {value[:40]!r})")
        return mode  # type: ignore[return-value]
    return None


def parse_priority(body_value: str | None, header_value: str | None) -> Priority | None:
    for where, value in (("priority", body_value), (PRIORITY_HEADER, header_value)):
        if value is None or value == "":
            continue
        priority = value.strip().lower()
        if priority not in ("interactive", "background"):
            raise BadTrafficOption(f"{where} must be 'interactive' or 'background' (got {value[:40]!r})")
        return priority  # type: ignore[return-value]
    return None


@lru_cache(maxsize=32)
def _compiled(patterns: tuple[str, ...]) -> list[re.Pattern[str]]:
    return [re.compile(p) for p in patterns]


def is_chore(messages: list[ChatMessage], patterns: list[str]) -> bool:
    """True when the last user message matches a chore pattern (Open WebUI's task prompts)."""
    question = next((m.text() for m in reversed(messages) if m.role == "user"), "")
    return any(p.search(question) for p in _compiled(tuple(patterns)))


def classify(source: str, client: str | None, priority: Priority | None, messages: list[ChatMessage],
             cfg: TrafficConfig) -> RequestClass:
    """The request class: webhook by source; then an explicit priority; then chores by
    their prompt; then the UI by its client header; otherwise the owner's API."""
    if source.startswith("webhook:"):
        return "webhook"
    if priority == "background":
        return "background"
    if priority is None and is_chore(messages, cfg.chore_patterns):
        return "chore"
    if (client or "").strip().lower() == "ui":
        return "ui"
    return "owner"


def policy_for(request_class: RequestClass, memory: MemoryMode | None, cfg: TrafficConfig) -> TurnPolicy:
    background = request_class in cfg.background_classes
    return TurnPolicy(request_class=request_class,
                      memory=memory or cfg.memory_defaults[request_class],
                      queue=cfg.background_queue if background else INTERACTIVE_QUEUE)
