"""Schedule expressions: AWS's cron syntax and its rejections, rates, one-time
schedules, time zones with daylight-saving changes, start and end dates."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from pipelines.errors import ConfigError
from pipelines.schedule import next_firings, parse_schedule, translate_cron

from .helpers import run_cli

BERLIN = ZoneInfo("Europe/Berlin")


def firings(expression: str, after: datetime, count: int = 4, tz: str | None = None) -> list[str]:
    return [d.isoformat() for d in next_firings(expression, timezone=tz, count=count, after=after)]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# Examples from EventBridge's schedule expression documentation, with the
# firings they describe worked out by hand from a calendar.
@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        # 10:15 UTC every day
        (
            "cron(15 10 * * ? *)",
            utc(2026, 1, 1),
            ["2026-01-01T10:15:00+00:00", "2026-01-02T10:15:00+00:00"],
        ),
        # 18:00 Monday to Friday (2026-01-02 is a Friday)
        (
            "cron(0 18 ? * MON-FRI *)",
            utc(2026, 1, 2, 12),
            ["2026-01-02T18:00:00+00:00", "2026-01-05T18:00:00+00:00"],
        ),
        # 08:00 on the first day of each month
        (
            "cron(0 8 1 * ? *)",
            utc(2026, 1, 15),
            ["2026-02-01T08:00:00+00:00", "2026-03-01T08:00:00+00:00"],
        ),
        # every 10 minutes on weekdays (2026-01-03 is a Saturday)
        (
            "cron(0/10 * ? * MON-FRI *)",
            utc(2026, 1, 2, 23, 45),
            ["2026-01-02T23:50:00+00:00", "2026-01-05T00:00:00+00:00"],
        ),
        # every 5 minutes between 08:00 and 17:55 on weekdays
        (
            "cron(0/5 8-17 ? * MON-FRI *)",
            utc(2026, 1, 5, 17, 52),
            ["2026-01-05T17:55:00+00:00", "2026-01-06T08:00:00+00:00"],
        ),
        # 09:00 on the first Monday of each month (2#1: AWS counts Sunday as 1)
        (
            "cron(0 9 ? * 2#1 *)",
            utc(2026, 1, 1),
            ["2026-01-05T09:00:00+00:00", "2026-02-02T09:00:00+00:00"],
        ),
        # the last day of the month
        (
            "cron(0 18 L * ? *)",
            utc(2026, 2, 1),
            ["2026-02-28T18:00:00+00:00", "2026-03-31T18:00:00+00:00"],
        ),
        # the weekday nearest the 15th: 2026-08-15 is a Saturday, so Friday the 14th
        (
            "cron(0 12 15W * ? *)",
            utc(2026, 7, 20),
            ["2026-08-14T12:00:00+00:00", "2026-09-15T12:00:00+00:00"],
        ),
        # the last Friday of the month (6L)
        (
            "cron(0 12 ? * 6L *)",
            utc(2026, 3, 1),
            ["2026-03-27T12:00:00+00:00", "2026-04-24T12:00:00+00:00"],
        ),
        # day numbers and names agree: 1 is Sunday
        (
            "cron(0 0 ? * 1 *)",
            utc(2026, 1, 1),
            ["2026-01-04T00:00:00+00:00", "2026-01-11T00:00:00+00:00"],
        ),
        # a list of months by name, in one year only
        (
            "cron(0 0 1 JAN,JUL ? 2027)",
            utc(2026, 1, 1),
            ["2027-01-01T00:00:00+00:00", "2027-07-01T00:00:00+00:00"],
        ),
    ],
)
def test_cron_examples(expression: str, after: datetime, expected: list[str]) -> None:
    assert firings(expression, after, count=len(expected)) == expected


def test_a_cron_with_years_in_the_past_never_fires_again() -> None:
    assert firings("cron(0 0 1 1 ? 2020)", utc(2026, 1, 1)) == []


def test_translation_to_croniter_fields() -> None:
    # croniter's order is minute hour dom month dow second year; days from 0.
    assert (
        translate_cron("0/15 8-10 ? * MON-FRI *")
        == "0,15,30,45 8,9,10 * 1,2,3,4,5,6,7,8,9,10,11,12 1,2,3,4,5 0 *"
    )
    assert translate_cron("0 12 ? * 6L *").split()[4] == "L5"
    assert translate_cron("0 12 ? * L *").split()[4] == "6"


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("cron(0 12 * * * *)", "one of day-of-month and day-of-week"),
        ("cron(0 12 ? * ? *)", "one of day-of-month and day-of-week"),
        ("cron(0 12 1 * MON *)", "one of day-of-month and day-of-week"),
        ("cron(0 12 * * ?)", "6 fields"),
        ("cron(60 12 * * ? *)", "minutes: 60 is outside 0-59"),
        ("cron(0 24 * * ? *)", "hours: 24 is outside 0-23"),
        ("cron(0 0 32 * ? *)", "day-of-month: 32 is outside 1-31"),
        ("cron(0 0 ? * 8 *)", "day-of-week: 8 is outside 1-7"),
        ("cron(0 0 ? * FUN *)", "'FUN' is not a value (1-7 or SUN-SAT)"),
        ("cron(0 0 1 FOO ? *)", "'FOO' is not a value (1-12 or JAN-DEC)"),
        ("cron(0 0 1 * ? 1969)", "year: 1969 is outside"),
        ("cron(0 0 1 * ? 2150)", "after 2099"),
        ("cron(0 ? 1 * ? *)", "'?' is allowed only in day-of-month or day-of-week"),
        ("cron(0 0 ? * 2#6 *)", "# is followed by 1-5"),
        ("cron(0 0 ? * 3#1,6#3 *)", "a # day stands alone"),
        ("cron(0 0 LW * ? *)", "LW (the last weekday) is not supported"),
        ("cron(0 0 1W,15 * ? *)", "day-of-month"),
        ("cron(0 0 L-3 * ? *)", "L and W stand alone"),
        ("cron(5-1 0 * * ? *)", "runs backwards"),
        ("cron(0/0 0 * * ? *)", "step '0'"),
        ("rate(0 minutes)", "positive"),
        ("rate(1 minutes)", "rate(1 minute)"),
        ("rate(5 minute)", "rate(5 minutes)"),
        ("rate(5 weeks)", "unknown rate unit"),
        ("rate(five minutes)", "rate(value unit)"),
        ("at(2026-13-01T00:00:00)", "at(2026-13-01T00:00:00)"),
        ("at(2026-01-01 00:00)", "at(yyyy-mm-ddThh:mm:ss)"),
        ("every 5 minutes", "is not a schedule"),
    ],
)
def test_invalid_expressions_are_rejected_naming_the_problem(expression: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_schedule("rule nightly.schedule", expression)
    assert message in str(caught.value)
    assert str(caught.value).startswith("rule nightly.schedule")


@pytest.mark.parametrize(
    ("spec", "where", "message"),
    [
        (
            {"expression": "rate(1 hour)", "timezone": "Mars/Olympus"},
            "timezone",
            "unknown time zone",
        ),
        # names the zone database reads as a directory or as a too-long file name
        ({"expression": "rate(1 hour)", "timezone": "Europe"}, "timezone", "unknown time zone"),
        ({"expression": "rate(1 hour)", "timezone": "x" * 300}, "timezone", "unknown time zone"),
        ({"expression": "rate(1 hour)", "start_date": "yesterday"}, "start_date", "ISO 8601"),
        (
            {"expression": "rate(1 hour)", "start_date": "2026-02-01", "end_date": "2026-01-01"},
            "end_date",
            "after start_date",
        ),
        (
            {"expression": "rate(1 hour)", "flexible_window_minutes": 1441},
            "flexible_window",
            "1-1440",
        ),
        ({"expression": "rate(1 hour)", "missed_runs": "all"}, "missed_runs", "skip or fire_once"),
        ({"expression": "rate(1 hour)", "timezon": "UTC"}, "timezon", "did you mean 'timezone'"),
    ],
)
def test_invalid_schedule_settings_name_the_setting(
    spec: dict[str, object], where: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_schedule("rule r.schedule", spec)
    assert where in str(caught.value)
    assert message in str(caught.value)


def test_rate_counts_fixed_durations_from_its_anchor() -> None:
    schedule = parse_schedule("s", "rate(2 hours)")
    anchor = utc(2026, 1, 1, 0, 30).timestamp()
    assert schedule.next_after(anchor - 1, anchor) == anchor
    assert schedule.next_after(anchor, anchor) == anchor + 7200
    assert schedule.next_after(anchor + 7199, anchor) == anchor + 7200
    assert schedule.latest_before(anchor + 3 * 7200 + 5, anchor) == anchor + 3 * 7200
    assert schedule.latest_before(anchor, anchor) is None


def test_a_daily_rate_is_24_hours_even_across_a_dst_change() -> None:
    # 2026-03-29 is 23 hours long in Berlin: a rate keeps UTC steps.
    after = datetime(2026, 3, 28, 12, tzinfo=BERLIN)
    assert firings("rate(1 day)", after, 3, tz="Europe/Berlin") == [
        "2026-03-28T12:00:00+01:00",
        "2026-03-29T13:00:00+02:00",
        "2026-03-30T13:00:00+02:00",
    ]


def test_one_time_schedule_is_in_its_time_zone_and_fires_once() -> None:
    assert firings("at(2026-06-01T09:30:00)", utc(2026, 1, 1), tz="Europe/Berlin") == [
        "2026-06-01T09:30:00+02:00"
    ]
    assert firings("at(2026-06-01T09:30:00)", utc(2026, 7, 1)) == []


def test_spring_forward_skips_the_wall_clock_times_that_do_not_exist() -> None:
    # Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST.
    assert firings("cron(30 2 * * ? *)", utc(2026, 3, 27, 12), 3, tz="Europe/Berlin") == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    assert firings("cron(0/30 * * * ? *)", utc(2026, 3, 28, 23, 45), 5, tz="Europe/Berlin") == [
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T01:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:30:00+02:00",
        "2026-03-29T04:00:00+02:00",
    ]


def test_fall_back_fires_each_wall_clock_time_once() -> None:
    # Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:00-02:59 happens twice.
    assert firings("cron(30 2 * * ? *)", utc(2026, 10, 23, 12), 3, tz="Europe/Berlin") == [
        "2026-10-24T02:30:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]
    assert firings("cron(0/30 * * * ? *)", utc(2026, 10, 24, 23, 15), 5, tz="Europe/Berlin") == [
        "2026-10-25T01:30:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T03:00:00+01:00",
        "2026-10-25T03:30:00+01:00",
    ]


def test_next_after_a_moment_inside_the_repeated_hour_does_not_go_back() -> None:
    schedule = parse_schedule(
        "s", {"expression": "cron(0/30 * * * ? *)", "timezone": "Europe/Berlin"}
    )
    # 01:10 UTC is 02:10 CET: the second pass through 02:xx, which fired in the first.
    second_pass = utc(2026, 10, 25, 1, 10).timestamp()
    assert schedule.next_after(second_pass, 0) == utc(2026, 10, 25, 2, 0).timestamp()  # 03:00 CET
    assert schedule.latest_before(second_pass, 0) == utc(2026, 10, 25, 0, 30).timestamp()


def test_start_and_end_dates_bound_the_firings() -> None:
    spec = {
        "expression": "cron(0 12 * * ? *)",
        "timezone": "Europe/Berlin",
        "start_date": "2026-05-03T00:00:00",
        "end_date": "2026-05-05T12:00:00",
    }
    schedule = parse_schedule("s", spec)
    got, moment = [], utc(2026, 5, 1).timestamp()
    while (moment_next := schedule.next_after(moment, 0)) is not None:
        got.append(datetime.fromtimestamp(moment_next, BERLIN).isoformat())
        moment = moment_next
    assert got == [
        "2026-05-03T12:00:00+02:00",
        "2026-05-04T12:00:00+02:00",
        "2026-05-05T12:00:00+02:00",
    ]


def test_rate_with_a_start_date_anchors_there() -> None:
    schedule = parse_schedule(
        "s", {"expression": "rate(15 minutes)", "start_date": "2026-01-01T00:05:00Z"}
    )
    assert schedule.start == utc(2026, 1, 1, 0, 5).timestamp()
    anchor = schedule.start
    assert schedule.next_after(utc(2025, 12, 1).timestamp(), anchor) == anchor
    assert (
        schedule.next_after(utc(2026, 1, 1, 1).timestamp(), anchor)
        == utc(2026, 1, 1, 1, 5).timestamp()
    )


def test_cli_schedule_next_prints_the_next_firings() -> None:
    result = run_cli(
        "schedule",
        "next",
        "cron(30 2 * * ? *)",
        "--tz",
        "Europe/Berlin",
        "-n",
        "3",
        "--after",
        "2026-03-27T12:00:00Z",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]


def test_cli_schedule_next_reports_a_bad_expression_in_one_line() -> None:
    result = run_cli("schedule", "next", "cron(0 12 * * * *)")
    assert result.returncode == 1
    assert "one of day-of-month and day-of-week" in result.stderr
    assert "Traceback" not in result.stderr
