"""The runner's own tables in the state database (one SQLite file, WAL).

It holds what must survive a restart. For the bus that is the events taken
in and not yet settled (``intake``, see ``pipelines.intake``) and the
deliveries waiting for a retry (``pending_deliveries``), for the scheduler its marks
(``schedule_marks``); the other capabilities (archives, queues, streams,
metrics, ...) keep their tables in the same file, each through its own store.
Opening, the connection, its lock and transactions come from
``pipelines.store.Store``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from pipelines.event import dump_json, parse_json
from pipelines.store import Step, Store

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
CREATE TABLE IF NOT EXISTS intake (
    seq       INTEGER PRIMARY KEY,
    bus       TEXT NOT NULL,
    event     BLOB NOT NULL,
    ingested  REAL NOT NULL,
    addressed TEXT
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


class ScheduleMark(NamedTuple):
    """What the scheduler remembers of a scheduled rule across restarts.

    ``fingerprint`` identifies the schedule (a changed schedule starts afresh),
    ``anchor`` is when it was first scheduled (a rate counts from it) and
    ``last_due`` the scheduled time of its last firing, if any.

    A tuple in the table's column order: the scheduler makes one per run
    it fires (10,000 a minute for 10,000 ``rate(1 minute)`` rules), and
    they go to the database as they are.
    """

    bus: str
    rule: str
    fingerprint: str
    anchor: float
    last_due: float | None


#: ScheduleMark's fields: the columns of ``schedule_marks``, in that order.
MARK_COLUMNS = ("bus", "rule", "fingerprint", "anchor", "last_due")


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


# Pending rows written and deleted in groups (``pipelines.pending``), each
# group one transaction. Saves go as one executemany of a plain upsert: the
# rows carry their events' JSON text, which a ``json_each`` array would have
# SQLite parse again (half the speed, measured in bench/bench_retries.py).
# Deletes carry only keys: one statement over a JSON array of them.
SAVE_PENDING = (
    "INSERT INTO pending_deliveries (key, bus, rule, target_id, event, ingested, attempts,"
    " due, error_code, error_message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT(key) DO UPDATE SET attempts = excluded.attempts, due = excluded.due,"
    " error_code = excluded.error_code, error_message = excluded.error_message"
)
DELETE_PENDING = "DELETE FROM pending_deliveries WHERE key IN (SELECT value FROM {keys})"
LOAD_PENDING = (
    "SELECT key, event, ingested, attempts, error_code, error_message FROM pending_deliveries"
    " WHERE key IN (SELECT value FROM {keys})"
)
#: A pending row as the group commit writes it: [key, bus, rule, target id,
#: event as JSON text, ingested, attempts, due, error code, error message].
PendingSave = tuple[str, str, str, str, str, float, int, float, str | None, str | None]


@dataclass(frozen=True, slots=True)
class LoadedRow:
    """What a retry that comes due reads back: all but what the heap kept."""

    event: dict[str, Any]
    ingested: float
    attempts: int
    error_code: str | None
    error_message: str | None


class StateDB(Store):
    """The runner's tables. Use ``await StateDB.open(path)`` and ``close()``."""

    name = "state"
    schema = SCHEMA
    #: Transactions that wrote or deleted pending rows in groups: how tests
    #: see that many failures share few commits.
    pending_writes = 0

    async def save_pending_rows(self, rows: list[PendingSave]) -> None:
        """Insert or update many pending rows in one transaction."""
        async with self.transaction() as db:
            await db.executemany(SAVE_PENDING, rows)
        self.pending_writes += 1

    async def opened(self) -> None:
        keys = self.dialect.json_values("k")
        self._delete_pending = DELETE_PENDING.format(keys=keys)
        self._load_pending = LOAD_PENDING.format(keys=keys)

    async def delete_pending_keys(self, keys: list[str]) -> None:
        """Delete many pending rows in one statement (one transaction)."""
        await self.execute(self._delete_pending, (orjson.dumps(keys),))
        self.pending_writes += 1

    async def load_pending(self, keys: list[str]) -> dict[str, LoadedRow]:
        """The rows of ``keys`` that exist, in one SELECT; a key without a row
        (deleted meanwhile) is absent."""
        rows = await self.rows(self._load_pending, (orjson.dumps(keys),))
        return {row[0]: LoadedRow(parse_json(row[1]), *row[2:]) for row in rows}

    async def top_pending_key(self) -> int:
        """The highest numeric key of any row, of every bus (0 when none): new
        keys go above it, so a new row never lands on a row left by a removed
        bus or rule. (A key that is not a number counts by its leading digits,
        which can only raise the figure.)"""
        top = await self.scalar(
            f"SELECT max({self.dialect.leading_integer('key')}) FROM pending_deliveries"
        )
        return max(int(top or 0), 0)

    async def rekey_pending(self, keys: dict[str, str]) -> None:
        """Give rows new keys (old key -> new), in one transaction: rows from
        before numeric keys get one, so the retry heap holds small ints."""
        async with self.transaction() as db:
            await db.executemany(
                "UPDATE pending_deliveries SET key = ? WHERE key = ?",
                [(new, old) for old, new in keys.items()],
            )

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
        await self.execute(
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

    async def delete_pending(self, key: str) -> None:
        await self.execute("DELETE FROM pending_deliveries WHERE key = ?", (key,))

    async def pending(self, bus: str) -> list[PendingRow]:
        """Every pending delivery of ``bus``, earliest due first."""
        rows = await self.rows(
            "SELECT key, bus, rule, target_id, event, ingested, attempts, due, error_code,"
            " error_message FROM pending_deliveries WHERE bus = ?"
            f" ORDER BY due, {self.dialect.leading_integer('key')}, key",
            (bus,),
        )
        return [
            PendingRow(row[0], row[1], row[2], row[3], parse_json(row[4]), *row[5:]) for row in rows
        ]

    async def schedule_marks(self) -> dict[tuple[str, str], ScheduleMark]:
        rows = await self.rows(
            "SELECT bus, rule, fingerprint, anchor, last_due FROM schedule_marks"
        )
        return {(row[0], row[1]): ScheduleMark(*row) for row in rows}

    async def save_schedule_marks(self, marks: list[ScheduleMark]) -> None:
        """Insert or replace marks, in one transaction and one trip to the
        database (the scheduler saves a turn's marks, up to one per rule, at once)."""
        upsert = self.dialect.upsert("schedule_marks", MARK_COLUMNS, ("bus", "rule"))
        await self.batch([Step(upsert, marks, many=True)])

    async def delete_schedule_mark(self, bus: str, rule: str) -> None:
        await self.execute("DELETE FROM schedule_marks WHERE bus = ? AND rule = ?", (bus, rule))
