"""Checkpoints inside Parallel branches and Map iterations (the core, in
memory, with a log that takes them as a durable one does): resumed, the
branches and iterations that ended are not run again, those under way go
on where they stood (a Wait waits what is left, a Task attempt under way is
resumed, not called again), and the history goes on without a state
entered twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from pipelines.clock import ManualClock, settle
from plugins.states.definition import parse_definition
from plugins.states.history import CALLING, CHILDREN, WAITING, Checkpoint, HistoryEvent, MemoryLog
from plugins.states.interpreter import Execution, Interpreter, Outcome
from plugins.states.tasks import TaskRequest

TASK = "arn:aws:states:::test:work"


def _execution() -> Execution:
    return Execution(
        "arn:aws:states:us-east-1:1:execution:m:e", "e",
        "arn:aws:states:us-east-1:1:stateMachine:m", "m", '{"items": [0, 1, 2, 3, 4]}',
    )  # fmt: skip


class Work:
    """Tasks answered at once, but those named in ``block`` never."""

    def __init__(self, block: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.block = block
        self.requests: list[TaskRequest] = []

    def names(self, resumed: bool) -> list[str]:
        return sorted(r.input["name"] for r in self.requests if r.resumed is resumed)

    async def run(self, request: TaskRequest) -> Any:
        self.requests.append(request)
        if request.resumed:
            return {"resumed": request.input["name"]}
        await asyncio.sleep(0)
        if request.input["name"] in self.block:
            await asyncio.Event().wait()
        return {"did": request.input["name"]}


def _task(name: str, **more: Any) -> dict[str, Any]:
    return {"Type": "Task", "Resource": TASK, "Parameters": {"name": name}, **more}


PARALLEL = {
    "StartAt": "P",
    "States": {
        "P": {
            "Type": "Parallel",
            "Branches": [
                {
                    "StartAt": "A1",
                    "States": {
                        "A1": _task("A1", Next="A2"),
                        "A2": _task("A2", Next="A3"),
                        "A3": {"Type": "Pass", "End": True},
                    },
                },
                {
                    "StartAt": "W",
                    "States": {
                        "W": {"Type": "Wait", "Seconds": 100, "Next": "B1"},
                        "B1": _task("B1", End=True),
                    },
                },
                {"StartAt": "C1", "States": {"C1": _task("C1", End=True)}},
            ],
            "End": True,
        }
    },
}

MAP = {
    "StartAt": "M",
    "States": {
        "M": {
            "Type": "Map",
            "ItemsPath": "$.items",
            "MaxConcurrency": 2,
            "ItemSelector": {"name.$": "States.Format('X{}', $$.Map.Item.Value)"},
            "ItemProcessor": {
                "StartAt": "X",
                "States": {
                    "X": {"Type": "Task", "Resource": TASK, "Next": "Y"},
                    "Y": {"Type": "Pass", "End": True},
                },
            },
            "End": True,
        }
    },
}


async def _killed(definition: dict[str, Any], clock: ManualClock, work: Work) -> MemoryLog:
    """Run until nothing moves, then end the run as a crash would."""
    log = MemoryLog(nested=True)
    interpreter = Interpreter(parse_definition(definition), log=log, tasks=work, clock=clock)
    task = asyncio.ensure_future(interpreter.run(_execution()))
    await settle()
    await clock.advance(50.0)
    assert not task.done()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return log


async def _resumed(
    definition: dict[str, Any], clock: ManualClock, killed: MemoryLog, work: Work
) -> tuple[Outcome, list[HistoryEvent]]:
    """Resume at the killed run's last checkpoint; the history as a store
    holds it: the killed run's events up to that checkpoint, then the new ones."""
    point = killed.checkpoints[-1]
    log = MemoryLog(nested=True)
    interpreter = Interpreter(parse_definition(definition), log=log, tasks=work, clock=clock)
    interpreter.finished = killed.children
    task = asyncio.ensure_future(interpreter.run(_execution(), resume=point))
    await settle()
    await clock.advance(100.0)
    outcome = await asyncio.wait_for(task, 5)
    durable = [e for e in killed.events if e.id <= point.last_event_id]
    return outcome, durable + log.events


def _threads(point: Checkpoint) -> dict[str, Any]:
    assert point.within is not None and point.within.phase == CHILDREN
    assert point.within.fork is not None
    threads: dict[str, Any] = point.within.fork["threads"]
    return threads


def _entered(history: list[HistoryEvent]) -> Counter[str]:
    return Counter((e.details or {})["name"] for e in history if e.type.endswith("StateEntered"))


async def test_a_resumed_parallel_skips_finished_branches_and_resumes_the_others() -> None:
    clock = ManualClock(start=0.0)
    first = Work(block={"A2"})
    killed = await _killed(PARALLEL, clock, first)
    assert first.names(False) == ["A1", "A2", "C1"]
    threads = _threads(killed.checkpoints[-1])
    # branch 2 (C1) has ended: kept, not under way
    assert sorted(threads) == ["0", "1"] and 2 in next(iter(killed.children.values()))
    assert (threads["0"]["nextState"], threads["0"]["within"]["phase"]) == ("A2", CALLING)
    assert (threads["1"]["nextState"], threads["1"]["within"]["phase"]) == ("W", WAITING)
    assert threads["1"]["within"]["until"] == 100.0

    again = Work()
    outcome, history = await _resumed(PARALLEL, clock, killed, again)
    assert outcome.status == "SUCCEEDED"
    # A1 and C1 are not called again, A2's attempt is resumed, B1 runs once the wait is over
    assert again.names(True) == ["A2"] and again.names(False) == ["B1"]
    assert outcome.output == [{"resumed": "A2"}, {"did": "B1"}, {"did": "C1"}]
    assert [e.id for e in history] == list(range(1, len(history) + 1))
    assert _entered(history) == Counter(
        {"P": 1, "A1": 1, "A2": 1, "A3": 1, "W": 1, "B1": 1, "C1": 1}
    )
    assert [e.type for e in history].count("ParallelStateStarted") == 1
    wait_exit = next(e for e in history if e.type == "WaitStateExited")
    assert wait_exit.timestamp == 100.0  # the wait waited only what was left


async def test_a_resumed_map_runs_no_finished_iteration_and_calls_no_attempt_twice() -> None:
    clock = ManualClock(start=0.0)
    first = Work(block={"X3"})
    killed = await _killed(MAP, clock, first)
    assert first.names(False) == ["X0", "X1", "X2", "X3", "X4"]
    again = Work()
    outcome, history = await _resumed(MAP, clock, killed, again)
    assert outcome.status == "SUCCEEDED"
    # every attempt was called in the first run: resumed, none is called again
    assert again.names(False) == [] and "X3" in again.names(True)
    assert [r["did"] if "did" in r else r["resumed"] for r in outcome.output] == [
        f"X{i}" for i in range(5)
    ]
    assert [e.id for e in history] == list(range(1, len(history) + 1))
    assert _entered(history) == Counter({"M": 1, "X": 5, "Y": 5})
    for kind in ("MapIterationStarted", "MapIterationSucceeded"):
        indexes = sorted((e.details or {})["index"] for e in history if e.type == kind)
        assert indexes == [0, 1, 2, 3, 4], kind


async def test_without_such_a_log_nothing_is_checkpointed_inside() -> None:
    clock = ManualClock(start=0.0)
    log = MemoryLog()
    interpreter = Interpreter(parse_definition(MAP), log=log, tasks=Work(), clock=clock)
    outcome = await interpreter.run(_execution())
    assert outcome.status == "SUCCEEDED" and log.checkpoints == [] and log.children == {}
