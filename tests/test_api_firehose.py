"""The firehose API over HTTP: boto3 against an ApiServer, the runtime in process.

The DescribeDeliveryStream shape is held to LocalStack's recording of an
AWS answer (tests/aws/services/firehose/resources/test_firehose.snapshot.json:
defaults filled in, DestinationId, VersionId "1", the S3 description beside
the extended one)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.api import ApiServer, served_services
from pipelines.runtime import Runtime

from .apiclient import aws_call, aws_refusal, boto
from .firehose_helpers import firehose_plugins, lines, objects

PLUGINS = firehose_plugins()
ROLE = "arn:aws:iam::111111111111:role/firehose"


class Firehose:
    def __init__(self, runtime: Runtime, url: str, root: Path) -> None:
        self.runtime = runtime
        self.url = url
        self.root = root
        self.client = boto("firehose", url)

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        return await aws_call(self.client, operation, **params)

    async def error(self, operation: str, **params: Any) -> dict[str, Any]:
        response: dict[str, Any] = (await aws_refusal(self.client, operation, **params)).response
        return response


async def _serve(tmp_path: Path) -> AsyncIterator[Firehose]:
    runtime = Runtime(state_path=tmp_path / "state.db", plugins=PLUGINS)
    server = ApiServer(runtime, served_services(PLUGINS), "127.0.0.1", 0)
    await server.start()
    try:
        async with runtime:
            yield Firehose(runtime, server.url, tmp_path)
    finally:
        await server.close()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Firehose]:
    async for served in _serve(tmp_path):
        yield served


PARTITIONED = {
    "BucketARN": "arn:aws:s3:::lake",
    "RoleARN": "arn:aws:iam::111111111111:role/firehose",
    "Prefix": "firehoseTest/!{partitionKeyFromQuery:s3Prefix}",
    "ErrorOutputPrefix": "firehoseTest-errors/!{firehose:error-output-type}/",
    "BufferingHints": {"IntervalInSeconds": 60, "SizeInMBs": 64},
    "DynamicPartitioningConfiguration": {"Enabled": True},
    "ProcessingConfiguration": {
        "Enabled": True,
        "Processors": [
            {
                "Type": "MetadataExtraction",
                "Parameters": [
                    {
                        "ParameterName": "MetadataExtractionQuery",
                        "ParameterValue": "{s3Prefix: .tableName}",
                    },
                    {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"},
                ],
            }
        ],
    },
}


async def test_recorded_describe_has_aws_defaults(api: Firehose) -> None:
    made = await api.call(
        "create_delivery_stream",
        DeliveryStreamName="ds",
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration=PARTITIONED,
    )
    assert made["DeliveryStreamARN"].endswith(":deliverystream/ds")
    described = (await api.call("describe_delivery_stream", DeliveryStreamName="ds"))[
        "DeliveryStreamDescription"
    ]
    assert described["DeliveryStreamStatus"] == "ACTIVE"
    assert described["VersionId"] == "1"
    assert described["HasMoreDestinations"] is False
    (destination,) = described["Destinations"]
    assert destination["DestinationId"] == "destinationId-000000000001"
    extended = destination["ExtendedS3DestinationDescription"]
    # As recorded from AWS:
    assert extended["CloudWatchLoggingOptions"] == {"Enabled": False}
    assert extended["EncryptionConfiguration"] == {"NoEncryptionConfig": "NoEncryption"}
    assert extended["CompressionFormat"] == "UNCOMPRESSED"
    assert extended["S3BackupMode"] == "Disabled"
    assert extended["DynamicPartitioningConfiguration"] == {
        "Enabled": True,
        "RetryOptions": {"DurationInSeconds": 300},
    }
    assert extended["BufferingHints"] == {"IntervalInSeconds": 60, "SizeInMBs": 64}
    plain = destination["S3DestinationDescription"]
    assert plain["Prefix"] == PARTITIONED["Prefix"] and "ProcessingConfiguration" not in plain
    names = await api.call("list_delivery_streams")
    assert names == {"DeliveryStreamNames": ["ds"], "HasMoreDeliveryStreams": False}


async def test_put_record_batch_buffers_and_partitions(api: Firehose) -> None:
    await api.call(
        "create_delivery_stream",
        DeliveryStreamName="ds",
        ExtendedS3DestinationConfiguration=PARTITIONED,
    )
    records = [
        {"Data": json.dumps({"tableName": t, "n": n}).encode()}
        for n in range(5)
        for t in ("a", "b")
    ]
    records.append({"Data": b"not json"})
    answer = await api.call("put_record_batch", DeliveryStreamName="ds", Records=records)
    assert answer["FailedPutCount"] == 0 and len(answer["RequestResponses"]) == 11
    assert all("RecordId" in r for r in answer["RequestResponses"])
    single = await api.call(
        "put_record", DeliveryStreamName="ds", Record={"Data": b'{"tableName": "a"}'}
    )
    assert single["RecordId"] and single["Encrypted"] is False
    from plugins.firehose.target import FirehoseTarget

    target = api.runtime.resource("ds")
    assert isinstance(target, FirehoseTarget) and target.stream is not None
    await target.stream.flush()
    found = objects(api.root / "buckets" / "lake")
    tops = sorted({key.split("-")[0] for key in found})
    assert any(key.startswith("firehoseTest/ads-1-") for key in found)
    assert any(key.startswith("firehoseTest/bds-1-") for key in found)
    assert any(key.startswith("firehoseTest-errors/partitioning-failed/") for key in found), tops


async def test_limits_and_refusals(api: Firehose) -> None:
    await api.call(
        "create_delivery_stream",
        DeliveryStreamName="ds",
        ExtendedS3DestinationConfiguration={"BucketARN": "arn:aws:s3:::lake", "RoleARN": ROLE},
    )
    too_many = await api.error(
        "put_record_batch", DeliveryStreamName="ds", Records=[{"Data": b"x"}] * 501
    )
    assert too_many["Error"]["Code"] == "ValidationException"
    big = [{"Data": b"x" * 1_000_000}] * 5
    too_big = await api.error("put_record_batch", DeliveryStreamName="ds", Records=big)
    assert too_big["Error"]["Code"] == "InvalidArgumentException"
    assert "4 MiB" in too_big["Error"]["Message"]
    record_too_big = await api.error(
        "put_record", DeliveryStreamName="ds", Record={"Data": b"x" * 1_024_001}
    )
    assert record_too_big["Error"]["Code"] == "ValidationException"
    missing = await api.error("put_record", DeliveryStreamName="nope", Record={"Data": b"x"})
    assert missing["Error"]["Code"] == "ResourceNotFoundException"
    assert "nope" in missing["Error"]["Message"]
    again = await api.error(
        "create_delivery_stream",
        DeliveryStreamName="ds",
        ExtendedS3DestinationConfiguration={"BucketARN": "arn:aws:s3:::lake", "RoleARN": ROLE},
    )
    assert again["Error"]["Code"] == "ResourceInUseException"
    bad_prefix = await api.error(
        "create_delivery_stream",
        DeliveryStreamName="other",
        ExtendedS3DestinationConfiguration={
            "BucketARN": "arn:aws:s3:::lake",
            "RoleARN": ROLE,
            "Prefix": "x/!{nonsense:y}/",
            "ErrorOutputPrefix": "e/!{firehose:error-output-type}",
        },
    )
    assert bad_prefix["Error"]["Code"] == "InvalidArgumentException"
    assert "unknown namespace 'nonsense'" in bad_prefix["Error"]["Message"]
    no_key = dict(PARTITIONED, Prefix="plain/")
    refused = await api.error(
        "create_delivery_stream",
        DeliveryStreamName="other",
        ExtendedS3DestinationConfiguration=no_key,
    )
    assert "must contain at least one" in refused["Error"]["Message"]


async def test_update_destination_checks_the_version(api: Firehose) -> None:
    await api.call(
        "create_delivery_stream",
        DeliveryStreamName="ds",
        ExtendedS3DestinationConfiguration={"BucketARN": "arn:aws:s3:::lake", "RoleARN": ROLE},
    )
    await api.call(
        "update_destination",
        DeliveryStreamName="ds",
        CurrentDeliveryStreamVersionId="1",
        DestinationId="destinationId-000000000001",
        ExtendedS3DestinationUpdate={"CompressionFormat": "GZIP", "Prefix": "v2/"},
    )
    described = (await api.call("describe_delivery_stream", DeliveryStreamName="ds"))[
        "DeliveryStreamDescription"
    ]
    assert described["VersionId"] == "2" and "LastUpdateTimestamp" in described
    extended = described["Destinations"][0]["ExtendedS3DestinationDescription"]
    assert extended["CompressionFormat"] == "GZIP" and extended["Prefix"] == "v2/"
    stale = await api.error(
        "update_destination",
        DeliveryStreamName="ds",
        CurrentDeliveryStreamVersionId="1",
        DestinationId="destinationId-000000000001",
        ExtendedS3DestinationUpdate={"CompressionFormat": "ZIP"},
    )
    assert stale["Error"]["Code"] == "ConcurrentModificationException"
    await api.call("put_record", DeliveryStreamName="ds", Record={"Data": b"hello"})
    from plugins.firehose.target import FirehoseTarget

    target = api.runtime.resource("ds")
    assert isinstance(target, FirehoseTarget) and target.stream is not None
    await target.stream.flush()
    found = objects(api.root / "buckets" / "lake", "GZIP")
    (key,) = found
    assert key.startswith("v2/") and "/ds-2-" in key and key.endswith(".gz")
    assert found[key] == b"hello"


async def test_tags_and_delete(api: Firehose) -> None:
    await api.call(
        "create_delivery_stream",
        DeliveryStreamName="ds",
        ExtendedS3DestinationConfiguration={"BucketARN": "arn:aws:s3:::lake", "RoleARN": ROLE},
        Tags=[{"Key": "team", "Value": "data"}],
    )
    await api.call(
        "tag_delivery_stream", DeliveryStreamName="ds", Tags=[{"Key": "env", "Value": "dev"}]
    )
    tags = await api.call("list_tags_for_delivery_stream", DeliveryStreamName="ds")
    assert tags["Tags"] == [{"Key": "env", "Value": "dev"}, {"Key": "team", "Value": "data"}]
    await api.call("untag_delivery_stream", DeliveryStreamName="ds", TagKeys=["team"])
    tags = await api.call("list_tags_for_delivery_stream", DeliveryStreamName="ds")
    assert tags["Tags"] == [{"Key": "env", "Value": "dev"}]
    await api.call("delete_delivery_stream", DeliveryStreamName="ds")
    assert (await api.call("list_delivery_streams"))["DeliveryStreamNames"] == []
    assert "ds" not in api.runtime.resource_names()
    gone = await api.error("describe_delivery_stream", DeliveryStreamName="ds")
    assert gone["Error"]["Code"] == "ResourceNotFoundException"


async def test_an_api_made_stream_comes_back_after_a_restart(tmp_path: Path) -> None:
    async for served in _serve(tmp_path):
        await served.call(
            "create_delivery_stream",
            DeliveryStreamName="ds",
            ExtendedS3DestinationConfiguration={"BucketARN": "arn:aws:s3:::lake", "RoleARN": ROLE},
        )
        await served.call("put_record", DeliveryStreamName="ds", Record={"Data": b"kept\n"})
    assert objects(tmp_path / "buckets") == {} if (tmp_path / "buckets").exists() else True
    async for served in _serve(tmp_path):
        await served.call("put_record", DeliveryStreamName="ds", Record={"Data": b"more\n"})
        from plugins.firehose.target import FirehoseTarget

        target = served.runtime.resource("ds")
        assert isinstance(target, FirehoseTarget) and target.stream is not None
        await target.stream.flush()
        await asyncio.sleep(0)
    assert sorted(lines(objects(tmp_path / "buckets" / "lake"))) == [b"kept", b"more"]
    assert base64  # (imported for symmetry with the other API tests)


async def test_an_api_made_stream_is_back_at_start_without_an_api_call(tmp_path: Path) -> None:
    import time

    from pipelines.clock import ManualClock

    async for served in _serve(tmp_path):
        await served.call(
            "create_delivery_stream",
            DeliveryStreamName="ds",
            ExtendedS3DestinationConfiguration={
                "BucketARN": "arn:aws:s3:::lake",
                "RoleARN": ROLE,
                "BufferingHints": {"IntervalInSeconds": 60, "SizeInMBs": 1},
            },
        )
        await served.call("put_record", DeliveryStreamName="ds", Record={"Data": b"kept\n"})
    # Started again with no endpoint at all: the stream is a resource at
    # once, and its buffer goes out when due.
    clock = ManualClock(time.time() + 1)
    runtime = Runtime(state_path=tmp_path / "state.db", plugins=PLUGINS, clock=clock)
    async with runtime:
        assert "ds" in runtime.resource_names()
        assert runtime.resource_arn("ds").endswith(":deliverystream/ds")  # a rule can target it

        async def settle() -> None:
            for _ in range(5):
                await asyncio.sleep(0.01)

        await clock.advance(120, quiet=settle)
        assert lines(objects(tmp_path / "buckets" / "lake")) == [b"kept"]


HTTP_ENDPOINT = {
    "EndpointConfiguration": {
        "Url": "https://collector.example.com/in",
        "Name": "collector",
        "AccessKey": "s3cret",
    },
    "BufferingHints": {"SizeInMBs": 2, "IntervalInSeconds": 120},
    "RequestConfiguration": {
        "ContentEncoding": "GZIP",
        "CommonAttributes": [{"AttributeName": "env", "AttributeValue": "test"}],
    },
    "S3BackupMode": "FailedDataOnly",
    "S3Configuration": {"BucketARN": "arn:aws:s3:::backup", "RoleARN": ROLE},
    "RoleARN": ROLE,
}


async def test_an_http_endpoint_destination_through_the_api(api: Firehose) -> None:
    await api.call(
        "create_delivery_stream",
        DeliveryStreamName="to-http",
        HttpEndpointDestinationConfiguration=HTTP_ENDPOINT,
    )
    described = (await api.call("describe_delivery_stream", DeliveryStreamName="to-http"))[
        "DeliveryStreamDescription"
    ]
    (destination,) = described["Destinations"]
    http = destination["HttpEndpointDestinationDescription"]
    # The access key is not described (AWS keeps it to itself); defaults filled in.
    assert http["EndpointConfiguration"] == {
        "Url": "https://collector.example.com/in",
        "Name": "collector",
    }
    assert http["BufferingHints"] == {"SizeInMBs": 2, "IntervalInSeconds": 120}
    assert http["RetryOptions"] == {"DurationInSeconds": 300}
    assert http["S3BackupMode"] == "FailedDataOnly"
    assert http["RequestConfiguration"]["ContentEncoding"] == "GZIP"
    assert http["S3DestinationDescription"]["BucketARN"] == "arn:aws:s3:::backup"
    await api.call(
        "update_destination",
        DeliveryStreamName="to-http",
        CurrentDeliveryStreamVersionId="1",
        DestinationId="destinationId-000000000001",
        HttpEndpointDestinationUpdate={
            "RetryOptions": {"DurationInSeconds": 60},
            "S3BackupMode": "AllData",
            "S3Update": {"Prefix": "all/"},
        },
    )
    described = (await api.call("describe_delivery_stream", DeliveryStreamName="to-http"))[
        "DeliveryStreamDescription"
    ]
    http = described["Destinations"][0]["HttpEndpointDestinationDescription"]
    assert described["VersionId"] == "2" and http["RetryOptions"] == {"DurationInSeconds": 60}
    assert http["S3BackupMode"] == "AllData"
    assert http["S3DestinationDescription"]["Prefix"] == "all/"
    from plugins.firehose.target import FirehoseTarget

    target = api.runtime.resource("to-http")
    assert isinstance(target, FirehoseTarget) and target.stream is not None
    assert target.stream.destination.http is not None
    assert target.stream.destination.http.backup_all
    put = await api.call("put_record", DeliveryStreamName="to-http", Record={"Data": b"x"})
    assert put["RecordId"]
    # The model takes https only (AWS's rule; a config file may name http://).
    refused = await api.error(
        "create_delivery_stream",
        DeliveryStreamName="plain",
        HttpEndpointDestinationConfiguration={
            **HTTP_ENDPOINT,
            "EndpointConfiguration": {"Url": "http://collector.example.com/in"},
        },
    )
    assert refused["Error"]["Code"] in ("ValidationException", "InvalidArgumentException")
    too_big = await api.error(
        "create_delivery_stream",
        DeliveryStreamName="big",
        HttpEndpointDestinationConfiguration={**HTTP_ENDPOINT, "BufferingHints": {"SizeInMBs": 65}},
    )
    assert too_big["Error"]["Code"] in ("ValidationException", "InvalidArgumentException")
