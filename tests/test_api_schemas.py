"""The schemas service over HTTP: boto3's schemas client against the
endpoint (REST-JSON), discovery and validation seen through the events
client's PutEvents, code bindings' zips."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from pipelines.api import ApiServer, served_services
from pipelines.errors import ConfigError
from pipelines.runtime import Runtime

from .apiclient import aws_call, aws_refusal, boto
from .recorder import Recorder
from .schemas_plugin import schema_plugins

BUS_ARN = "arn:aws:events:us-east-1:000000000000:event-bus/{}"
DRAFT4 = {
    "$schema": "http://json-schema.org/draft-04/schema#",
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {
            "type": "object",
            "required": ["orderId", "total"],
            "properties": {"orderId": {"type": "string"}, "total": {"type": "number"}},
        }
    },
}


class Clients:
    def __init__(self, runtime: Runtime, url: str) -> None:
        self.runtime = runtime
        self.schemas = boto("schemas", url)
        self.events = boto("events", url)

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        return await aws_call(self.schemas, operation, **params)

    async def error(self, operation: str, **params: Any) -> tuple[str, str, int]:
        response = (await aws_refusal(self.schemas, operation, **params)).response
        error = response["Error"]
        return error["Code"], error["Message"], response["ResponseMetadata"]["HTTPStatusCode"]

    async def put(self, *entries: dict[str, Any]) -> dict[str, Any]:
        return await aws_call(self.events, "put_events", Entries=list(entries))

    def recorder(self, name: str) -> Recorder:
        found = self.runtime.resource(name)
        assert isinstance(found, Recorder)
        return found


async def served(
    tmp_path: Path, resources: dict[str, tuple[str, dict[str, Any]]]
) -> AsyncIterator[Clients]:
    plugins = schema_plugins()
    runtime = Runtime(state_path=tmp_path / "state.db", plugins=plugins)
    runtime.create_bus("orders")
    for name, (kind, settings) in resources.items():
        runtime.add_resource(name, kind, settings)
    bus = runtime.bus()
    bus.put_rule("schema-events", pattern={"source": ["aws.schemas"]})
    await bus.put_targets("schema-events", [{"id": "a", "resource": "audit"}])
    server = ApiServer(runtime, served_services(plugins), "127.0.0.1", 0)
    await server.start()
    try:
        async with runtime:
            yield Clients(runtime, server.url)
    finally:
        await server.close()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Clients]:
    async for clients in served(tmp_path, {"audit": ("recorder", {})}):
        yield clients


def order(detail: dict[str, Any], bus: str = "default") -> dict[str, Any]:
    return {
        "Source": "shop",
        "DetailType": "Order Placed",
        "Detail": json.dumps(detail),
        "EventBusName": bus,
    }


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def test_registries(api: Clients) -> None:
    made = await api.call("create_registry", RegistryName="shop", Description="d", Tags={"t": "1"})
    assert made == {
        "RegistryName": "shop",
        "RegistryArn": "arn:aws:schemas:us-east-1:000000000000:registry/shop",
        "Description": "d",
        "Tags": {"t": "1"},
    }
    assert await api.error("create_registry", RegistryName="shop") == (
        "ConflictException",
        "Registry with name shop already exists.",
        409,
    )
    assert await api.error("describe_registry", RegistryName="none") == (
        "NotFoundException",
        "Registry with name none does not exist.",
        404,
    )
    updated = await api.call("update_registry", RegistryName="shop", Description="e")
    assert updated["Description"] == "e"
    listed = await api.call("list_registries", Limit=2)
    assert [r["RegistryName"] for r in listed["Registries"]] == ["aws.events", "discovered-schemas"]
    rest = await api.call("list_registries", Limit=2, NextToken=listed["NextToken"])
    assert [r["RegistryName"] for r in rest["Registries"]] == ["shop"]
    assert "NextToken" not in rest
    arn = made["RegistryArn"]
    await api.call("tag_resource", ResourceArn=arn, Tags={"u": "2"})
    await api.call("untag_resource", ResourceArn=arn, TagKeys=["t"])
    assert await api.call("list_tags_for_resource", ResourceArn=arn) == {"Tags": {"u": "2"}}
    await api.call("delete_registry", RegistryName="shop")
    assert (await api.error("delete_registry", RegistryName="shop"))[2] == 404


async def test_schemas_and_versions(api: Clients) -> None:
    await api.call("create_registry", RegistryName="shop")
    content = json.dumps(DRAFT4)
    made = await api.call(
        "create_schema",
        RegistryName="shop",
        SchemaName="shop@OrderPlaced",
        Type="JSONSchemaDraft4",
        Content=content,
        Description="orders",
    )
    assert made["SchemaVersion"] == "1"
    assert (
        made["SchemaArn"] == "arn:aws:schemas:us-east-1:000000000000:schema/shop/shop@OrderPlaced"
    )
    assert made["Type"] == "JSONSchemaDraft4"
    changed = {**DRAFT4, "title": "v2"}
    updated = await api.call(
        "update_schema",
        RegistryName="shop",
        SchemaName="shop@OrderPlaced",
        Content=json.dumps(changed),
    )
    assert updated["SchemaVersion"] == "2"
    described = await api.call(
        "describe_schema", RegistryName="shop", SchemaName="shop@OrderPlaced"
    )
    assert (described["SchemaVersion"], json.loads(described["Content"])) == ("2", changed)
    assert described["Description"] == "orders"
    first = await api.call(
        "describe_schema", RegistryName="shop", SchemaName="shop@OrderPlaced", SchemaVersion="1"
    )
    assert first["Content"] == content
    versions = await api.call(
        "list_schema_versions", RegistryName="shop", SchemaName="shop@OrderPlaced"
    )
    assert [v["SchemaVersion"] for v in versions["SchemaVersions"]] == ["1", "2"]
    listed = await api.call("list_schemas", RegistryName="shop", SchemaNamePrefix="shop@")
    assert [(s["SchemaName"], s["VersionCount"]) for s in listed["Schemas"]] == [
        ("shop@OrderPlaced", 2)
    ]
    found = await api.call("search_schemas", RegistryName="shop", Keywords="orderplaced")
    assert [v["SchemaVersion"] for v in found["Schemas"][0]["SchemaVersions"]] == ["1", "2"]
    exported = await api.call(
        "export_schema", RegistryName="shop", SchemaName="shop@OrderPlaced", Type="JSONSchemaDraft4"
    )
    assert json.loads(exported["Content"]) == changed
    await api.call(
        "delete_schema_version",
        RegistryName="shop",
        SchemaName="shop@OrderPlaced",
        SchemaVersion="1",
    )
    assert await api.error(
        "describe_schema", RegistryName="shop", SchemaName="shop@OrderPlaced", SchemaVersion="1"
    ) == (
        "NotFoundException",
        "Schema with name shop@OrderPlaced and version 1 does not exist.",
        404,
    )
    await api.call("delete_schema", RegistryName="shop", SchemaName="shop@OrderPlaced")
    assert (await api.error("describe_schema", RegistryName="shop", SchemaName="shop@OrderPlaced"))[
        :2
    ] == ("NotFoundException", "Schema with name shop@OrderPlaced does not exist.")


async def test_content_that_is_no_schema_is_refused(api: Clients) -> None:
    await api.call("create_registry", RegistryName="shop")
    code, message, status = await api.error(
        "create_schema",
        RegistryName="shop",
        SchemaName="s",
        Type="OpenApi3",
        Content=json.dumps({"openapi": "3.0.0", "info": {"title": "t"}, "paths": {}}),
    )
    assert (code, status) == ("BadRequestException", 400)
    assert message == "Invalid OpenApi3 schema at $.info.version: is required: a string"
    code, message, _ = await api.error(
        "create_schema",
        RegistryName="shop",
        SchemaName="s",
        Type="JSONSchemaDraft4",
        Content='{"type": "object", "required": "total"}',
    )
    assert code == "BadRequestException"
    assert message.startswith("Invalid JSONSchemaDraft4 schema at $.required: 'total' is not")
    # The model's own checks: an unknown Type.
    code, _, status = await api.error(
        "create_schema", RegistryName="shop", SchemaName="s", Type="Avro", Content="{}"
    )
    assert (code, status) == ("BadRequestException", 400)


async def test_discovery_through_the_api(api: Clients) -> None:
    assert await api.error("create_discoverer", SourceArn=BUS_ARN.format("nowhere")) == (
        "BadRequestException",
        "Event bus nowhere does not exist.",
        400,
    )
    made = await api.call("create_discoverer", SourceArn=BUS_ARN.format("orders"), Description="o")
    assert made["DiscovererId"] == "events-event-bus-orders"
    assert made["State"] == "STARTED"
    assert (await api.error("create_discoverer", SourceArn=BUS_ARN.format("orders")))[0] == (
        "ConflictException"
    )
    await api.put(order({"orderId": "a", "total": 1}, "orders"))
    await api.put(order({"orderId": "b", "total": 2}, "orders"))  # values only: no version
    audit = api.recorder("audit")
    await until(lambda: len(audit.received) >= 2)
    kinds = [r.payload["detail-type"] for r in audit.received]
    assert kinds == ["Schema Created", "Schema Version Created"]
    announced = audit.received[0].payload
    assert announced["source"] == "aws.schemas"
    assert announced["resources"] == [
        "arn:aws:schemas:us-east-1:000000000000:schema/discovered-schemas/shop@OrderPlaced"
    ]
    assert {k: v for k, v in announced["detail"].items() if k != "CreationDate"} == {
        "SchemaName": "shop@OrderPlaced",
        "SchemaType": "OpenApi3",
        "RegistryName": "discovered-schemas",
        "Version": "1",
    }
    described = await api.call(
        "describe_schema", RegistryName="discovered-schemas", SchemaName="shop@OrderPlaced"
    )
    content = json.loads(described["Content"])
    assert content["components"]["schemas"]["OrderPlaced"]["required"] == ["orderId", "total"]
    # A new field is a new version.
    await api.put(order({"orderId": "c", "total": 3, "coupon": "x"}, "orders"))
    await until(lambda: len(audit.received) >= 3)
    assert audit.received[2].payload["detail"]["Version"] == "2"
    # Stopped: a new structure is not looked at.
    stopped = await api.call("stop_discoverer", DiscovererId=made["DiscovererId"])
    assert stopped == {"DiscovererId": "events-event-bus-orders", "State": "STOPPED"}
    await api.put(order({"orderId": "d", "extra": True}, "orders"))
    await asyncio.sleep(0.3)
    versions = await api.call(
        "list_schema_versions", RegistryName="discovered-schemas", SchemaName="shop@OrderPlaced"
    )
    assert len(versions["SchemaVersions"]) == 2
    listed = await api.call("list_discoverers", SourceArnPrefix=BUS_ARN.format("or"))
    assert [d["State"] for d in listed["Discoverers"]] == ["STOPPED"]
    await api.call("start_discoverer", DiscovererId=made["DiscovererId"])
    assert (await api.call("describe_discoverer", DiscovererId=made["DiscovererId"]))[
        "State"
    ] == "STARTED"
    await api.call("delete_discoverer", DiscovererId=made["DiscovererId"])
    assert (await api.error("describe_discoverer", DiscovererId=made["DiscovererId"]))[2] == 404


async def test_get_discovered_schema(api: Clients) -> None:
    event = {
        "version": "0",
        "id": "1",
        "detail-type": "Order Placed",
        "source": "shop",
        "account": "1",
        "time": "2026-12-04T10:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {"orderId": "a"},
    }
    answer = await api.call("get_discovered_schema", Events=[json.dumps(event)], Type="OpenApi3")
    content = json.loads(answer["Content"])
    assert content["components"]["schemas"]["AWSEvent"]["x-amazon-events-source"] == "shop"
    other = {**event, "source": "other"}
    code, message, _ = await api.error(
        "get_discovered_schema", Events=[json.dumps(event), json.dumps(other)], Type="OpenApi3"
    )
    assert (code, message) == (
        "BadRequestException",
        "Events must all be of one source and detail-type",
    )


async def test_code_bindings(api: Clients) -> None:
    await api.call("create_registry", RegistryName="shop")
    await api.call(
        "create_schema",
        RegistryName="shop",
        SchemaName="shop@OrderPlaced",
        Type="JSONSchemaDraft4",
        Content=json.dumps(DRAFT4),
    )
    where = {"RegistryName": "shop", "SchemaName": "shop@OrderPlaced"}
    assert (await api.error("describe_code_binding", Language="Python36", **where))[2] == 404
    made = await api.call("put_code_binding", Language="Python36", **where)
    assert (made["Status"], made["SchemaVersion"]) == ("CREATE_COMPLETE", "1")
    described = await api.call("describe_code_binding", Language="Python36", **where)
    assert described["Status"] == "CREATE_COMPLETE"
    body = (await api.call("get_code_binding_source", Language="Python36", **where))["Body"]
    with zipfile.ZipFile(io.BytesIO(body.read())) as archive:
        names = archive.namelist()
        models = archive.read("schema/shop/orderplaced/models.py").decode()
    assert "schema/shop/orderplaced/marshaller.py" in names
    assert "class AWSEvent:" in models and "class OrderPlaced:" not in models
    assert "    detail: Detail\n" in models and "class Detail:" in models
    await api.call("put_code_binding", Language="TypeScript3", **where)
    body = (await api.call("get_code_binding_source", Language="TypeScript3", **where))["Body"]
    with zipfile.ZipFile(io.BytesIO(body.read())) as archive:
        assert (
            "export interface AWSEvent" in archive.read("schema/shop/orderplaced/index.ts").decode()
        )
    code, message, _ = await api.error("put_code_binding", Language="Java8", **where)
    assert code == "BadRequestException"
    assert message == "Code bindings in Java8 are not made by pipelines: Python36, TypeScript3"


@pytest.fixture
async def validating(tmp_path: Path) -> AsyncIterator[Clients]:
    settings = {
        "registries": {
            "shop": {
                "schemas": {"shop@OrderPlaced": {"type": "JSONSchemaDraft4", "content": DRAFT4}}
            }
        },
        "discoverers": ["orders"],
        "require": [
            {
                "bus": "default",
                "source": "shop",
                "detail_type": "Order Placed",
                "schema": "shop/shop@OrderPlaced",
            },
            {
                "bus": "orders",
                "source": "shop",
                "detail_type": "Order Placed",
                "schema": "shop/shop@OrderPlaced",
                "version": 1,
                "on_failure": "dead_letter",
                "dead_letter": "dead",
            },
        ],
    }
    resources = {
        "audit": ("recorder", {}),
        "dead": ("recorder", {}),
        "delivered": ("recorder", {}),
        "schemas": ("schemas", settings),
    }
    async for clients in served(tmp_path, resources):
        for bus in ("default", "orders"):
            rules = clients.runtime.bus(bus)
            rules.put_rule("all", pattern={"source": ["shop", "other"]})
            await rules.put_targets("all", [{"id": "d", "resource": "delivered"}])
        yield clients


async def test_validation_refuses_the_failing_entry_alone(validating: Clients) -> None:
    answer = await validating.put(
        order({"orderId": "a", "total": 1}),
        order({"orderId": "b", "total": "lots"}),
        {"Source": "other", "DetailType": "Order Placed", "Detail": "{}"},  # no requirement
    )
    assert answer["FailedEntryCount"] == 1
    good, bad, other = answer["Entries"]
    assert "EventId" in good and "EventId" in other
    assert bad == {
        "ErrorCode": "SchemaValidationError",
        "ErrorMessage": "the event does not match schema shop@OrderPlaced version 1:"
        " $.detail.total: 'lots' is not of type 'number'",
    }
    delivered = validating.recorder("delivered")
    await until(lambda: len(delivered.received) == 2)
    assert sorted(r.payload["source"] for r in delivered.received) == ["other", "shop"]


async def test_validation_can_send_the_event_to_a_dead_letter(validating: Clients) -> None:
    answer = await validating.put(
        order({"orderId": "a"}, "orders"), order({"orderId": "b", "total": 2}, "orders")
    )
    assert answer["FailedEntryCount"] == 0
    dead = validating.recorder("dead")
    await until(lambda: len(dead.received) == 1)
    letter = dead.received[0]
    assert letter.payload["detail"] == {"orderId": "a"}
    assert letter.payload["id"] == answer["Entries"][0]["EventId"]
    assert letter.context.attributes == {
        "ERROR_CODE": "SchemaValidationError",
        "ERROR_MESSAGE": "the event does not match schema shop@OrderPlaced version 1:"
        " $.detail: 'total' is a required property",
        "SCHEMA_ARN": "arn:aws:schemas:us-east-1:000000000000:schema/shop/shop@OrderPlaced",
        "SCHEMA_VERSION": "1",
    }
    delivered = validating.recorder("delivered")
    await until(lambda: len(delivered.received) == 1)
    assert delivered.received[0].payload["detail"]["orderId"] == "b"
    # The declared discoverer saw the accepted event only (the refused one
    # never reached the bus): a total, no other shape.
    audit = validating.recorder("audit")
    await until(
        lambda: any(
            r.payload["detail"]["RegistryName"] == "discovered-schemas" for r in audit.received
        )
    )
    described = await validating.call(
        "describe_schema", RegistryName="discovered-schemas", SchemaName="shop@OrderPlaced"
    )
    detail = json.loads(described["Content"])["components"]["schemas"]["OrderPlaced"]
    assert detail["required"] == ["orderId", "total"]
    assert (await validating.call("describe_discoverer", DiscovererId="events-event-bus-orders"))[
        "State"
    ] == "STARTED"


async def test_a_declared_discoverer_on_a_missing_bus_stops_the_start(tmp_path: Path) -> None:
    runtime = Runtime(state_path=tmp_path / "state.db", plugins=schema_plugins())
    runtime.add_resource("schemas", "schemas", {"discoverers": ["nowhere"]})
    with pytest.raises(ConfigError) as raised:
        await runtime.start()
    assert str(raised.value) == (
        "resource schemas.discoverers[0]: no bus 'nowhere' (declare it under buses)"
    )


async def test_discoverers_made_by_the_api_run_again_after_a_restart(tmp_path: Path) -> None:
    async for clients in served(tmp_path, {"audit": ("recorder", {})}):
        await clients.call("create_discoverer", SourceArn=BUS_ARN.format("orders"))
    # A new runner on the same state, no schemas resource declared, and no
    # schemas request: the restorer makes the resource, which discovers.
    async for clients in served(tmp_path, {"audit": ("recorder", {})}):
        await clients.put(order({"orderId": "a", "total": 1}, "orders"))
        received = clients.recorder("audit").received
        await until(lambda received=received: len(received) >= 1)  # type: ignore[misc]
        assert received[0].payload["detail"]["SchemaName"] == "shop@OrderPlaced"
