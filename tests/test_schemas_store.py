"""The schema registry's store and operations (``SchemaStore``, ``Registry``,
``Discovery``) on both engines: a SQLite file and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipelines.clock import ManualClock
from plugins.schemas.content import SchemaError
from plugins.schemas.discovery import Discovery
from plugins.schemas.infer import DRAFT4, OPENAPI
from plugins.schemas.registry import STOPPED, Registry
from plugins.schemas.store import DISCOVERED, BindingRecord, SchemaStore, VersionRecord

SCHEMA = json.dumps(
    {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "properties": {"total": {"type": "number"}},
    }
)
OTHER = json.dumps({"type": "object", "properties": {"total": {"type": "string"}}})


def event(detail: dict[str, Any], detail_type: str = "Order Placed") -> dict[str, Any]:
    return {
        "version": "0",
        "id": "1",
        "detail-type": detail_type,
        "source": "shop",
        "account": "123456789012",
        "time": "2026-12-04T10:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": detail,
    }


async def refusal(call: Any) -> SchemaError:
    with pytest.raises(SchemaError) as raised:
        await call
    return raised.value


async def test_registries_and_schema_versions(state_location: str) -> None:
    clock = ManualClock(1000.0)
    announced: list[tuple[str, int, bool]] = []

    async def announce(version: VersionRecord, created: bool) -> None:
        announced.append((version.name, version.version, created))

    async with await SchemaStore.open(state_location, clock) as store:
        registry = Registry(store, announce)
        names = {r.name for r in await store.registries()}
        assert {"aws.events", "discovered-schemas"} <= names
        await registry.create_registry("shop", "orders", {"team": "a"})
        error = await refusal(registry.create_registry("shop"))
        assert (error.code, error.message) == (
            "ConflictException",
            "Registry with name shop already exists.",
        )
        made = await registry.create_schema("shop", "shop@Order", DRAFT4, SCHEMA, "first")
        assert (made.version, made.created) == (1, 1000.0)
        await clock.advance(5)
        second = await registry.update_schema("shop", "shop@Order", content=OTHER)
        assert (second.version, second.type, second.created) == (2, DRAFT4, 1005.0)
        # A description alone makes no version.
        same = await registry.update_schema("shop", "shop@Order", description="changed")
        assert same.version == 2
        assert announced == [("shop@Order", 1, True), ("shop@Order", 2, False)]
        schema, latest = await registry.schema_version("shop", "shop@Order")
        assert (schema.description, schema.versions, latest.content) == ("changed", 2, OTHER)
        _, first = await registry.schema_version("shop", "shop@Order", 1)
        assert first.content == SCHEMA
        # A deleted version's number is not given again.
        await registry.delete_version("shop", "shop@Order", 2)
        third = await registry.update_schema("shop", "shop@Order", content=OTHER)
        assert third.version == 3
        assert [v.version for v in await registry.list_versions("shop", "shop@Order")] == [1, 3]
        error = await refusal(registry.delete_version("shop", "shop@Order", 2))
        assert error.message == "Schema with name shop@Order and version 2 does not exist."
        error = await refusal(registry.create_schema("shop", "shop@Order", DRAFT4, SCHEMA))
        assert error.code == "ConflictException"
        error = await refusal(registry.create_schema("none", "x", DRAFT4, SCHEMA))
        assert (error.code, error.message) == (
            "NotFoundException",
            "Registry with name none does not exist.",
        )
        error = await refusal(registry.create_schema("shop", "bad", OPENAPI, SCHEMA))
        assert error.code == "BadRequestException"
        found = await registry.search("shop", "ORDER nothing")
        assert [(s.name, [v.version for v in vs]) for s, vs in found] == [("shop@Order", [1, 3])]
        await store.put_binding(
            BindingRecord("shop", "shop@Order", 3, "Python36", "CREATE_COMPLETE", 1, 1, b"zip")
        )
        assert await store.set_tags("schema_registries", {"name": "shop"}, {"x": "y"})

    # Durable: a new store on the same database sees it all.
    async with await SchemaStore.open(state_location, clock) as store:
        registry = Registry(store)
        assert (await registry.describe_registry("shop")).tags == {"x": "y"}
        binding = await store.binding("shop", "shop@Order", 3, "Python36")
        assert binding is not None and binding.source == b"zip"
        await registry.delete_registry("shop")
        assert await store.get_schema("shop", "shop@Order") is None
        assert await store.binding("shop", "shop@Order", 3, "Python36") is None
        error = await refusal(registry.delete_registry("discovered-schemas"))
        assert error.code == "BadRequestException"


async def test_discoverers(state_location: str) -> None:
    async with await SchemaStore.open(state_location) as store:
        registry = Registry(store)
        arn = "arn:aws:events:us-east-1:000000000000:event-bus/orders"
        made = await registry.create_discoverer(arn, "d")
        assert made.id == "events-event-bus-orders"
        error = await refusal(registry.create_discoverer(arn))
        assert error.code == "ConflictException"
        stopped = await registry.update_discoverer(made.id, state=STOPPED)
        assert stopped.state == STOPPED
        await registry.delete_discoverer(made.id)
        error = await refusal(registry.describe_discoverer(made.id))
        assert (error.code, error.message) == (
            "NotFoundException",
            "Discoverer with id events-event-bus-orders does not exist.",
        )


async def test_discovery_makes_a_version_per_structure_not_per_value(state_location: str) -> None:
    announced: list[tuple[str, int, bool]] = []

    async def announce(version: VersionRecord, created: bool) -> None:
        announced.append((version.name, version.version, created))

    async with await SchemaStore.open(state_location) as store:
        discovery = Discovery(Registry(store, announce))
        discovery.watching = {"default"}
        for total in (1, 2, 3):
            discovery.observe("default", event({"id": "a", "total": total}))
        discovery.observe("other", event({"id": "a", "total": 4}))  # not watched
        await discovery.drain()
        assert announced == [("shop@OrderPlaced", 1, True)]
        assert discovery.looked == 3
        # A new field: a new version; the old shape again: nothing new.
        discovery.observe("default", event({"id": "a", "total": 1, "coupon": "c"}))
        discovery.observe("default", event({"id": "b", "total": 9}))
        await discovery.drain()
        assert announced[-1] == ("shop@OrderPlaced", 2, False)
        versions = await store.versions(DISCOVERED, "shop@OrderPlaced")
        assert len(versions) == 2
        latest = json.loads(versions[-1].content)["components"]["schemas"]["OrderPlaced"]
        assert set(latest["properties"]) == {"id", "total", "coupon"}
        assert latest["required"] == ["id", "total"]

    # After a restart, discovery goes on from the stored version.
    async with await SchemaStore.open(state_location) as store:
        discovery = Discovery(Registry(store, announce))
        discovery.watching = {"default"}
        discovery.observe("default", event({"id": "c", "total": 2}))
        await discovery.drain()
        assert len(await store.versions(DISCOVERED, "shop@OrderPlaced")) == 2


async def test_discovery_drops_and_counts_past_its_queue() -> None:
    async with await SchemaStore.open(None) as store:
        discovery = Discovery(Registry(store), queue=2)
        discovery.watching = {"default"}
        for n in range(5):
            discovery.observe("default", event({"n": n}))
        assert discovery.dropped == 3
        await discovery.drain()
        assert discovery.looked == 2
