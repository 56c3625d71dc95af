"""One connection to an MQTT broker, over gmqtt (an asyncio Protocol client,
MQTT 5).

A ``Connection`` lives as long as its network connection: the resource makes
a new one after a loss (its own backoff, its own resubscription), so
everything that belongs to a connection (acknowledgements owed, publishes
awaiting PUBACK, packet ids) ends with it and never leaks onto the next.

What gmqtt offers and how it is used here:

- **Withheld acknowledgements.** gmqtt's own way (``optimistic_acknowledgement
  =False``: an ``async`` ``on_message`` run as a task per message, the
  PUBACK sent when it returns) costs a task, a future and a write per
  message. Instead this client takes QoS 1/2 PUBLISH packets itself: it
  replaces its package handler's ``_handle_qos_1_publish_packet`` and
  ``_handle_qos_2_publish_packet`` (gmqtt/mqtt/handler.py, called with the
  packet id once the packet is parsed), queues the message with its ticket
  in ``acks``, and writes the PUBACK (PUBREC) itself when ``InOrderAcks``
  releases it: no task and no future per message.
- **Writes gathered.** gmqtt writes each packet on its own (a ``send``
  system call per PUBLISH and per PUBACK). Once connected, its protocol's
  ``write_data`` is replaced by ``_write``: packets written in one turn of
  the event loop leave together in one write at the end of it, in order
  (the PUBACKs a batch releases, the publishes of its deliveries).
- **PUBACK of a publish.** gmqtt keeps each QoS 2 PUBLISH in its
  ``persistent_storage`` until the PUBCOMP (its handler swaps it for the
  PUBREL at PUBREC): ``_Outbound`` is that storage, and keeps the
  publisher's callback per packet id at any QoS (``publish``; ``send``
  awaits a future through it); a QoS 1 PUBLISH is not stored (nothing
  replays it: a new connection is a new client). The callbacks of the
  publishes a read's PUBACKs answer are called at the end of that read,
  once the publishes those PUBACKs let go are written (``_tell_answered``).
  No task, no future per publish on the bus's path.
- **Packets read.** gmqtt reads with a task awaiting an ``asyncio.
  StreamReader`` (an await per chunk, a bytes copy per chunk), cuts each
  packet into a ``Package`` object and dispatches it through its handler (a
  debug line, a lookup, then for a PUBACK three layers down to the storage).
  This client reads the socket itself instead: ``_create_connection``
  (gmqtt's ``Client._create_connection``, which makes the transport and its
  ``MQTTProtocol``) is extended to cancel the protocol's ``_read_loop_future``
  and put ``_data_received`` in place of the protocol's ``data_received``
  (and ``_eof_received``, which closes the socket as gmqtt's loop did at
  EOF). That happens before CONNECT is written, so no byte has come yet.
  ``_data_received`` cuts the bytes of each read into packets in place, as
  many as came (a packet split across reads waits for the rest): a PUBLISH
  or a PUBACK is handled right there, any other packet (CONNACK, SUBACK,
  PINGRESP, PUBREL, DISCONNECT...) goes to gmqtt as its own loop would give
  it (``MQTTConnection.put_package``). The PUBACK's MQTT 5 reason code, which
  gmqtt ignores, is read: a refused publish fails (``PublishRefused``).
  A read takes at most 64 KiB (``_READ_SIZE``), so the PUBACKs it brings
  are not held behind thousands of messages parsed with them.
- **Private gmqtt names used** (gmqtt is pinned to 0.8): ``Client.
  _create_connection``, ``_connection`` (``MQTTConnection``: ``_protocol``,
  ``_last_data_in``, ``put_package``), ``MQTTProtocol._read_loop_future``,
  the package handler's ``_handle_publish_packet``,
  ``_handle_qos_1_publish_packet``, ``_handle_qos_2_publish_packet`` and
  ``id_generator``, ``_connection_state.protocol_version``. ``_check_gmqtt``
  checks they are there when a connection is made and fails with a message
  naming this module if gmqtt changed.
- **Publishes in flight.** ``_PacketIds`` (in the handler's place of
  gmqtt's id generator) gives packet ids up to the broker's Receive Maximum
  and raises ``OverflowError`` past it: a publish that meets it waits
  in ``_Outbound.queued``, in order, and goes out as a PUBACK frees an id (in
  the PUBACK's own handling, back to back), so the broker's window bounds
  what is in flight and stays full.
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
import functools
import logging
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable
from enum import IntEnum
from typing import Any

import gmqtt
from gmqtt.mqtt.connection import MQTTConnection
from gmqtt.mqtt.constants import MQTTv50, PubAckReasonCode, SubAckReasonCode
from gmqtt.mqtt.package import Package, PackageFactory
from gmqtt.mqtt.protocol import MQTTProtocol
from gmqtt.storage import PersistentStorage

from pipelines.targets import awaitable_done

from .acks import InOrderAcks
from .messages import Received

log = logging.getLogger("plugins.mqtt")

#: PUBACK (QoS 1) and PUBREC (QoS 2) of a packet id, reason code Success: MQTT
#: 5 lets its reason code and properties be left out (remaining length 2,
#: section 3.4.2.1), which is also MQTT 3.1.1's form.
_ACK = struct.Struct("!BBH")
_ACK_COMMAND = {1: 0x40, 2: 0x50}
#: A PUBLISH's first byte, by ``qos | retain << 2``
_PUBLISH = {
    qos | retain << 2: bytes((0x30 | qos << 1 | retain,)) for qos in (0, 1, 2) for retain in (0, 1)
}
_MAXIMUM_REMAINING = 268_435_455  # the largest remaining length MQTT can say
#: a remaining length under 128 as MQTT says it (one byte), without a call per packet
_ONE_BYTE = [bytes((value,)) for value in range(128)]


class MqttFailure(Exception):
    """The connection failed or ended: retried with backoff by the resource."""


class ConnectionLost(MqttFailure):
    pass


class PublishRefused(Exception):
    """The broker refused a publish (its PUBACK's reason code says why)."""

    #: Refusals that the same publish meets again: not authorized, the
    #: topic name or the payload format invalid.
    FINAL = frozenset({0x87, 0x90, 0x99})

    def __init__(self, code: int) -> None:
        super().__init__(f"refused by the broker: {_reason(code, PubAckReasonCode)}")
        self.code = code

    @property
    def retryable(self) -> bool:
        return self.code not in self.FINAL


class SubscriptionRefused(MqttFailure):
    """SUBACK refused a topic filter (an ACL, $share unsupported)."""


#: Told once a publish is through (None) or failed (why): ``Connection.publish``.
Done = Callable[[BaseException | None], None]
#: A publish waiting for a packet id: topic, body, qos, retain, properties, done
Queued = tuple[str, "str | bytes", int, bool, "dict[str, Any]", Done]


class _Outbound(PersistentStorage):  # type: ignore[misc]
    """gmqtt's store of QoS 1/2 publishes awaiting PUBACK, telling who waits."""

    def __init__(self, publish: Callable[[Queued], bool]) -> None:
        super().__init__()
        self.done: dict[int, Done] = {}  # per packet id in flight
        #: publishes waiting for a packet id, oldest first
        self.queued: deque[Queued] = deque()
        #: publishes in flight when gmqtt first ran out of packet ids (the
        #: broker's Receive Maximum, which gmqtt does not tell): past it a
        #: publish waits before building its packet, not after
        self.limit: int | None = None
        self._send = publish  # the connection's: False when no id was free

    def store(self, mid: int, packet: bytes, qos: int, done: Done) -> None:
        """A publish sent with packet id ``mid``: ``done`` is told at its answer.
        Only a QoS 2 packet is kept in gmqtt's store, whose handler swaps it
        for its PUBREL at PUBREC (a QoS 1 one is answered here: ``answered``)."""
        self.done[mid] = done
        if qos == 2:
            self.push_message(mid, packet)

    def remove_message_by_mid(self, mid: int) -> None:
        """gmqtt's call at a PUBCOMP (QoS 2) or a refused PUBREC."""
        super().remove_message_by_mid(mid)
        self.acknowledged(mid, 0)

    def acknowledged(self, mid: int, reason: int) -> None:
        """The broker answered the publish of ``mid`` (its packet id is free
        already): done, or refused when ``reason`` is 0x80 or more."""
        done = self.answered(mid)
        if done is not None:
            done(None if reason < 0x80 else PublishRefused(reason))

    def answered(self, mid: int) -> Done | None:
        """The publish of ``mid`` is answered: forget it, send the oldest
        waiting publishes in its place, and return who to tell (the caller
        tells it, once those publishes are written: see ``Connection._read``)."""
        done = self.done.pop(mid, None)
        # The id is free: the oldest waiting publishes go now (before telling
        # ``done``, whose caller may publish more: they queue behind these).
        queued = self.queued
        while queued and not self.full and self._send(queued[0]):
            queued.popleft()
        return done

    @property
    def full(self) -> bool:
        return self.limit is not None and len(self.done) >= self.limit

    def fail(self, reason: str) -> None:
        """The connection ended: every publish waiting fails (retryable)."""
        waiting = [*self.done.values(), *(queued[-1] for queued in self.queued)]
        self.done.clear()
        self.queued.clear()
        for done in waiting:
            done(ConnectionLost(reason))


class _PacketIds:
    """The packet ids of a connection's publishes (and subscribes) awaiting
    their answer: gmqtt's ``IdGenerator`` in its place (the same three
    names, which gmqtt's handler uses: ``next_id``, ``free_id`` and ``_max``,
    set to the broker's Receive Maximum at CONNACK), without its two debug
    log calls per publish, and allowing the whole Receive Maximum in flight
    (gmqtt stops one short of it)."""

    def __init__(self, maximum: int) -> None:
        self._max = maximum
        self.used: set[int] = set()
        self._last = 0

    def next_id(self) -> int:
        """A free id; OverflowError when the Receive Maximum is in flight."""
        used = self.used
        if len(used) >= self._max:
            raise OverflowError("every packet id the broker's Receive Maximum allows is in use")
        mid = self._last
        while True:  # ends: fewer than 65535 ids are in use
            mid = mid + 1 if mid < 65535 else 1
            if mid not in used:
                break
        used.add(mid)
        self._last = mid
        return mid

    def free_id(self, mid: int) -> None:
        self.used.discard(mid)


class Connection(gmqtt.Client):  # type: ignore[misc]
    """One network connection: messages in (``inbox``, each QoS 1/2 message
    with its ticket in ``acks``), publishes out (``send``)."""

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
        self._outbound = _Outbound(self._publish_queued)
        super().__init__(
            client_id,
            clean_session=clean_start,
            # Not acknowledging (QoS 0 only): gmqtt acknowledges at once a QoS
            # 1 message the broker should not send.
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
        #: per QoS 1/2 message, its PUBACK (PUBREC) packet, written once released
        self.acks: InOrderAcks[bytes] = InOrderAcks(self._acknowledge)
        self._window = receive_maximum
        self._taken = 0  # QoS 1/2 messages handed on by ``take``
        self._unsent = 0  # acknowledgements released after the connection was lost
        #: packets written this turn of the loop, and gmqtt's own write (see ``_write``)
        self._pending: list[bytes] = []
        self._write_now: Callable[[bytes], None] | None = None
        self._protocol_version = MQTTv50  # as connected (see ``open``)
        self._no_properties = b"\x00"
        self._subacks: dict[int, asyncio.Future[tuple[int, ...]]] = {}
        self.on_message = self._arrived_at_most_once
        self.on_subscribe = self._subscribed
        self.on_disconnect = self._disconnected
        self._acknowledges = acknowledges
        #: the start of a packet split across reads (its chunks), the bytes
        #: held, and how many make the packet whole (see ``_data_received``)
        self._held: list[bytes] = []
        self._held_size = 0
        self._needed = 0
        #: publishes answered by the PUBACKs of the read being handled, and
        #: their reason codes: told at its end (see ``_tell_answered``)
        self._answered: list[tuple[Done, int]] = []
        _check_gmqtt(self)
        handler = self._package_handler
        #: gmqtt's own parser: for a PUBLISH with properties (see ``_publish_at``)
        self._parse_publish = handler._handle_publish_packet
        self._ids = handler.id_generator = _PacketIds(handler.id_generator._max)
        if acknowledges:
            handler._handle_qos_1_publish_packet = functools.partial(self._arrived, 1)
            handler._handle_qos_2_publish_packet = functools.partial(self._arrived, 2)

    async def open(
        self, host: str, port: int, tls: ssl.SSLContext | None, keepalive: int, timeout: float
    ) -> None:
        """Connect and wait for CONNACK (gmqtt's errors, TimeoutError, OSError)."""
        await asyncio.wait_for(
            self.connect(host, port, ssl=tls or False, keepalive=keepalive), timeout
        )
        protocol = self._connection._protocol
        self._protocol_version = protocol.proto_ver
        #: a PUBLISH's properties when it has none: MQTT 5 says their length, 0
        self._no_properties = b"\x00" if protocol.proto_ver >= MQTTv50 else b""
        self._write_now = protocol.write_data
        protocol.write_data = self._write

    async def close(self) -> None:
        """Disconnect (if still connected). The acknowledgements still owed
        are never sent: the broker sends those messages again when the
        session resumes."""
        by_broker = self.lost.is_set()  # its socket is closed already
        self._lose("closed")
        self._uncork()  # what is written already goes first, DISCONNECT after it
        try:
            if not by_broker:
                await self.disconnect()
        finally:
            unsent = len(self.acks.abandon()) + self._unsent
            if unsent:
                log.info(
                    "%d acknowledgements not sent (connection closed): the broker sends"
                    " those messages again when the session resumes",
                    unsent,
                )

    def _write(self, data: bytes) -> None:
        """gmqtt's protocol's ``write_data`` while connected: a packet waits
        for the end of this turn of the event loop, then leaves with the
        others written in it, in one write."""
        pending = self._pending
        pending.append(data)
        if len(pending) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        pending = self._pending
        if not pending or self._write_now is None:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self._write_now(data)  # gmqtt's: the keepalive's clock, a closed socket's warning

    def _uncork(self) -> None:
        """Write what waits, and from now on each packet as it comes (gmqtt's
        DISCONNECT, then the socket closes at once)."""
        self._flush()
        if self._write_now is not None:
            self._connection._protocol.write_data = self._write_now

    async def _create_connection(self, *args: Any, **kwargs: Any) -> Any:
        """gmqtt's, then this client reads the socket (see the module's
        docstring): gmqtt's read loop, which has read nothing yet (CONNECT is
        not written), is cancelled."""
        connection = await super()._create_connection(*args, **kwargs)
        protocol = connection._protocol
        if not hasattr(protocol, "_read_loop_future"):  # pragma: no cover - gmqtt changed
            connection._transport.close()
            raise RuntimeError(
                "gmqtt's MQTTProtocol has no _read_loop_future, which"
                " plugins/mqtt/connection.py cancels (it is written for gmqtt 0.8)"
            )
        reading = protocol._read_loop_future
        if reading is not None:
            reading.cancel()
            protocol._read_loop_future = None
        protocol.data_received = self._data_received
        protocol.eof_received = self._eof_received
        if hasattr(connection._transport, "max_size"):  # asyncio's socket transport
            connection._transport.max_size = _READ_SIZE
        return connection

    def _eof_received(self) -> bool:
        """The broker closed its side: close ours (gmqtt's loop did so at an
        empty read); the connection is then lost as any other."""
        return False

    def _data_received(self, data: bytes) -> None:
        """The protocol's ``data_received``: every whole packet of the bytes
        read, handled in order; the start of one split across reads waits
        until its remaining length has come."""
        self._connection._last_data_in = time.monotonic()  # gmqtt's keepalive reads it
        self._read(data)

    def _read(self, data: bytes) -> None:
        """The bytes of one read: see ``_data_received``."""
        if self._held:
            self._held.append(data)
            self._held_size += len(data)
            if self._held_size < self._needed:
                return  # a large packet still coming: no copy until it is whole
            data = b"".join(self._held)
            self._held.clear()
        queued = len(self.inbox)
        at = self._read_packets(data)
        if len(self.inbox) != queued:
            self.wake.set()
        if self._answered:
            self._tell_answered()
        if at < 0:
            return
        if at < len(data):
            rest = data[at:]
            self._held.append(rest)
            self._held_size = len(rest)
            self._needed = _packet_size(rest)

    def _read_packets(self, data: bytes) -> int:
        """Handle each whole packet in ``data``; where the first that is not
        whole starts (-1: a malformed length, the connection is closed)."""
        size = len(data)
        at = 0
        properties = 1 if self._connection_state.protocol_version >= MQTTv50 else 0
        while size - at >= 2:
            length = data[at + 1]
            start = at + 2
            if length >= 0x80:  # the remaining length goes on (1.5.5): up to 4 bytes
                length &= 0x7F
                shift = 7
                while True:
                    if start >= size:
                        return at
                    digit = data[start]
                    start += 1
                    length |= (digit & 0x7F) << shift
                    if digit < 0x80:
                        break
                    shift += 7
                    if shift > 21:
                        self._malformed()
                        return -1
            end = start + length
            if end > size:
                return at
            command = data[at]
            kind = command & 0xF0
            if kind == 0x30:
                self._publish_at(command, data, start, end, properties)
            elif kind == 0x40 and length >= 2:
                self._puback(
                    (data[start] << 8) | data[start + 1], data[start + 2] if length > 2 else 0
                )
            else:
                self._connection.put_package(Package(command, data[start:end]))
            at = end
        return at

    def _tell_answered(self) -> None:
        """The publishes this read's PUBACKs answered, told only now: first
        the publishes those PUBACKs let go leave (one write), so the broker
        works on them while the deliveries settle here, and the broker's
        window, which bounds what is in flight, is refilled without waiting
        for that work."""
        self._flush()
        answered = self._answered
        self._answered = []
        for done, reason in answered:
            done(None if reason < 0x80 else PublishRefused(reason))

    def _malformed(self) -> None:
        log.error(
            "%s: a packet from the broker says a remaining length of more than"
            " 4 bytes (malformed): the connection is closed",
            self._client_id,
        )
        self._connection._protocol._transport.close()

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
        """gmqtt's on_message (QoS 0, or nothing acknowledged): queue the message."""
        self.inbox.append((_received(topic, payload, qos, properties), None))
        self.wake.set()

    def _puback(self, mid: int, reason: int) -> None:
        """A PUBACK: its packet id is free, its publish done. MQTT 5 may say
        the broker refused it (a reason code of 0x80 or more: not
        authorized, quota exceeded...), which gmqtt does not read: that
        publish fails."""
        self._ids.used.discard(mid)
        done = self._outbound.answered(mid)
        if done is not None:
            self._answered.append((done, reason))

    def _publish_at(self, command: int, data: bytes, start: int, end: int, properties: int) -> None:
        """A PUBLISH at ``data[start:end]`` (its remaining length), read in
        place for the usual one: no properties (MQTT 5 says their length,
        ``properties`` bytes: 0), a UTF-8 topic, and at QoS 1/2 a connection
        that acknowledges. Any other goes to gmqtt's parser (user
        properties, topic aliases, a malformed packet), which ends in
        ``_arrived`` or ``on_message`` too."""
        qos = (command >> 1) & 3
        if end - start < 2:
            self._parse_publish(command, data[start:end])
            return
        name = start + 2 + ((data[start] << 8) | data[start + 1])
        body = name + (2 if qos else 0) + properties
        if (
            body > end
            or name == start + 2  # no topic: a topic alias
            or (properties and data[body - 1])  # some properties
            or qos == 3
            or (qos and not self._acknowledges)
        ):
            self._parse_publish(command, data[start:end])
            return
        try:
            topic = data[start + 2 : name].decode()
        except UnicodeDecodeError:
            self._parse_publish(command, data[start:end])
            return
        if qos:
            ticket = self.acks.add(
                _ACK.pack(_ACK_COMMAND[qos], 2, (data[name] << 8) | data[name + 1])
            )
            self.inbox.append((Received(topic, data[body:end], qos, bool(command & 1)), ticket))
        else:
            self.inbox.append((Received(topic, data[body:end], 0, bool(command & 1)), None))

    def _arrived(
        self, qos: int, mid: int, payload: bytes, topic: str, properties: dict[str, Any]
    ) -> None:
        """A QoS 1/2 PUBLISH, parsed by gmqtt: queue the message with its
        ticket; its acknowledgement is written once ``acks`` releases it."""
        self.inbox.append(
            (
                _received(topic, payload, qos, properties),
                self.acks.add(_ACK.pack(_ACK_COMMAND[qos], 2, mid)),
            )
        )
        self.wake.set()

    def _acknowledge(self, packet: bytes) -> None:
        if self.lost.is_set():
            self._unsent += 1  # not on a dead socket: the broker sends it again
            return
        self._write(packet)
        self.wake.set()  # the window has room again

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
        through, done = awaitable_done()
        self.publish(topic, body, qos, retain, properties, done)
        await through

    def publish(
        self,
        topic: str,
        body: str | bytes,
        qos: int,
        retain: bool,
        properties: dict[str, Any],
        done: Done,
    ) -> None:
        """Publish without waiting: ``done(None)`` once the broker has it
        (PUBACK, PUBCOMP; at QoS 0 once written, within this call), or
        ``done(ConnectionLost)`` if the connection ends first. Past the
        broker's window it waits here, in order, for a PUBACK. Raises
        ConnectionLost when not connected; a packet too large is told to
        ``done`` (ValueError)."""
        if self.lost.is_set():
            raise ConnectionLost("not connected")
        if not qos:
            try:
                self._publish(topic, body, 0, retain, properties, done)
            except ValueError as exc:
                done(exc)
                return
            done(None)
            return
        outbound = self._outbound
        queued = (topic, body, qos, retain, properties, done)
        if outbound.queued or outbound.full or not self._publish_queued(queued):
            outbound.queued.append(queued)

    def _publish_queued(self, queued: Queued) -> bool:
        """Publish at QoS 1/2 if a packet id is free; False when none is. A
        packet too large is told to its ``done`` (it may have waited)."""
        try:
            self._publish(*queued)
        except OverflowError:
            # Every packet id the broker's Receive Maximum allows is in
            # flight: from now on wait for a PUBACK before trying.
            outbound = self._outbound
            outbound.limit = max(1, len(outbound.done))
            return False
        except ValueError as exc:
            queued[-1](exc)
        return True

    def _publish(
        self,
        topic: str,
        body: str | bytes,
        qos: int,
        retain: bool,
        properties: dict[str, Any],
        done: Done,
    ) -> None:
        """gmqtt's ``Client.publish``, without its Message object, its
        debug logging and its byte-by-byte packing: a PUBLISH packet built
        in one join, stored for its PUBACK (QoS 1/2) and written with the
        others of this turn. OverflowError: no packet id free."""
        name = topic.encode()
        payload = body.encode() if isinstance(body, str) else body
        if not properties:
            extra = self._no_properties
        else:
            extra = bytes(PackageFactory._build_properties_data(properties, self._protocol_version))
        remaining = 2 + len(name) + len(extra) + len(payload) + (2 if qos else 0)
        if remaining > _MAXIMUM_REMAINING:  # before a packet id is taken, or it leaks
            raise ValueError("the payload is too large for one MQTT packet")
        if qos:
            mid = self._ids.next_id()
            extra = mid.to_bytes(2, "big") + extra
        packet = b"".join(
            (
                _PUBLISH[qos | retain << 2],
                _ONE_BYTE[remaining] if remaining < 128 else _remaining_length(remaining),
                len(name).to_bytes(2, "big"),
                name,
                extra,
                payload,
            )
        )
        if qos:
            self._outbound.store(mid, packet, qos, done)
        self._write(packet)


#: The most one read takes from the socket (asyncio's own is 256 KiB). The
#: PUBACKs a read brings are told only once all its packets are handled, and
#: a broker that sends faster than messages are put on the bus (Mosquitto
#: sends past the Receive Maximum) fills a large read with thousands of
#: messages that are only parsed and queued. Meanwhile the publishes those
#: PUBACKs answer hold the broker's window (20 in flight on Mosquitto), and
#: the next ones wait. Measured with bench_mqtt at QoS 1 (acknowledged once
#: delivered), four alternating rounds: 256 KiB gave 15.4-21.2K events/s and
#: 64 KiB gave 16.6-22.9K, with the median publish round trip 0.63-0.95 ms
#: instead of 0.70-1.01 ms. At QoS 0 a read is mostly a full one either way.
_READ_SIZE = 64 * 1024


def _packet_size(data: bytes) -> int:
    """The size of the packet that ``data`` starts (fixed header and
    remaining length), or one byte more than ``data`` when its remaining
    length has not all come yet."""
    length = 0
    for index in range(1, min(len(data), 5)):
        digit = data[index]
        length |= (digit & 0x7F) << (7 * (index - 1))
        if digit < 0x80:
            return index + 1 + length
    return len(data) + 1


def _check_gmqtt(client: gmqtt.Client) -> None:
    """The private names of gmqtt this module uses (its docstring lists
    them) are there, or a clear error: gmqtt changed."""
    handler = client._package_handler
    missing = [
        name
        for owner, name in (
            (client, "_create_connection"),
            (client, "_connection_state"),
            (handler, "_handle_publish_packet"),
            (handler, "_handle_qos_1_publish_packet"),
            (handler, "_handle_qos_2_publish_packet"),
            (handler, "id_generator"),
            (getattr(handler, "id_generator", None), "_max"),
            (MQTTConnection, "put_package"),
            (MQTTProtocol, "_read_loop"),
        )
        if getattr(owner, name, None) is None
    ]
    if missing:
        raise RuntimeError(
            f"gmqtt {getattr(gmqtt, '__version__', '?')} lacks {', '.join(missing)}, which"
            " plugins/mqtt/connection.py uses (it is written for gmqtt 0.8)"
        )


def _remaining_length(value: int) -> bytes:
    """MQTT's variable byte integer (section 1.5.5)."""
    if value < 128:
        return bytes((value,))
    if value < 16384:  # two bytes: most packets past 127 bytes, without a loop
        return bytes((value & 0x7F | 0x80, value >> 7))
    encoded = bytearray()
    while True:
        value, digit = divmod(value, 128)
        encoded.append(digit | 0x80 if value else digit)
        if not value:
            return bytes(encoded)


def _received(topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> Received:
    return Received(
        topic=topic,
        payload=payload,
        qos=qos,
        retain=bool(properties.get("retain")),
        user_properties=tuple(properties.get("user_property", ())),
    )


def _reason(code: int, codes: type[IntEnum] = SubAckReasonCode) -> str:
    """A SUBACK (PUBACK) reason code as MQTT 5 names it: 0x87 -> "Not authorized"."""
    try:
        name = str(codes(code).name)
    except ValueError:
        return f"reason code {code:#x}"
    return name.replace("_", " ").capitalize()
