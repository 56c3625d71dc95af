"""The ``mqtt`` resource: publishes what a rule delivers (a target) and turns
subscribed messages into events (a source), over one connection to a broker.

See docs/mqtt.md for the settings. Why one resource for both: they share the
broker settings and the connection, and a resource's lifecycle (start, reload,
stop) is what both need.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import random
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gmqtt.mqtt.handler import MQTTConnectError

from pipelines.errors import (
    ConfigError,
    DeliveryError,
    NotRunningError,
    PipelinesError,
    Problems,
    Where,
)
from pipelines.event import dump_json
from pipelines.policy import ACCOUNT_SETTING, Caller, source_caller
from pipelines.settings import Flag, Number, Settings, Shape
from pipelines.targets import (
    DeliveryContext,
    Done,
    Gauge,
    Target,
    TargetServices,
    TargetType,
    awaitable_done,
)

from .acks import InOrderAcks
from .broker import BROKER_SCHEMA, Broker, client_id_for, parse_broker
from .connection import (
    Connection,
    ConnectionLost,
    MqttFailure,
    PublishRefused,
    SubscriptionRefused,
)
from .messages import Received, TopicTemplate, entries_of, event_entry, topic_matches

log = logging.getLogger("plugins.mqtt")

_TEXT = {"type": "string"}
_QOS = Shape({"enum": [0, 1, 2], "default": 1})
SUBSCRIPTION_TABLE = Settings(
    {
        "topic": Shape(_TEXT, "a topic filter (+ and # wildcards)"),
        "qos": _QOS,
        "bus": Shape({**_TEXT, "default": "default"}),
        "source": Shape({**_TEXT, "default": "mqtt"}),
        "detail_type": Shape({**_TEXT, "default": "MQTT Message"}),
        "format": Shape({"enum": ["event", "entries"], "default": "event"}),
        "shared": Flag(True, "in a cluster: shared with the group's other runners"),
    },
    required=("topic",),
)
SETTINGS_TABLE = Settings(
    {
        "broker": Shape(BROKER_SCHEMA),
        "topic": Shape(_TEXT, "Topic to publish to; <detail.x> takes a value from the event."),
        "qos": _QOS,
        "retain": Flag(False),
        "user_properties": Shape({"type": "object", "additionalProperties": _TEXT}),
        "subscribe": Shape(
            {"type": "array", "items": {"oneOf": [_TEXT, SUBSCRIPTION_TABLE.schema()]}}
        ),
        "ack": Shape({"enum": ["delivered", "accepted"], "default": "delivered"}),
        "metadata_key": Shape({"type": ["string", "null"], "default": "mqtt"}),
        "concurrency": Number(32, 1, 1000, integer=True),
        "account": ACCOUNT_SETTING,
    }
)
SETTINGS = SETTINGS_TABLE.names
SUBSCRIPTION_KEYS = SUBSCRIPTION_TABLE.names
_REJECTED = (
    "Entries of messages acknowledged without an event since the start: the bus refused"
    " their entry (a bus policy, an invalid event, a schema)."
)
BATCH = 1000  # messages put on the bus in one put_events call, at most
_TOPICS_KEPT = 4096  # topics whose subscription is remembered (``_subscription``)
#: CONNACK reason codes of a refused login (MQTT 5: bad user name or password,
#: not authorized, bad authentication method).
LOGIN_REFUSED = {0x86, 0x87, 0x8C}


#: Per runtime, the started mqtt resource of each name (see ``MqttTarget.start``).
_holders: weakref.WeakKeyDictionary[TargetServices, dict[str, MqttTarget]] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True)
class Subscription:
    topic: str
    qos: int = 1
    bus: str = "default"
    source: str = "mqtt"
    detail_type: str = "MQTT Message"
    format: str = "event"  # or "entries": the payload is a PutEvents entry (or a list)
    shared: bool = True  # in a cluster: $share/GROUP/topic

    def filter(self, group: str | None) -> str:
        return f"$share/{group}/{self.topic}" if group and self.shared else self.topic


def _qos(where: Where, config: Mapping[str, Any], default: int = 1) -> int:
    value = config.get("qos", default)
    if value not in (0, 1, 2) or isinstance(value, bool):
        raise ConfigError(where / "qos", f"must be 0, 1 or 2, not {value!r}")
    return int(value)


def _string(where: Where, config: Mapping[str, Any], key: str, default: str) -> str:
    value = config.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(where / key, f"must be a non-empty string, not {value!r}")
    return value


def parse_subscription(where: Where, config: Any) -> Subscription:
    if isinstance(config, str):
        config = {"topic": config}
    if not isinstance(config, Mapping):
        raise ConfigError(where, "must be a topic filter or a mapping with topic, qos, ...")
    problems = Problems()
    with problems:
        SUBSCRIPTION_TABLE.check_keys(where, config)
    with problems:
        topic = _string(where, config, "topic", "")
        if topic.startswith("$share/"):
            raise ConfigError(
                where / "topic",
                "give the plain filter: a cluster section shares it ($share/GROUP/)",
            )
    form = config.get("format", "event")
    if form not in ("event", "entries"):
        problems.add(ConfigError(where / "format", f"must be event or entries, not {form!r}"))
    with problems:
        shared = bool(SUBSCRIPTION_TABLE.flag(where, config, "shared"))
    with problems:
        qos = _qos(where, config)
    texts: dict[str, str] = {}
    for key, default in (("bus", "default"), ("source", "mqtt"), ("detail_type", "MQTT Message")):
        with problems:
            texts[key] = _string(where, config, key, default)
    problems.raise_any()
    return Subscription(
        topic=topic,
        qos=qos,
        bus=texts["bus"],
        source=texts["source"],
        detail_type=texts["detail_type"],
        format=form,
        shared=shared,
    )


class MqttTarget(Target):
    def __init__(
        self,
        name: str,
        broker: Broker,
        topic: TopicTemplate | None,
        qos: int,
        retain: bool,
        user_properties: Mapping[str, str],
        subscriptions: list[Subscription],
        ack: str,
        metadata_key: str | None,
        concurrency: int,
        caller: Caller | None = None,
    ) -> None:
        self.name = name
        #: Who its subscriptions put events as (bus permissions; None: the runner).
        self.caller = caller
        self.broker = broker
        self.topic = topic
        self.qos = qos
        self.retain = retain
        self.user_properties = dict(user_properties)
        self.subscriptions = subscriptions
        self.ack = ack
        self.metadata_key = metadata_key
        self.concurrency = concurrency
        self.where = f"target {name}"
        self.client: Connection | None = None  # while connected
        self.connections = 0  # how many times it connected (a reconnect counts)
        self.received = 0
        #: Messages acknowledged without an event: the bus refused their
        #: entry (AccessDeniedException, an invalid event...), by error code.
        self.rejected: collections.Counter[str] = collections.Counter()
        self._services: TargetServices | None = None
        self._client_id = ""
        self._clean = True
        #: QoS 1/2 messages wait in the broker's session until acknowledged
        #: (see ``_session_kept``): put as ``held``, with no intake row.
        self._holds = False
        self._task: asyncio.Task[None] | None = None
        #: Per topic seen, the subscription its messages came through
        self._by_topic: dict[str, Subscription] = {}
        #: MQTT 5 properties of every PUBLISH (gmqtt packs them by name)
        self._properties: dict[str, Any] = {}
        if self.user_properties:
            self._properties["user_property"] = list(self.user_properties.items())

    # -- lifecycle ------------------------------------------------------------

    async def start(self, services: TargetServices) -> None:
        self._services = services
        self._client_id, self._clean = client_id_for(
            self.broker, self.name, services.state_path, services.runner
        )
        self._holds = self._session_kept(services)
        # A replacement (a reload) starts while its predecessor still runs.
        # Both would use one client id, and the broker keeps one connection per
        # id, kicking the other: so the predecessor lets go first, and takes
        # its connection back if this one fails to start.
        holders = _holders.setdefault(services, {})
        predecessor = holders.get(self.name)
        if predecessor is not None and predecessor is not self:
            await predecessor._release()
        try:
            await self._connect()
        except BaseException:
            if predecessor is not None and predecessor is not self:
                predecessor._resume()
            raise
        holders[self.name] = self

    async def _connect(self) -> None:
        assert self._services is not None
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = self._services.spawn(self._connection(first))
        try:
            await first  # the broker must be reachable at start: a clear error if not
        except (MqttFailure, MQTTConnectError, OSError, ValueError) as exc:
            await self._release()
            raise PipelinesError(f"{self.where}: {self._start_failure(exc)}") from None

    async def _release(self) -> None:
        """End the connection (the resource stays, and its deliveries fail as
        retryable until it stops)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _resume(self) -> None:
        """Connect again after ``_release``, in the background, as after a lost connection."""
        assert self._services is not None
        connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        connected.set_result(None)  # not a first connection: failures are retried
        self._task = self._services.spawn(self._connection(connected))

    def _start_failure(self, exc: BaseException) -> str:
        """What went wrong at start, and where to look."""
        at = f"the MQTT broker at {self.broker.address}"
        if isinstance(exc, SubscriptionRefused):
            return f"{at} {exc}; check the broker's ACL for this user and client id"
        code = _connack_code(exc)
        if code in LOGIN_REFUSED:
            return (
                f"{at} refused the login ({exc});"
                " check broker.username and broker.password, and the broker's users"
            )
        if code is not None:
            return f"{at} refused the connection ({exc}); see the broker's log"
        what = str(exc)
        if isinstance(exc, TimeoutError):
            what = f"no CONNACK within {self.broker.connect_timeout:g} s"
        return (
            f"cannot connect to {at}: {what};"
            " check that it runs and that broker.host, broker.port and broker.tls are right"
        )

    def _session_kept(self, services: TargetServices) -> bool:
        """Whether a message acknowledged only once delivered (``ack:
        delivered``) comes back if this runner stops or dies first: its
        session outlives the connection (not a clean start, an expiry) and
        the next start resumes it (the client id is set, or derived from a
        state file; a cluster runner's default name changes at each start,
        and its intake rows are what another runner adopts)."""
        if self.ack != "delivered" or self._clean or not self.broker.session_expiry:
            return False
        return self.broker.client_id is not None or services.runner is None

    async def stop(self) -> None:
        await self._release()
        holders = _holders.get(self._services, {}) if self._services is not None else {}
        if holders.get(self.name) is self:
            del holders[self.name]

    async def _connection(self, first: asyncio.Future[None]) -> None:
        """Connect, subscribe, consume; on a lost connection, back off and again."""
        delay = self.broker.reconnect_initial
        while True:
            try:
                await self._connected_once(first)
                delay = self.broker.reconnect_initial
            except BaseException as exc:
                if not first.done():
                    first.set_exception(exc)  # start() reports it
                    return
                if not isinstance(exc, MqttFailure | MQTTConnectError | OSError):
                    raise
                log.warning(
                    "%s: connection to %s lost (%s); reconnecting in %.1f s",
                    self.where,
                    self.broker.address,
                    exc,
                    delay,
                )
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self.broker.reconnect_maximum)

    async def _connected_once(self, first: asyncio.Future[None]) -> None:
        """One connection, from CONNACK until it ends (it always ends in an error)."""
        connection = await asyncio.wait_for(
            self.broker.connect(
                self._client_id,
                self._clean,
                first=self.connections == 0,
                acknowledges=any(subscription.qos for subscription in self.subscriptions),
            ),
            self.broker.connect_timeout * 2,  # the socket and CONNACK have their own limit
        )
        try:
            self.connections += 1
            await self._subscribe(connection)
            self.client = connection
            if not first.done():
                first.set_result(None)
            if self.connections > 1:
                log.info("%s: reconnected to %s", self.where, self.broker.address)
            await self._consume(connection)
        finally:
            self.client = None
            await connection.close()

    async def _subscribe(self, connection: Connection) -> None:
        for subscription in self.subscriptions:
            topic = subscription.filter(self._group())
            await connection.subscribe_checked(topic, subscription.qos, self.broker.connect_timeout)

    def _group(self) -> str | None:
        return self._services.cluster_group if self._services is not None else None

    # -- the source side ------------------------------------------------------

    async def _consume(self, connection: Connection) -> None:
        """Take what arrived, a batch per wake-up, until the connection ends.

        Two puts may be under way: once a put's events are taken into the
        bus (``put_events``' ``accepted``), in order, the next batch is put
        while the first waits for the durable intake's commit. So the
        commit's wait overlaps the next batch's work, and the order of the
        messages on the bus stays the order they came in."""
        under_way: collections.deque[asyncio.Task[None]] = collections.deque()
        try:
            while True:
                await connection.wake.wait()
                connection.wake.clear()
                if connection.lost.is_set():
                    raise ConnectionLost("disconnected")
                while batch := connection.take(BATCH):
                    try:
                        await self._put_next(connection.acks, batch, under_way)
                    except NotRunningError:
                        # The runtime is stopping: what was not acknowledged stays
                        # with the broker, which hands it out again (to our session,
                        # or to the group once our session ends).
                        await connection.lost.wait()
                        raise ConnectionLost("stopping") from None
        finally:
            for task in under_way:
                task.cancel()
            await asyncio.gather(*under_way, return_exceptions=True)

    async def _put_next(
        self,
        acks: InOrderAcks[Any],
        batch: list[tuple[Received, int | None]],
        under_way: collections.deque[asyncio.Task[None]],
    ) -> None:
        """Start the put of ``batch`` and return once its events are on the
        bus, with at most one put before it still under way (waiting for its
        commit). A put's failure is raised here, in order."""
        taken: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_bus(*_: object) -> None:
            if not taken.done():
                taken.set_result(None)

        task = asyncio.create_task(self._put(acks, batch, on_bus))
        task.add_done_callback(on_bus)  # ended before it took its events in: a failure
        under_way.append(task)
        await taken
        while under_way and (len(under_way) > 1 or under_way[0].done()):
            await under_way.popleft()

    def _subscription(self, topic: str) -> Subscription:
        """The subscription a message came through. With one, every message
        did; with several, the first whose filter takes the topic, found once
        per topic (a source sees few topics, each many times)."""
        subscriptions = self.subscriptions
        if len(subscriptions) == 1:
            return subscriptions[0]
        found = self._by_topic.get(topic)
        if found is None:
            found = next(
                (each for each in subscriptions if topic_matches(each.topic, topic)),
                subscriptions[0],
            )
            if len(self._by_topic) >= _TOPICS_KEPT:  # many topics: start again
                self._by_topic.clear()
            self._by_topic[topic] = found
        return found

    def _entries(self, received: Received) -> list[Any]:
        """The PutEvents entries one message makes (none, one, or several)."""
        subscription = self._subscription(received.topic)
        if subscription.format == "entries":
            return entries_of(received, subscription.bus)
        return [
            event_entry(
                received,
                subscription.source,
                subscription.detail_type,
                subscription.bus,
                self.metadata_key,
            )
        ]

    async def _put(
        self,
        acks: InOrderAcks[Any],
        batch: list[tuple[Received, int | None]],
        on_bus: Callable[[], None] | None = None,
    ) -> None:
        """One put_events call for a batch of messages; each QoS 1/2 message
        is acknowledged (in arrival order, through ``acks``) once all its
        entries are safe. QoS 0 messages have no ticket: nothing to
        acknowledge. ``on_bus``: put_events' ``accepted``."""
        assert self._services is not None
        entries: list[Any] = []
        tickets: list[int | None] = []  # per entry, the ticket of the message it came from
        owners: list[Received] = []  # per entry, that message
        #: per ticket of a message that made several entries, those not yet
        #: safe (a message that made one is safe with its entry)
        pending: dict[int, int] = {}
        for message, ticket in batch:
            made = self._entries(message)
            if len(made) == 1:  # the usual case: no count to keep
                entries.append(made[0])
                tickets.append(ticket)
                owners.append(message)
                continue
            if ticket is not None:
                if made:
                    pending[ticket] = len(made)
                else:
                    acks.settle(ticket)  # nothing to wait for
            entries += made
            tickets += [ticket] * len(made)
            owners += [message] * len(made)
        self.received += len(batch)

        def safe(index: int) -> None:
            ticket = tickets[index]
            if ticket is None:
                return
            if pending:
                left = pending.get(ticket)
                if left is not None and left > 1:
                    pending[ticket] = left - 1
                    return
            acks.settle(ticket)

        delivered = self.ack == "delivered"
        # A batch with nothing to acknowledge (QoS 0) asks for no settlement:
        # the bus then keeps no producer's callback per event.
        waits = delivered and tickets.count(None) < len(tickets)
        held: Collection[int] = ()
        if waits and self._holds:
            # Each QoS 1/2 message stays the broker's until acknowledged, so a
            # crash loses none: no intake row for them (QoS 0 ones get theirs).
            held = range(len(tickets)) if None not in tickets else _ticketed(tickets)
        result = await self._services.put_events(
            entries,
            settled=safe if waits else None,
            caller=self.caller,
            accepted=on_bus,
            held=held,
        )
        refused: dict[str, list[tuple[str, str]]] = {}
        for index, outcome in enumerate(result["Entries"]):
            code = outcome.get("ErrorCode")
            if code == "InternalFailure":
                # Not accepted for now (stopping, a failed write): unacknowledged,
                # it comes back when the session resumes.
                ticket = tickets[index]
                if ticket is not None:
                    acks.drop(ticket)
                continue
            if code is not None:
                # It can never be accepted (invalid, a bus policy refuses its
                # account, a schema): acknowledge it, or the broker would send
                # it again for ever; count it and say so.
                refused.setdefault(code, []).append((owners[index].topic, outcome["ErrorMessage"]))
                safe(index)
            elif not delivered:
                safe(index)
        for code, entries_refused in refused.items():
            self.rejected[code] += len(entries_refused)
            self._log_refused(code, entries_refused)

    def _log_refused(self, code: str, refused: list[tuple[str, str]]) -> None:
        """One line per error code per batch: a flood of refused messages
        (a device whose account a policy refuses) is not a line each."""
        topic, message = refused[0]
        if len(refused) == 1:
            log.error("%s: message on %s rejected: %s: %s", self.where, topic, code, message)
        else:
            log.error(
                "%s: %d messages rejected: %s (the first on %s: %s)",
                self.where,
                len(refused),
                code,
                topic,
                message,
            )

    async def gauges(self) -> Sequence[Gauge]:
        """The messages refused since the start, by error code."""
        return [
            Gauge("mqtt_entries_rejected", count, {"code": code}, _REJECTED)
            for code, count in sorted(self.rejected.items())
        ]

    # -- the target side ------------------------------------------------------

    async def deliver(self, payload: Any, context: DeliveryContext) -> Any:
        through, done = awaitable_done()
        topic = self._send(payload, context, done)
        await through
        return topic

    def deliver_nowait(self, payload: Any, context: DeliveryContext, done: Done) -> None:
        """The bus's way (``Target.deliver_nowait``): the PUBLISH goes out now, or
        waits in the connection for a packet id; ``done`` is told at its
        PUBACK (at QoS 0 at once), so a rule target's publishes follow each
        other with no task waiting for each."""
        self._send(payload, context, done)

    def _send(self, payload: Any, context: DeliveryContext, done: Done) -> str:
        if self.topic is None:
            raise DeliveryError(
                "NotPublishing", f"{self.where} has no topic to publish to", retryable=False
            )
        topic = self.topic.render(context.event)
        connection = self.client
        if connection is None:
            raise DeliveryError(
                "BrokerUnavailable",
                f"not connected to {self.broker.address} (reconnecting)",
                retryable=True,
            )
        body = payload if isinstance(payload, str | bytes) else dump_json(payload)
        published = functools.partial(self._published, topic, done)
        try:
            connection.publish(topic, body, self.qos, self.retain, self._properties, published)
        except ConnectionLost as exc:
            raise self._publish_error(topic, exc) from None
        return topic

    def _published(self, topic: str, done: Done, error: BaseException | None) -> None:
        """The connection's word on a publish, as a delivery's outcome."""
        done(None if error is None else self._publish_error(topic, error))

    def _publish_error(self, topic: str, exc: BaseException) -> DeliveryError:
        if isinstance(exc, ConnectionLost):
            message = f"publish to {topic}: {exc} ({self.broker.address}, reconnecting)"
            return DeliveryError("BrokerUnavailable", message, retryable=True)
        if isinstance(exc, PublishRefused):
            message = f"publish to {topic}: {exc}"
            return DeliveryError("PublishRefused", message, retryable=exc.retryable)
        return DeliveryError("BrokerError", f"publish to {topic}: {exc}", retryable=True)


def _ticketed(tickets: list[int | None]) -> frozenset[int]:
    """The places of the entries that came from a QoS 1/2 message."""
    return frozenset(index for index, ticket in enumerate(tickets) if ticket is not None)


def _connack_code(exc: BaseException) -> int | None:
    """The CONNACK reason code of a refused connection (gmqtt words it only)."""
    if not isinstance(exc, MQTTConnectError):
        return None
    for code, text in MQTTConnectError.__messages__.items():
        if text == exc.message:
            return int(code)
    return 0x80


class MqttType(TargetType):
    name = "mqtt"
    description = "Publish to and subscribe from an MQTT broker (MQTT 5, gmqtt)"
    settings = SETTINGS_TABLE

    def create(self, name: str, config: Mapping[str, Any]) -> MqttTarget:
        where = Where(f"target {name}")
        problems = Problems()
        with problems:
            SETTINGS_TABLE.check_keys(where, config)
        with problems:
            broker = parse_broker(where / "broker", config.get("broker"))
        declared = config.get("subscribe") or []
        if not isinstance(declared, list):
            problems.add(ConfigError(where / "subscribe", "must be a list of topic filters"))
            declared = []
        subscriptions = []
        for index, item in enumerate(declared):
            with problems:
                subscriptions.append(parse_subscription(where / "subscribe" / index, item))
        topic = None
        if "topic" in config:
            with problems:
                topic = TopicTemplate.parse(where / "topic", config["topic"])
        elif not declared:
            problems.add(ConfigError(where, "give a topic to publish to, or subscribe, or both"))
        with problems:
            retain = bool(SETTINGS_TABLE.flag(where, config, "retain"))
        properties = config.get("user_properties") or {}
        if not isinstance(properties, Mapping) or not all(
            isinstance(v, str) for v in properties.values()
        ):
            problems.add(ConfigError(where / "user_properties", "must map names to string values"))
        ack = config.get("ack", "delivered")
        if ack not in ("delivered", "accepted"):
            problems.add(ConfigError(where / "ack", f"must be delivered or accepted, not {ack!r}"))
        metadata_key = config.get("metadata_key", "mqtt")
        if metadata_key is not None and not isinstance(metadata_key, str):
            problems.add(ConfigError(where / "metadata_key", "must be a string, or null for none"))
        with problems:
            concurrency = SETTINGS_TABLE.number(where, config, "concurrency")
        with problems:
            qos = _qos(where, config)
        caller = None
        with problems:
            caller = source_caller(where, config)
        problems.raise_any()
        return MqttTarget(
            name,
            broker,
            topic,
            qos,
            retain,
            {str(k): v for k, v in properties.items()},
            subscriptions,
            ack,
            metadata_key,
            int(concurrency),
            caller,
        )
