"""Retrieval quality on the project's bilingual eval set: dense vs lexical vs hybrid.

Corpus and labelled queries: bench/data/rag_eval/ (30 notes, 60 queries, half
Russian). The real pipeline (parsers, chunking, MiniLM, BM25 sparse vectors with
Qdrant IDF, fusion) runs in Qdrant local mode in a temporary folder. For each
query we take the ranked list of distinct sources and report recall@5 and MRR@10,
overall and per query language, for dense-only, lexical-only and every fusion
variant. The configured variant is marked; the issue requires hybrid never to be
worse than the better of its two parts.

Two more questions, each answered in the same run:
- Lexical encoder: our rag/lexical.py against Qdrant's BM25 with Snowball stemming
  per script (rag/lexical_bm25.py): the whole evaluation runs once per encoder, each in
  its own fresh index (memory.lexical.encoder).
- Drowning: DISTRACTORS synthetic chunks (default 100,000; deterministic seed) are
  added to the documents collection and the configured retrieval is scored again.
  Distractors are word salad drawn from the corpus' own vocabulary (so the lexical
  side finds query words in them), 3 "sentences" of 12 words each; a distractor's
  dense vector is the normalised mean of its sentences' MiniLM embeddings (a pool of
  sentences is embedded once; embedding 100k chunks would take hours here). The
  distractors are not indexed into HNSW (searched exactly), so the figure is about
  ranking, not about approximate search.

    .venv/bin/python -m bench.rag_eval [--distractors 100000] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.report import write_section
from configs.loader import load_settings
from configs.schema import FusionConfig, Settings
from configs.contracts.memory import SearchRequest
from rag.service import MemoryService, point_id
from rag.store import LEXICAL, PointRecord
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


DISTRACTOR_SEED = 20261123
POOL_SENTENCES = 1500
WORDS_PER_SENTENCE = 12
SENTENCES_PER_DISTRACTOR = 3


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


class Distractors:
    """Deterministic word-salad chunks from the corpus vocabulary (see the docstring)."""

    def __init__(self, service: MemoryService, seed: int = DISTRACTOR_SEED) -> None:
        words = sorted({w for _, data in corpus() for w in re.findall(r"[^\W\d_]{3,}", data.decode().lower())})
        rng = np.random.default_rng(seed)
        self.sentences = [" ".join(rng.choice(words, WORDS_PER_SENTENCE)).capitalize() + "."
                          for _ in range(POOL_SENTENCES)]
        self.vectors = np.asarray(service._embed(self.sentences), dtype="float32")
        self.seed = seed

    def batch(self, first: int, n: int) -> list[tuple[str, np.ndarray]]:
        rng = np.random.default_rng((self.seed, first))
        picks = rng.integers(0, len(self.sentences), (n, SENTENCES_PER_DISTRACTOR))
        out = []
        for row in picks:
            vector = self.vectors[row].mean(axis=0)
            out.append((" ".join(self.sentences[i] for i in row), vector / np.linalg.norm(vector)))
        return out


def add_distractors(service: MemoryService, count: int, pool: Distractors) -> float:
    started = time.perf_counter()
    store = service.store
    for first in range(0, count, 2048):
        items = pool.batch(first, min(2048, count - first))
        records = [PointRecord(id=point_id("distractor", first + i), dense={store.dense_name: v.tolist()},
                               sparse={LEXICAL: service.lexical.document(text)},
                               payload={"kind": "document", "source": f"distractor/{(first + i) // 4}.md",
                                        "chunk_index": (first + i) % 4, "text": text, "title": "distractor"})
                   for i, (text, v) in enumerate(items)]
        store.upsert_records("documents", records, optimize=False)
        if first % 20480 == 0:
            log(f"  distractors {first + len(records):,}/{count:,}")
    return time.perf_counter() - started


Rows = list[tuple[str, dict[str, Scores]]]


def evaluate(settings: Settings, sweep: bool = False, distractors: int = 0,
             pool: Distractors | None = None) -> tuple[Rows, str, dict[str, int], Rows, Distractors | None]:
    """(rows, configured row name, sizes, rows with distractors, the distractor pool)."""
    queries = load_queries()
    service = MemoryService(settings, embedding_backend(settings, settings.memory.embedding_model))
    try:
        report = service.ingest(corpus())
        assert not report.failed, report.failed

        def table(found: list, mode: str, fusion: FusionConfig | None = None) -> dict[str, Scores]:
            ranked = [list(dict.fromkeys(f.payload["source"] for f in service.rank(c, mode, fusion)))[:K_MRR]
                      for c in found]
            return {g: score(ranked, queries, g) for g in GROUPS}

        def candidates() -> list:
            # Candidates once per query; every variant ranks the same lists (same code as search).
            return [service.candidates(SearchRequest(query=q.text, k=K_MRR, kinds=["document"])) for q in queries]

        found = candidates()
        rows = [("dense only", table(found, "dense")), ("lexical only", table(found, "lexical"))]
        configured = settings.memory.fusion
        chosen = ""
        for name, fusion in variants(configured).items():
            rows.append((name, table(found, "hybrid", fusion)))
            if fusion == configured:
                chosen = name
        if sweep:
            print("method    w_dense w_foreign  MRR all   en    ru   hard | recall@5 all")
            for method in ("rrf", "weighted"):
                for w in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
                    for wf in (0.0, 0.1, 0.2, 0.3, 0.5):
                        fusion = configured.model_copy(update={"method": method, "dense_weight": w,
                                                               "dense_weight_foreign": wf})
                        t = table(found, "hybrid", fusion)
                        print(f"{method:<9} {w:>7} {wf:>9}  " + " ".join(f"{t[g].mrr:.3f}" for g in GROUPS)
                              + f" | {t['all'].recall:.3f}")
        sizes = {"documents": len(corpus()), "chunks": report.chunks,
                 **{f"queries_{g}": sum(in_group(q, g) for q in queries) for g in GROUPS}}
        drowned: Rows = []
        if distractors:
            pool = pool or Distractors(service)
            seconds = add_distractors(service, distractors, pool)
            log(f"  {distractors:,} distractors added in {seconds:.0f} s")
            found = candidates()
            drowned = [("dense only", table(found, "dense")), ("lexical only", table(found, "lexical")),
                       (chosen, table(found, "hybrid", configured))]
        return rows, chosen, sizes, drowned, pool
    finally:
        service.close()


def score_cells(scores: dict[str, Scores]) -> str:
    return " | ".join(f"{scores[k].recall:.3f} | {scores[k].mrr:.3f}" for k in GROUPS)


def markdown(results: dict[str, tuple], configured_encoder: str, distractors: int, model: str) -> str:
    rows, chosen, sizes, _, _ = results[configured_encoder]
    header = ["| retrieval | " + " | ".join(f"recall@{K_RECALL} {g} | MRR {g}" for g in GROUPS) + " |",
              "|---|" + "---|---|" * len(GROUPS)]
    lines = [
        "## Memory retrieval quality (bench/rag_eval.py)",
        "",
        f"Eval set: bench/data/rag_eval ({sizes['documents']} project-owned notes, {sizes['chunks']} chunks; "
        f"{sizes['queries_all']} labelled queries: {sizes['queries_en']} English, {sizes['queries_ru']} Russian; "
        f"{sizes['queries_hard']} of them 'hard' = synonyms only, no shared words). "
        f"Embedding model: {model}. Qdrant Edge. recall@{K_RECALL} and MRR@{K_MRR} over distinct sources. "
        f"Lexical encoder: `{configured_encoder}` (memory.lexical.encoder).",
        "",
        *header,
    ]
    for name, scores in rows:
        label = f"**{name}** (configured)" if name == chosen else name
        lines.append(f"| {label} | {score_cells(scores)} |")
    lines += ["", "Lexical encoders compared (each in its own fresh index; `appliance` = rag/lexical.py, "
              "`qdrant_bm25` = Qdrant's Bm25 with Snowball stemming per script, rag/lexical_bm25.py):", "", *header]
    for encoder, (enc_rows, enc_chosen, _, _, _) in results.items():
        found = dict(enc_rows)
        lines.append(f"| lexical only, {encoder} | {score_cells(found['lexical only'])} |")
        lines.append(f"| configured hybrid, {encoder} | {score_cells(found[enc_chosen])} |")
    if distractors:
        lines += ["", f"With **{distractors:,} synthetic distractor chunks** added to the same collection "
                  "(word salad from the corpus vocabulary, deterministic seed; see the script):", "", *header]
        for encoder, (_, enc_chosen, _, drowned, _) in results.items():
            for name, scores in drowned:
                label = "configured hybrid" if name == enc_chosen else name
                lines.append(f"| {label}, {encoder}, +{distractors // 1000}k distractors | {score_cells(scores)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-write", action="store_true", help="print only, leave docs/benchmarks.md alone")
    parser.add_argument("--sweep", action="store_true", help="also print a grid of fusion weights")
    parser.add_argument("--distractors", type=int, default=100_000, help="synthetic distractor chunks (0 = none)")
    parser.add_argument("--encoders", nargs="+", default=["appliance", "qdrant_bm25"],
                        help="lexical encoders to compare")
    args = parser.parse_args()
    base = load_settings()
    configured_encoder = base.memory.lexical.encoder
    results: dict[str, tuple] = {}
    pool = None
    for encoder in dict.fromkeys([configured_encoder, *args.encoders]):
        log(f"lexical encoder {encoder}")
        with tempfile.TemporaryDirectory(prefix="rag-eval-") as tmp:
            settings = load_settings(overrides={"data_dir": tmp, "memory": {
                "qdrant_url": None, "qdrant_path": None, "edge_path": None, "lexical": {"encoder": encoder}}})
            results[encoder] = evaluate(settings, sweep=args.sweep and encoder == configured_encoder,
                                        distractors=args.distractors, pool=pool)
            pool = results[encoder][4]
            model = settings.memory.embedding_model or settings.embeddings.default_model
    text = markdown(results, configured_encoder, args.distractors, model)
    print(text)
    rows, chosen = results[configured_encoder][0], results[configured_encoder][1]
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
