"""The ``stream`` target type: each delivered payload becomes a stream record.

Settings (see docs/streams.md): the stream's ``shards`` (at creation),
``retention_hours``, ``max_record_size`` and ``write_limits``; where the
partition key comes from (``partition_key``, or ``partition_key_jmespath``
over the event, default ``source``); and ``consumers``: named readers that
hand batches of records to another resource, as a Lambda event source
mapping does, each with its own checkpoints.

Deliveries in flight at once are written together (up to 500 records, one
transaction): the bus runs ``concurrency`` of them, so a busy rule target
commits in groups rather than once per event.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jmespath
import jmespath.exceptions

from pipelines.clock import sleep
from pipelines.errors import (
    ConfigError,
    DeliveryError,
    PipelinesError,
    Problems,
    StreamError,
    Where,
)
from pipelines.event import DEFAULT_REGION
from pipelines.groupcommit import GroupCommit
from pipelines.settings import Flag, Number, Settings, Shape
from pipelines.targets import (
    DeliveryContext,
    Gauge,
    Target,
    TargetServices,
    TargetType,
    describe_error,
    hand_over,
    key_text,
    payload_text,
    started,
)
from plugins.stream.store import (
    DEFAULT_RECORD_SIZE,
    MAX_GET_RECORDS,
    MAX_PUT_RECORDS,
    MAX_PUT_REQUEST_BYTES,
    MAX_RECORD_SIZE,
    MAX_RETENTION_HOURS,
    MAX_SHARDS,
    MIN_RETENTION_HOURS,
    Record,
    StreamStore,
    check_stream_name,
)

log = logging.getLogger("plugins.stream")

STARTS = ("trim_horizon", "latest")
CONSUMER_TABLE = Settings(
    {
        "target": Shape({"type": "string"}, "the resource given batches"),
        "batch_size": Number(100, 1, MAX_GET_RECORDS, integer=True),
        "start": Shape({"enum": list(STARTS), "default": STARTS[0]}),
        "maximum_retry_attempts": Number(
            -1, -1, 10_000, integer=True, description="-1: until taken or expired"
        ),
        "poll": Number(1.0, 0.01, 60, description="seconds between looks for new records"),
    },
    required=("target",),
)
SETTINGS_TABLE = Settings(
    {
        "stream": Shape({"type": "string"}, "the stream's name (default: the resource's)"),
        "shards": Number(1, 1, MAX_SHARDS, integer=True),
        "retention_hours": Number(
            MIN_RETENTION_HOURS, MIN_RETENTION_HOURS, MAX_RETENTION_HOURS, integer=True
        ),
        "max_record_size": Number(DEFAULT_RECORD_SIZE, 1024, MAX_RECORD_SIZE, integer=True),
        "write_limits": Flag(
            False, "per shard 1,000 records/s and 1 MiB/s, as provisioned Kinesis"
        ),
        "partition_key": Shape({"type": "string"}, "a fixed partition key"),
        "partition_key_jmespath": Shape(
            {"type": "string", "default": "source"},
            "JMESPath over the event giving the partition key",
        ),
        "consumers": Shape(
            {"type": "object", "additionalProperties": CONSUMER_TABLE.schema()},
            "consumers by name: each hands batches of records to a resource",
        ),
    }
)
TRIM_INTERVAL = 60.0
#: Refusals a retry cannot cure.
SENDER_FAULTS = {"InvalidArgumentException", "ResourceNotFoundException"}


@dataclass(frozen=True)
class ConsumerSettings:
    name: str
    target: str
    batch_size: int = 100
    start: str = "trim_horizon"
    maximum_retry_attempts: int = -1  # -1: until it succeeds or the records expire
    poll: float = 1.0  # how often to look for records written by other processes


def parse_consumer(where: Where, name: str, config: Any) -> ConsumerSettings:
    if not isinstance(config, Mapping):
        raise ConfigError(where, "must be a mapping with target, batch_size, start, ...")
    problems = Problems()
    with problems:
        CONSUMER_TABLE.check_keys(where, config)
    target = config.get("target")
    with problems:
        if not isinstance(target, str) or not target:
            raise ConfigError(where / "target", "must name the resource that gets the batches")
    start = config.get("start", STARTS[0])
    with problems:
        if start not in STARTS:
            raise ConfigError(where / "start", f"must be trim_horizon or latest, not {start!r}")
    numbers: dict[str, float] = {}
    for key in ("batch_size", "maximum_retry_attempts", "poll"):
        with problems:
            numbers[key] = CONSUMER_TABLE.number(where, config, key)
    problems.raise_any()
    return ConsumerSettings(
        name,
        str(target),
        int(numbers["batch_size"]),
        start,
        int(numbers["maximum_retry_attempts"]),
        numbers["poll"],
    )


class StreamTarget(Target):
    concurrency = 64  # deliveries in flight per rule target: what one commit can group

    def __init__(
        self,
        name: str,
        stream: str,
        attributes: Mapping[str, Any],
        partition_key: str | None,
        partition_expression: jmespath.parser.ParsedResult,
        consumers: list[ConsumerSettings],
    ) -> None:
        self.name = name
        self.where = f"target {name}"
        self.stream = stream
        self.attributes = dict(attributes)
        self.partition_key = partition_key
        self.partition_expression = partition_expression
        self.consumers = consumers
        self.store: StreamStore | None = None
        self._services: TargetServices | None = None
        self._commit: GroupCommit[dict[str, Any], dict[str, Any]] = GroupCommit(
            _requests, self._put, lambda: _stopped("the stream target stopped while writing")
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.throttled = 0  # records refused by the write limits (each retried by the bus)
        #: Per consumer, the arrival time of the oldest record it has in hand
        #: (None: it waits for records), for its iterator age (``gauges``).
        self._in_hand: dict[str, float | None] = {c.name: None for c in consumers}

    def references(self) -> list[tuple[tuple[str | int, ...], str]]:
        return [(("consumers", c.name, "target"), c.target) for c in self.consumers]

    async def start(self, services: TargetServices) -> None:
        self.store = store = await services.open_store(StreamStore, where=f"stream {self.stream}")
        try:
            for consumer in self.consumers:
                services.resource(consumer.target, where=f"{self.where}.consumers.{consumer.name}")
            await self._create(store)
        except BaseException:
            await store.close()
            self.store = None
            raise
        self._services = services
        self._tasks = [
            services.spawn(self._commit.run()),
            services.upkeep(store.retention(self.stream)),
        ]
        self._tasks += [services.spawn(self._consume(store, c)) for c in self.consumers]

    async def _create(self, store: StreamStore) -> None:
        shards = self.attributes.get("shards", 1)
        options = {k: v for k, v in self.attributes.items() if k != "shards"}
        try:
            described = await store.create_stream(self.stream, shards, update=True, **options)
        except StreamError as exc:
            raise PipelinesError(f"{self.where}: {exc.message}") from None
        if described["OpenShardCount"] != shards:
            log.info(
                "%s: stream %s has %d open shards (the config's %d applies at creation;"
                " reshard with pipelines stream split and merge)",
                self.where,
                self.stream,
                described["OpenShardCount"],
                shards,
            )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        # gather, not a suppressed await: a cancellation of stop() itself goes on.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._commit.fail_waiting(_stopped("the stream target stopped"))
        if self.store is not None:
            await self.store.close()
            self.store = None

    # -- writing ------------------------------------------------------------

    async def deliver(self, payload: Any, context: DeliveryContext) -> Any:
        started(self.store, self.where)
        data = payload_text(payload).encode()
        entry = {"Data": data, "PartitionKey": self._partition_key(context.event)}
        result = await self._commit.submit(entry)
        return result["SequenceNumber"]

    def _partition_key(self, event: Mapping[str, Any]) -> str:
        if self.partition_key is not None:
            return self.partition_key
        found = self.partition_expression.search(event)
        key = key_text(found)
        if key is None:
            raise DeliveryError(
                "InvalidPartitionKey",
                f"{self.where}: partition_key_jmespath gave {found!r} for this event,"
                " not a string or number",
                retryable=False,
            )
        if len(key) > 256:
            raise DeliveryError(
                "InvalidPartitionKey",
                f"{self.where}: partition_key_jmespath gave a key of {len(key)} characters;"
                " Kinesis allows 256",
                retryable=False,
            )
        return key

    async def _put(self, entries: list[dict[str, Any]]) -> list[dict[str, Any] | BaseException]:
        """One PutRecords for ``entries``: each record's result or error."""
        assert self.store is not None
        try:
            answer = await self.store.put_records(self.stream, entries)
        except StreamError as exc:
            failure = DeliveryError(exc.code, exc.message, retryable=exc.code not in SENDER_FAULTS)
            return [failure] * len(entries)
        except Exception as exc:  # the database: a retry may well succeed
            log.exception("%s: writing %d records failed", self.where, len(entries))
            return [DeliveryError("InternalFailure", str(exc), retryable=True)] * len(entries)
        outcomes: list[dict[str, Any] | BaseException] = []
        for result in answer["Records"]:
            if "ErrorCode" not in result:
                outcomes.append(result)
                continue
            code = result["ErrorCode"]
            self.throttled += code == "ProvisionedThroughputExceededException"
            # The store counts "record N" within this write group: not the user's.
            message = result["ErrorMessage"].split(": ", 1)[-1]
            outcomes.append(
                DeliveryError(
                    code,
                    f"{self.where} (stream {self.stream}): {message}",
                    retryable=code not in SENDER_FAULTS,
                )
            )
        return outcomes

    # -- consumers ----------------------------------------------------------

    async def _consume(self, store: StreamStore, settings: ConsumerSettings) -> None:
        """Hand each batch to the consumer's target until it takes it; the
        checkpoint moves past a batch only then (or when retries run out)."""
        assert self._services is not None
        where = f"{self.where}.consumers.{settings.name}"
        delay = 1.0
        while True:
            reader = store.consume(
                self.stream,
                settings.name,
                start=settings.start,
                batch=settings.batch_size,
                poll=settings.poll,
            )
            try:
                async with reader:
                    while records := await reader.next_batch():
                        await self._hand_over(settings, records)
                        delay = 1.0
                return
            except Exception as exc:
                # A deleted stream, a locked database: a consumer must not take
                # the runtime down. It reads again from its checkpoints.
                log.error("%s: %s; reading again in %.0f s", where, describe_error(exc), delay)
                await sleep(self._services.clock, delay)
                delay = min(delay * 2, 60.0)

    async def gauges(self) -> Sequence[Gauge]:
        """Each consumer's iterator age, as Kinesis's GetRecords.IteratorAgeMilliseconds
        means it: how old the records it is handing over are (0 while it
        waits for new ones). A consumer stuck on a failing target shows it growing."""
        if self._services is None:
            return ()
        now = self._services.clock.time()
        return [
            Gauge(
                "stream_iterator_age_seconds",
                0.0 if arrival is None else max(now - arrival, 0.0),
                {"stream": self.stream, "consumer": name},
                "Age of the records a stream consumer is handing over (0: caught up).",
            )
            for name, arrival in self._in_hand.items()
        ]

    async def _hand_over(self, settings: ConsumerSettings, records: list[Record]) -> None:
        assert self._services is not None
        self._in_hand[settings.name] = records[0].arrival
        try:
            await self._hand_to(settings, records)
        finally:
            self._in_hand[settings.name] = None

    async def _hand_to(self, settings: ConsumerSettings, records: list[Record]) -> None:
        assert self._services is not None
        await hand_over(
            self._services,
            settings.target,
            kinesis_event(self.stream, records),
            source=f"stream:{self.stream}",
            name=settings.name,
            where=f"{self.where}.consumers.{settings.name} ({len(records)} records"
            f" from {records[0].shard_id})",
            maximum_retry_attempts=settings.maximum_retry_attempts,
        )


def _stopped(message: str) -> DeliveryError:
    return DeliveryError("StreamStopped", message, retryable=True)


def _requests(entries: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """PutRecords requests of up to 500 records and 5 MiB, in order."""
    requests: list[list[dict[str, Any]]] = []
    size = 0
    for entry in entries:
        weight = len(entry["Data"]) + len(entry["PartitionKey"].encode())
        if (
            not requests
            or len(requests[-1]) == MAX_PUT_RECORDS
            or size + weight > MAX_PUT_REQUEST_BYTES
        ):
            requests.append([])
            size = 0
        requests[-1].append(entry)
        size += weight
    return requests


def kinesis_event(stream: str, records: list[Record]) -> dict[str, Any]:
    """A batch as Lambda hands Kinesis records to a function: {"Records": [...]}."""
    arn = f"arn:aws:kinesis:{DEFAULT_REGION}:000000000000:stream/{stream}"
    return {
        "Records": [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": record.partition_key,
                    "sequenceNumber": record.sequence_number,
                    "data": base64.b64encode(record.data).decode(),
                    "approximateArrivalTimestamp": record.arrival,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{record.shard_id}:{record.sequence_number}",
                "eventName": "aws:kinesis:record",
                "awsRegion": DEFAULT_REGION,
                "eventSourceARN": arn,
            }
            for record in records
        ]
    }


class StreamType(TargetType):
    arn_template = "arn:aws:kinesis:{region}:{account}:stream/{name}"
    name = "stream"
    description = "A durable stream with Kinesis Data Streams' semantics, in the state database"
    settings = SETTINGS_TABLE

    def create(self, name: str, config: Mapping[str, Any]) -> StreamTarget:
        where = Where(f"target {name}")
        problems = Problems()
        with problems:
            SETTINGS_TABLE.check_keys(where, config)
        stream = config.get("stream", name)
        try:
            check_stream_name(stream)
        except StreamError as exc:
            problems.add(ConfigError(where / "stream", exc.message))
        # Only what the config says is applied to an existing stream: a
        # retention set with ``pipelines stream create`` is not reset to 24 h.
        attributes: dict[str, Any] = {"shards": 1}
        for key in ("shards", "retention_hours", "max_record_size"):
            with problems:
                value = int(SETTINGS_TABLE.number(where, config, key))
                if key in config or key == "shards":
                    attributes[key] = value
        with problems:
            limits = bool(SETTINGS_TABLE.flag(where, config, "write_limits"))
            if "write_limits" in config:
                attributes["write_limits"] = limits
        with problems:
            fixed, compiled = _partition_key(where, config)
        consumers = []
        declared = config.get("consumers") or {}
        if not isinstance(declared, Mapping):
            problems.add(
                ConfigError(where / "consumers", "must map consumer names to their settings")
            )
            declared = {}
        for key, value in declared.items():
            with problems:
                consumers.append(parse_consumer(where / "consumers" / key, str(key), value))
        problems.raise_any()
        return StreamTarget(name, stream, attributes, fixed, compiled, consumers)


def _partition_key(
    where: Where, config: Mapping[str, Any]
) -> tuple[str | None, jmespath.parser.ParsedResult]:
    """A fixed partition key, and the expression giving one (``source`` by default)."""
    fixed = config.get("partition_key")
    expression = config.get("partition_key_jmespath")
    if fixed is not None and expression is not None:
        raise ConfigError(where, "give partition_key or partition_key_jmespath, not both")
    if fixed is not None and (not isinstance(fixed, str) or not 1 <= len(fixed) <= 256):
        raise ConfigError(where / "partition_key", "must be a string of 1 to 256 characters")
    try:
        return fixed, jmespath.compile(expression if expression is not None else "source")
    except (jmespath.exceptions.JMESPathError, TypeError) as exc:
        raise ConfigError(where / "partition_key_jmespath", str(exc)) from None
