"""QoS 1 messages acknowledged once delivered stay the broker's until then:
with a session the broker keeps, the source puts them as ``held`` and the
durable intake writes no row for them (the broker sends them again after a
crash; a row would deliver them a second time). Against a real Mosquitto,
with a real ``pipelines run`` killed mid-delivery."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from pipelines.runtime import Runtime

from .helpers import eventually, pipelines_command, project_env
from .mosquitto import Mosquitto
from .recorder import Recorder, plugin_manager


def intake_rows(state: Path) -> int:
    with sqlite3.connect(state) as db:
        return int(db.execute("SELECT count(*) FROM intake").fetchone()[0])


async def held_in_flight(broker: Mosquitto, state: Path, **session: Any) -> int:
    """Publish three QoS 1 messages to a runner whose target holds them; the
    intake rows there are while they are in flight."""
    runtime = Runtime(plugins=plugin_manager(), state_path=state)
    settings = {"broker": {**broker.broker(), **session}, "subscribe": [{"topic": "jobs"}]}
    runtime.add_resource("in", "mqtt", settings)
    runtime.add_resource("sink", "recorder", {"hold": True})
    runtime.bus().put_rule("r", pattern={"source": ["mqtt"]})
    await runtime.bus().put_targets("r", [{"id": "t", "resource": "sink"}])
    async with runtime:
        sink = runtime.resource("sink")
        assert isinstance(sink, Recorder)
        for n in range(3):
            await asyncio.to_thread(broker.pub, "jobs", json.dumps({"n": n}))
        await eventually(lambda: sink.waiting == 3)
        assert runtime.intake is not None
        await eventually(lambda: runtime.intake is not None and runtime.intake.idle)
        rows = intake_rows(state)
        sink.release()
        await eventually(lambda: len(sink.received) == 3)
    return rows


async def test_messages_the_broker_keeps_get_no_intake_row(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    assert await held_in_flight(mosquitto, tmp_path / "kept.db") == 0
    # A clean start keeps no session: the rows are what survives a crash.
    clean = {"client_id": "clean-runner", "clean_start": True}
    assert await held_in_flight(mosquitto, tmp_path / "clean.db", **clean) == 3


SLOW = """
import asyncio
import json
from pathlib import Path

async def handle(event):
    with (Path(__file__).parent / "started.txt").open("a") as out:
        out.write(json.dumps(event["detail"]["n"]) + "\\n")
    await asyncio.sleep(3600)
"""

RECORD = """
import json
from pathlib import Path

def handle(event):
    with (Path(__file__).parent / "delivered.txt").open("a") as out:
        out.write(json.dumps(event["detail"]["n"]) + "\\n")
"""

CONFIG = """
state: state.db
resources:
  in:
    type: mqtt
    broker: {host: 127.0.0.1, port: PORT}
    subscribe: [{topic: jobs, qos: 1}]
  deliver: {type: function, function: "MODULE:handle", timeout: 900}
rules:
  all:
    pattern: {source: [mqtt]}
    targets: [{id: t, resource: deliver}]
"""


def start_runner(directory: Path, broker: Mosquitto, module: str) -> subprocess.Popen[str]:
    config = directory / f"{module}.yaml"
    config.write_text(CONFIG.replace("PORT", str(broker.port)).replace("MODULE", module))
    log = (directory / f"{module}.log").open("w")
    runner = subprocess.Popen(
        [*pipelines_command(), "run", str(config)],
        stderr=log,
        text=True,
        env=project_env(),
    )
    return runner


def wait_for_line(path: Path, text: str, runner: subprocess.Popen[str]) -> None:
    for _ in range(600):
        if path.exists() and text in path.read_text():
            return
        assert runner.poll() is None, path.read_text()
        subprocess.run(["sleep", "0.05"], check=True)
    raise AssertionError(f"{text!r} not in {path}: {path.read_text()}")


async def test_a_runner_killed_mid_delivery_gets_each_held_message_once_again(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """Killed while its target holds three messages: after the restart the
    broker hands them back and each is delivered once (no intake row
    delivers a second copy), none lost."""
    (tmp_path / "slow.py").write_text(SLOW)
    (tmp_path / "record.py").write_text(RECORD)
    first = start_runner(tmp_path, mosquitto, "slow")
    try:
        wait_for_line(tmp_path / "slow.log", "pipeline started", first)
        for n in range(3):
            await asyncio.to_thread(mosquitto.pub, "jobs", json.dumps({"n": n}))
        # Each message is on the bus, in the slow function, unacknowledged.
        started = tmp_path / "started.txt"
        await eventually(lambda: started.exists() and len(started.read_text().split()) == 3)
        await asyncio.sleep(0.3)  # a row would be committed by now
        assert intake_rows(tmp_path / "state.db") == 0
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    second = start_runner(tmp_path, mosquitto, "record")
    try:
        delivered = tmp_path / "delivered.txt"
        await eventually(lambda: delivered.exists() and len(delivered.read_text().split()) >= 3)
        await asyncio.sleep(1.0)  # a second copy would come now
        assert sorted(delivered.read_text().split()) == ["0", "1", "2"]
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0
