"""The states plugin's language core: paths, intrinsics, definitions, and executions
run with a manual clock and real task runners written for the tests."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import pytest

from pipelines.clock import ManualClock, settle
from plugins.states import intrinsics, paths
from plugins.states.definition import UnsupportedFeature, parse_definition, validate
from plugins.states.errors import DefinitionError, StatesError
from plugins.states.history import MemoryLog
from plugins.states.interpreter import Execution, Interpreter, Outcome
from plugins.states.tasks import TaskRequest, parse_resource

Json = Any


# -- paths -------------------------------------------------------------------------------


def test_a_definite_path_yields_the_value_and_an_indefinite_one_a_list() -> None:
    data = {"a": {"b": [10, 20, 30]}, "users": [{"n": "x", "s": 0}, {"n": "y", "s": 1}]}
    assert paths.find("$.a.b[1]", data) == 20
    assert paths.find("$.a.b[-1]", data) == 30
    assert paths.find("$.a.b[*]", data) == [10, 20, 30]
    assert paths.find("$.a.b[1:]", data) == [20, 30]
    assert paths.find("$.users[?(@.s == 0)].n", data) == ["x"]
    assert paths.find("$..n", data) == ["x", "y"]
    assert paths.find("$['a']['b'][0]", data) == 10


def test_a_missing_property_is_named_as_jayway_names_it() -> None:
    with pytest.raises(paths.PathError, match=r"^No results for path: \$\['nope'\]$"):
        paths.find("$.nope", {})
    with pytest.raises(paths.PathError, match=r"^Missing property in path \$\['no'\]$"):
        paths.find("$.no.such.path", {})


def test_result_path_makes_missing_objects_and_leaves_the_input_alone() -> None:
    data = {"keep": 1}
    assert paths.set_path("$.a.b", data, 5) == {"keep": 1, "a": {"b": 5}}
    assert data == {"keep": 1}
    assert paths.set_path("$", data, [1]) == [1]


def test_a_malformed_path_is_refused() -> None:
    with pytest.raises(paths.PathError):
        paths.parse("$.a[")
    with pytest.raises(paths.PathError):
        paths.parse("a.b")


# -- intrinsics --------------------------------------------------------------------------


def test_intrinsics_compute_as_aws_documents() -> None:
    data = {"name": "Ann", "list": [1, 2, 2, 3]}
    run = lambda text: intrinsics.evaluate(text, data, {})  # noqa: E731
    assert run("States.Format('Hello \\{{}\\} {}', $.name, 3)") == "Hello {Ann} 3"
    assert run("States.ArrayPartition($.list, 3)") == [[1, 2, 2], [3]]
    assert run("States.ArrayRange(1, 9, 4)") == [1, 5, 9]
    assert run("States.ArrayUnique($.list)") == [1, 2, 3]
    assert run("States.ArrayContains($.list, 3)") is True
    assert run("States.ArrayGetItem($.list, 3)") == 3
    assert run("States.MathAdd(States.ArrayLength($.list), -1)") == 3
    assert run("States.Hash('input', 'SHA-1')") == "140f86aae51ab9e1cda9b4254fe98a74eb54c1a1"
    assert run("States.Base64Decode(States.Base64Encode('data'))") == "data"
    assert run(
        "States.JsonMerge(States.StringToJson('{\"a\":1}'), States.StringToJson('{\"b\":2}'), false)"
    ) == {
        "a": 1,
        "b": 2,
    }
    assert run("States.StringSplit('a,b,,c', ',')") == ["a", "b", "c"]
    assert len(run("States.UUID()")) == 36


def test_an_intrinsic_refusing_its_argument_fails_with_intrinsic_failure() -> None:
    with pytest.raises(StatesError) as caught:
        intrinsics.evaluate("States.ArrayGetItem($.list, 7)", {"list": [1]}, {})
    assert caught.value.error == "States.IntrinsicFailure"
    assert "ArrayGetItem" in (caught.value.cause or "")
    with pytest.raises(StatesError, match="must be an array"):
        intrinsics.evaluate("States.ArrayLength($.x)", {"x": "text"}, {})


def test_a_malformed_intrinsic_is_a_syntax_error() -> None:
    for text in (
        "States.Nope(1)",
        "States.Format('x'",
        "States.Array(1 2)",
        "States.Format('\\n')",
    ):
        with pytest.raises(intrinsics.IntrinsicSyntaxError):
            intrinsics.parse(text)


# -- definitions -------------------------------------------------------------------------


def _codes(definition: Json) -> list[tuple[str, str | None]]:
    return [(problem.code, problem.location) for problem in validate(definition)]


def test_definition_errors_name_the_place() -> None:
    definition = {
        "StartAt": "A",
        "States": {
            "A": {"Type": "Pass", "Next": "Nowhere", "Resultt": 1},
            "B": {"Type": "Succeed"},
            "C": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.x", "NumericEquals": "1", "Next": "B"}],
            },
        },
    }
    problems = _codes(definition)
    assert ("SCHEMA_VALIDATION_FAILED", "/States/A/Resultt") in problems
    assert ("MISSING_TRANSITION_TARGET", "/States/A/Next") in problems
    assert ("SCHEMA_VALIDATION_FAILED", "/States/C/Choices/0/NumericEquals") in problems
    assert ("MISSING_TRANSITION_TARGET", "/States/B") in problems  # not reachable
    with pytest.raises(DefinitionError) as caught:
        parse_definition(definition)
    assert str(caught.value).startswith(
        "Invalid State Machine Definition: 'SCHEMA_VALIDATION_FAILED:"
    )


def test_required_fields_are_worded_as_aws_words_them() -> None:
    (problem,) = validate({})
    assert problem.diagnostic() == {
        "severity": "ERROR",
        "code": "SCHEMA_VALIDATION_FAILED",
        "message": "These fields are required: [States, StartAt]",
        "location": "/",
    }
    assert validate("not json")[0].code == "INVALID_JSON_DESCRIPTION"


def test_what_is_not_built_yet_is_refused_by_name() -> None:
    def reading(reader: dict[str, object]) -> dict[str, object]:
        return {
            "StartAt": "M",
            "States": {
                "M": {
                    "Type": "Map",
                    "ItemReader": reader,
                    "ItemProcessor": {
                        "ProcessorConfig": {"Mode": "DISTRIBUTED"},
                        "StartAt": "P",
                        "States": {"P": {"Type": "Succeed"}},
                    },
                    "End": True,
                }
            },
        }

    with pytest.raises(UnsupportedFeature, match="dynamodb:scan") as refused:
        parse_definition(reading({"Resource": "arn:aws:states:::dynamodb:scan"}))
    assert refused.value.location == "/States/M/ItemReader/Resource"
    with pytest.raises(UnsupportedFeature, match="LOAD_AND_FLATTEN"):
        parse_definition(
            reading(
                {
                    "Resource": "arn:aws:states:::s3:listObjectsV2",
                    "ReaderConfig": {"Transformation": "LOAD_AND_FLATTEN", "InputType": "JSON"},
                    "Parameters": {"Bucket": "b"},
                }
            )
        )
    with pytest.raises(UnsupportedFeature, match="PARQUET"):
        parse_definition(
            reading(
                {
                    "Resource": "arn:aws:states:::s3:getObject",
                    "ReaderConfig": {"InputType": "PARQUET"},
                    "Parameters": {"Bucket": "b", "Key": "k"},
                }
            )
        )


def test_resources_are_named_as_history_names_them() -> None:
    lam = parse_resource("arn:aws:states:::lambda:invoke")
    assert (lam.resource_type, lam.resource, lam.pattern) == ("lambda", "invoke", "")
    sqs = parse_resource("arn:aws:states:::sqs:sendMessage.waitForTaskToken")
    assert (sqs.resource_type, sqs.pattern) == ("sqs", "waitForTaskToken")
    assert parse_resource("arn:aws:lambda:eu-west-1:1:function:f").kind == "lambda"


# -- executions ----------------------------------------------------------------------------


class Script:
    """A task runner answering each call from a script: a value, or an error to raise."""

    def __init__(self, *answers: Json) -> None:
        self.answers = list(answers)
        self.requests: list[TaskRequest] = []
        self.running = 0
        self.most_running = 0

    async def run(self, request: TaskRequest) -> Json:
        self.requests.append(request)
        answer = self.answers.pop(0) if self.answers else request.input
        if isinstance(answer, StatesError):
            raise answer
        if answer == "block":
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            try:
                await asyncio.Event().wait()
            finally:
                self.running -= 1
        return answer


def _execution(clock: ManualClock, input_text: str = "{}") -> Execution:
    return Execution(
        arn="arn:aws:states:us-east-1:1:execution:m:e",
        name="e",
        state_machine_arn="arn:aws:states:us-east-1:1:stateMachine:m",
        state_machine_name="m",
        input_text=input_text,
        start_time=clock.time(),
    )


async def _run_until_done(
    clock: ManualClock, interpreter: Interpreter, execution: Execution
) -> Outcome:
    task = asyncio.ensure_future(interpreter.run(execution))
    while not task.done():
        await settle()
        deadline = clock.next_deadline()
        if task.done() or deadline is None:
            continue
        await clock.advance(deadline - clock.time())
    return task.result()


TASK = "arn:aws:states:::test:work"


async def test_retriers_count_their_own_attempts_and_back_off() -> None:
    # the developer guide's example: ErrorA, ErrorB, ErrorC, ErrorB, ErrorB -> waits 1, 2, 5, 4, then Catch
    definition = {
        "StartAt": "T",
        "States": {
            "T": {
                "Type": "Task",
                "Resource": TASK,
                "Retry": [
                    {
                        "ErrorEquals": ["ErrorA", "ErrorB"],
                        "IntervalSeconds": 1,
                        "BackoffRate": 2,
                        "MaxAttempts": 3,
                    },
                    {"ErrorEquals": ["ErrorC"], "IntervalSeconds": 5},
                ],
                "Catch": [
                    {"ErrorEquals": ["States.ALL"], "Next": "Caught", "ResultPath": "$.error"}
                ],
                "End": True,
            },
            "Caught": {"Type": "Pass", "End": True},
        },
    }
    errors = [StatesError(name, "c") for name in ("ErrorA", "ErrorB", "ErrorC", "ErrorB", "ErrorB")]
    clock = ManualClock(start=0.0)
    log = MemoryLog()
    interpreter = Interpreter(
        parse_definition(definition), log=log, tasks=Script(*errors), clock=clock
    )
    outcome = await _run_until_done(clock, interpreter, _execution(clock, '{"x": 1}'))
    scheduled = [e.timestamp for e in log.events if e.type == "TaskScheduled"]
    assert [b - a for a, b in itertools.pairwise(scheduled)] == [1, 2, 5, 4]
    assert outcome.status == "SUCCEEDED"
    assert outcome.output == {"x": 1, "error": {"Error": "ErrorB", "Cause": "c"}}


async def test_max_delay_caps_the_backoff_and_full_jitter_draws_below_it() -> None:
    definition = {
        "StartAt": "T",
        "States": {
            "T": {
                "Type": "Task",
                "Resource": TASK,
                "Retry": [
                    {
                        "ErrorEquals": ["E"],
                        "IntervalSeconds": 10,
                        "BackoffRate": 3,
                        "MaxAttempts": 3,
                        "MaxDelaySeconds": 20,
                        "JitterStrategy": "FULL",
                    }
                ],
                "End": True,
            }
        },
    }
    clock = ManualClock(start=0.0)
    log = MemoryLog()
    tasks = Script(StatesError("E"), StatesError("E"), StatesError("E"), StatesError("E"))
    interpreter = Interpreter(parse_definition(definition), log=log, tasks=tasks, clock=clock)
    outcome = await _run_until_done(clock, interpreter, _execution(clock))
    scheduled = [e.timestamp for e in log.events if e.type == "TaskScheduled"]
    waits = [b - a for a, b in itertools.pairwise(scheduled)]
    assert len(waits) == 3 and all(0 <= w <= 20 for w in waits)
    assert (outcome.status, outcome.error) == ("FAILED", "E")


async def test_states_runtime_is_not_caught_and_data_limit_only_by_name() -> None:
    runtime = {
        "StartAt": "T",
        "States": {
            "T": {
                "Type": "Task",
                "Resource": TASK,
                "OutputPath": "$.missing",
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "C"}],
                "End": True,
            },
            "C": {"Type": "Succeed"},
        },
    }
    clock = ManualClock()
    outcome = await Interpreter(parse_definition(runtime), tasks=Script({}), clock=clock).run(
        _execution(clock)
    )
    assert (outcome.status, outcome.error) == ("FAILED", "States.Runtime")
    assert "Invalid path '$.missing'" in (outcome.cause or "")

    big = "x" * (256 * 1024)
    for names, expected in (
        (["States.ALL"], "FAILED"),
        (["States.DataLimitExceeded"], "SUCCEEDED"),
    ):
        runtime["States"]["T"].pop("OutputPath", None)  # type: ignore[attr-defined]
        runtime["States"]["T"]["Catch"] = [{"ErrorEquals": names, "Next": "C"}]  # type: ignore[index]
        outcome = await Interpreter(parse_definition(runtime), tasks=Script(big), clock=clock).run(
            _execution(clock)
        )
        assert outcome.status == expected


async def test_a_task_times_out_on_the_clock() -> None:
    definition = {
        "StartAt": "T",
        "States": {"T": {"Type": "Task", "Resource": TASK, "TimeoutSeconds": 30, "End": True}},
    }
    clock = ManualClock(start=0.0)
    log = MemoryLog()
    interpreter = Interpreter(
        parse_definition(definition), log=log, tasks=Script("block"), clock=clock
    )
    outcome = await _run_until_done(clock, interpreter, _execution(clock))
    assert (outcome.status, outcome.error) == ("FAILED", "States.Timeout")
    timed_out = next(e for e in log.events if e.type == "TaskTimedOut")
    assert timed_out.timestamp == 30
    assert timed_out.details == {
        "error": "States.Timeout",
        "resourceType": "test",
        "resource": "work",
    }


async def test_a_wait_waits_for_the_clock() -> None:
    definition = {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 3600, "End": True}}}
    clock = ManualClock(start=0.0)
    task = asyncio.ensure_future(
        Interpreter(parse_definition(definition), clock=clock).run(_execution(clock))
    )
    await clock.advance(3599)
    assert not task.done()
    await clock.advance(1)
    await settle()
    assert task.result().status == "SUCCEEDED"


async def test_an_execution_past_its_timeout_is_timed_out() -> None:
    definition = {
        "TimeoutSeconds": 5,
        "StartAt": "W",
        "States": {"W": {"Type": "Wait", "Seconds": 60, "End": True}},
    }
    clock = ManualClock(start=0.0)
    log = MemoryLog()
    outcome = await _run_until_done(
        clock, Interpreter(parse_definition(definition), log=log, clock=clock), _execution(clock)
    )
    assert outcome.status == "TIMED_OUT"
    assert log.events[-1].type == "ExecutionTimedOut" and log.events[-1].timestamp == 5


async def test_map_honours_max_concurrency() -> None:
    definition = {
        "StartAt": "M",
        "States": {
            "M": {
                "Type": "Map",
                "MaxConcurrency": 2,
                "ItemProcessor": {
                    "StartAt": "T",
                    "States": {"T": {"Type": "Task", "Resource": TASK, "End": True}},
                },
                "End": True,
            }
        },
    }
    clock = ManualClock()
    tasks = Script(*["block"] * 5)
    task = asyncio.ensure_future(
        Interpreter(parse_definition(definition), tasks=tasks, clock=clock).run(
            _execution(clock, "[1,2,3,4,5]")
        )
    )
    await settle()
    assert (tasks.running, tasks.most_running) == (2, 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert tasks.running == 0  # every iteration's task ended with its Map


async def test_a_failed_parallel_branch_cancels_its_siblings() -> None:
    definition = {
        "StartAt": "P",
        "States": {
            "P": {
                "Type": "Parallel",
                "Branches": [
                    {
                        "StartAt": "Slow",
                        "States": {"Slow": {"Type": "Task", "Resource": TASK, "End": True}},
                    },
                    {"StartAt": "Boom", "States": {"Boom": {"Type": "Fail", "Error": "Boom"}}},
                ],
                "End": True,
            }
        },
    }
    clock = ManualClock()
    tasks = Script("block")
    outcome = await Interpreter(parse_definition(definition), tasks=tasks, clock=clock).run(
        _execution(clock)
    )
    assert (outcome.status, outcome.error) == ("FAILED", "Boom")
    assert tasks.running == 0


async def test_an_execution_resumes_from_a_checkpoint_with_the_same_history() -> None:
    definition = {
        "StartAt": "A",
        "States": {
            "A": {"Type": "Pass", "Result": 1, "ResultPath": "$.a", "Next": "B"},
            "B": {"Type": "Task", "Resource": TASK, "ResultPath": "$.b", "Next": "C"},
            "C": {"Type": "Pass", "Result": 3, "ResultPath": "$.c", "End": True},
        },
    }
    clock = ManualClock(start=0.0)
    whole = MemoryLog()
    first = await Interpreter(
        parse_definition(definition), log=whole, tasks=Script(2), clock=clock
    ).run(_execution(clock))
    checkpoint = whole.checkpoints[0]  # before B: A done
    assert checkpoint.next_state == "B" and checkpoint.input == {"a": 1}
    # a new process: a fresh interpreter, given only the definition, the execution and the checkpoint
    resumed_log = MemoryLog()
    interpreter = Interpreter(
        parse_definition(definition), log=resumed_log, tasks=Script(2), clock=clock
    )
    second = await interpreter.run(_execution(clock), resume=checkpoint)
    assert second == first
    tail = [e for e in whole.events if e.id > checkpoint.last_event_id]
    assert [(e.id, e.previous_event_id, e.type, e.details) for e in resumed_log.events] == [
        (e.id, e.previous_event_id, e.type, e.details) for e in tail
    ]


async def test_wait_for_task_token_puts_the_token_in_the_context() -> None:
    definition = {
        "StartAt": "T",
        "States": {
            "T": {
                "Type": "Task",
                "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
                "Parameters": {"token.$": "$$.Task.Token"},
                "End": True,
            }
        },
    }
    clock = ManualClock()
    tasks = Script("done")
    outcome = await Interpreter(parse_definition(definition), tasks=tasks, clock=clock).run(
        _execution(clock)
    )
    (request,) = tasks.requests
    assert request.task_token and request.input == {"token": request.task_token}
    assert outcome.output == "done"


async def test_no_choice_matched_fails_with_its_error() -> None:
    definition = {
        "StartAt": "C",
        "States": {
            "C": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.x", "NumericGreaterThan": 1, "Next": "S"}],
            },
            "S": {"Type": "Succeed"},
        },
    }
    clock = ManualClock()
    outcome = await Interpreter(parse_definition(definition), clock=clock).run(
        _execution(clock, json.dumps({"x": 0}))
    )
    assert (outcome.status, outcome.error) == ("FAILED", "States.NoChoiceMatched")
