"""Why an event does not match a pattern: every failing field of every branch.

A pattern with ``$or`` is several *branches* (the sub-rules the compiler
multiplies out); the event matches when one branch holds. ``explain`` goes
through every branch and names, for each, the fields whose conditions failed:
the field's path, the conditions the pattern puts on it (in the pattern's
own syntax), the values the event has there, and why they fail. It is the
reference evaluator's verdict (``evaluate.subrule_matches``), field by field,
so it never disagrees with ``Pattern.matches``.

The answer is plain data (``Explanation.to_json``): ``pipelines test-pattern
--explain`` prints it, and the web console shows it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipelines.event import dump_json
from pipelines.patterns.cidr import Network
from pipelines.patterns.compiler import FieldTest, SubRule
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
)
from pipelines.patterns.evaluate import field_holds, leaves, subrule_matches
from pipelines.patterns.wildcard import Token

#: Why a field failed (``FieldFailure.reason``).
MISSING = "missing"  # the event has no value there
NO_VALUE_MATCHES = "no-value-matches"  # values there, none satisfies a condition
PRESENT = "present"  # {"exists": false}, and the event has the field
ARRAYS = "array-elements"  # each field holds, but not within one element of an array


@dataclass(frozen=True, slots=True)
class FieldFailure:
    """One field of a branch that the event fails."""

    #: The field's dotted path in the event (``detail.state``).
    path: str
    #: The conditions the pattern puts on it, as the pattern writes them.
    conditions: tuple[Any, ...]
    #: The values the event has at that path (empty: none).
    values: tuple[Any, ...]
    #: ``missing``, ``no-value-matches``, ``present`` or ``array-elements``.
    reason: str

    @property
    def message(self) -> str:
        """The failure as one sentence."""
        wanted = _listed(self.conditions)
        if self.reason == MISSING:
            return f"{self.path}: the event has no value here; the pattern wants {wanted}"
        if self.reason == PRESENT:
            return f"{self.path}: present ({_listed(self.values)}), but the pattern wants it absent"
        if self.reason == ARRAYS:
            return (
                f"{self.path}: its matching values are not in the same array element"
                " as the other fields' matching values"
            )
        return f"{self.path}: {_listed(self.values)} satisfies none of {wanted}"

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "conditions": list(self.conditions),
            "values": list(self.values),
            "reason": self.reason,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class Branch:
    """One branch of the pattern (the whole pattern when it has no ``$or``)."""

    #: Each field the branch tests, with its conditions in the pattern's syntax.
    fields: Mapping[str, tuple[Any, ...]]
    matched: bool
    failures: tuple[FieldFailure, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "fields": {path: list(conditions) for path, conditions in self.fields.items()},
            "matched": self.matched,
            "failures": [failure.to_json() for failure in self.failures],
        }


@dataclass(frozen=True, slots=True)
class Explanation:
    """The verdict of a pattern on an event, branch by branch."""

    matched: bool
    branches: tuple[Branch, ...]

    def to_json(self) -> dict[str, Any]:
        return {"matched": self.matched, "branches": [b.to_json() for b in self.branches]}

    def lines(self) -> list[str]:
        """The explanation as text, a line per failure under its branch."""
        if self.matched:
            held = [i for i, branch in enumerate(self.branches, 1) if branch.matched]
            return [f"matched (branch {', '.join(map(str, held))} of {len(self.branches)})"]
        lines = ["not matched"]
        several = len(self.branches) > 1
        for number, branch in enumerate(self.branches, 1):
            indent = "  "
            if several:
                lines.append(f"  branch {number} of {len(self.branches)}:")
                indent = "    "
            lines += [f"{indent}{failure.message}" for failure in branch.failures]
        return lines


def explain_subrules(subrules: tuple[SubRule, ...], event: Mapping[str, Any]) -> Explanation:
    """Each branch's verdict on ``event`` and its failing fields."""
    branches = tuple(_branch(subrule, event) for subrule in subrules)
    return Explanation(any(branch.matched for branch in branches), branches)


def _branch(subrule: SubRule, event: Mapping[str, Any]) -> Branch:
    fields = {test.path: describe_conditions(test) for test in subrule}
    matched = subrule_matches(subrule, event)
    failures: list[FieldFailure] = []
    if not matched:
        for test in subrule:
            failure = _field_failure(test, event)
            if failure is not None:
                failures.append(failure)
        if not failures:
            # Every field holds alone, so the values that do come from
            # different elements of an array (array consistency).
            failures = [
                FieldFailure(test.path, fields[test.path], _values(test, event), ARRAYS)
                for test in subrule
                if _values(test, event)
            ]
    return Branch(fields, matched, tuple(failures))


def _values(test: FieldTest, event: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(value for value, _ in leaves(event, test.path))


def _field_failure(test: FieldTest, event: Mapping[str, Any]) -> FieldFailure | None:
    values = _values(test, event)
    if field_holds(test, list(values)):
        return None
    conditions = describe_conditions(test)
    if not values:
        return FieldFailure(test.path, conditions, values, MISSING)
    if not test.value_conditions:  # only {"exists": false}
        return FieldFailure(test.path, conditions, values, PRESENT)
    return FieldFailure(test.path, conditions, values, NO_VALUE_MATCHES)


def describe_conditions(test: FieldTest) -> tuple[Any, ...]:
    """A field's conditions as the pattern writes them (``"a"``, ``{"prefix": "x"}``)."""
    return tuple(describe_condition(condition) for condition in test.conditions)


def describe_condition(condition: Condition) -> Any:
    """One condition in pattern syntax."""
    match condition:
        case Exact(value=value):
            return _number(value) if isinstance(value, float) else value
        case Prefix(text=text, ignore_case=True):
            return {"prefix": {"equals-ignore-case": text}}
        case Prefix(text=text):
            return {"prefix": text}
        case Suffix(text=text, ignore_case=True):
            return {"suffix": {"equals-ignore-case": text}}
        case Suffix(text=text):
            return {"suffix": text}
        case EqualsIgnoreCase(text=text):
            return {"equals-ignore-case": text}
        case Wildcard(tokens=tokens):
            return {"wildcard": _wildcard_text(tokens)}
        case Numeric():
            return {"numeric": _numeric(condition)}
        case Exists(present=present):
            return {"exists": present}
        case Cidr(network=network):
            return {"cidr": _cidr_text(network)}
        case AnythingBut():
            return {"anything-but": _anything_but(condition)}


def _number(value: float) -> int | float:
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def _numeric(condition: Numeric) -> list[Any]:
    low, high = condition.low, condition.high
    if low == high:
        return ["=", _number(low)]
    parts: list[Any] = []
    if low != float("-inf"):
        parts += [">=" if condition.low_inclusive else ">", _number(low)]
    if high != float("inf"):
        parts += ["<=" if condition.high_inclusive else "<", _number(high)]
    return parts


def _wildcard_text(tokens: tuple[Token, ...]) -> str:
    return "".join(
        "*" if token is None else ("\\" + token if token in ("*", "\\") else token)
        for token in tokens
    )


def _cidr_text(network: Network) -> str:
    address = network.prefix << (network.width - network.bits)
    kind = ipaddress.IPv4Address if network.version == 4 else ipaddress.IPv6Address
    shown = kind(address)
    return f"{shown}/{network.bits}"


def _anything_but(condition: AnythingBut) -> Any:
    kind = condition.kind
    if kind == "numbers":
        numbers = sorted(_number(float(n)) for n in condition.numbers)
        return numbers[0] if len(numbers) == 1 else numbers
    if kind == "wildcard":
        texts = [_wildcard_text(tokens) for tokens in condition.patterns]
        return {"wildcard": texts[0] if len(texts) == 1 else texts}
    strings = sorted(condition.strings)
    shown: Any = strings[0] if len(strings) == 1 else strings
    if kind == "strings":
        return shown
    if kind == "ignore-case":
        return {"equals-ignore-case": shown}
    return {kind: shown}


def _listed(items: tuple[Any, ...]) -> str:
    def one(item: Any) -> str:
        return dump_json(item).decode()

    if len(items) == 1:
        return one(items[0])
    return "[" + ", ".join(one(item) for item in items) + "]"
