"""Where a pipe's records come from: a queue, a stream, a log group, an MQTT
broker or a webhook.

A source reads batches through the store's public API (``QueueStore``
receives and deletes, ``StreamStore.consume`` with the pipe's own
checkpoints) and hands each batch to ``process``, which answers the indexes
of the records that failed. A record is deleted or checkpointed only once
``process`` has answered that it is done (delivered or filtered out): at
least once, as AWS delivers.

- **Queue** (standard or FIFO): up to ``batch_size`` messages (receives of
  10 gathered for up to the batching window); failed messages are left to
  come back after their visibility timeout, so the queue's own redrive policy
  moves them to its dead-letter queue, as AWS does for SQS sources.
- **Stream**: one shard's records at a time, split by partition key into
  ``parallelization_factor`` groups handled at once (order kept per key);
  a failed batch is retried from its first failed record (``batchItemFailures``)
  or, with ``AUTOMATIC_BISECT``, halved; records older than
  ``maximum_record_age`` or failed ``maximum_retry_attempts`` times go to the
  pipe's dead-letter resource (a description of the batch, as AWS sends) and
  the checkpoint moves on.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
import zlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from pipelines.clock import sleep
from pipelines.errors import LogsError, PipelinesError, QueueError, StreamError
from pipelines.event import DEFAULT_ACCOUNT, DEFAULT_REGION
from pipelines.targets import TargetServices, describe_error, hand_over
from plugins.logs.store import LogStore
from plugins.mqtt.broker import Broker, client_id_for
from plugins.mqtt.connection import Connection, ConnectionLost, MqttFailure
from plugins.mqtt.messages import Received
from plugins.pipes.definition import SourceParameters, resource_name
from plugins.pipes.records import (
    Item,
    log_group_arn,
    log_item,
    mqtt_item,
    queue_item,
    stream_arn,
    stream_item,
    webhook_item,
)
from plugins.queue.store import MAX_BATCH, MAX_WAIT, QueueStore, queue_arn
from plugins.stream.store import MAX_GET_RECORDS, Record, StreamConsumer, StreamStore

log = logging.getLogger("plugins.pipes")

#: ``process(items)``: the indexes of the records that failed.
Process = Callable[[list[Item]], Awaitable[set[int]]]
#: Receive loops per queue source, at once.
POLLERS = 2
#: The first retry of a failed stream batch waits this long, doubling to MAX_BACKOFF.
FIRST_BACKOFF = 0.1
MAX_BACKOFF = 10.0


class Stopped(Exception):
    """A batch's retries end: the pipe is stopping (the batch is not done)."""


class Source:
    """What a pipe reads; ``run`` loops until cancelled."""

    kind = ""
    #: Whether records of one group must reach the target in order.
    ordered = False
    default_batch = 10

    def __init__(self, pipe: str, name: str, parameters: SourceParameters) -> None:
        self.pipe = pipe
        self.name = name  # the queue's or stream's own name
        self.parameters = parameters
        self.batch_size = parameters.batch_size or self.default_batch
        #: Set when the pipe stops during an ``uncut`` batch: no more retries.
        self.stopping = False

    @property
    def arn(self) -> str:
        raise NotImplementedError

    async def open(self, services: TargetServices) -> None:
        raise NotImplementedError

    async def run(self, services: TargetServices, process: Process) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def uncut(self, work: Awaitable[None]) -> None:
        """Run ``work`` (a batch handed on, then its place recorded) to its end
        even when the pipe stops meanwhile: a stop cutting it after the target
        took the batch would lose the place, and the next start would deliver
        the batch again. A stop ends its retries (``Stopped``): what is not
        done is read again at the next start."""
        task = asyncio.ensure_future(work)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            self.stopping = True
            # Whatever it ends with, the stop goes on: the batch is done or read
            # again. A second cancel (the gather's) cuts it after all.
            await asyncio.gather(task, return_exceptions=True)
            raise

    async def retrying(self, services: TargetServices, items: list[Item], process: Process) -> None:
        """Process ``items`` until each is done or given up: a failed batch
        again from its first failed record (those before it are done), halved
        when it failed whole and ``bisect`` is on, given up after
        ``maximum_retry_attempts`` retries or when older than
        ``maximum_record_age`` (an ordered source: nothing after a failed
        record goes on meanwhile)."""
        parameters = self.parameters
        pending = [items]
        attempts = 0
        while pending:
            batch = pending.pop(0)
            if parameters.maximum_record_age >= 0:
                now = services.clock.time()
                old = [i for i in batch if now - i.arrival > parameters.maximum_record_age]
                if old:
                    await self._give_up(services, old, "RecordAgeExceeded", attempts)
                    batch = [i for i in batch if now - i.arrival <= parameters.maximum_record_age]
            if not batch:
                continue
            failed = await process(batch)
            if not failed:
                attempts = 0
                continue
            first = min(failed)
            if first == 0 and len(failed) == len(batch) and parameters.bisect and len(batch) > 1:
                # Halving is no retry: each half is tried on its own.
                half = len(batch) // 2
                pending[:0] = [batch[:half], batch[half:]]
                continue
            attempts += 1
            if 0 <= parameters.maximum_retry_attempts < attempts:
                await self._give_up(services, batch[first:], "RetryAttemptsExhausted", attempts)
                attempts = 0
                continue
            pending.insert(0, batch[first:])  # those before the first failure are done
            if self.stopping:
                raise Stopped
            await sleep(services.clock, min(FIRST_BACKOFF * 2 ** (attempts - 1), MAX_BACKOFF))

    async def _give_up(
        self, services: TargetServices, items: list[Item], condition: str, attempts: int
    ) -> None:
        raise NotImplementedError


class QueueSource(Source):
    kind = "aws:sqs"
    default_batch = 10

    def __init__(self, pipe: str, name: str, parameters: SourceParameters) -> None:
        super().__init__(pipe, name, parameters)
        self.ordered = name.endswith(".fifo")
        self.store: QueueStore | None = None

    @property
    def arn(self) -> str:
        return queue_arn(self.name)

    async def open(self, services: TargetServices) -> None:
        self.store = await services.open_store(QueueStore, where=f"pipe {self.pipe}")
        try:
            await self.store.get_attributes(self.name)
        except QueueError as error:
            await self.close()
            raise PipelinesError(
                f"pipe {self.pipe}: source queue {self.name}: {error.message}"
            ) from None

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()
            self.store = None

    async def run(self, services: TargetServices, process: Process) -> None:
        """``POLLERS`` loops at once, as AWS polls a queue with several: one
        receives while another's batch is with the target. (A FIFO queue's
        claims keep a message group with one of them at a time.)"""
        async with asyncio.TaskGroup() as pollers:
            for _ in range(POLLERS):
                pollers.create_task(self._poll(services, process))

    async def _poll(self, services: TargetServices, process: Process) -> None:
        assert self.store is not None
        while True:
            items = await self.gather(self.store, services)
            if not items:
                continue
            await self.uncut(self._deliver(self.store, items, process))

    async def _deliver(self, store: QueueStore, items: list[Item], process: Process) -> None:
        """The batch handed on, then what is done deleted (one step a stop cannot cut)."""
        await self.settle(store, items, await process(items))

    async def gather(self, store: QueueStore, services: TargetServices) -> list[Item]:
        """Up to ``batch_size`` messages: a long poll for the first, then what
        comes within the batching window (or, without one, what is there now)."""
        wanted = self.batch_size
        messages = await store.receive(self.name, min(MAX_BATCH, wanted), wait_time=MAX_WAIT)
        if not messages:
            return []
        window = self.parameters.maximum_batching_window
        deadline = services.clock.time() + window
        while len(messages) < wanted:
            left = deadline - services.clock.time()
            more = await store.receive(
                self.name,
                min(MAX_BATCH, wanted - len(messages)),
                wait_time=min(MAX_WAIT, max(left, 0.0)),
            )
            messages += more
            if not more and left <= 0:
                break
        # A message whose visibility timeout ran out within the window comes
        # twice: once, with its newest receipt handle (the older one deletes nothing).
        latest = {message.message_id: message for message in messages}
        return [queue_item(self.name, message) for message in latest.values()]

    async def settle(self, store: QueueStore, items: list[Item], failed: set[int]) -> None:
        """Delete what is done; a failed message comes back after its visibility timeout."""
        done = [(str(i), item.handle) for i, item in enumerate(items) if i not in failed]
        for start in range(0, len(done), MAX_BATCH):
            _, refused = await store.delete_batch(self.name, done[start : start + MAX_BATCH])
            for error in refused:  # a FIFO handle expired: the message comes again
                log.warning("pipe %s: message not deleted: %s", self.pipe, error.message)


class StreamSource(Source):
    kind = "aws:kinesis"
    ordered = True
    default_batch = 100

    def __init__(self, pipe: str, name: str, parameters: SourceParameters) -> None:
        super().__init__(pipe, name, parameters)
        self.store: StreamStore | None = None
        self.batch_size = min(self.batch_size, MAX_GET_RECORDS)
        #: Records given up (to the dead-letter resource, or dropped without one).
        self.given_up = 0

    @property
    def arn(self) -> str:
        return stream_arn(self.name)

    @property
    def consumer(self) -> str:
        """The name its checkpoints are kept under."""
        return f"pipe:{self.pipe}"

    async def open(self, services: TargetServices) -> None:
        self.store = await services.open_store(StreamStore, where=f"pipe {self.pipe}")
        try:
            await self.store.describe_stream(self.name)
        except StreamError as error:
            await self.close()
            raise PipelinesError(
                f"pipe {self.pipe}: source stream {self.name}: {error.message}"
            ) from None

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()
            self.store = None

    def _start(self) -> str | float:
        position = self.parameters.starting_position or "TRIM_HORIZON"
        if position == "AT_TIMESTAMP":
            assert self.parameters.starting_position_timestamp is not None
            return self.parameters.starting_position_timestamp
        return position.lower()

    async def run(self, services: TargetServices, process: Process) -> None:
        assert self.store is not None
        delay = 1.0
        while True:
            reader = self.store.consume(
                self.name, self.consumer, start=self._start(), batch=self.batch_size, poll=0.2
            )
            try:
                async with reader:
                    while records := await reader.next_batch():
                        await self.uncut(self._deliver(services, reader, records, process))
                        delay = 1.0
                        window = self.parameters.maximum_batching_window
                        if window and len(records) < self.batch_size:
                            # Let the next batch fill for the window.
                            await sleep(services.clock, window)
                return
            except StreamError as exc:
                # A deleted stream: the pipe goes on trying, it never stops the runner.
                log.error("pipe %s: %s; reading again in %.0f s", self.pipe, exc.message, delay)
                await sleep(services.clock, delay)
                delay = min(delay * 2, 60.0)

    async def _deliver(
        self,
        services: TargetServices,
        reader: StreamConsumer,
        records: list[Record],
        process: Process,
    ) -> None:
        """The batch handed on, then its place saved (one step a stop cannot cut)."""
        await self.handle(services, records, process)
        await reader.done()

    async def handle(
        self, services: TargetServices, records: list[Record], process: Process
    ) -> None:
        """One shard's batch, its partition keys spread over the parallelization
        factor; returns once every record is done or given up."""
        items = [stream_item(self.name, record) for record in records]
        factor = self.parameters.parallelization_factor
        if factor == 1:
            await self.retrying(services, items, process)
            return
        groups: list[list[Item]] = [[] for _ in range(factor)]
        for item in items:
            groups[zlib.crc32((item.group or "").encode()) % factor].append(item)
        async with asyncio.TaskGroup() as tasks:
            for group in groups:
                if group:
                    tasks.create_task(self.retrying(services, group, process))

    async def _give_up(
        self, services: TargetServices, items: list[Item], condition: str, attempts: int
    ) -> None:
        """Records the pipe gives up on: a description of them to the
        dead-letter resource (AWS sends the batch's place, not its records)."""
        self.given_up += len(items)
        dead_letter = self.parameters.dead_letter
        first, last = items[0].record, items[-1].record
        shard = first["eventID"].split(":", 1)[0]
        if dead_letter is None:
            log.error(
                "pipe %s: %d records of %s given up (%s), no dead-letter config",
                self.pipe,
                len(items),
                shard,
                condition,
            )
            return
        message = {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "pipeArn": f"pipe {self.pipe}",
                "condition": condition,
                "approximateInvokeCount": attempts + 1,
            },
            "version": "1.0",
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "KinesisBatchInfo": {
                "shardId": shard,
                "startSequenceNumber": first["sequenceNumber"],
                "endSequenceNumber": last["sequenceNumber"],
                "approximateArrivalOfFirstRecord": _iso(first["approximateArrivalTimestamp"]),
                "approximateArrivalOfLastRecord": _iso(last["approximateArrivalTimestamp"]),
                "batchSize": len(items),
                "streamArn": self.arn,
            },
        }
        try:
            await hand_over(
                services,
                resource_name(dead_letter),
                message,
                source=f"pipe {self.pipe}",
                name="dead-letter",
                where=f"pipe {self.pipe}.dead_letter_config",
                maximum_retry_attempts=3,
            )
        except Exception as exc:  # a missing resource: say so, go on
            log.error("pipe %s: dead letter not sent: %s", self.pipe, describe_error(exc))


def _iso(seconds: Any) -> str:
    return datetime.fromtimestamp(float(seconds), UTC).isoformat(timespec="milliseconds")


class LogsSource(Source):
    """A log group's events, through a subscription filter of the pipe's own
    (``pipe-NAME``, no pattern: every event), read with ``LogStore``'s
    ``read_subscription`` and moved past with ``advance_subscription`` once
    done: the filter's cursor is the pipe's place, kept across restarts (a
    replaced filter keeps its cursor). Not a source AWS's Pipes has: its
    records are the subscription payload's events with their group and
    stream (``plugins.pipes.records.log_item``)."""

    kind = "aws:logs"
    ordered = True
    default_batch = 100
    #: Seconds between looks for new events when the last look found none.
    POLL = 0.2

    def __init__(self, pipe: str, name: str, parameters: SourceParameters) -> None:
        super().__init__(pipe, name, parameters)
        self.store: LogStore | None = None
        self.filter = f"pipe-{pipe}"[:512]
        self.given_up = 0

    @property
    def arn(self) -> str:
        return log_group_arn(self.name)

    async def open(self, services: TargetServices) -> None:
        self.store = await services.open_store(LogStore, where=f"pipe {self.pipe}")
        try:
            # Its destination names the pipe, not a resource: the log group
            # forwards none of it (it says so once at its start); the pipe reads it.
            await self.store.put_subscription_filter(
                self.name,
                self.filter,
                "",
                f"arn:aws:pipes:{DEFAULT_REGION}:{DEFAULT_ACCOUNT}:pipe/{self.pipe}",
            )
        except LogsError as error:
            await self.close()
            raise PipelinesError(
                f"pipe {self.pipe}: source log group {self.name}: {error.message}"
            ) from None

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()
            self.store = None

    async def run(self, services: TargetServices, process: Process) -> None:
        assert self.store is not None
        while True:
            batch = await self.store.read_subscription(self.name, self.filter, self.batch_size)
            items = [
                log_item(self.name, payload["logStream"], event)
                for payload in batch.payloads
                for event in payload["logEvents"]
            ]
            items.sort(key=lambda item: int(item.identifier))  # the group's order
            if batch.scanned:
                await self.uncut(self._deliver(services, items, batch.cursor, process))
            if batch.scanned < self.batch_size:
                await sleep(services.clock, self.POLL)

    async def _deliver(
        self, services: TargetServices, items: list[Item], cursor: int, process: Process
    ) -> None:
        """The matching events handed on, then the filter's cursor past all scanned."""
        assert self.store is not None
        if items:
            await self.retrying(services, items, process)
        await self.store.advance_subscription(self.name, self.filter, cursor)

    async def _give_up(
        self, services: TargetServices, items: list[Item], condition: str, attempts: int
    ) -> None:
        self.given_up += len(items)
        log.error(
            "pipe %s: %d log events of %s given up (%s, ids %s to %s)",
            self.pipe,
            len(items),
            self.name,
            condition,
            items[0].identifier,
            items[-1].identifier,
        )


class MqttSource(Source):
    """Messages of an MQTT topic filter, on the broker of an ``mqtt``
    resource, through a connection and a subscription of the pipe's own
    (client id ``pipelines-pipe-NAME-...``, a persistent session with a state
    database: the broker keeps what arrives while the runner is down). A
    QoS 1 or 2 message is acknowledged once the pipe is done with it, so the
    broker hands an unfinished one out again. Not a source AWS's Pipes
    have: a record is ``{topic, payload, qos, retain, userProperties,
    eventSource: mqtt}``, its payload parsed for filters and templates when
    it is JSON. An ordered source: a failed batch is retried in the pipe
    (MQTT hands nothing out again before a reconnect)."""

    kind = "mqtt"
    ordered = True
    default_batch = 10

    def __init__(self, pipe: str, name: str, parameters: SourceParameters, broker: Broker) -> None:
        super().__init__(pipe, name, parameters)
        self.broker = broker
        self.topic = parameters.topic or "#"
        self.qos = parameters.qos
        self._client_id = ""
        self._clean = True
        self._connection: Connection | None = None
        self.given_up = 0
        #: Each message's ``messageId`` (what a target names in batchItemFailures).
        self._ids = itertools.count(1)

    @property
    def arn(self) -> str:
        return f"mqtt://{self.broker.address}/{self.topic}"

    async def open(self, services: TargetServices) -> None:
        self._client_id, self._clean = client_id_for(
            self.broker, f"pipe-{self.pipe}", services.state_path, services.runner
        )
        try:  # the broker must be reachable at start: a clear state if not
            self._connection = await self._connect(first=True)
        except (MqttFailure, OSError, ValueError, TimeoutError) as exc:
            raise PipelinesError(
                f"pipe {self.pipe}: the MQTT broker at {self.broker.address}: {exc}"
            ) from None

    async def _connect(self, *, first: bool) -> Connection:
        connection = await asyncio.wait_for(
            self.broker.connect(
                self._client_id, self._clean, first=first, acknowledges=self.qos > 0
            ),
            self.broker.connect_timeout * 2,
        )
        try:
            await connection.subscribe_checked(self.topic, self.qos, self.broker.connect_timeout)
        except BaseException:
            await connection.close()
            raise
        return connection

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    async def run(self, services: TargetServices, process: Process) -> None:
        delay = self.broker.reconnect_initial
        while True:
            try:
                connection = self._connection or await self._connect(first=False)
                self._connection = connection
                await self._consume(services, connection, process)
            except (MqttFailure, OSError, TimeoutError) as exc:
                log.warning(
                    "pipe %s: MQTT connection lost (%s); again in %.1f s", self.pipe, exc, delay
                )
                await self.close()
                await sleep(services.clock, delay)
                delay = min(delay * 2, self.broker.reconnect_maximum)

    async def _consume(
        self, services: TargetServices, connection: Connection, process: Process
    ) -> None:
        while True:
            await connection.wake.wait()
            connection.wake.clear()
            if connection.lost.is_set():
                raise ConnectionLost("disconnected")
            while batch := connection.take(self.batch_size):
                now = services.clock.time()
                items = [
                    mqtt_item(received, self.broker.address, str(next(self._ids)), now)
                    for received, _ in batch
                ]
                await self.uncut(self._deliver(services, connection, batch, items, process))

    async def _deliver(
        self,
        services: TargetServices,
        connection: Connection,
        batch: list[tuple[Received, int | None]],
        items: list[Item],
        process: Process,
    ) -> None:
        """The batch handed on, then acknowledged (one step a stop cannot cut)."""
        await self.retrying(services, items, process)
        for _, ticket in batch:  # done or given up: the broker may forget it
            if ticket is not None:
                connection.acks.settle(ticket)

    async def _give_up(
        self, services: TargetServices, items: list[Item], condition: str, attempts: int
    ) -> None:
        self.given_up += len(items)
        log.error(
            "pipe %s: %d MQTT messages of %s given up (%s)",
            self.pipe,
            len(items),
            self.topic,
            condition,
        )


class WebhookSource(Source):
    """Requests to a ``webhook`` resource's path: while the pipe runs, the
    webhook hands each request's event to the pipe instead of its bus
    (``WebhookTarget.attach``) and answers once the pipe is done with it:
    200 when the target took it (or it was filtered out, or dropped by the
    enrichment), 500 when it failed, so the sender sends it again (at least
    once, as a webhook's sender retries). A batch is one request. Not a
    source AWS's Pipes have: a record is the EventBridge event the webhook
    would have put (``source``, ``detail-type``, ``detail``...)."""

    kind = "webhook"
    default_batch = 1

    def __init__(self, pipe: str, name: str, parameters: SourceParameters, webhook: Any) -> None:
        super().__init__(pipe, name, parameters)
        self.webhook = webhook
        self.process: Process | None = None

    @property
    def arn(self) -> str:
        return f"webhook:{self.name}"

    async def open(self, services: TargetServices) -> None:
        self.webhook.attach(self.take)

    async def close(self) -> None:
        self.webhook.detach(self.take)
        self.process = None

    async def run(self, services: TargetServices, process: Process) -> None:
        self.process = process
        try:
            await asyncio.Event().wait()  # requests arrive through ``take``
        finally:
            self.process = None

    async def take(self, entry: dict[str, Any]) -> str:
        """One request's event through the pipe: its id once done; raises when it failed."""
        process = self.process
        if process is None:
            raise PipelinesError(f"pipe {self.pipe} is not running")
        item = webhook_item(entry, self.name)
        if await process([item]):
            raise PipelinesError(f"pipe {self.pipe}: its target did not take the request")
        return item.identifier
