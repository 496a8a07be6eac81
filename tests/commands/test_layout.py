"""The source tree's shape: layers that import only downwards, no import circle, small modules.

Imports inside functions count too (a function-level import is how a circle hides).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
# Each package may import the ones before it (and itself); never one after it.
LAYERS = ("render", "world", "models", "data", "guidance", "modules", "pipelines")
# Dependency-free helpers anyone may import.
UTILITIES = ("stats", "checkpointing", "error_boundary")
# The one module over the size limit, and why it stays whole: one concept, the key map of the
# MVDream checkpoint (its tables only make sense side by side).
LONG_MODULES = {"dreamreward.models.mvdiffusion.convert"}
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def _layer(module: str) -> int | None:
    """The layer index of a module, None for a utility, len(LAYERS) for the commands on top."""
    parts = module.split(".")
    if len(parts) < 2:
        return len(LAYERS)  # the package itself
    if parts[1] in UTILITIES:
        return None
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else len(LAYERS)


def test_no_import_circle() -> None:
    graph = _import_graph()
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_layers_import_downwards_only() -> None:
    upward = []
    for module, targets in _import_graph().items():
        own = _layer(module)
        for target in targets:
            theirs = _layer(target)
            if own is not None and theirs is not None and theirs > own:
                upward.append(f"{module} -> {target}")
            if own is None and theirs is not None:
                upward.append(f"utility {module} -> {target}")
    assert not upward, "imports against the layers " + str(LAYERS) + ":\n" + "\n".join(upward)


def test_modules_stay_small() -> None:
    long = {
        name: n
        for name, path in _modules().items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES and name not in LONG_MODULES
    }
    assert not long, f"modules over {MAX_LINES} lines (split them along their concepts): {long}"


def test_moved_modules_keep_an_alias_for_one_release(monkeypatch) -> None:
    """``dreamreward.scoring`` / ``dreamreward.sampling`` moved into ``pipelines``: the old
    import gives the new module itself, with a warning."""
    import importlib
    import sys

    import pytest

    for old, new in (("scoring", "pipelines.scoring"), ("sampling", "pipelines.sampling")):
        monkeypatch.delitem(sys.modules, f"dreamreward.{old}", raising=False)
        with pytest.warns(FutureWarning, match=f"dreamreward.{old} moved to dreamreward.{new}"):
            alias = importlib.import_module(f"dreamreward.{old}")
        assert alias is importlib.import_module(f"dreamreward.{new}")
