"""The endpoint's strict mode (SigV4 signatures checked against configured keys) and TLS."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from pipelines.api import ApiServer, served_services
from pipelines.api.server import ApiSettings
from pipelines.api.sigv4 import AccessKey
from pipelines.config import ConfigInvalid, load_config
from pipelines.runtime import Runtime

KEYS = {"AKIDSTRICT": AccessKey("s3cret", "123456789012")}


@pytest.fixture
async def strict() -> AsyncIterator[ApiServer]:
    # The key's account owns the buses (bus permissions: another account's
    # entries would need a bus policy).
    runtime = Runtime(account="123456789012")
    server = ApiServer(runtime, served_services(), settings=ApiSettings(access_keys=KEYS))
    await server.start()
    try:
        async with runtime:
            yield server
    finally:
        await server.close()


def _events(url: str, key: str, secret: str, **options: Any) -> Any:
    return boto3.client(
        "events",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        **options,
    )


async def _error(client: Any, operation: str, **params: Any) -> dict[str, Any]:
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await asyncio.to_thread(getattr(client, operation), **params)
    return raised.value.response


async def test_a_request_signed_by_a_configured_key_is_served(strict: ApiServer) -> None:
    client = _events(strict.url, "AKIDSTRICT", "s3cret")
    listed = await asyncio.to_thread(client.list_event_buses)
    assert [bus["Name"] for bus in listed["EventBuses"]] == ["default"]
    put = await asyncio.to_thread(
        client.put_events, Entries=[{"Source": "s", "DetailType": "d", "Detail": "{}"}]
    )
    assert put["FailedEntryCount"] == 0


async def test_a_wrong_secret_or_an_unknown_key_is_refused_as_aws_does(strict: ApiServer) -> None:
    wrong = await _error(_events(strict.url, "AKIDSTRICT", "guess"), "list_rules")
    assert wrong["Error"]["Code"] == "InvalidSignatureException"
    assert wrong["Error"]["Message"].startswith(
        "The request signature we calculated does not match the signature you provided."
    )
    assert wrong["ResponseMetadata"]["HTTPStatusCode"] == 400
    unknown = await _error(_events(strict.url, "AKIDOTHER", "s3cret"), "list_rules")
    assert unknown["Error"] == {
        "Code": "UnrecognizedClientException",
        "Message": "The security token included in the request is invalid.",
    }


def _send(url: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def test_an_unsigned_or_stale_request_is_refused(strict: ApiServer) -> None:
    body = b"{}"
    headers = {"X-Amz-Target": "AWSEvents.ListRules", "Content-Type": "application/x-amz-json-1.1"}
    status, answer = await asyncio.to_thread(_send, strict.url, headers, body)
    assert (status, answer["__type"]) == (400, "MissingAuthenticationTokenException")
    # Signed correctly, but 20 minutes ago: AWS allows 15.
    then = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20)
    stamp = then.strftime("%Y%m%dT%H%M%SZ")
    request = AWSRequest(
        method="POST",
        url=strict.url + "/",
        headers={**headers, "X-Amz-Date": stamp, "Host": strict.url.split("//")[1]},
        data=body,
    )
    request.context["timestamp"] = stamp
    signer = SigV4Auth(Credentials("AKIDSTRICT", "s3cret"), "events", "us-east-1")
    canonical = signer.canonical_request(request)
    signature = signer.signature(signer.string_to_sign(request, canonical), request)
    authorization = (
        f"AWS4-HMAC-SHA256 Credential=AKIDSTRICT/{stamp[:8]}/us-east-1/events/aws4_request,"
        f" SignedHeaders={signer.signed_headers(signer.headers_to_sign(request))},"
        f" Signature={signature}"
    )
    status, answer = await asyncio.to_thread(
        _send, strict.url + "/", {**dict(request.headers), "Authorization": authorization}, body
    )
    assert status == 400
    assert answer["__type"] == "InvalidSignatureException"
    assert answer["message"].startswith(f"Signature expired: {stamp} is now earlier than ")


def _certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls_serves_https_with_the_configured_certificate(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    runtime = Runtime()
    server = ApiServer(runtime, served_services(), settings=ApiSettings(certificate=cert, key=key))
    await server.start()
    try:
        async with runtime:
            assert server.url.startswith("https://127.0.0.1:")
            client = _events(server.url, "AKID", "secret", verify=str(cert))
            listed = await asyncio.to_thread(client.list_event_buses)
            assert listed["EventBuses"][0]["Name"] == "default"
            untrusted = _events(server.url, "AKID", "secret")  # the system's CAs only
            with pytest.raises(botocore.exceptions.SSLError):
                await asyncio.to_thread(untrusted.list_event_buses)
            context = ssl.create_default_context(cafile=str(cert))

            def unrouted() -> int:
                try:
                    urllib.request.urlopen(server.url, timeout=5, context=context)
                except urllib.error.HTTPError as error:
                    return error.code
                return 200

            assert await asyncio.to_thread(unrouted) == 400  # TLS held; no service named
            with pytest.raises((urllib.error.URLError, ConnectionError)):
                # plain HTTP to the TLS port gets no answer
                await asyncio.to_thread(
                    urllib.request.urlopen, server.url.replace("https", "http"), timeout=5
                )
    finally:
        await server.close()


def test_the_config_declares_keys_and_tls_and_each_problem_has_its_place(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        "api:\n"
        "  listen: 127.0.0.1:4010\n"
        "  access_keys:\n"
        "    AKIDONE: {secret: s1, account: '111122223333'}\n"
        "  tls: {certificate: cert.pem, key: key.pem}\n"
    )
    settings = load_config(config).api
    assert settings is not None
    assert (settings.host, settings.port) == ("127.0.0.1", 4010)
    assert settings.access_keys == {"AKIDONE": AccessKey("s1", "111122223333")}
    assert (settings.certificate, settings.key) == (cert, key)
    config.write_text(
        "api:\n"
        "  listen: nowhere\n"
        "  access_keys:\n"
        "    AKIDONE: {account: '1'}\n"
        "    AKIDTWO: {secret: s, account: '12'}\n"
        "  tls: {certificate: missing.pem, key: key.pem}\n"
        "  strict: true\n"
    )
    with pytest.raises(ConfigInvalid) as caught:
        load_config(config)
    assert [str(p).replace(f"{config}:", "") for p in caught.value.problems] == [
        "2:3: api: 'nowhere' is not HOST:PORT",
        "4:5: api: needs a secret (use ${VAR} to keep it out of the file)",
        "5:26: api: '12' is not a 12-digit account",
        f"6:9: api: {tmp_path / 'missing.pem'} is not a file",
        "7:3: api: 'strict': unknown setting (allowed: access_keys, console, listen, tls)",
    ]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _sns(url: str, key: str, secret: str) -> Any:
    return boto3.client(
        "sns",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )


async def test_a_presigned_url_is_served_until_it_expires(strict: ApiServer) -> None:
    # generate_presigned_url signs a query-protocol service's form in the URL
    # (Action=ListTopics...), the signature in X-Amz-Signature: a plain GET.
    # The method is signed too: GET, as the URL is used. (A JSON service's
    # presigned URL signs headers a plain GET does not send.)
    client = _sns(strict.url, "AKIDSTRICT", "s3cret")
    good = client.generate_presigned_url("list_topics", ExpiresIn=60, HttpMethod="GET")
    assert "X-Amz-Signature=" in good and "Authorization" not in good
    status, body = await asyncio.to_thread(_get, good)
    assert status == 200, body
    assert "<ListTopicsResponse" in body
    # A parameter changed after signing breaks the signature.
    status, body = await asyncio.to_thread(
        _get, good.replace("Action=ListTopics", "Action=ListTopics&NextToken=x")
    )
    assert status == 403 and "<Code>SignatureDoesNotMatch</Code>" in body
    forged = _sns(strict.url, "AKIDSTRICT", "guess").generate_presigned_url(
        "list_topics", HttpMethod="GET"
    )
    status, body = await asyncio.to_thread(_get, forged)
    assert status == 403 and "<Code>SignatureDoesNotMatch</Code>" in body
    unknown = _sns(strict.url, "AKIDOTHER", "s3cret").generate_presigned_url(
        "list_topics", HttpMethod="GET"
    )
    status, body = await asyncio.to_thread(_get, unknown)
    assert status == 403 and "<Code>InvalidClientTokenId</Code>" in body
    short = client.generate_presigned_url("list_topics", ExpiresIn=1, HttpMethod="GET")
    await asyncio.sleep(2.1)
    status, body = await asyncio.to_thread(_get, short)
    assert status == 403 and "Signature expired" in body
