"""The queue plugin's CloudFormation mappings: ``AWS::SQS::Queue`` <-> a
``queue`` resource (``AWS::SQS::QueuePolicy`` is skipped: permissions are
not enforced locally)."""

from __future__ import annotations

from typing import Any

from pipelines.cloudformation.intrinsics import Identity, TemplateError
from pipelines.cloudformation.mapping import (
    PERMISSIONS_REASON,
    ConfigExport,
    ExportContext,
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

#: CloudFormation's property -> the queue's setting (numbers alike).
_NUMBERS = (
    ("VisibilityTimeout", "visibility_timeout"),
    ("DelaySeconds", "delay_seconds"),
    ("MessageRetentionPeriod", "message_retention_period"),
    ("MaximumMessageSize", "maximum_message_size"),
    ("ReceiveMessageWaitTimeSeconds", "receive_wait_time_seconds"),
)


def _name(resource: Resource) -> str:
    name = resource.text("QueueName") or resource.logical_id
    fifo = boolean(resource.get("FifoQueue"), resource.at("FifoQueue"))
    if fifo and not name.endswith(".fifo"):
        name += ".fifo"  # as CloudFormation names a FIFO queue it names itself
    return name


def _identity(context: ImportContext, resource: Resource) -> Identity:
    name = _name(resource)
    arn = context.arn("sqs", name)
    url = f"https://sqs.{context.pseudo.region}.amazonaws.com/{context.pseudo.account}/{name}"
    context.alias("resources", name, *alias_keys(arn), url, name)
    return Identity(url, {"Arn": arn, "QueueName": name, "QueueUrl": url})


def _apply(context: ImportContext, resource: Resource) -> str:
    name = context.name("resources", resource, _name(resource))
    body: dict[str, Any] = {"type": "queue"}
    if name != _name(resource):
        body["queue"] = _name(resource)
    origins = {}
    for prop, key in _NUMBERS:
        set_if(body, key, integer(resource.get(prop), resource.at(prop)))
        origins[key] = prop
    redrive = json_value(resource.get("RedrivePolicy"), resource.at("RedrivePolicy"))
    if redrive is not None:
        path = resource.at("RedrivePolicy")
        if not isinstance(redrive, dict) or "deadLetterTargetArn" not in redrive:
            raise TemplateError(path, "a redrive policy names its deadLetterTargetArn")
        dead = context.resource(redrive["deadLetterTargetArn"], (*path, "deadLetterTargetArn"))
        body["redrive_policy"] = {
            "dead_letter_queue": dead,
            "max_receive_count": integer(
                redrive.get("maxReceiveCount"), (*path, "maxReceiveCount")
            ),
        }
        origins["redrive_policy"] = "RedrivePolicy"
    dedup = boolean(
        resource.get("ContentBasedDeduplication"), resource.at("ContentBasedDeduplication")
    )
    if dedup:
        body["content_based_deduplication"] = True
    context.declare("resources", name, body, resource, origins)
    return f"queue {name}"


def _export(context: ExportContext, name: str, body: dict[str, Any]) -> None:
    queue = str(body.get("queue", name))
    properties: dict[str, Any] = {"QueueName": queue}
    if queue.endswith(".fifo"):
        properties["FifoQueue"] = True
    for prop, key in _NUMBERS:
        set_if(properties, prop, body.get(key))
    redrive = body.get("redrive_policy")
    if isinstance(redrive, dict):
        dead = str(redrive.get("dead_letter_queue"))
        properties["RedrivePolicy"] = {
            # Queues dead-lettering into each other: an ARN written out, as
            # a GetAtt each way is a circular dependency to CloudFormation.
            "deadLetterTargetArn": (
                {"Fn::Sub": "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:" + dead}
                if _loops(context, name, dead)
                else context.ref_of(dead)
            ),
            "maxReceiveCount": redrive.get("max_receive_count"),
        }
    if body.get("content_based_deduplication"):
        properties["ContentBasedDeduplication"] = True
    context.add(context.primaries[name], "AWS::SQS::Queue", properties)


def _loops(context: ExportContext, name: str, dead: str) -> bool:
    """Whether following dead-letter queues from ``dead`` comes back to ``name``."""
    resources = context.config.get("resources") or {}
    seen = set()
    while dead not in seen:
        if dead == name:
            return True
        seen.add(dead)
        redrive = (resources.get(dead) or {}).get("redrive_policy")
        if not isinstance(redrive, dict):
            return False
        dead = str(redrive.get("dead_letter_queue"))
    return False


MAPPINGS = (
    TypeMapping(
        "AWS::SQS::Queue",
        identity=_identity,
        apply=_apply,
        owner="queue",
        properties=props(
            ("QueueName", "resources.NAME (default: the logical id)"),
            ("FifoQueue", "a name ending .fifo"),
            ("VisibilityTimeout", "visibility_timeout"),
            ("DelaySeconds", "delay_seconds"),
            ("MessageRetentionPeriod", "message_retention_period"),
            ("MaximumMessageSize", "maximum_message_size"),
            ("ReceiveMessageWaitTimeSeconds", "receive_wait_time_seconds"),
            ("RedrivePolicy", "redrive_policy (deadLetterTargetArn, maxReceiveCount)"),
            ("ContentBasedDeduplication", "content_based_deduplication"),
        ),
        naming=("Tags",),
    ),
    TypeMapping("AWS::SQS::QueuePolicy", reason=PERMISSIONS_REASON, owner="queue"),
    TypeMapping("AWS::SQS::QueueInlinePolicy", reason=PERMISSIONS_REASON, owner="queue"),
    ConfigExport(
        "queue",
        _export,
        ("AWS::SQS::Queue",),
        suffix="Queue",
        keys=(
            "queue",
            *(key for _, key in _NUMBERS),
            "redrive_policy",
            "content_based_deduplication",
        ),
    ),
)
