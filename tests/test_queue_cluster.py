"""Queues shared by runners: two or three ``QueueStore`` instances on one
PostgreSQL database stand for runners on different machines (each has its
own connections and its own in-memory state; nothing in this process links
them but the database). What holds across them: one consumer at a time per
message, FIFO order and one group in flight at a time, ids that never
collide, long polls woken by another runner's send, the cluster's counts."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from pipelines.clock import ManualClock
from pipelines.errors import QueueError
from plugins.queue.store import ATTRIBUTES_AGE, Message, QueueStore, SendEntry

RUNNERS = 3


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def runners(postgres_url: str, clock: ManualClock) -> AsyncIterator[list[QueueStore]]:
    """Three stores on one database, opened at once (as runners starting together)."""
    stores = await asyncio.gather(*(QueueStore.open(postgres_url, clock) for _ in range(RUNNERS)))
    try:
        yield list(stores)
    finally:
        for store in stores:
            await store.close()


async def send_all(store: QueueStore, queue: str, bodies: list[str], **entry: str) -> None:
    for start in range(0, len(bodies), 10):
        entries = [
            SendEntry(body, id=str(n), **entry) for n, body in enumerate(bodies[start : start + 10])
        ]
        sent, failed = await store.send_batch(queue, entries)
        assert not failed and len(sent) == len(entries)


# -- one consumer at a time ----------------------------------------------------------


async def test_each_message_is_held_by_one_consumer_across_runners(
    runners: list[QueueStore],
) -> None:
    first = runners[0]
    await first.create_queue("q")
    bodies = [f"m{n}" for n in range(600)]
    # Sent by every runner at once, received by two consumers on each.
    await asyncio.gather(
        *(send_all(store, "q", bodies[n::RUNNERS]) for n, store in enumerate(runners))
    )
    held: dict[int, list[str]] = collections.defaultdict(list)

    async def consume(n: int, store: QueueStore) -> None:
        # Nobody deletes and the timeout is long: a second receive of any
        # message while it is invisible would show up as a duplicate.
        while messages := await store.receive("q", 10, visibility_timeout=600):
            held[n].extend(message.body for message in messages)

    async with asyncio.TaskGroup() as group:
        for n, store in enumerate(runners * 2):
            group.create_task(consume(n, store))
    everything = [body for bodies_held in held.values() for body in bodies_held]
    assert sorted(everything) == sorted(bodies)  # each once, none lost
    assert sum(1 for bodies_held in held.values() if bodies_held) >= 2  # they competed
    stats = await runners[2].stats("q")
    assert stats["ApproximateNumberOfMessages"] == 0
    assert stats["ApproximateNumberOfMessagesNotVisible"] == 600


async def test_a_visibility_timeout_holds_on_every_runner(
    runners: list[QueueStore], clock: ManualClock
) -> None:
    a, b, c = runners
    await a.create_queue("q", {"visibility_timeout": 30})
    await a.send("q", "only")
    [held] = await b.receive("q")
    assert await a.receive("q") == [] and await c.receive("q") == []
    clock.jump(29)
    assert await c.receive("q") == []
    clock.jump(1)
    [again] = await c.receive("q")  # its timeout over: another runner may take it
    assert again.message_id == held.message_id
    assert again.receive_count == 2
    # The first handle is stale: deleting with it (on a standard queue)
    # does nothing, and the message stays c's.
    await b.delete("q", held.receipt_handle)
    assert (await a.stats("q"))["ApproximateNumberOfMessagesNotVisible"] == 1
    await a.delete("q", again.receipt_handle)  # any runner deletes with the live handle
    assert (await b.stats("q"))["ApproximateNumberOfMessagesNotVisible"] == 0
    # A visibility change on one runner is what the others see.
    await a.send("q", "second")
    [message] = await b.receive("q")
    await c.change_visibility("q", message.receipt_handle, 0)
    assert [m.body for m in await a.receive("q")] == ["second"]


async def test_redrive_across_runners_moves_a_message_once(
    runners: list[QueueStore], clock: ManualClock
) -> None:
    a, b, c = runners
    await a.create_queue("dlq")
    policy = {"dead_letter_queue": "dlq", "max_receive_count": 1}
    await a.create_queue("q", {"visibility_timeout": 5, "redrive_policy": policy})
    await send_all(a, "q", [f"m{n}" for n in range(30)])
    first = [m for store in runners for m in await store.receive("q", 10)]
    assert len(first) == 30
    clock.jump(5)
    # Every runner's next receive moves what it finds; each message moves once.
    results = await asyncio.gather(*(store.receive("q", 10) for store in runners * 2))
    assert all(result == [] for result in results)
    assert (await c.stats("dlq"))["ApproximateNumberOfMessages"] == 30
    assert (await b.stats("q"))["ApproximateNumberOfMessages"] == 0


# -- FIFO ------------------------------------------------------------------------------


async def test_fifo_groups_stay_in_order_and_one_consumer_holds_a_group(
    runners: list[QueueStore],
) -> None:
    await runners[0].create_queue("jobs.fifo", {"content_based_deduplication": True})
    groups = [f"g{n}" for n in range(5)]

    async def produce(n: int, store: QueueStore) -> None:
        # Each runner sends its own numbered run to every group, one by one:
        # in a group, a runner's messages come out in the order it sent them.
        for k in range(12):
            for group in groups:
                # (content-based deduplication is the queue's: bodies differ)
                await store.send("jobs.fifo", f"{n}:{k}:{group}", group_id=group)

    in_flight: dict[str, str] = {}
    seen: dict[str, list[str]] = collections.defaultdict(list)
    sequence: dict[str, list[int]] = collections.defaultdict(list)
    total = RUNNERS * 12 * len(groups)

    async def consume(name: str, store: QueueStore) -> None:
        idle = 0
        while idle < 20 and sum(map(len, seen.values())) < total:
            messages = await store.receive("jobs.fifo", 10, visibility_timeout=600)
            if not messages:
                idle += 1
                await asyncio.sleep(0.02)
                continue
            idle = 0
            mine = {m.attributes["MessageGroupId"] for m in messages}
            for group in mine:
                # Nobody else holds a message of this group right now.
                assert group not in in_flight, (group, in_flight[group], name)
                in_flight[group] = name
            for message in messages:
                group = message.attributes["MessageGroupId"]
                seen[group].append(message.body)
                sequence[group].append(int(message.attributes["SequenceNumber"]))
            await asyncio.sleep(0.005)  # hold them a moment, as a consumer works
            for group in mine:
                del in_flight[group]  # before the delete, which unblocks the group
            handles = [(str(n), m.receipt_handle) for n, m in enumerate(messages)]
            deleted, failed = await store.delete_batch("jobs.fifo", handles)
            assert not failed and len(deleted) == len(messages)

    async with asyncio.TaskGroup() as group:
        for n, store in enumerate(runners):
            group.create_task(produce(n, store))
        for n, store in enumerate(runners * 2):
            group.create_task(consume(f"consumer {n}", store))
    for group_id in groups:
        assert len(seen[group_id]) == RUNNERS * 12
        for n in range(RUNNERS):
            mine = [int(body.split(":")[1]) for body in seen[group_id] if body.startswith(f"{n}:")]
            assert mine == list(range(12)), (group_id, n)
        # Sequence numbers rise in the order a group's messages are received.
        assert sequence[group_id] == sorted(sequence[group_id])
        assert len(set(sequence[group_id])) == len(sequence[group_id])


async def test_a_fifo_claim_waits_for_another_runner_s_claim_of_the_queue(
    runners: list[QueueStore], postgres_url: str, clock: ManualClock
) -> None:
    """The moment the test above can only hit by chance, held open: another
    runner's claim of a group's first message has not committed yet. Passing
    over that locked row would hand out the group's second message."""
    store = runners[0]
    await store.create_queue("q.fifo", {"content_based_deduplication": True})
    await store.send("q.fifo", "first", group_id="g")
    await store.send("q.fifo", "second", group_id="g")
    async with await psycopg.AsyncConnection.connect(postgres_url) as other:
        # What a runner's claim does, stopped before its commit.
        await other.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ("queue claim q.fifo",)
        )
        await other.execute(
            "UPDATE queue_messages SET visible = %s, receives = 1, receipt = 'elsewhere'"
            " WHERE body = 'first'",
            (clock.time() + 30,),
        )
        receiving = asyncio.create_task(store.receive("q.fifo", 10))
        await asyncio.sleep(0.3)
        assert not receiving.done()  # it waits for the other claim to end
        await other.commit()
    assert await asyncio.wait_for(receiving, 5) == []  # the group is in flight elsewhere


async def test_fifo_deduplication_holds_across_runners(runners: list[QueueStore]) -> None:
    await runners[0].create_queue("d.fifo")
    # The same deduplication id from every runner at once: stored once.
    results = await asyncio.gather(
        *(
            store.send("d.fifo", f"from {n}", group_id="g", deduplication_id="same")
            for n, store in enumerate(runners * 3)
        )
    )
    assert len({result.message_id for result in results}) == 1
    assert len({result.sequence_number for result in results}) == 1
    [message] = await runners[1].receive("d.fifo", 10)
    assert message.message_id == results[0].message_id
    assert (await runners[2].stats("d.fifo"))["ApproximateNumberOfMessagesNotVisible"] == 1


# -- ids -------------------------------------------------------------------------------


async def test_ids_and_sequence_numbers_never_collide_across_runners(
    runners: list[QueueStore],
) -> None:
    await runners[0].create_queue("q")
    await runners[0].create_queue("f.fifo", {"content_based_deduplication": True})

    async def send(n: int, store: QueueStore) -> list[tuple[str, str | None]]:
        made = []
        for k in range(20):
            sent, _ = await store.send_batch(
                "q", [SendEntry(f"{n}.{k}.{e}", id=str(e)) for e in range(10)]
            )
            made += [(result.message_id, None) for result in sent]
            result = await store.send("f.fifo", f"{n}.{k}", group_id=f"g{k % 3}")
            made.append((result.message_id, result.sequence_number))
        return made

    made = [pair for found in await asyncio.gather(*map(send, range(3), runners)) for pair in found]
    ids = [message_id for message_id, _ in made]
    sequence_numbers = [number for _, number in made if number is not None]
    assert len(ids) == RUNNERS * 20 * 11 and len(set(ids)) == len(ids)
    assert len(sequence_numbers) == RUNNERS * 20
    assert len(set(sequence_numbers)) == len(sequence_numbers)
    # Receipt handles name rows by their sequence in the table: distinct too.
    received = [m for store in runners for m in await store.receive("q", 10)]
    assert len({m.receipt_handle.split(".")[0] for m in received}) == len(received) == 30


# -- long polls ------------------------------------------------------------------------


async def test_a_long_poll_wakes_when_another_runner_sends(
    runners: list[QueueStore], clock: ManualClock
) -> None:
    a, b, c = runners
    await a.create_queue("q")
    # The clock stands still: only an announcement can wake these polls.
    polling = [asyncio.create_task(store.receive("q", 10, wait_time=20)) for store in (a, c)]
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await b.send_batch("q", [SendEntry("one", id="1"), SendEntry("two", id="2")])
    done, left = await asyncio.wait(polling, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    assert time.monotonic() - started < 2
    # Both runners hear the send, and both polls claim at once: one claim
    # may lock both rows before the other's looks (which finds nothing and
    # waits on), or each may lock one, passing over the other's (the test
    # below holds that moment). Either way each message goes to one poll.
    taken = [m for poll in done for m in poll.result()]
    if len(taken) < 2:
        [other] = left
        taken += await asyncio.wait_for(other, 5)
        left = set()
    assert sorted(m.body for m in taken) == ["one", "two"]
    await asyncio.sleep(0.1)
    assert not any(poll.done() for poll in left)  # a poll that took nothing still waits
    if not left:  # (both polls took one) another, on the runner that did not send
        left = {asyncio.create_task(c.receive("q", 10, wait_time=20))}
        await asyncio.sleep(0.1)
    # A message made visible again by a third runner wakes the poll left.
    await b.change_visibility("q", taken[0].receipt_handle, 0)
    [waiting] = left
    assert [m.body for m in await asyncio.wait_for(waiting, 5)] == [taken[0].body]
    # So does a dead-letter move, made by a receive on another runner.
    await a.create_queue("dlq")
    policy = {"dead_letter_queue": "dlq", "max_receive_count": 1}
    await a.create_queue("work", {"visibility_timeout": 0, "redrive_policy": policy})
    await a.send("work", "poison")
    assert len(await a.receive("work")) == 1
    waiting = asyncio.create_task(c.receive("dlq", 10, wait_time=20))
    await asyncio.sleep(0.1)
    assert await a.receive("work") == []  # its second receive moved it
    assert [m.body for m in await asyncio.wait_for(waiting, 5)] == ["poison"]
    assert clock.time() == 1_700_000_000.0  # no timer woke anything


async def test_a_woken_poll_takes_what_another_runner_s_claim_has_not_locked(
    runners: list[QueueStore],
    postgres_url: str,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The moment that splits a batch between the polls of the test above,
    held open: a poll woken by a send claims while another runner's claim
    of the same send holds one of its messages. The claim passes over that
    row (``FOR UPDATE SKIP LOCKED``) and the poll returns the other at once:
    fewer messages than the send made visible, as SQS's ReceiveMessage may
    return, and none of them twice."""
    a, b, c = runners
    await a.create_queue("q")
    woken = asyncio.Event()
    proceed = asyncio.Event()
    armed = False
    look = a._look

    async def held_look(*args: Any) -> tuple[list[Message], float | None]:
        if armed:  # the look of the poll the send woke: held before it claims
            woken.set()
            await proceed.wait()
        return await look(*args)

    monkeypatch.setattr(a, "_look", held_look)
    polling = asyncio.create_task(a.receive("q", 10, wait_time=20))
    await asyncio.sleep(0.1)  # it found the queue empty and waits on it
    armed = True
    await b.send_batch("q", [SendEntry("one", id="1"), SendEntry("two", id="2")])
    await asyncio.wait_for(woken.wait(), 5)
    async with await psycopg.AsyncConnection.connect(postgres_url) as other:
        # What another runner's claim of "one" does, stopped between its
        # row lock (the claim's FOR UPDATE SKIP LOCKED) and its update. (Its
        # update, made here, would also add to the in-flight count's row of
        # its connection's slot, which the poll's claim shares one time in
        # 16 and then waits for: that wait is not what this test is about.)
        await other.execute("SELECT seq FROM queue_messages WHERE body = 'one' FOR UPDATE")
        proceed.set()
        # Not waiting for the locked row, nor for more: what is free, now.
        assert [m.body for m in await asyncio.wait_for(polling, 5)] == ["two"]
        await other.execute(
            "UPDATE queue_messages SET visible = %s, receives = 1, receipt = 'elsewhere'"
            " WHERE body = 'one'",
            (clock.time() + 30,),
        )
        await other.commit()
    assert await c.receive("q", 10) == []  # "one" is the other claim's
    assert (await c.stats("q"))["ApproximateNumberOfMessagesNotVisible"] == 2


async def test_sends_are_announced_only_to_runners_waiting_on_the_queue(
    runners: list[QueueStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, _ = runners
    monkeypatch.setattr("plugins.queue.store.STANDING_BY", 0.2)
    await a.create_queue("q")
    heard: list[str] = []
    hear = b._heard
    monkeypatch.setattr(b, "_heard", lambda payload: (heard.append(payload), hear(payload)))
    # Nobody long polls: a's sends tell nobody (a short poll reads what is there).
    await a.send("q", "unannounced")
    await asyncio.sleep(0.1)
    assert heard == []
    assert [m.body for m in await b.receive("q", 10)] == ["unannounced"]
    # b's long poll, having found the queue empty, waits on it: a's send wakes it.
    polling = asyncio.create_task(b.receive("q", 10, wait_time=20))
    await asyncio.sleep(0.1)
    await a.send("q", "announced")
    assert [m.body for m in await asyncio.wait_for(polling, 5)] == ["announced"]
    assert len(heard) == 1
    # A while after its last long poll, b no longer waits on the queue.
    await asyncio.sleep(0.5)
    await a.send("q", "after")
    await asyncio.sleep(0.1)
    assert len(heard) == 1
    # What was sent unannounced is found by the next long poll's first look.
    polling = asyncio.create_task(b.receive("q", 10, wait_time=20))
    assert [m.body for m in await asyncio.wait_for(polling, 5)] == ["after"]


async def listener_pids(url: str) -> list[int]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as db:
        cursor = await db.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND query LIKE 'LISTEN%'"
        )
        return [row[0] for row in await cursor.fetchall()]


async def test_a_store_listens_again_after_losing_its_connection_and_closes_it(
    postgres_url: str, clock: ManualClock
) -> None:
    a = await QueueStore.open(postgres_url, clock)
    b = await QueueStore.open(postgres_url, clock)
    try:
        await a.create_queue("q")
        assert len(await listener_pids(postgres_url)) == 2  # one connection each
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as db:
            for pid in await listener_pids(postgres_url):
                await db.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # Both listen again (within their back-off), and hear each other.
        for _ in range(100):
            if len(await listener_pids(postgres_url)) == 2:
                break
            await asyncio.sleep(0.05)
        assert len(await listener_pids(postgres_url)) == 2
        polling = asyncio.create_task(a.receive("q", 10, wait_time=20))
        await asyncio.sleep(0.1)
        await b.send("q", "after the reconnection")
        assert [m.body for m in await asyncio.wait_for(polling, 5)] == ["after the reconnection"]
    finally:
        await a.close()
        await b.close()
    assert await listener_pids(postgres_url) == []  # closed with their stores


# -- counts and settings ---------------------------------------------------------------


async def test_queue_attributes_count_the_whole_cluster(runners: list[QueueStore]) -> None:
    a, b, c = runners
    await a.create_queue("q")
    await asyncio.gather(
        *(send_all(store, "q", [f"{n}.{k}" for k in range(40)]) for n, store in enumerate(runners))
    )
    taken = await asyncio.gather(*(store.receive("q", 10) for store in runners))
    for n, messages in enumerate(taken[:2]):
        deleted, _ = await runners[n].delete_batch(
            "q", [(str(k), m.receipt_handle) for k, m in enumerate(messages)]
        )
        assert len(deleted) == 10
    for store in runners:
        stats = await store.stats("q")
        assert stats["ApproximateNumberOfMessages"] == 120 - 30
        assert stats["ApproximateNumberOfMessagesNotVisible"] == 10
    # The counts kept by every runner's writes agree with a count of the rows.
    assert await c.scalar("SELECT count(*) FROM queue_messages WHERE queue = 'q'") == 100
    assert await b.scalar("SELECT sum(messages) FROM queue_counts WHERE queue = 'q'") == 100
    assert await a.purge("q") == 100
    assert (await c.stats("q"))["ApproximateNumberOfMessages"] == 0


async def test_queues_made_changed_and_purged_by_several_runners_at_once(
    runners: list[QueueStore], clock: ManualClock
) -> None:
    a, b, c = runners
    # Created by all three at once: one queue, no error.
    await asyncio.gather(*(store.create_queue("q", {"visibility_timeout": 7}) for store in runners))
    assert await b.list_queues() == ["q"]
    # Purged by all three at once: one purge, the others refused.
    await a.send("q", "m")
    outcomes = await asyncio.gather(
        *(store.purge("q") for store in runners), return_exceptions=True
    )
    refused = [o for o in outcomes if isinstance(o, QueueError)]
    assert sorted(o for o in outcomes if isinstance(o, int)) == [1]
    assert [o.code for o in refused] == ["PurgeQueueInProgress"] * 2
    # A change on one runner reaches the others' cached attributes.
    await a.send("q", "m")  # b and c know the queue's attributes from before
    await b.create_queue("q", {"visibility_timeout": 60}, update=True)
    await asyncio.sleep(ATTRIBUTES_AGE + 0.1)
    [message] = await c.receive("q")
    clock.jump(7)
    assert await a.receive("q") == []  # its timeout is 60 now, not 7
    await c.delete_queue("q")
    await asyncio.sleep(ATTRIBUTES_AGE + 0.1)
    with pytest.raises(QueueError) as gone:
        await a.send("q", "into nothing")
    assert gone.value.code == "QueueDoesNotExist"
    assert message.body == "m"


async def test_a_receive_cancelled_while_it_waits_gives_nothing_away(
    postgres_url: str, clock: ManualClock
) -> None:
    store = await QueueStore.open(postgres_url, clock)
    try:
        await store.create_queue("q.fifo", {"content_based_deduplication": True})
        await store.send("q.fifo", "hello", group_id="g")
        # Another runner's FIFO claim holds the queue's claim lock: this
        # receive's claim waits for it, and is cancelled meanwhile.
        async with await psycopg.AsyncConnection.connect(postgres_url) as other:
            await other.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ("queue claim q.fifo",)
            )
            receiving = asyncio.create_task(store.receive("q.fifo", wait_time=5))
            await asyncio.sleep(0.2)
            assert not receiving.done()
            receiving.cancel()
            with pytest.raises(asyncio.CancelledError):
                await receiving
            await other.rollback()
        # Nobody saw it: visible at once, received for the first time.
        [message] = await store.receive("q.fifo")
        assert message.body == "hello"
        assert message.receive_count == 1
    finally:
        await store.close()
