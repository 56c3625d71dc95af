"""A runner of state machine executions for the crash tests: ``start N``
starts N executions of a five-task chain (``nested``: of a Parallel of two
two-task branches, then a Map of three one-task iterations) and runs them
(until killed); ``resume`` runs what the last one left until no execution
is RUNNING.

    python -m tests.states_crash_runner STATE EFFECTS start|resume N [nested]
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipelines.runtime import Runtime
from plugins.states.executions import executions_of
from plugins.states.store import RUNNING

from .recorder import plugin_manager

TASKS = 5

ROOT = Path(__file__).resolve().parent.parent


def spawn(
    state: str, effects: Path, mode: str, executions: int, shape: str = "chain"
) -> subprocess.Popen[bytes]:
    """This module as a runner process (``mode`` start or resume) on ``state``,
    its tasks' effects appended to ``effects``; it prints "started" once running."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.states_crash_runner", state, str(effects), mode,
         str(executions), shape],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def read_effects(path: Path) -> list[tuple[str, str]]:
    """The (execution, state) of each task effect recorded so far."""
    if not path.exists():
        return []
    return [tuple(line.split()) for line in path.read_text().splitlines() if line]  # type: ignore[misc]


def definition(effects: str) -> dict[str, object]:
    states: dict[str, object] = {}
    for index in range(1, TASKS + 1):
        last = index == TASKS
        states[f"T{index}"] = {
            "Type": "Task",
            "Resource": "arn:aws:lambda:us-east-1:000000000000:function:record",
            "Parameters": {
                "effects": effects,
                "execution.$": "$$.Execution.Name",
                "state": f"T{index}",
            },
            "ResultPath": None,
            "Retry": [{"ErrorEquals": ["States.TaskFailed"], "IntervalSeconds": 1}],
            "Next": f"P{index}",
        }
        states[f"P{index}"] = {
            "Type": "Pass",
            "Result": index,
            "ResultPath": f"$.p{index}",
            **({"End": True} if last else {"Next": f"T{index + 1}"}),
        }
    return {"StartAt": "T1", "States": states}


def _recorded(effects: str, name: str, **more: Any) -> dict[str, Any]:
    return {
        "Type": "Task",
        "Resource": "arn:aws:lambda:us-east-1:000000000000:function:record",
        "Parameters": {"effects": effects, "execution.$": "$$.Execution.Name", "state": name},
        "ResultPath": None,
        "Retry": [{"ErrorEquals": ["States.TaskFailed"], "IntervalSeconds": 1}],
        **more,
    }


#: The tasks of ``nested_definition``, by the name each records.
NESTED_TASKS = ("A1", "A2", "B1", "B2", "X0", "X1", "X2")


def nested_definition(effects: str) -> dict[str, object]:
    def branch(name: str) -> dict[str, Any]:
        return {
            "StartAt": f"{name}1",
            "States": {
                f"{name}1": _recorded(effects, f"{name}1", Next=f"{name}2"),
                f"{name}2": _recorded(effects, f"{name}2", End=True),
            },
        }

    item = _recorded(effects, "", Next="Y")
    item["Parameters"] = {
        "effects": effects,
        "execution.$": "$$.Execution.Name",
        "state.$": "States.Format('X{}', $.i)",
    }
    return {
        "StartAt": "P",
        "States": {
            "P": {"Type": "Parallel", "Branches": [branch("A"), branch("B")], "Next": "I",
                  "ResultPath": None},
            "I": {"Type": "Pass", "Result": [0, 1, 2], "ResultPath": "$.items", "Next": "M"},
            "M": {
                "Type": "Map",
                "ItemsPath": "$.items",
                "ItemSelector": {"i.$": "$$.Map.Item.Value"},
                "ItemProcessor": {
                    "StartAt": "X",
                    "States": {"X": item, "Y": {"Type": "Pass", "End": True}},
                },
                "End": True,
            },
        },
    }  # fmt: skip


async def main(state: str, effects: str, mode: str, count: int, shape: str = "chain") -> None:
    shared = state.startswith("postgresql://")
    runtime = Runtime(
        state_path=state, plugins=plugin_manager(), runner="crash-1" if shared else None
    )
    # Paced, so that the test's kill lands mid-way (see record_paced).
    runtime.add_resource("record", "function", {"function": "tests.states_functions:record_paced"})
    made = nested_definition(effects) if shape == "nested" else definition(effects)
    runtime.add_resource("chain", "state_machine", {"definition": made})
    async with runtime:
        engine = executions_of(runtime)
        if mode == "start":
            for index in range(count):
                await engine.start_execution("chain", json.dumps({"n": index}), f"e{index}")
            print("started", flush=True)
            await asyncio.Event().wait()  # until killed
        assert engine.store is not None
        while await engine.store.executions("chain", RUNNING):
            await asyncio.sleep(0.1)
        print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), *sys.argv[5:]))
