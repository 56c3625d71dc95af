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

#: (id of the array, index of the element) for each enclosing array of objects.
Membership = tuple[tuple[int, int], ...]
Leaf = tuple[Any, Membership]


def collect(node: Any, remaining: str, membership: Membership, out: list[Leaf]) -> None:
    """Append the leaf values found at the dotted path ``remaining`` below ``node``.

    A key of the event may itself contain dots: ``{"a.b": 1}`` and
    ``{"a": {"b": 1}}`` both give the field ``a.b``. Arrays add nothing to
    the name; objects and empty arrays are not leaves.
    """
    if isinstance(node, list):
        for index, element in enumerate(node):
            nested = isinstance(element, dict | list)
            inner = (*membership, (id(node), index)) if nested else membership
            collect(element, remaining, inner, out)
        return
    if not remaining:
        if not isinstance(node, dict):
            out.append((node, membership))
        return
    if isinstance(node, dict):
        for key, child in node.items():
            if key == remaining:
                collect(child, "", membership, out)
            elif remaining.startswith(key) and remaining[len(key) : len(key) + 1] == ".":
                collect(child, remaining[len(key) + 1 :], membership, out)


def leaves(event: Mapping[str, Any], path: str) -> list[Leaf]:
    out: list[Leaf] = []
    collect(event, path, (), out)
    return out


def consistent(first: Membership, second: Membership) -> bool:
    """Two values may be used together unless they sit in different elements of one array."""
    for (array_a, index_a), (array_b, index_b) in zip(first, second, strict=False):
        if array_a != array_b:
            return True  # the paths part here; no array further down is shared
        if index_a != index_b:
            return False
    return True


def subrule_matches(subrule: SubRule, event: Mapping[str, Any]) -> bool:
    fields = [(test, leaves(event, test.path)) for test in subrule]
    chosen: list[Membership] = []
    absent: list[list[Leaf]] = []

    def absent_holds() -> bool:
        # exists:false holds when no value of the field can be used with the chosen ones.
        return not any(
            all(consistent(membership, other) for other in chosen)
            for values in absent
            for _, membership in values
        )

    def search(position: int) -> bool:
        if position == len(fields):
            return absent_holds()
        test, values = fields[position]
        conditions = test.value_conditions
        for value, membership in values:
            if not all(consistent(membership, other) for other in chosen):
                continue
            if any(condition.test(value) for condition in conditions):
                chosen.append(membership)
                if search(position + 1):
                    return True
                chosen.pop()
        if test.absent_ok:
            absent.append(values)
            if search(position + 1):
                return True
            absent.pop()
        return False

    return search(0)


def field_matches_alone(test: FieldTest, values: list[Any]) -> bool:
    """A field's verdict when array consistency plays no part."""
    if not values:
        return test.absent_ok
    conditions = test.value_conditions
    return any(condition.test(value) for value in values for condition in conditions)
