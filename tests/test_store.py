"""The store base (pipelines/store.py) on real SQLite files: opening and
``existing``, the writer's lock and transactions, schema versions, upkeep."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import ClassVar

import pytest

from pipelines.clock import ManualClock
from pipelines.errors import StateError
from pipelines.runtime import Runtime
from pipelines.store import Queries, SQLiteConnection, Step, Store, Trip, Upkeep

from .helpers import held_elsewhere, sql


class Notes(Store):
    """A store of one table, as small as a store can be."""

    name = "notes"
    schema = "CREATE TABLE IF NOT EXISTS notes (text TEXT NOT NULL);"

    async def add(self, text: str) -> None:
        await self.execute("INSERT INTO notes (text) VALUES (?)", (text,))

    async def texts(self) -> list[str]:
        return [row[0] for row in await self.rows("SELECT text FROM notes ORDER BY rowid")]

    async def count(self) -> int:
        return int(await self.scalar("SELECT count(*) FROM notes"))


class NotesV2(Notes):
    """The same store one version later: its migration adds a column."""

    version = 2
    migrated_from: ClassVar[list[int]] = []

    async def migrate(self, connection: Queries, found: int) -> None:
        self.migrated_from.append(found)
        await connection.execute("ALTER TABLE notes ADD COLUMN author TEXT")


@pytest.fixture
async def notes(tmp_path: Path) -> AsyncIterator[Notes]:
    async with await Notes.open(tmp_path / "state.db") as store:
        yield store


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


def versions(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT store, version FROM store_versions").fetchall())


# -- opening ---------------------------------------------------------------------------


async def test_existing_never_creates_a_database(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "state.db"
    with pytest.raises(StateError, match=f"state database {missing} does not exist"):
        async with Notes.existing(missing):
            pass
    assert not missing.exists()
    assert not missing.parent.exists()  # not even its directory


async def test_existing_opens_what_open_wrote(tmp_path: Path) -> None:
    async with await Notes.open(tmp_path / "state.db") as store:
        await store.add("kept")
    async with Notes.existing(tmp_path / "state.db") as again:
        assert await again.texts() == ["kept"]
    with pytest.raises(StateError, match="not open"):
        await again.texts()  # closed after the block


async def test_a_file_that_is_not_a_database_is_one_state_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_text("not a database " * 100)
    with pytest.raises(StateError, match=f"state database {path}: .*point state at another file"):
        await Notes.open(path)


# -- the writer: transactions and its lock ------------------------------------------------


async def test_a_transaction_commits_at_the_end_of_its_block(notes: Notes) -> None:
    async with notes.transaction() as db:
        await db.execute("INSERT INTO notes (text) VALUES ('a')")
        await db.execute("INSERT INTO notes (text) VALUES ('b')")
        # Inside, the store's own helpers join the transaction (no deadlock).
        assert await notes.count() == 2
    with sqlite3.connect(notes.path) as other:  # committed: another connection sees it
        assert other.execute("SELECT count(*) FROM notes").fetchone() == (2,)


async def test_a_transaction_rolls_back_on_an_exception(notes: Notes) -> None:
    await notes.add("before")
    with pytest.raises(ValueError, match="changed my mind"):
        async with notes.transaction() as db:
            await db.execute("INSERT INTO notes (text) VALUES ('lost')")
            raise ValueError("changed my mind")
    assert await notes.texts() == ["before"]
    async with notes.transaction() as db:  # no transaction was left open
        await db.execute("INSERT INTO notes (text) VALUES ('after')")
    assert await notes.texts() == ["before", "after"]


async def test_a_transaction_rolls_back_when_cancelled_inside(notes: Notes) -> None:
    inside, never = asyncio.Event(), asyncio.Event()

    async def write() -> None:
        async with notes.transaction() as db:
            await db.execute("INSERT INTO notes (text) VALUES ('lost')")
            inside.set()
            await never.wait()

    task = asyncio.create_task(write())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await notes.texts() == []
    await notes.add("after")
    assert await notes.texts() == ["after"]


async def test_a_transaction_cancelled_while_begin_waits_leaves_none_open(notes: Notes) -> None:
    other = sqlite3.connect(notes.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        began = asyncio.Event()

        async def write() -> None:
            began.set()
            async with notes.transaction() as db:
                await db.execute("INSERT INTO notes (text) VALUES ('lost')")

        task = asyncio.create_task(write())
        await began.wait()
        await asyncio.sleep(0.1)  # BEGIN IMMEDIATE now waits in SQLite's thread
        task.cancel()
        await asyncio.sleep(0.1)
        other.execute("ROLLBACK")  # BEGIN goes through now, after the cancellation
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        other.close()
    # The ROLLBACK queued after BEGIN ended it: a new transaction can begin.
    async with notes.transaction() as db:
        await db.execute("INSERT INTO notes (text) VALUES ('after')")
    assert await notes.texts() == ["after"]


async def test_another_coroutines_statement_never_lands_inside_a_transaction(
    notes: Notes,
) -> None:
    inside, go_on = asyncio.Event(), asyncio.Event()

    async def failing_transaction() -> None:
        async with notes.transaction() as db:
            await db.execute("INSERT INTO notes (text) VALUES ('rolled back')")
            inside.set()
            await go_on.wait()
            raise RuntimeError("fails after the other's statement was issued")

    task = asyncio.create_task(failing_transaction())
    await inside.wait()
    other = asyncio.create_task(notes.add("alone"))
    await asyncio.sleep(0.05)
    assert not other.done()  # it waits for the writer's lock
    go_on.set()
    with pytest.raises(RuntimeError):
        await task
    await other
    assert await notes.texts() == ["alone"]  # not rolled back with the other's


async def test_a_transaction_inside_a_transaction_is_refused(notes: Notes) -> None:
    async with notes.transaction():
        with pytest.raises(StateError, match="inside another"):
            async with notes.transaction():
                pass


async def test_one_and_scalar_read_the_first_row(notes: Notes) -> None:
    assert await notes.one("SELECT text FROM notes") is None
    assert await notes.scalar("SELECT text FROM notes") is None
    await notes.add("x")
    await notes.add("y")
    assert await notes.one("SELECT text, length(text) FROM notes ORDER BY text DESC") == ("y", 1)
    assert await notes.scalar("SELECT group_concat(text, '+') FROM notes") == "x+y"


# -- schema versions ---------------------------------------------------------------------


async def test_each_store_records_its_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with await Notes.open(path):
        pass
    assert versions(path) == {"notes": 1}


async def test_a_newer_version_migrates_an_older_database_once(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with await Notes.open(path) as old:
        await old.add("from v1")
    NotesV2.migrated_from.clear()
    async with await NotesV2.open(path) as new:
        await new.execute("UPDATE notes SET author = 'me'")
        assert await new.rows("SELECT text, author FROM notes") == [("from v1", "me")]
    async with await NotesV2.open(path):
        pass
    assert NotesV2.migrated_from == [1]  # the second open found version 2
    assert versions(path) == {"notes": 2}


async def test_an_older_pipelines_refuses_a_newer_database(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with await NotesV2.open(path):
        pass
    with pytest.raises(
        StateError, match=r"notes tables are version 2, newer than this pipelines knows \(1\)"
    ):
        await Notes.open(path)


async def test_an_older_pipelines_refuses_a_newer_database_before_changing_it(
    state_location: str,
) -> None:
    """An older version's DDL (CREATE ... IF NOT EXISTS) does not run on a
    database a newer version laid out: here version 2 has done without the
    table version 1 creates, and it stays without it."""
    async with await NotesV2.open(state_location):
        pass
    sql(state_location, "DROP TABLE notes")
    with pytest.raises(StateError, match=r"version 2, newer than this pipelines knows \(1\)"):
        await Notes.open(state_location)
    tables = "SELECT count(*) FROM information_schema.tables WHERE table_name = 'notes'"
    if not state_location.startswith("postgresql://"):
        tables = "SELECT count(*) FROM sqlite_master WHERE name = 'notes'"
    assert sql(state_location, tables) == [(0,)]


# -- upkeep ------------------------------------------------------------------------------


async def test_upkeep_runs_every_period_until_the_runtime_stops(tmp_path: Path) -> None:
    clock = ManualClock()
    runtime = Runtime(state_path=tmp_path / "state.db", clock=clock)
    async with await Notes.open(tmp_path / "state.db") as notes:
        done: list[int] = []

        async def tick() -> int:
            await notes.add("tick")
            done.append(await notes.count())
            return 0

        async with runtime:
            task = runtime.upkeep(Upkeep(60, tick, "ticking"))
            await clock.advance(59)
            await asyncio.sleep(0.05)
            assert done == []  # not at start: after the first period
            for expected in ([1], [1, 2], [1, 2, 3]):
                await clock.advance(60)
                await until(lambda expected=expected: done == expected)
        assert task.done()
        await clock.advance(600)
        await asyncio.sleep(0.05)
        assert done == [1, 2, 3]
        assert await notes.count() == 3


async def test_upkeep_goes_on_after_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pipelines.store")
    clock = ManualClock()
    calls: list[str] = []

    async def flaky() -> int:
        calls.append("called")
        if len(calls) == 1:
            raise sqlite3.OperationalError("database is locked")
        return 7

    task = asyncio.create_task(Upkeep(10, flaky, "purging", at_start=True).run(clock))
    try:
        await until(lambda: len(calls) == 1)  # at once, at start
        await clock.advance(10)
        await until(lambda: len(calls) == 2)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert "purging failed; tried again in 10 s" in caplog.text
    assert "purging: 7 removed" in caplog.text


# -- batches and group commit ---------------------------------------------------------


async def test_a_batch_runs_its_steps_in_one_committed_transaction(notes: Notes) -> None:
    done = await notes.batch(
        [
            Step("INSERT INTO notes (text) VALUES (?)", ("a",)),
            Step("INSERT INTO notes (text) VALUES (?)", [("b",), ("c",)], many=True),
            Step("UPDATE notes SET text = upper(text) WHERE text != 'a' RETURNING text"),
        ]
    )
    assert [d.changed for d in done] == [1, 2, 2]
    assert sorted(done[2].rows) == [("B",), ("C",)]
    with sqlite3.connect(notes.path) as other:  # committed: another connection sees it
        assert other.execute("SELECT text FROM notes ORDER BY rowid").fetchall() == [
            ("a",),
            ("B",),
            ("C",),
        ]


async def test_a_failing_step_rolls_the_whole_batch_back(notes: Notes) -> None:
    await notes.add("before")
    with pytest.raises(sqlite3.IntegrityError):
        await notes.batch(
            [
                Step("INSERT INTO notes (text) VALUES ('lost')"),
                Step("INSERT INTO notes (text) VALUES (NULL)"),  # NOT NULL
            ]
        )
    assert await notes.texts() == ["before"]
    async with notes.transaction() as db:  # no transaction was left open
        await db.execute("INSERT INTO notes (text) VALUES ('after')")
    assert await notes.texts() == ["before", "after"]


async def test_a_batch_inside_a_transaction_joins_it(notes: Notes) -> None:
    with pytest.raises(RuntimeError):
        async with notes.transaction():
            await notes.batch([Step("INSERT INTO notes (text) VALUES ('lost')")])
            raise RuntimeError("the enclosing transaction rolls back")
    assert await notes.texts() == []


async def test_a_cancelled_batch_is_written_whole_or_not_at_all(notes: Notes) -> None:
    other = sqlite3.connect(notes.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        task = asyncio.create_task(
            notes.batch([Step(f"INSERT INTO notes (text) VALUES ('{n}')") for n in range(3)])
        )
        await asyncio.sleep(0.1)  # the batch's BEGIN waits in SQLite's thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        other.execute("ROLLBACK")  # the batch goes through now, after its caller left
    finally:
        other.close()
    await notes.add("after")  # no transaction was left open
    texts = await notes.texts()
    assert texts in (["after"], ["0", "1", "2", "after"])


def trips_of(store: Store) -> list[Trip]:
    """The trips the store's writer runs from now on (as its thread takes them)."""
    trips: list[Trip] = []
    assert isinstance(store.connection, SQLiteConnection)
    store.connection.on_trip = trips.append
    return trips


async def test_grouped_statements_submitted_together_share_one_trip(notes: Notes) -> None:
    trips = trips_of(notes)
    insert = "INSERT INTO notes (text) VALUES (?) RETURNING text"
    async with held_elsewhere(notes.path):
        first = asyncio.create_task(notes.grouped(insert, ("0",)))
        await until(lambda: len(trips) == 1)  # taken alone, it waits for the lock
        others = [asyncio.create_task(notes.grouped(insert, (str(n),))) for n in range(1, 5)]
        await asyncio.sleep(0.05)
    results = [await first] + [await task for task in others]
    assert results == [[(str(n),)] for n in range(5)]  # each caller gets its own rows
    assert [(len(t.steps), t.transaction) for t in trips] == [(1, False), (4, True)]
    assert await notes.texts() == [str(n) for n in range(5)]  # in the order submitted


async def test_a_failing_statement_in_a_shared_trip_fails_its_caller_alone(notes: Notes) -> None:
    trips = trips_of(notes)
    async with held_elsewhere(notes.path):
        first = asyncio.create_task(notes.grouped("INSERT INTO notes (text) VALUES ('alone')"))
        await until(lambda: len(trips) == 1)  # under way: the next three gather into one trip
        together = asyncio.gather(
            notes.grouped("INSERT INTO notes (text) VALUES ('before')"),
            notes.grouped("INSERT INTO notes (text) VALUES (NULL)"),
            notes.grouped("INSERT INTO notes (text) VALUES ('after')"),
            return_exceptions=True,
        )
        await asyncio.sleep(0.05)
    results = await together
    await first
    # The shared trip was rolled back, then each statement went again alone.
    assert [len(t.steps) for t in trips] == [1, 3, 1, 1, 1]
    assert results[0] == [] and results[2] == []
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert await notes.texts() == ["alone", "before", "after"]


async def test_a_shared_trip_that_cannot_begin_fails_every_caller_with_why(
    notes: Notes,
) -> None:
    await notes.connection.execute("PRAGMA busy_timeout=100")
    trips = trips_of(notes)
    other = sqlite3.connect(notes.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        first = asyncio.create_task(notes.grouped("INSERT INTO notes (text) VALUES ('a')"))
        await until(lambda: len(trips) == 1)
        results = await asyncio.gather(
            *(notes.grouped(f"INSERT INTO notes (text) VALUES ('{n}')") for n in range(3)),
            return_exceptions=True,
        )
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await first
    finally:
        other.close()
    # The three shared a trip whose BEGIN found the database locked: none
    # was tried again alone (each would wait as long again), all were told.
    assert [len(t.steps) for t in trips] == [1, 3]
    assert all(isinstance(r, sqlite3.OperationalError) for r in results)
    assert "locked" in str(results[0])
    assert await notes.texts() == []


async def test_a_grouped_caller_cancelled_before_its_trip_is_not_written(notes: Notes) -> None:
    trips = trips_of(notes)
    async with held_elsewhere(notes.path):
        first = asyncio.create_task(notes.grouped("INSERT INTO notes (text) VALUES ('first')"))
        await until(lambda: len(trips) == 1)
        dropped = asyncio.create_task(notes.grouped("INSERT INTO notes (text) VALUES ('dropped')"))
        kept = asyncio.create_task(notes.grouped("INSERT INTO notes (text) VALUES ('kept')"))
        await asyncio.sleep(0)  # both wait for the next trip
        dropped.cancel()
    await first
    await kept
    with pytest.raises(asyncio.CancelledError):
        await dropped
    assert await notes.texts() == ["first", "kept"]


async def test_work_handed_over_runs_in_order_whatever_its_kind(notes: Notes) -> None:
    """Shared statements gather between the other work, never across it: a
    statement alone or a batch handed over between two shared ones runs
    between them."""
    trips = trips_of(notes)
    async with held_elsewhere(notes.path):
        first = asyncio.create_task(notes.grouped("INSERT INTO notes (text) VALUES ('0')"))
        await until(lambda: len(trips) == 1)
        tasks = [
            asyncio.create_task(notes.grouped("INSERT INTO notes (text) VALUES ('1')")),
            asyncio.create_task(notes.grouped("INSERT INTO notes (text) VALUES ('2')")),
            asyncio.create_task(notes.add("3")),
            asyncio.create_task(notes.grouped("INSERT INTO notes (text) VALUES ('4')")),
            asyncio.create_task(notes.batch([Step("INSERT INTO notes (text) VALUES ('5')")])),
            asyncio.create_task(notes.grouped("INSERT INTO notes (text) VALUES ('6')")),
        ]
        await asyncio.sleep(0.05)
    await first
    await asyncio.gather(*tasks)
    assert [(len(t.steps), t.transaction) for t in trips] == [
        (1, False), (2, True), (1, False), (1, False), (1, True), (1, False),
    ]  # fmt: skip
    assert await notes.texts() == [str(n) for n in range(7)]


async def test_close_waits_for_the_grouped_statements_submitted(tmp_path: Path) -> None:
    store = await Notes.open(tmp_path / "state.db")
    writes = [
        asyncio.create_task(store.grouped(f"INSERT INTO notes (text) VALUES ('{n}')"))
        for n in range(4)
    ]
    await asyncio.sleep(0)
    await store.close()
    await asyncio.gather(*writes)
    async with Notes.existing(tmp_path / "state.db") as again:
        assert await again.texts() == ["0", "1", "2", "3"]


async def test_share_hands_the_statement_over_before_it_is_awaited(notes: Notes) -> None:
    trips = trips_of(notes)
    pending = notes.share("INSERT INTO notes (text) VALUES ('early') RETURNING text")
    # Not awaited yet, and the connection's thread has run it all the same:
    # what the caller does before awaiting overlaps the database's work.
    await until(lambda: len(trips) == 1)
    assert await pending == [("early",)]


async def test_work_handed_to_a_closed_connection_is_refused(tmp_path: Path) -> None:
    store = await Notes.open(tmp_path / "state.db")
    connection = store.connection
    await store.close()
    with pytest.raises(StateError, match="closed"):
        await connection.rows("SELECT 1")
    with pytest.raises(StateError, match="not open"):
        await store.grouped("INSERT INTO notes (text) VALUES ('late')")


async def test_call_runs_a_function_of_the_sqlite_connection_on_its_thread(notes: Notes) -> None:
    import threading

    assert isinstance(notes.connection, SQLiteConnection)

    def where(db: sqlite3.Connection, extra: int) -> tuple[str, int]:
        return threading.current_thread().name, db.execute("SELECT ?", (extra,)).fetchone()[0]

    name, value = await notes.connection.call(where, 7)
    assert value == 7
    assert name != threading.current_thread().name  # not the event loop's


async def test_an_open_cancelled_midway_leaves_no_thread_behind(tmp_path: Path) -> None:
    import threading

    before = {thread for thread in threading.enumerate() if thread.name.startswith("sqlite:")}
    opening = asyncio.create_task(Notes.open(tmp_path / "state.db"))
    await asyncio.sleep(0)
    opening.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await opening
    if opening.cancelled():  # else it was open already: close it
        stray = {t for t in threading.enumerate() if t.name.startswith("sqlite:")} - before
        await until(lambda: not any(thread.is_alive() for thread in stray))
    else:
        await opening.result().close()


async def test_a_synced_batch_commits_with_synchronous_full_then_goes_back(notes: Notes) -> None:
    traced: list[str] = []
    assert isinstance(notes.connection, SQLiteConnection)
    await notes.connection.call(sqlite3.Connection.set_trace_callback, traced.append)
    await notes.batch([Step("INSERT INTO notes (text) VALUES ('synced')")], synced=True)
    with pytest.raises(sqlite3.IntegrityError):
        await notes.batch([Step("INSERT INTO notes (text) VALUES (NULL)")], synced=True)
    await notes.batch([Step("INSERT INTO notes (text) VALUES ('usual')")])
    # (Not the checkpoint's tail an idle writer may copy between: see test_store_checkpoint.)
    around = [
        s
        for s in traced
        if s.startswith(("PRAGMA", "BEGIN", "COMMIT", "ROLLBACK"))
        and not s.startswith("PRAGMA wal_checkpoint")
    ]
    assert around == [
        "PRAGMA synchronous=FULL", "BEGIN IMMEDIATE", "COMMIT", "PRAGMA synchronous=NORMAL",
        "PRAGMA synchronous=FULL", "BEGIN IMMEDIATE", "ROLLBACK", "PRAGMA synchronous=NORMAL",
        "BEGIN IMMEDIATE", "COMMIT",
    ]  # fmt: skip
    assert await notes.texts() == ["synced", "usual"]
    assert await notes.scalar("PRAGMA synchronous") == 1  # NORMAL again
