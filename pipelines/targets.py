"""What a target type provides, as plugins implement it.

A ``TargetType`` (registered through the ``register_targets`` hook) checks a
target's configuration and creates ``Target`` instances. A bus starts its
targets when it starts, calls ``deliver`` once per payload, and stops them
when it stops. ``deliver`` raises ``DeliveryError`` saying whether a retry may
help; any other exception counts as a retryable failure.
"""

from __future__ import annotations

import asyncio
import difflib
from abc import ABC, abstractmethod
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pipelines.errors import ConfigError

if TYPE_CHECKING:
    from pipelines.clock import Clock


@dataclass(frozen=True, slots=True)
class DeliveryContext:
    """Where a payload comes from: handed to ``Target.deliver`` with it."""

    rule_name: str
    target_id: str
    event: Mapping[str, Any]
    attempt: int = 1
    #: Message attributes: a dead letter's RULE_NAME, ERROR_CODE, ... (strings).
    attributes: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)


class TargetServices(Protocol):
    """What the runtime offers a target while it runs (handed to ``Target.start``)."""

    @property
    def clock(self) -> Clock:
        """The runtime's clock: use it for every time-based decision."""
        ...

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run background work as a task owned by the runtime's task group."""
        ...

    def resource(self, name: str) -> Target:
        """Another target resource by name (a destination); raises ``ResourceNotFoundError``."""
        ...


class Target(ABC):
    """One configured target, alive between ``start`` and ``stop``."""

    #: How many deliveries of one rule target may run at once.
    concurrency: int = 16

    async def start(self, services: TargetServices) -> None:  # noqa: B027 - optional hook
        """Acquire what delivery needs (connections, imports). Called once."""

    async def drain(self, timeout: float) -> None:  # noqa: B027 - optional hook
        """Finish background work (an internal queue) within ``timeout`` seconds.

        Called at shutdown after the runtime has stopped intake and drained its
        own deliveries, while the runtime's task group still runs; report what
        cannot be finished in time.
        """

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
