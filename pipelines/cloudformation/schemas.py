"""The schema registry: ``AWS::EventSchemas::Registry``, ``Schema`` and
``Discoverer`` <-> the config's ``schemas`` section (registries, their
schemas, discoverers); ``RegistryPolicy`` is skipped: permissions are not
enforced locally. (The schemas plugin's mapping, kept here while that
plugin is another's work; it registers like the others.)"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from pipelines.cloudformation.intrinsics import Identity, TemplateError
from pipelines.cloudformation.mapping import (
    PERMISSIONS_REASON,
    ConfigExport,
    ExportContext,
    ImportContext,
    Resource,
    TypeMapping,
    props,
    set_if,
)

_BUS_ARN = "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/"
#: What the section keeps that CloudFormation has no resource for.
_LOCAL = ("require", "discovery")


def _section(context: ImportContext, resource: Resource) -> dict[str, Any]:
    section: dict[str, Any] = context.config.setdefault("schemas", {})
    context.origin(("schemas",), resource, ())
    # What an export kept of the section (validation requirements, sampling).
    section.update(resource.metadata.get("schemas") or {})
    return section


def _registry_identity(context: ImportContext, resource: Resource) -> Identity:
    name = resource.text("RegistryName") or resource.logical_id
    arn = context.arn("schemas", f"registry/{name}")
    return Identity(arn, {"RegistryArn": arn, "RegistryName": name})


def _registry_apply(context: ImportContext, resource: Resource) -> str:
    name = resource.text("RegistryName") or resource.logical_id
    registries = _section(context, resource).setdefault("registries", {})
    registry = registries.setdefault(name, {})
    set_if(registry, "description", resource.text("Description"))
    context.origin(("schemas", "registries", name), resource, ())
    return f"schema registry {name}"


def _schema_identity(context: ImportContext, resource: Resource) -> Identity:
    registry, name = (
        resource.text("RegistryName") or "",
        resource.text("SchemaName") or resource.logical_id,
    )
    arn = context.arn("schemas", f"schema/{registry}/{name}")
    return Identity(arn, {"SchemaArn": arn, "SchemaName": name, "SchemaVersion": "1"})


def _schema_apply(context: ImportContext, resource: Resource) -> str:
    registry = resource.text("RegistryName")
    if not registry:
        raise TemplateError(resource.at("RegistryName"), "a schema names its registry")
    name = resource.text("SchemaName") or resource.logical_id
    content = resource.get("Content")
    if isinstance(content, str):
        with contextlib.suppress(ValueError):  # YAML or bad JSON: the registry's check says which
            content = json.loads(content)
    schema: dict[str, Any] = {
        "type": resource.text("Type") or "JSONSchemaDraft4",
        "content": content,
    }
    set_if(schema, "description", resource.text("Description"))
    registries = _section(context, resource).setdefault("registries", {})
    registries.setdefault(registry, {}).setdefault("schemas", {})[name] = schema
    context.origin(("schemas", "registries", registry, "schemas", name), resource, ())
    context.origin(
        ("schemas", "registries", registry, "schemas", name, "content"), resource, ("Content",)
    )
    return f"schema {registry}/{name}"


def _discoverer_identity(context: ImportContext, resource: Resource) -> Identity:
    arn = context.arn("schemas", f"discoverer/{resource.logical_id}")
    return Identity(
        arn, {"DiscovererArn": arn, "DiscovererId": resource.logical_id, "CrossAccount": True}
    )


def _discoverer_apply(context: ImportContext, resource: Resource) -> str:
    bus = context.reference(
        resource.get("SourceArn"), resource.at("SourceArn"), sections=("buses",)
    )[1]
    discoverers = _section(context, resource).setdefault("discoverers", [])
    if bus not in discoverers:
        discoverers.append(bus)
    context.origin(("schemas", "discoverers"), resource, ("SourceArn",))
    return f"schema discovery on bus {bus}"


def _export(context: ExportContext, name: str, body: dict[str, Any]) -> None:
    first: dict[str, Any] | None = None
    for registry, given in (body.get("registries") or {}).items():
        logical = context.logical_id("schema_registries", registry, "Registry")
        properties: dict[str, Any] = {"RegistryName": registry}
        set_if(properties, "Description", (given or {}).get("description"))
        context.add(logical, "AWS::EventSchemas::Registry", properties)
        first = first or context.resources[logical]
        for schema, spec in ((given or {}).get("schemas") or {}).items():
            content = spec.get("content")
            schema_properties: dict[str, Any] = {
                "RegistryName": {"Fn::GetAtt": [logical, "RegistryName"]},
                "SchemaName": schema,
                "Type": spec.get("type", "JSONSchemaDraft4"),
                "Content": content if isinstance(content, str) else json.dumps(content),
            }
            set_if(schema_properties, "Description", spec.get("description"))
            context.add(
                context.logical_id("schemas", f"{registry}/{schema}", "Schema"),
                "AWS::EventSchemas::Schema",
                schema_properties,
            )
    for bus in body.get("discoverers") or []:
        logical_bus = context.logical.get(("buses", f"{bus}#Bus"))
        source = (
            {"Fn::GetAtt": [logical_bus, "Arn"]} if logical_bus else {"Fn::Sub": _BUS_ARN + bus}
        )
        context.add(
            context.logical_id("discoverers", bus, "Discoverer"),
            "AWS::EventSchemas::Discoverer",
            {"SourceArn": source},
        )
    local = {k: body[k] for k in _LOCAL if k in body}
    if local and first is not None:
        first["Metadata"] = {"pipelines": {"schemas": local}}
    if "require" in body:  # a loss on AWS, whatever the Metadata keeps
        context.skip(
            "schemas.require",
            "EventBridge does not validate events against schemas"
            + (": kept in Metadata" if first is not None else ""),
        )
    if "discovery" in body and first is None:
        context.skip("schemas.discovery", "a local setting, with no registry to keep it")


MAPPINGS = (
    TypeMapping(
        "AWS::EventSchemas::Registry",
        identity=_registry_identity,
        apply=_registry_apply,
        owner="schemas",
        properties=props(
            ("RegistryName", "schemas.registries.NAME"), ("Description", "description")
        ),
        naming=("Tags",),
    ),
    TypeMapping(
        "AWS::EventSchemas::Schema",
        identity=_schema_identity,
        apply=_schema_apply,
        owner="schemas",
        phase=1,
        properties=props(
            ("RegistryName", "the registry"),
            ("SchemaName", "schemas.registries.REGISTRY.schemas.NAME"),
            ("Type", "type"),
            ("Content", "content"),
            ("Description", "description"),
        ),
        naming=("Tags",),
    ),
    TypeMapping(
        "AWS::EventSchemas::Discoverer",
        identity=_discoverer_identity,
        apply=_discoverer_apply,
        owner="schemas",
        phase=1,
        properties=props(("SourceArn", "schemas.discoverers (the bus)")),
        naming=("Description", "CrossAccount", "Tags"),
    ),
    TypeMapping("AWS::EventSchemas::RegistryPolicy", reason=PERMISSIONS_REASON, owner="schemas"),
    ConfigExport(
        "schemas",
        _export,
        (
            "AWS::EventSchemas::Registry",
            "AWS::EventSchemas::Schema",
            "AWS::EventSchemas::Discoverer",
        ),
    ),
)
