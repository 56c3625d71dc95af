"""The control channel: put and tap on a running pipeline's Unix socket, in
process and through the CLI (real processes)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.control import ControlServer, put_events, tap
from pipelines.errors import ControlError
from pipelines.runtime import Runtime

from .helpers import SINK_MODULE, SINK_PIPELINE, pipelines_command
from .recorder import Recorder, plugin_manager


def entry(source: str, n: int) -> dict[str, Any]:
    return {"Source": source, "DetailType": "t", "Detail": json.dumps({"n": n})}


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Runtime, Path]]:
    runtime = Runtime(plugins=plugin_manager())
    runtime.add_resource("sink", "recorder", {})
    runtime.bus().put_rule("all", pattern={"source": [{"prefix": ""}]})
    await runtime.bus().put_targets("all", [{"id": "t", "resource": "sink"}])
    path = tmp_path / "run" / "control.sock"
    server = ControlServer(runtime, path)
    await server.start()
    async with runtime:
        yield runtime, path
        await server.close()
    assert not path.exists()  # closing removes the socket


async def test_put_delivers_and_reports_each_entry(served: tuple[Runtime, Path]) -> None:
    runtime, path = served
    entries: list[dict[str, Any]] = [entry("shop", n) for n in range(12)]
    entries[3] = {"Source": "shop", "DetailType": "t", "Detail": "not json"}
    result = await put_events(path, entries)
    assert result["FailedEntryCount"] == 1
    assert result["Entries"][3]["ErrorCode"] == "MalformedDetail"
    assert all("EventId" in e for i, e in enumerate(result["Entries"]) if i != 3)
    await runtime.wait_until_idle()
    sink = runtime.resource("sink")
    assert isinstance(sink, Recorder)
    assert sorted(json.loads(json.dumps(r.payload))["detail"]["n"] for r in sink.received) == [
        n for n in range(12) if n != 3
    ]


async def test_put_of_an_entry_that_is_not_an_object_fails_it_alone(
    served: tuple[Runtime, Path],
) -> None:
    _, path = served
    result = await put_events(path, [entry("shop", 1), [1, 2]])  # type: ignore[list-item]
    assert result["FailedEntryCount"] == 1
    assert "EventId" in result["Entries"][0]
    assert result["Entries"][1] == {
        "ErrorCode": "InvalidArgument",
        "ErrorMessage": "Each entry must be an object.",
    }


async def test_tap_streams_matching_events_live(served: tuple[Runtime, Path]) -> None:
    runtime, path = served
    messages = tap(path, {"source": ["shop"]})
    assert await anext(messages) == {"tapping": True}
    await runtime.put_events([entry("shop", 1), entry("other", 2), entry("shop", 3)])
    first, second = await anext(messages), await anext(messages)
    assert [first["bus"], second["bus"]] == ["default", "default"]
    assert [first["event"]["detail"], second["event"]["detail"]] == [{"n": 1}, {"n": 3}]
    await messages.aclose()
    await asyncio.sleep(0.05)
    assert runtime.taps == []  # a client that leaves takes its tap with it


async def test_a_tap_that_reads_too_slowly_is_told_how_many_events_it_missed(
    served: tuple[Runtime, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, path = served
    monkeypatch.setattr("pipelines.control.TAP_BUFFER", 10)
    messages = tap(path)
    assert await anext(messages) == {"tapping": True}
    # Nobody reads while 2 MB of events pass: the socket fills, then the buffer.
    padding = "x" * 10_000
    for batch in range(20):
        entries = [
            {"Source": "shop", "DetailType": "t", "Detail": json.dumps({"n": n, "pad": padding})}
            for n in range(batch * 10, batch * 10 + 10)
        ]
        assert (await runtime.put_events(entries))["FailedEntryCount"] == 0
    await runtime.wait_until_idle()
    seen: list[int] = []
    dropped = 0
    while len(seen) + dropped < 200:
        message = await asyncio.wait_for(anext(messages), 5)
        if "dropped" in message:
            dropped += message["dropped"]
        else:
            seen.append(message["event"]["detail"]["n"])
    await messages.aclose()
    assert dropped > 0 and len(seen) + dropped == 200
    assert seen == sorted(seen) and len(set(seen)) == len(seen)  # in order, none twice
    assert seen[0] == 0  # the first events went out before the reader fell behind


async def test_the_socket_is_private_and_errors_are_clear(
    served: tuple[Runtime, Path], tmp_path: Path
) -> None:
    runtime, path = served
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with pytest.raises(ControlError, match="another pipeline is running with control socket"):
        await ControlServer(runtime, path).start()
    with pytest.raises(ControlError, match="pattern: "):
        await anext(tap(path, {"source": "not a list"}))
    with pytest.raises(ControlError, match="no pipeline is running with control socket"):
        await put_events(tmp_path / "nothing.sock", [entry("shop", 1)])


async def test_a_stale_socket_left_by_a_killed_pipeline_is_replaced(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "control.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays; nobody listens
    runtime = Runtime()
    server = ControlServer(runtime, path)
    await server.start()
    try:
        async with runtime:
            result = await put_events(path, [entry("shop", 1)])
            assert result["FailedEntryCount"] == 0
    finally:
        await server.close()


# -- the CLI -----------------------------------------------------------------------


def test_cli_put_and_tap_on_a_running_pipeline(tmp_path: Path) -> None:
    (tmp_path / "sinkmod.py").write_text(SINK_MODULE)
    config = tmp_path / "pipeline.yaml"
    config.write_text(SINK_PIPELINE)
    sink = tmp_path / "sink.jsonl"
    env = {**os.environ, "SINK_FILE": str(sink)}
    command = pipelines_command()
    runner = subprocess.Popen(
        [*command, "run", str(config)], env=env, stderr=subprocess.PIPE, text=True
    )
    tapper = None
    try:
        assert runner.stderr is not None
        assert "control socket" in runner.stderr.readline()  # started and listening
        tapper = subprocess.Popen(
            [*command, "tap", "-c", str(config), "-p", '{"detail": {"n": [2]}}', "-n", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert tapper.stderr is not None
        assert tapper.stderr.readline().startswith("tap: tapping ")
        entries = [json.dumps(entry("shop", n)) for n in (1, 2)]
        put = subprocess.run(
            [*command, "put", "-c", str(config), *entries, '{"Source": "shop"}'],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert put.returncode == 1, put.stderr  # the third entry has no DetailType
        result = json.loads(put.stdout)
        assert result["FailedEntryCount"] == 1
        assert result["Entries"][2]["ErrorCode"] == "InvalidArgument"
        out, _ = tapper.communicate(timeout=30)
        (line,) = out.splitlines()
        assert json.loads(line)["event"]["detail"] == {"n": 2}
        deadline = time.monotonic() + 20
        while len(sink.read_text().splitlines() if sink.exists() else []) < 2:
            assert time.monotonic() < deadline, "events not delivered"
            time.sleep(0.02)
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=30) == 0
    finally:
        runner.kill()
        if tapper is not None:
            tapper.kill()
    assert not (tmp_path / ".pipelines" / "control.sock").exists()
    again = subprocess.run(
        [*command, "put", "-c", str(config), entries[0]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 1
    assert again.stderr.startswith("error: no pipeline is running with control socket")
