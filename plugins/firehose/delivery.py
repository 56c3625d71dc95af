"""One delivery stream at work: records in, buffered, transformed, partitioned,
compressed, written as objects.

``DeliveryStream.put`` takes a PutRecordBatch's records. They are grouped
by partition in one pass (``MetadataQuery.group``); each partition's
records become one *chunk*, and the put's chunks are one INSERT in one
trip to the database (``FirehoseStore.add_chunks``, group commit with
concurrent puts); the put is answered once they are committed. A GZIP
destination's chunks are compressed before they are stored, each a gzip
member (``formats.encode``, on a worker thread), so an object is its
chunks' members one after the other and costs no compression when it is
written.

A buffer keeps the chunks' ids, sizes and arrival times; the chunks this
runner stored are held in memory too, as stored (compressed), up to
``HELD_BYTES`` a stream: writing them out reads nothing back but which of
them are still stored (one query by ids). Chunks past that, and those
found in the store at a start (left by a stop or a crash, or buffered by
another process or runner) are read back a page at a time.

Two stages, each durable:

- with a Lambda processor, a put's chunk waits unpartitioned (``partition``
  NULL) until the processor's buffer is full by size or age; the function is
  called with Firehose's record contract (``transformation``), and its
  outcome (records Ok, partitioned by the function's and the query's keys;
  ProcessingFailed ones as error records) replaces the chunks in one
  transaction;
- per partition (its keys, or the error output and its type) a buffer waits
  until it holds ``SizeInMBs`` or its oldest record is ``IntervalInSeconds``
  old, whichever first, then becomes one object.

Objects are written to ``<directory of the bucket>/<key>`` (the bucket
plugin's lookup and ``AtomicFile``: a temporary file in the same directory,
synced, renamed into place, the directory synced), or uploaded whole to a
bucket of an S3-compatible store (``RemoteUpload``): a reader never sees half
an object. The chunks are deleted after the rename.
A crash in between delivers them again after the restart (at least once);
the object's name is derived from its first chunk's id, not random, so the
second delivery replaces the first object under the same key rather than
adding a duplicate beside it (its content may then hold later records too).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import uuid
from array import array
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, cast

import orjson

from pipelines.clock import Cancellable, Clock, sleep
from plugins.bucket.lookup import Place, open_object
from plugins.bucket.objects import BucketError, check_key
from plugins.firehose import endpoint
from plugins.firehose.formats import ENCODINGS, EXTENSIONS, decode, encode, writer
from plugins.firehose.prefixes import object_name
from plugins.firehose.query import QueryFailed
from plugins.firehose.spec import Destination
from plugins.firehose.store import Chunk, FirehoseError, FirehoseStore, NewChunk, StoredData
from plugins.firehose.transformation import Batch, Invoke, Transformed, transform

log = logging.getLogger("plugins.firehose")

#: The metric store reserves AWS/ (as CloudWatch does for PutMetricData): the
#: engine publishes under Pipelines/..., as it does its events metrics.
NAMESPACE = "Pipelines/Firehose"
#: How much of a buffer is read back from the store at once while writing an object.
PAGE_BYTES = 4 * 1024 * 1024
#: Error output types (the ``!{firehose:error-output-type}`` values).
PROCESSING_FAILED = "processing-failed"
PARTITIONING_FAILED = "partitioning-failed"
FORMAT_CONVERSION_FAILED = "format-conversion-failed"
#: Rounds of a flush: the records, then the error output they made, then
#: what a round's own puts and errors left (see ``_turn``).
FLUSH_ROUNDS = 3
#: Our error code for a record the schema cannot take (AWS documents none).
FORMAT_CONVERSION_ERROR = "DataFormatConversion.MalformedData"
#: A failed write of an object is tried again after this, doubling to the cap.
RETRY_FIRST, RETRY_CAP = 1.0, 60.0
#: Partitions written out at once by one delivery stream.
DELIVERY_CONCURRENCY = 4
#: Partition ids remembered by their keys' values (then forgotten all at once).
PARTITION_CACHE = 10_000
#: Buffered bytes a stream holds in memory besides the store (as stored:
#: compressed for GZIP); chunks past it are read back when written out.
HELD_BYTES = 32 * 1024 * 1024

Metric = Callable[[str, float, str], None]


def partition_id(
    query: Mapping[str, str] | None = None,
    from_lambda: Mapping[str, str] | None = None,
    error: str | None = None,
) -> str:
    """The buffer a record goes to, as text: its partition keys, or the
    error output type. Records with the same id share objects."""
    return orjson.dumps(
        [error, query or {}, from_lambda or {}], option=orjson.OPT_SORT_KEYS
    ).decode()


def parse_partition(partition: str) -> tuple[str | None, dict[str, str], dict[str, str]]:
    error, query, from_lambda = orjson.loads(partition)
    return error, query, from_lambda


PLAIN = partition_id()
#: An HTTP endpoint destination's records delivered and waiting to be
#: backed up to its bucket (S3BackupMode AllData): the S3Configuration's Prefix.
BACKUP = "backup"
#: An HTTP request: ``post(url, headers, body)`` answers (status, body), or
#: raises ``pipelines.http.client.RequestFailed`` when no answer came.
Post = Callable[[str, Mapping[str, str], bytes], Awaitable[tuple[int, bytes]]]


def record_id(chunk: int, index: int) -> str:
    """A record's RecordId: where it is in the store, opaque to clients."""
    return f"{chunk:024x}{index:08x}"


#: The index part of record ids, made once (a PutRecordBatch has up to 500 records).
_INDEXES = [format(index, "08x") for index in range(1000)]


def record_ids(chunk: int, count: int) -> list[str]:
    """``record_id`` of each record of a chunk."""
    base = f"{chunk:024x}"
    if count <= len(_INDEXES):
        return [base + index for index in _INDEXES[:count]]
    return [base + format(index, "08x") for index in range(count)]


def _prefix_keys(destination: Destination) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(destination.prefix.keys("query")), tuple(destination.prefix.keys("lambda"))


def error_record(
    data: bytes,
    arrival: float,
    code: str,
    message: str,
    *,
    attempts: int,
    ended: float,
    lambda_arn: str | None = None,
) -> bytes:
    """A failed record as Firehose writes it to the error output (one JSON line)."""
    body: dict[str, Any] = {
        "attemptsMade": attempts,
        "arrivalTimestamp": int(arrival * 1000),
        "errorCode": code,
        "errorMessage": message,
        "attemptEndingTimestamp": int(ended * 1000),
        "rawData": base64.b64encode(data).decode(),
    }
    if lambda_arn is not None:
        body["lambdaArn"] = lambda_arn
    return orjson.dumps(body) + b"\n"


@dataclass(slots=True)
class Buffer:
    """One partition's chunks waiting (bookkeeping only: the bytes stay in the store)."""

    partition: str | None
    chunks: list[Chunk] = field(default_factory=list)
    size: int = 0
    count: int = 0

    @property
    def oldest(self) -> float:
        return min(chunk.arrival for chunk in self.chunks)

    def add(self, chunk: Chunk) -> None:
        self.chunks.append(chunk)
        self.size += chunk.size
        self.count += chunk.count

    def take(self, limit: int, records: int | None = None) -> list[Chunk]:
        """The first chunks up to ``limit`` bytes and ``records`` records (at least one)."""
        taken: list[Chunk] = []
        size = count = 0
        for chunk in self.chunks:
            if taken and (
                size + chunk.size > limit or (records is not None and count + chunk.count > records)
            ):
                break
            taken.append(chunk)
            size += chunk.size
            count += chunk.count
        del self.chunks[: len(taken)]
        self.size -= size
        self.count -= sum(c.count for c in taken)
        return taken

    def give_back(self, chunks: list[Chunk]) -> None:
        self.chunks[:0] = chunks
        self.size += sum(c.size for c in chunks)
        self.count += sum(c.count for c in chunks)


class PutResult(NamedTuple):
    """One record's answer: its RecordId, or its error (a tuple: cheap to make
    500 of per request)."""

    record_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None


#: ``PutResult`` from its three fields, without NamedTuple's Python-level
#: ``__new__`` (made once per record of every put).
_result = cast(
    Callable[[tuple[str | None, str | None, str | None]], PutResult],
    partial(tuple.__new__, PutResult),
)
_NO_RESULT = PutResult()


def _encoded(encoding: str, chunks: list[NewChunk]) -> list[NewChunk]:
    """``chunks`` with their data in ``encoding`` (error records too: their
    objects are compressed as the others)."""
    return [
        NewChunk(
            c.partition,
            c.arrival,
            c.count,
            encode(encoding, c.data),
            c.sizes,
            encoding,
            len(c.data),
        )
        for c in chunks
    ]


@dataclass(slots=True)
class Identity:
    """What names a delivery stream's objects and invocations."""

    name: str
    arn: str
    version: int
    created: float
    region: str
    source_arn: str | None = None


class DeliveryStream:
    """A delivery stream's buffers and the task that empties them (``run``)."""

    def __init__(
        self,
        identity: Identity,
        destination: Destination,
        store: FirehoseStore,
        clock: Clock,
        directory: Callable[[str], Place],
        *,
        invoke: Invoke | None = None,
        metric: Metric | None = None,
        post: Post | None = None,
    ) -> None:
        self.identity = identity
        self.destination = destination
        self.store = store
        self.clock = clock
        self.directory = directory
        self.invoke = invoke
        self.post = post
        self.metric: Metric = metric or (lambda name, value, unit: None)
        #: An HTTP request failing: by its first chunk's id, when it was
        #: first tried and how many attempts it has had.
        self._attempts: dict[int, tuple[float, int]] = {}
        self._buffers: dict[str, Buffer] = {}
        self._waiting = Buffer(None)  # chunks waiting for the Lambda processor
        self._wake = asyncio.Event()
        self._flush_all: list[asyncio.Future[None]] = []
        self._retry_at: dict[str, float] = {}  # partition -> when a failed write is tried again
        self._failures: dict[str, int] = {}
        self._last_id = 0
        #: Whether this runner writes the stream's objects (a cluster's other
        #: runners only buffer puts: ``own``/``disown``).
        self.owner = True
        #: The ids of the chunks tracked (buffered or being written), and
        #: those deleted while a ``load`` reads the store.
        self._known: set[int] = set()
        self._deleted: set[int] | None = None
        #: The bytes (data, sizes) of tracked chunks stored by this runner
        #: since its start, as stored: written out from here, not read back.
        self._held: dict[int, tuple[bytes, bytes | None]] = {}
        self._held_bytes = 0
        self._loading = asyncio.Lock()
        #: The partition keys the prefix names (query, Lambda), and partition
        #: ids by the values of a record's keys.
        self._prefix_keys = _prefix_keys(destination)
        self._partitions: dict[tuple[Any, Any], str] = {}
        self.delivered_objects: list[str] = []  # keys written since start (the CLI's view)

    # -- configuration ------------------------------------------------------------------

    def reconfigure(self, destination: Destination, version: int) -> None:
        """UpdateDestination: what is buffered goes out under the new settings."""
        self.destination = destination
        self._prefix_keys = _prefix_keys(destination)
        self._partitions.clear()
        self.identity.version = version
        self._wake.set()

    async def load(self, *, everything: bool = False) -> None:
        """Take up the chunks the store holds that are not tracked yet (left
        by a stop, a crash, or written by another process such as
        ``pipelines firehose put``, or by another runner of a cluster).
        Those after the last id seen, or with ``everything`` all of them: on
        PostgreSQL another runner's chunk may commit after a later id's."""
        if not self.owner:
            return
        async with self._loading:
            deleted: set[int] = set()
            self._deleted = deleted
            try:
                after = 0 if everything else self._last_id
                found = await self.store.chunks(self.identity.name, after)
            finally:
                self._deleted = None
            for chunk in found:
                if chunk.id not in deleted:  # written out meanwhile
                    self._track(chunk)
        self._wake.set()

    async def own(self) -> None:
        """This runner writes the stream's objects from now: everything
        buffered (by any runner) is taken up."""
        self.owner = True
        await self.load(everything=True)

    def disown(self) -> None:
        """Another runner writes the objects: forget the buffers (their
        chunks stay in the store for it); puts still go into the store."""
        self.owner = False
        self._buffers = {}
        self._waiting = Buffer(None)
        self._known = set()
        self._held = {}
        self._held_bytes = 0
        self._last_id = 0
        self._retry_at.clear()
        self._failures.clear()
        self._wake.set()

    def _forget(self, ids: Sequence[int]) -> None:
        """Chunks deleted from the store (written out, or transformed)."""
        self._known.difference_update(ids)
        for chunk_id in ids:
            held = self._held.pop(chunk_id, None)
            if held is not None:
                self._held_bytes -= len(held[0]) + len(held[1] or b"")
        if self._deleted is not None:
            self._deleted.update(ids)

    def _track(self, chunk: Chunk, new: NewChunk | None = None) -> None:
        """Buffer ``chunk``; with ``new`` (what was just stored as it), its
        bytes are held in memory too, while the stream holds less than
        ``HELD_BYTES``, so that writing it out reads nothing back."""
        if not self.owner or chunk.id in self._known:
            return  # not ours to write, or seen by a load before its put came back
        if new is not None:
            held = len(new.data) + len(new.sizes or b"")
            if self._held_bytes + held <= HELD_BYTES:
                self._held[chunk.id] = (new.data, new.sizes)
                self._held_bytes += held
        self._known.add(chunk.id)
        self._last_id = max(self._last_id, chunk.id)
        if chunk.partition is None:
            buffer = self._waiting
        else:
            found = self._buffers.get(chunk.partition)
            if found is None:
                found = self._buffers[chunk.partition] = Buffer(chunk.partition)
            buffer = found
        if not buffer.chunks:
            self._wake.set()  # a new deadline: the delivery task sets its timer
        buffer.add(chunk)

    # -- intake -------------------------------------------------------------------------

    async def put(self, records: Sequence[bytes]) -> list[PutResult]:
        """Buffer ``records`` durably; each one's RecordId, or its failure."""
        arrival = self.clock.time()
        destination = self.destination
        if destination.processor is not None:
            sizes = array("I", map(len, records)).tobytes()
            whole = NewChunk(None, arrival, len(records), b"".join(records), sizes)
            planned: list[tuple[NewChunk, list[int] | None]] = [(whole, None)]
        else:
            planned = self._partitioned(records, arrival)
        chunks = [chunk for chunk, _ in planned]
        encoding = self._encoding()
        if encoding is not None and destination.processor is None:
            # Compressed off the loop (zlib lets go of the GIL), a put's
            # chunks in one hand-over.
            chunks = await asyncio.to_thread(_encoded, encoding, chunks)
        try:
            ids = await self.store.add_chunks(self.identity.name, chunks) if chunks else []
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("firehose %s: buffering failed: %s", self.identity.name, exc)
            return [PutResult(None, "InternalFailure", str(exc))] * len(records)
        results: list[PutResult] = [_NO_RESULT] * len(records)
        for chunk, (_, members), chunk_id in zip(chunks, planned, ids, strict=True):
            self._track(chunk.bookkeeping(chunk_id), chunk)
            rids = record_ids(chunk_id, chunk.count)
            if members is None:  # the put's records in their order
                results = [_result((rid, None, None)) for rid in rids]
            else:
                for i, rid in zip(members, rids, strict=True):
                    results[i] = _result((rid, None, None))
        self.metric("IncomingPutRequests", 1, "Count")
        self.metric("IncomingRecords", len(records), "Count")
        self.metric("IncomingBytes", sum(map(len, records)), "Bytes")
        self._wake_if_due([chunk.partition for chunk in chunks])
        return results

    def _encoding(self) -> str | None:
        """How chunks of partitioned records are buffered: compressed as the
        objects are (GZIP), unless records are needed one by one later (an
        HTTP request, a Parquet row)."""
        destination = self.destination
        if destination.keeps_records:
            return None
        return ENCODINGS.get(destination.compression)

    def _partitioned(
        self, records: Sequence[bytes], arrival: float
    ) -> list[tuple[NewChunk, list[int] | None]]:
        """A put's records as chunks, one per partition (and one of error
        records for those whose keys failed), each with its records'
        indexes in the put (None: all of them, in order)."""
        destination = self.destination
        groups: dict[Hashable, list[int]] = {}
        failures: list[tuple[int, str]] = []
        if not destination.partitioning:
            groups[None] = list(range(len(records)))
        elif destination.query is not None:
            groups, failures = destination.query.group(records)
        else:  # partitioned by the function's keys only: none of the query's
            groups[None] = list(range(len(records)))
        delimiter = destination.delimiter or b""
        keep = destination.keeps_records
        planned: list[tuple[NewChunk, list[int] | None]] = []
        for found, members in groups.items():
            try:
                partition = self._partition_for(found, None) if destination.partitioning else PLAIN
            except QueryFailed as exc:  # the prefix names a key these records lack
                failures += [(i, str(exc)) for i in members]
                continue
            parts = records if len(members) == len(records) else [records[i] for i in members]
            data = delimiter.join(parts) + delimiter if delimiter else b"".join(parts)
            lengths = (
                array("I", [len(p) + len(delimiter) for p in parts]).tobytes() if keep else None
            )
            whole = len(members) == len(records)
            planned.append(
                (
                    NewChunk(partition, arrival, len(members), data, lengths),
                    None if whole else members,
                )
            )
        if failures:
            failures.sort()
            errors = [
                error_record(
                    records[i],
                    arrival,
                    "DynamicPartitioning.MetadataExtractionFailed",
                    message,
                    attempts=1,
                    ended=arrival,
                )
                for i, message in failures
            ]
            error_partition = partition_id(error=PARTITIONING_FAILED)
            planned.append(
                (
                    NewChunk(error_partition, arrival, len(errors), b"".join(errors)),
                    [i for i, _ in failures],
                )
            )
        return planned

    def _partition_of(self, data: bytes, from_lambda: Mapping[str, str] | None) -> str:
        """The partition of one record (``QueryFailed`` when its keys fail)."""
        destination = self.destination
        if not destination.partitioning:
            return PLAIN
        query = destination.query
        return self._partition_for(None if query is None else query.signature(data), from_lambda)

    def _partition_for(self, signature: Hashable, from_lambda: Mapping[str, str] | None) -> str:
        """The partition of records with the query's keys ``signature``
        (``MetadataQuery.signature``; None without a query) and the
        function's keys ``from_lambda``; ``QueryFailed`` when the prefix
        names a key they lack. Cached by the keys' values: most records of
        a busy stream go to partitions it has seen."""
        seen = (signature, tuple(from_lambda.items()) if from_lambda is not None else None)
        found = self._partitions.get(seen)
        if found is not None:
            return found
        query = self.destination.query
        keys = None if query is None or signature is None else query.keys_of(signature)
        query_keys, lambda_keys = self._prefix_keys
        for key in query_keys:
            if keys is None or key not in keys:
                raise QueryFailed(f"the query gave no partition key {key!r}")
        for key in lambda_keys:
            if from_lambda is None or key not in from_lambda:
                raise QueryFailed(f"the Lambda function gave no partition key {key!r}")
        if len(self._partitions) >= PARTITION_CACHE:
            self._partitions.clear()
        made = self._partitions[seen] = partition_id(keys, from_lambda)
        return made

    def _wake_if_due(self, touched: Sequence[str | None]) -> None:
        """Wake the delivery task when a buffer this put added to is full."""
        destination = self.destination
        if destination.buffer_interval == 0:
            self._wake.set()
            return
        processor = destination.processor
        if processor is not None:
            if self._waiting.size >= min(processor.buffer_size, destination.buffer_size):
                self._wake.set()
            return
        for partition in touched:
            buffer = self._buffers.get(partition) if partition is not None else None
            if buffer is not None and buffer.size >= destination.buffer_size:
                self._wake.set()
                return

    # -- the delivery task ----------------------------------------------------------------

    async def flush(self) -> None:
        """Deliver everything buffered now, whatever the hints (the CLI's
        ``flush``); returns once it is written (or has failed and waits for
        its retry)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flush_all.append(done)
        self._wake.set()
        await done

    async def run(self) -> None:
        """Empty the buffers as they come due, until cancelled (while this
        runner is the stream's owner; else it waits to be woken)."""
        while True:
            self._wake.clear()
            flushing, self._flush_all = self._flush_all, []
            try:
                if self.owner:
                    await self._turn(force=bool(flushing))
            except Exception:
                # The store failed (a locked or lost database): what was
                # taken is buffered again; the task must outlive it.
                log.exception(
                    "firehose %s: delivery failed; again in %.0f s", self.identity.name, RETRY_FIRST
                )
                await sleep(self.clock, RETRY_FIRST)
            finally:
                for done in flushing:
                    if not done.done():
                        done.set_result(None)
            if self._wake.is_set():
                continue
            await self._sleep(self._next_due())

    async def _sleep(self, due: float | None) -> None:
        timer: Cancellable | None = None
        if due is not None:
            timer = self.clock.call_later(max(due - self.clock.time(), 0.0), self._wake.set)
        try:
            await self._wake.wait()
        finally:
            if timer is not None:
                timer.cancel()

    def _next_due(self) -> float | None:
        dues = [
            max(b.oldest + self.destination.buffer_interval, self._retry_at.get(p, 0.0))
            for p, b in self._buffers.items()
            if b.chunks
        ]
        processor = self.destination.processor
        if self._waiting.chunks and processor is not None:
            interval = min(processor.buffer_interval, self.destination.buffer_interval)
            dues.append(self._waiting.oldest + interval)
        return min(dues) if dues else None

    async def _turn(self, *, force: bool) -> None:
        now = self.clock.time()
        processor = self.destination.processor
        if self._waiting.chunks:
            # Without a processor (an UpdateDestination removed it), what
            # waited for one is partitioned now.
            interval = 0.0 if processor is None else processor.buffer_interval
            interval = min(interval, self.destination.buffer_interval)
            limit = self.destination.buffer_size
            if processor is not None:
                limit = min(processor.buffer_size, limit)
            while self._waiting.chunks and (
                force or self._waiting.size >= limit or now - self._waiting.oldest >= interval
            ):
                # Up to DELIVERY_CONCURRENCY invocations at once (AWS invokes
                # the function for several batches at a time; the function
                # resource's concurrency still caps them).
                batches: list[list[Chunk]] = []
                while (
                    self._waiting.chunks
                    and len(batches) < DELIVERY_CONCURRENCY
                    and (
                        force
                        or self._waiting.size >= limit
                        or now - self._waiting.oldest >= interval
                    )
                ):
                    batches.append(self._waiting.take(limit))
                try:
                    outcomes = await asyncio.gather(
                        *(self._process(batch) for batch in batches), return_exceptions=True
                    )
                except BaseException:  # cancelled: what was taken is buffered again
                    for batch in reversed(batches):
                        self._waiting.give_back(batch)
                    raise
                failed = [
                    (batch, outcome)
                    for batch, outcome in zip(batches, outcomes, strict=True)
                    if isinstance(outcome, BaseException)
                ]
                for batch, _ in reversed(failed):
                    self._waiting.give_back(batch)
                if failed:
                    raise failed[0][1]
        # A flush writes what its own writes made too: the error output of
        # records that failed conversion or delivery, written in the next
        # round (an error output makes no more; the rounds are bounded so
        # that puts arriving meanwhile cannot keep a flush going).
        for _ in range(FLUSH_ROUNDS if force else 1):
            due = [
                (partition, buffer)
                for partition, buffer in self._buffers.items()
                if buffer.chunks and (force or self._is_due(partition, buffer, now))
            ]
            if not due:
                break
            await self._empty_all(due, force=force, now=now)
        for partition, buffer in list(self._buffers.items()):
            if not buffer.chunks:
                del self._buffers[partition]

    def _is_due(self, partition: str, buffer: Buffer, now: float) -> bool:
        if self._retry_at.get(partition, 0.0) > now:
            return False
        destination = self.destination
        return buffer.size >= destination.buffer_size or (
            now - buffer.oldest >= destination.buffer_interval
        )

    async def _empty_all(self, due: list[tuple[str, Buffer]], *, force: bool, now: float) -> None:
        """Write the ``due`` buffers out, several partitions at once:
        compression and file writes run in threads (zlib lets go of the
        GIL), the store's reads interleave."""
        slots = asyncio.Semaphore(DELIVERY_CONCURRENCY)

        async def empty(partition: str, buffer: Buffer) -> None:
            async with slots:
                await self._empty(partition, buffer, force=force, now=now)

        await asyncio.gather(*(empty(p, b) for p, b in due))

    async def _empty(self, partition: str, buffer: Buffer, *, force: bool, now: float) -> None:
        """Write ``buffer`` out while it is due (a full buffer may make several objects)."""
        while self.owner and buffer.chunks and (force or self._is_due(partition, buffer, now)):
            if self._retry_at.get(partition, 0.0) > now:
                return
            if self._to_endpoint(partition):
                limit = min(self.destination.buffer_size, endpoint.MAX_REQUEST_DATA)
                taken = buffer.take(limit, endpoint.MAX_RECORDS)
            else:
                taken = buffer.take(self.destination.buffer_size)
            if not await self._deliver(partition, taken):
                buffer.give_back(taken)
                return

    # -- transformation ---------------------------------------------------------------

    async def _process(self, chunks: list[Chunk]) -> None:
        """Run the Lambda processor over ``chunks``; its outcome replaces them."""
        processor = self.destination.processor
        records = Batch()
        arrivals = {c.id: c.arrival for c in chunks}
        for stored in await self._stored(chunks):
            cut = _cut(decode(stored.encoding, stored.data), stored.sizes or b"")
            records.ids += record_ids(stored.id, len(cut))
            records.arrivals += [arrivals[stored.id]] * len(cut)
            records.data += cut
        if processor is None or self.invoke is None:
            outcome = Transformed(
                ok_data=records.data,
                ok_arrivals=records.arrivals,
                ok_keys=[None] * len(records.data),
            )
            await self._store_outcome(chunks, outcome)
            return
        started = self.clock.time()
        outcome = await transform(self.invoke, self.identity, processor, records, clock=self.clock)
        self.metric(
            "ExecuteProcessing.Duration", (self.clock.time() - started) * 1000, "Milliseconds"
        )
        self.metric("ExecuteProcessing.Success", 0 if outcome.invocation_failed else 1, "None")
        self.metric("SucceedProcessing.Records", len(outcome.ok_data), "Count")
        self.metric("SucceedProcessing.Bytes", sum(map(len, outcome.ok_data)), "Bytes")
        await self._store_outcome(chunks, outcome)

    async def _store_outcome(self, chunks: list[Chunk], outcome: Transformed) -> None:
        made = self._after_processing(outcome)
        encoding = self._encoding()
        if encoding is not None:
            made = await asyncio.to_thread(_encoded, encoding, made)
        done = [c.id for c in chunks]
        ids = await self.store.replace_chunks(self.identity.name, done, made)
        self._forget(done)
        for new_id, chunk in zip(ids, made, strict=True):
            self._track(chunk.bookkeeping(new_id), chunk)

    async def _stored(self, chunks: Sequence[Chunk]) -> list[StoredData]:
        """The bytes of those of ``chunks`` still in the store, in their
        order: held in memory, the others read back. One that another
        runner of a cluster wrote out meanwhile is left out."""
        held = {c.id: self._held[c.id] for c in chunks if c.id in self._held}
        alive = await self.store.present(list(held)) if held else set()
        missing = [c.id for c in chunks if c.id not in held]
        read = {d.id: d for d in await self.store.chunk_data(missing)} if missing else {}
        found: list[StoredData] = []
        for chunk in chunks:
            if chunk.id in alive:
                data, sizes = held[chunk.id]
                found.append(StoredData(chunk.id, data, sizes, chunk.encoding))
            elif chunk.id in read:
                found.append(read[chunk.id])
        return found

    def _after_processing(self, outcome: Transformed) -> list[NewChunk]:
        groups: dict[str, list[bytes]] = {}
        arrivals: dict[str, float] = {}
        delimiter = self.destination.delimiter or b""
        failed: list[bytes] = list(outcome.failed)
        partition_of = self._partition_of
        for data, arrival, keys in zip(
            outcome.ok_data, outcome.ok_arrivals, outcome.ok_keys, strict=True
        ):
            try:
                partition = partition_of(data, keys)
            except QueryFailed as exc:
                failed.append(
                    error_record(
                        data,
                        arrival,
                        "DynamicPartitioning.MetadataExtractionFailed",
                        str(exc),
                        attempts=1,
                        ended=self.clock.time(),
                    )
                )
                continue
            items = groups.get(partition)
            if items is None:
                groups[partition] = [data]
                arrivals[partition] = arrival
            else:
                items.append(data)
                if arrival < arrivals[partition]:
                    arrivals[partition] = arrival
        keep = self.destination.keeps_records
        made = [
            NewChunk(
                partition,
                arrivals[partition],
                len(items),
                delimiter.join(items) + delimiter if delimiter else b"".join(items),
                array("I", [len(i) + len(delimiter) for i in items]).tobytes() if keep else None,
            )
            for partition, items in groups.items()
        ]
        if failed:
            oldest = min(outcome.ok_arrivals, default=self.clock.time())
            made.append(
                NewChunk(
                    partition_id(error=PROCESSING_FAILED), oldest, len(failed), b"".join(failed)
                )
            )
        return made

    # -- objects ------------------------------------------------------------------------

    def key_of(self, partition: str, chunks: Sequence[Chunk]) -> str:
        """The S3 key of the object holding ``chunks`` of ``partition``."""
        destination = self.destination
        error, query, from_lambda = (
            (None, {}, {}) if partition == BACKUP else parse_partition(partition)
        )
        oldest = min(chunk.arrival for chunk in chunks)
        when = datetime.fromtimestamp(oldest, destination.zone or UTC)
        template = destination.error_prefix if error else destination.prefix
        keys = {"query": query, "lambda": from_lambda}
        try:
            prefix = template.render(when, keys, error)
            if prefix:
                check_key(prefix + "x")  # a partition key's ".." must not leave the bucket
        except (KeyError, ValueError, BucketError) as exc:
            # A prefix this partition cannot fill (a key an update removed,
            # over 512 characters, a value making a path outside the
            # bucket): never retried in vain, its records go as they are
            # to the error output.
            log.error("firehose %s: %s; written to the error output", self.identity.name, exc)
            prefix = destination.error_prefix.render(when, {}, PARTITIONING_FAILED)
        # Derived from the first chunk, never reused: a redelivery after a
        # crash writes the same key again instead of a second object.
        seed = f"{self.identity.name}/{self.identity.created!r}/{chunks[0].id}".encode()
        unique = str(uuid.UUID(bytes=hashlib.sha256(seed).digest()[:16], version=4))
        extension = destination.extension
        if error and destination.conversion is not None:
            extension = EXTENSIONS[destination.compression]  # error records stay JSON lines
        name = object_name(self.identity.name, self.identity.version, when, unique, extension)
        return prefix + name

    async def _deliver(self, partition: str, chunks: list[Chunk]) -> bool:
        """Write ``chunks`` as one object, then delete them; False when it failed
        (they stay buffered and are tried again after a backoff)."""
        if self._to_endpoint(partition):
            return await self._send(chunks)
        count = sum(c.count for c in chunks)
        size = sum(c.size for c in chunks)
        oldest = min(c.arrival for c in chunks)
        try:
            key = self.key_of(partition, chunks)
            place = self.directory(self.destination.bucket)
            # Records (not error records nor backups) become Parquet rows.
            converting = partition not in (BACKUP,) and not parse_partition(partition)[0]
            written, failed = await self._write(place, key, chunks, converting=converting)
            await self._settle(chunks, self._conversion_failed(failed), failed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures = self._failures[partition] = self._failures.get(partition, 0) + 1
            delay = min(RETRY_FIRST * 2 ** (failures - 1), RETRY_CAP)
            self._retry_at[partition] = self.clock.time() + delay
            log.error(
                "firehose %s: writing an object of %d records failed (%s); again in %.0f s",
                self.identity.name,
                count,
                exc,
                delay,
            )
            self.metric("DeliveryToS3.Success", 0, "None")
            return False
        self._failures.pop(partition, None)
        self._retry_at.pop(partition, None)
        if written:
            self.delivered_objects.append(key)
        self.metric("DeliveryToS3.Records", count, "Count")
        self.metric("DeliveryToS3.Bytes", size, "Bytes")
        self.metric("DeliveryToS3.Success", 1, "None")
        self.metric("DeliveryToS3.DataFreshness", max(self.clock.time() - oldest, 0.0), "Seconds")
        return True

    # -- the HTTP endpoint destination ---------------------------------------------------

    def _to_endpoint(self, partition: str) -> bool:
        """Whether ``partition``'s records go to an HTTP endpoint (the others,
        error outputs and backups, are objects in its backup bucket)."""
        return self.destination.http is not None and partition == PLAIN

    def request_id(self, chunks: Sequence[Chunk]) -> str:
        """The requestId of the request carrying ``chunks``: the same on every
        attempt and after a restart (the endpoint may deduplicate by it)."""
        seed = f"{self.identity.name}/{self.identity.created!r}/{chunks[0].id}/{chunks[-1].id}"
        return str(uuid.UUID(bytes=hashlib.sha256(seed.encode()).digest()[:16], version=4))

    async def _records_of(self, chunks: Sequence[Chunk]) -> list[tuple[float, bytes]]:
        """Each record of ``chunks`` (arrival, data), cut apart by their lengths."""
        arrivals = {c.id: c.arrival for c in chunks}
        found: list[tuple[float, bytes]] = []
        for stored in await self._stored(chunks):
            data = decode(stored.encoding, stored.data)
            # Buffered before this destination kept lengths: one record.
            records = _cut(data, stored.sizes) if stored.sizes else [data]
            found += [(arrivals[stored.id], record) for record in records]
        return found

    async def _send(self, chunks: list[Chunk]) -> bool:
        """One attempt to deliver ``chunks`` in one request; False when it
        failed and is to be tried again after the backoff. Past the retry
        duration (or at once for a refusal not worth retrying) the records
        become error records of the backup bucket's error output."""
        http = self.destination.http
        assert http is not None
        records = await self._records_of(chunks)
        request_id = self.request_id(chunks)
        now = self.clock.time()
        first, attempts = self._attempts.get(chunks[0].id, (now, 0))
        attempts += 1
        headers, body = endpoint.request_of(
            http, request_id, int(now * 1000), [data for _, data in records], self.identity.arn
        )
        verdict = await self._post(http.url, headers, body, request_id)
        self.metric("DeliveryToHttpEndpoint.Success", 1 if verdict.delivered else 0, "None")
        if verdict.delivered:
            self._attempts.pop(chunks[0].id, None)
            self._failures.pop(PLAIN, None)
            self._retry_at.pop(PLAIN, None)
            oldest = min(arrival for arrival, _ in records)
            self.metric("DeliveryToHttpEndpoint.Records", len(records), "Count")
            self.metric("DeliveryToHttpEndpoint.Bytes", sum(len(d) for _, d in records), "Bytes")
            self.metric("DeliveryToHttpEndpoint.DataFreshness", max(now - oldest, 0.0), "Seconds")
            await self._settle(chunks, BACKUP if http.backup_all else None, records)
            return True
        log.warning(
            "firehose %s: request %s to %s failed (attempt %d): %s",
            self.identity.name,
            request_id,
            http.url,
            attempts,
            verdict.message,
        )
        ended = self.clock.time()
        if not verdict.retry or ended - first >= http.retry_duration:
            self._attempts.pop(chunks[0].id, None)
            failed = [
                error_record(
                    data,
                    arrival,
                    verdict.code,
                    verdict.message,
                    attempts=attempts,
                    ended=ended,
                )
                for arrival, data in records
            ]
            await self._settle(chunks, partition_id(error=endpoint.ERROR_TYPE), failed)
            return True
        self._attempts[chunks[0].id] = (first, attempts)
        # The last attempt comes when the retry duration ends, not after it.
        due = min(ended + endpoint.backoff(attempts), first + http.retry_duration)
        self._retry_at[PLAIN] = due
        return False

    async def _post(
        self, url: str, headers: Mapping[str, str], body: bytes, request_id: str
    ) -> endpoint.Verdict:
        from pipelines.http.client import RequestFailed

        if self.post is None:
            return endpoint.Verdict(False, True, "HttpEndpoint.ConnectionFailed", "no HTTP client")
        try:
            status, answer = await self.post(url, headers, body)
        except RequestFailed as exc:
            code = (
                "HttpEndpoint.RequestTimeout"
                if exc.code == "Timeout"
                else "HttpEndpoint.ConnectionFailed"
            )
            return endpoint.Verdict(False, True, code, exc.message)
        return endpoint.judge(status, answer, request_id)

    async def _settle(
        self,
        chunks: list[Chunk],
        partition: str | None,
        records: Sequence[tuple[float, bytes]] | Sequence[bytes],
    ) -> None:
        """Done with a request's ``chunks``: deleted, or (a backup, error
        records) replaced in the same transaction by a chunk of ``partition``
        that goes to the backup bucket as an object."""
        done = [c.id for c in chunks]
        if partition is None:
            await self.store.delete_chunks(done)
            self._forget(done)
            return
        pieces = [r if isinstance(r, bytes) else r[1] for r in records]
        oldest = min(c.arrival for c in chunks)
        made = [NewChunk(partition, oldest, len(pieces), b"".join(pieces))]
        ids = await self.store.replace_chunks(self.identity.name, done, made)
        self._forget(done)
        self._track(made[0].bookkeeping(ids[0]), made[0])

    def _conversion_failed(self, failed: list[bytes]) -> str | None:
        return partition_id(error=FORMAT_CONVERSION_FAILED) if failed else None

    async def _write(
        self, place: Place, key: str, chunks: list[Chunk], *, converting: bool = False
    ) -> tuple[bool, list[bytes]]:
        """The object ``key`` in ``place``, whole or not at all (the bucket
        plugin's ``open_object``: a directory's ``AtomicFile``, a store's
        upload), written a page of chunks at a time (held in memory, or
        read back). A chunk no longer in the store (another runner
        delivered it meanwhile) is left out; with none left no object is
        written (False). Converting to Parquet, the records that cannot be
        rows come back as error records; no object is written when none
        could be a row."""
        pages: list[list[Chunk]] = [[]]
        size = 0
        for chunk in chunks:
            held = self._held.get(chunk.id)
            weight = chunk.size if held is None else len(held[0])
            if pages[-1] and size + weight > PAGE_BYTES:
                pages.append([])
                size = 0
            pages[-1].append(chunk)
            size += weight
        compression = self.destination.compression
        name = key.rsplit("/", 1)[-1]
        member = name.removesuffix(self.destination.extension) or name
        conversion = self.destination.conversion if converting else None
        opened = await asyncio.to_thread(open_object, place, key)
        written = 0
        try:
            if conversion is not None:
                from plugins.firehose.parquet import ParquetWriter

                parquet = await asyncio.to_thread(ParquetWriter, conversion, opened.file)
                out: Any = parquet
            else:
                out = writer(compression, opened.file, member)
            for page in pages:
                found = await self._stored(page)
                written += len(found)
                await asyncio.to_thread(_write_all, out, found, conversion is not None)
            await asyncio.to_thread(out.close)  # the compressor's (or Parquet's) last bytes
            if conversion is not None and not parquet.rows:
                written = 0
            await asyncio.to_thread(opened.commit if written else opened.discard)
        except BaseException:
            opened.discard()
            raise
        if conversion is None:
            return bool(written), []
        ended = self.clock.time()
        oldest = min(c.arrival for c in chunks)
        failed = [
            error_record(record, oldest, FORMAT_CONVERSION_ERROR, reason, attempts=1, ended=ended)
            for record, reason in parquet.failed
        ]
        return bool(written), failed


def _write_all(out: Any, found: list[StoredData], records: bool) -> None:
    """Chunks into an object: as buffered (a GZIP object appends its
    chunks' gzip members as they are), or as records (Parquet rows)."""
    for stored in found:
        if not records:
            out.write_encoded(stored.encoding, stored.data)
        elif stored.sizes:
            out.write_records(_cut(decode(stored.encoding, stored.data), stored.sizes))
        else:
            out.write(decode(stored.encoding, stored.data))


def _cut(data: bytes, sizes: bytes) -> list[bytes]:
    """A chunk's records, by their lengths (a delimiter kept is stripped)."""
    lengths = array("I")
    lengths.frombytes(sizes)
    records = []
    position = 0
    for length in lengths:
        records.append(data[position : position + length])
        position += length
    return records


async def buffer_records(
    store: FirehoseStore, name: str, records: Sequence[bytes]
) -> list[PutResult]:
    """Buffer ``records`` into delivery stream ``name`` from outside its
    runner (``pipelines firehose put``): partitioned and stored as a put
    would be; the running pipeline takes them up within a second
    (``FirehoseTarget.poll``), or at its next start."""
    from plugins.firehose.spec import destination_of

    record = await store.get(name)
    if record.config.get("DeliveryStreamType") == "KinesisStreamAsSource":
        raise FirehoseError(
            "InvalidArgumentException",
            f"delivery stream {name} reads a Kinesis stream and takes no PutRecord",
        )
    destination = destination_of(record.config)
    identity = Identity(name, "", record.version, record.created, "")
    stream = DeliveryStream(identity, destination, store, store.clock, lambda bucket: Path(bucket))
    return await stream.put(records)
