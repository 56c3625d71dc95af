"""Validation: events of a (source, detail-type) on a bus, or those of them
one rule matches, must match a registered schema version.

A ``Requirement`` names the bus, the source and detail type, the schema
(registry and name) and its version (None: the latest when the resource
starts), optionally a rule of that bus, and what happens to an event that
does not match:

- ``reject`` (the default): its PutEvents entry fails on its own with
  ``ErrorCode`` ``SchemaValidationError`` and an ``ErrorMessage`` naming the
  schema, the JSON path and the reason
  (``... shop@OrderPlaced version 2: $.detail.total: 'x' is not of type
  'number'``); the other entries of the call go on;
- ``dead_letter``: the entry is accepted (it gets its EventId) and goes to
  the ``dead_letter`` resource, as EventBridge sends dead letters, with the
  attributes ``ERROR_CODE`` (SchemaValidationError), ``ERROR_MESSAGE`` (the
  same text), ``SCHEMA_ARN`` and ``SCHEMA_VERSION`` (and ``RULE_NAME`` for a
  rule's). A bus's requirement keeps the event off the bus; a rule's
  withholds it from that rule alone (``bus.Screen``'s set of rules): the
  other rules it matches deliver it.

A rule's requirement applies to the events the rule matches when they are
put (its pattern, enabled, as it is then); a rule that matches nothing of
the (source, detail-type) is never asked.

Each bus with requirements gets one ``Screen`` (``TargetServices.screen``):
a dict lookup by (source, detail-type) per event put on that bus; an event
with no requirement costs that lookup alone, and a bus without
requirements nothing (the runtime tests its list of screens). An event of
a type that rules require is matched against those rules alone
(``TargetServices.watch_rules``: a matcher of a few rules, kept in step
with them), not against each rule's pattern in turn. Dead letters
wait in a bounded deque delivered by one task; when it is full the entry
is refused instead (a dead letter is never dropped silently).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Mapping
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
    #: A rule of ``bus``: only the events it matches must match the schema.
    rule: str | None = None


@dataclass(frozen=True)
class Compiled:
    """A requirement with its schema version's validator."""

    requirement: Requirement
    version: int
    arn: str
    validator: Validator


#: Dead letters waiting: (requirement, event, why it does not match).
Letters = collections.deque[tuple[Compiled, dict[str, Any], str]]


class Screens:
    """The requirements of one runtime at work: a screen per bus, and the
    dead letters' task."""

    def __init__(self, services: TargetServices) -> None:
        self.services = services
        #: The bus-wide requirements, by bus, then by (source, detail-type).
        self.by_bus: dict[str, dict[tuple[str, str], Compiled]] = {}
        #: The rules' requirements, by bus, then by (source, detail-type).
        self.by_rule: dict[str, dict[tuple[str, str], list[Compiled]]] = {}
        self._letters: Letters = collections.deque()
        self._ready = asyncio.Event()
        self._delivering = asyncio.Lock()

    def add(self, compiled: Compiled) -> None:
        requirement = compiled.requirement
        key = (requirement.source, requirement.detail_type)
        if requirement.rule is None:
            self.by_bus.setdefault(requirement.bus, {})[key] = compiled
        else:
            self.by_rule.setdefault(requirement.bus, {}).setdefault(key, []).append(compiled)

    @property
    def buses(self) -> set[str]:
        """The buses with requirements: each gets a screen."""
        return {*self.by_bus, *self.by_rule}

    def rules_of(self, bus: str) -> set[str]:
        """The rules of ``bus`` that requirements name."""
        return {
            compiled.requirement.rule
            for each in self.by_rule.get(bus, {}).values()
            for compiled in each
            if compiled.requirement.rule is not None
        }

    def screen_of(
        self, bus: str, match: Callable[[Mapping[str, Any]], list[str]] | None = None
    ) -> Callable[[dict[str, Any], int], bool | frozenset[str]]:
        """The screen of ``bus`` (``bus.Screen``); ``match`` names which of
        ``rules_of(bus)`` an event matches (``TargetServices.watch_rules``)."""
        table = self.by_bus.get(bus, {})
        rules = self.by_rule.get(bus, {})
        letters = self._letters
        ready = self._ready

        def screen(event: dict[str, Any], index: int) -> bool | frozenset[str]:
            key = (event["source"], event["detail-type"])
            found = table.get(key)
            if found is not None:
                message = _refusal(found, event)
                if message is not None:
                    _refuse_unless_room(found, letters, message, index)
                    letters.append((found, event, message))
                    ready.set()
                    return False
            checks = rules.get(key)
            if checks is None or match is None:
                return True
            matched = match(event)
            if not matched:
                return True
            return _rule_screen(checks, matched, letters, ready, event, index)

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
        if requirement.rule is not None:
            attributes["RULE_NAME"] = requirement.rule
        for attempt in range(1, ATTEMPTS + 1):
            context = DeliveryContext(requirement.rule or "", "", event, attempt, attributes)
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


def _refusal(found: Compiled, event: dict[str, Any]) -> str | None:
    """Why ``event`` does not match ``found``'s schema version (None: it does)."""
    problem = found.validator.problem(event)
    if problem is None:
        return None
    return (
        f"the event does not match schema {found.requirement.schema}"
        f" version {found.version}: {problem}"
    )


def _refuse_unless_room(found: Compiled, letters: Letters, message: str, index: int) -> None:
    """Refuse the entry, unless its requirement dead-letters and there is room."""
    if found.requirement.on_failure != DEAD_LETTER or len(letters) >= DEAD_LETTERS:
        raise EventValidationError(CODE, message, index)


def _rule_screen(
    checks: list[Compiled],
    matched: list[str],
    letters: Letters,
    ready: asyncio.Event,
    event: dict[str, Any],
    index: int,
) -> bool | frozenset[str]:
    """The rules' requirements of the event's (source, detail-type), for the
    ``matched`` rules: refuse the entry if one of them rejects it; else
    dead-letter it for each rule whose requirement it fails, withholding it
    from them."""
    failed: list[tuple[Compiled, str]] = []
    for found in checks:
        if found.requirement.rule not in matched:
            continue
        message = _refusal(found, event)
        if message is not None:
            failed.append((found, message))
    if not failed:
        return True
    # Every refusal is known before a dead letter is queued: an entry
    # refused is not dead-lettered for another rule as well.
    for found, message in failed:
        if found.requirement.on_failure != DEAD_LETTER:
            raise EventValidationError(CODE, message, index)
    if len(letters) + len(failed) > DEAD_LETTERS:
        raise EventValidationError(CODE, failed[0][1], index)
    withheld = []
    for found, message in failed:
        letters.append((found, event, message))
        withheld.append(found.requirement.rule)
    ready.set()
    return frozenset(name for name in withheld if name is not None)
