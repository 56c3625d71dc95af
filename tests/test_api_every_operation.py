"""Every served operation of every service, run by boto3 and by the AWS CLI.

One runner (``pipelines run CONFIG --api``) in a subprocess; one scenario per
service, written once over a ``Client`` and run twice: through boto3 and
through the AWS CLI (each with names of its own). Each call's answer is
checked. The operations to cover are what the endpoint serves
(``served_services``, as docs/api.md's table is): a served operation that no
scenario runs, through either client, fails the test.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import http.server
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import botocore.exceptions
import pytest
from botocore import xform_name

from pipelines.api import served_services

from . import awsclidriver
from .apiclient import CREDENTIALS, boto, endpoint_of
from .helpers import pipelines_command
from .recorder import plugin_manager

SERVED = {
    name: set(service.operations) for name, service in served_services(plugin_manager()).items()
}

#: Served operations the AWS CLI has no command for (so only boto3 runs them),
#: with the reason. Checked against the CLI's own command table: exactly these
#: lack a command.
NO_CLI_COMMAND: dict[tuple[str, str], str] = {}

CONFIG = """\
resources:
  gate: {type: function, function: 'gatemod:hold', max_concurrency: 1, timeout: 60}
"""

GATE_MODULE = """
import os, time

def hold(payload):
    while os.path.exists(os.environ["GATE_FILE"]):
        time.sleep(0.01)
"""
ACCOUNT = "000000000000"


def _plain(value: Any) -> Any:
    """An answer as the AWS CLI prints it: timestamps in ISO 8601, blobs in base64."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


class Client:
    """One of the two AWS clients, counting the operations it ran successfully."""

    name = ""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ran: set[tuple[str, str]] = set()

    def send(self, service: str, operation: str, params: dict[str, Any]) -> tuple[bool, Any]:
        """(True, the answer) or (False, the error code)."""
        raise NotImplementedError

    def __call__(self, service: str, operation: str, **params: Any) -> dict[str, Any]:
        ok, answer = self.send(service, operation, params)
        assert ok, f"{self.name}: {service} {operation} {params}: {answer}"
        self.ran.add((service, operation))
        assert isinstance(answer, dict)
        return answer

    def attempt(self, service: str, operation: str, **params: Any) -> tuple[bool, Any]:
        """(True, the answer) or (False, the error code): a call that may fail."""
        ok, answer = self.send(service, operation, params)
        if ok:
            self.ran.add((service, operation))
        return ok, answer

    def refused(self, service: str, operation: str, **params: Any) -> str:
        """The error code of a call that must fail."""
        ok, answer = self.send(service, operation, params)
        assert not ok, f"{self.name}: {service} {operation} {params} answered {answer}"
        assert isinstance(answer, str)
        return answer


class Boto(Client):
    name = "boto3"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        # StartSyncExecution's host is sync-HOST on AWS; a local endpoint is not
        self.clients = {
            service: boto(service, url, inject_host_prefix=service != "stepfunctions")
            for service in SERVED
        }

    def send(self, service: str, operation: str, params: dict[str, Any]) -> tuple[bool, Any]:
        method = getattr(self.clients[service], xform_name(operation))
        try:
            answer = method(**params)
        except botocore.exceptions.ClientError as error:
            return False, error.response["Error"]["Code"]
        answer.pop("ResponseMetadata")
        return True, _plain(answer)


class Cli(Client):
    """The AWS CLI, every command in one long-lived process (tests/awsclidriver.py):
    started anew for each of its ~150 commands, the CLI would spend well over a
    minute starting (0.5 s each) in this test."""

    name = "aws-cli"

    def __init__(self, url: str, driver: subprocess.Popen[str]) -> None:
        super().__init__(url)
        self.driver = driver

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.driver.stdin is not None and self.driver.stdout is not None
        self.driver.stdin.write(json.dumps(request) + "\n")
        self.driver.stdin.flush()
        answer: dict[str, Any] = json.loads(self.driver.stdout.readline())
        return answer

    def send(self, service: str, operation: str, params: dict[str, Any]) -> tuple[bool, Any]:
        done = self.ask(
            {"service": service, "operation": operation, "params": params, "endpoint": self.url}
        )
        if done["rc"] == 0:
            return True, json.loads(done["stdout"]) if done["stdout"].strip() else {}
        code = re.search(r"An error occurred \(([^)]+)\)", done["stderr"])
        return False, code.group(1) if code else f"rc {done['rc']}: {done['stderr']}"


# The scenarios. Each runs every served operation of its service at least
# once through the client it is given; ``t`` prefixes the names it makes.


class Context:
    """What scenarios share: the client, its prefix, its inbox queue."""

    def __init__(self, aws: Client, tag: str, gate: Path) -> None:
        self.aws = aws
        self.t = tag
        self.gate = gate
        self.inbox_url = ""
        self.inbox_arn = ""

    def drain(self, count: int, wait: int = 5) -> list[dict[str, Any]]:
        """``count`` messages from the inbox queue (received and deleted)."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + 20
        while len(got) < count:
            assert time.monotonic() < deadline, f"{len(got)} of {count} messages"
            answer = self.aws(
                "sqs",
                "ReceiveMessage",
                QueueUrl=self.inbox_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=wait,
                MessageAttributeNames=["All"],
            )
            messages = answer.get("Messages", [])
            got += messages
            if messages:
                self.aws(
                    "sqs",
                    "DeleteMessageBatch",
                    QueueUrl=self.inbox_url,
                    Entries=[
                        {"Id": str(n), "ReceiptHandle": message["ReceiptHandle"]}
                        for n, message in enumerate(messages)
                    ],
                )
        return got


def until(check: Callable[[], Any], what: str, seconds: float = 20.0) -> Any:
    deadline = time.monotonic() + seconds
    while not (found := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return found


def sqs(c: Context) -> None:
    aws, t = c.aws, c.t
    prefix = f"{aws.url}/{ACCOUNT}/"
    dead = aws("sqs", "CreateQueue", QueueName=f"{t}-dead")["QueueUrl"]
    assert dead == f"{prefix}{t}-dead"
    dead_arn = aws("sqs", "GetQueueAttributes", QueueUrl=dead, AttributeNames=["QueueArn"])[
        "Attributes"
    ]
    assert dead_arn == {"QueueArn": f"arn:aws:sqs:us-east-1:{ACCOUNT}:{t}-dead"}
    redrive = json.dumps({"deadLetterTargetArn": dead_arn["QueueArn"], "maxReceiveCount": 5})
    work = aws(
        "sqs",
        "CreateQueue",
        QueueName=f"{t}-work",
        Attributes={"VisibilityTimeout": "30", "RedrivePolicy": redrive},
    )["QueueUrl"]
    c.inbox_url = aws("sqs", "CreateQueue", QueueName=f"{t}-inbox")["QueueUrl"]
    c.inbox_arn = f"arn:aws:sqs:us-east-1:{ACCOUNT}:{t}-inbox"
    assert aws("sqs", "GetQueueUrl", QueueName=f"{t}-work") == {"QueueUrl": work}
    listed = aws("sqs", "ListQueues", QueueNamePrefix=f"{t}-")["QueueUrls"]
    assert sorted(listed) == [dead, c.inbox_url, work]
    assert (
        aws("sqs", "SetQueueAttributes", QueueUrl=work, Attributes={"VisibilityTimeout": "45"})
        == {}
    )
    attributes = aws("sqs", "GetQueueAttributes", QueueUrl=work, AttributeNames=["All"])[
        "Attributes"
    ]
    assert attributes["VisibilityTimeout"] == "45"
    assert json.loads(attributes["RedrivePolicy"]) == json.loads(redrive)
    sources = aws("sqs", "ListDeadLetterSourceQueues", QueueUrl=dead)
    assert sources["queueUrls"] == [work]

    sent = aws(
        "sqs",
        "SendMessage",
        QueueUrl=work,
        MessageBody="hello",
        MessageAttributes={"Hello": {"DataType": "String", "StringValue": "There"}},
    )
    assert sent["MD5OfMessageBody"] == hashlib.md5(b"hello").hexdigest()
    assert sent["MD5OfMessageAttributes"] == "a311262e065454b75da111d535b8dacd"  # recorded
    batch = aws(
        "sqs",
        "SendMessageBatch",
        QueueUrl=work,
        Entries=[{"Id": "1", "MessageBody": "one"}, {"Id": "2", "MessageBody": "two"}],
    )
    assert sorted(entry["Id"] for entry in batch["Successful"]) == ["1", "2"]
    assert batch.get("Failed", []) == []
    received = aws(
        "sqs",
        "ReceiveMessage",
        QueueUrl=work,
        MaxNumberOfMessages=10,
        MessageAttributeNames=["All"],
    )["Messages"]
    handles = {message["Body"]: message["ReceiptHandle"] for message in received}
    assert sorted(handles) == ["hello", "one", "two"]
    hello = next(message for message in received if message["Body"] == "hello")
    assert hello["MessageAttributes"]["Hello"]["StringValue"] == "There"
    assert (
        aws(
            "sqs",
            "ChangeMessageVisibility",
            QueueUrl=work,
            ReceiptHandle=handles["hello"],
            VisibilityTimeout=0,
        )
        == {}
    )
    again = aws("sqs", "ReceiveMessage", QueueUrl=work, MaxNumberOfMessages=10)["Messages"]
    assert [message["Body"] for message in again] == ["hello"]  # visible again, alone
    changed = aws(
        "sqs",
        "ChangeMessageVisibilityBatch",
        QueueUrl=work,
        Entries=[
            {"Id": "one", "ReceiptHandle": handles["one"], "VisibilityTimeout": 60},
            {"Id": "two", "ReceiptHandle": handles["two"], "VisibilityTimeout": 60},
        ],
    )
    assert sorted(entry["Id"] for entry in changed["Successful"]) == ["one", "two"]
    assert aws("sqs", "DeleteMessage", QueueUrl=work, ReceiptHandle=again[0]["ReceiptHandle"]) == {}
    deleted = aws(
        "sqs",
        "DeleteMessageBatch",
        QueueUrl=work,
        Entries=[
            {"Id": "one", "ReceiptHandle": handles["one"]},
            {"Id": "two", "ReceiptHandle": handles["two"]},
        ],
    )
    assert sorted(entry["Id"] for entry in deleted["Successful"]) == ["one", "two"]
    counts = aws(
        "sqs",
        "GetQueueAttributes",
        QueueUrl=work,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert counts == {
        "ApproximateNumberOfMessages": "0",
        "ApproximateNumberOfMessagesNotVisible": "0",
    }
    aws("sqs", "SendMessage", QueueUrl=work, MessageBody="gone soon")
    assert aws("sqs", "PurgeQueue", QueueUrl=work) == {}
    assert "Messages" not in aws("sqs", "ReceiveMessage", QueueUrl=work)
    assert aws("sqs", "DeleteQueue", QueueUrl=work) == {}
    assert aws.refused("sqs", "GetQueueUrl", QueueName=f"{t}-work") == (
        "AWS.SimpleQueueService.NonExistentQueue"
    )


def sns(c: Context) -> None:
    aws, t = c.aws, c.t
    topic = aws(
        "sns",
        "CreateTopic",
        Name=f"{t}-news",
        Attributes={"DisplayName": "News"},
        Tags=[{"Key": "team", "Value": "shop"}],
    )["TopicArn"]
    assert topic == f"arn:aws:sns:us-east-1:{ACCOUNT}:{t}-news"
    assert topic in [entry["TopicArn"] for entry in aws("sns", "ListTopics")["Topics"]]
    assert (
        aws(
            "sns",
            "SetTopicAttributes",
            TopicArn=topic,
            AttributeName="DisplayName",
            AttributeValue="Daily",
        )
        == {}
    )
    attributes = aws("sns", "GetTopicAttributes", TopicArn=topic)["Attributes"]
    assert (attributes["TopicArn"], attributes["DisplayName"]) == (topic, "Daily")
    subscription = aws(
        "sns",
        "Subscribe",
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=c.inbox_arn,
        Attributes={"RawMessageDelivery": "true"},
        ReturnSubscriptionArn=True,
    )["SubscriptionArn"]
    assert subscription.startswith(topic + ":")
    by_topic = aws("sns", "ListSubscriptionsByTopic", TopicArn=topic)["Subscriptions"]
    assert [(s["SubscriptionArn"], s["Protocol"], s["Endpoint"]) for s in by_topic] == [
        (subscription, "sqs", c.inbox_arn)
    ]
    everyone = aws("sns", "ListSubscriptions")["Subscriptions"]
    assert subscription in [s["SubscriptionArn"] for s in everyone]
    policy = json.dumps({"kind": ["news"]})
    assert (
        aws(
            "sns",
            "SetSubscriptionAttributes",
            SubscriptionArn=subscription,
            AttributeName="FilterPolicy",
            AttributeValue=policy,
        )
        == {}
    )
    kept = aws("sns", "GetSubscriptionAttributes", SubscriptionArn=subscription)["Attributes"]
    assert (kept["TopicArn"], kept["RawMessageDelivery"]) == (topic, "true")
    assert json.loads(kept["FilterPolicy"]) == {"kind": ["news"]}

    def kind(value: str) -> dict[str, Any]:
        return {"kind": {"DataType": "String", "StringValue": value}}

    published = aws(
        "sns", "Publish", TopicArn=topic, Message="extra!", MessageAttributes=kind("news")
    )
    assert re.fullmatch(r"[0-9a-f-]{36}", published["MessageId"])
    assert [m["Body"] for m in c.drain(1)] == ["extra!"]
    batch = aws(
        "sns",
        "PublishBatch",
        TopicArn=topic,
        PublishBatchRequestEntries=[
            {"Id": "a", "Message": "sport", "MessageAttributes": kind("sport")},
            {"Id": "b", "Message": "weather", "MessageAttributes": kind("news")},
        ],
    )
    assert sorted(entry["Id"] for entry in batch["Successful"]) == ["a", "b"]
    assert [m["Body"] for m in c.drain(1)] == ["weather"]  # the filter policy holds "sport"

    assert (
        aws("sns", "TagResource", ResourceArn=topic, Tags=[{"Key": "env", "Value": "test"}]) == {}
    )
    tags = aws("sns", "ListTagsForResource", ResourceArn=topic)["Tags"]
    assert sorted((tag["Key"], tag["Value"]) for tag in tags) == [("env", "test"), ("team", "shop")]
    assert aws("sns", "UntagResource", ResourceArn=topic, TagKeys=["team"]) == {}
    tags = aws("sns", "ListTagsForResource", ResourceArn=topic)["Tags"]
    assert tags == [{"Key": "env", "Value": "test"}]
    assert aws("sns", "Unsubscribe", SubscriptionArn=subscription) == {}
    assert aws("sns", "ListSubscriptionsByTopic", TopicArn=topic)["Subscriptions"] == []
    _http_subscription(aws, topic)
    assert aws("sns", "DeleteTopic", TopicArn=topic) == {}
    assert topic not in [entry["TopicArn"] for entry in aws("sns", "ListTopics")["Topics"]]


def events(c: Context) -> None:
    aws, t = c.aws, c.t
    bus = f"{t}-shop"
    bus_arn = aws("events", "CreateEventBus", Name=bus)["EventBusArn"]
    assert bus_arn == f"arn:aws:events:us-east-1:{ACCOUNT}:event-bus/{bus}"
    described = aws("events", "DescribeEventBus", Name=bus)
    assert (described["Name"], described["Arn"]) == (bus, bus_arn)
    assert "Policy" not in described
    updated = aws("events", "UpdateEventBus", Name=bus, Description="the shop's")
    assert (updated["Arn"], updated["Description"]) == (bus_arn, "the shop's")
    granted = {"Action": "events:PutEvents", "Principal": "111122223333", "StatementId": "team"}
    assert aws("events", "PutPermission", EventBusName=bus, **granted) == {}
    policy = json.loads(aws("events", "DescribeEventBus", Name=bus)["Policy"])
    assert [s["Principal"] for s in policy["Statement"]] == [
        {"AWS": "arn:aws:iam::111122223333:root"}
    ]
    assert aws("events", "RemovePermission", EventBusName=bus, StatementId="team") == {}
    assert "Policy" not in aws("events", "DescribeEventBus", Name=bus)
    buses = aws("events", "ListEventBuses", NamePrefix=f"{t}-")["EventBuses"]
    assert [(b["Name"], b["Arn"]) for b in buses] == [(bus, bus_arn)]
    rule = f"{t}-orders"
    pattern = {"source": ["shop"], "detail-type": ["Order"]}
    made = aws(
        "events",
        "PutRule",
        Name=rule,
        EventBusName=bus,
        EventPattern=json.dumps(pattern),
        Description="orders to the inbox",
    )
    assert made["RuleArn"] == f"arn:aws:events:us-east-1:{ACCOUNT}:rule/{bus}/{rule}"
    shown = aws("events", "DescribeRule", Name=rule, EventBusName=bus)
    assert (json.loads(shown["EventPattern"]), shown["State"]) == (pattern, "ENABLED")
    rules = aws("events", "ListRules", NamePrefix=f"{t}-", EventBusName=bus)["Rules"]
    assert [(r["Name"], r["Description"]) for r in rules] == [(rule, "orders to the inbox")]
    put = aws(
        "events",
        "PutTargets",
        Rule=rule,
        EventBusName=bus,
        Targets=[{"Id": "inbox", "Arn": c.inbox_arn, "InputPath": "$.detail"}],
    )
    assert put["FailedEntryCount"] == 0
    targets = aws("events", "ListTargetsByRule", Rule=rule, EventBusName=bus)["Targets"]
    assert [(target["Id"], target["Arn"]) for target in targets] == [("inbox", c.inbox_arn)]
    names = aws("events", "ListRuleNamesByTarget", TargetArn=c.inbox_arn, EventBusName=bus)
    assert names["RuleNames"] == [rule]
    assert aws("events", "DisableRule", Name=rule, EventBusName=bus) == {}
    assert aws("events", "DescribeRule", Name=rule, EventBusName=bus)["State"] == "DISABLED"
    assert aws("events", "EnableRule", Name=rule, EventBusName=bus) == {}
    assert aws("events", "DescribeRule", Name=rule, EventBusName=bus)["State"] == "ENABLED"
    event = {
        "id": "1",
        "account": ACCOUNT,
        "source": "shop",
        "time": "2026-01-01T00:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail-type": "Order",
        "detail": {},
    }
    tested = aws(
        "events", "TestEventPattern", EventPattern=json.dumps(pattern), Event=json.dumps(event)
    )
    assert tested["Result"] is True
    event["source"] = "elsewhere"
    tested = aws(
        "events", "TestEventPattern", EventPattern=json.dumps(pattern), Event=json.dumps(event)
    )
    assert tested["Result"] is False

    archive = f"{t}-orders"
    created = aws(
        "events", "CreateArchive", ArchiveName=archive, EventSourceArn=bus_arn, RetentionDays=1
    )
    archive_arn = created["ArchiveArn"]
    assert archive_arn == f"arn:aws:events:us-east-1:{ACCOUNT}:archive/{archive}"
    assert created["State"] == "ENABLED"
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    entries = [
        {
            "EventBusName": bus,
            "Source": "shop",
            "DetailType": "Order",
            "Detail": json.dumps({"n": n}),
        }
        for n in (1, 2)
    ]
    answer = aws("events", "PutEvents", Entries=entries)
    assert answer["FailedEntryCount"] == 0 and len(answer["Entries"]) == 2
    assert sorted(json.loads(m["Body"])["n"] for m in c.drain(2)) == [1, 2]
    updated = aws(
        "events", "UpdateArchive", ArchiveName=archive, Description="kept", RetentionDays=2
    )
    assert (updated["ArchiveArn"], updated["State"]) == (archive_arn, "ENABLED")
    shown = aws("events", "DescribeArchive", ArchiveName=archive)
    assert (shown["Description"], shown["RetentionDays"], shown["EventSourceArn"]) == (
        "kept",
        2,
        bus_arn,
    )
    archives = aws("events", "ListArchives", NamePrefix=f"{t}-")["Archives"]
    assert [(a["ArchiveName"], a["State"]) for a in archives] == [(archive, "ENABLED")]

    replay = f"{t}-again"
    # The window's end is exclusive and events' times are whole seconds (as
    # the AWS CLI sends times): it ends at the next second, once that is past.
    end = math.floor(time.time()) + 1
    time.sleep(max(0.0, end - time.time()))
    started = aws(
        "events",
        "StartReplay",
        ReplayName=replay,
        EventSourceArn=archive_arn,
        EventStartTime=before.isoformat(),
        EventEndTime=end,
        Destination={"Arn": bus_arn},
    )
    assert started["ReplayArn"] == f"arn:aws:events:us-east-1:{ACCOUNT}:replay/{replay}"
    assert started["State"] in ("STARTING", "RUNNING", "COMPLETED")
    done = until(
        lambda: (
            (d := aws("events", "DescribeReplay", ReplayName=replay))["State"] == "COMPLETED" and d
        ),
        "the replay completes",
    )
    assert (done["EventSourceArn"], done["Destination"]["Arn"]) == (archive_arn, bus_arn)
    assert sorted(json.loads(m["Body"])["n"] for m in c.drain(2)) == [1, 2]  # replayed
    replays = aws("events", "ListReplays", NamePrefix=f"{t}-")["Replays"]
    assert [(r["ReplayName"], r["State"]) for r in replays] == [(replay, "COMPLETED")]
    cancel_a_running_replay(c)

    removed = aws("events", "RemoveTargets", Rule=rule, EventBusName=bus, Ids=["inbox"])
    assert removed["FailedEntryCount"] == 0
    assert aws("events", "ListTargetsByRule", Rule=rule, EventBusName=bus)["Targets"] == []
    assert aws("events", "DeleteRule", Name=rule, EventBusName=bus) == {}
    assert aws("events", "ListRules", NamePrefix=f"{t}-", EventBusName=bus)["Rules"] == []
    assert aws("events", "DeleteArchive", ArchiveName=archive) == {}
    assert (
        aws.refused("events", "DescribeArchive", ArchiveName=archive) == "ResourceNotFoundException"
    )
    assert aws("events", "DeleteEventBus", Name=bus) == {}
    assert aws("events", "ListEventBuses", NamePrefix=f"{t}-")["EventBuses"] == []


def cancel_a_running_replay(c: Context) -> None:
    """CancelReplay needs a replay that is still running: one of the archive
    ``bulk`` (filled by the fixture), replayed to its bus while the rule there
    targets the function ``gate``, which holds every call while the gate file
    exists. The target's queue fills, then the bus's intake, and the replay
    waits for room until it is cancelled."""
    aws, gate = c.aws, c.gate
    name = f"{c.t}-cancelled"
    gate.touch()
    try:
        aws(
            "events",
            "StartReplay",
            ReplayName=name,
            EventSourceArn=f"arn:aws:events:us-east-1:{ACCOUNT}:archive/bulk",
            EventStartTime="2020-01-01T00:00:00Z",
            EventEndTime=dt.datetime.now(dt.UTC).isoformat(),
            Destination={"Arn": f"arn:aws:events:us-east-1:{ACCOUNT}:event-bus/bulk"},
        )
        running = aws("events", "DescribeReplay", ReplayName=name)
        assert running["State"] in ("STARTING", "RUNNING")
        cancelled = aws("events", "CancelReplay", ReplayName=name)
        assert cancelled == {
            "ReplayArn": f"arn:aws:events:us-east-1:{ACCOUNT}:replay/{name}",
            "State": "CANCELLING",
        }
        until(
            lambda: aws("events", "DescribeReplay", ReplayName=name)["State"] == "CANCELLED",
            "the replay is cancelled",
        )
    finally:
        gate.unlink()


def kinesis(c: Context) -> None:
    aws, t = c.aws, c.t
    stream = f"{t}-clicks"
    assert aws("kinesis", "CreateStream", StreamName=stream, ShardCount=1) == {}
    description = aws("kinesis", "DescribeStream", StreamName=stream)["StreamDescription"]
    assert (description["StreamName"], description["StreamStatus"]) == (stream, "ACTIVE")
    assert [shard["ShardId"] for shard in description["Shards"]] == ["shardId-000000000000"]
    summary = aws("kinesis", "DescribeStreamSummary", StreamName=stream)["StreamDescriptionSummary"]
    assert (summary["OpenShardCount"], summary["RetentionPeriodHours"]) == (1, 24)
    assert stream in aws("kinesis", "ListStreams")["StreamNames"]
    assert (
        aws("kinesis", "IncreaseStreamRetentionPeriod", StreamName=stream, RetentionPeriodHours=48)
        == {}
    )
    summary = aws("kinesis", "DescribeStreamSummary", StreamName=stream)["StreamDescriptionSummary"]
    assert summary["RetentionPeriodHours"] == 48
    assert (
        aws("kinesis", "DecreaseStreamRetentionPeriod", StreamName=stream, RetentionPeriodHours=36)
        == {}
    )
    summary = aws("kinesis", "DescribeStreamSummary", StreamName=stream)["StreamDescriptionSummary"]
    assert summary["RetentionPeriodHours"] == 36

    # The AWS CLI v1 sends a blob's text as it is (base64 on the wire); boto3 takes text too.
    put = aws("kinesis", "PutRecord", StreamName=stream, Data='{"page": "/"}', PartitionKey="u1")
    assert put["ShardId"] == "shardId-000000000000"
    many = aws(
        "kinesis",
        "PutRecords",
        StreamName=stream,
        Records=[{"Data": f'{{"page": "/{n}"}}', "PartitionKey": f"u{n}"} for n in (2, 3)],
    )
    assert many["FailedRecordCount"] == 0 and len(many["Records"]) == 2
    shards = aws("kinesis", "ListShards", StreamName=stream)["Shards"]
    assert [shard["ShardId"] for shard in shards] == ["shardId-000000000000"]
    iterator = aws(
        "kinesis",
        "GetShardIterator",
        StreamName=stream,
        ShardId=put["ShardId"],
        ShardIteratorType="TRIM_HORIZON",
    )["ShardIterator"]
    records = aws("kinesis", "GetRecords", ShardIterator=iterator)["Records"]
    assert [base64.b64decode(record["Data"]) for record in records] == [
        b'{"page": "/"}',
        b'{"page": "/2"}',
        b'{"page": "/3"}',
    ]
    assert records[0]["SequenceNumber"] == put["SequenceNumber"]
    assert (
        aws(
            "kinesis",
            "SplitShard",
            StreamName=stream,
            ShardToSplit="shardId-000000000000",
            NewStartingHashKey=str(2**127),
        )
        == {}
    )
    shards = aws("kinesis", "ListShards", StreamName=stream, ShardFilter={"Type": "AT_LATEST"})[
        "Shards"
    ]
    children = [shard["ShardId"] for shard in shards]
    assert len(children) == 2 and "shardId-000000000000" not in children
    assert (
        aws(
            "kinesis",
            "MergeShards",
            StreamName=stream,
            ShardToMerge=children[0],
            AdjacentShardToMerge=children[1],
        )
        == {}
    )
    shards = aws("kinesis", "ListShards", StreamName=stream, ShardFilter={"Type": "AT_LATEST"})[
        "Shards"
    ]
    (merged,) = shards
    assert merged["ParentShardId"] == children[0]
    assert merged["AdjacentParentShardId"] == children[1]
    assert aws("kinesis", "DeleteStream", StreamName=stream) == {}
    assert stream not in aws("kinesis", "ListStreams")["StreamNames"]


def firehose(c: Context) -> None:
    aws, t = c.aws, c.t
    name = f"{t}-lake"
    destination = {
        "BucketARN": "arn:aws:s3:::lake",
        "RoleARN": "arn:aws:iam::123456789012:role/firehose",
        "Prefix": f"{t}/",
        "BufferingHints": {"IntervalInSeconds": 60, "SizeInMBs": 1},
    }
    made = aws(
        "firehose",
        "CreateDeliveryStream",
        DeliveryStreamName=name,
        ExtendedS3DestinationConfiguration=destination,
        Tags=[{"Key": "team", "Value": "data"}],
    )
    assert made["DeliveryStreamARN"].endswith(f":deliverystream/{name}")
    described = aws("firehose", "DescribeDeliveryStream", DeliveryStreamName=name)
    assert described["DeliveryStreamDescription"]["VersionId"] == "1"
    assert name in aws("firehose", "ListDeliveryStreams", Limit=100)["DeliveryStreamNames"]
    put = aws("firehose", "PutRecord", DeliveryStreamName=name, Record={"Data": '{"n": 1}'})
    assert put["RecordId"]
    batch = aws(
        "firehose",
        "PutRecordBatch",
        DeliveryStreamName=name,
        Records=[{"Data": "a"}, {"Data": "b"}],
    )
    assert batch["FailedPutCount"] == 0 and len(batch["RequestResponses"]) == 2
    update = {"CompressionFormat": "GZIP"}
    assert (
        aws(
            "firehose",
            "UpdateDestination",
            DeliveryStreamName=name,
            CurrentDeliveryStreamVersionId="1",
            DestinationId="destinationId-000000000001",
            ExtendedS3DestinationUpdate=update,
        )
        == {}
    )
    tag = [{"Key": "env", "Value": "dev"}]
    assert aws("firehose", "TagDeliveryStream", DeliveryStreamName=name, Tags=tag) == {}
    tags = aws("firehose", "ListTagsForDeliveryStream", DeliveryStreamName=name)["Tags"]
    assert tags == [{"Key": "env", "Value": "dev"}, {"Key": "team", "Value": "data"}]
    assert aws("firehose", "UntagDeliveryStream", DeliveryStreamName=name, TagKeys=["env"]) == {}
    assert aws("firehose", "DeleteDeliveryStream", DeliveryStreamName=name) == {}
    assert aws.refused("firehose", "DescribeDeliveryStream", DeliveryStreamName=name) == (
        "ResourceNotFoundException"
    )


def logs(c: Context) -> None:
    aws, t = c.aws, c.t
    group = f"/{t}/app"
    assert aws("logs", "CreateLogGroup", logGroupName=group) == {}
    groups = aws("logs", "DescribeLogGroups", logGroupNamePrefix=f"/{t}/")["logGroups"]
    assert [g["logGroupName"] for g in groups] == [group]
    assert "retentionInDays" not in groups[0]
    assert aws("logs", "PutRetentionPolicy", logGroupName=group, retentionInDays=7) == {}
    groups = aws("logs", "DescribeLogGroups", logGroupNamePrefix=f"/{t}/")["logGroups"]
    assert groups[0]["retentionInDays"] == 7
    assert aws("logs", "DeleteRetentionPolicy", logGroupName=group) == {}
    groups = aws("logs", "DescribeLogGroups", logGroupNamePrefix=f"/{t}/")["logGroups"]
    assert "retentionInDays" not in groups[0]
    assert aws("logs", "CreateLogStream", logGroupName=group, logStreamName="web") == {}
    streams = aws("logs", "DescribeLogStreams", logGroupName=group)["logStreams"]
    assert [s["logStreamName"] for s in streams] == ["web"]

    transformation = {"metricName": "Errors", "metricNamespace": f"{t}-App", "metricValue": "1"}
    assert (
        aws(
            "logs",
            "PutMetricFilter",
            logGroupName=group,
            filterName="errors",
            filterPattern="ERROR",
            metricTransformations=[transformation],
        )
        == {}
    )
    filters = aws("logs", "DescribeMetricFilters", logGroupName=group)["metricFilters"]
    assert [(f["filterName"], f["filterPattern"]) for f in filters] == [("errors", "ERROR")]
    assert filters[0]["metricTransformations"] == [transformation]
    assert (
        aws(
            "logs",
            "PutSubscriptionFilter",
            logGroupName=group,
            filterName="forward",
            filterPattern="",
            destinationArn=c.inbox_arn,
        )
        == {}
    )
    subscriptions = aws("logs", "DescribeSubscriptionFilters", logGroupName=group)[
        "subscriptionFilters"
    ]
    assert [(s["filterName"], s["destinationArn"]) for s in subscriptions] == [
        ("forward", c.inbox_arn)
    ]
    assert (
        aws(
            "logs",
            "PutIndexPolicy",
            logGroupIdentifier=group,
            policyDocument=json.dumps({"Fields": ["level"]}),
        )["indexPolicy"]["logGroupIdentifier"]
        == f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:{group}"  # AWS answers the group's ARN
    )
    policies = aws("logs", "DescribeIndexPolicies", logGroupIdentifiers=[group])["indexPolicies"]
    assert [json.loads(p["policyDocument"]) for p in policies] == [{"Fields": ["level"]}]

    now = int(time.time() * 1000)
    lines = [
        {"timestamp": now, "message": json.dumps({"level": "ERROR", "text": "ERROR disk full"})},
        {"timestamp": now + 1, "message": json.dumps({"level": "INFO", "text": "all good"})},
    ]
    put = aws("logs", "PutLogEvents", logGroupName=group, logStreamName="web", logEvents=lines)
    assert "rejectedLogEventsInfo" not in put and put["nextSequenceToken"]
    got = aws("logs", "GetLogEvents", logGroupName=group, logStreamName="web", startFromHead=True)
    assert [e["message"] for e in got["events"]] == [line["message"] for line in lines]
    found = aws("logs", "FilterLogEvents", logGroupName=group, filterPattern="ERROR")["events"]
    assert [(e["logStreamName"], e["message"]) for e in found] == [("web", lines[0]["message"])]

    query = aws(
        "logs",
        "StartQuery",
        logGroupName=group,
        startTime=now // 1000 - 60,
        endTime=now // 1000 + 60,
        queryString="filter level = 'ERROR' | fields text",
    )["queryId"]
    results = until(
        lambda: (r := aws("logs", "GetQueryResults", queryId=query))["status"] == "Complete" and r,
        "the query completes",
    )
    assert [
        [(f["field"], f["value"]) for f in row if f["field"] == "text"]
        for row in results["results"]
    ] == [[("text", "ERROR disk full")]]
    queries = aws("logs", "DescribeQueries", logGroupName=group)["queries"]
    assert [(q["queryId"], q["status"]) for q in queries] == [(query, "Complete")]
    # A query that has ended is not stopped: an error, as AWS documents.
    assert aws.refused("logs", "StopQuery", queryId=query) == "InvalidParameterException"
    stop_a_running_query(c)

    assert aws("logs", "DeleteIndexPolicy", logGroupIdentifier=group) == {}
    assert aws("logs", "DescribeIndexPolicies", logGroupIdentifiers=[group])["indexPolicies"] == []
    assert aws("logs", "DeleteSubscriptionFilter", logGroupName=group, filterName="forward") == {}
    assert (
        aws("logs", "DescribeSubscriptionFilters", logGroupName=group)["subscriptionFilters"] == []
    )
    assert aws("logs", "DeleteMetricFilter", logGroupName=group, filterName="errors") == {}
    assert aws("logs", "DescribeMetricFilters", logGroupName=group)["metricFilters"] == []
    assert aws("logs", "DeleteLogStream", logGroupName=group, logStreamName="web") == {}
    assert aws("logs", "DescribeLogStreams", logGroupName=group)["logStreams"] == []
    assert aws("logs", "DeleteLogGroup", logGroupName=group) == {}
    assert aws("logs", "DescribeLogGroups", logGroupNamePrefix=f"/{t}/")["logGroups"] == []


#: A query that takes most of a second over the fixture's ``BULK_LOGS`` events.
SLOW_QUERY = (
    "parse @message '* * * * *' as user, verb, path, code, ms"
    " | stats avg(ms), count(*) by user, path | sort path"
)


def stop_a_running_query(c: Context) -> None:
    """StopQuery needs a query still running: one over the group ``/bulk`` (filled
    by the fixture) takes most of a second, and the stop follows its start at
    once. Should one end first all the same, the stop is refused and another
    query is started (three tries)."""
    aws = c.aws
    for _ in range(3):
        query = aws(
            "logs",
            "StartQuery",
            logGroupName="/bulk",
            startTime=0,
            endTime=int(time.time()) + 60,
            queryString=SLOW_QUERY,
        )["queryId"]
        ok, answer = aws.attempt("logs", "StopQuery", queryId=query)
        if ok:
            break
        assert answer == "InvalidParameterException"
    assert (ok, answer) == (True, {"success": True})
    assert aws("logs", "GetQueryResults", queryId=query)["status"] == "Cancelled"


def cloudwatch(c: Context) -> None:
    aws, t = c.aws, c.t
    namespace = f"{t}-Shop"
    dimensions = [{"Name": "Api", "Value": "put"}]
    now = int(time.time())
    moment = now - now % 60 + 30  # both values in one minute, whenever each call runs
    data = [
        {
            "MetricName": "Latency",
            "Dimensions": dimensions,
            "Value": value,
            "Unit": "Milliseconds",
            "Timestamp": moment,
        }
        for value in (10.0, 30.0)
    ]
    assert aws("cloudwatch", "PutMetricData", Namespace=namespace, MetricData=data) == {}
    window = {"StartTime": moment - 120, "EndTime": moment + 120}
    stats = aws(
        "cloudwatch",
        "GetMetricStatistics",
        Namespace=namespace,
        MetricName="Latency",
        Dimensions=dimensions,
        Period=60,
        Statistics=["Average", "SampleCount"],
        **window,
    )
    assert [(p["Average"], p["SampleCount"], p["Unit"]) for p in stats["Datapoints"]] == [
        (20.0, 2.0, "Milliseconds")
    ]
    metric = {"Namespace": namespace, "MetricName": "Latency", "Dimensions": dimensions}
    got = aws(
        "cloudwatch",
        "GetMetricData",
        MetricDataQueries=[
            {"Id": "m", "MetricStat": {"Metric": metric, "Period": 60, "Stat": "Maximum"}}
        ],
        **window,
    )
    (result,) = got["MetricDataResults"]
    assert (result["Id"], result["Values"], result["StatusCode"]) == ("m", [30.0], "Complete")
    listed = aws("cloudwatch", "ListMetrics", Namespace=namespace)["Metrics"]
    assert listed == [metric]

    alarm = f"{t}-latency-high"
    composite = f"{t}-unhealthy"
    assert (
        aws(
            "cloudwatch",
            "PutMetricAlarm",
            AlarmName=alarm,
            Namespace=namespace,
            MetricName="Latency",
            Dimensions=dimensions,
            Statistic="Average",
            Period=60,
            EvaluationPeriods=1,
            Threshold=100.0,
            ComparisonOperator="GreaterThanThreshold",
            AlarmActions=[c.inbox_arn],
        )
        == {}
    )
    assert (
        aws("cloudwatch", "PutCompositeAlarm", AlarmName=composite, AlarmRule=f"ALARM({alarm})")
        == {}
    )
    described = aws(
        "cloudwatch",
        "DescribeAlarms",
        AlarmNamePrefix=f"{t}-",
        AlarmTypes=["CompositeAlarm", "MetricAlarm"],
    )
    assert [a["AlarmName"] for a in described["MetricAlarms"]] == [alarm]
    assert described["MetricAlarms"][0]["AlarmActions"] == [c.inbox_arn]
    assert [a["AlarmRule"] for a in described["CompositeAlarms"]] == [f"ALARM({alarm})"]
    for_metric = aws(
        "cloudwatch",
        "DescribeAlarmsForMetric",
        Namespace=namespace,
        MetricName="Latency",
        Dimensions=dimensions,
        Statistic="Average",
    )
    assert [a["AlarmName"] for a in for_metric["MetricAlarms"]] == [alarm]
    assert (
        aws(
            "cloudwatch",
            "SetAlarmState",
            AlarmName=alarm,
            StateValue="ALARM",
            StateReason="testing",
        )
        == {}
    )
    (changed,) = c.drain(1)  # the alarm action: the state-change event, in the inbox
    event = json.loads(changed["Body"])
    assert (event["detail-type"], event["detail"]["alarmName"]) == (
        "CloudWatch Alarm State Change",
        alarm,
    )
    assert event["detail"]["state"]["value"] == "ALARM"
    history = aws("cloudwatch", "DescribeAlarmHistory", AlarmName=alarm)["AlarmHistoryItems"]
    items = [(h["HistoryItemType"], h["HistorySummary"]) for h in history]  # newest first
    oldest_first = items[::-1]
    # The minute's evaluation may judge the metric (OK) before SetAlarmState,
    # after it, or neither, as the minute's boundary falls.
    set_at = next(i for i, (_, summary) in enumerate(oldest_first) if summary.endswith("to ALARM"))
    before = oldest_first[:set_at]
    assert before in ([], [("StateUpdate", "Alarm updated from INSUFFICIENT_DATA to OK")]), items
    was = "OK" if before else "INSUFFICIENT_DATA"
    assert oldest_first[set_at] == ("StateUpdate", f"Alarm updated from {was} to ALARM"), items
    after = oldest_first[set_at + 1 :]
    assert [summary.startswith("Alarm updated from ALARM to ") for _, summary in after] in (
        [],
        [True],
    ), items
    assert aws("cloudwatch", "DisableAlarmActions", AlarmNames=[alarm]) == {}
    shown = aws("cloudwatch", "DescribeAlarms", AlarmNames=[alarm])["MetricAlarms"]
    assert shown[0]["ActionsEnabled"] is False
    assert aws("cloudwatch", "EnableAlarmActions", AlarmNames=[alarm]) == {}
    shown = aws("cloudwatch", "DescribeAlarms", AlarmNames=[alarm])["MetricAlarms"]
    assert shown[0]["ActionsEnabled"] is True
    assert aws("cloudwatch", "DeleteAlarms", AlarmNames=[composite, alarm]) == {}
    after = aws(
        "cloudwatch",
        "DescribeAlarms",
        AlarmNamePrefix=f"{t}-",
        AlarmTypes=["CompositeAlarm", "MetricAlarm"],
    )
    assert (after["MetricAlarms"], after["CompositeAlarms"]) == ([], [])


class _Receiver(http.server.BaseHTTPRequestHandler):
    """Records each request an API destination sends (to ``server.seen``)."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.server.seen.append((self.path, dict(self.headers), body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def receiving() -> Iterator[tuple[str, list[Any]]]:
    """A local HTTP server recording what is posted to it: (its URL, the posts)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    seen: list[Any] = []
    server.seen = seen  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", seen
    finally:
        server.shutdown()
        server.server_close()


def _posted(seen: list[Any], count: int) -> list[Any]:
    deadline = time.monotonic() + 20
    while len(seen) < count:
        assert time.monotonic() < deadline, f"{len(seen)} of {count} requests arrived"
        time.sleep(0.02)
    return seen


def _http_subscription(aws: Client, topic: str) -> None:
    """An HTTP subscription: pending, confirmed with the token it was sent, notified."""
    with receiving() as (url, seen):
        made = aws("sns", "Subscribe", TopicArn=topic, Protocol="http", Endpoint=f"{url}/sns")
        assert made["SubscriptionArn"] == "pending confirmation"
        confirmation = json.loads(_posted(seen, 1)[0][2])
        assert confirmation["Type"] == "SubscriptionConfirmation"
        confirmed = aws("sns", "ConfirmSubscription", TopicArn=topic, Token=confirmation["Token"])
        assert confirmed["SubscriptionArn"].startswith(f"{topic}:")
        aws("sns", "Publish", TopicArn=topic, Message="over http")
        _, headers, body = _posted(seen, 2)[1]
        assert json.loads(body)["Message"] == "over http"
        lowered = {key.lower(): value for key, value in headers.items()}
        assert lowered["x-amz-sns-message-type"] == "Notification"
        aws("sns", "Unsubscribe", SubscriptionArn=confirmed["SubscriptionArn"])


def connections(c: Context) -> None:
    """Connections and API destinations: made, changed, used by a rule, deleted."""
    with receiving() as (url, seen):
        _connections(c.aws, c.t, url, seen)


def _connections(aws: Client, t: str, url: str, seen: list[Any]) -> None:
    name = f"{t}-partner"
    auth = {"ApiKeyAuthParameters": {"ApiKeyName": "x-api-key", "ApiKeyValue": "first"}}
    made = aws(
        "events", "CreateConnection", Name=name, AuthorizationType="API_KEY", AuthParameters=auth
    )
    connection_arn = made["ConnectionArn"]
    assert connection_arn.startswith(f"arn:aws:events:us-east-1:{ACCOUNT}:connection/{name}/")
    assert made["ConnectionState"] == "AUTHORIZED"
    shown = aws("events", "DescribeConnection", Name=name)
    # As AWS answers: the key's name, never its value.
    assert shown["AuthParameters"] == {"ApiKeyAuthParameters": {"ApiKeyName": "x-api-key"}}
    assert (shown["Name"], shown["AuthorizationType"]) == (name, "API_KEY")
    auth["ApiKeyAuthParameters"]["ApiKeyValue"] = "second"
    updated = aws("events", "UpdateConnection", Name=name, AuthParameters=auth, Description="v2")
    assert updated["ConnectionArn"] == connection_arn
    listed = aws("events", "ListConnections", NamePrefix=f"{t}-")["Connections"]
    assert [(one["Name"], one["ConnectionState"]) for one in listed] == [(name, "AUTHORIZED")]
    destination = f"{t}-hook"
    created = aws(
        "events",
        "CreateApiDestination",
        Name=destination,
        ConnectionArn=connection_arn,
        InvocationEndpoint=f"{url}/orders/*",
        HttpMethod="POST",
    )
    destination_arn = created["ApiDestinationArn"]
    assert created["ApiDestinationState"] == "ACTIVE"
    aws("events", "UpdateApiDestination", Name=destination, InvocationRateLimitPerSecond=50)
    described = aws("events", "DescribeApiDestination", Name=destination)
    assert (described["InvocationRateLimitPerSecond"], described["ConnectionArn"]) == (
        50,
        connection_arn,
    )
    listed = aws("events", "ListApiDestinations", NamePrefix=f"{t}-")["ApiDestinations"]
    assert [one["ApiDestinationArn"] for one in listed] == [destination_arn]
    rule = f"{t}-partner"
    aws("events", "PutRule", Name=rule, EventPattern=json.dumps({"source": [f"{t}-partner"]}))
    target = {
        "Id": "hook",
        "Arn": destination_arn,
        "HttpParameters": {
            "PathParameterValues": ["$.detail.order"],
            "HeaderParameters": {"x-order": "$.detail.order"},
        },
    }
    assert aws("events", "PutTargets", Rule=rule, Targets=[target])["FailedEntryCount"] == 0
    listed_targets = aws("events", "ListTargetsByRule", Rule=rule)["Targets"]
    assert listed_targets[0]["HttpParameters"] == target["HttpParameters"]
    entry = {"Source": f"{t}-partner", "DetailType": "Order", "Detail": '{"order": "o-7"}'}
    assert aws("events", "PutEvents", Entries=[entry])["FailedEntryCount"] == 0
    deadline = time.monotonic() + 20
    while not seen:
        assert time.monotonic() < deadline, "the API destination was never called"
        time.sleep(0.02)
    path, headers, body = seen[0]
    assert path == "/orders/o-7"
    headers = {key.lower(): value for key, value in headers.items()}
    assert (headers["x-api-key"], headers["x-order"]) == ("second", "o-7")
    assert json.loads(body)["detail"] == {"order": "o-7"}
    aws("events", "RemoveTargets", Rule=rule, Ids=["hook"])
    aws("events", "DeleteRule", Name=rule)
    assert aws("events", "DeleteApiDestination", Name=destination) == {}
    assert aws.refused("events", "DescribeApiDestination", Name=destination) == (
        "ResourceNotFoundException"
    )
    deleted = aws("events", "DeleteConnection", Name=name)
    assert deleted["ConnectionState"] == "DELETING"
    assert aws.refused("events", "DescribeConnection", Name=name) == "ResourceNotFoundException"


def stepfunctions(c: Context) -> None:
    """Machines made, described, updated, tagged and deleted; executions started
    by the API and by a rule (put_events), stopped, listed, their histories;
    a task token answered; EXPRESS run synchronously."""
    aws, t = c.aws, c.t
    role = f"arn:aws:iam::{ACCOUNT}:role/sfn"
    keep = {"StartAt": "Keep", "States": {"Keep": {"Type": "Pass", "End": True}}}
    valid = aws("stepfunctions", "ValidateStateMachineDefinition", definition=json.dumps(keep))
    assert valid["result"] == "OK"
    made = aws(
        "stepfunctions",
        "CreateStateMachine",
        name=f"{t}-flow",
        definition=json.dumps(keep),
        roleArn=role,
        tags=[{"key": "team", "value": "shop"}],
    )
    arn = made["stateMachineArn"]
    assert arn == f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:{t}-flow"
    listed = aws("stepfunctions", "ListStateMachines")["stateMachines"]
    assert arn in [m["stateMachineArn"] for m in listed]
    assert aws("stepfunctions", "DescribeStateMachine", stateMachineArn=arn)["status"] == "ACTIVE"
    shifted = {
        "StartAt": "Keep",
        "States": {"Keep": {"Type": "Pass", "InputPath": "$.detail", "End": True}},
    }
    updated = aws(
        "stepfunctions", "UpdateStateMachine", stateMachineArn=arn, definition=json.dumps(shifted)
    )
    assert updated["revisionId"]
    aws("stepfunctions", "TagResource", resourceArn=arn, tags=[{"key": "env", "value": "test"}])
    aws("stepfunctions", "UntagResource", resourceArn=arn, tagKeys=["team"])
    tags = aws("stepfunctions", "ListTagsForResource", resourceArn=arn)["tags"]
    assert tags == [{"key": "env", "value": "test"}]
    # a rule routes put_events to the machine
    aws(
        "events", "PutRule", Name=f"{t}-to-flow", EventPattern=json.dumps({"source": [f"{t}.shop"]})
    )
    aws("events", "PutTargets", Rule=f"{t}-to-flow", Targets=[{"Id": "flow", "Arn": arn}])
    aws(
        "events",
        "PutEvents",
        Entries=[{"Source": f"{t}.shop", "DetailType": "order", "Detail": '{"order": 7}'}],
    )
    found = until(
        lambda: aws(
            "stepfunctions", "ListExecutions", stateMachineArn=arn, statusFilter="SUCCEEDED"
        )["executions"],
        "the rule's execution",
    )
    routed = found[0]["executionArn"]
    assert json.loads(aws("stepfunctions", "DescribeExecution", executionArn=routed)["output"]) == {
        "order": 7
    }
    history = aws("stepfunctions", "GetExecutionHistory", executionArn=routed)["events"]
    assert [e["type"] for e in history] == [
        "ExecutionStarted",
        "PassStateEntered",
        "PassStateExited",
        "ExecutionSucceeded",
    ]
    machine = aws("stepfunctions", "DescribeStateMachineForExecution", executionArn=routed)
    assert json.loads(machine["definition"]) == shifted
    aws("events", "RemoveTargets", Rule=f"{t}-to-flow", Ids=["flow"])
    aws("events", "DeleteRule", Name=f"{t}-to-flow")
    # a task token, answered by SendTask*
    ask = {
        "StartAt": "Ask",
        "States": {
            "Ask": {
                "Type": "Task",
                "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
                "Parameters": {
                    "QueueUrl": c.inbox_url,
                    "MessageBody": {"token.$": "$$.Task.Token"},
                },
                "Next": "Hold",
            },
            "Hold": {"Type": "Wait", "Seconds": 3600, "End": True},
        },
    }
    asks = aws(
        "stepfunctions",
        "CreateStateMachine",
        name=f"{t}-asks",
        definition=json.dumps(ask),
        roleArn=role,
    )["stateMachineArn"]
    started = aws("stepfunctions", "StartExecution", stateMachineArn=asks, name="one", input="{}")
    failing = aws("stepfunctions", "StartExecution", stateMachineArn=asks, name="two", input="{}")
    tokens = {}
    for message in c.drain(2):
        token = json.loads(message["Body"])["token"]
        tokens[token] = token
    first, second = list(tokens)
    aws("stepfunctions", "SendTaskHeartbeat", taskToken=first)
    aws("stepfunctions", "SendTaskSuccess", taskToken=first, output='{"ok": true}')
    aws("stepfunctions", "SendTaskFailure", taskToken=second, error="Refused", cause="no")
    assert aws.refused("stepfunctions", "SendTaskFailure", taskToken=first) == "TaskTimedOut"
    ended = until(
        lambda: [
            aws("stepfunctions", "DescribeExecution", executionArn=e["executionArn"])
            for e in (started, failing)
            if aws("stepfunctions", "DescribeExecution", executionArn=e["executionArn"])["status"]
            == "FAILED"
        ],
        "the execution whose task failed",
    )
    assert (ended[0]["error"], ended[0]["cause"]) == ("Refused", "no")
    waiting = next(e for e in (started, failing) if e["executionArn"] != ended[0]["executionArn"])
    started = waiting
    until(
        lambda: any(
            e["type"] == "WaitStateEntered"
            for e in aws(
                "stepfunctions", "GetExecutionHistory", executionArn=started["executionArn"]
            )["events"]
        ),
        "the Wait after the answered task",
    )
    stopped = aws("stepfunctions", "StopExecution", executionArn=started["executionArn"])
    assert stopped["stopDate"]
    status = aws("stepfunctions", "DescribeExecution", executionArn=started["executionArn"])
    assert status["status"] == "ABORTED"
    # redriven from its Wait, then stopped again
    redriven = aws("stepfunctions", "RedriveExecution", executionArn=started["executionArn"])
    assert redriven["redriveDate"]
    again = aws("stepfunctions", "DescribeExecution", executionArn=started["executionArn"])
    assert (again["status"], again["redriveCount"]) == ("RUNNING", 1)
    aws("stepfunctions", "StopExecution", executionArn=started["executionArn"])
    # one state tested alone
    lone = {"Type": "Pass", "Parameters": {"n.$": "$.n"}, "Next": "Later"}
    tested = aws(
        "stepfunctions",
        "TestState",
        definition=json.dumps(lone),
        input='{"n": 2}',
        inspectionLevel="DEBUG",
    )
    assert (tested["status"], tested["nextState"]) == ("SUCCEEDED", "Later")
    assert json.loads(tested["inspectionData"]["afterParameters"]) == {"n": 2}
    # EXPRESS, run synchronously
    quick = aws(
        "stepfunctions",
        "CreateStateMachine",
        name=f"{t}-quick",
        definition=json.dumps(keep),
        roleArn=role,
        type="EXPRESS",
    )["stateMachineArn"]
    ran = aws("stepfunctions", "StartSyncExecution", stateMachineArn=quick, input='{"n": 1}')
    assert (ran["status"], json.loads(ran["output"])) == ("SUCCEEDED", {"n": 1})
    for gone in (arn, asks, quick):
        assert aws("stepfunctions", "DeleteStateMachine", stateMachineArn=gone) == {}
    assert aws.refused("stepfunctions", "DescribeStateMachine", stateMachineArn=arn) == (
        "StateMachineDoesNotExist"
    )


#: In order: sqs first (the inbox queue the others deliver to).
def scheduler(c: Context) -> None:
    aws, t = c.aws, c.t
    group = f"{t}-reports"
    group_arn = f"arn:aws:scheduler:us-east-1:{ACCOUNT}:schedule-group/{group}"
    made = aws("scheduler", "CreateScheduleGroup", Name=group, Tags=[{"Key": "k", "Value": "v"}])
    assert made == {"ScheduleGroupArn": group_arn}
    assert aws("scheduler", "GetScheduleGroup", Name=group)["State"] == "ACTIVE"
    names = [g["Name"] for g in aws("scheduler", "ListScheduleGroups")["ScheduleGroups"]]
    assert group in names
    aws("scheduler", "TagResource", ResourceArn=group_arn, Tags=[{"Key": "k2", "Value": "w"}])
    aws("scheduler", "UntagResource", ResourceArn=group_arn, TagKeys=["k"])
    tags = aws("scheduler", "ListTagsForResource", ResourceArn=group_arn)
    assert tags == {"Tags": [{"Key": "k2", "Value": "w"}]}
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)
    target = {
        "Arn": c.inbox_arn,
        "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/scheduler",
        "Input": f'{{"from": "{t}-once"}}',
    }
    aws(
        "scheduler",
        "CreateSchedule",
        Name=f"{t}-once",
        GroupName=group,
        ScheduleExpression=f"at({when.strftime('%Y-%m-%dT%H:%M:%S')})",
        FlexibleTimeWindow={"Mode": "OFF"},
        ActionAfterCompletion="DELETE",
        Target=target,
    )
    aws(
        "scheduler",
        "CreateSchedule",
        Name=f"{t}-daily",
        ScheduleExpression="cron(0 3 * * ? *)",
        FlexibleTimeWindow={"Mode": "OFF"},
        Target=target,
    )
    aws(
        "scheduler",
        "UpdateSchedule",
        Name=f"{t}-daily",
        ScheduleExpression="cron(0 4 * * ? *)",
        State="DISABLED",
        FlexibleTimeWindow={"Mode": "OFF"},
        Target=target,
    )
    got = aws("scheduler", "GetSchedule", Name=f"{t}-daily")
    assert (got["ScheduleExpression"], got["State"]) == ("cron(0 4 * * ? *)", "DISABLED")
    listed = {s["Name"] for s in aws("scheduler", "ListSchedules", NamePrefix=t)["Schedules"]}
    # The one-off schedule is listed until it runs, then deleted
    # (ActionAfterCompletion): on a loaded machine the calls since its
    # creation may take its three seconds, so its run is checked below.
    assert f"{t}-daily" in listed and listed <= {f"{t}-once", f"{t}-daily"}, listed
    (message,) = c.drain(1, wait=10)
    assert json.loads(message["Body"]) == {"from": f"{t}-once"}
    _deleted_after_its_run(c, f"{t}-once", group)
    aws("scheduler", "DeleteSchedule", Name=f"{t}-daily")
    aws("scheduler", "DeleteScheduleGroup", Name=group)
    assert c.aws.refused("scheduler", "GetScheduleGroup", Name=group) == (
        "ResourceNotFoundException"
    )


def _deleted_after_its_run(c: Context, name: str, group: str) -> None:
    """A one-off schedule with ActionAfterCompletion DELETE is gone once it ran."""
    deadline = time.monotonic() + 30
    while True:
        ok, answer = c.aws.send("scheduler", "GetSchedule", {"Name": name, "GroupName": group})
        if not ok:
            assert answer == "ResourceNotFoundException", answer
            return
        assert time.monotonic() < deadline, f"{name} still there after its run: {answer}"
        time.sleep(0.2)


def pipes(c: Context) -> None:
    aws, t = c.aws, c.t
    source = aws("sqs", "CreateQueue", QueueName=f"{t}-pipe-in")["QueueUrl"]
    name = f"{t}-pipe"
    arn = f"arn:aws:pipes:us-east-1:{ACCOUNT}:pipe/{name}"
    made = aws(
        "pipes",
        "CreatePipe",
        Name=name,
        RoleArn=f"arn:aws:iam::{ACCOUNT}:role/pipes",
        Source=f"arn:aws:sqs:us-east-1:{ACCOUNT}:{t}-pipe-in",
        SourceParameters={"FilterCriteria": {"Filters": [{"Pattern": '{"body": {"ok": [true]}}'}]}},
        Target=c.inbox_arn,
        TargetParameters={"InputTemplate": '{"piped": <$.body.n>}'},
        Tags={"k": "v"},
    )
    assert (made["Arn"], made["CurrentState"]) == (arn, "CREATING")
    assert aws("pipes", "DescribePipe", Name=name)["CurrentState"] == "RUNNING"
    listed = aws("pipes", "ListPipes", NamePrefix=name)["Pipes"]
    assert [p["Name"] for p in listed] == [name]
    for body in ('{"ok": false, "n": 1}', '{"ok": true, "n": 2}'):
        aws("sqs", "SendMessage", QueueUrl=source, MessageBody=body)
    (message,) = c.drain(1, wait=10)
    assert json.loads(message["Body"]) == {"piped": 2}
    assert aws("pipes", "StopPipe", Name=name)["DesiredState"] == "STOPPED"
    # AWS answers the transition under way; DescribePipe shows where it ended.
    assert aws("pipes", "StartPipe", Name=name)["CurrentState"] == "STARTING"
    assert aws("pipes", "DescribePipe", Name=name)["CurrentState"] == "RUNNING"
    aws(
        "pipes",
        "UpdatePipe",
        Name=name,
        RoleArn=f"arn:aws:iam::{ACCOUNT}:role/pipes",
        DesiredState="STOPPED",
    )
    assert aws("pipes", "DescribePipe", Name=name)["DesiredState"] == "STOPPED"
    aws("pipes", "TagResource", resourceArn=arn, tags={"k2": "w"})
    aws("pipes", "UntagResource", resourceArn=arn, tagKeys=["k"])
    assert aws("pipes", "ListTagsForResource", resourceArn=arn) == {"tags": {"k2": "w"}}
    assert aws("pipes", "DeletePipe", Name=name)["CurrentState"] == "DELETING"
    assert c.aws.refused("pipes", "DescribePipe", Name=name) == "NotFoundException"


def schemas(c: Context) -> None:
    aws, t = c.aws, c.t
    registry = f"{t}-shop"
    arn = f"arn:aws:schemas:us-east-1:{ACCOUNT}:registry/{registry}"
    made = aws("schemas", "CreateRegistry", RegistryName=registry, Description="d", Tags={"k": "v"})
    assert (made["RegistryArn"], made["Tags"]) == (arn, {"k": "v"})
    assert aws("schemas", "DescribeRegistry", RegistryName=registry)["Description"] == "d"
    updated = aws("schemas", "UpdateRegistry", RegistryName=registry, Description="e")
    assert updated["Description"] == "e"
    listed = aws("schemas", "ListRegistries", RegistryNamePrefix=f"{t}-")["Registries"]
    assert [r["RegistryName"] for r in listed] == [registry]
    aws("schemas", "TagResource", ResourceArn=arn, Tags={"k2": "w"})
    aws("schemas", "UntagResource", ResourceArn=arn, TagKeys=["k"])
    assert aws("schemas", "ListTagsForResource", ResourceArn=arn) == {"Tags": {"k2": "w"}}
    schema = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "properties": {"detail": {"type": "object", "required": ["id"]}},
    }
    where = {"RegistryName": registry, "SchemaName": "shop@Order"}
    made = aws(
        "schemas", "CreateSchema", Type="JSONSchemaDraft4", Content=json.dumps(schema), **where
    )
    assert made["SchemaVersion"] == "1"
    schema["title"] = "v2"
    made = aws("schemas", "UpdateSchema", Content=json.dumps(schema), **where)
    assert made["SchemaVersion"] == "2"
    first = aws("schemas", "DescribeSchema", SchemaVersion="1", **where)
    assert "title" not in json.loads(first["Content"])
    assert [
        s["VersionCount"] for s in aws("schemas", "ListSchemas", RegistryName=registry)["Schemas"]
    ] == [2]
    versions = aws("schemas", "ListSchemaVersions", **where)["SchemaVersions"]
    assert [v["SchemaVersion"] for v in versions] == ["1", "2"]
    found = aws("schemas", "SearchSchemas", RegistryName=registry, Keywords="order")["Schemas"]
    assert [s["SchemaName"] for s in found] == ["shop@Order"]
    exported = aws("schemas", "ExportSchema", Type="JSONSchemaDraft4", **where)
    assert json.loads(exported["Content"]) == schema
    event = {"source": "shop", "detail-type": "Order", "detail": {"id": "1"}}
    discovered = aws("schemas", "GetDiscoveredSchema", Events=[json.dumps(event)], Type="OpenApi3")
    assert json.loads(discovered["Content"])["info"]["title"] == "Order"
    assert aws("schemas", "PutCodeBinding", Language="Python36", **where)["Status"] == (
        "CREATE_COMPLETE"
    )
    described = aws("schemas", "DescribeCodeBinding", Language="Python36", **where)
    assert described["SchemaVersion"] == "2"
    body = aws("schemas", "GetCodeBindingSource", Language="Python36", **where)["Body"]
    # boto3 streams a payload; the AWS CLI prints it in base64.
    raw = body.read() if hasattr(body, "read") else base64.b64decode(body)
    assert raw[:2] == b"PK"  # a zip
    aws("schemas", "DeleteSchemaVersion", SchemaVersion="1", **where)
    aws("schemas", "DeleteSchema", **where)
    aws("schemas", "DeleteRegistry", RegistryName=registry)
    assert c.aws.refused("schemas", "DescribeRegistry", RegistryName=registry) == (
        "NotFoundException"
    )
    bus = aws("events", "CreateEventBus", Name=f"{t}-schemas")["EventBusArn"]
    made = aws("schemas", "CreateDiscoverer", SourceArn=bus, Description="d")
    discoverer = made["DiscovererId"]
    assert discoverer == f"events-event-bus-{t}-schemas"
    assert aws("schemas", "DescribeDiscoverer", DiscovererId=discoverer)["State"] == "STARTED"
    listed = aws("schemas", "ListDiscoverers", DiscovererIdPrefix=discoverer)["Discoverers"]
    assert [d["SourceArn"] for d in listed] == [bus]
    updated = aws("schemas", "UpdateDiscoverer", DiscovererId=discoverer, Description="e")
    assert updated["Description"] == "e"
    assert aws("schemas", "StopDiscoverer", DiscovererId=discoverer)["State"] == "STOPPED"
    assert aws("schemas", "StartDiscoverer", DiscovererId=discoverer)["State"] == "STARTED"
    aws("schemas", "DeleteDiscoverer", DiscovererId=discoverer)
    aws("events", "DeleteEventBus", Name=f"{t}-schemas")


SCENARIOS = [sqs, sns, events, connections, kinesis, logs, cloudwatch, stepfunctions]
if "scheduler" in SERVED:  # the scheduler plugin's entry point is installed
    SCENARIOS.append(scheduler)
if "firehose" in SERVED:  # the firehose plugin's entry point is installed
    SCENARIOS.append(firehose)
if "pipes" in SERVED:  # the pipes plugin's entry point is installed
    SCENARIOS.append(pipes)
if "schemas" in SERVED:  # the schemas plugin's entry point is installed
    SCENARIOS.append(schemas)


def _run_every_operation(aws: Client, tag: str, gate: Path, skipped: set[tuple[str, str]]) -> None:
    context = Context(aws, tag, gate)
    for scenario in SCENARIOS:
        scenario(context)
    served = {(service, op) for service, ops in SERVED.items() for op in ops}
    missing = sorted(served - skipped - aws.ran)
    assert not missing, f"served operations no scenario runs through {aws.name}: {missing}"
    assert aws.ran <= served


class Runner:
    def __init__(self, url: str, gate: Path) -> None:
        self.url = url
        self.gate = gate


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    directory = tmp_path_factory.mktemp("every")
    config = directory / "pipeline.yaml"
    config.write_text(CONFIG)
    (directory / "gatemod.py").write_text(GATE_MODULE)
    gate = directory / "gate"
    process = subprocess.Popen(
        [*pipelines_command(), "run", str(config), "--no-control", "--api", "127.0.0.1:0"],
        stderr=subprocess.PIPE,
        env={**os.environ, "GATE_FILE": str(gate)},
        text=True,
    )
    try:
        url = endpoint_of(process)
        logged = directory / "runner.log"
        # Its log read on: a runner blocked on a full pipe would answer nothing.
        threading.Thread(target=_copy, args=(process.stderr, logged), daemon=True).start()
        _fill_bulk_archive(url)
        _fill_bulk_log_group(url)
        yield Runner(url, gate)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()


def _copy(lines: IO[str], path: Path) -> None:
    with path.open("a") as out:
        for line in lines:
            out.write(line)
            out.flush()


#: More events than the gate's target queue (1,000) and the bus's intake
#: (10,000) hold, with the dispatcher's batch in hand (Limits' defaults).
BULK = 15_000


def _fill_bulk_archive(url: str) -> None:
    """A bus ``bulk`` whose archive keeps ``BULK`` events, and its rule to ``gate``."""
    client = boto("events", url)
    arn = client.create_event_bus(Name="bulk")["EventBusArn"]
    client.create_archive(ArchiveName="bulk", EventSourceArn=arn)
    entry = {"EventBusName": "bulk", "Source": "bulk", "DetailType": "Bulk", "Detail": "{}"}

    def put(_: int) -> None:
        assert client.put_events(Entries=[entry] * 10)["FailedEntryCount"] == 0

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(put, range(BULK // 10)))
    # Made after the events are put: only replays reach the gate.
    client.put_rule(Name="hold", EventBusName="bulk", EventPattern='{"source": ["bulk"]}')
    client.put_targets(
        Rule="hold",
        EventBusName="bulk",
        Targets=[{"Id": "gate", "Arn": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:gate"}],
    )


BULK_LOGS = 50_000


def _fill_bulk_log_group(url: str) -> None:
    """A log group ``/bulk`` with ``BULK_LOGS`` events for ``SLOW_QUERY``."""
    client = boto("logs", url)
    client.create_log_group(logGroupName="/bulk")
    client.create_log_stream(logGroupName="/bulk", logStreamName="web")
    now = int(time.time() * 1000)
    for start in range(0, BULK_LOGS, 10_000):
        events = [
            {"timestamp": now, "message": f"user{n % 97} GET /page/{n} 200 {n % 1000}"}
            for n in range(start, start + 10_000)
        ]
        client.put_log_events(logGroupName="/bulk", logStreamName="web", logEvents=events)


@pytest.fixture(scope="module")
def cli(runner: Runner, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    directory = tmp_path_factory.mktemp("cli")
    # cli_follow_urlparam off: AWS CLI v1 would fetch an http:// parameter
    # value (an API destination's endpoint) and send what it read instead.
    (directory / "config").write_text(
        "[default]\ncli_timestamp_format = iso8601\ncli_follow_urlparam = false\n"
    )
    env = {
        **os.environ,
        **CREDENTIALS,
        "AWS_CONFIG_FILE": str(directory / "config"),
        "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    driver = subprocess.Popen(
        [sys.executable, "-m", "tests.awsclidriver"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        yield Cli(runner.url, driver)
    finally:
        assert driver.stdin is not None
        driver.stdin.close()
        driver.wait(timeout=30)


def test_boto3_runs_every_served_operation(runner: Runner) -> None:
    _run_every_operation(Boto(runner.url), "b", runner.gate, set())


def test_the_aws_cli_runs_every_served_operation(runner: Runner, cli: Cli) -> None:
    _run_every_operation(cli, "c", runner.gate, set(NO_CLI_COMMAND))


def test_the_cli_lacks_a_command_for_exactly_the_excluded_operations() -> None:
    commands = awsclidriver.commands(sorted(SERVED))
    lacking = {
        (service, op)
        for service, ops in SERVED.items()
        for op in ops
        if op not in commands[service]
    }
    assert lacking == set(NO_CLI_COMMAND)
