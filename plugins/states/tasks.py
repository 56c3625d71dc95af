"""How a Task state reaches its resource: the ``TaskRunner`` a host injects.

The interpreter owns the Task state's data flow, its events, TimeoutSeconds,
HeartbeatSeconds, Retry and Catch; a runner only performs the call. Later
slices plug integrations in here (a function resource invoked as Lambda is,
a queue's SendMessage, a nested execution, ``.waitForTaskToken``). A runner
reports failure by raising ``StatesError(error, cause)``; for a
``.waitForTaskToken`` call it may report its submission with
``request.submitted(output)`` and keep the task alive with
``request.heartbeat()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from plugins.states.errors import StatesError

Json = Any


@dataclass(frozen=True, slots=True)
class Resource:
    """A Task's Resource ARN as history names it.

    ``kind`` is ``"lambda"`` for a function ARN (the legacy LambdaFunction*
    events), ``"activity"`` for an activity ARN, ``"service"`` for an
    ``arn:aws:states:::service:action[.pattern]`` integration.
    """

    arn: str
    kind: str
    #: history's ``resourceType`` and ``resource``: ("lambda", "invoke"),
    #: ("sqs", "sendMessage.waitForTaskToken")
    resource_type: str
    resource: str
    region: str
    #: "" (request-response), "sync", "sync:2" or "waitForTaskToken"
    pattern: str


def parse_resource(arn: str, region: str = "us-east-1") -> Resource:
    parts = arn.split(":")
    if len(parts) >= 7 and parts[2] == "lambda" and parts[5] == "function":
        return Resource(arn, "lambda", "lambda", arn, parts[3] or region, "")
    if len(parts) >= 7 and parts[2] == "states" and parts[5] == "activity":
        return Resource(arn, "activity", "activity", arn, parts[3] or region, "")
    if len(parts) >= 7 and parts[2] == "states" and parts[3] == "" and parts[4] == "":
        if parts[-2].endswith(".sync") and parts[-1].isdigit():  # startExecution.sync:2
            parts = [*parts[:-2], f"{parts[-2]}:{parts[-1]}"]
        service = ":".join(parts[5:-1])
        action = parts[-1]
        pattern = ""
        if ".waitForTaskToken" in action:
            pattern = "waitForTaskToken"
        elif ".sync" in action:
            pattern = action.split(".sync", 1)[1].lstrip(":")
            pattern = "sync:" + pattern if pattern else "sync"
        return Resource(arn, "service", service, action, region, pattern)
    return Resource(arn, "service", "unknown", arn, region, "")


@dataclass(slots=True)
class TaskRequest:
    """One attempt of a Task state: what to call and with what."""

    resource: Resource
    #: the effective input: after InputPath and Parameters
    input: Json
    #: the state's context object (``$$``), with Task.Token for ``.waitForTaskToken``
    context: Json
    timeout_seconds: int | None
    heartbeat_seconds: int | None
    credentials: Json = None
    task_token: str | None = None
    heartbeat: Callable[[], None] = field(default=lambda: None)
    submitted: Callable[[Json], None] = field(default=lambda output: None)
    #: The attempt was under way when its execution stopped (a restart, a
    #: crash) and is resumed: its call was made, and must not be made again.
    #: A runner that can wait for its outcome (a task token, a nested
    #: execution by name) does; one that cannot raises ``interrupted(request)``.
    resumed: bool = False


def interrupted(request: TaskRequest) -> StatesError:
    """The failure of a resumed attempt whose outcome cannot be known: its
    call was made before the execution stopped and is not made again (each
    attempt's effect at most once); a retrier taking States.TaskFailed
    makes a new attempt."""
    return StatesError(
        "States.TaskFailed",
        f"The execution stopped while the task '{request.resource.arn}' was under way; "
        "whether its call took effect is unknown, and it is not called again in this attempt",
    )


class TaskRunner(Protocol):
    async def run(self, request: TaskRequest) -> Json:
        """The task's result, or raise ``StatesError``."""
        ...


class NoTaskRunner:
    """The runner of an interpreter given none: every Task fails, naming its resource."""

    async def run(self, request: TaskRequest) -> Json:
        if request.resumed:
            raise interrupted(request)
        raise StatesError(
            "States.TaskFailed",
            f"No task runner is configured for the resource '{request.resource.arn}'",
        )
