"""The ``event_bus`` target: a rule forwarding events to another bus of the runner.

Settings: ``bus`` (required), the name of the bus events are put on.

    resources:
      to-audit: {type: event_bus, bus: audit}
    rules:
      orders-to-audit:
        pattern: {source: [shop]}
        targets: [{id: audit, resource: to-audit}]

Through the API, PutTargets with a bus's ARN as the target's ``Arn`` makes
such a resource itself (``event-bus/NAME``), as EventBridge takes a bus ARN.

What EventBridge does, and so this does:

- The event goes to the other bus as a PutEvents entry of the rule's bus's
  account (its source, detail-type, detail, resources and time kept; a new
  id): when that account is not the receiving bus's, the receiving bus's
  policy must allow it ``events:PutEvents`` (``aws:SourceArn`` is the rule's
  ARN), else the attempt fails with ``AccessDeniedException``, which is not
  retried: the rule target's dead letter gets it.
- An event a bus received from another bus is not forwarded to a third one
  (EventBridge: "EventBridge can't route events received from a sender event
  bus to a third event bus"): such a delivery succeeds without putting
  anything. A forwarded event is known by its id (``event.is_forwarded``).
- Retries (a full or stopping runtime: ``InternalFailure``) and dead letters
  are the rule target's, as for any target.

The target's payload must be an event (no input transformation to another
shape): anything else fails, not retried, as ``InvalidArgument``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from pipelines.errors import ConfigError, DeliveryError, Problems, Where
from pipelines.event import DEFAULT_ACCOUNT, dump_json, is_forwarded
from pipelines.hookspecs import hookimpl
from pipelines.policy import Caller
from pipelines.settings import Settings, Shape
from pipelines.targets import DeliveryContext, Target, TargetServices, TargetType, started

log = logging.getLogger("pipelines.eventbus")

SETTINGS_TABLE = Settings(
    {
        "bus": Shape(
            {"type": "string", "pattern": "^[.\\-_A-Za-z0-9]{1,64}$"},
            "the bus the events are put on",
        ),
    }
)


def rule_account(rule_arn: str | None) -> str:
    """The account of a rule's ARN (``arn:aws:events:REGION:ACCOUNT:rule/...``)."""
    parts = (rule_arn or "").split(":")
    return parts[4] if len(parts) > 5 and parts[4] else DEFAULT_ACCOUNT


def forwarded_entry(payload: Any, bus: str) -> dict[str, Any]:
    """The PutEvents entry that puts the event ``payload`` on ``bus``."""
    if not isinstance(payload, Mapping) or not {"source", "detail-type"} <= payload.keys():
        raise DeliveryError(
            "InvalidArgument",
            "an event bus target takes the event itself (an input that is not an event"
            " cannot be put on a bus)",
            retryable=False,
        )
    entry: dict[str, Any] = {
        "Source": payload["source"],
        "DetailType": payload["detail-type"],
        "Detail": dump_json(payload.get("detail", {})).decode(),
        "EventBusName": bus,
    }
    if payload.get("resources"):
        entry["Resources"] = list(payload["resources"])
    if payload.get("time"):
        entry["Time"] = payload["time"]
    return entry


class EventBusTarget(Target):
    concurrency = 16

    def __init__(self, name: str, bus: str) -> None:
        self.name = name
        self.bus = bus
        self._services: TargetServices | None = None

    async def start(self, services: TargetServices) -> None:
        self._services = services

    async def stop(self) -> None:
        self._services = None

    async def deliver(self, payload: Any, context: DeliveryContext) -> None:
        services = started(self._services, f"target {self.name}")
        if is_forwarded(context.event.get("id")):
            log.debug(
                "rule %s: event %s came from another bus; not forwarded to bus %s (one hop)",
                context.rule_name,
                context.event.get("id"),
                self.bus,
            )
            return
        entry = forwarded_entry(payload, self.bus)
        caller = Caller(rule_account(context.rule_arn))
        result = await services.put_events([entry], caller=caller, forwarded_by=context.rule_arn)
        answer = result["Entries"][0]
        code = answer.get("ErrorCode")
        if code is not None:
            # A refusal by policy or a bus that is gone will not change by
            # trying again; a stopping or full runtime (InternalFailure) may.
            raise DeliveryError(
                code, answer.get("ErrorMessage", ""), retryable=code == "InternalFailure"
            )


class EventBusType(TargetType):
    name = "event_bus"
    description = "Forward events to another event bus (EventBridge's bus-to-bus target)"
    settings = SETTINGS_TABLE

    def create(self, name: str, config: Mapping[str, Any]) -> EventBusTarget:
        where = Where(f"target {name}")
        problems = Problems()
        with problems:
            SETTINGS_TABLE.check_keys(where, config)
        bus = config.get("bus")
        with problems:
            if not isinstance(bus, str) or not bus:
                raise ConfigError(where / "bus", "is required: the name of the bus to put on")
        problems.raise_any()
        return EventBusTarget(name, str(bus))


@hookimpl
def register_targets(register: Callable[[TargetType], None]) -> None:
    register(EventBusType())
