"""The durable intake: put_events answers once its events are in the state
database, and an event leaves it only once every delivery of it is settled;
what a stop or a crash leaves is dispatched again at start."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipelines.clock import ManualClock
from pipelines.errors import ConfigError, NotRunningError
from pipelines.event import dump_json
from pipelines.intake import SETTLE_TURNS, DurableIntake
from pipelines.runnerlock import RunnerLock
from pipelines.runtime import Runtime
from pipelines.state import StateDB
from pipelines.store import SQLiteConnection

from .test_bus import eventually, make_runtime, recorder, routed

#: A recorder's settings for a target slower than a write waits for its rows
#: to settle (``SETTLE_TURNS``): its events' rows are written, then deleted.
LATER = {"turns": SETTLE_TURNS + 2}


def order(n: int) -> dict[str, Any]:
    return {"Source": "shop", "DetailType": "o", "Detail": json.dumps({"n": n})}


def intake_rows(state: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(state) as db:
        rows = db.execute("SELECT seq, event FROM intake ORDER BY seq").fetchall()
    return [(seq, orjson.loads(body)["id"]) for seq, body in rows]


async def test_an_answered_event_is_in_the_intake_until_its_deliveries_settle(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.db"
    runtime = make_runtime(state_path=state)
    runtime.add_resource("fast", "recorder", {})
    runtime.add_resource("slow", "recorder", {"hold": True})
    await routed(runtime, [{"id": "a", "resource": "fast"}, {"id": "b", "resource": "slow"}])
    async with runtime:
        result = await runtime.put_events([order(1), order(2)])
        ids = [entry["EventId"] for entry in result["Entries"]]
        # Answered: both are committed, whatever happens next.
        assert [event_id for _, event_id in intake_rows(state)] == ids
        await eventually(lambda: recorder(runtime, "slow").waiting == 2)
        assert len(recorder(runtime, "fast").received) == 2
        assert len(intake_rows(state)) == 2  # "slow" has not settled them
        recorder(runtime, "slow").release()
        await runtime.wait_until_idle()
    assert intake_rows(state) == []  # settled, and the deletes written at stop


async def test_an_event_no_rule_matches_is_answered_without_an_intake_row(
    tmp_path: Path,
) -> None:
    """Nothing would deliver it, so nothing is written for it: its put waits
    for no commit. An event put with it that a rule matches gets its row."""
    state = tmp_path / "state.db"
    runtime = make_runtime(state_path=state)
    runtime.add_resource("slow", "recorder", {"hold": True})
    await routed(runtime, [{"id": "b", "resource": "slow"}])
    unmatched = {"Source": "elsewhere", "DetailType": "other", "Detail": "{}"}
    async with runtime:
        assert runtime.intake is not None
        statements: list[str] = []
        connection = runtime.intake.store.connection
        assert isinstance(connection, SQLiteConnection)
        await connection.call(sqlite3.Connection.set_trace_callback, statements.append)
        alone = await runtime.put_events([unmatched, unmatched])
        assert alone["FailedEntryCount"] == 0
        assert not [sql for sql in statements if sql.startswith("INSERT INTO intake")]
        both = await runtime.put_events([unmatched, order(1)])
        assert [event_id for _, event_id in intake_rows(state)] == [both["Entries"][1]["EventId"]]
        await eventually(lambda: recorder(runtime, "slow").waiting == 1)
        await connection.call(sqlite3.Connection.set_trace_callback, None)
        recorder(runtime, "slow").release()
        await runtime.wait_until_idle()
    assert intake_rows(state) == []


async def test_memory_durability_answers_without_writing_the_intake(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    runtime = make_runtime(state_path=state, durability="memory")
    runtime.add_resource("slow", "recorder", {"hold": True})
    await routed(runtime, [{"id": "b", "resource": "slow"}])
    async with runtime:
        result = await runtime.put_events([order(1)])
        assert result["FailedEntryCount"] == 0
        assert runtime.intake is None
        assert intake_rows(state) == []
        recorder(runtime, "slow").release()
    with pytest.raises(ConfigError, match="durability"):
        make_runtime(durability="fast")


async def seed(state: Path, rows: list[tuple[int, dict[str, Any]]], retry_of: str | None) -> None:
    """A state database as a killed runner leaves it: intake rows, and a saved
    retry of target "a" for the event ``retry_of``."""
    store = await StateDB.open(state)
    try:
        async with store.transaction() as db:
            await db.executemany(
                "INSERT INTO intake (seq, bus, event, ingested, addressed) VALUES (?, ?, ?, ?, ?)",
                [(seq, "default", orjson.dumps(event), 1000.0, None) for seq, event in rows],
            )
        if retry_of is not None:
            event = next(event for _, event in rows if event["id"] == retry_of)
            await store.save_pending(
                "k1", "default", "orders", "a", event, 1000.0, 1, 2000.0, ("Boom", "down")
            )
    finally:
        await store.close()


def event(n: int) -> dict[str, Any]:
    return {
        "version": "0",
        "id": f"e-{n}",
        "detail-type": "o",
        "source": "shop",
        "account": "123456789012",
        "time": "2026-01-01T00:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {"n": n},
    }


async def two_targets(state: Path, clock: ManualClock) -> Runtime:
    """A runtime on ``state`` whose rule "orders" has targets "a" and "b"."""
    runtime = make_runtime(clock, state_path=state)
    runtime.add_resource("a", "recorder", {})
    runtime.add_resource("b", "recorder", {})
    await routed(runtime, [{"id": "a", "resource": "a"}, {"id": "b", "resource": "b"}])
    return runtime


async def test_what_a_crash_left_is_dispatched_again_but_not_to_a_saved_retry(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.db"
    await seed(state, [(7, event(1)), (9, event(2))], retry_of="e-1")
    clock = ManualClock(1500.0)
    runtime = await two_targets(state, clock)
    async with runtime:
        await runtime.wait_until_idle()
        a = [r.payload["id"] for r in recorder(runtime, "a").received]
        b = [r.payload["id"] for r in recorder(runtime, "b").received]
        # "a" has e-1 as a retry due at 2000: only e-2 now; "b" gets both.
        assert a == ["e-2"] and sorted(b) == ["e-1", "e-2"]
        await clock.advance(600)  # the saved retry comes due
        await runtime.wait_until_idle()
        assert sorted(r.payload["id"] for r in recorder(runtime, "a").received) == ["e-1", "e-2"]
        # New events are numbered after what was there.
        await runtime.put_events([order(3)])
        await runtime.wait_until_idle()
        assert runtime.intake is not None and runtime.intake.reserved == 10
    assert intake_rows(state) == []


async def test_an_event_of_a_bus_that_is_gone_is_kept(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    store = await StateDB.open(state)
    async with store.transaction() as db:
        await db.execute(
            "INSERT INTO intake (seq, bus, event, ingested, addressed) VALUES (1, 'gone', ?, 1, NULL)",
            (orjson.dumps(event(1)),),
        )
    await store.close()
    runtime = make_runtime(state_path=state)
    async with runtime:
        await runtime.wait_until_idle()
    assert intake_rows(state) == [(1, "e-1")]


async def test_a_scheduled_run_is_in_the_intake_before_its_mark(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    clock = ManualClock(0.0)
    runtime = make_runtime(clock, state_path=state)
    runtime.add_resource("slow", "recorder", {"hold": True})
    bus = runtime.bus()
    bus.put_rule("tick", schedule="rate(1 minute)")
    await bus.put_targets("tick", [{"id": "t", "resource": "slow"}])

    def marked() -> list[tuple[float | None]]:
        with sqlite3.connect(state) as db:
            return db.execute("SELECT last_due FROM schedule_marks").fetchall()

    async with runtime:
        await clock.advance(60)
        await eventually(lambda: [due for (due,) in marked() if due is not None] != [])
        # A run is marked only once its event is in the intake ("slow" holds
        # it: it is not settled, so its row is still there).
        assert intake_rows(state) != []
        await eventually(lambda: recorder(runtime, "slow").waiting >= 1)
        recorder(runtime, "slow").release()
        await runtime.wait_until_idle()
    assert intake_rows(state) == []


async def test_a_scheduled_turn_commits_its_events_and_marks_together(tmp_path: Path) -> None:
    """The marks of a turn's runs ride in the intake's transaction of their
    events: one commit a turn, the events' rows first."""
    state = tmp_path / "state.db"
    clock = ManualClock(0.0)
    runtime = make_runtime(clock, state_path=state)
    runtime.add_resource("slow", "recorder", {"hold": True})
    bus = runtime.bus()
    later = datetime.fromtimestamp(60, UTC).isoformat()  # nothing fires at start
    for name in ("a", "b", "c"):
        bus.put_rule(name, schedule={"expression": "rate(1 minute)", "start_date": later})
        await bus.put_targets(name, [{"id": "t", "resource": "slow"}])
    statements: list[str] = []
    async with runtime:
        await runtime.wait_until_idle()
        assert runtime.intake is not None
        connection = runtime.intake.store.connection
        assert isinstance(connection, SQLiteConnection)
        await connection.call(sqlite3.Connection.set_trace_callback, statements.append)
        await clock.advance(60)  # the three runs due at 60 s, in one turn
        await eventually(lambda: recorder(runtime, "slow").waiting >= 3)
        await eventually(
            lambda: any(sql.startswith("INSERT INTO schedule_marks") for sql in statements)
        )
        await connection.call(sqlite3.Connection.set_trace_callback, None)
        recorder(runtime, "slow").release()
        await runtime.wait_until_idle()
    writes = [
        sql.split(" (")[0] for sql in statements if sql.split()[0] in ("BEGIN", "INSERT", "COMMIT")
    ]
    marks = writes.index("INSERT INTO schedule_marks")
    begin = max(n for n, sql in enumerate(writes[:marks]) if sql.startswith("BEGIN"))
    # The events' rows, then their marks (one upsert each), in one transaction.
    assert writes[begin + 1] == "INSERT INTO intake"
    assert writes[begin + 2 : begin + 5] == ["INSERT INTO schedule_marks"] * 3
    assert writes[begin + 5] == "COMMIT"
    with sqlite3.connect(state) as db:
        assert db.execute("SELECT rule, last_due FROM schedule_marks ORDER BY rule").fetchall() == [
            ("a", 60.0),
            ("b", 60.0),
            ("c", 60.0),
        ]


async def test_a_run_whose_event_was_not_written_is_not_marked(tmp_path: Path) -> None:
    """When the intake's write fails, the turn's marks, in the same
    transaction, are not written either: a restart fires the run again."""
    state = tmp_path / "state.db"
    clock = ManualClock(0.0)
    runtime = make_runtime(clock, state_path=state)
    runtime.add_resource("sink", "recorder", LATER)
    bus = runtime.bus()
    bus.put_rule("tick", schedule="rate(1 minute)")
    await bus.put_targets("tick", [{"id": "t", "resource": "sink"}])

    def last_due() -> list[float | None]:
        with sqlite3.connect(state) as db:
            return [due for (due,) in db.execute("SELECT last_due FROM schedule_marks")]

    async with runtime:
        await runtime.wait_until_idle()
        await eventually(lambda: last_due() == [0.0])  # fired at once, marked
        with sqlite3.connect(state) as db:  # the database refuses the next write
            db.execute("ALTER TABLE intake RENAME TO intake_away")
        await clock.advance(60)
        await eventually(lambda: len(recorder(runtime, "sink").received) == 2)
        await runtime.wait_until_idle()
        assert runtime.intake is not None
        await eventually(lambda: runtime.intake is not None and runtime.intake.idle)
        assert last_due() == [0.0]  # the run at 60 s went out, unmarked
        with sqlite3.connect(state) as db:
            db.execute("ALTER TABLE intake_away RENAME TO intake")
        await clock.advance(60)
        await eventually(lambda: last_due() == [120.0])


async def test_a_failed_intake_write_fails_its_entries_alone_and_the_next_puts_go_on(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.db"
    runtime = make_runtime(state_path=state)
    runtime.add_resource("sink", "recorder", LATER)
    await routed(runtime, [{"id": "a", "resource": "sink"}])
    async with runtime:
        assert (await runtime.put_events([order(1)]))["FailedEntryCount"] == 0
        # The database refuses the next write: the table is gone.
        with sqlite3.connect(state) as db:
            db.execute("ALTER TABLE intake RENAME TO intake_away")
        refused = await runtime.put_events([order(2), order(3)])
        assert refused["FailedEntryCount"] == 2
        assert {e["ErrorCode"] for e in refused["Entries"]} == {"InternalFailure"}
        assert "intake write" in refused["Entries"][0]["ErrorMessage"]
        assert refused["Entries"][0]["ErrorMessage"].endswith("put it again.")
        with sqlite3.connect(state) as db:
            db.execute("ALTER TABLE intake_away RENAME TO intake")
        again = await runtime.put_events([order(4)])
        assert again["FailedEntryCount"] == 0  # a past failure refuses nothing more
        await runtime.wait_until_idle()
        assert runtime.running


@contextlib.asynccontextmanager
async def running_intake(path: Path) -> AsyncIterator[tuple[StateDB, DurableIntake]]:
    """A state database's intake with its writer running; at the end of the
    block, once the writer is idle and closed, the intake table is empty."""
    store = await StateDB.open(path)
    intake = DurableIntake(store)
    await intake.open()
    writer = asyncio.create_task(intake.run())
    try:
        yield store, intake
        await eventually(lambda: intake.idle)
        intake.close()
        await writer
        assert await store.rows("SELECT seq FROM intake") == []
    finally:
        if not writer.done():
            writer.cancel()
        await store.close()


async def test_an_event_reserved_and_settled_during_a_write_leaves_no_row(tmp_path: Path) -> None:
    async with running_intake(tmp_path / "state.db") as (_, intake):
        first = intake.reserve("default", event(1), 0.0, None, None)
        # The writer waits while e-1 is not settled, then takes its row and
        # waits for its INSERT.
        for _ in range(SETTLE_TURNS + 1):
            await asyncio.sleep(0)
        second = intake.reserve("default", event(2), 0.0, None, None)
        second.settle()  # matched no rule: settled at once, its row not yet written
        first.settle()
        await intake.committed(intake.reserved)
        assert intake.written == 1  # e-1's row went in; e-2's never did


async def test_a_replayed_copy_is_not_skipped_for_the_originals_saved_retry(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.db"
    copy = {**event(1), "replay-name": "r1"}
    await seed(state, [(3, event(1)), (4, copy)], retry_of="e-1")
    clock = ManualClock(1500.0)
    runtime = await two_targets(state, clock)
    async with runtime:
        await runtime.wait_until_idle()
        a = [r.payload.get("replay-name") for r in recorder(runtime, "a").received]
        # The original's "a" waits as its saved retry; the replayed copy is its own.
        assert a == ["r1"]
        assert len(recorder(runtime, "b").received) == 2


async def test_a_start_that_fails_half_way_leaves_nothing_running(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    store = await StateDB.open(state)
    await store.execute(
        "INSERT INTO pending_deliveries (key, bus, rule, target_id, event, ingested, attempts,"
        " due) VALUES ('1', 'default', 'orders', 'a', 'not json', 0, 1, 0)"
    )
    await store.close()
    runtime = make_runtime(state_path=state)
    runtime.add_resource("a", "recorder", {})
    await routed(runtime, [{"id": "a", "resource": "a"}])
    before = asyncio.all_tasks()
    with pytest.raises(ValueError):
        await runtime.start()  # the corrupt retry row fails it after the targets started
    assert asyncio.all_tasks() == before  # no task of it left
    assert not runtime.running
    with pytest.raises(NotRunningError, match="stopping"):
        await runtime.put_events([order(1)])
    lock = RunnerLock(state)
    lock.acquire()  # released
    lock.release()


async def lone_puts(runtime: Runtime, puts: int) -> tuple[list[str], int]:
    """Run ``runtime`` while one producer makes ``puts`` puts of 10 events,
    each after the last one's answer, until every event is settled and the
    intake idle: the statements its intake's connection ran meanwhile, and
    the rows it had written when the last put was answered."""
    statements: list[str] = []
    async with runtime:
        assert runtime.intake is not None
        connection = runtime.intake.store.connection
        assert isinstance(connection, SQLiteConnection)
        await connection.call(sqlite3.Connection.set_trace_callback, statements.append)
        for n in range(puts):
            result = await runtime.put_events([order(n * 10 + i) for i in range(10)])
            assert result["FailedEntryCount"] == 0
        written = runtime.intake.written
        await runtime.wait_until_idle()
        await eventually(lambda: runtime.intake is not None and runtime.intake.idle)
        await connection.call(sqlite3.Connection.set_trace_callback, None)
    return statements, written


async def test_a_lone_producers_put_is_one_commit_with_the_last_puts_deletes(
    tmp_path: Path,
) -> None:
    """The events of one put settle (a target that takes a few turns of
    the event loop, longer than a write waits for them) while their write
    commits; their deletes wait for the next put's rows instead of taking a
    commit of their own that the next put would wait behind."""
    runtime = make_runtime(state_path=tmp_path / "state.db")
    runtime.add_resource("fast", "recorder", LATER)
    await routed(runtime, [{"id": "a", "resource": "fast"}])
    puts = 50
    statements, _ = await lone_puts(runtime, puts)
    transactions: list[list[str]] = [[]]
    for sql in statements:
        transactions[-1].append(sql)
        if sql == "COMMIT":
            transactions.append([])
    writes = [{sql.split(" (")[0] for sql in t} for t in transactions if "COMMIT" in t]
    inserts = [w for w in writes if "INSERT INTO intake" in w]
    riding = [w for w in inserts if any(sql.startswith("DELETE FROM intake") for sql in w)]
    # One commit per put, and a put's deletes ride with a later put's rows
    # (a commit of deletes alone for each put would make twice as many). A
    # few may go alone on a busy machine: settled while the writer had
    # nothing else to write.
    assert len(inserts) == puts
    assert len(riding) >= puts - 1 - puts // 10
    assert len(writes) <= puts + puts // 10
    assert intake_rows(tmp_path / "state.db") == []


async def test_events_a_target_settles_at_once_are_never_written(tmp_path: Path) -> None:
    """A write waits a few turns of the event loop while the rows it would
    write are not all settled: the events of a lone producer's puts that a
    target answering at once delivers meanwhile are never written, and
    their puts take no commit at all."""
    runtime = make_runtime(state_path=tmp_path / "state.db")
    runtime.add_resource("quick", "recorder", {})
    await routed(runtime, [{"id": "a", "resource": "quick"}])
    puts = 20
    statements, written = await lone_puts(runtime, puts)
    assert len(recorder(runtime, "quick").received) == puts * 10
    assert written == 0
    assert not [sql for sql in statements if sql.startswith(("INSERT INTO intake", "DELETE"))]
    assert statements.count("COMMIT") == 0


async def test_a_put_that_matches_no_rule_does_not_wait_for_others_commits(
    tmp_path: Path,
) -> None:
    runtime = make_runtime(state_path=tmp_path / "state.db")
    runtime.add_resource("sink", "recorder", LATER)
    await routed(runtime, [{"id": "t", "resource": "sink"}])
    async with runtime:
        assert runtime._state is not None
        gate = asyncio.Event()
        original = runtime._state.batch

        async def held(*args: Any, **kwargs: Any) -> Any:
            await gate.wait()
            return await original(*args, **kwargs)

        runtime._state.batch = held  # type: ignore[method-assign]
        held_put = asyncio.create_task(
            runtime.put_events([{"Source": "shop", "DetailType": "o", "Detail": "{}"}])
        )
        try:
            await asyncio.sleep(0.05)
            assert not held_put.done()  # its row's commit is held
            unrouted = await asyncio.wait_for(
                runtime.put_events([{"Source": "other", "DetailType": "o", "Detail": "{}"}]), 2
            )
            assert unrouted["FailedEntryCount"] == 0
            assert not held_put.done()
        finally:
            gate.set()  # also when an assertion failed: the runtime must stop
        assert (await held_put)["FailedEntryCount"] == 0


async def test_accepted_is_told_once_the_events_are_on_the_bus_before_the_answer(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.db"
    runtime = make_runtime(state_path=state)
    runtime.add_resource("sink", "recorder", {})
    await routed(runtime, [{"id": "a", "resource": "sink"}])
    told: list[int] = []
    async with runtime:
        intake = runtime.intake
        assert intake is not None
        before = intake.reserved

        def accepted() -> None:
            told.append(intake.reserved - before)  # their rows reserved by now

        result = await runtime.put_events([order(1), order(2), {"Source": ""}], accepted=accepted)
        assert told == [2]  # once, before the answer, for the two valid entries
        assert result["FailedEntryCount"] == 1


async def test_a_settlement_fired_twice_deletes_its_row_once_and_tells_each_time(
    tmp_path: Path,
) -> None:
    """The settlement ``reserve`` returns deletes the row and tells the
    producer in one call (no closure per event): a second firing (a job
    settled twice) queues no second delete, and a producer's failing callback
    neither stops the delete nor raises into delivery."""
    from pipelines.delivery import Settlement

    told: list[str] = []

    def failing() -> None:
        told.append("failing")
        raise RuntimeError("a producer's bug")

    async with running_intake(tmp_path / "state.db") as (store, intake):
        quiet = intake.reserve("default", event(1), 0.0, None, Settlement(lambda: told.append("a")))
        loud = intake.reserve("default", event(2), 0.0, None, Settlement(failing))
        await intake.committed(intake.reserved)
        assert len(await store.rows("SELECT seq FROM intake")) == 2
        quiet.settle()
        quiet.settle()
        loud.settle()
        assert told == ["a", "a", "failing"]
        assert intake._settled == [1, 2]  # one delete each


async def test_an_event_settled_before_its_row_is_written_costs_no_statement(
    tmp_path: Path,
) -> None:
    """Inserting a row and deleting it in one transaction leaves the table
    as it was: an event settled before the writer's turn (a target that
    answered at once) is neither inserted nor deleted, and its producer is
    still answered; a write of nothing but such events commits nothing."""
    async with running_intake(tmp_path / "state.db") as (store, intake):
        statements: list[str] = []
        connection = store.connection
        assert isinstance(connection, SQLiteConnection)
        await connection.call(sqlite3.Connection.set_trace_callback, statements.append)
        quick = intake.reserve("default", event(1), 0.0, None, None)
        slow = intake.reserve("default", event(2), 0.0, None, None)
        quick.settle()  # before the writer's turn
        await intake.committed(intake.reserved)
        assert await store.rows("SELECT event FROM intake") == [(dump_json(event(2)).decode(),)]
        assert intake.written == 1 and statements.count("COMMIT") == 1
        alone = intake.reserve("default", event(3), 0.0, None, None)
        alone.settle()
        await asyncio.wait_for(intake.committed(intake.reserved), 5)  # answered all the same
        assert statements.count("COMMIT") == 1 and intake.written == 1
        slow.settle()
        await eventually(lambda: intake.idle)
        await connection.call(sqlite3.Connection.set_trace_callback, None)
        deletes = [sql for sql in statements if sql.startswith("DELETE FROM intake")]
        assert len(deletes) == 1 and statements.count("COMMIT") == 2  # the slow one's alone


async def test_held_entries_get_no_intake_row_and_settle_all_the_same(tmp_path: Path) -> None:
    """``held``: the producer keeps those messages until settled (its source
    sends them again otherwise), so they need no row; the others get one."""
    state = tmp_path / "state.db"
    runtime = make_runtime(state_path=state)
    runtime.add_resource("slow", "recorder", {"hold": True})
    await routed(runtime, [{"id": "b", "resource": "slow"}])
    safe: list[int] = []
    async with runtime:
        result = await runtime.put_events(
            [order(1), order(2), order(3)], settled=safe.append, held={0, 2}
        )
        assert result["FailedEntryCount"] == 0
        await eventually(lambda: recorder(runtime, "slow").waiting == 3)
        assert [event_id for _, event_id in intake_rows(state)] == [result["Entries"][1]["EventId"]]
        recorder(runtime, "slow").release()
        await eventually(lambda: sorted(safe) == [0, 1, 2])
        with pytest.raises(ValueError, match="settled"):
            await runtime.put_events([order(4)], held=[0])
    assert intake_rows(state) == []
