"""Per-field indexes: from one event value to the rule slots it satisfies.

A *slot* is the number of a sub-rule whose anchor field (see ``matcher``) is
this field. Each anchored field has a ``FieldIndex`` that turns a value into
the slots it satisfies without looking at slots it cannot: a dict lookup for exact
values, per-length dicts for prefixes and suffixes, precomputed elementary
intervals for numeric ranges, per-mask dicts for CIDR blocks. Only wildcards
without a literal prefix or suffix, and ``anything-but`` conditions (which
match unless excluded), are scanned.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from typing import Any

from pipelines.patterns.cidr import Network, parse_ip
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
from pipelines.patterns.ignorecase import ends_with, equals, lookup_key, starts_with
from pipelines.patterns.wildcard import Token, literal_prefix, literal_suffix, wildcard_matcher

Slot = int
Hits = list[Slot]
Probe = Callable[[Any, Hits], None]
_NONE: frozenset[int] = frozenset()
_INF = math.inf

# Keys for true, false and null: Python's True == 1 would collide with the number 1.
TRUE_KEY = ("true",)
FALSE_KEY = ("false",)
NULL_KEY = ("null",)


def other_key(value: Any) -> tuple[str]:
    return TRUE_KEY if value is True else FALSE_KEY if value is False else NULL_KEY


class _Affixes:
    """Prefixes (or suffixes) grouped by length: one dict lookup per distinct length."""

    def __init__(self, suffix: bool) -> None:
        self.suffix = suffix
        self.by_length: dict[int, dict[str, list[Slot]]] = {}

    def add(self, text: str, slot: Slot) -> None:
        self.by_length.setdefault(len(text), {}).setdefault(text, []).append(slot)

    def probe(self) -> Callable[[str, Hits], None]:
        groups = sorted(self.by_length.items())
        if self.suffix:

            def probe_suffix(value: str, hits: Hits) -> None:
                size = len(value)
                for length, table in groups:
                    if length > size:
                        return
                    found = table.get(value[size - length :])
                    if found:
                        hits.extend(found)

            return probe_suffix

        def probe_prefix(value: str, hits: Hits) -> None:
            size = len(value)
            for length, table in groups:
                if length > size:
                    return
                found = table.get(value[:length])
                if found:
                    hits.extend(found)

        return probe_prefix


class _IgnoreCase:
    """equals-ignore-case, and prefix and suffix with it (see ``ignorecase``).

    ASCII patterns are looked up by the value's lower-case form; the rare
    non-ASCII patterns are tested one by one, and so is every pattern for the
    rare value whose lower-case form is not safe to look up.
    """

    def __init__(self) -> None:
        self.equal: dict[str, list[Slot]] = {}
        self.prefixes = _Affixes(suffix=False)
        self.suffixes = _Affixes(suffix=True)
        self.exotic: list[tuple[str, str, Slot]] = []
        self.every: list[tuple[str, str, Slot]] = []

    def add(self, kind: str, text: str, slot: Slot) -> None:
        self.every.append((kind, text, slot))
        if not text.isascii():
            self.exotic.append((kind, text, slot))
        elif kind == "equals":
            self.equal.setdefault(text.lower(), []).append(slot)
        else:
            (self.prefixes if kind == "prefix" else self.suffixes).add(text.lower(), slot)

    def probe(self) -> Callable[[str, Hits], None]:
        get = {key: tuple(slots) for key, slots in self.equal.items()}.get
        by_prefix = self.prefixes.probe() if self.prefixes.by_length else None
        by_suffix = self.suffixes.probe() if self.suffixes.by_length else None
        tests = {"equals": equals, "prefix": starts_with, "suffix": ends_with}
        exotic = [(tests[kind], text, slot) for kind, text, slot in self.exotic]
        every = [(tests[kind], text, slot) for kind, text, slot in self.every]

        def probe_ignore_case(value: str, hits: Hits) -> None:
            key = lookup_key(value)
            if key is None:
                hits.extend(slot for test, text, slot in every if test(text, value))
                return
            found = get(key)
            if found:
                hits.extend(found)
            if by_prefix is not None:
                by_prefix(key, hits)
            if by_suffix is not None:
                by_suffix(key, hits)
            if exotic:
                hits.extend(slot for test, text, slot in exotic if test(text, value))

        return probe_ignore_case


class _Ranges:
    """Numeric ranges as elementary intervals between the sorted bounds.

    Slot ``2k`` is the open gap below bound ``k``; ``2k + 1`` is bound ``k``
    itself. Each holds the tuple of rule slots whose range covers it, so a
    lookup is one bisection.
    """

    def __init__(self) -> None:
        self.ranges: list[tuple[Numeric, Slot]] = []

    def add(self, condition: Numeric, slot: Slot) -> None:
        self.ranges.append((condition, slot))

    def probe(self) -> Callable[[float, Hits], None]:
        bounds = sorted(
            {c.low for c, _ in self.ranges if not math.isinf(c.low)}
            | {c.high for c, _ in self.ranges if not math.isinf(c.high)}
        )
        covering: list[list[Slot]] = [[] for _ in range(2 * len(bounds) + 1)]
        for condition, slot in self.ranges:
            first = self._cell(bounds, condition.low, condition.low_inclusive, low=True)
            last = self._cell(bounds, condition.high, condition.high_inclusive, low=False)
            for cell in range(first, last + 1):
                covering[cell].append(slot)
        cells = [tuple(c) for c in covering]
        find = bisect.bisect_left
        count = len(bounds)

        def probe_range(value: float, hits: Hits) -> None:
            if not -_INF < value < _INF:
                return  # infinities and NaN compare with no range
            position = find(bounds, value)
            if position < count and bounds[position] == value:
                found = cells[2 * position + 1]
            else:
                found = cells[2 * position]
            if found:
                hits.extend(found)

        return probe_range

    @staticmethod
    def _cell(bounds: list[float], bound: float, inclusive: bool, *, low: bool) -> int:
        if math.isinf(bound):
            return 0 if low else 2 * len(bounds)
        position = bisect.bisect_left(bounds, bound)
        if inclusive:
            return 2 * position + 1
        return 2 * position + 2 if low else 2 * position


class _Wildcards:
    """Wildcards bucketed by their literal prefix, else suffix; the rest scanned."""

    def __init__(self) -> None:
        self.prefixed = _Affixes(suffix=False)
        self.suffixed = _Affixes(suffix=True)
        self.patterns: dict[tuple[Token, ...], int] = {}
        self.scanned: list[tuple[Token, ...]] = []
        self.slots: list[list[Slot]] = []

    def add(self, tokens: tuple[Token, ...], slot: Slot) -> None:
        number = self.patterns.get(tokens)
        if number is None:
            number = self.patterns[tokens] = len(self.slots)
            self.slots.append([])
            head, tail = literal_prefix(tokens), literal_suffix(tokens)
            marker = number
            if head:
                self.prefixed.add(head, marker)
            elif tail:
                self.suffixed.add(tail, marker)
            else:
                self.scanned.append(tokens)
        self.slots[number].append(slot)

    def matching(self) -> Callable[[str], list[int]]:
        """A function from a string to the numbers of the wildcards it matches."""
        regexes = [wildcard_matcher(tokens) for tokens in self.patterns]
        by_prefix = self.prefixed.probe()
        by_suffix = self.suffixed.probe()
        scanned = [self.patterns[tokens] for tokens in self.scanned]

        def match(value: str) -> list[int]:
            candidates: Hits = []
            by_prefix(value, candidates)
            by_suffix(value, candidates)
            candidates.extend(scanned)
            return [number for number in candidates if regexes[number](value)]

        return match

    def probe(self) -> Callable[[str, Hits], None]:
        match = self.matching()
        slots = [tuple(s) for s in self.slots]

        def probe_wildcard(value: str, hits: Hits) -> None:
            for number in match(value):
                hits.extend(slots[number])

        return probe_wildcard


class _Networks:
    """CIDR blocks grouped by (IP version, mask length)."""

    def __init__(self) -> None:
        self.groups: dict[tuple[int, int], dict[int, list[Slot]]] = {}

    def add(self, network: Network, slot: Slot) -> None:
        key = (network.version, network.bits)
        self.groups.setdefault(key, {}).setdefault(network.prefix, []).append(slot)

    def probe(self) -> Callable[[str, Hits], None]:
        groups = [
            (version, (32 if version == 4 else 128) - bits, table)
            for (version, bits), table in sorted(self.groups.items())
        ]

        def probe_cidr(value: str, hits: Hits) -> None:
            parsed = parse_ip(value)
            if parsed is None:
                return
            version, address = parsed
            for group_version, shift, table in groups:
                if group_version == version:
                    found = table.get(address >> shift)
                    if found:
                        hits.extend(found)

        return probe_cidr


class _AnythingBut:
    """anything-but conditions: each matches unless the value is excluded.

    Exclusions are indexed per condition (not per slot: a field may list two
    anything-but conditions, and one excluding the value leaves the other), so
    the cost is the lookups plus the number of anything-but conditions on this
    field, which all match unless excluded.
    """

    def __init__(self) -> None:
        self.slots: list[Slot] = []  # by condition number
        self.strings: dict[str, set[int]] = {}
        self.numbers: dict[float, set[int]] = {}
        self.folded: dict[str, set[int]] = {}  # ASCII texts, lower-cased
        self.folded_every: list[tuple[int, str]] = []
        self.prefixes = _Affixes(suffix=False)
        self.suffixes = _Affixes(suffix=True)
        self.wildcards = _Wildcards()

    def add(self, condition: AnythingBut, slot: Slot) -> None:
        number = len(self.slots)
        self.slots.append(slot)
        kind = condition.kind
        if kind == "numbers":
            for value in condition.numbers:
                self.numbers.setdefault(value, set()).add(number)
        elif kind == "strings":
            for text in condition.strings:
                self.strings.setdefault(text, set()).add(number)
        elif kind == "ignore-case":
            for text in condition.strings:
                self.folded_every.append((number, text))
                if text.isascii():
                    self.folded.setdefault(text.lower(), set()).add(number)
        elif kind in ("prefix", "suffix"):
            affixes = self.prefixes if kind == "prefix" else self.suffixes
            for text in condition.strings:
                affixes.add(text, number)
        else:
            for tokens in condition.patterns:
                self.wildcards.add(tokens, number)

    def probes(self) -> tuple[Probe, Probe, Probe]:
        """Probes for string values, number values and true/false/null."""
        every = tuple(self.slots)
        numbered = tuple(enumerate(self.slots))
        strings, folded, numbers = self.strings, self.folded, self.numbers
        folded_every = self.folded_every
        folded_exotic = [(n, text) for n, text in folded_every if not text.isascii()]
        by_prefix = self.prefixes.probe() if self.prefixes.by_length else None
        by_suffix = self.suffixes.probe() if self.suffixes.by_length else None
        wildcard_match = self.wildcards.matching() if self.wildcards.patterns else None
        wildcard_conditions = self.wildcards.slots

        def remaining(excluded: set[int] | frozenset[int] | None, hits: Hits) -> None:
            if excluded:
                hits.extend([slot for number, slot in numbered if number not in excluded])
            else:
                hits.extend(every)

        def probe_string(value: str, hits: Hits) -> None:
            excluded: set[int] = set()
            if strings:
                excluded |= strings.get(value, _NONE)
            if folded_every:
                key = lookup_key(value)
                if key is None:
                    excluded.update(n for n, text in folded_every if equals(text, value))
                else:
                    excluded |= folded.get(key, _NONE)
                    excluded.update(n for n, text in folded_exotic if equals(text, value))
            if by_prefix is not None or by_suffix is not None:
                found: Hits = []
                if by_prefix is not None:
                    by_prefix(value, found)
                if by_suffix is not None:
                    by_suffix(value, found)
                excluded.update(found)
            if wildcard_match is not None:
                for pattern in wildcard_match(value):
                    excluded.update(wildcard_conditions[pattern])
            remaining(excluded, hits)

        def probe_number(value: float, hits: Hits) -> None:
            remaining(numbers.get(value) if numbers else None, hits)

        def probe_other(value: Any, hits: Hits) -> None:
            hits.extend(every)

        fast = self._fast_string_probe(every, numbered, remaining)
        return fast or probe_string, probe_number, probe_other

    def _fast_string_probe(
        self,
        all_slots: tuple[Slot, ...],
        numbered: tuple[tuple[int, Slot], ...],
        remaining: Callable[[set[int] | frozenset[int] | None, Hits], None],
    ) -> Callable[[str, Hits], None] | None:
        """A leaner probe when the field's anything-but conditions are all of one kind."""
        kinds = [
            bool(self.strings),
            bool(self.folded_every),
            bool(self.prefixes.by_length),
            bool(self.suffixes.by_length),
            bool(self.wildcards.patterns),
        ]
        if sum(kinds) != 1:
            return None
        if self.strings:
            get = self.strings.get

            def probe_plain(value: str, hits: Hits) -> None:
                excluded = get(value)
                if excluded is None:
                    hits.extend(all_slots)
                else:
                    hits.extend([slot for n, slot in numbered if n not in excluded])

            return probe_plain
        if self.folded_every:
            if any(not text.isascii() for _, text in self.folded_every):
                return None
            folded_get = self.folded.get
            every = self.folded_every

            def probe_folded(value: str, hits: Hits) -> None:
                if value.isascii():
                    excluded = folded_get(value.lower())
                    if excluded is None:
                        hits.extend(all_slots)
                    else:
                        hits.extend([slot for n, slot in numbered if n not in excluded])
                    return
                key = lookup_key(value)
                if key is None:
                    remaining({n for n, text in every if equals(text, value)}, hits)
                else:
                    remaining(folded_get(key), hits)

            return probe_folded
        if self.prefixes.by_length or self.suffixes.by_length:
            affix = (self.prefixes if self.prefixes.by_length else self.suffixes).probe()

            def probe_affix(value: str, hits: Hits) -> None:
                found: Hits = []
                affix(value, found)
                remaining(set(found) if found else None, hits)

            return probe_affix
        return None


class FieldIndex:
    """Everything the rules ask of one field, indexed by kind of condition."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.exact: dict[Any, list[Slot]] = {}
        self.prefixes = _Affixes(suffix=False)
        self.suffixes = _Affixes(suffix=True)
        self.ignore_case = _IgnoreCase()
        self.ranges = _Ranges()
        self.wildcards = _Wildcards()
        self.networks = _Networks()
        self.anything_but = _AnythingBut()
        self.exists: list[Slot] = []

    def add(self, condition: Condition, slot: Slot) -> None:
        kind = type(condition)
        if kind is Exact:
            assert isinstance(condition, Exact)
            value = condition.value
            key = value if isinstance(value, str | float) else other_key(value)
            self.exact.setdefault(key, []).append(slot)
            if condition.address is not None:
                self.networks.add(condition.address, slot)
        elif kind is Prefix or kind is Suffix:
            assert isinstance(condition, Prefix | Suffix)
            if condition.ignore_case:
                affix = "prefix" if kind is Prefix else "suffix"
                self.ignore_case.add(affix, condition.text, slot)
            else:
                (self.prefixes if kind is Prefix else self.suffixes).add(condition.text, slot)
        elif kind is EqualsIgnoreCase:
            assert isinstance(condition, EqualsIgnoreCase)
            self.ignore_case.add("equals", condition.text, slot)
        elif kind is Numeric:
            assert isinstance(condition, Numeric)
            self.ranges.add(condition, slot)
        elif kind is Wildcard:
            assert isinstance(condition, Wildcard)
            self.wildcards.add(condition.tokens, slot)
        elif kind is Cidr:
            assert isinstance(condition, Cidr)
            self.networks.add(condition.network, slot)
        elif kind is Exists:
            assert isinstance(condition, Exists)
            if not condition.present:
                raise ValueError("exists:false cannot anchor a rule: absence is checked later")
            self.exists.append(slot)
        else:
            assert isinstance(condition, AnythingBut)
            self.anything_but.add(condition, slot)

    def typed_probes(self) -> tuple[Probe, Probe, Probe]:
        """Probes for string values, number values and true/false/null (``nothing`` if none)."""
        on_string: list[Probe] = []
        on_number: list[Probe] = []
        on_other: list[Probe] = []
        exact = {k: tuple(v) for k, v in self.exact.items()}
        if any(type(k) is str for k in exact):
            on_string.append(_lookup(exact))
        if any(type(k) is float for k in exact):
            on_number.append(_lookup(exact))
        if any(type(k) is tuple for k in exact):
            on_other.append(_lookup_other(exact))
        for affixes in (self.prefixes, self.suffixes):
            if affixes.by_length:
                on_string.append(affixes.probe())
        if self.ignore_case.every:
            on_string.append(self.ignore_case.probe())
        if self.wildcards.patterns:
            on_string.append(self.wildcards.probe())
        if self.networks.groups:
            on_string.append(self.networks.probe())
        if self.ranges.ranges:
            on_number.append(self.ranges.probe())
        if self.anything_but.slots:
            string_probe, number_probe, other_probe = self.anything_but.probes()
            on_string.append(string_probe)
            on_number.append(number_probe)
            on_other.append(other_probe)
        if self.exists:
            present = tuple(self.exists)
            for probes in (on_string, on_number, on_other):
                probes.append(_constant(present))
        return _chain(on_string), _as_doubles(_chain(on_number)), _chain(on_other)


def _lookup(table: dict[Any, tuple[Slot, ...]]) -> Probe:
    get = table.get

    def probe_exact(value: Any, hits: Hits) -> None:
        found = get(value)
        if found:
            hits.extend(found)

    return probe_exact


def _lookup_other(table: dict[Any, tuple[Slot, ...]]) -> Probe:
    get = table.get

    def probe_literal(value: Any, hits: Hits) -> None:
        found = get(other_key(value))
        if found:
            hits.extend(found)

    return probe_literal


def _constant(slots: tuple[Slot, ...]) -> Probe:
    def probe_constant(value: Any, hits: Hits) -> None:
        hits.extend(slots)

    return probe_constant


def nothing(value: Any, hits: Hits) -> None:
    return None


def _as_doubles(probe: Probe) -> Probe:
    """Numbers are compared as doubles: an int is converted before any lookup."""
    if probe is nothing:
        return probe

    def probe_double(value: Any, hits: Hits) -> None:
        probe(as_double(value) if type(value) is int else value, hits)

    return probe_double


def _chain(probes: list[Probe]) -> Probe:
    if not probes:
        return nothing
    if len(probes) == 1:
        return probes[0]
    chained = tuple(probes)

    def probe_all(value: Any, hits: Hits) -> None:
        for probe in chained:
            probe(value, hits)

    return probe_all


def dispatch(on_string: Probe, on_number: Probe, on_other: Probe) -> Probe:
    """One probe for any leaf value, from the typed probes of ``typed_probes``."""

    def probe_value(value: Any, hits: Hits) -> None:
        kind = type(value)
        if kind is str:
            on_string(value, hits)
        elif kind is float or kind is int:
            on_number(value, hits)
        else:
            on_other(value, hits)

    return probe_value
