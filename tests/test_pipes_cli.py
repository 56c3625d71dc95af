"""``pipelines pipes list|describe|start|stop`` in real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from pipelines.pluginmanager import ENTRY_POINT_GROUP

from .helpers import pipelines_command
from .test_pipes import config, runtime_of, send, until


def environment(tmp_path: Path) -> dict[str, str]:
    """The CLI's environment: where this plugin is not installed yet, a
    distribution naming it in the entry point group, as an installed one does."""
    env = dict(os.environ)
    names = {entry.name for entry in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    if "pipes" not in names:
        site = tmp_path / "site"
        info = site / "pipelines_pipes_test-0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pipelines-pipes-test\n")
        (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\npipes = plugins.pipes\n")
        env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("PIPELINES_LOAD_PLUGINS", None)
    return env


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*pipelines_command(), "pipes", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def answer(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


PIPELINE = """
state: state.db
resources:
  orders: {type: queue}
  collect: {type: function, function: "tests.pipes_functions:collect"}
pipes:
  orders-in:
    source: orders
    filters: [{body: {keep: [true]}}]
    target: collect
"""


async def test_list_describe_start_and_stop(tmp_path: Path) -> None:
    path = config(tmp_path, PIPELINE)
    state = str(tmp_path / "state.db")
    runtime = await runtime_of(path, state)
    async with runtime:
        await send(runtime, "orders", [{"keep": True}, {"keep": False}, {"keep": True}])

        async def counted() -> bool:
            return runtime.resource("orders-in").counts["delivered"] == 2  # type: ignore[attr-defined,no-any-return]

        await until(counted)
    env = environment(tmp_path)
    [listed] = answer(cli(env, "list", "-c", str(path)))
    assert listed == {
        "Name": "orders-in",
        "Origin": "config",
        "Source": "orders",
        "Target": "collect",
        "DesiredState": "RUNNING",
        "CurrentState": "STOPPED",
        "Received": 3,
        "FilteredOut": 1,
        "Enriched": 0,
        "Delivered": 2,
        "Failed": 0,
    }
    described = answer(cli(env, "describe", "orders-in", "-c", str(path)))
    assert described["Settings"]["filters"] == [{"body": {"keep": [True]}}]
    assert answer(cli(env, "stop", "orders-in", "-c", str(path)))["DesiredState"] == "STOPPED"
    # Stopped holds at the next start: the pipe reads nothing.
    runtime = await runtime_of(path, state)
    async with runtime:
        assert runtime.resource("orders-in").current_state == "STOPPED"  # type: ignore[attr-defined]
    assert answer(cli(env, "start", "orders-in", "--state", state))["DesiredState"] == "RUNNING"
    table = cli(env, "list", "--state", state, "-o", "table")
    assert table.returncode == 0 and "orders-in" in table.stdout and "Delivered" in table.stdout
    missing = cli(env, "describe", "nope", "--state", state)
    assert missing.returncode != 0
    assert "no pipe named 'nope' (pipes: orders-in)" in missing.stderr
    assert "Traceback" not in missing.stderr
