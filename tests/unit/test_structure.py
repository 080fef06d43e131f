"""The shape of the code, checked over the `ast` of `ivr/` (plain Python, no extra tool).

Every import is an edge: module level, inside functions and under `if TYPE_CHECKING:`
alike, since a type dependency is still a dependency. The rules are the ones
`docs/architecture.md` states; this test is what keeps them true.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import re
from functools import cache
from pathlib import Path

import pytest

from ivr.errors import IvrError

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "ivr"
MAX_LINES = 500

# A top-level module must be a leaf: it imports only other top-level leaves.
# `__main__` is the entry point and is allowed to reach the CLI.
TOP_LEVEL_ENTRY = {"ivr.__main__"}

# package -> packages it must never import
NEVER = {
    "flows": {"speech", "audio", "telephony"},
    "audio": {"telephony", "flows"},
    "speech": {"flows", "telephony"},
    "tools": {"flows"},
}
# `store` sits low: it may import only itself and the top-level leaves.
STORE_MAY_IMPORT: set[str] = set()

# Builtin exceptions ivr may raise: programming errors only. Everything else goes
# through the tree under IvrError (InvalidValue is also a ValueError for libraries).
ALLOWED_BUILTIN_RAISES = {"TypeError", "NotImplementedError", "AssertionError"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _resolve(name: str) -> str | None:
    mods = modules()
    while name:
        if name in mods:
            return name
        name = name.rpartition(".")[0]
    return None


@cache
def edges() -> dict[str, frozenset[str]]:
    """module -> the ivr modules it imports (anywhere in the file)."""
    mods = modules()
    graph: dict[str, frozenset[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text("utf-8"), filename=str(path))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "ivr" or alias.name.startswith("ivr."):
                        if (target := _resolve(alias.name)) is not None:
                            deps.add(target)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join([*base, node.module] if node.module else base)
                else:
                    source = node.module or ""
                if source != "ivr" and not source.startswith("ivr."):
                    continue
                for alias in node.names:
                    full = f"{source}.{alias.name}"
                    target = full if full in mods else _resolve(source)
                    if target is not None:
                        deps.add(target)
        deps.discard(name)
        graph[name] = frozenset(deps)
    return graph


def _area(module: str) -> str:
    """The first component under `ivr` (`flows` for `ivr.flows.engine`), or '' for a leaf."""
    parts = module.split(".")
    if len(parts) == 1:
        return "ivr"
    return parts[1] if (PKG / parts[1]).is_dir() else ""


def _cycles(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, pending = work[-1]
            if pending:
                nxt = pending.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_graph_sees_lazy_and_type_checking_imports() -> None:
    """The checker itself: imports inside functions and under TYPE_CHECKING are edges."""
    graph = edges()
    assert "ivr.cli.main" in graph["ivr.__main__"]
    assert any(dep.startswith("ivr.") for dep in graph["ivr.server.app"])
    cyclic = {
        "a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset(),
    }
    assert _cycles(cyclic) == [["a", "b", "c"]]


def test_no_import_cycle() -> None:
    assert _cycles(edges()) == []


def test_no_module_over_500_lines() -> None:
    long = {
        name: n
        for name, path in modules().items()
        if (n := len(path.read_text("utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_top_level_holds_only_leaves_and_packages() -> None:
    graph = edges()
    top = {name for name, path in modules().items() if _area(name) == "" and name != "ivr"}
    reaching_up = {
        name: sorted(dep for dep in graph[name] if dep not in top)
        for name in top - TOP_LEVEL_ENTRY
        if any(dep not in top for dep in graph[name])
    }
    assert reaching_up == {}


@pytest.mark.parametrize("area", sorted(NEVER))
def test_layers_never_import_upward(area: str) -> None:
    graph = edges()
    broken = sorted(
        f"{name} -> {dep}"
        for name, deps in graph.items()
        if _area(name) == area
        for dep in deps
        if _area(dep) in NEVER[area]
    )
    assert broken == []


def test_store_imports_nothing_above_it() -> None:
    graph = edges()
    broken = sorted(
        f"{name} -> {dep}"
        for name, deps in graph.items()
        if _area(name) == "store"
        for dep in deps
        if _area(dep) not in {"store", ""} | STORE_MAY_IMPORT
    )
    assert broken == []


def test_every_exception_class_derives_from_ivr_error() -> None:
    outside = []
    for name in modules():
        if name == "ivr.__main__":
            continue
        module = importlib.import_module(name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if obj.__module__ == name and issubclass(obj, BaseException):
                if not issubclass(obj, IvrError):
                    outside.append(f"{name}.{obj.__qualname__}")
    assert outside == []


def test_builtin_exceptions_are_raised_only_for_programming_errors() -> None:
    builtin_errors = {
        n
        for n, obj in vars(builtins).items()
        if isinstance(obj, type) and issubclass(obj, BaseException)
    }
    found = []
    for path in modules().values():
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Raise) and node.exc is not None:
                exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if isinstance(exc, ast.Name) and exc.id in builtin_errors:
                    if exc.id not in ALLOWED_BUILTIN_RAISES:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}: raise {exc.id}")
    assert found == []


def _package_map() -> set[str]:
    text = (ROOT / "docs" / "architecture.md").read_text("utf-8")
    section = text.split("## Package map", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`([\w/]+(?:\.py|/))`", section))


def test_package_map_names_every_module_and_nothing_else() -> None:
    """docs/architecture.md's package map mirrors `ivr/` one to one."""
    actual = set()
    for path in PKG.rglob("*"):
        if "__pycache__" in path.parts or "static" in path.parts:
            continue
        rel = path.relative_to(PKG).as_posix()
        if path.is_dir():
            actual.add(rel + "/")
        elif path.suffix == ".py" and path.name != "__init__.py":
            actual.add(rel)
    documented = _package_map()
    assert sorted(actual - documented) == [], "modules the package map does not name"
    assert sorted(documented - actual) == [], "names in the package map that do not exist"
