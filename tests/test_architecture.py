"""The house's one-way structure, checked on the source: no import cycles, no import
against the allowed direction.

    ui ──────────────────────────────┐
    core_agent ─► workers ─► rag, lora_manager ─► configs (settings + shared contracts)

Every .py file of the six packages is parsed with `ast` (imports inside functions
count too: a lazy import is still a dependency), so the check needs no installed
package and cannot be fooled by an import that only runs on some code path.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("configs", "core_agent", "workers", "rag", "lora_manager", "ui")

# Which other top-level packages each package may import (transitively closed).
ALLOWED: dict[str, set[str]] = {
    "configs": set(),
    "rag": {"configs"},
    "lora_manager": {"configs"},
    "workers": {"rag", "lora_manager", "configs"},
    "core_agent": {"workers", "rag", "lora_manager", "configs"},
    "ui": {"configs"},
}
# The core never imports worker code except the Celery app (to send tasks by name).
# Everything else it shares with workers lives in configs/contracts.
CORE_MAY_IMPORT_FROM_WORKERS = {"workers.celery_app"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> dict[str, Path]:
    files: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            files[module_name(path)] = path
    return files


def _resolve(current: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(name: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """(module imported, line) for every import in the file, resolved to a known module
    where one matches (`from a.b import c` is a.b.c when c is a module, else a.b)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, is_package, node)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.append((candidate if candidate in known else base, node.lineno))
    return [(m, line) for m, line in found if m.split(".")[0] in PACKAGES]


def import_graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], int], list[str]]:
    files = source_files()
    known = set(files)
    graph: dict[str, set[str]] = defaultdict(set)
    lines: dict[tuple[str, str], int] = {}
    unresolved: list[str] = []
    for name, path in files.items():
        graph[name]
        for target, line in imported_modules(name, path, known):
            if target not in known:
                unresolved.append(f"{path.relative_to(ROOT)}:{line} imports {target}, which does not exist")
            elif target != name:
                graph[name].add(target)
                lines.setdefault((name, target), line)
    return graph, lines, unresolved


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}   # 1 on the current path, 2 finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = defaultdict(set)
    for source, targets in graph.items():
        for target in targets:
            a, b = source.split(".")[0], target.split(".")[0]
            if a != b:
                packages[a].add(b)
    return packages


def test_every_import_names_a_module_that_exists():
    _, _, unresolved = import_graph()
    assert not unresolved, "broken imports:\n" + "\n".join(dict.fromkeys(unresolved))


def test_no_import_cycle_between_files():
    graph, _, _ = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle between files: " + " -> ".join(cycle or [])


def test_no_import_cycle_between_packages():
    cycle = find_cycle(package_graph(import_graph()[0]))
    assert cycle is None, "import cycle between packages: " + " -> ".join(cycle or [])


def test_imports_follow_the_allowed_direction():
    graph, lines, _ = import_graph()
    files = source_files()
    wrong = []
    for source, targets in sorted(graph.items()):
        for target in sorted(targets):
            a, b = source.split(".")[0], target.split(".")[0]
            where = f"{files[source].relative_to(ROOT)}:{lines[(source, target)]}"
            if a != b and b not in ALLOWED[a]:
                wrong.append(f"{where}: {a} must not import {b} ({source} -> {target})")
            elif a == "core_agent" and b == "workers" and target not in CORE_MAY_IMPORT_FROM_WORKERS:
                wrong.append(f"{where}: core_agent may import only {sorted(CORE_MAY_IMPORT_FROM_WORKERS)} "
                             f"from workers, not {target} (put shared code in configs/contracts)")
    assert not wrong, "imports against the allowed direction:\n" + "\n".join(wrong)


# --- the checker itself catches what it is meant to catch ------------------------------

def test_checker_finds_a_cycle_and_names_it():
    graph = {"a.x": {"b.y"}, "b.y": {"c.z"}, "c.z": {"a.x"}, "d": set()}
    assert find_cycle(graph) == ["a.x", "b.y", "c.z", "a.x"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("code, expected", [
    ("import workers.events\n", "workers.events"),
    ("def f():\n    from rag.chunking import count_tokens\n", "rag.chunking"),
    ("from . import sibling\n", "configs.contracts.sibling"),
])
def test_checker_sees_module_and_function_level_imports(tmp_path, code, expected):
    path = tmp_path / "mod.py"
    path.write_text(code)
    known = {"workers.events", "rag.chunking", "configs.contracts.sibling"}
    assert expected in [m for m, _ in imported_modules("configs.contracts.mod", path, known)]


# Benches run without the test extras (pytest, playwright...): bench/ may use its own
# harness (bench/harness/) but nothing from tests/, and nothing that needs pytest.
BENCH_FORBIDDEN_ROOTS = {"tests", "pytest", "_pytest", "playwright"}


def test_bench_imports_nothing_from_tests_or_the_test_extras():
    offenders = []
    for path in sorted((ROOT / "bench").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n}"
                          for n in names if n.split(".")[0] in BENCH_FORBIDDEN_ROOTS]
    assert not offenders, "bench/ must run without tests/ and the test extras:\n" + "\n".join(offenders)
