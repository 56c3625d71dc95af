"""Logs Insights filters and stats pushed down into SQL.

``plan(query)`` turns what SQL can answer exactly into SQL text: the leading
``filter`` commands (a WHERE condition) and, when nothing but those filters
comes before it, the first ``stats`` (a GROUP BY). What is left of the query
runs in Python (``Query.rest``, ``Query.finish_stats``) over far fewer rows.
A query (or a part) SQL cannot express exactly is not planned: the reference
evaluator in ``insights`` runs it, so the answer never depends on the path.

How discovered JSON fields stay exact
-------------------------------------
A pushed field is a top-level key of a plain name (letters, digits, ``_``,
``-``): Logs Insights discovers it only from that key. Per row:

- a message SQLite's JSON1 finds invalid is one orjson refuses too (both read
  strict RFC 8259; checked case by case in the tests): the field is missing;
- a message where the two parsers could disagree is *risky* and evaluated by
  the reference code through a SQL function (``insights_eval``, ...): a
  ``\\u`` escape (lone surrogates; a key spelled with escapes), a NUL (SQLite
  stops reading there), nesting that may pass Python's depth limit, or the
  key written twice (orjson keeps the last duplicate, SQLite the first). The
  per-message checks run once per row (``kind``, in an inner SELECT);
- an integer past 64 bits reads as a float in SQLite: that value is left to
  the reference code too;
- otherwise SQLite reads the value: ``json_type`` gives its kind (``true``
  and ``false`` are the strings "true"/"false", ``null``, objects and arrays
  are missing), and each test is spelled for text and for numbers.

Indexed fields (a field index policy, ``fieldindex``) are read from their
column for the events written since the field was indexed: ingest stored
exactly what the reference discovers, so the column's SQL type is the
value's kind (``typeof``), no JSON is read and no per-message check runs;
a value the column could not hold (a BLOB) goes to the reference code.
Older events read their JSON as above (``CASE WHEN e.id >= since``). The
types a column has held (``Indexed.kinds``) decide which tests it needs: a
column that only held integers is read as it is, with no float check.

Aggregates stay exact the same way: ``sum``/``avg`` of integers are exact in
SQL; floats (whose sum depends on the order of additions), a group mixing
1 and 1.0, or an integer overflow make the store run the query in Python.

The SQL spellings specific to SQLite (JSON1, GLOB, ``instr``) are in
``SQLiteSpelling``; a PostgreSQL backend gives its own (``jsonb`` operators).
"""

from __future__ import annotations

import itertools
import math
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from plugins.logs.insights import (
    Call,
    Command,
    Field,
    InList,
    Lit,
    Match,
    Node,
    Op,
    Query,
    compare,
    discover,
    event_getter,
    to_number,
)

#: Top-level JSON keys whose spelling in a message is unambiguous.
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_SYSTEM = {
    "@timestamp": ("e.ts", "number"),
    "@ingestionTime": ("e.ingested", "number"),
    "@message": ("e.message", "text"),
    "@logStream": ("s.name", "text"),
}
_FLIP = {"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


@dataclass(frozen=True)
class Indexed:
    """An indexed field's column and the first event id that carries it."""

    column: str
    since: int
    #: The SQL types the column has held (fieldindex.KINDS bits: text 1,
    #: integer 2, real 4, a value SQL could not hold 8); NULL is always possible.
    kinds: int = 15


class Unplannable(Exception):
    """A part of a query SQL cannot answer exactly."""


# -- the reference code, callable from SQL ---------------------------------------------


@dataclass
class Slots:
    """Reference evaluators SQL calls by number for risky rows, and whether a
    value could not be handed back to SQL (an integer past 64 bits): then
    the store answers the query in Python."""

    tests: dict[int, Callable[[Any], Any]] = field(default_factory=dict)
    failed: bool = False


_SLOTS: dict[int, Slots] = {}
_NEXT = itertools.count(1)
_LOCK = threading.Lock()
_INT64 = (-(2**63), 2**63 - 1)


def _slot(slots: Slots, fn: Callable[[Any], Any]) -> int:
    with _LOCK:
        number = next(_NEXT)
    slots.tests[number] = fn
    _SLOTS[number] = slots
    return number


def release(slots: Slots) -> None:
    """Forget a query's evaluators once it has run."""
    for number in slots.tests:
        _SLOTS.pop(number, None)


def _to_sql(slots: Slots, value: Any) -> Any:
    """``value`` for SQL; None and ``failed`` when SQL cannot hold it (an
    integer past 64 bits, a string with a lone surrogate)."""
    if type(value) is int and not _INT64[0] <= value <= _INT64[1]:
        slots.failed = True
        return None
    if type(value) is str and not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            slots.failed = True
            return None
    return value


def _sql_eval(number: int, message: str) -> Any:
    """``insights_eval(slot, message)``: the reference value of slot's test
    or field on an event holding just this message's discovered fields."""
    slots = _SLOTS[number]
    event = _Fields(discover(message))
    event["@message"] = message
    value = slots.tests[number](event)
    if type(value) is bool:
        return int(value)
    return _to_sql(slots, value)


def _sql_number(number: int, text: str) -> Any:
    """``insights_num(slot, text)``: a string as the reference reads it as a
    number (int(), then float(), finite), or NULL."""
    return _to_sql(_SLOTS[number], to_number(text))


def _sql_search(number: int, text: Any) -> int:
    """``insights_search(slot, text)``: whether slot's regex finds a match."""
    return int(_SLOTS[number].tests[number](text) is not None)


class _Fields(dict[str, Any]):
    def __missing__(self, key: str) -> Any:
        return None


#: The SQL functions a LogStore registers on its connections.
FUNCTIONS: dict[str, tuple[int, Callable[..., Any]]] = {
    "insights_eval": (2, _sql_eval),
    "insights_num": (2, _sql_number),
    "insights_search": (2, _sql_search),
}


# -- spellings ------------------------------------------------------------------------


class SQLiteSpelling:
    """SQLite's JSON1 and text functions for the checks above."""

    def json_type(self, message: str, key: str) -> str:
        return f"json_type({message}, '$.\"{key}\"')"

    def json_value(self, message: str, key: str) -> str:
        return f"({message} ->> '$.\"{key}\"')"

    def kind(self, message: str) -> str:
        """0: not JSON (no fields); 2: a message the two parsers could read
        differently (the reference evaluates it); 1: SQLite reads it as orjson."""
        return (
            f"(CASE WHEN NOT json_valid({message}) THEN 0"
            f" WHEN instr({message}, '\\u') > 0 OR instr({message}, char(0)) > 0"
            f" OR (length({message}) > 2048 AND length({message})"
            f" - length(replace(replace({message}, '{{', ''), '[', '')) > 1024) THEN 2"
            " ELSE 1 END)"
        )

    def repeated(self, message: str, key: str) -> str:
        """Whether ``"key"`` appears twice (orjson keeps a duplicate key's
        last value, SQLite its first)."""
        quoted = f'"{key}"'
        return (
            f"(instr(substr({message}, instr({message}, '{quoted}') + {len(quoted)}),"
            f" '{quoted}') > 0)"
        )

    def contains(self, text: str, part: str) -> str:
        return f"(instr({text}, {part}) > 0)"

    def as_text(self, integer: str) -> str:
        return f"CAST({integer} AS TEXT)"


SQLITE_SPELLING = SQLiteSpelling()


def quote(value: str) -> str:
    """A string literal (standard SQL: quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def number(value: int | float) -> str:
    """A number literal; an infinite one has no SQL spelling."""
    if isinstance(value, float) and not math.isfinite(value):
        raise Unplannable("an infinite number")
    return repr(value) if isinstance(value, float) else str(value)


# -- plans ----------------------------------------------------------------------------


@dataclass
class Aggregate:
    """One stats column computed in SQL: its kind and the SQL columns it reads."""

    kind: str  # count, sum, avg, min, max
    columns: list[int]  # positions in the SQL result row


@dataclass
class Plan:
    """What SQL answers for a query: ``where`` (the pushed filters, ``1``
    when none), ``join`` when @logStream is read, and either ``rest`` (the
    query of the commands after the filters) or a stats ``select``/``group``."""

    query: Query
    where: str
    join: bool
    slots: Slots
    #: The per-row SQL the pushed conditions read as ``e.kind``, if any.
    kind: str | None = None
    rest: Query | None = None
    #: Stats: the per-row values (``c0``, ``c1``, ... in an inner SELECT, so
    #: each is computed once per row) and the aggregates over them.
    inner: list[str] = field(default_factory=list)
    select: list[str] = field(default_factory=list)
    keys: int = 0
    aggregates: list[Aggregate] = field(default_factory=list)
    checks: list[int] = field(default_factory=list)  # columns that must be 0
    bin_key: int | None = None  # the key position of bin(), if any

    def value(self, sql: str) -> str:
        """A per-row value of the inner SELECT; its name there."""
        if sql not in self.inner:
            self.inner.append(sql)
        return f"c{self.inner.index(sql)}"

    def column(self, sql: str) -> int:
        """An output column; its position."""
        self.select.append(sql)
        return len(self.select) - 1


def plan(
    query: Query,
    spelling: SQLiteSpelling = SQLITE_SPELLING,
    indexed: dict[str, Indexed] | None = None,
) -> Plan | None:
    """The SQL part of ``query``, or None when nothing can be pushed down.
    ``indexed``: the group's indexed fields, read from their columns."""
    commands = query.commands
    slots = Slots()
    compiler = _Compiler(spelling, slots, indexed or {})
    conditions = []
    pushed = 0
    for cmd in commands:
        if cmd.kind != "filter" or cmd.expr is None:
            break
        try:
            conditions.append(compiler.condition(cmd.expr))
        except Unplannable:
            break
        pushed += 1
    where = " AND ".join(f"({c})" for c in conditions) or "1"
    rest = commands[pushed:]
    if rest and rest[0].kind == "stats":
        stats = _stats_plan(query, rest[0], compiler, where)
        if stats is not None:
            return stats
    if not pushed:
        release(slots)
        return None
    out = Plan(query, where, compiler.join, slots, rest=Query(query.text, rest))
    out.kind = compiler.kind()
    return out


def _stats_plan(query: Query, cmd: Command, compiler: _Compiler, where: str) -> Plan | None:
    try:
        out = Plan(query, where, False, compiler.slots)
        sqls = [compiler.key(item.expr) for item in cmd.by]
        keys = [out.value(sql) for sql in sqls]
        out.select += keys
        out.keys = len(keys)
        for sql, key in zip(sqls, keys, strict=True):
            # A group mixing 1 and 1.0 shows the first one seen: Python decides.
            if sql not in compiler.never_real:
                out.checks.append(out.column(f"sum(typeof({key}) = 'real')"))
        for i, item in enumerate(cmd.by):
            if isinstance(item.expr, Call) and item.expr.name == "bin":
                out.bin_key = i
        for item in cmd.items:
            assert isinstance(item.expr, Call)
            out.aggregates.append(_aggregate(item.expr, compiler, out))
    except Unplannable:
        return None
    out.join = compiler.join
    out.kind = compiler.kind()
    return out


def _aggregate(call: Call, compiler: _Compiler, out: Plan) -> Aggregate:
    column = out.column
    if call.name == "count" and not call.args:
        return Aggregate("count", [column("count(*)")])
    (arg,) = call.args
    if call.name == "count":
        return Aggregate("count", [column(f"count({out.value(compiler.key(arg))})")])
    sql = compiler.numeric(arg)
    value = out.value(sql)
    # Floats are summed in Python (the order of additions decides the last
    # bits); a float among min/max values could tie with an integer.
    if sql not in compiler.never_real:
        out.checks.append(column(f"sum(typeof({value}) = 'real')"))
    if call.name == "avg":
        return Aggregate("avg", [column(f"sum({value})"), column(f"count({value})")])
    function = {"sum": "sum", "min": "min", "max": "max"}[call.name]
    return Aggregate(call.name, [column(f"{function}({value})")])


class _Compiler:
    """Expressions to SQL, or Unplannable."""

    def __init__(self, spelling: SQLiteSpelling, slots: Slots, indexed: dict[str, Indexed]) -> None:
        self.sp = spelling
        self.slots = slots
        self.indexed = indexed
        #: Values (SQL) known never to be a float: their real checks are skipped.
        self.never_real: set[str] = set()
        self.join = False
        self.json = False  # reads JSON fields: the rows need their kind
        #: Indexed fields read: rows before this id read their JSON (and need their kind).
        self.json_before = 0

    def kind(self) -> str | None:
        """The per-row kind the conditions read as ``e.kind``: for every row
        when a field is read from JSON, for the rows older than an indexed
        field's column otherwise (CASE computes it only there), or none."""
        if self.json:
            return self.sp.kind("e.message")
        if self.json_before > 1:
            older = self.sp.kind("e.message")
            return f"(CASE WHEN e.id >= {self.json_before} THEN 1 ELSE {older} END)"
        return None

    # -- fields

    def _field(self, node: Node) -> Field:
        if not isinstance(node, Field):
            raise Unplannable("not a field")
        if node.name in _SYSTEM:
            self.join = self.join or node.name == "@logStream"
            return node
        found = self.indexed.get(node.name)
        if found is not None:
            if _PLAIN_KEY.fullmatch(node.name):
                self.json_before = max(self.json_before, found.since)
            return node
        if not _PLAIN_KEY.fullmatch(node.name):
            raise Unplannable(f"field {node.name!r}")
        self.json = True
        return node

    def _typed(
        self,
        node: Node,
        text: Callable[[str], str],
        num: Callable[[str], str],
        constant: Callable[[Any], str],
        risky: str,
    ) -> str:
        """SQL by the field's kind: ``text``/``num`` of its SQL value,
        ``constant`` of a value SQL need not read (missing, "true", "false"),
        ``risky`` for the rows the reference code evaluates."""
        f = self._field(node)
        if f.name in _SYSTEM:
            column, kind = _SYSTEM[f.name]
            sql = text(column) if kind == "text" else num(column)
            if sql == column:  # integers (validated at ingest) or text: never a float
                self.never_real.add(column)
            return sql
        found = self.indexed.get(f.name)
        if found is None:
            return self._json_typed(f.name, text, num, constant, risky)
        c = f"e.{found.column}"
        branches = {"text": text(c), "integer": num(c), "real": num(c), "blob": risky}
        held = {k: sql for k, sql in branches.items() if found.kinds & _KIND_BITS[k]}
        extracted = _by_type(c, {**held, "null": constant(None)})
        if found.since <= 1:
            if extracted == c and not found.kinds & (_KIND_BITS["real"] | _KIND_BITS["blob"]):
                self.never_real.add(c)  # the column as it is: no float to check for
            return extracted  # every event of the store carries it
        # Older events: their JSON as below, or the reference for a name JSON paths cannot spell.
        older = (
            self._json_typed(f.name, text, num, constant, risky)
            if _PLAIN_KEY.fullmatch(f.name)
            else risky
        )
        return f"(CASE WHEN e.id >= {found.since} THEN {extracted} ELSE {older} END)"

    def _json_typed(
        self,
        name: str,
        text: Callable[[str], str],
        num: Callable[[str], str],
        constant: Callable[[Any], str],
        risky: str,
    ) -> str:
        """``_typed`` of a field read from the message's JSON (``e.kind`` per row)."""
        m, sp = "e.message", self.sp
        value = sp.json_value(m, name)
        return (
            f"(CASE e.kind WHEN 0 THEN {constant(None)} WHEN 2 THEN {risky}"
            f" ELSE CASE WHEN {sp.repeated(m, name)} THEN {risky}"
            f" ELSE CASE {sp.json_type(m, name)}"
            f" WHEN 'text' THEN {text(value)}"
            f" WHEN 'integer' THEN CASE typeof({value}) WHEN 'integer' THEN {num(value)}"
            f" ELSE {risky} END WHEN 'real' THEN {num(value)}"
            f" WHEN 'true' THEN {constant('true')} WHEN 'false' THEN {constant('false')}"
            f" ELSE {constant(None)} END END END)"
        )

    def _reference(self, fn: Callable[[Any], Any]) -> str:
        return f"insights_eval({_slot(self.slots, fn)}, e.message)"

    def key(self, node: Node) -> str:
        """A field's value (a stats key, count's argument)."""
        if isinstance(node, Call) and node.name == "bin" and node.period is not None:
            if node.period.months or node.period.ms % (7 * 86_400_000) == 0:
                raise Unplannable("calendar bins")
            sql = f"(e.ts - e.ts % {node.period.ms})"
            self.never_real.add(sql)  # timestamps are integers (validated at ingest)
            return sql
        get = event_getter(self._field(node).name)
        return self._typed(
            node,
            lambda x: x,
            lambda x: x,
            lambda v: "NULL" if v is None else quote(v),
            self._reference(get),
        )

    def numeric(self, node: Node) -> str:
        """A field read as a number (sum, avg, min, max): NULL when it is not one."""
        f = self._field(node)
        get = event_getter(f.name)
        slot = _slot(self.slots, to_number)
        return self._typed(
            node,
            lambda x: f"insights_num({slot}, {x})",
            lambda x: x,
            lambda _v: "NULL",
            self._reference(lambda ev: to_number(get(ev))),
        )

    # -- conditions (0 or 1, never NULL)

    def condition(self, node: Node) -> str:
        if isinstance(node, Op) and node.op in ("and", "or"):
            a, b = (self.condition(arg) for arg in node.args)
            return f"({a} {node.op.upper()} {b})"
        if isinstance(node, Op) and node.op == "not":
            return f"(NOT {self.condition(node.args[0])})"
        if isinstance(node, Op) and node.op in _FLIP:
            return self._comparison(node)
        if isinstance(node, Match):
            return self._match(node)
        if isinstance(node, InList):
            return self._in(node)
        if isinstance(node, Call) and node.name == "ispresent":
            return self._test(node.args[0], _present, lambda _x: "1", lambda _x: "1")
        raise Unplannable("condition")

    def _test(self, node: Node, fn: Callable[[Any], bool], text: Callable[[str], str],
              num: Callable[[str], str]) -> str:  # fmt: skip
        """A test of one field: SQL per kind, constants where the value is known."""
        get = event_getter(self._field(node).name)
        return self._typed(
            node,
            text,
            num,
            lambda v: str(int(bool(fn(v)))),
            self._reference(lambda ev: fn(get(ev))),
        )

    def _comparison(self, node: Op) -> str:
        left, right = node.args
        op = node.op
        if isinstance(left, Lit) and isinstance(right, Field):
            left, right, op = right, left, _FLIP[op]
        if not isinstance(right, Lit) or not isinstance(left, Field):
            raise Unplannable("comparison")
        return self._test(left, *self._compare_sql(op, right.value))

    def _compare_sql(
        self, op: str, lit: Any
    ) -> tuple[Callable[[Any], bool], Callable[[str], str], Callable[[str], str]]:
        def fn(v: Any) -> bool:
            return compare(op, v, lit)

        sql_op = "=" if op == "=" else op
        lit_num = to_number(lit)
        slot = _slot(self.slots, to_number)
        if isinstance(lit, str):
            text = lambda x: f"({x} {sql_op} {quote(lit)})"  # noqa: E731
        else:
            is_ne = int(op == "!=")
            text = lambda x: f"coalesce(insights_num({slot}, {x}) {sql_op} {number(lit)}, {is_ne})"  # noqa: E731
        if lit_num is None:
            num = lambda _x: str(int(op == "!="))  # noqa: E731
        else:
            num = lambda x: f"({x} {sql_op} {number(lit_num)})"  # noqa: E731
        return fn, text, num

    def _match(self, node: Match) -> str:
        pattern = node.pattern
        negate = node.negate
        get = event_getter(self._field(node.arg).name)
        if isinstance(pattern, str):

            def fn(v: Any) -> bool:
                return (v is not None and pattern in _as_text(v)) != negate

            def text(x: str) -> str:
                return _negated(self.sp.contains(x, quote(pattern)), negate)

        else:
            search = pattern.search
            slot = _slot(self.slots, lambda t: search(_as_text(t)))
            required = required_literal(pattern.pattern)
            globs = required_globs(pattern)

            def fn(v: Any) -> bool:
                return (v is not None and search(_as_text(v)) is not None) != negate

            def text(x: str) -> str:
                sql = f"insights_search({slot}, {x})"
                # CASE, not AND: SQLite evaluates both sides of an AND in a
                # value, so only CASE keeps Python off the rows ruled out.
                if globs:
                    shapes = " OR ".join(f"{x} GLOB {quote(g)}" for g in globs)
                    sql = f"(CASE WHEN {shapes} THEN {sql} ELSE 0 END)"
                elif required:
                    sql = (
                        f"(CASE WHEN {self.sp.contains(x, quote(required))} THEN {sql} ELSE 0 END)"
                    )
                return _negated(sql, negate)

        reference = self._reference(lambda ev: fn(get(ev)))

        def num(x: str) -> str:
            # An integer's text is the same in SQL and Python; a float's is not.
            as_text = text(self.sp.as_text(x))
            return f"(CASE typeof({x}) WHEN 'integer' THEN {as_text} ELSE {reference} END)"

        return self._test(node.arg, fn, text, num)

    def _in(self, node: InList) -> str:
        if not isinstance(node.arg, Field):
            raise Unplannable("in")
        parts = [self._compare_sql("=", value) for value in node.values]
        negate = node.negate

        def fn(v: Any) -> bool:
            return any(compare("=", v, x) for x in node.values) != negate

        def text(x: str) -> str:
            return _negated(_any(p[1](x) for p in parts), negate)

        def num(x: str) -> str:
            return _negated(_any(p[2](x) for p in parts), negate)

        return self._test(node.arg, fn, text, num)


_KIND_BITS = {"text": 1, "integer": 2, "real": 4, "blob": 8}


def _by_type(column: str, branches: dict[str, str]) -> str:
    """SQL by a value column's type (only the types it has held, and NULL),
    with the fewest tests per row: the SQL most types share is the ELSE, and
    NULL needs no branch of its own when that ELSE is the column itself."""
    common = max(branches.values(), key=list(branches.values()).count)
    if common == column and branches["null"] == "NULL":
        branches["null"] = column
    tests = "".join(f" WHEN '{kind}' THEN {sql}" for kind, sql in branches.items() if sql != common)
    return f"(CASE typeof({column}){tests} ELSE {common} END)" if tests else common


def _present(v: Any) -> bool:
    return v is not None


def _any(parts: Iterator[str]) -> str:
    listed = list(parts)
    return "(" + " OR ".join(listed) + ")" if listed else "0"


def _negated(sql: str, negate: bool) -> str:
    return f"(NOT {sql})" if negate else sql


def _as_text(v: Any) -> str:
    return v if type(v) is str else str(v)


# -- a literal every match of a regex contains ------------------------------------------

_CLASS_ESCAPES = set("dDwWsSbBAZ0123456789")
_QUANTIFIERS = set("*?{")


def required_literal(source: str) -> str:
    """The longest run of characters every match of ``source`` contains, or "".

    Conservative: any alternation, group, inline flag or escape it does not
    know gives "" (then only the regex decides); a character followed by
    ``*``, ``?`` or ``{`` is optional, so it ends a run without joining it.
    """
    if "|" in source or "(" in source:
        return ""
    runs: list[str] = []
    run: list[str] = []
    i = 0
    while i < len(source):
        c = source[i]
        nxt = source[i + 1] if i + 1 < len(source) else ""
        literal: str | None = None
        width = 1
        if c == "\\":
            # \d, \w, \1, \n...: not one known character; \. \/ \$: that character.
            literal = None if not nxt or nxt.isalnum() or nxt in _CLASS_ESCAPES else nxt
            width = 2
        elif c not in ".^$[]+*?{}()":
            literal = c
        after = source[i + width] if i + width < len(source) else ""
        if literal is not None and after in _QUANTIFIERS:
            literal = None  # optional
        if literal is None:
            runs.append("".join(run))
            run = []
            if c in "[{":
                end = _closing(source, i)
                if end < 0:
                    return ""
                i = end + 1
                continue
        else:
            run.append(literal)
        i += width
    runs.append("".join(run))
    return max(runs, key=len)


_ONE_CHARACTER = set("dDwWsS")
_GLOB_SPECIAL = {"*": "[*]", "?": "[?]", "[": "[[]"}


def required_globs(pattern: re.Pattern[str]) -> list[str]:
    """GLOB patterns one of which every text the regex finds a match in
    matches (a narrower prefilter than a literal), or [] when the regex is
    not a fixed run of single characters.

    Only a regex of single-character atoms (literals, escaped punctuation,
    ``\\d``-style classes, ``.``, ``[...]``) with an optional ``^`` first and
    ``$`` last, without flags, qualifies: each of its matches has that many
    characters, so ``?`` stands for each class (GLOB's ``?`` takes any one
    character: a superset) and the text around is ``*`` unless anchored. A
    ``$`` also matches before a final newline: the second pattern."""
    source = pattern.pattern
    if pattern.flags != re.UNICODE or not source:
        return []
    start = source.startswith("^")
    end = source.endswith("$") and not source.endswith("\\$")
    body = source[int(start) : len(source) - int(end)]
    parts: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            nxt = body[i + 1 : i + 2]
            if nxt in _ONE_CHARACTER:
                parts.append("?")
            elif nxt and not nxt.isalnum() and nxt != "_":
                parts.append(_GLOB_SPECIAL.get(nxt, nxt))
            else:
                return []  # \b, \A, \1, \n...: not one known character
            i += 2
        elif c == "[":
            close = _closing(body, i)
            if close < 0:
                return []
            parts.append("?")
            i = close + 1
        elif c in "^$*+?{}()|":
            return []  # quantifiers, groups, alternation, inner anchors: not fixed
        else:
            parts.append("?" if c == "." else _GLOB_SPECIAL.get(c, c))
            i += 1
        if body[i : i + 1] in ("*", "+", "?", "{"):
            return []
    glob = ("" if start else "*") + "".join(parts)
    if not end:
        return [glob + "*"]
    return [glob, glob + "\n"]


def _closing(source: str, i: int) -> int:
    """Where the character class or ``{m,n}`` opened at ``i`` ends, or -1."""
    if source[i] == "{":
        return source.find("}", i)
    j = i + 1
    if j < len(source) and source[j] == "^":
        j += 1
    if j < len(source) and source[j] == "]":
        j += 1  # a ] first in a class is a member
    while j < len(source):
        if source[j] == "\\":
            j += 2
        elif source[j] == "]":
            return j
        else:
            j += 1
    return -1
