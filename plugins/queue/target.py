"""The ``queue`` target type: each delivered payload becomes a message.

Settings are the queue's attributes (``visibility_timeout``, ``delay_seconds``,
``message_retention_period``, ``maximum_message_size``,
``receive_wait_time_seconds``, ``redrive_policy``,
``content_based_deduplication``), applied when the pipeline starts, plus:

- ``queue``: the queue's name, when it differs from the resource's (a FIFO
  queue's name ends in ``.fifo``);
- ``message_group_id`` or ``message_group_id_jmespath`` (FIFO only): a
  fixed group id, or a JMESPath expression over the event. A FIFO queue
  subscribed to a FIFO topic takes the publish's group id instead.

The body is the payload: a string as it is, anything else as JSON. As a
dead-letter target, the bus's error attributes (``RULE_NAME``,
``ERROR_CODE``...) become String message attributes. On a FIFO queue the
deduplication id is derived from the event id, rule and target, so a retried
delivery is stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Mapping
from typing import Any

import jmespath
import jmespath.exceptions

from pipelines.clock import sleep
from pipelines.errors import ConfigError, DeliveryError, PipelinesError, QueueError
from pipelines.event import dump_json
from pipelines.targets import (
    DeliveryContext,
    Target,
    TargetServices,
    TargetType,
    check_keys,
    key_text,
)
from plugins.queue.store import (
    FIFO_SUFFIX,
    QueueAttributes,
    QueueStore,
    check_queue_name,
)

log = logging.getLogger("plugins.queue")

TARGET_SETTINGS = {"queue", "message_group_id", "message_group_id_jmespath"}
ATTRIBUTE_SETTINGS = {*QueueAttributes.RANGES, "redrive_policy", "content_based_deduplication"}
#: Codes of requests that will never succeed as they are: not worth a retry.
SENDER_FAULTS = {
    "InvalidMessageContents",
    "InvalidParameterValue",
    "MissingParameter",
}
HOUSEKEEPING_INTERVAL = 60.0

SETTINGS_SCHEMA: dict[str, Any] = {
    "properties": {
        "queue": {"type": "string", "description": "the queue's name (default: the resource's)"},
        "visibility_timeout": {"type": "integer", "minimum": 0, "maximum": 43200, "default": 30},
        "delay_seconds": {"type": "integer", "minimum": 0, "maximum": 900, "default": 0},
        "message_retention_period": {
            "type": "integer",
            "minimum": 60,
            "maximum": 1209600,
            "default": 345600,
        },
        "maximum_message_size": {
            "type": "integer",
            "minimum": 1024,
            "maximum": 1048576,
            "default": 1048576,
        },
        "receive_wait_time_seconds": {"type": "integer", "minimum": 0, "maximum": 20},
        "redrive_policy": {
            "type": "object",
            "properties": {
                "dead_letter_queue": {"type": "string"},
                "max_receive_count": {"type": "integer", "minimum": 1, "maximum": 1000},
            },
            "required": ["dead_letter_queue", "max_receive_count"],
            "additionalProperties": False,
        },
        "content_based_deduplication": {"type": "boolean"},
        "message_group_id": {"type": "string", "description": "FIFO: a fixed message group id"},
        "message_group_id_jmespath": {
            "type": "string",
            "description": "FIFO: a JMESPath expression over the event giving the group id",
        },
    },
}


class QueueTarget(Target):
    concurrency = 16

    def __init__(
        self,
        name: str,
        queue: str,
        attributes: Mapping[str, Any],
        group_id: str | None,
        group_expression: jmespath.parser.ParsedResult | None,
    ) -> None:
        self.name = name
        self.queue = queue
        self.attributes = dict(attributes)
        self.group_id = group_id
        self.group_expression = group_expression
        self.store: QueueStore | None = None
        self._housekeeping: asyncio.Task[None] | None = None

    async def start(self, services: TargetServices) -> None:
        path = services.state_path
        if path is None:
            raise PipelinesError(
                f"queue {self.queue}: queues are kept in the state database;"
                " give the runtime a state_path (a config always has one)"
            )
        self.store = await QueueStore.open(path, services.clock)
        try:
            await self.store.create_queue(self.queue, self.attributes, update=True)
        except BaseException:
            await self.store.close()
            self.store = None
            raise
        self._housekeeping = services.spawn(self._expire_regularly(self.store, services))

    async def _expire_regularly(self, store: QueueStore, services: TargetServices) -> None:
        """Retention: delete what is older than the retention period, once a minute."""
        while True:
            await sleep(services.clock, HOUSEKEEPING_INTERVAL)
            try:
                expired = await store.expire(self.queue)
            except Exception:
                log.exception("queue %s: could not delete expired messages", self.queue)
            else:
                if expired:
                    log.info("queue %s: %d messages past retention deleted", self.queue, expired)

    async def stop(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
            self._housekeeping = None
        if self.store is not None:
            await self.store.close()
            self.store = None

    async def deliver(self, payload: Any, context: DeliveryContext) -> Any:
        assert self.store is not None, "deliver before start"
        body = payload if isinstance(payload, str) else dump_json(payload).decode()
        # SQS stores no empty attribute (an exception's message may be empty).
        attributes = {name: str(v) for name, v in context.attributes.items() if str(v)}
        group_id = dedup_id = None
        if self.queue.endswith(FIFO_SUFFIX):
            # From a FIFO topic: the publish's group and deduplication ids.
            group_id = context.extra.get("MessageGroupId") or self._group_id(context.event)
            dedup_id = context.extra.get("MessageDeduplicationId") or _deduplication_id(context)
        try:
            result = await self.store.send(
                self.queue, body, attributes, group_id=group_id, deduplication_id=dedup_id
            )
        except QueueError as exc:
            raise DeliveryError(
                exc.code, exc.message, retryable=exc.code not in SENDER_FAULTS
            ) from None
        return result.message_id

    def _group_id(self, event: Mapping[str, Any]) -> str:
        if self.group_expression is None:
            if self.group_id is None:
                raise DeliveryError(
                    "MissingParameter",
                    f"queue {self.queue} is FIFO: give its target message_group_id or"
                    " message_group_id_jmespath",
                    retryable=False,
                )
            return self.group_id
        return group_id_of(self.group_expression, event)


def group_id_of(expression: jmespath.parser.ParsedResult, event: Mapping[str, Any]) -> str:
    """A FIFO message group id from ``message_group_id_jmespath`` over the event."""
    found = expression.search(event)
    key = key_text(found)
    if key is None:
        raise DeliveryError(
            "InvalidMessageGroupId",
            f"message_group_id_jmespath gave {found!r} for this event, not a string",
            retryable=False,
        )
    return key


def delivery_key(context: DeliveryContext) -> str:
    """Names one delivery of one event to one rule target (or its dead letter):
    the same for every retry of it, so what it sends can be deduplicated."""
    key = f"{context.event.get('id')}/{context.rule_name}/{context.target_id}"
    return key + "/dead-letter" if context.attributes else key


def _deduplication_id(context: DeliveryContext) -> str:
    return hashlib.sha256(delivery_key(context).encode()).hexdigest()


class QueueType(TargetType):
    name = "queue"
    description = "A durable queue with SQS's semantics (standard or FIFO), in the state database"
    settings_schema = SETTINGS_SCHEMA

    def create(self, name: str, config: Mapping[str, Any]) -> QueueTarget:
        where = f"target {name}"
        check_keys(where, config, TARGET_SETTINGS | ATTRIBUTE_SETTINGS)
        queue = config.get("queue", name)
        try:
            check_queue_name(queue)
            attributes = {key: config[key] for key in ATTRIBUTE_SETTINGS if key in config}
            QueueAttributes.parse(queue, attributes)
        except QueueError as exc:
            raise ConfigError(where, exc.message) from None
        group_id = config.get("message_group_id")
        expression = config.get("message_group_id_jmespath")
        fifo = queue.endswith(FIFO_SUFFIX)
        if (group_id is not None or expression is not None) and not fifo:
            raise ConfigError(where, "message_group_id is for FIFO queues (names ending .fifo)")
        if group_id is not None and expression is not None:
            raise ConfigError(where, "give message_group_id or message_group_id_jmespath, not both")
        if group_id is not None and (not isinstance(group_id, str) or not group_id):
            raise ConfigError(f"{where}.message_group_id", "must be a non-empty string")
        compiled = None
        if expression is not None:
            try:
                compiled = jmespath.compile(expression)
            except (jmespath.exceptions.JMESPathError, TypeError) as exc:
                raise ConfigError(f"{where}.message_group_id_jmespath", str(exc)) from None
        return QueueTarget(name, queue, attributes, group_id, compiled)
