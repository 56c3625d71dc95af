"""EventBridge Scheduler's schedules between firings: the CPU 10,000 of them cost.

The issue's measure (issue 30): 10,000 schedules' CPU between firings,
under 1% of a core. A runtime with a SQLite state database holds 10,000
``rate(1 hour)`` schedules of the ``scheduler`` resource (each a rule of
the internal bus ``aws.scheduler``, on the engine's scheduler), none due
during the measured seconds; its CPU share is ``time.process_time()`` over
``--seconds`` once started. Also printed: the time to start with them (the
store written, 10,000 rules and marks). Peers in the same run: 10,000
scheduled rules of the default bus (the engine's own path, the same
scheduler), and a loop that checks 10,000 due times once a second.

    python bench/bench_scheduler_idle.py [--schedules 10000] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import plugins.scheduler
from pipelines.limits import Limits
from pipelines.pluginmanager import get_plugin_manager
from pipelines.runtime import Runtime


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def cpu_share(seconds: float) -> float:
    started = time.process_time()
    await asyncio.sleep(seconds)
    return (time.process_time() - started) / seconds


async def schedules(count: int, seconds: float, state: Path) -> tuple[float, float]:
    """(seconds to start, CPU share between firings) of ``count`` schedules."""
    manager = get_plugin_manager()
    if manager.get_plugin("scheduler") is None:
        manager.register(plugins.scheduler, name="scheduler")
    first = time.time() + 3600
    declared = {
        f"job-{n}": {
            "expression": "rate(1 hour)",
            "start_date": iso(first + 3600 * n / count),
            "target": {"resource": "sink", "input": f'{{"n": {n}}}'},
        }
        for n in range(count)
    }
    runtime = Runtime(state_path=state, plugins=manager, limits=Limits(intake_size=count))
    runtime.add_resource("sink", "queue", {})
    runtime.add_resource("scheduler", "scheduler", {"schedules": declared})
    began = time.perf_counter()
    async with runtime:
        started = time.perf_counter() - began
        await asyncio.sleep(3)  # the first turn's marks written
        assert len(runtime.scheduler) == count, len(runtime.scheduler)
        share = await cpu_share(seconds)
    return started, share


async def rules(count: int, seconds: float, state: Path) -> tuple[float, float]:
    """The peer: ``count`` scheduled rules of the default bus."""
    first = time.time() + 3600
    runtime = Runtime(state_path=state, limits=Limits(intake_size=count))
    bus = runtime.bus()
    for n in range(count):
        bus.put_rule(
            f"job-{n}",
            schedule={"expression": "rate(1 hour)", "start_date": iso(first + 3600 * n / count)},
        )
    began = time.perf_counter()
    async with runtime:
        started = time.perf_counter() - began
        await asyncio.sleep(3)
        share = await cpu_share(seconds)
    return started, share


async def polling(count: int, seconds: float) -> float:
    """The other peer: every due time checked once a second."""
    dues = [time.time() + 3600.0 + n for n in range(count)]

    async def poll() -> None:
        while True:
            now = time.time()
            for index, due in enumerate(dues):
                if due <= now:
                    dues[index] = due + 3600.0
            await asyncio.sleep(1.0)

    async with asyncio.TaskGroup() as group:
        task = group.create_task(poll())
        await asyncio.sleep(1.5)
        share = await cpu_share(seconds)
        task.cancel()
    return share


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    count, seconds = args.schedules, args.seconds
    print(f"{count} schedules, CPU measured over {seconds:.0f} s between firings; {load()}")
    with tempfile.TemporaryDirectory() as directory:
        started, share = await schedules(count, seconds, Path(directory) / "a.db")
        print(
            f"scheduler schedules: started in {started:.2f} s;"
            f" {share * 100:.3f}% of a core between firings; {load()}"
        )
        rule_start, rule_share = await rules(count, seconds, Path(directory) / "b.db")
        print(
            f"peer, scheduled rules: started in {rule_start:.2f} s;"
            f" {rule_share * 100:.3f}% of a core; {load()}"
        )
    poll_share = await polling(count, seconds)
    print(f"peer, a loop checking every schedule each second: {poll_share * 100:.3f}% of a core")
    print(
        f"ratios: schedules / scheduled rules CPU {share / max(rule_share, 1e-9):.2f}x,"
        f" start {started / rule_start:.2f}x; polling / schedules"
        f" {poll_share / max(share, 1e-9):.1f}x"
    )


if __name__ == "__main__":
    asyncio.run(main())
