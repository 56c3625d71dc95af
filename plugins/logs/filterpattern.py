"""CloudWatch Logs filter patterns (metric filters, subscription filters, FilterLogEvents).

``parse_filter_pattern(text)`` compiles a pattern once into closures;
``FilterPattern.match(message)`` returns a ``Match`` (or ``None``) whose
``value(selector)`` reads ``$.a.b`` from a JSON event or ``$name`` from a
space-delimited one, for metric values and dimensions.

The syntax is AWS's "Filter pattern syntax for metric filters, subscription
filters, filter log events, and Live Tail":

* **Everything**: an empty or blank pattern, and ``" "`` (a quoted blank,
  AWS's "match everything" example), match every event.
* **Terms** (unstructured events), case-sensitive substring matches:
  ``ERROR`` (also matches ``ERRORCODE``, as AWS documents), ``ERROR ARGUMENTS``
  (all terms), ``"INTERNAL SERVER ERROR"`` (exact phrase; terms with characters
  other than letters, digits and ``_`` must be quoted), ``ERROR -ARGUMENTS``
  (exclude), ``?ERROR ?WARN`` (any of them) and ``%regex%``. As AWS documents,
  ``?`` terms are ignored when the pattern also has terms without ``?``.
* **JSON** ``{ ... }``: selectors ``$.a.b``, ``$.a[0]``, ``$.a[1].id``,
  ``$.['cluster.name']`` and one wildcard per selector (``$.a[*]``, ``$.*``; at
  most three in a pattern); ``=`` / ``!=`` against a string (quoted, or bare
  like ``123.123.*``), a number or ``%regex%``; ``<``, ``<=``, ``>``, ``>=``
  against numbers (sign, decimals, exponent); ``IS NULL``, ``IS TRUE``,
  ``IS FALSE``, ``NOT EXISTS``; ``&&``, ``||`` and parentheses with
  ``() > && > ||``. A message that is not a JSON object never matches.
* **Space-delimited** ``[ip, user, ..., status = 4*, bytes > 1000]``: fields of
  the line are separated by whitespace, ``"..."`` and ``[...]`` group one field
  (without its quotes or brackets); ``...`` stands for any number of fields;
  a field may carry conditions (same operators and values as JSON) joined with
  ``&&`` / ``||`` that all name that field (``status = 403 || status = 404``).
* **Regex** ``%...%``, AWS's subset: letters, digits, space, the symbols
  ``: _ # = @ / ; , -``, the operators ``^ $ ? [ ] { } | \\ * + .``, the classes
  ``\\d \\D \\s \\S \\w \\W``, ``\\xhh``, and ``\\`` before a symbol. Parentheses and
  non-ASCII characters are rejected, as are more than two regexes in a JSON or
  space-delimited pattern (AWS's quota).

Where AWS is silent, this module chooses:

* ``*`` is a wildcard only at the start and/or end of a value (``*Event``,
  ``Event*``, ``*html*``); elsewhere it is literal, as AWS's older guide says
  ("``Ev*ent`` will only match the actual string ``Ev*ent``").
* Comparisons only apply to value nodes (strings and numbers). A missing
  field, ``null``, a boolean, an array or an object makes both ``=`` and ``!=``
  false (AWS: "If a property selector points to an array or object, the
  filter pattern won't match"); booleans and null are tested with ``IS``.
* ``= 400`` also matches the string ``"400"`` and ``"4e2"`` (numeric equality
  when the value reads as a number); ``= "400"`` also matches the number 400
  (text equality). ``<`` etc. read numeric strings as numbers.
* With a wildcard selector a condition holds when it holds for *any* selected
  value; ``NOT EXISTS`` holds when nothing is selected.
* Without ``...`` a line needs at least as many fields as the pattern; the
  last pattern field takes the rest of the line. That is what AWS's
  ``[w1=ERROR, w2]`` example needs to match
  ``ERROR 09/25/2014 12:00:02 Failed to process request``.
* Inside double quotes ``\\"`` and ``\\\\`` are escapes. ``IS``, ``NOT``,
  ``NULL``, ``TRUE``, ``FALSE`` and ``EXISTS`` are case-insensitive. Regex
  terms may be mixed with other terms (and take ``?`` / ``-``). A regex is a
  search (not anchored) with ASCII classes; spaces are allowed in it (AWS's
  own examples use them).
* ``Match.value("$3")`` reads the third field of a delimited line (AWS's
  extracted fields name unnamed fields by position).

Not supported: ``IS NOT`` and ``EXISTS`` (AWS does not support them either),
more than one ``...`` in a delimited pattern, parentheses in delimited
conditions, a literal ``*`` at the start or end of a value, and AWS's
per-log-group quota of regex patterns (a concern of the caller).
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, reduce
from typing import Any, Literal

import orjson

from pipelines.errors import FilterPatternError

__all__ = ["FilterPattern", "Match", "parse_filter_pattern"]

Kind = Literal["all", "terms", "json", "delimited"]
Scalar = str | int | float | bool | None
Test = Callable[[Any], bool]
JsonTest = Callable[[dict[str, Any]], bool]

_MISSING: Any = object()
_ANY = None  # a wildcard step in a selector path
_MAX_REGEXES = 2
_MAX_WILDCARDS = 3
_MAX_DEPTH = 50  # keeps deeply nested parentheses from exhausting Python's stack
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_FIELD = re.compile(r'"([^"]*)"?|\[([^\]]*)\]?|(\S+)')
_COMPARISONS = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_OPERATORS = ("=", "!=", "<", "<=", ">", ">=")
_OPERATOR_CHARS = "=!<>"
_BARE_SYMBOLS = "_.*+-:/"
_REGEX_SYMBOLS = ":_#=@/;,- "
_REGEX_OPERATORS = "^$?[]{}|\\*+."
_QUANTIFIER = re.compile(r"\{\s*(\d*)\s*(?:(,)\s*(\d*)\s*)?\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORD = re.compile(r"[A-Za-z]+")
_DIGITS = re.compile(r"\d+")


# -- matches ---------------------------------------------------------------------------


class Match:
    """One matched event: ``value(selector)`` reads a field of it."""

    __slots__ = ("_doc", "_fields", "_positions")

    def __init__(
        self,
        doc: dict[str, Any] | None = None,
        fields: dict[str, str] | None = None,
        positions: list[str] | None = None,
    ) -> None:
        self._doc = doc
        self._fields = fields
        self._positions = positions

    def value(self, selector: str) -> Scalar:
        """The value ``selector`` picks (``$.a.b`` / ``$name`` / ``$3``), or ``None``.

        ``None`` also stands for JSON ``null`` and for arrays and objects; a
        malformed JSON selector raises ``FilterPatternError``.
        """
        if self._doc is not None:
            found = _get(self._doc, _value_steps(selector))
            return found if type(found) in _SCALARS else None
        if self._fields is not None and selector.startswith("$"):
            name = selector[1:]
            if name in self._fields:
                return self._fields[name]
            positions = self._positions or []
            if name.isascii() and name.isdigit() and 0 < int(name) <= len(positions):
                return positions[int(name) - 1]
        return None


_SCALARS = frozenset({str, int, float, bool, type(None)})
_VALUE_NODES = frozenset({str, int, float})
_NO_FIELDS = Match()


# -- patterns --------------------------------------------------------------------------


class FilterPattern:
    """A compiled filter pattern; build one with ``parse_filter_pattern``."""

    __slots__ = ("_matcher", "_names", "kind", "text")

    def __init__(
        self,
        text: str,
        kind: Kind,
        matcher: Callable[[str], Match | None],
        names: tuple[str, ...] = (),
    ) -> None:
        self.text = text
        self.kind: Kind = kind
        self._matcher = matcher
        self._names = names

    def __repr__(self) -> str:
        return f"FilterPattern({self.text!r}, kind={self.kind!r})"

    def match(self, message: str) -> Match | None:
        """The match of ``message``, or ``None`` when the pattern does not match it."""
        return self._matcher(message)

    def check_selector(self, selector: str) -> None:
        """Raise ``FilterPatternError`` unless ``selector`` can name a value of a match."""
        if self.kind == "json":
            _value_steps(selector)
        elif self.kind == "delimited":
            if selector[1:] not in self._names or not selector.startswith("$"):
                named = ", ".join(f"${n}" for n in self._names) or "none"
                raise FilterPatternError(
                    "expected '$' and a field named in the pattern "
                    f"(this pattern names {named}), found {selector!r}",
                    selector,
                    0,
                )
        else:
            raise FilterPatternError(
                "values can only be selected from JSON ({ ... }) or space-delimited "
                f"([ ... ]) patterns; {self.text!r} has no fields",
                selector,
                0,
            )


def parse_filter_pattern(text: str) -> FilterPattern:
    """Compile ``text``; raise ``FilterPatternError`` with the position of a problem."""
    stripped = text.strip()
    if not stripped:
        return FilterPattern(text, "all", _match_all)
    if stripped[0] == "{":
        return FilterPattern(text, "json", _json_matcher(_parse_json(_Cursor(text))))
    if stripped[0] == "[":
        fields = _parse_delimited(_Cursor(text))
        names = tuple(f.name for f in fields if f.name)
        return FilterPattern(text, "delimited", _delimited_matcher(fields), names)
    terms = _parse_terms(_Cursor(text))
    if all(t.always for t in terms) and not any(t.sign == "-" for t in terms):
        return FilterPattern(text, "all", _match_all)
    return FilterPattern(text, "terms", _terms_matcher(terms))


def _match_all(message: str) -> Match | None:
    return _NO_FIELDS


# -- scanning --------------------------------------------------------------------------


class _Cursor:
    """A position in the pattern text, with counts for AWS's per-pattern quotas."""

    __slots__ = ("depth", "pos", "regexes", "text", "wildcards")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0
        self.regexes = 0
        self.wildcards = 0

    def error(self, message: str, pos: int | None = None) -> FilterPatternError:
        return FilterPatternError(message, self.text, self.pos if pos is None else pos)

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def skip_ws(self) -> None:
        text, pos = self.text, self.pos
        while pos < len(text) and text[pos].isspace():
            pos += 1
        self.pos = pos

    def eat(self, token: str) -> bool:
        if self.text.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def found(self, pos: int | None = None) -> str:
        """What is at ``pos``, for "expected ..., found ..." messages."""
        pos = self.pos if pos is None else pos
        if pos >= len(self.text):
            return "end of pattern"
        if self.text[pos].isspace():
            return "a space"
        end = pos
        while end < len(self.text) and (self.text[end].isalnum() or self.text[end] in "_$."):
            end += 1
        return repr(self.text[pos : max(end, pos + 1)])

    def read_quoted(self) -> str:
        """A double-quoted string at the cursor, with ``\\"`` and ``\\\\`` unescaped."""
        start, text = self.pos, self.text
        pos, out = start + 1, list[str]()
        while pos < len(text):
            ch = text[pos]
            if ch == '"':
                self.pos = pos + 1
                return "".join(out)
            if ch == "\\" and text[pos + 1 : pos + 2] in ('"', "\\"):
                pos += 1
                ch = text[pos]
            out.append(ch)
            pos += 1
        raise self.error("unbalanced '\"': expected a closing '\"', found end of pattern", start)

    def read_regex(self) -> re.Pattern[str]:
        """A ``%regex%`` at the cursor, checked against AWS's regex subset."""
        start, text = self.pos, self.text
        pos = start + 1
        while pos < len(text) and text[pos] != "%":
            pos += 2 if text[pos] == "\\" else 1
        if pos >= len(text):
            raise self.error(
                "unbalanced '%': expected a closing '%' after the regex, found end of pattern",
                start,
            )
        self.pos = pos + 1
        return _compile_regex(self, text[start + 1 : pos], start + 1)


# -- regex -----------------------------------------------------------------------------


def _compile_regex(cur: _Cursor, body: str, offset: int) -> re.Pattern[str]:
    """Translate AWS's regex subset to Python's, rejecting what AWS rejects."""
    if not body:
        raise cur.error("empty regex: expected something between '%' and '%'", offset - 1)
    out: list[str] = []
    i = 0
    while i < len(body):
        i = _regex_piece(cur, body, i, offset, out)
    try:
        return re.compile("".join(out), re.ASCII)
    except re.error as exc:
        raise cur.error(f"invalid regex: {exc.msg}", offset) from None


def _regex_piece(cur: _Cursor, body: str, i: int, offset: int, out: list[str]) -> int:
    """Append the regex piece at ``body[i]`` to ``out``; return where the next starts."""
    ch = body[i]
    if ch == "\\":
        return _regex_escape(cur, body, i, offset, out)
    if ch == "[":
        return _regex_class(cur, body, i, offset, out)
    if ch == "{":
        quantifier = _QUANTIFIER.match(body, i)
        if not quantifier or not (quantifier[1] or quantifier[3]):
            raise cur.error("expected a quantifier like {2}, {2,} or {2,5} after '{'", offset + i)
        out.append(f"{{{quantifier[1]}{quantifier[2] or ''}{quantifier[3] or ''}}}")
        return quantifier.end()
    if ch == "}":
        raise cur.error("'}' without a matching '{' in regex", offset + i)
    _check_regex_char(cur, ch, offset + i)
    out.append(ch)
    return i + 1


def _regex_escape(cur: _Cursor, body: str, i: int, offset: int, out: list[str]) -> int:
    nxt = body[i + 1 : i + 2]
    if nxt in ("d", "D", "s", "S", "w", "W"):
        out.append("\\" + nxt)
        return i + 2
    if nxt == "x":
        digits = body[i + 2 : i + 4]
        if len(digits) != 2 or any(c not in "0123456789abcdefABCDEF" for c in digits):
            raise cur.error("expected two hex digits after '\\x' in regex", offset + i)
        out.append("\\x" + digits)
        return i + 4
    if nxt and nxt.isascii() and not nxt.isalnum() and nxt.isprintable():
        out.append(re.escape(nxt))
        return i + 2
    found = repr("\\" + nxt) if nxt else "the end of the regex"
    raise cur.error(
        "unsupported escape in regex: expected \\d \\D \\s \\S \\w \\W \\xhh or '\\' before a "
        f"symbol, found {found}",
        offset + i,
    )


def _regex_class(cur: _Cursor, body: str, i: int, offset: int, out: list[str]) -> int:
    """A ``[...]`` character class; ``[`` and ``|`` inside it are literal."""
    j = i + 1
    out.append("[")
    if body[j : j + 1] == "^":
        out.append("^")
        j += 1
    while j < len(body) and (body[j] != "]" or j == i + 1):
        if body[j] == "\\":
            j = _regex_escape(cur, body, j, offset, out)
            continue
        _check_regex_char(cur, body[j], offset + j)
        out.append("\\" + body[j] if body[j] in "[|&~" else body[j])
        j += 1
    if j >= len(body):
        raise cur.error("unbalanced '[' in regex: expected ']', found end of regex", offset + i)
    out.append("]")
    return j + 1


def _check_regex_char(cur: _Cursor, ch: str, pos: int) -> None:
    if ch.isascii() and (ch.isalnum() or ch in _REGEX_SYMBOLS or ch in _REGEX_OPERATORS):
        return
    if ch in "()":
        reason = "parentheses are not supported in a regex (match them with \\x28 and \\x29)"
    elif not ch.isascii():
        reason = f"multi-byte characters are not supported in a regex, found {ch!r}"
    else:
        reason = (
            f"{ch!r} is not supported in a regex; allowed symbols are : _ # = @ / ; , - "
            "(match others with \\xhh)"
        )
    raise cur.error(reason, pos)


# -- values and conditions (shared by JSON and space-delimited patterns) ----------------


@dataclass(frozen=True, slots=True)
class _Value:
    """The right-hand side of a comparison, as written."""

    text: str
    pos: int
    quoted: bool = False
    regex: re.Pattern[str] | None = None


def _read_value(cur: _Cursor, op: str, stops: str) -> _Value:
    """The value after ``op``; a bare value ends at whitespace or a char in ``stops``."""
    cur.skip_ws()
    start, ch = cur.pos, cur.peek()
    if ch == '"':
        return _Value(cur.read_quoted(), start, quoted=True)
    if ch == "%":
        cur.regexes += 1
        if cur.regexes > _MAX_REGEXES:
            raise cur.error(f"at most {_MAX_REGEXES} regexes are allowed in a pattern", start)
        regex = cur.read_regex()
        return _Value(cur.text[start + 1 : cur.pos - 1], start, regex=regex)
    text = cur.text
    pos = start
    while pos < len(text) and not text[pos].isspace() and text[pos] not in stops:
        pos += 1
    if pos == start:
        raise cur.error(f"expected a value after '{op}', found {cur.found()}")
    for i in range(start, pos):
        if not (text[i].isalnum() or text[i] in _BARE_SYMBOLS):
            raise cur.error(
                f"unquoted values may contain only letters, digits and {' '.join(_BARE_SYMBOLS)}; "
                f"found {text[i]!r} (put the value in double quotes)",
                i,
            )
    cur.pos = pos
    return _Value(text[start:pos], start)


def _read_operator(cur: _Cursor, after: str) -> str:
    cur.skip_ws()
    start = cur.pos
    while not cur.at_end() and cur.peek() in _OPERATOR_CHARS:
        cur.pos += 1
    op = cur.text[start : cur.pos]
    if not op:
        raise cur.error(
            f"expected an operator (=, !=, <, <=, >, >=) after {after}, found {cur.found()}"
        )
    if op not in _OPERATORS:
        raise cur.error(f"unknown operator {op!r}: expected one of =, !=, <, <=, >, >=", start)
    return op


def _comparison(cur: _Cursor, op: str, value: _Value) -> Test:
    """The test a comparison applies to a selected value."""
    if op in _COMPARISONS:
        if value.quoted or value.regex or not _NUMBER.fullmatch(value.text):
            shown = f"%{value.text}%" if value.regex else repr(value.text)
            raise cur.error(f"{op!r} compares numbers: expected a number, found {shown}", value.pos)
        return _numeric_test(_COMPARISONS[op], float(value.text))
    equals = _equality_test(value)
    if op == "=":
        return equals
    return lambda v: type(v) in _VALUE_NODES and not equals(v)


def _numeric_test(compare: Callable[[float, float], bool], number: float) -> Test:
    def test(v: Any) -> bool:
        kind = type(v)
        if kind is int or kind is float:
            return compare(v, number)
        if kind is str and _NUMBER.fullmatch(v):
            return compare(float(v), number)
        return False

    return test


def _equality_test(value: _Value) -> Test:
    if value.regex is not None:
        search = value.regex.search
        return lambda v: (t := _text_of(v)) is not None and search(t) is not None
    text = value.text
    if text.startswith("*") or text.endswith("*"):
        glob = _glob(text)
        return lambda v: (t := _text_of(v)) is not None and glob(t)
    if not value.quoted and _NUMBER.fullmatch(text):
        return _number_equals(text, float(text))
    return lambda v: _text_of(v) == text


def _number_equals(text: str, number: float) -> Test:
    def test(v: Any) -> bool:
        kind = type(v)
        if kind is int or kind is float:
            return bool(v == number)
        if kind is str:
            return v == text or (_NUMBER.fullmatch(v) is not None and float(v) == number)
        return False

    return test


def _glob(text: str) -> Callable[[str], bool]:
    """A matcher for a value with ``*`` at its start and/or end."""
    lead = text.startswith("*")
    trail = len(text) > 1 and text.endswith("*")
    core = text[int(lead) : len(text) - int(trail)]
    if lead and trail:
        return (lambda s: core in s) if core else lambda s: True
    if lead:
        return lambda s: s.endswith(core)
    return lambda s: s.startswith(core)


def _text_of(v: Any) -> str | None:
    """A value node as text (numbers as JSON writes them), or ``None``."""
    kind = type(v)
    if kind is str:
        return v  # type: ignore[no-any-return]
    if kind is int or kind is float:
        return str(v)
    return None


# -- terms -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Term:
    sign: str  # "", "?" or "-"
    test: Callable[[str], object]  # truthy when the term is in the message
    always: bool = False  # a blank phrase: AWS's "match everything"


def _parse_terms(cur: _Cursor) -> list[_Term]:
    terms: list[_Term] = []
    while True:
        cur.skip_ws()
        if cur.at_end():
            return terms
        terms.append(_parse_term(cur))


def _parse_term(cur: _Cursor) -> _Term:
    sign = cur.peek() if cur.peek() in ("?", "-") else ""
    cur.pos += len(sign)
    start, ch = cur.pos, cur.peek()
    if not ch or ch.isspace():
        raise cur.error(f"expected a term after {sign!r}, found {cur.found()}")
    if ch == "%":
        term = _Term(sign, cur.read_regex().search)
    elif ch == '"':
        phrase = cur.read_quoted()
        blank = not phrase.strip()
        term = _Term(sign, _always if blank else _contains(phrase), always=blank)
    else:
        term = _Term(sign, _contains(_read_word(cur)))
    if not cur.at_end() and not cur.peek().isspace():
        raise cur.error(
            f"expected a space after the term that starts at {start}, found {cur.found()}"
        )
    return term


def _contains(term: str) -> Callable[[str], bool]:
    return lambda message: term in message


def _always(message: str) -> bool:
    return True


def _read_word(cur: _Cursor) -> str:
    start, text = cur.pos, cur.text
    pos = start
    while pos < len(text) and not text[pos].isspace():
        if not (text[pos].isalnum() or text[pos] == "_"):
            raise cur.error(
                "unquoted terms may contain only letters, digits and '_'; "
                f"found {text[pos]!r} (put the term in double quotes)",
                pos,
            )
        pos += 1
    cur.pos = pos
    return text[start:pos]


def _terms_matcher(terms: list[_Term]) -> Callable[[str], Match | None]:
    required = [t.test for t in terms if t.sign == ""]
    excluded = [t.test for t in terms if t.sign == "-"]
    optional = [t.test for t in terms if t.sign == "?"]
    if not required and not excluded:

        def any_term(message: str) -> Match | None:
            return _NO_FIELDS if any(test(message) for test in optional) else None

        return any_term

    # AWS: "If you combine ? with other filter patterns, all question mark terms will be ignored."
    def all_terms(message: str) -> Match | None:
        for test in required:
            if not test(message):
                return None
        for test in excluded:
            if test(message):
                return None
        return _NO_FIELDS

    return all_terms


# -- JSON ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Path:
    steps: tuple[str | int | None, ...]
    wildcard: bool


def _parse_json(cur: _Cursor) -> JsonTest:
    cur.skip_ws()
    opened = cur.pos
    cur.pos += 1  # the "{" parse_filter_pattern saw
    test = _parse_or(cur, "'{'")
    cur.skip_ws()
    if cur.at_end():
        raise cur.error("unbalanced '{': expected '}', found end of pattern", opened)
    if not cur.eat("}"):
        raise cur.error(f"expected '&&', '||' or '}}', found {cur.found()}")
    cur.skip_ws()
    if not cur.at_end():
        raise cur.error(f"expected nothing after the closing '}}', found {cur.found()}")
    return test


def _parse_or(cur: _Cursor, after: str) -> JsonTest:
    tests = [_parse_and(cur, after)]
    while True:
        cur.skip_ws()
        if not cur.eat("||"):
            return reduce(_either, tests)
        tests.append(_parse_and(cur, "'||'"))


def _parse_and(cur: _Cursor, after: str) -> JsonTest:
    tests = [_parse_primary(cur, after)]
    while True:
        cur.skip_ws()
        if not cur.eat("&&"):
            return reduce(_both, tests)
        tests.append(_parse_primary(cur, "'&&'"))


def _either(a: JsonTest, b: JsonTest) -> JsonTest:
    return lambda doc: a(doc) or b(doc)


def _both(a: JsonTest, b: JsonTest) -> JsonTest:
    return lambda doc: a(doc) and b(doc)


def _parse_primary(cur: _Cursor, after: str) -> JsonTest:
    cur.skip_ws()
    opened = cur.pos
    if cur.eat("("):
        cur.depth += 1
        if cur.depth > _MAX_DEPTH:
            raise cur.error(f"parentheses nest more than {_MAX_DEPTH} deep", opened)
        test = _parse_or(cur, "'('")
        cur.depth -= 1
        cur.skip_ws()
        if cur.at_end():
            raise cur.error("unbalanced '(': expected ')', found end of pattern", opened)
        if not cur.eat(")"):
            raise cur.error(f"expected '&&', '||' or ')', found {cur.found()}")
        return test
    if not cur.text.startswith("$", cur.pos):
        raise cur.error(
            f"expected a condition (a selector starting with '$.', or '(') after {after}, "
            f"found {cur.found()}"
        )
    path = _parse_selector(cur)
    return _json_condition(cur, path, opened)


def _json_condition(cur: _Cursor, path: _Path, start: int) -> JsonTest:
    selector = cur.text[start : cur.pos]
    cur.skip_ws()
    if cur.peek().isalpha():
        return _keyword_condition(cur, path)
    op = _read_operator(cur, f"the selector {selector!r}")
    test = _comparison(cur, op, _read_value(cur, op, "()}{&|"))
    return _condition(path, test, missing=False)


def _keyword_condition(cur: _Cursor, path: _Path) -> JsonTest:
    """``IS NULL``, ``IS TRUE``, ``IS FALSE`` or ``NOT EXISTS`` after a selector."""
    start = cur.pos
    words: list[str] = []
    # A second word only follows IS or NOT.
    while (not words or words[0].upper() in ("IS", "NOT")) and len(words) < 2:
        word = _WORD.match(cur.text, cur.pos)
        if not word:
            break
        words.append(word[0])
        cur.pos = word.end()
        cur.skip_ws()
    written = " ".join(words)
    phrase = written.upper()
    if phrase == "IS NULL":
        return _condition(path, lambda v: v is None, missing=False)
    if phrase == "IS TRUE":
        return _condition(path, lambda v: v is True, missing=False)
    if phrase == "IS FALSE":
        return _condition(path, lambda v: v is False, missing=False)
    if phrase == "NOT EXISTS":
        return _condition(path, lambda v: False, missing=True)
    if phrase in ("IS NOT", "EXISTS"):
        raise cur.error(
            f"{written!r} is not supported: expected IS NULL, IS TRUE, IS FALSE or NOT EXISTS",
            start,
        )
    raise cur.error(
        f"unknown operator {written!r}: expected =, !=, <, <=, >, >=, IS NULL, IS TRUE, "
        "IS FALSE or NOT EXISTS",
        start,
    )


def _condition(path: _Path, test: Test, *, missing: bool) -> JsonTest:
    """``test`` on the selected value; ``missing`` when nothing is selected."""
    steps = path.steps
    if path.wildcard:

        def any_value(doc: dict[str, Any]) -> bool:
            values = _select_all(doc, steps)
            return any(test(v) for v in values) if values else missing

        return any_value
    if len(steps) == 1:
        key = steps[0]

        def top_level(doc: dict[str, Any]) -> bool:
            v = doc.get(key, _MISSING)  # type: ignore[arg-type]
            return missing if v is _MISSING else test(v)

        return top_level

    def nested(doc: dict[str, Any]) -> bool:
        v = _get(doc, steps)
        return missing if v is _MISSING else test(v)

    return nested


def _get(doc: Any, steps: tuple[str | int | None, ...]) -> Any:
    for step in steps:
        if type(step) is str:
            if type(doc) is not dict:
                return _MISSING
            doc = doc.get(step, _MISSING)
            if doc is _MISSING:
                return _MISSING
        elif type(doc) is list and type(step) is int and step < len(doc):
            doc = doc[step]
        else:
            return _MISSING
    return doc


def _select_all(doc: Any, steps: tuple[str | int | None, ...]) -> list[Any]:
    """Every value a path with a wildcard selects."""
    found = [doc]
    for step in steps:
        nxt: list[Any] = []
        for node in found:
            if step is _ANY:
                if type(node) is dict:
                    nxt.extend(node.values())
                elif type(node) is list:
                    nxt.extend(node)
            else:
                value = _get(node, (step,))
                if value is not _MISSING:
                    nxt.append(value)
        found = nxt
    return found


def _parse_selector(cur: _Cursor) -> _Path:
    """``$.a.b[0]['c.d'].*`` at the cursor (which is at ``$``)."""
    start = cur.pos
    if not cur.text.startswith("$.", start):
        raise cur.error(f"expected a selector starting with '$.', found {cur.found()}")
    cur.pos += 2
    steps: list[str | int | None] = []
    wildcard_at = -1
    member = True  # the next step follows a "."
    while True:
        at = cur.pos
        if cur.peek() == "[":
            step = _parse_bracket(cur)
        elif member and cur.eat("*"):
            step = _ANY
        elif member:
            step = _read_name(cur)
        else:
            break
        if step is _ANY:
            if wildcard_at >= 0:
                raise cur.error("only one wildcard is allowed in a selector", at)
            wildcard_at = at
            cur.wildcards += 1
            if cur.wildcards > _MAX_WILDCARDS:
                raise cur.error(
                    f"at most {_MAX_WILDCARDS} wildcard selectors are allowed in a pattern", at
                )
        steps.append(step)
        member = cur.eat(".")
    return _Path(tuple(steps), wildcard_at >= 0)


def _read_name(cur: _Cursor) -> str:
    start, text = cur.pos, cur.text
    pos = start
    while pos < len(text) and (text[pos].isalnum() or text[pos] in "_-"):
        pos += 1
    if pos == start:
        raise cur.error(
            "expected a property name (letters, digits, '-', '_'), '*' or '[' after '.', "
            f"found {cur.found()}"
        )
    cur.pos = pos
    return text[start:pos]


def _parse_bracket(cur: _Cursor) -> str | int | None:
    """``[0]``, ``[*]`` or ``['key.with.dots']`` at the cursor."""
    opened = cur.pos
    cur.pos += 1
    quote = cur.peek()
    if quote in ("'", '"'):
        end = cur.text.find(quote, cur.pos + 1)
        if end < 0:
            raise cur.error(
                f"unbalanced {quote!r}: expected a closing {quote!r}, found end of pattern", cur.pos
            )
        step: str | int | None = cur.text[cur.pos + 1 : end]
        cur.pos = end + 1
    elif cur.eat("*"):
        step = _ANY
    else:
        digits = _DIGITS.match(cur.text, cur.pos)
        if not digits:
            raise cur.error(
                f"expected an array index, '*' or a quoted key after '[', found {cur.found()}"
            )
        step = int(digits[0])
        cur.pos = digits.end()
    if not cur.eat("]"):
        if cur.at_end():
            raise cur.error("unbalanced '[': expected ']', found end of pattern", opened)
        raise cur.error(f"expected ']', found {cur.found()}")
    return step


@lru_cache(maxsize=256)
def _value_steps(selector: str) -> tuple[str | int | None, ...]:
    """The path of a metric value / dimension selector, which must name one value."""
    cur = _Cursor(selector)
    if not selector.startswith("$."):
        raise cur.error(
            f"expected a selector starting with '$.' (like $.latency or $.a[0].b), "
            f"found {selector!r}",
            0,
        )
    path = _parse_selector(cur)
    if path.wildcard:
        raise cur.error(
            "a selector for a value must name one value; wildcards are not allowed",
            selector.index("*"),
        )
    if not cur.at_end():
        raise cur.error(f"expected the end of the selector, found {cur.found()}")
    return path.steps


def _json_matcher(test: JsonTest) -> Callable[[str], Match | None]:
    def match_json(message: str) -> Match | None:
        # Cheap rejection of plain-text lines before any parsing.
        if message[:1] != "{" and message.lstrip()[:1] != "{":
            return None
        try:
            doc = orjson.loads(message)
        except orjson.JSONDecodeError:
            try:  # orjson refuses what json accepts (integers beyond 64 bits, NaN)
                doc = json.loads(message)
            except ValueError:
                return None
        if type(doc) is not dict or not test(doc):
            return None
        return Match(doc=doc)

    return match_json


# -- space-delimited -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    name: str  # "" for an unnamed field
    test: Test | None = None
    ellipsis: bool = False


def _parse_delimited(cur: _Cursor) -> list[_Field]:
    cur.skip_ws()
    opened = cur.pos
    cur.pos += 1  # the "[" parse_filter_pattern saw
    fields: list[_Field] = []
    while True:
        fields.append(_parse_field(cur, fields))
        cur.skip_ws()
        if cur.eat(","):
            continue
        if cur.at_end():
            raise cur.error("unbalanced '[': expected ']', found end of pattern", opened)
        if not cur.eat("]"):
            raise cur.error(f"expected ',' or ']', found {cur.found()}")
        break
    cur.skip_ws()
    if not cur.at_end():
        raise cur.error(f"expected nothing after the closing ']', found {cur.found()}")
    return fields


def _parse_field(cur: _Cursor, before: list[_Field]) -> _Field:
    cur.skip_ws()
    start = cur.pos
    if cur.eat("..."):
        if any(f.ellipsis for f in before):
            raise cur.error("only one '...' is supported in a pattern", start)
        return _Field("", ellipsis=True)
    if cur.at_end() or cur.peek() in ",]":
        return _Field("")
    name = _field_name(cur)
    if any(f.name == name for f in before):
        raise cur.error(f"the field name {name!r} is used twice", start)
    cur.skip_ws()
    if cur.at_end() or cur.peek() in ",]":
        return _Field(name)
    return _Field(name, _field_conditions(cur, name))


def _field_name(cur: _Cursor) -> str:
    match = _NAME.match(cur.text, cur.pos)
    if not match:
        raise cur.error(f"expected a field name, '...', ',' or ']', found {cur.found()}")
    cur.pos = match.end()
    return match[0]


def _field_conditions(cur: _Cursor, name: str) -> Test:
    """``name = 4* && name != 403 || name = 500``: && binds tighter than ||."""
    groups: list[list[Test]] = [[_field_comparison(cur, name)]]
    while True:
        cur.skip_ws()
        if cur.eat("&&"):
            groups[-1].append(_field_condition(cur, name, "'&&'"))
        elif cur.eat("||"):
            groups.append([_field_condition(cur, name, "'||'")])
        else:
            break
    alternatives = [reduce(_both, group) for group in groups]
    return reduce(_either, alternatives)


def _field_condition(cur: _Cursor, name: str, after: str) -> Test:
    cur.skip_ws()
    start = cur.pos
    match = _NAME.match(cur.text, cur.pos)
    if not match:
        raise cur.error(f"expected a condition on {name!r} after {after}, found {cur.found()}")
    if match[0] != name:
        raise cur.error(
            "conditions in a field must all name that field: "
            f"expected {name!r}, found {match[0]!r}",
            start,
        )
    cur.pos = match.end()
    return _field_comparison(cur, name)


def _field_comparison(cur: _Cursor, name: str) -> Test:
    op = _read_operator(cur, f"the field name {name!r}")
    return _comparison(cur, op, _read_value(cur, op, ",]&|"))


def _split(line: str) -> list[str]:
    """The fields of a line: ``"..."`` and ``[...]`` group (and are unwrapped)."""
    if '"' in line or "[" in line:
        return ["".join(groups) for groups in _FIELD.findall(line)]
    return line.split()


def _rest(line: str, index: int) -> str:
    """The line from the start of its field number ``index`` (0-based) on."""
    for i, field in enumerate(_FIELD.finditer(line)):
        if i == index:
            return line[field.start() :].rstrip()
    return ""


def _delimited_matcher(fields: list[_Field]) -> Callable[[str], Match | None]:
    cut = next((i for i, f in enumerate(fields) if f.ellipsis), -1)
    # Fields before "..." index the line from its start, fields after it from its end.
    placed = (
        list(enumerate(fields))
        if cut < 0
        else list(enumerate(fields[:cut]))
        + [(i - len(fields), f) for i, f in enumerate(fields) if i > cut]
    )
    needed = len(placed)
    checks = [(i, f.test) for i, f in placed if f.test is not None]
    names = [(i, f.name) for i, f in placed if f.name]

    def match_delimited(message: str) -> Match | None:
        values = _split(message)
        if len(values) < needed:
            return None
        if cut < 0 and len(values) > needed:
            # AWS's "[w1=ERROR, w2]" example: the last field takes the rest of the line.
            values[needed - 1 :] = [_rest(message, needed - 1)]
        for i, test in checks:
            if not test(values[i]):
                return None
        return Match(fields={name: values[i] for i, name in names}, positions=values)

    return match_delimited
