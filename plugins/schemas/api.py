"""The schemas service (REST-JSON, ``/v1/...``) on the runner's AWS endpoint.

Registered through ``register_services``; the engine reads and writes the
wire by botocore's ``schemas`` model. Every operation works on the running
``schemas`` resource (``resource.registry_of``): a pipeline that declares
none gets one named ``schemas`` at the first request, so registries,
discoverers and code bindings made here live in the state database like
those declared in YAML.

Served: registries (Create, Describe, List, Update, Delete), schemas
(Create, Update (a new version when Content is given), Describe,
List, ListSchemaVersions, DeleteSchemaVersion, Delete, Search, Export to
JSONSchemaDraft4, GetDiscoveredSchema), discoverers (Create, Describe,
List, Update, Start, Stop, Delete), tags (Tag, Untag, ListTagsForResource
on registries, schemas and discoverers) and code bindings (PutCodeBinding,
DescribeCodeBinding, GetCodeBindingSource for Python36 and TypeScript3).
Resource policies (Put/Get/DeleteResourcePolicy) are not served: they answer
NotImplemented.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson

from pipelines.api import ApiError, Call, Service
from pipelines.api.services import page
from pipelines.errors import ResourceNotFoundError
from plugins.schemas.codegen import AWS_ONLY, LANGUAGES, binding_zip
from plugins.schemas.content import SchemaError, bad_request
from plugins.schemas.infer import DRAFT4, OPENAPI, discovered, dumps, export_draft4
from plugins.schemas.registry import (
    STARTED,
    STOPPED,
    Registry,
    bus_of,
    discoverer_arn,
    registry_arn,
    schema_arn,
    version_number,
)
from plugins.schemas.resource import SchemasResource, registry_of
from plugins.schemas.restore import put_registry_resource
from plugins.schemas.store import (
    BindingRecord,
    DiscovererRecord,
    SchemaRecord,
    VersionRecord,
)

schemas = Service("schemas", validation_code="BadRequestException")

#: List operations' page size without Limit.
PAGE = 100
CREATE_COMPLETE = "CREATE_COMPLETE"


class _Lock:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()


async def _resource(call: Call) -> SchemasResource:
    found = registry_of(call.runtime)
    if found is not None:
        return found
    await call.runtime.wait_running(30.0)
    async with call.kept("schemas", _Lock).lock:
        found = registry_of(call.runtime)
        if found is None:
            await put_registry_resource(call.runtime)
            found = registry_of(call.runtime)
    if found is None:
        raise ApiError("ServiceUnavailableException", "the schema registry did not start", 503)
    return found


async def _registry(call: Call) -> Registry:
    resource = await _resource(call)
    assert resource.registry is not None
    return resource.registry


def _invalid_token() -> ApiError:
    return ApiError("BadRequestException", "Invalid NextToken")


def _page(call: Call, items: list[Any], params: Mapping[str, Any]) -> tuple[list[Any], str | None]:
    size = params.get("Limit") or PAGE
    return page(items, params.get("NextToken"), size, _invalid_token())


# -- registries ----------------------------------------------------------------------------


def _registry_out(call: Call, name: str, description: str, tags: dict[str, str]) -> dict[str, Any]:
    return {
        "RegistryName": name,
        "RegistryArn": registry_arn(name, call.region, call.account),
        "Description": description,
        "Tags": tags,
    }


@schemas.operation()
async def create_registry(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    made = await (await _registry(call)).create_registry(
        params["RegistryName"], params.get("Description", ""), params.get("Tags")
    )
    return _registry_out(call, made.name, made.description, made.tags)


@schemas.operation()
async def describe_registry(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    found = await (await _registry(call)).describe_registry(params["RegistryName"])
    return _registry_out(call, found.name, found.description, found.tags)


@schemas.operation()
async def update_registry(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    found = await (await _registry(call)).update_registry(
        params["RegistryName"], params.get("Description", "")
    )
    return _registry_out(call, found.name, found.description, found.tags)


@schemas.operation()
async def delete_registry(call: Call, params: dict[str, Any]) -> None:
    await (await _registry(call)).delete_registry(params["RegistryName"])


@schemas.operation()
async def list_registries(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    registry = await _registry(call)
    prefix = params.get("RegistryNamePrefix", "")
    scope = params.get("Scope")
    found = [
        r
        for r in await registry.store.registries()
        if r.name.startswith(prefix)
        and (scope is None or (scope == "AWS") == (r.name == "aws.events"))
    ]
    shown, token = _page(call, found, params)
    return {
        "Registries": [
            {
                "RegistryName": r.name,
                "RegistryArn": registry_arn(r.name, call.region, call.account),
                "Tags": r.tags,
            }
            for r in shown
        ],
        "NextToken": token,
    }


# -- schemas -------------------------------------------------------------------------------


def _version_out(
    call: Call, version: VersionRecord, schema: SchemaRecord | None = None
) -> dict[str, Any]:
    return {
        "SchemaName": version.name,
        "SchemaArn": schema_arn(version.registry, version.name, call.region, call.account),
        "SchemaVersion": str(version.version),
        "Type": version.type,
        "VersionCreatedDate": version.created,
        "LastModified": schema.modified if schema is not None else version.created,
        "Description": schema.description if schema is not None else None,
        "Tags": schema.tags if schema is not None else None,
    }


@schemas.operation()
async def create_schema(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    registry = await _registry(call)
    made = await registry.create_schema(
        params["RegistryName"],
        params["SchemaName"],
        params["Type"],
        params["Content"],
        params.get("Description", ""),
        params.get("Tags"),
    )
    schema = await registry.describe_schema(made.registry, made.name)
    return _version_out(call, made, schema)


@schemas.operation()
async def update_schema(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    registry = await _registry(call)
    made = await registry.update_schema(
        params["RegistryName"],
        params["SchemaName"],
        params.get("Type"),
        params.get("Content"),
        params.get("Description"),
    )
    schema = await registry.describe_schema(made.registry, made.name)
    return _version_out(call, made, schema)


@schemas.operation()
async def describe_schema(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    schema, version = await (await _registry(call)).schema_version(
        params["RegistryName"], params["SchemaName"], version_number(params.get("SchemaVersion"))
    )
    return {**_version_out(call, version, schema), "Content": version.content}


@schemas.operation()
async def list_schemas(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    found = await (await _registry(call)).list_schemas(
        params["RegistryName"], params.get("SchemaNamePrefix", "")
    )
    shown, token = _page(call, found, params)
    return {
        "Schemas": [
            {
                "SchemaName": s.name,
                "SchemaArn": schema_arn(s.registry, s.name, call.region, call.account),
                "LastModified": s.modified,
                "Tags": s.tags,
                "VersionCount": s.versions,
            }
            for s in shown
        ],
        "NextToken": token,
    }


@schemas.operation()
async def list_schema_versions(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    found = await (await _registry(call)).list_versions(
        params["RegistryName"], params["SchemaName"]
    )
    shown, token = _page(call, found, params)
    return {
        "SchemaVersions": [
            {
                "SchemaName": v.name,
                "SchemaArn": schema_arn(v.registry, v.name, call.region, call.account),
                "SchemaVersion": str(v.version),
                "Type": v.type,
            }
            for v in shown
        ],
        "NextToken": token,
    }


@schemas.operation()
async def delete_schema_version(call: Call, params: dict[str, Any]) -> None:
    version = version_number(params["SchemaVersion"])
    assert version is not None
    await (await _registry(call)).delete_version(
        params["RegistryName"], params["SchemaName"], version
    )


@schemas.operation()
async def delete_schema(call: Call, params: dict[str, Any]) -> None:
    await (await _registry(call)).delete_schema(params["RegistryName"], params["SchemaName"])


@schemas.operation()
async def search_schemas(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    found = await (await _registry(call)).search(params["RegistryName"], params["Keywords"])
    shown, token = _page(call, found, params)
    return {
        "Schemas": [
            {
                "RegistryName": schema.registry,
                "SchemaName": schema.name,
                "SchemaArn": schema_arn(schema.registry, schema.name, call.region, call.account),
                "SchemaVersions": [
                    {"CreatedDate": v.created, "SchemaVersion": str(v.version), "Type": v.type}
                    for v in versions
                ],
            }
            for schema, versions in shown
        ],
        "NextToken": token,
    }


@schemas.operation()
async def export_schema(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    if params["Type"] != DRAFT4:
        raise bad_request(f"Invalid Type {params['Type']!r}: schemas export to JSONSchemaDraft4")
    _, version = await (await _registry(call)).schema_version(
        params["RegistryName"], params["SchemaName"], version_number(params.get("SchemaVersion"))
    )
    document = orjson.loads(version.content)
    content = dumps(export_draft4(document)) if version.type == OPENAPI else version.content
    return {
        "Content": content,
        "SchemaArn": schema_arn(version.registry, version.name, call.region, call.account),
        "SchemaName": version.name,
        "SchemaVersion": str(version.version),
        "Type": DRAFT4,
    }


@schemas.operation()
async def get_discovered_schema(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    events = []
    for index, text in enumerate(params["Events"]):
        try:
            event = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise bad_request(f"Events[{index}] is not JSON") from None
        if not isinstance(event, dict):
            raise bad_request(f"Events[{index}] is not a JSON object")
        events.append(event)
    kinds = {(e.get("source"), e.get("detail-type")) for e in events}
    if len(kinds) > 1:
        raise bad_request("Events must all be of one source and detail-type")
    return {"Content": dumps(discovered(events, params["Type"]))}


# -- discoverers -----------------------------------------------------------------------------


def _discoverer_out(call: Call, record: DiscovererRecord) -> dict[str, Any]:
    return {
        "DiscovererId": record.id,
        "DiscovererArn": discoverer_arn(record.id, call.region, call.account),
        "SourceArn": record.source_arn,
        "Description": record.description,
        "State": record.state,
        "CrossAccount": record.cross_account,
        "Tags": record.tags,
    }


@schemas.operation()
async def create_discoverer(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    source = params["SourceArn"]
    bus = bus_of(source)
    try:
        call.runtime.bus(bus)
    except ResourceNotFoundError:
        raise bad_request(f"Event bus {bus} does not exist.") from None
    resource = await _resource(call)
    assert resource.registry is not None
    made = await resource.registry.create_discoverer(
        source, params.get("Description", ""), params.get("CrossAccount", True), params.get("Tags")
    )
    await resource.refresh_discoverers()
    return _discoverer_out(call, made)


@schemas.operation()
async def describe_discoverer(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    found = await (await _registry(call)).describe_discoverer(params["DiscovererId"])
    return _discoverer_out(call, found)


@schemas.operation()
async def update_discoverer(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    found = await (await _registry(call)).update_discoverer(
        params["DiscovererId"],
        description=params.get("Description"),
        cross_account=params.get("CrossAccount"),
    )
    return _discoverer_out(call, found)


@schemas.operation()
async def list_discoverers(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    registry = await _registry(call)
    id_prefix = params.get("DiscovererIdPrefix", "")
    arn_prefix = params.get("SourceArnPrefix", "")
    found = [
        d
        for d in await registry.store.discoverers()
        if d.id.startswith(id_prefix) and d.source_arn.startswith(arn_prefix)
    ]
    shown, token = _page(call, found, params)
    listed = []
    for record in shown:
        out = _discoverer_out(call, record)
        del out["Description"]
        listed.append(out)
    return {"Discoverers": listed, "NextToken": token}


async def _set_state(call: Call, discoverer: str, state: str) -> Mapping[str, Any]:
    resource = await _resource(call)
    assert resource.registry is not None
    found = await resource.registry.update_discoverer(discoverer, state=state)
    await resource.refresh_discoverers()
    return {"DiscovererId": found.id, "State": found.state}


@schemas.operation()
async def start_discoverer(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    return await _set_state(call, params["DiscovererId"], STARTED)


@schemas.operation()
async def stop_discoverer(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    return await _set_state(call, params["DiscovererId"], STOPPED)


@schemas.operation()
async def delete_discoverer(call: Call, params: dict[str, Any]) -> None:
    resource = await _resource(call)
    assert resource.registry is not None
    await resource.registry.delete_discoverer(params["DiscovererId"])
    await resource.refresh_discoverers()


# -- tags ----------------------------------------------------------------------------------


async def _tagged(call: Call, arn: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """The table, the key and the current tags of the resource an ARN names."""
    registry = await _registry(call)
    parts = arn.split(":", 5)
    resource = parts[5] if len(parts) == 6 and parts[2] == "schemas" else ""
    kind, _, rest = resource.partition("/")
    if kind == "registry":
        found = await registry.store.registry(rest)
        if found is not None:
            return "schema_registries", {"name": rest}, found.tags
    elif kind == "schema":
        name_of_registry, _, name = rest.partition("/")
        schema = await registry.store.get_schema(name_of_registry, name)
        if schema is not None:
            return "schema_schemas", {"registry": name_of_registry, "name": name}, schema.tags
    elif kind == "discoverer":
        discoverer = await registry.store.discoverer(rest)
        if discoverer is not None:
            return "schema_discoverers", {"id": rest}, discoverer.tags
    raise SchemaError("NotFoundException", f"Resource {arn} does not exist.")


@schemas.operation()
async def tag_resource(call: Call, params: dict[str, Any]) -> None:
    table, key, tags = await _tagged(call, params["ResourceArn"])
    await (await _registry(call)).store.set_tags(table, key, {**tags, **params["Tags"]})


@schemas.operation()
async def untag_resource(call: Call, params: dict[str, Any]) -> None:
    table, key, tags = await _tagged(call, params["ResourceArn"])
    kept = {k: v for k, v in tags.items() if k not in set(params["TagKeys"])}
    await (await _registry(call)).store.set_tags(table, key, kept)


@schemas.operation()
async def list_tags_for_resource(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    _, _, tags = await _tagged(call, params["ResourceArn"])
    return {"Tags": tags}


# -- code bindings ---------------------------------------------------------------------------


def _language(language: str) -> str:
    if language in LANGUAGES:
        return language
    if language in AWS_ONLY:
        raise bad_request(
            f"Code bindings in {language} are not made by pipelines: {', '.join(LANGUAGES)}"
        )
    raise bad_request(f"Invalid language {language!r}: one of {', '.join(LANGUAGES + AWS_ONLY)}")


def _binding_out(record: BindingRecord) -> dict[str, Any]:
    return {
        "CreationDate": record.created,
        "LastModified": record.modified,
        "SchemaVersion": str(record.version),
        "Status": record.status,
    }


@schemas.operation()
async def put_code_binding(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    """Made at once (AWS answers CREATE_IN_PROGRESS and makes it later; the
    answer here is already CREATE_COMPLETE, which a client polling
    DescribeCodeBinding accepts the same)."""
    language = _language(params["Language"])
    registry = await _registry(call)
    _, version = await registry.schema_version(
        params["RegistryName"], params["SchemaName"], version_number(params.get("SchemaVersion"))
    )
    found = await registry.store.binding(version.registry, version.name, version.version, language)
    if found is not None:
        return _binding_out(found)
    source = await asyncio.to_thread(
        binding_zip, language, version.name, version.type, version.content
    )
    now = registry.store.clock.time()
    record = BindingRecord(
        version.registry, version.name, version.version, language, CREATE_COMPLETE, now, now, source
    )
    await registry.store.put_binding(record)
    return _binding_out(record)


async def _binding(call: Call, params: dict[str, Any]) -> BindingRecord:
    language = _language(params["Language"])
    registry = await _registry(call)
    _, version = await registry.schema_version(
        params["RegistryName"], params["SchemaName"], version_number(params.get("SchemaVersion"))
    )
    found = await registry.store.binding(version.registry, version.name, version.version, language)
    if found is None:
        raise SchemaError(
            "NotFoundException",
            f"Code binding for schema {version.name} version {version.version}"
            f" in {language} does not exist.",
        )
    return found


@schemas.operation()
async def describe_code_binding(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    return _binding_out(await _binding(call, params))


@schemas.operation()
async def get_code_binding_source(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    found = await _binding(call, params)
    return {"Body": found.source or b""}
