"""EventBridge Scheduler's schedules on a running pipeline: declared in YAML,
fired through the engine's scheduler to any resource with their Input,
retry policy and dead letters; flexible windows reproducible; one-time
schedules deleting themselves; runs durable across a restart; config errors
located. Time is a ManualClock.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pipelines.clock import ManualClock
from pipelines.config import ConfigInvalid, build_runtime, load_config
from pipelines.event import parse_time
from pipelines.runtime import Runtime
from plugins.scheduler.store import ScheduleStore
from plugins.scheduler.target import SCHEDULER_BUS, Schedules

from .recorder import Recorder
from .schedulerkit import scheduler_plugins

PLUGINS = scheduler_plugins()
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC).timestamp()  # a Monday, 09:00 UTC

BASE = """
resources:
  sink: {type: recorder}
  dead: {type: recorder}
  failing: {type: recorder, fail: -1, retryable: false}
"""


async def built(
    tmp_path: Path, text: str, *, state: Path | str | None = None, start: float = T0
) -> Runtime:
    path = tmp_path / "pipeline.yaml"
    path.write_text(BASE + text)
    config = load_config([path])
    return await build_runtime(
        config, clock=ManualClock(start), state_path=state, plugins=PLUGINS, seed=3
    )


def recorder(runtime: Runtime, name: str = "sink") -> Recorder:
    found = runtime.resource(name)
    assert isinstance(found, Recorder)
    return found


def schedules(runtime: Runtime) -> Schedules:
    found = runtime.resource("scheduler")
    assert isinstance(found, Schedules)
    return found


async def quiet(runtime: Runtime) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not (runtime.scheduler.idle and runtime._drained()):
        assert loop.time() < deadline, "the scheduler did not settle"
        await asyncio.sleep(0.001)


async def advance(runtime: Runtime, seconds: float) -> None:
    clock = runtime.clock
    assert isinstance(clock, ManualClock)
    await clock.advance(seconds, quiet=lambda: quiet(runtime))


async def test_a_schedule_sends_its_input_with_context_attributes(tmp_path: Path) -> None:
    runtime = await built(
        tmp_path,
        """
schedules:
  hourly:
    expression: rate(1 hour)
    start_date: "2026-01-05T09:30:00Z"
    target:
      resource: sink
      input: {"report": "sales", "at": "<aws.scheduler.scheduled-time>",
              "arn": "<aws.scheduler.schedule-arn>", "try": "<aws.scheduler.attempt-number>"}
""",
    )
    async with runtime:
        await advance(runtime, 3 * 3600)
    received = recorder(runtime).received
    assert [r.time - T0 for r in received] == [1800.0, 5400.0, 9000.0]
    assert received[0].payload == {
        "report": "sales",
        "at": "2026-01-05T09:30:00Z",
        "arn": "arn:aws:scheduler:us-east-1:000000000000:schedule/default/hourly",
        "try": "1",
    }
    # It fires through a rule of the internal bus, not the default bus.
    assert runtime.bus().list_rules() == []
    assert len(runtime.bus(SCHEDULER_BUS).list_rules()) == 1


async def test_a_text_input_is_sent_as_text_and_no_input_as_an_empty_object(
    tmp_path: Path,
) -> None:
    runtime = await built(
        tmp_path,
        """
schedules:
  text: {expression: "at(2026-01-05T09:10:00)", target: {resource: sink, input: "hello there"}}
  reports/empty: {expression: "at(2026-01-05T09:20:00)", target: {resource: sink}}
""",
    )
    async with runtime:
        await advance(runtime, 3600)
    assert [r.payload for r in recorder(runtime).received] == ["hello there", {}]


async def test_a_time_zone_places_cron_runs_on_its_wall_clock(tmp_path: Path) -> None:
    runtime = await built(
        tmp_path,
        """
schedules:
  paris: {expression: "cron(30 10 * * ? *)", timezone: Europe/Paris, target: {resource: sink}}
""",
    )
    async with runtime:
        await advance(runtime, 2 * 86400)
    # 10:30 in Paris is 09:30 UTC in January.
    assert [r.time - T0 for r in recorder(runtime).received] == [1800.0, 1800.0 + 86400]


async def test_a_disabled_schedule_does_not_fire(tmp_path: Path) -> None:
    runtime = await built(
        tmp_path,
        """
schedules:
  paused: {expression: rate(5 minutes), state: DISABLED, target: {resource: sink}}
""",
    )
    async with runtime:
        await advance(runtime, 3600)
    assert recorder(runtime).received == []


async def test_the_flexible_window_is_reproducible_and_within_the_window(tmp_path: Path) -> None:
    text = """
schedules:
  flex: {expression: rate(1 hour), flexible_window_minutes: 30, target: {resource: sink}}
  other: {expression: rate(1 hour), flexible_window_minutes: 30, target: {resource: dead}}
"""
    seen = []
    for attempt in range(2):
        (tmp_path / str(attempt)).mkdir()
        runtime = await built(tmp_path / str(attempt), text)
        async with runtime:
            await advance(runtime, 6 * 3600)
        delays = [
            r.time - parse_time(r.context.event["time"]).timestamp()
            for r in recorder(runtime).received
        ]
        others = [r.time for r in recorder(runtime, "dead").received]
        seen.append((delays, others))
    delays, others = seen[0]
    assert seen[0] == seen[1]  # the same moments in another run of the same config
    assert len(delays) >= 5 and all(0 <= delay <= 1800 for delay in delays)
    assert len({round(delay) for delay in delays}) > 3  # drawn per run
    assert [r - T0 for r in others] != [d + 3600 * k for k, d in enumerate(delays)]


async def test_a_one_time_schedule_with_delete_deletes_itself_after_its_run(
    tmp_path: Path,
) -> None:
    runtime = await built(
        tmp_path,
        """
schedules:
  once:
    expression: "at(2026-01-05T09:05:00)"
    action_after_completion: DELETE
    target: {resource: sink, input: '{"n": 1}'}
  kept: {expression: "at(2026-01-05T09:05:00)", target: {resource: sink}}
""",
        state=tmp_path / "state.db",
    )
    async with runtime:
        await advance(runtime, 600)
        holder = schedules(runtime)
        for _ in range(500):
            if ("default", "once") not in holder.schedules:
                break
            await asyncio.sleep(0.01)
        assert set(holder.schedules) == {("default", "kept")}
        assert len(runtime.bus(SCHEDULER_BUS).list_rules()) == 1
    assert len(recorder(runtime).received) == 2
    store = await ScheduleStore.open(tmp_path / "state.db")
    try:
        assert await store.schedule("default", "once") is None
        assert await store.schedule("default", "kept") is not None
    finally:
        await store.close()


async def test_a_failed_run_follows_its_retry_policy_to_the_dead_letter(tmp_path: Path) -> None:
    runtime = await built(
        tmp_path,
        """
schedules:
  doomed:
    expression: "at(2026-01-05T09:05:00)"
    target:
      resource: failing
      input: '{"n": 1}'
      retry_policy: {maximum_retry_attempts: 0, maximum_event_age: 60}
      dead_letter: dead
""",
    )
    async with runtime:
        await advance(runtime, 600)
    assert len(recorder(runtime, "failing").attempts) == 1
    dead = recorder(runtime, "dead").received
    assert len(dead) == 1
    assert dead[0].context.attributes["ERROR_CODE"]  # the failure, as a dead letter carries it


async def test_an_event_bus_target_gets_a_put_event(tmp_path: Path) -> None:
    runtime = await built(
        tmp_path,
        """
rules:
  reports:
    pattern: {source: [reports.scheduler]}
    targets: [{id: s, resource: sink}]
schedules:
  to-bus:
    expression: "at(2026-01-05T09:05:00)"
    target:
      arn: arn:aws:events:us-east-1:000000000000:event-bus/default
      input: '{"kind": "nightly"}'
      eventbridge: {detail_type: Report Requested, source: reports.scheduler}
""",
    )
    async with runtime:
        await advance(runtime, 600)
        await advance(runtime, 1)
    (received,) = recorder(runtime).received
    assert received.payload["detail-type"] == "Report Requested"
    assert received.payload["detail"] == {"kind": "nightly"}
    assert received.payload["resources"] == [
        "arn:aws:scheduler:us-east-1:000000000000:schedule/default/to-bus"
    ]


async def test_runs_are_marked_once_and_a_late_run_fires_once_after_a_restart(
    tmp_path: Path,
) -> None:
    text = """
schedules:
  tick: {expression: rate(10 minutes), start_date: "2026-01-05T09:00:00Z",
         target: {resource: sink}}
  old: {expression: rate(10 minutes), start_date: "2026-01-05T09:00:00Z",
        target: {resource: dead, retry_policy: {maximum_event_age: 60}}}
"""
    state = tmp_path / "state.db"
    runtime = await built(tmp_path, text, state=state)
    async with runtime:
        await advance(runtime, 25 * 60)
    first = [r.context.event["time"] for r in recorder(runtime).received]
    assert first == ["2026-01-05T09:00:00Z", "2026-01-05T09:10:00Z", "2026-01-05T09:20:00Z"]
    # Down for an hour: six runs of each were missed.
    again = await built(tmp_path, text, state=state, start=T0 + 25 * 60 + 3600)
    async with again:
        await advance(again, 60)
    late = [r.context.event["time"] for r in recorder(again).received]
    # Within the maximum event age (86400 s by default): one run, the latest.
    assert late == ["2026-01-05T10:20:00Z"]
    # Older than its maximum event age (60 s): dropped.
    assert recorder(again, "dead").received == []


@pytest.mark.parametrize(
    ("schedule", "where", "message"),
    [
        (
            "{expression: rate(10 seconds), target: {resource: sink}}",
            "schedules.bad.expression",
            "Invalid Schedule Expression rate(10 seconds).",
        ),
        (
            "{expression: rate(1 hour), target: {resource: sink,"
            " retry_policy: {maximum_retry_attempts: 186}}}",
            "schedules.bad.target.retry_policy.maximum_retry_attempts",
            "must be a whole number 0-185, not 186",
        ),
        (
            "{expression: rate(1 hour), flexible_window_minutes: 1441, target: {resource: sink}}",
            "schedules.bad.flexible_window_minutes",
            "must be a whole number 1-1440, not 1441",
        ),
        (
            "{expression: rate(1 hour), timezone: Mars/Olympus, target: {resource: sink}}",
            "schedules.bad.timezone",
            "Invalid ScheduleExpressionTimezone Mars/Olympus.",
        ),
        (
            "{expression: rate(1 hour), target: {resource: nowhere}}",
            "schedules.bad.target.resource",
            "no resource named 'nowhere'",
        ),
    ],
)
async def test_config_errors_are_located(
    tmp_path: Path, schedule: str, where: str, message: str
) -> None:
    with pytest.raises(ConfigInvalid) as raised:
        await built(tmp_path, f"schedules:\n  bad: {schedule}\n")
    (problem,) = raised.value.problems
    assert problem.line == 7, problem  # the line of "bad:" in the file
    # Labelled as the file has it: the schedules section, not the resource it becomes.
    assert problem.message.startswith(f"{where}: ") and message in problem.message, problem.message


def _ids(runtime: Any) -> list[str]:
    return sorted(f"{group}/{name}" for group, name in schedules(runtime).schedules)


async def test_groups_by_key_and_a_reload_keeps_what_did_not_change(tmp_path: Path) -> None:
    runtime = await built(
        tmp_path,
        """
schedule_groups:
  reports: {tags: {team: data}}
schedules:
  reports/nightly: {expression: "cron(0 2 * * ? *)", target: {resource: sink}}
  hourly: {expression: rate(1 hour), target: {resource: sink}}
""",
        state=tmp_path / "state.db",
    )
    async with runtime:
        assert _ids(runtime) == ["default/hourly", "reports/nightly"]
        assert schedules(runtime).groups["reports"].tags == {"team": "data"}


async def test_a_reload_applies_the_schedules_section(tmp_path: Path) -> None:
    from pipelines.reload import reload

    before = """
schedules:
  kept: {expression: rate(1 hour), start_date: "2026-01-05T09:30:00Z", target: {resource: sink}}
  dropped: {expression: rate(1 hour), target: {resource: sink}}
"""
    after = """
schedules:
  kept: {expression: rate(1 hour), start_date: "2026-01-05T09:30:00Z", target: {resource: sink}}
  added: {expression: "at(2026-01-05T10:45:00)", target: {resource: dead}}
"""
    path = tmp_path / "pipeline.yaml"
    path.write_text(BASE + before)
    current = load_config([path])
    runtime = await build_runtime(
        current, clock=ManualClock(T0), state_path=tmp_path / "state.db", plugins=PLUGINS
    )
    async with runtime:
        await advance(runtime, 3600)  # kept at 09:30; dropped at 09:00 and 10:00
        path.write_text(BASE + after)
        await reload(runtime, current, load_config([path]))
        assert _ids(runtime) == ["default/added", "default/kept"]
        assert len(runtime.bus(SCHEDULER_BUS).list_rules()) == 2
        await advance(runtime, 3600)
    sink_times = [r.context.event["time"] for r in recorder(runtime).received]
    # dropped fired at 09:00 and 10:00, before the reload, not at 11:00;
    # kept went on from its mark: 10:30 once.
    assert sink_times == [
        "2026-01-05T09:00:00Z",
        "2026-01-05T09:30:00Z",
        "2026-01-05T10:00:00Z",
        "2026-01-05T10:30:00Z",
    ]
    assert [r.context.event["time"] for r in recorder(runtime, "dead").received] == [
        "2026-01-05T10:45:00Z"
    ]
