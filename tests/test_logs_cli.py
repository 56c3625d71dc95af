"""``pipelines logs ...`` in real subprocesses, against a state database that
the tests also open directly (to seed events with chosen timestamps, and to
check what the commands wrote)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from plugins.logs.store import LogStore, MetricTransformation

from .helpers import pipelines_command, run_cli

T = TypeVar("T")

MINUTE = 60_000


def logs_cli(
    state: Path, *args: str, code: int = 0, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    result = run_cli("logs", *args, "--state", str(state), stdin=stdin)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    return result


def json_lines(result: subprocess.CompletedProcess[str]) -> list[Any]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def table_rows(result: subprocess.CompletedProcess[str]) -> list[list[str]]:
    """An ``--output table``'s lines as cells (columns are two spaces or more
    apart), without the rule under the header."""
    lines = [line for line in result.stdout.splitlines() if not set(line) <= {"─", " "}]
    return [re.split(r"\s{2,}", line.strip()) for line in lines]


def in_store(state: Path, call: Callable[[LogStore], Awaitable[T]]) -> T:
    async def run() -> T:
        async with await LogStore.open(state) as store:
            return await call(store)

    return asyncio.run(run())


def put(state: Path, stream: str, *events: tuple[int, str], group: str = "app") -> None:
    """Put (timestamp ms, message) events into ``stream`` of ``group``, made if need be."""

    async def run(store: LogStore) -> None:
        await store.create_log_group(group, exist_ok=True)
        batch = [{"timestamp": ts, "message": message} for ts, message in events]
        answer = await store.put_log_events(group, stream, batch, create_stream=True)
        assert answer["acceptedCount"] == len(events), answer

    in_store(state, run)


def minute_ago(minutes: int) -> int:
    """The start of the minute ``minutes`` ago, in ms."""
    return (int(time.time() * 1000) // MINUTE - minutes) * MINUTE


def insights_time(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%d %H:%M:%S") + (
        f".{ms % 1000:03d}"
    )


def test_create_groups_retention_streams_delete(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    logs_cli(state, "create", "app", "--retention-days", "7")
    again = logs_cli(state, "create", "app", code=1)
    assert again.stderr.startswith("error: ResourceAlreadyExistsException: ")
    put(state, "b", (minute_ago(1), "x"))
    in_store(state, lambda store: store.create_log_group("web"))
    put(state, "a", (minute_ago(1), "y"))
    in_store(state, lambda store: store.create_log_stream("app", "other"))

    groups = json.loads(logs_cli(state, "groups").stdout)
    assert [group["logGroupName"] for group in groups] == ["app", "web"]
    assert groups[0]["retentionInDays"] == 7 and "retentionInDays" not in groups[1]
    streams = json.loads(logs_cli(state, "streams", "app", "--prefix", "a").stdout)
    assert [stream["logStreamName"] for stream in streams] == ["a"]
    assert streams[0]["storedBytes"] == 1

    logs_cli(state, "retention", "app", "never")
    refused = logs_cli(state, "retention", "web", "4", code=1)
    assert "InvalidParameterException: retentionInDays 4 is not one of" in refused.stderr
    logs_cli(state, "delete", "web")
    groups = json.loads(logs_cli(state, "groups", "--prefix", "a").stdout)
    assert [group["logGroupName"] for group in groups] == ["app"]
    assert "retentionInDays" not in groups[0]
    assert json.loads(logs_cli(state, "filters", "app").stdout) == {
        "metricFilters": [],
        "subscriptionFilters": [],
    }


def test_put_sends_requests_within_the_limits_and_names_bad_lines(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    logs_cli(state, "create", "app")
    # Over 10,000 events and over 1 MiB: several PutLogEvents requests.
    lines = [f"event {n}" for n in range(10_001)]
    lines[3:3] = ["a" * 400_000, "b" * 400_000, "c" * 400_000]
    lines.insert(10, "x" * 1_048_551)  # over 1,048,576 bytes with its 26: line 11 fails alone
    lines.insert(20, "")  # no event
    source = tmp_path / "lines.txt"
    source.write_text("\n".join(lines) + "\n")

    before = int(time.time() * 1000)
    answer = json.loads(
        logs_cli(
            state, "put", "app", "web", "--input", str(source), "--create-stream", code=1
        ).stdout
    )
    assert answer["acceptedCount"] == 10_004
    assert answer["rejectedCounts"] == {"tooNew": 0, "tooOld": 0, "expired": 0, "invalid": 1}
    assert answer["errors"] == [{"line": 11, "message": "line 11: message is over 1048550 bytes"}]

    # Tail pages through FilterLogEvents' nextToken (10,000 events a page).
    events = json_lines(logs_cli(state, "tail", "app"))  # JSON lines: a streaming command
    expected = [line for line in lines if line and len(line) < 1_000_000]
    assert [event["message"] for event in events] == expected
    assert len({event["eventId"] for event in events}) == len(expected)
    stamps = [event["timestamp"] for event in events]
    assert stamps == sorted(stamps) and before <= stamps[0] <= stamps[-1] <= time.time() * 1000

    missing = logs_cli(state, "put", "app", "nope", stdin="hello\n", code=1)
    assert missing.stderr == (
        "error: ResourceNotFoundException: The specified log stream does not exist: app/nope\n"
    )


def test_tail_table_and_json_with_since_filters_and_streams(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    old, start = minute_ago(30) + 5, minute_ago(5) + 123
    put(state, "a", (old, "too old for 10m"), (start, "INFO started"))
    put(state, "b", (start + 1000, '{"level": "error", "code": 42}'))
    put(state, "a", (start + 2000, "ERROR disk full  "))

    assert table_rows(logs_cli(state, "tail", "app", "-o", "table")) == [
        ["timestamp", "logStreamName", "message"],
        [str(start), "a", "INFO started"],
        [str(start + 1000), "b", '{"level": "error", "code": 42}'],
        [str(start + 2000), "a", "ERROR disk full"],
    ]
    events = json_lines(logs_cli(state, "tail", "app", "--since", "1h"))
    assert [event["message"] for event in events][:2] == ["too old for 10m", "INFO started"]
    assert set(events[0]) == {"logStreamName", "timestamp", "message", "ingestionTime", "eventId"}
    assert (events[0]["logStreamName"], events[0]["timestamp"]) == ("a", old)
    since = datetime.fromtimestamp((start + 500) / 1000, UTC).replace(tzinfo=None).isoformat()
    later = json.loads(logs_cli(state, "tail", "app", "--since", since, "-o", "json").stdout)
    assert [event["timestamp"] for event in later] == [start + 1000, start + 2000]

    term = json_lines(logs_cli(state, "tail", "app", "--filter", "ERROR"))
    assert [(e["timestamp"], e["message"]) for e in term] == [(start + 2000, "ERROR disk full  ")]
    by_json = logs_cli(state, "tail", "app", "--filter", '{ $.level = "error" && $.code > 40 }')
    assert [(e["timestamp"], e["logStreamName"]) for e in json_lines(by_json)] == [
        (start + 1000, "b")
    ]
    only_a = json_lines(logs_cli(state, "tail", "app", "--stream", "a", "--since", "1h"))
    assert [(e["logStreamName"], e["message"]) for e in only_a] == [
        ("a", "too old for 10m"),
        ("a", "INFO started"),
        ("a", "ERROR disk full  "),
    ]


def next_line(process: subprocess.Popen[bytes], buffer: bytearray, timeout: float = 60.0) -> Any:
    """The next JSON line of a running process's output, waited for with a deadline."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while b"\n" not in buffer:
        left = deadline - time.monotonic()
        assert left > 0, "no line in time"
        if select.select([process.stdout], [], [], left)[0]:
            chunk = os.read(process.stdout.fileno(), 65536)
            assert chunk, "the process closed its output"
            buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return json.loads(line)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_follow_prints_each_new_event_once_until_signalled(
    tmp_path: Path, signum: signal.Signals
) -> None:
    state = tmp_path / "state.db"
    put(state, "a", (minute_ago(1), "ERROR first"))
    command = ["logs", "tail", "app", "--follow", "--poll", "0.05", "--filter", "ERROR"]
    process = subprocess.Popen(
        [*pipelines_command(), *command, "--state", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )
    try:
        buffer = bytearray()
        assert next_line(process, buffer)["message"] == "ERROR first"
        now = int(time.time() * 1000)
        put(state, "b", (now, "quiet"), (now, "ERROR second"))
        assert next_line(process, buffer)["message"] == "ERROR second"
        # An event timestamped earlier than those shown, ingested later, still shows.
        put(state, "a", (now - 30_000, "ERROR late"))
        assert next_line(process, buffer)["message"] == "ERROR late"
        time.sleep(0.2)  # a few polls: nothing is printed twice
        assert process.poll() is None, "it stopped by itself"
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        assert (bytes(buffer) + stdout, stderr) == (b"", b"")
    finally:
        process.kill()


def test_query_prints_a_table_with_the_statistics(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    first, second = minute_ago(10), minute_ago(9)
    put(state, "a", (first + 1000, "start"), (first + 2000, "ERROR one"))
    put(state, "b", (first + 3000, "step"), (second + 1000, "ERROR two"), (second + 2000, "end"))
    put(state, "a", (minute_ago(90), "outside the last hour"))

    counted = logs_cli(state, "query", "app", "stats count() by bin(1m)", "-o", "table")
    assert table_rows(counted) == [
        ["bin(1m)", "count()"],
        [insights_time(second), "2"],
        [insights_time(first), "3"],
        ["records matched: 5, records scanned: 5"],
    ]
    header, _, first_row, *_ = counted.stdout.splitlines()
    assert len(first_row) == len(header)  # numbers aligned right, under count()
    query = "filter @message like /ERROR/ | fields @timestamp, @logStream, @message"
    fields = logs_cli(state, "query", "app", query, "--since", "2h", "-o", "table")
    assert table_rows(fields) == [
        ["@timestamp", "@logStream", "@message"],
        [insights_time(second + 1000), "b", "ERROR two"],
        [insights_time(first + 2000), "a", "ERROR one"],
        ["records matched: 2, records scanned: 6"],
    ]
    window = ["--start", str(datetime.fromtimestamp(first / 1000, UTC).isoformat())]
    window += ["--end", str(datetime.fromtimestamp((second - 1) / 1000, UTC).isoformat())]
    printed = json.loads(logs_cli(state, "query", "app", query, *window).stdout)
    assert printed == {
        "fields": ["@timestamp", "@logStream", "@message"],
        "rows": [
            {"@timestamp": insights_time(first + 2000), "@logStream": "a", "@message": "ERROR one"}
        ],
        "statistics": {"recordsMatched": 1, "recordsScanned": 3},
    }


def test_errors_are_one_clean_message(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    # A mistyped --state is named, and no empty database is left there.
    missing = logs_cli(state, "groups", code=1)
    assert missing.stderr == (
        f"error: state database {state} does not exist: run the pipeline first\n"
    )
    assert not state.exists()
    put(state, "a", (minute_ago(1), "hello"))

    unknown = logs_cli(state, "tail", "nope", "--follow", code=1)
    assert unknown.stderr == (
        "error: ResourceNotFoundException: The specified log group does not exist: nope\n"
    )
    pattern = logs_cli(state, "tail", "app", "--filter", "{ $.level = }", code=1)
    assert pattern.stderr.startswith("error: InvalidParameterException: Invalid filter pattern")
    assert "at position 12" in pattern.stderr
    assert pattern.stderr.splitlines()[-2:] == ["  { $.level = }", "              ^"]
    query = logs_cli(state, "query", "app", "stats count() by", code=1)
    assert query.stdout == ""
    assert query.stderr.startswith("error: MalformedQueryException: ")
    assert "at position 16" in query.stderr
    assert query.stderr.splitlines()[-1] == "                  ^"
    since = logs_cli(state, "tail", "app", "--since", "yesterday", code=2)
    assert "Invalid value for '--since': 'yesterday' is neither a relative time" in since.stderr


def test_put_runs_the_groups_metric_filters_into_the_metric_store(tmp_path: Path) -> None:
    state = tmp_path / "state.db"

    async def make(store: LogStore) -> None:
        await store.create_log_group("app")
        errors = MetricTransformation("Errors", "App/Logs", "1", unit="Count")
        await store.put_metric_filter("app", "errors", '{ $.level = "ERROR" }', errors)

    in_store(state, make)
    lines = [json.dumps({"level": level}) for level in ("ERROR", "INFO", "ERROR", "ERROR")]
    logs_cli(state, "put", "app", "web", "--create-stream", stdin="\n".join(lines) + "\n")
    got = run_cli(
        "metrics", "get", "App/Logs", "Errors", "--stat", "Sum", "--since", "1h",
        "--state", str(state),
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert sum(p["Sum"] for p in json.loads(got.stdout)["Datapoints"]) == 3
