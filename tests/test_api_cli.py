"""`pipelines run --api`: a runner in a subprocess, reached by boto3 and the AWS CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .apiclient import aws_cli, boto, endpoint_of
from .helpers import SINK_MODULE, pipelines_command, run_cli

SINK_ARN = "arn:aws:lambda:us-east-1:123456789012:function:sink"


class Runner:
    def __init__(self, process: subprocess.Popen[str], url: str, sink: Path) -> None:
        self.process = process
        self.url = url
        self.sink = sink

    def delivered(self, count: int, seconds: float = 20.0) -> list[object]:
        deadline = time.monotonic() + seconds
        while True:
            lines = self.sink.read_text().splitlines() if self.sink.exists() else []
            if len(lines) >= count:
                return [json.loads(line) for line in lines]
            assert time.monotonic() < deadline, f"{len(lines)} of {count} delivered"
            time.sleep(0.02)


def _start(tmp_path: Path, config_text: str, *args: str) -> Runner:
    (tmp_path / "sinkmod.py").write_text(SINK_MODULE)
    config = tmp_path / "pipeline.yaml"
    config.write_text(config_text)
    sink = tmp_path / "sink.jsonl"
    env = {**os.environ, "SINK_FILE": str(sink)}
    process = subprocess.Popen(
        [*pipelines_command(), "run", str(config), "--no-control", *args],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    return Runner(process, endpoint_of(process), sink)


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    started = _start(
        tmp_path,
        "resources:\n  sink: {type: function, function: 'sinkmod:record'}\n",
        "--api",
        "127.0.0.1:0",
    )
    try:
        yield started
        started.process.send_signal(signal.SIGTERM)
        assert started.process.wait(timeout=30) == 0
    finally:
        started.process.kill()


def test_boto3_makes_a_rule_and_its_events_reach_the_target(runner: Runner) -> None:
    client = boto("events", runner.url)
    client.put_rule(Name="orders", EventPattern=json.dumps({"source": ["shop"]}))
    client.put_targets(
        Rule="orders", Targets=[{"Id": "s", "Arn": SINK_ARN, "InputPath": "$.detail"}]
    )
    answer = client.put_events(
        Entries=[{"Source": "shop", "DetailType": "Order", "Detail": json.dumps({"n": 1})}]
    )
    assert answer["FailedEntryCount"] == 0
    assert runner.delivered(1) == [{"n": 1}]


def test_the_aws_cli_puts_events_and_lists_rules(runner: Runner) -> None:
    def run(*args: str, ok: bool = True) -> Any:
        return aws_cli(runner.url, "events", *args, ok=ok)

    run("put-rule", "--name", "cli", "--event-pattern", '{"source": ["cli"]}')
    run("put-targets", "--rule", "cli", "--targets", f"Id=s,Arn={SINK_ARN}")
    listed = run("list-rules")
    assert [rule["Name"] for rule in listed["Rules"]] == ["cli"]
    entries = json.dumps([{"Source": "cli", "DetailType": "t", "Detail": '{"via": "aws"}'}])
    answer = run("put-events", "--entries", entries)
    assert answer["FailedEntryCount"] == 0
    (event,) = runner.delivered(1)
    assert event["detail"] == {"via": "aws"}  # type: ignore[index]
    refused = run("describe-rule", "--name", "nope", ok=False)
    assert "ResourceNotFoundException" in refused


def test_the_aws_cli_runs_sqs_against_declared_and_created_queues(tmp_path: Path) -> None:
    started = _start(
        tmp_path,
        "resources:\n  declared: {type: queue, visibility_timeout: 45}\n",
        "--api",
        "127.0.0.1:0",
    )

    def run(*args: str, ok: bool = True) -> Any:
        return aws_cli(started.url, *args, ok=ok)

    try:
        declared = f"{started.url}/000000000000/declared"
        assert run("sqs", "list-queues")["QueueUrls"] == [declared]
        url = run("sqs", "create-queue", "--queue-name", "orders")["QueueUrl"]
        assert url == f"{started.url}/000000000000/orders"
        sent = run(
            "sqs",
            "send-message",
            "--queue-url",
            declared,
            "--message-body",
            "hello",
            "--message-attributes",
            '{"Hello": {"DataType": "String", "StringValue": "There"}}',
        )
        assert sent["MD5OfMessageAttributes"] == "a311262e065454b75da111d535b8dacd"  # recorded
        got = run(
            "sqs",
            "receive-message",
            "--queue-url",
            declared,
            "--message-attribute-names",
            "All",
        )
        (message,) = got["Messages"]
        assert message["Body"] == "hello"
        assert message["MessageAttributes"]["Hello"]["StringValue"] == "There"
        run(
            "sqs",
            "delete-message",
            "--queue-url",
            declared,
            "--receipt-handle",
            message["ReceiptHandle"],
        )
        arn = run(
            "sqs", "get-queue-attributes", "--queue-url", url, "--attribute-names", "QueueArn"
        )["Attributes"]["QueueArn"]
        run("events", "put-rule", "--name", "shop", "--event-pattern", '{"source": ["shop"]}')
        run("events", "put-targets", "--rule", "shop", "--targets", f"Id=q,Arn={arn}")
        entries = json.dumps([{"Source": "shop", "DetailType": "Order", "Detail": '{"n": 1}'}])
        put = run("events", "put-events", "--entries", entries)
        routed = run("sqs", "receive-message", "--queue-url", url, "--wait-time-seconds", "10")[
            "Messages"
        ][0]
        event = json.loads(routed["Body"])
        assert event["id"] == put["Entries"][0]["EventId"]
        assert (event["source"], event["detail-type"], event["detail"]) == (
            "shop",
            "Order",
            {"n": 1},
        )
        missing = run("sqs", "get-queue-url", "--queue-name", "nope", ok=False)
        assert "AWS.SimpleQueueService.NonExistentQueue" in missing
        started.process.send_signal(signal.SIGTERM)
        assert started.process.wait(timeout=30) == 0
    finally:
        started.process.kill()


def test_the_config_can_name_the_endpoint(tmp_path: Path) -> None:
    started = _start(
        tmp_path,
        "api: '127.0.0.1:0'\nresources:\n  sink: {type: function, function: 'sinkmod:record'}\n",
    )
    try:
        client = boto("events", started.url)
        assert [bus["Name"] for bus in client.list_event_buses()["EventBuses"]] == ["default"]
        started.process.send_signal(signal.SIGTERM)
        assert started.process.wait(timeout=30) == 0
    finally:
        started.process.kill()


def test_a_bad_or_taken_address_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text("resources: {}\n")
    bad = run_cli("run", str(config), "--no-control", "--api", "localhost:http")
    assert bad.returncode == 1
    assert bad.stderr.strip() == "error: --api: 'localhost:http' is not HOST:PORT"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = run_cli("run", str(config), "--no-control", "--api", f"127.0.0.1:{port}")
    assert busy.returncode == 1
    assert f"the AWS endpoint cannot listen on 127.0.0.1:{port}" in busy.stderr
    assert "Traceback" not in busy.stderr
    config.write_text("api: [1]\nresources: {}\n")
    wrong = run_cli("run", str(config), "--no-control")
    assert wrong.returncode == 1
    assert re.search(r"pipeline\.yaml:1:\d+: api: \[1\] is not HOST:PORT", wrong.stderr)


def test_the_aws_cli_puts_and_reads_metrics_and_describes_alarms(tmp_path: Path) -> None:
    config = (
        "resources:\n  sink: {type: function, function: 'sinkmod:record'}\n"
        "alarms:\n"
        "  latency-high:\n"
        "    namespace: Shop\n    metric_name: Latency\n    statistic: Average\n"
        "    period: 60\n    evaluation_periods: 1\n    threshold: 100\n"
    )
    started = _start(tmp_path, config, "--api", "127.0.0.1:0")

    def run(*args: str) -> Any:
        return aws_cli(started.url, "cloudwatch", *args)

    try:
        # Described before any data: INSUFFICIENT_DATA whenever the minute's
        # evaluation runs (after the puts below, it may have moved to OK).
        alarms = run("describe-alarms", "--alarm-name-prefix", "latency")
        (alarm,) = alarms["MetricAlarms"]
        assert (alarm["AlarmName"], alarm["StateValue"]) == ("latency-high", "INSUFFICIENT_DATA")
        assert (alarm["Threshold"], alarm["Period"]) == (100.0, 60)
        now = int(time.time())
        # Both in one minute, whenever each call runs (a minute may turn between them).
        moment = now - now % 60 + 30
        for value in (10, 30):
            run(
                "put-metric-data",
                "--namespace",
                "Shop",
                "--metric-name",
                "Latency",
                "--value",
                str(value),
                "--unit",
                "Milliseconds",
                "--timestamp",
                str(moment),
            )
        stats = run(
            "get-metric-statistics",
            "--namespace",
            "Shop",
            "--metric-name",
            "Latency",
            "--start-time",
            str(now - 120),
            "--end-time",
            str(now + 120),
            "--period",
            "60",
            "--statistics",
            "Average",
            "SampleCount",
        )
        assert [(p["Average"], p["SampleCount"], p["Unit"]) for p in stats["Datapoints"]] == [
            (20.0, 2.0, "Milliseconds")
        ]
        started.process.send_signal(signal.SIGTERM)
        assert started.process.wait(timeout=30) == 0
    finally:
        started.process.kill()
