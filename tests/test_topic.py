"""Topics: filter policies, envelopes, per-subscription dead letters and retries, FIFO."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pipelines.clock import ManualClock
from pipelines.config import check
from pipelines.errors import ConfigError
from pipelines.runtime import Runtime
from pipelines.targets import DeliveryContext
from plugins.queue.store import QueueStore
from plugins.topic.filterpolicy import FilterPolicy

from . import functions
from .recorder import plugin_manager

ENTRY = {"Source": "shop", "DetailType": "order", "Detail": '{"order": 7, "total": 150}'}


def policy(text: dict[str, Any], scope: str = "MessageAttributes") -> FilterPolicy:
    return FilterPolicy.compile("sub", text, scope)


def attrs(**values: tuple[str, str]) -> dict[str, dict[str, str]]:
    return {name: {"Type": kind, "Value": value} for name, (kind, value) in values.items()}


# -- filter policies -----------------------------------------------------------


def test_attribute_policies_match_typed_attributes() -> None:
    numeric = policy({"price": [{"numeric": [">", 100]}]})
    assert numeric.matches("m", attrs(price=("Number", "3.015e2")))
    assert not numeric.matches("m", attrs(price=("Number", "99")))
    # numeric matching applies to Number attributes only
    assert not numeric.matches("m", attrs(price=("String", "300")))
    colours = policy({"colour": ["red", {"prefix": "bl"}]})
    assert colours.matches("m", attrs(colour=("String.Array", '["green", "blue"]')))
    assert not colours.matches("m", attrs(colour=("String.Array", '["green"]')))
    assert not colours.matches("m", attrs(colour=("Binary", "cmVk")))


def test_exists_false_needs_at_least_one_attribute() -> None:
    absent = policy({"store": [{"exists": False}]})
    assert absent.matches("m", attrs(other=("String", "x")))
    assert not absent.matches("m", {})
    assert not absent.matches("m", attrs(store=("String", "x")))


def test_body_policies_match_the_json_message() -> None:
    body = policy({"detail": {"total": [{"numeric": [">=", 100]}]}}, "MessageBody")
    assert body.matches('{"detail": {"total": 150}}', {})
    assert not body.matches('{"detail": {"total": 50}}', {})
    assert not body.matches("not json", {})


@pytest.mark.parametrize(
    ("declared", "scope", "message"),
    [
        ({k: ["x"] for k in "abcdef"}, "MessageAttributes", "at most 5"),
        ({"a": [str(n) for n in range(151)]}, "MessageAttributes", "combinations"),
        ({"a": {"b": ["x"]}}, "MessageAttributes", "cannot nest"),
        ({"a": ["x"]}, "Headers", "MessageAttributes or MessageBody"),
        ({"a": [{"numeric": [">", "x"]}]}, "MessageAttributes", "numeric"),
        ({}, "MessageAttributes", "non-empty"),
    ],
)
def test_filter_policy_limits(declared: dict[str, Any], scope: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        FilterPolicy.compile("sub", declared, scope)
    assert message in str(caught.value)


# -- the topic in a running bus ------------------------------------------------


def topic_runtime(tmp_path: Path, subscriptions: list[dict[str, Any]], **topic: Any) -> Runtime:
    runtime = Runtime(
        state_path=tmp_path / "state.db", plugins=plugin_manager(), clock=ManualClock(), seed=1
    )
    runtime.add_resource("orders", "topic", {"subscriptions": subscriptions, **topic})
    return runtime


async def rule_to_topic(runtime: Runtime, **target: Any) -> None:
    bus = runtime.bus()
    bus.put_rule("r", pattern={"source": ["shop"]})
    await bus.put_targets("r", [{"id": "t", "resource": "orders", **target}])


async def test_fan_out_with_envelope_raw_delivery_and_filters(tmp_path: Path) -> None:
    runtime = topic_runtime(
        tmp_path,
        [
            {"id": "all", "resource": "everything"},
            {"id": "raw", "resource": "raw", "raw_message_delivery": True},
            {"id": "big", "resource": "big", "filter_policy": {"total": [{"numeric": [">", 200]}]}},
        ],
        subject="new order",
        message_attributes={"total": "detail.total", "missing": "detail.nothing"},
    )
    for name in ("everything", "raw", "big"):
        runtime.add_resource(name, "recorder", {})
    await rule_to_topic(runtime, input_path="$.detail")
    async with runtime:
        await runtime.put_events([ENTRY])
        await runtime.wait_until_idle()
        [enveloped] = runtime.resource("everything").received  # type: ignore[attr-defined]
        [raw] = runtime.resource("raw").received  # type: ignore[attr-defined]
        assert runtime.resource("big").received == []  # type: ignore[attr-defined]
    envelope = enveloped.payload
    assert envelope["Type"] == "Notification"
    assert envelope["Subject"] == "new order"
    assert envelope["TopicArn"] == "arn:aws:sns:us-east-1:000000000000:orders"
    assert json.loads(envelope["Message"]) == {"order": 7, "total": 150}
    assert envelope["MessageAttributes"] == {"total": {"Type": "Number", "Value": "150"}}
    assert envelope["Timestamp"].endswith("Z")
    assert raw.payload == '{"order":7,"total":150}'
    assert dict(raw.context.attributes) == {"total": "150"}


async def test_a_function_subscriber_gets_lambdas_sns_event(tmp_path: Path) -> None:
    # No HTTP port: nothing could serve the certificate, so Signature and the URLs are empty.
    runtime = topic_runtime(
        tmp_path,
        [{"id": "fn", "resource": "handler"}, {"id": "queue", "resource": "copy"}],
        message_attributes={"total": "detail.total"},
    )
    runtime.add_resource("handler", "function", {"function": "tests.functions:echo"})
    runtime.add_resource("copy", "recorder", {})
    await rule_to_topic(runtime, input_path="$.detail")
    functions.calls.clear()
    try:
        async with runtime:
            await runtime.put_events([ENTRY])
            await runtime.wait_until_idle()
            [envelope] = runtime.resource("copy").received  # type: ignore[attr-defined]
        [event] = functions.calls
    finally:
        functions.calls.clear()
    arn = "arn:aws:sns:us-east-1:000000000000:orders"
    assert event == {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": f"{arn}:fn",
                "Sns": {
                    "Type": "Notification",
                    "MessageId": envelope.payload["MessageId"],
                    "TopicArn": arn,
                    "Subject": None,
                    "Message": '{"order":7,"total":150}',
                    "Timestamp": envelope.payload["Timestamp"],
                    "SignatureVersion": "1",
                    "Signature": "",
                    "SigningCertUrl": "",
                    "UnsubscribeUrl": "",
                    "MessageAttributes": {"total": {"Type": "Number", "Value": "150"}},
                },
            }
        ]
    }
    assert envelope.payload["Type"] == "Notification"  # a queue still gets SNS's envelope


async def test_a_failing_function_subscriber_dead_letters_snss_envelope(tmp_path: Path) -> None:
    runtime = topic_runtime(
        tmp_path,
        [{"id": "fn", "resource": "broken", "dead_letter": "dead", "maximum_retry_attempts": 0}],
    )
    runtime.add_resource("broken", "function", {"function": "tests.functions:fails"})
    runtime.add_resource("dead", "queue", {})
    await rule_to_topic(runtime, input_path="$.detail")
    async with runtime:
        await runtime.put_events([ENTRY])
        await runtime.wait_until_idle()
    async with await QueueStore.open(tmp_path / "state.db", runtime.clock) as store:
        [dead] = await store.receive("dead")
    envelope = json.loads(dead.body)  # SNS's envelope, not the function's Records
    assert envelope["Type"] == "Notification" and "Records" not in envelope
    assert json.loads(envelope["Message"]) == {"order": 7, "total": 150}


async def test_raw_delivery_to_a_function_is_refused_at_its_setting(tmp_path: Path) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        textwrap.dedent(
            """            resources:
              orders:
                type: topic
                subscriptions:
                  - id: fn
                    resource: handler
                    raw_message_delivery: true
              handler: {type: function, function: "tests.functions:echo"}
            """
        )
    )
    problems = [str(problem) for problem in await check([config])]
    assert any(
        p.startswith(f"{config}:7:")
        and "subscriptions[0].raw_message_delivery" in p
        and "lambda protocol takes no raw message delivery" in p
        for p in problems
    ), problems


async def test_a_failing_subscription_is_retried_alone_then_dead_lettered(tmp_path: Path) -> None:
    runtime = topic_runtime(
        tmp_path,
        [
            {"id": "ok", "resource": "ok"},
            {
                "id": "flaky",
                "resource": "flaky",
                "dead_letter": "dead",
                "maximum_retry_attempts": 2,
            },
        ],
    )
    runtime.add_resource("ok", "recorder", {})
    runtime.add_resource("flaky", "recorder", {"fail": -1})
    runtime.add_resource("dead", "queue", {})
    await rule_to_topic(runtime)
    clock = runtime.clock
    assert isinstance(clock, ManualClock)
    async with runtime:
        await runtime.put_events([ENTRY])
        await runtime.wait_until_idle()
        await clock.advance(60, quiet=runtime.wait_until_idle)
        ok = runtime.resource("ok").received  # type: ignore[attr-defined]
        flaky = runtime.resource("flaky").attempts  # type: ignore[attr-defined]
    assert len(ok) == 1  # served once, not again on the topic's retries
    assert len(flaky) == 3  # the first attempt and two retries
    async with await QueueStore.open(tmp_path / "state.db", runtime.clock) as store:
        [dead] = await store.receive("dead")
    envelope = json.loads(dead.body)
    assert envelope["Type"] == "Notification"
    assert json.loads(envelope["Message"])["detail"]["order"] == 7
    codes = {name: value["StringValue"] for name, value in dead.message_attributes.items()}
    assert codes["SubscriptionId"] == "flaky"
    assert codes["TopicArn"].endswith(":orders")
    assert "ErrorCode" in codes
    assert "ErrorMessage" in codes


async def test_a_raw_subscription_with_attributes_dead_letters_on_a_standard_topic(
    tmp_path: Path,
) -> None:
    """Raw delivery carries its typed attributes in the context's extra: the
    dead letter of a standard topic's subscription is not taken for FIFO's."""
    runtime = topic_runtime(
        tmp_path,
        [
            {
                "id": "s",
                "resource": "refuses",
                "raw_message_delivery": True,
                "dead_letter": "dead",
                "maximum_retry_attempts": 0,
            }
        ],
        message_attributes={"total": "detail.total"},
    )
    runtime.add_resource("refuses", "recorder", {"fail": -1, "retryable": False})
    runtime.add_resource("dead", "queue", {})
    await rule_to_topic(runtime)
    async with runtime:
        await runtime.put_events([ENTRY])
        await runtime.wait_until_idle()
    async with await QueueStore.open(tmp_path / "state.db", runtime.clock) as store:
        [dead] = await store.receive("dead")
    assert dead.message_attributes["SubscriptionId"]["StringValue"] == "s"


async def test_a_topic_dead_letter_raw_to_a_queue_leaves_out_an_empty_error_message(
    tmp_path: Path,
) -> None:
    """A rule's dead letter through a topic, raw to a queue: the bus's
    ERROR_MESSAGE may be empty, which SQS does not store (it is left out)."""
    runtime = topic_runtime(
        tmp_path, [{"id": "q", "resource": "dlq", "raw_message_delivery": True}]
    )
    runtime.add_resource("dlq", "queue", {})
    async with runtime:
        context = DeliveryContext(
            "r", "t", {"id": "e1"}, attributes={"ERROR_CODE": "E", "ERROR_MESSAGE": ""}
        )
        await runtime.resource("orders").deliver({"id": "e1"}, context)
        await runtime.wait_until_idle()
    async with await QueueStore.open(tmp_path / "state.db", runtime.clock) as store:
        [dead] = await store.receive("dlq")
    assert dead.message_attributes == {"ERROR_CODE": {"DataType": "String", "StringValue": "E"}}


async def test_fifo_topic_delivers_in_group_order_to_fifo_queues(tmp_path: Path) -> None:
    runtime = topic_runtime(
        tmp_path,
        [{"id": "q", "resource": "orders.fifo"}],
        topic="orders.fifo",
        message_group_id_jmespath="detail.customer",
    )
    runtime.add_resource("orders.fifo", "queue", {})
    await rule_to_topic(runtime, input_path="$.detail")
    entries = [
        dict(ENTRY, Detail=json.dumps({"order": n, "customer": "ann" if n % 2 else "bob"}))
        for n in range(6)
    ]
    async with runtime:
        for entry in entries:  # one at a time: the order they are published in
            await runtime.put_events([entry])
            await runtime.wait_until_idle()
    async with await QueueStore.open(tmp_path / "state.db", runtime.clock) as store:
        messages = await store.receive("orders.fifo", 10)
    groups: dict[str, list[int]] = {}
    for message in messages:
        order = json.loads(json.loads(message.body)["Message"])["order"]
        groups.setdefault(message.attributes["MessageGroupId"], []).append(order)
    assert groups == {"ann": [1, 3, 5], "bob": [0, 2, 4]}


async def test_a_fifo_topic_refuses_a_standard_subscriber(tmp_path: Path) -> None:
    runtime = topic_runtime(
        tmp_path,
        [{"id": "q", "resource": "plain"}],
        topic="orders.fifo",
        message_group_id="g",
    )
    runtime.add_resource("plain", "queue", {})
    with pytest.raises(Exception, match="only to FIFO queues"):
        await runtime.start()
    await runtime.stop()


async def test_validate_reports_a_dangling_subscription_with_its_position(tmp_path: Path) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        textwrap.dedent(
            """\
            resources:
              orders:
                type: topic
                subscriptions:
                  - id: a
                    resource: shiping
              refunds:
                type: topic
                subscriptions:
                  - {id: b, resource: shipping, filter_policy: {total: [{numeric: [">", x]}]}}
              shipping: {type: queue}
            """
        )
    )
    problems = [str(problem) for problem in await check([config])]
    assert any(
        p.startswith(f"{config}:6:") and "no resource named 'shiping'" in p and "shipping" in p
        for p in problems
    ), problems
    assert any(
        p.startswith(f"{config}:10:") and "subscriptions[0].filter_policy" in p for p in problems
    ), problems


async def test_two_subscriptions_dead_lettering_to_one_fifo_queue_keep_both(
    tmp_path: Path,
) -> None:
    runtime = topic_runtime(
        tmp_path,
        [
            {"id": "a", "resource": "a.fifo", "dead_letter": "dlq.fifo"},
            {"id": "b", "resource": "b.fifo", "dead_letter": "dlq.fifo"},
        ],
        topic="orders.fifo",
        message_group_id="g",
    )
    for name in ("a.fifo", "b.fifo"):  # each refuses the message for good
        runtime.add_resource(name, "queue", {"maximum_message_size": 1024})
    runtime.add_resource("dlq.fifo", "queue", {})
    await rule_to_topic(runtime, input_transformer={"input_template": '"' + "x" * 2000 + '"'})
    async with runtime:
        await runtime.put_events([ENTRY])
        await runtime.wait_until_idle()
    async with await QueueStore.open(tmp_path / "state.db", runtime.clock) as store:
        dead = await store.receive("dlq.fifo", 10)
    assert sorted(m.message_attributes["SubscriptionId"]["StringValue"] for m in dead) == ["a", "b"]


async def test_a_permanent_subscription_error_without_dead_letter_is_not_retried(
    tmp_path: Path,
) -> None:
    runtime = topic_runtime(tmp_path, [{"id": "s", "resource": "refuses"}])
    runtime.add_resource("refuses", "recorder", {"fail": -1, "retryable": False})
    runtime.add_resource("rule-dlq", "recorder", {})
    await rule_to_topic(runtime, dead_letter="rule-dlq")
    async with runtime:
        await runtime.put_events([ENTRY])
        await runtime.wait_until_idle()
        [dead] = runtime.resource("rule-dlq").received  # type: ignore[attr-defined]
        attempts = runtime.resource("refuses").attempts  # type: ignore[attr-defined]
    assert len(attempts) == 1
    # the rule's dead letter names the subscription's own error, not a generic one
    assert dead.context.attributes["ERROR_CODE"] != "SubscriptionDeliveryFailed"
    assert "EXHAUSTED_RETRY_CONDITION" not in dead.context.attributes
