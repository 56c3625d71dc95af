"""The mqtt resource against a real Mosquitto: messages become events (matched
by patterns, acknowledged once safe), events are published to templated
topics, connections come back after a broker restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.errors import ConfigError, PipelinesError
from pipelines.runtime import Runtime
from plugins.mqtt.target import MqttTarget

from .helpers import eventually
from .mosquitto import Mosquitto
from .recorder import Recorder, plugin_manager

PLUGINS = plugin_manager()


def runtime_with(broker: Mosquitto, state: Path | None = None, **settings: Any) -> Runtime:
    runtime = Runtime(plugins=PLUGINS, state_path=state)
    runtime.add_resource("sensors", "mqtt", {"broker": broker.broker(), **settings})
    runtime.add_resource("sink", "recorder", {})
    return runtime


def sink(runtime: Runtime) -> Recorder:
    found = runtime.resource("sink")
    assert isinstance(found, Recorder)
    return found


async def route(runtime: Runtime, pattern: Any, **target: Any) -> None:
    runtime.bus().put_rule("r", pattern=pattern)
    await runtime.bus().put_targets("r", [{"id": "t", "resource": "sink", **target}])


async def test_messages_become_events_matched_by_patterns(mosquitto: Mosquitto) -> None:
    runtime = runtime_with(
        mosquitto, subscribe=[{"topic": "sensors/+/telemetry", "source": "iot.sensors"}]
    )
    await route(
        runtime,
        {
            "source": ["iot.sensors"],
            "resources": [{"wildcard": "sensors/*/telemetry"}],
            "detail": {"temperature": [{"numeric": [">", 30]}]},
        },
    )
    async with runtime:
        await asyncio.to_thread(
            mosquitto.pub,
            "sensors/s1/telemetry",
            json.dumps({"device": "s1", "temperature": 35.5}),
            json.dumps({"device": "s1", "temperature": 20}),
            extra=("-D", "publish", "user-property", "site", "berlin"),
        )
        await asyncio.to_thread(mosquitto.pub, "sensors/s2/telemetry", "not json", qos=0)
        await eventually(lambda: len(sink(runtime).received) >= 1)
        await asyncio.sleep(0.2)
        [got] = sink(runtime).received
    event = got.payload
    assert event["source"] == "iot.sensors" and event["detail-type"] == "MQTT Message"
    assert event["resources"] == ["sensors/s1/telemetry"]
    assert event["detail"] == {
        "device": "s1",
        "temperature": 35.5,
        "mqtt": {
            "topic": "sensors/s1/telemetry",
            "qos": 1,
            "retain": False,
            "user_properties": {"site": "berlin"},
        },
    }


async def test_each_message_takes_the_settings_of_the_subscription_it_came_through(
    mosquitto: Mosquitto,
) -> None:
    # Two filters: each topic's subscription is found once, then remembered.
    runtime = runtime_with(
        mosquitto,
        subscribe=[
            {"topic": "plant/+/temp", "source": "iot.temp"},
            {"topic": "plant/#", "source": "iot.other", "detail_type": "Other"},
        ],
    )
    await route(runtime, {"source": [{"prefix": "iot."}]})
    async with runtime:
        for _ in range(2):
            await asyncio.to_thread(mosquitto.pub, "plant/p1/temp", '{"c": 21}')
            await asyncio.to_thread(mosquitto.pub, "plant/p1/door", '{"open": true}')
        await eventually(lambda: len(sink(runtime).received) >= 4)
        await asyncio.sleep(0.2)
        got = [(r.payload["resources"][0], r.payload["source"]) for r in sink(runtime).received]
        types = {r.payload["source"]: r.payload["detail-type"] for r in sink(runtime).received}
    # plant/p1/temp matches both filters (the broker may hand it on once per
    # filter): the first one listed names it, every time.
    assert sorted(set(got)) == [("plant/p1/door", "iot.other"), ("plant/p1/temp", "iot.temp")]
    assert types == {"iot.temp": "MQTT Message", "iot.other": "Other"}


async def test_a_qos0_subscription_takes_messages_without_acknowledging(
    mosquitto: Mosquitto,
) -> None:
    """Every subscription at QoS 0: messages come at QoS 0 whatever they were
    published with (the broker downgrades them), nothing is withheld."""
    runtime = runtime_with(mosquitto, subscribe=[{"topic": "q0/#", "qos": 0}])
    await route(runtime, {"source": ["mqtt"]})
    async with runtime:
        await asyncio.to_thread(mosquitto.pub, "q0/a", '{"n": 1}', '{"n": 2}', qos=1)
        await eventually(lambda: len(sink(runtime).received) == 2)
    details = [r.payload["detail"] for r in sink(runtime).received]
    assert sorted(d["n"] for d in details) == [1, 2]
    assert {d["mqtt"]["qos"] for d in details} == {0}


async def test_payloads_that_are_not_json_objects_are_wrapped(mosquitto: Mosquitto) -> None:
    runtime = runtime_with(mosquitto, subscribe=["raw/#"], metadata_key=None)
    await route(runtime, {"source": ["mqtt"]}, input_path="$.detail")
    async with runtime:
        await asyncio.to_thread(mosquitto.pub, "raw/a", "hello", "[1, 2]", "42")
        await eventually(lambda: len(sink(runtime).received) == 3)
    assert sorted((r.payload for r in sink(runtime).received), key=json.dumps) == sorted(
        [
            {"payload": "hello", "encoding": "utf-8"},
            {"payload": [1, 2], "encoding": "json"},
            {"payload": 42, "encoding": "json"},
        ],
        key=json.dumps,
    )


async def test_events_are_published_to_templated_topics(mosquitto: Mosquitto) -> None:
    runtime = Runtime(plugins=PLUGINS)
    runtime.add_resource(
        "commands",
        "mqtt",
        {
            "broker": mosquitto.broker(),
            "topic": "devices/<detail.device_id>/commands",
            "user_properties": {"origin": "pipelines"},
        },
    )
    runtime.add_resource("dlq", "recorder", {})
    runtime.bus().put_rule("r", pattern={"source": ["ops"]})
    target = {"id": "t", "resource": "commands", "input_path": "$.detail.command"}
    await runtime.bus().put_targets("r", [{**target, "dead_letter": "dlq"}])
    listener = mosquitto.sub("devices/#", 2)
    async with runtime:
        result = await runtime.put_events(
            [
                {"Source": "ops", "DetailType": "c", "Detail": json.dumps(d)}
                for d in (
                    {"device_id": "d1", "command": {"reboot": True}},
                    {"device_id": "d2", "command": "stop"},
                    {"command": "no device"},
                )
            ]
        )
        assert result["FailedEntryCount"] == 0
        out, _ = await asyncio.to_thread(listener.communicate)
        await runtime.wait_until_idle()
    assert sorted(out.splitlines()) == [
        'devices/d1/commands {"reboot":true}',
        "devices/d2/commands stop",
    ]
    dlq = runtime.resource("dlq")
    assert isinstance(dlq, Recorder)
    [dead] = dlq.received  # the third has no device_id: not retryable
    assert dead.context.attributes["ERROR_CODE"] == "InvalidTopic"
    assert dead.context.attributes["RETRY_ATTEMPTS"] == "0"


async def test_published_messages_carry_user_properties(
    mosquitto: Mosquitto,
) -> None:
    """A delivery publishes with the resource's user properties; read back by
    a subscription of another resource, they are in the event's metadata."""
    runtime = Runtime(plugins=PLUGINS)
    settings = {"broker": mosquitto.broker(), "topic": "loop/<detail.n>", "qos": 1}
    runtime.add_resource("out", "mqtt", {**settings, "user_properties": {"origin": "pipelines"}})
    runtime.add_resource("in", "mqtt", {"broker": mosquitto.broker(), "subscribe": ["loop/#"]})
    runtime.add_resource("sink", "recorder", {})
    runtime.bus().put_rule("publish", pattern={"source": ["local"]})
    await runtime.bus().put_targets("publish", [{"id": "o", "resource": "out"}])
    runtime.bus().put_rule("read", pattern={"source": ["mqtt"]})
    await runtime.bus().put_targets("read", [{"id": "s", "resource": "sink"}])
    async with runtime:
        entries = [
            {"Source": "local", "DetailType": "d", "Detail": json.dumps({"n": n})} for n in range(3)
        ]
        await runtime.put_events(entries)
        await eventually(lambda: len(sink(runtime).received) == 3)
    read = sorted(sink(runtime).received, key=lambda r: r.payload["detail"]["mqtt"]["topic"])
    assert [r.payload["detail"]["mqtt"]["topic"] for r in read] == ["loop/0", "loop/1", "loop/2"]
    assert all(
        r.payload["detail"]["mqtt"]["user_properties"] == {"origin": "pipelines"} for r in read
    )
    assert read[0].payload["detail"]["detail"] == {"n": 0}  # the event, published as JSON


async def test_an_unreachable_broker_is_a_clear_error_at_start(mosquitto: Mosquitto) -> None:
    runtime = Runtime(plugins=PLUGINS)
    broker = {**mosquitto.broker(), "port": mosquitto.port + 1, "connect_timeout": 2}
    runtime.add_resource("m", "mqtt", {"broker": broker, "topic": "t"})
    with pytest.raises(PipelinesError) as caught:
        await runtime.start()
    message = str(caught.value)
    assert f"cannot connect to the MQTT broker at mqtt://127.0.0.1:{mosquitto.port + 1}" in message
    assert "check that it runs" in message


async def test_a_message_is_acknowledged_only_once_its_event_is_safe(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    # The first runtime receives the message but its target holds it; it stops
    # without delivering (no state: nothing saved), so no PUBACK was sent. The
    # broker hands the message again to the same session.
    settings = {
        "broker": {**mosquitto.broker(), "client_id": "acks-test", "clean_start": False},
        "subscribe": ["jobs"],
    }
    first = Runtime(plugins=PLUGINS)
    first.add_resource("in", "mqtt", settings)
    first.add_resource("sink", "recorder", {"hold": True})
    first.bus().put_rule("r", pattern={"source": ["mqtt"]})
    await first.bus().put_targets("r", [{"id": "t", "resource": "sink"}])
    async with first:
        await asyncio.to_thread(mosquitto.pub, "jobs", '{"job": 1}')
        await eventually(lambda: sink(first).waiting == 1)
        await first.stop(timeout=0.1)
    assert sink(first).received == []

    second = Runtime(plugins=PLUGINS)
    second.add_resource("in", "mqtt", settings)
    second.add_resource("sink", "recorder", {})
    second.bus().put_rule("r", pattern={"source": ["mqtt"]})
    await second.bus().put_targets("r", [{"id": "t", "resource": "sink"}])
    async with second:
        await eventually(lambda: len(sink(second).received) == 1)
        await asyncio.sleep(0.3)
    [again] = sink(second).received
    assert again.payload["detail"]["job"] == 1

    third = Runtime(plugins=PLUGINS)  # acknowledged now: nothing comes a third time
    third.add_resource("in", "mqtt", settings)
    third.add_resource("sink", "recorder", {})
    third.bus().put_rule("r", pattern={"source": ["mqtt"]})
    await third.bus().put_targets("r", [{"id": "t", "resource": "sink"}])
    async with third:
        await asyncio.sleep(0.5)
    assert sink(third).received == []


async def test_reconnects_and_resubscribes_after_a_broker_restart(mosquitto: Mosquitto) -> None:
    runtime = runtime_with(mosquitto, subscribe=["in"], topic="out")
    await route(runtime, {"source": ["mqtt"]})
    runtime.bus().put_rule("echo", pattern={"source": ["local"]})
    await runtime.bus().put_targets(
        "echo", [{"id": "o", "resource": "sensors", "retry_policy": {"maximum_retry_attempts": 50}}]
    )
    async with runtime:
        mqtt = runtime.resource("sensors")
        assert isinstance(mqtt, MqttTarget)
        await asyncio.to_thread(mosquitto.pub, "in", '{"n": 1}')
        await eventually(lambda: len(sink(runtime).received) == 1)
        mosquitto.stop()
        await eventually(lambda: mqtt.client is None)
        # Published while the broker is down: retryable, retried after it returns.
        await runtime.put_events([{"Source": "local", "DetailType": "d", "Detail": "{}"}])
        await asyncio.sleep(0.3)
        listener_started = asyncio.to_thread(mosquitto.start)
        await listener_started
        listener = mosquitto.sub("out", 1)
        await eventually(lambda: mqtt.connections >= 2)
        await asyncio.to_thread(mosquitto.pub, "in", '{"n": 2}')
        await eventually(lambda: len(sink(runtime).received) == 2)
        out, _ = await asyncio.to_thread(listener.communicate)
    assert out.startswith("out {")
    assert [r.payload["detail"]["n"] for r in sink(runtime).received] == [1, 2]


@pytest.mark.parametrize(
    ("settings", "where", "message"),
    [
        ({}, "target m", "give a topic to publish to, or subscribe"),
        ({"topic": "a/+/b"}, "target m.topic", "no + or # wildcard"),
        ({"topic": "a/<detail..x>"}, "target m.topic", "is not a path"),
        ({"subscribe": [{"topic": "a", "qos": 3}]}, "target m.subscribe[0].qos", "0, 1 or 2"),
        ({"subscribe": ["$share/g/a"]}, "target m.subscribe[0].topic", "plain filter"),
        ({"topic": "a", "broker": {"prot": 1}}, "target m.broker.prot", "did you mean 'port'"),
        ({"topic": "a", "ack": "never"}, "target m.ack", "delivered or accepted"),
    ],
)
def test_settings_problems_name_their_place(
    settings: dict[str, Any], where: str, message: str
) -> None:
    from plugins.mqtt.target import MqttType

    with pytest.raises(ConfigError) as caught:
        MqttType().create("m", settings)
    assert caught.value.where == where
    assert message in caught.value.message


async def test_username_and_password_are_used_and_a_refusal_is_clear(tmp_path: Path) -> None:
    from .mosquitto import free_port

    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwords), "edge", "s3cret"], check=True)
    broker = Mosquitto(
        tmp_path, free_port(), extra=f"allow_anonymous false\npassword_file {passwords}\n"
    )
    broker.start()
    try:
        good = {**broker.broker(), "username": "edge", "password": "s3cret"}
        runtime = Runtime(plugins=PLUGINS)
        runtime.add_resource("m", "mqtt", {"broker": good, "topic": "out"})
        runtime.bus().put_rule("r", pattern={"source": ["x"]})
        await runtime.bus().put_targets("r", [{"id": "t", "resource": "m"}])
        async with runtime:
            mqtt = runtime.resource("m")
            assert isinstance(mqtt, MqttTarget) and mqtt.connections == 1

        bad = Runtime(plugins=PLUGINS)
        bad.add_resource("m", "mqtt", {"broker": {**good, "password": "wrong"}, "topic": "out"})
        with pytest.raises(PipelinesError) as caught:
            await bad.start()
        message = str(caught.value)
        assert f"the MQTT broker at mqtt://127.0.0.1:{broker.port} refused the login" in message
        assert "Not authorized" in message  # Mosquitto answers a wrong password so
        assert "check broker.username and broker.password" in message
    finally:
        broker.stop()


async def test_tls_with_a_client_certificate(tmp_path: Path) -> None:
    from .mosquitto import free_port, make_certificates

    certificates = make_certificates(tmp_path)
    broker = Mosquitto(tmp_path, free_port(), extra=certificates.listener())
    broker.start()
    try:
        tls = {
            "ca_file": str(certificates.ca),
            "cert_file": str(certificates.client_cert),
            "key_file": str(certificates.client_key),
        }
        runtime = Runtime(plugins=PLUGINS)
        settings = {"broker": {**broker.broker(), "tls": tls}, "subscribe": ["in/#"]}
        runtime.add_resource("sensors", "mqtt", settings)
        runtime.add_resource("sink", "recorder", {})
        await route(runtime, {"source": ["mqtt"]})
        async with runtime:
            assert runtime.resource("sensors").broker.address.startswith("mqtts://")  # type: ignore[attr-defined]
            client_tls = ("--cafile", str(certificates.ca), "--cert", str(certificates.client_cert))
            broker.pub(
                "in/a", '{"n": 1}', extra=(*client_tls, "--key", str(certificates.client_key))
            )
            await eventually(lambda: len(sink(runtime).received) == 1)
        assert sink(runtime).received[0].payload["detail"]["n"] == 1

        # Without the client certificate the broker ends the handshake; with
        # the system's CAs our test CA is unknown: both are clear errors at start.
        for partial in ({"ca_file": str(certificates.ca)}, True):
            refused = Runtime(plugins=PLUGINS)
            broker_settings = {**broker.broker(), "tls": partial, "connect_timeout": 3}
            refused.add_resource("m", "mqtt", {"broker": broker_settings, "topic": "out"})
            with pytest.raises(PipelinesError) as caught:
                await refused.start()
            message = str(caught.value)
            assert (
                f"cannot connect to the MQTT broker at mqtts://127.0.0.1:{broker.port}" in message
            )
            assert "broker.tls" in message
    finally:
        broker.stop()


@contextlib.contextmanager
def secured_broker(tmp_path: Path, permission: str) -> Iterator[dict[str, Any]]:
    """A Mosquitto with its dynamic security plugin, and the login of client
    ``edge``, whose one role allows ``permission`` (an ACL type:
    ``subscribePattern``, ``publishClientSend``) on ``allowed/#`` only."""
    from .mosquitto import free_port

    security = tmp_path / "dynsec.json"
    subprocess.run(
        ["mosquitto_ctrl", "dynsec", "init", str(security), "admin", "adminpw"],
        check=True,
        capture_output=True,
    )
    plugin = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"
    extra = f"plugin {plugin}\nplugin_opt_config_file {security}\n"
    broker = Mosquitto(tmp_path, free_port(), extra=extra)
    broker.start()
    try:
        ctrl = ["mosquitto_ctrl", "-h", broker.host, "-p", str(broker.port)]
        for command in (
            ["createClient", "edge", "-p", "s3cret"],
            ["createRole", "edge-role"],
            ["addRoleACL", "edge-role", permission, "allowed/#", "allow"],
            ["addClientRole", "edge", "edge-role"],
        ):
            admin = [*ctrl, "-u", "admin", "-P", "adminpw", "dynsec", *command]
            subprocess.run(admin, check=True, capture_output=True)
        yield {**broker.broker(), "username": "edge", "password": "s3cret"}
    finally:
        broker.stop()


async def test_a_refused_subscription_is_a_clear_error(tmp_path: Path) -> None:
    """Mosquitto's dynamic security plugin refuses subscriptions in SUBACK
    (its plain acl_file only filters deliveries)."""
    with secured_broker(tmp_path, "subscribePattern") as login:
        allowed = Runtime(plugins=PLUGINS)
        allowed.add_resource("m", "mqtt", {"broker": login, "subscribe": ["allowed/#"]})
        async with allowed:
            assert allowed.resource("m").connections == 1  # type: ignore[attr-defined]

        refused = Runtime(plugins=PLUGINS)
        subscribe = ["allowed/#", "secret/#"]
        refused.add_resource("m", "mqtt", {"broker": login, "subscribe": subscribe})
        with pytest.raises(PipelinesError) as caught:
            await refused.start()
        message = str(caught.value)
        assert "refused the subscription to secret/#: Not authorized" in message
        assert "check the broker's ACL" in message


async def test_a_publish_the_broker_refuses_fails_its_delivery(tmp_path: Path) -> None:
    """Mosquitto's dynamic security plugin refuses a publish in its PUBACK
    (reason code Not authorized): the delivery fails for good and goes to
    the dead-letter target, rather than count as delivered; the publishes it
    allows go on around it."""
    with secured_broker(tmp_path, "publishClientSend") as login:
        runtime = Runtime(plugins=PLUGINS)
        runtime.add_resource("out", "mqtt", {"broker": login, "topic": "<detail.to>/x", "qos": 1})
        runtime.add_resource("dlq", "recorder", {})
        runtime.bus().put_rule("r", pattern={"source": ["ops"]})
        await runtime.bus().put_targets("r", [{"id": "t", "resource": "out", "dead_letter": "dlq"}])
        async with runtime:
            entries = [
                {"Source": "ops", "DetailType": "c", "Detail": json.dumps({"to": to})}
                for to in ("allowed", "secret", "allowed")
            ]
            await runtime.put_events(entries)
            dlq = runtime.resource("dlq")
            assert isinstance(dlq, Recorder)
            await eventually(lambda: len(dlq.received) == 1)
            await runtime.wait_until_idle()
            stats = runtime.deliverer.outcomes
        [dead] = dlq.received
        assert dead.payload["detail"] == {"to": "secret"}
        attributes = dead.context.attributes
        assert attributes["ERROR_CODE"] == "PublishRefused"
        assert "Not authorized" in attributes["ERROR_MESSAGE"]
        assert attributes["RETRY_ATTEMPTS"] == "0"  # not retryable: refused again
        assert stats.delivered == 2


async def test_a_replaced_resource_hands_its_connection_over(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """A reload that changes an mqtt resource starts its successor while the old
    one still runs. Both would use the same client id, and the broker would
    kick one connection for the other, back and forth: the old one lets go first."""
    runtime = runtime_with(mosquitto, tmp_path / "state.db", subscribe=["in/#"])
    await route(runtime, {"source": ["mqtt"]})
    async with runtime:
        old = runtime.resource("sensors")
        assert isinstance(old, MqttTarget)
        # A successor that cannot connect changes nothing: the old one connects again.
        unreachable = {**mosquitto.broker(), "port": mosquitto.port + 1, "connect_timeout": 1}
        with pytest.raises(PipelinesError, match="cannot connect"):
            await runtime.put_resource(
                "sensors", "mqtt", {"broker": unreachable, "subscribe": ["x"]}
            )
        assert runtime.resource("sensors") is old
        mosquitto.pub("in/a", '{"n": -1}')
        await eventually(lambda: len(sink(runtime).received) == 1)
        assert old.connections == 2
        sink(runtime).received.clear()

        settings = {"broker": mosquitto.broker(), "subscribe": ["in/#"], "metadata_key": "m"}
        new = await runtime.put_resource("sensors", "mqtt", settings)
        assert isinstance(new, MqttTarget) and new is not old
        assert old.client is None  # let go before the new one connected
        mosquitto.pub("in/a", *[json.dumps({"n": n}) for n in range(50)])
        await eventually(lambda: len(sink(runtime).received) == 50)
        await asyncio.sleep(0.3)  # time for a kicked connection to come back
        assert new.connections == 1
        assert {r.payload["detail"]["m"]["topic"] for r in sink(runtime).received} == {"in/a"}
    log = (mosquitto.directory / "mosquitto.log").read_text()
    assert "already connected" not in log  # no connection was kicked for another


async def test_messages_put_in_many_batches_reach_the_bus_in_the_order_they_came(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    # A state database: each put waits for its commit while the next batch
    # is put (a window of 10 cuts 600 messages into many batches). Whatever
    # overlaps, the events keep the order of the messages, at QoS 1 and 0.
    runtime = Runtime(plugins=PLUGINS, state_path=tmp_path / "state.db")
    settings = {
        "broker": {**mosquitto.broker(), "receive_maximum": 10},
        "subscribe": [{"topic": "in/one", "qos": 1}, {"topic": "in/zero", "qos": 0}],
    }
    runtime.add_resource("sensors", "mqtt", settings)
    runtime.add_resource("sink", "recorder", {})
    await route(runtime, {"source": ["mqtt"]})
    async with runtime:
        for topic, qos in (("in/one", 1), ("in/zero", 0)):
            sink(runtime).received.clear()
            messages = [json.dumps({"n": n}) for n in range(600)]
            await asyncio.to_thread(mosquitto.pub, topic, *messages, qos=qos)
            await eventually(lambda: len(sink(runtime).received) == 600)
            got = [r.payload["detail"]["n"] for r in sink(runtime).received]
            assert got == list(range(600)), topic
