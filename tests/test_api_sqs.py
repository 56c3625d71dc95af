"""The sqs API over HTTP: boto3 against an ApiServer on a real port, the runtime in process.

boto3 is a blocking client: its calls run in a thread while the runtime and
the server run on the test's event loop. Recorded values (MD5s, error codes
and wording) are AWS's answers as LocalStack's snapshot tests recorded them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from pipelines.api import ApiServer, served_services
from pipelines.runtime import Runtime
from plugins.queue.api import md5_of_attributes

from .apiclient import aws_call, aws_refusal, boto
from .recorder import plugin_manager

PLUGINS = plugin_manager()


class Api:
    """A started runtime and endpoint, boto3 sqs and events clients for it."""

    def __init__(self, runtime: Runtime, server: ApiServer) -> None:
        self.runtime = runtime
        self.server = server
        self.sqs = boto("sqs", server.url)
        self.events = boto("events", server.url)

    async def call(self, operation: str, client: str = "sqs", **params: Any) -> dict[str, Any]:
        return await aws_call(getattr(self, client), operation, **params)

    async def error(self, operation: str, **params: Any) -> botocore.exceptions.ClientError:
        return await aws_refusal(self.sqs, operation, **params)

    async def queue(self, name: str, **attributes: str) -> str:
        made = await self.call("create_queue", QueueName=name, Attributes=attributes)
        url: str = made["QueueUrl"]
        return url


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    runtime = Runtime(state_path=tmp_path / "state.db", plugins=PLUGINS)
    runtime.add_resource("declared", "queue", {"visibility_timeout": 45})
    server = ApiServer(runtime, served_services(PLUGINS), "127.0.0.1", 0)
    await server.start()
    try:
        async with runtime:
            yield Api(runtime, server)
    finally:
        await server.close()


def test_md5_of_message_attributes_is_sqs_s_as_aws_recorded_it() -> None:
    hello = {"Hello": {"DataType": "String", "StringValue": "There"}}
    assert md5_of_attributes(hello) == "a311262e065454b75da111d535b8dacd"
    assert (
        md5_of_attributes({"Foo": {"DataType": "String", "StringValue": "Bar"}})
        == "ae7155c6026991b6d54b11589678bf9c"
    )
    three = {
        **hello,
        "Help.Me": {"DataType": "String", "StringValue": "Me"},
        "General": {"DataType": "String", "StringValue": "Kenobi"},
    }
    assert md5_of_attributes(three) == "4c360f3fdafd970e05fae2f149d997f5"
    binary = b"traceparent\x1e00-774062d6c37081a5a0b9b5b88e30627c-2d2482211f6489da-01"
    assert (
        md5_of_attributes({"attr1": {"DataType": "Binary", "BinaryValue": binary}})
        == "8cbe4db156db8a94db8b801b7addb984"
    )


async def test_send_receive_delete_with_message_attributes(api: Api) -> None:
    url = await api.queue("work")
    assert url == f"{api.server.url}/000000000000/work"
    attributes = {
        "Help.Me": {"DataType": "String", "StringValue": "Me"},
        "Hello": {"DataType": "String", "StringValue": "There"},
        "General": {"DataType": "String", "StringValue": "Kenobi"},
        "Blob": {"DataType": "Binary", "BinaryValue": b"\x00\xffdata"},
        "Total": {"DataType": "Number", "StringValue": "12.5"},
    }
    sent = await api.call(
        "send_message", QueueUrl=url, MessageBody="msg", MessageAttributes=attributes
    )
    assert sent["MD5OfMessageBody"] == "6e2baaf3b97dbeef01c0043275f9a0e7"  # recorded
    assert sent["MD5OfMessageAttributes"] == md5_of_attributes(attributes)
    got = await api.call(
        "receive_message",
        QueueUrl=url,
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["All"],
    )
    (message,) = got["Messages"]
    assert message["Body"] == "msg"
    assert message["MD5OfBody"] == sent["MD5OfMessageBody"]
    assert message["MessageId"] == sent["MessageId"]
    assert message["MessageAttributes"] == attributes
    assert message["MD5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]
    assert message["Attributes"]["ApproximateReceiveCount"] == "1"
    assert set(message["Attributes"]) >= {"SentTimestamp", "ApproximateFirstReceiveTimestamp"}
    await api.call("delete_message", QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    empty = await api.call("receive_message", QueueUrl=url, VisibilityTimeout=0)
    assert empty.get("Messages", []) == []


async def test_receive_filters_attributes_as_aws_does(api: Api) -> None:
    url = await api.queue("filters", VisibilityTimeout="0")
    await api.call(
        "send_message",
        QueueUrl=url,
        MessageBody="msg",
        MessageAttributes={
            "Help.Me": {"DataType": "String", "StringValue": "Me"},
            "Hello": {"DataType": "String", "StringValue": "There"},
            "General": {"DataType": "String", "StringValue": "Kenobi"},
        },
    )

    async def receive(names: list[str], system: list[str] | None = None) -> dict[str, Any]:
        got = await api.call(
            "receive_message",
            QueueUrl=url,
            MessageAttributeNames=names,
            AttributeNames=system or [],
        )
        message: dict[str, Any] = got["Messages"][0]
        return message

    nothing = await receive([])
    assert "MessageAttributes" not in nothing and "Attributes" not in nothing
    # Recorded: the MD5 covers the attributes returned.
    assert (await receive(["Foo", "Hello"]))["MD5OfMessageAttributes"] == (
        "a311262e065454b75da111d535b8dacd"
    )
    assert (await receive(["Hello", "General"]))["MD5OfMessageAttributes"] == (
        "fca026605781cb4126a1e9044df24232"
    )
    prefixed = await receive(["Hel.*"])
    assert set(prefixed["MessageAttributes"]) == {"Hello", "Help.Me"}
    assert prefixed["MD5OfMessageAttributes"] == "83fee93c1bcd8b9a5a923ffacdc636c7"
    for every in (["All"], [".*"], ["*"]):
        assert (await receive(every))["MD5OfMessageAttributes"] == (
            "4c360f3fdafd970e05fae2f149d997f5"
        )
    assert "MessageAttributes" not in await receive(["Foo", "Help"])
    only = await receive([], ["SenderId", "SequenceNumber"])
    assert set(only["Attributes"]) == {"SenderId"}


async def test_batch_entries_succeed_and_fail_each_on_its_own(api: Api) -> None:
    url = await api.queue("batch", MaximumMessageSize="1024")
    answer = await api.call(
        "send_message_batch",
        QueueUrl=url,
        Entries=[
            {"Id": "ok", "MessageBody": "fine"},
            {"Id": "big", "MessageBody": "x" * 2000},
            {"Id": "bad-char", "MessageBody": "nul \x00"},
            {
                "Id": "attr",
                "MessageBody": "b",
                "MessageAttributes": {"AWS.x": {"DataType": "String", "StringValue": "v"}},
            },
            {"Id": "ok2", "MessageBody": "fine too"},
        ],
    )
    assert [entry["Id"] for entry in answer["Successful"]] == ["ok", "ok2"]
    failed = {entry["Id"]: entry for entry in answer["Failed"]}
    assert set(failed) == {"big", "bad-char", "attr"}
    assert failed["big"]["Code"] == "InvalidParameterValue"
    assert failed["big"]["SenderFault"] is True
    assert failed["bad-char"]["Code"] == "InvalidMessageContents"
    assert failed["attr"]["Code"] == "InvalidParameterValue"
    got = await api.call("receive_message", QueueUrl=url, MaxNumberOfMessages=10)
    assert sorted(m["Body"] for m in got["Messages"]) == ["fine", "fine too"]
    deleted = await api.call(
        "delete_message_batch",
        QueueUrl=url,
        Entries=[
            {"Id": "a", "ReceiptHandle": got["Messages"][0]["ReceiptHandle"]},
            {"Id": "b", "ReceiptHandle": "not-a-handle"},
        ],
    )
    assert deleted["Successful"] == [{"Id": "a"}]
    assert deleted["Failed"][0]["Id"] == "b"
    assert deleted["Failed"][0]["Code"] == "ReceiptHandleIsInvalid"
    # Whole-batch errors: query codes as AWS recorded them.
    too_many = await api.error(
        "send_message_batch",
        QueueUrl=url,
        Entries=[{"Id": str(n), "MessageBody": "x"} for n in range(11)],
    )
    assert too_many.response["Error"]["Code"] == (
        "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"
    )
    assert isinstance(too_many, api.sqs.exceptions.TooManyEntriesInBatchRequest)
    repeated = await api.error(
        "send_message_batch",
        QueueUrl=url,
        Entries=[{"Id": "a", "MessageBody": "x"}, {"Id": "a", "MessageBody": "y"}],
    )
    assert isinstance(repeated, api.sqs.exceptions.BatchEntryIdsNotDistinct)


async def test_fifo_keeps_order_per_group_and_deduplicates(api: Api) -> None:
    url = await api.queue("jobs.fifo", FifoQueue="true", ContentBasedDeduplication="true")
    first = None
    for n in range(4):
        sent = await api.call("send_message", QueueUrl=url, MessageBody=f"a{n}", MessageGroupId="a")
        first = first or sent
        assert "SequenceNumber" in sent
    again = await api.call("send_message", QueueUrl=url, MessageBody="a0", MessageGroupId="a")
    assert again["MessageId"] == first["MessageId"]  # a duplicate within 5 minutes
    await api.call(
        "send_message",
        QueueUrl=url,
        MessageBody="b0",
        MessageGroupId="b",
        MessageDeduplicationId="explicit",
    )
    got = await api.call(
        "receive_message", QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"]
    )
    bodies = [m["Body"] for m in got["Messages"]]
    assert [b for b in bodies if b.startswith("a")] == ["a0", "a1", "a2", "a3"]
    assert "b0" in bodies
    assert got["Messages"][0]["Attributes"]["MessageGroupId"] in ("a", "b")
    # A group in flight is blocked.
    assert (await api.call("receive_message", QueueUrl=url)).get("Messages", []) == []
    missing = await api.error("send_message", QueueUrl=url, MessageBody="x")
    assert missing.response["Error"]["Code"] == "MissingParameter"
    attributes = await api.call("get_queue_attributes", QueueUrl=url, AttributeNames=["All"])
    assert attributes["Attributes"]["FifoQueue"] == "true"
    assert attributes["Attributes"]["ContentBasedDeduplication"] == "true"
    wrong = await api.error("create_queue", QueueName="plain", Attributes={"FifoQueue": "true"})
    assert wrong.response["Error"]["Code"] == "InvalidParameterValue"


async def test_a_long_poll_returns_as_soon_as_a_message_is_sent(api: Api) -> None:
    url = await api.queue("poll")
    started = time.monotonic()
    polling = asyncio.create_task(api.call("receive_message", QueueUrl=url, WaitTimeSeconds=10))
    await asyncio.sleep(0.5)
    assert not polling.done()
    await api.call("send_message", QueueUrl=url, MessageBody="wake")
    got = await asyncio.wait_for(polling, 5)
    assert [m["Body"] for m in got["Messages"]] == ["wake"]
    assert time.monotonic() - started < 5


async def test_visibility_timeout_and_change_message_visibility(api: Api) -> None:
    url = await api.queue("vis", VisibilityTimeout="60")
    await api.call("send_message", QueueUrl=url, MessageBody="one")
    await api.call("send_message", QueueUrl=url, MessageBody="two")
    got = await api.call("receive_message", QueueUrl=url, MaxNumberOfMessages=2)
    handles = {m["Body"]: m["ReceiptHandle"] for m in got["Messages"]}
    assert (await api.call("receive_message", QueueUrl=url)).get("Messages", []) == []
    await api.call(
        "change_message_visibility", QueueUrl=url, ReceiptHandle=handles["one"], VisibilityTimeout=0
    )
    again = await api.call("receive_message", QueueUrl=url, AttributeNames=["All"])
    assert [m["Body"] for m in again["Messages"]] == ["one"]
    assert again["Messages"][0]["Attributes"]["ApproximateReceiveCount"] == "2"
    batch = await api.call(
        "change_message_visibility_batch",
        QueueUrl=url,
        Entries=[
            {"Id": "two", "ReceiptHandle": handles["two"], "VisibilityTimeout": 0},
            {"Id": "old", "ReceiptHandle": handles["one"], "VisibilityTimeout": 0},
        ],
    )
    assert batch["Successful"] == [{"Id": "two"}]
    assert batch["Failed"][0]["Id"] == "old"
    assert batch["Failed"][0]["Code"] == "InvalidParameterValue"
    short = await api.call("receive_message", QueueUrl=url, VisibilityTimeout=0)
    assert [m["Body"] for m in short["Messages"]] == ["two"]


async def test_queue_attributes_and_counts(api: Api) -> None:
    url = await api.queue("counted", DelaySeconds="0", VisibilityTimeout="20")
    for n in range(3):
        await api.call("send_message", QueueUrl=url, MessageBody=str(n))
    await api.call("send_message", QueueUrl=url, MessageBody="later", DelaySeconds=60)
    await api.call("receive_message", QueueUrl=url)
    every = (await api.call("get_queue_attributes", QueueUrl=url, AttributeNames=["All"]))[
        "Attributes"
    ]
    assert every["ApproximateNumberOfMessages"] == "2"
    assert every["ApproximateNumberOfMessagesNotVisible"] == "1"
    assert every["ApproximateNumberOfMessagesDelayed"] == "1"
    assert every["VisibilityTimeout"] == "20"
    assert every["MaximumMessageSize"] == "1048576"
    assert every["QueueArn"] == "arn:aws:sqs:us-east-1:000000000000:counted"
    assert "FifoQueue" not in every
    assert abs(int(every["CreatedTimestamp"]) - time.time()) < 60
    some = await api.call(
        "get_queue_attributes", QueueUrl=url, AttributeNames=["VisibilityTimeout", "QueueArn"]
    )
    assert set(some["Attributes"]) == {"VisibilityTimeout", "QueueArn"}
    await api.call(
        "set_queue_attributes",
        QueueUrl=url,
        Attributes={"VisibilityTimeout": "7", "ReceiveMessageWaitTimeSeconds": "2"},
    )
    changed = await api.call("get_queue_attributes", QueueUrl=url, AttributeNames=["All"])
    assert changed["Attributes"]["VisibilityTimeout"] == "7"
    assert changed["Attributes"]["ReceiveMessageWaitTimeSeconds"] == "2"
    bad = await api.error("set_queue_attributes", QueueUrl=url, Attributes={"Nope": "1"})
    assert bad.response["Error"]["Code"] == "InvalidAttributeName"
    assert bad.response["Error"]["Message"] == "Unknown Attribute Nope."
    value = await api.error("set_queue_attributes", QueueUrl=url, Attributes={"DelaySeconds": "x"})
    assert value.response["Error"]["Code"] == "InvalidAttributeValue"
    # The same name again: the same queue; another value: QueueAlreadyExists.
    assert await api.queue("counted", VisibilityTimeout="7") == url
    exists = await api.error("create_queue", QueueName="counted", Attributes={"DelaySeconds": "5"})
    assert isinstance(exists, api.sqs.exceptions.QueueNameExists)
    assert exists.response["Error"]["Code"] == "QueueAlreadyExists"
    await api.call("purge_queue", QueueUrl=url)
    purged = await api.call("get_queue_attributes", QueueUrl=url, AttributeNames=["All"])
    assert purged["Attributes"]["ApproximateNumberOfMessages"] == "0"
    again = await api.error("purge_queue", QueueUrl=url)
    assert again.response["Error"]["Code"] == "AWS.SimpleQueueService.PurgeQueueInProgress"
    assert again.response["ResponseMetadata"]["HTTPStatusCode"] == 403


async def test_a_missing_queue_is_aws_s_error_as_botocore_shows_it(api: Api) -> None:
    error = await api.error("get_queue_url", QueueName="nope")
    assert isinstance(error, api.sqs.exceptions.QueueDoesNotExist)
    assert error.response["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue"
    assert error.response["Error"]["QueryErrorCode"] == "QueueDoesNotExist"
    assert error.response["Error"]["Type"] == "Sender"
    assert error.response["Error"]["Message"] == "The specified queue does not exist."
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    url = f"{api.server.url}/000000000000/nope"
    sent = await api.error("send_message", QueueUrl=url, MessageBody="x")
    assert isinstance(sent, api.sqs.exceptions.QueueDoesNotExist)
    count = await api.error("receive_message", QueueUrl=url, MaxNumberOfMessages=11)
    assert count.response["Error"]["Code"] == "InvalidParameterValue"
    assert count.response["Error"]["QueryErrorCode"] == "InvalidParameterValueException"
    assert count.response["Error"]["Message"] == (
        "Value 11 for parameter MaxNumberOfMessages is invalid. Reason: Must be between 1"
        " and 10, if provided."
    )
    unserved = await api.error("list_queue_tags", QueueUrl=url)
    assert unserved.response["ResponseMetadata"]["HTTPStatusCode"] == 501


async def test_declared_and_created_queues_are_the_same_queues(api: Api) -> None:
    listed = await api.call("list_queues")
    assert listed["QueueUrls"] == [f"{api.server.url}/000000000000/declared"]
    declared = await api.call("get_queue_url", QueueName="declared")
    attributes = await api.call(
        "get_queue_attributes", QueueUrl=declared["QueueUrl"], AttributeNames=["VisibilityTimeout"]
    )
    assert attributes["Attributes"] == {"VisibilityTimeout": "45"}
    for n in range(5):
        await api.queue(f"made-{n}")
    assert "made-0" in api.runtime.resource_names()
    assert api.runtime.resource_arn("made-0") == "arn:aws:sqs:us-east-1:000000000000:made-0"
    page = await api.call("list_queues", QueueNamePrefix="made-", MaxResults=2)
    assert [url.rsplit("/", 1)[1] for url in page["QueueUrls"]] == ["made-0", "made-1"]
    rest = await api.call(
        "list_queues", QueueNamePrefix="made-", MaxResults=10, NextToken=page["NextToken"]
    )
    assert [url.rsplit("/", 1)[1] for url in rest["QueueUrls"]] == ["made-2", "made-3", "made-4"]
    assert "NextToken" not in rest
    await api.call("delete_queue", QueueUrl="http://elsewhere/1/made-4")
    assert "made-4" not in api.runtime.resource_names()
    dlq = await api.queue("dlq")
    arn = (await api.call("get_queue_attributes", QueueUrl=dlq, AttributeNames=["QueueArn"]))[
        "Attributes"
    ]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "3"})
    source = await api.queue("source", RedrivePolicy=policy)
    sources = await api.call("list_dead_letter_source_queues", QueueUrl=dlq)
    assert sources["queueUrls"] == [source]
    stored = await api.call("get_queue_attributes", QueueUrl=source, AttributeNames=["All"])
    assert json.loads(stored["Attributes"]["RedrivePolicy"]) == {
        "deadLetterTargetArn": arn,
        "maxReceiveCount": 3,
    }


async def test_an_events_rule_routes_put_events_to_a_queue_made_through_the_api(
    api: Api,
) -> None:
    url = await api.queue("orders")
    arn = (await api.call("get_queue_attributes", QueueUrl=url, AttributeNames=["QueueArn"]))[
        "Attributes"
    ]["QueueArn"]
    await api.call(
        "put_rule", "events", Name="orders", EventPattern=json.dumps({"source": ["shop"]})
    )
    put = await api.call("put_targets", "events", Rule="orders", Targets=[{"Id": "q", "Arn": arn}])
    assert put["FailedEntryCount"] == 0
    answer = await api.call(
        "put_events",
        "events",
        Entries=[{"Source": "shop", "DetailType": "Order", "Detail": json.dumps({"total": 12})}],
    )
    got = await api.call("receive_message", QueueUrl=url, WaitTimeSeconds=10)
    (message,) = got["Messages"]
    event = json.loads(message["Body"])
    assert event["id"] == answer["Entries"][0]["EventId"]
    assert event["source"] == "shop"
    assert event["detail-type"] == "Order"
    assert event["detail"] == {"total": 12}
    assert set(event) >= {"version", "account", "time", "region", "resources"}


async def test_closing_the_endpoint_ends_a_long_poll(tmp_path: Path) -> None:
    runtime = Runtime(state_path=tmp_path / "state.db", plugins=PLUGINS)
    server = ApiServer(runtime, served_services(PLUGINS), "127.0.0.1", 0)
    await server.start()
    async with runtime:
        api = Api(runtime, server)
        url = await api.queue("idle")
        polling = asyncio.create_task(api.call("receive_message", QueueUrl=url, WaitTimeSeconds=20))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        await server.close()
        got = await asyncio.wait_for(polling, 10)
        assert got.get("Messages", []) == []
        assert time.monotonic() - started < 5


async def test_without_a_state_database_sqs_says_so_not_500() -> None:
    runtime = Runtime(plugins=PLUGINS)
    server = ApiServer(runtime, served_services(PLUGINS), "127.0.0.1", 0)
    await server.start()
    try:
        async with runtime:
            error = await Api(runtime, server).error("list_queues")
        assert error.response["Error"]["Code"] == "AWS.SimpleQueueService.UnsupportedOperation"
        assert "state database" in error.response["Error"]["Message"]
    finally:
        await server.close()
