"""The stream target in a running bus: events become records (partition key
from the event), deliveries in flight are written together, throttling is
retried, and consumers hand batches to other resources with checkpoints that
survive a restart."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.clock import ManualClock
from pipelines.delivery import Backoff
from pipelines.errors import ConfigError
from pipelines.limits import Limits
from pipelines.runtime import Runtime
from plugins.stream.store import HASH_SPACE, StreamStore
from plugins.stream.target import StreamTarget

from .helpers import eventually
from .recorder import Recorder, plugin_manager

PLUGINS = plugin_manager()


def order(user: str, n: int) -> dict[str, Any]:
    return {"Source": "shop", "DetailType": "click", "Detail": json.dumps({"user": user, "n": n})}


def runtime_with(state: Path, clock: ManualClock | None = None, **settings: Any) -> Runtime:
    runtime = Runtime(
        state_path=state,
        plugins=PLUGINS,
        limits=Limits(backoff=Backoff(base=0.05, cap=0.2)),
        clock=clock,
    )
    runtime.add_resource("clicks", "stream", settings)
    runtime.bus().put_rule("all", pattern={"source": ["shop"]})
    return runtime


async def test_events_become_records_keyed_by_a_jmespath_expression(state_location: str) -> None:
    state = state_location
    runtime = runtime_with(state, shards=4, partition_key_jmespath="detail.user")
    await runtime.bus().put_targets("all", [{"id": "s", "resource": "clicks"}])
    users = [f"u{n}" for n in range(8)]
    async with runtime:
        # 400 events at once: deliveries in flight are written in groups.
        await runtime.put_events([order(u, n) for n in range(50) for u in users])
        await runtime.wait_until_idle()
    async with await StreamStore.open(state) as store:
        records = await store.stream("clicks").records()
        described = await store.describe_stream("clicks")
    assert len(described["Shards"]) == 4
    assert len(records) == 400
    by_user: dict[str, list[int]] = {}
    for record in records:
        event = record.json()
        assert record.partition_key == event["detail"]["user"]
        assert event["source"] == "shop" and event["detail-type"] == "click"
        by_user.setdefault(record.partition_key, []).append(event["detail"]["n"])
    # One rule target's deliveries of one key are not ordered by the bus (they
    # run concurrently), but every one is there exactly once.
    assert {u: sorted(ns) for u, ns in by_user.items()} == {u: list(range(50)) for u in users}
    assert len({r.shard_id for r in records}) > 1


async def test_the_default_partition_key_is_the_source_and_input_is_the_data(
    state_location: str,
) -> None:
    state = state_location
    runtime = runtime_with(state)
    await runtime.bus().put_targets(
        "all", [{"id": "s", "resource": "clicks", "input_path": "$.detail"}]
    )
    async with runtime:
        await runtime.put_events([order("ann", 1)])
        await runtime.wait_until_idle()
    async with await StreamStore.open(state) as store:
        [record] = await store.stream("clicks").records()
    assert record.partition_key == "shop"
    assert record.json() == {"user": "ann", "n": 1}


async def test_a_bad_partition_key_goes_to_the_dead_letter(state_location: str) -> None:
    state = state_location
    runtime = runtime_with(state, partition_key_jmespath="detail.missing")
    runtime.add_resource("dlq", "recorder", {})
    await runtime.bus().put_targets(
        "all", [{"id": "s", "resource": "clicks", "dead_letter": "dlq"}]
    )
    async with runtime:
        await runtime.put_events([order("ann", 1)])
        await runtime.wait_until_idle()
        dlq = runtime.resource("dlq")
        assert isinstance(dlq, Recorder)
        [dead] = dlq.received
    assert dead.context.attributes["ERROR_CODE"] == "InvalidPartitionKey"
    assert dead.context.attributes["RETRY_ATTEMPTS"] == "0"


async def test_write_limits_throttle_and_the_bus_retries(state_location: str) -> None:
    """One shard takes 1,000 records a second: 1,300 at once are partly
    refused with ProvisionedThroughputExceededException, then retried."""
    state = state_location
    # The runner's clock stands still until the test moves it: the 1,300 are
    # written within one instant of it however slowly a loaded machine
    # writes them, so the shard's allowance runs out for certain.
    clock = ManualClock()
    runtime = runtime_with(state, clock, write_limits=True, partition_key="one")
    await runtime.bus().put_targets("all", [{"id": "s", "resource": "clicks"}])
    async with runtime, await StreamStore.open(state, clock) as store:
        await runtime.put_events([order("ann", n) for n in range(1300)])
        target = runtime.resource("clicks")
        assert isinstance(target, StreamTarget)
        await eventually(lambda: target.throttled > 0, 60)
        stream = store.stream("clicks")
        # Time moves on: the allowance refills, the bus's backoff ends and
        # the refused ones are written on their retries.
        for _ in range(600):
            records = list(await stream.records())
            if len(records) >= 1300:
                break
            await clock.advance(0.05)
            await asyncio.sleep(0.05)
        described = await store.describe_stream("clicks")
    assert described["StreamModeDetails"] == {"StreamMode": "PROVISIONED"}
    assert sorted(r.json()["detail"]["n"] for r in records) == list(range(1300))


async def test_throttling_refuses_past_a_shards_allowance(state_location: str) -> None:
    clock = ManualClock()
    first = {"PartitionKey": "k", "ExplicitHashKey": "0"}  # shard 0
    second = {"PartitionKey": "k", "ExplicitHashKey": str(HASH_SPACE - 1)}  # shard 1
    async with await StreamStore.open(state_location, clock) as store:
        await store.create_stream("s", 2, write_limits=True)
        for _ in range(2):
            answer = await store.put_records("s", [{"Data": b"x", **first}] * 500)
            assert answer["FailedRecordCount"] == 0
        over = await store.put_records("s", [{"Data": b"x", **first}] * 10)
        assert over["FailedRecordCount"] == 10
        assert over["Records"][0]["ErrorCode"] == "ProvisionedThroughputExceededException"
        assert "Rate exceeded for shard shardId-000000000000" in over["Records"][0]["ErrorMessage"]
        # The other shard has its own allowance; this one refills over time.
        assert (await store.put_records("s", [{"Data": b"x", **second}]))["FailedRecordCount"] == 0
        clock.jump(0.5)
        half = await store.put_records("s", [{"Data": b"x", **first}] * 500)
        assert half["FailedRecordCount"] == 0
        assert (await store.put_records("s", [{"Data": b"x", **first}]))["FailedRecordCount"] == 1
        # 1 MiB a second: four 300 KB records are one too many.
        clock.jump(1)
        big = await store.put_records("s", [{"Data": b"x" * 300_000, **first}] * 4)
        assert big["FailedRecordCount"] == 1


async def test_consumers_get_batches_in_order_and_resume_after_a_restart(
    state_location: str,
) -> None:
    state = state_location

    def build() -> Runtime:
        runtime = runtime_with(
            state,
            shards=2,
            partition_key_jmespath="detail.user",
            consumers={
                "fast": {"target": "fast", "batch_size": 50, "poll": 0.05},
                "slow": {"target": "slow", "batch_size": 5, "poll": 0.05},
            },
        )
        runtime.add_resource("fast", "recorder", {})
        runtime.add_resource("slow", "recorder", {"fail": 2})  # two failed attempts first
        return runtime

    def seen(runtime: Runtime, name: str) -> list[tuple[str, int]]:
        target = runtime.resource(name)
        assert isinstance(target, Recorder)
        found = []
        for received in target.received:
            for item in received.payload["Records"]:
                assert item["eventSource"] == "aws:kinesis"
                event = json.loads(base64.b64decode(item["kinesis"]["data"]))
                assert item["kinesis"]["partitionKey"] == event["detail"]["user"]
                found.append((event["detail"]["user"], event["detail"]["n"]))
        return found

    runtime = build()
    await runtime.bus().put_targets("all", [{"id": "s", "resource": "clicks"}])
    async with runtime:
        for n in range(30):  # one at a time: the order per user is the order written
            await runtime.put_events([order("ann", n), order("bob", n)])
            await runtime.wait_until_idle()
        await eventually(lambda: len(seen(runtime, "fast")) == 60)
        await eventually(lambda: len(seen(runtime, "slow")) >= 20)
        slow_target = runtime.resource("slow")
        assert isinstance(slow_target, Recorder) and len(slow_target.attempts) >= 3
    # After the stop: the slow consumer may have taken more batches meanwhile.
    fast = seen(runtime, "fast")
    slow_before = seen(runtime, "slow")
    for user in ("ann", "bob"):
        assert [n for u, n in fast if u == user] == list(range(30))
        assert [n for u, n in slow_before if u == user] == list(range(len(
            [1 for u, _ in slow_before if u == user])))  # fmt: skip

    # After a restart each consumer goes on from its checkpoint: the fast one
    # has nothing left; the slow one gets the rest (a batch it had taken but
    # not finished may come again: at least once).
    runtime = build()
    await runtime.bus().put_targets("all", [{"id": "s", "resource": "clicks"}])
    async with runtime:
        runtime.resource("slow").failures = 0  # type: ignore[attr-defined]
        await eventually(lambda: len(set(slow_before) | set(seen(runtime, "slow"))) == 60)
        await asyncio.sleep(0.2)
        assert seen(runtime, "fast") == []
    again = set(slow_before) & set(seen(runtime, "slow"))
    assert len(again) <= 5  # at most one batch


def test_settings_problems_name_their_place() -> None:
    runtime = Runtime(plugins=PLUGINS)
    cases = [
        ({"shards": 0}, "target s.shards"),
        ({"retention_hours": 10}, "target s.retention_hours"),
        ({"partition_key": "a", "partition_key_jmespath": "b"}, "not both"),
        ({"partition_key_jmespath": "a["}, "target s.partition_key_jmespath"),
        ({"consumers": {"c": {}}}, "target s.consumers.c.target"),
        ({"consumers": {"c": {"target": "x", "start": "soon"}}}, "target s.consumers.c.start"),
        ({"stream": "no spaces"}, "target s.stream"),
        ({"shard": 2}, "did you mean 'shards'"),
    ]
    for settings, message in cases:
        with pytest.raises(ConfigError) as caught:
            runtime.add_resource("s", "stream", settings)
        assert message in str(caught.value), (settings, str(caught.value))


async def test_a_consumer_that_cannot_read_does_not_stop_the_pipeline(
    caplog: pytest.LogCaptureFixture, state_location: str
) -> None:
    state = state_location
    runtime = runtime_with(state, consumers={"c": {"target": "sink", "poll": 0.05}})
    runtime.add_resource("sink", "recorder", {})
    await runtime.bus().put_targets("all", [{"id": "s", "resource": "clicks"}])
    async with runtime:
        async with await StreamStore.open(state) as other:
            await other.delete_stream("clicks")  # from another process, say
        await eventually(lambda: "stream clicks not found; reading again" in caplog.text)
        assert runtime.running
        answer = await runtime.put_events([order("ann", 1)])
        assert answer["FailedEntryCount"] == 0  # the bus still takes events


# SQLite's own: another process holding the file's write lock.
@pytest.mark.parametrize("state_location", ["sqlite"], indirect=True)
async def test_stopping_mid_write_fails_the_waiting_delivery(state_location: str) -> None:
    """Another process holds the write lock when the target stops (a reload
    replacing it, after its drain time): the delivery waiting for that write
    gets a retryable error instead of waiting for ever."""
    import sqlite3

    from pipelines.errors import DeliveryError
    from pipelines.targets import DeliveryContext

    state = state_location
    runtime = runtime_with(state, partition_key="k")
    async with runtime:
        target = runtime.resource("clicks")
        assert isinstance(target, StreamTarget)
        other = sqlite3.connect(state, isolation_level=None, timeout=30)
        try:
            other.execute("BEGIN IMMEDIATE")
            context = DeliveryContext("all", "s", {"source": "shop"})
            delivery = asyncio.ensure_future(target.deliver({"n": 1}, context))
            await asyncio.sleep(0.2)  # the writer waits for the lock
            stopping = asyncio.ensure_future(target.stop())
            await asyncio.sleep(0.2)
            other.execute("ROLLBACK")
            await asyncio.wait_for(stopping, 30)
        finally:
            other.close()
        done, _ = await asyncio.wait([delivery], timeout=5)
        assert done, "the delivery still waits"
        error = delivery.exception()
        assert isinstance(error, DeliveryError) and error.retryable
        assert error.code == "StreamStopped"


async def test_a_stuck_consumer_reports_its_iterator_age(tmp_path: Path) -> None:
    runtime = runtime_with(tmp_path / "state.db", consumers={"c": {"target": "down", "poll": 0.05}})
    runtime.add_resource("down", "recorder", {"fail": -1})  # refuses every batch
    await runtime.bus().put_targets("all", [{"id": "s", "resource": "clicks"}])
    async with runtime:
        stream = runtime.resource("clicks")
        [idle] = await stream.gauges()
        assert (idle.name, idle.value) == ("stream_iterator_age_seconds", 0.0)
        assert idle.labels == {"stream": "clicks", "consumer": "c"}
        await runtime.put_events([order("ann", 1)])
        await runtime.wait_until_idle()
        down = runtime.resource("down")
        assert isinstance(down, Recorder)
        await eventually(lambda: len(down.attempts) >= 1)
        await asyncio.sleep(0.3)
        [stuck] = await stream.gauges()
        assert stuck.value >= 0.3  # the batch in hand has waited since it was written
