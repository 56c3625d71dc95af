"""An MQTT subscription puts as its configured account, end to end with a
real Mosquitto: a bus whose policy does not let that account in refuses the
message's entry (AccessDeniedException); the message is acknowledged (the
broker does not send it again, to this session or the next), logged, and
counted in the resource's ``mqtt_entries_rejected`` gauge."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from pipelines.policy import BusPolicy, permission_statement
from pipelines.runtime import Runtime
from plugins.mqtt.target import MqttTarget

from .helpers import eventually
from .mosquitto import Mosquitto
from .recorder import Recorder, plugin_manager

OWNER, TEAM = "111111111111", "222222222222"
SHARED_ARN = f"arn:aws:events:us-east-1:{OWNER}:event-bus/shared"


def team_runtime(mosquitto: Mosquitto) -> Runtime:
    """The owner's runner: ``shared`` lets the team put, ``default`` does not;
    the team's devices come in through an mqtt source of the team's account,
    on a persistent session (unacknowledged messages would come back)."""
    runtime = Runtime(plugins=plugin_manager(), account=OWNER)
    shared = runtime.create_bus("shared")
    shared.policy = BusPolicy(
        {
            "Version": "2012-10-17",
            "Statement": [permission_statement(SHARED_ARN, statement_id="team", principal=TEAM)],
        }
    )
    broker = {**mosquitto.broker(), "client_id": "team-devices", "clean_start": False}
    runtime.add_resource(
        "devices",
        "mqtt",
        {
            "broker": broker,
            "account": TEAM,
            "subscribe": [
                {"topic": "team/default/#", "bus": "default"},
                {"topic": "team/shared/#", "bus": "shared"},
            ],
        },
    )
    runtime.add_resource("sink", "recorder", {})
    return runtime


async def routed(runtime: Runtime) -> None:
    for bus in ("default", "shared"):
        runtime.bus(bus).put_rule("all", pattern={"source": ["mqtt"]})
        await runtime.bus(bus).put_targets("all", [{"id": "t", "resource": "sink"}])


def received(runtime: Runtime) -> list[Any]:
    found = runtime.resource("sink")
    assert isinstance(found, Recorder)
    return found.received


async def test_a_message_a_bus_policy_refuses_is_acknowledged_logged_and_counted(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    first = team_runtime(mosquitto)
    await routed(first)
    caplog.set_level(logging.ERROR, logger="plugins.mqtt")
    async with first:
        await asyncio.to_thread(mosquitto.pub, "team/default/d1", '{"n": 1}', '{"n": 2}')
        await asyncio.to_thread(mosquitto.pub, "team/shared/d1", '{"n": 3}')
        await eventually(lambda: len(received(first)) == 1)
        devices = first.resource("devices")
        assert isinstance(devices, MqttTarget)
        await eventually(lambda: devices.rejected["AccessDeniedException"] == 2)
        await asyncio.sleep(0.5)  # nothing else arrives: the refused ones are not sent again
        gauges = await devices.gauges()
    [event] = [r.payload for r in received(first)]
    assert (event["detail"]["n"], event["account"]) == (3, TEAM)
    assert devices.received == 3
    assert [(g.name, g.value, dict(g.labels)) for g in gauges] == [
        ("mqtt_entries_rejected", 2, {"code": "AccessDeniedException"})
    ]
    refusals = [r.getMessage() for r in caplog.records if "AccessDeniedException" in r.getMessage()]
    assert refusals, caplog.text
    assert all("team/default/d1" in line for line in refusals)
    assert all(
        f"arn:aws:iam::{TEAM}:root is not authorized to perform: events:PutEvents" in line
        for line in refusals
    )

    # The same session again: the broker kept nothing unacknowledged for it.
    second = team_runtime(mosquitto)
    await routed(second)
    async with second:
        await asyncio.sleep(1.0)
        again = second.resource("devices")
        assert isinstance(again, MqttTarget)
        assert again.received == 0
    assert received(second) == []
