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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pipelines.clock import Clock, sleep
from pipelines.errors import (
    ConfigError,
    DeliveryError,
    LogsError,
    PipelinesError,
    Problems,
    ResourceNotFoundError,
    Where,
)
from pipelines.event import dump_json, parse_time
from pipelines.groupcommit import GroupCommit
from pipelines.settings import Number, Settings, Shape
from pipelines.targets import (
    DeliveryContext,
    Target,
    TargetServices,
    TargetType,
    hand_over,
    started,
)
from pipelines.templates import PathTemplate
from plugins.logs.fieldindex import MAX_FIELD_LENGTH, MAX_FIELDS, parse_policy
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

_TEXT = {"type": "string"}
_PATTERN = Shape(_TEXT, "a filter pattern (default: every event)")
METRIC_TABLE = Settings(
    {
        "pattern": _PATTERN,
        "metric_name": Shape(_TEXT),
        "metric_namespace": Shape(_TEXT),
        "metric_value": Shape(
            {"type": ["string", "number"]},
            "a number, or $.field (JSON) / $field (space-delimited)",
        ),
        "default_value": Shape({"type": "number"}),
        "dimensions": Shape({"type": "object", "additionalProperties": _TEXT}),
        "unit": Shape(_TEXT),
    },
    required=("metric_name", "metric_namespace"),
)
SUBSCRIPTION_TABLE = Settings(
    {
        "pattern": _PATTERN,
        "target": Shape(_TEXT, "the resource given the batches"),
        "batch_size": Number(1000, 1, MAX_BATCH_EVENTS, integer=True),
        "maximum_retry_attempts": Number(
            -1, -1, 10_000, integer=True, description="-1: until it is taken"
        ),
        "poll": Number(1.0, 0.01, 60, description="seconds between looks for new events"),
    },
    required=("target",),
)
SETTINGS_TABLE = Settings(
    {
        "log_group": Shape(_TEXT, "the group's name (default: the resource's)"),
        "retention_days": Shape({"enum": list(RETENTION_DAYS)}, "default: never expire"),
        "index_fields": Shape(
            {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": MAX_FIELD_LENGTH},
                "minItems": 1,
                "maxItems": MAX_FIELDS,
                "uniqueItems": True,
            },
            "the group's field index policy (PutIndexPolicy): fields extracted at ingest"
            " so queries on them read no JSON",
        ),
        "log_stream": Shape(
            _TEXT,
            "the stream of each event: text with <path> placeholders over the"
            " event, such as <detail-type> (default: the rule's name)",
        ),
        "metric_filters": Shape({"type": "object", "additionalProperties": METRIC_TABLE.schema()}),
        "subscription_filters": Shape(
            {
                "type": "object",
                "maxProperties": MAX_SUBSCRIPTION_FILTERS,
                "additionalProperties": SUBSCRIPTION_TABLE.schema(),
            }
        ),
    }
)
EXPIRE_INTERVAL = 3600.0
#: Refusals a retry cannot cure.
SENDER_FAULTS = {"InvalidParameterException", "ResourceNotFoundException"}


@dataclass(frozen=True)
class StreamTemplate:
    """A log stream name with ``<path>`` placeholders filled from the event."""

    template: PathTemplate

    @classmethod
    def parse(cls, where: Where, text: Any) -> StreamTemplate:
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


def _mapping(where: Where, config: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(config, Mapping):
        raise ConfigError(where, f"must be a mapping of {what}")
    return config


def _pattern(where: Where, config: Mapping[str, Any]) -> str:
    pattern = config.get("pattern", "")
    if not isinstance(pattern, str):
        raise ConfigError(where / "pattern", f"must be a filter pattern (text), not {pattern!r}")
    try:
        compiled(pattern)
    except LogsError as exc:
        raise ConfigError(where / "pattern", exc.message) from None
    return pattern


def parse_metric_filter(where: Where, name: str, config: Any) -> MetricFilterSettings:
    config = _mapping(where, config, "pattern, metric_name, metric_namespace, metric_value, ...")
    problems = Problems()
    with problems:
        METRIC_TABLE.check_keys(where, config)
    with problems:
        pattern = _pattern(where, config)
    for key in ("metric_name", "metric_namespace"):
        if not isinstance(config.get(key), str) or not config[key]:
            problems.add(ConfigError(where / key, "is required (text)"))
    value = config.get("metric_value", "1")
    default = config.get("default_value")
    if isinstance(default, bool) or not isinstance(default, int | float | None):
        problems.add(ConfigError(where / "default_value", f"must be a number, not {default!r}"))
    with problems:
        dimensions = _mapping(where / "dimensions", config.get("dimensions", {}), "name: $.field")
    # What follows checks them together: only once each is right.
    problems.raise_any()
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


def parse_subscription(where: Where, name: str, config: Any) -> SubscriptionSettings:
    config = _mapping(where, config, "pattern, target, batch_size, ...")
    problems = Problems()
    with problems:
        SUBSCRIPTION_TABLE.check_keys(where, config)
    with problems:
        pattern = _pattern(where, config)
    target = config.get("target")
    if not isinstance(target, str) or not target:
        problems.add(
            ConfigError(where / "target", "must name the resource that gets the log events")
        )
    numbers: dict[str, float] = {}
    for key in ("batch_size", "maximum_retry_attempts", "poll"):
        with problems:
            numbers[key] = SUBSCRIPTION_TABLE.number(where, config, key)
    try:
        check_filter_name(name)
    except LogsError as exc:
        problems.add(ConfigError(where, exc.message))
    problems.raise_any()
    return SubscriptionSettings(
        name,
        pattern,
        str(target),
        int(numbers["batch_size"]),
        int(numbers["maximum_retry_attempts"]),
        numbers["poll"],
    )


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
        index_fields: list[str] | None = None,
    ) -> None:
        self.name = name
        self.index_fields = index_fields  # None when the config does not set it
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
        self._forwarding: dict[str, asyncio.Task[None]] = {}  # per subscription filter
        self._handing = 0  # subscriptions handing a batch over right now

    def references(self) -> list[tuple[tuple[str | int, ...], str]]:
        return [
            (("subscription_filters", s.name, "target"), s.target) for s in self.subscriptions or []
        ]

    async def start(self, services: TargetServices) -> None:
        self.store = store = await services.open_store(
            LogStore, services.put_metric_data, where=f"log group {self.group}"
        )
        try:
            for sub in self.subscriptions or []:
                services.resource(sub.target, where=f"{self.where}.subscription_filters.{sub.name}")
            await self._apply(store)
        except BaseException:
            await store.close()
            self.store = None
            raise
        self._services = services
        self._tasks = [services.spawn(self._commit.run()), services.upkeep(store.retention())]
        for sub in (
            self.subscriptions if self.subscriptions is not None else await self._made(store)
        ):
            self._forwarding[sub.name] = services.spawn(self._forward(store, sub))

    async def _made(self, store: LogStore) -> list[SubscriptionSettings]:
        """The group's filters made outside the config (the API, the library)
        whose destination is a resource of this pipeline: forwarded too."""
        assert self._services is not None
        found = []
        for made in await store.describe_subscription_filters(self.group):
            try:
                self._services.resource(made["destinationArn"])
            except ResourceNotFoundError:
                log.warning(
                    "%s: subscription filter %s sends to %r, no resource of this pipeline:"
                    " not forwarded",
                    self.where,
                    made["filterName"],
                    made["destinationArn"],
                )
                continue
            found.append(
                SubscriptionSettings(
                    made["filterName"], made["filterPattern"], made["destinationArn"]
                )
            )
        return found

    async def subscribe(self, name: str, pattern: str, target: str) -> None:
        """PutSubscriptionFilter on the running group: the filter is put and
        forwarded to resource ``target`` (as a config's is) until it is
        deleted or the target stops; one of the same name is replaced."""
        store = started(self.store, self.where)
        assert self._services is not None
        self._services.resource(target, where=f"{self.where}.subscription_filters.{name}")
        await store.put_subscription_filter(self.group, name, pattern, target)
        await self._stop_forwarding(name)
        sub = SubscriptionSettings(name, pattern, target)
        self._forwarding[name] = self._services.spawn(self._forward(store, sub))

    async def unsubscribe(self, name: str) -> None:
        """DeleteSubscriptionFilter on the running group: forwarding stops."""
        store = started(self.store, self.where)
        await store.delete_subscription_filter(self.group, name)
        await self._stop_forwarding(name)

    async def _stop_forwarding(self, name: str) -> None:
        task = self._forwarding.pop(name, None)
        self._written.pop(name, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def written(self) -> None:
        """Events were written to the group by another writer (the API): the
        subscriptions look for them now rather than at their next poll."""
        for event in self._written.values():
            event.set()

    async def _apply(self, store: LogStore) -> None:
        """Create the group if need be and apply what the config names."""
        try:
            await store.create_log_group(self.group, exist_ok=True)
            if self.retention:
                await store.put_retention_policy(self.group, self.retention["days"])
            if self.index_fields is not None:
                await store.put_index_policy(self.group, {"Fields": self.index_fields})
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
        tasks = [*self._tasks, *self._forwarding.values()]
        for task in tasks:
            task.cancel()
        # gather, not a suppressed await: a cancellation of stop() itself goes on.
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []
        self._forwarding = {}
        self._commit.fail_waiting(_stopped("the log group target stopped"))
        if self.store is not None:
            await self.store.close()
            self.store = None

    # -- writing ------------------------------------------------------------

    async def deliver(self, payload: Any, context: DeliveryContext) -> Any:
        started(self.store, self.where)
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
    arn_template = "arn:aws:logs:{region}:{account}:log-group:{name}"
    name = "log_group"
    description = "A log group with CloudWatch Logs' semantics, in the state database"
    settings = SETTINGS_TABLE

    def create(self, name: str, config: Mapping[str, Any]) -> LogGroupTarget:
        where = Where(f"target {name}")
        problems = Problems()
        with problems:
            SETTINGS_TABLE.check_keys(where, config)
        group = config.get("log_group", name)
        try:
            check_group_name(group)
        except LogsError as exc:
            problems.add(ConfigError(where / "log_group", exc.message))
        retention: dict[str, int | None] = {}
        if "retention_days" in config:
            try:
                retention["days"] = check_retention(config["retention_days"])
            except LogsError as exc:
                problems.add(ConfigError(where / "retention_days", exc.message))
        index_fields = None
        if "index_fields" in config:
            try:
                index_fields = parse_policy({"Fields": config["index_fields"]})
            except LogsError as exc:
                problems.add(ConfigError(where / "index_fields", exc.message))
        stream = None
        if "log_stream" in config:
            with problems:
                stream = StreamTemplate.parse(where / "log_stream", config["log_stream"])
        metric_filters = None
        if "metric_filters" in config:
            with problems:
                metric_filters = _filters(
                    where / "metric_filters", config["metric_filters"], parse_metric_filter
                )
        subscriptions = None
        if "subscription_filters" in config:
            with problems:
                subscriptions = _filters(
                    where / "subscription_filters",
                    config["subscription_filters"],
                    parse_subscription,
                    MAX_SUBSCRIPTION_FILTERS,
                )
        problems.raise_any()
        return LogGroupTarget(
            name, group, retention, stream, metric_filters, subscriptions, index_fields
        )


_Filter = TypeVar("_Filter", MetricFilterSettings, SubscriptionSettings)


def _filters(
    where: Where,
    declared: Any,
    parse: Callable[[Where, str, Any], _Filter],
    limit: int | None = None,
) -> list[_Filter]:
    """A log group's metric or subscription filters, by name: every bad one named."""
    declared = _mapping(where, declared or {}, "filters")
    if limit is not None and len(declared) > limit:
        raise ConfigError(
            where, f"a log group has at most {limit} subscription filters, not {len(declared)}"
        )
    problems = Problems()
    found = []
    for key, value in declared.items():
        with problems:
            found.append(parse(where / key, str(key), value))
    problems.raise_any()
    return found
