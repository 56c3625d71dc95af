"""Kinesis Data Streams semantics of the stream store, on a real SQLite file
and a ManualClock."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.clock import ManualClock
from pipelines.errors import StreamError
from pipelines.store import SQLiteConnection, Trip
from plugins.stream.store import (
    FIRST_AT,
    HASH_SPACE,
    STREAM_FIRST_AT,
    Record,
    StreamStore,
    parse_sequence_number,
    partition_hash,
)

from .helpers import eventually


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def store(state_location: str, clock: ManualClock) -> AsyncIterator[StreamStore]:
    opened = await StreamStore.open(state_location, clock)
    yield opened
    await opened.close()


def entries(count: int, key: str = "k", start: int = 0) -> list[dict[str, Any]]:
    return [{"Data": f"r{n}", "PartitionKey": key} for n in range(start, start + count)]


async def read_all(store: StreamStore, stream: str, shard: str, kind: str = "TRIM_HORIZON",
                   **options: Any) -> dict[str, Any]:  # fmt: skip
    iterator = await store.get_shard_iterator(stream, shard, kind, **options)
    return await store.get_records(iterator)


def data(answer: dict[str, Any]) -> list[str]:
    return [record["Data"].decode() for record in answer["Records"]]


# -- shards and hash keys ------------------------------------------------------


async def test_shards_split_the_hash_key_space_evenly(store: StreamStore) -> None:
    described = await store.create_stream("s", 4)
    ranges = [
        (int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]))
        for s in described["Shards"]
    ]
    assert ranges[0][0] == 0 and ranges[-1][1] == HASH_SPACE - 1
    assert all(ranges[i][1] + 1 == ranges[i + 1][0] for i in range(3))
    assert {end - start + 1 for start, end in ranges} == {HASH_SPACE // 4}
    assert [s["ShardId"] for s in described["Shards"]] == [
        f"shardId-00000000000{i}" for i in range(4)
    ]
    assert described["RetentionPeriodHours"] == 24 and described["StreamStatus"] == "ACTIVE"


async def test_a_record_goes_to_the_shard_owning_the_md5_of_its_key(store: StreamStore) -> None:
    described = await store.create_stream("s", 4)
    ranges = {
        s["ShardId"]: (int(s["HashKeyRange"]["StartingHashKey"]),
                       int(s["HashKeyRange"]["EndingHashKey"]))
        for s in described["Shards"]
    }  # fmt: skip
    keys = [f"user-{n}" for n in range(40)]
    answer = await store.put_records("s", [{"Data": b"x", "PartitionKey": k} for k in keys])
    assert answer["FailedRecordCount"] == 0
    for key, result in zip(keys, answer["Records"], strict=True):
        digest = int.from_bytes(hashlib.md5(key.encode()).digest(), "big")
        assert digest == partition_hash(key)
        start, end = ranges[result["ShardId"]]
        assert start <= digest <= end
    assert len({r["ShardId"] for r in answer["Records"]}) == 4  # 40 keys reach every shard

    # An explicit hash key overrides the partition key's.
    last = str(HASH_SPACE - 1)
    placed = await store.put_record("s", b"x", "user-0", explicit_hash_key=last)
    assert placed["ShardId"] == "shardId-000000000003"


async def test_sequence_numbers_increase_within_a_shard_and_sort_as_strings(
    store: StreamStore,
) -> None:
    await store.create_stream("s", 2)
    numbers: dict[str, list[str]] = {}
    for n in range(5):
        answer = await store.put_records("s", entries(30, start=n * 30) + entries(30, key="j"))
        for result in answer["Records"]:
            numbers.setdefault(result["ShardId"], []).append(result["SequenceNumber"])
    for found in numbers.values():
        assert found == sorted(found) and len(set(found)) == len(found)
        assert [parse_sequence_number(n)[0] for n in found] == sorted(
            parse_sequence_number(n)[0] for n in found
        )
        assert all(len(n) == 56 and n.isdigit() for n in found)


async def test_put_records_fails_bad_entries_alone_and_limits_the_request(
    store: StreamStore,
) -> None:
    await store.create_stream("s", 1, max_record_size=1024)
    answer = await store.put_records(
        "s",
        [
            {"Data": "ok", "PartitionKey": "k"},
            {"Data": "x" * 1100, "PartitionKey": "k"},
            {"Data": "ok", "PartitionKey": "k" * 257},
            {"Data": 5, "PartitionKey": "k"},
            {"Data": "ok", "PartitionKey": "k", "ExplicitHashKey": str(HASH_SPACE)},
            {"Data": "ok", "PartitionKey": "k"},
        ],
    )
    assert answer["FailedRecordCount"] == 4
    codes = [r.get("ErrorCode") for r in answer["Records"]]
    assert codes == [None, *["InvalidArgumentException"] * 4, None]
    messages = [r.get("ErrorMessage", "") for r in answer["Records"]]
    assert messages[1].startswith("record 1: 1101 bytes") and "limit of 1024" in messages[1]
    assert messages[2].startswith("record 2: PartitionKey must be a string of 1 to 256")
    assert messages[4].startswith("record 4: ExplicitHashKey")
    assert data(await read_all(store, "s", "shardId-000000000000")) == ["ok", "ok"]

    with pytest.raises(StreamError, match="1 to 500 records, not 501"):
        await store.put_records("s", entries(501))
    with pytest.raises(StreamError, match="1 to 500 records, not 0"):
        await store.put_records("s", [])
    with pytest.raises(StreamError) as missing:
        await store.put_records("nope", entries(1))
    assert missing.value.code == "ResourceNotFoundException"


async def test_the_whole_request_is_limited_to_5_mib(store: StreamStore) -> None:
    await store.create_stream("s", 1, max_record_size=1024 * 1024)
    big = [{"Data": b"x" * (1024 * 1024 - 10), "PartitionKey": "k"} for _ in range(6)]
    with pytest.raises(StreamError, match="at most 5242880 bytes"):
        await store.put_records("s", big)
    assert (await store.put_records("s", big[:5]))["FailedRecordCount"] == 0


# -- iterators -------------------------------------------------------------------


async def test_the_five_iterator_types(store: StreamStore, clock: ManualClock) -> None:
    await store.create_stream("s", 1)
    shard = "shardId-000000000000"
    first = await store.put_records("s", entries(3))
    clock.jump(10)
    middle = clock.time()
    await store.put_records("s", entries(3, start=3))
    numbers = [r["SequenceNumber"] for r in first["Records"]]

    assert data(await read_all(store, "s", shard)) == [f"r{n}" for n in range(6)]
    assert data(await read_all(store, "s", shard, "LATEST")) == []
    at = await read_all(store, "s", shard, "AT_SEQUENCE_NUMBER", sequence_number=numbers[1])
    assert data(at) == ["r1", "r2", "r3", "r4", "r5"]
    after = await read_all(store, "s", shard, "AFTER_SEQUENCE_NUMBER", sequence_number=numbers[1])
    assert data(after) == ["r2", "r3", "r4", "r5"]
    assert data(await read_all(store, "s", shard, "AT_TIMESTAMP", timestamp=middle)) == [
        "r3",
        "r4",
        "r5",
    ]

    latest = await store.get_shard_iterator("s", shard, "LATEST")
    await store.put_records("s", entries(1, start=6))
    assert data(await store.get_records(latest)) == ["r6"]  # written after LATEST was taken

    with pytest.raises(StreamError, match="needs a StartingSequenceNumber"):
        await store.get_shard_iterator("s", shard, "AT_SEQUENCE_NUMBER")
    with pytest.raises(StreamError, match="'SOMEWHERE'"):
        await store.get_shard_iterator("s", shard, "SOMEWHERE")
    with pytest.raises(StreamError) as unknown:
        await store.get_shard_iterator("s", "shardId-000000000009", "LATEST")
    assert unknown.value.code == "ResourceNotFoundException"


async def test_get_records_pages_with_next_iterators_and_reports_lag(
    store: StreamStore, clock: ManualClock
) -> None:
    await store.create_stream("s", 1)
    for n in range(5):
        await store.put_records("s", entries(10, start=n * 10))
        clock.jump(1)
    iterator = await store.get_shard_iterator("s", "shardId-000000000000", "TRIM_HORIZON")
    first = await store.get_records(iterator, limit=20)
    assert data(first) == [f"r{n}" for n in range(20)]
    # The next unread record arrived 3 s before now (written at t+2, now t+5).
    assert first["MillisBehindLatest"] == 3000
    rest = await store.get_records(first["NextShardIterator"], limit=10_000)
    assert data(rest) == [f"r{n}" for n in range(20, 50)]
    assert rest["MillisBehindLatest"] == 0  # caught up
    empty = await store.get_records(rest["NextShardIterator"])
    assert empty["Records"] == [] and empty["NextShardIterator"] is not None  # open: wait
    with pytest.raises(StreamError, match="limit must be 1 to 10000"):
        await store.get_records(iterator, limit=10_001)


async def test_iterators_expire_after_5_minutes(store: StreamStore, clock: ManualClock) -> None:
    await store.create_stream("s", 1)
    iterator = await store.get_shard_iterator("s", "shardId-000000000000", "TRIM_HORIZON")
    clock.jump(299)
    answer = await store.get_records(iterator)  # still valid; its next one is fresh
    clock.jump(299)
    await store.get_records(answer["NextShardIterator"])
    with pytest.raises(StreamError) as expired:
        await store.get_records(iterator)
    assert expired.value.code == "ExpiredIteratorException"
    with pytest.raises(StreamError, match="not a shard iterator"):
        await store.get_records("garbage!")


# -- retention -----------------------------------------------------------------


async def test_retention_trims_old_records_and_trim_horizon_moves(
    store: StreamStore, clock: ManualClock
) -> None:
    await store.create_stream("s", 1)
    await store.put_records("s", entries(3))
    clock.jump(23 * 3600)
    await store.put_records("s", entries(2, start=3))
    clock.jump(3600 + 1)  # the first three are now 24 h + 1 s old
    shard = "shardId-000000000000"
    # Reads leave out expired records even before the periodic trim runs.
    assert data(await read_all(store, "s", shard)) == ["r3", "r4"]
    assert await store.trim("s") == 3
    assert data(await read_all(store, "s", shard)) == ["r3", "r4"]

    await store.set_retention("s", 48)
    clock.jump(12 * 3600)
    assert await store.trim("s") == 0
    for bad in (23, 8761, "48"):
        with pytest.raises(StreamError, match="from 24 to 8760"):
            await store.set_retention("s", bad)  # type: ignore[arg-type]


# -- resharding ------------------------------------------------------------------


async def test_split_and_merge_close_parents_and_route_to_children(
    store: StreamStore, clock: ManualClock
) -> None:
    await store.create_stream("s", 2)
    await store.put_records("s", entries(5, key="a"))
    parent = (await store.put_record("s", b"x", "a"))["ShardId"]
    low, high = await store.split_shard("s", parent, str(_middle(await store.list_shards("s"),
                                                                  parent)))  # fmt: skip
    shards = {s["ShardId"]: s for s in await store.list_shards("s")}
    assert shards[low]["ParentShardId"] == parent == shards[high]["ParentShardId"]
    assert "EndingSequenceNumber" in shards[parent]["SequenceNumberRange"]
    assert await _open_count(store) == 3
    after = await store.put_record("s", b"y", "a")
    assert after["ShardId"] in (low, high)

    # The parent stays readable: its records, then no next iterator, and its children.
    answer = await read_all(store, "s", parent)
    assert len(answer["Records"]) == 6
    assert answer["NextShardIterator"] is None
    assert {c["ShardId"] for c in answer["ChildShards"]} == {low, high}

    merged = await store.merge_shards("s", low, high)
    shards = {s["ShardId"]: s for s in await store.list_shards("s")}
    assert shards[merged]["ParentShardId"] == low
    assert shards[merged]["AdjacentParentShardId"] == high
    assert shards[merged]["HashKeyRange"] == shards[parent]["HashKeyRange"]
    assert (await store.put_record("s", b"z", "a"))["ShardId"] == merged

    with pytest.raises(StreamError) as closed:
        await store.split_shard("s", parent, "1")
    assert closed.value.code == "ResourceInUseException"
    other = "shardId-000000000000" if parent != "shardId-000000000000" else "shardId-000000000001"
    with pytest.raises(StreamError, match="with itself"):
        await store.merge_shards("s", other, other)
    with pytest.raises(StreamError, match="NewStartingHashKey"):
        await store.split_shard("s", other, "0")


def _middle(shards: list[dict[str, Any]], shard: str) -> int:
    [found] = [s for s in shards if s["ShardId"] == shard]
    start = int(found["HashKeyRange"]["StartingHashKey"])
    end = int(found["HashKeyRange"]["EndingHashKey"])
    return (start + end) // 2


async def _open_count(store: StreamStore) -> int:
    return int((await store.describe_stream("s"))["OpenShardCount"])


async def test_order_per_partition_key_holds_across_a_reshard(store: StreamStore) -> None:
    """A consumer reads a child only after its parents: each key's records come
    out in the order they were written, across a split and a merge."""
    await store.create_stream("s", 2)
    keys = [f"device-{n}" for n in range(12)]
    written = 0

    async def put_round() -> None:
        nonlocal written
        answer = await store.put_records(
            "s", [{"Data": f"{k}:{written}", "PartitionKey": k} for k in keys]
        )
        assert answer["FailedRecordCount"] == 0
        written += 1

    for _ in range(3):
        await put_round()
    shards = await store.list_shards("s")
    first = shards[0]["ShardId"]
    low, high = await store.split_shard("s", first, str(_middle(shards, first)))
    for _ in range(3):
        await put_round()
    await store.merge_shards("s", low, high)
    for _ in range(3):
        await put_round()

    stream = store.stream("s")
    seen: dict[str, list[int]] = {}
    for record in await stream.records():
        key, _, n = record.data.decode().partition(":")
        seen.setdefault(key, []).append(int(n))
    assert seen == {key: list(range(9)) for key in keys}


async def test_a_writer_follows_what_another_store_changed(
    state_location: str, clock: ManualClock
) -> None:
    """Each store keeps its shard map; a write made with a map another store
    (another process) has since made stale writes nothing and is made again
    on the current map: no record lands in a closed shard, numbers stay
    unique and growing, a deleted stream is not found."""
    path = state_location
    async with (
        await StreamStore.open(path, clock) as mine,
        await StreamStore.open(path, clock) as other,
    ):
        await mine.create_stream("s", 1)
        before = await mine.put_records("s", entries(3, key="a"))
        parent = before["Records"][0]["ShardId"]
        shards = await other.list_shards("s")
        children = await other.split_shard("s", parent, str(_middle(shards, parent)))
        await other.put_records("s", entries(2, key="b", start=3))
        after = await mine.put_records("s", entries(4, key="c", start=5))
        assert after["FailedRecordCount"] == 0
        assert {r["ShardId"] for r in after["Records"]} <= set(children)
        numbers = [
            parse_sequence_number(record.sequence_number)[0]
            for record in await mine.stream("s").records()
        ]
        assert sorted(numbers) == list(range(1, 10))
        assert data(await read_all(mine, "s", parent)) == ["r0", "r1", "r2"]

        await other.delete_stream("s")
        with pytest.raises(StreamError) as gone:
            await mine.put_records("s", entries(1))
        assert gone.value.code == "ResourceNotFoundException"


async def test_a_write_made_again_takes_its_allowance_once(
    state_location: str, clock: ManualClock
) -> None:
    """With write limits, a write whose map was stale gives back what it took
    of its shards' allowances before it is made again."""
    path = state_location
    async with (
        await StreamStore.open(path, clock) as mine,
        await StreamStore.open(path, clock) as other,
    ):
        await mine.create_stream("s", 1, write_limits=True)
        assert (await mine.put_records("s", entries(500)))["FailedRecordCount"] == 0
        await other.create_stream("s", update=True, retention_hours=48)  # a new version
        assert (await mine.put_records("s", entries(500)))["FailedRecordCount"] == 0
        over = await mine.put_records("s", entries(1))
        assert over["Records"][0]["ErrorCode"] == "ProvisionedThroughputExceededException"


# -- consumers -------------------------------------------------------------------


async def test_consumers_keep_their_own_checkpoints(
    state_location: str, clock: ManualClock
) -> None:
    path = state_location
    async with await StreamStore.open(path, clock) as store:
        await store.create_stream("s", 3)
        await store.put_records("s", [{"Data": str(n), "PartitionKey": str(n)} for n in range(30)])
        fast: list[Record] = []
        async with store.consume("s", "fast", follow=False) as records:
            async for record in records:
                fast.append(record)
        slow: list[Record] = []
        async with store.consume("s", "slow", batch=4) as records:
            async for record in records:
                slow.append(record)
                if len(slow) == 10:
                    break
        assert len(fast) == 30 and len(slow) == 10
        assert set(await store.consumers("s")) == {"fast", "slow"}
        await store.put_records(
            "s", [{"Data": str(n), "PartitionKey": str(n)} for n in range(30, 40)]
        )

    # A restart: each consumer resumes where it stopped.
    async with await StreamStore.open(path, clock) as store:
        fast_rest = [r async for r in store.consume("s", "fast", follow=False)]
        slow_rest = [r async for r in store.consume("s", "slow", follow=False)]
    assert sorted(int(r.data) for r in fast_rest) == list(range(30, 40))
    # The slow one had processed 10 (the 10th counts once the loop left it).
    assert sorted(int(r.data) for r in slow + slow_rest) == list(range(40))
    assert len(slow) + len(slow_rest) == 40


async def test_consume_starting_at_latest_and_at_a_sequence_number(store: StreamStore) -> None:
    await store.create_stream("s", 2)
    answer = await store.put_records("s", entries(10))
    stream = store.stream("s")
    assert [r.data for r in await stream.records(start="latest")] == []
    sixth = answer["Records"][5]["SequenceNumber"]
    assert [r.data.decode() for r in await stream.records(start=sixth)] == [
        f"r{n}" for n in range(5, 10)
    ]
    with pytest.raises(StreamError, match="not a sequence number"):
        await stream.records(start="soon")


async def test_a_record_whose_handler_failed_is_read_again(store: StreamStore) -> None:
    """Leaving ``async with`` by an exception (a handler that raised, a
    cancellation) does not count the record in hand as processed."""
    await store.create_stream("s", 1)
    await store.put_records("s", entries(6))
    with pytest.raises(RuntimeError):
        async with store.consume("s", "c") as records:
            async for record in records:
                if record.data == b"r3":
                    raise RuntimeError("handler failed")
    again = [r.data.decode() async for r in store.consume("s", "c", follow=False)]
    assert again == ["r3", "r4", "r5"]


async def test_only_adjacent_shards_merge_and_updates_keep_unnamed_settings(
    store: StreamStore,
) -> None:
    await store.create_stream("s", 3, retention_hours=168)
    with pytest.raises(StreamError, match="not adjacent"):
        await store.merge_shards("s", "shardId-000000000000", "shardId-000000000002")
    with pytest.raises(StreamError, match="NewStartingHashKey '1_0'"):
        await store.split_shard("s", "shardId-000000000000", "1_0")
    # An update changes what it names: the retention set at creation stays.
    updated = await store.create_stream("s", 3, max_record_size=2048, update=True)
    assert updated["RetentionPeriodHours"] == 168
    assert updated["MaxRecordSizeInBytes"] == 2048
    with pytest.raises(StreamError) as exists:
        await store.create_stream("s", 3)
    assert exists.value.code == "ResourceInUseException"


# -- finding a time: AT_TIMESTAMP, retention, consumers starting at a time ------------


def spread(count: int, start: int = 0) -> list[dict[str, Any]]:
    """Entries with a key each, so they land in every shard."""
    return [{"Data": f"r{n}", "PartitionKey": f"key{n}"} for n in range(start, start + count)]


async def test_at_timestamp_starts_each_shard_at_its_first_record_at_or_after_the_time(
    store: StreamStore, clock: ManualClock
) -> None:
    await store.create_stream("s", 3)
    began = clock.time()
    for n in range(4):  # four PutRecords a second apart: four arrival times
        await store.put_records("s", spread(30, start=n * 30))
        clock.jump(1)
    times = [began - 5, began, began + 0.5, began + 1, began + 2.9, began + 3, began + 3.1]
    for shard in await store.list_shards("s"):
        every = (await read_all(store, "s", shard["ShardId"]))["Records"]
        assert len({r["ApproximateArrivalTimestamp"] for r in every}) == 4
        for moment in times:
            answer = await read_all(store, "s", shard["ShardId"], "AT_TIMESTAMP", timestamp=moment)
            expected = [r for r in every if r["ApproximateArrivalTimestamp"] >= moment]
            assert answer["Records"] == expected, (shard["ShardId"], moment - began)


async def test_at_timestamp_after_the_last_record_reads_what_comes_next(
    store: StreamStore, clock: ManualClock
) -> None:
    await store.create_stream("s", 1)
    await store.put_records("s", entries(3))
    shard = "shardId-000000000000"
    iterator = await store.get_shard_iterator(
        "s", shard, "AT_TIMESTAMP", timestamp=clock.time() + 1
    )
    clock.jump(2)
    await store.put_records("s", entries(2, start=3))
    assert data(await store.get_records(iterator)) == ["r3", "r4"]


async def test_times_across_a_reshard_read_parents_before_children(
    store: StreamStore, clock: ManualClock
) -> None:
    await store.create_stream("s", 1)
    parent = "shardId-000000000000"
    await store.put_records("s", spread(10))
    clock.jump(1)
    second = clock.time()
    await store.put_records("s", spread(10, start=10))
    clock.jump(1)
    low, high = await store.split_shard("s", parent, str(HASH_SPACE // 2))
    clock.jump(1)
    await store.put_records("s", spread(10, start=20))

    at_second = await read_all(store, "s", parent, "AT_TIMESTAMP", timestamp=second)
    assert data(at_second) == [f"r{n}" for n in range(10, 20)]
    after_close = await read_all(store, "s", parent, "AT_TIMESTAMP", timestamp=second + 1.5)
    assert data(after_close) == [] and after_close["NextShardIterator"] is None
    assert {child["ShardId"] for child in after_close["ChildShards"]} == {low, high}
    in_children = []
    for child in (low, high):  # every record of a child arrived after ``second``
        in_children += data(await read_all(store, "s", child, "AT_TIMESTAMP", timestamp=second))
    assert sorted(in_children) == sorted(f"r{n}" for n in range(20, 30))

    read = [r.data.decode() for r in await store.stream("s").records(start=second)]
    assert read[:10] == [f"r{n}" for n in range(10, 20)]  # the parent's, first
    assert sorted(read[10:]) == sorted(f"r{n}" for n in range(20, 30))
    assert [r.data.decode() for r in await store.stream("s").records(start=second + 5)] == []


def plan(path: Path, sql: str, parameters: tuple[Any, ...]) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", parameters)]


async def test_finding_a_time_seeks_the_arrival_index(tmp_path: Path, clock: ManualClock) -> None:
    # SQLite only: the plan read is SQLite's own (EXPLAIN QUERY PLAN).
    store = await StreamStore.open(tmp_path / "state.db", clock)
    try:
        await _seeks_the_arrival_index(store)
    finally:
        await store.close()


async def _seeks_the_arrival_index(store: StreamStore) -> None:
    assert isinstance(store.path, Path)
    await store.create_stream("s", 2)
    await store.put_records("s", spread(20))
    for sql, parameters in ((FIRST_AT, (1, 0, 0.0)), (STREAM_FIRST_AT, (0.0, 1))):
        steps = plan(store.path, sql, parameters)
        seeks = [step for step in steps if "stream_records" in step or step.startswith("SEARCH r ")]
        assert seeks, steps
        # A seek on (stream, shard, arrival) in the covering index; no sort, no scan.
        assert all(
            "USING COVERING INDEX stream_records_arrival (stream=? AND shard=? AND arrival>?)"
            in step
            for step in seeks
        ), steps
        assert not any("TEMP B-TREE" in step or step.startswith("SCAN") for step in steps), steps

    await store.execute("DROP INDEX stream_records_arrival")
    assert "stream_records_arrival" not in " ".join(plan(store.path, FIRST_AT, (1, 0, 0.0)))


async def test_an_older_database_gets_the_arrival_index_when_opened(
    tmp_path: Path, clock: ManualClock
) -> None:
    # SQLite only: a version 1 database exists only as a SQLite file (it is
    # older than the PostgreSQL backend).
    path = tmp_path / "state.db"
    async with await StreamStore.open(path, clock) as store:
        await store.create_stream("s", 1)
        await store.put_records("s", entries(3))
        clock.jump(1)
        await store.put_records("s", entries(2, start=3))
    with sqlite3.connect(path) as db:  # as version 1 left it: no arrival index
        db.execute("DROP INDEX stream_records_arrival")
        db.execute("UPDATE store_versions SET version = 1 WHERE store = 'streams'")

    async with await StreamStore.open(path, clock) as store:
        indexes = await store.rows(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'stream_records'"
        )
        assert ("stream_records_arrival",) in indexes
        assert await store.scalar("SELECT version FROM store_versions WHERE store = 'streams'") == (
            StreamStore.version
        )
        shard = "shardId-000000000000"
        answer = await read_all(store, "s", shard, "AT_TIMESTAMP", timestamp=clock.time())
        assert data(answer) == ["r3", "r4"]


# -- several runners on one database ---------------------------------------------
# Each StreamStore stands for a runner: its own connection, shard map and
# allowances. On PostgreSQL their transactions run truly at once; on SQLite
# they take turns at the write lock (what several processes on one file do).


async def test_runners_putting_at_once_get_unique_growing_numbers_and_see_all_records(
    state_location: str, clock: ManualClock
) -> None:
    runners = [await StreamStore.open(state_location, clock) for _ in range(3)]
    try:
        await runners[0].create_stream("s", 4)

        async def put(runner: StreamStore, n: int) -> list[dict[str, Any]]:
            written = []
            for request in range(20):  # in order per runner: its own numbers must grow
                keys = [f"r{n}-{k % 8}" for k in range(25)]
                answer = await runner.put_records(
                    "s", [{"Data": f"{n}:{request}:{k}", "PartitionKey": key}
                          for k, key in enumerate(keys)],
                )  # fmt: skip
                assert answer["FailedRecordCount"] == 0
                written += answer["Records"]
            return written

        results = await asyncio.gather(*(put(runner, n) for n, runner in enumerate(runners)))
        numbers = [
            parse_sequence_number(r["SequenceNumber"])[0] for written in results for r in written
        ]
        # One counter for the stream, allocated by the database: 1..1500, no gap, no twice.
        assert sorted(numbers) == list(range(1, 1501))
        for written in results:
            per_shard: dict[str, list[str]] = {}
            for r in written:
                per_shard.setdefault(r["ShardId"], []).append(r["SequenceNumber"])
            assert all(found == sorted(found) for found in per_shard.values())
        # Any runner reads every record, in sequence order per shard.
        for reader in runners:
            seen = []
            for shard in await reader.list_shards("s"):
                answer = await read_all(reader, "s", shard["ShardId"])
                found = [r["SequenceNumber"] for r in answer["Records"]]
                assert found == sorted(found)
                seen += found
            assert len(seen) == 1500 and len(set(seen)) == 1500
    finally:
        for runner in runners:
            await runner.close()


#: Enough records that, on a loaded machine, every runner joins the reading
#: before one runner alone has read them all (the shards are then shared).
RECORDS = 2500


async def test_a_consumer_name_reads_each_shard_in_one_runner_at_a_time(
    state_location: str, clock: ManualClock
) -> None:
    """Three runners run consumer "c" at once: every record is read once
    (two runners reading one shard would both read it from its checkpoint),
    in order per shard, and the shards are shared out."""
    runners = [await StreamStore.open(state_location, clock) for _ in range(3)]
    try:
        await runners[0].create_stream("s", 6)
        for first in range(0, RECORDS, 500):  # PutRecords takes 500 at most
            await runners[0].put_records(
                "s",
                [{"Data": str(n), "PartitionKey": f"k{n % 60}"} for n in range(first, first + 500)],
            )
        read: list[tuple[int, Record]] = []

        async def run(n: int, runner: StreamStore) -> None:
            async with runner.consume("s", "c", batch=4, poll=0.01) as records:
                while batch := await records.next_batch():
                    read.extend((n, record) for record in batch)
                    await asyncio.sleep(0)  # the others' turn (a handler's await)

        tasks = [asyncio.ensure_future(run(n, runner)) for n, runner in enumerate(runners)]
        try:
            await eventually(lambda: len(read) >= RECORDS, 60)
            await asyncio.sleep(0.1)  # time to read a record twice, were it possible
        finally:
            for task in tasks:
                task.cancel()  # each closes its consumer: checkpoints, then leases given up
            await asyncio.gather(*tasks, return_exceptions=True)
        numbers = [record.sequence_number for _, record in read]
        assert len(numbers) == RECORDS and len(set(numbers)) == RECORDS
        per_shard: dict[str, list[str]] = {}
        for _, record in read:
            per_shard.setdefault(record.shard_id, []).append(record.sequence_number)
        assert all(found == sorted(found) for found in per_shard.values())
        assert len({n for n, _ in read}) > 1  # shared, not one runner reading all
        # Closing gave every lease up; the checkpoints are at each shard's end.
        assert await runners[1].scalar("SELECT count(*) FROM stream_leases") == 0
        saved = await runners[2].checkpoints("s", "c")
        assert {shard: p["SequenceNumber"] for shard, p in saved.items()} == {
            shard: found[-1] for shard, found in per_shard.items()
        }
    finally:
        for runner in runners:
            await runner.close()


async def test_a_dead_runners_shards_are_taken_over_when_its_leases_expire(
    state_location: str, clock: ManualClock
) -> None:
    async with (
        await StreamStore.open(state_location, clock) as first,
        await StreamStore.open(state_location, clock) as second,
    ):
        await first.create_stream("s", 2)
        await first.put_records("s", [{"Data": str(n), "PartitionKey": f"k{n}"} for n in range(40)])
        dying = first.consume("s", "c", batch=5, lease=10)
        one = await dying.next_batch()
        two = await dying.next_batch()  # the first batch is processed and checkpointed
        assert len(one) == len(two) == 5
        # The first runner dies here (no close: its leases stay until they expire).
        survivor = second.consume("s", "c", batch=50, follow=False, lease=10)
        assert await survivor.next_batch() == []  # both shards are leased to the dead one
        await survivor.aclose()
        clock.jump(11)
        taken = second.consume("s", "c", batch=50, follow=False, lease=10)
        rest = [record async for record in taken]
        # From the dead one's checkpoint: its unfinished batch comes again (at least once).
        done = {r.sequence_number for r in one}
        assert {r.sequence_number for r in rest} | done == {
            r.sequence_number for r in await second.stream("s").records()
        }
        assert not done & {r.sequence_number for r in rest}
        assert {r.sequence_number for r in two} <= {r.sequence_number for r in rest}
        # The dead one, back, cannot move a checkpoint it no longer holds.
        before = await second.checkpoints("s", "c")
        await dying.aclose()
        assert await second.checkpoints("s", "c") == before


async def test_a_checkpoint_moves_only_the_shards_whose_lease_is_still_held(
    store: StreamStore,
) -> None:
    """One save of two shards, one of whose leases another instance has
    taken meanwhile: that shard's checkpoint stays as it was, the other's
    moves; a reader whose batch's shard was taken does not count it as its
    own any more."""
    await store.create_stream("s", 2)
    await store.put_records("s", [{"Data": str(n), "PartitionKey": f"k{n}"} for n in range(40)])
    reader = store.consume("s", "c", batch=3)
    first = await reader.next_batch()  # its lease turn took both shards
    assert reader._held == {0, 1} and reader._info is not None
    stream, shard = reader._info.id, int(first[0].shard_id[-1])
    await store.execute(
        "UPDATE stream_leases SET owner = 'another' WHERE consumer = 'c' AND shard = ?", (shard,)
    )
    saved = await store._save_checkpoints(
        stream, "c", {shard: (7, False), 1 - shard: (9, True)}, reader.owner
    )
    assert saved == {1 - shard}
    assert await store.checkpoints("s", "c") == {
        f"shardId-00000000000{1 - shard}": {
            "SequenceNumber": f"{9:050d}{1 - shard:06d}",
            "Finished": True,
        }
    }
    # The reader's own save of its first batch, in that shard, moves nothing.
    await reader.done()
    assert f"shardId-00000000000{shard}" not in await store.checkpoints("s", "c")
    assert reader._held == {1 - shard}
    await reader.aclose()


async def test_a_named_readers_batch_is_three_trips_between_lease_turns(tmp_path: Path) -> None:
    """Between two lease turns, each batch a named consumer reads costs the
    database three trips: the stream with its shards (one statement), the
    read, and the last batch's checkpoint (one transaction: the leases held
    and the save)."""
    async with await StreamStore.open(tmp_path / "state.db") as store:
        await store.create_stream("s", 1)
        await store.put_records("s", entries(100))
        assert isinstance(store.connection, SQLiteConnection)
        trips: list[Trip] = []
        store.connection.on_trip = trips.append  # on the connection's thread
        async with store.consume("s", "c", batch=10, follow=False) as reader:
            assert len(await reader.next_batch()) == 10  # the lease turn comes first
            trips.clear()
            for _ in range(5):
                assert len(await reader.next_batch()) == 10
        steps = [[step.sql.split()[0] for step in trip.steps] for trip in trips]
        assert (
            steps[:15]
            == [
                ["SELECT", "INSERT"],  # the checkpoint: the leases held, then the save
                ["SELECT"],  # the stream and its shards
                ["SELECT"],  # the read
            ]
            * 5
        )
        assert all(trips[n].transaction for n in range(0, 15, 3))
        assert all("JOIN stream_shards" in trips[n].steps[0].sql for n in range(1, 15, 3))


async def test_runners_creating_and_resharding_at_once_take_turns(
    state_location: str, clock: ManualClock
) -> None:
    runners = [await StreamStore.open(state_location, clock) for _ in range(3)]
    try:
        # Three runners starting with one stream target each make it if need be.
        made = await asyncio.gather(
            *(runner.create_stream("s", 2, update=True) for runner in runners)
        )
        assert {len(m["Shards"]) for m in made} == {2}
        assert await runners[0].list_streams() == ["s"]
        with pytest.raises(StreamError) as taken:
            await runners[1].create_stream("s", 2)
        assert taken.value.code == "ResourceInUseException"
        # Two split the same shard at once: one does, the other finds it closed.
        middle = str(HASH_SPACE // 4)
        split = await asyncio.gather(
            *(runner.split_shard("s", "shardId-000000000000", middle) for runner in runners[:2]),
            return_exceptions=True,
        )
        refused = [r for r in split if isinstance(r, StreamError)]
        assert len(refused) == 1 and refused[0].code == "ResourceInUseException", split
        assert len((await runners[2].describe_stream("s"))["Shards"]) == 4
    finally:
        for runner in runners:
            await runner.close()
