"""healer's import graph has no circle: read from the source with ast, nothing imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent / "healer"


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its __init__.py)."""
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The healer modules an import statement in `module` loads: `from healer import x` is
    healer.x when x is a module, else healer itself."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:  # relative: from the module's package, up level - 1
        package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def _imports(module: str, *, in_functions: bool) -> set[str]:
    """The healer modules `module` imports at module level (outside `if TYPE_CHECKING:`, which
    never runs), plus, with `in_functions`, those its functions import when called."""
    found: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            if in_functions or not in_function:
                found.update(t for t in _targets(module, node) if t in MODULES and t != module)
            return
        inside = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    visit(ast.parse(MODULES[module].read_text()), False)
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import circle once, as the path that closes it (`a -> b -> a`), found by a
    depth-first walk that reports every edge back into the current path."""
    seen: set[str] = set()
    found: list[list[str]] = []
    known: set[frozenset[str]] = set()

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                circle = [*path[path.index(nxt) :], nxt]
                if frozenset(circle) not in known:
                    known.add(frozenset(circle))
                    found.append(circle)
            elif nxt not in seen:
                walk(nxt, [*path, nxt])
        seen.add(node)

    for start in sorted(graph):
        if start not in seen:
            walk(start, [start])
    return found


@pytest.mark.parametrize(
    "in_functions",
    [
        pytest.param(False, id="module-level"),
        pytest.param(True, id="with-imports-inside-functions"),
    ],
)
def test_the_import_graph_has_no_circle(in_functions: bool) -> None:
    """No module imports, directly or through others, a module that imports it back."""
    graph = {m: _imports(m, in_functions=in_functions) for m in MODULES}
    assert {"healer.cli", "healer.loop"} <= {m for m in graph if graph[m]}, "the graph was not read"
    found = circles(graph)
    assert not found, "import circles: " + "; ".join(" -> ".join(c) for c in found)


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        pytest.param({"a": {"b"}, "b": set()}, [], id="a-line"),
        pytest.param({"a": {"b"}, "b": {"c"}, "c": {"a"}}, [["a", "b", "c", "a"]], id="three"),
        pytest.param({"a": {"a"}}, [["a", "a"]], id="itself"),
    ],
)
def test_circles_are_found_and_named(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    """The walk finds a circle and names it by its path, so the failure says what to break."""
    assert circles(graph) == expected
