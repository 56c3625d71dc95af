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

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from botocore.model import ServiceModel

from pipelines.api.models import service_model

if TYPE_CHECKING:
    from pipelines.archive import Archiver
    from pipelines.bus import Bus
    from pipelines.replay import Replays
    from pipelines.targets import Target


class ApiHost(Protocol):
    """What operations reach of the runtime (``Runtime`` implements it)."""

    def bus(self, name: str = ...) -> Bus: ...

    def buses(self) -> list[Bus]: ...

    def create_bus(self, name: str) -> Bus: ...

    async def delete_bus(self, name: str, *, timeout: float | None = None) -> None: ...

    async def put_events(
        self,
        entries: Iterable[Mapping[str, Any]],
        *,
        default_bus: str = ...,
        settled: Callable[[int], None] | None = None,
    ) -> dict[str, Any]: ...

    def resource(self, name: str, *, where: str | None = None) -> Target: ...

    def resource_names(self) -> list[str]: ...

    def resource_arn(self, name: str) -> str: ...

    async def put_resource(
        self, name: str, type_name: str, config: Mapping[str, Any], *, timeout: float | None = None
    ) -> Target: ...

    async def delete_resource(self, name: str, *, timeout: float | None = None) -> None: ...

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...

    @property
    def archives(self) -> Archiver: ...

    @property
    def replays(self) -> Replays: ...


@dataclass(frozen=True, slots=True)
class Call:
    """One request as an operation sees it."""

    runtime: ApiHost
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
