"""The logs service (CloudWatch Logs' JSON 1.1 API) over the log store.

Registered through ``register_services`` (see ``plugins/logs/__init__.py``).
Each operation is a thin translation to ``LogStore``'s public methods, on the
endpoint's ``LogStore`` (``call.store``): opened on the runtime's state
database with the runtime's clock and metric sink, so metric filters feed
the same metric store (and alarms) as the pipeline's own writes. A log
group declared in the YAML config and one made through the API are rows of
the same tables.

Where a running ``log_group`` resource writes the group: PutLogEvents wakes
its subscriptions (``LogGroupTarget.written``), and Put/DeleteSubscriptionFilter
go through it (``subscribe``/``unsubscribe``), so the filter is forwarded at
once. Destinations are resources, named by ARN (``resource_of``).

Queries (StartQuery) run in the background on the endpoint; their results
are kept in memory while the endpoint serves.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipelines.api import ApiError, Call, Service, resource_of
from pipelines.api.services import page
from pipelines.errors import LogsError
from plugins.logs.insights import QueryResult, parse_query
from plugins.logs.store import LogStore, MetricTransformation
from plugins.logs.target import LogGroupTarget

logs = Service("logs", validation_code="InvalidParameterException")

#: Describe* pages when the request gives no limit (CloudWatch's default: 50).
PAGE = 50

#: Store messages that begin with AWS's sentence, and AWS's exact wording.
_AWS_MESSAGES = (
    ("The specified log group does not exist", "The specified log group does not exist."),
    ("The specified log stream does not exist", "The specified log stream does not exist."),
    ("The specified log group already exists", "The specified log group already exists"),
    ("The specified log stream already exists", "The specified log stream already exists"),
    (
        "The specified subscription filter does not exist",
        "The specified subscription filter does not exist.",
    ),
    ("The specified metric filter does not exist", "The specified metric filter does not exist."),
    (
        "Log events in a single PutLogEvents request must be in chronological order",
        "Log events in a single PutLogEvents request must be in chronological order.",
    ),
    ("Resource limit exceeded", "Resource limit exceeded."),
)


def _aws(error: LogsError) -> ApiError:
    """A store's refusal in AWS's wording where AWS's is known."""
    message = error.message
    for begins, wording in _AWS_MESSAGES:
        if message.startswith(begins):
            message = wording
            break
    else:
        if message.startswith("nextToken ") and message.endswith("is not valid"):
            message = "The specified nextToken is invalid."
    return ApiError(error.code, message)


async def _store(call: Call) -> LogStore:
    return await call.store(LogStore, call.runtime.put_metric_data, where="the logs API")


def _targets(call: Call, group: str) -> list[LogGroupTarget]:
    """The running resources that write ``group``."""
    found = []
    for name in call.runtime.resource_names():
        target = call.runtime.resource(name)
        if isinstance(target, LogGroupTarget) and target.group == group and target.store:
            found.append(target)
    return found


def _group(params: Mapping[str, Any]) -> str:
    """The group a request names: ``logGroupName`` or ``logGroupIdentifier`` (a name or ARN)."""
    name = params.get("logGroupName")
    identifier = params.get("logGroupIdentifier")
    if name is not None and identifier is not None:
        raise ApiError(
            "ValidationException",
            "LogGroup name and LogGroup ARN are mutually exclusive parameters.",
        )
    if name is None and identifier is not None:
        name = _identified(identifier)
    if name is None:
        raise ApiError(
            "InvalidParameterException", "Either logGroupName or logGroupIdentifier is required."
        )
    return str(name)


def _identified(identifier: str) -> str:
    """A log group's name from its name or ARN (``arn:aws:logs:R:A:log-group:NAME[:*]``)."""
    if identifier.startswith("arn:") and ":log-group:" in identifier:
        return identifier.split(":log-group:", 1)[1].removesuffix(":*")
    return identifier


def _page(items: Sequence[Any], params: Mapping[str, Any], key: str, limit: str) -> dict[str, Any]:
    invalid = ApiError("InvalidParameterException", "The specified nextToken is invalid.")
    found, token = page(items, params.get("nextToken"), params.get(limit) or PAGE, invalid)
    return {key: found, "nextToken": token} if token else {key: found}


# -- groups and streams --------------------------------------------------------


@logs.operation()
async def create_log_group(call: Call, params: dict[str, Any]) -> None:
    if params.get("logGroupClass", "STANDARD") != "STANDARD":
        raise ApiError(
            "InvalidParameterException",
            f"logGroupClass {params['logGroupClass']} is not supported by pipelines (STANDARD is)",
        )
    store = await _store(call)
    try:
        await store.create_log_group(params["logGroupName"])
    except LogsError as error:
        raise _aws(error) from None


@logs.operation()
async def delete_log_group(call: Call, params: dict[str, Any]) -> None:
    store = await _store(call)
    try:
        await store.delete_log_group(params["logGroupName"])
    except LogsError as error:
        raise _aws(error) from None


def _aws_group(group: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **group,
        "logGroupArn": group["arn"].removesuffix(":*"),
        "logGroupClass": "STANDARD",
        "deletionProtectionEnabled": False,
    }


@logs.operation()
async def describe_log_groups(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    prefix = params.get("logGroupNamePrefix")
    pattern = params.get("logGroupNamePattern")
    if prefix is not None and pattern is not None:
        raise ApiError(
            "InvalidParameterException",
            "LogGroup name prefix and LogGroup name pattern are mutually exclusive parameters.",
        )
    store = await _store(call)
    groups = await store.describe_log_groups(prefix or "")
    if pattern is not None:
        groups = [g for g in groups if pattern.lower() in g["logGroupName"].lower()]
    identifiers = params.get("logGroupIdentifiers")
    if identifiers:
        wanted = {_identified(i) for i in identifiers}
        groups = [g for g in groups if g["logGroupName"] in wanted]
    return _page([_aws_group(g) for g in groups], params, "logGroups", "limit")


@logs.operation()
async def put_retention_policy(call: Call, params: dict[str, Any]) -> None:
    store = await _store(call)
    try:
        await store.put_retention_policy(params["logGroupName"], params["retentionInDays"])
    except LogsError as error:
        raise _aws(error) from None


@logs.operation()
async def delete_retention_policy(call: Call, params: dict[str, Any]) -> None:
    store = await _store(call)
    try:
        await store.put_retention_policy(params["logGroupName"], None)
    except LogsError as error:
        raise _aws(error) from None


@logs.operation()
async def create_log_stream(call: Call, params: dict[str, Any]) -> None:
    store = await _store(call)
    try:
        await store.create_log_stream(params["logGroupName"], params["logStreamName"])
    except LogsError as error:
        raise _aws(error) from None


@logs.operation()
async def delete_log_stream(call: Call, params: dict[str, Any]) -> None:
    store = await _store(call)
    try:
        await store.delete_log_stream(params["logGroupName"], params["logStreamName"])
    except LogsError as error:
        raise _aws(error) from None


@logs.operation()
async def describe_log_streams(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    group = _group(params)
    prefix = params.get("logStreamNamePrefix")
    by_time = params.get("orderBy") == "LastEventTime"
    if by_time and prefix is not None:
        raise ApiError(
            "InvalidParameterException", "Cannot order by LastEventTime with a logStreamNamePrefix."
        )
    store = await _store(call)
    try:
        streams = await store.describe_log_streams(group, prefix or "")
    except LogsError as error:
        raise _aws(error) from None
    if by_time:
        streams.sort(key=lambda s: (s.get("lastEventTimestamp", -1), s["logStreamName"]))
    if params.get("descending"):
        streams.reverse()
    return _page(streams, params, "logStreams", "limit")


# -- events --------------------------------------------------------------------


@logs.operation()
async def put_log_events(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    group, stream = params["logGroupName"], params["logStreamName"]
    store = await _store(call)
    try:
        answer = await store.put_log_events(group, stream, params["logEvents"])
    except LogsError as error:
        raise _aws(error) from None
    if answer["acceptedCount"]:
        for target in _targets(call, group):
            target.written()
    token = f"{await store.last_event_id():056d}"
    return {**answer, "nextSequenceToken": token}


@logs.operation()
async def get_log_events(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    store = await _store(call)
    try:
        return await store.get_log_events(
            _group(params),
            params["logStreamName"],
            start_time=params.get("startTime"),
            end_time=params.get("endTime"),
            limit=params.get("limit") or 10_000,
            start_from_head=bool(params.get("startFromHead")),
            next_token=params.get("nextToken"),
        )
    except LogsError as error:
        raise _aws(error) from None


@logs.operation()
async def filter_log_events(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    store = await _store(call)
    try:
        return await store.filter_log_events(
            _group(params),
            params.get("filterPattern", ""),
            start_time=params.get("startTime"),
            end_time=params.get("endTime"),
            stream_names=params.get("logStreamNames"),
            stream_prefix=params.get("logStreamNamePrefix"),
            limit=params.get("limit") or 10_000,
            next_token=params.get("nextToken"),
        )
    except LogsError as error:
        raise _aws(error) from None


# -- metric filters --------------------------------------------------------------


@logs.operation()
async def put_metric_filter(call: Call, params: dict[str, Any]) -> None:
    (shape,) = params["metricTransformations"]
    store = await _store(call)
    try:
        await store.put_metric_filter(
            params["logGroupName"],
            params["filterName"],
            params["filterPattern"],
            MetricTransformation.from_json(shape),
        )
    except LogsError as error:
        raise _aws(error) from None


def _aws_metric_filter(found: Mapping[str, Any]) -> dict[str, Any]:
    transformations = []
    for shape in found["metricTransformations"]:
        # CloudWatch leaves out a unit that was not given ("None" here).
        transformations.append({k: v for k, v in shape.items() if (k, v) != ("unit", "None")})
    return {**found, "metricTransformations": transformations, "applyOnTransformedLogs": False}


@logs.operation()
async def describe_metric_filters(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    store = await _store(call)
    group = params.get("logGroupName")
    try:
        if group is not None:
            found = await store.describe_metric_filters(group)
        else:
            found = []
            for each in await store.describe_log_groups():
                found += await store.describe_metric_filters(each["logGroupName"])
    except LogsError as error:
        raise _aws(error) from None
    prefix = params.get("filterNamePrefix", "")
    name, namespace = params.get("metricName"), params.get("metricNamespace")
    chosen = [
        _aws_metric_filter(f)
        for f in found
        if f["filterName"].startswith(prefix)
        and (name is None or any(t["metricName"] == name for t in f["metricTransformations"]))
        and (
            namespace is None
            or any(t["metricNamespace"] == namespace for t in f["metricTransformations"])
        )
    ]
    return _page(chosen, params, "metricFilters", "limit")


@logs.operation()
async def delete_metric_filter(call: Call, params: dict[str, Any]) -> None:
    store = await _store(call)
    try:
        await store.delete_metric_filter(params["logGroupName"], params["filterName"])
    except LogsError as error:
        raise _aws(error) from None


# -- subscription filters ----------------------------------------------------------


@logs.operation()
async def put_subscription_filter(call: Call, params: dict[str, Any]) -> None:
    group, name = params["logGroupName"], params["filterName"]
    destination = resource_of(call, params["destinationArn"])
    store = await _store(call)
    try:
        await store.describe_subscription_filters(group)  # the group first, as AWS checks
        if destination is None:
            raise ApiError(
                "InvalidParameterException",
                f"destinationArn {params['destinationArn']} names no resource of this pipeline.",
            )
        targets = _targets(call, group)
        if targets:
            for target in targets:
                await target.subscribe(name, params["filterPattern"], destination)
        else:
            await store.put_subscription_filter(group, name, params["filterPattern"], destination)
    except LogsError as error:
        raise _aws(error) from None


@logs.operation()
async def describe_subscription_filters(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    store = await _store(call)
    try:
        found = await store.describe_subscription_filters(params["logGroupName"])
    except LogsError as error:
        raise _aws(error) from None
    prefix = params.get("filterNamePrefix", "")
    names = set(call.runtime.resource_names())
    chosen = [
        {
            **f,
            "destinationArn": call.runtime.resource_arn(f["destinationArn"])
            if f["destinationArn"] in names
            else f["destinationArn"],
            "distribution": "ByLogStream",
            "applyOnTransformedLogs": False,
        }
        for f in found
        if f["filterName"].startswith(prefix)
    ]
    return _page(chosen, params, "subscriptionFilters", "limit")


@logs.operation()
async def delete_subscription_filter(call: Call, params: dict[str, Any]) -> None:
    group, name = params["logGroupName"], params["filterName"]
    store = await _store(call)
    try:
        targets = _targets(call, group)
        if targets:
            for target in targets:
                await target.unsubscribe(name)
        else:
            await store.delete_subscription_filter(group, name)
    except LogsError as error:
        raise _aws(error) from None


# -- index policies ------------------------------------------------------------------


@logs.operation()
async def put_index_policy(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    store = await _store(call)
    try:
        return await store.put_index_policy(
            _identified(params["logGroupIdentifier"]), params["policyDocument"]
        )
    except LogsError as error:
        raise _aws(error) from None


@logs.operation()
async def describe_index_policies(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    store = await _store(call)
    groups = [_identified(i) for i in params["logGroupIdentifiers"]]
    try:
        return await store.describe_index_policies(groups)
    except LogsError as error:
        raise _aws(error) from None


@logs.operation()
async def delete_index_policy(call: Call, params: dict[str, Any]) -> None:
    store = await _store(call)
    try:
        await store.delete_index_policy(_identified(params["logGroupIdentifier"]))
    except LogsError as error:
        raise _aws(error) from None


# -- queries (Logs Insights) ---------------------------------------------------------


@dataclass
class _Query:
    id: str
    group: str
    text: str
    created: int  # ms
    limit: int | None
    task: asyncio.Task[QueryResult] | None = None
    status: str = "Running"
    result: QueryResult | None = None
    error: str | None = None


@dataclass
class _Queries:
    """The queries of one endpoint, by id (in memory: gone when it closes)."""

    by_id: dict[str, _Query] = field(default_factory=dict)

    async def close(self) -> None:
        tasks = [q.task for q in self.by_id.values() if q.task is not None and not q.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _close_queries(queries: _Queries) -> None:
    await queries.close()


def _queries(call: Call) -> _Queries:
    return call.kept("logs.queries", _Queries, _close_queries)


def _finished(query: _Query, task: asyncio.Task[QueryResult]) -> None:
    if task.cancelled():
        query.status = "Cancelled"
    elif task.exception() is not None:
        query.status, query.error = "Failed", str(task.exception())
    else:
        query.status, query.result = "Complete", task.result()


@logs.operation()
async def start_query(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    groups = [
        *([params["logGroupName"]] if params.get("logGroupName") else []),
        *(params.get("logGroupNames") or []),
        *(_identified(i) for i in params.get("logGroupIdentifiers") or []),
    ]
    if len(groups) != 1:
        raise ApiError(
            "InvalidParameterException",
            "pipelines queries one log group at a time: give exactly one of logGroupName,"
            " logGroupNames or logGroupIdentifiers, with one group",
        )
    if params.get("queryLanguage", "CWLI") != "CWLI":
        raise ApiError(
            "InvalidParameterException",
            f"queryLanguage {params['queryLanguage']} is not supported by pipelines (CWLI is)",
        )
    group, text = groups[0], params["queryString"]
    store = await _store(call)
    if group not in {g["logGroupName"] for g in await store.describe_log_groups(group)}:
        raise ApiError(
            "ResourceNotFoundException",
            f"Log group '{group}' does not exist for account ID '{call.account}'",
        )
    try:
        parse_query(text)  # a malformed query is refused here, as AWS refuses it
    except LogsError as error:
        raise _aws(error) from None
    query = _Query(str(uuid.uuid4()), group, text, int(time.time() * 1000), params.get("limit"))
    # Seconds, both inclusive: the end second's last millisecond too.
    run = store.query(group, text, start_time=params["startTime"] * 1000,
                      end_time=params["endTime"] * 1000 + 999)  # fmt: skip
    query.task = asyncio.get_running_loop().create_task(run)
    query.task.add_done_callback(lambda task: _finished(query, task))
    _queries(call).by_id[query.id] = query
    return {"queryId": query.id}


def _query(call: Call, query_id: str) -> _Query:
    found = _queries(call).by_id.get(query_id)
    if found is None:
        raise ApiError("ResourceNotFoundException", f"Query {query_id} does not exist.")
    return found


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value)


@logs.operation()
async def get_query_results(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    query = _query(call, params["queryId"])
    answer: dict[str, Any] = {"queryLanguage": "CWLI", "status": query.status, "results": []}
    result = query.result
    if result is None:
        answer["statistics"] = {"recordsMatched": 0.0, "recordsScanned": 0.0, "bytesScanned": 0.0}
        return answer
    rows = result.rows if query.limit is None else result.rows[: query.limit]
    answer["results"] = [
        [
            {"field": name, "value": _text(row[name])}
            for name in result.fields
            if row.get(name) is not None
        ]
        for row in rows
    ]
    answer["statistics"] = {
        "recordsMatched": float(result.records_matched),
        "recordsScanned": float(result.records_scanned),
        "bytesScanned": 0.0,
    }
    return answer


@logs.operation()
async def stop_query(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    query = _query(call, params["queryId"])
    if query.task is None or query.task.done():
        # AWS documents an error for a query that has ended (its wording is not recorded).
        raise ApiError(
            "InvalidParameterException",
            f"Query {query.id} is not running: it is {query.status}.",
        )
    query.task.cancel()
    await asyncio.gather(query.task, return_exceptions=True)
    return {"success": True}


@logs.operation()
async def describe_queries(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    group, status = params.get("logGroupName"), params.get("status")
    found = [
        {
            "queryLanguage": "CWLI",
            "queryId": q.id,
            "queryString": q.text,
            "status": q.status,
            "createTime": q.created,
            "logGroupName": q.group,
        }
        for q in sorted(_queries(call).by_id.values(), key=lambda q: -q.created)
        if (group is None or q.group == group) and (status is None or q.status == status)
    ]
    return _page(found, params, "queries", "maxResults")
