"""SQS over AWS's query protocol (forms in, XML out), as older SDKs and AWS CLI v1 send it.

Two kinds of client, neither ours: a botocore client built from botocore's
last query model of SQS (tests/data/botocore-sqs-query, the model those
SDKs were generated from), so requests and the parsing of answers are
botocore's own; and forms written as AWS's SQS API reference writes them,
sent with urllib, whose XML is read here (the queue's URL as the address,
GET requests). MD5s are AWS's recorded values (LocalStack's
test_sqs.snapshot.json).
"""

from __future__ import annotations

import asyncio
import base64
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import botocore.session
import pytest

from pipelines.api import ApiServer, served_services
from pipelines.runtime import Runtime

from .apiclient import aws_call, aws_refusal, json_answer
from .recorder import plugin_manager

PLUGINS = plugin_manager()
MODELS = Path(__file__).parent / "data" / "botocore-sqs-query"
NS = {"sqs": "http://queue.amazonaws.com/doc/2012-11-05/"}
#: A SigV4 header naming sqs in its scope (signatures are not checked by default).
AUTH = (
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/sqs/aws4_request,"
    " SignedHeaders=host, Signature=00"
)
#: Recorded: MD5OfMessageBody of "msg"; MD5OfMessageAttributes of Hello=There (String).
MSG_MD5 = "6e2baaf3b97dbeef01c0043275f9a0e7"
HELLO_MD5 = "a311262e065454b75da111d535b8dacd"
#: Recorded (test_send_message_with_binary_attributes): a Binary attribute ``attr1``.
TRACE = b"traceparent\x1e00-774062d6c37081a5a0b9b5b88e30627c-2d2482211f6489da-01"
TRACE_MD5 = "8cbe4db156db8a94db8b801b7addb984"


def query_client(url: str) -> Any:
    """A botocore sqs client speaking the query protocol by botocore's own
    last query model of SQS (what botocore <= 1.31.80 and AWS CLI v1 sent)."""
    session = botocore.session.get_session()
    session.get_component("data_loader").search_paths.insert(0, str(MODELS))
    client = session.create_client(
        "sqs",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
    )
    assert client.meta.service_model.protocol == "query"
    return client


class Api:
    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.sqs = query_client(server.url)

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        return await aws_call(self.sqs, operation, **params)

    async def error(self, operation: str, **params: Any) -> botocore.exceptions.ClientError:
        return await aws_refusal(self.sqs, operation, **params)

    async def form(
        self, params: dict[str, str], path: str = "/", method: str = "POST", *, signed: bool = True
    ) -> tuple[int, str, ET.Element]:
        """A query request as AWS's API reference writes it: status, content
        type and the XML answer (``signed``: with an Authorization header
        whose scope names the service)."""
        encoded = urllib.parse.urlencode(params)
        url = f"{self.server.url}{path}"
        data: bytes | None = encoded.encode()
        headers = {"Authorization": AUTH} if signed else {}
        if method == "GET":
            url, data = f"{url}?{encoded}", None
        else:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)

        def send() -> tuple[int, str, ET.Element]:
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    return (
                        answer.status,
                        answer.headers["Content-Type"],
                        ET.fromstring(answer.read()),
                    )
            except urllib.error.HTTPError as error:
                return error.code, error.headers["Content-Type"], ET.fromstring(error.read())

        return await asyncio.to_thread(send)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    runtime = Runtime(state_path=tmp_path / "state.db", plugins=PLUGINS)
    server = ApiServer(runtime, served_services(PLUGINS), "127.0.0.1", 0)
    await server.start()
    try:
        async with runtime:
            yield Api(server)
    finally:
        await server.close()


def _text(element: ET.Element, path: str) -> str:
    found = element.find(path, NS)
    assert found is not None, f"no {path} in {ET.tostring(element).decode()}"
    return found.text or ""


async def test_queues_by_the_query_client(api: Api) -> None:
    made = await api.call(
        "create_queue",
        QueueName="work",
        Attributes={"VisibilityTimeout": "40", "DelaySeconds": "2"},
    )
    url = made["QueueUrl"]
    assert url == f"{api.server.url}/000000000000/work"
    assert (await api.call("get_queue_url", QueueName="work"))["QueueUrl"] == url
    await api.call("create_queue", QueueName="other")
    other = f"{api.server.url}/000000000000/other"
    assert (await api.call("list_queues"))["QueueUrls"] == [other, url]  # by name
    assert (await api.call("list_queues", QueueNamePrefix="wo"))["QueueUrls"] == [url]
    every = (await api.call("get_queue_attributes", QueueUrl=url, AttributeNames=["All"]))[
        "Attributes"
    ]
    # The attributes CreateQueue's Attribute.N.Name/Value gave, and AWS's defaults.
    assert every["VisibilityTimeout"] == "40"
    assert every["DelaySeconds"] == "2"
    assert every["MessageRetentionPeriod"] == "345600"
    assert every["QueueArn"] == "arn:aws:sqs:us-east-1:000000000000:work"
    some = await api.call(
        "get_queue_attributes", QueueUrl=url, AttributeNames=["QueueArn", "DelaySeconds"]
    )
    assert some["Attributes"] == {
        "QueueArn": "arn:aws:sqs:us-east-1:000000000000:work",
        "DelaySeconds": "2",
    }
    await api.call("set_queue_attributes", QueueUrl=url, Attributes={"DelaySeconds": "0"})
    changed = await api.call("get_queue_attributes", QueueUrl=url, AttributeNames=["DelaySeconds"])
    assert changed["Attributes"] == {"DelaySeconds": "0"}
    await api.call("delete_queue", QueueUrl=url)
    assert (await api.call("list_queues"))["QueueUrls"] == [other]


async def test_send_and_receive_with_attributes_by_the_query_client(api: Api) -> None:
    url = (await api.call("create_queue", QueueName="msgs"))["QueueUrl"]
    hello = {"Hello": {"DataType": "String", "StringValue": "There"}}
    sent = await api.call("send_message", QueueUrl=url, MessageBody="msg", MessageAttributes=hello)
    assert sent["MD5OfMessageBody"] == MSG_MD5
    assert sent["MD5OfMessageAttributes"] == HELLO_MD5
    binary = {"attr1": {"DataType": "Binary", "BinaryValue": TRACE}}
    other = await api.call(
        "send_message", QueueUrl=url, MessageBody="msg", MessageAttributes=binary
    )
    assert other["MD5OfMessageAttributes"] == TRACE_MD5
    got = await api.call(
        "receive_message",
        QueueUrl=url,
        MaxNumberOfMessages=10,
        AttributeNames=["All"],
        MessageAttributeNames=["All"],
    )
    by_id = {message["MessageId"]: message for message in got["Messages"]}
    first, second = by_id[sent["MessageId"]], by_id[other["MessageId"]]
    assert first["Body"] == "msg"
    assert first["MD5OfBody"] == MSG_MD5
    assert first["MessageAttributes"] == hello
    assert first["MD5OfMessageAttributes"] == HELLO_MD5
    assert first["Attributes"]["ApproximateReceiveCount"] == "1"
    assert set(first["Attributes"]) >= {"SenderId", "SentTimestamp"}
    assert second["MessageAttributes"] == binary  # base64 in the XML, bytes again
    assert second["MD5OfMessageAttributes"] == TRACE_MD5
    await api.call("delete_message", QueueUrl=url, ReceiptHandle=first["ReceiptHandle"])
    await api.call(
        "change_message_visibility",
        QueueUrl=url,
        ReceiptHandle=second["ReceiptHandle"],
        VisibilityTimeout=0,
    )
    again = await api.call("receive_message", QueueUrl=url, MaxNumberOfMessages=10)
    assert [message["MessageId"] for message in again["Messages"]] == [other["MessageId"]]
    assert "MessageAttributes" not in again["Messages"][0]  # none asked for


async def test_batches_by_the_query_client(api: Api) -> None:
    url = (await api.call("create_queue", QueueName="batch"))["QueueUrl"]
    answer = await api.call(
        "send_message_batch",
        QueueUrl=url,
        Entries=[
            {
                "Id": "one",
                "MessageBody": "msg",
                "MessageAttributes": {"Hello": {"DataType": "String", "StringValue": "There"}},
            },
            {
                "Id": "bad",
                "MessageBody": "x",
                "MessageAttributes": {"AWS.x": {"DataType": "String", "StringValue": "v"}},
            },
            {"Id": "two", "MessageBody": "second", "DelaySeconds": 0},
        ],
    )
    successful = {entry["Id"]: entry for entry in answer["Successful"]}
    assert set(successful) == {"one", "two"}
    assert successful["one"]["MD5OfMessageBody"] == MSG_MD5
    assert successful["one"]["MD5OfMessageAttributes"] == HELLO_MD5
    (failed,) = answer["Failed"]
    assert failed["Id"] == "bad"
    assert failed["Code"] == "InvalidParameterValue"
    assert failed["SenderFault"] is True
    got = await api.call("receive_message", QueueUrl=url, MaxNumberOfMessages=10)
    handles = [message["ReceiptHandle"] for message in got["Messages"]]
    assert len(handles) == 2
    changed = await api.call(
        "change_message_visibility_batch",
        QueueUrl=url,
        Entries=[{"Id": "a", "ReceiptHandle": handles[0], "VisibilityTimeout": 30}],
    )
    assert changed["Successful"] == [{"Id": "a"}]
    deleted = await api.call(
        "delete_message_batch",
        QueueUrl=url,
        Entries=[
            {"Id": "a", "ReceiptHandle": handles[0]},
            {"Id": "b", "ReceiptHandle": handles[1]},
            {"Id": "c", "ReceiptHandle": "not-a-handle"},
        ],
    )
    assert sorted(entry["Id"] for entry in deleted["Successful"]) == ["a", "b"]
    assert [(entry["Id"], entry["Code"]) for entry in deleted["Failed"]] == [
        ("c", "ReceiptHandleIsInvalid")
    ]


async def test_errors_by_the_query_client(api: Api) -> None:
    missing = await api.error("get_queue_url", QueueName="nope")
    assert isinstance(missing, api.sqs.exceptions.QueueDoesNotExist)
    assert missing.response["Error"] == {
        "Type": "Sender",
        "Code": "AWS.SimpleQueueService.NonExistentQueue",
        "Message": "The specified queue does not exist for this wsdl version.",  # recorded
        "Detail": None,  # SQS's empty <Detail/>
    }
    assert missing.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    url = (await api.call("create_queue", QueueName="errs"))["QueueUrl"]
    many = await api.error(
        "send_message_batch",
        QueueUrl=url,
        Entries=[{"Id": str(n), "MessageBody": "x"} for n in range(11)],
    )
    assert isinstance(many, api.sqs.exceptions.TooManyEntriesInBatchRequest)
    count = await api.error("receive_message", QueueUrl=url, MaxNumberOfMessages=11)
    assert count.response["Error"]["Code"] == "InvalidParameterValue"
    name = await api.error("get_queue_attributes", QueueUrl=url, AttributeNames=["Nope"])
    assert name.response["Error"]["Code"] == "InvalidAttributeName"
    handle = await api.error("delete_message", QueueUrl=url, ReceiptHandle="garbage")
    assert isinstance(handle, api.sqs.exceptions.ReceiptHandleIsInvalid)


async def test_forms_as_aws_s_api_reference_writes_them(api: Api) -> None:
    status, kind, made = await api.form(
        {
            "Action": "CreateQueue",
            "QueueName": "ref",
            "Attribute.1.Name": "VisibilityTimeout",
            "Attribute.1.Value": "40",
            "Version": "2012-11-05",
        }
    )
    assert (status, kind) == (200, "text/xml")
    assert made.tag == f"{{{NS['sqs']}}}CreateQueueResponse"
    url = _text(made, "sqs:CreateQueueResult/sqs:QueueUrl")
    assert _text(made, "sqs:ResponseMetadata/sqs:RequestId")
    # Sent to the queue's own URL, without QueueUrl (older SDKs do so).
    path = urllib.parse.urlsplit(url).path
    status, _, sent = await api.form(
        {
            "Action": "SendMessage",
            "MessageBody": "msg",
            "MessageAttribute.1.Name": "Hello",
            "MessageAttribute.1.Value.StringValue": "There",
            "MessageAttribute.1.Value.DataType": "String",
        },
        path=path,
    )
    assert status == 200
    assert _text(sent, "sqs:SendMessageResult/sqs:MD5OfMessageBody") == MSG_MD5
    assert _text(sent, "sqs:SendMessageResult/sqs:MD5OfMessageAttributes") == HELLO_MD5
    # GET, MessageSystemAttributeName.N (the newer name) and a Binary attribute.
    await api.form(
        {
            "Action": "SendMessage",
            "QueueUrl": url,
            "MessageBody": "bin",
            "MessageAttribute.1.Name": "attr1",
            "MessageAttribute.1.Value.BinaryValue": base64.b64encode(TRACE).decode(),
            "MessageAttribute.1.Value.DataType": "Binary",
        }
    )
    status, _, got = await api.form(
        {
            "Action": "ReceiveMessage",
            "QueueUrl": url,
            "MaxNumberOfMessages": "10",
            "MessageSystemAttributeName.1": "SenderId",
            "MessageAttributeName.1": "All",
        },
        method="GET",
    )
    assert status == 200
    messages = got.findall("sqs:ReceiveMessageResult/sqs:Message", NS)
    assert [_text(m, "sqs:Body") for m in messages] == ["msg", "bin"]
    hello = messages[0]
    assert [_text(a, "sqs:Name") for a in hello.findall("sqs:Attribute", NS)] == ["SenderId"]
    assert _text(hello, "sqs:MessageAttribute/sqs:Name") == "Hello"
    assert _text(hello, "sqs:MessageAttribute/sqs:Value/sqs:StringValue") == "There"
    assert _text(hello, "sqs:MessageAttribute/sqs:Value/sqs:DataType") == "String"
    assert _text(hello, "sqs:MD5OfMessageAttributes") == HELLO_MD5
    binary = _text(messages[1], "sqs:MessageAttribute/sqs:Value/sqs:BinaryValue")
    assert base64.b64decode(binary) == TRACE
    assert _text(messages[1], "sqs:MD5OfMessageAttributes") == TRACE_MD5
    status, _, listed = await api.form({"Action": "ListQueues"})
    assert [q.text for q in listed.findall("sqs:ListQueuesResult/sqs:QueueUrl", NS)] == [url]
    status, _, attributes = await api.form(
        {"Action": "GetQueueAttributes", "QueueUrl": url, "AttributeName.1": "VisibilityTimeout"}
    )
    pairs = attributes.findall("sqs:GetQueueAttributesResult/sqs:Attribute", NS)
    assert [(_text(p, "sqs:Name"), _text(p, "sqs:Value")) for p in pairs] == [
        ("VisibilityTimeout", "40")
    ]


async def test_an_unsigned_form_names_its_service_by_its_version(api: Api) -> None:
    """Without a signature's scope, a query request's ``Version`` (SQS's
    2012-11-05) names the service, POSTed or in a GET's URL."""
    status, _, made = await api.form(
        {"Action": "CreateQueue", "QueueName": "open", "Version": "2012-11-05"}, signed=False
    )
    assert status == 200
    assert _text(made, "sqs:CreateQueueResult/sqs:QueueUrl").endswith("/open")
    status, _, listed = await api.form(
        {"Action": "ListQueues", "Version": "2012-11-05"}, method="GET", signed=False
    )
    assert status == 200
    assert _text(listed, "sqs:ListQueuesResult/sqs:QueueUrl").endswith("/open")
    # No Version (or one no served service has): still no service to answer.
    request = urllib.request.Request(
        f"{api.server.url}/",
        data=b"Action=ListQueues&Version=1999-01-01",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    status, body = await json_answer(request)
    assert (status, body["__type"]) == (400, "UnknownService")


async def test_errors_as_aws_s_xml(api: Api) -> None:
    status, kind, error = await api.form(
        {"Action": "GetQueueUrl", "QueueName": "nope", "Version": "2012-11-05"}
    )
    assert (status, kind) == (400, "text/xml")
    assert error.tag == f"{{{NS['sqs']}}}ErrorResponse"
    assert _text(error, "sqs:Error/sqs:Type") == "Sender"
    assert _text(error, "sqs:Error/sqs:Code") == "AWS.SimpleQueueService.NonExistentQueue"
    assert _text(error, "sqs:Error/sqs:Message") == (
        "The specified queue does not exist for this wsdl version."
    )
    assert error.find("sqs:Error/sqs:Detail", NS) is not None
    assert _text(error, "sqs:RequestId")
    status, _, sent = await api.form(
        {"Action": "SendMessage", "MessageBody": "x"}, path="/000000000000/nope"
    )
    assert status == 400
    assert _text(sent, "sqs:Error/sqs:Code") == "AWS.SimpleQueueService.NonExistentQueue"
    status, _, unknown = await api.form({"Action": "Frobnicate"})
    assert status == 400
    assert _text(unknown, "sqs:Error/sqs:Code") == "InvalidAction"
    status, _, typed = await api.form(
        {"Action": "ReceiveMessage", "QueueUrl": "/1/q", "MaxNumberOfMessages": "ten"}
    )
    assert status == 400  # a value of the wrong type: an error, not a 500
    assert "MaxNumberOfMessages" in _text(typed, "sqs:Error/sqs:Message")
    status, _, required = await api.form({"Action": "SendMessage", "MessageBody": "x"})
    assert status == 400  # no QueueUrl and posted to /: nothing names the queue
    assert "queueUrl" in _text(required, "sqs:Error/sqs:Message")
