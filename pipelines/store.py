"""The store layer: what every durable store of the state database shares.

A *store* (``QueueStore``, ``StreamStore``, ``LogStore``, ``MetricStore``,
``ArchiveStore``, ``AlarmStore``, ``StateDB``) owns some tables of the state
database and offers an API over them. ``Store`` gives each one, once:

- opening: ``await SomeStore.open(path, ...)`` creates the database if need
  be; ``async with SomeStore.existing(path, ...)`` opens one that must exist
  and never creates one (what a CLI reading a pipeline's state wants: a
  mistyped path is an error naming it, not a new empty database);
- ``async with`` and ``close()``;
- ONE writer connection with its lock: ``rows``/``one``/``scalar``/``execute``
  run one statement alone on it, ``transaction()`` runs several in one
  ``BEGIN IMMEDIATE`` transaction, ``exclusive()`` several in a row with no
  other coroutine's statement in between (each its own transaction);
  ``batch(steps)`` runs several statements in ONE trip to the database
  (one transaction, all or nothing), and ``grouped(sql)`` runs one statement
  in a trip it shares with the statements other coroutines submit at the
  same moment (group commit: under load, fewer and bigger transactions;
  ``share(sql)`` is the same, handed over before it is awaited);
  ``gather(key, ...)`` goes further: callers arriving while a statement
  waits for its trip join it (a ``Gathering``: one statement for all of
  them, each answered with its share of the rows). Work is
  handed to the connection at once; the lock is held only while a
  transaction is open, so no statement lands inside another's;
- schema and versions: a store declares its ``name``, ``version`` and DDL
  (``schema``); the ``store_versions`` table records what each database has,
  and ``migrate`` is where a later version brings an older database up;
- periodic upkeep (retention, purges) declared as ``Upkeep`` values, which
  the runtime runs as owned tasks (``TargetServices.upkeep``).

The *backend* (``Backend``, ``Connection``, ``Dialect``) is the database
engine: how to connect, run a statement, begin and end a transaction, and
the few SQL spellings that differ between engines. Stores write their SQL
with ``?`` placeholders in what SQLite and PostgreSQL share, and take the
rest from ``self.dialect``. SQLite is the one backend today: the stdlib's
``sqlite3``, each connection on a thread of its own (``SQLiteConnection``),
which takes the work handed over in order and, for shared statements, all
of those waiting at once as one trip.

``pipelines.state`` stays the module of the state database's own tables
(pending deliveries, schedule marks): a store like the others, now on this
base. This module holds no tables, only what they share.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import logging
import os
import queue
import re
import sqlite3
import threading
import time
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

from pipelines.clock import Clock, SystemClock, sleep
from pipelines.errors import StateError

log = logging.getLogger("pipelines.store")

#: A result row: a tuple of column values (a backend whose driver has its own
#: row type hands over tuples).
Row = tuple[Any, ...]
#: Statement parameters: positional (``?``) or named (``:name``).
Parameters = Sequence[Any] | Mapping[str, Any]
#: A scalar SQL function a store's statements call: (number of arguments, function).
SQLFunction = tuple[int, Callable[..., Any]]

IN_MEMORY = Path(":memory:")
#: Where a database is: a SQLite file's path, or a PostgreSQL URL (text).
Location = Path | str


@dataclass(frozen=True, slots=True)
class Step:
    """One statement of a ``batch``: ``sql`` with its ``parameters``, or, when
    ``many``, with each parameter set of the iterable ``parameters`` in turn
    (``executemany``)."""

    sql: str
    parameters: Any = ()
    many: bool = False


@dataclass(frozen=True, slots=True)
class Done:
    """What one step of a batch did: the rows it returned (none for most
    writes, or a ``RETURNING`` clause's) and how many rows it changed."""

    rows: list[Row]
    changed: int


@dataclass(frozen=True, slots=True)
class Trip:
    """What a connection runs in one go: ``steps`` in order, in one
    transaction when ``transaction`` (its commit synced to the disk when
    ``synced``), else each alone or in the caller's transaction."""

    steps: list[Step]
    transaction: bool
    synced: bool = False


class Gathering(ABC):
    """One statement that several callers' requests make together: the
    requests (``parts``) of callers arriving while it waits for its trip
    join it (``add``), and the connection takes its statement (``taken``)
    when the trip leaves, after which nobody joins. Each caller gets its
    own share of the rows (``split``). Concurrent consumers of a queue then
    make one claim, and one delete, per trip instead of one each.

    The connection's thread takes it while the event loop may be adding to
    it, hence the lock. A caller cancelled after joining stays in: its part
    runs with the others (a store undoes it, if need be, once the rows say
    what it got: ``outcome``)."""

    #: The most parts one statement takes (then the next caller starts another).
    capacity: ClassVar[int] = 10

    def __init__(self) -> None:
        self.parts: list[Any] = []
        self._waiting: list[asyncio.Future[list[Row]]] = []
        self._lock = threading.Lock()
        self._open = True
        #: The future of the whole statement's rows, once handed over
        #: (``Store.gather``): a cancelled caller's share is read from it.
        self.outcome: asyncio.Future[list[Row]] | None = None

    def add(self, part: Any) -> tuple[asyncio.Future[list[Row]], int] | None:
        """Join: the future of this part's rows and its index among the
        parts; None when the statement has left or is full."""
        with self._lock:
            if not self._open or len(self.parts) >= self.capacity or not self.accepts(part):
                return None
            future: asyncio.Future[list[Row]] = asyncio.get_running_loop().create_future()
            self.parts.append(part)
            self._waiting.append(future)
            return future, len(self.parts) - 1

    def taken(self) -> Step:
        """The statement of every part joined, as its trip leaves (on the
        connection's thread, or its task): nobody joins after this."""
        with self._lock:
            self._open = False
        return self.statement()

    def accepts(self, part: Any) -> bool:
        """Whether ``part`` may join those already in (under the lock; if
        not, its caller starts another statement)."""
        return True

    @abstractmethod
    def statement(self) -> Step:
        """The one statement doing what every part asks."""

    @abstractmethod
    def split(self, rows: list[Row]) -> list[list[Row]]:
        """The statement's rows, as each part's share (in the parts' order)."""

    def settle(self, outcome: asyncio.Future[list[Row]]) -> None:
        """Each caller answered with its share of ``outcome``, or its error."""
        error = None if outcome.cancelled() else outcome.exception()
        if outcome.cancelled() or error is not None:
            for future in self._waiting:
                if not future.done():
                    if error is None:
                        future.cancel()
                    else:
                        future.set_exception(error)
            return
        for future, share in zip(self._waiting, self.split(outcome.result()), strict=True):
            if not future.done():
                future.set_result(share)


def statement_of(step: Step | Gathering) -> Step:
    """The statement to run: ``step``, or what a gathering has come to."""
    return step.taken() if isinstance(step, Gathering) else step


VERSIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS store_versions (
    store   TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    applied REAL NOT NULL
);
"""


# -- the backend: one database engine ------------------------------------------------


class Queries(ABC):
    """Statements on a database: what a store runs, alone or in a transaction."""

    @abstractmethod
    async def rows(self, sql: str, parameters: Parameters = ()) -> list[Row]:
        """Run one statement; every row it returns (none for most writes)."""

    @abstractmethod
    async def execute(self, sql: str, parameters: Parameters = ()) -> int:
        """Run one statement; how many rows it changed."""

    @abstractmethod
    async def executemany(self, sql: str, parameters: Iterable[Parameters]) -> int:
        """Run one statement once per parameter set; how many rows changed."""

    async def one(self, sql: str, parameters: Parameters = ()) -> Row | None:
        """The first row of one statement, or None."""
        found = await self.rows(sql, parameters)
        return found[0] if found else None

    async def scalar(self, sql: str, parameters: Parameters = ()) -> Any:
        """The first column of the first row of one statement, or None."""
        found = await self.rows(sql, parameters)
        return found[0][0] if found else None


class Connection(Queries):
    """One connection of a backend, in autocommit mode: a statement outside
    ``begin``/``commit`` is its own transaction."""

    @abstractmethod
    async def script(self, sql: str) -> None:
        """Run several statements (DDL)."""

    @abstractmethod
    async def begin(self) -> None:
        """Begin a write transaction, holding the database's write lock at once."""

    @abstractmethod
    async def commit(self) -> None: ...

    @abstractmethod
    async def rollback(self) -> None:
        """Roll back; no error when no transaction is open (it may not have begun)."""

    @abstractmethod
    async def close(self) -> None: ...

    async def batch(
        self, steps: Sequence[Step], *, transaction: bool = True, synced: bool = False
    ) -> list[Done]:
        """Run ``steps`` in order, in one transaction when ``transaction`` (else
        in the caller's, or each alone); what each did. All or nothing: on an
        error the transaction is rolled back and the error raised. ``synced``:
        this transaction's commit reaches the disk before it returns, whatever
        the connection's usual setting (an archive with ``durability: strict``).

        A backend runs the whole plan in one trip to its database (SQLite: one
        hand-over to its thread), so a cancelled caller leaves no
        transaction half done: the plan commits or rolls back as a whole, and
        the caller just does not learn which. This default, statement by
        statement, is for backends that have no such trip."""
        if synced:
            raise NotImplementedError(f"{type(self).__name__} has no synced batch")
        if transaction:
            await self.begin()
        try:
            done = [await self._step(step) for step in steps]
            if transaction:
                await self.commit()
        except BaseException:
            if transaction:
                await asyncio.shield(self.rollback())
            raise
        return done

    def submit(
        self, steps: Sequence[Step], *, transaction: bool = True, synced: bool = False
    ) -> asyncio.Future[list[Done]]:
        """``batch``, handed over now: the future of what it did. Work handed
        over runs in the order it was handed over, so a caller holding the
        store's lock only while it hands over keeps its place. This default
        runs ``batch`` in a task: handed over at the loop's next turn, in
        the order of the calls."""
        return asyncio.ensure_future(self.batch(steps, transaction=transaction, synced=synced))

    def share(self, step: Step | Gathering) -> asyncio.Future[list[Row]]:
        """One statement that may share a trip (and its transaction) with the
        others handed over meanwhile; handed over now, the future of its
        rows. If a shared trip fails, each of its statements goes again
        alone, so that a failing statement fails its own caller only. A
        ``Gathering`` becomes its statement when its trip leaves. This
        default runs it alone."""

        async def alone() -> list[Row]:
            return (await self.batch([statement_of(step)], transaction=False))[0].rows

        return asyncio.ensure_future(alone())

    async def shared(self, step: Step) -> list[Row]:
        """``share``, awaited at once: its rows. A backend may run it in the
        caller's task then, with no task of its own."""
        return await self.share(step)

    async def _step(self, step: Step) -> Done:
        if step.many:
            return Done([], await self.executemany(step.sql, step.parameters))
        rows = await self.rows(step.sql, step.parameters)
        return Done(rows, len(rows))


class Dialect:
    """The SQL spellings that differ between engines, as SQLite writes them.

    What SQLite and PostgreSQL both accept stays in the stores' SQL
    (``ON CONFLICT``, ``RETURNING``); a backend with other spellings gives
    its own ``Dialect``."""

    #: The engine's name: the key of a store's engine-only DDL (``Store.engine_schema``).
    name = "sqlite"
    #: A statement run first in the transaction that applies a store's schema,
    #: so that runners opening one database at once do not race (PostgreSQL's
    #: DDL is transactional; SQLite's write lock already serializes it).
    schema_lock: str | None = None

    def ddl(self, statement: str) -> str:
        """One DDL statement in this engine's type names, to ``execute``
        inside a transaction (``script`` commits first on SQLite)."""
        return statement

    def marks(self, count: int) -> str:
        """``count`` placeholders for an ``IN (...)`` list or a VALUES row."""
        return ", ".join("?" * count)

    def upsert(self, table: str, columns: Sequence[str], key: Sequence[str]) -> str:
        """INSERT a row, or update the one with the same ``key`` to it."""
        updated = [column for column in columns if column not in key]
        assignments = ", ".join(f"{column} = excluded.{column}" for column in updated)
        return (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({self.marks(len(columns))})"
            f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {assignments}"
        )

    def insert_new(self, table: str, columns: Sequence[str]) -> str:
        """INSERT a row unless one with the same key exists (then nothing)."""
        return (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({self.marks(len(columns))})"
            " ON CONFLICT DO NOTHING"
        )

    def json_rows(self, alias: str) -> str:
        """A FROM item named ``alias``: one row per element of the JSON array
        bound to its one placeholder (as UTF-8 bytes, orjson's), the element
        in column ``value`` (read an array's items with ``json_item``). Many
        rows then go in one statement and one parameter.
        PostgreSQL's spelling would be ``jsonb_array_elements(?::jsonb) AS
        alias(value)``."""
        return f"json_each(?) AS {alias}"

    def json_values(self, alias: str) -> str:
        """A FROM item named ``alias``: one row per element of a JSON array of
        scalars bound to its one placeholder, as text in column ``value``
        (``key IN (SELECT value FROM ...)`` over a list of keys)."""
        return f"json_each(?) AS {alias}"

    def json_value(self, alias: str, kind: str) -> str:
        """A ``json_values`` row's value as a column of ``kind`` (see ``json_item``)."""
        return f"{alias}.value"

    def json_item(self, alias: str, index: int, kind: str) -> str:
        """Item ``index`` of the array in ``alias.value`` (a ``json_rows``
        row) as a column of ``kind`` (``integer``, ``real``, ``text``,
        ``blob``: a JSON string stored as bytes). SQLite's ``->>`` gives the
        item's own type; other engines cast."""
        return f"{alias}.value ->> {index}"

    def leading_integer(self, column: str) -> str:
        """A text column's leading digits as an integer (0 for none)."""
        return f"CAST({column} AS INTEGER)"

    #: Appended to a SELECT inside a transaction: the rows it reads stay as
    #: read until the commit. SQLite needs nothing (its write transaction
    #: holds the whole database); PostgreSQL locks the rows (FOR UPDATE).
    for_update = ""

    def unindexed(self, column: str) -> str:
        """``column`` (text) in a WHERE term that must not pick an index on it
        (SQLite's unary ``+``: look rows up by their primary key instead)."""
        return f"+{column}"

    #: ``for_update``, but the SELECT passes over the rows another
    #: transaction holds instead of waiting for them (competing consumers).
    skip_locked = ""

    #: A query (one placeholder: a table's name) giving a row when the table
    #: exists: the CLI reads a database that no runner may have written yet.
    has_table = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"

    #: A statement (one placeholder: a key, as text) run first in a
    #: transaction so that those naming the same key run one at a time;
    #: None when the engine runs one write transaction at a time anyway.
    serialize: str | None = None

    def notify(self, channel: str) -> str | None:
        """A statement (placeholders: the payload, then a key, as text)
        telling every connection listening on ``channel`` (``Backend.listen``)
        at its commit, if another connection is waiting on the key (between
        ``wait_on`` and ``stop_waiting``); None when the engine has no such
        notifications.

        A connection that begins waiting on a key after that statement has
        looked (and found none) waits for its transaction to end: whatever
        it reads after ``wait_on`` returns includes what that transaction
        wrote. So a waiter that reads after ``wait_on`` either sees the
        change or hears of it, and nobody waiting, nothing is sent."""
        return None

    #: A statement (one placeholder: a key, as text) after which the
    #: connection is waiting on the key (``notify``) until ``stop_waiting``
    #: or until it closes; None without notifications. Waiting is counted:
    #: each ``wait_on`` needs a ``stop_waiting``.
    wait_on: str | None = None
    #: A statement (one placeholder: a key) undoing one ``wait_on``.
    stop_waiting: str | None = None


class Backend(ABC):
    """A database engine: where a store's connections come from."""

    dialect: Dialect = Dialect()
    #: The engine's own errors, reported as ``StateError`` while opening.
    errors: tuple[type[Exception], ...] = ()

    @abstractmethod
    def exists(self, location: Location) -> bool:
        """Whether the database at ``location`` exists."""

    @abstractmethod
    async def connect(
        self, location: Location, *, create: bool, functions: Mapping[str, SQLFunction]
    ) -> Connection:
        """A connection to the database at ``location``, made first when
        ``create`` (else it must exist), with ``functions`` callable from SQL."""

    def listen(
        self, location: Location, channel: str
    ) -> contextlib.AbstractAsyncContextManager[AsyncIterator[str]] | None:
        """The payloads any connection to the database at ``location`` sends on
        ``channel`` (``Dialect.notify``), from when the context is entered,
        over a connection of its own closed when it exits; None when the
        engine has no such notifications (SQLite: another process's writes
        are only seen by reading)."""
        return None


def _enter_wal(db: sqlite3.Connection, *, within: float = 10.0) -> None:
    """Switch ``db`` to WAL, waiting out other connections doing the same.

    Several runners opening a new file at once race on the switch, and
    SQLite answers the losers "database is locked" at once, without calling
    the busy handler, so the wait is ours: retried until ``within`` seconds."""
    deadline = time.monotonic() + within
    pause = 0.001
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)  # on the connection's own thread, never the event loop
        pause = min(pause * 2, 0.05)


class Checkpointer:
    """Checkpoints one SQLite file's WAL on a thread and connection of its
    own, so that no writer's commit pays for it.

    SQLite's own (automatic) checkpoint runs inside the commit that takes the
    WAL past 1,000 pages: that commit's caller, and every caller queued
    behind it on the writer's thread, waits for the pages to be copied into
    the database and both files synced. Here the writers only say that they
    wrote (``wrote``, a flag); the checkpointer's thread, at most once per
    ``pause``, runs a PASSIVE checkpoint (it never waits for a lock, nor
    stops a writer). ``pause`` adapts so that a checkpoint copies about
    ``pages`` pages: a busy database is checkpointed often, an idle one not
    at all.

    Bounded whatever happens: the writers keep SQLite's automatic checkpoint,
    raised to ``hard_pages`` (``SQLiteConnection`` sets it): if this thread
    falls behind, the commit that takes the WAL past it checkpoints as
    before. Durability is unchanged: a commit is in the WAL (synced per the
    writer's ``synchronous``) before it returns, whoever copies it later.

    A WAL starts again from its beginning only at a write that finds it
    copied in full, and a busy writer appends while this thread copies: the
    pages appended meanwhile are the writer's to copy (``finish``), once it
    has nothing waiting and no transaction open, a few at most.

    One per database file and process, shared by the connections of every
    store on it (``joined``/``leave``, counted); it stops when the last
    leaves, before that connection closes the database (the last
    connection's close then checkpoints the rest and removes the WAL, as
    without it)."""

    #: The pages a checkpoint aims to copy (SQLite's automatic checkpoint's default).
    pages: ClassVar[int] = 1000
    #: The writers' own automatic checkpoint, should this thread fall behind.
    hard_pages: ClassVar[int] = 10_000
    #: The bounds of the pause between two checkpoints, in seconds.
    shortest: ClassVar[float] = 0.01
    longest: ClassVar[float] = 1.0
    #: How long ``leave`` waits for a checkpoint under way to end.
    stop_within: ClassVar[float] = 10.0

    _lock = threading.Lock()
    _running: ClassVar[dict[str, Checkpointer]] = {}

    def __init__(self, key: str, db: sqlite3.Connection) -> None:
        self.key = key
        self._db = db
        self._users = 0
        self._wrote = threading.Event()
        self._stopping = threading.Event()
        # Eager at first; then as the writes' pace says.
        self.pause = self.shortest
        #: A checkpoint ran: a writer, once idle, copies what was appended meanwhile.
        self.behind = False
        #: Checkpoints run, and the last one's (WAL pages, pages copied in all).
        self.checkpoints = 0
        self.last = (0, 0)
        self._thread = threading.Thread(
            target=self._run, name=f"checkpoint:{Path(key).name}", daemon=True
        )

    @classmethod
    def joined(cls, path: Path, target: str, uri: bool) -> Checkpointer | None:
        """The checkpointer of the file at ``path`` (``target`` as sqlite3
        opens it), started if none runs in this process; None if its
        connection cannot open (the writers then checkpoint as SQLite does)."""
        key = str(path.resolve())
        with cls._lock:
            found = cls._running.get(key)
            if found is None:
                try:
                    # Used only on the checkpointer's thread once started.
                    db = sqlite3.connect(
                        target, uri=uri, isolation_level=None, check_same_thread=False
                    )
                    db.execute("PRAGMA synchronous=NORMAL")
                except sqlite3.Error as exc:
                    log.warning("%s: no checkpointer (%s); commits checkpoint", path, exc)
                    return None
                found = cls._running[key] = cls(key, db)
                found._thread.start()
            found._users += 1
            return found

    def leave(self) -> None:
        """One user fewer; the last stops the thread, waiting ``stop_within``
        seconds at most for a checkpoint under way (then it is left to
        finish on its own, and logged)."""
        with self._lock:
            self._users -= 1
            if self._users > 0:
                return
            del self._running[self.key]
        self._stopping.set()
        self._wrote.set()
        self._thread.join(self.stop_within)
        if self._thread.is_alive():
            log.warning("%s: a checkpoint is still running at close", self.key)

    def wrote(self) -> None:
        """From a writer's thread, after a write: a checkpoint is due."""
        if not self._wrote.is_set():  # (once per checkpoint: no lock taken after)
            self._wrote.set()

    def finish(self, db: sqlite3.Connection) -> None:
        """From a writer's thread with nothing waiting, when ``behind``: copy
        what the last checkpoint left, so that the next write starts the WAL
        again (PASSIVE: busy with this thread's checkpoint, it does nothing)."""
        self.behind = False
        try:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            log.warning("%s: checkpoint failed (%s); tried again later", self.key, exc)

    def _run(self) -> None:
        try:
            while True:
                self._wrote.wait()
                # Writes arriving during the pause join this checkpoint.
                if self._stopping.wait(self.pause):
                    return
                self._wrote.clear()
                try:
                    self._catch_up()
                except sqlite3.Error as exc:
                    log.warning("%s: checkpoint failed (%s); tried again later", self.key, exc)
        finally:
            self._db.close()

    def _catch_up(self) -> None:
        """A PASSIVE checkpoint, then the pause set for about ``pages``
        pages per checkpoint. It copies the WAL as it was when it began:
        what writers appended meanwhile is left to the next idle writer
        (``behind``), so that the WAL starts again at the next write."""
        busy, frames, copied = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if not busy and frames < 0:
            # No WAL seen yet (the file was new when this connection
            # opened): a read makes the connection find it.
            self._db.execute("SELECT count(*) FROM sqlite_master").fetchall()
            busy, frames, copied = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if busy or frames < 0:  # another connection is checkpointing (a writer, at its limit)
            return
        self.checkpoints += 1
        self.last = (frames, copied)
        self.behind = True
        # ``frames``: the WAL's pages, written since it last started again,
        # which the last checkpoint's tail allowed (else more: more often).
        # Shorter at once, longer at most twice as long: a burst after a
        # quiet spell finds a pause not much longer than it needs.
        if frames > 0:
            wanted = min(self.pause * self.pages / frames, self.pause * 2)
            self.pause = min(max(wanted, self.shortest), self.longest)


class SQLiteConnection(Connection):
    """A SQLite connection with a thread of its own: every statement runs
    there, so none blocks the event loop, in the order it was handed over.

    Each call hands its work to the thread at once (a queue the thread
    waits on) and gets a future the thread settles, with one wake-up of the
    event loop per trip. ``share`` hands over a statement that may share a
    trip: the thread takes, each time it is free, every shared statement
    handed over meanwhile and runs them in one transaction (group commit),
    so under load it goes from one trip to the next without waiting for
    the event loop, and a lone statement goes at once.

    ``call`` runs a function of the ``sqlite3.Connection`` on the thread,
    for what only SQLite can do (a test's trace callback or busy timeout).
    ``on_trip``, when set, is called on the thread with each ``Trip``
    before it runs: what a benchmark's peer replays, or a test counts.

    A file's WAL is checkpointed by its ``Checkpointer``, not by the commit
    that fills it (``checkpointer``: None in memory, or if it could not
    start)."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._name = name
        self._closed = False
        #: Called on the connection's thread with each trip before it runs.
        self.on_trip: Callable[[Trip], None] | None = None
        self.checkpointer: Checkpointer | None = None

    async def start(
        self,
        target: str,
        *,
        uri: bool,
        functions: Mapping[str, SQLFunction],
        file: Path | None = None,
    ) -> None:
        """Open the database on a thread started for it; sqlite3's errors
        raised. ``file``: the database's file, whose WAL a ``Checkpointer``
        then checkpoints (None: SQLite's automatic checkpoint, in commits)."""
        opened: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        thread = threading.Thread(
            target=self._serve,
            args=(opened, target, uri, functions, file),
            name=self._name,
            daemon=True,
        )
        thread.start()
        try:
            await opened
        except BaseException:
            # Failed (the thread has ended), or cancelled meanwhile: then the
            # thread closes the database once it has opened it.
            self._jobs.put((_STOP, asyncio.get_running_loop().create_future(), None))
            self._closed = True
            raise

    # -- handing work over (on the event loop) ------------------------------------

    def _hand(self, kind: int, payload: Any) -> asyncio.Future[Any]:
        if self._closed:
            raise StateError(f"{self._name}: the connection is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._jobs.put((kind, future, payload))
        return future

    def submit(
        self, steps: Sequence[Step], *, transaction: bool = True, synced: bool = False
    ) -> asyncio.Future[list[Done]]:
        return self._hand(_PLAN, Trip(list(steps), transaction, synced))

    def share(self, step: Step | Gathering) -> asyncio.Future[list[Row]]:
        return self._hand(_SHARED, step)

    def call(self, function: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """``function(db, *args)`` on the connection's thread, ``db`` its
        ``sqlite3.Connection``; the future of what it returns."""
        return self._hand(_CALL, (function, args))

    async def rows(self, sql: str, parameters: Parameters = ()) -> list[Row]:
        return (await self.submit([Step(sql, parameters)], transaction=False))[0].rows

    async def execute(self, sql: str, parameters: Parameters = ()) -> int:
        return (await self.submit([Step(sql, parameters)], transaction=False))[0].changed

    async def executemany(self, sql: str, parameters: Iterable[Parameters]) -> int:
        done = await self.submit([Step(sql, parameters, many=True)], transaction=False)
        return done[0].changed

    async def script(self, sql: str) -> None:
        await self.call(sqlite3.Connection.executescript, sql)

    async def begin(self) -> None:
        # IMMEDIATE: the write lock now, not at the first write, so two
        # processes cannot both read and then fail to upgrade (SQLITE_BUSY).
        await self.execute("BEGIN IMMEDIATE")

    async def commit(self) -> None:
        await self.execute("COMMIT")

    async def rollback(self) -> None:
        await self.call(self._roll_back)

    async def close(self) -> None:
        """Once what was handed over before has run; a second call does nothing."""
        if self._closed:
            return
        stopped = self._hand(_STOP, None)
        self._closed = True
        await stopped

    async def batch(
        self, steps: Sequence[Step], *, transaction: bool = True, synced: bool = False
    ) -> list[Done]:
        # One trip to the connection's thread for the whole plan, and
        # BEGIN ... COMMIT cannot be split by a cancellation.
        return await self.submit(steps, transaction=transaction, synced=synced)

    # -- the connection's thread ------------------------------------------------------

    def _serve(
        self,
        opened: asyncio.Future[Any],
        target: str,
        uri: bool,
        functions: Mapping[str, SQLFunction],
        file: Path | None,
    ) -> None:
        try:
            db = sqlite3.connect(target, uri=uri, isolation_level=None, check_same_thread=True)
        except BaseException as exc:
            _post([(opened, exc, None)])
            return
        try:
            # WAL + NORMAL: a committed transaction survives a process crash (the
            # WAL is in the OS's hands); only power loss can drop the last commits.
            db.execute("PRAGMA busy_timeout=10000")
            _enter_wal(db)
            db.execute("PRAGMA synchronous=NORMAL")
            for name, (arguments, function) in functions.items():
                db.create_function(name, arguments, function, deterministic=True)
            if file is not None and db.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                self._hand_checkpoints(db, file, target, uri)
        except BaseException as exc:
            if self.checkpointer is not None:
                self.checkpointer.leave()
            db.close()
            _post([(opened, exc, None)])
            return
        _post([(opened, None, None)])
        self._work(db)

    def _hand_checkpoints(self, db: sqlite3.Connection, file: Path, target: str, uri: bool) -> None:
        """The file's checkpointer takes the WAL's checkpoints; this
        connection's commits checkpoint only past its hard limit, and the WAL
        file left after one is cut back to about what the checkpointer keeps
        it to (SQLite otherwise leaves it at its largest)."""
        self.checkpointer = Checkpointer.joined(file, target, uri)
        if self.checkpointer is None:
            return
        db.execute(f"PRAGMA wal_autocheckpoint={Checkpointer.hard_pages}")
        page = db.execute("PRAGMA page_size").fetchone()[0]
        db.execute(f"PRAGMA journal_size_limit={4 * Checkpointer.pages * page}")

    def _work(self, db: sqlite3.Connection) -> None:
        """Take every job handed over, in order, until told to stop: shared
        statements next to each other go as one trip."""
        jobs = self._jobs
        changes = db.total_changes
        checkpointer = self.checkpointer
        while True:
            if checkpointer is not None:
                if db.total_changes != changes:
                    changes = db.total_changes
                    checkpointer.wrote()
                # (Not inside a transaction() whose next statement is on its way.)
                if checkpointer.behind and not db.in_transaction and jobs.empty():
                    checkpointer.finish(db)
            taken = [jobs.get()]
            while not jobs.empty():  # (this thread alone takes: no race)
                taken.append(jobs.get_nowait())
            shared: list[_Job] = []
            for job in taken:
                kind = job[0]
                if kind == _SHARED:
                    shared.append(job)
                    continue
                if shared:
                    self._share(db, shared)
                    shared = []
                if kind == _STOP:
                    self._stop(db, job, taken)
                    return
                _post([self._run(db, job)])
            if shared:
                self._share(db, shared)

    def _run(self, db: sqlite3.Connection, job: _Job) -> _Outcome:
        kind, future, payload = job
        try:
            if kind == _PLAN:
                if self.on_trip is not None:
                    self.on_trip(payload)
                return future, None, _run_trip(db, payload)
            function, args = payload
            return future, None, function(db, *args)
        except _NotBegun as exc:
            return future, exc.__cause__, None
        except BaseException as exc:
            return future, exc, None

    def _share(self, db: sqlite3.Connection, jobs: list[_Job]) -> None:
        """Shared statements as one trip (one transaction if several) and
        each caller answered with its rows. Those whose callers stopped
        waiting are left out. If the trip fails after it began, it was
        rolled back whole, and each statement goes again alone, so that a
        failing statement fails its own caller only; if it could not begin
        (the database stayed locked), every caller gets that error."""
        if len(jobs) == 1:  # the usual trip when a store is not busy: no lists made
            if not jobs[0][1].done():
                self._share_one(db, jobs[0])
            return
        jobs = [job for job in jobs if not job[1].done()]
        if not jobs:
            return
        steps: list[Step] = [statement_of(job[2]) for job in jobs]
        trip = Trip(steps, len(steps) > 1)
        try:
            if self.on_trip is not None:
                self.on_trip(trip)
            done = _run_trip(db, trip)
        except _NotBegun as exc:
            _post([(job[1], exc.__cause__, None) for job in jobs])
            return
        except BaseException as exc:
            if len(jobs) == 1:
                _post([(jobs[0][1], exc, None)])
                return
            _post([self._alone(db, job[1], step) for job, step in zip(jobs, steps, strict=True)])
            return
        _post([(job[1], None, d.rows) for job, d in zip(jobs, done, strict=True)])

    def _share_one(self, db: sqlite3.Connection, job: _Job) -> None:
        """A shared statement that has its trip to itself (no transaction of
        its own: autocommit); its caller answered with its rows."""
        _, future, step = job
        try:
            trip = Trip([statement_of(step)], False)
            if self.on_trip is not None:
                self.on_trip(trip)
            outcome: _Outcome = (future, None, _run_steps(db, trip.steps, False)[0].rows)
        except BaseException as exc:
            outcome = (future, exc, None)
        _post([outcome])

    def _alone(self, db: sqlite3.Connection, future: asyncio.Future[Any], step: Step) -> _Outcome:
        try:
            trip = Trip([step], False)
            if self.on_trip is not None:
                self.on_trip(trip)
            return future, None, _run_trip(db, trip)[0].rows
        except BaseException as exc:
            return future, exc, None

    def _roll_back(self, db: sqlite3.Connection) -> None:
        # No error when no transaction is open (it may not have begun).
        if db.in_transaction:
            if self.on_trip is not None:
                self.on_trip(Trip([Step("ROLLBACK")], False))
            db.execute("ROLLBACK")

    def _stop(self, db: sqlite3.Connection, stop: _Job, taken: list[_Job]) -> None:
        """Close the database; anything handed over after the stop is refused."""
        late = taken[taken.index(stop) + 1 :]
        refused = StateError(f"{self._name}: the connection is closed")
        try:
            if self.checkpointer is not None:
                # First: the last connection's close checkpoints what is left.
                self.checkpointer.leave()
            db.close()
        except BaseException as exc:
            outcome: _Outcome = (stop[1], exc, None)
        else:
            outcome = (stop[1], None, None)
        _post([outcome, *((job[1], refused, None) for job in late)])


#: A job for a connection's thread: (kind, the future it settles, its payload).
_Job = tuple[int, "asyncio.Future[Any]", Any]
#: What a job came to: (its future, the error or None, the result).
_Outcome = tuple["asyncio.Future[Any]", BaseException | None, Any]
_PLAN, _SHARED, _CALL, _STOP = range(4)


class _NotBegun(Exception):
    """A trip's BEGIN failed (its cause says why): none of it ran."""


def _post(outcomes: list[_Outcome]) -> None:
    """From the connection's thread: settle ``outcomes``' futures on their
    event loop, with one wake-up of each loop (usually one loop)."""
    loop = outcomes[0][0].get_loop()
    for outcome in outcomes:
        if outcome[0].get_loop() is not loop:
            for each in outcomes:
                _post([each])
            return
    with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
        loop.call_soon_threadsafe(_settle_all, outcomes)


def _settle_all(outcomes: list[_Outcome]) -> None:
    """On the event loop: answer each caller, unless it stopped waiting."""
    for future, error, result in outcomes:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _run_trip(db: sqlite3.Connection, trip: Trip) -> list[Done]:
    """A trip, on the connection's own thread (blocking calls are fine there).
    ``synced``: SQLite cannot change ``synchronous`` inside a transaction, so
    it is FULL around this one and back to NORMAL (what the backend sets)
    after it, whatever happened."""
    if not trip.synced:
        return _run_steps(db, trip.steps, trip.transaction)
    db.execute("PRAGMA synchronous=FULL")
    try:
        return _run_steps(db, trip.steps, trip.transaction)
    finally:
        db.execute("PRAGMA synchronous=NORMAL")


def _run_steps(db: sqlite3.Connection, steps: list[Step], transaction: bool) -> list[Done]:
    if transaction:
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _NotBegun() from exc
    try:
        done = []
        for step in steps:
            if step.many:
                cursor = db.executemany(step.sql, step.parameters)
                done.append(Done([], max(cursor.rowcount, 0)))
            else:
                cursor = db.execute(step.sql, step.parameters)
                rows = cursor.fetchall()
                done.append(Done(rows, max(cursor.rowcount, 0)))
        if transaction:
            db.execute("COMMIT")
    except BaseException:
        if transaction and db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return done


class SQLiteBackend(Backend):
    """SQLite files in WAL mode: readers in other processes (the CLI) go on
    while the runtime writes. Each connection runs on a thread of its own
    (``SQLiteConnection``)."""

    errors = (sqlite3.Error,)

    def exists(self, location: Location) -> bool:
        return location == IN_MEMORY or Path(location).exists()

    async def connect(
        self, location: Location, *, create: bool, functions: Mapping[str, SQLFunction]
    ) -> SQLiteConnection:
        location = Path(location)
        if create and location != IN_MEMORY:
            try:
                private_file(location)
            except OSError as exc:
                raise StateError(
                    f"state database {location}: cannot create it: {exc.strerror};"
                    " point state at a writable place"
                ) from None
        if create:
            target, uri = str(location), False
        else:
            # mode=rw: SQLite itself refuses to make the file (no race
            # with a check made before).
            target = f"file:{urllib.parse.quote(str(location.absolute()))}?mode=rw"
            uri = True
        connection = SQLiteConnection(f"sqlite:{location.name}")
        file = None if location == IN_MEMORY else location
        try:
            await connection.start(target, uri=uri, functions=functions, file=file)
        except sqlite3.Error as exc:
            raise unusable(location, exc) from None
        return connection


SQLITE = SQLiteBackend()


def location_of(given: str | Path) -> Location:
    """A state given as text: a ``postgresql://`` URL stays text, anything
    else is a SQLite file's path."""
    if isinstance(given, str) and given.startswith(tuple(URL_BACKENDS)):
        return given
    return Path(given)


#: The modules of the engines a URL names, by scheme; each has ``backend()``.
#: Named, not imported: such a module builds on this one, and is loaded only
#: when a location needs it (a SQLite user never imports PostgreSQL's driver).
URL_BACKENDS = {"postgresql://": "pipelines.postgres", "postgres://": "pipelines.postgres"}


def is_url(given: str) -> bool:
    """Whether a state location is a server's URL rather than a file."""
    return given.startswith(tuple(URL_BACKENDS))


def shown(location: Location) -> str:
    """A location as logs and errors show it: a URL without its password."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", str(location))


def backend_for(location: Location) -> Backend:
    """The engine of ``location``: the one its URL's scheme names, else SQLite."""
    if isinstance(location, str):
        for scheme, module in URL_BACKENDS.items():
            if location.startswith(scheme):
                made: Backend = importlib.import_module(module).backend()
                return made
        raise StateError(f"state database {shown(location)}: no engine takes this URL")
    return SQLITE


def private_directory(path: Path) -> None:
    """Create ``path`` and its missing parents readable by their owner only (0700)."""
    missing = [parent for parent in (*reversed(path.parents), path) if not parent.exists()]
    for directory in missing:
        with contextlib.suppress(FileExistsError):  # made meanwhile by another process
            directory.mkdir(mode=0o700)


def private_file(path: Path) -> None:
    """Create ``path`` readable by its owner only (0600), and the directories
    it needs (0700), unless they exist: a state database holds archived
    events and queue messages. SQLite gives its -wal and -shm files the
    database's own mode. Existing files and directories keep theirs."""
    private_directory(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))


def unusable(location: Location, exc: Exception) -> StateError:
    """The one-line error for a state database that cannot be used."""
    return StateError(
        f"state database {shown(location)}: {exc}; point state at another file,"
        " or move this one away if it is not a pipelines database"
    )


def existing(path: Location) -> Location:
    """``path``, a pipeline's state database that must already exist (what the
    CLI reads, whether the pipeline runs or not); StateError otherwise. A
    server's database is taken as it is: connecting says what is wrong."""
    location = location_of(path)
    if isinstance(location, Path) and not SQLITE.exists(location):
        raise StateError(f"state database {location} does not exist: run the pipeline first")
    return location


# -- periodic upkeep -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Upkeep:
    """Work a store needs now and then (retention, purges): ``work`` every
    ``every`` seconds of clock time, first at once when ``at_start``.
    ``what`` names it in the log; a number ``work`` returns is logged as
    how many rows it removed."""

    every: float
    work: Callable[[], Awaitable[object]]
    what: str
    at_start: bool = False

    async def run(self, clock: Clock) -> None:
        """Forever (cancel it to stop). A failure is logged and tried again
        at the next turn: retention is never worth stopping a pipeline for."""
        if not self.at_start:
            await sleep(clock, self.every)
        while True:
            try:
                done = await self.work()
            except Exception:
                log.exception("%s failed; tried again in %g s", self.what, self.every)
            else:
                if isinstance(done, int) and not isinstance(done, bool) and done:
                    log.info("%s: %d removed", self.what, done)
            await sleep(clock, self.every)


# -- the store base ------------------------------------------------------------------


class _NotOpen(Connection):
    """Stands for the connection of a store that is not open (any more)."""

    def __init__(self, store: str) -> None:
        self.store = store

    def _refuse(self) -> StateError:
        return StateError(f"the {self.store} store is not open")

    async def rows(self, sql: str, parameters: Parameters = ()) -> list[Row]:
        raise self._refuse()

    async def execute(self, sql: str, parameters: Parameters = ()) -> int:
        raise self._refuse()

    async def executemany(self, sql: str, parameters: Iterable[Parameters]) -> int:
        raise self._refuse()

    async def script(self, sql: str) -> None:
        raise self._refuse()

    async def begin(self) -> None:
        raise self._refuse()

    async def commit(self) -> None:
        raise self._refuse()

    async def rollback(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def submit(
        self, steps: Sequence[Step], *, transaction: bool = True, synced: bool = False
    ) -> asyncio.Future[list[Done]]:
        raise self._refuse()

    def share(self, step: Step | Gathering) -> asyncio.Future[list[Row]]:
        raise self._refuse()


class Store(Queries):
    """The base of every store. A subclass declares its tables and keeps its
    own state in ``__init__`` (no I/O there); ``open`` connects.

    ``rows``/``one``/``scalar``/``execute``/``executemany`` on the store run
    one statement alone on the writer connection (under its lock, so it never
    lands inside another coroutine's transaction); called by the coroutine
    that holds a ``transaction()`` or ``exclusive()``, they run inside it.
    """

    #: The store's name in ``store_versions``.
    name: ClassVar[str]
    #: The version of its tables that ``schema`` creates; raise it with a ``migrate`` step.
    version: ClassVar[int] = 1
    #: DDL creating its tables if they do not exist (run at every open).
    schema: ClassVar[str] = ""
    #: DDL for one engine only, by ``Dialect.name``, run after ``schema``:
    #: what the engines spell too differently to share (triggers, functions).
    engine_schema: ClassVar[Mapping[str, str]] = {}
    #: Python functions its statements call, registered on each SQLite
    #: connection (PostgreSQL cannot call Python: a store that has some gives
    #: their PostgreSQL equivalents in ``engine_schema["postgresql"]``).
    functions: ClassVar[Mapping[str, SQLFunction]] = {}
    #: A second connection for ``reader``, so long reads do not wait behind writes.
    separate_reader: ClassVar[bool] = False

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock if clock is not None else SystemClock()
        #: Where the database is: a SQLite file, or a PostgreSQL URL.
        self.path: Location = IN_MEMORY
        #: Its engine, by ``path`` (SQLite until connected).
        self.backend: Backend = SQLITE
        self._writer: Connection = _NotOpen(self.name)
        self._reader: Connection | None = None
        self._lock = asyncio.Lock()
        #: The task inside ``transaction()`` or ``exclusive()``, if any.
        self._holder: asyncio.Task[Any] | None = None
        #: Per key, the gathering a caller may still join (``gather``).
        self._gatherings: dict[Hashable, Gathering] = {}

    # -- opening and closing --------------------------------------------------------

    @classmethod
    async def open(
        cls, path: str | Path | None, *args: Any, migrate: bool = True, **options: Any
    ) -> Self:
        """The store of the database at ``path`` (created if need be; None: in
        memory only). ``args`` and ``options`` go to the store's ``__init__``.
        A runner brings older tables forward (``migrate``); a command that
        may create a database but is not a runner passes ``migrate=False``,
        and older tables are then refused, as ``existing`` refuses them."""
        store = cls(*args, **options)
        location = IN_MEMORY if path is None else location_of(path)
        await store._connect(location, create=True, migrate=migrate)
        return store

    @classmethod
    @contextlib.asynccontextmanager
    async def existing(
        cls, path: str | Path, *args: Any, migrate: bool = False, **options: Any
    ) -> AsyncIterator[Self]:
        """The store of a state database that must already exist (the CLI's view
        of a pipeline, running or not), closed after the block. Never creates
        a database: ``StateError`` naming the path when there is none. Nor
        does it bring older tables forward unless ``migrate`` (``pipelines
        state migrate``): runners of the earlier version may still use them,
        so it refuses them, naming the store and the command."""
        location = location_of(path)
        if not backend_for(location).exists(location):
            raise StateError(
                f"state database {shown(location)} does not exist: run the pipeline first"
            )
        store = cls(*args, **options)
        await store._connect(location, create=False, migrate=migrate)
        try:
            yield store
        finally:
            await store.close()

    async def _connect(self, location: Location, *, create: bool, migrate: bool = True) -> None:
        backend = self.backend = backend_for(location)
        self.path = location
        self._writer = await backend.connect(location, create=create, functions=self.functions)
        try:
            try:
                await self._apply_schema(self._writer, migrate=migrate)
            except backend.errors as exc:
                raise unusable(location, exc) from None
            if self.separate_reader:
                self._reader = await backend.connect(
                    location, create=False, functions=self.functions
                )
            await self.opened()
        except BaseException:
            await self.close()
            raise

    async def _apply_schema(self, connection: Connection, *, migrate: bool) -> None:
        """Create what is missing, then record the version, or bring an older
        database up to it (only when ``migrate``: refused otherwise, before
        any DDL). Only a database without this version takes the write lock:
        a CLI reading a busy pipeline's database does not wait."""
        dialect = self.dialect
        query = "SELECT version FROM store_versions WHERE store = ?"
        script = self.schema + self.engine_schema.get(dialect.name, "")
        if dialect.schema_lock is not None:
            await connection.begin()
            try:
                await connection.execute(dialect.schema_lock)
                found = await self._versions(connection, query)
                self._refuse_older(found, migrate)
                await connection.script(script)
                await connection.commit()
            except BaseException:
                await asyncio.shield(connection.rollback())
                raise
        else:
            found = await self._versions(connection, query)
            self._refuse_older(found, migrate)
            await connection.script(script)
        if found == self.version:  # (the script leaves store_versions' rows alone)
            return
        await connection.begin()
        try:
            if dialect.schema_lock is not None:
                await connection.execute(dialect.schema_lock)
            found = await connection.scalar(query, (self.name,))
            self._refuse_newer(found)
            if found is not None and found < self.version:
                await self.migrate(connection, found)
            await connection.execute(
                dialect.upsert("store_versions", ("store", "version", "applied"), ("store",)),
                (self.name, self.version, time.time()),
            )
            await connection.commit()
        except BaseException:
            await asyncio.shield(connection.rollback())
            raise

    async def _versions(self, connection: Connection, query: str) -> int | None:
        """The version of this store's tables recorded in the database (its
        ``store_versions`` made if missing), refused if newer than this one."""
        await connection.script(VERSIONS_SCHEMA)
        found: int | None = await connection.scalar(query, (self.name,))
        self._refuse_newer(found)
        return found

    def _refuse_newer(self, found: int | None) -> None:
        """A database whose tables a newer version made is refused before any
        of this version's DDL runs on it: its ``IF NOT EXISTS`` and ``OR
        REPLACE`` would put back what the newer version dropped or changed
        (a trigger, a function), and a database still in use by the newer
        version would go on with them."""
        if found is not None and found > self.version:
            raise StateError(
                f"state database {shown(self.path)}: its {self.name} tables are"
                f" version {found},"
                f" newer than this pipelines knows ({self.version}); upgrade pipelines"
            )

    def _refuse_older(self, found: int | None, migrate: bool) -> None:
        """Tables older than this version, opened without ``migrate``, are
        refused before this version's DDL runs there: bringing them forward
        can take a table from under a runner of the earlier version."""
        if not migrate and found is not None and found < self.version:
            raise StateError(
                f"state database {shown(self.path)}: its {self.name} tables are"
                f" version {found}, behind this pipelines ({self.version});"
                " `pipelines state migrate` brings them forward (stop runners of the"
                " earlier version first), as a runner of this version does when it starts"
            )

    async def migrate(self, connection: Queries, found: int) -> None:
        """Bring the store's tables from version ``found`` to ``version``,
        inside the transaction that then records it. Nothing to do until a
        store's version is raised (``schema`` has created what was missing)."""

    async def opened(self) -> None:
        """Called once connected, before ``open`` returns (load what it caches)."""

    async def close(self) -> None:
        """Close its connections (a second call does nothing), once what was
        already handed to them (``grouped`` statements too) is written."""
        writer, reader = self._writer, self._reader
        self._writer, self._reader = _NotOpen(self.name), None
        try:
            await writer.close()
        finally:
            if reader is not None:
                await reader.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def dialect(self) -> Dialect:
        return self.backend.dialect

    @property
    def connection(self) -> Connection:
        """The writer connection itself, for what only its backend can do (a
        test setting SQLite's busy timeout); stores use the methods above."""
        return self._writer

    @property
    def reader(self) -> Queries:
        """Where reads go: the separate reader connection when the store has
        one (no lock: it only reads), else the store itself."""
        return self._reader if self._reader is not None else self

    # -- statements on the writer -----------------------------------------------------

    def _inside(self) -> bool:
        return self._holder is not None and self._holder is asyncio.current_task()

    async def rows(self, sql: str, parameters: Parameters = ()) -> list[Row]:
        if self._inside():
            return await self._writer.rows(sql, parameters)
        return (await self._hand_over([Step(sql, parameters)], False, False))[0].rows

    async def execute(self, sql: str, parameters: Parameters = ()) -> int:
        if self._inside():
            return await self._writer.execute(sql, parameters)
        return (await self._hand_over([Step(sql, parameters)], False, False))[0].changed

    async def executemany(self, sql: str, parameters: Iterable[Parameters]) -> int:
        if self._inside():
            return await self._writer.executemany(sql, parameters)
        step = Step(sql, parameters, many=True)
        return (await self._hand_over([step], False, False))[0].changed

    async def batch(self, steps: Sequence[Step], *, synced: bool = False) -> list[Done]:
        """Run ``steps`` in one trip to the database, in one transaction: all
        of them or none (a failure rolls every one back and is raised; a
        cancelled caller does not learn which, but no transaction is left
        half done). Called by the coroutine holding ``transaction()``, they
        run inside it instead. ``synced``: the commit reaches the disk before
        this returns (not inside ``transaction()``, whose commit is its own)."""
        if self._inside():
            if synced:
                raise StateError("a synced batch cannot run inside transaction()")
            return await self._writer.batch(steps, transaction=False)
        return await self._hand_over(steps, True, synced)

    def _hand_over(
        self, steps: Sequence[Step], transaction: bool, synced: bool
    ) -> Awaitable[list[Done]]:
        """Hand ``steps`` to the writer connection; what they did, to await.

        The writer's lock is held only while the work is handed over, not
        while it runs: the connection runs what it is handed in order, so no
        other coroutine's statement lands inside a transaction (which holds
        the lock from BEGIN to COMMIT), and the next caller's work is queued
        behind this one without a round trip in between. With the lock free
        (the usual case) the work is handed over at once, before any turn of
        the event loop."""
        if not self._lock.locked():
            # Awaited at once by every caller: the connection's ``batch``,
            # which may run it in the caller's task (no task of its own).
            return self._writer.batch(steps, transaction=transaction, synced=synced)
        return self._after_lock(steps, transaction, synced)

    async def _after_lock(
        self, steps: Sequence[Step], transaction: bool, synced: bool
    ) -> list[Done]:
        async with self._lock:
            running = self._writer.submit(steps, transaction=transaction, synced=synced)
        return await running

    async def grouped(self, sql: str, parameters: Parameters = ()) -> list[Row]:
        """One statement, written in a trip it shares with the ``grouped``
        statements other coroutines submit meanwhile (group commit); its rows.

        Alone, it goes at once, as it is (its own transaction). Those
        submitted while a trip is under way go together in the next one:
        one transaction, one trip to the database, which the connection
        starts as soon as the one before ends (see ``Connection.share``). So
        a store busy with several callers makes fewer, bigger trips, and a
        lone caller waits no more than for ``rows``. Statements run in the
        order they were submitted.

        A caller cancelled before its trip leaves is not written; one
        cancelled after may be (as with ``rows``): a statement submitted
        after that cancellation runs after it, so it can undo it. When a
        shared trip fails, its statements are tried again one by one, so a
        failing statement fails its own caller only (if the trip could not
        even begin, the database being locked, every caller gets that error)."""
        if self._inside():
            return await self._writer.rows(sql, parameters)
        if not self._lock.locked():
            return await self._writer.shared(Step(sql, parameters))
        return await self._share_after_lock(Step(sql, parameters))

    def share(self, sql: str, parameters: Parameters = ()) -> Awaitable[list[Row]]:
        """``grouped``, handed over at once (unless another coroutine's
        transaction holds the writer): the caller may do other work before
        it awaits the rows, and that work overlaps the database's."""
        if self._inside():
            return self._writer.rows(sql, parameters)
        if not self._lock.locked():
            return self._writer.share(Step(sql, parameters))
        return self._share_after_lock(Step(sql, parameters))

    async def _share_after_lock(self, step: Step | Gathering) -> list[Row]:
        async with self._lock:
            running = self._writer.share(step)
        return await running

    def gather(
        self, key: Hashable, start: Callable[[], Gathering], part: Any
    ) -> tuple[Gathering, asyncio.Future[list[Row]], int]:
        """Join the ``Gathering`` under ``key`` whose trip has not left yet,
        or start one (``start()``) and hand it over as a shared statement
        (see ``share``): the gathering, the future of this part's rows, and
        the part's index. Alone, a caller's part goes at once, as its own
        statement; callers arriving while the connection is busy join the
        one waiting, so concurrent callers make one statement per trip."""
        if self._inside():
            raise StateError(f"the {self.name} store: gather() inside a transaction")
        gathering = self._gatherings.get(key)
        if gathering is not None:
            joined = gathering.add(part)
            if joined is not None:
                return gathering, *joined
        gathering = start()
        joined = gathering.add(part)
        if joined is None:
            raise StateError(f"the {self.name} store: a new gathering took no part")
        if not self._lock.locked():
            outcome = self._writer.share(gathering)  # (refused when the store is closed)
        else:
            outcome = asyncio.ensure_future(self._share_after_lock(gathering))
        self._gatherings[key] = gathering  # handed over: the next callers join it
        gathering.outcome = outcome
        outcome.add_done_callback(functools.partial(self._gathered, key, gathering))
        return gathering, *joined

    def _gathered(
        self, key: Hashable, gathering: Gathering, outcome: asyncio.Future[list[Row]]
    ) -> None:
        if self._gatherings.get(key) is gathering:
            del self._gatherings[key]
        gathering.settle(outcome)

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[Queries]:
        """The writer connection for several statements in a row, no other
        coroutine's in between; each statement is its own transaction."""
        if self._inside():
            raise StateError(f"the {self.name} store: a transaction inside another one")
        async with self._lock:
            self._holder = asyncio.current_task()
            try:
                yield self._writer
            finally:
                self._holder = None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Queries]:
        """One write transaction (BEGIN IMMEDIATE) on the writer connection,
        committed at the end of the block. Rolled back on any exception, also
        a cancellation while BEGIN or COMMIT was under way: the connection
        runs statements in order, so the ROLLBACK comes after them and leaves
        no transaction open."""
        async with self.exclusive() as connection:
            writer = self._writer
            try:
                await writer.begin()
                yield connection
                await writer.commit()
            except BaseException:
                await asyncio.shield(writer.rollback())
                raise
