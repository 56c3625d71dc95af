"""TestState: one state run alone, with what it did at each step of its data flow.

``test_state(params, tasks=...)`` takes TestState's request as botocore's
model names its fields (``definition``, ``input``, ``inspectionLevel``,
``stateName``, ``mock``, ``variables``, ``context``, ``stateConfiguration``,
``roleArn``, ``revealSecrets``) and answers its response (``output``,
``status``, ``nextState``, ``error``, ``cause``, ``inspectionData``), or
raises ``TestStateError`` with AWS's code and message.

- Without ``stateName`` the definition is one state, tested as the only
  state of a machine (named ``StateName``, as AWS names it in its
  messages); with it, the definition is a whole machine, validated whole, and
  the named state is tested.
- The state runs through the interpreter (``Interpreter.run_state``) with an
  ``inspection.Inspector``: a Task calls its resource through ``tasks`` (the
  runtime's, as an execution's would), unless a ``mock`` answers for it; a
  Map or a Parallel is not run, its mock is its result (AWS requires one).
- A retrier taking the failure answers RETRIABLE, a catcher CAUGHT_ERROR with
  the catcher's next state; the status is FAILED when nothing takes it.
- INFO answers no ``inspectionData``; DEBUG and TRACE the steps. TRACE adds
  the HTTP request and response of an HTTP Task, which is not served here, so
  it answers what DEBUG does.

The checks and their wording are those AWS answered in LocalStack's recorded
TestState cases (tests/test_states_teststate.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipelines.errors import PipelinesError
from plugins.states.definition import (
    MapState,
    ParallelState,
    Program,
    State,
    StateMachine,
    TaskState,
    parse_definition,
    validate,
)
from plugins.states.errors import StatesError
from plugins.states.inspection import (
    CAUGHT_ERROR,
    FAILED,
    RETRIABLE,
    SUCCEEDED,
    TESTED_STATE_NAME,
    Inspector,
    Mock,
    Retriable,
)
from plugins.states.interpreter import Execution, Interpreter
from plugins.states.tasks import TaskRunner
from plugins.states.templates import dump

Json = Any

#: The name AWS gives a state tested alone (``/States/StateName/...`` in its messages).
STATE_NAME = TESTED_STATE_NAME
LEVELS = ("INFO", "DEBUG", "TRACE")
#: The context object's fields TestState's ``context`` may give.
CONTEXT_FIELDS = ("Execution", "State", "StateMachine", "Task")
EXECUTION_FIELDS = ("Id", "Input", "Name", "RoleArn", "StartTime", "RedriveCount", "RedriveTime")
#: What AWS names the states TestState runs without a mock.
UNSUPPORTED_TYPES = (
    "TestState API does not support Map or Parallel states. Supported state types include: "
    "[Task, Wait, Pass, Succeed, Fail, Choice]"
)


class TestStateError(PipelinesError):
    """A request TestState refuses: ``code`` is AWS's error code."""

    __test__ = False  # not a pytest class

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


def _invalid(message: str) -> TestStateError:
    return TestStateError("ValidationException", message)


@dataclass(frozen=True, slots=True)
class _Tested:
    """The state under test, the raw JSON it was written as, and its machine."""

    state: State
    body: dict[str, Json]
    machine: StateMachine


def _json_object(text: str, what: str) -> dict[str, Json]:
    try:
        value = json.loads(text)
    except ValueError:
        raise _invalid(f"{what} must be valid JSON") from None
    if not isinstance(value, dict):
        raise _invalid(f"{what} must be a JSON object")
    return value


def _targets(body: dict[str, Json]) -> set[str]:
    """The states a lone state's transitions name (they exist in its machine, not here)."""
    names = {body.get("Next"), body.get("Default")}
    for key in ("Choices", "Catch"):
        for rule in body.get(key) or []:
            if isinstance(rule, dict):
                names.add(rule.get("Next"))
    return {name for name in names if isinstance(name, str)}


def tested_state(definition: str, state_name: str | None) -> _Tested:
    """The state TestState runs (``TestStateError`` InvalidDefinition when it is not valid)."""
    try:
        document = json.loads(definition)
    except ValueError:
        document = None
    if state_name is None and isinstance(document, dict):
        # one state: the only state of a machine whose other states are where it goes
        states: dict[str, Json] = {STATE_NAME: document}
        for name in _targets(document) - {STATE_NAME}:
            states[name] = {"Type": "Succeed"}
        document = {"StartAt": STATE_NAME, "States": states}
        state_name = STATE_NAME
    problems = validate(document if document is not None else definition)
    if problems:
        raise TestStateError("InvalidDefinition", str(problems[0]))
    assert isinstance(document, dict) and state_name is not None
    machine = parse_definition(document)
    found = _find(machine.program, document, state_name)
    if found is None:
        raise _invalid("State not found in definition")
    return _Tested(found[0], found[1], machine)


def _find(program: Program, node: dict[str, Json], name: str) -> tuple[State, Json] | None:
    """The state named ``name`` in ``program`` or in its branches' and iterations' programs
    (``node``: the program's JSON), with its JSON."""
    if name in program.states:
        return program.states[name], node["States"][name]
    for state_name, state in program.states.items():
        body = node["States"][state_name]
        inner: list[tuple[Program, Json]] = []
        if isinstance(state, ParallelState):
            inner = list(zip(state.branches, body["Branches"], strict=True))
        elif isinstance(state, MapState) and state.processor is not None:
            inner = [(state.processor, body.get("ItemProcessor") or body.get("Iterator"))]
        for sub_program, sub_node in inner:
            found = _find(sub_program, sub_node, name)
            if found is not None:
                return found
    return None


def _mock(params: dict[str, Json], tested: _Tested) -> Mock | None:
    given = params.get("mock")
    if given is None:
        return None
    state = tested.state
    if params.get("revealSecrets"):
        raise _invalid("TestState does not support RevealSecrets when a mock is specified.")
    if "result" in given and "errorOutput" in given:
        raise _invalid(
            "A test mock should have only one of the following fields: [result, errorOutput]."
        )
    if not isinstance(state, TaskState | MapState | ParallelState):
        raise _invalid(f"State type '{state.type}' is not supported when a mock is specified")
    if "errorOutput" in given:
        error = given["errorOutput"] or {}
        return Mock(error=StatesError(error.get("error") or "", error.get("cause")))
    try:
        result = json.loads(given.get("result") or "")
    except ValueError:
        raise _invalid("Mocked result must be valid JSON") from None
    if isinstance(state, MapState):
        if "ResultWriter" in tested.body:
            if not isinstance(result, dict):
                raise _invalid("Mocked result must be a JSON object.")
        elif not isinstance(result, list):
            raise _invalid("Mocked result must be an array.")
    if isinstance(state, ParallelState):
        if not isinstance(result, list):
            raise _invalid("Mocked result must be an array.")
        if len(result) != len(state.branches):
            raise _invalid(
                "Mocked result must contain the same number of items as number of Parallel "
                "branches."
            )
    return Mock(result=result)


def _context(text: str | None, state: State) -> dict[str, Json] | None:
    if text is None:
        return None
    prefix = "Invalid Context object provided: "
    context = _json_object(text, "Context")
    for key, value in context.items():
        if key == "Map":
            raise _invalid(prefix + "'Map' field is not supported when mocking a Context object")
        if key not in CONTEXT_FIELDS:
            raise _invalid(prefix + f"Field '{key}' is not allowed")
        if not isinstance(value, dict):
            raise _invalid(prefix + f"{key} must be an object")
    waits = isinstance(state, TaskState) and (
        ".sync" in state.resource or ".waitForTaskToken" in state.resource
    )
    if "Task" in context and not waits:
        raise _invalid(
            prefix + "Context object contains 'Task' when state is not a Task state with a "
            "'.sync' or '.waitForTaskToken' service integration pattern"
        )
    for key, value in context.get("Execution", {}).items():
        if key not in EXECUTION_FIELDS:
            raise _invalid(prefix + f"Field '{key}' is not allowed")
        if key in ("Id", "Name", "RoleArn", "StartTime") and not isinstance(value, str):
            raise _invalid(prefix + f"Execution.{key} must be a string")
    return context


def _configuration(params: dict[str, Json], mock: Mock | None) -> tuple[int, int | None]:
    configuration = params.get("stateConfiguration") or {}
    failures = configuration.get("mapIterationFailureCount")
    if failures is not None:
        if mock is None:
            raise _invalid(
                "TestState does not support MapIterationFailureCount when a mock is not specified."
            )
        if isinstance(mock.result, list) and failures > len(mock.result):
            raise _invalid(
                "Map iteration failure count must be less than or equal to the number of Map "
                "iterations"
            )
    return int(configuration.get("retrierRetryCount") or 0), failures


def _execution(params: dict[str, Json], input_text: str, now: float, region: str) -> Execution:
    """The express execution AWS runs a tested state in (the context object's)."""
    account = "000000000000"
    machine = f"TestState-{uuid.uuid4().hex[:12]}"
    name = str(uuid.uuid4())
    machine_arn = f"arn:aws:states:{region}:{account}:stateMachine:{machine}"
    return Execution(
        arn=f"arn:aws:states:{region}:{account}:express:{machine}:{name}",
        name=name,
        state_machine_arn=machine_arn,
        state_machine_name=machine,
        input_text=input_text,
        role_arn=params.get("roleArn") or "",
        start_time=now,
    )


async def test_state(
    params: dict[str, Json],
    *,
    tasks: Callable[[Execution], TaskRunner] | None = None,
    clock: Any = None,
    region: str = "us-east-1",
) -> dict[str, Json]:
    """TestState's answer to ``params`` (its request, by the model's names); ``tasks``
    gives the task runner a Task's resource is called through (none: an unmocked Task
    is refused)."""
    level = params.get("inspectionLevel") or "INFO"
    if level not in LEVELS:
        raise _invalid(f"Invalid inspectionLevel: {level}")
    tested = tested_state(params["definition"], params.get("stateName"))
    state = tested.state
    mock = _mock(params, tested)
    retries, failures = _configuration(params, mock)
    if mock is None and isinstance(state, MapState | ParallelState):
        raise TestStateError("InvalidDefinition", UNSUPPORTED_TYPES)
    if mock is None and isinstance(state, TaskState):
        if not params.get("roleArn"):
            raise _invalid("RoleArn must be specified when testing a Task state")
        if tasks is None:
            raise _invalid(
                "no resource can be called here: test the Task with a mock, or in the "
                "running pipeline"
            )
        if ".waitForTaskToken" in state.resource:
            # nothing could answer its token: AWS tests such a Task only with a mock
            raise _invalid("TestState tests a .waitForTaskToken Task only with a mock")
    input_text = params.get("input") or "{}"
    try:
        data = json.loads(input_text)
    except ValueError:
        raise TestStateError(
            "InvalidExecutionInput", f"Invalid State Machine Execution Input: '{input_text}'"
        ) from None
    variables = _json_object(params["variables"], "Variables") if params.get("variables") else {}
    inspector = Inspector(
        mock=mock,
        retrier_retry_count=retries,
        map_iteration_failures=failures,
        context=_context(params.get("context"), state),
    )
    interpreter = Interpreter(tested.machine, clock=clock, region=region)
    interpreter.inspector = inspector
    execution = _execution(params, input_text, interpreter.clock.time(), region)
    if tasks is not None:
        interpreter.tasks = tasks(execution)
    inspector.note("input", data)
    if variables:
        inspector.note("variables", variables)
    answer: dict[str, Json] = {}
    try:
        output, next_state = await interpreter.run_state(execution, state, data, variables)
    except Retriable as retriable:
        answer.update(status=RETRIABLE, error=retriable.error, cause=retriable.cause)
    except StatesError as failure:
        answer.update(status=FAILED, error=failure.error, cause=failure.cause)
    else:
        answer["output"] = dump(output)
        answer["status"] = inspector.status
        if next_state is not None:
            answer["nextState"] = next_state
        if inspector.status == CAUGHT_ERROR and inspector.caught is not None:
            answer.update(error=inspector.caught.error, cause=inspector.caught.cause)
    if level != "INFO":
        answer["inspectionData"] = dict(inspector.data)
    answer.setdefault("status", SUCCEEDED)
    return {key: value for key, value in answer.items() if value is not None}
