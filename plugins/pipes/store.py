"""The pipes of a state database: definitions, desired and current states, counts.

One row per pipe. A pipe made through the API keeps its settings here
(``origin`` ``api``), so it runs again after a restart; a pipe declared in a
config is written at each start (``origin`` ``config``) so that the CLI and
the API see it too. ``desired_state`` is what StartPipe and StopPipe (and
``pipelines pipes start|stop``) set, and survives restarts; for a config's
pipe the config's ``desired_state`` applies again once it is changed in the
file (``declared_state`` remembers what the file said). The counts
(received, filtered out, enriched, delivered, failed) are added to by the
running pipe every few seconds and when it stops.

Written once against ``pipelines.store``: the same SQL on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipelines.store import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS pipes (
    name TEXT PRIMARY KEY,
    origin TEXT NOT NULL,
    settings TEXT NOT NULL,
    desired_state TEXT NOT NULL,
    declared_state TEXT,
    current_state TEXT NOT NULL,
    state_reason TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    modified REAL NOT NULL,
    received BIGINT NOT NULL DEFAULT 0,
    filtered BIGINT NOT NULL DEFAULT 0,
    enriched BIGINT NOT NULL DEFAULT 0,
    delivered BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0
);
"""
COUNTS = ("received", "filtered", "enriched", "delivered", "failed")
_COLUMNS = (
    "name, origin, settings, desired_state, declared_state, current_state, state_reason,"
    " created, modified, received, filtered, enriched, delivered, failed"
)


@dataclass(frozen=True)
class PipeRecord:
    name: str
    origin: str  # "api" or "config"
    settings: dict[str, Any]
    desired_state: str
    declared_state: str | None
    current_state: str
    state_reason: str
    created: float
    modified: float
    counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """What ``pipelines pipes list`` shows of it."""
        return {
            "Name": self.name,
            "Origin": self.origin,
            "Source": self.settings.get("source"),
            "Target": self.settings.get("target"),
            "DesiredState": self.desired_state,
            "CurrentState": self.current_state,
            "Received": self.counts.get("received", 0),
            "FilteredOut": self.counts.get("filtered", 0),
            "Enriched": self.counts.get("enriched", 0),
            "Delivered": self.counts.get("delivered", 0),
            "Failed": self.counts.get("failed", 0),
        }


def _record(row: Any) -> PipeRecord:
    return PipeRecord(
        row[0],
        row[1],
        orjson.loads(row[2]),
        row[3],
        row[4],
        row[5],
        row[6],
        row[7],
        row[8],
        dict(zip(COUNTS, (int(value) for value in row[9:14]), strict=True)),
    )


class PipeStore(Store):
    """The ``pipes`` table; see the module's doc."""

    name = "pipes"
    version = 1
    schema = SCHEMA

    async def get(self, name: str) -> PipeRecord | None:
        row = await self.one(f"SELECT {_COLUMNS} FROM pipes WHERE name = ?", (name,))
        return None if row is None else _record(row)

    async def pipes(self, prefix: str = "") -> list[PipeRecord]:
        rows = await self.rows(f"SELECT {_COLUMNS} FROM pipes ORDER BY name")
        return [_record(row) for row in rows if str(row[0]).startswith(prefix)]

    async def made_by_api(self) -> list[PipeRecord]:
        return [record for record in await self.pipes() if record.origin == "api"]

    async def put(
        self,
        name: str,
        origin: str,
        settings: Mapping[str, Any],
        desired_state: str,
        *,
        declared_state: str | None = None,
        current_state: str = "CREATING",
    ) -> PipeRecord:
        """Create or replace a pipe's definition (its counts and creation time stay)."""
        now = self.clock.time()
        text = orjson.dumps(dict(settings)).decode()
        async with self.transaction():
            found = await self.one("SELECT created FROM pipes WHERE name = ?", (name,))
            if found is None:
                await self.execute(
                    "INSERT INTO pipes (name, origin, settings, desired_state, declared_state,"
                    " current_state, created, modified) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (name, origin, text, desired_state, declared_state, current_state, now, now),
                )
            else:
                await self.execute(
                    "UPDATE pipes SET origin = ?, settings = ?, desired_state = ?,"
                    " declared_state = ?, current_state = ?, modified = ? WHERE name = ?",
                    (origin, text, desired_state, declared_state, current_state, now, name),
                )
        record = await self.get(name)
        assert record is not None
        return record

    async def declare(self, name: str, settings: Mapping[str, Any], declared: str) -> str:
        """A config's pipe at start: its row written, and the desired state it
        runs in (the one set by StartPipe or StopPipe, unless the config's
        ``desired_state`` changed since)."""
        found = await self.get(name)
        desired = declared
        if found is not None and found.declared_state == declared:
            desired = found.desired_state
        await self.put(name, "config", settings, desired, declared_state=declared)
        return desired

    async def set_desired(self, name: str, state: str) -> bool:
        """StartPipe / StopPipe: False when there is no such pipe."""
        changed = await self.execute(
            "UPDATE pipes SET desired_state = ?, modified = ? WHERE name = ?",
            (state, self.clock.time(), name),
        )
        return changed > 0

    async def set_current(self, name: str, state: str, reason: str = "") -> None:
        await self.execute(
            "UPDATE pipes SET current_state = ?, state_reason = ? WHERE name = ?",
            (state, reason, name),
        )

    async def add_counts(self, name: str, counts: Mapping[str, int]) -> None:
        """Add to a pipe's counts (several runners may each add theirs)."""
        sets = ", ".join(f"{key} = {key} + ?" for key in COUNTS)
        await self.execute(
            f"UPDATE pipes SET {sets} WHERE name = ?",
            (*(int(counts.get(key, 0)) for key in COUNTS), name),
        )

    async def delete(self, name: str) -> bool:
        return await self.execute("DELETE FROM pipes WHERE name = ?", (name,)) > 0
