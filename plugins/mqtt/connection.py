"""One connection to an MQTT broker, over gmqtt (an asyncio Protocol client,
MQTT 5).

A ``Connection`` lives as long as its network connection: the resource makes
a new one after a loss (its own backoff, its own resubscription), so
everything that belongs to a connection (acknowledgements owed, publishes
awaiting PUBACK, packet ids) ends with it and never leaks onto the next.

What gmqtt offers and how it is used here:

- **Withheld acknowledgements.** With ``optimistic_acknowledgement=False``
  gmqtt runs an ``async`` ``on_message`` as a task and sends the PUBACK (QoS
  1) or PUBREC (QoS 2) when that task returns (gmqtt/mqtt/handler.py). Each
  QoS 1/2 message's task waits here on a future that ``InOrderAcks`` resolves
  once the message is safe, in arrival order.
- **PUBACK of a publish.** gmqtt keeps each QoS 1/2 PUBLISH in its
  ``persistent_storage`` until the PUBACK (or PUBCOMP) and removes it then:
  ``_Outbound`` is that storage, with a future per packet id.
- **Publishes in flight.** gmqtt takes packet ids up to the broker's Receive
  Maximum and raises ``OverflowError`` past it: a publish that meets it waits
  for the next PUBACK and tries again, so the broker's window bounds what is
  in flight.
- **Messages in flight.** The Receive Maximum sent in CONNECT asks the broker
  to hold back QoS 1/2 messages past that many unacknowledged; Mosquitto 2.0.11
  sends past it once PUBACKs flow (measured: each PUBACK lets a whole window
  more come). So ``take`` also keeps to it: messages past the window wait in
  ``inbox``, not on the bus, and what a crash delivers twice stays about a
  window (Mosquitto issue 2301 reports the same from a v5 bridge).
- **Reconnecting** is gmqtt's by default (a fixed delay, the same client id):
  ``reconnect`` is overridden to only report the loss, so two clients never
  fight over one client id.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import SubAckReasonCode
from gmqtt.storage import PersistentStorage

from .acks import InOrderAcks
from .messages import Received

log = logging.getLogger("plugins.mqtt")


class MqttFailure(Exception):
    """The connection failed or ended: retried with backoff by the resource."""


class ConnectionLost(MqttFailure):
    pass


class SubscriptionRefused(MqttFailure):
    """SUBACK refused a topic filter (an ACL, $share unsupported)."""


class _Outbound(PersistentStorage):  # type: ignore[misc]
    """gmqtt's store of QoS 1/2 publishes awaiting PUBACK, telling who waits."""

    def __init__(self) -> None:
        super().__init__()
        self.done: dict[int, asyncio.Future[None]] = {}  # per packet id in flight
        self.latest: asyncio.Future[None] | None = None  # of the publish just sent
        self._slots: deque[asyncio.Future[None]] = deque()  # publishes waiting for an id
        #: publishes in flight when gmqtt first ran out of packet ids (the
        #: broker's Receive Maximum, which gmqtt does not tell): past it a
        #: publish waits before building its packet, not after
        self.limit: int | None = None

    def push_message(self, mid: int, raw_package: bytes) -> None:
        super().push_message(mid, raw_package)
        if mid not in self.done:  # not QoS 2's PUBREL taking its PUBLISH's place
            self.latest = self.done[mid] = asyncio.get_running_loop().create_future()

    def remove_message_by_mid(self, mid: int) -> None:
        super().remove_message_by_mid(mid)
        done = self.done.pop(mid, None)
        if done is not None and not done.done():
            done.set_result(None)
        while self._slots:  # an id is free: the oldest waiting publish takes it
            slot = self._slots.popleft()
            if not slot.done():
                slot.set_result(None)
                break

    @property
    def full(self) -> bool:
        return self.limit is not None and len(self.done) >= self.limit

    def slot(self) -> asyncio.Future[None]:
        """Resolved when a PUBACK frees a packet id."""
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._slots.append(slot)
        return slot

    def fail(self, reason: str) -> None:
        """The connection ended: every publish waiting fails (retryable)."""
        for future in (*self.done.values(), *self._slots):
            if not future.done():
                future.set_exception(ConnectionLost(reason))
        self.done.clear()
        self._slots.clear()


class Connection(gmqtt.Client):  # type: ignore[misc]
    """One network connection: messages in (``inbox``, with the future each
    QoS 1/2 message's acknowledgement waits on), publishes out (``send``)."""

    def __init__(
        self,
        client_id: str,
        clean_start: bool,
        session_expiry: int,
        receive_maximum: int,
        acknowledges: bool = True,
    ) -> None:
        """``acknowledges``: False when every subscription is at QoS 0 (or
        there is none), so no message needs an acknowledgement withheld."""
        self._outbound = _Outbound()
        super().__init__(
            client_id,
            clean_session=clean_start,
            # Withheld acknowledgements cost a task per message (gmqtt's
            # async on_message); at QoS 0 nothing is acknowledged, so a plain
            # function takes messages (and gmqtt would acknowledge at once a
            # QoS 1 message the broker should not send).
            optimistic_acknowledgement=not acknowledges,
            persistent_storage=self._outbound,
            session_expiry_interval=session_expiry,
            receive_maximum=receive_maximum,
        )
        self.lost = asyncio.Event()
        self.wake = asyncio.Event()  # a message came, or the connection ended
        #: messages not yet taken by the resource, in arrival order, with
        #: their ticket in ``acks`` (None at QoS 0: nothing to acknowledge)
        self.inbox: deque[tuple[Received, int | None]] = deque()
        self.acks: InOrderAcks[asyncio.Future[int]] = InOrderAcks(self._acknowledge)
        self._window = receive_maximum
        self._taken = 0  # QoS 1/2 messages handed on by ``take``
        #: acknowledgements due after the connection was lost: never sent
        self._owed: list[asyncio.Future[int]] = []
        #: gmqtt's on_message tasks waiting for their acknowledgement
        self._waiting: set[asyncio.Task[Any]] = set()
        self._subacks: dict[int, asyncio.Future[tuple[int, ...]]] = {}
        self.on_message = self._arrived if acknowledges else self._arrived_at_most_once
        self.on_subscribe = self._subscribed
        self.on_disconnect = self._disconnected

    async def open(
        self, host: str, port: int, tls: ssl.SSLContext | None, keepalive: int, timeout: float
    ) -> None:
        """Connect and wait for CONNACK (gmqtt's errors, TimeoutError, OSError)."""
        await asyncio.wait_for(
            self.connect(host, port, ssl=tls or False, keepalive=keepalive), timeout
        )

    async def close(self) -> None:
        """Disconnect (if still connected), then end the acknowledgements
        still owed: the socket is closed, so none reaches the broker, which
        sends those messages again when the session resumes."""
        by_broker = self.lost.is_set()  # its socket is closed already
        self._lose("closed")
        try:
            if not by_broker:
                await self.disconnect()
        finally:
            await self._abandon()

    async def _abandon(self) -> None:
        """Let gmqtt's on_message tasks still waiting return. gmqtt then writes
        each PUBACK to the closed socket and logs a warning for each: one line
        here says it instead, and theirs are filtered while it happens."""
        owed = [*self.acks.abandon(), *self._owed]
        self._owed.clear()
        if not owed:
            return
        log.info(
            "%d acknowledgements not sent (connection closed): the broker sends"
            " those messages again when the session resumes",
            len(owed),
        )
        gmqtt_log = logging.getLogger("gmqtt.mqtt.protocol")
        gmqtt_log.addFilter(_closed_socket_writes)
        try:
            for released in owed:
                _release(released)
            # gmqtt's callback (the write) runs before gather's own.
            await asyncio.gather(*self._waiting, return_exceptions=True)
        finally:
            gmqtt_log.removeFilter(_closed_socket_writes)

    async def reconnect(self, delay: bool = False) -> None:
        """gmqtt's own reconnect, disabled: the resource reconnects with backoff."""
        self._lose("connection lost")

    # -- the source side ------------------------------------------------------

    async def subscribe_checked(self, topic: str, qos: int, timeout: float) -> None:
        """SUBSCRIBE and wait for its SUBACK; a refusal raises."""
        mid = self.subscribe(gmqtt.Subscription(topic, qos=qos))
        answer = self._subacks[mid] = asyncio.get_running_loop().create_future()
        try:
            [granted] = await asyncio.wait_for(answer, timeout)
        finally:
            self._subacks.pop(mid, None)
        if granted >= 0x80:
            # A refusal comes back in SUBACK, not as an error: without this
            # check the source would wait in silence.
            raise SubscriptionRefused(f"refused the subscription to {topic}: {_reason(granted)}")

    def take(self, limit: int) -> list[tuple[Received, int | None]]:
        """The oldest messages waiting, at most ``limit``, and no QoS 1/2
        message past the window of unacknowledged ones (arrival order kept)."""
        room = self._window - (self._taken - self.acks.released)
        inbox = self.inbox
        batch: list[tuple[Received, int | None]] = []
        while inbox and len(batch) < limit:
            if inbox[0][1] is not None:
                if room <= 0:
                    break
                room -= 1
                self._taken += 1
            batch.append(inbox.popleft())
        return batch

    def _arrived_at_most_once(
        self, client: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]
    ) -> None:
        """gmqtt's on_message when nothing is withheld: queue the message."""
        self.inbox.append((_received(topic, payload, qos, properties), None))
        self.wake.set()

    def _acknowledge(self, released: asyncio.Future[int]) -> None:
        if self.lost.is_set():
            self._owed.append(released)  # not on a dead socket (see ``_abandon``)
            return
        _release(released)
        self.wake.set()  # the window has room again

    async def _arrived(
        self, client: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]
    ) -> int:
        """gmqtt's on_message: queue the message; at QoS 1/2 return (so gmqtt
        acknowledges) only once ``acks`` releases it."""
        received = _received(topic, payload, qos, properties)
        if qos == 0:
            self.inbox.append((received, None))
            self.wake.set()
            return 0
        released: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.inbox.append((received, self.acks.add(released)))
        self.wake.set()
        task = asyncio.current_task()
        assert task is not None
        self._waiting.add(task)
        try:
            return await released  # 0: success, the PUBACK/PUBREC gmqtt sends now
        finally:
            self._waiting.discard(task)

    def _subscribed(self, client: Any, mid: int, granted: tuple[int, ...], properties: Any) -> None:
        answer = self._subacks.get(mid)
        if answer is not None and not answer.done():
            answer.set_result(granted)

    def _disconnected(self, client: Any, packet: Any, exc: Any = None) -> None:
        self._lose("disconnected")

    def _lose(self, reason: str) -> None:
        if self.lost.is_set():
            return
        self.lost.set()
        self.wake.set()
        self._outbound.fail(reason)
        for answer in self._subacks.values():
            if not answer.done():
                answer.set_exception(ConnectionLost(reason))

    # -- the target side ------------------------------------------------------

    async def send(
        self, topic: str, body: str | bytes, qos: int, retain: bool, properties: dict[str, Any]
    ) -> None:
        """Publish; at QoS 1/2 return once the broker has it (PUBACK, PUBCOMP)."""
        outbound = self._outbound
        while True:
            if self.lost.is_set():
                raise ConnectionLost("not connected")
            if qos and outbound.full:
                await outbound.slot()
                continue
            try:
                self.publish(topic, body, qos=qos, retain=retain, **properties)
            except OverflowError:
                # Every packet id the broker's Receive Maximum allows is in
                # flight: wait for a PUBACK to free one.
                outbound.limit = max(1, len(outbound.done))
                continue
            break
        if qos:
            done = self._outbound.latest
            assert done is not None
            await done


def _received(topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> Received:
    return Received(
        topic=topic,
        payload=payload,
        qos=qos,
        retain=bool(properties.get("retain")),
        user_properties=tuple(properties.get("user_property", ())),
    )


def _closed_socket_writes(record: logging.LogRecord) -> bool:
    return record.getMessage() != "[TRYING WRITE TO CLOSED SOCKET]"


def _release(released: asyncio.Future[int]) -> None:
    if not released.done():
        released.set_result(0)


def _reason(code: int) -> str:
    """A SUBACK reason code as MQTT 5 names it: 0x87 -> "Not authorized"."""
    try:
        name = str(SubAckReasonCode(code).name)
    except ValueError:
        return f"reason code {code:#x}"
    return name.replace("_", " ").capitalize()
