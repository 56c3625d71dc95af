"""The ``log_group`` target type: each delivered payload becomes a log event.

Settings (see docs/logs.md): the group's name (``log_group``, default the
resource's) and ``retention_days``; ``log_stream``, the stream each event goes
to (a template with ``<path>`` placeholders over the event, default the
rule's name); ``metric_filters`` and ``subscription_filters``.

The message is the payload as JSON (a string payload, from an input
transformer, as it is); a dead letter's is ``{"attributes": {ERROR_CODE,
...}, "payload": ...}``. The timestamp is the event's ``time``. Deliveries in
flight at once are written together: one PutLogEvents per stream.

A config that names ``metric_filters`` or ``subscription_filters`` owns that
list: starting puts each one and deletes the group's others. A config that
does not name them leaves the group's filters as they are.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipelines.clock import Clock, sleep
from pipelines.errors import ConfigError, DeliveryError, LogsError, PipelinesError
from pipelines.event import dump_json, parse_time
from pipelines.groupcommit import GroupCommit
from pipelines.targets import (
    DeliveryContext,
    Target,
    TargetServices,
    TargetType,
    check_keys,
    hand_over,
    number_setting,
)
from pipelines.templates import PathTemplate
from plugins.logs.store import (
    EVENT_OVERHEAD,
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    MAX_SPAN_MS,
    MAX_SUBSCRIPTION_FILTERS,
    RETENTION_DAYS,
    LogStore,
    MetricTransformation,
    check_filter_name,
    check_group_name,
    check_retention,
    check_stream_name,
    check_transformation,
    compiled,
)

log = logging.getLogger("plugins.logs")

SETTINGS = {"log_group", "retention_days", "log_stream", "metric_filters", "subscription_filters"}
METRIC_SETTINGS = {
    "pattern",
    "metric_name",
    "metric_namespace",
    "metric_value",
    "default_value",
    "dimensions",
    "unit",
}
SUBSCRIPTION_SETTINGS = {"pattern", "target", "batch_size", "maximum_retry_attempts", "poll"}
EXPIRE_INTERVAL = 3600.0
#: Refusals a retry cannot cure.
SENDER_FAULTS = {"InvalidParameterException", "ResourceNotFoundException"}

SETTINGS_SCHEMA: dict[str, Any] = {
    "properties": {
        "log_group": {
            "type": "string",
            "description": "the group's name (default: the resource's)",
        },
        "retention_days": {"enum": list(RETENTION_DAYS), "description": "default: never expire"},
        "log_stream": {
            "type": "string",
            "description": "the stream of each event: text with <path> placeholders over the"
            " event, such as <detail-type> (default: the rule's name)",
        },
        "metric_filters": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["metric_name", "metric_namespace"],
                "additionalProperties": False,
                "properties": {
                    "pattern": {"type": "string", "description": "a filter pattern"},
                    "metric_name": {"type": "string"},
                    "metric_namespace": {"type": "string"},
                    "metric_value": {
                        "type": ["string", "number"],
                        "description": "a number, or $.field (JSON) / $field (space-delimited)",
                    },
                    "default_value": {"type": "number"},
                    "dimensions": {"type": "object", "additionalProperties": {"type": "string"}},
                    "unit": {"type": "string"},
                },
            },
        },
        "subscription_filters": {
            "type": "object",
            "maxProperties": MAX_SUBSCRIPTION_FILTERS,
            "additionalProperties": {
                "type": "object",
                "required": ["target"],
                "additionalProperties": False,
                "properties": {
                    "pattern": {"type": "string"},
                    "target": {"type": "string", "description": "the resource given the batches"},
                    "batch_size": {"type": "integer", "minimum": 1, "maximum": MAX_BATCH_EVENTS},
                    "maximum_retry_attempts": {"type": "integer", "minimum": -1},
                    "poll": {"type": "number", "minimum": 0.01},
                },
            },
        },
    },
}


@dataclass(frozen=True)
class StreamTemplate:
    """A log stream name with ``<path>`` placeholders filled from the event."""

    template: PathTemplate

    @classmethod
    def parse(cls, where: str, text: Any) -> StreamTemplate:
        template = PathTemplate.parse(where, text, "the log stream's name")
        if ":" in template.literal or "*" in template.literal:
            raise ConfigError(where, f"{text!r}: a log stream name has no ':' or '*'")
        return cls(template)

    def render(self, event: Mapping[str, Any]) -> str:
        name = self.template.render(event, "InvalidLogStream", "log_stream")
        try:
            return check_stream_name(name)
        except LogsError as exc:
            raise DeliveryError("InvalidLogStream", exc.message, retryable=False) from None


@dataclass(frozen=True)
class MetricFilterSettings:
    name: str
    pattern: str
    transformation: MetricTransformation


@dataclass(frozen=True)
class SubscriptionSettings:
    name: str
    pattern: str
    target: str
    batch_size: int = 1000
    maximum_retry_attempts: int = -1  # -1: until it is taken
    poll: float = 1.0  # how often to look for events written by other processes


def _mapping(where: str, config: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(config, Mapping):
        raise ConfigError(where, f"must be a mapping of {what}")
    return config


def _pattern(where: str, config: Mapping[str, Any]) -> str:
    pattern = config.get("pattern", "")
    if not isinstance(pattern, str):
        raise ConfigError(f"{where}.pattern", f"must be a filter pattern (text), not {pattern!r}")
    try:
        compiled(pattern)
    except LogsError as exc:
        raise ConfigError(f"{where}.pattern", exc.message) from None
    return pattern


def parse_metric_filter(where: str, name: str, config: Any) -> MetricFilterSettings:
    config = _mapping(where, config, "pattern, metric_name, metric_namespace, metric_value, ...")
    check_keys(where, config, METRIC_SETTINGS)
    pattern = _pattern(where, config)
    for key in ("metric_name", "metric_namespace"):
        if not isinstance(config.get(key), str) or not config[key]:
            raise ConfigError(f"{where}.{key}", "is required (text)")
    value = config.get("metric_value", "1")
    default = config.get("default_value")
    if isinstance(default, bool) or not isinstance(default, int | float | None):
        raise ConfigError(f"{where}.default_value", f"must be a number, not {default!r}")
    dimensions = _mapping(f"{where}.dimensions", config.get("dimensions", {}), "name: $.field")
    unit = config.get("unit", "None")
    t = MetricTransformation(
        config["metric_name"],
        config["metric_namespace"],
        str(value),
        None if default is None else float(default),
        {str(k): str(v) for k, v in dimensions.items()},
        str(unit),
    )
    try:
        check_filter_name(name)
        check_transformation(compiled(pattern), t)
    except LogsError as exc:
        raise ConfigError(where, exc.message) from None
    return MetricFilterSettings(name, pattern, t)


def parse_subscription(where: str, name: str, config: Any) -> SubscriptionSettings:
    config = _mapping(where, config, "pattern, target, batch_size, ...")
    check_keys(where, config, SUBSCRIPTION_SETTINGS)
    pattern = _pattern(where, config)
    target = config.get("target")
    if not isinstance(target, str) or not target:
        raise ConfigError(f"{where}.target", "must name the resource that gets the log events")
    batch = number_setting(where, config, "batch_size", 1000, 1, MAX_BATCH_EVENTS, integer=True)
    retries = number_setting(where, config, "maximum_retry_attempts", -1, -1, 10_000, integer=True)
    poll = number_setting(where, config, "poll", 1.0, 0.01, 60)
    try:
        check_filter_name(name)
    except LogsError as exc:
        raise ConfigError(where, exc.message) from None
    return SubscriptionSettings(name, pattern, target, int(batch), int(retries), poll)


@dataclass(slots=True)
class _Pending:
    stream: str
    timestamp: int
    message: str


class LogGroupTarget(Target):
    concurrency = 64  # deliveries in flight per rule target: what one write can group

    def __init__(
        self,
        name: str,
        group: str,
        retention: dict[str, int | None],
        stream: StreamTemplate | None,
        metric_filters: list[MetricFilterSettings] | None,
        subscriptions: list[SubscriptionSettings] | None,
    ) -> None:
        self.name = name
        self.where = f"target {name}"
        self.group = group
        self.retention = retention  # {} when the config does not set it
        self.stream = stream
        self.metric_filters = metric_filters
        self.subscriptions = subscriptions
        self.store: LogStore | None = None
        self._services: TargetServices | None = None
        self._commit: GroupCommit[_Pending, None] = GroupCommit(
            _batches, self._put, lambda: _stopped("the log group target stopped while writing")
        )
        self._written: dict[str, asyncio.Event] = {}  # per subscription: a write happened
        self._tasks: list[asyncio.Task[None]] = []
        self._handing = 0  # subscriptions handing a batch over right now

    def references(self) -> list[tuple[tuple[str | int, ...], str]]:
        return [
            (("subscription_filters", s.name, "target"), s.target) for s in self.subscriptions or []
        ]

    async def start(self, services: TargetServices) -> None:
        if services.state_path is None:
            raise PipelinesError(
                f"log group {self.group}: log groups are kept in the state database;"
                " give the runtime a state_path (a config always has one)"
            )
        for sub in self.subscriptions or []:
            services.resource(sub.target, where=f"{self.where}.subscription_filters.{sub.name}")
        self._services = services
        self.store = store = await LogStore.open(
            services.state_path, services.clock, services.put_metric_data
        )
        try:
            await self._apply(store)
        except BaseException:
            await store.close()
            self.store = None
            raise
        self._tasks = [services.spawn(self._commit.run()), services.spawn(self._expire(store))]
        self._tasks += [services.spawn(self._forward(store, s)) for s in self.subscriptions or []]

    async def _apply(self, store: LogStore) -> None:
        """Create the group if need be and apply what the config names."""
        try:
            await store.create_log_group(self.group, exist_ok=True)
            if self.retention:
                await store.put_retention_policy(self.group, self.retention["days"])
            if self.metric_filters is not None:
                await self._apply_metric_filters(store, self.metric_filters)
            if self.subscriptions is not None:
                await self._apply_subscriptions(store, self.subscriptions)
        except LogsError as exc:
            raise PipelinesError(f"{self.where}: {exc.message}") from None

    async def _apply_metric_filters(
        self, store: LogStore, filters: list[MetricFilterSettings]
    ) -> None:
        wanted = {f.name for f in filters}
        for old in await store.describe_metric_filters(self.group):
            if old["filterName"] not in wanted:
                await store.delete_metric_filter(self.group, old["filterName"])
        for f in filters:
            await store.put_metric_filter(self.group, f.name, f.pattern, f.transformation)

    async def _apply_subscriptions(
        self, store: LogStore, subscriptions: list[SubscriptionSettings]
    ) -> None:
        wanted = {s.name for s in subscriptions}
        for old in await store.describe_subscription_filters(self.group):
            if old["filterName"] not in wanted:
                await store.delete_subscription_filter(self.group, old["filterName"])
        for s in subscriptions:
            await store.put_subscription_filter(self.group, s.name, s.pattern, s.target)

    async def drain(self, timeout: float) -> None:
        """Wait, up to ``timeout`` seconds, until nothing waits to be written
        and no subscription is handing a batch over: stopping then cuts no
        hand-over short (which would send that batch again after a restart)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (not self._commit.idle or self._handing) and loop.time() < deadline:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        # gather, not a suppressed await: a cancellation of stop() itself goes on.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._commit.fail_waiting(_stopped("the log group target stopped"))
        if self.store is not None:
            await self.store.close()
            self.store = None

    # -- writing ------------------------------------------------------------

    async def deliver(self, payload: Any, context: DeliveryContext) -> Any:
        if self.store is None:
            raise DeliveryError("LogGroupStopped", f"{self.where} is not running", retryable=True)
        stream = self.stream.render(context.event) if self.stream else _stream_of(context)
        if context.attributes:
            # A dead letter: the error attributes go with it, so a filter
            # pattern or a query can pick them out ($.attributes.ERROR_CODE).
            payload = {"attributes": dict(context.attributes), "payload": payload}
        message = payload if isinstance(payload, str) else dump_json(payload).decode()
        moment = _event_time(context.event, self._services.clock if self._services else None)
        await self._commit.submit(_Pending(stream, moment, message))
        return stream

    async def _put(self, batch: list[_Pending]) -> list[BaseException | None]:
        """One PutLogEvents for ``batch`` (one stream, in time order): each
        event's outcome; then the subscriptions look for what it wrote."""
        assert self.store is not None
        events = [{"timestamp": p.timestamp, "message": p.message} for p in batch]
        try:
            answer = await self.store.put_log_events(
                self.group, batch[0].stream, events, create_stream=True
            )
        except LogsError as exc:
            failure = DeliveryError(exc.code, exc.message, retryable=exc.code not in SENDER_FAULTS)
            return [failure] * len(batch)
        except Exception as exc:  # the database: a retry may well succeed
            log.exception("%s: writing %d log events failed", self.where, len(batch))
            return [DeliveryError("InternalFailure", str(exc), retryable=True)] * len(batch)
        for written in self._written.values():
            written.set()
        refused = _refusals(answer, len(batch))
        where = f"{self.where} (log group {self.group})"
        return [
            None
            if index not in refused
            else DeliveryError(refused[index][0], f"{where}: {refused[index][1]}", retryable=False)
            for index in range(len(batch))
        ]

    async def _expire(self, store: LogStore) -> None:
        """Retention: delete what is older than the retention period, once an hour."""
        assert self._services is not None
        while True:
            await sleep(self._services.clock, EXPIRE_INTERVAL)
            try:
                deleted = await store.expire()
            except Exception:
                log.exception("%s: could not delete expired log events", self.where)
            else:
                if deleted:
                    log.info("%s: %d log events past retention deleted", self.where, deleted)

    # -- subscription filters -------------------------------------------------

    async def _forward(self, store: LogStore, sub: SubscriptionSettings) -> None:
        """Hand what the filter matches to its target, one payload per log
        stream; the cursor moves once they are taken (or given up)."""
        assert self._services is not None
        where = f"{self.where}.subscription_filters.{sub.name}"
        written = self._written[sub.name] = asyncio.Event()
        delay = 1.0
        while True:
            written.clear()  # before reading: a write from now on wakes it
            try:
                batch = await store.read_subscription(self.group, sub.name, sub.batch_size)
                self._handing += 1
                try:
                    for payload in batch.payloads:
                        await hand_over(
                            self._services,
                            sub.target,
                            payload,
                            source=f"logs:{self.group}",
                            name=sub.name,
                            where=where,
                            maximum_retry_attempts=sub.maximum_retry_attempts,
                        )
                    if batch.scanned:
                        await store.advance_subscription(self.group, sub.name, batch.cursor)
                finally:
                    self._handing -= 1
                delay = 1.0
                if batch.scanned < sub.batch_size:
                    await self._idle(written, sub.poll)
            except Exception as exc:
                # A deleted group, a locked database: a subscription must not
                # take the runtime down. It reads again from its cursor.
                log.error("%s: %s; reading again in %.0f s", where, exc, delay)
                await sleep(self._services.clock, delay)
                delay = min(delay * 2, 60.0)

    async def _idle(self, written: asyncio.Event, poll: float) -> None:
        """Wait for this target's next write, or ``poll`` seconds (another process's)."""
        assert self._services is not None
        waiters = [
            asyncio.ensure_future(written.wait()),
            asyncio.ensure_future(sleep(self._services.clock, poll)),
        ]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)


def _stopped(message: str) -> DeliveryError:
    return DeliveryError("LogGroupStopped", message, retryable=True)


def _refusals(answer: Mapping[str, Any], count: int) -> dict[int, tuple[str, str]]:
    """The index of each event PutLogEvents rejected, with a code and why."""
    refused: dict[int, tuple[str, str]] = {}
    info = answer.get("rejectedLogEventsInfo", {})
    for index in range(info.get("tooOldLogEventEndIndex", 0)):
        refused[index] = ("LogEventTooOld", "the event is more than 14 days old")
    for index in range(info.get("expiredLogEventEndIndex", 0)):
        refused.setdefault(index, ("LogEventExpired", "the event is older than the retention"))
    for index in range(info.get("tooNewLogEventStartIndex", count), count):
        refused[index] = ("LogEventTooNew", "the event is more than 2 hours in the future")
    for error in answer.get("errors", []):
        refused[error["index"]] = ("InvalidLogEvent", error["message"])
    return refused


def _batches(taken: list[_Pending]) -> list[list[_Pending]]:
    """PutLogEvents requests for these events: per stream, in time order,
    within the count, size and 24-hour limits."""
    per_stream: dict[str, list[_Pending]] = {}
    for pending in taken:
        per_stream.setdefault(pending.stream, []).append(pending)
    batches = []
    for events in per_stream.values():
        events.sort(key=lambda p: p.timestamp)
        batch: list[_Pending] = []
        size = 0
        for pending in events:
            weight = len(pending.message.encode()) + EVENT_OVERHEAD
            if batch and (
                len(batch) == MAX_BATCH_EVENTS
                or size + weight > MAX_BATCH_BYTES
                or pending.timestamp - batch[0].timestamp > MAX_SPAN_MS
            ):
                batches.append(batch)
                batch, size = [], 0
            batch.append(pending)
            size += weight
        batches.append(batch)
    return batches


def _event_time(event: Mapping[str, Any], clock: Clock | None) -> int:
    """The log event's timestamp: the event's ``time``, in ms; now for what
    is not a bus event (a subscription's or a stream consumer's batch)."""
    try:
        return int(parse_time(event["time"]).timestamp() * 1000)
    except (KeyError, TypeError, ValueError, AttributeError):
        return int((clock.time() if clock else time.time()) * 1000)


def _stream_of(context: DeliveryContext) -> str:
    """The default log stream: the rule's name, or the name of what hands
    batches over (``logs:GROUP``, ``stream:NAME``) with ``/`` for the ``:``
    a stream name cannot have."""
    return context.rule_name.replace(":", "/").replace("*", "-")


class LogGroupType(TargetType):
    name = "log_group"
    description = "A log group with CloudWatch Logs' semantics, in the state database"
    settings_schema = SETTINGS_SCHEMA

    def create(self, name: str, config: Mapping[str, Any]) -> LogGroupTarget:
        where = f"target {name}"
        check_keys(where, config, SETTINGS)
        group = config.get("log_group", name)
        try:
            check_group_name(group)
            retention = (
                {"days": check_retention(config["retention_days"])}
                if "retention_days" in config
                else {}
            )
        except LogsError as exc:
            key = "retention_days" if "retention" in exc.message else "log_group"
            raise ConfigError(f"{where}.{key}", exc.message) from None
        stream = (
            StreamTemplate.parse(f"{where}.log_stream", config["log_stream"])
            if "log_stream" in config
            else None
        )
        metric_filters = None
        if "metric_filters" in config:
            declared = _mapping(
                f"{where}.metric_filters", config["metric_filters"] or {}, "filters"
            )
            metric_filters = [
                parse_metric_filter(f"{where}.metric_filters.{key}", str(key), value)
                for key, value in declared.items()
            ]
        subscriptions = None
        if "subscription_filters" in config:
            declared = _mapping(
                f"{where}.subscription_filters", config["subscription_filters"] or {}, "filters"
            )
            if len(declared) > MAX_SUBSCRIPTION_FILTERS:
                raise ConfigError(
                    f"{where}.subscription_filters",
                    f"a log group has at most {MAX_SUBSCRIPTION_FILTERS} subscription filters,"
                    f" not {len(declared)}",
                )
            subscriptions = [
                parse_subscription(f"{where}.subscription_filters.{key}", str(key), value)
                for key, value in declared.items()
            ]
        return LogGroupTarget(name, group, retention, stream, metric_filters, subscriptions)
