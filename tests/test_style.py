"""The code is ruff-clean (the rules in pyproject.toml), checked by the README's test
command so CI runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    pytest.importorskip("ruff", reason="ruff comes with the test extra")
    found = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache",
                            "cmkd_doctor", "tests", "benchmarks", "tools"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert found.returncode == 0, found.stdout[-4000:] + found.stderr[-2000:]


# ---- the package's shape: packages by concept, imports that run one way

PACKAGE = ROOT / "cmkd_doctor"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every cmkd_doctor module ``path`` imports, anywhere in it: at the top, inside a
    function, under ``TYPE_CHECKING`` alike (``from pkg import module`` names the
    module)."""
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} & modules
            found |= {f"{node.module}.{a.name}" for a in node.names} & modules
    return found - {_module(path)}


def _graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module(p) for p in paths}
    return {_module(p): _imports(p, modules) for p in paths}


def test_no_module_imports_itself_back():
    """No import circle: following imports from any module never returns to it (what
    is imported lazily inside a function counts, and so do type-only imports)."""
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the path being followed, 2: done
    circles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                circles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "\n".join(" -> ".join(c) for c in circles)


def test_the_package_is_laid_out_by_concept():
    """At most 12 modules at the top, beside the packages; no library module imports
    the CLI (it parses, calls and prints; the library does the work)."""
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 12, top
    graph = _graph()
    into_cli = {m: sorted(t for t in targets if t.startswith("cmkd_doctor.cli"))
                for m, targets in graph.items()
                if not m.startswith("cmkd_doctor.cli") and m != "cmkd_doctor.__main__"}
    assert not {m: t for m, t in into_cli.items() if t}


# a function over 80 lines is one algorithm that reads best whole, named here with why
SINGLE_ALGORITHMS = {
    "cmkd_doctor.ranking.algorithm1.permutation_distances":
        "Algorithm 1, steps 2-8: the permutation loop with its batching and streaming",
    "cmkd_doctor.training.engine.fit":
        "the training loop every network shares: epochs, batches, early stopping",
}


def test_no_function_is_longer_than_80_lines_unless_one_algorithm():
    import ast

    long: dict[str, int] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 80:
                    long[f"{_module(path)}.{node.name}"] = lines
    assert set(long) <= set(SINGLE_ALGORITHMS), \
        {name: n for name, n in long.items() if name not in SINGLE_ALGORITHMS}
    assert set(SINGLE_ALGORITHMS) <= set(long), "no longer long: drop from the list"
