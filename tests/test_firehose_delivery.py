"""A delivery stream's buffers on the store, on both engines: size and
interval triggers per partition, durability across a restart, object keys,
compression, delimiters, the error output."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import zlib
from pathlib import Path
from typing import Any

import pytest

from pipelines.clock import ManualClock
from plugins.firehose.delivery import (
    PLAIN,
    DeliveryStream,
    Identity,
    buffer_records,
    record_id,
    record_ids,
)
from plugins.firehose.formats import FORMATS
from plugins.firehose.spec import parse_destination
from plugins.firehose.store import FirehoseStore

from .firehose_helpers import lines, objects

START = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
BUCKET = "arn:aws:s3:::lake"


def destination(**more: Any) -> dict[str, Any]:
    return {"BucketARN": BUCKET, "RoleARN": "arn:aws:iam::1:role/r", **more}


def partitioned(**more: Any) -> dict[str, Any]:
    return destination(
        Prefix="customer=!{partitionKeyFromQuery:customer}/",
        ErrorOutputPrefix="errors/!{firehose:error-output-type}/",
        DynamicPartitioningConfiguration={"Enabled": True},
        ProcessingConfiguration={
            "Enabled": True,
            "Processors": [
                {
                    "Type": "MetadataExtraction",
                    "Parameters": [
                        {
                            "ParameterName": "MetadataExtractionQuery",
                            "ParameterValue": "{customer: .customer}",
                        },
                        {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"},
                    ],
                },
                {"Type": "AppendDelimiterToRecord", "Parameters": []},
            ],
        },
        **more,
    )


class Harness:
    def __init__(self, location: str, root: Path, config: dict[str, Any]) -> None:
        self.location = location
        self.root = root / "out" if root.name != "out" else root
        self.config = config
        self.clock = ManualClock(START)
        self.store: FirehoseStore | None = None
        self.stream: DeliveryStream | None = None
        self.task: asyncio.Task[None] | None = None
        self.metrics: list[tuple[str, float]] = []

    async def start(self) -> DeliveryStream:
        self.store = await FirehoseStore.open(self.location, self.clock)
        found = await self.store.find("clicks")
        if found is None:
            request = {
                "DeliveryStreamType": "DirectPut",
                "ExtendedS3DestinationConfiguration": self.config,
            }
            found = await self.store.create("clicks", request, {}, made_by_api=True)
        identity = Identity(
            "clicks",
            "arn:aws:firehose:us-east-1:1:deliverystream/clicks",
            found.version,
            found.created,
            "us-east-1",
        )
        self.stream = DeliveryStream(
            identity,
            parse_destination(self.config),
            self.store,
            self.clock,
            lambda bucket: self.root / bucket,
            metric=lambda name, value, unit: self.metrics.append((name, value)),
        )
        await self.stream.load()
        self.task = asyncio.create_task(self.stream.run())
        return self.stream

    async def settle(self) -> None:
        # The delivery task writes through threads (files) and the database.
        for _ in range(50):
            await asyncio.sleep(0.01)

    async def advance(self, seconds: float) -> None:
        await self.clock.advance(seconds, quiet=self.settle)

    async def stop(self) -> None:
        assert self.task is not None and self.store is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.store.close()


def record(customer: str, n: int) -> bytes:
    return json.dumps({"customer": customer, "n": n}).encode()


async def test_an_interval_delivers_each_partition_as_one_object(
    state_location: str, tmp_path: Path
) -> None:
    harness = Harness(
        state_location,
        tmp_path,
        partitioned(BufferingHints={"IntervalInSeconds": 60, "SizeInMBs": 1}),
    )
    stream = await harness.start()
    try:
        results = await stream.put([record(c, n) for n in range(3) for c in ("a", "b")])
        assert all(r.record_id for r in results) and len({r.record_id for r in results}) == 6
        await harness.advance(59)
        assert objects(tmp_path / "out") == {}  # nothing before the interval
        await harness.advance(1)
        found = objects(tmp_path / "out" / "lake")
        assert sorted(k.split("/")[0] for k in found) == ["customer=a", "customer=b"]
        for key, data in found.items():
            # The default name: stream, version, the oldest record's arrival, a UUID.
            assert re.fullmatch(r"customer=[ab]/clicks-1-2023-11-14-22-13-20-[0-9a-f-]{36}", key), (
                key
            )
            assert data.endswith(b"\n") and data.count(b"\n") == 3
        assert await stream.store.buffered("clicks") == (0, 0)
        names = [name for name, _ in harness.metrics]
        assert names.count("DeliveryToS3.Success") == 2 and "IncomingRecords" in names
    finally:
        await harness.stop()


async def test_a_full_buffer_goes_out_at_once_and_others_wait(
    state_location: str, tmp_path: Path
) -> None:
    harness = Harness(
        state_location,
        tmp_path,
        partitioned(BufferingHints={"IntervalInSeconds": 900, "SizeInMBs": 1}),
    )
    stream = await harness.start()
    try:
        big = [
            json.dumps({"customer": "big", "pad": "x" * 10_000, "n": n}).encode()
            for n in range(110)
        ]
        await stream.put(big)
        await stream.put([record("small", 1)])
        await harness.advance(0)
        found = objects(tmp_path / "out" / "lake")
        assert [k.split("/")[0] for k in found] == ["customer=big"]
        assert sum(len(v) for v in found.values()) >= 1024 * 1024  # a buffer of 1 MiB went out
        await harness.advance(900)
        assert {k.split("/")[0] for k in objects(tmp_path / "out" / "lake")} == {
            "customer=big",
            "customer=small",
        }
    finally:
        await harness.stop()


async def test_buffered_records_survive_a_restart_and_go_out_after_it(
    state_location: str, tmp_path: Path
) -> None:
    config = destination(BufferingHints={"IntervalInSeconds": 300, "SizeInMBs": 5})
    first = Harness(state_location, tmp_path, config)
    stream = await first.start()
    await stream.put([b"one", b"two"])
    await first.stop()  # nothing written: the records are only in the store
    assert objects(tmp_path / "out") == {}
    second = Harness(state_location, tmp_path, config)
    second.clock = ManualClock(START + 10)
    stream = await second.start()
    try:
        await second.advance(300)
        found = objects(tmp_path / "out" / "lake")
        (key,) = found
        # No prefix: Firehose's default YYYY/MM/DD/HH/ of the oldest record's arrival.
        assert key.startswith("2023/11/14/22/clicks-1-2023-11-14-22-13-20-")
        assert found[key] == b"onetwo"  # no delimiter asked for: concatenated
    finally:
        await second.stop()


async def test_a_record_the_query_cannot_key_goes_to_the_error_output(
    state_location: str, tmp_path: Path
) -> None:
    harness = Harness(
        state_location,
        tmp_path,
        partitioned(BufferingHints={"IntervalInSeconds": 60, "SizeInMBs": 1}),
    )
    stream = await harness.start()
    try:
        await stream.put([b"not json", json.dumps({"other": 1}).encode(), record("a", 1)])
        await harness.advance(60)
        found = objects(tmp_path / "out" / "lake")
        errors = {k: v for k, v in found.items() if k.startswith("errors/")}
        (key,) = errors
        assert key.startswith("errors/partitioning-failed/2023/11/14/22/")
        failed = [json.loads(line) for line in errors[key].splitlines()]
        assert [f["errorCode"] for f in failed] == [
            "DynamicPartitioning.MetadataExtractionFailed"
        ] * 2
        assert failed[0]["rawData"] == "bm90IGpzb24="  # base64 of the record as sent
        assert failed[0]["arrivalTimestamp"] == int(START * 1000)
        assert "null" in failed[1]["errorMessage"]
        assert [k for k in found if k.startswith("customer=a/")]
    finally:
        await harness.stop()


@pytest.mark.parametrize("compression", FORMATS)
async def test_each_compression_format_round_trips(tmp_path: Path, compression: str) -> None:
    config = destination(
        Prefix="data/",
        CompressionFormat=compression,
        BufferingHints={"IntervalInSeconds": 0, "SizeInMBs": 1},
    )
    harness = Harness(str(tmp_path / "state.db"), tmp_path / "out", config)
    stream = await harness.start()
    try:
        sent = [f"record {n}\n".encode() * 20 for n in range(200)]
        await stream.put(sent)
        await harness.advance(0)
        found = objects(tmp_path / "out" / "lake", compression)
        (key,) = found
        suffix = {"UNCOMPRESSED": "", "GZIP": ".gz", "ZIP": ".zip", "Snappy": ".snappy"}
        assert key.endswith(suffix.get(compression, ".hsnappy"))
        assert found[key] == b"".join(sent)
    finally:
        await harness.stop()


async def test_a_write_that_fails_is_retried_and_other_partitions_flow(
    state_location: str, tmp_path: Path
) -> None:
    harness = Harness(
        state_location,
        tmp_path,
        partitioned(BufferingHints={"IntervalInSeconds": 60, "SizeInMBs": 1}),
    )
    stream = await harness.start()
    try:
        (tmp_path / "out" / "lake").mkdir(parents=True)
        (tmp_path / "out" / "lake" / "customer=a").write_text("a file where a directory must be")
        await stream.put([record("a", 1), record("b", 1)])
        await harness.advance(60)
        found = objects(tmp_path / "out" / "lake")
        assert [k for k in found if k.startswith("customer=b/")]  # b went out
        assert await stream.store.buffered("clicks") == (1, len(record("a", 1)) + 1)
        (tmp_path / "out" / "lake" / "customer=a").unlink()
        await harness.advance(2)  # the backoff passed: a goes out
        assert [k for k in objects(tmp_path / "out" / "lake") if k.startswith("customer=a/")]
        assert await stream.store.buffered("clicks") == (0, 0)
    finally:
        await harness.stop()


async def test_records_buffered_from_outside_are_taken_up(
    state_location: str, tmp_path: Path
) -> None:
    config = destination(BufferingHints={"IntervalInSeconds": 60, "SizeInMBs": 1})
    harness = Harness(state_location, tmp_path, config)
    stream = await harness.start()
    try:
        async with await FirehoseStore.open(state_location, harness.clock) as other:
            results = await buffer_records(other, "clicks", [b"from the CLI\n"])
        assert results[0].record_id
        await stream.load()
        await harness.advance(60)
        assert lines(objects(tmp_path / "out" / "lake")) == [b"from the CLI"]
    finally:
        await harness.stop()


async def test_a_prefix_a_partition_cannot_fill_sends_it_to_the_error_output(
    state_location: str, tmp_path: Path
) -> None:
    config = partitioned(BufferingHints={"IntervalInSeconds": 60, "SizeInMBs": 1})
    harness = Harness(state_location, tmp_path, config)
    stream = await harness.start()
    try:
        await stream.put([record("a", 1)])
        # An update names a key the buffered partition was not made with.
        changed = dict(config, Prefix="region=!{partitionKeyFromQuery:region}/")
        stream.reconfigure(parse_destination(changed), 2)
        await harness.advance(60)
        found = objects(tmp_path / "out" / "lake")
        (key,) = found
        assert key.startswith("errors/partitioning-failed/") and "/clicks-2-" in key
        assert found[key] == record("a", 1) + b"\n"
        assert await stream.store.buffered("clicks") == (0, 0)
    finally:
        await harness.stop()


async def test_records_waiting_for_a_removed_processor_are_partitioned(
    state_location: str, tmp_path: Path
) -> None:
    with_lambda = destination(
        BufferingHints={"IntervalInSeconds": 60, "SizeInMBs": 1},
        ProcessingConfiguration={
            "Enabled": True,
            "Processors": [
                {
                    "Type": "Lambda",
                    "Parameters": [{"ParameterName": "LambdaArn", "ParameterValue": "gone"}],
                },
                {"Type": "AppendDelimiterToRecord"},
            ],
        },
    )
    harness = Harness(state_location, tmp_path, with_lambda)
    stream = await harness.start()
    try:
        await stream.put([b"x", b"y"])
        without = destination(
            BufferingHints={"IntervalInSeconds": 60, "SizeInMBs": 1},
            ProcessingConfiguration={
                "Enabled": True,
                "Processors": [{"Type": "AppendDelimiterToRecord"}],
            },
        )
        stream.reconfigure(parse_destination(without), 2)
        await harness.advance(60)
        assert lines(objects(tmp_path / "out" / "lake")) == [b"x", b"y"]
    finally:
        await harness.stop()


async def test_a_partition_key_making_a_path_outside_the_bucket_goes_to_the_error_output(
    state_location: str, tmp_path: Path
) -> None:
    # S3 takes "customer=../../x" as a key; a directory cannot hold it
    # without writing outside the bucket: the record goes to the error output.
    harness = Harness(
        state_location,
        tmp_path,
        dict(
            partitioned(BufferingHints={"IntervalInSeconds": 60, "SizeInMBs": 1}),
            Prefix="!{partitionKeyFromQuery:customer}/",
        ),
    )
    stream = await harness.start()
    try:
        await stream.put([record("../..", 1), record("a", 2)])
        await harness.advance(60)
        found = objects(tmp_path / "out" / "lake")
        assert sorted(key.split("/")[0] for key in found) == ["a", "errors"]
        (error_key,) = [key for key in found if key.startswith("errors/")]
        assert error_key.startswith("errors/partitioning-failed/")
        assert found[error_key] == record("../..", 1) + b"\n"
        bucket = tmp_path / "out" / "lake"
        assert [p for p in tmp_path.rglob("clicks-*") if bucket not in p.parents] == []
    finally:
        await harness.stop()


def members(data: bytes) -> list[bytes]:
    """A GZIP file's members, each decompressed."""
    found = []
    while data:
        member = zlib.decompressobj(31)
        found.append(member.decompress(data) + member.flush())
        data = member.unused_data
    return found


async def test_gzip_objects_append_the_members_buffered_held_or_read_back(
    state_location: str, tmp_path: Path
) -> None:
    config = partitioned(
        CompressionFormat="GZIP", BufferingHints={"IntervalInSeconds": 60, "SizeInMBs": 1}
    )
    first = Harness(state_location, tmp_path, config)
    stream = await first.start()
    await stream.put([record("a", 1), record("b", 1), record("a", 2)])
    # Stored compressed: one gzip member a put and partition; sizes as sent.
    assert await stream.store.buffered("clicks") == (
        3,
        len(record("a", 1) + record("b", 1) + record("a", 2)) + 3,
    )
    chunks = await stream.store.chunks("clicks")
    assert [c.encoding for c in chunks] == ["gzip", "gzip"]
    stored = await stream.store.chunk_data([c.id for c in chunks])
    assert members(stored[0].data) == [record("a", 1) + b"\n" + record("a", 2) + b"\n"]
    await first.stop()  # what is held in memory is gone: the store has it
    second = Harness(state_location, tmp_path, config)
    second.clock = ManualClock(START + 10)
    stream = await second.start()
    try:
        await stream.put([record("a", 3)])  # held in memory: written from there
        await second.advance(60)
        found = objects(tmp_path / "out" / "lake", "GZIP")
        (key,) = [k for k in found if k.startswith("customer=a/")]
        assert found[key] == b"".join(record("a", n) + b"\n" for n in (1, 2, 3))
        raw = (tmp_path / "out" / "lake" / key).read_bytes()
        assert len(members(raw)) == 2  # the read-back chunk's member, then the held one's
        assert await stream.store.buffered("clicks") == (0, 0)
    finally:
        await second.stop()


@pytest.mark.parametrize("compression", [f for f in FORMATS if f != "GZIP"])
async def test_chunks_buffered_compressed_go_out_under_a_changed_compression(
    tmp_path: Path, compression: str
) -> None:
    config = destination(
        Prefix="data/",
        CompressionFormat="GZIP",
        BufferingHints={"IntervalInSeconds": 60, "SizeInMBs": 1},
    )
    harness = Harness(str(tmp_path / "state.db"), tmp_path / "out", config)
    stream = await harness.start()
    try:
        await stream.put([b"one\n", b"two\n"])
        stream.reconfigure(parse_destination(dict(config, CompressionFormat=compression)), 2)
        await stream.put([b"three\n"])
        await harness.advance(60)
        found = objects(tmp_path / "out" / "lake", compression)
        (key,) = found
        assert found[key] == b"one\ntwo\nthree\n"  # the gzip chunk decoded, then re-encoded
    finally:
        await harness.stop()


async def test_a_held_chunk_another_runner_wrote_out_is_left_out(
    state_location: str, tmp_path: Path
) -> None:
    config = destination(BufferingHints={"IntervalInSeconds": 60, "SizeInMBs": 1})
    harness = Harness(state_location, tmp_path, config)
    stream = await harness.start()
    try:
        await stream.put([b"first\n"])
        (gone,) = await stream.store.chunks("clicks")
        await stream.store.delete_chunks([gone.id])  # as another runner delivering it would
        await stream.put([b"second\n"])
        await harness.advance(60)
        assert lines(objects(tmp_path / "out" / "lake")) == [b"second"]
    finally:
        await harness.stop()


async def test_chunks_of_a_version_2_store_are_delivered_after_the_upgrade(
    tmp_path: Path,
) -> None:
    # A state database as version 2 left it: no encoding column, chunks as sent.
    location = tmp_path / "state.db"
    async with await FirehoseStore.open(str(location), ManualClock(START)):
        pass
    with sqlite3.connect(location) as db:
        db.execute("ALTER TABLE firehose_chunks DROP COLUMN encoding")
        db.execute("UPDATE store_versions SET version = 2 WHERE store = 'firehose'")
        db.execute(
            "INSERT INTO firehose_chunks (stream, partition, arrival, count, size, data)"
            " VALUES ('clicks', ?, ?, 1, 4, ?)",
            (PLAIN, START, b"old\n"),
        )
    config = destination(BufferingHints={"IntervalInSeconds": 60, "SizeInMBs": 1})
    harness = Harness(str(location), tmp_path, config)
    stream = await harness.start()
    try:
        (chunk,) = await stream.store.chunks("clicks")
        assert chunk.encoding is None
        await harness.advance(60)
        assert lines(objects(tmp_path / "out" / "lake")) == [b"old"]
    finally:
        await harness.stop()


def test_record_ids_are_those_of_each_record_however_many() -> None:
    for count in (0, 3, 1000, 1001):
        ids = record_ids(77, count)
        assert ids == [record_id(77, index) for index in range(count)]
    assert record_id(77, 5) == f"{77:024x}{5:08x}"
