"""State machines and their executions, durable in the state database.

``StatesStore`` keeps, on SQLite or PostgreSQL alike (one SQL text, the
``Dialect`` for what differs):

- ``sfn_machines``: each state machine (name, ARN, definition, type
  STANDARD or EXPRESS, role, created/updated, revision; ``origin`` ``api``
  for one CreateStateMachine made, which the stepfunctions API makes a
  resource again after a restart; its ``tags``, JSON), and
  ``sfn_revisions``: the definition of each revision, so an execution
  resumed after the config changed runs the definition it started with;
- ``sfn_executions``: each STANDARD execution (ARN, machine, name, status,
  input, output, error and cause, start and stop dates, redrive count, the
  revision it runs), where it stands (``checkpoint``, JSON: the last
  ``plugins.states.history.Checkpoint``) and who runs it: the runner in
  ``owner`` until ``lease`` (clock seconds), renewed as it goes, as a
  replay is (``pipelines.replay``);
- ``sfn_history``: its history events, in id order;
- ``sfn_children``: the branches and iterations that ended in a Parallel or
  Map under way (by the attempt's key and their index, with their result),
  so that a resumed one does not run them again; gone once the state ended;
- ``sfn_tokens``: the task tokens of ``.waitForTaskToken`` attempts under
  way and their answers (SendTaskSuccess, SendTaskFailure,
  SendTaskHeartbeat), so an answer reaching any runner of a cluster gets to
  the one waiting.

Every write of an execution's progress says who writes it and changes
nothing unless the writer still owns it: a runner whose lease ran out and
whose execution another runner took over learns so at its next write and
stops, instead of both running it. A transition (the events since the last
checkpoint, and the new checkpoint) is one batch: one trip, one transaction.
The starts, transitions and ends of executions written at the same moment
share that trip and transaction (group commit: ``StatesStore.write``), so
twenty executions running at once make one trip where they made twenty.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from pipelines.store import Done, Queries, Row, Step, Store
from plugins.states.history import HistoryEvent

RUNNING = "RUNNING"
SUCCEEDED, FAILED, TIMED_OUT, ABORTED = "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"
ENDED = (SUCCEEDED, FAILED, TIMED_OUT, ABORTED)
STANDARD, EXPRESS = "STANDARD", "EXPRESS"
#: Writes (``StatesStore.write``) sharing one transaction, at most.
GROUP = 64
#: A token's states: waiting for an answer, answered, or over (its attempt ended).
WAITING, ANSWERED = "waiting", "answered"

SCHEMA = """
CREATE TABLE IF NOT EXISTS sfn_machines (
    name         TEXT PRIMARY KEY,
    arn          TEXT NOT NULL UNIQUE,
    definition   TEXT NOT NULL,
    machine_type TEXT NOT NULL,
    role_arn     TEXT NOT NULL,
    created      REAL NOT NULL,
    updated      REAL NOT NULL,
    revision     INTEGER NOT NULL,
    origin       TEXT,
    tags         TEXT
);
CREATE TABLE IF NOT EXISTS sfn_revisions (
    machine    TEXT NOT NULL,
    revision   INTEGER NOT NULL,
    definition TEXT NOT NULL,
    PRIMARY KEY (machine, revision)
);
CREATE TABLE IF NOT EXISTS sfn_executions (
    arn           TEXT PRIMARY KEY,
    machine       TEXT NOT NULL,
    name          TEXT NOT NULL,
    status        TEXT NOT NULL,
    input         TEXT NOT NULL,
    output        TEXT,
    error         TEXT,
    cause         TEXT,
    started       REAL NOT NULL,
    stopped       REAL,
    redrive_count INTEGER NOT NULL DEFAULT 0,
    revision      INTEGER NOT NULL,
    role_arn      TEXT NOT NULL,
    parent        TEXT,
    checkpoint    TEXT,
    last_event    INTEGER NOT NULL DEFAULT 0,
    owner         TEXT,
    lease         REAL,
    stop_request  TEXT
);
CREATE INDEX IF NOT EXISTS sfn_executions_machine ON sfn_executions (machine, started);
CREATE INDEX IF NOT EXISTS sfn_executions_running ON sfn_executions (machine)
    WHERE status = 'RUNNING';
CREATE TABLE IF NOT EXISTS sfn_history (
    execution TEXT NOT NULL,
    id        INTEGER NOT NULL,
    previous  INTEGER NOT NULL,
    at        REAL NOT NULL,
    kind      TEXT NOT NULL,
    details   TEXT,
    PRIMARY KEY (execution, id)
);
CREATE TABLE IF NOT EXISTS sfn_tokens (
    token     TEXT PRIMARY KEY,
    execution TEXT NOT NULL,
    state     TEXT NOT NULL,
    status    TEXT NOT NULL,
    output    TEXT,
    error     TEXT,
    cause     TEXT,
    beat      REAL NOT NULL,
    created   REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sfn_tokens_execution ON sfn_tokens (execution);
CREATE TABLE IF NOT EXISTS sfn_children (
    execution TEXT NOT NULL,
    fork      TEXT NOT NULL,
    idx       INTEGER NOT NULL,
    failed    INTEGER NOT NULL,
    result    TEXT NOT NULL,
    PRIMARY KEY (execution, fork, idx)
);
"""

EXECUTION_COLUMNS = (
    "arn",
    "machine",
    "name",
    "status",
    "input",
    "output",
    "error",
    "cause",
    "started",
    "stopped",
    "redrive_count",
    "revision",
    "role_arn",
    "parent",
    "checkpoint",
    "last_event",
)


@dataclass(frozen=True, slots=True)
class MachineRecord:
    name: str
    arn: str
    definition: str
    machine_type: str
    role_arn: str
    created: float
    updated: float
    revision: int

    def describe(self) -> dict[str, Any]:
        """DescribeStateMachine's fields (dates as epoch seconds)."""
        return {
            "stateMachineArn": self.arn,
            "name": self.name,
            "status": "ACTIVE",
            "definition": self.definition,
            "roleArn": self.role_arn,
            "type": self.machine_type,
            "creationDate": self.created,
            "revisionId": str(self.revision),
        }


@dataclass(frozen=True, slots=True)
class ExecutionRecord:
    arn: str
    machine: str
    name: str
    status: str
    input: str
    output: str | None
    error: str | None
    cause: str | None
    started: float
    stopped: float | None
    redrive_count: int
    revision: int
    role_arn: str
    parent: str | None
    #: the last checkpoint (``Checkpoint.to_json``), None before the first
    checkpoint: Any
    last_event: int

    @classmethod
    def from_row(cls, row: Row) -> ExecutionRecord:
        values = list(row)
        checkpoint = values[14]
        values[14] = None if checkpoint is None else orjson.loads(checkpoint)
        return cls(*values)

    def describe(self, machine_arn: str) -> dict[str, Any]:
        """DescribeExecution's fields (dates as epoch seconds)."""
        out: dict[str, Any] = {
            "executionArn": self.arn,
            "stateMachineArn": machine_arn,
            "name": self.name,
            "status": self.status,
            "startDate": self.started,
            "input": self.input,
            "inputDetails": {"included": True},
            "redriveCount": self.redrive_count,
        }
        if self.stopped is not None:
            out["stopDate"] = self.stopped
        if self.status == SUCCEEDED:
            out["output"] = self.output
            out["outputDetails"] = {"included": True}
        if self.error is not None:
            out["error"] = self.error
        if self.cause is not None:
            out["cause"] = self.cause
        return out


@dataclass(frozen=True, slots=True)
class TokenRecord:
    token: str
    execution: str
    state: str
    status: str
    output: str | None
    error: str | None
    cause: str | None
    beat: float


def _event_rows(events: Sequence[HistoryEvent]) -> bytes:
    """Events as one JSON array (``_insert_events``' one parameter): each
    ``[id, previous, at, kind, details]``, the details as JSON text, stored
    as written."""
    return orjson.dumps(
        [
            (
                e.id,
                e.previous_event_id,
                e.timestamp,
                e.type,
                None if e.details is None else orjson.dumps(e.details).decode(),
            )
            for e in events
        ]
    )


class StatesStore(Store):
    """The state machines' tables: ``await StatesStore.open(state, clock)``."""

    name = "states"
    version = 3
    schema = SCHEMA

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        #: writes waiting for the next trip, and the task writing them (``write``)
        self._waiting: list[tuple[list[Step], asyncio.Future[list[Done]]]] = []
        self._writing: asyncio.Task[None] | None = None

    async def close(self) -> None:
        """Close, once the writes handed over are written."""
        if self._writing is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._writing)
        await super().close()

    # -- group commit ---------------------------------------------------------------

    def write(self, steps: list[Step]) -> asyncio.Future[list[Done]]:
        """``batch(steps)`` in a trip and a transaction shared with the other
        writes handed over meanwhile (group commit): handed over now, the
        future of what its steps did. Every statement an execution writes
        is conditional on its owner, so one write's nothing-changed does not
        concern the others; a failing statement fails the whole trip, whose
        writes then go again one by one, so it fails its own caller only.
        A write whose caller is cancelled before its trip leaves is not
        written (one cancelled after it left may be)."""
        done: asyncio.Future[list[Done]] = asyncio.get_running_loop().create_future()
        self._waiting.append((steps, done))
        if self._writing is None:
            # Started at the loop's next turn: the writes handed over in this
            # one (executions running at once) go together.
            self._writing = asyncio.ensure_future(self._write_waiting())
        return done

    async def _write_waiting(self) -> None:
        try:
            while self._waiting:
                group = [w for w in self._waiting[:GROUP] if not w[1].done()]
                del self._waiting[:GROUP]
                try:
                    if len(group) == 1:
                        await self._write_alone(*group[0])
                    elif group:
                        await self._write_group(group)
                except BaseException:  # cancelled (the loop ends): nobody is left waiting
                    for _, done in group:
                        done.cancel()
                    raise
        finally:
            self._writing = None
            for _, done in self._waiting:  # cancelled: the runner is stopping
                done.cancel()
            self._waiting.clear()

    async def _write_alone(self, steps: list[Step], done: asyncio.Future[list[Done]]) -> None:
        try:
            if len(steps) == 1 and not steps[0].many:
                # one statement is its own transaction, without BEGIN and COMMIT
                rows = await self.rows(steps[0].sql, steps[0].parameters)
                result = [Done(rows, len(rows))]
            else:
                result = await self.batch(steps)
        except Exception as exc:
            if not done.done():
                done.set_exception(exc)
            return
        if not done.done():
            done.set_result(result)

    async def _write_group(
        self, group: list[tuple[list[Step], asyncio.Future[list[Done]]]]
    ) -> None:
        try:
            result = await self.batch([step for steps, _ in group for step in steps])
        except Exception:
            for steps, done in group:
                await self._write_alone(steps, done)
            return
        at = 0
        for steps, done in group:
            if not done.done():
                done.set_result(result[at : at + len(steps)])
            at += len(steps)

    async def migrate(self, connection: Queries, found: int) -> None:
        """Version 1 did not know which machines the API made, nor their tags;
        version 3 added ``sfn_children`` (``schema`` creates it)."""
        if found < 2:
            for column in ("origin TEXT", "tags TEXT"):
                await connection.execute(f"ALTER TABLE sfn_machines ADD COLUMN {column}")

    # -- state machines -----------------------------------------------------------

    async def put_machine(
        self,
        name: str,
        arn: str,
        definition: str,
        machine_type: str,
        role_arn: str,
    ) -> MachineRecord:
        """Record a state machine as declared (CreateStateMachine, or a
        config's resource at start): a new revision when its definition,
        type or role changed, else the one stored."""
        now = self.clock.time()
        async with self.transaction() as db:
            found = await db.one(
                f"SELECT {_MACHINE} FROM sfn_machines WHERE name = ?{self.dialect.for_update}",
                (name,),
            )
            if found is not None:
                current = MachineRecord(*found)
                same = (current.definition, current.machine_type, current.role_arn, current.arn)
                if same == (definition, machine_type, role_arn, arn):
                    return current
                record = MachineRecord(
                    name, arn, definition, machine_type, role_arn, current.created, now,
                    current.revision + 1,
                )  # fmt: skip
                await db.execute(
                    "UPDATE sfn_machines SET arn = ?, definition = ?, machine_type = ?,"
                    " role_arn = ?, updated = ?, revision = ? WHERE name = ?",
                    (arn, definition, machine_type, role_arn, now, record.revision, name),
                )
            else:
                record = MachineRecord(name, arn, definition, machine_type, role_arn, now, now, 1)
                await db.execute(
                    f"INSERT INTO sfn_machines ({_MACHINE}) VALUES ({self.dialect.marks(8)})",
                    (name, arn, definition, machine_type, role_arn, now, now, 1),
                )
            await db.execute(
                self.dialect.insert_new("sfn_revisions", ("machine", "revision", "definition")),
                (name, record.revision, definition),
            )
        return record

    async def machine(self, name: str) -> MachineRecord | None:
        found = await self.reader.one(
            f"SELECT {_MACHINE} FROM sfn_machines WHERE name = ?", (name,)
        )
        return None if found is None else MachineRecord(*found)

    async def machines(self) -> list[MachineRecord]:
        rows = await self.reader.rows(f"SELECT {_MACHINE} FROM sfn_machines ORDER BY name")
        return [MachineRecord(*row) for row in rows]

    async def made_by_api(self) -> list[MachineRecord]:
        """The machines CreateStateMachine made (``mark_api``), by name."""
        rows = await self.reader.rows(
            f"SELECT {_MACHINE} FROM sfn_machines WHERE origin = 'api' ORDER BY name"
        )
        return [MachineRecord(*row) for row in rows]

    async def mark_api(self, name: str) -> None:
        """Note that the API made ``name`` (the API makes it a resource again after a restart)."""
        await self.execute("UPDATE sfn_machines SET origin = 'api' WHERE name = ?", (name,))

    async def tags(self, name: str) -> dict[str, str]:
        found = await self.reader.scalar("SELECT tags FROM sfn_machines WHERE name = ?", (name,))
        loaded: dict[str, str] = orjson.loads(found) if found else {}
        return loaded

    async def set_tags(self, name: str, tags: dict[str, str]) -> None:
        await self.execute(
            "UPDATE sfn_machines SET tags = ? WHERE name = ?", (orjson.dumps(tags).decode(), name)
        )

    async def delete_machine(self, name: str) -> None:
        """Forget a state machine and its revisions (DeleteStateMachine); its
        executions and their histories stay describable."""
        await self.batch(
            [
                Step("DELETE FROM sfn_revisions WHERE machine = ?", (name,)),
                Step("DELETE FROM sfn_machines WHERE name = ?", (name,)),
            ]
        )

    async def definition(self, machine: str, revision: int) -> str | None:
        found: str | None = await self.reader.scalar(
            "SELECT definition FROM sfn_revisions WHERE machine = ? AND revision = ?",
            (machine, revision),
        )
        return found

    # -- executions: made, claimed, written by their owner --------------------------

    async def create_execution(self, record: ExecutionRecord, owner: str, lease: float) -> bool:
        """Insert a new RUNNING execution owned by ``owner`` until ``lease``;
        False when one with its ARN exists."""
        columns = (*EXECUTION_COLUMNS, "owner", "lease")
        values = list(_execution_values(record))
        insert = self.dialect.insert_new("sfn_executions", columns) + " RETURNING arn"
        done = await self.write([Step(insert, (*values, owner, lease))])
        return len(done[0].rows) == 1

    def _create_step(self, record: ExecutionRecord, owner: str, lease: float) -> Step:
        """The INSERT of a new execution (a plain one: its ARN taken fails
        the transaction it is in, with ``ExecutionExists``)."""
        columns = (*EXECUTION_COLUMNS, "owner", "lease")
        return Step(
            f"INSERT INTO sfn_executions ({', '.join(columns)})"
            f" VALUES ({self.dialect.marks(len(columns))})",
            (*_execution_values(record), owner, lease),
        )

    async def _write_creating(
        self, steps: list[Step], create: ExecutionRecord | None, owner: str, lease: float
    ) -> list[Done]:
        """``write(steps)``; with ``create``, that execution made first in the
        same transaction (owned by ``owner`` until ``lease``):
        ``ExecutionExists`` when its ARN is taken, and nothing written."""
        if create is None:
            return await self.write(steps)
        try:
            done = await self.write([self._create_step(create, owner, lease), *steps])
        except Exception as exc:
            if _is_conflict(exc):
                raise ExecutionExists(create.arn) from None
            raise
        return done[1:]

    async def claimable(self, machines: Sequence[str], owner: str, now: float) -> list[str]:
        """The RUNNING executions of ``machines`` that no live runner runs:
        let go of (a graceful stop), their lease over (their runner died), or
        already ``owner``'s. On a SQLite file (one runner) every one is."""
        if not machines:
            return []
        if self.dialect.name == "sqlite":
            now = math.inf
        rows = await self.reader.rows(
            "SELECT arn FROM sfn_executions WHERE status = 'RUNNING'"
            f" AND machine IN ({self.dialect.marks(len(machines))})"
            " AND (owner IS NULL OR owner = ? OR lease < ?) ORDER BY started, arn",
            (*machines, owner, now),
        )
        return [arn for (arn,) in rows]

    async def claim(self, arn: str, owner: str, now: float, lease: float) -> bool:
        """Take a RUNNING execution that no live runner runs (as
        ``claimable``), or that ``owner`` holds: whether ``owner`` now holds
        it, until ``lease``. Of runners claiming one at once, exactly one does."""
        if self.dialect.name == "sqlite":
            now = math.inf
        changed = await self.execute(
            "UPDATE sfn_executions SET owner = ?, lease = ? WHERE arn = ? AND status = 'RUNNING'"
            " AND (owner IS NULL OR owner = ? OR lease < ?)",
            (owner, lease, arn, owner, now),
        )
        return changed == 1

    async def transition(
        self,
        arn: str,
        owner: str,
        lease: float,
        events: Sequence[HistoryEvent],
        checkpoint: dict[str, Any],
        children: Sequence[tuple[str, int, bool, Any]] = (),
        *,
        clear: bool = False,
        create: ExecutionRecord | None = None,
    ) -> str | None:
        """Write the events since the last transition and the new checkpoint,
        renewing the lease, in one transaction, if ``owner`` still holds the
        execution; with the branches and iterations ended meanwhile
        (``children``: fork, index, failed, result), or, ``clear``, without
        any kept before (their Parallel or Map has ended). None when it does
        not hold it (nothing written); else the stop asked of it by another
        runner (``request_abort``), or "". ``create``: the execution is made
        in the same transaction (its start written with its first transition)."""
        last = events[-1].id if events else None
        steps = [self._events_step(arn, owner, events)]
        if children:
            steps.append(self._children_step(arn, owner, children))
        if clear:
            steps.append(self._clear_step(arn, owner))
        steps += [
            Step(
                "UPDATE sfn_executions SET checkpoint = ?, lease = ?,"
                " last_event = COALESCE(?, last_event)"
                " WHERE arn = ? AND owner = ? AND status = 'RUNNING' RETURNING stop_request",
                (orjson.dumps(checkpoint).decode(), lease, last, arn, owner),
            ),
        ]
        done = await self._write_creating(steps, create, owner, lease)
        rows = done[-1].rows
        if not rows:
            return None
        return rows[0][0] or ""

    async def finish(
        self,
        arn: str,
        owner: str,
        events: Sequence[HistoryEvent],
        status: str,
        output: str | None,
        error: str | None,
        cause: str | None,
        stopped: float,
        redrive_point: dict[str, Any] | None = None,
        *,
        clear: bool = False,
        tokens: bool = True,
        create: ExecutionRecord | None = None,
    ) -> bool:
        """Write the last events and the execution's end, and let it go, if
        ``owner`` still holds it; its tokens are over (``tokens``: it may
        have some), and (``clear``) the branches and iterations it kept.
        Whether it did. ``redrive_point``: where a redrive would start (kept
        as its checkpoint). ``create``: the execution is made in the same
        transaction (started and ended in one)."""
        last = events[-1].id if events else None
        steps = [self._events_step(arn, owner, events)]
        if clear:
            steps.append(self._clear_step(arn, owner))
        if tokens:
            steps.append(
                Step(
                    "DELETE FROM sfn_tokens WHERE execution = ? AND EXISTS (SELECT 1 FROM"
                    " sfn_executions WHERE arn = ? AND owner = ? AND status = 'RUNNING')",
                    (arn, arn, owner),
                )
            )
        steps += [
            Step(
                "UPDATE sfn_executions SET status = ?, output = ?, error = ?, cause = ?,"
                " stopped = ?, checkpoint = ?, owner = NULL, lease = NULL, stop_request = NULL,"
                " last_event = COALESCE(?, last_event)"
                " WHERE arn = ? AND owner = ? AND status = 'RUNNING'",
                (
                    status,
                    output,
                    error,
                    cause,
                    stopped,
                    _json_or_null(redrive_point),
                    last,
                    arn,
                    owner,
                ),
            ),
        ]
        done = await self._write_creating(steps, create, owner, 0.0)
        return done[-1].changed == 1

    def _events_step(self, arn: str, owner: str, events: Sequence[HistoryEvent]) -> Step:
        """The INSERT of ``events`` if ``owner`` holds the execution: one
        statement whatever their number (a JSON array), not one per event."""
        d = self.dialect
        kinds = ("integer", "integer", "real", "text", "text")
        items = ", ".join(d.json_item("e", n, kind) for n, kind in enumerate(kinds))
        return Step(
            "INSERT INTO sfn_history (execution, id, previous, at, kind, details)"
            f" SELECT ?, {items} FROM {d.json_rows('e')} WHERE EXISTS (SELECT 1"
            " FROM sfn_executions WHERE arn = ? AND owner = ? AND status = 'RUNNING')",
            (arn, _event_rows(events), arn, owner),
        )

    def _children_step(
        self, arn: str, owner: str, children: Sequence[tuple[str, int, bool, Any]]
    ) -> Step:
        d = self.dialect
        kinds = ("text", "integer", "integer", "text")
        items = ", ".join(d.json_item("c", n, kind) for n, kind in enumerate(kinds))
        rows = [(fork, index, int(failed), orjson.dumps(result).decode())
                for fork, index, failed, result in children]  # fmt: skip
        return Step(
            "INSERT INTO sfn_children (execution, fork, idx, failed, result)"
            f" SELECT ?, {items} FROM {d.json_rows('c')} WHERE EXISTS (SELECT 1"
            " FROM sfn_executions WHERE arn = ? AND owner = ? AND status = 'RUNNING')"
            " ON CONFLICT DO NOTHING",
            (arn, orjson.dumps(rows), arn, owner),
        )

    def _clear_step(self, arn: str, owner: str) -> Step:
        return Step(
            "DELETE FROM sfn_children WHERE execution = ? AND EXISTS (SELECT 1 FROM"
            " sfn_executions WHERE arn = ? AND owner = ? AND status = 'RUNNING')",
            (arn, arn, owner),
        )

    async def children(self, arn: str) -> dict[str, dict[int, tuple[bool, Any]]]:
        """The branches and iterations kept (``transition``'s ``children``):
        by fork and index, (failed, result)."""
        rows = await self.reader.rows(
            "SELECT fork, idx, failed, result FROM sfn_children WHERE execution = ?", (arn,)
        )
        out: dict[str, dict[int, tuple[bool, Any]]] = {}
        for fork, index, failed, result in rows:
            out.setdefault(fork, {})[index] = (bool(failed), orjson.loads(result))
        return out

    async def renew(self, owner: str, lease: float) -> dict[str, str]:
        """Extend ``owner``'s lease of every execution it runs: each one it
        still holds, with the stop another runner asked of it ("" for none)."""
        rows = await self.rows(
            "UPDATE sfn_executions SET lease = ? WHERE owner = ? AND status = 'RUNNING'"
            " RETURNING arn, stop_request",
            (lease, owner),
        )
        return {arn: stop or "" for arn, stop in rows}

    async def release(self, owner: str, arns: Iterable[str]) -> None:
        """Let go of executions (a graceful stop): the next runner to look takes them."""
        arns = list(arns)
        if arns:
            await self.execute(
                "UPDATE sfn_executions SET owner = NULL, lease = NULL WHERE owner = ?"
                f" AND arn IN ({self.dialect.marks(len(arns))})",
                (owner, *arns),
            )

    async def request_abort(self, arn: str, error: str | None, cause: str | None) -> bool:
        """Ask the runner running an execution to stop it (StopExecution
        reaching another runner): it does at its next transition or renewal."""
        changed = await self.execute(
            "UPDATE sfn_executions SET stop_request = ? WHERE arn = ? AND status = 'RUNNING'",
            (orjson.dumps({"error": error, "cause": cause}).decode(), arn),
        )
        return changed == 1

    # -- reading executions -------------------------------------------------------

    async def execution(self, arn: str) -> ExecutionRecord | None:
        found = await self.reader.one(
            f"SELECT {', '.join(EXECUTION_COLUMNS)} FROM sfn_executions WHERE arn = ?", (arn,)
        )
        return None if found is None else ExecutionRecord.from_row(found)

    async def executions(
        self, machine: str | None = None, status: str | None = None, limit: int | None = None
    ) -> list[ExecutionRecord]:
        """Executions newest first (ListExecutions' order), of one machine or
        all, in one status or any."""
        query = f"SELECT {', '.join(EXECUTION_COLUMNS)} FROM sfn_executions WHERE 1 = 1"
        parameters: list[Any] = []
        if machine is not None:
            query += " AND machine = ?"
            parameters.append(machine)
        if status is not None:
            query += " AND status = ?"
            parameters.append(status)
        query += " ORDER BY started DESC, arn DESC"
        if limit is not None:
            query += " LIMIT ?"
            parameters.append(limit)
        rows = await self.reader.rows(query, parameters)
        return [ExecutionRecord.from_row(row) for row in rows]

    async def owner(self, arn: str) -> tuple[str | None, float | None]:
        found = await self.reader.one(
            "SELECT owner, lease FROM sfn_executions WHERE arn = ?", (arn,)
        )
        return (None, None) if found is None else (found[0], found[1])

    async def history(self, arn: str, *, after: int = 0) -> list[HistoryEvent]:
        """An execution's events in id order (those with an id above ``after``)."""
        rows = await self.reader.rows(
            "SELECT id, previous, at, kind, details FROM sfn_history"
            " WHERE execution = ? AND id > ? ORDER BY id",
            (arn, after),
        )
        return [
            HistoryEvent(id, previous, timestamp, type, None if d is None else orjson.loads(d))
            for id, previous, timestamp, type, d in rows
        ]

    # -- task tokens ------------------------------------------------------------------

    async def add_token(self, token: str, execution: str, state: str) -> None:
        """A ``.waitForTaskToken`` attempt's token, before its resource is
        called (whoever gets it may answer at once)."""
        now = self.clock.time()
        await self.execute(
            self.dialect.insert_new(
                "sfn_tokens", ("token", "execution", "state", "status", "beat", "created")
            ),
            (token, execution, state, WAITING, now, now),
        )

    async def token(self, token: str) -> TokenRecord | None:
        found = await self.one(
            "SELECT token, execution, state, status, output, error, cause, beat"
            " FROM sfn_tokens WHERE token = ?",
            (token,),
        )
        return None if found is None else TokenRecord(*found)

    async def answer_token(
        self, token: str, output: str | None, error: str | None, cause: str | None
    ) -> bool:
        """Record SendTaskSuccess (``output``) or SendTaskFailure (``error``,
        ``cause``) for a waiting token: whether it was waiting (the first
        answer wins)."""
        changed = await self.execute(
            "UPDATE sfn_tokens SET status = ?, output = ?, error = ?, cause = ?"
            " WHERE token = ? AND status = ?",
            (ANSWERED, output, error, cause, token, WAITING),
        )
        return changed == 1

    async def beat_token(self, token: str) -> bool:
        """SendTaskHeartbeat: whether the token was waiting."""
        changed = await self.execute(
            "UPDATE sfn_tokens SET beat = ? WHERE token = ? AND status = ?",
            (self.clock.time(), token, WAITING),
        )
        return changed == 1

    async def tokens(self, tokens: Sequence[str]) -> list[TokenRecord]:
        """The stored state of several tokens (a waiting runner's poll)."""
        if not tokens:
            return []
        rows = await self.reader.rows(
            "SELECT token, execution, state, status, output, error, cause, beat FROM sfn_tokens"
            f" WHERE token IN ({self.dialect.marks(len(tokens))})",
            tuple(tokens),
        )
        return [TokenRecord(*row) for row in rows]

    async def drop_token(self, token: str) -> None:
        await self.execute("DELETE FROM sfn_tokens WHERE token = ?", (token,))

    # -- redrives (RedriveExecution; plugins.states.redrive) ------------------------------

    async def redrive(
        self,
        arn: str,
        owner: str,
        lease: float,
        redrive_count: int,
        event: HistoryEvent,
        checkpoint: dict[str, Any],
    ) -> bool:
        """Make an ended execution RUNNING again, owned by ``owner``, from ``checkpoint``,
        its ExecutionRedriven ``event`` written, in one transaction; only if it is still
        ended and redriven ``redrive_count - 1`` times (of two redrives at once, one
        does). Whether it did."""
        steps = [
            Step(
                "UPDATE sfn_executions SET status = 'RUNNING', output = NULL, error = NULL,"
                " cause = NULL, stopped = NULL, redrive_count = ?, checkpoint = ?, last_event = ?,"
                " owner = ?, lease = ?, stop_request = NULL WHERE arn = ?"
                " AND status IN ('FAILED', 'TIMED_OUT', 'ABORTED') AND redrive_count = ?",
                (
                    redrive_count,
                    orjson.dumps(checkpoint).decode(),
                    event.id,
                    owner,
                    lease,
                    arn,
                    redrive_count - 1,
                ),
            ),
            self._events_step(arn, owner, [event]),
        ]
        done = await self.batch(steps)
        return done[0].changed == 1

    async def redrive_dates(self, arns: Sequence[str]) -> dict[str, float]:
        """When each of ``arns`` was last redriven (those never redriven are left out)."""
        if not arns:
            return {}
        rows = await self.reader.rows(
            "SELECT execution, MAX(at) FROM sfn_history WHERE kind = 'ExecutionRedriven'"
            f" AND execution IN ({self.dialect.marks(len(arns))}) GROUP BY execution",
            tuple(arns),
        )
        return {arn: float(at) for arn, at in rows}


_MACHINE = "name, arn, definition, machine_type, role_arn, created, updated, revision"


class ExecutionExists(Exception):
    """An execution was to be made with an ARN another one has."""


def _is_conflict(exc: Exception) -> bool:
    """Whether ``exc`` is either engine's unique-constraint violation."""
    if isinstance(exc, sqlite3.IntegrityError):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    return isinstance(exc, psycopg.IntegrityError)


def _json_or_null(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _execution_values(record: ExecutionRecord) -> tuple[Any, ...]:
    checkpoint = None if record.checkpoint is None else orjson.dumps(record.checkpoint).decode()
    return (
        record.arn,
        record.machine,
        record.name,
        record.status,
        record.input,
        record.output,
        record.error,
        record.cause,
        record.started,
        record.stopped,
        record.redrive_count,
        record.revision,
        record.role_arn,
        record.parent,
        checkpoint,
        record.last_event,
    )
