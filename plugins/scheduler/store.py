"""EventBridge Scheduler's schedules and schedule groups, durable in the state database.

One row per schedule (AWS's shape as JSON, its dates, where it came from:
the config or the API) and per schedule group (its tags). The runs
themselves are marked by the engine's scheduler (``schedule_marks``: each
schedule's last run, written once that run's event is committed), so this
store holds what a schedule *is*, never when it last ran.

Every change bumps one counter (``scheduler_changes``): the runners of a
cluster sharing a PostgreSQL state compare it with the one they last loaded
and load the schedules again when it moved.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from pipelines.store import Step, Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS scheduler_groups (
    name     TEXT PRIMARY KEY,
    tags     TEXT NOT NULL,
    created  REAL NOT NULL,
    modified REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS scheduler_schedules (
    group_name TEXT NOT NULL,
    name       TEXT NOT NULL,
    body       TEXT NOT NULL,
    origin     TEXT NOT NULL,
    created    REAL NOT NULL,
    modified   REAL NOT NULL,
    PRIMARY KEY (group_name, name)
);
CREATE TABLE IF NOT EXISTS scheduler_changes (
    counter TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
"""

_BUMP = Step(
    "INSERT INTO scheduler_changes (counter, version) VALUES ('schedules', 1)"
    " ON CONFLICT (counter) DO UPDATE SET version = scheduler_changes.version + 1"
)
_VERSION = "SELECT version FROM scheduler_changes WHERE counter = 'schedules'"
#: Where a schedule came from: a config's ``schedules:`` or the API.
CONFIG, API = "config", "api"


@dataclass(frozen=True, slots=True)
class StoredSchedule:
    group: str
    name: str
    #: AWS's shape (CreateSchedule's members; dates in epoch seconds).
    body: dict[str, Any]
    origin: str
    created: float
    modified: float


@dataclass(frozen=True, slots=True)
class StoredGroup:
    name: str
    tags: dict[str, str]
    created: float
    modified: float


class ScheduleStore(Store):
    """Schedules and schedule groups; see the module's docstring."""

    name = "scheduler"
    schema = SCHEMA

    async def changes(self) -> int:
        found = await self.scalar(_VERSION)
        return int(found or 0)

    async def load(self) -> tuple[int, list[StoredGroup], list[StoredSchedule]]:
        """The change counter, every group and every schedule, in one trip
        (the counter first: a change committed meanwhile is loaded again)."""
        version, groups, schedules = await self.batch(
            [
                Step(_VERSION),
                Step("SELECT name, tags, created, modified FROM scheduler_groups ORDER BY name"),
                Step(
                    "SELECT group_name, name, body, origin, created, modified"
                    " FROM scheduler_schedules ORDER BY group_name, name"
                ),
            ]
        )
        return (
            int(version.rows[0][0]) if version.rows else 0,
            [StoredGroup(n, orjson.loads(t), c, m) for n, t, c, m in groups.rows],
            [StoredSchedule(g, n, orjson.loads(b), o, c, m) for g, n, b, o, c, m in schedules.rows],
        )

    async def schedule(self, group: str, name: str) -> StoredSchedule | None:
        row = await self.one(
            "SELECT group_name, name, body, origin, created, modified FROM scheduler_schedules"
            " WHERE group_name = ? AND name = ?",
            (group, name),
        )
        if row is None:
            return None
        return StoredSchedule(row[0], row[1], orjson.loads(row[2]), row[3], row[4], row[5])

    async def put_schedules(self, schedules: Iterable[StoredSchedule]) -> None:
        """Write schedules (new or replacing one of the same group and name)."""
        rows = [
            (s.group, s.name, orjson.dumps(s.body).decode(), s.origin, s.created, s.modified)
            for s in schedules
        ]
        if not rows:
            return
        sql = self.dialect.upsert(
            "scheduler_schedules",
            ("group_name", "name", "body", "origin", "created", "modified"),
            ("group_name", "name"),
        )
        await self.batch([Step(sql, rows, many=True), _BUMP])

    async def insert_schedule(self, schedule: StoredSchedule) -> bool:
        """Write a new schedule; False (nothing written) when one of that
        group and name exists: CreateSchedule's conflict, decided by the
        database, so two runners creating it at once cannot both win."""
        sql = self.dialect.insert_new(
            "scheduler_schedules", ("group_name", "name", "body", "origin", "created", "modified")
        )
        row = (
            schedule.group,
            schedule.name,
            orjson.dumps(schedule.body).decode(),
            schedule.origin,
            schedule.created,
            schedule.modified,
        )
        inserted, _ = await self.batch([Step(sql, row), _BUMP])
        return inserted.changed == 1

    async def delete_schedules(self, keys: Iterable[tuple[str, str]]) -> int:
        """Delete schedules by (group, name); how many were there."""
        keys = list(keys)
        if not keys:
            return 0
        steps = [
            Step("DELETE FROM scheduler_schedules WHERE group_name = ? AND name = ?", key)
            for key in keys
        ]
        done = await self.batch([*steps, _BUMP])
        return sum(each.changed for each in done[:-1])

    async def put_group(self, name: str, tags: Mapping[str, str], now: float) -> bool:
        """A new group; False when it exists."""
        sql = self.dialect.insert_new("scheduler_groups", ("name", "tags", "created", "modified"))
        inserted, _ = await self.batch(
            [Step(sql, (name, orjson.dumps(dict(tags)).decode(), now, now)), _BUMP]
        )
        return inserted.changed == 1

    async def set_tags(self, name: str, tags: Mapping[str, str], now: float) -> None:
        await self.batch(
            [
                Step(
                    "UPDATE scheduler_groups SET tags = ?, modified = ? WHERE name = ?",
                    (orjson.dumps(dict(tags)).decode(), now, name),
                ),
                _BUMP,
            ]
        )

    async def delete_group(self, name: str) -> list[str]:
        """Delete a group and its schedules (the names of those), in one transaction."""
        found, _, _, _ = await self.batch(
            [
                Step("SELECT name FROM scheduler_schedules WHERE group_name = ?", (name,)),
                Step("DELETE FROM scheduler_schedules WHERE group_name = ?", (name,)),
                Step("DELETE FROM scheduler_groups WHERE name = ?", (name,)),
                _BUMP,
            ]
        )
        return [row[0] for row in found.rows]
