"""An event bus: its rules and their targets, intake and dispatch.

``put_events`` validates each entry on its own and puts the accepted events in
the bus's bounded intake queue (waiting when it is full: backpressure). One
dispatcher task per bus takes events from the intake, matches them against
all enabled rules at once (``Matcher``) and submits one ``Job`` per matched
rule target to that target's ``Delivery`` (see ``pipelines.delivery``).

A ``Bus`` belongs to a host (``BusHost``: in practice the ``Runtime``), which
owns the tasks, the target resources, the clock and the state database; the
bus owns its rules, its intake and its rules' ``Delivery`` objects.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import repeat
from types import MappingProxyType
from typing import Any, Protocol

from pipelines import metrics as m
from pipelines.delivery import Deliverer, Delivery, Job, RetryPolicy, Settlement
from pipelines.errors import ConfigError, Problems, ResourceNotFoundError, Where
from pipelines.event import DEFAULT_ACCOUNT, DEFAULT_REGION
from pipelines.intake import DurableIntake
from pipelines.limits import Limits
from pipelines.patterns import Matcher, Pattern, compile_pattern
from pipelines.policy import BusPolicy
from pipelines.schedule import Schedule, parse_schedule
from pipelines.scheduler import Scheduler
from pipelines.targets import Target, check_keys
from pipelines.transform import (
    TARGET_PARAMETERS,
    Transform,
    check_target_parameters,
    compile_transform,
)

log = logging.getLogger("pipelines.bus")
#: Sees each dispatched event: (bus name, event). See ``Runtime.tap``.
Observer = Callable[[str, dict[str, Any]], None]
#: Looks at each valid event put on one bus before it is accepted (a plugin's
#: requirement: the schemas plugin's validation). Given (event, entry index),
#: it returns True to let the event through, False when it took the event
#: itself (answered for, not put on the bus: a dead letter), a set of rule
#: names to put the event on the bus but withhold it from those rules (their
#: requirement took it for them), or raises ``EventValidationError`` to
#: refuse the entry. See ``Runtime.screen``.
Screen = Callable[[dict[str, Any], int], bool | frozenset[str]]
#: Which rules an event put on a bus is for (and what its intake row keeps):
#: None, every rule it matches; a rule name, that scheduled rule (its run); a
#: set, the matched rules among them (a replay to chosen rules).
Address = str | frozenset[str] | None
#: The same in memory, or a list: the rules it matched when it was taken in
#: (see ``Bus._matched_in``).
Addressed = Address | list[str]
#: An event in the intake: (event, ingested, addressed, its producer's
#: settlement if the producer waits for one). The settlement travels with the
#: event so the dispatcher hands it to the event's jobs without a lookup.
Intake = tuple[dict[str, Any], float, Addressed, Settlement | None]


class BusHost(Protocol):
    """What a bus uses of its owner (the ``Runtime``), and nothing more."""

    @property
    def counters(self) -> m.Metrics: ...

    @property
    def limits(self) -> Limits: ...

    @property
    def scheduler(self) -> Scheduler: ...

    @property
    def deliverer(self) -> Deliverer: ...

    @property
    def taps(self) -> list[Observer]: ...

    @property
    def intake(self) -> DurableIntake | None:
        """Where accepted events are written before they are answered for
        (None: ``durability: memory``, or no state database)."""
        ...

    def resource(self, name: str, *, where: str | None = None) -> Target: ...

    async def put_events(
        self, entries: Iterable[Mapping[str, Any]], *, default_bus: str = ...
    ) -> dict[str, Any]: ...


ENABLED = "ENABLED"
DISABLED = "DISABLED"
_NAME = re.compile(r"[.\-_A-Za-z0-9]{1,64}")
TARGET_KEYS = {
    "id",
    "resource",
    "input",
    "input_path",
    "input_transformer",
    "input_jmespath",
    "retry_policy",
    "dead_letter",
    *TARGET_PARAMETERS,
}


def check_name(where: Where, kind: str, name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            where, f"{kind} {name!r} must be 1 to 64 characters of letters, digits, '.', '-', '_'"
        )
    return name


@dataclass(frozen=True, slots=True)
class RuleTarget:
    """A rule target as declared (PutTargets' Target, in our names)."""

    id: str
    resource: str
    retry_policy: RetryPolicy
    dead_letter: str | None
    transform: Transform
    declared: Mapping[str, Any]
    #: What the target's type reads at each delivery (``http_parameters``):
    #: ``DeliveryContext.extra``, checked by the resource (``Target.accept``).
    parameters: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, where: Where, config: Mapping[str, Any]) -> RuleTarget:
        if isinstance(config, RuleTarget):
            return config
        if not isinstance(config, Mapping):
            raise ConfigError(
                where, f"a target is a mapping with 'id' and 'resource', not {config!r}"
            )
        problems = Problems()  # every problem of the target, not just its first
        with problems:
            check_keys(where, config, TARGET_KEYS)
        with problems:
            target_id = check_name(where / "id", "target id", config.get("id"))
        resource = config.get("resource")
        if not isinstance(resource, str) or not resource:
            problems.add(
                ConfigError(where / "resource", "is required: the name of a target resource")
            )
        with problems:
            retry = config.get("retry_policy") or {}
            if not isinstance(retry, Mapping):
                raise ConfigError(where / "retry_policy", "must be a mapping")
            retry_policy = RetryPolicy.from_config(where / "retry_policy", retry)
        dead_letter = config.get("dead_letter")
        if dead_letter is not None and (not isinstance(dead_letter, str) or not dead_letter):
            problems.add(
                ConfigError(where / "dead_letter", "must be the name of a target resource")
            )
        with problems:
            transform = compile_transform(where, config)
        parameters: dict[str, Any] = {}
        for key in TARGET_PARAMETERS:
            if config.get(key) is not None:
                with problems:
                    parameters[key] = check_target_parameters(where / key, key, config[key])
        problems.raise_any()
        return cls(
            id=target_id,
            resource=str(resource),
            retry_policy=retry_policy,
            dead_letter=dead_letter,
            transform=transform,
            declared=dict(config),
            parameters=MappingProxyType(parameters),
        )

    def describe(self) -> dict[str, Any]:
        described = dict(self.declared)
        described["retry_policy"] = {
            "maximum_retry_attempts": self.retry_policy.maximum_retry_attempts,
            "maximum_event_age": self.retry_policy.maximum_event_age,
        }
        return described


@dataclass(slots=True, eq=False)
class Rule:
    """A rule matches events with its ``pattern``, or fires on its ``schedule``."""

    name: str
    pattern: Pattern | None
    schedule: Schedule | None
    state: str
    description: str
    matched: m.Counter
    triggered: m.Counter
    targets: dict[str, RuleTarget] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)


class Bus:
    """A named event bus. Create through ``Runtime.bus`` / ``Runtime.create_bus``."""

    def __init__(self, host: BusHost, name: str, account: str = DEFAULT_ACCOUNT) -> None:
        self.host = host
        self.name = name
        # -- bus permissions (pipelines.policy) --
        #: The account that owns it: callers of other accounts need its policy's leave.
        self.account = account
        self.arn = f"arn:aws:events:{DEFAULT_REGION}:{account}:event-bus/{name}"
        #: Its resource policy in force (PutPermission, or the config's).
        self.policy = BusPolicy()
        #: The policy its config declares (``buses: NAME: policy``): one made
        #: through the API replaces it until the declaration changes.
        self.declared_policy = BusPolicy()
        #: CreateEventBus/UpdateEventBus's Description and DeadLetterConfig's Arn.
        self.description = ""
        self.dead_letter_arn: str | None = None
        # -- end of bus permissions --
        #: When it was made (epoch seconds; its owner sets it from its clock).
        self.created = 0.0
        self._rules: dict[str, Rule] = {}
        self._matcher = Matcher()
        #: Matchers over some of its rules, kept in step with them (``watch``).
        self._watchers: list[tuple[frozenset[str], Matcher]] = []
        # The intake: a bounded deque of ``Intake`` items. put_events waits on
        # ``_space`` when it is full, the dispatcher on ``_ready`` when it is empty.
        self._intake: collections.deque[Intake] = collections.deque()
        self._intake_size = host.limits.intake_size
        # Waiting producers wake once a quarter of the intake is free, not at
        # every slot: one wake-up per batch instead of one per event.
        self._low_water = self._intake_size - max(1, self._intake_size // 4)
        self._ready = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._closed = False
        #: The dispatcher task, while the runtime runs.
        self.dispatcher: asyncio.Task[None] | None = None
        #: Jobs of the event being dispatched, not yet queued to their targets.
        self._dispatching: list[tuple[Delivery, Job]] = []
        #: What looks at each event put on it before it is accepted (``Screen``).
        self.screens: list[Screen] = []
        self._dims = m.dimensions(EventBusName=name)
        self._events = host.counters.counter(m.EVENTS, self._dims)
        self._matched = host.counters.counter(m.MATCHED_EVENTS, self._dims)

    def screened(self, event: dict[str, Any], index: int) -> bool | frozenset[str]:
        """Whether the event goes on the bus after its ``screens`` looked at it:
        True, False (one took it), or the rules it is withheld from (see
        ``Screen``); ``EventValidationError`` when one refuses it."""
        withheld: frozenset[str] = frozenset()
        for screen in self.screens:
            verdict = screen(event, index)
            if verdict is False:
                return False
            if verdict is not True:
                withheld |= verdict
        return withheld or True

    def addressed_without(self, event: dict[str, Any], withheld: frozenset[str]) -> frozenset[str]:
        """The address of an event to go to the rules it matches but ``withheld``
        (kept with it in the durable intake: a restart withholds it still)."""
        return frozenset(self._matcher.match(event)).difference(withheld)

    def watch(self, names: Iterable[str]) -> Matcher:
        """A matcher over the rules ``names`` alone (those enabled, with a
        pattern), kept in step with them as they change (PutRule, Enable,
        Disable, Delete) until ``unwatch``: a screen's test for the rules its
        requirements name, a few rules' matching instead of every rule's.
        ``ResourceNotFoundError`` for a rule that does not exist now."""
        names = frozenset(names)
        for name in sorted(names):
            self._rule(name)
        matcher = Matcher()
        for name in names:
            self._sync_watcher(matcher, self._rules[name])
        self._watchers.append((names, matcher))
        return matcher

    def unwatch(self, matcher: Matcher) -> None:
        self._watchers[:] = [(n, m) for n, m in self._watchers if m is not matcher]

    @staticmethod
    def _sync_watcher(matcher: Matcher, rule: Rule) -> None:
        if rule.state == ENABLED and rule.pattern is not None:
            matcher.add(rule.name, rule.pattern)
        else:
            matcher.remove(rule.name)

    # -- rules --------------------------------------------------------------

    def put_rule(
        self,
        name: str,
        *,
        pattern: Any = None,
        schedule: Any = None,
        state: str = ENABLED,
        description: str = "",
    ) -> dict[str, str]:
        """Create or update a rule (PutRule); its targets are kept on update.

        A rule has an event ``pattern`` or a ``schedule`` (an expression such as
        ``"rate(5 minutes)"``, or a mapping of ``pipelines.schedule.SCHEDULE_KEYS``).
        """
        where = Where(f"bus {self.name} rule {name}")
        check_name(where, "rule name", name)
        if state not in (ENABLED, DISABLED):
            raise ConfigError(where / "state", f"must be ENABLED or DISABLED, not {state!r}")
        if not isinstance(description, str) or len(description) > 512:
            raise ConfigError(where / "description", "must be a string of at most 512 characters")
        if (pattern is None) == (schedule is None):
            raise ConfigError(where, "a rule has either an event pattern or a schedule")
        compiled = compile_pattern(pattern) if pattern is not None else None
        parsed = parse_schedule(where / "schedule", schedule) if schedule is not None else None
        rule = self._rules.get(name)
        if rule is None:
            dims = m.dimensions(EventBusName=self.name, RuleName=name)
            metrics = self.host.counters
            rule = Rule(
                name,
                compiled,
                None,  # set (and registered with the scheduler) by _sync_schedule
                state,
                description,
                matched=metrics.counter(m.MATCHED_EVENTS, dims),
                triggered=metrics.counter(m.TRIGGERED_RULES, dims),
            )
            self._rules[name] = rule
        else:
            rule.pattern = compiled
            rule.state, rule.description = state, description
        self._sync_matcher(rule)
        self._sync_schedule(rule, parsed)
        return {"RuleArn": self.rule_arn(name)}

    def rule_arn(self, name: str) -> str:
        suffix = name if self.name == "default" else f"{self.name}/{name}"
        return f"arn:aws:events:{DEFAULT_REGION}:{self.account}:rule/{suffix}"

    def _rule(self, name: str) -> Rule:
        try:
            return self._rules[name]
        except KeyError:
            raise ResourceNotFoundError(
                f"Rule {name} does not exist on EventBus {self.name}."
            ) from None

    def _sync_matcher(self, rule: Rule) -> None:
        self._sync_watcher(self._matcher, rule)
        for names, matcher in self._watchers:
            if rule.name in names:
                self._sync_watcher(matcher, rule)

    def _sync_schedule(self, rule: Rule, schedule: Schedule | None) -> None:
        scheduler = self.host.scheduler
        if schedule is None:
            if rule.schedule is not None:
                scheduler.unregister(self, rule.name)
        elif rule.schedule is None or rule.schedule.describe() != schedule.describe():
            scheduler.register(self, rule.name, schedule)
        rule.schedule = schedule

    def scheduled_rule(self, name: str) -> Rule | None:
        """The enabled scheduled rule ``name``, or None."""
        rule = self._rules.get(name)
        if rule is None or rule.schedule is None or rule.state != ENABLED:
            return None
        return rule

    def describe_rule(self, name: str) -> dict[str, Any]:
        rule = self._rule(name)
        described: dict[str, Any] = {"Name": rule.name, "Arn": self.rule_arn(rule.name)}
        if rule.pattern is not None:
            described["EventPattern"] = rule.pattern.text
        if rule.schedule is not None:
            described["ScheduleExpression"] = rule.schedule.expression
            described["Schedule"] = rule.schedule.describe()
        described.update(State=rule.state, Description=rule.description, EventBusName=self.name)
        return described

    def list_rules(self, prefix: str = "") -> list[dict[str, Any]]:
        return [self.describe_rule(name) for name in sorted(self._rules) if name.startswith(prefix)]

    def enable_rule(self, name: str) -> None:
        rule = self._rule(name)
        rule.state = ENABLED
        self._sync_matcher(rule)

    def disable_rule(self, name: str) -> None:
        """Stop matching the rule; deliveries already queued or retrying go on."""
        rule = self._rule(name)
        rule.state = DISABLED
        self._sync_matcher(rule)

    async def delete_rule(self, name: str, *, force: bool = False) -> None:
        """Delete a rule; like AWS, only once its targets are removed unless ``force``."""
        rule = self._rule(name)
        if rule.targets and not force:
            raise ConfigError(
                Where(f"bus {self.name} rule {name}"),
                "Rule can't be deleted since it has targets; remove them first or use force",
            )
        await self.remove_targets(name, list(rule.targets))
        self._matcher.remove(name)
        for names, matcher in self._watchers:
            if name in names:
                matcher.remove(name)
        self._sync_schedule(rule, None)
        del self._rules[name]

    # -- targets ------------------------------------------------------------

    async def put_targets(self, rule_name: str, targets: Iterable[Mapping[str, Any]]) -> None:
        """Add or replace targets of a rule (PutTargets). All or nothing: the
        first invalid target raises ``ConfigError`` naming it, and none is applied."""
        rule = self._rule(rule_name)
        where = f"bus {self.name} rule {rule_name}"
        parsed: dict[str, RuleTarget] = {}
        for index, declared in enumerate(targets):
            # A target's problems are located within the target.
            config = RuleTarget.parse(Where(f"{where} targets[{index}]"), declared)
            if config.id in parsed:
                raise ConfigError(
                    Where(f"{where} targets[{index}]") / "id", f"{config.id!r} is given twice"
                )
            resource = self.host.resource(
                config.resource, where=f"{where} targets[{index}].resource"
            )
            resource.accept(Where(f"{where} targets[{index}]"), config.parameters)
            if config.dead_letter is not None:
                self.host.resource(
                    config.dead_letter, where=f"{where} targets[{index}].dead_letter"
                )
            parsed[config.id] = config
        total = len(set(rule.targets) | set(parsed))
        most = self.host.limits.max_targets_per_rule
        if total > most:
            raise ConfigError(
                Where(where),
                f"a rule has at most {most} targets; this would give it {total}",
            )
        for config in parsed.values():
            existing = self.delivery(rule_name, config.id)
            rule.targets[config.id] = config
            if existing is None:
                rule.deliveries.append(self._new_delivery(rule, config))
            else:
                # An update keeps the target's queue and pending retries.
                self._configure(existing, config)

    def _new_delivery(self, rule: Rule, config: RuleTarget) -> Delivery:
        target = self.host.resource(config.resource)
        delivery = Delivery(
            bus=self.name,
            rule=rule.name,
            rule_arn=self.rule_arn(rule.name),
            target_id=config.id,
            target=target,
            transform=config.transform,
            policy=config.retry_policy,
            dead_letter=None,
            dead_letter_name=None,
            concurrency=1,
            queue_size=self.host.limits.target_queue_size,
        )
        self._configure(delivery, config)
        return self.host.deliverer.bind(delivery)

    def _configure(self, delivery: Delivery, config: RuleTarget) -> None:
        """Apply a target's declaration to its delivery (new, or updated in place)."""
        resource = self.host.resource
        delivery.target = resource(config.resource)
        delivery.resource = config.resource
        delivery.transform = config.transform
        delivery.policy = config.retry_policy
        delivery.parameters = config.parameters
        delivery.dead_letter = resource(config.dead_letter) if config.dead_letter else None
        delivery.dead_letter_name = config.dead_letter
        delivery.concurrency = max(1, delivery.target.concurrency)

    async def remove_targets(self, rule_name: str, ids: Iterable[str]) -> None:
        """Remove targets; their queued and retrying deliveries are dropped (and logged)."""
        for delivery in self.detach_targets(rule_name, ids):
            await self.host.deliverer.retire(delivery)

    def detach_targets(self, rule_name: str, ids: Iterable[str]) -> list[Delivery]:
        """Take targets off a rule: no new event reaches them from now on.

        Their deliveries are returned still working on what they hold; the
        caller retires them (``Runtime.retire``), at once or after a drain.
        """
        rule = self._rule(rule_name)
        ids = list(ids)
        for target_id in ids:
            if target_id not in rule.targets:
                raise ResourceNotFoundError(
                    f"Target {target_id} does not exist on rule {rule_name}."
                )
        detached = [d for d in rule.deliveries if d.target_id in ids]
        for target_id in ids:
            del rule.targets[target_id]
        rule.deliveries[:] = [d for d in rule.deliveries if d.target_id not in ids]
        return detached

    def list_targets_by_rule(self, rule_name: str) -> list[dict[str, Any]]:
        return [config.describe() for config in self._rule(rule_name).targets.values()]

    def rule_targets(self, rule_name: str) -> list[RuleTarget]:
        """The rule's targets as declared (``RuleTarget.declared``: what was
        given, without the defaults ``list_targets_by_rule`` fills in)."""
        return list(self._rule(rule_name).targets.values())

    def deliveries(self) -> Iterable[Delivery]:
        for rule in self._rules.values():
            yield from rule.deliveries

    def delivery(self, rule_name: str, target_id: str) -> Delivery | None:
        for delivery in self._rule(rule_name).deliveries:
            if delivery.target_id == target_id:
                return delivery
        return None

    # -- events -------------------------------------------------------------

    async def put_events(self, entries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """Put events on this bus (PutEvents): one result per entry, in order.

        Each result is ``{"EventId": ...}`` or ``{"ErrorCode": ..., "ErrorMessage": ...}``;
        an invalid entry fails alone. Waits while the intake is full.
        """
        return await self.host.put_events(entries, default_bus=self.name)

    async def accept(
        self,
        events: list[dict[str, Any]],
        ingested: float,
        settlements: list[Settlement | None] | None = None,
        addressed: Address = None,
    ) -> int:
        """Append events to the intake, waiting while it is full; returns how many
        were accepted (fewer than given only when the runtime stopped meanwhile).
        ``settlements[i]``, when given, is settled once every delivery of
        ``events[i]`` is settled (see ``Runtime.put_events``). ``addressed``:
        the rules they are for (``Address``; None: every rule they match)."""
        accepted = self._append(events, ingested, addressed, settlements)
        while accepted < len(events) and await self.wait_for_room():
            rest = settlements[accepted:] if settlements is not None else None
            accepted += self._append(events[accepted:], ingested, addressed, rest)
        return accepted

    def offer(
        self, events: list[dict[str, Any]], ingested: float, addressed: Address = None
    ) -> int:
        """Append as many of ``events`` as the intake has room for, without
        waiting; returns how many (a replay's position follows it exactly).
        ``wait_for_room`` waits for more room."""
        return self._append(events, ingested, addressed, None)

    def _append(
        self,
        events: list[dict[str, Any]],
        ingested: float,
        addressed: Address,
        settlements: list[Settlement | None] | None,
    ) -> int:
        if self._closed:
            return 0
        room = max(self._intake_size - len(self._intake), 0)
        taken = events[:room]
        durable = self.host.intake
        if durable is not None and addressed is None:
            self._intake.extend(self._matched_in(durable, taken, ingested, settlements))
        else:
            if durable is not None:
                # Each event gets its row and a settlement that deletes it once
                # every delivery of it is settled (telling its producer, if one waits).
                name = self.name
                given = settlements if settlements is not None else repeat(None)
                settlements = [
                    durable.reserve(name, event, ingested, addressed, producer)
                    for event, producer in zip(taken, given, strict=False)
                ]
            if settlements is None:
                self._intake.extend((event, ingested, addressed, None) for event in taken)
            else:
                self._intake.extend(zip(taken, repeat(ingested), repeat(addressed), settlements))
        self._events.add(len(taken))
        self._ready.set()
        return len(taken)

    def _matched_in(
        self,
        durable: DurableIntake,
        events: list[dict[str, Any]],
        ingested: float,
        settlements: list[Settlement | None] | None,
    ) -> Iterator[Intake]:
        """Events for the durable intake, matched as they are taken in, not
        when dispatched: an event no rule matches has nothing to deliver, so
        it gets no intake row and its producer waits for no commit (a bus
        that many producers put on and few rules read answers most puts at
        once). The matched rules travel with the event, so it is matched
        once; after a restart, an event from its row is matched again."""
        match = self._matcher.match
        name = self.name
        given = settlements if settlements is not None else repeat(None)
        for event, producer in zip(events, given, strict=False):
            names = match(event)
            if names:
                yield event, ingested, names, durable.reserve(name, event, ingested, None, producer)
            else:
                yield event, ingested, names, producer

    async def wait_for_room(self) -> bool:
        """Wait until the intake has room again (a quarter of it free); False
        once the bus is closed (it takes nothing more)."""
        while len(self._intake) > self._low_water and not self._closed:
            self._ready.set()
            self._space.clear()
            await self._space.wait()
        return not self._closed

    def fire(self, rule_name: str, event: dict[str, Any], ingested: float) -> bool:
        """Put a scheduled rule's event in the intake, addressed to that rule only
        (as EventBridge's scheduled events are); False when the runtime stopped.

        It does not wait for room: one scheduler serves every bus, and a bus
        that is backed up must not hold up the schedules of the others (one
        event per run keeps the overshoot bounded by the number of schedules)."""
        if self._closed:
            return False
        durable = self.host.intake
        settlement = (
            durable.reserve(self.name, event, ingested, rule_name, None)
            if durable is not None
            else None
        )
        self._intake.append((event, ingested, rule_name, settlement))
        self._ready.set()
        return True

    def resume(
        self, event: dict[str, Any], ingested: float, addressed: Address, settlement: Settlement
    ) -> bool:
        """Put an event found in the durable intake at start back in the intake,
        with its settlement (it has its row already); False when there is no
        room now (``wait_for_room``) or the bus is closed."""
        if self._closed or len(self._intake) >= self._intake_size:
            return False
        self._intake.append((event, ingested, addressed, settlement))
        self._ready.set()
        return True

    def intake_position(self) -> int:
        """Where the durable intake's numbering is now (0 without one): pass it
        to ``committed`` after putting events."""
        durable = self.host.intake
        return durable.reserved if durable is not None else 0

    async def committed(self, since: int) -> None:
        """Return once every event taken in after ``since`` (an
        ``intake_position``) is in the durable intake (at once without one):
        a replay saves its position only then. ``StateError`` when one of
        their writes failed."""
        durable = self.host.intake
        if durable is not None:
            await durable.committed(durable.reserved, since + 1)

    def close_intake(self) -> None:
        """At shutdown, once the dispatcher has stopped: wake producers waiting
        for room, who then accept nothing more."""
        self._closed = True
        self._space.set()

    async def dispatch(self) -> None:
        """The bus's dispatcher: intake -> matcher -> deliveries. Runs until cancelled.

        Each wake-up takes everything that gathered in the intake; an event's
        jobs go straight onto their targets' queues, and the dispatcher awaits
        only when one of those queues is full (backpressure)."""
        intake, ready, space = self._intake, self._ready, self._space
        low_water = self._low_water
        taps = self.host.taps
        jobs = self._dispatching
        deliverer = self.host.deliverer
        while True:
            await ready.wait()
            ready.clear()
            while intake:
                event, ingested, addressed, settlement = intake.popleft()
                if not space.is_set() and len(intake) <= low_water:
                    space.set()
                if taps:
                    self._tap(taps, event)
                self._route(event, ingested, addressed, settlement)
                while jobs:
                    delivery, job = jobs[-1]
                    if not deliverer.offer(delivery, job):
                        await deliverer.submit(delivery, job)
                    jobs.pop()

    def _tap(self, taps: list[Observer], event: dict[str, Any]) -> None:
        for observe in list(taps):
            try:
                observe(self.name, event)
            except Exception:  # an observer's bug must not stop dispatch
                log.exception("a tap on bus %s failed", self.name)

    def _names(self, event: dict[str, Any], addressed: Addressed) -> list[str]:
        if addressed is None:
            return self._matcher.match(event)
        if isinstance(addressed, list):  # matched when taken in: less a rule deleted since
            rules = self._rules
            return [name for name in addressed if name in rules]
        if isinstance(addressed, str):
            return [addressed] if self.scheduled_rule(addressed) is not None else []
        return [name for name in self._matcher.match(event) if name in addressed]

    def _route(
        self,
        event: dict[str, Any],
        ingested: float,
        addressed: Addressed,
        settlement: Settlement | None,
    ) -> None:
        """Count the event's matches and add one job per matched rule target
        to ``_dispatching`` (the dispatcher queues them)."""
        names = self._names(event, addressed)
        if not names:
            if settlement is not None:  # no target wants it: nothing to wait for
                settlement.fire()
            return
        if not isinstance(addressed, str):
            self._matched.add()
        rules = self._rules
        for name in names:
            rule = rules[name]
            rule.matched.add()
            rule.triggered.add()
        self._add_jobs(self._dispatching, names, event, ingested, settlement)

    def undispatched(self) -> list[tuple[Delivery, Job]]:
        """At shutdown: jobs of events accepted but not yet queued to a target."""
        jobs = list(self._dispatching)
        self._dispatching.clear()
        while self._intake:
            event, ingested, addressed, settlement = self._intake.popleft()
            self._add_jobs(jobs, self._names(event, addressed), event, ingested, settlement)
        return jobs

    def _add_jobs(
        self,
        jobs: list[tuple[Delivery, Job]],
        names: list[str],
        event: dict[str, Any],
        ingested: float,
        settlement: Settlement | None,
    ) -> None:
        """One job per target of each matched rule, sharing the event's
        settlement when its producer waits for one."""
        added = len(jobs)
        done = settlement.done if settlement is not None else None
        for name in names:
            for delivery in self._rules[name].deliveries:
                if done and (name, delivery.target_id) in done:
                    continue  # its retry was saved: it resumes on its own
                job = Job(name, delivery.target_id, event, ingested, settlement=settlement)
                jobs.append((delivery, job))
        if settlement is not None:
            settlement.remaining = len(jobs) - added
            if not settlement.remaining:  # no target wants it: nothing to wait for
                settlement.fire()

    def dispatching(self) -> set[Delivery]:
        """Deliveries that the event being dispatched still has jobs for."""
        return {delivery for delivery, _ in self._dispatching}

    @property
    def intake_depth(self) -> int:
        """Events accepted but not yet matched."""
        return len(self._intake)

    @property
    def idle(self) -> bool:
        return not self._intake and not self._dispatching
