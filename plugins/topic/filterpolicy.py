"""SNS subscription filter policies, on the event-pattern engine.

A filter policy is an event pattern with SNS's limits. With the
``MessageAttributes`` scope (SNS's default) its keys are message attribute
names, matched against a document built from the attributes: a ``String``
is its value, a ``Number`` a number (so ``301.5`` equals ``3.015e2``), a
``String.Array`` its elements (any element may match); ``Binary`` attributes
are left out. With ``MessageBody`` the policy applies to the message, which
must be a JSON object. A message with no attributes never matches an
attributes policy, not even ``{"exists": false}`` (as SNS documents).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from pipelines.errors import ConfigError, PatternError, Where
from pipelines.patterns import Pattern, compile_pattern

ATTRIBUTES_SCOPE = "MessageAttributes"
BODY_SCOPE = "MessageBody"
MAX_KEYS = 5
MAX_COMBINATIONS = 150
MAX_SIZE = 256 * 1024


class FilterPolicy:
    """A compiled filter policy and its scope."""

    def __init__(self, pattern: Pattern, scope: str) -> None:
        self.pattern = pattern
        self.scope = scope

    @classmethod
    def compile(
        cls, where: Where | str, policy: Any, scope: str = ATTRIBUTES_SCOPE
    ) -> FilterPolicy:
        where = Where.of(where)
        if scope not in (ATTRIBUTES_SCOPE, BODY_SCOPE):
            raise ConfigError(
                where / "filter_policy_scope", f"must be {ATTRIBUTES_SCOPE} or {BODY_SCOPE}"
            )
        if not isinstance(policy, Mapping) or not policy:
            raise ConfigError(where / "filter_policy", "must be a non-empty mapping")
        text = json.dumps(policy)
        if len(text.encode()) > MAX_SIZE:
            raise ConfigError(where / "filter_policy", "is larger than SNS's 256 KB")
        keys = _leaf_keys(policy)
        if len(keys) > MAX_KEYS:
            raise ConfigError(
                where / "filter_policy",
                f"names {len(keys)} keys ({', '.join(keys)}); SNS allows at most {MAX_KEYS}",
            )
        if scope == ATTRIBUTES_SCOPE:
            nested = [key for key, value in policy.items() if isinstance(value, Mapping)]
            if nested:
                raise ConfigError(
                    where / "filter_policy" / nested[0],
                    "an attributes policy cannot nest keys (use filter_policy_scope: MessageBody)",
                )
        combinations = _combinations(policy)
        if combinations > MAX_COMBINATIONS:
            raise ConfigError(
                where / "filter_policy",
                f"has {combinations} value combinations; SNS allows at most {MAX_COMBINATIONS}",
            )
        try:
            pattern = compile_pattern(text)
        except PatternError as exc:
            raise ConfigError(where / "filter_policy", str(exc)) from None
        return cls(pattern, scope)

    def matches(self, message: str, attributes: Mapping[str, Mapping[str, str]]) -> bool:
        if self.scope == BODY_SCOPE:
            try:
                body = json.loads(message)
            except ValueError:
                return False
            return isinstance(body, dict) and self.pattern.matches(body)
        document = attribute_document(attributes)
        return bool(document) and self.pattern.matches(document)


def attribute_document(attributes: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """What an attributes policy is matched against (see the module's docstring)."""
    document: dict[str, Any] = {}
    for name, attribute in attributes.items():
        kind = attribute.get("Type", attribute.get("DataType", "String"))
        value = attribute.get("Value", attribute.get("StringValue"))
        if value is None or kind.startswith("Binary"):
            continue
        if kind.startswith("Number"):
            try:
                number = float(value)
            except ValueError:
                continue
            if math.isfinite(number):
                document[name] = int(number) if number.is_integer() else number
        elif kind == "String.Array":
            try:
                items = json.loads(value)
            except ValueError:
                continue
            if isinstance(items, list):
                document[name] = items
        else:
            document[name] = value
    return document


def _leaf_keys(policy: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for key, value in policy.items():
        if key == "$or" and isinstance(value, list):
            for branch in value:
                if isinstance(branch, Mapping):
                    keys.extend(k for k in _leaf_keys(branch, prefix) if k not in keys)
        elif isinstance(value, Mapping):
            keys.extend(_leaf_keys(value, f"{prefix}{key}."))
        else:
            keys.append(f"{prefix}{key}")
    return list(dict.fromkeys(keys))


def _combinations(policy: Mapping[str, Any]) -> int:
    """SNS's count: the product of the sizes of the value arrays ($or adds up)."""
    total = 1
    for key, value in policy.items():
        if key == "$or" and isinstance(value, list):
            total *= sum(_combinations(b) for b in value if isinstance(b, Mapping)) or 1
        elif isinstance(value, Mapping):
            total *= _combinations(value)
        elif isinstance(value, list):
            total *= max(len(value), 1)
    return total
