"""The HTTP endpoint destination: Firehose's HTTP delivery contract.

A request is a POST of ``{"requestId", "timestamp" (ms), "records":
[{"data": base64}]}`` with the headers AWS sends (``X-Amz-Firehose-Protocol-Version``,
``-Request-Id``, ``-Source-Arn``, ``-Access-Key`` when one is configured,
``-Common-Attributes`` as ``{"commonAttributes": {...}}``), the body
gzipped when ContentEncoding is GZIP. Only a 200 whose JSON body carries the
same requestId counts as delivered; anything else (another status, a 2xx
that is not 200, a malformed or mismatched answer, no answer) is a failed
attempt. Failed attempts are tried again after AWS's backoff (1 s, doubling,
±15 % jitter, at most 2 minutes) until RetryOptions.DurationInSeconds has
passed since the first attempt; then the records go to the S3 backup as
error records (``http-endpoint-failed``). A 413 is not worth a retry: it
goes to the backup at once.

This module holds the contract (``HttpEndpoint``, ``parse_endpoint``,
``request_of``, ``judge``, ``backoff``); ``delivery.DeliveryStream`` calls it.
"""

from __future__ import annotations

import base64
import random
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

#: HttpEndpointBufferingHints (botocore's model: 1-64 MiB, 0-900 s) and
#: AWS's defaults for an HTTP endpoint (5 MiB, 300 s).
SIZE_RANGE = (1, 64)
INTERVAL_RANGE = (0, 900)
DEFAULT_SIZE_MB = 5
DEFAULT_INTERVAL = 300
#: RetryOptions.DurationInSeconds (0-7200 s, default 300).
RETRY_RANGE = (0, 7200)
DEFAULT_RETRY = 300
#: AWS's backoff: the first retry after 1 s, doubling, ±15 % jitter, capped.
BACKOFF_FIRST, BACKOFF_CAP, JITTER = 1.0, 120.0, 0.15
#: A request's limits: 10,000 records, 64 MiB of JSON before compression
#: (base64 grows data by a third: 48 MiB of records).
MAX_RECORDS = 10_000
MAX_REQUEST_DATA = 48 * 1024 * 1024
#: AWS waits 3 minutes for an answer.
TIMEOUT = 180.0
MAX_ATTRIBUTES = 50
PROTOCOL_VERSION = "1.0"
#: An error output type AWS names for this destination.
ERROR_TYPE = "http-endpoint-failed"
_URL = re.compile(r"^https?://[^\s/]+", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class HttpEndpoint:
    """What delivery needs of an HttpEndpointDestinationConfiguration
    (the S3Configuration is the ``Destination``'s bucket and prefixes)."""

    url: str
    name: str | None
    access_key: str | None
    gzip: bool
    attributes: Mapping[str, str]
    retry_duration: float
    backup_all: bool  # S3BackupMode AllData (else FailedDataOnly)


class EndpointSpecError(ValueError):
    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def _mapping(value: Any, path: tuple[str | int, ...]) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise EndpointSpecError(path, f"{path[-1]} must be an object")
    return value


def parse_endpoint(config: Mapping[str, Any]) -> HttpEndpoint:
    """The endpoint part of an HttpEndpointDestinationConfiguration, checked.
    An ``http://`` URL on any port is taken (AWS takes only https on 443):
    local endpoints and tests need it."""
    endpoint = _mapping(config.get("EndpointConfiguration"), ("EndpointConfiguration",))
    url = endpoint.get("Url")
    if not isinstance(url, str) or not _URL.match(url) or len(url) > 1000:
        raise EndpointSpecError(
            ("EndpointConfiguration", "Url"), f"Url {url!r} is not an http(s) URL"
        )
    name = endpoint.get("Name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise EndpointSpecError(("EndpointConfiguration", "Name"), "Name must be non-empty text")
    key = endpoint.get("AccessKey")
    if key is not None and (not isinstance(key, str) or len(key.encode()) > 4096):
        raise EndpointSpecError(
            ("EndpointConfiguration", "AccessKey"), "AccessKey must be text of 4096 bytes at most"
        )
    request = _mapping(config.get("RequestConfiguration"), ("RequestConfiguration",))
    encoding = request.get("ContentEncoding", "NONE")
    if encoding not in ("NONE", "GZIP"):
        raise EndpointSpecError(
            ("RequestConfiguration", "ContentEncoding"),
            f"ContentEncoding must be NONE or GZIP, not {encoding!r}",
        )
    attributes = _attributes(request.get("CommonAttributes"))
    retry = _mapping(config.get("RetryOptions"), ("RetryOptions",))
    duration = retry.get("DurationInSeconds", DEFAULT_RETRY)
    if (
        isinstance(duration, bool)
        or not isinstance(duration, int)
        or not RETRY_RANGE[0] <= duration <= RETRY_RANGE[1]
    ):
        raise EndpointSpecError(
            ("RetryOptions", "DurationInSeconds"),
            f"DurationInSeconds must be a whole number between {RETRY_RANGE[0]} and"
            f" {RETRY_RANGE[1]}",
        )
    mode = config.get("S3BackupMode", "FailedDataOnly")
    if mode not in ("FailedDataOnly", "AllData"):
        raise EndpointSpecError(
            ("S3BackupMode",), f"S3BackupMode must be FailedDataOnly or AllData, not {mode!r}"
        )
    return HttpEndpoint(
        url=url,
        name=name,
        access_key=key,
        gzip=encoding == "GZIP",
        attributes=attributes,
        retry_duration=float(duration),
        backup_all=mode == "AllData",
    )


def _attributes(given: Any) -> dict[str, str]:
    path: tuple[str | int, ...] = ("RequestConfiguration", "CommonAttributes")
    if given is None:
        return {}
    if not isinstance(given, list) or len(given) > MAX_ATTRIBUTES:
        raise EndpointSpecError(
            path, f"CommonAttributes must be a list of {MAX_ATTRIBUTES} at most"
        )
    found: dict[str, str] = {}
    for index, item in enumerate(given):
        name = item.get("AttributeName") if isinstance(item, Mapping) else None
        value = item.get("AttributeValue") if isinstance(item, Mapping) else None
        if not isinstance(name, str) or not name.strip() or not isinstance(value, str):
            raise EndpointSpecError(
                (*path, index), "an attribute needs AttributeName and AttributeValue (text)"
            )
        found[name] = value
    return found


def request_of(
    endpoint: HttpEndpoint,
    request_id: str,
    timestamp_ms: int,
    records: Sequence[bytes],
    source_arn: str,
) -> tuple[dict[str, str], bytes]:
    """A request's headers and body, as AWS sends them."""
    body = orjson.dumps(
        {
            "requestId": request_id,
            "timestamp": timestamp_ms,
            "records": [{"data": base64.b64encode(data).decode()} for data in records],
        }
    )
    headers = {
        "Content-Type": "application/json",
        "X-Amz-Firehose-Protocol-Version": PROTOCOL_VERSION,
        "X-Amz-Firehose-Request-Id": request_id,
        "X-Amz-Firehose-Source-Arn": source_arn,
    }
    if endpoint.access_key is not None:
        headers["X-Amz-Firehose-Access-Key"] = endpoint.access_key
    if endpoint.attributes:
        headers["X-Amz-Firehose-Common-Attributes"] = orjson.dumps(
            {"commonAttributes": dict(endpoint.attributes)}
        ).decode()
    if endpoint.gzip:
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
        body = compressor.compress(body) + compressor.flush()
        headers["Content-Encoding"] = "gzip"
    return headers, body


@dataclass(frozen=True, slots=True)
class Verdict:
    """An attempt's outcome: delivered, or why not and whether to try again."""

    delivered: bool
    retry: bool = True
    code: str = ""
    message: str = ""


def judge(status: int, body: bytes, request_id: str) -> Verdict:
    """An answer as Firehose reads it: a 200 with the same requestId only."""
    if status != 200:
        text = body[:1024].decode("utf-8", "replace")
        message = (
            f"The following response was received from the endpoint destination. {status}: {text}"
        )
        # A 413 would fail the same way again: AWS does not retry it.
        return Verdict(False, status != 413, "HttpEndpoint.DestinationException", message)
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Verdict(
            False, True, "HttpEndpoint.InvalidResponseFromDestination", "the answer is not JSON"
        )
    given = answer.get("requestId") if isinstance(answer, dict) else None
    if given != request_id:
        return Verdict(
            False,
            True,
            "HttpEndpoint.InvalidResponseFromDestination",
            f"the answer's requestId {given!r} is not the request's {request_id!r}",
        )
    return Verdict(True)


def backoff(retry: int, rng: random.Random | None = None) -> float:
    """The wait before retry number ``retry`` (1 for the first)."""
    base = min(BACKOFF_FIRST * 2 ** (retry - 1), BACKOFF_CAP)
    spread = (rng or random).uniform(-JITTER, JITTER)
    return float(base * (1 + spread))
