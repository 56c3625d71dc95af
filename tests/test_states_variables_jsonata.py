"""Workflow variables and JSONata mode: what the recordings do not cover.

Scopes of Parallel branches and Map iterations, the limits, the validation of
Assign names and of each language's fields, a checkpoint carrying the
variables, catchers and retriers in JSONata mode, AWS's added functions.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest

from pipelines.clock import ManualClock
from plugins.states import jsonata_mode
from plugins.states.definition import parse_definition, validate
from plugins.states.errors import DefinitionError, StatesError
from plugins.states.history import MemoryLog
from plugins.states.interpreter import Execution, Interpreter, Outcome, run_machine
from plugins.states.tasks import TaskRequest
from plugins.states.variables import MAX_VARIABLE_BYTES, Scope

Json = Any
TASK = "arn:aws:states:::test:work"


def _execution(input_text: str = "{}") -> Execution:
    return Execution(
        arn="arn:aws:states:us-east-1:1:execution:m:e",
        name="e",
        state_machine_arn="arn:aws:states:us-east-1:1:stateMachine:m",
        state_machine_name="m",
        input_text=input_text,
    )


class Tasks:
    """Answers each Task from a list: a value, or a StatesError to raise."""

    def __init__(self, *answers: Json) -> None:
        self.answers = list(answers)
        self.requests: list[TaskRequest] = []

    async def run(self, request: TaskRequest) -> Json:
        self.requests.append(request)
        answer = self.answers.pop(0) if self.answers else request.input
        if isinstance(answer, StatesError):
            raise answer
        return answer


async def _run(
    definition: Json, input_value: Json = None, tasks: Tasks | None = None
) -> tuple[Outcome, MemoryLog]:
    log = MemoryLog()
    interpreter = Interpreter(
        parse_definition(definition), log=log, tasks=tasks, clock=ManualClock(start=0.0)
    )
    outcome = await interpreter.run(_execution(json.dumps(input_value or {})))
    return outcome, log


def _assigned(log: MemoryLog) -> list[tuple[str, dict[str, Json]]]:
    return [
        (e.details["name"], {k: json.loads(v) for k, v in e.details["assignedVariables"].items()})
        for e in log.events
        if e.details and "assignedVariables" in e.details
    ]


# -- scopes --------------------------------------------------------------------------------


async def test_a_branch_reads_outer_variables_and_its_own_do_not_leak_out() -> None:
    definition = {
        "QueryLanguage": "JSONata",
        "StartAt": "Set",
        "States": {
            "Set": {"Type": "Pass", "Assign": {"x": 1}, "Next": "Fan"},
            "Fan": {
                "Type": "Parallel",
                "Branches": [
                    {
                        "StartAt": "B",
                        "States": {
                            "B": {
                                "Type": "Pass",
                                "Assign": {"inner": "{% $x + 1 %}"},
                                "Next": "C",
                            },
                            "C": {"Type": "Pass", "Output": "{% $inner %}", "End": True},
                        },
                    }
                ],
                "Next": "After",
            },
            "After": {
                "Type": "Pass",
                "Output": {"branches": "{% $states.input %}", "leaked": "{% $exists($inner) %}"},
                "End": True,
            },
        },
    }
    outcome, log = await _run(definition)
    assert outcome.status == "SUCCEEDED", outcome
    assert outcome.output == {"branches": [2], "leaked": False}
    assert ("B", {"inner": 2}) in _assigned(log)


async def test_a_branch_cannot_assign_an_outer_variable() -> None:
    definition = {
        "StartAt": "Set",
        "States": {
            "Set": {"Type": "Pass", "Assign": {"x": 1}, "Next": "Fan"},
            "Fan": {
                "Type": "Parallel",
                "Branches": [
                    {
                        "StartAt": "B",
                        "States": {"B": {"Type": "Pass", "Assign": {"x": 2}, "End": True}},
                    }
                ],
                "End": True,
            },
        },
    }
    outcome, _ = await _run(definition)
    assert outcome.status == "FAILED"
    assert outcome.error == "States.Runtime"
    assert outcome.cause is not None and "'x' belongs to an outer scope" in outcome.cause


async def test_each_map_iteration_has_its_own_variables() -> None:
    definition = {
        "QueryLanguage": "JSONata",
        "StartAt": "Set",
        "States": {
            "Set": {"Type": "Pass", "Assign": {"base": 10}, "Next": "Each"},
            "Each": {
                "Type": "Map",
                "Items": [1, 2, 3],
                "MaxConcurrency": 1,
                "ItemSelector": {
                    "value": "{% $states.context.Map.Item.Value %}",
                    "index": "{% $states.context.Map.Item.Index %}",
                },
                "ItemProcessor": {
                    "StartAt": "Seen",
                    "States": {
                        "Seen": {
                            "Type": "Pass",
                            # an earlier iteration's binding would make $exists true
                            "Output": {
                                "seen": "{% $exists($mine) %}",
                                "index": "{% $states.input.index %}",
                            },
                            "Assign": {"mine": "{% $states.input.value + $base %}"},
                            "Next": "Use",
                        },
                        "Use": {
                            "Type": "Pass",
                            "Output": "{% [$states.input.seen, $states.input.index, $mine] %}",
                            "End": True,
                        },
                    },
                },
                "End": True,
            },
        },
    }
    outcome, _ = await _run(definition)
    assert outcome.status == "SUCCEEDED", outcome
    assert outcome.output == [[False, 0, 11], [False, 1, 12], [False, 2, 13]]


def test_a_scope_keeps_its_own_bindings_apart_from_the_outer_ones() -> None:
    outer = Scope({"a": 1})
    inner = outer.child()
    inner.bind({"b": 2})
    assert dict(inner) == {"a": 1, "b": 2} and dict(outer) == {"a": 1}
    with pytest.raises(StatesError, match="outer scope"):
        inner.bind({"a": 3})


# -- limits and names ------------------------------------------------------------------------


async def test_a_variable_over_256_kib_fails_the_state() -> None:
    big = "x" * MAX_VARIABLE_BYTES
    definition = {
        "StartAt": "Big",
        "States": {
            "Big": {"Type": "Pass", "Assign": {"big.$": "$.text"}, "OutputPath": None, "End": True}
        },
    }
    outcome, _ = await _run(definition, {"text": big})
    assert outcome.status == "FAILED"
    assert outcome.error == "States.DataLimitExceeded"
    assert outcome.cause is not None and "'big'" in outcome.cause


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("1x", "not valid"),
        ("a-b", "not valid"),
        ("x" * 81, "longer than 80"),
        ("states", "reserved"),
    ],
)
def test_a_bad_variable_name_is_refused_where_it_is(key: str, problem: str) -> None:
    definition = {
        "StartAt": "A",
        "States": {"A": {"Type": "Pass", "Assign": {key: 1}, "End": True}},
    }
    problems = validate(definition)
    assert [(p.code, p.location) for p in problems] == [
        ("INVALID_VARIABLE_NAME", f"/States/A/Assign/{key}")
    ]
    assert problem in problems[0].message


def test_a_variable_assigned_twice_in_one_assign_is_refused() -> None:
    definition = {
        "StartAt": "A",
        "States": {"A": {"Type": "Pass", "Assign": {"x": 1, "x.$": "$.y"}, "End": True}},
    }
    (problem,) = validate(definition)
    assert problem.location == "/States/A/Assign/x.$"
    assert "assigned twice" in problem.message


def test_each_language_refuses_the_other_ones_fields() -> None:
    jsonata_state = {
        "StartAt": "A",
        "States": {
            "A": {
                "QueryLanguage": "JSONata",
                "Type": "Pass",
                "Parameters": {"a": 1},
                "ResultPath": "$.x",
                "End": True,
            }
        },
    }
    assert [(p.message, p.location) for p in validate(jsonata_state)] == [
        ('The field "Parameters" is not supported by Step Functions', "/States/A/Parameters"),
        ('The field "ResultPath" is not supported by Step Functions', "/States/A/ResultPath"),
    ]
    jsonpath_state = {
        "StartAt": "A",
        "States": {"A": {"Type": "Pass", "Output": {"a": 1}, "End": True}},
    }
    assert [(p.message, p.location) for p in validate(jsonpath_state)] == [
        ('The field "Output" is not supported by Step Functions', "/States/A/Output"),
    ]


def test_a_jsonata_expression_that_does_not_parse_is_refused_where_it_is() -> None:
    definition = {
        "QueryLanguage": "JSONata",
        "StartAt": "A",
        "States": {"A": {"Type": "Pass", "Output": {"a": "{% (1 + %}"}, "End": True}},
    }
    (problem,) = validate(definition)
    assert problem.location == "/States/A/Output/a"
    assert "must be a valid JSONata expression" in problem.message
    with pytest.raises(DefinitionError):
        parse_definition(definition)


def test_a_result_path_cannot_write_a_variable() -> None:
    definition = {
        "StartAt": "A",
        "States": {"A": {"Type": "Pass", "ResultPath": "$x", "End": True}},
    }
    (problem,) = validate(definition)
    assert problem.location == "/States/A/ResultPath"


# -- resuming ----------------------------------------------------------------------------


async def test_a_resumed_execution_sees_the_variables_assigned_before_its_checkpoint() -> None:
    definition = {
        "QueryLanguage": "JSONata",
        "StartAt": "A",
        "States": {
            "A": {"Type": "Pass", "Assign": {"x": "{% $states.input.v %}"}, "Next": "B"},
            "B": {"Type": "Task", "Resource": TASK, "Next": "C"},
            "C": {"Type": "Pass", "Output": {"x": "{% $x %}"}, "End": True},
        },
    }
    clock = ManualClock(start=0.0)
    whole = MemoryLog()
    first = await Interpreter(
        parse_definition(definition), log=whole, tasks=Tasks(), clock=clock
    ).run(_execution('{"v": 7}'))
    assert first.output == {"x": 7}
    checkpoint = whole.checkpoints[0]
    assert checkpoint.next_state == "B" and checkpoint.variables == {"x": 7}
    resumed = await Interpreter(
        parse_definition(definition), log=MemoryLog(), tasks=Tasks(), clock=clock
    ).run(_execution('{"v": 7}'), resume=checkpoint)
    assert resumed == first


# -- JSONata data flow ---------------------------------------------------------------------


async def test_a_jsonata_task_takes_arguments_and_shapes_its_output_from_the_result() -> None:
    definition = {
        "QueryLanguage": "JSONata",
        "StartAt": "T",
        "States": {
            "T": {
                "Type": "Task",
                "Resource": TASK,
                "Arguments": {"n": "{% $states.input.n * 2 %}"},
                "Assign": {"seen": "{% $states.result.doubled %}"},
                "Output": {"in": "{% $states.input.n %}", "out": "{% $states.result.doubled %}"},
                "Next": "Show",
            },
            "Show": {"Type": "Pass", "Output": "{% $seen %}", "End": True},
        },
    }
    tasks = Tasks({"doubled": 42})
    outcome, log = await _run(definition, {"n": 21}, tasks)
    assert tasks.requests[0].input == {"n": 42}
    assert outcome.output == 42
    exited = next(e for e in log.events if e.type == "TaskStateExited")
    assert json.loads(exited.details["output"]) == {"in": 21, "out": 42}
    assert exited.details["assignedVariables"] == {"seen": "42"}


async def test_a_jsonata_catcher_sees_the_error_output_and_assigns() -> None:
    definition = {
        "QueryLanguage": "JSONata",
        "StartAt": "T",
        "States": {
            "T": {
                "Type": "Task",
                "Resource": TASK,
                "Catch": [
                    {
                        "ErrorEquals": ["States.ALL"],
                        "Assign": {"why": "{% $states.errorOutput.Cause %}"},
                        "Output": {
                            "error": "{% $states.errorOutput.Error %}",
                            "input": "{% $states.input %}",
                        },
                        "Next": "Handled",
                    }
                ],
                "End": True,
            },
            "Handled": {
                "Type": "Pass",
                "Output": "{% $merge([$states.input, {'why': $why}]) %}",
                "End": True,
            },
        },
    }
    outcome, _ = await _run(definition, {"k": 1}, Tasks(StatesError("Boom", "it broke")))
    assert outcome.output == {"error": "Boom", "input": {"k": 1}, "why": "it broke"}


async def test_a_query_evaluation_error_is_caught_by_name_after_its_event() -> None:
    definition = {
        "QueryLanguage": "JSONata",
        "StartAt": "T",
        "States": {
            "T": {
                "Type": "Task",
                "Resource": TASK,
                "Arguments": "{% $missing %}",
                "Catch": [{"ErrorEquals": ["States.QueryEvaluationError"], "Next": "Handled"}],
                "End": True,
            },
            "Handled": {"Type": "Succeed"},
        },
    }
    tasks = Tasks()
    outcome, log = await _run(definition, {}, tasks)
    assert not tasks.requests
    assert outcome.status == "SUCCEEDED"
    assert outcome.output["Error"] == "States.QueryEvaluationError"
    assert [e.type for e in log.events][2:4] == ["EvaluationFailed", "TaskStateExited"]
    failed = log.events[2].details
    assert failed["location"] == "Arguments" and failed["state"] == "T"


async def test_a_choice_condition_that_is_not_boolean_fails_naming_the_rule() -> None:
    definition = {
        "QueryLanguage": "JSONata",
        "StartAt": "C",
        "States": {
            "C": {
                "Type": "Choice",
                "Choices": [{"Condition": "{% $states.input.n %}", "Next": "Done"}],
                "Default": "Done",
            },
            "Done": {"Type": "Succeed"},
        },
    }
    outcome, log = await _run(definition, {"n": 3})
    assert outcome.error == "States.QueryEvaluationError"
    assert log.events[2].details["location"] == "Choices/0/Condition"
    assert outcome.cause is not None and "Expected 'boolean'" in outcome.cause


async def test_jsonpath_states_read_variables_in_paths_and_intrinsics() -> None:
    definition = {
        "StartAt": "Set",
        "States": {
            "Set": {"Type": "Pass", "Assign": {"who": {"name": "Ada"}, "n": 2}, "Next": "Use"},
            "Use": {
                "Type": "Pass",
                "Parameters": {
                    "name.$": "$who.name",
                    "hello.$": "States.Format('hi {}', $who.name)",
                    "sum.$": "States.MathAdd($n, 3)",
                },
                "Next": "Pick",
            },
            "Pick": {
                "Type": "Choice",
                "Choices": [{"Variable": "$n", "NumericEquals": 2, "Next": "Done"}],
            },
            "Done": {"Type": "Succeed"},
        },
    }
    outcome, _ = await _run(definition)
    assert outcome.output == {"name": "Ada", "hello": "hi Ada", "sum": 5}


async def test_an_undefined_variable_in_a_jsonpath_state_fails_naming_it() -> None:
    definition = {
        "StartAt": "Use",
        "States": {"Use": {"Type": "Pass", "Parameters": {"a.$": "$nope"}, "End": True}},
    }
    outcome, _ = await _run(definition)
    assert outcome.error == "States.Runtime"
    assert outcome.cause is not None and "'$nope' is not defined" in outcome.cause


# -- AWS's added functions ----------------------------------------------------------------------


def _eval(expression: str) -> Json:
    return jsonata_mode.evaluate("{% " + expression + " %}", "Output", {}, {})


def test_the_functions_aws_adds_to_jsonata() -> None:
    assert _eval("$partition([1,2,3,4,5], 2)") == [[1, 2], [3, 4], [5]]
    assert _eval("$range(0, 10, 5)") == [0, 5, 10]
    assert _eval("$range(1, 9, 9)") == 1  # a single value stands alone, as AWS records it
    assert _eval("$hash('hello', 'SHA-256')") == (
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    )
    assert _eval("$hash('hello', 'MD5')") == "5d41402abc4b2a76b9719d911017c592"
    assert _eval("$parse('{\"a\": [1, null]}')") == {"a": [1, None]}
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", _eval("$uuid()")
    )
    seeded = _eval("$random(7)")
    assert seeded == _eval("$random(7)") and 0 <= seeded < 1
    with pytest.raises(jsonata_mode.QueryFailure, match="threw an error during evaluation"):
        _eval("$hash('x', 'SHA-3')")


def test_null_and_undefined_are_told_apart() -> None:
    assert jsonata_mode.evaluate("{% $v %}", "Output", {}, {"v": None}) is None
    with pytest.raises(jsonata_mode.QueryFailure, match=r"returned nothing \(undefined\)"):
        jsonata_mode.evaluate("{% $w %}", "Output/a", {}, {"v": None})
    assert jsonata_mode.evaluate("{% $states.input %}", "Output", {"input": {"a": None}}, {}) == {
        "a": None
    }


async def test_now_and_millis_read_the_execution_s_clock() -> None:
    definition = {
        "QueryLanguage": "JSONata",
        "StartAt": "W",
        "States": {
            "W": {"Type": "Wait", "Seconds": 90, "Next": "T"},
            "T": {
                "Type": "Pass",
                "Assign": {"at": "{% $millis() %}"},
                "Output": "{% [$now(), $millis(), $now('[H01]:[m01]')] %}",
                "End": True,
            },
        },
    }
    clock = ManualClock(start=1_700_000_000.25)
    run = asyncio.ensure_future(run_machine(parse_definition(definition), clock=clock))
    await clock.advance(90.0)
    outcome, log = await run
    assert outcome.output == ["2023-11-14T22:14:50.250Z", 1_700_000_090_250, "22:14"]
    exited = next(e for e in log.events if e.type == "PassStateExited")
    assert (exited.details or {})["assignedVariables"] == {"at": "1700000090250"}
