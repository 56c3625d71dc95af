"""The HTTP Task: ``arn:aws:states:::http:invoke`` through a ``connection``.

A Task state calls an HTTP API as Step Functions' HTTP Task does:

- ``ApiEndpoint`` (an http or https URL; AWS takes https only, a local
  server is http), ``Method`` (GET, POST, PUT, DELETE, PATCH, OPTIONS,
  HEAD), ``Authentication.ConnectionArn`` (the runtime's ``connection``
  resource, by its ARN or its name: BASIC, API_KEY or OAuth client
  credentials, ``pipelines.http.auth``; its header, query and body
  parameters are added, over the task's), ``Headers``, ``QueryParameters``,
  ``RequestBody`` (an object or array is sent as JSON, a string as it is)
  and ``Transform`` (``RequestBodyEncoding: URL_ENCODED`` sends the body as
  a form, arrays by ``RequestEncodingOptions.ArrayFormat``: INDICES (the
  default), REPEAT, COMMAS or BRACKETS);
- the headers Step Functions adds: ``User-Agent:
  Amazon|StepFunctions|HttpInvoke|REGION`` and ``Range: bytes=0-262144``;
- the result: ``{Headers: {name: [values]}, ResponseBody, StatusCode,
  StatusText}``, the body parsed when it is JSON (else its text), at most
  256 KiB of it read;
- a status outside 2xx fails the task with ``States.Http.StatusCode.NNN``
  (the cause: the result above, as JSON); no answer within 60 s, or no
  connection, with ``States.Http.Socket``.

Each call has its own HTTP client (one connection, closed after the call):
an execution's calls are few and far between, and nothing outlives the task.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from typing import Any

from pipelines.errors import DeliveryError
from pipelines.http.auth import Authorization, Request, TokenFetcher
from pipelines.http.client import HttpClient, RequestFailed, Sent, header_safe
from plugins.states.errors import StatesError

Json = Any

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD")
ARRAY_FORMATS = ("INDICES", "REPEAT", "COMMAS", "BRACKETS")
TIMEOUT = 60.0
#: What AWS reads of an answer (the Range it asks for).
BODY_LIMIT = 262_144
SOCKET = "States.Http.Socket"


def _invalid(message: str) -> StatesError:
    return StatesError("States.Runtime", f"The HTTP Task's Parameters are not valid: {message}")


def connection_name(arn: str) -> str:
    """A connection's name from its ARN (``...:connection/NAME/ID``) or the name."""
    if arn.startswith("arn:") and ":connection/" in arn:
        return arn.split(":connection/", 1)[1].split("/", 1)[0]
    return arn


def prepared(parameters: Mapping[str, Json], region: str) -> tuple[Request, str | None]:
    """The request the parameters describe (before the connection is applied),
    and how its body is encoded (``URL_ENCODED`` or None)."""
    endpoint = parameters.get("ApiEndpoint")
    if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
        raise _invalid("ApiEndpoint must be an http or https URL")
    method = parameters.get("Method")
    if method not in METHODS:
        raise _invalid(f"Method must be one of {', '.join(METHODS)}")
    headers = {"User-Agent": f"Amazon|StepFunctions|HttpInvoke|{region}"}
    given = parameters.get("Headers") or {}
    if not isinstance(given, Mapping):
        raise _invalid("Headers must be an object")
    for name, value in given.items():
        headers[str(name)] = header_safe(value if isinstance(value, str) else _json(value))
    headers["Range"] = f"bytes=0-{BODY_LIMIT}"
    query = parameters.get("QueryParameters") or {}
    if not isinstance(query, Mapping):
        raise _invalid("QueryParameters must be an object")
    params = {str(k): v if isinstance(v, str) else _json(v) for k, v in query.items()}
    transform = parameters.get("Transform") or {}
    encoding = transform.get("RequestBodyEncoding", "NONE") if isinstance(transform, dict) else None
    if encoding not in ("NONE", "URL_ENCODED"):
        raise _invalid("Transform.RequestBodyEncoding must be NONE or URL_ENCODED")
    request = Request(str(method), endpoint, headers, params, parameters.get("RequestBody"))
    return request, "URL_ENCODED" if encoding == "URL_ENCODED" else None


def encoded_body(request: Request, encoding: str | None, transform: Json) -> bytes | None:
    """The body's bytes, with the Content-Type it implies unless one was given."""
    body = request.body
    if body is None or request.method in ("GET", "HEAD"):
        return None
    if encoding == "URL_ENCODED" and isinstance(body, Mapping):
        options = transform.get("RequestEncodingOptions", {}) if isinstance(transform, dict) else {}
        array_format = options.get("ArrayFormat", "INDICES") if isinstance(options, dict) else ""
        if array_format not in ARRAY_FORMATS:
            raise _invalid(f"ArrayFormat must be one of {', '.join(ARRAY_FORMATS)}")
        _default_type(request, "application/x-www-form-urlencoded")
        return url_encoded(body, array_format).encode()
    if isinstance(body, str):
        return body.encode()
    _default_type(request, "application/json; charset=UTF-8")
    return _json(body).encode()


def _default_type(request: Request, content_type: str) -> None:
    if not any(name.lower() == "content-type" for name in request.headers):
        request.headers["Content-Type"] = content_type


def url_encoded(body: Mapping[str, Json], array_format: str) -> str:
    """A form of ``body``: nested objects as ``a[b]=v``, arrays by ``array_format``."""
    pairs: list[tuple[str, str]] = []

    def scalar(value: Json) -> str:
        if isinstance(value, str):
            return value
        return _json(value)

    def add(name: str, value: Json) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                add(f"{name}[{key}]", inner)
        elif isinstance(value, list):
            if array_format == "COMMAS":
                pairs.append((name, ",".join(scalar(item) for item in value)))
            for index, item in enumerate(value):
                if array_format == "INDICES":
                    add(f"{name}[{index}]", item)
                elif array_format == "BRACKETS":
                    add(f"{name}[]", item)
                elif array_format == "REPEAT":
                    add(name, item)
        else:
            pairs.append((name, scalar(value)))

    for key, value in body.items():
        add(str(key), value)
    return urllib.parse.urlencode(pairs)


def result_of(sent: Sent) -> dict[str, Json]:
    """The task's result: AWS's shape, the body parsed when it is JSON."""
    headers: dict[str, list[str]] = {}
    for name, value in sent.headers.items():
        # str(): aiohttp names headers with its own str subclass, which a
        # checkpoint (orjson) refuses as a key.
        headers.setdefault(str(name), []).append(value)
    text = sent.body.decode("utf-8", "replace")
    body: Json = text
    content_type = sent.headers.get("Content-Type", "")
    if text and "json" in content_type.lower():
        try:
            body = json.loads(text)
        except ValueError:
            body = text
    return {
        "Headers": headers,
        "ResponseBody": body,
        "StatusCode": sent.status,
        "StatusText": sent.reason,
    }


async def invoke(
    parameters: Mapping[str, Json], authorization: Authorization, region: str
) -> dict[str, Json]:
    """One HTTP Task call: its result, or ``StatesError`` as AWS names the failure."""
    request, encoding = prepared(parameters, region)
    transform = parameters.get("Transform")
    client = HttpClient(timeout=TIMEOUT, pool=1, body_kept=BODY_LIMIT + 1)
    fetch = TokenFetcher(client)
    try:
        sent = await _send(client, authorization, fetch, request, encoding, transform)
        if sent.status in (401, 407) and authorization.settings.oauth is not None:
            authorization.refused()  # the token may have expired early: once more, a new one
            request, encoding = prepared(parameters, region)
            sent = await _send(client, authorization, fetch, request, encoding, transform)
    finally:
        await client.close()
    result = result_of(sent)
    if not 200 <= sent.status < 300:
        raise StatesError(f"States.Http.StatusCode.{sent.status}", _json(result))
    return result


async def _send(
    client: HttpClient,
    authorization: Authorization,
    fetch: TokenFetcher,
    request: Request,
    encoding: str | None,
    transform: Json,
) -> Sent:
    try:
        await authorization.apply(request, fetch)
    except DeliveryError as error:  # an OAuth token endpoint that refused or did not answer
        raise StatesError(
            SOCKET, f"the connection's authorization failed: {error.message}"
        ) from None
    body = encoded_body(request, encoding, transform)
    try:
        return await client.send(
            request.method, request.url, headers=request.headers, params=request.params, body=body
        )
    except RequestFailed as error:
        raise StatesError(SOCKET, error.message) from None


def _json(value: Json) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
