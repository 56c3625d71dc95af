"""CloudWatch over HTTP in its three protocols: boto3 against an ApiServer, the runtime in process.

Each test runs once per protocol CloudWatch's model lists: JSON 1.0 (what
botocore picks), the query protocol (forms and XML, older SDKs) and Smithy
RPC v2 CBOR, the last two through botocore's own serializers and parsers.
Recorded AWS answers (LocalStack's tests/aws/services/cloudwatch snapshots)
are the expected values where one exists; each such case names its source.
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

from .apiclient import aws_call, aws_refusal
from .recorder import Recorder, plugin_manager
from .test_api_cbor import protocol_client

PLUGINS = plugin_manager()
PROTOCOLS = ["json", "query", "smithy-rpc-v2-cbor"]
OPS_ARN = "arn:pipelines:recorder:us-east-1:123456789012:ops"
#: AWS's recorded wording for PutMetricData's combinations (test_put_metric_data_validation).
BOTH_VALUES = (
    "The parameters MetricData.member.1.Value and MetricData.member.1.Values are mutually"
    " exclusive and you have specified both."
)
SIZES = (
    "The parameters MetricData.member.1.Values and MetricData.member.1.Counts must be of the"
    " same size."
)
VALUE_AND_SET = (
    "The parameters MetricData.member.1.Value and MetricData.member.1.StatisticValues are"
    " mutually exclusive and you have specified both."
)


class Api:
    """A started runtime and endpoint, and a boto3 CloudWatch client in one protocol."""

    def __init__(self, runtime: Runtime, server: ApiServer, protocol: str) -> None:
        self.runtime = runtime
        self.protocol = protocol
        self.client = protocol_client(server.url, protocol)

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        return await aws_call(self.client, operation, **params)

    async def error(self, operation: str, **params: Any) -> tuple[dict[str, Any], int]:
        response = (await aws_refusal(self.client, operation, **params)).response
        return response["Error"], response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture(params=PROTOCOLS)
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    runtime = Runtime(state_path=tmp_path / "state.db", plugins=PLUGINS)
    runtime.add_resource("ops", "recorder", {})
    server = ApiServer(runtime, served_services(PLUGINS), "127.0.0.1", 0)
    await server.start()
    try:
        async with runtime:
            yield Api(runtime, server, request.param)
    finally:
        await server.close()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _window(now: dt.datetime) -> dict[str, Any]:
    return {
        "StartTime": now - dt.timedelta(seconds=60),
        "EndTime": now + dt.timedelta(seconds=60),
        "Period": 60,
    }


def _query_code(api: Api, error: dict[str, Any], shape: str) -> None:
    """JSON and CBOR answers carry the shape's name too (awsQueryCompatible)."""
    if api.protocol == "query":
        assert "QueryErrorCode" not in error
    else:
        assert error["QueryErrorCode"] == shape


async def test_statistics_of_values_and_counts_as_recorded(api: Api) -> None:
    # test_put_metric_data_values_list and test_get_metric_statistics.
    now = _now()
    await api.call(
        "put_metric_data",
        Namespace="ns",
        MetricData=[
            {
                "MetricName": "test-metric",
                "Timestamp": now,
                "Values": [1.0, 10.0],
                "Counts": [2, 4],
                "Unit": "Count",
            }
        ],
    )
    answer = await api.call(
        "get_metric_statistics",
        Namespace="ns",
        MetricName="test-metric",
        Statistics=["SampleCount", "Sum", "Maximum"],
        **_window(now),
    )
    (point,) = answer["Datapoints"]
    assert answer["Label"] == "test-metric"
    assert {k: v for k, v in point.items() if k != "Timestamp"} == {
        "Maximum": 10.0,
        "SampleCount": 6.0,
        "Sum": 42.0,
        "Unit": "Count",
    }
    assert isinstance(point["Timestamp"], dt.datetime)
    for i in range(10):
        await api.call(
            "put_metric_data",
            Namespace="test/a",
            MetricData=[
                {"MetricName": "metric", "Value": i, "Timestamp": now + dt.timedelta(seconds=1)}
            ],
        )
    answer = await api.call(
        "get_metric_statistics",
        Namespace="test/a",
        MetricName="metric",
        Statistics=["Average", "Sum", "Minimum", "Maximum", "SampleCount"],
        ExtendedStatistics=["p50", "p90"],
        **_window(now),
    )
    (point,) = answer["Datapoints"]
    assert {k: v for k, v in point.items() if k != "Timestamp"} == {
        "Average": 4.5,
        "Maximum": 9.0,
        "Minimum": 0.0,
        "SampleCount": 10.0,
        "Sum": 45.0,
        "Unit": "None",
        # Nearest rank (docs/alarms.md); AWS's recording has no percentiles.
        "ExtendedStatistics": {"p50": 4.0, "p90": 8.0},
    }


async def test_units_are_datapoints_of_their_own_as_recorded(api: Api) -> None:
    # test_handle_different_units.
    now = _now()
    data = [
        {"MetricName": "m-test", "Timestamp": now, "Value": 1, "Unit": "Seconds"},
        {"MetricName": "m-test", "Timestamp": now, "Value": 5, "Unit": "Count"},
        {"MetricName": "m-test", "Timestamp": now, "Value": 10},
    ]
    await api.call("put_metric_data", Namespace="n-sp", MetricData=data)
    answer = await api.call(
        "get_metric_statistics",
        Namespace="n-sp",
        MetricName="m-test",
        Statistics=["Average"],
        **_window(now),
    )
    points = sorted(answer["Datapoints"], key=lambda p: p["Average"], reverse=True)
    assert [(p["Average"], p["Unit"]) for p in points] == [
        (10.0, "None"),
        (5.0, "Count"),
        (1.0, "Seconds"),
    ]


async def test_put_metric_data_is_refused_as_recorded(api: Api) -> None:
    # test_put_metric_data_validation: code, message, status and (JSON, CBOR) query code.
    cases = [
        ({"Value": 1.0, "Values": [1.0]}, "InvalidParameterCombination", BOTH_VALUES),
        ({"Values": [1.0, 2.0], "Counts": [1.0]}, "InvalidParameterValue", SIZES),
        (
            {
                "Value": 1.0,
                "StatisticValues": {"SampleCount": 1, "Sum": 1, "Minimum": 1, "Maximum": 1},
            },
            "InvalidParameterCombination",
            VALUE_AND_SET,
        ),
    ]
    for datum, code, message in cases:
        error, status = await api.error(
            "put_metric_data", Namespace="ns", MetricData=[{"MetricName": "m", **datum}]
        )
        assert (error["Code"], error["Message"], status) == (code, message, 400)
        assert error["Type"] == "Sender"
        _query_code(api, error, f"{code}Exception")
    # A request is refused whole: the good datum before the bad one is not kept.
    error, _ = await api.error(
        "put_metric_data",
        Namespace="ns",
        MetricData=[
            {"MetricName": "m", "Value": 1.0},
            {"MetricName": "m", "Values": [1.0], "Counts": [1.0, 2.0]},
        ],
    )
    assert "MetricData.member.2" in error["Message"]
    assert (await api.call("list_metrics", Namespace="ns"))["Metrics"] == []
    error, _ = await api.error(
        "put_metric_data", Namespace="AWS/EC2", MetricData=[{"MetricName": "m", "Value": 1.0}]
    )
    assert error["Code"] == "InvalidParameterValue"


async def test_get_metric_statistics_limits_as_recorded(api: Api) -> None:
    # test_invalid_amount_of_datapoints.
    now = _now()
    error, status = await api.error(
        "get_metric_statistics",
        Namespace="ns",
        MetricName="metric_name",
        StartTime=now,
        EndTime=now + dt.timedelta(days=1),
        Period=1,
        Statistics=["SampleCount"],
    )
    assert (error["Code"], status) == ("InvalidParameterCombination", 400)
    assert error["Message"] == (
        "You have requested up to 86400 datapoints, which exceeds the limit of 1440. You may"
        " reduce the datapoints requested by increasing Period, or decreasing the time range."
    )
    error, _ = await api.error(
        "get_metric_statistics",
        Namespace="ns",
        MetricName="metric_name",
        StartTime=now,
        EndTime=now - dt.timedelta(days=1),
        Period=60,
        Statistics=["SampleCount"],
    )
    assert (error["Code"], error["Message"]) == (
        "InvalidParameterValue",
        "The parameter StartTime must be less than the parameter EndTime.",
    )
    empty = await api.call(
        "get_metric_statistics",
        Namespace="ns",
        MetricName="metric_name",
        Statistics=["SampleCount"],
        **_window(now),
    )
    assert empty == {"Label": "metric_name", "Datapoints": []}


@pytest.mark.parametrize(
    ("pairs", "labels"),
    [
        # test_label_generation: (stat, period, unit) per query; AWS's labels.
        (
            [("Sum", 60, "Seconds"), ("Minimum", 30, "Seconds")],
            ["metric1 Sum 60", "metric1 Minimum 30"],
        ),
        ([("Sum", 60, "Seconds"), ("Minimum", 60, "Seconds")], ["metric1 Sum", "metric1 Minimum"]),
        ([("Sum", 60, "Seconds"), ("Sum", 30, "Seconds")], ["metric1 60", "metric1 30"]),
        (
            [("Sum", 60, "Seconds"), ("Minimum", 30, "Milliseconds")],
            ["metric1 Sum 60", "metric1 Minimum 30"],
        ),
        (
            [("Sum", 60, "Seconds"), ("Minimum", 60, "Milliseconds")],
            ["metric1 Sum", "metric1 Minimum"],
        ),
        ([("Sum", 60, "Seconds"), ("Sum", 30, "Milliseconds")], ["metric1 60", "metric1 30"]),
        ([("Sum", 60, "Seconds"), ("Sum", 60, "Milliseconds")], ["metric1", "metric1"]),
    ],
)
async def test_get_metric_data_labels_and_values_as_recorded(
    api: Api, pairs: list[tuple[str, int, str]], labels: list[str]
) -> None:
    now = _now()
    await api.call(
        "put_metric_data",
        Namespace="test/l",
        MetricData=[
            {"MetricName": "metric1", "Value": v, "Unit": "Seconds", "Timestamp": now}
            for v in (0, 2, 7, 100)
        ],
    )
    answer = await api.call(
        "get_metric_data",
        MetricDataQueries=[
            {
                "Id": f"result_{stat}_{period}_{unit}",
                "MetricStat": {
                    "Metric": {"Namespace": "test/l", "MetricName": "metric1"},
                    "Period": period,
                    "Stat": stat,
                    "Unit": unit,
                },
            }
            for stat, period, unit in pairs
        ],
        StartTime=now - dt.timedelta(seconds=60),
        EndTime=now + dt.timedelta(seconds=60),
    )
    assert answer["Messages"] == []
    results = answer["MetricDataResults"]
    assert [r["Label"] for r in results] == labels
    assert [r["StatusCode"] for r in results] == ["Complete", "Complete"]
    expected = {"Sum": [109.0], "Minimum": [0.0]}
    for (stat, _, unit), result in zip(pairs, results, strict=True):
        assert result["Values"] == (expected[stat] if unit == "Seconds" else [])
        assert len(result["Timestamps"]) == len(result["Values"])


async def test_metrics_are_listed_with_dimension_filters(api: Api) -> None:
    # test_multiple_dimensions_statistics: dimensions listed sorted by name.
    dims = {"uri": "/greetings", "method": "GET", "status": "200", "error": "none"}
    await api.call(
        "put_metric_data",
        Namespace="ns",
        MetricData=[
            {
                "MetricName": "http.server.requests.count",
                "Value": 5,
                "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
            },
            {"MetricName": "other", "Value": 1},
        ],
    )
    listed = await api.call(
        "list_metrics", Namespace="ns", Dimensions=[{"Name": "method", "Value": "GET"}]
    )
    assert listed["Metrics"] == [
        {
            "Namespace": "ns",
            "MetricName": "http.server.requests.count",
            "Dimensions": [{"Name": k, "Value": dims[k]} for k in sorted(dims)],
        }
    ]
    assert len((await api.call("list_metrics", Namespace="ns"))["Metrics"]) == 2
    assert (await api.call("list_metrics", MetricName="other"))["Metrics"][0]["Dimensions"] == []


async def test_a_minimal_alarm_is_described_as_recorded(api: Api) -> None:
    # test_describe_minimal_metric_alarm (members compared; what was not given,
    # DatapointsToAlarm and TreatMissingData, is not shown).
    await api.call(
        "put_metric_alarm",
        AlarmName="minimal",
        MetricName="metric1",
        Namespace="ns",
        EvaluationPeriods=1,
        Period=10,
        Statistic="Sum",
        ComparisonOperator="GreaterThanThreshold",
        Threshold=30,
    )
    described = await api.call("describe_alarms", AlarmNames=["minimal"])
    assert described["CompositeAlarms"] == []
    (alarm,) = described["MetricAlarms"]
    times = {k: alarm.pop(k) for k in list(alarm) if k.endswith("Timestamp")}
    assert set(times) == {
        "AlarmConfigurationUpdatedTimestamp",
        "StateTransitionedTimestamp",
        "StateUpdatedTimestamp",
    }
    assert alarm == {
        "ActionsEnabled": True,
        "AlarmActions": [],
        "AlarmArn": "arn:aws:cloudwatch:us-east-1:000000000000:alarm:minimal",
        "AlarmName": "minimal",
        "ComparisonOperator": "GreaterThanThreshold",
        "Dimensions": [],
        "EvaluationPeriods": 1,
        "InsufficientDataActions": [],
        "MetricName": "metric1",
        "Namespace": "ns",
        "OKActions": [],
        "Period": 10,
        "StateReason": "Unchecked: Initial alarm creation",
        "StateValue": "INSUFFICIENT_DATA",
        "Statistic": "Sum",
        "Threshold": 30.0,
    }
    # Given, they are shown.
    await api.call(
        "put_metric_alarm",
        AlarmName="given",
        MetricName="metric1",
        Namespace="ns",
        EvaluationPeriods=3,
        DatapointsToAlarm=2,
        TreatMissingData="breaching",
        Period=10,
        Statistic="Sum",
        ComparisonOperator="GreaterThanThreshold",
        Threshold=30,
    )
    (given,) = (await api.call("describe_alarms", AlarmNames=["given"]))["MetricAlarms"]
    assert (given["DatapointsToAlarm"], given["TreatMissingData"]) == (2, "breaching")
    await api.call("delete_alarms", AlarmNames=["given"])
    # test_delete_alarm.
    await api.call("delete_alarms", AlarmNames=["minimal"])
    assert await api.call("describe_alarms") == {
        "MetricAlarms": [],
        "CompositeAlarms": [],
        "LogAlarms": [],
    }


async def test_alarms_states_composites_history_and_filters(api: Api) -> None:
    common = {
        "Namespace": "shop",
        "MetricName": "Errors",
        "Dimensions": [{"Name": "Api", "Value": "put"}],
        "EvaluationPeriods": 1,
        "Period": 60,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "Threshold": 1,
    }
    await api.call(
        "put_metric_alarm",
        AlarmName="errors-high",
        Statistic="Sum",
        AlarmActions=[OPS_ARN],
        AlarmDescription="errors",
        **common,
    )
    await api.call("put_metric_alarm", AlarmName="latency-p99", ExtendedStatistic="p99", **common)
    await api.call(
        "put_composite_alarm",
        AlarmName="shop-unhealthy",
        AlarmRule="ALARM(errors-high) OR ALARM(latency-p99)",
    )
    metric_alarms = (await api.call("describe_alarms"))["MetricAlarms"]
    assert [a["AlarmName"] for a in metric_alarms] == ["errors-high", "latency-p99"]
    # Shown as the project gives ARNs (its region and account, docs/api.md).
    assert metric_alarms[0]["AlarmActions"] == [api.runtime.resource_arn("ops")]
    assert metric_alarms[1]["ExtendedStatistic"] == "p99"
    both = await api.call("describe_alarms", AlarmTypes=["CompositeAlarm", "MetricAlarm"])
    (composite,) = both["CompositeAlarms"]
    assert composite["AlarmRule"] == "ALARM(errors-high) OR ALARM(latency-p99)"
    prefixed = await api.call("describe_alarms", AlarmNamePrefix="lat")
    assert [a["AlarmName"] for a in prefixed["MetricAlarms"]] == ["latency-p99"]
    children = await api.call(
        "describe_alarms", ChildrenOfAlarmName="shop-unhealthy", AlarmTypes=["MetricAlarm"]
    )
    assert len(children["MetricAlarms"]) == 2
    for_metric = await api.call(
        "describe_alarms_for_metric",
        Namespace="shop",
        MetricName="Errors",
        Dimensions=[{"Name": "Api", "Value": "put"}],
        Statistic="Sum",
    )
    assert [a["AlarmName"] for a in for_metric["MetricAlarms"]] == ["errors-high"]

    await api.call(
        "set_alarm_state", AlarmName="errors-high", StateValue="ALARM", StateReason="testing"
    )
    alarming = await api.call(
        "describe_alarms",
        StateValue="ALARM",
        AlarmTypes=["CompositeAlarm", "MetricAlarm"],
    )
    assert [a["AlarmName"] for a in alarming["MetricAlarms"]] == ["errors-high"]
    assert [a["AlarmName"] for a in alarming["CompositeAlarms"]] == ["shop-unhealthy"]
    assert [a["StateReason"] for a in alarming["MetricAlarms"]] == ["testing"]
    history = await api.call("describe_alarm_history", AlarmName="errors-high")
    (item,) = history["AlarmHistoryItems"]
    assert item["HistoryItemType"] == "StateUpdate"
    assert item["HistorySummary"] == "Alarm updated from INSUFFICIENT_DATA to ALARM"
    assert item["AlarmType"] == "MetricAlarm"
    assert isinstance(item["Timestamp"], dt.datetime)
    composites = await api.call("describe_alarm_history", AlarmTypes=["CompositeAlarm"])
    assert [i["AlarmName"] for i in composites["AlarmHistoryItems"]] == ["shop-unhealthy"]
    recorder = api.runtime.resource("ops")
    assert isinstance(recorder, Recorder)  # the action: the state-change event delivered

    async def delivered() -> None:
        while not recorder.received:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(delivered(), 10)
    assert recorder.received[0].payload["detail"]["state"]["value"] == "ALARM"

    await api.call("disable_alarm_actions", AlarmNames=["errors-high"])
    disabled = await api.call("describe_alarms", AlarmNames=["errors-high"])
    assert disabled["MetricAlarms"][0]["ActionsEnabled"] is False
    error, status = await api.error("delete_alarms", AlarmNames=["errors-high", "nope"])
    assert (error["Code"], status) == ("ResourceNotFound", 404)
    assert len((await api.call("describe_alarms"))["MetricAlarms"]) == 2  # none deleted


async def test_set_alarm_state_is_refused_as_recorded(api: Api) -> None:
    # test_set_alarm_invalid_input and test_exception_serializing_with_no_shape_in_spec.
    error, status = await api.error(
        "set_alarm_state", AlarmName="a", StateValue="INVALID", StateReason="test"
    )
    assert (error["Code"], status) == ("ValidationError", 400)
    _query_code(api, error, "ValidationException")
    # The enum in AWS's order (the model's is OK, ALARM, INSUFFICIENT_DATA).
    assert error["Message"] == (
        "1 validation error detected: Value 'INVALID' at 'stateValue' failed to satisfy"
        " constraint: Member must satisfy enum value set: [INSUFFICIENT_DATA, ALARM, OK]"
    )
    error, status = await api.error(
        "set_alarm_state", AlarmName="a", StateValue="OK", StateReason="test"
    )
    assert (error["Code"], error.get("Message", ""), status) == ("ResourceNotFound", "", 404)
    _query_code(api, error, "ResourceNotFound")
    error, status = await api.error(
        "get_metric_data",
        MetricDataQueries=[{"Id": "e", "Expression": "SUM(METRICS())"}],
        StartTime=_now(),
        EndTime=_now(),
    )
    assert (error["Code"], status) == ("NotImplemented", 501)
