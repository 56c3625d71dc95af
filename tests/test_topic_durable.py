"""What the SNS API changes of the topics outlives a restart on a state
database, and is one set for the runners of a cluster (one PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pipelines.api import ApiServer, served_services
from pipelines.runtime import Runtime
from plugins.topic.target import REFRESH

from . import functions
from .apiclient import PLUGINS, aws_call, aws_refusal, boto
from .helpers import eventually
from .test_sns_http import Subscriber, fetch, verified

DECLARED = "arn:aws:sns:us-east-1:000000000000:alerts"
SINK = "arn:aws:lambda:us-east-1:000000000000:function:sink"


def pipeline(state: str | None, runner: str | None = None) -> Runtime:
    """A runtime with a declared topic a rule delivers to, and a function
    (``tests.functions:echo``) API subscriptions deliver to."""
    runtime = Runtime(state_path=state, plugins=PLUGINS, runner=runner)
    runtime.add_resource("sink", "function", {"function": "tests.functions:echo"})
    runtime.add_resource("alerts", "topic", {"subscriptions": []})
    runtime.bus().put_rule("r", pattern={"source": ["mon"]})
    return runtime


def named(state: str, start: int) -> str | None:
    """A runner name for each start on PostgreSQL: a runner restarted at once
    under its old name may find the server still holding that name's lock
    (the session ends after the client's close), and be refused."""
    return None if state.endswith(".db") else f"start-{start}"


@asynccontextmanager
async def serving(runtime: Runtime) -> AsyncIterator[Any]:
    """The runtime running with its AWS endpoint: a boto3 sns client of it."""
    await runtime.bus().put_targets("r", [{"id": "t", "resource": "alerts"}])
    server = ApiServer(runtime, served_services(PLUGINS), "127.0.0.1", 0)
    await server.start()
    try:
        async with runtime:
            yield boto("sns", server.url)
    finally:
        await server.close()


def messages() -> list[str]:
    """The messages the sink function was handed (Lambda's SNS events)."""
    return [
        call["Records"][0]["Sns"]["Message"]
        for call in functions.calls
        if isinstance(call, dict) and "Records" in call
    ]


async def subscribe(sns: Any, topic: str, protocol: str, endpoint: str, **given: str) -> str:
    made = await aws_call(
        sns,
        "subscribe",
        TopicArn=topic,
        Protocol=protocol,
        Endpoint=endpoint,
        Attributes=given,
        ReturnSubscriptionArn=True,
    )
    return str(made["SubscriptionArn"])


async def test_what_the_api_made_outlives_a_restart(state_location: str) -> None:
    functions.calls.clear()
    subscriber = await Subscriber().start()
    try:
        async with serving(pipeline(state_location, named(state_location, 1))) as sns:
            # On the declared topic: a function with a filter policy, a confirmed HTTP endpoint.
            await subscribe(
                sns,
                DECLARED,
                "lambda",
                SINK,
                FilterPolicy='{"detail": {"level": ["high"]}}',
                FilterPolicyScope="MessageBody",
            )
            hook = await subscribe(sns, DECLARED, "http", f"{subscriber.url}/hook")
            await subscriber.wait(1)
            (confirmation,) = subscriber.messages("SubscriptionConfirmation")
            await asyncio.to_thread(fetch, confirmation["SubscribeURL"])
            # A topic of the API's own, with attributes, tags and a subscription.
            made = await aws_call(
                sns,
                "create_topic",
                Name="made",
                Attributes={"DisplayName": "Made"},
                Tags=[{"Key": "team", "Value": "ops"}],
            )
            await subscribe(sns, made["TopicArn"], "lambda", SINK)
            await aws_call(
                sns,
                "set_topic_attributes",
                TopicArn=DECLARED,
                AttributeName="SignatureVersion",
                AttributeValue="2",
            )
        assert functions.calls == []
        posts = len(subscriber.posts)
        # Restarted: a new runtime and endpoint on the same state.
        restarted = pipeline(state_location, named(state_location, 2))
        async with serving(restarted) as sns:
            detail = {"level": "high"}
            await restarted.put_events(
                [{"Source": "mon", "DetailType": "x", "Detail": json.dumps(detail)}]
            )
            await eventually(lambda: len(subscriber.posts) == posts + 1)
            notification = json.loads(subscriber.posts[-1][1])
            assert subscriber.posts[-1][0]["x-amz-sns-subscription-arn"] == hook
            assert notification["SignatureVersion"] == "2" and await verified(notification)
            await eventually(lambda: len(messages()) == 1)  # the filter policy holds
            assert json.loads(messages()[0])["detail"] == detail
            await restarted.put_events(
                [{"Source": "mon", "DetailType": "x", "Detail": '{"level": "low"}'}]
            )
            await eventually(lambda: len(subscriber.posts) == posts + 2)
            assert len(messages()) == 1
            # No new confirmation was asked of the confirmed endpoint.
            assert len(subscriber.messages("SubscriptionConfirmation")) == 1
            # The API's topic is back, as a resource, with what it had.
            listed = (await aws_call(sns, "list_topics"))["Topics"]
            assert sorted(t["TopicArn"] for t in listed) == [DECLARED, made["TopicArn"]]
            assert "made" in restarted.resource_names()
            attributes = await aws_call(sns, "get_topic_attributes", TopicArn=made["TopicArn"])
            assert attributes["Attributes"]["DisplayName"] == "Made"
            tags = await aws_call(sns, "list_tags_for_resource", ResourceArn=made["TopicArn"])
            assert tags["Tags"] == [{"Key": "team", "Value": "ops"}]
            await aws_call(sns, "publish", TopicArn=made["TopicArn"], Message="still here")
            assert messages()[-1] == "still here"
            # Deleted, it stays deleted.
            await aws_call(sns, "delete_topic", TopicArn=made["TopicArn"])
        async with serving(pipeline(state_location, named(state_location, 3))) as sns:
            listed = (await aws_call(sns, "list_topics"))["Topics"]
            assert [t["TopicArn"] for t in listed] == [DECLARED]
            by_topic = await aws_call(sns, "list_subscriptions_by_topic", TopicArn=DECLARED)
            assert len(by_topic["Subscriptions"]) == 2
    finally:
        await subscriber.close()
        functions.calls.clear()


async def test_without_a_state_database_the_api_changes_last_while_the_runtime_runs() -> None:
    functions.calls.clear()
    try:
        async with serving(pipeline(None)) as sns:
            made = await aws_call(sns, "create_topic", Name="made")
            await subscribe(sns, made["TopicArn"], "lambda", SINK)
            await subscribe(sns, DECLARED, "lambda", SINK)
            await aws_call(sns, "publish", TopicArn=made["TopicArn"], Message="one")
            await aws_call(sns, "publish", TopicArn=DECLARED, Message="two")
            assert messages() == ["one", "two"]
        async with serving(pipeline(None)) as sns:
            listed = (await aws_call(sns, "list_topics"))["Topics"]
            assert [t["TopicArn"] for t in listed] == [DECLARED]
            by_topic = await aws_call(sns, "list_subscriptions_by_topic", TopicArn=DECLARED)
            assert by_topic["Subscriptions"] == []
    finally:
        functions.calls.clear()


async def test_two_runners_share_the_topics(postgres_url: str) -> None:
    functions.calls.clear()
    subscriber = await Subscriber().start()
    first, second = pipeline(postgres_url, "a"), pipeline(postgres_url, "b")
    try:
        async with serving(first) as a, serving(second) as b:
            await aws_call(b, "list_topics")  # b has looked at the state just now
            # A subscription made through a's endpoint gets what b delivers
            # to the topic, once b has looked again (within REFRESH seconds):
            # from a rule, then from a publish through b's endpoint.
            sub = await subscribe(a, DECLARED, "lambda", SINK)
            await asyncio.sleep(REFRESH + 0.1)
            await second.put_events([{"Source": "mon", "DetailType": "x", "Detail": "{}"}])
            await eventually(lambda: len(messages()) == 1)
            assert json.loads(messages()[0])["source"] == "mon"
            await aws_call(b, "publish", TopicArn=DECLARED, Message="via b")
            assert messages()[-1] == "via b"  # b handed it over before answering
            # b's other operations see a's changes at once.
            by_topic = await aws_call(b, "list_subscriptions_by_topic", TopicArn=DECLARED)
            assert [s["SubscriptionArn"] for s in by_topic["Subscriptions"]] == [sub]
            # An HTTP endpoint subscribed through a, confirmed through b with
            # the token a sent, gets what b publishes, signed by b.
            hook = f"{subscriber.url}/hook"
            await aws_call(a, "subscribe", TopicArn=DECLARED, Protocol="http", Endpoint=hook)
            await subscriber.wait(1)
            (confirmation,) = subscriber.messages("SubscriptionConfirmation")
            confirmed = await aws_call(
                b, "confirm_subscription", TopicArn=DECLARED, Token=confirmation["Token"]
            )
            refused = await aws_refusal(
                a, "confirm_subscription", TopicArn=DECLARED, Token=confirmation["Token"]
            )
            assert refused.response["Error"]["Code"] == "InvalidParameter"  # used once
            await asyncio.sleep(REFRESH + 0.1)
            await aws_call(a, "publish", TopicArn=DECLARED, Message="to both")
            posts = await subscriber.wait(2)
            assert posts[1][0]["x-amz-sns-subscription-arn"] == confirmed["SubscriptionArn"]
            await aws_call(b, "publish", TopicArn=DECLARED, Message="from b")
            posts = await subscriber.wait(3)
            notification = json.loads(posts[2][1])
            assert notification["Message"] == "from b" and await verified(notification)
            # A topic made through a is b's at b's next request.
            made = (await aws_call(a, "create_topic", Name="made"))["TopicArn"]
            await subscribe(a, made, "lambda", SINK)
            await aws_call(b, "publish", TopicArn=made, Message="made on a")
            assert messages()[-1] == "made on a"
            assert "made" in second.resource_names()
            # FIFO sequence numbers count across the runners.
            fifo = await aws_call(
                b,
                "create_topic",
                Name="t.fifo",
                Attributes={"FifoTopic": "true", "ContentBasedDeduplication": "true"},
            )
            numbers = []
            for n, client in enumerate([a, b, a, b]):
                published = await aws_call(
                    client,
                    "publish",
                    TopicArn=fifo["TopicArn"],
                    Message=f"m{n}",
                    MessageGroupId="g",
                )
                numbers.append(int(published["SequenceNumber"]))
            assert numbers == [1, 2, 3, 4]
            # Unsubscribed through b: a stops delivering to it within REFRESH seconds.
            await aws_call(b, "unsubscribe", SubscriptionArn=sub)
            await asyncio.sleep(REFRESH + 0.1)
            before, posted = len(messages()), len(subscriber.posts)
            await first.put_events([{"Source": "mon", "DetailType": "x", "Detail": "{}"}])
            await subscriber.wait(posted + 1)  # the HTTP subscription still gets it
            assert len(messages()) == before
            # Deleted through b: gone from a too.
            await aws_call(b, "delete_topic", TopicArn=made)
            listed = (await aws_call(a, "list_topics"))["Topics"]
            assert made not in [t["TopicArn"] for t in listed]
            assert "made" not in first.resource_names()
    finally:
        await subscriber.close()
        functions.calls.clear()
