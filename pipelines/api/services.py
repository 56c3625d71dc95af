"""What the endpoint serves: one ``Service`` per AWS service, its operations as functions.

The engine serves ``events`` itself (buses and rules are the engine's); a
plugin serves the service it implements (the queue plugin sqs, ...) by
registering a ``Service`` through the ``register_services`` hook. An
operation is an async function of a ``Call`` and the request's parameters,
already read and checked against the operation's input shape; it returns a
mapping in the output shape's member names (extra keys are dropped) or
raises ``ApiError`` (or a library exception ``errors.translate`` knows).

A service whose data lives in a store of the state database (the stream
plugin's kinesis, the logs plugin's logs) opens it with ``call.store(...)``:
one store of each type per endpoint, opened on the runtime's state database
at first use (once the runtime runs) and closed with the endpoint. What else
a service keeps while the endpoint serves (the logs service's queries) is
``call.kept(key, make, close)``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from botocore.model import ServiceModel

from pipelines.api.errors import ApiError
from pipelines.api.models import service_model, with_xml_names
from pipelines.errors import PipelinesError
from pipelines.store import Location

if TYPE_CHECKING:
    from pipelines.alarms import Alarms
    from pipelines.archive import Archiver
    from pipelines.bus import Bus
    from pipelines.buspolicies import BusPolicies
    from pipelines.limits import Limits
    from pipelines.metrics import MetricStore
    from pipelines.policy import Caller
    from pipelines.replay import Replays
    from pipelines.routes import Routes
    from pipelines.store import Store
    from pipelines.targets import Target

    StoreT = TypeVar("StoreT", bound=Store)

log = logging.getLogger("pipelines.api")
T = TypeVar("T")


class ApiHost(Protocol):
    """What operations reach of the runtime (``Runtime`` implements it)."""

    def bus(self, name: str = ...) -> Bus: ...

    def buses(self) -> list[Bus]: ...

    def create_bus(self, name: str, *, account: str | None = None) -> Bus: ...

    @property
    def account(self) -> str:
        """The account that owns the buses the runtime declares."""
        ...

    @property
    def policies(self) -> BusPolicies: ...

    async def delete_bus(self, name: str, *, timeout: float | None = None) -> None: ...

    async def put_events(
        self,
        entries: Iterable[Mapping[str, Any]],
        *,
        default_bus: str = ...,
        settled: Callable[[int], None] | None = None,
        caller: Caller | None = None,
    ) -> dict[str, Any]: ...

    def resource(self, name: str, *, where: str | None = None) -> Target: ...

    def resource_names(self) -> list[str]: ...

    def resource_arn(self, name: str) -> str: ...

    async def wait_running(self, timeout: float | None = None) -> None: ...

    async def open_store(self, store_type: type[StoreT], *args: Any, where: str) -> StoreT: ...

    def put_metric_data(
        self,
        namespace: str,
        name: str,
        dimensions: Mapping[str, str] | None = None,
        **options: Any,
    ) -> None: ...

    async def put_resource(
        self, name: str, type_name: str, config: Mapping[str, Any], *, timeout: float | None = None
    ) -> Target: ...

    async def delete_resource(self, name: str, *, timeout: float | None = None) -> None: ...

    @property
    def state_path(self) -> Location | None: ...

    @property
    def routes(self) -> Routes: ...

    @property
    def limits(self) -> Limits: ...

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...

    @property
    def archives(self) -> Archiver: ...

    @property
    def replays(self) -> Replays: ...

    @property
    def metrics(self) -> MetricStore: ...

    @property
    def alarms(self) -> Alarms: ...


#: How long a request arriving while the runtime starts waits for it (then 503).
STARTING_WAIT = 30.0


class Kept:
    """What services keep while an endpoint serves: stores opened on the
    runtime's state database (one per type) and values by key; ``close``
    (the endpoint's) closes them all."""

    def __init__(self) -> None:
        self._stores: dict[type[Any], Any] = {}
        self._values: dict[str, _KeptValue] = {}
        self._lock = asyncio.Lock()
        self._closed = False

    async def store(
        self, runtime: ApiHost, store_type: type[StoreT], *args: Any, where: str
    ) -> StoreT:
        """The endpoint's ``store_type`` on the runtime's state database, opened
        at first use with ``args`` (later calls' ``args`` are not looked at)."""
        await runtime.wait_running(STARTING_WAIT)
        found = self._stores.get(store_type)
        if found is None:
            async with self._lock:
                found = self._stores.get(store_type)
                if found is None:
                    if self._closed:
                        raise RuntimeError("the endpoint is closed")
                    try:
                        found = await runtime.open_store(store_type, *args, where=where)
                    except PipelinesError as error:  # no state database
                        raise ApiError(
                            "ServiceUnavailable", str(error), 503, sender_fault=False
                        ) from None
                    self._stores[store_type] = found
        store: StoreT = found
        return store

    def value(
        self,
        key: str,
        make: Callable[[], T],
        close: Callable[[T], Awaitable[None]] | None = None,
        stop: Callable[[T], None] | None = None,
    ) -> T:
        """The value kept under ``key``, made by ``make`` the first time.
        When the endpoint closes, ``stop(value)`` runs before the requests in
        flight finish (end long polls) and ``close(value)`` after them."""
        if key not in self._values:
            self._values[key] = _KeptValue(make(), close, stop)
        kept: T = self._values[key].value
        return kept

    def stop(self) -> None:
        """The endpoint is closing: each value's ``stop``, before requests end."""
        for kept in list(self._values.values()):
            if kept.stop is not None:
                kept.stop(kept.value)

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            values, self._values = self._values, {}
            stores, self._stores = self._stores, {}
        for kept in values.values():
            if kept.close is not None:
                try:
                    await kept.close(kept.value)
                except Exception:
                    log.exception("closing what the endpoint kept failed")
        for store in stores.values():
            await store.close()


@dataclass(slots=True)
class _KeptValue:
    value: Any
    close: Callable[[Any], Awaitable[None]] | None
    stop: Callable[[Any], None] | None


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
    #: What the endpoint keeps for its services (``store``, ``kept``).
    keeping: Kept = field(default_factory=Kept)
    #: The organization of the caller's account, where its access key says
    #: (``api.access_keys.KEY.org``): bus policies' aws:PrincipalOrgID.
    org: str | None = None
    #: The size in bytes of the request's body as it came (None when not
    #: known): what its values' sizes add up to at most, in every protocol.
    body_size: int | None = None

    async def store(self, store_type: type[StoreT], *args: Any, where: str) -> StoreT:
        """The endpoint's ``store_type`` on the runtime's state database (see
        ``Kept.store``); waits while the runtime starts; ``NotRunningError``
        (503) when it does not run; ``PipelinesError`` without a state database."""
        return await self.keeping.store(self.runtime, store_type, *args, where=where)

    def kept(
        self,
        key: str,
        make: Callable[[], T],
        close: Callable[[T], Awaitable[None]] | None = None,
        stop: Callable[[T], None] | None = None,
    ) -> T:
        """A value the endpoint keeps under ``key`` (see ``Kept.value``)."""
        return self.keeping.value(key, make, close, stop)


Operation = Callable[[Call, dict[str, Any]], Awaitable[Mapping[str, Any] | None]]


@dataclass(frozen=True, slots=True)
class QueryError:
    """How a service of the ``awsQueryCompatible`` kind names one of its errors.

    Such a service (SQS) moved from AWS's query protocol to JSON and still
    tells clients its old query code: ``type`` is the JSON ``__type`` (the
    error shape's name), ``query`` the code in the ``x-amzn-query-error``
    header, which botocore shows as the error's ``Code``. botocore's model
    carries the query code in an error shape's ``error.code`` for most such
    services; where it does not (SQS's), the service declares them.
    """

    type: str
    query: str
    status: int = 400
    #: The message query-protocol clients get instead of the operation's, where
    #: the service words the error otherwise there (SQS's "... for this wsdl version.").
    query_message: str | None = None


@dataclass(slots=True)
class Service:
    """An AWS service the endpoint serves: botocore's ``name`` and its operations."""

    name: str
    operations: dict[str, Operation] = field(default_factory=dict)
    #: The code of a request the input shape refuses (CloudWatch Logs says
    #: ``InvalidParameterException`` where most JSON services say this).
    validation_code: str = "ValidationException"
    #: ``awsQueryCompatible`` services: the error codes operations raise
    #: (``ApiError.code``, a library ``CodedError``'s code) that botocore's
    #: model does not map to a query code itself.
    query_errors: dict[str, QueryError] = field(default_factory=dict)
    #: Whether requests' enum values are checked against the model's (SQS's
    #: front door does not: ReceiveMessage takes message attribute names in
    #: ``AttributeNames``, whose enum lists queue attributes).
    check_enums: bool = True
    #: A JSON service that still takes the query protocol from older clients
    #: (SQS) gives the XML names its botocore model dropped, by shape
    #: (``models.with_xml_names``), and its XML namespace.
    xml_names: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    xml_namespace: str = ""
    #: The parameter a query request sent to a resource's own URL leaves out
    #: (older SDKs post to the queue URL without ``QueueUrl``): the URL fills it.
    path_parameter: str | None = None
    #: Whether query-protocol errors carry an empty ``<Detail/>`` (SQS's do).
    query_error_detail: bool = False
    _query_model: ServiceModel | None = field(default=None, init=False, repr=False)

    @property
    def model(self) -> ServiceModel:
        return service_model(self.name)

    @property
    def query_model(self) -> ServiceModel:
        """The model query-protocol requests are read and answered by: the
        service's, with ``xml_names`` added where it has them."""
        if not self.xml_names:
            return self.model
        if self._query_model is None:
            self._query_model = with_xml_names(self.model, self.xml_names, self.xml_namespace)
        return self._query_model

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


def page_token(position: int) -> str:
    """A List* operation's NextToken: where the next page starts, opaque to clients."""
    return base64.urlsafe_b64encode(str(position).encode()).decode()


def page_start(token: str | None, invalid: ApiError) -> int:
    """Where a page starts by ``token`` (0 without one); ``invalid`` (the
    service's own error for a token it did not give) otherwise."""
    if not token:
        return 0
    try:
        return int(base64.urlsafe_b64decode(token.encode()).decode())
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise invalid from None


def page(
    items: Sequence[T], token: str | None, size: int, invalid: ApiError
) -> tuple[list[T], str | None]:
    """One page of ``items`` from ``token`` and the token of the next (None: the last)."""
    start = page_start(token, invalid)
    end = start + size
    return list(items[start:end]), page_token(end) if end < len(items) else None


def resource_of(call: Call, arn: str) -> str | None:
    """The resource an ARN names, if it exists and is of the ARN's kind.

    The name is the ARN's last segment; the ARN must be the one the
    resource's type gives (``Runtime.resource_arn``) up to region and account
    (a queue's ARN does not name a function of the same name). A plain name
    is taken as the resource's name.
    """
    if not arn.startswith("arn:"):
        return arn if arn in call.runtime.resource_names() else None
    parts = arn.split(":", 5)
    if len(parts) < 6:
        return None
    partition, service, resource = parts[1], parts[2], parts[5]
    if service == "lambda" and resource.count(":") == 2:
        resource = resource.rsplit(":", 1)[0]  # a qualified function: its version or alias
    resource = resource.removesuffix(":*")
    # The name is the last segment, or the one before an id (EventBridge's
    # ``connection/NAME/ID``); the whole ARN must be that resource's.
    segments = resource.split("/")
    for name in (segments[-1].rsplit(":", 1)[-1], *segments[-2:-1]):
        if name not in call.runtime.resource_names():
            continue
        expected = call.runtime.resource_arn(name).split(":", 5)
        if expected[1:3] == [partition, service] and expected[5] == resource:
            return name
    return None
