"""The queue store at scale, by design: indexes for what it searches (added to
an older database on open), exact counts without a scan, batched trips."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pipelines.clock import ManualClock
from plugins.queue.store import QueueStore


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def store(tmp_path: Path, clock: ManualClock) -> AsyncIterator[QueueStore]:
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

    async with QueueStore.existing(path) as reopened:
        assert [m.body for m in await reopened.receive("q")] == ["kept"]
    with sqlite3.connect(path) as db:
        indexes = {
            row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
        version = db.execute("SELECT version FROM store_versions WHERE store = 'queues'").fetchone()
    assert {"queue_messages_sent", "queue_messages_delayed"} <= indexes
    assert version == (QueueStore.version,)


async def test_retention_deletes_through_the_sent_index(store: QueueStore) -> None:
    await store.create_queue("q")
    found = plan(store.path, "DELETE FROM queue_messages WHERE queue = ? AND sent < ?", ("q", 0.0))
    assert "USING INDEX queue_messages_sent (queue=? AND sent<?)" in found
