"""A pipe whose source is an MQTT topic, on a real Mosquitto broker."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from pipelines.runtime import Runtime
from plugins.pipes.pipe import PipeTarget

from . import pipes_functions as functions
from .mosquitto import Mosquitto
from .test_pipes import manager, until


def runtime_with(broker: Mosquitto, state: Path, fail_hot: bool = False) -> Runtime:
    runtime = Runtime(state_path=state, plugins=manager())
    runtime.add_resource("sensors", "mqtt", {"broker": broker.broker(), "topic": "alerts/out"})
    runtime.add_resource("collect", "function", {"function": "tests.pipes_functions:collect"})
    runtime.add_resource(
        "readings",
        "pipe",
        {
            "source": "sensors",
            "source_parameters": {"topic": "sensors/+/telemetry", "qos": 1, "batch_size": 10},
            "filters": [{"payload": {"temperature": [{"numeric": [">", 80]}]}}],
            "target": "collect",
            "target_parameters": {
                "input_template": '{"device": <$.payload.device>, "at": "<$.topic>"}'
            },
        },
    )
    return runtime


def collected() -> list[object]:
    return [event for batch in functions.batches.get("collect", []) for event in batch]


async def test_mqtt_messages_are_piped_and_those_sent_while_down_come_after(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    functions.reset()
    state = tmp_path / "state.db"
    runtime = runtime_with(mosquitto, state)
    async with runtime:
        pipe = runtime.resource("readings")
        assert isinstance(pipe, PipeTarget) and pipe.current_state == "RUNNING", pipe.state_reason
        await asyncio.to_thread(
            mosquitto.pub,
            "sensors/boiler-1/telemetry",
            json.dumps({"device": "boiler-1", "temperature": 91}),
            json.dumps({"device": "boiler-1", "temperature": 20}),
        )
        await until(lambda: asyncio.sleep(0, len(collected()) == 1))
        assert collected() == [{"device": "boiler-1", "at": "sensors/boiler-1/telemetry"}]
        assert pipe.counts["filtered"] == 1
    # Sent while the runner is down: the broker keeps it for the pipe's session.
    await asyncio.to_thread(
        mosquitto.pub,
        "sensors/boiler-2/telemetry",
        json.dumps({"device": "boiler-2", "temperature": 99}),
    )
    runtime = runtime_with(mosquitto, state)
    async with runtime:
        await until(lambda: asyncio.sleep(0, len(collected()) == 2))
    assert collected()[1] == {"device": "boiler-2", "at": "sensors/boiler-2/telemetry"}
