"""STANDARD executions write the checkpoint after a Pass or Choice state with
the next one (at most ``PURE_RUN`` in a row): fewer transactions, the same
durable history, and a resume from the checkpoint before such a run."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.clock import ManualClock
from pipelines.runtime import Runtime
from pipelines.store import Trip
from plugins.states.executions import PURE_RUN, ExecutionError, executions_of
from plugins.states.store import StatesStore


def _chain(count: int, then: dict[str, Any] | None = None) -> dict[str, Any]:
    states: dict[str, Any] = {
        f"P{n}": {"Type": "Pass", "Result": n, "ResultPath": f"$.p{n}", "Next": f"P{n + 1}"}
        for n in range(count)
    }
    if then is None:
        states[f"P{count - 1}"] = {"Type": "Pass", "Result": count - 1, "End": True}
    else:
        states[f"P{count - 1}"]["Next"] = "Then"
        states["Then"] = then
    return {"StartAt": "P0", "States": states}


def _runtime(path: Path, definition: dict[str, Any], clock: ManualClock | None = None) -> Runtime:
    runtime = Runtime(state_path=path, clock=clock)
    runtime.add_resource("flow", "state_machine", {"definition": definition})
    return runtime


async def test_a_run_of_pass_states_is_written_with_the_next_checkpoint(tmp_path: Path) -> None:
    states = 2 * PURE_RUN + 50
    runtime = _runtime(tmp_path / "state.db", _chain(states))
    transitions: list[Trip] = []
    async with runtime:
        engine = executions_of(runtime)
        assert isinstance(engine.store, StatesStore)
        connection: Any = engine.store.connection
        connection.on_trip = lambda trip: transitions.append(trip)  # on its thread
        started = await engine.start_execution("flow", "{}", "run")
        record = await engine.wait_for(started["executionArn"])
        history = await engine.get_execution_history(started["executionArn"])
        connection.on_trip = None
    assert record.status == "SUCCEEDED"
    checkpoints = [t for t in transitions if any("SET checkpoint" in s.sql for s in t.steps)]
    # 249 checkpoints between the states: PURE_RUN (100) left to the next each
    # time, the 101st and the 202nd written; the rest go with the execution's end
    assert len(checkpoints) == 2
    assert [e["id"] for e in history] == list(range(1, 2 * states + 3))
    assert history[-1]["type"] == "ExecutionSucceeded"


async def test_resumed_after_a_run_of_pass_states_it_goes_on_once(tmp_path: Path) -> None:
    wait = {"Type": "Wait", "Seconds": 60, "Next": "Last"}
    definition = _chain(5, wait)
    definition["States"]["Last"] = {"Type": "Pass", "End": True}
    clock = ManualClock(start=1_000.0)
    runtime = _runtime(tmp_path / "state.db", definition, clock)
    async with runtime:
        engine = executions_of(runtime)
        started = await engine.start_execution("flow", '{"order": 1}', "resumed")
        durable: list[dict[str, Any]] = []
        for _ in range(500):  # until the Wait's checkpoint is written
            await asyncio.sleep(0.01)
            durable = await engine.get_execution_history(started["executionArn"])
            if durable and durable[-1]["type"] == "WaitStateEntered":
                break
    # stopped inside the Wait: the Pass states' events were written with its checkpoint
    assert [e["type"] for e in durable][-1] == "WaitStateEntered"
    assert len(durable) == 1 + 5 * 2 + 1
    clock.jump(60)
    again = _runtime(tmp_path / "state.db", definition, clock)
    async with again:
        engine = executions_of(again)
        described: dict[str, Any] = {}
        for _ in range(500):  # resumed once the runtime runs, in the Wait (already over)
            await clock.advance(1)
            await asyncio.sleep(0.01)
            described = await engine.describe_execution(started["executionArn"])
            if described["status"] != "RUNNING":
                break
        history = await engine.get_execution_history(started["executionArn"])
    assert described["status"] == "SUCCEEDED"
    output = json.loads(described["output"])
    assert output == {"order": 1, **{f"p{n}": n for n in range(5)}}
    assert [e["id"] for e in history] == list(range(1, len(history) + 1))
    kinds = [e["type"] for e in history]
    assert kinds.count("PassStateEntered") == 6  # each once: none done again
    assert kinds[-3:] == ["PassStateEntered", "PassStateExited", "ExecutionSucceeded"]


async def test_a_new_execution_s_start_is_written_with_its_first_write(tmp_path: Path) -> None:
    wait = {"Type": "Wait", "Seconds": 60, "End": True}
    runtime = _runtime(tmp_path / "state.db", _chain(3), ManualClock(start=1_000.0))
    runtime.add_resource("waits", "state_machine", {"definition": _chain(2, wait)})
    trips: list[Trip] = []
    async with runtime:
        engine = executions_of(runtime)
        assert isinstance(engine.store, StatesStore)
        connection: Any = engine.store.connection
        connection.on_trip = lambda trip: trips.append(trip)  # on its thread
        started = await engine.start_execution("flow", "{}", "one")
        record = await engine.wait_for(started["executionArn"])
        assert record.status == "SUCCEEDED"
        # a chain of Pass states: its start and its end in one transaction
        writes = [t for t in trips if any(_writes_executions(s.sql) for s in t.steps)]
        assert len(writes) == 1 and writes[0].steps[0].sql.startswith("INSERT INTO sfn_executions")
        # one that waits: its row is written with the Wait's checkpoint, before
        # start_execution answers (the Wait waits on the clock, not moved)
        waiting = await engine.start_execution("waits", "{}", "two")
        connection.on_trip = None
        found = await engine.store.execution(waiting["executionArn"])
        assert found is not None and found.status == "RUNNING"
        assert found.checkpoint is not None and found.checkpoint["nextState"] == "Then"
        # a name in use: the same execution with the same input while it runs, else refused
        assert await engine.start_execution("waits", "{}", "two") == waiting
        for machine, text, name in (("waits", '{"other": 1}', "two"), ("flow", "{}", "one")):
            with pytest.raises(ExecutionError) as refused:
                await engine.start_execution(machine, text, name)
            assert refused.value.code == "ExecutionAlreadyExists"


def _writes_executions(sql: str) -> bool:
    return sql.startswith(("INSERT INTO sfn_executions", "UPDATE sfn_executions"))
