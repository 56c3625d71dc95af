"""The kinesis service (Kinesis Data Streams' JSON 1.1 API) over the stream store.

Registered through ``register_services`` (see ``plugins/stream/__init__.py``).
Each operation is a thin translation to ``StreamStore``'s public methods, on
the runtime's state database: a stream declared in the YAML config and one
made through the API are rows of the same tables, so each sees the other.

Which store: a stream that a running ``stream`` resource writes goes through
that resource's store (``StreamTarget.store``), so its consumers wake at once
on a put and the write limits are counted once; any other stream goes
through the endpoint's own ``StreamStore`` (``call.store``), opened on the
runtime's state database with its clock. Streams are named by
``StreamName`` or ``StreamARN`` (``arn:aws:kinesis:REGION:ACCOUNT:stream/NAME``;
region and account are not compared).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any

from pipelines.api import ApiError, Call, Service
from pipelines.api.services import page_start, page_token
from pipelines.api.wire import constraint_failed, validation_failed
from pipelines.errors import StreamError
from pipelines.groupcommit import GroupCommit
from plugins.stream.store import MAX_GET_RECORDS, MAX_PUT_REQUEST_BYTES, StreamStore, shard_index
from plugins.stream.target import StreamTarget

kinesis = Service("kinesis")

#: CreateStream without ShardCount makes an on-demand stream of 4 shards, as AWS does.
ON_DEMAND_SHARDS = 4
#: ListStreams' and ListShards' page when the request gives no limit.
LIST_STREAMS_PAGE = 100
LIST_SHARDS_PAGE = 1000


def _name(params: Mapping[str, Any]) -> str:
    """The stream a request names, by ``StreamName`` or ``StreamARN``."""
    name = params.get("StreamName")
    arn = params.get("StreamARN")
    if name is None and arn is not None:
        if ":stream/" not in arn:
            raise ApiError("InvalidArgumentException", f"{arn} is not a stream's ARN")
        name = arn.rsplit(":stream/", 1)[1]
    if name is None:
        raise ApiError("InvalidArgumentException", "Either StreamName or StreamARN must be given.")
    return str(name)


async def _own(call: Call) -> StreamStore:
    """The endpoint's stream store on the runtime's state database."""
    return await call.store(StreamStore, where="the kinesis API")


async def _store(call: Call, stream: str) -> StreamStore:
    """The store of a running resource that writes ``stream``, else the endpoint's."""
    for resource in call.runtime.resource_names():
        target = call.runtime.resource(resource)
        if isinstance(target, StreamTarget) and target.stream == stream and target.store:
            await call.runtime.wait_running(30.0)
            return target.store
    return await _own(call)


def _aws(call: Call, error: StreamError, stream: str | None = None) -> ApiError:
    """A store's refusal in AWS's wording where AWS's is known."""
    message = error.message
    if stream is None:
        return ApiError(error.code, message)
    if error.code == "ResourceNotFoundException" and (
        message == f"stream {stream} not found" or message.endswith("was deleted")
    ):
        message = f"Stream {stream} under account {call.account} not found."
    if error.code == "ResourceInUseException" and message.endswith("already exists"):
        message = f"Stream {stream} under account {call.account} already exists."
    return ApiError(error.code, message)


def _aws_sequence(number: str) -> str:
    """A sequence number as AWS writes one: no leading zeros (AWS's pattern
    ``0|([1-9]\\d{0,128})``); the store's are 56 digits, zero-padded, which
    sort as text."""
    return number.lstrip("0") or "0"


def _store_sequence(number: str) -> str:
    """A sequence number given to the API, in the store's 56 digits."""
    return number.zfill(56) if number.isdigit() and len(number) <= 56 else number


def _shards_out(shards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            **shard,
            "SequenceNumberRange": {
                key: _aws_sequence(value) for key, value in shard["SequenceNumberRange"].items()
            },
        }
        for shard in shards
    ]


def _records_out(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {**r, "SequenceNumber": _aws_sequence(r["SequenceNumber"])} if "SequenceNumber" in r else r
        for r in results
    ]


# -- streams -----------------------------------------------------------------


@kinesis.operation()
async def create_stream(call: Call, params: dict[str, Any]) -> None:
    name = params["StreamName"]
    mode = params.get("StreamModeDetails", {}).get("StreamMode")
    count = params.get("ShardCount")
    if mode is None:
        mode = "ON_DEMAND" if count is None else "PROVISIONED"
    if mode == "PROVISIONED" and count is None:
        raise ApiError(
            "ValidationException", "ShardCount is required for a stream in PROVISIONED mode."
        )
    options: dict[str, Any] = {"write_limits": mode == "PROVISIONED"}
    if params.get("MaxRecordSizeInKiB") is not None:
        options["max_record_size"] = params["MaxRecordSizeInKiB"] * 1024
    store = await _own(call)
    try:
        await store.create_stream(name, count or ON_DEMAND_SHARDS, **options)
    except StreamError as error:
        raise _aws(call, error, name) from None


@kinesis.operation()
async def delete_stream(call: Call, params: dict[str, Any]) -> None:
    name = _name(params)
    store = await _store(call, name)
    try:
        await store.delete_stream(name)
    except StreamError as error:
        raise _aws(call, error, name) from None


async def _described(call: Call, name: str) -> dict[str, Any]:
    store = await _store(call, name)
    try:
        return await store.describe_stream(name)
    except StreamError as error:
        raise _aws(call, error, name) from None


def _common(described: Mapping[str, Any]) -> dict[str, Any]:
    """The members DescribeStream and DescribeStreamSummary share."""
    return {
        "StreamName": described["StreamName"],
        "StreamARN": described["StreamARN"],
        "StreamStatus": described["StreamStatus"],
        "StreamModeDetails": described["StreamModeDetails"],
        "RetentionPeriodHours": described["RetentionPeriodHours"],
        "StreamCreationTimestamp": described["StreamCreationTimestamp"],
        "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
        "EncryptionType": "NONE",
    }


@kinesis.operation()
async def describe_stream(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    described = await _described(call, _name(params))
    shards = _shards_out(described["Shards"])
    after = params.get("ExclusiveStartShardId")
    if after is not None:
        shards = [s for s in shards if s["ShardId"] > after]
    limit = params.get("Limit") or 100
    return {
        "StreamDescription": {
            **_common(described),
            "Shards": shards[:limit],
            "HasMoreShards": len(shards) > limit,
        }
    }


@kinesis.operation()
async def describe_stream_summary(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    described = await _described(call, _name(params))
    return {
        "StreamDescriptionSummary": {
            **_common(described),
            "OpenShardCount": described["OpenShardCount"],
            "ConsumerCount": 0,
            "MaxRecordSizeInKiB": described["MaxRecordSizeInBytes"] // 1024,
        }
    }


@kinesis.operation()
async def list_streams(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    store = await _own(call)
    names = await store.list_streams()
    start = page_start(
        params.get("NextToken"), ApiError("InvalidArgumentException", "NextToken is not valid.")
    )
    after = params.get("ExclusiveStartStreamName")
    if after is not None:
        names = [name for name in names if name > after]
    limit = params.get("Limit") or LIST_STREAMS_PAGE
    page = names[start : start + limit]
    summaries = []
    for name in page:
        try:
            described = await store.describe_stream(name)
        except StreamError:
            continue  # deleted meanwhile
        summaries.append(
            {
                key: described[key]
                for key in ("StreamName", "StreamARN", "StreamStatus", "StreamModeDetails")
            }
            | {"StreamCreationTimestamp": described["StreamCreationTimestamp"]}
        )
    more = start + limit < len(names)
    answer: dict[str, Any] = {
        "StreamNames": page,
        "HasMoreStreams": more,
        "StreamSummaries": summaries,
    }
    if more:
        answer["NextToken"] = page_token(start + limit)
    return answer


@kinesis.operation()
async def list_shards(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    token = params.get("NextToken")
    if token is not None:
        if params.get("StreamName") is not None or params.get("StreamARN") is not None:
            raise ApiError(
                "InvalidArgumentException", "NextToken and StreamName cannot be provided together."
            )
        try:
            name, _, position = base64.urlsafe_b64decode(token.encode()).decode().partition("\n")
            start = int(position)
        except (ValueError, binascii.Error):
            raise ApiError("InvalidArgumentException", "NextToken is not valid.") from None
    else:
        name, start = _name(params), 0
    store = await _store(call, name)
    try:
        shards = _shards_out(await store.list_shards(name))
    except StreamError as error:
        raise _aws(call, error, name) from None
    after = params.get("ExclusiveStartShardId")
    shard_filter = params.get("ShardFilter") or {}
    kind = shard_filter.get("Type")
    if kind == "AFTER_SHARD_ID":
        if "ShardId" not in shard_filter:
            raise ApiError(
                "InvalidArgumentException", "ShardFilter AFTER_SHARD_ID needs a ShardId."
            )
        after = shard_filter["ShardId"]
    elif kind == "AT_LATEST":
        shards = [s for s in shards if "EndingSequenceNumber" not in s["SequenceNumberRange"]]
    if after is not None:
        shards = [s for s in shards if s["ShardId"] > after]
    limit = params.get("MaxResults") or LIST_SHARDS_PAGE
    answer: dict[str, Any] = {"Shards": shards[start : start + limit]}
    if start + limit < len(shards):
        answer["NextToken"] = base64.urlsafe_b64encode(f"{name}\n{start + limit}".encode()).decode()
    return answer


async def _retention(call: Call, params: dict[str, Any], *, increase: bool) -> None:
    name = _name(params)
    hours = params["RetentionPeriodHours"]
    current = (await _described(call, name))["RetentionPeriodHours"]
    if increase and hours < current:
        raise ApiError(
            "InvalidArgumentException",
            f"Requested retention period ({hours} hours) for stream {name} can not be shorter"
            f" than existing retention period ({current} hours). Use"
            " DecreaseRetentionPeriod API.",
        )
    if not increase and hours > current:
        raise ApiError(
            "InvalidArgumentException",
            f"Requested retention period ({hours} hours) for stream {name} can not be longer"
            f" than existing retention period ({current} hours). Use"
            " IncreaseRetentionPeriod API.",
        )
    store = await _store(call, name)
    try:
        await store.set_retention(name, hours)
    except StreamError as error:
        raise _aws(call, error, name) from None


@kinesis.operation()
async def increase_stream_retention_period(call: Call, params: dict[str, Any]) -> None:
    await _retention(call, params, increase=True)


@kinesis.operation()
async def decrease_stream_retention_period(call: Call, params: dict[str, Any]) -> None:
    await _retention(call, params, increase=False)


# -- records -----------------------------------------------------------------


def _entry(params: Mapping[str, Any]) -> dict[str, Any]:
    entry = {"Data": params["Data"], "PartitionKey": params["PartitionKey"]}
    if params.get("ExplicitHashKey") is not None:
        entry["ExplicitHashKey"] = params["ExplicitHashKey"]
    return entry


def _null_partition_keys(paths: list[str]) -> ApiError:
    """Kinesis's refusal of records without a PartitionKey (botocore's model
    no longer requires it, so the front door lets them through)."""
    return validation_failed(
        [constraint_failed(None, path, "Member must not be null") for path in paths]
    )


@kinesis.operation()
async def put_record(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    name = _name(params)
    if "PartitionKey" not in params:
        raise _null_partition_keys(["partitionKey"])
    store = await _store(call, name)
    try:
        answer = await store.put_records(name, [_entry(params)])
    except StreamError as error:
        raise _aws(call, error, name) from None
    [result] = _records_out(answer["Records"])
    if "ErrorCode" in result:
        raise ApiError(result["ErrorCode"], result["ErrorMessage"])
    return {**result, "EncryptionType": "NONE"}


class _Writer:
    """PutRecords calls to one stream at the same moment share one write.

    Each call waits for its records' commit, as alone; a store's write is a
    transaction whatever its size, so concurrent clients pay one between
    them (group commit) instead of queueing one each behind the writer.
    Calls are kept whole: a write takes whole calls up to the limits of one
    PutRecords (500 records, 5 MiB), and each call gets its records' results.
    """

    def __init__(self, call: Call, store: StreamStore, stream: str) -> None:
        self.store = store
        self.stream = stream
        self.commit: GroupCommit[list[dict[str, Any]], list[dict[str, Any]]] = GroupCommit(
            _whole_calls, self._write, _closing
        )
        self.task = call.runtime.spawn(self.commit.run())

    async def _write(
        self, calls: list[list[dict[str, Any]]]
    ) -> list[list[dict[str, Any]] | BaseException]:
        answer = await self.store.put_records(self.stream, [r for c in calls for r in c])
        results = iter(answer["Records"])
        return [[next(results) for _ in records] for records in calls]

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.commit.fail_waiting(_closing())


def _closing() -> ApiError:
    return ApiError("ServiceUnavailable", "the endpoint is closing", 503, sender_fault=False)


def _whole_calls(calls: list[list[dict[str, Any]]]) -> list[list[list[dict[str, Any]]]]:
    writes: list[list[list[dict[str, Any]]]] = []
    count = size = 0
    for records in calls:
        weight = sum(len(r["Data"]) + len(r["PartitionKey"].encode()) for r in records)
        if not writes or count + len(records) > 500 or size + weight > MAX_PUT_REQUEST_BYTES:
            writes.append([])
            count = size = 0
        writes[-1].append(records)
        count += len(records)
        size += weight
    return writes


def _writer(call: Call, store: StreamStore, stream: str) -> _Writer:
    # One per store and stream: a resource replaced by a reload has a new store.
    return call.kept(
        f"kinesis writer {id(store)} {stream}",
        lambda: _Writer(call, store, stream),
        _Writer.close,
    )


@kinesis.operation()
async def put_records(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    name = _name(params)
    store = await _store(call, name)
    # The records as read (model members only, Data decoded): this request's own.
    records: list[dict[str, Any]] = params["Records"]
    # Refused before the shared write: one call's bad record must not fail
    # (or stop) the write of the calls grouped with it.
    missing = [
        f"records.{index}.member.partitionKey"
        for index, record in enumerate(records, 1)
        if "PartitionKey" not in record
    ]
    if missing:
        raise _null_partition_keys(missing)
    try:
        results = await _writer(call, store, name).commit.submit(records)
    except StreamError as error:
        raise _aws(call, error, name) from None
    failed = sum(1 for result in results if "ErrorCode" in result)
    return {
        "FailedRecordCount": failed,
        "Records": _records_out(results),
        "EncryptionType": "NONE",
    }


@kinesis.operation()
async def get_shard_iterator(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    name = _name(params)
    store = await _store(call, name)
    try:
        iterator = await store.get_shard_iterator(
            name,
            _shard(params["ShardId"]),
            params["ShardIteratorType"],
            sequence_number=_store_sequence(params["StartingSequenceNumber"])
            if params.get("StartingSequenceNumber") is not None
            else None,
            timestamp=params.get("Timestamp"),
        )
    except StreamError as error:
        raise _aws(call, error, name) from None
    return {"ShardIterator": iterator}


def _shard(given: str) -> str:
    """A shard id as AWS takes it: ``shardId-000000000001``, or its number alone."""
    if given.isdigit():
        return f"shardId-{int(given):012d}"
    shard_index(given)  # InvalidArgumentException when it is neither
    return given


@kinesis.operation()
async def get_records(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    # AWS takes an iterator in quotes too (a client that JSON-encoded it twice).
    iterator = params["ShardIterator"].strip('"')
    limit = params.get("Limit") or MAX_GET_RECORDS
    store = await _own(call)
    try:
        answer = await store.get_records(iterator, limit)
    except StreamError as error:
        if error.code == "InvalidArgumentException" and "not a shard iterator" in error.message:
            raise ApiError("InvalidArgumentException", "Invalid ShardIterator.") from None
        raise ApiError(error.code, error.message) from None
    return {**answer, "Records": _records_out(answer["Records"])}


# -- resharding --------------------------------------------------------------


@kinesis.operation()
async def split_shard(call: Call, params: dict[str, Any]) -> None:
    name = _name(params)
    store = await _store(call, name)
    try:
        await store.split_shard(name, _shard(params["ShardToSplit"]), params["NewStartingHashKey"])
    except StreamError as error:
        raise _aws(call, error, name) from None


@kinesis.operation()
async def merge_shards(call: Call, params: dict[str, Any]) -> None:
    name = _name(params)
    store = await _store(call, name)
    try:
        await store.merge_shards(
            name, _shard(params["ShardToMerge"]), _shard(params["AdjacentShardToMerge"])
        )
    except StreamError as error:
        raise _aws(call, error, name) from None


__all__: Sequence[str] = ["kinesis"]
