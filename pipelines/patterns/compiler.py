"""Compile an EventBridge event pattern into sub-rules of field tests.

A pattern compiles to one or more *sub-rules* (``$or`` multiplies them out, as
event-ruler does). A sub-rule maps each flattened field name (keys joined with
``.``) to a ``FieldTest``: the field matches when one of its conditions holds
for one of its values. A sub-rule matches when all its fields match; the
pattern matches when any sub-rule does.

Every rejection raises ``PatternError`` with event-ruler's wording and the JSON
path of the offending part.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from pipelines.errors import PatternError
from pipelines.event import reject_json_constant
from pipelines.patterns.cidr import looks_like_ip, parse_cidr, single_address
from pipelines.patterns.conditions import (
    AnythingBut,
    Cidr,
    Condition,
    EqualsIgnoreCase,
    Exact,
    Exists,
    Numeric,
    Prefix,
    Suffix,
    Wildcard,
    as_double,
)
from pipelines.patterns.wildcard import STAR, Token, check_complexity, parse_wildcard

#: EventBridge's default quota for the size of an event pattern, in characters.
DEFAULT_MAX_PATTERN_LENGTH = 2048
#: event-ruler refuses a sub-rule with more field paths than this.
MAX_FIELDS_PER_SUBRULE = 256
#: ``$or`` multiplies sub-rules; past this many we refuse rather than explode.
MAX_SUBRULES = 1024

_RESERVED_IN_OR = frozenset(
    {
        "exactly",
        "equals-ignore-case",
        "prefix",
        "suffix",
        "anything-but",
        "exists",
        "wildcard",
        "numeric",
        "cidr",
        "=",
        "<",
        "<=",
        ">",
        ">=",
        "regex",
        "not-wildcard",
        "not-equals-ignore-case",
        "date-after",
        "date-on-or-after",
        "date-before",
        "date-on-or-before",
        "in-date-range",
        "ip-address-in-range",
        "ip-address-not-in-range",
    }
)
_NUMERIC_OPERATORS = ("=", "<", "<=", ">", ">=")
_MATCH_TYPES = frozenset(
    {
        "exactly",
        "prefix",
        "suffix",
        "equals-ignore-case",
        "wildcard",
        "anything-but",
        "numeric",
        "exists",
        "cidr",
    }
)


@dataclass(frozen=True, slots=True)
class FieldTest:
    """The conditions on one flattened field; any one of them may hold."""

    path: str
    conditions: tuple[Condition, ...]
    #: The conditions a present value can satisfy (all but exists:false).
    value_conditions: tuple[Condition, ...] = field(init=False, repr=False, compare=False)
    #: True when ``{"exists": false}`` is among the conditions.
    absent_ok: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Derived once: the matcher consults both for every candidate.
        absent = tuple(c for c in self.conditions if type(c) is Exists and not c.present)
        values = tuple(c for c in self.conditions if c not in absent)
        object.__setattr__(self, "value_conditions", values)
        object.__setattr__(self, "absent_ok", bool(absent))


SubRule = tuple[FieldTest, ...]


# -- paths ---------------------------------------------------------------------------

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def child_path(path: str, key: str | int) -> str:
    """A JSON path one step below ``path`` (``$.detail.state[0]``)."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key)}]"


class PatternNumber(Decimal):
    """A number from pattern text: exact, and remembering how it was written."""

    text: str

    def __new__(cls, text: str) -> PatternNumber:
        number = super().__new__(cls, text)
        number.text = text
        return number


class PatternObject(dict[str, Any]):
    """A JSON object of pattern text that keeps every key, duplicates included.

    event-ruler reads a pattern as a stream, so ``{"d": {"a": [1]}, "d": {"b":
    [2]}}`` asks for both ``d.a`` and ``d.b``; as a dict the last key wins.
    """

    pairs: list[tuple[str, Any]]

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, Any]]) -> PatternObject:
        obj = cls(pairs)
        obj.pairs = pairs
        return obj


def _items(obj: dict[str, Any]) -> list[tuple[str, Any]]:
    pairs = getattr(obj, "pairs", None)
    return pairs if pairs is not None else list(obj.items())


def _token(value: Any) -> str:
    """How a JSON value is spelled in an error message."""
    if isinstance(value, str):
        return value
    if isinstance(value, PatternNumber):
        return value.text
    if isinstance(value, Decimal):
        return str(value)
    return _spelled(value)


def _spelled(value: Any) -> str:
    """A JSON value as json.dumps spells it, numbers of pattern text as they
    were written (json.dumps cannot take them: a nested array of numbers in
    an error message would raise instead of being shown)."""
    if isinstance(value, PatternNumber):
        return value.text
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_spelled(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {_spelled(v)}" for k, v in _items(value)) + "}"
    return json.dumps(value)


# -- parsing ---------------------------------------------------------------------------


def load_pattern(
    pattern: str | bytes | dict[str, Any], max_length: int
) -> tuple[str, dict[str, Any]]:
    """The pattern's JSON text and its parse (exact numbers, every key kept).

    Enforces the length quota.
    """
    if isinstance(pattern, bytes | bytearray):
        try:
            pattern = pattern.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PatternError(f"Pattern is not UTF-8 text: {exc}") from None
    if isinstance(pattern, dict):
        # Through JSON text, so a dict means exactly what its JSON would.
        try:
            pattern = json.dumps(
                pattern, separators=(",", ":"), ensure_ascii=False, allow_nan=False
            )
        except (ValueError, TypeError, RecursionError) as exc:
            raise PatternError(f"Pattern is not JSON data: {exc}") from None
    if not isinstance(pattern, str):
        raise PatternError("Filter is not an object")
    text = pattern
    if len(text) > max_length:
        raise PatternError(
            f"Event pattern is {len(text)} characters long; the limit is {max_length}"
        )
    try:
        parsed = json.loads(
            text,
            parse_float=PatternNumber,
            parse_constant=reject_json_constant,
            object_pairs_hook=PatternObject.from_pairs,
        )
    except (ValueError, RecursionError) as exc:
        raise PatternError(f"Pattern is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise PatternError("Filter is not an object")
    return text, parsed


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def comparable(value: Any, path: str) -> float:
    """A pattern number as the double event-ruler compares, or a PatternError.

    Current event-ruler accepts any finite double whose shortest decimal form
    equals the number written, so no precision is silently lost.
    """
    try:
        exact = Decimal(value) if not isinstance(value, float) else Decimal(repr(value))
    except (InvalidOperation, ValueError):
        raise PatternError(f"Cannot compare number : {_token(value)}", path) from None
    if not exact.is_finite() or not -400 < exact.adjusted() < 400:
        # Past the double range (or below its precision): no need to build the number.
        raise PatternError(f"Cannot compare number : {_token(value)}", path)
    double = float(exact)
    if math.isnan(double) or math.isinf(double) or Decimal(repr(double)) != exact:
        raise PatternError(f"Cannot compare number : {_token(value)}", path)
    return double


def _exact_number(value: Any) -> float:
    """Numbers in a match list never fail; past the double range they saturate to
    infinity and compare equal to every such number (event-ruler compares their text)."""
    try:
        return as_double(value) if not isinstance(value, Decimal) else float(value)
    except (OverflowError, ValueError):
        return math.inf if value > 0 else -math.inf


class _Compiler:
    def __init__(self) -> None:
        self.wildcards: dict[str, set[tuple[Token, ...]]] = {}

    # Structure ------------------------------------------------------------------------

    def compile(self, pattern: dict[str, Any]) -> tuple[SubRule, ...]:
        branches = self.apply_object(pattern, "", "$", [{}], in_or=False)
        for field_path, patterns in self.wildcards.items():
            check_complexity(patterns, field_path)
        subrules = []
        for branch in branches:
            if len(branch) > MAX_FIELDS_PER_SUBRULE:
                raise PatternError(
                    f"Size of rule exceeds max value of {MAX_FIELDS_PER_SUBRULE} fields"
                )
            subrules.append(tuple(branch[name] for name in sorted(branch)))
        return tuple(subrules)

    def apply_object(
        self,
        obj: dict[str, Any],
        prefix: str,
        path: str,
        branches: list[dict[str, FieldTest]],
        *,
        in_or: bool,
    ) -> list[dict[str, FieldTest]]:
        if not obj:
            raise PatternError("Empty objects are not allowed", path)
        for key, value in _items(obj):
            here = child_path(path, key)
            if key == "$or":
                branches = self.apply_or(value, prefix, here, branches)
                continue
            if in_or and key in _RESERVED_IN_OR:
                raise PatternError(
                    f"{key} is Ruler reserved fieldName which cannot be used inside $or.", here
                )
            name = f"{prefix}.{key}" if prefix else key
            if isinstance(value, dict):
                branches = self.apply_object(value, name, here, branches, in_or=in_or)
            elif isinstance(value, list):
                test = FieldTest(name, self.match_list(value, name, here))
                # As in event-ruler, a path given again replaces the earlier test.
                for branch in branches:
                    branch[name] = test
            else:
                raise PatternError(f'"{key}" must be an object or an array', here)
        return branches

    def apply_or(
        self, value: Any, prefix: str, path: str, branches: list[dict[str, FieldTest]]
    ) -> list[dict[str, FieldTest]]:
        if not isinstance(value, list):
            raise PatternError("It must be an Array followed with $or.", path)
        for index, element in enumerate(value):
            if not isinstance(element, dict):
                raise PatternError(
                    "Only JSON object is allowed in array of $or relationship.",
                    child_path(path, index),
                )
        if len(value) < 2:
            raise PatternError("There must have at least 2 Objects in $or relationship.", path)
        if len(branches) * len(value) > MAX_SUBRULES:
            raise PatternError(
                f"Rule is too complex - $or expands to more than {MAX_SUBRULES} alternatives",
                path,
            )
        expanded: list[dict[str, FieldTest]] = []
        for index, element in enumerate(value):
            copies = [dict(branch) for branch in branches]
            expanded.extend(
                self.apply_object(element, prefix, child_path(path, index), copies, in_or=True)
            )
        if len(expanded) > MAX_SUBRULES:
            raise PatternError(
                f"Rule is too complex - $or expands to more than {MAX_SUBRULES} alternatives",
                path,
            )
        return expanded

    # Match lists -------------------------------------------------------------------

    def match_list(self, items: list[Any], name: str, path: str) -> tuple[Condition, ...]:
        if not items:
            raise PatternError("Empty arrays are not allowed", path)
        conditions: list[Condition] = []
        for index, item in enumerate(items):
            here = child_path(path, index)
            if isinstance(item, bool) or item is None:
                conditions.append(Exact(item))
            elif isinstance(item, str):
                address = single_address(item) if looks_like_ip(item) else None
                conditions.append(Exact(item, address))
            elif _is_number(item):
                conditions.append(Exact(_exact_number(item)))
            elif isinstance(item, dict):
                conditions.append(self.operator(item, name, here))
            else:
                raise PatternError("Match value must be String, number, true, false, or null", here)
        return tuple(dict.fromkeys(conditions))

    def operator(self, obj: dict[str, Any], name: str, path: str) -> Condition:
        if not obj:
            raise PatternError("Match expression name not found", path)
        items = _items(obj)
        kind, value = items[0]
        here = child_path(path, kind)
        if kind not in _MATCH_TYPES:
            raise PatternError(f"Unrecognized match type {kind}", here)
        condition = self.operand(kind, value, name, here)
        if len(items) > 1:
            if kind in ("numeric", "anything-but"):
                raise PatternError("Too many elements in numeric expression", path)
            raise PatternError("Only one key allowed in match expression", path)
        return condition

    def operand(self, kind: str, value: Any, name: str, path: str) -> Condition:
        if kind == "exactly":
            if not isinstance(value, str):
                raise PatternError("exact match pattern must be a string", path)
            return Exact(value)
        if kind in ("prefix", "suffix"):
            return self.affix(kind, value, path)
        if kind == "equals-ignore-case":
            if not isinstance(value, str):
                raise PatternError("equals-ignore-case match pattern must be a string", path)
            return EqualsIgnoreCase(value)
        if kind == "wildcard":
            if not isinstance(value, str):
                raise PatternError("wildcard match pattern must be a string", path)
            return self.wildcard(value, name, path)
        if kind == "cidr":
            if not isinstance(value, str):
                # event-ruler's own wording for this case.
                raise PatternError("prefix match pattern must be a string", path)
            return Cidr(parse_cidr(value, path))
        if kind == "exists":
            if not isinstance(value, bool):
                raise PatternError("exists match pattern must be either true or false.", path)
            return Exists(value)
        if kind == "numeric":
            return self.numeric(value, path)
        return self.anything_but(value, name, path)

    def affix(self, kind: str, value: Any, path: str) -> Condition:
        make = Prefix if kind == "prefix" else Suffix
        if isinstance(value, str):
            return make(value)
        if not isinstance(value, dict):
            raise PatternError(f"{kind} match pattern must be a string", path)
        label = kind.capitalize()
        if not value:
            raise PatternError(f"{label} expression name not found", path)
        items = _items(value)
        inner, text = items[0]
        if inner != "equals-ignore-case":
            raise PatternError(f"Unsupported {kind} pattern: {inner}", child_path(path, inner))
        if not isinstance(text, str):
            raise PatternError(
                "equals-ignore-case match pattern must be a string", child_path(path, inner)
            )
        if len(items) > 1:
            raise PatternError("Only one key allowed in match expression", path)
        return make(text, ignore_case=True)

    def wildcard(self, text: str, name: str, path: str) -> Condition:
        tokens = parse_wildcard(text, path)
        if STAR not in tokens:
            return Exact("".join(t for t in tokens if t is not STAR))
        self.wildcards.setdefault(name, set()).add(tokens)
        return Wildcard(tokens)

    # numeric -----------------------------------------------------------------------

    def numeric(self, value: Any, path: str) -> Numeric:
        if not isinstance(value, list):
            raise PatternError("Value of numeric must be an array.", path)
        operator = value[0] if value else "]"
        if not value or not isinstance(operator, str):
            raise PatternError(f"Invalid member in numeric match: {_token(operator)}", path)
        if operator not in _NUMERIC_OPERATORS:
            raise PatternError(f"Unrecognized numeric range operator: {operator}", path)
        first = self.bound(value, 1, operator, path)
        if operator in ("=", "<", "<="):
            if len(value) > 2:
                raise PatternError("Too many elements in numeric expression", path)
            if operator == "=":
                return Numeric(first, True, first, True)
            return Numeric(high=first, high_inclusive=operator == "<=")
        low_inclusive = operator == ">="
        if len(value) == 2:
            return Numeric(first, low_inclusive)
        upper = value[2]
        if not isinstance(upper, str):
            raise PatternError(f"Bad value in numeric range: {_token(upper)}", path)
        if upper not in ("<", "<="):
            raise PatternError(f"Bad numeric range operator: {upper}", path)
        second = self.bound(value, 3, upper, path)
        if len(value) > 4:
            raise PatternError("Too many terms in numeric range expression", path)
        if first >= second:
            raise PatternError("Bottom must be less than top", path)
        return Numeric(first, low_inclusive, second, upper == "<=")

    def bound(self, value: list[Any], index: int, operator: str, path: str) -> float:
        label = "equals" if operator == "=" else operator
        if index >= len(value) or not _is_number(value[index]):
            raise PatternError(f"Value of {label} must be numeric", path)
        return comparable(value[index], child_path(path, index))

    # anything-but ------------------------------------------------------------------

    def anything_but(self, value: Any, name: str, path: str) -> AnythingBut:
        if isinstance(value, str):
            return AnythingBut("strings", strings=frozenset([value]))
        if _is_number(value):
            return AnythingBut("numbers", numbers=frozenset([comparable(value, path)]))
        if isinstance(value, list):
            return self.anything_but_list(value, path)
        if not isinstance(value, dict):
            raise PatternError(
                "Value of anything-but must be an array or single string/number value.", path
            )
        if not value:
            raise PatternError("Anything-But expression name not found", path)
        items = _items(value)
        kind, operand = items[0]
        here = child_path(path, kind)
        if kind == "equals-ignore-case":
            texts = self.ignore_case_list(operand, here)
            condition = AnythingBut("ignore-case", strings=frozenset(texts))
        elif kind in ("prefix", "suffix"):
            texts = self.affix_list(operand, here)
            condition = AnythingBut(kind, strings=frozenset(texts))
        elif kind == "wildcard":
            condition = self.anything_but_wildcard(operand, name, here)
        else:
            raise PatternError(f"Unsupported anything-but pattern: {kind}", here)
        if len(items) > 1:
            raise PatternError("Too many elements in numeric expression", path)
        return condition

    def anything_but_list(self, items: list[Any], path: str) -> AnythingBut:
        for index, item in enumerate(items):
            if not isinstance(item, str) and not _is_number(item):
                raise PatternError(
                    "Inside anything but list, start|null|boolean is not supported.",
                    child_path(path, index),
                )
        strings = [item for item in items if isinstance(item, str)]
        if not items or (strings and len(strings) != len(items)):
            raise PatternError(
                "Inside anything but list, either all values are number or string, "
                "mixed type is not supported",
                path,
            )
        if strings:
            return AnythingBut("strings", strings=frozenset(strings))
        numbers = frozenset(
            comparable(item, child_path(path, index)) for index, item in enumerate(items)
        )
        return AnythingBut("numbers", numbers=numbers)

    def ignore_case_list(self, operand: Any, path: str) -> list[str]:
        message = (
            "Inside anything-but/equals-ignore-case list, number|start|null|boolean "
            "is not supported."
        )
        if isinstance(operand, str):
            return [operand]
        if _is_number(operand):
            raise PatternError(message, path)
        if not isinstance(operand, list):
            raise PatternError(
                "Value of anything-but must be an array or single string/number value.", path
            )
        for index, item in enumerate(operand):
            if not isinstance(item, str):
                raise PatternError(message, child_path(path, index))
        return operand

    def affix_list(self, operand: Any, path: str) -> list[str]:
        if isinstance(operand, dict | bool) or operand is None:
            raise PatternError(
                "Value of anything-but must be an array or single string/number value.", path
            )
        items = operand if isinstance(operand, list) else [operand]
        for index, item in enumerate(items):
            here = child_path(path, index) if isinstance(operand, list) else path
            if not isinstance(item, str):
                raise PatternError("prefix/suffix match pattern must be a string", here)
            if item == "":
                raise PatternError("Null prefix/suffix not allowed", here)
        return items

    def anything_but_wildcard(self, operand: Any, name: str, path: str) -> AnythingBut:
        items = operand if isinstance(operand, list) else [operand]
        patterns = []
        for index, item in enumerate(items):
            here = child_path(path, index) if isinstance(operand, list) else path
            if not isinstance(item, str):
                raise PatternError("wildcard match pattern must be a string", here)
            tokens = parse_wildcard(item, here)
            if STAR in tokens:
                self.wildcards.setdefault(name, set()).add(tokens)
            patterns.append(tokens)
        return AnythingBut("wildcard", patterns=tuple(dict.fromkeys(patterns)))


def compile_subrules(pattern: dict[str, Any]) -> tuple[SubRule, ...]:
    """The sub-rules of an already parsed pattern (see ``load_pattern``)."""
    return _Compiler().compile(pattern)
