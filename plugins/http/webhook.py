"""Webhook sources: each POST to a configured path becomes an event.

A ``webhook`` resource serves its ``path`` on the runner's HTTP port (the
``api`` listener) while it runs. A request is checked in this order:

1. the method is POST (else 405), the body at most ``max_body`` bytes (else
   413, unread), the rate at most ``rate_limit_per_second`` (else 429 with
   ``Retry-After``);
2. its signature, by ``verify.scheme`` (else 401): ``github``
   (``X-Hub-Signature-256: sha256=`` HMAC-SHA256 of the body, hex),
   ``stripe`` (``Stripe-Signature: t=...,v1=...``: HMAC-SHA256 of
   ``t.body``, the timestamp within ``tolerance`` seconds, default 300),
   ``hmac`` (any header: ``algorithm`` sha1/sha256/sha512, ``prefix``,
   ``encoding`` hex or base64) or ``token`` (the header's value is the
   secret); compared in constant time;
3. the event: ``source`` and ``detail_type`` are templates over the request
   (``<headers.x-github-event>``, ``<body.repository.name>``,
   ``<query.team>``); the detail is the JSON body (``detail: body``, the
   default; a form's ``payload`` field is read as GitHub sends it), or the
   whole request (``detail: request``: ``{"method", "path", "query",
   "headers", "body"}``, so patterns can match headers, named in lower case);
4. it is put on ``bus`` and answered 200 ``{"EventId": ...}`` only once
   ``put_events`` has accepted it (with a durable intake: committed); an
   entry the bus refuses is a 400 with its error, a runtime that is
   stopping a 503, any other failure a 500: the sender retries those.
"""

from __future__ import annotations

import base64
import hmac
import logging
import math
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from pipelines.errors import (
    ConfigError,
    DeliveryError,
    NotRunningError,
    Problems,
    Where,
)
from pipelines.http.ratelimit import TokenBucket
from pipelines.policy import ACCOUNT_SETTING, Caller, source_caller
from pipelines.routes import HttpRequest, HttpResponse
from pipelines.settings import Number, Section, Settings, Shape
from pipelines.targets import DeliveryContext, Target, TargetServices, TargetType
from pipelines.templates import PathTemplate

log = logging.getLogger("pipelines.http")

SCHEMES = ("github", "stripe", "hmac", "token")
ALGORITHMS = ("sha1", "sha256", "sha512")
MAX_BODY = 1024 * 1024
#: Codes of entries the bus refuses for what the request carried (a 400, not a 5xx).
_SENDER_CODES = {"InvalidArgument", "MalformedDetail", "ValidationException"}
_TEXT = {"type": "string", "minLength": 1}

VERIFY_TABLE = Settings(
    {
        "scheme": Shape({"enum": list(SCHEMES)}),
        "secret": Shape(_TEXT, "the shared secret (write it as ${VAR})"),
        "header": Shape(_TEXT, "hmac and token: the header carrying the signature"),
        "algorithm": Shape({"enum": list(ALGORITHMS), "default": "sha256"}),
        "prefix": Shape({"type": "string"}, "hmac: text before the signature (sha256=)"),
        "encoding": Shape({"enum": ["hex", "base64"], "default": "hex"}),
        "tolerance": Number(300, 1, 86_400, description="stripe: seconds a signature lives"),
    },
    required=("scheme", "secret"),
)
WEBHOOK_TABLE = Settings(
    {
        "path": Shape({"type": "string", "pattern": "^/"}, "the path served"),
        "bus": Shape({**_TEXT, "default": "default"}),
        "source": Shape({**_TEXT, "default": "webhook"}, "template: <headers.x>, <body.a.b>"),
        "detail_type": Shape({**_TEXT, "default": "Webhook"}, "template, as source"),
        "detail": Shape({"enum": ["body", "request"], "default": "body"}),
        "verify": Section(VERIFY_TABLE),
        "max_body": Number(256 * 1024, 1, MAX_BODY, integer=True, description="bytes"),
        "rate_limit_per_second": Number(None, 0.1, 100_000, description="requests"),
        "account": ACCOUNT_SETTING,
    },
    required=("path",),
)


@dataclass(frozen=True, slots=True)
class Verify:
    scheme: str
    secret: bytes
    header: str
    algorithm: str = "sha256"
    prefix: str = ""
    encoding: str = "hex"
    tolerance: float = 300.0

    def __repr__(self) -> str:
        return f"Verify({self.scheme!r}, header={self.header!r})"

    def check(self, request: HttpRequest, now: float) -> str | None:
        """What is wrong with the request's signature (None: it is good)."""
        given = request.headers.get(self.header)
        if not given:
            return f"no {self.header} header"
        if self.scheme == "token":
            ok = hmac.compare_digest(given.encode(), self.secret)
            return None if ok else f"{self.header} does not match"
        if self.scheme == "stripe":
            return self._stripe(given, request.body, now)
        if not given.startswith(self.prefix):
            return f"{self.header} does not start with {self.prefix!r}"
        expected = self._sign(request.body)
        ok = hmac.compare_digest(given[len(self.prefix) :].strip().encode(), expected.encode())
        return None if ok else f"{self.header} does not match the body"

    def _sign(self, message: bytes) -> str:
        digest = hmac.new(self.secret, message, self.algorithm).digest()
        return digest.hex() if self.encoding == "hex" else base64.b64encode(digest).decode()

    def _stripe(self, given: str, body: bytes, now: float) -> str | None:
        """Stripe's scheme: ``t=TIMESTAMP,v1=SIG[,v1=SIG...]``, the signature
        over ``TIMESTAMP.BODY``; other schemes' fields (v0) are ignored."""
        stamp: str | None = None
        signatures: list[str] = []
        for part in given.split(","):
            key, _, value = part.strip().partition("=")
            if key == "t":
                stamp = value
            elif key == "v1":
                signatures.append(value)
        if stamp is None or not stamp.isdigit():
            return f"{self.header} has no timestamp"
        if not signatures:
            return f"{self.header} has no v1 signature"
        if abs(now - int(stamp)) > self.tolerance:
            return f"{self.header}'s timestamp is more than {self.tolerance:g} s away"
        expected = self._sign(stamp.encode() + b"." + body).encode()
        if any(hmac.compare_digest(s.encode(), expected) for s in signatures):
            return None
        return f"{self.header} does not match the body"


def _verify(where: Where, config: Any) -> Verify:
    if not isinstance(config, Mapping):
        raise ConfigError(where, "must be a mapping with a scheme and a secret")
    problems = Problems()
    with problems:
        VERIFY_TABLE.check_keys(where, config)
    scheme = config.get("scheme")
    if scheme not in SCHEMES:
        raise ConfigError(where / "scheme", f"must be one of {', '.join(SCHEMES)}, not {scheme!r}")
    secret = config.get("secret")
    if not isinstance(secret, str) or not secret:
        problems.add(ConfigError(where / "secret", "is required: the shared secret"))
    header = config.get("header")
    default_header = {"github": "x-hub-signature-256", "stripe": "stripe-signature"}
    if scheme in default_header:
        for key in ("header", "algorithm", "prefix", "encoding"):
            if key in config:
                problems.add(ConfigError(where / key, f"is fixed by the {scheme} scheme"))
        header = default_header[scheme]
    elif not isinstance(header, str) or not header:
        problems.add(ConfigError(where / "header", f"is required by the {scheme} scheme"))
    algorithm = config.get("algorithm", "sha256")
    if algorithm not in ALGORITHMS:
        problems.add(ConfigError(where / "algorithm", f"must be one of {', '.join(ALGORITHMS)}"))
    encoding = config.get("encoding", "hex")
    if encoding not in ("hex", "base64"):
        problems.add(ConfigError(where / "encoding", "must be hex or base64"))
    prefix = config.get("prefix", "sha256=" if scheme == "github" else "")
    if not isinstance(prefix, str):
        problems.add(ConfigError(where / "prefix", "must be text"))
    tolerance = 300.0
    with problems:
        tolerance = VERIFY_TABLE.number(where, config, "tolerance")
    problems.raise_any()
    return Verify(
        str(scheme),
        str(secret).encode(),
        str(header).lower(),
        str(algorithm),
        str(prefix),
        str(encoding),
        tolerance,
    )


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    path: str
    bus: str
    source: PathTemplate
    detail_type: PathTemplate
    whole_request: bool
    verify: Verify | None
    max_body: int
    rate: float | None
    #: Who its requests put events as (bus permissions; None: the runner).
    caller: Caller | None = None


def parse_webhook(where: Where, config: Mapping[str, Any]) -> WebhookSettings:
    problems = Problems()
    with problems:
        WEBHOOK_TABLE.check_keys(where, config)
    path = config.get("path")
    if not isinstance(path, str) or not path.startswith("/") or urllib.parse.quote(path) != path:
        problems.add(
            ConfigError(where / "path", f"must be a URL path starting with '/', not {path!r}")
        )
    bus = config.get("bus", "default")
    if not isinstance(bus, str) or not bus:
        problems.add(ConfigError(where / "bus", "must be a bus name"))
    templates: dict[str, PathTemplate] = {}
    for key, default in (("source", "webhook"), ("detail_type", "Webhook")):
        with problems:
            templates[key] = PathTemplate.parse(where / key, config.get(key, default), key)
    detail = config.get("detail", "body")
    if detail not in ("body", "request"):
        problems.add(ConfigError(where / "detail", f"must be body or request, not {detail!r}"))
    verify = None
    if config.get("verify") is not None:
        with problems:
            verify = _verify(where / "verify", config["verify"])
    max_body = 0.0
    with problems:
        max_body = WEBHOOK_TABLE.number(where, config, "max_body")
    rate = None
    if config.get("rate_limit_per_second") is not None:
        with problems:
            rate = WEBHOOK_TABLE.number(where, config, "rate_limit_per_second")
    caller = None
    with problems:
        caller = source_caller(where, config)
    problems.raise_any()
    return WebhookSettings(
        str(path),
        str(bus),
        templates["source"],
        templates["detail_type"],
        detail == "request",
        verify,
        int(max_body),
        rate,
        caller,
    )


def _json(status: int, body: Mapping[str, Any], **headers: str) -> HttpResponse:
    return HttpResponse(status, orjson.dumps(body), {"Content-Type": "application/json", **headers})


class WebhookTarget(Target):
    """A webhook source (see the module's docstring); not a target of rules."""

    serves_http = True

    def __init__(self, name: str, settings: WebhookSettings) -> None:
        self.name = name
        self.settings = settings
        self._services: TargetServices | None = None
        self._remove: Any = None
        self._bucket: TokenBucket | None = None
        #: Requests answered, by status (for tests and the log).
        self.answered: dict[int, int] = {}
        #: A pipe reading this webhook (``attach``): requests go there, not to the bus.
        self._consumer: Callable[[dict[str, Any]], Awaitable[str]] | None = None

    def attach(self, consumer: Callable[[dict[str, Any]], Awaitable[str]]) -> None:
        """A pipe reads this webhook: each request's PutEvents entry goes to
        ``consumer`` instead of the bus, answered 200 with the id it returns,
        or 500 when it raises (the sender sends it again); ``detach`` ends it."""
        self._consumer = consumer

    def detach(self, consumer: Callable[[dict[str, Any]], Awaitable[str]]) -> None:
        if self._consumer is consumer:
            self._consumer = None

    async def start(self, services: TargetServices) -> None:
        settings = self.settings
        if settings.rate is not None:
            self._bucket = TokenBucket(settings.rate, services.clock, burst=max(1.0, settings.rate))
        self._services = services
        self._remove = services.routes.add(settings.path, self._handle, max_body=settings.max_body)

    async def stop(self) -> None:
        if self._remove is not None:
            self._remove()
            self._remove = None
        self._services = None

    def accept(self, where: Where, parameters: Mapping[str, Any]) -> None:
        raise ConfigError(
            where / "resource", f"{self.name!r} is a webhook: a source of events, not a target"
        )

    async def deliver(self, payload: Any, context: DeliveryContext) -> Any:
        raise DeliveryError("NotATarget", f"webhook {self.name} is not a target", retryable=False)

    async def _handle(self, request: HttpRequest) -> HttpResponse:
        answer = await self._answer(request)
        self.answered[answer.status] = self.answered.get(answer.status, 0) + 1
        return answer

    async def _answer(self, request: HttpRequest) -> HttpResponse:
        services = self._services
        if services is None:
            return _json(503, {"message": "the webhook is not running"})
        if request.method != "POST":
            return _json(405, {"message": "only POST is taken"}, Allow="POST")
        if self._bucket is not None:
            wait = self._bucket.try_take()
            if wait > 0:
                return _json(
                    429, {"message": "too many requests"}, **{"Retry-After": str(math.ceil(wait))}
                )
        verify = self.settings.verify
        if verify is not None:
            problem = verify.check(request, services.clock.time())
            if problem is not None:
                return _json(401, {"message": f"signature refused: {problem}"})
        try:
            entry = self._entry(request)
        except ValueError as error:
            return _json(400, {"message": str(error)})
        consumer = self._consumer
        if consumer is not None:
            try:
                return _json(200, {"EventId": await consumer(entry)})
            except Exception as error:
                return _json(500, {"message": f"the pipe did not take it: {error}"})
        try:
            result = await services.put_events([entry], caller=self.settings.caller)
        except NotRunningError:
            return _json(503, {"message": "the pipeline is stopping; send it again"})
        (outcome,) = result["Entries"]
        if "EventId" in outcome:
            return _json(200, {"EventId": outcome["EventId"]})
        code = outcome.get("ErrorCode", "InternalFailure")
        status = 403 if code == "AccessDeniedException" else 400 if code in _SENDER_CODES else 500
        return _json(status, {"message": outcome.get("ErrorMessage", ""), "code": code})

    def _entry(self, request: HttpRequest) -> dict[str, Any]:
        body = _body(request)
        view = {
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "headers": dict(request.headers),
            "body": body,
        }
        if self.settings.whole_request:
            detail: Any = view
        elif isinstance(body, dict):
            detail = body
        else:
            raise ValueError("the body is not a JSON object (detail: request takes any body)")
        try:
            source = self.settings.source.render(view, "BadRequest", "source")
            detail_type = self.settings.detail_type.render(view, "BadRequest", "detail_type")
        except DeliveryError as error:
            raise ValueError(error.message) from None
        return {
            "Source": source,
            "DetailType": detail_type,
            "Detail": orjson.dumps(detail).decode(),
            "EventBusName": self.settings.bus,
        }


def _body(request: HttpRequest) -> Any:
    """The body as JSON when it is JSON; a form's ``payload`` field (GitHub's
    form-encoded deliveries) as JSON; else the text."""
    content_type = request.headers.get("content-type", "")
    text = request.body.decode("utf-8", "replace")
    if content_type.startswith("application/x-www-form-urlencoded"):
        form = dict(urllib.parse.parse_qsl(text))
        text = form.get("payload", text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


class WebhookType(TargetType):
    name = "webhook"
    description = "A webhook source: each POST to its path on the runner's port becomes an event"
    settings = WEBHOOK_TABLE

    def create(self, name: str, config: Mapping[str, Any]) -> WebhookTarget:
        return WebhookTarget(name, parse_webhook(Where(f"target {name}"), config))
