"""Property: the indexed Matcher agrees with rule-by-rule evaluation.

Patterns and events are drawn from a small shared vocabulary of field names
and values so that matches, near misses, arrays of objects, dotted keys and
absent fields all occur often.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.errors import PatternError
from pipelines.patterns import Matcher, Pattern, compile_pattern

WORDS = ["", "a", "ab", "abc", "b", "ba", "Ab", "AB", "10.0.0.7", "10.0.1.7", "x*y"]
NUMBERS = [-3, -1, 0, 1, 2, 2.5, 3, 1e300, -1e300]
SCALARS = st.one_of(
    st.sampled_from(WORDS),
    st.sampled_from(NUMBERS),
    st.sampled_from([True, False, None]),
)
FIELDS = ["a", "b", "c.d", "c.e", "items.k", "items.v"]

string = st.sampled_from([w for w in WORDS if w])
nonempty = st.sampled_from([w for w in WORDS if w])
number = st.sampled_from(NUMBERS)

CONDITIONS = st.one_of(
    SCALARS,
    st.builds(lambda s: {"prefix": s}, st.sampled_from(WORDS)),
    st.builds(lambda s: {"suffix": s}, st.sampled_from(WORDS)),
    st.builds(lambda s: {"prefix": {"equals-ignore-case": s}}, string),
    st.builds(lambda s: {"suffix": {"equals-ignore-case": s}}, string),
    st.builds(lambda s: {"equals-ignore-case": s}, st.sampled_from(WORDS)),
    st.builds(lambda s: {"wildcard": s}, st.sampled_from(["a*", "*b", "a*b", "*", "*a*", "10.*"])),
    st.builds(lambda s: {"anything-but": s}, st.one_of(string, number)),
    st.builds(lambda s: {"anything-but": s}, st.lists(string, min_size=1, max_size=3)),
    st.builds(lambda s: {"anything-but": s}, st.lists(number, min_size=1, max_size=3)),
    st.builds(lambda s: {"anything-but": {"prefix": s}}, nonempty),
    st.builds(lambda s: {"anything-but": {"suffix": s}}, nonempty),
    st.builds(lambda s: {"anything-but": {"equals-ignore-case": s}}, string),
    st.builds(lambda s: {"anything-but": {"wildcard": s}}, st.sampled_from(["a*", "*b", "*"])),
    st.builds(
        lambda op, n: {"numeric": [op, n]}, st.sampled_from(["=", "<", "<=", ">", ">="]), number
    ),
    st.builds(
        lambda lo, hi, a, b: {"numeric": [a, min(lo, hi), b, max(lo, hi) + 1]},
        number,
        number,
        st.sampled_from([">", ">="]),
        st.sampled_from(["<", "<="]),
    ),
    st.builds(lambda b: {"exists": b}, st.booleans()),
    st.just({"cidr": "10.0.0.0/24"}),
)


def _nest(fields: dict[str, list[Any]], dotted: bool) -> dict[str, Any]:
    """Turn flattened names into a pattern, nesting the keys or keeping the dots."""
    pattern: dict[str, Any] = {}
    for name, conditions in fields.items():
        if dotted:
            pattern[name] = conditions
            continue
        node = pattern
        *parents, last = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = conditions
    return pattern


@st.composite
def patterns(draw: st.DrawFn) -> dict[str, Any]:
    chosen = draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True))
    fields = {name: draw(st.lists(CONDITIONS, min_size=1, max_size=3)) for name in chosen}
    pattern = _nest(fields, draw(st.booleans()))
    if draw(st.integers(0, 3)) == 0:
        branches = [
            _nest({name: draw(st.lists(CONDITIONS, min_size=1, max_size=2))}, False)
            for name in draw(st.lists(st.sampled_from(FIELDS), min_size=2, max_size=3))
        ]
        pattern["$or"] = branches
    return pattern


LEAF = st.one_of(SCALARS, st.lists(SCALARS, max_size=3))


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {}
    if draw(st.booleans()):
        event["a"] = draw(LEAF)
    if draw(st.booleans()):
        event["b"] = draw(st.one_of(LEAF, st.just({"nested": 1})))
    c = {k: draw(LEAF) for k in draw(st.lists(st.sampled_from(["d", "e"]), unique=True))}
    if c:
        if draw(st.booleans()):
            event["c"] = c
        else:
            event.update({f"c.{k}": v for k, v in c.items()})  # dotted keys in the event
    if draw(st.booleans()):
        element = st.fixed_dictionaries({}, optional={"k": LEAF, "v": LEAF})
        event["items"] = draw(st.lists(element, max_size=3))
    return event


def _load(rule_patterns: list[dict[str, Any]]) -> tuple[Matcher, dict[str, Pattern]]:
    """A Matcher holding every pattern that compiles, and those patterns by name."""
    matcher = Matcher()
    compiled: dict[str, Pattern] = {}
    for number, pattern in enumerate(rule_patterns):
        try:
            compiled[f"r{number}"] = compile_pattern(pattern)
        except PatternError:
            continue  # e.g. a numeric range whose bottom is not below its top
        matcher.add(f"r{number}", pattern)
    return matcher, compiled


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(patterns(), min_size=1, max_size=6), st.lists(events(), min_size=1, max_size=4))
def test_matcher_agrees_with_each_pattern(
    rule_patterns: list[dict[str, Any]], sample: list[dict[str, Any]]
) -> None:
    matcher, compiled = _load(rule_patterns)
    for event in sample:
        expected = [name for name, pattern in compiled.items() if pattern.matches(event)]
        assert matcher.match(event) == expected, (event, rule_patterns)
        assert matcher.match_json(json.dumps(event)) == expected, (event, rule_patterns)


@settings(max_examples=200, deadline=None)
@given(st.lists(patterns(), min_size=2, max_size=6), events(), st.data())
def test_removing_rules_keeps_agreement(
    rule_patterns: list[dict[str, Any]], event: dict[str, Any], data: st.DataObject
) -> None:
    matcher, compiled = _load(rule_patterns)
    doomed = data.draw(st.lists(st.sampled_from(sorted(compiled) or ["none"]), unique=True))
    for name in doomed:
        assert matcher.remove(name) is (name in compiled)
        compiled.pop(name, None)
    expected = [name for name, pattern in compiled.items() if pattern.matches(event)]
    assert matcher.match(event) == expected
    assert matcher.match_json(json.dumps(event)) == expected
