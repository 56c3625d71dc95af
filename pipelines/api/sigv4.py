"""Checking a request's SigV4 signature against the endpoint's access keys (strict mode).

Without access keys the endpoint takes any signature, as LocalStack and moto
do: the credential scope only routes. With them, every request must be
signed by one of them: the canonical request is rebuilt from what arrived,
with botocore's own SigV4 code (the code that signed it on the client's
side), and the signatures compared. The errors are AWS's, in each
protocol's codes.
"""

from __future__ import annotations

import datetime as dt
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from pipelines.api.errors import ApiError

_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<key>[^/\s,]+)/(?P<date>\d{8})/(?P<region>[^/\s,]+)/"
    r"(?P<service>[^/\s,]+)/aws4_request,\s*SignedHeaders=(?P<signed>[^,\s]+),\s*"
    r"Signature=(?P<signature>[0-9a-f]+)"
)
#: A presigned URL's ``X-Amz-Credential``: key/date/region/service/aws4_request.
CREDENTIAL = re.compile(r"([^/\s]+)/(\d{8})/([^/\s]+)/([^/\s]+)/aws4_request")
#: The longest a presigned URL may last (SigV4: seven days).
MAX_EXPIRES = 604_800
#: How far a request's time may be from ours (AWS: 15 minutes).
SKEW = dt.timedelta(minutes=15)
_INVALID_TOKEN = "The security token included in the request is invalid."
_MISMATCH = (
    "The request signature we calculated does not match the signature you provided."
    " Check your AWS Secret Access Key and signing method. Consult the service"
    " documentation for details."
)


@dataclass(frozen=True, slots=True)
class AccessKey:
    """A key the endpoint accepts: its secret and the account it acts as."""

    secret: str
    account: str
    #: The organization the account belongs to (bus policies' aws:PrincipalOrgID).
    org: str | None = None


def _refused(query: bool, json_code: str, query_code: str, message: str) -> ApiError:
    # JSON services answer these with 400, query services with 403.
    return ApiError(query_code if query else json_code, message, 403 if query else 400)


def verify(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    keys: Mapping[str, AccessKey],
    now: dt.datetime,
    *,
    query: bool,
) -> str:
    """The access key that signed the request; raises AWS's error otherwise.

    ``headers`` holds each header once, by lower-case name (repeated ones
    joined with commas, as SigV4 does).
    """
    found = _AUTHORIZATION.search(headers.get("authorization", ""))
    if found is None and "X-Amz-Signature=" in urlsplit(url).query:
        return _verify_presigned(method, url, headers, body, keys, now, query=query)
    if found is None:
        raise _refused(
            query,
            "MissingAuthenticationTokenException",
            "MissingAuthenticationToken",
            "Missing Authentication Token",
        )
    key = keys.get(found["key"])
    if key is None:
        raise _refused(query, "UnrecognizedClientException", "InvalidClientTokenId", _INVALID_TOKEN)
    stamp = headers.get("x-amz-date", "")
    try:
        when = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise _refused(
            query,
            "IncompleteSignatureException",
            "IncompleteSignature",
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        ) from None
    if abs(now - when) > SKEW:
        earliest = (now - SKEW).strftime("%Y%m%dT%H%M%SZ")
        raise _refused(
            query,
            "InvalidSignatureException",
            "SignatureDoesNotMatch",
            f"Signature expired: {stamp} is now earlier than {earliest}"
            f" ({now.strftime('%Y%m%dT%H%M%SZ')} - 15 min.)",
        )
    request = _request(method, url, headers, found["signed"], body, stamp)
    scope = (found["key"], key.secret, found["service"], found["region"])
    _check(request, scope, found["signature"], query=query)
    return found["key"]


def _request(
    method: str, url: str, headers: Mapping[str, str], signed: str, body: bytes, stamp: str
) -> AWSRequest:
    """The request as its signer saw it: the signed headers only, its time."""
    names = signed.split(";")
    request = AWSRequest(
        method=method, url=url, headers={name: headers.get(name, "") for name in names}, data=body
    )
    request.context["timestamp"] = stamp
    return request


def _check(
    request: AWSRequest, scope: tuple[str, str, str, str], given: str, *, query: bool
) -> None:
    """Raise AWS's mismatch unless ``given`` is the request's SigV4 signature
    by (key, secret, service, region), computed with botocore's own signer."""
    key_id, secret, service, region = scope
    signer = SigV4Auth(Credentials(key_id, secret), service, region)
    expected = signer.signature(
        signer.string_to_sign(request, signer.canonical_request(request)), request
    )
    if not hmac.compare_digest(expected, given):
        raise _refused(query, "InvalidSignatureException", "SignatureDoesNotMatch", _MISMATCH)


def _verify_presigned(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    keys: Mapping[str, AccessKey],
    now: dt.datetime,
    *,
    query: bool,
) -> str:
    """A presigned URL: the signature and its parameters in the query string
    (what an SDK's ``generate_presigned_url`` makes). The canonical request
    is the URL without ``X-Amz-Signature``, as the signer built it."""
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    credential = CREDENTIAL.fullmatch(params.get("X-Amz-Credential", ""))
    needed = ("X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature")
    if (
        params.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256"
        or credential is None
        or any(name not in params for name in needed)
    ):
        raise _refused(
            query,
            "IncompleteSignatureException",
            "IncompleteSignature",
            "A presigned URL needs X-Amz-Algorithm=AWS4-HMAC-SHA256, X-Amz-Credential,"
            f" {', '.join(needed)}",
        )
    key_id, _, region, service = credential.groups()
    key = keys.get(key_id)
    if key is None:
        raise _refused(query, "UnrecognizedClientException", "InvalidClientTokenId", _INVALID_TOKEN)
    stamp, lasts = params["X-Amz-Date"], params["X-Amz-Expires"]
    try:
        when = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        seconds = int(lasts)
    except ValueError:
        seconds = -1
    if not 0 <= seconds <= MAX_EXPIRES:
        raise _refused(
            query,
            "IncompleteSignatureException",
            "IncompleteSignature",
            f"X-Amz-Date must be yyyymmddThhmmssZ and X-Amz-Expires 0 to {MAX_EXPIRES}"
            f" seconds, not {stamp!r} and {lasts!r}",
        )
    if now > when + dt.timedelta(seconds=seconds) or when - now > SKEW:
        raise _refused(
            query,
            "InvalidSignatureException",
            "SignatureDoesNotMatch",
            f"Signature expired: the URL signed at {stamp} for {seconds} seconds"
            f" is not valid at {now.strftime('%Y%m%dT%H%M%SZ')}",
        )
    # The query as sent, less the signature (the signer's canonical request
    # had every other parameter, encoded as they arrive).
    unsigned = "&".join(
        pair for pair in parts.query.split("&") if not pair.startswith("X-Amz-Signature=")
    )
    url = urlunsplit(parts._replace(query=unsigned))
    request = _request(method, url, headers, params["X-Amz-SignedHeaders"], body, stamp)
    _check(request, (key_id, key.secret, service, region), params["X-Amz-Signature"], query=query)
    return key_id
