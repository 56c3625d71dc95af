"""A pipeline config -> the CloudFormation template it corresponds to.

Each part of the config is exported by the ``ConfigExport`` registered for
it (a resource's type, or a section): queues, topics and their
subscriptions, streams and their consumers, log groups and their filters,
functions (SAM's ``AWS::Serverless::Function``, ``CodeUri`` the config's
directory), state machines, connections and API destinations, delivery
streams, buses, rules, archives, alarms, schedules and groups. A part with
no CloudFormation equivalent (a webhook, an MQTT broker, a jsonl file) is
reported, never silently dropped. Settings CloudFormation has no property
for (a topic's subject, a stream's partition key) and config names a
property cannot hold are kept in the resource's ``Metadata.pipelines``,
which CloudFormation ignores and ``pipelines import`` reads back, so the
round trip gives the same config (``equivalent``).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.cloudformation.mapping import ExportContext, ExportSkip
from pipelines.cloudformation.permissions import add_permissions
from pipelines.cloudformation.registry import Registry, build_registry
from pipelines.cloudformation.sam import SAM_TRANSFORM

#: The sections exported, in an order where each may name what came before.
SECTION_ORDER = (
    "buses",
    "schedule_groups",
    "resources",
    "rules",
    "archives",
    "alarms",
    "schedules",
)
#: Properties that hold a resource's name.
NAME_PROPERTIES = (
    "QueueName",
    "TopicName",
    "Name",
    "LogGroupName",
    "StateMachineName",
    "FunctionName",
    "DeliveryStreamName",
    "AlarmName",
    "ArchiveName",
)
#: Resource types a config gets from its sections (not exported as resources).
DERIVED_TYPES = {"scheduler", "pipe"}
#: Sections whose entries export as resources of a type (and are imported
#: back into the section: the form docs/states.md shows).
EXPORTED_SECTIONS = {"state_machines": "state_machine"}


@dataclass
class Exported:
    template: dict[str, Any]
    #: Parts not exported: (config path, reason).
    skipped: list[tuple[str, str]] = field(default_factory=list)


def export_config(
    config: dict[str, Any],
    *,
    directory: Path | None = None,
    template_directory: Path | None = None,
    registry: Registry | None = None,
) -> Exported:
    """The template of a config's data (its sections as a config file holds
    them). ``directory`` is the config's, ``template_directory`` where the
    template goes (functions' ``CodeUri`` is the one from the other)."""
    registry = registry or build_registry()
    directory = directory or Path(".")
    code_uri = os.path.relpath(directory.resolve(), (template_directory or directory).resolve())
    config, sectioned = _with_section_resources(config)
    context = ExportContext(config, directory=directory, code_uri=code_uri)
    resources = config.get("resources") or {}
    for key in ("api", "cluster", "durability"):
        if config.get(key) is not None:
            context.skip(key, "a setting of the local runner, not of AWS")
    exportable: dict[str, Any] = {}
    for name, body in resources.items():
        kind = str(body.get("type"))
        exporter = registry.exports.get(kind)
        if kind in DERIVED_TYPES:
            continue
        if exporter is None:
            where = f"{sectioned.get(name, 'resources')}.{name}"
            context.skip(where, f"a {kind} resource has no CloudFormation equivalent")
            continue
        context.primaries[name] = context.logical_id("resources", name, exporter.suffix)
        exportable[name] = body
    buses = config.get("buses")
    if buses:
        registry.exports["buses"].export(context, "buses", buses)
    for name, body in (config.get("schedule_groups") or {}).items():
        _export(registry, context, "schedule_groups", name, body or {})
    for name, body in exportable.items():
        placed = f"{sectioned[name]}.{name}" if name in sectioned else None
        _export(registry, context, str(body.get("type")), name, body, placed)
        _keep(context, registry, name, body)
    if config.get("schemas"):  # the section, as an import gives it
        _export(registry, context, "schemas", "schemas", config["schemas"])
    for section in ("rules", "archives", "alarms", "schedules", "pipes"):
        for name, body in (config.get(section) or {}).items():
            _export(registry, context, section, name, body)
            _keep_name(context, section, name)
    add_permissions(context.resources)
    template: dict[str, Any] = {"AWSTemplateFormatVersion": "2010-09-09"}
    if context.needs_sam:
        template["Transform"] = SAM_TRANSFORM
    template["Description"] = "Exported by pipelines export"
    template["Resources"] = context.resources
    return Exported(template, context.skipped)


def _with_section_resources(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The config with each entry of a section of resources
    (``state_machines``) among its resources, as a resource of the
    section's type: what it is, whichever way the config declares it, so
    targets name it and it exports as the resources of its type do. And
    the section each such name came from (where a skip is reported)."""
    resources = dict(config.get("resources") or {})
    sectioned: dict[str, str] = {}
    for section, type_name in EXPORTED_SECTIONS.items():
        for name, body in (config.get(section) or {}).items():
            resources[name] = {**body, "type": type_name}
            sectioned[name] = section
    if not sectioned:
        return config, sectioned
    return {**config, "resources": resources}, sectioned


def _export(
    registry: Registry,
    context: ExportContext,
    part: str,
    name: str,
    body: Any,
    where: str | None = None,
) -> None:
    where = where or f"{part}.{name}"
    exporter = registry.exports.get(part)
    if exporter is None:
        context.skip(where, "no CloudFormation export is registered for it")
        return
    try:
        exporter.export(context, name, body)
    except ExportSkip as exc:
        context.skip(where, str(exc))


def _metadata(body: dict[str, Any]) -> dict[str, Any]:
    metadata = body.setdefault("Metadata", {})
    kept: dict[str, Any] = metadata.setdefault("pipelines", {})
    return kept


def _keep(context: ExportContext, registry: Registry, name: str, body: dict[str, Any]) -> None:
    """Keep in Metadata what the resource's properties cannot hold."""
    logical = context.primaries.get(name)
    resource = context.resources.get(logical or "")
    if resource is None:
        return
    _keep_name(context, "resources", name, logical)
    exporter = registry.exports[str(body.get("type"))]
    if exporter.keys:
        left = {k: v for k, v in body.items() if k != "type" and k not in exporter.keys}
        if left:
            _metadata(resource).setdefault("settings", {}).update(left)


def _keep_name(context: ExportContext, section: str, name: str, logical: str | None = None) -> None:
    if logical is None:
        found = [
            lid
            for (s, key), lid in context.logical.items()
            if s == section and key.split("#")[0] == name
        ]
        logical = found[0] if found else None
    resource = context.resources.get(logical or "")
    if resource is None:
        return
    properties = resource.get("Properties") or {}
    names = {str(properties[p]) for p in NAME_PROPERTIES if isinstance(properties.get(p), str)}
    if section == "schedules":
        group = properties.get("GroupName")
        names = {
            f"{group}/{properties.get('Name')}"
            if isinstance(group, str)
            else str(properties.get("Name"))
        }
    if name not in names and (section != "schedules" or "/" not in name):
        _metadata(resource)["name"] = name


# -- what the round trip keeps -------------------------------------------------------


def equivalent(config: dict[str, Any], directory: Path | None = None) -> dict[str, Any]:
    """A config's data in the one form export and import agree on: defaults
    written out or left out alike, JSON text parsed, a definition file
    read, an inline connection made a resource of its own. Two configs with
    the same ``equivalent`` run the same pipeline; ``import(export(c))``
    has the same one as ``c`` (tests/test_cloudformation_roundtrip.py)."""
    data = _with_section_resources(json.loads(json.dumps(config)))[0]
    resources = data.get("resources") or {}
    for name in [n for n, b in resources.items() if b.get("type") in DERIVED_TYPES]:
        del resources[name]
    schemas = resources.get("schemas")
    if isinstance(schemas, dict) and schemas.get("type") == "schemas":  # the section's resource
        data["schemas"] = {k: v for k, v in resources.pop("schemas").items() if k != "type"}
    for name, body in list(resources.items()):
        _resource_form(name, body, resources, directory or Path("."))
    _sections_form(data, resources)
    buses = data.get("buses")
    if isinstance(buses, dict) and all(v is None for v in buses.values()):
        data["buses"] = list(buses)
    for rule in (data.get("rules") or {}).values():
        if rule.get("state") == "ENABLED":
            del rule["state"]
        if rule.get("bus") == "default":
            del rule["bus"]
        schedule = rule.get("schedule")
        if isinstance(schedule, dict) and set(schedule) == {"expression"}:
            rule["schedule"] = schedule["expression"]
        for target in rule.get("targets") or []:
            _input_form(target)
    for alarm in (data.get("alarms") or {}).values():
        if "rule" not in alarm:
            alarm.setdefault("comparison_operator", "GreaterThanOrEqualToThreshold")
            alarm.setdefault("statistic", "Average")
            alarm["threshold"] = float(alarm.get("threshold", 0))
        if alarm.get("actions_enabled") is True:
            del alarm["actions_enabled"]
        for state, names in (alarm.get("actions") or {}).items():
            alarm["actions"][state] = [names] if isinstance(names, str) else names
    for schedule in (data.get("schedules") or {}).values():
        if schedule.get("state") == "ENABLED":
            del schedule["state"]
        if schedule.get("action_after_completion") == "NONE":
            del schedule["action_after_completion"]
        _input_form(schedule.get("target") or {})
    for pipe in (data.get("pipes") or {}).values():
        if pipe.get("desired_state") == "RUNNING":
            del pipe["desired_state"]
        pipe["filters"] = [
            json.loads(f) if isinstance(f, str) else f for f in pipe.get("filters") or []
        ]
        if not pipe["filters"]:
            del pipe["filters"]
    for group, body in list((data.get("schedule_groups") or {}).items()):
        data["schedule_groups"][group] = body or {}
    return {k: v for k, v in data.items() if v not in ({}, [], None) and k != "state"}


def _sections_form(data: dict[str, Any], resources: dict[str, Any]) -> None:
    """Resources of a type a section declares (``state_machines``) in that
    section, as an import writes them: a resource or a section entry is the
    same part."""
    for section, type_name in EXPORTED_SECTIONS.items():
        moved = {
            name: {k: v for k, v in body.items() if k != "type"}
            for name, body in resources.items()
            if body.get("type") == type_name
        }
        for name in moved:
            del resources[name]
        data[section] = moved


def _input_form(target: dict[str, Any]) -> None:
    if isinstance(target.get("input"), str):
        with contextlib.suppress(ValueError):
            target["input"] = json.loads(target["input"])


def _resource_form(
    name: str, body: dict[str, Any], resources: dict[str, Any], directory: Path
) -> None:
    kind = body.get("type")
    if body.get(str(kind)) == name:  # queue: NAME, stream: NAME ... the default
        del body[str(kind)]
    if kind == "log_group" and body.get("log_group") == name:
        del body["log_group"]
    if kind == "api_destination":
        if body.get("http_method") == "POST":
            del body["http_method"]
        if isinstance(body.get("connection"), dict):
            resources[f"{name}-connection"] = {"type": "connection", **body["connection"]}
            body["connection"] = f"{name}-connection"
    if kind == "stream":
        if body.get("shards") == 1:
            del body["shards"]
        for consumer in (body.get("consumers") or {}).values():
            if consumer.get("start") == "trim_horizon":
                del consumer["start"]
    if kind == "state_machine":
        if "definition_file" in body:
            file = Path(str(body.pop("definition_file")))
            body["definition"] = json.loads((directory / file).read_text(encoding="utf-8"))
        if body.get("state_machine_type") == "STANDARD":
            del body["state_machine_type"]
    if kind == "topic":
        for subscription in body.get("subscriptions") or []:
            if subscription.get("raw_message_delivery") is False:
                del subscription["raw_message_delivery"]
    if kind == "firehose" and body.get("delivery_stream_name") == name:
        del body["delivery_stream_name"]
