"""One memory recall's query embedding on this machine's shared CPU, by torch thread count
(issue 12's profile; the reason for `embeddings.torch_threads: 1`, docs/memory.md).

Every answer with memory on waits for one search in the rag worker, which embeds the
question with the in-process model (all-MiniLM-L6-v2). This embeds the eight questions of
bench_concurrency.py one at a time (what the rag worker does for 8 concurrent requests)
and in one batch, with torch's default thread count and with 1 thread, alternating,
a few rounds each; medians are printed and written to docs/benchmarks.md. The figure
depends on what else runs: run it while the chat model works (e.g. during another
bench) to see the contention the rag worker meets.

Run: .venv/bin/python -m bench.bench_query_embedding   (~1 min)
"""

from __future__ import annotations

import statistics
import time

from bench.report import write_section
from configs.loader import load_settings
from workers.backends.embeddings import use_torch_threads
from workers.backends.registry import embedding_backend

QUESTIONS = ["What is the capital of France?", "Name three colors.", "How do I boil an egg?",
             "What is 2 + 2?", "Tell me about the sea.", "Why is the sky blue?", "Name a fruit.",
             "What is a cat?"]
ROUNDS = 5


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    import torch

    default_threads = torch.get_num_threads()
    settings = load_settings()
    backend = embedding_backend(settings, settings.memory.embedding_model)
    backend.embed(["warm up"])
    samples: dict[int, dict[str, list[float]]] = {t: {"one": [], "batch": []} for t in (default_threads, 1)}
    for _ in range(ROUNDS):
        for threads in samples:
            use_torch_threads(threads)
            samples[threads]["one"].append(timed(lambda: [backend.embed([q]) for q in QUESTIONS]) / len(QUESTIONS))
            samples[threads]["batch"].append(timed(lambda: backend.embed(QUESTIONS)))
    rows = ["| torch threads | one query (ms, median) | 8 queries one by one (ms) | 8 queries in one batch (ms) |",
            "|---|---|---|---|"]
    for threads, s in samples.items():
        one, batch = statistics.median(s["one"]) * 1000, statistics.median(s["batch"]) * 1000
        label = f"{threads} (torch's default here)" if threads == default_threads and threads != 1 else str(threads)
        rows.append(f"| {label} | {one:.0f} | {one * len(QUESTIONS):.0f} | {batch:.0f} |")
        print(rows[-1], flush=True)
    markdown = ("## Query embedding on a shared CPU, by torch threads (issue 12)\n\n"
                f"{backend.model_name} in-process, as the rag worker embeds each recall's question; medians "
                f"of {ROUNDS} alternating rounds on a machine whose cores the model servers and other work "
                "share. Why `embeddings.torch_threads` defaults to 1 (docs/memory.md).\n\n" + "\n".join(rows))
    print(markdown)
    write_section("query-embedding", markdown)


if __name__ == "__main__":
    main()
