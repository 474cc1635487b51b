"""Load on the embedded default (issue 16): 16 concurrent chats and 4 webhook calls at
once, bounded in time, against a real stack (llama.cpp SmolLM2 on one chat worker,
Qdrant Edge memory, Redis, Celery).

Figures: success rate, p50/p95 latency of chats and webhook calls, /health p99 while
the load runs (polled every 0.2 s), and whether every answered turn is stored: for
each answered chat or webhook call, its conversation holds the assistant message of
its task id (turns stored = turns answered).

Run: .venv/bin/python -m bench.bench_load   (~5-10 min on 2 busy cores)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.harness.stack import running_stack, stack_env
from bench.report import percentile, write_section
from configs.schema import CeleryConfig

CHATS = 16
WEBHOOKS = 4
MAX_TOKENS = 16
DEADLINE_S = 900.0  # the whole load must finish within this; later answers count as failures
HOOK = "load"
HOOK_TOKEN = "bench-load-hook-token-0123456789"
QUESTIONS = ["What is the capital of France?", "Name three colors.", "How do I boil an egg?",
             "What is 2 + 2?", "Tell me about the sea.", "Why is the sky blue?", "Name a fruit.",
             "What is a cat?"]


@dataclass
class Outcome:
    kind: str               # chat | webhook
    ok: bool
    seconds: float
    status: int
    conversation_id: str | None = None
    task_id: str | None = None
    error: str = ""


def _chat(url: str, token: str, i: int, deadline: float) -> Outcome:
    started = time.perf_counter()
    try:
        response = httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {token}"},
                              timeout=max(1.0, deadline - time.monotonic()),
                              json={"messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                                    "max_tokens": MAX_TOKENS, "mode": "direct"})
    except httpx.HTTPError as exc:
        return Outcome("chat", False, time.perf_counter() - started, 0, error=f"{exc.__class__.__name__}: {exc}")
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    ok = response.status_code == 200 and bool(body.get("choices"))
    return Outcome("chat", ok, time.perf_counter() - started, response.status_code,
                   body.get("conversation_id"), body.get("task_id"), "" if ok else response.text[:200])


def _webhook(url: str, i: int, deadline: float) -> Outcome:
    started = time.perf_counter()
    try:
        response = httpx.post(f"{url}/webhooks/{HOOK}", headers={"Authorization": f"Bearer {HOOK_TOKEN}"},
                              timeout=max(1.0, deadline - time.monotonic()),
                              json={"question": QUESTIONS[(i + 3) % len(QUESTIONS)]})
    except httpx.HTTPError as exc:
        return Outcome("webhook", False, time.perf_counter() - started, 0, error=f"{exc.__class__.__name__}: {exc}")
    body = response.json()
    ok = response.status_code == 200 and body.get("status") == "succeeded"
    return Outcome("webhook", ok, time.perf_counter() - started, response.status_code,
                   body.get("conversation_id"), body.get("task_id"), "" if ok else response.text[:200])


def _stored(url: str, token: str, outcome: Outcome) -> bool:
    """The answered turn is in its conversation: an assistant message of its task."""
    if not outcome.conversation_id or not outcome.task_id:
        return False
    response = httpx.get(f"{url}/conversations/{outcome.conversation_id}/messages",
                         headers={"Authorization": f"Bearer {token}"}, timeout=30)
    if response.status_code != 200:
        return False
    return any(m["role"] == "assistant" and m.get("task_id") == outcome.task_id for m in response.json())


def _poll_health(url: str, stop: threading.Event, samples: list[float]) -> None:
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                client.get(f"{url}/health").raise_for_status()
                samples.append((time.perf_counter() - started) * 1000)
            except httpx.HTTPError:
                samples.append(float("inf"))
            stop.wait(0.2)


def run_load(url: str, token: str) -> tuple[list[Outcome], list[float], float]:
    deadline = time.monotonic() + DEADLINE_S
    health: list[float] = []
    stop = threading.Event()
    poller = threading.Thread(target=_poll_health, args=(url, stop, health), daemon=True)
    poller.start()
    started = time.perf_counter()
    with ThreadPoolExecutor(CHATS + WEBHOOKS) as pool:
        futures = [pool.submit(_chat, url, token, i, deadline) for i in range(CHATS)]
        futures += [pool.submit(_webhook, url, i, deadline) for i in range(WEBHOOKS)]
        wait(futures)
    wall = time.perf_counter() - started
    stop.set()
    poller.join()
    return [f.result() for f in futures], health, wall


def _fmt(values: list[float], q: float) -> str:
    return f"{percentile(values, q):.1f}" if values else "-"


def report(outcomes: list[Outcome], stored: int, health_ms: list[float], wall: float,
           load: tuple[float, float], settings: CeleryConfig) -> str:
    rows = ["| requests | succeeded | p50 latency (s) | p95 latency (s) |", "|---|---|---|---|"]
    for kind, total in (("chat", CHATS), ("webhook", WEBHOOKS)):
        mine = [o for o in outcomes if o.kind == kind]
        times = [o.seconds for o in mine if o.ok]
        rows.append(f"| {total} concurrent {kind}s | {sum(o.ok for o in mine)}/{total} | {_fmt(times, 0.5)} | "
                    f"{_fmt(times, 0.95)} |")
    answered = sum(o.ok for o in outcomes)
    finite = [h for h in health_ms if h != float("inf")]
    failures = sorted({f"{o.kind} {o.status}: {o.error}" for o in outcomes if not o.ok})
    lines = [
        f"{CHATS} chats (`mode: direct`, memory on, max_tokens {MAX_TOKENS}) and {WEBHOOKS} sync webhook "
        f"calls sent at once to the embedded default (llama.cpp SmolLM2-135M on one chat worker), "
        f"bounded by a {DEADLINE_S:.0f} s deadline.", "", *rows, "",
        f"- success rate: {answered}/{len(outcomes)} ({100 * answered / len(outcomes):.0f}%), all done in {wall:.0f} s",
        f"- turns stored = turns answered: {stored} stored of {answered} answered",
        f"- /health during the load: p50 {_fmt(finite, 0.5)} ms, p99 {_fmt(finite, 0.99)} ms over "
        f"{len(health_ms)} polls ({len(health_ms) - len(finite)} failed)",
        f"- machine load average (2 cores) before / after the run: {load[0]:.1f} / {load[1]:.1f}; "
        "other processes on the machine share the cores",
        f"- latency is queueing: one llama.cpp worker answers one request at a time, about one answer "
        f"every {wall / max(answered, 1):.1f} s here (wall time / answers), so the n-th answer waits for "
        f"the n-1 before it and p95 is close to the whole run. A request not picked up within "
        f"celery.pickup_timeout_s ({settings.pickup_timeout_s:g} s) keeps waiting while the worker is alive "
        f"(worker presence), up to celery.queue_wait_timeout_s ({settings.queue_wait_timeout_s:g} s); only "
        f"then, or with no worker alive, is it answered 503 (docs/architecture.md, \"Busy is not absent\").",
    ]
    if failures:
        lines.append("- failures: " + "; ".join(failures[:5]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    env = stack_env(Path(tempfile.mkdtemp(prefix="bench-load-")))
    # The production pickup patience (configs/appliance.yaml), not the tests' shorter one:
    # under load a queued chat waits for the ones before it.
    env.pop("APPLIANCE_CELERY__PICKUP_TIMEOUT_S", None)
    env.update({f"APPLIANCE_WEBHOOKS__HOOKS__{HOOK.upper()}__BEARER_TOKEN": HOOK_TOKEN,
                f"APPLIANCE_WEBHOOKS__HOOKS__{HOOK.upper()}__MODE": "sync",
                f"APPLIANCE_WEBHOOKS__HOOKS__{HOOK.upper()}__PROMPT_TEMPLATE": "Answer in one sentence: {{ question }}",
                f"APPLIANCE_WEBHOOKS__HOOKS__{HOOK.upper()}__MAX_TOKENS": str(MAX_TOKENS),
                f"APPLIANCE_WEBHOOKS__HOOKS__{HOOK.upper()}__SYNC_TIMEOUT_S": str(int(DEADLINE_S))})
    with running_stack(env, progress=print) as stack:
        _chat(stack.url, stack.token, 0, time.monotonic() + 300)  # warm: model loaded, pools open
        load_before = os.getloadavg()[0]
        outcomes, health, wall = run_load(stack.url, stack.token)
        load_after = os.getloadavg()[0]
        stored = sum(_stored(stack.url, stack.token, o) for o in outcomes if o.ok)
    text = report(outcomes, stored, health, wall, (load_before, load_after), stack.settings.celery)
    print(text)
    if not args.no_write:
        write_section("load", "## Load: concurrent chats and webhooks (bench/bench_load.py)\n\n" + text)


if __name__ == "__main__":
    main()
