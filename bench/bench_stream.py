"""Stream throughput: records per second written with PutRecords and read back
by two independent named consumers, on a stream of 4 shards.

Each repeat uses a fresh SQLite file at the default durability (the state
database as the stores' backend opens it: WAL, synchronous=NORMAL).

- write: ``StreamStore.put_records`` in batches of ``--batch`` (500, PutRecords'
  most) of event-like JSON payloads of about 150 bytes, partition keys spread
  over ``--keys`` (1,000) keys;
- read: two named consumers (``consume(name, consumer, follow=False,
  batch=--read-batch)``) each read everything back, one after the other and
  then both at once (``asyncio.gather``), iterating records one by one
  (``async for``) and, with two more consumers, with ``next_batch()``.
  A consumer saves its checkpoints after every batch, so that is timed too.

The peer, run in the same process on the same kind of file, is what SQLite
itself costs through the stores' backend (a connection on its own thread):
the same rows (shard and sequence numbers computed beforehand, untimed)
inserted with ``executemany`` into a bare table of the same columns and
unique index, one transaction per batch, and read back with a plain keyset
SELECT per shard in pages of ``--read-batch``, by two readers one after the
other and then at once. No validation, no routing, no Record objects, no
checkpoints. Ratios are ours / peer (1.00: as fast as bare SQLite).
``--profile`` runs cProfile (main thread: the SQLite work on the
connection's own thread shows as waiting) around one write loop and one
read loop.

First, before the throughput runs, AT_TIMESTAMP shard iterators: a stream of
``--iterator-records`` (1,000,000; 0 skips it) records written once (each
PutRecords a millisecond after the one before, on a manual clock), then
``get_shard_iterator(..., "AT_TIMESTAMP")`` at ``--timestamps`` (25) times
spread over it, on every shard; the peer is the store's own query for the
first record at a time, on a bare connection to the same file. Both must
start at the same record. Printed: ms per iterator (median, p90, max).

The load average is printed beside the figures.

    python bench/bench_stream.py [--records 200000] [--repeats 3] [--batch 500]
        [--read-batch 500] [--keys 1000] [--iterator-records 1000000]
        [--timestamps 25] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import cProfile
import io
import os
import pstats
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from pipelines.clock import ManualClock
from pipelines.store import SQLITE, SQLFunction, SQLiteConnection
from plugins.stream.store import (
    FIRST_AT,
    StreamStore,
    even_ranges,
    parse_sequence_number,
    partition_hash,
    shard_id,
)

SHARDS = 4
TARGET = 50_000  # records per second, written and read
STREAM = "bench"

PEER_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    stream        INTEGER NOT NULL,
    shard         INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    partition_key TEXT NOT NULL,
    data          BLOB NOT NULL,
    arrival       REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS records_order ON records (stream, shard, seq);
"""


async def peer_connection(
    path: Path, functions: dict[str, SQLFunction] | None = None
) -> SQLiteConnection:
    """A bare connection of the stores' backend, set up as it sets its own
    (WAL, synchronous=NORMAL), with the peer's tables."""
    db = await SQLITE.connect(path, create=True, functions=functions or {})
    await db.script(PEER_SCHEMA)
    return db


@contextlib.asynccontextmanager
async def peer_transaction(db: SQLiteConnection) -> AsyncIterator[None]:
    await db.begin()
    yield
    await db.commit()


def entries(count: int, keys: int) -> list[dict[str, Any]]:
    """PutRecords entries: an event-like JSON document (about 150 bytes) each."""
    found = []
    for n in range(count):
        key = f"customer-{n % keys:05d}"
        data = orjson.dumps(
            {
                "id": f"{n:012d}",
                "source": "shop.orders",
                "detail-type": "OrderPlaced",
                "time": "2024-05-01T12:00:00Z",
                "detail": {"order": n, "customer": key, "total": round(n % 997 * 1.37, 2)},
            }
        )
        found.append({"Data": data, "PartitionKey": key})
    return found


def peer_rows(puts: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The rows the stream writes for ``puts``, routed the same way (untimed)."""
    starts = [start for start, _ in even_ranges(SHARDS)]
    now = time.time()
    return [
        (
            1,
            bisect.bisect_right(starts, partition_hash(put["PartitionKey"])) - 1,
            seq,
            put["PartitionKey"],
            put["Data"],
            now,
        )
        for seq, put in enumerate(puts, 1)
    ]


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


async def timed(read: Callable[[], Awaitable[int]], count: int) -> float:
    started = time.perf_counter()
    got = await read()
    elapsed = time.perf_counter() - started
    if got != count:
        raise SystemExit(f"read {got} records, not {count}")
    return count / elapsed


async def together(reads: list[Callable[[], Awaitable[int]]], count: int) -> float:
    """Both readers at once: records per second each (they finish together)."""
    started = time.perf_counter()
    got = await asyncio.gather(*(read() for read in reads))
    elapsed = time.perf_counter() - started
    if any(n != count for n in got):
        raise SystemExit(f"read {got} records, not {count} each")
    return count / elapsed


# -- ours ---------------------------------------------------------------------


async def write(store: StreamStore, batches: list[list[dict[str, Any]]]) -> None:
    for batch in batches:
        answer = await store.put_records(STREAM, batch)
        if answer["FailedRecordCount"]:
            raise SystemExit(f"{answer['FailedRecordCount']} records failed")


def iterating(store: StreamStore, consumer: str, batch: int) -> Callable[[], Awaitable[int]]:
    async def read() -> int:
        count = 0
        async for _ in store.consume(STREAM, consumer, follow=False, batch=batch):
            count += 1
        return count

    return read


def batched(store: StreamStore, consumer: str, batch: int) -> Callable[[], Awaitable[int]]:
    async def read() -> int:
        count = 0
        async with store.consume(STREAM, consumer, follow=False, batch=batch) as records:
            while found := await records.next_batch():
                count += len(found)
        return count

    return read


async def ours(path: Path, puts: list[dict[str, Any]], batch: int, page: int) -> dict[str, float]:
    count = len(puts)
    batches = chunks(puts, batch)
    rates: dict[str, float] = {}
    async with await StreamStore.open(path) as store:
        await store.create_stream(STREAM, SHARDS)
        started = time.perf_counter()
        await write(store, batches)
        rates["write"] = count / (time.perf_counter() - started)
        for name, reader in (("iter", iterating), ("batch", batched)):
            rates[f"{name} a"] = await timed(reader(store, f"{name}-a", page), count)
            rates[f"{name} b"] = await timed(reader(store, f"{name}-b", page), count)
            both = [reader(store, f"{name}-c", page), reader(store, f"{name}-d", page)]
            rates[f"{name} both"] = await together(both, count)
    return rates


# -- the peer: bare SQLite through the backend -----------------------------------


def peer_reader(db: SQLiteConnection, page: int) -> Callable[[], Awaitable[int]]:
    async def read() -> int:
        count = 0
        for shard in range(SHARDS):
            after = 0
            while rows := await db.rows(
                "SELECT seq, partition_key, data, arrival FROM records"
                " WHERE stream = ? AND shard = ? AND seq > ? ORDER BY seq LIMIT ?",
                (1, shard, after, page),
            ):
                rows = list(rows)
                count += len(rows)
                after = rows[-1][0]
        return count

    return read


async def peer(path: Path, rows: list[tuple[Any, ...]], batch: int, page: int) -> dict[str, float]:
    count = len(rows)
    rates: dict[str, float] = {}
    db = await peer_connection(path)
    try:
        started = time.perf_counter()
        for part in chunks(rows, batch):
            async with peer_transaction(db):
                await db.executemany(
                    "INSERT INTO records (stream, shard, seq, partition_key, data, arrival)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    part,
                )
        rates["write"] = count / (time.perf_counter() - started)
        rates["read a"] = await timed(peer_reader(db, page), count)
        rates["read b"] = await timed(peer_reader(db, page), count)
        rates["read both"] = await together([peer_reader(db, page), peer_reader(db, page)], count)
    finally:
        await db.close()
    return rates


# -- AT_TIMESTAMP iterators ----------------------------------------------------------

BATCH_SECONDS = 0.001  # the clock moves on by this after each PutRecords


async def fill(path: Path, puts: list[dict[str, Any]], batch: int) -> tuple[float, float]:
    """The stream written once, each PutRecords a millisecond after the one
    before; the first and last arrival times."""
    clock = ManualClock()
    first = clock.time()
    async with await StreamStore.open(path, clock) as store:
        await store.create_stream(STREAM, SHARDS)
        for part in chunks(puts, batch):
            await write(store, [part])
            clock.jump(BATCH_SECONDS)
    return first, clock.time() - BATCH_SECONDS


def moments(first: float, last: float, count: int) -> list[float]:
    """``count`` times from just after the first arrival to just before the last
    (between two PutRecords, so each lands on a batch's first record)."""
    step = (last - first) / count
    return [first + (n + 0.5) * step for n in range(count)]


async def store_iterators(path: Path, times: list[float]) -> tuple[list[float], list[int]]:
    """Seconds per ``get_shard_iterator`` AT_TIMESTAMP, and the sequence counter
    of the record each one starts at (read untimed with GetRecords)."""
    elapsed: list[float] = []
    starts: list[int] = []
    clock = ManualClock(times[-1] + 1.0)  # iterators are fresh: they expire after 5 minutes
    async with await StreamStore.open(path, clock) as store:
        for moment in times:
            for shard in range(SHARDS):
                started = time.perf_counter()
                iterator = await store.get_shard_iterator(
                    STREAM, shard_id(shard), "AT_TIMESTAMP", timestamp=moment
                )
                elapsed.append(time.perf_counter() - started)
                first = (await store.get_records(iterator, limit=1))["Records"]
                starts.append(parse_sequence_number(first[0]["SequenceNumber"])[0] if first else 0)
    return elapsed, starts


async def peer_iterators(path: Path, times: list[float]) -> tuple[list[float], list[int]]:
    """The same positions from the store's own query on a bare connection."""
    elapsed: list[float] = []
    starts: list[int] = []
    db = await SQLITE.connect(path, create=False, functions={})
    try:
        for moment in times:
            for shard in range(SHARDS):
                started = time.perf_counter()
                rows = list(await db.rows(FIRST_AT, (1, shard, moment)))
                elapsed.append(time.perf_counter() - started)
                starts.append(rows[0][0] if rows else 0)
    finally:
        await db.close()
    return elapsed, starts


def milliseconds(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    return (
        f"{statistics.median(ordered) * 1000:>9.3f}"
        f"{ordered[int(len(ordered) * 0.9)] * 1000:>9.3f}{ordered[-1] * 1000:>9.3f}"
    )


def at_timestamp(path: Path, count: int, keys: int, batch: int, timestamps: int) -> None:
    puts = entries(count, keys)
    started = time.perf_counter()
    first, last = asyncio.run(fill(path, puts, batch))
    print(
        f"\nAT_TIMESTAMP shard iterators: {count:,} records ({count // SHARDS:,} per shard,"
        f" {SHARDS} shards), written in {time.perf_counter() - started:.1f} s;"
        f" {timestamps} times x {SHARDS} shards; load average {os.getloadavg()}"
    )
    ours_s, ours_at = asyncio.run(store_iterators(path, moments(first, last, timestamps)))
    peer_s, peer_at = asyncio.run(peer_iterators(path, moments(first, last, timestamps)))
    if ours_at != peer_at:
        raise SystemExit(f"iterators start elsewhere than the query says: {ours_at} {peer_at}")
    print(f"{'ms per iterator':<36}{'median':>9}{'p90':>9}{'max':>9}")
    print(f"{'stream (get_shard_iterator)':<36}{milliseconds(ours_s)}")
    print(f"{'bare sqlite (its query)':<36}{milliseconds(peer_s)}")
    print(f"load average after: {os.getloadavg()}")


# -- profile --------------------------------------------------------------------


def top(profile: cProfile.Profile, title: str, lines: int = 18) -> None:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(lines)
    print(f"\n== profile: {title} (main thread, by own time) ==")
    body = out.getvalue()
    print(body[body.index("   ncalls") :].rstrip())


async def profiled(path: Path, puts: list[dict[str, Any]], batch: int, page: int) -> None:
    async with await StreamStore.open(path) as store:
        await store.create_stream(STREAM, SHARDS)
        profile = cProfile.Profile()
        profile.enable()
        await write(store, chunks(puts, batch))
        profile.disable()
        top(profile, f"write, put_records in batches of {batch}")
        for name, reader in (("async for", iterating), ("next_batch()", batched)):
            profile = cProfile.Profile()
            profile.enable()
            await reader(store, name, page)()
            profile.disable()
            top(profile, f"read, one consumer, {name}, batch={page}")


# -- main -------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500, help="records per PutRecords")
    parser.add_argument("--read-batch", type=int, default=500, help="consumer batch / page")
    parser.add_argument("--keys", type=int, default=1000, help="distinct partition keys")
    parser.add_argument("--profile", action="store_true", help="then cProfile one run")
    parser.add_argument(
        "--iterator-records", type=int, default=1_000_000, help="AT_TIMESTAMP (0: skip)"
    )
    parser.add_argument("--timestamps", type=int, default=25, help="AT_TIMESTAMP times")
    args = parser.parse_args()
    if args.iterator_records:
        with tempfile.TemporaryDirectory() as scratch:
            at_timestamp(
                Path(scratch) / "iterators.db",
                args.iterator_records,
                args.keys,
                args.batch,
                args.timestamps,
            )
    if not args.records:
        return
    count, page = args.records, args.read_batch
    puts = entries(count, args.keys)
    rows = peer_rows(puts)
    size = statistics.mean(len(put["Data"]) for put in puts)

    with tempfile.TemporaryDirectory() as scratch:
        runs = iter(range(10_000))

        def fresh() -> Path:
            return Path(scratch) / f"state{next(runs)}.db"

        mine: list[dict[str, float]] = []
        base: list[dict[str, float]] = []
        for _ in range(args.repeats):  # interleaved: drift hits both alike
            mine.append(asyncio.run(ours(fresh(), puts, args.batch, page)))
            base.append(asyncio.run(peer(fresh(), rows, args.batch, page)))
        ours_m = {key: statistics.median(run[key] for run in mine) for key in mine[0]}
        peer_m = {key: statistics.median(run[key] for run in base) for key in base[0]}

        print(
            f"{count:,} records of {size:.0f} bytes on average, {args.keys:,} partition keys,"
            f" {SHARDS} shards, PutRecords of {args.batch}, read batch {page};"
            f" records/s, median of {args.repeats}; load average {os.getloadavg()}"
        )
        print(f"{'':<36}{'stream':>10}{'bare sqlite':>13}{'ratio':>8}")
        table = [
            ("write (put_records)", "write", "write"),
            ("read, consumer A alone (async for)", "iter a", "read a"),
            ("read, consumer B alone (async for)", "iter b", "read b"),
            ("read, A and B at once, each", "iter both", "read both"),
            ("read, A alone (next_batch)", "batch a", "read a"),
            ("read, B alone (next_batch)", "batch b", "read b"),
            ("read, A and B at once, each", "batch both", "read both"),
        ]
        for label, key, peer_key in table:
            print(
                f"{label:<36}{ours_m[key]:>10,.0f}{peer_m[peer_key]:>13,.0f}"
                f"{ours_m[key] / peer_m[peer_key]:>8.2f}"
            )

        def verdict(rate: float) -> str:
            return f"{rate:,.0f}/s: {'met' if rate >= TARGET else 'NOT met'}"

        read_alone = min(ours_m["iter a"], ours_m["iter b"])
        print(f"target {TARGET:,}/s: write {verdict(ours_m['write'])}")
        print(f"target {TARGET:,}/s: read, each consumer alone (async for) {verdict(read_alone)}")
        print(f"target {TARGET:,}/s: read, both at once (async for) {verdict(ours_m['iter both'])}")
        print(f"load average after: {os.getloadavg()}")

        if args.profile:
            asyncio.run(profiled(fresh(), puts, args.batch, page))


if __name__ == "__main__":
    main()
