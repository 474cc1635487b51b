"""From a fused ranking to the few hits one answer gets, in a memory that keeps growing.

Three rules, applied in this order (settings: memory.recall, reasons: docs/memory.md):
1. Time-aware score for conversation turns: score * (1 + w * 0.5 ** (age / half-life)).
   A recent turn wins a tie; a clearly better old turn still wins (w is small).
   Documents are not aged: a note is as true as the day it was written.
2. Near-duplicates shown once: a hit whose text shares `duplicate_similarity` of its
   word 3-grams (Jaccard) with a better hit is dropped (the owner repeats himself, and
   the same boilerplate appears in many notes).
3. Per-conversation cap: at most `per_conversation_cap` hits from one conversation,
   so one long old conversation cannot fill every slot.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import replace
from typing import Any

from configs.schema import RecallConfig
from rag.fusion import Fused

WORD_RE = re.compile(r"\w+", re.UNICODE)
DAY_S = 86_400.0


def recency_factor(payload: dict[str, Any], now: float, config: RecallConfig) -> float:
    if payload.get("kind") != "conversation" or not config.recency_weight:
        return 1.0
    created = payload.get("created_at")
    if not isinstance(created, (int, float)):
        return 1.0
    age_days = max(now - float(created), 0.0) / DAY_S
    return 1.0 + config.recency_weight * 0.5 ** (age_days / config.recency_half_life_days)


def shingles(text: str, n: int = 3) -> frozenset[tuple[str, ...]]:
    words = WORD_RE.findall(text.lower())
    if len(words) < n:
        return frozenset([tuple(words)]) if words else frozenset()
    return frozenset(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def similarity(a: frozenset, b: frozenset) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def select(ranked: list[Fused], k: int, config: RecallConfig, now: float | None = None) -> list[Fused]:
    """The best `k` hits after recency, de-duplication and the per-conversation cap."""
    now = time.time() if now is None else now
    rescored = sorted((replace(item, score=item.score * recency_factor(item.payload, now, config))
                       for item in ranked), key=lambda item: item.score, reverse=True)
    chosen: list[Fused] = []
    kept: list[frozenset] = []
    per_conversation: Counter[str] = Counter()
    for item in rescored:
        conversation = item.payload.get("conversation_id") if item.payload.get("kind") == "conversation" else None
        if conversation and config.per_conversation_cap and \
                per_conversation[conversation] >= config.per_conversation_cap:
            continue
        grams = shingles(str(item.payload.get("text", "")))
        if any(similarity(grams, other) >= config.duplicate_similarity for other in kept):
            continue
        chosen.append(item)
        kept.append(grams)
        if conversation:
            per_conversation[conversation] += 1
        if len(chosen) >= k:
            break
    return chosen
