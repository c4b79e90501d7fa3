# SPDX-License-Identifier: Apache-2.0
"""The package's import structure stays one-way (docs/architecture.md).

Every ``tvm_qnn`` import, at module level or inside a function, is read from the source with
``ast``. Run alone: ``python -m pytest tests/test_architecture.py -v``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tvm_qnn"

# Lowest first; a module may import from its own layer and the layers below it. The rows are
# the stack of docs/architecture.md.
LAYERS = [
    {"errors", "knobs"},
    {"reference", "bitserial_accel", "nn", "data"},
    {"topi"},
    {"transform"},
    {"frontend", "runtime"},
    {"target"},
    {"pipeline"},
    {"tuning"},
    {"compiler", "summary"},
    {"__init__", "testing", "cli", "cli_args", "demo", "train"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """The tvm_qnn modules an import names (``from . import x`` names the submodule x)."""
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not target.startswith("tvm_qnn"):
        return []
    found = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        path = PACKAGE.parent / Path(*sub.split("."))
        found.append(sub if path.with_suffix(".py").exists() or path.is_dir() else target)
    return found


def _imports() -> dict[str, set[str]]:
    """Module → the tvm_qnn modules it imports."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        edges = graph.setdefault(module, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                edges.update(_resolve(module, path.name == "__init__.py", node))
            elif isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name.startswith("tvm_qnn"))
        edges.discard(module)
    return graph


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                found.append(sorted(scc))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _package_graph(graph):
    packages: dict[str, set[str]] = {}
    for module, edges in graph.items():
        packages.setdefault(_layer(module), set()).update(
            _layer(e) for e in edges if _layer(e) != _layer(module))
    return packages


def test_every_package_has_a_layer():
    assert {_layer(m) for m in _imports()} <= set(RANK), "add new packages to LAYERS"


def test_no_import_reaches_a_higher_layer():
    wrong = [f"{module} imports {target}"
             for module, edges in _imports().items() for target in sorted(edges)
             if RANK[_layer(target)] > RANK[_layer(module)]]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("level", ["module", "package"])
def test_no_import_cycles(level):
    graph = _imports()
    if level == "package":
        graph = _package_graph(graph)
    else:
        # A package's __init__ re-exports its submodules: an edge from a submodule back to
        # its own package is an import of a sibling through it, not a cycle of ideas.
        graph = {m: {e for e in edges if not m.startswith(e + ".")} for m, edges in graph.items()}
    assert _cycles(graph) == []


def test_the_checker_sees_cycles_and_layer_violations():
    """The checks above can fail: a made-up cycle and a made-up upward import are caught."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert RANK[_layer("tvm_qnn.transform.x")] < RANK[_layer("tvm_qnn.tuning.y")]
    node = ast.parse("from ..tuning import tune").body[0]
    assert _resolve("tvm_qnn.transform.schedule_bitserial", False, node) == [
        "tvm_qnn.tuning.tune"]


MAX_MODULE_LINES = 400


def test_modules_fit_in_a_head():
    """No module of the package grows past MAX_MODULE_LINES: split it at its seam instead."""
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert long == {}
