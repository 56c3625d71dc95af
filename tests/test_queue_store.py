"""SQS semantics of the queue store, on both engines (a SQLite file, a private
PostgreSQL server) and a ManualClock."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pipelines.clock import ManualClock
from pipelines.errors import QueueError
from pipelines.store import SQLiteConnection, Trip
from plugins.queue.store import QueueStore, SendEntry


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def store(state_location: str, clock: ManualClock) -> AsyncIterator[QueueStore]:
    opened = await QueueStore.open(state_location, clock)
    yield opened
    await opened.close()


async def io_settles() -> None:
    """Let database calls (SQLite's thread, PostgreSQL's round trips) finish
    between clock steps."""
    await asyncio.sleep(0.02)


async def code_of(call: object) -> str:
    with pytest.raises(QueueError) as caught:
        await call  # type: ignore[misc]
    return caught.value.code


# -- queues ------------------------------------------------------------------


async def test_create_queue_is_idempotent_but_refuses_other_attributes(store: QueueStore) -> None:
    await store.create_queue("orders", {"visibility_timeout": 60})
    await store.create_queue("orders", {"visibility_timeout": 60})
    assert await code_of(store.create_queue("orders", {"visibility_timeout": 5})) == (
        "QueueNameExists"
    )
    await store.create_queue("orders", {"visibility_timeout": 5}, update=True)
    assert (await store.get_attributes("orders")).visibility_timeout == 5
    assert await store.list_queues() == ["orders"]


@pytest.mark.parametrize(
    ("name", "attributes", "code"),
    [
        ("bad name", {}, "InvalidParameterValue"),
        ("x" * 81, {}, "InvalidParameterValue"),
        ("q", {"visibility_timeout": 43_201}, "InvalidAttributeValue"),
        ("q", {"message_retention_period": 59}, "InvalidAttributeValue"),
        ("q", {"maximum_message_size": 1_048_577}, "InvalidAttributeValue"),
        ("q", {"visibilty_timeout": 3}, "InvalidAttributeName"),
        ("q", {"content_based_deduplication": True}, "InvalidAttributeName"),
        ("q", {"redrive_policy": {"dead_letter_queue": "d.fifo", "max_receive_count": 3}}, None),
        ("q", {"redrive_policy": {"dead_letter_queue": "d", "max_receive_count": 0}}, None),
    ],
)
async def test_queue_attributes_are_checked(
    store: QueueStore, name: str, attributes: dict[str, object], code: str | None
) -> None:
    assert await code_of(store.create_queue(name, attributes)) == (code or "InvalidAttributeValue")


async def test_an_unknown_queue_is_queue_does_not_exist(store: QueueStore) -> None:
    assert await code_of(store.send("nope", "x")) == "QueueDoesNotExist"
    assert await code_of(store.receive("nope")) == "QueueDoesNotExist"


# -- send, receive, delete ---------------------------------------------------


async def test_send_receive_delete(store: QueueStore, clock: ManualClock) -> None:
    await store.create_queue("q")
    sent = await store.send("q", "hello", {"kind": "greeting", "n": 3})
    assert sent.md5_of_body == hashlib.md5(b"hello").hexdigest()
    [message] = await store.receive("q", 10)
    assert message.message_id == sent.message_id
    assert message.body == "hello"
    assert message.receive_count == 1
    assert message.attributes["SentTimestamp"] == str(int(clock.time() * 1000))
    assert message.message_attributes == {
        "kind": {"DataType": "String", "StringValue": "greeting"},
        "n": {"DataType": "Number", "StringValue": "3"},
    }
    assert await store.receive("q") == []  # invisible while in flight
    await store.delete("q", message.receipt_handle)
    clock.jump(31)
    assert await store.receive("q") == []  # deleted for good
    assert (await store.stats("q"))["ApproximateNumberOfMessages"] == 0


async def test_receive_returns_at_most_max_messages(store: QueueStore) -> None:
    await store.create_queue("q")
    for n in range(15):
        await store.send("q", f"m{n}")
    first = await store.receive("q", 10)
    second = await store.receive("q", 10)
    assert len(first) == 10
    assert len(second) == 5
    assert {m.body for m in first + second} == {f"m{n}" for n in range(15)}
    assert await code_of(store.receive("q", 11)) == "InvalidParameterValue"
    assert await code_of(store.receive("q", 0)) == "InvalidParameterValue"


async def test_visibility_timeout_returns_the_message_with_a_new_handle(
    store: QueueStore, clock: ManualClock
) -> None:
    await store.create_queue("q", {"visibility_timeout": 10})
    await store.send("q", "job")
    [first] = await store.receive("q")
    clock.jump(9.9)
    assert await store.receive("q") == []
    clock.jump(0.2)
    [second] = await store.receive("q")
    assert second.receive_count == 2
    assert second.receipt_handle != first.receipt_handle
    assert (
        second.attributes["ApproximateFirstReceiveTimestamp"]
        == (first.attributes["ApproximateFirstReceiveTimestamp"])
    )
    # A handle from an earlier receive is accepted and deletes nothing, as SQS documents.
    await store.delete("q", first.receipt_handle)
    assert (await store.stats("q"))["ApproximateNumberOfMessagesNotVisible"] == 1
    await store.delete("q", second.receipt_handle)
    assert (await store.stats("q"))["ApproximateNumberOfMessagesNotVisible"] == 0


async def test_receive_visibility_timeout_overrides_the_queue(
    store: QueueStore, clock: ManualClock
) -> None:
    await store.create_queue("q", {"visibility_timeout": 600})
    await store.send("q", "job")
    await store.receive("q", visibility_timeout=5)
    clock.jump(5)
    assert len(await store.receive("q")) == 1


async def test_change_visibility(store: QueueStore, clock: ManualClock) -> None:
    await store.create_queue("q", {"visibility_timeout": 10})
    await store.send("q", "job")
    [message] = await store.receive("q")
    await store.change_visibility("q", message.receipt_handle, 100)
    clock.jump(50)
    assert await store.receive("q") == []
    await store.change_visibility("q", message.receipt_handle, 0)
    [again] = await store.receive("q")
    assert again.receive_count == 2
    # A handle of an earlier receive: SQS's refusal for a message no longer there.
    assert await code_of(store.change_visibility("q", message.receipt_handle, 5)) == (
        "InvalidParameterValue"
    )
    clock.jump(11)
    # Visible again and not received since: a standard queue takes the latest
    # handle (AWS recorded), and the message is hidden again.
    await store.change_visibility("q", again.receipt_handle, 5)
    assert await store.receive("q") == []
    clock.jump(6)
    assert len(await store.receive("q")) == 1
    assert await code_of(store.change_visibility("q", "garbage", 5)) == "ReceiptHandleIsInvalid"
    assert await code_of(store.change_visibility("q", again.receipt_handle, 43_201)) == (
        "InvalidParameterValue"
    )


async def test_malformed_receipt_handle(store: QueueStore) -> None:
    await store.create_queue("q")
    assert await code_of(store.delete("q", "not-a-handle")) == "ReceiptHandleIsInvalid"


async def test_queue_and_message_delays(store: QueueStore, clock: ManualClock) -> None:
    await store.create_queue("q", {"delay_seconds": 20})
    await store.send("q", "queue delay")
    await store.send("q", "own delay", delay_seconds=5)
    await store.send("q", "no delay", delay_seconds=0)
    assert [m.body for m in await store.receive("q", 10)] == ["no delay"]
    assert (await store.stats("q"))["ApproximateNumberOfMessagesDelayed"] == 2
    clock.jump(5)
    assert [m.body for m in await store.receive("q", 10)] == ["own delay"]
    clock.jump(15)
    assert [m.body for m in await store.receive("q", 10)] == ["queue delay"]
    assert await code_of(store.send("q", "x", delay_seconds=901)) == "InvalidParameterValue"


async def test_retention_hides_then_expires_old_messages(
    store: QueueStore, clock: ManualClock
) -> None:
    await store.create_queue("q", {"message_retention_period": 60})
    await store.send("q", "old")
    clock.jump(30)
    await store.send("q", "young")
    clock.jump(31)
    assert [m.body for m in await store.receive("q", 10)] == ["young"]
    # That receive also deleted it (at most once a minute), with no queue target running.
    assert await store.expire("q") == 0
    await store.send("q", "later")
    clock.jump(61)
    assert await store.expire("q") == 2


async def test_message_limits(store: QueueStore) -> None:
    await store.create_queue("q", {"maximum_message_size": 1024})
    assert await code_of(store.send("q", "x" * 1025)) == "InvalidParameterValue"
    # attributes count towards the size
    assert await code_of(store.send("q", "x" * 1000, {"a" * 20: "b" * 20})) == (
        "InvalidParameterValue"
    )
    assert await code_of(store.send("q", "bad \x00 char")) == "InvalidMessageContents"
    assert await code_of(store.send("q", "")) == "MissingParameter"
    too_many = {f"a{n}": "v" for n in range(11)}
    assert await code_of(store.send("q", "x", too_many)) == "InvalidParameterValue"
    bad_number = {"n": {"DataType": "Number", "StringValue": "many"}}
    assert await code_of(store.send("q", "x", bad_number)) == "InvalidParameterValue"
    await store.send("q", "emoji \U0001f600 and tab\t are fine")


async def test_the_common_send_is_checked_as_any_other(store: QueueStore) -> None:
    # Printable ASCII bodies and plain int attributes take a shorter way
    # through the checks: what they let through and refuse is the same.
    await store.create_queue("q", {"maximum_message_size": 1024})
    assert await code_of(store.send("q", "bell \x07")) == "InvalidMessageContents"
    await store.send("q", "delete char \x7f is allowed", {"n": -12, "big": 10**299})
    # An int too big for a float is not a Number, as before.
    assert await code_of(store.send("q", "x", {"n": 10**400})) == "InvalidParameterValue"
    # The size counts the int's digits: the name (1) + "Number" (6) + 291 digits.
    await store.send("q", "x" * 726, {"n": 10**290})
    assert await code_of(store.send("q", "x" * 727, {"n": 10**290})) == "InvalidParameterValue"
    message, _ = await store.receive("q", 10)
    assert message.message_attributes == {
        "n": {"DataType": "Number", "StringValue": "-12"},
        "big": {"DataType": "Number", "StringValue": str(10**299)},
    }
    assert message.attributes["ApproximateReceiveCount"] == "1"
    assert message.md5_of_body == hashlib.md5(b"delete char \x7f is allowed").hexdigest()
    # Ids found good once are still checked as a whole the next time.
    entries = [SendEntry("x", id="a"), SendEntry("y", id="b")]
    sent, _ = await store.send_batch("q", entries)
    assert [r.md5_of_body for r in sent] == [hashlib.md5(b).hexdigest() for b in (b"x", b"y")]
    await store.send_batch("q", entries)
    entries.append(SendEntry("z", id="a"))
    assert await code_of(store.send_batch("q", entries)) == "BatchEntryIdsNotDistinct"


async def test_batches_fail_entry_by_entry(store: QueueStore) -> None:
    await store.create_queue("q")
    sent, failed = await store.send_batch(
        "q",
        [SendEntry("good", id="a"), SendEntry("bad \x01", id="b"), SendEntry("fine", id="c")],
    )
    assert [result.id for result in sent] == ["a", "c"]
    assert [(error.id, error.code) for error in failed] == [("b", "InvalidMessageContents")]
    assert len(await store.receive("q", 10)) == 2


@pytest.mark.parametrize(
    ("ids", "code"),
    [
        ([], "EmptyBatchRequest"),
        ([str(n) for n in range(11)], "TooManyEntriesInBatchRequest"),
        (["a", "a"], "BatchEntryIdsNotDistinct"),
        (["no spaces"], "InvalidBatchEntryId"),
    ],
)
async def test_batch_requests_are_checked(store: QueueStore, ids: list[str], code: str) -> None:
    await store.create_queue("q")
    entries = [SendEntry("x", id=entry_id) for entry_id in ids]
    assert await code_of(store.send_batch("q", entries)) == code
    assert await code_of(store.delete_batch("q", [(i, "1.x") for i in ids])) == code


async def test_a_batch_over_the_size_limit_is_refused_whole(store: QueueStore) -> None:
    # As AWS recorded it: the batch's limit is 1 MiB of bodies and attributes,
    # whatever the queue's maximum message size, which holds each entry alone.
    await store.create_queue("q", {"maximum_message_size": 1024})
    sent, failed = await store.send_batch(
        "q", [SendEntry("a" * 1024, id="a"), SendEntry("b" * 1025, id="b")]
    )
    assert [result.id for result in sent] == ["a"]
    assert [(error.id, error.code) for error in failed] == [("b", "InvalidParameterValue")]
    await store.create_queue("big")
    attributes = {"k": {"DataType": "String", "StringValue": "x"}}
    entries = [
        SendEntry("a" * (1_048_576 - len("kStringx")), attributes, id="a"),
        SendEntry("a", id="b"),
    ]
    assert await code_of(store.send_batch("big", entries)) == "BatchRequestTooLong"
    assert await store.receive("big", 10) == []


async def test_delete_batch(store: QueueStore) -> None:
    await store.create_queue("q")
    for n in range(3):
        await store.send("q", str(n))
    messages = await store.receive("q", 10)
    entries = [(f"e{n}", m.receipt_handle) for n, m in enumerate(messages)] + [("bad", "zzz")]
    deleted, failed = await store.delete_batch("q", entries)
    assert deleted == ["e0", "e1", "e2"]
    assert [(error.id, error.code) for error in failed] == [("bad", "ReceiptHandleIsInvalid")]
    stats = await store.stats("q")
    assert (
        stats["ApproximateNumberOfMessages"] + stats["ApproximateNumberOfMessagesNotVisible"] == 0
    )


async def test_purge_once_a_minute(store: QueueStore, clock: ManualClock) -> None:
    await store.create_queue("q")
    await store.send("q", "a")
    await store.send("q", "b")
    assert await store.purge("q") == 2
    await store.send("q", "c")
    assert await code_of(store.purge("q")) == "PurgeQueueInProgress"
    clock.jump(60)
    assert await store.purge("q") == 1


# -- long polling ------------------------------------------------------------


async def test_long_poll_wakes_on_send_without_time_passing(
    store: QueueStore, clock: ManualClock
) -> None:
    await store.create_queue("q")
    polling = asyncio.create_task(store.receive("q", wait_time=20))
    await asyncio.sleep(0.05)
    assert not polling.done()
    started = clock.time()
    await store.send("q", "now")
    messages = await asyncio.wait_for(polling, 5)
    assert [m.body for m in messages] == ["now"]
    assert clock.time() == started  # woken by the send, not by a timer


async def test_long_poll_wakes_when_a_delayed_message_becomes_visible(
    store: QueueStore, clock: ManualClock
) -> None:
    await store.create_queue("q")
    await store.send("q", "later", delay_seconds=3)
    polling = asyncio.create_task(store.receive("q", wait_time=20))
    await asyncio.sleep(0.05)
    await clock.advance(3, quiet=io_settles)
    assert [m.body for m in await asyncio.wait_for(polling, 5)] == ["later"]


async def test_long_poll_ends_empty_at_its_wait_time(store: QueueStore, clock: ManualClock) -> None:
    await store.create_queue("q", {"receive_wait_time_seconds": 2})
    polling = asyncio.create_task(store.receive("q"))  # the queue's default wait
    await asyncio.sleep(0.05)
    await clock.advance(1, quiet=io_settles)
    assert not polling.done()
    await clock.advance(1.1, quiet=io_settles)
    assert await asyncio.wait_for(polling, 5) == []
    assert await code_of(store.receive("q", wait_time=21)) == "InvalidParameterValue"


# -- redrive -----------------------------------------------------------------


async def test_redrive_after_max_receive_count_and_move_back(
    store: QueueStore, clock: ManualClock
) -> None:
    await store.create_queue("dlq")
    policy = {"dead_letter_queue": "dlq", "max_receive_count": 2}
    await store.create_queue("q", {"visibility_timeout": 1, "redrive_policy": policy})
    await store.send("q", "poison", {"kind": "bad"})
    for expected_count in (1, 2):
        [message] = await store.receive("q")
        assert message.receive_count == expected_count
        clock.jump(1)
    assert await store.receive("q") == []  # the third receive moved it instead
    [dead] = await store.receive("dlq", visibility_timeout=0)
    assert dead.body == "poison"
    assert dead.message_attributes == {"kind": {"DataType": "String", "StringValue": "bad"}}
    assert dead.attributes["DeadLetterQueueSourceArn"].endswith(":q")
    # standard queues keep the original enqueue time
    assert dead.attributes["SentTimestamp"] == str(int((clock.time() - 2) * 1000))

    assert await store.move_messages("dlq") == 1
    [back] = await store.receive("q")
    assert back.body == "poison"
    assert back.receive_count == 1
    assert (await store.stats("dlq"))["ApproximateNumberOfMessages"] == 0


async def test_move_messages_keeps_to_its_rate(store: QueueStore, clock: ManualClock) -> None:
    await store.create_queue("dlq")
    await store.create_queue("q")
    for n in range(5):
        await store.send("dlq", str(n))
    seen: list[int] = []
    moving = asyncio.create_task(
        store.move_messages("dlq", "q", rate=2, progress=lambda done, _: seen.append(done))
    )
    await asyncio.sleep(0.05)
    assert seen == [2]  # the first second's worth
    await clock.advance(1)
    await asyncio.sleep(0.05)
    assert seen == [2, 4]
    await clock.advance(1)
    assert await asyncio.wait_for(moving, 5) == 5
    assert len(await store.receive("q", 10)) == 5


async def test_move_needs_a_destination_for_messages_sent_there(store: QueueStore) -> None:
    await store.create_queue("dlq")
    await store.send("dlq", "sent directly")
    assert await code_of(store.move_messages("dlq")) == "InvalidParameterValue"
    assert await code_of(store.move_messages("dlq", "nowhere")) == "QueueDoesNotExist"


# -- FIFO --------------------------------------------------------------------


async def test_fifo_order_per_group_and_group_blocking(
    store: QueueStore, clock: ManualClock
) -> None:
    await store.create_queue("jobs.fifo", {"content_based_deduplication": True})
    for n in range(3):
        await store.send("jobs.fifo", f"a{n}", group_id="a")
        await store.send("jobs.fifo", f"b{n}", group_id="b")
    [first] = await store.receive("jobs.fifo")
    assert first.body == "a0"
    assert first.attributes["MessageGroupId"] == "a"
    # group a is blocked while a0 is in flight; b is not
    batch = await store.receive("jobs.fifo", 10)
    assert [m.body for m in batch] == ["b0", "b1", "b2"]
    assert await store.receive("jobs.fifo", 10) == []
    await store.delete("jobs.fifo", first.receipt_handle)
    assert [m.body for m in await store.receive("jobs.fifo", 10)] == ["a1", "a2"]
    sequence = [int(m.attributes["SequenceNumber"]) for m in batch]
    assert sequence == sorted(sequence)


async def test_fifo_group_stays_blocked_by_a_later_message_in_flight(
    store: QueueStore, clock: ManualClock
) -> None:
    await store.create_queue("jobs.fifo", {"content_based_deduplication": True})
    await store.send("jobs.fifo", "first", group_id="g")
    await store.send("jobs.fifo", "second", group_id="g")
    first, _second = await store.receive("jobs.fifo", 10)
    await store.change_visibility("jobs.fifo", first.receipt_handle, 0)
    assert await store.receive("jobs.fifo", 10) == []  # "second" is still in flight


async def test_fifo_deduplication_window(store: QueueStore, clock: ManualClock) -> None:
    await store.create_queue("d.fifo")
    one = await store.send("d.fifo", "x", group_id="g", deduplication_id="k")
    two = await store.send("d.fifo", "y", group_id="g", deduplication_id="k")
    assert two.message_id == one.message_id
    [message] = await store.receive("d.fifo", 10)
    await store.delete("d.fifo", message.receipt_handle)
    clock.jump(299)
    await store.send("d.fifo", "still a duplicate", group_id="g", deduplication_id="k")
    clock.jump(1)
    await store.send("d.fifo", "z", group_id="g", deduplication_id="k")
    assert [m.body for m in await store.receive("d.fifo", 10)] == ["z"]


async def test_fifo_content_based_deduplication(store: QueueStore) -> None:
    await store.create_queue("c.fifo", {"content_based_deduplication": True})
    await store.send("c.fifo", "same", group_id="g")
    await store.send("c.fifo", "same", group_id="g")
    await store.send("c.fifo", "same", group_id="g", deduplication_id="explicit")
    messages = await store.receive("c.fifo", 10)
    assert [m.body for m in messages] == ["same", "same"]
    assert messages[0].attributes["MessageDeduplicationId"] == hashlib.sha256(b"same").hexdigest()


async def test_fifo_send_rules(store: QueueStore) -> None:
    await store.create_queue("r.fifo")
    assert await code_of(store.send("r.fifo", "x", deduplication_id="k")) == "MissingParameter"
    assert await code_of(store.send("r.fifo", "x", group_id="g")) == "InvalidParameterValue"
    assert await code_of(
        store.send("r.fifo", "x", group_id="g", deduplication_id="k", delay_seconds=1)
    ) == ("InvalidParameterValue")
    await store.create_queue("std")
    assert await code_of(store.send("std", "x", deduplication_id="k")) == "InvalidParameterValue"


async def test_fifo_delete_with_an_expired_handle_is_refused(
    store: QueueStore, clock: ManualClock
) -> None:
    await store.create_queue("e.fifo", {"content_based_deduplication": True})
    await store.send("e.fifo", "x", group_id="g")
    [message] = await store.receive("e.fifo", visibility_timeout=5)
    clock.jump(6)
    assert await code_of(store.delete("e.fifo", message.receipt_handle)) == (
        "InvalidParameterValue"
    )


# -- durability --------------------------------------------------------------


async def test_restart_loses_nothing_and_in_flight_messages_reappear(
    state_location: str, clock: ManualClock
) -> None:
    path = state_location
    store = await QueueStore.open(path, clock)
    await store.create_queue("q", {"visibility_timeout": 30})
    for n in range(20):
        await store.send("q", f"m{n}")
    in_flight = await store.receive("q", 10)
    await store.close()

    reopened = await QueueStore.open(path, clock)
    try:
        stats = await reopened.stats("q")
        assert stats["ApproximateNumberOfMessages"] == 10
        assert stats["ApproximateNumberOfMessagesNotVisible"] == 10
        rest = await reopened.receive("q", 10)
        clock.jump(30)
        again = await reopened.receive("q", 10)
        assert {m.body for m in again} == {m.body for m in in_flight}
        assert {m.body for m in rest + again} == {f"m{n}" for n in range(20)}
        assert all(m.receive_count == 2 for m in again)
    finally:
        await reopened.close()


CONSUMER = """
import asyncio, os, sys
from plugins.queue.store import QueueStore

async def main(path, out, go):
    store = await QueueStore.open(path)
    open(out + ".ready", "w").close()
    while not os.path.exists(go):  # start together
        await asyncio.sleep(0.01)
    empty = taken = 0
    with open(out, "w") as received:
        # At most 1,100 of the 2,000 each: a consumer the machine leaves
        # waiting still gets the rest (the other could drain all alone).
        while empty < 3 and taken < 1100:
            messages = await store.receive("q", 10, wait_time=0.2, visibility_timeout=600)
            empty = 0 if messages else empty + 1
            taken += len(messages)
            for message in messages:
                received.write(message.body + "\\n")
    await store.close()

asyncio.run(main(*sys.argv[1:4]))
"""


async def test_two_processes_never_hold_the_same_message(
    state_location: str, tmp_path: Path
) -> None:
    path = state_location
    go = tmp_path / "go"
    store = await QueueStore.open(path)
    await store.create_queue("q")
    bodies = [f"m{n}" for n in range(2000)]
    for start in range(0, len(bodies), 10):
        entries = [SendEntry(body, id=str(n)) for n, body in enumerate(bodies[start : start + 10])]
        await store.send_batch("q", entries)
    outputs = [tmp_path / f"consumer{n}.txt" for n in range(2)]
    consumers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", CONSUMER, str(path), str(out), str(go)
        )
        for out in outputs
    ]
    while not all(Path(f"{out}.ready").exists() for out in outputs):
        await asyncio.sleep(0.01)
    go.touch()
    codes = [await asyncio.wait_for(consumer.wait(), 120) for consumer in consumers]
    assert codes == [0, 0]
    held = [out.read_text().split() for out in outputs]
    # Each message was handed to exactly one consumer while it was invisible.
    assert sorted(held[0] + held[1]) == sorted(bodies)
    assert not set(held[0]) & set(held[1])
    assert held[0] and held[1], "both consumers should have received some messages"
    await store.close()


async def test_a_cancelled_receive_gives_its_claim_back(tmp_path: Path, clock: ManualClock) -> None:
    # SQLite only: the cancellation lands while the claim runs on SQLite's
    # thread (its ``on_trip`` hook). PostgreSQL's case is
    # test_a_receive_cancelled_while_it_waits_gives_nothing_away, in test_queue_cluster.py.
    store = await QueueStore.open(tmp_path / "state.db", clock)
    try:
        await _cancelled_during_the_claim(store)
    finally:
        await store.close()


async def _cancelled_during_the_claim(store: QueueStore) -> None:
    policy = {"dead_letter_queue": "dlq", "max_receive_count": 1}
    await store.create_queue("dlq")
    await store.create_queue("q", {"redrive_policy": policy})
    await store.send("q", "hello")
    assert isinstance(store.connection, SQLiteConnection)
    loop = asyncio.get_running_loop()

    def cancel_during_the_claim(trip: Trip) -> None:  # on the connection's thread
        if any(
            step.sql.startswith("UPDATE queue_messages SET queue = CASE") for step in trip.steps
        ):
            loop.call_soon_threadsafe(receiving.cancel)

    store.connection.on_trip = cancel_during_the_claim
    receiving = asyncio.create_task(store.receive("q", wait_time=5))
    with pytest.raises(asyncio.CancelledError):
        await receiving
    store.connection.on_trip = None
    # Nobody saw it: visible again at once, not counted, not dead-lettered.
    [message] = await store.receive("q")
    assert message.body == "hello"
    assert message.receive_count == 1


async def test_a_cancelled_transaction_leaves_none_open(store: QueueStore) -> None:
    await store.create_queue("q")
    purging = asyncio.create_task(store.purge("q"))
    await asyncio.sleep(0)  # inside BEGIN IMMEDIATE
    purging.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await purging
    await store.send("q", "after")  # would fail or never commit inside a stray transaction
    other = await QueueStore.open(store.path, store.clock)
    try:
        assert [m.body for m in await other.receive("q")] == ["after"]
    finally:
        await other.close()


async def test_messages_are_not_moved_to_a_queue_that_is_gone(store: QueueStore) -> None:
    policy = {"dead_letter_queue": "dlq", "max_receive_count": 1}
    await store.create_queue("dlq")
    await store.create_queue("src", {"redrive_policy": policy, "visibility_timeout": 0})
    await store.send("src", "m")
    await store.receive("src")
    await store.receive("src")  # moved to dlq
    await store.delete_queue("src")
    assert await store.move_messages("dlq") == 0
    assert (await store.stats("dlq"))["ApproximateNumberOfMessages"] == 1
