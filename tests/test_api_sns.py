"""SNS's API (the topic plugin's ``sns`` service) through boto3 and the AWS CLI.

The recorded cases (``RECORDED_*``) are AWS's answers as LocalStack's tests
recorded them (``tests/aws/services/sns/test_sns.snapshot.json`` and
``test_sns_filter_policy.snapshot.json`` of localstack/localstack): each row
names its snapshot key; the request is rebuilt here and the code, status and
message compared (a filter policy's message up to Jackson's "at [Source: ...]"
position, which is the JVM parser's). See docs/conformance.md.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from pipelines.api import ApiServer, served_services
from pipelines.runtime import Runtime
from plugins.queue.store import QueueStore
from plugins.topic.endpoints import string_to_sign

from .apiclient import aws_call, aws_cli, aws_refusal, boto
from .helpers import eventually
from .recorder import plugin_manager
from .test_api_cli import _start

PLUGINS = plugin_manager()
QUEUE_ARN = "arn:aws:sqs:us-east-1:000000000000:orders"
FIFO_QUEUE_ARN = "arn:aws:sqs:us-east-1:000000000000:orders.fifo"


class Sns:
    """A started runtime (a queue, a FIFO queue, a dead-letter queue, a YAML
    topic subscribed by a recorder) and a boto3 sns client for its endpoint."""

    def __init__(self, runtime: Runtime, server: ApiServer) -> None:
        self.runtime = runtime
        self.client = boto("sns", server.url)

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        return await aws_call(self.client, operation, **params)

    async def error(self, operation: str, **params: Any) -> tuple[int, dict[str, Any]]:
        response = (await aws_refusal(self.client, operation, **params)).response
        return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]

    async def topic(self, name: str = "news", **params: Any) -> str:
        return str((await self.call("create_topic", Name=name, **params))["TopicArn"])

    async def queue_subscription(
        self, topic: str, queue: str = QUEUE_ARN, **attributes: str
    ) -> str:
        made = await self.call(
            "subscribe",
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=queue,
            Attributes=attributes,
            ReturnSubscriptionArn=True,
        )
        return str(made["SubscriptionArn"])


@pytest.fixture
async def sns(tmp_path: Path) -> AsyncIterator[Sns]:
    runtime = Runtime(state_path=tmp_path / "state.db", plugins=PLUGINS)
    runtime.add_resource("orders", "queue", {})
    runtime.add_resource("orders.fifo", "queue", {})
    runtime.add_resource("dead", "queue", {})
    runtime.add_resource("audit", "recorder", {})
    runtime.add_resource("fn", "function", {"function": "tests.functions:echo"})
    runtime.add_resource("declared", "topic", {"subscriptions": [{"id": "a", "resource": "audit"}]})
    server = ApiServer(runtime, served_services(PLUGINS), "127.0.0.1", 0)
    await server.start()
    try:
        async with runtime:
            yield Sns(runtime, server)
    finally:
        await server.close()


async def received(runtime: Runtime, queue: str, count: int = 10) -> list[Any]:
    store = runtime.resource(queue).store  # type: ignore[attr-defined]
    return list(await store.receive(queue, count))


# -- topics --------------------------------------------------------------------


async def test_topics_yaml_and_api_alike_attributes_and_idempotence(sns: Sns) -> None:
    arn = await sns.topic(
        "news", Attributes={"DisplayName": "News"}, Tags=[{"Key": "t", "Value": "1"}]
    )
    assert arn == "arn:aws:sns:us-east-1:000000000000:news"
    # the same name and attributes: the same topic; no attributes: the same too
    assert await sns.topic("news", Attributes={"DisplayName": "News"}) == arn
    assert await sns.topic("news", Attributes={"FifoTopic": "false"}) == arn
    assert await sns.topic("news") == arn
    listed = await sns.call("list_topics")
    assert [t["TopicArn"] for t in listed["Topics"]] == [
        "arn:aws:sns:us-east-1:000000000000:declared",
        arn,
    ]
    attributes = (await sns.call("get_topic_attributes", TopicArn=arn))["Attributes"]
    assert attributes["DisplayName"] == "News"
    assert attributes["Owner"] == "000000000000"
    assert attributes["SubscriptionsConfirmed"] == "0"
    assert attributes["SubscriptionsPending"] == "0"
    assert attributes["SubscriptionsDeleted"] == "0"
    policy = json.loads(attributes["Policy"])
    assert policy["Statement"][0]["Resource"] == arn
    assert "http" in json.loads(attributes["EffectiveDeliveryPolicy"])
    assert "FifoTopic" not in attributes  # AWS shows it on FIFO topics only
    await sns.call(
        "set_topic_attributes", TopicArn=arn, AttributeName="DisplayName", AttributeValue="N2"
    )
    attributes = (await sns.call("get_topic_attributes", TopicArn=arn))["Attributes"]
    assert attributes["DisplayName"] == "N2"
    declared = await sns.call("get_topic_attributes", TopicArn=listed["Topics"][0]["TopicArn"])
    assert declared["Attributes"]["SubscriptionsConfirmed"] == "1"
    tags = await sns.call("list_tags_for_resource", ResourceArn=arn)
    assert tags["Tags"] == [{"Key": "t", "Value": "1"}]
    await sns.call("tag_resource", ResourceArn=arn, Tags=[{"Key": "u", "Value": "2"}])
    await sns.call("untag_resource", ResourceArn=arn, TagKeys=["t"])
    assert (await sns.call("list_tags_for_resource", ResourceArn=arn))["Tags"] == [
        {"Key": "u", "Value": "2"}
    ]
    # the API's topic is a resource: a rule can target it by its ARN
    assert sns.runtime.resource_arn("news") == arn
    await sns.call("delete_topic", TopicArn=arn)
    await sns.call("delete_topic", TopicArn=arn)  # twice: no error, as AWS
    assert "news" not in sns.runtime.resource_names()


async def test_list_topics_pages_by_100(sns: Sns) -> None:
    for n in range(120):
        await sns.call("create_topic", Name=f"t{n:03d}")
    first = await sns.call("list_topics")
    assert len(first["Topics"]) == 100
    second = await sns.call("list_topics", NextToken=first["NextToken"])
    assert len(second["Topics"]) == 21 and "NextToken" not in second


async def test_fifo_topics(sns: Sns) -> None:
    arn = await sns.topic("jobs.fifo", Attributes={"FifoTopic": "true"})
    attributes = (await sns.call("get_topic_attributes", TopicArn=arn))["Attributes"]
    assert attributes["FifoTopic"] == "true"
    assert attributes["ContentBasedDeduplication"] == "false"
    await sns.call(
        "set_topic_attributes",
        TopicArn=arn,
        AttributeName="ContentBasedDeduplication",
        AttributeValue="true",
    )
    await sns.queue_subscription(arn, FIFO_QUEUE_ARN)
    first = await sns.call("publish", TopicArn=arn, Message="one", MessageGroupId="g")
    again = await sns.call("publish", TopicArn=arn, Message="one", MessageGroupId="g")
    await sns.call("publish", TopicArn=arn, Message="two", MessageGroupId="g")
    assert first["MessageId"] == again["MessageId"]  # deduplicated by content
    assert int(again["SequenceNumber"]) > int(first["SequenceNumber"])
    messages = await received(sns.runtime, "orders.fifo")
    assert [json.loads(m.body)["Message"] for m in messages] == ["one", "two"]
    assert {m.attributes["MessageGroupId"] for m in messages} == {"g"}


# -- subscriptions and publishing ----------------------------------------------


async def test_a_queue_subscription_gets_the_envelope_then_raw_messages(sns: Sns) -> None:
    topic = await sns.topic()
    sub = await sns.queue_subscription(topic)
    assert sub.startswith(topic + ":")
    assert await sns.queue_subscription(topic) == sub  # the same again: the same subscription
    published = await sns.call(
        "publish",
        TopicArn=topic,
        Message="hello",
        Subject="greeting",
        MessageAttributes={"n": {"DataType": "Number", "StringValue": "100.12"}},
    )
    (message,) = await received(sns.runtime, "orders")
    envelope = json.loads(message.body)
    assert envelope["Type"] == "Notification"
    assert envelope["MessageId"] == published["MessageId"]
    assert envelope["TopicArn"] == topic
    assert envelope["Subject"] == "greeting"
    assert envelope["Message"] == "hello"
    assert envelope["Timestamp"].endswith("Z")
    assert envelope["MessageAttributes"] == {"n": {"Type": "Number", "Value": "100.12"}}
    await sns.call(
        "set_subscription_attributes",
        SubscriptionArn=sub,
        AttributeName="RawMessageDelivery",
        AttributeValue="true",
    )
    await sns.call(
        "publish",
        TopicArn=topic,
        Message="raw one",
        MessageAttributes={
            "n": {"DataType": "Number", "StringValue": "100.12"},
            "who": {"DataType": "String", "StringValue": "me"},
            "bits": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        },
    )
    (raw,) = await received(sns.runtime, "orders")
    assert raw.body == "raw one"
    for bad in ("Infinity", "NaN", "1e999"):  # SNS's numbers are finite (up to 10^126)
        status, error = await sns.error(
            "publish",
            TopicArn=topic,
            Message="m",
            MessageAttributes={"n": {"DataType": "Number", "StringValue": bad}},
        )
        assert status == 400
        assert "Could not cast message attribute 'n'" in error["Message"]
    # Raw delivery keeps each attribute's data type in the queue, as SNS does.
    assert raw.message_attributes == {
        "n": {"DataType": "Number", "StringValue": "100.12"},
        "who": {"DataType": "String", "StringValue": "me"},
        "bits": {"DataType": "Binary", "BinaryValue": "AAE="},
    }
    attributes = (await sns.call("get_subscription_attributes", SubscriptionArn=sub))["Attributes"]
    assert attributes == {
        "ConfirmationWasAuthenticated": "true",
        "Endpoint": QUEUE_ARN,
        "Owner": "000000000000",
        "PendingConfirmation": "false",
        "Protocol": "sqs",
        "RawMessageDelivery": "true",
        "SubscriptionArn": sub,
        "TopicArn": topic,
    }
    listed = await sns.call("list_subscriptions_by_topic", TopicArn=topic)
    assert listed["Subscriptions"] == [
        {
            "SubscriptionArn": sub,
            "Owner": "000000000000",
            "Protocol": "sqs",
            "Endpoint": QUEUE_ARN,
            "TopicArn": topic,
        }
    ]
    every = await sns.call("list_subscriptions")
    assert {s["SubscriptionArn"].rsplit(":", 1)[1] for s in every["Subscriptions"]} == {
        "a",
        sub.rsplit(":", 1)[1],
    }
    await sns.call("unsubscribe", SubscriptionArn=sub)
    await sns.call("unsubscribe", SubscriptionArn=sub)  # twice: no error
    await sns.call("publish", TopicArn=topic, Message="nobody")
    assert await received(sns.runtime, "orders") == []


async def test_filter_policies_and_message_structure(sns: Sns) -> None:
    topic = await sns.topic()
    sub = await sns.queue_subscription(
        topic, FilterPolicy=json.dumps({"kind": ["big"]}), RawMessageDelivery="true"
    )
    for kind in ("small", "big"):
        await sns.call(
            "publish",
            TopicArn=topic,
            Message=kind,
            MessageAttributes={"kind": {"DataType": "String", "StringValue": kind}},
        )
    assert [m.body for m in await received(sns.runtime, "orders")] == ["big"]
    await sns.call(
        "set_subscription_attributes",
        SubscriptionArn=sub,
        AttributeName="FilterPolicyScope",
        AttributeValue="MessageBody",
    )
    await sns.call(
        "set_subscription_attributes",
        SubscriptionArn=sub,
        AttributeName="FilterPolicy",
        AttributeValue=json.dumps({"total": [{"numeric": [">", 10]}]}),
    )
    for total in (5, 50):
        await sns.call("publish", TopicArn=topic, Message=json.dumps({"total": total}))
    assert [json.loads(m.body) for m in await received(sns.runtime, "orders")] == [{"total": 50}]
    attributes = (await sns.call("get_subscription_attributes", SubscriptionArn=sub))["Attributes"]
    assert attributes["FilterPolicyScope"] == "MessageBody"
    assert json.loads(attributes["FilterPolicy"]) == {"total": [{"numeric": [">", 10]}]}
    await sns.call(
        "set_subscription_attributes",
        SubscriptionArn=sub,
        AttributeName="FilterPolicy",
        AttributeValue="",
    )
    structured = json.dumps({"default": "plain", "sqs": json.dumps({"total": 1})})
    await sns.call("publish", TopicArn=topic, Message=structured, MessageStructure="json")
    assert [json.loads(m.body) for m in await received(sns.runtime, "orders")] == [{"total": 1}]


async def test_a_yaml_topic_takes_api_subscriptions_and_keeps_them_across_a_reload(
    sns: Sns,
) -> None:
    arn = "arn:aws:sns:us-east-1:000000000000:declared"
    await sns.queue_subscription(arn, RawMessageDelivery="true")
    await sns.call("publish", TopicArn=arn, Message="both")
    assert [m.body for m in await received(sns.runtime, "orders")] == ["both"]
    audit = sns.runtime.resource("audit")
    await eventually(lambda: len(audit.received) == 1)  # type: ignore[attr-defined]
    # a reload replaces the declared topic: what the API added stays
    await sns.runtime.put_resource(
        "declared", "topic", {"subscriptions": [{"id": "a", "resource": "audit"}]}
    )
    await sns.call("publish", TopicArn=arn, Message="again")
    assert [m.body for m in await received(sns.runtime, "orders")] == ["again"]
    # a declared subscription is the config's to change
    status, error = await sns.error(
        "set_subscription_attributes",
        SubscriptionArn=f"{arn}:a",
        AttributeName="RawMessageDelivery",
        AttributeValue="true",
    )
    assert (status, error["Code"]) == (400, "InvalidParameter")
    assert "declared in the pipeline's config" in error["Message"]


async def test_an_api_topic_is_a_rule_target(sns: Sns) -> None:
    topic = await sns.topic("routed")
    await sns.queue_subscription(topic, RawMessageDelivery="true")
    bus = sns.runtime.bus()
    bus.put_rule("r", pattern={"source": ["shop"]})
    await bus.put_targets("r", [{"id": "t", "resource": "routed", "input_path": "$.detail"}])
    await sns.runtime.put_events([{"Source": "shop", "DetailType": "d", "Detail": '{"n": 1}'}])
    await sns.runtime.wait_until_idle()
    assert [json.loads(m.body) for m in await received(sns.runtime, "orders")] == [{"n": 1}]


async def test_lambda_subscriptions_and_refused_protocols(sns: Sns, tmp_path: Path) -> None:
    topic = await sns.topic()
    status, error = await sns.error(
        "subscribe", TopicArn=topic, Protocol="email", Endpoint="ops@example.com"
    )
    assert (status, error["Code"]) == (400, "InvalidParameter")
    assert error["Message"].startswith("Invalid parameter: Protocol Reason:")
    status, error = await sns.error(
        "subscribe", TopicArn=topic, Protocol="https", Endpoint="http://example.com/hook"
    )
    assert (status, error["Code"]) == (400, "InvalidParameter")
    assert "must be a URL beginning with https://" in error["Message"]
    status, error = await sns.error(
        "subscribe",
        TopicArn=topic,
        Protocol="lambda",
        Endpoint="arn:aws:lambda:us-east-1:000000000000:function:nope",
    )
    assert error["Message"] == "Invalid parameter: Lambda endpoint ARN"
    # SNS takes no raw message delivery for the lambda protocol, made or set.
    function = "arn:aws:lambda:us-east-1:000000000000:function:fn"
    raw = "Invalid parameter: Delivery protocol [lambda] does not support raw message delivery."
    status, error = await sns.error(
        "subscribe",
        TopicArn=topic,
        Protocol="lambda",
        Endpoint=function,
        Attributes={"RawMessageDelivery": "true"},
    )
    assert (status, error["Code"], error["Message"]) == (400, "InvalidParameter", raw)
    made = await sns.call(
        "subscribe",
        TopicArn=topic,
        Protocol="lambda",
        Endpoint=function,
        ReturnSubscriptionArn=True,
    )
    status, error = await sns.error(
        "set_subscription_attributes",
        SubscriptionArn=made["SubscriptionArn"],
        AttributeName="RawMessageDelivery",
        AttributeValue="true",
    )
    assert (status, error["Code"], error["Message"]) == (400, "InvalidParameter", raw)


async def test_publish_batch(sns: Sns) -> None:
    topic = await sns.topic()
    await sns.queue_subscription(topic, RawMessageDelivery="true")
    answer = await sns.call(
        "publish_batch",
        TopicArn=topic,
        PublishBatchRequestEntries=[{"Id": str(n), "Message": f"m{n}"} for n in range(5)],
    )
    assert [s["Id"] for s in answer["Successful"]] == ["0", "1", "2", "3", "4"]
    assert answer["Failed"] == []
    assert sorted(m.body for m in await received(sns.runtime, "orders")) == [
        f"m{n}" for n in range(5)
    ]


async def test_a_failing_subscriber_is_retried_in_the_background(sns: Sns) -> None:
    topic = await sns.topic()
    await sns.queue_subscription(topic, RawMessageDelivery="true")
    queue = sns.runtime.resource("orders")
    real = queue.deliver
    calls = 0

    async def flaky(payload: Any, context: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("down for a moment")
        return await real(payload, context)

    queue.deliver = flaky  # type: ignore[method-assign]
    published = await sns.call("publish", TopicArn=topic, Message="late")
    assert published["MessageId"]
    await eventually(lambda: calls >= 2)
    assert [m.body for m in await received(sns.runtime, "orders")] == ["late"]


# -- AWS's recorded errors ----------------------------------------------------

#: (snapshot key, operation, parameters (TOPIC: the test's topic ARN,
#: FIFO: a FIFO topic's, SUB: a subscription's), status, code, message)
RECORDED: list[tuple[str, str, dict[str, Any], int, str, str]] = [
    (
        "test_create_topic_with_attributes/get-attrs-nonexistent-topic",
        "get_topic_attributes",
        {"TopicArn": "TOPIC-missing"},
        404,
        "NotFound",
        "Topic does not exist",
    ),
    (
        "test_create_topic_with_attributes/get-attrs-malformed-topic",
        "get_topic_attributes",
        {"TopicArn": "test-topic"},
        400,
        "InvalidParameter",
        "Invalid parameter: TopicArn Reason: An ARN must have at least 6 elements, not 1",
    ),
    (
        "test_tags/duplicate-key-error",
        "tag_resource",
        {
            "ResourceArn": "TOPIC",
            "Tags": [{"Key": "k1", "Value": "v1"}, {"Key": "k1", "Value": "v2"}],
        },
        400,
        "InvalidParameter",
        "Invalid parameter: Duplicated keys are not allowed.",
    ),
    (
        "test_create_duplicate_topic_with_more_tags/exception-duplicate",
        "create_topic",
        {"Name": "NAME", "Tags": [{"Key": "k1", "Value": "v1"}, {"Key": "k2", "Value": "v2"}]},
        400,
        "InvalidParameter",
        "Invalid parameter: Tags Reason: Topic already exists with different tags",
    ),
    (
        "test_publish_wrong_arn_format/invalid-topic-arn-1",
        "publish",
        {"TopicArn": "randomstring:test", "Message": "m"},
        400,
        "InvalidParameter",
        "Invalid parameter: TopicArn Reason: An ARN must have at least 6 elements, not 2",
    ),
    (
        "test_unknown_topic_publish/error",
        "publish",
        {"TopicArn": "TOPIC-missing", "Message": "m"},
        404,
        "NotFound",
        "Topic does not exist",
    ),
    (
        "test_publish_non_existent_target/non-existent-endpoint",
        "publish",
        {
            "TargetArn": "arn:aws:sns:us-east-1:000000000000:endpoint/APNS/abcdef/0f7d",
            "Message": "m",
        },
        400,
        "InvalidParameter",
        "Invalid parameter: TargetArn Reason: No endpoint found for the target arn specified",
    ),
    (
        "test_publish_with_empty_subject/response-with-empty-subject",
        "publish",
        {"TopicArn": "TOPIC", "Message": "m", "Subject": ""},
        400,
        "InvalidParameter",
        "Invalid parameter: Subject",
    ),
    (
        "test_empty_sns_message/empty-msg-error",
        "publish",
        {"TopicArn": "TOPIC", "Message": ""},
        400,
        "InvalidParameter",
        "Invalid parameter: Empty message",
    ),
    (
        "test_publish_too_long_message/error",
        "publish",
        {"TopicArn": "TOPIC", "Message": "x" * (256 * 1024 + 1)},
        400,
        "InvalidParameter",
        "Invalid parameter: Message too long",
    ),
    (
        "test_publish_too_long_message/error-with-attrs",
        "publish",
        {
            "TopicArn": "TOPIC",
            "Message": "x" * (256 * 1024 - 10),
            "MessageAttributes": {"attr1": {"DataType": "String", "StringValue": "long value"}},
        },
        400,
        "InvalidParameter",
        "Invalid parameter: Message too long",
    ),
    (
        "test_message_structure_json_exc/missing-default-key",
        "publish",
        {"TopicArn": "TOPIC", "Message": '{"sqs": "m"}', "MessageStructure": "json"},
        400,
        "InvalidParameter",
        "Invalid parameter: Message Structure - No default entry in JSON message body",
    ),
    (
        "test_message_structure_json_exc/invalid-json",
        "publish",
        {"TopicArn": "TOPIC", "Message": '{"default": "m", "sqs"}', "MessageStructure": "json"},
        400,
        "InvalidParameter",
        "Invalid parameter: Message Structure - JSON message body failed to parse",
    ),
    (
        "test_message_structure_json_exc/key-is-not-string",
        "publish",
        {"TopicArn": "TOPIC", "Message": '{"default": {"k": 1}}', "MessageStructure": "json"},
        400,
        "InvalidParameter",
        "Invalid parameter: Message Structure - No default entry in JSON message body",
    ),
    (
        "test_subscribe_with_invalid_protocol/exception",
        "subscribe",
        {"TopicArn": "TOPIC", "Protocol": "test-protocol", "Endpoint": QUEUE_ARN},
        400,
        "InvalidParameter",
        "Invalid parameter: Amazon SNS does not support this protocol string: test-protocol",
    ),
    (
        "test_create_subscriptions_with_attributes/subscribe-wrong-attr",
        "subscribe",
        {
            "TopicArn": "TOPIC",
            "Protocol": "sqs",
            "Endpoint": QUEUE_ARN,
            "Attributes": {"RawMessageDelivery": "wrongvalue"},
        },
        400,
        "InvalidParameter",
        "Invalid parameter: Attributes Reason: RawMessageDelivery: Invalid value [wrongvalue]."
        " Must be true or false.",
    ),
    (
        "test_create_subscriptions_with_attributes/get-attrs-nonexistent-sub",
        "get_subscription_attributes",
        {"SubscriptionArn": "TOPIC:00000000-0000-0000-0000-000000000000"},
        404,
        "NotFound",
        "Subscription does not exist",
    ),
    (
        "test_not_found_error_on_set_subscription_attributes/sub-not-found",
        "set_subscription_attributes",
        {
            "SubscriptionArn": "TOPIC:00000000-0000-0000-0000-000000000000",
            "AttributeName": "RawMessageDelivery",
            "AttributeValue": "true",
        },
        404,
        "NotFound",
        "Subscription does not exist",
    ),
    (
        "test_validate_set_sub_attributes/fake-attribute",
        "set_subscription_attributes",
        {"SubscriptionArn": "SUB", "AttributeName": "FakeAttribute", "AttributeValue": "x"},
        400,
        "InvalidParameter",
        "Invalid parameter: AttributeName",
    ),
    (
        "test_validate_set_sub_attributes/raw-message-wrong-value",
        "set_subscription_attributes",
        {
            "SubscriptionArn": "SUB",
            "AttributeName": "RawMessageDelivery",
            "AttributeValue": "test-ValUe",
        },
        400,
        "InvalidParameter",
        "Invalid parameter: RawMessageDelivery: Invalid value [test-ValUe]. Must be true or false.",
    ),
    (
        "test_validate_set_sub_attributes/raw-message-empty-value",
        "set_subscription_attributes",
        {"SubscriptionArn": "SUB", "AttributeName": "RawMessageDelivery", "AttributeValue": ""},
        400,
        "InvalidParameter",
        "Invalid parameter: RawMessageDelivery: Invalid value []. Must be true or false.",
    ),
    (
        "test_validate_set_sub_attributes/fake-arn-redrive-policy",
        "set_subscription_attributes",
        {
            "SubscriptionArn": "SUB",
            "AttributeName": "RedrivePolicy",
            "AttributeValue": json.dumps({"deadLetterTargetArn": "fake-arn"}),
        },
        400,
        "InvalidParameter",
        "Invalid parameter: RedrivePolicy: deadLetterTargetArn is an invalid arn",
    ),
    (
        "test_validate_set_sub_attributes/invalid-json-redrive-policy",
        "set_subscription_attributes",
        {
            "SubscriptionArn": "SUB",
            "AttributeName": "RedrivePolicy",
            "AttributeValue": "{invalidjson}",
        },
        400,
        "InvalidParameter",
        "Invalid parameter: RedrivePolicy: failed to parse JSON.",
    ),
    (
        "test_validate_set_sub_attributes/invalid-json-filter-policy",
        "set_subscription_attributes",
        {
            "SubscriptionArn": "SUB",
            "AttributeName": "FilterPolicy",
            "AttributeValue": "{invalidjson}",
        },
        400,
        "InvalidParameter",
        "Invalid parameter: FilterPolicy: failed to parse JSON.",
    ),
    (
        "test_publish_batch_messages_without_topic/publish-batch-no-topic",
        "publish_batch",
        {"TopicArn": "TOPIC-missing", "PublishBatchRequestEntries": [{"Id": "1", "Message": "m"}]},
        404,
        "NotFound",
        "Topic does not exist",
    ),
    (
        "test_publish_batch_exceptions/no-group-id",
        "publish_batch",
        {"TopicArn": "FIFO", "PublishBatchRequestEntries": [{"Id": "1", "Message": "m"}]},
        400,
        "InvalidParameter",
        "Invalid parameter: The MessageGroupId parameter is required for FIFO topics",
    ),
    (
        "test_publish_batch_exceptions/too-many-msg",
        "publish_batch",
        {
            "TopicArn": "TOPIC",
            "PublishBatchRequestEntries": [{"Id": str(n), "Message": "m"} for n in range(11)],
        },
        400,
        "TooManyEntriesInBatchRequest",
        "The batch request contains more entries than permissible.",
    ),
    (
        "test_publish_batch_exceptions/same-msg-id",
        "publish_batch",
        {
            "TopicArn": "TOPIC",
            "PublishBatchRequestEntries": [
                {"Id": "1", "Message": "m"},
                {"Id": "1", "Message": "m"},
            ],
        },
        400,
        "BatchEntryIdsNotDistinct",
        "Two or more batch entries in the request have the same Id.",
    ),
    (
        "test_publish_batch_exceptions/no-dedup-id",
        "publish_batch",
        {
            "TopicArn": "FIFO",
            "PublishBatchRequestEntries": [{"Id": "1", "Message": "m", "MessageGroupId": "g"}],
        },
        400,
        "InvalidParameter",
        "Invalid parameter: The topic should either have ContentBasedDeduplication enabled or"
        " MessageDeduplicationId provided explicitly",
    ),
    (
        "test_publish_batch_exceptions/no-default-key-json",
        "publish_batch",
        {
            "TopicArn": "TOPIC",
            "PublishBatchRequestEntries": [
                {"Id": "1", "Message": '{"sqs": "m"}', "MessageStructure": "json"}
            ],
        },
        400,
        "InvalidParameter",
        "Invalid parameter: Message Structure - No default entry in JSON message body",
    ),
    (
        "test_subscribe_to_sqs_with_queue_url/sub-queue-url",
        "subscribe",
        {
            "TopicArn": "TOPIC",
            "Protocol": "sqs",
            "Endpoint": "http://localhost:4566/000000000000/orders",
        },
        400,
        "InvalidParameter",
        "Invalid parameter: SQS endpoint ARN",
    ),
    (
        "test_subscribe_unknown_sqs_queue/subscribe-unknown-sqs-invalid_arn",
        "subscribe",
        {"TopicArn": "TOPIC", "Protocol": "sqs", "Endpoint": "arn:aws:sqs:us-east-1:000000000000"},
        400,
        "InvalidParameter",
        "Invalid parameter: SQS endpoint ARN",
    ),
    (
        "test_validations_for_fifo/not-fifo-topic",
        "subscribe",
        {"TopicArn": "TOPIC", "Protocol": "sqs", "Endpoint": FIFO_QUEUE_ARN},
        400,
        "InvalidParameter",
        "Invalid parameter: Invalid parameter: Endpoint Reason: FIFO SQS Queues can not be"
        " subscribed to standard SNS topics",
    ),
    (
        "test_validations_for_fifo/regular-queue-for-dlq-of-fifo-topic",
        "subscribe",
        {
            "TopicArn": "FIFO",
            "Protocol": "sqs",
            "Endpoint": FIFO_QUEUE_ARN,
            "Attributes": {"RedrivePolicy": json.dumps({"deadLetterTargetArn": QUEUE_ARN})},
        },
        400,
        "InvalidParameter",
        "Invalid parameter: Attributes Reason: RedrivePolicy: must use a FIFO queue as DLQ for a"
        " FIFO Subscription to a FIFO Topic.",
    ),
    (
        "test_validations_for_fifo/no-msg-group-id",
        "publish",
        {"TopicArn": "FIFO", "Message": "m"},
        400,
        "InvalidParameter",
        "Invalid parameter: The MessageGroupId parameter is required for FIFO topics",
    ),
    (
        "test_validations_for_fifo/no-dedup-policy",
        "publish",
        {"TopicArn": "FIFO", "Message": "m", "MessageGroupId": "g"},
        400,
        "InvalidParameter",
        "Invalid parameter: The topic should either have ContentBasedDeduplication enabled or"
        " MessageDeduplicationId provided explicitly",
    ),
    (
        "test_validations_for_fifo/no-msg-dedup-regular-topic",
        "publish",
        {"TopicArn": "TOPIC", "Message": "m", "MessageDeduplicationId": "d"},
        400,
        "InvalidParameter",
        "Invalid parameter: MessageDeduplicationId Reason: The request includes"
        " MessageDeduplicationId parameter that is not valid for this topic type",
    ),
    (
        "test_subscribe_idempotency/subscribe-diff-attributes",
        "subscribe",
        {
            "TopicArn": "TOPIC",
            "Protocol": "sqs",
            "Endpoint": QUEUE_ARN,
            "Attributes": {"RawMessageDelivery": "false"},
        },
        400,
        "InvalidParameter",
        "Invalid parameter: Attributes Reason: Subscription already exists with different"
        " attributes",
    ),
    (
        "test_unsubscribe_wrong_arn_format/invalid-unsubscribe-arn-1",
        "unsubscribe",
        {"SubscriptionArn": "randomstring"},
        400,
        "InvalidParameter",
        "Invalid parameter: SubscriptionArn Reason: An ARN must have at least 6 elements, not 1",
    ),
    (
        "test_unsubscribe_wrong_arn_format/invalid-unsubscribe-arn-2",
        "unsubscribe",
        {"SubscriptionArn": "arn:aws:sns:us-east-1:000000000000"},
        400,
        "InvalidParameter",
        "Invalid parameter: SubscriptionArn Reason: An ARN must have at least 6 elements, not 5",
    ),
    (
        "test_unsubscribe_wrong_arn_format/invalid-unsubscribe-arn-3",
        "unsubscribe",
        {"SubscriptionArn": "arn:aws:sns:us-east-1:000000000000:random"},
        400,
        "InvalidParameter",
        "Invalid parameter: SubscriptionId",
    ),
    (
        "test_publish_batch_too_long_message/error-no-attrs",
        "publish_batch",
        {
            "TopicArn": "TOPIC",
            "PublishBatchRequestEntries": [
                {"Id": str(n), "Message": "x" * (256 * 1024 // 10 + 100)} for n in range(10)
            ],
        },
        400,
        "BatchRequestTooLong",
        "The length of all the messages put together is more than the limit.",
    ),
    (
        "test_subscribe_with_invalid_topic/invalid-subscribe-arn-2",
        "subscribe",
        {
            "TopicArn": "arn:aws:sns:us-east-1:000000000000",
            "Protocol": "sqs",
            "Endpoint": QUEUE_ARN,
        },
        400,
        "InvalidParameter",
        "Invalid parameter: TopicArn Reason: An ARN must have at least 6 elements, not 5",
    ),
    (
        "test_subscribe_with_invalid_topic/non-existent-topic",
        "subscribe",
        {"TopicArn": "TOPIC-missing", "Protocol": "sqs", "Endpoint": QUEUE_ARN},
        404,
        "NotFound",
        "Topic does not exist",
    ),
    *[
        (
            f"test_create_topic_name_constraints/{key}",
            "create_topic",
            params,
            400,
            "InvalidParameter",
            "Invalid parameter: Topic Name",
        )
        for key, params in [
            ("name-too-short", {"Name": ""}),
            ("name-too-long", {"Name": "a" * 257}),
            ("name-contains-fifo", {"Name": "test.fifo"}),
            ("fifo-name-not-contains-fifo", {"Name": "test", "Attributes": {"FifoTopic": "true"}}),
            ("name-invalid-char-0", {"Name": "test topic"}),
            ("name-invalid-char-1", {"Name": "test/topic"}),
            ("name-invalid-char-2", {"Name": "test.topic"}),
            ("name-invalid-char-3", {"Name": "test@topic"}),
        ]
    ],
    (
        "test_topic_get_attributes_with_fifo_false/set-fifo-false-after-creation",
        "set_topic_attributes",
        {"TopicArn": "TOPIC", "AttributeName": "FifoTopic", "AttributeValue": "false"},
        400,
        "InvalidParameter",
        "Invalid parameter: AttributeName",
    ),
    (
        "test_subscribe_invalid_filter_policy/subscribe-invalid-filter-policy",
        "subscribe",
        {
            "TopicArn": "TOPIC",
            "Protocol": "sqs",
            "Endpoint": QUEUE_ARN,
            "Attributes": {"FilterPolicy": "invalid_policy"},
        },
        400,
        "InvalidParameter",
        "Invalid parameter: Attributes Reason: FilterPolicy: failed to parse JSON.",
    ),
    (
        "test_get_subscription_attributes_error_not_exists/get-sub-attrs-nonexistent",
        "get_subscription_attributes",
        {"SubscriptionArn": "TOPIC:00000000-0000-0000-0000-000000000001"},
        404,
        "NotFound",
        "Subscription does not exist",
    ),
    *[
        (
            f"test_publish_batch_invalid_entry_id/{key}",
            "publish_batch",
            {"TopicArn": "TOPIC", "PublishBatchRequestEntries": [{"Id": entry_id, "Message": "m"}]},
            400,
            "InvalidBatchEntryId",
            message + entry_id,
        )
        for key, entry_id, message in [
            ("invalid-char-dot", "message.id", "contains an impermissible character: "),
            ("invalid-char-special", "msg@123#test", "contains an impermissible character: "),
            ("id-too-long-81", "a" * 81, "is too long: "),
        ]
        for message in ["The Id of a batch entry in the batch request " + message]
    ],
    *[
        (
            f"test_create_topic_different_attrs/{key}",
            "create_topic",
            {"Name": "NAME", "Attributes": attributes},
            400,
            "InvalidParameter",
            "Invalid parameter: Attributes Reason: Topic already exists with different attributes",
        )
        for key, attributes in [
            ("create-topic-diff-attrs", {"DisplayName": "Value2"}),
            ("create-topic-new-attrs", {"SignatureVersion": "2"}),
            ("create-topic-new-and-same-attrs", {"SignatureVersion": "2", "DisplayName": "Value1"}),
        ]
    ],
    (
        "test_create_topic_different_attrs/create-topic-new-attrs-fifo",
        "create_topic",
        {"Name": "NAME", "Attributes": {"FifoTopic": "true"}},
        400,
        "InvalidParameter",
        "Invalid parameter: Topic Name",
    ),
]

_MESSAGE_ATTRIBUTE_CASES: list[tuple[str, dict[str, Any], str]] = [
    (
        "missing_string_attr",
        {"attr1": {"DataType": "String", "StringValue": ""}},
        "The message attribute 'attr1' must contain non-empty message attribute value for message"
        " attribute type 'String'.",
    ),
    (
        "fully_missing_string_attr",
        {"attr1": {"DataType": "String"}},
        "The message attribute 'attr1' must contain non-empty message attribute value for message"
        " attribute type 'String'.",
    ),
    (
        "missing_binary_attr",
        {"attr1": {"DataType": "Binary", "BinaryValue": b""}},
        "The message attribute 'attr1' must contain non-empty message attribute value for message"
        " attribute type 'Binary'.",
    ),
    (
        "str_attr_binary_value",
        {"attr1": {"DataType": "String", "BinaryValue": b"123"}},
        "The message attribute 'attr1' with type 'String' must use field 'String'.",
    ),
    (
        "int_attr_binary_value",
        {"attr1": {"DataType": "Number", "BinaryValue": b"123"}},
        "The message attribute 'attr1' with type 'Number' must use field 'String'.",
    ),
    (
        "binary_attr_string_value",
        {"attr1": {"DataType": "Binary", "StringValue": "123"}},
        "The message attribute 'attr1' with type 'Binary' must use field 'Binary'.",
    ),
    (
        "invalid_attr_string_value",
        {"attr1": {"DataType": "bla", "StringValue": "123"}},
        "The message attribute 'attr1' has an invalid message attribute type, the set of supported"
        " type prefixes is Binary, Number, and String.",
    ),
    (
        "too_long_name",
        {"a" * 257: {"DataType": "String", "StringValue": "123"}},
        "Length of message attribute name must be less than 256 bytes.",
    ),
    (
        "invalid_name",
        {"attr1^": {"DataType": "String", "StringValue": "123"}},
        "Invalid non-alphanumeric character '#x5E' was found in the message attribute name. Can"
        " only include alphanumeric characters, hyphens, underscores, or dots.",
    ),
    (
        "invalid_name_2",
        {".attr1": {"DataType": "String", "StringValue": "123"}},
        "Invalid message attribute name starting with character '.' was found.",
    ),
    (
        "invalid_name_3",
        {"attr1.": {"DataType": "String", "StringValue": "123"}},
        "Invalid message attribute name ending with character '.' was found.",
    ),
    (
        "invalid_name_4",
        {"att..r1": {"DataType": "String", "StringValue": "123"}},
        "Message attribute name can not have successive '.' character.",
    ),
]
for _key, _attributes, _message in _MESSAGE_ATTRIBUTE_CASES:
    for _batch in (False, True):
        RECORDED.append(
            (
                f"test_empty_or_wrong_message_attributes/{'batch-' if _batch else ''}{_key}",
                "publish_batch" if _batch else "publish",
                {
                    "TopicArn": "TOPIC",
                    "PublishBatchRequestEntries": [
                        {"Id": "1", "Message": "m", "MessageAttributes": _attributes}
                    ],
                }
                if _batch
                else {"TopicArn": "TOPIC", "Message": "m", "MessageAttributes": _attributes},
                400,
                "ParameterValueInvalid",
                _message,
            )
        )


def _filled(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        for placeholder in ("TOPIC", "FIFO", "SUB", "NAME"):
            if (
                value == placeholder
                or value.startswith(placeholder + ":")
                or value.startswith(placeholder + "-")
            ):
                return names[placeholder] + value[len(placeholder) :]
        return value
    if isinstance(value, dict):
        return {key: _filled(item, names) for key, item in value.items()}
    if isinstance(value, list):
        return [_filled(item, names) for item in value]
    return value


@pytest.mark.parametrize(
    ("key", "operation", "params", "status", "code", "message"),
    RECORDED,
    ids=[row[0] for row in RECORDED],
)
async def test_recorded_errors(
    sns: Sns, key: str, operation: str, params: dict[str, Any], status: int, code: str, message: str
) -> None:
    topic = await sns.topic("recorded", Attributes={"DisplayName": "Value1"})
    await sns.call("tag_resource", ResourceArn=topic, Tags=[{"Key": "k1", "Value": "v1"}])
    fifo = await sns.topic("recorded.fifo", Attributes={"FifoTopic": "true"})
    subscription = await sns.queue_subscription(topic, RawMessageDelivery="true")
    names = {"TOPIC": topic, "FIFO": fifo, "SUB": subscription, "NAME": "recorded"}
    got_status, error = await sns.error(operation, **_filled(params, names))
    assert (got_status, error["Code"], error["Type"]) == (status, code, "Sender")
    if message.endswith("failed to parse JSON."):  # the rest is the JVM parser's own words
        assert error["Message"].startswith(message)
    else:
        assert error["Message"] == message


ATTRS = "MessageAttributes"
#: test_sns_filter_policy.snapshot.json: (snapshot key, policy, scope, reason
#: as recorded up to Jackson's position); Subscribe's "Attributes Reason:" form.
RECORDED_POLICIES: list[tuple[str, Any, str, str]] = [
    (
        "test_validate_policy/error-condition-list",
        {"key": [["value"]]},
        ATTRS,
        "Match value must be String, number, true, false, or null",
    ),
    (
        "test_validate_policy/error-condition-operator",
        {"key": [{"wrong-operator": True}]},
        ATTRS,
        "Unrecognized match type wrong-operator",
    ),
    (
        "test_validate_policy/error-condition-two-operators",
        {"key": [{"suffix": "value", "prefix": "value2"}]},
        ATTRS,
        "Only one key allowed in match expression",
    ),
    (
        "test_validate_policy_string_operators/error-condition-empty-array",
        {"key": []},
        ATTRS,
        "Empty arrays are not allowed",
    ),
    (
        "test_validate_policy_string_operators/error-condition-is-numeric",
        {"key": [{"suffix": 100}]},
        ATTRS,
        "suffix match pattern must be a string",
    ),
    (
        "test_validate_policy_string_operators/error-condition-is-none",
        {"key": [{"suffix": None}]},
        ATTRS,
        "suffix match pattern must be a string",
    ),
    (
        "test_validate_policy_string_operators/error-condition-empty-list",
        {"key": [{"suffix": []}]},
        ATTRS,
        "suffix match pattern must be a string",
    ),
    (
        "test_validate_policy_string_operators/error-condition-bad-cidr-str",
        {"key": [{"cidr": "bad-filter"}]},
        ATTRS,
        "Malformed CIDR, one '/' required",
    ),
    (
        "test_validate_policy_string_operators/error-condition-bad-cidr-str-slash",
        {"key": [{"cidr": "bad-filter/64"}]},
        ATTRS,
        "Nonstandard IP address: bad-filter",
    ),
    (
        "test_validate_policy_string_operators/error-condition-bad-cidr-str-slash-2",
        {"key": [{"cidr": "10.0.0.0/x"}]},
        ATTRS,
        "Malformed CIDR, mask bits must be an integer",
    ),
    (
        "test_validate_policy_string_operators/error-condition-bad-cidr-v4",
        {"key": [{"cidr": "xx.11.xx/8"}]},
        ATTRS,
        "Nonstandard IP address: xx.11.xx",
    ),
    (
        "test_validate_policy_numeric_operator/error-numeric-empty",
        {"key": [{"numeric": []}]},
        ATTRS,
        "Invalid member in numeric match: ]",
    ),
    (
        "test_validate_policy_numeric_operator/error-numeric-wrong-operator",
        {"key": [{"numeric": ["operator"]}]},
        ATTRS,
        "Unrecognized numeric range operator: operator",
    ),
    (
        "test_validate_policy_numeric_operator/error-numeric-operator-order",
        {"key": [{"numeric": [1, "<="]}]},
        ATTRS,
        "Invalid member in numeric match: 1",
    ),
    (
        "test_validate_policy_numeric_operator/error-numeric-type",
        {"key": [{"numeric": ["=", "000"]}]},
        ATTRS,
        "Value of equals must be numeric",
    ),
    (
        "test_validate_policy_numeric_operator/error-numeric-missing-value",
        {"key": [{"numeric": [">="]}]},
        ATTRS,
        "Value of >= must be numeric",
    ),
    (
        "test_validate_policy_numeric_operator/error-numeric-wrong-range-order",
        {"key": [{"numeric": ["<", 100, ">", 10]}]},
        ATTRS,
        "Too many elements in numeric expression",
    ),
    (
        "test_validate_policy_numeric_operator/error-numeric-wrong-range-operators",
        {"key": [{"numeric": [">=", 1, ">", 2]}]},
        ATTRS,
        "Bad numeric range operator: >",
    ),
    (
        "test_validate_policy_numeric_operator/error-numeric-wrong-value-order",
        {"key": [{"numeric": [">", 3, "<", 1]}]},
        ATTRS,
        "Bottom must be less than top",
    ),
    (
        "test_validate_policy_numeric_operator/error-numeric-missing-range-value",
        {"key": [{"numeric": [">", 20, "<="]}]},
        ATTRS,
        "Value of <= must be numeric",
    ),
    (
        "test_validate_policy_numeric_operator/error-numeric-missing-range-operator",
        {"key": [{"numeric": [">", 20, 30]}]},
        ATTRS,
        "Bad value in numeric range: 30",
    ),
    (
        "test_validate_policy_numeric_operator/error-numeric-wrong-second-range-operator",
        {"key": [{"numeric": [">", 20, "test"]}]},
        ATTRS,
        "Bad numeric range operator: test",
    ),
    (
        "test_validate_policy_numeric_operator/error-numeric-wrong-range-value-1-type",
        {"key": [{"numeric": [">", "20", "<", "30"]}]},
        ATTRS,
        "Value of > must be numeric",
    ),
    (
        "test_validate_policy_numeric_operator/error-numeric-wrong-range-value-2-type",
        {"key": [{"numeric": [">", 20, "<", "30"]}]},
        ATTRS,
        "Value of < must be numeric",
    ),
    (
        "test_validate_policy_numeric_operator/error-numeric-too-many-range",
        {"key": [{"numeric": [">", 20, "<", 30, "<", 50]}]},
        ATTRS,
        "Too many terms in numeric range expression",
    ),
    (
        "test_validate_policy_exists_operator/error-condition-none",
        {"key": [{"exists": None}]},
        ATTRS,
        "exists match pattern must be either true or false.",
    ),
    (
        "test_validate_policy_exists_operator/error-condition-string",
        {"key": [{"exists": "no"}]},
        ATTRS,
        "exists match pattern must be either true or false.",
    ),
    (
        "test_policy_complexity/error-complexity-in-one-condition",
        {"key": [f"value{i}" for i in range(151)]},
        ATTRS,
        "Filter policy is too complex",
    ),
    (
        "test_policy_complexity/error-complexity-in-two-conditions",
        {"key1": [f"value{i}" for i in range(100)], "key2": [f"value{i}" for i in range(51)]},
        ATTRS,
        "Filter policy is too complex",
    ),
    (
        "test_policy_complexity/error-complexity-too-many-fields",
        {f"key{i}": [f"value{i}"] for i in range(1, 7)},
        ATTRS,
        "Filter policy can not have more than 5 keys",
    ),
    (
        "test_policy_complexity_with_or/error-complexity-or-flat",
        {
            "source": ["aws.cloudwatch", "aws.events", "aws.test", "aws.test2"],
            "$or": [
                {"metricName": ["CPUUtilization", "ReadLatency", "t1", "t2", "t3", "t4"]},
                {
                    "metricType": ["MetricType", "TestType", "TestType2", "TestType3"],
                    "$or": [{"metricId": [1234, 4321, 5678, 9012]}, {"spaceId": [1, 2, 3, 4]}],
                },
            ],
        },
        ATTRS,
        "Filter policy is too complex",
    ),
    (
        "test_policy_complexity_with_or/error-complexity-or-nested",
        {
            "$or": [
                {"metricName": ["CPUUtilization", "ReadLatency", "TestValue"]},
                {"namespace": ["AWS/EC2", "AWS/ES"]},
            ],
            "detail": {
                "scope": ["Service", "Test"],
                "$or": [
                    {"source": ["aws.cloudwatch"]},
                    {"type": ["CloudWatch Alarm State Change", "TestValue", "TestValue2"]},
                ],
            },
        },
        "MessageBody",
        "Filter policy is too complex",
    ),
    (
        "test_validate_policy_nested_anything_but_operator/error-condition-wrong-operator",
        {"key": [{"anything-but": {"wrong-operator": None}}]},
        ATTRS,
        "Unsupported anything-but pattern: wrong-operator",
    ),
    (
        "test_validate_policy_nested_anything_but_operator/error-condition-anything-but-suffix",
        {"key": [{"anything-but": {"suffix": "test"}}]},
        ATTRS,
        "Unsupported anything-but pattern: suffix",
    ),
    (
        "test_validate_policy_nested_anything_but_operator/error-condition-anything-but-exists",
        {"key": [{"anything-but": {"exists": False}}]},
        ATTRS,
        "Unsupported anything-but pattern: exists",
    ),
    (
        "test_validate_policy_nested_anything_but_operator/error-condition-anything-but-prefix-wrong-type",
        {"key": [{"anything-but": {"prefix": False}}]},
        ATTRS,
        "prefix match pattern must be a string",
    ),
]


@pytest.mark.parametrize(
    ("key", "policy", "scope", "reason"),
    RECORDED_POLICIES,
    ids=[row[0] for row in RECORDED_POLICIES],
)
async def test_recorded_filter_policy_errors(
    sns: Sns, key: str, policy: Any, scope: str, reason: str
) -> None:
    topic = await sns.topic()
    status, error = await sns.error(
        "subscribe",
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=QUEUE_ARN,
        Attributes={"FilterPolicy": json.dumps(policy), "FilterPolicyScope": scope},
    )
    assert (status, error["Code"]) == (400, "InvalidParameter")
    assert error["Message"].split("\n at [Source:")[0] == (
        f"Invalid parameter: Attributes Reason: FilterPolicy: {reason}"
    )


async def test_recorded_filter_policy_errors_of_set_subscription_attributes(sns: Sns) -> None:
    """test_sub_filter_policy_nested_property* and test_set_subscription_filter_policy_scope."""
    topic = await sns.topic()
    sub = await sns.queue_subscription(topic)

    async def refused(name: str, value: Any) -> str:
        text = value if isinstance(value, str) else json.dumps(value)
        status, error = await sns.error(
            "set_subscription_attributes",
            SubscriptionArn=sub,
            AttributeName=name,
            AttributeValue=text,
        )
        assert (status, error["Code"]) == (400, "InvalidParameter")
        return str(error["Message"]).split("\n at [Source:")[0]

    assert await refused("FilterPolicyScope", "RandomValue") == (
        "Invalid parameter: FilterPolicyScope: Invalid value [RandomValue]. Please use either"
        " MessageBody or MessageAttributes"
    )
    assert await refused("FilterPolicy", {"key": {"nested": ["x"]}}) == (
        "Invalid parameter: Filter policy scope MessageAttributes does not support nested filter"
        " policy"
    )
    await sns.call(
        "set_subscription_attributes",
        SubscriptionArn=sub,
        AttributeName="FilterPolicyScope",
        AttributeValue="MessageBody",
    )
    nested = {
        "key_a": {"key_b": {"key_c": ["value_one", "value_two", "value_three", "value_four"]}},
        "key_d": {"key_e": ["value_one", "value_two", "value_three"]},
        "key_f": ["value_one", "value_two", "value_three"],
    }
    assert await refused("FilterPolicy", nested) == (
        "Invalid parameter: FilterPolicy: Filter policy is too complex"
    )
    flat = {f"key_{c}": ["v"] for c in "abcdef"}
    assert await refused("FilterPolicy", flat) == (
        "Invalid parameter: FilterPolicy: Filter policy can not have more than 5 keys"
    )
    assert await refused("FilterPolicy", {"key_a": "value_one"}) == (
        'Invalid parameter: FilterPolicy: "key_a" must be an object or an array'
    )
    # 150 exactly is allowed (test_policy_complexity_with_or's accepted policy)
    accepted = {
        "source": ["aws.cloudwatch", "aws.events", "aws.test"],
        "$or": [
            {"metricName": ["CPUUtilization", "ReadLatency", "t1", "t2", "t3", "t4"]},
            {
                "metricType": ["MetricType", "TestType", "TestType2", "TestType3"],
                "$or": [{"metricId": [1234, 4321, 5678, 9012]}, {"spaceId": list(range(7))}],
            },
        ],
    }
    await sns.call(
        "set_subscription_attributes",
        SubscriptionArn=sub,
        AttributeName="FilterPolicy",
        AttributeValue=json.dumps(accepted),
    )


# -- a runner in a subprocess --------------------------------------------------

CONFIG = """\
resources:
  orders: {type: queue}
  sink: {type: function, function: 'sinkmod:record'}
"""


def test_the_aws_cli_publishes_to_a_topic_a_queue_receives(tmp_path: Path) -> None:
    runner = _start(tmp_path, CONFIG, "--api", "127.0.0.1:0")
    try:

        def run(*args: str, ok: bool = True) -> Any:
            return aws_cli(runner.url, "sns", *args, ok=ok)

        topic = run("create-topic", "--name", "news")["TopicArn"]
        run(
            "subscribe",
            "--topic-arn",
            topic,
            "--protocol",
            "sqs",
            "--notification-endpoint",
            QUEUE_ARN,
        )
        refused_raw = run(
            "subscribe",
            "--topic-arn",
            topic,
            "--protocol",
            "lambda",
            "--notification-endpoint",
            "arn:aws:lambda:us-east-1:000000000000:function:sink",
            "--attributes",
            "RawMessageDelivery=true",
            ok=False,
        )
        assert "Delivery protocol [lambda] does not support raw message delivery" in refused_raw
        lambda_arn = run(
            "subscribe",
            "--topic-arn",
            topic,
            "--protocol",
            "lambda",
            "--notification-endpoint",
            "arn:aws:lambda:us-east-1:000000000000:function:sink",
        )["SubscriptionArn"]
        published = run(
            "publish",
            "--topic-arn",
            topic,
            "--message",
            "hello from the cli",
            "--message-attributes",
            '{"n": {"DataType": "Number", "StringValue": "3"}}',
        )
        (delivered,) = runner.delivered(1)
        _assert_lambda_event(delivered, topic, lambda_arn, published["MessageId"], runner.url)
        listed = run("list-subscriptions-by-topic", "--topic-arn", topic)
        assert {s["Protocol"] for s in listed["Subscriptions"]} == {"sqs", "lambda"}
        refused = run("publish", "--topic-arn", topic + "-missing", "--message", "m", ok=False)
        assert "NotFound" in refused and "Topic does not exist" in refused
    finally:
        runner.process.send_signal(signal.SIGTERM)
        assert runner.process.wait(timeout=30) == 0
        runner.process.kill()

    async def read() -> list[Any]:
        async with QueueStore.existing(tmp_path / ".pipelines" / "state.db") as store:
            return list(await store.receive("orders", 10))

    (message,) = asyncio.run(read())
    envelope = json.loads(message.body)
    assert envelope["Type"] == "Notification"
    assert envelope["MessageId"] == published["MessageId"]
    assert envelope["TopicArn"] == topic
    assert envelope["Message"] == "hello from the cli"
    assert envelope["MessageAttributes"] == {"n": {"Type": "Number", "Value": "3"}}


def _assert_lambda_event(
    event: Any, topic: str, subscription_arn: str, message_id: str, base_url: str
) -> None:
    """Lambda's SNS event, signed as SNS signs it: the certificate is served
    at SigningCertUrl on the runner's port and verifies the Signature."""
    [record] = event["Records"]
    assert (record["EventSource"], record["EventVersion"]) == ("aws:sns", "1.0")
    assert record["EventSubscriptionArn"] == subscription_arn
    sns = record["Sns"]
    assert sns["Type"] == "Notification"
    assert (sns["MessageId"], sns["TopicArn"]) == (message_id, topic)
    assert sns["Subject"] is None
    assert sns["Message"] == "hello from the cli"
    assert sns["MessageAttributes"] == {"n": {"Type": "Number", "Value": "3"}}
    assert sns["SignatureVersion"] == "1"
    assert sns["UnsubscribeUrl"].startswith(base_url + "/sns/unsubscribe?SubscriptionArn=")
    assert sns["SigningCertUrl"].startswith(base_url)
    with urllib.request.urlopen(sns["SigningCertUrl"], timeout=10) as answer:
        certificate = x509.load_pem_x509_certificate(answer.read())
    public_key = certificate.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    public_key.verify(  # raises InvalidSignature when it does not hold
        base64.b64decode(sns["Signature"]),
        string_to_sign(sns),
        padding.PKCS1v15(),
        hashes.SHA1(),
    )
