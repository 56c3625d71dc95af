"""EventBridge Pipes: ``AWS::Pipes::Pipe`` <-> the config's ``pipes``, and
an SQS ``AWS::Lambda::EventSourceMapping`` (a queue feeding a function) as
a pipe from the queue to the function, with ``invoke_as:
event_source_mapping`` so the function gets Lambda's ``{"Records": [...]}``
(exported back as the event source mapping). (The pipes plugin's mapping, kept
here while that plugin is another's work; it registers like the others.)"""

from __future__ import annotations

import json
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
    boolean,
    integer,
    json_value,
    props,
    set_if,
)

#: Source parameters: CloudFormation's name -> the config's.
_SOURCE = (
    ("BatchSize", "batch_size"),
    ("MaximumBatchingWindowInSeconds", "maximum_batching_window_in_seconds"),
    ("StartingPosition", "starting_position"),
    ("StartingPositionTimestamp", "starting_position_timestamp"),
    ("ParallelizationFactor", "parallelization_factor"),
    ("MaximumRecordAgeInSeconds", "maximum_record_age_in_seconds"),
    ("MaximumRetryAttempts", "maximum_retry_attempts"),
    ("OnPartialBatchItemFailure", "on_partial_batch_item_failure"),
)
_BUS_ARN = "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/"
_PLACEHOLDER_ROLE = {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/pipelines-pipes"}


def pipe_name(context: ImportContext, resource: Resource, physical: str | None) -> str:
    """A pipe's name: unique among resources too (a pipe is one)."""
    chosen = context.unique(
        "resources", str(resource.metadata.get("name") or physical or resource.logical_id), resource
    )
    context.named[(str(resource.template.file), resource.logical_id)] = ("pipes", chosen)
    return chosen


def _identity(context: ImportContext, resource: Resource) -> Identity:
    name = resource.text("Name") or resource.logical_id
    arn = context.arn("pipes", f"pipe/{name}")
    context.alias("pipes", name, *alias_keys(arn))
    return Identity(name, {"Arn": arn})


def _filters(criteria: Any, path: tuple[str | int, ...]) -> list[Any]:
    filters = (criteria or {}).get("Filters") or [] if isinstance(criteria, dict) else []
    return [
        json_value(f.get("Pattern"), (*path, "Filters", i, "Pattern"))
        for i, f in enumerate(filters)
    ]


def _target(context: ImportContext, arn: Any, path: tuple[str | int, ...]) -> str:
    found = context.aliases.get(arn) if isinstance(arn, str) else None
    if found is not None and found[0] == "buses":
        return f"bus:{found[1]}"
    return context.resource(arn, path)


def _apply(context: ImportContext, resource: Resource) -> str:
    name = pipe_name(context, resource, resource.text("Name"))
    pipe: dict[str, Any] = {
        "source": context.resource(resource.get("Source"), resource.at("Source"))
    }
    given = resource.get("SourceParameters") or {}
    parameters: dict[str, Any] = {}
    for kind in ("SqsQueueParameters", "KinesisStreamParameters"):
        for prop, key in _SOURCE:
            value = (given.get(kind) or {}).get(prop)
            if value is not None:
                parameters[key] = (
                    value
                    if isinstance(value, str)
                    else integer(value, resource.at("SourceParameters", kind, prop))
                )
        dead = (given.get(kind) or {}).get("DeadLetterConfig")
        if isinstance(dead, dict) and "Arn" in dead:
            parameters["dead_letter_config"] = {
                "arn": context.resource(
                    dead["Arn"], resource.at("SourceParameters", kind, "DeadLetterConfig")
                )
            }
    if parameters:
        pipe["source_parameters"] = parameters
    filters = _filters(
        given.get("FilterCriteria"), resource.at("SourceParameters", "FilterCriteria")
    )
    if filters:
        pipe["filters"] = filters
    if resource.get("Enrichment"):
        pipe["enrichment"] = context.resource(resource.get("Enrichment"), resource.at("Enrichment"))
        template = (resource.get("EnrichmentParameters") or {}).get("InputTemplate")
        if template is not None:
            pipe["enrichment_parameters"] = {"input_template": template}
    pipe["target"] = _target(context, resource.get("Target"), resource.at("Target"))
    target_given = resource.get("TargetParameters") or {}
    target: dict[str, Any] = {}
    set_if(target, "input_template", target_given.get("InputTemplate"))
    set_if(
        target,
        "message_group_id",
        (target_given.get("SqsQueueParameters") or {}).get("MessageGroupId"),
    )
    bus = target_given.get("EventBridgeEventBusParameters") or {}
    set_if(target, "source", bus.get("Source"))
    set_if(target, "detail_type", bus.get("DetailType"))
    if target:
        pipe["target_parameters"] = target
    state = resource.text("DesiredState")
    if state not in (None, "RUNNING"):
        pipe["desired_state"] = state
    set_if(pipe, "description", resource.text("Description"))
    logs = resource.get("LogConfiguration")
    if isinstance(logs, dict):
        log: dict[str, Any] = {}
        set_if(log, "level", logs.get("Level"))
        destination = (logs.get("CloudwatchLogsLogDestination") or {}).get("LogGroupArn")
        if destination is not None:
            log["log_group"] = context.resource(destination, resource.at("LogConfiguration"))
        set_if(log, "include_execution_data", logs.get("IncludeExecutionData"))
        pipe["log_configuration"] = log
    if isinstance(resource.get("Tags"), dict) and resource.get("Tags"):
        pipe["tags"] = {str(k): str(v) for k, v in resource.get("Tags").items()}
    set_if(pipe, "role_arn", resource.text("RoleArn"))
    context.declare("pipes", name, pipe, resource, {"source": "Source", "target": "Target"})
    return f"pipe {name}: {pipe['source']} -> {pipe['target']}"


def queue_mapping(context: ImportContext, resource: Resource, queue: str, function: str) -> str:
    """An SQS event source mapping as the pipe that does its work."""
    if boolean(resource.get("Enabled"), resource.at("Enabled")) is False:
        raise_skip("a disabled event source mapping delivers nothing")
    name = pipe_name(context, resource, None)
    # Lambda's event shape, {"Records": [...]}: a handler written for AWS runs as is.
    pipe: dict[str, Any] = {
        "source": queue,
        "target": function,
        "invoke_as": "event_source_mapping",
    }
    parameters: dict[str, Any] = {}
    set_if(parameters, "batch_size", integer(resource.get("BatchSize"), resource.at("BatchSize")))
    set_if(
        parameters,
        "maximum_batching_window_in_seconds",
        integer(
            resource.get("MaximumBatchingWindowInSeconds"),
            resource.at("MaximumBatchingWindowInSeconds"),
        ),
    )
    if parameters:
        pipe["source_parameters"] = parameters
    filters = _filters(resource.get("FilterCriteria"), resource.at("FilterCriteria"))
    if filters:
        pipe["filters"] = filters
    context.declare(
        "pipes", name, pipe, resource, {"source": "EventSourceArn", "target": "FunctionName"}
    )
    return f"pipe {name}: queue {queue} -> function {function} (Lambda's SQS poller)"


def raise_skip(reason: str) -> None:
    from pipelines.cloudformation.mapping import Skip

    raise Skip(reason)


def _export_mapping(context: ExportContext, name: str, body: dict[str, Any]) -> None:
    """A pipe with ``invoke_as: event_source_mapping`` as the SQS event
    source mapping it was imported from (what AWS has for it)."""
    if context.resource_type(str(body.get("source"))) != "queue":
        raise ExportSkip("an event source mapping's pipe reads a queue here")
    if body.get("enrichment") or body.get("target_parameters"):
        raise ExportSkip("an event source mapping has no enrichment or target parameters")
    properties: dict[str, Any] = {
        "EventSourceArn": context.ref_of(str(body.get("source"))),
        "FunctionName": context.ref_of(str(body.get("target"))),
    }
    parameters = body.get("source_parameters") or {}
    set_if(properties, "BatchSize", parameters.get("batch_size"))
    set_if(
        properties,
        "MaximumBatchingWindowInSeconds",
        parameters.get("maximum_batching_window_in_seconds"),
    )
    if body.get("filters"):
        properties["FilterCriteria"] = {
            "Filters": [
                {"Pattern": f if isinstance(f, str) else json.dumps(f)} for f in body["filters"]
            ]
        }
    if body.get("desired_state") == "STOPPED":
        properties["Enabled"] = False
    context.add(
        context.logical_id("pipes", name, "EventSource"),
        "AWS::Lambda::EventSourceMapping",
        properties,
        Metadata={"pipelines": {"name": name}},
    )


def _export(context: ExportContext, name: str, body: dict[str, Any]) -> None:
    if body.get("invoke_as") == "event_source_mapping":
        _export_mapping(context, name, body)
        return
    properties: dict[str, Any] = {"Name": name, "Source": context.ref_of(str(body.get("source")))}
    kind = context.resource_type(str(body.get("source")))
    parameters = body.get("source_parameters") or {}
    aws_kind = {"queue": "SqsQueueParameters", "stream": "KinesisStreamParameters"}.get(kind or "")
    if aws_kind is None:
        raise ExportSkip(f"a pipe from a {kind} resource has no CloudFormation equivalent")
    given: dict[str, Any] = {}
    source: dict[str, Any] = {}
    for prop, key in _SOURCE:
        set_if(source, prop, parameters.get(key))
    if isinstance(parameters.get("dead_letter_config"), dict):
        source["DeadLetterConfig"] = {
            "Arn": context.ref_of(str(parameters["dead_letter_config"].get("arn")))
        }
    if source:
        given[aws_kind] = source
    if body.get("filters"):
        given["FilterCriteria"] = {
            "Filters": [
                {"Pattern": f if isinstance(f, str) else json.dumps(f)} for f in body["filters"]
            ]
        }
    if given:
        properties["SourceParameters"] = given
    if body.get("enrichment"):
        properties["Enrichment"] = context.ref_of(str(body["enrichment"]))
        template = (body.get("enrichment_parameters") or {}).get("input_template")
        if template is not None:
            properties["EnrichmentParameters"] = {"InputTemplate": template}
    target = str(body.get("target"))
    if target.startswith("bus:"):
        bus = target[4:]
        logical = context.logical.get(("buses", f"{bus}#Bus"))
        properties["Target"] = (
            {"Fn::GetAtt": [logical, "Arn"]} if logical else {"Fn::Sub": _BUS_ARN + bus}
        )
    else:
        properties["Target"] = context.ref_of(target)
    target_given = body.get("target_parameters") or {}
    out: dict[str, Any] = {}
    set_if(out, "InputTemplate", target_given.get("input_template"))
    if "message_group_id" in target_given:
        out["SqsQueueParameters"] = {"MessageGroupId": target_given["message_group_id"]}
    if "source" in target_given or "detail_type" in target_given:
        bus_parameters: dict[str, Any] = {}
        set_if(bus_parameters, "Source", target_given.get("source"))
        set_if(bus_parameters, "DetailType", target_given.get("detail_type"))
        out["EventBridgeEventBusParameters"] = bus_parameters
    if out:
        properties["TargetParameters"] = out
    set_if(properties, "DesiredState", body.get("desired_state"))
    set_if(properties, "Description", body.get("description"))
    logs = body.get("log_configuration")
    if isinstance(logs, dict):
        log: dict[str, Any] = {"Level": logs.get("level", "OFF")}
        if "log_group" in logs:
            log["CloudwatchLogsLogDestination"] = {
                "LogGroupArn": context.ref_of(str(logs["log_group"]))
            }
        set_if(log, "IncludeExecutionData", logs.get("include_execution_data"))
        properties["LogConfiguration"] = log
    set_if(properties, "Tags", body.get("tags"))
    extra: dict[str, Any] = {}
    if "role_arn" in body:
        properties["RoleArn"] = body["role_arn"]
    else:  # CloudFormation needs one; the import knows to leave it out
        properties["RoleArn"] = _PLACEHOLDER_ROLE
        extra = {"Metadata": {"pipelines": {"added": ["role_arn"]}}}
    context.add(context.logical_id("pipes", name, "Pipe"), "AWS::Pipes::Pipe", properties, **extra)


MAPPINGS = (
    TypeMapping(
        "AWS::Pipes::Pipe",
        identity=_identity,
        apply=_apply,
        owner="pipes",
        properties=props(
            ("Name", "pipes.NAME (default: the logical id)"),
            ("Source", "source (a queue or stream resource)"),
            (
                "SourceParameters",
                "source_parameters (SqsQueueParameters, KinesisStreamParameters);"
                " filters (FilterCriteria)",
            ),
            ("Enrichment", "enrichment"),
            ("EnrichmentParameters", "enrichment_parameters.input_template"),
            ("Target", "target (a resource, or an event bus: bus:NAME)"),
            (
                "TargetParameters",
                "target_parameters: input_template, message_group_id, source, detail_type",
            ),
            ("DesiredState", "desired_state"),
            ("Description", "description"),
            ("LogConfiguration", "log_configuration (a log group resource)"),
            ("Tags", "tags"),
            ("RoleArn", "role_arn (nothing is authorised by it)"),
        ),
    ),
    ConfigExport("pipes", _export, ("AWS::Pipes::Pipe", "AWS::Lambda::EventSourceMapping")),
)
