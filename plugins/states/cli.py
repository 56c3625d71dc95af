"""``pipelines sfn ...``: state machines and their executions on the command line.

Two ways in, by what a command needs:

- ``start`` and ``redrive`` reach the **running pipeline** through its control socket
  (the ``aws`` op: StartExecution run in process, as the stepfunctions API
  runs it): an execution runs in the runner, whose resources its tasks call,
  and a STANDARD one written to the database by another process would wait
  up to a minute for the runner to look for it. ``--wait`` then asks the
  runner (DescribeExecution) until it has ended.
- ``list``, ``describe`` and ``history`` read the **state database**
  (``StatesStore``): they work whether or not the pipeline runs (SQLite lets
  both use it at once), for STANDARD executions (EXPRESS ones live in the
  runner's memory only).
- ``validate`` reads a file: ValidateStateMachineDefinition's diagnostics,
  each located by its JSON pointer and, in the file, its line and column.
- ``test-state`` runs one state (TestState) in this process, where no
  resource exists (a Task is tested with a mock), or, given ``--config`` or
  ``--control``, in the running pipeline, whose resources its Task calls.

Each command is a thin layer over a public function below (``machines``,
``execution``, ``history``, ``timeline``, ``check_file``, ``start``,
``test_state_request``, ``run_test_state``, ``inspection_lines``, ``redrive``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from pipelines import clikit
from pipelines.cli import control_options, control_socket
from pipelines.clikit import echo_output, output_option, read_argument, state_options
from pipelines.control import aws
from pipelines.errors import PipelinesError
from plugins.states.definition import express_problems, validate
from plugins.states.errors import DefinitionError
from plugins.states.executions import machine_arn
from plugins.states.redrive import redrive_fields
from plugins.states.store import ENDED, StatesStore

T = TypeVar("T")

#: How often ``start --wait`` asks whether the execution has ended.
WAIT_POLL = 0.2


def _with_store(
    config: str | None, state: str | None, call: Callable[[StatesStore], Awaitable[T]]
) -> T:
    return clikit.with_store(StatesStore, config, state, call)


# -- public functions ----------------------------------------------------------------


async def machines(store: StatesStore) -> list[dict[str, Any]]:
    """The state machines the database knows, with their executions' counts by status."""
    out = []
    by_api = {record.name for record in await store.made_by_api()}
    for record in await store.machines():
        counts: dict[str, int] = {}
        for execution in await store.executions(record.name):
            counts[execution.status] = counts.get(execution.status, 0) + 1
        out.append(
            {
                "name": record.name,
                "stateMachineArn": record.arn,
                "type": record.machine_type,
                "revision": record.revision,
                "madeBy": "api" if record.name in by_api else "config",
                "executions": counts,
            }
        )
    return out


async def _find(store: StatesStore, execution: str) -> str:
    """An execution's ARN from its ARN or its name (unique among the database's)."""
    if execution.startswith("arn:"):
        if await store.execution(execution) is None:
            raise PipelinesError(f"no execution {execution} in the state database")
        return execution
    found = [r.arn for r in await store.executions() if r.name == execution]
    if not found:
        raise PipelinesError(f"no execution named {execution!r} in the state database")
    if len(found) > 1:
        raise PipelinesError(f"{len(found)} executions are named {execution!r}: give its ARN")
    return found[0]


async def execution(store: StatesStore, name_or_arn: str) -> dict[str, Any]:
    """DescribeExecution's fields of an execution, by ARN or name (dates in epoch seconds)."""
    arn = await _find(store, name_or_arn)
    record = await store.execution(arn)
    assert record is not None
    return {**record.describe(machine_arn(record.machine)), **await redrive_fields(store, record)}


async def history(store: StatesStore, name_or_arn: str) -> list[dict[str, Any]]:
    """GetExecutionHistory's events of an execution, by ARN or name (durable ones)."""
    arn = await _find(store, name_or_arn)
    return [event.to_aws() for event in await store.history(arn)]


def _short(text: Any, width: int = 60) -> str:
    value = text if isinstance(text, str) else json.dumps(text, separators=(",", ":"))
    value = " ".join(value.split())
    return value if len(value) <= width else value[: width - 1] + "…"


def timeline(events: list[dict[str, Any]]) -> list[str]:
    """One line per event: seconds since the first, type, state name, a short detail."""
    if not events:
        return []
    start = float(events[0]["timestamp"])
    lines = []
    for event in events:
        details = next(
            (v for k, v in event.items() if k.endswith("EventDetails") and isinstance(v, dict)), {}
        )
        name = details.get("name") or details.get("resource") or ""
        if "error" in details or "cause" in details:
            detail = " ".join(
                _short(details[key]) for key in ("error", "cause") if details.get(key)
            )
        elif "output" in details:
            detail = "→ " + _short(details["output"])
        elif "input" in details:
            detail = "← " + _short(details["input"])
        elif "parameters" in details:
            detail = _short(details["parameters"])
        else:
            detail = ""
        offset = float(event["timestamp"]) - start
        line = f"{offset:+9.3f}s  {event['id']:>3}  {event['type']:<28} {name:<20} {detail}"
        lines.append(line.rstrip())
    return lines


def _line_and_column(text: str, pointer: str | None) -> str:
    """Where in a JSON file the field a JSON pointer names starts (its key), if found."""
    if not pointer or pointer == "/":
        return "1:1"
    position = 0
    for token in pointer.strip("/").split("/"):
        key = token.replace("~1", "/").replace("~0", "~")
        found = text.find(json.dumps(key), position) if not key.isdigit() else -1
        if found < 0:
            break
        position = found
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    return f"{line}:{column}"


def check_file(path: Path, machine_type: str = "STANDARD") -> list[dict[str, str]]:
    """ValidateStateMachineDefinition on a file: each diagnostic with its ``place``
    (``FILE:LINE:COLUMN``, the line of the field its location names)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PipelinesError(f"cannot read {path}: {error}") from None
    problems: list[DefinitionError] = validate(text)
    if not problems and machine_type == "EXPRESS":
        problems = express_problems(text)
    return [
        {"place": f"{path}:{_place(text, problem)}", **problem.diagnostic()} for problem in problems
    ]


def _place(text: str, problem: DefinitionError) -> str:
    """``LINE:COLUMN`` of a diagnostic: the field its location names, or for
    a file that is not JSON where the parser stopped (the diagnostic has no
    location then, and its message counts from 1 as this does)."""
    if problem.code == "INVALID_JSON_DESCRIPTION":
        try:
            json.loads(text)
        except json.JSONDecodeError as error:
            return f"{error.lineno}:{error.colno}"
    return _line_and_column(text, problem.location)


async def start(
    socket: Path, machine: str, input_text: str | None, name: str | None, *, wait: bool
) -> dict[str, Any]:
    """StartExecution in the running pipeline; with ``wait``, its description once it ended."""
    arn = machine if machine.startswith("arn:") else machine_arn(machine)
    params: dict[str, Any] = {"stateMachineArn": arn}
    if input_text is not None:
        params["input"] = input_text
    if name is not None:
        params["name"] = name
    started = await aws(socket, "stepfunctions", "StartExecution", params)
    if not wait:
        return started
    execution_arn = started["executionArn"]
    if ":express:" in execution_arn:
        raise PipelinesError("--wait is for STANDARD machines; an EXPRESS one is not described")
    while True:
        described = await aws(
            socket, "stepfunctions", "DescribeExecution", {"executionArn": execution_arn}
        )
        if described["status"] in ENDED:
            return described
        await asyncio.sleep(WAIT_POLL)


async def redrive(socket: Path, execution_arn: str, *, wait: bool) -> dict[str, Any]:
    """RedriveExecution in the running pipeline; with ``wait``, its description once it
    ended again."""
    params = {"executionArn": execution_arn}
    answer = await aws(socket, "stepfunctions", "RedriveExecution", params)
    if not wait:
        return answer
    while True:
        described = await aws(socket, "stepfunctions", "DescribeExecution", params)
        if described["status"] in ENDED:
            return described
        await asyncio.sleep(WAIT_POLL)


#: The role a test-state request names when none is given (TestState requires one for a
#: Task; nothing here assumes it).
TEST_STATE_ROLE = "arn:aws:iam::000000000000:role/pipelines-test-state"


def test_state_request(
    definition: str,
    *,
    state_name: str | None = None,
    input_text: str | None = None,
    inspection_level: str = "INFO",
    mock_result: str | None = None,
    mock_error: str | None = None,
    mock_cause: str | None = None,
    variables: str | None = None,
    context: str | None = None,
    role_arn: str | None = TEST_STATE_ROLE,
    retrier_retry_count: int | None = None,
    map_iteration_failure_count: int | None = None,
) -> dict[str, Any]:
    """TestState's request (botocore's field names) from the command's options;
    ``definition`` is a file's path or the JSON itself."""
    text = definition
    if not definition.lstrip().startswith("{"):
        try:
            text = Path(definition).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise PipelinesError(f"cannot read {definition}: {error}") from None
    params: dict[str, Any] = {"definition": text, "inspectionLevel": inspection_level}
    optional = {
        "stateName": state_name,
        "input": input_text,
        "variables": variables,
        "context": context,
        "roleArn": role_arn,
    }
    params.update({key: value for key, value in optional.items() if value is not None})
    if mock_result is not None:
        params["mock"] = {"result": mock_result}
    if mock_error is not None or mock_cause is not None:
        error_output = {"error": mock_error or "", "cause": mock_cause or ""}
        params.setdefault("mock", {})["errorOutput"] = error_output
    configuration = {
        "retrierRetryCount": retrier_retry_count,
        "mapIterationFailureCount": map_iteration_failure_count,
    }
    if any(value is not None for value in configuration.values()):
        params["stateConfiguration"] = {k: v for k, v in configuration.items() if v is not None}
    return params


async def run_test_state(params: dict[str, Any], socket: Path | None = None) -> dict[str, Any]:
    """TestState: in the pipeline listening on ``socket`` (its tasks call its
    resources), or in this process without resources (``socket`` None)."""
    if socket is not None:
        return await aws(socket, "stepfunctions", "TestState", params)
    from plugins.states.teststate import test_state as run_here

    return await run_here(params)


def inspection_lines(answer: dict[str, Any]) -> list[str]:
    """TestState's answer for a reader: status, next state, error, output, then each
    step of the inspection data, one line each."""
    lines = [f"status      {answer.get('status', '')}"]
    for key, label in (("nextState", "next state"), ("error", "error"), ("cause", "cause")):
        if answer.get(key) is not None:
            lines.append(f"{label:<11} {answer[key]}")
    if "output" in answer:
        lines.append(f"output      {answer['output']}")
    inspection = answer.get("inspectionData") or {}
    if inspection:
        lines.append("inspection:")
        width = max(len(key) for key in inspection)
        for key, value in inspection.items():
            shown = value if isinstance(value, str) else json.dumps(value)
            lines.append(f"  {key:<{width}}  {shown}")
    return lines


# -- commands ----------------------------------------------------------------------------


@click.group("sfn")
def sfn_group() -> None:
    """State machines (Step Functions) and their executions."""


@sfn_group.command("list")
@state_options
@output_option
def list_command(config: str | None, state: str | None, output: str) -> None:
    """List the state machines in the state database, with their executions' counts."""
    echo_output(
        _with_store(config, state, machines),
        output,
        columns=["name", "type", "revision", "madeBy", "executions"],
    )


@sfn_group.command("start")
@click.argument("machine")
@click.option("--input", "input_text", default=None, help="The input: JSON, or @file (@- stdin).")
@click.option("--name", default=None, help="The execution's name (default: a new UUID).")
@click.option("--wait", is_flag=True, help="Wait until it has ended; print its description.")
@control_options
@output_option
def start_command(
    machine: str,
    input_text: str | None,
    name: str | None,
    wait: bool,
    config: str | None,
    control: str | None,
    output: str,
) -> None:
    """Start an execution of MACHINE (a name or ARN) in the running pipeline."""
    text = None if input_text is None else read_argument(input_text)
    socket = control_socket(config, control)
    started = asyncio.run(start(socket, machine, text, name, wait=wait))
    echo_output(_dated(started), output)


@sfn_group.command("describe")
@click.argument("execution")
@state_options
@output_option
def describe_command(config: str | None, state: str | None, execution: str, output: str) -> None:
    """Describe an execution (its ARN, or its name)."""
    echo_output(_with_store(config, state, lambda store: _describe(store, execution)), output)


async def _describe(store: StatesStore, name: str) -> dict[str, Any]:
    return _dated(await execution(store, name))


def _dated(described: dict[str, Any]) -> dict[str, Any]:
    """A description's dates (epoch seconds, as the API's JSON carries them)
    as ISO 8601, as every command prints them."""
    for key in ("startDate", "stopDate", "redriveDate"):
        if isinstance(described.get(key), int | float):
            described[key] = _iso(described[key])
    return described


def _iso(seconds: float) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        + f".{int(seconds % 1 * 1000):03d}Z"
    )


@sfn_group.command("history")
@click.argument("execution")
@state_options
@click.option(
    "--output",
    "-o",
    type=click.Choice(["json", "jsonl", "table"]),
    default="json",
    show_default=True,
    help="json, jsonl: GetExecutionHistory's events; table: a timeline, one line per event.",
)
def history_command(config: str | None, state: str | None, execution: str, output: str) -> None:
    """An execution's history (its ARN, or its name): AWS's events, or (-o table) a timeline."""
    events = _with_store(config, state, lambda store: history(store, execution))
    if output != "table":
        echo_output(events, output)
        return
    for line in timeline(events):
        click.echo(line)


@sfn_group.command("validate")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--type",
    "machine_type",
    type=click.Choice(["STANDARD", "EXPRESS"]),
    default="STANDARD",
    show_default=True,
)
@output_option
def validate_command(file: Path, machine_type: str, output: str) -> None:
    """Check a definition file as ValidateStateMachineDefinition does; exit 1 on a problem."""
    diagnostics = check_file(file, machine_type)
    if output == "json":
        echo_output({"result": "FAIL" if diagnostics else "OK", "diagnostics": diagnostics}, output)
    else:
        echo_output(diagnostics, output, columns=["place", "code", "message"])
    if diagnostics:
        raise SystemExit(1)


@sfn_group.command("test-state")
@click.argument("definition")
@click.option("--state", "state_name", default=None, help="Test this state of a whole machine.")
@click.option("--input", "input_text", default=None, help="The input: JSON, or @file (@- stdin).")
@click.option(
    "--inspection-level",
    "-l",
    type=click.Choice(["INFO", "DEBUG", "TRACE"]),
    default="DEBUG",
    show_default=True,
    help="INFO: the outcome; DEBUG, TRACE: each step of the data flow too.",
)
@click.option("--mock-result", default=None, help="The mocked result (JSON, or @file).")
@click.option("--mock-error", default=None, help="The mocked error's name.")
@click.option("--mock-cause", default=None, help="The mocked error's cause.")
@click.option("--variables", default=None, help="Variables in scope (a JSON object, or @file).")
@click.option("--context", "context", default=None, help="The context object (JSON, or @file).")
@click.option("--retrier-retry-count", type=int, default=None, help="Retries made before.")
@click.option("--map-iteration-failure-count", type=int, default=None)
@click.option("--role-arn", default=TEST_STATE_ROLE, show_default=True)
@control_options
@output_option
def test_state_command(
    definition: str,
    state_name: str | None,
    input_text: str | None,
    inspection_level: str,
    mock_result: str | None,
    mock_error: str | None,
    mock_cause: str | None,
    variables: str | None,
    context: str | None,
    retrier_retry_count: int | None,
    map_iteration_failure_count: int | None,
    role_arn: str,
    config: str | None,
    control: str | None,
    output: str,
) -> None:
    """Run one state (TestState): DEFINITION is a state's JSON or a file holding it (or a
    whole machine, with --state). In this process (no resources: test a Task with a
    mock) or, with --config/--control, in the running pipeline. Exit 1 when it FAILED.
    TestState's answer, or (-o table) readable lines."""

    def text(value: str | None) -> str | None:
        return None if value is None else read_argument(value)

    params = test_state_request(
        definition,
        state_name=state_name,
        input_text=text(input_text),
        inspection_level=inspection_level,
        mock_result=text(mock_result),
        mock_error=mock_error,
        mock_cause=mock_cause,
        variables=text(variables),
        context=text(context),
        role_arn=role_arn,
        retrier_retry_count=retrier_retry_count,
        map_iteration_failure_count=map_iteration_failure_count,
    )
    socket = None if config is None and control is None else control_socket(config, control)
    answer = asyncio.run(run_test_state(params, socket))
    if output == "table":  # readable lines: the outcome, then each step of the data flow
        for line in inspection_lines(answer):
            click.echo(line)
    else:
        echo_output(answer, output)
    if answer.get("status") == "FAILED":
        raise SystemExit(1)


@sfn_group.command("redrive")
@click.argument("execution")
@click.option("--wait", is_flag=True, help="Wait until it has ended again; print its description.")
@control_options
@output_option
def redrive_command(
    execution: str, wait: bool, config: str | None, control: str | None, output: str
) -> None:
    """Redrive a FAILED, TIMED_OUT or ABORTED execution (its ARN, or its name) in the
    running pipeline: it runs again from the state that did not succeed."""
    socket = control_socket(config, control)
    arn = execution
    if not execution.startswith("arn:"):  # a name: its ARN from the state database
        arn = _with_store(config, None, lambda store: _find(store, execution))
    echo_output(_dated(asyncio.run(redrive(socket, arn, wait=wait))), output)
