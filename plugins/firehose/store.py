"""``FirehoseStore``: delivery streams and their buffered records, in the state database.

Two tables. ``firehose_streams`` holds each delivery stream's configuration
as AWS's shapes give it (so DescribeDeliveryStream, a restart and the CLI
read the same thing), its version, tags, and the CLI's flush requests.
``firehose_chunks`` holds what is buffered: one row per *chunk*, the records
of one put (or one transformation batch) that go to one partition, their
bytes concatenated in ``data``. A PutRecordBatch of 500 records to ten
partitions is ten rows, one INSERT. ``encoding`` says how ``data`` holds
the records: NULL as they came, ``gzip`` one gzip member (a GZIP
destination's chunks, compressed as they are buffered: ``formats.encode``);
``size`` is the records' length before it. ``partition`` is NULL while a chunk waits
for the Lambda processor (``sizes`` then holds each record's length, packed
as 4-byte integers, so the records can be cut apart again); otherwise it is
the buffer the chunk belongs to (see ``delivery.partition_id``), and
``data`` is what goes into the object as it is (delimiters already added).

A chunk row is written before the put is answered and deleted once the
object holding it is in place (or, for a chunk waiting for the processor,
in the same transaction that writes its transformed chunks): a record
acknowledged is in the database until delivered. Ids are never reused
(AUTOINCREMENT): an object's name is derived from its first chunk's id.

``firehose_owners`` says which runner writes a stream's buffers out: its
name (``""`` for the one runner of a SQLite file) and until when its lease
runs. Every runner buffers puts into the shared chunks; only the owner
writes objects. The owner renews its lease as it goes; when a runner dies
its lease runs out and another claims the stream (store version 2).
Version 3 added ``encoding``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from pipelines.errors import CodedError
from pipelines.store import Queries, Step, Store

#: Chunks written by one INSERT at most.
ROWS_PER_INSERT = 500


class FirehoseError(CodedError):
    """A delivery stream that does not exist, or exists already: ``code`` is AWS's."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """A chunk's bookkeeping, without its bytes (what the buffers keep in memory)."""

    id: int
    partition: str | None
    arrival: float
    count: int
    size: int  # the records' bytes (before any encoding)
    encoding: str | None = None


@dataclass(frozen=True, slots=True)
class NewChunk:
    partition: str | None
    arrival: float
    count: int
    data: bytes  # the records, in ``encoding``
    sizes: bytes | None = None
    encoding: str | None = None
    #: The records' bytes before the encoding (``len(data)`` without one).
    raw_size: int | None = None

    @property
    def size(self) -> int:
        return len(self.data) if self.raw_size is None else self.raw_size

    def bookkeeping(self, chunk_id: int) -> Chunk:
        return Chunk(chunk_id, self.partition, self.arrival, self.count, self.size, self.encoding)


class StoredData(NamedTuple):
    """A chunk's bytes as the store holds them."""

    id: int
    data: bytes
    sizes: bytes | None
    encoding: str | None


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """A delivery stream as stored."""

    name: str
    config: dict[str, Any]  # CreateDeliveryStream's parameters (AWS's shapes)
    settings: dict[str, Any]  # the resource's own settings (none kept today)
    made_by_api: bool
    version: int
    created: float
    updated: float
    tags: dict[str, str]
    flush_requested: float | None
    flushed: float | None


class FirehoseStore(Store):
    name = "firehose"
    #: 2: firehose_owners (a delivery stream's owner and lease, for clusters).
    #: 3: firehose_chunks.encoding (chunks compressed as they are buffered).
    version = 3
    schema = """
    CREATE TABLE IF NOT EXISTS firehose_streams (
        name            TEXT PRIMARY KEY,
        config          TEXT NOT NULL,
        settings        TEXT NOT NULL,
        made_by_api     INTEGER NOT NULL,
        version         INTEGER NOT NULL,
        created         REAL NOT NULL,
        updated         REAL NOT NULL,
        tags            TEXT NOT NULL,
        flush_requested REAL,
        flushed         REAL
    );
    CREATE TABLE IF NOT EXISTS firehose_chunks (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        stream    TEXT NOT NULL,
        partition TEXT,
        arrival   REAL NOT NULL,
        count     INTEGER NOT NULL,
        size      INTEGER NOT NULL,
        sizes     BLOB,
        data      BLOB NOT NULL,
        encoding  TEXT
    );
    CREATE INDEX IF NOT EXISTS firehose_chunks_stream ON firehose_chunks (stream, id);
    CREATE TABLE IF NOT EXISTS firehose_owners (
        stream TEXT PRIMARY KEY,
        owner  TEXT,
        lease  REAL
    );
    """

    _COLUMNS = (
        "name, config, settings, made_by_api, version, created, updated, tags,"
        " flush_requested, flushed"
    )

    async def migrate(self, connection: Queries, found: int) -> None:
        """Version 3 added ``encoding`` (NULL: the records as they came,
        which every chunk of an older version holds)."""
        if found < 3:
            await connection.execute("ALTER TABLE firehose_chunks ADD COLUMN encoding TEXT")

    # -- delivery streams ------------------------------------------------------------

    @staticmethod
    def _record(row: Sequence[Any]) -> StreamRecord:
        return StreamRecord(
            row[0],
            orjson.loads(row[1]),
            orjson.loads(row[2]),
            bool(row[3]),
            int(row[4]),
            float(row[5]),
            float(row[6]),
            orjson.loads(row[7]),
            row[8],
            row[9],
        )

    async def create(
        self,
        name: str,
        config: dict[str, Any],
        settings: dict[str, Any],
        *,
        made_by_api: bool,
        tags: dict[str, str] | None = None,
    ) -> StreamRecord:
        """A new delivery stream (version 1); ``ResourceInUseException`` if it exists."""
        now = self.clock.time()
        changed = await self.execute(
            self.dialect.insert_new(
                "firehose_streams",
                (
                    *("name", "config", "settings", "made_by_api"),
                    *("version", "created", "updated", "tags"),
                ),
            ),
            (
                name,
                orjson.dumps(config).decode(),
                orjson.dumps(settings).decode(),
                int(made_by_api),
                1,
                now,
                now,
                orjson.dumps(tags or {}).decode(),
            ),
        )
        if not changed:
            raise FirehoseError("ResourceInUseException", f"Firehose {name} already exists")
        return await self.get(name)

    async def find(self, name: str) -> StreamRecord | None:
        row = await self.one(
            f"SELECT {self._COLUMNS} FROM firehose_streams WHERE name = ?", (name,)
        )
        return None if row is None else self._record(row)

    async def get(self, name: str) -> StreamRecord:
        found = await self.find(name)
        if found is None:
            raise FirehoseError("ResourceNotFoundException", f"Firehose {name} not found")
        return found

    async def streams(self) -> list[StreamRecord]:
        rows = await self.rows(f"SELECT {self._COLUMNS} FROM firehose_streams ORDER BY name")
        return [self._record(row) for row in rows]

    async def update(
        self,
        name: str,
        config: dict[str, Any],
        settings: dict[str, Any] | None = None,
        *,
        expect_version: int | None = None,
    ) -> StreamRecord:
        """Replace the configuration, raising the version by one; with
        ``expect_version``, only if that is still the version
        (``ConcurrentModificationException`` otherwise, as UpdateDestination)."""
        async with self.transaction() as db:
            row = await db.one(
                f"SELECT version, settings FROM firehose_streams WHERE name = ?"
                f"{self.dialect.for_update}",
                (name,),
            )
            if row is None:
                raise FirehoseError("ResourceNotFoundException", f"Firehose {name} not found")
            if expect_version is not None and row[0] != expect_version:
                raise FirehoseError(
                    "ConcurrentModificationException",
                    f"Cannot update firehose: {name} since the current version id: {row[0]}"
                    f" and specified version id: {expect_version} do not match",
                )
            kept = settings if settings is not None else orjson.loads(row[1])
            await db.execute(
                "UPDATE firehose_streams SET config = ?, settings = ?, version = version + 1,"
                " updated = ? WHERE name = ?",
                (
                    orjson.dumps(config).decode(),
                    orjson.dumps(kept).decode(),
                    self.clock.time(),
                    name,
                ),
            )
        return await self.get(name)

    async def set_tags(self, name: str, tags: dict[str, str]) -> None:
        changed = await self.execute(
            "UPDATE firehose_streams SET tags = ? WHERE name = ?",
            (orjson.dumps(tags).decode(), name),
        )
        if not changed:
            raise FirehoseError("ResourceNotFoundException", f"Firehose {name} not found")

    async def delete(self, name: str) -> None:
        """The stream, its owner and every record it still buffers."""
        done = await self.batch(
            [
                Step("DELETE FROM firehose_chunks WHERE stream = ?", (name,)),
                Step("DELETE FROM firehose_owners WHERE stream = ?", (name,)),
                Step("DELETE FROM firehose_streams WHERE name = ?", (name,)),
            ]
        )
        if not done[2].changed:
            raise FirehoseError("ResourceNotFoundException", f"Firehose {name} not found")

    # -- owners (who writes a stream's objects) -------------------------------------

    async def claim(self, stream: str, owner: str, now: float, until: float) -> bool:
        """Make ``owner`` the stream's owner until ``until`` if it is already,
        or nobody is, or the owner's lease ran out before ``now``; whether
        ``owner`` owns it. Of runners claiming at once, exactly one does."""
        changed = await self.execute(
            "INSERT INTO firehose_owners (stream, owner, lease) VALUES (?, ?, ?)"
            " ON CONFLICT (stream) DO UPDATE SET owner = excluded.owner, lease = excluded.lease"
            " WHERE firehose_owners.owner = excluded.owner OR firehose_owners.owner IS NULL"
            " OR firehose_owners.lease < ?",
            (stream, owner, until, now),
        )
        return changed > 0

    async def release(self, stream: str, owner: str) -> None:
        """Let go of the stream (a graceful stop): another runner claims it at once."""
        await self.execute(
            "UPDATE firehose_owners SET owner = NULL, lease = NULL WHERE stream = ? AND owner = ?",
            (stream, owner),
        )

    async def owner(self, stream: str) -> tuple[str | None, float | None]:
        """The stream's owner and the end of its lease (None, None: nobody)."""
        row = await self.one("SELECT owner, lease FROM firehose_owners WHERE stream = ?", (stream,))
        return (None, None) if row is None else (row[0], row[1])

    # -- flush requests (the CLI's ``flush`` to a running pipeline) ---------------------

    async def request_flush(self, name: str) -> float:
        now = self.clock.time()
        changed = await self.execute(
            "UPDATE firehose_streams SET flush_requested = ? WHERE name = ?", (now, name)
        )
        if not changed:
            raise FirehoseError("ResourceNotFoundException", f"Firehose {name} not found")
        return now

    async def mark_flushed(self, name: str, requested: float) -> None:
        await self.execute(
            "UPDATE firehose_streams SET flushed = ? WHERE name = ?", (requested, name)
        )

    # -- buffered chunks ----------------------------------------------------------------

    _INSERT = (
        "INSERT INTO firehose_chunks"
        " (stream, partition, arrival, count, size, sizes, data, encoding) VALUES "
    )
    _ROW = "(?, ?, ?, ?, ?, ?, ?, ?)"

    @staticmethod
    def _values(stream: str, chunk: NewChunk) -> tuple[Any, ...]:
        return (
            stream,
            chunk.partition,
            chunk.arrival,
            chunk.count,
            chunk.size,
            chunk.sizes,
            chunk.data,
            chunk.encoding,
        )

    def add_chunks(self, stream: str, chunks: Sequence[NewChunk]) -> Any:
        """Write a put's chunks, one statement in a trip shared with the other
        writers of the moment (group commit); an awaitable of their new ids,
        in ``chunks``' order. Handed over at once. The chunks' partitions
        differ (a put's records to one partition are one chunk): the rows
        come back with theirs, whatever order the database answers in."""
        partitions = [chunk.partition for chunk in chunks]
        if len(set(partitions)) != len(partitions):
            raise ValueError(f"chunks of one put to the same partition: {partitions}")
        shared = []
        # A statement's parameters are bounded (SQLite 32,766, PostgreSQL 65,535).
        for start in range(0, len(chunks), ROWS_PER_INSERT):
            parameters: list[Any] = []
            for chunk in chunks[start : start + ROWS_PER_INSERT]:
                parameters += self._values(stream, chunk)
            rows = ", ".join([self._ROW] * (len(parameters) // 8))
            sql = self._INSERT + rows + " RETURNING id, partition"
            shared.append(self.share(sql, parameters))

        async def ids() -> list[int]:
            by_partition: dict[str | None, int] = {}
            for answer in await asyncio.gather(*shared, return_exceptions=True):
                if isinstance(answer, BaseException):
                    raise answer
                by_partition.update((row[1], int(row[0])) for row in answer)
            return [by_partition[partition] for partition in partitions]

        return ids()

    async def chunks(self, stream: str, after: int = 0) -> list[Chunk]:
        """The bookkeeping of the stream's chunks with ids above ``after``, in order."""
        rows = await self.rows(
            "SELECT id, partition, arrival, count, size, encoding FROM firehose_chunks"
            " WHERE stream = ? AND id > ? ORDER BY id",
            (stream, after),
        )
        return [Chunk(int(r[0]), r[1], float(r[2]), int(r[3]), int(r[4]), r[5]) for r in rows]

    def _ids(self, ids: Sequence[int]) -> tuple[str, bytes]:
        column = self.dialect.json_value("k", "integer")
        return (
            f"id IN (SELECT {column} FROM {self.dialect.json_values('k')})",
            orjson.dumps(list(ids)),
        )

    async def chunk_data(self, ids: Sequence[int]) -> list[StoredData]:
        """(id, data, sizes, encoding) of ``ids`` still stored, in id order."""
        where, given = self._ids(ids)
        rows = await self.rows(
            f"SELECT id, data, sizes, encoding FROM firehose_chunks WHERE {where} ORDER BY id",
            (given,),
        )
        return [
            StoredData(int(r[0]), bytes(r[1]), None if r[2] is None else bytes(r[2]), r[3])
            for r in rows
        ]

    async def present(self, ids: Sequence[int]) -> set[int]:
        """Which of ``ids`` are still stored (not delivered by another runner)."""
        where, given = self._ids(ids)
        rows = await self.rows(f"SELECT id FROM firehose_chunks WHERE {where}", (given,))
        return {int(r[0]) for r in rows}

    async def delete_chunks(self, ids: Sequence[int]) -> None:
        where, given = self._ids(ids)
        await self.execute(f"DELETE FROM firehose_chunks WHERE {where}", (given,))

    async def replace_chunks(
        self, stream: str, done: Sequence[int], made: Sequence[NewChunk]
    ) -> list[int]:
        """In one transaction: delete the chunks ``done`` and write ``made``
        (a transformation's outcome); the new ids."""
        where, given = self._ids(done)
        steps = [Step(f"DELETE FROM firehose_chunks WHERE {where}", (given,))]
        steps += [
            Step(self._INSERT + self._ROW + " RETURNING id", self._values(stream, c)) for c in made
        ]
        results = await self.batch(steps)
        return [int(result.rows[0][0]) for result in results[1:]]

    async def buffered(self, stream: str) -> tuple[int, int]:
        """(records, bytes) the stream buffers now."""
        row = await self.one(
            "SELECT COALESCE(SUM(count), 0), COALESCE(SUM(size), 0) FROM firehose_chunks"
            " WHERE stream = ?",
            (stream,),
        )
        assert row is not None
        return int(row[0]), int(row[1])
