"""What the SNS API changed of a pipeline's topics, durable in the state database.

The config declares topics and their subscriptions; the API adds to them:
topics made by ``CreateTopic``, subscriptions (with SNS's attributes as
given and the topic's own settings they came to), topic attributes and
tags, the confirmation of HTTP(S) subscriptions (the API's and the
config's) and the tokens still waiting to confirm one, and each FIFO
topic's SequenceNumber. ``TopicStore`` keeps them, so they outlive a
restart and, on a PostgreSQL state, are one set for every runner of a
cluster.

Every change bumps one counter (``topic_changes``) in its own transaction:
a runner compares it with the one it last loaded and reloads everything
(``snapshot``) when it moved. The tables are small (one row per
subscription), so a whole reload is cheaper to get right than a diff.
Tokens and sequence numbers are read where they are used and bump nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from pipelines.store import Step, Store

#: A token waiting to confirm a subscription is kept this long (SNS's: three days).
TOKEN_LIFE = 3 * 24 * 3600.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS topic_made (
    topic TEXT PRIMARY KEY,
    made  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS topic_attributes (
    topic TEXT NOT NULL,
    name  TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (topic, name)
);
CREATE TABLE IF NOT EXISTS topic_tags (
    topic TEXT NOT NULL,
    tag   TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (topic, tag)
);
CREATE TABLE IF NOT EXISTS topic_subscriptions (
    topic      TEXT NOT NULL,
    id         TEXT NOT NULL,
    protocol   TEXT NOT NULL,
    endpoint   TEXT NOT NULL,
    attributes TEXT NOT NULL,
    settings   TEXT NOT NULL,
    made       REAL NOT NULL,
    PRIMARY KEY (topic, id),
    UNIQUE (topic, protocol, endpoint)
);
CREATE TABLE IF NOT EXISTS topic_confirmed (
    topic    TEXT NOT NULL,
    id       TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    PRIMARY KEY (topic, id)
);
CREATE TABLE IF NOT EXISTS topic_tokens (
    token     TEXT PRIMARY KEY,
    topic     TEXT NOT NULL,
    topic_arn TEXT NOT NULL,
    id        TEXT NOT NULL,
    endpoint  TEXT NOT NULL,
    made      REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS topic_sequences (
    topic  TEXT PRIMARY KEY,
    number INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS topic_changes (
    counter TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
"""

#: Every change ends with this: the counter other runners compare.
_BUMP = Step(
    "INSERT INTO topic_changes (counter, version) VALUES ('topics', 1)"
    " ON CONFLICT (counter) DO UPDATE SET version = topic_changes.version + 1"
)
_VERSION = "SELECT version FROM topic_changes WHERE counter = 'topics'"
#: The tables holding a topic's rows besides ``topic_made``.
_OF_A_TOPIC = (
    "topic_attributes",
    "topic_tags",
    "topic_subscriptions",
    "topic_confirmed",
    "topic_tokens",
    "topic_sequences",
)


@dataclass(frozen=True, slots=True)
class StoredSubscription:
    """A subscription made through the API, as stored."""

    topic: str
    id: str
    protocol: str
    endpoint: str
    #: SNS's attributes as the API was given them.
    attributes: dict[str, str]
    #: The topic's own settings of it (``Subscription.parse`` takes them), as JSON text.
    settings: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a runner's topics read, as of ``version`` (or newer)."""

    version: int
    #: Topics made by CreateTopic, in the order they were made.
    made: list[str]
    attributes: dict[str, dict[str, str]]
    tags: dict[str, dict[str, str]]
    subscriptions: list[StoredSubscription]
    #: (topic, subscription id) -> the endpoint that confirmed it.
    confirmed: dict[tuple[str, str], str]


class TopicStore(Store):
    """The SNS API's changes to the topics; see the module's docstring."""

    name = "topics"
    schema = SCHEMA

    async def changes(self) -> int:
        """The change counter: it moves with every change below."""
        found = await self.scalar(_VERSION)
        return int(found or 0)

    async def snapshot(self) -> Snapshot:
        """Everything at once, in one trip. The counter is read first: a
        change committed meanwhile may show in the rows, then a later
        comparison with the counter reloads them again; never the reverse."""
        done = await self.batch(
            [
                Step(_VERSION),
                Step("SELECT topic FROM topic_made ORDER BY made, topic"),
                Step("SELECT topic, name, value FROM topic_attributes ORDER BY topic, name"),
                Step("SELECT topic, tag, value FROM topic_tags ORDER BY topic, tag"),
                Step(
                    "SELECT topic, id, protocol, endpoint, attributes, settings"
                    " FROM topic_subscriptions ORDER BY topic, made, id"
                ),
                Step("SELECT topic, id, endpoint FROM topic_confirmed"),
            ]
        )
        version, made, attributes, tags, subscriptions, confirmed = (d.rows for d in done)
        attributes_by: dict[str, dict[str, str]] = {}
        for topic, name, value in attributes:
            attributes_by.setdefault(topic, {})[name] = value
        tags_by: dict[str, dict[str, str]] = {}
        for topic, tag, value in tags:
            tags_by.setdefault(topic, {})[tag] = value
        return Snapshot(
            int(version[0][0]) if version else 0,
            [row[0] for row in made],
            attributes_by,
            tags_by,
            [
                StoredSubscription(topic, sub_id, protocol, endpoint, orjson.loads(given), settings)
                for topic, sub_id, protocol, endpoint, given, settings in subscriptions
            ],
            {(topic, sub_id): endpoint for topic, sub_id, endpoint in confirmed},
        )

    async def made(self) -> list[str]:
        """The topics made by CreateTopic."""
        return [row[0] for row in await self.rows("SELECT topic FROM topic_made ORDER BY topic")]

    # -- topics ------------------------------------------------------------------

    async def create_topic(
        self, topic: str, attributes: Mapping[str, str], tags: Mapping[str, str]
    ) -> None:
        """A topic made by CreateTopic. What the API had kept under its name
        (a config's topic of that name, since gone) is not this topic's, and
        goes; unless another runner made the topic meanwhile: then it is
        this one and keeps what it has."""
        unmade = "NOT EXISTS (SELECT 1 FROM topic_made WHERE topic = ?)"
        steps = [
            Step(f"DELETE FROM {table} WHERE topic = ? AND {unmade}", (topic, topic))
            for table in _OF_A_TOPIC
        ]
        steps.append(
            Step(
                self.dialect.insert_new("topic_made", ("topic", "made")), (topic, self.clock.time())
            )
        )
        steps += self._attribute_steps(topic, attributes)
        if tags:
            steps.append(
                Step(
                    self.dialect.upsert("topic_tags", ("topic", "tag", "value"), ("topic", "tag")),
                    [(topic, tag, value) for tag, value in tags.items()],
                    many=True,
                )
            )
        await self.batch([*steps, _BUMP])

    async def delete_topic(self, topic: str) -> None:
        """A topic deleted: everything the API kept of it."""
        steps = [Step(f"DELETE FROM {table} WHERE topic = ?", (topic,)) for table in _OF_A_TOPIC]
        steps.append(Step("DELETE FROM topic_made WHERE topic = ?", (topic,)))
        await self.batch([*steps, _BUMP])

    def _attribute_steps(self, topic: str, attributes: Mapping[str, str]) -> list[Step]:
        if not attributes:
            return []
        sql = self.dialect.upsert("topic_attributes", ("topic", "name", "value"), ("topic", "name"))
        return [Step(sql, [(topic, name, value) for name, value in attributes.items()], many=True)]

    async def set_attributes(self, topic: str, attributes: Mapping[str, str]) -> None:
        await self.batch([*self._attribute_steps(topic, attributes), _BUMP])

    async def set_tags(self, topic: str, tags: Mapping[str, str]) -> None:
        """The topic's tags are ``tags`` (those not given go)."""
        steps = [Step("DELETE FROM topic_tags WHERE topic = ?", (topic,))]
        if tags:
            steps.append(
                Step(
                    "INSERT INTO topic_tags (topic, tag, value) VALUES (?, ?, ?)",
                    [(topic, tag, value) for tag, value in tags.items()],
                    many=True,
                )
            )
        await self.batch([*steps, _BUMP])

    async def untag(self, topic: str, tags: Sequence[str]) -> None:
        sql = "DELETE FROM topic_tags WHERE topic = ? AND tag = ?"
        await self.batch([Step(sql, [(topic, tag) for tag in tags], many=True), _BUMP])

    # -- subscriptions -----------------------------------------------------------

    async def subscribe(self, made: StoredSubscription) -> StoredSubscription:
        """Add ``made``, unless the topic has a subscription of the same
        protocol and endpoint (another runner may have added it a moment
        ago): the one the store has, ``made`` or that one."""
        columns = ("topic", "id", "protocol", "endpoint", "attributes", "settings", "made")
        given = orjson.dumps(made.attributes).decode()
        values = (made.topic, made.id, made.protocol, made.endpoint, given, made.settings)
        done = await self.batch(
            [
                Step(
                    self.dialect.insert_new("topic_subscriptions", columns),
                    (*values, self.clock.time()),
                ),
                Step(
                    "SELECT id, attributes, settings FROM topic_subscriptions"
                    " WHERE topic = ? AND protocol = ? AND endpoint = ?",
                    (made.topic, made.protocol, made.endpoint),
                ),
                _BUMP,
            ]
        )
        sub_id, attributes, settings = done[1].rows[0]
        return StoredSubscription(
            made.topic, sub_id, made.protocol, made.endpoint, orjson.loads(attributes), settings
        )

    async def set_subscription(
        self, topic: str, sub_id: str, attributes: Mapping[str, str], settings: str
    ) -> bool:
        """A subscription's attributes changed; False when it is gone."""
        done = await self.batch(
            [
                Step(
                    "UPDATE topic_subscriptions SET attributes = ?, settings = ?"
                    " WHERE topic = ? AND id = ?",
                    (orjson.dumps(dict(attributes)).decode(), settings, topic, sub_id),
                ),
                _BUMP,
            ]
        )
        return done[0].changed > 0

    async def unsubscribe(self, topic: str, sub_id: str) -> None:
        """A subscription the API made goes; one the config declares stays
        declared but is no longer confirmed (it must be confirmed again)."""
        await self.batch(
            [
                Step(f"DELETE FROM {table} WHERE topic = ? AND id = ?", (topic, sub_id))
                for table in ("topic_subscriptions", "topic_confirmed", "topic_tokens")
            ]
            + [_BUMP]
        )

    # -- confirmation of HTTP(S) subscriptions -----------------------------------

    async def add_token(
        self, token: str, topic: str, topic_arn: str, sub_id: str, endpoint: str
    ) -> None:
        """A confirmation request is on its way with ``token`` (tokens older
        than ``TOKEN_LIFE`` go meanwhile)."""
        now = self.clock.time()
        await self.batch(
            [
                Step("DELETE FROM topic_tokens WHERE made < ?", (now - TOKEN_LIFE,)),
                Step(
                    "INSERT INTO topic_tokens (token, topic, topic_arn, id, endpoint, made)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (token, topic, topic_arn, sub_id, endpoint, now),
                ),
            ]
        )

    async def confirm(self, topic_arn: str, token: str) -> tuple[str, str] | None:
        """Confirm the subscription ``token`` was sent for: its (topic, id),
        or None when no such token waits for ``topic_arn`` (used, gone, or
        another topic's)."""
        match = "token = ? AND topic_arn = ?"
        done = await self.batch(
            [
                Step(
                    "INSERT INTO topic_confirmed (topic, id, endpoint)"
                    f" SELECT topic, id, endpoint FROM topic_tokens WHERE {match}"
                    " ON CONFLICT (topic, id) DO UPDATE SET endpoint = excluded.endpoint",
                    (token, topic_arn),
                ),
                Step(
                    f"DELETE FROM topic_tokens WHERE {match} RETURNING topic, id",
                    (token, topic_arn),
                ),
                _BUMP,
            ]
        )
        found = done[1].rows
        return (found[0][0], found[0][1]) if found else None

    # -- FIFO topics ---------------------------------------------------------------

    async def next_sequence(self, topic: str) -> int:
        """A FIFO topic's next SequenceNumber: one counter per topic, shared
        by the runners of a cluster."""
        found = await self.grouped(
            "INSERT INTO topic_sequences (topic, number) VALUES (?, 1)"
            " ON CONFLICT (topic) DO UPDATE SET number = topic_sequences.number + 1"
            " RETURNING number",
            (topic,),
        )
        return int(found[0][0])


def settings_text(settings: Mapping[str, Any]) -> str:
    """A subscription's settings as stored (the same text for the same settings)."""
    return orjson.dumps(dict(settings), option=orjson.OPT_SORT_KEYS).decode()
