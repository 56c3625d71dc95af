"""Regressions: each case once made the Matcher disagree, crash or hang."""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from decimal import Decimal
from typing import Any

import pytest

from pipelines.errors import EventValidationError, PatternError
from pipelines.patterns import Matcher, compile_pattern

from .helpers import verdict as agree


def quickly(fn: Any, *args: Any, limit: float = 2.0) -> Any:
    start = time.perf_counter()
    result = fn(*args)
    assert time.perf_counter() - start < limit
    return result


def test_wildcard_matching_is_linear() -> None:
    pattern = {"r": [{"wildcard": "*:*:*:*:*:event-bus"}], "s": [1]}
    event = {"r": ":" * 20000, "s": 1}
    assert quickly(agree, pattern, event) is False


def test_array_consistency_search_is_bounded() -> None:
    fields = {name: [{"exists": True}] for name in "abcd"}
    pattern = {"x": {**fields, "z": [6]}}
    elements = [{name: n for name in "abcd"} for n in range(150)]
    event = {"x": [*elements, {"z": 6}]}
    assert quickly(agree, pattern, event) is False
    spread = {"x": [{"a": n} for n in range(150)] + [{"b": 1}, {"c": 1}, {"d": 1, "z": 6}]}
    assert quickly(agree, pattern, spread) is False


@pytest.mark.parametrize("value", [":" * 40000 + "x", "1.1.1." + "1" * 5000, "9" * 5000])
def test_long_ip_like_strings(value: str) -> None:
    assert (
        quickly(agree, {"ip": ["10.0.0.1"], "c": [{"cidr": "10.0.0.0/8"}]}, {"ip": value}) is False
    )


def test_huge_exponent_is_rejected_at_once() -> None:
    with pytest.raises(PatternError, match="Cannot compare number : 1e10000000"):
        quickly(compile_pattern, '{"a":[{"numeric":[">",1e10000000]}]}')


def test_deep_dotted_field_names() -> None:
    name = ".".join(["a"] * 300)
    matcher = Matcher()
    matcher.add("deep", {name: [1]})
    nested: Any = 1
    for _ in range(300):
        nested = {"a": nested}
    assert quickly(matcher.match_json, json.dumps(nested)) == ["deep"]
    assert quickly(matcher.match_json, json.dumps({name: 1})) == ["deep"]


def test_unusual_keys() -> None:
    assert agree('{"\\ud800": [1]}', {"\ud800": 1}) is True
    assert agree({"": [1]}, {"": 1}) is True
    assert agree({"a": {"": [1]}}, {"a": {"": 1}}) is True


def test_python_dicts_mean_what_their_json_means() -> None:
    # JSON has only string keys: a dict with an int key is read as its JSON text.
    assert compile_pattern({1: [1], "b": [2]}).matches({"1": 1, "b": 2})
    for bad in ({"a": [float("nan")]}, {"a": [{"numeric": [">", float("inf")]}]}):
        with pytest.raises(PatternError, match="not JSON data"):
            compile_pattern(bad)


@pytest.mark.parametrize("bad", [Decimal("sNaN"), object(), {1, 2}])
def test_non_json_values_in_dict_patterns(bad: Any) -> None:
    with pytest.raises(PatternError, match="not JSON data"):
        compile_pattern({"a": [bad]})


def test_numbers_compare_as_doubles_everywhere() -> None:
    big = 9007199254740993
    assert agree({"a": [9007199254740992]}, {"a": big}) is True
    assert agree({"a": [{"numeric": [">", 9007199254740992]}]}, {"a": big}) is False
    assert agree({"a": [{"anything-but": [9007199254740992]}]}, {"a": big}) is False
    assert agree({"a": [{"numeric": [">", 0]}]}, {"a": 10**400}) is False


def test_scalars_in_nested_arrays_take_part_in_consistency() -> None:
    assert agree({"a": [5], "a.b": [1]}, {"a": [{"b": 1}, [5]]}) is False
    assert (
        agree({"a.b": [{"exists": False}], "a.b.c": [1]}, {"a": {"b": [{"c": 1}, ["z"]]}}) is True
    )


def test_any_mapping_is_an_event() -> None:
    matcher = Matcher()
    matcher.add("r", {"a": {"b": ["x"]}})
    matcher.match_json('{"a": {"b": "x"}}')  # builds the typed decoding too
    assert matcher.match(OrderedDict(a=OrderedDict(b="x"))) == ["r"]
    assert compile_pattern({"a": {"b": ["x"]}}).matches(OrderedDict(a=OrderedDict(b="x")))


def test_duplicate_keys_in_pattern_text_are_read_as_event_ruler_reads_them() -> None:
    both = '{"detail": {"a": [1]}, "detail": {"b": [2]}}'
    assert agree(both, {"detail": {"a": 1, "b": 2}}) is True
    assert agree(both, {"detail": {"b": 2}}) is False
    with pytest.raises(PatternError, match="Empty arrays"):
        compile_pattern('{"a": [], "a": [1]}')
    with pytest.raises(PatternError, match="Only one key"):
        compile_pattern('{"a": [{"prefix": "x", "prefix": "y"}]}')
    two_ors = '{"$or": [{"a": [1]}, {"b": [1]}], "$or": [{"c": [1]}, {"d": [1]}]}'
    assert len(compile_pattern(two_ors).subrules) == 4


def test_reserved_names_inside_or() -> None:
    with pytest.raises(PatternError, match="regex is Ruler reserved"):
        compile_pattern({"$or": [{"a": [1]}, {"regex": [1]}]})


def test_number_errors_quote_the_number_as_written() -> None:
    with pytest.raises(PatternError, match="Cannot compare number : 1e309"):
        compile_pattern('{"a": [{"numeric": [">", 1e309]}]}')


def test_event_too_deep_for_the_walk_is_a_validation_error() -> None:
    matcher = Matcher()
    matcher.add("r", {"a": ["x"]})
    nested: Any = "x"
    for _ in range(5000):
        nested = [nested]
    with pytest.raises(EventValidationError, match="nests too deeply"):
        matcher.match({"a": nested})


def test_a_nested_array_of_numbers_in_numeric_is_a_pattern_error_naming_it() -> None:
    # Found by tests/test_fuzz.py: the message spelled the member with
    # json.dumps, which cannot take a pattern's numbers: a TypeError escaped.
    with pytest.raises(PatternError, match=r"Invalid member in numeric match: \[0\.50, 7\]"):
        compile_pattern('{"a": [{"numeric": [[0.50, 7]]}]}')
    with pytest.raises(PatternError, match=r"numeric match: \[0\.0\]"):
        compile_pattern({"": [{"numeric": [[0.0]]}]})
