"""Memory figures: search latency, write rate, open time and RSS at 10k..1M chunks, and ingest.

1. Size sweep (the engine configured by memory.engine; the embedded default is Qdrant
   Edge): a documents collection filled to each size in turn with SYNTHETIC points of
   the real shape: 384-dim dense vectors that are noisy mixtures of MiniLM vectors of
   1,000 real text windows (eval corpus and owner-style notes, English and Russian;
   embedded once, cached in .cache/), so they keep the model's clusters and
   anisotropy; sparse vectors of ~60 terms drawn Zipf-like from the eval corpus' real
   term indices plus a synthetic tail vocabulary; a ~600-character payload with the
   indexed fields. What a search costs depends on point count, vector distribution and
   posting-list lengths, not on meaning, and embedding a million chunks here would take
   days. Per size:
   - search_p50_ms / search_p99_ms: the store's dense + sparse query (one batch) plus
     fusion, with the query vectors computed beforehand (the eval queries, embedded once);
   - hybrid_p50_ms / hybrid_p99_ms: the whole MemoryService.search, embedding included;
   - upsert_points_per_s (writes only) and index_build_s (Edge's HNSW + sparse index
     build for the new points, `optimize`);
   - open_s: closing and reopening the store (what a worker restart costs);
   - rss_mb (VmRSS after the searches) and max_rss_mb of this process.
2. Ingest (optional, --ingest-copies): the eval notes concatenated into long documents,
   ingested through MemoryService with the offline model -> chunks/s, embedding share.

    .venv/bin/python -m bench.bench_memory [--sizes 10000 100000 1000000] [--json] [--no-write]

With --json, one JSON object per size is printed on stdout as soon as it is measured
(the text goes to stderr). Without --no-write the table goes to docs/benchmarks.md;
`--from-json FILE` writes the table from the rows a --json run printed into FILE.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.rag_eval import DATA, corpus, load_queries
from bench.report import percentile, write_section
from configs.contracts.memory import SearchRequest
from configs.loader import load_settings
from configs.schema import Settings
from rag.fusion import fuse
from rag.lexical import SparseVector, term_index, terms
from rag.service import MemoryService, point_id
from rag.engines import open_store
from rag.store import LEXICAL, EmbeddingSpec, PointRecord
from workers.backends.registry import embedding_backend

DIM_SEED = 20261123
TERMS_PER_POINT = 60
SYNTHETIC_VOCABULARY = 60_000
WRITE_BATCH = 4096


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


BASE_TEXTS = 1000
BASE_WORDS = (8, 40)
MIX = 3             # base vectors per synthetic point
NOISE = 0.35        # relative norm of the isotropic noise added to a mixture
CACHE = Path(__file__).resolve().parents[1] / ".cache"


def base_texts(count: int, seed: int) -> list[str]:
    """Real text windows: random spans of the eval corpus and the owner-style notes
    (English and Russian), so the base vectors are what MiniLM gives real chunks."""
    notes = Path(__file__).resolve().parent / "data" / "notes"
    words = [data.decode("utf-8").split() for _, data in corpus()]
    words += [p.read_text(encoding="utf-8").split() for p in sorted(notes.glob("*.md"))]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        doc = words[rng.integers(len(words))]
        n = int(rng.integers(*BASE_WORDS))
        start = int(rng.integers(max(len(doc) - n, 1)))
        out.append(" ".join(doc[start:start + n]))
    return out


def base_vectors(service: MemoryService, seed: int) -> np.ndarray:
    """MiniLM vectors of BASE_TEXTS real text windows, embedded once and cached in .cache/."""
    path = CACHE / f"bench_memory_base_{service.embedder.model_name.replace('/', '_')}_{BASE_TEXTS}_{seed}.npy"
    if path.is_file():
        return np.load(path)
    log(f"embedding {BASE_TEXTS} real text windows once (cached in {path})")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a loaded machine torch's thread pool spins instead of working
    try:
        vectors = np.asarray(service._embed(base_texts(BASE_TEXTS, seed)), dtype="float32")
    finally:
        torch.set_num_threads(threads)
    CACHE.mkdir(exist_ok=True)
    np.save(path, vectors)
    return vectors


class SyntheticPoints:
    """Deterministic points of the real shape (see the module docstring)."""

    def __init__(self, base: np.ndarray, seed: int = DIM_SEED) -> None:
        self.base = base
        self.dimension = base.shape[1]
        self.seed = seed
        real = sorted({term_index(t) for _, data in corpus() for t in terms(data.decode("utf-8"))})
        synthetic = [(1 << 31) + i for i in range(SYNTHETIC_VOCABULARY)]
        self.vocabulary = np.asarray(real + synthetic, dtype=np.int64)
        rng = np.random.default_rng(seed)
        rng.shuffle(self.vocabulary)
        ranks = np.arange(1, len(self.vocabulary) + 1, dtype=np.float64)
        self.cdf = np.cumsum(1.0 / ranks)
        self.cdf /= self.cdf[-1]   # Zipf: a few terms are everywhere

    def dense(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Noisy mixtures of real MiniLM vectors: they keep the model's anisotropy and
        clusters (random unit vectors would be the HNSW worst case, not the owner's data)."""
        picks = rng.integers(0, len(self.base), (n, MIX))
        weights = rng.dirichlet(np.ones(MIX), n).astype("float32")
        mixed = np.einsum("nm,nmd->nd", weights, self.base[picks])
        mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
        noise = rng.normal(size=mixed.shape).astype("float32")
        mixed += NOISE * noise / np.linalg.norm(noise, axis=1, keepdims=True)
        return mixed / np.linalg.norm(mixed, axis=1, keepdims=True)

    def sparse(self, rng: np.random.Generator, n: int) -> list[SparseVector]:
        drawn = np.searchsorted(self.cdf, rng.random((n, TERMS_PER_POINT)))
        drawn = np.minimum(drawn, len(self.vocabulary) - 1)
        drawn.sort(axis=1)
        values = (1.0 + rng.random(drawn.shape)).round(3)
        out = []
        for row, vals in zip(drawn, values):
            keep = np.empty(len(row), dtype=bool)
            keep[0] = True
            keep[1:] = row[1:] != row[:-1]   # a term drawn twice counts once
            out.append(SparseVector(indices=self.vocabulary[row[keep]].tolist(), values=vals[keep].tolist()))
        return out

    def batch(self, first: int, n: int) -> tuple[list[str], list[list[float]], list[SparseVector], list[dict]]:
        rng = np.random.default_rng((self.seed, first))
        dense = self.dense(rng, n)
        lexical = self.sparse(rng, n)
        payloads = [{"kind": "document", "source": f"synthetic/{(first + i) // 8}.md",
                     "chunk_index": (first + i) % 8, "content_hash": "synthetic", "title": "synthetic",
                     "tags": ["synthetic"], "ingested_at": 0.0,
                     "text": f"synthetic chunk {first + i} " + "lorem ipsum dolor sit amet " * 22}
                    for i in range(n)]
        ids = [point_id("bench", first + i) for i in range(n)]
        return ids, dense.tolist(), lexical, payloads


def fill(service: MemoryService, points: SyntheticPoints, start: int, target: int) -> tuple[float, float]:
    """Write points start..target; returns the seconds spent writing (no index build),
    wall clock and this process' CPU time."""
    store = service.store
    seconds = cpu = 0.0
    for first in range(start, target, WRITE_BATCH):
        ids, dense, lexical, payloads = points.batch(first, min(WRITE_BATCH, target - first))
        t0, c0 = time.perf_counter(), time.process_time()
        records = [PointRecord(id=i, dense={store.dense_name: d}, sparse={LEXICAL: s}, payload=p)
                   for i, d, s, p in zip(ids, dense, lexical, payloads)]
        store.upsert_records("documents", records, optimize=False)  # the build is timed on its own
        seconds += time.perf_counter() - t0
        cpu += time.process_time() - c0
        if (first // WRITE_BATCH) % 25 == 0:
            log(f"  wrote {first + len(ids):,}/{target:,}")
    return seconds, cpu


def time_searches(service: MemoryService, queries: list[str], repeat: int) -> dict[str, list[float]]:
    store, limit = service.store, service.config.fusion.candidates
    vectors = [(service._embed([q])[0], service.lexical.query(q)) for q in queries]
    out: dict[str, list[float]] = {"search": [], "search_cpu": [], "hybrid": []}
    for _ in range(repeat):
        for (dense, sparse) in vectors:
            t0, c0 = time.perf_counter(), time.process_time()
            found_dense, found_lexical = store.search("documents", dense, sparse, limit)
            fuse(found_dense, found_lexical, service.config.fusion, service.config.fusion.dense_weight)
            out["search"].append((time.perf_counter() - t0) * 1000)
            # CPU time of all this process' threads (Edge searches segments in its own
            # threads): what the search costs, without the waits for a core on a loaded machine
            out["search_cpu"].append((time.process_time() - c0) * 1000)
    for q in queries:
        t0 = time.perf_counter()
        service.search(SearchRequest(query=q, k=5, kinds=["document"]))
        out["hybrid"].append((time.perf_counter() - t0) * 1000)
    return out


def reopen(service: MemoryService, settings: Settings) -> float:
    service.store.close()
    spec = EmbeddingSpec(model=service.embedder.model_name, dimension=service.embedder.dimension,
                         distance=service.embedder.config.distance)
    t0 = time.perf_counter()
    service.store = open_store(settings.memory, settings.data_dir, spec)
    return time.perf_counter() - t0


def search_figures(service: MemoryService, settings: Settings, queries: list[str], repeat: int) -> dict:
    """Open time (a reopen of the store), search and hybrid latencies, RSS: the figures that
    need no writing, so a kept store can be measured again later (--search-only)."""
    open_s = reopen(service, settings)
    service.search(SearchRequest(query="warm up", k=5))
    ms = time_searches(service, queries, repeat)
    return {"search_p50_ms": round(percentile(ms["search"], 0.5), 2),
            "search_p99_ms": round(percentile(ms["search"], 0.99), 2),
            "search_cpu_p50_ms": round(percentile(ms["search_cpu"], 0.5), 2),
            "search_cpu_p99_ms": round(percentile(ms["search_cpu"], 0.99), 2),
            "hybrid_p50_ms": round(percentile(ms["hybrid"], 0.5), 2),
            "hybrid_p99_ms": round(percentile(ms["hybrid"], 0.99), 2),
            "open_s": round(open_s, 3), "rss_mb": round(rss_mb(), 1), "max_rss_mb": round(max_rss_mb(), 1),
            "queries": len(ms["search"]), "load_avg_1m": round(os.getloadavg()[0], 1)}


def bench_sizes(settings: Settings, sizes: list[int], n_queries: int, repeat: int, as_json: bool,
                rows_file: Path | None = None) -> list[dict]:
    service = MemoryService(settings, embedding_backend(settings))
    rows = []
    try:
        service.store.recreate("documents")
        points = SyntheticPoints(base_vectors(service, DIM_SEED))
        queries = [q.text for q in load_queries()][:n_queries]
        have = 0
        for size in sizes:
            log(f"size {size:,}: writing {size - have:,} points")
            write_s, write_cpu_s = fill(service, points, have, size)
            t0 = time.perf_counter()
            service.store.optimize()
            index_s = time.perf_counter() - t0
            log(f"size {size:,}: index built in {index_s:.1f} s")
            added, have = size - have, size
            row = {"size": size, "engine": service.store.engine,
                   "quantization": settings.memory.edge_quantization,
                   **search_figures(service, settings, queries, repeat),
                   "upsert_points_per_s": round(added / write_s, 1),
                   "upsert_points_per_cpu_s": round(added / write_cpu_s, 1), "index_build_s": round(index_s, 1),
                   "index_build": "child process", "vectors": "synthetic"}
            rows.append(row)
            if rows_file is not None:
                with rows_file.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
            print(json.dumps(row) if as_json else row, flush=True)
    finally:
        service.close()
    return rows


def search_again(settings: Settings, rows_file: Path, n_queries: int, repeat: int) -> dict:
    """The searches of a kept store measured again (e.g. on a quiet machine), over the
    row its build run recorded: write and build figures stay from that run."""
    service = MemoryService(settings, embedding_backend(settings))
    try:
        size = service.store.count("documents")
        built = [r for r in map(json.loads, rows_file.read_text().splitlines()) if r["size"] == size]
        if not built:
            raise SystemExit(f"{rows_file} has no row for the {size:,} points the kept store holds")
        queries = [q.text for q in load_queries()][:n_queries]
        figures = search_figures(service, settings, queries, repeat)
        del figures["max_rss_mb"]  # the build run's peak is the one that matters
        row = {**built[-1], **figures,
               "build_load_avg_1m": built[-1]["load_avg_1m"], "searched_separately": True}
    finally:
        service.close()
    print(json.dumps(row), flush=True)
    return row


def compare_quantization(settings: Settings, size: int) -> list[dict]:
    """The same `size` points in two fresh shards, float only and with int8 copies
    (memory.edge_quantization): index build time, search cost, and how many of the exact
    top 10 (a full scan of the float vectors) the store's dense search returns."""
    from qdrant_edge import Query, QueryRequest, SearchParams

    embedder = embedding_backend(settings)
    spec = EmbeddingSpec(model=embedder.model_name, dimension=embedder.dimension, distance=embedder.config.distance)
    service = MemoryService(settings, embedder)
    points = SyntheticPoints(base_vectors(service, DIM_SEED))
    lexical = [service.lexical.query(q.text) for q in load_queries()]
    queries = points.dense(np.random.default_rng(99), len(lexical)).tolist()  # unseen mixtures
    service.close()
    rows = []
    for quantization in ("none", "int8"):
        memory = settings.memory.model_copy(update={"edge_quantization": quantization,
                                                    "edge_path": settings.data_dir / f"q-{quantization}"})
        store = open_store(memory, settings.data_dir, spec)
        try:
            for first in range(0, size, WRITE_BATCH):
                ids, dense, sparse, payloads = points.batch(first, min(WRITE_BATCH, size - first))
                store.upsert_records("documents", [PointRecord(id=i, dense={store.dense_name: d},
                                                               sparse={LEXICAL: x}, payload=p)
                                                   for i, d, x, p in zip(ids, dense, sparse, payloads)],
                                     optimize=False)
            t0 = time.perf_counter()
            store.optimize()
            build_s = time.perf_counter() - t0
            shard = store.shards["documents"]
            wall, cpu, recall = [], [], []
            for dense, sparse in zip(queries, lexical):
                exact = {str(p.id) for p in shard.query(QueryRequest(
                    limit=10, query=Query.Nearest(dense, using=store.dense_name), params=SearchParams(exact=True)))}
                t0, c0 = time.perf_counter(), time.process_time()
                found, _ = store.search("documents", dense, sparse, service.config.fusion.candidates)
                wall.append((time.perf_counter() - t0) * 1000)
                cpu.append((time.process_time() - c0) * 1000)
                recall.append(len({p.id for p in found[:10]} & exact) / 10)
            row = {"quantization": quantization, "size": size, "index_build_s": round(build_s, 1),
                   "search_p50_ms": round(percentile(wall, 0.5), 2), "search_p99_ms": round(percentile(wall, 0.99), 2),
                   "search_cpu_p50_ms": round(percentile(cpu, 0.5), 2),
                   "search_cpu_p99_ms": round(percentile(cpu, 0.99), 2),
                   "dense_recall_at_10": round(float(np.mean(recall)), 3), "load_avg_1m": round(os.getloadavg()[0], 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
        finally:
            store.close()
    return rows


def quantization_markdown(rows: list[dict]) -> str:
    lines = ["## Memory: int8 quantization on Qdrant Edge (bench/bench_memory.py --compare-quantization)", "",
             f"The same {rows[0]['size']:,} synthetic points (as above) in two fresh shards, built one after "
             "the other. `dense recall@10` = share of the exact top 10 (full scan of the float vectors) that the "
             "store's dense search returns (int8: HNSW on the int8 copies, float originals rescore 2x "
             "candidates).", "",
             "| dense vectors | index build s | search p50 ms | search p99 ms | search CPU p50/p99 ms | "
             "dense recall@10 | load avg |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {'float + int8 copies' if r['quantization'] == 'int8' else 'float only'} | "
                     f"{r['index_build_s']:.0f} | {r['search_p50_ms']:.1f} | {r['search_p99_ms']:.1f} | "
                     f"{r['search_cpu_p50_ms']:.1f} / {r['search_cpu_p99_ms']:.1f} | "
                     f"{r['dense_recall_at_10']:.3f} | {r['load_avg_1m']} |")
    return "\n".join(lines)


def long_documents(copies: int) -> list[tuple[str, bytes]]:
    """Each document: all eval notes of one language, so it spans many chunks."""
    docs = []
    for lang in ("en", "ru"):
        text = "\n\n".join(p.read_text(encoding="utf-8") for p in sorted((DATA / "docs" / lang).glob("*.md")))
        for i in range(copies):
            docs.append((f"bench/{lang}-{i}.md", f"# Copy {i}\n\n{text}\n\nrevision {i}".encode()))
    return docs


def bench_ingest(settings: Settings, copies: int) -> dict[str, float]:
    service = MemoryService(settings, embedding_backend(settings))
    try:
        embed_s = 0.0
        original = service._embed

        def timed_embed(texts):  # measure the embedding share without changing the path
            nonlocal embed_s
            t0 = time.perf_counter()
            out = original(texts)
            embed_s += time.perf_counter() - t0
            return out

        service._embed = timed_embed  # type: ignore[method-assign]
        t0 = time.perf_counter()
        report = service.ingest(long_documents(copies))
        total = time.perf_counter() - t0
        return {"documents": 2 * copies, "chunks": report.chunks, "seconds": total,
                "chunks_per_s": report.chunks / total, "embed_share": embed_s / total}
    finally:
        service.close()


def load_note(row: dict) -> str:
    return f" * ({row['build_load_avg_1m']})" if row.get("searched_separately") else ""


def markdown(rows: list[dict], ingest: dict[str, float] | None, n_queries: int) -> str:
    engine = rows[0]["engine"] if rows else "?"
    lines = [
        "## Memory: search latency and size (bench/bench_memory.py)",
        "",
        f"Engine: **{engine}** (memory.engine). Documents collection filled with **synthetic** points of the "
        f"real shape (384-dim dense vectors = noisy mixtures of MiniLM vectors of {BASE_TEXTS:,} real text windows; ~{TERMS_PER_POINT}-term sparse vectors drawn Zipf-like "
        "from the eval corpus' term indices plus a synthetic vocabulary; ~600-character payloads). "
        f"`search` = dense + sparse query in one batch + fusion, query vectors precomputed ({n_queries} eval "
        "queries, each several times); `hybrid` = MemoryService.search including embedding the query "
        "(MiniLM on CPU). `search CPU` = CPU time of the process' threads during that search (the engine's "
        "cost without the waits for a core on a loaded machine). Index build = Edge `optimize` (HNSW + sparse "
        "index; segments are merged, so a step re-indexes what the previous steps built); `where` = in a child "
        "process as the rag worker runs it since 2026-11-24 (docs/memory.md), or in-process as before. "
        "Rows marked * had their searches measured again on the kept store in a later run (`--data-dir "
        "DIR --search-only`); their load average is that run's, the build run's is in brackets.",
        "",
        "| chunks | dense vectors | search p50 ms | search p99 ms | search CPU p50/p99 ms | hybrid p50 ms | "
        "hybrid p99 ms | upsert points/s | index build s (where) | open s | RSS MB | max RSS MB | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cpu = (f"{r['search_cpu_p50_ms']:.1f} / {r['search_cpu_p99_ms']:.1f}" if "search_cpu_p50_ms" in r
               else "not measured")
        upsert_cpu = (f" ({r['upsert_points_per_cpu_s']:,.0f} per CPU-s)" if "upsert_points_per_cpu_s" in r else "")
        vectors = "float + int8" if r.get("quantization", "none") == "int8" else "float"
        lines.append(f"| {r['size']:,} | {vectors} | {r['search_p50_ms']:.1f} | {r['search_p99_ms']:.1f} | {cpu} | "
                     f"{r['hybrid_p50_ms']:.1f} | {r['hybrid_p99_ms']:.1f} | {r['upsert_points_per_s']:,.0f}{upsert_cpu} | "
                     f"{r['index_build_s']:.0f} ({r.get('index_build', 'in-process')}) | {r['open_s']:.2f} | {r['rss_mb']:,.0f} | {r['max_rss_mb']:,.0f} | "
                     f"{r['load_avg_1m']}{load_note(r)} |")
    if ingest:
        lines += ["", f"Ingest with the offline model (all-MiniLM-L6-v2 on CPU): {ingest['documents']} documents, "
                      f"{ingest['chunks']} chunks in {ingest['seconds']:.1f} s = **{ingest['chunks_per_s']:.1f} "
                      f"chunks/s** ({100 * ingest['embed_share']:.0f}% of the time is embedding)."]
    if rows and max(r["size"] for r in rows) < 1_000_000:
        lines += ["", "No 1,000,000 row: not measured on this machine in the session's time; docs/memory.md "
                      "(\"Edge figures and targets\") says why and extrapolates."]
    lines += ["", f"Machine shared with other jobs ({os.cpu_count()} cores; 1-minute load average per row above): "
              "absolute times are inflated accordingly."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=85)
    parser.add_argument("--repeat", type=int, default=3, help="passes over the queries for search_p*")
    parser.add_argument("--ingest-copies", type=int, default=0, help="also measure ingest (0 = skip)")
    parser.add_argument("--json", action="store_true", help="one JSON object per size on stdout")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--from-json", type=Path, nargs="+", help="render rows a previous --json run printed (e.g. a long "
                        "sweep run in the background) instead of measuring")
    parser.add_argument("--data-dir", type=Path, help="keep the memory here (deleted otherwise); its "
                        "bench-rows.jsonl records each size's row")
    parser.add_argument("--search-only", action="store_true",
                        help="with --data-dir: measure open and searches of the kept store again, e.g. on a quiet "
                             "machine (prints one JSON row; write and build figures stay from the build run)")
    parser.add_argument("--compare-quantization", type=int, metavar="SIZE", default=0,
                        help="instead of the sweep: SIZE points with and without int8 copies")
    args = parser.parse_args()
    if args.compare_quantization:
        with tempfile.TemporaryDirectory(prefix="bench-memory-q-") as tmp:
            settings = load_settings(overrides={"data_dir": tmp, "memory": {"qdrant_url": None,
                                                                             "qdrant_path": None}})
            text = quantization_markdown(compare_quantization(settings, args.compare_quantization))
        log(text)
        if not args.no_write:
            write_section("memory-quantization", text)
        return
    if args.from_json:
        rows = [json.loads(line) for path in args.from_json for line in path.read_text().splitlines()
                if line.startswith("{")]
        text = markdown(rows, None, args.queries)
        print(text)
        if not args.no_write:
            write_section("memory", text)
        return
    with contextlib.ExitStack() as stack:
        data_dir = args.data_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-memory-")))
        settings = load_settings(overrides={"data_dir": str(data_dir), "memory": {
            "qdrant_url": None, "qdrant_path": None, "edge_path": None}})
        rows_file = data_dir / "bench-rows.jsonl" if args.data_dir else None
        if args.search_only:
            if rows_file is None or not rows_file.is_file():
                parser.error("--search-only needs --data-dir of an earlier run (its bench-rows.jsonl)")
            search_again(settings, rows_file, args.queries, args.repeat)
            return
        ingest = bench_ingest(settings, args.ingest_copies) if args.ingest_copies else None
        if ingest:
            log(ingest)
        rows = bench_sizes(settings, sorted(args.sizes), args.queries, args.repeat, args.json, rows_file)
    text = markdown(rows, ingest, args.queries)
    log(text)
    if not args.no_write:
        write_section("memory", text)


if __name__ == "__main__":
    main()
