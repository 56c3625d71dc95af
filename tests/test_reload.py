"""Reloading a running pipeline: ``pipelines.reload`` in process, and
``pipelines run`` reloading on SIGHUP and with --watch (real subprocesses)."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from pipelines.config import PipelineConfig, build_runtime, load_config
from pipelines.errors import ConfigInvalid
from pipelines.process import tuned_process
from pipelines.reload import reload
from pipelines.runtime import Runtime

from .helpers import SINK_MODULE, SINK_PIPELINE, Cyclic, pipelines_command
from .recorder import Recorder, plugin_manager

BASE = """
resources:
  a: {type: recorder, concurrency: 1, hold: true}
rules:
  r1:
    pattern: {source: [shop]}
    targets: [{id: t1, resource: a}]
"""


def config(directory: Path, text: str, name: str = "pipeline.yaml") -> PipelineConfig:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip())
    return load_config(path)


def event(source: str = "shop", **detail: Any) -> dict[str, Any]:
    return {"Source": source, "DetailType": "t", "Detail": json.dumps(detail)}


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Runtime, PipelineConfig]]:
    current = config(tmp_path, BASE)
    runtime = await build_runtime(current, state_path=None, plugins=plugin_manager())
    async with runtime:
        yield runtime, current


def recorder(runtime: Runtime, name: str) -> Recorder:
    target = runtime.resource(name)
    assert isinstance(target, Recorder)
    return target


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_reload_adds_changes_and_removes(
    running: tuple[Runtime, PipelineConfig], tmp_path: Path
) -> None:
    runtime, current = running
    recorder(runtime, "a").release()
    new = config(
        tmp_path,
        """
        buses: [audit]
        resources:
          a: {type: recorder, concurrency: 1, hold: true}
          b: {type: recorder}
        rules:
          r1:
            pattern: {source: [shop]}
            targets: [{id: t1, resource: a, input_path: $.detail}]
          r2:
            bus: audit
            pattern: {source: [shop]}
            targets: [{id: t2, resource: b}]
        """,
    )
    summary = await reload(runtime, current, new)
    assert summary.added == ["resource b", "bus audit", "rule r2"]
    assert summary.changed == ["rule r1"]
    assert summary.removed == []
    assert str(summary) == "added: resource b, bus audit, rule r2; changed: rule r1"
    kept = runtime.bus().delivery("r1", "t1")
    assert kept is not None and kept.dead_letter is None  # a new resource is nobody's DLQ
    await runtime.put_events([event(n=1), {**event(n=2), "EventBusName": "audit"}])
    await runtime.wait_until_idle()
    # r1's target now takes the detail; r2 on the new bus reaches the new resource.
    assert [r.payload for r in recorder(runtime, "a").received] == [{"n": 1}]
    assert [r.payload["detail"] for r in recorder(runtime, "b").received] == [{"n": 2}]

    summary = await reload(runtime, new, current)
    assert summary.removed == ["rule r2", "resource b", "bus audit"]
    assert [bus.name for bus in runtime.buses()] == ["default"]
    assert runtime.resource_names() == ["a"]
    assert str(await reload(runtime, current, current)) == "no changes"


async def test_events_queued_and_in_flight_survive_a_replaced_resource(
    running: tuple[Runtime, PipelineConfig], tmp_path: Path
) -> None:
    runtime, current = running
    old = recorder(runtime, "a")
    await runtime.put_events([event(n=n) for n in range(5)])
    await until(lambda: old.waiting == 1)  # one in flight on the old target, four queued
    new = config(tmp_path, BASE.replace("hold: true", "hold: false"))
    reloading = asyncio.create_task(reload(runtime, current, new))
    await until(lambda: runtime.resource("a") is not old)
    old.release()  # the call in flight ends on the resource it started on
    summary = await reloading
    assert summary.changed == ["resource a"]
    await runtime.wait_until_idle()
    replaced = recorder(runtime, "a")
    received = [r.payload["detail"]["n"] for r in old.received + replaced.received]
    assert sorted(received) == [0, 1, 2, 3, 4]
    assert len(old.received) == 1 and len(replaced.received) == 4
    assert old.stopped and not replaced.stopped


async def test_a_removed_target_delivers_what_it_holds_then_retires(
    running: tuple[Runtime, PipelineConfig], tmp_path: Path
) -> None:
    runtime, current = running
    held = recorder(runtime, "a")
    await runtime.put_events([event(n=n) for n in range(3)])
    await until(lambda: held.waiting == 1)
    new = config(
        tmp_path,
        """
        resources:
          a: {type: recorder, concurrency: 1, hold: true}
          b: {type: recorder}
        rules:
          r1:
            pattern: {source: [shop]}
            targets: [{id: t2, resource: b}]
        """,
    )
    reloading = asyncio.create_task(reload(runtime, current, new))
    await until(lambda: [t["id"] for t in runtime.bus().list_targets_by_rule("r1")] == ["t2"])
    await runtime.put_events([event(n=3)])  # after the swap: reaches only the new target
    await until(lambda: len(recorder(runtime, "b").received) == 1)
    held.release()
    await reloading
    assert [r.payload["detail"]["n"] for r in held.received] == [0, 1, 2]
    assert [r.payload["detail"]["n"] for r in recorder(runtime, "b").received] == [3]
    assert runtime.bus().delivery("r1", "t1") is None


async def test_a_config_with_problems_is_refused_and_nothing_changes(
    running: tuple[Runtime, PipelineConfig], tmp_path: Path
) -> None:
    runtime, current = running
    recorder(runtime, "a").release()
    bad = config(
        tmp_path,
        """
        state: elsewhere.db
        resources:
          a: {type: recorder}
        rules:
          r1:
            pattern: {source: [shop]}
            targets: [{id: t1, resource: b}]
        """,
        name="bad.yaml",
    )
    with pytest.raises(ConfigInvalid) as refused:
        await reload(runtime, current, bad)
    messages = [str(p) for p in refused.value.problems]
    assert messages[0].startswith(f"{tmp_path / 'bad.yaml'}:1:1: state: the state database")
    assert messages[1].startswith(
        f"{tmp_path / 'bad.yaml'}:7:24: rules.r1.targets[0].resource: no resource named 'b'"
    )
    await runtime.put_events([event(n=1)])
    await runtime.wait_until_idle()
    assert [r.payload["detail"]["n"] for r in recorder(runtime, "a").received] == [1]


# -- the CLI: real processes, real signals --------------------------------------

V1 = SINK_PIPELINE

V2 = (
    V1.replace('"sinkmod:record"}', '"sinkmod:record", timeout: 30}')
    + """
  audit:
    pattern: {source: [shop]}
    targets: [{id: a, resource: audit, input_path: $.detail}]
"""
).replace("rules:", '  audit: {type: function, function: "sinkmod:audit"}\nrules:')


class Runner:
    """``pipelines run FILE --input -`` with its stderr read line by line."""

    def __init__(self, directory: Path, *args: str, delay: float = 0.2) -> None:
        (directory / "sinkmod.py").write_text(SINK_MODULE)
        self.sink, self.audit = directory / "sink.jsonl", directory / "audit.jsonl"
        env = {
            **os.environ,
            "SINK_FILE": str(self.sink),
            "AUDIT_FILE": str(self.audit),
            "SINK_DELAY": str(delay),
        }
        self.process = subprocess.Popen(
            [*pipelines_command(), "run", *args, "--input", "-"],
            env=env,
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line.rstrip("\n"))

    def put(self, n: int) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(event(n=n)) + "\n")
        self.process.stdin.flush()

    def wait_for(self, text: str, timeout: float = 20.0) -> list[str]:
        """stderr lines up to the first containing ``text``."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            self.stderr.append(line)
            seen.append(line)
            if text in line:
                return seen

    def finish(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.close()
        code = self.process.wait(timeout=30)
        time.sleep(0.1)  # let the reader thread take the last lines
        while not self.lines.empty():
            self.stderr.append(self.lines.get())
        return code

    def received(self, path: Path) -> list[int]:
        if not path.exists():
            return []
        return [json.loads(line)["n"] for line in path.read_text().splitlines()]

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_sighup_reloads_without_losing_events_and_refuses_a_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(V1)
    runner = Runner(tmp_path, str(path))
    try:
        runner.wait_for("pipeline started")
        for n in range(5):
            runner.put(n)
        wait_until(lambda: len(runner.received(runner.sink)) >= 1)
        path.write_text(V2)  # the sink is replaced while four events wait for it
        runner.process.send_signal(signal.SIGHUP)
        reloaded = runner.wait_for("config reloaded")[-1]
        assert "added: resource audit, rule audit; changed: resource sink" in reloaded
        runner.put(5)
        wait_until(lambda: runner.received(runner.audit) == [5])

        path.write_text(V2.replace("resource: audit", "resource: audti"))
        runner.process.send_signal(signal.SIGHUP)
        refused = runner.wait_for(f"{path}:")
        assert "reload refused, the running config is kept: 1 problems" in refused[-2]
        assert "no resource named 'audti'" in refused[-1] and f"{path}:12:23:" in refused[-1]
        runner.put(6)
        assert runner.finish() == 0, "\n".join(runner.stderr)
    finally:
        runner.close()
    assert sorted(runner.received(runner.sink)) == [0, 1, 2, 3, 4, 5, 6]
    assert runner.received(runner.audit) == [5, 6]


def test_reloads_under_sustained_load_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(V1)
    runner = Runner(tmp_path, str(path), delay=0.002)
    total = 3000
    fed = threading.Event()

    def feed() -> None:  # a steady stream, about 1,500 events a second
        for n in range(total):
            runner.put(n)
            if n % 30 == 0:
                time.sleep(0.02)
        fed.set()

    try:
        runner.wait_for("pipeline started")
        feeder = threading.Thread(target=feed)
        feeder.start()
        # Events flow before the first reload, and the audit rule's first
        # window sees some: under load, reloads alone can outpace the feeder.
        wait_until(lambda: len(runner.received(runner.sink)) > 0)
        reloads = 0
        for version in (V2, V1, V2, V1):
            path.write_text(version)
            runner.process.send_signal(signal.SIGHUP)
            runner.wait_for("config reloaded")
            reloads += 1
            if reloads == 1:
                wait_until(lambda: len(runner.received(runner.audit)) > 0)
        during = len(runner.received(runner.sink))
        feeder.join(timeout=60)
        assert fed.is_set()
        assert runner.finish() == 0, "\n".join(runner.stderr)
    finally:
        runner.close()
    assert reloads == 4 and during < total  # the reloads happened while events flowed
    received = runner.received(runner.sink)
    assert set(received) == set(range(total)), sorted(set(range(total)) - set(received))[:10]
    # the audit rule came and went: it saw a run of events, never one outside its windows
    assert 0 < len(runner.received(runner.audit)) < total


def test_watch_reloads_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(V1)
    runner = Runner(tmp_path, str(path), "--watch")
    try:
        runner.wait_for("pipeline started")
        runner.put(1)
        wait_until(lambda: runner.received(runner.sink) == [1])
        replacement = tmp_path / "next.yaml"
        replacement.write_text(V2)
        replacement.replace(path)  # as editors that save by renaming do
        runner.wait_for("config reloaded")
        runner.put(2)
        assert runner.finish() == 0, "\n".join(runner.stderr)
    finally:
        runner.close()
    assert runner.received(runner.sink) == [1, 2]
    assert runner.received(runner.audit) == [2]


async def test_a_replaced_resource_waits_only_for_its_own_calls(
    running: tuple[Runtime, PipelineConfig], tmp_path: Path
) -> None:
    runtime, current = running
    old = recorder(runtime, "a")
    new = config(tmp_path, BASE.replace("concurrency: 1", "concurrency: 2"))
    await runtime.put_events([event(n=1)])
    await until(lambda: old.waiting == 1)
    reloading = asyncio.create_task(reload(runtime, current, new, drain_timeout=60))
    delivery = runtime.bus().delivery("r1", "t1")
    assert delivery is not None
    await until(lambda: delivery.target is not old)
    await runtime.put_events([event(n=2)])  # held by the new resource, which is not waited for
    replaced = recorder(runtime, "a")
    await until(lambda: replaced.waiting == 1)
    old.release()
    summary = await asyncio.wait_for(reloading, 10)
    assert summary.changed == ["resource a"]
    assert old.stopped and [r.payload["detail"]["n"] for r in old.received] == [1]
    assert replaced.waiting == 1
    replaced.release()


async def test_resources_may_name_each_other_in_any_order(tmp_path: Path) -> None:
    (tmp_path / "chain.py").write_text("def f(payload):\n    return payload\n")
    current = config(tmp_path, "resources:\n  f: {type: function, function: 'chain:f'}\n")
    runtime = await build_runtime(current, state_path=None)
    # Embedded, not run by a runner: the caller puts the config's directory on the path.
    with tuned_process([tmp_path], switch_interval=None):
        await runtime.start()
    try:
        new = config(
            tmp_path,
            """
            resources:
              f:
                type: function
                function: chain:f
                async_invoke: {on_success: done}
              done: {type: function, function: "chain:f"}
            """,
        )
        with tuned_process([tmp_path], switch_interval=None):
            summary = await reload(runtime, current, new)
        assert summary.added == ["resource done"] and summary.changed == ["resource f"]
    finally:
        await runtime.stop()


async def test_reload_puts_changes_and_deletes_alarms_keeping_states(
    running: tuple[Runtime, PipelineConfig], tmp_path: Path
) -> None:
    runtime, current = running
    alarm = """
          namespace: Shop
          metric_name: Orders
          period: 60
          evaluation_periods: 1
          threshold: {threshold}
    """
    with_alarms = config(
        tmp_path,
        BASE
        + "alarms:\n  low:"
        + alarm.format(threshold=1)
        + """
  watch:
    rule: ALARM(low)
    actions: {alarm: [a]}
""",
    )
    summary = await reload(runtime, current, with_alarms)
    assert summary.added == ["alarm low", "alarm watch"]
    await runtime.alarms.set_alarm_state("low", "ALARM", "testing")
    assert runtime.alarms.describe_alarms(["watch"])[0]["StateValue"] == "ALARM"
    changed = config(tmp_path, BASE + "alarms:\n  low:" + alarm.format(threshold=5))
    summary = await reload(runtime, with_alarms, changed)
    assert (summary.changed, summary.removed) == (["alarm low"], ["alarm watch"])
    low = runtime.alarms.describe_alarms(["low"])[0]
    assert (low["Threshold"], low["StateValue"]) == (5.0, "ALARM")  # an update keeps the state
    # The composite's action rule went with it, so resource a can go too.
    assert [r["Name"] for r in runtime.bus().list_rules()] == ["r1"]
    summary = await reload(runtime, changed, config(tmp_path, BASE))
    assert summary.removed == ["alarm low"] and runtime.alarms.describe_alarms() == []


async def test_the_summary_names_section_entries_as_the_file_writes_them(tmp_path: Path) -> None:
    current = config(tmp_path, "state: state.db\nresources:\n  orders: {type: queue}\n")
    runtime = await build_runtime(current, state_path=tmp_path / "state.db")
    async with runtime:
        new = config(
            tmp_path,
            """
            state: state.db
            resources:
              orders: {type: queue}
              out: {type: queue}
            pipes:
              move: {source: orders, target: out}
            """,
        )
        summary = await reload(runtime, current, new)
        assert summary.added == ["resource out", "pipe move"]
        summary = await reload(runtime, new, current)
        assert summary.removed == ["pipe move", "resource out"]  # the user before the used


async def test_the_runner_freezes_its_started_heap_and_collects_at_a_reload(
    tmp_path: Path,
) -> None:
    """``run_pipeline`` takes what its start built out of full collections
    (``settle_heap``); a reload collects what was frozen, then freezes
    again; the run's end thaws everything."""
    import gc
    import weakref

    from pipelines.runner import run_pipeline

    loaded = config(tmp_path, "resources:\n  q: {type: queue}\n")
    stop, reload_requested = asyncio.Event(), asyncio.Event()
    garbage = Cyclic()
    seen = weakref.ref(garbage)
    assert gc.get_freeze_count() == 0
    running = asyncio.create_task(
        run_pipeline(loaded, stop=stop, reload_requested=reload_requested)
    )
    try:
        deadline = time.monotonic() + 30
        while gc.get_freeze_count() == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert gc.get_freeze_count() > 0  # the start's heap is frozen
        del garbage
        gc.collect()
        assert seen() is not None  # frozen with it: no full collection walks it
        reload_requested.set()
        while seen() is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert seen() is None  # the reload collected, then froze again
        assert gc.get_freeze_count() > 0
    finally:
        stop.set()
        await running
    assert gc.get_freeze_count() == 0
