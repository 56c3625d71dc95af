"""kinesis and logs through the AWS CLI against `pipelines run --api` in a subprocess."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .apiclient import aws_cli, endpoint_of
from .helpers import pipelines_command

CONFIG = """\
resources:
  clicks: {type: stream, shards: 2}
  audit: {type: log_group, log_group: /pipelines/audit}
"""


class Aws:
    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self, service: str, *args: str) -> Any:
        return aws_cli(self.url, service, *args)


@pytest.fixture
def aws(tmp_path: Path) -> Iterator[Aws]:
    config = tmp_path / "pipeline.yaml"
    config.write_text(CONFIG)
    process = subprocess.Popen(
        [*pipelines_command(), "run", str(config), "--no-control", "--api", "127.0.0.1:0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = endpoint_of(process)
        yield Aws(url)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()


def test_the_aws_cli_puts_and_reads_records_of_a_declared_stream(aws: Aws) -> None:
    listed = aws("kinesis", "list-streams")
    assert listed["StreamNames"] == ["clicks"]
    put = aws(
        "kinesis",
        "put-record",
        "--stream-name",
        "clicks",
        "--partition-key",
        "user-1",
        "--data",
        '{"page": "/"}',  # the AWS CLI v1 sends a blob's text as it is (base64 on the wire)
    )
    shard = put["ShardId"]
    iterator = aws(
        "kinesis",
        "get-shard-iterator",
        "--stream-name",
        "clicks",
        "--shard-id",
        shard,
        "--shard-iterator-type",
        "TRIM_HORIZON",
    )["ShardIterator"]
    records = aws("kinesis", "get-records", "--shard-iterator", iterator)["Records"]
    assert [base64.b64decode(r["Data"]) for r in records] == [b'{"page": "/"}']
    assert records[0]["SequenceNumber"] == put["SequenceNumber"]
    aws("kinesis", "create-stream", "--stream-name", "made", "--shard-count", "1")
    summary = aws("kinesis", "describe-stream-summary", "--stream-name", "made")
    assert summary["StreamDescriptionSummary"]["OpenShardCount"] == 1


def test_the_aws_cli_puts_and_filters_log_events_of_a_declared_group(aws: Aws) -> None:
    groups = aws("logs", "describe-log-groups")["logGroups"]
    assert [g["logGroupName"] for g in groups] == ["/pipelines/audit"]
    group = "/pipelines/audit"
    aws("logs", "create-log-stream", "--log-group-name", group, "--log-stream-name", "cli")
    now = int(time.time() * 1000)
    events = [
        {"timestamp": now, "message": "ERROR disk full"},
        {"timestamp": now + 1, "message": "all good"},
    ]
    answer = aws(
        "logs",
        "put-log-events",
        "--log-group-name",
        group,
        "--log-stream-name",
        "cli",
        "--log-events",
        json.dumps(events),
    )
    assert "rejectedLogEventsInfo" not in answer
    found = aws("logs", "filter-log-events", "--log-group-name", group, "--filter-pattern", "ERROR")
    assert [e["message"] for e in found["events"]] == ["ERROR disk full"]
    assert found["events"][0]["logStreamName"] == "cli"
