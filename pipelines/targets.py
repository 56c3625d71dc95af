"""What a target type provides, as plugins implement it.

A ``TargetType`` (registered through the ``register_targets`` hook) checks a
target's configuration and creates ``Target`` instances. A bus starts its
targets when it starts, calls ``deliver`` once per payload, and stops them
when it stops. ``deliver`` raises ``DeliveryError`` saying whether a retry may
help; any other exception counts as a retryable failure.
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines.errors import ConfigError


@dataclass(frozen=True, slots=True)
class DeliveryContext:
    """Where a payload comes from: handed to ``Target.deliver`` with it."""

    rule_name: str
    target_id: str
    event: Mapping[str, Any]
    attempt: int = 1
    extra: Mapping[str, Any] = field(default_factory=dict)


class Target(ABC):
    """One configured target, alive between ``start`` and ``stop``."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Acquire what delivery needs (connections, imports). Called once."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Release it. Called once, after the last ``deliver`` has returned."""

    @abstractmethod
    async def deliver(self, payload: Any, context: DeliveryContext) -> Any:
        """Deliver one payload; raise ``DeliveryError`` on failure."""


class TargetType(ABC):
    """A kind of target (``function``, ``queue``, ...), provided by a plugin."""

    #: The name configs use in ``type:``; unique across plugins.
    name: str
    #: One line for ``pipelines plugins``.
    description: str = ""

    @abstractmethod
    def create(self, target_id: str, config: Mapping[str, Any]) -> Target:
        """Validate ``config`` and return a target; raise ``ConfigError`` naming the field."""


def check_keys(where: str, config: Mapping[str, Any], allowed: set[str]) -> None:
    """Reject unknown keys, suggesting the closest allowed one."""
    for key in config:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{where}.{key}", f"unknown setting (allowed: {', '.join(sorted(allowed))}){hint}"
            )


def number_setting(
    where: str,
    config: Mapping[str, Any],
    key: str,
    default: float,
    low: float,
    high: float,
    *,
    integer: bool = False,
) -> float:
    """A numeric setting within [low, high], with a message naming it when it is not."""
    value = config.get(key, default)
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        noun = "an integer" if integer else "a number"
        raise ConfigError(f"{where}.{key}", f"must be {noun}, not {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{where}.{key}", f"must be between {low:g} and {high:g}, not {value!r}")
    return float(value)
