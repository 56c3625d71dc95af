"""One runner per state database, and a clean start edge for puts.

Real processes hold the lock; a SIGKILLed holder releases it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import pytest

from pipelines import control
from pipelines.errors import NotRunningError, StateError
from pipelines.runnerlock import lock_path
from pipelines.runtime import Runtime
from tests.helpers import pipelines_command, run_cli
from tests.recorder import plugin_manager

CONFIG = """
state: state/state.db
resources:
  sink: {type: function, function: "os:getcwd"}
rules:
  r:
    pattern: {source: [nobody]}
    targets: [{id: t, resource: sink}]
"""


async def test_a_second_runtime_on_the_same_state_is_refused_until_the_first_stops(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.db"
    first, second = Runtime(state_path=state), Runtime(state_path=state)
    async with first:
        with pytest.raises(StateError) as refused:
            await second.start()
        message = str(refused.value)
        assert str(state) in message and f"pid {os.getpid()}" in message
        assert first.running and not second.running
    third = Runtime(state_path=state)
    async with third:  # released at stop
        assert third.running


async def test_the_lock_file_is_private(tmp_path: Path) -> None:
    state = tmp_path / "deep" / "state.db"
    async with Runtime(state_path=state):
        assert lock_path(state).stat().st_mode & 0o777 == 0o600
        assert lock_path(state).read_text().strip() == str(os.getpid())


def start_runner(config: Path, socket: Path) -> subprocess.Popen[str]:
    runner = subprocess.Popen(
        [*pipelines_command(), "run", str(config), "--control", str(socket)],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert runner.stderr is not None
    assert "pipeline started" in runner.stderr.readline()
    return runner


def test_a_second_runner_is_refused_and_a_killed_one_releases_the_lock(tmp_path: Path) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text(CONFIG)
    state = tmp_path / "state" / "state.db"
    first = start_runner(config, tmp_path / "one.sock")
    try:
        second = run_cli("run", str(config), "--control", str(tmp_path / "two.sock"))
        assert second.returncode == 1
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in second.stderr
        assert str(state) in lines[0] and f"pid {first.pid}" in lines[0]
        # Read-only commands go on while a runner holds the database.
        listed = run_cli("archive", "list", "--state", str(state))
        assert listed.returncode == 0, listed.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    third = start_runner(config, tmp_path / "three.sock")
    third.send_signal(signal.SIGTERM)
    assert third.wait(timeout=30) == 0


async def test_a_put_that_arrives_while_the_runtime_starts_waits_for_it(tmp_path: Path) -> None:
    runtime = Runtime(plugins=plugin_manager())
    runtime.add_resource("sink", "recorder", {})
    bus = runtime.bus()
    bus.put_rule("r", pattern={"source": ["shop"]})
    await bus.put_targets("r", [{"id": "t", "resource": "sink"}])
    server = control.ControlServer(runtime, tmp_path / "c.sock")
    await server.start()  # as the runner does: the socket first
    try:
        entry = {"Source": "shop", "DetailType": "t", "Detail": "{}"}
        puts = [asyncio.create_task(control.put_events(server.path, [entry])) for _ in range(20)]
        await asyncio.sleep(0.2)
        assert not any(put.done() for put in puts)  # waiting, not refused
        await runtime.start()
        results = await asyncio.gather(*puts)
        assert all(r["FailedEntryCount"] == 0 and "EventId" in r["Entries"][0] for r in results)
        await runtime.wait_until_idle()
    finally:
        await server.close()
        await runtime.stop()


async def test_wait_running_says_why_it_gave_up() -> None:
    runtime = Runtime()
    with pytest.raises(NotRunningError, match="still starting"):
        await runtime.wait_running(0.05)
    async with runtime:
        await runtime.wait_running(0.05)
    with pytest.raises(NotRunningError, match="stopping"):
        await runtime.wait_running(0.05)
    with pytest.raises(NotRunningError, match="stopping"):
        await runtime.put_events([{"Source": "s", "DetailType": "t", "Detail": "{}"}])
