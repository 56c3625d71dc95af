r"""Log group throughput: log events ingested per second with a metric filter
active (without and with a field index policy), and the time of six Logs
Insights queries over 1M events in a group with a field index policy.

Each repeat uses a fresh SQLite file at the default durability (the state
database as the stores' backend opens it: WAL, synchronous=NORMAL).

- ingest: ``LogStore.put_log_events`` in batches of ``--batch`` (1,000) JSON
  messages of about 200 bytes, one stream, with one metric filter
  (``{ $.level = "ERROR" }``, one in ten lines) publishing into a real
  ``MetricStore`` on the same file; once without a field index policy, once
  with ``POLICY`` (what indexing costs at ingest);
- queries: ``LogStore.query`` over ``--events`` (1,000,000) log events spread
  over about 17 hours (one event every 60 ms), written beforehand, untimed;
  JSON messages of about 200 bytes (level, service, request id, path,
  status, latency_ms, user). Each query in ``QUERIES``: ``stats count() by
  bin(1m)``; a filter on a field (``filter level = "ERROR" | fields ...``:
  the newest 10,000 of 100,000 matches); a group by a field (``stats
  count(), avg(latency_ms) by service``); a regex plus avg (``filter path
  like /orders\/4\d\d$/ | stats avg(latency_ms)``); the latest 20
  (``sort @timestamp desc | limit 20``); and ``count(*)`` of a numeric range.
  The group has a field index policy (``PutIndexPolicy``, as a user would set
  on AWS) for the fields these queries search: ``POLICY``.

The peers, run in the same process on the same kind of file, are what SQLite
itself costs through the stores' backend (a connection on its own thread):
for ingest, the same rows inserted with ``executemany`` into a bare table
with the same columns and index, one
transaction per batch (no checks, no metric filter); for each query, one
hand-written SQL statement (or two: the rows and the count of matches) giving
the same answer, run twice: on columns holding the same fields extracted at
insert (the same layout as ours: the fair peer, whose ratio is printed) and
reading the JSON with JSON1's ``->>`` (what the previous layout could reach
at best); the regex through a Python ``regexp`` function, as a user of
SQLite would register it. The answers are checked equal. Ratios are ours /
peer as rates (1.00: as fast as bare SQLite).
``--ingest 0`` skips ingest; ``--only NAME`` runs one query; ``--no-policy``
queries a group without the policy (every field read from the JSON). The load
average is printed (two shared cores make figures noisy).

    python bench/bench_logs.py [--events 1000000] [--ingest 200000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from pipelines.clock import ManualClock
from pipelines.metrics import MetricStore
from pipelines.store import SQLITE, SQLFunction, SQLiteConnection
from plugins.logs.insights import QueryResult
from plugins.logs.store import LogStore, MetricTransformation

INGEST_TARGET = 50_000  # log events per second
QUERY_TARGET = 1.0  # seconds for each query over 1M events (issue 25)
LATEST = "sort @timestamp desc | limit 20"
START = 1_700_000_000_000  # ms: the ManualClock's start
GROUP, STREAM = "bench", "web"
#: The fields the queries search, indexed as a user would on AWS.
POLICY = {"Fields": ["level", "service", "path", "latency_ms", "status"]}

PEER_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, grp INTEGER NOT NULL, stream INTEGER NOT NULL,
    ts INTEGER NOT NULL, ingested INTEGER NOT NULL, message TEXT NOT NULL,
    level, service, path, latency_ms, status
);
CREATE INDEX IF NOT EXISTS events_by_time ON events (grp, ts);
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


async def ingest_ours(path: Path, work: list[list[dict[str, Any]]], indexed: bool) -> float:
    clock = ManualClock(START / 1000 + 3600)
    metrics = await MetricStore.open(path, clock)
    store = await LogStore.open(path, clock, metrics.put_metric_data)
    try:
        await store.create_log_group(GROUP)
        await store.create_log_stream(GROUP, STREAM)
        errors = MetricTransformation("Errors", "Bench", "1", unit="Count")
        await store.put_metric_filter(GROUP, "errors", '{ $.level = "ERROR" }', errors)
        if indexed:
            await store.put_index_policy(GROUP, POLICY)
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


@dataclass(frozen=True)
class Case:
    """A query, the peer's SQL for the same answer, and how to compare them."""

    name: str
    text: str
    peer: list[str]  # statements on the peer's extracted columns; the first gives the rows
    json_peer: list[str]  # the same reading the JSON messages
    answer: Callable[[QueryResult], Any]
    peer_answer: Callable[[list[list[Any]]], Any]


def _rows(result: QueryResult, *names: str) -> list[tuple[Any, ...]]:
    return [tuple(row.get(n) for n in names) for row in result.rows]


QUERIES = [
    Case(
        "bin(1m)",
        "stats count() by bin(1m)",
        ["SELECT ts - ts % 60000 AS m, count(*) FROM events WHERE grp = 1 GROUP BY m"],
        ["SELECT ts - ts % 60000 AS m, count(*) FROM events WHERE grp = 1 GROUP BY m"],
        lambda r: sorted(int(row["count()"]) for row in r.rows),
        lambda found: sorted(n for _, n in found[0]),
    ),
    Case(
        "filter field",
        'filter level = "ERROR" | fields @timestamp, request_id, latency_ms',
        [
            "SELECT message ->> '$.request_id', latency_ms FROM events"
            " WHERE grp = 1 AND level = 'ERROR' ORDER BY ts DESC, id DESC LIMIT 10000",
            "SELECT count(*) FROM events WHERE grp = 1 AND level = 'ERROR'",
        ],
        [
            "SELECT message ->> '$.request_id', message ->> '$.latency_ms' FROM events"
            " WHERE grp = 1 AND message ->> '$.level' = 'ERROR' ORDER BY ts DESC, id DESC"
            " LIMIT 10000",
            "SELECT count(*) FROM events WHERE grp = 1 AND message ->> '$.level' = 'ERROR'",
        ],
        lambda r: (_rows(r, "request_id", "latency_ms"), r.records_matched),
        lambda found: ([tuple(row) for row in found[0]], found[1][0][0]),
    ),
    Case(
        "group by field",
        "stats count() as n, avg(latency_ms) as ms by service",
        ["SELECT service, count(*), avg(latency_ms) FROM events WHERE grp = 1 GROUP BY service"],
        [
            "SELECT message ->> '$.service' AS svc, count(*), avg(message ->> '$.latency_ms')"
            " FROM events WHERE grp = 1 GROUP BY svc"
        ],
        lambda r: sorted(_rows(r, "service", "n", "ms")),
        lambda found: sorted(tuple(row) for row in found[0]),
    ),
    Case(
        "regex + avg",
        r"filter path like /orders\/4\d\d$/ | stats avg(latency_ms) as ms, count() as n",
        [
            "SELECT avg(latency_ms), count(*) FROM events WHERE grp = 1"
            r" AND regexp('orders/4\d\d$', path)"
        ],
        [
            "SELECT avg(message ->> '$.latency_ms'), count(*) FROM events"
            r" WHERE grp = 1 AND regexp('orders/4\d\d$', message ->> '$.path')"
        ],
        lambda r: _rows(r, "ms", "n"),
        lambda found: [tuple(found[0][0])],
    ),
    Case(
        "latest 20",
        LATEST,
        ["SELECT message FROM events WHERE grp = 1 ORDER BY ts DESC, id LIMIT 20"],
        ["SELECT message FROM events WHERE grp = 1 ORDER BY ts DESC, id LIMIT 20"],
        lambda r: [row["@message"] for row in r.rows],
        lambda found: [row[0] for row in found[0]],
    ),
    Case(
        "numeric range",
        "filter latency_ms >= 990 and status = 200 | stats count(*) as n",
        ["SELECT count(*) FROM events WHERE grp = 1 AND latency_ms >= 990 AND status = 200"],
        [
            "SELECT count(*) FROM events WHERE grp = 1"
            " AND message ->> '$.latency_ms' >= 990 AND message ->> '$.status' = 200"
        ],
        lambda r: _rows(r, "n"),
        lambda found: [tuple(found[0][0])],
    ),
]


async def fill_ours(path: Path, events: int, indexed: bool = True) -> LogStore:
    clock = ManualClock(START / 1000 + events * 0.06 + 60)
    store = await LogStore.open(path, clock)
    await store.create_log_group(GROUP)
    await store.create_log_stream(GROUP, STREAM)
    if indexed:
        await store.put_index_policy(GROUP, POLICY)
    for batch in batches(events, 4000, START, 60):  # within the 1 MiB a request takes
        await store.put_log_events(GROUP, STREAM, batch)
    return store


async def fill_peer(path: Path, events: int) -> SQLiteConnection:
    db = await peer_connection(path, {"regexp": (2, _regexp)})
    await db.executemany(
        "INSERT INTO events (grp, stream, ts, ingested, message, level, service, path,"
        " latency_ms, status) VALUES (1, 1, ?, 0, ?, ?, ?, ?, ?, ?)",
        (_peer_row(START + i * 60, message(i)) for i in range(events)),
    )
    return db


def _peer_row(ts: int, line: str) -> tuple[Any, ...]:
    """The peer's row: the message and its searched fields, read once at insert."""
    found = orjson.loads(line)
    return (ts, line, *(found.get(name) for name in POLICY["Fields"]))


def _regexp(pattern: str, value: Any) -> bool:
    return value is not None and re.search(pattern, str(value)) is not None


async def time_ours(store: LogStore, case: Case) -> tuple[float, Any]:
    began = time.perf_counter()
    result = await store.query(GROUP, case.text)
    return time.perf_counter() - began, case.answer(result)


async def time_peer(db: SQLiteConnection, case: Case, statements: list[str]) -> tuple[float, Any]:
    began = time.perf_counter()
    found = [list(await db.rows(sql)) for sql in statements]
    return time.perf_counter() - began, case.peer_answer(found)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events the query reads")
    parser.add_argument("--ingest", type=int, default=200_000, help="events ingested per repeat")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=[c.name for c in QUERIES], help="one query")
    parser.add_argument("--no-policy", action="store_true", help="query without field indexes")
    args = parser.parse_args()

    print(f"load average: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.ingest:
            await ingest(Path(tmp), args.ingest, args.batch, args.repeats)
        if args.events:
            await queries(Path(tmp), args.events, args.repeats, args.only, not args.no_policy)
    print(f"load average: {os.getloadavg()}")


async def ingest(tmp: Path, count: int, size: int, repeats: int) -> None:
    work = batches(count, size, START, 1)
    mean = statistics.mean(len(e["message"]) for e in work[0])
    ours_rates, indexed_rates, peer_rates = [], [], []
    for n in range(repeats):  # the three alternately, same conditions
        ours_rates.append(await ingest_ours(tmp / f"ours{n}.db", work, indexed=False))
        indexed_rates.append(await ingest_ours(tmp / f"indexed{n}.db", work, indexed=True))
        peer_rates.append(await ingest_peer(tmp / f"peer{n}.db", work))
    ours, peer = statistics.median(ours_rates), statistics.median(peer_rates)
    indexed = statistics.median(indexed_rates)
    print(
        f"ingest: {count:,} log events of {mean:.0f} bytes in batches of"
        f" {size:,}, one metric filter; median of {repeats}; load {os.getloadavg()}"
    )
    print(f"  put_log_events   {ours:>10,.0f} events/s  (runs: {_runs(ours_rates)})")
    runs = _runs(indexed_rates)
    print(f"  with {len(POLICY['Fields'])} indexed  {indexed:>10,.0f} events/s  (runs: {runs})")
    print(f"  bare SQLite      {peer:>10,.0f} events/s  (runs: {_runs(peer_rates)})")
    met = _verdict(ours >= INGEST_TARGET)
    print(f"  ratio {ours / peer:.2f}; target {INGEST_TARGET:,}/s: {met}")
    met = _verdict(indexed >= INGEST_TARGET)
    print(
        f"  indexed: ratio {indexed / peer:.2f} to bare, {indexed / ours:.2f} to unindexed;"
        f" target {INGEST_TARGET:,}/s: {met}"
    )


async def queries(tmp: Path, events: int, repeats: int, only: str | None, indexed: bool) -> None:
    cases = [c for c in QUERIES if only is None or c.name == only]
    ours: dict[str, list[float]] = {c.name: [] for c in cases}
    peers: dict[str, list[float]] = {c.name: [] for c in cases}
    json_peers: dict[str, list[float]] = {c.name: [] for c in cases}
    store = await fill_ours(tmp / "query.db", events, indexed)
    db = await fill_peer(tmp / "qpeer.db", events)
    try:
        for _ in range(repeats):  # ours and the peer alternately, same conditions
            for case in cases:
                elapsed, answer = await time_ours(store, case)
                peer_elapsed, peer_answer = await time_peer(db, case, case.peer)
                assert _same(answer, peer_answer), (case.name, answer, peer_answer)
                json_elapsed, json_answer = await time_peer(db, case, case.json_peer)
                assert _same(answer, json_answer), (case.name, answer, json_answer)
                ours[case.name].append(elapsed)
                peers[case.name].append(peer_elapsed)
                json_peers[case.name].append(json_elapsed)
    finally:
        await store.close()
        await db.close()
    print(
        f"queries over {events:,} events, policy {POLICY['Fields'] if indexed else None};"
        f" median of {repeats};"
        f" load {os.getloadavg()}"
    )
    for case in cases:
        o, p = statistics.median(ours[case.name]), statistics.median(peers[case.name])
        j = statistics.median(json_peers[case.name])
        print(f"  {case.name:<15} {case.text}")
        print(
            f"    LogStore.query {o:>8.3f} s  (runs: {_runs(ours[case.name], '.3f')});"
            f" bare SQLite on columns {p:.3f} s, ratio (rate) {p / o:.2f};"
            f" bare SQLite reading JSON {j:.3f} s;"
            f" target under {QUERY_TARGET:.0f} s: {_verdict(o < QUERY_TARGET)}"
        )


def _same(a: Any, b: Any) -> bool:
    """Equal, with floats equal to 12 digits (SQLite's avg and Python's
    division of the same integer sum may differ in the last bit)."""
    if isinstance(a, float | int) and isinstance(b, float | int):
        return math.isclose(a, b, rel_tol=1e-12)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _runs(values: list[float], spec: str = ",.0f") -> str:
    return ", ".join(format(v, spec) for v in values)


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


if __name__ == "__main__":
    asyncio.run(main())
