"""What the bubblewrap sandbox costs per run: a trivial program in the sandbox vs the
same interpreter started plainly (no isolation), measured in one run on this machine.

    PYTHONPATH=. .venv/bin/python bench/bench_sandbox.py [--runs 20] [--no-write]

Prints the figures and writes the `sandbox` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from bench.report import percentile, write_section
from configs.schema import SandboxConfig
from workers.sandbox import run_python

PROGRAM = "print(sum(range(1000)))"


def plain_run() -> float:
    started = time.perf_counter()
    subprocess.run([os.path.realpath(sys.executable), "-I", "-c", PROGRAM], capture_output=True, check=True)
    return time.perf_counter() - started


def sandboxed_run(config: SandboxConfig) -> float:
    started = time.perf_counter()
    result = run_python(PROGRAM, config)
    assert result.exit_code == 0 and result.stdout.strip() == "499500", result
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    config = SandboxConfig(enabled=True)
    sandboxed_run(config)  # the one-time availability probe is not part of a run
    plain, boxed = [], []
    for i in range(args.runs):  # interleaved, so machine load hits both alike
        plain.append(plain_run())
        boxed.append(sandboxed_run(config))
        print(f"\r  run {i + 1}/{args.runs}", end="", flush=True)
    print()
    p50_plain, p50_boxed = statistics.median(plain), statistics.median(boxed)
    rows = [("plain `python -I`", plain), ("bubblewrap sandbox (run_python)", boxed)]
    table = ["| Start + run a trivial program | p50 ms | p95 ms |", "|---|---|---|"]
    table += [f"| {name} | {statistics.median(v) * 1000:.0f} | {percentile(v, 0.95) * 1000:.0f} |"
              for name, v in rows]
    mode = "pids cgroup (root)" if os.geteuid() == 0 else "RLIMIT_NPROC"
    text = ("## Code sandbox overhead (bench/bench_sandbox.py)\n\n" + "\n".join(table) +
            f"\n\nSandbox / plain p50 ratio: {p50_boxed / p50_plain:.1f}x over {args.runs} interleaved runs; "
            f"process limit via {mode}. The sandbox run includes writing the code, bwrap building the "
            "namespaces and mounts, the in-sandbox launcher and reading the output.")
    print(text)
    if not args.no_write:
        write_section("sandbox", text)


if __name__ == "__main__":
    main()
