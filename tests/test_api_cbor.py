"""Smithy RPC v2 CBOR on the endpoint, read and written by botocore's own CBOR code.

The service here is the tests' own: two CloudWatch operations over a list,
served directly, so the protocol layer is tested apart from the real
CloudWatch operations (tests/test_api_cloudwatch.py): a blob answered as a
byte string, timestamps in and out as tag 1, errors as CBOR maps.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import boto3
import botocore.exceptions
import cbor2
import pytest
from botocore.parsers import create_parser
from botocore.serialize import create_serializer

from pipelines.api import ApiError, ApiServer, Call, Service
from pipelines.runtime import Runtime

from .recorder import plugin_manager

CBOR = "smithy-rpc-v2-cbor"
service = Service("cloudwatch")
SEEN: list[dict[str, Any]] = []


@service.operation()
async def get_metric_widget_image(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    SEEN.append(params)
    return {"MetricWidgetImage": b"\x89PNG\x00\xff"}


@service.operation()
async def describe_alarm_history(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    SEEN.append(params)
    if params.get("AlarmName") == "missing":
        raise ApiError("ResourceNotFound", "no such alarm")
    return {
        "AlarmHistoryItems": [
            {"AlarmName": "a", "Timestamp": params["StartDate"], "HistorySummary": "s"}
        ]
    }


@service.operation()
async def delete_alarms(call: Call, params: dict[str, Any]) -> None:
    SEEN.append(params)


def protocol_client(url: str, protocol: str) -> Any:
    """A boto3 CloudWatch client speaking ``protocol``: botocore picks JSON for
    CloudWatch; its serializer and parser for the others are swapped in."""
    client = boto3.client(
        "cloudwatch",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
    )
    if protocol != "json":
        client.meta.service_model.resolved_protocol = protocol  # its endpoint's parser
        client._serializer = create_serializer(protocol, include_validation=True)
        client._response_parser = create_parser(protocol)
    return client


@pytest.fixture
async def url() -> AsyncIterator[str]:
    SEEN.clear()
    runtime = Runtime(plugins=plugin_manager())
    server = ApiServer(runtime, {"cloudwatch": service}, "127.0.0.1", 0)
    await server.start()
    try:
        yield server.url
    finally:
        await server.close()


async def test_botocore_cbor_client_round_trips_blobs_and_timestamps(url: str) -> None:
    client = protocol_client(url, CBOR)
    image = await asyncio.to_thread(client.get_metric_widget_image, MetricWidget="{}")
    assert image["MetricWidgetImage"] == b"\x89PNG\x00\xff"
    assert image["ResponseMetadata"]["HTTPHeaders"]["smithy-protocol"] == "rpc-v2-cbor"
    assert image["ResponseMetadata"]["HTTPHeaders"]["content-type"] == "application/cbor"
    start = dt.datetime(2026, 5, 1, 12, 30, 15, 500000, tzinfo=dt.UTC)
    history = await asyncio.to_thread(client.describe_alarm_history, StartDate=start)
    assert SEEN[-1]["StartDate"] == start.timestamp()  # tag 1 read as epoch seconds
    assert history["AlarmHistoryItems"][0]["Timestamp"] == start
    deleted = await asyncio.to_thread(client.delete_alarms, AlarmNames=["a"])
    assert SEEN[-1] == {"AlarmNames": ["a"]}
    assert "content-type" not in deleted["ResponseMetadata"]["HTTPHeaders"]  # no output, no body


async def test_errors_are_cbor_maps_with_the_query_code_and_the_query_mode_status(
    url: str,
) -> None:
    client = protocol_client(url, CBOR)
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await asyncio.to_thread(client.describe_alarm_history, AlarmName="missing")
    error = raised.value.response
    # botocore sends x-amzn-query-mode: the model's status (404) and query code.
    assert error["Error"] == {
        "Code": "ResourceNotFound",
        "Message": "no such alarm",
        "Type": "Sender",
        "QueryErrorCode": "ResourceNotFound",
    }
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 404

    status, headers, body = await _post(
        url, "DescribeAlarmHistory", cbor2.dumps({"AlarmName": "missing"})
    )
    # Without query mode every modelled error is 400, as AWS answers RPC v2.
    assert status == 400
    assert headers["Smithy-Protocol"] == "rpc-v2-cbor"
    assert headers["x-amzn-query-error"] == "ResourceNotFound;Sender"
    assert cbor2.loads(body) == {"__type": "ResourceNotFound", "message": "no such alarm"}

    status, _, body = await _post(url, "DescribeAlarmHistory", b"\xff\x00")
    assert status == 400
    assert cbor2.loads(body)["__type"] == "SerializationException"
    status, _, body = await _post(url, "DescribeAlarmHistory", cbor2.dumps({"MaxRecords": 0}))
    assert cbor2.loads(body) == {
        "__type": "ValidationException",
        "message": "1 validation error detected: Value '0' at 'maxRecords' failed to satisfy"
        " constraint: Member must have value greater than or equal to 1",
    }
    dashboard = cbor2.dumps({"DashboardName": "d", "DashboardBody": "{}"})
    status, _, body = await _post(url, "PutDashboard", dashboard)
    assert (status, cbor2.loads(body)["__type"]) == (501, "NotImplemented")


async def _post(url: str, operation: str, body: bytes) -> tuple[int, Any, bytes]:
    request = urllib.request.Request(
        f"{url}/service/GraniteServiceVersion20100801/operation/{operation}",
        data=body,
        headers={"Smithy-Protocol": "rpc-v2-cbor", "Content-Type": "application/cbor"},
    )

    def send() -> tuple[int, Any, bytes]:
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()

    return await asyncio.to_thread(send)
