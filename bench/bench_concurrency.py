"""Aggregate tokens/s through the appliance vs straight to the same vLLM CPU server, at
1, 4 and 8 concurrent streaming requests (target: appliance/direct >= 0.9 at 8).

Both paths ask the same server (the tiny SmolLM2 on vLLM's CPU build, the production
backend code) with the same prompts, max_tokens and temperature 0; aggregate tokens/s =
completion tokens of all requests / wall time of the batch. The appliance path is the
owner's: OpenAI API -> memory recall (a search in the rag worker) -> chat queue ->
Celery worker (concurrency 8) -> vLLM, in `mode: direct` (no router call), memory on.
The direct requests carry the notes the appliance recalls for the same question
(`as_the_appliance_sends_it`): sent without them, the direct path did less work
(~20 instead of ~480 prompt tokens, and other answers), and the ratio measured the
notes' prefill on a CPU rather than the pipeline (0.25 at 8 with the notes absent).

Run: .venv/bin/python -m bench.bench_concurrency [--memory-off] [--before-torch-threads 2]
(~10 min on 2 cores, twice that with the before/after comparison)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import openai

from bench.report import write_section
from bench.harness.stack import Stack, running_stack, stack_env
from configs.contracts.memory import SearchResult
from configs.contracts.tasks import ChatMessage
from core_agent.orchestration.memory_client import fit_context
from core_agent.orchestration.prompt_layout import with_recalled
from bench.harness.vllm_cpu import SERVED_NAME, running_vllm

LEVELS = (1, 4, 8)
MAX_TOKENS = 48
QUESTIONS = ["What is the capital of France?", "Name three colors.", "How do I boil an egg?",
             "What is 2 + 2?", "Tell me about the sea.", "Why is the sky blue?", "Name a fruit.",
             "What is a cat?"]


def one(client: openai.OpenAI, model: str, messages: list[dict], extra: dict) -> int:
    stream = client.chat.completions.create(model=model, stream=True, max_tokens=MAX_TOKENS, temperature=0,
                                            stream_options={"include_usage": True},
                                            messages=messages, extra_body=extra)
    tokens = 0
    for chunk in stream:
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    return tokens


def aggregate(client: openai.OpenAI, model: str, n: int, extra: dict,
              prompt: Callable[[str], list[dict]], rounds: int = 2) -> float:
    total_tokens, total_s = 0, 0.0
    with ThreadPoolExecutor(n) as pool:
        for r in range(rounds):
            batch = [prompt(QUESTIONS[(i + r) % len(QUESTIONS)]) for i in range(n)]  # before the clock starts
            started = time.perf_counter()
            tokens = list(pool.map(lambda messages: one(client, model, messages, extra), batch))
            total_s += time.perf_counter() - started
            total_tokens += sum(tokens)
    return total_tokens / total_s


def plain(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


def as_the_appliance_sends_it(stack: Stack) -> Callable[[str], list[dict]]:
    """The prompt the appliance gives the model for a question: the same memory search
    (POST /memory/search), packed and placed by the product's own code (fit_context,
    with_recalled). The direct path gets this prompt, so both paths ask vLLM for the
    same work and the ratio measures the pipeline (queues, recall, streaming), not the
    extra prefill of the recalled notes (a few hundred tokens, slow on a CPU, and they
    change the answers' lengths)."""
    memory = stack.settings.memory

    def prompt(question: str) -> list[dict]:
        with stack.http() as http:
            resp = http.post("/memory/search", json={"query": question, "k": memory.context_top_k})
        resp.raise_for_status()
        notes = fit_context(SearchResult.model_validate(resp.json()).hits, memory.context_budget_tokens).messages
        return [m.wire() for m in with_recalled([ChatMessage(role="user", content=question)], notes)]
    return prompt


def measure(server, direct: openai.OpenAI, env_extra: dict[str, str]) -> list[str]:
    """Direct vs appliance rows at each level, the appliance started with `env_extra`."""
    env = stack_env(Path(tempfile.mkdtemp(prefix="bench-concurrency-")))
    env.update({"APPLIANCE_MODELS__CORE__BACKEND": "openai", "APPLIANCE_MODELS__CORE__BASE_URL": server.base_url,
                "APPLIANCE_MODELS__CORE__SERVED_MODEL": SERVED_NAME,
                "APPLIANCE_WORKERS__CHAT__CONCURRENCY": str(max(LEVELS)),
                "APPLIANCE_WORKERS__CHAT__POOL": "threads"})  # I/O-bound: waits on vLLM
    env.update(env_extra)
    rows = ["| concurrent requests | direct to vLLM (tokens/s) | through the appliance (tokens/s) | ratio |",
            "|---|---|---|---|"]
    with running_stack(env, progress=print) as stack:
        appliance = stack.openai()
        same = plain if env.get("APPLIANCE_MEMORY__ENABLED") == "false" else as_the_appliance_sends_it(stack)
        one(direct, SERVED_NAME, plain("warm up"), {})
        one(appliance, "core", plain("warm up"), {"mode": "direct"})
        for n in LEVELS:
            d = aggregate(direct, SERVED_NAME, n, {}, same)
            a = aggregate(appliance, "core", n, {"mode": "direct"}, plain)
            rows.append(f"| {n} | {d:.1f} | {a:.1f} | {a / d:.2f} |")
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # --memory-off: without the memory recall (an embedding of every question in the rag
    # worker) in front of each answer, i.e. the dispatch path alone.
    parser.add_argument("--memory-off", action="store_true", help="answer without memory recall")
    parser.add_argument("--before-torch-threads", type=int, default=None, metavar="N",
                        help="first measure the appliance with embeddings.torch_threads=N (the setting "
                             "before issue 12's fix was torch's default, one per core), then with the default")
    args = parser.parse_args()
    variants: list[tuple[str, dict[str, str]]] = []
    if args.before_torch_threads:
        variants.append((f"before: embeddings.torch_threads={args.before_torch_threads} (torch's default here)",
                         {"APPLIANCE_EMBEDDINGS__TORCH_THREADS": str(args.before_torch_threads)}))
    variants.append(("after: the default embeddings.torch_threads=1" if variants else "", {}))
    if args.memory_off:
        variants = [("", {"APPLIANCE_MEMORY__ENABLED": "false"})]
    tables = []
    with running_vllm(progress=print, enforce_eager=False) as server:
        direct = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=600)
        for label, extra in variants:
            rows = measure(server, direct, extra)
            tables.append((f"{label}:\n\n" if label else "") + "\n".join(rows))
    title = "memory recall off" if args.memory_off else "memory recall on (the default)"
    markdown = (f"## Concurrency: appliance vs direct vLLM, {title} (issue 12)\n\n"
                f"Tiny SmolLM2-135M on vLLM's CPU build, {MAX_TOKENS} max tokens, temperature 0, streaming; "
                "aggregate completion tokens/s over 2 rounds per level; each table measures direct and "
                "appliance at each level back to back. With memory on, the direct requests carry the "
                "notes the appliance recalls for the same question (same search, same packing and place), "
                "so both ask vLLM for the same work. Target: ratio >= 0.9 at 8.\n\n"
                + "\n\n".join(tables))
    print(markdown)
    write_section("concurrency-memory-off" if args.memory_off else "concurrency", markdown)


if __name__ == "__main__":
    main()
