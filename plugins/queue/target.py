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

The body is ``payload_text(payload)``: a rule target's JSON-string input
(a string template, an ``input_path`` to a string) as its JSON text, quotes
included, as AWS's SQS body is; any other string as it is (an SNS raw
message, a template's output that is not JSON); anything else as JSON. As a
dead-letter target, the bus's error attributes (``RULE_NAME``,
``ERROR_CODE``...) become String message attributes. On a FIFO queue the
deduplication id is derived from the event id, rule and target, so a retried
delivery is stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import jmespath
import jmespath.exceptions

from pipelines.errors import ConfigError, DeliveryError, Problems, QueueError, Where
from pipelines.settings import Flag, Number, Section, Setting, Settings, Shape
from pipelines.targets import (
    DeliveryContext,
    Gauge,
    Target,
    TargetServices,
    TargetType,
    key_text,
    payload_text,
    started,
)
from plugins.queue.store import (
    FIFO_SUFFIX,
    QueueAttributes,
    QueueStore,
    check_queue_name,
)

_DEFAULTS = QueueAttributes()
#: Its keys are checked here (the store names no unknown one); its values by the store.
REDRIVE_TABLE = Settings(
    {
        "dead_letter_queue": Shape({"type": "string"}, "the queue's name"),
        "max_receive_count": Number(None, 1, 1000, integer=True),
    },
    required=("dead_letter_queue", "max_receive_count"),
)
#: The queue's attributes: their ranges are the store's own (CreateQueue's).
ATTRIBUTE_TABLE: dict[str, Setting] = {
    **{
        key: Number(getattr(_DEFAULTS, key), low, high, integer=True)
        for key, (low, high) in QueueAttributes.RANGES.items()
    },
    "redrive_policy": Section(REDRIVE_TABLE),
    "content_based_deduplication": Flag(False, "FIFO: deduplicate by a hash of the body"),
}
SETTINGS_TABLE = Settings(
    {
        "queue": Shape({"type": "string"}, "the queue's name (default: the resource's)"),
        **ATTRIBUTE_TABLE,
        "message_group_id": Shape({"type": "string"}, "FIFO: a fixed message group id"),
        "message_group_id_jmespath": Shape(
            {"type": "string"}, "FIFO: a JMESPath expression over the event giving the group id"
        ),
    }
)
ATTRIBUTE_SETTINGS = set(ATTRIBUTE_TABLE)
TARGET_SETTINGS = SETTINGS_TABLE.names - ATTRIBUTE_SETTINGS
#: Codes of requests that will never succeed as they are: not worth a retry.
SENDER_FAULTS = {
    "InvalidMessageContents",
    "InvalidParameterValue",
    "MissingParameter",
}


_VISIBLE = "Messages available for retrieval."


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
        self.store = await services.open_store(QueueStore, where=f"queue {self.queue}")
        try:
            await self.store.create_queue(self.queue, self.attributes, update=True)
        except BaseException:
            await self.store.close()
            self.store = None
            raise
        self._housekeeping = services.upkeep(self.store.retention(self.queue))

    async def stop(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
            self._housekeeping = None
        if self.store is not None:
            await self.store.close()
            self.store = None

    async def gauges(self) -> Sequence[Gauge]:
        """The queue's message counts and the age of its oldest message."""
        if self.store is None:
            return ()
        stats = await self.store.stats(self.queue)
        labels = {"queue": self.queue}
        return [
            Gauge("queue_messages", stats["ApproximateNumberOfMessages"], labels, _VISIBLE),
            Gauge(
                "queue_messages_in_flight",
                stats["ApproximateNumberOfMessagesNotVisible"],
                labels,
                "Messages received and not yet deleted (invisible).",
            ),
            Gauge(
                "queue_messages_delayed",
                stats["ApproximateNumberOfMessagesDelayed"],
                labels,
                "Messages not yet visible because of their delay.",
            ),
            Gauge(
                "queue_oldest_message_age_seconds",
                stats["ApproximateAgeOfOldestMessage"],
                labels,
                "Age of the oldest message in the queue.",
            ),
        ]

    async def deliver(self, payload: Any, context: DeliveryContext) -> Any:
        store = started(self.store, f"queue {self.queue}")
        body = payload_text(payload)
        typed = context.extra.get("MessageAttributes")
        # SQS stores no empty attribute (a dead letter's error message may be empty).
        attributes: Mapping[str, Any]
        if isinstance(typed, Mapping):
            # A topic's raw delivery: its attributes in SQS's shape, data types kept.
            attributes = {
                name: value
                for name, value in typed.items()
                if value.get("StringValue", value.get("BinaryValue"))
            }
        else:
            attributes = {name: str(v) for name, v in context.attributes.items() if str(v)}
        group_id = dedup_id = None
        if self.queue.endswith(FIFO_SUFFIX):
            # From a FIFO topic: the publish's group and deduplication ids.
            group_id = context.extra.get("MessageGroupId") or self._group_id(context.event)
            dedup_id = context.extra.get("MessageDeduplicationId") or _deduplication_id(context)
        try:
            result = await store.send(
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
    arn_template = "arn:aws:sqs:{region}:{account}:{name}"
    name = "queue"
    description = "A durable queue with SQS's semantics (standard or FIFO), in the state database"
    settings = SETTINGS_TABLE

    def create(self, name: str, config: Mapping[str, Any]) -> QueueTarget:
        where = Where(f"target {name}")
        problems = Problems()
        with problems:
            SETTINGS_TABLE.check_keys(where, config)
        queue = config.get("queue", name)
        try:
            check_queue_name(queue)
        except QueueError as exc:
            problems.add(ConfigError(where / "queue" if "queue" in config else where, exc.message))
            queue = name if isinstance(name, str) else ""
        # Each attribute on its own, as CreateQueue checks it: every bad one is named.
        attributes = {key: config[key] for key in ATTRIBUTE_SETTINGS if key in config}
        for key, value in attributes.items():
            if key == "redrive_policy" and isinstance(value, Mapping):
                try:
                    REDRIVE_TABLE.check_keys(where / key, value)
                except ConfigError as exc:
                    problems.add(exc)
                    continue  # the store would refuse the same key again
            try:
                QueueAttributes.parse(queue, {key: value})
            except QueueError as exc:
                problems.add(ConfigError(where / key, exc.message))
        with problems:
            group_id, compiled = _group(where, queue, config)
        problems.raise_any()
        return QueueTarget(name, queue, attributes, group_id, compiled)


def _group(
    where: Where, queue: str, config: Mapping[str, Any]
) -> tuple[str | None, jmespath.parser.ParsedResult | None]:
    """A FIFO queue's fixed message group id, or its JMESPath expression."""
    group_id = config.get("message_group_id")
    expression = config.get("message_group_id_jmespath")
    fifo = queue.endswith(FIFO_SUFFIX)
    if (group_id is not None or expression is not None) and not fifo:
        raise ConfigError(where, "message_group_id is for FIFO queues (names ending .fifo)")
    if group_id is not None and expression is not None:
        raise ConfigError(where, "give message_group_id or message_group_id_jmespath, not both")
    if group_id is not None and (not isinstance(group_id, str) or not group_id):
        raise ConfigError(where / "message_group_id", "must be a non-empty string")
    if expression is None:
        return group_id, None
    try:
        return group_id, jmespath.compile(expression)
    except (jmespath.exceptions.JMESPathError, TypeError) as exc:
        raise ConfigError(where / "message_group_id_jmespath", str(exc)) from None
