"""A subset of CloudWatch Logs Insights queries, compiled to closures over rows.

``parse_query(text)`` parses and compiles a query once; ``Query.columns`` names
the system fields the store must fetch (in the order each row tuple holds
them) and ``Query.run(rows)`` evaluates it over rows in ascending
``@timestamp`` order. A query that touches only system fields runs over the
tuples themselves; a row becomes a dict only when a query defines fields
(``parse``, ``fields x as y``) or reads discovered ones, and a message is
parsed as JSON at most once, on the first read of a field it might hold.
``Query.head`` says when a query keeps only the first events in time order
(``sort @timestamp desc | limit 20``): the store then reads just those, and
``run`` them with the range's ``total`` gives the same result. This module
is the reference: ``pushdown`` runs leading filters and a first ``stats`` in
SQL with the same answers, and hands the rest to ``run``/``finish_stats``.

Supported (as AWS documents it)
-------------------------------
- Commands separated by ``|``, newlines anywhere, ``#`` comments to the end of
  a line, backticked names (```detail-type```) for fields with other characters.
- ``fields`` / ``display``: field lists, expressions, ``as`` aliases.
- ``filter`` (and its alias ``where``): ``= != < <= > >=``, ``and or not``,
  parentheses, ``like /re/``, ``like "substring"``, ``=~ /re/``, ``not like``,
  ``in [..]``, ``not in [..]``,
  arithmetic ``+ - * / % ^``, numbers and strings, and the scalar functions in
  ``_FUNCTIONS`` (``ispresent``, ``isempty``, ``isblank``, ``strlen``,
  ``tolower``, ``toupper``, ``trim``, ``abs``, ``ceil``, ``floor``,
  ``concat``, ``coalesce``, ``bin``).
- ``stats count() / count(*) / count(expr), sum, avg, min, max`` with ``as``
  aliases, several per command, ``by`` expressions and ``bin(period)`` with
  AWS's units (ms msec millisecond, s sec second, m min minute, h hr hour,
  d day, w week, mo mon month, q qtr quarter, y yr year; units longer than
  one character take a plural ``s``); a later ``stats`` may aggregate the
  output of an earlier one.
- ``sort`` on several keys with ``asc``/``desc``, with AWS's natural order:
  non-numbers before numbers, digit runs compared by length then value.
- ``limit n`` (default 10,000 rows, at most 100,000).
- ``parse [field] "glob * with * stars" as a, b`` and
  ``parse [field] /re (?<name>group)/`` (the field defaults to ``@message``).
- System fields ``@timestamp`` ``@ingestionTime`` (ms; shown as
  ``YYYY-MM-DD HH:MM:SS.mmm`` UTC), ``@message``, ``@logStream``, and ``@log``
  (given to ``run``). JSON messages are discovered: nested keys joined with
  dots, array items by index (``items.0.id``), top-level keys starting with
  ``@`` shown with one more ``@``.
- ``recordsMatched`` counts events passing the filters before the first
  ``stats`` (all scanned events when there is none).

Choices where AWS's documentation is silent
-------------------------------------------
- Without ``sort``, events come newest first; ``sort f`` without a direction
  sorts descending. Missing values sort last in either direction.
- ``stats`` groups are listed newest bin first when grouped by ``bin()``,
  otherwise in the order groups first appeared. ``bin`` periods are aligned
  to the epoch in UTC; weeks start on Monday, months/quarters/years on the
  calendar.
- Without ``fields``/``display``/``stats``, rows show ``@timestamp`` and
  ``@message`` followed by fields ``parse`` extracted.
- A comparison with a missing field is false (so is ``in``); ``not`` and
  ``not in`` negate that. A number compares numerically with a value that
  reads as a number ("200" = 200); two strings compare as text.
- ``sum avg min max`` read numbers and numeric strings and skip other values;
  a group with none has no value for that column (left out of the row, as are
  missing fields). A missing ``by`` value forms its own group.
- JSON ``true``/``false`` become the strings ``"true"``/``"false"``; ``null``
  is missing. A message orjson refuses but RFC 8259 allows (a number past a
  double's range, read as infinity) is read by the standard library; a
  duplicated key keeps its last value. A glob ``*``
  matches as little as it can, except a trailing one, which takes the rest
  of the value; a pattern may match anywhere.

Not supported
-------------
Commands ``dedup``, ``unnest``, ``expand``, ``pattern``, ``diff``,
``anomaly``, ``unmask``, ``filterIndex``, ``lookup``, ``join``, ``SOURCE``,
``limit any``; stats functions ``pct``/``percentile``, ``stddev``,
``count_distinct``, ``earliest``, ``latest``, ``sortsFirst``/``sortsLast``,
time-series functions and ``offset``; expressions combining aggregates
(``sum(a)/count()``); datetime, IP, JSON and most string functions.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import math
import operator
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from operator import itemgetter
from typing import Any

import orjson

from pipelines.errors import QueryError, did_you_mean

SYSTEM_COLUMNS = ("@timestamp", "@logStream", "@message", "@ingestionTime")
TIME_FIELDS = frozenset({"@timestamp", "@ingestionTime"})
DEFAULT_LIMIT = 10_000
MAX_LIMIT = 100_000

Getter = Callable[[Any], Any]

# ---------------------------------------------------------------------------
# Tokens


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # name, str, regex, num, dur, op, end
    value: Any
    pos: int
    end: int


_NAME = re.compile(r"[@A-Za-z_$][\w.@$]*")
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_UNIT = re.compile(r"[A-Za-z]+")
_OPS = (
    "!=",
    "<=",
    ">=",
    "=~",
    "=",
    "<",
    ">",
    "(",
    ")",
    "[",
    "]",
    ",",
    "+",
    "-",
    "*",
    "/",
    "%",
    "^",
)
_REGEX_AFTER = frozenset({"like", "parse", "filter", "and", "or", "not"})
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.tokens: list[Token] = []

    def error(self, message: str, pos: int) -> QueryError:
        return QueryError(message, self.text, pos)

    def run(self) -> list[Token]:
        text = self.text
        while self.i < len(text):
            c = text[self.i]
            if c.isspace():
                self.i += 1
            elif c == "#":
                end = text.find("\n", self.i)
                self.i = len(text) if end < 0 else end
            elif c == "|":
                self.add("pipe", "|", self.i + 1)
            elif c in "\"'":
                self.quoted(c)
            elif c == "`":
                end = text.find("`", self.i + 1)
                if end < 0:
                    raise self.error("unterminated `name`", self.i)
                self.add("name", text[self.i + 1 : end], end + 1)
            elif c == "/" and not self.after_value():
                self.regex()
            elif c.isdigit():
                self.number()
            elif m := _NAME.match(text, self.i):
                self.add("name", m.group(), m.end())
            else:
                self.operator()
        self.tokens.append(Token("end", None, len(text), len(text)))
        return self.tokens

    def add(self, kind: str, value: Any, end: int) -> None:
        self.tokens.append(Token(kind, value, self.i, end))
        self.i = end

    def after_value(self) -> bool:
        """A slash after an operand divides; anywhere else it opens a regex."""
        if not self.tokens:
            return False
        last = self.tokens[-1]
        if last.kind == "name" and last.value.lower() in _REGEX_AFTER:
            return False
        before = self.tokens[-2] if len(self.tokens) > 1 else None
        if before is not None and before.kind == "name" and before.value.lower() == "parse":
            return False  # parse @message /regex/
        return last.kind in ("name", "num", "str", "dur") or last.value in (")", "]")

    def quoted(self, quote: str) -> None:
        out: list[str] = []
        j = self.i + 1
        while j < len(self.text):
            c = self.text[j]
            if c == quote:
                self.add("str", "".join(out), j + 1)
                return
            if c == "\\" and j + 1 < len(self.text):
                nxt = self.text[j + 1]
                # Unknown escapes stay as written so regex-like text survives.
                out.append(nxt if nxt in "\"'" else _ESCAPES.get(nxt, c + nxt))
                j += 2
                continue
            out.append(c)
            j += 1
        raise self.error("unterminated string", self.i)

    def regex(self) -> None:
        j = self.i + 1
        out: list[str] = []
        while j < len(self.text):
            c = self.text[j]
            if c == "/":
                self.add("regex", "".join(out), j + 1)
                return
            if c == "\\" and j + 1 < len(self.text):
                nxt = self.text[j + 1]
                out.append("/" if nxt == "/" else c + nxt)
                j += 2
                continue
            out.append(c)
            j += 1
        raise self.error("unterminated regular expression", self.i)

    def number(self) -> None:
        m = _NUMBER.match(self.text, self.i)
        assert m is not None
        unit = _UNIT.match(self.text, m.end())
        if unit and m.group().isdigit():
            self.add("dur", (int(m.group()), unit.group()), unit.end())
            return
        literal = m.group()
        value: int | float = int(literal) if literal.isdigit() else float(literal)
        self.add("num", value, m.end())

    def operator(self) -> None:
        for op in _OPS:
            if self.text.startswith(op, self.i):
                self.add("op", op, self.i + len(op))
                return
        raise self.error(f"unexpected character {self.text[self.i]!r}", self.i)


# ---------------------------------------------------------------------------
# Expression tree


@dataclass(slots=True)
class Node:
    pos: int
    end: int


@dataclass(slots=True)
class Field(Node):
    name: str


@dataclass(slots=True)
class Lit(Node):
    value: Any


@dataclass(slots=True)
class Call(Node):
    name: str
    args: list[Node]
    star: bool = False  # count(*)
    period: _Period | None = None  # bin(5m)


@dataclass(slots=True)
class Op(Node):
    op: str  # arithmetic, comparison, and/or, not, neg
    args: list[Node]


@dataclass(slots=True)
class Match(Node):
    arg: Node
    pattern: re.Pattern[str] | str  # a str is a substring
    negate: bool


@dataclass(slots=True)
class InList(Node):
    arg: Node
    values: list[Any]
    negate: bool


@dataclass(slots=True)
class Item:
    expr: Node
    name: str  # alias, or the expression as written


@dataclass(slots=True)
class Command:
    kind: str
    pos: int
    items: list[Item]  # fields/display items, stats aggregates
    by: list[Item]
    expr: Node | None = None  # filter condition, parse source
    keys: list[tuple[Node, bool]] | None = None  # sort keys with "descending"
    limit: int = 0
    pattern: re.Pattern[str] | None = None  # parse
    names: list[str] | None = None  # parse


def _walk(node: Node) -> Iterator[Node]:
    yield node
    children: list[Node] = []
    if isinstance(node, Call | Op):
        children = node.args
    elif isinstance(node, Match | InList):
        children = [node.arg]
    for child in children:
        yield from _walk(child)


def _field_refs(node: Node) -> Iterator[str]:
    for sub in _walk(node):
        if isinstance(sub, Field):
            yield sub.name
        elif isinstance(sub, Call) and sub.name == "bin":
            yield "@timestamp"


# ---------------------------------------------------------------------------
# bin() periods

_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
_UNITS = {
    "ms": "ms", "msec": "ms", "millisecond": "ms",
    "s": "s", "sec": "s", "second": "s",
    "m": "m", "min": "m", "minute": "m",
    "h": "h", "hr": "h", "hour": "h",
    "d": "d", "day": "d",
    "w": "w", "week": "w",
    "mo": "mo", "mon": "mo", "month": "mo",
    "q": "q", "qtr": "q", "quarter": "q",
    "y": "y", "yr": "y", "year": "y",
}  # fmt: skip
_MONDAY = 4 * 86_400_000  # 1970-01-05, the first Monday after the epoch
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _unit(word: str) -> str | None:
    word = word.lower()
    if word in _UNITS:
        return _UNITS[word]
    # AWS: "adding s to pluralize is supported" for units longer than one character.
    if word.endswith("s") and len(word) > 2 and word[:-1] in _UNITS:
        return _UNITS[word[:-1]]
    return None


@dataclass(frozen=True, slots=True)
class _Period:
    """A bin width: fixed milliseconds, or a number of calendar months."""

    ms: int
    months: int

    def floor(self, t: int) -> int:
        if self.months:
            d = _EPOCH + dt.timedelta(milliseconds=t)
            index = (d.year - 1970) * 12 + d.month - 1
            return _month_start(index - index % self.months)
        if self.ms % _MS["w"] == 0:
            return t - (t - _MONDAY) % self.ms
        return t - t % self.ms

    def next(self, start: int) -> int:
        if self.months:
            d = _EPOCH + dt.timedelta(milliseconds=start)
            return _month_start((d.year - 1970) * 12 + d.month - 1 + self.months)
        return start + self.ms


def _month_start(index: int) -> int:
    year, month = divmod(index, 12)
    start = dt.datetime(1970 + year, month + 1, 1, tzinfo=dt.UTC)
    return (start - _EPOCH) // dt.timedelta(milliseconds=1)


def _period(count: int, unit: str) -> _Period:
    months = {"mo": 1, "q": 3, "y": 12}.get(unit)
    if months:
        return _Period(0, count * months)
    return _Period(count * _MS[unit], 0)


# ---------------------------------------------------------------------------
# Parser

_COMMANDS = ("fields", "display", "filter", "stats", "sort", "limit", "parse")
_UNSUPPORTED_COMMANDS = {
    "dedup", "unnest", "expand", "pattern", "diff", "anomaly", "unmask",
    "filterindex", "lookup", "join", "source",
}  # fmt: skip
_AGGREGATES = ("count", "sum", "avg", "min", "max")
_UNSUPPORTED_AGGREGATES = {
    "pct", "percentile", "stddev", "count_distinct", "earliest", "latest",
    "sortsfirst", "sortslast", "rate", "count_over_time", "sum_over_time", "histogram",
}  # fmt: skip
_COMPARISONS = ("=", "!=", "<", "<=", ">", ">=")


class _Parser:
    """Recursive descent over one command's tokens."""

    def __init__(self, text: str, tokens: list[Token]) -> None:
        self.text = text
        self.tokens = tokens
        self.i = 0

    # -- token helpers

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind != "end":
            self.i += 1
        return tok

    def error(self, message: str, pos: int | None = None) -> QueryError:
        return QueryError(message, self.text, self.tok.pos if pos is None else pos)

    def is_op(self, op: str) -> bool:
        return self.tok.kind == "op" and self.tok.value == op

    def is_word(self, *words: str) -> bool:
        return self.tok.kind == "name" and self.tok.value.lower() in words

    def expect_op(self, op: str) -> Token:
        if not self.is_op(op):
            raise self.error(f"expected {op!r}, found {self.describe()}")
        return self.take()

    def describe(self) -> str:
        tok = self.tok
        if tok.kind == "end":
            return "the end of the command"
        return repr(self.text[tok.pos : tok.end])

    def expect_end(self) -> None:
        if self.tok.kind != "end":
            if self.is_op(")"):
                raise self.error("unbalanced ')': no '(' to close")
            raise self.error(f"unexpected {self.describe()}")

    def source(self, start: int) -> str:
        """The text from ``start`` to the last token taken, spaces collapsed."""
        return " ".join(self.text[start : self.tokens[self.i - 1].end].split())

    # -- commands

    def command(self) -> Command:
        tok = self.take()
        if tok.kind != "name":
            raise self.error("expected a command", tok.pos)
        word = tok.value.lower()
        word = "filter" if word == "where" else word  # AWS: where is an alias of filter
        if word not in _COMMANDS:
            if word in _UNSUPPORTED_COMMANDS:
                raise self.error(f"command {tok.value!r} is not supported", tok.pos)
            hint = did_you_mean(word, _COMMANDS)
            raise self.error(f"unknown command {tok.value!r}{hint}", tok.pos)
        cmd = Command(word, tok.pos, [], [])
        getattr(self, f"cmd_{word}")(cmd)
        self.expect_end()
        return cmd

    def cmd_fields(self, cmd: Command) -> None:
        cmd.items = self.items(self.expression)

    cmd_display = cmd_fields

    def cmd_filter(self, cmd: Command) -> None:
        if self.tok.kind == "end":
            raise self.error("filter needs a condition")
        cmd.expr = self.expression()

    def cmd_stats(self, cmd: Command) -> None:
        cmd.items = self.items(self.aggregate)
        if self.is_word("by"):
            self.take()
            cmd.by = self.items(self.expression)

    def cmd_sort(self, cmd: Command) -> None:
        cmd.keys = []
        while True:
            expr = self.expression()
            descending = True
            if self.is_word("asc", "desc"):
                descending = self.take().value.lower() == "desc"
            cmd.keys.append((expr, descending))
            if not self.is_op(","):
                return
            self.take()

    def cmd_limit(self, cmd: Command) -> None:
        tok = self.take()
        if tok.kind != "num" or not isinstance(tok.value, int) or tok.value < 1:
            raise self.error("limit needs a positive whole number", tok.pos)
        if tok.value > MAX_LIMIT:
            raise self.error(f"limit can be at most {MAX_LIMIT}", tok.pos)
        cmd.limit = tok.value

    def cmd_parse(self, cmd: Command) -> None:
        start = self.tok.pos
        cmd.expr = Field(start, start, "@message")
        if self.tok.kind not in ("str", "regex"):
            cmd.expr = self.primary()
        tok = self.take()
        if tok.kind == "str":
            cmd.pattern, cmd.names = self.glob(tok)
        elif tok.kind == "regex":
            cmd.pattern = self.compile_regex(tok)
            cmd.names = list(cmd.pattern.groupindex)
            if not cmd.names:
                raise self.error("parse regex needs named groups like (?<name>...)", tok.pos)
        else:
            raise self.error('parse needs a "glob * pattern" or a /regex/', tok.pos)

    def glob(self, tok: Token) -> tuple[re.Pattern[str], list[str]]:
        parts = tok.value.split("*")
        stars = len(parts) - 1
        if stars == 0:
            raise self.error("parse pattern needs at least one '*'", tok.pos)
        if not self.is_word("as"):
            raise self.error(f"expected 'as' and {stars} field name(s) after the pattern")
        self.take()
        names_at = self.tok.pos
        names = [item.name for item in self.items(self.field_name, aliases=False)]
        if len(names) != stars:
            raise self.error(f"the pattern has {stars} '*' but {len(names)} name(s)", names_at)
        groups = ["(.*?)"] * stars
        if parts[-1] == "":
            groups[-1] = "(.*)"  # a trailing star takes the rest of the value
        pieces = zip(groups, parts[1:], strict=True)
        body = re.escape(parts[0]) + "".join(g + re.escape(p) for g, p in pieces)
        return re.compile(body, re.DOTALL), names

    def compile_regex(self, tok: Token) -> re.Pattern[str]:
        # Named groups are written (?<name>...) in AWS, (?P<name>...) in Python.
        source = re.sub(r"\(\?<(?![=!])", "(?P<", tok.value)
        try:
            return re.compile(source)
        except re.error as exc:
            raise self.error(f"invalid regular expression: {exc.msg}", tok.pos) from None

    def items(self, parse_one: Callable[[], Node], aliases: bool = True) -> list[Item]:
        items: list[Item] = []
        while True:
            start = self.tok.pos
            if self.tok.kind == "end" or self.is_word("by"):
                raise self.error(f"expected a field, found {self.describe()}")
            expr = parse_one()
            name = expr.name if isinstance(expr, Field) else self.source(start)
            if aliases and self.is_word("as"):
                self.take()
                name = self.field_name().name
            items.append(Item(expr, name))
            if not self.is_op(","):
                return items
            self.take()

    def field_name(self) -> Field:
        tok = self.take()
        if tok.kind != "name":
            raise self.error("expected a field name", tok.pos)
        return Field(tok.pos, tok.end, tok.value)

    def aggregate(self) -> Node:
        tok = self.tok
        if tok.kind == "name" and tok.value.lower() in _UNSUPPORTED_AGGREGATES:
            raise self.error(f"stats function {tok.value!r} is not supported")
        node = self.expression()
        if not (isinstance(node, Call) and node.name in _AGGREGATES):
            raise self.error(
                "stats needs an aggregate function: count, sum, avg, min or max", tok.pos
            )
        return node

    # -- expressions, loosest binding first

    def expression(self) -> Node:
        node = self.conjunction()
        while self.is_word("or"):
            self.take()
            node = Op(node.pos, 0, "or", [node, self.conjunction()])
            node.end = node.args[1].end
        return node

    def conjunction(self) -> Node:
        node = self.negation()
        while self.is_word("and"):
            self.take()
            right = self.negation()
            node = Op(node.pos, right.end, "and", [node, right])
        return node

    def negation(self) -> Node:
        if self.is_word("not"):
            tok = self.take()
            arg = self.negation()
            return Op(tok.pos, arg.end, "not", [arg])
        return self.comparison()

    def comparison(self) -> Node:
        left = self.sum()
        negate = False
        if self.is_word("not") and self.tokens[self.i + 1].value in ("like", "in"):
            self.take()
            negate = True
        if self.tok.kind == "op" and self.tok.value in _COMPARISONS and not negate:
            op = self.take().value
            right = self.sum()
            return Op(left.pos, right.end, op, [left, right])
        if self.is_op("=~") and not negate:
            self.take()
            return self.match(left, False, regex_only=True)
        if self.is_word("like"):
            self.take()
            return self.match(left, negate, regex_only=False)
        if self.is_word("in"):
            self.take()
            return self.in_list(left, negate)
        return left

    def match(self, left: Node, negate: bool, regex_only: bool) -> Node:
        tok = self.take()
        if tok.kind == "regex":
            return Match(left.pos, tok.end, left, self.compile_regex(tok), negate)
        if tok.kind == "str" and not regex_only:
            return Match(left.pos, tok.end, left, tok.value, negate)
        wanted = "a /regex/" if regex_only else 'a /regex/ or a "string"'
        raise self.error(f"expected {wanted}", tok.pos)

    def in_list(self, left: Node, negate: bool) -> Node:
        self.expect_op("[")
        values: list[Any] = []
        while not self.is_op("]"):
            node = self.unary()
            if not isinstance(node, Lit):
                raise self.error("in [...] takes only numbers and strings", node.pos)
            values.append(node.value)
            if not self.is_op(","):
                break
            self.take()
        end = self.expect_op("]").end
        return InList(left.pos, end, left, values, negate)

    def sum(self) -> Node:
        node = self.product()
        while self.tok.kind == "op" and self.tok.value in ("+", "-"):
            op = self.take().value
            right = self.product()
            node = Op(node.pos, right.end, op, [node, right])
        return node

    def product(self) -> Node:
        node = self.power()
        while self.tok.kind == "op" and self.tok.value in ("*", "/", "%"):
            op = self.take().value
            right = self.power()
            node = Op(node.pos, right.end, op, [node, right])
        return node

    def power(self) -> Node:
        node = self.unary()
        if self.is_op("^"):
            self.take()
            right = self.power()
            node = Op(node.pos, right.end, "^", [node, right])
        return node

    def unary(self) -> Node:
        if self.is_op("-"):
            tok = self.take()
            arg = self.unary()
            if isinstance(arg, Lit) and isinstance(arg.value, int | float):
                return Lit(tok.pos, arg.end, -arg.value)
            return Op(tok.pos, arg.end, "neg", [arg])
        return self.primary()

    def primary(self) -> Node:
        tok = self.tok
        if tok.kind in ("num", "str"):
            self.take()
            return Lit(tok.pos, tok.end, tok.value)
        if self.is_op("("):
            self.take()
            node = self.expression()
            if not self.is_op(")"):
                raise self.error("unbalanced '(': no matching ')'", tok.pos)
            self.take()
            return node
        if tok.kind == "name":
            self.take()
            if self.is_op("("):
                return self.call(tok)
            return Field(tok.pos, tok.end, tok.value)
        if tok.kind == "regex":
            raise self.error("a /regex/ needs like or =~ before it")
        if self.is_op(")"):
            raise self.error("unbalanced ')': no '(' to close")
        raise self.error(f"expected a field or a value, found {self.describe()}")

    def call(self, name_tok: Token) -> Node:
        name = name_tok.value.lower()
        if name not in _FUNCTIONS and name not in _AGGREGATES and name != "bin":
            choices = [*_FUNCTIONS, *_AGGREGATES, "bin"]
            hint = did_you_mean(name, choices)
            raise self.error(f"unknown function {name_tok.value!r}{hint}", name_tok.pos)
        open_tok = self.take()
        node = Call(name_tok.pos, 0, name, [])
        if self.tok.kind == "end":
            raise self.error("unbalanced '(': no matching ')'", open_tok.pos)
        if name == "bin":
            node.period = self.period()
        elif name == "count" and self.is_op("*"):
            self.take()
            node.star = True
        elif not self.is_op(")"):
            node.args.append(self.expression())
            while self.is_op(","):
                self.take()
                node.args.append(self.expression())
        if not self.is_op(")"):
            if self.tok.kind == "end":
                raise self.error("unbalanced '(': no matching ')'", open_tok.pos)
            raise self.error(f"expected ')', found {self.describe()}")
        node.end = self.take().end
        self.check_arity(node, name_tok)
        return node

    def period(self) -> _Period:
        tok = self.take()
        if tok.kind == "num" and isinstance(tok.value, int):
            raise self.error("bin() needs a unit, like bin(5m)", tok.end)
        if tok.kind != "dur":
            raise self.error("bin() needs a period like 5m or 1h", tok.pos)
        count, word = tok.value
        unit = _unit(word)
        if unit is None:
            units = ", ".join(sorted(set(_UNITS.values())))
            raise self.error(f"unknown time unit {word!r} in bin() (use {units})", tok.pos)
        if count < 1:
            raise self.error("bin() needs a period greater than zero", tok.pos)
        return _period(count, unit)

    def check_arity(self, node: Call, name_tok: Token) -> None:
        if node.name == "bin" or node.star:
            return
        if node.name in _AGGREGATES:
            low, high = (0, 1) if node.name == "count" else (1, 1)
        else:
            low, high = _FUNCTIONS[node.name][0]
        if not low <= len(node.args) <= high:
            wanted = str(low) if low == high else f"{low} to {high}"
            raise self.error(
                f"{node.name}() takes {wanted} argument(s), got {len(node.args)}", name_tok.pos
            )


def _split_commands(text: str, tokens: list[Token]) -> list[list[Token]]:
    commands: list[list[Token]] = []
    current: list[Token] = []
    for tok in tokens:
        if tok.kind in ("pipe", "end"):
            if not current:
                if tok.kind == "end" and not commands:
                    raise QueryError("the query is empty", text, tok.pos)
                raise QueryError("expected a command", text, tok.pos)
            current.append(Token("end", None, tok.pos, tok.pos))
            commands.append(current)
            current = []
        else:
            current.append(tok)
    return commands


# ---------------------------------------------------------------------------
# Values


def _num(v: Any) -> int | float | None:
    """A number, or a string that reads as one; else None."""
    t = type(v)
    if t is int or t is float:
        return v  # type: ignore[no-any-return]
    if t is str:
        try:
            return int(v)
        except ValueError:
            pass
        try:
            f = float(v)
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


def _text(v: Any) -> str:
    return v if type(v) is str else str(v)


def _compare(op: str, a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    if type(a) is not str or type(b) is not str:
        a, b = _num(a), _num(b)
        if a is None or b is None:
            return op == "!="  # a number and a non-numeric string differ
    if op == "=":
        return bool(a == b)
    if op == "!=":
        return bool(a != b)
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def _arith(op: str, a: Any, b: Any) -> Any:
    x, y = _num(a), _num(b)
    if x is None or y is None:
        return None
    try:
        if op == "+":
            return x + y
        if op == "-":
            return x - y
        if op == "*":
            return x * y
        if op == "/":
            return x / y
        if op == "%":
            return x % y
        return x**y
    except (ZeroDivisionError, OverflowError):
        return None


def _is_text(v: Any) -> bool:
    """A string that does not read as a number."""
    return isinstance(v, str) and _num(v) is None


def _truthy(v: Any) -> bool:
    return v is not None and v is not False and v != "" and v != 0


def _fn_isempty(v: Any) -> bool:
    return v is None or v == ""


def _fn_isblank(v: Any) -> bool:
    return v is None or _text(v).strip() == ""


def _unary_num(f: Callable[[float], Any]) -> Callable[[Any], Any]:
    def apply(v: Any) -> Any:
        n = _num(v)
        return None if n is None else f(n)

    return apply


def _unary_text(f: Callable[[str], Any]) -> Callable[[Any], Any]:
    def apply(v: Any) -> Any:
        return None if v is None else f(_text(v))

    return apply


def _fn_concat(*args: Any) -> str:
    return "".join(_text(a) for a in args if a is not None)


def _fn_coalesce(*args: Any) -> Any:
    return next((a for a in args if a is not None), None)


# name -> ((min args, max args), function of the evaluated arguments)
_FUNCTIONS: dict[str, tuple[tuple[int, int], Callable[..., Any]]] = {
    "ispresent": ((1, 1), lambda v: v is not None),
    "isempty": ((1, 1), _fn_isempty),
    "isblank": ((1, 1), _fn_isblank),
    "strlen": ((1, 1), _unary_text(len)),
    "tolower": ((1, 1), _unary_text(str.lower)),
    "toupper": ((1, 1), _unary_text(str.upper)),
    "trim": ((1, 1), _unary_text(str.strip)),
    "abs": ((1, 1), _unary_num(abs)),
    "ceil": ((1, 1), _unary_num(math.ceil)),
    "floor": ((1, 1), _unary_num(math.floor)),
    "concat": ((1, 100), _fn_concat),
    "coalesce": ((1, 100), _fn_coalesce),
}


def format_time(ms: int) -> str:
    """Milliseconds since the epoch as Logs Insights shows them (UTC)."""
    d = _EPOCH + dt.timedelta(milliseconds=ms)
    return f"{d:%Y-%m-%d %H:%M:%S}.{d.microsecond // 1000:03d}"


def _display(value: Any, is_time: bool) -> Any:
    if is_time and type(value) is int:
        return format_time(value)
    if type(value) is bool:
        return "true" if value else "false"
    return value


# ---------------------------------------------------------------------------
# Natural sort, as AWS documents it

_CHUNKS = re.compile(r"\d+|\D+")
_NUMERIC = re.compile(r"-?\d+(?:\.\d+)?")


def _natural_key(v: Any) -> tuple[int, Any]:
    """Non-numbers first, ordered chunk by chunk; then numbers by value.

    A digit run is keyed ("0", length, value): against a non-digit chunk,
    "0" orders as any digit would (no other character falls between digits).
    """
    if type(v) in (int, float):
        return (1, v)
    s = _text(v)
    if _NUMERIC.fullmatch(s):
        return (1, float(s))
    chunks = [("0", len(c), int(c)) if c[0].isdigit() else (c, 0, 0) for c in _CHUNKS.findall(s)]
    return (0, chunks)


# ---------------------------------------------------------------------------
# Compilation


class _Scope:
    """How compiled expressions read fields: tuple indexes or dict keys."""

    def __init__(self, text: str, columns: Sequence[str] | None, log: list[str | None]) -> None:
        self.text = text
        self.index = {name: i for i, name in enumerate(columns)} if columns is not None else None
        self.log = log

    def getter(self, name: str) -> Getter:
        if name == "@log":
            cell = self.log
            return lambda _ev: cell[0]
        if self.index is None:
            return lambda ev: ev[name]
        return itemgetter(self.index[name])


def _compile(node: Node, scope: _Scope) -> Getter:
    if isinstance(node, Field):
        return scope.getter(node.name)
    if isinstance(node, Lit):
        value = node.value
        return lambda _ev: value
    if isinstance(node, Match):
        return _compile_match(node, scope)
    if isinstance(node, InList):
        return _compile_in(node, scope)
    if isinstance(node, Call):
        return _compile_call(node, scope)
    assert isinstance(node, Op)
    return _compile_op(node, scope)


def _compile_op(node: Op, scope: _Scope) -> Getter:
    args = [_compile(a, scope) for a in node.args]
    op = node.op
    if op == "not":
        (x,) = args
        return lambda ev: not _truthy(x(ev))
    if op == "neg":
        (x,) = args
        return lambda ev: _arith("-", 0, x(ev))
    a, b = args
    if op == "and":
        return lambda ev: _truthy(a(ev)) and _truthy(b(ev))
    if op == "or":
        return lambda ev: _truthy(a(ev)) or _truthy(b(ev))
    right = node.args[1]
    if op in ("=", "!=") and isinstance(right, Lit) and _is_text(right.value):
        # A non-numeric string equals only the same string: skip coercion.
        lit = right.value
        if op == "=":
            return lambda ev: a(ev) == lit
        return lambda ev: (v := a(ev)) is not None and v != lit
    if op in _COMPARISONS:
        return lambda ev: _compare(op, a(ev), b(ev))
    return lambda ev: _arith(op, a(ev), b(ev))


def _compile_match(node: Match, scope: _Scope) -> Getter:
    get = _compile(node.arg, scope)
    negate = node.negate
    pattern = node.pattern
    if isinstance(pattern, str):
        return lambda ev: ((v := get(ev)) is not None and pattern in _text(v)) != negate
    search = pattern.search
    return lambda ev: ((v := get(ev)) is not None and search(_text(v)) is not None) != negate


def _compile_in(node: InList, scope: _Scope) -> Getter:
    get = _compile(node.arg, scope)
    values = node.values
    negate = node.negate
    return lambda ev: any(_compare("=", get(ev), x) for x in values) != negate


def _compile_call(node: Call, scope: _Scope) -> Getter:
    if node.name == "bin":
        assert node.period is not None
        ts = scope.getter("@timestamp")
        floor = node.period.floor
        if not node.period.months and node.period.ms % _MS["w"]:
            width = node.period.ms
            return lambda ev: (t := ts(ev)) - t % width
        return lambda ev: floor(ts(ev))
    if node.name in _AGGREGATES:
        raise QueryError(f"{node.name}() can only be used in stats", scope.text, node.pos)
    fn = _FUNCTIONS[node.name][1]
    args = [_compile(a, scope) for a in node.args]
    if len(args) == 1:
        (x,) = args
        return lambda ev: fn(x(ev))
    return lambda ev: fn(*(a(ev) for a in args))


def _is_time(node: Node, time_names: set[str]) -> bool:
    if isinstance(node, Field):
        return node.name in time_names
    if isinstance(node, Call):
        if node.name == "bin":
            return True
        return (
            node.name in ("min", "max") and bool(node.args) and _is_time(node.args[0], time_names)
        )
    return False


def _has_bin(node: Node) -> bool:
    return any(isinstance(n, Call) and n.name == "bin" for n in _walk(node))


# ---------------------------------------------------------------------------
# Stats


class _Aggregate:
    """One stats column: how to start, update and finish a group's state."""

    def __init__(self, call: Call, scope: _Scope) -> None:
        self.kind = call.name
        self.counts_all = call.name == "count" and not call.args
        self.arg = _compile(call.args[0], scope) if call.args else None

    def updater(self) -> Callable[[Any, Any], Any]:
        arg = self.arg
        if self.counts_all:
            return lambda s, _ev: s + 1
        assert arg is not None
        if self.kind == "count":
            return lambda s, ev: s + (arg(ev) is not None)
        if self.kind == "sum":
            return lambda s, ev: s if (n := _num(arg(ev))) is None else (n if s is None else s + n)
        if self.kind == "avg":
            return lambda s, ev: s if (n := _num(arg(ev))) is None else (s[0] + n, s[1] + 1)
        if self.kind == "min":
            return lambda s, ev: (
                s if (n := _num(arg(ev))) is None or (s is not None and s <= n) else n
            )
        return lambda s, ev: s if (n := _num(arg(ev))) is None or (s is not None and s >= n) else n

    def start(self) -> Any:
        if self.kind == "count":
            return 0
        return (0, 0) if self.kind == "avg" else None

    def finish(self, state: Any) -> Any:
        if self.kind == "avg":
            return state[0] / state[1] if state[1] else None
        return state


class _Row(dict[str, Any]):
    """A stats output row: a name it lacks reads as missing."""

    def __missing__(self, key: str) -> Any:
        return None


class _Stats:
    def __init__(self, cmd: Command, scope: _Scope, fast_bin: int | None) -> None:
        self.names = [item.name for item in cmd.by] + [item.name for item in cmd.items]
        self.keys = [_compile(item.expr, scope) for item in cmd.by]
        calls = [item.expr for item in cmd.items if isinstance(item.expr, Call)]
        self.aggs = [_Aggregate(call, scope) for call in calls]
        self.counts_only = all(a.counts_all for a in self.aggs)
        self.bin_first = [i for i, item in enumerate(cmd.by) if _has_bin(item.expr)]
        # Column index of @timestamp when the only key is bin() over raw tuples.
        self.fast_bin = fast_bin
        first = cmd.by[0].expr if cmd.by else None
        self.period = first.period if isinstance(first, Call) else None

    def rows(self, events: Iterable[Any]) -> list[_Row]:
        return self.run(events)[0]

    def run(self, events: Iterable[Any]) -> tuple[list[_Row], int]:
        """The output rows, and how many events went in."""
        key_names = self.names[: len(self.keys)]
        if self.counts_only:
            groups = self.count_groups(events)
            matched = sum(groups.values())
            count_names = self.names[len(self.keys) :]
            rows = [
                _Row(zip(key_names, key, strict=True), **dict.fromkeys(count_names, n))
                for key, n in groups.items()
            ]
        else:
            states, matched = self.aggregate(events)
            rows = [self.row(key, state) for key, state in states.items()]
        return self.sorted(rows), matched

    def sorted(self, rows: list[_Row]) -> list[_Row]:
        """Newest bin first when grouped by bin() (a stable sort: within a
        bin, groups stay in the order they first appeared)."""
        if self.bin_first:
            name = self.names[self.bin_first[0]]
            rows.sort(key=lambda r: -1 if r[name] is None else r[name], reverse=True)
        return rows

    def ordered(self, groups: list[list[Any]]) -> list[_Row]:
        """Rows from values computed elsewhere (SQL), in first-appearance order."""
        return self.sorted([_Row(zip(self.names, values, strict=True)) for values in groups])

    def count_groups(self, events: Iterable[Any]) -> dict[tuple[Any, ...], int]:
        if self.fast_bin is not None and isinstance(events, list):
            timestamps = list(map(itemgetter(self.fast_bin), events))
            if all(map(operator.le, timestamps, islice(timestamps, 1, None))):
                return self.count_sorted(timestamps)
        if not self.keys:
            return {(): sum(1 for _ in events)}
        if len(self.keys) == 1:
            key = self.keys[0]
            return {(k,): n for k, n in Counter(map(key, events)).items()}
        keys = self.keys
        return dict(Counter(tuple(k(ev) for k in keys) for ev in events))

    def count_sorted(self, timestamps: list[int]) -> dict[tuple[Any, ...], int]:
        """Count bins of ascending timestamps by bisecting bin boundaries."""
        assert self.period is not None
        counts: dict[tuple[Any, ...], int] = {}
        floor, following = self.period.floor, self.period.next
        i, n = 0, len(timestamps)
        while i < n:
            start = floor(timestamps[i])
            j = bisect.bisect_left(timestamps, following(start), i)
            counts[(start,)] = j - i
            i = j
        return counts

    def aggregate(self, events: Iterable[Any]) -> tuple[dict[tuple[Any, ...], list[Any]], int]:
        keys, aggs = self.keys, self.aggs
        updaters = list(enumerate(a.updater() for a in aggs))
        groups: dict[tuple[Any, ...], list[Any]] = {}
        matched = 0
        for ev in events:
            matched += 1
            key = tuple(k(ev) for k in keys)
            state = groups.get(key)
            if state is None:
                state = groups[key] = [a.start() for a in aggs]
            for j, update in updaters:
                state[j] = update(state[j], ev)
        if not keys and not groups:
            groups[()] = [a.start() for a in aggs]  # stats without by always has a row
        return groups, matched

    def row(self, key: tuple[Any, ...], state: list[Any]) -> _Row:
        # Missing values stay as None: display leaves them out.
        values = [*key, *(a.finish(s) for a, s in zip(self.aggs, state, strict=True))]
        return _Row(zip(self.names, values, strict=True))


# ---------------------------------------------------------------------------
# Events with discovered JSON fields


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}{k}.", out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}{i}.", out)
    elif value is not None:
        key = prefix[:-1]
        if type(value) is bool:
            value = "true" if value else "false"
        out.setdefault(key, value)


def discover(message: Any) -> dict[str, Any]:
    """The fields Logs Insights discovers in a JSON object message."""
    if type(message) is not str or not message.lstrip().startswith("{"):
        return {}
    try:
        obj = orjson.loads(message)
    except orjson.JSONDecodeError:
        obj = _strict_json(message)
    if not isinstance(obj, dict):
        return {}
    out: dict[str, Any] = {}
    for k, v in obj.items():
        # AWS shows a discovered field whose name starts with @ with one more @.
        _flatten(v, f"@{k}." if k.startswith("@") else f"{k}.", out)
    return out


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _strict_json(message: str) -> Any:
    """What orjson refuses but RFC 8259 allows (a number past a double's
    range, read as infinity), read by the standard library: a valid JSON
    line keeps its fields. NaN and Infinity stay refused, and so do lone
    surrogates (no UTF-8 output could hold them)."""
    if _SURROGATE_ESCAPE.search(message):
        return {}
    try:
        return json.loads(message, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return {}


class _Event(dict[str, Any]):
    """An event whose unknown fields read as missing."""

    def __missing__(self, key: str) -> Any:
        return None


class _JsonEvent(dict[str, Any]):
    """An event that parses its message as JSON on the first unknown field."""

    _discovered = False

    def __missing__(self, key: str) -> Any:
        if self._discovered:
            return None
        self._discovered = True
        for k, v in discover(self.get("@message")).items():
            self.setdefault(k, v)
        return self.get(key)


# ---------------------------------------------------------------------------
# Query


@dataclass
class QueryResult:
    fields: list[str]
    rows: list[dict[str, Any]]
    records_matched: int
    records_scanned: int


Stage = Callable[[Iterable[Any]], Iterable[Any]]


@dataclass(frozen=True, slots=True)
class Head:
    """The events a query keeps when all it does before its first ``limit`` is
    order them by time: the first ``limit`` in (@timestamp, then ingestion)
    order, each ascending or descending. The store can find those in SQL and
    ``run`` them alone (with ``total``): the result is the same, without
    reading every event of the range."""

    limit: int
    newest_first: bool  # @timestamp descending
    ties_newest_first: bool  # among equal timestamps, the last ingested first


def _filter_stage(pred: Getter) -> Stage:
    return lambda events: filter(pred, events)


def _limit_stage(n: int) -> Stage:
    return lambda events: islice(events, n)


def _sort_stage(keys: list[tuple[Getter, bool]]) -> Stage:
    def run(events: Iterable[Any]) -> list[Any]:
        out = list(events)
        # Stable sorts from the last key to the first; missing values go last.
        for get, descending in reversed(keys):
            out.sort(key=lambda ev: _sort_key(get(ev), descending), reverse=descending)
        return out

    return run


def _sort_key(v: Any, descending: bool) -> tuple[bool, Any]:
    if v is None:
        return (not descending, (0, []))
    return (descending, _natural_key(v))


def _map_stage(update: Callable[[Any], None]) -> Stage:
    def apply(ev: Any) -> Any:
        update(ev)
        return ev

    return lambda events: map(apply, events)


def _define(name: str, get: Getter) -> Callable[[Any], None]:
    def update(ev: Any) -> None:
        ev[name] = get(ev)

    return update


def _parse_update(get: Getter, pattern: re.Pattern[str], names: list[str]) -> Callable[[Any], None]:
    search = pattern.search
    pairs = list(enumerate(names, 1))

    def update(ev: Any) -> None:
        v = get(ev)
        m = None if v is None else search(_text(v))
        if m is not None:
            for i, name in pairs:
                ev[name] = m.group(i)

    return update


class Query:
    """A compiled query; see the module docstring for what it supports."""

    text: str
    columns: tuple[str, ...]

    def __init__(self, text: str, commands: list[Command]) -> None:
        self.text = text
        #: The parsed commands, for a store planning what SQL can answer (``pushdown``).
        self.commands = commands
        self._log: list[str | None] = [None]
        first = next((i for i, c in enumerate(commands) if c.kind == "stats"), len(commands))
        self._before, self._after = commands[:first], commands[first:]
        self._display = self._default_display()
        self._plan_columns()
        self._compile()

    # -- planning

    def _default_display(self) -> list[str]:
        names: list[str] = []
        for cmd in self._before:
            if cmd.kind == "display":
                names = [item.name for item in cmd.items]
            elif cmd.kind == "fields":
                names += [item.name for item in cmd.items if item.name not in names]
        if names or self._after:
            return names
        parsed = [n for c in self._before if c.kind == "parse" for n in c.names or ()]
        return ["@timestamp", "@message", *dict.fromkeys(parsed)]

    def _plan_columns(self) -> None:
        """Which system columns to fetch, and whether events must be dicts."""
        defined: set[str] = set()
        wanted: set[str] = set()
        self._json = self._defines = False
        for cmd in self._before + self._after[:1]:
            refs = [name for node in _nodes(cmd) for name in _field_refs(node)]
            self._note_refs(refs, defined, wanted)
            new = _defined_by(cmd) if cmd.kind != "stats" else set()
            self._defines = self._defines or bool(new)
            defined |= new
        if not self._after:
            self._note_refs(self._display, defined, wanted)
        if self._json:
            wanted.add("@message")
        self.columns = tuple(c for c in SYSTEM_COLUMNS if c in wanted)

    def _note_refs(self, refs: Iterable[str], defined: set[str], wanted: set[str]) -> None:
        for name in refs:
            if name in SYSTEM_COLUMNS:
                wanted.add(name)
            elif name not in defined and name != "@log":
                self._json = True

    # -- compiling

    def _compile(self) -> None:
        self._tuples = not self._json and not self._defines
        scope = _Scope(self.text, self.columns if self._tuples else None, self._log)
        self._event_type: type[dict[str, Any]] | None = None
        if not self._tuples:
            self._event_type = _JsonEvent if self._json else _Event
        self._time_names = set(TIME_FIELDS)
        self._sorted = any(c.kind == "sort" for c in self._before)
        self._stages_before = self._stages(self._before, scope)
        kinds = [kind for kind, _ in self._stages_before]
        self._last_filter = (
            len(kinds) - 1 - kinds[::-1].index("filter") if "filter" in kinds else -1
        )
        self._stats: _Stats | None = None
        self._stages_after: list[tuple[str, Stage]] = []
        if self._after:
            self._compile_after(scope)
        self.head = self._plan_head()

    def _plan_head(self) -> Head | None:
        """A ``Head`` when the commands before the first ``limit`` only select
        fields and sort by @timestamp alone (once); None otherwise: a filter,
        parse, stats or a computed field may keep or reorder events other
        than by time, so every event must be read."""
        if self._after:
            return None
        sort: Command | None = None
        for cmd in self._before:
            if cmd.kind == "limit":
                return self._head(sort, cmd.limit)
            if cmd.kind == "sort" and sort is None and _by_timestamp(cmd):
                sort = cmd
            elif cmd.kind not in ("fields", "display") or _defined_by(cmd):
                return None
        return None

    def _head(self, sort: Command | None, limit: int) -> Head:
        if sort is not None and sort.keys:
            # Stable sort of rows in ascending order: equal times stay oldest first.
            return Head(limit, newest_first=sort.keys[0][1], ties_newest_first=False)
        # No sort before the limit: ``run`` reverses the rows (newest first)
        # unless a later command sorts, then takes them as they come.
        return Head(limit, newest_first=not self._sorted, ties_newest_first=not self._sorted)

    def _stages(self, commands: list[Command], scope: _Scope) -> list[tuple[str, Stage]]:
        stages = [(cmd.kind, self._stage(cmd, scope)) for cmd in commands]
        return [(kind, stage) for kind, stage in stages if stage is not None]

    def _stage(self, cmd: Command, scope: _Scope) -> Stage | None:
        if cmd.kind == "filter":
            assert cmd.expr is not None
            return _filter_stage(_compile(cmd.expr, scope))
        if cmd.kind == "sort":
            return _sort_stage([(_compile(k, scope), d) for k, d in cmd.keys or ()])
        if cmd.kind == "limit":
            return _limit_stage(cmd.limit)
        if cmd.kind == "parse":
            assert cmd.expr is not None and cmd.pattern is not None
            get = _compile(cmd.expr, scope)
            return _map_stage(_parse_update(get, cmd.pattern, cmd.names or []))
        # fields/display: define computed names; plain fields only select.
        updates = []
        for item in cmd.items:
            if _is_time(item.expr, self._time_names):
                self._time_names.add(item.name)
            if not (isinstance(item.expr, Field) and item.expr.name == item.name):
                updates.append(_define(item.name, _compile(item.expr, scope)))
        return _map_stage(_chain(updates)) if updates else None

    def _compile_after(self, scope: _Scope) -> None:
        first = self._after[0]
        fast = self._fast_bin(first) if self._tuples and not self._stages_before else None
        self._stats = _Stats(first, scope, fast)
        self._after_stats(first)
        available = set(self._display)
        plain = _Scope(self.text, None, self._log)
        for cmd in self._after[1:]:
            self._check_available(cmd, available)
            if cmd.kind == "stats":
                self._stages_after.append(("stats", _Stats(cmd, plain, None).rows))
                self._after_stats(cmd)
                available = set(self._display)
                continue
            self._stages_after += self._stages([cmd], plain)
            if cmd.kind == "display":
                self._display = [i.name for i in cmd.items]
            elif cmd.kind in ("fields", "parse"):
                new = [i.name for i in cmd.items] + list(cmd.names or ())
                self._display += [n for n in new if n not in self._display]
            available |= _defined_by(cmd)

    def _after_stats(self, cmd: Command) -> None:
        items = cmd.by + cmd.items
        self._time_names = {i.name for i in items if _is_time(i.expr, self._time_names)}
        self._display = [i.name for i in items]

    def _check_available(self, cmd: Command, available: set[str]) -> None:
        for node in _nodes(cmd):
            for sub in _walk(node):
                name = "@timestamp" if isinstance(sub, Call) and sub.name == "bin" else None
                name = sub.name if isinstance(sub, Field) else name
                if name is not None and name not in available and name != "@log":
                    raise QueryError(
                        f"field {name!r} is not available after stats"
                        f" (available: {', '.join(sorted(available))})",
                        self.text,
                        sub.pos,
                    )

    def _fast_bin(self, cmd: Command) -> int | None:
        """The @timestamp column when stats groups only by bin(), for counting by bisection."""
        if len(cmd.by) == 1 and isinstance(cmd.by[0].expr, Call) and cmd.by[0].expr.name == "bin":
            return self.columns.index("@timestamp")
        return None

    # -- running

    def run(
        self,
        rows: Iterable[tuple[Any, ...]],
        log: str | None = None,
        *,
        total: int | None = None,
        scanned: int | None = None,
    ) -> QueryResult:
        """Evaluate over ``rows`` (``columns`` order, ascending @timestamp).

        ``log`` is the value of ``@log`` (``account-id:log-group-name``).
        ``total``: how many events the range holds, when ``rows`` are only
        those of ``head`` (what the counts report is the whole range's).
        ``scanned``: how many events the range holds when SQL has already
        filtered ``rows`` (``total`` is then how many passed).
        """
        self._log[0] = log
        rows = rows if isinstance(rows, list) else list(rows)
        matched = len(rows) if total is None else total
        scanned = matched if scanned is None else scanned
        events: Iterable[Any] = rows
        if self._stats is None and not self._sorted:
            events = reversed(rows)  # newest first, before any limit applies
        if self._event_type is not None:
            make, columns = self._event_type, self.columns
            events = (make(zip(columns, row, strict=True)) for row in events)
        for i, (_kind, stage) in enumerate(self._stages_before):
            events = stage(events)
            if i == self._last_filter:
                events = list(events)
                matched = len(events)
        if self._stats is None:
            return self._result(self._display_rows(islice(events, DEFAULT_LIMIT)), matched, scanned)
        out, in_stats = self._stats.run(events)
        if self._last_filter < 0:
            matched = in_stats
        return self._after_stats_result(out, matched, scanned)

    def finish_stats(
        self, groups: list[list[Any]], matched: int, scanned: int, log: str | None = None
    ) -> QueryResult:
        """The result of a query whose first ``stats`` SQL computed: ``groups``
        holds each group's by values then aggregate values (None: missing),
        in the order the groups first appeared in time."""
        assert self._stats is not None
        self._log[0] = log
        return self._after_stats_result(self._stats.ordered(groups), matched, scanned)

    def _after_stats_result(self, out: list[_Row], matched: int, scanned: int) -> QueryResult:
        after: Iterable[Any] = out
        for _kind, stage in self._stages_after:
            after = stage(after)
        return self._result(self._display_rows(islice(after, DEFAULT_LIMIT)), matched, scanned)

    def _display_rows(self, events: Iterable[Any]) -> list[dict[str, Any]]:
        times = self._time_names
        log = self._log[0]
        if self._tuples and self._stats is None:
            index = {name: i for i, name in enumerate(self.columns)}
            getters: list[tuple[str, Getter, bool]] = [
                (n, itemgetter(index[n]) if n in index else lambda _r: log, n in times)
                for n in self._display
            ]
        else:
            getters = [
                (n, (lambda _r: log) if n == "@log" else itemgetter(n), n in times)
                for n in self._display
            ]
        out = []
        for ev in events:
            values = ((n, get(ev), t) for n, get, t in getters)
            out.append({n: _display(v, t) for n, v, t in values if v is not None})
        return out

    def _result(self, rows: list[dict[str, Any]], matched: int, scanned: int) -> QueryResult:
        return QueryResult(list(self._display), rows, matched, scanned)


def _by_timestamp(cmd: Command) -> bool:
    """Whether a sort has @timestamp as its one key."""
    keys = cmd.keys or []
    return len(keys) == 1 and isinstance(keys[0][0], Field) and keys[0][0].name == "@timestamp"


def _nodes(cmd: Command) -> list[Node]:
    """Every expression in a command."""
    nodes = [item.expr for item in cmd.items + cmd.by]
    nodes += [key for key, _ in cmd.keys or ()]
    return nodes + ([cmd.expr] if cmd.expr is not None else [])


def _defined_by(cmd: Command) -> set[str]:
    """The names a command gives values to (not those it only selects)."""
    if cmd.kind == "parse":
        return set(cmd.names or ())
    if cmd.kind in ("fields", "display"):
        return {
            i.name for i in cmd.items if not (isinstance(i.expr, Field) and i.name == i.expr.name)
        }
    return set()


def _chain(updates: list[Callable[[Any], None]]) -> Callable[[Any], None]:
    def apply(ev: Any) -> None:
        for update in updates:
            update(ev)

    return apply


def to_number(v: Any) -> int | float | None:
    """A value as the evaluator reads it as a number: numbers, and strings
    that read as one (finite); else None."""
    return _num(v)


def compare(op: str, a: Any, b: Any) -> bool:
    """The evaluator's comparison (``=``, ``!=``, ``<``, ...) of two values."""
    return _compare(op, a, b)


def event_getter(name: str) -> Getter:
    """How the evaluator reads field ``name`` from an event dict."""
    return lambda ev: ev[name]


def parse_query(text: str) -> Query:
    """Parse and compile ``text``; raise QueryError at the 0-based position of a problem."""
    tokens = _Lexer(text).run()
    commands = [_Parser(text, toks).command() for toks in _split_commands(text, tokens)]
    return Query(text, commands)
