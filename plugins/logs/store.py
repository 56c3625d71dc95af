"""Log groups with CloudWatch Logs' semantics, durable in the state database
(SQLite).

- A group holds streams; a stream holds events ``{timestamp (ms), message}``.
  Every event also gets an id (its row id: the order of ingestion) and its
  ingestion time.
- ``put_log_events`` applies CloudWatch's PutLogEvents rules. A request is
  refused whole when it breaks a request rule (more than 10,000 events, more
  than 1,048,576 bytes counting 26 per event, not in chronological order, a
  span of more than 24 hours). Events too far in the future, more than 14
  days old or older than the group's retention are rejected one by one, and
  the rest are accepted; so is a malformed entry (a missing timestamp, an
  empty message), which CloudWatch would refuse with the whole request: the
  project's rule is that a bad entry fails alone.
- Metric filters run on every accepted event, in ``put_log_events``: their
  datapoints go to the metric sink (the runtime's ``put_metric_data``) after
  the events are committed.
- Subscription filters keep a cursor (the id of the last event they have
  looked at); ``read_subscription`` hands over what matches after it, one
  CloudWatch payload per log stream, and ``advance_subscription`` moves the
  cursor once the payloads are delivered: at least once.
- Retention: reads skip events older than the group's retention at once;
  ``expire`` deletes them.

Every write is one ``BEGIN IMMEDIATE`` transaction under the store's lock.

Event ids and several runners (PostgreSQL): a subscription's cursor, ``tail
--follow`` and a field's ``since`` read "the events after id N" of a group,
which holds only if the group's ids are given in the order their writes
commit. SQLite's single writer gives that; on PostgreSQL ids come from a
sequence as rows are inserted, and transactions commit in any order, so
every transaction that writes a group's events or reads where they stand
first locks the group's row (``Dialect.for_update``): the group's writes
take turns, and an id given after a commit is above every id committed
before it. Different groups still write at the same time.

Messages on PostgreSQL: its text cannot hold NUL, which a log message may;
there a NUL is stored as two private-use characters (and U+E000 itself as
two others), and read back as it was (``_stored``, ``_shown``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipelines.clock import Clock
from pipelines.errors import LogsError, MetricError
from pipelines.event import DEFAULT_ACCOUNT, DEFAULT_REGION
from pipelines.metrics import UNITS
from pipelines.store import Queries, Store, Upkeep
from plugins.logs.fieldindex import SLOTS, Extractor, assign_slots, parse_policy
from plugins.logs.filterpattern import FilterPattern, parse_filter_pattern
from plugins.logs.insights import Head, Query, QueryResult, parse_query
from plugins.logs.pushdown import FUNCTIONS, Indexed, Plan, plan, release

log = logging.getLogger("plugins.logs")

SCHEMA = """
CREATE TABLE IF NOT EXISTS log_groups (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    name           TEXT NOT NULL UNIQUE,
    created        INTEGER NOT NULL,
    retention_days INTEGER,
    index_policy   TEXT,     -- PutIndexPolicy's document, as stored (NULL: none)
    index_updated  INTEGER,
    index_slots    TEXT      -- {field: slot}: what ingest extracts (read with the group)
);
CREATE TABLE IF NOT EXISTS log_streams (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    grp            INTEGER NOT NULL,
    name           TEXT NOT NULL,
    created        INTEGER NOT NULL,
    first_event    INTEGER,
    last_event     INTEGER,
    last_ingestion INTEGER,
    stored_bytes   INTEGER NOT NULL DEFAULT 0,
    UNIQUE (grp, name)
);
CREATE TABLE IF NOT EXISTS log_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: cursors and tail count on it
    grp      INTEGER NOT NULL,
    stream   INTEGER NOT NULL,
    ts       INTEGER NOT NULL,
    ingested INTEGER NOT NULL,
    message  TEXT NOT NULL,
    -- the values of the group's indexed fields (fieldindex.py), NULL otherwise
    EXTRACTED
);
CREATE INDEX IF NOT EXISTS log_events_by_time ON log_events (grp, ts);
CREATE TABLE IF NOT EXISTS log_index_fields (
    grp   INTEGER NOT NULL,
    field TEXT NOT NULL,
    slot  INTEGER NOT NULL,  -- its column: f<slot>
    since INTEGER NOT NULL,  -- the first event id carrying it; older events keep their JSON
    kinds INTEGER NOT NULL DEFAULT 0,  -- the SQL types its column has held (fieldindex.KINDS)
    PRIMARY KEY (grp, field)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log_metric_filters (
    grp            INTEGER NOT NULL,
    name           TEXT NOT NULL,
    pattern        TEXT NOT NULL,
    transformation BLOB NOT NULL,
    created        INTEGER NOT NULL,
    PRIMARY KEY (grp, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log_subscription_filters (
    grp         INTEGER NOT NULL,
    name        TEXT NOT NULL,
    pattern     TEXT NOT NULL,
    destination TEXT NOT NULL,
    created     INTEGER NOT NULL,
    cursor      INTEGER NOT NULL,
    PRIMARY KEY (grp, name)
) WITHOUT ROWID;
""".replace("EXTRACTED", ",\n    ".join(f"{slot} BLOB" for slot in SLOTS))
# The value columns are declared BLOB: SQLite's affinity for it is none, so
# a value keeps the type ingest wrote (as with no declared type, what
# version 2's ALTER TABLE made); PostgreSQL needs a type (BYTEA), and leaves
# them empty: queries are not pushed down there (see ``LogStore.query``).

#: PutRetentionPolicy's allowed values (days).
RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
)  # fmt: skip
MAX_BATCH_EVENTS = 10_000
EXPIRE_INTERVAL = 3600.0  # retention of the log groups a pipeline runs
MAX_BATCH_BYTES = 1_048_576
EVENT_OVERHEAD = 26  # bytes counted per event on top of its UTF-8 message
MAX_EVENT_BYTES = 1_048_576 - EVENT_OVERHEAD
MAX_SPAN_MS = 24 * 3600 * 1000
FUTURE_LIMIT_MS = 2 * 3600 * 1000
PAST_LIMIT_MS = 14 * 24 * 3600 * 1000
DAY_MS = 24 * 3600 * 1000
MAX_METRIC_FILTERS = 100
MAX_SUBSCRIPTION_FILTERS = 2
MAX_DIMENSIONS = 3
MAX_PATTERN_LENGTH = 1024
MAX_FILTER_EVENTS = 10_000
GROUP_NAME = re.compile(r"[A-Za-z0-9_\-/.#]{1,512}")
FILTER_NAME = re.compile(r"[^:*]{1,512}")

#: Where metric filters' datapoints go: ``put_metric_data``'s signature.
MetricSink = Callable[..., None]


def check_group_name(name: str) -> str:
    if not isinstance(name, str) or not GROUP_NAME.fullmatch(name):
        raise LogsError(
            "InvalidParameterException",
            f"log group name {name!r} is not valid: 1 to 512 characters of letters, digits,"
            " '_', '-', '/', '.' and '#'",
        )
    return name


def check_stream_name(name: str) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= 512 or ":" in name or "*" in name:
        raise LogsError(
            "InvalidParameterException",
            f"log stream name {name!r} is not valid: 1 to 512 characters, without ':' or '*'",
        )
    return name


def check_filter_name(name: str) -> str:
    if not isinstance(name, str) or not FILTER_NAME.fullmatch(name):
        raise LogsError(
            "InvalidParameterException",
            f"filter name {name!r} is not valid: 1 to 512 characters, without ':' or '*'",
        )
    return name


def check_retention(days: Any) -> int | None:
    if days is None:
        return None
    if isinstance(days, bool) or days not in RETENTION_DAYS:
        raise LogsError(
            "InvalidParameterException",
            f"retentionInDays {days!r} is not one of CloudWatch's values:"
            f" {', '.join(map(str, RETENTION_DAYS))} (or none: never expire)",
        )
    return int(days)


@functools.lru_cache(maxsize=256)
def compiled(pattern: str) -> FilterPattern:
    """A parsed filter pattern, cached: metric and subscription filters are
    parsed once, not on every batch."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise LogsError(
            "InvalidParameterException",
            f"a filter pattern has at most {MAX_PATTERN_LENGTH} characters, not {len(pattern)}",
        )
    return parse_filter_pattern(pattern)


@dataclass(frozen=True, slots=True)
class MetricTransformation:
    """What a metric filter publishes for a matching event (CloudWatch's
    ``metricTransformations`` entry)."""

    metric_name: str
    metric_namespace: str
    metric_value: str  # a number, or a selector: "$.field" (JSON) or "$field" (space-delimited)
    default_value: float | None = None
    dimensions: Mapping[str, str] = field(default_factory=dict)
    unit: str = "None"

    def to_json(self) -> dict[str, Any]:
        shape: dict[str, Any] = {
            "metricName": self.metric_name,
            "metricNamespace": self.metric_namespace,
            "metricValue": self.metric_value,
            "unit": self.unit,
        }
        if self.default_value is not None:
            shape["defaultValue"] = self.default_value
        if self.dimensions:
            shape["dimensions"] = dict(self.dimensions)
        return shape

    @classmethod
    def from_json(cls, shape: Mapping[str, Any]) -> MetricTransformation:
        return cls(
            shape["metricName"],
            shape["metricNamespace"],
            shape["metricValue"],
            shape.get("defaultValue"),
            shape.get("dimensions") or {},
            shape.get("unit", "None"),
        )


def _literal(value: str) -> float | None:
    """``value`` as a finite number, or None."""
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def check_transformation(pattern: FilterPattern, t: MetricTransformation) -> None:
    """CloudWatch's PutMetricFilter checks on one transformation."""
    if not t.metric_name or not t.metric_namespace:
        raise LogsError(
            "InvalidParameterException",
            "a metric transformation needs metricName and metricNamespace",
        )
    if t.unit not in UNITS:
        raise LogsError(
            "InvalidParameterException",
            f"unit {t.unit!r} is not one of CloudWatch's units (Count, Seconds, Bytes, ...)",
        )
    if _literal(t.metric_value) is None:
        pattern.check_selector(t.metric_value)
    if len(t.dimensions) > MAX_DIMENSIONS:
        raise LogsError(
            "InvalidParameterException",
            f"a metric filter can have at most {MAX_DIMENSIONS} dimensions,"
            f" not {len(t.dimensions)}",
        )
    if t.dimensions and t.default_value is not None:
        raise LogsError(
            "InvalidParameterException",
            "a metric transformation cannot have both dimensions and a defaultValue",
        )
    for value in t.dimensions.values():
        pattern.check_selector(value)


@dataclass(slots=True)
class _MetricFilter:
    name: str
    pattern: FilterPattern
    transformation: MetricTransformation
    literal: float | None

    def datum(self, message: str) -> tuple[float, tuple[tuple[str, str], ...]] | None:
        """The value and dimensions this event publishes, if any."""
        found = self.pattern.match(message)
        t = self.transformation
        if found is None:
            return None if t.default_value is None else (t.default_value, ())
        value: Any = self.literal
        if value is None:
            value = found.value(t.metric_value)
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                return None
            value = _literal(value) if isinstance(value, str) else float(value)
            if value is None:
                return None  # CloudWatch publishes nothing for a non-numeric value
        dims = []
        for key, selector in t.dimensions.items():
            picked = found.value(selector)
            if picked is None:
                return None
            dims.append((key, picked if isinstance(picked, str) else orjson.dumps(picked).decode()))
        return value, tuple(dims)


def _datapoints(
    filters: list[_MetricFilter], rows: list[tuple[int, str]]
) -> list[tuple[_MetricFilter, int, tuple[tuple[str, str], ...], list[float]]]:
    """(filter, minute, dimensions, values) for what each filter publishes."""
    found = []
    for metric in filters:
        gathered: dict[tuple[int, tuple[tuple[str, str], ...]], list[float]] = {}
        for ts, message in rows:
            datum = metric.datum(message)
            if datum is not None:
                gathered.setdefault((ts // 60_000, datum[1]), []).append(datum[0])
        found += [(metric, minute, dims, values) for (minute, dims), values in gathered.items()]
    return found


def _matching(pattern: FilterPattern, rows: list[Any], column: int) -> list[Any]:
    """The rows whose ``column`` (a message) ``pattern`` matches."""
    return [row for row in rows if pattern.match(row[column]) is not None]


@dataclass(frozen=True, slots=True)
class SubscriptionBatch:
    """What ``read_subscription`` found after a filter's cursor: the payloads
    to deliver (one per log stream) and the cursor to store once they are."""

    payloads: list[dict[str, Any]]
    cursor: int
    scanned: int


def _token(ts: int, event_id: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([ts, event_id])).decode()


def _untoken(token: str) -> tuple[int, int]:
    try:
        ts, event_id = orjson.loads(base64.urlsafe_b64decode(token.encode()))
        return int(ts), int(event_id)
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise LogsError("InvalidParameterException", f"nextToken {token!r} is not valid") from None


def _read_token(token: str) -> tuple[bool, tuple[int, int]]:
    """A GetLogEvents token: (forward, (timestamp, event id))."""
    direction, _, rest = token.partition("/")
    ts, _, event_id = rest.partition("/")
    try:
        if direction not in ("f", "b"):
            raise ValueError(direction)
        return direction == "f", (int(ts), int(event_id))
    except ValueError:
        raise LogsError(
            "InvalidParameterException", "The specified nextToken is invalid."
        ) from None


class LogStore(Store):
    """The log groups of one state database. ``await LogStore.open(path)``, then ``close()``."""

    name = "logs"
    schema = SCHEMA
    #: 2: field index policies (log_groups.index_*, log_events.f0-f19, log_index_fields).
    version = 2
    #: The reference evaluator, callable from the SQL of pushed-down queries.
    functions = FUNCTIONS

    def __init__(
        self,
        clock: Clock | None = None,
        metrics: MetricSink | None = None,
        *,
        account: str = DEFAULT_ACCOUNT,
        region: str = DEFAULT_REGION,
    ) -> None:
        super().__init__(clock)
        self.metrics = metrics
        self.account = account
        self.region = region

    async def migrate(self, connection: Queries, found: int) -> None:
        """Version 1 had no field indexes: add their columns (ALTER TABLE ADD
        COLUMN rewrites no row; ``schema`` has made log_index_fields)."""
        if found < 2:
            for column in ("index_policy TEXT", "index_updated INTEGER", "index_slots TEXT"):
                await connection.execute(f"ALTER TABLE log_groups ADD COLUMN {column}")
            for slot in SLOTS:
                await connection.execute(f"ALTER TABLE log_events ADD COLUMN {slot}")

    @property
    def _pushes_down(self) -> bool:
        """Whether queries run their leading filters and first stats in SQL.

        SQLite only: the pushed-down SQL is SQLite's (JSON1, ``typeof``,
        GLOB) and calls the reference evaluator back for the rows where
        SQL and Python could read a message differently, which PostgreSQL
        cannot (it runs no Python). On PostgreSQL the store reads the
        group's events in the time range (the columns the query needs)
        and the reference evaluator does the rest in Python: the same
        answers, with more rows read. So ingest extracts no indexed values
        there either (no query would read them); policies are kept all
        the same."""
        return self.dialect.name == "sqlite"

    @property
    def _escapes(self) -> bool:
        """Whether messages are stored escaped (the module's notes: PostgreSQL)."""
        return self.dialect.name != "sqlite"

    def _read_messages(self, rows: list[Any], index: int) -> list[Any]:
        """Rows read with a message in column ``index``, as the messages were put."""
        return _shown_rows(rows, index) if self._escapes and rows else rows

    def retention(self) -> Upkeep:
        """The upkeep of the log groups a pipeline runs: events past their
        group's retention are deleted once an hour."""
        return Upkeep(EXPIRE_INTERVAL, self.expire, "log events past retention")

    def _now_ms(self) -> int:
        return int(self.clock.time() * 1000)

    def arn(self, group: str) -> str:
        return f"arn:aws:logs:{self.region}:{self.account}:log-group:{group}"

    # -- groups and streams -------------------------------------------------

    async def _group(self, name: str, *, lock: bool = False) -> tuple[int, int | None]:
        """The id and retention of group ``name``; ResourceNotFoundException otherwise.
        ``lock`` (inside a transaction): the group's writes take turns until
        it ends (the module's notes on event ids)."""
        row = await self.one(
            "SELECT id, retention_days FROM log_groups WHERE name = ?"
            + (self.dialect.for_update if lock else ""),
            (name,),
        )
        if row is None:
            raise LogsError(
                "ResourceNotFoundException", f"The specified log group does not exist: {name}"
            )
        return row[0], row[1]

    async def create_log_group(
        self, name: str, retention_days: int | None = None, *, exist_ok: bool = False
    ) -> None:
        """CreateLogGroup (with its retention, PutRetentionPolicy). With
        ``exist_ok`` an existing group is kept as it is."""
        check_group_name(name)
        days = check_retention(retention_days)
        # One statement: runners creating the group at once (a pipeline's
        # start on each) find it made by the name's uniqueness, not an error.
        made = await self.one(
            "INSERT INTO log_groups (name, created, retention_days) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO NOTHING RETURNING id",
            (name, self._now_ms(), days),
        )
        if made is None and not exist_ok:
            raise LogsError(
                "ResourceAlreadyExistsException",
                f"The specified log group already exists: {name}",
            )

    async def put_retention_policy(self, name: str, days: int | None) -> None:
        """PutRetentionPolicy (``None``: DeleteRetentionPolicy, never expire)."""
        days = check_retention(days)
        async with self.transaction() as db:
            await self._group(name, lock=True)
            await db.execute(
                "UPDATE log_groups SET retention_days = ? WHERE name = ?", (days, name)
            )

    # -- field index policies -------------------------------------------------

    async def put_index_policy(
        self, group: str, document: str | Mapping[str, Any]
    ) -> dict[str, Any]:
        """PutIndexPolicy: the fields (``{"Fields": [...]}``) whose values
        ingest extracts from now on. A field indexed already keeps its column
        and the events it covers; a new one covers the events written after."""
        fields = parse_policy(document)
        text = orjson.dumps({"Fields": fields}).decode()
        now = self._now_ms()
        async with self.transaction() as db:
            # Locked: ``since`` below is above every event id of the group
            # committed or to come before this commit (the module's notes on event ids).
            group_id, _ = await self._group(group, lock=True)
            found = await db.rows(
                "SELECT field, slot FROM log_index_fields WHERE grp = ?", (group_id,)
            )
            current = {name: slot for name, slot in found}
            slots = assign_slots(fields, current)
            since = await db.scalar("SELECT coalesce(max(id), 0) + 1 FROM log_events")
            for name in set(current) - set(fields):
                await db.execute(
                    "DELETE FROM log_index_fields WHERE grp = ? AND field = ?", (group_id, name)
                )
            await db.executemany(
                "INSERT INTO log_index_fields (grp, field, slot, since) VALUES (?, ?, ?, ?)",
                [(group_id, name, slots[name], since) for name in fields if name not in current],
            )
            await db.execute(
                "UPDATE log_groups SET index_policy = ?, index_updated = ?, index_slots = ?"
                " WHERE id = ?",
                (text, now, orjson.dumps(slots).decode(), group_id),
            )
        return {"indexPolicy": self._index_policy(group, text, now)}

    def _index_policy(self, group: str, document: str, updated: int) -> dict[str, Any]:
        return {
            "logGroupIdentifier": self.arn(group),
            "lastUpdateTime": updated,
            "policyDocument": document,
            "source": "LOG_GROUP",
        }

    async def describe_index_policies(self, groups: Sequence[str]) -> dict[str, Any]:
        """DescribeIndexPolicies: the policies of these groups (a group
        without one is left out; an unknown group is ResourceNotFoundException)."""
        policies = []
        for group in groups:
            await self._group(group)
            row = await self.one(
                "SELECT index_policy, index_updated FROM log_groups WHERE name = ?", (group,)
            )
            if row is not None and row[0] is not None:
                policies.append(self._index_policy(group, row[0], row[1]))
        return {"indexPolicies": policies}

    async def delete_index_policy(self, group: str) -> None:
        """DeleteIndexPolicy: ingest extracts nothing more; queries read JSON again."""
        async with self.transaction() as db:
            group_id, _ = await self._group(group, lock=True)
            gone = await db.one(
                "UPDATE log_groups SET index_policy = NULL, index_updated = NULL,"
                " index_slots = NULL WHERE id = ? AND index_policy IS NOT NULL RETURNING id",
                (group_id,),
            )
            if gone is None:
                raise LogsError(
                    "ResourceNotFoundException",
                    f"The specified log group has no field index policy: {group}",
                )
            await db.execute("DELETE FROM log_index_fields WHERE grp = ?", (group_id,))

    async def _indexed(self, group_id: int) -> dict[str, Indexed]:
        """What a query may read from columns: field -> (column, since)."""
        rows = await self.rows(
            "SELECT field, slot, since, kinds FROM log_index_fields WHERE grp = ?", (group_id,)
        )
        return {name: Indexed(SLOTS[slot], since, kinds) for name, slot, since, kinds in rows}

    async def delete_log_group(self, name: str) -> None:
        """DeleteLogGroup: the group, its streams, events and filters."""
        async with self.transaction() as db:
            group, _ = await self._group(name, lock=True)
            for table in (
                "log_events",
                "log_streams",
                "log_metric_filters",
                "log_subscription_filters",
                "log_index_fields",
            ):
                await db.execute(f"DELETE FROM {table} WHERE grp = ?", (group,))
            await db.execute("DELETE FROM log_groups WHERE id = ?", (group,))

    async def describe_log_groups(self, prefix: str = "") -> list[dict[str, Any]]:
        """DescribeLogGroups: every group whose name starts with ``prefix``, by name."""
        rows = await self.rows(
            "SELECT g.id, g.name, g.created, g.retention_days,"
            " (SELECT count(*) FROM log_metric_filters f WHERE f.grp = g.id),"
            # BIGINT: PostgreSQL's sum of integers is NUMERIC (a Decimal to Python).
            " (SELECT CAST(coalesce(sum(stored_bytes), 0) AS BIGINT) FROM log_streams s"
            " WHERE s.grp = g.id)"
            " FROM log_groups g WHERE substr(g.name, 1, ?) = ? ORDER BY g.name",
            (len(prefix), prefix),
        )
        groups = []
        for _, name, created, days, filters, stored in rows:
            group = {
                "logGroupName": name,
                "creationTime": created,
                "metricFilterCount": filters,
                "storedBytes": stored,
                "arn": self.arn(name) + ":*",
            }
            if days is not None:
                group["retentionInDays"] = days
            groups.append(group)
        return groups

    async def create_log_stream(self, group: str, name: str, *, exist_ok: bool = False) -> None:
        """CreateLogStream."""
        check_stream_name(name)
        group_id, _ = await self._group(group)
        async with self.transaction() as db:
            await self._create_stream(db, group_id, group, name, exist_ok=exist_ok)

    async def _create_stream(
        self, db: Queries, group_id: int, group: str, name: str, *, exist_ok: bool
    ) -> int:
        # Made by one statement: another runner making it at the same moment
        # (PostgreSQL) is found by the name's uniqueness, not an error.
        row = await db.one(
            "INSERT INTO log_streams (grp, name, created) VALUES (?, ?, ?)"
            " ON CONFLICT (grp, name) DO NOTHING RETURNING id",
            (group_id, name, self._now_ms()),
        )
        if row is not None:
            return int(row[0])
        if not exist_ok:
            raise LogsError(
                "ResourceAlreadyExistsException",
                f"The specified log stream already exists: {group}/{name}",
            )
        row = await db.one(
            "SELECT id FROM log_streams WHERE grp = ? AND name = ?", (group_id, name)
        )
        assert row is not None
        return int(row[0])

    async def delete_log_stream(self, group: str, name: str) -> None:
        """DeleteLogStream: the stream and its events."""
        group_id, _ = await self._group(group)
        async with self.transaction() as db:
            row = await db.one(
                "DELETE FROM log_streams WHERE grp = ? AND name = ? RETURNING id", (group_id, name)
            )
            if row is None:
                raise LogsError(
                    "ResourceNotFoundException",
                    f"The specified log stream does not exist: {group}/{name}",
                )
            await db.execute("DELETE FROM log_events WHERE stream = ?", (row[0],))

    async def describe_log_streams(self, group: str, prefix: str = "") -> list[dict[str, Any]]:
        """DescribeLogStreams: the group's streams whose name starts with ``prefix``, by name."""
        group_id, _ = await self._group(group)
        rows = await self.rows(
            "SELECT name, created, first_event, last_event, last_ingestion, stored_bytes"
            " FROM log_streams WHERE grp = ? AND substr(name, 1, ?) = ? ORDER BY name",
            (group_id, len(prefix), prefix),
        )
        streams = []
        for name, created, first, last, ingested, stored in rows:
            stream: dict[str, Any] = {
                "logStreamName": name,
                "creationTime": created,
                "storedBytes": stored,
                "arn": f"{self.arn(group)}:log-stream:{name}",
            }
            if first is not None:
                stream.update(
                    firstEventTimestamp=first, lastEventTimestamp=last, lastIngestionTime=ingested
                )
            streams.append(stream)
        return streams

    # -- writing ------------------------------------------------------------

    async def put_log_events(
        self,
        group: str,
        stream: str,
        events: Sequence[Mapping[str, Any]],
        *,
        create_stream: bool = False,
    ) -> dict[str, Any]:
        """PutLogEvents. Returns ``acceptedCount``, ``rejectedCounts`` (``tooNew``,
        ``tooOld``, ``expired``, ``invalid``), CloudWatch's
        ``rejectedLogEventsInfo`` when events were rejected for their time, and
        ``errors`` (index and message) for malformed entries.
        ``create_stream`` makes the stream if it does not exist (as a target does)."""
        check_stream_name(stream)
        valid, errors = _check_entries(events)
        now = self._now_ms()
        filters: list[_MetricFilter] = []
        # The group is looked up inside the write: one deleted meanwhile by
        # another process is not written to. Locked: the module's notes on event ids.
        async with self.transaction() as db:
            found = await db.one(
                "SELECT id, retention_days, index_slots FROM log_groups WHERE name = ?"
                + self.dialect.for_update,
                (group,),
            )
            if found is None:
                await self._group(group)  # raises ResourceNotFoundException
            assert found is not None
            group_id, retention, slots = found
            plan = _plan(valid, now, retention)
            rows = plan.accepted
            if rows:
                stream_id = await self._stream_id(db, group_id, group, stream, create_stream)
                extractor = _extractor(slots) if slots is not None and self._pushes_down else None
                await self._append(db, group_id, stream_id, rows, plan.bytes, now, extractor)
                filters = await self._metric_filters(group_id)
            elif not create_stream:
                await self._require_stream(group_id, group, stream)
        if filters:
            await self._publish(filters, rows)
        answer: dict[str, Any] = {
            "acceptedCount": len(rows),
            "rejectedCounts": {
                "tooNew": plan.too_new,
                "tooOld": plan.too_old,
                "expired": plan.expired,
                "invalid": len(errors),
            },
        }
        if plan.info:
            answer["rejectedLogEventsInfo"] = plan.info
        if errors:
            answer["errors"] = errors
        return answer

    async def _stream_id(
        self, db: Queries, group_id: int, group: str, stream: str, create: bool
    ) -> int:
        if create:
            return await self._create_stream(db, group_id, group, stream, exist_ok=True)
        return await self._require_stream(group_id, group, stream)

    async def _require_stream(self, group_id: int, group: str, stream: str) -> int:
        row = await self.one(
            "SELECT id FROM log_streams WHERE grp = ? AND name = ?", (group_id, stream)
        )
        if row is None:
            raise LogsError(
                "ResourceNotFoundException",
                f"The specified log stream does not exist: {group}/{stream}",
            )
        return int(row[0])

    async def _append(
        self,
        db: Queries,
        group_id: int,
        stream_id: int,
        rows: list[tuple[int, str]],
        size: int,
        now: int,
        extractor: Extractor | None,
    ) -> None:
        if self._escapes:
            rows = [(ts, _stored(message)) for ts, message in rows]
        if extractor is None:
            await db.executemany(
                "INSERT INTO log_events (grp, stream, ts, ingested, message)"
                " VALUES (?, ?, ?, ?, ?)",
                [(group_id, stream_id, ts, now, message) for ts, message in rows],
            )
        else:
            # Parsing is CPU work: a worker thread, so the event loop stays free.
            values, kinds = await asyncio.to_thread(extractor.rows, [m for _, m in rows])
            columns = "".join(f", {c}" for c in extractor.columns)
            marks = ", ?" * len(extractor.columns)
            await db.executemany(
                f"INSERT INTO log_events (grp, stream, ts, ingested, message{columns})"
                f" VALUES (?, ?, ?, ?, ?{marks})",
                [
                    (group_id, stream_id, ts, now, message, *found)
                    for (ts, message), found in zip(rows, values, strict=True)
                ],
            )
            # One statement per batch: each field's kinds grow with what it wrote.
            cases = " ".join(
                f"WHEN {c!r} THEN {k}" for c, k in zip(extractor.columns, kinds, strict=True)
            )
            await db.execute(
                f"UPDATE log_index_fields SET kinds = kinds | (CASE 'f' || slot {cases} ELSE 0 END)"
                " WHERE grp = ?",
                (group_id,),
            )
        # CASE, not SQLite's two-argument min/max (PostgreSQL's LEAST/GREATEST):
        # both engines read it. A NULL bound compares false: the new one is taken.
        first, last = rows[0][0], rows[-1][0]
        await db.execute(
            "UPDATE log_streams SET"
            " first_event = CASE WHEN first_event <= ? THEN first_event ELSE ? END,"
            " last_event = CASE WHEN last_event >= ? THEN last_event ELSE ? END,"
            " last_ingestion = ?, stored_bytes = stored_bytes + ? WHERE id = ?",
            (first, first, last, last, now, size, stream_id),
        )

    # -- metric filters -----------------------------------------------------

    async def put_metric_filter(
        self, group: str, name: str, pattern: str, transformation: MetricTransformation
    ) -> None:
        """PutMetricFilter (one transformation, as CloudWatch allows); replaces
        a filter of the same name."""
        check_filter_name(name)
        check_transformation(compiled(pattern), transformation)
        async with self.transaction() as db:
            group_id, _ = await self._group(group, lock=True)  # the count below holds
            row = await db.one(
                "SELECT count(*) FROM log_metric_filters WHERE grp = ? AND name != ?",
                (group_id, name),
            )
            if row is not None and row[0] >= MAX_METRIC_FILTERS:
                raise LogsError(
                    "LimitExceededException",
                    f"log group {group} has {MAX_METRIC_FILTERS} metric filters already",
                )
            await db.execute(
                self.dialect.upsert(
                    "log_metric_filters",
                    ("grp", "name", "pattern", "transformation", "created"),
                    ("grp", "name"),
                ),
                (group_id, name, pattern, orjson.dumps(transformation.to_json()), self._now_ms()),
            )

    async def delete_metric_filter(self, group: str, name: str) -> None:
        await self._delete_filter("log_metric_filters", "metric filter", group, name)

    async def _delete_filter(self, table: str, kind: str, group: str, name: str) -> None:
        async with self.transaction() as db:
            group_id, _ = await self._group(group, lock=True)
            deleted = await db.one(
                f"DELETE FROM {table} WHERE grp = ? AND name = ? RETURNING name", (group_id, name)
            )
            if deleted is None:
                raise LogsError(
                    "ResourceNotFoundException",
                    f"The specified {kind} does not exist: {group}/{name}",
                )

    async def describe_metric_filters(self, group: str) -> list[dict[str, Any]]:
        group_id, _ = await self._group(group)
        rows = await self.rows(
            "SELECT name, pattern, transformation, created FROM log_metric_filters"
            " WHERE grp = ? ORDER BY name",
            (group_id,),
        )
        return [
            {
                "filterName": name,
                "logGroupName": group,
                "filterPattern": pattern,
                "metricTransformations": [orjson.loads(shape)],
                "creationTime": created,
            }
            for name, pattern, shape, created in rows
        ]

    async def _metric_filters(self, group_id: int) -> list[_MetricFilter]:
        if self.metrics is None:
            return []
        rows = await self.rows(
            "SELECT name, pattern, transformation FROM log_metric_filters WHERE grp = ?",
            (group_id,),
        )
        filters = []
        for name, pattern, shape in rows:
            t = MetricTransformation.from_json(orjson.loads(shape))
            filters.append(_MetricFilter(name, compiled(pattern), t, _literal(t.metric_value)))
        return filters

    async def _publish(self, filters: list[_MetricFilter], rows: list[tuple[int, str]]) -> None:
        """The filters' datapoints for these events, to the metric sink. The
        matching runs in a worker thread (100 filters over 10,000 events take
        seconds); the metric store gets one call per minute and dimensions."""
        assert self.metrics is not None
        for metric, minute, dims, values in await asyncio.to_thread(_datapoints, filters, rows):
            t = metric.transformation
            try:
                self.metrics(
                    t.metric_namespace,
                    t.metric_name,
                    dict(dims),
                    values=values,
                    timestamp=minute * 60.0,
                    unit=t.unit,
                )
            except MetricError as exc:
                # The events are committed: a datapoint the metric store
                # refuses (a minute over two weeks old) is lost, not the events.
                log.warning("metric filter %s: %s", metric.name, exc)

    # -- reading ------------------------------------------------------------

    async def filter_log_events(
        self,
        group: str,
        pattern: str = "",
        *,
        start_time: int | None = None,
        end_time: int | None = None,
        stream_names: Sequence[str] | None = None,
        stream_prefix: str | None = None,
        limit: int = MAX_FILTER_EVENTS,
        next_token: str | None = None,
        after_id: int | None = None,
    ) -> dict[str, Any]:
        """FilterLogEvents: the group's events that match ``pattern`` with a
        timestamp in [start_time, end_time] (ms, both inclusive, as CloudWatch's),
        in time order, at most ``limit``; ``nextToken`` when there may be more.
        ``after_id`` keeps only events ingested after that event id (what
        ``tail --follow`` has already shown)."""
        if stream_names and stream_prefix:
            raise LogsError(
                "InvalidParameterException",
                "give logStreamNames or logStreamNamePrefix, not both",
            )
        if not 1 <= limit <= MAX_FILTER_EVENTS:
            raise LogsError(
                "InvalidParameterException", f"limit must be 1 to {MAX_FILTER_EVENTS}, not {limit}"
            )
        matcher = compiled(pattern)
        group_id, retention = await self._group(group)
        where, params = self._time_range(group_id, retention, start_time, end_time)
        if after_id is not None:
            where += " AND e.id > ?"
            params.append(after_id)
        if stream_names:
            where += f" AND s.name IN ({', '.join('?' * len(stream_names))})"
            params += list(stream_names)
        elif stream_prefix:
            where += " AND substr(s.name, 1, ?) = ?"
            params += [len(stream_prefix), stream_prefix]
        query = (
            "SELECT e.id, e.ts, e.ingested, e.message, s.name FROM log_events e"
            f" JOIN log_streams s ON s.id = e.stream WHERE {where}"
            " AND (e.ts, e.id) > (?, ?) ORDER BY e.ts, e.id LIMIT 1000"
        )
        found: list[dict[str, Any]] = []
        last = _untoken(next_token) if next_token is not None else (-1, 0)
        # Read in pages: a selective pattern may look at many rows for few matches.
        while len(found) < limit:
            page = self._read_messages(await self.rows(query, [*params, *last]), 3)
            if not page:
                break
            hits = await asyncio.to_thread(_matching, matcher, page, 3)
            last = (page[-1][1], page[-1][0])
            for event_id, ts, ingested, message, stream in hits:
                found.append(
                    {
                        "logStreamName": stream,
                        "timestamp": ts,
                        "message": message,
                        "ingestionTime": ingested,
                        "eventId": str(event_id),
                    }
                )
                if len(found) == limit:
                    last = (ts, event_id)  # the next page starts after this one
                    break
            if len(page) < 1000:
                break
        answer: dict[str, Any] = {"events": found}
        if len(found) == limit:
            answer["nextToken"] = _token(*last)
        return answer

    async def get_log_events(
        self,
        group: str,
        stream: str,
        *,
        start_time: int | None = None,
        end_time: int | None = None,
        limit: int = MAX_FILTER_EVENTS,
        start_from_head: bool = False,
        next_token: str | None = None,
    ) -> dict[str, Any]:
        """GetLogEvents: one stream's events with a timestamp in [start_time,
        end_time) (ms; CloudWatch's end is exclusive here), at most ``limit``,
        always in time order: the first ones with ``start_from_head``, else the
        last ones. ``nextForwardToken`` reads on after the last event given
        (the same token comes back once there is nothing newer),
        ``nextBackwardToken`` back before the first; a token passed as
        ``next_token`` sets the direction."""
        if not 1 <= limit <= MAX_FILTER_EVENTS:
            raise LogsError(
                "InvalidParameterException", f"limit must be 1 to {MAX_FILTER_EVENTS}, not {limit}"
            )
        forward = start_from_head
        position: tuple[int, int] | None = None
        if next_token is not None:
            forward, position = _read_token(next_token)
        group_id, retention = await self._group(group)
        stream_id = await self._require_stream(group_id, group, stream)
        where, params = self._time_range(group_id, retention, start_time, None)
        where += " AND e.stream = ?"
        params.append(stream_id)
        if end_time is not None:
            where += " AND e.ts < ?"
            params.append(end_time)
        if position is not None:
            where += f" AND (e.ts, e.id) {'>' if forward else '<'} (?, ?)"
            params += list(position)
        order = "ASC" if forward else "DESC"
        rows = await self.rows(
            "SELECT e.id, e.ts, e.message, e.ingested FROM log_events e"
            f" WHERE {where} ORDER BY e.ts {order}, e.id {order} LIMIT ?",
            [*params, limit],
        )
        rows = self._read_messages(rows, 2)
        if not forward:
            rows.reverse()
        if rows:
            first, last = (rows[0][1], rows[0][0]), (rows[-1][1], rows[-1][0])
        else:
            first = last = position if position is not None else (-1, 0)
        return {
            "events": [
                {"timestamp": ts, "message": message, "ingestionTime": ingested}
                for _, ts, message, ingested in rows
            ],
            "nextForwardToken": f"f/{last[0]}/{last[1]}",
            "nextBackwardToken": f"b/{first[0]}/{first[1]}",
        }

    def _time_range(
        self, group_id: int, retention: int | None, start: int | None, end: int | None
    ) -> tuple[str, list[Any]]:
        where, params = "e.grp = ?", [group_id]
        if retention is not None:
            start = max(start or 0, self._now_ms() - retention * DAY_MS)
        if start is not None:
            where += " AND e.ts >= ?"
            params.append(start)
        if end is not None:
            where += " AND e.ts <= ?"
            params.append(end)
        return where, params

    async def last_event_id(self) -> int:
        """The id of the newest event in the database (0 when there is none)."""
        row = await self.one("SELECT coalesce(max(id), 0) FROM log_events")
        return int(row[0]) if row else 0

    async def query(
        self,
        group: str,
        text: str,
        *,
        start_time: int | None = None,
        end_time: int | None = None,
        pushdown: bool = True,
    ) -> QueryResult:
        """A Logs Insights query over the group's events with a timestamp in
        [start_time, end_time] (ms). Leading filters and the first stats run
        in SQL when SQL answers them exactly (``pushdown``; False: the
        reference evaluator does all the work, what tests compare against).
        Only the columns the rest needs are read, and the rest runs in a
        worker thread: the event loop stays free."""
        parsed = parse_query(text)
        group_id, retention = await self._group(group)
        where, params = self._time_range(group_id, retention, start_time, end_time)
        indexed = await self._indexed(group_id) if pushdown and self._pushes_down else None
        planned = plan(parsed, indexed=indexed) if indexed is not None else None
        if planned is not None:
            try:
                result = await self._query_planned(planned, where, params)
            finally:
                release(planned.slots)
            # The plan trusts the columns' kinds as read before the query; a
            # write since (kinds only grow, a policy change moves ``since``)
            # may hold what it did not test for: then the reference answers.
            if result is not None and await self._indexed(group_id) == indexed:
                return result
        columns = {
            "@timestamp": "e.ts",
            "@logStream": "s.name",
            "@message": "e.message",
            "@ingestionTime": "e.ingested",
        }
        selected = ", ".join(columns[c] for c in parsed.columns) or "e.ts"
        join = " JOIN log_streams s ON s.id = e.stream" if "@logStream" in parsed.columns else ""
        if parsed.head is not None:
            return await self._query_head(parsed, parsed.head, selected, join, where, params)
        # The rows are plain tuples, handed over as they are: copying a million would cost.
        rows = await self.rows(
            f"SELECT {selected} FROM log_events e{join} WHERE {where} ORDER BY e.ts, e.id", params
        )
        if "@message" in parsed.columns:
            rows = self._read_messages(rows, parsed.columns.index("@message"))
        return await asyncio.to_thread(parsed.run, rows)

    async def _query_planned(
        self, planned: Plan, where: str, params: list[Any]
    ) -> QueryResult | None:
        """A query with its filters (and first stats) in SQL; None when SQL
        could not answer exactly (the reference evaluator then runs it)."""
        try:
            if planned.rest is None:
                return await self._stats_in_sql(planned, where, params)
            return await self._filtered(planned, planned.rest, where, params)
        except self.backend.errors as exc:
            if "integer overflow" in str(exc):  # a sum past 64 bits: Python's ints do not overflow
                return None
            raise

    async def _filtered(
        self, planned: Plan, rest: Query, where: str, params: list[Any]
    ) -> QueryResult | None:
        """The pushed filters in SQL, the rest of the query in Python over
        the events that pass (in ascending time, as ``run`` wants them)."""
        join = planned.join or "@logStream" in rest.columns
        source = _source(planned, where, join)
        selected = ", ".join(_COLUMNS[c] for c in rest.columns) or "e.ts"
        scanned = f"(SELECT count(*) FROM log_events e WHERE {where})"
        passing = planned.where
        head = rest.head
        if head is not None:
            order = (
                f"e.ts {_direction(head.newest_first)}, e.id {_direction(head.ties_newest_first)}"
            )
            kept = f"SELECT e.id FROM {source} {passing} ORDER BY {order} LIMIT ?"
            matched = f"(SELECT count(*) FROM {source} {passing})"
            rows = await self.rows(
                f"SELECT {scanned}, {matched}, {selected}"
                f" FROM log_events e{_STREAM_JOIN if join else ''}"
                f" WHERE e.id IN ({kept}) ORDER BY e.ts, e.id",
                [*params, *params, *params, head.limit],
            )
            if planned.slots.failed:
                return None
            if not rows:
                counts = await self.one(f"SELECT {scanned}, {matched}", [*params, *params])
                assert counts is not None
                return await asyncio.to_thread(rest.run, [], total=counts[1], scanned=counts[0])
            events = [row[2:] for row in rows]
            return await asyncio.to_thread(rest.run, events, total=rows[0][1], scanned=rows[0][0])
        rows = await self.rows(
            f"SELECT {scanned}, {selected} FROM {source} {passing} ORDER BY e.ts, e.id",
            [*params, *params],
        )
        if planned.slots.failed:
            return None
        if not rows:
            total = await self.scalar(f"SELECT {scanned}", params)
            return await asyncio.to_thread(rest.run, [], scanned=total)
        return await asyncio.to_thread(rest.run, [r[1:] for r in rows], scanned=rows[0][0])

    async def _stats_in_sql(
        self, planned: Plan, where: str, params: list[Any]
    ) -> QueryResult | None:
        """Filters and the first stats in one GROUP BY; the commands after it in Python."""
        source = _source(planned, where, planned.join)
        values = "".join(f", {sql} AS c{i}" for i, sql in enumerate(planned.inner))
        # LIMIT -1 keeps the inner SELECT from being flattened into the outer
        # one, which would compute each value once per use instead of once;
        # values that are plain columns (indexed fields) cost nothing to reread.
        computed = any(not _PLAIN_COLUMN.fullmatch(sql) for sql in planned.inner)
        limit = " LIMIT -1" if computed else ""
        inner = f"SELECT e.ts AS ts, e.id AS id{values} FROM {source} {planned.where}{limit}"
        keys = ", ".join(f"c{i}" for i in range(planned.keys))
        group = f" GROUP BY {keys}" if keys else ""
        scanned = f"(SELECT count(*) FROM log_events e WHERE {where})"
        rows = await self.rows(
            f"SELECT {', '.join(planned.select)}, count(*), min(ts), {scanned}"
            f" FROM ({inner}){group}",
            [*params, *params],
        )
        if planned.slots.failed or any(row[i] for row in rows for i in planned.checks):
            return None
        if rows and planned.keys:
            rows = await self._first_appearance(rows, planned, inner, keys, params)
        scanned_count = rows[0][-1] if rows else await self.scalar(f"SELECT {scanned}", params)
        matched = sum(row[-3] for row in rows)
        groups = [_group_values(row, planned) for row in rows]
        return planned.query.finish_stats(groups, matched, scanned_count)

    async def _first_appearance(
        self, rows: list[Any], planned: Plan, inner: str, keys: str, params: list[Any]
    ) -> list[Any]:
        """Groups in the order their first events come (time, then ingestion):
        by the first event's time, and where groups share it, by the lowest
        event id at that time (one more, narrow, query)."""
        first = [row[-2] for row in rows]
        tied = (
            sorted({t for t in first if first.count(t) > 1}) if len(set(first)) < len(first) else []
        )
        if not tied:
            return sorted(rows, key=lambda row: row[-2])
        marks = self.dialect.marks(len(tied))
        found = await self.rows(
            f"SELECT {keys}, ts, min(id) FROM ({inner}) WHERE ts IN ({marks}) GROUP BY {keys}, ts",
            [*params, *tied],
        )
        n = planned.keys
        lowest = {(tuple(r[:n]), r[n]): r[n + 1] for r in found}
        return sorted(rows, key=lambda row: (row[-2], lowest.get((tuple(row[:n]), row[-2]), 0)))

    async def _query_head(
        self, parsed: Query, head: Head, selected: str, join: str, where: str, params: list[Any]
    ) -> QueryResult:
        """A query that keeps the first events in time order (``Head``): only
        those are read, found by walking log_events_by_time (grp, ts; the row
        id, in every index entry, orders equal times), and handed to ``run``
        in ascending order with the count of the whole range, taken in the
        same statement so both see the same events."""
        order = f"e.ts {_direction(head.newest_first)}, e.id {_direction(head.ties_newest_first)}"
        kept = f"SELECT e.id FROM log_events e WHERE {where} ORDER BY {order} LIMIT ?"
        total = f"SELECT count(*) FROM log_events e WHERE {where}"
        rows = await self.rows(
            f"SELECT ({total}), {selected} FROM log_events e{join}"
            f" WHERE e.id IN ({kept}) ORDER BY e.ts, e.id",
            [*params, *params, head.limit],
        )
        if not rows:
            return await asyncio.to_thread(parsed.run, [], total=0)
        if "@message" in parsed.columns:
            rows = self._read_messages(rows, 1 + parsed.columns.index("@message"))
        events = [row[1:] for row in rows]
        return await asyncio.to_thread(parsed.run, events, total=rows[0][0])

    # -- subscription filters -------------------------------------------------

    async def put_subscription_filter(
        self, group: str, name: str, pattern: str, destination: str
    ) -> None:
        """PutSubscriptionFilter: at most two per group. A new filter forwards
        the events that arrive after it is made; replacing one keeps its cursor."""
        check_filter_name(name)
        compiled(pattern)
        async with self.transaction() as db:
            # Locked: the count below holds, and the cursor (the newest id)
            # is below every event of the group to come (the module's notes on event ids).
            group_id, _ = await self._group(group, lock=True)
            found = await db.rows(
                "SELECT name FROM log_subscription_filters WHERE grp = ?", (group_id,)
            )
            names = {row[0] for row in found}
            if name not in names and len(names) >= MAX_SUBSCRIPTION_FILTERS:
                raise LogsError(
                    "LimitExceededException",
                    f"Resource limit exceeded: log group {group} has"
                    f" {MAX_SUBSCRIPTION_FILTERS} subscription filters already"
                    f" ({', '.join(sorted(names))})",
                )
            newest = await db.scalar("SELECT coalesce(max(id), 0) FROM log_events")
            await db.execute(
                "INSERT INTO log_subscription_filters"
                " (grp, name, pattern, destination, created, cursor) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (grp, name) DO UPDATE SET pattern = excluded.pattern,"
                " destination = excluded.destination",
                (group_id, name, pattern, destination, self._now_ms(), newest or 0),
            )

    async def delete_subscription_filter(self, group: str, name: str) -> None:
        await self._delete_filter("log_subscription_filters", "subscription filter", group, name)

    async def describe_subscription_filters(self, group: str) -> list[dict[str, Any]]:
        group_id, _ = await self._group(group)
        rows = await self.rows(
            "SELECT name, pattern, destination, created FROM log_subscription_filters"
            " WHERE grp = ? ORDER BY name",
            (group_id,),
        )
        return [
            {
                "filterName": name,
                "logGroupName": group,
                "filterPattern": pattern,
                "destinationArn": destination,
                "creationTime": created,
            }
            for name, pattern, destination, created in rows
        ]

    async def read_subscription(
        self, group: str, name: str, limit: int = 10_000
    ) -> SubscriptionBatch:
        """What subscription filter ``name`` forwards next: the events after its
        cursor that match its pattern (looking at up to ``limit`` events), in
        CloudWatch's subscription payload, one per log stream."""
        group_id, _ = await self._group(group)
        row = await self.one(
            "SELECT pattern, cursor FROM log_subscription_filters WHERE grp = ? AND name = ?",
            (group_id, name),
        )
        if row is None:
            raise LogsError(
                "ResourceNotFoundException",
                f"The specified subscription filter does not exist: {group}/{name}",
            )
        matcher, position = compiled(row[0]), row[1]
        rows = await self.rows(
            "SELECT e.id, e.ts, e.message, s.name FROM log_events e"
            " JOIN log_streams s ON s.id = e.stream"
            " WHERE e.grp = ? AND e.id > ? ORDER BY e.id LIMIT ?",
            (group_id, position, limit),
        )
        rows = self._read_messages(rows, 2)
        if rows:
            position = rows[-1][0]
        per_stream: dict[str, list[dict[str, Any]]] = {}
        for event_id, ts, message, stream in await asyncio.to_thread(_matching, matcher, rows, 2):
            per_stream.setdefault(stream, []).append(
                {"id": str(event_id), "timestamp": ts, "message": message}
            )
        payloads = [
            subscription_payload(self.account, group, stream, name, events)
            for stream, events in per_stream.items()
        ]
        return SubscriptionBatch(payloads, position, len(rows))

    async def advance_subscription(self, group: str, name: str, cursor: int) -> None:
        """Store subscription filter ``name``'s cursor: what it has delivered."""
        group_id, _ = await self._group(group)
        async with self.transaction() as db:
            await db.execute(
                "UPDATE log_subscription_filters"
                " SET cursor = CASE WHEN cursor > ? THEN cursor ELSE ? END"
                " WHERE grp = ? AND name = ?",
                (cursor, cursor, group_id, name),
            )

    # -- retention ------------------------------------------------------------

    async def expire(self) -> int:
        """Delete the events older than their group's retention; how many went."""
        now = self._now_ms()
        groups = await self.rows(
            "SELECT id, retention_days FROM log_groups WHERE retention_days IS NOT NULL"
        )
        deleted = 0
        for group_id, days in groups:
            async with self.transaction() as db:
                deleted += await db.execute(
                    "DELETE FROM log_events WHERE grp = ? AND ts < ?",
                    (group_id, now - days * DAY_MS),
                )
        return deleted


#: How a message with a NUL is stored where text cannot hold one (PostgreSQL).
_ESCAPE = "\ue000"
_ESCAPED = re.compile("\ue000([\ue001\ue002])")


def _stored(message: str) -> str:
    """``message`` as PostgreSQL's text holds it: NUL as U+E000 U+E002,
    U+E000 itself as U+E000 U+E001 (so every message reads back as it was)."""
    if "\x00" not in message and _ESCAPE not in message:
        return message
    return message.replace(_ESCAPE, "\ue000\ue001").replace("\x00", "\ue000\ue002")


def _shown(message: str) -> str:
    """A message ``_stored`` wrote, as it was put."""
    return _ESCAPED.sub(lambda m: _ESCAPE if m.group(1) == "\ue001" else "\x00", message)


def _shown_rows(rows: list[Any], index: int) -> list[Any]:
    """``rows`` with the message in column ``index`` as it was put (copied
    only when one of them was escaped)."""
    if not any(_ESCAPE in row[index] for row in rows):
        return rows
    return [
        (*row[:index], _shown(row[index]), *row[index + 1 :]) if _ESCAPE in row[index] else row
        for row in rows
    ]


@functools.lru_cache(maxsize=64)
def _extractor(slots: str) -> Extractor:
    """The extractor of a group's ``index_slots`` (JSON text), built once."""
    return Extractor(orjson.loads(slots))


def subscription_payload(
    owner: str, group: str, stream: str, name: str, events: list[dict[str, Any]]
) -> dict[str, Any]:
    """CloudWatch Logs' subscription payload (decoded: CloudWatch gzips and
    base64-encodes it for Lambda; a target here gets the JSON itself)."""
    return {
        "messageType": "DATA_MESSAGE",
        "owner": owner,
        "logGroup": group,
        "logStream": stream,
        "subscriptionFilters": [name],
        "logEvents": events,
    }


# -- PutLogEvents' rules ----------------------------------------------------------


@dataclass(slots=True)
class _Plan:
    accepted: list[tuple[int, str]]
    bytes: int = 0  # the accepted messages' UTF-8 size
    too_new: int = 0
    too_old: int = 0
    expired: int = 0
    info: dict[str, int] = field(default_factory=dict)


_COLUMNS = {
    "@timestamp": "e.ts",
    "@logStream": "s.name",
    "@message": "e.message",
    "@ingestionTime": "e.ingested",
}
_STREAM_JOIN = " JOIN log_streams s ON s.id = e.stream"
_PLAIN_COLUMN = re.compile(r"e\.\w+")


def _source(planned: Plan, where: str, join: bool) -> str:
    """FROM the events of the range as ``e`` (with ``e.kind`` when the pushed
    conditions read JSON fields: checked once per row, not once per field),
    up to a WHERE its caller completes with the pushed conditions."""
    join_sql = _STREAM_JOIN if join else ""
    if planned.kind is None:
        return f"log_events e{join_sql} WHERE {where} AND"
    # LIMIT -1: not flattened into the outer query (which would repeat ``kind``).
    ranged = f"(SELECT e.*, {planned.kind} AS kind FROM log_events e WHERE {where} LIMIT -1) e"
    return f"{ranged}{join_sql} WHERE"


def _group_values(row: Any, planned: Plan) -> list[Any]:
    """A stats group's by values and aggregates, from its SQL row."""
    values = list(row[: planned.keys])
    for agg in planned.aggregates:
        found = [row[i] for i in agg.columns]
        if agg.kind == "avg":
            total, count = found
            values.append(total / count if count else None)
        else:
            values.append(found[0])
    return values


def _direction(descending: bool) -> str:
    return "DESC" if descending else "ASC"


def _check_entries(
    events: Sequence[Mapping[str, Any]],
) -> tuple[list[tuple[int, int, str, int]], list[dict[str, Any]]]:
    """The well-formed entries as (index, timestamp, message, its UTF-8
    bytes), and an error for each malformed one; the request rules (count,
    size, order) too. Each message is encoded once, here."""
    if not 1 <= len(events) <= MAX_BATCH_EVENTS:
        raise LogsError(
            "InvalidParameterException",
            f"a PutLogEvents request holds 1 to {MAX_BATCH_EVENTS} log events, not {len(events)}",
        )
    valid: list[tuple[int, int, str, int]] = []
    errors: list[dict[str, Any]] = []
    size = 0
    for index, event in enumerate(events):
        problem = _entry_problem(event)
        if problem is None:
            nbytes = len(event["message"].encode())
            if nbytes > MAX_EVENT_BYTES:
                problem = f"message is over {MAX_EVENT_BYTES} bytes"
        if problem is not None:
            errors.append({"index": index, "message": f"logEvents[{index}]: {problem}"})
            continue
        ts, message = event["timestamp"], event["message"]
        size += nbytes + EVENT_OVERHEAD
        if valid and ts < valid[-1][1]:
            raise LogsError(
                "InvalidParameterException",
                "Log events in a single PutLogEvents request must be in chronological order"
                f" (logEvents[{index}] is earlier than logEvents[{valid[-1][0]}])",
            )
        valid.append((index, ts, message, nbytes))
    if size > MAX_BATCH_BYTES:
        raise LogsError(
            "InvalidParameterException",
            f"Upload too large: {size} bytes exceeds limit of {MAX_BATCH_BYTES}"
            f" (the messages in UTF-8 plus {EVENT_OVERHEAD} bytes per event)",
        )
    return valid, errors


def _entry_problem(event: Any) -> str | None:
    if not isinstance(event, Mapping):
        return "a log event is an object with timestamp and message"
    ts, message = event.get("timestamp"), event.get("message")
    if isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
        return f"timestamp must be milliseconds since the epoch (an integer >= 0), not {ts!r}"
    if not isinstance(message, str) or not message:
        return "message must be a non-empty string"
    return None


def _plan(valid: list[tuple[int, int, str, int]], now: int, retention: int | None) -> _Plan:
    """Reject the events too old (over 14 days, or past retention: a prefix,
    since the batch is in order) and too new (over 2 hours ahead: a suffix);
    CloudWatch's rejectedLogEventsInfo holds those boundaries as indexes."""
    oldest = now - PAST_LIMIT_MS
    expiry = now - retention * DAY_MS if retention is not None else None
    newest = now + FUTURE_LIMIT_MS
    plan = _Plan([])
    for index, ts, message, nbytes in valid:
        if ts < oldest:
            plan.too_old += 1
            plan.info["tooOldLogEventEndIndex"] = index + 1
        elif expiry is not None and ts < expiry:
            plan.expired += 1
            plan.info["expiredLogEventEndIndex"] = index + 1
        elif ts > newest:
            plan.too_new += 1
            plan.info.setdefault("tooNewLogEventStartIndex", index)
        else:
            plan.accepted.append((ts, message))
            plan.bytes += nbytes
    if plan.accepted and plan.accepted[-1][0] - plan.accepted[0][0] > MAX_SPAN_MS:
        raise LogsError(
            "InvalidParameterException",
            "The batch of log events in a single PutLogEvents request cannot span more than"
            " 24 hours",
        )
    return plan
