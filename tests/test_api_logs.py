"""The logs API over HTTP: boto3 against an ApiServer, the runtime in process.

Cases marked "recorded" port LocalStack's AWS-validated tests
(tests/aws/services/logs/test_logs_*.py and their .snapshot.json): the values
compared are the ones recorded from AWS (see docs/conformance.md).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.api import ApiServer, served_services
from pipelines.runtime import Runtime
from plugins.logs.store import LogStore

from .apiclient import aws_call, aws_refusal, boto
from .helpers import eventually
from .recorder import Recorder, plugin_manager

PLUGINS = plugin_manager()
SEEN_ARN = "arn:pipelines:recorder:us-east-1:000000000000:seen"
DAY_MS = 86_400_000


class Logs:
    def __init__(self, runtime: Runtime, url: str) -> None:
        self.runtime = runtime
        self.client = boto("logs", url)

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        return await aws_call(self.client, operation, **params)

    async def error(self, operation: str, **params: Any) -> dict[str, str]:
        response = (await aws_refusal(self.client, operation, **params)).response
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
        error: dict[str, str] = response["Error"]
        return {"Code": error["Code"], "Message": error["Message"]}

    async def group(self, name: str = "g", stream: str | None = "s") -> None:
        await self.call("create_log_group", logGroupName=name)
        if stream is not None:
            await self.call("create_log_stream", logGroupName=name, logStreamName=stream)

    async def put(self, *messages: str, group: str = "g", stream: str = "s", at: int = 0) -> None:
        now = at or int(time.time() * 1000)
        events = [{"timestamp": now + i, "message": m} for i, m in enumerate(messages)]
        await self.call(
            "put_log_events", logGroupName=group, logStreamName=stream, logEvents=events
        )


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Logs]:
    runtime = Runtime(state_path=tmp_path / "state.db", plugins=PLUGINS)
    runtime.add_resource("seen", "recorder", {})
    runtime.add_resource("audit", "log_group", {"log_group": "/pipelines/audit"})
    server = ApiServer(runtime, served_services(PLUGINS), "127.0.0.1", 0)
    await server.start()
    try:
        async with runtime:
            yield Logs(runtime, server.url)
    finally:
        await server.close()


# -- recorded: groups and streams ------------------------------------------------


async def test_recorded_a_group_made_twice_is_resource_already_exists(api: Logs) -> None:
    await api.group(stream=None)
    assert await api.error("create_log_group", logGroupName="g") == {
        "Code": "ResourceAlreadyExistsException",
        "Message": "The specified log group already exists",
    }


async def test_recorded_describe_log_groups_by_prefix(api: Logs) -> None:
    for n in range(3):
        await api.group(f"pre-{n}", stream=None)
    await api.group("other", stream=None)
    groups = (await api.call("describe_log_groups", logGroupNamePrefix="pre-"))["logGroups"]
    assert [g["logGroupName"] for g in groups] == ["pre-0", "pre-1", "pre-2"]
    for group in groups:
        assert set(group) == {
            "arn",
            "creationTime",
            "deletionProtectionEnabled",
            "logGroupArn",
            "logGroupClass",
            "logGroupName",
            "metricFilterCount",
            "storedBytes",
        }
        name = group["logGroupName"]
        assert group["arn"] == f"arn:aws:logs:us-east-1:000000000000:log-group:{name}:*"
        assert group["logGroupArn"] == f"arn:aws:logs:us-east-1:000000000000:log-group:{name}"
        assert (group["logGroupClass"], group["deletionProtectionEnabled"]) == ("STANDARD", False)
        assert (group["metricFilterCount"], group["storedBytes"]) == (0, 0)


async def test_recorded_prefix_and_pattern_are_mutually_exclusive(api: Logs) -> None:
    assert await api.error(
        "describe_log_groups", logGroupNamePrefix="a", logGroupNamePattern="b"
    ) == {
        "Code": "InvalidParameterException",
        "Message": "LogGroup name prefix and LogGroup name pattern are mutually exclusive"
        " parameters.",
    }


async def test_recorded_log_streams_are_described_by_name_identifier_arn_and_prefix(
    api: Logs,
) -> None:
    await api.group()
    expected = [
        {
            "arn": "arn:aws:logs:us-east-1:000000000000:log-group:g:log-stream:s",
            "logStreamName": "s",
            "storedBytes": 0,
        }
    ]

    def shown(answer: dict[str, Any]) -> list[dict[str, Any]]:
        streams = answer["logStreams"]
        for stream in streams:
            assert isinstance(stream.pop("creationTime"), int)
        return list(streams)

    assert shown(await api.call("describe_log_streams", logGroupName="g")) == expected
    assert shown(await api.call("describe_log_streams", logGroupIdentifier="g")) == expected
    arn = "arn:aws:logs:us-east-1:000000000000:log-group:g"
    assert shown(await api.call("describe_log_streams", logGroupIdentifier=arn)) == expected
    assert await api.error("describe_log_streams", logGroupName="g", logGroupIdentifier=arn) == {
        "Code": "ValidationException",
        "Message": "LogGroup name and LogGroup ARN are mutually exclusive parameters.",
    }
    for n in range(3):
        await api.call("create_log_stream", logGroupName="g", logStreamName=f"p-{n}")
    prefixed = await api.call("describe_log_streams", logGroupName="g", logStreamNamePrefix="p-")
    assert [s["logStreamName"] for s in prefixed["logStreams"]] == ["p-0", "p-1", "p-2"]
    assert await api.error("create_log_stream", logGroupName="g", logStreamName="s") == {
        "Code": "ResourceAlreadyExistsException",
        "Message": "The specified log stream already exists",
    }


# -- recorded: events ------------------------------------------------------------------


async def test_recorded_put_log_events_refusals_and_rejections(api: Logs) -> None:
    await api.group()
    now = int(time.time() * 1000)
    assert await api.error(
        "put_log_events",
        logGroupName="g",
        logStreamName="invalid-stream",
        logEvents=[{"timestamp": now, "message": "test"}],
    ) == {
        "Code": "ResourceNotFoundException",
        "Message": "The specified log stream does not exist.",
    }
    assert await api.error(
        "put_log_events",
        logGroupName="g",
        logStreamName="s",
        logEvents=[
            {"message": "Message 0", "timestamp": now},
            {"message": "Message 1", "timestamp": now - 2 * DAY_MS},
        ],
    ) == {
        "Code": "InvalidParameterException",
        "Message": "Log events in a single PutLogEvents request must be in chronological order.",
    }
    old = await api.call(
        "put_log_events",
        logGroupName="g",
        logStreamName="s",
        logEvents=[{"message": "Old message", "timestamp": now - 30 * DAY_MS}],
    )
    assert set(old) == {"nextSequenceToken", "rejectedLogEventsInfo"}
    assert old["rejectedLogEventsInfo"] == {"tooOldLogEventEndIndex": 1}
    new = await api.call(
        "put_log_events",
        logGroupName="g",
        logStreamName="s",
        logEvents=[{"message": "Future message", "timestamp": now + DAY_MS}],
    )
    assert set(new) == {"nextSequenceToken", "rejectedLogEventsInfo"}
    assert new["rejectedLogEventsInfo"] == {"tooNewLogEventStartIndex": 0}


async def test_recorded_get_log_events_reads_and_refuses_as_aws_does(api: Logs) -> None:
    assert await api.error("get_log_events", logGroupName="nope", logStreamName="s") == {
        "Code": "ResourceNotFoundException",
        "Message": "The specified log group does not exist.",
    }
    await api.group(stream=None)
    assert await api.error("get_log_events", logGroupName="g", logStreamName="s") == {
        "Code": "ResourceNotFoundException",
        "Message": "The specified log stream does not exist.",
    }
    await api.call("create_log_stream", logGroupName="g", logStreamName="s")
    body = "🙀 - 参よ - 日本語"
    await api.put(body)
    events = (await api.call("get_log_events", logGroupName="g", logStreamName="s"))["events"]
    assert [e["message"] for e in events] == [body]
    await api.put(*(f"message {i}" for i in range(20)), at=int(time.time() * 1000) + 10)
    head = await api.call(
        "get_log_events", logGroupName="g", logStreamName="s", limit=10, startFromHead=True
    )
    assert [e["message"] for e in head["events"]] == [body] + [f"message {i}" for i in range(9)]
    arn = "arn:aws:logs:us-east-1:000000000000:log-group:g"
    by_arn = await api.call("get_log_events", logGroupIdentifier=arn, logStreamName="s")
    assert len(by_arn["events"]) == 21
    assert await api.error(
        "get_log_events", logGroupName="g", logStreamName="s", nextToken="invalid-token"
    ) == {"Code": "InvalidParameterException", "Message": "The specified nextToken is invalid."}
    assert await api.error("get_log_events", logGroupName="g", logStreamName="s", limit=10001) == {
        "Code": "InvalidParameterException",
        "Message": "1 validation error detected: Value '10001' at 'limit' failed to satisfy"
        " constraint: Member must have value less than or equal to 10000",
    }


async def test_recorded_filter_log_events_refusals(api: Logs) -> None:
    await api.group()
    assert await api.error("filter_log_events", logGroupName="g", limit=10001) == {
        "Code": "InvalidParameterException",
        "Message": "1 validation error detected: Value '10001' at 'limit' failed to satisfy"
        " constraint: Member must have value less than or equal to 10000",
    }
    assert await api.error("filter_log_events", logGroupName="g", nextToken="unknown") == {
        "Code": "InvalidParameterException",
        "Message": "The specified nextToken is invalid.",
    }


# -- recorded: metric and subscription filters --------------------------------------------


async def test_recorded_metric_filters_are_described_as_aws_describes_them(api: Logs) -> None:
    await api.group(stream=None)
    await api.call(
        "put_metric_filter",
        logGroupName="g",
        filterName="f",
        filterPattern=" ",
        metricTransformations=[
            {"metricName": "m", "metricNamespace": "ns", "metricValue": "1", "defaultValue": 0}
        ],
    )
    (found,) = (await api.call("describe_metric_filters", logGroupName="g"))["metricFilters"]
    assert isinstance(found.pop("creationTime"), int)
    assert found == {
        "applyOnTransformedLogs": False,
        "filterName": "f",
        "filterPattern": " ",
        "logGroupName": "g",
        "metricTransformations": [
            {"defaultValue": 0.0, "metricName": "m", "metricNamespace": "ns", "metricValue": "1"}
        ],
    }
    by_name = await api.call("describe_metric_filters", metricName="m", metricNamespace="ns")
    assert [f["filterName"] for f in by_name["metricFilters"]] == ["f"]
    assert (await api.call("describe_metric_filters", filterNamePrefix="x", logGroupName="g")) == {
        "metricFilters": []
    }
    long_name = "X" * 513
    refused = await api.error(
        "put_metric_filter",
        logGroupName="g",
        filterName=long_name,
        filterPattern="",
        metricTransformations=[{"metricName": "m", "metricNamespace": "ns", "metricValue": "1"}],
    )
    assert refused == {
        "Code": "InvalidParameterException",
        "Message": f"1 validation error detected: Value '{long_name}' at 'filterName' failed to"
        " satisfy constraint: Member must have length less than or equal to 512",
    }
    long_pattern = "X" * 1025
    refused = await api.error(
        "put_metric_filter",
        logGroupName="g",
        filterName="f",
        filterPattern=long_pattern,
        metricTransformations=[{"metricName": "m", "metricNamespace": "ns", "metricValue": "1"}],
    )
    assert refused == {
        "Code": "InvalidParameterException",
        "Message": f"1 validation error detected: Value '{long_pattern}' at 'filterPattern'"
        " failed to satisfy constraint: Member must have length less than or equal to 1024",
    }
    two = await api.error(
        "put_metric_filter",
        logGroupName="g",
        filterName="f",
        filterPattern="",
        metricTransformations=[
            {"metricName": f"m{n}", "metricNamespace": "ns", "metricValue": "1"} for n in (1, 2)
        ],
    )
    assert two["Code"] == "InvalidParameterException"
    assert two["Message"].startswith("1 validation error detected: Value ")
    assert two["Message"].endswith(
        "at 'metricTransformations' failed to satisfy constraint: Member must have length less"
        " than or equal to 1"
    )
    long_metric = "X" * 256
    refused = await api.error("describe_metric_filters", metricName=long_metric)
    assert refused == {
        "Code": "InvalidParameterException",
        "Message": f"1 validation error detected: Value '{long_metric}' at 'metricName' failed"
        " to satisfy constraint: Member must have length less than or equal to 255",
    }


async def test_recorded_subscription_filters_errors_and_shape(api: Logs) -> None:
    assert await api.error("describe_subscription_filters", logGroupName="nope") == {
        "Code": "ResourceNotFoundException",
        "Message": "The specified log group does not exist.",
    }
    await api.group(stream=None)
    assert await api.call("describe_subscription_filters", logGroupName="g") == {
        "subscriptionFilters": []
    }
    await api.call(
        "put_subscription_filter",
        logGroupName="g",
        filterName="test",
        filterPattern="",
        destinationArn=SEEN_ARN,
    )
    (found,) = (await api.call("describe_subscription_filters", logGroupName="g"))[
        "subscriptionFilters"
    ]
    assert isinstance(found.pop("creationTime"), int)
    assert found == {
        "applyOnTransformedLogs": False,
        "destinationArn": "arn:pipelines:recorder:us-east-1:000000000000:seen",
        "distribution": "ByLogStream",
        "filterName": "test",
        "filterPattern": "",
        "logGroupName": "g",
    }
    await api.call("put_subscription_filter", logGroupName="g", filterName="test-2",
                   filterPattern="[]", destinationArn=SEEN_ARN)  # fmt: skip
    assert await api.error(
        "put_subscription_filter",
        logGroupName="g",
        filterName="test-3",
        filterPattern="",
        destinationArn=SEEN_ARN,
    ) == {
        "Code": "LimitExceededException",
        "Message": "Resource limit exceeded.",
    }
    assert await api.error("delete_subscription_filter", logGroupName="nope", filterName="x") == {
        "Code": "ResourceNotFoundException",
        "Message": "The specified log group does not exist.",
    }
    assert await api.error("delete_subscription_filter", logGroupName="g", filterName="x") == {
        "Code": "ResourceNotFoundException",
        "Message": "The specified subscription filter does not exist.",
    }


async def test_recorded_start_query_of_an_unknown_group(api: Logs) -> None:
    refused = await api.error(
        "start_query", logGroupName="nope", startTime=0, endTime=1, queryString="fields @message"
    )
    assert refused["Code"] == "ResourceNotFoundException"
    assert refused["Message"].startswith(
        "Log group 'nope' does not exist for account ID '000000000000'"
    )


# -- the project's own -------------------------------------------------------------------


async def test_a_declared_group_is_listed_and_a_subscription_made_through_the_api_forwards(
    api: Logs,
) -> None:
    groups = (await api.call("describe_log_groups"))["logGroups"]
    assert [g["logGroupName"] for g in groups] == ["/pipelines/audit"]
    audit = "/pipelines/audit"
    await api.call("create_log_stream", logGroupName=audit, logStreamName="api")
    await api.call(
        "put_subscription_filter",
        logGroupName=audit,
        filterName="errors",
        filterPattern="ERROR",
        destinationArn=SEEN_ARN,
    )
    await api.put("ERROR one", "fine", "ERROR two", group=audit, stream="api")
    seen = api.runtime.resource("seen")
    assert isinstance(seen, Recorder)
    await eventually(lambda: sum(len(r.payload["logEvents"]) for r in seen.received) == 2)
    (payload,) = [r.payload for r in seen.received]
    assert payload["logGroup"] == audit
    assert payload["subscriptionFilters"] == ["errors"]
    assert [e["message"] for e in payload["logEvents"]] == ["ERROR one", "ERROR two"]
    await api.call("delete_subscription_filter", logGroupName=audit, filterName="errors")
    await api.put("ERROR three", group=audit, stream="api")
    await asyncio.sleep(0.2)
    assert len(seen.received) == 1
    # The library reads what the API wrote, on the same database.
    state = api.runtime.state_path
    assert state is not None
    async with await LogStore.open(state) as store:
        found = await store.filter_log_events(audit, "ERROR")
    assert [e["message"] for e in found["events"]] == ["ERROR one", "ERROR two", "ERROR three"]


async def test_groups_streams_retention_and_filtering(api: Logs) -> None:
    await api.group()
    await api.call("put_retention_policy", logGroupName="g", retentionInDays=7)
    (group,) = (await api.call("describe_log_groups", logGroupNamePattern="G"))["logGroups"]
    assert group["retentionInDays"] == 7
    bad = await api.error("put_retention_policy", logGroupName="g", retentionInDays=8)
    assert bad["Code"] == "InvalidParameterException"
    await api.call("delete_retention_policy", logGroupName="g")
    (group,) = (await api.call("describe_log_groups", logGroupNamePrefix="g"))["logGroups"]
    assert "retentionInDays" not in group
    await api.call("create_log_stream", logGroupName="g", logStreamName="t")
    now = int(time.time() * 1000)
    await api.put('{"level": "ERROR", "n": 1}', '{"level": "INFO", "n": 2}', at=now)
    await api.put('{"level": "ERROR", "n": 3}', stream="t", at=now + 5)
    found = await api.call(
        "filter_log_events", logGroupName="g", filterPattern='{ $.level = "ERROR" }'
    )
    assert [(e["logStreamName"], json.loads(e["message"])["n"]) for e in found["events"]] == [
        ("s", 1),
        ("t", 3),
    ]
    page = await api.call("filter_log_events", logGroupName="g", limit=1)
    rest = await api.call("filter_log_events", logGroupName="g", nextToken=page["nextToken"])
    assert len(page["events"]) + len(rest["events"]) == 3
    streams = await api.call("describe_log_streams", logGroupName="g", orderBy="LastEventTime",
                             descending=True)  # fmt: skip
    assert [s["logStreamName"] for s in streams["logStreams"]] == ["t", "s"]
    tail = await api.call("get_log_events", logGroupName="g", logStreamName="s", limit=1)
    assert [json.loads(e["message"])["n"] for e in tail["events"]] == [2]
    back = await api.call("get_log_events", logGroupName="g", logStreamName="s",
                          nextToken=tail["nextBackwardToken"])  # fmt: skip
    assert [json.loads(e["message"])["n"] for e in back["events"]] == [1]
    end = await api.call("get_log_events", logGroupName="g", logStreamName="s",
                         nextToken=tail["nextForwardToken"])  # fmt: skip
    assert end["events"] == [] and end["nextForwardToken"] == tail["nextForwardToken"]
    await api.call("delete_log_stream", logGroupName="g", logStreamName="t")
    await api.call("delete_log_group", logGroupName="g")
    assert await api.error("delete_log_group", logGroupName="g") == {
        "Code": "ResourceNotFoundException",
        "Message": "The specified log group does not exist.",
    }


async def test_queries_run_in_the_background_and_index_policies_round_trip(api: Logs) -> None:
    await api.group()
    now = int(time.time() * 1000)
    await api.put(*(json.dumps({"level": lvl, "ms": n}) for n, lvl in enumerate("ABAB")), at=now)
    started = await api.call(
        "start_query",
        logGroupName="g",
        startTime=now // 1000 - 60,
        endTime=now // 1000 + 60,
        queryString="stats count() as n, sum(ms) as total by level | sort level asc",
    )
    answer: dict[str, Any] = {}
    for _ in range(200):
        answer = await api.call("get_query_results", queryId=started["queryId"])
        if answer["status"] != "Running":
            break
        await asyncio.sleep(0.02)
    assert answer["status"] == "Complete"
    assert answer["results"] == [
        [{"field": "level", "value": "A"}, {"field": "n", "value": "2"},
         {"field": "total", "value": "2"}],
        [{"field": "level", "value": "B"}, {"field": "n", "value": "2"},
         {"field": "total", "value": "4"}],
    ]  # fmt: skip
    assert answer["statistics"]["recordsMatched"] == 4.0
    assert answer["statistics"]["recordsScanned"] == 4.0
    listed = await api.call("describe_queries", logGroupName="g")
    assert [(q["queryId"], q["status"]) for q in listed["queries"]] == [
        (started["queryId"], "Complete")
    ]
    ended = await api.error("stop_query", queryId=started["queryId"])
    assert (ended["Code"], ended["Message"]) == (
        "InvalidParameterException",
        f"Query {started['queryId']} is not running: it is Complete.",
    )
    bad = await api.error(
        "start_query", logGroupName="g", startTime=0, endTime=1, queryString="stats nope("
    )
    assert bad["Code"] == "MalformedQueryException"
    missing = await api.error("get_query_results", queryId="nope")
    assert missing["Code"] == "ResourceNotFoundException"
    arn = "arn:aws:logs:us-east-1:000000000000:log-group:g"
    put = await api.call("put_index_policy", logGroupIdentifier=arn,
                         policyDocument='{"Fields": ["level"]}')  # fmt: skip
    assert (
        put["indexPolicy"]["logGroupIdentifier"]
        == "arn:aws:logs:us-east-1:000000000000:log-group:g"
    )
    assert json.loads(put["indexPolicy"]["policyDocument"]) == {"Fields": ["level"]}
    described = await api.call("describe_index_policies", logGroupIdentifiers=["g"])
    assert [p["source"] for p in described["indexPolicies"]] == ["LOG_GROUP"]
    await api.call("delete_index_policy", logGroupIdentifier="g")
    assert (await api.call("describe_index_policies", logGroupIdentifiers=["g"])) == {
        "indexPolicies": []
    }
