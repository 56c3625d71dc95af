"""Connections and API destinations through the events API, against AWS's recorded answers.

The expected values are AWS's, as recorded in LocalStack's validated
snapshot tests/aws/services/events/test_api_destinations_and_connection.snapshot.json
(each case names its recorded test). Names that vary per run are ours;
states, members, codes and messages are AWS's. One member is left out on
purpose: AWS answers a ``SecretArn`` (its Secrets Manager secret); there is
none here (docs/http.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from .apiclient import Api, started_api


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async for started in started_api(tmp_path):
        yield started


AUTHS: list[tuple[str, dict[str, Any], str, dict[str, Any]]] = [
    # (type, AuthParameters given, the state AWS answered, AuthParameters AWS described)
    (
        "BASIC",
        {"BasicAuthParameters": {"Username": "user", "Password": "pass"}},
        "AUTHORIZED",
        {"BasicAuthParameters": {"Username": "user"}},
    ),
    (
        "API_KEY",
        {"ApiKeyAuthParameters": {"ApiKeyName": "ApiKey", "ApiKeyValue": "secret"}},
        "AUTHORIZED",
        {"ApiKeyAuthParameters": {"ApiKeyName": "ApiKey"}},
    ),
    (
        "OAUTH_CLIENT_CREDENTIALS",
        {
            "OAuthParameters": {
                "AuthorizationEndpoint": "https://example.com/oauth",
                "ClientParameters": {"ClientID": "client_id", "ClientSecret": "client_secret"},
                "HttpMethod": "POST",
            }
        },
        "AUTHORIZING",
        {
            "OAuthParameters": {
                "AuthorizationEndpoint": "https://example.com/oauth",
                "ClientParameters": {"ClientID": "client_id"},
                "HttpMethod": "POST",
            }
        },
    ),
]
CREATED = {"ConnectionArn", "ConnectionState", "CreationTime", "LastModifiedTime"}
DESCRIBED = {
    "AuthParameters",
    "AuthorizationType",
    "ConnectionArn",
    "ConnectionState",
    "CreationTime",
    "LastAuthorizedTime",
    "LastModifiedTime",
    "Name",
}


@pytest.mark.parametrize(("kind", "given", "state", "described"), AUTHS)
async def test_create_connection_with_auth(
    api: Api, kind: str, given: dict[str, Any], state: str, described: dict[str, Any]
) -> None:
    # test_create_connection_with_auth[auth_params0..2]
    made = await api.call(
        "create_connection", Name="c1", AuthorizationType=kind, AuthParameters=given
    )
    assert set(made) == CREATED and made["ConnectionState"] == state
    shown = await api.call("describe_connection", Name="c1")
    assert set(shown) == DESCRIBED
    assert shown["AuthParameters"] == described
    assert (shown["Name"], shown["AuthorizationType"], shown["ConnectionState"]) == (
        "c1",
        kind,
        state,
    )
    assert shown["ConnectionArn"] == made["ConnectionArn"]


async def test_create_connection_echoes_empty_invocation_parameters(api: Api) -> None:
    # test_create_connection: InvocationHttpParameters given empty is described empty
    given = {
        "ApiKeyAuthParameters": {"ApiKeyName": "ApiKey", "ApiKeyValue": "secret"},
        "InvocationHttpParameters": {},
    }
    await api.call(
        "create_connection", Name="c2", AuthorizationType="API_KEY", AuthParameters=given
    )
    shown = await api.call("describe_connection", Name="c2")
    assert shown["AuthParameters"] == {
        "ApiKeyAuthParameters": {"ApiKeyName": "ApiKey"},
        "InvocationHttpParameters": {},
    }


async def test_list_update_and_delete_connection(api: Api) -> None:
    basic = {"BasicAuthParameters": {"Username": "user", "Password": "pass"}}
    await api.call("create_connection", Name="c3", AuthorizationType="BASIC", AuthParameters=basic)
    # test_list_connections
    (listed,) = (await api.call("list_connections", NamePrefix="c3"))["Connections"]
    assert set(listed) == {
        "AuthorizationType",
        "ConnectionArn",
        "ConnectionState",
        "CreationTime",
        "LastAuthorizedTime",
        "LastModifiedTime",
        "Name",
    }
    assert (listed["AuthorizationType"], listed["ConnectionState"]) == ("BASIC", "AUTHORIZED")
    # test_update_connection
    updated = await api.call(
        "update_connection",
        Name="c3",
        AuthorizationType="BASIC",
        AuthParameters={"BasicAuthParameters": {"Username": "new_user", "Password": "new_pass"}},
    )
    assert set(updated) == CREATED | {"LastAuthorizedTime"}
    assert updated["ConnectionState"] == "AUTHORIZED"
    shown = await api.call("describe_connection", Name="c3")
    assert shown["AuthParameters"] == {"BasicAuthParameters": {"Username": "new_user"}}
    # test_delete_connection
    deleted = await api.call("delete_connection", Name="c3")
    assert set(deleted) == CREATED | {"LastAuthorizedTime"}
    assert deleted["ConnectionState"] == "DELETING"
    error = await api.error("describe_connection", Name="c3")
    assert error["Error"] == {
        "Code": "ResourceNotFoundException",
        "Message": "Failed to describe the connection(s). Connection 'c3' does not exist.",
    }
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400


async def test_connection_validation_errors(api: Api) -> None:
    # test_create_connection_invalid_parameters
    error = await api.error(
        "create_connection", Name="c4", AuthorizationType="INVALID_AUTH_TYPE", AuthParameters={}
    )
    assert error["Error"] == {
        "Code": "ValidationException",
        "Message": "1 validation error detected: Value 'INVALID_AUTH_TYPE' at 'authorizationType'"
        " failed to satisfy constraint: Member must satisfy enum value set:"
        " [BASIC, OAUTH_CLIENT_CREDENTIALS, API_KEY]",
    }
    # test_create_connection_name_validation
    error = await api.error(
        "create_connection",
        Name="Invalid Name With Spaces!",
        AuthorizationType="API_KEY",
        AuthParameters={"ApiKeyAuthParameters": {"ApiKeyName": "k", "ApiKeyValue": "v"}},
    )
    assert error["Error"] == {
        "Code": "ValidationException",
        "Message": "1 validation error detected: Value 'Invalid Name With Spaces!' at 'name'"
        " failed to satisfy constraint: Member must satisfy regular expression pattern:"
        " [\\.\\-_A-Za-z0-9]+",
    }


@pytest.mark.parametrize("auth", AUTHS[:2], ids=["BASIC", "API_KEY"])
async def test_api_destinations(api: Api, auth: tuple[str, dict[str, Any], str, Any]) -> None:
    # test_api_destinations[auth0], [auth1]
    kind, given, _, _ = auth
    connection = (
        await api.call(
            "create_connection", Name="d-c", AuthorizationType=kind, AuthParameters=given
        )
    )["ConnectionArn"]
    made = await api.call(
        "create_api_destination",
        Name="d1",
        ConnectionArn=connection,
        HttpMethod="POST",
        InvocationEndpoint="https://example.com/api",
        Description="Test API destination",
    )
    summary = {"ApiDestinationArn", "ApiDestinationState", "CreationTime", "LastModifiedTime"}
    assert set(made) == summary and made["ApiDestinationState"] == "ACTIVE"
    shown = await api.call("describe_api_destination", Name="d1")
    assert set(shown) == summary | {
        "ConnectionArn",
        "Description",
        "HttpMethod",
        "InvocationEndpoint",
        "InvocationRateLimitPerSecond",
        "Name",
    }
    assert (
        shown["ConnectionArn"],
        shown["Description"],
        shown["HttpMethod"],
        shown["InvocationEndpoint"],
        shown["InvocationRateLimitPerSecond"],
    ) == (connection, "Test API destination", "POST", "https://example.com/api", 300)
    (listed,) = (await api.call("list_api_destinations", NamePrefix="d1"))["ApiDestinations"]
    assert set(listed) == set(shown) - {"Description"}
    updated = await api.call(
        "update_api_destination",
        Name="d1",
        ConnectionArn=connection,
        HttpMethod="PUT",
        InvocationEndpoint="https://example.com/api/v2",
        Description="Updated API destination",
    )
    assert set(updated) == summary and updated["ApiDestinationState"] == "ACTIVE"
    shown = await api.call("describe_api_destination", Name="d1")
    assert (shown["HttpMethod"], shown["InvocationEndpoint"], shown["Description"]) == (
        "PUT",
        "https://example.com/api/v2",
        "Updated API destination",
    )
    assert await api.call("delete_api_destination", Name="d1") == {}
    error = await api.error("describe_api_destination", Name="d1")
    assert error["Error"] == {
        "Code": "ResourceNotFoundException",
        "Message": "Failed to describe the api-destination(s)."
        " An api-destination 'd1' does not exist.",
    }


async def test_api_destination_validation_errors(api: Api) -> None:
    # test_create_api_destination_invalid_parameters
    error = await api.error(
        "create_api_destination",
        Name="d2",
        ConnectionArn="invalid-connection-arn",
        HttpMethod="INVALID_METHOD",
        InvocationEndpoint="invalid-endpoint",
    )
    recorded = (
        "2 validation errors detected: Value 'invalid-connection-arn' at"
        " 'connectionArn' failed to satisfy constraint: Member must satisfy regular expression"
        " pattern: ^arn:aws([a-z]|\\-)*:events:([a-z]|\\d|\\-)*:([0-9]{12})?:connection\\/"
        "[\\.\\-_A-Za-z0-9]+\\/[\\-A-Za-z0-9]+$; Value 'INVALID_METHOD' at 'httpMethod' failed"
        " to satisfy constraint: Member must satisfy enum value set:"
        " [HEAD, POST, PATCH, DELETE, PUT, GET, OPTIONS]"
    )
    assert error["Error"]["Code"] == "ValidationException"
    assert error["Error"]["Message"] == recorded  # the enum in AWS's order, not the model's
    # test_create_api_destination_name_validation
    basic = {"BasicAuthParameters": {"Username": "user", "Password": "pass"}}
    connection = (
        await api.call(
            "create_connection", Name="d2-c", AuthorizationType="BASIC", AuthParameters=basic
        )
    )["ConnectionArn"]
    error = await api.error(
        "create_api_destination",
        Name="Invalid Name With Spaces!",
        ConnectionArn=connection,
        HttpMethod="POST",
        InvocationEndpoint="https://example.com/api",
    )
    assert error["Error"] == {
        "Code": "ValidationException",
        "Message": "1 validation error detected: Value 'Invalid Name With Spaces!' at 'name'"
        " failed to satisfy constraint: Member must satisfy regular expression pattern:"
        " [\\.\\-_A-Za-z0-9]+",
    }
