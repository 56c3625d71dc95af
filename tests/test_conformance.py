"""Every AWS-validated pattern case in ../shared/conformance/eventbridge-patterns.

Each case is checked three ways: ``evaluate_pattern`` (TestEventPattern), a
``Matcher`` holding the pattern given the event as a dict, and the same
``Matcher`` given the event as JSON text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.errors import EventValidationError, PatternError
from pipelines.patterns import Matcher, evaluate_pattern

from .conftest import SHARED

CASES = SHARED / "conformance" / "eventbridge-patterns"
json5 = pytest.importorskip("json5")


#: Stands in for the cases when ../shared is absent, so the test skips saying why.
ABSENT = "shared-data-absent"


def _template_ids() -> list[str]:
    if not CASES.is_dir():
        return [ABSENT]
    return sorted(p.stem for p in (CASES / "templates").glob("*.json5"))


def _expected() -> dict[str, Any]:
    return json.loads((CASES / "expected.json").read_text())


def _check(pattern_text: str, event_text: str, expected: bool) -> None:
    assert evaluate_pattern(pattern_text, event_text) is expected
    matcher = Matcher()
    matcher.add("rule", pattern_text)
    want = ["rule"] if expected else []
    assert matcher.match(json.loads(event_text)) == want
    assert matcher.match_json(event_text) == want
    assert matcher.match_json(event_text.encode()) == want


@pytest.mark.parametrize("stem", _template_ids())
def test_template(shared_dir: Path, stem: str) -> None:
    case = json5.loads((CASES / "templates" / f"{stem}.json5").read_text())
    pattern_text = json.dumps(case["EventPattern"])
    event_text = json.dumps(case["Event"])
    expected = _expected()[stem]
    if expected == "error: InvalidEventPatternException":
        with pytest.raises(PatternError) as caught:
            evaluate_pattern(pattern_text, event_text)
        aws = json.loads((CASES / "expected_errors.json").read_text())[stem]["message"]
        assert f"Event pattern is not valid. Reason: {caught.value.reason}" == aws
        with pytest.raises(PatternError):
            Matcher().add("rule", pattern_text)
    else:
        _check(pattern_text, event_text, expected)


def test_every_template_has_an_expectation(shared_dir: Path) -> None:
    expected = _expected()
    assert len(expected) == 155
    assert set(expected) <= set(_template_ids())


def _extra_cases() -> list[dict[str, Any]]:
    if not CASES.is_dir():
        return [{"name": ABSENT}]
    return json.loads((CASES / "extra_cases.json").read_text())  # type: ignore[no-any-return]


def _text(case: dict[str, Any], kind: str) -> str:
    if f"{kind}_raw" in case:
        return str(case[f"{kind}_raw"])
    if f"{kind}_file" in case:
        # Read raw: the duplicate-key case depends on the last key winning.
        return (CASES / case[f"{kind}_file"]).read_text()
    return json.dumps(case[kind])


@pytest.mark.parametrize("case", _extra_cases(), ids=lambda c: c["name"])
def test_extra_case(shared_dir: Path, case: dict[str, Any]) -> None:
    pattern_text = _text(case, "event_pattern")
    event_text = _text(case, "event")
    expected = case["expected"]
    if expected == "error: InvalidEventPatternException":
        with pytest.raises(PatternError):
            evaluate_pattern(pattern_text, event_text)
    elif expected == "error: ValidationException":
        with pytest.raises(EventValidationError) as caught:
            evaluate_pattern(pattern_text, event_text)
        assert caught.value.code == "ValidationException"
        assert caught.value.message.startswith("Parameter Event is not valid.")
    else:
        _check(pattern_text, event_text, expected)
