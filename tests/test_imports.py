"""Every module of the package imports, and no two modules import each other (directly or around a loop).

The graph is read from the source (every ``import`` / ``from ... import`` naming a clip_assets module, at any
depth of the file, so an import hidden inside a function still counts), then searched for cycles with
Tarjan's algorithm. The layers of README.md's "Architecture" section point one way: core at the bottom, then
io, world and models, the domain modules, defs, and cli on top.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import clip_assets

PKG_DIR = Path(clip_assets.__file__).parent


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages([str(PKG_DIR)], prefix="clip_assets."))


def _module_file(name: str) -> Path:
    rel = Path(*name.split(".")[1:])
    pkg = PKG_DIR / rel / "__init__.py"
    return pkg if pkg.is_file() else PKG_DIR / rel.with_suffix(".py")


def _resolve(name: str, known: set[str]) -> str | None:
    """The longest known module that ``name`` is or lies inside (``a.b.func`` -> ``a.b``)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if cand in known:
            return cand
    return None


def _imports(name: str, known: set[str]) -> set[str]:
    tree = ast.parse(_module_file(name).read_text(encoding="utf-8"))
    is_pkg = _module_file(name).name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                mod = ".".join(base[: len(base) - node.level + 1] + ([mod] if mod else []))
            targets = [f"{mod}.{a.name}" for a in node.names] + [mod]
        for t in targets:
            r = _resolve(t, known)
            # a package's own submodules do not make a loop with the package's __init__ re-exporting them
            if r is not None and r != name and not r.startswith(name + "."):
                out.add(r)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
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
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_planted_loop():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("name", _modules())
def test_every_module_imports(name):
    importlib.import_module(name)


def test_no_import_cycle():
    known = set(_modules())
    graph = {m: _imports(m, known) for m in known}
    assert _cycles(graph) == [], "import cycles between modules of clip_assets"


def test_layers_point_down():
    """core imports nothing above it; io (the formats and the commit layer) serves world, models and defs and imports
    none of them; the synthetic world writes drops through io; nothing below the CLI imports it."""
    known = set(_modules())
    above = {
        "clip_assets.core": ("clip_assets.io", "clip_assets.models", "clip_assets.defs", "clip_assets.cli"),
        "clip_assets.world": ("clip_assets.models", "clip_assets.defs", "clip_assets.cli"),
        "clip_assets.io": ("clip_assets.world", "clip_assets.models", "clip_assets.defs", "clip_assets.cli"),
        "clip_assets.defs": ("clip_assets.cli",),
    }
    bad = []
    for m in known:
        for layer, forbidden in above.items():
            if m == layer or m.startswith(layer + "."):
                bad += [(m, t) for t in _imports(m, known) if t.startswith(forbidden)]
    assert bad == []
