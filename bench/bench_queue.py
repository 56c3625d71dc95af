"""Durable queue throughput: send, receive and delete in batches of 10.

One producer task sends ``--messages`` messages with SendMessageBatch (10 per
call) while consumer tasks receive (10 per call, long polling) and delete
what they received with DeleteMessageBatch; the clock stops at the last
delete. Run with 1 consumer task and with 4, on a fresh SQLite file at the
default durability (WAL, synchronous=NORMAL: a sent message survives a
process crash). Phases are also timed alone: send only, then receive and
delete only from the full queue.

The peer, run in the same process over the same messages, batches and file
settings, is the least a SQLite queue can do: blocking stdlib ``sqlite3``
calls on one table, no validation, no attributes, no event loop. The ratio
says what SQS's semantics and never blocking the event loop (aiosqlite's
thread hop per statement) cost on top. (moto's in-memory SQS backend was
tried as a peer and left out: it managed about 50 sends a second.)

    python bench/bench_queue.py [--messages 20000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from plugins.queue.store import QueueStore, SendEntry

BODY = '{"source": "shop", "detail-type": "order", "detail": {"order": 12345, "total": 99.5}}'


def batches(count: int) -> list[list[SendEntry]]:
    entries = [SendEntry(BODY, {"n": n}, id=str(n % 10)) for n in range(count)]
    return [entries[start : start + 10] for start in range(0, count, 10)]


async def ours_end_to_end(path: Path, count: int, consumers: int) -> float:
    store = await QueueStore.open(path)
    await store.create_queue("bench")
    remaining = count
    done = asyncio.Event()
    finished = 0.0

    async def produce() -> None:
        for batch in batches(count):
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


async def ours_phases(path: Path, count: int) -> tuple[float, float]:
    store = await QueueStore.open(path)
    await store.create_queue("bench")
    started = time.perf_counter()
    for batch in batches(count):
        await store.send_batch("bench", batch)
    sent = time.perf_counter()
    received = 0
    while received < count:
        messages = await store.receive("bench", 10)
        await store.delete_batch(
            "bench", [(str(n), m.receipt_handle) for n, m in enumerate(messages)]
        )
        received += len(messages)
    finished = time.perf_counter()
    await store.close()
    return count / (sent - started), count / (finished - sent)


def bare_sqlite_phases(path: Path, count: int) -> tuple[float, float]:
    """The floor: the same file settings and batches through the stdlib's
    sqlite3, blocking, one table, no validation, no attributes, no event loop."""
    import sqlite3

    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE m (seq INTEGER PRIMARY KEY, body TEXT, visible REAL, receipt TEXT)")
    db.execute("CREATE INDEX m_visible ON m (visible, seq)")
    started = time.perf_counter()
    for batch in batches(count):
        db.execute("BEGIN")
        db.executemany("INSERT INTO m (body, visible) VALUES (?, 0)", [(e.body,) for e in batch])
        db.execute("COMMIT")
    sent = time.perf_counter()
    received = 0
    while received < count:
        token = str(received)
        rows = db.execute(
            "UPDATE m SET visible = ?, receipt = ? WHERE seq IN"
            " (SELECT seq FROM m WHERE visible <= ? ORDER BY visible, seq LIMIT 10)"
            " RETURNING seq, body",
            (time.time() + 30, token, time.time()),
        ).fetchall()
        marks = ", ".join("?" * len(rows))
        db.execute(
            f"DELETE FROM m WHERE seq IN ({marks}) AND receipt = ?", [r[0] for r in rows] + [token]
        )
        received += len(rows)
    finished = time.perf_counter()
    db.close()
    return count / (sent - started), count / (finished - sent)


def median_of(repeats: int, run: Callable[[], Any]) -> Any:
    results = [run() for _ in range(repeats)]
    if isinstance(results[0], tuple):
        return tuple(statistics.median(column) for column in zip(*results, strict=True))
    return statistics.median(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    count = args.messages

    with tempfile.TemporaryDirectory() as scratch:
        runs = iter(range(10_000))

        def fresh() -> Path:
            return Path(scratch) / f"state{next(runs)}.db"

        one = median_of(args.repeats, lambda: asyncio.run(ours_end_to_end(fresh(), count, 1)))
        four = median_of(args.repeats, lambda: asyncio.run(ours_end_to_end(fresh(), count, 4)))
        send, receive = median_of(args.repeats, lambda: asyncio.run(ours_phases(fresh(), count)))
        peer_send, peer_receive = median_of(
            args.repeats, lambda: bare_sqlite_phases(fresh(), count)
        )

    print(f"{count:,} messages of {len(BODY)} bytes, batches of 10, median of {args.repeats}")
    print(f"end to end, 1 producer + 1 consumer task:  {one:>9,.0f} msg/s")
    print(f"end to end, 1 producer + 4 consumer tasks: {four:>9,.0f} msg/s")
    print(f"{'phase':<24}{'ours msg/s':>12}{'bare msg/s':>12}{'ratio':>8}")
    print(f"{'send':<24}{send:>12,.0f}{peer_send:>12,.0f}{send / peer_send:>8.2f}")
    print(
        f"{'receive + delete':<24}{receive:>12,.0f}{peer_receive:>12,.0f}"
        f"{receive / peer_receive:>8.2f}"
    )
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
