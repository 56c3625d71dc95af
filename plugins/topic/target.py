"""The ``topic`` target type: SNS-style fan-out to subscriptions.

Each payload delivered to a topic is published as one SNS message (its text:
``payload_text``, as the queue target writes a body) and handed
to every subscription whose filter policy matches it. A subscription names
any target resource (a queue, a function, another topic...); it receives
SNS's JSON envelope, or with ``raw_message_delivery`` the message itself
(its attributes then travel as the delivery's message attributes). A
function receives Lambda's SNS event instead (``{"Records": [{"EventSource":
"aws:sns", ..., "Sns": {...}}]}``, signed when the runner serves HTTP), so a
handler written for AWS runs as is; SNS refuses raw delivery to one, and so
does ``check_links`` (a located config error).

Delivery to subscriptions happens inside the topic's own delivery, so it
rides on the rule's retry policy and its durable retry state: when a
subscription fails with a retryable error, the topic's delivery fails and
the bus retries it later; subscriptions already served are skipped on the
retry (the topic remembers, per message, which are done). A subscription
with its own ``dead_letter`` gets the envelope with ``ErrorCode`` and
``ErrorMessage`` attributes once it fails without retry, or after its
``maximum_retry_attempts``. Messages keep their ``MessageId`` across retries.

Settings:

- ``topic``: the topic's name (default: the resource's); a FIFO topic's
  ends in ``.fifo`` and its subscribers must be FIFO queues;
- ``subject``: SNS's Subject;
- ``message_attributes``: ``{name: JMESPath over the event}``; a string
  value becomes a ``String`` attribute, a number ``Number``, a list
  ``String.Array``; a missing value no attribute;
- ``message_group_id`` or ``message_group_id_jmespath`` (FIFO topics;
  without either, a FIFO topic takes its group from each publish, and a rule
  delivering to it fails without retry);
- ``subscriptions``: a list of ``{id, resource, filter_policy,
  filter_policy_scope, raw_message_delivery, dead_letter,
  maximum_retry_attempts}``.

The topics of one runtime share a ``TopicState`` (their type's): what the
AWS API added to them (subscriptions, attributes, tags, confirmations), by
topic name, so it survives a reload that replaces a topic declared in the
config. It is kept by a ``TopicStore`` on the runtime's state database, so
it outlives a restart and a cluster's runners share it (see ``TopicState``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import jmespath
import jmespath.exceptions

from pipelines.errors import (
    ConfigError,
    DeliveryError,
    PipelinesError,
    Problems,
    ResourceNotFoundError,
    Where,
)
from pipelines.event import DEFAULT_ACCOUNT, DEFAULT_REGION, format_time_ms
from pipelines.http.auth import is_http_url
from pipelines.settings import Flag, Number, Settings, Shape
from pipelines.targets import (
    Built,
    DeliveryContext,
    Target,
    TargetServices,
    TargetType,
    payload_text,
    started,
    underlying,
)
from plugins.function import FunctionTarget
from plugins.queue.target import delivery_key, group_id_of
from plugins.topic.endpoints import DeliveryPolicy, HttpEndpoints
from plugins.topic.filterpolicy import ATTRIBUTES_SCOPE, FilterPolicy
from plugins.topic.store import Snapshot, StoredSubscription, TopicStore

log = logging.getLogger("plugins.topic")
T = TypeVar("T")
FIFO_SUFFIX = ".fifo"
_STRING = {"type": "string"}
SUBSCRIPTION_TABLE = Settings(
    {
        "id": Shape(_STRING, "a name for the subscription"),
        "resource": Shape(_STRING, "the resource it delivers to"),
        "endpoint": Shape(_STRING, "or an http(s) URL (SNS's HTTP(S) subscriptions)"),
        "delivery_policy": Shape({"type": "object"}, "an HTTP(S) subscription's DeliveryPolicy"),
        "filter_policy": Shape({"type": "object"}, "an SNS filter policy"),
        "filter_policy_scope": Shape({"enum": ["MessageAttributes", "MessageBody"]}),
        "raw_message_delivery": Flag(False),
        "dead_letter": Shape(_STRING, "a resource name"),
        "maximum_retry_attempts": Number(None, 0, 185, integer=True),
    },
    required=("id",),
)
SETTINGS_TABLE = Settings(
    {
        "topic": Shape(_STRING, "the topic's name (default: the resource's)"),
        "subject": Shape(_STRING),
        "message_attributes": Shape(
            {
                "type": "object",
                "additionalProperties": {**_STRING, "description": "JMESPath over the event"},
            }
        ),
        "message_group_id": Shape(_STRING),
        "message_group_id_jmespath": Shape(_STRING),
        "subscriptions": Shape({"type": "array", "items": SUBSCRIPTION_TABLE.schema()}),
        "signature_version": Shape({"enum": ["1", "2"], "default": "1"}, "SNS's, for HTTP(S)"),
    },
    required=("subscriptions",),
)
# Messages whose fan-out is unfinished, remembered for their retries (the
# oldest are forgotten beyond this: their retry then serves everyone again).
REMEMBERED = 100_000
_MESSAGE_IDS = uuid.UUID("6f1c1bb6-3b0e-4d55-9a43-1c8a4de7a2f1")
_TOPIC_NAME = "[A-Za-z0-9_-]{1,256}"


def topic_arn(name: str) -> str:
    return f"arn:aws:sns:{DEFAULT_REGION}:{DEFAULT_ACCOUNT}:{name}"


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    resource: str
    policy: FilterPolicy | None
    raw: bool
    dead_letter: str | None
    maximum_retry_attempts: int | None
    #: An HTTP(S) subscription's URL (then ``resource`` is "").
    endpoint: str | None = None
    delivery_policy: DeliveryPolicy | None = None

    @property
    def protocol(self) -> str | None:
        """http or https for an HTTP(S) subscription, else None."""
        return None if self.endpoint is None else self.endpoint.split(":", 1)[0]

    @classmethod
    def parse(cls, where: Where, declared: Any) -> Subscription:
        if not isinstance(declared, Mapping):
            raise ConfigError(where, "a subscription is a mapping with 'id' and 'resource'")
        problems = Problems()
        with problems:
            SUBSCRIPTION_TABLE.check_keys(where, declared)
        sub_id = declared.get("id")
        resource = declared.get("resource")
        endpoint = declared.get("endpoint")
        if not isinstance(sub_id, str) or not sub_id:
            problems.add(ConfigError(where / "id", "is required: a name for the subscription"))
        delivery_policy = None
        if endpoint is not None:
            if resource is not None:
                problems.add(ConfigError(where / "endpoint", "give a resource or an endpoint"))
            if not isinstance(endpoint, str) or not is_http_url(endpoint):
                problems.add(
                    ConfigError(where / "endpoint", f"must be an http(s) URL, not {endpoint!r}")
                )
            resource = ""
            with problems:
                delivery_policy = DeliveryPolicy.parse(
                    where / "delivery_policy", declared.get("delivery_policy", {})
                )
        elif not isinstance(resource, str) or not resource:
            problems.add(ConfigError(where / "resource", "is required: the resource to deliver to"))
        elif "delivery_policy" in declared:
            problems.add(
                ConfigError(where / "delivery_policy", "is for HTTP(S) endpoint subscriptions")
            )
        policy = None
        with problems:
            if "filter_policy" in declared:
                scope = declared.get("filter_policy_scope", ATTRIBUTES_SCOPE)
                policy = FilterPolicy.compile(where, declared["filter_policy"], scope)
            elif "filter_policy_scope" in declared:
                raise ConfigError(where / "filter_policy_scope", "is given without a filter_policy")
        with problems:
            raw = bool(SUBSCRIPTION_TABLE.flag(where, declared, "raw_message_delivery"))
        dead_letter = declared.get("dead_letter")
        if dead_letter is not None and (not isinstance(dead_letter, str) or not dead_letter):
            problems.add(ConfigError(where / "dead_letter", "must name a resource"))
        attempts = None
        if "maximum_retry_attempts" in declared:
            with problems:
                attempts = int(SUBSCRIPTION_TABLE.number(where, declared, "maximum_retry_attempts"))
        elif delivery_policy is not None:
            attempts = delivery_policy.retries  # SNS's: the policy's retries, then the dead letter
        problems.raise_any()
        return cls(
            str(sub_id),
            str(resource),
            policy,
            raw,
            dead_letter,
            attempts,
            endpoint if isinstance(endpoint, str) else None,
            delivery_policy,
        )


@dataclass(slots=True)
class AddedSubscription:
    """A subscription made through the API: the topic's ``Subscription`` and
    how the API names it (protocol, endpoint ARN, attributes as given), with
    the settings it was parsed from as stored (``store.settings_text``)."""

    subscription: Subscription
    protocol: str
    endpoint: str
    attributes: dict[str, str] = field(default_factory=dict)
    settings: str = "{}"


#: How often (seconds, at most) a topic of a runtime on a state database
#: compares the store's change counter before a publish: what another
#: runner of a cluster changed is seen within this long.
REFRESH = 1.0


class TopicState:
    """What the API changed of a runtime's topics, by topic name: added
    subscriptions (by subscription id), topic attributes, tags, topics made
    by CreateTopic, and HTTP(S) subscriptions' confirmations.

    One per ``TopicType`` (so per runtime). It is kept by a ``TopicStore``,
    opened when the first topic starts and closed when the last stops: on
    the runtime's state database when it has one (so it outlives a restart,
    and a cluster's runners share it), else in memory (lasting while some
    topic runs, across reloads). The dictionaries here are the store as last
    loaded: every change is written to the store, then the whole is loaded
    again; before a publish, a state shared with others compares the
    store's change counter at most every ``REFRESH`` seconds (``fresh``).
    """

    def __init__(self) -> None:
        self.added: dict[str, dict[str, AddedSubscription]] = {}
        self.attributes: dict[str, dict[str, str]] = {}
        self.tags: dict[str, dict[str, str]] = {}
        #: Topics made by CreateTopic (on any runner of a cluster).
        self.made: list[str] = []
        #: HTTP(S) subscriptions' confirmations, signing and requests.
        self.http = HttpEndpoints(self)
        #: False: kept in memory even when the runtime has a state database
        #: (a one-off ``pipelines topic publish`` reaches declared subscriptions only).
        self.persisted = True
        self.store: TopicStore | None = None
        #: Whether other processes may change the store (a state database).
        self.shared = False
        self._users = 0
        self._seen: int | None = None
        self._checked = -math.inf
        self._opening = asyncio.Lock()
        self._loading = asyncio.Lock()

    # -- the store's life ------------------------------------------------------------

    async def start(self, services: TargetServices) -> None:
        """A topic starts: the first opens the store and loads it."""
        async with self._opening:
            if self.store is None:
                path = services.state_path if self.persisted else None
                if path is None:
                    store = await TopicStore.open(None, services.clock)
                else:
                    store = await services.open_store(TopicStore, where="the topics")
                try:
                    self.store, self.shared, self._seen = store, path is not None, None
                    await self.reload()
                except BaseException:
                    self.store = None
                    await store.close()
                    raise
            self._users += 1
        try:
            await self.http.start(services)
        except BaseException:
            await self._release()
            raise

    async def stop(self) -> None:
        await self.http.stop()
        await self._release()

    async def _release(self) -> None:
        async with self._opening:
            self._users -= 1
            if self._users == 0 and self.store is not None:
                store, self.store = self.store, None
                await store.close()

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[TopicStore]:
        """The store, kept open for the block even if the last topic stops
        meanwhile (DeleteTopic forgets a topic after it stopped)."""
        async with self._opening:
            store = started(self.store, "the topics")
            self._users += 1
        try:
            yield store
        finally:
            await self._release()

    # -- reading it ----------------------------------------------------------------

    async def reload(self) -> None:
        """Load everything from the store again."""
        store = started(self.store, "the topics")
        async with self._loading:
            snapshot = await store.snapshot()
            self._apply(snapshot)
            self._checked = time.monotonic()

    async def fresh(self, max_age: float = REFRESH) -> None:
        """Reload if another runner changed the store: compared at most every
        ``max_age`` seconds (0: now). A state in memory has no other writer.
        A store that cannot be read now is logged and tried again later
        (the topics go on as last loaded)."""
        if not self.shared or time.monotonic() - self._checked < max_age:
            return
        store = self.store
        if store is None:
            return
        async with self._loading:
            if time.monotonic() - self._checked < max_age:
                return  # checked meanwhile
            self._checked = time.monotonic()
            try:
                if await store.changes() == self._seen:
                    return
                self._apply(await store.snapshot())
            except Exception as error:
                log.warning("topics: reading the state database failed (%s); tried again", error)

    async def catch_up(self, version: int) -> None:
        """Reload unless what was loaded is at least ``version`` of the
        store's change counter (read just now by the caller)."""
        if self.shared and self.store is not None and (self._seen is None or self._seen < version):
            await self.reload()

    def _apply(self, snapshot: Snapshot) -> None:
        added: dict[str, dict[str, AddedSubscription]] = {}
        for row in snapshot.subscriptions:
            kept = self.added.get(row.topic, {}).get(row.id)
            if kept is None or kept.settings != row.settings or kept.endpoint != row.endpoint:
                try:
                    subscription = Subscription.parse(
                        Where(f"topic {row.topic}") / "subscription" / row.id,
                        json.loads(row.settings),
                    )
                except ConfigError as error:  # kept by a version that took it
                    log.error("topics: a stored subscription is skipped: %s", error)
                    continue
                kept = AddedSubscription(
                    subscription, row.protocol, row.endpoint, settings=row.settings
                )
            kept.attributes = row.attributes
            added.setdefault(row.topic, {})[row.id] = kept
        self.added = added
        self.attributes = snapshot.attributes
        self.tags = snapshot.tags
        self.made = snapshot.made
        self.http.confirmed = snapshot.confirmed
        self._seen = snapshot.version

    def subscriptions(self, topic: str) -> list[Subscription]:
        return [added.subscription for added in self.added.get(topic, {}).values()]

    # -- changing it (each change written, then loaded again) ----------------------------

    async def _change(self, change: Callable[[TopicStore], Awaitable[T]]) -> T:
        done = await change(started(self.store, "the topics"))
        await self.reload()
        return done

    async def create_topic(
        self, topic: str, attributes: Mapping[str, str], tags: Mapping[str, str]
    ) -> None:
        await self._change(lambda store: store.create_topic(topic, attributes, tags))

    async def forget(self, topic: str) -> None:
        """A topic deleted: what the API kept of it goes."""
        async with self.held() as store:
            await store.delete_topic(topic)
            await self.reload()

    async def set_attribute(self, topic: str, name: str, value: str) -> None:
        await self._change(lambda store: store.set_attributes(topic, {name: value}))

    async def set_tags(self, topic: str, tags: Mapping[str, str]) -> None:
        await self._change(lambda store: store.set_tags(topic, tags))

    async def untag(self, topic: str, keys: Sequence[str]) -> None:
        await self._change(lambda store: store.untag(topic, keys))

    async def subscribe(self, made: StoredSubscription) -> StoredSubscription:
        """Add ``made``; or the subscription of the same protocol and
        endpoint the store has (made meanwhile on another runner)."""
        return await self._change(lambda store: store.subscribe(made))

    async def set_subscription(
        self, topic: str, sub_id: str, attributes: Mapping[str, str], settings: str
    ) -> bool:
        return await self._change(
            lambda store: store.set_subscription(topic, sub_id, attributes, settings)
        )

    async def unsubscribe(self, topic: str, sub_id: str) -> None:
        """An added subscription goes; a declared one stays declared but must
        be confirmed again (an UnsubscribeURL was visited)."""
        await self._change(lambda store: store.unsubscribe(topic, sub_id))

    async def add_token(
        self, token: str, topic: str, topic_arn: str, sub_id: str, endpoint: str
    ) -> None:
        store = started(self.store, "the topics")
        await store.add_token(token, topic, topic_arn, sub_id, endpoint)

    async def confirm(self, topic_arn: str, token: str) -> tuple[str, str] | None:
        return await self._change(lambda store: store.confirm(topic_arn, token))

    async def next_sequence(self, topic: str) -> str:
        """A FIFO topic's next SequenceNumber (SNS's 20 digits)."""
        number = await started(self.store, "the topics").next_sequence(topic)
        return f"{number:020d}"


class TopicTarget(Target):
    concurrency = 16

    def __init__(
        self,
        name: str,
        topic: str,
        subject: str | None,
        attributes: dict[str, jmespath.parser.ParsedResult],
        group_id: str | None,
        group_expression: jmespath.parser.ParsedResult | None,
        subscriptions: list[Subscription],
        state: TopicState | None = None,
        signature_version: str = "1",
    ) -> None:
        self.name = name
        self.topic = topic
        self.arn = topic_arn(topic)
        self.subject = subject
        self.attribute_expressions = attributes
        self.group_id = group_id
        self.group_expression = group_expression
        #: The subscriptions the config declares.
        self.declared = subscriptions
        #: SNS's SignatureVersion of what it sends HTTP(S) subscriptions.
        self.signature_version = signature_version
        #: What the API added (shared by the topics of one runtime).
        self.state = state or TopicState()
        self.services: TargetServices | None = None
        #: MessageId -> subscription id -> failed attempts so far; ``None`` once served.
        self._progress: collections.OrderedDict[str, dict[str, int | None]] = (
            collections.OrderedDict()
        )

    @property
    def fifo(self) -> bool:
        return self.topic.endswith(FIFO_SUFFIX)

    @property
    def subscriptions(self) -> list[Subscription]:
        """The declared subscriptions, then those the API added."""
        added = self.state.added.get(self.topic)
        return self.declared + self.state.subscriptions(self.topic) if added else self.declared

    @property
    def serves_http(self) -> bool:  # type: ignore[override]
        """Its declared HTTP(S) subscriptions need the runner's port (the
        signing certificate, SubscribeURL)."""
        return any(s.endpoint is not None for s in self.declared)

    @property
    def version(self) -> str:
        """The SignatureVersion in force: the API's topic attribute, else the config's."""
        given = self.state.attributes.get(self.topic, {}).get("SignatureVersion")
        return given if given in ("1", "2") else self.signature_version

    def references(self) -> list[tuple[tuple[str | int, ...], str]]:
        """The resources its declared subscriptions name (the API checked its own)."""
        found: list[tuple[tuple[str | int, ...], str]] = []
        for index, subscription in enumerate(self.declared):
            if subscription.endpoint is None:
                found.append((("subscriptions", index, "resource"), subscription.resource))
            if subscription.dead_letter is not None:
                found.append((("subscriptions", index, "dead_letter"), subscription.dead_letter))
        return found

    def check_links(self, built: Built) -> None:
        """A function's subscription takes no raw message delivery (SNS refuses it)."""
        for index, subscription in enumerate(self.declared):
            if subscription.raw and subscription.endpoint is None:
                self._check_raw(index, subscription, built.resource(subscription.resource))

    def _check_raw(self, index: int, subscription: Subscription, resource: Target) -> None:
        if subscription.raw and is_function(resource):
            raise ConfigError(
                Where(f"target {self.name}") / "subscriptions" / index / "raw_message_delivery",
                f"subscription {subscription.id} delivers to the function"
                f" {subscription.resource}: SNS's lambda protocol takes no raw message"
                " delivery (a function gets Lambda's SNS event)",
            )

    async def start(self, services: TargetServices) -> None:
        await self.state.start(services)
        try:
            self._check(services)
        except BaseException:
            await self.state.stop()
            raise
        self.services = services

    def _check(self, services: TargetServices) -> None:
        """Check the declared subscriptions (the API checked those it added,
        and one whose resource a later config dropped fails its deliveries,
        not the runtime's start) and ask unconfirmed HTTP(S) ones to confirm."""
        for index, subscription in enumerate(self.declared):
            if subscription.endpoint is not None:
                if self.fifo:
                    raise PipelinesError(
                        f"topic {self.topic}: subscription {subscription.id}: a FIFO topic"
                        " delivers only to FIFO queues, not to an HTTP(S) endpoint"
                    )
                if not self.state.http.is_confirmed(
                    self.topic, subscription.id, subscription.endpoint
                ):
                    services.spawn(self.request_confirmation(subscription))
                continue
            resource = services.resource(subscription.resource)
            self._check_raw(index, subscription, resource)
            if self.fifo and not str(getattr(resource, "queue", "")).endswith(FIFO_SUFFIX):
                raise PipelinesError(
                    f"topic {self.topic}: subscription {subscription.id} delivers to"
                    f" {subscription.resource}, but a FIFO topic delivers only to FIFO queues"
                )

    async def stop(self) -> None:
        if self.services is not None:
            self.services = None
            await self.state.stop()

    async def request_confirmation(self, subscription: Subscription) -> None:
        """Ask an HTTP(S) subscription's endpoint to confirm it (in the background)."""
        assert subscription.endpoint is not None
        try:
            await self.state.http.request_confirmation(
                self.topic, self.arn, subscription.id, subscription.endpoint, self.version
            )
        except DeliveryError as error:
            log.warning("topic %s: %s", self.topic, error.message)
        except Exception as error:  # the token could not be kept: no request
            log.error("topic %s: confirming %s: %s", self.topic, subscription.id, error)

    async def deliver(self, payload: Any, context: DeliveryContext) -> Any:
        message = payload_text(payload)
        return await self.publish(message, self._attributes(context), context)

    @staticmethod
    def message_id(context: DeliveryContext) -> str:
        """The MessageId a publish in ``context`` gets (the same on its retries)."""
        return str(uuid.uuid5(_MESSAGE_IDS, delivery_key(context)))

    def matching(self, message: str, attributes: Mapping[str, Mapping[str, str]]) -> list[str]:
        """The ids of the subscriptions whose filter policy lets this message through."""
        http = self.state.http
        return [
            s.id
            for s in self.subscriptions
            if (s.policy is None or s.policy.matches(message, attributes))
            and (s.endpoint is None or http.is_confirmed(self.topic, s.id, s.endpoint))  # pending
        ]

    async def publish(
        self,
        message: str,
        attributes: dict[str, dict[str, str]],
        context: DeliveryContext,
        *,
        subject: str | None = None,
        group_id: str | None = None,
        messages: Mapping[str, str] | None = None,
    ) -> str:
        """Publish: hand the message to each matching subscription; return its MessageId.

        ``subject`` replaces the configured one; ``group_id`` is a FIFO
        topic's group for this message; ``messages`` (by subscription id)
        what a subscription gets instead of ``message`` (SNS's
        MessageStructure=json). Raises a retryable ``DeliveryError`` when a
        subscription failed and has no dead letter yet; the same ``context``
        again serves only those."""
        started(self.services, f"topic {self.topic}")
        await self.state.fresh()
        message_id = self.message_id(context)
        progress = self._progress.get(message_id)
        if progress is None:
            matched = self.matching(message, attributes)
            progress = self._progress[message_id] = dict.fromkeys(matched, 0)
            while len(self._progress) > REMEMBERED:
                self._progress.popitem(last=False)
        envelope = self._envelope(message_id, message, attributes, subject)
        if self.fifo and group_id is None:
            group_id = self._group_id(context)
        elif not self.fifo:
            group_id = None
        subscriptions = self.subscriptions
        pending = [s for s in subscriptions if progress.get(s.id) is not None]
        errors: dict[str, DeliveryError] = {}
        async with asyncio.TaskGroup() as group:
            for subscription in pending:
                extra = None
                if group_id is not None:
                    extra = _fifo_ids(group_id, f"{message_id}/{subscription.id}")
                own = messages.get(subscription.id) if messages else None
                group.create_task(
                    self._serve(
                        subscription,
                        progress,
                        errors,
                        envelope if own is None else {**envelope, "Message": own},
                        message if own is None else own,
                        attributes,
                        context,
                        extra,
                    )
                )
        failed = [s.id for s in subscriptions if progress.get(s.id) is not None]
        if not failed:
            self._progress.pop(message_id, None)
            return message_id
        # Retry only if one of them may still get through.
        retry = any(
            errors[s.id].retryable and not self._exhausted(s, progress[s.id])
            for s in subscriptions
            if s.id in failed and s.id in errors
        )
        first = errors.get(failed[0])
        if not retry:
            self._progress.pop(message_id, None)
        raise DeliveryError(
            first.code if first is not None and not retry else "SubscriptionDeliveryFailed",
            f"topic {self.topic}: subscription {failed[0]} failed"
            + (f": {first.message}" if first is not None else "")
            + ("; retried later" if retry else ""),
            retryable=retry,
            retry_after=self._next_retry(subscriptions, failed, progress) if retry else None,
        )

    @staticmethod
    def _next_retry(
        subscriptions: list[Subscription], failed: list[str], progress: dict[str, int | None]
    ) -> float | None:
        """The earliest time the failed subscriptions' delivery policies allow
        the next try (None when one of them has no policy: the rule's backoff)."""
        delays = []
        for subscription in subscriptions:
            if subscription.id not in failed:
                continue
            if subscription.delivery_policy is None:
                return None
            delays.append(subscription.delivery_policy.delay(progress[subscription.id] or 1))
        return min(delays) if delays else None

    @staticmethod
    def _exhausted(subscription: Subscription, attempts: int | None) -> bool:
        limit = subscription.maximum_retry_attempts
        return limit is not None and (attempts or 0) > limit

    async def _serve(
        self,
        subscription: Subscription,
        progress: dict[str, int | None],
        errors: dict[str, DeliveryError],
        envelope: dict[str, Any],
        message: str,
        attributes: dict[str, dict[str, str]],
        context: DeliveryContext,
        extra: dict[str, Any] | None,
    ) -> None:
        assert self.services is not None
        attempts = (progress[subscription.id] or 0) + 1
        delivered: Any = message if subscription.raw else envelope
        passed: dict[str, str] = {}
        if subscription.raw and attributes:
            passed = {name: a["Value"] for name, a in attributes.items()}
            # With their data types too, for a queue: raw delivery keeps a
            # Number a Number there, as SNS does to SQS.
            extra = {**(extra or {}), QUEUE_ATTRIBUTES: _queue_attributes(attributes)}
        sub_context = DeliveryContext(
            context.rule_name,
            f"{self.topic}/{subscription.id}",
            context.event,
            attempts,
            attributes=passed,
            extra=extra,
        )
        try:
            if subscription.endpoint is not None:
                await self.state.http.notify(
                    subscription.endpoint,
                    envelope,
                    f"{self.arn}:{subscription.id}",
                    self.version,
                    raw=message if subscription.raw else None,
                )
            else:
                try:
                    resource = self.services.resource(subscription.resource)
                except ResourceNotFoundError as missing:  # a config since changed
                    raise DeliveryError(
                        "ResourceNotFound",
                        f"subscription {subscription.id}: {missing}",
                        retryable=False,
                    ) from None
                if is_function(resource):  # Lambda's SNS event, never raw (refused)
                    delivered = await self._lambda_event(subscription, envelope)
                await resource.deliver(delivered, sub_context)
        except Exception as exc:
            error = (
                exc
                if isinstance(exc, DeliveryError)
                else DeliveryError(type(exc).__name__, str(exc), retryable=True)
            )
            errors[subscription.id] = error
            exhausted = self._exhausted(subscription, attempts)
            progress[subscription.id] = attempts
            if subscription.dead_letter is not None and (not error.retryable or exhausted):
                try:
                    await self._dead_letter(subscription, envelope, error, sub_context)
                except Exception as dead_error:  # the bus retries the topic's delivery
                    log.error(
                        "topic %s: dead-letter %s of subscription %s failed: %s",
                        self.topic,
                        subscription.dead_letter,
                        subscription.id,
                        dead_error,
                    )
                else:
                    progress[subscription.id] = None
            return
        progress[subscription.id] = None

    async def _lambda_event(
        self, subscription: Subscription, envelope: Mapping[str, Any]
    ) -> dict[str, Any]:
        """What Lambda hands a function subscribed to a topic: one record
        holding the notification, signed as an HTTP(S) one is when the
        runner serves HTTP (else its Signature and URLs are empty)."""
        subscription_arn = f"{self.arn}:{subscription.id}"
        signed = await self.state.http.lambda_fields(envelope, subscription_arn, self.version)
        notification = {
            "Type": "Notification",
            "MessageId": envelope["MessageId"],
            "TopicArn": envelope["TopicArn"],
            "Subject": envelope.get("Subject"),
            "Message": envelope["Message"],
            "Timestamp": envelope["Timestamp"],
            "SignatureVersion": self.version,
            "Signature": signed.signature,
            "SigningCertUrl": signed.signing_cert_url,
            "UnsubscribeUrl": signed.unsubscribe_url,
            "MessageAttributes": envelope.get("MessageAttributes") or {},
        }
        record = {
            "EventSource": "aws:sns",
            "EventVersion": "1.0",
            "EventSubscriptionArn": subscription_arn,
            "Sns": notification,
        }
        return {"Records": [record]}

    async def _dead_letter(
        self,
        subscription: Subscription,
        envelope: dict[str, Any],
        error: DeliveryError,
        context: DeliveryContext,
    ) -> None:
        assert self.services is not None and subscription.dead_letter is not None
        attributes = {
            "ErrorCode": error.code,
            "ErrorMessage": error.message or error.code,
            "TopicArn": self.arn,
            "SubscriptionId": subscription.id,
        }
        extra = None
        if "MessageGroupId" in context.extra:  # a FIFO topic's: a FIFO queue keeps each one
            key = f"{envelope['MessageId']}/{subscription.id}/dead-letter"
            extra = _fifo_ids(context.extra["MessageGroupId"], key)
        dead = DeliveryContext(
            context.rule_name,
            context.target_id,
            context.event,
            1,
            attributes=attributes,
            extra=extra,
        )
        # A failing dead-letter resource fails this delivery: the bus retries it.
        await self.services.resource(subscription.dead_letter).deliver(envelope, dead)

    def _attributes(self, context: DeliveryContext) -> dict[str, dict[str, str]]:
        attributes: dict[str, dict[str, str]] = {}
        for name, expression in self.attribute_expressions.items():
            value = expression.search(context.event)
            typed = message_attribute(value)
            if typed is not None:
                attributes[name] = typed
        for name, value in context.attributes.items():  # a dead letter's error attributes
            attributes[name] = {"Type": "String", "Value": str(value)}
        return attributes

    def _envelope(
        self,
        message_id: str,
        message: str,
        attributes: dict[str, dict[str, str]],
        subject: str | None = None,
    ) -> dict[str, Any]:
        assert self.services is not None
        envelope: dict[str, Any] = {
            "Type": "Notification",
            "MessageId": message_id,
            "TopicArn": self.arn,
        }
        subject = subject if subject is not None else self.subject
        if subject is not None:
            envelope["Subject"] = subject
        envelope["Message"] = message
        envelope["Timestamp"] = format_time_ms(self.services.clock.time())
        if attributes:
            envelope["MessageAttributes"] = attributes
        return envelope

    def _group_id(self, context: DeliveryContext) -> str:
        if self.group_expression is None:
            if self.group_id is None:
                raise DeliveryError(
                    "MissingMessageGroupId",
                    f"FIFO topic {self.topic} has no message_group_id: a rule delivering to"
                    " it needs one in the topic's settings (a publish gives its own)",
                    retryable=False,
                )
            return self.group_id
        return group_id_of(self.group_expression, context.event)


def is_function(resource: Target) -> bool:
    """Whether a subscription's resource is a function (under a recording
    wrapper too): it gets Lambda's SNS event."""
    return isinstance(underlying(resource), FunctionTarget)


#: ``DeliveryContext.extra``'s key for a raw delivery's message attributes in
#: SQS's shape (``{"DataType", "StringValue" | "BinaryValue"}``).
QUEUE_ATTRIBUTES = "MessageAttributes"


def _queue_attributes(attributes: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """SNS message attributes (``{"Type", "Value"}``, binary values in base64)
    as SQS's: the data type kept, custom suffix and all."""
    shaped: dict[str, dict[str, str]] = {}
    for name, attribute in attributes.items():
        kind = attribute.get("Type", "String")
        key = "BinaryValue" if kind.startswith("Binary") else "StringValue"
        shaped[name] = {"DataType": kind, key: attribute["Value"]}
    return shaped


def _fifo_ids(group_id: str, key: str) -> dict[str, str]:
    """A FIFO delivery's group id, and a deduplication id that stays the same
    when the bus retries it."""
    dedup = hashlib.sha256(key.encode()).hexdigest()
    return {"MessageGroupId": group_id, "MessageDeduplicationId": dedup}


def message_attribute(value: Any) -> dict[str, str] | None:
    """An SNS message attribute (``{"Type", "Value"}``) for a JSON value; None
    for a value SNS would not carry (null, an empty string)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return {"Type": "String", "Value": "true" if value else "false"}
    if isinstance(value, int | float):
        return {"Type": "Number", "Value": json.dumps(value)}
    if isinstance(value, list):
        return {"Type": "String.Array", "Value": json.dumps(value)}
    if isinstance(value, str):
        return {"Type": "String", "Value": value} if value else None
    return {"Type": "String", "Value": json.dumps(value)}


class TopicType(TargetType):
    arn_template = "arn:aws:sns:{region}:{account}:{name}"
    name = "topic"
    description = "SNS-style fan-out: subscriptions with filter policies, raw or enveloped"
    settings = SETTINGS_TABLE

    def __init__(self) -> None:
        #: What the API changed of this type's topics (one type per runtime).
        self.state = TopicState()

    def create(self, name: str, config: Mapping[str, Any]) -> TopicTarget:
        where = Where(f"target {name}")
        problems = Problems()
        with problems:
            SETTINGS_TABLE.check_keys(where, config)
        topic = config.get("topic", name)
        stem = (
            topic[: -len(FIFO_SUFFIX)]
            if isinstance(topic, str) and topic.endswith(FIFO_SUFFIX)
            else topic
        )
        if not isinstance(stem, str) or not re.fullmatch(_TOPIC_NAME, stem):
            problems.add(
                ConfigError(
                    where / "topic",
                    f"topic name {topic!r}: letters, digits, '-' and '_' (and .fifo)",
                )
            )
            topic = name
        subject = config.get("subject")
        if subject is not None and not isinstance(subject, str):
            problems.add(ConfigError(where / "subject", "must be a string"))
        with problems:
            expressions = _attribute_expressions(where, config)
        with problems:
            group_id, group_expression = _group(where, topic, config)
        subscriptions: list[Subscription] = []
        declared = config.get("subscriptions")
        if not isinstance(declared, list):
            problems.add(
                ConfigError(where / "subscriptions", "is required: a list of subscriptions")
            )
            declared = []
        for index, item in enumerate(declared):
            with problems:
                subscriptions.append(Subscription.parse(where / "subscriptions" / index, item))
        signature_version = str(config.get("signature_version", "1"))
        if signature_version not in ("1", "2"):
            problems.add(ConfigError(where / "signature_version", "must be 1 or 2"))
        ids = [s.id for s in subscriptions]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            problems.add(
                ConfigError(where / "subscriptions", f"id {duplicates[0]!r} is given twice")
            )
        problems.raise_any()
        return TopicTarget(
            name,
            topic,
            subject,
            expressions,
            group_id,
            group_expression,
            subscriptions,
            self.state,
            signature_version,
        )


def _attribute_expressions(
    where: Where, config: Mapping[str, Any]
) -> dict[str, jmespath.parser.ParsedResult]:
    """``message_attributes``: each attribute's JMESPath over the event."""
    declared = config.get("message_attributes") or {}
    if not isinstance(declared, Mapping):
        raise ConfigError(where / "message_attributes", "must map names to JMESPath")
    problems = Problems()
    expressions = {}
    for attribute, text in declared.items():
        with problems:
            expressions[str(attribute)] = _compile(where / "message_attributes" / attribute, text)
    problems.raise_any()
    return expressions


def _group(
    where: Where, topic: str, config: Mapping[str, Any]
) -> tuple[str | None, jmespath.parser.ParsedResult | None]:
    """A FIFO topic's fixed message group id, or its JMESPath expression."""
    group_id = config.get("message_group_id")
    group_text = config.get("message_group_id_jmespath")
    fifo = topic.endswith(FIFO_SUFFIX)
    if not fifo and (group_id is not None or group_text is not None):
        raise ConfigError(where, "message_group_id is for FIFO topics (names ending .fifo)")
    if group_id is not None and group_text is not None:
        raise ConfigError(where, "give message_group_id or message_group_id_jmespath, not both")
    if group_text is None:
        return group_id, None
    return group_id, _compile(where / "message_group_id_jmespath", group_text)


def _compile(where: Where, text: Any) -> jmespath.parser.ParsedResult:
    if not isinstance(text, str):
        raise ConfigError(where, "must be a JMESPath expression")
    try:
        return jmespath.compile(text)
    except jmespath.exceptions.JMESPathError as exc:
        raise ConfigError(where, str(exc)) from None
