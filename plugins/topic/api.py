"""The sns service (SNS's query protocol) over the pipeline's ``topic`` resources.

Topics are the runtime's topic resources: one declared in the config is
listed, published to and subscribed to like one made by ``CreateTopic``
(which puts a ``topic`` resource, so a rule can target it by its ARN).
Topics made by ``CreateTopic``, and the subscriptions, topic attributes and
tags made through the API, are kept by the runtime's ``TopicState`` on a
``TopicStore`` (see ``plugins.topic.target``): on the state database, so
they outlive a restart and a cluster's runners share them. Each operation
first brings this runner's view up to the store's (``_sync``): a topic made
by CreateTopic (before a restart, or on another runner) is put back as a
``topic`` resource, one deleted elsewhere is removed, and subscriptions are
read again when the store's change counter moved. Publish compares the
counter at most once a second, and at once for a topic it does not know.

Subscriptions deliver to resources of the pipeline: ``sqs`` to a queue by
its ARN, ``lambda`` to a function by its ARN. A publish is handed to every
matching subscription before it is answered; a subscriber failing with a
retryable error is tried again in the background (``RETRIES``), then its
subscription's dead letter (RedrivePolicy) gets it, as the topic target does.

Errors are SNS's codes and wording (recorded from AWS by LocalStack's tests;
see docs/conformance.md).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import math
import re
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipelines.api import ApiError, Call, Service
from pipelines.api.services import ApiHost, page, resource_of
from pipelines.errors import ConfigError, DeliveryError, NotRunningError, Where
from pipelines.event import DEFAULT_ACCOUNT
from pipelines.http.auth import is_http_url
from pipelines.targets import DeliveryContext, Target
from plugins.topic.filterpolicy import (
    ATTRIBUTES_SCOPE,
    BODY_SCOPE,
    FilterPolicyInvalid,
    sns_policy,
)
from plugins.topic.store import StoredSubscription, TopicStore, settings_text
from plugins.topic.target import (
    FIFO_SUFFIX,
    REFRESH,
    AddedSubscription,
    Subscription,
    TopicTarget,
)

log = logging.getLogger("plugins.topic.api")
sns = Service("sns")

#: ListTopics and the List*Subscriptions operations answer this many per page.
PAGE = 100
#: SNS's limit on a message with its attributes, and on a batch's messages.
MAX_MESSAGE = 256 * 1024
MAX_BATCH = 10
#: Background attempts of a subscription that failed with a retryable error.
RETRIES = 5
_TOPIC_NAME = re.compile(r"[A-Za-z0-9_-]{1,256}")
_BATCH_ID = re.compile(r"[A-Za-z0-9_-]+")
_ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_.-]")
#: SNS's protocols: every one is known, only these deliver here.
PROTOCOLS = (
    "http",
    "https",
    "email",
    "email-json",
    "sms",
    "sqs",
    "application",
    "lambda",
    "firehose",
)
SERVED_PROTOCOLS = {"sqs": "sqs", "lambda": "lambda", "http": "http", "https": "https"}
#: Topic attributes SetTopicAttributes takes (kept and answered; only
#: ContentBasedDeduplication changes what the topic does).
TOPIC_ATTRIBUTES = {
    "DisplayName",
    "Policy",
    "DeliveryPolicy",
    "ContentBasedDeduplication",
    "KmsMasterKeyId",
    "SignatureVersion",
    "TracingConfig",
    "ArchivePolicy",
    "FifoThroughputScope",
}
SUBSCRIPTION_ATTRIBUTES = (
    "FilterPolicy",
    "FilterPolicyScope",
    "RawMessageDelivery",
    "RedrivePolicy",
    "DeliveryPolicy",
)
_DELIVERY_POLICY = {
    "http": {
        "defaultHealthyRetryPolicy": {
            "minDelayTarget": 20,
            "maxDelayTarget": 20,
            "numRetries": 3,
            "numMaxDelayRetries": 0,
            "numNoDelayRetries": 0,
            "numMinDelayRetries": 0,
            "backoffFunction": "linear",
        },
        "disableSubscriptionOverrides": False,
        "defaultRequestPolicy": {"headerContentType": "text/plain; charset=UTF-8"},
    }
}
_locks: weakref.WeakKeyDictionary[ApiHost, asyncio.Lock] = weakref.WeakKeyDictionary()


def invalid(message: str) -> ApiError:
    """SNS's ``InvalidParameter``: "Invalid parameter: ..."."""
    return ApiError("InvalidParameter", f"Invalid parameter: {message}")


def _value_invalid(message: str) -> ApiError:
    return ApiError("ParameterValueInvalid", message)


def _lock(call: Call) -> asyncio.Lock:
    lock = _locks.get(call.runtime)
    if lock is None:
        lock = _locks[call.runtime] = asyncio.Lock()
    return lock


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


# -- topics ------------------------------------------------------------------


def topics(runtime: ApiHost) -> dict[str, TopicTarget]:
    """The runtime's topic resources by their SNS name."""
    found: dict[str, TopicTarget] = {}
    for name in runtime.resource_names():
        try:
            target = runtime.resource(name)
        except LookupError:
            continue
        if isinstance(target, TopicTarget):
            found.setdefault(target.topic, target)
    return found


def _arn_parts(arn: str, parameter: str) -> list[str]:
    parts = arn.split(":")
    if len(parts) < 6:
        raise invalid(f"{parameter} Reason: An ARN must have at least 6 elements, not {len(parts)}")
    return parts


@dataclass
class _Synced:
    """What the sns service keeps of the state database while an endpoint serves."""

    #: The topic resources this API put (CreateTopic, or one made before a
    #: restart or on another runner), removed again when the store no longer has them.
    adopted: dict[str, Target] = field(default_factory=dict)
    #: The store's change counter when the topics were last brought up to it.
    seen: int | None = None
    checked: float = -float("inf")


async def _sync(call: Call, max_age: float = 0.0) -> None:
    """Bring this runner's topics up to the state database's, if it was not
    looked at within ``max_age`` seconds: topics made by CreateTopic become
    resources here (one whose name another resource has is left out, with
    a warning), those deleted meanwhile go, and the topics' state is loaded
    again when it changed. Nothing to do without a state database (the
    API's changes are then this runner's alone)."""
    runtime = call.runtime
    if runtime.state_path is None:
        return
    context = call.kept("sns", _Synced)
    if time.monotonic() - context.checked < max_age:
        return
    store = await call.store(TopicStore, where="the sns API")
    async with _lock(call):
        context.checked = time.monotonic()
        version = await store.changes()
        if version != context.seen:
            await _adopt(runtime, context, set(await store.made()))
            context.seen = version
    for topic in topics(runtime).values():
        await topic.state.catch_up(version)  # one state for the runtime's topics
        break


async def _adopt(runtime: ApiHost, context: _Synced, made: set[str]) -> None:
    """Topics made by CreateTopic as resources here; gone ones removed."""
    present = topics(runtime)
    for name in sorted(made - present.keys()):
        if name in runtime.resource_names():
            log.warning("sns: topic %s is not served here: another resource has its name", name)
            continue
        context.adopted[name] = await runtime.put_resource(name, "topic", {"subscriptions": []})
    for name, target in list(context.adopted.items()):
        if name in made:
            continue
        del context.adopted[name]
        if name not in runtime.resource_names() or runtime.resource(name) is not target:
            continue  # replaced by a reload meanwhile: not this API's any more
        try:
            await runtime.delete_resource(name)
        except ConfigError as error:  # a rule of this runner still targets it
            log.warning("sns: topic %s was deleted, but stays here: %s", name, error.message)


async def _topic(
    call: Call, arn: str | None, parameter: str = "TopicArn", max_age: float = 0.0
) -> TopicTarget:
    """The topic an ARN names (region and account are not compared), once
    this runner's topics are no older than ``max_age`` seconds (a topic not
    found is looked for again at once)."""
    parts = _arn_parts(arn or "", parameter)
    if parts[0] != "arn" or parts[2] != "sns" or len(parts) != 6:
        raise invalid(parameter)
    await _sync(call, max_age)
    found = topics(call.runtime).get(parts[5])
    if found is None and max_age > 0:
        await _sync(call)
        found = topics(call.runtime).get(parts[5])
    if found is None:
        raise ApiError("NotFound", "Topic does not exist")
    return found


def _check_topic_name(name: str, fifo: bool) -> None:
    stem = name[: -len(FIFO_SUFFIX)] if name.endswith(FIFO_SUFFIX) else name
    if fifo != name.endswith(FIFO_SUFFIX) or len(name) > 256 or not _TOPIC_NAME.fullmatch(stem):
        raise invalid("Topic Name")


def _true_or_false(value: str) -> bool | None:
    lowered = value.lower()
    return True if lowered == "true" else False if lowered == "false" else None


def _topic_attribute(name: str, value: str, fifo: bool, reason: str = "") -> str:
    """A topic attribute's value as kept, or SNS's error."""
    if name not in TOPIC_ATTRIBUTES:
        raise invalid(f"{reason}Unknown attribute {name}" if reason else "AttributeName")
    if name == "ContentBasedDeduplication":
        flag = _true_or_false(value)
        if not fifo:
            raise invalid(
                f"{reason}ContentBasedDeduplication Reason: Content-based deduplication can only"
                " be set for FIFO topics"
            )
        if flag is None:
            raise invalid(f"{reason}ContentBasedDeduplication Reason: must be true or false")
        return "true" if flag else "false"
    if name in ("Policy", "DeliveryPolicy", "ArchivePolicy") and value:
        try:
            json.loads(value)
        except ValueError:
            raise invalid(f"{reason}{name}: failed to parse JSON.") from None
    if name == "SignatureVersion" and value not in ("1", "2"):
        raise invalid(f"{reason}SignatureVersion")
    if name == "TracingConfig" and value not in ("Active", "PassThrough"):
        raise invalid(f"{reason}TracingConfig")
    return value


def _default_policy(arn: str) -> str:
    return _compact(
        {
            "Version": "2008-10-17",
            "Id": "__default_policy_ID",
            "Statement": [
                {
                    "Sid": "__default_statement_ID",
                    "Effect": "Allow",
                    "Principal": {"AWS": "*"},
                    "Action": [
                        "SNS:GetTopicAttributes",
                        "SNS:SetTopicAttributes",
                        "SNS:AddPermission",
                        "SNS:RemovePermission",
                        "SNS:DeleteTopic",
                        "SNS:Subscribe",
                        "SNS:ListSubscriptionsByTopic",
                        "SNS:Publish",
                    ],
                    "Resource": arn,
                    "Condition": {"StringEquals": {"AWS:SourceOwner": DEFAULT_ACCOUNT}},
                }
            ],
        }
    )


def _attributes_of(topic: TopicTarget) -> dict[str, str]:
    """What GetTopicAttributes answers: AWS's names, string values."""
    kept = topic.state.attributes.get(topic.topic, {})
    attributes = {
        "TopicArn": topic.arn,
        "Owner": DEFAULT_ACCOUNT,
        "DisplayName": kept.get("DisplayName", ""),
        "SubscriptionsConfirmed": str(len(topic.subscriptions)),
        "SubscriptionsPending": "0",
        "SubscriptionsDeleted": "0",
        "Policy": kept.get("Policy") or _default_policy(topic.arn),
        "EffectiveDeliveryPolicy": _compact(_DELIVERY_POLICY),
    }
    if topic.fifo:
        attributes["FifoTopic"] = "true"
        attributes["ContentBasedDeduplication"] = kept.get("ContentBasedDeduplication", "false")
    for name, value in kept.items():
        attributes.setdefault(name, value)
    return attributes


@sns.operation()
async def create_topic(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    name = params["Name"]
    given = dict(params.get("Attributes") or {})
    fifo_given = given.pop("FifoTopic", None)
    fifo = (_true_or_false(fifo_given) or False) if fifo_given is not None else False
    _check_topic_name(name, fifo)
    attributes = {
        key: _topic_attribute(key, value, fifo, "Attributes Reason: ")
        for key, value in given.items()
    }
    tags = _tags(params.get("Tags") or [])
    await _sync(call)
    async with _lock(call):
        existing = topics(call.runtime).get(name)
        if existing is not None:
            current = _attributes_of(existing)
            if any(current.get(key) != value for key, value in attributes.items()):
                raise invalid("Attributes Reason: Topic already exists with different attributes")
            kept_tags = existing.state.tags.get(name, {})
            if tags and tags != kept_tags:
                raise invalid("Tags Reason: Topic already exists with different tags")
            return {"TopicArn": existing.arn}
        if name in call.runtime.resource_names():
            raise invalid(
                f"Name Reason: the pipeline has a resource named {name} already"
                f" ({call.runtime.resource_arn(name)}); a topic needs a name of its own"
            )
        made = await call.runtime.put_resource(name, "topic", {"subscriptions": []})
        assert isinstance(made, TopicTarget)
        if call.runtime.state_path is not None:
            call.kept("sns", _Synced).adopted[name] = made
        await made.state.create_topic(name, attributes, tags)
        return {"TopicArn": made.arn}


@sns.operation()
async def delete_topic(call: Call, params: dict[str, Any]) -> None:
    parts = _arn_parts(params["TopicArn"], "TopicArn")
    if parts[2] != "sns" or len(parts) != 6:
        raise invalid("TopicArn")
    await _sync(call)
    async with _lock(call):
        topic = topics(call.runtime).get(parts[5])
        if topic is None:
            return  # AWS: deleting a topic that does not exist succeeds
        async with topic.state.held():  # past its stop, to forget it
            try:
                await call.runtime.delete_resource(topic.name)
            except ConfigError as error:
                raise invalid(f"TopicArn Reason: {error.message}") from None
            if call.runtime.state_path is not None:
                call.kept("sns", _Synced).adopted.pop(topic.name, None)
            await topic.state.forget(topic.topic)


def _page(items: Sequence[Any], token: str | None, key: str) -> dict[str, Any]:
    found, following = page(items, token, PAGE, invalid("NextToken"))
    return {key: found, "NextToken": following} if following else {key: found}


@sns.operation()
async def list_topics(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    await _sync(call)
    arns = sorted(topic.arn for topic in topics(call.runtime).values())
    return _page([{"TopicArn": arn} for arn in arns], params.get("NextToken"), "Topics")


@sns.operation()
async def get_topic_attributes(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    return {"Attributes": _attributes_of(await _topic(call, params["TopicArn"]))}


@sns.operation()
async def set_topic_attributes(call: Call, params: dict[str, Any]) -> None:
    topic = await _topic(call, params["TopicArn"])
    name = params["AttributeName"]
    value = _topic_attribute(name, params.get("AttributeValue") or "", topic.fifo)
    await topic.state.set_attribute(topic.topic, name, value)


# -- tags --------------------------------------------------------------------


def _tags(given: list[dict[str, str]]) -> dict[str, str]:
    keys = [tag["Key"] for tag in given]
    if len(set(keys)) != len(keys):
        raise invalid("Duplicated keys are not allowed.")
    return {tag["Key"]: tag.get("Value", "") for tag in given}


async def _tagged(call: Call, arn: str) -> TopicTarget:
    try:
        return await _topic(call, arn, "ResourceArn")
    except ApiError as error:
        if error.code == "NotFound":
            raise ApiError("ResourceNotFound", "Resource does not exist") from None
        raise


@sns.operation()
async def tag_resource(call: Call, params: dict[str, Any]) -> None:
    topic = await _tagged(call, params["ResourceArn"])
    added = _tags(params["Tags"])
    tags = {**topic.state.tags.get(topic.topic, {}), **added}
    if len(tags) > 50:
        raise ApiError(
            "TagLimitExceeded", "Could not complete request: tag quota of per resource exceeded"
        )
    await topic.state.set_tags(topic.topic, tags)


@sns.operation()
async def untag_resource(call: Call, params: dict[str, Any]) -> None:
    topic = await _tagged(call, params["ResourceArn"])
    await topic.state.untag(topic.topic, params["TagKeys"])


@sns.operation()
async def list_tags_for_resource(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    topic = await _tagged(call, params["ResourceArn"])
    tags = topic.state.tags.get(topic.topic, {})
    return {"Tags": [{"Key": key, "Value": value} for key, value in tags.items()]}


# -- subscriptions -----------------------------------------------------------


def _resource_by_arn(call: Call, arn: str, service: str) -> str | None:
    """The resource of the pipeline an SQS or Lambda ARN names (region and
    account not compared), or None: ``resource_of``, for ARNs of ``service`` only."""
    if not arn.startswith("arn:") or arn.split(":")[2:3] != [service]:
        return None
    return resource_of(call, arn)


def _is_fifo_queue(call: Call, resource: str) -> bool:
    return str(getattr(call.runtime.resource(resource), "queue", "")).endswith(FIFO_SUFFIX)


def _endpoint_resource(call: Call, topic: TopicTarget, protocol: str, endpoint: str) -> str:
    if protocol in ("http", "https"):
        if not endpoint.startswith(f"{protocol}://") or not is_http_url(endpoint):
            raise invalid(f"Endpoint Reason: must be a URL beginning with {protocol}://")
        if topic.fifo:
            raise invalid("Endpoint Reason: a FIFO topic delivers only to FIFO SQS queues")
        return ""
    resource = _resource_by_arn(call, endpoint, SERVED_PROTOCOLS[protocol])
    if resource is None:
        label = "SQS" if protocol == "sqs" else "Lambda"
        raise invalid(f"{label} endpoint ARN")
    if protocol == "sqs":
        fifo_queue = _is_fifo_queue(call, resource)
        if fifo_queue and not topic.fifo:
            raise invalid(
                "Invalid parameter: Endpoint Reason: FIFO SQS Queues can not be subscribed to"
                " standard SNS topics"
            )
        if topic.fifo and not fifo_queue:
            raise invalid(
                "Endpoint Reason: pipelines delivers a FIFO topic's messages only to FIFO queues"
            )
    elif topic.fifo:
        raise invalid("Endpoint Reason: a FIFO topic delivers only to FIFO SQS queues")
    return resource


def _subscription_settings(
    call: Call, topic: TopicTarget, attributes: Mapping[str, str], reason: str
) -> dict[str, Any]:
    """SNS's subscription attributes as the topic's subscription settings;
    SNS's errors (``reason`` prefixes them: "Attributes Reason: ")."""
    settings: dict[str, Any] = {}
    for name, value in attributes.items():
        if name == "RawMessageDelivery":
            flag = _true_or_false(value)
            if flag is None:
                raise invalid(
                    f"{reason}RawMessageDelivery: Invalid value [{value}]. Must be true or false."
                )
            settings["raw_message_delivery"] = flag
        elif name == "FilterPolicyScope":
            if value not in (ATTRIBUTES_SCOPE, BODY_SCOPE):
                raise invalid(
                    f"{reason}FilterPolicyScope: Invalid value [{value}]. Please use either"
                    f" {BODY_SCOPE} or {ATTRIBUTES_SCOPE}"
                )
            settings["filter_policy_scope"] = value
        elif name == "FilterPolicy":
            if value.strip() not in ("", "{}"):
                settings["filter_policy"] = value
        elif name == "RedrivePolicy":
            if value.strip():
                settings["dead_letter"] = _dead_letter(call, topic, value, reason)
        elif name == "DeliveryPolicy":
            if value.strip():
                settings["delivery_policy"] = value
        else:
            raise invalid(f"{reason}Unknown attribute {name}" if reason else "AttributeName")
    if "filter_policy" in settings:
        scope = settings.get("filter_policy_scope", ATTRIBUTES_SCOPE)
        try:
            sns_policy(settings["filter_policy"], scope)
        except FilterPolicyInvalid as error:
            if not error.attribute:
                raise invalid(error.reason) from None
            raise invalid(f"{reason}FilterPolicy: {error.reason}") from None
        settings["filter_policy"] = json.loads(settings["filter_policy"])
    return settings


def _dead_letter(call: Call, topic: TopicTarget, value: str, reason: str) -> str:
    try:
        policy = json.loads(value)
    except ValueError as error:
        raise invalid(f"{reason}RedrivePolicy: failed to parse JSON. {error}") from None
    arn = policy.get("deadLetterTargetArn") if isinstance(policy, dict) else None
    resource = _resource_by_arn(call, arn, "sqs") if isinstance(arn, str) else None
    if resource is None:
        raise invalid(f"{reason}RedrivePolicy: deadLetterTargetArn is an invalid arn")
    if topic.fifo and not _is_fifo_queue(call, resource):
        raise invalid(
            f"{reason}RedrivePolicy: must use a FIFO queue as DLQ for a FIFO Subscription to a"
            " FIFO Topic."
        )
    return resource


def _subscription(
    sub_id: str, resource: str, settings: Mapping[str, Any], endpoint: str | None = None
) -> tuple[Subscription, str]:
    """The topic's subscription of SNS's settings, and those as stored."""
    declared = {"id": sub_id, **settings}
    if endpoint is not None:
        declared["endpoint"] = endpoint
    else:
        declared["resource"] = resource
        if "delivery_policy" in declared:
            raise invalid("DeliveryPolicy Reason: only HTTP(S) subscriptions take one")
    if "filter_policy" not in declared:
        declared.pop("filter_policy_scope", None)  # kept for a policy that may follow
    try:
        return Subscription.parse(Where(f"subscription {sub_id}"), declared), settings_text(
            declared
        )
    except ConfigError as error:
        at = ".".join(str(part) for part in error.location.path)
        raise invalid(f"Attributes Reason: {at}: {error.message}") from None


@sns.operation()
async def subscribe(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    topic = await _topic(call, params["TopicArn"])
    protocol = params["Protocol"].lower()
    if protocol not in PROTOCOLS:
        raise invalid(f"Amazon SNS does not support this protocol string: {params['Protocol']}")
    if protocol not in SERVED_PROTOCOLS:
        raise invalid(
            f"Protocol Reason: pipelines delivers to sqs, lambda, http and https subscriptions only"
            f" ({protocol} is not implemented)"
        )
    endpoint = params.get("Endpoint") or ""
    resource = _endpoint_resource(call, topic, protocol, endpoint)
    attributes = dict(params.get("Attributes") or {})
    settings = _subscription_settings(call, topic, attributes, "Attributes Reason: ")
    _refuse_raw(protocol, settings)
    http = protocol in ("http", "https")
    for sub_id, existing in topic.state.added.get(topic.topic, {}).items():
        if existing.protocol == protocol and existing.endpoint == endpoint:
            return _existing(topic, sub_id, attributes, existing.attributes)
    sub_id = str(uuid.uuid4())
    subscription, stored = _subscription(sub_id, resource, settings, endpoint if http else None)
    made = StoredSubscription(topic.topic, sub_id, protocol, endpoint, attributes, stored)
    kept = await topic.state.subscribe(made)
    if kept.id != sub_id:  # another runner subscribed the same endpoint a moment ago
        return _existing(topic, kept.id, attributes, kept.attributes)
    if http:  # pending until its endpoint confirms it
        call.runtime.spawn(topic.request_confirmation(subscription))
        if not params.get("ReturnSubscriptionArn"):
            return {"SubscriptionArn": "pending confirmation"}
    return {"SubscriptionArn": f"{topic.arn}:{sub_id}"}


def _refuse_raw(protocol: str, settings: Mapping[str, Any]) -> None:
    """SNS's lambda protocol takes no raw message delivery (a function gets
    Lambda's SNS event)."""
    if protocol == "lambda" and settings.get("raw_message_delivery"):
        raise invalid("Delivery protocol [lambda] does not support raw message delivery.")


def _existing(
    topic: TopicTarget, sub_id: str, given: Mapping[str, str], kept: Mapping[str, str]
) -> dict[str, Any]:
    """Subscribe's answer for a subscription the topic has already."""
    if given and given != kept:
        raise invalid("Attributes Reason: Subscription already exists with different attributes")
    return {"SubscriptionArn": f"{topic.arn}:{sub_id}"}


@sns.operation()
async def confirm_subscription(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    topic = await _topic(call, params["TopicArn"])
    confirmed = await topic.state.confirm(topic.arn, params["Token"])
    if confirmed is None:
        raise invalid("Token")
    return {"SubscriptionArn": f"{topic.arn}:{confirmed[1]}"}


def _pending(topic: TopicTarget, sub_id: str, endpoint: str | None) -> bool:
    return endpoint is not None and not topic.state.http.is_confirmed(topic.topic, sub_id, endpoint)


def _declared_protocol(call: Call, resource: str) -> tuple[str, str]:
    """A declared subscription's protocol and endpoint, from its resource's ARN."""
    try:
        arn = call.runtime.resource_arn(resource)
    except LookupError:
        return "pipelines", resource
    service = arn.split(":")[2]
    return {"sqs": "sqs", "lambda": "lambda"}.get(service, service), arn


def _listed(call: Call, topic: TopicTarget) -> list[dict[str, str]]:
    """A topic's subscriptions as the List*Subscriptions operations answer them."""
    listed = []
    for subscription in topic.declared:
        if subscription.endpoint is not None:
            assert subscription.protocol is not None
            listed.append((subscription.id, subscription.protocol, subscription.endpoint))
            continue
        protocol, endpoint = _declared_protocol(call, subscription.resource)
        listed.append((subscription.id, protocol, endpoint))
    for sub_id, added in topic.state.added.get(topic.topic, {}).items():
        listed.append((sub_id, added.protocol, added.endpoint))
    http = topic.state.http
    return [
        {
            "SubscriptionArn": (
                "PendingConfirmation"
                if protocol in ("http", "https")
                and not http.is_confirmed(topic.topic, sub_id, endpoint)
                else f"{topic.arn}:{sub_id}"
            ),
            "Owner": DEFAULT_ACCOUNT,
            "Protocol": protocol,
            "Endpoint": endpoint,
            "TopicArn": topic.arn,
        }
        for sub_id, protocol, endpoint in listed
    ]


@sns.operation()
async def list_subscriptions(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    await _sync(call)
    every = [
        item for _, topic in sorted(topics(call.runtime).items()) for item in _listed(call, topic)
    ]
    return _page(every, params.get("NextToken"), "Subscriptions")


@sns.operation()
async def list_subscriptions_by_topic(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    topic = await _topic(call, params["TopicArn"])
    return _page(_listed(call, topic), params.get("NextToken"), "Subscriptions")


async def _find_subscription(
    call: Call, arn: str
) -> tuple[TopicTarget, str, AddedSubscription | Subscription] | None:
    """The topic, id and subscription an ARN names (``None``: none does)."""
    parts = _arn_parts(arn, "SubscriptionArn")
    if len(parts) < 7:
        raise invalid("SubscriptionId")
    await _sync(call)
    topic = topics(call.runtime).get(parts[5])
    if topic is None or parts[2] != "sns":
        return None
    sub_id = parts[6]
    added = topic.state.added.get(topic.topic, {}).get(sub_id)
    if added is not None:
        return topic, sub_id, added
    for subscription in topic.declared:
        if subscription.id == sub_id:
            return topic, sub_id, subscription
    return None


async def _added(call: Call, arn: str) -> tuple[TopicTarget, str, AddedSubscription]:
    found = await _find_subscription(call, arn)
    if found is None:
        raise ApiError("NotFound", "Subscription does not exist")
    topic, sub_id, subscription = found
    if not isinstance(subscription, AddedSubscription):
        raise invalid(
            "SubscriptionArn Reason: the subscription is declared in the pipeline's config;"
            " change it there"
        )
    return topic, sub_id, subscription


@sns.operation()
async def unsubscribe(call: Call, params: dict[str, Any]) -> None:
    arn = params["SubscriptionArn"]
    if await _find_subscription(call, arn) is None:
        return  # AWS: unsubscribing twice succeeds
    topic, sub_id, _ = await _added(call, arn)
    await topic.state.unsubscribe(topic.topic, sub_id)


@sns.operation()
async def get_subscription_attributes(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    arn = params["SubscriptionArn"]
    found = await _find_subscription(call, arn)
    if found is None:
        raise ApiError("NotFound", "Subscription does not exist")
    topic, sub_id, subscription = found
    inner = (
        subscription.subscription if isinstance(subscription, AddedSubscription) else subscription
    )
    pending = _pending(topic, sub_id, inner.endpoint)
    attributes = {
        "ConfirmationWasAuthenticated": "true",
        "Owner": DEFAULT_ACCOUNT,
        "PendingConfirmation": "true" if pending else "false",
        "SubscriptionArn": f"{topic.arn}:{sub_id}",
        "TopicArn": topic.arn,
    }
    if isinstance(subscription, AddedSubscription):
        attributes["Protocol"] = subscription.protocol
        attributes["Endpoint"] = subscription.endpoint
        given = subscription.attributes
        subscription = subscription.subscription
        if "FilterPolicy" in given and subscription.policy is not None:
            attributes["FilterPolicy"] = given["FilterPolicy"]
        if "RedrivePolicy" in given and subscription.dead_letter is not None:
            attributes["RedrivePolicy"] = given["RedrivePolicy"]
    elif subscription.endpoint is not None:
        attributes["Protocol"] = subscription.protocol or "http"
        attributes["Endpoint"] = subscription.endpoint
    else:
        protocol, endpoint = _declared_protocol(call, subscription.resource)
        attributes["Protocol"], attributes["Endpoint"] = protocol, endpoint
        if subscription.dead_letter is not None:
            dead_letter = call.runtime.resource_arn(subscription.dead_letter)
            attributes["RedrivePolicy"] = _compact({"deadLetterTargetArn": dead_letter})
    attributes["RawMessageDelivery"] = "true" if subscription.raw else "false"
    if subscription.policy is not None:
        attributes["FilterPolicyScope"] = subscription.policy.scope
    return {"Attributes": attributes}


@sns.operation()
async def set_subscription_attributes(call: Call, params: dict[str, Any]) -> None:
    name = params["AttributeName"]
    value = params.get("AttributeValue") or ""
    topic, sub_id, added = await _added(call, params["SubscriptionArn"])
    if name not in SUBSCRIPTION_ATTRIBUTES:
        raise invalid("AttributeName")
    attributes = {**added.attributes, name: value}
    settings = _subscription_settings(call, topic, attributes, "")
    _refuse_raw(added.protocol, settings)
    if name == "FilterPolicy" and value.strip() in ("", "{}"):
        attributes.pop("FilterPolicy")
    _, stored = _subscription(
        sub_id, added.subscription.resource, settings, added.subscription.endpoint
    )
    if not await topic.state.set_subscription(topic.topic, sub_id, attributes, stored):
        raise ApiError("NotFound", "Subscription does not exist")  # unsubscribed meanwhile


# -- publishing --------------------------------------------------------------


def _message_attributes(given: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """SNS's MessageAttributes checked with SNS's errors, as the topic's
    ``{"Type", "Value"}`` (binary values in base64)."""
    typed: dict[str, dict[str, str]] = {}
    for name, attribute in given.items():
        if len(name.encode()) >= 256:
            raise _value_invalid("Length of message attribute name must be less than 256 bytes.")
        for character in name:
            if not _ATTRIBUTE_NAME.fullmatch(character):
                raise _value_invalid(
                    f"Invalid non-alphanumeric character '#x{ord(character):X}' was found in the"
                    " message attribute name. Can only include alphanumeric characters, hyphens,"
                    " underscores, or dots."
                )
        if name.startswith("."):
            raise _value_invalid(
                "Invalid message attribute name starting with character '.' was found."
            )
        if name.endswith("."):
            raise _value_invalid(
                "Invalid message attribute name ending with character '.' was found."
            )
        if ".." in name:
            raise _value_invalid("Message attribute name can not have successive '.' character.")
        kind = attribute["DataType"]
        base = kind.split(".", 1)[0]
        if base not in ("String", "Number", "Binary"):
            raise _value_invalid(
                f"The message attribute '{name}' has an invalid message attribute type, the set"
                " of supported type prefixes is Binary, Number, and String."
            )
        text = attribute.get("StringValue")
        binary = attribute.get("BinaryValue")
        wanted = "Binary" if base == "Binary" else "String"
        given_value = binary if base == "Binary" else text
        other = text if base == "Binary" else binary
        if not given_value and other:
            raise _value_invalid(
                f"The message attribute '{name}' with type '{base}' must use field '{wanted}'."
            )
        if not given_value:
            raise _value_invalid(
                f"The message attribute '{name}' must contain non-empty message attribute value"
                f" for message attribute type '{base}'."
            )
        if base == "Binary":
            data = binary if isinstance(binary, bytes) else str(binary).encode()
            typed[name] = {"Type": kind, "Value": base64.b64encode(data).decode()}
            continue
        assert isinstance(text, str)
        if base == "Number":
            try:
                number = float(text)
            except ValueError:
                number = math.nan
            # SNS's numbers: up to 10^126 in size (so no NaN or Infinity),
            # which also keeps them numbers an SQS subscription takes.
            if not math.isfinite(number) or abs(number) > 1e126:
                raise _value_invalid(f"Could not cast message attribute '{name}' value to number.")
        if kind == "String.Array":
            try:
                items = json.loads(text)
            except ValueError:
                items = None
            if not isinstance(items, list):
                raise _value_invalid(
                    f"The message attribute '{name}' with type 'String.Array' has an invalid value:"
                    " it must be a JSON array"
                )
        typed[name] = {"Type": kind, "Value": text}
    return typed


def _size(message: str, attributes: Mapping[str, Mapping[str, str]]) -> int:
    size = len(message.encode())
    for name, attribute in attributes.items():
        size += len(name.encode()) + len(attribute["Type"].encode())
        size += len(attribute["Value"].encode())
    return size


def _check_subject(subject: str | None) -> None:
    if subject is None:
        return
    if (
        not subject
        or len(subject) > 100
        or not subject.isascii()
        or not subject.isprintable()
        or subject.strip() != subject.strip(" ")
    ):
        raise invalid("Subject")


def _structured(topic: TopicTarget, message: str, call: Call) -> dict[str, str]:
    """MessageStructure=json: each subscription's message by its protocol."""
    try:
        by_protocol = json.loads(message)
    except ValueError:
        by_protocol = None
    if not isinstance(by_protocol, dict):
        raise invalid("Message Structure - JSON message body failed to parse")
    default = by_protocol.get("default")
    if not isinstance(default, str):
        raise invalid("Message Structure - No default entry in JSON message body")
    messages: dict[str, str] = {}
    for subscription in topic.declared:
        protocol, _ = _declared_protocol(call, subscription.resource)
        chosen = by_protocol.get(protocol, default)
        messages[subscription.id] = chosen if isinstance(chosen, str) else _compact(chosen)
    for sub_id, added in topic.state.added.get(topic.topic, {}).items():
        chosen = by_protocol.get(added.protocol, default)
        messages[sub_id] = chosen if isinstance(chosen, str) else _compact(chosen)
    messages["default"] = default
    return messages


class _Publish:
    """One message checked and ready to hand to its topic."""

    def __init__(self, call: Call, topic: TopicTarget, entry: Mapping[str, Any]) -> None:
        self.topic = topic
        message = entry.get("Message")
        if not message:
            raise invalid("Empty message")
        self.subject = entry.get("Subject")
        _check_subject(self.subject)
        self.attributes = _message_attributes(entry.get("MessageAttributes") or {})
        if _size(message, self.attributes) > MAX_MESSAGE:
            raise invalid("Message too long")
        self.messages: dict[str, str] | None = None
        if entry.get("MessageStructure") is not None:
            if entry["MessageStructure"] != "json":
                raise invalid("MessageStructure")
            self.messages = _structured(topic, message, call)
            message = self.messages.pop("default")
        self.message = message
        self.group_id = entry.get("MessageGroupId")
        dedup = entry.get("MessageDeduplicationId")
        if topic.fifo:
            if not self.group_id:
                raise invalid("The MessageGroupId parameter is required for FIFO topics")
            kept = topic.state.attributes.get(topic.topic, {})
            if dedup is None and kept.get("ContentBasedDeduplication") == "true":
                dedup = hashlib.sha256(message.encode()).hexdigest()
            if dedup is None:
                raise invalid(
                    "The topic should either have ContentBasedDeduplication enabled or"
                    " MessageDeduplicationId provided explicitly"
                )
        elif dedup is not None:
            raise invalid(
                "MessageDeduplicationId Reason: The request includes MessageDeduplicationId"
                " parameter that is not valid for this topic type"
            )
        # The message's identity: a FIFO message's deduplication id gives the
        # same MessageId (and the same queue deduplication ids) within the
        # queues' deduplication window.
        key = f"{topic.arn}/{dedup}" if dedup is not None else str(uuid.uuid4())
        self.event = {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, key)), "source": "aws.sns"}

    def context(self, attempt: int = 1) -> DeliveryContext:
        return DeliveryContext("sns.publish", "api", self.event, attempt)

    async def send(self, call: Call) -> dict[str, str]:
        """Hand the message to its subscriptions (retried in the background
        when one fails with a retryable error); its MessageId."""
        try:
            message_id = await self._attempt(self.topic, 1)
        except DeliveryError as error:
            if error.code == "NotRunning":
                raise NotRunningError(error.message) from None
            message_id = self.topic.message_id(self.context())
            if error.retryable:
                call.runtime.spawn(self._retry(call.runtime))
            else:
                log.error("sns publish to %s: %s", self.topic.topic, error.message)
        answer = {"MessageId": message_id}
        if self.topic.fifo:
            answer["SequenceNumber"] = await self.topic.state.next_sequence(self.topic.topic)
        return answer

    async def _attempt(self, topic: TopicTarget, attempt: int) -> str:
        return await topic.publish(
            self.message,
            self.attributes,
            self.context(attempt),
            subject=self.subject,
            group_id=self.group_id,
            messages=self.messages,
        )

    async def _retry(self, runtime: ApiHost) -> None:
        for attempt in range(2, RETRIES + 2):
            await asyncio.sleep(min(2.0 ** (attempt - 1), 60.0))
            topic = topics(runtime).get(self.topic.topic)
            if topic is None:
                return  # deleted meanwhile
            try:
                await self._attempt(topic, attempt)
                return
            except DeliveryError as error:
                if not error.retryable:
                    log.error("sns publish to %s: %s", topic.topic, error.message)
                    return
        log.error(
            "sns publish to %s: a subscription still failed after %d attempts; dropped",
            self.topic.topic,
            RETRIES + 1,
        )


async def _publish_topic(call: Call, params: Mapping[str, Any]) -> TopicTarget:
    if params.get("PhoneNumber"):
        raise invalid("PhoneNumber Reason: pipelines does not send SMS")
    if params.get("TopicArn"):
        return await _topic(call, params["TopicArn"], max_age=REFRESH)
    target = params.get("TargetArn")
    if not target:
        raise invalid("TopicArn or TargetArn Reason: no value for required parameter")
    try:
        return await _topic(call, target, "TargetArn", max_age=REFRESH)
    except ApiError as error:
        if error.code == "NotFound" or error.message == "Invalid parameter: TargetArn":
            raise invalid(
                "TargetArn Reason: No endpoint found for the target arn specified"
            ) from None
        raise


@sns.operation()
async def publish(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    topic = await _publish_topic(call, params)
    return await _Publish(call, topic, params).send(call)


@sns.operation()
async def publish_batch(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    topic = await _topic(call, params["TopicArn"], max_age=REFRESH)
    entries = params["PublishBatchRequestEntries"]
    if not entries:
        raise ApiError("EmptyBatchRequest", "The batch request doesn't contain any entries.")
    if len(entries) > MAX_BATCH:
        raise ApiError(
            "TooManyEntriesInBatchRequest",
            "The batch request contains more entries than permissible.",
        )
    ids = [entry["Id"] for entry in entries]
    for entry_id in ids:
        if len(entry_id) > 80:
            raise ApiError(
                "InvalidBatchEntryId",
                f"The Id of a batch entry in the batch request is too long: {entry_id}",
            )
        if not _BATCH_ID.fullmatch(entry_id):
            raise ApiError(
                "InvalidBatchEntryId",
                "The Id of a batch entry in the batch request contains an impermissible"
                f" character: {entry_id}",
            )
    if len(set(ids)) != len(ids):
        raise ApiError(
            "BatchEntryIdsNotDistinct", "Two or more batch entries in the request have the same Id."
        )
    prepared = [_Publish(call, topic, entry) for entry in entries]
    if sum(_size(p.message, p.attributes) for p in prepared) > MAX_MESSAGE:
        raise ApiError(
            "BatchRequestTooLong",
            "The length of all the messages put together is more than the limit.",
        )
    successful: list[dict[str, str]] = []
    failed: list[dict[str, Any]] = []
    for entry_id, one in zip(ids, prepared, strict=True):
        try:
            successful.append({"Id": entry_id, **await one.send(call)})
        except NotRunningError as error:
            failed.append(
                {
                    "Id": entry_id,
                    "Code": "InternalError",
                    "Message": str(error),
                    "SenderFault": False,
                }
            )
    return {"Successful": successful, "Failed": failed}
