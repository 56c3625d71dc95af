"""Scheduled rules on a running bus: firing times, the scheduled event, delivery
through targets (transformers, retries, dead letters), enable/disable/delete,
DST, flexible windows, and runs missed while the process was down.

Time is a ManualClock: an hour of schedule runs in milliseconds.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pipelines.clock import ManualClock
from pipelines.errors import ConfigError
from pipelines.event import parse_time
from pipelines.limits import Limits
from pipelines.runtime import Runtime

from .recorder import Recorder, plugin_manager

PLUGINS = plugin_manager()
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC).timestamp()  # a Monday, 09:00 UTC


def make_runtime(start: float = T0, state: Path | None = None, seed: int = 7) -> Runtime:
    runtime = Runtime(clock=ManualClock(start), plugins=PLUGINS, seed=seed, state_path=state)
    runtime.add_resource("sink", "recorder", {})
    return runtime


def clock_of(runtime: Runtime) -> ManualClock:
    assert isinstance(runtime.clock, ManualClock)
    return runtime.clock


def sink(runtime: Runtime, name: str = "sink") -> Recorder:
    target = runtime.resource(name)
    assert isinstance(target, Recorder)
    return target


async def scheduled(runtime: Runtime, schedule: Any, name: str = "tick", **target: Any) -> None:
    bus = runtime.bus()
    bus.put_rule(name, schedule=schedule)
    await bus.put_targets(name, [{"id": "t", "resource": "sink", **target}])


async def quiet(runtime: Runtime) -> None:
    """Until the scheduler sleeps and the bus is idle (SQLite writes run in a thread)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not (runtime.scheduler.idle and runtime._drained()):
        assert loop.time() < deadline, "the scheduler did not settle"
        await asyncio.sleep(0.001)


async def advance(runtime: Runtime, seconds: float) -> None:
    await clock_of(runtime).advance(seconds, quiet=lambda: quiet(runtime))


def times(runtime: Runtime, name: str = "sink") -> list[float]:
    return [received.time for received in sink(runtime, name).received]


def event_times(runtime: Runtime, name: str = "sink") -> list[str]:
    return [received.payload["time"] for received in sink(runtime, name).received]


async def test_rate_fires_at_once_then_every_period_on_time() -> None:
    runtime = make_runtime()
    await scheduled(runtime, "rate(1 minute)")
    async with runtime:
        await advance(runtime, 150)
        assert times(runtime) == [T0, T0 + 60, T0 + 120]


async def test_the_scheduled_event_is_eventbridges() -> None:
    runtime = make_runtime()
    await scheduled(runtime, "cron(0/5 * * * ? *)")
    async with runtime:
        await advance(runtime, 301)
    [first, second] = [r.payload for r in sink(runtime).received]
    assert first["source"] == "aws.events"
    assert first["detail-type"] == "Scheduled Event"
    assert first["detail"] == {}
    assert first["resources"] == ["arn:aws:events:us-east-1:000000000000:rule/tick"]
    assert first["version"] == "0"
    assert first["account"] == "000000000000" and first["region"] == "us-east-1"
    # 09:00 is due as the runtime starts: it fires.
    assert [first["time"], second["time"]] == ["2026-01-05T09:00:00Z", "2026-01-05T09:05:00Z"]
    assert first["id"] != second["id"]


async def test_a_scheduled_event_goes_to_its_rule_only() -> None:
    runtime = make_runtime()
    runtime.add_resource("other", "recorder", {})
    await scheduled(runtime, "rate(1 minute)")
    bus = runtime.bus()
    bus.put_rule("aws-events", pattern={"source": ["aws.events"]})
    await bus.put_targets("aws-events", [{"id": "o", "resource": "other"}])
    async with runtime:
        await advance(runtime, 61)
    assert len(times(runtime)) == 2
    assert sink(runtime, "other").received == []


async def test_scheduled_events_use_transformers_retries_and_dead_letters() -> None:
    runtime = Runtime(clock=ManualClock(T0), plugins=PLUGINS, seed=1)
    runtime.add_resource("sink", "recorder", {})
    runtime.add_resource("flaky", "recorder", {"fail": -1})
    runtime.add_resource("dlq", "recorder", {})
    bus = runtime.bus()
    bus.put_rule("nightly", schedule="rate(1 day)")
    await bus.put_targets(
        "nightly",
        [
            {
                "id": "report",
                "resource": "sink",
                "input_transformer": {
                    "input_paths_map": {"when": "$.time", "rule": "$.resources[0]"},
                    "input_template": '{"run": <when>, "by": <rule>}',
                },
            },
            {
                "id": "broken",
                "resource": "flaky",
                "dead_letter": "dlq",
                "retry_policy": {"maximum_retry_attempts": 2},
            },
        ],
    )
    async with runtime:
        await advance(runtime, 3600)
    assert [r.payload for r in sink(runtime).received] == [
        {"run": "2026-01-05T09:00:00Z", "by": "arn:aws:events:us-east-1:000000000000:rule/nightly"}
    ]
    assert len(sink(runtime, "flaky").attempts) == 3
    [dead] = sink(runtime, "dlq").received
    assert dead.payload["detail-type"] == "Scheduled Event"
    assert dead.context.attributes["RULE_NAME"] == "nightly"


async def test_disabled_rules_skip_their_runs_and_resume_on_enable() -> None:
    runtime = make_runtime()
    await scheduled(runtime, "rate(1 minute)")
    bus = runtime.bus()
    async with runtime:
        await advance(runtime, 30)
        bus.disable_rule("tick")
        await advance(runtime, 150)  # runs at +60, +120, +180 pass
        bus.enable_rule("tick")
        await advance(runtime, 60)
    assert times(runtime) == [T0, T0 + 240]


async def test_deleting_a_rule_stops_it_and_changing_its_schedule_reschedules() -> None:
    runtime = make_runtime()
    await scheduled(runtime, "rate(1 hour)")
    bus = runtime.bus()
    async with runtime:
        await advance(runtime, 10)
        assert times(runtime) == [T0]
        bus.put_rule("tick", schedule="cron(30 * * * ? *)")
        await advance(runtime, 3600)
        assert times(runtime) == [T0, T0 + 1800]
        await bus.delete_rule("tick", force=True)
        await advance(runtime, 7200)
        assert times(runtime) == [T0, T0 + 1800]
        assert len(runtime.scheduler) == 0


async def test_a_rule_has_a_pattern_or_a_schedule() -> None:
    runtime = make_runtime()
    with pytest.raises(ConfigError, match="either an event pattern or a schedule"):
        runtime.bus().put_rule("both", pattern={"source": ["x"]}, schedule="rate(1 hour)")
    with pytest.raises(ConfigError, match="either an event pattern or a schedule"):
        runtime.bus().put_rule("neither")
    with pytest.raises(ConfigError, match=r"rule bad\.schedule\.expression: .*6 fields"):
        runtime.bus().put_rule("bad", schedule="cron(0 12 * *)")


async def test_describe_rule_shows_the_schedule() -> None:
    runtime = make_runtime()
    spec = {
        "expression": "cron(0 2 * * ? *)",
        "timezone": "Europe/Berlin",
        "missed_runs": "fire_once",
    }
    runtime.bus().put_rule("nightly", schedule=spec)
    described = runtime.bus().describe_rule("nightly")
    assert described["ScheduleExpression"] == "cron(0 2 * * ? *)"
    assert described["Schedule"]["timezone"] == "Europe/Berlin"
    assert described["Schedule"]["missed_runs"] == "fire_once"
    assert "EventPattern" not in described


async def test_a_one_time_schedule_fires_once() -> None:
    runtime = make_runtime()
    await scheduled(runtime, {"expression": "at(2026-01-05T10:30:00)", "timezone": "Europe/Berlin"})
    async with runtime:
        await advance(runtime, 86400)
    assert times(runtime) == [T0 + 30 * 60]  # 10:30 in Berlin is 09:30 UTC


async def test_cron_across_dst_changes_fires_once_per_wall_clock_time() -> None:
    start = datetime(2026, 3, 28, 23, 45, tzinfo=UTC).timestamp()
    runtime = make_runtime(start)
    await scheduled(runtime, {"expression": "cron(0/30 0-4 * * ? *)", "timezone": "Europe/Berlin"})
    async with runtime:
        await advance(runtime, 4 * 3600)
    # 02:00 and 02:30 do not exist on 2026-03-29 in Berlin.
    assert event_times(runtime) == [
        "2026-03-29T00:00:00Z",  # 01:00 CET
        "2026-03-29T00:30:00Z",  # 01:30 CET
        "2026-03-29T01:00:00Z",  # 03:00 CEST
        "2026-03-29T01:30:00Z",
        "2026-03-29T02:00:00Z",
        "2026-03-29T02:30:00Z",  # 04:30 CEST
    ]

    start = datetime(2026, 10, 24, 23, 45, tzinfo=UTC).timestamp()
    runtime = make_runtime(start)
    await scheduled(runtime, {"expression": "cron(0/30 0-4 * * ? *)", "timezone": "Europe/Berlin"})
    async with runtime:
        await advance(runtime, 5 * 3600)
    # 02:00 and 02:30 happen twice on 2026-10-25 in Berlin: each fires once.
    assert event_times(runtime) == [
        "2026-10-25T00:00:00Z",  # 02:00 CEST
        "2026-10-25T00:30:00Z",  # 02:30 CEST
        "2026-10-25T02:00:00Z",  # 03:00 CET
        "2026-10-25T02:30:00Z",
        "2026-10-25T03:00:00Z",  # 04:00 CET
        "2026-10-25T03:30:00Z",  # 04:30 CET (05:00 CET is outside hours 0-4)
    ]


async def test_a_flexible_window_delays_each_run_within_the_window() -> None:
    runtime = make_runtime()
    await scheduled(runtime, {"expression": "rate(1 hour)", "flexible_window_minutes": 15})
    async with runtime:
        await advance(runtime, 10 * 3600)
    received = sink(runtime).received
    assert len(received) == 10
    delays = [r.time - parse_time(r.payload["time"]).timestamp() for r in received]
    assert all(0 <= delay <= 900 for delay in delays)
    assert len({round(delay) for delay in delays}) > 5  # random, not a fixed offset
    # The event carries the scheduled time; runs keep their hourly phase.
    assert [parse_time(r.payload["time"]).timestamp() - T0 for r in received] == [
        3600.0 * k for k in range(10)
    ]


async def test_start_and_end_dates_bound_a_running_schedule() -> None:
    runtime = make_runtime()
    await scheduled(
        runtime,
        {
            "expression": "rate(10 minutes)",
            "start_date": "2026-01-05T09:30:00Z",
            "end_date": "2026-01-05T10:00:00Z",
        },
    )
    async with runtime:
        await advance(runtime, 3 * 3600)
    assert times(runtime) == [T0 + 1800, T0 + 2400, T0 + 3000, T0 + 3600]


async def test_idle_schedules_cost_one_timer_and_no_polling() -> None:
    runtime = make_runtime()
    bus = runtime.bus()
    for index in range(1000):
        bus.put_rule(f"r{index}", schedule="rate(1 hour)")
    async with runtime:
        await advance(runtime, 1)
        turns = runtime.scheduler.wakeups
        assert runtime.scheduler.fired == 1000
        await advance(runtime, 3598)  # nothing is due in the meantime
        assert runtime.scheduler.wakeups == turns
        await advance(runtime, 1)
        assert runtime.scheduler.fired == 2000
        assert runtime.scheduler.wakeups == turns + 1


async def restarted(state: Path, policy: str, downtime: float) -> Runtime:
    """Run a rate(5 minutes) rule for 11 minutes, stop, and restart it after
    ``downtime`` seconds on the same state database."""
    spec = {"expression": "rate(5 minutes)", "missed_runs": policy}
    first = make_runtime(state=state)
    await scheduled(first, spec)
    async with first:
        await advance(first, 11 * 60)
    assert times(first) == [T0, T0 + 300, T0 + 600]
    second = make_runtime(T0 + 11 * 60 + downtime, state=state)
    await scheduled(second, spec)
    return second


async def test_missed_runs_are_skipped_by_default(tmp_path: Path) -> None:
    runtime = await restarted(tmp_path / "state.db", "skip", downtime=3690)
    async with runtime:
        await advance(runtime, 200)
    # Restarted at T0+4350: runs at T0+900 ... T0+4200 were missed; the
    # 5-minute phase is kept.
    assert times(runtime) == [T0 + 4500]
    assert runtime.scheduler.skipped == 1


async def test_missed_runs_fire_once_for_the_latest(tmp_path: Path) -> None:
    runtime = await restarted(tmp_path / "state.db", "fire_once", downtime=3690)
    restart = clock_of(runtime).time()
    async with runtime:
        await advance(runtime, 200)
    received = sink(runtime).received
    assert [r.time for r in received] == [restart, T0 + 4500]
    # The catch-up event carries the latest missed run's time.
    assert received[0].payload["time"] == "2026-01-05T10:10:00Z"  # T0 + 4200


async def test_a_short_restart_fires_the_run_it_was_late_for(tmp_path: Path) -> None:
    runtime = await restarted(tmp_path / "state.db", "skip", downtime=4 * 60 + 30)
    restart = clock_of(runtime).time()
    async with runtime:
        await advance(runtime, 10)
    # The run at T0+900 is 30 s late: within the grace, not missed.
    assert times(runtime) == [restart]
    assert sink(runtime).received[0].payload["time"] == "2026-01-05T09:15:00Z"


async def test_a_changed_schedule_starts_afresh_after_restart(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    first = make_runtime(state=state)
    await scheduled(first, "rate(5 minutes)")
    async with first:
        await advance(first, 60)
    second = make_runtime(T0 + 3 * 3600, state=state)
    await scheduled(second, {"expression": "rate(7 minutes)", "missed_runs": "fire_once"})
    async with second:
        await advance(second, 1)
    # A new schedule has nothing missed: the rate fires at once, no catch-up.
    assert times(second) == [T0 + 3 * 3600]


@pytest.mark.parametrize(
    ("policy", "expected"), [("skip", [0, 1200]), ("fire_once", [0, 1001, 1200])]
)
async def test_a_run_overdue_after_a_clock_jump_follows_the_missed_run_policy(
    policy: str, expected: list[float]
) -> None:
    runtime = make_runtime()
    await scheduled(runtime, {"expression": "rate(5 minutes)", "missed_runs": policy})
    async with runtime:
        await advance(runtime, 1)
        clock_of(runtime).jump(1000)  # the machine slept through three runs
        await advance(runtime, 200)
    assert [t - T0 for t in times(runtime)] == expected
    if policy == "fire_once":  # one event, for the latest run due
        assert sink(runtime).received[1].payload["time"] == "2026-01-05T09:15:00Z"


async def test_a_past_start_date_does_not_make_missed_runs_after_a_restart(tmp_path: Path) -> None:
    spec = {
        "expression": "cron(0 2 * * ? *)",
        "start_date": "2025-01-01T00:00:00Z",
        "missed_runs": "fire_once",
    }
    first = make_runtime(state=tmp_path / "state.db")
    await scheduled(first, spec)
    async with first:
        await advance(first, 60)
    second = make_runtime(T0 + 7200, state=tmp_path / "state.db")
    await scheduled(second, spec)
    async with second:
        await advance(second, 60)
    assert times(first) == [] and times(second) == []


async def test_a_rule_deleted_and_added_again_at_once_starts_afresh() -> None:
    runtime = make_runtime()
    await scheduled(runtime, "rate(1 hour)")
    bus = runtime.bus()
    async with runtime:
        await advance(runtime, 600)
        await bus.delete_rule("tick", force=True)
        await scheduled(runtime, "rate(1 hour)")
        await advance(runtime, 1)
    assert [t - T0 for t in times(runtime)] == [0, 600]


async def test_a_backed_up_bus_does_not_hold_up_schedules_on_other_buses() -> None:
    runtime = Runtime(
        clock=ManualClock(T0),
        plugins=PLUGINS,
        limits=Limits(intake_size=1, target_queue_size=1),
    )
    runtime.add_resource("sink", "recorder", {})
    runtime.add_resource("stuck", "recorder", {"hold": True})
    other = runtime.create_bus("other")
    other.put_rule("slow", schedule="rate(1 minute)")
    await other.put_targets("slow", [{"id": "s", "resource": "stuck"}])
    await scheduled(runtime, "rate(1 minute)")
    async with runtime:
        for _ in range(10):
            await clock_of(runtime).advance(60)
        assert [t - T0 for t in times(runtime)] == [60.0 * k for k in range(11)]
        sink(runtime, "stuck").release()


def stagger(runtime: Runtime, count: int, step: float, first: float = T0 + 60) -> list[float]:
    """``count`` rate(1 minute) rules ``r0``... starting ``step`` seconds apart
    from ``first``, each with the recorder as target; their start times."""
    bus = runtime.bus()
    starts = [first + step * n for n in range(count)]
    for n, start in enumerate(starts):
        moment = datetime.fromtimestamp(start, UTC).isoformat()
        bus.put_rule(f"r{n}", schedule={"expression": "rate(1 minute)", "start_date": moment})
    return starts


async def test_runs_due_within_the_window_fire_together_once_each_in_order() -> None:
    runtime = make_runtime()
    starts = stagger(runtime, 6, 0.5)  # due at T0+60, 60.5, 61, 61.5, 62, 62.5
    seen: list[tuple[float, str, str]] = []

    def observe(bus: str, event: dict[str, Any]) -> None:
        rule = event["resources"][0].rpartition("/")[2]
        seen.append((runtime.clock.time(), rule, event["time"]))

    async with runtime:
        with runtime.tap(observe):
            await advance(runtime, 59)
            turns = runtime.scheduler.wakeups
            await advance(runtime, 5)
            # The first run fires on time; the next ones wait for the window
            # (1 s) after it and fire together, never before their time.
            assert [at - T0 for at, _, _ in seen] == [60, 61, 61, 62, 62, 63]
            assert runtime.scheduler.wakeups - turns == 4
            await advance(runtime, 60 * 3)
    rules = [rule for _, rule, _ in seen]
    assert rules == [f"r{n}" for n in range(6)] * 4  # each once a minute, in due order
    for at, rule, text in seen:
        n = int(rule[1:])
        due = parse_time(text).timestamp()
        # ``time`` is the run's scheduled time (to the second, as EventBridge writes it).
        assert (at - starts[n]) % 60 <= runtime.scheduler.window
        assert due == int(at - (at - starts[n]) % 60)


async def test_a_busy_minute_takes_one_turn_a_second() -> None:
    runtime = make_runtime()
    stagger(runtime, 480, 0.125)  # a run due every 125 ms from T0+60
    async with runtime:
        await advance(runtime, 60)
        turns = runtime.scheduler.wakeups
        await advance(runtime, 119.5)
        # One turn a second (T0+61 ... T0+179), each firing the runs due by
        # then: the whole first minute and the second's up to T0+179.
        assert runtime.scheduler.wakeups - turns == 119
        assert runtime.scheduler.fired == 480 + 473


async def test_without_a_window_each_run_fires_at_its_own_time() -> None:
    runtime = make_runtime()
    runtime.scheduler.window = 0.0
    await scheduled(runtime, "rate(1 minute)", name="first")
    bus = runtime.bus()
    start = datetime.fromtimestamp(T0 + 0.5, UTC).isoformat()
    bus.put_rule("second", schedule={"expression": "rate(1 minute)", "start_date": start})
    await bus.put_targets("second", [{"id": "t", "resource": "sink"}])
    async with runtime:
        await advance(runtime, 61)
    assert sorted(times(runtime)) == [T0, T0 + 0.5, T0 + 60, T0 + 60.5]


async def test_coalesced_runs_are_marked_done(tmp_path: Path) -> None:
    """Runs fired together have their marks saved: a restart neither fires
    them again nor counts anything missed."""
    state = tmp_path / "state.db"
    runtime = make_runtime(state=state)
    stagger(runtime, 3, 0.4, first=T0 + 10)
    await runtime.bus().put_targets("r2", [{"id": "t", "resource": "sink"}])
    async with runtime:
        await advance(runtime, 75)
    assert times(runtime) == [T0 + 11, T0 + 71]  # r2 due at T0+10.8 and T0+70.8
    again = make_runtime(T0 + 75, state=state)
    stagger(again, 3, 0.4, first=T0 + 10)
    await again.bus().put_targets("r2", [{"id": "t", "resource": "sink"}])
    async with again:
        await advance(again, 60)
    assert times(again) == [T0 + 131]
    assert again.scheduler.skipped == 0


async def test_a_running_schedule_changed_but_not_its_times_keeps_its_phase() -> None:
    """A new end date or missed-run policy re-places the rule (twice here
    before the scheduler's next turn) where it got to: no run at once, the
    same phase. A new expression starts afresh."""
    runtime = make_runtime()
    await scheduled(runtime, "rate(5 minutes)")  # no start date: anchored at T0
    bus = runtime.bus()
    async with runtime:
        await advance(runtime, 400)
        bus.put_rule("tick", schedule={"expression": "rate(5 minutes)", "missed_runs": "fire_once"})
        await advance(runtime, 100)
        bus.put_rule("tick", schedule={"expression": "rate(5 minutes)", "end_date": "2026-01-06"})
        bus.put_rule("tick", schedule={"expression": "rate(5 minutes)", "end_date": "2026-01-07"})
        await advance(runtime, 300)
        assert [t - T0 for t in times(runtime)] == [0, 300, 600]
        bus.put_rule("tick", schedule="rate(7 minutes)")
        await advance(runtime, 1)
        assert [t - T0 for t in times(runtime)] == [0, 300, 600, 800]
