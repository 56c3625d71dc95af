"""EventBridge Scheduler's API over HTTP (REST-JSON): boto3 against an
ApiServer, the runtime in process. AWS's recorded answers (LocalStack's
tests/aws/services/scheduler snapshots) are the expected values where one
exists: GetSchedule's defaults, the invalid expression's message.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.api import ApiServer, served_services
from pipelines.runtime import Runtime
from plugins.scheduler.target import Schedules

from .apiclient import aws_call, aws_refusal, boto
from .recorder import Recorder
from .schedulerkit import scheduler_plugins

PLUGINS = scheduler_plugins()
QUEUE_ARN = "arn:aws:sqs:us-east-1:000000000000:"
ROLE = "arn:aws:iam::000000000000:role/scheduler"


class Api:
    def __init__(self, runtime: Runtime, url: str) -> None:
        self.runtime = runtime
        self.client = boto("scheduler", url, parameter_validation=False)

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        return await aws_call(self.client, operation, **params)

    async def error(self, operation: str, **params: Any) -> tuple[str, str, int]:
        response = (await aws_refusal(self.client, operation, **params)).response
        return (
            response["Error"]["Code"],
            response["Error"]["Message"],
            response["ResponseMetadata"]["HTTPStatusCode"],
        )

    def recorder(self, name: str) -> Recorder:
        found = self.runtime.resource(name)
        assert isinstance(found, Recorder)
        return found


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    runtime = Runtime(state_path=tmp_path / "state.db", plugins=PLUGINS)
    runtime.add_resource("sink", "recorder", {})
    runtime.add_resource("orders", "queue", {})
    server = ApiServer(runtime, served_services(PLUGINS), "127.0.0.1", 0)
    await server.start()
    try:
        async with runtime:
            yield Api(runtime, server.url)
    finally:
        await server.close()


def _target(**more: Any) -> dict[str, Any]:
    return {"Arn": QUEUE_ARN + "orders", "RoleArn": ROLE, **more}


async def test_create_get_update_delete(api: Api) -> None:
    made = await api.call(
        "create_schedule",
        Name="nightly",
        ScheduleExpression="cron(0 2 * * ? *)",
        FlexibleTimeWindow={"Mode": "OFF"},
        Target=_target(Input='{"key": "value"}'),
    )
    arn = "arn:aws:scheduler:us-east-1:000000000000:schedule/default/nightly"
    assert made == {"ScheduleArn": arn}
    got = await api.call("get_schedule", Name="nightly")
    assert isinstance(got.pop("CreationDate"), dt.datetime)
    assert isinstance(got.pop("LastModificationDate"), dt.datetime)
    # AWS's recorded GetSchedule: its defaults shown (UTC, NONE, the retry policy).
    assert got == {
        "ActionAfterCompletion": "NONE",
        "Arn": arn,
        "FlexibleTimeWindow": {"Mode": "OFF"},
        "GroupName": "default",
        "Name": "nightly",
        "ScheduleExpression": "cron(0 2 * * ? *)",
        "ScheduleExpressionTimezone": "UTC",
        "State": "ENABLED",
        "Target": {
            "Arn": QUEUE_ARN + "orders",
            "Input": '{"key": "value"}',
            "RetryPolicy": {"MaximumEventAgeInSeconds": 86400, "MaximumRetryAttempts": 185},
            "RoleArn": ROLE,
        },
    }
    await api.call(
        "update_schedule",
        Name="nightly",
        ScheduleExpression="rate(5 minutes)",
        State="DISABLED",
        FlexibleTimeWindow={"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 15},
        Target=_target(RetryPolicy={"MaximumRetryAttempts": 3}),
    )
    got = await api.call("get_schedule", Name="nightly")
    assert got["ScheduleExpression"] == "rate(5 minutes)"
    assert got["State"] == "DISABLED"
    assert got["FlexibleTimeWindow"] == {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 15}
    assert got["Target"]["RetryPolicy"] == {
        "MaximumEventAgeInSeconds": 86400,
        "MaximumRetryAttempts": 3,
    }
    await api.call("delete_schedule", Name="nightly")
    assert await api.error("get_schedule", Name="nightly") == (
        "ResourceNotFoundException",
        "Schedule nightly does not exist.",
        404,
    )


async def test_refusals_in_aws_words(api: Api) -> None:
    base: dict[str, Any] = {"Name": "s", "FlexibleTimeWindow": {"Mode": "OFF"}}
    # Recorded: tests_create_schedule_with_invalid_schedule_expression.
    for expression in ("rate(10 seconds)", "cron(0 1 * * * *)", " rate(10 minutes)"):
        assert await api.error(
            "create_schedule", **base, ScheduleExpression=expression, Target=_target()
        ) == ("ValidationException", f"Invalid Schedule Expression {expression}.", 400)
    code, message, status = await api.error(
        "create_schedule",
        **base,
        ScheduleExpression="rate(1 hour)",
        Target=_target(RetryPolicy={"MaximumRetryAttempts": 186, "MaximumEventAgeInSeconds": 59}),
    )
    assert (code, status) == ("ValidationException", 400)
    assert message == (
        "2 validation errors detected: Value '186' at 'target.retryPolicy.maximumRetryAttempts'"
        " failed to satisfy constraint: Member must have value less than or equal to 185;"
        " Value '59' at 'target.retryPolicy.maximumEventAgeInSeconds' failed to satisfy"
        " constraint: Member must have value greater than or equal to 60"
    )
    code, message, _ = await api.error(
        "create_schedule",
        Name="s",
        ScheduleExpression="rate(1 hour)",
        FlexibleTimeWindow={"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 1441},
        Target=_target(),
    )
    assert "Member must have value less than or equal to 1440" in message
    await api.call("create_schedule", **base, ScheduleExpression="rate(1 hour)", Target=_target())
    assert await api.error(
        "create_schedule", **base, ScheduleExpression="rate(1 hour)", Target=_target()
    ) == ("ConflictException", "Schedule s already exists.", 409)
    assert await api.error(
        "create_schedule",
        **base,
        GroupName="nope",
        ScheduleExpression="rate(1 hour)",
        Target=_target(),
    ) == ("ResourceNotFoundException", "Schedule group nope does not exist.", 404)


async def test_list_pages_and_filters(api: Api) -> None:
    await api.call("create_schedule_group", Name="reports", Tags=[{"Key": "team", "Value": "d"}])
    for index in range(5):
        await api.call(
            "create_schedule",
            Name=f"job-{index}",
            GroupName="reports" if index % 2 else "default",
            ScheduleExpression="rate(1 hour)",
            State="DISABLED" if index == 4 else "ENABLED",
            FlexibleTimeWindow={"Mode": "OFF"},
            Target=_target(),
        )
    first = await api.call("list_schedules", MaxResults=2)
    assert len(first["Schedules"]) == 2 and "NextToken" in first
    rest = await api.call("list_schedules", MaxResults=10, NextToken=first["NextToken"])
    names = [s["Name"] for s in first["Schedules"] + rest["Schedules"]]
    assert sorted(names) == [f"job-{i}" for i in range(5)]
    grouped = await api.call("list_schedules", GroupName="reports")
    assert sorted(s["Name"] for s in grouped["Schedules"]) == ["job-1", "job-3"]
    assert grouped["Schedules"][0]["Target"] == {"Arn": QUEUE_ARN + "orders"}
    disabled = await api.call("list_schedules", State="DISABLED", NamePrefix="job")
    assert [s["Name"] for s in disabled["Schedules"]] == ["job-4"]
    groups = await api.call("list_schedule_groups")
    assert [g["Name"] for g in groups["ScheduleGroups"]] == ["default", "reports"]
    tags = await api.call(
        "list_tags_for_resource",
        ResourceArn="arn:aws:scheduler:us-east-1:000000000000:schedule-group/reports",
    )
    assert tags == {"Tags": [{"Key": "team", "Value": "d"}]}
    # Deleting a group deletes its schedules.
    await api.call("delete_schedule_group", Name="reports")
    left = await api.call("list_schedules")
    assert sorted(s["Name"] for s in left["Schedules"]) == ["job-0", "job-2", "job-4"]
    assert (await api.error("get_schedule_group", Name="reports"))[2] == 404


async def test_a_one_time_schedule_fires_on_time_and_deletes_itself(api: Api) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    when = (now + dt.timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%S")
    await api.call(
        "create_schedule",
        Name="once",
        ScheduleExpression=f"at({when})",
        ActionAfterCompletion="DELETE",
        FlexibleTimeWindow={"Mode": "OFF"},
        Target={
            "Arn": "arn:pipelines:recorder:us-east-1:000000000000:sink",
            "RoleArn": ROLE,
            "Input": '{"ran": "<aws.scheduler.scheduled-time>"}',
        },
    )
    sink = api.recorder("sink")
    for _ in range(100):
        if sink.received and not (await api.call("list_schedules"))["Schedules"]:
            break
        await asyncio.sleep(0.1)
    assert [r.payload for r in sink.received] == [{"ran": f"{when}Z"}]
    assert (await api.call("list_schedules"))["Schedules"] == []
    holder = api.runtime.resource("scheduler")
    assert isinstance(holder, Schedules) and holder.schedules == {}
