"""Bursts through the mqtt resource against a real Mosquitto: acknowledgements
in arrival order, every message of a QoS 1 burst delivered, and a broker
restart mid-burst losing nothing it had taken."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from gmqtt import Message
from gmqtt.mqtt.constants import MQTTv50
from gmqtt.mqtt.package import Package, PublishPacket
from gmqtt.mqtt.protocol import MQTTProtocol
from gmqtt.mqtt.utils import IdGenerator
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.runtime import Runtime
from plugins.mqtt.acks import InOrderAcks
from plugins.mqtt.connection import Connection
from plugins.mqtt.target import MqttTarget

from .helpers import eventually
from .mosquitto import Mosquitto
from .recorder import Recorder, plugin_manager

PLUGINS = plugin_manager()


def test_acknowledgements_follow_arrival_order() -> None:
    sent: list[str] = []
    acks: InOrderAcks[str] = InOrderAcks(sent.append)
    a, b, c, d = (acks.add(name) for name in "abcd")
    acks.settle(c)
    acks.settle(b)
    assert sent == []  # a is still waiting: nothing after it goes first
    acks.settle(a)
    assert sent == ["a", "b", "c"]
    acks.drop(d)  # not taken: never acknowledged, holds nothing back
    e = acks.add("e")
    acks.settle(e)
    acks.settle(e)  # settled twice: once
    assert sent == ["a", "b", "c", "e"] and len(acks) == 0


def runtime_to(mosquitto: Mosquitto, state: Path, sink: dict[str, object]) -> Runtime:
    runtime = Runtime(plugins=PLUGINS, state_path=state)
    settings = {"broker": mosquitto.broker(), "subscribe": [{"topic": "in", "qos": 1}]}
    runtime.add_resource("in", "mqtt", settings)
    runtime.add_resource("out", "recorder", sink)
    runtime.bus().put_rule("all", pattern={"source": ["mqtt"]})
    return runtime


async def test_a_qos1_burst_is_delivered_whole_and_acknowledged(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """2,000 QoS 1 messages to an MQTT target at QoS 1: each arrives (no
    failure, so once); a second runner on the same session gets nothing, so
    every message was acknowledged, and only after its delivery (the
    acknowledgement waits for the publish's PUBACK)."""
    total = 2000
    state = tmp_path / "state.db"
    runtime = Runtime(plugins=PLUGINS, state_path=state)
    settings = {"broker": mosquitto.broker(), "subscribe": [{"topic": "in", "qos": 1}]}
    runtime.add_resource("in", "mqtt", settings)
    runtime.add_resource("out", "mqtt", {"broker": mosquitto.broker(), "topic": "out", "qos": 1})
    runtime.bus().put_rule("all", pattern={"source": ["mqtt"]})
    await runtime.bus().put_targets("all", [{"id": "t", "resource": "out"}])
    listener = mosquitto.sub("out", total, timeout=60)
    async with runtime:
        lines = [json.dumps({"n": n}) for n in range(total)]
        await asyncio.to_thread(mosquitto.pub, "in", *lines)
        out, _ = await asyncio.to_thread(listener.communicate)
        await runtime.wait_until_idle()
    got = [json.loads(line.split(" ", 1)[1])["detail"]["n"] for line in out.splitlines()]
    assert sorted(got) == list(range(total))

    again = runtime_to(mosquitto, state, {})
    await again.bus().put_targets("all", [{"id": "t", "resource": "out"}])
    async with again:
        await asyncio.sleep(0.5)
        sink = again.resource("out")
        assert isinstance(sink, Recorder) and sink.received == []


async def test_a_broker_restart_mid_burst_loses_nothing(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """The broker keeps its sessions on disk and restarts while deliveries are
    held: what it had not seen acknowledged comes again on the resumed
    session, so every message is delivered at least once."""
    total = 500
    mosquitto.stop()
    store = mosquitto.directory / "store"
    store.mkdir()
    mosquitto.extra = f"persistence true\npersistence_location {store}/\n"
    mosquitto.start()
    runtime = runtime_to(mosquitto, tmp_path / "state.db", {"hold": True})
    await runtime.bus().put_targets("all", [{"id": "t", "resource": "out"}])
    async with runtime:
        sink = runtime.resource("out")
        assert isinstance(sink, Recorder)
        await asyncio.to_thread(mosquitto.pub, "in", *[json.dumps({"n": n}) for n in range(total)])
        await eventually(lambda: sink.waiting > 0)
        await asyncio.to_thread(mosquitto.stop)
        await asyncio.to_thread(mosquitto.start)
        sink.release()
        await eventually(
            lambda: {r.payload["detail"]["n"] for r in sink.received} == set(range(total)),
            seconds=60,
        )
    # More than once: the resumed session sent again what was held, so none
    # of it had been acknowledged before its delivery.
    assert len(sink.received) > total


async def test_no_more_than_the_receive_window_is_on_the_bus_unacknowledged(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """A resource takes at most ``receive_maximum`` unacknowledged QoS 1
    messages onto the bus. The first few are delivered (their PUBACKs flow,
    and each lets Mosquitto 2.0.11 send a whole window more); the rest are
    held: only a window of them is on the bus, the others wait. Released,
    every message arrives."""
    total, fast, window = 300, 5, 10
    runtime = Runtime(plugins=PLUGINS, state_path=tmp_path / "state.db")
    broker = {**mosquitto.broker(), "receive_maximum": window}
    runtime.add_resource("in", "mqtt", {"broker": broker, "subscribe": [{"topic": "in"}]})
    runtime.add_resource("fast", "recorder", {})
    runtime.add_resource("held", "recorder", {"hold": True, "concurrency": 100})
    runtime.bus().put_rule("fast", pattern={"detail": {"n": [{"numeric": ["<", fast]}]}})
    runtime.bus().put_rule("held", pattern={"detail": {"n": [{"numeric": [">=", fast]}]}})
    await runtime.bus().put_targets("fast", [{"id": "t", "resource": "fast"}])
    await runtime.bus().put_targets("held", [{"id": "t", "resource": "held"}])
    async with runtime:
        source, held = runtime.resource("in"), runtime.resource("held")
        assert isinstance(source, MqttTarget) and isinstance(held, Recorder)
        await asyncio.to_thread(mosquitto.pub, "in", *[json.dumps({"n": n}) for n in range(total)])
        await eventually(lambda: held.waiting == window)
        await asyncio.sleep(0.5)  # time for more to come, were the window not kept
        assert source.received == fast + window and held.waiting == window
        held.release()
        await eventually(lambda: len(held.received) == total - fast, seconds=30)
    assert sorted(r.payload["detail"]["n"] for r in held.received) == list(range(fast, total))


async def test_acknowledgements_released_together_leave_in_one_write(
    mosquitto: Mosquitto,
) -> None:
    """QoS 1 messages are taken without a task per message and without any
    PUBACK; settled out of order, their PUBACKs go out only once the oldest
    is settled, in arrival order, all in one write. The broker took them:
    the resumed session brings nothing back."""
    total = 50
    connection = Connection("acks-in-one-write", True, 60, 100)
    await connection.open(mosquitto.host, mosquitto.port, None, 60, 5)
    writes: list[bytes] = []  # what reaches the socket, from the SUBACK on
    transport = connection._connection._protocol._transport
    write = transport.write

    def recorded(data: bytes) -> None:
        writes.append(bytes(data))
        write(data)

    try:
        await connection.subscribe_checked("in", 1, 5)
        transport.write = recorded
        tasks = len(asyncio.all_tasks())
        await asyncio.to_thread(mosquitto.pub, "in", *[json.dumps({"n": n}) for n in range(total)])
        await eventually(lambda: len(connection.inbox) == total)
        assert len(asyncio.all_tasks()) == tasks  # no task per message waits for its PUBACK
        batch = connection.take(total)
        assert [json.loads(m.payload)["n"] for m, _ in batch] == list(range(total))
        tickets = [ticket for _, ticket in batch if ticket is not None]
        for ticket in reversed(tickets[1:]):
            connection.acks.settle(ticket)
        await asyncio.sleep(0.05)
        assert writes == []  # the oldest is not safe yet: nothing goes
        connection.acks.settle(tickets[0])
        await asyncio.sleep(0.05)
        [written] = writes
        packets = [written[i : i + 4] for i in range(0, len(written), 4)]
        assert len(packets) == total and len(written) == 4 * total
        assert {packet[:2] for packet in packets} == {b"\x40\x02"}  # PUBACK, Success
        ids = [int.from_bytes(packet[2:], "big") for packet in packets]
        assert ids == list(range(ids[0], ids[0] + total))  # Mosquitto's ids, in arrival order
    finally:
        await connection.close()

    again = Connection("acks-in-one-write", False, 0, 100)
    await again.open(mosquitto.host, mosquitto.port, None, 60, 5)
    try:
        await asyncio.sleep(0.5)
        assert len(again.inbox) == 0  # every PUBACK was taken: nothing is sent again
    finally:
        await again.close()


async def test_a_burst_is_read_in_pieces_of_at_most_64_kib(mosquitto: Mosquitto) -> None:
    """A read is told (its PUBACKs answered, see ``_READ_SIZE``) only once
    every packet in it is handled: a burst of 300 KB comes in several reads,
    none larger than 64 KiB, and every message of it whole, in order."""
    connection = Connection("reads-in-pieces", True, 0, 100, acknowledges=False)
    await connection.open(mosquitto.host, mosquitto.port, None, 60, 5)
    sizes: list[int] = []
    read = connection._read

    def recorded(data: bytes) -> None:
        sizes.append(len(data))
        read(data)

    connection._read = recorded  # type: ignore[method-assign]
    total = 3000
    try:
        await connection.subscribe_checked("in", 0, 5)
        payloads = [json.dumps({"n": n, "pad": "x" * 80}) for n in range(total)]
        transport = connection._connection._protocol._transport
        transport.pause_reading()  # the burst waits in the socket, as behind a busy loop
        await asyncio.to_thread(mosquitto.pub, "in", *payloads, qos=0)
        await asyncio.sleep(0.2)
        transport.resume_reading()
        await eventually(lambda: len(connection.inbox) == total)
    finally:
        await connection.close()
    assert [json.loads(m.payload)["n"] for m, _ in connection.inbox] == list(range(total))
    assert sum(sizes) > 300_000 and max(sizes) <= 64 * 1024 and len(sizes) >= 5


async def test_publishes_of_one_turn_of_the_loop_leave_in_one_write(
    mosquitto: Mosquitto,
) -> None:
    """Publishes made in one turn of the event loop go out together, in
    order, in one write (gmqtt alone writes each); each still has its own
    PUBACK."""
    connection = Connection("publishes-in-one-write", True, 0, 100, acknowledges=False)
    await connection.open(mosquitto.host, mosquitto.port, None, 60, 5)
    transport = connection._connection._protocol._transport
    write = transport.write
    writes: list[bytes] = []

    def recorded(data: bytes) -> None:
        writes.append(bytes(data))
        write(data)

    transport.write = recorded
    listener = mosquitto.sub("out", 10)
    try:
        await asyncio.gather(*(connection.send("out", str(n), 1, False, {}) for n in range(10)))
        out, _ = await asyncio.to_thread(listener.communicate)
    finally:
        await connection.close()
    assert out.splitlines() == [f"out {n}" for n in range(10)]
    assert writes[0].count(b"\x00\x03out") == 10  # the ten PUBLISH packets, at once


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("retain", [False, True])
@pytest.mark.parametrize("size", [0, 100, 200, 20_000, 3_000_000])
@pytest.mark.parametrize("properties", [{}, {"user_property": [("origin", "pipelines")]}])
def test_publish_packets_are_those_gmqtt_builds(
    qos: int, retain: bool, size: int, properties: dict[str, Any]
) -> None:
    """The connection builds its PUBLISH packets itself (one join, no
    Message object): byte for byte what gmqtt's own builder makes, whatever
    the QoS, retain flag, properties and payload size (remaining lengths of
    1 to 4 bytes)."""

    class Protocol:
        proto_ver = MQTTv50
        id_generator = IdGenerator(65536)

    body = "é" * (size // 2)
    expected = PublishPacket.build_package(
        Message("devices/d1/commands", body, qos=qos, retain=retain, **properties), Protocol()
    )[1]

    async def built() -> bytes:
        connection = Connection("packets", True, 0, 100, acknowledges=False)
        written: list[bytes] = []
        connection._write = written.append
        connection._publish("devices/d1/commands", body, qos, retain, properties, print)
        return b"".join(written)

    assert asyncio.run(built()) == bytes(expected)


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("retain", [False, True])
@pytest.mark.parametrize(
    "properties", [{}, {"user_property": [("site", "berlin")]}, {"content_type": "text/plain"}]
)
@pytest.mark.parametrize("topic", ["sensors/s1/telemetry", "capteurs/é/t"])
def test_publish_packets_are_read_as_gmqtt_reads_them(
    qos: int, retain: bool, properties: dict[str, Any], topic: str
) -> None:
    """The connection reads the usual PUBLISH (no properties) itself and
    hands any other to gmqtt's parser: either way the same message comes
    out, with a ticket (and, once settled, the PUBACK or PUBREC of its
    packet id) at QoS 1 and 2."""

    class Protocol:
        proto_ver = MQTTv50
        id_generator = IdGenerator(65536)

    for _ in range(7):  # a packet id past one byte's worth, and not 1
        Protocol.id_generator.next_id()
    payload = b'{"temperature": 35.5}'
    mid, packet = PublishPacket.build_package(
        Message(topic, payload, qos=qos, retain=retain, **properties), Protocol()
    )
    command, body = packet[0], bytes(packet[2:])  # (remaining length: one byte here)

    async def read(fast: bool) -> tuple[Any, bytes]:
        connection = Connection("read", True, 0, 100)
        written: list[bytes] = []
        connection._write = written.append
        if fast:
            connection._read(bytes(packet))  # as read from the socket
        else:
            connection._parse_publish(command, body)
        [(received, ticket)] = connection.inbox
        assert (ticket is None) == (qos == 0)
        if ticket is not None:
            connection.acks.settle(ticket)
        return received, b"".join(written)

    fast, slow = asyncio.run(read(True)), asyncio.run(read(False))
    assert fast == slow
    received, acknowledgement = fast
    assert (received.topic, received.payload, received.qos, received.retain) == (
        topic,
        payload,
        qos,
        retain,
    )
    assert received.user_properties == tuple(properties.get("user_property", ()))
    assert acknowledgement == (
        bytes((0x40 if qos == 1 else 0x50, 2)) + mid.to_bytes(2, "big") if qos else b""
    )


#: PUBLISH packets as a broker may send them: any QoS and retain flag, a topic
#: (ASCII or not), a payload of any size (remaining lengths of 1 to 3 bytes),
#: with or without properties (which go to gmqtt's parser)
publishes = st.lists(
    st.tuples(
        st.sampled_from([0, 1, 2]),
        st.booleans(),
        st.sampled_from(["in", "sensors/s1/telemetry", "capteurs/é/t"]),
        st.one_of(st.binary(max_size=300), st.binary(min_size=16_000, max_size=20_000)),
        st.sampled_from(
            [{}, {"user_property": [("site", "berlin")]}, {"content_type": "text/plain"}]
        ),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(publishes, st.lists(st.integers(min_value=1, max_value=25_000), max_size=40), st.data())
def test_a_byte_stream_is_cut_into_packets_as_gmqtt_cuts_it(
    packets: list[tuple[int, bool, str, bytes, dict[str, Any]]],
    cuts: list[int],
    data: st.DataObject,
) -> None:
    """The connection reads the socket itself: however the bytes of many
    PUBLISH packets come (many packets in one read, one split across reads,
    a split inside a remaining length or a topic), the messages that come
    out, their order and the acknowledgements once settled are those of
    gmqtt's own reader (its ``_read_packet``) and parser."""
    acknowledging = data.draw(st.booleans(), "acknowledging")
    if not acknowledging:  # a connection subscribed at QoS 0 only gets QoS 0
        packets = [(0, *rest) for _, *rest in packets]  # type: ignore[misc]

    class Protocol:
        proto_ver = MQTTv50
        id_generator = IdGenerator(65536)

    stream = b"".join(
        bytes(
            PublishPacket.build_package(
                Message(topic, payload, qos=qos, retain=retain, **properties), Protocol()
            )[1]
        )
        for qos, retain, topic, payload, properties in packets
    )
    reads, at = [], 0
    for cut in cuts:
        if at >= len(stream):
            break
        reads.append(stream[at : at + cut])
        at += cut
    reads.append(stream[at:])

    class Cut:
        """What gmqtt's reader hands on: each packet it cut."""

        def __init__(self) -> None:
            self.packets: list[Package] = []

        def put_package(self, package: Package) -> None:
            self.packets.append(package)

    async def read(ours: bool) -> tuple[list[Any], bytes]:
        connection = Connection("read", True, 0, 100, acknowledges=acknowledging)
        written: list[bytes] = []
        connection._write = written.append
        if ours:
            for chunk in reads:
                connection._read(chunk)
        else:
            reader = MQTTProtocol(
                connection_state=connection._connection_state, id_generator=IdGenerator()
            )
            cut = Cut()
            reader.set_connection(cut)
            assert reader._read_packet(stream) == len(stream)
            for package in cut.packets:
                connection._parse_publish(package.cmd, package.data)
        if not acknowledging:  # gmqtt acknowledged nothing: none was QoS 1/2
            assert written == []
        messages = connection.take(len(packets))
        for _, ticket in messages:
            if ticket is not None:
                connection.acks.settle(ticket)
        return [message for message, _ in messages], b"".join(written)

    ours, gmqtts = asyncio.run(read(True)), asyncio.run(read(False))
    assert ours == gmqtts
    assert [(m.topic, m.payload, m.qos, m.retain) for m in ours[0]] == [
        (topic, payload, qos, retain) for qos, retain, topic, payload, _ in packets
    ]


async def test_a_remaining_length_of_five_bytes_closes_the_connection() -> None:
    """A remaining length says at most 4 bytes (MQTT 5, 1.5.5): from a
    server that sends a fifth continuation byte after its CONNACK (a
    malformed packet), the connection is closed and lost, and no message
    comes out. (gmqtt's own reader stopped reading there, the socket open.)"""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)  # CONNECT
        writer.write(b"\x20\x03\x00\x00\x00")  # CONNACK, Success, no properties
        writer.write(b"\x30\xff\xff\xff\xff\x01" + b"x" * 64)
        await writer.drain()
        await reader.read()  # until the client closes
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connection = Connection("malformed", True, 0, 100)
    try:
        await connection.open("127.0.0.1", port, None, 60, 5)
        await eventually(connection.lost.is_set)
        assert list(connection.inbox) == []
    finally:
        await connection.close()
        server.close()
        await server.wait_closed()


async def test_large_and_small_messages_come_whole_from_the_broker(mosquitto: Mosquitto) -> None:
    """Through a real Mosquitto, messages of 3 MB (read in many chunks) among
    small ones (many in one read) come whole and in order, at QoS 0 and 1."""
    connection = Connection("large-and-small", True, 0, 100)
    await connection.open(mosquitto.host, mosquitto.port, None, 60, 5)
    protocol = connection._connection._protocol
    assert protocol._read_loop_future is None  # gmqtt's reader is not reading
    assert protocol.data_received == connection._data_received
    try:
        await connection.subscribe_checked("mixed/+", 1, 5)
        sizes = [10, 3_000_000, 5, 7, 200_000, 1]
        for qos in (0, 1):
            bodies = [(f"{n}:" + "x" * size) for n, size in enumerate(sizes)]
            await asyncio.to_thread(mosquitto.pub, f"mixed/{qos}", *bodies, qos=qos)
            await eventually(lambda: len(connection.inbox) == len(sizes), seconds=30)
            batch = connection.take(len(bodies))
            assert [m.payload.decode() for m, _ in batch] == bodies
            assert {m.qos for m, _ in batch} == {qos}
            for _, ticket in batch:
                if ticket is not None:
                    connection.acks.settle(ticket)
    finally:
        await connection.close()


async def test_qos2_both_ways_through_the_broker(mosquitto: Mosquitto) -> None:
    """QoS 2 through a real Mosquitto, with this client reading the socket:
    messages in come whole and, settled, are released (PUBREC, then gmqtt
    answers PUBREL with PUBCOMP), so the resumed session brings nothing
    back; publishes out are through once their PUBCOMP comes."""
    total = 20
    connection = Connection("qos2-both-ways", True, 60, 100)
    await connection.open(mosquitto.host, mosquitto.port, None, 60, 5)
    listener = mosquitto.sub("qos2/out", total)
    try:
        await connection.subscribe_checked("qos2/in", 2, 5)
        bodies = [json.dumps({"n": n}) for n in range(total)]
        await asyncio.to_thread(mosquitto.pub, "qos2/in", *bodies, qos=2)
        await eventually(lambda: len(connection.inbox) == total)
        batch = connection.take(total)
        assert [(m.payload.decode(), m.qos) for m, _ in batch] == [(b, 2) for b in bodies]
        for _, ticket in batch:
            assert ticket is not None
            connection.acks.settle(ticket)
        await asyncio.wait_for(
            asyncio.gather(*(connection.send("qos2/out", b, 2, False, {}) for b in bodies)), 10
        )
        out, _ = await asyncio.to_thread(listener.communicate)
        assert out.splitlines() == [f"qos2/out {b}" for b in bodies]
        await asyncio.sleep(0.3)  # the PUBRELs answered
    finally:
        await connection.close()
    again = Connection("qos2-both-ways", False, 0, 100)
    await again.open(mosquitto.host, mosquitto.port, None, 60, 5)
    try:
        await asyncio.sleep(0.5)
        assert len(again.inbox) == 0  # every message was released: none sent again
    finally:
        await again.close()
