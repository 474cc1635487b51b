"""Dispatch overhead and router latency (issue 3).

- A no-op step through the queue (Dispatcher.call -> Redis -> Celery worker -> event
  stream -> back) vs the same step body called in-process: p50/p99 per step.
- Steps/s through one worker per queue (all five queues busy at once).
- Router latency: the rules path, and the model path (one short JSON-constrained
  call to the tiny core model through the chat queue).

    .venv/bin/python -m bench.bench_dispatch [--steps 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

from bench.report import percentile, write_section
from configs.loader import get_settings, load_settings
from configs.schema import QUEUE_NAMES
from core_agent.ops import launcher
from core_agent.orchestration.dispatcher import Dispatcher
from core_agent.orchestration.router import Router
from workers.celery_app import create_celery_app
from workers.events import EventPublisher
from workers.noop import noop

ROUTER_PROMPTS = ["Hello!", "Search my notes and then write code that summarises them.",
                  "What is the capital of France?", "Сравни два подхода и составь план",
                  "Explain quicksort", "thanks a lot"]


def ms(values: list[float]) -> str:
    return f"{percentile(values, 0.5) * 1000:.2f} ms / {percentile(values, 0.99) * 1000:.2f} ms"


async def queue_latencies(dispatcher: Dispatcher, n: int) -> tuple[list[float], dict[str, list[float]]]:
    """Whole no-op round trips, and their phases (wall clock, same machine): send (the
    publish), pickup (sent -> the task body starts: the worker's wake-up, the hand-over to
    its pool process, the attempt event), back (the body ends -> the waiter has 'done')."""
    out: list[float] = []
    phases: dict[str, list[float]] = {"send": [], "pickup": [], "back": []}
    for i in range(n):
        t0 = time.time()
        task_id = await dispatcher.submit("chat.noop", {"echo": i}, queue="chat")
        t1 = time.time()
        result = await dispatcher.wait(task_id, "chat")
        t2 = time.time()
        out.append(t2 - t0)
        phases["send"].append(t1 - t0)
        phases["pickup"].append((result.started_at or t1) - t1)
        phases["back"].append(t2 - (result.finished_at or t2))
    return out, phases


def inprocess_latencies(n: int, redis_url: str) -> list[float]:
    """The same step body, with the same event publishing, without the queue hop."""
    import redis

    client = redis.Redis.from_url(redis_url)
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        publisher = EventPublisher(client, f"bench-inproc-{i}", 60)
        publisher.start_attempt()
        publisher.done(noop({"echo": i}, publisher))
        out.append(time.perf_counter() - t0)
    return out


async def throughput(dispatcher: Dispatcher, per_queue: int) -> float:
    sem = asyncio.Semaphore(16)  # bounded in-flight requests

    async def one(queue: str, i: int) -> None:
        async with sem:
            await dispatcher.call(f"{queue}.noop", {"echo": i}, queue=queue)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(q, i) for q in QUEUE_NAMES for i in range(per_queue)))
    return per_queue * len(QUEUE_NAMES) / (time.perf_counter() - t0)


async def router_latencies(router: Router, dispatcher: Dispatcher, model_calls: int) -> tuple[list[float], list[float]]:
    rules = []
    for _ in range(200):
        for prompt in ROUTER_PROMPTS:
            t0 = time.perf_counter()
            router.by_rules(prompt)
            rules.append(time.perf_counter() - t0)
    from core_agent.orchestration.router import ROUTE_PROMPT, ROUTE_SCHEMA
    from configs.contracts.tasks import ChatMessage, ChatTask, GenerationParams

    model = []
    for i in range(model_calls):
        task = ChatTask(model="core", stream=False, messages=[
            ChatMessage(role="system", content=ROUTE_PROMPT),
            ChatMessage(role="user", content=ROUTER_PROMPTS[i % len(ROUTER_PROMPTS)])],
            params=GenerationParams(max_tokens=16, temperature=0.0, seed=0, thinking=False,
                                    response_format={"type": "json_schema",
                                                     "json_schema": {"name": "route", "schema": ROUTE_SCHEMA}}))
        t0 = time.perf_counter()
        await dispatcher.call("chat.generate", task.model_dump(), queue="chat")
        model.append(time.perf_counter() - t0)
    return rules, model


async def run(args: argparse.Namespace) -> str:
    settings = get_settings()
    redis = aioredis.Redis.from_url(settings.redis_url)
    dispatcher = Dispatcher(settings, create_celery_app(settings), redis)
    await dispatcher.call("chat.noop", {}, queue="chat")  # warm up connections
    load_before = os.getloadavg()[0]
    via_queue, phases = await queue_latencies(dispatcher, args.steps)
    in_process = inprocess_latencies(args.steps, settings.redis_url)
    steps_per_s = await throughput(dispatcher, args.steps // 2)
    rules, model = await router_latencies(Router(settings.router), dispatcher, args.model_calls)
    await redis.aclose()
    added = percentile(via_queue, 0.5) - percentile(in_process, 0.5)
    return (
        "## Dispatch overhead and router latency (issue 3)\n\n"
        f"One Celery worker per queue (prefork, concurrency 1), Redis on loopback, {args.steps} sequential no-op steps.\n\n"
        "| measurement | p50 / p99 |\n|---|---|\n"
        f"| no-op step through the queue (send, worker, event stream back) | {ms(via_queue)} |\n"
        f"| same step body in-process (incl. its Redis event writes) | {ms(in_process)} |\n"
        f"| router, rules path ({len(rules)} decisions) | {percentile(rules, 0.5) * 1e6:.1f} µs / {percentile(rules, 0.99) * 1e6:.1f} µs |\n"
        f"| router, model path (tiny core model, 16-token JSON-constrained call, {len(model)} calls) | {ms(model)} |\n\n"
        f"- overhead the queue adds per step (p50): **{added * 1000:.2f} ms** (target: no-op p50 <= 5 ms, "
        f"p99 <= 15 ms); queue / in-process p50: {percentile(via_queue, 0.5) / percentile(in_process, 0.5):.1f}x\n"
        f"- where a no-op's time goes (p50): send {percentile(phases['send'], 0.5) * 1000:.2f} ms, pickup "
        f"{percentile(phases['pickup'], 0.5) * 1000:.2f} ms, back {percentile(phases['back'], 0.5) * 1000:.2f} ms "
        "(send: the publish from the API's thread pool; pickup: the worker's wake-up, the hand-over to its pool "
        "process and the attempt event; back: the 'done' event to the waiter; the no-op body itself ~0)\n"
        f"- throughput, five queues busy at once: **{steps_per_s:.0f} no-op steps/s**\n"
        f"- rules path target <= 1 ms: p99 {percentile(rules, 0.99) * 1000:.3f} ms\n"
        f"- load average (1 min) at the start of the no-op steps: {load_before:.2f} on {os.cpu_count()} cores\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--model-calls", type=int, default=10)
    args = parser.parse_args()
    from bench.harness.stack import stack_env  # the same isolated-stack environment the tests use

    os.environ.update(stack_env(Path(tempfile.mkdtemp(prefix="bench-dispatch-"))))
    get_settings.cache_clear()
    settings = load_settings()
    wanted = {"redis"} | {f"worker-{q}" for q in QUEUE_NAMES}
    print("starting redis and one worker per queue ...", flush=True)
    launcher.up(settings, progress=print, only=wanted)
    try:
        table = asyncio.run(run(args))
    finally:
        launcher.down(settings, progress=lambda _: None)
    print(table)
    write_section("dispatch", table)


if __name__ == "__main__":
    main()
