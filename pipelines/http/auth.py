"""A connection's authorization, as EventBridge's connections define it.

A connection says how requests to its destinations are authorized:
``BASIC`` (a user name and password), ``API_KEY`` (a header and its value)
or ``OAUTH_CLIENT_CREDENTIALS`` (a token fetched from an authorization
endpoint with a client id and secret), plus header, query string and body
parameters added to every request. ``Authorization`` applies one to a
request; it never puts a secret in its ``repr``, a log line or a
description (``describe`` leaves secret values out, as DescribeConnection
does).

The OAuth exchange (EventBridge does not document its request): the
endpoint is called with the connection's ``http_method``, the client id and
secret as HTTP Basic credentials, ``grant_type=client_credentials`` unless
the OAuth parameters give another, and the OAuth parameters' headers, query
string and body (form-encoded). The answer's ``access_token`` is sent as
``Authorization: Bearer ...`` until ``expires_in`` seconds less a minute
(EventBridge refreshes a token within 60 s of its expiry); a 401 or 407
answer from a destination drops it, and the next request fetches another.
"""

from __future__ import annotations

import asyncio
import base64
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipelines.clock import Clock
from pipelines.errors import ConfigError, DeliveryError, Problems, Where
from pipelines.settings import check_keys

BASIC = "BASIC"
API_KEY = "API_KEY"
OAUTH = "OAUTH_CLIENT_CREDENTIALS"
AUTHORIZATION_TYPES = (BASIC, API_KEY, OAUTH)
OAUTH_METHODS = ("GET", "POST", "PUT")
#: A token is refreshed this long before it expires.
REFRESH_MARGIN = 60.0
#: A token answer without ``expires_in`` is used for this long.
DEFAULT_TOKEN_LIFE = 3600.0
#: CreateConnection's pattern for names and secrets (no control characters or ':').
_TEXT = re.compile(r"[ \t]*[^\x00-\x1F:\x7F]+([ \t]+[^\x00-\x1F:\x7F]+)*[ \t]*")
CONNECTION_KEYS = ("authorization_type", "basic", "api_key", "oauth", "parameters", "description")
PARAMETER_KINDS = ("header", "query", "body")


@dataclass(frozen=True, slots=True)
class Parameter:
    key: str
    value: str
    secret: bool = False

    def __repr__(self) -> str:
        shown = "'***'" if self.secret else repr(self.value)
        return f"Parameter({self.key!r}, {shown})"


@dataclass(frozen=True, slots=True)
class Parameters:
    """Header, query string and body parameters (a connection's, or its OAuth request's)."""

    header: tuple[Parameter, ...] = ()
    query: tuple[Parameter, ...] = ()
    body: tuple[Parameter, ...] = ()

    @classmethod
    def parse(cls, where: Where, config: Any) -> Parameters:
        """``{header: {K: V}, query: {...}, body: {...}}``; a value may be
        ``{value: V, secret: true}`` (IsValueSecret: left out of descriptions)."""
        if config is None:
            return cls()
        if not isinstance(config, Mapping):
            raise ConfigError(where, "must be a mapping of header, query and body parameters")
        check_keys(where, config, PARAMETER_KINDS)
        problems = Problems()
        found: dict[str, tuple[Parameter, ...]] = {}
        for kind in PARAMETER_KINDS:
            given = config.get(kind) or {}
            if not isinstance(given, Mapping):
                problems.add(ConfigError(where / kind, "must be a mapping of names to values"))
                continue
            if len(given) > 100:
                problems.add(ConfigError(where / kind, "takes at most 100 parameters"))
            items = []
            for key, value in given.items():
                with problems:
                    items.append(_parameter(where / kind / str(key), str(key), value))
            found[kind] = tuple(items)
        problems.raise_any()
        return cls(**found)

    def described(self) -> dict[str, Any]:
        """The parameters in our names, secret values left out."""
        shown: dict[str, Any] = {}
        for kind in PARAMETER_KINDS:
            items = getattr(self, kind)
            if items:
                shown[kind] = {p.key: {"secret": True} if p.secret else p.value for p in items}
        return shown


def _parameter(where: Where, key: str, value: Any) -> Parameter:
    secret = False
    if isinstance(value, Mapping):
        check_keys(where, value, ("value", "secret"))
        secret = bool(value.get("secret", False))
        value = value.get("value")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(where, f"must be a string (or {{value, secret}}), not {value!r}")
    if not 1 <= len(key) <= 512:
        raise ConfigError(where, "a parameter's name is 1 to 512 characters")
    return Parameter(key, str(value), secret)


def _text(where: Where, config: Mapping[str, Any], key: str, *, limit: int = 512) -> str:
    value = config.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(where / key, "is required: a non-empty string")
    if len(value) > limit or not _TEXT.fullmatch(value):
        raise ConfigError(
            where / key,
            f"must be 1 to {limit} characters without control characters or ':'",
        )
    return value


@dataclass(frozen=True, slots=True)
class OAuthSettings:
    authorization_endpoint: str
    http_method: str
    client_id: str
    client_secret: str = field(repr=False)
    parameters: Parameters = Parameters()


#: BASIC's and API_KEY's settings: each key and the field it fills.
_PLAIN_FIELDS = {
    BASIC: {"username": "username", "password": "password"},
    API_KEY: {"name": "api_key_name", "value": "api_key_value"},
}


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """A connection as declared (in our names; the events API translates)."""

    authorization_type: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    api_key_name: str | None = None
    api_key_value: str | None = field(default=None, repr=False)
    oauth: OAuthSettings | None = None
    parameters: Parameters = Parameters()
    description: str = ""
    #: Whether ``parameters`` was given (even empty: AWS describes it then).
    parameters_given: bool = False

    @classmethod
    def parse(cls, where: Where, config: Any) -> ConnectionSettings:
        """A connection's settings, every problem named at its key."""
        if not isinstance(config, Mapping):
            raise ConfigError(where, "a connection is a mapping with an authorization_type")
        problems = Problems()
        with problems:
            check_keys(where, config, CONNECTION_KEYS)
        kind = config.get("authorization_type")
        if kind not in AUTHORIZATION_TYPES:
            raise ConfigError(
                where / "authorization_type",
                f"must be one of {', '.join(AUTHORIZATION_TYPES)}, not {kind!r}",
            )
        wanted = {BASIC: "basic", API_KEY: "api_key", OAUTH: "oauth"}[kind]
        for other in ("basic", "api_key", "oauth"):
            if other != wanted and config.get(other) is not None:
                problems.add(ConfigError(where / other, f"is not used by {kind} authorization"))
        given = config.get(wanted)
        if not isinstance(given, Mapping):
            problems.add(ConfigError(where / wanted, f"is required for {kind} authorization"))
            problems.raise_any()
            raise AssertionError("unreachable: a problem was added")
        found: dict[str, Any] = {"authorization_type": kind}
        at = where / wanted
        if kind in _PLAIN_FIELDS:
            fields = _PLAIN_FIELDS[kind]
            with problems:
                check_keys(at, given, fields)
            for key, field_name in fields.items():
                with problems:
                    found[field_name] = _text(at, given, key)
        else:
            with problems:
                found["oauth"] = _oauth(at, given)
        with problems:
            found["parameters"] = Parameters.parse(where / "parameters", config.get("parameters"))
        found["parameters_given"] = config.get("parameters") is not None
        description = config.get("description", "")
        if not isinstance(description, str) or len(description) > 512:
            problems.add(
                ConfigError(where / "description", "is a string of at most 512 characters")
            )
        else:
            found["description"] = description
        problems.raise_any()
        return cls(**found)

    def described(self) -> dict[str, Any]:
        """The settings in our names without a secret (DescribeConnection's rule)."""
        shown: dict[str, Any] = {"authorization_type": self.authorization_type}
        if self.authorization_type == BASIC:
            shown["basic"] = {"username": self.username}
        elif self.authorization_type == API_KEY:
            shown["api_key"] = {"name": self.api_key_name}
        elif self.oauth is not None:
            shown["oauth"] = {
                "authorization_endpoint": self.oauth.authorization_endpoint,
                "http_method": self.oauth.http_method,
                "client_id": self.oauth.client_id,
                "parameters": self.oauth.parameters.described(),
            }
        parameters = self.parameters.described()
        if parameters:
            shown["parameters"] = parameters
        if self.description:
            shown["description"] = self.description
        return shown


def _oauth(where: Where, config: Mapping[str, Any]) -> OAuthSettings:
    problems = Problems()
    keys = ("authorization_endpoint", "http_method", "client_id", "client_secret", "parameters")
    with problems:
        check_keys(where, config, keys)
    endpoint = method = client_id = client_secret = ""
    with problems:
        endpoint = url_setting(
            where / "authorization_endpoint", config.get("authorization_endpoint")
        )
    with problems:
        method = choice(where / "http_method", config.get("http_method", "POST"), OAUTH_METHODS)
    with problems:
        client_id = _text(where, config, "client_id")
    with problems:
        client_secret = _text(where, config, "client_secret")
    parameters = Parameters()
    with problems:
        parameters = Parameters.parse(where / "parameters", config.get("parameters"))
    problems.raise_any()
    return OAuthSettings(endpoint, method, client_id, client_secret, parameters)


def url_setting(where: Where, value: Any, limit: int = 2048) -> str:
    """An http(s) URL of at most ``limit`` characters, or a ``ConfigError`` at ``where``."""
    if not isinstance(value, str) or len(value) > limit or not is_http_url(value):
        raise ConfigError(
            where, f"must be an http(s) URL of at most {limit} characters, not {value!r}"
        )
    return value


def choice(where: Where, value: Any, choices: Sequence[str]) -> str:
    """One of ``choices``, or a ``ConfigError`` at ``where`` listing them."""
    if value not in choices:
        raise ConfigError(where, f"must be one of {', '.join(choices)}, not {value!r}")
    return str(value)


def is_http_url(text: str) -> bool:
    """An absolute http or https URL with a host."""
    try:
        parsed = urllib.parse.urlsplit(text)
    except ValueError:
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.hostname)


#: Fetches a token for OAuth settings: (token, seconds it lives).
FetchToken = Callable[[OAuthSettings], Awaitable[tuple[str, float]]]


class Request:
    """A request being prepared: what authorization adds to."""

    __slots__ = ("body", "headers", "method", "params", "url")

    def __init__(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        params: dict[str, str],
        body: Any,
    ) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.params = params
        #: The payload: a JSON object can take body parameters, other bodies not.
        self.body = body


class Authorization:
    """Applies a connection to requests; keeps its OAuth token."""

    def __init__(self, settings: ConnectionSettings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self._token: str | None = None
        self._expires = 0.0
        #: When credentials were last known good: at once for BASIC and
        #: API_KEY, at each OAuth token fetched (None before the first).
        self.authorized_at: float | None = None if settings.oauth is not None else clock.time()
        self._lock = asyncio.Lock()
        self._header = self._fixed_header(settings)

    def __repr__(self) -> str:
        return f"Authorization({self.settings.authorization_type})"

    @staticmethod
    def _fixed_header(settings: ConnectionSettings) -> tuple[str, str] | None:
        if settings.authorization_type == BASIC:
            pair = f"{settings.username}:{settings.password}".encode()
            return "Authorization", "Basic " + base64.b64encode(pair).decode()
        if settings.authorization_type == API_KEY:
            assert settings.api_key_name is not None and settings.api_key_value is not None
            return settings.api_key_name, settings.api_key_value
        return None

    async def apply(self, request: Request, fetch: FetchToken) -> None:
        """Add the connection's parameters and credentials to ``request``.
        The connection's parameters take precedence over the target's, as
        EventBridge's do; its credentials over everything."""
        parameters = self.settings.parameters
        for p in parameters.header:
            request.headers[p.key] = p.value
        for p in parameters.query:
            request.params[p.key] = p.value
        if parameters.body and isinstance(request.body, dict):
            # A new object: the payload is the event's, shared with other targets.
            request.body = {**request.body, **{p.key: p.value for p in parameters.body}}
        if self._header is not None:
            request.headers[self._header[0]] = self._header[1]
        else:
            request.headers["Authorization"] = "Bearer " + await self.token(fetch)

    def refused(self) -> None:
        """A destination answered 401 or 407: the token is not good any more."""
        self._token = None

    async def token(self, fetch: FetchToken) -> str:
        """The OAuth token, fetched when there is none or it is about to expire."""
        if self._token is not None and self.clock.time() < self._expires - REFRESH_MARGIN:
            return self._token
        async with self._lock:  # concurrent deliveries wait for one fetch
            if self._token is not None and self.clock.time() < self._expires - REFRESH_MARGIN:
                return self._token
            oauth = self.settings.oauth
            assert oauth is not None
            token, life = await fetch(oauth)
            now = self.clock.time()
            self._token, self._expires, self.authorized_at = token, now + life, now
            return token


class TokenFetcher:
    """Fetches an OAuth token with an HTTP client (``pipelines.http.client``)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def __call__(self, oauth: OAuthSettings) -> tuple[str, float]:
        from pipelines.http.client import RequestFailed

        parameters = oauth.parameters
        pair = f"{oauth.client_id}:{oauth.client_secret}".encode()
        headers = {p.key: p.value for p in parameters.header}
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        query = {p.key: p.value for p in parameters.query}
        form = {p.key: p.value for p in parameters.body}
        form.setdefault("grant_type", "client_credentials")
        body: bytes | None = None
        if oauth.http_method == "GET":
            query = {**form, **query}
        else:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            body = urllib.parse.urlencode(form).encode()
        try:
            sent = await self.client.send(
                oauth.http_method,
                oauth.authorization_endpoint,
                headers=headers,
                params=query,
                body=body,
            )
        except RequestFailed as error:
            raise DeliveryError(
                "OAuthTokenError",
                f"the authorization endpoint did not answer: {error.message}",
                retryable=True,
            ) from None
        if sent.status >= 300:
            raise DeliveryError(
                "OAuthTokenError",
                f"the authorization endpoint answered {sent.status}: {sent.text()}",
                # A refusal of the credentials stays a refusal; an outage may pass.
                retryable=sent.status >= 500 or sent.status == 429,
            )
        try:
            answer = orjson.loads(sent.body)
            token = answer["access_token"]
            life = float(answer.get("expires_in", DEFAULT_TOKEN_LIFE))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise DeliveryError(
                "OAuthTokenError",
                "the authorization endpoint's answer has no access_token: " + sent.text(),
                retryable=False,
            ) from None
        if not isinstance(token, str) or not token:
            raise DeliveryError(
                "OAuthTokenError", "the access_token is not a string", retryable=False
            )
        return token, life
