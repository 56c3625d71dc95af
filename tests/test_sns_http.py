"""SNS HTTP(S) subscriptions: confirmation, signed notifications, retries, dead letters.

The subscriber is a real HTTP server in the test; the topic is served by a
real endpoint and driven with boto3. Signatures are checked by a verifier
written from AWS's documented steps ("Verifying the signatures of Amazon
SNS messages"), not with the project's own code.
"""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from pipelines.api import ApiServer, served_services
from pipelines.runtime import Runtime

from .apiclient import PLUGINS, aws_call, aws_refusal, boto


def verify_sns_signature(message: dict[str, Any]) -> bool:
    """AWS's documented verification of an SNS message, step by step."""
    version = message["SignatureVersion"]
    assert version in ("1", "2")
    with urllib.request.urlopen(message["SigningCertURL"], timeout=10) as answer:
        certificate = x509.load_pem_x509_certificate(answer.read())
    if message["Type"] == "Notification":
        names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:  # SubscriptionConfirmation, UnsubscribeConfirmation
        names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    text = "".join(f"{n}\n{message[n]}\n" for n in names if n in message)
    key = certificate.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    try:
        key.verify(
            base64.b64decode(message["Signature"]), text.encode(), padding.PKCS1v15(), algorithm
        )
    except InvalidSignature:
        return False
    return True


async def verified(message: dict[str, Any]) -> bool:
    """``verify_sns_signature`` off the event loop (it fetches the certificate
    from the endpoint this loop serves)."""
    return await asyncio.to_thread(verify_sns_signature, message)


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.status == 200
        body: bytes = answer.read()
        return body


class Subscriber:
    """An HTTP endpoint recording what SNS posts; answers from ``statuses``."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        self.arrived = asyncio.Event()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> Subscriber:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._post)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def close(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _post(self, request: web.Request) -> web.Response:
        self.posts.append(
            ({k.lower(): v for k, v in request.headers.items()}, await request.read())
        )
        self.arrived.set()
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status)

    async def wait(self, count: int, timeout: float = 15.0) -> list[tuple[dict[str, str], bytes]]:
        async def enough() -> None:
            while len(self.posts) < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(enough(), timeout)
        return self.posts

    def messages(self, kind: str) -> list[dict[str, Any]]:
        return [
            json.loads(body)
            for headers, body in self.posts
            if headers.get("x-amz-sns-message-type") == kind
            and headers.get("x-amz-sns-rawdelivery") != "true"
        ]


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Runtime, ApiServer, Subscriber]]:
    runtime = Runtime(state_path=tmp_path / "state.db", plugins=PLUGINS)
    runtime.add_resource("dead", "recorder", {})
    server = ApiServer(runtime, served_services(PLUGINS), "127.0.0.1", 0)
    subscriber = await Subscriber().start()
    await server.start()
    try:
        async with runtime:
            yield runtime, server, subscriber
    finally:
        await server.close()
        await subscriber.close()


async def test_a_subscription_is_pending_until_confirmed_then_gets_signed_notifications(
    served: tuple[Runtime, ApiServer, Subscriber],
) -> None:
    _runtime, server, subscriber = served
    sns = boto("sns", server.url)
    topic = (await aws_call(sns, "create_topic", Name="alerts"))["TopicArn"]
    made = await aws_call(
        sns, "subscribe", TopicArn=topic, Protocol="http", Endpoint=f"{subscriber.url}/hook"
    )
    assert made["SubscriptionArn"] == "pending confirmation"
    listed = (await aws_call(sns, "list_subscriptions_by_topic", TopicArn=topic))["Subscriptions"]
    assert [s["SubscriptionArn"] for s in listed] == ["PendingConfirmation"]
    await subscriber.wait(1)
    (confirmation,) = subscriber.messages("SubscriptionConfirmation")
    assert confirmation["TopicArn"] == topic
    assert confirmation["SubscribeURL"].startswith(server.url)
    assert await verified(confirmation)
    # Nothing reaches a pending subscription.
    await aws_call(sns, "publish", TopicArn=topic, Message="too early")
    await asyncio.sleep(0.2)
    assert len(subscriber.posts) == 1
    refused = await aws_refusal(sns, "confirm_subscription", TopicArn=topic, Token="nope")
    assert refused.response["Error"]["Code"] == "InvalidParameter"
    confirmed = await aws_call(
        sns, "confirm_subscription", TopicArn=topic, Token=confirmation["Token"]
    )
    sub_arn = confirmed["SubscriptionArn"]
    assert sub_arn.startswith(f"{topic}:")
    attributes = (await aws_call(sns, "get_subscription_attributes", SubscriptionArn=sub_arn))[
        "Attributes"
    ]
    assert (attributes["PendingConfirmation"], attributes["Protocol"]) == ("false", "http")
    await aws_call(sns, "publish", TopicArn=topic, Message="disk full", Subject="ops")
    posts = await subscriber.wait(2)
    headers, body = posts[1]
    notification = json.loads(body)
    assert headers["x-amz-sns-message-type"] == "Notification"
    assert headers["x-amz-sns-topic-arn"] == topic
    assert headers["x-amz-sns-subscription-arn"] == sub_arn
    assert headers["x-amz-sns-message-id"] == notification["MessageId"]
    assert headers["content-type"].startswith("text/plain")
    assert (notification["Message"], notification["Subject"]) == ("disk full", "ops")
    assert notification["SignatureVersion"] == "1"
    assert await verified(notification)
    forged = {**notification, "Message": "disk fine"}
    assert not await verified(forged)  # the verifier can fail
    # SignatureVersion 2: SHA256.
    await aws_call(
        sns,
        "set_topic_attributes",
        TopicArn=topic,
        AttributeName="SignatureVersion",
        AttributeValue="2",
    )
    await aws_call(sns, "publish", TopicArn=topic, Message="v2")
    posts = await subscriber.wait(3)
    second = json.loads(posts[2][1])
    assert second["SignatureVersion"] == "2" and await verified(second)
    # The UnsubscribeURL ends the subscription.
    assert await asyncio.to_thread(fetch, second["UnsubscribeURL"])
    listed = (await aws_call(sns, "list_subscriptions_by_topic", TopicArn=topic))["Subscriptions"]
    assert listed == []


async def test_the_subscribe_url_confirms_and_raw_delivery_sends_the_message_alone(
    served: tuple[Runtime, ApiServer, Subscriber],
) -> None:
    _runtime, server, subscriber = served
    sns = boto("sns", server.url)
    topic = (await aws_call(sns, "create_topic", Name="raw"))["TopicArn"]
    await aws_call(
        sns,
        "subscribe",
        TopicArn=topic,
        Protocol="http",
        Endpoint=f"{subscriber.url}/raw",
        Attributes={"RawMessageDelivery": "true"},
    )
    await subscriber.wait(1)
    (confirmation,) = subscriber.messages("SubscriptionConfirmation")
    # As a subscriber's handler does: visit the SubscribeURL.
    assert b"<SubscriptionArn>" in await asyncio.to_thread(fetch, confirmation["SubscribeURL"])
    await aws_call(sns, "publish", TopicArn=topic, Message="just this")
    posts = await subscriber.wait(2)
    headers, body = posts[1]
    assert body == b"just this"
    assert headers["x-amz-sns-rawdelivery"] == "true"


async def test_failures_retry_by_the_delivery_policy_then_dead_letter(
    served: tuple[Runtime, ApiServer, Subscriber],
) -> None:
    _runtime, server, subscriber = served
    sns, sqs = boto("sns", server.url), boto("sqs", server.url)
    queue = (await aws_call(sqs, "create_queue", QueueName="sns-dlq"))["QueueUrl"]
    queue_arn = (
        await aws_call(sqs, "get_queue_attributes", QueueUrl=queue, AttributeNames=["QueueArn"])
    )["Attributes"]["QueueArn"]
    topic = (await aws_call(sns, "create_topic", Name="flaky"))["TopicArn"]
    policy = {"healthyRetryPolicy": {"numRetries": 1, "minDelayTarget": 1, "maxDelayTarget": 1}}
    await aws_call(
        sns,
        "subscribe",
        TopicArn=topic,
        Protocol="http",
        Endpoint=f"{subscriber.url}/flaky",
        Attributes={
            "DeliveryPolicy": json.dumps(policy),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": queue_arn}),
        },
    )
    await subscriber.wait(1)
    (confirmation,) = subscriber.messages("SubscriptionConfirmation")
    await aws_call(sns, "confirm_subscription", TopicArn=topic, Token=confirmation["Token"])
    # A server error is retried (once, by the policy) and then delivered.
    subscriber.statuses = [503, 200]
    await aws_call(sns, "publish", TopicArn=topic, Message="second time lucky")
    posts = await subscriber.wait(3)
    assert [json.loads(body)["Message"] for _, body in posts[1:]] == ["second time lucky"] * 2
    # A client error is not retried: the dead letter gets it at once.
    subscriber.statuses = [400]
    await aws_call(sns, "publish", TopicArn=topic, Message="refused")
    await subscriber.wait(4)
    got = await aws_call(
        sqs, "receive_message", QueueUrl=queue, WaitTimeSeconds=5, MessageAttributeNames=["All"]
    )
    (dead,) = got["Messages"]
    assert json.loads(dead["Body"])["Message"] == "refused"
    assert dead["MessageAttributes"]["ErrorCode"]["StringValue"] == "HTTPStatus400"
    await asyncio.sleep(0.3)
    assert len(subscriber.posts) == 4  # never retried


def test_the_delivery_policy_phases_give_each_retry_its_earliest_time() -> None:
    from pipelines.errors import Where
    from plugins.topic.endpoints import DeliveryPolicy

    policy = DeliveryPolicy.parse(
        Where("p"),
        {
            "healthyRetryPolicy": {
                "numRetries": 7,
                "numNoDelayRetries": 1,
                "numMinDelayRetries": 1,
                "numMaxDelayRetries": 2,
                "minDelayTarget": 2,
                "maxDelayTarget": 16,
                "backoffFunction": "exponential",
            }
        },
    )
    delays = [policy.delay(n) for n in range(1, 8)]
    # no delay, the minimum, three backoff steps from 2 to 16, then the maximum twice
    assert delays == pytest.approx([0, 2, 4, 8, 16, 16, 16])
    with pytest.raises(Exception, match="cover the other phases"):
        DeliveryPolicy.parse(
            Where("p"), {"healthyRetryPolicy": {"numRetries": 1, "numNoDelayRetries": 2}}
        )


async def test_a_declared_subscription_is_asked_to_confirm_and_rules_reach_it(
    tmp_path: Path,
) -> None:
    subscriber = await Subscriber().start()
    runtime = Runtime(state_path=tmp_path / "state.db", plugins=PLUGINS)
    runtime.add_resource(
        "alerts",
        "topic",
        {"subscriptions": [{"id": "ops", "endpoint": f"{subscriber.url}/ops"}]},
    )
    runtime.bus().put_rule("r", pattern={"source": ["mon"]})
    await runtime.bus().put_targets("r", [{"id": "t", "resource": "alerts"}])
    server = ApiServer(runtime, served_services(PLUGINS), "127.0.0.1", 0)
    await server.start()
    try:
        async with runtime:
            await subscriber.wait(1)
            (confirmation,) = subscriber.messages("SubscriptionConfirmation")
            assert await verified(confirmation)
            await asyncio.to_thread(fetch, confirmation["SubscribeURL"])
            entry = {"Source": "mon", "DetailType": "Alarm", "Detail": '{"level": 3}'}
            await runtime.put_events([entry])
            posts = await subscriber.wait(2)
            notification = json.loads(posts[1][1])
            assert await verified(notification)
    finally:
        await server.close()
        await subscriber.close()
    assert json.loads(notification["Message"])["detail"] == {"level": 3}
