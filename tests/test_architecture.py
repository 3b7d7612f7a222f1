"""The structure of docs/architecture.md, checked against the code's own imports.

Every ``import`` of a project module counts, at module level or inside a function (a lazy import
is still control going back up). The checks: the project's import graph has no circle; bench/ never
imports presa/ or baselines/ (it reaches algorithms only through the registry's "module:Class"
strings); no command module imports the CLI that registers it; and the learners do not call back
into the harness's evaluation, runner, store or sweep.

`python tests/test_architecture.py` prints the layers (each module above everything it imports),
the drawing docs/architecture.md is made from.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "presa", "baselines")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports (``from a import b`` counts a.b when that is a module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            # the deepest project module the import names (bench.feedback.settings, else bench.feedback)
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    graph = {name: imports_of(name, path, known) for name, path in modules.items()}
    # a package's __init__ is imported with any of its modules: that edge is not "going back up"
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def layers(graph: dict[str, set[str]]) -> dict[str, int]:
    """Layer 0 imports no project module; every module sits one above the highest it imports."""
    level: dict[str, int] = {}

    def depth(node: str) -> int:
        if node not in level:
            level[node] = 1 + max((depth(n) for n in graph[node]), default=-1)
        return level[node]

    for node in graph:
        depth(node)
    return level


def test_the_import_graph_has_no_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_circle():
    # the check above must be able to fail
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_bench_never_imports_an_algorithm_package():
    offenders = {
        name: sorted(t for t in targets if t.split(".")[0] in ("presa", "baselines"))
        for name, targets in import_graph().items()
        if name.split(".")[0] == "bench"
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_commands_do_not_import_the_cli():
    graph = import_graph()
    assert {name for name, targets in graph.items() if name.startswith("bench.commands") and "bench.cli" in targets} == set()


def test_learners_do_not_call_back_into_the_harness():
    harness = {"bench.runner", "bench.sweep", "bench.results", "bench.evaluation", "bench.training", "bench.report"}
    graph = import_graph()
    calls_up = {
        name: sorted(graph[name] & harness) for name in graph if name.split(".")[0] in ("presa", "baselines")
    }
    assert {k: v for k, v in calls_up.items() if v} == {}


def test_the_graph_sees_lazy_imports():
    graph = import_graph()
    # bench.runner imports bench.data inside resolve(): a function-level import must be an edge
    assert "bench.data" in graph["bench.runner"]


if __name__ == "__main__":
    graph = import_graph()
    if (cycle := find_cycle(graph)) is not None:
        sys.exit("import circle: " + " -> ".join(cycle))
    by_level: dict[int, list[str]] = {}
    for name, level in layers(graph).items():
        by_level.setdefault(level, []).append(name)
    for level in sorted(by_level, reverse=True):
        print(f"{level:2d}  " + ", ".join(sorted(by_level[level])))
