"""Concurrent streams at GPU rates through API -> Redis/Celery -> worker -> SSE (issue 17).

The chat model is the `synthetic_rate` backend (workers/backends/synthetic_rate.py): it
makes up tokens on a fixed schedule (rate_per_stream tokens/s, no model), so what is
measured is the pipeline's own ceiling. For each row, N clients start a stream at the
same moment, in --rounds bursts (after a warm-up burst of N short answers, which opens
the client's N connections and the worker's threads):

- delivered_ratio: tokens/s the clients received / tokens/s emitted. Emitted: the
  source's schedule ((tokens-1)/rate from its first token to its last); received: the
  same tokens over the time from the source's first token (the worker's started_at,
  in the task's result) to the client's last (wall clock, same machine). Summed over
  the streams; 1.0 = every token reached its client on schedule; a pipeline that falls
  behind ends late. source_kept_rate: the source's schedule / its actual duration
  (below 1.0 when its worker thread was starved).
- ttft_added_ms_p50: request sent (its last byte written to the socket, so a client
  that starts N requests at once does not count its own sending as the appliance's)
  -> first answer text at the client. The source's
  own time to first token is zero (it emits token 1 at once), so all of it is added by
  the appliance (API, stores, queue, worker pickup, event stream, SSE).
- api/redis/worker_cpu_percent: psutil CPU time of the launcher-recorded PIDs over the
  row, as % of one core.
- events_per_token: SSE content chunks the client got per token (1.0 = no coalescing).

Every stream's text is compared with what the source emitted (text_exact).
With --compare-uncoalesced the sweep also runs on a stack with celery.token_flush_ms=0
(one event per token, the behaviour before coalescing), in the same run.

    .venv/bin/python -m bench.bench_streaming [--json] [--streams 1,4,8,16] [--rate 200]
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
import redis.asyncio as aioredis

from bench.harness.stack import running_stack, stack_env
from bench.report import BENCHMARKS_MD, write_section
from configs.contracts.tasks import StreamEvent, stream_key
from configs.schema import Settings
from core_agent.ops import launcher
from workers.backends.synthetic_rate import synthetic_tokens

MODEL = "synth"
PLOT = BENCHMARKS_MD.parent / "streaming.png"


@dataclass
class StreamRun:
    ttft_s: float
    to_source_s: float    # request sent -> the source starts (API, stores, queue, worker pickup)
    received_s: float     # the source's first token (wall clock) -> last answer text at the client
    emitted_s: float      # the source's first -> last token (the worker's own timing)
    tokens: int
    chunks: int           # SSE chunks that carried answer text
    exact: bool


@dataclass
class Row:
    streams: int
    rate_per_stream: float
    token_flush_ms: float
    tokens_per_stream: int
    delivered_ratio: float
    source_kept_rate: float  # emitted tokens/s / configured rate (1.0 = the source kept its schedule)
    ttft_added_ms_p50: float
    ttft_added_ms_max: float
    ttft_to_source_ms_p50: float  # the part of it before the source started (API, stores, queue)
    events_per_token: float
    api_cpu_percent: float
    redis_cpu_percent: float
    worker_cpu_percent: float
    text_exact: bool
    load_average_1m: float


async def source_timing(redis: aioredis.Redis, task_id: str) -> tuple[float, float]:
    """(wall-clock start, seconds) of the generation, from the task's 'done' event."""
    entries = await redis.xrevrange(stream_key(task_id), count=1)
    event = StreamEvent.model_validate_json(entries[0][1][b"e"])
    assert event.type == "done" and event.result is not None, event
    return event.result.started_at or 0.0, event.result.seconds


async def one_stream(client: httpx.AsyncClient, redis: aioredis.Redis, tokens: int) -> StreamRun:
    body = {"model": MODEL, "stream": True, "max_tokens": tokens, "mode": "direct",
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Stream, please."}]}
    sent: list[float] = []

    async def trace(name: str, info: dict) -> None:
        if name == "http11.send_request_body.complete":
            sent.append(time.time())

    first = last = None
    parts: list[str] = []
    async with client.stream("POST", "/v1/chat/completions", json=body, extensions={"trace": trace}) as resp:
        resp.raise_for_status()
        task_id = resp.headers["x-task-id"]
        async for line in resp.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                now = time.time()  # wall clock: compared with the worker's started_at
                first = first or now
                last = now
                parts.append(chunk["choices"][0]["delta"]["content"])
    source_start, source_s = await source_timing(redis, task_id)
    start = sent[0]
    text = "".join(parts)
    return StreamRun(ttft_s=first - start, to_source_s=source_start - start, received_s=last - source_start, emitted_s=source_s, tokens=tokens,
                     chunks=len(parts), exact=text == "".join(synthetic_tokens(tokens)))


class CpuMeter:
    """CPU seconds of a process (and its children, unless `children` is False) between
    start() and percent()."""

    def __init__(self, pid: int | None, children: bool = True) -> None:
        self.proc = psutil.Process(pid) if pid else None
        self.children = children
        self._t0 = self._cpu0 = 0.0

    def seconds(self) -> float:
        """CPU seconds used so far by the process (and its children)."""
        if self.proc is None:
            return 0.0
        procs = [self.proc, *(self.proc.children(recursive=True) if self.children else ())]
        total = 0.0
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def start(self) -> None:
        self._t0, self._cpu0 = time.perf_counter(), self.seconds()

    def percent(self) -> float:
        return 100.0 * (self.seconds() - self._cpu0) / (time.perf_counter() - self._t0)


async def sweep_row(settings: Settings, token: str, streams: int, rate: float, tokens: int,
                    flush_ms: float, rounds: int) -> Row:
    meters = {name: CpuMeter(launcher.running(settings, name)) for name in ("api", "redis", "worker-chat")}
    limits = httpx.Limits(max_connections=streams + 4, max_keepalive_connections=streams + 4)
    redis = aioredis.Redis.from_url(settings.redis_url)
    async with httpx.AsyncClient(base_url=settings.api_url, headers={"Authorization": f"Bearer {token}"},
                                 timeout=300, limits=limits) as client:
        # Warm-up: a burst of `streams` short answers opens the client's connections and
        # starts the pools' threads, so a row measures the pipeline, not TCP connects
        # and thread start-up of its first burst.
        await asyncio.gather(*(one_stream(client, redis, 4) for _ in range(streams)))
        for meter in meters.values():
            meter.start()
        runs: list[StreamRun] = []
        for _ in range(rounds):
            runs += await asyncio.gather(*(one_stream(client, redis, tokens) for _ in range(streams)))
        cpu = {name: meter.percent() for name, meter in meters.items()}
    await redis.aclose()
    # Emitted: the source's schedule, (tokens - 1) / rate from its first token to its last (a
    # GPU does not slow down for its reader; the source keeps that schedule unless its worker
    # thread is starved, which is the pipeline's cost too). Received: the source's first token
    # -> the client's last. Summed over the streams.
    emitted = sum((r.tokens - 1) / rate for r in runs)
    received = sum(r.received_s for r in runs)
    ttft_ms = [r.ttft_s * 1000 for r in runs]
    return Row(streams=streams, rate_per_stream=rate, token_flush_ms=flush_ms, tokens_per_stream=tokens,
               delivered_ratio=round(emitted / received, 4),
               source_kept_rate=round(emitted / sum(r.emitted_s for r in runs), 4),
               ttft_added_ms_p50=round(statistics.median(ttft_ms), 2), ttft_added_ms_max=round(max(ttft_ms), 2),
               ttft_to_source_ms_p50=round(statistics.median(r.to_source_s * 1000 for r in runs), 2),
               events_per_token=round(sum(r.chunks for r in runs) / sum(r.tokens for r in runs), 3),
               api_cpu_percent=round(cpu["api"], 1), redis_cpu_percent=round(cpu["redis"], 1),
               worker_cpu_percent=round(cpu["worker-chat"], 1), text_exact=all(r.exact for r in runs),
               load_average_1m=round(os.getloadavg()[0], 2))


def stack_overrides(data_dir: Path, rate: float, max_streams: int, flush_ms: float) -> dict[str, str]:
    return {**stack_env(data_dir),
            "APPLIANCE_ALLOW_SYNTHETIC_BACKENDS": "true",
            f"APPLIANCE_MODELS__{MODEL.upper()}__BACKEND": "synthetic_rate",
            f"APPLIANCE_MODELS__{MODEL.upper()}__SYNTHETIC_TOKENS_PER_S": str(rate),
            f"APPLIANCE_MODELS__{MODEL.upper()}__MAX_TOKENS": "4096",
            "APPLIANCE_DEFAULT_MODEL": MODEL,   # the chat worker preloads nothing heavy
            "APPLIANCE_MEMORY__ENABLED": "false",  # recall has its own bench (bench_memory.py)
            # A GPU deployment's chat worker waits on the model server: threads, one per stream.
            "APPLIANCE_WORKERS__CHAT__POOL": "threads",
            "APPLIANCE_WORKERS__CHAT__CONCURRENCY": str(max_streams),
            "APPLIANCE_CELERY__TOKEN_FLUSH_MS": str(flush_ms)}


def run_sweep(args: argparse.Namespace, flush_ms: float, progress) -> list[Row]:
    counts = [int(n) for n in args.streams.split(",")]
    overrides = stack_overrides(Path(tempfile.mkdtemp(prefix="bench-streaming-")), args.rate, max(counts), flush_ms)
    progress(f"starting redis, chat worker (threads x{max(counts)}) and API, token_flush_ms={flush_ms:g} ...")
    rows = []
    with running_stack(overrides, progress=progress, only={"redis", "worker-chat", "api"}) as stack:
        for n in counts:
            row = asyncio.run(sweep_row(stack.settings, stack.token, n, args.rate, args.tokens, flush_ms,
                                        args.rounds))
            progress(f"  {n:>2} streams: delivered {row.delivered_ratio:.3f}, TTFT added p50 "
                     f"{row.ttft_added_ms_p50:.1f} ms, api {row.api_cpu_percent:.0f}% redis "
                     f"{row.redis_cpu_percent:.0f}% worker {row.worker_cpu_percent:.0f}%")
            rows.append(row)
    return rows


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for flush in sorted({r.token_flush_ms for r in rows}, reverse=True):
        sel = [r for r in rows if r.token_flush_ms == flush]
        label = f"coalesced ({flush:g} ms)" if flush else "one event per token"
        xs = [r.streams for r in sel]
        left.plot(xs, [r.delivered_ratio for r in sel], marker="o", label=label)
        right.plot(xs, [r.ttft_added_ms_p50 for r in sel], marker="o", label=label)
    left.axhline(0.98, color="grey", linestyle="--", linewidth=1, label="target 0.98")
    right.axhline(25, color="grey", linestyle="--", linewidth=1, label="target 25 ms")
    left.set(xlabel="concurrent streams", ylabel="delivered / emitted tokens/s",
             title=f"Delivery at {rows[0].rate_per_stream:g} tokens/s per stream",
             ylim=(0, max(1.05, *(r.delivered_ratio + 0.02 for r in rows))))
    right.set(xlabel="concurrent streams", ylabel="ms (log scale)", title="Time to first token added (p50)",
              yscale="log")
    for ax in (left, right):
        ax.set_xticks(sorted({r.streams for r in rows}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table(rows: list[Row], args: argparse.Namespace, load: tuple[float, float]) -> str:
    lines = ["| streams | events | delivered ratio | source kept rate | TTFT added p50 (max) | of which before the source started | SSE chunks/token | API CPU | Redis CPU | worker CPU | text exact |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        events = f"coalesced {r.token_flush_ms:g} ms" if r.token_flush_ms else "one per token"
        lines.append(f"| {r.streams} | {events} | {r.delivered_ratio:.3f} | {r.source_kept_rate:.3f} | {r.ttft_added_ms_p50:.1f} ms "
                     f"({r.ttft_added_ms_max:.1f}) | {r.ttft_to_source_ms_p50:.1f} ms | {r.events_per_token:.2f} | {r.api_cpu_percent:.0f}% | "
                     f"{r.redis_cpu_percent:.0f}% | {r.worker_cpu_percent:.0f}% | {'yes' if r.text_exact else 'NO'} |")
    return (
        "## Concurrent streams at GPU rates (issue 17)\n\n"
        f"Synthetic token source (`synthetic_rate` backend, no model) at {args.rate:g} tokens/s per stream, "
        f"{args.tokens} tokens per stream, all streams of a row started at once, in {args.rounds} bursts "
        "after a warm-up burst (the client's connections open, the worker's threads started); one chat "
        "worker (threads pool, one "
        "thread per stream), Redis and the API on loopback; memory recall off. CPU is % of one core "
        "(psutil on the launcher's PIDs). Targets: delivered ratio >= 0.98 up to 8 streams, TTFT added "
        "<= 25 ms.\n\n" + "\n".join(lines) + "\n\n"
        "Without coalescing, SSE chunks/token is below 1 when the API falls behind: it merges the pieces "
        "that queued up meanwhile (core_agent/orchestration/piece_batching.py). "
        f"Load average (1 min) before / after the run: {load[0]:.2f} / {load[1]:.2f} on a machine shared "
        "with other work. Plot: [streaming.png](streaming.png). "
        "`python -m bench.bench_streaming --json` prints one JSON object per row.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default="1,4,8,16", help="comma-separated concurrent stream counts")
    parser.add_argument("--rate", type=float, default=200.0, help="tokens/s per stream")
    parser.add_argument("--tokens", type=int, default=1000, help="tokens per stream")
    parser.add_argument("--rounds", type=int, default=3,
                        help="bursts of N simultaneous streams per row (TTFT p50 is over all of them)")
    parser.add_argument("--flush-ms", type=float, default=15.0, help="celery.token_flush_ms of the worker")
    parser.add_argument("--compare-uncoalesced", action="store_true",
                        help="also run the sweep with one event per token (token_flush_ms=0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per row")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/")
    args = parser.parse_args()
    log = (lambda _: None) if args.json else print
    load_before = os.getloadavg()[0]
    rows = run_sweep(args, args.flush_ms, log)
    if args.compare_uncoalesced:
        rows += run_sweep(args, 0.0, log)
    load = (load_before, os.getloadavg()[0])
    if args.json:
        for row in rows:
            print(json.dumps(asdict(row)), flush=True)
    if not args.no_write:
        plot(rows, PLOT)
        markdown = table(rows, args, load)
        if not args.json:
            print(markdown)
        write_section("streaming", markdown)


if __name__ == "__main__":
    main()
