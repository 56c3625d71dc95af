"""Bus throughput with a realistic rule mix and the durable intake, against a
hand-written fan-out doing the same work in the same process.

Default (realistic) case: 100 rules of ``bench_patterns``' mix (exact,
prefix, numeric, anything-but and wildcard rules, made by its ``make_rule``)
over its order events (``make_events``), with the customer and tenant value
spaces narrowed (``--spread``, default 40) so that an event matches about one
rule, as routing rules do; each Detail is padded with order lines to a size
drawn between 0.2 and 1 KB. Every rule has one ``function`` target calling an
async no-op. The runtime has a state database with the durable intake
(``durability: durable``): each event is committed before ``put_events``
answers and deleted once delivered, except an event whose deliveries all
settle within the intake's first turns (``SETTLE_TURNS``), which is never
written; the no-op answers at once, so by default the bus writes few or no
rows (printed). ``--target-turns N`` makes every no-op (the peer's too) wait
N turns of the event loop first: past 3, the bus writes every row it
reserves. ``--producers`` (default 16) callers put
PutEvents-sized batches of 10 as fast as the bus accepts them; the clock
stops when every matched rule's no-op has been called and every put has
returned.

The peer, run alternately with the bus in the same process over the same
entries, is what one would write by hand for the same work: each entry checked
with PutEvents' field rules written directly (orjson decoding, required
strings, lengths, Resources, the size rule, the 64-bit integer and nesting
checks), the envelope built as a dict, matched by the same ``Matcher``, and
appended to one ``asyncio.Queue`` per matched rule, each consumed by a task
calling the same no-op. Its durable part writes and deletes the same intake
rows with bare ``sqlite3`` (WAL, synchronous=NORMAL, as the store sets them)
and the same statements for every event, on one writer thread as the store's
are, group-committed as one would by hand (one commit in flight; the rows
gathered meanwhile go in the next; rows and commits printed). It has no
callers to answer, so nothing waits for its commits: that only favours it
(the bus answers a put once its rows are committed or settled). The ratio
is printed against the peer with and without its durable part, in events/s
and in CPU time per event
(``process_time``: every thread, so the SQLite work counts; steadier than
events/s on a shared machine).

``--scrape`` measures what serving Prometheus costs: the same realistic
bus, alternately as it is and with its ``/metrics`` (``pipelines.observability``)
on an HTTP port scraped every second by another process (a Prometheus
stand-in), over runs long enough for several scrapes (120,000 events); it
prints both arms' events/s and CPU per event, and their ratio.

``--schemas`` measures what the schema registry costs the bus (issue 32's
measure): the same realistic bus, alternately without a ``schemas``
resource, with discovery on (a discoverer on the bus), with validation of
every event against a 20-field JSONSchema Draft 4 schema (a requirement on
the bus), and with that requirement on 10 of the 100 rules instead
(``rule-validation``: the rest require nothing), in one process; the
schema and each arm's settings are ``bench_schemas``'. It prints each arm's
median events/s and CPU µs per event, and its cost against the plain bus.
The targets: discovery at most 10%, validation at most 30%.

``--kind`` runs the earlier, kindest cases instead: 1, 100 and 1,000 exact
rules on one field, tiny events, no state database, against a bare queue with
one consumer; and the memory vs durable intake comparison.

Before and after: run this file against the code of another commit by
putting its ``pipelines`` and ``plugins`` first on the path, e.g.

    git archive BASE pipelines plugins | tar -x -C /tmp/base
    PYTHONPATH=/tmp/base python bench/bench_bus.py

    pip install -e '.[bench]'     # bench_patterns imports moto
    python bench/bench_bus.py [--events 30000] [--repeats 5] [--producers 16]
        [--rules 100] [--spread 40] [--target-turns 0]
    python bench/bench_bus.py --kind [--events 50000] [--repeats 3] [--rate 5000]
        [--seconds 4]
    python bench/bench_bus.py --scrape [--events 120000] [--repeats 3]
    python bench/bench_bus.py --schemas [--events 20000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import bench_patterns
import orjson
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder

from pipelines import observability
from pipelines.api import ApiServer
from pipelines.limits import Limits
from pipelines.observability import serve_observability
from pipelines.patterns import Matcher
from pipelines.process import tuned_process
from pipelines.runtime import Runtime

delivered = 0
latencies: list[float] = []
finished: asyncio.Event | None = None
expected = 0


#: Turns of the event loop each no-op waits before it answers (--target-turns).
target_turns = 0


async def noop(payload: Any) -> None:
    global delivered
    for _ in range(target_turns):
        await asyncio.sleep(0)
    delivered += 1
    if delivered == expected and finished is not None:
        finished.set()


async def timed(payload: Any) -> None:
    latencies.append(time.perf_counter() - payload["detail"]["sent"])


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- the realistic case --------------------------------------------------------


def realistic(count: int, rules: int, spread: int) -> tuple[list[dict[str, Any]], list[Any]]:
    """PutEvents entries (Detail as JSON text, as SDKs send it) and rule patterns."""
    bench_patterns.CUSTOMERS = bench_patterns.TENANTS = spread
    rng = random.Random(20261204)
    patterns = [bench_patterns.make_rule(n, rng) for n in range(rules)]
    entries = []
    for event in bench_patterns.make_events(count, rng):
        detail = event["detail"]
        size = rng.randint(200, 1000)
        line = {"sku": f"SKU-{rng.randrange(100_000):05d}", "qty": rng.randrange(1, 5)}
        while len(orjson.dumps(detail)) + len(orjson.dumps(line)) < size:
            detail["items"].append(line)
            line = {"sku": f"SKU-{rng.randrange(100_000):05d}", "qty": rng.randrange(1, 5)}
        entries.append(
            {
                "Source": event["source"],
                "DetailType": event["detail-type"],
                "Resources": event["resources"],
                "Detail": orjson.dumps(detail).decode(),
            }
        )
    return entries, patterns


def expected_jobs(entries: list[dict[str, Any]], patterns: list[Any]) -> int:
    matcher = rule_matcher(patterns)
    ids = random.Random(0)
    events = [peer_event(entry, "2024-01-01T00:00:00Z", ids) for entry in entries]
    return sum(len(matcher.match(event)) for event in events if event is not None)


def rule_matcher(patterns: list[Any]) -> Matcher:
    matcher = Matcher()
    for number, pattern in enumerate(patterns):
        matcher.add(f"rule-{number}", pattern)
    return matcher


class Commits:
    """Counts the durable intake's INSERT steps and the rows they wrote: an
    event settled before its write is never written (``SETTLE_TURNS``), so
    the rows can be fewer than the events."""

    def __init__(self, runtime: Runtime) -> None:
        self.inserts = 0
        self.rows = 0
        assert runtime.intake is not None
        store = runtime.intake.store
        batch = store.batch

        # The intake writes through ``batch`` (its rows, its deletes and any
        # archive rows in one trip): its INSERT step's rows are counted.
        async def counted(steps: Any, **options: Any) -> Any:
            for step in steps:
                if step.sql.lstrip().upper().startswith("INSERT INTO INTAKE"):
                    self.inserts += 1
                    # (runner, rows): the rows are the JSON array last.
                    self.rows += len(orjson.loads(step.parameters[-1]))
            return await batch(steps, **options)

        store.batch = counted  # type: ignore[method-assign]


#: A Prometheus stand-in in its own process: GET /metrics every second, a
#: line on stdout per scrape (its size), until killed.
SCRAPER = """
import sys, time, urllib.request
url = sys.argv[1]
while True:
    began = time.monotonic()
    with urllib.request.urlopen(url, timeout=10) as answer:
        print(len(answer.read()), flush=True)
    time.sleep(max(0.0, 1.0 - (time.monotonic() - began)))
"""


class Scraped:
    """What a run's scraper did: scrapes made, the last body's size, and the
    CPU time the event loop's thread spent answering them."""

    def __init__(self) -> None:
        self.scrapes = 0
        self.size = 0
        self.cpu = 0.0
        self.answered = 0


async def bus_run(
    entries: list[dict[str, Any]],
    patterns: list[Any],
    jobs: int,
    producers: int,
    scraped: Scraped | None = None,
    schemas: Schemas | None = None,
) -> tuple[float, float, Commits]:
    """Events/s through the bus with the durable intake, CPU µs per event (all
    threads: the store's included) and its intake's writes. With
    ``scraped``: the runner's HTTP port serves /metrics, scraped every second
    by another process while the events go through. With ``schemas``: the
    runtime has its plugins and its ``schemas`` resource (``--schemas``)."""
    global delivered, expected, finished
    with tempfile.TemporaryDirectory() as tmp:
        runtime = Runtime(
            limits=Limits(intake_size=10_000, target_queue_size=1_000),
            state_path=Path(tmp) / "state.db",
            plugins=schemas.plugins if schemas is not None else None,
        )
        runtime.add_resource("noop", "function", {"function": f"{__name__}:noop"})
        if schemas is not None and schemas.settings is not None:
            runtime.add_resource("schemas", "schemas", schemas.settings)
        bus = runtime.bus()
        for number, pattern in enumerate(patterns):
            bus.put_rule(f"rule-{number}", pattern=pattern)
            await bus.put_targets(f"rule-{number}", [{"id": "t", "resource": "noop"}])
        delivered, expected, finished = 0, jobs, asyncio.Event()
        async with runtime, scraping(runtime, scraped):
            commits = Commits(runtime)
            calls = [entries[offset : offset + 10] for offset in range(0, len(entries), 10)]

            async def produce(first: int) -> None:
                for call in calls[first::producers]:
                    answer = await runtime.put_events(call)
                    assert not answer["FailedEntryCount"], answer

            start, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(produce(first) for first in range(producers)))
            await finished.wait()
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
            if schemas is not None and schemas.settings is not None:
                schemas.saw(runtime.resource("schemas"))
    assert delivered == jobs
    count = len(entries)
    return count / elapsed, cpu * 1e6 / count, commits


class Schemas:
    """One ``--schemas`` arm: the plugins, and the ``schemas`` resource's
    settings (None: no resource); what its discovery looked at, after a run."""

    def __init__(self, plugins: Any, settings: dict[str, Any] | None) -> None:
        self.plugins = plugins
        self.settings = settings
        self.seen: dict[str, int] = {}

    def saw(self, resource: Any) -> None:
        discovery = resource.discovery
        if discovery is not None and discovery.watching:
            self.seen = {"looked": discovery.looked, "dropped": discovery.dropped}


async def schemas_main(args: argparse.Namespace) -> None:
    """The bus without the schema registry, with discovery, with validation
    (the bus's requirement, or 10 rules'), alternately in one process."""
    import bench_schemas  # the schema and the arms' settings: one source

    entries, patterns = realistic(args.events, args.rules, args.spread)
    jobs = expected_jobs(entries, patterns)
    plugins = bench_schemas.plugins()
    kinds = bench_schemas.KINDS
    print(f"load before: {load()}")
    print(
        f"schemas: {len(entries):,} events, {args.rules} rules (one target each),"
        f" {jobs / len(entries):.2f} matches/event, durable intake, {args.producers} producers;"
        f" {', '.join(kinds)} alternating, {args.repeats} repeats"
    )
    warm = entries[:2_000]
    await bus_run(warm, patterns, expected_jobs(warm, patterns), args.producers)
    rates: dict[str, list[float]] = {kind: [] for kind in kinds}
    cpus: dict[str, list[float]] = {kind: [] for kind in kinds}
    for repeat in range(args.repeats):
        for kind in kinds:
            arm = Schemas(plugins, bench_schemas.schemas_settings(kind, args.rules))
            gc.collect()
            rate, cpu, _ = await bus_run(entries, patterns, jobs, args.producers, schemas=arm)
            rates[kind].append(rate)
            cpus[kind].append(cpu)
            extra = f"  {arm.seen}" if arm.seen else ""
            print(f"  #{repeat + 1} {kind:<16} {rate:8,.0f} ev/s {cpu:7.1f} µs CPU/ev{extra}")
    print(f"load after: {load()}")
    base_rate, base_cpu = statistics.median(rates["plain"]), statistics.median(cpus["plain"])
    print(f"{'':<16} {'ev/s':>8} {'CPU µs/ev':>10} {'cost (rate)':>12} {'CPU ratio':>10}")
    for kind in kinds:
        rate, cpu = statistics.median(rates[kind]), statistics.median(cpus[kind])
        print(
            f"{kind:<16} {rate:>8,.0f} {cpu:>10.1f} {1 - rate / base_rate:>12.1%}"
            f" {cpu / base_cpu:>10.2f}"
        )


class _TimedCollector(observability.RuntimeCollector):
    """The collector, timed: the CPU of the loop's thread reading the runtime."""

    timed: Scraped | None = None

    def collect(self) -> Iterator[Metric]:
        began = time.thread_time()
        families = list(super().collect())
        if self.timed is not None:
            self.timed.cpu += time.thread_time() - began
            self.timed.answered += 1
        return iter(families)


def _timed_encoder(accept: str) -> tuple[Callable[[Any], bytes], str]:
    """prometheus_client's encoder, timed in the worker thread it runs in."""
    encode, content_type = choose_encoder(accept)

    def timed(registry: Any) -> bytes:
        began = time.thread_time()
        body = encode(registry)
        if _TimedCollector.timed is not None:
            _TimedCollector.timed.cpu += time.thread_time() - began
        return body

    return timed, content_type


# The scrape's two parts timed where they run (bench instrumentation only).
observability.RuntimeCollector = _TimedCollector  # type: ignore[misc]
observability.choose_encoder = _timed_encoder


@contextlib.asynccontextmanager
async def scraping(runtime: Runtime, scraped: Scraped | None) -> AsyncIterator[None]:
    """With ``scraped``: /metrics on an HTTP port, and a scraper process on it."""
    if scraped is None:
        yield
        return
    server = ApiServer(runtime, {})
    serve_observability(runtime)
    await server.start()
    scraper = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SCRAPER, f"{server.url}/metrics", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert scraper.stdout is not None
        first = await scraper.stdout.readline()  # scraping from before the clock starts
        scraped.size = int(first)
        yield
    finally:
        scraper.kill()
        out, _ = await scraper.communicate()
        sizes = out.split()
        scraped.scrapes += len(sizes)  # those made while the events went through
        scraped.size = int(sizes[-1]) if sizes else scraped.size
        await server.close()


async def scrape_main(args: argparse.Namespace) -> None:
    """The same bus with and without /metrics scraped every second, alternately."""
    entries, patterns = realistic(args.events, args.rules, args.spread)
    jobs = expected_jobs(entries, patterns)
    print(
        f"scrape: {len(entries):,} events, {args.rules} rules (one target each),"
        f" {jobs / len(entries):.2f} matches/event, durable intake, {args.producers} producers;"
        f" /metrics scraped every second by another process in one arm;"
        f" medians of {args.repeats} alternating runs"
    )
    warm = entries[:2_000]
    await bus_run(warm, patterns, expected_jobs(warm, patterns), args.producers)
    figures: dict[str, list[tuple[float, float]]] = {"plain": [], "scraped": []}
    scraped = _TimedCollector.timed = Scraped()
    seconds = cpu_seconds = 0.0
    for _ in range(args.repeats):
        rate, cpu, _ = await bus_run(entries, patterns, jobs, args.producers)
        figures["plain"].append((rate, cpu))
        rate, cpu, _ = await bus_run(entries, patterns, jobs, args.producers, scraped)
        figures["scraped"].append((rate, cpu))
        seconds += len(entries) / rate
        cpu_seconds += cpu * len(entries) / 1e6
        print("  run: " + ", ".join(f"{k} {v[-1][0]:,.0f} ev/s" for k, v in figures.items()))
    rate = {k: statistics.median(r for r, _ in v) for k, v in figures.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in figures.items()}
    print(f"{'':>10} {'ev/s':>8} {'CPU µs/ev':>10}")
    for key in figures:
        print(f"{key:>10} {rate[key]:>8,.0f} {cpu[key]:>10.1f}")
    print(
        f"scraped/plain: throughput {rate['scraped'] / rate['plain']:.3f},"
        f" CPU per event {cpu['scraped'] / cpu['plain']:.3f}"
        f" ({scraped.scrapes} scrapes over {seconds:.0f} s of scraped runs,"
        f" {scraped.size / 1024:.0f} KiB each)"
    )
    print(
        f"scrape CPU (reading on the loop + encoding in its thread):"
        f" {scraped.cpu / max(scraped.answered, 1) * 1e3:.1f} ms each,"
        f" {scraped.cpu / cpu_seconds:.1%} of the scraped runs' process CPU"
    )
    print(f"load average: {load()}")


# -- the peer: the same work written by hand -----------------------------------

_FIELDS = frozenset(
    {"Source", "DetailType", "Detail", "Resources", "Time", "EventBusName", "TraceHeader"}
)
_DIGITS = bytes(ord("d") if byte in b"0123456789" else ord(" ") for byte in range(256))


def peer_event(entry: Any, now: str, ids: random.Random) -> dict[str, Any] | None:
    """PutEvents' field rules, written directly; None for an entry they refuse."""
    if not isinstance(entry, dict) or not _FIELDS.issuperset(entry):
        return None
    source, detail_type = entry.get("Source"), entry.get("DetailType")
    if not isinstance(source, str) or not source or not isinstance(detail_type, str):
        return None
    if not detail_type or len(detail_type) > 128:
        return None
    raw = entry.get("Detail")
    if not isinstance(raw, str):
        return None
    text = raw.encode()
    if b"d" * 19 in text.translate(_DIGITS):  # an integer an event cannot hold
        return None
    try:
        detail = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(detail, dict) or text.count(b"{") + text.count(b"[") > 253:
        return None  # (the nesting is measured only past the bracket count)
    resources = entry.get("Resources") or []
    if not isinstance(resources, list):
        return None
    size = len(source.encode()) + len(detail_type.encode()) + len(text)
    for resource in resources:
        if not isinstance(resource, str) or len(resource) > 2048:
            return None
        size += len(resource.encode())
    if size > 1_048_576:
        return None
    bits = f"{ids.getrandbits(128) & _MASK | _V4:032x}"
    return {
        "version": "0",
        "id": f"{bits[:8]}-{bits[8:12]}-{bits[12:16]}-{bits[16:20]}-{bits[20:]}",
        "detail-type": detail_type,
        "source": source,
        "account": "000000000000",
        "time": now,
        "region": "local",
        "resources": resources,
        "detail": detail,
    }


_MASK = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_V4 = (0x4 << 76) | (0x2 << 62)


INTAKE = (
    "CREATE TABLE intake (seq INTEGER PRIMARY KEY, bus TEXT NOT NULL, event BLOB NOT NULL,"
    " ingested REAL NOT NULL, addressed TEXT)"
)
INSERT = (
    "INSERT INTO intake (seq, bus, event, ingested, addressed)"
    " SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4"
    " FROM json_each(?) WHERE true ON CONFLICT (seq) DO NOTHING"
)
DELETE = "DELETE FROM intake WHERE seq IN (SELECT value FROM json_each(?))"


class PeerIntake:
    """The intake rows, written with bare sqlite3 by one writer thread (as the
    bus's store writes in its own thread), group-committed as one writes it by
    hand: whatever gathered while the last commit was in flight goes in the
    next. Every event's row is written (no waiting to see it settle first)."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(INTAKE)
        self.rows: list[tuple[int, str, str, float, None]] = []
        self.settled: list[int] = []
        self.thread = ThreadPoolExecutor(1)
        self.writing: asyncio.Future[None] | None = None
        self.written = 0
        self.commits = 0

    def add(self, seq: int, event: dict[str, Any], ingested: float) -> bool:
        """Queue the event's row; True when the writer is free (``flush``)."""
        self.rows.append((seq, "default", orjson.dumps(event).decode(), ingested, None))
        return self.writing is None or self.writing.done()

    async def flush(self) -> None:
        if self.writing is not None:
            await self.writing
        rows, self.rows = self.rows, []
        settled, self.settled = self.settled, []
        loop = asyncio.get_running_loop()
        self.writing = loop.run_in_executor(self.thread, self._write, rows, settled)

    def _write(self, rows: list[Any], settled: list[int]) -> None:
        if rows:
            self.db.execute(INSERT, (orjson.dumps(rows),))
            self.written += len(rows)
            self.commits += 1
        if settled:
            self.db.execute(DELETE, (orjson.dumps(settled),))

    async def close(self) -> None:
        await self.flush()
        assert self.writing is not None
        await self.writing
        self.thread.shutdown()
        self.db.close()


async def peer_run(
    entries: list[dict[str, Any]], patterns: list[Any], jobs: int, durable: bool
) -> tuple[float, float, PeerIntake | None]:
    """Events/s through the hand-written fan-out (with or without its intake
    rows), CPU µs per event, and its intake (what it wrote)."""
    global delivered, expected, finished
    matcher = rule_matcher(patterns)
    queues = {f"rule-{n}": asyncio.Queue[tuple[int, Any]](1_000) for n in range(len(patterns))}
    delivered, expected, finished = 0, jobs, asyncio.Event()
    with tempfile.TemporaryDirectory() as tmp:
        intake = PeerIntake(Path(tmp) / "peer.db") if durable else None
        remaining: dict[int, int] = {}

        def settle(seq: int) -> None:
            left = remaining.pop(seq) - 1
            if left:
                remaining[seq] = left
            elif intake is not None:
                intake.settled.append(seq)

        async def consume(queue: asyncio.Queue[tuple[int, Any]]) -> None:
            while True:
                seq, event = await queue.get()
                await noop(event)
                settle(seq)

        async with asyncio.TaskGroup() as group_:
            consumers = [group_.create_task(consume(queue)) for queue in queues.values()]
            start, cpu = time.perf_counter(), time.process_time()
            await peer_produce(entries, matcher, queues, intake, remaining)
            await finished.wait()
            if intake is not None:
                await intake.close()
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
            for consumer in consumers:
                consumer.cancel()
    return len(entries) / elapsed, cpu * 1e6 / len(entries), intake


async def peer_produce(
    entries: list[dict[str, Any]],
    matcher: Matcher,
    queues: dict[str, asyncio.Queue[tuple[int, Any]]],
    intake: PeerIntake | None,
    remaining: dict[int, int],
) -> None:
    ids = random.Random(os.urandom(16))
    seq = 0
    for offset in range(0, len(entries), 10):  # PutEvents-sized calls
        ingested = time.time()
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ingested))
        for entry in entries[offset : offset + 10]:
            event = peer_event(entry, now, ids)
            assert event is not None
            seq += 1
            if intake is not None and intake.add(seq, event, ingested):
                await intake.flush()
            names = matcher.match(event)
            if names:
                remaining[seq] = len(names)
            elif intake is not None:
                intake.settled.append(seq)
            for name in names:
                await queues[name].put((seq, event))
        await asyncio.sleep(0)  # a caller's turn ends with each call, as put_events' does


async def realistic_main(args: argparse.Namespace) -> None:
    global target_turns
    entries, patterns = realistic(args.events, args.rules, args.spread)
    jobs = expected_jobs(entries, patterns)
    sizes = [len(entry["Detail"]) for entry in entries]
    print(
        f"realistic: {len(entries):,} events, {args.rules} rules of bench_patterns' mix,"
        f" {jobs / len(entries):.2f} matches/event, Detail {min(sizes)}-{max(sizes)} bytes"
        f" (median {statistics.median(sizes):.0f}), durable intake, {args.producers} producers,"
        f" batches of 10, targets answering after {args.target_turns} turns;"
        f" medians of {args.repeats} alternating runs"
    )
    figures: dict[str, list[tuple[float, float]]] = {"bus": [], "peer": [], "bare": []}
    writes: dict[str, list[tuple[int, int]]] = {"bus": [], "peer": []}
    warm = entries[:2_000]
    await bus_run(warm, patterns, expected_jobs(warm, patterns), args.producers)
    target_turns = args.target_turns
    for _ in range(args.repeats):
        rate, cpu, commits = await bus_run(entries, patterns, jobs, args.producers)
        figures["bus"].append((rate, cpu))
        writes["bus"].append((commits.rows, commits.inserts))
        rate, cpu, intake = await peer_run(entries, patterns, jobs, durable=True)
        figures["peer"].append((rate, cpu))
        assert intake is not None
        writes["peer"].append((intake.written, intake.commits))
        rate, cpu, _ = await peer_run(entries, patterns, jobs, durable=False)
        figures["bare"].append((rate, cpu))
        print("  run: " + ", ".join(f"{k} {v[-1][0]:,.0f} ev/s" for k, v in figures.items()))
    rate = {k: statistics.median(r for r, _ in v) for k, v in figures.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in figures.items()}
    print(f"{'':>24} {'ev/s':>8} {'CPU µs/ev':>10} {'bus/it ev/s':>12} {'it/bus CPU':>11}")
    names = {"bus": "bus", "peer": "peer (durable)", "bare": "peer without its intake"}
    for key, name in names.items():
        print(
            f"{name:>24} {rate[key]:>8,.0f} {cpu[key]:>10.1f}"
            f" {rate['bus'] / rate[key]:>12.2f} {cpu[key] / cpu['bus']:>11.2f}"
        )
    for key, name in (("bus", "bus"), ("peer", "peer")):
        rows = statistics.median(r for r, _ in writes[key])
        steps = statistics.median(c for _, c in writes[key])
        print(
            f"intake rows written ({name}, median): {rows:,.0f} of {len(entries):,} events"
            f" in {steps:,.0f} commits ({rows / max(steps, 1):.1f} rows per commit)"
        )
    print(f"load average: {load()}")


# -- the kind cases (--kind) -----------------------------------------------------


def entries_kind(count: int, rules: int) -> list[dict[str, Any]]:
    return [
        {
            "Source": "bench.shop",
            "DetailType": "Order Placed",
            "Detail": json.dumps({"store": f"s{n % rules}", "order": n, "total": n % 997}),
        }
        for n in range(count)
    ]


def build(
    rules: int, function: str, state: Path | None = None, durability: str = "durable"
) -> Runtime:
    runtime = Runtime(
        limits=Limits(intake_size=10_000, target_queue_size=1_000),
        state_path=state,
        durability=durability,
    )
    runtime.add_resource("noop", "function", {"function": function, "max_concurrency": 16})
    bus = runtime.bus()
    for n in range(rules):
        bus.put_rule(
            f"store-{n}", pattern={"source": ["bench.shop"], "detail": {"store": [f"s{n}"]}}
        )
    return runtime


async def bus_throughput(
    rules: int,
    batch: list[dict[str, Any]],
    state: Path | None = None,
    durability: str = "durable",
    producers: int = 1,
) -> float:
    global delivered, expected, finished
    runtime = build(rules, f"{__name__}:noop", state, durability)
    for n in range(rules):
        await runtime.bus().put_targets(f"store-{n}", [{"id": "t", "resource": "noop"}])
    delivered, expected, finished = 0, len(batch), asyncio.Event()
    async with runtime:
        start = time.perf_counter()
        calls = [batch[offset : offset + 10] for offset in range(0, len(batch), 10)]

        async def produce(first: int) -> None:
            for call in calls[first::producers]:
                await runtime.put_events(call)

        await asyncio.gather(*(produce(first) for first in range(producers)))
        await finished.wait()
        elapsed = time.perf_counter() - start
    assert delivered == len(batch)
    return len(batch) / elapsed


async def queue_throughput(batch: list[dict[str, Any]]) -> float:
    """The kind cases' peer: a bounded queue and one consumer calling the no-op."""
    global delivered, expected, finished
    queue: asyncio.Queue[Any] = asyncio.Queue(10_000)
    delivered, expected, finished = 0, len(batch), asyncio.Event()

    async def consume() -> None:
        while True:
            await noop(await queue.get())

    async with asyncio.TaskGroup() as group:
        consumer = group.create_task(consume())
        start = time.perf_counter()
        for entry in batch:
            await queue.put(entry)
        await finished.wait()
        elapsed = time.perf_counter() - start
        consumer.cancel()
    return len(batch) / elapsed


async def latency(rules: int, rate: float, seconds: float) -> tuple[float, float, int]:
    latencies.clear()
    runtime = build(rules, f"{__name__}:timed")
    for n in range(rules):
        await runtime.bus().put_targets(f"store-{n}", [{"id": "t", "resource": "noop"}])
    loop = asyncio.get_running_loop()
    interval = 10 / rate
    count = int(rate * seconds) // 10
    async with runtime:
        start = loop.time()
        for tick in range(count):
            sent = time.perf_counter()
            await runtime.put_events(
                [
                    {
                        "Source": "bench.shop",
                        "DetailType": "Order Placed",
                        "Detail": json.dumps(
                            {"store": f"s{(tick * 10 + i) % rules}", "sent": sent}
                        ),
                    }
                    for i in range(10)
                ]
            )
            await asyncio.sleep(max(0.0, start + (tick + 1) * interval - loop.time()))
        await runtime.wait_until_idle()
    ordered = sorted(latencies)
    return ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99)], len(ordered)


async def kind_main(args: argparse.Namespace) -> None:
    print(f"throughput: {args.events:,} events, batches of 10, medians of {args.repeats} runs")
    print(f"{'rules':>6} {'bus ev/s':>10} {'queue ev/s':>11} {'bus/queue':>9}")
    for rules in (1, 100, 1_000):
        batch = entries_kind(args.events, rules)
        ours, peer = [], []
        for _ in range(args.repeats):
            ours.append(await bus_throughput(rules, batch))
            peer.append(await queue_throughput(batch))
        bus_rate, queue_rate = statistics.median(ours), statistics.median(peer)
        print(f"{rules:>6} {bus_rate:>10,.0f} {queue_rate:>11,.0f} {bus_rate / queue_rate:>9.2f}")

    print(f"\ndurable intake: state database, {args.events:,} events, medians of {args.repeats}")
    print(
        f"{'rules':>6} {'producers':>9} {'memory ev/s':>12} {'durable ev/s':>13}"
        f" {'durable/memory':>15}"
    )
    for rules in (1, 100):
        batch = entries_kind(args.events, rules)
        for producers in (1, 16):
            memory: list[float] = []
            durable: list[float] = []
            for _ in range(args.repeats):
                for mode, rates in (("memory", memory), ("durable", durable)):
                    with tempfile.TemporaryDirectory() as tmp:
                        state = Path(tmp) / "state.db"
                        rates.append(await bus_throughput(rules, batch, state, mode, producers))
            m_rate, d_rate = statistics.median(memory), statistics.median(durable)
            print(
                f"{rules:>6} {producers:>9} {m_rate:>12,.0f} {d_rate:>13,.0f}"
                f" {d_rate / m_rate:>15.2f}"
            )

    p50, p99, count = await latency(100, args.rate, args.seconds)
    print(f"load average: {load()}")
    print(
        f"\nlatency put->deliver, 100 rules, {args.rate:,.0f} ev/s offered, {count:,} events: "
        f"p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms"
    )


def arguments() -> argparse.Namespace:
    # The first paragraph: its first line alone stops mid-sentence.
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--kind", action="store_true", help="the earlier, kindest cases")
    parser.add_argument(
        "--scrape", action="store_true", help="the cost of /metrics scraped every second"
    )
    parser.add_argument(
        "--schemas", action="store_true", help="the cost of discovery and validation"
    )
    parser.add_argument(
        "--events",
        type=int,
        default=None,
        help="30,000 (--kind: 50,000, --scrape: 120,000, --schemas: 20,000)",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="5 (--kind, --scrape, --schemas: 3)"
    )
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--spread", type=int, default=40, help="customers and tenants")
    parser.add_argument("--producers", type=int, default=16)
    parser.add_argument(
        "--target-turns",
        type=int,
        default=0,
        help="turns of the event loop each target waits (past 3: the bus writes its rows)",
    )
    parser.add_argument("--rate", type=float, default=5_000, help="--kind latency's load")
    parser.add_argument("--seconds", type=float, default=4, help="--kind latency's length")
    args = parser.parse_args()
    args.events = args.events or (
        50_000 if args.kind else 120_000 if args.scrape else 20_000 if args.schemas else 30_000
    )
    args.repeats = args.repeats or (3 if args.kind or args.scrape or args.schemas else 5)
    return args


def main() -> None:
    args = arguments()
    run: Callable[[argparse.Namespace], Any] = (
        kind_main
        if args.kind
        else scrape_main
        if args.scrape
        else schemas_main
        if args.schemas
        else realistic_main
    )
    gc.freeze()
    with tuned_process():  # as the pipelines command runs a pipeline
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
