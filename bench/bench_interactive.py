"""Interactive first: time to first token of the owner's chat while background work is in
flight, against the same chat alone (issue 10). Embedded default stack (llama.cpp, tiny model).

Each round: the owner's streamed chat alone; then 4 background requests (Open WebUI
"### Task:" title prompts, a chore the appliance recognises) are sent, and once they are
running the same owner chat is timed again. Run once with the background lane
(configs/traffic.yaml: background_queue chat_bg, the default) and, for comparison, once
with everything on the one interactive queue (background_queue chat).

    .venv/bin/python -m bench.bench_interactive [--rounds 5] [--no-shared]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import openai

from bench.report import percentile, write_section

BACKGROUND = 4
BACKGROUND_TOKENS = 96
OWNER_PROMPT = "Name one colour of the sky."
CHORE_PROMPT = ("### Task:\nGenerate a concise, 3-5 word title with an emoji summarizing the chat history.\n"
                "### Output:\nJSON format: { \"title\": \"your concise title here\" }\n"
                "### Chat History:\n<chat_history>\nUSER: Tell me a long story about {n} dragons.\n</chat_history>")


def owner_ttft(client: openai.OpenAI) -> float:
    t0 = time.perf_counter()
    stream = client.chat.completions.create(model="core", stream=True, max_tokens=16, temperature=0,
                                            messages=[{"role": "user", "content": OWNER_PROMPT}],
                                            extra_body={"memory": "off"})
    ttft = float("nan")
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            ttft = time.perf_counter() - t0
            break
    stream.close()
    return ttft


def background_load(client: openai.OpenAI, n: int, started: threading.Event) -> list[threading.Thread]:
    """n chores, long answers; `started` is set once the first one streams a token."""
    def one(i: int) -> None:
        stream = client.chat.completions.create(model="core", stream=True, max_tokens=BACKGROUND_TOKENS, temperature=0.7,
                                                messages=[{"role": "user", "content": CHORE_PROMPT.replace("{n}", str(i))}])
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                started.set()
    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    return threads


def measure(stack, rounds: int) -> tuple[list[float], list[float]]:
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.token, timeout=600, max_retries=0)
    owner_ttft(client)                                    # warm-up (model load, connections)
    alone, loaded = [], []
    for r in range(rounds):
        alone.append(owner_ttft(client))
        started = threading.Event()
        threads = background_load(client, BACKGROUND, started)
        if not started.wait(300):
            raise RuntimeError("the background requests never started answering")
        time.sleep(0.5)                                   # well inside their generation
        loaded.append(owner_ttft(client))
        for t in threads:
            t.join()
        print(f"  round {r + 1}: alone {alone[-1] * 1000:.0f} ms, with {BACKGROUND} background "
              f"{loaded[-1] * 1000:.0f} ms", flush=True)
    return alone, loaded


def run_stack(queue: str, rounds: int) -> tuple[list[float], list[float]]:
    from bench.harness.stack import running_stack, stack_env

    env = stack_env(Path(tempfile.mkdtemp(prefix=f"bench-interactive-{queue}-")))
    env["APPLIANCE_TRAFFIC__BACKGROUND_QUEUE"] = queue
    # Queued background requests wait their turn; they must not time out while waiting.
    env["APPLIANCE_CELERY__PICKUP_TIMEOUT_S"] = "900"
    print(f"starting the embedded stack (background_queue={queue}) ...", flush=True)
    with running_stack(env, progress=print) as stack:
        return measure(stack, rounds)


def row(label: str, alone: list[float], loaded: list[float]) -> str:
    a, b = statistics.median(alone), statistics.median(loaded)
    return (f"| {label} | {a * 1000:.0f} ms | {b * 1000:.0f} ms (p90 {percentile(loaded, 0.9) * 1000:.0f} ms) "
            f"| **{b / a:.2f}x** |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-shared", action="store_true", help="skip the one-queue comparison")
    args = parser.parse_args()
    rows = [row("background lane (default: chat + chat_bg, bg worker at nice 15)", *run_stack("chat_bg", args.rounds))]
    if not args.no_shared:
        rows.append(row("one queue for everything (background_queue: chat)", *run_stack("chat", args.rounds)))
    table = (
        "## Interactive first: owner's time to first token under background load (issue 10)\n\n"
        f"Embedded default (llama.cpp, SmolLM2-135M, chat worker concurrency 1). The owner's streamed chat "
        f"(16 tokens, memory off) alone, then while {BACKGROUND} Open WebUI-style \"### Task:\" title requests "
        f"({BACKGROUND_TOKENS} tokens each) are in flight; medians of {args.rounds} rounds. Target: <= 1.5x.\n\n"
        "| setup | TTFT alone | TTFT with 4 background | ratio |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    print(table)
    write_section("interactive", table)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
