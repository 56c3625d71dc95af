"""Alarms: CloudWatch's metric and composite alarms over the metric store.

``evaluate_alarm_state`` is CloudWatch's state rule as a pure function (see
its docstring); ``judge`` is the same rule keeping what a state reason needs.
``Alarms`` holds a runtime's alarms: it evaluates them every minute (every
10 seconds when one has a period under a minute), reading each group of
alarms that share a period, statistic and range in one query, keeps their
states and history in the state database, and puts a "CloudWatch Alarm State
Change" event on the bus for every transition, so rules route alarms like any
other event. Actions per state are a shorthand for such rules.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from pipelines.alarm_rules import AlarmRule, find_cycle, parse_alarm_rule
from pipelines.clock import Clock
from pipelines.errors import AlarmRuleError, ConfigError, MetricError, NotRunningError, Where
from pipelines.event import DEFAULT_ACCOUNT, DEFAULT_REGION, format_epoch
from pipelines.metrics import (
    STATISTICS,
    MetricStore,
    SeriesKey,
    check_period,
    parse_statistic,
    series_key,
)
from pipelines.store import Location, Row, Store
from pipelines.targets import check_keys, flag_setting

if TYPE_CHECKING:
    from pipelines.bus import Bus
    from pipelines.targets import Target

log = logging.getLogger("pipelines.alarms")

OK = "OK"
ALARM = "ALARM"
INSUFFICIENT_DATA = "INSUFFICIENT_DATA"
STATE_VALUES = (OK, ALARM, INSUFFICIENT_DATA)
SOURCE = "aws.cloudwatch"
DETAIL_TYPE = "CloudWatch Alarm State Change"
INITIAL_REASON = "Unchecked: Initial alarm creation"

# Operator name -> (test, words for the reason).
OPERATORS: dict[str, tuple[Callable[[float, float], bool], str]] = {
    "GreaterThanOrEqualToThreshold": (operator.ge, "greater than or equal to"),
    "GreaterThanThreshold": (operator.gt, "greater than"),
    "LessThanThreshold": (operator.lt, "less than"),
    "LessThanOrEqualToThreshold": (operator.le, "less than or equal to"),
}
TREAT_MISSING = ("missing", "ignore", "breaching", "notBreaching")
#: Alarm periods: 10, 20, 30 seconds or a multiple of 60.
ALARM_SHORT_PERIODS = (10, 20, 30)
HISTORY_DAYS = 30  # CloudWatch keeps alarm history for 30 days


def evaluation_range(evaluation_periods: int) -> int:
    """How many periods an alarm reads. CloudWatch gives only one figure (5
    for 3 evaluation periods); this rule fits it and always reads more than N."""
    return evaluation_periods + max(evaluation_periods // 3, 2)


# -- the state rule -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of the state rule over one evaluation range.

    ``state`` is None when the alarm keeps its state (``ignore``). ``counted``
    are the real datapoints that decided, as (position in the range, value),
    oldest first; ``filled`` missing points were treated as ``breaching`` or
    ``notBreaching``; ``breaches`` counts breaching points among both.
    """

    state: str | None
    counted: tuple[tuple[int, float], ...] = ()
    filled: int = 0
    breaches: int = 0
    unknown: int = 0


def judge(
    datapoints: Sequence[float | None],
    *,
    threshold: float,
    comparison_operator: str,
    evaluation_periods: int,
    datapoints_to_alarm: int | None = None,
    treat_missing_data: str = "missing",
) -> Verdict:
    """CloudWatch's state rule; see ``evaluate_alarm_state``."""
    breach = OPERATORS[comparison_operator][0]
    n = evaluation_periods
    m = datapoints_to_alarm or n
    real = [(i, v) for i, v in enumerate(datapoints) if v is not None]
    if not real:
        if treat_missing_data == "missing":
            return Verdict(INSUFFICIENT_DATA, unknown=len(datapoints))
        if treat_missing_data == "ignore":
            return Verdict(None)
        breaching = treat_missing_data == "breaching"
        return Verdict(ALARM if breaching else OK, filled=n, breaches=n if breaching else 0)
    if len(real) >= n:
        # Enough real points: the newest N decide, missing ones are skipped.
        counted = real[-n:]
        breaches = sum(breach(v, threshold) for _, v in counted)
        return Verdict(ALARM if breaches >= m else OK, tuple(counted), 0, breaches)
    breaches = sum(breach(v, threshold) for _, v in real)
    if treat_missing_data in ("breaching", "notBreaching"):
        # As few missing points as possible are filled: just enough to make N.
        filled = n - len(real)
        if treat_missing_data == "breaching":
            breaches += filled
        return Verdict(ALARM if breaches >= m else OK, tuple(real), filled, breaches)
    if breaches >= m:
        return Verdict(ALARM, tuple(real), 0, breaches)
    if _premature(datapoints, m, lambda v: breach(v, threshold)):
        if treat_missing_data == "ignore":
            return Verdict(None)
        return Verdict(ALARM, tuple(real), 0, breaches)
    return Verdict(OK, tuple(real), 0, breaches)


def _premature(datapoints: Sequence[float | None], m: int, breach: Callable[[float], bool]) -> bool:
    """Premature-alarm avoidance, as CloudWatch's tables pin it down: the M-th
    newest point of the range breaches, every older one is missing and every
    newer one breaches or is missing."""
    at = len(datapoints) - m
    if at < 0:
        return False
    pivot = datapoints[at]
    return (
        pivot is not None
        and breach(pivot)
        and all(v is None for v in datapoints[:at])
        and all(v is None or breach(v) for v in datapoints[at + 1 :])
    )


def evaluate_alarm_state(
    datapoints: Sequence[float | None],
    *,
    threshold: float,
    comparison_operator: str,
    evaluation_periods: int,
    datapoints_to_alarm: int | None = None,
    treat_missing_data: str = "missing",
    current_state: str = INSUFFICIENT_DATA,
) -> str:
    """The state a metric alarm goes to, by CloudWatch's documented rule.

    ``datapoints`` is the evaluation range, oldest first, None for a missing
    point. When at least N (``evaluation_periods``) real points are in the
    range, the newest N decide: ALARM when at least M (``datapoints_to_alarm``)
    breach, else OK; ``treat_missing_data`` is not used. When every point is
    missing: ``missing`` gives INSUFFICIENT_DATA, ``ignore`` keeps
    ``current_state``, ``breaching`` ALARM, ``notBreaching`` OK. With fewer than
    N real points: ``breaching`` and ``notBreaching`` fill the missing points
    needed to make N with that value and count all real points; ``missing``
    and ``ignore`` let the real points decide, except for premature-alarm
    avoidance (``_premature``), which gives ALARM with ``missing`` and keeps
    the state with ``ignore``.
    """
    if comparison_operator not in OPERATORS:
        raise MetricError(
            "InvalidParameterValue", f"unknown ComparisonOperator {comparison_operator!r}"
        )
    if treat_missing_data not in TREAT_MISSING:
        raise MetricError(
            "InvalidParameterValue", f"unknown TreatMissingData {treat_missing_data!r}"
        )
    verdict = judge(
        datapoints,
        threshold=threshold,
        comparison_operator=comparison_operator,
        evaluation_periods=evaluation_periods,
        datapoints_to_alarm=datapoints_to_alarm,
        treat_missing_data=treat_missing_data,
    )
    return current_state if verdict.state is None else verdict.state


# -- declarations -----------------------------------------------------------------

METRIC_ALARM_KEYS = {
    "namespace",
    "metric_name",
    "dimensions",
    "statistic",
    "period",
    "evaluation_periods",
    "datapoints_to_alarm",
    "threshold",
    "comparison_operator",
    "treat_missing_data",
    "description",
    "bus",
    "actions",
    "actions_enabled",
}
COMPOSITE_ALARM_KEYS = {"rule", "description", "bus", "actions", "actions_enabled"}
ACTION_STATES = {"alarm": ALARM, "ok": OK, "insufficient_data": INSUFFICIENT_DATA}


@dataclass(frozen=True)
class AlarmSpec:
    """What both kinds of alarm declare: name, bus for their events, actions."""

    name: str
    description: str
    bus: str
    actions_enabled: bool
    #: State value -> resource names to deliver the state-change event to.
    actions: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class MetricAlarmSpec(AlarmSpec):
    key: SeriesKey
    statistic: str
    period: int
    evaluation_periods: int
    datapoints_to_alarm: int
    threshold: float
    comparison_operator: str
    treat_missing_data: str
    #: The optional settings written (``datapoints_to_alarm``,
    #: ``treat_missing_data``): DescribeAlarms shows only those, as AWS does,
    #: though a missing one has its effective value here.
    written: frozenset[str] = frozenset()

    @property
    def cadence(self) -> int:
        """Seconds between evaluations: 10 for periods under a minute, else 60."""
        return 10 if self.period < 60 else 60

    def configuration(self) -> dict[str, Any]:
        namespace, metric, dims = self.key
        stat = {
            "metric": {"namespace": namespace, "name": metric, "dimensions": dict(dims)},
            "period": self.period,
            "stat": self.statistic,
        }
        return {
            "description": self.description,
            "metrics": [{"id": "m1", "metricStat": stat, "returnData": True}],
        }


@dataclass(frozen=True)
class CompositeAlarmSpec(AlarmSpec):
    rule: AlarmRule

    def configuration(self) -> dict[str, Any]:
        return {"description": self.description, "alarmRule": self.rule.text}


def _where(name: str) -> Where:
    return Where(f"alarm {name}")


def _common(name: str, settings: Mapping[str, Any], keys: set[str]) -> dict[str, Any]:
    where = _where(name)
    if not isinstance(name, str) or not 1 <= len(name) <= 255:
        raise ConfigError(where, "an alarm name has 1 to 255 characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ConfigError(where, "an alarm name cannot hold control characters")
    if not isinstance(settings, Mapping):
        raise ConfigError(where, "an alarm is a mapping (metric_name, threshold, ... or rule)")
    # A metric alarm's settings on a composite one (or the reverse) are unknown there.
    check_keys(where, settings, keys)
    description = settings.get("description", "")
    if not isinstance(description, str) or len(description) > 1024:
        raise ConfigError(where / "description", "must be a string of at most 1024 characters")
    bus = settings.get("bus", "default")
    if not isinstance(bus, str) or not bus:
        raise ConfigError(where / "bus", "must be the name of an event bus")
    enabled = bool(flag_setting(where, settings, "actions_enabled", True))
    return {
        "name": name,
        "description": description,
        "bus": bus,
        "actions_enabled": enabled,
        "actions": _actions(where, settings.get("actions") or {}),
    }


def _actions(where: Where, declared: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(declared, Mapping):
        raise ConfigError(where / "actions", "maps alarm, ok or insufficient_data to resources")
    actions: dict[str, tuple[str, ...]] = {}
    for state, names in declared.items():
        if state not in ACTION_STATES:
            raise ConfigError(where / "actions" / state, "must be alarm, ok or insufficient_data")
        if isinstance(names, str):
            names = [names]
        if (
            not isinstance(names, list)
            or not 1 <= len(names) <= 5
            or not all(isinstance(n, str) and n for n in names)
        ):
            raise ConfigError(where / "actions" / state, "must list 1 to 5 resource names")
        actions[ACTION_STATES[state]] = tuple(names)
    return actions


def _whole(where: Where, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(where, f"must be a whole number of at least {low}")
    return value


def _threshold(where: Where, value: Any) -> float:
    """A finite number: NaN never breaches nor clears, and an int past a
    float's range cannot be compared as CloudWatch compares (in doubles)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(where, "must be a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ConfigError(where, f"must be a finite number, not {value!r}")
    return number


def parse_metric_alarm(name: str, settings: Mapping[str, Any]) -> MetricAlarmSpec:
    """Check a metric alarm's declaration (PutMetricAlarm's rules); ``ConfigError``
    names the setting at fault."""
    common = _common(name, settings, METRIC_ALARM_KEYS)
    where = _where(name)
    for required in ("namespace", "metric_name", "threshold", "period", "evaluation_periods"):
        if required not in settings:
            raise ConfigError(where, f"a metric alarm needs {required}")
    dims = settings.get("dimensions") or {}
    # Keys too: YAML reads `1: x` as an int key, which cannot be sorted with names.
    if not isinstance(dims, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in dims.items()
    ):
        raise ConfigError(where / "dimensions", "maps dimension names to string values")
    try:
        key = series_key(settings["namespace"], settings["metric_name"], dims)
    except MetricError as exc:
        raise ConfigError(where, exc.message) from None
    statistic = settings.get("statistic", "Average")
    if not isinstance(statistic, str):
        raise ConfigError(where / "statistic", f"must be a statistic's name, not {statistic!r}")
    try:
        parse_statistic(statistic)
    except MetricError as exc:
        raise ConfigError(where / "statistic", exc.message) from None
    period = settings["period"]
    if (
        isinstance(period, bool)
        or not isinstance(period, int)
        or not (period in ALARM_SHORT_PERIODS or (period > 0 and period % 60 == 0))
    ):
        raise ConfigError(where / "period", "must be 10, 20, 30 or a multiple of 60 (seconds)")
    check_period(period)
    periods = _whole(where / "evaluation_periods", settings["evaluation_periods"], 1)
    limit = 86_400 if period < 3_600 else 7 * 86_400
    if period * periods > limit:
        raise ConfigError(
            where / "evaluation_periods",
            f"period x evaluation_periods is at most {limit:,} seconds ({period * periods:,} here)",
        )
    to_alarm = _whole(
        where / "datapoints_to_alarm", settings.get("datapoints_to_alarm", periods), 1
    )
    if to_alarm > periods:
        raise ConfigError(
            where / "datapoints_to_alarm",
            f"cannot be more than evaluation_periods ({periods})",
        )
    threshold = _threshold(where / "threshold", settings["threshold"])
    comparison = settings.get("comparison_operator", "GreaterThanOrEqualToThreshold")
    # A list or mapping cannot be looked up in OPERATORS (unhashable).
    if not isinstance(comparison, str) or comparison not in OPERATORS:
        raise ConfigError(where / "comparison_operator", f"must be one of {', '.join(OPERATORS)}")
    missing = settings.get("treat_missing_data", "missing")
    if missing not in TREAT_MISSING:
        raise ConfigError(
            where / "treat_missing_data", f"must be one of {', '.join(TREAT_MISSING)}"
        )
    return MetricAlarmSpec(
        **common,
        key=key,
        statistic=statistic,
        period=period,
        evaluation_periods=periods,
        datapoints_to_alarm=to_alarm,
        threshold=threshold,
        comparison_operator=comparison,
        treat_missing_data=missing,
        written=frozenset(
            k for k in ("datapoints_to_alarm", "treat_missing_data") if k in settings
        ),
    )


def parse_composite_alarm(name: str, settings: Mapping[str, Any]) -> CompositeAlarmSpec:
    """Check a composite alarm's declaration; its rule's errors point at the position."""
    common = _common(name, settings, COMPOSITE_ALARM_KEYS)
    text = settings.get("rule")
    if not isinstance(text, str):
        raise ConfigError(_where(name) / "rule", "a composite alarm needs a rule (a string)")
    try:
        rule = parse_alarm_rule(text)
    except AlarmRuleError as exc:
        raise ConfigError(_where(name) / "rule", exc.message) from None
    return CompositeAlarmSpec(**common, rule=rule)


def parse_alarm(name: str, settings: Mapping[str, Any]) -> AlarmSpec:
    """A composite alarm when ``settings`` has a ``rule``, else a metric alarm."""
    if isinstance(settings, Mapping) and "rule" in settings:
        return parse_composite_alarm(name, settings)
    return parse_metric_alarm(name, settings)


# -- reasons ------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)  # the alarms of a cycle share their periods' times
def _point_time(seconds: float) -> str:
    """A datapoint's time in a state reason, as CloudWatch prints it."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%d/%m/%y %H:%M:%S")


@functools.lru_cache(maxsize=4096)
def _long_time(seconds: float) -> str:
    return format_epoch(seconds, "milliseconds").replace("Z", "+0000")


def _plural(count: int, word: str = "datapoint") -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _number(value: float) -> str:
    return repr(float(value))


def metric_reason(
    spec: MetricAlarmSpec, verdict: Verdict, starts: Sequence[float], previous: str
) -> str:
    """CloudWatch's StateReason for a verdict over the range whose periods start at ``starts``."""
    assert verdict.state is not None
    if verdict.state == INSUFFICIENT_DATA:
        verb = "was" if verdict.unknown == 1 else "were"
        return f"Insufficient Data: {_plural(verdict.unknown)} {verb} unknown."
    words = OPERATORS[spec.comparison_operator][1]
    alarming = verdict.state == ALARM
    treated = "Breaching" if spec.treat_missing_data == "breaching" else "NonBreaching"
    if not verdict.counted:
        return (
            f"Threshold Crossed: no datapoints were received for {_plural(len(starts), 'period')}"
            f" and {verdict.filled} missing datapoints were treated as [{treated}]."
        )
    breach = OPERATORS[spec.comparison_operator][0]
    agreeing = [(i, v) for i, v in verdict.counted if breach(v, spec.threshold) == alarming]
    shown, says = (agreeing, alarming) if agreeing else (list(verdict.counted), not alarming)
    listed = ", ".join(f"{_number(v)} ({_point_time(starts[i])})" for i, v in reversed(shown))
    relation = words if says else f"not {words}"
    verb = "was" if len(shown) == 1 else "were"
    if verdict.filled:
        return (
            f"Threshold Crossed: {_plural(len(shown))} [{listed}] {verb} {relation} the"
            f" threshold ({_number(spec.threshold)}) and {verdict.filled} missing datapoints"
            f" were treated as [{treated}]."
        )
    needed = (
        spec.datapoints_to_alarm
        if alarming
        else len(verdict.counted) - spec.datapoints_to_alarm + 1
    )
    needed = max(needed, 1)
    transition = f"{previous} -> {verdict.state}"
    return (
        f"Threshold Crossed: {len(shown)} out of the last {len(verdict.counted)} datapoints"
        f" [{listed}] {verb} {relation} the threshold ({_number(spec.threshold)})"
        f" (minimum {_plural(needed)} for {transition} transition)."
    )


def metric_reason_data(
    spec: MetricAlarmSpec,
    verdict: Verdict,
    datapoints: Sequence[float | None],
    starts: Sequence[float],
    now: float,
) -> str:
    """CloudWatch's StateReasonData (a JSON string) for a metric alarm's verdict."""
    evaluated = [
        {"timestamp": _long_time(starts[i]), "value": value}
        for i, value in reversed(verdict.counted)
    ]
    data: dict[str, Any] = {
        "version": "1.0",
        "queryDate": _long_time(now),
        "startDate": _long_time(starts[verdict.counted[0][0]] if verdict.counted else starts[0]),
    }
    data["statistic" if spec.statistic in STATISTICS else "extendedStatistic"] = spec.statistic
    data.update(
        period=spec.period,
        recentDatapoints=[v for v in datapoints if v is not None],
        threshold=spec.threshold,
        evaluatedDatapoints=evaluated,
    )
    return orjson.dumps(data).decode()


def _spoken_time(seconds: float) -> str:
    """'Friday 22 July, 2022 15:57:45 UTC', as composite alarm reasons say it."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%A %d %B, %Y %H:%M:%S UTC")


# -- the alarms of a runtime ----------------------------------------------------------

ALARM_SCHEMA = """
CREATE TABLE IF NOT EXISTS alarms (
    name        TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    config      TEXT NOT NULL,
    state       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    reason_data TEXT,
    updated     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS alarm_history (
    seq     INTEGER PRIMARY KEY,
    name    TEXT NOT NULL,
    time    REAL NOT NULL,
    kind    TEXT NOT NULL,
    summary TEXT NOT NULL,
    data    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alarm_history_name ON alarm_history (name, time);
"""


class AlarmStore(Store):
    """The alarm tables: each alarm's definition and last state, and the
    history of its transitions. ``Alarms`` keeps the alarms in memory and
    writes through this; the CLI reads it (``read_alarms``)."""

    name = "alarms"
    schema = ALARM_SCHEMA

    async def states(self) -> list[Row]:
        """(name, state, reason, reason_data, updated) of every stored alarm."""
        return await self.rows("SELECT name, state, reason, reason_data, updated FROM alarms")

    async def delete(self, names: Sequence[str]) -> None:
        async with self.transaction() as db:
            await db.executemany("DELETE FROM alarms WHERE name = ?", [(n,) for n in names])

    @property
    def shared(self) -> bool:
        """Whether several runners may write these tables (a PostgreSQL
        state: a cluster); a SQLite file has one runner."""
        return self.dialect.name != "sqlite"

    async def save(self, rows: Sequence[Sequence[Any]]) -> None:
        """Write alarms' definitions (rows of ``_alarm_row``): a new alarm with
        its state, an existing one keeps the state it has in the database
        (the runner evaluating it may have moved it since this one read it)."""
        async with self.transaction() as db:
            await db.executemany(
                "INSERT INTO alarms (name, kind, config, state, reason, reason_data, updated)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, config = excluded.config",
                rows,
            )

    async def save_transitions(
        self, moves: Sequence[Sequence[Any]], history: Sequence[Sequence[Any]], before: float
    ) -> list[str]:
        """New states and their history rows in one transaction; history older
        than ``before`` goes. A move is (state, reason, reason_data, updated,
        name, the state it moves from, that state's time), history one row
        per move. A move is written only if the alarm is still in the state
        it moves from: of two runners moving one alarm from one state, one
        writes (and records) its move and the other learns that it lost.
        The names of the moves not written."""
        lost = []
        async with self.transaction() as db:
            for move, entry in zip(moves, history, strict=True):
                moved = await db.execute(
                    "UPDATE alarms SET state = ?, reason = ?, reason_data = ?, updated = ?"
                    " WHERE name = ? AND state = ? AND updated = ?",
                    move,
                )
                if not moved:
                    lost.append(move[4])
                    continue
                await db.execute(
                    "INSERT INTO alarm_history (name, time, kind, summary, data)"
                    " VALUES (?, ?, ?, ?, ?)",
                    entry,
                )
            await db.execute("DELETE FROM alarm_history WHERE time < ?", (before,))
        return lost

    async def described(self, name: str | None = None) -> list[Row]:
        """(config, state, reason, reason_data, updated) of one alarm or all, by name."""
        query = "SELECT config, state, reason, reason_data, updated FROM alarms"
        arguments: tuple[str, ...] = ()
        if name is not None:
            query += " WHERE name = ?"
            arguments = (name,)
        return await self.rows(query + " ORDER BY name", arguments)

    async def history(self, name: str | None, limit: int) -> list[dict[str, Any]]:
        """DescribeAlarmHistory: newest first."""
        query = "SELECT name, time, kind, summary, data FROM alarm_history"
        arguments: list[Any] = []
        if name is not None:
            query += " WHERE name = ?"
            arguments.append(name)
        query += " ORDER BY time DESC, seq DESC LIMIT ?"
        arguments.append(limit)
        return [
            {
                "AlarmName": alarm,
                "Timestamp": format_epoch(moment, "milliseconds"),
                "HistoryItemType": kind,
                "HistorySummary": summary,
                "HistoryData": data,
            }
            for alarm, moment, kind, summary, data in await self.rows(query, arguments)
        ]


@dataclass(slots=True)
class AlarmState:
    value: str = INSUFFICIENT_DATA
    reason: str = INITIAL_REASON
    reason_data: str | None = None
    updated: float = 0.0

    def describe(self) -> dict[str, Any]:
        """DescribeAlarms' state fields."""
        shown: dict[str, Any] = {
            "StateValue": self.value,
            "StateReason": self.reason,
            "StateUpdatedTimestamp": format_epoch(self.updated, "milliseconds"),
        }
        if self.reason_data is not None:
            shown["StateReasonData"] = self.reason_data
        return shown

    def as_event(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"value": self.value, "reason": self.reason}
        if self.reason_data is not None:
            shown["reasonData"] = self.reason_data
        shown["timestamp"] = _long_time(self.updated)
        return shown


@dataclass
class _Transition:
    spec: AlarmSpec
    old: AlarmState
    new: AlarmState


@dataclass
class Alarm:
    spec: AlarmSpec
    state: AlarmState = field(default_factory=AlarmState)
    #: When it was last put (created or updated) in this run.
    configured: float = 0.0


def alarm_arn(name: str, account: str = DEFAULT_ACCOUNT, region: str = DEFAULT_REGION) -> str:
    return f"arn:aws:cloudwatch:{region}:{account}:alarm:{name}"


def action_rule_name(alarm: str, state: str) -> str:
    """The name of the rule that runs an alarm's actions for ``state``: a rule
    name has at most 64 characters of ``[.-_A-Za-z0-9]``, an alarm name not."""
    readable = re.sub(r"[^.\-_A-Za-z0-9]", "_", alarm)[:32]
    digest = hashlib.sha1(alarm.encode()).hexdigest()[:8]
    return f"alarm-{readable}-{digest}-{_SHORT_STATES[state]}"  # at most 60 characters


_SHORT_STATES = {ALARM: "alarm", OK: "ok", INSUFFICIENT_DATA: "insufficient"}


def _has_rule(bus: Bus, name: str) -> bool:
    return any(rule["Name"] == name for rule in bus.list_rules(name))


def action_pattern(alarm: str, state: str) -> dict[str, Any]:
    return {
        "source": [SOURCE],
        "detail-type": [DETAIL_TYPE],
        "detail": {"alarmName": [alarm], "state": {"value": [state]}},
    }


class AlarmHost(Protocol):
    """What the alarms use of their owner (the ``Runtime``)."""

    @property
    def clock(self) -> Clock: ...

    def bus(self, name: str = ...) -> Bus: ...

    def resource(self, name: str, *, where: str | None = None) -> Target: ...

    async def put_events(
        self, entries: Sequence[Mapping[str, Any]], *, default_bus: str = ...
    ) -> dict[str, Any]: ...


class Alarms:
    """A runtime's alarms (``runtime.alarms``): definitions, states, history and
    the evaluation task. The methods named as CloudWatch's operations
    (``put_metric_alarm``, ``describe_alarms``, ...) are the public API."""

    def __init__(self, host: AlarmHost) -> None:
        self.host = host
        self.clock: Clock = host.clock
        self._alarms: dict[str, Alarm] = {}
        #: The rules of the composite alarms, by name.
        self._rules: dict[str, AlarmRule] = {}
        self.store: MetricStore | None = None
        self._store: AlarmStore | None = None
        self._wake = asyncio.Event()
        #: Evaluation cycles run; alarms evaluated in the last one.
        self.cycles = 0
        self.evaluated = 0
        self._sleeping = False
        self._stopping = False
        #: One at a time: a cycle, a set-state, a put or a delete (a set-state
        #: inside a cycle would be overwritten by the cycle's older verdict).
        self._serial = asyncio.Lock()

    @property
    def idle(self) -> bool:
        """Waiting for the next evaluation with nothing to do before it."""
        return self._sleeping and not self._wake.is_set()

    # -- CloudWatch's operations ------------------------------------------------

    async def put_metric_alarm(
        self, name: str, settings: Mapping[str, Any] | None = None, **options: Any
    ) -> None:
        """PutMetricAlarm from ``settings`` and keyword ``options`` (see
        ``parse_metric_alarm``): a new alarm starts in INSUFFICIENT_DATA, an
        updated one keeps its state."""
        await self.put(parse_metric_alarm(name, {**(settings or {}), **options}))

    async def put_composite_alarm(
        self, name: str, rule: str, settings: Mapping[str, Any] | None = None, **options: Any
    ) -> None:
        """PutCompositeAlarm: ``rule`` over other alarms' states."""
        await self.put(parse_composite_alarm(name, {**(settings or {}), **options, "rule": rule}))

    async def put_declared(self, name: str, settings: Mapping[str, Any]) -> None:
        """A metric or composite alarm from a config declaration."""
        await self.put(parse_alarm(name, settings))

    async def delete_alarms(self, names: Iterable[str]) -> None:
        """DeleteAlarms."""
        for name in names:
            await self.delete(name)

    def describe_alarms(
        self, names: Iterable[str] | None = None, *, prefix: str = "", state: str | None = None
    ) -> list[dict[str, Any]]:
        """DescribeAlarms: every alarm (or those named), with its state."""
        if names is not None:
            return [self.describe(name) for name in names]
        return self.describe_all(prefix=prefix, state=state)

    async def describe_alarm_history(
        self, name: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """DescribeAlarmHistory: state updates, newest first."""
        self._running()
        return await self.history(name, limit)

    async def evaluate_now(self) -> None:
        """Evaluate every alarm now, over the periods up to the last 10-second
        boundary (tests, tools)."""
        self._running()
        await self.evaluate(int(self.clock.time() // 10 * 10), everyone=True)

    def _running(self) -> None:
        if self.store is None:
            raise NotRunningError(
                "metrics are kept while the runtime runs"
                " (pipelines.metrics.MetricStore.open reads a state database otherwise)"
            )

    # -- definitions -------------------------------------------------------------

    def names(self) -> list[str]:
        return list(self._alarms)

    def spec(self, name: str) -> AlarmSpec:
        return self._get(name).spec

    def configured(self, name: str) -> float:
        """When the alarm was last put (created or updated) since the runtime
        started (DescribeAlarms' AlarmConfigurationUpdatedTimestamp)."""
        return self._get(name).configured

    def children(self, name: str) -> set[str]:
        """The alarms a composite alarm's rule names (none for a metric alarm)."""
        spec = self._get(name).spec
        return set(spec.rule.names) if isinstance(spec, CompositeAlarmSpec) else set()

    def _get(self, name: str) -> Alarm:
        try:
            return self._alarms[name]
        except KeyError:
            raise MetricError("ResourceNotFound", f"no alarm named {name!r}") from None

    def check(self, spec: AlarmSpec) -> None:
        """Refuse an alarm whose bus or action resources do not exist, or a
        composite alarm whose rule names an alarm that does not exist or makes
        a loop."""
        self.check_resources(spec)
        if not isinstance(spec, CompositeAlarmSpec):
            return  # no loop goes through a metric alarm
        absent = sorted(n for n in spec.rule.names if n not in self._alarms and n != spec.name)
        if absent:
            raise ConfigError(_where(spec.name) / "rule", f"no alarm named {absent[0]!r} exists")
        cycle = find_cycle({**self._rules, spec.name: spec.rule})
        if cycle is not None:
            raise ConfigError(
                _where(spec.name) / "rule",
                f"composite alarms refer to each other in a loop: {' -> '.join(cycle)}",
            )

    def check_resources(self, spec: AlarmSpec) -> None:
        """ResourceNotFoundError when the alarm's bus or an action's resource
        does not exist (an action's error begins "alarm NAME actions")."""
        self.host.bus(spec.bus)
        for targets in spec.actions.values():
            for resource in targets:
                self.host.resource(resource, where=f"alarm {spec.name} actions")

    async def put(self, spec: AlarmSpec) -> None:
        """Create an alarm (in INSUFFICIENT_DATA) or update one (keeping its state)."""
        async with self._serial:
            self.check(spec)
            alarm = self._alarms.get(spec.name)
            if alarm is not None and alarm.spec.bus != spec.bus:
                await self._drop_actions(alarm.spec)  # its action rules are on the old bus
            await self._sync_actions(spec)
            now = self.clock.time()
            if alarm is None:
                alarm = self._alarms[spec.name] = Alarm(spec, AlarmState(updated=now))
            else:
                alarm.spec = spec
            alarm.configured = now
            self._rules.pop(spec.name, None)
            if isinstance(spec, CompositeAlarmSpec):
                self._rules[spec.name] = spec.rule
            if self._store is not None:
                await self._save_alarms([alarm])
        self._wake.set()

    async def delete(self, name: str) -> None:
        async with self._serial:
            alarm = self._get(name)
            users = [other for other, rule in self._rules.items() if name in rule.names]
            if users:
                raise MetricError(
                    "InvalidParameterValue",
                    f"alarm {name} is in the rule of composite alarm {users[0]}: change that first",
                )
            del self._alarms[name]
            self._rules.pop(name, None)
            await self._drop_actions(alarm.spec)
            if self._store is not None:
                await self._store.delete([name])

    async def _sync_actions(self, spec: AlarmSpec) -> None:
        """Actions are rules on the alarm's bus matching its state changes."""
        bus = self.host.bus(spec.bus)
        for state in STATE_VALUES:
            rule = action_rule_name(spec.name, state)
            targets = spec.actions.get(state, ())
            if not targets:
                if _has_rule(bus, rule):
                    await bus.delete_rule(rule, force=True)
                continue
            bus.put_rule(
                rule,
                pattern=action_pattern(spec.name, state),
                state="ENABLED" if spec.actions_enabled else "DISABLED",
                description=f"actions of alarm {spec.name} on {state}",
            )
            wanted = [{"id": f"action-{i}", "resource": r} for i, r in enumerate(targets, 1)]
            stale = [
                t["id"]
                for t in bus.list_targets_by_rule(rule)
                if t["id"] not in {w["id"] for w in wanted}
            ]
            if stale:
                await bus.remove_targets(rule, stale)
            await bus.put_targets(rule, wanted)

    async def _drop_actions(self, spec: AlarmSpec) -> None:
        bus = self.host.bus(spec.bus)
        for state in STATE_VALUES:
            rule = action_rule_name(spec.name, state)
            if _has_rule(bus, rule):
                await bus.delete_rule(rule, force=True)

    # -- state database ----------------------------------------------------------------

    async def open(self, path: Location | None, store: MetricStore) -> None:
        """Open the alarm tables (in memory without a state database) and take
        back the state of each alarm that already existed."""
        self.store = store
        self._store = await AlarmStore.open(path, self.clock)
        rows = await self._store.states()
        for name, value, reason, data, updated in rows:
            alarm = self._alarms.get(name)
            if alarm is not None:
                alarm.state = AlarmState(value, reason, data, updated)
        gone = [row[0] for row in rows if row[0] not in self._alarms]
        await self._store.delete(gone)
        await self._save_alarms(list(self._alarms.values()))

    async def reload_states(self) -> None:
        """Take each alarm's state from the store again: in a cluster, the
        runner that becomes the evaluating one continues from the last
        one's transitions, not from what it read at its start."""
        if self._store is None:
            return
        for name, value, reason, data, updated in await self._store.states():
            alarm = self._alarms.get(name)
            if alarm is not None:
                alarm.state = AlarmState(value, reason, data, updated)

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None

    async def _save_alarms(self, alarms: Sequence[Alarm]) -> None:
        """Write alarms' definitions and states (new or changed alarms)."""
        assert self._store is not None
        await self._store.save([_alarm_row(a) for a in alarms])

    async def _save_transitions(self, transitions: Sequence[_Transition]) -> list[_Transition]:
        """Write new states and their history in one transaction; the
        transitions written. One whose alarm is no longer in the state it
        moved from (another runner moved it meanwhile) is not: that alarm
        takes its stored state back."""
        assert self._store is not None
        lost = set(
            await self._store.save_transitions(
                [
                    (
                        t.new.value,
                        t.new.reason,
                        t.new.reason_data,
                        t.new.updated,
                        t.spec.name,
                        t.old.value,
                        t.old.updated,
                    )
                    for t in transitions
                ],
                [_history_row(t) for t in transitions],
                self.clock.time() - HISTORY_DAYS * 86_400,
            )
        )
        if lost:
            log.warning(
                "alarms moved by another runner meanwhile, their transitions here dropped: %s",
                ", ".join(sorted(lost)),
            )
            for name, value, reason, data, updated in await self._store.states():
                alarm = self._alarms.get(name)
                if name in lost and alarm is not None:
                    alarm.state = AlarmState(value, reason, data, updated)
        return [t for t in transitions if t.spec.name not in lost]

    # -- evaluation -------------------------------------------------------------------

    async def run(self) -> None:
        """The evaluation task: every minute, or every 10 seconds while an alarm
        has a period under a minute, at the boundary, until ``stop_running``."""
        while not self._stopping:
            cadence = min((spec.cadence for spec in self._metric_specs()), default=60)
            now = self.clock.time()
            tick = (now // cadence + 1) * cadence
            timer = self.clock.call_later(tick - now, self._wake.set)
            self._sleeping = True
            try:
                await self._wake.wait()  # the tick, a new alarm (cadence) or a stop
            finally:
                self._sleeping = False
                self._wake.clear()
                timer.cancel()
            if self.clock.time() >= tick and not self._stopping:
                try:
                    await self.evaluate(int(tick))
                except Exception:
                    log.exception("evaluating alarms failed; trying again at the next tick")

    def stop_running(self) -> None:
        """Make ``run`` return once the cycle under way has published."""
        self._stopping = True
        self._wake.set()

    def _metric_alarms(self) -> list[Alarm]:
        return [a for a in self._alarms.values() if isinstance(a.spec, MetricAlarmSpec)]

    def _metric_specs(self) -> list[MetricAlarmSpec]:
        return [a.spec for a in self._alarms.values() if isinstance(a.spec, MetricAlarmSpec)]

    async def evaluate(self, tick: int, *, everyone: bool = False) -> list[_Transition]:
        """One evaluation cycle at ``tick`` (a multiple of 10 seconds): the metric
        alarms due (``everyone``: all), read by group, then the composite alarms."""
        async with self._serial:
            return await self._evaluate(tick, everyone)

    async def _evaluate(self, tick: int, everyone: bool) -> list[_Transition]:
        assert self.store is not None
        groups: dict[tuple[int, str, int], list[Alarm]] = {}
        for alarm in self._metric_alarms():
            spec = alarm.spec
            assert isinstance(spec, MetricAlarmSpec)
            if everyone or tick % spec.cadence == 0:
                size = evaluation_range(spec.evaluation_periods)
                groups.setdefault((spec.period, spec.statistic, size), []).append(alarm)
        now = self.clock.time()
        # At the tick, the counts since the last flush belong to the period
        # that just ended (later, as evaluate_alarms runs, to now's).
        await self.store.flush(harvest_time=tick - 1e-3 if now - tick < 1 else now)
        transitions: list[_Transition] = []
        evaluated = 0
        for (period, statistic, size), alarms in groups.items():
            series = await self.store.read_many(
                {a.spec.key for a in alarms if isinstance(a.spec, MetricAlarmSpec)},
                tick,
                period,
                size,
                statistic,
            )
            starts = [float(tick - (size - i) * period) for i in range(size)]
            for alarm in alarms:
                spec = alarm.spec
                assert isinstance(spec, MetricAlarmSpec)
                found = self._judge(alarm, series[spec.key], starts, now)
                if found is not None:
                    transitions.append(found)
                evaluated += 1
            await asyncio.sleep(0)  # many groups must not hold the loop
        transitions += self._cascade(transitions, now)
        self.cycles += 1
        self.evaluated = evaluated
        await self._publish(transitions)
        return transitions

    def _judge(
        self, alarm: Alarm, datapoints: list[float | None], starts: list[float], now: float
    ) -> _Transition | None:
        spec = alarm.spec
        assert isinstance(spec, MetricAlarmSpec)
        verdict = judge(
            datapoints,
            threshold=spec.threshold,
            comparison_operator=spec.comparison_operator,
            evaluation_periods=spec.evaluation_periods,
            datapoints_to_alarm=spec.datapoints_to_alarm,
            treat_missing_data=spec.treat_missing_data,
        )
        if verdict.state is None or verdict.state == alarm.state.value:
            return None
        new = AlarmState(
            verdict.state,
            metric_reason(spec, verdict, starts, alarm.state.value),
            None
            if verdict.state == INSUFFICIENT_DATA and not verdict.counted
            else metric_reason_data(spec, verdict, datapoints, starts, now),
            now,
        )
        return self._move(alarm, new)

    def _move(self, alarm: Alarm, new: AlarmState) -> _Transition:
        old, alarm.state = alarm.state, new
        return _Transition(alarm.spec, old, new)

    def _cascade(
        self, changed: Sequence[_Transition], now: float, *, keep: str | None = None
    ) -> list[_Transition]:
        """Evaluate the composite alarms (but ``keep``), children first, after
        the alarms in ``changed`` moved."""
        moved = {t.spec.name: t for t in changed}
        states = {name: a.state.value for name, a in self._alarms.items()}
        found: list[_Transition] = []
        for alarm in self._composites_in_order():
            spec = alarm.spec
            assert isinstance(spec, CompositeAlarmSpec)
            value = ALARM if spec.rule.evaluate(states) else OK
            if value == alarm.state.value or spec.name == keep:
                continue
            triggering = [moved[n] for n in sorted(spec.rule.names) if n in moved]
            if alarm.state.reason == INITIAL_REASON:
                reason = (
                    f"{alarm_arn(spec.name)} was created and its alarm rule evaluates to {value}"
                )
            elif triggering:
                first = triggering[0]
                reason = (
                    f"{alarm_arn(first.spec.name)} transitioned to {first.new.value}"
                    f" at {_spoken_time(first.new.updated)}"
                )
            else:  # back from set_alarm_state, or its rule changed
                reason = f"{alarm_arn(spec.name)} alarm rule evaluates to {value}"
            data = {
                "triggeringAlarms": [
                    {
                        "arn": alarm_arn(t.spec.name),
                        "state": {"value": t.new.value, "timestamp": _long_time(t.new.updated)},
                    }
                    for t in triggering
                ]
            }
            new = AlarmState(value, reason, orjson.dumps(data).decode(), now)
            transition = self._move(alarm, new)
            moved[spec.name] = transition
            states[spec.name] = value
            found.append(transition)
        return found

    def _composites_in_order(self) -> list[Alarm]:
        """Composite alarms, each after the composites its rule names (no
        recursion: a chain may be long)."""
        ordered: list[Alarm] = []
        placed: set[str] = set()
        for root in sorted(self._rules):
            stack = [(root, False)]
            while stack:
                name, children_done = stack.pop()
                if name in placed:
                    continue
                if children_done:
                    placed.add(name)
                    ordered.append(self._alarms[name])
                    continue
                stack.append((name, True))
                for child in sorted(self._rules[name].names, reverse=True):
                    if child in self._rules and child not in placed:
                        stack.append((child, False))
        return ordered

    async def set_alarm_state(
        self, name: str, value: str, reason: str, reason_data: str | None = None
    ) -> None:
        """SetAlarmState: put an alarm in ``value`` until its next evaluation (for
        testing actions and routes); composites over it follow at once."""
        self._running()
        alarm = self._get(name)
        if value not in STATE_VALUES:
            raise MetricError(
                "InvalidParameterValue", f"StateValue must be one of {', '.join(STATE_VALUES)}"
            )
        if not isinstance(reason, str) or len(reason) > 1023:
            raise MetricError("InvalidParameterValue", "StateReason has at most 1023 characters")
        if reason_data is not None:
            try:
                orjson.loads(reason_data)
            except orjson.JSONDecodeError:
                raise MetricError(
                    "InvalidFormat", "Data was not syntactically valid JSON"
                ) from None
        async with self._serial:
            now = self.clock.time()
            transitions: list[_Transition] = []
            if value != alarm.state.value:
                transitions.append(self._move(alarm, AlarmState(value, reason, reason_data, now)))
            # Composites over it follow; one set itself keeps what it was given.
            transitions += self._cascade(transitions, now, keep=name)
            await self._publish(transitions)

    async def _publish(self, transitions: Sequence[_Transition]) -> None:
        """Put one event per transition on its alarm's bus, then save the new
        states and history. In that order a crash between the two announces a
        transition again after the restart rather than never.

        When several runners share the alarms (a cluster), the new states are
        saved first, each only if its alarm is still in the state it moves
        from, and only the transitions saved are announced: two runners
        moving one alarm at once (a SetAlarmState on one while the other
        evaluates) never both announce it. A crash between the two then
        loses the announcement instead (at most once)."""
        if self._store is None or not transitions:
            return
        if self._store.shared:
            transitions = await self._save_transitions(transitions)
        entries: dict[str, list[dict[str, Any]]] = {}
        for t in transitions:
            entries.setdefault(t.spec.bus, []).append(_event_entry(t))
            log.info("alarm %s: %s -> %s: %s", t.spec.name, t.old.value, t.new.value, t.new.reason)
        for bus, batch in entries.items():
            result = await self.host.put_events(batch, default_bus=bus)
            if result["FailedEntryCount"]:
                failures = [e for e in result["Entries"] if "ErrorCode" in e]
                log.error(
                    "%d alarm state-change events not put on bus %s: %s",
                    len(failures),
                    bus,
                    failures[0],
                )
        if not self._store.shared:
            await self._save_transitions(transitions)

    # -- describing -----------------------------------------------------------------

    def describe(self, name: str) -> dict[str, Any]:
        return describe_alarm(self._get(name).spec, self._get(name).state)

    def describe_all(self, *, prefix: str = "", state: str | None = None) -> list[dict[str, Any]]:
        return [
            describe_alarm(a.spec, a.state)
            for name, a in sorted(self._alarms.items())
            if name.startswith(prefix) and (state is None or a.state.value == state)
        ]

    async def history(self, name: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        assert self._store is not None
        return await self._store.history(name, limit)


def _event_entry(t: _Transition) -> dict[str, Any]:
    spec = t.spec
    configuration = (
        spec.configuration() if isinstance(spec, MetricAlarmSpec | CompositeAlarmSpec) else {}
    )
    detail = {
        "alarmName": spec.name,
        "state": t.new.as_event(),
        "previousState": t.old.as_event(),
        "configuration": configuration,
    }
    return {
        "Source": SOURCE,
        "DetailType": DETAIL_TYPE,
        "Detail": orjson.dumps(detail).decode(),
        "Resources": [alarm_arn(spec.name)],
        "Time": t.new.updated,
    }


def describe_alarm(spec: AlarmSpec, state: AlarmState) -> dict[str, Any]:
    """DescribeAlarms' fields for one alarm."""
    shown: dict[str, Any] = {
        "AlarmName": spec.name,
        "AlarmArn": alarm_arn(spec.name),
        "AlarmDescription": spec.description,
        "ActionsEnabled": spec.actions_enabled,
        "AlarmActions": list(spec.actions.get(ALARM, ())),
        "OKActions": list(spec.actions.get(OK, ())),
        "InsufficientDataActions": list(spec.actions.get(INSUFFICIENT_DATA, ())),
        "EventBusName": spec.bus,
        **state.describe(),
    }
    if isinstance(spec, CompositeAlarmSpec):
        shown["AlarmRule"] = spec.rule.text
        return shown
    assert isinstance(spec, MetricAlarmSpec)
    namespace, metric, dims = spec.key
    shown.update(
        Namespace=namespace,
        MetricName=metric,
        Dimensions=[{"Name": k, "Value": v} for k, v in dims],
        Period=spec.period,
        EvaluationPeriods=spec.evaluation_periods,
        Threshold=spec.threshold,
        ComparisonOperator=spec.comparison_operator,
    )
    if "datapoints_to_alarm" in spec.written:
        shown["DatapointsToAlarm"] = spec.datapoints_to_alarm
    if "treat_missing_data" in spec.written:
        shown["TreatMissingData"] = spec.treat_missing_data
    shown["Statistic" if spec.statistic in STATISTICS else "ExtendedStatistic"] = spec.statistic
    return shown


def _alarm_row(alarm: Alarm) -> tuple[Any, ...]:
    spec, state = alarm.spec, alarm.state
    kind = "composite" if isinstance(spec, CompositeAlarmSpec) else "metric"
    config = orjson.dumps(describe_alarm(spec, AlarmState())).decode()
    return (spec.name, kind, config, state.value, state.reason, state.reason_data, state.updated)


def _history_row(t: _Transition) -> tuple[Any, ...]:
    def shown(state: AlarmState) -> dict[str, Any]:
        item = {"stateValue": state.value, "stateReason": state.reason}
        if state.reason_data is not None:
            item["stateReasonData"] = state.reason_data
        return item

    data = {"version": "1.0", "oldState": shown(t.old), "newState": shown(t.new)}
    summary = f"Alarm updated from {t.old.value} to {t.new.value}"
    return (t.spec.name, t.new.updated, "StateUpdate", summary, orjson.dumps(data).decode())


async def read_alarms(path: str | Path, name: str | None = None) -> list[dict[str, Any]]:
    """The alarms a pipeline's state database holds, with their last state,
    whether the pipeline runs or not (what ``pipelines alarms`` shows)."""
    async with AlarmStore.existing(path) as store:
        rows = await store.described(name)
    described = []
    for config, value, reason, data, updated in rows:
        # The stored config is a description in the initial state: put the state in.
        described.append(
            {**orjson.loads(config), **AlarmState(value, reason, data, updated).describe()}
        )
    return described


async def read_alarm_history(
    path: str | Path, name: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    async with AlarmStore.existing(path) as store:
        return await store.history(name, limit)
