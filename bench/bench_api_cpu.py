"""The API's own CPU per chat request (issue 17: what queues up when N requests arrive at once).

One API process serves every request on one event loop, so when N streams start at the
same moment, the k-th waits for the API work of the k-1 before it: time to first token
under simultaneous starts grows with the API's CPU per request. This bench measures that
CPU directly: sequential chat requests (1 token from the synthetic source, so the worker
and the model cost next to nothing), psutil CPU time of the API process / requests, and
the chat worker's in the same run: this shared machine's speed drifts by up to 1.6x
within an hour, so compare the API's figure with the worker's, not across runs.

Tried with this bench and not kept (no difference beyond the noise, alternating rounds):
uvicorn on uvloop + httptools instead of asyncio + h11, and redis-py with hiredis.

    .venv/bin/python -m bench.bench_api_cpu [--json] [--requests 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from bench.bench_streaming import MODEL, CpuMeter, stack_overrides
from bench.harness.stack import running_stack
from bench.report import write_section
from core_agent.ops import launcher

@dataclass
class Row:
    stream: bool
    requests: int
    api_cpu_ms_per_request: float
    worker_cpu_ms_per_request: float
    wall_ms_per_request: float
    load_average_1m: float


async def measure(api_url: str, token: str, pids: tuple[int, int], stream: bool,
                  requests: int) -> tuple[float, float, float]:
    """(API CPU, worker CPU, wall) in ms per request."""
    body = {"model": MODEL, "stream": stream, "max_tokens": 1, "mode": "direct",
            "messages": [{"role": "user", "content": "One token, please."}]}
    api, worker = (CpuMeter(pid) for pid in pids)
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {token}"},
                                 timeout=120) as client:
        async def one() -> None:
            async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
                resp.raise_for_status()
                async for _ in resp.aiter_bytes():
                    pass

        for _ in range(20):  # warm: connections, threads, caches
            await one()
        api0, worker0, wall0 = api.seconds(), worker.seconds(), time.perf_counter()
        for _ in range(requests):
            await one()
        per = 1000 / requests
        return (api.seconds() - api0) * per, (worker.seconds() - worker0) * per, (time.perf_counter() - wall0) * per


def run(args: argparse.Namespace, progress) -> list[Row]:
    overrides = stack_overrides(Path(tempfile.mkdtemp(prefix="bench-api-cpu-")), 2000.0, 4, 15.0)
    samples: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
    progress("starting redis, chat worker (synthetic source) and API ...")
    with running_stack(overrides, only={"redis", "worker-chat", "api"}) as stack:
        pids = (launcher.running(stack.settings, "api"), launcher.running(stack.settings, "worker-chat"))
        assert all(pids), "the API or the chat worker did not start"
        for round_no in range(args.rounds):
            for stream in (True, False):
                figures = asyncio.run(measure(stack.settings.api_url, stack.token, pids, stream, args.requests))
                samples[stream].append(figures)
                progress(f"  round {round_no + 1}, stream={stream}: API {figures[0]:.2f} ms, "
                         f"worker {figures[1]:.2f} ms CPU per request")
    load = round(os.getloadavg()[0], 2)
    return [Row(stream=stream, requests=args.requests * len(f),
                api_cpu_ms_per_request=round(statistics.median(x[0] for x in f), 2),
                worker_cpu_ms_per_request=round(statistics.median(x[1] for x in f), 2),
                wall_ms_per_request=round(statistics.median(x[2] for x in f), 2), load_average_1m=load)
            for stream, f in samples.items()]


def table(rows: list[Row], args: argparse.Namespace) -> str:
    lines = ["| streamed | API CPU per request | chat worker CPU per request | wall per request |",
             "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {'yes' if r.stream else 'no'} | {r.api_cpu_ms_per_request:.2f} ms | "
                     f"{r.worker_cpu_ms_per_request:.2f} ms | {r.wall_ms_per_request:.2f} ms |")
    return ("## API CPU per chat request (bench/bench_api_cpu.py, issue 17)\n\n"
            f"Sequential chat requests of 1 token from the synthetic source ({args.requests} per round, "
            f"{args.rounds} rounds alternating streamed and not, medians), psutil CPU time of the API process "
            "and of the chat worker (threads pool) / requests. When N streams start at once, the k-th waits for "
            "the API work of those before it, so the API's figure is what time to first token under "
            "simultaneous starts grows by (bench_streaming). Before/after figures of the changes behind it: "
            "docs/architecture.md, \"Time to first token under concurrent streams\".\n\n" + "\n".join(lines) + "\n\n"
            f"Load average (1 min) at the end: {rows[-1].load_average_1m}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object per row")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/")
    args = parser.parse_args()
    rows = run(args, (lambda _: None) if args.json else print)
    if args.json:
        for row in rows:
            print(json.dumps(asdict(row)), flush=True)
    markdown = table(rows, args)
    if not args.json:
        print(markdown)
    if not args.no_write:
        write_section("api_cpu", markdown)


if __name__ == "__main__":
    main()
