"""The durable stores on SQLite and on PostgreSQL, section by section.

Each section is a function taking the ``Bench`` (arguments, a fresh SQLite
file or PostgreSQL database per run, medians, the table it prints) and is
named in ``SECTIONS``; ``--only`` runs some of them, all by default:
``queue`` (below), ``archive`` (appends by 8 writers on each engine),
``intake`` (the durable intake's events/s on SQLite, on PostgreSQL, and
with 2 runner processes sharing PostgreSQL: the cluster's scaling) and
``stream`` (put_records of 500 by 1 and 4 writers on each engine).
``queue`` prints ours over its peer's (below), the others PostgreSQL's
figures over SQLite's; ``--seconds`` is how long each ``intake`` run puts
events.

PostgreSQL: ``--postgres URL`` (an empty database is made on it per run),
else a private server is started as the tests start theirs
(``tests/postgres.py``: initdb in a temporary directory, ``fsync=off``,
``synchronous_commit=on``: a commit waits for its WAL write, not for the
disk, as SQLite's ``synchronous=NORMAL`` in WAL mode, the stores' default).

Section ``queue``:

- send, then receive + delete, in batches of 10 (SendMessageBatch,
  ReceiveMessage of 10, DeleteMessageBatch), one after the other on one
  store, on SQLite and on PostgreSQL; msgs/s of each phase and of the whole
  (messages over the time of both phases).
- the peer, on the same PostgreSQL: pgmq's published design done in plain
  SQL (a plain table with an identity ``msg_id``, a ``vt`` visibility time,
  a read count and a JSONB message; a send of 10 is one INSERT of an
  ``unnest``ed array; a read is ``SELECT ... ORDER BY msg_id LIMIT 10 FOR
  UPDATE SKIP LOCKED`` in a CTE whose UPDATE sets ``vt`` and counts the
  read; a delete is ``DELETE ... WHERE msg_id = ANY(...)``), each call one
  statement in autocommit on a psycopg 3 ``AsyncConnection``, as our
  store's connection is. Ours keeps more per message (SQS's attributes,
  per-queue counts by trigger, receipts, retention and FIFO indexes) and
  announces each send (NOTIFY) to the other runners' long polls.
- ANALYZED: on PostgreSQL both tables are analyzed between the phases
  (not timed), as autovacuum analyzes a table that changed this much
  within its minute. Without it our claim, planned on the statistics of
  an empty table, reads and sorts every visible message of the queue
  (PostgreSQL takes the visibility index for a handful of rows); pgmq's
  read, ordered by its primary key with a volatile time, is planned the
  same either way.
- runners sharing PostgreSQL: 1 and 3 processes, each a ``QueueStore`` on
  the one database with a producer (its share of the messages) and two
  consumers (receive, long polling, and delete) at once; msgs/s from the
  start to the last delete, every message received and deleted once.

    flock /tmp/pipelines-bench.lock python bench/bench_state.py \\
        [--repeats 3] [--only queue,archive,intake,stream] [--messages 10000] \\
        [--seconds 5] [--postgres URL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pipelines.process import tuned_process
from plugins.queue.store import QueueStore, SendEntry

T = TypeVar("T")

BODY = '{"source": "shop", "detail-type": "order", "detail": {"order": 12345, "total": 99.5}}'


class Bench:
    """What the sections share: the arguments, fresh databases, the table."""

    def __init__(self, args: argparse.Namespace, directory: Path) -> None:
        self.args = args
        self.repeats: int = args.repeats
        self.directory = directory
        self._server: Any = None
        self._names = itertools.count(1)

    @contextlib.contextmanager
    def location(self, engine: str) -> Iterator[str]:
        """A fresh, empty database of ``engine`` (``sqlite`` or ``postgresql``),
        dropped after the block: the dead rows of a run left behind would
        have autovacuum working through the runs after it."""
        if engine == "sqlite":
            path = self.directory / f"state{next(self._names)}.db"
            try:
                yield str(path)
            finally:
                for leftover in self.directory.glob(f"{path.name}*"):
                    leftover.unlink()
            return
        import psycopg

        admin = self._postgres()
        name = f"bench_{next(self._names)}_{os.getpid()}"
        with psycopg.connect(admin, autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        try:
            yield admin.rsplit("/", 1)[0] + f"/{name}"
        finally:
            with psycopg.connect(admin, autocommit=True) as db:
                db.execute(f'DROP DATABASE "{name}" WITH (FORCE)')

    def on(self, engine: str, run: Callable[[str], T]) -> T:
        """``run`` on a fresh database of ``engine``."""
        with self.location(engine) as location:
            return run(location)

    def _postgres(self) -> str:
        if self.args.postgres:
            return str(self.args.postgres)
        if self._server is None:
            self._server = private_postgres()
        return str(self._server.url())

    def close(self) -> None:
        if self._server is not None:
            try:
                self._server.stop()
            finally:
                shutil.rmtree(self._server.directory, ignore_errors=True)

    def median(self, run: Callable[[], Any]) -> Any:
        """The median of ``repeats`` runs (of each column, for tuples)."""
        results = [run() for _ in range(self.repeats)]
        if isinstance(results[0], tuple):
            return tuple(statistics.median(column) for column in zip(*results, strict=True))
        return statistics.median(results)

    @staticmethod
    def row(what: str, *rates: float | str) -> None:
        cells = "".join(
            f"{rate:>14,.0f}" if isinstance(rate, float) else f"{rate:>14}" for rate in rates
        )
        print(f"{what:<40}{cells}", flush=True)


def private_postgres() -> Any:
    """A private PostgreSQL server, started as the tests start theirs
    (``tests/postgres.py``); the run stops saying what is missing when
    PostgreSQL is not installed, rather than failing in the tests' helper."""
    installed = shutil.which("initdb") or any(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not installed:
        sys.exit(
            "PostgreSQL is not installed (no initdb on the PATH or under /usr/lib/postgresql):"
            " install it (scripts/system-packages) or give a server with --postgres URL"
            " (bench_states: or --no-postgres)"
        )
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.postgres import PostgresServer

    server = PostgresServer(Path(tempfile.mkdtemp(prefix="pipelines-pg-")))
    server.start()
    return server


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- the queue ---------------------------------------------------------------------------


def batches(count: int) -> list[list[SendEntry]]:
    entries = [SendEntry(BODY, {"n": n}, id=str(n % 10)) for n in range(count)]
    return [entries[start : start + 10] for start in range(0, count, 10)]


async def ours_phases(location: str, count: int) -> tuple[float, float]:
    """Send all in batches of 10, then receive 10 and delete them until all
    are gone: the seconds of each phase."""
    store = await QueueStore.open(location)
    try:
        await store.create_queue("bench")
        sending = batches(count)
        started = time.perf_counter()
        for batch in sending:
            await store.send_batch("bench", batch)
        sent = time.perf_counter()
        if store.dialect.name == "postgresql":
            await store.execute("ANALYZE queue_messages")  # see ANALYZED
            analyzed = time.perf_counter()
            started += analyzed - sent
            sent = analyzed
        received = 0
        while received < count:
            messages = await store.receive("bench", 10)
            deleted, _ = await store.delete_batch(
                "bench", [(str(n), m.receipt_handle) for n, m in enumerate(messages)]
            )
            received += len(deleted)
        finished = time.perf_counter()
    finally:
        await store.close()
    return sent - started, finished - sent


PGMQ_TABLE = """
CREATE TABLE q_bench (
    msg_id      BIGINT PRIMARY KEY GENERATED ALWAYS AS IDENTITY,
    read_ct     INTEGER NOT NULL DEFAULT 0,
    enqueued_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    vt          TIMESTAMP WITH TIME ZONE NOT NULL,
    message     JSONB
);
CREATE INDEX q_bench_vt ON q_bench (vt ASC);
"""
PGMQ_SEND = (
    "INSERT INTO q_bench (vt, message)"
    " SELECT clock_timestamp(), unnest(%s::jsonb[]) RETURNING msg_id"
)
PGMQ_READ = """
WITH cte AS (
    SELECT msg_id FROM q_bench WHERE vt <= clock_timestamp()
    ORDER BY msg_id ASC LIMIT %s FOR UPDATE SKIP LOCKED
)
UPDATE q_bench m SET vt = clock_timestamp() + make_interval(secs => %s), read_ct = read_ct + 1
FROM cte WHERE m.msg_id = cte.msg_id
RETURNING m.msg_id, m.read_ct, m.enqueued_at, m.vt, m.message
"""
PGMQ_DELETE = "DELETE FROM q_bench WHERE msg_id = ANY(%s) RETURNING msg_id"


async def pgmq_phases(location: str, count: int) -> tuple[float, float]:
    """pgmq's design in plain SQL, the same phases as ``ours_phases``."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(location, autocommit=True) as db:
        await db.execute(PGMQ_TABLE.encode())
        messages = [[BODY] * len(batch) for batch in batches(count)]
        started = time.perf_counter()
        for batch in messages:
            async with db.cursor() as cursor:
                await cursor.execute(PGMQ_SEND, (batch,))
                await cursor.fetchall()
        sent = time.perf_counter()
        await db.execute("ANALYZE q_bench")  # see ANALYZED
        analyzed = time.perf_counter()
        started += analyzed - sent
        sent = analyzed
        received = 0
        while received < count:
            async with db.cursor() as cursor:
                await cursor.execute(PGMQ_READ, (10, 30))
                read = await cursor.fetchall()
                await cursor.execute(PGMQ_DELETE, ([row[0] for row in read],))
                received += len(await cursor.fetchall())
        finished = time.perf_counter()
    return sent - started, finished - sent


def runner(
    location: str, count: int, go: Any, results: Any
) -> None:  # pragma: no cover - a process of its own
    """One runner: a store with a producer of ``count`` messages and two
    consumers that receive and delete until the queue stays empty; puts
    (messages deleted, wall time of its last delete, its CPU seconds
    meanwhile) in ``results``."""

    async def run() -> tuple[int, float, float]:
        store = await QueueStore.open(location)
        deleted = 0
        last = 0.0
        producing = True
        try:
            await asyncio.get_running_loop().run_in_executor(None, go.wait)
            cpu = time.process_time()

            async def produce() -> None:
                nonlocal producing
                for batch in batches(count):
                    await store.send_batch("bench", batch)
                producing = False

            async def consume() -> None:
                nonlocal deleted, last
                empty = 0
                while producing or empty < 2:
                    messages = await store.receive("bench", 10, wait_time=0.5)
                    if not messages:
                        empty += 1
                        continue
                    empty = 0
                    done, _ = await store.delete_batch(
                        "bench", [(str(n), m.receipt_handle) for n, m in enumerate(messages)]
                    )
                    deleted += len(done)
                    last = time.time()

            async with asyncio.TaskGroup() as group:
                group.create_task(produce())
                group.create_task(consume())
                group.create_task(consume())
        finally:
            await store.close()
        return deleted, last, time.process_time() - cpu

    with tuned_process():
        results.put(asyncio.run(run()))


def runners_rate(location: str, count: int, processes: int) -> tuple[float, float]:
    """Messages per second of ``processes`` runners sharing the queue, from
    the start to the last delete of any of them; and the runners' share of
    the machine's CPU time meanwhile (the rest: the server, and the others)."""

    async def create() -> None:
        async with await QueueStore.open(location) as store:
            await store.create_queue("bench")

    asyncio.run(create())
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    results = context.Queue()
    share = count // processes
    workers = [
        context.Process(target=runner, args=(location, share, go, results))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    time.sleep(1.5)  # every runner has opened its store (each waits for ``go``)
    started = time.time()
    go.set()
    done = [results.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join(60)
    total = sum(deleted for deleted, _, _ in done)
    if total != share * processes:
        raise SystemExit(f"{processes} runners deleted {total} messages of {share * processes}")
    took = max(last for _, last, _ in done) - started
    cpu = sum(seconds for _, _, seconds in done)
    return total / took, cpu / (took * (os.cpu_count() or 1))


def queue_section(bench: Bench) -> None:
    count = bench.args.messages
    print(
        f"queue: {count:,} messages of {len(BODY)} bytes, batches of 10, median of {bench.repeats}",
        flush=True,
    )
    bench.row("", "send", "recv+delete", "all")

    def rates(seconds: tuple[float, float]) -> tuple[float, float, float]:
        send, receive = seconds
        return count / send, count / receive, count / (send + receive)

    # The three take turns in each repeat, so that a change of the machine's
    # load meanwhile (it is shared) falls on all of them.
    runs: dict[str, list[tuple[float, float, float]]] = {}
    for _ in range(bench.repeats):
        for label, engine, phases in (
            ("ours, SQLite", "sqlite", ours_phases),
            ("ours, PostgreSQL", "postgresql", ours_phases),
            ("pgmq's design in SQL, PostgreSQL", "postgresql", pgmq_phases),
        ):
            runs.setdefault(label, []).append(
                rates(bench.on(engine, lambda at, run=phases: asyncio.run(run(at, count))))
            )
    found: dict[str, tuple[float, ...]] = {}
    for label, rows in runs.items():
        found[label] = tuple(statistics.median(column) for column in zip(*rows, strict=True))
        bench.row(f"{label} msg/s", *found[label])
    ours, peer = found["ours, PostgreSQL"], found["pgmq's design in SQL, PostgreSQL"]
    bench.row(
        "ours/pgmq on PostgreSQL", *(f"{o / p:.2f}x" for o, p in zip(ours, peer, strict=True))
    )
    print(f"load average: {load()}", flush=True)

    shared = bench.args.messages * 3
    print(
        f"queue: runners (processes) sharing PostgreSQL, {shared:,} messages,"
        " each runner 1 producer + 2 consumers",
        flush=True,
    )
    bench.row("", "msg/s", "ratio", "runners' CPU")
    one, one_cpu = bench.median(
        lambda: bench.on("postgresql", lambda at: runners_rate(at, shared, 1))
    )
    bench.row("1 runner", one, "", f"{one_cpu:.0%}")
    three, three_cpu = bench.median(
        lambda: bench.on("postgresql", lambda at: runners_rate(at, shared, 3))
    )
    bench.row("3 runners", three, f"{three / one:.2f}x", f"{three_cpu:.0%}")
    print(
        f"(runners' CPU: their processes' CPU time over the run's wall time on"
        f" {os.cpu_count()} cores; the server's backends have the rest)",
        flush=True,
    )
    print(f"load average: {load()}", flush=True)


# -- archive writes ------------------------------------------------------------------------


def archive_section(bench: Bench) -> None:
    """``ArchiveStore.append`` by 8 writers, batches of 10 events of about
    1 KB, on each engine (bench/bench_state_archive.py has the peers and
    the runtime's put_events with an archive)."""
    from bench_state_archive import batches as archive_batches
    from bench_state_archive import events as archive_events
    from bench_state_archive import store_rate

    count = bench.args.messages
    work = archive_batches(archive_events(count))
    print(f"archive: {count:,} events appended by 8 writers, batches of 10", flush=True)
    bench.row("", "events/s")
    rates: dict[str, float] = {}
    for label, engine in (("SQLite", "sqlite"), ("PostgreSQL", "postgresql")):
        rates[label] = bench.median(
            lambda engine=engine: bench.on(
                engine, lambda at: asyncio.run(store_rate(at, work, writers=8))
            )
        )
        bench.row(f"archive append, {label}", rates[label])
    bench.row("PostgreSQL / SQLite", f"{rates['PostgreSQL'] / rates['SQLite']:.2f}x")
    print(f"load average: {load()}", flush=True)


# -- the durable intake ------------------------------------------------------------------


async def noop(payload: Any) -> None:
    """The intake section's target: delivery costs next to nothing."""


async def intake_runner(
    location: str, name: str, seconds: float, start: float
) -> tuple[int, float]:
    """One runner: a Runtime with the durable intake and one rule matching
    every event, whose target is a no-op function (an event that matches no
    rule gets no intake row: it would not measure the intake). Each event is
    written before put_events answers and deleted once delivered; 16
    producers put batches of 10 for ``seconds`` from ``start``; the events
    acknowledged and the process's CPU seconds meanwhile."""
    from pipelines.runtime import Runtime

    shared = "://" in location
    runtime = Runtime(state_path=location, runner=name if shared else None)
    settings = {"function": "bench_state:noop", "max_concurrency": 64}
    runtime.add_resource("noop", "function", settings)
    runtime.bus().put_rule("all", pattern={"source": ["bench"]})
    await runtime.bus().put_targets("all", [{"id": "noop", "resource": "noop"}])
    await runtime.start()
    entries = [{"Source": "bench", "DetailType": "n", "Detail": '{"n": 1}'} for _ in range(10)]
    count = 0
    try:
        await asyncio.sleep(max(start - time.time(), 0))
        deadline = time.monotonic() + seconds
        cpu = time.process_time()

        async def produce() -> None:
            nonlocal count
            while time.monotonic() < deadline:
                answer = await runtime.put_events(entries)
                count += 10 - answer["FailedEntryCount"]

        await asyncio.gather(*(produce() for _ in range(16)))
        cpu = time.process_time() - cpu
    finally:
        await runtime.stop(5)
    return count, cpu


def _intake_process(location: str, name: str, seconds: float, start: float, out: Any) -> None:
    out.send(asyncio.run(intake_runner(location, name, seconds, start)))


def intake_rate(location: str, runners: int, seconds: float) -> tuple[float, float]:
    """Events/s of ``runners`` processes on ``location`` at once, and their
    share of the machine's CPU."""
    context = multiprocessing.get_context("spawn")
    start = time.time() + 3.0  # every runner started and connected by then
    pipes = [context.Pipe(duplex=False) for _ in range(runners)]
    processes = [
        context.Process(
            target=_intake_process, args=(location, f"bench-{i}", seconds, start, sender)
        )
        for i, (_, sender) in enumerate(pipes)
    ]
    for process in processes:
        process.start()
    results = [receiver.recv() for receiver, _ in pipes]
    for process in processes:
        process.join(timeout=60)
    events = sum(count for count, _ in results)
    cpu = sum(seconds_used for _, seconds_used in results)
    return events / seconds, cpu / seconds / (os.cpu_count() or 1)


def intake_section(bench: Bench) -> None:
    seconds = bench.args.seconds
    print(
        "durable intake: put_events in batches of 10 by 16 producers per runner, one rule"
        f" to a no-op function,"
        f" {seconds:g} s",
        flush=True,
    )
    bench.row("", "events/s", "ratio", "runners' CPU")
    found: dict[str, float] = {}
    for label, engine, runners in (
        ("SQLite, 1 runner", "sqlite", 1),
        ("PostgreSQL, 1 runner", "postgresql", 1),
        ("PostgreSQL, 2 runners", "postgresql", 2),
    ):
        rate, cpu = bench.median(
            lambda engine=engine, runners=runners: bench.on(
                engine, lambda at: intake_rate(at, runners, seconds)
            )
        )
        found[label] = rate
        ratio = {
            "PostgreSQL, 1 runner": f"{rate / found['SQLite, 1 runner']:.2f}x",
            "PostgreSQL, 2 runners": f"{rate / found.get('PostgreSQL, 1 runner', rate):.2f}x",
        }.get(label, "")
        bench.row(label, rate, ratio, f"{cpu:.0%}")
    print("(ratios: PostgreSQL/SQLite, 2 runners/1 runner; target 1.3x)", flush=True)
    print(f"load average: {load()}", flush=True)


# -- stream put_records ------------------------------------------------------------------


async def stream_rate(location: str, count: int, writers: int) -> float:
    """Records/s of ``writers`` tasks putting batches of 500 records of about
    100 bytes into a 4-shard stream (PutRecords' largest batch)."""
    from plugins.stream.store import StreamStore

    records = [
        {
            "Data": (b'{"user": "u%d", "n": %d, "pad": "' % (n % 97, n)) + b"x" * 64 + b'"}',
            "PartitionKey": f"u{n % 97}",
        }
        for n in range(count)
    ]
    work = [records[i : i + 500] for i in range(0, count, 500)]
    async with await StreamStore.open(location) as store:
        await store.create_stream("bench", 4)

        async def write(mine: list[list[dict[str, Any]]]) -> None:
            for batch in mine:
                answer = await store.put_records("bench", batch)
                if answer["FailedRecordCount"]:
                    raise SystemExit(f"{answer['FailedRecordCount']} records failed")

        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for w in range(writers):
                group.create_task(write(work[w::writers]))
        return count / (time.perf_counter() - started)


def stream_section(bench: Bench) -> None:
    count = bench.args.messages * 5
    print(f"stream: {count:,} records, PutRecords of 500, 4 shards", flush=True)
    bench.row("", "1 writer", "4 writers")
    rates: dict[str, tuple[float, ...]] = {}
    for label, engine in (("SQLite", "sqlite"), ("PostgreSQL", "postgresql")):
        rates[label] = bench.median(
            lambda engine=engine: tuple(
                bench.on(engine, lambda at, w=writers: asyncio.run(stream_rate(at, count, w)))
                for writers in (1, 4)
            )
        )
        bench.row(f"put_records records/s, {label}", *rates[label])
    ratios = (f"{p / s:.2f}x" for p, s in zip(rates["PostgreSQL"], rates["SQLite"], strict=True))
    bench.row("PostgreSQL / SQLite", *ratios)
    print(f"load average: {load()}", flush=True)


#: The sections, in the order they run: each a function of the ``Bench``.
SECTIONS: dict[str, Callable[[Bench], None]] = {
    "queue": queue_section,
    "archive": archive_section,
    "intake": intake_section,
    "stream": stream_section,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"sections, of {', '.join(SECTIONS)}"
    )
    parser.add_argument("--messages", type=int, default=10_000, help="queue messages per run")
    parser.add_argument("--postgres", default="", help="a server's URL (default: a private one)")
    parser.add_argument("--seconds", type=float, default=5.0, help="intake: seconds per run")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown sections {', '.join(unknown)} (known: {', '.join(SECTIONS)})")
    print(f"load average at start: {load()}", flush=True)
    with tempfile.TemporaryDirectory() as scratch, tuned_process():
        bench = Bench(args, Path(scratch))
        try:
            for name in chosen:
                SECTIONS[name](bench)
        finally:
            bench.close()
    print(f"load average at end: {load()}", flush=True)


if __name__ == "__main__":
    main()
