"""Metrics: the bus's own counters and the metric store that alarms read.

Counting happens on the hot path, so a counter is a dict entry keyed by
``(metric name, dimensions)`` where dimensions are a sorted tuple of
``(name, value)`` pairs (``Metrics``). ``MetricStore`` is CloudWatch's
PutMetricData / GetMetricStatistics on the state database: what is put is
aggregated per period in memory and merged into one row per metric and period
at each flush, where the bus's counters are harvested too (under
``NAMESPACE``, per minute, as EventBridge publishes its own).

On PostgreSQL several runners flush into the same rows: each flush is an
upsert that merges into the row in the database (``pipelines_merge``, a
PL/pgSQL twin of the Python function SQLite calls), so the rows of one
series and minute written by every runner add up, and an alarm evaluated on
any runner reads all of them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson

from pipelines.clock import Clock
from pipelines.errors import MetricError, StateError, did_you_mean
from pipelines.event import format_epoch
from pipelines.store import Dialect, Queries, Row, Store

log = logging.getLogger("pipelines.metrics")

NAMESPACE = "Pipelines/Events"

Dimensions = tuple[tuple[str, str], ...]

# EventBridge's metric names, as the bus records them.
EVENTS = "Events"
MATCHED_EVENTS = "MatchedEvents"
TRIGGERED_RULES = "TriggeredRules"
INVOCATIONS = "Invocations"
INVOCATION_ATTEMPTS = "InvocationAttempts"
SUCCESSFUL_INVOCATION_ATTEMPTS = "SuccessfulInvocationAttempts"
RETRY_INVOCATION_ATTEMPTS = "RetryInvocationAttempts"
FAILED_INVOCATIONS = "FailedInvocations"
DEAD_LETTER_INVOCATIONS = "DeadLetterInvocations"
INVOCATIONS_SENT_TO_DLQ = "InvocationsSentToDlq"
INVOCATIONS_FAILED_TO_BE_SENT_TO_DLQ = "InvocationsFailedToBeSentToDlq"
THROTTLED_RULES = "ThrottledRules"


def dimensions(**values: str) -> Dimensions:
    return tuple(sorted(values.items()))


@dataclass(frozen=True, slots=True)
class Datapoint:
    namespace: str
    name: str
    dimensions: Dimensions
    value: float


class Counter:
    """One counter. ``add`` counts; the first count after a harvest also puts
    the counter on its ``Metrics``' list of those that moved, so a harvest
    visits only those (10,000 scheduled rules have 20,000 counters, a
    twelfth of them moved in 5 s: walking them all took 3-4 ms a harvest).
    ``harvested`` is the value at the last harvest."""

    __slots__ = ("harvested", "moved", "series", "value")

    def __init__(
        self, series: SeriesKey = ("", "", ()), moved: list[Counter] | None = None
    ) -> None:
        self.value = 0.0
        self.harvested = 0.0
        self.series = series
        self.moved: list[Counter] = [] if moved is None else moved

    def add(self, amount: float = 1.0) -> None:
        if self.value == self.harvested:
            self.moved.append(self)
        self.value += amount


class Metrics:
    """Monotonic counters per (metric, dimensions)."""

    def __init__(self, namespace: str = NAMESPACE) -> None:
        self.namespace = namespace
        self._counters: dict[tuple[str, Dimensions], Counter] = {}
        self._moved: list[Counter] = []

    def counter(self, name: str, dims: Dimensions) -> Counter:
        """The counter for (name, dims), created at zero; keep it to count cheaply."""
        key = (name, dims)
        found = self._counters.get(key)
        if found is None:
            found = self._counters[key] = Counter((self.namespace, name, dims), self._moved)
        return found

    def add(self, name: str, dims: Dimensions, value: float = 1.0) -> None:
        self.counter(name, dims).add(value)

    def value(self, name: str, **dims: str) -> float:
        """The count for exactly these dimensions (0 when never counted)."""
        found = self._counters.get((name, dimensions(**dims)))
        return 0.0 if found is None else found.value

    def counts(self) -> Iterator[tuple[str, Dimensions, float]]:
        """Every counter as (name, dimensions, value), in no order: what a
        scrape reads (``pipelines.observability``), without copying or sorting."""
        for (name, dims), counter in self._counters.items():
            yield name, dims, counter.value

    def snapshot(self) -> list[Datapoint]:
        """Every counter that has counted, sorted by name and dimensions."""
        return [
            Datapoint(self.namespace, name, dims, counter.value)
            for (name, dims), counter in sorted(self._counters.items())
            if counter.value
        ]

    def harvest(self) -> list[tuple[Counter, float]]:
        """What each counter counted since the last harvest (those that moved):
        the counter (whose ``series`` names it) and its count since."""
        moved = self._moved[:]
        # Emptied in place: every counter holds this very list.
        self._moved.clear()
        deltas = []
        for counter in moved:
            value = counter.value
            if value != counter.harvested:  # else a counter listed twice (counted 0)
                deltas.append((counter, value - counter.harvested))
                counter.harvested = value
        return deltas


# -- the metric store ---------------------------------------------------------

#: CloudWatch's StandardUnit values.
UNITS = frozenset(
    [
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    ]
)
STATISTICS = ("SampleCount", "Average", "Sum", "Minimum", "Maximum")
MAX_DIMENSIONS = 30
MAX_VALUES = 150
#: CloudWatch rejects values outside [-2^360, 2^360].
VALUE_LIMIT = 2.0**360
#: How far back and ahead a timestamp may be (PutMetricData).
PAST_LIMIT = 14 * 86_400.0
FUTURE_LIMIT = 2 * 3_600.0
#: Periods under a minute (high resolution); longer ones are multiples of 60.
SHORT_PERIODS = (1, 5, 10, 20, 30)
MAX_DATAPOINTS = 1_440
#: Sub-minute data older than this is rolled up into minutes, as CloudWatch
#: keeps high-resolution data for three hours.
HIGH_RESOLUTION_KEEP = 3 * 3_600.0
#: Distinct values kept exactly per datapoint; beyond that, values go into
#: logarithmic bins of relative width 1% so that memory stays bounded and a
#: percentile is still within 0.5% of the exact one.
DISTINCT_LIMIT = 2_048
_GAMMA = 1.01
_LOG_GAMMA = math.log(_GAMMA)
_PERCENTILE = re.compile(r"p(\d{1,2}(?:\.\d{0,10})?|100)")

SeriesKey = tuple[str, str, Dimensions]  # namespace, metric name, dimensions

#: Version 2 dropped ``metric_data_time``, an index of the rows by time
#: alone: every read names its series (the primary key's first column), and
#: only the hourly upkeep looked rows up by time, which it now does series
#: by series through the primary key. Keeping it cost a second B-tree insert
#: for every row written (20,000 a minute for 10,000 scheduled rules).
STORE_VERSION = 2

STORE_SCHEMA = """
CREATE TABLE IF NOT EXISTS metric_series (
    id         INTEGER PRIMARY KEY,
    namespace  TEXT NOT NULL,
    name       TEXT NOT NULL,
    dimensions TEXT NOT NULL,
    UNIQUE (namespace, name, dimensions)
);
CREATE TABLE IF NOT EXISTS metric_data (
    series INTEGER NOT NULL,
    time   INTEGER NOT NULL,
    unit   TEXT NOT NULL,
    count  REAL NOT NULL,
    sum    REAL NOT NULL,
    min    REAL NOT NULL,
    max    REAL NOT NULL,
    dist   BLOB,
    PRIMARY KEY (series, time, unit)
) WITHOUT ROWID;
"""
#: ``pipelines_merge`` for PostgreSQL, which cannot call Python: the same
#: merge as ``_merge_blobs`` (``Aggregate.merge``), on the same JSON, in the
#: database, so concurrent flushes of one row by several runners each merge
#: into what the one before committed (the upsert waits on the row's lock).
#: Values are binned as ``_bin`` does (the same libm ``log`` and ``pow``,
#: so the same bins); numbers go back out as float8's text, which with
#: ``extra_float_digits`` 1 is the shortest that reads back exactly.
ENGINE_SCHEMA = MappingProxyType(
    {
        "postgresql": f"""
CREATE OR REPLACE FUNCTION pipelines_bin(value double precision) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN value = 0 THEN 0::double precision
        ELSE sign(value) * (2 * power({_GAMMA}::double precision,
            ceil(ln(abs(value)) / ln({_GAMMA}::double precision)))
            / ({_GAMMA}::double precision + 1)) END
$$;
CREATE OR REPLACE FUNCTION pipelines_merge(old bytea, new bytea) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET extra_float_digits = 1 AS $$
DECLARE
    a json;
    b json;
    a_binned boolean;
    b_binned boolean;
    binned boolean;
    distinct_values bigint;
    merged text;
BEGIN
    IF old IS NULL OR new IS NULL THEN
        RETURN NULL;
    END IF;
    a := convert_from(old, 'UTF8')::json;
    b := convert_from(new, 'UTF8')::json;
    a_binned := (a ->> 0)::boolean;
    b_binned := (b ->> 0)::boolean;
    binned := a_binned OR b_binned;
    -- One side binned: the other's values go into bins, then counts add up.
    SELECT count(*), string_agg('[' || v::text || ',' || c::text || ']', ',')
    INTO distinct_values, merged
    FROM (
        SELECT v, sum(c) AS c FROM (
            SELECT CASE WHEN binned AND NOT a_binned THEN pipelines_bin((p ->> 0)::float8)
                ELSE (p ->> 0)::float8 END AS v, (p ->> 1)::float8 AS c
            FROM json_array_elements(a -> 1) AS p
            UNION ALL
            SELECT CASE WHEN binned AND NOT b_binned THEN pipelines_bin((p ->> 0)::float8)
                ELSE (p ->> 0)::float8 END, (p ->> 1)::float8
            FROM json_array_elements(b -> 1) AS p
        ) AS pairs GROUP BY v
    ) AS summed;
    IF NOT binned AND distinct_values > {DISTINCT_LIMIT} THEN
        -- Too many distinct values: every one goes into its bin (the common
        -- case above took one query; this one is rare).
        binned := true;
        SELECT string_agg('[' || v::text || ',' || c::text || ']', ',') INTO merged
        FROM (
            SELECT pipelines_bin(v) AS v, sum(c) AS c FROM (
                SELECT (p ->> 0)::float8 AS v, (p ->> 1)::float8 AS c
                FROM json_array_elements(a -> 1) AS p
                UNION ALL
                SELECT (p ->> 0)::float8, (p ->> 1)::float8 FROM json_array_elements(b -> 1) AS p
            ) AS pairs GROUP BY 1
        ) AS rebinned;
    END IF;
    RETURN convert_to(
        '[' || CASE WHEN binned THEN 'true' ELSE 'false' END || ',[' || coalesce(merged, '')
        || ']]', 'UTF8');
END $$;
"""
    }
)


def _bin(value: float) -> float:
    """The representative of ``value``'s logarithmic bin (within 0.5% of it)."""
    if value == 0:
        return 0.0
    index = math.ceil(math.log(abs(value)) / _LOG_GAMMA)
    return math.copysign(2 * _GAMMA**index / (_GAMMA + 1), value)


@dataclass(slots=True)
class Aggregate:
    """The statistics of one datapoint: every value put in one period.

    ``values`` maps each value to how many times it was put (exact until
    ``DISTINCT_LIMIT`` distinct values, then binned); it is None when a
    statistic set (sum, min, max, count only) was put, which leaves
    percentiles unavailable as in CloudWatch.
    """

    count: float = 0.0
    sum: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    values: dict[float, float] | None = field(default_factory=dict)
    binned: bool = False

    def add(self, value: float, count: float = 1.0) -> None:
        self.count += count
        self.sum += value * count
        self.min = min(self.min, value)
        self.max = max(self.max, value)
        if self.values is not None:
            key = _bin(value) if self.binned else value
            self.values[key] = self.values.get(key, 0.0) + count
            if len(self.values) > DISTINCT_LIMIT and not self.binned:
                self._bin_all()

    def add_set(self, count: float, total: float, low: float, high: float) -> None:
        if low == high and math.isclose(total, low * count):
            # Every sample had one value: still a distribution (CloudWatch's rule).
            self.add(low, count)
            return
        self.count += count
        self.sum += total
        self.min = min(self.min, low)
        self.max = max(self.max, high)
        self.values = None

    def merge(self, other: Aggregate) -> None:
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        if self.values is None or other.values is None:
            self.values = None
            return
        if other.binned and not self.binned:
            self._bin_all()
        for value, count in other.values.items():
            key = _bin(value) if self.binned and not other.binned else value
            self.values[key] = self.values.get(key, 0.0) + count
        if len(self.values) > DISTINCT_LIMIT and not self.binned:
            self._bin_all()

    def _bin_all(self) -> None:
        assert self.values is not None
        binned: dict[float, float] = {}
        for value, count in self.values.items():
            key = _bin(value)
            binned[key] = binned.get(key, 0.0) + count
        self.values, self.binned = binned, True

    def statistic(self, name: str) -> float | None:
        """SampleCount, Sum, Average, Minimum, Maximum or a percentile ``pNN.N``
        (None when percentiles are unavailable)."""
        if name == "SampleCount":
            return self.count
        if name == "Sum":
            return self.sum
        if name == "Average":
            return self.sum / self.count if self.count else 0.0
        if name == "Minimum":
            return self.min
        if name == "Maximum":
            return self.max
        return self.percentile(float(name[1:]))

    def percentile(self, rank: float) -> float | None:
        """The nearest-rank percentile: the smallest value with at least
        ``rank`` percent of the samples at or below it (p0 is the minimum,
        p100 the maximum). None when unavailable, as in CloudWatch: after a
        statistic set with Minimum != Maximum, or with a negative value."""
        if self.values is None or not self.values or self.min < 0:
            return None
        if rank <= 0:
            return self.min
        if rank >= 100:
            return self.max
        wanted = rank / 100 * sum(self.values.values())
        seen = 0.0
        for value in sorted(self.values):
            seen += self.values[value]
            if seen >= wanted - 1e-9:
                # A binned value is within 0.5%; never outside what was put.
                return min(max(value, self.min), self.max)
        return self.max

    def encode(self) -> bytes | None:
        if self.values is None:
            return None
        return orjson.dumps([self.binned, list(self.values.items())])

    @classmethod
    def decode(
        cls, count: float, total: float, low: float, high: float, blob: bytes | None
    ) -> Aggregate:
        if blob is None:
            return cls(count, total, low, high, None)
        binned, pairs = orjson.loads(blob)
        # float(): PostgreSQL's merge writes 1.0 as 1, which JSON reads as an int.
        return cls(count, total, low, high, {float(value): n for value, n in pairs}, binned)


def _merge_blobs(old: bytes | None, new: bytes | None) -> bytes | None:
    """SQLite function: the distribution of two rows of one datapoint merged."""
    if old is None or new is None:
        return None
    old_binned, old_pairs = orjson.loads(old)
    new_binned, new_pairs = orjson.loads(new)
    if not old_binned and not new_binned:
        # The usual case (a counter's minute): exact values added up, without
        # Aggregates; only past DISTINCT_LIMIT does the general merge bin them.
        values = dict(old_pairs)
        for value, count in new_pairs:
            values[value] = values.get(value, 0.0) + count
        if len(values) <= DISTINCT_LIMIT:
            return orjson.dumps([False, list(values.items())])
    merged = Aggregate.decode(0, 0, math.inf, -math.inf, old)
    merged.merge(Aggregate.decode(0, 0, math.inf, -math.inf, new))
    return merged.encode()


def parse_statistic(name: str) -> str:
    """``name`` if it is a statistic or a percentile CloudWatch knows, else MetricError."""
    if name in STATISTICS or _PERCENTILE.fullmatch(name):
        return name
    raise MetricError(
        "InvalidParameterValue",
        f"The statistic {name!r} is not valid: use one of {', '.join(STATISTICS)}"
        " or a percentile such as p99 or p99.9",
    )


def check_period(period: Any, where: str = "Period") -> int:
    """A period CloudWatch accepts: 1, 5, 10, 20, 30 or a multiple of 60 seconds."""
    if (
        isinstance(period, bool)
        or not isinstance(period, int)
        or not (period in SHORT_PERIODS or (period > 0 and period % 60 == 0))
    ):
        raise MetricError(
            "InvalidParameterValue",
            f"The parameter {where} must be 1, 5, 10, 20, 30 or a multiple of 60 (seconds),"
            f" not {period!r}",
        )
    return period


def _text(where: str, value: Any, low: int, high: int) -> str:
    if not isinstance(value, str) or not low <= len(value) <= high:
        raise MetricError(
            "InvalidParameterValue",
            f"The parameter {where} must be a string of {low} to {high} characters, not {value!r}",
        )
    return value


def series_key(namespace: str, name: str, dimensions: Mapping[str, str] | None) -> SeriesKey:
    """The checked identity of a metric: namespace, name and sorted dimensions."""
    _text("Namespace", namespace, 1, 255)
    _text("MetricName", name, 1, 255)
    dims = dict(dimensions or {})
    if len(dims) > MAX_DIMENSIONS:
        raise MetricError(
            "InvalidParameterValue",
            f"The collection Dimensions must not have more than {MAX_DIMENSIONS} members"
            f" ({len(dims)} given)",
        )
    for index, (key, value) in enumerate(sorted(dims.items()), start=1):
        _text(f"Dimensions.member.{index}.Name", key, 1, 255)
        _text(f"Dimensions.member.{index}.Value", value, 1, 1024)
    return (namespace, name, tuple(sorted(dims.items())))


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MetricError("InvalidParameterValue", f"The value of {where} must be a number")
    number = float(value)
    if math.isnan(number) or math.isinf(number):
        raise MetricError(
            "InvalidParameterValue", f"The value {value} for parameter {where} is not supported"
        )
    if abs(number) > VALUE_LIMIT:
        raise MetricError(
            "InvalidParameterValue",
            f"The value {value} for parameter {where} is out of range: values must be"
            " within -2^360 and 2^360",
        )
    return number


def _shown_moment(moment: float) -> str:
    """A refused timestamp as ISO 8601, or as seconds when no datetime
    holds it (a client's 1e30 or -2**63)."""
    try:
        return format_epoch(moment, "seconds")
    except (OverflowError, OSError, ValueError):
        return f"{moment:g} seconds from the epoch"


def _seconds(value: float | datetime) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)


class MetricStore(Store):
    """Metric data in SQLite, aggregated per period in memory before it is written.

    ``await MetricStore.open(path, clock)`` (path None: in memory only).

    ``put_metric_data`` only checks and aggregates (no I/O): each datapoint of
    the current period lives in memory and is merged into its row by
    ``flush`` (every ``flush_interval`` seconds while ``run`` runs, and before
    every read). One row holds one metric's datapoint at its storage
    resolution (a minute, or a second for high-resolution metrics).
    """

    name = "metrics"
    version = STORE_VERSION
    schema = STORE_SCHEMA
    engine_schema = ENGINE_SCHEMA
    functions = MappingProxyType({"pipelines_merge": (2, _merge_blobs)})

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        retention_days: float = 15.0,
        flush_interval: float = 5.0,
    ) -> None:
        super().__init__(clock)
        self.retention_days = retention_days
        self.flush_interval = flush_interval
        #: Counters harvested into the store at each flush (the bus's own).
        self.counters: Metrics | None = None
        self._pending: dict[tuple[SeriesKey, int, str], Aggregate] = {}
        self._ids: dict[SeriesKey, int] = {}
        #: The series of each counter flushed before: a harvest's counters
        #: find theirs by the counter itself, without hashing its key.
        self._counter_ids: dict[Counter, int] = {}
        self._flushing = asyncio.Lock()
        self._closed = False
        self._stopping = False
        self._wake = asyncio.Event()

    async def migrate(self, connection: Queries, found: int) -> None:
        if found < 2:
            await connection.execute("DROP INDEX IF EXISTS metric_data_time")

    async def close(self) -> None:
        """Write what is pending and close (a second call does nothing)."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.flush()
        finally:
            await super().close()

    # -- writing ------------------------------------------------------------

    def put_metric_data(
        self,
        namespace: str,
        name: str,
        dimensions: Mapping[str, str] | None = None,
        *,
        value: float | None = None,
        values: Sequence[float] | None = None,
        counts: Sequence[float] | None = None,
        statistic_values: Mapping[str, float] | None = None,
        timestamp: float | datetime | None = None,
        unit: str = "None",
        storage_resolution: int = 60,
        member: str = "MetricData.member.1",
    ) -> None:
        """PutMetricData for one datum: ``value``, or ``values`` (each put
        ``counts[i]`` times, default once), or ``statistic_values`` (a
        statistic set: SampleCount, Sum, Minimum, Maximum). Raises
        ``MetricError`` with CloudWatch's code and wording for what CloudWatch
        refuses (``member`` is how its messages name the datum)."""
        datum = self._datum(
            namespace,
            name,
            dimensions,
            value=value,
            values=values,
            counts=counts,
            statistic_values=statistic_values,
            timestamp=timestamp,
            unit=unit,
            storage_resolution=storage_resolution,
            member=member,
        )
        if datum is not None:
            self._keep(*datum)

    def put_metric_batch(self, namespace: str, data: Sequence[Mapping[str, Any]]) -> None:
        """PutMetricData for a request's data, each a mapping of
        ``put_metric_data``'s keywords with ``name`` (and ``dimensions``): all
        are checked before any is kept, as CloudWatch refuses a request whole;
        the n-th is named ``MetricData.member.n`` in errors."""
        checked = []
        for index, item in enumerate(data, start=1):
            options = dict(item)
            name = options.pop("name")
            dims = options.pop("dimensions", None)
            datum = self._datum(
                namespace, name, dims, member=f"MetricData.member.{index}", **options
            )
            if datum is not None:
                checked.append(datum)
        for slot, sample in checked:
            self._keep(slot, sample)

    def _datum(
        self,
        namespace: str,
        name: str,
        dimensions: Mapping[str, str] | None,
        *,
        value: float | None = None,
        values: Sequence[float] | None = None,
        counts: Sequence[float] | None = None,
        statistic_values: Mapping[str, float] | None = None,
        timestamp: float | datetime | None = None,
        unit: str = "None",
        storage_resolution: int = 60,
        member: str = "MetricData.member.1",
    ) -> tuple[tuple[SeriesKey, int, str], Aggregate] | None:
        """One datum checked and aggregated, not yet kept (None: nothing measured)."""
        if namespace.startswith("AWS/"):
            raise MetricError(
                "InvalidParameterValue", "The value AWS/ for parameter Namespace is reserved"
            )
        key = series_key(namespace, name, dimensions)
        if unit not in UNITS:
            raise MetricError(
                "InvalidParameterValue",
                f"The parameter Unit must be one of CloudWatch's units (Count, Seconds,"
                f" Percent, ...), not {unit!r}",
            )
        if storage_resolution not in (1, 60):
            raise MetricError(
                "InvalidParameterValue", "The parameter StorageResolution must be 1 or 60"
            )
        moment = self._check_time(timestamp, member)
        given = [
            part
            for part, found in (
                ("Value", value),
                ("Values", values),
                ("StatisticValues", statistic_values),
            )
            if found is not None
        ]
        if len(given) > 1:
            raise MetricError(
                "InvalidParameterCombination",
                f"The parameters {member}.{given[0]} and {member}.{given[1]} are mutually"
                " exclusive and you have specified both.",
            )
        if not given:
            raise MetricError(
                "InvalidParameterCombination",
                f"One of the parameters {member}.Value, {member}.Values and"
                f" {member}.StatisticValues must be specified.",
            )
        bucket = int(moment // storage_resolution) * storage_resolution
        sample = Aggregate()
        if value is not None:
            sample.add(_number(f"{member}.Value", value))
        elif values is not None:
            self._add_values(sample, values, counts, member)
        else:
            assert statistic_values is not None
            self._add_set(sample, statistic_values, member)
        if not sample.count:
            return None  # every count was 0: nothing was measured
        return (key, bucket, unit), sample

    def _keep(self, slot: tuple[SeriesKey, int, str], sample: Aggregate) -> None:
        found = self._pending.get(slot)
        if found is None:
            self._pending[slot] = sample
        else:
            found.merge(sample)

    def _check_time(self, timestamp: float | datetime | None, member: str) -> float:
        now = self.clock.time()
        if timestamp is None:
            return now
        moment = _seconds(timestamp)
        if not now - PAST_LIMIT <= moment <= now + FUTURE_LIMIT:
            raise MetricError(
                "InvalidParameterValue",
                f"The parameter {member}.Timestamp must specify a time no more than"
                f" two weeks in the past and no more than two hours in the future"
                f" ({_shown_moment(moment)} given)",
            )
        return moment

    @staticmethod
    def _add_values(
        sample: Aggregate, values: Sequence[float], counts: Sequence[float] | None, member: str
    ) -> None:
        if not values or len(values) > MAX_VALUES:
            raise MetricError(
                "InvalidParameterValue",
                f"The parameter {member}.Values must hold 1 to {MAX_VALUES} values"
                f" ({len(values)} given)",
            )
        if counts is not None and len(counts) != len(values):
            raise MetricError(
                "InvalidParameterValue",
                f"The parameters {member}.Values and {member}.Counts must be of the same size.",
            )
        for index, item in enumerate(values):
            where = f"{member}.Counts.member.{index + 1}"
            count = 1.0 if counts is None else _number(where, counts[index])
            if count < 0:
                raise MetricError("InvalidParameterValue", f"The value of {where} is negative")
            if count:
                sample.add(_number(f"{member}.Values.member.{index + 1}", item), count)

    @staticmethod
    def _add_set(sample: Aggregate, stats: Mapping[str, float], member: str) -> None:
        parts = {k: _number(f"{member}.StatisticValues.{k}", stats.get(k)) for k in STATISTIC_SET}
        if parts["SampleCount"] <= 0 or parts["Minimum"] > parts["Maximum"]:
            raise MetricError(
                "InvalidParameterValue",
                f"{member}.StatisticValues needs a positive SampleCount and Minimum <= Maximum",
            )
        sample.add_set(parts["SampleCount"], parts["Sum"], parts["Minimum"], parts["Maximum"])

    def _harvest(self, now: float) -> _Counted:
        """What the counters counted since the last harvest, as one value each
        (a datapoint per counter that moved), and their minute."""
        bucket = int(now // 60) * 60  # EventBridge's metrics are per minute
        return bucket, [] if self.counters is None else self.counters.harvest()

    async def flush(self, *, harvest_time: float | None = None) -> None:
        """Write what was put since the last flush, merged into its rows. The
        counters' latest counts are put at ``harvest_time`` (default now): an
        alarm evaluated at a minute's end counts them in the minute that ended.
        Flushes take turns: one that returns has seen the previous one commit."""
        async with self._flushing:
            counted = self._harvest(self.clock.time() if harvest_time is None else harvest_time)
            if not self._pending and not counted[1]:
                return
            pending, self._pending = self._pending, {}
            try:
                async with self.transaction() as db:
                    ids, counter_ids = await self._write(db, pending, counted)
            except BaseException:
                self._restore(pending, counted)
                raise
            # Only now: ids made by a transaction rolled back would name nothing.
            self._ids.update(ids)
            self._counter_ids.update(counter_ids)

    async def _write(
        self,
        db: Queries,
        pending: dict[tuple[SeriesKey, int, str], Aggregate],
        counted: _Counted,
    ) -> tuple[dict[SeriesKey, int], dict[Counter, int]]:
        """Upsert the rows of ``pending`` and of the counters' counts; the
        series ids this made or looked up, by key and by counter.

        A counter's count is one sample: its row is made in SQL from
        ``[series, count, distribution]``, all of a harvest's in one
        statement (one JSON parameter, not eight bound per row: 10,000
        scheduled rules harvest 20,000 a minute). What else was put, and
        counts too large or fractional for JSON to carry exactly on SQLite,
        go through ``_UPSERT``. Rows are written in one order on every
        runner, so that runners flushing the same rows at once (PostgreSQL)
        lock them without waiting for each other in a cycle (a deadlock):
        the counters' rows by series, then the others by key."""
        moment, deltas = counted
        known = self._counter_ids
        points: list[tuple[int, float, str]] = []
        odd: list[tuple[int, float]] = []
        fresh: list[tuple[Counter, float]] = []
        for counter, delta in deltas:
            series = known.get(counter)
            if series is None:
                fresh.append((counter, delta))
            elif delta.is_integer() and abs(delta) < _EXACT:
                points.append((series, delta, _one_value(delta)))
            else:
                odd.append((series, delta))
        ids, counter_ids = await self._ids_to_write(db, pending, fresh)
        for counter, delta in fresh:
            series = counter_ids[counter]
            if delta.is_integer() and abs(delta) < _EXACT:
                points.append((series, delta, _one_value(delta)))
            else:
                odd.append((series, delta))
        others = list(_rows(pending, ids))
        for series, delta in odd:
            sample = _one_value(delta).encode()
            others.append((series, moment, "Count", 1.0, delta, delta, delta, sample))
        if points:
            points.sort()
            await db.execute(count_upsert(self.dialect), (moment, orjson.dumps(points)))
        if others:
            others.sort(key=_slot)
            await db.executemany(_UPSERT, others)
        return ids, counter_ids

    async def _ids_to_write(
        self,
        db: Queries,
        pending: Mapping[tuple[SeriesKey, int, str], Aggregate],
        fresh: list[tuple[Counter, float]],
    ) -> tuple[dict[SeriesKey, int], dict[Counter, int]]:
        """The series of what ``pending`` holds (by key) and of counters not
        flushed before (by counter), made where missing, in one pass: a
        counter's series is named by its text without its key's tuple
        being hashed again (20,000 new ones in a first minute)."""
        ids: dict[SeriesKey, int] = {}
        texts: dict[Dimensions, str] = {}
        keyed: dict[_Name, SeriesKey] = {}
        for key, _, _ in pending:
            known = self._ids.get(key)
            if known is not None:
                ids[key] = known
            else:
                keyed[_named(key, texts)] = key
        counted = {_named(counter.series, texts): counter for counter, _ in fresh}
        if not keyed and not counted:
            return ids, {}
        found = await self._ids_by_name(db, [*keyed, *counted.keys() - keyed.keys()])
        for name, key in keyed.items():
            ids[key] = found[name]
        return ids, {counter: found[name] for name, counter in counted.items()}

    def _restore(
        self, pending: dict[tuple[SeriesKey, int, str], Aggregate], counted: _Counted
    ) -> None:
        """A flush that failed wrote nothing: keep its data for the next one."""
        bucket, deltas = counted
        for counter, delta in deltas:
            sample = pending.setdefault((counter.series, bucket, "Count"), Aggregate())
            sample.add(delta)
        for slot, sample in pending.items():
            found = self._pending.get(slot)
            if found is not None:
                sample.merge(found)
            self._pending[slot] = sample

    async def _series_ids(
        self, db: Queries, keys: Iterable[SeriesKey], *, create: bool = True
    ) -> dict[SeriesKey, int]:
        """The ids of ``keys`` that exist (made first when ``create``); known
        ones from the cache, which the caller updates once its writes committed."""
        found: dict[SeriesKey, int] = {}
        named: dict[_Name, SeriesKey] = {}
        texts: dict[Dimensions, str] = {}
        for key in keys:
            known = self._ids.get(key)
            if known is not None:
                found[key] = known
            else:
                named[_named(key, texts)] = key
        if named:
            made = await self._ids_by_name(db, list(named), create=create)
            for name, series in made.items():
                found[named[name]] = series
        return found

    async def _ids_by_name(
        self, db: Queries, names: list[_Name], *, create: bool = True
    ) -> dict[_Name, int]:
        """The ids of the series ``names`` (namespace, name, dimensions'
        text) that exist, made first when ``create``.

        New series are made by one INSERT of them all (one statement run
        per name, in one trip) that skips those that exist, and numbered
        without reading them back when they can be (``_make_series``).
        Names that existed before (a restart) are looked up in one SELECT
        over a JSON array of them."""
        found: dict[_Name, int] = {}
        if create:
            await self._make_series(db, names, found)
        rest = [name for name in names if name not in found] if len(found) < len(names) else []
        if not rest:
            return found
        rows = await db.rows(
            "SELECT series.id, series.namespace, series.name, series.dimensions"
            f" FROM {self.dialect.json_rows('given')} JOIN metric_series AS series"
            " ON series.namespace = given.value ->> 0 AND series.name = given.value ->> 1"
            " AND series.dimensions = given.value ->> 2",
            (orjson.dumps(rest),),
        )
        for series, namespace, name, text in rows:
            found[(namespace, name, text)] = series
        return found

    @staticmethod
    async def _make_series(db: Queries, names: list[_Name], found: dict[_Name, int]) -> None:
        """Make the series ``names`` that do not exist: their ids go into ``found``."""
        before = await db.scalar("SELECT coalesce(max(id), 0) FROM metric_series")
        ordered = sorted(names)  # in one order, as the rows' upserts (see flush)
        made = await db.executemany(
            "INSERT INTO metric_series (namespace, name, dimensions) VALUES (?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            ordered,
        )
        if not made:
            return
        if made == len(ordered):
            # Each made, and ids count up in the order of the inserts. When
            # the largest id is now ``before`` plus their number, nobody
            # else's row came between: theirs are the ids after ``before``,
            # in that order, and reading 20,000 rows back to learn them
            # (a start of 10,000 scheduled rules) is 30 ms saved.
            top = await db.scalar("SELECT max(id) FROM metric_series")
            if top == before + made:
                found.update(zip(ordered, range(before + 1, top + 1), strict=True))
                return
        wanted = set(names)
        rows = await db.rows(
            "SELECT id, namespace, name, dimensions FROM metric_series WHERE id > ?", (before,)
        )
        for series, namespace, name, text in rows:
            # Rows another writer committed meanwhile may be there too.
            if (namespace, name, text) in wanted:
                found[(namespace, name, text)] = series

    # -- reading ------------------------------------------------------------

    async def get_metric_statistics(
        self,
        namespace: str,
        name: str,
        dimensions: Mapping[str, str] | None = None,
        *,
        start: float | datetime,
        end: float | datetime,
        period: int,
        statistics: Sequence[str] = (),
        extended_statistics: Sequence[str] = (),
        unit: str | None = None,
        max_datapoints: int = MAX_DATAPOINTS,
    ) -> dict[str, Any]:
        """GetMetricStatistics: ``{"Label": name, "Datapoints": [...]}``, one
        datapoint per period that has data, stamped at the period's start,
        oldest first; each has the requested statistics, ``ExtendedStatistics``
        for percentiles, and ``Unit``. ``max_datapoints``: GetMetricData reads
        up to 100,800 periods where GetMetricStatistics answers 1,440."""
        key = series_key(namespace, name, dimensions)
        check_period(period)
        if not statistics and not extended_statistics:
            raise MetricError("MissingParameter", "Give Statistics or ExtendedStatistics (or both)")
        for stat in statistics:
            if stat not in STATISTICS:
                parse_statistic(stat)  # a percentile given as a statistic
                raise MetricError(
                    "InvalidParameterValue",
                    f"Percentiles such as {stat} go in ExtendedStatistics, not Statistics",
                )
        for stat in extended_statistics:
            if stat in STATISTICS or not _PERCENTILE.fullmatch(stat):
                raise MetricError(
                    "InvalidParameterValue",
                    f"The extended statistic {stat!r} is not a percentile such as p99 or p99.9"
                    + did_you_mean(stat, STATISTICS),
                )
        begin = align_start(_seconds(start), self.clock.time())
        finish = _seconds(end)
        if finish <= begin:
            raise MetricError(
                "InvalidParameterValue",
                "The parameter StartTime must be less than the parameter EndTime.",
            )
        # Counted over the times given, as CloudWatch counts them (a day of
        # 1-second periods is 86400 whatever the rounding of StartTime).
        wanted = math.ceil((finish - _seconds(start)) / period)
        if wanted > max_datapoints:
            raise MetricError(
                "InvalidParameterCombination",
                f"You have requested up to {wanted} datapoints, which exceeds the limit of"
                f" {max_datapoints}. You may reduce the datapoints requested by increasing"
                " Period, or decreasing the time range.",
            )
        buckets = await self._read(key, begin, finish, period, unit)
        points = []
        for moment, row_unit in sorted(buckets):
            aggregate = buckets[moment, row_unit]
            point: dict[str, Any] = {"Timestamp": format_epoch(moment, "seconds")}
            for stat in statistics:
                point[stat] = aggregate.statistic(stat)
            if extended_statistics:
                point["ExtendedStatistics"] = {
                    stat: value
                    for stat in extended_statistics
                    if (value := aggregate.statistic(stat)) is not None
                }
            point["Unit"] = row_unit
            points.append(point)
        return {"Label": name, "Datapoints": points}

    async def _read(
        self, key: SeriesKey, begin: float, end: float, period: int, unit: str | None
    ) -> dict[tuple[int, str], Aggregate]:
        await self.flush()
        async with self.exclusive() as db:  # not inside another's transaction (upkeep's)
            ids = await self._series_ids(db, [key], create=False)
            self._ids.update(ids)
            rows = await self._rows_of(db, ids.get(key), begin, end, unit)
        if key not in ids:
            return {}
        # One datapoint per period and unit, as CloudWatch answers data put
        # in several units when no Unit is asked for.
        buckets: dict[tuple[int, str], Aggregate] = {}
        for moment, row_unit, count, total, low, high, dist in rows:
            if begin <= moment < end:
                slot = (int(begin + (moment - begin) // period * period), row_unit)
                sample = Aggregate.decode(count, total, low, high, dist)
                found = buckets.get(slot)
                if found is None:
                    buckets[slot] = sample
                else:
                    found.merge(sample)
        return buckets

    async def _rows_of(
        self, db: Queries, series: int | None, begin: float, end: float, unit: str | None
    ) -> list[Row]:
        if series is None:
            return []
        query = (
            "SELECT time, unit, count, sum, min, max, dist FROM metric_data"
            " WHERE series = ? AND time >= ? AND time < ?"
        )
        arguments: list[Any] = [series, math.floor(begin), math.ceil(end)]
        if unit is not None:
            query += " AND unit = ?"
            arguments.append(unit)
        return await db.rows(query, arguments)

    async def read_many(
        self, keys: Iterable[SeriesKey], end: int, period: int, count: int, statistic: str
    ) -> dict[SeriesKey, list[float | None]]:
        """``statistic`` of each of ``count`` periods ending at ``end`` (oldest
        first, None where a period has no data) for many metrics in one query:
        what an evaluation cycle of many alarms reads. The periods slide with
        ``end``, as an alarm's do (a 5-minute alarm evaluated at 10:06 reads
        10:01 to 10:06)."""
        await self.flush()
        keys = list(keys)
        found: dict[SeriesKey, list[float | None]] = {key: [None] * count for key in keys}
        async with self.exclusive() as db:  # not inside another's transaction (upkeep's)
            ids = await self._series_ids(db, keys, create=False)
            self._ids.update(ids)
            by_id = {ids[key]: key for key in keys if key in ids}
            if not by_id:
                return found
            window = {
                "ids": orjson.dumps(list(by_id)),
                "start": end - count * period,
                "end": end,
                "period": period,
            }
            simple = statistic in STATISTICS
            # All rows at once: one hand-over from SQLite's thread, not one per 64 rows.
            rows = await db.rows(_read_many(self.dialect, simple), window)
        if simple:
            for series, back, n, total, low, high in rows:
                value = Aggregate(n, total, low, high, None).statistic(statistic)
                found[by_id[series]][count - 1 - back] = value
            return found
        merged: dict[tuple[int, int], Aggregate] = {}
        for series, back, n, total, low, high, dist in rows:
            sample = Aggregate.decode(n, total, low, high, dist)
            if (series, back) in merged:
                merged[series, back].merge(sample)
            else:
                merged[series, back] = sample
        for (series, back), sample in merged.items():
            found[by_id[series]][count - 1 - back] = sample.statistic(statistic)
        return found

    async def list_metrics(
        self, namespace: str | None = None, name: str | None = None
    ) -> list[dict[str, Any]]:
        """ListMetrics: every metric with data, optionally of one namespace or name."""
        await self.flush()
        query = "SELECT namespace, name, dimensions FROM metric_series WHERE TRUE"
        arguments: list[str] = []
        if namespace is not None:
            query += " AND namespace = ?"
            arguments.append(namespace)
        if name is not None:
            query += " AND name = ?"
            arguments.append(name)
        query += " ORDER BY namespace, name, dimensions"
        rows = await self.rows(query, arguments)
        return [
            {
                "Namespace": ns,
                "MetricName": metric,
                "Dimensions": [{"Name": k, "Value": v} for k, v in orjson.loads(dims).items()],
            }
            for ns, metric, dims in rows
        ]

    # -- upkeep -------------------------------------------------------------

    async def run(self) -> None:
        """The store's task: flushes every ``flush_interval`` seconds and, hourly,
        rolls up old high-resolution data and deletes expired data, until
        ``stop_running``. It is never cancelled in the middle of a write (a
        COMMIT under way would land while its data was kept for the next)."""
        upkeep_due = 0.0
        while not self._stopping:
            timer = self.clock.call_later(self.flush_interval, self._wake.set)
            try:
                await self._wake.wait()
            finally:
                timer.cancel()
                self._wake.clear()
            # The engine's own errors too (a lock held too long, a lost connection).
            failures: tuple[type[Exception], ...] = (StateError, *self.backend.errors)
            try:
                await self.flush()
                if self.clock.time() >= upkeep_due:
                    await self.upkeep()
                    upkeep_due = self.clock.time() + 3_600
            except failures as exc:
                log.error("writing metrics failed (%s); retrying in %s s", exc, self.flush_interval)

    def stop_running(self) -> None:
        """Make ``run`` return after what it is writing (``close`` writes the rest)."""
        self._stopping = True
        self._wake.set()

    async def upkeep(self) -> None:
        """Roll sub-minute rows older than three hours into their minute, and
        delete rows older than ``retention_days``."""
        now = self.clock.time()
        async with self.transaction() as db:
            cutoff = int(now - HIGH_RESOLUTION_KEEP)
            # Taken and deleted in one statement: of two runners of a cluster
            # rolling up at once, each row goes to one of them (the other's
            # DELETE waits for the first to commit, then finds it gone), so
            # no minute counts it twice.
            rows = await db.rows(
                f"DELETE FROM metric_data WHERE {_EVERY_SERIES} AND time < ? AND time % 60 != 0"
                " RETURNING series, time, unit, count, sum, min, max, dist",
                (cutoff,),
            )
            minutes: dict[tuple[int, int, str], Aggregate] = {}
            for series, moment, unit, count, total, low, high, dist in rows:
                slot = (series, moment - moment % 60, unit)
                sample = Aggregate.decode(count, total, low, high, dist)
                if slot in minutes:
                    minutes[slot].merge(sample)
                else:
                    minutes[slot] = sample
            rolled: list[tuple[Any, ...]] = [
                (series, moment, unit, a.count, a.sum, a.min, a.max, a.encode())
                for (series, moment, unit), a in minutes.items()
            ]
            # In key order, as flush writes: no deadlock with a runner's flush.
            rolled.sort(key=_slot)
            await db.executemany(_UPSERT, rolled)
            if self.retention_days > 0:
                expired = int(now - self.retention_days * 86_400)
                await db.execute(
                    f"DELETE FROM metric_data WHERE {_EVERY_SERIES} AND time < ?", (expired,)
                )


STATISTIC_SET = ("SampleCount", "Sum", "Minimum", "Maximum")

#: Rows are found by time series by series, through the primary key
#: (series, time, unit): the table has no index of time alone (see
#: ``STORE_VERSION``).
_EVERY_SERIES = "series IN (SELECT id FROM metric_series)"

# The existing row named by the table (PostgreSQL would find a bare ``count``
# ambiguous); CASE, not SQLite's two-argument min() (PostgreSQL's LEAST).
_MERGE = """
ON CONFLICT (series, time, unit) DO UPDATE SET
    count = metric_data.count + excluded.count,
    sum = metric_data.sum + excluded.sum,
    min = CASE WHEN excluded.min < metric_data.min THEN excluded.min ELSE metric_data.min END,
    max = CASE WHEN excluded.max > metric_data.max THEN excluded.max ELSE metric_data.max END,
    dist = pipelines_merge(metric_data.dist, excluded.dist)
"""
_UPSERT = (
    "INSERT INTO metric_data (series, time, unit, count, sum, min, max, dist)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)" + _MERGE
)


@functools.lru_cache(maxsize=4)
def count_upsert(dialect: Dialect) -> str:
    """The upsert of a harvest's counter rows in one statement: parameters
    its minute and a JSON array of ``[series, delta, distribution]``, each
    one sample of ``delta`` (a count) in that minute's ``Count`` row.
    SQLite reads a JSON string as text: cast, so the row holds bytes as
    ``_UPSERT``'s do."""
    series = dialect.json_item("r", 0, "integer")
    delta = dialect.json_item("r", 1, "real")
    dist = dialect.json_item("r", 2, "blob")
    if dialect.name == "sqlite":
        dist = f"CAST({dist} AS BLOB)"
    return (
        "INSERT INTO metric_data (series, time, unit, count, sum, min, max, dist)"
        f" SELECT {series}, ?, 'Count', 1.0, {delta}, {delta}, {delta}, {dist}"
        f" FROM {dialect.json_rows('r')} WHERE true" + _MERGE
    )


@functools.lru_cache(maxsize=8)
def _read_many(dialect: Dialect, simple: bool) -> str:
    """The read of ``read_many``: :ids the series ids (a JSON array), :start,
    :end, :period; "back" counts periods back from the newest (0), in
    integer division on both engines (every operand is an integer). With
    ``simple``, the statistics SQL can add up, per period; else every row."""
    back = "(:end - 1 - time) / :period AS back"
    ids = dialect.json_value("given", "integer")
    where = (
        f"WHERE series IN (SELECT {ids} FROM {dialect.json_values('given')})"
        " AND time >= :start AND time < :end"
    ).replace("?", ":ids")
    if simple:
        return (
            f"SELECT series, {back}, SUM(count), SUM(sum), MIN(min), MAX(max)"
            f" FROM metric_data {where} GROUP BY series, back"
        )
    return f"SELECT series, {back}, count, sum, min, max, dist FROM metric_data {where}"


#: A harvest of counters: its minute, and each moved counter with what it
#: counted since the last.
_Counted = tuple[int, list[tuple[Counter, float]]]

#: Counts up to this go through JSON as integers, exactly on any engine.
_EXACT = 2.0**53


def _rows(
    pending: Mapping[tuple[SeriesKey, int, str], Aggregate], ids: Mapping[SeriesKey, int]
) -> Iterator[tuple[Any, ...]]:
    for (key, moment, unit), a in pending.items():
        yield (ids[key], moment, unit, a.count, a.sum, a.min, a.max, a.encode())


def _slot(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """An upsert row's key: (series, time, unit)."""
    return row[:3]


@functools.lru_cache(maxsize=256)
def _one_value(value: float) -> str:
    """The encoded distribution of one sample of ``value``, as text (a JSON
    string of the counters' statement); counters' deltas repeat (1.0, 2.0,
    ...), so it is cached."""
    sample = Aggregate()
    sample.add(value)
    encoded = sample.encode()
    assert encoded is not None  # a value, not a statistic set
    return encoded.decode()


def _dims_text(dims: Dimensions) -> str:
    return orjson.dumps(dict(dims), option=orjson.OPT_SORT_KEYS).decode()


#: A series as ``metric_series`` names it: namespace, name, dimensions' text.
_Name = tuple[str, str, str]


def _named(key: SeriesKey, texts: dict[Dimensions, str]) -> _Name:
    """``key`` as its row names it; ``texts`` keeps each dimensions' text
    made, as a rule's counters share their dimensions."""
    dims = key[2]
    text = texts.get(dims)
    if text is None:
        text = texts[dims] = _dims_text(dims)
    return (key[0], key[1], text)


def align_start(start: float, now: float) -> float:
    """StartTime rounded down as CloudWatch does: to the minute when under 15
    days old, to 5 minutes when under 63 days, else to the hour."""
    age = now - start
    step = 60 if age < 15 * 86_400 else 300 if age < 63 * 86_400 else 3_600
    return float(math.floor(start / step) * step)


async def read_metric_statistics(
    path: str | Path, namespace: str, name: str, dimensions: Mapping[str, str] | None, **query: Any
) -> dict[str, Any]:
    """GetMetricStatistics on a state database, whether its pipeline runs or
    not (what ``pipelines metrics get`` shows; a running pipeline writes
    every few seconds, see ``MetricStore.flush_interval``)."""
    async with MetricStore.existing(path) as store:
        return await store.get_metric_statistics(namespace, name, dimensions, **query)


async def read_metrics(path: str | Path, namespace: str | None = None) -> list[dict[str, Any]]:
    """ListMetrics on a state database."""
    async with MetricStore.existing(path) as store:
        return await store.list_metrics(namespace)
