"""The layering of docs/design.md: ``bayesnets`` -> ``priors`` -> ``inference``, never upwards,
and no import cycles between modules; old module paths still import for one release."""

from __future__ import annotations

import ast
import importlib
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: A package may import from itself and from the packages to its right, never to its left.
LAYERS = ("bayesnets", "priors", "inference")


def _imports(path: Path) -> list[str]:
    """Every module a file imports, at any depth (function-level imports count too)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    return {_module(p): p for layer in LAYERS for p in (ROOT / layer).rglob("*.py")}


@pytest.mark.parametrize("layer", LAYERS[1:])
def test_no_import_runs_upwards(layer: str) -> None:
    above = LAYERS[:LAYERS.index(layer)]
    bad = [(str(p.relative_to(ROOT)), m) for p in (ROOT / layer).rglob("*.py") for m in _imports(p)
           if m.split(".")[0] in above]
    assert not bad, f"{layer}/ must not import from {above}: {bad}"


def test_no_import_cycles() -> None:
    """Module-level and function-level imports alike: a cycle hidden in a function is still a cycle."""
    sources = _sources()
    graph = {m: {i for i in _imports(p) if i in sources and i != m} for m, p in sources.items()}
    # A package's __init__ re-exports its modules; importing a module through its package is
    # not a dependency of the module on its siblings, so edges into a package's own __init__
    # from inside it are dropped.
    graph = {m: {i for i in deps if not m.startswith(i + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError(f"import cycle: {' -> '.join([*stack[stack.index(n):], n])}")
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


@pytest.mark.parametrize("old", ["bayesnets.gp", "bayesnets.t_posterior", "bayesnets.gp_classification"])
def test_moved_modules_import_with_a_deprecation_warning(old: str) -> None:
    import sys

    from bayesnets._moved import MOVED

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=MOVED[old]):
        module = importlib.import_module(old)
    new = importlib.import_module(MOVED[old])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert all(getattr(module, name) is getattr(new, name) for name in new.__all__)
