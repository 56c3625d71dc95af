"""The runner's own tables (pending retries, schedule marks, the durable
intake) on both backends: a SQLite file and a private PostgreSQL server.
The same tests, parametrized: one store interface, two engines."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import MappingProxyType

import pytest

from pipelines.intake import DurableIntake
from pipelines.state import ScheduleMark, StateDB
from pipelines.store import Store

from .helpers import eventually


@pytest.fixture
async def state(state_location: str) -> AsyncIterator[StateDB]:
    store = await StateDB.open(state_location)
    try:
        yield store
    finally:
        await store.close()


def event(n: int) -> dict[str, object]:
    return {
        "id": f"e-{n}",
        "source": "shop",
        "detail-type": "Order",
        "detail": {"n": n, "s": "é%?"},
    }


def pending_row(
    key: str, due: float
) -> tuple[str, str, str, str, str, float, int, float, None, None]:
    body = f'{{"id": "e-{key}", "detail": {{"price": 1.5}}}}'
    return (key, "default", "r", "t", body, 1_700_000_000.123456, 1, due, None, None)


async def test_pending_retries_are_saved_read_and_deleted_by_key(state: StateDB) -> None:
    await state.save_pending_rows(
        [pending_row("3", 20.0), pending_row("1", 10.0), pending_row("2", 10.0)]
    )
    rows = await state.pending("default")
    assert [row.key for row in rows] == ["1", "2", "3"]  # earliest due first, then by key
    assert rows[0].ingested == 1_700_000_000.123456  # a timestamp keeps its microseconds
    assert rows[0].event == {"id": "e-1", "detail": {"price": 1.5}}
    loaded = await state.load_pending(["2", "3", "9"])
    assert sorted(loaded) == ["2", "3"]
    assert await state.top_pending_key() == 3
    await state.save_pending_rows([(*pending_row("2", 5.0)[:6], 4, 5.0, "Code", "boom")])
    (updated,) = (await state.load_pending(["2"])).values()
    assert (updated.attempts, updated.error_code, updated.error_message) == (4, "Code", "boom")
    await state.delete_pending_keys(["1", "3"])
    assert [row.key for row in await state.pending("default")] == ["2"]


async def test_schedule_marks_are_upserted(state: StateDB) -> None:
    marks = [ScheduleMark("default", f"r{n}", "fp", 1_700_000_000.5, None) for n in range(3)]
    await state.save_schedule_marks(marks)
    await state.save_schedule_marks([ScheduleMark("default", "r1", "fp2", 1.0, 61.0)])
    found = await state.schedule_marks()
    assert found[("default", "r1")] == ScheduleMark("default", "r1", "fp2", 1.0, 61.0)
    assert found[("default", "r0")].anchor == 1_700_000_000.5
    await state.delete_schedule_mark("default", "r0")
    assert sorted(await state.schedule_marks()) == [("default", "r1"), ("default", "r2")]


async def test_the_intake_commits_rows_reads_them_back_and_deletes_settled_ones(
    state_location: str,
) -> None:
    store = await StateDB.open(state_location)
    intake = DurableIntake(store)
    assert await intake.open() == []
    writer = asyncio.create_task(intake.run())
    try:
        kept = [intake.reserve("default", event(n), 1_700_000_000.25, None, None) for n in range(5)]
        addressed = intake.reserve("audit", event(9), 1.0, frozenset({"b", "a"}), None)
        await intake.committed(intake.reserved)
        for settlement in kept[:3]:
            settlement.settle()
        await eventually(lambda: intake.idle)
        intake.close()
        await writer
    finally:
        if not writer.done():
            writer.cancel()
        await store.close()
    assert addressed is not None
    # What a next run finds: the unsettled rows, in order, events as they were.
    store = await StateDB.open(state_location)
    try:
        again = DurableIntake(store)
        left = await again.open()
    finally:
        await store.close()
    assert [(u.seq, u.bus) for u in left] == [(4, "default"), (5, "default"), (6, "audit")]
    assert left[0].event == event(3)
    assert left[0].ingested == 1_700_000_000.25
    assert left[2].addressed == frozenset({"a", "b"})


class _Counted(Store):
    """A store whose count is kept by a trigger each engine spells its own way."""

    name = "counted"
    schema = """
CREATE TABLE IF NOT EXISTS counted_items (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS counted_total (one INTEGER PRIMARY KEY, total INTEGER NOT NULL);
"""
    engine_schema = MappingProxyType(
        {
            "sqlite": """
CREATE TRIGGER IF NOT EXISTS counted_added AFTER INSERT ON counted_items BEGIN
    INSERT INTO counted_total (one, total) VALUES (1, 1)
        ON CONFLICT (one) DO UPDATE SET total = total + 1;
END;
""",
            "postgresql": """
CREATE OR REPLACE FUNCTION counted_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO counted_total (one, total) VALUES (1, 1)
        ON CONFLICT (one) DO UPDATE SET total = counted_total.total + 1;
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER counted_added AFTER INSERT ON counted_items
    FOR EACH ROW EXECUTE FUNCTION counted_added();
""",
        }
    )


async def test_engine_only_ddl_runs_on_its_engine_and_concurrent_opens_do_not_race(
    state_location: str,
) -> None:
    # Three runners opening one database at once each apply the schema:
    # on PostgreSQL, CREATE OR REPLACE racing itself fails unless serialized.
    stores = await asyncio.gather(*(_Counted.open(state_location) for _ in range(3)))
    try:
        for n, store in enumerate(stores):
            await store.execute("INSERT INTO counted_items (name) VALUES (?)", (f"i{n}",))
        assert await stores[0].scalar("SELECT total FROM counted_total") == 3
        assert (
            await stores[2].scalar(
                "SELECT version FROM store_versions WHERE store = ?", ("counted",)
            )
            == 1
        )
    finally:
        for store in stores:
            await store.close()
