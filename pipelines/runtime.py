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
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import sys
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import pluggy

from pipelines import metrics as m
from pipelines.alarms import Alarms, parse_alarm, parse_composite_alarm, parse_metric_alarm
from pipelines.archive import Archiver, ArchiveSpec, ArchiveStore
from pipelines.bus import Bus, Observer, Rule, TargetConfig, check_name
from pipelines.clock import Clock, SystemClock
from pipelines.delivery import Backoff, Deliverer, Delivery, Job, Settlement
from pipelines.errors import (
    ConfigError,
    EventValidationError,
    NotRunningError,
    ResourceNotFoundError,
    StateError,
    Where,
)
from pipelines.event import EntryLimits, validate_entry
from pipelines.pluginmanager import target_types
from pipelines.replay import Replays
from pipelines.scheduler import Scheduler
from pipelines.state import StateDB
from pipelines.targets import Target

log = logging.getLogger("pipelines.runtime")

DEFAULT_BUS = "default"
#: While a runtime runs, CPython's thread switch interval (default 5 ms) is at
#: most this. SQLite statements run on aiosqlite's threads, and each time one
#: comes back it waits for the GIL; while the event loop is busy that wait
#: lasts the whole interval. Measured with bench/bench_archive.py: archiving
#: goes from about 35,000 to 60,000 events/s at 0.2 ms.
SWITCH_INTERVAL = 0.0002
# Runtimes running with a lowered interval, and the interval before the first.
_switch_holders = 0
_switch_before: float | None = None


def _lower_switch_interval(value: float) -> None:
    global _switch_holders, _switch_before
    if _switch_holders == 0 and sys.getswitchinterval() > value:
        _switch_before = sys.getswitchinterval()
        sys.setswitchinterval(value)
    _switch_holders += 1


def _release_switch_interval() -> None:
    """The last running runtime to stop puts the interval back."""
    global _switch_holders, _switch_before
    _switch_holders -= 1
    if _switch_holders == 0 and _switch_before is not None:
        sys.setswitchinterval(_switch_before)
        _switch_before = None


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


class _Shutdown(Exception):
    """Raised inside the task group to cancel its tasks at shutdown."""


class Runtime:
    """Buses, rules, targets and their tasks. Use ``async with runtime:`` or start/stop."""

    def __init__(
        self,
        *,
        state_path: str | Path | None = None,
        clock: Clock | None = None,
        plugins: pluggy.PluginManager | None = None,
        max_targets_per_rule: int = 5,
        intake_size: int = 10_000,
        target_queue_size: int = 1_000,
        backoff: Backoff | None = None,
        drain_timeout: float = 10.0,
        limits: EntryLimits | None = None,
        seed: int | None = None,
        switch_interval: float | None = SWITCH_INTERVAL,
    ) -> None:
        self.state_path = Path(state_path) if state_path is not None else None
        self.clock: Clock = clock or SystemClock()
        self.metrics = m.Metrics()
        self.max_targets_per_rule = max_targets_per_rule
        self.intake_size = intake_size
        self.target_queue_size = target_queue_size
        self.drain_timeout = drain_timeout
        self.limits = limits or EntryLimits()
        self.switch_interval = switch_interval
        self._holds_switch_interval = False
        self.plugins = plugins  # None: the installed plugins
        self._types = target_types(plugins)
        self._resources: dict[str, Target] = {}
        self._buses: dict[str, Bus] = {}
        self._state: StateDB | None = None
        self._group: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._accepting = False
        #: Set once start() opens intake: a source started by start() may put
        #: before then (an MQTT session resumed with a backlog), and waits.
        self._opened = asyncio.Event()
        #: Observers of dispatched events (``tap``).
        self.taps: list[Observer] = []
        #: ``cluster.group`` of the config: sources share their subscriptions.
        self.cluster_group: str | None = None
        #: Accepted events whose producer waits for their settlement, by id.
        self.settling: dict[str, Settlement] = {}
        #: Deliveries taken off their rules, finishing their work before retiring.
        self._detached: set[Delivery] = set()
        self.deliverer = Deliverer(
            self.clock, self.metrics, self.spawn, None, backoff or Backoff(), random.Random(seed)
        )
        # Its own generator: a flexible window must not shift retry jitter.
        self.scheduler = Scheduler(self.clock, random.Random(seed))
        self._scheduling: asyncio.Task[None] | None = None
        #: Archives (written by ``put_events``) and replays; see ``pipelines.archive``.
        self.archiver = Archiver(self.clock)
        self.replays = Replays(self)
        #: Metric data (the bus's counters included) and the alarms over it.
        self.metric_store: m.MetricStore | None = None
        self.alarms = Alarms(self)
        #: The metric store's and the alarms' tasks, while running.
        self._store_task: asyncio.Task[None] | None = None
        self._alarm_task: asyncio.Task[None] | None = None
        self._putting = 0  # put_events calls in progress: stop() lets them finish
        self.create_bus(DEFAULT_BUS)

    # -- resources ----------------------------------------------------------

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
        return target_type.create(name, config)

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
        deadline = loop.time() + (self.drain_timeout if timeout is None else timeout)
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
        if self._group is not None:
            await self._stop_resource(name, target, [], timeout)

    async def _stop_resource(
        self, name: str, target: Target, users: list[Delivery], timeout: float | None
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.drain_timeout if timeout is None else timeout)
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

    def resource(self, name: str, *, where: str | None = None) -> Target:
        try:
            return self._resources[name]
        except KeyError:
            known = ", ".join(sorted(self._resources)) or "none"
            message = f"no resource named {name!r} (resources: {known})"
            raise ResourceNotFoundError(f"{where}: {message}" if where else message) from None

    # -- buses --------------------------------------------------------------

    def create_bus(self, name: str) -> Bus:
        check_name(Where(f"bus {name}"), "bus name", name)
        if name in self._buses:
            raise ConfigError(Where(f"bus {name}"), "an event bus of this name already exists")
        bus = Bus(self, name)
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
        await _poll(lambda: bus.idle, self.drain_timeout if timeout is None else timeout)
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

    def _delivery(self, bus: Bus, rule: Rule, config: TargetConfig) -> Delivery:
        target = self.resource(config.resource)
        delivery = Delivery(
            bus=bus.name,
            rule=rule.name,
            rule_arn=bus.rule_arn(rule.name),
            target_id=config.id,
            target=target,
            transform=config.transform,
            policy=config.retry_policy,
            dead_letter=None,
            dead_letter_name=None,
            concurrency=1,
            queue_size=self.target_queue_size,
        )
        self._configure(delivery, config)
        return self.deliverer.bind(delivery)

    def _configure(self, delivery: Delivery, config: TargetConfig) -> None:
        """Apply a target's declaration to its delivery (new, or updated in place)."""
        delivery.target = self.resource(config.resource)
        delivery.transform = config.transform
        delivery.policy = config.retry_policy
        delivery.dead_letter = self.resource(config.dead_letter) if config.dead_letter else None
        delivery.dead_letter_name = config.dead_letter
        delivery.concurrency = max(1, delivery.target.concurrency)

    # -- archives and replays -------------------------------------------------

    async def create_archive(
        self, name: str, settings: Mapping[str, Any] | None = None, **options: Any
    ) -> ArchiveSpec:
        """Create or update an archive (CreateArchive / UpdateArchive) from
        ``settings`` and keyword ``options``: ``bus`` (default ``default``),
        ``pattern``, ``retention_days`` (0: forever), ``durability`` (``normal``
        or ``strict``), ``description``. Events put from then on are archived;
        archives need a state database."""
        spec = ArchiveSpec.parse(name, {**(settings or {}), **options})
        self.bus(spec.bus)  # ResourceNotFoundError when it does not exist
        if self.archiver.store is not None:
            await self.archiver.store.save_archive(spec, self.clock.time())
        self.archiver.put(spec)
        return spec

    async def delete_archive(self, name: str) -> None:
        """Delete an archive and the events it holds."""
        self.archiver.remove(name)
        await self._archive_store().delete_archive(name)

    async def disable_archive(self, name: str) -> None:
        """Stop archiving into ``name`` and keep its events, replayable (a
        reload that drops an archive from the config does this)."""
        self.archiver.remove(name)
        if self.archiver.store is not None:
            await self.archiver.store.disable_others(self.archiver.specs)

    async def describe_archive(self, name: str) -> dict[str, Any]:
        return await self._archive_store().describe(name)

    async def list_archives(self, prefix: str = "") -> list[dict[str, Any]]:
        return await self._archive_store().list_archives(prefix)

    async def start_replay(
        self,
        name: str,
        archive: str,
        start_time: float,
        end_time: float,
        destination_bus: str = DEFAULT_BUS,
        rules: Sequence[str] | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """StartReplay: see ``pipelines.replay.Replays.start`` (``speed``, ``description``)."""
        return await self.replays.start(
            name, archive, start_time, end_time, destination_bus, rules, **options
        )

    async def describe_replay(self, name: str) -> dict[str, Any]:
        return await self.replays.describe(name)

    async def list_replays(self) -> list[dict[str, Any]]:
        return await self.replays.list()

    async def cancel_replay(self, name: str) -> dict[str, Any]:
        return await self.replays.cancel(name)

    def _archive_store(self) -> ArchiveStore:
        if self.archiver.store is None:
            raise NotRunningError(
                "archives are read while the runtime runs with a state database"
                " (pipelines.archive.read_archives reads them otherwise)"
            )
        return self.archiver.store

    # -- metrics and alarms ---------------------------------------------------

    def _metrics(self) -> m.MetricStore:
        if self.metric_store is None:
            raise NotRunningError(
                "metrics are kept while the runtime runs"
                " (pipelines.metrics.MetricStore.open reads a state database otherwise)"
            )
        return self.metric_store

    def put_metric_data(self, namespace: str, name: str, *args: Any, **options: Any) -> None:
        """PutMetricData for one datum: see ``pipelines.metrics.MetricStore.put_metric_data``."""
        self._metrics().put_metric_data(namespace, name, *args, **options)

    async def get_metric_statistics(
        self, namespace: str, name: str, *args: Any, **options: Any
    ) -> dict[str, Any]:
        """GetMetricStatistics: see ``MetricStore.get_metric_statistics``."""
        return await self._metrics().get_metric_statistics(namespace, name, *args, **options)

    async def list_metrics(
        self, namespace: str | None = None, name: str | None = None
    ) -> list[dict[str, Any]]:
        return await self._metrics().list_metrics(namespace, name)

    async def put_metric_alarm(
        self, name: str, settings: Mapping[str, Any] | None = None, **options: Any
    ) -> None:
        """PutMetricAlarm from ``settings`` and keyword ``options`` (see
        ``pipelines.alarms.parse_metric_alarm``): a new alarm starts in
        INSUFFICIENT_DATA, an updated one keeps its state."""
        spec = parse_metric_alarm(name, {**(settings or {}), **options})
        await self.alarms.put(spec)

    async def put_composite_alarm(
        self, name: str, rule: str, settings: Mapping[str, Any] | None = None, **options: Any
    ) -> None:
        """PutCompositeAlarm: ``rule`` over other alarms' states."""
        spec = parse_composite_alarm(name, {**(settings or {}), **options, "rule": rule})
        await self.alarms.put(spec)

    async def put_alarm(self, name: str, settings: Mapping[str, Any]) -> None:
        """A metric or composite alarm from a config declaration."""
        spec = parse_alarm(name, settings)
        await self.alarms.put(spec)

    async def delete_alarms(self, names: Iterable[str]) -> None:
        for name in names:
            await self.alarms.delete(name)

    def describe_alarms(
        self, names: Iterable[str] | None = None, *, prefix: str = "", state: str | None = None
    ) -> list[dict[str, Any]]:
        """DescribeAlarms: every alarm (or those named), with its state."""
        if names is not None:
            return [self.alarms.describe(name) for name in names]
        return self.alarms.describe_all(prefix=prefix, state=state)

    async def describe_alarm_history(
        self, name: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """DescribeAlarmHistory: state updates, newest first."""
        self._metrics()
        return await self.alarms.history(name, limit)

    async def set_alarm_state(
        self, name: str, value: str, reason: str, reason_data: str | None = None
    ) -> None:
        """SetAlarmState: until the alarm's next evaluation (composites follow)."""
        self._metrics()
        await self.alarms.set_alarm_state(name, value, reason, reason_data)

    async def evaluate_alarms(self) -> None:
        """Evaluate every alarm now, over the periods up to the last 10-second
        boundary (tests, tools)."""
        self._metrics()
        await self.alarms.evaluate(int(self.clock.time() // 10 * 10), everyone=True)

    # -- events -------------------------------------------------------------

    async def put_events(
        self,
        entries: Iterable[Mapping[str, Any]],
        *,
        default_bus: str = DEFAULT_BUS,
        settled: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """PutEvents: validate each entry alone, accept the valid ones, one result each.

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
        """
        while self._starting():
            with contextlib.suppress(TimeoutError):  # a failed start sets _stopping instead
                await asyncio.wait_for(self._opened.wait(), 0.05)
        if not self._accepting:
            raise NotRunningError("the runtime is not running: start it before putting events")
        self._putting += 1
        try:
            return await self._put_events(entries, default_bus, settled)
        finally:
            self._putting -= 1

    async def _put_events(
        self,
        entries: Iterable[Mapping[str, Any]],
        default_bus: str,
        settled: Callable[[int], None] | None,
    ) -> dict[str, Any]:
        now = self.clock.time()
        moment = datetime.fromtimestamp(now, UTC)
        results: list[dict[str, str]] = []
        valid: dict[Bus, tuple[list[int], list[dict[str, Any]]]] = {}
        failed = 0
        for index, entry in enumerate(entries):
            try:
                event = validate_entry(entry, index=index, limits=self.limits, now=moment)
                bus = self._entry_bus(entry, default_bus, index)
            except EventValidationError as exc:
                failed += 1
                results.append({"ErrorCode": exc.code, "ErrorMessage": exc.message})
                continue
            positions, events = valid.setdefault(bus, ([], []))
            positions.append(index)
            events.append(event)
            results.append({"EventId": event["id"]})
        for bus, (positions, events) in valid.items():
            failure = "The bus stopped before accepting this entry; put it again."
            if settled is not None:  # before accepting: the dispatcher may route them at once
                for index, event in zip(positions, events, strict=True):
                    self.settling[event["id"]] = Settlement(functools.partial(settled, index))
            accepted = 0
            try:
                # Archived before accepted: once this call returns, an event
                # it accepted is in its archives, whatever happens next.
                if self.archiver.archives_of(bus.name):
                    await self.archiver.archive(bus.name, events)
                accepted = await bus._accept(events, now)
            except StateError as exc:
                failure = f"{exc}; put it again."
            finally:
                # Not accepted, or the caller cancelled while waiting for room:
                # nothing will settle these (a producer that waits sends again).
                if settled is not None:
                    for event in events[accepted:]:
                        self.settling.pop(event["id"], None)
            for index in positions[accepted:]:
                # Not accepted (the runtime stopped while this call waited
                # for room, or the archive write failed): say so per entry,
                # retryable as EventBridge's InternalFailure is.
                failed += 1
                results[index] = {"ErrorCode": "InternalFailure", "ErrorMessage": failure}
        return {"FailedEntryCount": failed, "Entries": results}

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

    def _starting(self) -> bool:
        opened, stopping = self._opened.is_set(), self._stopping.is_set()
        return self._runner is not None and not opened and not stopping

    async def start(self) -> None:
        if self._runner is not None or self._stopping.is_set():
            raise NotRunningError("a runtime starts once: create a new Runtime to start again")
        if self.state_path is not None:
            self._state = await StateDB.open(self.state_path)
            self.deliverer.state = self.scheduler.state = self._state
            await self._open_archives()
        elif self.archiver.specs:
            raise StateError("archives need a state database: give the runtime a state_path")
        await self._open_metrics()
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
        await self._load_pending()
        if self.switch_interval is not None:
            _lower_switch_interval(self.switch_interval)
            self._holds_switch_interval = True
        self._accepting = True
        self._opened.set()
        if self.archiver.store is not None:
            self.spawn(self.archiver.run())
            self.spawn(self.archiver.purge_loop())
            await self.replays.resume()
        assert self.metric_store is not None
        self._store_task = self.spawn(self.metric_store.run())
        self._alarm_task = self.spawn(self.alarms.run())
        # Last: the scheduler's first events find the targets started.
        self._scheduling = self.spawn(self.scheduler.run())

    async def _open_metrics(self) -> None:
        """The metric store and alarm tables: in the state database, or in
        memory without one (alarms still work, nothing survives a restart)."""
        try:
            self.metric_store = await m.MetricStore.open(self.state_path, self.clock)
            self.metric_store.counters = self.metrics
            await self.alarms.open(self.state_path, self.metric_store)
        except BaseException:
            await self._close_state()
            raise

    async def _open_archives(self) -> None:
        assert self.state_path is not None
        store = await ArchiveStore.open(self.state_path)
        self.archiver.store = store
        try:
            now = self.clock.time()
            for spec in self.archiver.specs.values():
                await store.save_archive(spec, now)
            await store.disable_others(self.archiver.specs)
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

    async def _load_pending(self) -> None:
        if self._state is None:
            return
        for bus in self._buses.values():
            for row in await self._state.pending(bus.name):
                try:
                    delivery = bus.delivery(row.rule, row.target_id)
                except ResourceNotFoundError:
                    delivery = None
                if delivery is None:
                    log.warning(
                        "pending delivery %s for rule %s target %s on bus %s kept in %s: "
                        "that rule target no longer exists",
                        row.key,
                        row.rule,
                        row.target_id,
                        bus.name,
                        self._state.path,
                    )
                    continue
                job = Job(row.rule, row.target_id, row.event, row.ingested, row.attempts)
                job.key = row.key
                self.deliverer.retries.schedule(delivery, job, row.due)

    async def stop(self, timeout: float | None = None) -> None:
        """Stop intake, drain in-flight work for up to ``timeout`` seconds, persist the rest."""
        if self._runner is None:
            return
        limit = self.drain_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        # The alarm task first: a cycle publishes while put_events still accepts.
        self.alarms.stop_running()
        await _finish(self._alarm_task, deadline)
        self._accepting = False
        if self.metric_store is not None:
            self.metric_store.stop_running()
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
        self._stopping.set()
        failure: BaseException | None = None
        try:
            await self._runner
        except Exception as exc:  # a task failed: still persist, stop and close
            log.exception("the runtime's tasks failed")
            failure = exc
        self._runner = None
        await self._persist_unfinished()
        for name, target in self._resources.items():
            try:
                await target.stop()
            except Exception:
                log.exception("stopping resource %s failed", name)
        await self._close_state()
        if failure is not None:
            raise failure

    def _restore_switch_interval(self) -> None:
        if self._holds_switch_interval:
            self._holds_switch_interval = False
            _release_switch_interval()

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
        if scheduling and not self.scheduler.idle:
            return False
        alarming = self._alarm_task is not None and not self._alarm_task.done()
        if alarming and not self.alarms.idle:
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

    async def _close_state(self) -> None:
        self._restore_switch_interval()
        await self.alarms.close()
        if self.metric_store is not None:
            try:
                await self.metric_store.close()  # what the counters counted last, too
            except Exception:
                log.exception("writing the last metrics failed")
            self.metric_store = None
        if self.archiver.store is not None:
            await self.archiver.store.close()
            self.archiver.store = None
        if self._state is not None:
            await self._state.close()
            self._state = None
            self.deliverer.state = self.scheduler.state = None

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
