"""Pipes throughput: records per second through a pipe, against its peers on the same store.

Each case uses a fresh SQLite state file (the runtime's default durability)
and ``--records`` (20,000) small JSON records written beforehand (untimed);
the time is from the runtime's start until the last record has been handed
to the function and deleted or checkpointed.

- ``queue -> filter -> function``: a pipe from a standard queue with one
  filter (it lets 90% through) to a ``function`` resource that counts the
  records of each batch; batch size 10 and 100 (100 with a batching window
  of 1 s, as AWS requires above 10; the queue is full, so batches fill at once);
- ``stream -> function``: a pipe from a one-shard stream (TRIM_HORIZON) to
  the same function, batches of 10 and 100;
- peer ``stream consumer``: the stream resource's own consumer
  (``consumers:``, the existing event-source-mapping path) handing batches
  of 10 and 100 to the same function;
- peer ``bare queue loop``: ``QueueStore.receive(10)`` then
  ``delete_batch`` until the queue is empty, on the same kind of file, no
  runtime, no function: what reading and deleting costs alone;
- peer ``bare stream loop``: ``StreamStore.consume(...).next_batch()`` with a
  checkpoint per batch, batches of 10 and 100, no runtime, no function.

Ratios: each pipe against its bare loop (the issue's target: at least 0.5)
and the stream pipe against the stream consumer.

    flock /tmp/pipelines-bench.lock python bench/bench_pipes.py [--records 20000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pluggy

ROOT = Path(__file__).resolve().parent.parent
# Last on the path: pipelines and plugins come from the path as given (an
# install, or PYTHONPATH=/path/to/base to measure a base's code), the
# checkout only when neither has them.
sys.path.append(str(ROOT))

import plugins.pipes  # noqa: E402
from pipelines import hookspecs  # noqa: E402
from pipelines.config import build_runtime, load_config  # noqa: E402
from pipelines.pluginmanager import ENTRY_POINT_GROUP  # noqa: E402
from plugins.queue.store import QueueStore, SendEntry  # noqa: E402
from plugins.stream.store import StreamStore  # noqa: E402

#: Records the function has counted, for the run under way.
counted = 0


def count(batch: Any) -> None:
    """The function every case hands its batches to."""
    global counted
    counted += len(batch["Records"]) if isinstance(batch, dict) else len(batch)


def manager() -> pluggy.PluginManager:
    found = pluggy.PluginManager("pipelines")
    found.add_hookspecs(hookspecs)
    found.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    if found.get_plugin("pipes") is None:
        found.register(plugins.pipes, name="pipes")
    return found


def body(n: int) -> str:
    return json.dumps({"kind": "order" if n % 10 else "refund", "n": n, "total": n % 250})


async def fill_queue(state: Path, records: int) -> None:
    async with await QueueStore.open(state) as store:
        await store.create_queue("orders", {})
        for start in range(0, records, 10):
            entries = [SendEntry(body(n), id=str(n)) for n in range(start, start + 10)]
            await store.send_batch("orders", entries)


async def fill_stream(state: Path, records: int) -> None:
    async with await StreamStore.open(state) as store:
        await store.create_stream("clicks", 1)
        for start in range(0, records, 500):
            await store.put_records(
                "clicks",
                [
                    {"Data": body(n).encode(), "PartitionKey": str(n % 100)}
                    for n in range(start, min(start + 500, records))
                ],
            )


def shared() -> Any:
    """This module as the function resource imports it (not ``__main__``)."""
    import bench_pipes

    return bench_pipes


async def run_config(directory: Path, text: str, expected: int) -> float:
    """Seconds from start until the function has counted ``expected`` records."""
    counter = shared()
    counter.counted = 0
    path = directory / "pipeline.yaml"
    path.write_text(textwrap.dedent(text))
    runtime = await build_runtime(
        load_config(path), state_path=directory / "state.db", plugins=manager()
    )
    began = time.perf_counter()
    async with runtime:
        while counter.counted < expected:
            await asyncio.sleep(0.005)
        took = time.perf_counter() - began
    return took


FUNCTION = "bench_pipes:count"


def queue_pipe(batch: int) -> str:
    window = ", maximum_batching_window_in_seconds: 1" if batch > 10 else ""
    return f"""
    resources:
      orders: {{type: queue, visibility_timeout: 300}}
      count: {{type: function, function: "{FUNCTION}"}}
    pipes:
      p:
        source: orders
        source_parameters: {{batch_size: {batch}{window}}}
        filters: [{{body: {{kind: [order]}}}}]
        target: count
    """


def stream_pipe(batch: int) -> str:
    return f"""
    resources:
      clicks: {{type: stream}}
      count: {{type: function, function: "{FUNCTION}"}}
    pipes:
      p:
        source: clicks
        source_parameters: {{batch_size: {batch}, starting_position: TRIM_HORIZON}}
        target: count
    """


def stream_consumer(batch: int) -> str:
    return f"""
    resources:
      clicks:
        type: stream
        consumers: {{c: {{target: count, batch_size: {batch}, poll: 0.05}}}}
      count: {{type: function, function: "{FUNCTION}"}}
    """


async def bare_queue(state: Path, records: int) -> float:
    async with await QueueStore.open(state) as store:
        began = time.perf_counter()
        taken = 0
        while taken < records:
            messages = await store.receive("orders", 10, wait_time=0)
            if not messages:
                continue
            handles = [(str(n), m.receipt_handle) for n, m in enumerate(messages)]
            await store.delete_batch("orders", handles)
            taken += len(messages)
        return time.perf_counter() - began


async def bare_stream(state: Path, records: int, batch: int) -> float:
    async with await StreamStore.open(state) as store:
        began = time.perf_counter()
        taken = 0
        reader = store.consume("clicks", "bare", batch=batch, follow=False)
        async with reader:
            while taken < records and (found := await reader.next_batch()):
                taken += len(found)
        return time.perf_counter() - began


async def case(
    fill: Callable[[Path, int], Awaitable[None]],
    timed: Callable[[Path], Awaitable[float]],
    records: int,
    repeats: int,
) -> float:
    """Records per second: the median of ``repeats`` runs, each on a fresh file."""
    rates = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as folder:
            directory = Path(folder)
            await fill(directory / "state.db", records)
            rates.append(records / await timed(directory))
    return statistics.median(rates)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    records, repeats = options.records, options.repeats
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # the function's module
    passing = records - records // 10  # the filter lets "order" through: 9 in 10
    figures: dict[str, float] = {}

    async def measure(label: str, fill: Any, timed: Any) -> None:
        figures[label] = await case(fill, timed, records, repeats)
        print(f"{label:<38} {figures[label]:>10,.0f} records/s", flush=True)

    # Untimed: the first runtime imports what its resources need.
    await case(fill_queue, lambda d: run_config(d, queue_pipe(10), 90), 100, 1)
    await case(fill_stream, lambda d: run_config(d, stream_pipe(10), 100), 100, 1)
    print(f"{records:,} records, median of {repeats}; load average {os.getloadavg()}")
    await measure(
        "bare queue loop (receive 10, delete)",
        fill_queue,
        lambda d: bare_queue(d / "state.db", records),
    )
    for batch in (10, 100):
        await measure(
            f"pipe queue -> filter -> function {batch}",
            fill_queue,
            lambda d, b=batch: run_config(d, queue_pipe(b), passing),
        )
    for batch in (10, 100):
        await measure(
            f"bare stream loop {batch}",
            fill_stream,
            lambda d, b=batch: bare_stream(d / "state.db", records, b),
        )
        await measure(
            f"stream consumer -> function {batch}",
            fill_stream,
            lambda d, b=batch: run_config(d, stream_consumer(b), records),
        )
        await measure(
            f"pipe stream -> function {batch}",
            fill_stream,
            lambda d, b=batch: run_config(d, stream_pipe(b), records),
        )
    print(f"load average {os.getloadavg()}")
    bare = figures["bare queue loop (receive 10, delete)"]
    for batch in (10, 100):
        pipe = figures[f"pipe queue -> filter -> function {batch}"]
        print(f"queue pipe {batch} / bare queue loop:       {pipe / bare:.2f} (target >= 0.5)")
    for batch in (10, 100):
        pipe = figures[f"pipe stream -> function {batch}"]
        loop = figures[f"bare stream loop {batch}"]
        consumer = figures[f"stream consumer -> function {batch}"]
        print(f"stream pipe {batch} / bare stream loop {batch}:  {pipe / loop:.2f} (target >= 0.5)")
        print(f"stream pipe {batch} / stream consumer {batch}:   {pipe / consumer:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
