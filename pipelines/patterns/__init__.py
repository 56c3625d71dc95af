"""EventBridge event patterns: compile one, test it, or match many at once.

>>> rule = {"source": ["orders"], "detail": {"total": [{"numeric": [">", 100]}]}}
>>> pattern = compile_pattern(rule)
>>> pattern.matches({"source": "orders", "detail": {"total": 250}})
True

``Matcher`` holds many named patterns and returns all that match an event,
at a cost that does not grow with the number of rules that cannot match.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pipelines.errors import PatternError
from pipelines.patterns.compiler import (
    DEFAULT_MAX_PATTERN_LENGTH,
    FieldTest,
    SubRule,
    compile_subrules,
    load_pattern,
)
from pipelines.patterns.evaluate import subrule_matches
from pipelines.patterns.explain import Explanation, explain_subrules
from pipelines.patterns.matcher import Matcher, parse_event_json

__all__ = [
    "DEFAULT_MAX_PATTERN_LENGTH",
    "Explanation",
    "FieldTest",
    "Matcher",
    "Pattern",
    "PatternError",
    "compile_pattern",
    "evaluate_pattern",
    "explain_pattern",
]


class Pattern:
    """A compiled, validated event pattern."""

    __slots__ = ("subrules", "text")

    def __init__(self, text: str, subrules: tuple[SubRule, ...]) -> None:
        self.text = text
        self.subrules = subrules

    @property
    def source(self) -> dict[str, Any]:
        """The pattern as plain JSON data (duplicate keys: the last one)."""
        parsed: dict[str, Any] = json.loads(self.text)
        return parsed

    def matches(self, event: Mapping[str, Any]) -> bool:
        """True when the event (a dict) matches, evaluated rule by rule."""
        return any(subrule_matches(subrule, event) for subrule in self.subrules)

    def explain(self, event: Mapping[str, Any]) -> Explanation:
        """Why the event (a dict) matches or not: each ``$or`` branch's failing
        fields and conditions (``pipelines.patterns.explain``)."""
        return explain_subrules(self.subrules, event)

    def __repr__(self) -> str:
        return f"Pattern({self.text})"


def compile_pattern(
    pattern: str | bytes | dict[str, Any], *, max_length: int = DEFAULT_MAX_PATTERN_LENGTH
) -> Pattern:
    """Validate and compile an event pattern given as JSON text or a dict.

    Raises ``PatternError`` naming the JSON path and the reason, worded as
    EventBridge words it.
    """
    text, source = load_pattern(pattern, max_length)
    return Pattern(text, compile_subrules(source))


#: The envelope fields TestEventPattern requires of an event.
REQUIRED_EVENT_FIELDS = ("id", "account", "source", "time", "region", "detail-type")


def evaluate_pattern(
    pattern: str | bytes | dict[str, Any] | Pattern,
    event: str | bytes | Mapping[str, Any],
    *,
    max_length: int = DEFAULT_MAX_PATTERN_LENGTH,
) -> bool:
    """EventBridge's TestEventPattern: does ``event`` match ``pattern``?

    The event must be a JSON object with the envelope fields TestEventPattern
    requires; otherwise ``EventValidationError`` ("Parameter Event is not
    valid.") is raised. An invalid pattern raises ``PatternError``.
    """
    compiled = (
        pattern if isinstance(pattern, Pattern) else compile_pattern(pattern, max_length=max_length)
    )
    return compiled.matches(_test_event(event))


def explain_pattern(
    pattern: str | bytes | dict[str, Any] | Pattern,
    event: str | bytes | Mapping[str, Any],
    *,
    max_length: int = DEFAULT_MAX_PATTERN_LENGTH,
) -> Explanation:
    """``evaluate_pattern`` with its reasons: for an event that does not match,
    each field and condition that failed, in every ``$or`` branch. The same
    errors as ``evaluate_pattern`` for an invalid pattern or event."""
    compiled = (
        pattern if isinstance(pattern, Pattern) else compile_pattern(pattern, max_length=max_length)
    )
    return compiled.explain(_test_event(event))


def _test_event(event: str | bytes | Mapping[str, Any]) -> dict[str, Any]:
    """The event TestEventPattern takes: a JSON object with the envelope's fields."""
    from pipelines.errors import EventValidationError

    try:
        parsed = parse_event_json(event) if isinstance(event, str | bytes) else dict(event)
    except EventValidationError:
        raise EventValidationError("ValidationException", "Parameter Event is not valid.") from None
    missing = [name for name in REQUIRED_EVENT_FIELDS if name not in parsed]
    if missing:
        raise EventValidationError(
            "ValidationException",
            f"Parameter Event is not valid. Reason: missing field {missing[0]!r}.",
        )
    return parsed
