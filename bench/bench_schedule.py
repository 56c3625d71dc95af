"""Scheduler cost and firing accuracy with 10,000 ``rate(1 minute)`` schedules.

The rules have no targets, so what is measured is the scheduler and the bus's
intake (building each scheduled event and dispatching it), not any delivery.
All runs are real time on the system clock, in one process.

1. Aligned: every schedule is due at the same second, once a minute (what
   10,000 "every minute" jobs look like). Reported: the burst (how late the
   last of the 10,000 runs fires, its CPU), and the CPU share of one core
   *between* firings. The peer is the design the scheduler avoids: a loop
   that checks every schedule once a second.
2. Staggered: start dates spread evenly over the minute, so a run is due
   every 6 ms: CPU share in steady state and lateness (fire time minus
   scheduled time) percentiles. The peer is the other naive design: one
   asyncio task per schedule, sleeping until its next run and building the
   same event.

    python bench/bench_schedule.py [--schedules 10000] [--seconds 30] [--idle 40]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pipelines.event import make_event
from pipelines.limits import Limits
from pipelines.process import tuned_process
from pipelines.runtime import Runtime

MINUTE = 60.0


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def build(runtime: Runtime, count: int, first: float, spread: float = MINUTE) -> None:
    bus = runtime.bus()
    for n in range(count):
        start = first + spread * n / count
        bus.put_rule(
            f"every-minute-{n}", schedule={"expression": "rate(1 minute)", "start_date": iso(start)}
        )


def record_lateness(runtime: Runtime, lateness: list[float]) -> None:
    """Wrap the scheduler's firing to note how late each run fires."""
    scheduler = runtime.scheduler
    fire: Callable[[Any, float], None] = scheduler._fire

    def timed(entry: Any, due: float) -> None:
        lateness.append(runtime.clock.time() - due)
        fire(entry, due)

    scheduler._fire = timed  # type: ignore[method-assign]


async def aligned(count: int, idle: float) -> tuple[list[float], float, float]:
    """Returns lateness of the burst's runs, the burst's CPU seconds and the
    CPU share between firings."""
    runtime = Runtime(limits=Limits(intake_size=count))
    due = float(int(time.time()) + 3)
    build(runtime, count, due, spread=0.0)
    lateness: list[float] = []
    record_lateness(runtime, lateness)
    async with runtime:
        await asyncio.sleep(max(due - 0.5 - time.time(), 0))
        started = time.process_time()
        while len(lateness) < count:
            await asyncio.sleep(0.01)
        burst_cpu = time.process_time() - started
        await asyncio.sleep(max(due + 5 - time.time(), 0))
        share = await cpu_share(idle)
    return lateness, burst_cpu, share


async def cpu_share(seconds: float) -> float:
    started = time.process_time()
    await asyncio.sleep(seconds)
    return (time.process_time() - started) / seconds


async def polling_peer(count: int, idle: float) -> float:
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
        share = await cpu_share(idle)
        task.cancel()
    return share


async def real(count: int, seconds: float) -> tuple[float, list[float], int]:
    runtime = Runtime(limits=Limits(intake_size=count))
    build(runtime, count, time.time() + 2)
    lateness: list[float] = []
    record_lateness(runtime, lateness)
    async with runtime:
        await asyncio.sleep(2)
        lateness.clear()
        share = await cpu_share(seconds)
    return share, lateness, len(lateness)


async def peer(count: int, seconds: float) -> tuple[float, list[float], int]:
    """One task per schedule, each sleeping until its next run."""
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
    return share, lateness, len(lateness)


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1000

    return f"p50 {at(0.5):.2f} ms, p99 {at(0.99):.2f} ms, max {ordered[-1] * 1000:.2f} ms"


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=30.0, help="staggered run length")
    parser.add_argument("--idle", type=float, default=40.0, help="idle stretch measured")
    args = parser.parse_args()
    n = args.schedules
    gc.collect()

    lateness, burst_cpu, idle_share = await aligned(n, args.idle)
    poll_share = await polling_peer(n, args.idle)
    print(f"aligned: {n} rate(1 minute) schedules due at the same second")
    print(
        f"  burst: {percentiles(lateness)} late; CPU {burst_cpu * 1000:.0f} ms"
        f" ({burst_cpu / n * 1e6:.0f} us per run)"
    )
    print(
        f"  between firings ({args.idle:.0f} s): CPU {idle_share:.3%} of one core;"
        f" peer polling every second {poll_share:.3%}"
    )

    share, lateness, fired = await real(n, args.seconds)
    peer_share, peer_lateness, peer_fired = await peer(n, args.seconds)
    print(f"staggered: {n} schedules spread over the minute, {args.seconds:.0f} s")
    print(
        f"  scheduler: {fired} runs, CPU {share:.2%} of one core, lateness {percentiles(lateness)}"
    )
    print(
        f"  peer (a task per schedule): {peer_fired} runs, CPU {peer_share:.2%} of one core,"
        f" lateness {percentiles(peer_lateness)}"
    )
    print(
        f"  ratio scheduler/peer: CPU {share / peer_share:.2f}x,"
        f" p50 lateness {statistics.median(lateness) / statistics.median(peer_lateness):.2f}x"
    )


if __name__ == "__main__":
    with tuned_process():  # as the pipelines command runs a pipeline
        asyncio.run(main())
