"""Benchmarks: each script prints its figures and writes its section of docs/benchmarks.md."""
