"""SNS's HTTP(S) subscriptions: confirmation, signed notifications, delivery policy.

A subscription whose endpoint is an http(s) URL is pending until confirmed,
as SNS's are: it is sent a ``SubscriptionConfirmation`` (with a ``Token``
and a ``SubscribeURL``), and is confirmed by a GET of that URL or by
ConfirmSubscription with the token. A pending subscription gets no
notifications. Tokens and confirmations are kept by the topics' ``Keeper``
(``TopicState``, on the ``TopicStore``): on a state database they outlive a
restart and are one set for a cluster's runners, so a token sent by one
runner confirms on any, and a confirmed subscription gets notifications
from every runner. A declared subscription is confirmed for its endpoint:
a config that gives it another endpoint asks that one to confirm.

Every message (confirmations and notifications) is signed as SNS signs
them: the string to sign is the message's fields, each ``Name\\nValue\\n``
in SNS's order (``Message``, ``MessageId``, ``Subject`` if present,
``Timestamp``, ``TopicArn``, ``Type`` for a notification; ``Message``,
``MessageId``, ``SubscribeURL``, ``Timestamp``, ``Token``, ``TopicArn``,
``Type`` for a confirmation), signed with RSA (PKCS #1 v1.5) over SHA1 for
``SignatureVersion`` 1, SHA256 for 2, in base64. The key is made when the
first HTTP subscription needs it; its self-signed certificate is served at
``SigningCertURL`` on the runner's port, so a subscriber verifying by AWS's
documented steps (fetch the certificate, rebuild the string, check the
signature) accepts the messages; it must trust this certificate instead of
checking that the URL is an amazonaws.com one.

A notification is a POST with SNS's headers (``x-amz-sns-message-type``,
``-message-id``, ``-topic-arn``, ``-subscription-arn``,
``-rawdelivery``), ``Content-Type: text/plain; charset=UTF-8`` and the JSON
notification as body (the message alone with raw message delivery). A 2xx
answer delivers it; 429, 5xx, a timeout (15 s) or a connection error is
retried by the subscription's delivery policy (SNS's default: 3 retries,
20 s apart; a policy's phases give each retry's earliest time, and the
rule's retries, which carry the topic's delivery, wait at least that long);
any other answer goes to the subscription's dead letter at once.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import secrets
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pipelines.errors import ConfigError, DeliveryError, Where
from pipelines.event import format_time_ms
from pipelines.http.client import HttpClient, RequestFailed
from pipelines.routes import HttpRequest, HttpResponse, Routes

if TYPE_CHECKING:
    from pipelines.targets import TargetServices

log = logging.getLogger("plugins.topic")

CERT_PATH = "/SimpleNotificationService-pipelines.pem"
CONFIRM_PATH = "/sns/confirm"
UNSUBSCRIBE_PATH = "/sns/unsubscribe"
TIMEOUT = 15.0
_NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_CONFIRMATION_FIELDS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
_POLICY_KEYS = (
    "minDelayTarget",
    "maxDelayTarget",
    "numRetries",
    "numNoDelayRetries",
    "numMinDelayRetries",
    "numMaxDelayRetries",
    "backoffFunction",
)
BACKOFF_FUNCTIONS = ("linear", "arithmetic", "geometric", "exponential")


def string_to_sign(message: Mapping[str, Any]) -> bytes:
    """SNS's string to sign for a message (notification or confirmation)."""
    kind = message.get("Type")
    fields = _NOTIFICATION_FIELDS if kind == "Notification" else _CONFIRMATION_FIELDS
    return "".join(
        f"{name}\n{message[name]}\n" for name in fields if message.get(name) is not None
    ).encode()


class Signer:
    """An RSA key and its self-signed certificate (made once, in a thread)."""

    def __init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.pipelines.invalid")])
        now = dt.datetime.now(dt.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .sign(self._key, hashes.SHA256())
        )
        self.pem = certificate.public_bytes(serialization.Encoding.PEM)

    def sign(self, message: Mapping[str, Any], version: str) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        algorithm = hashes.SHA256() if version == "2" else hashes.SHA1()
        signed = self._key.sign(string_to_sign(message), padding.PKCS1v15(), algorithm)
        return base64.b64encode(signed).decode()


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """SNS's ``healthyRetryPolicy`` for HTTP(S) subscriptions."""

    min_delay: float = 20.0
    max_delay: float = 20.0
    retries: int = 3
    no_delay: int = 0
    min_delay_retries: int = 0
    max_delay_retries: int = 0
    backoff: str = "linear"

    @classmethod
    def parse(cls, where: Where, given: Any) -> DeliveryPolicy:
        """AWS's DeliveryPolicy JSON (text or mapping): ``{"healthyRetryPolicy": {...}}``."""
        if isinstance(given, str):
            try:
                given = json.loads(given)
            except ValueError:
                raise ConfigError(where, "is not JSON") from None
        policy = given.get("healthyRetryPolicy", {}) if isinstance(given, Mapping) else None
        if not isinstance(policy, Mapping):
            raise ConfigError(where, 'must be {"healthyRetryPolicy": {...}}')
        unknown = sorted(set(policy) - set(_POLICY_KEYS))
        if unknown:
            raise ConfigError(where / "healthyRetryPolicy" / unknown[0], "is not a policy key")
        numbers: dict[str, int] = {}
        for key in _POLICY_KEYS[:-1]:
            value = policy.get(key, getattr(cls(), _FIELDS[key]))
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or value != int(value)
                or value < 0
            ):
                raise ConfigError(where / "healthyRetryPolicy" / key, "must be a whole number >= 0")
            numbers[key] = int(value)
        backoff = str(policy.get("backoffFunction", "linear")).lower()
        if backoff not in BACKOFF_FUNCTIONS:
            raise ConfigError(
                where / "healthyRetryPolicy" / "backoffFunction",
                f"must be one of {', '.join(BACKOFF_FUNCTIONS)}",
            )
        made = cls(**{_FIELDS[key]: value for key, value in numbers.items()}, backoff=backoff)
        if not 1 <= made.min_delay <= made.max_delay <= 3600:
            raise ConfigError(
                where / "healthyRetryPolicy",
                "minDelayTarget must be at least 1 and at most maxDelayTarget (at most 3600)",
            )
        if (
            made.retries > 100
            or made.no_delay + made.min_delay_retries + made.max_delay_retries > made.retries
        ):
            raise ConfigError(
                where / "healthyRetryPolicy" / "numRetries",
                "must be at most 100 and cover the other phases' retries",
            )
        return made

    def delay(self, retry: int) -> float:
        """The earliest time, in seconds after the failed attempt, of retry
        ``retry`` (1 for the first) by the policy's phases."""
        if retry <= self.no_delay:
            return 0.0
        if retry <= self.no_delay + self.min_delay_retries:
            return self.min_delay
        backoff = self.retries - self.no_delay - self.min_delay_retries - self.max_delay_retries
        step = retry - self.no_delay - self.min_delay_retries
        if step > backoff or backoff <= 0:
            return self.max_delay
        share = step / backoff
        if self.backoff in ("exponential", "geometric"):
            return float(self.min_delay * (self.max_delay / self.min_delay) ** share)
        return self.min_delay + (self.max_delay - self.min_delay) * share


_FIELDS = {
    "minDelayTarget": "min_delay",
    "maxDelayTarget": "max_delay",
    "numRetries": "retries",
    "numNoDelayRetries": "no_delay",
    "numMinDelayRetries": "min_delay_retries",
    "numMaxDelayRetries": "max_delay_retries",
}


@dataclass(frozen=True, slots=True)
class LambdaFields:
    """What Lambda's SNS record adds to the notification (its casing: ``Url``)."""

    signature: str
    signing_cert_url: str
    unsubscribe_url: str


class Keeper(Protocol):
    """Where HTTP(S) subscriptions' tokens and confirmations are kept (the
    topics' ``TopicState``)."""

    async def add_token(
        self, token: str, topic: str, topic_arn: str, sub_id: str, endpoint: str
    ) -> None:
        """A confirmation request carrying ``token`` is about to be sent."""

    async def confirm(self, topic_arn: str, token: str) -> tuple[str, str] | None:
        """Confirm what ``token`` was sent for: (topic, subscription id), or
        None for a token that does not wait for ``topic_arn``."""

    async def unsubscribe(self, topic: str, sub_id: str) -> None:
        """An UnsubscribeURL was visited."""


class HttpEndpoints:
    """What a runtime's topics share for HTTP(S) subscriptions: the signer,
    one HTTP client, the confirmations (as their ``Keeper`` last loaded
    them), and the routes on the runner's port (the certificate,
    SubscribeURL, UnsubscribeURL)."""

    def __init__(self, keeper: Keeper) -> None:
        self.keeper = keeper
        self.signer: Signer | None = None
        self.client: HttpClient | None = None
        self.base_url: str | None = None
        #: (topic, subscription id) -> the endpoint confirmed (the keeper's view).
        self.confirmed: dict[tuple[str, str], str] = {}
        self._users = 0
        self._routes: Routes | None = None
        self._removers: list[Callable[[], None]] = []
        self._lock = asyncio.Lock()

    async def start(self, services: TargetServices) -> None:
        """A topic starts: the first one serves the routes."""
        self._users += 1
        if self._users > 1:
            return
        self.client = HttpClient(timeout=TIMEOUT)
        await self.client.start()
        routes = services.routes
        self._removers = [
            routes.add(CERT_PATH, self._certificate, max_body=0),
            routes.add(CONFIRM_PATH, self._confirm_url, max_body=0),
            routes.add(UNSUBSCRIBE_PATH, self._unsubscribe_url, max_body=0),
        ]
        self._routes = routes

    async def stop(self) -> None:
        self._users -= 1
        if self._users > 0:
            return
        for remove in self._removers:
            remove()
        self._removers = []
        client, self.client = self.client, None
        if client is not None:
            await client.close()

    async def _signer(self) -> Signer:
        if self.signer is None:
            async with self._lock:
                if self.signer is None:
                    self.signer = await asyncio.to_thread(Signer)
        return self.signer

    def _base(self) -> str:
        base = self._routes.base_url if self._routes is not None else None
        if base is None:
            raise DeliveryError(
                "NoHttpPort",
                "HTTP(S) subscriptions need the runner's HTTP port (api: HOST:PORT)",
                retryable=True,
            )
        return base

    def is_confirmed(self, topic: str, sub_id: str, endpoint: str | None) -> bool:
        """Whether the subscription is confirmed for ``endpoint``."""
        return endpoint is not None and self.confirmed.get((topic, sub_id)) == endpoint

    async def request_confirmation(
        self, topic: str, topic_arn: str, sub_id: str, endpoint: str, version: str
    ) -> None:
        """Send the SubscriptionConfirmation (three tries, a second apart)."""
        token = secrets.token_hex(64)
        await self.keeper.add_token(token, topic, topic_arn, sub_id, endpoint)
        query = urllib.parse.urlencode({"TopicArn": topic_arn, "Token": token})
        base = self._base()
        message = {
            "Type": "SubscriptionConfirmation",
            "MessageId": str(uuid.uuid4()),
            "Token": token,
            "TopicArn": topic_arn,
            "Message": (
                f"You have chosen to subscribe to the topic {topic_arn}.\n"
                "To confirm the subscription, visit the SubscribeURL included in this message."
            ),
            "SubscribeURL": f"{base}{CONFIRM_PATH}?{query}",
            "Timestamp": _now(),
        }
        headers = self._headers("SubscriptionConfirmation", message["MessageId"], topic_arn, None)
        for attempt in range(3):
            try:
                await self._post(endpoint, message, headers, version, raw=None)
                return
            except DeliveryError as error:
                log.warning(
                    "topic %s: confirmation request to %s failed (%s)",
                    topic,
                    endpoint,
                    error.message,
                )
                if attempt < 2:
                    await asyncio.sleep(1.0)

    async def notify(
        self,
        endpoint: str,
        envelope: Mapping[str, Any],
        subscription_arn: str,
        version: str,
        raw: str | None,
    ) -> None:
        """POST one notification; ``DeliveryError`` (retryable or not) on failure."""
        base = self._base()
        message = dict(envelope)
        query = urllib.parse.urlencode({"SubscriptionArn": subscription_arn})
        message["UnsubscribeURL"] = f"{base}{UNSUBSCRIBE_PATH}?{query}"
        headers = self._headers(
            "Notification", str(message["MessageId"]), str(message["TopicArn"]), subscription_arn
        )
        headers["x-amz-sns-rawdelivery"] = "true" if raw is not None else "false"
        await self._post(endpoint, message, headers, version, raw=raw)

    async def lambda_fields(
        self, envelope: Mapping[str, Any], subscription_arn: str, version: str
    ) -> LambdaFields:
        """The Signature and URLs of Lambda's SNS record: signed as an HTTP(S)
        notification, with the URLs on the runner's port; empty when the
        runner serves no HTTP (no certificate to verify the signature by)."""
        base = self._routes.base_url if self._routes is not None else None
        if base is None:
            return LambdaFields("", "", "")
        signer = await self._signer()
        query = urllib.parse.urlencode({"SubscriptionArn": subscription_arn})
        return LambdaFields(
            signer.sign(envelope, version),
            f"{base}{CERT_PATH}",
            f"{base}{UNSUBSCRIBE_PATH}?{query}",
        )

    async def _post(
        self,
        endpoint: str,
        message: dict[str, Any],
        headers: dict[str, str],
        version: str,
        raw: str | None,
    ) -> None:
        client = self.client
        if client is None:
            raise DeliveryError("NotRunning", "the topic is not running", retryable=True)
        if raw is None:
            signer = await self._signer()
            message["SignatureVersion"] = version
            message["Signature"] = signer.sign(message, version)
            message["SigningCertURL"] = f"{self._base()}{CERT_PATH}"
            body = json.dumps(_ordered(message)).encode()
        else:
            body = raw.encode()
        try:
            sent = await client.send("POST", endpoint, headers=headers, body=body)
        except RequestFailed as error:
            raise DeliveryError(error.code, error.message, retryable=True) from None
        if 200 <= sent.status < 300:
            return
        text = f"the endpoint answered {sent.status}: {sent.text()}"
        retryable = sent.status == 429 or sent.status >= 500
        raise DeliveryError(f"HTTPStatus{sent.status}", text, retryable=retryable)

    @staticmethod
    def _headers(kind: str, message_id: str, topic_arn: str, sub_arn: str | None) -> dict[str, str]:
        headers = {
            "x-amz-sns-message-type": kind,
            "x-amz-sns-message-id": message_id,
            "x-amz-sns-topic-arn": topic_arn,
            "Content-Type": "text/plain; charset=UTF-8",
            "User-Agent": "Amazon Simple Notification Service Agent",
        }
        if sub_arn is not None:
            headers["x-amz-sns-subscription-arn"] = sub_arn
        return headers

    # -- the routes --------------------------------------------------------

    async def _certificate(self, request: HttpRequest) -> HttpResponse:
        signer = await self._signer()
        return HttpResponse(200, signer.pem, {"Content-Type": "application/x-pem-file"})

    async def _confirm_url(self, request: HttpRequest) -> HttpResponse:
        confirmed = await self.keeper.confirm(
            request.query.get("TopicArn", ""), request.query.get("Token", "")
        )
        if confirmed is None:
            return _xml_error(400, "InvalidParameter", "Invalid parameter: Token")
        topic_arn = request.query["TopicArn"]
        return HttpResponse(
            200,
            (
                "<ConfirmSubscriptionResponse><ConfirmSubscriptionResult><SubscriptionArn>"
                f"{topic_arn}:{confirmed[1]}"
                "</SubscriptionArn></ConfirmSubscriptionResult></ConfirmSubscriptionResponse>"
            ).encode(),
            {"Content-Type": "text/xml"},
        )

    async def _unsubscribe_url(self, request: HttpRequest) -> HttpResponse:
        arn = request.query.get("SubscriptionArn", "")
        topic_arn, _, sub_id = arn.rpartition(":")
        topic = topic_arn.rsplit(":", 1)[-1]
        if not sub_id:
            return _xml_error(400, "InvalidParameter", "Invalid parameter: SubscriptionArn")
        await self.keeper.unsubscribe(topic, sub_id)
        return HttpResponse(
            200, b"<UnsubscribeResponse><UnsubscribeResult/></UnsubscribeResponse>", {}
        )


def _xml_error(status: int, code: str, message: str) -> HttpResponse:
    body = (
        f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
        f"<Message>{message}</Message></Error></ErrorResponse>"
    )
    return HttpResponse(status, body.encode(), {"Content-Type": "text/xml"})


def _now() -> str:
    return format_time_ms(dt.datetime.now(dt.UTC).timestamp())


_ORDER = (
    "Type",
    "MessageId",
    "Token",
    "TopicArn",
    "Subject",
    "Message",
    "SubscribeURL",
    "Timestamp",
    "SignatureVersion",
    "Signature",
    "SigningCertURL",
    "UnsubscribeURL",
    "MessageAttributes",
)


def _ordered(message: Mapping[str, Any]) -> dict[str, Any]:
    """The message's fields in the order SNS writes them."""
    ordered = {key: message[key] for key in _ORDER if key in message}
    ordered.update({key: value for key, value in message.items() if key not in ordered})
    return ordered
