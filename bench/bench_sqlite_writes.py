"""Per-call SQLite write latency of the core's stores (issue 17), before and after.

The stores open one connection per call (configs/sqlite_file.py). Before: default
`synchronous=FULL` and no other connection open, so each commit waited for an fsync of
the WAL and each close, as the last connection, checkpointed and deleted the WAL.
After: `synchronous=NORMAL` and one idle keeper connection per file. Both variants
write the same rows to files in the same folder, alternating, in one run.

    .venv/bin/python -m bench.bench_sqlite_writes [--writes 200]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from pathlib import Path

from bench.report import percentile, write_section
from configs.sqlite_file import SqliteFile

SCHEMA = "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body TEXT NOT NULL);"


def write_before(path: Path, i: int) -> None:
    """The per-call connection as it was: WAL, default synchronous, nothing else open."""
    db = sqlite3.connect(path, timeout=30)
    db.execute("PRAGMA foreign_keys=ON")
    try:
        with db:
            db.execute("INSERT INTO t (body) VALUES (?)", (f"row {i}",))
    finally:
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writes", type=int, default=200)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-sqlite-"))
    before_path = folder / "before.sqlite3"
    with sqlite3.connect(before_path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA)
    after = SqliteFile(folder / "after.sqlite3", SCHEMA)
    load = os.getloadavg()[0]
    times: dict[str, list[float]] = {"before": [], "after": []}
    for i in range(args.writes):
        t0 = time.perf_counter()
        write_before(before_path, i)
        t1 = time.perf_counter()
        with after._connect() as db:
            db.execute("INSERT INTO t (body) VALUES (?)", (f"row {i}",))
        t2 = time.perf_counter()
        times["before"].append(t1 - t0)
        times["after"].append(t2 - t1)
    ms = {k: (percentile(v, 0.5) * 1000, percentile(v, 0.99) * 1000) for k, v in times.items()}
    table = (
        "## SQLite store writes (issue 17)\n\n"
        f"{args.writes} single-row writes through a per-call connection (as every core store does), the two "
        "variants alternating in one run, files in the same folder.\n\n"
        "| variant | p50 | p99 |\n|---|---|---|\n"
        f"| before: synchronous=FULL, no other connection (WAL checkpointed and deleted on every close) | "
        f"{ms['before'][0]:.2f} ms | {ms['before'][1]:.2f} ms |\n"
        f"| after: synchronous=NORMAL, one idle keeper connection per file | {ms['after'][0]:.3f} ms | "
        f"{ms['after'][1]:.3f} ms |\n\n"
        f"- {ms['before'][0] / ms['after'][0]:.0f}x faster at p50; several such writes (conversation, question, task record) stand before an answer's "
        "first token\n"
        f"- load average (1 min) at the start: {load:.2f} on {os.cpu_count()} cores\n"
    )
    print(table)
    write_section("sqlite_writes", table)


if __name__ == "__main__":
    main()
