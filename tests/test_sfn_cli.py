"""``pipelines sfn ...`` as a user runs it: the real CLI in subprocesses, against a
real ``pipelines run`` (start, through its control socket) and its state
database (list, describe, history)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import pipelines_command, run_cli

PIPELINE = """\
resources:
  flow:
    type: state_machine
    definition:
      StartAt: Greet
      States:
        Greet: {Type: Pass, Parameters: {"greeting.$": "States.Format('hello {}', $.who)"}, Next: Pause}
        Pause: {Type: Wait, Seconds: 0, Next: Check}
        Check:
          Type: Choice
          Choices: [{Variable: $.greeting, StringEquals: hello nobody, Next: Refuse}]
          Default: Done
        Refuse: {Type: Fail, Error: Nobody, Cause: no one to greet}
        Done: {Type: Succeed}
"""


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Path]:
    config = tmp_path / "pipeline.yaml"
    config.write_text(PIPELINE)
    runner = subprocess.Popen(
        [*pipelines_command(), "run", str(config)], stderr=subprocess.PIPE, text=True
    )
    try:
        assert runner.stderr is not None
        assert "control socket" in runner.stderr.readline()  # started and listening
        yield config
    finally:
        runner.terminate()
        assert runner.wait(timeout=30) == 0
        runner.stderr.close()  # type: ignore[union-attr]


def _json(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert done.returncode == 0, done.stderr
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def test_start_wait_describe_and_history(running: Path, tmp_path: Path) -> None:
    config = str(running)
    done = _json(
        run_cli(
            "sfn",
            "start",
            "flow",
            "--input",
            '{"who": "ann"}',
            "--name",
            "ann",
            "--wait",
            "-c",
            config,
        )
    )
    assert (done["status"], json.loads(str(done["output"]))) == (
        "SUCCEEDED",
        {"greeting": "hello ann"},
    )
    (tmp_path / "nobody.json").write_text('{"who": "nobody"}')
    failed = _json(
        run_cli(
            "sfn",
            "start",
            "flow",
            "--input",
            f"@{tmp_path / 'nobody.json'}",
            "--wait",
            "-c",
            config,
        )
    )
    assert (failed["status"], failed["error"], failed["cause"]) == (
        "FAILED",
        "Nobody",
        "no one to greet",
    )
    # the same name with another input: refused, in one line
    again = run_cli(
        "sfn", "start", "flow", "--input", '{"who": "bob"}', "--name", "ann", "-c", config
    )
    assert again.returncode == 1
    assert again.stderr.startswith("error: ExecutionAlreadyExists: Execution Already Exists:")
    described = _json(run_cli("sfn", "describe", "ann", "-c", config))
    assert described["status"] == "SUCCEEDED" and str(described["startDate"]).endswith("Z")
    # --wait prints the description as describe does, its dates ISO 8601 too
    assert (done["startDate"], done["stopDate"]) == (described["startDate"], described["stopDate"])
    timeline = run_cli("sfn", "history", "ann", "-o", "table", "-c", config)
    assert timeline.returncode == 0, timeline.stderr
    lines = timeline.stdout.splitlines()
    assert [line.split()[2] for line in lines] == [
        "ExecutionStarted",
        "PassStateEntered",
        "PassStateExited",
        "WaitStateEntered",
        "WaitStateExited",
        "ChoiceStateEntered",
        "ChoiceStateExited",
        "SucceedStateEntered",
        "SucceedStateExited",
        "ExecutionSucceeded",
    ]
    assert lines[0].lstrip().startswith("+0.000s")
    assert "Greet" in lines[1] and '{"greeting":"hello ann"}' in lines[2]
    failed_lines = run_cli(
        "sfn", "history", str(failed["executionArn"]), "-o", "table", "-c", config
    ).stdout
    assert failed_lines.splitlines()[-1].split()[2:] == [
        "ExecutionFailed",
        "Nobody",
        "no",
        "one",
        "to",
        "greet",
    ]
    events = json.loads(run_cli("sfn", "history", "ann", "-c", config).stdout)
    assert events[0]["executionStartedEventDetails"]["input"] == '{"who": "ann"}'
    listed = _json(run_cli("sfn", "list", "-c", config))
    assert listed == [  # type: ignore[comparison-overlap]
        {
            "name": "flow",
            "stateMachineArn": "arn:aws:states:us-east-1:000000000000:stateMachine:flow",
            "type": "STANDARD",
            "revision": 1,
            "madeBy": "config",
            "executions": {"SUCCEEDED": 1, "FAILED": 1},
        }
    ]


def test_start_refusals_name_the_problem(running: Path) -> None:
    missing = run_cli("sfn", "start", "nope", "-c", str(running))
    assert missing.returncode == 1
    assert missing.stderr == (
        "error: StateMachineDoesNotExist: State Machine Does Not Exist:"
        " 'arn:aws:states:us-east-1:000000000000:stateMachine:nope'\n"
    )
    bad = run_cli("sfn", "start", "flow", "--input", "not json", "-c", str(running))
    assert (
        "InvalidExecutionInput: Invalid State Machine Execution Input: 'Unrecognized token 'not'"
        in bad.stderr
    )


def test_describe_without_a_runner_and_unknown_names(running: Path, tmp_path: Path) -> None:
    missing = run_cli("sfn", "describe", "ghost", "-c", str(running))
    assert missing.returncode == 1
    assert missing.stderr == "error: no execution named 'ghost' in the state database\n"


def test_validate_a_file_with_located_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.asl.json"
    bad.write_text(
        '{"StartAt": "A",\n "States": {\n  "A": {"Type": "Pass", "Next": "Nope"}\n }\n}\n'
    )
    done = run_cli("sfn", "validate", str(bad))
    assert done.returncode == 1
    answer = json.loads(done.stdout)
    assert answer["result"] == "FAIL"
    assert answer["diagnostics"][0] == {
        "place": f"{bad}:3:25",
        "severity": "ERROR",
        "code": "MISSING_TRANSITION_TARGET",
        "message": "Missing 'Next' target: Nope",
        "location": "/States/A/Next",
    }
    good = tmp_path / "good.asl.json"
    good.write_text(json.dumps({"StartAt": "A", "States": {"A": {"Type": "Succeed"}}}))
    assert json.loads(run_cli("sfn", "validate", str(good)).stdout) == {
        "result": "OK",
        "diagnostics": [],
    }
    task = {
        "StartAt": "T",
        "States": {
            "T": {
                "Type": "Task",
                "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
                "End": True,
            }
        },
    }
    good.write_text(json.dumps(task))
    express = run_cli("sfn", "validate", str(good), "--type", "EXPRESS", "-o", "table")
    assert express.returncode == 1 and "/T/Resource" not in express.stdout
    assert "Express state machine does not support '.waitForTaskToken'" in express.stdout


def test_validate_places_a_file_that_is_not_json_at_its_syntax_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.asl.json"
    bad.write_text('{"StartAt": "A",\n "States": {"A": {"Type": "Pass", "End": true,}}}\n')
    done = run_cli("sfn", "validate", str(bad))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (diagnostic,) = json.loads(done.stdout)["diagnostics"]
    assert diagnostic["code"] == "INVALID_JSON_DESCRIPTION"
    # The place is where the parser stopped (line 2, the comma before "}"),
    # as an editor jumps to it, not the file's start.
    assert diagnostic["place"] == f"{bad}:2:47", diagnostic
