"""No import cycle between pymta's modules.

Every import counts: at module level, under ``if TYPE_CHECKING:`` and
inside functions (a deferred import still makes two modules know each
other). A module that needs the type of another that imports it names what
it uses in a small typing.Protocol instead (pymta.imap.session,
pymta.lmtpd.protocol's LMTPSessionHost), and a value two modules share
lives in a third (pymta.delivery.mailbox, pymta.imap.transfer).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pymta"


def _modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imported(node: ast.AST, module: str, is_package: bool, modules: set[str]) -> list[str]:
    """The modules an import statement names (a package's __init__ run on
    the way to its submodule is not counted: re-exporting packages would
    make every submodule import a cycle)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([base] if base else []))
    # ``from a.b import c`` imports the module a.b.c when there is one,
    # else the name c of the module a.b.
    return [
        f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
        for alias in node.names
    ]


def import_graph() -> dict[str, set[str]]:
    """{module: the pymta modules it imports anywhere in its text}."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    names = set(modules)
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            for target in _imported(node, name, path.name == "__init__.py", names):
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and target.startswith("pymta"):
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_find_cycle_finds_a_cycle_and_passes_a_tree() -> None:
    """The checker itself: a cycle through three modules is found, a graph
    without one passes (so the real check can fail)."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_import_graph_sees_type_checking_and_deferred_imports() -> None:
    """Imports under TYPE_CHECKING and inside functions are edges too."""
    graph = import_graph()
    assert "pymta.master.control" in graph["pymta.service"]  # module level
    assert "pymta.master.reload" in graph["pymta.master.control"]  # in a function
    assert "pymta.milter.chain" in graph["pymta.cleanup.interface"]  # TYPE_CHECKING


def test_no_import_cycle_between_pymta_modules() -> None:
    """No chain of imports leads from a pymta module back to itself."""
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_worker_builds_with_the_assembler_not_the_service() -> None:
    """A worker process builds its parts with pymta.assemble; it does not
    import pymta.service (whose makeService starts the worker pool)."""
    graph = import_graph()
    assert "pymta.assemble" in graph["pymta.master.worker"]
    assert "pymta.service" not in graph["pymta.master.worker"]
