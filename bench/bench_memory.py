"""Memory figures: ingest throughput, and search latency at 10k and 100k chunks in local mode.

1. Ingest: the eval notes (bench/data/rag_eval) concatenated into longer documents,
   ingested through MemoryService (parse, chunk, embed with the offline model, sparse
   vectors, upsert) -> chunks/s, and the share of the time spent embedding.
2. Search at scale: a documents collection filled to 10k and then 100k points. Dense
   vectors are real MiniLM vectors of real chunks plus small noise (so they are not
   duplicates) and sparse vectors are the real BM25 vectors of those chunks: what a
   search costs depends on point count, vector size and non-zeros, not on meaning,
   and embedding 100k chunks here would take most of an hour. Queries are the eval
   queries; hybrid latency includes embedding the query. Also: time to open the
   local-mode folder (it loads every point into memory) and the process's RSS.

    .venv/bin/python -m bench.bench_memory [--sizes 10000 100000] [--queries 30] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

import numpy as np

from bench.rag_eval import DATA, load_queries
from bench.report import percentile, write_section
from configs.loader import load_settings
from configs.schema import Settings
from configs.contracts.memory import SearchRequest
from rag.service import MemoryService, point_id
from rag.store import EmbeddingSpec, MemoryStore
from workers.backends.registry import embedding_backend


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
        docs = long_documents(copies)
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
        report = service.ingest(docs)
        total = time.perf_counter() - t0
        return {"documents": len(docs), "chunks": report.chunks, "seconds": total,
                "chunks_per_s": report.chunks / total, "embed_share": embed_s / total}
    finally:
        service.close()


def fill(store: MemoryStore, service: MemoryService, target: int, pool: tuple[np.ndarray, list], start: int) -> None:
    vectors, sparse = pool
    rng = np.random.default_rng(start)
    batch = 1024
    for first in range(start, target, batch):
        n = min(batch, target - first)
        idx = rng.integers(0, len(vectors), n)
        dense = vectors[idx] + rng.normal(0, 0.02, (n, vectors.shape[1])).astype("float32")
        dense /= np.linalg.norm(dense, axis=1, keepdims=True)
        payloads = [{"kind": "document", "source": f"synthetic/{(first + i) // 8}.md", "chunk_index": (first + i) % 8,
                     "content_hash": "synthetic", "text": f"synthetic chunk {first + i}"} for i in range(n)]
        ids = [point_id("bench", first + i) for i in range(n)]
        store.upsert("documents", ids, dense.tolist(), [sparse[j] for j in idx], payloads)


def time_searches(service: MemoryService, queries: list[str]) -> dict[str, list[float]]:
    """Per query: the whole hybrid search, and its parts (embedding the query, the dense
    and the sparse Qdrant query) so local mode's own cost is visible."""
    out: dict[str, list[float]] = {"hybrid": [], "embed": [], "dense": [], "lexical": []}
    limit = service.config.fusion.candidates
    for q in queries:
        t0 = time.perf_counter()
        service.search(SearchRequest(query=q, k=5, kinds=["document"]))
        t1 = time.perf_counter()
        vector = service._embed([q])[0]
        t2 = time.perf_counter()
        service.store.dense_search("documents", vector, limit)
        t3 = time.perf_counter()
        service.store.lexical_search("documents", service.lexical.query(q), limit)
        t4 = time.perf_counter()
        for key, seconds in (("hybrid", t1 - t0), ("embed", t2 - t1), ("dense", t3 - t2), ("lexical", t4 - t3)):
            out[key].append(seconds * 1000)
    return out


def bench_search(settings: Settings, sizes: list[int], n_queries: int) -> list[dict[str, float]]:
    service = MemoryService(settings, embedding_backend(settings))
    rows = []
    try:
        chunks = [p["text"] for p in service.store.scroll_payloads("documents")]
        texts = list(dict.fromkeys(chunks))
        pool = (np.asarray(service._embed(texts), dtype="float32"), [service.lexical.document(t) for t in texts])
        service.store.recreate("documents")
        queries = [q.text for q in load_queries()][:n_queries]
        have = 0
        for size in sizes:
            t0 = time.perf_counter()
            fill(service.store, service, size, pool, have)
            fill_s = time.perf_counter() - t0
            added, have = size - have, size
            service.close()
            t0 = time.perf_counter()
            spec = EmbeddingSpec(model=service.embedder.model_name, dimension=service.embedder.dimension)
            service.store = MemoryStore(settings.memory, settings.data_dir, spec)  # reopen: local mode loads all
            open_s = time.perf_counter() - t0
            service.search(SearchRequest(query="warm up", k=5))
            row = {"chunks": size, "upsert_per_s": added / fill_s, "open_s": open_s,
                   "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
            for part, ms in time_searches(service, queries).items():
                row[f"{part}_p50"], row[f"{part}_p99"] = percentile(ms, 0.5), percentile(ms, 0.99)
            rows.append(row)
            print(row, flush=True)
    finally:
        service.close()
    return rows


def markdown(ingest: dict[str, float], rows: list[dict[str, float]], n_queries: int) -> str:
    lines = [
        "## Memory: ingest and search (bench/bench_memory.py)",
        "",
        f"Ingest with the offline model (all-MiniLM-L6-v2 on CPU, sentence-transformers): {ingest['documents']} "
        f"documents, {ingest['chunks']} chunks in {ingest['seconds']:.1f} s = **{ingest['chunks_per_s']:.1f} "
        f"chunks/s** ({100 * ingest['embed_share']:.0f}% of the time is embedding).",
        "",
        f"Search latency in Qdrant local mode, {n_queries} eval queries, k=5, documents collection, ms. "
        "`hybrid` is the whole search as the rag worker runs it (embed the query, dense and sparse "
        "queries, fusion); the other columns are its parts measured alone:",
        "",
        "| chunks | hybrid p50 | hybrid p99 | embed query p50 | dense query p50 | dense query p99 | "
        "sparse query p50 | sparse query p99 | upsert points/s | open folder s | max RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['chunks']:,} | {r['hybrid_p50']:.0f} | {r['hybrid_p99']:.0f} | {r['embed_p50']:.0f} | "
                     f"{r['dense_p50']:.0f} | {r['dense_p99']:.0f} | {r['lexical_p50']:.0f} | "
                     f"{r['lexical_p99']:.0f} | {r['upsert_per_s']:.0f} | {r['open_s']:.1f} | {r['rss_mb']:.0f} |")
    lines += ["", f"1-minute load average at the end of the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
              "(the machine was shared with other jobs; absolute times are inflated accordingly)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--copies", type=int, default=6, help="copies of each language's notes to ingest")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        settings = load_settings(overrides={"data_dir": tmp, "memory": {"qdrant_url": None, "qdrant_path": None}})
        ingest = bench_ingest(settings, args.copies)
        print(ingest, flush=True)
        rows = bench_search(settings, sorted(args.sizes), args.queries)
    text = markdown(ingest, rows, args.queries)
    print(text)
    if not args.no_write:
        write_section("memory", text)


if __name__ == "__main__":
    main()
