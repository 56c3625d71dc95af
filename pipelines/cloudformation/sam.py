"""SAM's ``AWS::Serverless-2016-10-31`` transform, locally.

Like SAM itself, this expands each serverless resource into the plain
CloudFormation resources it stands for, before anything is resolved, so
the ordinary mappings do the rest: a function becomes an
``AWS::Lambda::Function`` (with its ``CodeUri``), its events the rule,
subscription, event source mapping, schedule or subscription filter that
delivers them; a state machine becomes an ``AWS::StepFunctions::StateMachine``
(``Definition``, ``DefinitionUri``, ``DefinitionSubstitutions``) and its
events rules and schedules targeting it. ``Globals.Function`` and
``Globals.StateMachine`` are merged under each resource's own properties.
What has no local equivalent (a SimpleTable, an Api event) is kept as a
note, reported as skipped with its reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipelines.cloudformation.intrinsics import TemplateError
from pipelines.cloudformation.template import Template, TPath

SAM_TRANSFORM = "AWS::Serverless-2016-10-31"

#: Serverless types not run locally, with the reason reported.
UNSUPPORTED = {
    "AWS::Serverless::SimpleTable": "DynamoDB tables are not run locally",
    "AWS::Serverless::Api": "API Gateway is not run locally",
    "AWS::Serverless::HttpApi": "API Gateway is not run locally",
    "AWS::Serverless::GraphQLApi": "AppSync is not run locally",
    "AWS::Serverless::LayerVersion": "layers are not used locally (imports come from the CodeUri)",
    "AWS::Serverless::Application": "nested applications are not imported",
    "AWS::Serverless::Connector": "permissions are not enforced locally",
}

_FUNCTION_COPIED = (
    "FunctionName",
    "Handler",
    "Runtime",
    "Timeout",
    "MemorySize",
    "Environment",
    "ReservedConcurrentExecutions",
    "Description",
    "PackageType",
    "Architectures",
    "Layers",
    "Tags",
)


@dataclass
class Expansion:
    """What the transform made: each new resource's origin, and notes."""

    made_from: dict[str, str] = field(default_factory=dict)
    #: Resources reported as skipped: logical id -> (type, reason).
    skipped: dict[str, tuple[str, str]] = field(default_factory=dict)


def uses_sam(template: Template) -> bool:
    transform = template.data.get("Transform")
    names = transform if isinstance(transform, list) else [transform]
    return SAM_TRANSFORM in names


def expand(template: Template) -> Expansion:
    """Replace the template's serverless resources by what they stand for."""
    expansion = Expansion()
    resources = template.data.get("Resources")
    if not isinstance(resources, dict):
        return expansion
    globals_ = template.data.get("Globals") or {}
    expanded: dict[str, Any] = {}
    for logical_id, body in resources.items():
        kind = body.get("Type") if isinstance(body, dict) else None
        if not isinstance(kind, str) or not kind.startswith("AWS::Serverless::"):
            expanded[logical_id] = body
            continue
        path: TPath = ("Resources", logical_id)
        if kind == "AWS::Serverless::Function":
            made = _function(template, logical_id, body, globals_.get("Function") or {}, expansion)
        elif kind == "AWS::Serverless::StateMachine":
            made = _state_machine(
                template, logical_id, body, globals_.get("StateMachine") or {}, expansion
            )
        else:
            reason = UNSUPPORTED.get(kind, f"{kind} has no local equivalent")
            expansion.skipped[logical_id] = (kind, reason)
            continue
        for new_id, new_body in made.items():
            if new_id in resources and new_id != logical_id:
                raise TemplateError(
                    path, f"SAM would make {new_id}, which the template declares too"
                )
            expanded[new_id] = new_body
            expansion.made_from.setdefault(new_id, kind)
            # A made resource's problems point at what made it.
            where = template.positions.get(path)
            if where is not None:
                template.positions.setdefault(("Resources", new_id), where)
    template.data["Resources"] = expanded
    return expansion


def _merged(body: dict[str, Any], globals_: dict[str, Any]) -> dict[str, Any]:
    properties = dict(globals_)
    for key, value in (body.get("Properties") or {}).items():
        if isinstance(value, dict) and isinstance(properties.get(key), dict):
            properties[key] = {**properties[key], **value}
        else:
            properties[key] = value
    return properties


def _carry(body: dict[str, Any], resource: dict[str, Any]) -> dict[str, Any]:
    for attribute in ("DependsOn", "Condition"):
        if attribute in body:
            resource[attribute] = body[attribute]
    return resource


def _function(
    template: Template,
    logical_id: str,
    body: dict[str, Any],
    globals_: dict[str, Any],
    expansion: Expansion,
) -> dict[str, Any]:
    properties = _merged(body, globals_)
    function: dict[str, Any] = {k: properties[k] for k in _FUNCTION_COPIED if k in properties}
    if "InlineCode" in properties:
        function["Code"] = {"ZipFile": properties["InlineCode"]}
    elif "CodeUri" in properties:
        function["CodeUri"] = properties["CodeUri"]
    elif "ImageUri" in properties:
        function["Code"] = {"ImageUri": properties["ImageUri"]}
    made: dict[str, Any] = {
        logical_id: _carry(body, {"Type": "AWS::Lambda::Function", "Properties": function})
    }
    invoke = properties.get("EventInvokeConfig")
    if isinstance(invoke, dict):
        config = {"FunctionName": {"Ref": logical_id}, "Qualifier": "$LATEST"}
        for key in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds", "DestinationConfig"):
            if key in invoke:
                config[key] = invoke[key]
        made[f"{logical_id}EventInvokeConfig"] = {
            "Type": "AWS::Lambda::EventInvokeConfig",
            "Properties": config,
        }
    arn = {"Fn::GetAtt": [logical_id, "Arn"]}
    events = properties.get("Events") or {}
    for event_name, event in events.items():
        event_id = f"{logical_id}{event_name}"
        kind = event.get("Type") if isinstance(event, dict) else None
        given = (event.get("Properties") or {}) if isinstance(event, dict) else {}
        event_path = ("Resources", logical_id, "Properties", "Events", event_name)
        resource = _event(kind, given, arn, event_id, {"Ref": logical_id})
        if resource is None:
            expansion.skipped[event_id] = (
                f"AWS::Serverless::Function event {kind}",
                f"{kind} events have no local equivalent",
            )
            continue
        made[event_id] = resource
        where = template.positions.get(event_path)
        if where is not None:
            template.positions.setdefault(("Resources", event_id), where)
    return made


def _target(given: dict[str, Any], arn: Any, default_id: str) -> dict[str, Any]:
    target: dict[str, Any] = {"Id": (given.get("Target") or {}).get("Id", default_id), "Arn": arn}
    for key in ("Input", "InputPath", "InputTransformer", "RetryPolicy"):
        if key in given:
            target[key] = given[key]
    dead_letter = given.get("DeadLetterConfig")
    if isinstance(dead_letter, dict) and "Arn" in dead_letter:
        target["DeadLetterConfig"] = {"Arn": dead_letter["Arn"]}
    return target


def _event(
    kind: Any, given: dict[str, Any], arn: Any, event_id: str, function_ref: Any | None
) -> dict[str, Any] | None:
    """The resource one SAM event stands for, targeting ``arn``."""
    if kind in ("EventBridgeRule", "CloudWatchEvent", "Schedule"):
        rule: dict[str, Any] = {"Targets": [_target(given, arn, f"{event_id}Target")]}
        if kind == "Schedule":
            rule["ScheduleExpression"] = given.get("Schedule")
        else:
            rule["EventPattern"] = given.get("Pattern")
            if "EventBusName" in given:
                rule["EventBusName"] = given["EventBusName"]
        for ours, theirs in (
            ("Name", "Name"),
            ("RuleName", "Name"),
            ("Description", "Description"),
        ):
            if ours in given:
                rule[theirs] = given[ours]
        if "State" in given:
            rule["State"] = given["State"]
        elif given.get("Enabled") is False:
            rule["State"] = "DISABLED"
        return {"Type": "AWS::Events::Rule", "Properties": rule}
    if kind == "ScheduleV2":
        target = {"Arn": arn, "RoleArn": given.get("RoleArn", "arn:aws:iam::000000000000:role/sam")}
        for key in ("Input", "RetryPolicy", "DeadLetterConfig"):
            if key in given:
                target[key] = given[key]
        schedule: dict[str, Any] = {
            "ScheduleExpression": given.get("ScheduleExpression"),
            "FlexibleTimeWindow": given.get("FlexibleTimeWindow", {"Mode": "OFF"}),
            "Target": target,
        }
        for key in (
            "Name",
            "GroupName",
            "Description",
            "StartDate",
            "EndDate",
            "State",
            "ScheduleExpressionTimezone",
        ):
            if key in given:
                schedule[key] = given[key]
        return {"Type": "AWS::Scheduler::Schedule", "Properties": schedule}
    if function_ref is None:
        return None  # a state machine's other events: none run locally
    if kind in ("SQS", "Kinesis"):
        mapping: dict[str, Any] = {
            "EventSourceArn": given.get("Queue" if kind == "SQS" else "Stream"),
            "FunctionName": function_ref,
        }
        for key in (
            "BatchSize",
            "Enabled",
            "StartingPosition",
            "MaximumRetryAttempts",
            "MaximumBatchingWindowInSeconds",
            "FilterCriteria",
            "FunctionResponseTypes",
        ):
            if key in given:
                mapping[key] = given[key]
        return {"Type": "AWS::Lambda::EventSourceMapping", "Properties": mapping}
    if kind == "SNS":
        subscription: dict[str, Any] = {
            "TopicArn": given.get("Topic"),
            "Protocol": "lambda",
            "Endpoint": arn,
        }
        for key in ("FilterPolicy", "FilterPolicyScope", "RedrivePolicy"):
            if key in given:
                subscription[key] = given[key]
        return {"Type": "AWS::SNS::Subscription", "Properties": subscription}
    if kind == "CloudWatchLogs":
        return {
            "Type": "AWS::Logs::SubscriptionFilter",
            "Properties": {
                "LogGroupName": given.get("LogGroupName"),
                "FilterPattern": given.get("FilterPattern", ""),
                "DestinationArn": arn,
            },
        }
    return None


def _state_machine(
    template: Template,
    logical_id: str,
    body: dict[str, Any],
    globals_: dict[str, Any],
    expansion: Expansion,
) -> dict[str, Any]:
    properties = _merged(body, globals_)
    path: TPath = ("Resources", logical_id, "Properties")
    machine: dict[str, Any] = {}
    if "Name" in properties:
        machine["StateMachineName"] = properties["Name"]
    if "Type" in properties:
        machine["StateMachineType"] = properties["Type"]
    if "Role" in properties:
        machine["RoleArn"] = properties["Role"]
    if "Definition" in properties:
        machine["Definition"] = properties["Definition"]
    elif isinstance(properties.get("DefinitionUri"), str):
        machine["Definition"] = _definition_file(
            template, properties["DefinitionUri"], (*path, "DefinitionUri")
        )
    elif "DefinitionUri" in properties:
        machine["DefinitionS3Location"] = properties["DefinitionUri"]
    if "DefinitionSubstitutions" in properties:
        machine["DefinitionSubstitutions"] = properties["DefinitionSubstitutions"]
    made: dict[str, Any] = {
        logical_id: _carry(
            body, {"Type": "AWS::StepFunctions::StateMachine", "Properties": machine}
        )
    }
    for event_name, event in (properties.get("Events") or {}).items():
        event_id = f"{logical_id}{event_name}"
        kind = event.get("Type") if isinstance(event, dict) else None
        given = (event.get("Properties") or {}) if isinstance(event, dict) else {}
        resource = _event(kind, given, {"Ref": logical_id}, event_id, None)
        if resource is None:
            expansion.skipped[event_id] = (
                f"AWS::Serverless::StateMachine event {kind}",
                f"{kind} events have no local equivalent",
            )
            continue
        made[event_id] = resource
    return made


def _definition_file(template: Template, uri: str, path: TPath) -> Any:
    """A ``DefinitionUri`` naming a local file (JSON or YAML), as SAM's
    ``sam build`` reads it before uploading."""
    if uri.startswith("s3://"):
        raise TemplateError(path, "a definition in S3 is not read locally: give a local file")
    file = template.file.parent / uri
    try:
        text = Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        raise TemplateError(path, f"cannot read {file}: {exc.strerror}") from None
    try:
        return json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise TemplateError(path, f"{file} is not JSON or YAML: {exc}") from None
