"""What publishing a streamed token costs the generating thread (issue 17).

The worker's decode loop calls EventPublisher.token() once per model delta; whatever
that call takes, the model waits before decoding the next token. This bench paces
tokens at a model's rate through a real EventPublisher against a real Redis (with a
reader XREADing the stream, as the API does) and prints the time spent inside token()
and the events written, per coalescing window (celery.token_flush_ms).

    .venv/bin/python -m bench.bench_token_publish [--rate 67] [--tokens 300] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import redis

from bench.harness.stack import running_stack, stack_env
from bench.report import percentile, write_section
from configs.contracts.tasks import TaskResult
from workers.events import EventPublisher


def measure(url: str, rate: float, tokens: int, window_s: float) -> tuple[list[float], int]:
    """Seconds spent in each token() call, and the token events written."""
    client = redis.Redis.from_url(url)
    publisher = EventPublisher(client, uuid.uuid4().hex, 60, flush_interval_s=window_s)
    publisher.start_attempt()
    stop = threading.Event()

    def reader() -> None:  # like the API's Dispatcher.events: Redis does the same work
        own, last = redis.Redis.from_url(url), "0-0"
        while not stop.is_set():
            reply = own.xread({publisher.key: last}, block=100, count=256)
            if reply:
                last = reply[0][1][-1][0]
        own.close()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    costs: list[float] = []
    start = time.perf_counter()
    for i in range(tokens):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        t0 = time.perf_counter()
        publisher.token(f"tok{i} ")
        costs.append(time.perf_counter() - t0)
    publisher.done(TaskResult(text="", model="bench"))  # sends what is buffered first, like a task
    stop.set()
    thread.join()
    events = client.xlen(publisher.key) - 2  # minus the attempt and done events
    client.close()
    return costs, events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=67.0, help="tokens/s (67: the tiny model here)")
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--windows-ms", default="0,10,15", help="coalescing windows to compare")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/")
    args = parser.parse_args()
    windows = [float(w) for w in args.windows_ms.split(",")]
    env = stack_env(Path(tempfile.mkdtemp(prefix="bench-token-publish-")))
    load_before = os.getloadavg()[0]
    rows = []
    with running_stack(env, only={"redis"}) as stack:
        for window in windows:
            costs, events = measure(stack.settings.redis_url, args.rate, args.tokens, window / 1000)
            rows.append((window, statistics.mean(costs) * 1e6, percentile(costs, 0.5) * 1e6,
                         percentile(costs, 0.99) * 1e6, events))
            print(f"window {window:g} ms: mean {rows[-1][1]:.0f} us, p50 {rows[-1][2]:.0f} us, "
                  f"p99 {rows[-1][3]:.0f} us, {events} events for {args.tokens} tokens", flush=True)
    table = (
        "## Token publish cost in the generating thread (issue 17)\n\n"
        f"{args.tokens} tokens paced at {args.rate:g}/s through EventPublisher.token() against a real Redis "
        "with an XREAD reader; time the generating thread spent in the call (the model waits that long "
        "before decoding the next token). Sends run on the coalescer's sender thread.\n\n"
        "| window (token_flush_ms) | mean | p50 | p99 | events / tokens |\n|---|---|---|---|---|\n"
        + "".join(f"| {w:g} ms | {m:.0f} us | {p50:.0f} us | {p99:.0f} us | {e} / {args.tokens} |\n"
                  for w, m, p50, p99, e in rows)
        + f"\n- load average (1 min) before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f} "
        f"on {os.cpu_count()} cores\n"
    )
    print(table)
    if not args.no_write:
        write_section("token_publish", table)


if __name__ == "__main__":
    main()
