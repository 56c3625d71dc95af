"""Two runners on one PostgreSQL state running one delivery stream: puts on
either go into the shared buffer, one runner at a time writes the objects
(its owner, by lease), and when the owner dies another takes over once its
lease runs out. Each record lands in exactly one object."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from pipelines.clock import ManualClock
from pipelines.limits import Limits
from pipelines.runtime import Runtime
from plugins.firehose.target import LEASE, FirehoseTarget

from .firehose_helpers import delimited, firehose_plugins, lines, objects

PLUGINS = firehose_plugins()
T0 = 1_700_000_000.0
DESTINATION = delimited("lake", "all/", 60, 1)


def runner(url: str, name: str, clock: ManualClock, directory: Path) -> Runtime:
    runtime = Runtime(
        state_path=url, runner=name, clock=clock, plugins=PLUGINS, limits=Limits(leader_check=0.05)
    )
    runtime.add_resource("objects", "bucket", {"directory": str(directory), "bucket": "lake"})
    runtime.add_resource("lake", "firehose", {"destination": DESTINATION})
    return runtime


def pair(url: str, bucket: Path) -> tuple[ManualClock, Runtime, Runtime]:
    """A clock and runners a and b on it, their stream writing into ``bucket``/lake."""
    clock = ManualClock(T0)
    bucket = bucket / "lake"
    return clock, runner(url, "a", clock, bucket), runner(url, "b", clock, bucket)


def stream_of(runtime: Runtime) -> FirehoseTarget:
    target = runtime.resource("lake")
    assert isinstance(target, FirehoseTarget) and target.stream is not None
    return target


async def put(runtime: Runtime, numbers: range) -> None:
    """``numbers`` as records, ten a put, all acknowledged."""
    target = stream_of(runtime)
    for start in range(numbers.start, numbers.stop, 10):
        batch = [str(n).encode() for n in range(start, min(start + 10, numbers.stop))]
        assert all(result.record_id for result in await target.put(batch))


async def settle() -> None:
    for _ in range(5):  # the database's and the files' threads
        await asyncio.sleep(0.01)


async def tick(clock: ManualClock, seconds: int) -> None:
    """Move time on: each timer (every poll of both runners) fires at its
    moment, the runners quiet in between."""
    await clock.advance(seconds, quiet=settle)


def written(directory: Path) -> Counter[int]:
    """How many times each record is in the bucket's objects."""
    return Counter(int(line) for line in lines(objects(directory)))


async def test_one_runner_writes_a_streams_objects_and_another_takes_over_when_it_dies(
    postgres_url: str, tmp_path: Path
) -> None:
    clock, first, second = pair(postgres_url, tmp_path)
    bucket = tmp_path / "lake"
    await first.start()
    try:
        await second.start()
        try:
            assert stream_of(first).stream.owner  # type: ignore[union-attr]
            assert not stream_of(second).stream.owner  # type: ignore[union-attr]
            # Puts on both runners at once: all into the one shared buffer.
            await asyncio.gather(put(first, range(0, 100)), put(second, range(100, 200)))
            await tick(clock, 59)
            assert objects(bucket) == {} if bucket.exists() else True
            await tick(clock, 2)
            assert written(bucket) == Counter(range(200))  # each record once
            # One buffer, one object, written by its owner only (two writers
            # would often write the same key, one over the other: counted here).
            assert len(objects(bucket)) == 1
            assert len(stream_of(first).stream.delivered_objects) == 1  # type: ignore[union-attr]
            assert stream_of(second).stream.delivered_objects == []  # type: ignore[union-attr]
            store = stream_of(second).store
            assert store is not None
            assert (await store.owner("lake"))[0] == "a"

            # Runner a dies: it stops renewing its lease, and writes nothing more.
            a_stream = stream_of(first)
            for task in a_stream._tasks:
                task.cancel()
            await asyncio.gather(*a_stream._tasks, return_exceptions=True)
            await put(second, range(200, 250))
            await put(first, range(250, 260))  # a put a dying runner still took
            await tick(clock, int(LEASE) - 2)
            assert not stream_of(second).stream.owner  # type: ignore[union-attr]
            await tick(clock, 3)  # a's lease has run out: b claims the stream
            assert stream_of(second).stream.owner  # type: ignore[union-attr]
            assert (await store.owner("lake"))[0] == "b"
            await tick(clock, 61)
            assert written(bucket) == Counter(range(260))  # each record once, none lost
            assert len(stream_of(second).stream.delivered_objects) == 1  # type: ignore[union-attr]
            assert await store.buffered("lake") == (0, 0)
        finally:
            await second.stop(1)
    finally:
        await first.stop(1)


async def test_a_stopping_owner_hands_its_streams_over_at_once(
    postgres_url: str, tmp_path: Path
) -> None:
    clock, first, second = pair(postgres_url, tmp_path)
    for runtime in (first, second):
        await runtime.start()
    try:
        await put(first, range(0, 30))
        await first.stop(1)  # graceful: its ownership is released
        await tick(clock, 1)
        assert stream_of(second).stream.owner  # type: ignore[union-attr]
        await put(second, range(30, 40))
        await tick(clock, 60)
        assert written(tmp_path / "lake") == Counter(range(40))
    finally:
        await second.stop(1)
        await first.stop(1)


async def test_a_stream_made_through_one_runner_takes_puts_on_another(
    postgres_url: str, tmp_path: Path
) -> None:
    from pipelines.api import ApiServer, served_services

    from .apiclient import aws_call, aws_refusal, boto

    clock = ManualClock(T0)
    runtimes = [
        Runtime(state_path=postgres_url, runner=name, clock=clock, plugins=PLUGINS)
        for name in ("a", "b")
    ]
    servers = [ApiServer(r, served_services(PLUGINS), "127.0.0.1", 0) for r in runtimes]
    for runtime, server in zip(runtimes, servers, strict=True):
        runtime.add_resource("objects", "bucket", {"directory": str(tmp_path), "bucket": "lake"})
        await server.start()
        await runtime.start()
    try:
        on_a, on_b = (boto("firehose", server.url) for server in servers)
        await aws_call(
            on_a,
            "create_delivery_stream",
            DeliveryStreamName="made-on-a",
            ExtendedS3DestinationConfiguration={
                "BucketARN": "arn:aws:s3:::lake",
                "RoleARN": "arn:aws:iam::111111111111:role/firehose",
                "BufferingHints": {"IntervalInSeconds": 60, "SizeInMBs": 1},
            },
        )
        for client, data in ((on_b, b"1\n"), (on_a, b"2\n"), (on_b, b"3\n")):
            await aws_call(
                client, "put_record", DeliveryStreamName="made-on-a", Record={"Data": data}
            )
        await tick(clock, 61)
        assert Counter(int(line) for line in lines(objects(tmp_path))) == Counter([1, 2, 3])
        # Deleted through a: b stops taking puts for it.
        await aws_call(on_a, "delete_delivery_stream", DeliveryStreamName="made-on-a")
        await tick(clock, 2)
        refused = await aws_refusal(
            on_b, "put_record", DeliveryStreamName="made-on-a", Record={"Data": b"4\n"}
        )
        assert refused.response["Error"]["Code"] == "ResourceNotFoundException"
    finally:
        for runtime, server in zip(runtimes, servers, strict=True):
            await server.close()
            await runtime.stop(1)
