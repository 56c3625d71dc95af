"""Archives: the durable record of the events put on a bus (SQLite).

An archive has a name, a source bus, an optional event pattern (only matching
events are kept) and a retention in days (0 keeps forever). ``put_events``
writes the events each archive keeps *before* it answers, so an event whose
``put_events`` call returned survives a crash of the process; with
``durability: strict`` it also survives a power loss.

Writes are grouped: every call waiting at the same moment shares one
transaction (group commit), so many small ``put_events`` calls cost one
commit, not one each. Events that carry ``replay-name`` are never archived
(AWS's managed archive rule has ``{"replay-name": [{"exists": false}]}``), so
a replay does not archive itself again.

The tables live in the runner's state database; ``ArchiveStore`` is also
what the CLI opens to list and describe archives of a pipeline that is not
running.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any

import orjson

from pipelines.clock import Clock
from pipelines.errors import ConfigError, NotRunningError, ResourceNotFoundError, StateError, Where
from pipelines.event import DEFAULT_ACCOUNT, DEFAULT_REGION, dump_json, format_epoch, parse_time
from pipelines.patterns import Matcher, Pattern, compile_pattern
from pipelines.store import Dialect, Location, Queries, Row, Step, Store, Upkeep
from pipelines.targets import check_keys

log = logging.getLogger("pipelines.archive")

ARCHIVE_KEYS = {"bus", "pattern", "retention_days", "durability", "description"}
#: ``durability`` -> SQLite's ``synchronous`` for the commits that hold its events.
#: In WAL mode NORMAL survives a process crash (the WAL is in the OS's hands
#: at commit); FULL also syncs the WAL to disk at every commit: power loss.
DURABILITY = {"normal": "NORMAL", "strict": "FULL"}
ENABLED = "ENABLED"
DISABLED = "DISABLED"
PURGE_EVERY = 3600.0  # seconds between retention purges
PURGE_BATCH = 10_000  # events deleted per transaction, so writers are not held up
MAX_NAME = 48
MIN_SQLITE = (3, 38, 0)  # the ->> operator
#: Events to archive: (archive name, event time in epoch seconds, event JSON).
Rows = list[tuple[str, float, bytes]]
#: The most events, and bytes of them, that one row of ``archive_groups`` holds.
GROUP_EVENTS = 100
GROUP_BYTES = 256 * 1024

# One row holds the events of one archive with one event time that one
# commit wrote (up to GROUP_EVENTS of them), as JSON lines: the events' own
# compact JSON (``dump_json`` writes no newline) joined by b"\n". A put's
# events share their second, so a put of ten is one row, not ten: one
# B-tree insert and one index entry instead of ten, which is most of a lone
# producer's commit. Every row has one event time, so replay's time window,
# its order (time, then seq, then the event's place in the row) and
# retention's purges stay exact per event. Version 2 kept one event per row
# in ``archive_events``; its rows are single-event rows of this table.
SCHEMA = """
CREATE TABLE IF NOT EXISTS archives (
    name           TEXT PRIMARY KEY,
    bus            TEXT NOT NULL,
    pattern        TEXT,
    retention_days INTEGER NOT NULL,
    durability     TEXT NOT NULL,
    description    TEXT NOT NULL,
    state          TEXT NOT NULL,
    created        REAL NOT NULL,
    event_count    INTEGER NOT NULL DEFAULT 0,
    size_bytes     INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS archive_groups (
    seq     INTEGER PRIMARY KEY,
    archive TEXT NOT NULL,
    time    REAL NOT NULL,
    events  INTEGER NOT NULL DEFAULT 1,
    body    BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS archive_events_time ON archive_groups (archive, time);
CREATE TABLE IF NOT EXISTS replays (
    name          TEXT PRIMARY KEY,
    archive       TEXT NOT NULL,
    bus           TEXT NOT NULL,
    rules         TEXT,
    start_time    REAL NOT NULL,
    end_time      REAL NOT NULL,
    speed         REAL,
    description   TEXT NOT NULL,
    state         TEXT NOT NULL,
    reason        TEXT NOT NULL,
    total         INTEGER NOT NULL,
    replayed      INTEGER NOT NULL,
    cursor_time   REAL NOT NULL,
    cursor_seq    INTEGER NOT NULL,
    cursor_item   INTEGER NOT NULL DEFAULT 0,
    last_replayed REAL,
    started       REAL,
    ended         REAL,
    owner         TEXT,
    lease         REAL
);
"""

#: The bytes of a row's events (``SizeBytes`` counts events, not the newlines between them).
EVENT_BYTES = "length({row}body) - {row}events + 1"

#: What keeps each archive's count and size as rows come and go, in each
#: engine's words, one statement each (a migration runs them one by one).
SQLITE_COUNTING = (
    # SQLite has only row triggers: one on insert was an UPDATE of the
    # archive's row per row inserted. The insert statements update the
    # counts instead, once per archive (``ArchiveStore.insert``); deletes
    # (purges, rare) keep a trigger.
    "CREATE TRIGGER IF NOT EXISTS archive_groups_removed AFTER DELETE ON archive_groups BEGIN"
    " UPDATE archives SET event_count = event_count - OLD.events,"
    f" size_bytes = size_bytes - ({EVENT_BYTES.format(row='OLD.')}) WHERE name = OLD.archive;"
    " END",
)
# Statement-level triggers over the transition table: one UPDATE per archive
# a statement touched, not one per row (in PostgreSQL each UPDATE of a row
# makes a new version of it: a group of 1,000 rows would leave 1,000 dead
# versions of its archive's row). Runners writing at once wait for each
# other on the archive's row until commit, so no count is lost; the rows are
# locked in name order, so two writers touching the same archives cannot
# deadlock. (Version 2's function, ``archive_events_counted``, counted
# rows; a version 2 process would put it back as it was, so this is another.)
POSTGRESQL_COUNTING = (
    f"""CREATE OR REPLACE FUNCTION archive_groups_counted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM 1 FROM archives WHERE name IN (SELECT archive FROM changed)
            ORDER BY name FOR NO KEY UPDATE;
        UPDATE archives SET event_count = archives.event_count + moved.events,
            size_bytes = archives.size_bytes + moved.bytes
        FROM (SELECT archive, sum(events) AS events, sum({EVENT_BYTES.format(row="")}) AS bytes
              FROM changed GROUP BY archive) AS moved
        WHERE archives.name = moved.archive;
    ELSE
        PERFORM 1 FROM archives WHERE name IN (SELECT archive FROM gone)
            ORDER BY name FOR NO KEY UPDATE;
        UPDATE archives SET event_count = archives.event_count - moved.events,
            size_bytes = archives.size_bytes - moved.bytes
        FROM (SELECT archive, sum(events) AS events, sum({EVENT_BYTES.format(row="")}) AS bytes
              FROM gone GROUP BY archive) AS moved
        WHERE archives.name = moved.archive;
    END IF;
    RETURN NULL;
END $$""",
    "CREATE OR REPLACE TRIGGER archive_groups_added AFTER INSERT ON archive_groups"
    " REFERENCING NEW TABLE AS changed FOR EACH STATEMENT"
    " EXECUTE FUNCTION archive_groups_counted()",
    "CREATE OR REPLACE TRIGGER archive_groups_removed AFTER DELETE ON archive_groups"
    " REFERENCING OLD TABLE AS gone FOR EACH STATEMENT"
    " EXECUTE FUNCTION archive_groups_counted()",
)
COUNTING = MappingProxyType({"sqlite": SQLITE_COUNTING, "postgresql": POSTGRESQL_COUNTING})

#: What a write to version 2's table answers once version 3 renamed it.
MOVED = (
    "archive_events is archive_groups since archives version 3:"
    " stop this runner of an earlier pipelines and upgrade it"
)
# Version 3's migration leaves an empty ``archive_events`` whose inserts
# fail, in each engine's words. Without it, a process of version 2 opening
# the database (those before the version check came first run their DDL)
# would make the table again, and a version 2 runner still running would
# archive into it, answering its puts, where nothing reads.
MOVED_GUARD = MappingProxyType(
    {
        "sqlite": (
            "CREATE TABLE archive_events (seq INTEGER PRIMARY KEY, archive TEXT, time REAL,"
            " body BLOB)",
            "CREATE TRIGGER archive_events_moved BEFORE INSERT ON archive_events BEGIN"
            f" SELECT RAISE(ABORT, '{MOVED}'); END",
        ),
        "postgresql": (
            "CREATE TABLE archive_events (seq BIGINT, archive TEXT, time DOUBLE PRECISION,"
            " body BYTEA)",
            "CREATE OR REPLACE FUNCTION archive_events_moved() RETURNS trigger LANGUAGE plpgsql"
            f" AS $$ BEGIN RAISE EXCEPTION '{MOVED}'; END $$",
            "CREATE TRIGGER archive_events_moved BEFORE INSERT ON archive_events"
            " FOR EACH STATEMENT EXECUTE FUNCTION archive_events_moved()",
        ),
    }
)
ENGINE_SCHEMA = MappingProxyType(
    {engine: "".join(f"{statement};\n" for statement in made) for engine, made in COUNTING.items()}
)


#: The columns of ``replays``, in the order ``ArchiveStore`` reads and writes them.
REPLAY_COLUMNS = (
    "name",
    "archive",
    "bus",
    "rules",
    "start_time",
    "end_time",
    "speed",
    "description",
    "state",
    "reason",
    "total",
    "replayed",
    "cursor_time",
    "cursor_seq",
    "cursor_item",
    "last_replayed",
    "started",
    "ended",
)


#: The states of a replay under way (``pipelines.replay``'s STARTING, RUNNING,
#: CANCELLING): one runner runs it.
REPLAY_ACTIVE = ("STARTING", "RUNNING", "CANCELLING")
REPLAY_CANCELLING = "CANCELLING"


#: Up to this many rows, a commit's insert binds them as VALUES: no JSON to
#: parse, no BLOB to cut (a lone put's row costs the database's thread about
#: 20 µs less). More go as one BLOB and a JSON array (``_insert_sql``).
VALUES_ROWS = 8


@lru_cache(maxsize=VALUES_ROWS)
def _values_sql(rows: int) -> str:
    """``ArchiveStore.insert``'s statement for ``rows`` rows as VALUES."""
    values = ", ".join(["(?, ?, ?, ?)"] * rows)
    return f"INSERT INTO archive_groups (archive, time, events, body) VALUES {values}"


@lru_cache(maxsize=8)
def _insert_sql(dialect: Dialect) -> str:
    """``ArchiveStore.insert``'s statement in ``dialect``'s words: the bodies'
    BLOB first, then the JSON array of (archive, time, events, offset, length)."""
    item = dialect.json_item
    return (
        "INSERT INTO archive_groups (archive, time, events, body)"
        f" SELECT {item('given', 0, 'text')}, {item('given', 1, 'real')},"
        f" CAST({item('given', 2, 'integer')} AS INTEGER),"
        f" substr(?, CAST({item('given', 3, 'integer')} AS INTEGER),"
        f" CAST({item('given', 4, 'integer')} AS INTEGER))"
        f" FROM {dialect.json_rows('given')}"
    )


def grouped(rows: Rows) -> list[tuple[str, float, list[bytes]]]:
    """``rows`` as the rows of ``archive_groups``: (archive, time, events),
    the events of one archive and one time together in their order, up to
    ``GROUP_EVENTS`` and ``GROUP_BYTES`` a row. The groups come in the order
    of their first event, so a later group of a key comes after an earlier
    one (replay reads a time's rows in ``seq`` order). An event whose JSON
    holds a newline (never ``dump_json``'s) is a row of its own."""
    groups: list[tuple[str, float, list[bytes]]] = []
    open_groups: dict[tuple[str, float], tuple[list[bytes], list[int]]] = {}
    for name, moment, body in rows:
        key = (name, moment)
        if b"\n" in body:
            # Alone, and the key's open row closes: an event after this one
            # joining it would be read back before this one.
            groups.append((name, moment, [body]))
            open_groups.pop(key, None)
            continue
        found = open_groups.get(key)
        if found is not None:
            events, size = found
            # (size: the row's bytes so far; the event joins after a newline)
            if len(events) < GROUP_EVENTS and size[0] + 1 + len(body) <= GROUP_BYTES:
                events.append(body)
                size[0] += len(body) + 1
                continue
        events = [body]
        groups.append((name, moment, events))
        open_groups[key] = (events, [len(body)])
    return groups


def row_events(events: int, body: bytes) -> list[bytes]:
    """The events' JSON a row of ``archive_groups`` holds (``events`` of them
    in ``body``): one event's as it is (it may hold a newline), more as JSON
    lines."""
    return [bytes(body)] if events == 1 else bytes(body).split(b"\n")


@lru_cache(maxsize=4096)
def event_time(text: str) -> float:
    """An event's ``time`` as epoch seconds (events of one second share the parse)."""
    return parse_time(text).timestamp()


def archive_arn(name: str) -> str:
    return f"arn:aws:events:{DEFAULT_REGION}:{DEFAULT_ACCOUNT}:archive/{name}"


def iso(seconds: float | None) -> str | None:
    """Epoch seconds as RFC 3339 UTC (None stays None), for descriptions."""
    return None if seconds is None else format_epoch(seconds)


@dataclass(frozen=True, slots=True)
class ArchiveSpec:
    """An archive as declared (CreateArchive's parameters, in our names)."""

    name: str
    bus: str
    pattern: Pattern | None
    retention_days: int
    durability: str
    description: str

    @classmethod
    def parse(cls, name: str, config: Mapping[str, Any]) -> ArchiveSpec:
        """Check a declaration; ``ConfigError`` names the setting at fault."""
        where = Where(f"archive {name}")
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME:
            raise ConfigError(where, f"an archive name has 1 to {MAX_NAME} characters")
        if not all(c.isascii() and (c.isalnum() or c in ".-_") for c in name):
            raise ConfigError(where, "an archive name has only letters, digits, '.', '-', '_'")
        if not isinstance(config, Mapping):
            raise ConfigError(where, "an archive is a mapping (bus, pattern, retention_days, ...)")
        check_keys(where, config, ARCHIVE_KEYS)
        bus = config.get("bus", "default")
        if not isinstance(bus, str) or not bus:
            raise ConfigError(where / "bus", "must be the name of an event bus")
        retention = config.get("retention_days", 0)
        if not isinstance(retention, int) or isinstance(retention, bool) or retention < 0:
            raise ConfigError(
                where / "retention_days", "must be a whole number of days, 0 to keep forever"
            )
        durability = config.get("durability", "normal")
        if not isinstance(durability, str) or durability not in DURABILITY:
            raise ConfigError(
                where / "durability",
                "must be 'normal' (survives a process crash) or 'strict' (survives power loss)",
            )
        description = config.get("description", "")
        if not isinstance(description, str) or len(description) > 512:
            raise ConfigError(where / "description", "must be a string of at most 512 characters")
        raw = config.get("pattern")
        pattern = compile_pattern(raw) if raw is not None else None
        return cls(name, bus, pattern, retention, durability, description)

    @property
    def strict(self) -> bool:
        return self.durability == "strict"


class ArchiveStore(Store):
    """The archive tables of a state database. ``await ArchiveStore.open(path)``.

    One connection writes (events, purges, replay progress): archiving a
    group of events is one transaction of ``insert``'s statements, handed to
    its thread in one trip. Another connection reads (``reader``), so a long
    replay scan does not queue behind writes (WAL lets them overlap).
    """

    name = "archives"
    #: 2: a replay's ``owner`` and ``lease`` (which runner runs it, until when).
    #: 3: ``archive_groups`` (was ``archive_events``, one event a row) and
    #: a replay's ``cursor_item``.
    version = 3
    schema = SCHEMA
    engine_schema = ENGINE_SCHEMA
    separate_reader = True

    def __init__(self, clock: Clock | None = None) -> None:
        super().__init__(clock)

    async def migrate(self, connection: Queries, found: int) -> None:
        if found < 2:
            # DOUBLE PRECISION: SQLite reads it as REAL, PostgreSQL's REAL is 4 bytes.
            await connection.execute("ALTER TABLE replays ADD COLUMN owner TEXT")
            await connection.execute("ALTER TABLE replays ADD COLUMN lease DOUBLE PRECISION")
        if found < 3:
            await self._group_rows(connection)

    async def _group_rows(self, connection: Queries) -> None:
        """Version 2 to 3: ``archive_events``' rows become single-event rows
        of ``archive_groups`` by a rename (no copy, however many there are),
        and its counting triggers give way to the new ones. A new name, not
        a new column: processes of version 2 and earlier run their DDL on a
        database before they refuse its version, which puts back their row
        trigger on ``archive_events``; it now counts nothing. The name is
        kept by a table that refuses inserts (``MOVED_GUARD``), so a runner
        of version 2 still running fails its archive writes."""
        engine = self.dialect.name
        on = " ON archive_events" if engine == "postgresql" else ""
        # This open's schema made archive_groups (empty) and its triggers.
        await connection.execute("DROP TABLE archive_groups")
        for trigger in ("archive_events_added", "archive_events_removed"):
            await connection.execute(f"DROP TRIGGER IF EXISTS {trigger}{on}")
        await connection.execute("ALTER TABLE archive_events RENAME TO archive_groups")
        for statement in MOVED_GUARD[engine]:
            await connection.execute(statement)
        for table, column in (
            ("archive_groups", "events INTEGER NOT NULL DEFAULT 1"),
            ("replays", "cursor_item INTEGER NOT NULL DEFAULT 0"),
        ):
            await connection.execute(self.dialect.ddl(f"ALTER TABLE {table} ADD COLUMN {column}"))
        # Version 2's position was the last row put, which held one event.
        await connection.execute("UPDATE replays SET cursor_item = 1")
        for statement in COUNTING[engine]:
            await connection.execute(statement)
        if engine == "postgresql":
            await connection.execute("DROP FUNCTION IF EXISTS archive_events_counted()")

    async def opened(self) -> None:
        if self.dialect.name == "sqlite" and sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StateError(
                f"archives need SQLite {'.'.join(map(str, MIN_SQLITE))} or newer (JSON operators);"
                f" this Python uses SQLite {sqlite3.sqlite_version}"
            )

    # -- archives -----------------------------------------------------------

    async def save_archive(self, spec: ArchiveSpec, now: float) -> None:
        """Create the archive, or update its definition (its events stay)."""
        pattern = spec.pattern.text if spec.pattern is not None else None
        async with self.transaction() as db:
            await db.execute(
                "INSERT INTO archives (name, bus, pattern, retention_days, durability,"
                " description, state, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET bus = excluded.bus,"
                " pattern = excluded.pattern, retention_days = excluded.retention_days,"
                " durability = excluded.durability, description = excluded.description,"
                " state = excluded.state",
                (
                    spec.name,
                    spec.bus,
                    pattern,
                    spec.retention_days,
                    spec.durability,
                    spec.description,
                    ENABLED,
                    now,
                ),
            )

    async def disable_others(self, names: Iterable[str]) -> None:
        """Mark every archive not in ``names`` DISABLED: no running pipeline
        declares it, so nothing is written to it (its events stay replayable)."""
        names = list(names)
        # PostgreSQL has no empty IN list: none declared disables every archive.
        kept = f" WHERE name NOT IN ({self.dialect.marks(len(names))})" if names else ""
        async with self.transaction() as db:
            await db.execute(f"UPDATE archives SET state = ?{kept}", (DISABLED, *names))

    async def delete_archive(self, name: str) -> None:
        async with self.transaction() as db:
            if await db.execute("DELETE FROM archives WHERE name = ?", (name,)) == 0:
                raise ResourceNotFoundError(f"Archive {name} does not exist.")
            await db.execute("DELETE FROM archive_groups WHERE archive = ?", (name,))

    async def describe(self, name: str) -> dict[str, Any]:
        """DescribeArchive: definition, EventCount, SizeBytes, oldest and newest event time."""
        row = await self.reader.one(
            "SELECT name, bus, pattern, retention_days, durability, description, state,"
            " created, event_count, size_bytes FROM archives WHERE name = ?",
            (name,),
        )
        if row is None:
            raise ResourceNotFoundError(f"Archive {name} does not exist.")
        span = await self.reader.one(
            "SELECT min(time), max(time) FROM archive_groups WHERE archive = ?", (name,)
        )
        oldest, newest = span if span is not None else (None, None)
        return _described(row, oldest, newest)

    async def list_archives(self, prefix: str = "") -> list[dict[str, Any]]:
        rows = await self.reader.rows(
            "SELECT name FROM archives WHERE substr(name, 1, ?) = ? ORDER BY name",
            (len(prefix), prefix),
        )
        names = [row[0] for row in rows]
        return [await self.describe(name) for name in names]

    # -- events -------------------------------------------------------------

    async def append(self, rows: Rows, *, strict: bool) -> None:
        """Write events in one transaction, synced to disk when ``strict``;
        the archives' counters move with them."""
        await self.batch(self.insert(rows, self.dialect), synced=strict)

    @staticmethod
    def insert(rows: Rows, dialect: Dialect) -> list[Step]:
        """The statements that archive ``rows`` on ``dialect``'s engine, with
        their parameters, to run in one transaction (the durable intake runs
        them in its own, on its connection: see ``inserter``).

        The events go in as ``grouped`` rows, in one statement: a
        row-by-row ``executemany`` would take Python's GIL back at every
        row, and waiting for it while the event loop is busy costs far more
        than the insert (measured: 90,000 rows/s alone, a few hundred beside
        a busy thread); one statement waits for it once. Up to
        ``VALUES_ROWS`` rows (a lone put's one, or a busy commit's few
        seconds of events) are bound as VALUES. More go as the rows' bodies
        in one BLOB and a JSON array of (archive, time, events, offset,
        length): the database cuts the BLOB itself (``substr`` of a BLOB
        counts bytes from 1 on both engines). On SQLite a second statement
        adds to each archive's counts (PostgreSQL's statement trigger does
        it there)."""
        made: list[tuple[str, float, int, bytes]] = []
        added: dict[str, list[int]] = {}  # archive -> [events, bytes]
        for name, moment, events in grouped(rows):
            body = events[0] if len(events) == 1 else b"\n".join(events)
            made.append((name, moment, len(events), body))
            counts = added.get(name)
            if counts is None:
                counts = added[name] = [0, 0]
            counts[0] += len(events)
            counts[1] += len(body) - len(events) + 1
        if not made:
            return []
        if len(made) <= VALUES_ROWS:
            steps = [Step(_values_sql(len(made)), [value for row in made for value in row])]
        else:
            places: list[tuple[str, float, int, int, int]] = []
            offset = 1
            for name, moment, count, body in made:
                places.append((name, moment, count, offset, len(body)))
                offset += len(body)
            bodies = b"".join([body for *_, body in made])
            steps = [Step(_insert_sql(dialect), (bodies, orjson.dumps(places)))]
        if dialect.name == "sqlite":
            steps.append(
                Step(
                    "UPDATE archives SET event_count = event_count + ?,"
                    " size_bytes = size_bytes + ? WHERE name = ?",
                    [(events, size, name) for name, (events, size) in added.items()],
                    many=True,
                )
            )
        return steps

    @staticmethod
    def inserter(dialect: Dialect) -> Callable[[Rows], list[Step]]:
        """``insert`` for the engine of ``dialect``: what a durable intake on
        that database is given to write archive rows in its own writes."""
        return lambda rows: ArchiveStore.insert(rows, dialect)

    async def purge(self, name: str, before: float) -> int:
        """Delete the archive's events older than ``before`` (epoch seconds), in
        transactions of up to ``PURGE_BATCH`` events; returns how many went."""
        purged = 0
        while True:
            deleted = await self.purge_batch(name, before)
            purged += deleted
            # Short of the bound by more than a row can hold: no row was left.
            if deleted <= PURGE_BATCH - GROUP_EVENTS:
                return purged

    async def purge_batch(self, name: str, before: float) -> int:
        """One transaction of ``purge``: rows of the archive older than
        ``before`` holding up to ``PURGE_BATCH`` events in all (a row holds
        up to GROUP_EVENTS, so a bound on rows would let a transaction, and
        the writers behind it, grow that many times); how many events went."""
        async with self.transaction() as db:
            deleted = await db.rows(
                "DELETE FROM archive_groups WHERE seq IN (SELECT seq FROM"
                " (SELECT seq, sum(events) OVER (ORDER BY seq) AS upto FROM"
                " (SELECT seq, events FROM archive_groups WHERE archive = ? AND time < ?"
                " LIMIT ?) AS old) AS counted WHERE upto <= ?) RETURNING events",
                (name, before, PURGE_BATCH, PURGE_BATCH),
            )
        return sum(int(events) for (events,) in deleted)

    async def count(self, name: str, start: float, end: float) -> int:
        """Events of the archive whose event time is in [start, end)."""
        found = await self.reader.scalar(
            "SELECT sum(events) FROM archive_groups WHERE archive = ? AND time >= ? AND time < ?",
            (name, start, end),
        )
        return int(found or 0)

    async def read(
        self, name: str, after: tuple[float, int, int], end: float, limit: int
    ) -> list[tuple[float, int, int, bytes]]:
        """Up to ``limit`` events after the position ``after`` and before
        ``end``, in event-time order (archive order among equal times), each
        as (time, seq, item, body): its row's time and seq, and its place in
        the row from 1. A position is the last event put: (time, seq, item)."""
        after_time, after_seq, after_item = after
        # The rows first, without their bodies, then the bodies of those that
        # hold the first ``limit`` events (a row holds up to GROUP_EVENTS).
        # One row more than ``limit``: the first may be the position's own,
        # with no event left, and ``limit`` others hold at least ``limit``.
        spans = await self.reader.rows(
            "SELECT seq, events FROM archive_groups WHERE archive = ?"
            " AND (time, seq) >= (?, ?) AND time < ? ORDER BY time, seq LIMIT ?",
            (name, after_time, after_seq, end, limit + 1),
        )
        wanted: list[int] = []
        count = 0
        for seq, events in spans:
            left = events - after_item if seq == after_seq else events
            if left <= 0:
                continue  # the position's own row, whole
            count += left
            wanted.append(seq)
            if count >= limit:
                break
        if not wanted:
            return []
        found = await self.reader.rows(
            f"SELECT seq, time, events, body FROM archive_groups"
            f" WHERE seq IN ({self.dialect.marks(len(wanted))})",
            wanted,
        )
        rows = {row[0]: row for row in found}
        read: list[tuple[float, int, int, bytes]] = []
        for seq in wanted:
            row = rows.get(seq)  # (a purge may have taken it meanwhile)
            if row is None:
                continue
            _, moment, events, body = row
            bodies = row_events(events, body)
            first = after_item if seq == after_seq else 0
            for item in range(first, len(bodies)):
                read.append((moment, seq, item + 1, bodies[item]))
        return read[:limit]

    async def exists(self, name: str) -> bool:
        return await self.reader.one("SELECT 1 FROM archives WHERE name = ?", (name,)) is not None

    # -- replays --------------------------------------------------------------

    #
    # Runners sharing a database share its replays: a replay is run by the
    # runner whose ``owner`` it carries, until ``lease`` (clock seconds),
    # which the owner renews as it goes. Each write of a replay's progress
    # says who writes it, and changes nothing unless the writer still owns
    # it: a runner that lost a replay (its lease ran out and another runner
    # took it over) learns so, and stops, instead of both putting its events.

    async def create_replay(self, row: Sequence[Any], owner: str, lease: float) -> bool:
        """Insert a new replay (values of ``REPLAY_COLUMNS``, the name first),
        owned by ``owner`` until ``lease``; False when one of that name exists
        (another runner may have started it meanwhile: one of them wins)."""
        columns = (*REPLAY_COLUMNS, "owner", "lease")
        return (
            await self.execute(self.dialect.insert_new("replays", columns), (*row, owner, lease))
            == 1
        )

    async def claim_replay(self, name: str, owner: str, now: float, lease: float) -> bool:
        """Take a replay that is under way and that no runner runs (its owner
        let it go, or its lease ended before ``now``), or that ``owner``
        already holds: whether ``owner`` now holds it, until ``lease``. Of
        runners claiming one replay at once, exactly one gets it.

        A SQLite file has one runner (its lock beside the file keeps a second
        one out): an owner other than ``owner`` is a process that ended, even
        if it crashed before its lease did, and its replays are free at once."""
        if self.dialect.name == "sqlite":
            now = math.inf
        changed = await self.execute(
            "UPDATE replays SET owner = ?, lease = ? WHERE name = ?"
            f" AND state IN ({self.dialect.marks(len(REPLAY_ACTIVE))})"
            " AND (owner IS NULL OR owner = ? OR lease < ?)",
            (owner, lease, name, *REPLAY_ACTIVE, owner, now),
        )
        return changed == 1

    async def save_replay(
        self, row: Sequence[Any], owner: str, lease: float | None, *, progress: bool = False
    ) -> bool:
        """Write a replay's state and progress (values of ``REPLAY_COLUMNS``)
        if ``owner`` holds it, renewing its lease (None: letting it go, for
        another runner to claim); False, and nothing written, when it does
        not. A ``progress`` write is refused too once another runner asked
        to cancel the replay (``cancel_replay``): its owner finishes it."""
        updated = REPLAY_COLUMNS[1:]
        assignments = ", ".join(f"{column} = ?" for column in updated)
        query = f"UPDATE replays SET {assignments}, lease = ? WHERE name = ? AND owner = ?"
        arguments = [*row[1:], lease, row[0], owner]
        if lease is None:
            query = query.replace("lease = ?", "lease = ?, owner = NULL", 1)
        if progress:
            query += " AND state <> ?"
            arguments.append(REPLAY_CANCELLING)
        return await self.execute(query, arguments) == 1

    async def renew_replay(self, name: str, owner: str, lease: float) -> str | None:
        """Extend ``owner``'s lease of a replay; the replay's stored state if
        ``owner`` still holds it, else None."""
        return await self.scalar(  # type: ignore[no-any-return]
            "UPDATE replays SET lease = ? WHERE name = ? AND owner = ? RETURNING state",
            (lease, name, owner),
        )

    async def cancel_replay(self, name: str) -> bool:
        """Ask for a STARTING or RUNNING replay to be cancelled, whichever
        runner runs it (it finishes it at its next step); whether it was."""
        changed = await self.execute(
            "UPDATE replays SET state = ? WHERE name = ? AND state IN (?, ?)",
            (REPLAY_CANCELLING, name, *REPLAY_ACTIVE[:2]),
        )
        return changed == 1

    async def replay_owners(self) -> dict[str, tuple[str | None, float | None]]:
        """Each stored replay's owner and lease."""
        rows = await self.reader.rows("SELECT name, owner, lease FROM replays")
        return {name: (owner, lease) for name, owner, lease in rows}

    async def replays(self, name: str | None = None) -> list[Row]:
        """The stored replays (``REPLAY_COLUMNS``): the one named, or all by
        start (not started first, as SQLite orders NULLs; PostgreSQL's
        default would put them last)."""
        query = f"SELECT {', '.join(REPLAY_COLUMNS)} FROM replays"
        if name is None:
            return await self.reader.rows(query + " ORDER BY started NULLS FIRST, name")
        return await self.reader.rows(query + " WHERE name = ?", (name,))


def _described(row: Sequence[Any], oldest: float | None, newest: float | None) -> dict[str, Any]:
    name, bus, pattern, retention, durability, description, state, created, count, size = row
    described: dict[str, Any] = {
        "ArchiveName": name,
        "ArchiveArn": archive_arn(name),
        "EventSourceArn": f"arn:aws:events:{DEFAULT_REGION}:{DEFAULT_ACCOUNT}:event-bus/{bus}",
        "Description": description,
        "State": state,
        "RetentionDays": retention,
        "Durability": durability,
        "EventCount": count,
        "SizeBytes": size,
        "OldestEventTime": iso(oldest),
        "NewestEventTime": iso(newest),
        "CreationTime": iso(created),
    }
    if pattern is not None:
        described["EventPattern"] = pattern
    return described


async def read_archives(state: Location, name: str | None = None) -> list[dict[str, Any]]:
    """Describe one archive (``name``) or all, from the state database at
    ``state``, whether its pipeline runs or not (what ``pipelines archive`` shows)."""
    async with ArchiveStore.existing(state) as store:
        if name is not None:
            return [await store.describe(name)]
        return await store.list_archives()


class Archiver:
    """The runtime's archives (``runtime.archives``): CreateArchive and the
    other archive operations, which events each archive keeps, and the
    group-commit writer.

    ``run()`` is the writer task; ``write`` hands it events and waits for
    their commit. While one transaction commits, the next calls' events
    gather, so the group grows with the load. A call that finds nothing
    committing and nobody waiting commits its own events, without the
    writer task's two wake-ups (a lone producer's every call).
    """

    def __init__(
        self, clock: Clock, check_bus: Callable[[str], object] = lambda name: None
    ) -> None:
        self.clock = clock
        #: Raises ``ResourceNotFoundError`` for a bus that does not exist.
        self.check_bus = check_bus
        self.store: ArchiveStore | None = None
        self.specs: dict[str, ArchiveSpec] = {}
        self._matchers: dict[str, Matcher] = {}  # bus -> archives with a pattern
        self._unfiltered: dict[str, list[str]] = {}  # bus -> archives keeping everything
        #: Calls waiting for their commit: (events, strict, their future).
        self._pending: list[tuple[Rows, bool, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._committing = 0  # transactions under way (the writer's or a caller's own)
        self.closed = False  # the writer task ended: nothing more is written

    # -- EventBridge's operations ----------------------------------------------

    async def create_archive(
        self, name: str, settings: Mapping[str, Any] | None = None, **options: Any
    ) -> ArchiveSpec:
        """Create or update an archive (CreateArchive / UpdateArchive) from
        ``settings`` and keyword ``options``: ``bus`` (default ``default``),
        ``pattern``, ``retention_days`` (0: forever), ``durability`` (``normal``
        or ``strict``), ``description``. Events put from then on are archived;
        archives need a state database."""
        spec = ArchiveSpec.parse(name, {**(settings or {}), **options})
        self.check_bus(spec.bus)
        if self.store is not None:
            await self.store.save_archive(spec, self.clock.time())
        self.put(spec)
        return spec

    async def delete_archive(self, name: str) -> None:
        """Delete an archive and the events it holds."""
        self.remove(name)
        await self._open_store().delete_archive(name)

    async def disable_archive(self, name: str) -> None:
        """Stop archiving into ``name`` and keep its events, replayable (a
        reload that drops an archive from the config does this)."""
        self.remove(name)
        if self.store is not None:
            await self.store.disable_others(self.specs)

    async def describe_archive(self, name: str) -> dict[str, Any]:
        return await self._open_store().describe(name)

    async def list_archives(self, prefix: str = "") -> list[dict[str, Any]]:
        return await self._open_store().list_archives(prefix)

    def _open_store(self) -> ArchiveStore:
        if self.store is None:
            raise NotRunningError(
                "archives are read while the runtime runs with a state database"
                " (pipelines.archive.read_archives reads them otherwise)"
            )
        return self.store

    # -- definitions --------------------------------------------------------

    def put(self, spec: ArchiveSpec) -> None:
        self.specs[spec.name] = spec
        self._index()

    def remove(self, name: str) -> None:
        self.specs.pop(name, None)
        self._index()

    def _index(self) -> None:
        self._matchers, self._unfiltered = {}, {}
        for spec in self.specs.values():
            if spec.pattern is None:
                self._unfiltered.setdefault(spec.bus, []).append(spec.name)
            else:
                self._matchers.setdefault(spec.bus, Matcher()).add(spec.name, spec.pattern)

    def archives_of(self, bus: str) -> bool:
        return bus in self._unfiltered or bus in self._matchers

    # -- writing ------------------------------------------------------------

    async def archive(self, bus: str, events: list[dict[str, Any]]) -> None:
        """Write the events that the bus's archives keep; returns once committed.
        Raises ``StateError`` when the write failed (nothing of it is kept).
        (With a durable intake, ``put_events`` hands ``rows`` to it instead:
        one commit for both.)"""
        rows, strict = self.rows(bus, events)
        if rows:
            await self.write(rows, strict=strict)

    def rows(self, bus: str, events: list[dict[str, Any]]) -> tuple[Rows, bool]:
        """The rows of the events the bus's archives keep, and whether one of
        those archives is ``strict``."""
        everything = self._unfiltered.get(bus, ())
        matcher = self._matchers.get(bus)
        rows: Rows = []
        strict = False
        for event in events:
            if "replay-name" in event:
                continue
            names = list(everything)
            if matcher is not None:
                names += matcher.match(event)
            if names:
                body = dump_json(event)
                moment = event_time(event["time"])
                for name in names:
                    rows.append((name, moment, body))
                    strict = strict or self.specs[name].strict
        return rows, strict

    async def write(self, rows: Rows, *, strict: bool) -> None:
        """Archive ``Rows``; returns once they are committed."""
        if self.store is None:
            raise StateError("archives need a state database: give the runtime a state_path")
        if self.closed:
            raise StateError("the archive writer has stopped (the runtime is stopping)")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self._pending and not self._committing:
            # Nothing commits and nobody else waits: this call's rows are the
            # whole group, so it commits them itself. A lone producer's every
            # put would otherwise wake the writer task and be woken by it.
            try:
                await self._commit([(rows, strict, done)])
            except BaseException:
                if done.done():
                    done.exception()  # read: its one reader, this call, is leaving
                raise
            return await done
        self._pending.append((rows, strict, done))
        if not self._committing:
            # (A commit under way hands what gathered to the writer at its end.)
            self._wake.set()
        await done

    async def run(self) -> None:
        """The writer task: commit what gathered, wake its callers, repeat.
        Runs until cancelled; callers still waiting then get an error."""
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._pending:
                    await self._commit(self._take())
        finally:
            self.closed = True
            for _, _, done in self._pending:
                if not done.done():
                    done.set_exception(StateError("the archive writer stopped before this write"))

    def _take(self) -> list[tuple[Rows, bool, asyncio.Future[None]]]:
        """The calls whose events go into the next transaction: the older half
        of those waiting. Taking them all would keep every producer in step
        (all validate, then all wait for one commit); taking half lets one
        half's commit run on its thread while the other half validates."""
        pending = self._pending
        count = (len(pending) + 1) // 2
        taken, self._pending = pending[:count], pending[count:]
        return taken

    async def _commit(self, calls: list[tuple[Rows, bool, asyncio.Future[None]]]) -> None:
        self._committing += 1
        try:
            await self._commit_now(calls)
        finally:
            self._committing -= 1
            if self._pending and not self._committing:
                self._wake.set()

    async def _commit_now(self, calls: list[tuple[Rows, bool, asyncio.Future[None]]]) -> None:
        assert self.store is not None
        rows = [row for call, _, _ in calls for row in call]
        strict = any(strict for _, strict, _ in calls)
        waiting = [done for _, _, done in calls]
        # The engine's own errors: the database refused or failed the write.
        refused: tuple[type[Exception], ...] = (*self.store.backend.errors, ValueError)
        try:
            await self.store.append(rows, strict=strict)
        except refused as exc:
            log.error("archive write of %d events failed: %s", len(rows), exc)
            error = StateError(f"archive write to {self.store.path} failed: {exc}")
            for done in waiting:
                if not done.done():
                    done.set_exception(error)
            return
        except BaseException:
            # Cancelled mid-write (shutdown with a write under way, which stop()
            # avoids): the callers learn that their events may not be archived.
            error = StateError("the archive write was interrupted")
            for done in waiting:
                if not done.done():
                    done.set_exception(error)
            raise
        for done in waiting:
            if not done.done():
                done.set_result(None)

    @property
    def idle(self) -> bool:
        return not self._pending and not self._committing

    # -- retention ----------------------------------------------------------

    async def purge_now(self) -> int:
        """Apply every archive's retention once; returns how many events went."""
        if self.store is None:
            return 0
        purged = 0
        now = self.clock.time()
        for spec in list(self.specs.values()):
            if spec.retention_days:
                purged += await self.store.purge(spec.name, now - spec.retention_days * 86400)
        return purged

    async def purge_loop(self) -> None:
        """Purge at start and then every ``PURGE_EVERY`` seconds of clock time."""
        await self.retention().run(self.clock)

    def retention(self) -> Upkeep:
        """The archives' upkeep: events past their archive's retention go."""
        return Upkeep(PURGE_EVERY, self.purge_now, "archived events past retention", at_start=True)
