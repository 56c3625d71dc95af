"""The stream plugin's CloudFormation mappings: ``AWS::Kinesis::Stream``
<-> a ``stream`` resource; its consumers <-> ``AWS::Lambda::EventSourceMapping``
(imported by the engine's Lambda mapping)."""

from __future__ import annotations

from typing import Any

from pipelines.cloudformation.intrinsics import Identity
from pipelines.cloudformation.mapping import (
    ConfigExport,
    ExportContext,
    ExportSkip,
    ImportContext,
    Resource,
    TypeMapping,
    alias_keys,
    integer,
    props,
    set_if,
)


def _name(resource: Resource) -> str:
    return resource.text("Name") or resource.logical_id


def _identity(context: ImportContext, resource: Resource) -> Identity:
    name = _name(resource)
    arn = context.arn("kinesis", f"stream/{name}")
    context.alias("resources", name, *alias_keys(arn), name)
    return Identity(name, {"Arn": arn})


def _apply(context: ImportContext, resource: Resource) -> str:
    name = context.name("resources", resource, _name(resource))
    body: dict[str, Any] = {"type": "stream"}
    if name != _name(resource):
        body["stream"] = _name(resource)
    set_if(body, "shards", integer(resource.get("ShardCount"), resource.at("ShardCount")))
    set_if(
        body,
        "retention_hours",
        integer(resource.get("RetentionPeriodHours"), resource.at("RetentionPeriodHours")),
    )
    context.declare(
        "resources",
        name,
        body,
        resource,
        {"shards": "ShardCount", "retention_hours": "RetentionPeriodHours"},
    )
    mode = (resource.get("StreamModeDetails") or {}).get("StreamMode")
    return f"stream {name}" + (
        "; ON_DEMAND: the shards given (default 1)" if mode == "ON_DEMAND" else ""
    )


def _export(context: ExportContext, name: str, body: dict[str, Any]) -> None:
    stream = str(body.get("stream", name))
    properties: dict[str, Any] = {"Name": stream, "ShardCount": body.get("shards", 1)}
    set_if(properties, "RetentionPeriodHours", body.get("retention_hours"))
    logical = context.primaries[name]
    context.add(logical, "AWS::Kinesis::Stream", properties)
    for consumer, settings in (body.get("consumers") or {}).items():
        where = f"resources.{name}.consumers.{consumer}"
        target = str(settings.get("target"))
        if context.resource_type(target) != "function":
            context.skip(
                where, "only a function consumes a stream in AWS (an event source mapping)"
            )
            continue
        try:
            function = context.ref_of(target)
        except ExportSkip as exc:
            context.skip(where, str(exc))
            continue
        given: dict[str, Any] = {
            "EventSourceArn": {"Fn::GetAtt": [logical, "Arn"]},
            "FunctionName": function,
            "StartingPosition": str(settings.get("start", "trim_horizon")).upper(),
        }
        set_if(given, "BatchSize", settings.get("batch_size"))
        set_if(given, "MaximumRetryAttempts", settings.get("maximum_retry_attempts"))
        metadata: dict[str, Any] = {"id": consumer}
        if "poll" in settings:
            metadata["settings"] = {"poll": settings["poll"]}
        context.add(
            context.logical_id("consumers", f"{name}/{consumer}", "EventSource"),
            "AWS::Lambda::EventSourceMapping",
            given,
            Metadata={"pipelines": metadata},
        )


MAPPINGS = (
    TypeMapping(
        "AWS::Kinesis::Stream",
        identity=_identity,
        apply=_apply,
        owner="stream",
        properties=props(
            ("Name", "resources.NAME (default: the logical id)"),
            ("ShardCount", "shards"),
            ("RetentionPeriodHours", "retention_hours"),
            ("StreamModeDetails", "ON_DEMAND: the shards given"),
        ),
        naming=("Tags", "StreamEncryption"),
    ),
    ConfigExport(
        "stream",
        _export,
        ("AWS::Kinesis::Stream", "AWS::Lambda::EventSourceMapping"),
        suffix="Stream",
        keys=("stream", "shards", "retention_hours", "consumers"),
    ),
)
