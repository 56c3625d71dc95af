"""Durable queue throughput: send, receive and delete in batches of 10.

One producer task sends ``--messages`` messages with SendMessageBatch (10 per
call) while consumer tasks receive (10 per call, long polling) and delete
what they received with DeleteMessageBatch; the clock stops at the last
delete. Run with 1 consumer task and with 4, on a fresh SQLite file at the
default durability (WAL, synchronous=NORMAL: a sent message survives a
process crash). Phases are also timed alone: send only, then receive and
delete only from the full queue.

The drain: a queue filled with ``--messages`` messages beforehand (not
timed), then 1 consumer task, or 4, receiving (10 per call) and deleting
(DeleteMessageBatch) until it is empty, with no producer. Its 4-vs-1 ratio
is the figure that answers "4 consumers at least 1.5x one": consumer
scaling shows only where the consumers are the bottleneck. End to end, the
one producer awaits each SendMessageBatch's commit, so with 4 consumers
every trip carries one send, one claim and one delete and the run goes at
the producer's round trip, whatever the consumers do (its 4-vs-1 ratio is
printed too, as measured). The runs with 1 and 4 consumers take turns
(end to end, then the drain, each turn), so the machine's moment weighs
on both; each turn's ratio is printed with their median, and the CPU
time the process spent per drained message (its threads together: less
of it is what lets 4 consumers go faster on a busy machine).

The peer is bare SQLite running the very statements ours ran: each run
(each end-to-end run, each drain, and the phases) records every trip the store's
connection ran, as its thread ran it (``SQLiteConnection.on_trip``: the
statements with their parameters, and whether they were one transaction,
as a group commit makes them), and the peer replays them in that order with
blocking stdlib ``sqlite3`` calls on a fresh file with the same schema and
settings (WAL, ``synchronous=NORMAL``), no validation, no event loop. So
when several consumers' statements share a transaction, the peer's replay
shares it too. The run stops if the peer's file does not end as ours did
(messages inserted, left, receive counts, the counts table): a statement
left out of the record would show there. The ratio is then what the
store's Python and never blocking the event loop (a hop to the
connection's thread and back per trip) cost, not a difference of SQL.
(moto's in-memory SQS backend was tried as a peer and left out: it managed
about 50 sends a second.)

A second peer for the phases, the bare store: the same trips replayed
through the store layer's own SQLite connection (``SQLITE.connect``: its
thread, a hop there and back per trip), each awaited before the next as
the phases ran them, with no queue code. It is the floor of any store that
keeps SQLite off the event loop; its ratio to bare SQLite is what that
costs by itself on the machine, ours to it what the queue's code adds.

It runs under ``tuned_process`` (thread switch interval 0.2 ms), as the
``pipelines`` command runs a pipeline and as the other benchmarks do.

Before and after: run this script over the code of another commit by
putting its ``pipelines`` and ``plugins`` first on the path, e.g.
``PYTHONPATH=/path/to/checkout-of-BASE python bench/bench_queue.py``
(the statements of code from before ``on_trip`` are recorded from its
connection's calls).

The drain's peer replays the filling (not timed), then the drain's trips.

``--stats N`` times GetQueueAttributes on a queue of N messages (a million:
``--stats 1000000``), filled by bare inserts of the store's own rows.

    python bench/bench_queue.py [--messages 20000] [--repeats 3] [--stats N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pipelines.process import tuned_process
from pipelines.store import VERSIONS_SCHEMA, Connection
from plugins.queue.store import QueueStore, SendEntry

BODY = '{"source": "shop", "detail-type": "order", "detail": {"order": 12345, "total": 99.5}}'


def batches(count: int) -> list[list[SendEntry]]:
    entries = [SendEntry(BODY, {"n": n}, id=str(n % 10)) for n in range(count)]
    return [entries[start : start + 10] for start in range(0, count, 10)]


async def ours_end_to_end(
    path: Path, count: int, consumers: int, statements: list[Statement]
) -> float:
    """Messages per second; ``statements`` gets what the store ran meanwhile."""
    store = await QueueStore.open(path)
    await store.create_queue("bench")
    record(store.connection, statements)
    sending = batches(count)
    remaining = count
    done = asyncio.Event()
    finished = 0.0

    async def produce() -> None:
        for batch in sending:
            await store.send_batch("bench", batch)

    async def consume() -> None:
        nonlocal remaining, finished
        while True:
            messages = await store.receive("bench", 10, wait_time=1)
            if messages:
                handles = [(str(n), m.receipt_handle) for n, m in enumerate(messages)]
                await store.delete_batch("bench", handles)
                remaining -= len(messages)
                if remaining <= 0:
                    finished = time.perf_counter()
                    done.set()

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        group.create_task(produce())
        consumers_running = [group.create_task(consume()) for _ in range(consumers)]
        await done.wait()
        for task in consumers_running:  # the others are in a long poll
            task.cancel()
    await store.close()
    return count / (finished - started)


async def ours_drain(
    path: Path, count: int, consumers: int, log: list[list[Statement]]
) -> tuple[float, float]:
    """Messages per second draining a queue filled with ``count`` messages
    beforehand (not timed): ``consumers`` tasks receive (10 per call) and
    delete them (DeleteMessageBatch) until the queue is empty, no producer;
    and the CPU time the process spent per message meanwhile (all its
    threads), in microseconds. ``log`` gets the statements of the filling,
    then those of the drain."""
    store = await QueueStore.open(path)
    await store.create_queue("bench")
    statements: list[Statement] = []
    record(store.connection, statements)
    sending = batches(count)
    for start in range(0, len(sending), 50):  # 50 sends at once: grouped trips
        await asyncio.gather(*(store.send_batch("bench", b) for b in sending[start : start + 50]))
    mark = len(statements)
    deleted = 0

    async def consume() -> None:
        nonlocal deleted
        while True:
            # Nothing is due back (the visibility timeout is 30 s): an empty
            # answer means the others hold or have deleted the rest.
            messages = await store.receive("bench", 10, wait_time=0)
            if not messages:
                return
            handles = [(str(n), m.receipt_handle) for n, m in enumerate(messages)]
            await store.delete_batch("bench", handles)
            deleted += len(messages)

    cpu = time.process_time()
    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(consumers):
            group.create_task(consume())
    finished = time.perf_counter()
    cpu = time.process_time() - cpu
    await store.close()
    if deleted != count:
        raise SystemExit(f"the drain deleted {deleted} messages of {count}")
    log[:] = [statements[:mark], statements[mark:]]
    return count / (finished - started), cpu / count * 1e6


#: What a store's connection ran: a ``Trip`` as its thread took it (steps, in
#: one transaction or not), or, for code from before ``Trip``, a call on the
#: connection recorded as (kind, SQL, parameters).
Statement = Any


def record(connection: Connection, into: list[Statement]) -> None:
    """Record every statement run on ``connection`` into ``into``, in the
    order and the transactions it ran them, for the peer to replay."""
    if hasattr(connection, "on_trip"):  # each trip, as the connection's thread runs it
        connection.on_trip = into.append
        return

    def wrap(kind: str) -> None:  # code from before: its calls, on the instance
        method = getattr(connection, kind)

        async def recorded(*args: Any, **options: Any) -> Any:
            if kind == "batch":  # the plan, and whether it is one transaction
                into.append((kind, list(args[0]), options.get("transaction", True)))
            else:
                into.append((kind, args[0] if args else "", args[1] if len(args) > 1 else ()))
            return await method(*args, **options)

        setattr(connection, kind, recorded)

    for kind in ("rows", "execute", "executemany", "begin", "commit", "rollback", "batch"):
        if hasattr(connection, kind):  # code before ``batch`` existed has none
            wrap(kind)


async def ours_phases(path: Path, count: int, log: list[list[Statement]]) -> tuple[float, float]:
    """Send only, then receive and delete only; ``log`` gets the statements
    of each phase."""
    store = await QueueStore.open(path)
    await store.create_queue("bench")
    statements: list[Statement] = []
    record(store.connection, statements)
    sending = batches(count)
    started = time.perf_counter()
    for batch in sending:
        await store.send_batch("bench", batch)
    sent = time.perf_counter()
    mark = len(statements)
    received = 0
    while received < count:
        messages = await store.receive("bench", 10)
        await store.delete_batch(
            "bench", [(str(n), m.receipt_handle) for n, m in enumerate(messages)]
        )
        received += len(messages)
    finished = time.perf_counter()
    await store.close()
    log[:] = [statements[:mark], statements[mark:]]
    return count / (sent - started), count / (finished - sent)


def replay(db: sqlite3.Connection, statements: Iterable[Statement]) -> None:
    for statement in statements:
        if hasattr(statement, "steps"):
            replay_trip(db, statement.steps, statement.transaction, statement.synced)
            continue
        kind, sql, parameters = statement
        if kind == "batch":
            replay_trip(db, sql, parameters, False)
        elif kind == "begin":
            db.execute("BEGIN IMMEDIATE")
        elif kind == "commit":
            db.execute("COMMIT")
        elif kind == "rollback":
            if db.in_transaction:
                db.execute("ROLLBACK")
        elif kind == "executemany":
            db.executemany(sql, parameters)
        else:
            db.execute(sql, parameters).fetchall()


def replay_trip(db: sqlite3.Connection, steps: list[Any], transaction: bool, synced: bool) -> None:
    """A trip as the store ran it: its statements, in one transaction if it
    was one, synced if it was. One that failed is rolled back (as the store's
    was; the store then ran its statements again alone: they follow)."""
    if synced:
        db.execute("PRAGMA synchronous=FULL")
    try:
        if transaction:
            db.execute("BEGIN IMMEDIATE")
        for step in steps:
            if step.many:
                db.executemany(step.sql, step.parameters)
            else:
                db.execute(step.sql, step.parameters).fetchall()
        if transaction:
            db.execute("COMMIT")
    except sqlite3.Error:
        if transaction and db.in_transaction:
            db.execute("ROLLBACK")
    finally:
        if synced:
            db.execute("PRAGMA synchronous=NORMAL")


def bare_database(path: Path) -> sqlite3.Connection:
    """A fresh file as the store makes it: its settings, its schema and the queue."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    # Its engine's own DDL too: the triggers keeping queue_counts run in
    # every insert and delete of ours, so they run in the peer's.
    db.executescript(VERSIONS_SCHEMA + QueueStore.schema + QueueStore.engine_schema["sqlite"])
    db.execute(
        "INSERT INTO queues (name, attributes, created) VALUES ('bench', '{}', ?)", (time.time(),)
    )
    return db


def bare_sqlite(path: Path, count: int, statements: list[Statement]) -> float:
    """The floor of an end-to-end run: its statements, in the order the store
    ran them (its group commits included), replayed blocking."""
    db = bare_database(path)
    started = time.perf_counter()
    replay(db, statements)
    finished = time.perf_counter()
    db.close()
    return count / (finished - started)


def bare_sqlite_phases(path: Path, count: int, log: list[list[Statement]]) -> tuple[float, float]:
    """The floor: our statements of each phase, replayed blocking with the stdlib's sqlite3."""
    sending, receiving = log
    db = bare_database(path)
    started = time.perf_counter()
    replay(db, sending)
    sent = time.perf_counter()
    replay(db, receiving)
    finished = time.perf_counter()
    db.close()
    return count / (sent - started), count / (finished - sent)


async def bare_store_phases(
    path: Path, count: int, log: list[list[Statement]]
) -> tuple[float, float]:
    """The floor of any store that never blocks the event loop: our trips of
    each phase, replayed through the store layer's own SQLite connection
    (``SQLITE.connect``: its thread, one hop there and back per trip), one
    awaited after the other as the phases ran them, and no queue code."""
    if not all(hasattr(trip, "steps") for phase in log for trip in phase):
        return float("nan"), float("nan")  # code from before ``Trip``: no trips to replay
    from pipelines.store import SQLITE  # (code from before it has no SQLITE)

    bare_database(path).close()
    connection = await SQLITE.connect(path, create=False, functions=QueueStore.functions)
    try:
        sending, receiving = log
        started = time.perf_counter()
        await replay_through(connection, sending)
        sent = time.perf_counter()
        await replay_through(connection, receiving)
        finished = time.perf_counter()
    finally:
        await connection.close()
    return count / (sent - started), count / (finished - sent)


async def replay_through(connection: Connection, trips: Iterable[Statement]) -> None:
    for trip in trips:
        # One that failed is rolled back, as ours was (the store then ran its
        # statements alone: they follow).
        with contextlib.suppress(sqlite3.Error):
            await connection.batch(trip.steps, transaction=trip.transaction, synced=trip.synced)


def bare_sqlite_drain(path: Path, count: int, log: list[list[Statement]]) -> float:
    """The floor of a drain: the filling replayed (not timed), then the
    drain's statements, in the trips the store ran them, replayed blocking."""
    filling, draining = log
    db = bare_database(path)
    replay(db, filling)
    started = time.perf_counter()
    replay(db, draining)
    finished = time.perf_counter()
    db.close()
    return count / (finished - started)


def same_end(ours: Path, peer: Path) -> None:
    """The peer's replay left its file as the store left its own: as many
    messages inserted (the sequence), left and counted. A statement left
    out of the record, or replayed in another order, would show here."""

    def end(path: Path) -> tuple[Any, ...]:
        with contextlib.closing(sqlite3.connect(path)) as db:
            queries = (
                "SELECT seq FROM sqlite_sequence WHERE name = 'queue_messages'",
                "SELECT count(*), total(receives) FROM queue_messages",
                "SELECT queue, messages FROM queue_counts",
            )
            return tuple(db.execute(query).fetchall() for query in queries)

    if end(ours) != end(peer):
        raise SystemExit(f"the peer's replay ended elsewhere: {end(ours)} != {end(peer)}")


async def time_stats(path: Path, count: int) -> tuple[float, dict[str, Any]]:
    """GetQueueAttributes on a queue of ``count`` messages, a tenth of them
    in flight: the best of 20 calls, in milliseconds."""
    db = bare_database(path)
    now = time.time()
    rows = (("bench", f"id{n}", BODY, now - 60, now - 60) for n in range(count))
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO queue_messages (queue, id, body, sent, visible) VALUES (?, ?, ?, ?, ?)", rows
    )
    db.execute(
        "UPDATE queue_messages SET visible = ?, receives = 1 WHERE seq % 10 = 0", (now + 600,)
    )
    db.execute("COMMIT")
    db.close()
    store = await QueueStore.open(path)
    best = float("inf")
    stats: dict[str, Any] = {}
    for _ in range(20):
        started = time.perf_counter()
        stats = await store.stats("bench")
        best = min(best, time.perf_counter() - started)
    await store.close()
    return best * 1000, stats


def median_of(repeats: int, run: Callable[[], Any]) -> Any:
    results = [run() for _ in range(repeats)]
    if isinstance(results[0], tuple):
        return tuple(statistics.median(column) for column in zip(*results, strict=True))
    return statistics.median(results)


def shown_ratios(ratios: list[float]) -> str:
    each = " / ".join(f"{ratio:.2f}" for ratio in ratios)
    return f"{each}x (median {statistics.median(ratios):.2f}x)"


def main() -> None:
    with tuned_process():  # as the pipelines command runs a pipeline
        measure()


def measure() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stats", type=int, default=0, metavar="N")
    args = parser.parse_args()
    count = args.messages
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    with tempfile.TemporaryDirectory() as scratch:
        runs = iter(range(10_000))

        def fresh() -> Path:
            return Path(scratch) / f"state{next(runs)}.db"

        if args.stats:
            took, stats = asyncio.run(time_stats(fresh(), args.stats))
            counts = [
                stats[key]
                for key in ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")
            ]
            print(
                f"GetQueueAttributes at {args.stats:,} messages: {took:.2f} ms"
                f" (visible {counts[0]:,}, in flight {counts[1]:,})"
            )

        def end_to_end(consumers: int) -> tuple[float, float]:
            statements: list[Statement] = []
            ours_path, peer_path = fresh(), fresh()
            ours = asyncio.run(ours_end_to_end(ours_path, count, consumers, statements))
            peer = bare_sqlite(peer_path, count, statements)
            same_end(ours_path, peer_path)
            return ours, peer

        def drain(consumers: int) -> tuple[float, float, float]:
            log: list[list[Statement]] = []
            ours_path, peer_path = fresh(), fresh()
            ours, cpu = asyncio.run(ours_drain(ours_path, count, consumers, log))
            peer = bare_sqlite_drain(peer_path, count, log)
            same_end(ours_path, peer_path)
            return ours, peer, cpu

        # 1 and 4 consumers take turns, so the machine's moment weighs on both.
        def turn() -> tuple[float, ...]:
            return (*end_to_end(1), *end_to_end(4), *drain(1), *drain(4))

        turns = [turn() for _ in range(args.repeats)]
        (
            one,
            peer_one,
            four,
            peer_four,
            drain_one,
            peer_drain_one,
            cpu_one,
            drain_four,
            peer_drain_four,
            cpu_four,
        ) = (statistics.median(column) for column in zip(*turns, strict=True))
        # The ratio of each turn, 4 against 1, and their median.
        e2e_ratios = [t[2] / t[0] for t in turns]
        drain_ratios = [t[7] / t[4] for t in turns]
        log: list[list[Statement]] = []

        def phases() -> tuple[float, ...]:
            ours_path, peer_path, store_path = fresh(), fresh(), fresh()
            ours = asyncio.run(ours_phases(ours_path, count, log))
            peer = bare_sqlite_phases(peer_path, count, log)
            same_end(ours_path, peer_path)
            through_store = asyncio.run(bare_store_phases(store_path, count, log))
            if store_path.exists():
                same_end(ours_path, store_path)
            return (*ours, *peer, *through_store)

        (send, receive, peer_send, peer_receive, store_send, store_receive) = median_of(
            args.repeats, phases
        )

    both = 1 / (1 / send + 1 / receive)
    peer_both = 1 / (1 / peer_send + 1 / peer_receive)
    store_both = 1 / (1 / store_send + 1 / store_receive)
    print(f"{count:,} messages of {len(BODY)} bytes, batches of 10, median of {args.repeats}")
    print(f"end to end, 1 producer + 1 consumer task:  {one:>9,.0f} msg/s")
    print(f"end to end, 1 producer + 4 consumer tasks: {four:>9,.0f} msg/s  ({four / one:.2f}x)")
    print(f"drain, 1 consumer task:                    {drain_one:>9,.0f} msg/s")
    print(
        f"drain, 4 consumer tasks:                   {drain_four:>9,.0f} msg/s"
        f"  ({drain_four / drain_one:.2f}x)"
    )
    print(
        f"4 vs 1 consumers, each turn: end to end {shown_ratios(e2e_ratios)};"
        f" drain {shown_ratios(drain_ratios)} (the target's figure)"
    )
    print(
        f"drain, CPU of the process per message: 1 consumer {cpu_one:.1f} us, 4 {cpu_four:.1f} us"
    )
    print("bare: the same statements replayed with blocking sqlite3")
    print(f"{'phase':<32}{'ours msg/s':>12}{'bare msg/s':>12}{'ratio':>8}")
    for what, ours, peer in (
        ("send", send, peer_send),
        ("receive + delete", receive, peer_receive),
        ("send + receive + delete", both, peer_both),
        ("end to end, 1 consumer", one, peer_one),
        ("end to end, 4 consumers", four, peer_four),
        ("drain, 1 consumer", drain_one, peer_drain_one),
        ("drain, 4 consumers", drain_four, peer_drain_four),
    ):
        print(f"{what:<32}{ours:>12,.0f}{peer:>12,.0f}{ours / peer:>8.2f}")
    print(
        "bare store: the same trips through the store layer's SQLite connection"
        " (a hop to its thread and back each), no queue code"
    )
    print(f"{'phase':<32}{'ours msg/s':>12}{'store msg/s':>12}{'ratio':>8}{'store / bare':>14}")
    for what, ours, peer, bare in (
        ("send", send, store_send, peer_send),
        ("receive + delete", receive, store_receive, peer_receive),
        ("send + receive + delete", both, store_both, peer_both),
    ):
        print(f"{what:<32}{ours:>12,.0f}{peer:>12,.0f}{ours / peer:>8.2f}{peer / bare:>14.2f}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
