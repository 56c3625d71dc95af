"""Source records in the shapes AWS hands to a pipe's filters, enrichment and target.

An SQS message becomes the record Lambda and Pipes give (``messageId``,
``receiptHandle``, ``body``, ``attributes``, ``messageAttributes`` with
lower-case keys, ``md5OfBody``, ``eventSource`` ``aws:sqs``, ``eventSourceARN``,
``awsRegion``); a Kinesis record the flat record Pipes give (unlike Lambda's,
no ``kinesis`` wrapper: ``data`` in base64 beside ``partitionKey`` and
``sequenceNumber``).

Each ``Item`` also has a *view*: the record with its ``body`` (SQS) or
``data`` (Kinesis) parsed when it holds a JSON object or array, which is what
filters match and templates read, as AWS decodes them for both.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any

from pipelines.event import DEFAULT_ACCOUNT, DEFAULT_REGION, parse_json
from plugins.mqtt.messages import Received
from plugins.queue.store import Message, queue_arn
from plugins.stream.store import Record


class Item:
    """One record of a batch, and what the pipe needs to settle it."""

    __slots__ = ("_view", "arrival", "group", "handle", "identifier", "key", "record")

    def __init__(
        self,
        record: dict[str, Any],
        key: str,
        identifier: str,
        group: str | None,
        arrival: float,
        handle: Any = None,
    ) -> None:
        self.record = record
        #: The field a view parses: ``body`` or ``data``.
        self.key = key
        #: What a target names in ``batchItemFailures`` (messageId, eventID).
        self.identifier = identifier
        #: Records of one group keep their order (a FIFO group, a partition key).
        self.group = group
        #: When the source took it in (seconds since the epoch).
        self.arrival = arrival
        #: The receipt handle of a message; the stream record.
        self.handle = handle
        self._view: dict[str, Any] | None = None

    @property
    def view(self) -> dict[str, Any]:
        """The record with its body or data parsed when it is JSON: made on
        first use (a pipe without filters or templates never needs it)."""
        if self._view is None:
            self._view = self._make_view()
        return self._view

    def _make_view(self) -> dict[str, Any]:
        if not self.key:  # already JSON throughout (a webhook's event)
            return self.record
        if self.key == "data":  # a stream record: its bytes are at hand
            try:
                text = self.handle.data.decode()
            except UnicodeDecodeError:
                return self.record
        else:
            text = self.record[self.key]
        parsed = _parsed(text)
        return self.record if parsed is None else {**self.record, self.key: parsed}


def _parsed(text: str) -> Any:
    """``text`` parsed when it holds a JSON object or array, else None."""
    if text.lstrip()[:1] not in ("{", "["):
        return None
    try:
        return parse_json(text)
    except (ValueError, RecursionError):
        return None


def _attribute(value: dict[str, str]) -> dict[str, Any]:
    """An SQS message attribute as Lambda shows it."""
    shown: dict[str, Any] = {
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": value.get("DataType", "String"),
    }
    if "StringValue" in value:
        shown["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        shown["binaryValue"] = value["BinaryValue"]
    return shown


def queue_item(queue: str, message: Message) -> Item:
    record: dict[str, Any] = {
        "messageId": message.message_id,
        "receiptHandle": message.receipt_handle,
        "body": message.body,
        "attributes": dict(message.attributes),
        "messageAttributes": {
            name: _attribute(value) for name, value in message.message_attributes.items()
        },
        "md5OfBody": message.md5_of_body,
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn(queue),
        "awsRegion": DEFAULT_REGION,
    }
    sent = float(message.attributes.get("SentTimestamp", "0")) / 1000
    return Item(
        record,
        "body",
        message.message_id,
        message.attributes.get("MessageGroupId"),
        sent,
        message.receipt_handle,
    )


def stream_arn(stream: str) -> str:
    return f"arn:aws:kinesis:{DEFAULT_REGION}:{DEFAULT_ACCOUNT}:stream/{stream}"


def stream_item(stream: str, record: Record) -> Item:
    shown: dict[str, Any] = {
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{record.shard_id}:{record.sequence_number}",
        "eventName": "aws:kinesis:record",
        "awsRegion": DEFAULT_REGION,
        "eventSourceARN": stream_arn(stream),
        "kinesisSchemaVersion": "1.0",
        "partitionKey": record.partition_key,
        "sequenceNumber": record.sequence_number,
        "data": base64.b64encode(record.data).decode(),
        "approximateArrivalTimestamp": record.arrival,
    }
    return Item(shown, "data", shown["eventID"], record.partition_key, record.arrival, record)


def log_group_arn(group: str) -> str:
    return f"arn:aws:logs:{DEFAULT_REGION}:{DEFAULT_ACCOUNT}:log-group:{group}"


def log_item(group: str, stream: str, event: dict[str, Any]) -> Item:
    """A log event as a pipe's record (AWS's Pipes read no log groups: the
    subscription payload's event, with where it comes from)."""
    shown: dict[str, Any] = {
        "id": event["id"],
        "timestamp": event["timestamp"],
        "message": event["message"],
        "logGroup": group,
        "logStream": stream,
        "eventSource": "aws:logs",
        "eventSourceARN": log_group_arn(group),
        "awsRegion": DEFAULT_REGION,
    }
    return Item(shown, "message", event["id"], None, event["timestamp"] / 1000)


def mqtt_item(received: Received, broker: str, identifier: str, arrival: float) -> Item:
    """An MQTT message as a pipe's record (AWS's Pipes read no MQTT topics):
    its payload as text (base64 when it is not UTF-8)."""
    try:
        payload = received.payload.decode()
    except UnicodeDecodeError:
        payload = base64.b64encode(received.payload).decode()
    shown: dict[str, Any] = {
        "topic": received.topic,
        "payload": payload,
        "qos": received.qos,
        "retain": received.retain,
        "userProperties": dict(received.user_properties),
        "eventSource": "mqtt",
        "broker": broker,
        "messageId": identifier,
    }
    return Item(shown, "payload", identifier, received.topic, arrival)


def webhook_item(entry: dict[str, Any], webhook: str) -> Item:
    """A webhook request as a pipe's record: the EventBridge event its
    PutEvents entry would have made (AWS's Pipes read no webhooks)."""
    identifier = str(uuid.uuid4())
    detail = entry.get("Detail", "{}")
    record: dict[str, Any] = {
        "version": "0",
        "id": identifier,
        "detail-type": entry.get("DetailType", ""),
        "source": entry.get("Source", ""),
        "account": DEFAULT_ACCOUNT,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": DEFAULT_REGION,
        "resources": list(entry.get("Resources") or []),
        "detail": parse_json(detail) if isinstance(detail, str) else detail,
    }
    return Item(record, "", identifier, None, datetime.now(UTC).timestamp(), webhook)
