"""The runner's own tables (pending retries, schedule marks, the durable
intake) on both backends: a SQLite file and a private PostgreSQL server.
The same tests, parametrized: one store interface, two engines."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import MappingProxyType

import pytest

from pipelines.errors import StateError
from pipelines.intake import DurableIntake
from pipelines.state import ScheduleMark, StateDB
from pipelines.store import Store, backend_for, location_of

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


V1_TABLES = """
CREATE TABLE store_versions (store TEXT PRIMARY KEY, version INTEGER NOT NULL, applied REAL NOT NULL);
CREATE TABLE pending_deliveries (
    key TEXT PRIMARY KEY, bus TEXT NOT NULL, rule TEXT NOT NULL, target_id TEXT NOT NULL,
    event BLOB NOT NULL, ingested REAL NOT NULL, attempts INTEGER NOT NULL, due REAL NOT NULL,
    error_code TEXT, error_message TEXT
);
CREATE TABLE intake (
    seq INTEGER PRIMARY KEY, bus TEXT NOT NULL, event BLOB NOT NULL, ingested REAL NOT NULL,
    addressed TEXT
);
CREATE TABLE schedule_marks (
    bus TEXT NOT NULL, rule TEXT NOT NULL, fingerprint TEXT NOT NULL, anchor REAL NOT NULL,
    last_due REAL, PRIMARY KEY (bus, rule)
);
"""


async def test_version_1_tables_migrate_forward_keeping_their_rows(state_location: str) -> None:
    # A database a runner of version 1 left: rows keyed without a runner.
    backend = backend_for(location_of(state_location))
    raw = await backend.connect(location_of(state_location), create=True, functions={})
    try:
        await raw.script(V1_TABLES)
        await raw.execute("INSERT INTO store_versions VALUES ('state', 1, 0)")
        await raw.execute(
            "INSERT INTO intake (seq, bus, event, ingested, addressed) VALUES (?, ?, ?, ?, ?)",
            (7, "default", b'{"id": "e-7"}', 1.5, None),
        )
        await raw.execute(
            "INSERT INTO pending_deliveries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            pending_row("4", 9.0),
        )
    finally:
        await raw.close()
    store = await StateDB.open(state_location)
    try:
        assert await store.scalar("SELECT version FROM store_versions WHERE store = 'state'") == 2
        assert [row.key for row in await store.pending("default")] == ["4"]
        left = await DurableIntake(store).open()
        assert [(row.seq, row.event) for row in left] == [(7, {"id": "e-7"})]
    finally:
        await store.close()


async def test_a_newer_schema_is_refused_by_name(state_location: str) -> None:
    async with await StateDB.open(state_location) as store:
        await store.execute("UPDATE store_versions SET version = 99 WHERE store = 'state'")
    with pytest.raises(StateError, match=r"state tables are version 99, newer than .* \(2\)"):
        await StateDB.open(state_location)


async def test_each_runner_keeps_its_own_rows_and_one_adopts_a_gone_runners(
    state_location: str,
) -> None:
    first = await StateDB.open(state_location, runner="a")
    second = await StateDB.open(state_location, runner="b")
    try:
        for store, n in ((first, 1), (second, 1), (second, 2)):
            intake = DurableIntake(store)
            await intake.open()
            writer = asyncio.create_task(intake.run())
            intake.reserve("default", event(n), 1.0, None, None)
            await intake.committed(intake.reserved)
            intake.close()
            await writer
        # Both numbered theirs from 1: the same numbers, each its own rows.
        await first.save_pending_rows([pending_row("1", 5.0)[:10]])
        await second.save_pending_rows([pending_row("1", 6.0), pending_row("old", 7.0)])
        assert [row.key for row in await first.pending("default")] == ["1"]
        assert await second.runners_with_rows() == ["a"]
        assert await first.adopt("b") == (2, 2)
        left = await DurableIntake(first).open()
        assert [(row.seq, row.event["id"]) for row in left] == [(1, "e-1"), (2, "e-1"), (3, "e-2")]
        keys = [row.key for row in await first.pending("default")]
        assert keys == ["1", "2", "b:old"]  # b's "1" numbered after a's own
        assert await first.runners_with_rows() == []
    finally:
        await first.close()
        await second.close()
