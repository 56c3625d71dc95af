"""StatesStore on both engines: machines and revisions, executions written
only by their owner, claims by lease, history, task tokens."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pipelines.clock import ManualClock
from plugins.states.history import HistoryEvent
from plugins.states.store import RUNNING, SUCCEEDED, ExecutionRecord, StatesStore

from .helpers import sql

ARN = "arn:aws:states:us-east-1:000000000000:stateMachine:flow"


def _record(name: str, started: float = 0.0) -> ExecutionRecord:
    return ExecutionRecord(
        f"{ARN.replace('stateMachine', 'execution')}:{name}", "flow", name, RUNNING, "{}",
        None, None, None, started, None, 0, 1, "role", None, None, 0,
    )  # fmt: skip


def _events(first: int, count: int) -> list[HistoryEvent]:
    return [
        HistoryEvent(i, i - 1, float(i), "PassStateEntered", {"name": f"S{i}"})
        for i in range(first, first + count)
    ]


async def test_a_changed_definition_is_a_new_revision_and_the_old_one_stays(
    state_location: str,
) -> None:
    async with await StatesStore.open(state_location, ManualClock()) as store:
        first = await store.put_machine("flow", ARN, '{"v": 1}', "STANDARD", "role")
        same = await store.put_machine("flow", ARN, '{"v": 1}', "STANDARD", "role")
        changed = await store.put_machine("flow", ARN, '{"v": 2}', "STANDARD", "role")
        assert (first.revision, same.revision, changed.revision) == (1, 1, 2)
        assert await store.definition("flow", 1) == '{"v": 1}'
        assert await store.definition("flow", 2) == '{"v": 2}'
        assert [m.name for m in await store.machines()] == ["flow"]


async def test_only_the_owner_writes_a_transition_and_one_claim_wins(
    state_location: str,
) -> None:
    clock = ManualClock(start=1000.0)
    async with await StatesStore.open(state_location, clock) as store:
        record = _record("e1", clock.time())
        assert await store.create_execution(record, "a", lease=1060.0)
        assert not await store.create_execution(record, "b", lease=1060.0)  # one ARN
        assert await store.transition(record.arn, "a", 1060.0, _events(1, 3), {"at": 3}) == ""
        # another runner writes nothing: not its execution
        assert await store.transition(record.arn, "b", 1060.0, _events(4, 2), {"at": 5}) is None
        assert [e.id for e in await store.history(record.arn)] == [1, 2, 3]
        stored = await store.execution(record.arn)
        assert stored is not None and stored.checkpoint == {"at": 3} and stored.last_event == 3
        # a claim while the owner's lease holds: refused on PostgreSQL (another
        # runner may be alive); a SQLite file has one runner, so its owner is gone
        shared = state_location.startswith("postgresql://")
        assert await store.claim(record.arn, "b", 1030.0, 1090.0) is not shared
        if shared:
            assert await store.claimable(["flow"], "b", 1030.0) == []
            assert await store.claimable(["flow"], "b", 1061.0) == [record.arn]
            assert await store.claim(record.arn, "b", 1061.0, 1121.0)
        # the old owner has lost it: its writes change nothing
        assert await store.transition(record.arn, "a", 1200.0, _events(4, 1), {"at": 4}) is None
        assert not await store.finish(record.arn, "a", [], SUCCEEDED, "1", None, None, 1100.0)
        assert await store.finish(record.arn, "b", _events(4, 1), SUCCEEDED, "1", None, None, 1100)
        done = await store.execution(record.arn)
        assert done is not None and (done.status, done.output, done.checkpoint) == (
            SUCCEEDED,
            "1",
            None,
        )
        assert await store.owner(record.arn) == (None, None)
        assert await store.claimable(["flow"], "c", 2000.0) == []  # ended: nothing to run


async def test_a_transition_is_one_transaction_of_events_and_checkpoint(
    state_location: str,
) -> None:
    async with await StatesStore.open(state_location, ManualClock()) as store:
        record = _record("e2")
        await store.create_execution(record, "a", lease=1e12)
        await store.transition(record.arn, "a", 1e12, _events(1, 2), {"at": 2})
        # event 2 again (a bug, or another writer): the whole transition is refused
        with pytest.raises(Exception):  # noqa: B017 - either engine's integrity error
            await store.transition(record.arn, "a", 1e12, _events(2, 2), {"at": 3})
        stored = await store.execution(record.arn)
        assert stored is not None and stored.checkpoint == {"at": 2}
        assert [e.id for e in await store.history(record.arn)] == [1, 2]


async def test_writes_at_one_moment_share_a_trip_and_a_failing_one_fails_alone(
    state_location: str,
) -> None:
    async with await StatesStore.open(state_location, ManualClock()) as store:
        records = [_record(f"g{i}") for i in range(6)]
        trips: list[int] = []
        batch = store.batch

        async def counted(steps: Any, **options: Any) -> Any:
            trips.append(len(steps))
            return await batch(steps, **options)

        store.batch = counted  # type: ignore[method-assign]
        made = await asyncio.gather(*(store.create_execution(r, "a", 1e12) for r in records))
        assert made == [True] * 6 and len(trips) == 1
        trips.clear()
        written = await asyncio.gather(
            *(store.transition(r.arn, "a", 1e12, _events(1, 3), {"at": 3}) for r in records)
        )
        assert written == [""] * 6 and trips == [12]  # 6 x (events, checkpoint)
        trips.clear()
        # event 3 again for g0 (a bug): its trip fails, each write goes again alone
        outcomes = await asyncio.gather(
            *(
                store.transition(r.arn, "a", 1e12, _events(3 if i == 0 else 4, 2), {"at": 5})
                for i, r in enumerate(records)
            ),
            return_exceptions=True,
        )
        assert isinstance(outcomes[0], Exception) and outcomes[1:] == [""] * 5
        assert trips == [12] + [2] * 6
        assert [e.id for e in await store.history(records[0].arn)] == [1, 2, 3]
        assert [e.id for e in await store.history(records[1].arn)] == [1, 2, 3, 4, 5]


async def test_history_events_are_read_back_as_written(state_location: str) -> None:
    async with await StatesStore.open(state_location, ManualClock()) as store:
        record = _record("h1")
        await store.create_execution(record, "a", lease=1e12)
        details: dict[str, Any] = {"zeta": "ünïcode ✓ '%s' \\", "alpha": [1, 2.5, None], "b": {}}
        events = [
            HistoryEvent(1, 0, 1700000000.123456, "ExecutionStarted", details),
            HistoryEvent(2, 0, 1700000000.5, "PassStateEntered", None),
        ]
        await store.transition(record.arn, "a", 1e12, events, {"at": 2})
        found = await store.history(record.arn)
        assert found == events and list(found[0].details or {}) == ["zeta", "alpha", "b"]


async def test_a_stop_asked_by_another_runner_reaches_the_owner(state_location: str) -> None:
    async with await StatesStore.open(state_location, ManualClock()) as store:
        record = _record("e3")
        await store.create_execution(record, "a", lease=1e12)
        assert await store.request_abort(record.arn, "Stop", "asked")
        asked = await store.transition(record.arn, "a", 1e12, _events(1, 1), {"at": 1})
        assert asked is not None and '"Stop"' in asked
        assert await store.renew("a", 1e12) == {record.arn: asked}


async def test_the_first_answer_to_a_token_wins(state_location: str) -> None:
    clock = ManualClock(start=50.0)
    async with await StatesStore.open(state_location, clock) as store:
        await store.add_token("tok", "exec", "T")
        assert await store.beat_token("tok")
        assert await store.answer_token("tok", '{"ok": 1}', None, None)
        assert not await store.answer_token("tok", None, "Late", "too late")
        assert not await store.beat_token("tok")
        found = await store.token("tok")
        assert found is not None and (found.status, found.output) == ("answered", '{"ok": 1}')
        assert not await store.answer_token("unknown", "1", None, None)


async def test_executions_are_listed_newest_first(state_location: str) -> None:
    async with await StatesStore.open(state_location, ManualClock()) as store:
        for index in range(3):
            await store.create_execution(_record(f"n{index}", float(index)), "a", 1e12)
        listed = await store.executions("flow")
        assert [r.name for r in listed] == ["n2", "n1", "n0"]
        assert [r.name for r in await store.executions("flow", RUNNING, limit=1)] == ["n2"]
    rows = sql(state_location, "SELECT version FROM store_versions WHERE store = 'states'")
    assert rows == [(3,)]


async def test_a_version_1_database_gains_the_api_s_columns(tmp_path: object) -> None:
    """Version 2 added which machines the stepfunctions API made, and their tags."""
    import sqlite3
    from pathlib import Path

    path = Path(str(tmp_path)) / "state.db"
    async with await StatesStore.open(path, ManualClock()) as store:
        await store.put_machine("old", "arn:old", '{"StartAt": "A"}', "STANDARD", "role")
    with sqlite3.connect(path) as db:  # as version 1 left it
        db.execute("ALTER TABLE sfn_machines DROP COLUMN origin")
        db.execute("ALTER TABLE sfn_machines DROP COLUMN tags")
        db.execute("UPDATE store_versions SET version = 1 WHERE store = 'states'")
    async with await StatesStore.open(path, ManualClock()) as store:
        await store.mark_api("old")
        await store.set_tags("old", {"team": "shop"})
        assert [m.name for m in await store.made_by_api()] == ["old"]
        assert await store.tags("old") == {"team": "shop"}
    assert sql(str(path), "SELECT version FROM store_versions WHERE store = 'states'") == [(3,)]
