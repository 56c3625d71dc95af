"""The ``scheduler`` resource: EventBridge Scheduler's schedules on the engine's scheduler.

One resource of this type (named ``scheduler``; a config's ``schedules:``
and ``schedule_groups:`` sections become it, the API makes it on first use)
holds every schedule and group. It keeps them in ``ScheduleStore`` and turns
each schedule into a rule of the internal bus ``aws.scheduler`` (AWS
reserves the ``aws.`` prefix, so no user's bus has that name): the rule's
schedule is the schedule's expression, time zone, dates and flexible window
(``spec.check``), its one target is this resource with the schedule's
RetryPolicy and DeadLetterConfig. So a schedule fires through the engine's
scheduler (one heap, one timer, runs marked once their event is committed,
fired only by the cluster's schedule leader) and is retried and
dead-lettered by the engine's delivery, like any rule target.

When a run is delivered here, ``deliver`` sends the schedule's ``Input``
(context attributes filled in) to the resource its target ARN names, with
SqsParameters' MessageGroupId; an event bus ARN with EventBridgeParameters
gets a PutEvents. A schedule whose last run is marked and whose
ActionAfterCompletion is DELETE is deleted (the engine's
``Scheduler.on_complete``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, cast

import orjson

from pipelines.errors import ConfigError, DeliveryError, Problems, ResourceNotFoundError, Where
from pipelines.store import is_url
from pipelines.targets import DeliveryContext, Target, TargetServices, TargetType, started
from plugins.scheduler.spec import (
    DEFAULT_GROUP,
    MAX_ATTEMPTS,
    MAX_EVENT_AGE,
    Invalid,
    check,
    from_config,
    group_from_config,
    rule_name,
    schedule_arn,
)
from plugins.scheduler.store import API, CONFIG, ScheduleStore, StoredGroup, StoredSchedule

if TYPE_CHECKING:
    from pipelines.bus import Bus
    from pipelines.scheduler import Scheduler

log = logging.getLogger("pipelines.scheduler")

#: The resource a config's ``schedules:`` section becomes, and the API makes.
SCHEDULER_RESOURCE = "scheduler"
#: The internal bus the schedules' rules are on.
SCHEDULER_BUS = "aws.scheduler"
#: How often a runner of a cluster looks for schedules another runner changed (seconds).
REFRESH = 5.0
#: The start of every schedule's rule name (``spec.rule_name``).
_RULE_PREFIX = "schedule-"
#: A config's resource names stand for their ARNs until the runtime gives them.
_NAMED = "resource:"
_CONTEXT = (
    "<aws.scheduler.schedule-arn>",
    "<aws.scheduler.scheduled-time>",
    "<aws.scheduler.execution-id>",
    "<aws.scheduler.attempt-number>",
)


class SchedulerHost(TargetServices, Protocol):
    """What the scheduler resource uses of the runtime beyond ``TargetServices``
    (``Runtime`` has each)."""

    scheduler: Scheduler

    def bus(self, name: str = ...) -> Bus: ...

    def create_bus(self, name: str) -> Bus: ...

    def resource_names(self) -> list[str]: ...

    def resource_arn(self, name: str) -> str: ...


@dataclass(frozen=True, slots=True)
class Declared:
    """A config's schedules (AWS's shape) and groups (their tags)."""

    schedules: dict[tuple[str, str], dict[str, Any]]
    groups: dict[str, dict[str, str]]
    #: Resource names the schedules use, with their paths in the settings.
    references: tuple[tuple[tuple[str | int, ...], str], ...]


def parse_settings(name: str, config: Mapping[str, Any]) -> Declared:
    """The resource's settings: ``schedules`` and ``schedule_groups`` as a
    config declares them; every problem located."""
    where = Where(f"resource {name}")
    problems = Problems()
    unknown = set(config) - {"schedules", "schedule_groups"}
    if unknown:
        problems.add(ConfigError(where / sorted(unknown)[0], "is not a setting of the scheduler"))
    groups: dict[str, dict[str, str]] = {}
    for group, body in _mapping(where / "schedule_groups", config.get("schedule_groups"), problems):
        with problems:
            groups[str(group)] = group_from_config(
                where / "schedule_groups" / str(group), group, body
            )
    schedules: dict[tuple[str, str], dict[str, Any]] = {}
    references: list[tuple[tuple[str | int, ...], str]] = []
    for key, body in _mapping(where / "schedules", config.get("schedules"), problems):
        at = where / "schedules" / str(key)
        if not isinstance(body, Mapping):
            problems.add(ConfigError(at, "a schedule is a mapping with expression and target"))
            continue
        try:
            made = from_config(at, str(key), body, _Names())
        except ConfigError as error:
            problems.add(error)
            continue
        schedules[(made["GroupName"], made["Name"])] = made
        target = made["Target"]
        for path, arn in (
            (("target", "resource"), target.get("Arn")),
            (("target", "dead_letter"), (target.get("DeadLetterConfig") or {}).get("Arn")),
        ):
            if isinstance(arn, str) and arn.startswith(_NAMED):
                references.append((("schedules", str(key), *path), arn[len(_NAMED) :]))
        if made["GroupName"] != DEFAULT_GROUP and made["GroupName"] not in groups:
            groups[made["GroupName"]] = {}  # a group a config names exists
    problems.raise_any()
    return Declared(schedules, groups, tuple(references))


def _mapping(where: Where, value: Any, problems: Problems) -> Iterable[tuple[Any, Any]]:
    if value is None:
        return []
    if not isinstance(value, Mapping):
        problems.add(ConfigError(where, "is a mapping of names to declarations"))
        return []
    return list(value.items())


class _Names:
    """A config's resource names, kept until the runtime gives their ARNs."""

    @staticmethod
    def arn_of(where: Where, name: str) -> str:
        return _NAMED + name


class SchedulerType(TargetType):
    name = "scheduler"
    description = "EventBridge Scheduler: schedules and schedule groups (schedules: in a config)"
    settings_schema: Mapping[str, Any] | None = MappingProxyType(
        {
            "properties": {
                "schedules": {"type": "object", "description": "schedules by name or group/name"},
                "schedule_groups": {
                    "type": "object",
                    "description": "schedule groups and their tags",
                },
            }
        }
    )

    def create(self, name: str, config: Mapping[str, Any]) -> Schedules:
        return Schedules(name, parse_settings(name, config))


class Schedules(Target):
    """Every schedule and group of a runtime; see the module's docstring."""

    concurrency = 16

    def __init__(self, name: str, declared: Declared) -> None:
        self.name = name
        self.declared = declared
        self.store: ScheduleStore | None = None
        self._host: SchedulerHost | None = None
        self._bus: Bus | None = None
        #: The schedules as loaded, by (group, name), and their rules' names.
        self.schedules: dict[tuple[str, str], StoredSchedule] = {}
        self.groups: dict[str, StoredGroup] = {}
        self._by_rule: dict[str, tuple[str, str]] = {}
        self._seen = -1
        self._shared = False
        self._completed: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def references(self) -> Iterable[tuple[tuple[str | int, ...], str]]:
        return self.declared.references

    # -- lifetime ------------------------------------------------------------------------

    async def start(self, services: TargetServices) -> None:
        if not hasattr(services, "create_bus") or not hasattr(services, "scheduler"):
            raise ConfigError(
                Where(f"resource {self.name}"), "the scheduler needs a runtime's buses"
            )
        host = cast(SchedulerHost, services)
        state = services.state_path
        self.store = (
            await services.open_store(ScheduleStore, where=f"resource {self.name}")
            if state is not None
            else await ScheduleStore.open(None, services.clock)
        )
        self._shared = state is not None and is_url(str(state))
        try:
            self._bus = host.bus(SCHEDULER_BUS)
        except ResourceNotFoundError:
            self._bus = host.create_bus(SCHEDULER_BUS)
        self._host = host
        await self._write_declared(host)
        await self.reload()
        host.scheduler.on_complete.append(self._complete)
        self._worker = services.spawn(self._work())

    async def stop(self) -> None:
        host, self._host = self._host, None
        if host is not None and self._complete in host.scheduler.on_complete:
            host.scheduler.on_complete.remove(self._complete)
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        if self.store is not None:
            await self.store.close()
            self.store = None

    async def _write_declared(self, host: SchedulerHost) -> None:
        """The config's schedules and groups into the store: those it no
        longer declares go; one it declares replaces an API-made one of the
        same name (the config is what an operator reads)."""
        store = started(self.store, "the scheduler")
        now = host.clock.time()
        _, groups, rows = await store.load()
        known = {group.name for group in groups}
        if DEFAULT_GROUP not in known and DEFAULT_GROUP not in self.declared.groups:
            await store.put_group(DEFAULT_GROUP, {}, now)  # AWS's: always there
        for group, tags in self.declared.groups.items():
            if group not in known:
                await store.put_group(group, tags, now)
            else:
                await store.set_tags(group, tags, now)
        by_key = {(row.group, row.name): row for row in rows}
        gone = [key for key, row in by_key.items() if row.origin == CONFIG]
        gone = [key for key in gone if key not in self.declared.schedules]
        await store.delete_schedules(gone)
        changed = []
        for key, body in self.declared.schedules.items():
            resolved = self._resolved(host, body)
            old = by_key.get(key)
            if old is not None and old.body == resolved and old.origin == CONFIG:
                continue
            created = old.created if old is not None else now
            changed.append(StoredSchedule(key[0], key[1], resolved, CONFIG, created, now))
        await store.put_schedules(changed)

    @staticmethod
    def _resolved(host: SchedulerHost, body: dict[str, Any]) -> dict[str, Any]:
        """A config's schedule with its resource names as their ARNs."""
        target = dict(body["Target"])
        if target["Arn"].startswith(_NAMED):
            target["Arn"] = host.resource_arn(target["Arn"][len(_NAMED) :])
        dead = target.get("DeadLetterConfig")
        if dead is not None and dead["Arn"].startswith(_NAMED):
            target["DeadLetterConfig"] = {"Arn": host.resource_arn(dead["Arn"][len(_NAMED) :])}
        return {**body, "Target": target}

    # -- loading ---------------------------------------------------------------------------

    async def reload(self) -> None:
        """Load the schedules again and bring the internal bus's rules to them."""
        store = started(self.store, "the scheduler")
        async with self._lock:
            version, groups, rows = await store.load()
            self.groups = {group.name: group for group in groups}
            fresh = {(row.group, row.name): row for row in rows}
            for key in [key for key in self.schedules if key not in fresh]:
                await self._unschedule(key)
            # Rules no schedule has any more (this resource replaced by a
            # reload: the old one's schedules are not in ``self.schedules``).
            wanted = {rule_name(*key) for key in fresh}
            bus = started(self._bus, "the scheduler")
            for rule in bus.list_rules(_RULE_PREFIX):
                if rule["Name"] not in wanted:
                    await bus.delete_rule(rule["Name"], force=True)
            for key, row in fresh.items():
                old = self.schedules.get(key)
                if old is None or old.body != row.body:
                    await self._schedule(row)
                else:
                    self.schedules[key] = row
            self._seen = version

    async def fresh(self) -> None:
        """Reload if another runner changed the store (a cluster's)."""
        store = self.store
        if self._shared and store is not None and await store.changes() != self._seen:
            await self.reload()

    async def _schedule(self, row: StoredSchedule) -> None:
        bus = started(self._bus, "the scheduler")
        key = (row.group, row.name)
        try:
            schedule = check(row.body)
        except Invalid as error:  # kept by a version that took it
            log.error("schedule %s/%s is skipped: %s", row.group, row.name, error.message)
            return
        rule = rule_name(*key)
        bus.put_rule(
            rule,
            schedule=schedule,
            state=row.body.get("State", "ENABLED"),
            description=schedule_arn(*key),
        )
        target = row.body["Target"]
        policy = target.get("RetryPolicy") or {}
        declared: dict[str, Any] = {
            "id": "schedule",
            "resource": self.name,
            "retry_policy": {
                "maximum_retry_attempts": policy.get("MaximumRetryAttempts", MAX_ATTEMPTS),
                "maximum_event_age": policy.get("MaximumEventAgeInSeconds", MAX_EVENT_AGE),
            },
        }
        dead = (target.get("DeadLetterConfig") or {}).get("Arn")
        if dead is not None:
            found = self.resource_named(dead)
            if found is None:
                log.warning("schedule %s/%s: no resource has the dead-letter ARN %s", *key, dead)
            else:
                declared["dead_letter"] = found
        await bus.put_targets(rule, [declared])
        self.schedules[key] = row
        self._by_rule[rule] = key

    async def _unschedule(self, key: tuple[str, str]) -> None:
        bus = started(self._bus, "the scheduler")
        rule = rule_name(*key)
        self.schedules.pop(key, None)
        self._by_rule.pop(rule, None)
        with contextlib.suppress(ResourceNotFoundError):  # skipped when it was loaded
            await bus.delete_rule(rule, force=True)

    # -- completions and the cluster ---------------------------------------------------------

    def _complete(self, bus: str, rule: str) -> None:
        key = self._by_rule.get(rule)
        if bus != SCHEDULER_BUS or key is None:
            return
        row = self.schedules.get(key)
        if row is not None and row.body.get("ActionAfterCompletion") == "DELETE":
            self._completed.put_nowait(key)

    async def _work(self) -> None:
        """Delete the schedules that completed with ActionAfterCompletion
        DELETE; in a cluster, look for other runners' changes every REFRESH s."""
        while True:
            try:
                key = await asyncio.wait_for(
                    self._completed.get(), REFRESH if self._shared else None
                )
            except TimeoutError:
                try:
                    await self.fresh()
                except Exception as error:
                    log.warning("scheduler: reading the state database failed (%s)", error)
                continue
            try:
                await self.delete(*key)
                log.info("schedule %s/%s completed and was deleted (ActionAfterCompletion)", *key)
            except Exception:
                log.exception("deleting the completed schedule %s/%s failed", *key)

    # -- what the API and the CLI change -----------------------------------------------------

    def now(self) -> float:
        return started(self._host, "the scheduler").clock.time()

    async def insert(self, body: dict[str, Any], now: float) -> bool:
        store = started(self.store, "the scheduler")
        row = StoredSchedule(body["GroupName"], body["Name"], body, API, now, now)
        if not await store.insert_schedule(row):
            return False
        async with self._lock:  # this one schedule: not a reload of them all
            await self._schedule(row)
        return True

    async def replace(self, body: dict[str, Any], now: float) -> bool:
        store = started(self.store, "the scheduler")
        key = (body["GroupName"], body["Name"])
        old = await store.schedule(*key)
        if old is None:
            return False
        row = StoredSchedule(*key, body, old.origin, old.created, now)
        await store.put_schedules([row])
        async with self._lock:
            await self._schedule(row)
        return True

    async def delete(self, group: str, name: str) -> bool:
        store = started(self.store, "the scheduler")
        deleted = await store.delete_schedules([(group, name)])
        async with self._lock:
            await self._unschedule((group, name))
        return deleted > 0

    async def add_group(self, name: str, tags: Mapping[str, str], now: float) -> bool:
        store = started(self.store, "the scheduler")
        made = await store.put_group(name, tags, now)
        await self.reload()
        return made

    async def delete_group(self, name: str) -> None:
        store = started(self.store, "the scheduler")
        await store.delete_group(name)
        await self.reload()

    async def set_tags(self, name: str, tags: Mapping[str, str], now: float) -> None:
        store = started(self.store, "the scheduler")
        await store.set_tags(name, tags, now)
        await self.reload()

    def resource_named(self, arn: str) -> str | None:
        """The runtime's resource an ARN names (region and account aside)."""
        host = self._host
        if host is None:
            return None
        wanted = _arn_key(arn)
        for name in host.resource_names():
            if _arn_key(host.resource_arn(name)) == wanted:
                return name
        return None

    # -- a run ------------------------------------------------------------------------------

    async def deliver(self, payload: Any, context: DeliveryContext) -> Any:
        host = started(self._host, "the scheduler")
        key = self._by_rule.get(context.rule_name)
        row = self.schedules.get(key) if key is not None else None
        if key is None or row is None:
            raise DeliveryError(
                "ResourceNotFoundException", "the schedule no longer exists", retryable=False
            )
        target = row.body["Target"]
        event = context.event
        execution = hashlib.sha256(f"{event.get('id')}/{context.attempt}".encode()).hexdigest()
        text = _with_context(
            target.get("Input"),
            (schedule_arn(*key), str(event.get("time")), execution[:16], str(context.attempt)),
        )
        parameters = target.get("EventBridgeParameters")
        bus = _bus_name(target["Arn"])
        if bus is not None:
            return await self._put_event(host, bus, parameters or {}, text, schedule_arn(*key))
        name = self.resource_named(target["Arn"])
        if name is None:
            raise DeliveryError(
                "ResourceNotFoundException",
                f"no resource of this pipeline has the ARN {target['Arn']}",
                retryable=False,
            )
        extra: dict[str, Any] = {}
        group_id = (target.get("SqsParameters") or {}).get("MessageGroupId")
        if group_id is not None:
            extra["MessageGroupId"] = group_id
        inner = DeliveryContext(
            context.rule_name, context.target_id, event, context.attempt, context.attributes, extra
        )
        return await host.resource(name).deliver(_payload(text), inner)

    @staticmethod
    async def _put_event(
        host: SchedulerHost, bus: str, parameters: Mapping[str, Any], text: str | None, arn: str
    ) -> Any:
        answer = await host.put_events(
            [
                {
                    "EventBusName": bus,
                    "Source": parameters.get("Source", "aws.scheduler"),
                    "DetailType": parameters.get("DetailType", "Scheduled Event"),
                    "Detail": text if text is not None else "{}",
                    "Resources": [arn],
                }
            ]
        )
        entry = answer["Entries"][0]
        if answer.get("FailedEntryCount"):
            code = entry.get("ErrorCode", "InternalFailure")
            raise DeliveryError(
                code, entry.get("ErrorMessage", ""), retryable=code == "InternalFailure"
            )
        return entry.get("EventId")


def _with_context(text: str | None, values: tuple[str, str, str, str]) -> str | None:
    """``Input`` with EventBridge Scheduler's context attributes filled in."""
    if text is None or "<aws.scheduler." not in text:
        return text
    for placeholder, value in zip(_CONTEXT, values, strict=True):
        text = text.replace(placeholder, value)
    return text


def _payload(text: str | None) -> Any:
    """What the target receives: the Input's JSON value, the text itself when
    it is not JSON (an SQS message body may be any text), ``{}`` without one."""
    if text is None:
        return {}
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def _arn_key(arn: str) -> tuple[str, ...]:
    parts = arn.split(":", 5)
    if len(parts) < 6:
        return (arn,)
    return (parts[1], parts[2], parts[5])


def _bus_name(arn: str) -> str | None:
    parts = arn.split(":", 5)
    if len(parts) == 6 and parts[2] == "events" and parts[5].startswith("event-bus/"):
        return parts[5][len("event-bus/") :]
    return None
