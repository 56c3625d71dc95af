"""The ``schemas`` resource: a runtime's schema registry at work.

Declared in a pipeline's YAML like any resource (one per runtime)::

    resources:
      schemas:
        type: schemas
        registries:
          shop:
            description: What the shop puts on its buses
            schemas:
              shop@OrderPlaced:
                type: JSONSchemaDraft4        # or OpenApi3 (default JSONSchemaDraft4)
                description: An order, as placed
                content: {...}                 # the schema, as YAML or as JSON text
        discoverers: [default]                 # buses whose events are discovered
        require:                               # validation
          - bus: default
            source: shop
            detail_type: OrderPlaced
            schema: shop/shop@OrderPlaced      # registry/name
            version: 1                         # default: the latest at start
            on_failure: reject                 # or dead_letter (with dead_letter: RESOURCE)
            rule: orders                       # optional: only the events this rule matches

(A rule's ``require:`` in the YAML comes here with its ``rule`` and ``bus``:
``pipelines.config`` folds it in.)
        discovery: {queue: 64, interval: 0.1}       # sampling: at most queue/interval a second

Its ``start`` opens the ``SchemaStore`` (the state database, or memory
without one), puts the declared registries and schemas (a schema whose
declared content differs from its latest version gets a new version),
creates the declared discoverers, taps the buses for discovery
(``Discovery``) and screens the buses with requirements (``Screens``). The
schemas API works on the running resource (``registry_of``); it makes one
when the pipeline declares none.

A rule cannot target it: it takes no events of its own.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import weakref
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson

from pipelines.bus import check_name
from pipelines.errors import (
    ConfigError,
    DeliveryError,
    NotRunningError,
    Problems,
    ResourceNotFoundError,
    Where,
)
from pipelines.targets import (
    Built,
    DeliveryContext,
    Target,
    TargetServices,
    TargetType,
    check_keys,
)
from plugins.schemas.content import SchemaError, Validator, check_content, compile_validator
from plugins.schemas.discovery import INTERVAL, QUEUE, Discovery
from plugins.schemas.infer import DRAFT4, TYPES, dumps
from plugins.schemas.registry import STARTED, Registry, bus_of, schema_arn
from plugins.schemas.store import SchemaStore, VersionRecord
from plugins.schemas.validation import DEAD_LETTER, REJECT, Compiled, Requirement, Screens

log = logging.getLogger("plugins.schemas")

TYPE_NAME = "schemas"
KEYS = {"registries", "discoverers", "require", "discovery"}
REGISTRY_KEYS = {"description", "schemas"}
SCHEMA_KEYS = {"type", "description", "content"}
REQUIRE_KEYS = {
    "bus",
    "source",
    "detail_type",
    "schema",
    "version",
    "on_failure",
    "dead_letter",
    "rule",
}
SOURCE = "aws.schemas"

_RUNNING: weakref.WeakKeyDictionary[Any, SchemasResource] = weakref.WeakKeyDictionary()


def registry_of(services: Any) -> SchemasResource | None:
    """The runtime's running ``schemas`` resource, if it has one."""
    return _RUNNING.get(services)


class DeclaredSchema:
    def __init__(self, kind: str, content: str, description: str) -> None:
        self.kind = kind
        self.content = content
        self.description = description


def _text(where: Where, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(where, f"must be a string, not {value!r}")
    return value


def _parse_schema(where: Where, body: Any) -> DeclaredSchema:
    if not isinstance(body, Mapping):
        raise ConfigError(where, "a schema is a mapping with type, description and content")
    check_keys(where, body, SCHEMA_KEYS)
    kind = body.get("type", DRAFT4)
    if kind not in TYPES:
        raise ConfigError(where / "type", f"must be OpenApi3 or JSONSchemaDraft4, not {kind!r}")
    content = body.get("content")
    if content is None:
        raise ConfigError(where / "content", "is required: the schema, as a mapping or JSON text")
    text = content if isinstance(content, str) else dumps(content)
    try:
        check_content(kind, text)
    except SchemaError as exc:
        if isinstance(content, str):  # JSON text: the path is within it
            raise ConfigError(where / "content", exc.message) from None
        at = where / "content"
        for part in exc.path:
            at = at / part
        raise ConfigError(at, f"not a valid {kind} schema: {exc.reason}") from None
    return DeclaredSchema(kind, text, _text(where / "description", body.get("description", "")))


def _parse_requirement(where: Where, body: Any) -> Requirement:
    if not isinstance(body, Mapping):
        raise ConfigError(where, "a requirement is a mapping with bus, source, detail_type, schema")
    check_keys(where, body, REQUIRE_KEYS)
    for key in ("source", "detail_type", "schema"):
        if key not in body:
            raise ConfigError(where / key, "is required")
    schema = _text(where / "schema", body["schema"])
    registry, slash, name = schema.partition("/")
    if not slash or not registry or not name:
        raise ConfigError(where / "schema", f"is REGISTRY/SCHEMA, not {schema!r}")
    version = body.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise ConfigError(where / "version", f"must be a version number, not {version!r}")
    on_failure = body.get("on_failure", REJECT)
    if on_failure not in (REJECT, DEAD_LETTER):
        raise ConfigError(
            where / "on_failure", f"must be reject or dead_letter, not {on_failure!r}"
        )
    dead_letter = body.get("dead_letter")
    if on_failure == DEAD_LETTER and not isinstance(dead_letter, str):
        raise ConfigError(where / "dead_letter", "is required with on_failure: dead_letter")
    if on_failure == REJECT and dead_letter is not None:
        raise ConfigError(where / "dead_letter", "is taken only with on_failure: dead_letter")
    rule = body.get("rule")
    if rule is not None:
        check_name(where / "rule", "rule name", rule)
    return Requirement(
        bus=_text(where / "bus", body.get("bus", "default")),
        source=_text(where / "source", body["source"]),
        detail_type=_text(where / "detail_type", body["detail_type"]),
        registry=registry,
        schema=name,
        version=version,
        on_failure=on_failure,
        dead_letter=dead_letter,
        rule=rule,
    )


_SCHEMA_BODY = {
    "type": "object",
    "required": ["content"],
    "additionalProperties": False,
    "properties": {
        "type": {"enum": list(TYPES), "default": DRAFT4},
        "description": {"type": "string"},
        "content": {
            "type": ["object", "string"],
            "description": "the schema: a mapping, or its JSON text",
        },
    },
}


class SchemasType(TargetType):
    name = TYPE_NAME
    description = "the schema registry: registries, schemas, discovery and validation"
    settings_schema: Mapping[str, Any] | None = MappingProxyType(
        {
            "properties": {
                "registries": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "description": {"type": "string"},
                            "schemas": {"type": "object", "additionalProperties": _SCHEMA_BODY},
                        },
                    },
                },
                "discoverers": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "buses whose events are discovered",
                },
                "require": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["source", "detail_type", "schema"],
                        "properties": {
                            "bus": {"type": "string", "default": "default"},
                            "source": {"type": "string"},
                            "detail_type": {"type": "string"},
                            "schema": {"type": "string", "description": "REGISTRY/SCHEMA"},
                            "version": {"type": "integer", "minimum": 1},
                            "on_failure": {"enum": [REJECT, DEAD_LETTER], "default": REJECT},
                            "dead_letter": {"type": "string", "description": "a resource name"},
                            "rule": {
                                "type": "string",
                                "description": "a rule of the bus: only the events it matches",
                            },
                        },
                    },
                },
                "discovery": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "queue": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
                        "interval": {"type": "number", "minimum": 0, "maximum": 60},
                    },
                },
            }
        }
    )

    def create(self, name: str, config: Mapping[str, Any]) -> SchemasResource:
        where = Where(f"resource {name}")
        # Every problem of the declaration, not just its first.
        problems = Problems()
        with problems:
            check_keys(where, config, KEYS)
        registries: dict[str, tuple[str, dict[str, DeclaredSchema]]] = {}
        declared = config.get("registries") or {}
        if not isinstance(declared, Mapping):
            raise ConfigError(where / "registries", "a mapping of registry names to registries")
        for registry, body in declared.items():
            at = where / "registries" / str(registry)
            if not isinstance(body, Mapping):
                problems.add(
                    ConfigError(at, "a registry is a mapping with description and schemas")
                )
                continue
            with problems:
                check_keys(at, body, REGISTRY_KEYS)
            schemas = body.get("schemas") or {}
            if not isinstance(schemas, Mapping):
                problems.add(ConfigError(at / "schemas", "a mapping of schema names to schemas"))
                continue
            parsed: dict[str, DeclaredSchema] = {}
            for schema_name, schema in schemas.items():
                with problems:
                    parsed[str(schema_name)] = _parse_schema(
                        at / "schemas" / str(schema_name), schema
                    )
            with problems:
                description = _text(at / "description", body.get("description", ""))
                registries[str(registry)] = (description, parsed)
        buses = config.get("discoverers") or []
        if not isinstance(buses, list) or not all(isinstance(b, str) for b in buses):
            problems.add(ConfigError(where / "discoverers", "a list of bus names"))
            buses = []
        require = config.get("require") or []
        if not isinstance(require, list):
            problems.add(ConfigError(where / "require", "a list of requirements"))
            require = []
        requirements: list[Requirement] = []
        for index, body in enumerate(require):
            with problems:
                requirements.append(_parse_requirement(where / "require" / index, body))
        problems.raise_any()
        discovery = config.get("discovery") or {}
        if not isinstance(discovery, Mapping):
            raise ConfigError(where / "discovery", "a mapping with queue and interval")
        check_keys(where / "discovery", discovery, {"queue", "interval"})
        queue = discovery.get("queue", QUEUE)
        if isinstance(queue, bool) or not isinstance(queue, int) or not 1 <= queue <= 1_000_000:
            raise ConfigError(where / "discovery" / "queue", "a number of events, 1 to 1000000")
        interval = discovery.get("interval", INTERVAL)
        if (
            isinstance(interval, bool)
            or not isinstance(interval, int | float)
            or not (0 <= interval <= 60)
        ):
            raise ConfigError(where / "discovery" / "interval", "seconds, 0 to 60")
        return SchemasResource(
            name, registries, list(buses), requirements, int(queue), float(interval)
        )


class SchemasResource(Target):
    def __init__(
        self,
        name: str,
        registries: dict[str, tuple[str, dict[str, DeclaredSchema]]],
        discoverers: list[str],
        requirements: list[Requirement],
        queue: int = QUEUE,
        interval: float = INTERVAL,
    ) -> None:
        self.name = name
        self.declared = registries
        self.discoverer_buses = discoverers
        self.requirements = requirements
        self.queue = queue
        self.interval = interval
        self.services: TargetServices | None = None
        self.store: SchemaStore | None = None
        self.registry: Registry | None = None
        self.discovery: Discovery | None = None
        self.screens: Screens | None = None
        self._stack = contextlib.ExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self._announcements: collections.deque[list[dict[str, Any]]] = collections.deque()
        self._announce_ready = asyncio.Event()

    def references(self) -> list[tuple[tuple[str | int, ...], str]]:
        return [
            (("require", i, "dead_letter"), r.dead_letter)
            for i, r in enumerate(self.requirements)
            if r.dead_letter is not None
        ]

    def check_links(self, built: Built) -> None:
        """The buses its discoverers and requirements name exist (what
        ``start`` would refuse), so that ``pipelines validate`` says so."""
        buses = built.bus_names()
        where = Where(f"resource {self.name}")
        problems = Problems()
        for index, bus in enumerate(self.discoverer_buses):
            if bus not in buses:
                problems.add(
                    ConfigError(
                        where / "discoverers" / index, f"no bus {bus!r} (declare it under buses)"
                    )
                )
        for index, requirement in enumerate(self.requirements):
            if requirement.bus not in buses:
                problems.add(
                    ConfigError(
                        where / "require" / index / "bus",
                        f"no bus {requirement.bus!r} (declare it under buses)",
                    )
                )
        problems.raise_any()

    async def start(self, services: TargetServices) -> None:
        self.services = services
        self.store = await SchemaStore.open(services.state_path, services.clock)
        try:
            self.registry = Registry(self.store, self._announce)
            await self._put_declared()
            discovery = self.discovery = Discovery(
                self.registry, queue=self.queue, interval=self.interval
            )
            await self.refresh_discoverers()
            self._stack.enter_context(services.tap(discovery.observe))
            screens = self.screens = Screens(services)
            # One validator per schema version, however many requirements name it.
            validators: dict[tuple[str, str, int], Validator] = {}
            for index, requirement in enumerate(self.requirements):
                screens.add(await self._compile(index, requirement, validators))
            for bus in screens.buses:
                rules = screens.rules_of(bus)
                match = self._stack.enter_context(services.watch_rules(bus, rules))
                screen = screens.screen_of(bus, match if rules else None)
                self._stack.enter_context(services.screen(bus, screen))
            self._tasks = [
                services.spawn(discovery.run()),
                services.spawn(screens.run()),
                services.spawn(self._announcing()),
            ]
        except BaseException:
            await self.stop()
            raise
        _RUNNING[services] = self

    async def _put_declared(self) -> None:
        assert self.registry is not None and self.store is not None
        registry = self.registry
        for name, (description, schemas) in self.declared.items():
            found = await self.store.registry(name)
            if found is None:
                await registry.create_registry(name, description)
            elif found.description != description:
                await registry.update_registry(name, description)
            for schema, declared in schemas.items():
                latest = await self.store.get_version(name, schema)
                if await self.store.get_schema(name, schema) is None:
                    await registry.create_schema(
                        name, schema, declared.kind, declared.content, declared.description
                    )
                elif latest is None or not _same(latest.content, declared.content):
                    await registry.update_schema(
                        name, schema, declared.kind, declared.content, declared.description
                    )
        where = Where(f"resource {self.name}")
        assert self.services is not None
        buses = self.services.bus_names()
        for index, bus in enumerate(self.discoverer_buses):
            if bus not in buses:
                raise ConfigError(
                    where / "discoverers" / index, f"no bus {bus!r} (declare it under buses)"
                )
            arn = f"arn:aws:events:us-east-1:000000000000:event-bus/{bus}"
            if not any(bus_of(d.source_arn) == bus for d in await self.store.discoverers()):
                await registry.create_discoverer(arn)

    async def _compile(
        self,
        index: int,
        requirement: Requirement,
        validators: dict[tuple[str, str, int], Validator],
    ) -> Compiled:
        assert self.store is not None and self.services is not None
        where = Where(f"resource {self.name}") / "require" / index
        if requirement.bus not in self.services.bus_names():
            raise ConfigError(where / "bus", f"no bus {requirement.bus!r} (declare it under buses)")
        if requirement.rule is not None:
            try:
                with self.services.watch_rules(requirement.bus, [requirement.rule]):
                    pass  # (it exists)
            except ResourceNotFoundError as exc:
                raise ConfigError(where / "rule", str(exc)) from None
        found = await self.store.get_version(
            requirement.registry, requirement.schema, requirement.version
        )
        if found is None:
            version = "" if requirement.version is None else f" version {requirement.version}"
            raise ConfigError(
                where / "schema",
                f"no schema {requirement.schema}{version} in registry {requirement.registry!r}",
            )
        key = (requirement.registry, requirement.schema, found.version)
        validator = validators.get(key)
        if validator is None:
            validator = validators[key] = compile_validator(found.type, found.content)
        arn = schema_arn(requirement.registry, requirement.schema)
        return Compiled(requirement, found.version, arn, validator)

    async def refresh_discoverers(self) -> None:
        """Watch the buses of the STARTED discoverers (after a change through the API)."""
        assert self.store is not None and self.discovery is not None
        self.discovery.watching = {
            bus_of(d.source_arn) for d in await self.store.discoverers() if d.state == STARTED
        }

    async def _announce(self, version: VersionRecord, created: bool) -> None:
        """AWS's "Schema Created" (for a new schema) and "Schema Version
        Created" events on the default bus."""
        if self.services is None:
            return
        detail = {
            "SchemaName": version.name,
            "SchemaType": version.type,
            "RegistryName": version.registry,
            "CreationDate": _iso(version.created),
            "Version": str(version.version),
        }
        resource = schema_arn(version.registry, version.name)
        kinds = (
            ["Schema Created", "Schema Version Created"] if created else ["Schema Version Created"]
        )
        entries = [
            {
                "Source": SOURCE,
                "DetailType": kind,
                "Detail": orjson.dumps(detail).decode(),
                "Resources": [resource],
            }
            for kind in kinds
        ]
        # Put by the announcing task: a schema declared in YAML is made while
        # the runtime starts, before it takes events.
        self._announcements.append(entries)
        self._announce_ready.set()

    async def _announcing(self) -> None:
        """Put the announcements, in order, until cancelled."""
        assert self.services is not None
        while True:
            await self._announce_ready.wait()
            self._announce_ready.clear()
            while self._announcements:
                entries = self._announcements.popleft()
                try:
                    result = await self.services.put_events(entries)
                except NotRunningError:
                    return
                if result["FailedEntryCount"]:
                    log.error("schema events not put: %s", result["Entries"])

    async def deliver(self, payload: Any, context: DeliveryContext) -> Any:
        raise DeliveryError(
            "NotATarget", f"resource {self.name} (schemas) takes no events", retryable=False
        )

    async def drain(self, timeout: float) -> None:
        """Deliver the dead letters still waiting and look at the events still
        queued for discovery, within ``timeout``; what is left is logged."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                if self.screens is not None:
                    await self.screens.deliver_waiting()
                if self.discovery is not None:
                    await self.discovery.drain()
        if self.screens is not None and self.screens.waiting:
            log.error(
                "%d events refused by a schema were not dead-lettered before the stop",
                self.screens.waiting,
            )

    async def stop(self) -> None:
        if self.services is not None and _RUNNING.get(self.services) is self:
            del _RUNNING[self.services]
        self._stack.close()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        self._tasks = []
        if self.store is not None:
            await self.store.close()
            self.store = None


def _same(stored: str, declared: str) -> bool:
    try:
        return bool(orjson.loads(stored) == orjson.loads(declared))
    except orjson.JSONDecodeError:
        return stored == declared


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
