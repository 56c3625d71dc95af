"""plugins.modulenames: the names a module binds, read from its source, and
when the answer cannot be trusted (None)."""

from __future__ import annotations

import ast
import textwrap

import pytest

from plugins.modulenames import top_level_names


def names(source: str) -> set[str] | None:
    return top_level_names(ast.parse(textwrap.dedent(source)))


def test_every_way_a_module_binds_a_name_is_seen() -> None:
    found = names(
        """
        import os.path, json as j
        from collections import deque, OrderedDict as OD
        def f(): pass
        async def g(): pass
        class C: pass
        a = b = 1
        (c, [d, *e]) = 1, [2, 3]
        h: int = 1
        i += 1
        for k in []: pass
        with open("x") as w: pass
        if True:
            in_if = 1
        else:
            in_else = 1
        try:
            in_try = 1
        except Exception as caught:
            in_except = 1
        finally:
            in_finally = 1
        while False:
            in_while = 1
        match 1:
            case {"k": v, **rest}: pass
            case [first, *others]: pass
            case captured: pass
        print(walrus := 1)
        [x for x in range(3) if (leaked := x)]
        """
    )
    assert found == {
        *["os", "j", "deque", "OD", "f", "g", "C", "a", "b", "c", "d", "e", "h", "i", "k", "w"],
        *["in_if", "in_else", "in_try", "caught", "in_except", "in_finally", "in_while"],
        *["v", "rest", "first", "others", "captured", "walrus", "leaked"],
    }


def test_names_of_inner_scopes_are_not_the_modules() -> None:
    found = names(
        """
        def f(arg):
            local = 1
            import inner_import
        class C:
            attribute = 1
            def method(self): pass
        squares = [x * x for x in range(3)]
        pairs = {key: value for key, value in []}
        function = lambda y: y
        """
    )
    assert found == {"f", "C", "squares", "pairs", "function"}


def test_a_global_statement_in_a_function_binds_at_module_level() -> None:
    assert names("def setup():\n    global handler\n    handler = print\n") == {
        "setup",
        "handler",
    }


@pytest.mark.parametrize(
    "source",
    [
        "from handlers import *",
        "def __getattr__(name): return print",
        "globals()['handler'] = print",
        "globals().update(handler=print)",
        "vars()['handler'] = print",
        "import sys\nsetattr(sys.modules[__name__], 'handler', print)",
        "exec('def handler(): pass')",
        "import sys\nsys.modules[__name__] = object()",
        "def f():\n    exec('x = 1')",
        "__getattr__ = lambda name: print",
        "from lazy import __getattr__",
        "locals()['handler'] = print",
        "import builtins\nbuiltins.exec('def handler(): pass')",
        "from sys import modules\nmodules[__name__].handler = print",
        "import sys\nsys._getframe().f_globals['handler'] = print",
        "def f(): pass\nf.__globals__['handler'] = print",
        "import importlib\nimportlib.import_module(__name__).handler = print",
    ],
)
def test_a_module_that_may_bind_unseen_names_gives_no_answer(source: str) -> None:
    assert names(source) is None


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("handlers", "import handlers\nhandlers.handler = print"),
        ("shop.handlers", "import shop.handlers\nshop.handlers.handler = print"),
        ("shop.handlers", "from shop import handlers\nhandlers.handler = print"),
        ("shop.handlers", "from . import handlers\nhandlers.handler = print"),
    ],
)
def test_a_module_that_imports_itself_gives_no_answer(module: str, source: str) -> None:
    assert top_level_names(ast.parse(source), module) is None
    assert top_level_names(ast.parse(source), "elsewhere") is not None


def test_a_walrus_anywhere_counts_as_bound_where_in_doubt() -> None:
    # A def's defaults and decorators run in module scope; a walrus in a
    # body binds locally, but counting it only ever lets a name through.
    found = names(
        """
        def f(a=(handler := print)): pass
        @(decorated := lambda f: f)
        def g(): pass
        def h():
            inner = (local := 1)
        """
    )
    assert found is not None
    assert {"handler", "decorated", "local", "f", "g", "h"} <= found
    assert "inner" not in found
