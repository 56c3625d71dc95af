"""The kinesis API over HTTP: boto3 against an ApiServer, the runtime in process.

Cases marked "recorded" port LocalStack's AWS-validated tests
(tests/aws/services/kinesis/test_kinesis.py and its .snapshot.json): the
values compared are the ones recorded from AWS (see docs/conformance.md).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.api import ApiServer, served_services
from pipelines.clock import ManualClock
from pipelines.runtime import Runtime
from plugins.stream.store import StreamStore

from .apiclient import aws_call, aws_refusal, boto
from .helpers import advance, eventually
from .recorder import Recorder, plugin_manager

PLUGINS = plugin_manager()


class Kinesis:
    def __init__(self, runtime: Runtime, url: str, **config: Any) -> None:
        self.runtime = runtime
        self.url = url
        self.client = boto("kinesis", url, **config)

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        return await aws_call(self.client, operation, **params)

    async def error(self, operation: str, **params: Any) -> dict[str, Any]:
        response: dict[str, Any] = (await aws_refusal(self.client, operation, **params)).response
        return response

    async def shards(self, stream: str) -> list[str]:
        listed = await self.call("list_shards", StreamName=stream)
        return [shard["ShardId"] for shard in listed["Shards"]]

    async def iterator(self, stream: str, kind: str = "TRIM_HORIZON", **more: Any) -> str:
        shard = more.pop("ShardId", None) or (await self.shards(stream))[0]
        got = await self.call(
            "get_shard_iterator", StreamName=stream, ShardId=shard, ShardIteratorType=kind, **more
        )
        return str(got["ShardIterator"])


async def _serve(tmp_path: Path, clock: ManualClock | None = None) -> AsyncIterator[Kinesis]:
    runtime = Runtime(state_path=tmp_path / "state.db", plugins=PLUGINS, clock=clock)
    runtime.add_resource("seen", "recorder", {})
    runtime.add_resource(
        "clicks",
        "stream",
        {"shards": 2, "consumers": {"watch": {"target": "seen", "poll": 30}}},
    )
    server = ApiServer(runtime, served_services(PLUGINS), "127.0.0.1", 0)
    await server.start()
    try:
        async with runtime:
            yield Kinesis(runtime, server.url)
    finally:
        await server.close()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Kinesis]:
    async for served in _serve(tmp_path):
        yield served


# -- recorded (LocalStack's AWS-validated tests) -----------------------------


async def test_recorded_create_stream_without_shard_count(api: Kinesis) -> None:
    await api.call("create_stream", StreamName="plain")
    shards = (await api.call("describe_stream", StreamName="plain"))["StreamDescription"]["Shards"]
    assert len(shards) == 4
    for shard in shards:
        assert set(shard) == {"ShardId", "HashKeyRange", "SequenceNumberRange"}
        assert set(shard["HashKeyRange"]) == {"StartingHashKey", "EndingHashKey"}
        assert set(shard["SequenceNumberRange"]) == {"StartingSequenceNumber"}
    summary = await api.call("describe_stream_summary", StreamName="plain")
    assert summary["StreamDescriptionSummary"]["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}


async def test_recorded_create_stream_without_stream_name_is_a_400(tmp_path: Path) -> None:
    async for served in _serve(tmp_path):
        loose = Kinesis(served.runtime, served.url, parameter_validation=False)
        refused = await loose.error("create_stream")
        assert refused["ResponseMetadata"]["HTTPStatusCode"] == 400


async def test_recorded_record_lifecycle_keeps_the_data_intact(api: Kinesis) -> None:
    await api.call("create_stream", StreamName="data", ShardCount=1)
    iterator = await api.iterator("data")
    sent = ["test", "ünicödé 统一码 💣💻🔥", "a" * 1000, ""]
    for data in sent:
        await api.call("put_record", StreamName="data", Data=data, PartitionKey="1")
    records = (await api.call("get_records", ShardIterator=iterator))["Records"]
    records.sort(key=lambda record: record["Data"])
    assert [record["Data"] for record in records] == sorted(d.encode() for d in sent)
    for record in records:
        # As recorded (EncryptionType is left out of the recording's comparison).
        assert set(record) == {
            "SequenceNumber",
            "ApproximateArrivalTimestamp",
            "Data",
            "PartitionKey",
        }
        assert record["PartitionKey"] == "1"


async def test_recorded_get_records_and_an_empty_stream(api: Kinesis) -> None:
    await api.call("create_stream", StreamName="few", ShardCount=1)
    empty = await api.call("get_records", ShardIterator=await api.iterator("few"))
    assert empty["Records"] == []
    await api.call(
        "put_records", StreamName="few", Records=[{"Data": "SGVsbG8gd29ybGQ=", "PartitionKey": "1"}]
    )
    (record,) = (await api.call("get_records", ShardIterator=await api.iterator("few")))["Records"]
    assert record["Data"] == b"SGVsbG8gd29ybGQ="


async def test_recorded_each_get_records_gives_a_new_iterator(api: Kinesis) -> None:
    await api.call("create_stream", StreamName="latest")
    first = await api.iterator("latest", "LATEST")
    answer = await api.call("get_records", ShardIterator=first)
    second = answer["NextShardIterator"]
    assert second != first
    third = (await api.call("get_records", ShardIterator=second))["NextShardIterator"]
    assert third not in (first, second)


async def test_recorded_an_iterator_in_quotes_is_taken(api: Kinesis) -> None:
    await api.call("create_stream", StreamName="quoted", ShardCount=1)
    await api.call(
        "put_records", StreamName="quoted", Records=[{"Data": b"Hello world", "PartitionKey": "1"}]
    )
    iterator = await api.iterator("quoted")
    assert (await api.call("get_records", ShardIterator=f'"{iterator}"'))["Records"]


async def test_recorded_an_unknown_stream_by_arn_is_resource_not_found(api: Kinesis) -> None:
    arn = "arn:aws:kinesis:us-east-1:000000000000:stream/wrong-stream-name"
    refused = await api.error("describe_stream", StreamARN=arn)
    assert refused["Error"] == {
        "Code": "ResourceNotFoundException",
        "Message": "Stream wrong-stream-name under account 000000000000 not found.",
    }
    assert refused["ResponseMetadata"]["HTTPStatusCode"] == 400


# -- the project's own -------------------------------------------------------


async def test_a_declared_stream_is_listed_and_its_consumer_gets_records_put_through_the_api(
    api: Kinesis,
) -> None:
    await api.call("create_stream", StreamName="made", ShardCount=1)
    listed = await api.call("list_streams")
    assert listed["StreamNames"] == ["clicks", "made"]
    assert not listed["HasMoreStreams"]
    assert [s["StreamName"] for s in listed["StreamSummaries"]] == ["clicks", "made"]
    arns = [s["StreamARN"] for s in listed["StreamSummaries"]]
    assert arns[0] == "arn:aws:kinesis:us-east-1:000000000000:stream/clicks"
    answer = await api.call(
        "put_records",
        StreamName="clicks",
        Records=[
            {"Data": json.dumps({"n": n}).encode(), "PartitionKey": f"k{n}"} for n in range(3)
        ],
    )
    assert answer["FailedRecordCount"] == 0
    assert {r["ShardId"] for r in answer["Records"]} <= {
        "shardId-000000000000",
        "shardId-000000000001",
    }
    seen = api.runtime.resource("seen")
    assert isinstance(seen, Recorder)
    # The consumer polls every 30 s: the put through the resource's store wakes it.
    await eventually(lambda: sum(len(r.payload["Records"]) for r in seen.received) == 3)
    datas = sorted(
        json.loads(base64.b64decode(rec["kinesis"]["data"]))["n"]
        for received in seen.received
        for rec in received.payload["Records"]
    )
    assert datas == [0, 1, 2]
    # What the API made, the library sees on the same database.
    state = api.runtime.state_path
    assert state is not None
    async with await StreamStore.open(state) as store:
        assert await store.list_streams() == ["clicks", "made"]


async def test_put_records_answers_per_record_and_iterators_of_every_type(api: Kinesis) -> None:
    await api.call("create_stream", StreamName="s", ShardCount=1)
    answer = await api.call(
        "put_records",
        StreamName="s",
        Records=[
            {"Data": b"one", "PartitionKey": "a"},
            {"Data": b"bad", "PartitionKey": "a", "ExplicitHashKey": str(2**128)},
            {"Data": b"two", "PartitionKey": "a"},
        ],
    )
    assert answer["FailedRecordCount"] == 1
    ok, bad, two = answer["Records"]
    assert set(ok) == {"SequenceNumber", "ShardId"}
    assert bad["ErrorCode"] == "InvalidArgumentException"
    assert "ExplicitHashKey" in bad["ErrorMessage"]
    assert answer["EncryptionType"] == "NONE"
    first, second = ok["SequenceNumber"], two["SequenceNumber"]
    assert first.isdigit() and not first.startswith("0")  # AWS's pattern: 0|[1-9]\d*

    async def datas(kind: str, **more: Any) -> list[bytes]:
        got = await api.call("get_records", ShardIterator=await api.iterator("s", kind, **more))
        return [record["Data"] for record in got["Records"]]

    assert await datas("TRIM_HORIZON") == [b"one", b"two"]
    assert await datas("AT_SEQUENCE_NUMBER", StartingSequenceNumber=second) == [b"two"]
    assert await datas("AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=first) == [b"two"]
    assert await datas("LATEST") == []
    assert await datas("AT_TIMESTAMP", Timestamp=0) == [b"one", b"two"]
    assert await datas("TRIM_HORIZON", ShardId="0") == [b"one", b"two"]  # the number alone
    put = await api.call("put_record", StreamName="s", Data=b"three", PartitionKey="b")
    assert put["ShardId"] == "shardId-000000000000"
    assert put["SequenceNumber"] > second
    got = await api.call("get_records", ShardIterator=await api.iterator("s"), Limit=1)
    assert [r["Data"] for r in got["Records"]] == [b"one"]
    assert got["MillisBehindLatest"] >= 0
    rest = await api.call("get_records", ShardIterator=got["NextShardIterator"])
    assert [r["Data"] for r in rest["Records"]] == [b"two", b"three"]
    assert rest["MillisBehindLatest"] == 0
    refused = await api.error("get_shard_iterator", StreamName="s", ShardId="shardId-000000000009",
                              ShardIteratorType="LATEST")  # fmt: skip
    assert refused["Error"]["Code"] == "ResourceNotFoundException"
    wrong = await api.error("get_records", ShardIterator="not-an-iterator")
    assert wrong["Error"]["Code"] == "InvalidArgumentException"


async def test_records_without_a_partition_key_are_refused_and_the_pipeline_runs_on(
    tmp_path: Path,
) -> None:
    # botocore's model no longer requires PartitionKey: an SDK without
    # validation (or any HTTP client) sends records without one.
    async for served in _serve(tmp_path):
        loose = Kinesis(served.runtime, served.url, parameter_validation=False)
        await loose.call("create_stream", StreamName="s", ShardCount=1)
        refused = await loose.error(
            "put_records",
            StreamName="s",
            Records=[{"Data": b"a", "PartitionKey": "k"}, {"Data": b"b"}, {"Data": b"c"}],
        )
        assert refused["Error"]["Code"] == "ValidationException"
        assert refused["Error"]["Message"] == (
            "2 validation errors detected:"
            " Value null at 'records.2.member.partitionKey' failed to satisfy constraint:"
            " Member must not be null;"
            " Value null at 'records.3.member.partitionKey' failed to satisfy constraint:"
            " Member must not be null"
        )
        one = await loose.error("put_record", StreamName="s", Data=b"x")
        assert "Value null at 'partitionKey'" in one["Error"]["Message"]
        # Nothing was written, and the stream (and the runtime) still take records.
        assert served.runtime.running
        put = await loose.call(
            "put_records", StreamName="s", Records=[{"Data": b"ok", "PartitionKey": "k"}]
        )
        assert put["FailedRecordCount"] == 0
        got = await loose.call("get_records", ShardIterator=await loose.iterator("s"))
        assert [r["Data"] for r in got["Records"]] == [b"ok"]


async def test_streams_are_resharded_and_retention_changes_through_the_api(api: Kinesis) -> None:
    await api.call("create_stream", StreamName="r", ShardCount=2)
    start, end = 0, 2**127 - 1
    middle = str((start + end) // 2)
    await api.call("split_shard", StreamName="r", ShardToSplit="shardId-000000000000",
                   NewStartingHashKey=middle)  # fmt: skip
    ids = await api.shards("r")
    assert ids == [f"shardId-{n:012d}" for n in range(4)]
    latest = await api.call("list_shards", StreamName="r", ShardFilter={"Type": "AT_LATEST"})
    assert [s["ShardId"] for s in latest["Shards"]] == ids[1:]
    await api.call("merge_shards", StreamName="r", ShardToMerge=ids[2], AdjacentShardToMerge=ids[3])
    summary = (await api.call("describe_stream_summary", StreamName="r"))[
        "StreamDescriptionSummary"
    ]
    assert summary["OpenShardCount"] == 2
    assert summary["RetentionPeriodHours"] == 24
    paged = await api.call("list_shards", StreamName="r", MaxResults=2)
    assert len(paged["Shards"]) == 2
    more = await api.call("list_shards", NextToken=paged["NextToken"])
    assert [s["ShardId"] for s in paged["Shards"] + more["Shards"]] == await api.shards("r")
    await api.call("increase_stream_retention_period", StreamName="r", RetentionPeriodHours=48)
    shorter = await api.error(
        "increase_stream_retention_period", StreamName="r", RetentionPeriodHours=24
    )
    assert shorter["Error"]["Code"] == "InvalidArgumentException"
    await api.call("decrease_stream_retention_period", StreamName="r", RetentionPeriodHours=24)
    described = (await api.call("describe_stream", StreamName="r", Limit=2))["StreamDescription"]
    assert described["RetentionPeriodHours"] == 24
    assert described["HasMoreShards"] is True
    closed = await api.error("split_shard", StreamName="r", ShardToSplit=ids[0],
                             NewStartingHashKey="1")  # fmt: skip
    assert closed["Error"]["Code"] == "ResourceInUseException"
    taken = await api.error("create_stream", StreamName="r", ShardCount=1)
    assert taken["Error"] == {
        "Code": "ResourceInUseException",
        "Message": "Stream r under account 000000000000 already exists.",
    }
    await api.call("delete_stream", StreamName="r")
    assert "r" not in (await api.call("list_streams"))["StreamNames"]


async def test_an_iterator_expires_after_five_minutes(tmp_path: Path) -> None:
    async for api in _serve(tmp_path, ManualClock()):
        await api.call("create_stream", StreamName="old", ShardCount=1)
        iterator = await api.iterator("old")
        await advance(api.runtime, 301)
        refused = await api.error("get_records", ShardIterator=iterator)
        assert refused["Error"]["Code"] == "ExpiredIteratorException"


async def test_concurrent_put_records_share_one_write_and_each_gets_its_own_results(
    api: Kinesis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first write is held; the calls arriving meanwhile must go in one
    # write after it, each answered with its own records' results, in order.
    writes: list[list[bytes]] = []
    held = asyncio.Event()
    original = StreamStore.put_records

    async def recording(store: StreamStore, stream: str, entries: Any) -> Any:
        writes.append([entry["Data"] for entry in entries])
        if len(writes) == 1:
            await held.wait()
        return await original(store, stream, entries)

    monkeypatch.setattr(StreamStore, "put_records", recording)
    await api.call("create_stream", StreamName="grouped", ShardCount=1)

    # A thread each (the default executor has fewer threads than callers here).
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=9)

    async def put(caller: int) -> dict[str, Any]:
        records = [{"Data": f"{caller}-{n}".encode(), "PartitionKey": "k"} for n in range(3)]
        answer: dict[str, Any] = await asyncio.get_running_loop().run_in_executor(
            pool, lambda: api.client.put_records(StreamName="grouped", Records=records)
        )
        return answer

    first = asyncio.ensure_future(put(0))
    await eventually(lambda: len(writes) == 1)
    rest = [asyncio.ensure_future(put(caller)) for caller in range(1, 9)]
    await asyncio.sleep(1.0)  # the eight reach the endpoint and wait behind the held write
    held.set()
    answers = [await first, *[await task for task in rest]]
    pool.shutdown()
    assert len(writes) == 2
    assert sorted(writes[1]) == sorted(f"{c}-{n}".encode() for c in range(1, 9) for n in range(3))
    for each in answers:
        assert each["FailedRecordCount"] == 0
        assert len(each["Records"]) == 3
    iterator = await api.iterator("grouped")
    got = await api.call("get_records", ShardIterator=iterator, Limit=100)
    by_data = {r["Data"]: r["SequenceNumber"] for r in got["Records"]}
    assert len(by_data) == 27
    for caller, each in enumerate(answers):
        mine = [by_data[f"{caller}-{n}".encode()] for n in range(3)]
        assert [r["SequenceNumber"] for r in each["Records"]] == mine
