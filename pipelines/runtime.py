"""The runtime: event buses, target resources and the tasks that run them.

A ``Runtime`` owns everything with a lifetime: the target resources (each a
``Target`` from a plugin's ``TargetType``), the buses (``default`` always
exists), the clock, the metrics, the optional state database and one
``asyncio.TaskGroup`` in which every dispatcher and delivery worker runs.

    runtime = Runtime(state_path="state.db")
    runtime.add_resource("orders", "function", {"function": "shop:handle"})
    bus = runtime.bus()
    bus.put_rule("big-orders", pattern={"detail": {"total": [{"numeric": [">", 100]}]}})
    await bus.put_targets("big-orders", [{"id": "t1", "resource": "orders"}])
    async with runtime:
        await runtime.put_events([{"Source": "shop", "DetailType": "order", "Detail": "{}"}])

``stop()`` stops intake, waits for in-flight deliveries up to a time limit,
persists what is still pending (when there is a state database) and stops
the targets.

The runtime composes; it does not pass calls through. Its parts are public
sub-objects, each reaching back only through a narrow protocol the runtime
implements (``BusHost``, ``AlarmHost``, ``ReplayHost``, ``TargetServices``):

    runtime.bus("orders")          a Bus: rules, targets, intake, dispatch
    runtime.archives               CreateArchive, DescribeArchive, ...
    runtime.replays                StartReplay, DescribeReplay, ...
    runtime.metrics                the metric store (PutMetricData, GetMetricStatistics), running
    runtime.alarms                 PutMetricAlarm, DescribeAlarms, SetAlarmState, ...
    runtime.counters               the buses' own counters (EventBridge's metric names)
    runtime.limits                 sizes and time limits (``pipelines.limits.Limits``)

Nothing here changes process-wide state: the runner (``pipelines run``)
tunes the interpreter for itself (``pipelines.runner.tuned_process``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import (
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
)
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import pluggy

from pipelines import metrics as m
from pipelines.alarms import Alarms
from pipelines.archive import Archiver, ArchiveStore
from pipelines.bus import Bus, Observer, Screen, check_name
from pipelines.buspolicies import BusPolicies
from pipelines.clock import Clock, SystemClock
from pipelines.cluster import ALARMS, SCHEDULER, Membership, membership_for
from pipelines.delivery import Deliverer, Delivery, Settlement
from pipelines.errors import (
    ConfigError,
    EventValidationError,
    NotRunningError,
    ResourceNotFoundError,
    StateError,
    Where,
)
from pipelines.event import DEFAULT_ACCOUNT, DEFAULT_REGION, forwarded_event_id, validate_entry
from pipelines.intake import DurableIntake, Unsettled, unsettled
from pipelines.limits import Limits
from pipelines.pending import PendingWriter
from pipelines.pluginmanager import restorers, target_types
from pipelines.policy import PUT_EVENTS, Caller, access_denied
from pipelines.replay import Replays
from pipelines.routes import Routes
from pipelines.scheduler import Scheduler
from pipelines.state import PendingRow, StateDB
from pipelines.store import Location, Upkeep, location_of, shown
from pipelines.targets import StoreT, Target, TargetType, open_state_store, run_upkeep

log = logging.getLogger("pipelines.runtime")

DEFAULT_BUS = "default"
DURABLE, MEMORY = "durable", "memory"
DURABILITIES = (DURABLE, MEMORY)


async def _poll(condition: Callable[[], bool], timeout: float | None, every: float = 0.01) -> bool:
    """Whether ``condition()`` came to hold within ``timeout`` seconds (None: no
    limit). For states no event announces (a queue emptying across many
    deliveries); a check every ``every`` seconds costs nothing measurable."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(every)
            return True
    return False


async def _finish(task: asyncio.Task[None] | None, deadline: float) -> None:
    """Wait for a task told to stop to return (it finishes the write or the
    evaluation under way: no COMMIT is cut); cancel it at ``deadline``."""
    if task is None:
        return
    await asyncio.wait([task], timeout=max(deadline - asyncio.get_running_loop().time(), 0.0))
    if not task.done():
        task.cancel()
        await asyncio.wait([task])


#: Per copy of an event, the deliveries whose retry is saved: (rule, target id).
Done = dict[tuple[str, str, str | None], set[tuple[str, str]]]


def _copy_of(bus: str, event: Mapping[str, Any]) -> tuple[str, str, str | None]:
    """Which copy of an event a row is: its bus, its id and, for a replayed
    copy (which keeps the original's id), the replay's name."""
    return (bus, str(event.get("id", "")), event.get("replay-name"))


class _Taken(NamedTuple):
    """What ``Runtime._take`` accepted of one bus's entries of a PutEvents
    call: their places in the results, how many were accepted, the range of
    durable intake rows to wait for (``last`` 0: none), and why the rest failed."""

    positions: list[int]
    accepted: int
    first: int
    last: int
    failure: str | None


class _Shutdown(Exception):
    """Raised inside the task group to cancel its tasks at shutdown."""


class Runtime:
    """Buses, rules, targets and their tasks. Use ``async with runtime:`` or start/stop."""

    def __init__(
        self,
        *,
        state_path: str | Path | None = None,
        runner: str | None = None,
        clock: Clock | None = None,
        plugins: pluggy.PluginManager | None = None,
        limits: Limits | None = None,
        seed: int | None = None,
        durability: str = DURABLE,
        account: str = DEFAULT_ACCOUNT,
    ) -> None:
        if durability not in DURABILITIES:
            raise ConfigError(
                "durability", f"must be {' or '.join(DURABILITIES)}, not {durability!r}"
            )
        #: The state database: a SQLite file, or a PostgreSQL URL (a cluster).
        self.state_path: Location | None = (
            location_of(state_path) if state_path is not None else None
        )
        #: This runner's name in a cluster (None: the host and the pid).
        self.runner = runner
        #: Who this runner is among the state database's runners, while running.
        self.membership: Membership | None = None
        #: ``durable``: with a state database, put_events answers once its events
        #: are in the durable intake (``pipelines.intake``); ``memory``: at once.
        self.durability = durability
        #: The durable intake, while running with one.
        self.intake: DurableIntake | None = None
        self._intake_task: asyncio.Task[None] | None = None
        self._pending_task: asyncio.Task[None] | None = None
        self._resuming: asyncio.Task[None] | None = None
        self.clock: Clock = clock or SystemClock()
        #: The buses' and targets' counters, under EventBridge's metric names.
        self.counters = m.Metrics()
        self.limits = limits or Limits()
        self.plugins = plugins  # None: the installed plugins
        self._types = target_types(plugins)
        self._resources: dict[str, Target] = {}
        #: Each resource's type name (a resource installed ready-made has none).
        self._resource_types: dict[str, str] = {}
        self._buses: dict[str, Bus] = {}
        self._state: StateDB | None = None
        self._group: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._accepting = False
        #: Set once start() opens intake: a source started by start() may put
        #: before then (an MQTT session resumed with a backlog), and waits.
        self._opened = asyncio.Event()
        #: Set as start() begins: from then a put waits for the start (the
        #: state database and the rest open before the runner task exists).
        self._begun = False
        #: Observers of dispatched events (``tap``).
        self.taps: list[Observer] = []
        #: ``cluster.group`` of the config: sources share their subscriptions.
        self.cluster_group: str | None = None
        #: Paths sources serve on the runner's HTTP port (webhooks), by path.
        self.routes = Routes()
        #: Deliveries taken off their rules, finishing their work before retiring.
        self._detached: set[Delivery] = set()
        self.deliverer = Deliverer(
            self.clock, self.counters, self.spawn, None, self.limits.backoff, random.Random(seed)
        )
        # Its own generator: a flexible window must not shift retry jitter.
        self.scheduler = Scheduler(self.clock, random.Random(seed))
        self._scheduling: asyncio.Task[None] | None = None
        #: Archives (written by ``put_events``) and replays; see ``pipelines.archive``.
        self.archives = Archiver(self.clock, check_bus=self.bus)
        self.replays = Replays(self)
        #: Metric data (the bus's counters included), while running, and the alarms over it.
        self._metric_store: m.MetricStore | None = None
        self.alarms = Alarms(self)
        #: The metric store's and the alarms' tasks, while running.
        self._store_task: asyncio.Task[None] | None = None
        self._alarm_task: asyncio.Task[None] | None = None
        self._putting = 0  # put_events calls in progress: stop() lets them finish
        #: The account that owns the buses it declares (bus permissions: callers of
        #: other accounts need a bus's policy); saved policies (``pipelines.buspolicies``).
        self.account = account
        self.policies = BusPolicies()
        self.create_bus(DEFAULT_BUS)

    # -- resources ----------------------------------------------------------

    @property
    def target_types(self) -> Mapping[str, TargetType]:
        """The target types this runtime knows, by name (its plugins')."""
        return self._types

    def add_resource(self, name: str, type_name: str, config: Mapping[str, Any]) -> Target:
        """Create a target resource of a registered type; rules' targets refer to it by name."""
        if self._group is not None:
            raise ConfigError(
                Where(f"resource {name}"),
                "add resources before the runtime starts (or put_resource)",
            )
        target = self._create(name, type_name, config, replacing=False)
        self._resources[name] = target
        return target

    def _create(
        self, name: str, type_name: str, config: Mapping[str, Any], *, replacing: bool
    ) -> Target:
        where = Where(f"resource {name}")
        if not isinstance(name, str) or not name:
            raise ConfigError(where, "a resource needs a name")
        if name in self._resources and not replacing:
            raise ConfigError(where, "a resource of this name already exists")
        target_type = self._types.get(type_name)
        if target_type is None:
            known = ", ".join(sorted(self._types)) or "none"
            raise ConfigError(where / "type", f"unknown target type {type_name!r} (known: {known})")
        made = target_type.create(name, config)
        self._resource_types[name] = type_name
        return made

    async def put_resource(
        self, name: str, type_name: str, config: Mapping[str, Any], *, timeout: float | None = None
    ) -> Target:
        """Create a resource, or replace one, also while the runtime runs
        (``put_resources`` with one)."""
        made = await self.put_resources({name: (type_name, config)}, timeout=timeout)
        return made[name]

    async def put_resources(
        self,
        declared: Mapping[str, tuple[str, Mapping[str, Any]]],
        *,
        timeout: float | None = None,
    ) -> dict[str, Target]:
        """Create or replace resources (name -> (type, settings)), also while running.

        All are made, then (while running) started, so one may name another as
        a destination whatever their order; if one fails to start, those
        started are stopped and nothing changes. Then every rule target and
        dead letter that used a replaced resource is pointed at its successor,
        and the old one finishes its calls in flight (for up to ``timeout``
        seconds, default ``drain_timeout``) and is stopped. Queued and retrying
        deliveries keep their place.
        """
        made = {
            name: self._create(name, type_name, config, replacing=True)
            for name, (type_name, config) in declared.items()
        }
        await self._install(made, timeout)
        return made

    async def install(self, name: str, target: Target, *, timeout: float | None = None) -> None:
        """Put ``target`` under the resource name ``name`` (``put_resource`` with a
        ``Target`` already made: a wrapper or a stand-in, as ``pipelines test`` uses)."""
        await self._install({name: target}, timeout)

    async def _install(self, made: dict[str, Target], timeout: float | None) -> None:
        previous = {name: self._resources.get(name) for name in made}
        self._resources.update(made)  # starting targets find each other by name
        if self._group is not None:
            started: list[Target] = []
            try:
                for target in made.values():
                    await target.start(self)
                    started.append(target)
            except BaseException:
                for target in started:
                    with contextlib.suppress(Exception):
                        await target.stop()
                for name, old in previous.items():
                    if old is None:
                        del self._resources[name]
                    else:
                        self._resources[name] = old
                raise
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.limits.drain_timeout if timeout is None else timeout)
        for name, target in made.items():
            old = previous[name]
            if old is None:
                continue
            users = [d for d in self._all_deliveries() if old in (d.target, d.dead_letter)]
            for delivery in users:
                if delivery.target is old:
                    delivery.target = target
                    delivery.concurrency = max(1, target.concurrency)
                if delivery.dead_letter is old:
                    delivery.dead_letter = target
            if self._group is not None:
                await self._stop_resource(name, old, users, max(deadline - loop.time(), 0.0))

    async def delete_resource(self, name: str, *, timeout: float | None = None) -> None:
        """Delete a resource no rule target or dead letter uses; it finishes its
        calls in flight (up to ``timeout`` seconds) and is stopped."""
        target = self.resource(name)
        for delivery in self._all_deliveries():
            if target in (delivery.target, delivery.dead_letter):
                raise ConfigError(
                    Where(f"resource {name}"),
                    f"rule {delivery.rule} target {delivery.target_id} on bus {delivery.bus}"
                    " still uses it: remove that target first",
                )
        del self._resources[name]
        self._resource_types.pop(name, None)
        if self._group is not None:
            await self._stop_resource(name, target, [], timeout)

    async def _stop_resource(
        self, name: str, target: Target, users: list[Delivery], timeout: float | None
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.limits.drain_timeout if timeout is None else timeout)
        # Attempts already running keep the target they started with.
        await _poll(
            lambda: not any(job.calling is target for d in users for job in d.in_flight),
            deadline - loop.time(),
        )
        try:
            await target.drain(max(deadline - loop.time(), 0.0))
            await target.stop()
        except Exception:
            log.exception("stopping replaced resource %s failed", name)

    def _all_deliveries(self) -> list[Delivery]:
        found = [d for bus in self._buses.values() for d in bus.deliveries()]
        return found + list(self._detached)

    async def retire(self, deliveries: Iterable[Delivery], *, timeout: float = 0.0) -> None:
        """Retire deliveries detached from their rules (``Bus.detach_targets``) once
        they have delivered what is queued or in flight, for up to ``timeout``
        seconds; what is left then, and retries not yet due, are dropped (logged)."""
        deliveries = list(deliveries)
        self._detached.update(deliveries)
        try:
            await _poll(
                lambda: all(d.idle for d in deliveries) and not self._dispatching(deliveries),
                timeout,
            )
            for delivery in deliveries:
                if delivery.in_flight:
                    log.warning(
                        "target %s of rule %s removed with %d calls still in flight:"
                        " a failure of theirs is not retried",
                        delivery.target_id,
                        delivery.rule,
                        len(delivery.in_flight),
                    )
                await self.deliverer.retire(delivery)
        finally:
            self._detached.difference_update(deliveries)

    def _dispatching(self, deliveries: list[Delivery]) -> bool:
        """Whether a dispatcher still holds a matched job for one of ``deliveries``."""
        held = set().union(*(bus.dispatching() for bus in self._buses.values()))
        return any(delivery in held for delivery in deliveries)

    def resource_names(self) -> list[str]:
        return list(self._resources)

    def resource_arn(self, name: str) -> str:
        """The ARN API clients know the resource ``name`` by (its type's
        ``arn_template``; ``arn:pipelines:resource:...`` for one installed
        ready-made)."""
        self.resource(name)
        target_type = self._types.get(self._resource_types.get(name, ""))
        if target_type is None:
            return f"arn:pipelines:resource:{DEFAULT_REGION}:{DEFAULT_ACCOUNT}:{name}"
        return target_type.arn(name, DEFAULT_REGION, DEFAULT_ACCOUNT)

    def resource(self, name: str, *, where: str | None = None) -> Target:
        try:
            return self._resources[name]
        except KeyError:
            known = ", ".join(sorted(self._resources)) or "none"
            message = f"no resource named {name!r} (resources: {known})"
            raise ResourceNotFoundError(f"{where}: {message}" if where else message) from None

    # -- buses --------------------------------------------------------------

    def create_bus(self, name: str, *, account: str | None = None) -> Bus:
        """A new bus, owned by ``account`` (default: the runtime's)."""
        check_name(Where(f"bus {name}"), "bus name", name)
        if name in self._buses:
            raise ConfigError(Where(f"bus {name}"), "an event bus of this name already exists")
        bus = Bus(self, name, account or self.account)
        bus.created = self.clock.time()
        self._buses[name] = bus
        if self._group is not None:
            bus.dispatcher = self.spawn(bus.dispatch())
        return bus

    async def delete_bus(self, name: str, *, timeout: float | None = None) -> None:
        """Delete a bus that has no rules left; events it holds are dispatched first
        (for up to ``timeout`` seconds, default ``drain_timeout``)."""
        bus = self.bus(name)
        if name == DEFAULT_BUS:
            raise ConfigError(Where(f"bus {name}"), "the default event bus cannot be deleted")
        if bus.list_rules():
            raise ConfigError(Where(f"bus {name}"), "delete the bus's rules first")
        bus.close_intake()
        await _poll(lambda: bus.idle, self.limits.drain_timeout if timeout is None else timeout)
        if bus.dispatcher is not None:
            bus.dispatcher.cancel()
            await asyncio.wait([bus.dispatcher])
        del self._buses[name]

    def bus(self, name: str = DEFAULT_BUS) -> Bus:
        try:
            return self._buses[name]
        except KeyError:
            raise ResourceNotFoundError(f"Event bus {name} does not exist.") from None

    def buses(self) -> list[Bus]:
        return list(self._buses.values())

    # -- metrics (TargetServices) ---------------------------------------------

    @property
    def metrics(self) -> m.MetricStore:
        """The metric store (PutMetricData, GetMetricStatistics, ListMetrics),
        open while the runtime runs; ``NotRunningError`` otherwise."""
        if self._metric_store is None:
            raise NotRunningError(
                "metrics are kept while the runtime runs"
                " (pipelines.metrics.MetricStore.open reads a state database otherwise)"
            )
        return self._metric_store

    def put_metric_data(self, namespace: str, name: str, *args: Any, **options: Any) -> None:
        """PutMetricData for one datum (``TargetServices``): see
        ``pipelines.metrics.MetricStore.put_metric_data``."""
        self.metrics.put_metric_data(namespace, name, *args, **options)

    # -- events -------------------------------------------------------------

    async def put_events(
        self,
        entries: Iterable[Mapping[str, Any]],
        *,
        default_bus: str = DEFAULT_BUS,
        settled: Callable[[int], None] | None = None,
        caller: Caller | None = None,
        forwarded_by: str | None = None,
        accepted: Callable[[], None] | None = None,
        held: Collection[int] = (),
    ) -> dict[str, Any]:
        """PutEvents: validate each entry alone, accept the valid ones, one result each.

        ``caller``: who puts (its account and organization); None is the
        runtime's own account. An entry for a bus of another account than the
        caller's is refused with ``AccessDeniedException`` unless the bus's
        policy allows it (``pipelines.policy``); the others go on.
        ``forwarded_by``: the ARN of the rule whose target (another bus)
        forwards these events: they get forwarded events' ids and are not
        forwarded again (EventBridge's one hop).

        Returns ``{"FailedEntryCount": n, "Entries": [...]}`` where each entry is
        ``{"EventId": id}`` or ``{"ErrorCode": code, "ErrorMessage": message}``.
        Waits while a bus's intake is full. Raises ``NotRunningError`` when the
        runtime is not running (nothing is accepted then).

        ``settled(index)`` is called once for each accepted entry, later, when
        every delivery of its event is delivered, dead-lettered, dropped or
        saved as a retry in the state database: from then on a crash loses
        nothing of it. A source that can hold its acknowledgement until then
        (MQTT QoS 1) gets at-least-once delivery without an archive. An event
        still in memory at shutdown, past the drain limit, never settles.

        ``accepted()`` is called once every entry of the call is taken into
        its bus's intake (in order, after those of the calls before) or
        failed, before the call waits for the durable intake's commit: a
        source may start its next put then, and keep its order (the MQTT
        source keeps a second put under way while one waits for the commit).

        ``held``: the indices of entries whose message the producer holds
        unacknowledged until ``settled`` reports it, and which its source
        sends again otherwise (an MQTT QoS 1 message in a session the broker
        keeps across a restart). A crash loses nothing of those without the
        durable intake, so it writes no row for them (after a crash the row
        would only deliver them a second time, besides the source's copy),
        and the call waits for no commit of theirs.
        """
        while self._starting():
            with contextlib.suppress(TimeoutError):  # a failed start sets _stopping instead
                await asyncio.wait_for(self._opened.wait(), 0.05)
        if not self._accepting:
            raise NotRunningError(self._not_running())
        self._putting += 1
        try:
            return await self._put_events(
                entries, default_bus, settled, caller, forwarded_by, accepted, held
            )
        finally:
            self._putting -= 1

    async def _put_events(
        self,
        entries: Iterable[Mapping[str, Any]],
        default_bus: str,
        settled: Callable[[int], None] | None,
        caller: Caller | None = None,
        forwarded_by: str | None = None,
        accepted: Callable[[], None] | None = None,
        held: Collection[int] = (),
    ) -> dict[str, Any]:
        if held and settled is None:
            raise ValueError("held entries need settled: their producer acknowledges them then")
        held = held if isinstance(held, set | frozenset | range) else frozenset(held)
        now = self.clock.time()
        moment = datetime.fromtimestamp(now, UTC)
        results: list[dict[str, str]] = []
        valid: dict[Bus, tuple[list[int], list[dict[str, Any]]]] = {}
        # Events withheld from some rules they match (a rule's schema
        # requirement dead-lettered them), by bus and the rules they are for.
        withheld: dict[tuple[Bus, frozenset[str]], tuple[list[int], list[dict[str, Any]]]] = {}
        failed = 0
        limits = self.limits.entries
        # Most entries name no bus: the default one is looked up once per call.
        default = self._buses.get(default_bus)
        account = self.account if caller is None else caller.account
        for index, entry in enumerate(entries):
            try:
                event = validate_entry(
                    entry, index=index, limits=limits, now=moment, account=account
                )
                named = entry.get("EventBusName")
                if default is not None and (not named or named == default_bus):
                    bus = default  # (a source names its bus in every entry)
                else:
                    bus = self._entry_bus(entry, default_bus, index)
                if account != bus.account:
                    self._check_permission(bus, caller, event, forwarded_by, index)
                # A plugin's screens (schema validation) see each event of their bus.
                verdict = bus.screened(event, index) if bus.screens else True
                if verdict is False:
                    results.append({"EventId": event["id"]})
                    continue
            except EventValidationError as exc:
                failed += 1
                results.append({"ErrorCode": exc.code, "ErrorMessage": exc.message})
                continue
            if forwarded_by is not None:
                event["id"] = forwarded_event_id()
            if verdict is True:
                group = valid.get(bus)
                if group is None:  # (setdefault would build its default for every entry)
                    group = valid[bus] = ([], [])
            else:
                key = (bus, bus.addressed_without(event, verdict))
                group = withheld.setdefault(key, ([], []))
            positions, events = group
            positions.append(index)
            events.append(event)
            results.append({"EventId": event["id"]})
        # Every group is taken in first, then its rows' commit waited for:
        # one wait for the call's rows, and ``accepted`` told in between.
        taken = [
            await self._take(bus, None, positions, events, now, settled, held, results)
            for bus, (positions, events) in valid.items()
        ]
        for (bus, addressed), (positions, events) in withheld.items():
            taken.append(
                await self._take(bus, addressed, positions, events, now, settled, held, results)
            )
        if accepted is not None:
            accepted()
        for take in taken:
            failed += await self._answer(take, results)
        return {"FailedEntryCount": failed, "Entries": results}

    async def _take(
        self,
        bus: Bus,
        addressed: frozenset[str] | None,
        positions: list[int],
        events: list[dict[str, Any]],
        now: float,
        settled: Callable[[int], None] | None,
        held: Collection[int],
        results: list[dict[str, str]],
    ) -> _Taken:
        """Accept one bus's valid entries of a PutEvents call (at ``positions``
        in ``results``), for the rules ``addressed`` (None: all they match);
        ``_answer`` then waits for their rows and says which failed."""
        # Each event carries its producer's settlement through the intake;
        # one not accepted (or a call cancelled while waiting for room) is
        # never settled: a producer that waits sends again.
        settlements: list[Settlement | None] | None = None
        if settled is not None:
            settlements = [
                Settlement(functools.partial(settled, i), held=i in held) for i in positions
            ]
        intake = self.intake
        first = intake.reserved + 1 if intake is not None else 0
        archived = self.archives.archives_of(bus.name)
        try:
            if archived and intake is None:
                # Archived before accepted: once this call returns, an
                # event it accepted is in its archives, whatever happens next.
                await self.archives.archive(bus.name, events)
            accepted = await bus.accept(events, now, settlements, addressed)
        except StateError as exc:
            return _Taken(positions, 0, 0, 0, f"{exc}; put it again.")
        if intake is not None and archived:
            self._archive_in(intake, bus.name, events[:accepted])
        # A call that reserved no row (its events matched no rule, none
        # archived) has nothing to wait for: not even for the commit of
        # other producers' rows.
        last = intake.reserved if intake is not None and intake.reserved >= first else 0
        return _Taken(positions, accepted, first, last, None)

    async def _answer(self, taken: _Taken, results: list[dict[str, str]]) -> int:
        """Wait until the rows of what ``_take`` accepted are in the durable
        intake (answered only then); how many of its entries failed (their
        results say why)."""
        positions, accepted, first, last, failure = taken
        intake = self.intake
        if last and intake is not None:
            try:
                await intake.committed(last, first)
            except StateError as exc:
                failure = f"{exc}; put it again."
                # Not durable: not answered for (they may still be delivered:
                # a put again then delivers twice, never zero times).
                accepted = 0
        failure = failure or "The bus stopped before accepting this entry; put it again."
        for index in positions[accepted:]:
            # Not accepted (the runtime stopped while this call waited
            # for room, or a write failed): say so per entry,
            # retryable as EventBridge's InternalFailure is.
            results[index] = {"ErrorCode": "InternalFailure", "ErrorMessage": failure}
        return len(positions) - accepted

    def _archive_in(self, intake: DurableIntake, bus: str, events: list[dict[str, Any]]) -> None:
        """Hand the archive rows of accepted events to the durable intake: no
        await since their rows were reserved, so both go in one transaction
        (one commit per put; archived exactly when taken in)."""
        rows, strict = self.archives.rows(bus, events)
        if rows:
            intake.attach(rows, strict=strict)

    def _check_permission(
        self,
        bus: Bus,
        caller: Caller | None,
        event: Mapping[str, Any],
        forwarded_by: str | None,
        index: int,
    ) -> None:
        """Refuse an entry for a bus of another account unless its policy allows it."""
        asking = Caller(
            caller.account if caller is not None else self.account,
            caller.org if caller is not None else None,
            source=event.get("source"),
            detail_type=event.get("detail-type"),
            source_arn=forwarded_by,
        )
        if not bus.policy.allows(asking, PUT_EVENTS, [bus.arn]):
            raise EventValidationError(
                "AccessDeniedException", access_denied(asking.account, PUT_EVENTS, bus.arn), index
            )

    def _entry_bus(self, entry: Mapping[str, Any], default: str, index: int) -> Bus:
        name = entry.get("EventBusName") or default
        name = name.rsplit("/", 1)[-1]  # an ARN names the bus after its last '/'
        bus = self._buses.get(name)
        if bus is None:
            raise EventValidationError(
                "ResourceNotFoundException", f"Event bus {name} does not exist.", index
            )
        return bus

    @contextlib.contextmanager
    def tap(self, observe: Observer) -> Iterator[None]:
        """Call ``observe(bus_name, event)`` for every event a bus dispatches,
        while in the ``with`` block. It runs on the dispatcher's path: it must
        be quick and must not block (``pipelines tap`` queues and drops)."""
        self.taps.append(observe)
        try:
            yield
        finally:
            self.taps.remove(observe)

    @contextlib.contextmanager
    def watch_rules(
        self, bus: str, rules: Iterable[str]
    ) -> Iterator[Callable[[Mapping[str, Any]], list[str]]]:
        """Within the ``with`` block, a function naming which of ``rules`` (of
        the bus ``bus``) an event matches, as they are when asked (a PutRule
        or DisableRule since changes the answer; deleted, a rule matches
        nothing): a screen's test for the rules its requirements name
        (``Bus.watch``). ``ResourceNotFoundError`` when there is no such bus,
        or one of the rules does not exist now."""
        found = self.bus(bus)
        matcher = found.watch(rules)
        try:
            yield matcher.match
        finally:
            found.unwatch(matcher)

    @contextlib.contextmanager
    def screen(self, bus: str, screen: Screen) -> Iterator[None]:
        """Have ``screen`` look at every valid event put on the bus ``bus``
        before it is accepted, while in the ``with`` block (see ``bus.Screen``);
        ``ResourceNotFoundError`` when there is no such bus. A bus without
        screens pays one attribute test per entry."""
        screens = self.bus(bus).screens
        screens.append(screen)
        try:
            yield
        finally:
            screens.remove(screen)

    def bus_names(self) -> list[str]:
        return list(self._buses)

    # -- lifecycle ----------------------------------------------------------

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coroutine`` as a task of the runtime's task group."""
        if self._group is None:
            coroutine.close()
            raise NotRunningError("the runtime is not running")
        return self._group.create_task(coroutine)

    @property
    def running(self) -> bool:
        return self._accepting

    def _not_running(self) -> str:
        if self._stopping.is_set() or self._opened.is_set():
            return "the runtime is stopping: it accepts nothing more; put again once it runs"
        return "the runtime is not running: start it before putting events"

    async def wait_running(self, timeout: float | None = None) -> None:
        """Return once the runtime takes events (at once if it does). An entry
        point that opens before the runtime starts (the runner's control
        socket) waits here rather than refusing what arrives meanwhile.
        ``NotRunningError`` when it stops or fails to start, or is still not
        running after ``timeout`` seconds (retryable: it says so)."""
        if self._accepting:
            return
        opened = asyncio.ensure_future(self._opened.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait([opened, stopping], timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            opened.cancel()
            stopping.cancel()
            await asyncio.wait([opened, stopping])
        if not self._accepting:
            if self._stopping.is_set() or self._opened.is_set():
                raise NotRunningError(self._not_running())
            raise NotRunningError(
                f"the runtime is still starting after {timeout} s: put again in a moment"
            )

    def _starting(self) -> bool:
        opened, stopping = self._opened.is_set(), self._stopping.is_set()
        return self._begun and not opened and not stopping

    async def _open_state(self) -> None:
        """What start() opens before its runner task: the membership, the state
        database, archives, policies and metrics."""
        if self.state_path is not None:
            # First: a second runner on this file (or under this name in a
            # cluster) stops here, before it resumes retries or fires
            # schedules the first one owns.
            membership = self.membership = membership_for(
                self.state_path, self.runner, check_every=self.limits.leader_check
            )
            await membership.join()
            self.runner = membership.runner or None
            try:
                self._state = await StateDB.open(self.state_path, runner=membership.runner)
                if membership.shared:
                    await self._state.join(self.clock.time())
                    await self._adopt_gone_runners(membership, self._state)
            except BaseException:
                await self._close_state()
                raise
            self.deliverer.state = self.scheduler.state = self._state
            self._open_pending(self._state)
            await self._open_archives()
            await self._open_policies()
        elif self.archives.specs:
            raise StateError("archives need a state database: give the runtime a state_path")
        await self._open_metrics()

    async def start(self) -> None:
        if self._runner is not None or self._stopping.is_set():
            raise NotRunningError("a runtime starts once: create a new Runtime to start again")
        self._begun = True
        try:
            await self._open_state()
        except BaseException:
            self._stopping.set()  # a put waiting for the start hears it failed
            raise
        ready = asyncio.Event()
        self._runner = asyncio.create_task(self._run(ready), name="pipelines-runtime")
        await ready.wait()
        started: list[Target] = []
        try:
            for target in self._resources.values():
                await target.start(self)
                started.append(target)
        except BaseException:
            self._stopping.set()
            await self._runner
            for target in started:
                await target.stop()
            await self._close_state()
            raise
        finally:
            self.routes.ready()  # the sources serving paths have added them
        try:
            await self._open_for_events()
        except BaseException:
            # Nothing half-started stays behind: tasks, targets, the database
            # and its lock; a put waiting for the start hears it failed.
            try:
                await self.stop(0)
            except Exception:
                log.exception("stopping after a failed start failed")
            raise
        await self._restore()

    async def _restore(self) -> None:
        """The resources plugins keep in the state database (their APIs'),
        made again (``register_restorers``); one that fails is logged."""
        if self.state_path is None:
            return
        for plugin, restore in restorers(self.plugins):
            try:
                await restore(self)
            except Exception:
                log.exception("plugin %s: making its stored resources again failed", plugin)

    async def _open_for_events(self) -> None:
        done = await self._load_pending()
        await self._open_intake(done)
        self._accepting = True
        self._opened.set()
        if self.archives.store is not None:
            self.spawn(self.archives.run())
            self.spawn(self.archives.purge_loop())
            await self.replays.resume()
            if self.membership is not None and self.membership.shared:
                # Replays whose runner died are taken over once their lease ends.
                self.spawn(self.replays.adoption().run(self.clock))
        assert self._metric_store is not None
        self._store_task = self.spawn(self._metric_store.run())
        if self.membership is not None:
            # Before the tasks start: a runner that can lead does so from its
            # start (``wait_until_idle`` then counts its scheduler and alarms).
            for role in (ALARMS, SCHEDULER):
                await self.membership.try_to_lead(role)
        self._alarm_task = self.spawn(self._lead(ALARMS, self.alarms.run))
        if self.membership is not None and self.membership.shared and self._state is not None:
            self.spawn(self._adopt_while_running(self.membership, self._state))
            self.spawn(self.membership.watch())
        # Last: the scheduler's first events find the targets started.
        self._scheduling = self.spawn(self._lead(SCHEDULER, self.scheduler.run))

    async def _adopt_gone_runners(self, membership: Membership, state: StateDB) -> None:
        """Make the rows of the cluster's runners that are gone this runner's,
        before it loads its intake and retries: what they accepted and had
        not delivered is delivered by this one (at least once)."""
        others = set(await state.runners_with_rows()) | set(await state.other_runners())
        for other in sorted(others):
            async with membership.claim(other) as gone:
                if gone:
                    intake, pending = await state.adopt(other)
                    log.warning(
                        "runner %s is gone: adopted its %d unsettled events and %d pending retries",
                        other,
                        intake,
                        pending,
                    )

    async def _adopt_while_running(self, membership: Membership, state: StateDB) -> None:
        """Every ``leader_check`` seconds, take over what the cluster's gone
        runners left (their names' locks are free) and deliver it: a runner
        that dies and does not come back loses nothing."""
        while True:
            await asyncio.sleep(self.limits.leader_check)
            try:
                for other in await state.other_runners():
                    await self._take_over(membership, state, other)
            except Exception:
                log.exception("taking over a gone runner's rows failed; trying again later")

    async def _take_over(self, membership: Membership, state: StateDB, other: str) -> None:
        intake = self.intake
        async with membership.claim(other) as gone:
            if not gone or intake is None:
                return
            pending, rows = await state.rows_of(other)
            keys = {row.key: self.deliverer.retries.new_key() for row in pending}
            seqs = dict(zip((row.seq for row in rows), intake.numbers(len(rows)), strict=True))
            await state.take_over(other, {key: str(number) for key, number in keys.items()}, seqs)
        if pending or rows:
            log.warning(
                "runner %s is gone: took over its %d unsettled events and %d pending retries",
                other,
                len(rows),
                len(pending),
            )
        done = self._schedule_pending(state, pending, keys)
        adopted = unsettled((seqs[row.seq], *row[1:]) for row in rows)
        await self._resume(intake, adopted, done)

    async def _lead(self, role: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` once this runner leads ``role`` (at once when it is
        the only runner of its state; in a cluster, when it takes the role)."""
        membership = self.membership
        if membership is None:
            await work()
            return
        await membership.wait_to_lead(role)
        if role == ALARMS:
            await self.alarms.reload_states()  # the last leader's transitions
        # The work runs while this runner holds the role: when its locks
        # are lost, another runner may lead, so this one's work stops.
        running = asyncio.ensure_future(work())
        lost = asyncio.ensure_future(membership.lost.wait())
        try:
            await asyncio.wait([running, lost], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (running, lost):
                task.cancel()
            await asyncio.wait([running, lost])
        if not running.cancelled():
            running.result()  # the work's own failure, if it failed

    def _leads(self, role: str) -> bool:
        return self.membership is None or self.membership.leads(role)

    async def _open_metrics(self) -> None:
        """The metric store and alarm tables: in the state database, or in
        memory without one (alarms still work, nothing survives a restart)."""
        try:
            store = self._metric_store = await m.MetricStore.open(self.state_path, self.clock)
            store.counters = self.counters
            await self.alarms.open(self.state_path, store)
        except BaseException:
            await self._close_state()
            raise

    async def _open_archives(self) -> None:
        assert self.state_path is not None
        store = await ArchiveStore.open(self.state_path)
        self.archives.store = store
        try:
            now = self.clock.time()
            for spec in self.archives.specs.values():
                await store.save_archive(spec, now)
            await store.disable_others(self.archives.specs)
        except BaseException:
            await self._close_state()
            raise

    async def _open_policies(self) -> None:
        assert self.state_path is not None
        try:
            await self.policies.open(self.state_path, self._buses)
        except BaseException:
            await self._close_state()
            raise

    async def _run(self, ready: asyncio.Event) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                for bus in self._buses.values():
                    bus.dispatcher = group.create_task(bus.dispatch())
                ready.set()
                await self._stopping.wait()
                raise _Shutdown
        except* _Shutdown:
            pass
        finally:
            self._group = None
            self._accepting = False  # also when a task failed: accept nothing undispatched
            for bus in self._buses.values():
                bus.close_intake()

    def _open_pending(self, state: StateDB) -> None:
        """Start the group-commit writer of pending retries."""
        writer = self.deliverer.pending = PendingWriter(state)
        # Its own task, not the group's: it outlives the group at stop, to
        # write the retries of what was still queued or in flight.
        self._pending_task = asyncio.create_task(writer.run(), name="pipelines-pending")

    async def _close_pending(self) -> None:
        """Let the writer write what waits, before the database closes."""
        if self._pending_task is None or self.deliverer.pending is None:
            return
        self.deliverer.pending.close()
        try:
            await self._pending_task
        except Exception:
            log.exception("the pending retries' writer failed")
        self._pending_task = None

    async def _open_intake(self, done: Done) -> None:
        """Start the durable intake's writer and dispatch again what it holds
        from the last run (``done``: event id -> deliveries whose retry resumes)."""
        if self._state is None or self.durability != DURABLE:
            return
        intake = DurableIntake(self._state)
        # Archives ride in its writes, in the words of its database's engine.
        intake.archive_insert = ArchiveStore.inserter(self._state.dialect)
        unsettled = await intake.open()
        self.intake = self.scheduler.intake = intake
        # Its own task, not the group's: it outlives the group at stop, to
        # write the deletes of what the last deliveries settled.
        self._intake_task = asyncio.create_task(intake.run(), name="pipelines-intake")
        if unsettled:
            log.info("resuming %d events not settled when the runtime last stopped", len(unsettled))
            self._resuming = self.spawn(self._resume(intake, unsettled, done))

    async def _resume(
        self,
        intake: DurableIntake,
        rows: list[Unsettled],
        done: Done,
    ) -> None:
        for row in rows:
            bus = self._buses.get(row.bus)
            if bus is None:
                log.warning(
                    "event %s of bus %s kept in the intake: that bus no longer exists",
                    row.event.get("id"),
                    row.bus,
                )
                continue
            settlement = intake.settlement(row.seq)
            settlement.done = frozenset(done.get(_copy_of(row.bus, row.event), ()))
            while not bus.resume(row.event, row.ingested, row.addressed, settlement):
                if not await bus.wait_for_room():
                    return  # stopping: the rest stays in the intake for next time

    async def _load_pending(self) -> Done:
        """Schedule the saved retries; returns, per event id, the deliveries
        they are (so the durable intake does not dispatch those again)."""
        done: Done = {}
        if self._state is None:
            return done
        rows = [row for bus in self._buses.values() for row in await self._state.pending(bus.name)]
        keys = await self._number_pending(self._state, [row.key for row in rows])
        return self._schedule_pending(self._state, rows, keys)

    def _schedule_pending(
        self, state: StateDB, rows: list[PendingRow], keys: dict[str, int]
    ) -> Done:
        """Put saved retries (their rows under ``keys``) in the retry heap;
        per event, the deliveries they are."""
        done: Done = {}
        for row in rows:
            done.setdefault(_copy_of(row.bus, row.event), set()).add((row.rule, row.target_id))
            bus = self._buses.get(row.bus)
            try:
                delivery = bus.delivery(row.rule, row.target_id) if bus is not None else None
            except ResourceNotFoundError:
                delivery = None
            if delivery is None:
                log.warning(
                    "pending delivery %s for rule %s target %s on bus %s kept in %s: "
                    "that rule target no longer exists",
                    keys[row.key],
                    row.rule,
                    row.target_id,
                    row.bus,
                    shown(state.path),
                )
                continue
            # Only the key waits in memory: the event is read back when due.
            self.deliverer.retries.schedule_stored(delivery, keys[row.key], row.due)
        return done

    async def _number_pending(self, state: StateDB, stored: list[str]) -> dict[str, int]:
        """The pending rows' keys as ints (the retry heap holds small ints);
        rows keyed otherwise (saved before keys were numbers) are renumbered,
        and new keys continue above every one."""
        keys = {key: int(key) for key in stored if key.isascii() and key.isdigit()}
        keys = {key: number for key, number in keys.items() if str(number) == key}
        self.deliverer.retries.keys_from(await state.top_pending_key() + 1)
        renamed = {key: self.deliverer.retries.new_key() for key in stored if key not in keys}
        if renamed:
            await state.rekey_pending({key: str(number) for key, number in renamed.items()})
        return keys | renamed

    async def stop(self, timeout: float | None = None) -> None:
        """Stop intake, drain in-flight work for up to ``timeout`` seconds, persist the rest."""
        if self._runner is None:
            return
        limit = self.limits.drain_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        # The alarm task first: a cycle publishes while put_events still accepts.
        self.alarms.stop_running()
        if self._alarm_task is not None and not self._leads(ALARMS):
            self._alarm_task.cancel()  # waiting to lead: nothing under way
        await _finish(self._alarm_task, deadline)
        self._accepting = False
        if self._metric_store is not None:
            self._metric_store.stop_running()
        await _finish(self._store_task, deadline)
        self._alarm_task = self._store_task = None
        await self.replays.stop()
        # Calls under way finish: their events are archived and accepted.
        await _poll(lambda: self._putting == 0, max(deadline - loop.time(), 0.0))
        if self._scheduling is not None:
            self._scheduling.cancel()
            await asyncio.wait([self._scheduling])
            self._scheduling = None
        with contextlib.suppress(TimeoutError):
            await self.wait_until_idle(max(deadline - loop.time(), 0.0))
        for name, target in self._resources.items():
            try:
                await target.drain(max(deadline - loop.time(), 0.0))
            except Exception:
                log.exception("draining resource %s failed", name)
        self.deliverer.retries.close()
        self.deliverer.failures.flush()
        self._stopping.set()
        failure: BaseException | None = None
        try:
            await self._runner
        except Exception as exc:  # a task failed: still persist, stop and close
            log.exception("the runtime's tasks failed")
            failure = exc
        self._runner = None
        await self._persist_unfinished()
        await self._close_pending()
        await self._close_intake()
        for name, target in self._resources.items():
            try:
                await target.stop()
            except Exception:
                log.exception("stopping resource %s failed", name)
        await self._close_state()
        if failure is not None:
            raise failure

    async def wait_until_idle(self, timeout: float | None = 10.0) -> None:
        """Wait until no event is being matched or delivered and the scheduler
        sleeps until its next firing (retries may be pending).

        For tests and tools; raises ``TimeoutError`` after ``timeout`` seconds
        (None: no limit).
        """
        if not await _poll(self._drained, timeout, every=0.001):
            raise TimeoutError(f"the runtime was not idle within {timeout} s")

    def _drained(self) -> bool:
        scheduling = self._scheduling is not None and not self._scheduling.done()
        if scheduling and self._leads(SCHEDULER) and not self.scheduler.idle:
            return False
        alarming = self._alarm_task is not None and not self._alarm_task.done()
        if alarming and self._leads(ALARMS) and not self.alarms.idle:
            return False
        if self._resuming is not None and not self._resuming.done():
            return False
        if not self.deliverer.idle:  # retries due are being read back
            return False
        return all(bus.idle for bus in self._buses.values()) and all(
            delivery.idle for delivery in self._all_deliveries()
        )

    async def _persist_unfinished(self) -> None:
        lost = 0
        for bus in self._buses.values():
            for delivery, job in bus.undispatched():
                delivery.queue.append(job)
            for delivery in bus.deliveries():
                lost += await self.deliverer.persist_unfinished(delivery)
        for delivery in self._detached:
            lost += await self.deliverer.persist_unfinished(delivery)
        if self._state is None:
            lost += len(self.deliverer.retries)
        if lost:
            log.error(
                "%d deliveries were still pending at shutdown and are lost: "
                "the runtime has no state database (state_path)",
                lost,
            )

    async def _close_intake(self) -> None:
        """Let the intake's writer write what the last settlements deleted."""
        if self._intake_task is None or self.intake is None:
            return
        self.intake.close()
        try:
            await self._intake_task
        except Exception:
            log.exception("the intake writer failed")
        self._intake_task = None

    async def _close_state(self) -> None:
        await self._close_pending()
        self.deliverer.pending = None
        await self._close_intake()
        self.intake = self.scheduler.intake = None
        await self.alarms.close()
        if self._metric_store is not None:
            try:
                await self._metric_store.close()  # what the counters counted last, too
            except Exception:
                log.exception("writing the last metrics failed")
            self._metric_store = None
        if self.archives.store is not None:
            await self.archives.store.close()
            self.archives.store = None
        await self.policies.close()
        if self._state is not None:
            await self._state.close()
            self._state = None
            self.deliverer.state = self.scheduler.state = None
        if self.membership is not None:
            await self.membership.leave()
            self.membership = None

    # -- TargetServices' store helpers (pipelines.store; issue 23) ------------

    async def open_store(self, store_type: type[StoreT], *args: Any, where: str) -> StoreT:
        """See ``TargetServices.open_store``."""
        return await open_state_store(self, store_type, *args, where=where)

    def upkeep(self, upkeep: Upkeep) -> asyncio.Task[None]:
        """See ``TargetServices.upkeep``."""
        return run_upkeep(self, upkeep)

    # -- end of the store helpers ---------------------------------------------

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()
