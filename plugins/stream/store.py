"""Streams with Kinesis Data Streams' semantics, durable in the state database
(SQLite).

- A stream has shards, each owning a contiguous range of the 128-bit hash key
  space. A record goes to the open shard whose range holds the MD5 of its
  partition key (read as a big-endian 128-bit integer), or its explicit hash key.
- Sequence numbers come from one counter per stream, so they increase within
  a shard (as Kinesis promises) and also across the stream, which lets a
  reader start every shard "at sequence number N". The string form is 56
  digits: the counter (50) then the shard's index (6), so it sorts as numbers
  do and says which shard it belongs to.
- Arrival times never go backwards within a stream (each is at least the one
  before), so "older than the retention period" is a prefix of every shard.
- A reshard closes parents (their last sequence number is the stream's
  counter at that moment) and adds children; writers pick up the new shard
  map through the stream's ``version``, checked inside every write
  transaction (a write routed by an older map writes nothing and is made
  again), so a writer in another process never writes to a closed shard.
- Shard iterators are self-contained tokens (stream, shard, position, time
  issued): nothing to store, and they expire after 5 minutes as Kinesis's do.

Every write is one ``BEGIN IMMEDIATE`` transaction under the store's lock;
PutRecords' is one trip to the database (``Store.batch``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import collections
import contextlib
import functools
import hashlib
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from pipelines.clock import Clock
from pipelines.errors import StreamError
from pipelines.event import DEFAULT_ACCOUNT, DEFAULT_REGION
from pipelines.store import Queries, Step, Store, Upkeep

SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT NOT NULL UNIQUE,
    created         REAL NOT NULL,
    retention_hours INTEGER NOT NULL,
    max_record_size INTEGER NOT NULL,
    write_limits    INTEGER NOT NULL,
    next_shard      INTEGER NOT NULL,
    last_seq        INTEGER NOT NULL,
    last_arrival    REAL NOT NULL,
    version         INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS stream_shards (
    stream     INTEGER NOT NULL,
    shard      INTEGER NOT NULL,
    start_hash TEXT NOT NULL,
    end_hash   TEXT NOT NULL,
    parent     INTEGER,
    adjacent   INTEGER,
    created    REAL NOT NULL,
    first_seq  INTEGER NOT NULL,
    closed     REAL,
    last_seq   INTEGER,
    PRIMARY KEY (stream, shard)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stream_records (
    stream        INTEGER NOT NULL,
    shard         INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    partition_key TEXT NOT NULL,
    data          BLOB NOT NULL,
    arrival       REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS stream_records_order ON stream_records (stream, shard, seq);
CREATE TABLE IF NOT EXISTS stream_checkpoints (
    stream   INTEGER NOT NULL,
    consumer TEXT NOT NULL,
    shard    INTEGER NOT NULL,
    seq      INTEGER NOT NULL,
    finished INTEGER NOT NULL,
    updated  REAL NOT NULL,
    PRIMARY KEY (stream, consumer, shard)
) WITHOUT ROWID;
"""

#: Version 3 added these: which consumer instance reads which shard (a lease,
#: taken over once expired), and which instances of a named consumer are alive
#: (each reads its share of the shards). Several runners on one database
#: (PostgreSQL) then read each shard once per consumer name.
LEASES = """
CREATE TABLE IF NOT EXISTS stream_leases (
    stream   INTEGER NOT NULL,
    consumer TEXT NOT NULL,
    shard    INTEGER NOT NULL,
    owner    TEXT NOT NULL,
    expires  REAL NOT NULL,
    PRIMARY KEY (stream, consumer, shard)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stream_members (
    stream   INTEGER NOT NULL,
    consumer TEXT NOT NULL,
    owner    TEXT NOT NULL,
    expires  REAL NOT NULL,
    PRIMARY KEY (stream, consumer, owner)
) WITHOUT ROWID;
"""

#: Version 2 added this index: finding where a time falls in a shard (AT_TIMESTAMP,
#: retention, a consumer starting at a time) was a scan of the shard without it.
ARRIVAL_INDEX = (
    "CREATE INDEX IF NOT EXISTS stream_records_arrival"
    " ON stream_records (stream, shard, arrival, seq)"
)

#: The first record of a shard that arrived at or after a time: (stream, shard,
#: time). Arrival times never go backwards along a stream, so the first in
#: (arrival, seq) order is also the first in sequence order, and that order is
#: the arrival index's: one seek, not a scan of the shard.
FIRST_AT = (
    "SELECT seq FROM stream_records WHERE stream = ? AND shard = ? AND arrival >= ?"
    " ORDER BY arrival, seq LIMIT 1"
)

#: The first record of a whole stream at or after a time: (time, stream). The
#: earliest of each shard's first (one seek each, as FIRST_AT), since sequence
#: numbers grow along the stream.
STREAM_FIRST_AT = (
    "SELECT min((SELECT r.seq FROM stream_records AS r"
    " WHERE r.stream = s.stream AND r.shard = s.shard AND r.arrival >= ?"
    " ORDER BY r.arrival, r.seq LIMIT 1))"
    " FROM stream_shards AS s WHERE s.stream = ?"
)

#: A checkpoint saved: (stream, consumer, shard, seq, finished, updated).
_SAVE_CHECKPOINT = (
    "INSERT INTO stream_checkpoints (stream, consumer, shard, seq, finished, updated)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (stream, consumer, shard) DO UPDATE SET"
    " seq = excluded.seq, finished = excluded.finished, updated = excluded.updated"
)

#: A checkpoint saved only if its shard's lease is the owner's: (seq,
#: finished, updated, stream, consumer, shard, owner). The row's key comes
#: from the lease row, so no lease, no row. (SQLite needs the WHERE here:
#: it reads the ON CONFLICT of an INSERT ... SELECT without one as a join's.)
_SAVE_LEASED_CHECKPOINT = (
    "INSERT INTO stream_checkpoints (stream, consumer, shard, seq, finished, updated)"
    " SELECT stream, consumer, shard, ?, ?, ? FROM stream_leases"
    " WHERE stream = ? AND consumer = ? AND shard = ? AND owner = ?"
    " ON CONFLICT (stream, consumer, shard) DO UPDATE SET"
    " seq = excluded.seq, finished = excluded.finished, updated = excluded.updated"
)

HASH_SPACE = 2**128
MAX_SHARDS = 1000  # per stream, at creation (Kinesis's default account quota is 500)
MAX_PUT_RECORDS = 500
MAX_PUT_REQUEST_BYTES = 5 * 1024 * 1024
MAX_PARTITION_KEY = 256
DEFAULT_RECORD_SIZE = 1024 * 1024
MAX_RECORD_SIZE = 5 * 1024 * 1024  # a record must fit in one PutRecords request
MAX_GET_RECORDS = 10_000
TRIM_INTERVAL = 60.0  # retention of the streams a pipeline runs
MAX_GET_BYTES = 10 * 1024 * 1024  # GetRecords returns at most 10 MiB per call
ITERATOR_LIFETIME = 300.0
#: How long a named consumer's lease on a shard lasts unless renewed (each
#: read renews it): how soon another instance takes over a dead one's shards.
LEASE_SECONDS = 30.0
MIN_RETENTION_HOURS = 24
MAX_RETENTION_HOURS = 8760
#: Per shard and second, when write limits are on (Kinesis's provisioned mode).
SHARD_RECORDS_PER_SECOND = 1000
SHARD_BYTES_PER_SECOND = 1024 * 1024
_STREAM_NAME = re.compile(r"[a-zA-Z0-9_.-]{1,128}")
_SHARD_ID = re.compile(r"shardId-(\d{12})")
_SEQUENCE = re.compile(r"\d{56}")


# -- names and numbers -----------------------------------------------------


def shard_id(index: int) -> str:
    return f"shardId-{index:012d}"


def shard_index(value: str) -> int:
    found = _SHARD_ID.fullmatch(value) if isinstance(value, str) else None
    if found is None:
        raise StreamError(
            "InvalidArgumentException", f"{value!r} is not a shard id (shardId-000000000000)"
        )
    return int(found.group(1))


def sequence_number(seq: int, shard: int) -> str:
    return f"{seq:050d}{shard:06d}"


def parse_sequence_number(value: Any) -> tuple[int, int]:
    """(counter, shard index) of a sequence number string."""
    if not isinstance(value, str) or not _SEQUENCE.fullmatch(value):
        raise StreamError(
            "InvalidArgumentException", f"{value!r} is not a sequence number of this stream"
        )
    return int(value[:50]), int(value[50:])


def _hash_text(value: int) -> str:
    return f"{value:039d}"  # zero-padded: sorts as numbers in SQL


def partition_hash(partition_key: str) -> int:
    """The hash key of a partition key: its MD5 read as a 128-bit integer."""
    return int.from_bytes(hashlib.md5(partition_key.encode()).digest(), "big")


def check_stream_name(name: Any) -> str:
    if not isinstance(name, str) or not _STREAM_NAME.fullmatch(name):
        raise StreamError(
            "InvalidArgumentException",
            f"stream name {name!r}: use 1 to 128 letters, digits, '_', '-' or '.'",
        )
    return name


def check_retention(hours: Any) -> int:
    if (
        isinstance(hours, bool)
        or not isinstance(hours, int)
        or not MIN_RETENTION_HOURS <= hours <= MAX_RETENTION_HOURS
    ):
        raise StreamError(
            "InvalidArgumentException",
            f"retention_hours must be a whole number from {MIN_RETENTION_HOURS} to"
            f" {MAX_RETENTION_HOURS}, not {hours!r}",
        )
    return hours


def check_record_size(size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or not 1024 <= size <= MAX_RECORD_SIZE:
        raise StreamError(
            "InvalidArgumentException",
            f"max_record_size must be a whole number of bytes from 1024 to {MAX_RECORD_SIZE},"
            f" not {size!r}",
        )
    return size


def even_ranges(count: int) -> list[tuple[int, int]]:
    """The hash key space split into ``count`` contiguous ranges of equal size
    (the last takes the remainder), as CreateStream splits it."""
    size = HASH_SPACE // count
    starts = [i * size for i in range(count)]
    ends = [start - 1 for start in starts[1:]] + [HASH_SPACE - 1]
    return list(zip(starts, ends, strict=True))


# -- what the store hands out ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shard:
    stream: int
    index: int
    start_hash: int
    end_hash: int
    parent: int | None
    adjacent: int | None
    created: float
    first_seq: int
    closed: float | None
    last_seq: int | None

    @property
    def id(self) -> str:
        return shard_id(self.index)

    @property
    def parents(self) -> tuple[int, ...]:
        return tuple(p for p in (self.parent, self.adjacent) if p is not None)

    def to_json(self) -> dict[str, Any]:
        described: dict[str, Any] = {"ShardId": self.id}
        if self.parent is not None:
            described["ParentShardId"] = shard_id(self.parent)
        if self.adjacent is not None:
            described["AdjacentParentShardId"] = shard_id(self.adjacent)
        described["HashKeyRange"] = {
            "StartingHashKey": str(self.start_hash),
            "EndingHashKey": str(self.end_hash),
        }
        numbers = {"StartingSequenceNumber": sequence_number(self.first_seq, self.index)}
        if self.last_seq is not None:
            numbers["EndingSequenceNumber"] = sequence_number(self.last_seq, self.index)
        described["SequenceNumberRange"] = numbers
        return described

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Shard:
        stream, index, start, end, parent, adjacent, created, first, closed, last = row
        return cls(
            stream, index, int(start), int(end), parent, adjacent, created, first, closed, last
        )


_SHARD_COLUMNS = (
    "stream, shard, start_hash, end_hash, parent, adjacent, created, first_seq, closed, last_seq"
)


@dataclass(frozen=True, slots=True)
class StreamInfo:
    id: int
    name: str
    created: float
    retention_hours: int
    max_record_size: int
    write_limits: bool
    version: int

    @property
    def retention(self) -> float:
        return self.retention_hours * 3600.0

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> StreamInfo:
        """From a row of ``_STREAM_COLUMNS``."""
        id_, name, created, hours, size, limits, version = row
        return cls(id_, name, created, hours, size, bool(limits), version)


_STREAM_COLUMNS = "id, name, created, retention_hours, max_record_size, write_limits, version"
_STREAM_WIDTH = len(_STREAM_COLUMNS.split(", "))

#: A stream's settings (``_STREAM_COLUMNS``) then each of its shards'
#: (``_SHARD_COLUMNS``), in shard order: (name).
_STREAM_AND_SHARDS = (
    f"SELECT {', '.join(f's.{c}' for c in _STREAM_COLUMNS.split(', '))},"
    f" {', '.join(f'h.{c}' for c in _SHARD_COLUMNS.split(', '))}"
    " FROM streams AS s LEFT JOIN stream_shards AS h ON h.stream = s.id"
    " WHERE s.name = ? ORDER BY h.shard"
)


def _find_shard(stream: StreamInfo, shards: list[Shard], index: int) -> Shard:
    for shard in shards:
        if shard.index == index:
            return shard
    raise StreamError(
        "ResourceNotFoundException",
        f"shard {shard_id(index)} not found in stream {stream.name}",
    )


@dataclass(frozen=True, slots=True)
class Record:
    """One record as read: its bytes, partition key and place in the stream."""

    stream: str
    shard_id: str
    sequence_number: str
    partition_key: str
    data: bytes
    arrival: float

    def json(self) -> Any:
        """The data parsed as JSON (what a stream target writes)."""
        return orjson.loads(self.data)

    def to_json(self) -> dict[str, Any]:
        """As GetRecords returns it (Data as bytes, the time in seconds)."""
        return {
            "SequenceNumber": self.sequence_number,
            "ApproximateArrivalTimestamp": self.arrival,
            "Data": self.data,
            "PartitionKey": self.partition_key,
        }


@dataclass(slots=True)
class _ShardMap:
    """The open shards of a stream, for writers: sorted by starting hash key."""

    info: StreamInfo
    starts: list[int]
    shards: list[Shard]

    def route(self, hash_key: int) -> Shard:
        return self.shards[bisect.bisect_right(self.starts, hash_key) - 1]


class _Bucket:
    """A shard's write allowance: SHARD_*_PER_SECOND, refilled continuously."""

    __slots__ = ("at", "bytes", "records")

    def __init__(self, now: float) -> None:
        self.records = float(SHARD_RECORDS_PER_SECOND)
        self.bytes = float(SHARD_BYTES_PER_SECOND)
        self.at = now

    def copy(self) -> _Bucket:
        twin = _Bucket(self.at)
        twin.records, twin.bytes = self.records, self.bytes
        return twin

    def take(self, size: int, now: float) -> bool:
        elapsed = max(now - self.at, 0.0)
        self.at = now
        self.records = min(
            SHARD_RECORDS_PER_SECOND, self.records + elapsed * SHARD_RECORDS_PER_SECOND
        )
        self.bytes = min(SHARD_BYTES_PER_SECOND, self.bytes + elapsed * SHARD_BYTES_PER_SECOND)
        if self.records < 1 or self.bytes < size:
            return False
        self.records -= 1
        self.bytes -= size
        return True


@dataclass(slots=True)  # not frozen: made for every record, and a frozen one's __init__ is slow
class _Put:
    index: int  # in the request
    partition_key: str
    data: bytes
    hash_key: int


# -- the store ----------------------------------------------------------------


class StreamStore(Store):
    """The streams of one state database. ``await StreamStore.open(path)``,
    then ``close()`` (or ``async with``)."""

    name = "streams"
    #: 2: the arrival index; 3: consumer leases (stream_leases, stream_members).
    version = 3
    schema = f"{SCHEMA}{ARRIVAL_INDEX};{LEASES}"

    def __init__(self, clock: Clock | None = None) -> None:
        super().__init__(clock)
        self._maps: dict[str, _ShardMap] = {}
        self._buckets: dict[tuple[int, int], _Bucket] = {}
        self._appended = asyncio.Event()  # set by each put: wakes readers of this store

    def retention(self, stream_name: str) -> Upkeep:
        """The upkeep of a stream that a pipeline runs: records past its
        retention period are deleted once a minute."""
        return Upkeep(
            TRIM_INTERVAL,
            functools.partial(self.trim, stream_name),
            f"stream {stream_name}: records past retention",
        )

    def stream(self, name: str) -> Stream:
        """A handle on stream ``name``: ``put``, ``consume``..."""
        return Stream(self, check_stream_name(name))

    async def migrate(self, connection: Queries, found: int) -> None:
        """Version 1 had no arrival index. The schema, run at every open, has
        already made it (IF NOT EXISTS); the step stays written down here,
        where a version's change belongs, and costs nothing when done.
        Version 3's lease tables are new tables: the schema has made them."""
        if found < 2:
            await connection.execute(ARRIVAL_INDEX)

    # -- plumbing -----------------------------------------------------------

    async def _info(self, name: str, db: Queries | None = None) -> StreamInfo:
        sql = f"SELECT {_STREAM_COLUMNS} FROM streams WHERE name = ?"
        rows = await (db or self).rows(sql, (name,))
        if not rows:
            raise StreamError("ResourceNotFoundException", f"stream {name} not found")
        return StreamInfo.from_row(rows[0])

    async def _shards(self, stream: int, db: Queries | None = None) -> list[Shard]:
        sql = f"SELECT {_SHARD_COLUMNS} FROM stream_shards WHERE stream = ? ORDER BY shard"
        rows = await (db or self).rows(sql, (stream,))
        return [Shard.from_row(row) for row in rows]

    async def _stream_and_shards(
        self, name: str, db: Queries | None = None
    ) -> tuple[StreamInfo, list[Shard]]:
        """``_info`` and ``_shards`` in one statement (one trip to the
        database, where a reader's every batch went twice), read from one
        snapshot: the shards are the stream's as its settings say."""
        rows = await (db or self).rows(_STREAM_AND_SHARDS, (name,))
        if not rows:
            raise StreamError("ResourceNotFoundException", f"stream {name} not found")
        width = _STREAM_WIDTH
        info = StreamInfo.from_row(rows[0][:width])
        # A stream without shards (none is left open only in a broken
        # database) has one row, its shard columns NULL.
        shards = [Shard.from_row(row[width:]) for row in rows if row[width] is not None]
        return info, shards

    async def _shard(self, stream: StreamInfo, index: int, db: Queries | None = None) -> Shard:
        return _find_shard(stream, await self._shards(stream.id, db), index)

    # -- streams ------------------------------------------------------------

    async def create_stream(
        self,
        name: str,
        shard_count: int = 1,
        *,
        retention_hours: int | None = None,
        max_record_size: int | None = None,
        write_limits: bool | None = None,
        update: bool = False,
    ) -> dict[str, Any]:
        """Create a stream of ``shard_count`` shards splitting the hash key space
        evenly (settings not given take their defaults: 24 hours, 1 MiB, no
        write limits). ``update``: if it exists, apply the settings given (not
        the shard count: reshard with split and merge) rather than refuse with
        ResourceInUseException; those not given stay as they are."""
        check_stream_name(name)
        if isinstance(shard_count, bool) or not isinstance(shard_count, int):
            raise StreamError("InvalidArgumentException", f"shard count {shard_count!r}: a number")
        if not 1 <= shard_count <= MAX_SHARDS:
            raise StreamError(
                "InvalidArgumentException",
                f"shard count must be 1 to {MAX_SHARDS}, not {shard_count}",
            )
        given = {
            "retention_hours": None
            if retention_hours is None
            else check_retention(retention_hours),
            "max_record_size": None
            if max_record_size is None
            else check_record_size(max_record_size),
            "write_limits": None if write_limits is None else int(bool(write_limits)),
        }
        now = self.clock.time()
        async with self.transaction() as db:
            found = await self._lock_stream(db, name)
            if not found:
                # Another runner may be creating it at this moment (PostgreSQL:
                # no database-wide write lock): the name's uniqueness decides.
                stream = await db.scalar(
                    "INSERT INTO streams (name, created, retention_hours, max_record_size,"
                    " write_limits, next_shard, last_seq, last_arrival, version)"
                    " VALUES (?, ?, ?, ?, ?, ?, 0, 0, 0) ON CONFLICT (name) DO NOTHING"
                    " RETURNING id",
                    (
                        name,
                        now,
                        retention_hours or MIN_RETENTION_HOURS,
                        max_record_size or DEFAULT_RECORD_SIZE,
                        int(bool(write_limits)),
                        shard_count,
                    ),
                )
                if stream is None:
                    found = await self._lock_stream(db, name)
                else:
                    await db.executemany(
                        "INSERT INTO stream_shards (stream, shard, start_hash, end_hash, created,"
                        " first_seq) VALUES (?, ?, ?, ?, ?, 1)",
                        [
                            (stream, index, _hash_text(start), _hash_text(end), now)
                            for index, (start, end) in enumerate(even_ranges(shard_count))
                        ],
                    )
            if found:
                if not update:
                    raise StreamError("ResourceInUseException", f"stream {name} already exists")
                changes = {key: value for key, value in given.items() if value is not None}
                await db.execute(
                    "UPDATE streams SET "
                    + "".join(f"{key} = ?, " for key in changes)
                    + "version = version + 1 WHERE id = ?",
                    (*changes.values(), found[0][0]),
                )
        self._maps.pop(name, None)
        return await self.describe_stream(name)

    async def _lock_stream(self, db: Queries, name: str) -> list[Any]:
        """The stream's id row, locked until the transaction ends: the
        transactions that change a stream's shards or settings take turns
        (SQLite's write lock does that for the whole database; on PostgreSQL
        the row lock does, and a put's UPDATE of the row waits for it too)."""
        return await db.rows(
            f"SELECT id FROM streams WHERE name = ?{self.dialect.for_update}", (name,)
        )

    async def delete_stream(self, name: str) -> None:
        async with self.transaction() as db:
            found = await self._lock_stream(db, name)
            if not found:
                raise StreamError("ResourceNotFoundException", f"stream {name} not found")
            for table in (
                "stream_records",
                "stream_shards",
                "stream_checkpoints",
                "stream_leases",
                "stream_members",
            ):
                await db.execute(f"DELETE FROM {table} WHERE stream = ?", (found[0][0],))
            await db.execute("DELETE FROM streams WHERE id = ?", (found[0][0],))
        self._maps.pop(name, None)

    async def list_streams(self) -> list[str]:
        return [row[0] for row in await self.rows("SELECT name FROM streams ORDER BY name")]

    async def describe_stream(self, name: str) -> dict[str, Any]:
        """DescribeStream's StreamDescription: every shard still listed (open
        ones, and closed ones until retention ends), oldest first."""
        info, shards = await self._stream_and_shards(name)
        return {
            "StreamName": info.name,
            "StreamARN": f"arn:aws:kinesis:{DEFAULT_REGION}:{DEFAULT_ACCOUNT}:stream/{info.name}",
            "StreamStatus": "ACTIVE",
            "StreamModeDetails": {
                "StreamMode": "PROVISIONED" if info.write_limits else "ON_DEMAND"
            },
            "Shards": [shard.to_json() for shard in shards],
            "HasMoreShards": False,
            "RetentionPeriodHours": info.retention_hours,
            "StreamCreationTimestamp": info.created,
            "MaxRecordSizeInBytes": info.max_record_size,
            "OpenShardCount": sum(1 for shard in shards if shard.closed is None),
        }

    async def list_shards(self, name: str) -> list[dict[str, Any]]:
        _, shards = await self._stream_and_shards(name)
        return [shard.to_json() for shard in shards]

    async def set_retention(self, name: str, hours: int) -> None:
        """IncreaseStreamRetentionPeriod and DecreaseStreamRetentionPeriod in one."""
        check_retention(hours)
        info = await self._info(name)
        await self.rows("UPDATE streams SET retention_hours = ? WHERE id = ?", (hours, info.id))
        self._maps.pop(name, None)

    # -- writing ------------------------------------------------------------

    async def put_record(
        self,
        name: str,
        data: bytes | str,
        partition_key: str,
        *,
        explicit_hash_key: str | None = None,
    ) -> dict[str, Any]:
        """PutRecord: {"ShardId", "SequenceNumber"}; a refusal raises StreamError."""
        entry: dict[str, Any] = {"Data": data, "PartitionKey": partition_key}
        if explicit_hash_key is not None:
            entry["ExplicitHashKey"] = explicit_hash_key
        [result] = (await self.put_records(name, [entry]))["Records"]
        if "ErrorCode" in result:
            raise StreamError(result["ErrorCode"], result["ErrorMessage"])
        return dict(result)

    async def put_records(self, name: str, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """PutRecords: each entry {"Data", "PartitionKey", "ExplicitHashKey"?}.

        Up to 500 entries and 5 MiB in all, or the whole request is refused. An
        entry that is invalid, too big or (with write limits on) over its
        shard's allowance fails alone, with its ErrorCode and ErrorMessage in
        its place in "Records"; the rest are written in one transaction.
        """
        if not isinstance(records, list | tuple):
            raise StreamError("InvalidArgumentException", "records must be a list of entries")
        if not 1 <= len(records) <= MAX_PUT_RECORDS:
            raise StreamError(
                "InvalidArgumentException",
                f"a PutRecords request has 1 to {MAX_PUT_RECORDS} records, not {len(records)}",
            )
        results: list[dict[str, Any]] = [{} for _ in records]
        puts: list[_Put] = []
        total = 0
        shard_map = self._maps.get(name)
        if shard_map is None:
            shard_map = await self._load_map(name, self)
        info = shard_map.info
        for index, entry in enumerate(records):
            try:
                put = self._checked(index, entry, info.max_record_size)
            except StreamError as exc:
                results[index] = {"ErrorCode": exc.code, "ErrorMessage": exc.message}
                continue
            total += len(put.data) + len(put.partition_key.encode())
            puts.append(put)
        if total > MAX_PUT_REQUEST_BYTES:
            raise StreamError(
                "InvalidArgumentException",
                f"a PutRecords request holds at most {MAX_PUT_REQUEST_BYTES} bytes of data and"
                f" partition keys, not {total}",
            )
        if puts:
            await self._write(name, shard_map, puts, results)
        failed = sum(1 for result in results if "ErrorCode" in result)
        if puts and failed < len(results):
            self._appended.set()
            self._appended = asyncio.Event()
        return {"FailedRecordCount": failed, "Records": results}

    @staticmethod
    def _checked(index: int, entry: Any, limit: int) -> _Put:
        def refuse(message: str) -> StreamError:
            return StreamError("InvalidArgumentException", f"record {index}: {message}")

        if type(entry) is not dict and not isinstance(entry, Mapping):
            raise refuse("must be a mapping with Data and PartitionKey")
        key = entry.get("PartitionKey")
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_PARTITION_KEY:
            raise refuse(f"PartitionKey must be a string of 1 to {MAX_PARTITION_KEY} characters")
        data = entry.get("Data")
        if type(data) is bytes:
            pass
        elif isinstance(data, str):
            data = data.encode()
        elif isinstance(data, bytearray | memoryview):
            data = bytes(data)
        if not isinstance(data, bytes):
            raise refuse("Data must be bytes or a string")
        size = len(data) + len(key.encode())
        if size > limit:
            raise refuse(
                f"{size} bytes of data and partition key is over the stream's limit of {limit}"
            )
        explicit = entry.get("ExplicitHashKey")
        if explicit is None:
            hash_key = partition_hash(key)
        else:
            try:
                hash_key = int(explicit) if isinstance(explicit, str) and explicit.isdigit() else -1
            except ValueError:
                hash_key = -1
            if not 0 <= hash_key < HASH_SPACE:
                raise refuse(
                    f"ExplicitHashKey must be a decimal from 0 to 2^128-1, not {explicit!r}"
                )
        return _Put(index, key, data, hash_key)

    async def _write(
        self, name: str, shard_map: _ShardMap, puts: list[_Put], results: list[dict[str, Any]]
    ) -> None:
        """Write ``puts`` in one trip to the database (one transaction), routed
        by the shard map this store keeps. The plan's first statement takes
        the sequence numbers only if the stream's ``version`` is still the
        map's (no reshard, no change of settings, the same stream), and the
        inserts read them from it under the same condition: with a stale map
        the plan writes nothing, and the map is read again and the plan made
        again (a reshard by this store or another process, a stream deleted:
        ``ResourceNotFoundException``)."""
        while True:
            now = self.clock.time()
            saved = self._saved_buckets(shard_map)
            written = self._route(name, shard_map, puts, results, now)
            stream, version = shard_map.info.id, shard_map.info.version
            if written:
                count = len(written)
                steps = [
                    # Arrival times never go backwards: retention trims a prefix.
                    # (CASE, not SQLite's two-argument max: both engines read it.)
                    Step(
                        "UPDATE streams SET last_seq = last_seq + ?, last_arrival ="
                        " CASE WHEN last_arrival > ? THEN last_arrival ELSE ? END"
                        " WHERE id = ? AND version = ? RETURNING last_seq",
                        (count, now, now, stream, version),
                    ),
                    # Each record's number and the arrival time are the stream
                    # row's as just updated: the k-th of n is last_seq - (n - 1 - k).
                    Step(
                        "INSERT INTO stream_records (stream, shard, seq, partition_key, data,"
                        " arrival) SELECT id, ?, last_seq - ?, ?, ?, last_arrival FROM streams"
                        " WHERE id = ? AND version = ?",
                        [
                            (
                                shard.index,
                                count - 1 - k,
                                put.partition_key,
                                put.data,
                                stream,
                                version,
                            )
                            for k, (put, shard) in enumerate(written)
                        ],
                        many=True,
                    ),
                ]
            else:  # every record refused by its shard's limit: the map must still be current
                steps = [
                    Step(
                        "SELECT last_seq FROM streams WHERE id = ? AND version = ?",
                        (stream, version),
                    )
                ]
            current = (await self.batch(steps))[0].rows
            if current:
                break
            self._buckets.update(saved)  # nothing was written: the allowances taken are back
            shard_map = await self._load_map(name, self)
        first = current[0][0] - len(written) + 1
        for seq, (put, shard) in enumerate(written, first):
            results[put.index] = {
                "SequenceNumber": sequence_number(seq, shard.index),
                "ShardId": shard.id,
            }

    def _route(
        self,
        name: str,
        shard_map: _ShardMap,
        puts: list[_Put],
        results: list[dict[str, Any]],
        now: float,
    ) -> list[tuple[_Put, Shard]]:
        """Each put with the open shard its hash key falls in; those over
        their shard's allowance (write limits on) refused in ``results``."""
        route = shard_map.route
        if not shard_map.info.write_limits:
            return [(put, route(put.hash_key)) for put in puts]
        stream = shard_map.info.id
        written = []
        for put in puts:
            shard = route(put.hash_key)
            if self._allowed(stream, shard.index, put, now):
                written.append((put, shard))
            else:
                results[put.index] = {
                    "ErrorCode": "ProvisionedThroughputExceededException",
                    "ErrorMessage": f"Rate exceeded for shard {shard.id} in stream {name}",
                }
        return written

    def _saved_buckets(self, shard_map: _ShardMap) -> dict[tuple[int, int], _Bucket]:
        """Copies of the allowances of the map's shards, as they are now."""
        if not shard_map.info.write_limits:
            return {}
        stream = shard_map.info.id
        saved = {}
        for shard in shard_map.shards:
            key = (stream, shard.index)
            bucket = self._buckets.get(key)
            saved[key] = bucket.copy() if bucket is not None else _Bucket(self.clock.time())
        return saved

    async def _load_map(self, name: str, db: Queries) -> _ShardMap:
        info = await self._info(name, db)
        shards = sorted(
            (s for s in await self._shards(info.id, db) if s.closed is None),
            key=lambda s: s.start_hash,
        )
        shard_map = _ShardMap(info, [s.start_hash for s in shards], shards)
        self._maps[name] = shard_map
        return shard_map

    def _allowed(self, stream: int, shard: int, put: _Put, now: float) -> bool:
        bucket = self._buckets.get((stream, shard))
        if bucket is None:
            bucket = self._buckets[(stream, shard)] = _Bucket(now)
        return bucket.take(len(put.data) + len(put.partition_key.encode()), now)

    # -- reading ------------------------------------------------------------

    async def get_shard_iterator(
        self,
        name: str,
        shard: str,
        iterator_type: str,
        *,
        sequence_number: str | None = None,
        timestamp: float | None = None,
    ) -> str:
        """GetShardIterator: TRIM_HORIZON, LATEST, AT_SEQUENCE_NUMBER,
        AFTER_SEQUENCE_NUMBER (with ``sequence_number``) or AT_TIMESTAMP (with
        ``timestamp``, seconds since the epoch). Valid for 5 minutes."""
        info, shards = await self._stream_and_shards(name)
        found = _find_shard(info, shards, shard_index(shard))
        after = await self._position(info, found, iterator_type, sequence_number, timestamp)
        return self._iterator(info, found.index, after)

    async def _position(
        self,
        info: StreamInfo,
        shard: Shard,
        iterator_type: str,
        sequence: str | None,
        timestamp: float | None,
    ) -> int:
        """The counter value after which reading starts."""
        if iterator_type == "TRIM_HORIZON":
            return 0
        if iterator_type == "LATEST":
            return await self._latest(info, shard)
        if iterator_type in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
            if sequence is None:
                raise StreamError(
                    "InvalidArgumentException", f"{iterator_type} needs a StartingSequenceNumber"
                )
            seq, index = parse_sequence_number(sequence)
            if index != shard.index:
                raise StreamError(
                    "InvalidArgumentException",
                    f"sequence number {sequence} is of {shard_id(index)}, not {shard.id}",
                )
            return seq - 1 if iterator_type == "AT_SEQUENCE_NUMBER" else seq
        if iterator_type == "AT_TIMESTAMP":
            if timestamp is None:
                raise StreamError("InvalidArgumentException", "AT_TIMESTAMP needs a Timestamp")
            return await self._at_time(info, shard, timestamp)
        raise StreamError(
            "InvalidArgumentException",
            f"shard iterator type {iterator_type!r}: TRIM_HORIZON, LATEST, AT_SEQUENCE_NUMBER,"
            " AFTER_SEQUENCE_NUMBER or AT_TIMESTAMP",
        )

    async def _latest(self, info: StreamInfo, shard: Shard) -> int:
        return shard.last_seq if shard.last_seq is not None else await self._last_seq(info)

    async def _last_seq(self, info: StreamInfo) -> int:
        """The stream's counter: the last sequence number given (0: none yet)."""
        rows = await self.rows("SELECT last_seq FROM streams WHERE id = ?", (info.id,))
        return int(rows[0][0]) if rows else 0

    async def _at_time(self, info: StreamInfo, shard: Shard, timestamp: float) -> int:
        rows = await self.rows(FIRST_AT, (info.id, shard.index, timestamp))
        return rows[0][0] - 1 if rows else await self._latest(info, shard)

    def _iterator(self, info: StreamInfo, shard: int, after: int) -> str:
        token = orjson.dumps([info.id, info.name, shard, after, self.clock.time()])
        return base64.urlsafe_b64encode(token).decode()

    def _parse_iterator(self, iterator: Any) -> tuple[int, str, int, int, float]:
        try:
            stream, name, shard, after, issued = orjson.loads(base64.urlsafe_b64decode(iterator))
            return int(stream), str(name), int(shard), int(after), float(issued)
        except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError):
            raise StreamError(
                "InvalidArgumentException", "not a shard iterator (from GetShardIterator)"
            ) from None

    async def get_records(self, iterator: str, limit: int = MAX_GET_RECORDS) -> dict[str, Any]:
        """GetRecords: {"Records", "NextShardIterator", "MillisBehindLatest",
        "ChildShards"?}. NextShardIterator is None once a closed shard has been
        read to its end (ChildShards then names its children)."""
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= MAX_GET_RECORDS
        ):
            raise StreamError(
                "InvalidArgumentException", f"limit must be 1 to {MAX_GET_RECORDS}, not {limit!r}"
            )
        stream, name, index, after, issued = self._parse_iterator(iterator)
        now = self.clock.time()
        if now - issued > ITERATOR_LIFETIME:
            raise StreamError(
                "ExpiredIteratorException",
                f"the iterator was issued {now - issued:.0f} s ago; iterators last"
                f" {ITERATOR_LIFETIME:.0f} s: get a new one with GetShardIterator",
            )
        info, shards = await self._stream_and_shards(name)
        if info.id != stream:
            raise StreamError("ResourceNotFoundException", f"stream {name} was deleted")
        shard = _find_shard(info, shards, index)
        read = await self._read(info, shard, after, limit)
        answer: dict[str, Any] = {
            "Records": [record.to_json() for record in read.records],
            "NextShardIterator": None if read.ended else self._iterator(info, index, read.after),
            "MillisBehindLatest": read.behind_ms,
        }
        if read.ended:
            answer["ChildShards"] = [
                {"ShardId": child.id, "ParentShards": [shard_id(p) for p in child.parents],
                 "HashKeyRange": child.to_json()["HashKeyRange"]}
                for child in shards
                if index in child.parents
            ]  # fmt: skip
        return answer

    async def _read(self, info: StreamInfo, shard: Shard, after: int, limit: int) -> _Read:
        cutoff = self.clock.time() - info.retention
        rows = await self.rows(
            "SELECT seq, partition_key, data, arrival FROM stream_records"
            " WHERE stream = ? AND shard = ? AND seq > ? AND arrival >= ? ORDER BY seq LIMIT ?",
            (info.id, shard.index, after, cutoff, limit + 1),
        )
        records: list[Record] = []
        seqs: list[int] = []
        size = 0
        name, shard_name, suffix = info.name, shard.id, f"{shard.index:06d}"
        for seq, key, data, arrival in rows[:limit]:
            size += len(data) + len(key)
            if records and size > MAX_GET_BYTES:
                break
            records.append(Record(name, shard_name, f"{seq:050d}{suffix}", key, data, arrival))
            seqs.append(seq)
        position = seqs[-1] if seqs else after
        more = len(rows) > len(records)
        behind = 0
        if more:
            behind = max(int((self.clock.time() - rows[len(records)][3]) * 1000), 0)
        ended = shard.last_seq is not None and not more and position >= 0
        return _Read(records, seqs, position, behind, ended)

    # -- resharding ---------------------------------------------------------

    async def split_shard(
        self, name: str, shard: str, new_starting_hash_key: str | int
    ) -> list[str]:
        """SplitShard: close ``shard`` and give its range to two children, the
        second starting at ``new_starting_hash_key``. Returns the children's ids."""
        index = shard_index(shard)
        text = str(new_starting_hash_key)
        split_at = int(text) if text.isascii() and text.isdigit() else -1
        async with self.transaction() as db:
            info, parent, next_shard, last_seq = await self._open_shard(name, index, db)
            if not parent.start_hash < split_at <= parent.end_hash:
                raise StreamError(
                    "InvalidArgumentException",
                    f"NewStartingHashKey {new_starting_hash_key!r} must be a decimal above"
                    f" {parent.start_hash} and at most {parent.end_hash}"
                    f" (the range of {parent.id})",
                )
            now = self.clock.time()
            children = [
                (next_shard, parent.start_hash, split_at - 1),
                (next_shard + 1, split_at, parent.end_hash),
            ]
            await self._reshard(db, info, [parent], children, (index, None), last_seq, now)
        self._maps.pop(name, None)
        return [shard_id(child[0]) for child in children]

    async def merge_shards(self, name: str, shard: str, adjacent: str) -> str:
        """MergeShards: close two shards with adjacent ranges and give both
        ranges to one child. Returns the child's id."""
        first, second = shard_index(shard), shard_index(adjacent)
        if first == second:
            raise StreamError("InvalidArgumentException", f"cannot merge {shard} with itself")
        async with self.transaction() as db:
            info, one, next_shard, last_seq = await self._open_shard(name, first, db)
            _, other, _, _ = await self._open_shard(name, second, db)
            low, high = sorted((one, other), key=lambda s: s.start_hash)
            if low.end_hash + 1 != high.start_hash:
                raise StreamError(
                    "InvalidArgumentException",
                    f"{one.id} and {other.id} are not adjacent: their hash key ranges must meet",
                )
            now = self.clock.time()
            child = (next_shard, low.start_hash, high.end_hash)
            await self._reshard(db, info, [one, other], [child], (first, second), last_seq, now)
        self._maps.pop(name, None)
        return shard_id(next_shard)

    async def _open_shard(
        self, name: str, index: int, db: Queries
    ) -> tuple[StreamInfo, Shard, int, int]:
        await self._lock_stream(db, name)  # two runners resharding at once take turns
        info = await self._info(name, db)
        shard = await self._shard(info, index, db)
        if shard.closed is not None:
            raise StreamError(
                "ResourceInUseException", f"{shard.id} of stream {name} is closed (resharded)"
            )
        rows = await db.rows("SELECT next_shard, last_seq FROM streams WHERE id = ?", (info.id,))
        return info, shard, rows[0][0], rows[0][1]

    async def _reshard(
        self,
        db: Queries,
        info: StreamInfo,
        parents: list[Shard],
        children: list[tuple[int, int, int]],
        lineage: tuple[int, int | None],
        last_seq: int,
        now: float,
    ) -> None:
        for parent in parents:
            await db.execute(
                "UPDATE stream_shards SET closed = ?, last_seq = ? WHERE stream = ? AND shard = ?",
                (now, last_seq, info.id, parent.index),
            )
        await db.executemany(
            "INSERT INTO stream_shards (stream, shard, start_hash, end_hash, parent, adjacent,"
            " created, first_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (info.id, index, _hash_text(start), _hash_text(end), *lineage, now, last_seq + 1)
                for index, start, end in children
            ],
        )
        await db.execute(
            "UPDATE streams SET next_shard = next_shard + ?, version = version + 1 WHERE id = ?",
            (len(children), info.id),
        )

    # -- retention ----------------------------------------------------------

    async def trim(self, name: str) -> int:
        """Delete records older than the retention period, and closed shards
        whose records have all gone; how many records were deleted."""
        info = await self._info(name)
        cutoff = self.clock.time() - info.retention
        deleted = 0
        for shard in await self._shards(info.id):
            async with self.transaction() as db:
                # Arrival times only grow along a stream: the expired are a prefix.
                first_kept = await db.rows(FIRST_AT, (info.id, shard.index, cutoff))
                bound = first_kept[0][0] if first_kept else None
                deleted += await db.execute(
                    "DELETE FROM stream_records WHERE stream = ? AND shard = ? AND seq < ?",
                    (info.id, shard.index, bound if bound is not None else 2**62),
                )
                if shard.closed is not None and shard.closed < cutoff and bound is None:
                    await db.execute(
                        "DELETE FROM stream_shards WHERE stream = ? AND shard = ?",
                        (info.id, shard.index),
                    )
        return deleted

    # -- consumers ----------------------------------------------------------

    def consume(
        self,
        name: str,
        consumer: str | None,
        *,
        start: str | int | float = "trim_horizon",
        batch: int = 1000,
        poll: float = 0.2,
        follow: bool = True,
        lease: float = LEASE_SECONDS,
    ) -> StreamConsumer:
        """Every record of the stream, in order per shard (and so per partition
        key, also across a reshard: a child is read once its parents are read
        to their end). See ``StreamConsumer``."""
        check_stream_name(name)
        return StreamConsumer(self, name, consumer, start, batch, poll, follow, lease)

    async def checkpoints(self, name: str, consumer: str) -> dict[str, dict[str, Any]]:
        """Where ``consumer`` stands in each shard: {shard id: {"SequenceNumber", "Finished"}}."""
        info = await self._info(name)
        rows = await self.rows(
            "SELECT shard, seq, finished FROM stream_checkpoints WHERE stream = ? AND consumer = ?"
            " ORDER BY shard",
            (info.id, consumer),
        )
        return {
            shard_id(shard): {"SequenceNumber": sequence_number(seq, shard), "Finished": bool(done)}
            for shard, seq, done in rows
        }

    async def consumers(self, name: str) -> list[str]:
        info = await self._info(name)
        rows = await self.rows(
            "SELECT DISTINCT consumer FROM stream_checkpoints WHERE stream = ? ORDER BY consumer",
            (info.id,),
        )
        return [row[0] for row in rows]

    async def _load_checkpoints(self, stream: int, consumer: str) -> dict[int, tuple[int, bool]]:
        rows = await self.rows(
            "SELECT shard, seq, finished FROM stream_checkpoints WHERE stream = ? AND consumer = ?",
            (stream, consumer),
        )
        return {shard: (seq, bool(done)) for shard, seq, done in rows}

    async def _save_checkpoints(
        self,
        stream: int,
        consumer: str,
        positions: Mapping[int, tuple[int, bool]],
        owner: str | None = None,
    ) -> set[int]:
        """Save ``positions``; with ``owner``, only those of the shards whose
        lease it holds (one whose lease another instance has taken is not
        this one's to move). The shards saved.

        One trip to the database, one transaction (a reader saves after
        every batch: BEGIN, the leases' SELECT, the upsert and COMMIT as
        trips of their own were half of its trips). The leases held are
        read first (and locked, on PostgreSQL); each upsert then writes
        only where its shard's lease is the owner's, which in that
        transaction is what the first statement returned."""
        now = self.clock.time()
        if owner is None:
            rows = [
                (stream, consumer, shard, seq, int(done), now)
                for shard, (seq, done) in positions.items()
            ]
            await self.batch([Step(_SAVE_CHECKPOINT, rows, many=True)])
            return set(positions)
        leased = [
            (seq, int(done), now, stream, consumer, shard, owner)
            for shard, (seq, done) in positions.items()
        ]
        held, _ = await self.batch(
            [
                Step(
                    "SELECT shard FROM stream_leases WHERE stream = ? AND consumer = ?"
                    f" AND owner = ?{self.dialect.for_update}",
                    (stream, consumer, owner),
                ),
                Step(_SAVE_LEASED_CHECKPOINT, leased, many=True),
            ]
        )
        mine = {row[0] for row in held.rows}
        return {shard for shard in positions if shard in mine}

    async def _lease(
        self,
        stream: int,
        consumer: str,
        owner: str,
        duration: float,
        readable: Callable[[dict[int, tuple[int, bool]]], list[int]],
    ) -> tuple[set[int], dict[int, tuple[int, bool]]]:
        """One turn of ``owner``'s leases, in one transaction: it says it is
        alive, renews the leases it holds, gives up those above its share
        (the shards ``readable`` lists, given every checkpoint saved, divided
        by the instances alive) or no longer readable, and takes free or
        expired ones up to its share. The shards it holds now, and the
        checkpoints. Two instances racing for a shard: the lease row's
        conflict decides (the loser's upsert finds it unexpired)."""
        now = self.clock.time()
        until = now + duration
        key = (stream, consumer)
        async with self.transaction() as db:
            await db.execute(
                self.dialect.upsert(
                    "stream_members",
                    ("stream", "consumer", "owner", "expires"),
                    ("stream", "consumer", "owner"),
                ),
                (*key, owner, until),
            )
            await db.execute(
                "DELETE FROM stream_members WHERE stream = ? AND consumer = ? AND expires <= ?",
                (*key, now),
            )
            alive = await db.scalar(
                "SELECT count(*) FROM stream_members WHERE stream = ? AND consumer = ?", key
            )
            saved = {
                shard: (seq, bool(done))
                for shard, seq, done in await db.rows(
                    "SELECT shard, seq, finished FROM stream_checkpoints"
                    " WHERE stream = ? AND consumer = ?",
                    key,
                )
            }
            wanted = readable(saved)
            share = -(-len(wanted) // max(int(alive), 1))  # ceiling
            leases = await db.rows(
                "SELECT shard, owner, expires FROM stream_leases WHERE stream = ? AND consumer = ?",
                key,
            )
            held = sorted(shard for shard, holder, _ in leases if holder == owner)
            keep = [shard for shard in held if shard in wanted][:share]
            dropped = [shard for shard in held if shard not in keep]
            if dropped:
                await db.execute(
                    "DELETE FROM stream_leases WHERE stream = ? AND consumer = ? AND owner = ?"
                    f" AND shard IN ({self.dialect.marks(len(dropped))})",
                    (*key, owner, *dropped),
                )
            if keep:
                await db.execute(
                    "UPDATE stream_leases SET expires = ? WHERE stream = ? AND consumer = ?"
                    f" AND owner = ? AND shard IN ({self.dialect.marks(len(keep))})",
                    (until, *key, owner, *keep),
                )
            taken = {shard for shard, holder, expires in leases if expires > now}
            for shard in wanted:
                if len(keep) >= share:
                    break
                if shard in taken:
                    continue
                got = await db.rows(
                    "INSERT INTO stream_leases (stream, consumer, shard, owner, expires)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (stream, consumer, shard) DO UPDATE"
                    " SET owner = excluded.owner, expires = excluded.expires"
                    " WHERE stream_leases.expires <= ? RETURNING shard",
                    (*key, shard, owner, until, now),
                )
                if got:
                    keep.append(shard)
        return set(keep), saved

    async def _release(self, stream: int, consumer: str, owner: str) -> None:
        """``owner`` stops: its leases are free at once for the others."""
        async with self.transaction() as db:
            for table in ("stream_leases", "stream_members"):
                await db.execute(
                    f"DELETE FROM {table} WHERE stream = ? AND consumer = ? AND owner = ?",
                    (stream, consumer, owner),
                )

    async def _wait_for_records(self, timeout: float) -> None:
        """Until a put on this store, or ``timeout`` (another process may write)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._appended.wait(), timeout)


@dataclass(frozen=True, slots=True)
class _Read:
    records: list[Record]
    seqs: list[int]  # each record's counter value (no need to parse them back)
    after: int  # the position after the last record returned
    behind_ms: int
    ended: bool  # a closed shard read to its end


class StreamConsumer:
    """Reads every shard of a stream, parents before children, as an async
    iterator of ``Record``; a named consumer keeps a checkpoint per shard.

    ``start`` applies where a consumer has no checkpoint: "trim_horizon" (the
    oldest record kept), "latest" (what is written from now on), a sequence
    number (that record and every later one, in every shard: sequence numbers
    grow along the whole stream) or a time in seconds since the epoch.

    A record counts as processed once the iterator is asked for the next one.
    Checkpoints are saved after each batch, when the iterator is closed
    (``async with`` or ``aclose()``) and by ``checkpoint()``: a consumer that
    stops abruptly reads at most the last batch again (at least once).
    ``follow=False`` stops when every shard has been read to its end for now.

    A named consumer reads a shard only while it holds the shard's lease
    (``stream_leases``): instances of one consumer name (in other runners on
    one PostgreSQL database, or in one process) each take their share of the
    shards and never read a shard at the same time. Each read renews its
    leases; a lease not renewed for ``lease`` seconds (its holder died, or
    took that long over one batch) is taken over, from the last checkpoint
    (at least once). Closing gives the leases up at once. A checkpoint is
    saved only for shards whose lease this instance still holds.
    """

    def __init__(
        self,
        store: StreamStore,
        name: str,
        consumer: str | None,
        start: str | int | float,
        batch: int,
        poll: float,
        follow: bool,
        lease: float = LEASE_SECONDS,
    ) -> None:
        if not 1 <= batch <= MAX_GET_RECORDS:
            raise StreamError("InvalidArgumentException", f"batch must be 1 to {MAX_GET_RECORDS}")
        self.store = store
        self.name = name
        self.consumer = consumer
        self.start = start
        self.batch = batch
        self.poll = poll
        self.follow = follow
        self._info: StreamInfo | None = None
        self._positions: dict[int, tuple[int, bool]] = {}  # shard -> (after, finished)
        self._saved: dict[int, tuple[int, bool]] = {}
        self._pending: collections.deque[Record] = collections.deque()
        self._pending_seqs: collections.deque[int] = collections.deque()
        self._pending_shard = 0
        self._current: tuple[int, int] | None = None  # (shard, seq) of the record handed out
        self._shard_done: int | None = None  # the shard whose batch ended its reading
        self._closed = False
        self._turn = 0  # where the next look for records starts: no shard starves
        self.lease = lease
        #: When and at which shards this instance last took its lease turn,
        #: and the batches read since (``_lease_due``).
        self._leased: tuple[float, frozenset[int]] | None = None
        self._fills_since_lease = 0
        #: This instance, in the lease tables (a named consumer only).
        self.owner = uuid.uuid4().hex
        self._held: set[int] = set()  # the shards whose lease it holds

    def __aiter__(self) -> StreamConsumer:
        return self

    async def __aenter__(self) -> StreamConsumer:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, *exc_info: object) -> None:
        # Left by an exception (a cancellation, a failed handler): the record
        # or batch in hand was not processed, and is read again next time.
        await self.aclose(processed=kind is None)

    async def aclose(self, *, processed: bool = True) -> None:
        """Stop, saving the checkpoint; ``processed``: the last record (or
        batch) handed out counts as done."""
        if not self._closed:
            self._closed = True
            if processed:
                self._processed()
            try:
                await self.checkpoint()
            finally:
                if self.consumer is not None and self._info is not None:
                    await self.store._release(self._info.id, self.consumer, self.owner)
                    self._held = set()

    async def checkpoint(self) -> None:
        """Save where this consumer stands (a named consumer only)."""
        if self.consumer is None or self._info is None:
            return
        changed = {
            s: p for s, p in self._positions.items() if s in self._held and self._saved.get(s) != p
        }
        if changed:
            saved = await self.store._save_checkpoints(
                self._info.id, self.consumer, changed, self.owner
            )
            self._saved.update((s, changed[s]) for s in saved)
            self._held &= saved | (self._held - set(changed))  # a lease lost is not held

    async def done(self) -> None:
        """The batch (or record) handed out is processed: its place is saved now,
        not at the next read, so a stop right after it cannot lose it."""
        self._processed()
        await self.checkpoint()

    def _processed(self) -> None:
        if self._current is not None:
            shard, seq = self._current
            self._positions[shard] = (seq, False)
            self._current = None

    async def __anext__(self) -> Record:
        if not await self._refill():
            raise StopAsyncIteration
        self._current = (self._pending_shard, self._pending_seqs.popleft())
        return self._pending.popleft()

    async def next_batch(self) -> list[Record]:
        """The next records of one shard (up to ``batch``), handed out together:
        they count as processed when the next batch is asked for. Empty when
        the consumer stops (closed, or caught up without ``follow``)."""
        if not await self._refill():
            return []
        records = list(self._pending)
        self._current = (self._pending_shard, self._pending_seqs[-1])
        self._pending.clear()
        self._pending_seqs.clear()
        return records

    async def _refill(self) -> bool:
        """Mark what was handed out as processed; read more if none is pending.
        False when there is nothing more to hand out."""
        if self._closed:
            return False
        self._processed()
        while not self._pending:
            if self._shard_done is not None:
                after, _ = self._positions[self._shard_done]
                self._positions[self._shard_done] = (after, True)
                self._shard_done = None
            await self.checkpoint()
            if not await self._fill():
                if not self.follow:
                    await self.aclose()
                    return False
                await self.store._wait_for_records(self.poll)
        return True

    async def _fill(self) -> bool:
        """Read the next batch from the next shard (in turn) that has records;
        False if none has."""
        store = self.store
        info, shards = await store._stream_and_shards(self.name)
        if self._info is None or self._info.id != info.id:
            await self._begin(info)
        self._info = info
        present = {shard.index for shard in shards}
        if self.consumer is not None and self._lease_due(present):
            await self._take_leases(info, shards, present)
            self._leased = (self.store.clock.time(), frozenset(present))
            self._fills_since_lease = 0
        self._fills_since_lease += 1
        progress = True
        while progress:  # a shard read to its end may free its children
            progress = False
            count = len(shards)
            for offset in range(count):
                shard = shards[(self._turn + offset) % count]
                if self.consumer is not None and shard.index not in self._held:
                    continue  # another instance of this consumer reads it
                after, finished = self._position(shard)
                if finished or not all(self._finished(p, present) for p in shard.parents):
                    continue
                read = await store._read(info, shard, after, self.batch)
                if read.records:
                    self._pending = collections.deque(read.records)
                    self._pending_seqs = collections.deque(read.seqs)
                    self._pending_shard = shard.index
                    self._turn = (self._turn + offset + 1) % count
                    if read.ended:
                        self._shard_done = shard.index
                    return True
                if read.ended:
                    self._positions[shard.index] = (after, True)
                    progress = True
        return False

    async def _take_leases(self, info: StreamInfo, shards: list[Shard], present: set[int]) -> None:
        """Renew and take this instance's share of the leases. Where the
        others stand comes from their checkpoints (a parent read to its end
        by another instance frees its children here too); a shard taken
        over starts at its checkpoint, not where this instance last was."""

        def readable(saved: dict[int, tuple[int, bool]]) -> list[int]:
            for shard, position in saved.items():
                if shard not in self._held:
                    self._positions[shard] = self._saved[shard] = position
            return [
                shard.index
                for shard in shards
                if not self._position(shard)[1]
                and all(self._finished(p, present) for p in shard.parents)
            ]

        assert self.consumer is not None
        self._held, _ = await self.store._lease(
            info.id, self.consumer, self.owner, self.lease, readable
        )

    #: A lease turn (a transaction of several statements) at most once per
    #: this many batches, or this share of the lease's duration, whichever
    #: comes first: one per batch cost a fifth of a reader's throughput.
    LEASE_EVERY_FILLS: ClassVar[int] = 16
    LEASE_EVERY_SHARE: ClassVar[float] = 1 / 6

    def _lease_due(self, present: set[int]) -> bool:
        """Whether this batch's read takes a lease turn first: always when it
        holds nothing (it waits for a share) or the shards changed (a
        reshard), else once enough batches or time went by to give up a
        share to a newcomer soon and renew long before the lease expires."""
        if self._leased is None or not self._held:
            return True
        at, shards = self._leased
        return (
            shards != present
            or self._fills_since_lease >= self.LEASE_EVERY_FILLS
            or self.store.clock.time() - at >= self.lease * self.LEASE_EVERY_SHARE
        )

    def _position(self, shard: Shard) -> tuple[int, bool]:
        if shard.index not in self._positions:
            # A shard first seen now (a child of a reshard, or a new start):
            # its children start at the beginning, others where ``start`` says.
            self._positions[shard.index] = (0, False)
        return self._positions[shard.index]

    def _finished(self, parent: int, present: set[int]) -> bool:
        if parent not in present:
            return True  # gone after retention: nothing left to read in it
        return self._positions.get(parent, (0, False))[1]

    async def _begin(self, info: StreamInfo) -> None:
        """Positions from checkpoints, and from ``start`` for shards without one."""
        store = self.store
        self._positions = {}
        self._leased = None  # a stream made again: its leases are new
        if self.consumer is not None:
            self._saved = await store._load_checkpoints(info.id, self.consumer)
            self._positions = dict(self._saved)
        if self.start == "trim_horizon" or self._positions:
            return  # a consumer with checkpoints resumes; new shards start at 0
        if self.start == "latest":
            boundary = await store._last_seq(info) + 1
        elif isinstance(self.start, str):
            boundary = parse_sequence_number(self.start)[0]
        elif isinstance(self.start, int | float) and not isinstance(self.start, bool):
            boundary = await self._first_at(info, float(self.start))
        else:
            raise StreamError(
                "InvalidArgumentException",
                f"start {self.start!r}: trim_horizon, latest, a sequence number or a time",
            )
        for shard in await store._shards(info.id):
            done = shard.last_seq is not None and shard.last_seq < boundary
            self._positions[shard.index] = (boundary - 1, done)

    async def _first_at(self, info: StreamInfo, timestamp: float) -> int:
        rows = await self.store.rows(STREAM_FIRST_AT, (timestamp, info.id))
        if rows and rows[0][0] is not None:
            return int(rows[0][0])
        return await self.store._last_seq(info) + 1


class Stream:
    """A handle on one stream of a ``StreamStore``."""

    def __init__(self, store: StreamStore, name: str) -> None:
        self.store = store
        self.name = name

    async def put(
        self, data: bytes | str, partition_key: str, *, explicit_hash_key: str | None = None
    ) -> dict[str, Any]:
        return await self.store.put_record(
            self.name, data, partition_key, explicit_hash_key=explicit_hash_key
        )

    async def put_records(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return await self.store.put_records(self.name, records)

    async def describe(self) -> dict[str, Any]:
        return await self.store.describe_stream(self.name)

    def consume(self, consumer: str | None = None, **options: Any) -> StreamConsumer:
        """``async for record in stream.consume("name")``: see ``StreamConsumer``."""
        return self.store.consume(self.name, consumer, **options)

    async def records(self, **options: Any) -> list[Record]:
        """Everything readable now, without a checkpoint (tests, small streams)."""
        found = []
        async for record in self.store.consume(self.name, None, follow=False, **options):
            found.append(record)
        return found
