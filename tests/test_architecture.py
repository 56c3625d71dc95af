"""The engine's shape, checked: no import cycle in ``pipelines/``, no module
reaching into another module's ``_private`` names, and a library that leaves
the process as it found it."""

from __future__ import annotations

import ast
import gc
import sys
import weakref
from pathlib import Path

from pipelines.process import YOUNG_THRESHOLD, settle_heap, tuned_process
from pipelines.runtime import Runtime

from .helpers import Cyclic

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipelines", "plugins")


def modules() -> dict[str, ast.Module]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = ast.parse(path.read_text(), str(path))
    return found


def imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The project's modules ``name`` imports, type-checking-only imports included
    (a cycle through them is still a cycle of knowledge)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    # A package's own submodules importing the package's __init__ for its
    # re-exports is how a package is built, not a cycle between modules.
    return {m for m in found & known if m != name and not name.startswith(m + ".")}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for after in sorted(graph[node]):
            if state.get(after) == 1:
                return [*path[path.index(after) :], after]
            if after not in state and (cycle := visit(after)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_engine_imports_without_a_cycle() -> None:
    trees = modules()
    engine = {name for name in trees if name.startswith("pipelines")}
    graph = {name: imports(name, trees[name], engine) for name in engine}
    assert len(graph) > 30
    assert find_cycle(graph) is None


def test_the_engine_never_imports_plugins() -> None:
    trees = modules()
    for name, tree in trees.items():
        if name.startswith("pipelines"):
            assert not {m for m in imports(name, tree, set(trees)) if m.startswith("plugins")}, name


def private_names(tree: ast.Module) -> set[str]:
    """The ``_private`` names a module defines: functions, classes, attributes
    it assigns (``self._x = ...``) and module-level names."""
    defined: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, ast.Attribute | ast.Name) and isinstance(node.ctx, ast.Store):
            defined.add(node.attr if isinstance(node, ast.Attribute) else node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            defined.add(node.target.id)
    return {name for name in defined if name.startswith("_") and not name.startswith("__")}


def reaches(tree: ast.Module, theirs: set[str], own: set[str]) -> list[str]:
    """Uses of another module's private names: ``x._name`` (not ``self`` or
    ``cls``) or ``from m import _name``, for a name this module does not define."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in theirs - own:
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom):
            found += [
                f"line {node.lineno}: from {node.module} import {a.name}"
                for a in node.names
                if a.name.startswith("_") and not a.name.startswith("__")
            ]
    return found


def test_no_module_reaches_into_another_modules_private_names() -> None:
    trees = modules()
    privates = {name: private_names(tree) for name, tree in trees.items()}
    problems = {}
    for name, tree in trees.items():
        theirs = set().union(*(p for other, p in privates.items() if other != name))
        if found := reaches(tree, theirs, privates[name]):
            problems[name] = found
    assert problems == {}


def test_a_reach_into_a_private_name_is_found() -> None:
    ours = ast.parse("def f(bus):\n    return bus._accept([])\n")
    assert reaches(ours, {"_accept"}, set()) == ["line 2: bus._accept"]
    assert reaches(ast.parse("from pipelines.config import _located\n"), set(), set())
    mine = ast.parse("class A:\n    def _x(self):\n        return other._x\n")
    assert reaches(mine, {"_x"}, private_names(mine)) == []


async def test_a_running_runtime_leaves_the_process_as_it_was() -> None:
    interval, path, thresholds = sys.getswitchinterval(), list(sys.path), gc.get_threshold()
    async with Runtime():
        assert sys.getswitchinterval() == interval
        assert gc.get_freeze_count() == 0 and gc.get_threshold() == thresholds
    assert sys.getswitchinterval() == interval and sys.path == path


def test_a_settled_heap_is_frozen_until_a_reload_or_the_tuned_block_ends() -> None:
    assert gc.get_freeze_count() == 0
    with tuned_process(switch_interval=None):
        garbage = Cyclic()
        seen = weakref.ref(garbage)
        settle_heap()  # the start's objects, this one among them
        del garbage
        gc.collect()
        assert gc.get_freeze_count() > 0 and seen() is not None  # frozen: not collected
        settle_heap(collect=True)  # a reload: what it replaced is collected
        assert seen() is None and gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


def test_tuned_process_puts_everything_back(tmp_path: Path) -> None:
    interval, path, thresholds = sys.getswitchinterval(), list(sys.path), gc.get_threshold()
    assert thresholds[0] < YOUNG_THRESHOLD  # CPython's default: the block raises it
    with tuned_process([tmp_path, tmp_path], switch_interval=interval / 10):
        assert sys.getswitchinterval() < interval
        assert sys.path[0] == str(tmp_path.resolve()) and sys.path.count(sys.path[0]) == 1
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *thresholds[1:])
    assert sys.getswitchinterval() == interval and sys.path == path
    assert gc.get_threshold() == thresholds
    with tuned_process([tmp_path], switch_interval=None):
        assert sys.getswitchinterval() == interval
    assert sys.path == path
