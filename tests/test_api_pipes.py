"""The pipes API over boto3 against the real endpoint (REST-JSON), and its
pipes running: made, described, listed, stopped, started, updated, tagged,
deleted, and made again after a restart."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.api import ApiServer, served_services
from pipelines.runtime import Runtime
from plugins.pipes.pipe import PipeTarget

from . import pipes_functions as functions
from .apiclient import aws_call, aws_refusal, boto
from .test_pipes import manager, send, until

QUEUE_ARN = "arn:aws:sqs:us-east-1:000000000000:orders"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:000000000000:function:collect"
STREAM_ARN = "arn:aws:kinesis:us-east-1:000000000000:stream/clicks"
ROLE = "arn:aws:iam::000000000000:role/pipes"


class Endpoint:
    def __init__(self, runtime: Runtime, server: ApiServer) -> None:
        self.runtime = runtime
        self.client = boto("pipes", server.url)

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        return await aws_call(self.client, operation, **params)

    async def error(self, operation: str, **params: Any) -> dict[str, Any]:
        refused = await aws_refusal(self.client, operation, **params)
        return {
            "Code": refused.response["Error"]["Code"],
            "Message": refused.response["Error"]["Message"],
            "Status": refused.response["ResponseMetadata"]["HTTPStatusCode"],
        }


@pytest.fixture(autouse=True)
def _reset() -> None:
    functions.reset()


@pytest.fixture
async def endpoint(tmp_path: Path) -> AsyncIterator[Endpoint]:
    async with served(tmp_path / "state.db") as found:
        yield found


class served:
    """A runtime with a queue, a stream, a function and a dead-letter queue, served."""

    def __init__(self, state: Path) -> None:
        self.state = state

    async def __aenter__(self) -> Endpoint:
        plugins = manager()
        runtime = self.runtime = Runtime(state_path=self.state, plugins=plugins)
        runtime.add_resource("orders", "queue", {"visibility_timeout": 2})
        runtime.add_resource("clicks", "stream", {})
        runtime.add_resource("dlq", "queue", {})
        runtime.add_resource("collect", "function", {"function": "tests.pipes_functions:collect"})
        self.server = ApiServer(runtime, served_services(plugins), "127.0.0.1", 0)
        await self.server.start()
        await runtime.start()
        return Endpoint(runtime, self.server)

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.runtime.stop()
        finally:
            await self.server.close()


def collected() -> list[Any]:
    return [json.loads(r["body"]) for batch in functions.batches.get("collect", []) for r in batch]


async def test_a_pipe_made_through_the_api_runs_and_is_described_as_aws_does(
    endpoint: Endpoint,
) -> None:
    made = await endpoint.call(
        "create_pipe",
        Name="orders-in",
        Description="big orders",
        RoleArn=ROLE,
        Source=QUEUE_ARN,
        SourceParameters={
            "SqsQueueParameters": {"BatchSize": 5},
            "FilterCriteria": {
                "Filters": [{"Pattern": '{"body": {"total": [{"numeric": [">", 100]}]}}'}]
            },
        },
        Target=FUNCTION_ARN,
        Tags={"team": "shop"},
    )
    assert made["Name"] == "orders-in"
    assert made["Arn"] == "arn:aws:pipes:us-east-1:000000000000:pipe/orders-in"
    assert (made["DesiredState"], made["CurrentState"]) == ("RUNNING", "CREATING")
    assert made["CreationTime"] == made["LastModifiedTime"]
    await send(endpoint.runtime, "orders", [{"total": 150}, {"total": 50}, {"total": 101}])
    await until(lambda: asyncio.sleep(0, len(collected()) == 2))
    assert sorted(order["total"] for order in collected()) == [101, 150]

    described = await endpoint.call("describe_pipe", Name="orders-in")
    assert described["CurrentState"] == "RUNNING"
    assert described["Source"] == QUEUE_ARN
    assert described["Target"] == FUNCTION_ARN
    assert described["RoleArn"] == ROLE
    assert described["Description"] == "big orders"
    assert described["Tags"] == {"team": "shop"}
    assert described["SourceParameters"] == {
        "SqsQueueParameters": {"BatchSize": 5, "MaximumBatchingWindowInSeconds": 0},
        "FilterCriteria": {
            "Filters": [{"Pattern": '{"body": {"total": [{"numeric": [">", 100]}]}}'}]
        },
    }
    [listed] = (await endpoint.call("list_pipes"))["Pipes"]
    assert listed["Name"] == "orders-in" and listed["Source"] == QUEUE_ARN
    assert (await endpoint.call("list_pipes", NamePrefix="x"))["Pipes"] == []
    assert (await endpoint.call("list_pipes", CurrentState="STOPPED"))["Pipes"] == []

    stopped = await endpoint.call("stop_pipe", Name="orders-in")
    # AWS answers the transition under way; DescribePipe shows where it ended.
    assert (stopped["DesiredState"], stopped["CurrentState"]) == ("STOPPED", "STOPPING")
    described = await endpoint.call("describe_pipe", Name="orders-in")
    assert described["CurrentState"] == "STOPPED"
    await send(endpoint.runtime, "orders", [{"total": 500}])
    await asyncio.sleep(0.3)
    assert len(collected()) == 2  # a stopped pipe reads nothing
    started = await endpoint.call("start_pipe", Name="orders-in")
    assert (started["DesiredState"], started["CurrentState"]) == ("RUNNING", "STARTING")
    await until(lambda: asyncio.sleep(0, len(collected()) == 3))

    await endpoint.call("tag_resource", resourceArn=made["Arn"], tags={"env": "dev"})
    await endpoint.call("untag_resource", resourceArn=made["Arn"], tagKeys=["team"])
    tags = await endpoint.call("list_tags_for_resource", resourceArn=made["Arn"])
    assert tags["tags"] == {"env": "dev"}

    updated = await endpoint.call(
        "update_pipe",
        Name="orders-in",
        RoleArn=ROLE,
        SourceParameters={"FilterCriteria": {"Filters": []}},
        TargetParameters={"InputTemplate": '{"total": <$.body.total>}'},
    )
    assert updated["CurrentState"] == "UPDATING"
    described = await endpoint.call("describe_pipe", Name="orders-in")
    assert "FilterCriteria" not in described["SourceParameters"]
    assert described["TargetParameters"] == {"InputTemplate": '{"total": <$.body.total>}'}
    await send(endpoint.runtime, "orders", [{"total": 7}])
    await until(lambda: asyncio.sleep(0, {"total": 7} in functions.batches["collect"][-1]))

    deleted = await endpoint.call("delete_pipe", Name="orders-in")
    assert deleted["CurrentState"] == "DELETING"
    assert "orders-in" not in endpoint.runtime.resource_names()
    assert await endpoint.error("describe_pipe", Name="orders-in") == {
        "Code": "NotFoundException",
        "Message": "Pipe orders-in does not exist.",
        "Status": 404,
    }


async def test_refusals(endpoint: Endpoint) -> None:
    base = {"RoleArn": ROLE, "Source": QUEUE_ARN, "Target": FUNCTION_ARN}
    await endpoint.call("create_pipe", Name="p", **base)
    conflict = await endpoint.error("create_pipe", Name="p", **base)
    assert (conflict["Code"], conflict["Status"]) == ("ConflictException", 409)
    too_big = await endpoint.error(
        "create_pipe",
        Name="q",
        **base,
        SourceParameters={"SqsQueueParameters": {"BatchSize": 20_000}},
    )
    assert too_big["Code"] == "ValidationException"
    six = [{"Pattern": json.dumps({"body": {"n": [n]}})} for n in range(6)]
    refused = await endpoint.error(
        "create_pipe", Name="q", **base, SourceParameters={"FilterCriteria": {"Filters": six}}
    )
    assert refused["Code"] == "ValidationException"
    absent = await endpoint.error(
        "create_pipe", Name="q", **{**base, "Target": "arn:aws:sqs:us-east-1:000000000000:nope"}
    )
    assert absent == {
        "Code": "ValidationException",
        "Message": "Target arn:aws:sqs:us-east-1:000000000000:nope does not exist.",
        "Status": 400,
    }
    wide = await endpoint.error(
        "create_pipe",
        Name="q",
        **base,
        SourceParameters={
            "SqsQueueParameters": {"BatchSize": 100, "MaximumBatchingWindowInSeconds": 0}
        },
    )
    assert wide["Code"] == "ValidationException", wide
    to_queue = await endpoint.error(
        "create_pipe",
        Name="q",
        RoleArn=ROLE,
        Source=STREAM_ARN,
        SourceParameters={
            "KinesisStreamParameters": {"StartingPosition": "LATEST", "BatchSize": 100}
        },
        Target="arn:aws:sqs:us-east-1:000000000000:dlq",
    )
    assert to_queue == {
        "Code": "ValidationException",
        "Message": "source_parameters.batch_size: is 100; the target"
        " arn:aws:sqs:us-east-1:000000000000:dlq takes batches of at most 10",
        "Status": 400,
    }
    assert "q" not in endpoint.runtime.resource_names()
    missing = await endpoint.error("stop_pipe", Name="nope")
    assert missing["Code"] == "NotFoundException"


async def test_a_stream_pipe_and_an_api_pipe_that_outlives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    async with served(state) as endpoint:
        await endpoint.call(
            "create_pipe",
            Name="clicks-in",
            RoleArn=ROLE,
            DesiredState="STOPPED",
            Source=STREAM_ARN,
            SourceParameters={
                "KinesisStreamParameters": {
                    "StartingPosition": "TRIM_HORIZON",
                    "BatchSize": 50,
                    "ParallelizationFactor": 2,
                    "MaximumRetryAttempts": 3,
                    "DeadLetterConfig": {"Arn": "arn:aws:sqs:us-east-1:000000000000:dlq"},
                }
            },
            Target=FUNCTION_ARN,
        )
        described = await endpoint.call("describe_pipe", Name="clicks-in")
        assert described["CurrentState"] == "STOPPED"
        assert described["SourceParameters"]["KinesisStreamParameters"] == {
            "StartingPosition": "TRIM_HORIZON",
            "BatchSize": 50,
            "ParallelizationFactor": 2,
            "MaximumRetryAttempts": 3,
            "DeadLetterConfig": {"Arn": "arn:aws:sqs:us-east-1:000000000000:dlq"},
        }
    async with served(state) as endpoint:
        # The runtime's start made the API's pipes of the last run again.
        pipe = endpoint.runtime.resource("clicks-in")
        assert isinstance(pipe, PipeTarget) and pipe.origin == "api"
        [listed] = (await endpoint.call("list_pipes"))["Pipes"]
        assert (listed["Name"], listed["DesiredState"]) == ("clicks-in", "STOPPED")
        pipe = endpoint.runtime.resource("clicks-in")
        assert isinstance(pipe, PipeTarget) and pipe.current_state == "STOPPED"
        await endpoint.call("start_pipe", Name="clicks-in")
        assert pipe.current_state == "RUNNING"


async def test_a_webhook_is_a_source_answered_once_the_pipe_is_done(tmp_path: Path) -> None:
    plugins = manager()
    runtime = Runtime(state_path=tmp_path / "state.db", plugins=plugins)
    runtime.add_resource("hook", "webhook", {"path": "/hooks/orders", "source": "shop"})
    runtime.add_resource(
        "taker", "function", {"function": "tests.pipes_functions:refuse_when_asked"}
    )
    runtime.add_resource(
        "hooked",
        "pipe",
        {"source": "hook", "filters": [{"detail": {"kind": ["order"]}}], "target": "taker"},
    )
    server = ApiServer(runtime, served_services(plugins), "127.0.0.1", 0)
    await server.start()
    try:
        async with runtime:

            def post(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
                request = urllib.request.Request(
                    f"{server.url}/hooks/orders",
                    data=json.dumps(body).encode(),
                    headers={"Content-Type": "application/json"},
                )
                try:
                    with urllib.request.urlopen(request, timeout=10) as answer:
                        return answer.status, json.loads(answer.read())
                except urllib.error.HTTPError as error:
                    return error.code, json.loads(error.read())

            status, answer = await asyncio.to_thread(post, {"kind": "order", "n": 1})
            assert status == 200 and answer["EventId"]
            filtered = await asyncio.to_thread(post, {"kind": "other"})  # done: filtered out
            assert filtered[0] == 200 and filtered[1]["EventId"] != answer["EventId"]
            status, refused = await asyncio.to_thread(post, {"kind": "order", "refuse": True})
            assert status == 500 and "did not take it" in refused["message"]
    finally:
        await server.close()
    [[event], [_]] = functions.batches["refuse_when_asked"]
    assert event["source"] == "shop" and event["detail"] == {"kind": "order", "n": 1}
    assert event["id"] == answer["EventId"]
