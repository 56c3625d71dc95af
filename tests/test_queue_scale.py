"""The queue store at scale, by design: indexes for what it searches (added to
an older database on open), exact counts without a scan, batched trips.
On both engines, but for what is SQLite's own (its query plans, its
migrations from older versions, its trips and write lock)."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pipelines.clock import ManualClock
from pipelines.errors import StateError
from pipelines.postgres import PostgresConnection
from pipelines.store import Done, Gathering, Row, SQLiteConnection, Step, Trip
from plugins.queue.store import (
    _WAKEUPS,
    CROSS_PROCESS_CHECK,
    LISTENING_CHECK,
    QueueStore,
    SendEntry,
)
from tests.helpers import eventually, held_elsewhere


async def io_settles() -> None:
    """Let database calls (SQLite's thread, PostgreSQL's round trips) finish
    between clock steps."""
    await asyncio.sleep(0.02)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def store(state_location: str, clock: ManualClock) -> AsyncIterator[QueueStore]:
    opened = await QueueStore.open(state_location, clock)
    yield opened
    await opened.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path, clock: ManualClock) -> AsyncIterator[QueueStore]:
    """For what only SQLite has: its query plans, its trips, its write lock."""
    opened = await QueueStore.open(tmp_path / "state.db", clock)
    yield opened
    await opened.close()


def plan(path: Path, sql: str, parameters: tuple[object, ...]) -> str:
    """SQLite's query plan for ``sql``, one line per step."""
    with sqlite3.connect(path) as db:
        steps = db.execute(f"EXPLAIN QUERY PLAN {sql}", parameters).fetchall()
    return "\n".join(step[-1] for step in steps)


# -- indexes -----------------------------------------------------------------


async def test_an_older_database_gets_the_indexes_on_open(tmp_path: Path) -> None:
    # SQLite only: a PostgreSQL database's queue tables begin at version 3.
    path = tmp_path / "state.db"
    store = await QueueStore.open(path)
    await store.create_queue("q")
    await store.send("q", "kept")
    await store.close()
    # Make it what version 1 left: no indexes of version 2, version 1 recorded.
    with sqlite3.connect(path) as db:
        db.execute("DROP INDEX queue_messages_sent")
        db.execute("DROP INDEX queue_messages_delayed")
        db.execute("UPDATE store_versions SET version = 1 WHERE store = 'queues'")

    async with QueueStore.existing(path, migrate=True) as reopened:
        assert [m.body for m in await reopened.receive("q")] == ["kept"]
    with sqlite3.connect(path) as db:
        indexes = {
            row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
        version = db.execute("SELECT version FROM store_versions WHERE store = 'queues'").fetchone()
    assert {"queue_messages_sent", "queue_messages_delayed"} <= indexes
    assert version == (QueueStore.version,)


async def test_retention_deletes_through_the_sent_index(sqlite_store: QueueStore) -> None:
    store = sqlite_store
    await store.create_queue("q")
    assert isinstance(store.path, Path)
    found = plan(store.path, "DELETE FROM queue_messages WHERE queue = ? AND sent < ?", ("q", 0.0))
    assert "INDEX queue_messages_sent (queue=? AND sent<?)" in found


# -- exact counts ------------------------------------------------------------

COUNTS = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "ApproximateAgeOfOldestMessage",
)


async def scanned(store: QueueStore, name: str) -> tuple[int, int, int, int]:
    """The counts by a scan of every row (what ``stats`` did before): the truth."""
    now = store.clock.time()
    retention = (await store.get_attributes(name)).message_retention_period
    row = await store.one(
        "SELECT count(CASE WHEN visible <= :now THEN 1 END),"
        " count(CASE WHEN visible > :now AND receives > 0 THEN 1 END),"
        " count(CASE WHEN visible > :now AND receives = 0 THEN 1 END), min(sent)"
        " FROM queue_messages WHERE queue = :queue AND sent >= :expiry",
        {"now": now, "queue": name, "expiry": now - retention},
    )
    assert row is not None
    visible, in_flight, delayed, oldest = row
    return visible, in_flight, delayed, 0 if oldest is None else int(now - oldest)


async def counts(store: QueueStore, name: str) -> tuple[int, int, int, int]:
    """``stats``' counts, checked against the scan before they are returned."""
    stats = await store.stats(name)
    found = (stats[COUNTS[0]], stats[COUNTS[1]], stats[COUNTS[2]], stats[COUNTS[3]])
    assert found == await scanned(store, name)
    return found


async def test_counts_stay_exact_through_a_queue_s_life(
    store: QueueStore, clock: ManualClock
) -> None:
    await store.create_queue("dlq")
    policy = {"dead_letter_queue": "dlq", "max_receive_count": 1}
    await store.create_queue(
        "q", {"visibility_timeout": 10, "message_retention_period": 600, "redrive_policy": policy}
    )
    assert await counts(store, "q") == (0, 0, 0, 0)
    for n in range(5):
        await store.send("q", f"m{n}")
    await store.send("q", "later", delay_seconds=30)
    assert await counts(store, "q") == (5, 0, 1, 0)

    received = await store.receive("q", 3)
    clock.jump(5)
    assert await counts(store, "q") == (2, 3, 1, 5)
    await store.delete("q", received[0].receipt_handle)
    assert await counts(store, "q") == (2, 2, 1, 5)
    clock.jump(5)  # the other two come back: their visibility timeout is over
    assert await counts(store, "q") == (4, 0, 1, 10)

    # The second receive of those two moves them to the dead-letter queue.
    assert len(await store.receive("q", 10)) == 2
    assert await store.receive("q", 10) == []
    assert await counts(store, "q") == (0, 2, 1, 10)
    assert await counts(store, "dlq") == (2, 0, 0, 10)
    clock.jump(20)  # the delayed message becomes visible
    assert await counts(store, "q") == (3, 0, 0, 30)

    assert await store.move_messages("dlq", "q") == 2
    assert await counts(store, "dlq") == (0, 0, 0, 0)
    assert await counts(store, "q") == (5, 0, 0, 30)

    # Retention: hidden from the counts at once, deleted by the sweep later.
    clock.jump(575)
    await store.send("q", "young")
    clock.jump(10)
    assert await counts(store, "q") == (1, 0, 0, 10)
    assert await store.expire("q") == 5
    assert await counts(store, "q") == (1, 0, 0, 10)

    assert await store.purge("q") == 1
    assert await counts(store, "q") == (0, 0, 0, 0)
    await store.send("q", "after the purge")
    assert await counts(store, "q") == (1, 0, 0, 0)


async def test_counts_of_a_fifo_queue_and_a_deleted_queue(store: QueueStore) -> None:
    await store.create_queue("q.fifo", {"content_based_deduplication": True})
    for body in ("a", "b", "a"):  # the second "a" is a duplicate, not stored
        await store.send("q.fifo", body, group_id="g")
    [first] = await store.receive("q.fifo")  # the group is blocked behind it
    assert await counts(store, "q.fifo") == (1, 1, 0, 0)
    await store.delete_batch("q.fifo", [("0", first.receipt_handle)])
    assert await counts(store, "q.fifo") == (1, 0, 0, 0)

    await store.delete_queue("q.fifo")
    await store.create_queue("q.fifo", {"content_based_deduplication": True})
    assert await counts(store, "q.fifo") == (0, 0, 0, 0)


async def test_an_older_database_s_messages_are_counted_on_open(tmp_path: Path) -> None:
    # SQLite only: a PostgreSQL database's queue tables begin at version 3.
    path = tmp_path / "state.db"
    store = await QueueStore.open(path)
    await store.create_queue("q")
    for n in range(7):
        await store.send("q", f"m{n}")
    await store.close()
    # What version 2 left: no counts table, nor its triggers.
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE queue_counts")
        for trigger in ("insert", "delete", "move"):
            db.execute(f"DROP TRIGGER queue_counts_{trigger}")
        db.execute("UPDATE store_versions SET version = 2 WHERE store = 'queues'")

    async with QueueStore.existing(path, migrate=True) as reopened:
        assert await counts(reopened, "q") == (7, 0, 0, 0)
        await reopened.send("q", "one more")
        assert await counts(reopened, "q") == (8, 0, 0, 0)


async def test_hidden_counts_stay_exact_as_seconds_pass(
    store: QueueStore, clock: ManualClock
) -> None:
    """What is in flight or delayed is summed by the second it is visible
    again: exact against the scan at every quarter second, while timeouts
    end inside the current second and across its end, with delays,
    visibility changes, deletes, redrive and a move back."""
    await store.create_queue("dlq")
    policy = {"dead_letter_queue": "dlq", "max_receive_count": 2}
    await store.create_queue("q", {"visibility_timeout": 2, "redrive_policy": policy})
    clock.jump(0.4)  # times off the second: timeouts end mid-second
    for n in range(12):
        await store.send("q", f"m{n}")
    await store.send("q", "soon", delay_seconds=1)
    await store.send("q", "later", delay_seconds=3)
    handles: list[str] = []
    for step in range(24):
        if step % 3 == 0:
            received = await store.receive("q", 3, visibility_timeout=step % 4)
            handles += [m.receipt_handle for m in received]
        if step == 5:
            await store.change_visibility("q", handles[-1], 5)  # received at step 3
        if step == 9:  # what this step received
            await store.delete_batch("q", [("0", handles[-1]), ("1", handles[-2])])
        assert await counts(store, "q") == await scanned(store, "q")
        assert await counts(store, "dlq") == await scanned(store, "dlq")
        clock.jump(0.25)
    clock.jump(10)
    assert await store.receive("q", 10)  # what is left comes back, or moves on
    await store.receive("q", 10)
    await counts(store, "q")
    await counts(store, "dlq")
    await store.move_messages("dlq", "q")
    await counts(store, "q")
    await counts(store, "dlq")


async def test_stats_reads_as_much_with_ten_thousand_in_flight_as_with_a_hundred(
    sqlite_store: QueueStore, clock: ManualClock
) -> None:
    """GetQueueAttributes sums seconds, not messages in flight: SQLite runs
    about as many instructions for it whatever their number (counting them
    in the visibility index took a hundred times more for a hundred times
    as many)."""
    store = sqlite_store
    connection = store.connection
    assert isinstance(connection, SQLiteConnection)
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0  # go on

    async def instructions(name: str) -> int:
        def watch(db: sqlite3.Connection) -> None:
            db.set_progress_handler(tick, 100)

        def unwatch(db: sqlite3.Connection) -> None:
            db.set_progress_handler(None, 0)

        steps[0] = 0
        await connection.call(watch)
        await store.stats(name)
        await connection.call(unwatch)
        taken = steps[0]
        assert (await counts(store, name))[1] > 0  # exact (against the scan), in flight
        return taken

    for name, in_flight in (("small", 100), ("big", 10_000)):
        await store.create_queue(name)
        for _ in range(in_flight // 10):
            await store.send_batch(name, [SendEntry(f"m{n}", id=str(n)) for n in range(10)])
        for _ in range(in_flight // 10):
            assert len(await store.receive(name, 10)) == 10
    clock.jump(0.5)
    small, big = await instructions("small"), await instructions("big")
    assert big < 2 * small + 10


async def test_a_version_3_database_s_hidden_messages_are_counted_on_open(
    state_location: str, clock: ManualClock
) -> None:
    store = await QueueStore.open(state_location, clock)
    await store.create_queue("q")
    for n in range(6):
        await store.send("q", f"m{n}")
    await store.send("q", "delayed", delay_seconds=60)
    await store.receive("q", 4)
    # What version 3 left: no queue_hidden, nor its triggers.
    if store.dialect.name == "sqlite":
        for trigger in ("insert", "delete", "leave", "enter"):
            await store.execute(f"DROP TRIGGER queue_hidden_{trigger}")
    else:
        await store.execute("DROP FUNCTION queue_hidden_change() CASCADE")
    await store.execute("DROP TABLE queue_hidden")
    await store.execute("UPDATE store_versions SET version = 3 WHERE store = 'queues'")
    await store.close()

    reopened = await QueueStore.open(state_location, clock)
    try:
        assert await counts(reopened, "q") == (2, 4, 1, 0)
        [message] = await reopened.receive("q", 1)
        await reopened.delete("q", message.receipt_handle)
        assert await counts(reopened, "q") == (1, 4, 1, 0)
    finally:
        await reopened.close()


async def test_retention_sweeps_the_seconds_that_count_nothing(
    store: QueueStore, clock: ManualClock
) -> None:
    await store.create_queue("q", {"visibility_timeout": 5})
    for second in range(4):
        await store.send("q", f"m{second}")
        [message] = await store.receive("q")
        await store.delete("q", message.receipt_handle)
        clock.jump(1)
    await store.send("q", "kept in flight")
    await store.receive("q")
    empty = "SELECT count(*) FROM queue_hidden WHERE queue = 'q' AND messages = 0"
    assert await store.scalar(empty) == 4  # one second each delete left at 0
    clock.jump(10)
    await store.expire("q")
    assert await store.scalar(empty) == 0
    assert await counts(store, "q") == (1, 0, 0, 10)  # back from flight, sent 10 s ago


# -- several consumers -------------------------------------------------------


def claims_counted(store: QueueStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The claim statements the store sends its database from now on: seen
    by SQLite's connection before each trip, or on their way to psycopg."""
    seen: list[str] = []
    connection = store.connection

    def count(given: list[Step | Gathering]) -> None:
        for each in given:  # claims go in trips (``Store.grouped``, ``Store.gather``)
            # A gathering of receives' claims is one statement, handed over
            # once (parts join it until it is taken): counted at hand-over.
            step = each.statement() if isinstance(each, Gathering) else each
            if (
                step.sql.startswith("UPDATE queue_messages SET")
                and "WHERE seq IN (SELECT" in step.sql
            ):
                seen.append(step.sql)

    if isinstance(connection, SQLiteConnection):
        connection.on_trip = lambda trip: count(trip.steps)  # on the connection's thread
    else:
        assert isinstance(connection, PostgresConnection)
        # Every statement of the store is handed to its connection by one of
        # these: handed over before it is awaited, or awaited at once.
        submit, share = connection.submit, connection.share
        batch, run_shared = connection.batch, connection.shared

        def submitted(steps: list[Step], **options: bool) -> asyncio.Future[list[Done]]:
            count(steps)
            return submit(steps, **options)

        def shared(step: Step | Gathering) -> asyncio.Future[list[Row]]:
            count([step])
            return share(step)

        async def batched(steps: list[Step], **options: bool) -> list[Done]:
            count(steps)
            return await batch(steps, **options)

        async def shared_now(step: Step) -> list[Row]:
            count([step])
            return await run_shared(step)

        monkeypatch.setattr(connection, "submit", submitted)
        monkeypatch.setattr(connection, "share", shared)
        monkeypatch.setattr(connection, "batch", batched)
        monkeypatch.setattr(connection, "shared", shared_now)
    return seen


def waiting(store: QueueStore, queue: str) -> int:
    """How many of the store's long polls of ``queue`` wait, not woken."""
    return len(_WAKEUPS.waiting.get((store._key, queue), {}))


def parked(store: QueueStore, queue: str, clock: ManualClock, polls: int) -> bool:
    """Whether ``polls`` long polls of ``queue`` are parked: each looked,
    found nothing and waits to be woken, its deadline a timer on ``clock``
    (on PostgreSQL a poll first looks, then listens and looks again)."""
    return waiting(store, queue) == polls and clock.pending() == polls


async def test_a_send_wakes_one_poll_per_batch_not_all(
    store: QueueStore, monkeypatch: pytest.MonkeyPatch, clock: ManualClock
) -> None:
    await store.create_queue("q")
    polls = [asyncio.create_task(store.receive("q", 10, wait_time=20)) for _ in range(4)]
    await eventually(lambda: parked(store, "q", clock, 4))
    claims = claims_counted(store, monkeypatch)
    await store.send_batch("q", [SendEntry(f"m{n}", id=str(n)) for n in range(10)])
    await eventually(lambda: any(poll.done() for poll in polls))
    done = [poll for poll in polls if poll.done()]
    assert len(done) == 1 and waiting(store, "q") == 3  # the three others were not woken
    assert [m.body for m in done[0].result()] == [f"m{n}" for n in range(10)]
    assert len(claims) == 1  # the three others did not look for nothing

    # A send of two wakes one poll that wants ten; it takes both.
    polls = [poll for poll in polls if not poll.done()]
    await store.send_batch("q", [SendEntry("a", id="a"), SendEntry("b", id="b")])
    await eventually(lambda: any(poll.done() for poll in polls))
    done = [poll for poll in polls if poll.done()]
    assert [sorted(m.body for m in poll.result()) for poll in done] == [["a", "b"]]
    assert waiting(store, "q") == 2
    assert len(claims) == 2
    for poll in polls:
        poll.cancel()
    await asyncio.gather(*polls, return_exceptions=True)


async def test_a_poll_does_not_claim_what_a_woken_poll_is_about_to_take(
    store: QueueStore, monkeypatch: pytest.MonkeyPatch, clock: ManualClock
) -> None:
    """A consumer coming back for more while a send's wake-up is on its way to
    another poll waits for the next send instead of claiming nothing (with
    several consumers, half of their claims did)."""
    await store.create_queue("q")
    polling = asyncio.create_task(store.receive("q", 10, wait_time=20))
    await eventually(lambda: parked(store, "q", clock, 1))
    claims = claims_counted(store, monkeypatch)
    await store.send_batch("q", [SendEntry(f"m{n}", id=str(n)) for n in range(10)])
    # The waiting poll is woken but has not claimed yet: another comes.
    coming_back = asyncio.create_task(store.receive("q", 10, wait_time=20))
    assert [m.body for m in await polling] == [f"m{n}" for n in range(10)]
    await eventually(lambda: parked(store, "q", clock, 1))  # it came, and waits
    assert len(claims) == 1  # the one that came back did not look
    assert not coming_back.done()
    await store.send_batch("q", [SendEntry("next", id="0")])
    assert [m.body for m in await asyncio.wait_for(coming_back, 5)] == ["next"]
    assert len(claims) == 2


async def test_a_woken_poll_that_stops_passes_its_wake_up_on(
    store: QueueStore, clock: ManualClock
) -> None:
    await store.create_queue("q")
    first = asyncio.create_task(store.receive("q", 10, wait_time=20))
    await eventually(lambda: parked(store, "q", clock, 1))
    second = asyncio.create_task(store.receive("q", 10, wait_time=20))
    await eventually(lambda: parked(store, "q", clock, 2))  # the first is first
    await store.send("q", "m")
    first.cancel()  # woken, it never looks: the message is the second's
    with pytest.raises(asyncio.CancelledError):
        await first
    assert [m.body for m in await asyncio.wait_for(second, 5)] == ["m"]


async def test_polls_wanting_one_are_woken_one_per_message(store: QueueStore) -> None:
    await store.create_queue("q")
    polls = [asyncio.create_task(store.receive("q", 1, wait_time=20)) for _ in range(3)]
    await asyncio.sleep(0.05)
    await store.send_batch("q", [SendEntry("a", id="a"), SendEntry("b", id="b")])
    await asyncio.sleep(0.05)
    assert sorted(m.body for poll in polls if poll.done() for m in poll.result()) == ["a", "b"]
    assert sum(poll.done() for poll in polls) == 2
    for poll in polls:
        poll.cancel()
    await asyncio.gather(*polls, return_exceptions=True)


async def test_a_poll_after_an_empty_look_waits_without_looking_again(
    store: QueueStore, monkeypatch: pytest.MonkeyPatch, clock: ManualClock
) -> None:
    await store.create_queue("q")
    if store.dialect.name == "postgresql":
        # A look counts once the store waits on the queue (other runners
        # announce their sends to it only then): from its first long poll
        # that finds the queue empty, which then looks again.
        first = asyncio.create_task(store.receive("q", 10, wait_time=1))
        await asyncio.sleep(0.05)
        await clock.advance(1, quiet=io_settles)
        assert await first == []
    assert await store.receive("q", 10) == []  # a short poll always looks
    claims = claims_counted(store, monkeypatch)
    polling = asyncio.create_task(store.receive("q", 10, wait_time=20))
    await asyncio.sleep(0.05)
    assert claims == []  # the queue was seen empty, and nothing was sent since
    await store.send("q", "now")
    assert [m.body for m in await asyncio.wait_for(polling, 5)] == ["now"]
    assert len(claims) == 1
    # A message another process writes without a word (no notification: an
    # older version, a hand-made row) is seen at the next check.
    polling = asyncio.create_task(store.receive("q", 10, wait_time=20))
    await asyncio.sleep(0.05)
    insert = "INSERT INTO queue_messages (queue, id, body, sent, visible) VALUES (?, ?, ?, ?, ?)"
    row = ("q", "elsewhere", "from another process", clock.time(), clock.time())
    if isinstance(store.path, Path):
        with sqlite3.connect(store.path) as db:
            db.execute(insert, row)
        check = CROSS_PROCESS_CHECK
    else:
        async with await QueueStore.open(store.path, clock) as elsewhere:
            await elsewhere.execute(insert, row)  # not ``send``: it would announce it
        check = LISTENING_CHECK
    await clock.advance(check - 0.05, quiet=io_settles)
    assert not polling.done()
    await clock.advance(0.1, quiet=io_settles)
    assert [m.body for m in await asyncio.wait_for(polling, 5)] == ["from another process"]


async def test_message_ids_are_distinct_random_uuids(store: QueueStore) -> None:
    await store.create_queue("q")
    sent, _ = await store.send_batch("q", [SendEntry(f"m{n}", id=str(n)) for n in range(10)])
    ids = [result.message_id for result in sent]
    assert len(set(ids)) == 10
    for message_id in ids:
        parsed = uuid.UUID(message_id)
        assert str(parsed) == message_id
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


@pytest.mark.parametrize("name", ["q", "q.fifo"])
async def test_concurrent_consumers_never_receive_a_message_twice_while_it_is_invisible(
    store: QueueStore, clock: ManualClock, name: str
) -> None:
    # Four consumers on this store (their claims share trips) and two on a
    # second store of the same file; nobody deletes, so a second receive of
    # any message within its visibility timeout would show up here.
    await store.create_queue(name, {"content_based_deduplication": True} if "fifo" in name else {})
    other = await QueueStore.open(store.path, clock)
    try:
        for start in range(0, 300, 10):
            entries = [
                SendEntry(f"m{n}", id=str(n), group_id=f"g{n % 7}" if "fifo" in name else None)
                for n in range(start, start + 10)
            ]
            await store.send_batch(name, entries)
        seen: list[str] = []

        async def consume(on: QueueStore) -> None:
            while messages := await on.receive(name, 10, visibility_timeout=600):
                seen.extend(message.message_id for message in messages)

        async with asyncio.TaskGroup() as group:
            for on in (store, store, store, store, other, other):
                group.create_task(consume(on))
        assert len(seen) == len(set(seen))
        if "fifo" not in name:  # a FIFO group in flight holds its later messages back
            assert len(seen) == 300
    finally:
        await other.close()


async def fill(store: QueueStore, queue: str, count: int) -> None:
    """A new standard queue holding messages m0, m1, ... (ids 0, 1, ...), sent in batches of 10."""
    await store.create_queue(queue)
    for start in range(0, count, 10):
        await store.send_batch(
            queue, [SendEntry(f"m{n}", id=str(n)) for n in range(start, start + 10)]
        )


async def test_concurrent_consumers_each_get_their_own_and_counts_stay_exact(
    store: QueueStore,
) -> None:
    """Receives and DeleteMessageBatch calls at once (their claims, and their
    deletes, gathered into one statement while the connection is busy)."""
    await fill(store, "q", 40)
    received = await asyncio.gather(*(store.receive("q", 10) for _ in range(4)))
    bodies = [m.body for mine in received for m in mine]
    assert sorted(bodies) == sorted(f"m{n}" for n in range(40))  # each once
    assert all(m.receive_count == 1 for mine in received for m in mine)
    assert await counts(store, "q") == (0, 40, 0, 0)
    answers = await asyncio.gather(
        *(
            store.delete_batch("q", [(str(n), m.receipt_handle) for n, m in enumerate(mine)])
            for mine in received
        )
    )
    assert [len(deleted) for deleted, _ in answers] == [len(mine) for mine in received]
    assert await counts(store, "q") == (0, 0, 0, 0)


# SQLite only from here: its trips, shared by concurrent statements while
# another process holds its write lock.


def trips_of(store: QueueStore) -> list[Trip]:
    trips: list[Trip] = []
    assert isinstance(store.connection, SQLiteConnection)
    store.connection.on_trip = trips.append
    return trips


async def test_claims_and_deletes_sharing_a_trip_each_get_their_own(
    sqlite_store: QueueStore,
) -> None:
    store = sqlite_store
    await fill(store, "q", 40)
    assert await store.receive("q", 1, visibility_timeout=0)  # its retention pass done
    trips = trips_of(store)
    async with held_elsewhere(store.path):
        first = asyncio.create_task(store.receive("q", 10))
        await eventually(lambda: len(trips) == 1)  # taken alone, it waits for the lock
        together = [asyncio.create_task(store.receive("q", 10)) for _ in range(3)]
        await asyncio.sleep(0.05)
    received = [await first] + [await task for task in together]
    # The three claims made one statement (LIMIT 30), in one trip.
    assert [len(trip.steps) for trip in trips] == [1, 1]
    assert "LIMIT 10)" in trips[0].steps[0].sql and "LIMIT 30)" in trips[1].steps[0].sql
    bodies = [sorted(m.body for m in messages) for messages in received]
    assert all(len(mine) == 10 for mine in bodies)
    assert sorted(b for mine in bodies for b in mine) == sorted(f"m{n}" for n in range(40))
    # Each receive's handles are its own: one receipt each, no message twice.
    handles = [m.receipt_handle for mine in received for m in mine]
    assert len(set(handles)) == 40

    # Their deletes share a trip too; each deletes its own messages, all of them.
    trips.clear()
    async with held_elsewhere(store.path):
        alone = asyncio.create_task(store.delete("q", received[0][0].receipt_handle))
        await eventually(lambda: len(trips) == 1)
        deleting = [
            asyncio.create_task(
                store.delete_batch("q", [(str(n), m.receipt_handle) for n, m in enumerate(mine)])
            )
            for mine in received[1:]
        ]
        await asyncio.sleep(0.05)
    await alone
    answers = [await task for task in deleting]
    # The three DeleteMessageBatch calls made one statement of 30 handles.
    assert [len(trip.steps) for trip in trips] == [1, 1]
    assert len(trips[1].steps[0].parameters) == 30 + 1 + 60
    assert all(deleted == [str(n) for n in range(10)] and not failed for deleted, failed in answers)
    stats = await store.stats("q")  # left: the first's nine others, still in flight
    assert (
        stats["ApproximateNumberOfMessages"],
        stats["ApproximateNumberOfMessagesNotVisible"],
    ) == (0, 9)


async def test_a_failing_claim_in_a_shared_trip_fails_its_receive_alone(
    sqlite_store: QueueStore,
) -> None:
    store = sqlite_store
    await store.create_queue("q")
    for start in (0, 10):
        await store.send_batch(
            "q", [SendEntry(f"m{n}", id=str(n)) for n in range(start, start + 10)]
        )
    assert await store.receive("q", 1, visibility_timeout=0)
    trips = trips_of(store)
    async with held_elsewhere(store.path):
        first = asyncio.create_task(store.receive("q", 10))
        await eventually(lambda: len(trips) == 1)
        good = asyncio.create_task(store.receive("q", 10))
        # A statement that fails in SQLite shares the trip with the claim.
        bad = asyncio.create_task(store.grouped("INSERT INTO queues (name) VALUES ('x')"))
        await asyncio.sleep(0.05)
    assert len(await first) == 10
    with pytest.raises(sqlite3.IntegrityError):
        await bad
    assert len(await good) == 10  # rolled back with the trip, then claimed alone
    assert [len(trip.steps) for trip in trips] == [1, 2, 1, 1]


async def test_a_cancelled_receive_sharing_a_claim_gives_back_its_share_only(
    sqlite_store: QueueStore,
) -> None:
    store = sqlite_store
    await fill(store, "q", 30)
    assert await store.receive("q", 1, visibility_timeout=0)  # its retention pass done
    trips = trips_of(store)
    async with held_elsewhere(store.path):
        first = asyncio.create_task(store.receive("q", 10))
        await eventually(lambda: len(trips) == 1)
        kept = asyncio.create_task(store.receive("q", 10))
        cancelled = asyncio.create_task(store.receive("q", 10))
        await asyncio.sleep(0.05)
        cancelled.cancel()  # joined the claim, which has not run yet
        await asyncio.sleep(0.05)
    assert len(await first) == 10
    mine = await kept
    assert len(mine) == 10
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await eventually(lambda: len(trips) == 3)
    assert "LIMIT 20)" in trips[1].steps[0].sql  # one claim for both
    assert (
        trips[2]
        .steps[0]
        .sql.startswith("UPDATE queue_messages SET visible = ?, receives = receives - 1")
    )
    # Only the cancelled one's ten are back; the kept ones stay in flight.
    assert await counts(store, "q") == (10, 20, 0, 0)
    back = await store.receive("q", 10)
    assert not {m.body for m in back} & {m.body for m in mine}
    assert all(m.receive_count == 1 for m in back)  # the cancelled claim not counted
    await store.delete_batch("q", [(str(n), m.receipt_handle) for n, m in enumerate(mine)])
    assert await counts(store, "q") == (0, 20, 0, 0)


async def test_deletes_naming_one_message_with_two_handles_go_apart(
    sqlite_store: QueueStore, clock: ManualClock
) -> None:
    """One DELETE matches each seq with one token: a stale handle and the
    valid one of a message go in two statements, and the valid one deletes."""
    store = sqlite_store
    await store.create_queue("q")
    await store.send_batch("q", [SendEntry("m", id="m"), SendEntry("other", id="o")])
    got = await store.receive("q", 10, visibility_timeout=0)
    stale = next(m.receipt_handle for m in got if m.body == "m")
    clock.jump(1)
    again = await store.receive("q", 10)
    valid = next(m.receipt_handle for m in again if m.body == "m")
    other = next(m.receipt_handle for m in again if m.body == "other")
    trips = trips_of(store)
    async with held_elsewhere(store.path):
        alone = asyncio.create_task(store.delete("q", other))
        await eventually(lambda: len(trips) == 1)
        deleting = [asyncio.create_task(store.delete("q", h)) for h in (stale, valid)]
        await asyncio.sleep(0.05)
    await alone
    for task in deleting:
        await task  # an old handle is accepted on a standard queue
    assert [len(trip.steps) for trip in trips] == [1, 2]
    assert await counts(store, "q") == (0, 0, 0, 0)


async def test_a_gathered_claim_redrives_and_shares_what_it_claims(
    sqlite_store: QueueStore, clock: ManualClock
) -> None:
    store = sqlite_store
    await store.create_queue("dlq")
    policy = {"dead_letter_queue": "dlq", "max_receive_count": 1}
    await store.create_queue("q", {"redrive_policy": policy})
    await store.send_batch("q", [SendEntry(f"old{n}", id=str(n)) for n in range(10)])
    assert len(await store.receive("q", 10, visibility_timeout=0)) == 10  # received once
    clock.jump(1)
    await store.send_batch("q", [SendEntry(f"new{n}", id=str(n)) for n in range(10)])
    await store.send("q", "new10")
    trips = trips_of(store)
    async with held_elsewhere(store.path):
        first = asyncio.create_task(store.receive("q", 1))  # old0: it moves on
        await eventually(lambda: len(trips) == 1)
        together = [asyncio.create_task(store.receive("q", 10)) for _ in range(2)]
        await asyncio.sleep(0.05)
    assert await first == []  # old0 moved on
    shares = [await task for task in together]
    assert "LIMIT 20)" in trips[1].steps[0].sql
    # The older nine moved to the dead-letter queue; the first share's
    # tenth and the second share's ten are the new ones, in order.
    assert [m.body for m in shares[0]] == ["new0"]
    assert [m.body for m in shares[1]] == [f"new{n}" for n in range(1, 11)]
    assert await counts(store, "q") == (0, 11, 0, 0)
    assert (await counts(store, "dlq"))[0] == 10


async def test_receives_and_deletes_on_a_closed_store_are_refused_each_time(
    state_location: str, clock: ManualClock
) -> None:
    """A gathered claim or delete that cannot be handed over leaves nothing
    behind for the next caller to join and wait on forever."""
    store = await QueueStore.open(state_location, clock)
    await store.create_queue("q")
    await store.send("q", "m")
    [message] = await store.receive("q")  # its retention pass done
    await store.close()
    for _ in range(2):
        with pytest.raises(StateError, match="not open"):
            await asyncio.wait_for(store.receive("q"), 5)
        with pytest.raises(StateError, match="not open"):
            await asyncio.wait_for(store.delete("q", message.receipt_handle), 5)
