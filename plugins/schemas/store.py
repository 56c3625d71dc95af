"""Registries, schemas and their versions, discoverers and code bindings,
durable in the state database (SQLite or PostgreSQL: one SQL text).

- ``schema_registries``: name, description, tags (JSON), created;
- ``schema_schemas``: a schema of a registry: its type, description, tags,
  last modified, and ``latest``, the highest version number it ever had
  (a deleted version's number is never given again, as AWS's);
- ``schema_versions``: each version's content, type and creation time;
- ``schema_discoverers``: id, the bus ARN it watches, description, state
  (STARTED or STOPPED), cross-account flag, tags;
- ``schema_bindings``: a code binding per (schema, version, language): its
  status, dates, and the zip once made.

Only the writes that must be all or nothing (a schema and its first version,
a new version and the schema's ``latest``) go in one transaction; reads are
single statements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from pipelines.store import Step, Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_registries (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    tags        TEXT NOT NULL,
    created     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS schema_schemas (
    registry    TEXT NOT NULL,
    name        TEXT NOT NULL,
    type        TEXT NOT NULL,
    description TEXT NOT NULL,
    tags        TEXT NOT NULL,
    modified    REAL NOT NULL,
    latest      INTEGER NOT NULL,
    PRIMARY KEY (registry, name)
);
CREATE TABLE IF NOT EXISTS schema_versions (
    registry TEXT NOT NULL,
    name     TEXT NOT NULL,
    version  INTEGER NOT NULL,
    type     TEXT NOT NULL,
    content  TEXT NOT NULL,
    created  REAL NOT NULL,
    PRIMARY KEY (registry, name, version)
);
CREATE TABLE IF NOT EXISTS schema_discoverers (
    id            TEXT PRIMARY KEY,
    source_arn    TEXT NOT NULL,
    description   TEXT NOT NULL,
    state         TEXT NOT NULL,
    cross_account INTEGER NOT NULL,
    tags          TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS schema_bindings (
    registry TEXT NOT NULL,
    name     TEXT NOT NULL,
    version  INTEGER NOT NULL,
    language TEXT NOT NULL,
    status   TEXT NOT NULL,
    created  REAL NOT NULL,
    modified REAL NOT NULL,
    source   BLOB,
    PRIMARY KEY (registry, name, version, language)
);
"""

#: The registries every account has: AWS's event schemas (none shipped here)
#: and what discoverers find.
AWS_EVENTS, DISCOVERED = "aws.events", "discovered-schemas"
BUILT_IN = (AWS_EVENTS, DISCOVERED)


@dataclass(frozen=True, slots=True)
class RegistryRecord:
    name: str
    description: str
    tags: dict[str, str]


@dataclass(frozen=True, slots=True)
class SchemaRecord:
    registry: str
    name: str
    type: str
    description: str
    tags: dict[str, str]
    modified: float
    latest: int
    #: How many versions it has now.
    versions: int


@dataclass(frozen=True, slots=True)
class VersionRecord:
    registry: str
    name: str
    version: int
    type: str
    content: str
    created: float


@dataclass(frozen=True, slots=True)
class DiscovererRecord:
    id: str
    source_arn: str
    description: str
    state: str
    cross_account: bool
    tags: dict[str, str]


@dataclass(frozen=True, slots=True)
class BindingRecord:
    registry: str
    name: str
    version: int
    language: str
    status: str
    created: float
    modified: float
    source: bytes | None


def _tags(text: str) -> dict[str, str]:
    found: dict[str, str] = orjson.loads(text)
    return found


def _json(tags: dict[str, str] | None) -> str:
    return orjson.dumps(tags or {}).decode()


class SchemaStore(Store):
    """The schema registry's tables (see the module's doc)."""

    name = "schemas"
    version = 1
    schema = SCHEMA

    async def opened(self) -> None:
        insert = self.dialect.insert_new(
            "schema_registries", ("name", "description", "tags", "created")
        )
        descriptions = {
            AWS_EVENTS: "Schemas of the events of AWS services (none are shipped by pipelines)",
            DISCOVERED: "Schemas found by the discoverers of event buses",
        }
        now = self.clock.time()
        await self.batch([Step(insert, (name, descriptions[name], "{}", now)) for name in BUILT_IN])

    # -- registries --------------------------------------------------------------------

    async def create_registry(
        self, name: str, description: str, tags: dict[str, str] | None
    ) -> bool:
        """False when it exists already."""
        insert = self.dialect.insert_new(
            "schema_registries", ("name", "description", "tags", "created")
        )
        changed = await self.execute(insert, (name, description, _json(tags), self.clock.time()))
        return changed > 0

    async def registry(self, name: str) -> RegistryRecord | None:
        row = await self.one(
            "SELECT name, description, tags FROM schema_registries WHERE name = ?", (name,)
        )
        return None if row is None else RegistryRecord(row[0], row[1], _tags(row[2]))

    async def registries(self) -> list[RegistryRecord]:
        rows = await self.rows(
            "SELECT name, description, tags FROM schema_registries ORDER BY name"
        )
        return [RegistryRecord(r[0], r[1], _tags(r[2])) for r in rows]

    async def update_registry(self, name: str, description: str) -> bool:
        changed = await self.execute(
            "UPDATE schema_registries SET description = ? WHERE name = ?", (description, name)
        )
        return changed > 0

    async def delete_registry(self, name: str) -> bool:
        """Deletes its schemas, versions and bindings with it."""
        done = await self.batch(
            [
                Step("DELETE FROM schema_bindings WHERE registry = ?", (name,)),
                Step("DELETE FROM schema_versions WHERE registry = ?", (name,)),
                Step("DELETE FROM schema_schemas WHERE registry = ?", (name,)),
                Step("DELETE FROM schema_registries WHERE name = ?", (name,)),
            ]
        )
        return done[-1].changed > 0

    # -- schemas -----------------------------------------------------------------------

    async def create_schema(
        self,
        registry: str,
        name: str,
        kind: str,
        content: str,
        description: str,
        tags: dict[str, str] | None,
    ) -> VersionRecord | None:
        """The schema and its version 1; None when it exists already."""
        now = self.clock.time()
        insert = self.dialect.insert_new(
            "schema_schemas",
            ("registry", "name", "type", "description", "tags", "modified", "latest"),
        )
        async with self.transaction():
            if not await self.execute(
                insert, (registry, name, kind, description, _json(tags), now, 1)
            ):
                return None
            await self.execute(
                "INSERT INTO schema_versions (registry, name, version, type, content, created)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (registry, name, 1, kind, content, now),
            )
        return VersionRecord(registry, name, 1, kind, content, now)

    async def add_version(
        self,
        registry: str,
        name: str,
        kind: str | None,
        content: str | None,
        description: str | None,
    ) -> VersionRecord | None:
        """UpdateSchema: a new version when ``content`` is given (its type
        ``kind``, or the schema's), else the description alone changes and the
        latest version is answered; None when the schema does not exist."""
        now = self.clock.time()
        async with self.transaction():
            row = await self.one(
                "SELECT type, latest FROM schema_schemas WHERE registry = ? AND name = ?",
                (registry, name),
            )
            if row is None:
                return None
            kind = kind or row[0]
            if description is not None:
                await self.execute(
                    "UPDATE schema_schemas SET description = ?, modified = ?"
                    " WHERE registry = ? AND name = ?",
                    (description, now, registry, name),
                )
            if content is None:
                latest = await self._latest(registry, name)
                if latest is not None:
                    return latest
                content = ""
            version = int(row[1]) + 1
            await self.execute(
                "UPDATE schema_schemas SET latest = ?, type = ?, modified = ?"
                " WHERE registry = ? AND name = ?",
                (version, kind, now, registry, name),
            )
            await self.execute(
                "INSERT INTO schema_versions (registry, name, version, type, content, created)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (registry, name, version, kind, content, now),
            )
        return VersionRecord(registry, name, version, kind, content, now)

    async def _latest(self, registry: str, name: str) -> VersionRecord | None:
        row = await self.one(
            "SELECT version, type, content, created FROM schema_versions"
            " WHERE registry = ? AND name = ? ORDER BY version DESC LIMIT 1",
            (registry, name),
        )
        return None if row is None else VersionRecord(registry, name, *row)

    async def get_schema(self, registry: str, name: str) -> SchemaRecord | None:
        rows = await self._schemas("s.registry = ? AND s.name = ?", (registry, name))
        return rows[0] if rows else None

    async def schemas(self, registry: str, prefix: str = "") -> list[SchemaRecord]:
        # A prefix is compared as text, not as a LIKE pattern ('_' is common in names).
        found = await self._schemas("s.registry = ?", (registry,))
        return [s for s in found if s.name.startswith(prefix)]

    async def _schemas(self, where: str, parameters: tuple[Any, ...]) -> list[SchemaRecord]:
        rows = await self.rows(
            "SELECT s.registry, s.name, s.type, s.description, s.tags, s.modified, s.latest,"
            " (SELECT COUNT(*) FROM schema_versions v"
            "  WHERE v.registry = s.registry AND v.name = s.name)"
            f" FROM schema_schemas s WHERE {where} ORDER BY s.registry, s.name",
            parameters,
        )
        return [
            SchemaRecord(r[0], r[1], r[2], r[3], _tags(r[4]), r[5], int(r[6]), int(r[7]))
            for r in rows
        ]

    async def get_version(
        self, registry: str, name: str, version: int | None = None
    ) -> VersionRecord | None:
        """A version of a schema (None: its latest)."""
        if version is None:
            return await self._latest(registry, name)
        row = await self.one(
            "SELECT version, type, content, created FROM schema_versions"
            " WHERE registry = ? AND name = ? AND version = ?",
            (registry, name, version),
        )
        return None if row is None else VersionRecord(registry, name, *row)

    async def versions(self, registry: str, name: str) -> list[VersionRecord]:
        rows = await self.rows(
            "SELECT version, type, content, created FROM schema_versions"
            " WHERE registry = ? AND name = ? ORDER BY version",
            (registry, name),
        )
        return [VersionRecord(registry, name, *row) for row in rows]

    async def delete_version(self, registry: str, name: str, version: int) -> bool:
        done = await self.batch(
            [
                Step(
                    "DELETE FROM schema_bindings WHERE registry = ? AND name = ? AND version = ?",
                    (registry, name, version),
                ),
                Step(
                    "DELETE FROM schema_versions WHERE registry = ? AND name = ? AND version = ?",
                    (registry, name, version),
                ),
            ]
        )
        return done[-1].changed > 0

    async def delete_schema(self, registry: str, name: str) -> bool:
        done = await self.batch(
            [
                Step(f"DELETE FROM {table} WHERE registry = ? AND name = ?", (registry, name))
                for table in ("schema_bindings", "schema_versions", "schema_schemas")
            ]
        )
        return done[-1].changed > 0

    async def set_tags(self, table: str, key: dict[str, str], tags: dict[str, str]) -> bool:
        """Replace the tags of a registry, schema or discoverer (``table``)."""
        where = " AND ".join(f"{column} = ?" for column in key)
        changed = await self.execute(
            f"UPDATE {table} SET tags = ? WHERE {where}", (_json(tags), *key.values())
        )
        return changed > 0

    # -- discoverers -------------------------------------------------------------------

    async def create_discoverer(self, record: DiscovererRecord) -> bool:
        insert = self.dialect.insert_new(
            "schema_discoverers",
            ("id", "source_arn", "description", "state", "cross_account", "tags"),
        )
        changed = await self.execute(
            insert,
            (
                record.id,
                record.source_arn,
                record.description,
                record.state,
                int(record.cross_account),
                _json(record.tags),
            ),
        )
        return changed > 0

    async def discoverers(self) -> list[DiscovererRecord]:
        rows = await self.rows(
            "SELECT id, source_arn, description, state, cross_account, tags"
            " FROM schema_discoverers ORDER BY id"
        )
        return [DiscovererRecord(r[0], r[1], r[2], r[3], bool(r[4]), _tags(r[5])) for r in rows]

    async def discoverer(self, discoverer_id: str) -> DiscovererRecord | None:
        found = [d for d in await self.discoverers() if d.id == discoverer_id]
        return found[0] if found else None

    async def update_discoverer(
        self,
        discoverer_id: str,
        *,
        state: str | None = None,
        description: str | None = None,
        cross_account: bool | None = None,
    ) -> bool:
        sets: list[str] = []
        values: list[Any] = []
        for column, value in (
            ("state", state),
            ("description", description),
            ("cross_account", None if cross_account is None else int(cross_account)),
        ):
            if value is not None:
                sets.append(f"{column} = ?")
                values.append(value)
        if not sets:
            return await self.discoverer(discoverer_id) is not None
        changed = await self.execute(
            f"UPDATE schema_discoverers SET {', '.join(sets)} WHERE id = ?",
            (*values, discoverer_id),
        )
        return changed > 0

    async def delete_discoverer(self, discoverer_id: str) -> bool:
        changed = await self.execute(
            "DELETE FROM schema_discoverers WHERE id = ?", (discoverer_id,)
        )
        return changed > 0

    # -- code bindings -----------------------------------------------------------------

    async def put_binding(self, record: BindingRecord) -> None:
        upsert = self.dialect.upsert(
            "schema_bindings",
            ("registry", "name", "version", "language", "status", "created", "modified", "source"),
            ("registry", "name", "version", "language"),
        )
        await self.execute(
            upsert,
            (
                record.registry,
                record.name,
                record.version,
                record.language,
                record.status,
                record.created,
                record.modified,
                record.source,
            ),
        )

    async def binding(
        self, registry: str, name: str, version: int, language: str
    ) -> BindingRecord | None:
        row = await self.one(
            "SELECT status, created, modified, source FROM schema_bindings"
            " WHERE registry = ? AND name = ? AND version = ? AND language = ?",
            (registry, name, version, language),
        )
        if row is None:
            return None
        source = bytes(row[3]) if row[3] is not None else None
        return BindingRecord(registry, name, version, language, row[0], row[1], row[2], source)
