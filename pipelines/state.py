"""The runner's state database: one SQLite file (WAL), opened with aiosqlite.

It holds what must survive a restart. For the bus that is the deliveries
waiting for a retry (``pending_deliveries``); later capabilities (archives,
queues, schedules, metrics) add their own tables to the same file.

aiosqlite runs each connection in its own thread, so no query blocks the
event loop; one connection per database means one writer, and WAL lets
readers in other processes proceed while it writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from pipelines.errors import StateError
from pipelines.event import dump_json, parse_json

SCHEMA = """
CREATE TABLE IF NOT EXISTS pending_deliveries (
    key           TEXT PRIMARY KEY,
    bus           TEXT NOT NULL,
    rule          TEXT NOT NULL,
    target_id     TEXT NOT NULL,
    event         BLOB NOT NULL,
    ingested      REAL NOT NULL,
    attempts      INTEGER NOT NULL,
    due           REAL NOT NULL,
    error_code    TEXT,
    error_message TEXT
);
CREATE TABLE IF NOT EXISTS schedule_marks (
    bus         TEXT NOT NULL,
    rule        TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    anchor      REAL NOT NULL,
    last_due    REAL,
    PRIMARY KEY (bus, rule)
);
"""


async def connect(path: Path, schema: str, *, autocommit: bool = False) -> aiosqlite.Connection:
    """A connection to the state database at ``path`` (created with its
    directory if need be), in WAL mode, with ``schema`` applied. Every part of
    the runtime that keeps state opens it this way; ``StateError`` says what
    is wrong, in a line a user can act on."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(
            f"state database {path}: cannot create its directory: {exc.strerror};"
            " point state at a writable place"
        ) from None
    connection = None
    try:
        if autocommit:
            connection = await aiosqlite.connect(path, isolation_level=None)
        else:
            connection = await aiosqlite.connect(path)
        # WAL + NORMAL: a committed transaction survives a process crash (the
        # WAL is in the OS's hands); only power loss can drop the last commits.
        await connection.execute("PRAGMA journal_mode=WAL")
        await connection.execute("PRAGMA synchronous=NORMAL")
        await connection.execute("PRAGMA busy_timeout=10000")
        await connection.executescript(schema)
        await connection.commit()
    except sqlite3.Error as exc:
        if connection is not None:
            await connection.close()
        raise StateError(
            f"state database {path}: {exc}; point state at another file,"
            " or move this one away if it is not a pipelines database"
        ) from None
    return connection


def existing(path: str | Path) -> Path:
    """``path``, a pipeline's state database that must already exist (what the
    CLI reads, whether the pipeline runs or not); StateError otherwise."""
    path = Path(path)
    if not path.exists():
        raise StateError(f"state database {path} does not exist: run the pipeline first")
    return path


@contextlib.asynccontextmanager
async def transaction(
    connection: aiosqlite.Connection, lock: asyncio.Lock
) -> AsyncIterator[aiosqlite.Connection]:
    """One write transaction on an autocommit ``connection``, alone under
    ``lock`` (statements of others on it would land inside); rolled back on
    any exception, also a cancellation while BEGIN or COMMIT was under way:
    the connection's thread runs statements in order, so the ROLLBACK comes
    after them and leaves no transaction open."""
    async with lock:
        try:
            await connection.execute("BEGIN IMMEDIATE")
            yield connection
            await connection.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                await asyncio.shield(connection.execute("ROLLBACK"))
            raise


@dataclass(frozen=True, slots=True)
class ScheduleMark:
    """What the scheduler remembers of a scheduled rule across restarts.

    ``fingerprint`` identifies the schedule (a changed schedule starts afresh),
    ``anchor`` is when it was first scheduled (a rate counts from it) and
    ``last_due`` the scheduled time of its last firing, if any.
    """

    bus: str
    rule: str
    fingerprint: str
    anchor: float
    last_due: float | None


@dataclass(frozen=True, slots=True)
class PendingRow:
    """A delivery waiting for its next attempt, as stored."""

    key: str
    bus: str
    rule: str
    target_id: str
    event: dict[str, Any]
    ingested: float
    attempts: int
    due: float
    error_code: str | None
    error_message: str | None


class StateDB:
    """An open state database. Use ``await StateDB.open(path)`` and ``close()``."""

    def __init__(self, path: Path, connection: aiosqlite.Connection) -> None:
        self.path = path
        self.connection = connection

    @classmethod
    async def open(cls, path: str | Path) -> StateDB:
        """Open (or create) the database; ``StateError`` says what is wrong with it."""
        path = Path(path)
        return cls(path, await connect(path, SCHEMA))

    async def close(self) -> None:
        await self.connection.close()

    async def save_pending(
        self,
        key: str,
        bus: str,
        rule: str,
        target_id: str,
        event: dict[str, Any],
        ingested: float,
        attempts: int,
        due: float,
        error: tuple[str, str] | None,
    ) -> None:
        """Insert or update the pending delivery ``key``.

        Keyed by the job, not by a row id, so a write interrupted by shutdown
        (which SQLite may still complete) and the write after it agree on one row.
        """
        code, message = error or (None, None)
        await self.connection.execute(
            "INSERT INTO pending_deliveries"
            " (key, bus, rule, target_id, event, ingested, attempts, due, error_code,"
            " error_message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(key) DO UPDATE SET attempts = excluded.attempts,"
            " due = excluded.due, error_code = excluded.error_code,"
            " error_message = excluded.error_message",
            (
                key,
                bus,
                rule,
                target_id,
                dump_json(event),
                ingested,
                attempts,
                due,
                code,
                message,
            ),
        )
        await self.connection.commit()

    async def delete_pending(self, key: str) -> None:
        await self.connection.execute("DELETE FROM pending_deliveries WHERE key = ?", (key,))
        await self.connection.commit()

    async def pending(self, bus: str) -> list[PendingRow]:
        """Every pending delivery of ``bus``, earliest due first."""
        async with self.connection.execute(
            "SELECT key, bus, rule, target_id, event, ingested, attempts, due, error_code,"
            " error_message FROM pending_deliveries WHERE bus = ? ORDER BY due, rowid",
            (bus,),
        ) as cursor:
            rows = await cursor.fetchall()
        return [
            PendingRow(row[0], row[1], row[2], row[3], parse_json(row[4]), *row[5:]) for row in rows
        ]

    async def schedule_marks(self) -> dict[tuple[str, str], ScheduleMark]:
        async with self.connection.execute(
            "SELECT bus, rule, fingerprint, anchor, last_due FROM schedule_marks"
        ) as cursor:
            rows = await cursor.fetchall()
        return {(row[0], row[1]): ScheduleMark(*row) for row in rows}

    async def save_schedule_marks(self, marks: list[ScheduleMark]) -> None:
        """Insert or replace marks, in one transaction."""
        await self.connection.executemany(
            "INSERT OR REPLACE INTO schedule_marks (bus, rule, fingerprint, anchor, last_due)"
            " VALUES (?, ?, ?, ?, ?)",
            [(k.bus, k.rule, k.fingerprint, k.anchor, k.last_due) for k in marks],
        )
        await self.connection.commit()

    async def delete_schedule_mark(self, bus: str, rule: str) -> None:
        await self.connection.execute(
            "DELETE FROM schedule_marks WHERE bus = ? AND rule = ?", (bus, rule)
        )
        await self.connection.commit()
