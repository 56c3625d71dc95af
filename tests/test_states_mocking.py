"""Step Functions Local's MockConfigFile: mocked Task responses in config tests.

The mock file's rules (responses per invocation, ranges, Return and Throw)
are AWS's, as documented for Step Functions Local and exercised by
LocalStack's mocked-integration tests (its ``lambda_sqs_integration`` file
is AWS's documentation example, used here as it is). ``pipelines test``
runs as a real subprocess.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from plugins.states.definition import parse_definition
from plugins.states.errors import StatesError
from plugins.states.interpreter import run_machine
from plugins.states.mocking import MockConfigError, MockedResponse, MockedTasks, mock_test_case
from plugins.states.tasks import TaskRequest

from .helpers import run_cli

# AWS's documentation example (sfn-local-mock-cfg-file), as LocalStack keeps it.
AWS_EXAMPLE: dict[str, Any] = {
    "StateMachines": {
        "LambdaSQSIntegration": {
            "TestCases": {
                "HappyPath": {"LambdaState": "MockedLambdaSuccess", "SQSState": "MockedSQSSuccess"},
                "RetryPath": {"LambdaState": "MockedLambdaRetry", "SQSState": "MockedSQSSuccess"},
                "HybridPath": {"LambdaState": "MockedLambdaSuccess"},
            }
        }
    },
    "MockedResponses": {
        "MockedLambdaSuccess": {
            "0": {
                "Return": {
                    "StatusCode": 200,
                    "Payload": {"StatusCode": 200, "body": "Hello from Lambda!"},
                }
            }
        },
        "LambdaMockedResourceNotReady": {
            "0": {
                "Throw": {
                    "Error": "Lambda.ResourceNotReadyException",
                    "Cause": "Lambda resource is not ready.",
                }
            }
        },
        "MockedSQSSuccess": {
            "0": {
                "Return": {
                    "MD5OfMessageBody": "3bcb6e8e-7h85-4375-b0bc-1a59812c6e51",
                    "MessageId": "3bcb6e8e-8b51-4375-b0bc-1a59812c6e51",
                }
            }
        },
        "MockedLambdaRetry": {
            "0": {
                "Throw": {
                    "Error": "Lambda.ResourceNotReadyException",
                    "Cause": "Lambda resource is not ready.",
                }
            },
            "1-2": {"Throw": {"Error": "Lambda.TimeoutException", "Cause": "Lambda timed out."}},
            "3": {
                "Return": {
                    "StatusCode": 200,
                    "Payload": {"StatusCode": 200, "body": "Hello from Lambda!"},
                }
            },
        },
    },
}

# The state machine that example mocks (AWS's LambdaSQSIntegration).
LAMBDA_SQS = {
    "StartAt": "LambdaState",
    "States": {
        "LambdaState": {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {"FunctionName": "HelloWorldFunction", "Payload.$": "$"},
            "Retry": [
                {
                    "ErrorEquals": ["States.ALL"],
                    "IntervalSeconds": 2,
                    "MaxAttempts": 3,
                    "BackoffRate": 2,
                }
            ],
            "Next": "SQSState",
        },
        "SQSState": {
            "Type": "Task",
            "Resource": "arn:aws:states:::sqs:sendMessage",
            "Parameters": {
                "QueueUrl": "https://sqs.us-east-1.amazonaws.com/1/q",
                "MessageBody.$": "$",
            },
            "End": True,
        },
    },
}


class RealTasks:
    """The runner behind the mocks: records what reached it."""

    def __init__(self) -> None:
        self.called: list[str] = []

    async def run(self, request: TaskRequest) -> Any:
        self.called.append(request.context["State"]["Name"])
        return {"real": request.context["State"]["Name"]}


class InstantClock:
    """A clock whose timers fire at once, time moving to them (backoffs take no time)."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Any) -> Any:
        import asyncio

        self.now += delay
        return asyncio.get_running_loop().call_soon(callback)


def test_the_aws_example_parses_into_responses_per_invocation() -> None:
    retry = mock_test_case(AWS_EXAMPLE, "LambdaSQSIntegration", "RetryPath")
    name, responses = retry.states["LambdaState"]
    assert name == "MockedLambdaRetry"
    assert [r.error for r in responses] == [
        "Lambda.ResourceNotReadyException",
        "Lambda.TimeoutException",
        "Lambda.TimeoutException",
        None,
    ]
    assert responses[3].returned["Payload"]["body"] == "Hello from Lambda!"
    hybrid = mock_test_case(AWS_EXAMPLE, "LambdaSQSIntegration", "HybridPath")
    assert set(hybrid.states) == {"LambdaState"}


@pytest.mark.parametrize(
    ("responses", "message"),
    [
        ({"0": {"Return": 1}, "2": {"Return": 2}}, "the next after 0 is 1, not 2"),
        ({"0-1": {"Return": 1}, "1": {"Return": 2}}, "the next after 1 is 2, not 1"),
        ({"1": {"Return": 1}}, "the next after -1 is 0, not 1"),
        ({"0": {"Return": 1, "Throw": {"Error": "E", "Cause": "C"}}}, "one of Return or Throw"),
        ({"0": {}}, "one of Return or Throw"),
        ({"0": {"Throw": {"Error": "E"}}}, "Error and Cause (strings) are required"),
        ({"zero": {"Return": 1}}, 'a number ("0") or a range of them'),
        ({"2-1": {"Return": 1}}, "the range ends before it starts"),
    ],
)
def test_malformed_responses_are_refused_naming_the_field(
    responses: dict[str, Any], message: str
) -> None:
    config = {
        "StateMachines": {"m": {"TestCases": {"t": {"S": "R"}}}},
        "MockedResponses": {"R": responses},
    }
    with pytest.raises(MockConfigError) as refused:
        mock_test_case(config, "m", "t")
    assert message in str(refused.value)
    assert "MockedResponses.R" in str(refused.value)


def test_unknown_machines_cases_and_responses_are_named() -> None:
    with pytest.raises(MockConfigError, match="state machines: LambdaSQSIntegration"):
        mock_test_case(AWS_EXAMPLE, "Other", "HappyPath")
    with pytest.raises(MockConfigError, match="test cases: HappyPath, HybridPath, RetryPath"):
        mock_test_case(AWS_EXAMPLE, "LambdaSQSIntegration", "Nope")
    broken = json.loads(json.dumps(AWS_EXAMPLE))
    broken["StateMachines"]["LambdaSQSIntegration"]["TestCases"]["HappyPath"]["X"] = "Missing"
    with pytest.raises(MockConfigError, match="no mocked response named 'Missing'"):
        mock_test_case(broken, "LambdaSQSIntegration", "HappyPath")


async def _run(case: str, definition: dict[str, Any] = LAMBDA_SQS) -> tuple[Any, Any, RealTasks]:
    real = RealTasks()
    tasks = MockedTasks(mock_test_case(AWS_EXAMPLE, "LambdaSQSIntegration", case), real)
    outcome, log = await run_machine(
        parse_definition(json.dumps(definition)),
        '{"n": 1}',
        tasks=tasks,
        clock=InstantClock(),  # type: ignore[arg-type]
    )
    return outcome, log, real


async def test_the_retry_path_fails_three_attempts_then_succeeds_through_retry() -> None:
    outcome, log, real = await _run("RetryPath")
    assert outcome.status == "SUCCEEDED"
    assert outcome.output == {
        "MD5OfMessageBody": "3bcb6e8e-7h85-4375-b0bc-1a59812c6e51",
        "MessageId": "3bcb6e8e-8b51-4375-b0bc-1a59812c6e51",
    }
    failed = [e.details["error"] for e in log.events if e.type == "TaskFailed"]
    assert failed == [
        "Lambda.ResourceNotReadyException",
        "Lambda.TimeoutException",
        "Lambda.TimeoutException",
    ]
    succeeded = [e for e in log.events if e.type == "TaskSucceeded"]
    assert json.loads(succeeded[0].details["output"])["Payload"]["body"] == "Hello from Lambda!"
    assert real.called == []


async def test_a_state_the_case_does_not_name_calls_the_real_runner() -> None:
    outcome, _, real = await _run("HybridPath")
    assert outcome.status == "SUCCEEDED"
    assert real.called == ["SQSState"]
    assert outcome.output == {"real": "SQSState"}


async def test_an_invocation_past_the_responses_fails_uncatchably_and_is_reported() -> None:
    looping = {
        "StartAt": "LambdaState",
        "States": {
            "LambdaState": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName": "f"},
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}],
                "Next": "Again",
            },
            # a second pass through LambdaState: MockedLambdaSuccess has one response
            "Again": {
                "Type": "Pass",
                "Result": True,
                "ResultPath": "$.again",
                "Next": "LambdaState",
            },
            "Caught": {"Type": "Succeed"},
        },
    }
    real = RealTasks()
    tasks = MockedTasks(mock_test_case(AWS_EXAMPLE, "LambdaSQSIntegration", "HappyPath"), real)
    outcome, _ = await run_machine(parse_definition(json.dumps(looping)), "{}", tasks=tasks)
    assert (outcome.status, outcome.error) == ("FAILED", "States.Runtime")  # not Caught
    assert tasks.problems == [
        "state machine LambdaSQSIntegration, test case HappyPath: state 'LambdaState'"
        " was invoked 2 times, and mocked response 'MockedLambdaSuccess' has 1"
    ]


async def test_a_mocked_throw_is_what_retry_and_catch_see() -> None:
    cases = json.loads(json.dumps(AWS_EXAMPLE))
    cases["StateMachines"]["LambdaSQSIntegration"]["TestCases"]["NotReady"] = {
        "LambdaState": "LambdaMockedResourceNotReady"
    }
    definition = json.loads(json.dumps(LAMBDA_SQS))
    definition["States"]["LambdaState"]["Retry"] = []
    definition["States"]["LambdaState"]["Catch"] = [
        {"ErrorEquals": ["Lambda.ResourceNotReadyException"], "Next": "Caught"}
    ]
    definition["States"]["Caught"] = {"Type": "Pass", "End": True}
    tasks = MockedTasks(mock_test_case(cases, "LambdaSQSIntegration", "NotReady"), RealTasks())
    outcome, _ = await run_machine(parse_definition(json.dumps(definition)), "{}", tasks=tasks)
    assert outcome.status == "SUCCEEDED"
    assert outcome.output == {
        "Error": "Lambda.ResourceNotReadyException",
        "Cause": "Lambda resource is not ready.",
    }


async def test_each_invocation_gets_its_own_copy_of_a_return() -> None:
    response = MockedResponse(returned={"items": [1]})
    case = mock_test_case(
        {
            "StateMachines": {"m": {"TestCases": {"t": {"S": "R"}}}},
            "MockedResponses": {"R": {"0-1": {"Return": {"items": [1]}}}},
        },
        "m",
        "t",
    )
    tasks = MockedTasks(case, RealTasks())
    request = TaskRequest(
        resource=None,  # type: ignore[arg-type]
        input={},
        context={"State": {"Name": "S"}},
        timeout_seconds=None,
        heartbeat_seconds=None,
    )
    first = await tasks.run(request)
    first["items"].append(2)
    assert await tasks.run(request) == response.returned
    with pytest.raises(StatesError):
        await tasks.run(request)


# -- pipelines test, as a subprocess -----------------------------------------------------------

FLOW = {
    "StartAt": "Charge",
    "States": {
        "Charge": {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {"FunctionName": "charge", "Payload.$": "$"},
            "ResultSelector": {"id.$": "$.Payload.id"},
            "ResultPath": "$.charge",
            "Retry": [{"ErrorEquals": ["Busy"], "IntervalSeconds": 30, "MaxAttempts": 2}],
            "Next": "Notify",
        },
        "Notify": {
            "Type": "Task",
            "Resource": "arn:aws:states:::sqs:sendMessage",
            "Parameters": {"QueueUrl": "done", "MessageBody.$": "$"},
            "End": True,
        },
    },
}
MOCKS = {
    "StateMachines": {
        "flow": {
            "TestCases": {
                "Ok": {"Charge": "Charged"},
                "BusyOnce": {"Charge": "BusyThenCharged"},
                "Twice": {"Charge": "Charged", "Notify": "Sent"},
            }
        },
        "AwsName": {"TestCases": {"Ok": {"Charge": "Charged"}}},
    },
    "MockedResponses": {
        "Charged": {"0": {"Return": {"StatusCode": 200, "Payload": {"id": "ch-1"}}}},
        "BusyThenCharged": {
            "0": {"Throw": {"Error": "Busy", "Cause": "try later"}},
            "1": {"Return": {"StatusCode": 200, "Payload": {"id": "ch-2"}}},
        },
        "Sent": {"0": {"Return": {"MessageId": "m-1"}}},
    },
}
PIPELINE = """
state: state.db
resources:
  charge: {type: function, function: "flow_functions:charge"}
  done: {type: queue}
  flow: {type: state_machine, definition_file: flow.asl.json, state_machine_type: %s}
rules:
  orders:
    pattern: {source: [shop]}
    targets: [{id: flow, resource: flow, input_path: $.detail}]
"""


def _project(tmp_path: Path, tests: str, machine_type: str = "STANDARD") -> Path:
    (tmp_path / "flow.asl.json").write_text(json.dumps(FLOW))
    (tmp_path / "MockConfigFile.json").write_text(json.dumps(MOCKS))
    (tmp_path / "pipeline.yaml").write_text(PIPELINE % machine_type)
    (tmp_path / "flow_functions.py").write_text(
        "async def charge(payload):\n    raise RuntimeError('the real charge was called')\n"
    )
    test = tmp_path / "flow.test.yaml"
    test.write_text(
        "config: pipeline.yaml\nmock_config: MockConfigFile.json\ntests:\n"
        + textwrap.indent(textwrap.dedent(tests), "  ")
    )
    return test


ORDER = "input: [{Source: shop, DetailType: order, Detail: {order: 7}}]\n"


@pytest.mark.parametrize("machine_type", ["STANDARD", "EXPRESS"])
def test_pipelines_test_runs_a_machine_on_mocked_responses(
    tmp_path: Path, machine_type: str
) -> None:
    test = _project(
        tmp_path,
        f"""\
        - name: charged and notified
          {ORDER}
          state_machines: {{flow: Ok}}
          expect:
            charge: []
            done: [{{pattern: {{order: [7], charge: {{id: [ch-1]}}}}}}]
        - name: a wrong expectation fails
          {ORDER}
          state_machines: {{flow: Ok}}
          expect:
            done: [{{pattern: {{order: [8]}}}}]
        - name: the mock file's name for the machine
          {ORDER}
          state_machines: {{flow: {{test_case: Ok, state_machine: AwsName}}}}
          expect:
            done: [{{pattern: {{charge: {{id: [ch-1]}}}}}}]
        """,
        machine_type,
    )
    done = run_cli("test", str(test))
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert f"{test}::charged and notified PASSED" in lines
    assert f"{test}::the mock file's name for the machine PASSED" in lines
    assert f"{test}::a wrong expectation fails FAILED" in lines
    # a queue keeps the message body as text, as SQS does
    assert '+ "{\\"order\\":7,\\"charge\\":{\\"id\\":\\"ch-1\\"}}"' in done.stdout
    assert "2 passed, 1 failed" in done.stdout


def test_a_retry_waits_its_backoff_on_the_tests_clock(tmp_path: Path) -> None:
    test = _project(
        tmp_path,
        f"""\
        - name: long enough for the backoff
          {ORDER}
          state_machines: {{flow: BusyOnce}}
          run_for: 30
          expect:
            done: [{{pattern: {{charge: {{id: [ch-2]}}}}}}]
        - name: too short for it
          {ORDER}
          state_machines: {{flow: BusyOnce}}
          run_for: 29
          expect:
            done: [{{pattern: {{charge: {{id: [ch-2]}}}}}}]
        """,
    )
    done = run_cli("test", str(test))
    lines = done.stdout.splitlines()
    assert f"{test}::long enough for the backoff PASSED" in lines, done.stdout + done.stderr
    assert f"{test}::too short for it FAILED" in lines
    assert "1 passed, 1 failed" in done.stdout


def test_problems_are_located_in_the_test_file(tmp_path: Path) -> None:
    test = _project(
        tmp_path,
        f"""\
        - name: no such test case
          {ORDER}
          state_machines: {{flow: Nope}}
        - name: not a state machine
          {ORDER}
          state_machines: {{done: Ok}}
        - name: invoked past its responses
          input:
            - {{Source: shop, DetailType: order, Detail: {{order: 1}}}}
            - {{Source: shop, DetailType: order, Detail: {{order: 2}}}}
          state_machines: {{flow: Twice}}
        - name: an unknown key
          {ORDER}
          state_machines: {{flow: {{test_case: Ok, tset_case: Ok}}}}
        """,
    )
    done = run_cli("test", str(test))
    assert done.returncode == 1
    out = done.stdout
    assert f"{test}:7:22: state_machines.flow: StateMachines.flow.TestCases.Nope: no such" in out
    assert "(test cases: BusyOnce, Ok, Twice)" in out
    assert f"{test}:11:22: state_machines.done: not a state machine" in out
    # each execution counts its own invocations: one response is enough for
    # two executions (a count shared between them would fail the second)
    assert f"{test}::invoked past its responses PASSED" in out.splitlines()
    assert "tset_case" in out and "1 passed, 3 failed" in out


def test_an_invocation_past_the_responses_fails_the_test(tmp_path: Path) -> None:
    (tmp_path / "loop.asl.json").write_text(
        json.dumps(
            {
                "StartAt": "Charge",
                "States": {
                    "Charge": {
                        "Type": "Task",
                        "Resource": "arn:aws:states:::lambda:invoke",
                        "Parameters": {"FunctionName": "charge"},
                        "Retry": [{"ErrorEquals": ["States.ALL"], "MaxAttempts": 3}],
                        "End": True,
                    }
                },
            }
        )
    )
    test = _project(
        tmp_path,
        f"""\
        - name: busy, then nothing left
          {ORDER}
          state_machines: {{loop: OnlyBusy}}
          run_for: 60
        """,
    )
    mocks = {
        "StateMachines": {"loop": {"TestCases": {"OnlyBusy": {"Charge": "Busy"}}}},
        "MockedResponses": {"Busy": {"0": {"Throw": {"Error": "Busy", "Cause": "later"}}}},
    }
    (tmp_path / "MockConfigFile.json").write_text(json.dumps(mocks))
    pipeline = (tmp_path / "pipeline.yaml").read_text()
    pipeline = pipeline.replace(
        "rules:", "  loop: {type: state_machine, definition_file: loop.asl.json}\nrules:"
    ).replace("resource: flow", "resource: loop")
    (tmp_path / "pipeline.yaml").write_text(pipeline)
    done = run_cli("test", str(test))
    assert done.returncode == 1
    assert (
        "state_machines.loop: state machine loop, test case OnlyBusy: state 'Charge' was"
        " invoked 2 times, and mocked response 'Busy' has 1"
    ) in done.stdout
