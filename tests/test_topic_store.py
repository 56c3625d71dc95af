"""The topic plugin's store (what the SNS API changed of the topics), on both engines."""

from __future__ import annotations

import asyncio

from pipelines.clock import ManualClock
from plugins.topic.store import TOKEN_LIFE, StoredSubscription, TopicStore, settings_text

ARN = "arn:aws:sns:us-east-1:000000000000:news"


def made(
    sub_id: str, endpoint: str = "arn:aws:sqs:us-east-1:000000000000:q", **given: str
) -> StoredSubscription:
    settings = settings_text({"id": sub_id, "resource": "q"})
    return StoredSubscription("news", sub_id, "sqs", endpoint, dict(given), settings)


async def test_what_the_api_changed_is_kept_and_outlives_the_store(state_location: str) -> None:
    store = await TopicStore.open(state_location)
    try:
        assert await store.changes() == 0
        await store.create_topic("news", {"DisplayName": "News"}, {"team": "ops"})
        await store.set_attributes("news", {"DisplayName": "N2", "SignatureVersion": "2"})
        await store.set_tags("news", {"team": "web", "cost": "1"})
        await store.untag("news", ["cost"])
        kept = await store.subscribe(made("s1", RawMessageDelivery="true"))
        assert kept.id == "s1"
        await store.add_token("t1", "news", ARN, "s1", "http://h/x")
        assert await store.changes() == 5  # every change but the token moved the counter
    finally:
        await store.close()
    store = await TopicStore.open(state_location)
    try:
        snapshot = await store.snapshot()
        assert snapshot.version == 5
        assert snapshot.made == ["news"] and await store.made() == ["news"]
        assert snapshot.attributes == {"news": {"DisplayName": "N2", "SignatureVersion": "2"}}
        assert snapshot.tags == {"news": {"team": "web"}}
        (subscription,) = snapshot.subscriptions
        assert (subscription.id, subscription.protocol) == ("s1", "sqs")
        assert subscription.attributes == {"RawMessageDelivery": "true"}
        assert subscription.settings == settings_text({"resource": "q", "id": "s1"})
        assert snapshot.confirmed == {}
        # The token confirms once, for its own topic only.
        assert await store.confirm(ARN + "x", "t1") is None
        assert await store.confirm(ARN, "t1") == ("news", "s1")
        assert await store.confirm(ARN, "t1") is None
        assert (await store.snapshot()).confirmed == {("news", "s1"): "http://h/x"}
        # A changed subscription, then gone with its confirmation.
        changed = settings_text({"id": "s1", "resource": "q", "raw_message_delivery": False})
        assert await store.set_subscription("news", "s1", {"RawMessageDelivery": "false"}, changed)
        assert (await store.snapshot()).subscriptions[0].settings == changed
        await store.unsubscribe("news", "s1")
        assert not await store.set_subscription("news", "s1", {}, changed)
        after = await store.snapshot()
        assert after.subscriptions == [] and after.confirmed == {}
        await store.delete_topic("news")
        gone = await store.snapshot()
        assert (gone.made, gone.attributes, gone.tags) == ([], {}, {})
    finally:
        await store.close()


async def test_one_subscription_per_protocol_and_endpoint(state_location: str) -> None:
    store = await TopicStore.open(state_location)
    try:
        first = await store.subscribe(made("s1", Given="1"))
        again = await store.subscribe(made("s2", Given="2"))
        assert (
            (again.id, again.attributes) == ("s1", {"Given": "1"}) == (first.id, first.attributes)
        )
        other = await store.subscribe(made("s3", endpoint="arn:aws:sqs:us-east-1:000000000000:r"))
        assert other.id == "s3"
        assert [s.id for s in (await store.snapshot()).subscriptions] == ["s1", "s3"]
    finally:
        await store.close()


async def test_two_stores_subscribing_one_endpoint_at_once_keep_one(state_location: str) -> None:
    # Two runners of a cluster (two connections): both answers name the one kept.
    one, two = await TopicStore.open(state_location), await TopicStore.open(state_location)
    try:
        for round_ in range(5):
            endpoint = f"arn:aws:sqs:us-east-1:000000000000:q{round_}"
            kept = await asyncio.gather(
                one.subscribe(made(f"a{round_}", endpoint)),
                two.subscribe(made(f"b{round_}", endpoint)),
            )
            assert kept[0].id == kept[1].id
        assert len((await one.snapshot()).subscriptions) == 5
    finally:
        await one.close()
        await two.close()


async def test_a_topic_made_again_starts_afresh_unless_made_meanwhile(state_location: str) -> None:
    store = await TopicStore.open(state_location)
    try:
        # What the API added to a config's topic "news" (no made row)...
        await store.set_attributes("news", {"DisplayName": "old"})
        await store.subscribe(made("s1"))
        # ...is not the topic CreateTopic makes under that name later.
        await store.create_topic("news", {}, {})
        snapshot = await store.snapshot()
        assert (snapshot.attributes, snapshot.subscriptions) == ({}, [])
        # A second CreateTopic (another runner's, a moment later) keeps what it has.
        await store.subscribe(made("s2"))
        await store.create_topic("news", {"DisplayName": "N"}, {})
        snapshot = await store.snapshot()
        assert [s.id for s in snapshot.subscriptions] == ["s2"]
        assert snapshot.attributes == {"news": {"DisplayName": "N"}}
    finally:
        await store.close()


async def test_sequence_numbers_count_per_topic_across_stores(state_location: str) -> None:
    one, two = await TopicStore.open(state_location), await TopicStore.open(state_location)
    try:
        numbers = await asyncio.gather(
            *(store.next_sequence("t.fifo") for _ in range(10) for store in (one, two))
        )
        assert sorted(numbers) == list(range(1, 21))
        assert await one.next_sequence("u.fifo") == 1
        version = await one.changes()
        assert await two.next_sequence("t.fifo") == 21
        assert await one.changes() == version  # counting is no change to reload
    finally:
        await one.close()
        await two.close()


async def test_old_tokens_go(state_location: str) -> None:
    clock = ManualClock()
    store = await TopicStore.open(state_location, clock)
    try:
        await store.add_token("old", "news", ARN, "s1", "http://h/x")
        clock.jump(TOKEN_LIFE + 1)
        await store.add_token("new", "news", ARN, "s1", "http://h/x")
        assert await store.confirm(ARN, "old") is None
        assert await store.confirm(ARN, "new") == ("news", "s1")
    finally:
        await store.close()
