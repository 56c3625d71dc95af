"""SQS on the endpoint held to AWS's recorded answers, in both of SQS's protocols.

The facts (codes, messages, statuses, MD5s, members) are AWS's answers as
LocalStack's AWS-validated tests recorded them (tests/aws/services/sqs/
test_sqs.snapshot.json, and the assertions of validated tests without a
snapshot); the tests are ours. LocalStack records most cases once per
protocol (``[sqs]``: JSON 1.0, ``[sqs_query]``: the query protocol); each is
run here by a client speaking that protocol: boto3's JSON client, and a
botocore client built from botocore's last query model of SQS (see
tests/test_api_sqs_query.py). The query protocol's error has no
``QueryErrorCode`` and an empty ``Detail``, as recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from pipelines.api import ApiServer, served_services
from pipelines.runtime import Runtime

from .apiclient import aws_call, aws_refusal, boto
from .recorder import plugin_manager
from .test_api_sqs_query import query_client

PLUGINS = plugin_manager()
PROTOCOLS = ["json", "query"]
#: A case AWS recorded through the JSON client alone runs through that one.
JSON_ONLY = pytest.mark.parametrize("api", ["json"], indirect=True)
#: Query codes of the two InvalidParameterValue/MissingParameter answers in JSON (recorded).
INVALID = ("InvalidParameterValue", "InvalidParameterValueException")
MISSING = ("MissingParameter", "MissingRequiredParameterException")
BATCH_ID = (
    "A batch entry id can only contain alphanumeric characters, hyphens and underscores."
    " It can be at most 80 letters long."
)
TOO_MANY = "Maximum number of entries per request are 10. You have sent 20."
NO_DEDUP = (
    "The queue should either have ContentBasedDeduplication enabled or MessageDeduplicationId"
    " provided explicitly"
)
ID_RULE = "can only include alphanumeric and punctuation characters. 1 to 128 in length."
#: Recorded MD5s: "msg", and the attributes Help.Me=Me, Hello=There, General=Kenobi.
MSG_MD5 = "6e2baaf3b97dbeef01c0043275f9a0e7"
THREE = {
    "Help.Me": {"DataType": "String", "StringValue": "Me"},
    "Hello": {"DataType": "String", "StringValue": "There"},
    "General": {"DataType": "String", "StringValue": "Kenobi"},
}
THREE_MD5 = "4c360f3fdafd970e05fae2f149d997f5"


class Api:
    """A started endpoint and an sqs client speaking one protocol."""

    def __init__(self, server: ApiServer, protocol: str) -> None:
        self.server = server
        self.protocol = protocol
        self.sqs = boto("sqs", server.url) if protocol == "json" else query_client(server.url)

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        return await aws_call(self.sqs, operation, **params)

    async def refusal(self, operation: str, **params: Any) -> botocore.exceptions.ClientError:
        return await aws_refusal(self.sqs, operation, **params)

    async def queue(self, name: str = "q", **attributes: str) -> str:
        made = await self.call("create_queue", QueueName=name, Attributes=attributes)
        url: str = made["QueueUrl"]
        return url

    def recorded(self, code: str, message: str, query_code: str | None = None) -> dict[str, Any]:
        """An error as botocore shows AWS's recorded answer in this protocol."""
        if self.protocol == "query":
            return {"Type": "Sender", "Code": code, "Message": message, "Detail": None}
        return {"Type": "Sender", "Code": code, "Message": message, "QueryErrorCode": query_code}

    async def error(
        self,
        recorded: tuple[str, str, str | None],
        operation: str,
        *,
        status: int = 400,
        **params: Any,
    ) -> None:
        """The call is refused with AWS's recorded code, message, query code and status."""
        refused = await self.refusal(operation, **params)
        code, message, query_code = recorded
        assert refused.response["Error"] == self.recorded(code, message, query_code)
        assert refused.response["ResponseMetadata"]["HTTPStatusCode"] == status


@pytest.fixture(params=PROTOCOLS)
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    runtime = Runtime(state_path=tmp_path / "state.db", plugins=PLUGINS)
    server = ApiServer(runtime, served_services(PLUGINS), "127.0.0.1", 0)
    await server.start()
    try:
        async with runtime:
            yield Api(server, request.param)
    finally:
        await server.close()


def _batch(count: int) -> list[dict[str, str]]:
    return [{"Id": f"message-{n}", "MessageBody": f"messageBody-{n}"} for n in range(count)]


def _handles(count: int) -> list[dict[str, str]]:
    return [{"Id": f"m-{n}", "ReceiptHandle": "x"} for n in range(count)]


# -- sending: sizes, batches ---------------------------------------------------------------


async def test_send_empty_message(api: Api) -> None:
    url = await api.queue()
    missing = (*MISSING[:1], "The request must contain the parameter MessageBody.", MISSING[1])
    await api.error(missing, "send_message", QueueUrl=url, MessageBody="")


async def test_send_oversized_message_and_with_updated_maximum_message_size(api: Api) -> None:
    # test_send_oversized_message, test_send_message_with_updated_maximum_message_size:
    # the body and the attribute's name, type and value count together.
    attribute = {"k": {"DataType": "String", "StringValue": "x"}}
    url = await api.queue()
    reason = "One or more parameters are invalid. Reason: Message must be shorter than"
    await api.error(
        (INVALID[0], f"{reason} 1048576 bytes.", INVALID[1]),
        "send_message",
        QueueUrl=url,
        MessageBody="a" * (1048576 - 8 + 1),
        MessageAttributes=attribute,
    )
    await api.call("set_queue_attributes", QueueUrl=url, Attributes={"MaximumMessageSize": "1024"})
    await api.call("send_message", QueueUrl=url, MessageBody="a" * 1024)
    await api.error(
        (INVALID[0], f"{reason} 1024 bytes.", INVALID[1]),
        "send_message",
        QueueUrl=url,
        MessageBody="a" * (1024 - 8 + 1),
        MessageAttributes=attribute,
    )


async def test_send_message_batch_with_oversized_contents(api: Api) -> None:
    url = await api.queue()
    attribute = {"k": {"DataType": "String", "StringValue": "x"}}
    entries = [
        {"Id": "1", "MessageBody": "a" * (1048576 - 8), "MessageAttributes": attribute},
        {"Id": "2", "MessageBody": "a"},
    ]
    too_long = "Batch requests cannot be longer than 1048576 bytes. You have sent 1048577 bytes."
    await api.error(
        ("AWS.SimpleQueueService.BatchRequestTooLong", too_long, "BatchRequestTooLong"),
        "send_message_batch",
        QueueUrl=url,
        Entries=entries,
    )


async def test_send_message_batch_ignores_the_queue_s_maximum_message_size(api: Api) -> None:
    # test_send_message_batch_with_oversized_contents_with_updated_maximum_message_size
    url = await api.queue(MaximumMessageSize="2048")
    attribute = {"k": {"DataType": "String", "StringValue": "x"}}
    answer = await api.call(
        "send_message_batch",
        QueueUrl=url,
        Entries=[
            {"Id": "1", "MessageBody": "a" * (2048 - 8), "MessageAttributes": attribute},
            {"Id": "2", "MessageBody": "a"},
        ],
    )
    assert "Failed" not in answer or answer["Failed"] == []
    assert [
        {key: value for key, value in entry.items() if key != "MessageId"}
        for entry in answer["Successful"]
    ] == [
        {
            "Id": "1",
            "MD5OfMessageAttributes": "a45daa70926828a2f0a1db3418e6feb4",
            "MD5OfMessageBody": "f44facf5a7ee0af446ecf3e0f854441e",
        },
        {"Id": "2", "MD5OfMessageBody": "0cc175b9c0f1b6a831c399e269772661"},
    ]


@JSON_ONLY
async def test_send_batch_message_size(api: Api) -> None:
    url = await api.queue(MaximumMessageSize="1024")
    answer = await api.call(
        "send_message_batch",
        QueueUrl=url,
        Entries=[{"Id": "ok", "MessageBody": "a" * 1024}, {"Id": "big", "MessageBody": "a" * 1025}],
    )
    assert answer["Failed"] == [
        {
            "Code": "InvalidParameterValue",
            "Id": "big",
            "Message": "One or more parameters cannot be validated. Reason: Message must be"
            " shorter than 1024 bytes.",
            "SenderFault": True,
        }
    ]
    assert answer["Successful"][0]["MD5OfMessageBody"] == "c9a34cfc85d982698c6ac89f76071abd"


@pytest.mark.parametrize(
    "operation",
    ["send_message_batch", "delete_message_batch", "change_message_visibility_batch"],
)
async def test_too_many_entries_in_batch_request(api: Api, operation: str) -> None:
    # test_too_many_entries_in_batch_request, test_delete_message_batch_with_too_large_batch,
    # test_change_message_visibility_batch_with_too_large_batch: 20 entries.
    url = await api.queue()
    entries = _batch(20) if operation == "send_message_batch" else _handles(20)
    await api.error(
        (
            "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
            TOO_MANY,
            "TooManyEntriesInBatchRequest",
        ),
        operation,
        QueueUrl=url,
        Entries=entries,
    )


@pytest.mark.parametrize(
    ("operation", "entry_id"),
    [
        ("send_message_batch", "message:abc123"),  # test_invalid_batch_id
        ("delete_message_batch", ""),  # test_delete_message_batch_invalid_msg_id[...]
        ("delete_message_batch", "invalid:id"),
        ("delete_message_batch", "testLongId" * 10),
    ],
)
async def test_invalid_batch_entry_ids(api: Api, operation: str, entry_id: str) -> None:
    url = await api.queue()
    entry: dict[str, str] = {"Id": entry_id}
    entry.update(
        {"MessageBody": "body"} if operation == "send_message_batch" else {"ReceiptHandle": "x"}
    )
    invalid = ("AWS.SimpleQueueService.InvalidBatchEntryId", BATCH_ID, "InvalidBatchEntryId")
    await api.error(invalid, operation, QueueUrl=url, Entries=[entry])


async def test_send_message_batch_with_empty_list(api: Api) -> None:
    url = await api.queue()
    refused = await api.refusal("send_message_batch", QueueUrl=url, Entries=[])
    assert "EmptyBatchRequest" in refused.response["Error"]["Code"]
    assert refused.response["ResponseMetadata"]["HTTPStatusCode"] in (400, 404)


# -- receiving -----------------------------------------------------------------------------


async def test_receive_limits(api: Api) -> None:
    # test_send_receive_max_number_of_messages, test_send_receive_wait_time_seconds
    url = await api.queue()
    await api.call("send_message", QueueUrl=url, MessageBody="message")
    await api.call("send_message", QueueUrl=url, MessageBody="message")
    count = "Value 11 for parameter MaxNumberOfMessages is invalid. Reason: Must be between 1"
    await api.error(
        (INVALID[0], f"{count} and 10, if provided.", INVALID[1]),
        "receive_message",
        QueueUrl=url,
        MaxNumberOfMessages=11,
    )
    for wait in (21, -1):
        reason = f"Value {wait} for parameter WaitTimeSeconds is invalid. Reason: Must be >= 0"
        await api.error(
            (INVALID[0], f"{reason} and <= 20, if provided.", INVALID[1]),
            "receive_message",
            QueueUrl=url,
            WaitTimeSeconds=wait,
        )
    for extra in ({}, {"WaitTimeSeconds": 0}):
        got = await api.call("receive_message", QueueUrl=url, MaxNumberOfMessages=1, **extra)
        (message,) = got["Messages"]
        assert set(message) == {"Body", "MD5OfBody", "MessageId", "ReceiptHandle"}
        assert message["MD5OfBody"] == "78e731027d8fd50ed642340b7c9a63b3"


async def test_receive_empty_queue(api: Api) -> None:
    url = await api.queue()
    assert await api.call("receive_message", QueueUrl=url) == {}
    assert await api.call("receive_message", QueueUrl=url, MaxNumberOfMessages=1) == {}
    waited = await api.call(
        "receive_message", QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=1
    )
    assert waited == {}  # no Messages member at all, as recorded


async def test_receive_message_message_attribute_names_filters(api: Api) -> None:
    url = await api.queue(VisibilityTimeout="0")
    sent = await api.call("send_message", QueueUrl=url, MessageBody="msg", MessageAttributes=THREE)
    assert (sent["MD5OfMessageAttributes"], sent["MD5OfMessageBody"]) == (THREE_MD5, MSG_MD5)

    async def receive(names: list[str]) -> dict[str, Any]:
        got = await api.call(
            "receive_message", QueueUrl=url, WaitTimeSeconds=5, MessageAttributeNames=names
        )
        (message,) = got["Messages"]
        assert message["MD5OfBody"] == MSG_MD5
        return {k: v for k, v in message.items() if k.endswith("Attributes")}

    def pick(*names: str) -> dict[str, Any]:
        return {name: THREE[name] for name in names}

    assert await receive([]) == {}
    for every in (["All"], ["*"], [".*"]):
        assert await receive(every) == {
            "MD5OfMessageAttributes": THREE_MD5,
            "MessageAttributes": THREE,
        }
    assert await receive(["Foo", "Help"]) == {}
    assert await receive(["Hello", "General"]) == {
        "MD5OfMessageAttributes": "fca026605781cb4126a1e9044df24232",
        "MessageAttributes": pick("Hello", "General"),
    }
    assert await receive(["Foo", "Hello"]) == {
        "MD5OfMessageAttributes": "a311262e065454b75da111d535b8dacd",
        "MessageAttributes": pick("Hello"),
    }
    assert await receive(["Hel.*"]) == {
        "MD5OfMessageAttributes": "83fee93c1bcd8b9a5a923ffacdc636c7",
        "MessageAttributes": pick("Hello", "Help.Me"),
    }
    assert await receive(["AWS."]) == {}
    assert await receive(["..foo"]) == {}


async def test_receive_message_attribute_names_filters(api: Api) -> None:
    url = await api.queue(VisibilityTimeout="0")
    foo = {"Foo": {"DataType": "String", "StringValue": "Bar"}}
    await api.call("send_message", QueueUrl=url, MessageBody="msg", MessageAttributes=foo)

    async def receive(names: list[str], user: list[str] | None = None) -> dict[str, Any]:
        got = await api.call(
            "receive_message",
            QueueUrl=url,
            WaitTimeSeconds=5,
            AttributeNames=names,
            MessageAttributeNames=user or [],
        )
        message: dict[str, Any] = got["Messages"][0]
        return message

    every = await receive(["All"])
    assert set(every["Attributes"]) == {
        "ApproximateFirstReceiveTimestamp",
        "ApproximateReceiveCount",
        "SenderId",
        "SentTimestamp",
    }
    assert every["Attributes"]["ApproximateReceiveCount"] == "1"
    assert "MessageAttributes" not in every
    both = await receive(["All"], ["All"])
    assert both["Attributes"]["ApproximateReceiveCount"] == "2"
    assert both["MessageAttributes"] == foo
    assert both["MD5OfMessageAttributes"] == "ae7155c6026991b6d54b11589678bf9c"
    assert set((await receive(["SenderId"]))["Attributes"]) == {"SenderId"}
    assert set((await receive(["SenderId", "SequenceNumber"]))["Attributes"]) == {"SenderId"}


@JSON_ONLY  # botocore's last query model predates MessageSystemAttributeNames
async def test_receive_message_message_system_attribute_names(api: Api) -> None:
    # test_receive_message_message_system_attribute_names_filters and
    # test_message_system_attribute_names_with_attribute_names.
    url = await api.queue(VisibilityTimeout="0")
    await api.call("send_message", QueueUrl=url, MessageBody="msg")

    async def receive(**names: list[str]) -> set[str]:
        got = await api.call("receive_message", QueueUrl=url, WaitTimeSeconds=5, **names)
        return set(got["Messages"][0]["Attributes"])

    every = {
        "ApproximateFirstReceiveTimestamp",
        "ApproximateReceiveCount",
        "SenderId",
        "SentTimestamp",
    }
    assert await receive(MessageSystemAttributeNames=["All"]) == every
    assert await receive(MessageSystemAttributeNames=["SenderId"]) == {"SenderId"}
    assert await receive(MessageSystemAttributeNames=["SenderId", "SequenceNumber"]) == {"SenderId"}
    # Both lists given: what either asks for (recorded: All with SenderId is All).
    assert await receive(MessageSystemAttributeNames=["All"], AttributeNames=["All"]) == every
    assert await receive(MessageSystemAttributeNames=["All"], AttributeNames=["SenderId"]) == every


# -- message attributes ---------------------------------------------------------------------


async def test_send_message_with_binary_attributes(api: Api) -> None:
    url = await api.queue()
    data = b"traceparent\x1e00-774062d6c37081a5a0b9b5b88e30627c-2d2482211f6489da-01"
    binary = {"attr1": {"DataType": "Binary", "BinaryValue": data}}
    await api.call("send_message", QueueUrl=url, MessageBody="test", MessageAttributes=binary)
    got = await api.call("receive_message", QueueUrl=url, MessageAttributeNames=["All"])
    (message,) = got["Messages"]
    assert message["MD5OfBody"] == "098f6bcd4621d373cade4e832627b4f6"
    assert message["MD5OfMessageAttributes"] == "8cbe4db156db8a94db8b801b7addb984"
    assert message["MessageAttributes"] == binary


async def test_send_message_with_empty_string_attribute(api: Api) -> None:
    url = await api.queue()
    empty = (
        "Message (user) attribute 'ErrorDetails' must contain a non-empty value of type 'String'."
    )
    await api.error(
        (INVALID[0], empty, INVALID[1]),
        "send_message",
        QueueUrl=url,
        MessageBody="test",
        MessageAttributes={"ErrorDetails": {"DataType": "String", "StringValue": ""}},
    )


async def test_send_message_with_invalid_string_attributes(api: Api) -> None:
    # test_send_message_with_invalid_string_attributes and
    # test_invalid_string_attributes_cause_invalid_parameter_value_error (validated, no snapshot).
    url = await api.queue()
    valid = {"attr.1øßä": {"StringValue": "Valida", "DataType": "String"}}
    await api.call("send_message", QueueUrl=url, MessageBody="test", MessageAttributes=valid)
    refused: list[dict[str, dict[str, str]]] = [
        {"attr1": {"StringValue": f"Invalid-{chr(8)},{chr(11)}", "DataType": "String"}},
        *(
            {f"{prefix}-Invalid-attr": {"StringValue": "Valid", "DataType": "String"}}
            for prefix in ("aWs.", "AMAZON.", ".")
        ),
        *(
            {f"Invalid-{char}-attr": {"StringValue": "Valid", "DataType": "String"}}
            for char in ("!", '"', "§", "(", "?")
        ),
        {"L" * 257: {"StringValue": "Valid", "DataType": "String"}},
        {"Attribute_name": {"StringValue": "Valid", "DataType": "Invalid"}},
        {"Attribute_name": {"StringValue": "Valid", "DataType": f"Number.{'L' * 256}"}},
        {"Invalid.": {"StringValue": "Valid", "DataType": "String"}},
    ]
    for attributes in refused:
        error = await api.refusal(
            "send_message", QueueUrl=url, MessageBody="test", MessageAttributes=attributes
        )
        assert error.response["Error"]["Code"] == "InvalidParameterValue", attributes


async def test_system_attributes_have_no_effect_on_attr_md5(api: Api) -> None:
    url = await api.queue()
    number = {"timestamp": {"StringValue": "1493147359900", "DataType": "Number"}}
    trace = {
        "AWSTraceHeader": {
            "StringValue": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
            "DataType": "String",
        }
    }
    plain = await api.call(
        "send_message", QueueUrl=url, MessageBody="test", MessageAttributes=number
    )
    traced = await api.call(
        "send_message",
        QueueUrl=url,
        MessageBody="test",
        MessageAttributes=number,
        MessageSystemAttributes=trace,
    )
    assert plain["MD5OfMessageAttributes"] == traced["MD5OfMessageAttributes"]
    assert "MD5OfMessageSystemAttributes" not in plain
    assert traced["MD5OfMessageSystemAttributes"] == "5ae4d5d7636402d80f4eb6d213245a88"


# -- FIFO ----------------------------------------------------------------------------------------


@JSON_ONLY
@pytest.mark.parametrize("group", ["", "a" * 129, "group 123"])
async def test_send_message_to_standard_queue_with_invalid_message_group_id(
    api: Api, group: str
) -> None:
    url = await api.queue()
    message = (
        f"Value {group} for parameter MessageGroupId is invalid. Reason: MessageGroupId {ID_RULE}"
    )
    await api.error(
        (INVALID[0], message, INVALID[1]),
        "send_message",
        QueueUrl=url,
        MessageBody="message",
        MessageGroupId=group,
    )


@JSON_ONLY
@pytest.mark.parametrize("dedup", ["", "a" * 129, "group 123"])
async def test_message_deduplication_id_invalid(api: Api, dedup: str) -> None:
    url = await api.queue("q.fifo", FifoQueue="true")
    reason = f"Reason: MessageDeduplicationId {ID_RULE}"
    await api.error(
        (
            INVALID[0],
            f"Value {dedup} for parameter MessageDeduplicationId is invalid. {reason}",
            INVALID[1],
        ),
        "send_message",
        QueueUrl=url,
        MessageBody="Hello World!",
        MessageGroupId="test",
        MessageDeduplicationId=dedup,
    )


async def test_message_deduplication_id_success(api: Api) -> None:
    url = await api.queue("q.fifo", FifoQueue="true")
    sent = await api.call(
        "send_message",
        QueueUrl=url,
        MessageBody="Hello World!",
        MessageGroupId="test",
        MessageDeduplicationId="a" * 128,
    )
    assert sent["MD5OfMessageBody"]


async def test_posting_to_fifo_requires_deduplicationid_group_id(api: Api) -> None:
    url = await api.queue("q.fifo", FifoQueue="true")
    await api.error(
        (INVALID[0], NO_DEDUP, INVALID[1]),
        "send_message",
        QueueUrl=url,
        MessageBody="test",
        MessageGroupId="group",
    )
    await api.error(
        (MISSING[0], "The request must contain the parameter MessageGroupId.", MISSING[1]),
        "send_message",
        QueueUrl=url,
        MessageBody="test",
        MessageDeduplicationId="dedup",
    )


async def test_send_batch_missing_ids_for_fifo_queue(api: Api) -> None:
    # test_send_batch_missing_deduplication_id_for_fifo_queue and
    # test_send_batch_missing_message_group_id_for_fifo_queue: the whole batch is refused.
    url = await api.queue("q.fifo", FifoQueue="true", ContentBasedDeduplication="false")
    valid = {
        "Id": "a",
        "MessageBody": "body",
        "MessageGroupId": "g",
        "MessageDeduplicationId": "d1",
    }
    await api.error(
        (INVALID[0], NO_DEDUP, INVALID[1]),
        "send_message_batch",
        QueueUrl=url,
        Entries=[valid, {"Id": "b", "MessageBody": "body", "MessageGroupId": "g"}],
    )
    await api.error(
        (INVALID[0], "The request must contain the parameter MessageGroupId.", INVALID[1]),
        "send_message_batch",
        QueueUrl=url,
        Entries=[valid, {"Id": "b", "MessageBody": "body", "MessageDeduplicationId": "d2"}],
    )
    assert await api.call("receive_message", QueueUrl=url) == {}  # nothing was sent


async def test_fifo_queue_send_message_with_delay_seconds(api: Api) -> None:
    # test_fifo_queue_send_message_with_delay_seconds_fails; DelaySeconds 0 is
    # taken (test_send_message_with_delay_0_works_for_fifo).
    url = await api.queue("q.fifo", FifoQueue="true", ContentBasedDeduplication="true")
    reason = "Reason: The request include parameter that is not valid for this queue type."
    await api.error(
        (INVALID[0], f"Value 2 for parameter DelaySeconds is invalid. {reason}", INVALID[1]),
        "send_message",
        QueueUrl=url,
        MessageBody="message",
        MessageGroupId="g",
        DelaySeconds=2,
    )
    sent = await api.call(
        "send_message",
        QueueUrl=url,
        MessageBody="Hello World!",
        MessageGroupId="test",
        MessageDeduplicationId="42",
        DelaySeconds=0,
    )
    got = await api.call("receive_message", QueueUrl=url, VisibilityTimeout=0)
    assert got["Messages"][0]["MD5OfBody"] == sent["MD5OfMessageBody"]


async def test_fifo_receive_message_group_id_ordering(api: Api) -> None:
    url = await api.queue("q.fifo", FifoQueue="true", ContentBasedDeduplication="true")
    for body, group in (("g1-m1", "group-1"), ("g2-m1", "group-2"), ("g1-m2", "group-1")):
        await api.call("send_message", QueueUrl=url, MessageBody=body, MessageGroupId=group)
    await api.call("send_message", QueueUrl=url, MessageBody="g1-m3", MessageGroupId="group-1")
    got = await api.call("receive_message", QueueUrl=url, MaxNumberOfMessages=10)
    assert [m["Body"] for m in got["Messages"]] == ["g1-m1", "g1-m2", "g1-m3", "g2-m1"]


async def test_fifo_empty_message_groups_added_back_to_queue(api: Api) -> None:
    url = await api.queue("q.fifo", FifoQueue="True")
    await api.call(
        "send_message",
        QueueUrl=url,
        MessageDeduplicationId="1",
        MessageGroupId="g1",
        MessageBody="Message 1",
    )
    first = await api.call("receive_message", QueueUrl=url)
    assert first["Messages"][0]["MD5OfBody"] == "68390233272823b7adf13a1db79b2cd7"
    await api.call(
        "delete_message", QueueUrl=url, ReceiptHandle=first["Messages"][0]["ReceiptHandle"]
    )
    assert await api.call("receive_message", QueueUrl=url) == {}
    await api.call(
        "send_message",
        QueueUrl=url,
        MessageDeduplicationId="2",
        MessageGroupId="g1",
        MessageBody="Message 2",
    )
    final = await api.call("receive_message", QueueUrl=url)
    assert [(m["Body"], m["MD5OfBody"]) for m in final["Messages"]] == [
        ("Message 2", "88ef8f31ed540f1c4c03d5fdb06a7935")
    ]


# -- queue attributes ------------------------------------------------------------------------


async def test_create_standard_queue_with_fifo_attribute_raises_error(api: Api) -> None:
    for attribute, value, message in (
        ("FifoQueue", "false", "Unknown Attribute FifoQueue."),
        ("ContentBasedDeduplication", "false", "Unknown Attribute ContentBasedDeduplication."),
        (
            "DeduplicationScope",
            "queue",
            "You can specify the DeduplicationScope only when FifoQueue is set to true.",
        ),
        (
            "FifoThroughputLimit",
            "perQueue",
            "You can specify the FifoThroughputLimit only when FifoQueue is set to true.",
        ),
    ):
        await api.error(
            ("InvalidAttributeName", message, "InvalidAttributeName"),
            "create_queue",
            QueueName="standard",
            Attributes={attribute: value},
        )


async def test_set_unsupported_fifo_attribute(api: Api) -> None:
    # test_set_unsupported_attribute_standard, test_set_unsupported_attribute_fifo
    url = await api.queue("standard")
    unknown = ("InvalidAttributeName", "Unknown Attribute FifoQueue.", "InvalidAttributeName")
    for value in ("true", "false"):
        await api.error(
            unknown, "set_queue_attributes", QueueUrl=url, Attributes={"FifoQueue": value}
        )
    fifo = await api.queue("q.fifo", FifoQueue="true")
    await api.call("set_queue_attributes", QueueUrl=fifo, Attributes={"FifoQueue": "true"})
    modify = (
        "Invalid value for the parameter FifoQueue. Reason: Modifying queue type is not supported."
    )
    await api.error(
        ("InvalidAttributeValue", modify, "InvalidAttributeValue"),
        "set_queue_attributes",
        QueueUrl=fifo,
        Attributes={"FifoQueue": "false"},
    )


async def test_create_queue_with_different_attributes_raises_exception(api: Api) -> None:
    url = await api.queue("q", ReceiveMessageWaitTimeSeconds="1", DelaySeconds="1")
    assert await api.queue("q") == url
    assert await api.queue("q", DelaySeconds="1") == url
    exists = (
        "QueueAlreadyExists",
        "A queue already exists with the same name and a different value for attribute DelaySeconds",
        "QueueNameExists",
    )
    await api.error(
        exists,
        "create_queue",
        QueueName="q",
        Attributes={"ReceiveMessageWaitTimeSeconds": "1", "DelaySeconds": "2"},
    )
    await api.call("set_queue_attributes", QueueUrl=url, Attributes={"DelaySeconds": "2"})
    assert await api.queue("q", ReceiveMessageWaitTimeSeconds="1", DelaySeconds="2") == url
    await api.error(
        exists,
        "create_queue",
        QueueName="q",
        Attributes={"ReceiveMessageWaitTimeSeconds": "1", "DelaySeconds": "1"},
    )


async def test_create_fifo_queue_with_different_attributes_raises_error(api: Api) -> None:
    await api.queue("q.fifo", FifoQueue="true", ContentBasedDeduplication="true")
    await api.error(
        (
            "QueueAlreadyExists",
            "A queue already exists with the same name and a different value for attribute"
            " ContentBasedDeduplication",
            "QueueNameExists",
        ),
        "create_queue",
        QueueName="q.fifo",
        Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "false"},
    )


async def test_queue_attribute_defaults(api: Api) -> None:
    # test_set_queue_attributes_default_values' first answer: every attribute
    # and value AWS gives a new queue, but LastModifiedTimestamp (not kept here).
    url = await api.queue("defaults")
    every = (await api.call("get_queue_attributes", QueueUrl=url, AttributeNames=["All"]))[
        "Attributes"
    ]
    assert every.pop("CreatedTimestamp").isdigit()
    assert every == {
        "ApproximateNumberOfMessages": "0",
        "ApproximateNumberOfMessagesDelayed": "0",
        "ApproximateNumberOfMessagesNotVisible": "0",
        "DelaySeconds": "0",
        "MaximumMessageSize": "1048576",
        "MessageRetentionPeriod": "345600",
        "QueueArn": "arn:aws:sqs:us-east-1:000000000000:defaults",
        "ReceiveMessageWaitTimeSeconds": "0",
        "SqsManagedSseEnabled": "true",
        "VisibilityTimeout": "30",
    }


async def test_successive_purge_calls_fail(api: Api) -> None:
    url = await api.queue("purged")
    await api.call("purge_queue", QueueUrl=url)
    await api.error(
        (
            "AWS.SimpleQueueService.PurgeQueueInProgress",
            "Only one PurgeQueue operation on purged is allowed every 60 seconds.",
            "PurgeQueueInProgress",
        ),
        "purge_queue",
        status=403,
        QueueUrl=url,
    )


async def test_non_existent_queue(api: Api) -> None:
    url = await api.queue("gone")
    await api.call("delete_queue", QueueUrl=url)
    # JSON: "The specified queue does not exist."; query: "... for this wsdl version." (recorded)
    message = "The specified queue does not exist."
    if api.protocol == "query":
        message = "The specified queue does not exist for this wsdl version."
    missing = ("AWS.SimpleQueueService.NonExistentQueue", message, "QueueDoesNotExist")
    await api.error(missing, "get_queue_attributes", QueueUrl=url)
    await api.error(missing, "get_queue_url", QueueName="gone")
    refused = await api.refusal("get_queue_url", QueueName="gone")
    assert isinstance(refused, api.sqs.exceptions.QueueDoesNotExist)


# -- visibility and receipt handles --------------------------------------------------------------


async def test_receipt_handles_after_the_visibility_timeout(api: Api) -> None:
    # test_delete_after_visibility_timeout, test_change_message_visibility_after_visibility_timeout_expiration
    # (standard queue: both taken) and test_fifo_delete_after_visibility_timeout (refused).
    url = await api.queue("vis", VisibilityTimeout="1")
    fifo = await api.queue(
        "vis.fifo", VisibilityTimeout="1", FifoQueue="True", ContentBasedDeduplication="True"
    )
    await api.call("send_message", QueueUrl=url, MessageBody="foobar")
    await api.call("send_message", QueueUrl=url, MessageBody="test")
    await api.call("send_message", QueueUrl=fifo, MessageBody="foobar", MessageGroupId="1")
    got = await api.call("receive_message", QueueUrl=url, MaxNumberOfMessages=2, WaitTimeSeconds=5)
    handles = {m["Body"]: m["ReceiptHandle"] for m in got["Messages"]}
    fifo_got = await api.call("receive_message", QueueUrl=fifo, WaitTimeSeconds=5)
    (fifo_message,) = fifo_got["Messages"]
    assert set(fifo_message) == {"Body", "MD5OfBody", "MessageId", "ReceiptHandle"}
    assert fifo_message["MD5OfBody"] == "3858f62230ac3c915f300c664312c63f"
    await asyncio.sleep(1.2)
    await api.call("delete_message", QueueUrl=url, ReceiptHandle=handles["foobar"])
    changed = await api.call(
        "change_message_visibility",
        QueueUrl=url,
        ReceiptHandle=handles["test"],
        VisibilityTimeout=2,
    )
    assert changed == {}
    assert await api.call("receive_message", QueueUrl=url) == {}  # deleted, and hidden again
    expired = fifo_message["ReceiptHandle"]
    await api.error(
        (
            INVALID[0],
            f"Value {expired} for parameter ReceiptHandle is invalid. Reason: The receipt handle has expired.",
            INVALID[1],
        ),
        "delete_message",
        QueueUrl=fifo,
        ReceiptHandle=expired,
    )


async def test_receipt_handles_of_deleted_and_illegal_messages(api: Api) -> None:
    # test_change_visibility_on_deleted_message_raises_invalid_parameter_value,
    # test_delete_message_with_deleted_receipt_handle, test_delete_message_with_illegal_receipt_handle,
    # test_invalid_receipt_handle_should_return_error_message (validated, no snapshot).
    url = await api.queue()
    await api.call("send_message", QueueUrl=url, MessageBody="foo")
    handle = (await api.call("receive_message", QueueUrl=url, WaitTimeSeconds=5))["Messages"][0][
        "ReceiptHandle"
    ]
    await api.call(
        "change_message_visibility", QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=42
    )
    for _ in range(3):  # a deleted message's handle deletes nothing, without an error
        await api.call("delete_message", QueueUrl=url, ReceiptHandle=handle)
    gone = await api.refusal(
        "change_message_visibility", QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=42
    )
    assert gone.response["Error"]["Code"] == "InvalidParameterValue"
    assert gone.response["Error"]["Message"] == (
        f"Value {handle} for parameter ReceiptHandle is invalid. Reason: Message does not exist"
        " or is not available for visibility timeout change."
    )
    garbage = await api.refusal("delete_message", QueueUrl=url, ReceiptHandle="garbage")
    assert garbage.response["Error"]["Code"] == "ReceiptHandleIsInvalid"
    assert garbage.response["Error"]["Message"] == (
        'The input receipt handle "garbage" is not a valid receipt handle.'
    )
    invalid = await api.refusal(
        "change_message_visibility", QueueUrl=url, ReceiptHandle="INVALID", VisibilityTimeout=60
    )
    assert "ReceiptHandleIsInvalid" in str(invalid)


@JSON_ONLY
async def test_list_queues_pagination(api: Api) -> None:
    urls = [await api.queue(f"q-{n}") for n in range(3)]
    assert (await api.call("list_queues", QueueNamePrefix="q-"))["QueueUrls"] == urls
    first = await api.call("list_queues", QueueNamePrefix="q-", MaxResults=2)
    assert first["QueueUrls"] == urls[:2]
    rest = await api.call(
        "list_queues", QueueNamePrefix="q-", MaxResults=2, NextToken=first["NextToken"]
    )
    assert rest == {"QueueUrls": urls[2:]}
