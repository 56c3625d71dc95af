"""The sqs service (SQS's JSON 1.0 protocol) on the endpoint, over ``QueueStore``.

Registered through the ``register_services`` hook. Each operation translates
AWS's names (``VisibilityTimeout``, string attribute values, queue URLs) to
the store's and back; the store keeps SQS's semantics. A queue URL is
``{endpoint}/{account}/{name}`` and any URL whose last segment is a queue's
name names that queue.

**Queues and resources.** The endpoint opens one ``QueueStore`` on the
runtime's state database, the same tables every queue resource uses, so a
queue a config declares is listed, read and written here. A queue this API
creates, or whose URL ``GetQueueUrl`` gives, becomes a resource of type
``queue`` of the same name (``Runtime.put_resource``), so it can be a rule
target and gets retention like a declared one; ``DeleteQueue`` removes that
resource again unless a rule still uses it. See docs/api.md.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import re
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipelines.api import ApiError, Call, QueryError, Service
from pipelines.api.services import ApiHost
from pipelines.errors import ConfigError, QueueError, ResourceNotFoundError
from pipelines.targets import Target
from plugins.queue.store import (
    FIFO_SUFFIX,
    MAX_BATCH,
    MAX_WAIT,
    Message,
    QueueAttributes,
    QueueStore,
    SendEntry,
    queue_arn,
)
from plugins.queue.target import QueueTarget

#: The query codes and HTTP statuses of SQS's errors, from AWS's Smithy model
#: of SQS (``aws.protocols#awsQueryError``), which botocore's JSON model
#: leaves out; and the JSON names AWS gives the two codes that have no shape
#: (recorded answers: ``InvalidParameterValueException``, ``MissingRequiredParameterException``).
QUERY_ERRORS = {
    "QueueDoesNotExist": QueryError("QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"),
    "QueueNameExists": QueryError("QueueNameExists", "QueueAlreadyExists"),
    "QueueDeletedRecently": QueryError(
        "QueueDeletedRecently", "AWS.SimpleQueueService.QueueDeletedRecently"
    ),
    "PurgeQueueInProgress": QueryError(
        "PurgeQueueInProgress", "AWS.SimpleQueueService.PurgeQueueInProgress", 403
    ),
    "MessageNotInflight": QueryError(
        "MessageNotInflight", "AWS.SimpleQueueService.MessageNotInflight"
    ),
    "ReceiptHandleIsInvalid": QueryError("ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid", 404),
    "EmptyBatchRequest": QueryError(
        "EmptyBatchRequest", "AWS.SimpleQueueService.EmptyBatchRequest"
    ),
    "TooManyEntriesInBatchRequest": QueryError(
        "TooManyEntriesInBatchRequest", "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"
    ),
    "BatchEntryIdsNotDistinct": QueryError(
        "BatchEntryIdsNotDistinct", "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"
    ),
    "BatchRequestTooLong": QueryError(
        "BatchRequestTooLong", "AWS.SimpleQueueService.BatchRequestTooLong"
    ),
    "InvalidBatchEntryId": QueryError(
        "InvalidBatchEntryId", "AWS.SimpleQueueService.InvalidBatchEntryId"
    ),
    "UnsupportedOperation": QueryError(
        "UnsupportedOperation", "AWS.SimpleQueueService.UnsupportedOperation"
    ),
    "OverLimit": QueryError("OverLimit", "OverLimit", 403),
    "RequestThrottled": QueryError("RequestThrottled", "RequestThrottled", 403),
    "InvalidAddress": QueryError("InvalidAddress", "InvalidAddress", 404),
    "InvalidParameterValue": QueryError("InvalidParameterValueException", "InvalidParameterValue"),
    "MissingParameter": QueryError("MissingRequiredParameterException", "MissingParameter"),
}

sqs = Service("sqs", query_errors=QUERY_ERRORS, check_enums=False)

#: CreateQueue's and SetQueueAttributes' numeric attributes, by AWS's name.
NUMBERS = {
    "VisibilityTimeout": "visibility_timeout",
    "DelaySeconds": "delay_seconds",
    "MessageRetentionPeriod": "message_retention_period",
    "MaximumMessageSize": "maximum_message_size",
    "ReceiveMessageWaitTimeSeconds": "receive_wait_time_seconds",
}
#: Attributes accepted and not kept: access policies, encryption and FIFO
#: throughput settings have no meaning for a queue in a local file.
IGNORED = {
    "Policy",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "SqsManagedSseEnabled",
    "RedriveAllowPolicy",
}
FIFO_ONLY_IGNORED = {"DeduplicationScope", "FifoThroughputLimit"}
#: GetQueueAttributes' names (the model's enum of them, which requests are not checked against).
KNOWN_ATTRIBUTES = set(sqs.model.shape_for("QueueAttributeName").enum)
#: ListQueues without MaxResults answers at most this many, as SQS does.
LIST_LIMIT = 1000
_ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,256}")
_TRANSPORT = {"String": 1, "Number": 1, "Binary": 2}


# -- the store of a runtime --------------------------------------------------


@dataclass
class _Context:
    """What the sqs service keeps while an endpoint serves it."""

    #: Resources made by this API (``DeleteQueue`` may remove them again,
    #: unless a config reload has put its own resource under the name since).
    adopted: dict[str, Target] = field(default_factory=dict)
    #: Long polls under way, ended when the endpoint closes.
    polls: set[asyncio.Task[list[Message]]] = field(default_factory=set)
    stopping: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    opened: QueueStore | None = None

    @property
    def store(self) -> QueueStore:
        assert self.opened is not None, "_context opens the store first"
        return self.opened


def _stop(context: _Context) -> None:
    """The endpoint is closing: long polls under way end now, with nothing."""
    context.stopping = True
    for poll in context.polls:
        poll.cancel()


async def _context(call: Call) -> _Context:
    context = call.kept("sqs", _Context, stop=_stop)
    if context.opened is None:
        try:
            context.opened = await call.store(QueueStore, where="the sqs API")
        except ApiError as error:
            if error.status != 503 or call.runtime.state_path is not None:
                raise
            raise ApiError("UnsupportedOperation", error.message) from None
    return context


def _queue_name(url: str) -> str:
    """The queue a URL names: its last path segment."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    if not name:
        raise ApiError("QueueDoesNotExist", "The specified queue does not exist.")
    return name


def _url(call: Call, name: str) -> str:
    return f"{call.base_url}/{call.account}/{name}"


async def _run(work: Any) -> Any:
    """Await a store call, in AWS's wording where SQS's differs from the store's."""
    try:
        return await work
    except QueueError as error:
        if error.code == "QueueDoesNotExist":
            raise ApiError(error.code, "The specified queue does not exist.") from None
        raise


# -- queue resources ---------------------------------------------------------


def _serving(runtime: ApiHost, queue: str) -> str | None:
    """The resource that runs ``queue``, if any."""
    for name in runtime.resource_names():
        try:
            target = runtime.resource(name)
        except ResourceNotFoundError:  # removed meanwhile
            continue
        if isinstance(target, QueueTarget) and target.queue == queue:
            return name
    return None


async def _adopt(call: Call, context: _Context, name: str, attributes: QueueAttributes) -> None:
    """Make ``name`` a resource of type ``queue`` unless one runs it (or the
    name is another resource's: that queue is then no rule target)."""
    async with context.lock:
        runtime = call.runtime
        if _serving(runtime, name) is not None or name in runtime.resource_names():
            return
        context.adopted[name] = await runtime.put_resource(name, "queue", attributes.to_json())


def _adopted(runtime: ApiHost, context: _Context, name: str) -> Target | None:
    """The resource this API made for the queue ``name``, if it is still the one."""
    made = context.adopted.get(name)
    try:
        return made if made is not None and runtime.resource(name) is made else None
    except ResourceNotFoundError:
        return None


# -- attributes ----------------------------------------------------------------


def _invalid_value(name: str, reason: str | None = None) -> ApiError:
    message = f"Invalid value for the parameter {name}."
    if reason:
        message = f"Invalid value for the parameter {name}. Reason: {reason}"
    return ApiError("InvalidAttributeValue", message)


def _flag(name: str, value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise _invalid_value(name)
    return value.lower() == "true"


async def _redrive(context: _Context, name: str, value: str) -> dict[str, Any] | None:
    if value == "":
        return None  # SetQueueAttributes: no redrive policy any more
    try:
        policy = orjson.loads(value)
    except orjson.JSONDecodeError:
        policy = None
    if not isinstance(policy, dict):
        raise _invalid_value("RedrivePolicy", "Redrive policy is not a valid JSON map.")
    target, count = policy.get("deadLetterTargetArn"), policy.get("maxReceiveCount")
    if not isinstance(target, str) or count is None:
        raise _invalid_value(
            "RedrivePolicy", "Redrive policy needs deadLetterTargetArn and maxReceiveCount."
        )
    try:
        count = int(count)
    except (TypeError, ValueError):
        raise _invalid_value("RedrivePolicy", "maxReceiveCount must be an integer.") from None
    dead_letter = target.rsplit(":", 1)[-1]
    try:
        await context.store.get_attributes(dead_letter)
    except QueueError:
        raise ApiError(
            "InvalidParameterValue",
            f"Value {value} for parameter RedrivePolicy is invalid. Reason: Dead letter"
            " target does not exist.",
        ) from None
    return {"dead_letter_queue": dead_letter, "max_receive_count": count}


async def _library_attributes(
    context: _Context, name: str, given: Mapping[str, str], *, creating: bool
) -> dict[str, Any]:
    """AWS's queue attributes (string values) in the store's names, checked."""
    fifo = name.endswith(FIFO_SUFFIX)
    found: dict[str, Any] = {}
    for key, value in given.items():
        if key in NUMBERS:
            low, high = QueueAttributes.RANGES[NUMBERS[key]]
            if not value.strip().isdigit() or not low <= int(value) <= high:
                raise _invalid_value(key)
            found[NUMBERS[key]] = int(value)
        elif key == "RedrivePolicy":
            found["redrive_policy"] = await _redrive(context, name, value)
        elif key == "ContentBasedDeduplication":
            if not fifo:
                raise ApiError("InvalidAttributeName", f"Unknown Attribute {key}.")
            found["content_based_deduplication"] = _flag(key, value)
        elif key == "FifoQueue":
            wanted = _flag(key, value)
            if not creating:
                if not fifo:
                    raise ApiError("InvalidAttributeName", f"Unknown Attribute {key}.")
                raise _invalid_value(key, "Modifying queue type is not supported.")
            if wanted != fifo:
                raise ApiError(
                    "InvalidParameterValue",
                    "The name of a FIFO queue can only include alphanumeric characters,"
                    " hyphens, or underscores, must end with .fifo suffix and be 1 to 80 in"
                    " length."
                    if wanted
                    else f"Value {value} for parameter FifoQueue is invalid. Reason: a queue"
                    " whose name ends in .fifo is a FIFO queue.",
                )
        elif key in FIFO_ONLY_IGNORED:
            if not fifo:
                raise ApiError(
                    "InvalidAttributeName",
                    f"You can specify the {key} only when FifoQueue is set to true.",
                )
        elif key not in IGNORED:
            raise ApiError("InvalidAttributeName", f"Unknown Attribute {key}.")
    return found


def _aws_attributes(
    attributes: QueueAttributes, stats: Mapping[str, Any], name: str, created: float
) -> dict[str, str]:
    """GetQueueAttributes' ``All``: AWS's names, every value a string."""
    answer = {
        "QueueArn": queue_arn(name),
        "ApproximateNumberOfMessages": str(stats["ApproximateNumberOfMessages"]),
        "ApproximateNumberOfMessagesNotVisible": str(
            stats["ApproximateNumberOfMessagesNotVisible"]
        ),
        "ApproximateNumberOfMessagesDelayed": str(stats["ApproximateNumberOfMessagesDelayed"]),
        "CreatedTimestamp": str(int(created)),
        **{aws: str(getattr(attributes, key)) for aws, key in NUMBERS.items()},
        "SqsManagedSseEnabled": "false",
    }
    if attributes.redrive_policy is not None:
        answer["RedrivePolicy"] = orjson.dumps(
            {
                "deadLetterTargetArn": queue_arn(attributes.redrive_policy.dead_letter_queue),
                "maxReceiveCount": attributes.redrive_policy.max_receive_count,
            }
        ).decode()
    if name.endswith(FIFO_SUFFIX):
        answer["FifoQueue"] = "true"
        answer["ContentBasedDeduplication"] = str(attributes.content_based_deduplication).lower()
        answer["DeduplicationScope"] = "queue"
        answer["FifoThroughputLimit"] = "perQueue"
    return answer


# -- queues --------------------------------------------------------------------


@sqs.operation()
async def create_queue(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    context = await _context(call)
    name = params["QueueName"]
    given = params.get("Attributes", {})
    wanted = await _library_attributes(context, name, given, creating=True)
    if wanted.get("redrive_policy") is None:
        wanted.pop("redrive_policy", None)
    try:
        existing = await context.store.get_attributes(name)
    except QueueError:
        existing = None
    if existing is None:
        attributes = await context.store.create_queue(name, wanted)
    else:
        # AWS: the same name again with the same values of the attributes given
        # is the queue that exists; another value of one of them is an error.
        current = existing.to_json()
        for key, value in wanted.items():
            if current.get(key) != value:
                aws = next((a for a, k in NUMBERS.items() if k == key), key)
                aws = {
                    "redrive_policy": "RedrivePolicy",
                    "content_based_deduplication": "ContentBasedDeduplication",
                }.get(aws, aws)
                raise ApiError(
                    "QueueNameExists",
                    "A queue already exists with the same name and a different value for"
                    f" attribute {aws}",
                )
        attributes = existing
    await _adopt(call, context, name, attributes)
    return {"QueueUrl": _url(call, name)}


@sqs.operation()
async def get_queue_url(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    context = await _context(call)
    name = params["QueueName"]
    attributes = await _run(context.store.get_attributes(name))
    await _adopt(call, context, name, attributes)
    return {"QueueUrl": _url(call, name)}


def _token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode()


def _after(token: str | None) -> str | None:
    if not token:
        return None
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ApiError("InvalidParameterValue", "Invalid NextToken value.") from None


def _page(call: Call, names: list[str], params: Mapping[str, Any]) -> dict[str, Any]:
    after = _after(params.get("NextToken"))
    if after is not None:
        names = [name for name in names if name > after]
    limit = params.get("MaxResults")
    page = names[: limit or LIST_LIMIT]
    answer: dict[str, Any] = {"QueueUrls": [_url(call, name) for name in page]}
    if limit is not None and len(names) > limit:
        answer["NextToken"] = _token(page[-1])
    return answer


@sqs.operation()
async def list_queues(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    context = await _context(call)
    names = await context.store.list_queues(params.get("QueueNamePrefix", ""))
    return _page(call, names, params)


@sqs.operation()
async def list_dead_letter_source_queues(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    context = await _context(call)
    name = _queue_name(params["QueueUrl"])
    await _run(context.store.get_attributes(name))
    sources = []
    for other in await context.store.list_queues():
        with contextlib.suppress(QueueError):  # deleted meanwhile
            policy = (await context.store.get_attributes(other)).redrive_policy
            if policy is not None and policy.dead_letter_queue == name:
                sources.append(other)
    answer = _page(call, sources, params)
    answer["queueUrls"] = answer.pop("QueueUrls")
    return answer


@sqs.operation()
async def delete_queue(call: Call, params: dict[str, Any]) -> None:
    context = await _context(call)
    name = _queue_name(params["QueueUrl"])
    await _run(context.store.delete_queue(name))
    if _adopted(call.runtime, context, name) is not None:
        # A rule may still use it: then it stays, and its deliveries fail
        # (QueueDoesNotExist, retried) until the queue is created again.
        with contextlib.suppress(ConfigError, ResourceNotFoundError):
            await call.runtime.delete_resource(name)
            del context.adopted[name]


@sqs.operation()
async def purge_queue(call: Call, params: dict[str, Any]) -> None:
    context = await _context(call)
    name = _queue_name(params["QueueUrl"])
    try:
        await _run(context.store.purge(name))
    except QueueError as error:
        if error.code != "PurgeQueueInProgress":
            raise
        raise ApiError(
            error.code, f"Only one PurgeQueue operation on {name} is allowed every 60 seconds."
        ) from None


@sqs.operation()
async def get_queue_attributes(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    context = await _context(call)
    name = _queue_name(params["QueueUrl"])
    wanted = set(params.get("AttributeNames", []))
    for unknown in sorted(wanted - KNOWN_ATTRIBUTES):
        raise ApiError("InvalidAttributeName", f"Unknown Attribute {unknown}.")
    if not wanted:
        return {}
    attributes = await _run(context.store.get_attributes(name))
    stats = await _run(context.store.stats(name))
    created = await _run(context.store.created(name))
    every = _aws_attributes(attributes, stats, name, created)
    if "All" in wanted:
        return {"Attributes": every}
    return {"Attributes": {key: value for key, value in every.items() if key in wanted}}


@sqs.operation()
async def set_queue_attributes(call: Call, params: dict[str, Any]) -> None:
    context = await _context(call)
    name = _queue_name(params["QueueUrl"])
    current = (await _run(context.store.get_attributes(name))).to_json()
    changes = await _library_attributes(context, name, params["Attributes"], creating=False)
    merged = {**current, **changes}
    if merged.get("redrive_policy") is None:
        merged.pop("redrive_policy", None)
    await context.store.create_queue(name, merged, update=True)
    target = _adopted(call.runtime, context, name)
    if isinstance(target, QueueTarget):
        # The resource this API made applies its attributes when it starts again.
        target.attributes = merged


# -- messages ------------------------------------------------------------------


def md5_of_attributes(attributes: Mapping[str, Mapping[str, Any]]) -> str:
    """SQS's MD5OfMessageAttributes: over the attributes sorted by name, each
    as its name, data type (both length-prefixed UTF-8), a transport byte
    (1 for String and Number, 2 for Binary) and its value (length-prefixed)."""
    digest = hashlib.md5()
    for name in sorted(attributes):
        value = attributes[name]
        kind = value["DataType"]
        for text in (name, kind):
            encoded = text.encode()
            digest.update(struct.pack(">I", len(encoded)) + encoded)
        transport = _TRANSPORT[kind.split(".", 1)[0]]
        digest.update(bytes([transport]))
        if transport == 2:
            data = value["BinaryValue"]
            payload = data if isinstance(data, bytes) else base64.b64decode(data)
        else:
            payload = value["StringValue"].encode()
        digest.update(struct.pack(">I", len(payload)) + payload)
    return digest.hexdigest()


def _check_attribute_names(attributes: Mapping[str, Any]) -> None:
    for name in attributes:
        lowered = name.lower()
        if (
            not _ATTRIBUTE_NAME.fullmatch(name)
            or lowered.startswith(("aws.", "amazon."))
            or name.startswith(".")
            or name.endswith(".")
            or ".." in name
        ):
            raise QueueError(
                "InvalidParameterValue",
                f"Message (user) attribute name '{name}' is invalid: up to 256 letters,"
                " digits, '_', '-' and '.', not starting with AWS. or Amazon., no leading,"
                " trailing or repeated '.'.",
            )


def _store_attributes(given: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """MessageAttributes as the store takes them (binary values in base64)."""
    _check_attribute_names(given)
    stored = {}
    for name, value in given.items():
        kept = {"DataType": value.get("DataType", "")}
        if "StringValue" in value:
            kept["StringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            kept["BinaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
        if kept["DataType"].startswith(("String", "Number")) and not kept.get("StringValue"):
            raise QueueError(
                "InvalidParameterValue",
                f"Message (user) attribute '{name}' must contain a non-empty value of type"
                " 'String'.",
            )
        stored[name] = kept
    return stored


def _entry(given: Mapping[str, Any], entry_id: str = "0") -> SendEntry:
    body = given.get("MessageBody", "")
    if body == "":
        raise QueueError("MissingParameter", "The request must contain the parameter MessageBody.")
    return SendEntry(
        body,
        _store_attributes(given.get("MessageAttributes", {})),
        given.get("DelaySeconds"),
        given.get("MessageGroupId"),
        given.get("MessageDeduplicationId"),
        entry_id,
    )


def _sent(entry: SendEntry, result: Mapping[str, Any]) -> dict[str, Any]:
    answer = dict(result)
    if entry.attributes:
        answer["MD5OfMessageAttributes"] = md5_of_attributes(entry.attributes)
    return answer


@sqs.operation()
async def send_message(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    context = await _context(call)
    name = _queue_name(params["QueueUrl"])
    entry = _entry(params)
    result = await _run(
        context.store.send(
            name,
            entry.body,
            entry.attributes,
            delay_seconds=entry.delay_seconds,
            group_id=entry.group_id,
            deduplication_id=entry.deduplication_id,
        )
    )
    return _sent(entry, result.to_json())


def _check_batch(ids: list[str]) -> None:
    """A batch's entry ids as SQS checks them before any entry."""
    if not ids:
        raise ApiError("EmptyBatchRequest", "There should be at least one entry in the request.")
    if len(ids) > MAX_BATCH:
        raise ApiError(
            "TooManyEntriesInBatchRequest",
            f"Maximum number of entries per request are {MAX_BATCH}. You have sent {len(ids)}.",
        )
    if any(not re.fullmatch(r"[A-Za-z0-9_-]{1,80}", entry_id) for entry_id in ids):
        raise ApiError(
            "InvalidBatchEntryId",
            "A batch entry id can only contain alphanumeric characters, hyphens and"
            " underscores. It can be at most 80 letters long.",
        )
    if len(set(ids)) != len(ids):
        repeated = next(entry_id for entry_id in ids if ids.count(entry_id) > 1)
        raise ApiError("BatchEntryIdsNotDistinct", f"Id {repeated} repeated.")


def _failure(entry_id: str, error: QueueError) -> dict[str, Any]:
    return {"Id": entry_id, "Code": error.code, "Message": error.message, "SenderFault": True}


@sqs.operation()
async def send_message_batch(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    context = await _context(call)
    name = _queue_name(params["QueueUrl"])
    given = params["Entries"]
    _check_batch([entry["Id"] for entry in given])
    entries: list[SendEntry] = []
    failed: list[dict[str, Any]] = []
    for item in given:
        try:
            entries.append(_entry(item, item["Id"]))
        except QueueError as error:
            failed.append(_failure(item["Id"], error))
    successful: list[dict[str, Any]] = []
    if entries:
        sent, refused = await _run(context.store.send_batch(name, entries))
        by_id = {entry.id: entry for entry in entries}
        successful = [_sent(by_id[result.id], result.to_json()) for result in sent]
        failed += [error.to_json() for error in refused]
    order = {item["Id"]: n for n, item in enumerate(given)}
    failed.sort(key=lambda item: order[item["Id"]])
    return {"Successful": successful, "Failed": failed}


def _matcher(names: Iterable[str]) -> Callable[[str], bool]:
    """MessageAttributeNames as SQS reads them: ``All``, ``.*`` or ``*`` for
    every attribute, ``prefix.*`` for those starting with ``prefix``, else exact."""
    names = list(names)
    if any(name in ("All", ".*", "*") for name in names):
        return lambda _: True
    exact = {name for name in names if not name.endswith(".*")}
    prefixes = tuple(name[:-2] for name in names if name.endswith(".*"))
    return lambda name: name in exact or (bool(prefixes) and name.startswith(prefixes))


def _received(
    message: Message, system: Callable[[str], bool], user: Callable[[str], bool]
) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "MessageId": message.message_id,
        "ReceiptHandle": message.receipt_handle,
        "MD5OfBody": message.md5_of_body,
        "Body": message.body,
    }
    attributes = {key: value for key, value in message.attributes.items() if system(key)}
    if attributes:
        answer["Attributes"] = attributes
    chosen = {key: value for key, value in message.message_attributes.items() if user(key)}
    if chosen:
        answer["MD5OfMessageAttributes"] = md5_of_attributes(chosen)
        answer["MessageAttributes"] = {
            key: (
                {**value, "BinaryValue": base64.b64decode(value["BinaryValue"])}
                if "BinaryValue" in value
                else value
            )
            for key, value in chosen.items()
        }
    return answer


def _in_range(name: str, value: int | None, low: int, high: int, reason: str) -> None:
    if value is not None and not low <= value <= high:
        raise ApiError(
            "InvalidParameterValue",
            f"Value {value} for parameter {name} is invalid. Reason: {reason}",
        )


@sqs.operation()
async def receive_message(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    context = await _context(call)
    name = _queue_name(params["QueueUrl"])
    count = params.get("MaxNumberOfMessages")
    wait = params.get("WaitTimeSeconds")
    visibility = params.get("VisibilityTimeout")
    _in_range("MaxNumberOfMessages", count, 1, MAX_BATCH, "Must be between 1 and 10, if provided.")
    _in_range("WaitTimeSeconds", wait, 0, MAX_WAIT, "Must be >= 0 and <= 20, if provided.")
    _in_range("VisibilityTimeout", visibility, 0, 43_200, "Must be between 0 and 43200.")
    if context.stopping:
        wait = 0
    polling = asyncio.ensure_future(
        context.store.receive(name, count or 1, wait_time=wait, visibility_timeout=visibility)
    )
    context.polls.add(polling)
    try:
        messages = await _run(polling)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if not context.stopping or (task is not None and task.cancelling()):
            raise
        messages = []  # the endpoint is closing: the poll ends with nothing
    finally:
        context.polls.discard(polling)
    system = _matcher(
        [*params.get("AttributeNames", []), *params.get("MessageSystemAttributeNames", [])]
    )
    user = _matcher(params.get("MessageAttributeNames", []))
    if not messages:
        return {}  # AWS's JSON answer omits an empty Messages (`{}`)
    return {"Messages": [_received(message, system, user) for message in messages]}


@sqs.operation()
async def delete_message(call: Call, params: dict[str, Any]) -> None:
    context = await _context(call)
    name = _queue_name(params["QueueUrl"])
    await _run(context.store.delete(name, params["ReceiptHandle"]))


@sqs.operation()
async def delete_message_batch(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    context = await _context(call)
    name = _queue_name(params["QueueUrl"])
    given = params["Entries"]
    _check_batch([entry["Id"] for entry in given])
    deleted, failed = await _run(
        context.store.delete_batch(name, [(entry["Id"], entry["ReceiptHandle"]) for entry in given])
    )
    return {
        "Successful": [{"Id": entry_id} for entry_id in deleted],
        "Failed": [error.to_json() for error in failed],
    }


@sqs.operation()
async def change_message_visibility(call: Call, params: dict[str, Any]) -> None:
    context = await _context(call)
    name = _queue_name(params["QueueUrl"])
    await _run(
        context.store.change_visibility(name, params["ReceiptHandle"], params["VisibilityTimeout"])
    )


@sqs.operation()
async def change_message_visibility_batch(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    context = await _context(call)
    name = _queue_name(params["QueueUrl"])
    given = params["Entries"]
    _check_batch([entry["Id"] for entry in given])
    await _run(context.store.get_attributes(name))
    successful: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for entry in given:
        try:
            await _run(
                context.store.change_visibility(
                    name, entry["ReceiptHandle"], entry.get("VisibilityTimeout", 0)
                )
            )
        except QueueError as error:
            failed.append(_failure(entry["Id"], error))
        else:
            successful.append({"Id": entry["Id"]})
    return {"Successful": successful, "Failed": failed}
