"""Validation: events of a (source, detail-type) on a bus must match a
registered schema version.

A ``Requirement`` names the bus, the source and detail type, the schema
(registry and name) and its version (None: the latest when the resource
starts), and what happens to an event that does not match:

- ``reject`` (the default): its PutEvents entry fails on its own with
  ``ErrorCode`` ``SchemaValidationError`` and an ``ErrorMessage`` naming the
  schema, the JSON path and the reason
  (``... shop@OrderPlaced version 2: $.detail.total: 'x' is not of type
  'number'``); the other entries of the call go on;
- ``dead_letter``: the entry is accepted (it gets its EventId) but is not put
  on the bus: it goes to the ``dead_letter`` resource, as EventBridge sends
  dead letters, with the attributes ``ERROR_CODE`` (SchemaValidationError),
  ``ERROR_MESSAGE`` (the same text), ``SCHEMA_ARN`` and ``SCHEMA_VERSION``.

Each bus with requirements gets one ``Screen`` (``TargetServices.screen``):
a dict lookup by (source, detail-type) per event put on that bus; an event
with no requirement costs that lookup alone, and a bus without
requirements nothing (the runtime tests its list of screens). Dead letters
wait in a bounded deque delivered by one task; when it is full the entry
is refused instead (a dead letter is never dropped silently).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipelines.clock import sleep
from pipelines.errors import EventValidationError
from pipelines.targets import DeliveryContext, TargetServices, describe_error
from plugins.schemas.content import Validator

log = logging.getLogger("plugins.schemas")

CODE = "SchemaValidationError"
REJECT, DEAD_LETTER = "reject", "dead_letter"
#: Dead letters waiting for their resource, at most.
DEAD_LETTERS = 1000
#: Attempts at delivering one dead letter.
ATTEMPTS = 3


@dataclass(frozen=True)
class Requirement:
    bus: str
    source: str
    detail_type: str
    registry: str
    schema: str
    version: int | None = None
    on_failure: str = REJECT
    dead_letter: str | None = None


@dataclass(frozen=True)
class Compiled:
    """A requirement with its schema version's validator."""

    requirement: Requirement
    version: int
    arn: str
    validator: Validator


class Screens:
    """The requirements of one runtime at work: a screen per bus, and the
    dead letters' task."""

    def __init__(self, services: TargetServices) -> None:
        self.services = services
        self.by_bus: dict[str, dict[tuple[str, str], Compiled]] = {}
        self._letters: collections.deque[tuple[Compiled, dict[str, Any], str]] = collections.deque()
        self._ready = asyncio.Event()
        self._delivering = asyncio.Lock()

    def add(self, compiled: Compiled) -> None:
        requirement = compiled.requirement
        table = self.by_bus.setdefault(requirement.bus, {})
        table[(requirement.source, requirement.detail_type)] = compiled

    def screen_of(self, bus: str) -> Any:
        """The screen of ``bus`` (``bus.Screen``)."""
        table = self.by_bus[bus]
        letters = self._letters
        ready = self._ready

        def screen(event: dict[str, Any], index: int) -> bool:
            found = table.get((event["source"], event["detail-type"]))
            if found is None:
                return True
            problem = found.validator.problem(event)
            if problem is None:
                return True
            requirement = found.requirement
            message = (
                f"the event does not match schema {requirement.schema}"
                f" version {found.version}: {problem}"
            )
            if requirement.on_failure == DEAD_LETTER and len(letters) < DEAD_LETTERS:
                letters.append((found, event, message))
                ready.set()
                return False
            raise EventValidationError(CODE, message, index)

        return screen

    async def run(self) -> None:
        """Deliver the dead letters until cancelled."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            await self.deliver_waiting()

    async def deliver_waiting(self) -> None:
        """Deliver the dead letters waiting now, in order (one caller at a
        time: the task, or the resource's drain at shutdown)."""
        async with self._delivering:
            while self._letters:
                compiled, event, message = self._letters[0]
                await self._deliver(compiled, event, message)
                self._letters.popleft()

    async def _deliver(self, compiled: Compiled, event: Mapping[str, Any], message: str) -> None:
        requirement = compiled.requirement
        assert requirement.dead_letter is not None
        attributes = {
            "ERROR_CODE": CODE,
            "ERROR_MESSAGE": message,
            "SCHEMA_ARN": compiled.arn,
            "SCHEMA_VERSION": str(compiled.version),
        }
        for attempt in range(1, ATTEMPTS + 1):
            context = DeliveryContext("", "", event, attempt, attributes)
            try:
                target = self.services.resource(requirement.dead_letter)
                await target.deliver(event, context)
                return
            except Exception as exc:
                log.warning(
                    "schema validation's dead letter to %s failed (attempt %d): %s",
                    requirement.dead_letter,
                    attempt,
                    describe_error(exc),
                )
                if attempt < ATTEMPTS:
                    await sleep(self.services.clock, 0.5 * attempt)
        log.error(
            "an event refused by schema %s was not delivered to %s: %s",
            requirement.schema,
            requirement.dead_letter,
            message,
        )

    @property
    def waiting(self) -> int:
        return len(self._letters)
