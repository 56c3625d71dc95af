"""The ``firehose`` target type: a delivery stream as a resource.

Declared in a config (or made by CreateDeliveryStream, which puts such a
resource), it keeps its configuration in the ``FirehoseStore``, runs its
``DeliveryStream`` (buffers and the task that writes objects), reads its
Kinesis source if it has one, and, as a rule target, puts each payload as
one record (PutRecord). Settings (docs/firehose.md):

- ``destination``: an ExtendedS3DestinationConfiguration in AWS's own
  shape (BucketARN, Prefix, ErrorOutputPrefix, BufferingHints,
  CompressionFormat, ProcessingConfiguration, DynamicPartitioningConfiguration,
  DataFormatConversionConfiguration, ...);
- ``http_endpoint``: instead of ``destination``, an
  HttpEndpointDestinationConfiguration (EndpointConfiguration, BufferingHints,
  RequestConfiguration, RetryOptions, S3BackupMode, S3Configuration);
- ``delivery_stream_name``: default the resource's name;
- ``kinesis_stream``: a project stream to read (KinesisStreamAsSource);
  without it the stream takes PutRecord and PutRecordBatch (DirectPut).

The BucketARN's bucket is a directory found by the bucket plugin's lookup
(``plugins.bucket.lookup``): a ``bucket`` resource answering to its name,
else ``<state dir>/buckets/<name>``; object ``K`` is the file ``K`` under it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from pipelines.clock import sleep
from pipelines.errors import ConfigError, DeliveryError, PipelinesError, Problems, Where
from pipelines.event import DEFAULT_ACCOUNT, DEFAULT_REGION
from pipelines.http.client import HttpClient
from pipelines.settings import Settings, Shape
from pipelines.targets import (
    DeliveryContext,
    Target,
    TargetServices,
    TargetType,
    describe_error,
    payload_text,
    started,
)
from plugins.bucket.lookup import Place, buckets_of
from plugins.firehose import endpoint
from plugins.firehose.delivery import NAMESPACE, DeliveryStream, Identity, PutResult
from plugins.firehose.spec import (
    EXTENDED_S3,
    HTTP_ENDPOINT,
    Destination,
    SpecError,
    destination_of,
    parse_destination,
    parse_http_destination,
)
from plugins.firehose.store import FirehoseStore, StreamRecord

log = logging.getLogger("plugins.firehose")

SETTINGS_TABLE = Settings(
    {
        "destination": Shape(
            {"type": "object"},
            "an ExtendedS3DestinationConfiguration, in AWS's shape",
        ),
        "http_endpoint": Shape(
            {"type": "object"},
            "an HttpEndpointDestinationConfiguration, in AWS's shape (instead of destination)",
        ),
        "delivery_stream_name": Shape({"type": "string", "minLength": 1, "maxLength": 64}),
        "kinesis_stream": Shape(
            {"type": "string"}, "a project stream to read (KinesisStreamAsSource)"
        ),
        "tags": Shape({"type": "object", "additionalProperties": {"type": "string"}}),
    },
)
#: How often a running stream renews or claims its ownership, and looks for
#: records other processes wrote and for flush requests.
POLL = 1.0
#: How long an owner's claim lasts unless renewed: a dead runner's streams
#: are taken over this long after its last renewal.
LEASE = 10.0
#: In a cluster, every this many polls the owner reads every buffered
#: chunk's bookkeeping, not only those after the last id it saw.
RESCAN_EVERY = 10
ARN = "arn:aws:firehose:{region}:{account}:deliverystream/{name}"


def stream_arn(name: str) -> str:
    return ARN.format(region=DEFAULT_REGION, account=DEFAULT_ACCOUNT, name=name)


def request_of(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A resource's settings as CreateDeliveryStream's parameters."""
    request: dict[str, Any] = {"DeliveryStreamType": "DirectPut"}
    if settings.get("http_endpoint") is not None:
        request[HTTP_ENDPOINT] = dict(settings["http_endpoint"])
    else:
        request[EXTENDED_S3] = dict(settings["destination"])
    if settings.get("kinesis_stream"):
        request["DeliveryStreamType"] = "KinesisStreamAsSource"
        request["KinesisStreamSourceConfiguration"] = {
            "KinesisStreamARN": (
                f"arn:aws:kinesis:{DEFAULT_REGION}:{DEFAULT_ACCOUNT}:stream/{settings['kinesis_stream']}"
            ),
            "RoleARN": f"arn:aws:iam::{DEFAULT_ACCOUNT}:role/firehose",
        }
    return request


#: Settings of an earlier version: where buckets are is the bucket plugin's now.
MOVED = ("directory", "buckets")


def check_settings(where: Where, config: Mapping[str, Any]) -> Destination:
    problems = Problems()
    for key in MOVED:
        if key in config:
            problems.add(
                ConfigError(
                    where / key,
                    "a delivery stream's bucket is a `bucket` resource now: declare"
                    " {type: bucket, directory: DIR, bucket: NAME} (a bucket no resource"
                    " declares is <state dir>/buckets/NAME)",
                )
            )
    with problems:
        SETTINGS_TABLE.check_keys(where, {k: v for k, v in config.items() if k not in MOVED})
    key = "http_endpoint" if "http_endpoint" in config else "destination"
    destination = config.get(key)
    parsed: Destination | None = None
    if "http_endpoint" in config and "destination" in config:
        problems.add(
            ConfigError(where / "http_endpoint", "give destination or http_endpoint, not both")
        )
    elif not isinstance(destination, Mapping):
        problems.add(
            ConfigError(
                where / key,
                "must be an HttpEndpointDestinationConfiguration object"
                if key == "http_endpoint"
                else "must be an ExtendedS3DestinationConfiguration object"
                + ("" if key in config else " (or give http_endpoint)"),
            )
        )
    else:
        try:
            parse = parse_http_destination if key == "http_endpoint" else parse_destination
            parsed = parse(destination)
        except SpecError as exc:
            path = where / key
            for step in exc.path:
                path = path / step
            problems.add(ConfigError(path, exc.message))
    for key in ("delivery_stream_name", "kinesis_stream"):
        if key in config and (not isinstance(config[key], str) or not config[key]):
            problems.add(ConfigError(where / key, "must be a non-empty string"))
    tags = config.get("tags", {})
    if not isinstance(tags, Mapping) or not all(isinstance(v, str) for v in tags.values()):
        problems.add(ConfigError(where / "tags", "must map names to strings"))
    problems.raise_any()
    assert parsed is not None
    return parsed


class FirehoseTarget(Target):
    concurrency = 64  # deliveries in flight: their records share a commit

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        self.name = name
        self.where = f"target {name}"
        self.settings = dict(config)
        self.stream_name: str = config.get("delivery_stream_name", name)
        self.kinesis_stream: str | None = config.get("kinesis_stream")
        self.store: FirehoseStore | None = None
        self.stream: DeliveryStream | None = None
        self.record: StreamRecord | None = None
        self._services: TargetServices | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._client: HttpClient | None = None
        #: Who this runner is as a stream's owner ("" for a SQLite file's one runner).
        self.owner_name = ""
        self._polls = 0
        #: Deleted through another runner of the cluster: nothing more runs here.
        self.gone = False

    def references(self) -> list[tuple[tuple[str | int, ...], str]]:
        key = "http_endpoint" if "http_endpoint" in self.settings else "destination"
        try:
            processor = destination_of(request_of(self.settings)).processor
        except (SpecError, KeyError, TypeError):
            return []
        return [] if processor is None else [((key,), processor.function)]

    @property
    def direct_put(self) -> bool:
        return self.kinesis_stream is None

    async def start(self, services: TargetServices) -> None:
        store = await services.open_store(
            FirehoseStore, where=f"delivery stream {self.stream_name}"
        )
        try:
            record = await self._record(store)
            destination = destination_of(record.config)
            if destination.processor is not None:
                services.resource(destination.processor.function, where=f"{self.where}.destination")
        except BaseException:
            await store.close()
            raise
        self.store, self.record, self._services = store, record, services
        identity = Identity(
            self.stream_name,
            stream_arn(self.stream_name),
            record.version,
            record.created,
            DEFAULT_REGION,
            request_of(self.settings)
            .get("KinesisStreamSourceConfiguration", {})
            .get("KinesisStreamARN"),
        )
        self.stream = DeliveryStream(
            identity,
            destination,
            store,
            services.clock,
            self._directory,
            invoke=self._invoke,
            metric=self._metric,
            post=self._post,
        )
        self.owner_name = services.runner or ""
        self.stream.owner = await self._claim()
        await self.stream.load(everything=True)
        self._tasks = [services.spawn(self.stream.run()), services.spawn(self._watch())]
        if self.kinesis_stream is not None:
            self._tasks.append(services.spawn(self._read_source(self.kinesis_stream)))

    async def _record(self, store: FirehoseStore) -> StreamRecord:
        """The stored stream: made now, or brought to the config's settings
        (a changed config raises the version, as UpdateDestination does)."""
        request = request_of(self.settings)
        found = await store.find(self.stream_name)
        if found is None:
            return await store.create(
                self.stream_name,
                request,
                {},
                made_by_api=False,
                tags=dict(self.settings.get("tags") or {}),
            )
        if not found.made_by_api and found.config != request:
            return await store.update(self.stream_name, request, {})
        return found

    async def _post(self, url: str, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
        """An HTTP endpoint's request, through the project's HTTP client (a
        pool kept alive for this stream, made at its first request)."""
        if self._client is None:
            self._client = HttpClient(timeout=endpoint.TIMEOUT, pool=4)
        sent = await self._client.send("POST", url, headers=headers, body=body)
        return sent.status, sent.body

    def _directory(self, bucket: str) -> Place:
        return buckets_of(started(self._services, self.where)).place(bucket)

    def _metric(self, name: str, value: float, unit: str) -> None:
        if self._services is not None:
            try:
                self._services.put_metric_data(
                    NAMESPACE,
                    name,
                    {"DeliveryStreamName": self.stream_name},
                    value=value,
                    unit=unit,
                )
            except PipelinesError as exc:  # the metric store refused it: never the delivery
                log.warning("%s: metric %s not recorded: %s", self.where, name, exc)

    async def _invoke(self, event: dict[str, Any]) -> Any:
        from plugins.function import FunctionTarget

        services = started(self._services, self.where)
        destination = started(self.stream, self.where).destination
        assert destination.processor is not None
        target = services.resource(
            destination.processor.function, where=f"{self.where}.destination"
        )
        context = DeliveryContext(f"firehose:{self.stream_name}", "processor", event)
        if isinstance(target, FunctionTarget):
            return await target.invoke(event, context)
        return await target.deliver(event, context)

    async def _watch(self) -> None:
        """Take up records other processes buffered; answer flush requests."""
        services = started(self._services, self.where)
        while True:
            await sleep(services.clock, POLL)
            try:
                await self.poll()
            except Exception as exc:
                log.warning("%s: %s", self.where, describe_error(exc))

    async def poll(self) -> None:
        """Renew or claim the stream's ownership; as its owner, take up what
        other processes or runners buffered and answer flush requests."""
        store, stream = started(self.store, self.where), started(self.stream, self.where)
        if self.gone:
            return
        record = await store.find(self.stream_name)
        if record is None:
            self.gone = True
            stream.disown()
            log.warning("%s: delivery stream %s was deleted", self.where, self.stream_name)
            return
        # The one runner of a SQLite file owns its streams from its start:
        # nothing to renew. A cluster's runners claim or renew every poll.
        owns = stream.owner if not self.owner_name else await self._claim()
        if owns and not stream.owner:
            log.info("%s: this runner writes delivery stream %s now", self.where, self.stream_name)
            await stream.own()
        elif not owns and stream.owner:
            log.warning(
                "%s: another runner writes delivery stream %s now", self.where, self.stream_name
            )
            stream.disown()
        if not stream.owner:
            return
        self._polls += 1
        await stream.load(everything=bool(self.owner_name) and self._polls % RESCAN_EVERY == 0)
        if record.flush_requested is not None and record.flush_requested != record.flushed:
            await stream.flush()
            await store.mark_flushed(self.stream_name, record.flush_requested)

    async def _claim(self) -> bool:
        """Whether this runner owns the stream now (claimed or renewed)."""
        store, clock = started(self.store, self.where), started(self._services, self.where).clock
        now = clock.time()
        return await store.claim(self.stream_name, self.owner_name, now, now + LEASE)

    def _succeeded(self) -> bool:
        """Whether another resource of this runtime runs the same stream (this
        one is being replaced): it keeps the ownership."""
        services: Any = self._services
        names = getattr(services, "resource_names", None)
        others = [services.resource(name) for name in (names() if names is not None else ())]
        return any(
            isinstance(other, FirehoseTarget)
            and other is not self
            and other.stream_name == self.stream_name
            for other in others
        )

    async def _read_source(self, name: str) -> None:
        """KinesisStreamAsSource: a named consumer of the project stream
        ``name`` (checkpoints per shard); a batch counts as read once it is
        buffered here (at least once: a crash in between reads it again)."""
        from plugins.stream.store import StreamStore

        services = started(self._services, self.where)
        delay = 1.0
        while True:
            try:
                source = await services.open_store(
                    StreamStore, where=f"{self.where}.kinesis_stream"
                )
                try:
                    reader = source.consume(
                        name, f"firehose:{self.stream_name}", batch=500, poll=POLL
                    )
                    async with reader:
                        while records := await reader.next_batch():
                            await self._put_all([record.data for record in records])
                            delay = 1.0
                finally:
                    await source.close()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error(
                    "%s: reading stream %s: %s; again in %.0f s",
                    self.where,
                    name,
                    describe_error(exc),
                    delay,
                )
                await sleep(services.clock, delay)
                delay = min(delay * 2, 60.0)

    async def _put_all(self, records: list[bytes]) -> None:
        stream = started(self.stream, self.where)
        results = await stream.put(records)
        failed = [r for r in results if r.error_code is not None]
        if failed:
            raise DeliveryError(
                failed[0].error_code or "", failed[0].error_message or "", retryable=True
            )

    async def put(self, records: list[bytes]) -> list[PutResult]:
        """PutRecordBatch's work (DirectPut only)."""
        return await started(self.stream, self.where).put(records)

    def reconfigure(self, record: StreamRecord) -> None:
        stream = started(self.stream, self.where)
        self.record = record
        stream.reconfigure(destination_of(record.config), record.version)

    async def drain(self, timeout: float) -> None:
        """Nothing to finish: what is buffered is in the store and goes out
        after the next start (AWS's buffering does not flush at a stop either)."""

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        stream, self.stream = self.stream, None
        # Released, another runner may take over at once (unless this
        # resource's successor in this runtime runs the stream on).
        if self.store is not None and stream is not None and stream.owner and not self._succeeded():
            try:
                await self.store.release(self.stream_name, self.owner_name)
            except Exception as exc:  # its lease runs out instead
                log.warning("%s: ownership not released: %s", self.where, describe_error(exc))
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        if self.store is not None:
            await self.store.close()
            self.store = None

    async def deliver(self, payload: Any, context: DeliveryContext) -> Any:
        stream = started(self.stream, self.where)
        if not self.direct_put:
            raise DeliveryError(
                "InvalidArgumentException",
                f"{self.where}: delivery stream {self.stream_name} reads a Kinesis stream and"
                " takes no PutRecord",
                retryable=False,
            )
        result = (await stream.put([payload_text(payload).encode()]))[0]
        if result.error_code is not None:
            raise DeliveryError(result.error_code, result.error_message or "", retryable=True)
        return result.record_id


class FirehoseType(TargetType):
    name = "firehose"
    description = (
        "A delivery stream with Kinesis Data Firehose's semantics, into local directories"
        " or an HTTP endpoint"
    )
    settings = SETTINGS_TABLE
    arn_template = ARN

    def create(self, name: str, config: Mapping[str, Any]) -> FirehoseTarget:
        check_settings(Where(f"target {name}"), config)
        return FirehoseTarget(name, config)
