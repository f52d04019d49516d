"""clip_assets.models imports without cycles, each module on its own, and registers its configs only publicly."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import open_clip
import pytest

import clip_assets.models as models_pkg
from clip_assets.models import small

PKG_DIR = Path(models_pkg.__file__).parent
MODULES = sorted(p.stem for p in PKG_DIR.glob("*.py") if p.stem != "__init__")


def _imports_of(module: str) -> set[str]:
    """The clip_assets.models modules that ``module`` imports at its top level."""
    tree = ast.parse((PKG_DIR / f"{module}.py").read_text())
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "clip_assets.models":
                out.update(a.name for a in node.names if a.name in MODULES)
            elif node.module.startswith("clip_assets.models."):
                out.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[2] for a in node.names if a.name.startswith("clip_assets.models."))
    return out


def test_no_import_cycle_between_model_modules():
    graph = {m: _imports_of(m) for m in MODULES}
    assert graph["small"] == set()  # the configs module depends on nothing of ours (it used to import loading)

    def visit(node, stack):
        assert node not in stack, f"import cycle: {' -> '.join(stack + [node])}"
        for nxt in graph[node]:
            visit(nxt, stack + [node])

    for m in MODULES:
        visit(m, [])


def test_each_module_imports_first():
    # one fresh interpreter; before each import every clip_assets module is forgotten, so each one is imported
    # first, as a cycle would show (third-party modules stay loaded: fast)
    script = (
        "import importlib, sys\n"
        f"for m in {MODULES!r}:\n"
        "    for k in [k for k in sys.modules if k.startswith('clip_assets')]:\n"
        "        del sys.modules[k]\n"
        "    importlib.import_module('clip_assets.models.' + m)\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def test_small_configs_are_json_files_registered_through_open_clip():
    names = small.register_small_configs()
    assert names == small.config_names() and {small.TINY, small.SMALL, small.TINY_SIGMOID} <= set(names)
    assert small.register_small_configs() == names  # idempotent
    for name in names:
        assert open_clip.get_model_config(name) == small.small_config(name)
        assert name in open_clip.list_models()
    with pytest.raises(KeyError, match="unknown small config"):
        small.small_config("nope")
