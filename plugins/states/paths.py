"""JSONPath as Step Functions evaluates it (Jayway JsonPath's semantics).

A path is parsed once into segments and then evaluated against a value. A
*definite* path (names and indexes only) yields one value or fails, naming
the place as AWS does ("No results for path: $['a']", "Missing property in
path $['a']"); an *indefinite* one (wildcards, deep scans, slices, unions,
filters) yields a list, empty when nothing matched.

Written here rather than taken from jsonpath-ng because AWS's results
differ from it in the places that matter: definite paths yield the value
itself, a filter applies to an object as well as to an array's elements,
``$.[?(...)]`` is accepted, and a missing property is an error with Jayway's
wording. ``set_path`` is ResultPath's write: a definite path whose missing
objects are created.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Json = Any


class PathError(Exception):
    """A path that cannot be parsed (``syntax``) or selects nothing (``missing``)."""

    def __init__(self, message: str, *, syntax: bool = False) -> None:
        self.message = message
        self.syntax = syntax
        super().__init__(message)


# -- segments -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Name:
    key: str


@dataclass(frozen=True, slots=True)
class Index:
    index: int


@dataclass(frozen=True, slots=True)
class Wildcard:
    pass


@dataclass(frozen=True, slots=True)
class Slice:
    start: int | None
    end: int | None
    step: int | None


@dataclass(frozen=True, slots=True)
class Union:
    members: tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Filter:
    test: Callable[[Json, Json], bool]
    text: str


@dataclass(frozen=True, slots=True)
class Deep:
    """``..`` followed by the segment it applies at every depth."""

    then: Name | Wildcard | Index | Slice | Union | Filter


Segment = Name | Index | Wildcard | Slice | Union | Filter | Deep

_MISSING = object()


@dataclass(frozen=True, slots=True)
class JsonPath:
    """A parsed path: ``$`` (the input), ``$$`` (the context object) or ``$name``
    (the workflow variable ``name``), and its segments."""

    text: str
    context: bool
    segments: tuple[Segment, ...]
    #: the variable the path starts from (``$name.x``), None for ``$`` and ``$$``
    variable: str | None = None

    def root(self, data: Json, context: Json, variables: Mapping[str, Json] | None = None) -> Json:
        """The value the path starts from: ``data``, ``context`` or the variable's value.

        Raises ``PathError`` when the variable is not in scope.
        """
        if self.context:
            return context
        if self.variable is not None:
            if variables is None or self.variable not in variables:
                raise PathError(f"The variable '${self.variable}' is not defined")
            return variables[self.variable]
        return data

    def find_in(
        self, data: Json, context: Json, variables: Mapping[str, Json] | None = None
    ) -> Json:
        """``find`` from the path's root (the input, ``$$`` or a variable)."""
        return self.find(self.root(data, context, variables))

    @property
    def definite(self) -> bool:
        return all(isinstance(s, Name | Index) for s in self.segments)

    def find(self, data: Json) -> Json:
        """The value the path selects: one value (definite) or a list of them.

        Raises ``PathError`` when a definite path selects nothing.
        """
        if self.definite:
            return self._find_definite(data)
        found: list[Json] = [data]
        for segment in self.segments:
            found = [out for value in found for out in _apply(segment, value)]
        return found

    def _find_definite(self, data: Json) -> Json:
        value = data
        walked = "$"
        last = len(self.segments) - 1
        for position, segment in enumerate(self.segments):
            assert isinstance(segment, Name | Index)
            step = _step_text(segment)
            value = _child(value, segment)
            if value is _MISSING:
                if position == last:
                    raise PathError(f"No results for path: {walked}{step}")
                raise PathError(f"Missing property in path {walked}{step}")
            walked += step
        return value


def _step_text(segment: Name | Index) -> str:
    return f"['{segment.key}']" if isinstance(segment, Name) else f"[{segment.index}]"


def _child(value: Json, segment: Name | Index) -> Json:
    if isinstance(segment, Name):
        if isinstance(value, dict):
            return value.get(segment.key, _MISSING)
        return _MISSING
    if isinstance(value, list):
        index = segment.index
        if -len(value) <= index < len(value):
            return value[index]
    return _MISSING


def _apply(segment: Segment, value: Json) -> list[Json]:
    if isinstance(segment, Name | Index):
        child = _child(value, segment)
        return [] if child is _MISSING else [child]
    if isinstance(segment, Wildcard):
        if isinstance(value, dict):
            return list(value.values())
        return list(value) if isinstance(value, list) else []
    if isinstance(segment, Slice):
        if not isinstance(value, list):
            return []
        return value[segment.start : segment.end : segment.step]
    if isinstance(segment, Union):
        out = []
        for member in segment.members:
            child = _child(value, Name(member) if isinstance(member, str) else Index(member))
            if child is not _MISSING:
                out.append(child)
        return out
    if isinstance(segment, Filter):
        # Jayway applies a filter to an array's elements, and to an object itself.
        if isinstance(value, list):
            return [item for item in value if segment.test(item, None)]
        if isinstance(value, dict):
            return [value] if segment.test(value, None) else []
        return []
    out = []
    for node in _descendants(value):
        out.extend(_apply(segment.then, node))
    return out


def _descendants(value: Json) -> list[Json]:
    """``value`` and everything under it, parents first (Jayway's deep-scan order)."""
    out = [value]
    children = (
        value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    )
    for child in children:
        out.extend(_descendants(child))
    return out


# -- parsing ------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def parse(text: str) -> JsonPath:
    """Parse ``$...``, ``$$...`` or ``$name...``; a ``PathError(syntax=True)`` says what
    is wrong."""
    if not isinstance(text, str) or not text.startswith("$"):
        raise PathError(f"The value '{text}' is not a valid JSONPath", syntax=True)
    context = text.startswith("$$")
    variable = _VARIABLE.match(text, 1)
    start = 2 if context else variable.end() if variable else 1
    reader = _Reader(text, start)
    segments = reader.segments(stop="")
    if not reader.done():
        raise PathError(f"The value '{text}' is not a valid JSONPath", syntax=True)
    name = variable.group(0) if variable and not context else None
    return JsonPath(text, context, tuple(segments), name)


#: A variable's name after ``$``: a Unicode identifier (ID_Start, then ID_Continue).
_VARIABLE = re.compile(r"[^\W\d]\w*")


def find(path: str, data: Json) -> Json:
    return parse(path).find(data)


_NAME_END_TOP = ".["
_NAME_END_FILTER = ".[ )=<>!&|,"


class _Reader:
    def __init__(self, text: str, pos: int) -> None:
        self.text = text
        self.pos = pos

    def done(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self, offset: int = 0) -> str:
        at = self.pos + offset
        return self.text[at] if at < len(self.text) else ""

    def fail(self) -> PathError:
        return PathError(f"The value '{self.text}' is not a valid JSONPath", syntax=True)

    def segments(self, stop: str) -> list[Segment]:
        name_end = _NAME_END_FILTER if stop else _NAME_END_TOP
        out: list[Segment] = []
        while not self.done() and self.peek() not in stop:
            char = self.peek()
            if char == "." and self.peek(1) == ".":
                self.pos += 2
                then = self.bracket() if self.peek() == "[" else self.dotted(name_end)
                if isinstance(then, Deep):
                    raise self.fail()
                out.append(Deep(then))
            elif char == ".":
                self.pos += 1
                # Jayway accepts ``$.[...]`` as ``$[...]``
                out.append(self.bracket() if self.peek() == "[" else self.dotted(name_end))
            elif char == "[":
                out.append(self.bracket())
            else:
                raise self.fail()
        return out

    def dotted(self, name_end: str) -> Name | Wildcard:
        if self.peek() == "*":
            self.pos += 1
            return Wildcard()
        start = self.pos
        while not self.done() and self.peek() not in name_end:
            self.pos += 1
        if self.pos == start:
            raise self.fail()
        return Name(self.text[start : self.pos])

    def bracket(self) -> Segment:
        self.pos += 1  # [
        self.skip_spaces()
        if self.peek() == "*":
            self.pos += 1
            self.expect("]")
            return Wildcard()
        if self.peek() == "?":
            self.pos += 1
            self.skip_spaces()
            if self.peek() != "(":
                raise self.fail()
            body = self.balanced()
            self.skip_spaces()
            self.expect("]")
            return Filter(_compile_filter(body, self.text), body)
        if self.peek() in "'\"":
            names: list[str | int] = []
            while True:
                names.append(self.quoted())
                self.skip_spaces()
                if self.peek() == ",":
                    self.pos += 1
                    self.skip_spaces()
                    continue
                break
            self.expect("]")
            if len(names) == 1:
                return Name(str(names[0]))
            return Union(tuple(names))
        end = self.text.find("]", self.pos)
        if end < 0:
            raise self.fail()
        inside = self.text[self.pos : end].replace(" ", "")
        self.pos = end + 1
        try:
            if ":" in inside:
                parts = [int(p) if p else None for p in inside.split(":")]
                if len(parts) > 3:
                    raise ValueError(inside)
                parts += [None] * (3 - len(parts))
                return Slice(parts[0], parts[1], parts[2])
            if "," in inside:
                return Union(tuple(int(p) for p in inside.split(",")))
            return Index(int(inside))
        except ValueError:
            raise self.fail() from None

    def quoted(self) -> str:
        quote = self.peek()
        self.pos += 1
        out = []
        while not self.done() and self.peek() != quote:
            # only the quote itself is escaped; another backslash is part of the name
            if self.peek() == "\\" and self.peek(1) == quote:
                self.pos += 1
            out.append(self.peek())
            self.pos += 1
        if self.done():
            raise self.fail()
        self.pos += 1
        return "".join(out)

    def balanced(self) -> str:
        """The text inside ``( ... )`` starting here, quotes respected."""
        depth = 0
        start = self.pos
        while not self.done():
            char = self.peek()
            if char in "'\"":
                self.quoted()
                continue
            if char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
                if depth == 0:
                    self.pos += 1
                    return self.text[start + 1 : self.pos - 1]
            self.pos += 1
        raise self.fail()

    def skip_spaces(self) -> None:
        while self.peek() == " ":
            self.pos += 1

    def expect(self, char: str) -> None:
        self.skip_spaces()
        if self.peek() != char:
            raise self.fail()
        self.pos += 1


# -- filter expressions ---------------------------------------------------------

Test = Callable[[Json, Json], bool]
Operand = Callable[[Json, Json], Json]

_TOKEN = re.compile(
    r"""\s*(?:
    (?P<op>==|!=|<=|>=|=~|<|>|&&|\|\||!|\(|\))
  | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<regex>/(?:[^/\\]|\\.)*/[a-z]*)
  | (?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
  | (?P<word>true|false|null|in|nin)\b
  | (?P<path>[@$][^\s=!<>&|()]*(?:\([^)]*\))?)
)""",
    re.VERBOSE,
)


def _compile_filter(body: str, whole: str) -> Test:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(body):
        if body[pos:].strip() == "":
            break
        match = _TOKEN.match(body, pos)
        if match is None or match.end() == pos:
            raise PathError(f"The value '{whole}' is not a valid JSONPath", syntax=True)
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    parser = _FilterParser(tokens, whole)
    test = parser.expression()
    if parser.pos != len(tokens):
        raise PathError(f"The value '{whole}' is not a valid JSONPath", syntax=True)
    return test


class _FilterParser:
    def __init__(self, tokens: list[tuple[str, str]], whole: str) -> None:
        self.tokens = tokens
        self.pos = 0
        self.whole = whole

    def fail(self) -> PathError:
        return PathError(f"The value '{self.whole}' is not a valid JSONPath", syntax=True)

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("", "")

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if not token[0]:
            raise self.fail()
        self.pos += 1
        return token

    def expression(self) -> Test:
        left = self.conjunction()
        while self.peek() == ("op", "||"):
            self.pos += 1
            right = self.conjunction()
            left = _either(left, right)
        return left

    def conjunction(self) -> Test:
        left = self.unary()
        while self.peek() == ("op", "&&"):
            self.pos += 1
            right = self.unary()
            left = _both(left, right)
        return left

    def unary(self) -> Test:
        if self.peek() == ("op", "!"):
            self.pos += 1
            inner = self.unary()
            return lambda item, root: not inner(item, root)
        if self.peek() == ("op", "("):
            self.pos += 1
            inner = self.expression()
            if self.take() != ("op", ")"):
                raise self.fail()
            return inner
        return self.comparison()

    def comparison(self) -> Test:
        left = self.operand()
        kind, text = self.peek()
        if kind == "op" and text in ("==", "!=", "<", "<=", ">", ">=", "=~"):
            self.pos += 1
            right = self.operand()
            return _compare(left, text, right)
        if kind == "word" and text in ("in", "nin"):
            self.pos += 1
            right = self.operand()
            negate = text == "nin"

            def member(item: Json, root: Json) -> bool:
                value, within = left(item, root), right(item, root)
                found = isinstance(within, list) and value is not _MISSING and value in within
                return found != negate

            return member
        return lambda item, root: _truthy(left(item, root))

    def operand(self) -> Operand:
        kind, text = self.take()
        if kind == "str":
            literal: Json = _unquote(text)
            return lambda item, root: literal
        if kind == "num":
            number = float(text) if any(c in text for c in ".eE") else int(text)
            return lambda item, root: number
        if kind == "word" and text in ("true", "false", "null"):
            constant = {"true": True, "false": False, "null": None}[text]
            return lambda item, root: constant
        if kind == "regex":
            end = text.rindex("/")
            flags = re.IGNORECASE if "i" in text[end:] else 0
            pattern = re.compile(text[1:end], flags)
            return lambda item, root: pattern
        if kind == "path":
            relative = text.startswith("@")
            inner = parse("$" + text[1:])
            if inner.segments and inner.definite:

                def definite(item: Json, root: Json) -> Json:
                    target = item if relative else root
                    try:
                        return inner.find(target)
                    except PathError:
                        return _MISSING

                return definite

            def indefinite(item: Json, root: Json) -> Json:
                return inner.find(item if relative else root)

            return indefinite
        raise self.fail()


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


def _truthy(value: Json) -> bool:
    # an existence test: ``[?(@.isbn)]`` keeps the items that have the member
    return value is not _MISSING and value is not None and value is not False


def _either(left: Test, right: Test) -> Test:
    return lambda item, root: left(item, root) or right(item, root)


def _both(left: Test, right: Test) -> Test:
    return lambda item, root: left(item, root) and right(item, root)


def _is_number(value: Json) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _compare(left: Operand, op: str, right: Operand) -> Test:
    def test(item: Json, root: Json) -> bool:
        a, b = left(item, root), right(item, root)
        if a is _MISSING or b is _MISSING:
            return op == "!=" and not (a is _MISSING and b is _MISSING)
        if op == "=~":
            return isinstance(a, str) and isinstance(b, re.Pattern) and b.fullmatch(a) is not None
        if op in ("==", "!="):
            same = (a == b and _is_number(a) == _is_number(b)) if a is not b else True
            return same if op == "==" else not same
        if (_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str)):
            if op == "<":
                return bool(a < b)
            if op == "<=":
                return bool(a <= b)
            if op == ">":
                return bool(a > b)
            return bool(a >= b)
        return False

    return test


# -- ResultPath -------------------------------------------------------------------


def set_path(path: str, data: Json, value: Json) -> Json:
    """``data`` with ``value`` placed at the definite ``path``; missing objects are made.

    ``data`` is not changed (the state's raw input may be reused by a Catch).
    """
    parsed = parse(path)
    if parsed.context or parsed.variable is not None:
        raise PathError(f"Invalid path '{path}'", syntax=True)
    if not parsed.segments:
        return value
    if not parsed.definite:
        raise PathError(f"Invalid path '{path}'", syntax=True)
    root = copy.deepcopy(data)
    holder: Json = root
    walked = "$"
    for position, segment in enumerate(parsed.segments):
        last = position == len(parsed.segments) - 1
        assert isinstance(segment, Name | Index)
        walked += _step_text(segment)
        if isinstance(segment, Name):
            if not isinstance(holder, dict):
                raise PathError(
                    f"Unable to apply ResultPath '{path}' to input: {walked} is not an object"
                )
            if last:
                holder[segment.key] = value
            else:
                holder = holder.setdefault(segment.key, {})
        else:
            if not isinstance(holder, list) or not -len(holder) <= segment.index < len(holder):
                raise PathError(f"Unable to apply ResultPath '{path}' to input: no item {walked}")
            if last:
                holder[segment.index] = value
            else:
                holder = holder[segment.index]
    return root
