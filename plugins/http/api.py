"""The events API's connections and API destinations, served beside the engine's rules.

CreateConnection and CreateApiDestination make ``connection`` and
``api_destination`` resources (``Runtime.put_resource``), the same objects a
config's ``resources:`` declares, so one made through the API is a rule
target (by its ARN) like one from YAML. Update replaces the resource with
the merged settings (deliveries under way finish on the old one); Delete
removes it. Describe and List answer AWS's shapes without secrets.

Chosen where AWS is not recorded here: a connection's state is ``AUTHORIZED``
for BASIC and API_KEY; an OAuth connection is ``AUTHORIZING`` until its
first token is fetched (at the first delivery), then ``AUTHORIZED``; an API
destination is ``ACTIVE`` while its connection is authorized, else
``INACTIVE`` (as AWS answers right after creating one on an OAuth
connection). No ``SecretArn`` is answered: secrets stay in the runner's
memory, there is no Secrets Manager to name. DeauthorizeConnection is not
served (it answers AWS's error shape, ``NotImplemented``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pipelines.api.errors import ApiError, validation
from pipelines.api.services import Call, Service, page, resource_of
from pipelines.errors import ConfigError
from pipelines.http.auth import API_KEY, BASIC, OAUTH, ConnectionSettings, Parameters
from plugins.http.destination import (
    DEFAULT_RATE,
    ApiDestinationTarget,
    ConnectionTarget,
)

events = Service("events")
T = TypeVar("T")

PAGE = 100
_KINDS = (
    ("header", "HeaderParameters"),
    ("query", "QueryStringParameters"),
    ("body", "BodyParameters"),
)


# -- translation -------------------------------------------------------------


def _parameters_config(given: Mapping[str, Any] | None) -> dict[str, Any]:
    """AWS's ``{HeaderParameters: [{Key, Value, IsValueSecret}], ...}`` in our names."""
    found: dict[str, Any] = {}
    for ours, aws in _KINDS:
        items = (given or {}).get(aws) or []
        if items:
            found[ours] = {
                item["Key"]: {
                    "value": item.get("Value", ""),
                    "secret": item.get("IsValueSecret", False),
                }
                for item in items
            }
    return found


def _parameters_aws(parameters: Parameters) -> dict[str, Any]:
    """Ours as AWS describes them: a secret parameter's value is left out."""
    shown: dict[str, Any] = {}
    for ours, aws in _KINDS:
        items = getattr(parameters, ours)
        if items:
            shown[aws] = [
                {
                    "Key": p.key,
                    "IsValueSecret": p.secret,
                    **({} if p.secret else {"Value": p.value}),
                }
                for p in items
            ]
    return shown


def settings_config(settings: ConnectionSettings) -> dict[str, Any]:
    """A connection's settings as its resource's config, secrets included (to
    replace it with an update merged in; never answered)."""

    def parameters(given: Parameters) -> dict[str, Any]:
        return {
            kind: {p.key: {"value": p.value, "secret": p.secret} for p in getattr(given, kind)}
            for kind in ("header", "query", "body")
            if getattr(given, kind)
        }

    config: dict[str, Any] = {"authorization_type": settings.authorization_type}
    if settings.authorization_type == BASIC:
        config["basic"] = {"username": settings.username, "password": settings.password}
    elif settings.authorization_type == API_KEY:
        config["api_key"] = {"name": settings.api_key_name, "value": settings.api_key_value}
    elif settings.oauth is not None:
        oauth = settings.oauth
        config["oauth"] = {
            "authorization_endpoint": oauth.authorization_endpoint,
            "http_method": oauth.http_method,
            "client_id": oauth.client_id,
            "client_secret": oauth.client_secret,
            "parameters": parameters(oauth.parameters),
        }
    if settings.parameters_given:
        config["parameters"] = parameters(settings.parameters)
    if settings.description:
        config["description"] = settings.description
    return config


#: BASIC and API_KEY parameters: AWS's member, ours, and their fields' names.
_PLAIN_AUTH = (
    ("BasicAuthParameters", "basic", (("Username", "username"), ("Password", "password"))),
    ("ApiKeyAuthParameters", "api_key", (("ApiKeyName", "name"), ("ApiKeyValue", "value"))),
)


def _auth_config(kind: str, auth: Mapping[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """AWS's AuthParameters over ``base`` (a connection's config): what is
    given replaces, what is not is kept (UpdateConnection's rule)."""
    config = dict(base)
    config["authorization_type"] = kind
    for other in ("basic", "api_key", "oauth"):
        if other != {BASIC: "basic", API_KEY: "api_key", OAUTH: "oauth"}[kind]:
            config.pop(other, None)
    for aws, ours, members in _PLAIN_AUTH:
        if aws in auth:
            old = config.get(ours) or {}
            config[ours] = {key: auth[aws].get(member, old.get(key)) for member, key in members}
    if "OAuthParameters" in auth:
        given = auth["OAuthParameters"]
        old = dict(config.get("oauth") or {})
        client = given.get("ClientParameters") or {}
        oauth = {
            "authorization_endpoint": given.get(
                "AuthorizationEndpoint", old.get("authorization_endpoint")
            ),
            "http_method": given.get("HttpMethod", old.get("http_method", "POST")),
            "client_id": client.get("ClientID", old.get("client_id")),
            "client_secret": client.get("ClientSecret", old.get("client_secret")),
        }
        if "OAuthHttpParameters" in given:
            oauth["parameters"] = _parameters_config(given["OAuthHttpParameters"])
        elif old.get("parameters"):
            oauth["parameters"] = old["parameters"]
        config["oauth"] = oauth
    if "InvocationHttpParameters" in auth:
        config["parameters"] = _parameters_config(auth["InvocationHttpParameters"])
    return config


def _invalid(error: ConfigError) -> ApiError:
    return validation("; ".join(f"{e.location}: {e.message}" for e in error.errors))


# -- connections -------------------------------------------------------------


def _of_kind(call: Call, kind: type[T]) -> list[tuple[str, T]]:
    """The runtime's resources of one kind, by name."""
    found: list[tuple[str, T]] = []
    for name in sorted(call.runtime.resource_names()):
        target = call.runtime.resource(name)
        if isinstance(target, kind):
            found.append((name, target))
    return found


def _named(call: Call, name: str, kind: type[T]) -> T | None:
    if name in call.runtime.resource_names():
        found = call.runtime.resource(name)
        if isinstance(found, kind):
            return found
    return None


def _connection(call: Call, name: str) -> ConnectionTarget:
    found = _named(call, name, ConnectionTarget)
    if found is None:
        raise ApiError(
            "ResourceNotFoundException",
            f"Failed to describe the connection(s). Connection '{name}' does not exist.",
        )
    return found


def _times(target: ConnectionTarget | ApiDestinationTarget) -> dict[str, Any]:
    return {"CreationTime": target.created, "LastModifiedTime": target.modified}


def _connection_summary(call: Call, target: ConnectionTarget) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "ConnectionArn": call.runtime.resource_arn(target.name),
        "ConnectionState": target.state,
        **_times(target),
    }
    # AWS answers it also while an OAuth connection is still AUTHORIZING.
    summary["LastAuthorizedTime"] = target.authorized_at or target.created
    return summary


def _new_target(call: Call, name: str) -> None:
    """A name a new resource may take: not one of any type already."""
    if name in call.runtime.resource_names():
        found = call.runtime.resource(name)
        kind = "Connection" if isinstance(found, ConnectionTarget) else "A resource"
        if isinstance(found, ApiDestinationTarget):
            kind = "An api-destination"
        raise ApiError("ResourceAlreadyExistsException", f"{kind} '{name}' already exists.")


@events.operation()
async def create_connection(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    name = params["Name"]
    _new_target(call, name)
    config = _auth_config(params["AuthorizationType"], params.get("AuthParameters") or {}, {})
    if params.get("Description"):
        config["description"] = params["Description"]
    try:
        made = await call.runtime.put_resource(name, "connection", config)
    except ConfigError as error:
        raise _invalid(error) from None
    assert isinstance(made, ConnectionTarget)
    return _connection_summary(call, made)


@events.operation()
async def update_connection(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    name = params["Name"]
    old = _connection(call, name)
    base = settings_config(old.settings)
    kind = params.get("AuthorizationType", old.settings.authorization_type)
    config = _auth_config(kind, params.get("AuthParameters") or {}, base)
    if "Description" in params:
        config["description"] = params["Description"]
    try:
        made = await call.runtime.put_resource(name, "connection", config)
    except ConfigError as error:
        raise _invalid(error) from None
    assert isinstance(made, ConnectionTarget)
    made.created = old.created
    return _connection_summary(call, made)


@events.operation()
async def describe_connection(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    target = _connection(call, params["Name"])
    settings = target.settings
    auth: dict[str, Any] = {}
    if settings.authorization_type == BASIC:
        auth["BasicAuthParameters"] = {"Username": settings.username}
    elif settings.authorization_type == API_KEY:
        auth["ApiKeyAuthParameters"] = {"ApiKeyName": settings.api_key_name}
    elif settings.oauth is not None:
        oauth: dict[str, Any] = {
            "ClientParameters": {"ClientID": settings.oauth.client_id},
            "AuthorizationEndpoint": settings.oauth.authorization_endpoint,
            "HttpMethod": settings.oauth.http_method,
        }
        extra = _parameters_aws(settings.oauth.parameters)
        if extra:
            oauth["OAuthHttpParameters"] = extra
        auth["OAuthParameters"] = oauth
    invocation = _parameters_aws(settings.parameters)
    if invocation or settings.parameters_given:
        auth["InvocationHttpParameters"] = invocation
    described = {
        **_connection_summary(call, target),
        "Name": target.name,
        "AuthorizationType": settings.authorization_type,
        "AuthParameters": auth,
    }
    if settings.description:
        described["Description"] = settings.description
    return described


@events.operation()
async def list_connections(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    prefix = params.get("NamePrefix", "")
    found = []
    for name, target in _of_kind(call, ConnectionTarget):
        if not name.startswith(prefix):
            continue
        summary = {
            **_connection_summary(call, target),
            "Name": name,
            "AuthorizationType": target.settings.authorization_type,
        }
        if params.get("ConnectionState") in (None, summary["ConnectionState"]):
            found.append(summary)
    return _page(found, params, "Connections")


@events.operation()
async def delete_connection(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    target = _connection(call, params["Name"])
    users = [
        name
        for name, destination in _of_kind(call, ApiDestinationTarget)
        if destination.settings.connection == target.name
    ]
    if users:
        raise validation(
            f"Connection '{target.name}' is used by the api destinations {', '.join(users)}."
        )
    summary = _connection_summary(call, target)
    await call.runtime.delete_resource(target.name)
    return {**summary, "ConnectionState": "DELETING"}


# -- API destinations --------------------------------------------------------


def _destination(call: Call, name: str) -> ApiDestinationTarget:
    found = _named(call, name, ApiDestinationTarget)
    if found is None:
        raise ApiError(
            "ResourceNotFoundException",
            "Failed to describe the api-destination(s)."
            f" An api-destination '{name}' does not exist.",
        )
    return found


def _connection_name(call: Call, arn: str) -> str:
    name = resource_of(call, arn)
    if name is None or not isinstance(call.runtime.resource(name), ConnectionTarget):
        raise ApiError(
            "ResourceNotFoundException", f"Connection '{arn.rsplit('/', 1)[-1]}' does not exist."
        )
    return name


def _destination_summary(call: Call, target: ApiDestinationTarget) -> dict[str, Any]:
    return {
        "ApiDestinationArn": call.runtime.resource_arn(target.name),
        "ApiDestinationState": target.state,
        **_times(target),
    }


def _described(call: Call, target: ApiDestinationTarget) -> dict[str, Any]:
    settings = target.settings
    described = {
        **_destination_summary(call, target),
        "Name": target.name,
        "InvocationEndpoint": settings.endpoint,
        "HttpMethod": settings.http_method,
        "InvocationRateLimitPerSecond": settings.rate,
    }
    if isinstance(settings.connection, str):
        described["ConnectionArn"] = call.runtime.resource_arn(settings.connection)
    if settings.description:
        described["Description"] = settings.description
    return described


async def _put_destination(call: Call, name: str, config: dict[str, Any]) -> ApiDestinationTarget:
    try:
        made = await call.runtime.put_resource(name, "api_destination", config)
    except ConfigError as error:
        raise _invalid(error) from None
    assert isinstance(made, ApiDestinationTarget)
    return made


@events.operation()
async def create_api_destination(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    name = params["Name"]
    _new_target(call, name)
    config: dict[str, Any] = {
        "connection": _connection_name(call, params["ConnectionArn"]),
        "endpoint": params["InvocationEndpoint"],
        "http_method": params["HttpMethod"],
        "invocation_rate_limit_per_second": params.get(
            "InvocationRateLimitPerSecond", DEFAULT_RATE
        ),
    }
    if params.get("Description"):
        config["description"] = params["Description"]
    made = await _put_destination(call, name, config)
    return _destination_summary(call, made)


@events.operation()
async def update_api_destination(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    old = _destination(call, params["Name"])
    config = dict(old.config)
    if "ConnectionArn" in params:
        config["connection"] = _connection_name(call, params["ConnectionArn"])
    for aws, ours in (
        ("InvocationEndpoint", "endpoint"),
        ("HttpMethod", "http_method"),
        ("InvocationRateLimitPerSecond", "invocation_rate_limit_per_second"),
        ("Description", "description"),
    ):
        if aws in params:
            config[ours] = params[aws]
    made = await _put_destination(call, old.name, config)
    made.created = old.created
    return _destination_summary(call, made)


@events.operation()
async def describe_api_destination(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    return _described(call, _destination(call, params["Name"]))


@events.operation()
async def list_api_destinations(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    prefix = params.get("NamePrefix", "")
    connection = params.get("ConnectionArn")
    wanted = _connection_name(call, connection) if connection else None
    found = []
    for name, target in _of_kind(call, ApiDestinationTarget):
        if not name.startswith(prefix):
            continue
        if wanted is not None and target.settings.connection != wanted:
            continue
        described = _described(call, target)
        described.pop("Description", None)
        found.append(described)
    return _page(found, params, "ApiDestinations")


@events.operation()
async def delete_api_destination(call: Call, params: dict[str, Any]) -> None:
    target = _destination(call, params["Name"])
    await call.runtime.delete_resource(target.name)


def _page(items: list[Any], params: Mapping[str, Any], key: str) -> dict[str, Any]:
    invalid = validation("The NextToken is not valid.")
    found, token = page(items, params.get("NextToken"), params.get("Limit") or PAGE, invalid)
    return {key: found, "NextToken": token} if token else {key: found}
