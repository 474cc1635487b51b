"""Combine the dense and the lexical result lists into one ranking.

Two methods, both measured by bench/rag_eval.py (figures in docs/benchmarks.md):
- rrf: reciprocal rank fusion, sum of w / (k + rank) over the lists.
- weighted: sum of w * score / best score of that list (scores of each side
  scaled to 0..1 by the side's best hit, so a weak side cannot outvote a strong
  one by scale alone).
The dense side's weight drops to `dense_weight_foreign` when the query's language
is one the embedding model does not know (MiniLM on Russian), because its ranking
is then close to noise and would only push the lexical side's hits down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from configs.schema import FusionConfig
from rag.store import StoredPoint


@dataclass
class Fused:
    id: str
    score: float
    payload: dict[str, Any]


def dense_weight(config: FusionConfig, query_language: str, model_languages: list[str]) -> float:
    return config.dense_weight if query_language in model_languages else config.dense_weight_foreign


def fuse(dense: list[StoredPoint], lexical: list[StoredPoint], config: FusionConfig,
         w_dense: float) -> list[Fused]:
    weights = ((dense, w_dense), (lexical, 1.0 - w_dense))
    scores: dict[str, float] = {}
    payloads: dict[str, dict[str, Any]] = {}
    for points, weight in weights:
        if not points or weight <= 0:
            continue
        best = max(p.score for p in points) or 1.0
        for rank, point in enumerate(points, start=1):
            if config.method == "rrf":
                part = weight / (config.rrf_k + rank)
            else:
                part = weight * max(point.score, 0.0) / best
            scores[point.id] = scores.get(point.id, 0.0) + part
            payloads.setdefault(point.id, point.payload)
    ranked = sorted(scores.items(), key=lambda item: item[1], reverse=True)
    return [Fused(id=pid, score=score, payload=payloads[pid]) for pid, score in ranked]
