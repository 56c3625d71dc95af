"""Choice rules evaluated against a state's input (JSONPath mode).

A comparison whose Variable (or ``...Path`` operand) selects nothing is a
States.Runtime failure, except for IsPresent, which answers false; a value of
the wrong type makes a comparison false rather than an error, as AWS does
(``StringEquals`` on a number is simply not equal).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from plugins.states import paths
from plugins.states.definition import Comparison, Compound, Condition, Rule
from plugins.states.errors import StateFault

Json = Any

_TIMESTAMP = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
)


def parse_timestamp(text: Json) -> datetime | None:
    """An RFC 3339 timestamp (upper-case ``T``, a ``Z`` or an offset), else None."""
    if not isinstance(text, str):
        return None
    match = _TIMESTAMP.match(text)
    if match is None:
        return None
    fraction = (match.group(7) or "")[:7].ljust(7, "0")[1:] if match.group(7) else ""
    zone = "+00:00" if match.group(8) == "Z" else match.group(8)
    base = text[: match.start(7)] if match.group(7) else text[: match.start(8)]
    try:
        return datetime.fromisoformat(f"{base}{'.' + fraction if fraction else ''}{zone}")
    except ValueError:
        return None


def first_match(
    rules: tuple[Rule, ...],
    data: Json,
    context: Json = None,
    variables: Mapping[str, Json] | None = None,
) -> Rule | None:
    """The first top-level rule that holds for ``data`` (its Next is where to go), or None.

    ``context`` is the context object, for Variables (and ...Path operands)
    starting with ``$$``; ``variables`` the workflow variables, for ``$name``.
    """
    for rule in rules:
        if holds(rule, data, context, variables):
            return rule
    return None


def holds(
    rule: Rule, data: Json, context: Json = None, variables: Mapping[str, Json] | None = None
) -> bool:
    if isinstance(rule, Compound):
        if rule.operator == "And":
            return all(holds(inner, data, context, variables) for inner in rule.rules)
        if rule.operator == "Or":
            return any(holds(inner, data, context, variables) for inner in rule.rules)
        return not holds(rule.rules[0], data, context, variables)
    if isinstance(rule, Condition):
        raise TypeError("a JSONata Condition is evaluated by the interpreter, not here")
    return _compare(rule, data, context, variables)


_MISSING = object()


def _select(path: str, data: Json, context: Json, variables: Mapping[str, Json] | None) -> Json:
    parsed = paths.parse(path)
    try:
        return parsed.find_in(data, context, variables)
    except paths.PathError:
        return _MISSING


def _compare(
    rule: Comparison, data: Json, context: Json, variables: Mapping[str, Json] | None
) -> bool:
    operator = rule.operator
    value = _select(rule.variable, data, context, variables)
    if operator == "IsPresent":
        return (value is not _MISSING) == bool(rule.value)
    if value is _MISSING:
        raise StateFault(
            f"Invalid path '{rule.variable}': The choice state's condition path references "
            "an invalid value."
        )
    if operator.startswith("Is"):
        return _is(operator, value) == bool(rule.value)
    expected = rule.value
    if operator.endswith("Path"):
        operator = operator[: -len("Path")]
        expected = _select(rule.value, data, context, variables)
        if expected is _MISSING:
            raise StateFault(
                f"Invalid path '{rule.value}': The choice state's condition path references "
                "an invalid value."
            )
    return _test(operator, value, expected)


def _is_number(value: Json) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is(operator: str, value: Json) -> bool:
    if operator == "IsNull":
        return value is None
    if operator == "IsNumeric":
        return _is_number(value)
    if operator == "IsString":
        return isinstance(value, str)
    if operator == "IsBoolean":
        return isinstance(value, bool)
    return parse_timestamp(value) is not None  # IsTimestamp


def _test(operator: str, value: Json, expected: Json) -> bool:
    if operator.startswith("String"):
        if not isinstance(value, str) or not isinstance(expected, str):
            return False
        if operator == "StringMatches":
            return string_matches(value, expected)
        return _order(operator[len("String") :], value, expected)
    if operator.startswith("Numeric"):
        if not _is_number(value) or not _is_number(expected):
            return False
        return _order(operator[len("Numeric") :], value, expected)
    if operator == "BooleanEquals":
        return isinstance(value, bool) and isinstance(expected, bool) and value == expected
    # Timestamp...
    left, right = parse_timestamp(value), parse_timestamp(expected)
    if left is None or right is None:
        return False
    return _order(operator[len("Timestamp") :], left, right)


def _order(relation: str, a: Any, b: Any) -> bool:
    if relation == "Equals":
        return bool(a == b)
    if relation == "LessThan":
        return bool(a < b)
    if relation == "GreaterThan":
        return bool(a > b)
    if relation == "LessThanEquals":
        return bool(a <= b)
    return bool(a >= b)  # GreaterThanEquals


def string_matches(value: str, pattern: str) -> bool:
    """StringMatches: ``*`` matches any run of characters; ``\\*`` and ``\\\\`` are literal."""
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if char == "*" else re.escape(char))
        i += 1
    return re.fullmatch("".join(out), value, re.DOTALL) is not None
