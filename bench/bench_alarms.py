"""Alarm evaluation: one cycle over 10,000 metric alarms on 10,000 metrics.

The issue's target: "10,000 metric alarms over 10,000 metrics; time for one
evaluation cycle. Target: under one second."

A runtime with a state database and a ``ManualClock`` gets ``--alarms`` metric
alarms, each on its own metric (``Bench``/``Load``, dimension ``Host``), with
a period of 60 s and 3 evaluation periods (2 datapoints to alarm on every
third), thresholds spread so that about half go to ALARM and half to OK,
mostly ``Average``, a quarter ``Maximum`` and ``--percentile-share`` of them
``p99`` (percentiles read every row's full distribution). Every metric gets
four values a minute for the last five minutes (the evaluation range of a
3-period alarm), then the store is flushed.

A cycle is ``Alarms.evaluate(tick, everyone=True)`` at the last minute
boundary: flush, one ``read_many`` per group of alarms sharing a statistic,
the state rule per alarm, then saving and publishing the transitions. The
first cycle moves every alarm out of INSUFFICIENT_DATA (state reasons,
history rows and one state-change event each on the bus); it is timed once,
on its own. The steady-state cycles that follow, at the same tick, have no
transitions; ``--rounds`` of them give the median and minimum.

Peers, in the same process and the same rounds: the pure state rule
(``evaluate_alarm_state`` in a plain loop over the same number of alarms,
with ranges of the same length as plain lists of floats), and the reads
alone (``read_many`` for every alarm's metric, grouped as the cycle groups
them). Timings are reported, never asserted; the load average is printed
beside them.

    python bench/bench_alarms.py [--alarms 10000] [--rounds 5] [--percentile-share 0]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from pipelines.alarms import ALARM, OK, evaluate_alarm_state, evaluation_range
from pipelines.clock import ManualClock
from pipelines.metrics import SeriesKey, series_key
from pipelines.process import tuned_process
from pipelines.runtime import Runtime

NAMESPACE = "Bench"
METRIC = "Load"
PERIOD = 60
EVALUATION_PERIODS = 3
MINUTES = 5  # data put: the last five minutes, the range of a 3-period alarm
OFFSETS = (0.0, 0.5, 1.0, 1.5)  # four values a minute, above the minute's level
#: A minute boundary; the clock stands 30 seconds after it.
TICK = 1_700_000_040
TARGET = 1.0  # seconds for one cycle


@dataclass(frozen=True, slots=True)
class AlarmPlan:
    """One alarm and the metric it watches."""

    name: str
    host: str
    key: SeriesKey
    statistic: str
    datapoints_to_alarm: int
    threshold: float
    comparison_operator: str


def plans(count: int, percentile_share: float) -> list[AlarmPlan]:
    """``count`` alarms: statistics, M of N, operators and thresholds varied."""
    made = []
    for i in range(count):
        if int((i + 1) * percentile_share) > int(i * percentile_share):
            statistic = "p99"
        elif i % 4 == 3:
            statistic = "Maximum"
        else:
            statistic = "Average"
        made.append(
            AlarmPlan(
                name=f"load-h{i}",
                host=f"h{i}",
                key=series_key(NAMESPACE, METRIC, {"Host": f"h{i}"}),
                statistic=statistic,
                datapoints_to_alarm=2 if i % 3 == 0 else EVALUATION_PERIODS,
                threshold=float((i * 37) % 100) + 0.25,
                comparison_operator=(
                    "LessThanThreshold" if i % 5 == 4 else "GreaterThanOrEqualToThreshold"
                ),
            )
        )
    return made


def level(index: int, minute: int) -> float:
    """Metric ``index``'s level in ``minute`` (0 oldest): its base, drifting."""
    return float(index % 100 + (minute + index) % 5 - 2)


async def build(runtime: Runtime, alarms: list[AlarmPlan]) -> None:
    """Declare the alarms (before start: the state database is written once, at open)."""
    for plan in alarms:
        await runtime.alarms.put_metric_alarm(
            plan.name,
            namespace=NAMESPACE,
            metric_name=METRIC,
            dimensions={"Host": plan.host},
            statistic=plan.statistic,
            period=PERIOD,
            evaluation_periods=EVALUATION_PERIODS,
            datapoints_to_alarm=plan.datapoints_to_alarm,
            threshold=plan.threshold,
            comparison_operator=plan.comparison_operator,
        )


def put_data(runtime: Runtime, count: int) -> int:
    """Four values a minute for the five minutes before ``TICK``, for every metric."""
    put = 0
    for i in range(count):
        dims = {"Host": f"h{i}"}
        for minute in range(MINUTES):
            start = TICK - (MINUTES - minute) * PERIOD
            base = level(i, minute)
            for n, offset in enumerate(OFFSETS):
                runtime.put_metric_data(
                    NAMESPACE,
                    METRIC,
                    dims,
                    value=max(base + offset, 0.0),
                    timestamp=start + n * 15 + 1,
                )
                put += 1
    return put


async def read_all(runtime: Runtime, alarms: list[AlarmPlan]) -> int:
    """``read_many`` for every alarm's metric, one call per statistic (as a cycle)."""
    assert runtime.metrics is not None
    by_statistic: dict[str, set[SeriesKey]] = {}
    for plan in alarms:
        by_statistic.setdefault(plan.statistic, set()).add(plan.key)
    size = evaluation_range(EVALUATION_PERIODS)
    present = 0
    for statistic, keys in by_statistic.items():
        series = await runtime.metrics.read_many(keys, TICK, PERIOD, size, statistic)
        present += sum(v is not None for points in series.values() for v in points)
    return present


def pure_rule(alarms: list[AlarmPlan], ranges: list[list[float]]) -> int:
    """The peer: the state rule alone, in a plain loop; how many go to ALARM."""
    alarming = 0
    for plan, points in zip(alarms, ranges, strict=True):
        state = evaluate_alarm_state(
            points,
            threshold=plan.threshold,
            comparison_operator=plan.comparison_operator,
            evaluation_periods=EVALUATION_PERIODS,
            datapoints_to_alarm=plan.datapoints_to_alarm,
        )
        alarming += state == ALARM
    return alarming


async def ranges_of(runtime: Runtime, alarms: list[AlarmPlan]) -> list[list[float]]:
    """The evaluation range each alarm reads, as plain floats (the peer's input)."""
    assert runtime.metrics is not None
    size = evaluation_range(EVALUATION_PERIODS)
    found: dict[tuple[str, SeriesKey], list[float]] = {}
    for statistic in {plan.statistic for plan in alarms}:
        keys = {plan.key for plan in alarms if plan.statistic == statistic}
        series = await runtime.metrics.read_many(keys, TICK, PERIOD, size, statistic)
        for key, points in series.items():
            found[statistic, key] = [float(v) if v is not None else 0.0 for v in points]
    return [found[plan.statistic, plan.key] for plan in alarms]


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await call()
    return time.perf_counter() - start


def row(label: str, samples: list[float], count: int) -> None:
    median, low = statistics.median(samples), min(samples)
    print(f"{label:<36} {median * 1e3:>10.1f} {low * 1e3:>10.1f} {count / median:>14,.0f}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alarms", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--percentile-share",
        type=float,
        default=0.0,
        help="fraction of the alarms on p99 (0 to 1); percentiles read full distributions",
    )
    args = parser.parse_args()
    if not 0.0 <= args.percentile_share <= 1.0:
        parser.error("--percentile-share is a fraction from 0 to 1")
    count = args.alarms
    alarms = plans(count, args.percentile_share)
    mix: dict[str, int] = {}
    for plan in alarms:
        mix[plan.statistic] = mix.get(plan.statistic, 0) + 1
    shown_mix = ", ".join(f"{n:,} {s}" for s, n in sorted(mix.items()))
    size = evaluation_range(EVALUATION_PERIODS)
    print(
        f"{count:,} metric alarms on {count:,} metrics ({shown_mix}); period {PERIOD} s,"
        f" {EVALUATION_PERIODS} evaluation periods, range of {size} periods; load {load()}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        clock = ManualClock(TICK + 30.0)
        runtime = Runtime(state_path=Path(tmp) / "state.db", clock=clock)
        start = time.perf_counter()
        await build(runtime, alarms)
        declared = time.perf_counter() - start
        async with runtime:
            assert runtime.metrics is not None
            tick = int(clock.time() // PERIOD * PERIOD)
            assert tick == TICK
            start = time.perf_counter()
            put = put_data(runtime, count)
            await runtime.metrics.flush()
            loaded = time.perf_counter() - start
            print(
                f"setup: declared the alarms in {declared:.2f} s;"
                f" put {put:,} values and flushed them in {loaded:.2f} s"
            )
            gc.freeze()

            # The first cycle: every alarm leaves INSUFFICIENT_DATA.
            start = time.perf_counter()
            transitions = await runtime.alarms.evaluate(tick, everyone=True)
            first = time.perf_counter() - start
            start = time.perf_counter()
            await runtime.wait_until_idle(timeout=120)
            drained = time.perf_counter() - start
            states = [a["StateValue"] for a in runtime.alarms.describe_alarms()]
            in_alarm, in_ok = states.count(ALARM), states.count(OK)
            evaluated = runtime.alarms.evaluated

            # Steady state, with the peers in the same rounds.
            ranges = await ranges_of(runtime, alarms)
            cycles: list[float] = []
            reads: list[float] = []
            rules: list[float] = []
            steady_transitions = 0
            rule_alarming = 0

            async def cycle() -> None:
                nonlocal steady_transitions
                steady_transitions += len(await runtime.alarms.evaluate(tick, everyone=True))

            async def rule() -> None:
                nonlocal rule_alarming
                rule_alarming = pure_rule(alarms, ranges)

            for _ in range(args.rounds):
                cycles.append(await timed(cycle))
                reads.append(await timed(lambda: read_all(runtime, alarms)))
                rules.append(await timed(rule))

    steady = statistics.median(cycles)
    print(
        f"first cycle: {first * 1e3:.1f} ms, {evaluated:,} evaluated, {len(transitions):,}"
        f" transitions out of INSUFFICIENT_DATA ({in_alarm:,} ALARM, {in_ok:,} OK), as many"
        f" state-change events put on the bus (delivered {drained * 1e3:.0f} ms later);"
        f" timed once"
    )
    print(
        f"steady-state cycles: {args.rounds} at the same tick, {steady_transitions} transitions;"
        f" the pure rule puts {rule_alarming:,} in ALARM"
    )
    print(f"\n{'':<36} {'median ms':>10} {'min ms':>10} {'alarms/s':>14}")
    print(
        f"{'first cycle (transitions, 1 run)':<36} {first * 1e3:>10.1f} {first * 1e3:>10.1f}"
        f" {count / first:>14,.0f}"
    )
    row("steady-state cycle", cycles, count)
    row("read_many alone (all keys)", reads, count)
    row("evaluate_alarm_state alone", rules, count)
    rule_median = statistics.median(rules)
    read_median = statistics.median(reads)
    print(
        f"\nratio steady cycle / pure rule: {steady / rule_median:.1f};"
        f" first cycle / pure rule: {first / rule_median:.1f};"
        f" read_many share of a steady cycle: {read_median / steady:.0%}"
    )
    print(
        f"target, one cycle under {TARGET:.0f} second for {count:,} alarms:"
        f" steady state {'yes' if steady < TARGET else 'no'} ({steady:.3f} s),"
        f" first cycle {'yes' if first < TARGET else 'no'} ({first:.3f} s)"
    )
    print(f"load average after: {load()}")


if __name__ == "__main__":
    with tuned_process():  # as the pipelines command runs a pipeline
        asyncio.run(main())
