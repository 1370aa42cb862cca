"""The package's layers (docs/layout.rst, "Layers"), checked from its imports with ast.

Every import counts for the circle check: at module level, inside functions and under
``if TYPE_CHECKING``. A module may import, at import time, only modules of its own layer
or of lower ones; an import inside a function may go up only where listed in
:data:`LAZY_UP` (thin calls such as ``run.export``).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "databroker_lite"

#: Lowest first. A top-level module or subpackage of databroker_lite -> its layer.
#: A new top-level module must be placed here (and in docs/layout.rst).
LAYERS: list[tuple[str, set[str]]] = [
    ("base", {"errors", "_version"}),
    ("documents", {"documents"}),
    ("storage", {"storage"}),
    ("index", {"index", "index_fill", "index_pg", "index_url", "backends", "netfs", "query", "queries", "dialects"}),
    ("catalog", {"catalogs", "run", "stream", "summaries", "lookup", "configuration", "matching", "column",
                 "config", "intake_driver"}),
    ("tools", {"pack", "export", "server", "remote", "tutorial", "pgtemp",
               # shims kept for old import paths:
               "packing", "tutorial_utils", "demo"}),
    ("package", {"__init__"}),  # the public face: re-exports the catalog layer and the tools
    ("command line", {"cli", "__main__"}),
]
RANK = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}

#: Circles known and owned elsewhere, with why; the test fails once one is gone, so that
#: it is taken off this list. Add none: break a circle with a Protocol or by moving code.
KNOWN_CIRCLES: dict[frozenset[str], str] = {}

#: (importer, imported) pairs allowed to import upwards, inside a function only.
LAZY_UP = {
    ("databroker_lite.run", "databroker_lite.export"),  # run.export(): a thin call
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """The package modules an ``from X import a, b`` names (a submodule if a is one)."""
    if node.level:
        base = importer.split(".") if is_package else importer.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join([*base, *(node.module.split(".") if node.module else [])])
    else:
        target = node.module or ""
    out = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        out.append(sub if sub in MODULES else target)
    return out


def imports(name: str) -> list[tuple[str, bool]]:
    """(imported package module, at import time?) for every import in module ``name``."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                   ast.Lambda))
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                inner = False  # never run: not an import-time dependency, still an edge
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                targets = _resolve(name, is_package, child)
            else:
                visit(child, inner)
                continue
            for t in targets:
                while t and t not in MODULES:  # "databroker_lite.x.y" names: its module
                    t = t.rpartition(".")[0]
                if t.startswith("databroker_lite") and t != name:
                    found.append((t, top))
    visit(tree, True)
    return found


def layer_of(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
    if key not in RANK:
        pytest.fail(f"{MODULES[module]} is in no layer: place {key!r} in LAYERS in "
                    "tests/test_layers.py and in the layer table of docs/layout.rst")
    return RANK[key]


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    return out


def _graph() -> dict[str, set[str]]:
    # A subpackage's own __init__ re-exporting its modules is not a dependency on them
    # from outside; the package face imports everything (it is the top), so edges *to*
    # ``databroker_lite`` itself are what would close a circle.
    return {m: {t for t, _ in imports(m)} for m in MODULES}


def test_the_walker_sees_real_imports() -> None:
    """The checks below can fail: the walker finds known imports of each kind."""
    run = imports("databroker_lite.run")
    assert ("databroker_lite.storage", True) in run
    assert ("databroker_lite.export", False) in run  # inside Run.export
    assert ("databroker_lite.errors", True) in imports("databroker_lite.storage.reader")
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle() -> None:
    found = {frozenset(c) for c in _circles(_graph())}
    gone = [sorted(c) for c in KNOWN_CIRCLES if c not in found]
    assert not gone, f"these circles are gone: take them off KNOWN_CIRCLES: {gone}"
    circles = [sorted(c) for c in found if c not in KNOWN_CIRCLES]
    assert not circles, "import circles (every import counts, lazy and TYPE_CHECKING too):\n" + \
        "\n".join(" <-> ".join(c) for c in circles)


def test_every_module_is_in_a_layer() -> None:
    for m in MODULES:
        layer_of(m)


def test_imports_go_down_the_layers() -> None:
    bad = []
    for m in MODULES:
        mine = layer_of(m)
        for target, at_import in imports(m):
            up = layer_of(target) > mine
            if up and (at_import or (m, target) not in LAZY_UP):
                when = "at import time" if at_import else "inside a function"
                bad.append(f"{m} ({LAYERS[mine][0]}) imports {target} "
                           f"({LAYERS[layer_of(target)][0]}) {when}")
    assert not bad, "imports that go up a layer:\n" + "\n".join(bad)
