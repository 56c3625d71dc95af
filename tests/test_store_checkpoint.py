"""The WAL's checkpointer (pipelines/store.py ``Checkpointer``) on real
SQLite files: commits leave the checkpoint to it, the WAL stays bounded
whether it keeps up or not, what was committed is there after a reopen or a
SIGKILL, and closing the last store on a file stops it."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pipelines.store import Checkpointer, SQLiteConnection, Store

from .helpers import project_env

#: One row about a page of a default SQLite database (4096 bytes).
PAGE_ROW = b"x" * 3500


class Pages(Store):
    """A store of one table whose rows each take about a page."""

    name = "pages"
    schema = "CREATE TABLE IF NOT EXISTS pages (n INTEGER PRIMARY KEY, body BLOB NOT NULL);"

    async def add(self, n: int) -> None:
        await self.execute("INSERT INTO pages (n, body) VALUES (?, ?)", (n, PAGE_ROW))

    async def count(self) -> int:
        return int(await self.scalar("SELECT count(*) FROM pages"))


class Other(Store):
    """A second store on the same file."""

    name = "other"
    schema = "CREATE TABLE IF NOT EXISTS other (n INTEGER);"


def checkpointer_of(store: Store) -> Checkpointer:
    connection = store.connection
    assert isinstance(connection, SQLiteConnection)
    assert connection.checkpointer is not None
    return connection.checkpointer


def running(path: Path) -> Checkpointer | None:
    """The checkpointer running for the file at ``path`` (another test's
    store left open in this worker may have one of its own: not counted)."""
    return Checkpointer._running.get(str(path.resolve()))


def wal_pages(path: Path) -> int:
    """The WAL file's size in frames of a 4096-byte page (its largest extent:
    SQLite writes a WAL again from its start rather than shrink it)."""
    wal = path.with_name(path.name + "-wal")
    return (wal.stat().st_size - 32) // (4096 + 24) if wal.exists() else 0


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def writer_setting(store: Store, pragma: str) -> int:
    connection = store.connection
    assert isinstance(connection, SQLiteConnection)

    def read(db: sqlite3.Connection) -> int:
        return int(db.execute(f"PRAGMA {pragma}").fetchone()[0])

    value: int = await connection.call(read)
    return value


async def test_the_checkpointer_copies_the_wal_into_the_database_not_the_commits(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    async with await Pages.open(path) as store:
        # The commits' own checkpoint waits for a WAL ten times larger.
        assert await writer_setting(store, "wal_autocheckpoint") == Checkpointer.hard_pages
        checkpointer = checkpointer_of(store)
        for n in range(1500):  # about 1,500 pages: past SQLite's 1,000, far from 10,000
            await store.add(n)
        await until(lambda: path.stat().st_size > 1400 * 4096)
        assert checkpointer.checkpoints > 0
        assert wal_pages(path) < Checkpointer.hard_pages


async def test_the_wal_stays_bounded_under_sustained_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Checkpointer, "pages", 50)
    monkeypatch.setattr(Checkpointer, "hard_pages", 2000)
    path = tmp_path / "state.db"
    async with await Pages.open(path) as store:
        largest = 0
        for n in range(4000):
            await store.add(n)
            largest = max(largest, wal_pages(path))
            if n % 50 == 49:
                # A breath every 50 commits: on two cores shared with other
                # work (the suite's workers) the checkpoint thread may get no
                # CPU at all while this loop writes, and the test would time
                # the scheduler, not the checkpointer.
                await asyncio.sleep(0.005)
        assert checkpointer_of(store).checkpoints > 0
    # Well under the hard limit: the checkpointer kept up, the WAL started
    # again from its beginning, never reaching what the commits would copy.
    assert largest < 2000, largest
    async with await Pages.open(path) as store:
        assert await store.count() == 4000


async def test_the_wal_stays_bounded_when_the_checkpointer_falls_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkpointer that waits an hour between checkpoints: the commits'
    # own checkpoint past the hard limit is all there is.
    monkeypatch.setattr(Checkpointer, "shortest", 3600.0)
    monkeypatch.setattr(Checkpointer, "longest", 3600.0)
    monkeypatch.setattr(Checkpointer, "hard_pages", 300)
    path = tmp_path / "state.db"
    async with await Pages.open(path) as store:
        checkpointer = checkpointer_of(store)
        checkpointer.pause = 3600.0
        for n in range(2000):
            await store.add(n)
        assert checkpointer.checkpoints == 0
        assert wal_pages(path) <= 300 + 10
    # Closing did not wait out the hour.
    assert running(path) is None and not checkpointer._thread.is_alive()
    async with await Pages.open(path) as store:
        assert await store.count() == 2000


async def test_stores_on_one_file_share_a_checkpointer_until_the_last_closes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    first = await Pages.open(path)
    second = await Other.open(path)
    try:
        shared = checkpointer_of(first)
        assert shared is checkpointer_of(second) is running(path)
        await first.close()
        assert running(path) is shared and shared._thread.is_alive()
        await second.execute("INSERT INTO other (n) VALUES (1)")
    finally:
        await first.close()
        await second.close()
    assert running(path) is None and not shared._thread.is_alive()
    # The last connection's close checkpointed the rest and removed the WAL,
    # as SQLite does when no checkpointer holds the file open.
    assert not path.with_name("state.db-wal").exists()


async def test_close_waits_for_a_checkpoint_under_way(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = await Pages.open(path)
    checkpointer = checkpointer_of(store)
    checkpointer.pause = 0.0
    for n in range(300):
        await store.add(n)
    await store.close()
    # Joined, not left running: its connection is closed with it.
    assert not checkpointer._thread.is_alive()
    assert running(path) is None


async def test_a_store_in_memory_has_no_checkpointer() -> None:
    async with await Pages.open(None) as store:
        connection = store.connection
        assert isinstance(connection, SQLiteConnection)
        assert connection.checkpointer is None
        await store.add(1)
        assert await store.count() == 1


async def test_a_reader_holding_the_wal_delays_the_checkpoint_without_errors(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    async with await Pages.open(path) as store:
        checkpointer = checkpointer_of(store)
        await store.add(0)
        reader = sqlite3.connect(path, isolation_level=None)
        try:
            reader.execute("BEGIN")
            assert reader.execute("SELECT count(*) FROM pages").fetchone() == (1,)
            for n in range(1, 200):
                await store.add(n)
            await until(lambda: checkpointer.checkpoints > 0)
            frames, copied = checkpointer.last
            assert copied < frames  # the reader's snapshot keeps the newer pages out
            reader.execute("COMMIT")
        finally:
            reader.close()
        await store.add(200)
        await until(lambda: checkpointer.last[1] >= checkpointer.last[0] > 0)
        assert await store.count() == 201


async def test_an_idle_writer_copies_the_tail_but_not_inside_a_transaction(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.db"
    async with await Pages.open(path) as store:
        checkpointer = checkpointer_of(store)
        async with store.transaction() as db:
            await db.execute("INSERT INTO pages (n, body) VALUES (1, x'00')")
            checkpointer.behind = True  # as after a checkpoint of the thread's
            # The writer is idle after this one, its transaction open: SQLite
            # would refuse a checkpoint there (a warning in the log).
            await db.execute("INSERT INTO pages (n, body) VALUES (2, x'00')")
        await store.add(3)
        await until(lambda: not checkpointer.behind)  # copied once the transaction ended
        assert await store.count() == 3
    assert not [r for r in caplog.records if "checkpoint" in r.getMessage()]


WRITER = """
import asyncio, sys
from tests.test_store_checkpoint import Pages

async def main():
    async with await Pages.open(sys.argv[1]) as store:
        n = 0
        while True:
            await store.add(n)
            n += 1
            print(n, flush=True)

asyncio.run(main())
"""


def test_what_was_committed_survives_a_sigkill_mid_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env=project_env(),
    )
    assert writer.stdout is not None
    committed = 0
    try:
        # Past several checkpoints (about one per 1,000 pages of WAL).
        while committed < 5000:
            line = writer.stdout.readline()
            assert line, f"the writer ended: {writer.wait()}"
            committed = int(line)
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        found = db.execute("SELECT count(*), max(n) FROM pages").fetchone()
    finally:
        db.close()
    assert found[0] >= committed
    assert found == (found[1] + 1, found[1])  # no row lost in between
