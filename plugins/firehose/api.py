"""The firehose service (Firehose's JSON 1.1 API, ``Firehose_20150804.*``) on the endpoint.

Registered through ``register_services``. Requests are read and answers
written by botocore's model (``pipelines.api.wire``), which also applies the
model's limits (500 records a batch, 1,024,000 bytes a record, name
patterns). A delivery stream is a ``firehose`` resource: CreateDeliveryStream
stores its configuration (``FirehoseStore``, flagged as made by the API)
and puts the resource; a stream a config declares is served the same way.
API-made streams of an earlier run are resources again when the runtime
starts (``restore_streams``, through ``register_restorers``), and one
another runner of a cluster made is taken up at its first call here.
Only the extended S3 (and plain S3) destination is taken; the others are
refused by name (InvalidArgumentException).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from pipelines.api import ApiError, Call, Service
from pipelines.api.wire import validation_failed
from pipelines.errors import ConfigError, PipelinesError
from plugins.firehose.restore import made_again, running_streams, stream_settings
from plugins.firehose.spec import (
    EXTENDED_S3,
    HTTP_ENDPOINT,
    SpecError,
    describe_destination,
    describe_http_destination,
    parse_destination,
    parse_http_destination,
)
from plugins.firehose.store import FirehoseError, FirehoseStore, StreamRecord
from plugins.firehose.target import FirehoseTarget, stream_arn

firehose = Service("firehose")
log = logging.getLogger("plugins.firehose")

#: PutRecordBatch's limit on a request's data (the model holds the others).
MAX_BATCH_BYTES = 4 * 1024 * 1024
#: Record.Data's length limit in the model, which the wire layer does not check for blobs.
MAX_RECORD_BYTES = 1_024_000
MAX_TAGS = 50
LIST_LIMIT = 10
OTHER_DESTINATIONS = (
    "RedshiftDestinationConfiguration",
    "ElasticsearchDestinationConfiguration",
    "AmazonopensearchserviceDestinationConfiguration",
    "SplunkDestinationConfiguration",
    "AmazonOpenSearchServerlessDestinationConfiguration",
    "SnowflakeDestinationConfiguration",
    "IcebergDestinationConfiguration",
)


@dataclass
class _Context:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    restored: bool = False


def _invalid(message: str) -> ApiError:
    return ApiError("InvalidArgumentException", message)


def _not_found(call: Call, name: str) -> ApiError:
    return ApiError(
        "ResourceNotFoundException",
        f"Firehose {name} under account {call.account} not found.",
    )


async def _store(call: Call) -> FirehoseStore:
    store = await call.store(FirehoseStore, where="the firehose API")
    context = call.kept("firehose", _Context)
    if not context.restored:  # a runtime started without the plugin's hooks
        async with context.lock:
            if not context.restored:
                await made_again(call.runtime, store)
                context.restored = True
    return store


async def _target(call: Call, name: str) -> FirehoseTarget:
    store = await _store(call)
    for target in running_streams(call.runtime):
        if target.stream_name == name and target.stream is not None:
            return target
    # Made through another runner of the cluster since this one started.
    record = await store.find(name)
    if record is not None and record.made_by_api:
        async with call.kept("firehose", _Context).lock:
            if name not in {t.stream_name for t in running_streams(call.runtime)}:
                await call.runtime.put_resource(name, "firehose", stream_settings(record))
        for target in running_streams(call.runtime):
            if target.stream_name == name and target.stream is not None:
                return target
    raise _not_found(call, name)


def _spec_error(error: SpecError) -> ApiError:
    return _invalid(error.message)


@firehose.operation()
async def create_delivery_stream(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    name = params["DeliveryStreamName"]
    kind = params.get("DeliveryStreamType", "DirectPut")
    if kind not in ("DirectPut", "KinesisStreamAsSource"):
        raise _invalid(f"DeliveryStreamType {kind} is not supported here")
    for key in OTHER_DESTINATIONS:
        if key in params:
            raise _invalid(f"{key.removesuffix('Configuration')} is not supported here")
    destination = params.get("ExtendedS3DestinationConfiguration") or params.get(
        "S3DestinationConfiguration"
    )
    key, parse = EXTENDED_S3, parse_destination
    if HTTP_ENDPOINT in params:
        if destination is not None:
            raise _invalid("only one destination configuration may be given")
        destination, key, parse = params[HTTP_ENDPOINT], HTTP_ENDPOINT, parse_http_destination
    if destination is None:
        raise _invalid("a destination configuration is required")
    try:
        parse(destination)
    except SpecError as exc:
        raise _spec_error(exc) from None
    request: dict[str, Any] = {"DeliveryStreamType": kind, key: destination}
    if kind == "KinesisStreamAsSource":
        source = params.get("KinesisStreamSourceConfiguration")
        if not source:
            raise _invalid(
                "KinesisStreamSourceConfiguration is required for a KinesisStreamAsSource"
                " delivery stream"
            )
        request["KinesisStreamSourceConfiguration"] = source
    elif params.get("KinesisStreamSourceConfiguration"):
        raise _invalid("KinesisStreamSourceConfiguration is only for KinesisStreamAsSource")
    tags = {t["Key"]: t.get("Value", "") for t in params.get("Tags") or []}
    store = await _store(call)
    if name in call.runtime.resource_names():
        raise ApiError(
            "ResourceInUseException",
            f"Firehose {name} under accountId {call.account} already exists",
        )
    try:
        record = await store.create(name, request, {}, made_by_api=True, tags=tags)
    except FirehoseError as exc:
        if exc.code == "ResourceInUseException":
            raise ApiError(
                exc.code, f"Firehose {name} under accountId {call.account} already exists"
            ) from None
        raise ApiError(exc.code, exc.message) from None
    try:
        await call.runtime.put_resource(name, "firehose", stream_settings(record))
    except (ConfigError, PipelinesError) as exc:
        await store.delete(name)
        raise _invalid(str(exc)) from None
    return {"DeliveryStreamARN": stream_arn(name)}


@firehose.operation()
async def describe_delivery_stream(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    name = params["DeliveryStreamName"]
    store = await _store(call)
    record = await store.find(name)
    if record is None:
        raise _not_found(call, name)
    return {"DeliveryStreamDescription": describe(record)}


def describe(record: StreamRecord) -> dict[str, Any]:
    """DescribeDeliveryStream's DeliveryStreamDescription of a stored stream."""
    config = record.config
    if HTTP_ENDPOINT in config:
        found = config[HTTP_ENDPOINT]
        entry = describe_http_destination(found, parse_http_destination(found))
    else:
        found = config[EXTENDED_S3]
        entry = describe_destination(found, parse_destination(found))
    described: dict[str, Any] = {
        "DeliveryStreamName": record.name,
        "DeliveryStreamARN": stream_arn(record.name),
        "DeliveryStreamStatus": "ACTIVE",
        "DeliveryStreamEncryptionConfiguration": {"Status": "DISABLED"},
        "DeliveryStreamType": config.get("DeliveryStreamType", "DirectPut"),
        "VersionId": str(record.version),
        "CreateTimestamp": record.created,
        "Destinations": [entry],
        "HasMoreDestinations": False,
    }
    if record.version > 1:
        described["LastUpdateTimestamp"] = record.updated
    source = config.get("KinesisStreamSourceConfiguration")
    if source:
        described["Source"] = {
            "KinesisStreamSourceDescription": {
                "KinesisStreamARN": source["KinesisStreamARN"],
                "RoleARN": source.get("RoleARN", ""),
                "DeliveryStartTimestamp": record.created,
            }
        }
    return described


@firehose.operation()
async def list_delivery_streams(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    store = await _store(call)
    kind = params.get("DeliveryStreamType")
    start = params.get("ExclusiveStartDeliveryStreamName")
    limit = params.get("Limit", LIST_LIMIT)
    names = [
        record.name
        for record in await store.streams()
        if (kind is None or record.config.get("DeliveryStreamType") == kind)
        and (start is None or record.name > start)
    ]
    return {"DeliveryStreamNames": names[:limit], "HasMoreDeliveryStreams": len(names) > limit}


@firehose.operation()
async def delete_delivery_stream(call: Call, params: dict[str, Any]) -> None:
    name = params["DeliveryStreamName"]
    store = await _store(call)
    if await store.find(name) is None:
        raise _not_found(call, name)
    for target in running_streams(call.runtime):
        if target.stream_name == name:
            try:
                await call.runtime.delete_resource(target.name)
            except ConfigError as exc:
                raise ApiError("ResourceInUseException", str(exc)) from None
    await store.delete(name)


@firehose.operation()
async def update_destination(call: Call, params: dict[str, Any]) -> None:
    name = params["DeliveryStreamName"]
    store = await _store(call)
    record = await store.find(name)
    if record is None:
        raise _not_found(call, name)
    if params["DestinationId"] != "destinationId-000000000001":
        raise _invalid(f"Destination Id {params['DestinationId']} not found.")
    if HTTP_ENDPOINT in record.config:
        await _update_http(call, record, params)
        return
    update = params.get("ExtendedS3DestinationUpdate") or params.get("S3DestinationUpdate")
    if update is None:
        raise _invalid("only an S3 destination update is supported here")
    current = record.config["ExtendedS3DestinationConfiguration"]
    merged = {**current, **update}
    was = bool((current.get("DynamicPartitioningConfiguration") or {}).get("Enabled"))
    now = bool((merged.get("DynamicPartitioningConfiguration") or {}).get("Enabled"))
    if was != now:
        raise _invalid(
            "dynamic partitioning can be enabled only when a delivery stream is created,"
            " and never disabled"
        )
    try:
        parse_destination(merged)
    except SpecError as exc:
        raise _spec_error(exc) from None
    try:
        expected = int(params["CurrentDeliveryStreamVersionId"])
    except ValueError:
        raise _invalid("CurrentDeliveryStreamVersionId must be a number") from None
    config = {**record.config, "ExtendedS3DestinationConfiguration": merged}
    try:
        updated = await store.update(name, config, expect_version=expected)
    except FirehoseError as exc:
        raise ApiError(exc.code, exc.message) from None
    for target in running_streams(call.runtime):
        if target.stream_name == name and target.stream is not None:
            target.reconfigure(updated)


async def _update_http(call: Call, record: StreamRecord, params: dict[str, Any]) -> None:
    """UpdateDestination of an HTTP endpoint destination: HttpEndpointDestinationUpdate
    merged into it (its S3Update into the S3Configuration)."""
    update = params.get("HttpEndpointDestinationUpdate")
    if update is None:
        raise _invalid("this delivery stream's destination takes HttpEndpointDestinationUpdate")
    current = record.config[HTTP_ENDPOINT]
    merged = {**current, **{k: v for k, v in update.items() if k != "S3Update"}}
    if "S3Update" in update:
        merged["S3Configuration"] = {**current["S3Configuration"], **update["S3Update"]}
    if "EndpointConfiguration" in update:
        merged["EndpointConfiguration"] = {
            **current["EndpointConfiguration"],
            **update["EndpointConfiguration"],
        }
    try:
        parse_http_destination(merged)
    except SpecError as exc:
        raise _spec_error(exc) from None
    try:
        expected = int(params["CurrentDeliveryStreamVersionId"])
    except ValueError:
        raise _invalid("CurrentDeliveryStreamVersionId must be a number") from None
    store = await _store(call)
    try:
        updated = await store.update(
            record.name, {**record.config, HTTP_ENDPOINT: merged}, expect_version=expected
        )
    except FirehoseError as exc:
        raise ApiError(exc.code, exc.message) from None
    for target in running_streams(call.runtime):
        if target.stream_name == record.name and target.stream is not None:
            target.reconfigure(updated)


def _check_sizes(records: list[bytes], path: str) -> None:
    """The model's length limit on each record, in AWS's validation wording."""
    bad = [
        f"Value at '{path.format(index=i + 1)}' failed to satisfy constraint: Member must have"
        f" length less than or equal to {MAX_RECORD_BYTES}"
        for i, data in enumerate(records)
        if len(data) > MAX_RECORD_BYTES
    ]
    if bad:
        raise validation_failed(bad)


def _direct(call: Call, target: FirehoseTarget) -> None:
    if not target.direct_put:
        raise _invalid(
            f"This operation is not permitted on KinesisStreamAsSource delivery stream type."
            f" (delivery stream {target.stream_name})"
        )


@firehose.operation()
async def put_record(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    target = await _target(call, params["DeliveryStreamName"])
    _direct(call, target)
    _check_sizes([params["Record"]["Data"]], "record.data")
    result = (await target.put([params["Record"]["Data"]]))[0]
    if result.error_code is not None:
        raise ApiError("ServiceUnavailableException", result.error_message or "", 503)
    return {"RecordId": result.record_id, "Encrypted": False}


@firehose.operation()
async def put_record_batch(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    target = await _target(call, params["DeliveryStreamName"])
    _direct(call, target)
    records = [entry["Data"] for entry in params["Records"]]
    _check_sizes(records, "records.{index}.member.data")
    total = sum(len(data) for data in records)
    if total > MAX_BATCH_BYTES:
        raise _invalid(
            f"Records size exceeds the limit of 4 MiB per PutRecordBatch request ({total} bytes)"
        )
    results = await target.put(records)
    responses = []
    failed = 0
    for result in results:
        if result.error_code is None:
            responses.append({"RecordId": result.record_id})
        else:
            failed += 1
            responses.append({"ErrorCode": result.error_code, "ErrorMessage": result.error_message})
    return {"FailedPutCount": failed, "Encrypted": False, "RequestResponses": responses}


# -- tags --------------------------------------------------------------------------------


async def _record(call: Call, name: str) -> tuple[FirehoseStore, StreamRecord]:
    store = await _store(call)
    record = await store.find(name)
    if record is None:
        raise _not_found(call, name)
    return store, record


@firehose.operation()
async def tag_delivery_stream(call: Call, params: dict[str, Any]) -> None:
    store, record = await _record(call, params["DeliveryStreamName"])
    tags = {**record.tags, **{t["Key"]: t.get("Value", "") for t in params["Tags"]}}
    if len(tags) > MAX_TAGS:
        raise ApiError(
            "LimitExceededException",
            f"A delivery stream may have at most {MAX_TAGS} tags; this would give it {len(tags)}.",
        )
    await store.set_tags(record.name, tags)


@firehose.operation()
async def untag_delivery_stream(call: Call, params: dict[str, Any]) -> None:
    store, record = await _record(call, params["DeliveryStreamName"])
    tags = {k: v for k, v in record.tags.items() if k not in set(params["TagKeys"])}
    await store.set_tags(record.name, tags)


@firehose.operation()
async def list_tags_for_delivery_stream(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    _, record = await _record(call, params["DeliveryStreamName"])
    start = params.get("ExclusiveStartTagKey")
    limit = params.get("Limit", MAX_TAGS)
    keys = sorted(k for k in record.tags if start is None or k > start)
    return {
        "Tags": [{"Key": k, "Value": record.tags[k]} for k in keys[:limit]],
        "HasMoreTags": len(keys) > limit,
    }
