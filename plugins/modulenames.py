"""The names a Python module binds at its top level, read from its source
without running it.

``pipelines validate`` must not run user code, yet a function target whose
module exists but lacks the function would otherwise pass validation and
fail only when the pipeline starts. Reading the module's syntax tree answers
"is ``handler`` defined in ``handlers.py``?" without importing it.

The answer is only trusted when it is certain: a module that can bind names
in ways its syntax does not show (a star import, a module ``__getattr__``,
``globals()``, ``setattr``, ``exec`` and their kin, or ``sys.modules``) gives
``None``, and the caller then leaves the question to import time.
"""

from __future__ import annotations

import ast

#: Names (called, read, imported or reached as attributes) that let a module
#: bind top-level names its syntax does not show, or change another module's.
_DYNAMIC = frozenset(
    {
        "globals",
        "locals",
        "vars",
        "setattr",
        "exec",
        "eval",
        "__import__",
        "import_module",
        "reload",
        "_getframe",
        "f_globals",
        "__globals__",
        "modules",
        "__dict__",
    }
)

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def top_level_names(tree: ast.Module, module: str | None = None) -> set[str] | None:
    """The names the module (named ``module``) binds when it runs, or None
    when its code could bind others that cannot be seen without running it.
    Only a name certainly missing may be refused, so where in doubt a name
    counts as bound: every ``:=`` and ``global`` name, whatever its scope."""
    names: set[str] = set()
    # (node, whether it is in module scope: not in a def, class or lambda's
    # body, nor a comprehension's own loop).
    pending: list[tuple[ast.AST, bool]] = [(tree, True)]
    while pending:
        node, top = pending.pop()
        if _is_dynamic(node) or _imports_itself(node, module):
            return None
        if top or isinstance(node, ast.NamedExpr | ast.Global):
            names.update(_bound_by(node))
        for child in ast.iter_child_nodes(node):
            inner = isinstance(node, _SCOPES) or (
                isinstance(node, _COMPREHENSIONS) and isinstance(child, ast.comprehension)
            )
            pending.append((child, top and not inner))
    # A module __getattr__ (however bound) answers for any name.
    return None if "__getattr__" in names else names


def _is_dynamic(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom):
        return any(alias.name == "*" or alias.name in _DYNAMIC for alias in node.names)
    if isinstance(node, ast.Name):
        return node.id in _DYNAMIC
    return isinstance(node, ast.Attribute) and node.attr in _DYNAMIC


def _imports_itself(node: ast.AST, module: str | None) -> bool:
    """``import m`` in m, or ``from pkg import m`` / ``from . import m`` in
    pkg.m: the module can then set its own attributes."""
    if module is None:
        return False
    parent, _, last = module.rpartition(".")
    if isinstance(node, ast.Import):
        return any(alias.name == module for alias in node.names)
    if isinstance(node, ast.ImportFrom):
        source = node.module or ""
        named = any(alias.name == last for alias in node.names)
        return named and (node.level > 0 or source == parent)
    return False


def _bound_by(node: ast.AST) -> list[str]:
    """The names this one node binds in the scope it is in."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [node.name]
    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
        return [node.id]
    if isinstance(node, ast.NamedExpr) and isinstance(node.target, ast.Name):
        return [node.target.id]
    if isinstance(node, ast.Global):
        return list(node.names)
    if isinstance(node, ast.Import):
        return [alias.asname or alias.name.partition(".")[0] for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        return [alias.asname or alias.name for alias in node.names]
    if isinstance(node, ast.ExceptHandler | ast.MatchAs | ast.MatchStar) and node.name:
        return [node.name]
    if isinstance(node, ast.MatchMapping) and node.rest:
        return [node.rest]
    alias = getattr(ast, "TypeAlias", None)  # ``type X = ...`` (Python 3.12)
    if alias is not None and isinstance(node, alias) and isinstance(node.name, ast.Name):
        return [node.name.id]
    return []
