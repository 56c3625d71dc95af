"""Archive writes per second on SQLite and on PostgreSQL (a local server).

Sections (``--only`` runs some of them; all by default):

- ``store``: ``ArchiveStore.append`` of batches of 10 events of about 1 KB,
  each event a second of its own, so that no two share a row (the worst
  case of the archive's layout; a put's events share their second), one
  transaction each, by 1 writer and by 8 concurrent writers on one store,
  and on PostgreSQL also by 3 store instances at once (three runners writing one archive: each
  commit waits on the archive's row, whose count the trigger keeps). Peer,
  on PostgreSQL: the same rows by ``unnest`` of three arrays (no JSON, no
  ``substr``), the trigger the same; on SQLite, stdlib ``sqlite3``'s
  ``executemany`` in the same batches.
- ``runtime``: ``put_events`` of those events in calls of 10 from 100
  producers into a runtime whose archive keeps everything, intake
  durability ``memory`` (the archive's group-commit writer) and ``durable``
  (archive rows ride in the intake's writes).

Each case's median is printed with its ratio to its engine's peer (the
peers run in the ``store`` section) and the load average before and after.

PostgreSQL: ``--postgres URL`` (an empty database is made on it per run),
else a private server is started as the tests start theirs (initdb in a
temporary directory, ``fsync=off``, ``synchronous_commit=on``: a commit
waits for its WAL write, not for the disk, which is what SQLite's
``synchronous=NORMAL`` in WAL mode, the archives' default, does).

    flock /tmp/pipelines-bench.lock python bench/bench_state_archive.py \\
        [--events 20000] [--repeats 3] [--only store,runtime] [--postgres URL]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from bench_state import load, private_postgres

from pipelines.archive import SCHEMA, ArchiveSpec, ArchiveStore, Rows
from pipelines.process import tuned_process
from pipelines.runtime import Runtime

SECTIONS = ("store", "runtime")
T0 = 1_700_000_000.0


def events(count: int) -> list[bytes]:
    filler = "x" * 700
    return [
        orjson.dumps({"id": f"e-{n}", "detail": {"order": n, "note": filler}}) for n in range(count)
    ]


def batches(bodies: list[bytes]) -> list[Rows]:
    return [
        [("all", T0 + i + n, body) for n, body in enumerate(bodies[i : i + 10])]
        for i in range(0, len(bodies), 10)
    ]


class Databases:
    """A fresh database per measurement: a SQLite file, or a PostgreSQL database."""

    def __init__(self, directory: Path, postgres: str | None) -> None:
        self.directory = directory
        self.postgres = postgres
        self.server: Any = None
        self._names = itertools.count(1)

    def start(self) -> None:
        if self.postgres is None:
            # A directory of its own, as the tests' fixture makes: the server
            # may run as another user (initdb refuses root), who must reach it.
            self.server = private_postgres()
            self.postgres = self.server.url()

    def stop(self) -> None:
        if self.server is not None:
            try:
                self.server.stop()
            finally:
                shutil.rmtree(self.server.directory, ignore_errors=True)

    def new(self, engine: str) -> str:
        n = next(self._names)
        if engine == "sqlite":
            return str(self.directory / f"bench-{n}.db")
        import psycopg

        assert self.postgres is not None
        name = f"bench_archive_{n}_{time.monotonic_ns()}"
        with psycopg.connect(self.postgres, autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return self.postgres.rsplit("/", 1)[0] + f"/{name}"


async def store_rate(location: str, work: list[Rows], writers: int, instances: int = 1) -> float:
    """Events per second appended by ``writers`` tasks over ``instances`` stores."""
    stores = [await ArchiveStore.open(location) for _ in range(instances)]
    try:
        for store in stores:
            await store.save_archive(ArchiveSpec.parse("all", {}), T0)

        async def write(mine: list[Rows], store: ArchiveStore) -> None:
            for rows in mine:
                await store.append(rows, strict=False)

        start = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for w in range(writers):
                group.create_task(write(work[w::writers], stores[w % instances]))
        elapsed = time.perf_counter() - start
        total = sum(map(len, work))
        assert (await stores[0].describe("all"))["EventCount"] == total
    finally:
        for store in stores:
            await store.close()
    return total / elapsed


async def unnest_rate(location: str, work: list[Rows]) -> float:
    """PostgreSQL's peer: the same batches by unnest of three arrays."""
    store = await ArchiveStore.open(location)  # its tables and trigger
    await store.save_archive(ArchiveSpec.parse("all", {}), T0)
    await store.close()
    import psycopg

    async with await psycopg.AsyncConnection.connect(location, autocommit=True) as db:
        start = time.perf_counter()
        for rows in work:
            await db.execute(
                "INSERT INTO archive_groups (archive, time, body)"
                " SELECT * FROM unnest(%s::text[], %s::float8[], %s::bytea[])",
                ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]),
            )
        elapsed = time.perf_counter() - start
    return sum(map(len, work)) / elapsed


def sqlite_executemany_rate(location: str, work: list[Rows]) -> float:
    """SQLite's peer: blocking executemany of the same batches."""
    db = sqlite3.connect(location)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(SCHEMA)
    start = time.perf_counter()
    for rows in work:
        with db:
            db.executemany(
                "INSERT INTO archive_groups (archive, time, body) VALUES (?, ?, ?)", rows
            )
    elapsed = time.perf_counter() - start
    db.close()
    return sum(map(len, work)) / elapsed


async def put_rate(location: str, count: int, intake: str) -> float:
    filler = "x" * 700
    entries = [
        {
            "Source": "bench.shop",
            "DetailType": "Order Placed",
            "Detail": json.dumps({"order": n, "note": filler}),
        }
        for n in range(count)
    ]
    calls = [entries[i : i + 10] for i in range(0, count, 10)]
    runtime = Runtime(state_path=location, durability=intake)
    await runtime.archives.create_archive("all")

    async def produce(mine: list[list[dict[str, Any]]]) -> None:
        for call in mine:
            result = await runtime.put_events(call)
            assert result["FailedEntryCount"] == 0, result

    async with runtime:
        start = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for p in range(100):
                group.create_task(produce(calls[p::100]))
        elapsed = time.perf_counter() - start
        assert (await runtime.archives.describe_archive("all"))["EventCount"] == count
    return count / elapsed


def show(label: str, rates: list[float], peer: list[float] | None) -> None:
    """A case's median, its spread, and its ratio to its engine's peer."""
    spread = f"{min(rates):,.0f}..{max(rates):,.0f}"
    median = statistics.median(rates)
    ratio = f"{median / statistics.median(peer):>6.2f}" if peer else "     -"
    print(f"{label:<58} {median:>9,.0f} ev/s  {ratio}  ({spread})", flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default=",".join(SECTIONS))
    parser.add_argument("--postgres", help="a server's URL (default: a private server)")
    options = parser.parse_args()
    only = [section for section in options.only.split(",") if section]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"--only takes {', '.join(SECTIONS)}, not {', '.join(sorted(unknown))}")
    work = batches(events(options.events))
    with tempfile.TemporaryDirectory(prefix="bench-state-archive-") as directory:
        databases = Databases(Path(directory), options.postgres)
        databases.start()
        try:
            cases: list[tuple[str, Callable[[], Awaitable[float]]]] = []
            for engine in ("sqlite", "postgresql"):
                if "store" in only:
                    for writers in (1, 8):
                        cases.append(
                            (
                                f"store {engine}: append, {writers} writer(s)",
                                lambda e=engine, w=writers: store_rate(databases.new(e), work, w),  # type: ignore[misc]
                            )
                        )
                    if engine == "postgresql":
                        cases.append(
                            (
                                "store postgresql: append, 3 instances x 8 writers",
                                lambda: store_rate(databases.new("postgresql"), work, 24, 3),
                            )
                        )
                        cases.append(
                            (
                                "peer postgresql: unnest of arrays, 1 writer",
                                lambda: unnest_rate(databases.new("postgresql"), work),
                            )
                        )
                    else:

                        async def peer() -> float:
                            return sqlite_executemany_rate(databases.new("sqlite"), work)

                        cases.append(("peer sqlite: sqlite3 executemany, 1 writer", peer))
                if "runtime" in only:
                    for intake in ("memory", "durable"):
                        cases.append(
                            (
                                f"runtime {engine}: put_events, 100 producers, intake {intake}",
                                lambda e=engine, i=intake: put_rate(  # type: ignore[misc]
                                    databases.new(e), options.events, i
                                ),
                            )
                        )
            rates: dict[str, list[float]] = {label: [] for label, _ in cases}
            print(
                f"{options.events:,} events of about 1 KB in batches of 10, medians of"
                f" {options.repeats} alternating runs; load average {load()}",
                flush=True,
            )
            for _ in range(options.repeats):  # cases alternate: they share the load
                for label, case in cases:
                    rates[label].append(await case())
            print(f"{'':<58} {'median':>14}  {'/ peer':>6}  (spread)")
            for label, _ in cases:
                engine = label.split(":")[0].split()[-1]
                peer = next(
                    (r for name, r in rates.items() if name.startswith(f"peer {engine}")), None
                )
                show(label, rates[label], None if label.startswith("peer") else peer)
            print(f"load average after: {load()}")
        finally:
            databases.stop()


if __name__ == "__main__":
    with tuned_process():  # as the pipelines command runs a pipeline
        asyncio.run(main())
