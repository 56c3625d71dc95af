"""What an alarm's chart draws: its metric over a window, its threshold, and
the spans of time it was in ALARM (from its state history).

The browser draws it with uPlot (``static/console.js``): a time axis, the
statistic the alarm evaluates per period, the threshold as a line and the
ALARM spans shaded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pipelines.event import parse_time

#: Periods shown: enough to see the evaluation window and what came before.
PERIODS_SHOWN = 120
#: The window is at least an hour and at most a day.
SHORTEST, LONGEST = 3600, 86400
MAX_POINTS = 1440  # GetMetricStatistics' limit
#: Periods drawn before the first datapoint or state change.
LEAD = 30


def window(period: int) -> int:
    """Seconds of history drawn for an alarm of ``period`` seconds."""
    seconds = min(max(period * PERIODS_SHOWN, SHORTEST), LONGEST)
    return min(seconds, period * MAX_POINTS)


def first_shown(
    points: Sequence[Mapping[str, Any]],
    history: Sequence[Mapping[str, Any]],
    start: float,
    end: float,
    period: int,
) -> float:
    """Where the chart starts: ``start``, or later when the data and the
    history begin later (a runner started a minute ago draws that minute,
    not an empty hour), with ``LEAD`` periods before them and at least
    ``LEAD`` periods shown."""
    moments = [parse_time(p["Timestamp"]).timestamp() for p in points]
    moments += [parse_time(h["Timestamp"]).timestamp() for h in history]
    if not moments:
        return start
    return max(start, min(min(moments) - LEAD * period, end - LEAD * period))


def alarm_spans(
    history: Sequence[Mapping[str, Any]], state_now: str, start: float, end: float
) -> list[tuple[float, float]]:
    """The (from, to) spans within [start, end] the alarm was in ALARM,
    from DescribeAlarmHistory's state updates (newest first, as it answers)."""
    changes: list[tuple[float, str]] = []
    for item in history:
        if item.get("HistoryItemType") != "StateUpdate":
            continue
        try:
            data = json.loads(item.get("HistoryData") or "{}")
            new = data["newState"]["stateValue"]
        except (ValueError, KeyError, TypeError):
            continue
        changes.append((parse_time(item["Timestamp"]).timestamp(), new))
    changes.sort()
    spans: list[tuple[float, float]] = []
    opened: float | None = None
    for moment, state in changes:
        if state == "ALARM" and opened is None:
            opened = moment
        elif state != "ALARM" and opened is not None:
            spans.append((opened, moment))
            opened = None
    if opened is None and state_now == "ALARM" and not changes:
        opened = start  # in ALARM since before the history kept
    if opened is not None:
        spans.append((opened, end))
    return [(max(a, start), min(b, end)) for a, b in spans if b > start and a < end]


def chart_data(
    alarm: Mapping[str, Any],
    points: Sequence[Mapping[str, Any]],
    history: Sequence[Mapping[str, Any]],
    start: float,
    end: float,
) -> dict[str, Any]:
    """The chart's JSON: times (epoch seconds) and values of the alarm's
    statistic per period (null where the period has no data), the threshold,
    the ALARM spans, and labels."""
    period = int(alarm["Period"])
    statistic = alarm.get("Statistic") or alarm.get("ExtendedStatistic") or "Average"
    by_time: dict[float, float] = {}
    for point in points:
        value = point.get(statistic)
        if value is None:
            value = point.get("ExtendedStatistics", {}).get(statistic)
        if value is not None:
            by_time[parse_time(point["Timestamp"]).timestamp()] = float(value)
    first = int(start // period * period)
    times = list(range(first, int(end) + 1, period))
    return {
        "name": alarm["AlarmName"],
        "label": f"{alarm['MetricName']} {statistic} per {period} s",
        "times": times,
        "values": [by_time.get(float(t)) for t in times],
        "threshold": float(alarm["Threshold"]),
        "comparison": alarm.get("ComparisonOperator", ""),
        "alarms": [list(span) for span in alarm_spans(history, alarm["StateValue"], start, end)],
        "state": alarm["StateValue"],
    }
