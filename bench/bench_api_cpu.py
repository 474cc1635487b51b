"""The API's own CPU per chat request (issue 17: what queues up when N requests arrive at once).

One API process serves every request on one event loop, so when N streams start at the
same moment, the k-th waits for the API work of the k-1 before it: time to first token
under simultaneous starts grows with the API's CPU per request. This bench measures that
CPU directly: sequential chat requests (1 token from the synthetic source, so the worker
and the model cost next to nothing), psutil CPU time of the API process / requests.

Variants, each on its own stack and alternated over --rounds:
- `uvloop + httptools`: what uvicorn picks when they are installed (pyproject.toml).
- `asyncio + h11`: uvicorn forced to the pure-Python loop and HTTP parser
  (UVICORN_LOOP / UVICORN_HTTP), as before they were dependencies.
hiredis (the Redis reply parser) is installed in both: redis-py cannot be told to ignore it.

    .venv/bin/python -m bench.bench_api_cpu [--json] [--requests 300] [--rounds 2]
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
import psutil

from bench.bench_streaming import MODEL, stack_overrides
from bench.harness.stack import running_stack
from bench.report import write_section
from core_agent.ops import launcher

VARIANTS = {
    "uvloop + httptools": {},
    "asyncio + h11": {"UVICORN_LOOP": "asyncio", "UVICORN_HTTP": "h11"},
}


@dataclass
class Row:
    variant: str
    stream: bool
    requests: int
    api_cpu_ms_per_request: float
    wall_ms_per_request: float
    load_average_1m: float


async def measure(api_url: str, token: str, api_pid: int, stream: bool, requests: int) -> tuple[float, float]:
    body = {"model": MODEL, "stream": stream, "max_tokens": 1, "mode": "direct",
            "messages": [{"role": "user", "content": "One token, please."}]}
    api = psutil.Process(api_pid)

    def cpu() -> float:
        times = api.cpu_times()
        return times.user + times.system

    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {token}"},
                                 timeout=120) as client:
        async def one() -> None:
            async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
                resp.raise_for_status()
                async for _ in resp.aiter_bytes():
                    pass

        for _ in range(20):  # warm: connections, threads, caches
            await one()
        cpu0, wall0 = cpu(), time.perf_counter()
        for _ in range(requests):
            await one()
        return (cpu() - cpu0) * 1000 / requests, (time.perf_counter() - wall0) * 1000 / requests


def run(args: argparse.Namespace, progress) -> list[Row]:
    samples: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    for round_no in range(args.rounds):
        for variant, env in VARIANTS.items():
            overrides = {**stack_overrides(Path(tempfile.mkdtemp(prefix="bench-api-cpu-")), 2000.0, 4, 15.0), **env}
            progress(f"round {round_no + 1}/{args.rounds}: {variant} ...")
            with running_stack(overrides, only={"redis", "worker-chat", "api"}) as stack:
                pid = launcher.running(stack.settings, "api")
                assert pid, "the API did not start"
                for stream in (True, False):
                    figures = asyncio.run(measure(stack.settings.api_url, stack.token, pid, stream, args.requests))
                    samples.setdefault((variant, stream), []).append(figures)
                    progress(f"  stream={stream}: {figures[0]:.2f} ms CPU / request")
    load = round(os.getloadavg()[0], 2)
    return [Row(variant=v, stream=s, requests=args.requests * len(f),
                api_cpu_ms_per_request=round(statistics.median(x[0] for x in f), 2),
                wall_ms_per_request=round(statistics.median(x[1] for x in f), 2), load_average_1m=load)
            for (v, s), f in samples.items()]


def table(rows: list[Row], args: argparse.Namespace) -> str:
    lines = ["| API | streamed | API CPU per request | wall per request |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.variant} | {'yes' if r.stream else 'no'} | {r.api_cpu_ms_per_request:.2f} ms | "
                     f"{r.wall_ms_per_request:.2f} ms |")
    return ("## API CPU per chat request (bench/bench_api_cpu.py, issue 17)\n\n"
            f"Sequential chat requests of 1 token from the synthetic source ({args.requests} per variant and "
            f"round, {args.rounds} rounds alternating, medians), psutil CPU time of the API process / requests. "
            "When N streams start at once, the k-th waits for the API work of those before it, so this is "
            "what time to first token under simultaneous starts grows by (bench_streaming). hiredis is "
            "installed in both variants.\n\n" + "\n".join(lines) + "\n\n"
            f"Load average (1 min) at the end: {rows[-1].load_average_1m}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
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
