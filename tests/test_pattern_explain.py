"""Why not matched: ``explain_pattern`` and ``pipelines test-pattern --explain``."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, assume, given, settings

from pipelines.errors import PatternError
from pipelines.patterns import compile_pattern, explain_pattern
from pipelines.patterns.compiler import compile_subrules
from pipelines.patterns.explain import ARRAYS, MISSING, NO_VALUE_MATCHES, PRESENT
from tests.helpers import run_cli
from tests.test_matcher_properties import events, patterns

EVENT = {
    "id": "1",
    "account": "123456789012",
    "source": "orders",
    "time": "2026-12-04T00:00:00Z",
    "region": "us-east-1",
    "detail-type": "Order Placed",
    "detail": {"total": 50, "state": "open", "ip": "10.0.0.1", "items": [{"sku": "a", "qty": 1}]},
}


def failures(explanation: Any, branch: int) -> dict[str, tuple[str, list[Any], list[Any]]]:
    found = explanation.to_json()["branches"][branch]["failures"]
    return {f["path"]: (f["reason"], f["conditions"], f["values"]) for f in found}


def test_each_branch_names_its_failing_fields_and_conditions() -> None:
    pattern = {
        "source": ["orders"],
        "detail": {"total": [{"numeric": [">", 100]}]},
        "$or": [
            {"detail": {"state": ["closed", {"prefix": "sh"}]}},
            {"detail": {"ip": [{"cidr": "192.168.0.0/16"}], "coupon": [{"exists": True}]}},
            {"detail": {"state": [{"exists": False}]}},
        ],
    }
    explanation = explain_pattern(pattern, EVENT)
    assert not explanation.matched
    assert len(explanation.branches) == 3
    first = failures(explanation, 0)
    assert first == {
        "detail.state": (NO_VALUE_MATCHES, ["closed", {"prefix": "sh"}], ["open"]),
        "detail.total": (NO_VALUE_MATCHES, [{"numeric": [">", 100]}], [50]),
    }
    second = failures(explanation, 1)
    assert second["detail.ip"] == (NO_VALUE_MATCHES, [{"cidr": "192.168.0.0/16"}], ["10.0.0.1"])
    assert second["detail.coupon"] == (MISSING, [{"exists": True}], [])
    third = failures(explanation, 2)
    assert third["detail.state"] == (PRESENT, [{"exists": False}], ["open"])
    # source holds in every branch: it is never named.
    assert all("source" not in failures(explanation, n) for n in range(3))
    text = "\n".join(explanation.lines())
    assert 'detail.total: 50 satisfies none of {"numeric":[">",100]}' in text
    assert "branch 2 of 3" in text


def test_values_from_different_array_elements_are_named() -> None:
    pattern = {"detail": {"items": {"sku": ["a"], "qty": [2]}}}
    event = {**EVENT, "detail": {"items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}]}}
    explanation = explain_pattern(pattern, event)
    assert not explanation.matched
    reasons = failures(explanation, 0)
    assert {reason for reason, _, _ in reasons.values()} == {ARRAYS}
    assert set(reasons) == {"detail.items.sku", "detail.items.qty"}


def test_a_match_says_which_branch_held() -> None:
    pattern = {"$or": [{"source": ["x"]}, {"source": ["orders"]}]}
    explanation = explain_pattern(pattern, EVENT)
    assert explanation.matched
    assert [b.matched for b in explanation.branches] == [False, True]
    assert explanation.lines() == ["matched (branch 2 of 2)"]


def _nested(fields: dict[str, list[Any]]) -> dict[str, Any]:
    pattern: dict[str, Any] = {}
    for path, conditions in fields.items():
        node = pattern
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = conditions
    return pattern


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patterns(), events())
def test_explanations_agree_with_matching_and_quote_the_pattern(
    pattern: dict[str, Any], event: dict[str, Any]
) -> None:
    try:
        compiled = compile_pattern(pattern)
    except PatternError:
        assume(False)  # the strategy draws some patterns EventBridge refuses
    explanation = compiled.explain(event)
    assert explanation.matched == compiled.matches(event)
    assert len(explanation.branches) == len(compiled.subrules)
    for branch, subrule in zip(explanation.branches, compiled.subrules, strict=True):
        # A failing branch names at least one field; a holding one none.
        assert bool(branch.failures) != branch.matched
        # The conditions are quoted in the pattern's syntax: compiled again,
        # they are the branch's very conditions.
        [again] = compile_subrules(json.loads(json.dumps(_nested(dict(branch.fields)))))
        assert sorted(again, key=lambda t: t.path) == sorted(subrule, key=lambda t: t.path)


def test_cli_explain_prints_the_reasons_and_exits_1() -> None:
    pattern = json.dumps({"source": ["orders"], "detail": {"state": ["closed"]}})
    result = run_cli("test-pattern", "-p", pattern, "-e", json.dumps(EVENT), "--explain")
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [
        "not matched",
        '  detail.state: "open" satisfies none of "closed"',
    ]
    as_json = run_cli(
        "test-pattern", "-p", pattern, "-e", json.dumps(EVENT), "--explain", "-o", "json"
    )
    assert as_json.returncode == 1
    answer = json.loads(as_json.stdout)
    assert answer["matched"] is False
    assert answer["branches"][0]["failures"][0]["path"] == "detail.state"
    matched = run_cli(
        "test-pattern", "-p", '{"source": ["orders"]}', "-e", json.dumps(EVENT), "--explain"
    )
    assert matched.returncode == 0 and matched.stdout.strip() == "matched (branch 1 of 1)"
