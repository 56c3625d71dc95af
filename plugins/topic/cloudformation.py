"""The topic plugin's CloudFormation mappings: ``AWS::SNS::Topic`` <-> a
``topic`` resource, ``AWS::SNS::Subscription`` (and a topic's inline
``Subscription``) <-> its ``subscriptions``; ``AWS::SNS::TopicPolicy`` is
skipped: permissions are not enforced locally."""

from __future__ import annotations

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
    json_value,
    props,
    set_if,
)

#: Protocols delivered to a resource of the template (by its ARN).
_TO_RESOURCE = {"sqs", "lambda", "firehose"}
#: A resource type -> the protocol a subscription to it has.
_PROTOCOLS = {"queue": "sqs", "function": "lambda", "firehose": "firehose"}


def _name(resource: Resource) -> str:
    name = resource.text("TopicName") or resource.logical_id
    if boolean(resource.get("FifoTopic"), resource.at("FifoTopic")) and not name.endswith(".fifo"):
        name += ".fifo"
    return name


def _identity(context: ImportContext, resource: Resource) -> Identity:
    name = _name(resource)
    arn = context.arn("sns", name)
    context.alias("resources", name, *alias_keys(arn), name)
    return Identity(arn, {"TopicArn": arn, "TopicName": name})


def _subscription(
    context: ImportContext, given: dict[str, Any], path: tuple[str | int, ...], sub_id: str
) -> dict[str, Any]:
    protocol = str(given.get("Protocol", "")).lower()
    endpoint = given.get("Endpoint")
    subscription: dict[str, Any] = {"id": sub_id}
    if protocol in _TO_RESOURCE:
        subscription["resource"] = context.resource(endpoint, (*path, "Endpoint"))
    elif protocol in ("http", "https"):
        subscription["endpoint"] = endpoint
    else:
        raise Skip(
            f"{protocol} subscriptions are not delivered locally"
            " (sqs, lambda, firehose, http and https are)"
        )
    return subscription


def _apply(context: ImportContext, resource: Resource) -> str:
    name = context.name("resources", resource, _name(resource))
    body: dict[str, Any] = {"type": "topic", "subscriptions": []}
    if name != _name(resource):
        body["topic"] = _name(resource)
    skipped = []
    for index, given in enumerate(resource.get("Subscription") or []):
        try:
            body["subscriptions"].append(
                _subscription(
                    context,
                    given,
                    resource.at("Subscription", index),
                    f"{resource.logical_id}{index}",
                )
            )
        except Skip as exc:
            skipped.append(str(exc))
    context.declare("resources", name, body, resource)
    return f"topic {name}" + (
        f"; inline subscriptions skipped: {'; '.join(skipped)}" if skipped else ""
    )


def _subscription_apply(context: ImportContext, resource: Resource) -> str:
    topic = context.resource(resource.get("TopicArn"), resource.at("TopicArn"))
    body = context.resource_part(topic)
    if body.get("type") != "topic":
        raise TemplateError(resource.at("TopicArn"), f"{topic!r} is not a topic")
    sub_id = str(resource.metadata.get("id") or resource.logical_id)
    subscription = _subscription(context, resource.properties, resource.at(), sub_id)
    policy = json_value(resource.get("FilterPolicy"), resource.at("FilterPolicy"))
    set_if(subscription, "filter_policy", policy)
    set_if(subscription, "filter_policy_scope", resource.text("FilterPolicyScope"))
    if boolean(resource.get("RawMessageDelivery"), resource.at("RawMessageDelivery")):
        subscription["raw_message_delivery"] = True
    redrive = json_value(resource.get("RedrivePolicy"), resource.at("RedrivePolicy"))
    if isinstance(redrive, dict) and "deadLetterTargetArn" in redrive:
        subscription["dead_letter"] = context.resource(
            redrive["deadLetterTargetArn"], resource.at("RedrivePolicy", "deadLetterTargetArn")
        )
    delivery = json_value(resource.get("DeliveryPolicy"), resource.at("DeliveryPolicy"))
    if "endpoint" in subscription:
        set_if(subscription, "delivery_policy", delivery)
    subscription.update(resource.metadata.get("settings") or {})
    body["subscriptions"].append(subscription)
    index = len(body["subscriptions"]) - 1
    context.origin(("resources", topic, "subscriptions", index), resource, ())
    if "filter_policy" in subscription:
        context.origin(
            ("resources", topic, "subscriptions", index, "filter_policy"),
            resource,
            ("FilterPolicy",),
        )
    return f"topic {topic}'s subscription {sub_id}"


def _export(context: ExportContext, name: str, body: dict[str, Any]) -> None:
    topic = str(body.get("topic", name))
    properties: dict[str, Any] = {"TopicName": topic}
    if topic.endswith(".fifo"):
        properties["FifoTopic"] = True
    logical = context.primaries[name]
    context.add(logical, "AWS::SNS::Topic", properties)
    for index, subscription in enumerate(body.get("subscriptions") or []):
        where = f"resources.{name}.subscriptions[{index}]"
        given: dict[str, Any] = {"TopicArn": {"Ref": logical}}
        try:
            if "resource" in subscription:
                kind = context.resource_type(str(subscription["resource"])) or ""
                if kind not in _PROTOCOLS:
                    raise ExportSkip(
                        f"a {kind or 'missing'} resource cannot subscribe to a topic in AWS"
                    )
                given["Protocol"] = _PROTOCOLS[kind]
                given["Endpoint"] = context.ref_of(str(subscription["resource"]))
            else:
                endpoint = str(subscription.get("endpoint"))
                given["Protocol"] = endpoint.split(":", 1)[0]
                given["Endpoint"] = endpoint
                set_if(given, "DeliveryPolicy", subscription.get("delivery_policy"))
            set_if(given, "FilterPolicy", subscription.get("filter_policy"))
            set_if(given, "FilterPolicyScope", subscription.get("filter_policy_scope"))
            if subscription.get("raw_message_delivery"):
                given["RawMessageDelivery"] = True
            if "dead_letter" in subscription:
                given["RedrivePolicy"] = {
                    "deadLetterTargetArn": context.ref_of(str(subscription["dead_letter"]))
                }
        except ExportSkip as exc:
            context.skip(where, str(exc))
            continue
        metadata: dict[str, Any] = {"id": subscription.get("id")}
        if "maximum_retry_attempts" in subscription:
            metadata["settings"] = {
                "maximum_retry_attempts": subscription["maximum_retry_attempts"]
            }
        sub_id = context.logical_id(
            "subscriptions", f"{name}/{subscription.get('id')}", "Subscription"
        )
        context.add(sub_id, "AWS::SNS::Subscription", given, Metadata={"pipelines": metadata})


MAPPINGS = (
    TypeMapping(
        "AWS::SNS::Topic",
        identity=_identity,
        apply=_apply,
        owner="topic",
        properties=props(
            ("TopicName", "resources.NAME (default: the logical id)"),
            ("FifoTopic", "a name ending .fifo"),
            ("Subscription", "subscriptions (sqs, lambda, firehose, http, https)"),
        ),
        naming=("Tags", "DisplayName", "ContentBasedDeduplication"),
    ),
    TypeMapping(
        "AWS::SNS::Subscription",
        apply=_subscription_apply,
        phase=1,
        owner="topic",
        properties=props(
            ("TopicArn", "the topic resource"),
            ("Protocol", "sqs, lambda, firehose: resource; http, https: endpoint; others skipped"),
            ("Endpoint", "resource (an ARN of the template) or endpoint (a URL)"),
            ("FilterPolicy", "filter_policy"),
            ("FilterPolicyScope", "filter_policy_scope"),
            ("RawMessageDelivery", "raw_message_delivery"),
            ("RedrivePolicy", "dead_letter"),
            ("DeliveryPolicy", "delivery_policy (http, https)"),
        ),
        naming=("Region",),
    ),
    TypeMapping("AWS::SNS::TopicPolicy", reason=PERMISSIONS_REASON, owner="topic"),
    TypeMapping("AWS::SNS::TopicInlinePolicy", reason=PERMISSIONS_REASON, owner="topic"),
    ConfigExport(
        "topic",
        _export,
        ("AWS::SNS::Topic", "AWS::SNS::Subscription"),
        suffix="Topic",
        keys=("topic", "subscriptions"),
    ),
)
