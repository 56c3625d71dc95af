"""Direct evaluation of one compiled pattern against one event.

This is the reference semantics: straightforward, rule by rule. The
``Matcher`` indexes many rules for speed and must agree with it exactly (a
property test checks that); it also calls it to settle events whose arrays
of objects need the array-consistency check below.

Array consistency (event-ruler's ``rulesForJSONEvent``): every leaf value
remembers, for each array of objects it sits in, the element it came from.
Values used together by one sub-rule must agree on every array they share, so
``{"people": [{"first": "Ann", "last": "Lee"}, {"first": "Bo", "last": "Ray"}]}``
does not match ``{"people": {"first": ["Ann"], "last": ["Ray"]}}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipelines.patterns.compiler import FieldTest, SubRule

#: (id of the array, index of the element) for each enclosing array element
#: that is an object or an array.
Membership = tuple[tuple[int, int], ...]
Leaf = tuple[Any, Membership]


def collect(node: Any, remaining: tuple[str, ...], membership: Membership, out: list[Leaf]) -> None:
    """Append the leaf values found at the path segments ``remaining`` below ``node``.

    A key of the event may itself contain dots: ``{"a.b": 1}`` and
    ``{"a": {"b": 1}}`` both give the field ``a.b``. Arrays add nothing to
    the name; objects and empty arrays are not leaves.
    """
    if isinstance(node, list | tuple):
        for index, element in enumerate(node):
            nested = isinstance(element, Mapping | list | tuple)
            inner = (*membership, (id(node), index)) if nested else membership
            collect(element, remaining, inner, out)
        return
    if not remaining:
        if not isinstance(node, Mapping):
            out.append((node, membership))
        return
    if isinstance(node, Mapping):
        for key, child in node.items():
            if not isinstance(key, str):
                continue
            parts = tuple(key.split("."))
            if remaining[: len(parts)] == parts:
                collect(child, remaining[len(parts) :], membership, out)


def leaves(event: Mapping[str, Any], path: str) -> list[Leaf]:
    out: list[Leaf] = []
    collect(event, tuple(path.split(".")), (), out)
    return out


def consistent(membership: Membership, chosen: dict[int, int]) -> bool:
    """Whether a value may be used with the array elements already chosen.

    Values used together must sit in the same element of every array they
    share; element chains part at the first differing array, below which
    nothing is shared, so comparing per array is enough.
    """
    for array, index in membership:
        taken = chosen.get(array)
        if taken is not None and taken != index:
            return False
    return True


def subrule_matches(subrule: SubRule, event: Mapping[str, Any]) -> bool:
    """Whether some choice of one value per field satisfies the sub-rule consistently.

    Only the distinct array positions of satisfying values matter, so the
    search runs over those; the most constrained field goes first, and
    dead ends are remembered by the array positions that later fields can see.
    """
    positive: list[list[Membership]] = []
    optional: list[tuple[list[Membership], list[Membership]]] = []
    for test in subrule:
        values = leaves(event, test.path)
        conditions = test.value_conditions
        good = list(dict.fromkeys(m for v, m in values if any(c.test(v) for c in conditions)))
        if test.absent_ok:
            optional.append((good, list(dict.fromkeys(m for _, m in values))))
        elif not good:
            return False
        else:
            positive.append(good)
    positive.sort(key=len)
    choices = positive + [good for good, _ in optional]
    absent_options = [every for _, every in optional]
    first_optional = len(positive)
    later_arrays: list[frozenset[int]] = []
    for position in range(len(choices) + 1):
        arrays = {a for options in choices[position:] for m in options for a, _ in m}
        arrays.update(a for every in absent_options for m in every for a, _ in m)
        later_arrays.append(frozenset(arrays))
    chosen: dict[int, int] = {}
    dead_ends: set[tuple[int, frozenset[tuple[int, int]]]] = set()
    absent_now: list[list[Membership]] = []

    def absent_holds() -> bool:
        return not any(consistent(m, chosen) for every in absent_now for m in every)

    def search(position: int) -> bool:
        if position == len(choices):
            return absent_holds()
        visible = later_arrays[position]
        key = (position, frozenset((a, i) for a, i in chosen.items() if a in visible))
        if not absent_now and key in dead_ends:
            return False
        for membership in choices[position]:
            if not consistent(membership, chosen):
                continue
            added = [(a, i) for a, i in membership if a not in chosen]
            chosen.update(added)
            found = search(position + 1)
            for array, _ in added:
                del chosen[array]
            if found:
                return True
        if position >= first_optional:
            # This exists:false field may instead be absent from the chosen elements.
            absent_now.append(absent_options[position - first_optional])
            found = search(position + 1)
            absent_now.pop()
            if found:
                return True
        if not absent_now:
            dead_ends.add(key)
        return False

    return search(0)


def field_holds(test: FieldTest, values: list[Any] | None) -> bool:
    """A field's verdict on its values when array consistency plays no part."""
    if not values:
        return test.absent_ok
    conditions = test.value_conditions
    return any(condition.test(value) for value in values for condition in conditions)
