"""Mocked task responses in Step Functions Local's MockConfigFile format.

A mock file (AWS's ``MockConfigFile.json``) names, per state machine, test
cases that map Task states to mocked responses, and the responses
themselves, per invocation of the state::

    {
      "StateMachines": {
        "orders-flow": {
          "TestCases": {
            "HappyPath": {"Charge": "ChargeOk", "Approve": "Approved"}
          }
        }
      },
      "MockedResponses": {
        "ChargeOk": {
          "0": {"Throw": {"Error": "Lambda.TooManyRequestsException", "Cause": "busy"}},
          "1-2": {"Return": {"StatusCode": 200, "Payload": {"charged": true}}}
        },
        "Approved": {"0": {"Return": {"approved": true}}}
      }
    }

A response's keys are the state's invocations, counted from 0 within one
execution: an attempt (so a Retry's attempts take the next ones), each
iteration of a Map, each pass through a loop. ``"1-2"`` covers 1 to 2; the
ranges must follow each other from 0 without a gap. ``Return`` is the
task's result as the service returns it (for ``lambda:invoke``, the whole
response: ``StatusCode``, ``Payload``), ``Throw`` its failure (``Error`` and
``Cause``, both required), which Retry and Catch see as they see a real
one. A ``.waitForTaskToken`` task's mocked ``Return`` is what
SendTaskSuccess would have answered: no message is sent, no token waited
for. A Task state the test case does not name calls its resource for real.
An invocation past the last response fails the task with ``States.Runtime``
(which no Catch takes) and the test with it; Step Functions Local leaves
that case undocumented.

These are Step Functions Local's rules as AWS documents them
(https://docs.aws.amazon.com/step-functions/latest/dg/sfn-local-mock-cfg-file.html)
and as LocalStack's mocked-integration tests use them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plugins.states.errors import StatesError
from plugins.states.tasks import TaskRequest, TaskRunner

Json = Any


class MockConfigError(ValueError):
    """A mock file that cannot be used: the message names the field."""


@dataclass(frozen=True, slots=True)
class MockedResponse:
    """One invocation's response: ``returned`` (when ``error`` is None) or a failure."""

    returned: Json = None
    error: str | None = None
    cause: str | None = None


@dataclass(frozen=True, slots=True)
class MockTestCase:
    """A state machine's test case: state name -> its responses, by invocation."""

    machine: str
    name: str
    states: Mapping[str, tuple[str, tuple[MockedResponse, ...]]]


def load_mock_config(path: str | Path) -> dict[str, Json]:
    """The mock file's JSON; ``MockConfigError`` when unreadable or not JSON."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MockConfigError(f"cannot read the mock file {path}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MockConfigError(f"{path}: not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MockConfigError(f"{path}: a mock file is an object (StateMachines, MockedResponses)")
    return data


def mock_test_case(config: Mapping[str, Json], machine: str, case: str) -> MockTestCase:
    """Test case ``case`` of state machine ``machine`` in a mock file, checked."""
    unknown = set(config) - {"StateMachines", "MockedResponses"}
    if unknown:
        raise MockConfigError(
            f"unknown top-level field(s) {', '.join(sorted(unknown))}"
            " (a mock file has StateMachines and MockedResponses)"
        )
    machines = config.get("StateMachines")
    if not isinstance(machines, dict):
        raise MockConfigError("StateMachines: an object of state machine names is required")
    responses = config.get("MockedResponses")
    if not isinstance(responses, dict):
        raise MockConfigError("MockedResponses: an object of mocked responses is required")
    found = machines.get(machine)
    if not isinstance(found, dict) or not isinstance(found.get("TestCases"), dict):
        known = ", ".join(sorted(machines)) or "none"
        raise MockConfigError(
            f"StateMachines.{machine}.TestCases: no test cases for state machine"
            f" {machine!r} (state machines: {known})"
        )
    cases = found["TestCases"]
    states = cases.get(case)
    if not isinstance(states, dict):
        known = ", ".join(sorted(cases)) or "none"
        raise MockConfigError(
            f"StateMachines.{machine}.TestCases.{case}: no such test case (test cases: {known})"
        )
    out: dict[str, tuple[str, tuple[MockedResponse, ...]]] = {}
    for state, response_name in states.items():
        where = f"StateMachines.{machine}.TestCases.{case}.{state}"
        if not isinstance(response_name, str):
            raise MockConfigError(f"{where}: the name of a mocked response is required")
        if response_name not in responses:
            raise MockConfigError(
                f"{where}: no mocked response named {response_name!r} in MockedResponses"
            )
        out[state] = (response_name, _responses(response_name, responses[response_name]))
    return MockTestCase(machine, case, out)


def _responses(name: str, given: Json) -> tuple[MockedResponse, ...]:
    where = f"MockedResponses.{name}"
    if not isinstance(given, dict) or not given:
        raise MockConfigError(f'{where}: an object of invocations ("0", "1-2") to responses')
    ranges: list[tuple[int, int, MockedResponse]] = []
    for key, value in given.items():
        first, last = _range(f"{where}.{key}", key)
        ranges.append((first, last, _response(f"{where}.{key}", value)))
    ranges.sort(key=lambda r: r[0])
    out: list[MockedResponse] = []
    for first, last, response in ranges:
        if first != len(out):
            raise MockConfigError(
                f"{where}: invocations must be numbered from 0 without gaps or overlaps:"
                f" the next after {len(out) - 1} is {len(out)}, not {first}"
            )
        out += [response] * (last - first + 1)
    return tuple(out)


def _range(where: str, key: str) -> tuple[int, int]:
    parts = key.strip().split("-")
    if len(parts) > 2 or not all(part.strip().isdigit() for part in parts):
        raise MockConfigError(
            f'{where}: an invocation is a number ("0") or a range of them ("1-2"), not {key!r}'
        )
    first, last = int(parts[0]), int(parts[-1])
    if last < first:
        raise MockConfigError(f"{where}: the range ends before it starts")
    return first, last


def _response(where: str, value: Json) -> MockedResponse:
    if not isinstance(value, dict) or ("Return" in value) == ("Throw" in value):
        raise MockConfigError(f"{where}: one of Return or Throw is required")
    unknown = set(value) - {"Return", "Throw"}
    if unknown:
        raise MockConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    if "Return" in value:
        return MockedResponse(returned=value["Return"])
    thrown = value["Throw"]
    if not isinstance(thrown, dict) or not all(
        isinstance(thrown.get(k), str) for k in ("Error", "Cause")
    ):
        raise MockConfigError(f"{where}.Throw: Error and Cause (strings) are required")
    return MockedResponse(error=thrown["Error"], cause=thrown["Cause"])


@dataclass(slots=True)
class MockedTasks:
    """The ``TaskRunner`` of one execution under a test case: the states it
    names answer with their mocked responses, the others go to ``real``."""

    case: MockTestCase
    real: TaskRunner
    #: state name -> invocations so far in this execution
    counts: dict[str, int] = field(default_factory=dict)
    #: what a test reports: an invocation with no response left
    problems: list[str] = field(default_factory=list)

    async def run(self, request: TaskRequest) -> Json:
        state = str(request.context.get("State", {}).get("Name", ""))
        mocked = self.case.states.get(state)
        if mocked is None:
            return await self.real.run(request)
        name, responses = mocked
        invocation = self.counts.get(state, 0)
        self.counts[state] = invocation + 1
        if invocation >= len(responses):
            message = (
                f"state machine {self.case.machine}, test case {self.case.name}: state"
                f" {state!r} was invoked {invocation + 1} times, and mocked response"
                f" {name!r} has {len(responses)}"
            )
            self.problems.append(message)
            raise StatesError("States.Runtime", message)
        response = responses[invocation]
        if response.error is not None:
            raise StatesError(response.error, response.cause)
        return json.loads(json.dumps(response.returned))  # each invocation its own copy


#: What a state machine's executions get their ``TaskRunner`` from:
#: (the execution's real runner) -> the runner its Task states call.
RunnerFactory = Callable[[TaskRunner], TaskRunner]
