"""What ``pipelines schedules ...`` shows: schedules as kept, and when they fire next.

Public functions over a ``ScheduleStore`` (and, for the next runs, the
engine's marks in the same state database), for the CLI and for scripts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from pipelines.errors import PipelinesError
from pipelines.schedule import flexible_delay
from pipelines.state import ScheduleMark, StateDB
from pipelines.store import Location
from plugins.scheduler.spec import (
    DEFAULT_GROUP,
    Invalid,
    check,
    described,
    rule_name,
    schedule_arn,
)
from plugins.scheduler.store import ScheduleStore, StoredSchedule
from plugins.scheduler.target import SCHEDULER_BUS


def _iso(seconds: float, zone: dt.tzinfo = dt.UTC) -> str:
    return dt.datetime.fromtimestamp(seconds, zone).isoformat()


async def list_schedules(
    store: ScheduleStore,
    *,
    group: str | None = None,
    prefix: str = "",
    state: str | None = None,
) -> list[dict[str, Any]]:
    """A summary of each schedule (ListSchedules' fields, and the expression)."""
    _, _, rows = await store.load()
    return [
        {
            "GroupName": row.group,
            "Name": row.name,
            "State": row.body.get("State", "ENABLED"),
            "ScheduleExpression": row.body["ScheduleExpression"],
            "Target": row.body["Target"]["Arn"],
            "Origin": row.origin,
        }
        for row in rows
        if (group is None or row.group == group)
        and row.name.startswith(prefix)
        and (state is None or row.body.get("State", "ENABLED") == state)
    ]


async def _row(store: ScheduleStore, name: str, group: str) -> StoredSchedule:
    row = await store.schedule(group, name)
    if row is None:
        raise PipelinesError(f"no schedule {name!r} in the group {group!r}")
    return row


async def describe_schedule(
    store: ScheduleStore, name: str, group: str = DEFAULT_GROUP
) -> dict[str, Any]:
    """GetSchedule's answer, dates in ISO 8601."""
    row = await _row(store, name, group)
    answer = described(row.body, row.created, row.modified)
    for key in ("StartDate", "EndDate", "CreationDate", "LastModificationDate"):
        if answer.get(key) is not None:
            answer[key] = _iso(answer[key])
    return answer


async def next_runs(
    location: Location,
    name: str,
    group: str = DEFAULT_GROUP,
    *,
    count: int = 5,
    after: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """The schedule's next ``count`` runs after ``after`` (default now): each
    run's scheduled time in the schedule's time zone and the moment it fires
    (later within a flexible window: the same moment the scheduler draws).
    A rate counts from where the running pipeline anchored it (its mark);
    one never run counts from ``after``. Without ``after``, runs the
    pipeline already marked done are not shown."""
    async with ScheduleStore.existing(location) as store:
        row = await _row(store, name, group)
    async with StateDB.existing(location) as state:
        marks: Mapping[tuple[str, str], ScheduleMark] = await state.schedule_marks()
    try:
        schedule = check(row.body)
    except Invalid as error:
        raise PipelinesError(f"schedule {group}/{name}: {error.message}") from None
    moment = (after or dt.datetime.now(dt.UTC)).timestamp()
    mark = marks.get((SCHEDULER_BUS, rule_name(group, name)))
    if mark is not None and mark.fingerprint == schedule.fingerprint:
        anchor = mark.anchor
        if after is None and mark.last_due is not None:
            moment = max(moment, mark.last_due)  # runs already marked are not next
    else:
        anchor = schedule.start if schedule.start is not None else moment
    identity = schedule_arn(group, name)
    runs: list[dict[str, Any]] = []
    upcoming = schedule.next_after(moment, anchor)
    while upcoming is not None and len(runs) < count:
        delay = flexible_delay(identity, upcoming, schedule.flexible_window)
        runs.append(
            {
                "Scheduled": _iso(upcoming, schedule.zone),
                "FiresAt": _iso(upcoming + delay),
                "State": row.body.get("State", "ENABLED"),
            }
        )
        upcoming = schedule.next_after(upcoming, anchor)
    return runs
