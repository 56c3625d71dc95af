"""The REST-JSON protocol over HTTP: boto3 against an ApiServer serving a
small service registered here on botocore's lambda model.

Lambda's model has every place a rest-json member travels: URI labels
(percent-encoded ARNs), query strings (an integer, a literal ``?List=ALL``
in the template), headers (a base64 one), a blob payload in and out, a
status code and headers in the answer. What botocore reads back is what
the operation answered, so reading and writing both hold to botocore's
serializer and parser.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.api import ApiError, ApiServer, Call, Service
from pipelines.runtime import Runtime

from .apiclient import aws_call, aws_refusal, boto

lambda_ = Service("lambda")
SEEN: list[tuple[str, dict[str, Any]]] = []


@lambda_.operation()
async def invoke(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    SEEN.append((call.operation, params))
    if params["FunctionName"] == "missing":
        raise ApiError("ResourceNotFoundException", "Function not found: missing")
    return {
        "StatusCode": 202 if params.get("InvocationType") == "Event" else 200,
        "Payload": b'{"echo": ' + params.get("Payload", b"null") + b"}",
        "ExecutedVersion": params.get("Qualifier", "$LATEST"),
        "FunctionError": "Unhandled" if params["FunctionName"] == "failing" else None,
    }


@lambda_.operation()
async def list_provisioned_concurrency_configs(
    call: Call, params: dict[str, Any]
) -> dict[str, Any]:
    SEEN.append((call.operation, params))
    return {"ProvisionedConcurrencyConfigs": [], "NextMarker": "next"}


@lambda_.operation()
async def get_layer_version_by_arn(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    SEEN.append((call.operation, params))
    return {"LayerVersionArn": params["Arn"], "Version": 3}


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    SEEN.clear()
    runtime = Runtime(state_path=tmp_path / "state.db")
    server = ApiServer(runtime, {"lambda": lambda_}, "127.0.0.1", 0)
    await server.start()
    try:
        async with runtime:
            yield server.url
    finally:
        await server.close()


async def test_members_from_the_uri_query_headers_and_payload(url: str) -> None:
    client = boto("lambda", url)
    answer = await aws_call(
        client,
        "invoke",
        FunctionName="arn:aws:lambda:us-east-1:123456789012:function:orders",
        InvocationType="RequestResponse",
        ClientContext="eyJhIjoxfQ==",
        Qualifier="live",
        Payload=b'{"n": 1}',
    )
    operation, params = SEEN[-1]
    assert operation == "Invoke"
    assert params == {
        # The label was percent-encoded (':'); the payload came as its bytes.
        "FunctionName": "arn:aws:lambda:us-east-1:123456789012:function:orders",
        "InvocationType": "RequestResponse",
        "ClientContext": "eyJhIjoxfQ==",
        "Qualifier": "live",
        "Payload": b'{"n": 1}',
    }
    assert answer["StatusCode"] == 200
    assert answer["ExecutedVersion"] == "live"
    assert answer["Payload"].read() == b'{"echo": {"n": 1}}'
    assert "FunctionError" not in answer


async def test_status_code_and_header_members_in_the_answer(url: str) -> None:
    client = boto("lambda", url)
    answer = await aws_call(client, "invoke", FunctionName="failing", InvocationType="Event")
    assert answer["StatusCode"] == 202
    assert answer["FunctionError"] == "Unhandled"
    assert answer["Payload"].read() == b'{"echo": null}'


async def test_query_integers_and_literal_query_parameters_route(url: str) -> None:
    client = boto("lambda", url)
    answer = await aws_call(
        client, "list_provisioned_concurrency_configs", FunctionName="orders", MaxItems=5
    )
    assert answer == {"ProvisionedConcurrencyConfigs": [], "NextMarker": "next"}
    assert SEEN[-1] == (
        "ListProvisionedConcurrencyConfigs",
        {"FunctionName": "orders", "MaxItems": 5},
    )
    arn = "arn:aws:lambda:us-east-1:123456789012:layer:tools:3"
    answer = await aws_call(client, "get_layer_version_by_arn", Arn=arn)
    assert answer == {"LayerVersionArn": arn, "Version": 3}


async def test_errors_in_the_models_status_and_shape(url: str) -> None:
    client = boto("lambda", url, parameter_validation=False)
    error = (await aws_refusal(client, "invoke", FunctionName="missing")).response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert error["Error"]["Code"] == "ResourceNotFoundException"
    assert error["Error"]["Message"] == "Function not found: missing"
    error = (
        await aws_refusal(
            client, "list_provisioned_concurrency_configs", FunctionName="orders", MaxItems=0
        )
    ).response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Error"]["Code"] == "ValidationException"
    assert error["Error"]["Message"] == (
        "1 validation error detected: Value '0' at 'maxItems' failed to satisfy constraint:"
        " Member must have value greater than or equal to 1"
    )


def _get(url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    request = urllib.request.Request(url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.headers, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read())


async def test_unsigned_requests_route_by_path_and_bad_values_are_named(url: str) -> None:
    # No credential scope: the service is the one whose operations have the path.
    status, _, body = await asyncio.to_thread(
        _get, url, "/2019-09-30/functions/orders/provisioned-concurrency?List=ALL&MaxItems=2"
    )
    assert (status, body["NextMarker"]) == (200, "next")
    status, headers, body = await asyncio.to_thread(
        _get, url, "/2019-09-30/functions/orders/provisioned-concurrency?List=ALL&MaxItems=many"
    )
    assert status == 400
    assert headers["x-amzn-ErrorType"] == "SerializationException"
    assert body == {"message": "STRING_VALUE can not be converted to Integer (at 'maxItems')"}
    signed = {
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKID/20261204/us-east-1/lambda/"
        "aws4_request, SignedHeaders=host, Signature=00"
    }
    status, headers, body = await asyncio.to_thread(_get, url, "/2015-03-31/nothing", signed)
    assert status == 404
    assert headers["x-amzn-ErrorType"] == "UnknownOperationException"
