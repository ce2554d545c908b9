"""The package's shape (see STYLE.md): no import circle among grid's modules
and no module over 900 lines.

Imports are read from the source with ``ast``: every import, at the top
level, inside a function (a deferred import is a circle put off, not
removed) or under ``if TYPE_CHECKING:`` (a type-only import still ties the
two modules together; an upward dependency goes through a declared
``Protocol`` instead).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

GRID = Path(__file__).resolve().parents[2] / "grid"
MAX_LINES = 900


def _module_name(path: Path) -> str:
    rel = path.relative_to(GRID.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """The grid modules ``name`` imports anywhere in its source."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(stmts: list[ast.stmt]) -> None:
        for node in stmts:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                for a in node.names:
                    # ``from grid import stream`` imports the module grid.stream;
                    # ``from grid import Manager`` needs grid itself.
                    sub = f"{mod}.{a.name}"
                    found.add(sub if sub in modules else mod)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    block = getattr(node, field, None)
                    if isinstance(block, list):
                        visit([b for b in block if isinstance(b, ast.stmt)]
                              + [s for h in block if isinstance(h, ast.ExceptHandler)
                                 for s in h.body])

    visit(tree.body)
    return found


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in GRID.rglob("*.py")}
    # Compiled modules count as modules too (``from grid import _codec``).
    modules = set(paths) | {_module_name(p) for p in GRID.rglob("*.pyx")}
    return {name: {m for m in _runtime_imports(path, name, modules) if m in paths and m != name}
            for name, path in paths.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return path[path.index(m):] + [m]
            if m not in state:
                cycle = walk(m)
                if cycle:
                    return cycle
        path.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            cycle = walk(n)
            if cycle:
                return cycle
    return None


def test_the_import_graph_is_read() -> None:
    graph = _graph()
    # Known edges: the checker must see them, or it proves nothing.
    assert "grid.connection" in graph["grid.manager"]
    assert "grid._link" in graph["grid.stream"]
    assert "grid.connection" in graph["grid"]
    assert "grid._codec_py" in graph["grid._impl"]  # inside a function
    assert "grid.handlers" in graph["grid._link"]  # under TYPE_CHECKING
    assert "grid.manager" not in graph["grid.connection"]


def test_no_import_circle() -> None:
    assert _find_cycle(_graph()) is None, " -> ".join(_find_cycle(_graph()) or [])


def test_a_circle_is_found() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


_SOURCES = sorted(p for ext in ("*.py", "*.pyx", "*.pxd", "*.pxi") for p in GRID.rglob(ext))


@pytest.mark.parametrize("path", _SOURCES, ids=lambda p: str(p.relative_to(GRID)))
def test_no_module_over_900_lines(path: Path) -> None:
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.name}: {n} lines"
