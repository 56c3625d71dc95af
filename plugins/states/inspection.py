"""What TestState sees of the one state it runs: the ``Inspector``.

The interpreter runs the state under test as it runs any top-level state;
an ``Interpreter`` given an inspector (``interpreter.inspector``) also:

- notes the data at each step of the state's data flow (``note``: AWS's
  ``inspectionData`` names: ``afterInputPath``, ``afterParameters``,
  ``result``, ...), each as the JSON text AWS answers;
- takes the task's result, or a Map's or Parallel's, from the mock when one
  is given (``mocked``), instead of calling the resource or running the
  branches and iterations;
- answers a retrier that takes the failure with the status RETRIABLE (the
  retry is not made: ``retrierRetryCount`` says how many were made before)
  and a catcher with CAUGHT_ERROR, recording which (``errorDetails``);
- does not wait out a Wait state.

This module knows nothing of the interpreter (the interpreter imports it).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from plugins.states.errors import EXCEED_TOLERATED_FAILURE_THRESHOLD, StatesError
from plugins.states.templates import dump

Json = Any

#: TestState's statuses (botocore's TestExecutionStatus).
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
RETRIABLE = "RETRIABLE"
CAUGHT_ERROR = "CAUGHT_ERROR"
#: What the context object names the tested state (whatever its name in a definition).
TESTED_STATE_NAME = "StateName"


class Retriable(StatesError):
    """A failure a retrier takes: TestState answers RETRIABLE and stops there."""


@dataclass(frozen=True, slots=True)
class Mock:
    """TestState's ``mock``: a result (parsed JSON) or an error output."""

    result: Json = None
    error: StatesError | None = None

    def answer(self) -> Json:
        if self.error is not None:
            raise StatesError(self.error.error, self.error.cause)
        return self.result


@dataclass(slots=True)
class Inspector:
    mock: Mock | None = None
    #: ``stateConfiguration.retrierRetryCount``: the retries made before this attempt
    retrier_retry_count: int = 0
    #: ``stateConfiguration.mapIterationFailureCount``: the mocked Map's failed iterations
    map_iteration_failures: int | None = None
    #: TestState's ``context``: the context object, in place of the execution's
    context: dict[str, Json] | None = None
    #: inspectionData's fields, JSON text each (``errorDetails`` aside)
    data: dict[str, Json] = field(default_factory=dict)
    status: str = SUCCEEDED
    #: the failure a catcher took (CAUGHT_ERROR's error and cause)
    caught: StatesError | None = None

    def note(self, key: str, value: Json) -> None:
        self.data[key] = dump(value)

    def note_number(self, key: str, value: int | float) -> None:
        self.data[key] = value

    def error_details(self, **details: int) -> None:
        self.data.setdefault("errorDetails", {}).update(details)

    @property
    def mocked(self) -> bool:
        return self.mock is not None

    async def task_result(self) -> Json:
        """A Task's mocked answer (called in place of its resource)."""
        assert self.mock is not None
        return self.mock.answer()

    def map_result(self, tolerated_count: int | None, tolerated_percentage: float | None) -> Json:
        """A Map's mocked result: ``mapIterationFailureCount`` failed iterations are judged
        against its tolerance, as the Map would have judged them."""
        assert self.mock is not None
        result = self.mock.answer()
        failures = self.map_iteration_failures or 0
        if failures and (tolerated_count is not None or tolerated_percentage is not None):
            total = len(result) if isinstance(result, list) else 0
            over_count = tolerated_count is not None and failures > tolerated_count
            over_percentage = (
                tolerated_percentage is not None
                and total > 0
                and failures * 100 / total > tolerated_percentage
            )
            if over_count or over_percentage:
                raise StatesError(
                    EXCEED_TOLERATED_FAILURE_THRESHOLD,
                    "The specified tolerated failure threshold was exceeded",
                )
        return result

    def context_object(self, context: dict[str, Json]) -> dict[str, Json]:
        """The context object the tested state sees: TestState's ``context`` when one was
        given (in place of the whole object, as AWS's recorded answers show), else the
        execution's, named and without ``RedriveCount`` as AWS's tested states see it."""
        if self.context is not None:
            return copy.deepcopy(self.context)
        context.get("Execution", {}).pop("RedriveCount", None)
        if not context.get("Execution", {}).get("RoleArn"):
            context["Execution"]["RoleArn"] = None
        context["State"]["Name"] = TESTED_STATE_NAME
        return context
