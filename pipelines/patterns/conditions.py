"""The conditions a pattern puts on one field's values, and how each tests a value.

A value here is a leaf of the event: ``str``, ``int``, ``float``, ``bool`` or
``None``. Strings never satisfy numeric conditions and numbers never satisfy
string conditions, as in event-ruler.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pipelines.patterns import ignorecase
from pipelines.patterns.cidr import Network, in_network
from pipelines.patterns.wildcard import Token, wildcard_matcher


def is_number(value: Any) -> bool:
    return type(value) is int or type(value) is float


def as_double(value: int | float) -> float:
    """A JSON number as the double EventBridge compares (huge ints saturate)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


@dataclass(frozen=True, slots=True)
class Exact:
    """Equality with a string, a number (numerically), true, false or null."""

    value: str | float | bool | None
    #: A string that is an IP address also matches other spellings of it.
    address: Network | None = None

    def test(self, value: Any) -> bool:
        expected = self.value
        if type(expected) is str:
            if type(value) is not str:
                return False
            if value == expected:
                return True
            return self.address is not None and in_network(value, self.address)
        if type(expected) is float:
            return is_number(value) and as_double(value) == expected
        return value is expected


@dataclass(frozen=True, slots=True)
class Prefix:
    text: str
    ignore_case: bool = False

    def test(self, value: Any) -> bool:
        if type(value) is not str:
            return False
        if self.ignore_case:
            return ignorecase.starts_with(self.text, value)
        return value.startswith(self.text)


@dataclass(frozen=True, slots=True)
class Suffix:
    text: str
    ignore_case: bool = False

    def test(self, value: Any) -> bool:
        if type(value) is not str:
            return False
        if self.ignore_case:
            return ignorecase.ends_with(self.text, value)
        return value.endswith(self.text)


@dataclass(frozen=True, slots=True)
class EqualsIgnoreCase:
    text: str

    def test(self, value: Any) -> bool:
        return type(value) is str and ignorecase.equals(self.text, value)


@dataclass(frozen=True, slots=True)
class Wildcard:
    tokens: tuple[Token, ...]

    def test(self, value: Any) -> bool:
        return type(value) is str and wildcard_matcher(self.tokens)(value)


@dataclass(frozen=True, slots=True)
class Numeric:
    """A numeric range; ``=`` is the closed range [x, x]."""

    low: float = -math.inf
    low_inclusive: bool = False
    high: float = math.inf
    high_inclusive: bool = False

    def test(self, value: Any) -> bool:
        if not is_number(value):
            return False
        number = as_double(value)
        if not math.isfinite(number):
            return False  # event-ruler cannot compare numbers past the double range
        if number < self.low or (number == self.low and not self.low_inclusive):
            return False
        return number < self.high or (number == self.high and self.high_inclusive)


@dataclass(frozen=True, slots=True)
class Exists:
    present: bool

    def test(self, value: Any) -> bool:
        # Reached only when a leaf value is there; absence is handled by the evaluator.
        return self.present


@dataclass(frozen=True, slots=True)
class Cidr:
    network: Network

    def test(self, value: Any) -> bool:
        return type(value) is str and in_network(value, self.network)


@dataclass(frozen=True, slots=True)
class AnythingBut:
    """Any present value except the excluded ones.

    ``kind`` is ``strings``, ``numbers``, ``ignore-case``, ``prefix``,
    ``suffix`` or ``wildcard``. A string exclusion never excludes a number and
    a number exclusion never excludes a string; null, true and false are never
    excluded.
    """

    kind: str
    strings: frozenset[str] = frozenset()
    numbers: frozenset[float] = frozenset()
    patterns: tuple[tuple[Token, ...], ...] = field(default=())

    def excludes(self, value: Any) -> bool:
        kind = self.kind
        if kind == "numbers":
            return is_number(value) and as_double(value) in self.numbers
        if type(value) is not str:
            return False
        if kind == "strings":
            return value in self.strings
        if kind == "ignore-case":
            return any(ignorecase.equals(text, value) for text in self.strings)
        if kind == "prefix":
            return any(value.startswith(text) for text in self.strings)
        if kind == "suffix":
            return any(value.endswith(text) for text in self.strings)
        return any(wildcard_matcher(tokens)(value) for tokens in self.patterns)

    def test(self, value: Any) -> bool:
        return not self.excludes(value)


Condition = (
    Exact | Prefix | Suffix | EqualsIgnoreCase | Wildcard | Numeric | Exists | Cidr | AnythingBut
)
