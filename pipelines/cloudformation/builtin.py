"""The engine's own CloudFormation mappings: EventBridge buses, rules and
archives, CloudWatch alarms, Lambda functions and their event source
mappings, Step Functions state machines, and what is skipped on purpose
(IAM: permissions are not enforced locally). The plugins' types (queues,
topics, streams, log groups, API destinations, delivery streams,
schedules) are mapped in their own ``cloudformation.py``."""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines.cloudformation.intrinsics import Identity, TemplateError
from pipelines.cloudformation.mapping import (
    PERMISSIONS_REASON,
    ConfigExport,
    ExportContext,
    ExportSkip,
    ImportContext,
    Resource,
    Skip,
    TypeMapping,
    alias_keys,
    boolean,
    integer,
    json_value,
    props,
    retry_and_dead_letter,
    set_if,
)

DEFAULT_BUS = "default"
_BUS_ARN = "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/"


# -- EventBridge: buses --------------------------------------------------------


def bus_name(context: ImportContext, value: Any, path: tuple[str | int, ...]) -> str:
    """A bus named by name or ARN."""
    if value is None:
        return DEFAULT_BUS
    if not isinstance(value, str):
        raise TemplateError(path, "an event bus name or ARN")
    if value.startswith("arn:"):
        return context.reference(value, path, sections=("buses",))[1]
    return value


def _bus_identity(context: ImportContext, resource: Resource) -> Identity:
    name = resource.text("Name") or resource.logical_id
    arn = context.arn("events", f"event-bus/{name}")
    context.alias("buses", name, *alias_keys(arn), name)
    return Identity(name, {"Arn": arn, "Name": name})


def _bus_apply(context: ImportContext, resource: Resource) -> str:
    name = resource.text("Name") or resource.logical_id
    if name == DEFAULT_BUS:
        raise TemplateError(resource.at("Name"), "'default' exists already: name another bus")
    buses = context.config.setdefault("buses", [])
    policy = json_value(resource.get("Policy"), resource.at("Policy"))
    if policy is not None:
        if isinstance(buses, list):
            buses = context.config["buses"] = dict.fromkeys(buses)
        buses[name] = {"policy": policy}
    elif isinstance(buses, list):
        buses.append(name)
    else:
        buses[name] = None
    context.origin(("buses",), resource, ())
    return f"bus {name}"


def _export_buses(context: ExportContext, name: str, body: Any) -> None:
    buses = body if isinstance(body, dict) else dict.fromkeys(body or [])
    for bus, settings in buses.items():
        properties: dict[str, Any] = {"Name": bus}
        if isinstance(settings, dict):
            if "policy" in settings:
                properties["Policy"] = settings["policy"]
            if set(settings) - {"policy"}:
                context.skip(
                    f"buses.{bus}", "statements and account are not exported (give policy)"
                )
        context.add(context.logical_id("buses", bus, "Bus"), "AWS::Events::EventBus", properties)


# -- EventBridge: rules ----------------------------------------------------------


def _rule_names(context: ImportContext, resource: Resource) -> tuple[str, str]:
    bus = bus_name(context, resource.get("EventBusName"), resource.at("EventBusName"))
    return resource.text("Name") or resource.logical_id, bus


def _rule_identity(context: ImportContext, resource: Resource) -> Identity:
    name, bus = _rule_names(context, resource)
    rest = f"rule/{name}" if bus == DEFAULT_BUS else f"rule/{bus}/{name}"
    arn = context.arn("events", rest)
    return Identity(name if bus == DEFAULT_BUS else f"{bus}|{name}", {"Arn": arn})


def _rule_target(
    context: ImportContext, resource: Resource, index: int, given: Any
) -> dict[str, Any]:
    path = resource.at("Targets", index)
    if not isinstance(given, dict) or "Arn" not in given or "Id" not in given:
        raise TemplateError(path, "a target has an Id and an Arn")
    target: dict[str, Any] = {"id": str(given["Id"])}
    arn = given["Arn"]
    found = context.aliases.get(arn) if isinstance(arn, str) else None
    if found is not None and found[0] == "buses":
        target["resource"] = _bus_target(context, found[1], resource)
    else:
        target["resource"] = context.resource(arn, (*path, "Arn"))
    set_if(target, "input", given.get("Input"))
    set_if(target, "input_path", given.get("InputPath"))
    transformer = given.get("InputTransformer")
    if isinstance(transformer, dict):
        body: dict[str, Any] = {"input_template": transformer.get("InputTemplate")}
        set_if(body, "input_paths_map", transformer.get("InputPathsMap"))
        target["input_transformer"] = body
    retry_and_dead_letter(context, target, given, path)
    http = given.get("HttpParameters")
    if isinstance(http, dict):
        parameters: dict[str, Any] = {}
        set_if(parameters, "path_parameter_values", http.get("PathParameterValues"))
        set_if(parameters, "header_parameters", http.get("HeaderParameters"))
        set_if(parameters, "query_string_parameters", http.get("QueryStringParameters"))
        target["http_parameters"] = parameters
    return target


def _bus_target(context: ImportContext, bus: str, resource: Resource) -> str:
    """A rule forwarding to another bus: an ``event_bus`` resource for it."""
    name = f"event-bus-{bus}"
    resources = context.section("resources")
    if name not in resources:
        context.declare("resources", name, {"type": "event_bus", "bus": bus}, resource)
    return name


_TARGET_ORIGINS = (
    ("id", "Id"),
    ("resource", "Arn"),
    ("input", "Input"),
    ("input_path", "InputPath"),
    ("input_transformer", "InputTransformer"),
    ("retry_policy", "RetryPolicy"),
    ("dead_letter", "DeadLetterConfig"),
    ("http_parameters", "HttpParameters"),
)
_TARGET_KEYS = {
    "Id",
    "Arn",
    "Input",
    "InputPath",
    "InputTransformer",
    "RetryPolicy",
    "DeadLetterConfig",
    "HttpParameters",
}


def _rule_apply(context: ImportContext, resource: Resource) -> str:
    name, bus = _rule_names(context, resource)
    config_name = context.name("rules", resource, name)
    rule: dict[str, Any] = {}
    if bus != DEFAULT_BUS:
        rule["bus"] = bus
    pattern = json_value(resource.get("EventPattern"), resource.at("EventPattern"))
    set_if(rule, "pattern", pattern)
    set_if(rule, "schedule", resource.text("ScheduleExpression"))
    if pattern is None and "schedule" not in rule:
        raise TemplateError(resource.path, "a rule needs an EventPattern or a ScheduleExpression")
    state = resource.text("State")
    if state == "ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS":
        state = "ENABLED"
    if state not in (None, "ENABLED"):
        rule["state"] = state
    set_if(rule, "description", resource.text("Description"))
    targets = resource.get("Targets") or []
    if not isinstance(targets, list):
        raise TemplateError(resource.at("Targets"), "a list of targets")
    ignored: set[str] = set()
    rule["targets"] = []
    for index, given in enumerate(targets):
        rule["targets"].append(_rule_target(context, resource, index, given))
        ignored |= set(given) - _TARGET_KEYS
    context.declare(
        "rules",
        config_name,
        rule,
        resource,
        {
            "pattern": "EventPattern",
            "schedule": "ScheduleExpression",
            "bus": "EventBusName",
            "state": "State",
        },
    )
    for index in range(len(targets)):
        context.origin(("rules", config_name, "targets", index), resource, ("Targets", index))
        for key, prop in _TARGET_ORIGINS:  # a target's problem at the property it came from
            context.origin(
                ("rules", config_name, "targets", index, key), resource, ("Targets", index, prop)
            )
    detail = f"rule {config_name}" + (f" on bus {bus}" if bus != DEFAULT_BUS else "")
    if ignored:
        detail += f"; targets' {', '.join(sorted(ignored))} ignored"
    return detail


def _export_rule(context: ExportContext, name: str, body: dict[str, Any]) -> None:
    properties: dict[str, Any] = {"Name": name}
    bus = body.get("bus", DEFAULT_BUS)
    if bus != DEFAULT_BUS:
        properties["EventBusName"] = bus_ref(context, bus)
    if "pattern" in body:
        properties["EventPattern"] = body["pattern"]
    schedule = body.get("schedule")
    extra: dict[str, Any] = {}
    if isinstance(schedule, dict):
        properties["ScheduleExpression"] = schedule.get("expression")
        for key in sorted(set(schedule) - {"expression"}):
            context.skip(
                f"rules.{name}.schedule.{key}",
                "EventBridge rules have no such setting (UTC, no missed runs): kept in Metadata",
            )
        if set(schedule) - {"expression"}:
            extra = {"Metadata": {"pipelines": {"settings": {"schedule": schedule}}}}
    elif schedule is not None:
        properties["ScheduleExpression"] = schedule
    if body.get("state", "ENABLED") != "ENABLED":
        properties["State"] = body["state"]
    else:
        properties["State"] = "ENABLED"
    set_if(properties, "Description", body.get("description"))
    targets = []
    for index, target in enumerate(body.get("targets") or []):
        try:
            targets.append(_export_target(context, target))
        except ExportSkip as exc:
            context.skip(f"rules.{name}.targets[{index}]", str(exc))
    if targets:
        properties["Targets"] = targets
    context.add(context.logical_id("rules", name, "Rule"), "AWS::Events::Rule", properties, **extra)


def bus_ref(context: ExportContext, bus: str) -> Any:
    logical = context.logical.get(("buses", bus + "#Bus"))
    return {"Ref": logical} if logical else bus


def _export_target(context: ExportContext, target: dict[str, Any]) -> dict[str, Any]:
    resource = str(target.get("resource"))
    if context.resource_type(resource) == "event_bus":
        bus = (context.config.get("resources") or {})[resource].get("bus")
        logical = context.logical.get(("buses", f"{bus}#Bus"))
        arn: Any = {"Fn::GetAtt": [logical, "Arn"]} if logical else {"Fn::Sub": _BUS_ARN + bus}
    else:
        arn = context.ref_of(resource)
    given: dict[str, Any] = {"Id": target.get("id"), "Arn": arn}
    if "input" in target:
        value = target["input"]
        given["Input"] = value if isinstance(value, str) else _json_text(value)
    set_if(given, "InputPath", target.get("input_path"))
    transformer = target.get("input_transformer")
    if isinstance(transformer, dict):
        out: dict[str, Any] = {"InputTemplate": transformer.get("input_template")}
        set_if(out, "InputPathsMap", transformer.get("input_paths_map"))
        given["InputTransformer"] = out
    if "input_jmespath" in target:
        raise ExportSkip("input_jmespath has no EventBridge equivalent")
    retry = target.get("retry_policy")
    if isinstance(retry, dict):
        policy: dict[str, Any] = {}
        set_if(policy, "MaximumRetryAttempts", retry.get("maximum_retry_attempts"))
        set_if(policy, "MaximumEventAgeInSeconds", retry.get("maximum_event_age"))
        given["RetryPolicy"] = policy
    if "dead_letter" in target:
        given["DeadLetterConfig"] = {"Arn": context.ref_of(str(target["dead_letter"]))}
    http = target.get("http_parameters")
    if isinstance(http, dict):
        out = {}
        set_if(out, "PathParameterValues", http.get("path_parameter_values"))
        set_if(out, "HeaderParameters", http.get("header_parameters"))
        set_if(out, "QueryStringParameters", http.get("query_string_parameters"))
        given["HttpParameters"] = out
    return given


def _json_text(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))


# -- EventBridge: archives -------------------------------------------------------


def _archive_identity(context: ImportContext, resource: Resource) -> Identity:
    name = resource.text("ArchiveName") or resource.logical_id
    return Identity(name, {"Arn": context.arn("events", f"archive/{name}")})


def _archive_apply(context: ImportContext, resource: Resource) -> str:
    name = context.name("archives", resource, resource.text("ArchiveName"))
    source = resource.get("SourceArn")
    if source is None:
        raise TemplateError(resource.at("SourceArn"), "an archive needs the SourceArn of its bus")
    bus = context.reference(source, resource.at("SourceArn"), sections=("buses",))[1]
    archive: dict[str, Any] = {}
    if bus != DEFAULT_BUS:
        archive["bus"] = bus
    set_if(
        archive, "pattern", json_value(resource.get("EventPattern"), resource.at("EventPattern"))
    )
    days = integer(resource.get("RetentionDays"), resource.at("RetentionDays"))
    if days:  # 0 or absent: kept indefinitely
        archive["retention_days"] = days
    set_if(archive, "description", resource.text("Description"))
    context.declare(
        "archives",
        name,
        archive,
        resource,
        {"pattern": "EventPattern", "retention_days": "RetentionDays"},
    )
    return f"archive {name}"


def _export_archive(context: ExportContext, name: str, body: dict[str, Any]) -> None:
    bus = body.get("bus", DEFAULT_BUS)
    logical = context.logical.get(("buses", bus + "#Bus"))
    source = {"Fn::GetAtt": [logical, "Arn"]} if logical else {"Fn::Sub": _BUS_ARN + bus}
    properties: dict[str, Any] = {"ArchiveName": name, "SourceArn": source}
    set_if(properties, "EventPattern", body.get("pattern"))
    set_if(properties, "RetentionDays", body.get("retention_days"))
    set_if(properties, "Description", body.get("description"))
    if "durability" in body:
        context.skip(f"archives.{name}.durability", "a local setting, not CloudFormation's")
    context.add(context.logical_id("archives", name, "Archive"), "AWS::Events::Archive", properties)


# -- CloudWatch alarms -------------------------------------------------------------

_ACTIONS = (
    ("AlarmActions", "alarm"),
    ("OKActions", "ok"),
    ("InsufficientDataActions", "insufficient_data"),
)


def _alarm_identity(context: ImportContext, resource: Resource) -> Identity:
    name = resource.text("AlarmName") or resource.logical_id
    arn = context.arn("cloudwatch", f"alarm:{name}")
    context.alias("alarms", name, *alias_keys(arn), name)
    return Identity(name, {"Arn": arn})


def _actions(context: ImportContext, resource: Resource, alarm: dict[str, Any]) -> None:
    actions: dict[str, list[str]] = {}
    for prop, state in _ACTIONS:
        given = resource.get(prop) or []
        names = [context.resource(arn, resource.at(prop, i)) for i, arn in enumerate(given)]
        if names:
            actions[state] = names
    if actions:
        alarm["actions"] = actions
    enabled = boolean(resource.get("ActionsEnabled"), resource.at("ActionsEnabled"))
    if enabled is False:
        alarm["actions_enabled"] = False


def _alarm_apply(context: ImportContext, resource: Resource) -> str:
    if resource.get("Metrics") is not None:
        raise Skip("metric math alarms (Metrics) are not evaluated locally")
    name = context.name("alarms", resource, resource.text("AlarmName"))
    alarm: dict[str, Any] = {}
    set_if(alarm, "description", resource.text("AlarmDescription"))
    alarm["namespace"] = resource.text("Namespace")
    alarm["metric_name"] = resource.text("MetricName")
    dimensions = resource.get("Dimensions") or []
    if dimensions:
        alarm["dimensions"] = {str(d.get("Name")): str(d.get("Value")) for d in dimensions}
    statistic = resource.text("Statistic") or resource.text("ExtendedStatistic")
    set_if(alarm, "statistic", statistic)
    alarm["period"] = integer(resource.get("Period"), resource.at("Period"))
    alarm["evaluation_periods"] = integer(
        resource.get("EvaluationPeriods"), resource.at("EvaluationPeriods")
    )
    set_if(
        alarm,
        "datapoints_to_alarm",
        integer(resource.get("DatapointsToAlarm"), resource.at("DatapointsToAlarm")),
    )
    alarm["threshold"] = resource.number("Threshold")
    set_if(alarm, "comparison_operator", resource.text("ComparisonOperator"))
    set_if(alarm, "treat_missing_data", resource.text("TreatMissingData"))
    _actions(context, resource, alarm)
    context.declare(
        "alarms",
        name,
        {k: v for k, v in alarm.items() if v is not None},
        resource,
        {
            "namespace": "Namespace",
            "metric_name": "MetricName",
            "period": "Period",
            "threshold": "Threshold",
            "statistic": "Statistic",
            "comparison_operator": "ComparisonOperator",
            "treat_missing_data": "TreatMissingData",
            "evaluation_periods": "EvaluationPeriods",
        },
    )
    return f"alarm {name}"


_ALARM_ARN = re.compile(r"arn:[^:\s\"()]*:cloudwatch:[^:\s\"()]*:[^:\s\"()]*:alarm:([^\s\"()]+)")


def _composite_apply(context: ImportContext, resource: Resource) -> str:
    name = context.name("alarms", resource, resource.text("AlarmName"))
    rule = resource.text("AlarmRule") or ""
    alarm: dict[str, Any] = {"rule": _ALARM_ARN.sub(lambda m: m.group(1), rule)}
    set_if(alarm, "description", resource.text("AlarmDescription"))
    _actions(context, resource, alarm)
    context.declare("alarms", name, alarm, resource, {"rule": "AlarmRule"})
    return f"composite alarm {name}"


def _export_alarm(context: ExportContext, name: str, body: dict[str, Any]) -> None:
    properties: dict[str, Any] = {"AlarmName": name}
    set_if(properties, "AlarmDescription", body.get("description"))
    for prop, state in _ACTIONS:
        names = (body.get("actions") or {}).get(state)
        if names:
            try:
                properties[prop] = [
                    context.ref_of(n) for n in ([names] if isinstance(names, str) else names)
                ]
            except ExportSkip as exc:
                context.skip(f"alarms.{name}.actions.{state}", str(exc))
    if body.get("actions_enabled") is False:
        properties["ActionsEnabled"] = False
    if body.get("bus", DEFAULT_BUS) != DEFAULT_BUS:
        context.skip(
            f"alarms.{name}.bus", "where a local alarm's state changes go: not CloudFormation's"
        )
    if "rule" in body:
        properties["AlarmRule"] = body["rule"]
        context.add(
            context.logical_id("alarms", name, "Alarm"),
            "AWS::CloudWatch::CompositeAlarm",
            properties,
        )
        return
    properties.update(
        {
            "Namespace": body.get("namespace"),
            "MetricName": body.get("metric_name"),
            "Period": body.get("period"),
            "EvaluationPeriods": body.get("evaluation_periods"),
            "Threshold": body.get("threshold"),
            "ComparisonOperator": body.get("comparison_operator", "GreaterThanOrEqualToThreshold"),
        }
    )
    statistic = body.get("statistic", "Average")
    properties["ExtendedStatistic" if str(statistic).startswith("p") else "Statistic"] = statistic
    if body.get("dimensions"):
        properties["Dimensions"] = [{"Name": k, "Value": v} for k, v in body["dimensions"].items()]
    set_if(properties, "DatapointsToAlarm", body.get("datapoints_to_alarm"))
    set_if(properties, "TreatMissingData", body.get("treat_missing_data"))
    context.add(context.logical_id("alarms", name, "Alarm"), "AWS::CloudWatch::Alarm", properties)


# -- Lambda ------------------------------------------------------------------------


def _function_name(resource: Resource) -> str:
    return resource.text("FunctionName") or resource.logical_id


def _function_identity(context: ImportContext, resource: Resource) -> Identity:
    name = _function_name(resource)
    arn = context.arn("lambda", f"function:{name}")
    context.alias("resources", name, *alias_keys(arn), name)
    return Identity(name, {"Arn": arn})


def _identifier(text: str) -> str:
    name = re.sub(r"\W", "_", text).lower() or "function"
    return f"f_{name}" if name[0].isdigit() or keyword.iskeyword(name) else name


def _module_path(context: ImportContext, resource: Resource, code_uri: Any) -> str:
    """The dotted package path of a ``CodeUri`` from the config's directory."""
    path = resource.at("CodeUri")
    if not isinstance(code_uri, str) or code_uri.startswith("s3://"):
        raise Skip("code in S3 is not fetched locally: give CodeUri a local directory")
    directory = (resource.template.file.parent / code_uri).resolve()
    if directory.suffix == ".zip" or directory.is_file():
        raise Skip(f"CodeUri {code_uri} is an archive: give the directory it is built from")
    if not directory.is_dir():
        raise TemplateError(path, f"CodeUri {code_uri}: no directory {directory}")
    try:
        parts = directory.relative_to(context.directory).parts
    except ValueError:
        raise Skip(
            f"CodeUri {code_uri} is outside the config's directory {context.directory}"
        ) from None
    for part in parts:
        if not part.isidentifier() or keyword.iskeyword(part):
            raise Skip(
                f"CodeUri {code_uri}: {part!r} is not a Python package name, so the handler"
                " cannot be imported from the config's directory"
            )
    return ".".join(parts)


def _write_inline(context: ImportContext, resource: Resource, code: str, name: str) -> str:
    module = _identifier(name)
    target = context.directory / "inline_functions" / f"{module}.py"
    if context.write_code:
        target.parent.mkdir(parents=True, exist_ok=True)
        text = (
            f"# Written by pipelines import from {resource.template.file}"
            f" ({resource.logical_id}'s ZipFile).\n{code}"
        )
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
        context.written.append(target)
    return f"inline_functions.{module}"


def _function_apply(context: ImportContext, resource: Resource) -> str:
    name = _function_name(resource)
    runtime = resource.text("Runtime")
    if resource.text("PackageType") == "Image":
        raise Skip("container image functions are not run locally")
    if runtime is None or not runtime.startswith("python"):
        raise Skip(f"runtime {runtime}: only Python functions run locally (as a function resource)")
    handler = resource.text("Handler")
    if not handler or "." not in handler:
        raise TemplateError(resource.at("Handler"), "a Python handler is module.function")
    module, _, function = handler.rpartition(".")
    module = module.replace("/", ".")
    code = resource.get("Code") or {}
    if isinstance(code, dict) and isinstance(code.get("ZipFile"), str):
        module = _write_inline(context, resource, code["ZipFile"], name)
    elif "CodeUri" in resource.properties:
        package = _module_path(context, resource, resource.get("CodeUri"))
        module = f"{package}.{module}" if package else module
    else:
        raise Skip("code in S3 or an image is not fetched locally: give ZipFile, or CodeUri (SAM)")
    body: dict[str, Any] = {"type": "function", "function": f"{module}:{function}"}
    set_if(body, "timeout", integer(resource.get("Timeout"), resource.at("Timeout")))
    set_if(
        body,
        "max_concurrency",
        integer(
            resource.get("ReservedConcurrentExecutions"),
            resource.at("ReservedConcurrentExecutions"),
        ),
    )
    config_name = context.name("resources", resource, name)
    context.declare(
        "resources", config_name, body, resource, {"function": "Handler", "timeout": "Timeout"}
    )
    detail = f"function {config_name} ({body['function']})"
    if resource.get("Environment"):
        detail += "; Environment: not set for local functions (they see the runner's)"
    return detail


def _export_function(context: ExportContext, name: str, body: dict[str, Any]) -> None:
    module, _, function = str(body.get("function")).partition(":")
    properties: dict[str, Any] = {
        "FunctionName": name,
        "Runtime": "python3.12",
        "Handler": f"{module}.{function}",
        "CodeUri": context.code_uri,
    }
    set_if(properties, "Timeout", body.get("timeout"))
    set_if(properties, "ReservedConcurrentExecutions", body.get("max_concurrency"))
    invoke = body.get("async_invoke")
    if isinstance(invoke, dict):
        config: dict[str, Any] = {}
        set_if(config, "MaximumRetryAttempts", invoke.get("maximum_retry_attempts"))
        set_if(config, "MaximumEventAgeInSeconds", invoke.get("maximum_event_age"))
        destinations: dict[str, Any] = {}
        for key, prop in (("on_success", "OnSuccess"), ("on_failure", "OnFailure")):
            if key in invoke:
                try:
                    kind = _DESTINATION_TYPES.get(context.resource_type(str(invoke[key])) or "")
                    if kind is None:
                        raise ExportSkip(f"{invoke[key]!r} cannot be a Lambda destination")
                    destinations[prop] = {
                        "Type": kind,
                        "Destination": context.ref_of(str(invoke[key])),
                    }
                except ExportSkip as exc:
                    context.skip(f"resources.{name}.async_invoke.{key}", str(exc))
        if destinations:
            config["DestinationConfig"] = destinations
        if "queue_size" in invoke:
            context.skip(f"resources.{name}.async_invoke.queue_size", "a local setting")
        properties["EventInvokeConfig"] = config
    context.needs_sam = True
    context.add(context.primaries[name], "AWS::Serverless::Function", properties)


_DESTINATION_TYPES = {
    "queue": "SQS",
    "topic": "SNS",
    "function": "Lambda",
    "event_bus": "EventBridge",
}


def _invoke_config_apply(context: ImportContext, resource: Resource) -> str:
    function = context.resource(resource.get("FunctionName"), resource.at("FunctionName"))
    body = context.section("resources").get(function)
    if not isinstance(body, dict) or body.get("type") != "function":
        raise TemplateError(resource.at("FunctionName"), f"{function!r} is not a function here")
    invoke: dict[str, Any] = {}
    set_if(
        invoke,
        "maximum_retry_attempts",
        integer(resource.get("MaximumRetryAttempts"), resource.at("MaximumRetryAttempts")),
    )
    set_if(
        invoke,
        "maximum_event_age",
        integer(resource.get("MaximumEventAgeInSeconds"), resource.at("MaximumEventAgeInSeconds")),
    )
    destinations = resource.get("DestinationConfig") or {}
    for prop, key in (("OnSuccess", "on_success"), ("OnFailure", "on_failure")):
        given = destinations.get(prop)
        if isinstance(given, dict) and "Destination" in given:
            invoke[key] = context.resource(
                given["Destination"], resource.at("DestinationConfig", prop, "Destination")
            )
    body["async_invoke"] = invoke
    context.origin(("resources", function, "async_invoke"), resource, ())
    return f"function {function}'s async_invoke"


def _event_source_apply(context: ImportContext, resource: Resource) -> str:
    source = resource.get("EventSourceArn")
    path = resource.at("EventSourceArn")
    function = context.resource(resource.get("FunctionName"), resource.at("FunctionName"))
    stream = context.resource(source, path)
    body = context.resource_part(stream)
    kind = body.get("type")
    if kind == "queue":
        from pipelines.cloudformation.pipes import queue_mapping

        return queue_mapping(context, resource, stream, function)
    if kind != "stream":
        raise Skip(f"an event source of a {kind} resource has no local equivalent")
    consumer: dict[str, Any] = {"target": function}
    set_if(consumer, "batch_size", integer(resource.get("BatchSize"), resource.at("BatchSize")))
    position = resource.text("StartingPosition")
    if position == "LATEST":
        consumer["start"] = "latest"
    elif position in (None, "TRIM_HORIZON"):
        pass  # the consumer's default
    else:
        raise Skip(f"StartingPosition {position} is not supported locally (TRIM_HORIZON, LATEST)")
    set_if(
        consumer,
        "maximum_retry_attempts",
        integer(resource.get("MaximumRetryAttempts"), resource.at("MaximumRetryAttempts")),
    )
    if boolean(resource.get("Enabled"), resource.at("Enabled")) is False:
        raise Skip("a disabled event source mapping delivers nothing")
    consumer.update(resource.metadata.get("settings") or {})
    consumer_id = str(resource.metadata.get("id") or resource.logical_id)
    consumers = body.setdefault("consumers", {})
    consumers[consumer_id] = consumer
    context.origin(("resources", stream, "consumers", consumer_id), resource, ())
    return f"stream {stream}'s consumer {consumer_id} -> {function}"


# -- Step Functions ------------------------------------------------------------------


def _machine_identity(context: ImportContext, resource: Resource) -> Identity:
    name = resource.text("StateMachineName") or resource.logical_id
    arn = context.arn("states", f"stateMachine:{name}")
    context.alias("resources", name, *alias_keys(arn), name)
    return Identity(arn, {"Arn": arn, "Name": name, "StateMachineName": name})


def _substitute(value: Any, substitutions: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return re.sub(
            r"\$\{([^}]+)\}",
            lambda m: str(substitutions[m.group(1)]) if m.group(1) in substitutions else m.group(0),
            value,
        )
    if isinstance(value, dict):
        return {k: _substitute(v, substitutions) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, substitutions) for v in value]
    return value


def _machine_apply(context: ImportContext, resource: Resource) -> str:
    # Named among the resources (a state machine is one), declared in the
    # state_machines section (the form docs/states.md shows).
    name = context.name("resources", resource, resource.text("StateMachineName"))
    # (Where the import puts back what an export kept in Metadata.)
    context.named[(str(resource.template.file), resource.logical_id)] = ("state_machines", name)
    body: dict[str, Any] = {}
    substitutions = resource.get("DefinitionSubstitutions") or {}
    if "Definition" in resource.properties:
        definition: Any = resource.get("Definition")
        origin = "Definition"
    elif "DefinitionString" in resource.properties:
        definition = resource.text("DefinitionString")
        origin = "DefinitionString"
    elif "DefinitionS3Location" in resource.properties:
        raise Skip("a definition in S3 is not read locally: give Definition or DefinitionString")
    else:
        raise TemplateError(resource.path, "a state machine needs a Definition or DefinitionString")
    body["definition"] = _substitute(definition, substitutions) if substitutions else definition
    kind = resource.text("StateMachineType")
    if kind not in (None, "STANDARD"):
        body["state_machine_type"] = kind
    set_if(body, "role_arn", resource.text("RoleArn"))
    context.declare("state_machines", name, body, resource, {"definition": origin})
    if origin == "Definition":  # a problem inside it is placed at its template node
        for inner in _inner_paths(definition):
            context.origin(
                ("state_machines", name, "definition", *inner), resource, (origin, *inner)
            )
    return f"state machine {name}"


def _inner_paths(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """The path of each node inside a mapping or list (not its own)."""
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, inner in items:
        yield (*path, key)
        yield from _inner_paths(inner, (*path, key))


def _export_machine(context: ExportContext, name: str, body: dict[str, Any]) -> None:
    properties: dict[str, Any] = {"StateMachineName": name}
    definition = body.get("definition")
    if definition is None and "definition_file" in body:
        import json

        file = Path(str(body["definition_file"]))
        try:
            definition = json.loads((context.directory / file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ExportSkip(f"cannot read definition_file {file}: {exc}") from None
    if isinstance(definition, str):
        properties["DefinitionString"] = definition
    else:
        properties["Definition"] = definition
    set_if(properties, "StateMachineType", body.get("state_machine_type"))
    extra = {}
    if "role_arn" in body:
        properties["RoleArn"] = body["role_arn"]
    else:  # CloudFormation needs one; the import knows to leave it out
        properties["RoleArn"] = {
            "Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/pipelines-states"
        }
        extra = {"Metadata": {"pipelines": {"added": ["role_arn"]}}}
    context.add(context.primaries[name], "AWS::StepFunctions::StateMachine", properties, **extra)


def _skip(type_name: str, reason: str) -> TypeMapping:
    return TypeMapping(type_name, identity=_named_identity, reason=reason)


def _named_identity(context: ImportContext, resource: Resource) -> Identity:
    """What a skipped resource still gives: a name, and an ARN of its kind."""
    name = str(
        resource.properties.get("RoleName")
        or resource.properties.get("PolicyName")
        or resource.logical_id
    )
    service = resource.type.split("::")[1].lower()
    kind = resource.type.split("::")[2][:1].lower() + resource.type.split("::")[2][1:]
    arn = context.arn(service, f"{kind}/{name}", region=service != "iam")
    return Identity(name, {"Arn": arn, "RoleId": name, "Name": name})


MAPPINGS: tuple[TypeMapping | ConfigExport, ...] = (
    TypeMapping(
        "AWS::Events::EventBus",
        identity=_bus_identity,
        apply=_bus_apply,
        properties=props(("Name", "buses (the bus's name)"), ("Policy", "buses.NAME.policy")),
    ),
    TypeMapping(
        "AWS::Events::Rule",
        identity=_rule_identity,
        apply=_rule_apply,
        properties=props(
            ("Name", "rules.NAME (default: the logical id)"),
            ("EventBusName", "bus (a name or ARN)"),
            ("EventPattern", "pattern"),
            ("ScheduleExpression", "schedule"),
            ("State", "state"),
            ("Description", "description"),
            (
                "Targets",
                "targets: Id, Arn (resource), Input, InputPath, InputTransformer,"
                " RetryPolicy, DeadLetterConfig, HttpParameters",
            ),
        ),
    ),
    TypeMapping(
        "AWS::Events::Archive",
        identity=_archive_identity,
        apply=_archive_apply,
        properties=props(
            ("ArchiveName", "archives.NAME"),
            ("SourceArn", "bus"),
            ("EventPattern", "pattern"),
            ("RetentionDays", "retention_days (0: indefinitely)"),
            ("Description", "description"),
        ),
    ),
    _skip(
        "AWS::Events::EventBusPolicy",
        "bus policies are declared in the config's buses"
        " (the Policy of an AWS::Events::EventBus is mapped)",
    ),
    TypeMapping(
        "AWS::CloudWatch::Alarm",
        identity=_alarm_identity,
        apply=_alarm_apply,
        properties=props(
            ("AlarmName", "alarms.NAME"),
            ("AlarmDescription", "description"),
            ("Namespace", "namespace"),
            ("MetricName", "metric_name"),
            ("Dimensions", "dimensions"),
            ("Statistic", "statistic"),
            ("ExtendedStatistic", "statistic (pNN)"),
            ("Period", "period"),
            ("EvaluationPeriods", "evaluation_periods"),
            ("DatapointsToAlarm", "datapoints_to_alarm"),
            ("Threshold", "threshold"),
            ("ComparisonOperator", "comparison_operator"),
            ("TreatMissingData", "treat_missing_data"),
            ("ActionsEnabled", "actions_enabled"),
            ("AlarmActions", "actions.alarm (resources)"),
            ("OKActions", "actions.ok"),
            ("InsufficientDataActions", "actions.insufficient_data"),
            ("Metrics", "not evaluated locally: the alarm is skipped"),
        ),
    ),
    TypeMapping(
        "AWS::CloudWatch::CompositeAlarm",
        identity=_alarm_identity,
        apply=_composite_apply,
        phase=1,
        properties=props(
            ("AlarmName", "alarms.NAME"),
            ("AlarmRule", "rule (alarm ARNs become names)"),
            ("AlarmDescription", "description"),
            ("ActionsEnabled", "actions_enabled"),
            ("AlarmActions", "actions.alarm"),
            ("OKActions", "actions.ok"),
            ("InsufficientDataActions", "actions.insufficient_data"),
        ),
    ),
    TypeMapping(
        "AWS::Lambda::Function",
        identity=_function_identity,
        apply=_function_apply,
        properties=props(
            ("FunctionName", "resources.NAME"),
            ("Runtime", "python*: a function resource; other runtimes are skipped"),
            ("Handler", "function (module:function)"),
            ("Code", "ZipFile: written to inline_functions/NAME.py; S3 and images are skipped"),
            ("CodeUri", "(SAM) the handler's package, from the config's directory"),
            ("Timeout", "timeout"),
            ("ReservedConcurrentExecutions", "max_concurrency"),
            ("PackageType", "Image: skipped"),
        ),
        naming=("Role", "MemorySize", "Description", "Architectures", "Tags", "Environment"),
    ),
    TypeMapping(
        "AWS::Lambda::EventInvokeConfig",
        apply=_invoke_config_apply,
        phase=1,
        properties=props(
            ("FunctionName", "the function resource"),
            ("MaximumRetryAttempts", "async_invoke.maximum_retry_attempts"),
            ("MaximumEventAgeInSeconds", "async_invoke.maximum_event_age"),
            ("DestinationConfig", "async_invoke.on_success, on_failure"),
        ),
        naming=("Qualifier",),
    ),
    TypeMapping(
        "AWS::Lambda::EventSourceMapping",
        identity=lambda context, resource: Identity(
            resource.logical_id, {"Id": resource.logical_id}
        ),
        apply=_event_source_apply,
        phase=1,
        properties=props(
            (
                "EventSourceArn",
                "a stream resource (a consumer) or a queue (a pipe to the function,"
                " invoke_as: event_source_mapping)",
            ),
            ("MaximumBatchingWindowInSeconds", "queues: the pipe's source_parameters"),
            ("FilterCriteria", "queues: the pipe's filters"),
            ("FunctionName", "consumers.ID.target"),
            ("BatchSize", "consumers.ID.batch_size"),
            ("StartingPosition", "consumers.ID.start"),
            ("MaximumRetryAttempts", "consumers.ID.maximum_retry_attempts"),
            ("Enabled", "false: skipped"),
        ),
    ),
    _skip("AWS::Lambda::Permission", PERMISSIONS_REASON),
    _skip("AWS::Lambda::Version", "versions are not kept locally (the function runs as written)"),
    _skip("AWS::Lambda::Alias", "aliases are not kept locally (the function runs as written)"),
    _skip("AWS::Lambda::LayerVersion", "layers are not used locally"),
    TypeMapping(
        "AWS::StepFunctions::StateMachine",
        identity=_machine_identity,
        apply=_machine_apply,
        properties=props(
            ("StateMachineName", "state_machines.NAME"),
            ("Definition", "definition"),
            ("DefinitionString", "definition (JSON text)"),
            ("DefinitionSubstitutions", "${name}s replaced in the definition"),
            ("DefinitionS3Location", "not read: skipped"),
            ("StateMachineType", "state_machine_type"),
            ("RoleArn", "role_arn"),
        ),
        naming=("LoggingConfiguration", "TracingConfiguration", "Tags"),
    ),
    TypeMapping("AWS::IAM::*", identity=_named_identity, reason=PERMISSIONS_REASON),
    ConfigExport("buses", _export_buses, ("AWS::Events::EventBus",)),
    ConfigExport("rules", _export_rule, ("AWS::Events::Rule",)),
    ConfigExport("archives", _export_archive, ("AWS::Events::Archive",)),
    ConfigExport(
        "alarms", _export_alarm, ("AWS::CloudWatch::Alarm", "AWS::CloudWatch::CompositeAlarm")
    ),
    ConfigExport(
        "function",
        _export_function,
        ("AWS::Serverless::Function",),
        suffix="Function",
        keys=("function", "timeout", "max_concurrency", "async_invoke"),
    ),
    ConfigExport(
        "state_machine",
        _export_machine,
        ("AWS::StepFunctions::StateMachine",),
        suffix="StateMachine",
        keys=("definition", "definition_file", "state_machine_type", "role_arn"),
    ),
)
