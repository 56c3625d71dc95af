"""The cloudwatch service (CloudWatch's metrics and alarms) over the metric store and alarms.

The engine serves it itself: the metric store (``runtime.metrics``) and the
alarms (``runtime.alarms``) are the engine's. Each operation is a thin
translation between AWS's names and the library's (``put_metric_batch``,
``get_metric_statistics``, ``put_metric_alarm``...), so an alarm put through
the API is the same object a YAML config declares. The endpoint serves it in
the three protocols CloudWatch's model lists (JSON 1.0, query, Smithy RPC v2
CBOR); nothing here depends on which one a request came in.

Alarm actions name resources by ARN, as rule targets do (``arn:aws:sns:...:ops``
is the resource ``ops``); the library's actions are rules delivering the
alarm's state-change events to them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pipelines.alarms import (
    ALARM,
    INSUFFICIENT_DATA,
    OK,
    CompositeAlarmSpec,
    MetricAlarmSpec,
)
from pipelines.api.errors import ApiError
from pipelines.api.services import Call, Service, page, resource_of
from pipelines.api.wire import epoch_seconds
from pipelines.event import format_epoch
from pipelines.metrics import STATISTICS, parse_statistic, series_key

cloudwatch = Service("cloudwatch")

#: GetMetricData's limit on datapoints per call (GetMetricStatistics': 1,440).
MAX_METRIC_DATA_POINTS = 100_800
#: ListMetrics answers 500 metrics per page, DescribeAlarms 50 alarms by default.
LIST_PAGE = 500
ALARM_PAGE = 50
#: AWS's names of the alarm actions, by the library's state.
ACTION_MEMBERS = {
    ALARM: "AlarmActions",
    OK: "OKActions",
    INSUFFICIENT_DATA: "InsufficientDataActions",
}
_ACTION_STATES = {
    "AlarmActions": "alarm",
    "OKActions": "ok",
    "InsufficientDataActions": "insufficient_data",
}


def _unsupported(what: str) -> ApiError:
    return ApiError(
        "NotImplemented",
        f"{what} is not implemented by pipelines (see docs/api.md)",
        501,
        sender_fault=False,
    )


def _dimensions(given: Iterable[Mapping[str, str]] | None) -> dict[str, str]:
    return {d["Name"]: d["Value"] for d in given or ()}


def _page(items: Sequence[Any], token: str | None, size: int) -> tuple[list[Any], str | None]:
    """One page of ``items`` from ``token`` and the next token."""
    invalid = ApiError("InvalidNextToken", "The service couldn't process the token.")
    return page(items, token, size, invalid)


# -- metrics -------------------------------------------------------------------


@cloudwatch.operation()
async def put_metric_data(call: Call, params: dict[str, Any]) -> None:
    data = list(params.get("MetricData", []))
    for entity in params.get("EntityMetricData", []):
        data += entity.get("MetricData", [])  # the entity itself is not kept
    if not data:
        raise ApiError("MissingParameter", "The parameter MetricData is required.")
    call.runtime.metrics.put_metric_batch(params["Namespace"], [_datum(d) for d in data])


def _datum(given: Mapping[str, Any]) -> dict[str, Any]:
    """A MetricDatum as ``put_metric_data``'s keywords."""
    datum: dict[str, Any] = {
        "name": given["MetricName"],
        "dimensions": _dimensions(given.get("Dimensions")),
        "unit": given.get("Unit", "None"),
        "storage_resolution": given.get("StorageResolution", 60),
    }
    for member, keyword in (
        ("Value", "value"),
        ("Values", "values"),
        ("Counts", "counts"),
        ("StatisticValues", "statistic_values"),
        ("Timestamp", "timestamp"),
    ):
        if member in given:
            datum[keyword] = given[member]
    return datum


@cloudwatch.operation()
async def get_metric_statistics(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    return await call.runtime.metrics.get_metric_statistics(
        params["Namespace"],
        params["MetricName"],
        _dimensions(params.get("Dimensions")),
        start=params["StartTime"],
        end=params["EndTime"],
        period=params["Period"],
        statistics=params.get("Statistics", ()),
        extended_statistics=params.get("ExtendedStatistics", ()),
        unit=params.get("Unit"),
    )


@cloudwatch.operation()
async def get_metric_data(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    queries = params["MetricDataQueries"]
    for query in queries:
        if "MetricStat" not in query:
            raise _unsupported("GetMetricData's Expression (metric math)")
    stats = {q["MetricStat"]["Stat"] for q in queries}
    periods = {q["MetricStat"]["Period"] for q in queries}
    descending = params.get("ScanBy", "TimestampDescending") == "TimestampDescending"
    results = []
    for query in queries:
        stat = query["MetricStat"]
        metric = stat["Metric"]
        name = parse_statistic(stat["Stat"])
        simple = name in STATISTICS
        answer = await call.runtime.metrics.get_metric_statistics(
            metric["Namespace"],
            metric["MetricName"],
            _dimensions(metric.get("Dimensions")),
            start=params["StartTime"],
            end=params["EndTime"],
            period=stat["Period"],
            statistics=[name] if simple else [],
            extended_statistics=[] if simple else [name],
            unit=stat.get("Unit"),
            max_datapoints=MAX_METRIC_DATA_POINTS,
        )
        points = [
            (point["Timestamp"], point[name] if simple else point["ExtendedStatistics"].get(name))
            for point in answer["Datapoints"]
        ]
        points = [(moment, value) for moment, value in points if value is not None]
        if descending:
            points.reverse()
        if query.get("ReturnData", True) is False:
            continue
        # CloudWatch's label: the metric's name, with the statistic and the
        # period when the queries of the call differ in them.
        label = metric["MetricName"]
        if len(stats) > 1:
            label += f" {stat['Stat']}"
        if len(periods) > 1:
            label += f" {stat['Period']}"
        results.append(
            {
                "Id": query["Id"],
                "Label": query.get("Label", label),
                "Timestamps": [moment for moment, _ in points],
                "Values": [value for _, value in points],
                "StatusCode": "Complete",
            }
        )
    return {"MetricDataResults": results, "Messages": []}


@cloudwatch.operation()
async def list_metrics(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    found = await call.runtime.metrics.list_metrics(
        params.get("Namespace"), params.get("MetricName")
    )
    filters = params.get("Dimensions", [])

    def matches(metric: Mapping[str, Any]) -> bool:
        dims = _dimensions(metric["Dimensions"])
        return all(
            f["Name"] in dims and ("Value" not in f or dims[f["Name"]] == f["Value"])
            for f in filters
        )

    page, token = _page([m for m in found if matches(m)], params.get("NextToken"), LIST_PAGE)
    answer: dict[str, Any] = {"Metrics": page}
    if token:
        answer["NextToken"] = token
    return answer


# -- alarms --------------------------------------------------------------------


def _action_settings(call: Call, params: Mapping[str, Any]) -> dict[str, list[str]]:
    """AlarmActions, OKActions and InsufficientDataActions as the library's
    ``actions``: resource names by state."""
    actions: dict[str, list[str]] = {}
    for member, state in _ACTION_STATES.items():
        for arn in params.get(member, []):
            resource = resource_of(call, arn)
            if resource is None:
                raise ApiError(
                    "ValidationException", f"No resource of this pipeline has the ARN {arn}."
                )
            actions.setdefault(state, []).append(resource)
    return actions


def _common_settings(call: Call, params: Mapping[str, Any]) -> dict[str, Any]:
    settings: dict[str, Any] = {"actions": _action_settings(call, params)}
    if "AlarmDescription" in params:
        settings["description"] = params["AlarmDescription"]
    if "ActionsEnabled" in params:
        settings["actions_enabled"] = params["ActionsEnabled"]
    return settings


@cloudwatch.operation()
async def put_metric_alarm(call: Call, params: dict[str, Any]) -> None:
    if "Metrics" in params or "ThresholdMetricId" in params:
        raise _unsupported("PutMetricAlarm's Metrics (metric math and anomaly detection alarms)")
    given = [params[s] for s in ("Statistic", "ExtendedStatistic") if s in params]
    if len(given) != 1:
        raise ApiError(
            "ValidationException", "Exactly one of Statistic or ExtendedStatistic must be given."
        )
    settings = _common_settings(call, params)
    for member, key in (
        ("Namespace", "namespace"),
        ("MetricName", "metric_name"),
        ("Period", "period"),
        ("EvaluationPeriods", "evaluation_periods"),
        ("DatapointsToAlarm", "datapoints_to_alarm"),
        ("Threshold", "threshold"),
        ("ComparisonOperator", "comparison_operator"),
        ("TreatMissingData", "treat_missing_data"),
    ):
        if member in params:
            settings[key] = params[member]
    settings["dimensions"] = _dimensions(params.get("Dimensions"))
    settings["statistic"] = given[0]
    await call.runtime.alarms.put_metric_alarm(params["AlarmName"], settings)


@cloudwatch.operation()
async def put_composite_alarm(call: Call, params: dict[str, Any]) -> None:
    if "ActionsSuppressor" in params:
        raise _unsupported("PutCompositeAlarm's ActionsSuppressor")
    await call.runtime.alarms.put_composite_alarm(
        params["AlarmName"], params["AlarmRule"], _common_settings(call, params)
    )


def _described(call: Call, name: str) -> dict[str, Any]:
    """DescribeAlarms' members for one alarm: the library's description with
    actions as ARNs and the times CloudWatch gives."""
    alarms = call.runtime.alarms
    shown = alarms.describe(name)
    for member in ACTION_MEMBERS.values():
        shown[member] = [call.runtime.resource_arn(r) for r in shown.get(member, [])]
    if not shown.get("AlarmDescription"):
        shown.pop("AlarmDescription", None)  # AWS shows none when none was given
    shown["AlarmConfigurationUpdatedTimestamp"] = format_epoch(
        alarms.configured(name), "milliseconds"
    )
    # The library's state time is that of its last transition.
    shown["StateTransitionedTimestamp"] = shown["StateUpdatedTimestamp"]
    return shown


def _kind(call: Call, name: str) -> str:
    spec = call.runtime.alarms.spec(name)
    return "CompositeAlarm" if isinstance(spec, CompositeAlarmSpec) else "MetricAlarm"


@cloudwatch.operation()
async def describe_alarms(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    alarms = call.runtime.alarms
    existing = set(alarms.names())
    names = sorted(existing)
    if "AlarmNames" in params:
        names = [n for n in params["AlarmNames"] if n in existing]
    elif "AlarmNamePrefix" in params:
        names = [n for n in names if n.startswith(params["AlarmNamePrefix"])]
    if "ChildrenOfAlarmName" in params:
        parent = params["ChildrenOfAlarmName"]
        children = alarms.children(parent) if parent in existing else set()
        names = [n for n in names if n in children]
    if "ParentsOfAlarmName" in params:
        child = params["ParentsOfAlarmName"]
        names = [n for n in names if child in alarms.children(n)]
    types = params.get("AlarmTypes") or ["MetricAlarm"]  # AWS's default: metric alarms
    names = [n for n in names if _kind(call, n) in types]
    described = [_described(call, n) for n in names]
    if "StateValue" in params:
        described = [d for d in described if d["StateValue"] == params["StateValue"]]
    if "ActionPrefix" in params:
        prefix = params["ActionPrefix"]
        described = [
            d
            for d in described
            if any(a.startswith(prefix) for m in ACTION_MEMBERS.values() for a in d[m])
        ]
    page, token = _page(described, params.get("NextToken"), params.get("MaxRecords", ALARM_PAGE))
    answer: dict[str, Any] = {
        "MetricAlarms": [d for d in page if "AlarmRule" not in d],
        "CompositeAlarms": [d for d in page if "AlarmRule" in d],
        "LogAlarms": [],
    }
    if token:
        answer["NextToken"] = token
    return answer


@cloudwatch.operation()
async def describe_alarms_for_metric(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    alarms = call.runtime.alarms
    key = series_key(
        params["Namespace"], params["MetricName"], _dimensions(params.get("Dimensions"))
    )
    statistic = params.get("Statistic") or params.get("ExtendedStatistic")
    found = []
    for name in sorted(alarms.names()):
        spec = alarms.spec(name)
        if not isinstance(spec, MetricAlarmSpec) or spec.key != key:
            continue
        if statistic is not None and spec.statistic != statistic:
            continue
        if "Period" in params and spec.period != params["Period"]:
            continue
        found.append(_described(call, name))
    return {"MetricAlarms": found}


@cloudwatch.operation()
async def describe_alarm_history(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    alarms = call.runtime.alarms
    kinds = {name: _kind(call, name) for name in alarms.names()}
    items = await alarms.describe_alarm_history(params.get("AlarmName"), limit=10_000)
    wanted_type = params.get("HistoryItemType")
    types = params.get("AlarmTypes")
    start, end = params.get("StartDate"), params.get("EndDate")
    kept = []
    for item in items:
        kind = kinds.get(item["AlarmName"])
        if kind is not None:
            item = {**item, "AlarmType": kind}
        if wanted_type is not None and item["HistoryItemType"] != wanted_type:
            continue
        if types is not None and kind not in types:
            continue
        moment = _seconds(item["Timestamp"])
        if (start is not None and moment < start) or (end is not None and moment > end):
            continue
        kept.append(item)
    if params.get("ScanBy") == "TimestampAscending":
        kept.reverse()
    page, token = _page(kept, params.get("NextToken"), params.get("MaxRecords", 100))
    answer: dict[str, Any] = {"AlarmHistoryItems": page}
    if token:
        answer["NextToken"] = token
    return answer


def _seconds(text: str) -> float:
    return float(epoch_seconds(text))


@cloudwatch.operation()
async def delete_alarms(call: Call, params: dict[str, Any]) -> None:
    alarms = call.runtime.alarms
    existing = set(alarms.names())
    missing = [name for name in params["AlarmNames"] if name not in existing]
    if missing:  # none is deleted, as CloudWatch does
        raise ApiError("ResourceNotFound", f"Alarm {missing[0]} does not exist.")
    await alarms.delete_alarms(params["AlarmNames"])


@cloudwatch.operation()
async def set_alarm_state(call: Call, params: dict[str, Any]) -> None:
    alarms = call.runtime.alarms
    if params["AlarmName"] not in alarms.names():
        raise ApiError("ResourceNotFound", "")  # AWS's answer has no message
    await alarms.set_alarm_state(
        params["AlarmName"],
        params["StateValue"],
        params["StateReason"],
        params.get("StateReasonData"),
    )


async def _actions_enabled(call: Call, names: Iterable[str], enabled: bool) -> None:
    alarms = call.runtime.alarms
    for name in names:
        if name in alarms.names():  # AWS skips names that are not alarms
            await alarms.put(dataclasses.replace(alarms.spec(name), actions_enabled=enabled))


@cloudwatch.operation()
async def enable_alarm_actions(call: Call, params: dict[str, Any]) -> None:
    await _actions_enabled(call, params["AlarmNames"], True)


@cloudwatch.operation()
async def disable_alarm_actions(call: Call, params: dict[str, Any]) -> None:
    await _actions_enabled(call, params["AlarmNames"], False)
