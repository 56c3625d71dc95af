"""``pipelines schedules list|describe|next`` in real subprocesses, over a
state database a pipeline with schedules wrote."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pipelines.config import build_runtime, load_config

from .schedulerkit import cli_json, pipelines_cli, scheduler_plugins

PLUGINS = scheduler_plugins()

CONFIG = """
state: state.db
resources:
  reports: {type: recorder}
schedule_groups:
  nightly: {}
schedules:
  nightly/report:
    expression: "cron(0 2 * * ? *)"
    timezone: Europe/Paris
    flexible_window_minutes: 30
    target: {resource: reports, input: '{"kind": "daily"}'}
  hourly:
    expression: rate(1 hour)
    start_date: "2026-01-05T09:00:00Z"
    state: DISABLED
    target: {resource: reports}
"""


async def _written(tmp_path: Path) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(CONFIG)
    runtime = await build_runtime(load_config([path]), plugins=PLUGINS)
    async with runtime:
        pass
    return path


async def test_list_and_describe(tmp_path: Path) -> None:
    config = str(await _written(tmp_path))
    listed = cli_json("schedules", "list", "--config", config)
    assert [(s["GroupName"], s["Name"], s["State"]) for s in listed] == [
        ("default", "hourly", "DISABLED"),
        ("nightly", "report", "ENABLED"),
    ]
    assert listed[1]["Target"] == "arn:pipelines:recorder:us-east-1:000000000000:reports"
    only = cli_json("schedules", "list", "--config", config, "--only", "ENABLED")
    assert [s["Name"] for s in only] == ["report"]
    described = cli_json("schedules", "describe", "report", "-g", "nightly", "--config", config)
    assert described["ScheduleExpressionTimezone"] == "Europe/Paris"
    assert described["FlexibleTimeWindow"] == {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 30}
    assert described["Target"]["Input"] == '{"kind": "daily"}'
    table = pipelines_cli("schedules", "list", "--config", config).stdout
    assert "report" in table and "cron(0 2 * * ? *)" in table
    missing = pipelines_cli("schedules", "describe", "nope", "--config", config, ok=False)
    assert missing.returncode != 0
    assert "no schedule 'nope' in the group 'default'" in missing.stderr
    assert "Traceback" not in missing.stderr


async def test_next_honours_the_time_zone_and_the_flexible_window(tmp_path: Path) -> None:
    config = str(await _written(tmp_path))
    runs = cli_json(
        "schedules",
        "next",
        "report",
        "-g",
        "nightly",
        "-n",
        "3",
        "--after",
        "2026-03-27T00:00:00",
        "--config",
        config,
    )
    # 02:00 in Paris: CET (+01:00) until the 29th, CEST (+02:00) after; on
    # the 29th 02:00 does not exist (clocks go 02:00 -> 03:00): skipped.
    assert [r["Scheduled"] for r in runs] == [
        "2026-03-27T02:00:00+01:00",
        "2026-03-28T02:00:00+01:00",
        "2026-03-30T02:00:00+02:00",
    ]
    delays = [
        (datetime.fromisoformat(r["FiresAt"]) - datetime.fromisoformat(r["Scheduled"]))
        for r in runs
    ]
    assert all(0 <= delay.total_seconds() <= 1800 for delay in delays)
    again = cli_json(
        "schedules",
        "next",
        "report",
        "-g",
        "nightly",
        "-n",
        "3",
        "--after",
        "2026-03-27T00:00:00",
        "--config",
        config,
    )
    assert again == runs  # the same moments: what the scheduler will draw
    hourly = cli_json(
        "schedules",
        "next",
        "hourly",
        "--after",
        "2026-01-05T09:30:00",
        "-n",
        "2",
        "--config",
        config,
    )
    assert [r["Scheduled"] for r in hourly] == [
        "2026-01-05T10:00:00+00:00",
        "2026-01-05T11:00:00+00:00",
    ]
    assert {r["State"] for r in hourly} == {"DISABLED"}
