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
  same moment (group commit: under load, fewer and bigger transactions);
- schema and versions: a store declares its ``name``, ``version`` and DDL
  (``schema``); the ``store_versions`` table records what each database has,
  and ``migrate`` is where a later version brings an older database up;
- periodic upkeep (retention, purges) declared as ``Upkeep`` values, which
  the runtime runs as owned tasks (``TargetServices.upkeep``).

The *backend* (``Backend``, ``Connection``, ``Dialect``) is the database
engine: how to connect, run a statement, begin and end a transaction, and
the few SQL spellings that differ between engines. Stores write their SQL
with ``?`` placeholders in what SQLite and PostgreSQL share, and take the
rest from ``self.dialect``; SQLite (aiosqlite) is the one backend today.

``pipelines.state`` stays the module of the state database's own tables
(pending deliveries, schedule marks): a store like the others, now on this
base. This module holds no tables, only what they share.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import sqlite3
import time
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self, cast

import aiosqlite

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

#: ``grouped`` trips handed to the database at once: one running, the next
#: queued behind it, so its thread never idles while the event loop answers.
TRIPS_IN_FLIGHT = 1


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


VERSIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS store_versions (
    store   TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    applied REAL NOT NULL
);
"""


#: A ``grouped`` statement and the future its caller awaits.
_Waiting = tuple[Step, "asyncio.Future[list[Row]]"]


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
        call on aiosqlite's thread), so a cancelled caller leaves no
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


class SQLiteConnection(Connection):
    """An aiosqlite connection. aiosqlite runs it in its own thread, so no
    statement blocks the event loop; ``raw`` is there for SQLite's own needs."""

    def __init__(self, raw: aiosqlite.Connection) -> None:
        self.raw = raw

    async def rows(self, sql: str, parameters: Parameters = ()) -> list[Row]:
        # execute_fetchall: one trip to the connection's thread, and its list
        # as it is (a query's million rows are not copied again).
        return cast("list[Row]", await self.raw.execute_fetchall(sql, parameters))

    async def execute(self, sql: str, parameters: Parameters = ()) -> int:
        cursor = await self.raw.execute(sql, parameters)
        return max(cursor.rowcount, 0)

    async def executemany(self, sql: str, parameters: Iterable[Parameters]) -> int:
        cursor = await self.raw.executemany(sql, parameters)
        return max(cursor.rowcount, 0)

    async def script(self, sql: str) -> None:
        await self.raw.executescript(sql)

    async def begin(self) -> None:
        # IMMEDIATE: the write lock now, not at the first write, so two
        # processes cannot both read and then fail to upgrade (SQLITE_BUSY).
        await self.raw.execute("BEGIN IMMEDIATE")

    async def commit(self) -> None:
        await self.raw.execute("COMMIT")

    async def rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # "no transaction is active"
            await self.raw.execute("ROLLBACK")

    async def close(self) -> None:
        await self.raw.close()

    async def batch(
        self, steps: Sequence[Step], *, transaction: bool = True, synced: bool = False
    ) -> list[Done]:
        # One call on the connection's thread for the whole plan: one thread
        # hop (50-100 us each way on two busy cores) instead of one per
        # statement, and BEGIN ... COMMIT cannot be split by a cancellation.
        # aiosqlite has no public way to run a function on its thread;
        # ``_execute`` is how its own methods do it (present since 0.17).
        in_thread = cast("Callable[..., Awaitable[list[Done]]]", self.raw._execute)
        return await in_thread(_run_steps, self.raw._conn, list(steps), transaction, synced)


def _run_steps(
    db: sqlite3.Connection, steps: list[Step], transaction: bool, synced: bool
) -> list[Done]:
    """A batch, on the connection's own thread (blocking calls are fine there).
    ``synced``: SQLite cannot change ``synchronous`` inside a transaction, so
    it is FULL around this one and back to NORMAL (what the backend sets)
    after it, whatever happened."""
    if not synced:
        return _run_plan(db, steps, transaction)
    db.execute("PRAGMA synchronous=FULL")
    try:
        return _run_plan(db, steps, transaction)
    finally:
        db.execute("PRAGMA synchronous=NORMAL")


def _run_plan(db: sqlite3.Connection, steps: list[Step], transaction: bool) -> list[Done]:
    if transaction:
        db.execute("BEGIN IMMEDIATE")
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
    while the runtime writes."""

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
        raw = None
        try:
            if create:
                raw = await aiosqlite.connect(location, isolation_level=None)
            else:
                # mode=rw: SQLite itself refuses to make the file (no race
                # with a check made before).
                uri = f"file:{urllib.parse.quote(str(location.absolute()))}?mode=rw"
                raw = await aiosqlite.connect(uri, uri=True, isolation_level=None)
            # WAL + NORMAL: a committed transaction survives a process crash (the
            # WAL is in the OS's hands); only power loss can drop the last commits.
            await raw.execute("PRAGMA journal_mode=WAL")
            await raw.execute("PRAGMA synchronous=NORMAL")
            await raw.execute("PRAGMA busy_timeout=10000")
            for name, (arguments, function) in functions.items():
                await raw.create_function(name, arguments, function, deterministic=True)
        except sqlite3.Error as exc:
            if raw is not None:
                await raw.close()
            raise unusable(location, exc) from None
        return SQLiteConnection(raw)


SQLITE = SQLiteBackend()


def location_of(given: str | Path) -> Location:
    """A state given as text: a ``postgresql://`` URL stays text, anything
    else is a SQLite file's path."""
    if isinstance(given, str) and given.startswith(("postgresql://", "postgres://")):
        return given
    return Path(given)


def backend_for(location: Location) -> Backend:
    """The engine of ``location``: PostgreSQL for a URL (loaded only then:
    a SQLite user never imports its driver), else SQLite."""
    if isinstance(location, str):
        from pipelines.postgres import backend

        return backend()
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
        f"state database {location}: {exc}; point state at another file,"
        " or move this one away if it is not a pipelines database"
    )


def existing(path: str | Path) -> Path:
    """``path``, a pipeline's state database that must already exist (what the
    CLI reads, whether the pipeline runs or not); StateError otherwise."""
    path = Path(path)
    if not SQLITE.exists(path):
        raise StateError(f"state database {path} does not exist: run the pipeline first")
    return path


def _settle(done: asyncio.Future[Any], outcome: Any) -> None:
    """Answer a caller, unless it stopped waiting (cancelled)."""
    if done.done():
        return
    if isinstance(outcome, BaseException):
        done.set_exception(outcome)
    else:
        done.set_result(outcome)


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
    #: SQL functions its statements call, registered on each of its connections.
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
        #: ``grouped`` statements waiting for the next trip, with their callers' futures.
        self._grouped: list[_Waiting] = []
        #: The task making those trips while any wait (owned here, drained by ``close``).
        self._trips: asyncio.Task[None] | None = None
        #: Lone ``grouped`` statements under way (see ``_lone``).
        self._alone = 0
        #: Set when a lone statement is back (the trip task may wait for it).
        self._back = asyncio.Event()

    # -- opening and closing --------------------------------------------------------

    @classmethod
    async def open(cls, path: str | Path | None, *args: Any, **options: Any) -> Self:
        """The store of the database at ``path`` (created if need be; None: in
        memory only). ``args`` and ``options`` go to the store's ``__init__``."""
        store = cls(*args, **options)
        await store._connect(IN_MEMORY if path is None else location_of(path), create=True)
        return store

    @classmethod
    @contextlib.asynccontextmanager
    async def existing(cls, path: str | Path, *args: Any, **options: Any) -> AsyncIterator[Self]:
        """The store of a state database that must already exist (the CLI's view
        of a pipeline, running or not), closed after the block. Never creates
        a database: ``StateError`` naming the path when there is none."""
        location = location_of(path)
        if not backend_for(location).exists(location):
            raise StateError(f"state database {location} does not exist: run the pipeline first")
        store = cls(*args, **options)
        await store._connect(location, create=False)
        try:
            yield store
        finally:
            await store.close()

    async def _connect(self, location: Location, *, create: bool) -> None:
        backend = self.backend = backend_for(location)
        self.path = location
        self._writer = await backend.connect(location, create=create, functions=self.functions)
        try:
            try:
                await self._apply_schema(self._writer)
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

    async def _apply_schema(self, connection: Connection) -> None:
        """Create what is missing, then record the version, or bring an older
        database up to it. Only a database without this version takes the
        write lock: a CLI reading a busy pipeline's database does not wait."""
        await connection.script(VERSIONS_SCHEMA + self.schema)
        query = "SELECT version FROM store_versions WHERE store = ?"
        if await connection.scalar(query, (self.name,)) == self.version:
            return
        await connection.begin()
        try:
            found = await connection.scalar(query, (self.name,))
            if found is not None and found > self.version:
                raise StateError(
                    f"state database {self.path}: its {self.name} tables are version {found},"
                    f" newer than this pipelines knows ({self.version}); upgrade pipelines"
                )
            if found is not None and found < self.version:
                await self.migrate(connection, found)
            await connection.execute(
                self.dialect.upsert("store_versions", ("store", "version", "applied"), ("store",)),
                (self.name, self.version, time.time()),
            )
            await connection.commit()
        except BaseException:
            await asyncio.shield(connection.rollback())
            raise

    async def migrate(self, connection: Queries, found: int) -> None:
        """Bring the store's tables from version ``found`` to ``version``,
        inside the transaction that then records it. Nothing to do until a
        store's version is raised (``schema`` has created what was missing)."""

    async def opened(self) -> None:
        """Called once connected, before ``open`` returns (load what it caches)."""

    async def close(self) -> None:
        """Close its connections (a second call does nothing), once the
        ``grouped`` statements already submitted are written."""
        if self._trips is not None:
            await asyncio.shield(self._trips)
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
        async with self._lock:
            return await self._writer.rows(sql, parameters)

    async def execute(self, sql: str, parameters: Parameters = ()) -> int:
        if self._inside():
            return await self._writer.execute(sql, parameters)
        async with self._lock:
            return await self._writer.execute(sql, parameters)

    async def executemany(self, sql: str, parameters: Iterable[Parameters]) -> int:
        if self._inside():
            return await self._writer.executemany(sql, parameters)
        async with self._lock:
            return await self._writer.executemany(sql, parameters)

    async def batch(self, steps: Sequence[Step], *, synced: bool = False) -> list[Done]:
        """Run ``steps`` in one trip to the database, in one transaction: all
        of them or none (a failure rolls every one back and is raised; a
        cancelled caller does not learn which, but no transaction is left
        half done). Called by the coroutine holding ``transaction()``, they
        run inside it instead. ``synced``: the commit reaches the disk before
        this returns (not inside ``transaction()``, whose commit is its own).

        The writer's lock is held only while the plan is handed over, not
        while it runs: the connection runs what it is handed in order, so no
        other coroutine's statement lands inside the batch, and the next
        caller's work is queued behind it without a round trip in between."""
        if self._inside():
            if synced:
                raise StateError("a synced batch cannot run inside transaction()")
            return await self._writer.batch(steps, transaction=False)
        return await self._hand_over(steps, synced)

    async def _hand_over(self, steps: Sequence[Step], synced: bool) -> list[Done]:
        async with self._lock:
            # The plan's coroutine is made only once the lock is held: a caller
            # cancelled while waiting for it leaves no coroutine never awaited.
            running = asyncio.ensure_future(
                self._writer.batch(steps, transaction=True, synced=synced)
            )
            # The task's first step (handing the plan to the connection) runs
            # before this coroutine resumes: the ready queue is first in, first out.
            await asyncio.sleep(0)
        return await running

    async def grouped(self, sql: str, parameters: Parameters = ()) -> list[Row]:
        """One statement, written in a trip it shares with the ``grouped``
        statements other coroutines submit meanwhile (group commit); its rows.

        Alone, it runs as it is (its own transaction). Those submitted while
        a trip is under way go together in the next one: one ``batch``, one
        transaction, one trip to the database. So a store busy with several
        callers makes fewer, bigger trips, and a lone caller waits no more
        than for ``rows``. Statements run in the order they were submitted.

        A caller cancelled before its trip leaves is not written; one
        cancelled after may be (as with ``rows``): a statement submitted
        after that cancellation runs after it, so it can undo it. When a
        shared trip fails, its statements are tried again one by one, so a
        failing statement fails its own caller only."""
        if self._inside():
            return await self._writer.rows(sql, parameters)
        if self._trips is None and not self._alone and not self._lock.locked():
            return await self._lone(Step(sql, parameters))
        done: asyncio.Future[list[Row]] = asyncio.get_running_loop().create_future()
        self._grouped.append((Step(sql, parameters), done))
        if self._trips is None:
            self._trips = asyncio.ensure_future(self._make_trips())
        return await done

    async def _lone(self, step: Step) -> list[Row]:
        """Nothing else under way: the statement goes at once, from the
        caller's own task (no trip task, no extra turn of the event loop).
        Those submitted while it runs gather for the next trip. No lock is
        taken: none is held now, and the hand-over happens before this
        coroutine first yields, so no transaction can begin in between."""
        self._alone += 1
        try:
            return (await self._writer.batch([step], transaction=False))[0].rows
        finally:
            self._alone -= 1
            self._back.set()

    async def _make_trips(self) -> None:
        """While grouped statements wait: take them all, hand them to the
        database as one trip, answer their callers when it is back; repeat
        until none wait. Up to ``TRIPS_IN_FLIGHT`` trips are handed over at
        once, so the database's thread starts the next one as soon as one
        ends instead of waiting for the event loop to hand it over."""
        in_flight: collections.deque[tuple[list[_Waiting], asyncio.Task[list[Done]]]]
        in_flight = collections.deque()
        try:
            while self._grouped or in_flight:
                if self._grouped and len(in_flight) + self._alone < TRIPS_IN_FLIGHT:
                    taken = [(step, done) for step, done in self._grouped if not done.done()]
                    self._grouped = []
                    if taken:
                        in_flight.append((taken, await self._leave([s for s, _ in taken])))
                    continue
                if not in_flight:  # a lone statement is under way: more gather meanwhile
                    self._back.clear()
                    await self._back.wait()
                    continue
                taken, running = in_flight.popleft()
                await self._arrive(taken, running)
        except BaseException:
            # Cancelled (the loop is closing): nobody may wait for ever. A trip
            # already handed over still commits or rolls back as a whole.
            stopped = StateError(f"the {self.name} store stopped before this write was confirmed")
            for taken, _ in in_flight:
                for _, done in taken:
                    _settle(done, stopped)
            for _, done in self._grouped:
                _settle(done, stopped)
            self._grouped = []
            raise
        finally:
            self._trips = None

    async def _leave(self, steps: list[Step]) -> asyncio.Task[list[Done]]:
        """Hand ``steps`` to the database (one transaction if several)."""
        async with self._lock:
            running = asyncio.ensure_future(self._writer.batch(steps, transaction=len(steps) > 1))
            await asyncio.sleep(0)  # its first step hands the plan over (see ``batch``)
        return running

    async def _arrive(self, taken: list[_Waiting], running: asyncio.Task[list[Done]]) -> None:
        """Answer each caller of a trip with its rows. A shared trip that
        failed was rolled back as a whole (none of it was written): its
        statements are tried again one by one, so that a failing statement
        fails its own caller only."""
        try:
            outcomes: list[Any] = [done.rows for done in await running]
        except Exception as exc:
            if len(taken) == 1:
                outcomes = [exc]
            else:
                outcomes = [await self._alone_again(step) for step, _ in taken]
        for (_, done), outcome in zip(taken, outcomes, strict=True):
            _settle(done, outcome)

    async def _alone_again(self, step: Step) -> list[Row] | Exception:
        try:
            running = await self._leave([step])
            return (await running)[0].rows
        except Exception as exc:
            return exc

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
