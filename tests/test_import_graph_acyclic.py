"""The import graph of engine/ and dreamfusion_blender/ has no loops (issue 31).

A loop makes the import order matter: which module half-exists when the other asks for a name
depends on who was imported first, and a name moved in one breaks the other. The scan is static
(ast) and counts every import, the ones inside functions too: most imports here are deferred
into functions (torch, bpy, the heavier engine modules), so a module-level-only graph would miss
the loops this test was written for (batch <-> batch_engine, batch.child -> cli -> export_run ->
batch.child were all function-level). Imports under ``if TYPE_CHECKING:`` are skipped (never run).

An edge goes to the most specific module that exists: ``from .batch import child`` -> engine.batch.child,
``from .batch import _free_stem`` -> the package/module ``batch``. Parent packages a dotted import
initialises on the way are not edges: every package would otherwise loop with its own __init__.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "dreamfusion_blender")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    mods = {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}
    assert len(mods) > 50, f"the scan found only {len(mods)} modules; is ROOT right? {ROOT}"
    return mods


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every Import/ImportFrom, at any depth, except in the body of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    """The longest prefix of a dotted name that is one of our modules (None: outside the project)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in mods:
            return candidate
    return None


def _edges(mod: str, path: Path, mods: dict[str, Path]) -> set[str]:
    is_package = path.name == "__init__.py"
    out = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            if node.level:
                base = mod.split(".") if is_package else mod.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from pkg import sub` imports the submodule pkg.sub; `from pkg import name` only pkg
            targets = [f"{prefix}.{a.name}" for a in node.names]
        for t in targets:
            r = _resolve(t, mods)
            if r is not None and r != mod:
                out.add(r)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _edges(m, p, mods) for m, p in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None. Iterative DFS, so a deep graph cannot hit the recursion limit."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    for start in sorted(graph):
        if colour[start] != WHITE:
            continue
        path, iters = [start], [iter(sorted(graph[start]))]
        colour[start] = GREY
        while path:
            nxt = next(iters[-1], None)
            if nxt is None:
                colour[path.pop()] = BLACK
                iters.pop()
            elif colour.get(nxt, BLACK) == GREY:
                return path[path.index(nxt):] + [nxt]
            elif colour.get(nxt) == WHITE:
                colour[nxt] = GREY
                path.append(nxt)
                iters.append(iter(sorted(graph[nxt])))
    return None


def test_import_graph_of_engine_and_addon_is_acyclic():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import loop: " + " -> ".join(cycle) + " (move the shared names to a module both can import)"


def test_the_scan_sees_function_level_imports_and_resolves_relative_ones():
    graph = import_graph()
    # engine/cli.py imports .export_run only inside functions; the scan must see it
    assert "engine.export_run" in graph["engine.cli"]
    # `from ..cli import main` in engine/batch/child.py (two dots, under __main__)
    assert "engine.cli" in graph["engine.batch.child"]
    # `from .batch.cli import add_parser` goes to the submodule, not the package
    assert "engine.batch.cli" in graph["engine.cli"]


def test_find_cycle_reports_the_loop():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"a"}}) == ["a", "a"]
