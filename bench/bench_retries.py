"""Pending retries during an outage: how fast failures are saved, and what a
waiting retry costs in memory.

First, the save path alone: ``--events`` failures saved by 1,000 failing
workers (a target's concurrency of 1,000), each saving its jobs' rows one
after the other as the deliverer does: through the group-commit writer
(``PendingWriter``) and, against it in the same run, one ``save_pending``
commit each (the path before group commit); the ratio of the two is printed.

Failures saved per second end to end: a ``function`` target that always raises (a
retryable failure) under a load of 16 producers putting PutEvents-sized
batches; the clock stops when every event's retry is saved (its row
committed: the job is then settled). The backoff is an hour, so no retry comes
due during the run. With ``durability: memory`` the intake writes nothing and
the figure is the retry path's own; with the durable intake its writes share
the database. The peer, in the same process: bare SQLite (``sqlite3``, WAL,
synchronous=NORMAL as the store sets them) doing the same statements over the
same rows: one ``INSERT ... ON CONFLICT`` per commit (what each failure cost
before group commit), and the same upsert executed for a whole group in one
transaction (as the group commit writes), in groups of the size the runtime
made.

Memory per pending retry: ``--pending`` (default 100,000) events fail once and
wait for their retry; tracemalloc's traced memory after they all wait, minus
before the first put, over their number (the intake's rows are deleted by
then, so what is left is what waiting costs).

The load average is printed before and after; figures are medians of
``--repeats`` runs.

Before and after: run the code at another commit by putting its ``pipelines``
and ``plugins`` first on the path, e.g.

    git archive BASE pipelines plugins | tar -x -C /tmp/base
    PYTHONPATH=/tmp/base python bench/bench_retries.py

    python bench/bench_retries.py [--events 50000] [--pending 100000] [--repeats 3]
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
import tracemalloc
from pathlib import Path
from typing import Any

import orjson

import pipelines
from pipelines.delivery import Backoff
from pipelines.limits import Limits
from pipelines.runtime import Runtime

#: One INSERT per failure (how ``save_pending`` writes a row).
ONE_ROW = (
    "INSERT INTO pending_deliveries (key, bus, rule, target_id, event, ingested, attempts, due,"
    " error_code, error_message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT(key) DO UPDATE SET attempts = excluded.attempts, due = excluded.due,"
    " error_code = excluded.error_code, error_message = excluded.error_message"
)
TABLE = """CREATE TABLE pending_deliveries (
    key TEXT PRIMARY KEY, bus TEXT NOT NULL, rule TEXT NOT NULL, target_id TEXT NOT NULL,
    event BLOB NOT NULL, ingested REAL NOT NULL, attempts INTEGER NOT NULL, due REAL NOT NULL,
    error_code TEXT, error_message TEXT)"""


async def fail(payload: Any) -> None:
    raise RuntimeError("card service down")


def entries(count: int) -> list[dict[str, Any]]:
    """Orders of a realistic size (about 600 bytes of event each)."""
    return [
        {
            "Source": "bench.shop",
            "DetailType": "Order Placed",
            "Resources": [f"arn:aws:shop:eu-west-1:123456789012:order/{n}"],
            "Detail": json.dumps(
                {
                    "order": n,
                    "customer": {"id": f"c-{n % 9973}", "tier": "gold", "country": "DE"},
                    "lines": [{"sku": f"sku-{n % 101 + k}", "qty": k + 1} for k in range(4)],
                    "total": n % 997,
                    "note": "x" * 120,
                }
            ),
        }
        for n in range(count)
    ]


def build(state: Path, durability: str) -> Runtime:
    runtime = Runtime(
        limits=Limits(
            intake_size=10_000, target_queue_size=10_000, backoff=Backoff(3600.0, 3600.0)
        ),
        state_path=state,
        durability=durability,
    )
    runtime.add_resource("down", "function", {"function": "__main__:fail", "max_concurrency": 1000})
    runtime.bus().put_rule("orders", pattern={"source": ["bench.shop"]})
    return runtime


def pending_writes(runtime: Runtime) -> int | None:
    """Statements the group commit wrote (None: code without group commit)."""
    writer = getattr(runtime.deliverer, "pending", None)
    return getattr(writer.store, "pending_writes", None) if writer is not None else None


async def put_all(runtime: Runtime, batch: list[dict[str, Any]], producers: int) -> None:
    calls = [batch[offset : offset + 10] for offset in range(0, len(batch), 10)]

    async def produce(first: int) -> None:
        for call in calls[first::producers]:
            await runtime.put_events(call)

    await asyncio.gather(*(produce(first) for first in range(producers)))


async def until_waiting(runtime: Runtime, count: int) -> None:
    while len(runtime.deliverer.retries) < count:
        await asyncio.sleep(0.001)


async def failures_saved(
    directory: Path, batch: list[dict[str, Any]], durability: str
) -> tuple[float, int | None]:
    """Failures saved per second, and the statements that saved them."""
    state = directory / f"state-{time.monotonic_ns()}.db"
    runtime = build(state, durability)
    await runtime.bus().put_targets("orders", [{"id": "t", "resource": "down"}])
    logging_off()
    async with runtime:
        start = time.perf_counter()
        await put_all(runtime, batch, producers=16)
        await until_waiting(runtime, len(batch))
        elapsed = time.perf_counter() - start
        writes = pending_writes(runtime)
    with sqlite3.connect(state) as db:
        [(saved,)] = db.execute("SELECT count(*) FROM pending_deliveries")
    assert saved == len(batch), (saved, len(batch))
    return len(batch) / elapsed, writes


def logging_off() -> None:
    """A storm of failures is logged at most 5 lines per 10 s; the rest is noise here."""
    import logging

    logging.getLogger("pipelines").setLevel(logging.CRITICAL)


def peer_rows(count: int) -> list[tuple[Any, ...]]:
    now = time.time()
    return [
        (
            str(n + 1),
            "default",
            "orders",
            "t",
            orjson.dumps({"id": f"e-{n}", "detail": {"order": n, "note": "x" * 400}}).decode(),
            now,
            1,
            now + 3600,
            "RuntimeError",
            "card service down",
        )
        for n in range(count)
    ]


def peer(directory: Path, rows: list[tuple[Any, ...]], group: int) -> float:
    """Bare SQLite: ``group`` rows per commit (1: one statement, autocommitted, per row)."""
    db = sqlite3.connect(directory / f"peer-{time.monotonic_ns()}.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(TABLE)
    start = time.perf_counter()
    if group == 1:
        for row in rows:
            db.execute(ONE_ROW, row)
    else:
        for first in range(0, len(rows), group):
            db.execute("BEGIN IMMEDIATE")
            db.executemany(ONE_ROW, rows[first : first + group])
            db.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.close()
    return len(rows) / elapsed


async def save_stage(directory: Path, count: int, grouped: bool, workers: int = 1000) -> float:
    """Failures saved per second by the save path alone: ``workers`` failing
    workers (a target's concurrency) each saving its jobs' rows one after the
    other, as ``Deliverer._persist`` does: through the group-commit writer,
    or one ``save_pending`` commit each (the path before group commit)."""
    from pipelines.event import dump_json
    from pipelines.state import StateDB

    db = await StateDB.open(directory / f"stage-{time.monotonic_ns()}.db")
    events = [{"id": f"e-{n}", "detail": {"order": n, "note": "x" * 400}} for n in range(count)]
    now = time.time()
    writing: asyncio.Task[None] | None = None
    try:
        if grouped:
            from pipelines.pending import PendingWriter

            writer = PendingWriter(db)
            writing = asyncio.create_task(writer.run())
            await asyncio.sleep(0)

            async def save(n: int) -> None:
                text = dump_json(events[n]).decode()
                row = (str(n + 1), "default", "orders", "t", text, now, 1, now + 3600)
                await writer.save((*row, "RuntimeError", "card service down"))

        else:

            async def save(n: int) -> None:
                await db.save_pending(
                    str(n + 1), "default", "orders", "t", events[n], now, 1, now + 3600,
                    ("RuntimeError", "card service down"),
                )  # fmt: skip

        async def work(first: int) -> None:
            for n in range(first, count, workers):
                await save(n)

        start = time.perf_counter()
        await asyncio.gather(*(work(first) for first in range(workers)))
        elapsed = time.perf_counter() - start
        assert await db.scalar("SELECT count(*) FROM pending_deliveries") == count
    finally:
        if writing is not None:
            writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)
        await db.close()
    return count / elapsed


def has_group_commit() -> bool:
    try:
        import pipelines.pending  # noqa: F401
    except ImportError:
        return False
    return True


async def memory_per_retry(directory: Path, batch: list[dict[str, Any]]) -> float:
    """Bytes of traced memory per waiting retry."""
    state = directory / f"memory-{time.monotonic_ns()}.db"
    runtime = build(state, "durable")
    await runtime.bus().put_targets("orders", [{"id": "t", "resource": "down"}])
    logging_off()
    async with runtime:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        await put_all(runtime, batch, producers=16)
        await until_waiting(runtime, len(batch))
        await runtime.wait_until_idle()
        del batch
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        waiting = len(runtime.deliverer.retries)
    return (after - before) / waiting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--pending", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"code: {Path(pipelines.__file__).parent}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        paths = [False, True] if has_group_commit() else [False]
        stage: dict[bool, float] = {}
        for grouped in paths:
            runs = [
                asyncio.run(save_stage(directory, args.events, grouped))
                for _ in range(args.repeats)
            ]
            stage[grouped] = statistics.median(runs)
            label = "group commit (PendingWriter)" if grouped else "one commit each (save_pending)"
            print(
                f"save path, 1,000 failing workers, {label:<31}: {stage[grouped]:>9,.0f}/s"
                f"  (runs: {', '.join(f'{r:,.0f}' for r in runs)})"
            )
        if True in stage:
            print(f"ratio group commit / one commit each: {stage[True] / stage[False]:.1f}")
        batch = entries(args.events)
        for durability in ("memory", "durable"):
            rates, writes = [], []
            for _ in range(args.repeats):
                rate, wrote = asyncio.run(failures_saved(directory, batch, durability))
                rates.append(rate)
                writes.append(wrote)
            ours = statistics.median(rates)
            groups = [args.events / w for w in writes if w]
            group = max(round(statistics.median(groups)), 1) if groups else 1
            print(
                f"failures saved ({durability:>7} intake): {ours:>9,.0f}/s"
                f"  (runs: {', '.join(f'{r:,.0f}' for r in rates)};"
                f" statements: {writes}, ~{group} rows each)"
            )
        rows = peer_rows(args.events)
        one = statistics.median(peer(directory, rows, 1) for _ in range(args.repeats))
        grouped = statistics.median(peer(directory, rows, group) for _ in range(args.repeats))
        print(f"peer, bare SQLite, one row per commit:     {one:>9,.0f}/s")
        print(f"peer, bare SQLite, {group:>5} rows per commit: {grouped:>9,.0f}/s")
        best = stage.get(True, stage[False])
        print(
            f"ratio save path / peer one row: {best / one:.2f}; / peer grouped:"
            f" {best / grouped:.2f};  end to end (durable) / peer grouped: {ours / grouped:.2f}"
        )
        per = asyncio.run(memory_per_retry(directory, entries(args.pending)))
        print(f"memory per pending retry at {args.pending:,} pending: {per:,.0f} bytes")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
