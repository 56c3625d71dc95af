"""``pipelines stream ...`` in real subprocesses, against a state database
that the tests also open directly (to seed records with chosen arrival times,
and to check what the commands wrote)."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from pipelines.clock import Clock, ManualClock
from plugins.stream.store import HASH_SPACE, StreamStore, parse_sequence_number, partition_hash

from .helpers import pipelines_command, run_cli

T = TypeVar("T")


def stream_cli(
    state: Path, *args: str, code: int = 0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = run_cli("stream", *args, "--state", str(state), env=env)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    return result


def json_lines(result: subprocess.CompletedProcess[str]) -> list[Any]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def in_store(
    state: Path, call: Callable[[StreamStore], Awaitable[T]], clock: Clock | None = None
) -> T:
    async def run() -> T:
        async with await StreamStore.open(state, clock) as store:
            return await call(store)

    return asyncio.run(run())


def seed(state: Path, records: list[tuple[str, bytes | str]], shards: int = 1) -> list[str]:
    """Create stream "s" and put ``records`` (partition key, data); their sequence numbers."""

    async def run(store: StreamStore) -> list[str]:
        await store.create_stream("s", shards)
        return [(await store.put_record("s", data, key))["SequenceNumber"] for key, data in records]

    return in_store(state, run)


def put(state: Path, data: str, key: str = "k") -> str:
    answer = in_store(state, lambda store: store.put_record("s", data, key))
    return str(answer["SequenceNumber"])


def shard_of(key: str, shards: int) -> str:
    """The shard a partition key goes to in a new stream of ``shards`` shards."""
    return f"shardId-{partition_hash(key) // (HASH_SPACE // shards):012d}"


def counter(sequence: str) -> int:
    return parse_sequence_number(sequence)[0]


def test_create_describe_delete_list(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    seed(state, [])  # stream "s"
    options = ["--shards", "2", "--retention-hours", "48", "--max-record-size", "2048"]
    created = json.loads(stream_cli(state, "create", "t", *options, "--write-limits").stdout)
    described = json.loads(stream_cli(state, "describe", "t").stdout)
    assert created == described
    assert described["StreamName"] == "t"
    assert described["RetentionPeriodHours"] == 48
    assert described["MaxRecordSizeInBytes"] == 2048
    assert described["StreamModeDetails"] == {"StreamMode": "PROVISIONED"}
    assert described["OpenShardCount"] == 2
    assert [shard["HashKeyRange"] for shard in described["Shards"]] == [
        {"StartingHashKey": "0", "EndingHashKey": str(HASH_SPACE // 2 - 1)},
        {"StartingHashKey": str(HASH_SPACE // 2), "EndingHashKey": str(HASH_SPACE - 1)},
    ]
    assert stream_cli(state, "delete", "s").stdout == ""
    assert json.loads(stream_cli(state, "list").stdout) == ["t"]


def test_put_arguments_and_input_file_each_record_fails_alone(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    in_store(state, lambda store: store.create_stream("s", 2, max_record_size=1024))

    given = stream_cli(state, "put", "s", "one", '{"n": 2}', "x" * 2000, "-k", "key", code=1)
    answers = json.loads(given.stdout)  # one array, though printed a request at a time
    assert [answer["Index"] for answer in answers] == [0, 1, 2]
    assert [answer.get("ShardId") for answer in answers[:2]] == [shard_of("key", 2)] * 2
    assert counter(answers[0]["SequenceNumber"]) < counter(answers[1]["SequenceNumber"])
    assert answers[2]["ErrorCode"] == "InvalidArgumentException"
    assert "1024" in answers[2]["ErrorMessage"]
    assert "SequenceNumber" not in answers[2]

    # Over 500 records: three PutRecords requests; a blank line is no record.
    lines = [json.dumps({"user": f"u{n % 3}", "n": n}) for n in range(1200)]
    lines.insert(700, "not json")
    lines.insert(300, "   ")
    source = tmp_path / "records.jsonl"
    source.write_text("\n".join(lines) + "\n")
    put_input = ["put", "s", "--input", str(source), "--partition-key-path", "user"]
    answers = json_lines(stream_cli(state, *put_input, "-o", "jsonl", code=1))
    assert [answer["Index"] for answer in answers] == list(range(1201))
    assert [answer["Index"] for answer in answers if "ErrorCode" in answer] == [700]
    assert "not JSON" in answers[700]["ErrorMessage"]
    written = [answer for answer in answers if "SequenceNumber" in answer]
    numbers = [counter(answer["SequenceNumber"]) for answer in written]
    assert numbers == sorted(numbers) and len(set(numbers)) == 1200
    assert {answer["ShardId"] for answer in written[:3]} == {shard_of(f"u{n}", 2) for n in range(3)}

    records = in_store(state, lambda store: store.stream("s").records())
    assert len(list(records)) == 1202
    by_key: dict[str, list[int]] = {}
    for record in records:
        if record.partition_key.startswith("u"):
            by_key.setdefault(record.partition_key, []).append(record.json()["n"])
    assert by_key == {f"u{k}": [n for n in range(1200) if n % 3 == k] for k in range(3)}
    assert [r.data for r in records if r.partition_key == "key"] == [b"one", b'{"n": 2}']


def test_read_from_each_kind_of_position(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    start = float(int(time.time()) - 3600)  # within the 24 hours kept
    clock = ManualClock(start)

    async def write(store: StreamStore) -> None:
        await store.create_stream("s")
        for data in (b'{"n": 1}', b"plain text", b"\xff\x00"):
            await store.put_record("s", data, "k")
            clock.jump(10)

    in_store(state, write, clock)
    everything = json_lines(stream_cli(state, "read", "s"))
    assert everything[0] == {
        "SequenceNumber": everything[0]["SequenceNumber"],
        "ShardId": "shardId-000000000000",
        "PartitionKey": "k",
        "ApproximateArrivalTimestamp": datetime.fromtimestamp(start, UTC).strftime(
            "%Y-%m-%dT%H:%M:%S.000Z"
        ),
        "Data": {"n": 1},
    }
    assert [record["Data"] for record in everything] == [{"n": 1}, "plain text", "/wA="]
    assert [record.get("DataEncoding") for record in everything] == [None, None, "base64"]

    second = everything[1]["SequenceNumber"]
    assert json_lines(stream_cli(state, "read", "s", "--from", second)) == everything[1:]
    # An ISO 8601 time without an offset is UTC, whatever the local time zone.
    naive = datetime.fromtimestamp(start + 5, UTC).replace(tzinfo=None).isoformat()
    tokyo = {**os.environ, "TZ": "Asia/Tokyo"}
    assert json_lines(stream_cli(state, "read", "s", "--from", naive, env=tokyo)) == everything[1:]
    epoch = str(start + 15)
    assert json_lines(stream_cli(state, "read", "s", "--from", epoch)) == everything[2:]
    assert stream_cli(state, "read", "s", "--from", "latest").stdout == ""
    # Read without --consumer: no checkpoint was written.
    assert in_store(state, lambda store: store.consumers("s")) == []


def test_split_and_merge_keep_the_order_of_each_partition_key(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    keys = ["a", "b", "c", "d", "e"]
    seed(state, [(key, json.dumps({"k": key, "n": 0})) for key in keys])

    children = json.loads(stream_cli(state, "split", "s", "shardId-000000000000").stdout)
    assert children == ["shardId-000000000001", "shardId-000000000002"]
    middle = [json.dumps({"k": key, "n": 1}) for key in keys]
    answers = json.loads(stream_cli(state, "put", "s", *middle, "--partition-key-path", "k").stdout)
    assert [answer["ShardId"] for answer in answers] == [
        "shardId-000000000001" if partition_hash(key) < HASH_SPACE // 2 else "shardId-000000000002"
        for key in keys
    ]
    merged = json.loads(stream_cli(state, "merge", "s", "1", "2").stdout)
    assert merged == {"StreamName": "s", "ShardId": "shardId-000000000003"}
    for key in keys:
        put(state, json.dumps({"k": key, "n": 2}), key)

    described = json.loads(stream_cli(state, "describe", "s").stdout)
    shards = {shard["ShardId"][-1]: shard for shard in described["Shards"]}
    assert sorted(shards) == ["0", "1", "2", "3"]
    assert described["OpenShardCount"] == 1
    assert shards["1"]["ParentShardId"] == shards["2"]["ParentShardId"] == "shardId-000000000000"
    assert shards["1"]["HashKeyRange"]["EndingHashKey"] == str(HASH_SPACE // 2 - 1)
    assert shards["2"]["HashKeyRange"]["StartingHashKey"] == str(HASH_SPACE // 2)
    assert shards["3"]["ParentShardId"] == "shardId-000000000001"
    assert shards["3"]["AdjacentParentShardId"] == "shardId-000000000002"
    assert shards["3"]["HashKeyRange"]["EndingHashKey"] == str(HASH_SPACE - 1)
    assert ["EndingSequenceNumber" in shards[n]["SequenceNumberRange"] for n in "0123"] == [
        True,
        True,
        True,
        False,
    ]

    records = json_lines(stream_cli(state, "read", "s"))
    assert len(records) == 15
    for key in keys:
        assert [r["Data"]["n"] for r in records if r["PartitionKey"] == key] == [0, 1, 2]
    generation = {"0": 0, "1": 1, "2": 1, "3": 2}
    order = [generation[record["ShardId"][-1]] for record in records]
    assert order == sorted(order)  # parents before children


class Lines:
    """The output lines of a running process, each awaited with a deadline."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self.fd = process.stdout.fileno()
        self.buffer = b""

    def next(self, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            assert left > 0, "no line in time"
            if select.select([self.fd], [], [], left)[0]:
                chunk = os.read(self.fd, 65536)
                assert chunk, "the process closed its output"
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)


def follow(state: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*pipelines_command(), "stream", "read", "s", "--follow", *args, "--state", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )


def stop(process: subprocess.Popen[bytes], signum: signal.Signals) -> str:
    """Signal the process; its stderr once it has ended with exit code 0."""
    assert process.poll() is None, "it stopped by itself"
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    return stderr.decode()


def test_follow_prints_new_records_until_sigterm_and_saves_its_checkpoint(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.db"
    seed(state, [("k", "first")])
    process = follow(state, "--consumer", "f")
    try:
        lines = Lines(process)
        assert lines.next()["Data"] == "first"
        later = put(state, '{"later": true}')  # by another process: found by polling
        assert lines.next()["Data"] == {"later": True}
        assert stop(process, signal.SIGTERM) == ""
    finally:
        process.kill()
    saved = in_store(state, lambda store: store.checkpoints("s", "f"))
    assert saved == {"shardId-000000000000": {"SequenceNumber": later, "Finished": False}}


def test_follow_ends_cleanly_on_sigint(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    seed(state, [("k", "first")])
    process = follow(state, "--from", "trim-horizon")
    try:
        assert Lines(process).next()["Data"] == "first"
        assert stop(process, signal.SIGINT) == ""
    finally:
        process.kill()


def test_a_consumer_resumes_where_it_stopped(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    numbers = seed(state, [("k", f"r{n}") for n in range(5)])

    first = json_lines(stream_cli(state, "read", "s", "--consumer", "c", "--limit", "2"))
    assert [record["Data"] for record in first] == ["r0", "r1"]
    rest = json_lines(stream_cli(state, "read", "s", "--consumer", "c"))
    assert [record["Data"] for record in rest] == ["r2", "r3", "r4"]
    checkpoints = json.loads(stream_cli(state, "checkpoints", "s", "c").stdout)
    assert checkpoints == {
        "shardId-000000000000": {"SequenceNumber": numbers[4], "Finished": False}
    }
    assert json.loads(stream_cli(state, "consumers", "s").stdout) == ["c"]


def test_trim_deletes_what_retention_has_expired(tmp_path: Path) -> None:
    state = tmp_path / "state.db"

    async def write_old(store: StreamStore) -> None:
        await store.create_stream("s")  # 24 hours' retention
        await store.put_records("s", [{"Data": "old", "PartitionKey": "k"}] * 2)

    in_store(state, write_old, ManualClock(time.time() - 25 * 3600))
    put(state, "new")
    assert json.loads(stream_cli(state, "trim", "s").stdout) == {"StreamName": "s", "Trimmed": 2}
    records = in_store(state, lambda store: store.stream("s").records())
    assert [record.data for record in records] == [b"new"]


def test_an_unknown_stream_is_a_one_line_error(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    # A mistyped --state is named, and no empty database is left there.
    missing = stream_cli(state, "list", code=1)
    assert (
        missing.stderr == f"error: state database {state} does not exist: run the pipeline first\n"
    )
    assert not state.exists()
    stream_cli(state, "create", "s")
    result = stream_cli(state, "read", "nope", code=1)
    assert result.stdout == ""
    assert result.stderr == "error: ResourceNotFoundException: stream nope not found\n"


def test_a_bad_from_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    result = stream_cli(tmp_path / "state.db", "read", "s", "--from", "yesterday", code=2)
    assert result.stderr.splitlines() == [  # one line, as every error
        "error: Invalid value for '--from': 'yesterday' is not trim-horizon, latest, a sequence"
        " number (56 digits), an ISO 8601 time or seconds since the epoch"
        " (see pipelines stream read --help)"
    ]
    assert not (tmp_path / "state.db").exists()  # refused before opening anything
