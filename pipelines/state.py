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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from pipelines.clock import Clock
from pipelines.event import dump_json, parse_json
from pipelines.store import Queries, Step, Store

# The intake's rows and the pending retries are each runner's own: on a
# shared PostgreSQL database several runners write them, each numbering its
# rows itself (``runner`` is '' for the one runner of a SQLite file). A
# runner that dies leaves its rows to the next one that adopts them
# (``adopt`` at its start, ``take_over`` while it runs); ``runners`` lists
# who may have left rows. Schedule marks are the cluster's: one per scheduled rule.
PENDING_TABLE = """
CREATE TABLE IF NOT EXISTS pending_deliveries (
    runner        TEXT NOT NULL DEFAULT '',
    key           TEXT NOT NULL,
    bus           TEXT NOT NULL,
    rule          TEXT NOT NULL,
    target_id     TEXT NOT NULL,
    event         BLOB NOT NULL,
    ingested      REAL NOT NULL,
    attempts      INTEGER NOT NULL,
    due           REAL NOT NULL,
    error_code    TEXT,
    error_message TEXT,
    PRIMARY KEY (runner, key)
);
"""
INTAKE_TABLE = """
CREATE TABLE IF NOT EXISTS intake (
    runner    TEXT NOT NULL DEFAULT '',
    seq       INTEGER NOT NULL,
    bus       TEXT NOT NULL,
    event     BLOB NOT NULL,
    ingested  REAL NOT NULL,
    addressed TEXT,
    PRIMARY KEY (runner, seq)
);
"""
SCHEMA = (
    PENDING_TABLE
    + INTAKE_TABLE
    + """
CREATE TABLE IF NOT EXISTS runners (
    runner TEXT PRIMARY KEY,
    joined REAL NOT NULL
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
)
#: Version 1's two tables were keyed without a runner: each is copied aside,
#: made again keyed by runner, and its rows (the one runner's, '') copied back.
#: A copy rather than a rename: PostgreSQL keeps a renamed table's key index
#: under its old name, which the new table's key would collide with.
MIGRATE_TO_2 = [
    (table, columns, create)
    for table, columns, create in (
        (
            "pending_deliveries",
            "key, bus, rule, target_id, event, ingested, attempts, due, error_code, error_message",
            PENDING_TABLE,
        ),
        ("intake", "seq, bus, event, ingested, addressed", INTAKE_TABLE),
    )
]


class ScheduleMark(NamedTuple):
    """What the scheduler remembers of a scheduled rule across restarts.

    ``fingerprint`` identifies the schedule (a changed schedule starts afresh),
    ``anchor`` is when it was first scheduled (a rate counts from it) and
    ``last_due`` the scheduled time of its last firing, if any.

    A tuple in the table's column order, as read back at start. What the
    scheduler saves are plain ``MarkRow`` tuples of the same fields: it
    makes one per run it fires (10,000 a minute for 10,000 ``rate(1
    minute)`` rules), and a plain tuple costs a seventh of a named one.
    """

    bus: str
    rule: str
    fingerprint: str
    anchor: float
    last_due: float | None


#: ScheduleMark's fields: the columns of ``schedule_marks``, in that order.
MARK_COLUMNS = ("bus", "rule", "fingerprint", "anchor", "last_due")
#: A mark as saved: ScheduleMark's fields (a ScheduleMark is one too).
MarkRow = tuple[str, str, str, float, float | None]


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
    "INSERT INTO pending_deliveries (runner, key, bus, rule, target_id, event, ingested,"
    " attempts, due, error_code, error_message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT(runner, key) DO UPDATE SET attempts = excluded.attempts, due = excluded.due,"
    " error_code = excluded.error_code, error_message = excluded.error_message"
)
DELETE_PENDING = (
    "DELETE FROM pending_deliveries WHERE runner = ? AND key IN (SELECT value FROM {keys})"
)
LOAD_PENDING = (
    "SELECT key, event, ingested, attempts, error_code, error_message FROM pending_deliveries"
    " WHERE runner = ? AND key IN (SELECT value FROM {keys})"
)
#: A pending row as the group commit writes it: [key, bus, rule, target id,
#: event as JSON text, ingested, attempts, due, error code, error message].
PendingSave = tuple[str, str, str, str, str, float, int, float, str | None, str | None]


class IntakeRow(NamedTuple):
    """An intake row as stored (the event as JSON text or bytes)."""

    seq: int
    bus: str
    event: Any
    ingested: float
    addressed: str | None


@dataclass(frozen=True, slots=True)
class LoadedRow:
    """What a retry that comes due reads back: all but what the heap kept."""

    event: dict[str, Any]
    ingested: float
    attempts: int
    error_code: str | None
    error_message: str | None


class StateDB(Store):
    """The runner's tables. Use ``await StateDB.open(path)`` and ``close()``;
    ``runner`` names whose intake rows and pending retries these are (a
    cluster's runners share one PostgreSQL database, each its own rows)."""

    name = "state"
    version = 2
    schema = SCHEMA
    #: Transactions that wrote or deleted pending rows in groups: how tests
    #: see that many failures share few commits.
    pending_writes = 0

    def __init__(self, clock: Clock | None = None, *, runner: str = "") -> None:
        super().__init__(clock)
        self.runner = runner

    async def migrate(self, connection: Queries, found: int) -> None:
        if found < 2:
            for table, columns, create in MIGRATE_TO_2:
                await connection.execute(f"CREATE TABLE {table}_v1 AS SELECT * FROM {table}")
                await connection.execute(f"DROP TABLE {table}")
                await connection.execute(self.dialect.ddl(create))
                await connection.execute(
                    f"INSERT INTO {table} (runner, {columns}) SELECT '', {columns} FROM {table}_v1"
                )
                await connection.execute(f"DROP TABLE {table}_v1")

    async def save_pending_rows(self, rows: list[PendingSave]) -> None:
        """Insert or update many pending rows in one transaction."""
        runner = self.runner
        async with self.transaction() as db:
            await db.executemany(SAVE_PENDING, [(runner, *row) for row in rows])
        self.pending_writes += 1

    async def opened(self) -> None:
        keys = self.dialect.json_values("k")
        self._delete_pending = DELETE_PENDING.format(keys=keys)
        self._load_pending = LOAD_PENDING.format(keys=keys)
        self._marks_upsert = self.dialect.upsert("schedule_marks", MARK_COLUMNS, ("bus", "rule"))

    async def delete_pending_keys(self, keys: list[str]) -> None:
        """Delete many pending rows in one statement (one transaction)."""
        await self.execute(self._delete_pending, (self.runner, orjson.dumps(keys)))
        self.pending_writes += 1

    async def load_pending(self, keys: list[str]) -> dict[str, LoadedRow]:
        """The rows of ``keys`` that exist, in one SELECT; a key without a row
        (deleted meanwhile) is absent."""
        rows = await self.rows(self._load_pending, (self.runner, orjson.dumps(keys)))
        return {row[0]: LoadedRow(parse_json(row[1]), *row[2:]) for row in rows}

    async def top_pending_key(self) -> int:
        """The highest numeric key of this runner's rows, of every bus (0 when
        none): new keys go above it, so a new row never lands on a row left
        by a removed bus or rule. (A key that is not a number counts by its
        leading digits, which can only raise the figure.)"""
        top = await self.scalar(
            f"SELECT max({self.dialect.leading_integer('key')}) FROM pending_deliveries"
            " WHERE runner = ?",
            (self.runner,),
        )
        return max(int(top or 0), 0)

    async def rekey_pending(self, keys: dict[str, str]) -> None:
        """Give rows new keys (old key -> new), in one transaction: rows from
        before numeric keys get one, so the retry heap holds small ints."""
        async with self.transaction() as db:
            await db.executemany(
                "UPDATE pending_deliveries SET key = ? WHERE runner = ? AND key = ?",
                [(new, self.runner, old) for old, new in keys.items()],
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
        row = (key, bus, rule, target_id, dump_json(event), ingested, attempts, due, code, message)
        await self.execute(SAVE_PENDING, (self.runner, *row))

    async def delete_pending(self, key: str) -> None:
        await self.execute(
            "DELETE FROM pending_deliveries WHERE runner = ? AND key = ?", (self.runner, key)
        )

    async def pending(self, bus: str) -> list[PendingRow]:
        """This runner's pending deliveries of ``bus``, earliest due first."""
        rows = await self.rows(
            "SELECT key, bus, rule, target_id, event, ingested, attempts, due, error_code,"
            " error_message FROM pending_deliveries WHERE runner = ? AND bus = ?"
            f" ORDER BY due, {self.dialect.leading_integer('key')}, key",
            (self.runner, bus),
        )
        return [
            PendingRow(row[0], row[1], row[2], row[3], parse_json(row[4]), *row[5:]) for row in rows
        ]

    async def runners_with_rows(self) -> list[str]:
        """The other runners that left intake rows or pending retries here."""
        rows = await self.rows(
            "SELECT runner FROM intake WHERE runner <> ?"
            " UNION SELECT runner FROM pending_deliveries WHERE runner <> ?",
            (self.runner, self.runner),
        )
        return sorted(row[0] for row in rows)

    async def join(self, now: float) -> None:
        """Record this runner among those that may leave rows behind."""
        await self.execute(
            self.dialect.upsert("runners", ("runner", "joined"), ("runner",)), (self.runner, now)
        )

    async def other_runners(self) -> list[str]:
        """The other runners recorded (alive or gone: their locks say which)."""
        rows = await self.rows("SELECT runner FROM runners WHERE runner <> ?", (self.runner,))
        return sorted(row[0] for row in rows)

    async def rows_of(self, other: str) -> tuple[list[PendingRow], list[IntakeRow]]:
        """A gone runner's pending retries and intake rows (in its order)."""
        pending = await self.rows(
            "SELECT key, bus, rule, target_id, event, ingested, attempts, due, error_code,"
            " error_message FROM pending_deliveries WHERE runner = ? ORDER BY due, key",
            (other,),
        )
        intake = await self.rows(
            "SELECT seq, bus, event, ingested, addressed FROM intake WHERE runner = ? ORDER BY seq",
            (other,),
        )
        return [
            PendingRow(row[0], row[1], row[2], row[3], parse_json(row[4]), *row[5:])
            for row in pending
        ], [IntakeRow(*row) for row in intake]

    async def take_over(self, other: str, pending: dict[str, str], intake: dict[int, int]) -> None:
        """Make rows of gone runner ``other`` this one's under new numbers
        (old key -> new, old seq -> new), and forget ``other``: one transaction."""
        me = self.runner
        async with self.transaction() as db:
            await db.executemany(
                "UPDATE pending_deliveries SET runner = ?, key = ? WHERE runner = ? AND key = ?",
                [(me, new, other, old) for old, new in pending.items()],
            )
            await db.executemany(
                "UPDATE intake SET runner = ?, seq = ? WHERE runner = ? AND seq = ?",
                [(me, new, other, old) for old, new in intake.items()],
            )
            await db.execute("DELETE FROM runners WHERE runner = ?", (other,))

    async def adopt(self, other: str) -> tuple[int, int]:
        """Make ``other``'s intake rows and pending retries this runner's (a
        runner that is gone: the caller holds its name's lock), numbered
        after this runner's own, in one transaction; how many of each. Call
        it before the intake and the retries are loaded (at start)."""
        integer = self.dialect.leading_integer("key")
        async with self.transaction() as db:
            seq = await db.scalar(
                "SELECT coalesce(max(seq), 0) FROM intake WHERE runner = ?", (self.runner,)
            )
            key = await db.scalar(
                f"SELECT coalesce(max({integer}), 0) FROM pending_deliveries WHERE runner = ?",
                (self.runner,),
            )
            intake = await db.execute(
                "UPDATE intake SET runner = ?, seq = seq + ? WHERE runner = ?",
                (self.runner, int(seq), other),
            )
            # A key is its number in text; one that is not (an old row) keeps
            # its text after a prefix that cannot collide with a number.
            pending = await db.execute(
                "UPDATE pending_deliveries SET runner = ?, key = CASE"
                f" WHEN key = CAST({integer} AS TEXT) THEN CAST({integer} + ? AS TEXT)"
                " ELSE ? || key END WHERE runner = ?",
                (self.runner, int(key), f"{other}:", other),
            )
            await db.execute("DELETE FROM runners WHERE runner = ?", (other,))
        return intake, pending

    async def schedule_marks(self) -> dict[tuple[str, str], ScheduleMark]:
        rows = await self.rows(
            "SELECT bus, rule, fingerprint, anchor, last_due FROM schedule_marks"
        )
        return {(row[0], row[1]): ScheduleMark(*row) for row in rows}

    async def save_schedule_marks(self, marks: Sequence[MarkRow]) -> None:
        """Insert or replace marks, in one transaction and one trip to the
        database (the scheduler saves a turn's marks, up to one per rule, at once)."""
        await self.batch([self.schedule_marks_step(marks)])

    def schedule_marks_step(self, marks: Sequence[MarkRow]) -> Step:
        """The statement that inserts or replaces ``marks``, to run in a
        transaction of the caller's (the durable intake's, ``DurableIntake.ride``)."""
        return Step(self._marks_upsert, marks, many=True)

    async def delete_schedule_mark(self, bus: str, rule: str) -> None:
        await self.execute("DELETE FROM schedule_marks WHERE bus = ? AND rule = ?", (bus, rule))
