"""``pipelines sfn test-state`` and ``sfn redrive`` as a user runs them: the real CLI
in subprocesses; test-state in its own process (no resources) and through a running
pipeline (its resources), redrive through a running pipeline."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import pipelines_command, project_env, run_cli

PIPELINE = """\
resources:
  double: {type: function, function: "tests.states_functions:double"}
  flaky: {type: function, function: "tests.states_functions:flaky"}
  charge:
    type: state_machine
    definition:
      StartAt: Charge
      States:
        Charge:
          Type: Task
          Resource: arn:aws:lambda:us-east-1:000000000000:function:flaky
          End: true
"""
CATCHING = {
    "Type": "Task",
    "QueryLanguage": "JSONata",
    "Resource": "arn:aws:states:::lambda:invoke",
    "Arguments": {"FunctionName": "double", "Payload": "{% $states.input %}"},
    "Retry": [{"ErrorEquals": ["Busy"], "IntervalSeconds": 2, "BackoffRate": 3, "MaxAttempts": 3}],
    "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Refund"}],
    "Next": "Ship",
}


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Path]:
    config = tmp_path / "pipeline.yaml"
    config.write_text(PIPELINE)
    runner = subprocess.Popen(
        [*pipelines_command(), "run", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        env=project_env(),
    )
    try:
        assert runner.stderr is not None
        assert "control socket" in runner.stderr.readline()  # started and listening
        yield config
    finally:
        runner.terminate()
        assert runner.wait(timeout=30) == 0
        runner.stderr.close()  # type: ignore[union-attr]


def test_a_choice_from_a_file_reads_as_lines(tmp_path: Path) -> None:
    state = tmp_path / "choice.json"
    state.write_text(
        json.dumps(
            {
                "Type": "Choice",
                "InputPath": "$.order",
                "Choices": [{"Variable": "$.total", "NumericGreaterThan": 100, "Next": "Review"}],
                "Default": "Ship",
            }
        )
    )
    done = run_cli(
        "sfn", "test-state", str(state), "--input", '{"order": {"total": 250}}', "-o", "table"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "status      SUCCEEDED",
        "next state  Review",
        'output      {"total":250}',
        "inspection:",
        '  input           {"order":{"total":250}}',
        '  afterInputPath  {"total":250}',
    ]


def test_a_mocked_task_retried_then_caught_answers_json_by_default() -> None:
    definition = json.dumps(CATCHING)
    busy = run_cli(
        "sfn", "test-state", definition, "--mock-error", "Busy", "--mock-cause", "try later",
        "--retrier-retry-count", "2",
    )  # fmt: skip
    assert busy.returncode == 0, busy.stderr
    answer = json.loads(busy.stdout)
    assert answer["status"] == "RETRIABLE"
    assert (answer["error"], answer["cause"]) == ("Busy", "try later")
    # the third retry would wait 2 x 3^2 seconds
    details = answer["inspectionData"]["errorDetails"]
    assert details == {"retryBackoffIntervalSeconds": 18, "retryIndex": 0}
    exhausted = run_cli(
        "sfn", "test-state", definition, "--mock-error", "Busy", "--retrier-retry-count", "3",
    )  # fmt: skip
    caught = json.loads(exhausted.stdout)
    assert (caught["status"], caught["nextState"]) == ("CAUGHT_ERROR", "Refund")
    assert caught["inspectionData"]["errorDetails"] == {"retryIndex": 0, "catchIndex": 0}
    assert json.loads(caught["output"]) == {"Error": "Busy", "Cause": ""}


def test_a_whole_machine_state_by_name_and_a_failure_exits_1(tmp_path: Path) -> None:
    machine = tmp_path / "flow.asl.json"
    machine.write_text(
        json.dumps(
            {
                "StartAt": "Check",
                "States": {
                    "Check": {"Type": "Pass", "Next": "Refuse"},
                    "Refuse": {"Type": "Fail", "ErrorPath": "$.why", "Cause": "refused"},
                },
            }
        )
    )
    done = run_cli(
        "sfn", "test-state", str(machine), "--state", "Refuse", "--input", '{"why": "Closed"}',
        "-l", "INFO", "-o", "table",
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "status      FAILED",
        "error       Closed",
        "cause       refused",
    ]


def test_refusals_name_the_problem(tmp_path: Path) -> None:
    unmocked = run_cli("sfn", "test-state", json.dumps(CATCHING))
    assert unmocked.returncode != 0
    assert "ValidationException: no resource can be called here" in unmocked.stderr
    no_mock = run_cli("sfn", "test-state", '{"Type": "Parallel", "Branches": [], "End": true}')
    assert "InvalidDefinition" in no_mock.stderr and "/States/StateName/Branches" in no_mock.stderr
    missing = run_cli("sfn", "test-state", str(tmp_path / "nowhere.json"))
    assert missing.returncode != 0 and "cannot read" in missing.stderr
    machine = {"StartAt": "A", "States": {"A": {"Type": "Pass", "End": True}}}
    unknown = run_cli("sfn", "test-state", json.dumps(machine), "--state", "Nope")
    assert "State not found in definition" in unknown.stderr
    # with --state, the definition is a whole machine
    lone = run_cli("sfn", "test-state", '{"Type": "Pass", "End": true}', "--state", "A")
    assert 'The field "Type" is not supported by Step Functions at /Type' in lone.stderr
    assert "Traceback" not in unknown.stderr + missing.stderr + no_mock.stderr


def test_a_task_calls_the_running_pipelines_function(running: Path) -> None:
    done = run_cli(
        "sfn", "test-state", json.dumps(CATCHING), "--input", '{"value": 21}', "-c", str(running),
        "-o", "json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert (answer["status"], answer["nextState"]) == ("SUCCEEDED", "Ship")
    assert json.loads(answer["inspectionData"]["result"])["Payload"] == {"value": 42}


def test_redrive_a_failed_execution_by_name(running: Path, tmp_path: Path) -> None:
    config = str(running)
    given = {"gate": str(tmp_path / "gate"), "calls": str(tmp_path / "calls"), "amount": 7}
    started = run_cli(
        "sfn", "start", "charge", "--input", json.dumps(given), "--name", "c-1", "--wait",
        "-c", config,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["status"] == "FAILED"
    (tmp_path / "gate").touch()
    redriven = run_cli("sfn", "redrive", "c-1", "--wait", "-c", config)
    assert redriven.returncode == 0, redriven.stderr
    described = json.loads(redriven.stdout)
    assert (described["status"], described["redriveCount"]) == ("SUCCEEDED", 1)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", described["redriveDate"])
    assert described["startDate"] < described["redriveDate"] <= described["stopDate"]
    # describe reads the state database: the same redrive fields as the API's
    stored = json.loads(run_cli("sfn", "describe", "c-1", "-c", config).stdout)
    assert (stored["redriveDate"], stored["redriveStatus"]) == (
        described["redriveDate"],
        described["redriveStatus"],
    )
    assert json.loads(described["output"]) == {"charged": 7}
    again = run_cli("sfn", "redrive", "c-1", "-c", config)
    assert again.returncode != 0
    assert "ExecutionNotRedrivable: Execution is SUCCEEDED and cannot be redriven" in again.stderr
    assert "Traceback" not in again.stderr
