"""Archives and replays on a real SQLite file and on a real PostgreSQL
(``state_location``): what is kept, for how long, and what a replay puts back
on the bus (to which rules, in which states)."""

from __future__ import annotations

import asyncio
import gc
import json
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, cast

import pytest

from pipelines.archive import read_archives
from pipelines.clock import ManualClock
from pipelines.errors import (
    ConfigError,
    PatternError,
    ReplayError,
    ResourceNotFoundError,
    StateError,
)
from pipelines.limits import Limits
from pipelines.replay import replay_status
from pipelines.runtime import Runtime
from pipelines.store import SQLiteConnection, Trip

from .helpers import archived as archived_bodies
from .helpers import sql
from .recorder import Recorder, plugin_manager

ENDED = ("COMPLETED", "CANCELLED", "FAILED")
T0 = 1_700_000_000  # 2023-11-14T22:13:20Z


def entry(n: int, *, source: str = "shop", at: float | None = None) -> dict[str, Any]:
    made: dict[str, Any] = {"Source": source, "DetailType": "t", "Detail": json.dumps({"n": n})}
    if at is not None:
        made["Time"] = at
    return made


def pipeline(
    state: Path | str, clock: ManualClock | None = None, durability: str = "durable"
) -> Runtime:
    """Rules "all" (every shop event) and "even" (even n), each with a recorder."""
    runtime = Runtime(
        state_path=state, plugins=plugin_manager(), clock=clock, durability=durability
    )
    runtime.add_resource("all-sink", "recorder", {})
    runtime.add_resource("even-sink", "recorder", {})
    bus = runtime.bus()
    bus.put_rule("all", pattern={"source": ["shop"]})
    bus.put_rule("even", pattern={"detail": {"n": [0, 2, 4, 6, 8]}})
    return runtime


async def archived(state: Path | str, clock: ManualClock | None = None) -> Runtime:
    """``pipeline`` with its targets and the archive "all" of every event."""
    runtime = pipeline(state, clock)
    await targets(runtime)
    await runtime.archives.create_archive("all")
    return runtime


async def targets(runtime: Runtime) -> None:
    await runtime.bus().put_targets("all", [{"id": "t", "resource": "all-sink"}])
    await runtime.bus().put_targets("even", [{"id": "t", "resource": "even-sink"}])


def received(runtime: Runtime, name: str) -> list[dict[str, Any]]:
    sink = runtime.resource(name)
    assert isinstance(sink, Recorder)
    return [r.payload for r in sink.received]


async def until_ended(runtime: Runtime, name: str, timeout: float = 30.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while (described := await runtime.replays.describe(name))["State"] not in ENDED:
            await asyncio.sleep(0.01)
    await runtime.wait_until_idle()
    return described


async def test_an_archive_keeps_the_events_its_pattern_matches(state_location: str) -> None:
    runtime = pipeline(state_location)
    await runtime.archives.create_archive("all")
    await runtime.archives.create_archive(
        "big", pattern={"detail": {"n": [{"numeric": [">=", 7]}]}}
    )
    async with runtime:
        result = await runtime.put_events([entry(n, at=T0 + n) for n in range(10)])
        assert result["FailedEntryCount"] == 0
        everything = await runtime.archives.describe_archive("all")
        big = await runtime.archives.describe_archive("big")
        listed = [a["ArchiveName"] for a in await runtime.archives.list_archives()]
    assert listed == ["all", "big"]
    assert everything["EventCount"] == 10
    assert big["EventCount"] == 3
    assert big["EventPattern"] == '{"detail":{"n":[{"numeric":[">=",7]}]}}'
    assert everything["OldestEventTime"] == "2023-11-14T22:13:20Z"
    assert everything["NewestEventTime"] == "2023-11-14T22:13:29Z"
    assert big["OldestEventTime"] == "2023-11-14T22:13:27Z"
    # The counters are kept as events arrive, and agree with the stored rows.
    kept = archived_bodies(state_location, "all")
    stored = [json.loads(body) for body in archived_bodies(state_location)]
    assert (len(kept), sum(map(len, kept))) == (10, everything["SizeBytes"])
    ids = {e["EventId"] for e in result["Entries"]}
    assert {event["id"] for event in stored} == ids
    # Readable after the pipeline stopped, as the CLI reads it.
    offline = await read_archives(state_location, "big")
    assert offline[0]["EventCount"] == 3


async def test_a_replay_puts_the_window_back_with_replay_name_and_is_not_archived(
    state_location: str,
) -> None:
    runtime = await archived(state_location)
    async with runtime:
        await runtime.put_events([entry(n, at=T0 + n) for n in range(10)])
        await runtime.wait_until_idle()
        first = received(runtime, "all-sink")
        started = await runtime.replays.start("r1", "all", T0 + 2, T0 + 6)
        assert started["State"] == "STARTING"
        described = await until_ended(runtime, "r1")
        archive = await runtime.archives.describe_archive("all")
        replayed = received(runtime, "all-sink")[len(first) :]
    assert len(first) == 10
    # [start, end): events of T0+2 .. T0+5, in event-time order.
    assert [e["detail"]["n"] for e in replayed] == [2, 3, 4, 5]
    assert all(e["replay-name"] == "r1" for e in replayed)
    assert [e["id"] for e in replayed] == [e["id"] for e in first[2:6]]
    assert described["State"] == "COMPLETED"
    assert described["EventsTotal"] == described["EventsReplayed"] == 4
    assert described["EventLastReplayedTime"] == "2023-11-14T22:13:25Z"
    assert described["ReplayEndTime"] is not None
    assert archive["EventCount"] == 10  # the replay did not archive itself again


async def test_a_replay_to_named_rules_reaches_only_those(state_location: str) -> None:
    runtime = await archived(state_location)
    async with runtime:
        await runtime.put_events([entry(n, at=T0 + n) for n in range(6)])
        await runtime.wait_until_idle()
        before = len(received(runtime, "all-sink")), len(received(runtime, "even-sink"))
        await runtime.replays.start("evens", "all", T0, T0 + 100, rules=["even"])
        await until_ended(runtime, "evens")
        after = len(received(runtime, "all-sink")), len(received(runtime, "even-sink"))
        described = await runtime.replays.describe("evens")
    assert before == (6, 3)
    assert after == (6, 6)  # "all" matches them too, but was not named
    assert described["Destination"]["FilterArns"] == ["even"]


async def test_replay_requests_are_checked_as_eventbridge_does(state_location: str) -> None:
    runtime = pipeline(state_location)
    runtime.bus().put_rule("nightly", schedule="rate(1 day)")
    await runtime.archives.create_archive("all")
    async with runtime:
        await runtime.replays.start("once", "all", T0, T0 + 1)
        await until_ended(runtime, "once")
        with pytest.raises(ReplayError) as exists:
            await runtime.replays.start("once", "all", T0, T0 + 1)
        assert exists.value.code == "ResourceAlreadyExistsException"
        with pytest.raises(ResourceNotFoundError, match="Archive nope does not exist"):
            await runtime.replays.start("r", "nope", T0, T0 + 1)
        with pytest.raises(ReplayError, match="EventStartTime must be before"):
            await runtime.replays.start("r", "all", T0, T0)
        with pytest.raises(ReplayError, match="schedule"):
            await runtime.replays.start("r", "all", T0, T0 + 1, rules=["nightly"])
        with pytest.raises(ResourceNotFoundError, match="Rule ghost"):
            await runtime.replays.start("r", "all", T0, T0 + 1, rules=["ghost"])
        with pytest.raises(ResourceNotFoundError, match="Event bus elsewhere"):
            await runtime.replays.start("r", "all", T0, T0 + 1, "elsewhere")
        with pytest.raises(ReplayError, match="speed"):
            await runtime.replays.start("r", "all", T0, T0 + 1, speed=0)
        with pytest.raises(ReplayError) as illegal:
            await runtime.replays.cancel("once")
        assert illegal.value.code == "IllegalStatusException"
        assert [r["ReplayName"] for r in await runtime.replays.list()] == ["once"]


async def test_a_cancelled_replay_stops_and_says_so(state_location: str) -> None:
    clock = ManualClock(T0 + 1000)
    runtime = await archived(state_location, clock)
    async with runtime:
        await runtime.put_events([entry(n, at=T0 + 60 * n) for n in range(5)])
        await runtime.wait_until_idle()
        # At the original pace the second event is a minute away.
        await runtime.replays.start("slow", "all", T0, T0 + 3600, speed=1)
        async with asyncio.timeout(5):
            while (await runtime.replays.describe("slow"))["EventsReplayed"] < 1:
                await asyncio.sleep(0.01)
        cancelling = await runtime.replays.cancel("slow")
        described = await until_ended(runtime, "slow")
    assert cancelling["State"] == "CANCELLING"
    assert described["State"] == "CANCELLED"
    assert described["EventsReplayed"] == 1
    assert described["EventsTotal"] == 5


async def test_speed_replays_at_the_original_pace_times_the_factor(state_location: str) -> None:
    clock = ManualClock(T0 + 1000)
    runtime = await archived(state_location, clock)
    async with runtime:
        await runtime.put_events([entry(n, at=T0 + 10 * n) for n in range(3)])
        await runtime.wait_until_idle()
        await runtime.replays.start("paced", "all", T0, T0 + 100, speed=2)

        async def replayed_after(seconds: float) -> int:
            await clock.advance(seconds, quiet=lambda: asyncio.sleep(0.05))
            return (await runtime.replays.describe("paced"))["EventsReplayed"]

        # Events 10 s apart, twice as fast: at 0, 5 and 10 s.
        assert await replayed_after(0) == 1
        assert await replayed_after(4.9) == 1
        assert await replayed_after(0.2) == 2
        assert await replayed_after(5) == 3
        assert (await until_ended(runtime, "paced"))["State"] == "COMPLETED"


async def test_a_running_replay_resumes_after_a_restart_without_repeating(
    state_location: str,
) -> None:
    state = state_location
    clock = ManualClock(T0 + 1000)
    runtime = pipeline(state, clock)
    await targets(runtime)
    await runtime.archives.create_archive("all")
    async with runtime:
        await runtime.put_events([entry(n, at=T0 + 60 * n) for n in range(4)])
        await runtime.wait_until_idle()
        await runtime.replays.start("long", "all", T0, T0 + 3600, speed=1)
        async with asyncio.timeout(5):
            while (await runtime.replays.describe("long"))["EventsReplayed"] < 2:
                await clock.advance(30, quiet=lambda: asyncio.sleep(0.02))
        first_run = [e for e in received(runtime, "all-sink") if "replay-name" in e]
    stopped = (await replay_status(state, "long"))[0]
    assert stopped["State"] == "RUNNING"  # resumes at the next start
    assert stopped["EventsReplayed"] == 2

    clock = ManualClock(T0 + 5000)
    again = pipeline(state, clock)
    await targets(again)
    await again.archives.create_archive("all")
    async with again:
        async with asyncio.timeout(5):
            while (await again.replays.describe("long"))["State"] == "RUNNING":
                await clock.advance(30, quiet=lambda: asyncio.sleep(0.02))
        described = await until_ended(again, "long")
        second_run = [e for e in received(again, "all-sink") if "replay-name" in e]
    ids = [e["id"] for e in first_run + second_run]
    assert len(ids) == len(set(ids)) == 4  # each archived event once, none twice
    assert [e["detail"]["n"] for e in first_run + second_run] == [0, 1, 2, 3]
    assert described["State"] == "COMPLETED"
    assert described["EventsReplayed"] == 4


async def test_retention_purges_old_events_and_their_counts(state_location: str) -> None:
    clock = ManualClock(T0)
    runtime = pipeline(state_location, clock)
    await runtime.archives.create_archive("week", retention_days=7)
    await runtime.archives.create_archive("forever", retention_days=0)
    async with runtime:
        await runtime.put_events([entry(n, at=T0 - 86400 * n) for n in range(10)])
        clock.jump(0.5 * 86400)
        purged = await runtime.archives.purge_now()
        week = await runtime.archives.describe_archive("week")
        forever = await runtime.archives.describe_archive("forever")
    # Older than 7 days at T0 + 12 h: the events of days 7, 8 and 9 before T0.
    assert purged == 3
    assert week["EventCount"] == 7
    assert forever["EventCount"] == 10
    assert week["SizeBytes"] < forever["SizeBytes"]


async def test_without_a_durable_intake_a_failed_archive_write_fails_the_entries_and_delivers_nothing(
    state_location: str,
) -> None:
    runtime = pipeline(state_location, durability="memory")
    await targets(runtime)
    await runtime.archives.create_archive("all")
    async with runtime:
        sql(state_location, "DROP TABLE archive_groups")  # the disk "breaks"
        result = await runtime.put_events([entry(1), entry(2)])
        await runtime.wait_until_idle()
        assert received(runtime, "all-sink") == []
    assert result["FailedEntryCount"] == 2
    assert {e["ErrorCode"] for e in result["Entries"]} == {"InternalFailure"}
    assert "archive write" in result["Entries"][0]["ErrorMessage"]


def events_inserted(statement: str, parameters: Any) -> int:
    """The events an ``ArchiveStore.insert`` statement writes: its rows'
    counts, bound as VALUES (archive, time, events, body per row) or in its
    JSON array of (archive, time, events, offset, length)."""
    if " VALUES " in statement:
        return sum(parameters[2::4])
    return sum(row[2] for row in json.loads(parameters[1]))


async def test_puts_that_come_while_an_archive_commit_runs_share_the_next_ones(
    tmp_path: Path,
) -> None:
    """With the memory intake, a put that finds the archive writer idle
    commits its rows at once, alone; puts that come while that commit runs
    wait and go in shared transactions after it, none of them alone first."""
    runtime = pipeline(str(tmp_path / "state.db"), durability="memory")
    await runtime.archives.create_archive("all")
    sizes: list[int] = []
    async with runtime:
        store = runtime.archives.store
        assert store is not None and isinstance(store.connection, SQLiteConnection)
        connection = store.connection

        def inserted(trip: Trip) -> None:  # on the connection's thread
            for step in trip.steps:
                if step.sql.startswith("INSERT INTO archive_groups"):
                    sizes.append(events_inserted(step.sql, step.parameters))

        connection.on_trip = inserted
        gate = threading.Event()
        blocked = connection.call(lambda db: gate.wait(10))
        first = asyncio.create_task(runtime.put_events([entry(0)]))
        await asyncio.sleep(0.05)  # its commit waits behind the gate
        rest = [asyncio.create_task(runtime.put_events([entry(n)])) for n in range(1, 9)]
        await asyncio.sleep(0.05)
        assert sizes == [] and not first.done()
        gate.set()
        await blocked
        results = await asyncio.gather(first, *rest)
        connection.on_trip = None
        described = await runtime.archives.describe_archive("all")
    assert [r["FailedEntryCount"] for r in results] == [0] * 9
    assert described["EventCount"] == 9
    # The first alone; the eight that came during its commit, the older half
    # of them first (see ``Archiver._take``).
    assert sizes[:2] == [1, 4] and sum(sizes) == 9


async def test_a_put_cancelled_during_its_own_archive_commit_leaves_no_unread_error(
    tmp_path: Path,
) -> None:
    """A lone put commits its archive rows itself; cancelled meanwhile, the
    commit still goes through on the database's thread, and the error its
    waiting was given (nobody waits any more) is not reported as unread."""
    runtime = pipeline(str(tmp_path / "state.db"), durability="memory")
    await runtime.archives.create_archive("all")
    reports: list[str] = []
    async with runtime:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: reports.append(context["message"]))
        store = runtime.archives.store
        assert store is not None and isinstance(store.connection, SQLiteConnection)
        gate = threading.Event()
        blocked = store.connection.call(lambda db: gate.wait(10))
        put = asyncio.create_task(runtime.put_events([entry(1)]))
        await asyncio.sleep(0.05)  # its commit waits behind the gate
        put.cancel()
        await asyncio.gather(put, return_exceptions=True)
        gate.set()
        await blocked
        del put
        gc.collect()
        await asyncio.sleep(0.05)
        described = await runtime.archives.describe_archive("all")
        later = await runtime.put_events([entry(2)])
        loop.set_exception_handler(None)
    assert reports == []
    assert later["FailedEntryCount"] == 0
    assert described["EventCount"] == 1


def count(state: Path | str, table: str) -> int:
    found: int = sql(state, f"SELECT count(*) FROM {table}")[0][0]
    return found


async def test_a_failed_archive_write_keeps_neither_its_archive_nor_its_intake_rows(
    state_location: str,
) -> None:
    """With a durable intake, an event's intake row and archive rows are one
    transaction: the archive refusing its rows refuses the intake's too."""
    state = state_location
    runtime = Runtime(state_path=state, plugins=plugin_manager())
    runtime.add_resource("held", "recorder", {"hold": True})
    runtime.bus().put_rule("all", pattern={"source": ["shop"]})
    await runtime.bus().put_targets("all", [{"id": "t", "resource": "held"}])
    await runtime.archives.create_archive("all")
    async with runtime:
        sql(state, "ALTER TABLE archive_groups RENAME TO away")  # the database refuses them
        refused = await runtime.put_events([entry(1), entry(2)])
        # The events are held by their target, unsettled: had their intake
        # rows been committed apart, they would be there.
        refused_rows = count(state, "intake")
        sql(state, "ALTER TABLE away RENAME TO archive_groups")
        again = await runtime.put_events([entry(3)])
        kept_rows = count(state, "intake")
        sink = runtime.resource("held")
        assert isinstance(sink, Recorder)
        sink.release()
        await runtime.wait_until_idle()
        described = await runtime.archives.describe_archive("all")
    assert refused["FailedEntryCount"] == 2
    assert {e["ErrorCode"] for e in refused["Entries"]} == {"InternalFailure"}
    assert "archive rows" in refused["Entries"][0]["ErrorMessage"]
    assert refused_rows == 0
    assert again["FailedEntryCount"] == 0  # a past failure refuses nothing more
    assert kept_rows == 1
    assert described["EventCount"] == 1
    assert count(state, "intake") == 0  # settled since


async def test_archive_declarations_are_checked(state_location: str) -> None:
    runtime = pipeline(state_location)
    with pytest.raises(ConfigError, match="durability"):
        await runtime.archives.create_archive("a", durability="sometimes")
    with pytest.raises(ConfigError, match="retention_days"):
        await runtime.archives.create_archive("a", retention_days=-1)
    with pytest.raises(ConfigError, match="did you mean 'pattern'"):
        await runtime.archives.create_archive("a", patern={})
    with pytest.raises(ConfigError, match="48 characters"):
        await runtime.archives.create_archive("a" * 49)
    with pytest.raises(PatternError):
        await runtime.archives.create_archive("a", pattern={"source": "not-a-list"})
    with pytest.raises(ResourceNotFoundError):
        await runtime.archives.create_archive("a", bus="nowhere")
    memory = Runtime()
    await memory.archives.create_archive("a")
    with pytest.raises(StateError, match="state database"):
        await memory.start()


@pytest.mark.parametrize("durability", ["durable", "memory"])
async def test_strict_durability_commits_with_synchronous_full(
    tmp_path: Path, durability: str
) -> None:
    """The archive rows of a strict archive are committed with SQLite's
    synchronous=FULL, the others at NORMAL: seen in the statements the
    writing connection runs (the intake's when durable, else the archive
    store's). SQLite only: PostgreSQL syncs every commit."""
    runtime = pipeline(tmp_path / "state.db", durability=durability)
    await runtime.archives.create_archive("normal")
    await runtime.archives.create_archive(
        "strict", durability="strict", pattern={"detail": {"n": [1]}}
    )
    statements: list[str] = []
    async with runtime:
        store = runtime.intake.store if runtime.intake is not None else runtime.archives.store
        assert store is not None and isinstance(store.connection, SQLiteConnection)
        await store.connection.call(sqlite3.Connection.set_trace_callback, statements.append)
        for n in (0, 1, 0):
            await runtime.put_events([entry(n)])
        await store.connection.call(sqlite3.Connection.set_trace_callback, None)
        counts = [
            (await runtime.archives.describe_archive(a))["EventCount"] for a in ("normal", "strict")
        ]
    assert levels_of_archive_commits(statements) == ["NORMAL", "FULL", "NORMAL"]
    assert counts == [3, 1]


def levels_of_archive_commits(statements: list[str]) -> list[str]:
    """The synchronous level of each commit that held archive rows: an
    INSERT outside BEGIN ... COMMIT commits alone. (SQLite traces a
    statement again for each trigger it fires: repeats are one statement.)"""
    level, levels, archiving, previous = "NORMAL", [], None, ""
    for statement in statements:
        if statement == previous:
            continue
        previous = statement
        if statement.startswith("PRAGMA synchronous="):
            level = statement.removeprefix("PRAGMA synchronous=")
        elif statement == "BEGIN IMMEDIATE":
            archiving = False
        elif statement.startswith("INSERT INTO archive_groups"):
            if archiving is None:
                levels.append(level)
            else:
                archiving = True
        elif statement == "COMMIT":
            if archiving:
                levels.append(level)
            archiving = None
    return levels


async def test_a_durable_put_archives_in_the_intakes_transaction(tmp_path: Path) -> None:
    """One commit per durable put: the intake's rows and the archive's rows
    in one transaction on the intake's connection; the archive store's own
    connection writes no event. (SQLite only: seen through SQLite's trace of
    statements; ``test_a_failed_archive_write_keeps_neither...`` shows the
    one transaction on both engines.)"""
    runtime = pipeline(tmp_path / "state.db")
    # Held: the events are not settled when their rows are written (an
    # event settled before that is not written at all).
    runtime.add_resource("held", "recorder", {"hold": True})
    await runtime.bus().put_targets("all", [{"id": "t", "resource": "held"}])
    await runtime.archives.create_archive("all")
    intake_side: list[str] = []
    archive_side: list[str] = []
    async with runtime:
        assert runtime.intake is not None and runtime.archives.store is not None
        connections = [runtime.intake.store.connection, runtime.archives.store.connection]
        assert all(isinstance(c, SQLiteConnection) for c in connections)
        intake, archive = cast("list[SQLiteConnection]", connections)
        await intake.call(sqlite3.Connection.set_trace_callback, intake_side.append)
        await archive.call(sqlite3.Connection.set_trace_callback, archive_side.append)
        result = await runtime.put_events([entry(1), entry(2), entry(3)])
        await intake.call(sqlite3.Connection.set_trace_callback, None)
        await archive.call(sqlite3.Connection.set_trace_callback, None)
        described = await runtime.archives.describe_archive("all")
        held = runtime.resource("held")
        assert isinstance(held, Recorder)
        held.release()
    assert result["FailedEntryCount"] == 0
    assert described["EventCount"] == 3
    assert not [sql for sql in archive_side if "archive_groups" in sql]
    holding = [t for t in transactions(intake_side) if "INSERT INTO intake" in t]
    assert len(holding) == 1
    assert "INSERT INTO archive_groups" in holding[0]


def transactions(statements: list[str]) -> list[str]:
    """The statements between each BEGIN and its COMMIT, joined."""
    found, current = [], None
    for statement in statements:
        if statement.startswith("BEGIN"):
            current = []
        elif statement == "COMMIT" and current is not None:
            found.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(statement)
    return found


async def test_a_reload_adds_archives_and_a_dropped_one_keeps_its_events(
    tmp_path: Path, state_location: str
) -> None:
    from pipelines.config import build_runtime, load_config
    from pipelines.reload import reload

    def config(text: str) -> Any:
        path = tmp_path / "p.yaml"
        path.write_text(f"state: state.db\n{text}")
        return load_config(path)

    first = config("archives: {old: {}}\n")
    runtime = await build_runtime(first, state_path=state_location)
    async with runtime:
        await runtime.put_events([entry(1)])
        second = config("archives: {new: {pattern: {detail: {n: [2]}}}}\n")
        summary = await reload(runtime, first, second)
        await runtime.put_events([entry(1), entry(2)])
        archives = {a["ArchiveName"]: a for a in await runtime.archives.list_archives()}
    assert str(summary) == "added: archive new; removed: archive old"
    assert (archives["old"]["State"], archives["old"]["EventCount"]) == ("DISABLED", 1)
    assert (archives["new"]["State"], archives["new"]["EventCount"]) == ("ENABLED", 1)


async def test_a_replay_through_a_tiny_intake_puts_each_event_once(state_location: str) -> None:
    runtime = Runtime(
        state_path=state_location, plugins=plugin_manager(), limits=Limits(intake_size=3)
    )
    runtime.add_resource("all-sink", "recorder", {})
    runtime.bus().put_rule("all", pattern={"source": ["shop"]})
    await runtime.bus().put_targets("all", [{"id": "t", "resource": "all-sink"}])
    await runtime.archives.create_archive("all")
    async with runtime:
        await runtime.put_events([entry(n, at=T0 + n) for n in range(25)])
        await runtime.wait_until_idle()
        await runtime.replays.start("r", "all", T0, T0 + 100)
        described = await until_ended(runtime, "r")
        replayed = [e["detail"]["n"] for e in received(runtime, "all-sink") if "replay-name" in e]
    assert replayed == list(range(25))
    assert described["EventsReplayed"] == 25


async def test_a_failing_replay_fails_alone_and_the_pipeline_goes_on(state_location: str) -> None:
    runtime = await archived(state_location)
    async with runtime:
        sql(state_location, "ALTER TABLE archive_groups RENAME TO gone")
        await runtime.replays.start("r", "all", T0, T0 + 100)
        described = await until_ended(runtime, "r")
        result = await runtime.put_events([{**entry(1), "EventBusName": "default"}])
        await runtime.wait_until_idle()
        assert runtime.running
    assert described["State"] == "FAILED"
    # SQLite's words, or PostgreSQL's.
    assert re.search("no such table|does not exist", described["StateReason"])
    assert result["FailedEntryCount"] == 1  # the archive write fails: reported, not delivered


async def test_two_starts_of_one_name_at_once_make_one_replay(state_location: str) -> None:
    runtime = await archived(state_location)
    async with runtime:
        await runtime.put_events([entry(n, at=T0 + n) for n in range(3)])
        await runtime.wait_until_idle()
        outcomes = await asyncio.gather(
            runtime.replays.start("twice", "all", T0, T0 + 10),
            runtime.replays.start("twice", "all", T0, T0 + 10),
            return_exceptions=True,
        )
        await until_ended(runtime, "twice")
        replayed = [e for e in received(runtime, "all-sink") if "replay-name" in e]
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], ReplayError)
    assert errors[0].code == "ResourceAlreadyExistsException"
    assert len(replayed) == 3


async def test_out_of_range_replay_times_and_bad_settings_are_refused(state_location: str) -> None:
    runtime = pipeline(state_location)
    await runtime.archives.create_archive("all")
    with pytest.raises(ConfigError, match="durability"):
        await runtime.archives.create_archive("x", durability=["strict"])
    async with runtime:
        for start, end in ((T0, float("inf")), (-1e15, T0), (float("nan"), T0)):
            with pytest.raises(ReplayError, match="is not a time"):
                await runtime.replays.start("r", "all", start, end)
        with pytest.raises(ReplayError, match="list of rule names"):
            await runtime.replays.start("r", "all", T0, T0 + 1, rules="all")  # type: ignore[arg-type]
        assert await runtime.replays.list() == []


async def test_size_counts_bytes_and_early_years_are_archived(state_location: str) -> None:
    runtime = pipeline(state_location)
    await runtime.archives.create_archive("all")
    async with runtime:
        accented = {"Source": "shop", "DetailType": "t", "Detail": json.dumps({"s": "é" * 100})}
        await runtime.put_events([accented])
        one = await runtime.archives.describe_archive("all")
        early = await runtime.put_events([{**entry(1), "Time": "0702-01-01T00:00:00Z"}])
        both = await runtime.archives.describe_archive("all")
    stored = archived_bodies(state_location)[0]
    assert isinstance(stored, bytes)
    assert one["SizeBytes"] == len(stored) and stored.count("é".encode()) == 100
    assert early["FailedEntryCount"] == 0
    assert both["EventCount"] == 2
    assert both["OldestEventTime"] == "0702-01-01T00:00:00Z"


@pytest.mark.parametrize("spread", [0, 10])
async def test_events_of_one_archive_and_second_share_rows_and_read_back_one_by_one(
    state_location: str, spread: int
) -> None:
    """A commit's events of one archive and one event time are one row, up
    to GROUP_EVENTS; replay reads them back one by one in put order, from
    any position, a position inside a row included. An event whose JSON
    holds a newline (the rows are JSON lines) is a row of its own. With
    ``spread``, an archive "c" adds that many rows of a second each, which
    takes the commit past VALUES_ROWS (its rows go as a JSON array)."""
    from pipelines.archive import GROUP_EVENTS, VALUES_ROWS, ArchiveSpec, ArchiveStore

    mine = [json.dumps({"n": n}).encode() for n in range(2 * GROUP_EVENTS + 50)]
    mine[120] = b'{"text":"two\nlines"}'
    others = [json.dumps({"other": n}).encode() for n in range(25)]
    rows = []
    for n, body in enumerate(mine):
        rows.append(("a", T0, body))
        if n % 10 == 0:
            rows.append(("b", T0, others[n // 10]))
    early = b'{"early":true}'
    rows.append(("a", T0 - 1, early))
    spread_out = [json.dumps({"c": n}).encode() for n in range(spread)]
    rows += [("c", T0 + n, body) for n, body in enumerate(spread_out)]
    statements = ArchiveStore.insert(rows, ArchiveStore().dialect)
    assert (" VALUES " in statements[0].sql) == (7 + spread <= VALUES_ROWS)
    async with await ArchiveStore.open(state_location) as store:
        for name in ("a", "b", "c"):
            await store.save_archive(ArchiveSpec.parse(name, {}), T0)
        await store.append(rows, strict=False)
        described = await store.describe("a")
        read: list[bytes] = []
        position = (T0 - 2.0, 0, 0)
        while chunk := await store.read("a", position, T0 + 1, 64):
            assert len(chunk) <= 64
            read.extend(body for *_, body in chunk)
            position = chunk[-1][:3]
        counted = await store.count("a", T0, T0 + 1)
        purged = await store.purge("a", T0)
        after = await store.describe("a")
    sizes = sql(
        state_location,
        "SELECT archive, events FROM archive_groups WHERE archive <> 'c' ORDER BY seq",
    )
    # a: 100, then 20 until the newline, it alone, 100, 29; b: its 25 in one (early: purged).
    assert sizes == [
        ("a", 100),
        ("b", 25),
        ("a", 20),
        ("a", 1),
        ("a", 100),
        ("a", 29),
    ]
    assert read == [early, *mine]
    assert (described["EventCount"], described["SizeBytes"]) == (
        251,
        len(early) + sum(map(len, mine)),
    )
    assert counted == 250 and purged == 1
    assert (after["EventCount"], after["SizeBytes"]) == (250, sum(map(len, mine)))
    assert archived_bodies(state_location, "b") == others
    assert archived_bodies(state_location, "c") == spread_out


async def run_script(location: str, script: str) -> None:
    """DDL run on a state database from outside the stores, on either engine."""
    from pipelines.store import backend_for, location_of

    where = location_of(location)
    raw = await backend_for(where).connect(where, create=True, functions={})
    try:
        await raw.script(script)
    finally:
        await raw.close()


async def test_version_1_replays_migrate_forward_and_can_be_claimed(state_location: str) -> None:
    """A state database of archives version 1 (replays without an owner)
    comes up to this version; its running replay is free to claim."""
    from pipelines.archive import REPLAY_COLUMNS, ArchiveStore

    from .archive_v2 import STORE_VERSIONS, V1_TABLES

    await run_script(state_location, STORE_VERSIONS + V1_TABLES)
    sql(state_location, "INSERT INTO store_versions VALUES ('archives', 1, 0)")
    sql(
        state_location,
        "INSERT INTO replays VALUES ('old', 'all', 'default', NULL, ?, ?, NULL, '', 'RUNNING',"
        " '', 0, 0, ?, 0, NULL, NULL, NULL)",
        (T0, T0 + 60, T0 - 1),
    )
    async with await ArchiveStore.open(state_location) as store:
        version = "SELECT version FROM store_versions WHERE store = 'archives'"
        assert await store.scalar(version) == ArchiveStore.version
        assert await store.replay_owners() == {"old": (None, None)}
        assert await store.claim_replay("old", "me", T0, T0 + 60)
        assert (await store.replays("old"))[0][REPLAY_COLUMNS.index("state")] == "RUNNING"


def v2_event(n: int, moment: float) -> bytes:
    return json.dumps(
        {
            "version": "0",
            "id": f"v2-{n}",
            "detail-type": "t",
            "source": "shop",
            "account": "123456789012",
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment)),
            "region": "us-east-1",
            "resources": [],
            "detail": {"n": n},
        },
        separators=(",", ":"),
    ).encode()


async def test_a_version_2_archive_comes_up_whole_and_its_replay_resumes_where_it_was(
    state_location: str,
) -> None:
    """Version 2 kept one event a row in ``archive_events``. Opened by this
    version, its rows are the single-event rows of ``archive_groups``, its
    counts stand, and a replay that was RUNNING resumes after the event it
    had reached, not at it. A version 2 process that opens the file later
    puts its tables and triggers back (it runs its DDL before it refuses
    the version): they count nothing of this version's writes."""
    from pipelines.archive import ArchiveStore

    from .archive_v2 import STORE_VERSIONS, V2_TABLES, V2_TRIGGERS

    engine = "postgresql" if state_location.startswith("postgresql") else "sqlite"
    old_ddl = V2_TABLES + V2_TRIGGERS[engine]
    await run_script(state_location, STORE_VERSIONS + old_ddl)
    sql(state_location, "INSERT INTO store_versions VALUES ('archives', 2, 0)")
    sql(
        state_location,
        "INSERT INTO archives (name, bus, pattern, retention_days, durability, description,"
        " state, created) VALUES ('all', 'default', NULL, 0, 'normal', '', 'ENABLED', ?)",
        (T0,),
    )
    times = [T0, T0, T0 + 1, T0 + 1, T0 + 2]
    bodies = [v2_event(n, moment) for n, moment in enumerate(times)]
    for moment, body in zip(times, bodies, strict=True):
        sql(
            state_location,
            "INSERT INTO archive_events (archive, time, body) VALUES ('all', ?, ?)",
            (moment, body),
        )
    [(third,)] = sql(state_location, "SELECT seq FROM archive_events ORDER BY seq LIMIT 1 OFFSET 2")
    # Three events replayed: the position is the third's row.
    sql(
        state_location,
        "INSERT INTO replays VALUES ('old', 'all', 'default', NULL, ?, ?, NULL, '', 'RUNNING',"
        " '', 5, 3, ?, ?, ?, ?, NULL, NULL, NULL)",
        (T0, T0 + 60, T0 + 1, third, T0 + 1, T0 + 500),
    )

    runtime = await archived(state_location)
    async with runtime:
        described = await until_ended(runtime, "old")
        info = await runtime.archives.describe_archive("all")
    assert described["State"] == "COMPLETED"
    assert described["EventsReplayed"] == 5
    assert [p["detail"]["n"] for p in received(runtime, "all-sink")] == [3, 4]
    assert (info["EventCount"], info["SizeBytes"]) == (5, sum(map(len, bodies)))
    assert archived_bodies(state_location) == bodies
    if engine == "sqlite":
        triggers = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
    else:
        triggers = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
        [(functions,)] = sql(
            state_location, "SELECT count(*) FROM pg_proc WHERE proname = 'archive_events_counted'"
        )
        assert functions == 0
    assert {name for (name,) in sql(state_location, triggers)} <= {
        "archive_groups_added",
        "archive_groups_removed",
        "archive_events_moved",  # refuses version 2's writes (MOVED_GUARD)
    }

    await run_script(state_location, old_ddl)  # a version 2 process opens the file
    later = [v2_event(n, T0 + 3) for n in range(5, 8)]
    async with await ArchiveStore.open(state_location) as store:
        await store.append([("all", T0 + 3, body) for body in later], strict=False)
        grown = await store.describe("all")
        purged = await store.purge("all", T0 + 2.5)
        left = await store.describe("all")
    assert archived_bodies(state_location) == later
    assert (grown["EventCount"], grown["SizeBytes"]) == (8, sum(map(len, bodies + later)))
    assert purged == 5
    assert (left["EventCount"], left["SizeBytes"]) == (3, sum(map(len, later)))


async def test_a_replay_whose_owner_holds_a_lease_is_free_only_on_sqlite(
    state_location: str,
) -> None:
    """A SQLite file has one runner: a replay's owner is a process that ended
    (it crashed before its lease did), and the restarted runner resumes it at
    once. On PostgreSQL the owner may be another runner, alive: it waits."""
    from pipelines.archive import ArchiveStore
    from pipelines.replay import Replay

    async with await ArchiveStore.open(state_location) as store:
        row = Replay("r", "all", "default", None, T0, T0 + 60, None).row()
        assert await store.create_replay(row, "crashed", T0 + 60)
        taken = await store.claim_replay("r", "restarted", T0, T0 + 60)
    assert taken == (not state_location.startswith("postgresql://"))


async def test_a_read_of_one_event_after_a_rows_last_goes_on_to_the_next_row(
    state_location: str,
) -> None:
    """``read`` returns nothing only at the end of the window: with a limit
    of one and the position at the last event of its row (which the row
    query counts among its ``limit`` rows), the next row's event comes."""
    from pipelines.archive import ArchiveSpec, ArchiveStore

    first = [b'{"n":0}', b'{"n":1}']
    second = b'{"n":2}'
    async with await ArchiveStore.open(state_location) as store:
        await store.save_archive(ArchiveSpec.parse("a", {}), T0)
        await store.append([("a", T0, body) for body in first], strict=False)
        await store.append([("a", T0, second)], strict=False)
        read: list[bytes] = []
        position = (T0 - 1.0, 0, 0)
        while chunk := await store.read("a", position, T0 + 1, 1):
            assert len(chunk) == 1
            read.append(chunk[0][3])
            position = chunk[0][:3]
    assert read == [*first, second]


def test_a_row_holds_at_most_group_bytes_with_its_newlines() -> None:
    """GROUP_BYTES bounds a row's body, the newlines between its events
    included: two events whose JSON adds up to exactly GROUP_BYTES do not
    fit in one row (with the newline it would be one byte over)."""
    from pipelines.archive import GROUP_BYTES, grouped

    half = GROUP_BYTES // 2
    first = b'"' + b"a" * (half - 2) + b'"'
    second = b'"' + b"b" * (GROUP_BYTES - half - 2) + b'"'
    fits = b'"' + b"c" * (GROUP_BYTES - half - 3) + b'"'
    assert len(first) + len(second) == GROUP_BYTES
    apart = grouped([("a", T0, first), ("a", T0, second)])
    together = grouped([("a", T0, first), ("a", T0, fits)])
    assert [events for *_, events in apart] == [[first], [second]]
    assert [events for *_, events in together] == [[first, fits]]
    assert len(b"\n".join([first, fits])) == GROUP_BYTES


async def test_after_the_version_3_rename_a_version_2_writer_fails_even_once_its_ddl_ran_again(
    state_location: str,
) -> None:
    """A runner of version 2 still running when version 3 renames its table
    must see its archive writes fail (its puts answer InternalFailure), not
    succeed into a table no one reads, even after a process of version 2
    opened the database and ran its DDL (``CREATE TABLE IF NOT EXISTS
    archive_events``): the migration leaves a table of that name that
    refuses every insert, naming what happened."""
    from pipelines.archive import ArchiveSpec, ArchiveStore

    from .archive_v2 import STORE_VERSIONS, V2_TABLES, V2_TRIGGERS

    engine = "postgresql" if state_location.startswith("postgresql") else "sqlite"
    old_ddl = V2_TABLES + V2_TRIGGERS[engine]
    await run_script(state_location, STORE_VERSIONS + old_ddl)
    sql(state_location, "INSERT INTO store_versions VALUES ('archives', 2, 0)")
    async with await ArchiveStore.open(state_location) as store:
        await store.save_archive(ArchiveSpec.parse("all", {}), T0)
    await run_script(state_location, old_ddl)  # a version 2 process opens the file
    body = v2_event(1, T0)
    # What the version 2 runner's archive write does (one event a row).
    with pytest.raises(Exception, match="archive_groups since archives version 3"):
        sql(
            state_location,
            "INSERT INTO archive_events (archive, time, body) VALUES ('all', ?, ?)",
            (T0, body),
        )
    [(count,)] = sql(state_location, "SELECT event_count FROM archives WHERE name = 'all'")
    assert count == 0
    async with await ArchiveStore.open(state_location) as store:
        await store.append([("all", T0, body)], strict=False)
        described = await store.describe("all")
    assert (described["EventCount"], described["SizeBytes"]) == (1, len(body))
    assert archived_bodies(state_location) == [body]


async def test_a_purge_transaction_deletes_at_most_purge_batch_events(
    state_location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention deletes PURGE_BATCH events a transaction, however many a
    row holds (a batch of PURGE_BATCH rows of GROUP_EVENTS each would hold
    writers up GROUP_EVENTS times longer), and goes on until none is left."""
    from pipelines import archive
    from pipelines.archive import GROUP_EVENTS, ArchiveSpec, ArchiveStore

    monkeypatch.setattr(archive, "PURGE_BATCH", 250)
    # Three full rows, then a row of 7, all old; one recent event stays.
    old = [("a", float(T0 + n // GROUP_EVENTS), b'{"n":%d}' % n) for n in range(307)]
    async with await ArchiveStore.open(state_location) as store:
        await store.save_archive(ArchiveSpec.parse("a", {}), T0)
        await store.append([*old, ("a", T0 + 10.0, b'{"new":1}')], strict=False)
        first = await store.purge_batch("a", T0 + 5)
        rest = await store.purge("a", T0 + 5)
        described = await store.describe("a")
    assert first == 200  # two rows: the third would make 300
    assert rest == 107
    assert (described["EventCount"], described["SizeBytes"]) == (1, len(b'{"new":1}'))
