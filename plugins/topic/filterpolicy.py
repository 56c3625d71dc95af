"""SNS subscription filter policies, on the event-pattern engine.

A filter policy is an event pattern with SNS's limits. With the
``MessageAttributes`` scope (SNS's default) its keys are message attribute
names, matched against a document built from the attributes: a ``String``
is its value, a ``Number`` a number (so ``301.5`` equals ``3.015e2``), a
``String.Array`` its elements (any element may match); ``Binary`` attributes
are left out. With ``MessageBody`` the policy applies to the message, which
must be a JSON object. A message with no attributes never matches an
attributes policy, not even ``{"exists": false}`` (as SNS documents).

SNS's limits, as AWS counts them: at most 5 keys (for a nested policy, the
top-level keys), and at most 150 combinations: the product over keys of
each leaf's depth times its number of values, ``$or`` adding its branches.
``sns_policy`` reads a policy as SNS's API takes it (JSON text) and refuses
it with SNS's reasons (``FilterPolicyInvalid``).
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
        keys = _top_keys(policy)
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


def _top_keys(policy: Mapping[str, Any]) -> list[str]:
    """The keys SNS counts: the top-level ones (those of ``$or`` branches too)."""
    keys: list[str] = []
    for key, value in policy.items():
        if key == "$or" and isinstance(value, list):
            for branch in value:
                if isinstance(branch, Mapping):
                    keys.extend(_top_keys(branch))
        else:
            keys.append(key)
    return list(dict.fromkeys(keys))


def _combinations(policy: Mapping[str, Any], depth: int = 1) -> int:
    """SNS's count: the product over keys of each leaf's depth times its
    number of values; ``$or`` adds up its branches (AWS's documented examples:
    a 3-level key with 4 values counts 12)."""
    total = 1
    for key, value in policy.items():
        if key == "$or" and isinstance(value, list):
            total *= sum(_combinations(b, depth) for b in value if isinstance(b, Mapping)) or 1
        elif isinstance(value, Mapping):
            total *= _combinations(value, depth + 1)
        elif isinstance(value, list):
            total *= depth * max(len(value), 1)
    return total


class FilterPolicyInvalid(ValueError):
    """A policy SNS's API refuses: ``reason`` in SNS's words. ``attribute``:
    whether SNS prefixes it with the attribute's name (``FilterPolicy: ...``)."""

    def __init__(self, reason: str, *, attribute: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attribute = attribute


def _anything_but_operators(value: Any) -> list[str]:
    """The operators nested in ``anything-but`` objects of a policy (SNS
    takes only ``prefix`` there, with a string)."""
    found: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key == "anything-but" and isinstance(item, Mapping):
                found.extend(str(k) for k in item)
                if not isinstance(item.get("prefix", ""), str):
                    raise FilterPolicyInvalid("prefix match pattern must be a string")
            found.extend(_anything_but_operators(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(_anything_but_operators(item))
    return found


def sns_policy(text: str, scope: str = ATTRIBUTES_SCOPE) -> FilterPolicy:
    """A filter policy given as SNS's API gives it (JSON text), checked as SNS
    checks it; ``FilterPolicyInvalid`` with SNS's reason otherwise."""
    try:
        policy = json.loads(text)
    except ValueError as error:
        raise FilterPolicyInvalid(f"failed to parse JSON. {error}") from None
    if not isinstance(policy, dict):
        raise FilterPolicyInvalid("Filter policy must be a JSON object")
    if len(text.encode()) > MAX_SIZE:
        raise FilterPolicyInvalid("Filter policy is too large")
    if scope == ATTRIBUTES_SCOPE and any(isinstance(v, Mapping) for v in policy.values()):
        raise FilterPolicyInvalid(
            f"Filter policy scope {ATTRIBUTES_SCOPE} does not support nested filter policy",
            attribute=False,
        )
    unsupported = [op for op in _anything_but_operators(policy) if op != "prefix"]
    if unsupported:
        raise FilterPolicyInvalid(f"Unsupported anything-but pattern: {unsupported[0]}")
    try:
        pattern = compile_pattern(text)
    except PatternError as error:
        raise FilterPolicyInvalid(error.reason) from None
    if len(_top_keys(policy)) > MAX_KEYS:
        raise FilterPolicyInvalid(f"Filter policy can not have more than {MAX_KEYS} keys")
    if _combinations(policy) > MAX_COMBINATIONS:
        raise FilterPolicyInvalid("Filter policy is too complex")
    return FilterPolicy(pattern, scope)
