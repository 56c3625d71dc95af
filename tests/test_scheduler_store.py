"""The scheduler plugin's store on both engines (SQLite and PostgreSQL), and
a runtime whose schedules and runs live in each: created through the
scheduler resource, marked once, kept across a restart."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from pipelines.clock import ManualClock
from pipelines.runtime import Runtime
from pipelines.state import StateDB
from plugins.scheduler.spec import normalized, rule_name
from plugins.scheduler.store import API, CONFIG, ScheduleStore, StoredSchedule
from plugins.scheduler.target import SCHEDULER_BUS, Schedules

from .recorder import Recorder
from .schedulerkit import scheduler_plugins

PLUGINS = scheduler_plugins()
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC).timestamp()


def _body(name: str, group: str = "default", **more: Any) -> dict[str, Any]:
    return normalized(
        {
            "Name": name,
            "GroupName": group,
            "ScheduleExpression": "rate(10 minutes)",
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "Target": {"Arn": "arn:pipelines:recorder:us-east-1:000000000000:sink", "RoleArn": "r"},
            **more,
        }
    )


async def test_schedules_and_groups_are_kept(state_location: str) -> None:
    store = await ScheduleStore.open(state_location)
    try:
        assert await store.put_group("reports", {"team": "d"}, 1.0)
        assert not await store.put_group("reports", {}, 2.0)  # exists
        row = StoredSchedule("reports", "a", _body("a", "reports"), API, 1.0, 1.0)
        assert await store.insert_schedule(row)
        assert not await store.insert_schedule(row)  # CreateSchedule's conflict
        await store.put_schedules([StoredSchedule("default", "b", _body("b"), CONFIG, 1.0, 2.0)])
        before = await store.changes()
        version, groups, rows = await store.load()
        assert version == before
        assert [(g.name, g.tags) for g in groups] == [("reports", {"team": "d"})]
        assert [(r.group, r.name, r.origin) for r in rows] == [
            ("default", "b", CONFIG),
            ("reports", "a", API),
        ]
        assert (await store.schedule("reports", "a")) == row
        assert await store.delete_group("reports") == ["a"]
        assert await store.schedule("reports", "a") is None
        assert await store.delete_schedules([("default", "b"), ("default", "zz")]) == 1
        assert await store.changes() > before
    finally:
        await store.close()


async def _settle(runtime: Runtime) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not (runtime.scheduler.idle and runtime._drained()):
        assert loop.time() < deadline
        await asyncio.sleep(0.001)


async def test_a_schedule_made_at_run_time_fires_once_per_run_across_a_restart(
    state_location: str,
) -> None:
    def runtime_at(start: float) -> Runtime:
        runtime = Runtime(clock=ManualClock(start), plugins=PLUGINS, state_path=state_location)
        runtime.add_resource("sink", "recorder", {})
        runtime.add_resource("scheduler", "scheduler", {})
        return runtime

    first = runtime_at(T0)
    async with first:
        holder = first.resource("scheduler")
        assert isinstance(holder, Schedules)
        assert await holder.insert(_body("tick", StartDate=T0), T0)
        clock = first.clock
        assert isinstance(clock, ManualClock)
        await clock.advance(25 * 60, quiet=lambda: _settle(first))
    sink = first.resource("sink")
    assert isinstance(sink, Recorder)
    assert [r.context.event["time"] for r in sink.received] == [
        "2026-01-05T09:00:00Z",
        "2026-01-05T09:10:00Z",
        "2026-01-05T09:20:00Z",
    ]
    state = await StateDB.open(state_location)
    try:
        mark = (await state.schedule_marks())[(SCHEDULER_BUS, rule_name("default", "tick"))]
        assert mark.last_due == T0 + 20 * 60
    finally:
        await state.close()
    # Back 5 minutes later: nothing was missed, nothing fires twice.
    again = runtime_at(T0 + 30 * 60)
    async with again:
        clock = again.clock
        assert isinstance(clock, ManualClock)
        await clock.advance(9 * 60, quiet=lambda: _settle(again))
    sink = again.resource("sink")
    assert isinstance(sink, Recorder)
    assert [r.context.event["time"] for r in sink.received] == ["2026-01-05T09:30:00Z"]
