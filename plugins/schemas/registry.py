"""The schema registry's operations over its store, in AWS's terms.

``Registry`` is what the schemas API, the CLI and the ``schemas`` resource's
declarations call: each method checks its input as AWS does and raises
``SchemaError`` with AWS's code (``NotFoundException``, ``ConflictException``,
``BadRequestException``), and answers records of ``plugins.schemas.store``.
ARNs are AWS's: ``arn:aws:schemas:REGION:ACCOUNT:registry/NAME``,
``.../schema/REGISTRY/NAME``, ``.../discoverer/ID``.

Every new schema and schema version is announced through ``announce``
(the resource puts AWS's "Schema Created" and "Schema Version Created"
events on the default bus).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from pipelines.event import DEFAULT_ACCOUNT, DEFAULT_REGION
from plugins.schemas.content import SchemaError, bad_request, check_content
from plugins.schemas.infer import TYPES
from plugins.schemas.store import (
    BUILT_IN,
    DiscovererRecord,
    RegistryRecord,
    SchemaRecord,
    SchemaStore,
    VersionRecord,
)

STARTED, STOPPED = "STARTED", "STOPPED"
#: AWS's limit on Content (the model's StringMin1Max100000).
MAX_CONTENT = 100_000
_NAME = re.compile(r"[.\-_A-Za-z@0-9]{1,385}")

#: Told of each new version: (version, created: whether it is the schema's first).
Announce = Callable[[VersionRecord, bool], Awaitable[None]]


def not_found(what: str, name: str) -> SchemaError:
    return SchemaError("NotFoundException", f"{what} with name {name} does not exist.")


def registry_arn(name: str, region: str = DEFAULT_REGION, account: str = DEFAULT_ACCOUNT) -> str:
    return f"arn:aws:schemas:{region}:{account}:registry/{name}"


def schema_arn(
    registry: str, name: str, region: str = DEFAULT_REGION, account: str = DEFAULT_ACCOUNT
) -> str:
    return f"arn:aws:schemas:{region}:{account}:schema/{registry}/{name}"


def discoverer_arn(
    discoverer_id: str, region: str = DEFAULT_REGION, account: str = DEFAULT_ACCOUNT
) -> str:
    return f"arn:aws:schemas:{region}:{account}:discoverer/{discoverer_id}"


def discoverer_id(bus: str) -> str:
    """The id AWS gives a bus's discoverer."""
    return f"events-event-bus-{bus}"


def bus_of(source_arn: str) -> str:
    """The bus a discoverer's SourceArn names (``arn:aws:events:...:event-bus/NAME``)."""
    return source_arn.rsplit("/", 1)[-1] if "event-bus/" in source_arn else source_arn


def version_number(text: str | None) -> int | None:
    """A SchemaVersion parameter as a number (None: the latest)."""
    if text is None or text == "":
        return None
    if not text.isdigit():
        raise bad_request(f"Invalid SchemaVersion {text!r}: a version number")
    return int(text)


def _check_name(kind: str, name: str) -> None:
    if not _NAME.fullmatch(name):
        raise bad_request(f"Invalid {kind} name {name!r}: 1 to 385 letters, digits and . - _ @")


class Registry:
    """The registries, schemas and discoverers of one state database."""

    def __init__(self, store: SchemaStore, announce: Announce | None = None) -> None:
        self.store = store
        self.announce = announce

    # -- registries --------------------------------------------------------------------

    async def create_registry(
        self, name: str, description: str = "", tags: dict[str, str] | None = None
    ) -> RegistryRecord:
        _check_name("registry", name)
        if not await self.store.create_registry(name, description, tags):
            raise SchemaError("ConflictException", f"Registry with name {name} already exists.")
        return RegistryRecord(name, description, dict(tags or {}))

    async def describe_registry(self, name: str) -> RegistryRecord:
        found = await self.store.registry(name)
        if found is None:
            raise not_found("Registry", name)
        return found

    async def update_registry(self, name: str, description: str) -> RegistryRecord:
        if not await self.store.update_registry(name, description):
            raise not_found("Registry", name)
        return await self.describe_registry(name)

    async def delete_registry(self, name: str) -> None:
        if name in BUILT_IN:
            raise bad_request(f"Registry {name} is AWS's own: it cannot be deleted.")
        if not await self.store.delete_registry(name):
            raise not_found("Registry", name)

    # -- schemas -----------------------------------------------------------------------

    async def create_schema(
        self,
        registry: str,
        name: str,
        kind: str,
        content: str,
        description: str = "",
        tags: dict[str, str] | None = None,
    ) -> VersionRecord:
        _check_name("schema", name)
        self._check(kind, content)
        await self.describe_registry(registry)
        made = await self.store.create_schema(registry, name, kind, content, description, tags)
        if made is None:
            raise SchemaError("ConflictException", f"Schema with name {name} already exists.")
        if self.announce is not None:
            await self.announce(made, True)
        return made

    async def update_schema(
        self,
        registry: str,
        name: str,
        kind: str | None = None,
        content: str | None = None,
        description: str | None = None,
    ) -> VersionRecord:
        """A new version when ``content`` is given; else the description alone."""
        if content is not None:
            current = await self.store.get_schema(registry, name)
            self._check(kind or (current.type if current else TYPES[0]), content)
        made = await self.store.add_version(registry, name, kind, content, description)
        if made is None:
            await self.describe_registry(registry)
            raise not_found("Schema", name)
        if content is not None and self.announce is not None:
            await self.announce(made, False)
        return made

    def _check(self, kind: str, content: str) -> None:
        if kind not in TYPES:
            raise bad_request(f"Invalid schema type {kind!r}: OpenApi3 or JSONSchemaDraft4")
        if not 1 <= len(content) <= MAX_CONTENT:
            raise bad_request(f"Content must be 1 to {MAX_CONTENT} characters long")
        check_content(kind, content)

    async def describe_schema(self, registry: str, name: str) -> SchemaRecord:
        found = await self.store.get_schema(registry, name)
        if found is None:
            await self.describe_registry(registry)
            raise not_found("Schema", name)
        return found

    async def schema_version(
        self, registry: str, name: str, version: int | None = None
    ) -> tuple[SchemaRecord, VersionRecord]:
        schema = await self.describe_schema(registry, name)
        found = await self.store.get_version(registry, name, version)
        if found is None:
            raise SchemaError(
                "NotFoundException",
                f"Schema with name {name} and version {version} does not exist."
                if version is not None
                else f"Schema with name {name} has no version.",
            )
        return schema, found

    async def list_schemas(self, registry: str, prefix: str = "") -> list[SchemaRecord]:
        await self.describe_registry(registry)
        return await self.store.schemas(registry, prefix)

    async def list_versions(self, registry: str, name: str) -> list[VersionRecord]:
        await self.describe_schema(registry, name)
        return await self.store.versions(registry, name)

    async def delete_version(self, registry: str, name: str, version: int) -> None:
        await self.describe_schema(registry, name)
        if not await self.store.delete_version(registry, name, version):
            raise SchemaError(
                "NotFoundException",
                f"Schema with name {name} and version {version} does not exist.",
            )

    async def delete_schema(self, registry: str, name: str) -> None:
        await self.describe_registry(registry)
        if not await self.store.delete_schema(registry, name):
            raise not_found("Schema", name)

    async def search(
        self, registry: str, keywords: str
    ) -> list[tuple[SchemaRecord, list[VersionRecord]]]:
        """SearchSchemas: schemas whose name holds one of the keywords (any case)."""
        words = [w.lower() for w in keywords.split() if w]
        found = []
        for schema in await self.list_schemas(registry):
            if any(word in schema.name.lower() for word in words):
                found.append((schema, await self.store.versions(registry, schema.name)))
        return found

    # -- discoverers -------------------------------------------------------------------

    async def create_discoverer(
        self,
        source_arn: str,
        description: str = "",
        cross_account: bool = True,
        tags: dict[str, str] | None = None,
    ) -> DiscovererRecord:
        record = DiscovererRecord(
            discoverer_id(bus_of(source_arn)),
            source_arn,
            description,
            STARTED,
            cross_account,
            dict(tags or {}),
        )
        if not await self.store.create_discoverer(record):
            raise SchemaError(
                "ConflictException", f"Discoverer for source {source_arn} already exists."
            )
        return record

    async def describe_discoverer(self, discoverer: str) -> DiscovererRecord:
        found = await self.store.discoverer(discoverer)
        if found is None:
            raise SchemaError(
                "NotFoundException", f"Discoverer with id {discoverer} does not exist."
            )
        return found

    async def update_discoverer(self, discoverer: str, **changes: Any) -> DiscovererRecord:
        if not await self.store.update_discoverer(discoverer, **changes):
            await self.describe_discoverer(discoverer)
        return await self.describe_discoverer(discoverer)

    async def delete_discoverer(self, discoverer: str) -> None:
        if not await self.store.delete_discoverer(discoverer):
            await self.describe_discoverer(discoverer)
