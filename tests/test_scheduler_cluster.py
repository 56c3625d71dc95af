"""EventBridge Scheduler's schedules in a cluster (runners sharing a
PostgreSQL state): a schedule made through one runner reaches the others,
only the schedule leader fires it, and a run is never fired twice when
another runner takes over."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

import plugins.scheduler.target
from pipelines.clock import ManualClock
from pipelines.limits import Limits
from pipelines.runtime import Runtime
from plugins.scheduler.spec import normalized
from plugins.scheduler.target import Schedules

from .recorder import Recorder
from .schedulerkit import scheduler_plugins
from .test_scheduler import T0

PLUGINS = scheduler_plugins()


def runner(url: str, name: str, clock: ManualClock) -> Runtime:
    runtime = Runtime(
        clock=clock,
        plugins=PLUGINS,
        state_path=url,
        runner=name,
        limits=Limits(leader_check=0.05),
    )
    runtime.add_resource("sink", "recorder", {})
    runtime.add_resource("scheduler", "scheduler", {})
    return runtime


def times(runtime: Runtime) -> list[str]:
    found = runtime.resource("sink")
    assert isinstance(found, Recorder)
    return [received.context.event["time"] for received in found.received]


async def until(check: Callable[[], bool], seconds: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        assert loop.time() < deadline, "not within the time"
        await asyncio.sleep(0.01)


async def test_a_schedule_made_on_one_runner_fires_once_per_run_in_the_cluster(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plugins.scheduler.target, "REFRESH", 0.05)
    clock = ManualClock(T0)
    first, second = runner(postgres_url, "a", clock), runner(postgres_url, "b", clock)
    await first.start()
    try:
        await second.start()
        try:
            assert first.membership is not None and first.membership.leads("scheduler")
            made_on = second.resource("scheduler")
            assert isinstance(made_on, Schedules)
            body = normalized(
                {
                    "Name": "tick",
                    "ScheduleExpression": "rate(1 minute)",
                    "StartDate": T0 + 60,
                    "FlexibleTimeWindow": {"Mode": "OFF"},
                    "Target": {
                        "Arn": "arn:pipelines:recorder:us-east-1:000000000000:sink",
                        "RoleArn": "arn:aws:iam::000000000000:role/r",
                    },
                }
            )
            assert await made_on.insert(body, T0)  # through the runner that does not lead
            leader = first.resource("scheduler")
            assert isinstance(leader, Schedules)
            await until(lambda: ("default", "tick") in leader.schedules)
            await clock.advance(60)
            await until(lambda: times(first) == ["2026-01-05T09:01:00Z"])
            await asyncio.sleep(0.2)
            assert times(second) == []
            await first.stop(1)
            await until(
                lambda: second.membership is not None and second.membership.leads("scheduler")
            )
            await asyncio.sleep(0.2)
            assert times(second) == []  # the run at 09:01 was a's: not again
            await clock.advance(60)
            await until(lambda: times(second) == ["2026-01-05T09:02:00Z"])
        finally:
            await second.stop(1)
    finally:
        await first.stop(1)
    assert times(first) == ["2026-01-05T09:01:00Z"]
