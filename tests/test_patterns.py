"""Pattern semantics and errors beyond the AWS conformance cases."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.errors import PatternError
from pipelines.patterns import Matcher, compile_pattern
from pipelines.patterns.wildcard import complexity, parse_wildcard

from .helpers import verdict as both


def error(pattern: Any) -> PatternError:
    with pytest.raises(PatternError) as caught:
        compile_pattern(pattern)
    return caught.value


# -- errors name the place -------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "reason", "path"),
    [
        ({"detail": {"state": []}}, "Empty arrays are not allowed", "$.detail.state"),
        ({"detail": {}}, "Empty objects are not allowed", "$.detail"),
        ({"a": [{"prefix": 1}]}, "prefix match pattern must be a string", "$.a[0].prefix"),
        ({"a": [{"numeric": [">", 5, "<", 1]}]}, "Bottom must be less than top", "$.a[0].numeric"),
        (
            {"a": [{"numeric": ["==", 5]}]},
            "Unrecognized numeric range operator: ==",
            "$.a[0].numeric",
        ),
        (
            {"a": [{"numeric": ["<", 5, ">", 1]}]},
            "Too many elements in numeric expression",
            "$.a[0].numeric",
        ),
        (
            {"a": [{"exists": "yes"}]},
            "exists match pattern must be either true or false.",
            "$.a[0].exists",
        ),
        (
            {"a": [{"prefix": "x", "suffix": "y"}]},
            "Only one key allowed in match expression",
            "$.a[0]",
        ),
        ({"a": [{}]}, "Match expression name not found", "$.a[0]"),
        ({"a": [["x"]]}, "Match value must be String, number, true, false, or null", "$.a[0]"),
        ({"a": [{"wildcard": "a\\b"}]}, "Invalid escape character at pos 2", "$.a[0].wildcard"),
        (
            {"a": [{"wildcard": "ab**"}]},
            "Consecutive wildcard characters at pos 3",
            "$.a[0].wildcard",
        ),
        ({"a": [{"cidr": "10.0.0.0/32"}]}, "IPv4 mask bits must be < 32", "$.a[0].cidr"),
        ({"a": [{"cidr": "700.0.0.0/8"}]}, "Invalid IP address: 700.0.0.0", "$.a[0].cidr"),
        (
            {"a": [{"anything-but": []}]},
            "Inside anything but list, either all values are number or string, mixed type is not supported",
            "$.a[0].anything-but",
        ),
        (
            {"a": [{"anything-but": ["x", 1]}]},
            "Inside anything but list, either all values are number or string, mixed type is not supported",
            "$.a[0].anything-but",
        ),
        (
            {"a": [{"anything-but": {"numeric": [">", 1]}}]},
            "Unsupported anything-but pattern: numeric",
            "$.a[0].anything-but.numeric",
        ),
        (
            {"$or": [{"a": ["x"]}]},
            "There must have at least 2 Objects in $or relationship.",
            '$["$or"]',
        ),
        ({"$or": {"a": ["x"]}}, "It must be an Array followed with $or.", '$["$or"]'),
        (
            {"$or": [{"a": ["x"]}, "b"]},
            "Only JSON object is allowed in array of $or relationship.",
            '$["$or"][1]',
        ),
        (
            {"$or": [{"prefix": ["x"]}, {"b": ["y"]}]},
            "prefix is Ruler reserved fieldName which cannot be used inside $or.",
            '$["$or"][0].prefix',
        ),
        ({"detail-type": "x"}, '"detail-type" must be an object or an array', "$.detail-type"),
    ],
)
def test_errors_give_reason_and_json_path(pattern: Any, reason: str, path: str) -> None:
    exc = error(pattern)
    assert (exc.reason, exc.path) == (reason, path)
    assert reason in str(exc) and path in str(exc)


def test_pattern_text_errors() -> None:
    assert error("{not json").reason.startswith("Pattern is not valid JSON")
    assert error("[1]").reason == "Filter is not an object"
    assert error('{"a": ["x"]} trailing').reason.startswith("Pattern is not valid JSON")


def test_pattern_length_limit_is_enforced_and_configurable() -> None:
    long_value = "x" * 3000
    pattern = {"a": [long_value]}
    assert "the limit is 2048" in error(pattern).reason
    compiled = compile_pattern(pattern, max_length=4096)
    assert compiled.matches({"a": long_value})
    matcher = Matcher(max_pattern_length=4096)
    matcher.add("long", pattern)
    assert matcher.match({"a": long_value}) == ["long"]


# -- matching semantics ------------------------------------------------------------------


def test_numbers_compare_numerically_and_never_as_strings() -> None:
    assert both({"n": [300]}, {"n": 300.0})
    assert both({"n": [300]}, {"n": 3e2})
    assert not both({"n": [300]}, {"n": "300"})
    assert not both({"n": ["300"]}, {"n": 300})
    assert both({"n": [0]}, {"n": -0.0})
    assert not both({"n": [1]}, {"n": True})
    assert both({"n": [True]}, {"n": True})
    assert not both({"n": [True]}, {"n": 1})


def test_numeric_range_bounds() -> None:
    rule = {"n": [{"numeric": [">", 0, "<=", 5]}]}
    assert not both(rule, {"n": 0})
    assert both(rule, {"n": 0.000001})
    assert both(rule, {"n": 5})
    assert not both(rule, {"n": 5.000001})
    assert not both(rule, {"n": "3"})


def test_null_and_missing_are_different() -> None:
    assert both({"a": [None]}, {"a": None})
    assert not both({"a": [None]}, {})
    assert both({"a": [{"exists": True}]}, {"a": None})
    assert both({"a": [{"anything-but": "x"}]}, {"a": None})
    assert not both({"a": [{"anything-but": "x"}]}, {})


def test_exists_is_for_leaves_only() -> None:
    assert not both({"a": [{"exists": True}]}, {"a": {"b": 1}})
    assert both({"a": [{"exists": False}]}, {"a": {"b": 1}})
    assert not both({"a": [{"exists": True}]}, {"a": []})
    assert both({"a": [{"exists": False}]}, {"a": []})


def test_anything_but_types() -> None:
    assert both({"a": [{"anything-but": [100]}]}, {"a": "100"})
    assert not both({"a": [{"anything-but": [100]}]}, {"a": 1e2})
    assert both({"a": [{"anything-but": "100"}]}, {"a": 100})
    assert both({"a": [{"anything-but": {"prefix": "x"}}]}, {"a": 5})
    assert both({"a": [{"anything-but": "a"}]}, {"a": ["a", "b"]})
    assert not both({"a": [{"anything-but": "a"}]}, {"a": ["a"]})


def test_two_anything_but_conditions_on_one_field_are_alternatives() -> None:
    rule = {"a": [{"anything-but": ["a"]}, {"anything-but": {"prefix": "ab"}}]}
    assert both(rule, {"a": "a"})
    assert both(rule, {"a": "abc"})


def test_equals_ignore_case_and_affixes() -> None:
    assert both({"a": [{"equals-ignore-case": "ÉTÉ"}]}, {"a": "été"})
    assert both({"a": [{"prefix": {"equals-ignore-case": "AB"}}]}, {"a": "abc"})
    assert both({"a": [{"suffix": {"equals-ignore-case": ".PNG"}}]}, {"a": "x.png"})
    assert not both({"a": [{"suffix": ".PNG"}]}, {"a": "x.png"})
    assert both({"a": [{"prefix": ""}]}, {"a": ""})
    assert not both({"a": [{"prefix": ""}]}, {"a": 1})


def test_wildcards() -> None:
    assert both({"a": [{"wildcard": "a*c"}]}, {"a": "ac"})
    assert both({"a": [{"wildcard": "a*c"}]}, {"a": "a\nbc"})
    assert both({"a": [{"wildcard": "a\\*c"}]}, {"a": "a*c"})
    assert not both({"a": [{"wildcard": "a\\*c"}]}, {"a": "abc"})
    assert both({"a": [{"wildcard": "a\\\\c"}]}, {"a": "a\\c"})
    assert both({"a": [{"wildcard": ""}]}, {"a": ""})
    assert not both({"a": [{"wildcard": "*"}]}, {"a": 1})


def test_wildcard_complexity_matches_event_ruler() -> None:
    # event-ruler's MachineComplexityEvaluatorTest values, with the value's opening quote.
    assert complexity([parse_wildcard("*:*:*:*:*:event-bus/*", "$")]) == 11
    assert complexity([parse_wildcard("arn:aws:events:us-east-1:*:event-bus/*", "$")]) == 3
    patterns = [parse_wildcard(f"*:stack/s{i}/*", "$") for i in range(3)]
    assert complexity(patterns) == 9
    rule = {"$or": [{"a": [{"wildcard": f"*:stack/s{i}/*"}]} for i in range(4)]}
    assert error(rule).reason.startswith("Rule is too complex")
    assert both(
        {"$or": [{"a": [{"wildcard": f"*:stack/s{i}/*"}]} for i in range(3)]}, {"a": "x:stack/s1/y"}
    )


def test_cidr_ipv4_and_ipv6_forms() -> None:
    assert both({"ip": [{"cidr": "10.0.0.5/24"}]}, {"ip": "10.0.0.1"})  # host bits ignored
    assert not both({"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": "10.0.1.1"})
    assert both(
        {"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "2001:0db8:0000:0000:0000:0000:0000:0001"}
    )
    assert both({"ip": [{"cidr": "2001:0db8:0:0:0:0:0:0/32"}]}, {"ip": "2001:db8::1"})
    assert not both({"ip": [{"cidr": "10.0.0.0/8"}]}, {"ip": "::1"})
    assert both({"ip": ["2001:db8::1"]}, {"ip": "2001:0DB8:0:0:0:0:0:1"})  # exact IP, any spelling


def test_dotted_keys_on_both_sides() -> None:
    assert both({"a.b": ["x"]}, {"a": {"b": "x"}})
    assert both({"a": {"b": ["x"]}}, {"a.b": "x"})
    assert both({"a": {"b.c": ["x"]}}, {"a.b": {"c": "x"}})


def test_array_consistency_for_arrays_of_objects() -> None:
    rule = {"people": {"first": ["Ann"], "last": ["Ray"]}}
    mixed = {"people": [{"first": "Ann", "last": "Lee"}, {"first": "Bo", "last": "Ray"}]}
    same = {"people": [{"first": "Bo", "last": "Lee"}, {"first": "Ann", "last": "Ray"}]}
    assert not both(rule, mixed)
    assert both(rule, same)
    # exists:false is checked against the element the other fields came from.
    absent = {"a": {"c": [3], "b": [{"exists": False}]}}
    assert both(absent, {"a": [{"b": 1, "c": 2}, {"c": 3}]})
    assert not both(absent, {"a": [{"b": 1, "c": 3}]})


def test_or_multiplies_and_later_fields_override() -> None:
    rule = {
        "source": ["s"],
        "$or": [{"a": ["1"]}, {"b": ["2"], "$or": [{"c": ["3"]}, {"d": ["4"]}]}],
    }
    assert len(compile_pattern(rule).subrules) == 3
    assert both(rule, {"source": "s", "b": "2", "d": "4"})
    assert not both(rule, {"source": "s", "b": "2"})
    # A path given again replaces the earlier list (event-ruler's override rule).
    override = {"name": ["a", "b"], "$or": [{"name": [{"anything-but": "a"}]}, {"c": ["x"]}]}
    assert both(override, {"name": "z"})
    assert both(override, {"name": "a", "c": "x"})
    assert not both(override, {"name": "a"})


def test_matcher_replaces_and_removes_rules() -> None:
    matcher = Matcher()
    matcher.add("r", {"a": ["1"]})
    matcher.add("s", {"a": ["1"]})
    assert matcher.match({"a": "1"}) == ["r", "s"]
    matcher.add("r", {"a": ["2"]})
    assert matcher.match({"a": "1"}) == ["s"]
    assert matcher.match({"a": "2"}) == ["r"]
    assert matcher.remove("s") and not matcher.remove("s")
    assert matcher.match({"a": "1"}) == []
    assert len(matcher) == 1 and "r" in matcher
    with pytest.raises(PatternError):
        matcher.add("bad", {"a": []})
    assert list(matcher) == ["r"]


def test_equals_ignore_case_is_event_rulers_per_character_rule() -> None:
    # Each pattern character matches only its own lower or upper case form.
    assert both({"a": [{"equals-ignore-case": "ß"}]}, {"a": "SS"})
    assert not both({"a": [{"equals-ignore-case": "ß"}]}, {"a": "ss"})
    assert not both({"a": [{"equals-ignore-case": "SS"}]}, {"a": "ß"})
    assert both({"a": [{"equals-ignore-case": "ς"}]}, {"a": "Σ"})
    assert both({"a": [{"equals-ignore-case": "ſ"}]}, {"a": "S"})
    assert both({"a": [{"equals-ignore-case": "ı"}]}, {"a": "I"})
    assert not both({"a": [{"equals-ignore-case": "K"}]}, {"a": "\u212a"})  # Kelvin sign
    assert both({"a": [{"equals-ignore-case": "\u212a"}]}, {"a": "k"})
    assert both({"a": [{"prefix": {"equals-ignore-case": "straß"}}]}, {"a": "STRASSE"})
    assert both({"a": [{"suffix": {"equals-ignore-case": "ſ"}}]}, {"a": "xS"})
    assert not both({"a": [{"prefix": {"equals-ignore-case": "k"}}]}, {"a": "\u212aab"})
    assert both({"a": [{"anything-but": {"equals-ignore-case": "K"}}]}, {"a": "\u212a"})
    assert not both({"a": [{"anything-but": {"equals-ignore-case": "ſ"}}]}, {"a": "S"})
