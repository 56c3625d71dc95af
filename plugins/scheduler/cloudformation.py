"""The scheduler plugin's CloudFormation mappings:
``AWS::Scheduler::Schedule`` and ``AWS::Scheduler::ScheduleGroup`` <-> the
config's ``schedules`` and ``schedule_groups``."""

from __future__ import annotations

from typing import Any

from pipelines.cloudformation.intrinsics import Identity, TemplateError
from pipelines.cloudformation.mapping import (
    ConfigExport,
    ExportContext,
    ExportSkip,
    ImportContext,
    Resource,
    TypeMapping,
    integer,
    props,
    retry_and_dead_letter,
    set_if,
)

DEFAULT_GROUP = "default"


def _group_identity(context: ImportContext, resource: Resource) -> Identity:
    name = resource.text("Name") or resource.logical_id
    arn = context.arn("scheduler", f"schedule-group/{name}")
    context.alias("schedule_groups", name, arn, name)
    return Identity(name, {"Arn": arn})


def _group_apply(context: ImportContext, resource: Resource) -> str:
    name = context.name("schedule_groups", resource, resource.text("Name"))
    body: dict[str, Any] = {}
    tags = resource.get("Tags")
    if tags:
        body["tags"] = {str(t.get("Key")): str(t.get("Value")) for t in tags}
    context.declare("schedule_groups", name, body, resource)
    return f"schedule group {name}"


def _names(resource: Resource) -> tuple[str, str]:
    return resource.text("GroupName") or DEFAULT_GROUP, resource.text("Name") or resource.logical_id


def _identity(context: ImportContext, resource: Resource) -> Identity:
    group, name = _names(resource)
    return Identity(name, {"Arn": context.arn("scheduler", f"schedule/{group}/{name}")})


def _target(context: ImportContext, resource: Resource) -> dict[str, Any]:
    given = resource.get("Target")
    path = resource.at("Target")
    if not isinstance(given, dict) or "Arn" not in given:
        raise TemplateError(path, "a schedule's Target has an Arn")
    target: dict[str, Any] = {}
    found = context.aliases.get(given["Arn"])
    if found is not None and found[0] == "resources":
        target["resource"] = found[1]
    else:
        target["arn"] = given["Arn"]  # an event bus, or a resource named by hand
    set_if(target, "input", given.get("Input"))
    retry_and_dead_letter(context, target, given, path)
    bus = given.get("EventBridgeParameters")
    if isinstance(bus, dict):
        target["eventbridge"] = {"detail_type": bus.get("DetailType"), "source": bus.get("Source")}
    sqs = given.get("SqsParameters")
    if isinstance(sqs, dict) and "MessageGroupId" in sqs:
        target["sqs"] = {"message_group_id": sqs["MessageGroupId"]}
    return target


def _apply(context: ImportContext, resource: Resource) -> str:
    group, name = _names(resource)
    key = name if group == DEFAULT_GROUP else f"{group}/{name}"
    key = context.name("schedules", resource, key)
    schedule: dict[str, Any] = {"expression": resource.text("ScheduleExpression")}
    set_if(schedule, "timezone", resource.text("ScheduleExpressionTimezone"))
    set_if(schedule, "start_date", resource.text("StartDate"))
    set_if(schedule, "end_date", resource.text("EndDate"))
    set_if(schedule, "description", resource.text("Description"))
    state = resource.text("State")
    if state not in (None, "ENABLED"):
        schedule["state"] = state
    window = resource.get("FlexibleTimeWindow") or {}
    if window.get("Mode") == "FLEXIBLE":
        schedule["flexible_window_minutes"] = integer(
            window.get("MaximumWindowInMinutes"), resource.at("FlexibleTimeWindow")
        )
    after = resource.text("ActionAfterCompletion")
    if after not in (None, "NONE"):
        schedule["action_after_completion"] = after
    schedule["target"] = _target(context, resource)
    context.declare(
        "schedules",
        key,
        schedule,
        resource,
        {
            "expression": "ScheduleExpression",
            "timezone": "ScheduleExpressionTimezone",
            "target": "Target",
        },
    )
    return f"schedule {key}"


def _export_group(context: ExportContext, name: str, body: dict[str, Any]) -> None:
    properties: dict[str, Any] = {"Name": name}
    tags = (body or {}).get("tags")
    if tags:
        properties["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
    context.add(
        context.logical_id("schedule_groups", name, "ScheduleGroup"),
        "AWS::Scheduler::ScheduleGroup",
        properties,
    )


def _export_schedule(context: ExportContext, key: str, body: dict[str, Any]) -> None:
    group, _, name = key.rpartition("/")
    group = group or body.get("group") or DEFAULT_GROUP
    target = body.get("target") or {}
    given: dict[str, Any] = {
        "RoleArn": {
            "Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/pipelines-scheduler"
        }
    }
    try:
        given["Arn"] = (
            context.ref_of(str(target["resource"])) if "resource" in target else target.get("arn")
        )
        if "input" in target:
            value = target["input"]
            given["Input"] = value if isinstance(value, str) else _json_text(value)
        retry = target.get("retry_policy")
        if isinstance(retry, dict):
            policy: dict[str, Any] = {}
            set_if(policy, "MaximumRetryAttempts", retry.get("maximum_retry_attempts"))
            set_if(policy, "MaximumEventAgeInSeconds", retry.get("maximum_event_age"))
            given["RetryPolicy"] = policy
        if "dead_letter" in target:
            given["DeadLetterConfig"] = {"Arn": context.ref_of(str(target["dead_letter"]))}
    except ExportSkip as exc:
        context.skip(f"schedules.{key}.target", str(exc))
        return
    if isinstance(target.get("eventbridge"), dict):
        bus = target["eventbridge"]
        given["EventBridgeParameters"] = {
            "DetailType": bus.get("detail_type"),
            "Source": bus.get("source"),
        }
    if isinstance(target.get("sqs"), dict):
        given["SqsParameters"] = {"MessageGroupId": target["sqs"].get("message_group_id")}
    window = body.get("flexible_window_minutes")
    properties: dict[str, Any] = {
        "Name": name,
        "ScheduleExpression": body.get("expression"),
        "FlexibleTimeWindow": {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": window}
        if window
        else {"Mode": "OFF"},
        "Target": given,
    }
    if group != DEFAULT_GROUP:
        logical = context.logical.get(("schedule_groups", f"{group}#ScheduleGroup"))
        properties["GroupName"] = {"Ref": logical} if logical else group
    set_if(properties, "ScheduleExpressionTimezone", body.get("timezone"))
    set_if(properties, "StartDate", body.get("start_date"))
    set_if(properties, "EndDate", body.get("end_date"))
    set_if(properties, "Description", body.get("description"))
    set_if(properties, "State", body.get("state"))
    set_if(properties, "ActionAfterCompletion", body.get("action_after_completion"))
    extra = {}
    if "missed_runs" in body:
        extra = {"Metadata": {"pipelines": {"settings": {"missed_runs": body["missed_runs"]}}}}
    context.add(
        context.logical_id("schedules", key, "Schedule"),
        "AWS::Scheduler::Schedule",
        properties,
        **extra,
    )


def _json_text(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))


MAPPINGS = (
    TypeMapping(
        "AWS::Scheduler::ScheduleGroup",
        identity=_group_identity,
        apply=_group_apply,
        owner="scheduler",
        properties=props(("Name", "schedule_groups.NAME"), ("Tags", "tags")),
    ),
    TypeMapping(
        "AWS::Scheduler::Schedule",
        identity=_identity,
        apply=_apply,
        owner="scheduler",
        properties=props(
            ("Name", "schedules.NAME (GROUP/NAME outside the default group)"),
            ("GroupName", "the group"),
            ("ScheduleExpression", "expression"),
            ("ScheduleExpressionTimezone", "timezone"),
            ("StartDate", "start_date"),
            ("EndDate", "end_date"),
            ("Description", "description"),
            ("State", "state"),
            ("FlexibleTimeWindow", "flexible_window_minutes"),
            ("ActionAfterCompletion", "action_after_completion"),
            (
                "Target",
                "target: resource (or arn), input, retry_policy, dead_letter, eventbridge, sqs",
            ),
        ),
        naming=("KmsKeyArn",),
    ),
    ConfigExport("schedule_groups", _export_group, ("AWS::Scheduler::ScheduleGroup",)),
    ConfigExport("schedules", _export_schedule, ("AWS::Scheduler::Schedule",)),
)
