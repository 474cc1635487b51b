"""The API's own CPU per chat request (issue 17: what queues up when N requests arrive at once).

One API process serves every request on one event loop, so when N streams start at the
same moment, the k-th waits for the API work of the k-1 before it: time to first token
under simultaneous starts grows with the API's CPU per request. This bench measures that
CPU directly: sequential chat requests (1 token from the synthetic source, so the worker
and the model cost next to nothing), psutil CPU time of the API process / requests, and
the chat worker's in the same run: this shared machine's speed drifts by up to 1.6x
within an hour, so compare the API's figure with the worker's, not across runs.

`--burst N` also starts N streamed requests at the same moment (as bench_streaming's
rows do) and reports the CPU one such burst costs in each process, the bench's own
httpx client included: on a 2-core machine their sum over 2 is the least time in which
the burst can be served, whatever the order of the work.

The API runs on uvloop + httptools and redis-py parses with hiredis (pyproject.toml):
docs/architecture.md has the alternating-run comparison with asyncio + h11.

    .venv/bin/python -m bench.bench_api_cpu [--json] [--requests 300] [--rounds 3] [--burst 8]
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


async def one_token_chat(client: httpx.AsyncClient, stream: bool) -> None:
    """One chat request for 1 token from the synthetic source, read to its end."""
    body = {"model": MODEL, "stream": stream, "max_tokens": 1, "mode": "direct",
            "messages": [{"role": "user", "content": "One token, please."}]}
    async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        resp.raise_for_status()
        async for _ in resp.aiter_bytes():
            pass


async def measure(api_url: str, token: str, pids: tuple[int, int], stream: bool,
                  requests: int) -> tuple[float, float, float]:
    """(API CPU, worker CPU, wall) in ms per request."""
    api, worker = (CpuMeter(pid) for pid in pids)
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {token}"},
                                 timeout=120) as client:
        for _ in range(20):  # warm: connections, threads, caches
            await one_token_chat(client, stream)
        api0, worker0, wall0 = api.seconds(), worker.seconds(), time.perf_counter()
        for _ in range(requests):
            await one_token_chat(client, stream)
        per = 1000 / requests
        return (api.seconds() - api0) * per, (worker.seconds() - worker0) * per, (time.perf_counter() - wall0) * per


@dataclass
class BurstRow:
    burst: int
    bursts: int
    cpu_ms_per_burst: dict[str, float]   # process -> CPU ms one burst cost it
    wall_ms_per_burst: float             # first request sent -> last stream ended
    cores: int

    @property
    def cpu_floor_ms(self) -> float:
        """The least wall time the burst's CPU allows on this machine's cores."""
        return sum(self.cpu_ms_per_burst.values()) / self.cores


async def measure_bursts(api_url: str, token: str, meters: dict[str, CpuMeter], burst: int,
                         bursts: int) -> tuple[dict[str, float], float]:
    """CPU ms per burst by process, and wall ms per burst, of `bursts` bursts of `burst`
    streamed 1-token requests started at once."""
    limits = httpx.Limits(max_connections=burst, max_keepalive_connections=burst)
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {token}"},
                                 timeout=120, limits=limits) as client:
        for _ in range(3):  # warm: N connections open, the worker's threads started
            await asyncio.gather(*(one_token_chat(client, stream=True) for _ in range(burst)))
        cpu0 = {name: m.seconds() for name, m in meters.items()}
        wall = 0.0
        for _ in range(bursts):
            started = time.perf_counter()
            await asyncio.gather(*(one_token_chat(client, stream=True) for _ in range(burst)))
            wall += time.perf_counter() - started
            await asyncio.sleep(0.1)  # the bursts do not overlap (idle time is not counted in wall)
        cpu = {name: round((m.seconds() - cpu0[name]) * 1000 / bursts, 1) for name, m in meters.items()}
        return cpu, wall * 1000 / bursts


def run(args: argparse.Namespace, progress) -> tuple[list[Row], BurstRow | None]:
    overrides = stack_overrides(Path(tempfile.mkdtemp(prefix="bench-api-cpu-")), 2000.0, 4, 15.0)
    samples: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
    progress("starting redis, chat worker (synthetic source) and API ...")
    with running_stack(overrides, only={"redis", "worker-chat", "api"}) as stack:
        pids = (launcher.running(stack.settings, "api"), launcher.running(stack.settings, "worker-chat"))
        assert all(pids), "the API or the chat worker did not start"
        burst_row = None
        if args.burst:
            meters: dict[str, CpuMeter] = {"API": CpuMeter(pids[0]), "chat worker": CpuMeter(pids[1]),
                                           "Redis": CpuMeter(launcher.running(stack.settings, "redis")),
                                           # its own CPU only: the stack's processes are its children
                                           "bench client (httpx)": CpuMeter(os.getpid(), children=False)}
            cpu, wall = asyncio.run(measure_bursts(stack.settings.api_url, stack.token, meters, args.burst,
                                                   args.bursts))
            burst_row = BurstRow(burst=args.burst, bursts=args.bursts, cpu_ms_per_burst=cpu,
                                 wall_ms_per_burst=round(wall, 1), cores=os.cpu_count() or 1)
            progress(f"  bursts of {args.burst}: CPU ms per burst {cpu}, wall {wall:.1f} ms")
        for round_no in range(args.rounds):
            for stream in (True, False):
                figures = asyncio.run(measure(stack.settings.api_url, stack.token, pids, stream, args.requests))
                samples[stream].append(figures)
                progress(f"  round {round_no + 1}, stream={stream}: API {figures[0]:.2f} ms, "
                         f"worker {figures[1]:.2f} ms CPU per request")
    load = round(os.getloadavg()[0], 2)
    rows = [Row(stream=stream, requests=args.requests * len(f),
                api_cpu_ms_per_request=round(statistics.median(x[0] for x in f), 2),
                worker_cpu_ms_per_request=round(statistics.median(x[1] for x in f), 2),
                wall_ms_per_request=round(statistics.median(x[2] for x in f), 2), load_average_1m=load)
            for stream, f in samples.items()]
    return rows, burst_row


def burst_table(row: BurstRow) -> str:
    total = sum(row.cpu_ms_per_burst.values())
    lines = ["| process | CPU per burst | share |", "|---|---|---|"]
    for name, ms in row.cpu_ms_per_burst.items():
        lines.append(f"| {name} | {ms:.1f} ms | {100 * ms / total:.0f}% |")
    lines.append(f"| **all** | **{total:.1f} ms** | |")
    return (f"\n\nBursts of {row.burst} streamed 1-token requests started at once ({row.bursts} bursts after 3 "
            f"warm-up bursts), CPU one burst costs each process:\n\n" + "\n".join(lines) + "\n\n"
            f"On {row.cores} cores the burst needs at least {row.cpu_floor_ms:.1f} ms of wall time (all CPU / "
            f"cores); it took {row.wall_ms_per_burst:.1f} ms from the first request sent to the last stream "
            "ended. Every process of the pipeline and the client share the cores, so the time to first token "
            "of the median stream in such a burst is bound by the CPU of all of them, not only the API's "
            "(docs/architecture.md, \"Time to first token under concurrent streams\").")


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
    parser.add_argument("--burst", type=int, default=8, help="requests started at once (0: no burst figures)")
    parser.add_argument("--bursts", type=int, default=100, help="bursts measured")
    parser.add_argument("--json", action="store_true", help="print one JSON object per row")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/")
    args = parser.parse_args()
    rows, burst_row = run(args, (lambda _: None) if args.json else print)
    if args.json:
        for row in rows:
            print(json.dumps(asdict(row)), flush=True)
        if burst_row is not None:
            print(json.dumps({**asdict(burst_row), "cpu_floor_ms": round(burst_row.cpu_floor_ms, 1)}), flush=True)
    markdown = table(rows, args) + (burst_table(burst_row) if burst_row is not None else "")
    if not args.json:
        print(markdown)
    if not args.no_write:
        write_section("api_cpu", markdown)


if __name__ == "__main__":
    main()
