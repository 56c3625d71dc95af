"""The http plugin's CloudFormation mappings: ``AWS::Events::Connection``
<-> a ``connection`` resource, ``AWS::Events::ApiDestination`` <-> an
``api_destination`` resource."""

from __future__ import annotations

from typing import Any

from pipelines.cloudformation.intrinsics import Identity, TemplateError
from pipelines.cloudformation.mapping import (
    ConfigExport,
    ExportContext,
    ImportContext,
    Resource,
    TypeMapping,
    alias_keys,
    boolean,
    integer,
    props,
    set_if,
)

_PARAMETER_KINDS = (
    ("HeaderParameters", "header"),
    ("QueryStringParameters", "query"),
    ("BodyParameters", "body"),
)


def _connection_identity(context: ImportContext, resource: Resource) -> Identity:
    name = resource.text("Name") or resource.logical_id
    arn = context.arn("events", f"connection/{name}")
    context.alias("resources", name, *alias_keys(arn), name)
    secret = context.arn("secretsmanager", f"secret:events!connection/{name}")
    return Identity(name, {"Arn": arn, "SecretArn": secret})


def _parameters(given: Any, path: tuple[str | int, ...]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if not isinstance(given, dict):
        return result
    for prop, kind in _PARAMETER_KINDS:
        entries = given.get(prop) or []
        if entries:
            result[kind] = {
                str(e.get("Key")): {
                    "value": e.get("Value"),
                    "secret": bool(boolean(e.get("IsValueSecret"), path)),
                }
                for e in entries
            }
    return result


def _connection_apply(context: ImportContext, resource: Resource) -> str:
    name = context.name("resources", resource, resource.text("Name"))
    kind = resource.text("AuthorizationType")
    body: dict[str, Any] = {"type": "connection", "authorization_type": kind}
    auth = resource.get("AuthParameters") or {}
    if kind == "API_KEY":
        given = auth.get("ApiKeyAuthParameters") or {}
        body["api_key"] = {"name": given.get("ApiKeyName"), "value": given.get("ApiKeyValue")}
    elif kind == "BASIC":
        given = auth.get("BasicAuthParameters") or {}
        body["basic"] = {"username": given.get("Username"), "password": given.get("Password")}
    elif kind == "OAUTH_CLIENT_CREDENTIALS":
        given = auth.get("OAuthParameters") or {}
        client = given.get("ClientParameters") or {}
        body["oauth"] = {
            "authorization_endpoint": given.get("AuthorizationEndpoint"),
            "http_method": given.get("HttpMethod"),
            "client_id": client.get("ClientID"),
            "client_secret": client.get("ClientSecret"),
        }
        extra = _parameters(given.get("OAuthHttpParameters"), resource.at("AuthParameters"))
        if extra:
            body["oauth"]["parameters"] = extra
    else:
        raise TemplateError(
            resource.at("AuthorizationType"), "BASIC, API_KEY or OAUTH_CLIENT_CREDENTIALS"
        )
    invocation = _parameters(auth.get("InvocationHttpParameters"), resource.at("AuthParameters"))
    if invocation:
        body["parameters"] = invocation
    set_if(body, "description", resource.text("Description"))
    context.declare("resources", name, body, resource, {"authorization_type": "AuthorizationType"})
    return f"connection {name}"


def _aws_parameters(given: dict[str, Any]) -> dict[str, Any]:
    result = {}
    for prop, kind in _PARAMETER_KINDS:
        if given.get(kind):
            result[prop] = [
                {
                    "Key": key,
                    "Value": entry.get("value"),
                    "IsValueSecret": bool(entry.get("secret")),
                }
                for key, entry in given[kind].items()
            ]
    return result


def _export_connection(context: ExportContext, name: str, body: dict[str, Any]) -> None:
    logical = context.primaries.get(name) or context.logical_id("resources", name, "Connection")
    context.add(logical, "AWS::Events::Connection", connection_properties(name, body))


def connection_properties(name: str, body: dict[str, Any]) -> dict[str, Any]:
    kind = body.get("authorization_type")
    auth: dict[str, Any] = {}
    if kind == "API_KEY":
        given = body.get("api_key") or {}
        auth["ApiKeyAuthParameters"] = {
            "ApiKeyName": given.get("name"),
            "ApiKeyValue": given.get("value"),
        }
    elif kind == "BASIC":
        given = body.get("basic") or {}
        auth["BasicAuthParameters"] = {
            "Username": given.get("username"),
            "Password": given.get("password"),
        }
    else:
        given = body.get("oauth") or {}
        oauth: dict[str, Any] = {
            "AuthorizationEndpoint": given.get("authorization_endpoint"),
            "HttpMethod": given.get("http_method"),
            "ClientParameters": {
                "ClientID": given.get("client_id"),
                "ClientSecret": given.get("client_secret"),
            },
        }
        if given.get("parameters"):
            oauth["OAuthHttpParameters"] = _aws_parameters(given["parameters"])
        auth["OAuthParameters"] = oauth
    if body.get("parameters"):
        auth["InvocationHttpParameters"] = _aws_parameters(body["parameters"])
    properties: dict[str, Any] = {"Name": name, "AuthorizationType": kind, "AuthParameters": auth}
    set_if(properties, "Description", body.get("description"))
    return properties


def _destination_identity(context: ImportContext, resource: Resource) -> Identity:
    name = resource.text("Name") or resource.logical_id
    arn = context.arn("events", f"api-destination/{name}")
    context.alias("resources", name, *alias_keys(arn), name)
    return Identity(name, {"Arn": arn})


def _destination_apply(context: ImportContext, resource: Resource) -> str:
    name = context.name("resources", resource, resource.text("Name"))
    connection = context.resource(resource.get("ConnectionArn"), resource.at("ConnectionArn"))
    body: dict[str, Any] = {
        "type": "api_destination",
        "endpoint": resource.text("InvocationEndpoint"),
        "connection": connection,
    }
    method = resource.text("HttpMethod")
    if method not in (None, "POST"):
        body["http_method"] = method
    set_if(
        body,
        "invocation_rate_limit_per_second",
        integer(
            resource.get("InvocationRateLimitPerSecond"),
            resource.at("InvocationRateLimitPerSecond"),
        ),
    )
    set_if(body, "description", resource.text("Description"))
    context.declare(
        "resources",
        name,
        body,
        resource,
        {"endpoint": "InvocationEndpoint", "connection": "ConnectionArn"},
    )
    return f"API destination {name}"


def _export_destination(context: ExportContext, name: str, body: dict[str, Any]) -> None:
    connection = body.get("connection")
    if isinstance(connection, dict):  # inline settings: a connection of its own
        logical = context.logical_id("resources", name, "Connection")
        context.add(
            logical,
            "AWS::Events::Connection",
            connection_properties(f"{name}-connection", connection),
        )
        connection_arn: Any = {"Fn::GetAtt": [logical, "Arn"]}
    else:
        connection_arn = context.ref_of(str(connection))
    properties: dict[str, Any] = {
        "Name": name,
        "ConnectionArn": connection_arn,
        "InvocationEndpoint": body.get("endpoint"),
        "HttpMethod": body.get("http_method", "POST"),
    }
    set_if(properties, "InvocationRateLimitPerSecond", body.get("invocation_rate_limit_per_second"))
    set_if(properties, "Description", body.get("description"))
    context.add(context.primaries[name], "AWS::Events::ApiDestination", properties)


MAPPINGS = (
    TypeMapping(
        "AWS::Events::Connection",
        identity=_connection_identity,
        apply=_connection_apply,
        owner="http",
        properties=props(
            ("Name", "resources.NAME"),
            ("AuthorizationType", "authorization_type"),
            ("AuthParameters", "api_key, basic, oauth, parameters (InvocationHttpParameters)"),
            ("Description", "description"),
        ),
    ),
    TypeMapping(
        "AWS::Events::ApiDestination",
        identity=_destination_identity,
        apply=_destination_apply,
        owner="http",
        properties=props(
            ("Name", "resources.NAME"),
            ("ConnectionArn", "connection (the connection resource)"),
            ("InvocationEndpoint", "endpoint"),
            ("HttpMethod", "http_method"),
            ("InvocationRateLimitPerSecond", "invocation_rate_limit_per_second"),
            ("Description", "description"),
        ),
    ),
    ConfigExport(
        "connection",
        _export_connection,
        ("AWS::Events::Connection",),
        suffix="Connection",
        keys=("authorization_type", "api_key", "basic", "oauth", "parameters", "description"),
    ),
    ConfigExport(
        "api_destination",
        _export_destination,
        ("AWS::Events::ApiDestination", "AWS::Events::Connection"),
        suffix="ApiDestination",
        keys=(
            "endpoint",
            "connection",
            "http_method",
            "invocation_rate_limit_per_second",
            "description",
        ),
    ),
)
