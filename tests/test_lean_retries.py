"""Pending retries are lean and saved in groups (issue 25): many failures
share few commits, a waiting retry holds its key and not its event, and the
event read back when the retry is due is the right one, also after a restart."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pipelines.clock import ManualClock
from pipelines.delivery import Delivery, Job
from pipelines.runtime import Runtime
from pipelines.state import LoadedRow, StateDB

from .test_bus import eventually, make_runtime, recorder, routed


def order(n: int) -> dict[str, Any]:
    return {"Source": "shop", "DetailType": "o", "Detail": json.dumps({"n": n})}


def rows(state: Path) -> list[tuple[str, int, dict[str, Any]]]:
    """The pending rows in the file: (key, attempts, detail), by key."""
    with sqlite3.connect(state) as db:
        found = db.execute("SELECT key, attempts, event FROM pending_deliveries").fetchall()
    return sorted((key, attempts, json.loads(event)["detail"]) for key, attempts, event in found)


def store(runtime: Runtime) -> StateDB:
    writer = runtime.deliverer.pending
    assert writer is not None
    return writer.store


async def failing(runtime: Runtime, settings: dict[str, Any]) -> Runtime:
    runtime.add_resource("down", "recorder", settings)
    return await routed(runtime, [{"id": "t", "resource": "down"}])


async def put(runtime: Runtime, count: int) -> None:
    """``count`` events, ten per call as PutEvents takes them, all at once."""
    calls = [
        runtime.put_events([order(n) for n in range(first, min(first + 10, count))])
        for first in range(0, count, 10)
    ]
    results = await asyncio.gather(*calls)
    assert all(result["FailedEntryCount"] == 0 for result in results)


async def test_many_failures_share_few_commits(tmp_path: Path) -> None:
    runtime = await failing(
        make_runtime(state_path=tmp_path / "state.db"), {"fail": -1, "concurrency": 100}
    )
    async with runtime:
        await put(runtime, 400)
        await runtime.wait_until_idle()
        assert len(runtime.deliverer.retries) == 400
        writes = store(runtime).pending_writes
    saved = rows(tmp_path / "state.db")
    assert len(saved) == 400
    assert sorted(detail["n"] for _, _, detail in saved) == list(range(400))
    assert {attempts for _, attempts, _ in saved} == {1}
    # 400 saves in groups: one statement (one transaction) per group.
    assert 1 <= writes <= 40


async def test_a_waiting_retry_holds_its_key_not_its_event(tmp_path: Path) -> None:
    runtime = await failing(make_runtime(state_path=tmp_path / "state.db"), {"fail": -1})
    async with runtime:
        await put(runtime, 30)
        await runtime.wait_until_idle()
        waiting = runtime.deliverer.retries.waiting()
        assert len(waiting) == 30 and runtime.deliverer.retries.held() == 0
        for entry in waiting:
            due, key, delivery = entry
            assert isinstance(due, float) and isinstance(key, int)
            assert isinstance(delivery, Delivery)
            assert not any(isinstance(part, (dict, Job)) for part in entry)
        keys = sorted(str(key) for _, key, _ in waiting)
    assert keys == sorted(key for key, _, _ in rows(tmp_path / "state.db"))


async def test_without_a_state_database_the_job_stays_in_memory() -> None:
    clock = ManualClock()
    runtime = await failing(make_runtime(clock), {"fail": 3})
    async with runtime:
        await put(runtime, 3)
        await runtime.wait_until_idle()
        assert runtime.deliverer.retries.held() == 3  # nothing to read it back from
        await clock.advance(60, quiet=runtime.wait_until_idle)
        assert sorted(r.payload["detail"]["n"] for r in recorder(runtime, "down").received) == [
            0,
            1,
            2,
        ]


async def test_a_due_retry_delivers_the_event_read_back(tmp_path: Path) -> None:
    clock = ManualClock()
    runtime = await failing(make_runtime(clock, state_path=tmp_path / "state.db"), {"fail": 5})
    async with runtime:
        await put(runtime, 5)
        await runtime.wait_until_idle()
        assert recorder(runtime, "down").received == []
        reads = count_calls(store(runtime), "load_pending")
        await clock.advance(60, quiet=runtime.wait_until_idle)
        received = recorder(runtime, "down").received
        assert sorted(r.payload["detail"]["n"] for r in received) == [0, 1, 2, 3, 4]
        assert {r.context.attempt for r in received} == {2}
        assert {r.payload["id"] for r in received} == {r.context.event["id"] for r in received}
        assert 1 <= len(reads) <= 5  # the retries due together are read together
        assert sum(len(keys) for keys in reads) == 5
        await runtime.wait_until_idle()
    assert rows(tmp_path / "state.db") == []  # delivered: rows deleted


async def test_a_restart_resumes_the_waiting_retries(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    clock = ManualClock()
    first = await failing(make_runtime(clock, state_path=state), {"fail": -1})
    async with first:
        await put(first, 4)
        await first.wait_until_idle()
    assert len(rows(state)) == 4
    second = await failing(make_runtime(clock, state_path=state), {})
    async with second:
        assert len(second.deliverer.retries) == 4
        assert second.deliverer.retries.held() == 0  # loaded lean: keys only
        await clock.advance(60, quiet=second.wait_until_idle)
        received = recorder(second, "down").received
        assert sorted(r.payload["detail"]["n"] for r in received) == [0, 1, 2, 3]
        assert {r.context.attempt for r in received} == {2}  # attempts kept
        await second.wait_until_idle()
    assert rows(state) == []


async def test_a_row_saved_with_an_old_style_key_is_renumbered_and_resumed(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.db"
    event = {"id": "e-1", "source": "shop", "detail-type": "o", "detail": {"n": 7}}
    db = await StateDB.open(state)
    try:
        await db.save_pending(
            "0b1e-uuid", "default", "orders", "t", event, 1_700_000_000.0, 2, 1.0, ("X", "y")
        )
        await db.save_pending(
            "41", "default", "orders", "t", event, 1_700_000_000.0, 1, 1.0, ("X", "y")
        )
    finally:
        await db.close()
    clock = ManualClock()
    runtime = await failing(make_runtime(clock, state_path=state), {})
    async with runtime:
        keys = sorted(key for _, key, _ in runtime.deliverer.retries.waiting())
        assert keys == [41, 42]  # new keys continue above the numeric ones
        await clock.advance(1, quiet=runtime.wait_until_idle)
        received = recorder(runtime, "down").received
        assert [r.payload["detail"] for r in received] == [{"n": 7}, {"n": 7}]
        assert sorted(r.context.attempt for r in received) == [2, 3]
        await runtime.wait_until_idle()
    assert rows(state) == []


async def test_an_event_settles_only_once_its_retry_is_committed(tmp_path: Path) -> None:
    runtime = await failing(make_runtime(state_path=tmp_path / "state.db"), {"fail": -1})
    settled: list[int] = []
    async with runtime:
        gate = asyncio.Event()
        hold(store(runtime), "save_pending_rows", gate)
        await runtime.put_events([order(1)], settled=settled.append)
        await eventually(lambda: len(recorder(runtime, "down").attempts) == 1)
        await asyncio.sleep(0.05)  # the write is waiting for the gate, not done
        assert settled == []
        assert rows(tmp_path / "state.db") == []
        gate.set()
        await runtime.wait_until_idle()
        assert settled == [0]
        assert [(attempts, detail) for _, attempts, detail in rows(tmp_path / "state.db")] == [
            (1, {"n": 1})
        ]


async def test_a_retry_of_a_target_removed_while_it_is_read_back_is_dropped(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    runtime = await failing(make_runtime(clock, state_path=tmp_path / "state.db"), {"fail": 2})
    async with runtime:
        await put(runtime, 2)
        await runtime.wait_until_idle()
        gate = asyncio.Event()
        hold(store(runtime), "load_pending", gate)
        clock.jump(60)
        advancing = asyncio.ensure_future(clock.advance(0))
        await eventually(lambda: runtime.deliverer.loading == 2)
        await runtime.bus().remove_targets("orders", ["t"])
        gate.set()
        await advancing
        await runtime.wait_until_idle()
        assert recorder(runtime, "down").received == []
    assert rows(tmp_path / "state.db") == []


async def test_removing_a_target_deletes_its_waiting_rows(tmp_path: Path) -> None:
    runtime = await failing(make_runtime(state_path=tmp_path / "state.db"), {"fail": -1})
    async with runtime:
        await put(runtime, 20)
        await runtime.wait_until_idle()
        assert len(rows(tmp_path / "state.db")) == 20
        await runtime.bus().remove_targets("orders", ["t"])
        assert len(runtime.deliverer.retries) == 0
        assert rows(tmp_path / "state.db") == []


def hold(db: StateDB, method: str, gate: asyncio.Event) -> None:
    """Make ``db.method`` wait for ``gate`` before it runs."""
    original: Callable[..., Awaitable[Any]] = getattr(db, method)

    async def held(*args: Any) -> Any:
        await gate.wait()
        return await original(*args)

    setattr(db, method, held)


def count_calls(db: StateDB, method: str) -> list[list[str]]:
    """Record the keys each call of ``db.method`` is given."""
    calls: list[list[str]] = []
    original: Callable[[list[str]], Awaitable[dict[str, LoadedRow]]] = getattr(db, method)

    async def counted(keys: list[str]) -> dict[str, LoadedRow]:
        calls.append(list(keys))
        return await original(keys)

    setattr(db, method, counted)
    return calls


async def test_new_keys_never_land_on_a_row_left_by_a_removed_rule(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    stale = {"id": "e-old", "source": "shop", "detail-type": "o", "detail": {"n": -1}}
    db = await StateDB.open(state)
    try:
        await db.save_pending("5", "other", "gone", "t", stale, 1_700_000_000.0, 3, 1.0, None)
    finally:
        await db.close()
    runtime = await failing(make_runtime(state_path=state), {"fail": -1})
    async with runtime:
        await put(runtime, 1)
        await runtime.wait_until_idle()
        assert [key for _, key, _ in runtime.deliverer.retries.waiting()] == [6]
    assert rows(state) == [("5", 3, {"n": -1}), ("6", 1, {"n": 0})]
