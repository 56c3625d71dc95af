"""The errors of an execution: AWS's built-in names and how Retry and Catch match them.

``StatesError`` is a failure inside an execution (it becomes an
``ExecutionFailed`` event unless a Retry or Catch handles it);
``DefinitionError`` is a definition refused before anything runs.
"""

from __future__ import annotations

from collections.abc import Iterable

from pipelines.errors import PipelinesError

ALL = "States.ALL"
TASK_FAILED = "States.TaskFailed"
TIMEOUT = "States.Timeout"
HEARTBEAT_TIMEOUT = "States.HeartbeatTimeout"
RUNTIME = "States.Runtime"
DATA_LIMIT_EXCEEDED = "States.DataLimitExceeded"
INTRINSIC_FAILURE = "States.IntrinsicFailure"
NO_CHOICE_MATCHED = "States.NoChoiceMatched"
EXCEED_TOLERATED_FAILURE_THRESHOLD = "States.ExceedToleratedFailureThreshold"
BRANCH_FAILED = "States.BranchFailed"
ITEM_READER_FAILED = "States.ItemReaderFailed"
RESULT_WRITER_FAILED = "States.ResultWriterFailed"
PERMISSIONS = "States.Permissions"
RESULT_PATH_MATCH_FAILURE = "States.ResultPathMatchFailure"
PARAMETER_PATH_FAILURE = "States.ParameterPathFailure"
QUERY_EVALUATION_ERROR = "States.QueryEvaluationError"

#: Every name a definition may use in ErrorEquals besides its own errors.
BUILT_IN = frozenset(
    {
        ALL,
        TASK_FAILED,
        TIMEOUT,
        HEARTBEAT_TIMEOUT,
        RUNTIME,
        DATA_LIMIT_EXCEEDED,
        INTRINSIC_FAILURE,
        NO_CHOICE_MATCHED,
        EXCEED_TOLERATED_FAILURE_THRESHOLD,
        BRANCH_FAILED,
        ITEM_READER_FAILED,
        RESULT_WRITER_FAILED,
        PERMISSIONS,
        RESULT_PATH_MATCH_FAILURE,
        PARAMETER_PATH_FAILURE,
        QUERY_EVALUATION_ERROR,
        "States.Http.Socket",
    }
)

#: Errors no Retry or Catch handles, not even by name: AWS fails the
#: execution (a recorded execution names States.Runtime in a Catch and still
#: fails).
UNCATCHABLE = frozenset({RUNTIME})

#: Errors States.ALL does not match (AWS: "a terminal error that can't be
#: caught by the States.ALL error type"); naming them catches them.
NOT_IN_ALL = frozenset({DATA_LIMIT_EXCEEDED})

#: 256 KiB: the largest input, output or result a state passes on.
PAYLOAD_LIMIT = 256 * 1024


class StatesError(Exception):
    """A failure inside an execution: ``error`` and ``cause`` as AWS reports them."""

    def __init__(self, error: str, cause: str | None = None) -> None:
        self.error = error
        self.cause = cause
        super().__init__(f"{error}: {cause}" if cause else error)

    def output(self) -> dict[str, str]:
        """The error output a Catch hands on: ``{"Error", "Cause"}`` (no Cause when none)."""
        out = {"Error": self.error}
        if self.cause is not None:
            out["Cause"] = self.cause
        return out


class StateFault(Exception):
    """A failure a state's machinery finds (a path selecting nothing, a bad value).

    Raised below the interpreter, which knows the state's name and the id of
    its entered event: it turns the fault into ``state_failure``'s StatesError.
    """

    def __init__(self, message: str, error: str = RUNTIME) -> None:
        self.message = message
        self.error = error
        super().__init__(message)


def state_failure(state: str, entered_id: int, message: str, error: str = RUNTIME) -> StatesError:
    """A failure of the state machinery itself, worded as AWS words it."""
    return StatesError(
        error,
        f"An error occurred while executing the state '{state}' "
        f"(entered at the event id #{entered_id}). {message}",
    )


def matches(error_equals: Iterable[str], error: str) -> bool:
    """Whether a retrier's or catcher's ErrorEquals handles ``error``."""
    if error in UNCATCHABLE:
        return False
    for name in error_equals:
        if name == error:
            return True
        if name == ALL and error not in NOT_IN_ALL:
            return True
        if name == TASK_FAILED and error not in (TIMEOUT, *NOT_IN_ALL):
            return True
    return False


class DefinitionError(PipelinesError, ValueError):
    """A definition ValidateStateMachineDefinition would refuse.

    ``code`` is AWS's diagnostic code (``SCHEMA_VALIDATION_FAILED``,
    ``MISSING_TRANSITION_TARGET``, ...), ``location`` the JSON pointer of the
    offending field (``/States/Wait/Seconds``); ``str()`` is CreateStateMachine's
    InvalidDefinition message.
    """

    def __init__(self, code: str, message: str, location: str | None = "/") -> None:
        self.code = code
        self.message = message
        self.location = location
        at = f" at {location}" if location is not None else ""
        super().__init__(f"Invalid State Machine Definition: '{code}: {message}{at}'")

    def diagnostic(self) -> dict[str, str]:
        """One entry of ValidateStateMachineDefinition's ``diagnostics``."""
        out = {"severity": "ERROR", "code": self.code, "message": self.message}
        if self.location is not None:
            out["location"] = self.location
        return out
