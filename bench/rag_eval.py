"""Retrieval quality on the project's bilingual eval set: dense vs lexical vs hybrid.

Corpus and labelled queries: bench/data/rag_eval/ (30 notes, 60 queries, half
Russian). The real pipeline (parsers, chunking, MiniLM, BM25 sparse vectors with
Qdrant IDF, fusion) runs in Qdrant local mode in a temporary folder. For each
query we take the ranked list of distinct sources and report recall@5 and MRR@10,
overall and per query language, for dense-only, lexical-only and every fusion
variant. The configured variant is marked; the issue requires hybrid never to be
worse than the better of its two parts.

    .venv/bin/python -m bench.rag_eval [--no-write]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.report import write_section
from configs.loader import load_settings
from configs.schema import FusionConfig, Settings
from configs.contracts.memory import SearchRequest
from rag.service import MemoryService
from workers.backends.registry import embedding_backend

DATA = Path(__file__).resolve().parent / "data" / "rag_eval"
K_RECALL = 5
K_MRR = 10


@dataclass
class Query:
    text: str
    lang: str
    relevant: set[str]
    hard: bool = False


@dataclass
class Scores:
    recall: float
    mrr: float


GROUPS = ("all", "en", "ru", "hard")


def load_queries() -> list[Query]:
    rows = [json.loads(line) for line in (DATA / "queries.jsonl").read_text(encoding="utf-8").splitlines() if line]
    return [Query(text=r["query"], lang=r["lang"], relevant=set(r["relevant"]), hard=bool(r.get("hard")))
            for r in rows]


def corpus() -> list[tuple[str, bytes]]:
    root = DATA / "docs"
    return [(str(p.relative_to(root)), p.read_bytes()) for p in sorted(root.rglob("*.md"))]


def in_group(q: Query, group: str) -> bool:
    return group == "all" or q.lang == group or (group == "hard" and q.hard)


def score(ranked: list[list[str]], queries: list[Query], group: str) -> Scores:
    recall = mrr = 0.0
    members = [(q, r) for q, r in zip(queries, ranked) if in_group(q, group)]
    for q, sources in members:
        recall += len(q.relevant & set(sources[:K_RECALL])) / len(q.relevant)
        rank = next((i for i, s in enumerate(sources, start=1) if s in q.relevant), None)
        mrr += 1.0 / rank if rank else 0.0
    n = max(len(members), 1)
    return Scores(recall / n, mrr / n)


def variants(configured: FusionConfig) -> dict[str, FusionConfig]:
    """Standard equal-weight fusion, the configured weights without and with the
    language-aware dense weight, for both methods."""
    out: dict[str, FusionConfig] = {}
    for method in ("rrf", "weighted"):
        base = configured.model_copy(update={"method": method})
        out[f"hybrid {method}, 0.5/0.5"] = base.model_copy(update={"dense_weight": 0.5, "dense_weight_foreign": 0.5})
        out[f"hybrid {method}, dense {configured.dense_weight} for all languages"] = base.model_copy(
            update={"dense_weight_foreign": configured.dense_weight})
        out[f"hybrid {method}, dense {configured.dense_weight} / {configured.dense_weight_foreign} "
            f"for languages the model lacks"] = base
    return out


def evaluate(settings: Settings, sweep: bool = False) -> tuple[list[tuple[str, dict[str, Scores]]], str, dict[str, int]]:
    queries = load_queries()
    service = MemoryService(settings, embedding_backend(settings, settings.memory.embedding_model))
    try:
        report = service.ingest(corpus())
        assert not report.failed, report.failed
        # Candidates once per query; every variant ranks the same lists (same code as search).
        found = [service.candidates(SearchRequest(query=q.text, k=K_MRR, kinds=["document"])) for q in queries]

        def table(mode: str, fusion: FusionConfig | None = None) -> dict[str, Scores]:
            ranked = [list(dict.fromkeys(f.payload["source"] for f in service.rank(c, mode, fusion)))[:K_MRR]
                      for c in found]
            return {g: score(ranked, queries, g) for g in GROUPS}

        rows = [("dense only", table("dense")), ("lexical only", table("lexical"))]
        configured = settings.memory.fusion
        chosen = ""
        for name, fusion in variants(configured).items():
            rows.append((name, table("hybrid", fusion)))
            if fusion == configured:
                chosen = name
        if sweep:
            print("method    w_dense w_foreign  MRR all   en    ru   hard | recall@5 all")
            for method in ("rrf", "weighted"):
                for w in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
                    for wf in (0.0, 0.1, 0.2, 0.3, 0.5):
                        fusion = configured.model_copy(update={"method": method, "dense_weight": w,
                                                               "dense_weight_foreign": wf})
                        t = table("hybrid", fusion)
                        print(f"{method:<9} {w:>7} {wf:>9}  " + " ".join(f"{t[g].mrr:.3f}" for g in GROUPS)
                              + f" | {t['all'].recall:.3f}")
        sizes = {"documents": len(corpus()), "chunks": report.chunks,
                 **{f"queries_{g}": sum(in_group(q, g) for q in queries) for g in GROUPS}}
        return rows, chosen, sizes
    finally:
        service.close()


def markdown(rows: list[tuple[str, dict[str, Scores]]], chosen: str, sizes: dict[str, int], model: str) -> str:
    lines = [
        "## Memory retrieval quality (bench/rag_eval.py)",
        "",
        f"Eval set: bench/data/rag_eval ({sizes['documents']} project-owned notes, {sizes['chunks']} chunks; "
        f"{sizes['queries_all']} labelled queries: {sizes['queries_en']} English, {sizes['queries_ru']} Russian; "
        f"{sizes['queries_hard']} of them 'hard' = synonyms only, no shared words). "
        f"Embedding model: {model}. Qdrant local mode. recall@{K_RECALL} and MRR@{K_MRR} over distinct sources.",
        "",
        "| retrieval | " + " | ".join(f"recall@{K_RECALL} {g} | MRR {g}" for g in GROUPS) + " |",
        "|---|" + "---|---|" * len(GROUPS),
    ]
    for name, scores in rows:
        label = f"**{name}** (configured)" if name == chosen else name
        cells = " | ".join(f"{scores[k].recall:.3f} | {scores[k].mrr:.3f}" for k in GROUPS)
        lines.append(f"| {label} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-write", action="store_true", help="print only, leave docs/benchmarks.md alone")
    parser.add_argument("--sweep", action="store_true", help="also print a grid of fusion weights")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rag-eval-") as tmp:
        settings = load_settings(overrides={"data_dir": tmp, "memory": {"qdrant_url": None, "qdrant_path": None}})
        rows, chosen, sizes = evaluate(settings, sweep=args.sweep)
        model = settings.memory.embedding_model or settings.embeddings.default_model
    text = markdown(rows, chosen, sizes, model)
    print(text)
    best_part = {k: max(rows[0][1][k].mrr, rows[1][1][k].mrr) for k in GROUPS}
    configured = dict(rows)[chosen] if chosen else None
    if configured:
        worse = [k for k in best_part if configured[k].mrr + 1e-9 < best_part[k]]
        print(f"\nconfigured fusion ({chosen}) vs best single side (MRR): "
              + ("never worse" if not worse else f"WORSE on {worse}"))
    if not args.no_write:
        write_section("rag_eval", text)


if __name__ == "__main__":
    main()
