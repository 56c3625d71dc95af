"""Log group throughput: log events ingested per second with a metric filter
active, and the time of two Logs Insights queries: ``stats count() by bin(1m)``
and the latest 20 events (``sort @timestamp desc | limit 20``).

Each repeat uses a fresh SQLite file at the default durability (the state
database as the stores' backend opens it: WAL, synchronous=NORMAL).

- ingest: ``LogStore.put_log_events`` in batches of ``--batch`` (1,000) JSON
  messages of about 200 bytes, one stream, with one metric filter
  (``{ $.level = "ERROR" }``, one in ten lines) publishing into a real
  ``MetricStore`` on the same file;
- query: ``LogStore.query(group, "stats count() by bin(1m)")`` over
  ``--events`` (1,000,000) log events spread over about 17 hours (one event
  every 60 ms), written beforehand, untimed; then, on the same events,
  ``LogStore.query(group, "sort @timestamp desc | limit 20")``.

The peers, run in the same process on the same kind of file, are what SQLite
itself costs through aiosqlite: for ingest, the same rows inserted with
``executemany`` into a bare table with the same columns and index, one
transaction per batch (no checks, no metric filter); for the query, the same
count per minute as one SQL ``GROUP BY`` (SQLite's C code, no Python per
row), and the latest 20 as one ``ORDER BY ts DESC LIMIT 20``. Ratios are
ours / peer as rates (1.00: as fast as bare SQLite). ``--ingest 0`` skips
ingest. The load average is printed (two shared cores make figures noisy).

    python bench/bench_logs.py [--events 1000000] [--ingest 200000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from pipelines.clock import ManualClock
from pipelines.metrics import MetricStore
from pipelines.store import SQLITE
from plugins.logs.store import LogStore, MetricTransformation

INGEST_TARGET = 50_000  # log events per second
QUERY_TARGET = 2.0  # seconds for the query over 1M events
LATEST_TARGET = 1.0  # seconds for the latest 20 of 1M events
LATEST = "sort @timestamp desc | limit 20"
START = 1_700_000_000_000  # ms: the ManualClock's start
GROUP, STREAM = "bench", "web"

PEER_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, grp INTEGER NOT NULL, stream INTEGER NOT NULL,
    ts INTEGER NOT NULL, ingested INTEGER NOT NULL, message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_time ON events (grp, ts);
"""


async def peer_connection(path: Path) -> aiosqlite.Connection:
    """A bare aiosqlite connection set up as the stores' backend sets its own
    (WAL, synchronous=NORMAL), with the peer's tables."""
    db = (await SQLITE.connect(path, create=True, functions={})).raw
    await db.executescript(PEER_SCHEMA)
    return db


@contextlib.asynccontextmanager
async def peer_transaction(db: aiosqlite.Connection) -> AsyncIterator[None]:
    await db.execute("BEGIN IMMEDIATE")
    yield
    await db.execute("COMMIT")


def message(n: int) -> str:
    """A JSON log line of about 200 bytes; one in ten is an ERROR."""
    line = {
        "level": "ERROR" if n % 10 == 0 else "INFO",
        "service": f"svc-{n % 7}",
        "request_id": f"req-{n:012d}",
        "path": f"/api/v1/orders/{n % 5000}",
        "status": 500 if n % 10 == 0 else 200,
        "latency_ms": n % 997,
        "user": f"user-{n % 1234:06d}",
        "note": "x" * 40,
    }
    return orjson.dumps(line).decode()


def batches(count: int, size: int, start: int, step: int) -> list[list[dict[str, Any]]]:
    events = [{"timestamp": start + i * step, "message": message(i)} for i in range(count)]
    return [events[i : i + size] for i in range(0, count, size)]


async def ingest_ours(path: Path, work: list[list[dict[str, Any]]]) -> float:
    clock = ManualClock(START / 1000 + 3600)
    metrics = await MetricStore.open(path, clock)
    store = await LogStore.open(path, clock, metrics.put_metric_data)
    try:
        await store.create_log_group(GROUP)
        await store.create_log_stream(GROUP, STREAM)
        errors = MetricTransformation("Errors", "Bench", "1", unit="Count")
        await store.put_metric_filter(GROUP, "errors", '{ $.level = "ERROR" }', errors)
        began = time.perf_counter()
        for batch in work:
            answer = await store.put_log_events(GROUP, STREAM, batch)
            assert answer["acceptedCount"] == len(batch), answer
        await metrics.flush()
        elapsed = time.perf_counter() - began
        counted = await metrics.get_metric_statistics(
            "Bench", "Errors", start=START / 1000 - 60, end=START / 1000 + 7200, period=3600,
            statistics=["Sum"],
        )  # fmt: skip
        total = sum(p["Sum"] for p in counted["Datapoints"])
        assert total == sum(1 for b in work for e in b if '"ERROR"' in e["message"]), total
    finally:
        await store.close()
        await metrics.close()
    return sum(map(len, work)) / elapsed


async def ingest_peer(path: Path, work: list[list[dict[str, Any]]]) -> float:
    db = await peer_connection(path)
    try:
        began = time.perf_counter()
        for batch in work:
            rows = [(1, 1, e["timestamp"], START, e["message"]) for e in batch]
            async with peer_transaction(db):
                await db.executemany(
                    "INSERT INTO events (grp, stream, ts, ingested, message)"
                    " VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
        elapsed = time.perf_counter() - began
    finally:
        await db.close()
    return sum(map(len, work)) / elapsed


async def query_ours(path: Path, events: int) -> tuple[float, int, float]:
    """Seconds for stats by bin(1m), the number of bins, seconds for the latest 20."""
    clock = ManualClock(START / 1000 + events * 0.06 + 60)
    store = await LogStore.open(path, clock)
    try:
        await store.create_log_group(GROUP)
        await store.create_log_stream(GROUP, STREAM)
        for batch in batches(events, 4000, START, 60):  # within the 1 MiB a request takes
            await store.put_log_events(GROUP, STREAM, batch)
        began = time.perf_counter()
        result = await store.query(GROUP, "stats count() by bin(1m)")
        elapsed = time.perf_counter() - began
        counted = sum(int(row["count()"]) for row in result.rows)
        assert counted == events, counted
        began = time.perf_counter()
        latest = await store.query(GROUP, LATEST)
        latest_elapsed = time.perf_counter() - began
        assert [row["@message"] for row in latest.rows] == [
            message(n) for n in range(events - 1, events - 21, -1)
        ]
        assert latest.records_scanned == latest.records_matched == events
    finally:
        await store.close()
    return elapsed, len(result.rows), latest_elapsed


async def query_peer(path: Path, events: int) -> tuple[float, float]:
    """Seconds for the count per minute, and for the latest 20, in SQL."""
    db = await peer_connection(path)
    try:
        await db.executemany(
            "INSERT INTO events (grp, stream, ts, ingested, message) VALUES (1, 1, ?, 0, ?)",
            ((START + i * 60, message(i)) for i in range(events)),
        )
        began = time.perf_counter()
        rows = await db.execute_fetchall(
            "SELECT ts / 60000, count(*) FROM events WHERE grp = 1 GROUP BY ts / 60000"
        )
        elapsed = time.perf_counter() - began
        assert sum(r[1] for r in rows) == events
        began = time.perf_counter()
        rows = await db.execute_fetchall(
            "SELECT ts, message FROM events WHERE grp = 1 ORDER BY ts DESC, id LIMIT 20"
        )
        latest = time.perf_counter() - began
        assert len(list(rows)) == 20
    finally:
        await db.close()
    return elapsed, latest


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events the query reads")
    parser.add_argument("--ingest", type=int, default=200_000, help="events ingested per repeat")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    print(f"load average: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.ingest:
            await ingest(Path(tmp), args.ingest, args.batch, args.repeats)
        await queries(Path(tmp), args.events, args.repeats)
    print(f"load average: {os.getloadavg()}")


async def ingest(tmp: Path, count: int, size: int, repeats: int) -> None:
    work = batches(count, size, START, 1)
    mean = statistics.mean(len(e["message"]) for e in work[0])
    ours_rates, peer_rates = [], []
    for n in range(repeats):
        ours_rates.append(await ingest_ours(tmp / f"ours{n}.db", work))
        peer_rates.append(await ingest_peer(tmp / f"peer{n}.db", work))
    ours, peer = statistics.median(ours_rates), statistics.median(peer_rates)
    print(
        f"ingest: {count:,} log events of {mean:.0f} bytes in batches of"
        f" {size:,}, one metric filter; median of {repeats}"
    )
    print(f"  put_log_events   {ours:>10,.0f} events/s  (runs: {_runs(ours_rates)})")
    print(f"  bare SQLite      {peer:>10,.0f} events/s  (runs: {_runs(peer_rates)})")
    met = _verdict(ours >= INGEST_TARGET)
    print(f"  ratio {ours / peer:.2f}; target {INGEST_TARGET:,}/s: {met}")


async def queries(tmp: Path, events: int, repeats: int) -> None:
    times, peer_times, latest, peer_latest = [], [], [], []
    bins = 0
    for n in range(repeats):
        elapsed, bins, latest_elapsed = await query_ours(tmp / f"query{n}.db", events)
        times.append(elapsed)
        latest.append(latest_elapsed)
        peer_elapsed, peer_latest_elapsed = await query_peer(tmp / f"qpeer{n}.db", events)
        peer_times.append(peer_elapsed)
        peer_latest.append(peer_latest_elapsed)
    ours_t, peer_t = statistics.median(times), statistics.median(peer_times)
    print(
        f"query: stats count() by bin(1m) over {events:,} events ({bins:,} bins);"
        f" median of {repeats}"
    )
    print(f"  LogStore.query   {ours_t:>8.3f} s  (runs: {_runs(times, '.3f')})")
    print(f"  SQL GROUP BY     {peer_t:>8.3f} s  (runs: {_runs(peer_times, '.3f')})")
    print(
        f"  ratio (rate) {peer_t / ours_t:.2f}; target under {QUERY_TARGET:.0f} s:"
        f" {_verdict(ours_t < QUERY_TARGET)}"
    )
    ours_l, peer_l = statistics.median(latest), statistics.median(peer_latest)
    print(f"query: {LATEST} over {events:,} events; median of {repeats}")
    print(f"  LogStore.query   {ours_l:>8.4f} s  (runs: {_runs(latest, '.4f')})")
    print(f"  SQL LIMIT 20     {peer_l:>8.4f} s  (runs: {_runs(peer_latest, '.4f')})")
    print(
        f"  ratio (rate) {peer_l / ours_l:.2f}; target under {LATEST_TARGET:.0f} s:"
        f" {_verdict(ours_l < LATEST_TARGET)}"
    )


def _runs(values: list[float], spec: str = ",.0f") -> str:
    return ", ".join(format(v, spec) for v in values)


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


if __name__ == "__main__":
    asyncio.run(main())
