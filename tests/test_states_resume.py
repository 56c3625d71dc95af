"""Resuming an execution inside a top-level state (the core, in memory): a
Wait waits only what is left, a Task attempt under way is not called again,
a retry's backoff keeps its counters, TimeoutSeconds counts from the start."""

from __future__ import annotations

import asyncio
from typing import Any

from pipelines.clock import ManualClock, settle
from plugins.states.definition import parse_definition
from plugins.states.errors import StatesError
from plugins.states.history import BACKING_OFF, CALLING, WAITING, Checkpoint, MemoryLog
from plugins.states.interpreter import Execution, Interpreter, Outcome
from plugins.states.tasks import NoTaskRunner, TaskRequest

TASK = "arn:aws:states:::test:work"


def _execution(start: float, input_text: str = "{}") -> Execution:
    return Execution(
        arn="arn:aws:states:us-east-1:1:execution:m:e",
        name="e",
        state_machine_arn="arn:aws:states:us-east-1:1:stateMachine:m",
        state_machine_name="m",
        input_text=input_text,
        start_time=start,
    )


class Calls:
    """A task runner that records each request and blocks until answered."""

    def __init__(self) -> None:
        self.requests: list[TaskRequest] = []
        self.answers: list[Any] = []

    async def run(self, request: TaskRequest) -> Any:
        self.requests.append(request)
        if request.resumed:
            return {"resumed": True}
        if self.answers:
            answer = self.answers.pop(0)
            if isinstance(answer, StatesError):
                raise answer
            return answer
        await asyncio.Event().wait()


async def _killed_at(
    definition: dict[str, Any], clock: ManualClock, until: float, tasks: Any = None
) -> MemoryLog:
    """Run until the clock reaches ``until``, then end the run as a crash
    would: its log is what a durable store would hold up to the last checkpoint."""
    log = MemoryLog()
    interpreter = Interpreter(parse_definition(definition), log=log, tasks=tasks, clock=clock)
    task = asyncio.ensure_future(interpreter.run(_execution(0.0)))
    await settle()
    await clock.advance(until - clock.time())
    assert not task.done()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return log


async def _resume(
    definition: dict[str, Any], clock: ManualClock, point: Checkpoint, tasks: Any = None
) -> tuple[asyncio.Future[Outcome], MemoryLog]:
    log = MemoryLog()
    interpreter = Interpreter(parse_definition(definition), log=log, tasks=tasks, clock=clock)
    task = asyncio.ensure_future(interpreter.run(_execution(0.0), resume=point))
    await settle()
    return task, log


WAIT = {
    "StartAt": "A",
    "States": {
        "A": {"Type": "Pass", "Result": 1, "ResultPath": "$.a", "Next": "W"},
        "W": {"Type": "Wait", "Seconds": 3600, "Next": "B"},
        "B": {"Type": "Pass", "Result": 2, "ResultPath": "$.b", "End": True},
    },
}


async def test_a_resumed_wait_waits_only_what_is_left() -> None:
    clock = ManualClock(start=0.0)
    killed = await _killed_at(WAIT, clock, 1000.0)
    point = killed.checkpoints[-1]
    assert point.next_state == "W" and point.within is not None
    assert (point.within.phase, point.within.until) == (WAITING, 3600.0)
    # the WaitStateEntered event is before the checkpoint: resumed, it is not written again
    assert [e.type for e in killed.events if e.id <= point.last_event_id][-1] == "WaitStateEntered"
    clock.jump(600.0)  # the runner was down for ten minutes
    task, resumed = await _resume(WAIT, clock, point)
    await clock.advance(3599.0 - clock.time())
    assert not task.done()
    await clock.advance(1.0)
    await settle()
    outcome = task.result()
    assert outcome.status == "SUCCEEDED" and outcome.output == {"a": 1, "b": 2}
    exited = next(e for e in resumed.events if e.type == "WaitStateExited")
    assert exited.timestamp == 3600.0 and exited.id == point.last_event_id + 1
    assert exited.previous_event_id == point.flow_last


async def test_a_wait_resumed_past_its_end_goes_on_at_once() -> None:
    clock = ManualClock(start=0.0)
    point = (await _killed_at(WAIT, clock, 10.0)).checkpoints[-1]
    clock.jump(7200.0)
    task, _ = await _resume(WAIT, clock, point)
    await settle()
    assert task.done() and task.result().status == "SUCCEEDED"


TASKS = {
    "StartAt": "T",
    "States": {
        "T": {
            "Type": "Task",
            "Resource": TASK,
            "TimeoutSeconds": 100,
            "Retry": [{"ErrorEquals": ["States.TaskFailed"], "IntervalSeconds": 5}],
            "End": True,
        }
    },
}


async def test_a_task_attempt_under_way_is_resumed_not_called_again() -> None:
    clock = ManualClock(start=0.0)
    first = Calls()
    point = (await _killed_at(TASKS, clock, 30.0, first)).checkpoints[-1]
    assert len(first.requests) == 1
    assert point.within is not None and point.within.phase == CALLING
    assert point.within.until == 100.0  # the attempt's TimeoutSeconds deadline
    again = Calls()
    task, log = await _resume(TASKS, clock, point, again)
    await settle()
    assert task.result().output == {"resumed": True}
    (request,) = again.requests
    assert request.resumed
    # TaskScheduled and TaskStarted were written before the call: not again
    assert [e.type for e in log.events] == [
        "TaskSucceeded",
        "TaskStateExited",
        "ExecutionSucceeded",
    ]


async def test_a_resumed_attempt_keeps_its_timeout_deadline() -> None:
    clock = ManualClock(start=0.0)
    point = (await _killed_at(TASKS, clock, 30.0, Calls())).checkpoints[-1]
    clock.jump(90.0)  # down until 120: the attempt's 100 s are over

    class Hangs:
        async def run(self, request: TaskRequest) -> Any:
            await asyncio.Event().wait()

    task, log = await _resume(TASKS, clock, point, Hangs())
    await clock.advance(0.0)
    assert "TaskTimedOut" in [e.type for e in log.events]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_an_attempt_whose_outcome_is_unknown_fails_and_is_retried() -> None:
    clock = ManualClock(start=0.0)
    point = (await _killed_at(TASKS, clock, 30.0, Calls())).checkpoints[-1]

    class Interrupts(Calls):
        async def run(self, request: TaskRequest) -> Any:
            self.requests.append(request)
            if request.resumed:
                return await NoTaskRunner().run(request)
            return "second"

    runner = Interrupts()
    task, log = await _resume(TASKS, clock, point, runner)
    await clock.advance(5.0)
    await settle()
    assert task.result().output == "second"
    assert [r.resumed for r in runner.requests] == [True, False]
    failed = next(e for e in log.events if e.type == "TaskFailed")
    assert failed.details is not None and failed.details["error"] == "States.TaskFailed"
    assert "not called again" in failed.details["cause"]


async def test_a_backoff_resumed_keeps_the_retriers_counters() -> None:
    definition = {
        "StartAt": "T",
        "States": {
            "T": {
                "Type": "Task",
                "Resource": TASK,
                "Retry": [{"ErrorEquals": ["E"], "IntervalSeconds": 10, "MaxAttempts": 2}],
                "End": True,
            }
        },
    }
    clock = ManualClock(start=0.0)
    first = Calls()
    first.answers = [StatesError("E", "one")]
    point = (await _killed_at(definition, clock, 5.0, first)).checkpoints[-1]
    assert point.within is not None and point.within.phase == BACKING_OFF
    assert (point.within.until, point.within.attempts, point.within.retry_count) == (10.0, (1,), 1)
    again = Calls()
    again.answers = [StatesError("E", "two"), StatesError("E", "three")]
    task, _ = await _resume(definition, clock, point, again)
    for _ in range(4):
        deadline = clock.next_deadline()
        if deadline is not None:
            await clock.advance(deadline - clock.time())
    await settle()
    outcome = task.result()
    # one retry was spent before the stop: two attempts after it, then the failure
    assert (outcome.status, outcome.cause) == ("FAILED", "three")
    assert [r.context["State"]["RetryCount"] for r in again.requests] == [1, 2]


async def test_the_execution_timeout_counts_from_its_start_across_a_resume() -> None:
    definition = {**WAIT, "TimeoutSeconds": 2000}
    clock = ManualClock(start=0.0)
    point = (await _killed_at(definition, clock, 1500.0)).checkpoints[-1]
    task, log = await _resume(definition, clock, point)
    await clock.advance(500.0)
    await settle()
    assert task.result().status == "TIMED_OUT"
    assert log.events[-1].type == "ExecutionTimedOut" and log.events[-1].timestamp == 2000.0


JSONATA_WAIT = {
    "QueryLanguage": "JSONata",
    "StartAt": "W",
    "States": {
        "W": {"Type": "Wait", "Seconds": "{% 3000 + 600 %}", "Next": "B"},
        "B": {"Type": "Pass", "Output": "{% 'done' %}", "End": True},
    },
}


async def test_a_jsonata_wait_is_checkpointed_and_resumed_as_one_in_jsonpath() -> None:
    clock = ManualClock(start=0.0)
    point = (await _killed_at(JSONATA_WAIT, clock, 1000.0)).checkpoints[-1]
    assert point.within is not None
    assert (point.within.phase, point.within.until) == (WAITING, 3600.0)
    task, _ = await _resume(JSONATA_WAIT, clock, point)
    await clock.advance(2599.0)
    assert not task.done()
    await clock.advance(1.0)
    await settle()
    assert task.result().output == "done"
