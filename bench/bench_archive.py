"""Archive write rate, one producer against many, and replay rate.

Write: ``--producers`` tasks (1 and 100 by default, in the same run) put
``--events`` events in PutEvents batches of 10 on a bus whose archive keeps
everything, at the default durability and at ``strict``; each call returns
once its events are committed (group commit shares a transaction between the
calls waiting at the same moment). Each of these runs once with the
runtime's intake durability ``memory`` (the archive's writer commits alone)
and once ``durable`` (the intake's rows and the archive's rows of a put are
one transaction). The figure the issue sets: one producer over the most
producers, per intake and durability (target at least 0.5).

The case, by default the realistic one: ``--rules`` (100) rules of
``bench_patterns``' mix over its order events with 0.2-1 KB details, as
``bench_bus`` makes them (about one rule matched per event), each rule with a
``function`` target calling an async no-op; the clock stops at the last
delivery. ``--rules 0``: the archive's own cost, a bus with no rules and
events of about 1 KB (the case of the figures before this option).

Peers, in the same process over the same events: the same ``put_events``
without an archive (what archiving adds); blocking stdlib ``sqlite3``
inserting the same bodies in transactions of 1,000 on the same schema (the
floor for SQLite itself); and the bare store: 1 and the most callers, each
handing the archive rows of 10 events to one writer thread and waiting for
their commit, the thread committing whatever waits with the archive's own
statements. The bare store's one-to-many ratio is what a thread round trip
and a commit per call cost a lone caller where many share them, with no
validation, routing or delivery around them. Runs alternate between the
cases within each repeat, so they share the machine's load; figures are
medians.

Replay (``--no-replay`` leaves it out): the archived events are replayed
into a bus with one rule matching them all and a ``function`` target calling
an async no-op; the clock stops at the last delivery. Peer: the same events
put with ``put_events`` into the same pipeline without an archive, also
until the last delivery (intake durability ``memory``, the most producers).

Before and after: run the code at another commit by putting its ``pipelines``
and ``plugins`` first on the path, e.g.

    git archive BASE pipelines plugins | tar -x -C /tmp/base
    PYTHONPATH=/tmp/base python bench/bench_archive.py

    pip install -e '.[bench]'     # bench_patterns imports moto
    python bench/bench_archive.py [--events 50000] [--repeats 3] [--producers 1,100]
        [--rules 100] [--spread 40] [--no-replay]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import queue
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import bench_bus
import orjson

from pipelines.archive import SCHEMA, ArchiveStore
from pipelines.process import tuned_process
from pipelines.runtime import Runtime
from pipelines.store import Dialect

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


class Rules:
    """The realistic case's rules: ``bench_patterns``' mix, each with a
    ``function`` target calling the no-op, and how many deliveries the
    entries make through them."""

    def __init__(self, patterns: list[Any], jobs: int) -> None:
        self.patterns = patterns
        self.jobs = jobs

    async def add(self, runtime: Runtime) -> None:
        runtime.add_resource("noop", "function", {"function": "__main__:noop"})
        bus = runtime.bus()
        for number, pattern in enumerate(self.patterns):
            bus.put_rule(f"rule-{number}", pattern=pattern)
            await bus.put_targets(f"rule-{number}", [{"id": "t", "resource": "noop"}])


async def write_rate(
    directory: Path,
    batch: list[dict[str, Any]],
    producers: int,
    intake: str,
    durability: str | None,
    rules: Rules | None,
) -> float:
    """Events per second put (and archived, unless ``durability`` is None);
    with ``rules``, until their last delivery as well."""
    global delivered, expected, finished
    path = directory / f"write-{time.monotonic_ns()}.db"
    runtime = Runtime(state_path=path, durability=intake)
    if rules is not None:
        await rules.add(runtime)
    if durability is not None:
        await runtime.archives.create_archive("all", durability=durability)
    delivered, expected, finished = 0, rules.jobs if rules is not None else 0, asyncio.Event()
    async with runtime:
        start = time.perf_counter()
        await put_all(runtime, batch, producers)
        if expected:
            await finished.wait()
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
                "INSERT INTO archive_groups (archive, time, body) VALUES ('all', ?, ?)",
                [(now, body) for body in bodies[i : i + 1000]],
            )
    elapsed = time.perf_counter() - start
    db.close()
    return len(bodies) / elapsed


def bare_writer(path: Path, jobs: queue.SimpleQueue[Any], loop: asyncio.AbstractEventLoop) -> None:
    """The bare store's writer thread: everything waiting in one transaction
    of the archive's own statements, then one wake-up of the event loop."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(SCHEMA)
    db.execute(
        "INSERT INTO archives (name, bus, retention_days, durability, description, state,"
        " created) VALUES ('all', 'default', 0, 'normal', '', 'ENABLED', 0)"
    )
    while (job := jobs.get()) is not None:
        taken = [job]
        while not jobs.empty():
            taken.append(jobs.get_nowait())
        rows = [row for rows, _ in taken for row in rows]
        db.execute("BEGIN IMMEDIATE")
        for step in ArchiveStore.insert(rows, Dialect()):
            if step.many:
                db.executemany(step.sql, step.parameters)
            else:
                db.execute(step.sql, step.parameters)
        db.execute("COMMIT")
        loop.call_soon_threadsafe(_answer, [done for _, done in taken])
    db.close()


def _answer(waiting: list[asyncio.Future[None]]) -> None:
    for done in waiting:
        done.set_result(None)


async def bare_rate(directory: Path, bodies: list[bytes], producers: int) -> float:
    """The bare store's rate: ``producers`` callers each hand over the
    archive rows of 10 events (serialized beforehand) to one writer thread
    and wait for their commit, as a put waits for its archive rows; the
    thread commits everything waiting at once (group commit), with the
    archive's statements. What a lone producer pays here (a round trip to a
    thread and a commit per call) is the floor of its archive write."""
    loop = asyncio.get_running_loop()
    jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
    path = directory / f"bare-{time.monotonic_ns()}.db"
    writer = threading.Thread(target=bare_writer, args=(path, jobs, loop))
    writer.start()
    calls = [bodies[i : i + 10] for i in range(0, len(bodies), 10)]

    async def produce(mine: list[list[bytes]]) -> None:
        for call in mine:
            now = time.time()
            done: asyncio.Future[None] = loop.create_future()
            jobs.put(([("all", now, body) for body in call], done))
            await done

    try:
        start = time.perf_counter()
        await asyncio.gather(*(produce(calls[p::producers]) for p in range(producers)))
        elapsed = time.perf_counter() - start
    finally:
        jobs.put(None)
        await asyncio.to_thread(writer.join)
    return len(bodies) / elapsed


def pipeline(path: Path) -> Runtime:
    runtime = Runtime(state_path=path, durability="memory")
    runtime.add_resource("noop", "function", {"function": "__main__:noop", "max_concurrency": 16})
    runtime.bus().put_rule("all", pattern={"source": [{"prefix": ""}]})  # every event
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
    runtime = Runtime(state_path=path, durability="memory")
    await runtime.archives.create_archive("all")
    async with runtime:
        await put_all(runtime, batch, producers)


def row(label: str, ours: list[float], peer: list[float], peer_label: str) -> None:
    a, b = statistics.median(ours), statistics.median(peer)
    print(f"{label:<36} {a:>8,.0f} ev/s   {peer_label:<30} {b:>8,.0f} ev/s   ratio {a / b:.2f}")


#: The write cases: (intake durability, archive durability or None for no archive).
CASES = [(i, d) for i in ("memory", "durable") for d in ("normal", "strict", None)]


async def write_figures(
    directory: Path,
    batch: list[dict[str, Any]],
    producers: list[int],
    repeats: int,
    rules: Rules | None,
) -> None:
    """Each repeat runs every case, its producer counts back to back, so a
    ratio between them is taken within one repeat (under one load) and the
    median of those ratios is printed beside the ratio of the medians."""
    rates: dict[tuple[str, str | None, int], list[float]] = {}
    floor: list[float] = []
    lone_floor: dict[int, list[float]] = {}
    bodies = [orjson.dumps({"n": n, "detail": entry}) for n, entry in enumerate(batch)]
    for _ in range(repeats):
        for intake, durability in CASES:
            for count in producers:
                rate = await write_rate(directory, batch, count, intake, durability, rules)
                rates.setdefault((intake, durability, count), []).append(rate)
        floor.append(sqlite_rate(directory, bodies))
        for count in producers:
            lone_floor.setdefault(count, []).append(await bare_rate(directory, bodies, count))
    most = max(producers)
    for intake, durability in CASES:
        if durability is None:
            continue
        for count in producers:
            bare = rates[intake, None, count]
            row(
                f"{intake} intake, {durability}, {count} prod.",
                rates[intake, durability, count],
                bare,
                "put_events, no archive",
            )
        for count in producers:
            if count != most:
                ours, theirs = rates[intake, durability, count], rates[intake, durability, most]
                row(
                    f"{intake} intake, {durability}: {count} / {most} prod.",
                    ours,
                    theirs,
                    f"{most} producers",
                )
                paired = statistics.median(a / b for a, b in zip(ours, theirs, strict=True))
                print(f"{'':<36} ratio within each repeat, median: {paired:.2f}")
    archived = rates["memory", "normal", most]
    row(f"memory intake, normal, {most} prod.", archived, floor, "bare sqlite3 inserts")
    # The bare store's own one-to-many ratio: what a round trip and a commit
    # per call cost a lone caller where the many share them.
    for count in producers:
        if count != most:
            row(
                f"bare store, {count} prod.",
                lone_floor[count],
                lone_floor[most],
                f"bare store, {most} prod.",
            )
        for intake in ("memory", "durable"):
            row(
                f"{intake} intake, normal, {count} prod.",
                rates[intake, "normal", count],
                lone_floor[count],
                f"bare store, {count} prod.",
            )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--producers", default="1,100", help="comma-separated counts")
    parser.add_argument("--no-replay", action="store_true", help="only the write figures")
    parser.add_argument(
        "--rules", type=int, default=100, help="rules of the realistic mix (0: none)"
    )
    parser.add_argument(
        "--spread", type=int, default=40, help="customer and tenant values (bench_bus)"
    )
    args = parser.parse_args()
    producers = sorted({int(p) for p in args.producers.split(",")})
    gc.freeze()
    rules: Rules | None = None
    if args.rules:
        batch, patterns = bench_bus.realistic(args.events, args.rules, args.spread)
        rules = Rules(patterns, bench_bus.expected_jobs(batch, patterns))
        case = f"{args.rules} rules of bench_patterns' mix ({rules.jobs:,} deliveries)"
    else:
        batch = entries(args.events)
        case = "no rules"
    size = statistics.mean(
        len(orjson.dumps({"detail": json.loads(entry["Detail"]), "envelope": "x" * 250}))
        for entry in batch
    )
    print(
        f"{args.events:,} events of ~{size:.0f} bytes on average, {case}, producers"
        f" {producers}, batches of 10, medians of {args.repeats} runs; load average before:"
        f" {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        await write_figures(directory, batch, producers, args.repeats, rules)
        if not args.no_replay:
            archived = directory / "archived.db"
            await archive_once(archived, batch, max(producers))
            replayed, put = [], []
            for _ in range(args.repeats):
                replayed.append(await replay_rate(archived, args.events))
                put.append(await put_rate(directory, batch, max(producers)))
            row("replay -> rule -> no-op", replayed, put, "put_events -> same")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    with tuned_process():  # as the pipelines command runs a pipeline
        asyncio.run(main())
