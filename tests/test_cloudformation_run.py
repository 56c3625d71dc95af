"""Templates written from AWS's documented examples, each run end to end:
``pipelines run TEMPLATE --cloudformation --api`` as a subprocess, driven
with boto3 against its endpoint."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from .apiclient import boto
from .helpers import pipelines_command

DATA = Path(__file__).parent.parent / "examples" / "cloudformation"


class Stack:
    """A template running in a ``pipelines run --cloudformation`` process."""

    def __init__(self, process: subprocess.Popen[str], url: str, report: list[str], sink: Path):
        self.process = process
        self.url = url
        self.report = report
        self.sink = sink

    def client(self, service: str) -> Any:
        return boto(service, self.url)

    def sunk(self, count: int, seconds: float = 20.0) -> list[Any]:
        deadline = time.monotonic() + seconds
        while True:
            lines = self.sink.read_text().splitlines() if self.sink.exists() else []
            if len(lines) >= count:
                return [json.loads(line) for line in lines]
            assert time.monotonic() < deadline, f"{len(lines)} of {count} calls"
            time.sleep(0.05)


def _start(tmp_path: Path, example: str, *args: str) -> Stack:
    directory = tmp_path / example
    shutil.copytree(DATA / example, directory)
    sink = tmp_path / "sink.jsonl"
    process = subprocess.Popen(
        [
            *pipelines_command(),
            "run",
            str(directory / "template.yaml"),
            "--cloudformation",
            "--no-control",
            "--api",
            "127.0.0.1:0",
            *args,
        ],
        env={**os.environ, "SINK_FILE": str(sink)},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    report: list[str] = []
    url = None
    for _ in range(200):
        line = process.stderr.readline()
        if not line:
            break
        found = re.search(r"AWS endpoint: (http://\S+)", line)
        if found:
            url = found.group(1)
        elif url and "pipeline started" in line:  # the endpoint answers a moment before
            return Stack(process, url, report, sink)
        else:
            report.append(line.rstrip("\n"))
    process.kill()
    raise AssertionError("no endpoint; the runner said:\n" + "\n".join(report))


@pytest.fixture
def stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    example, *args = request.param
    # A one-time schedule after the runner has started: a start takes 5-10 s
    # on a loaded machine, and an at() already past when the schedule is
    # made never fires (the test then waited for nothing).
    args = [arg.replace("SOON", _soon(20)) for arg in args]
    started = _start(tmp_path, example, *args)
    try:
        yield started
        started.process.send_signal(signal.SIGTERM)
        assert started.process.wait(timeout=30) == 0
    finally:
        started.process.kill()


def _receive(sqs: Any, queue: str, count: int = 1, seconds: float = 15.0) -> list[dict[str, Any]]:
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while len(got) < count and time.monotonic() < deadline:
        answer = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
        )
        got += answer.get("Messages", [])
    return got


@pytest.mark.parametrize("stack", [("rule-to-sqs",)], indirect=True)
def test_an_eventbridge_rule_to_sqs_with_a_dead_letter_queue(stack: Stack) -> None:
    assert any(
        "EventBridgeToQueuePolicy (AWS::SQS::QueuePolicy): skipped: permissions are not enforced locally"
        in line
        for line in stack.report
    )
    assert (
        "output QueueUrl: https://sqs.us-east-1.amazonaws.com/000000000000/template-orders-dev"
        in stack.report
    )
    events = stack.client("events")
    assert events.describe_event_bus(Name="orders-dev")["Name"] == "orders-dev"
    rule = events.describe_rule(Name="order-placed", EventBusName="orders-dev")
    assert rule["State"] == "ENABLED"
    targets = events.list_targets_by_rule(Rule="order-placed", EventBusName="orders-dev")["Targets"]
    assert targets[0]["RetryPolicy"] == {"MaximumRetryAttempts": 4, "MaximumEventAgeInSeconds": 400}
    assert targets[0]["DeadLetterConfig"]["Arn"].endswith(":template-rule-dlq")
    answer = events.put_events(
        Entries=[
            {
                "EventBusName": "orders-dev",
                "Source": "shop.orders",
                "DetailType": "OrderPlaced",
                "Detail": json.dumps({"order": "o-1", "total": 25}),
            },
            {
                "EventBusName": "orders-dev",
                "Source": "shop.orders",
                "DetailType": "OrderPlaced",
                "Detail": json.dumps({"order": "o-2", "total": 0}),
            },
        ]
    )
    assert answer["FailedEntryCount"] == 0
    sqs = stack.client("sqs")
    messages = _receive(sqs, "template-orders-dev")
    assert [json.loads(m["Body"]) for m in messages] == [
        {"order": "o-1", "total": 25, "stage": "dev"}
    ]
    url = sqs.get_queue_url(QueueName="template-orders-dev")["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["VisibilityTimeout"] == "30"  # IsProd is false
    assert attributes["MessageRetentionPeriod"] == "86400"  # from the mapping
    assert json.loads(attributes["RedrivePolicy"])["maxReceiveCount"] == 5


@pytest.mark.parametrize("stack", [("sam-app",)], indirect=True)
def test_a_sam_event_driven_app_runs_its_python_function(stack: Stack) -> None:
    assert any(
        line.startswith("OrdersTable (AWS::Serverless::SimpleTable): skipped: DynamoDB")
        for line in stack.report
    )
    assert any(
        line.startswith("NodeFunction (AWS::Lambda::Function): skipped: runtime nodejs20.x")
        for line in stack.report
    )
    events = stack.client("events")
    events.put_events(
        Entries=[
            {
                "Source": "shop.orders",
                "DetailType": "OrderPlaced",
                "Detail": json.dumps({"order": "o-7"}),
            }
        ]
    )
    assert stack.sunk(1) == [{"order": "o-7"}]  # InputPath: $.detail
    sns = stack.client("sns")
    topic = "arn:aws:sns:us-east-1:000000000000:order-notifications"
    sns.publish(
        TopicArn=topic,
        Message="ignored",
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "refund"}},
    )
    sns.publish(
        TopicArn=topic,
        Message="order o-8",
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "order"}},
    )
    calls = stack.sunk(2)
    assert len(calls) == 2
    assert "ignored" not in json.dumps(calls)  # the filter policy held it back
    [record] = calls[1]["Records"]  # Lambda's SNS event, as on AWS
    assert record["EventSource"] == "aws:sns"
    assert record["EventSubscriptionArn"].startswith(topic + ":")
    assert record["Sns"]["Message"] == "order o-8"
    assert record["Sns"]["MessageAttributes"] == {"kind": {"Type": "String", "Value": "order"}}
    assert record["Sns"]["SigningCertUrl"].startswith(stack.url)  # the runner serves HTTP
    assert record["Sns"]["Signature"]
    sqs = stack.client("sqs")
    url = sqs.get_queue_url(QueueName="incoming-orders")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"order": "o-9"}))
    event = stack.sunk(3)[2]  # a pipe does the work of Lambda's SQS poller, in its shape
    assert list(event) == ["Records"]
    assert [json.loads(record["body"]) for record in event["Records"]] == [{"order": "o-9"}]
    assert event["Records"][0]["eventSource"] == "aws:sqs"
    assert any(
        line.startswith("ProcessOrderFunctionQueued (AWS::Lambda::EventSourceMapping): runs: pipe")
        for line in stack.report
    )
    rules = {r["Name"]: r for r in events.list_rules()["Rules"]}
    assert rules["ProcessOrderFunctionNightly"]["ScheduleExpression"] == "cron(0 3 * * ? *)"


@pytest.mark.parametrize("stack", [("sns-fanout",)], indirect=True)
def test_an_sns_fan_out_with_filter_policies(stack: Stack) -> None:
    assert any(
        line.startswith("EmailSubscription (AWS::SNS::Subscription): skipped: email")
        for line in stack.report
    )
    sns = stack.client("sns")
    topic = "arn:aws:sns:us-east-1:000000000000:orders"

    def attributes(total: int, country: str) -> dict[str, Any]:
        return {
            "total": {"DataType": "Number", "StringValue": str(total)},
            "country": {"DataType": "String", "StringValue": country},
        }

    sns.publish(
        TopicArn=topic,
        Message=json.dumps({"kind": "order", "order": "o-1"}),
        MessageAttributes=attributes(250, "DE"),
    )
    sns.publish(
        TopicArn=topic,
        Message=json.dumps({"kind": "order", "order": "o-2"}),
        MessageAttributes=attributes(40, "US"),
    )
    sns.publish(
        TopicArn=topic,
        Message=json.dumps({"kind": "refund", "order": "o-3"}),
        MessageAttributes=attributes(15, "US"),
    )
    sqs = stack.client("sqs")
    big = _receive(sqs, "big-orders")
    assert [json.loads(m["Body"])["order"] for m in big] == [
        "o-1"
    ]  # raw delivery: the message itself
    eu = _receive(sqs, "eu-orders")
    assert [json.loads(json.loads(m["Body"])["Message"])["order"] for m in eu] == [
        "o-1"
    ]  # SNS's envelope
    refunds = _receive(sqs, "refunds")
    assert [json.loads(json.loads(m["Body"])["Message"])["order"] for m in refunds] == ["o-3"]
    subscriptions = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert len(subscriptions) == 3


def _soon(seconds: int) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("at(%Y-%m-%dT%H:%M:%S)")


@pytest.mark.parametrize(
    "stack", [("scheduled-workflow", "--parameter", "ScheduleExpression=SOON")], indirect=True
)
def test_a_step_functions_workflow_started_by_a_schedule(stack: Stack) -> None:
    assert (
        Path(stack.sink).parent / "scheduled-workflow" / "inline_functions" / "build_report.py"
    ).exists()
    scheduler = stack.client("scheduler")
    schedule = scheduler.get_schedule(Name="nightly", GroupName="reports")
    assert schedule["Target"]["Arn"].endswith(":stateMachine:nightly-report")
    messages = _receive(stack.client("sqs"), "reports", seconds=60)
    body = json.loads(messages[0]["Body"])
    assert body["report"] == "daily" and body["rows"] == 3
    assert body["scheduled"].startswith(str(datetime.now(UTC).year))
    sfn = stack.client("stepfunctions")
    machine = "arn:aws:states:us-east-1:000000000000:stateMachine:nightly-report"
    executions = sfn.list_executions(stateMachineArn=machine)["executions"]
    assert [e["status"] for e in executions] == ["SUCCEEDED"]


def test_a_reload_imports_the_template_again(tmp_path: Path) -> None:
    directory = tmp_path / "app"
    directory.mkdir()
    template = directory / "template.yaml"
    template.write_text(
        "Resources:\n  First: {Type: AWS::SQS::Queue, Properties: {QueueName: first}}\n"
    )
    process = subprocess.Popen(
        [
            *pipelines_command(),
            "run",
            str(template),
            "--cloudformation",
            "--no-control",
            "--api",
            "127.0.0.1:0",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        url = None
        while True:
            line = process.stderr.readline()
            assert line, "the runner stopped"
            found = re.search(r"AWS endpoint: (http://\S+)", line)
            url = found.group(1) if found else url
            if url and "pipeline started" in line:
                break
        sqs = boto("sqs", url)
        template.write_text(
            "Resources:\n  First: {Type: AWS::SQS::Queue, Properties: {QueueName: first}}\n"
            "  Second: {Type: AWS::SQS::Queue, Properties: {QueueName: second}}\n"
        )
        process.send_signal(signal.SIGHUP)  # as --watch does on a change, without its timing
        deadline = time.monotonic() + 20
        names: list[str] = []
        while time.monotonic() < deadline and "second" not in names:
            names = [u.rsplit("/", 1)[-1] for u in sqs.list_queues().get("QueueUrls", [])]
            time.sleep(0.2)
        assert sorted(names) == ["first", "second"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
