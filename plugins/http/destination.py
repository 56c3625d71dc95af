"""Connections and API destinations: EventBridge's way to call HTTP endpoints.

A ``connection`` resource holds an authorization (``pipelines.http.auth``);
an ``api_destination`` resource is a target that sends each event to its
endpoint with it, as EventBridge's API destinations do:

- the endpoint's ``*`` are filled, in order, from the rule target's
  ``http_parameters.path_parameter_values``; its header and query string
  parameters are added; a value starting with ``$`` is read from the event
  (a JSONPath, the whole value);
- EventBridge's headers (``User-Agent: Amazon/EventBridge/ApiDestinations``,
  ``Content-Type: application/json; charset=utf-8``, ``Range:
  bytes=0-1048575``, ``Accept-Encoding: gzip,deflate``), the connection's
  parameters and credentials over the target's;
- at most ``invocation_rate_limit_per_second`` requests a second (default
  300): excess deliveries wait their turn, none is dropped;
- a 5 s timeout; a timeout, a connection error, 429 and 5xx are retryable
  (the rule target's retry policy, waiting at least the answer's
  ``Retry-After``; a negative one ends retrying); any other 4xx is not, and
  goes to the dead letter with ``ERROR_CODE`` ``HTTPStatus<code>`` and the
  status and the start of the answer in ``ERROR_MESSAGE``; 1xx-3xx are
  delivered. An OAuth connection's token is fetched again once on a 401 or
  407, and the request sent again with it.

Connections may be declared inline (``connection: {authorization_type: ...}``)
or as their own resource named by ``connection: NAME``, which several
destinations share (one OAuth token). Per destination, the answers are
counted by status code in the metric store (``Pipelines/ApiDestinations``,
``Responses`` by ``ApiDestination`` and ``StatusCode``; ``Failures`` by
``Reason`` for requests without an answer).
"""

from __future__ import annotations

import logging
import re
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.errors import ConfigError, DeliveryError, PipelinesError, Problems, Where
from pipelines.event import dump_json
from pipelines.http.auth import (
    Authorization,
    ConnectionSettings,
    Request,
    TokenFetcher,
    choice,
    url_setting,
)
from pipelines.http.client import HttpClient, RequestFailed, Sent, Tls, header_safe, retry_after
from pipelines.http.ratelimit import TokenBucket
from pipelines.settings import Flag, Number, Section, Settings, Shape
from pipelines.targets import (
    DeliveryContext,
    Target,
    TargetServices,
    TargetType,
    payload_text,
    started,
)
from pipelines.transform import compile_lookup

log = logging.getLogger("pipelines.http")

HTTP_METHODS = ("POST", "GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE")
DEFAULT_RATE = 300
MAX_RATE = 10_000
#: The rate limit lets this many seconds' worth of requests go at once: one
#: request up to 1000/s (exactly spaced, as before), 10 at 10,000/s. Workers
#: finishing in the same loop turn ask together; spaced 0.1 ms apart, all but
#: the first would each sleep on a timer of its own although the destination
#: is far below its rate. Over any second the rate still holds; excess waits.
BURST_SECONDS = 0.001
METRICS_NAMESPACE = "Pipelines/ApiDestinations"
#: The headers EventBridge sends every API destination.
EVENTBRIDGE_HEADERS = {
    "User-Agent": "Amazon/EventBridge/ApiDestinations",
    "Content-Type": "application/json; charset=utf-8",
    "Range": "bytes=0-1048575",
    "Accept-Encoding": "gzip,deflate",
}
_TEXT = {"type": "string", "minLength": 1}

TLS_TABLE = Settings(
    {
        "verify": Flag(True, "check the endpoint's certificate"),
        "ca_file": Shape(_TEXT, "a PEM file of authorities trusted besides the system's"),
    }
)
CONNECTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["authorization_type"],
    "properties": {
        "authorization_type": {"enum": ["BASIC", "API_KEY", "OAUTH_CLIENT_CREDENTIALS"]},
        "basic": {"type": "object"},
        "api_key": {"type": "object"},
        "oauth": {"type": "object"},
        "parameters": {"type": "object"},
        "description": {"type": "string"},
    },
}
CONNECTION_TABLE = Settings(
    {key: Shape(schema) for key, schema in CONNECTION_SCHEMA["properties"].items()},
    required=("authorization_type",),
)
DESTINATION_TABLE = Settings(
    {
        "endpoint": Shape(
            {"type": "string", "maxLength": 2048},
            "the http(s) URL called; each '*' is filled from the rule target's"
            " http_parameters.path_parameter_values",
        ),
        "http_method": Shape({"enum": list(HTTP_METHODS), "default": "POST"}),
        "connection": Shape(
            {"oneOf": [_TEXT, CONNECTION_SCHEMA]},
            "a connection resource's name, or a connection's settings",
        ),
        "invocation_rate_limit_per_second": Number(DEFAULT_RATE, 1, MAX_RATE, integer=True),
        "timeout": Number(5, 0.1, 60, description="seconds (EventBridge's is 5)"),
        "concurrency": Number(32, 1, 1000, integer=True, description="requests at once"),
        "tls": Section(TLS_TABLE),
        "description": Shape({"type": "string", "maxLength": 512}),
    },
    required=("endpoint", "connection"),
)


def burst(rate: float) -> float:
    """How many requests the rate limit lets through at once (``BURST_SECONDS``)."""
    return max(1.0, rate * BURST_SECONDS)


#: Names the ids in ARNs (see ``_arn``).
_ARN_IDS = uuid.UUID("8f1e0c1e-5b7a-4f0e-9a52-3c1d2b4a6e70")


def _arn(kind: TargetType, name: str, region: str, account: str) -> str:
    """AWS's ARN of a connection or API destination ends with an id after the
    name (botocore's model requires one): here the same for a name every
    time (a UUID made from it), so ARNs survive a restart."""
    assert kind.arn_template is not None
    made = uuid.uuid5(_ARN_IDS, f"{kind.name}/{name}")
    return kind.arn_template.format(region=region, account=account, name=name, id=made)


class ConnectionTarget(Target):
    """A connection: not a target itself, the authorization its destinations use."""

    def __init__(self, name: str, settings: ConnectionSettings) -> None:
        self.name = name
        self.settings = settings
        self.authorization: Authorization | None = None
        #: When it was made and last changed (epoch seconds; set at start).
        self.created = self.modified = 0.0

    async def start(self, services: TargetServices) -> None:
        self.authorization = Authorization(self.settings, services.clock)
        self.created = self.modified = services.clock.time()

    @property
    def authorized_at(self) -> float | None:
        return None if self.authorization is None else self.authorization.authorized_at

    @property
    def state(self) -> str:
        """EventBridge's ConnectionState: an OAuth connection is AUTHORIZING
        until its first token is fetched."""
        return "AUTHORIZING" if self.authorized_at is None else "AUTHORIZED"

    def accept(self, where: Where, parameters: Mapping[str, Any]) -> None:
        raise ConfigError(
            where / "resource",
            f"{self.name!r} is a connection: a rule delivers to an api_destination that uses it",
        )

    async def deliver(self, payload: Any, context: DeliveryContext) -> Any:
        raise DeliveryError(
            "NotATarget", f"connection {self.name} is not a target", retryable=False
        )


class ConnectionType(TargetType):
    name = "connection"
    description = (
        "An EventBridge connection: how API destinations authorize (BASIC, API_KEY, OAuth)"
    )
    arn_template = "arn:aws:events:{region}:{account}:connection/{name}/{id}"
    settings = CONNECTION_TABLE

    def arn(self, name: str, region: str, account: str) -> str:
        return _arn(self, name, region, account)

    def create(self, name: str, config: Mapping[str, Any]) -> ConnectionTarget:
        return ConnectionTarget(name, ConnectionSettings.parse(Where(f"target {name}"), config))


@dataclass(frozen=True, slots=True)
class DestinationSettings:
    endpoint: str
    http_method: str
    connection: str | ConnectionSettings
    rate: int
    timeout: float
    concurrency: int
    tls: Tls
    description: str

    @property
    def wildcards(self) -> int:
        return self.endpoint.count("*")


def parse_destination(where: Where, config: Mapping[str, Any]) -> DestinationSettings:
    """An API destination's settings, every problem at its key."""
    problems = Problems()
    with problems:
        DESTINATION_TABLE.check_keys(where, config)
    endpoint = method = ""
    with problems:
        endpoint = url_setting(where / "endpoint", config.get("endpoint"))
    with problems:
        method = choice(where / "http_method", config.get("http_method", "POST"), HTTP_METHODS)
    connection: str | ConnectionSettings = ""
    given = config.get("connection")
    if isinstance(given, str) and given:
        connection = given
    elif isinstance(given, Mapping):
        with problems:
            connection = ConnectionSettings.parse(where / "connection", given)
    else:
        problems.add(
            ConfigError(
                where / "connection",
                "is required: a connection resource's name or a connection's settings",
            )
        )
    rate = timeout = concurrency = 0.0
    with problems:
        rate = DESTINATION_TABLE.number(where, config, "invocation_rate_limit_per_second")
    with problems:
        timeout = DESTINATION_TABLE.number(where, config, "timeout")
    with problems:
        concurrency = DESTINATION_TABLE.number(where, config, "concurrency")
    tls = Tls()
    tls_config = config.get("tls") or {}
    if not isinstance(tls_config, Mapping):
        problems.add(ConfigError(where / "tls", "must be a mapping: verify, ca_file"))
    else:
        with problems:
            TLS_TABLE.check_keys(where / "tls", tls_config)
            verify = TLS_TABLE.flag(where / "tls", tls_config, "verify")
            ca_file = tls_config.get("ca_file")
            if ca_file is not None and (not isinstance(ca_file, str) or not ca_file):
                raise ConfigError(where / "tls" / "ca_file", "must be a file name")
            tls = Tls(verify is not False, Path(ca_file) if ca_file else None)
    description = config.get("description", "")
    if not isinstance(description, str) or len(description) > 512:
        problems.add(ConfigError(where / "description", "is a string of at most 512 characters"))
    problems.raise_any()
    return DestinationSettings(
        endpoint,
        method,
        connection,
        int(rate),
        timeout,
        int(concurrency),
        tls,
        str(description),
    )


#: A rule target's value read from the event at each delivery (None: absent).
Value = Callable[[Mapping[str, Any]], str | None]


def _value(text: str) -> Value | str:
    """A constant as it is; a ``$`` path as the function reading it."""
    if not text.startswith("$"):
        return text
    read = compile_lookup(Where("http_parameters"), text)

    def dynamic(event: Mapping[str, Any]) -> str | None:
        found = read(event)
        if found is None:
            return None
        return found if isinstance(found, str) else dump_json(found).decode()

    return dynamic


#: A path value that needs no quoting (most ids): ``quote`` costs as much as the body's JSON.
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")


def _quoted(value: str | None) -> str:
    if value is None:
        return ""
    return value if _UNRESERVED.fullmatch(value) else urllib.parse.quote(value, safe="")


@dataclass(frozen=True, slots=True)
class _Parameters:
    """A rule target's ``http_parameters`` over its destination's endpoint,
    compiled once per declaration. What is constant is done here (the URL
    filled with the constant path values, EventBridge's headers merged with
    the constant ones); a delivery only reads its event's values."""

    #: The URL up to its first path value read from the event.
    url: str
    #: Each path value read from the event, and the URL's text after it.
    path: tuple[tuple[Value, str], ...]
    headers: Mapping[str, str]
    read_headers: tuple[tuple[str, Value], ...]
    query: Mapping[str, str]
    read_query: tuple[tuple[str, Value], ...]

    def url_for(self, event: Mapping[str, Any]) -> str:
        if not self.path:
            return self.url
        return self.url + "".join(_quoted(value(event)) + after for value, after in self.path)


def _compiled(endpoint: str, given: Mapping[str, Any]) -> _Parameters:
    parts = endpoint.split("*")
    values = [_value(v) for v in given.get("path_parameter_values", [])]
    # Texts and readers in order; consecutive texts are joined below.
    pieces: list[str | Value] = [parts[0]]
    for value, after in zip(values, parts[1:], strict=False):
        pieces += [_quoted(value) if isinstance(value, str) else value, after]
    if len(parts) > len(values) + 1:  # fewer values than '*' (accept refuses it): left as '*'
        pieces.append("*" + "*".join(parts[len(values) + 1 :]))
    url = ""
    path: list[tuple[Value, str]] = []
    for piece in pieces:
        if not isinstance(piece, str):
            path.append((piece, ""))
        elif path:
            path[-1] = (path[-1][0], path[-1][1] + piece)
        else:
            url += piece
    headers, read_headers = _split(given.get("header_parameters"))
    query, read_query = _split(given.get("query_string_parameters"))
    return _Parameters(
        url,
        tuple(path),
        {**EVENTBRIDGE_HEADERS, **{k: header_safe(v) for k, v in headers.items()}},
        read_headers,
        query,
        read_query,
    )


def _split(
    given: Mapping[str, str] | None,
) -> tuple[dict[str, str], tuple[tuple[str, Value], ...]]:
    """Constant parameters, and those read from the event."""
    constant: dict[str, str] = {}
    read: list[tuple[str, Value]] = []
    for key, text in (given or {}).items():
        value = _value(text)
        if isinstance(value, str):
            constant[key] = value
        else:
            read.append((key, value))
    return constant, tuple(read)


def _body(payload: Any) -> bytes:
    """``payload_text(payload).encode()``, without a JSON object's round
    trip through ``str``."""
    if isinstance(payload, str):
        return payload_text(payload).encode()
    return dump_json(payload)


#: What a target without ``http_parameters`` is compiled from.
_NO_PARAMETERS: Mapping[str, Any] = {}


class ApiDestinationTarget(Target):
    """Sends each payload to the endpoint (see the module's docstring)."""

    def __init__(
        self, name: str, settings: DestinationSettings, config: Mapping[str, Any] | None = None
    ) -> None:
        self.name = name
        self.settings = settings
        #: Its settings as given (UpdateApiDestination changes them).
        self.config: Mapping[str, Any] = dict(config or {})
        self.created = self.modified = 0.0
        self.concurrency = settings.concurrency
        self._services: TargetServices | None = None
        self._client: HttpClient | None = None
        self._bucket: TokenBucket | None = None
        self._inline: Authorization | None = None
        self._fetch: TokenFetcher | None = None
        self._counts: dict[tuple[str, str, str], int] = {}
        self._next_flush = 0.0
        # Compiled rule target parameters, by the mapping declared (kept alive by its rule).
        self._parameters: dict[int, tuple[Mapping[str, Any], _Parameters]] = {}

    def references(self) -> Iterable[tuple[tuple[str | int, ...], str]]:
        if isinstance(self.settings.connection, str):
            yield ("connection",), self.settings.connection

    def accept(self, where: Where, parameters: Mapping[str, Any]) -> None:
        for key in parameters:
            if key != "http_parameters":
                raise ConfigError(where / key, "is not taken by an api_destination")
        given = parameters.get("http_parameters") or {}
        values = len(given.get("path_parameter_values", []))
        wanted = self.settings.wildcards
        if values != wanted:
            at = where / "http_parameters" / "path_parameter_values"
            raise ConfigError(
                at,
                f"the endpoint {self.settings.endpoint} has {wanted} '*' path"
                f" parameter{'s' if wanted != 1 else ''}; {values} value"
                f"{'s' if values != 1 else ''} given",
            )

    async def start(self, services: TargetServices) -> None:
        settings = self.settings
        self._client = HttpClient(
            timeout=settings.timeout, tls=settings.tls, pool=settings.concurrency
        )
        await self._client.start()
        self._fetch = TokenFetcher(self._client)
        self._bucket = TokenBucket(settings.rate, services.clock, burst=burst(settings.rate))
        if isinstance(settings.connection, ConnectionSettings):
            self._inline = Authorization(settings.connection, services.clock)
        else:
            self._connection(services)  # named, and a connection: now, not at the first event
        self._services = services
        self.created = self.modified = services.clock.time()

    @property
    def state(self) -> str:
        """ACTIVE while its connection is authorized, else INACTIVE."""
        services = self._services
        if services is None:
            return "INACTIVE"
        try:
            authorization = self._connection(services)
        except PipelinesError:
            return "INACTIVE"
        return "INACTIVE" if authorization.authorized_at is None else "ACTIVE"

    async def stop(self) -> None:
        if self._services is not None and self._counts:
            self._flush(self._services)
        self._services = None
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def _connection(self, services: TargetServices) -> Authorization:
        if self._inline is not None:
            return self._inline
        name = str(self.settings.connection)
        found = services.resource(name, where=f"api_destination {self.name}.connection")
        if not isinstance(found, ConnectionTarget) or found.authorization is None:
            raise PipelinesError(
                f"api_destination {self.name}.connection: resource {name!r} is not a connection"
            )
        return found.authorization

    def _compiled(self, extra: Mapping[str, Any]) -> _Parameters:
        given = extra.get("http_parameters") or _NO_PARAMETERS
        cached = self._parameters.get(id(given))
        if cached is None or cached[0] is not given:
            if len(self._parameters) > 1000:  # rules replaced many times: start afresh
                self._parameters.clear()
            cached = (given, _compiled(self.settings.endpoint, given))
            self._parameters[id(given)] = cached
        return cached[1]

    async def deliver(self, payload: Any, context: DeliveryContext) -> Any:
        return (await self.exchange(payload, context)).status

    async def exchange(self, payload: Any, context: DeliveryContext) -> Sent:
        """``deliver``, answering what the endpoint answered (its status, headers
        and the first ``BODY_KEPT`` bytes of its body): a pipe's enrichment."""
        services = started(self._services, f"api_destination {self.name}")
        client, bucket = self._client, self._bucket
        assert client is not None and bucket is not None and self._fetch is not None
        try:
            authorization = self._connection(services)
        except PipelinesError as error:
            raise DeliveryError("ConnectionNotFound", str(error), retryable=True) from None
        request = self._request(payload, context)
        await bucket.acquire()
        sent = await self._send(client, authorization, request)
        if sent.status in (401, 407) and authorization.settings.oauth is not None:
            authorization.refused()  # the token may have expired early: once more with a new one
            request = self._request(payload, context)
            sent = await self._send(client, authorization, request)
        self._count(sent)
        self._judge(sent, services.clock.time())
        return sent

    def _request(self, payload: Any, context: DeliveryContext) -> Request:
        parameters = self._compiled(context.extra)
        event = context.event
        headers = dict(parameters.headers)
        for name, value in parameters.read_headers:
            found = value(event)
            if found is not None:
                headers[name] = header_safe(found)
        query = dict(parameters.query)
        for name, value in parameters.read_query:
            found = value(event)
            if found is not None:
                query[name] = found
        url = parameters.url_for(event)
        return Request(self.settings.http_method, url, headers, query, payload)

    async def _send(
        self, client: HttpClient, authorization: Authorization, request: Request
    ) -> Sent:
        assert self._fetch is not None
        await authorization.apply(request, self._fetch)
        body = None
        if request.method not in ("GET", "HEAD"):
            body = _body(request.body)
        try:
            return await client.send(
                request.method,
                request.url,
                headers=request.headers,
                params=request.params,
                body=body,
            )
        except RequestFailed as error:
            self._metric("Failures", "Reason", error.code)
            raise DeliveryError(error.code, error.message, retryable=True) from None

    def _count(self, sent: Sent) -> None:
        self._metric("Responses", "StatusCode", str(sent.status))

    def _metric(self, name: str, dimension: str, value: str) -> None:
        """Count one answer (or failure): counts are kept here and handed to
        the metric store at most once a second, as one statistic set per
        series (a datum per delivery would cost more than the request)."""
        key = (name, dimension, value)
        self._counts[key] = self._counts.get(key, 0) + 1
        services = self._services
        if services is not None and services.clock.time() >= self._next_flush:
            self._flush(services)

    def _flush(self, services: TargetServices) -> None:
        counts, self._counts = self._counts, {}
        self._next_flush = services.clock.time() + 1.0
        for (name, dimension, value), count in counts.items():
            services.put_metric_data(
                METRICS_NAMESPACE,
                name,
                {"ApiDestination": self.name, dimension: value},
                statistic_values={"SampleCount": count, "Sum": count, "Minimum": 1, "Maximum": 1},
                unit="Count",
            )

    def _judge(self, sent: Sent, now: float) -> None:
        """A delivered answer returns; a failure raises as EventBridge retries it."""
        status = sent.status
        if status < 400:
            return
        message = f"the endpoint answered {status} {sent.reason}: {sent.text()}".rstrip(": ")
        code = f"HTTPStatus{status}"
        if status == 429 or status >= 500:
            wait = retry_after(sent.headers, now)
            raise DeliveryError(code, message, retryable=True, retry_after=wait)
        raise DeliveryError(code, message, retryable=False)


class ApiDestinationType(TargetType):
    name = "api_destination"
    description = "An EventBridge API destination: events sent to an HTTP endpoint"
    arn_template = "arn:aws:events:{region}:{account}:api-destination/{name}/{id}"
    settings = DESTINATION_TABLE

    def arn(self, name: str, region: str, account: str) -> str:
        return _arn(self, name, region, account)

    def create(self, name: str, config: Mapping[str, Any]) -> ApiDestinationTarget:
        settings = parse_destination(Where(f"target {name}"), config)
        return ApiDestinationTarget(name, settings, config)
