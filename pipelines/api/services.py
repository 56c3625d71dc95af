"""What the endpoint serves: one ``Service`` per AWS service, its operations as functions.

The engine serves ``events`` itself (buses and rules are the engine's); a
plugin serves the service it implements (the queue plugin sqs, ...) by
registering a ``Service`` through the ``register_services`` hook. An
operation is an async function of a ``Call`` and the request's parameters,
already read and checked against the operation's input shape; it returns a
mapping in the output shape's member names (extra keys are dropped) or
raises ``ApiError`` (or a library exception ``errors.translate`` knows).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.model import ServiceModel

from pipelines.api.models import service_model

if TYPE_CHECKING:
    from pipelines.runtime import Runtime


@dataclass(frozen=True, slots=True)
class Call:
    """One request as an operation sees it."""

    runtime: Runtime
    service: str
    operation: str
    #: From the request's SigV4 credential scope (the runtime's defaults without one).
    region: str
    account: str
    access_key: str | None
    #: The endpoint's own URL as the client reached it (queue URLs point back at it).
    base_url: str


Operation = Callable[[Call, dict[str, Any]], Awaitable[Mapping[str, Any] | None]]


@dataclass(slots=True)
class Service:
    """An AWS service the endpoint serves: botocore's ``name`` and its operations."""

    name: str
    operations: dict[str, Operation] = field(default_factory=dict)

    @property
    def model(self) -> ServiceModel:
        return service_model(self.name)

    def operation(self, name: str | None = None) -> Callable[[Operation], Operation]:
        """Decorator: serve the function as the operation ``name`` (default: its
        name in CamelCase, ``put_events`` -> ``PutEvents``)."""

        def register(function: Operation) -> Operation:
            op = name or "".join(part.title() for part in function.__name__.split("_"))
            if op not in self.model.operation_names:
                raise ValueError(f"{self.name} has no operation {op!r}")
            self.operations[op] = function
            return function

        return register
