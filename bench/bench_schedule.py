"""Scheduler cost and firing accuracy with 10,000 ``rate(1 minute)`` schedules.

The runtime runs as a pipeline does: a state database (durable intake,
schedule marks, the metric store the bus's counters are flushed into). The
rules have no targets, so what is measured is the scheduler and what a run
costs the bus and the state database (building each scheduled event, its
intake row written and deleted, its mark, dispatching it, its rule's
counters and their metric series), not any delivery. All runs are real
time on the system clock, in one process.

Two cases, each timed with ``time.process_time()`` over whole minutes: the
first minute (from the runtime's start: opening the state database, what
the start imports, saving 10,000 marks, the first firings, which create the
rules' metric series) and the minutes after it (steady state). Each case
runs in a process of its own (``--case both`` starts one per case): in one
process the second case's start would find the first one's imports done
and its caches warm, and its first minute would not be a first minute.

1. Staggered: start dates spread evenly over the minute, so a run is due
   every 6 ms.
2. Aligned: every schedule is due at the same second, once a minute (what
   10,000 "every minute" jobs look like): one burst a minute.

The runtime starts 3 s before the first run is due (``START_MARGIN``),
whatever the time the rules took to build: the start dates are picked
ahead of the build by a margin measured from it, and the runtime waits
until 3 s before the first. They were once picked 3 s ahead before the
build: a loaded machine took longer than that to build 10,000 rules, every
aligned rule was placed after its start date had passed, its first run was
the next minute's, and the first minute fired nothing (and a staggered
first minute held more or fewer runs with the load). Now a first minute
holds every aligned run and the staggered runs due in its last 57 s.

Each minute's CPU is split into the event loop's thread
(``time.thread_time``: the scheduler, the bus, building the events and the
metric store's rows) and the rest (SQLite's threads, one per connection,
running the statements); the first minute also shows the start alone (the
CPU until ``Runtime.start`` returns: opening the state database, the
plugins' restorers, and the scheduler's first turn, which places the rules
and saves their marks meanwhile).

Lateness is the time a run's event is dispatched (``Runtime.tap``) minus its
scheduled time, as percentiles.

Peers, in the same run, doing the same number of runs: one asyncio task per
schedule, each sleeping until its next run and building the same event (CPU
share over ``--peer-seconds``, staggered), and a loop that checks every
schedule once a second (its share while nothing is due). Neither writes
anything, so they are a floor for the design, not for the durable work. The
floor for that is the bare store: ``sqlite3`` (WAL, synchronous=NORMAL, as
the store sets them) running a minute's statements of the batched design
back to back: each second one intake INSERT of 167 scheduled events and one
DELETE of them (``pipelines.intake``'s statements), one upsert of 167 marks,
and every 5 s the metric rows of the runs' two counters (20,000 a minute,
in one statement a flush, as ``pipelines.metrics`` writes a harvest);
its CPU per minute is the share of one core, and each case's minutes are
printed over it (first minute, median steady minute). The load average is
printed beside each case.

Before and after: run this script against the code of another commit by
putting its ``pipelines`` first on the path, e.g.

    git archive BASE pipelines plugins | tar -x -C /tmp/base
    PYTHONPATH=/tmp/base python bench/bench_schedule.py

    python bench/bench_schedule.py [--schedules 10000] [--minutes 1]
        [--peer-seconds 30] [--case staggered|aligned|both]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

import pipelines
from pipelines.event import dump_json, make_event
from pipelines.intake import delete_statement, insert_statement
from pipelines.limits import Limits
from pipelines.process import settle_heap, tuned_process
from pipelines.runtime import Runtime
from pipelines.state import SCHEMA
from pipelines.store import SQLITE

#: The intake's own statements, as the runtime runs them on SQLite.
INSERT = insert_statement(SQLITE.dialect)
DELETE = delete_statement(SQLITE.dialect)

MARKS = (
    "INSERT INTO schedule_marks (bus, rule, fingerprint, anchor, last_due) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (bus, rule) DO UPDATE SET fingerprint = excluded.fingerprint,"
    " anchor = excluded.anchor, last_due = excluded.last_due"
)
# The metric store's table (version 2: no index of time alone) and its
# statement for a harvest's counts, one JSON array of [series, count,
# distribution] (``pipelines.metrics``).
METRIC_DATA = """CREATE TABLE metric_data (
    series INTEGER NOT NULL, time INTEGER NOT NULL, unit TEXT NOT NULL, count REAL NOT NULL,
    sum REAL NOT NULL, min REAL NOT NULL, max REAL NOT NULL, dist BLOB,
    PRIMARY KEY (series, time, unit)) WITHOUT ROWID;"""
METRIC_UPSERT = (
    "INSERT INTO metric_data (series, time, unit, count, sum, min, max, dist)"
    " SELECT r.value ->> 0, ?, 'Count', 1.0, r.value ->> 1, r.value ->> 1, r.value ->> 1,"
    " CAST(r.value ->> 2 AS BLOB) FROM json_each(?) AS r WHERE true"
    " ON CONFLICT (series, time, unit) DO UPDATE SET"
    " count = count + excluded.count, sum = sum + excluded.sum"
)

MINUTE = 60.0
#: From the runtime's start to the first run (see ``build_ahead``).
START_MARGIN = 3.0


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def build(runtime: Runtime, starts: list[float]) -> None:
    bus = runtime.bus()
    for n, start in enumerate(starts):
        bus.put_rule(
            f"every-minute-{n}", schedule={"expression": "rate(1 minute)", "start_date": iso(start)}
        )


@dataclass
class Minute:
    cpu: float = 0.0
    #: Of ``cpu``, the event loop's thread (the rest: SQLite's threads).
    loop: float = 0.0
    lateness: list[float] = field(default_factory=list)


def starts_after(count: int, spread: float, margin: float) -> list[float]:
    """Start dates from the whole second ``margin`` seconds from now on."""
    first = float(math.ceil(time.time() + margin))
    return [first + spread * n / count for n in range(count)]


def build_ahead(runtime: Runtime, count: int, spread: float) -> list[float]:
    """Build the rules with their first run START_MARGIN seconds after the
    runtime is to start (see ``scheduler``), however long the build takes.
    The first run is put ahead of the build by a margin measured from it:
    START_MARGIN plus as long as the build took. A build that overran it
    (a loaded machine) is done again with later start dates (a rule put
    again is updated)."""
    took = 0.0
    while True:
        began = time.monotonic()
        starts = starts_after(count, spread, START_MARGIN + max(START_MARGIN, 2 * took))
        build(runtime, starts)
        took = time.monotonic() - began
        if time.time() + START_MARGIN <= starts[0]:
            return starts


async def scheduler(
    count: int, spread: float, minutes: int, state: Path
) -> tuple[list[Minute], float, str]:
    """The runtime's CPU and lateness per whole minute from its start (the
    first one included), the CPU of the start alone, and where its figures
    came from."""
    runtime = Runtime(state_path=state, limits=Limits(intake_size=count))
    starts = build_ahead(runtime, count, spread)
    # The runtime starts START_MARGIN seconds before the first run, however
    # long the build took: every run and every case has as long to wait.
    await asyncio.sleep(max(starts[0] - START_MARGIN - time.time(), 0))
    periods = [Minute() for _ in range(minutes + 1)]
    current = periods[0]

    def observe(bus: str, event: dict[str, Any]) -> None:
        # The rule's number is the ARN's tail; its runs are due at its start
        # plus whole minutes, so lateness is the time since then, mod a minute.
        n = int(event["resources"][0].rpartition("-")[2])
        current.lateness.append((time.time() - starts[n]) % MINUTE)

    began_wall, began_cpu, began_loop = time.time(), time.process_time(), time.thread_time()
    async with runtime:
        start = time.process_time() - began_cpu
        settle_heap()  # as ``pipelines run`` does once the runtime has started
        with runtime.tap(observe):
            for index, period in enumerate(periods):
                current = period
                await asyncio.sleep(max(began_wall + MINUTE * (index + 1) - time.time(), 0))
                cpu, loop = time.process_time(), time.thread_time()
                period.cpu, began_cpu = cpu - began_cpu, cpu
                period.loop, began_loop = loop - began_loop, loop
    return periods, start, f"{runtime.scheduler.fired} runs fired"


async def cpu_share(seconds: float) -> float:
    started = time.process_time()
    await asyncio.sleep(seconds)
    return (time.process_time() - started) / seconds


async def polling_peer(count: int, seconds: float) -> float:
    """A scheduler that checks every schedule once a second: its CPU share
    while nothing is due."""
    dues = [time.time() + 3600.0 + n for n in range(count)]

    async def poll() -> None:
        while True:
            now = time.time()
            for index, due in enumerate(dues):
                if due <= now:
                    dues[index] = due + MINUTE
            await asyncio.sleep(1.0)

    async with asyncio.TaskGroup() as group:
        task = group.create_task(poll())
        await asyncio.sleep(1.5)
        share = await cpu_share(seconds)
        task.cancel()
    return share


async def task_peer(count: int, seconds: float) -> tuple[float, list[float]]:
    """One task per schedule, each sleeping until its next run (staggered)."""
    lateness: list[float] = []
    fired: list[dict[str, Any]] = []
    first = time.time() + 2

    async def schedule(start: float) -> None:
        due = start
        while True:
            await asyncio.sleep(max(due - time.time(), 0))
            lateness.append(time.time() - due)
            fired.append(
                make_event(
                    "aws.events",
                    "Scheduled Event",
                    {},
                    resources=["r"],
                    time=datetime.fromtimestamp(due, UTC),
                )
            )
            if len(fired) > 1000:
                fired.clear()
            due += MINUTE

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(schedule(first + MINUTE * n / count)) for n in range(count)]
        await asyncio.sleep(2)
        lateness.clear()
        share = await cpu_share(seconds)
        for task in tasks:
            task.cancel()
    return share, lateness


def bare_store(count: int, state: Path) -> float:
    """CPU seconds of bare SQLite running one minute of the batched design's
    statements for ``count`` schedules (see the module's docstring)."""
    db = sqlite3.connect(state, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(SCHEMA + METRIC_DATA)
    per_second = count // 60
    addressed = orjson.dumps("every-minute-0").decode()
    one = orjson.dumps([False, [[1.0, 1.0]]]).decode()
    started, seq = time.process_time(), 0
    for second in range(60):
        rows, marks = [], []
        for n in range(second * per_second, (second + 1) * per_second):
            event = make_event("aws.events", "Scheduled Event", resources=[f"arn:rule/r-{n}"])
            seq += 1
            rows.append((seq, "default", dump_json(event).decode(), time.time(), addressed))
            marks.append(("default", f"every-minute-{n}", "rate(1 minute)", 0.0, float(second)))
        db.execute(INSERT, ("", orjson.dumps(rows)))
        db.execute("BEGIN IMMEDIATE")
        db.executemany(MARKS, marks)
        db.execute("COMMIT")
        db.execute(DELETE, ("", orjson.dumps([row[0] for row in rows])))
        if second % 5 == 4:  # the metric store's flush: both counters of the runs since
            first = (second - 4) * per_second * 2
            db.execute("BEGIN IMMEDIATE")
            counts = [(s, 1.0, one) for s in range(first, first + 10 * per_second)]
            db.execute(METRIC_UPSERT, (0, orjson.dumps(counts)))
            db.execute("COMMIT")
    spent = time.process_time() - started
    db.close()
    return spent


def percentiles(values: list[float]) -> str:
    if not values:
        return "no runs"
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1000

    return f"p50 {at(0.5):.1f} ms, p99 {at(0.99):.1f} ms, max {ordered[-1] * 1000:.1f} ms"


async def case(name: str, count: int, spread: float, minutes: int) -> list[float]:
    """Runs a case, prints its minutes, and answers their CPU seconds."""
    gc.collect()
    with tempfile.TemporaryDirectory() as directory:
        print(f"{name}: {count} rate(1 minute) schedules, state database ({load()})", flush=True)
        periods, start, fired = await scheduler(
            count, spread, minutes, Path(directory) / "state.db"
        )
    for index, period in enumerate(periods):
        which = "first minute" if index == 0 else f"minute {index + 1}  "
        print(
            f"  {which}: CPU {period.cpu * 1000:6.0f} ms = {period.cpu / MINUTE:.3%} of one core;"
            f" {len(period.lateness)} runs, late {percentiles(period.lateness)}"
        )
        split = (
            f"the event loop's thread {period.loop * 1000:.0f} ms,"
            f" SQLite's threads {(period.cpu - period.loop) * 1000:.0f} ms"
        )
        print(f"    the start {start * 1000:.0f} ms; {split}" if index == 0 else f"    {split}")
    print(f"  ({fired}; {load()})", flush=True)
    return [period.cpu for period in periods]


def ratios(name: str, minutes: list[float], bare: float) -> str:
    """A case's CPU per minute over the bare store's, first and steady."""
    shown = f"{name}: first minute {minutes[0] / bare:.1f}x"
    if len(minutes) > 1:
        steady = sorted(minutes[1:])[len(minutes[1:]) // 2]
        shown += f", steady minute (median) {steady / bare:.1f}x"
    return shown


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--minutes", type=int, default=1, help="steady minutes after the first")
    parser.add_argument("--peer-seconds", type=float, default=30.0)
    parser.add_argument("--case", choices=("staggered", "aligned", "both"), default="both")
    # A case alone, in the process ``--case both`` starts for it: no floors;
    # its minutes' CPU seconds written to the file given, as JSON.
    parser.add_argument("--case-only", metavar="FIGURES", help=argparse.SUPPRESS)
    args = parser.parse_args()
    n = args.schedules
    if args.case_only:
        cpu = await case(args.case, n, MINUTE if args.case == "staggered" else 0.0, args.minutes)
        Path(args.case_only).write_bytes(orjson.dumps(cpu))
        return
    print(f"pipelines from {Path(pipelines.__file__).parent}", flush=True)
    cases: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as directory:
        for name in ("staggered", "aligned"):
            if args.case in (name, "both"):
                # A fresh process each: see the module's docstring.
                figures = Path(directory) / f"{name}.json"
                sizes = ["--schedules", str(n), "--minutes", str(args.minutes)]
                subprocess.run(
                    [sys.executable, __file__, "--case", name, "--case-only", str(figures), *sizes],
                    check=True,
                )
                cases[name] = orjson.loads(figures.read_bytes())
        bare = bare_store(n, Path(directory) / "bare.db")
    print(
        f"bare store, the same statements for a minute of {n} staggered runs:"
        f" CPU {bare * 1000:.0f} ms = {bare / MINUTE:.3%} of one core"
    )
    print(
        "CPU per minute over the bare store's: "
        + "; ".join(ratios(k, v, bare) for k, v in cases.items())
    )
    if args.peer_seconds > 0:
        gc.collect()
        share, lateness = await task_peer(n, args.peer_seconds)
        print(
            f"peer, a task per schedule (staggered, {args.peer_seconds:.0f} s):"
            f" CPU {share:.3%} of one core; {len(lateness)} runs, late {percentiles(lateness)}"
        )
        polled = await polling_peer(n, args.peer_seconds)
        print(
            f"peer, a loop over every schedule each second (nothing due):"
            f" CPU {polled:.3%} of one core ({load()})"
        )


if __name__ == "__main__":
    with tuned_process():  # as the pipelines command runs a pipeline
        asyncio.run(main())
