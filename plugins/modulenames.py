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

#: Names whose use lets a module bind top-level names its syntax does not show.
_DYNAMIC = frozenset({"globals", "vars", "setattr", "exec", "eval", "__import__", "__dict__"})

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def top_level_names(tree: ast.Module) -> set[str] | None:
    """The names the module binds when it runs, or None when its code could
    bind others that cannot be seen without running it."""
    names: set[str] = set()
    # (node, how its bindings count): _MODULE binds at module level; _WALRUS
    # (inside a comprehension) binds there only through ``:=``; _INNER (a
    # def, class or lambda body) only through a ``global`` statement.
    pending: list[tuple[ast.AST, int]] = [(tree, _MODULE)]
    while pending:
        node, mode = pending.pop()
        if _is_dynamic(node):
            return None
        if mode == _MODULE or (isinstance(node, ast.NamedExpr) and mode == _WALRUS):
            names.update(_bound_by(node))
        elif isinstance(node, ast.Global):
            names.update(node.names)
        for child in ast.iter_child_nodes(node):
            pending.append((child, _child_mode(node, child, mode)))
    return names


_MODULE, _WALRUS, _INNER = 0, 1, 2


def _child_mode(node: ast.AST, child: ast.AST, mode: int) -> int:
    if mode == _INNER or isinstance(node, _SCOPES):
        return _INNER
    if isinstance(node, _COMPREHENSIONS) and isinstance(child, ast.comprehension):
        return _WALRUS  # its loop names are its own; a ``:=`` in it binds ours
    return mode


def _is_dynamic(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom) and any(alias.name == "*" for alias in node.names):
        return True
    if isinstance(node, ast.Name) and node.id in _DYNAMIC:
        return True
    if isinstance(node, ast.Attribute) and node.attr in ("modules", "__dict__"):
        return True
    return isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "__getattr__"


def _bound_by(node: ast.AST) -> list[str]:
    """The names this one node binds in the scope it is in."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [node.name]
    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
        return [node.id]
    if isinstance(node, ast.NamedExpr) and isinstance(node.target, ast.Name):
        return [node.target.id]
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
