"""The logs plugin's CloudFormation mappings: ``AWS::Logs::LogGroup`` <->
a ``log_group`` resource, ``AWS::Logs::MetricFilter`` and
``AWS::Logs::SubscriptionFilter`` <-> its ``metric_filters`` and
``subscription_filters``."""

from __future__ import annotations

import re
from typing import Any

from pipelines.cloudformation.intrinsics import Identity, TemplateError
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

_PLAIN = re.compile(r"^[A-Za-z0-9._-]+$")


def _group(resource: Resource) -> str:
    return resource.text("LogGroupName") or resource.logical_id


def _identity(context: ImportContext, resource: Resource) -> Identity:
    group = _group(resource)
    arn = context.arn("logs", f"log-group:{group}:*")
    context.alias("resources", _config_name(resource), *alias_keys(arn), arn[:-2], group)
    return Identity(group, {"Arn": arn})


def _config_name(resource: Resource) -> str:
    group = _group(resource)
    return str(
        resource.metadata.get("name") or (group if _PLAIN.match(group) else resource.logical_id)
    )


def _apply(context: ImportContext, resource: Resource) -> str:
    group = _group(resource)
    name = context.name("resources", resource, _config_name(resource))
    body: dict[str, Any] = {"type": "log_group"}
    if name != group:
        body["log_group"] = group
    set_if(
        body,
        "retention_days",
        integer(resource.get("RetentionInDays"), resource.at("RetentionInDays")),
    )
    context.declare(
        "resources",
        name,
        body,
        resource,
        {"retention_days": "RetentionInDays", "log_group": "LogGroupName"},
    )
    return f"log group {group} (resource {name})"


def _owner(context: ImportContext, resource: Resource) -> tuple[str, dict[str, Any]]:
    name = context.resource(resource.get("LogGroupName"), resource.at("LogGroupName"))
    body = context.resource_part(name)
    if body.get("type") != "log_group":
        raise TemplateError(resource.at("LogGroupName"), f"{name!r} is not a log group")
    return name, body


def _filter_name(resource: Resource) -> str:
    return str(resource.metadata.get("id") or resource.text("FilterName") or resource.logical_id)


def _metric_filter_apply(context: ImportContext, resource: Resource) -> str:
    name, body = _owner(context, resource)
    transformations = resource.get("MetricTransformations") or []
    if len(transformations) != 1 or not isinstance(transformations[0], dict):
        raise TemplateError(resource.at("MetricTransformations"), "one metric transformation")
    given = transformations[0]
    where = resource.at("MetricTransformations", 0)
    metric: dict[str, Any] = {}
    if resource.text("FilterPattern"):
        metric["pattern"] = resource.text("FilterPattern")
    metric["metric_name"] = given.get("MetricName")
    metric["metric_namespace"] = given.get("MetricNamespace")
    value = given.get("MetricValue")
    if value is not None:
        metric["metric_value"] = _number_or_text(value)
    if given.get("DefaultValue") is not None:
        metric["default_value"] = float(given["DefaultValue"])
    dimensions = given.get("Dimensions") or []
    if dimensions:
        metric["dimensions"] = {str(d.get("Key")): str(d.get("Value")) for d in dimensions}
    set_if(metric, "unit", given.get("Unit"))
    if not metric["metric_name"] or not metric["metric_namespace"]:
        raise TemplateError(where, "MetricName and MetricNamespace are required")
    filter_name = _filter_name(resource)
    body.setdefault("metric_filters", {})[filter_name] = metric
    context.origin(("resources", name, "metric_filters", filter_name), resource, ())
    return f"log group resource {name}'s metric filter {filter_name}"


def _number_or_text(value: Any) -> Any:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return int(number) if number.is_integer() else number


def _subscription_filter_apply(context: ImportContext, resource: Resource) -> str:
    name, body = _owner(context, resource)
    target = context.resource(resource.get("DestinationArn"), resource.at("DestinationArn"))
    subscription: dict[str, Any] = {"target": target}
    if resource.text("FilterPattern"):
        subscription["pattern"] = resource.text("FilterPattern")
    subscription.update(resource.metadata.get("settings") or {})
    filter_name = _filter_name(resource)
    body.setdefault("subscription_filters", {})[filter_name] = subscription
    context.origin(("resources", name, "subscription_filters", filter_name), resource, ())
    return f"log group resource {name}'s subscription filter {filter_name} -> {target}"


def _export(context: ExportContext, name: str, body: dict[str, Any]) -> None:
    group = str(body.get("log_group", name))
    properties: dict[str, Any] = {"LogGroupName": group}
    set_if(properties, "RetentionInDays", body.get("retention_days"))
    logical = context.primaries[name]
    context.add(logical, "AWS::Logs::LogGroup", properties)
    for filter_name, metric in (body.get("metric_filters") or {}).items():
        transformation: dict[str, Any] = {
            "MetricName": metric.get("metric_name"),
            "MetricNamespace": metric.get("metric_namespace"),
            "MetricValue": str(metric.get("metric_value", 1)),
        }
        set_if(transformation, "DefaultValue", metric.get("default_value"))
        if metric.get("dimensions"):
            transformation["Dimensions"] = [
                {"Key": k, "Value": v} for k, v in metric["dimensions"].items()
            ]
        set_if(transformation, "Unit", metric.get("unit"))
        context.add(
            context.logical_id("metric_filters", f"{name}/{filter_name}", "MetricFilter"),
            "AWS::Logs::MetricFilter",
            {
                "LogGroupName": {"Ref": logical},
                "FilterName": filter_name,
                "FilterPattern": metric.get("pattern", ""),
                "MetricTransformations": [transformation],
            },
        )
    for filter_name, subscription in (body.get("subscription_filters") or {}).items():
        where = f"resources.{name}.subscription_filters.{filter_name}"
        try:
            destination = context.ref_of(str(subscription.get("target")))
        except ExportSkip as exc:
            context.skip(where, str(exc))
            continue
        local = {k: v for k, v in subscription.items() if k not in ("target", "pattern")}
        context.add(
            context.logical_id(
                "subscription_filters", f"{name}/{filter_name}", "SubscriptionFilter"
            ),
            "AWS::Logs::SubscriptionFilter",
            {
                "LogGroupName": {"Ref": logical},
                "FilterName": filter_name,
                "FilterPattern": subscription.get("pattern", ""),
                "DestinationArn": destination,
            },
            Metadata={"pipelines": {"settings": local}} if local else {},
        )


MAPPINGS = (
    TypeMapping(
        "AWS::Logs::LogGroup",
        identity=_identity,
        apply=_apply,
        owner="logs",
        properties=props(
            ("LogGroupName", "log_group (the resource's name when plain, else the logical id)"),
            ("RetentionInDays", "retention_days"),
        ),
        naming=("Tags", "KmsKeyId", "LogGroupClass", "DataProtectionPolicy"),
    ),
    TypeMapping(
        "AWS::Logs::MetricFilter",
        apply=_metric_filter_apply,
        phase=1,
        owner="logs",
        properties=props(
            ("LogGroupName", "the log_group resource"),
            ("FilterName", "metric_filters.NAME (default: the logical id)"),
            ("FilterPattern", "pattern"),
            (
                "MetricTransformations",
                "metric_name, metric_namespace, metric_value, default_value, dimensions, unit",
            ),
        ),
    ),
    TypeMapping(
        "AWS::Logs::SubscriptionFilter",
        apply=_subscription_filter_apply,
        phase=1,
        owner="logs",
        properties=props(
            ("LogGroupName", "the log_group resource"),
            ("FilterName", "subscription_filters.NAME (default: the logical id)"),
            ("FilterPattern", "pattern"),
            ("DestinationArn", "target (a resource of the template)"),
        ),
        naming=("RoleArn", "Distribution"),
    ),
    ConfigExport(
        "log_group",
        _export,
        ("AWS::Logs::LogGroup", "AWS::Logs::MetricFilter", "AWS::Logs::SubscriptionFilter"),
        suffix="LogGroup",
        keys=("log_group", "retention_days", "metric_filters", "subscription_filters"),
    ),
)
