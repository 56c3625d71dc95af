"""Archive write rate and replay rate.

Write: ``--producers`` tasks put ``--events`` events of about 1 KB in
PutEvents batches of 10 on a bus whose archive keeps everything (no rules),
at the default durability and at ``strict``; each call returns once its
events are committed (group commit shares a transaction between the calls
waiting at the same moment). Peers, in the same process over the same
events: the same ``put_events`` without an archive (what archiving adds), and
blocking stdlib ``sqlite3`` inserting the same bodies in transactions of
1,000 on the same schema (the floor for SQLite itself).

Replay: the archived events are replayed into a bus with one rule matching
them all and a ``function`` target calling an async no-op; the clock stops
at the last delivery. Peer: the same events put with ``put_events`` into the
same pipeline without an archive, also until the last delivery.

Every runtime here runs with ``--intake`` durability: ``memory`` by default,
so the figures are the archive's own cost (as they were before the durable
intake existed; bench_bus.py measures that one); ``--intake durable`` shows
both writes together.

    python bench/bench_archive.py [--events 50000] [--repeats 3] [--producers 100]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from pipelines.archive import SCHEMA
from pipelines.process import tuned_process
from pipelines.runtime import Runtime

#: The runtimes' durability (--intake).
INTAKE = "memory"

delivered = 0
expected = 0
finished: asyncio.Event | None = None


async def noop(payload: Any) -> None:
    global delivered
    delivered += 1
    if delivered == expected and finished is not None:
        finished.set()


def entries(count: int) -> list[dict[str, Any]]:
    """PutEvents entries whose events are about 1 KB of JSON."""
    filler = "x" * 700
    return [
        {
            "Source": "bench.shop",
            "DetailType": "Order Placed",
            "Detail": json.dumps({"order": n, "total": n % 997, "note": filler}),
        }
        for n in range(count)
    ]


async def put_all(runtime: Runtime, batch: list[dict[str, Any]], producers: int) -> None:
    calls = [batch[i : i + 10] for i in range(0, len(batch), 10)]

    async def produce(mine: list[list[dict[str, Any]]]) -> None:
        for call in mine:
            result = await runtime.put_events(call)
            assert result["FailedEntryCount"] == 0, result

    async with asyncio.TaskGroup() as group:
        for p in range(producers):
            group.create_task(produce(calls[p::producers]))


async def write_rate(
    directory: Path, batch: list[dict[str, Any]], producers: int, durability: str | None
) -> float:
    """Events per second put (and archived, unless ``durability`` is None)."""
    path = directory / f"write-{time.monotonic_ns()}.db"
    runtime = Runtime(state_path=path, durability=INTAKE)
    if durability is not None:
        await runtime.archives.create_archive("all", durability=durability)
    async with runtime:
        start = time.perf_counter()
        await put_all(runtime, batch, producers)
        elapsed = time.perf_counter() - start
        if durability is not None:
            assert (await runtime.archives.describe_archive("all"))["EventCount"] == len(batch)
    return len(batch) / elapsed


def sqlite_rate(directory: Path, bodies: list[bytes]) -> float:
    """The floor: blocking inserts of the same bodies, 1,000 per transaction."""
    db = sqlite3.connect(directory / f"peer-{time.monotonic_ns()}.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(SCHEMA)
    now = time.time()
    start = time.perf_counter()
    for i in range(0, len(bodies), 1000):
        with db:
            db.executemany(
                "INSERT INTO archive_events (archive, time, body) VALUES ('all', ?, ?)",
                [(now, body) for body in bodies[i : i + 1000]],
            )
    elapsed = time.perf_counter() - start
    db.close()
    return len(bodies) / elapsed


def pipeline(path: Path) -> Runtime:
    runtime = Runtime(state_path=path, durability=INTAKE)
    runtime.add_resource("noop", "function", {"function": "__main__:noop", "max_concurrency": 16})
    runtime.bus().put_rule("all", pattern={"source": ["bench.shop"]})
    return runtime


async def replay_rate(archived: Path, count: int) -> float:
    global delivered, expected, finished
    runtime = pipeline(archived)
    await runtime.bus().put_targets("all", [{"id": "t", "resource": "noop"}])
    delivered, expected, finished = 0, count, asyncio.Event()
    async with runtime:
        start = time.perf_counter()
        name = f"r{time.monotonic_ns()}"
        await runtime.replays.start(name, "all", 0, time.time() + 3600)
        await finished.wait()
        elapsed = time.perf_counter() - start
        # Its progress is saved once each chunk is in the intake: wait for the end.
        while (described := await runtime.replays.describe(name))["State"] != "COMPLETED":
            await asyncio.sleep(0.01)
        assert described["EventsReplayed"] == count
    return count / elapsed


async def put_rate(directory: Path, batch: list[dict[str, Any]], producers: int) -> float:
    """The replay's peer: the same pipeline fed by put_events, until the last delivery."""
    global delivered, expected, finished
    runtime = pipeline(directory / f"put-{time.monotonic_ns()}.db")
    await runtime.bus().put_targets("all", [{"id": "t", "resource": "noop"}])
    delivered, expected, finished = 0, len(batch), asyncio.Event()
    async with runtime:
        start = time.perf_counter()
        await put_all(runtime, batch, producers)
        await finished.wait()
        elapsed = time.perf_counter() - start
    return len(batch) / elapsed


async def archive_once(path: Path, batch: list[dict[str, Any]], producers: int) -> None:
    runtime = Runtime(state_path=path, durability=INTAKE)
    await runtime.archives.create_archive("all")
    async with runtime:
        await put_all(runtime, batch, producers)


def row(label: str, ours: list[float], peer: list[float], peer_label: str) -> None:
    a, b = statistics.median(ours), statistics.median(peer)
    print(f"{label:<28} {a:>10,.0f} ev/s   {peer_label:<24} {b:>10,.0f} ev/s   ratio {a / b:.2f}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--producers", type=int, default=100)
    parser.add_argument("--intake", choices=("memory", "durable"), default="memory")
    args = parser.parse_args()
    global INTAKE
    INTAKE = args.intake
    gc.freeze()
    batch = entries(args.events)
    size = len(orjson.dumps({"detail": json.loads(batch[0]["Detail"]), "envelope": "x" * 250}))
    print(
        f"{args.events:,} events of ~{size} bytes, {args.producers} producers, batches of 10,"
        f" medians of {args.repeats} runs, intake durability {INTAKE}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        normal, strict, bare, floor = [], [], [], []
        bodies = [orjson.dumps({"n": n, "detail": entry}) for n, entry in enumerate(batch)]
        for _ in range(args.repeats):
            normal.append(await write_rate(directory, batch, args.producers, "normal"))
            strict.append(await write_rate(directory, batch, args.producers, "strict"))
            bare.append(await write_rate(directory, batch, args.producers, None))
            floor.append(sqlite_rate(directory, bodies))
        row("archive write (normal)", normal, bare, "put_events, no archive")
        row("archive write (strict)", strict, bare, "put_events, no archive")
        row("archive write (normal)", normal, floor, "bare sqlite3 inserts")

        archived = directory / "archived.db"
        await archive_once(archived, batch, args.producers)
        replayed, put = [], []
        for _ in range(args.repeats):
            replayed.append(await replay_rate(archived, args.events))
            put.append(await put_rate(directory, batch, args.producers))
        row("replay -> rule -> no-op", replayed, put, "put_events -> same")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    with tuned_process():  # as the pipelines command runs a pipeline
        asyncio.run(main())
