"""Schedule expressions: AWS's ``cron(...)``, ``rate(...)`` and ``at(...)``.

``parse_schedule`` turns a rule's schedule (an expression, or a mapping with an
expression, a time zone, start and end dates, a flexible window and a
missed-run policy) into a ``Schedule`` that answers "when next?" in epoch
seconds. The ``Scheduler`` (``pipelines.scheduler``) keeps the answers in a heap.

Cron arithmetic is croniter's. AWS's six fields are validated here first (with
AWS's ranges, names and wildcards, and its rule that one of day-of-month and
day-of-week is ``?``) and translated: day-of-week numbers are 1-7 from Sunday
in AWS and 0-6 in croniter, ``5L`` (last Thursday) is croniter's ``L4``.

Cron schedules are evaluated on the wall clock of their time zone. Across a
daylight-saving change a wall-clock time that does not exist (spring forward)
is skipped, and one that occurs twice (fall back) fires once, at its first
occurrence: what EventBridge Scheduler documents. Rates are fixed durations
(a day is 24 hours) counted from the schedule's anchor.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterError, croniter

from pipelines.errors import ConfigError, Where
from pipelines.targets import check_keys

SKIP = "skip"
FIRE_ONCE = "fire_once"
MISSED_POLICIES = (SKIP, FIRE_ONCE)
SCHEDULE_KEYS = (
    "expression",
    "timezone",
    "start_date",
    "end_date",
    "flexible_window_minutes",
    "missed_runs",
)
# Croniter counts years up to 2099 (AWS accepts up to 2199).
MAX_YEAR = 2099
# A cron that matches rarely (29 February on a Monday) may need many wall-clock
# candidates that DST makes invalid; bound the search so a bad one cannot hang.
_MAX_CANDIDATES = 10_000
_EPSILON = 1e-6

_MONTHS = {
    name: number
    for number, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1
    )
}
_DAYS = {
    name: number for number, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"), 1)
}
_RATE_UNITS = {"minute": 60, "hour": 3600, "day": 86400}
# No rate AWS runs is longer: its documentation gives no upper bound, but a
# schedule of more than a century is a mistake, and a longer one soon counts
# past the last time a datetime holds (the year 9999).
_MAX_RATE_YEARS = 100
_MAX_RATE_SECONDS = _MAX_RATE_YEARS * 365 * 86400
# PutRule's (and EventBridge Scheduler's) limit on a ScheduleExpression.
MAX_EXPRESSION_LENGTH = 256
# The times a schedule may name or reach: a day inside datetime's years, so
# that the wall time of any of them, in any time zone, is still a datetime.
_FIRST_INSTANT = datetime(1, 1, 2, tzinfo=UTC).timestamp()
_LAST_INSTANT = datetime(9999, 12, 30, tzinfo=UTC).timestamp()
_RANGE = "0001-01-02 to 9999-12-30 UTC"
_WRAPPED = re.compile(r"(cron|rate|at)\((.*)\)", re.DOTALL)
# ASCII digits only: \d (and str.isdigit) also take "٣" and "²".
_AT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}", re.ASCII)


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: Mapping[str, int]
    expected: str


_FIELDS = (
    _Field("minutes", 0, 59, {}, "0-59"),
    _Field("hours", 0, 23, {}, "0-23"),
    _Field("day-of-month", 1, 31, {}, "1-31"),
    _Field("month", 1, 12, _MONTHS, "1-12 or JAN-DEC"),
    _Field("day-of-week", 1, 7, _DAYS, "1-7 or SUN-SAT"),
    _Field("year", 1970, MAX_YEAR, {}, f"1970-{MAX_YEAR}"),
)
DOM, DOW = 2, 4


class _CronSyntax(ValueError):
    """A cron field is invalid (message names the field)."""


def _is_number(text: str) -> bool:
    """Whether ``text`` is a number written in ASCII digits (``str.isdigit``
    alone also takes "²", which ``int`` refuses)."""
    return text.isascii() and text.isdigit()


def _value(field: _Field, text: str) -> int:
    upper = text.upper()
    if upper in field.names:
        return field.names[upper]
    if not _is_number(text):
        raise _CronSyntax(f"{field.name}: {text!r} is not a value ({field.expected})")
    number = int(text)
    if not field.low <= number <= field.high:
        if field.name == "year" and number > MAX_YEAR:
            raise _CronSyntax(f"year: {number} is after {MAX_YEAR}, the last year supported")
        raise _CronSyntax(f"{field.name}: {number} is outside {field.low}-{field.high}")
    return number


def _expand(field: _Field, text: str) -> list[int]:
    """Values of a plain field: lists of ``*``, ``a``, ``a-b``, with ``/step``."""
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise _CronSyntax(f"{field.name}: empty item in {text!r}")
        body, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not _is_number(step_text) or int(step_text) == 0:
                raise _CronSyntax(
                    f"{field.name}: step {step_text!r} in {item!r} must be a positive integer"
                )
            step = int(step_text)
        if body == "*":
            low, high = field.low, field.high
        elif "-" in body:
            first, _, last = body.partition("-")
            low, high = _value(field, first), _value(field, last)
            if low > high:
                raise _CronSyntax(f"{field.name}: range {body!r} runs backwards")
        else:
            low = _value(field, body)
            # "a/n" starts at a and steps to the end of the field, as AWS's 0/15.
            high = field.high if slash else low
        values.update(range(low, high + 1, step))
    return sorted(values)


def _day_of_month(text: str) -> str:
    upper = text.upper()
    if upper == "L":
        return "L"
    if upper == "LW":
        raise _CronSyntax("day-of-month: LW (the last weekday) is not supported; use L or 15W")
    if upper.endswith("W"):
        day = upper[:-1]
        if not _is_number(day) or not 1 <= int(day) <= 31:
            raise _CronSyntax(f"day-of-month: {text!r}: W follows a day 1-31, as in 15W")
        return f"{int(day)}W"
    if "L" in upper or "W" in upper:
        raise _CronSyntax(f"day-of-month: {text!r}: L and W stand alone, as in L or 15W")
    return ",".join(map(str, _expand(_FIELDS[DOM], text)))


def _day_of_week(text: str) -> str:
    """Translate to croniter's day numbers (0 = Sunday)."""
    field = _FIELDS[DOW]
    upper = text.upper()
    if upper == "L":  # the last day of the week: Saturday
        return "6"
    if "#" in upper:
        if "," in upper:
            raise _CronSyntax(f"day-of-week: {text!r}: a # day stands alone, as in 2#1")
        day, _, nth = upper.partition("#")
        if not _is_number(nth) or not 1 <= int(nth) <= 5:
            raise _CronSyntax(f"day-of-week: {text!r}: # is followed by 1-5, as in 2#1")
        return f"{_value(field, day) - 1}#{int(nth)}"
    if upper.endswith("L"):
        return f"L{_value(field, upper[:-1]) - 1}"
    if "L" in upper:  # no day name holds an L
        raise _CronSyntax(f"day-of-week: {text!r}: L stands alone or follows a day, as in 6L")
    return ",".join(str(day - 1) for day in _expand(field, text))


def translate_cron(body: str) -> str:
    """AWS's six cron fields -> croniter's seven (minute hour dom month dow second year).

    Raises ``ValueError`` with a message naming the field.
    """
    fields = body.split()
    if len(fields) != 6:
        raise _CronSyntax(
            f"a cron expression has 6 fields (minutes hours day-of-month month day-of-week"
            f" year), this one has {len(fields)}"
        )
    minutes, hours, dom, month, dow, year = fields
    if (dom == "?") == (dow == "?"):
        raise _CronSyntax(
            "give one of day-of-month and day-of-week, and '?' in the other"
            " (for example cron(0 12 * * ? *) or cron(0 12 ? * MON *))"
        )
    for index, text in ((0, minutes), (1, hours), (3, month), (5, year)):
        if "?" in text:
            raise _CronSyntax(
                f"{_FIELDS[index].name}: '?' is allowed only in day-of-month or day-of-week"
            )
    parts = [
        ",".join(map(str, _expand(_FIELDS[0], minutes))),
        ",".join(map(str, _expand(_FIELDS[1], hours))),
        "*" if dom == "?" else _day_of_month(dom),
        ",".join(map(str, _expand(_FIELDS[3], month))),
        "*" if dow == "?" else _day_of_week(dow),
        "0",
        "*" if year == "*" else ",".join(map(str, _expand(_FIELDS[5], year))),
    ]
    return " ".join(parts)


def zone(where: Where, name: object) -> tzinfo:
    if name in (None, "UTC", "Etc/UTC"):
        return UTC
    if not isinstance(name, str):
        raise ConfigError(where, f"a time zone is an IANA name such as Europe/Berlin, not {name!r}")
    try:
        return ZoneInfo(name)
    # A name that is a directory of the zone database ("Europe") or too long
    # for a file name is an OSError from the lookup, not ZoneInfoNotFoundError.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(
            where, f"unknown time zone {name!r}: use an IANA name such as Europe/Berlin or UTC"
        ) from None


def _instant(where: Where, value: object, zone: tzinfo) -> float | None:
    """An ISO 8601 date-time (or datetime) as epoch seconds; naive ones are in ``zone``."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(where, f"{value!r} is not an ISO 8601 date-time") from None
    if not isinstance(value, datetime):
        raise ConfigError(where, f"expected an ISO 8601 date-time, not {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    try:
        return _within_range(value.timestamp(), value.isoformat())
    except (_CronSyntax, OverflowError):
        raise ConfigError(
            where, f"{value.isoformat()} is outside the times a schedule can name ({_RANGE})"
        ) from None


def _wall_to_epoch(wall: datetime, zone: tzinfo) -> float | None:
    """Epoch seconds of a naive wall-clock time in ``zone``: the first occurrence
    when it occurs twice, None when it does not exist (a DST gap)."""
    seconds = wall.replace(tzinfo=zone, fold=0).timestamp()
    if datetime.fromtimestamp(seconds, zone).replace(tzinfo=None, fold=0) != wall.replace(fold=0):
        return None
    return seconds


def _wall(seconds: float, zone: tzinfo) -> datetime:
    return datetime.fromtimestamp(seconds, zone).replace(tzinfo=None)


@dataclass(frozen=True, slots=True, eq=False)
class Schedule:
    """A parsed schedule. Times are epoch seconds.

    A rate's occurrences are ``anchor + k * period``: the anchor is the start
    date, or the moment the rule was first scheduled (a rate schedule without a
    start date fires at once, as EventBridge Scheduler's does).
    """

    expression: str
    kind: str  # "cron", "rate" or "at"
    zone: tzinfo
    start: float | None = None
    end: float | None = None
    flexible_window: float = 0.0  # seconds
    missed_runs: str = SKIP
    period: float = 0.0  # rate
    at: float = 0.0  # at
    cron: str = ""  # croniter's expression
    #: What a flexible window's moment is drawn from, with the run's time
    #: (``flexible_delay``); empty: the scheduled rule's ARN.
    identity: str = ""
    #: Under ``fire_once``, a missed run older than this many seconds is
    #: dropped, not fired (None: however old). EventBridge Scheduler's
    #: schedules set their retry policy's maximum event age.
    late_limit: float | None = None
    #: What decides the firing times; a change starts the schedule afresh.
    #: Worked out once: every mark the scheduler saves carries it.
    fingerprint: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fingerprint", f"{self.expression}|{self.timezone}|{self.start}")

    @property
    def timezone(self) -> str:
        return str(getattr(self.zone, "key", "UTC"))

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {"expression": self.expression, "timezone": self.timezone}
        if self.start is not None:
            described["start_date"] = datetime.fromtimestamp(self.start, UTC).isoformat()
        if self.end is not None:
            described["end_date"] = datetime.fromtimestamp(self.end, UTC).isoformat()
        if self.flexible_window:
            described["flexible_window_minutes"] = int(self.flexible_window // 60)
        described["missed_runs"] = self.missed_runs
        return described

    def next_after(self, moment: float, anchor: float) -> float | None:
        """The first occurrence strictly after ``moment`` (within start and end), or None."""
        if self.start is not None and moment < self.start:
            moment = self.start - _EPSILON
        if self.kind == "rate":
            steps = math.floor((moment - anchor) / self.period) + 1 if moment >= anchor else 0
            found: float | None = anchor + steps * self.period
        elif self.kind == "at":
            found = self.at if self.at > moment else None
        else:
            found = self._cron_after(moment)
        if found is None or (self.end is not None and found > self.end):
            return None
        # Past the last time a datetime holds (a rate from a start in 9999).
        return found if found <= _LAST_INSTANT else None

    def at_or_after(self, moment: float, anchor: float) -> float | None:
        return self.next_after(moment - _EPSILON, anchor)

    def latest_before(self, moment: float, anchor: float) -> float | None:
        """The last occurrence strictly before ``moment`` (within start and end), or None."""
        if self.end is not None and moment > self.end:
            moment = self.end + _EPSILON
        if self.kind == "rate":
            if moment <= anchor:
                return None
            found: float | None = (
                anchor + math.ceil((moment - anchor) / self.period - 1) * self.period
            )
        elif self.kind == "at":
            found = self.at if self.at < moment else None
        else:
            found = self._cron_before(moment)
        if found is None or (self.start is not None and found < self.start):
            return None
        return found

    def _iterator(self, wall: datetime) -> croniter:
        # Search as far as the last year croniter knows: a year list far ahead
        # must still be found.
        return croniter(self.cron, wall, max_years_between_matches=MAX_YEAR - 1970 + 1)

    def _cron_after(self, moment: float) -> float | None:
        wall = _wall(moment, self.zone)
        iterator = self._iterator(wall)
        try:
            for _ in range(_MAX_CANDIDATES):
                candidate = iterator.get_next(datetime)
                seconds = _wall_to_epoch(candidate, self.zone)
                # A candidate before ``moment`` is the first occurrence of a
                # repeated (fall-back) hour we are already past: it fired then.
                if seconds is not None and seconds > moment:
                    return seconds
        except (CroniterBadDateError, CroniterError):
            return None  # no further match (a year list in the past)
        return None

    def _cron_before(self, moment: float) -> float | None:
        local = datetime.fromtimestamp(moment, self.zone)
        wall = local.replace(tzinfo=None, fold=0)
        if local.fold:
            # In the second pass of a repeated (fall-back) hour the whole hour
            # already fired in its first pass: search back from its end.
            shift = local.replace(fold=0).utcoffset() - local.utcoffset()  # type: ignore[operator]
            wall += shift
        iterator = self._iterator(wall)
        try:
            for _ in range(_MAX_CANDIDATES):
                candidate = iterator.get_prev(datetime)
                seconds = _wall_to_epoch(candidate, self.zone)
                if seconds is not None and seconds < moment:
                    return seconds
        except (CroniterBadDateError, CroniterError):
            return None
        return None


def _parse_rate(body: str) -> float:
    # AWS takes exactly "value unit": one space, no padding, a lower-case unit
    # (rate( 10 minutes ) and rate(10 MINUTES) are refused, as recorded).
    parts = body.split(" ")
    if len(parts) != 2 or not _is_number(parts[0]):
        raise _CronSyntax("a rate is rate(value unit), as in rate(5 minutes)")
    value, unit = int(parts[0]), parts[1]
    if value == 0:
        raise _CronSyntax("the rate's value must be a positive integer")
    singular = unit.removesuffix("s")
    if singular not in _RATE_UNITS:
        raise _CronSyntax(f"unknown rate unit {parts[1]!r}: use minute(s), hour(s) or day(s)")
    if (value == 1) != (unit == singular):
        expected = singular if value == 1 else singular + "s"
        raise _CronSyntax(f"write rate({value} {expected}): the unit is singular for 1 only")
    seconds = value * _RATE_UNITS[singular]
    if seconds > _MAX_RATE_SECONDS:
        most = _MAX_RATE_SECONDS // _RATE_UNITS[singular]
        raise _CronSyntax(
            f"the rate's value is at most {most} {singular}s ({_MAX_RATE_YEARS} years)"
        )
    return seconds


def _within_range(seconds: float, text: str) -> float:
    """``seconds``, unless the time is outside those a schedule counts with."""
    if not _FIRST_INSTANT <= seconds <= _LAST_INSTANT:
        raise _CronSyntax(f"{text} is outside the times a schedule can name ({_RANGE})")
    return seconds


def parse_expression(where: Where, expression: object, zone: tzinfo = UTC) -> Schedule:
    """Parse a bare ``cron(...)``, ``rate(...)`` or ``at(...)`` expression."""
    if not isinstance(expression, str):
        raise ConfigError(
            where, f"a schedule is cron(...), rate(...) or at(...), not {expression!r}"
        )
    if len(expression) > MAX_EXPRESSION_LENGTH:
        # AWS's own words for a value past a length constraint.
        raise ConfigError(
            where,
            f"an expression of {len(expression)} characters failed to satisfy constraint:"
            f" Member must have length less than or equal to {MAX_EXPRESSION_LENGTH}",
        )
    match = _WRAPPED.fullmatch(expression)  # AWS refuses " rate(10 minutes)" too
    if match is None:
        raise ConfigError(
            where,
            f"{expression!r} is not a schedule: use cron(minutes hours day-of-month month"
            " day-of-week year), rate(value unit) or at(yyyy-mm-ddThh:mm:ss)",
        )
    kind, body = match.groups()
    try:
        if kind == "rate":
            return Schedule(expression, kind, zone, period=_parse_rate(body))
        if kind == "at":
            if not _AT.fullmatch(body.strip()):
                raise _CronSyntax("a one-time schedule is at(yyyy-mm-ddThh:mm:ss)")
            moment = datetime.fromisoformat(body.strip()).replace(tzinfo=zone)
            return Schedule(expression, kind, zone, at=_within_range(moment.timestamp(), body))
        cron = translate_cron(body)
        croniter(cron)  # croniter's own checks (a day that no month has, ...)
    except (_CronSyntax, CroniterBadCronError, ValueError) as exc:
        raise ConfigError(where, f"{expression}: {exc}") from None
    return Schedule(expression, kind, zone, cron=cron)


def parse_schedule(where: Where | str, spec: object) -> Schedule:
    """A rule's schedule: an expression string, or a mapping of ``SCHEDULE_KEYS``."""
    where = Where.of(where)
    if isinstance(spec, Schedule):
        return spec
    if isinstance(spec, str):
        spec = {"expression": spec}
    if not isinstance(spec, Mapping):
        raise ConfigError(where, f"a schedule is an expression or a mapping, not {spec!r}")
    check_keys(where, spec, set(SCHEDULE_KEYS))
    tz = zone(where / "timezone", spec.get("timezone"))
    schedule = parse_expression(where / "expression", spec.get("expression"), tz)
    start = _instant(where / "start_date", spec.get("start_date"), tz)
    end = _instant(where / "end_date", spec.get("end_date"), tz)
    if start is not None and end is not None and end <= start:
        raise ConfigError(where / "end_date", "must be after start_date")
    window = spec.get("flexible_window_minutes") or 0
    if isinstance(window, bool) or not isinstance(window, int) or not 0 <= window <= 1440:
        raise ConfigError(
            where / "flexible_window_minutes",
            f"must be a whole number of minutes 1-1440, not {window!r}",
        )
    missed = spec.get("missed_runs", SKIP)
    if missed not in MISSED_POLICIES:
        raise ConfigError(where / "missed_runs", f"must be skip or fire_once, not {missed!r}")
    return dataclasses.replace(
        schedule, start=start, end=end, flexible_window=window * 60.0, missed_runs=missed
    )


def flexible_delay(identity: str, due: float, window: float) -> float:
    """How long after ``due`` a run with a flexible window of ``window``
    seconds fires: a moment drawn uniformly from the window, seeded by the
    schedule's ``identity`` and the run's time. So it is the same in every
    runner and after a restart, and reproducible under a test clock; runs of
    different schedules, or of one schedule at different times, spread out."""
    if window <= 0:
        return 0.0
    return random.Random(f"{identity}|{due!r}").uniform(0, window)


def next_firings(
    expression: str, *, timezone: str | None = None, count: int = 5, after: datetime | None = None
) -> list[datetime]:
    """The next ``count`` firings of ``expression`` after ``after`` (default now),
    as aware datetimes in the schedule's time zone. A rate counts from ``after``."""
    schedule = parse_schedule(Where("schedule"), {"expression": expression, "timezone": timezone})
    moment = (after or datetime.now(UTC)).timestamp()
    anchor = moment
    firings: list[datetime] = []
    upcoming = (
        schedule.at_or_after(moment, anchor)
        if schedule.kind == "rate"
        else schedule.next_after(moment, anchor)
    )
    while upcoming is not None and len(firings) < count:
        firings.append(datetime.fromtimestamp(upcoming, schedule.zone))
        upcoming = schedule.next_after(upcoming, anchor)
    return firings
