"""AWS's query protocol (form in, XML out) read and written by the model, checked with boto3.

The service here is the tests' own: a few SNS operations over a dict,
registered through the ``register_services`` hook as a plugin would. It
exercises the protocol layer (maps, lists, nested structures, booleans,
errors in the model's codes and statuses); the real SNS operations are the
topic plugin's.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pluggy
import pytest

from pipelines.api import ApiError, ApiServer, Call, Service, served_services
from pipelines.hookspecs import hookimpl
from pipelines.runtime import Runtime

from .recorder import plugin_manager

sns = Service("sns")
TOPICS: dict[str, dict[str, Any]] = {}


@sns.operation()
async def create_topic(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    arn = f"arn:aws:sns:{call.region}:{call.account}:{params['Name']}"
    TOPICS[arn] = {"Attributes": params.get("Attributes", {}), "Tags": params.get("Tags", [])}
    return {"TopicArn": arn}


@sns.operation()
async def list_topics(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    return {"Topics": [{"TopicArn": arn} for arn in sorted(TOPICS)]}


@sns.operation()
async def get_topic_attributes(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    topic = TOPICS.get(params["TopicArn"])
    if topic is None:
        raise ApiError("NotFoundException", "Topic does not exist")
    return {"Attributes": {**topic["Attributes"], "TopicArn": params["TopicArn"]}}


@sns.operation()
async def publish(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    TOPICS[params["TopicArn"]].setdefault("published", []).append(params)
    return {"MessageId": f"m-{len(TOPICS[params['TopicArn']]['published'])}"}


class _Plugin:
    @hookimpl
    def register_services(self, register: Callable[[Service], None]) -> None:
        register(sns)


def _plugins() -> pluggy.PluginManager:
    manager = plugin_manager()
    manager.unregister(name="topic")  # the real sns (tests/test_api_sns.py); this is the stand-in
    manager.register(_Plugin(), name="test-sns")
    return manager


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Any]:
    TOPICS.clear()
    plugins = _plugins()
    runtime = Runtime(plugins=plugins)
    server = ApiServer(runtime, served_services(plugins), "127.0.0.1", 0)
    await server.start()
    try:
        async with runtime:
            yield boto3.client(
                "sns",
                endpoint_url=server.url,
                region_name="eu-west-1",
                aws_access_key_id="AKID",
                aws_secret_access_key="secret",
            )
    finally:
        await server.close()


async def test_maps_lists_and_nested_structures_travel_both_ways(client: Any) -> None:
    made = await asyncio.to_thread(
        client.create_topic,
        Name="orders",
        Attributes={"DisplayName": "Orders & more", "FifoTopic": "false"},
        Tags=[{"Key": "team", "Value": "shop"}, {"Key": "tier", "Value": "1"}],
    )
    assert made["TopicArn"] == "arn:aws:sns:eu-west-1:000000000000:orders"
    stored = TOPICS[made["TopicArn"]]
    assert stored["Attributes"] == {"DisplayName": "Orders & more", "FifoTopic": "false"}
    assert stored["Tags"] == [{"Key": "team", "Value": "shop"}, {"Key": "tier", "Value": "1"}]
    await asyncio.to_thread(client.create_topic, Name="audit")
    listed = await asyncio.to_thread(client.list_topics)
    assert [t["TopicArn"] for t in listed["Topics"]] == [
        "arn:aws:sns:eu-west-1:000000000000:audit",
        made["TopicArn"],
    ]
    attributes = await asyncio.to_thread(client.get_topic_attributes, TopicArn=made["TopicArn"])
    assert attributes["Attributes"] == {
        "DisplayName": "Orders & more",  # escaped in the XML, read back whole
        "FifoTopic": "false",
        "TopicArn": made["TopicArn"],
    }
    published = await asyncio.to_thread(
        client.publish,
        TopicArn=made["TopicArn"],
        Message="<hello>",
        MessageAttributes={
            "total": {"DataType": "Number", "StringValue": "12"},
            "raw": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        },
    )
    assert published["MessageId"] == "m-1"
    (params,) = stored["published"]
    assert params["Message"] == "<hello>"
    assert params["MessageAttributes"] == {
        "total": {"DataType": "Number", "StringValue": "12"},
        "raw": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
    }


async def test_errors_carry_the_models_query_code_and_status(client: Any) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await asyncio.to_thread(
            client.get_topic_attributes, TopicArn="arn:aws:sns:eu-west-1:000000000000:nope"
        )
    response = raised.value.response
    assert response["Error"] == {
        "Type": "Sender",
        "Code": "NotFound",
        "Message": "Topic does not exist",
    }
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(botocore.exceptions.ClientError) as unserved:
        await asyncio.to_thread(client.list_subscriptions)
    assert unserved.value.response["Error"]["Code"] == "NotImplemented"
    assert unserved.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501


async def test_a_form_with_a_missing_member_or_an_unknown_action_is_refused(client: Any) -> None:
    url = client.meta.endpoint_url

    def post(form: dict[str, str]) -> tuple[int, str]:
        request = urllib.request.Request(
            url,
            data=urllib.parse.urlencode(form).encode(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Authorization": "AWS4-HMAC-SHA256 Credential=AKID/20261204/eu-west-1/sns/"
                "aws4_request, SignedHeaders=host, Signature=00",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    status, body = await asyncio.to_thread(post, {"Action": "CreateTopic", "Version": "2010-03-31"})
    assert status == 400
    assert "<Code>ValidationError</Code>" in body
    assert "Value null at 'name' failed to satisfy constraint: Member must not be null" in body
    status, body = await asyncio.to_thread(post, {"Action": "Explode"})
    assert status == 400
    assert "<Code>InvalidAction</Code>" in body
    status, body = await asyncio.to_thread(post, {"Action": "ListTopics", "Version": "2010-03-31"})
    assert status == 200
    assert body.startswith('<ListTopicsResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">')
    assert "<ListTopicsResult><Topics></Topics></ListTopicsResult>" in body


async def test_a_query_service_refuses_a_bad_signature_with_its_own_codes() -> None:
    from pipelines.api.server import ApiSettings
    from pipelines.api.sigv4 import AccessKey

    plugins = _plugins()
    runtime = Runtime(plugins=plugins)
    settings = ApiSettings(access_keys={"AKIDQ": AccessKey("right", "000000000000")})
    server = ApiServer(runtime, served_services(plugins), settings=settings)
    await server.start()
    try:
        async with runtime:

            def client(key: str, secret: str) -> Any:
                return boto3.client(
                    "sns",
                    endpoint_url=server.url,
                    region_name="eu-west-1",
                    aws_access_key_id=key,
                    aws_secret_access_key=secret,
                )

            listed = await asyncio.to_thread(client("AKIDQ", "right").list_topics)
            assert listed["Topics"] == []
            for key, secret, code in (
                ("AKIDQ", "wrong", "SignatureDoesNotMatch"),
                ("AKIDX", "right", "InvalidClientTokenId"),
            ):
                with pytest.raises(botocore.exceptions.ClientError) as raised:
                    await asyncio.to_thread(client(key, secret).list_topics)
                assert raised.value.response["Error"]["Code"] == code
                assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    finally:
        await server.close()
