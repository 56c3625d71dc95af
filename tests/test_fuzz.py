"""Robustness: arbitrary JSON as pattern and as event.

Compiling may raise only ``PatternError``; matching may raise only
``EventValidationError`` (for text that is not a JSON object); nothing hangs,
and deep nesting and huge numbers are handled.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.errors import EventValidationError, PatternError
from pipelines.patterns import Matcher, compile_pattern

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
OPERATOR_KEYS = st.sampled_from(
    [
        "prefix",
        "suffix",
        "equals-ignore-case",
        "wildcard",
        "anything-but",
        "numeric",
        "exists",
        "cidr",
        "exactly",
        "$or",
        "<",
        ">=",
        "=",
    ]
)
KEYS = st.one_of(st.text(max_size=6), OPERATOR_KEYS)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(KEYS, children, max_size=4),
    ),
    max_leaves=20,
)


def _bounded(fn: Any, *args: Any) -> Any:
    """Run fn in a thread and fail if it does not finish promptly (no hang)."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = fn(*args)
        except BaseException as exc:
            result["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), f"{fn.__name__} did not finish within 10 s"
    if "error" in result:
        raise result["error"]
    return result.get("value")


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON_VALUES)
def test_any_json_as_pattern_raises_only_pattern_error(pattern: Any) -> None:
    text = json.dumps(pattern)
    for given_pattern in (text, pattern):
        try:
            compiled = _bounded(compile_pattern, given_pattern)
        except PatternError as exc:
            assert exc.reason
            assert exc.path.startswith("$")
        else:
            assert isinstance(pattern, dict)
            compiled.matches({"source": "x"})


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["a", "b", "a.b", "c"]), JSON_VALUES, max_size=4))
def test_any_json_as_event_matches_without_error(event: dict[str, Any]) -> None:
    matcher = Matcher()
    matcher.add("exact", {"a": ["x", 1, None, True]})
    matcher.add("range", {"a": {"b": [{"numeric": [">", 0, "<=", 1e300]}]}})
    matcher.add("absent", {"c": [{"exists": False}], "b": [{"anything-but": {"prefix": "z"}}]})
    matcher.add("wild", {"$or": [{"a": [{"wildcard": "*x*"}]}, {"b": [{"cidr": "10.0.0.0/8"}]}]})
    from_dict = _bounded(matcher.match, event)
    from_text = _bounded(matcher.match_json, json.dumps(event))
    assert from_dict == from_text
    assert set(from_dict) <= {"exact", "range", "absent", "wild"}


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=64), st.text(max_size=64), JSON_VALUES.map(json.dumps)))
def test_any_text_as_event_raises_only_validation_error(text: Any) -> None:
    matcher = Matcher()
    matcher.add("rule", {"a": [{"exists": True}]})
    try:
        result = _bounded(matcher.match_json, text)
    except EventValidationError as exc:
        assert exc.code == "InvalidArgument"
    else:
        assert result in ([], ["rule"])


def test_deeply_nested_event_is_handled() -> None:
    depth = 5000
    text = '{"a":' * depth + "1" + "}" * depth
    matcher = Matcher()
    matcher.add("shallow", {"a": [{"exists": True}]})
    matcher.add("other", {"b": ["x"]})
    # Too deep for the JSON parsers: rejected cleanly, not a RecursionError.
    with contextlib.suppress(EventValidationError):
        assert _bounded(matcher.match_json, text) == []


def test_deeply_nested_pattern_is_rejected_cleanly() -> None:
    depth = 5000
    text = '{"a":' * depth + '["x"]' + "}" * depth
    with pytest.raises(PatternError):
        compile_pattern(text, max_length=10**6)


def test_pattern_nesting_within_the_length_limit_compiles() -> None:
    depth = 300
    text = '{"a":' * depth + '["x"]' + "}" * depth
    pattern = compile_pattern(text)
    assert pattern.subrules[0][0].path == ".".join(["a"] * depth)
    event: dict[str, Any] = {"a": "x"}
    for _ in range(depth - 1):
        event = {"a": event}
    matcher = Matcher()
    matcher.add("deep", text)
    assert matcher.match(event) == ["deep"]
    assert matcher.match_json(json.dumps(event)) == ["deep"]


@pytest.mark.parametrize(
    "literal",
    ["1e400", "-1e400", "123456789012345678901234567890", "1e-400", "9007199254740993"],
)
def test_huge_numbers_in_events(literal: str) -> None:
    matcher = Matcher()
    matcher.add("big", {"n": [{"numeric": [">", 1e300]}]})
    matcher.add("any", {"n": [{"exists": True}]})
    value = json.loads(literal)
    # Past the double range a number compares with no range, as in event-ruler.
    expected = ["big", "any"] if math.isfinite(float(value)) and value > 1e300 else ["any"]
    assert matcher.match_json('{"n": ' + literal + "}") == expected
    assert matcher.match({"n": value}) == expected


def test_huge_numbers_in_patterns() -> None:
    with pytest.raises(PatternError, match="Cannot compare number"):
        compile_pattern('{"n": [{"numeric": [">", 1e400]}]}')
    with pytest.raises(PatternError, match="Cannot compare number"):
        compile_pattern('{"n": [{"numeric": ["<", 9007199254740993]}]}')
    # In a plain list a huge number is accepted and compared as a double.
    pattern = compile_pattern('{"n": [1e400]}')
    assert pattern.matches({"n": math.inf})


def test_full_double_range() -> None:
    pattern = compile_pattern({"n": [{"numeric": [">=", -1.7976931348623157e308, "<", 5e-324]}]})
    assert pattern.matches({"n": -1.7976931348623157e308})
    assert pattern.matches({"n": 0})
    assert not pattern.matches({"n": 5e-324})
