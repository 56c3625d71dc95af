"""A runner of state machine executions for the crash test: ``start N``
starts N executions of a five-task chain and runs them (until killed);
``resume`` runs what the last one left until no execution is RUNNING.

    python -m tests.states_crash_runner STATE EFFECTS start|resume N
"""

from __future__ import annotations

import asyncio
import json
import sys

from pipelines.runtime import Runtime
from plugins.states.executions import executions_of
from plugins.states.store import RUNNING

from .recorder import plugin_manager

TASKS = 5


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


async def main(state: str, effects: str, mode: str, count: int) -> None:
    shared = state.startswith("postgresql://")
    runtime = Runtime(
        state_path=state, plugins=plugin_manager(), runner="crash-1" if shared else None
    )
    runtime.add_resource("record", "function", {"function": "tests.states_functions:record"})
    runtime.add_resource("chain", "state_machine", {"definition": definition(effects)})
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
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
