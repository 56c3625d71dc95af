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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jmespath
import jmespath.exceptions

from pipelines.clock import sleep
from pipelines.errors import ConfigError, DeliveryError, PipelinesError, StreamError
from pipelines.event import DEFAULT_REGION, dump_json
from pipelines.groupcommit import GroupCommit
from pipelines.targets import (
    DeliveryContext,
    Target,
    TargetServices,
    TargetType,
    check_keys,
    describe_error,
    flag_setting,
    hand_over,
    key_text,
    number_setting,
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

SETTINGS = {
    "stream",
    "shards",
    "retention_hours",
    "max_record_size",
    "write_limits",
    "partition_key",
    "partition_key_jmespath",
    "consumers",
}
CONSUMER_SETTINGS = {"target", "batch_size", "start", "maximum_retry_attempts", "poll"}
TRIM_INTERVAL = 60.0
#: Refusals a retry cannot cure.
SENDER_FAULTS = {"InvalidArgumentException", "ResourceNotFoundException"}

SETTINGS_SCHEMA: dict[str, Any] = {
    "properties": {
        "stream": {"type": "string", "description": "the stream's name (default: the resource's)"},
        "shards": {"type": "integer", "minimum": 1, "maximum": MAX_SHARDS, "default": 1},
        "retention_hours": {
            "type": "integer",
            "minimum": MIN_RETENTION_HOURS,
            "maximum": MAX_RETENTION_HOURS,
            "default": MIN_RETENTION_HOURS,
        },
        "max_record_size": {
            "type": "integer",
            "minimum": 1024,
            "maximum": MAX_RECORD_SIZE,
            "default": DEFAULT_RECORD_SIZE,
        },
        "write_limits": {
            "type": "boolean",
            "default": False,
            "description": "per shard 1,000 records/s and 1 MiB/s, as provisioned Kinesis",
        },
        "partition_key": {"type": "string", "description": "a fixed partition key"},
        "partition_key_jmespath": {
            "type": "string",
            "default": "source",
            "description": "JMESPath over the event giving the partition key",
        },
        "consumers": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["target"],
                "additionalProperties": False,
                "properties": {
                    "target": {"type": "string", "description": "the resource given batches"},
                    "batch_size": {"type": "integer", "minimum": 1, "maximum": MAX_GET_RECORDS},
                    "start": {"enum": ["trim_horizon", "latest"]},
                    "maximum_retry_attempts": {"type": "integer", "minimum": -1},
                    "poll": {"type": "number", "minimum": 0.01},
                },
            },
        },
    },
}


@dataclass(frozen=True)
class ConsumerSettings:
    name: str
    target: str
    batch_size: int = 100
    start: str = "trim_horizon"
    maximum_retry_attempts: int = -1  # -1: until it succeeds or the records expire
    poll: float = 1.0  # how often to look for records written by other processes


def parse_consumer(where: str, name: str, config: Any) -> ConsumerSettings:
    if not isinstance(config, Mapping):
        raise ConfigError(where, "must be a mapping with target, batch_size, start, ...")
    check_keys(where, config, CONSUMER_SETTINGS)
    target = config.get("target")
    if not isinstance(target, str) or not target:
        raise ConfigError(f"{where}.target", "must name the resource that gets the batches")
    start = config.get("start", "trim_horizon")
    if start not in ("trim_horizon", "latest"):
        raise ConfigError(f"{where}.start", f"must be trim_horizon or latest, not {start!r}")
    batch = number_setting(where, config, "batch_size", 100, 1, MAX_GET_RECORDS, integer=True)
    retries = number_setting(where, config, "maximum_retry_attempts", -1, -1, 10_000, integer=True)
    poll = number_setting(where, config, "poll", 1.0, 0.01, 60)
    return ConsumerSettings(name, target, int(batch), start, int(retries), poll)


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

    def references(self) -> list[tuple[tuple[str | int, ...], str]]:
        return [(("consumers", c.name, "target"), c.target) for c in self.consumers]

    async def start(self, services: TargetServices) -> None:
        if services.state_path is None:
            raise PipelinesError(
                f"stream {self.stream}: streams are kept in the state database;"
                " give the runtime a state_path (a config always has one)"
            )
        for consumer in self.consumers:
            services.resource(consumer.target, where=f"{self.where}.consumers.{consumer.name}")
        self._services = services
        self.store = store = await StreamStore.open(services.state_path, services.clock)
        try:
            await self._create(store)
        except BaseException:
            await store.close()
            self.store = None
            raise
        self._tasks = [services.spawn(self._commit.run()), services.spawn(self._trim(store))]
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
        if self.store is None:
            raise DeliveryError("StreamStopped", f"{self.where} is not running", retryable=True)
        data = payload.encode() if isinstance(payload, str) else dump_json(payload)
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

    async def _trim(self, store: StreamStore) -> None:
        """Retention: delete what is older than the retention period, once a minute."""
        assert self._services is not None
        while True:
            await sleep(self._services.clock, TRIM_INTERVAL)
            try:
                trimmed = await store.trim(self.stream)
            except Exception:
                log.exception("stream %s: could not trim expired records", self.stream)
            else:
                if trimmed:
                    log.info("stream %s: %d records past retention deleted", self.stream, trimmed)

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

    async def _hand_over(self, settings: ConsumerSettings, records: list[Record]) -> None:
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
    name = "stream"
    description = "A durable stream with Kinesis Data Streams' semantics, in the state database"
    settings_schema = SETTINGS_SCHEMA

    def create(self, name: str, config: Mapping[str, Any]) -> StreamTarget:
        where = f"target {name}"
        check_keys(where, config, SETTINGS)
        stream = config.get("stream", name)
        try:
            check_stream_name(stream)
        except StreamError as exc:
            raise ConfigError(f"{where}.stream", exc.message) from None
        shards = number_setting(where, config, "shards", 1, 1, MAX_SHARDS, integer=True)
        retention = number_setting(
            where,
            config,
            "retention_hours",
            MIN_RETENTION_HOURS,
            MIN_RETENTION_HOURS,
            MAX_RETENTION_HOURS,
            integer=True,
        )
        size = number_setting(
            where,
            config,
            "max_record_size",
            DEFAULT_RECORD_SIZE,
            1024,
            MAX_RECORD_SIZE,
            integer=True,
        )
        limits = bool(flag_setting(where, config, "write_limits", False))
        # Only what the config says is applied to an existing stream: a
        # retention set with ``pipelines stream create`` is not reset to 24 h.
        attributes: dict[str, Any] = {"shards": int(shards)}
        for key, value in (
            ("retention_hours", int(retention)),
            ("max_record_size", int(size)),
            ("write_limits", limits),
        ):
            if key in config:
                attributes[key] = value
        fixed = config.get("partition_key")
        expression = config.get("partition_key_jmespath")
        if fixed is not None and expression is not None:
            raise ConfigError(where, "give partition_key or partition_key_jmespath, not both")
        if fixed is not None and (not isinstance(fixed, str) or not 1 <= len(fixed) <= 256):
            raise ConfigError(f"{where}.partition_key", "must be a string of 1 to 256 characters")
        try:
            compiled = jmespath.compile(expression if expression is not None else "source")
        except (jmespath.exceptions.JMESPathError, TypeError) as exc:
            raise ConfigError(f"{where}.partition_key_jmespath", str(exc)) from None
        declared = config.get("consumers") or {}
        if not isinstance(declared, Mapping):
            raise ConfigError(f"{where}.consumers", "must map consumer names to their settings")
        consumers = [
            parse_consumer(f"{where}.consumers.{key}", str(key), value)
            for key, value in declared.items()
        ]
        return StreamTarget(name, stream, attributes, fixed, compiled, consumers)
