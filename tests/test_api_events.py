"""The events API over HTTP: boto3 against an ApiServer on a real port, the runtime in process.

boto3 is a blocking client: its calls run in a thread while the runtime and
the server run on the test's event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from yarl import URL

from pipelines.api import served_services

from .apiclient import PLUGINS, Api, started_api
from .helpers import eventually

QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:orders"
#: The recorder type (tests' own) has no AWS ARN: the project's form.
AUDIT_ARN = "arn:pipelines:recorder:us-east-1:123456789012:audit"
DEAD_ARN = "arn:pipelines:recorder:us-east-1:000000000000:dead"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async for started in started_api(tmp_path):
        yield started


async def test_a_rule_put_through_the_api_delivers_put_events_to_its_target(api: Api) -> None:
    pattern = {"source": ["shop"], "detail": {"total": [{"numeric": [">", 100]}]}}
    made = await api.call("put_rule", Name="big", EventPattern=json.dumps(pattern))
    assert made["RuleArn"].endswith(":rule/big")
    put = await api.call(
        "put_targets",
        Rule="big",
        Targets=[{"Id": "a", "Arn": AUDIT_ARN}],
    )
    assert put == {"FailedEntryCount": 0, "FailedEntries": []}
    answer = await api.call(
        "put_events",
        Entries=[
            {"Source": "shop", "DetailType": "Order", "Detail": json.dumps({"total": 120})},
            {"Source": "shop", "DetailType": "Order", "Detail": json.dumps({"total": 5})},
            {"Source": "shop", "DetailType": "Order", "Detail": "{not json"},
        ],
    )
    assert answer["FailedEntryCount"] == 1
    assert answer["Entries"][2] == {
        "ErrorCode": "MalformedDetail",
        "ErrorMessage": "Detail is malformed.",
    }
    assert all("EventId" in entry for entry in answer["Entries"][:2])
    audit = api.recorder("audit")
    await eventually(lambda: len(audit.received) == 1)
    delivered = audit.received[0].payload
    assert delivered["id"] == answer["Entries"][0]["EventId"]
    assert delivered["detail"] == {"total": 120}
    assert delivered["detail-type"] == "Order"


async def test_rules_are_described_listed_enabled_disabled_and_deleted(api: Api) -> None:
    for name in ("a-1", "a-2", "b-1"):
        await api.call("put_rule", Name=name, EventPattern='{"source": ["x"]}', Description=name)
    described = await api.call("describe_rule", Name="a-2")
    assert described["Name"] == "a-2"
    assert described["State"] == "ENABLED"
    assert json.loads(described["EventPattern"]) == {"source": ["x"]}
    assert described["EventBusName"] == "default"
    listed = await api.call("list_rules", NamePrefix="a-")
    assert [rule["Name"] for rule in listed["Rules"]] == ["a-1", "a-2"]
    first = await api.call("list_rules", Limit=2)
    assert [rule["Name"] for rule in first["Rules"]] == ["a-1", "a-2"]
    rest = await api.call("list_rules", Limit=2, NextToken=first["NextToken"])
    assert [rule["Name"] for rule in rest["Rules"]] == ["b-1"]
    assert "NextToken" not in rest
    await api.call("disable_rule", Name="a-1")
    assert (await api.call("describe_rule", Name="a-1"))["State"] == "DISABLED"
    await api.call("enable_rule", Name="a-1")
    assert (await api.call("describe_rule", Name="a-1"))["State"] == "ENABLED"
    await api.call("delete_rule", Name="a-1")
    missing = await api.error("describe_rule", Name="a-1")
    assert missing["Error"]["Code"] == "ResourceNotFoundException"
    assert missing["ResponseMetadata"]["HTTPStatusCode"] == 400
    await api.call("delete_rule", Name="never-was")  # AWS: no error


async def test_targets_round_trip_in_aws_names_and_a_bad_arn_fails_alone(api: Api) -> None:
    await api.call("put_rule", Name="r", EventPattern='{"source": ["shop"]}')
    transformer = {"InputPathsMap": {"t": "$.detail.total"}, "InputTemplate": '{"total": <t>}'}
    put = await api.call(
        "put_targets",
        Rule="r",
        Targets=[
            {
                "Id": "q",
                "Arn": QUEUE_ARN,
                "InputTransformer": transformer,
                "RetryPolicy": {"MaximumRetryAttempts": 3, "MaximumEventAgeInSeconds": 600},
                "DeadLetterConfig": {"Arn": DEAD_ARN},
            },
            {"Id": "gone", "Arn": "arn:aws:sqs:us-east-1:123456789012:nowhere"},
            # a resource of that name exists, but it is a queue, not a function
            {"Id": "kind", "Arn": "arn:aws:lambda:us-east-1:123456789012:function:orders"},
        ],
    )
    assert put["FailedEntryCount"] == 2
    gone, kind = put["FailedEntries"]
    assert (gone["TargetId"], kind["TargetId"]) == ("gone", "kind")
    assert gone["ErrorCode"] == "ValidationException"
    assert "arn:aws:sqs:us-east-1:123456789012:nowhere" in gone["ErrorMessage"]
    assert "function:orders" in kind["ErrorMessage"]
    (target,) = (await api.call("list_targets_by_rule", Rule="r"))["Targets"]
    assert target["Id"] == "q"
    assert target["Arn"].startswith("arn:aws:sqs:") and target["Arn"].endswith(":orders")
    assert target["InputTransformer"] == transformer
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 3, "MaximumEventAgeInSeconds": 600}
    assert target["DeadLetterConfig"]["Arn"] == DEAD_ARN
    names = await api.call("list_rule_names_by_target", TargetArn=QUEUE_ARN)
    assert names["RuleNames"] == ["r"]
    refused = await api.error("delete_rule", Name="r")
    assert refused["Error"]["Code"] == "ValidationException"
    await api.call("remove_targets", Rule="r", Ids=["q"])
    assert (await api.call("list_targets_by_rule", Rule="r"))["Targets"] == []
    await api.call("delete_rule", Name="r")


async def test_event_buses_are_created_used_and_deleted(api: Api) -> None:
    made = await api.call("create_event_bus", Name="billing")
    assert made["EventBusArn"].endswith(":event-bus/billing")
    again = await api.error("create_event_bus", Name="billing")
    assert again["Error"]["Code"] == "ResourceAlreadyExistsException"
    names = [bus["Name"] for bus in (await api.call("list_event_buses"))["EventBuses"]]
    assert names == ["billing", "default"]
    await api.call("put_rule", Name="all", EventBusName="billing", EventPattern='{"source": ["b"]}')
    await api.call(
        "put_targets",
        Rule="all",
        EventBusName=made["EventBusArn"],  # a bus named by its ARN
        Targets=[{"Id": "a", "Arn": AUDIT_ARN}],
    )
    put = await api.call(
        "put_events",
        Entries=[
            {"Source": "b", "DetailType": "d", "Detail": "{}", "EventBusName": "billing"},
            {"Source": "b", "DetailType": "d", "Detail": "{}", "EventBusName": made["EventBusArn"]},
        ],
    )
    audit = api.recorder("audit")
    await eventually(lambda: len(audit.received) == 2)
    assert {r.payload["id"] for r in audit.received} == {e["EventId"] for e in put["Entries"]}
    assert (await api.call("describe_event_bus", Name="billing"))["Arn"] == made["EventBusArn"]
    await api.call("remove_targets", Rule="all", EventBusName="billing", Ids=["a"])
    await api.call("delete_rule", Name="all", EventBusName="billing")
    await api.call("delete_event_bus", Name="billing")
    gone = await api.error("describe_event_bus", Name="billing")
    assert gone["Error"]["Code"] == "ResourceNotFoundException"


async def test_test_event_pattern_answers_as_aws_does(api: Api) -> None:
    event = {
        "id": "1",
        "account": "123456789012",
        "source": "shop",
        "time": "2026-12-04T00:00:00Z",
        "region": "us-east-1",
        "detail-type": "Order",
        "detail": {"total": 7},
    }
    matching = await api.call(
        "test_event_pattern", EventPattern='{"detail": {"total": [7]}}', Event=json.dumps(event)
    )
    assert matching == {"Result": True}
    other = await api.call(
        "test_event_pattern", EventPattern='{"detail": {"total": [8]}}', Event=json.dumps(event)
    )
    assert other == {"Result": False}
    bad = await api.error(
        "test_event_pattern", EventPattern='{"detail": {"total": []}}', Event=json.dumps(event)
    )
    assert bad["Error"]["Code"] == "InvalidEventPatternException"
    assert "Empty arrays are not allowed" in bad["Error"]["Message"]
    incomplete = await api.error(
        "test_event_pattern", EventPattern='{"source": ["a"]}', Event='{"source": "a"}'
    )
    assert incomplete["Error"]["Code"] == "ValidationException"
    assert "Parameter Event is not valid" in incomplete["Error"]["Message"]


async def test_requests_are_checked_by_the_model_with_aws_wording(api: Api) -> None:
    status, body = await api.raw(
        "AWSEvents.PutRule", json.dumps({"Name": "x" * 65, "State": "ON"}).encode()
    )
    assert status == 400
    assert body["__type"] == "ValidationException"
    assert body["message"] == (
        "2 validation errors detected: "
        f"Value '{'x' * 65}' at 'name' failed to satisfy constraint:"
        " Member must have length less than or equal to 64; "
        "Value 'ON' at 'state' failed to satisfy constraint: Member must satisfy enum value set:"
        " [ENABLED, DISABLED, ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS]"
    )
    status, body = await api.raw("AWSEvents.PutEvents", b"{}")
    assert (status, body["__type"]) == (400, "ValidationException")
    assert (
        "Value null at 'entries' failed to satisfy constraint: Member must not be null"
        in (body["message"])
    )
    status, body = await api.raw("AWSEvents.PutEvents", json.dumps({"Entries": [{}] * 11}).encode())
    assert "Member must have length less than or equal to 10" in body["message"]
    status, body = await api.raw("AWSEvents.PutRule", b'{"Name": ')
    assert (status, body["__type"]) == (400, "SerializationException")
    # a body that is not UTF-8: the byte named, not orjson's "surrogates"
    status, body = await api.raw("AWSEvents.PutRule", b'{"Name": "r\xff"}')
    assert (status, body["__type"]) == (400, "SerializationException")
    assert body["message"] == "the body is not UTF-8: byte 0xff at offset 11"
    status, body = await api.raw("AWSEvents.PutRule", b'{"Name": 5}')
    assert (status, body["__type"]) == (400, "SerializationException")
    assert "'name'" in body["message"]


async def _send_raw(url: str, head: str, body: bytes = b"") -> bytes:
    """``head`` (request line and headers) and ``body`` on a socket, then
    hang up: what the server answered before, if anything."""
    address = URL(url)
    reader, writer = await asyncio.open_connection(address.host, address.port)
    writer.write(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(200), 0.5)
    except TimeoutError:
        return b""
    finally:
        writer.close()


async def test_malformed_http_and_a_client_hanging_up_are_one_log_line(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    headers = (
        "Host: x\nX-Amz-Target: AWSEvents.ListRules\nContent-Type: application/x-amz-json-1.1\n"
    )
    answer = await _send_raw(api.server.url, f"POST / HTTP/1.1\n{headers}Content-Length: abc\n")
    assert b" 400 Bad Request" in answer.split(b"\r\n")[0]
    # A body announced longer than sent, then the client goes.
    assert (
        await _send_raw(api.server.url, f"POST / HTTP/1.1\n{headers}Content-Length: 9999\n", b"{}")
        == b""
    )

    def logged() -> bool:
        return any("the client closed the connection" in r.getMessage() for r in caplog.records)

    await eventually(logged)
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
    malformed = [
        r.getMessage() for r in caplog.records if "malformed HTTP request" in r.getMessage()
    ]
    assert len(malformed) == 1
    assert "Content-Length" in malformed[0]
    assert "\n" not in malformed[0]
    assert (await api.call("list_rules"))["Rules"] == []  # the endpoint goes on


async def test_a_connection_reset_inside_an_operation_is_an_aws_internal_failure(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """Only a client that hung up is answered as gone: a reset of a socket
    the operation itself uses, the client still there, is the operation's
    failure, answered in AWS's shape and logged with its traceback."""

    async def resets(call: object, params: object) -> None:
        raise ConnectionResetError("a socket of the operation's own was reset")

    api.server.router.services["events"].operations["ListRules"] = resets
    status, body = await api.raw("AWSEvents.ListRules", b"{}")
    assert (status, body["__type"]) == (500, "InternalFailure")
    assert "ConnectionResetError" in body["message"]
    assert any(r.exc_info and "ListRules failed" in r.getMessage() for r in caplog.records)


async def test_unknown_and_unserved_operations_answer_aws_errors_not_500(api: Api) -> None:
    status, body = await api.raw("AWSEvents.MakeCoffee", b"{}")
    assert (status, body["__type"]) == (400, "UnknownOperationException")
    unserved = await api.error("deauthorize_connection", Name="c")
    assert unserved["Error"]["Code"] == "NotImplemented"
    assert unserved["ResponseMetadata"]["HTTPStatusCode"] == 501
    assert "DeauthorizeConnection" in unserved["Error"]["Message"]
    status, body = await api.raw("Nobody_2020.Do", b"{}", scope="nobody")
    assert (status, body["__type"]) == (400, "UnknownService")
    assert (
        "'nobody' is not a service this endpoint serves (served: cloudwatch, events"
        in body["message"]
    )


async def test_an_archive_made_through_the_api_keeps_events_and_a_replay_redelivers_them(
    api: Api,
) -> None:
    made = await api.call(
        "create_archive",
        ArchiveName="orders",
        EventSourceArn="arn:aws:events:us-east-1:123456789012:event-bus/default",
        EventPattern='{"source": ["shop"]}',
        RetentionDays=3,
    )
    assert made["ArchiveArn"].endswith(":archive/orders")
    assert made["State"] == "ENABLED"
    again = await api.error(
        "create_archive",
        ArchiveName="orders",
        EventSourceArn="arn:aws:events:us-east-1:123456789012:event-bus/default",
    )
    assert again["Error"]["Code"] == "ResourceAlreadyExistsException"
    await api.call("put_rule", Name="r", EventPattern='{"source": ["shop"]}')
    await api.call("put_targets", Rule="r", Targets=[{"Id": "a", "Arn": AUDIT_ARN}])
    before = api.runtime.clock.time()
    await api.call(
        "put_events",
        Entries=[
            {"Source": "shop", "DetailType": "Order", "Detail": '{"n": 1}'},
            {"Source": "other", "DetailType": "Order", "Detail": '{"n": 2}'},
        ],
    )
    audit = api.recorder("audit")
    await eventually(lambda: len(audit.received) == 1)
    described = await api.call("describe_archive", ArchiveName="orders")
    assert described["EventCount"] == 1  # the pattern keeps the shop event only
    assert described["RetentionDays"] == 3
    assert described["EventPattern"] == '{"source": ["shop"]}'
    listed = await api.call("list_archives", NamePrefix="ord")
    assert [a["ArchiveName"] for a in listed["Archives"]] == ["orders"]
    updated = await api.call("update_archive", ArchiveName="orders", RetentionDays=9)
    assert updated["ArchiveArn"] == made["ArchiveArn"]
    assert (await api.call("describe_archive", ArchiveName="orders"))["RetentionDays"] == 9
    started = await api.call(
        "start_replay",
        ReplayName="again",
        EventSourceArn=made["ArchiveArn"],
        EventStartTime=before - 60,
        EventEndTime=api.runtime.clock.time() + 60,
        Destination={
            "Arn": "arn:aws:events:us-east-1:123456789012:event-bus/default",
            "FilterArns": [made["ArchiveArn"].replace("archive/orders", "rule/r")],
        },
    )
    assert started["State"] in ("STARTING", "RUNNING", "COMPLETED")
    await eventually(lambda: len(audit.received) == 2)
    replayed = audit.received[1].payload
    assert replayed["detail"] == {"n": 1}
    assert replayed["replay-name"] == "again"

    async def completed() -> bool:
        return (await api.call("describe_replay", ReplayName="again"))["State"] == "COMPLETED"

    for _ in range(200):
        if await completed():
            break
        await asyncio.sleep(0.05)
    replay = await api.call("describe_replay", ReplayName="again")
    assert replay["State"] == "COMPLETED"
    assert replay["EventSourceArn"] == made["ArchiveArn"]
    assert [r["ReplayName"] for r in (await api.call("list_replays"))["Replays"]] == ["again"]
    done = await api.error("cancel_replay", ReplayName="again")
    assert done["Error"]["Code"] == "IllegalStatusException"
    missing = await api.error("describe_replay", ReplayName="nope")
    assert missing["Error"]["Code"] == "ResourceNotFoundException"
    await api.call("delete_archive", ArchiveName="orders")
    gone = await api.error("describe_archive", ArchiveName="orders")
    assert gone["Error"]["Code"] == "ResourceNotFoundException"


def test_docs_list_exactly_the_served_operations() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    # The table whose header starts "| service |", to its last row.
    lines = doc.splitlines()
    start = lines.index("| service | protocol | operations |")
    table = itertools.takewhile(lambda line: line.startswith("|"), lines[start + 2 :])
    rows = {
        cells[0]: {op.strip() for op in cells[2].split(",")}
        for line in table
        for cells in [[cell.strip() for cell in line.strip("|").split("|")]]
    }
    served = {name: set(service.operations) for name, service in served_services(PLUGINS).items()}
    assert rows == served


async def test_a_body_over_the_limit_is_refused_in_aws_shape(api: Api) -> None:
    from pipelines.api.server import MAX_BODY

    entry = {"Source": "s", "DetailType": "d", "Detail": json.dumps({"pad": "x" * MAX_BODY})}
    status, body = await api.raw("AWSEvents.PutEvents", json.dumps({"Entries": [entry]}).encode())
    assert status == 413
    assert body == {
        "__type": "RequestEntityTooLarge",
        "message": f"the body is over {MAX_BODY} bytes",
    }
