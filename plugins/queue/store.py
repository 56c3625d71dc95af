"""Queues with SQS's semantics, durable in the state database (SQLite or PostgreSQL).

One row per message in ``queue_messages``. A message is *visible* when its
``visible`` time has passed; receiving it sets ``visible`` to the end of its
visibility timeout and a fresh receipt token, in one ``UPDATE ... RETURNING``
statement. SQLite runs one write at a time per database file, so two
processes receiving from the same queue can never both claim a message while
it is invisible. On PostgreSQL, where runners on several machines share the
queues, the claim's ``SELECT`` locks its rows and passes over those another
claim holds (``FOR UPDATE SKIP LOCKED``), a FIFO queue's claims (and its
sends) run one at a time in the cluster under an advisory lock per queue,
sequence numbers come from the table's identity column, and every store
announces what it makes visible on a notification channel that the others
listen to, so a long poll on one runner wakes when another sends (only to
the stores waiting on that queue: those with a long poll of it under way).

Every operation is one statement, or one ``BEGIN IMMEDIATE`` transaction
(FIFO deduplication, ChangeMessageVisibility, purge), under the store's lock
so that statements from concurrent coroutines never land inside another's
transaction. The hot statements (a standard queue's send, the claim of a
receive and its release, DeleteMessageBatch) go through ``Store.grouped``:
alone, one goes at once in autocommit mode; those of concurrent callers
handed over while a trip is under way share the next trip and its
transaction, in the order submitted, so several consumers make fewer,
bigger commits. On a standard queue, the claims of concurrent receives
(same visibility timeout) and their DeleteMessageBatch calls go further
(``Store.gather``): those arriving while one waits for its trip join it,
one statement for all (``_Claims``: LIMIT their sum, one receipt token,
the claimed rows shared out in the queue's order, each receive its own;
``_Deletes``: every handle in one DELETE). A FIFO queue's claims stay
one statement each: a gathered claim could hand one group's messages to
two receives. A send checks and prepares each entry in one pass, and makes
its results while its INSERT runs; what only SQS's answers show (a sent
body's MD5, a received message's system and message attributes) is made
when first read, not for every message. The statements of a claim and of
a DeleteMessageBatch are made once per shape, and bound. In this process, a send wakes as many
long polls as want its messages, and those are promised to them until they
have looked, so the other polls wait instead of claiming nothing.
GetQueueAttributes reads counts the writes keep (``queue_counts``, and
``queue_hidden``: what is in flight or delayed, by the second it becomes
visible again; the cluster's, since every runner's writes keep them) and
short index ranges, never the backlog nor what is in flight. Times come from the injected ``Clock``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import functools
import hashlib
import itertools
import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

import orjson

from pipelines.clock import Clock, sleep
from pipelines.errors import QueueError, StateError
from pipelines.event import DEFAULT_ACCOUNT, DEFAULT_REGION
from pipelines.store import Dialect, Gathering, Queries, Row, Step, Store, Upkeep

log = logging.getLogger("plugins.queue")

SCHEMA = """
CREATE TABLE IF NOT EXISTS queues (
    name       TEXT PRIMARY KEY,
    attributes TEXT NOT NULL,
    created    REAL NOT NULL,
    purged     REAL
);
CREATE TABLE IF NOT EXISTS queue_messages (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    queue         TEXT NOT NULL,
    id            TEXT NOT NULL,
    body          TEXT NOT NULL,
    attributes    BLOB,
    sent          REAL NOT NULL,
    visible       REAL NOT NULL,
    receives      INTEGER NOT NULL DEFAULT 0,
    first_receive REAL,
    receipt       TEXT,
    group_id      TEXT,
    dedup_id      TEXT,
    source        TEXT
);
CREATE INDEX IF NOT EXISTS queue_messages_visible ON queue_messages (queue, visible, seq);
CREATE INDEX IF NOT EXISTS queue_messages_group ON queue_messages (queue, group_id, seq)
    WHERE group_id IS NOT NULL;
-- Version 2: what retention and GetQueueAttributes search for. Retention
-- deletes by sent time, and the oldest message's age is its minimum.
CREATE INDEX IF NOT EXISTS queue_messages_sent ON queue_messages (queue, sent);
-- Delayed messages (sent with a delay, never received yet) are usually few:
-- a partial index holds only them, so they are counted without touching
-- the backlog, and a plain send (visible = sent) never enters it.
CREATE INDEX IF NOT EXISTS queue_messages_delayed ON queue_messages (queue, visible)
    WHERE receives = 0 AND visible > sent;
CREATE TABLE IF NOT EXISTS queue_dedup (
    queue      TEXT NOT NULL,
    dedup_id   TEXT NOT NULL,
    expires    REAL NOT NULL,
    message_id TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    PRIMARY KEY (queue, dedup_id)
) WITHOUT ROWID;
"""

# What version 2 added, one statement each (``execute`` inside the migration's
# transaction: a script would commit it).
_V2_INDEXES = [
    statement.strip()
    for statement in SCHEMA.split(";")
    if "queue_messages_sent" in statement or "queue_messages_delayed" in statement
]

# Version 3: each queue's number of messages, kept by triggers in the very
# statement that inserts, deletes or moves a message (no code path can forget
# it, and it commits or rolls back with that statement), so GetQueueAttributes
# never counts the backlog. Expired messages not yet deleted are still in it.
# SQLite's spelling; PostgreSQL's is ``PG_COUNTS``.
COUNTS = """
CREATE TABLE IF NOT EXISTS queue_counts (
    queue    TEXT PRIMARY KEY,
    messages INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS queue_counts_insert AFTER INSERT ON queue_messages BEGIN
    INSERT INTO queue_counts (queue, messages) VALUES (new.queue, 1)
        ON CONFLICT (queue) DO UPDATE SET messages = messages + 1;
END;
CREATE TRIGGER IF NOT EXISTS queue_counts_delete AFTER DELETE ON queue_messages BEGIN
    UPDATE queue_counts SET messages = messages - 1 WHERE queue = old.queue;
END;
CREATE TRIGGER IF NOT EXISTS queue_counts_move AFTER UPDATE OF queue ON queue_messages
    WHEN new.queue IS NOT old.queue BEGIN
    UPDATE queue_counts SET messages = messages - 1 WHERE queue = old.queue;
    INSERT INTO queue_counts (queue, messages) VALUES (new.queue, 1)
        ON CONFLICT (queue) DO UPDATE SET messages = messages + 1;
END;
"""

# Version 4: what is hidden (in flight, or delayed) counted by the second it
# becomes visible again, so GetQueueAttributes sums the seconds still to
# come instead of counting up to 120,000 messages in flight. A message is
# counted here while its ``visible`` is after its ``sent`` (received, or sent
# with a delay): a plain send never is, so the send's hot path fires no
# trigger of these. ``received``: 1 for a message received (in flight when
# hidden), 0 for one never received (delayed). When a message changes, it
# leaves the second it was counted in and enters its new one, in the same
# statement; time passing changes nothing here: the seconds before now are
# simply not summed (``_STATS``), and the current second's few are counted
# in the visibility index. Seconds left at 0 are swept with retention.
# SQLite's spelling (``CAST`` truncates: the floor of a time after 1970);
# PostgreSQL's is ``PG_HIDDEN``.
HIDDEN = """
CREATE TABLE IF NOT EXISTS queue_hidden (
    queue    TEXT NOT NULL,
    received INTEGER NOT NULL,
    second   INTEGER NOT NULL,
    messages INTEGER NOT NULL,
    PRIMARY KEY (queue, received, second)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS queue_hidden_insert AFTER INSERT ON queue_messages
    WHEN new.visible > new.sent BEGIN
    INSERT INTO queue_hidden (queue, received, second, messages)
        VALUES (new.queue, new.receives > 0, CAST(new.visible AS INTEGER), 1)
        ON CONFLICT (queue, received, second) DO UPDATE SET messages = messages + 1;
END;
CREATE TRIGGER IF NOT EXISTS queue_hidden_delete AFTER DELETE ON queue_messages
    WHEN old.visible > old.sent BEGIN
    UPDATE queue_hidden SET messages = messages - 1 WHERE queue = old.queue
        AND received = (old.receives > 0) AND second = CAST(old.visible AS INTEGER);
END;
CREATE TRIGGER IF NOT EXISTS queue_hidden_leave
    AFTER UPDATE OF queue, sent, visible, receives ON queue_messages
    WHEN old.visible > old.sent BEGIN
    UPDATE queue_hidden SET messages = messages - 1 WHERE queue = old.queue
        AND received = (old.receives > 0) AND second = CAST(old.visible AS INTEGER);
END;
CREATE TRIGGER IF NOT EXISTS queue_hidden_enter
    AFTER UPDATE OF queue, sent, visible, receives ON queue_messages
    WHEN new.visible > new.sent BEGIN
    INSERT INTO queue_hidden (queue, received, second, messages)
        VALUES (new.queue, new.receives > 0, CAST(new.visible AS INTEGER), 1)
        ON CONFLICT (queue, received, second) DO UPDATE SET messages = messages + 1;
END;
"""

# PostgreSQL's: runners on several machines write at once, and one row per
# queue would make every send and delete of the cluster wait for the one
# before it to commit (its row lock). So a queue's count is the sum of up to
# 16 rows, one per slot, and a connection adds to the slot of its backend's
# process id: mostly a row of its own. Inserts and deletes are counted once
# per statement (a batch of ten adds 10 in one row update, from the
# statement's transition table); moves (redrive, a move task) per row, the
# trigger's WHEN sparing every other UPDATE (claims) a call. Rows are
# upserted in order of queue name, so two transactions never wait for each
# other's rows in opposite orders.
PG_COUNTS = """
CREATE TABLE IF NOT EXISTS queue_counts (
    queue    TEXT NOT NULL,
    slot     INTEGER NOT NULL,
    messages INTEGER NOT NULL,
    PRIMARY KEY (queue, slot)
);
-- One function for both statement triggers: each names its transition table
-- queue_changed; an insert adds its rows to the count, a delete takes them off.
CREATE OR REPLACE FUNCTION queue_counts_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO queue_counts (queue, slot, messages)
        SELECT queue, pg_backend_pid() % 16,
               CASE TG_OP WHEN 'INSERT' THEN count(*) ELSE -count(*) END
        FROM queue_changed
        GROUP BY queue ORDER BY queue
        ON CONFLICT (queue, slot)
        DO UPDATE SET messages = queue_counts.messages + excluded.messages;
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER queue_counts_insert AFTER INSERT ON queue_messages
    REFERENCING NEW TABLE AS queue_changed
    FOR EACH STATEMENT EXECUTE FUNCTION queue_counts_change();
CREATE OR REPLACE TRIGGER queue_counts_delete AFTER DELETE ON queue_messages
    REFERENCING OLD TABLE AS queue_changed
    FOR EACH STATEMENT EXECUTE FUNCTION queue_counts_change();
-- What databases made before queue_counts_change had in its place.
DROP FUNCTION IF EXISTS queue_counts_insert(), queue_counts_delete();
CREATE OR REPLACE FUNCTION queue_counts_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO queue_counts (queue, slot, messages)
        SELECT queue, pg_backend_pid() % 16, change
        FROM (VALUES (old.queue, -1), (new.queue, 1)) AS moved (queue, change) ORDER BY queue
        ON CONFLICT (queue, slot)
        DO UPDATE SET messages = queue_counts.messages + excluded.messages;
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER queue_counts_move AFTER UPDATE OF queue ON queue_messages
    FOR EACH ROW WHEN (new.queue IS DISTINCT FROM old.queue)
    EXECUTE FUNCTION queue_counts_move();
"""

# PostgreSQL's ``HIDDEN``: per statement from its transition tables, in
# slots as ``queue_counts`` (its claims in the same second would otherwise
# all wait for one row). An UPDATE trigger with transition tables takes no
# column list: every UPDATE of a message counts (each moves ``visible``
# anyway). A statement's changes are summed per second first, and seconds
# it leaves as they were are not written.
PG_HIDDEN = """
CREATE TABLE IF NOT EXISTS queue_hidden (
    queue    TEXT NOT NULL,
    slot     INTEGER NOT NULL,
    received INTEGER NOT NULL,
    second   BIGINT NOT NULL,
    messages INTEGER NOT NULL,
    PRIMARY KEY (queue, slot, received, second)
);
CREATE OR REPLACE FUNCTION queue_hidden_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        INSERT INTO queue_hidden (queue, slot, received, second, messages)
            SELECT queue, pg_backend_pid() % 16, received, second, sum(change)
            FROM (SELECT queue, (receives > 0)::int AS received,
                         floor(visible)::bigint AS second, -1 AS change
                  FROM queue_was WHERE visible > sent
                  UNION ALL
                  SELECT queue, (receives > 0)::int, floor(visible)::bigint, 1
                  FROM queue_now WHERE visible > sent) AS changed
            GROUP BY queue, received, second HAVING sum(change) <> 0
            ORDER BY queue, received, second
            ON CONFLICT (queue, slot, received, second)
            DO UPDATE SET messages = queue_hidden.messages + excluded.messages;
    ELSE
        INSERT INTO queue_hidden (queue, slot, received, second, messages)
            SELECT queue, pg_backend_pid() % 16, (receives > 0)::int, floor(visible)::bigint,
                   CASE TG_OP WHEN 'INSERT' THEN count(*) ELSE -count(*) END
            FROM queue_changed WHERE visible > sent
            GROUP BY 1, 2, 3, 4 ORDER BY 1, 3, 4
            ON CONFLICT (queue, slot, received, second)
            DO UPDATE SET messages = queue_hidden.messages + excluded.messages;
    END IF;
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER queue_hidden_insert AFTER INSERT ON queue_messages
    REFERENCING NEW TABLE AS queue_changed
    FOR EACH STATEMENT EXECUTE FUNCTION queue_hidden_change();
CREATE OR REPLACE TRIGGER queue_hidden_delete AFTER DELETE ON queue_messages
    REFERENCING OLD TABLE AS queue_changed
    FOR EACH STATEMENT EXECUTE FUNCTION queue_hidden_change();
CREATE OR REPLACE TRIGGER queue_hidden_update AFTER UPDATE ON queue_messages
    REFERENCING OLD TABLE AS queue_was NEW TABLE AS queue_now
    FOR EACH STATEMENT EXECUTE FUNCTION queue_hidden_change();
"""

#: Version 4's recount of ``queue_hidden`` from the messages, by engine: run
#: in the migration's transaction, with no write to the messages meanwhile.
_RECOUNT_HIDDEN = {
    "sqlite": (
        "INSERT INTO queue_hidden (queue, received, second, messages)"
        " SELECT queue, receives > 0, CAST(visible AS INTEGER), count(*)"
        " FROM queue_messages WHERE visible > sent GROUP BY 1, 2, 3"
    ),
    "postgresql": (
        "INSERT INTO queue_hidden (queue, slot, received, second, messages)"
        " SELECT queue, 0, (receives > 0)::int, floor(visible)::bigint, count(*)"
        " FROM queue_messages WHERE visible > sent GROUP BY 1, 3, 4"
    ),
}

# GetQueueAttributes in one statement, each part a seek or a short index range.
# What is hidden is summed from ``queue_hidden`` over the seconds after the
# current one (``:second``); those of the current second, visible again
# before ``:next``, are counted in the indexes (at most a second's claims).
# A delayed message (never received, visible later) has visible > sent, as
# ``queue_messages_delayed`` requires: it was sent no later than now.
_STATS = """
SELECT
    (SELECT coalesce(sum(messages), 0) FROM queue_counts WHERE queue = :queue),
    (SELECT coalesce(sum(messages), 0) FROM queue_hidden
        WHERE queue = :queue AND received = 1 AND second > :second),
    (SELECT coalesce(sum(messages), 0) FROM queue_hidden
        WHERE queue = :queue AND received = 0 AND second > :second),
    (SELECT count(*) FROM queue_messages INDEXED BY queue_messages_visible
        WHERE queue = :queue AND visible > :now AND visible < :next),
    (SELECT count(*) FROM queue_messages INDEXED BY queue_messages_delayed
        WHERE queue = :queue AND visible > :now AND visible < :next
        AND receives = 0 AND visible > sent),
    (SELECT min(sent) FROM queue_messages INDEXED BY queue_messages_sent
        WHERE queue = :queue AND sent >= :expiry),
    coalesce(sum(CASE WHEN visible <= :now THEN 1 ELSE 0 END), 0),
    coalesce(sum(CASE WHEN visible > :now AND receives > 0 THEN 1 ELSE 0 END), 0),
    coalesce(sum(CASE WHEN visible > :now AND receives = 0 THEN 1 ELSE 0 END), 0)
FROM queue_messages INDEXED BY queue_messages_sent WHERE queue = :queue AND sent < :expiry
"""

FIFO_SUFFIX = ".fifo"
DEDUP_WINDOW = 300.0
PURGE_INTERVAL = 60.0
EXPIRE_INTERVAL = 60.0
HOUSEKEEPING_INTERVAL = 60.0  # retention of the queues a pipeline runs
MAX_BATCH = 10
MAX_ATTRIBUTES = 10
MAX_BATCH_BYTES = 1_048_576  # bodies and message attributes of a SendMessageBatch
#: A FIFO message without a deduplication id on a queue that does not make them (SQS's words).
NO_DEDUPLICATION = (
    "The queue should either have ContentBasedDeduplication enabled or MessageDeduplicationId"
    " provided explicitly"
)
MAX_WAIT = 20
# Another process's sends cannot wake us on SQLite; a long poll looks again this often.
CROSS_PROCESS_CHECK = 0.25
# On PostgreSQL they do (LISTEN/NOTIFY on ``CHANNEL``: every send, release,
# visibility change and move of every runner is announced there), and what
# becomes visible by time is found by reading; a poll still looks again this
# often, in case a notification was lost unseen. While the store is not
# listening (its connection for it is down) it looks every CROSS_PROCESS_CHECK.
LISTENING_CHECK = 5.0
# Announcements go only to stores waiting on the queue (``Dialect.wait_on``):
# a store waits on a queue from its first long poll that finds it empty
# until none of its long polls has been under way for this long (seconds).
STANDING_BY = 5.0
#: The notification channel of the queues on PostgreSQL: "<store> <queue> <count>".
CHANNEL = "pipelines_queues"
#: A queue's attributes as this store knows them are read again after this
#: long (seconds), since another runner (or process) may have changed them,
#: or deleted the queue.
ATTRIBUTES_AGE = 1.0
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")
_BATCH_ID = re.compile(r"[A-Za-z0-9_-]{1,80}")
_INVALID_BODY = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_DATA_TYPE = re.compile(r"(String|Number|Binary)(\..+)?")


def _ms(seconds: float) -> str:
    return str(int(seconds * 1000))


# -- attributes of a queue ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class RedrivePolicy:
    """Where messages go after ``max_receive_count`` receives without a delete."""

    dead_letter_queue: str
    max_receive_count: int


@dataclass(frozen=True, slots=True)
class QueueAttributes:
    """A queue's settings, with SQS's defaults and ranges."""

    visibility_timeout: int = 30
    delay_seconds: int = 0
    message_retention_period: int = 345_600
    maximum_message_size: int = 1_048_576
    receive_wait_time_seconds: int = 0
    redrive_policy: RedrivePolicy | None = None
    content_based_deduplication: bool = False

    RANGES: ClassVar[dict[str, tuple[int, int]]] = {
        "visibility_timeout": (0, 43_200),
        "delay_seconds": (0, 900),
        "message_retention_period": (60, 1_209_600),
        "maximum_message_size": (1_024, 1_048_576),
        "receive_wait_time_seconds": (0, MAX_WAIT),
    }

    @classmethod
    def parse(cls, name: str, given: Mapping[str, Any]) -> QueueAttributes:
        """Check settings as CreateQueue does; raises ``QueueError`` naming the attribute."""
        values: dict[str, Any] = {}
        known = {*cls.RANGES, "redrive_policy", "content_based_deduplication"}
        for key, value in given.items():
            if key not in known:
                raise QueueError(
                    "InvalidAttributeName",
                    f"unknown queue attribute {key!r} (known: {', '.join(sorted(known))})",
                )
            if key in cls.RANGES:
                low, high = cls.RANGES[key]
                if (
                    isinstance(value, bool)
                    or not isinstance(value, int)
                    or not low <= value <= high
                ):
                    raise QueueError(
                        "InvalidAttributeValue",
                        f"{key} must be an integer from {low} to {high}, not {value!r}",
                    )
                values[key] = value
        if "content_based_deduplication" in given:
            flag = given["content_based_deduplication"]
            if not isinstance(flag, bool):
                raise QueueError(
                    "InvalidAttributeValue", "content_based_deduplication must be true or false"
                )
            if flag and not name.endswith(FIFO_SUFFIX):
                raise QueueError(
                    "InvalidAttributeName",
                    "content_based_deduplication is only for FIFO queues (names ending .fifo)",
                )
            values["content_based_deduplication"] = flag
        redrive = given.get("redrive_policy")
        if redrive is not None:
            values["redrive_policy"] = _parse_redrive(name, redrive)
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {key: getattr(self, key) for key in self.RANGES}
        data["content_based_deduplication"] = self.content_based_deduplication
        if self.redrive_policy is not None:
            data["redrive_policy"] = {
                "dead_letter_queue": self.redrive_policy.dead_letter_queue,
                "max_receive_count": self.redrive_policy.max_receive_count,
            }
        return data


def _parse_redrive(name: str, redrive: Any) -> RedrivePolicy:
    if not isinstance(redrive, Mapping) or set(redrive) - {
        "dead_letter_queue",
        "max_receive_count",
    }:
        raise QueueError(
            "InvalidAttributeValue",
            "redrive_policy takes dead_letter_queue (a queue name) and max_receive_count (1-1000)",
        )
    target = redrive.get("dead_letter_queue")
    count = redrive.get("max_receive_count")
    if not isinstance(target, str) or not target:
        raise QueueError("InvalidAttributeValue", "redrive_policy.dead_letter_queue is required")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 1000:
        raise QueueError(
            "InvalidAttributeValue",
            f"redrive_policy.max_receive_count must be an integer from 1 to 1000, not {count!r}",
        )
    if target == name:
        raise QueueError("InvalidAttributeValue", "a queue cannot be its own dead-letter queue")
    if target.endswith(FIFO_SUFFIX) != name.endswith(FIFO_SUFFIX):
        raise QueueError(
            "InvalidAttributeValue",
            "the dead-letter queue of a FIFO queue must be FIFO, and of a standard queue standard",
        )
    return RedrivePolicy(target, count)


def _attributes_from_json(data: Mapping[str, Any]) -> QueueAttributes:
    redrive = data.get("redrive_policy")
    values = {key: value for key, value in data.items() if key != "redrive_policy"}
    policy = RedrivePolicy(**redrive) if redrive else None
    return QueueAttributes(**values, redrive_policy=policy)


def check_queue_name(name: object) -> str:
    if not isinstance(name, str):
        raise QueueError("InvalidParameterValue", f"a queue name is a string, not {name!r}")
    stem = name[: -len(FIFO_SUFFIX)] if name.endswith(FIFO_SUFFIX) else name
    if not _QUEUE_NAME.fullmatch(stem) or len(name) > 80:
        raise QueueError(
            "InvalidParameterValue",
            f"queue name {name!r}: 1 to 80 characters of letters, digits, '-' and '_'"
            " (a FIFO queue's name ends in .fifo, counted in the 80)",
        )
    return name


# -- messages ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendEntry:
    """One message to send (SendMessage's parameters; ``id`` is for batches)."""

    body: str
    attributes: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    delay_seconds: int | None = None
    group_id: str | None = None
    deduplication_id: str | None = None
    id: str = "0"


@dataclass(frozen=True, slots=True)
class SendResult:
    id: str
    message_id: str
    #: The body sent: its MD5 (``md5_of_body``) is made when asked for, by
    #: the API's answer, not for every message a target or a pipe sends.
    body: str = field(repr=False)
    sequence_number: str | None = None

    @property
    def md5_of_body(self) -> str:
        return _md5(self.body)

    def to_json(self) -> dict[str, Any]:
        data = {"Id": self.id, "MessageId": self.message_id, "MD5OfMessageBody": self.md5_of_body}
        if self.sequence_number is not None:
            data["SequenceNumber"] = self.sequence_number
        return data


@dataclass(frozen=True, slots=True)
class BatchError:
    """A batch entry that failed (the others are not affected)."""

    id: str
    code: str
    message: str
    sender_fault: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "Id": self.id,
            "Code": self.code,
            "Message": self.message,
            "SenderFault": self.sender_fault,
        }


class Message:
    """A received message, with SQS's system attributes.

    A receive makes ten of these per call: their ``attributes`` (SQS's
    system attributes) and ``message_attributes`` (stored as JSON) are made
    from the row when first read, not for a consumer that never reads them."""

    __slots__ = (
        "_attributes",
        "_message_attributes",
        "_row",
        "body",
        "message_id",
        "receipt_handle",
    )

    def __init__(
        self,
        message_id: str,
        receipt_handle: str,
        body: str,
        attributes: dict[str, str],
        message_attributes: dict[str, dict[str, str]],
    ) -> None:
        self.message_id = message_id
        self.receipt_handle = receipt_handle
        self.body = body
        self._attributes: dict[str, str] | None = attributes
        self._message_attributes: dict[str, dict[str, str]] | bytes | None = message_attributes
        self._row: tuple[Any, ...] = ()

    @classmethod
    def received(cls, row: Row, receipt_handle: str, fifo: bool) -> Message:
        """The message of a claimed row (``_RETURNED``'s columns), as received
        with ``receipt_handle``; its attributes made when first read."""
        message = cls.__new__(cls)
        message.message_id = row[2]
        message.receipt_handle = receipt_handle
        message.body = row[3]
        message._attributes = None
        message._message_attributes = row[4]  # JSON (bytes), or None for none
        message._row = (*row, fifo)
        return message

    @property
    def attributes(self) -> dict[str, str]:
        if self._attributes is None:
            self._attributes = _system_attributes(self._row)
        return self._attributes

    @property
    def message_attributes(self) -> dict[str, dict[str, str]]:
        found = self._message_attributes
        if found is None:
            found = self._message_attributes = {}
        elif not isinstance(found, dict):
            found = self._message_attributes = orjson.loads(found) if found else {}
        return found

    @property
    def md5_of_body(self) -> str:
        return _md5(self.body)

    @property
    def receive_count(self) -> int:
        return int(self.attributes["ApproximateReceiveCount"])

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "MessageId": self.message_id,
            "ReceiptHandle": self.receipt_handle,
            "MD5OfBody": self.md5_of_body,
            "Body": self.body,
            "Attributes": self.attributes,
        }
        if self.message_attributes:
            data["MessageAttributes"] = self.message_attributes
        return data

    def _values(self) -> tuple[Any, ...]:
        return (
            self.message_id,
            self.receipt_handle,
            self.body,
            self.attributes,
            self.message_attributes,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]  # mutable attributes, as the dataclass was

    def __repr__(self) -> str:
        return (
            f"Message(message_id={self.message_id!r}, receipt_handle={self.receipt_handle!r},"
            f" body={self.body!r}, attributes={self.attributes!r},"
            f" message_attributes={self.message_attributes!r})"
        )


def _system_attributes(row: tuple[Any, ...]) -> dict[str, str]:
    """SQS's system attributes of a claimed row (``_RETURNED``'s columns,
    then whether its queue is FIFO)."""
    _, seq, _, _, _, sent, receives, first, group, dedup, source, fifo = row
    system = {
        "SenderId": "pipelines",
        "SentTimestamp": _ms(sent),
        "ApproximateReceiveCount": str(receives),
        "ApproximateFirstReceiveTimestamp": _ms(first),
    }
    if source is not None:
        system["DeadLetterQueueSourceArn"] = queue_arn(source)
    if fifo:
        system["MessageGroupId"] = group
        system["MessageDeduplicationId"] = dedup
        system["SequenceNumber"] = f"{seq:020d}"
    return system


def message_attribute(value: Any) -> dict[str, str]:
    """A message attribute in SQS's shape, from a plain value or SQS's own shape."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, bool):
        return {"DataType": "String", "StringValue": str(value).lower()}
    if isinstance(value, int | float):
        return {"DataType": "Number", "StringValue": repr(value)}
    if isinstance(value, bytes):
        return {"DataType": "Binary", "BinaryValue": base64.b64encode(value).decode()}
    return {"DataType": "String", "StringValue": str(value)}


def _check_attributes(attributes: Mapping[str, Any]) -> tuple[bytes | None, int]:
    """Validate message attributes (SQS's shape, or plain values as
    ``message_attribute`` reads them); return them as stored (JSON, None
    when there are none) and their size in bytes as SQS counts it: each
    one's name, data type and value."""
    if not attributes:
        return None, 0
    if len(attributes) > MAX_ATTRIBUTES:
        raise QueueError(
            "InvalidParameterValue",
            f"a message has at most {MAX_ATTRIBUTES} attributes, not {len(attributes)}",
        )
    checked: dict[str, dict[str, str]] = {}
    size = 0
    for name, given in attributes.items():
        kind = type(given)
        if kind is int and -_BIG_INT < given < _BIG_INT:
            # The common plain value, inline: a send checks every message's.
            text = repr(given)
            value: dict[str, str] = {"DataType": "Number", "StringValue": text}
            value_size = 6 + len(text)
        elif kind is not dict and not isinstance(given, Mapping):
            value, value_size = _checked_plain(name, given)
        else:
            value, value_size = _checked_shape(name, given)
        checked[name] = value
        size += (len(name) if name.isascii() else len(name.encode())) + value_size
    return orjson.dumps(checked), size


#: An int of fewer digits than this one's is a finite float: a Number attribute
#: with no need to parse it again.
_BIG_INT = 10**300


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def _checked_plain(name: str, given: Any) -> tuple[dict[str, str], int]:
    """A plain value as an attribute (``message_attribute``'s reading), and its
    data type's and value's size: its data type needs no check."""
    if isinstance(given, bool) or not isinstance(given, int | float | bytes):
        text = str(given).lower() if isinstance(given, bool) else str(given)
        if not text:
            raise QueueError(
                "InvalidParameterValue",
                f"message attribute {name!r}: StringValue must be a non-empty string",
            )
        return {"DataType": "String", "StringValue": text}, 6 + _utf8_size(text)
    if isinstance(given, bytes):
        return {"DataType": "Binary", "BinaryValue": base64.b64encode(given).decode()}, 6 + len(
            given
        )
    text = repr(given)
    _check_number(name, text)
    return {"DataType": "Number", "StringValue": text}, 6 + len(text)


def _check_number(name: str, text: str) -> None:
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise QueueError(
            "InvalidParameterValue", f"message attribute {name!r}: {text!r} is not a number"
        )


def _checked_shape(name: str, given: Mapping[str, Any]) -> tuple[dict[str, str], int]:
    """An attribute in SQS's shape, checked, and its data type's and value's size."""
    kind = given.get("DataType", "")
    if not isinstance(kind, str) or not _DATA_TYPE.fullmatch(kind):
        raise QueueError(
            "InvalidParameterValue",
            f"message attribute {name!r}: DataType must be String, Number or Binary"
            f" (optionally .custom), not {kind!r}",
        )
    if kind.startswith("Binary"):
        raw = given.get("BinaryValue")
        try:
            payload = base64.b64decode(raw or "", validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise QueueError(
                "InvalidParameterValue",
                f"message attribute {name!r}: BinaryValue must be base64",
            ) from None
        return {"DataType": kind, "BinaryValue": raw or ""}, _utf8_size(kind) + len(payload)
    text = given.get("StringValue")
    if not isinstance(text, str) or not text:
        raise QueueError(
            "InvalidParameterValue",
            f"message attribute {name!r}: StringValue must be a non-empty string",
        )
    if kind.startswith("Number"):
        _check_number(name, text)
    return {"DataType": kind, "StringValue": text}, _utf8_size(kind) + _utf8_size(text)


def _entry_size(entry: SendEntry) -> int:
    """The bytes of a batch entry that failed its checks, as near as SQS
    would count them (body, and each attribute's name, data type and value):
    what it adds to its batch's size."""
    size = len(entry.body.encode()) if isinstance(entry.body, str) else 0
    for name, given in entry.attributes.items():
        value = message_attribute(given)
        size += len(str(name).encode()) + len(str(value.get("DataType", "")).encode())
        text, binary = value.get("StringValue"), value.get("BinaryValue")
        if isinstance(text, str):
            size += len(text.encode())
        if isinstance(binary, str):
            size += len(binary) * 3 // 4  # base64: about the bytes it holds
    return size


# The variant digit of a random UUID (RFC 9562: 10xx) for each random hex digit.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


class _Randomness:
    """Random 128-bit values as 32 hex digits, drawn from the OS
    (``os.urandom``) 256 at a time: message ids and receipt tokens stay
    unpredictable, but a send or a receive makes no system call of its own.
    (A system call lets go of the GIL: while a connection's thread runs,
    getting it back cost the event loop tens of microseconds each time.)
    ``popleft`` is atomic, so threads never get the same value; a forked
    child drops what its parent drew."""

    DRAW = 256

    def __init__(self) -> None:
        self._values: collections.deque[str] = collections.deque()

    def hex32(self) -> str:
        try:
            return self._values.popleft()
        except IndexError:
            digits = os.urandom(16 * self.DRAW).hex()
            self._values.extend(digits[n : n + 32] for n in range(0, len(digits), 32))
            return self.hex32()

    def forget(self) -> None:
        self._values.clear()


_RANDOM = _Randomness()
os.register_at_fork(after_in_child=_RANDOM.forget)


def _message_id(digits: str) -> str:
    """A random (version 4) UUID as text, as ``str(uuid.uuid4())`` gives, in
    a quarter of its time: it is made for every message sent. ``digits``:
    32 random hex digits."""
    return (
        f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}"
        f"-{_VARIANT[digits[16]]}{digits[17:20]}-{digits[20:]}"
    )


def _receipt(seq: int, token: str) -> str:
    return f"{seq}.{token}"


def _parse_receipt(handle: object) -> tuple[int, str]:
    parsed = _receipt_parts(handle)
    if parsed is None:
        raise _invalid_receipt(handle)
    return parsed


def _receipt_parts(handle: object) -> tuple[int, str] | None:
    """A receipt handle's seq and token; None for a malformed one (no
    exception: a DeleteMessageBatch reads ten)."""
    if isinstance(handle, str):
        seq, dot, token = handle.partition(".")
        if dot and seq.isdigit() and token:
            return int(seq), token
    return None


def _invalid_receipt(handle: object) -> QueueError:
    return QueueError(
        "ReceiptHandleIsInvalid",
        f'The input receipt handle "{handle}" is not a valid receipt handle.',
    )


# -- the store ---------------------------------------------------------------


class _Wakeups:
    """Long polls waiting for a queue, in this process (any event loop), each
    with how many messages it wants, first come first woken; and what this
    process knows of a queue being empty, so that a poll need not claim
    nothing to find out (with several consumers, each receive after the batch
    it took did: two statements for nothing on the one writer)."""

    def __init__(self) -> None:
        self.waiting: dict[tuple[str, str], dict[asyncio.Future[None], int]] = {}
        #: Per queue, how many messages were notified in all: a clock that
        #: moves only when messages arrive.
        self.arrived: dict[tuple[str, str], int] = {}
        #: Per queue, how many notifications said "look again" (no count).
        self.resets: dict[tuple[str, str], int] = {}
        #: Per queue, what a claim that found it empty knows: ``arrived`` when
        #: it began, until when nothing becomes visible by time, and how many
        #: messages may have arrived since, not yet claimed in this process.
        self.empty: dict[tuple[str, str], list[Any]] = {}
        #: Per queue, the last claims' (``arrived`` when begun, messages taken):
        #: those begun after an empty look's start took what arrived meanwhile.
        self.takes: dict[tuple[str, str], collections.deque[tuple[int, int]]] = {}
        #: Per queue, the polls a notification woke that have not looked yet,
        #: each with the messages it wants: what they will take is not there
        #: for another poll to claim (it would claim nothing).
        self.promised: dict[tuple[str, str], dict[asyncio.Future[None], int]] = {}

    def mark(self, key: tuple[str, str]) -> tuple[int, int]:
        """Where the queue's notifications are, before a claim."""
        return self.arrived.get(key, 0), self.resets.get(key, 0)

    def seen_empty(self, key: tuple[str, str], mark: tuple[int, int], until: float) -> None:
        """A claim begun at ``mark`` found nothing visible before ``until``.
        Messages notified meanwhile may be there: they count as not claimed."""
        arrived, resets = self.mark(key)
        recent = self.takes.get(key, ())
        # A take forgotten (only the last are kept) leaves more counted: safe.
        taken = sum(count for began, count in recent if began >= mark[0])
        backlog = arrived - mark[0] - taken
        if resets == mark[1] and backlog >= 0:  # less: others' messages were there
            self.empty[key] = [mark[0], until, backlog]

    def took(self, key: tuple[str, str], mark: tuple[int, int], count: int) -> None:
        """A claim begun at ``mark`` took ``count`` messages. Once what may
        have arrived since the empty look is all taken, the queue is empty
        again as far as this process knows; a claim that took more than that
        found messages it did not know of, so nothing is known any more."""
        recent = self.takes.get(key)
        if recent is None:
            recent = self.takes[key] = collections.deque(maxlen=64)
        recent.append((mark[0], count))
        known = self.empty.get(key)
        if known is None or mark[0] < known[0]:
            return  # begun before the look: what it took is not in the count
        if count > known[2]:
            del self.empty[key]
        else:
            known[2] -= count

    def known_empty(
        self, key: tuple[str, str], now: float, promise: asyncio.Future[None] | None = None
    ) -> float | None:
        """Until when the queue is known to be empty, if it is, for a poll
        holding ``promise`` (its wake-up by a notification, or None): what
        may have arrived is promised to the other polls woken for it.
        Another process's sends are not known: they are seen at that time."""
        known = self.empty.get(key)
        if known is not None and now < known[1] and known[2] <= self._promised(key, promise):
            return float(known[1])
        return None

    def _promised(self, key: tuple[str, str], but: asyncio.Future[None] | None = None) -> int:
        """The messages promised to woken polls (``but``'s aside). A poll of
        a loop that closed before it looked will not look."""
        promises = self.promised.get(key)
        if not promises:
            return 0
        total = 0
        for future, wanted in list(promises.items()):
            if future.get_loop().is_closed():
                del promises[future]
            elif future is not but:
                total += wanted
        return total

    def spent(self, key: tuple[str, str], promise: asyncio.Future[None] | None) -> None:
        """A poll looked, or knew there was nothing to look for: its wake-up
        (``promise``, if it held one) is spent. Messages known to have
        arrived that no woken poll will take wake polls that will."""
        if promise is not None:
            self._drop(key, promise)
        known = self.empty.get(key)
        if known is not None:
            spare = known[2] - self._promised(key)
            if spare > 0:
                self.wake(key, spare)

    def pass_on(self, key: tuple[str, str], promise: asyncio.Future[None]) -> None:
        """A poll woken while it claimed is not looking again: its wake-up goes
        to a poll that will."""
        self.wake(key, self._drop(key, promise))

    def _drop(self, key: tuple[str, str], promise: asyncio.Future[None]) -> int:
        promises = self.promised.get(key)
        wanted = 0 if promises is None else promises.pop(promise, 0)
        if promises is not None and not promises:
            del self.promised[key]
        return wanted

    def wait(self, key: tuple[str, str], wanted: int) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(key, {})[future] = wanted
        return future

    def forget(self, key: tuple[str, str], future: asyncio.Future[None]) -> bool:
        """Stop waiting; whether ``future`` had been woken by a notification
        (then its poll holds the wake-up: see ``spent`` and ``pass_on``)."""
        waiters = self.waiting.get(key)
        if waiters is None or future not in waiters:
            return True
        del waiters[future]
        if not waiters:
            del self.waiting[key]
        return False

    def notify(self, key: tuple[str, str], count: int) -> None:
        """``count`` messages became visible (0: some may, sooner than
        known): wake as many polls as it takes to want them all, no more.
        Waking every poll for one send (a stampede) would have all but one
        claim nothing, each a statement on the one writer."""
        known = self.empty.get(key)
        if count > 0:
            self.arrived[key] = self.arrived.get(key, 0) + count
            if known is not None:
                known[2] += count
        else:
            self.resets[key] = self.resets.get(key, 0) + 1
            self.empty.pop(key, None)
        self.wake(key, count)

    def wake(self, key: tuple[str, str], count: int) -> None:
        """Wake polls wanting ``count`` messages in all (first come first)."""
        waiters = self.waiting.get(key)
        while waiters and count > 0:
            future = next(iter(waiters))
            wanted = waiters.pop(future)
            count -= wanted
            self.promised.setdefault(key, {})[future] = wanted
            if future.done():
                continue
            loop = future.get_loop()
            if loop is _running_loop():
                _wake(future)  # its poll goes on at the loop's next turn
            else:
                with contextlib.suppress(RuntimeError):  # that loop is closed
                    loop.call_soon_threadsafe(_wake, future)
        if waiters is not None and not waiters:
            self.waiting.pop(key, None)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_WAKEUPS = _Wakeups()
#: Numbers each time a store begins waiting on a queue (``QueueStore._stand_by``).
_WAITINGS = itertools.count(1)


@dataclass(slots=True)
class _Queue:
    name: str
    attributes: QueueAttributes
    #: When they were read (``time.monotonic``): see ``ATTRIBUTES_AGE``.
    read: float = field(default_factory=time.monotonic)
    #: Whether it is a FIFO queue (by its name; a field, read several times a call).
    fifo: bool = field(init=False)

    def __post_init__(self) -> None:
        self.fifo = self.name.endswith(FIFO_SUFFIX)


class QueueStore(Store):
    """The queues of one state database: SQS's API, in Python.

    Open with ``await QueueStore.open(path)``; close with ``close()`` (or use
    ``async with``). Every method takes the queue's name, as SQS's take its URL.

    On PostgreSQL, several stores on one database (runners on several
    machines) share its queues: claims skip the rows another runner's claim
    holds (``FOR UPDATE SKIP LOCKED``), a FIFO queue's claims and sends each
    run one at a time in the cluster (a transaction-scoped advisory lock per
    queue), and the store listens on ``CHANNEL`` (a connection of its own,
    closed with it) so that a send on another runner wakes its long polls.
    """

    name = "queues"
    #: 2: the indexes for retention and GetQueueAttributes; 3: queue_counts;
    #: 4: queue_hidden.
    version = 4
    schema = SCHEMA
    engine_schema = MappingProxyType(
        {"sqlite": COUNTS + HIDDEN, "postgresql": PG_COUNTS + PG_HIDDEN}
    )

    def __init__(self, clock: Clock | None = None) -> None:
        super().__init__(clock)
        self._queues: dict[str, _Queue] = {}
        self._expired: dict[str, float] = {}
        # Long polls of every store on the same file share wake-ups.
        self._key = ""
        #: This store among those announcing on ``CHANNEL``: it skips its own.
        self._id = _RANDOM.hex32()[:16]
        #: The statement announcing messages to the other stores (PostgreSQL).
        self._notify: str | None = None
        #: How long a long poll that found nothing waits at most before it looks again.
        self._check = CROSS_PROCESS_CHECK
        self._listener: asyncio.Task[None] | None = None
        self._json_batches = False
        #: The queues this store waits on (PostgreSQL: the others announce
        #: what they make visible in them), each with the number of its
        #: waiting (a new one each time it begins).
        self._standing_by: dict[str, int] = {}
        self._standing = asyncio.Lock()
        #: Per queue, the long polls under way; when the last of each ended.
        self._polls: collections.Counter[str] = collections.Counter()
        self._idle: dict[str, float] = {}
        self._sitting: asyncio.TimerHandle | None = None
        self._sit_downs: set[asyncio.Task[None]] = set()

    async def opened(self) -> None:
        path = self.path
        if isinstance(path, Path):
            self._key = str(path.resolve())
        else:
            # Each store of a shared database hears the others' sends on
            # ``CHANNEL``, its own in process: a key of its own, so that a
            # send is not counted twice by two stores of one process.
            self._key = f"{path}#{self._id}"
        self._notify = self.dialect.notify(CHANNEL)
        # On PostgreSQL a batch's rows go as one JSON parameter, not 80: psycopg
        # keeps a statement's conversion for the next call only up to 50
        # parameters, and parsing it again cost a send more than its round
        # trip. SQLite keeps its VALUES lists.
        self._json_batches = self.dialect.name == "postgresql"
        if self._notify is not None:
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._listener = asyncio.create_task(
                self._listen(ready), name=f"queue store {self._id}: notifications"
            )
            await ready  # listening before open returns: no send after it is missed

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        if self._sitting is not None:
            self._sitting.cancel()
            self._sitting = None
        for task in list(self._sit_downs):
            task.cancel()
        # (Closing the connection ends its waiting on every queue.)
        await super().close()

    async def _listen(self, ready: asyncio.Future[None]) -> None:
        """Hear the other stores' announcements until the store closes; when
        the connection for it fails, poll as on SQLite while it is made again."""
        errors: tuple[type[Exception], ...] = (StateError, *self.backend.errors)
        pause = 0.1
        while True:
            listening = self.backend.listen(self.path, CHANNEL)
            assert listening is not None  # a backend with ``notify`` listens
            try:
                async with listening as payloads:
                    self._check = LISTENING_CHECK
                    if ready.done():
                        log.info("queue store %s: listening again", self._id)
                        self._look_again()  # what was announced meanwhile was missed
                    else:
                        ready.set_result(None)
                    pause = 0.1
                    async for payload in payloads:
                        self._heard(payload)
            except Exception as exc:
                if not ready.done():  # opening fails with it
                    ready.set_exception(exc)
                    return
                log.warning(
                    "queue store %s: not listening for other runners' messages (%s);"
                    " long polls look every %s s until it is back",
                    self._id,
                    str(exc).strip() or type(exc).__name__,
                    CROSS_PROCESS_CHECK,
                    exc_info=not isinstance(exc, errors),  # not the database's: a bug
                )
            finally:
                self._check = CROSS_PROCESS_CHECK
            self._look_again()
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)

    def _heard(self, payload: str) -> None:
        store, _, rest = payload.partition(" ")
        name, _, count = rest.partition(" ")
        if store != self._id and count.isdigit():
            self._wake(name, int(count))

    def _look_again(self) -> None:
        """Every long poll of this store looks again (announcements may be lost)."""
        for name in {key[1] for key in _WAKEUPS.waiting if key[0] == self._key}:
            self._wake(name, 0)

    def _wake(self, queue_name: str, count: int) -> None:
        """``count`` messages became visible in the queue (0: some may have,
        sooner than known: every poll of this store looks again)."""
        key = (self._key, queue_name)
        _WAKEUPS.notify(key, count)
        if count == 0:
            _WAKEUPS.wake(key, sys.maxsize)

    def _announcement(self, queue_name: str, count: int) -> tuple[str, str]:
        """The parameters of ``_notify``: the payload, and the queue's key."""
        return f"{self._id} {queue_name} {count}", queue_name

    async def _announce(self, queue_name: str, count: int) -> None:
        """Wake this store's polls, and tell the others waiting on the queue
        (PostgreSQL)."""
        self._wake(queue_name, count)
        if self._notify is not None:
            await self.execute(self._notify, self._announcement(queue_name, count))

    # -- waiting on a queue (PostgreSQL) ----------------------------------------
    #
    # The others announce what they make visible in a queue only while some
    # store waits on it (``Dialect.notify``): a store waits on a queue from
    # the first time one of its long polls finds it empty (and then looks
    # again, since what was sent before told nobody) until STANDING_BY
    # seconds after its last long poll of it ended. What a look finds empty
    # is known to stay so (``_WAKEUPS.seen_empty``) only if the store waited
    # on the queue all along. Its own sends are not announced to itself: it
    # wakes its own polls in process.

    def _waiting_since(self, name: str) -> int | None:
        """Since which waiting the store waits on the queue (SQLite: always, 0)."""
        if self._notify is None:
            return 0
        return self._standing_by.get(name)

    async def _stand_by(self, name: str) -> None:
        """Wait on the queue: the others announce it from when this returns.
        Shielded: a cancelled poll does not leave the waiting half begun."""
        await asyncio.shield(self._begin_waiting(name))

    async def _begin_waiting(self, name: str) -> None:
        async with self._standing:
            if name not in self._standing_by:
                assert self.dialect.wait_on is not None
                await self.execute(self.dialect.wait_on, (name,))
                self._standing_by[name] = next(_WAITINGS)

    def _poll_ended(self, name: str) -> None:
        self._polls[name] -= 1
        if self._polls[name] > 0:
            return
        del self._polls[name]
        self._idle[name] = time.monotonic()
        if self._sitting is None and name in self._standing_by:
            self._sitting = asyncio.get_running_loop().call_later(STANDING_BY, self._sit_down)

    def _sit_down(self) -> None:
        """Stop waiting on the queues no long poll has wanted for STANDING_BY."""
        self._sitting = None
        now = time.monotonic()
        next_due = math.inf
        for name in list(self._standing_by):
            if name in self._polls:
                continue
            due = self._idle.get(name, now) + STANDING_BY
            if due <= now:
                task = asyncio.create_task(self._end_waiting(name))
                self._sit_downs.add(task)
                task.add_done_callback(self._sit_downs.discard)
            else:
                next_due = min(next_due, due)
        if next_due < math.inf:
            self._sitting = asyncio.get_running_loop().call_later(next_due - now, self._sit_down)

    async def _end_waiting(self, name: str) -> None:
        try:
            async with self._standing:
                if name in self._polls or name not in self._standing_by:
                    return  # a poll came meanwhile
                del self._standing_by[name]
                self._idle.pop(name, None)
                # Seen empty while waiting; from now on, sent unannounced.
                _WAKEUPS.empty.pop((self._key, name), None)
                assert self.dialect.stop_waiting is not None
                await self.execute(self.dialect.stop_waiting, (name,))
        except Exception as exc:  # closing: the connection's end ends the waiting
            log.debug("queue store %s: waiting on %s not ended: %s", self._id, name, exc)

    async def migrate(self, connection: Queries, found: int) -> None:
        """``schema`` (run at every open, ``IF NOT EXISTS``) has already made
        the indexes of version 2; each step is idempotent all the same, so a
        step never depends on what ``schema`` did first."""
        if found < 2:
            for statement in _V2_INDEXES:
                await connection.execute(statement)
        if found < 3:
            # The triggers (made by ``schema``) count from now on; the messages
            # already there are counted once, under this transaction's write lock.
            # (SQLite's table: a PostgreSQL database's queue tables began at 3.)
            await connection.execute(
                "INSERT INTO queue_counts (queue, messages)"
                " SELECT queue, count(*) FROM queue_messages WHERE true GROUP BY queue"
                " ON CONFLICT (queue) DO UPDATE SET messages = excluded.messages"
            )
        if found < 4:
            # The triggers (made by ``schema``) may have counted a change since;
            # counted again from the messages, none of which changes meanwhile
            # (SQLite: this transaction holds the write lock; PostgreSQL: the
            # table is locked against writes until it commits).
            if self.dialect.name == "postgresql":
                await connection.execute("LOCK TABLE queue_messages IN SHARE MODE")
            await connection.execute("DELETE FROM queue_hidden WHERE true")
            await connection.execute(_RECOUNT_HIDDEN[self.dialect.name])

    def retention(self, queue_name: str) -> Upkeep:
        """The upkeep of a queue that a pipeline runs: messages past its
        retention period are deleted once a minute."""
        return Upkeep(
            HOUSEKEEPING_INTERVAL,
            functools.partial(self.expire, queue_name),
            f"queue {queue_name}: messages past retention",
        )

    async def _queue(self, name: str) -> _Queue:
        # Attributes are read again once they are ATTRIBUTES_AGE old: another
        # runner or process may have changed them, or deleted the queue. This
        # store's own changes refresh them at once.
        queue = self._queues.get(name)
        if queue is None or time.monotonic() - queue.read > ATTRIBUTES_AGE:
            rows = await self.rows("SELECT attributes FROM queues WHERE name = ?", (name,))
            if not rows:
                self._queues.pop(name, None)
                raise QueueError("QueueDoesNotExist", f"queue {name!r} does not exist")
            queue = _Queue(name, _attributes_from_json(orjson.loads(rows[0][0])))
            self._queues[name] = queue
        return queue

    # -- queues -------------------------------------------------------------

    async def create_queue(
        self, name: str, attributes: Mapping[str, Any] | None = None, *, update: bool = False
    ) -> QueueAttributes:
        """CreateQueue. An existing queue with other attributes is ``QueueNameExists``,
        unless ``update`` (what a config declaring the queue wants): then they are set."""
        check_queue_name(name)
        parsed = QueueAttributes.parse(name, attributes or {})
        stored = orjson.dumps(parsed.to_json()).decode()
        async with self.transaction() as db:
            # Created here, or found (another runner may create it at the same
            # moment: then its row is the one found, locked until this commits).
            created = await db.rows(
                self.dialect.insert_new("queues", ("name", "attributes", "created"))
                + " RETURNING name",
                (name, stored, self.clock.time()),
            )
            rows = (
                []
                if created
                else await db.rows(
                    "SELECT attributes FROM queues WHERE name = ?" + self.dialect.for_update,
                    (name,),
                )
            )
            if rows and rows[0][0] != stored:
                if not update:
                    raise QueueError(
                        "QueueNameExists",
                        f"queue {name!r} already exists with other attributes",
                    )
                await db.execute("UPDATE queues SET attributes = ? WHERE name = ?", (stored, name))
        self._queues[name] = _Queue(name, parsed)
        return parsed

    async def get_attributes(self, name: str) -> QueueAttributes:
        self._queues.pop(name, None)
        return (await self._queue(name)).attributes

    async def created(self, name: str) -> float:
        """When the queue was created (epoch seconds): GetQueueAttributes' CreatedTimestamp."""
        await self._queue(name)
        rows = await self.rows("SELECT created FROM queues WHERE name = ?", (name,))
        if not rows:
            raise QueueError("QueueDoesNotExist", f"queue {name!r} does not exist")
        return float(rows[0][0])

    async def list_queues(self, prefix: str = "") -> list[str]:
        rows = await self.rows(
            "SELECT name FROM queues WHERE substr(name, 1, ?) = ? ORDER BY name",
            (len(prefix), prefix),
        )
        return [row[0] for row in rows]

    async def delete_queue(self, name: str) -> None:
        await self._queue(name)
        await self.batch(  # one transaction in one trip
            [
                Step(f"DELETE FROM {table} WHERE {column} = ?", (name,))
                for table, column in (
                    ("queue_messages", "queue"),
                    ("queue_dedup", "queue"),
                    ("queues", "name"),
                    ("queue_counts", "queue"),
                    ("queue_hidden", "queue"),
                )
            ]
        )
        self._queues.pop(name, None)

    async def purge(self, name: str) -> int:
        """PurgeQueue: delete every message. Once per 60 seconds, as SQS allows."""
        await self._queue(name)
        now = self.clock.time()
        async with self.transaction() as db:
            last = await db.scalar(
                "SELECT purged FROM queues WHERE name = ?" + self.dialect.for_update, (name,)
            )
            if last is not None and now - last < PURGE_INTERVAL:
                raise QueueError(
                    "PurgeQueueInProgress",
                    f"queue {name!r} was purged {now - last:.0f} s ago; purge once per 60 seconds",
                )
            deleted = await db.execute("DELETE FROM queue_messages WHERE queue = ?", (name,))
            await db.execute("UPDATE queues SET purged = ? WHERE name = ?", (now, name))
        return deleted

    async def stats(self, name: str) -> dict[str, Any]:
        """GetQueueAttributes' counts, and the oldest message's age: exact, and
        without a scan of the backlog nor of what is in flight. The total
        comes from ``queue_counts``; what is in flight or delayed from
        ``queue_hidden``'s seconds to come, and for the current second from
        the visibility index and the delayed messages' partial index; the
        expired not yet deleted from the sent index (retention deletes them
        every minute); the visible are the rest."""
        queue = await self._queue(name)
        now = self.clock.time()
        expiry = now - queue.attributes.message_retention_period
        second = math.floor(now)  # (as the engine's bucket of a time after 1970)
        row = await self.reader.one(
            _STATS,
            {"queue": name, "now": now, "expiry": expiry, "second": second, "next": second + 1},
        )
        assert row is not None  # an aggregate always has its row
        # (PostgreSQL's sum of BIGINTs is a NUMERIC: read as a Decimal.)
        total, later_in_flight, later_delayed, soon, soon_delayed = (int(v) for v in row[:5])
        old_visible, old_in_flight, old_delayed = (int(value) for value in row[6:])
        oldest = row[5]
        in_flight = later_in_flight + soon - soon_delayed
        delayed = later_delayed + soon_delayed
        hidden = in_flight + delayed
        return {
            "ApproximateNumberOfMessages": total - hidden - old_visible,
            "ApproximateNumberOfMessagesNotVisible": in_flight - old_in_flight,
            "ApproximateNumberOfMessagesDelayed": delayed - old_delayed,
            "ApproximateAgeOfOldestMessage": 0 if oldest is None else int(now - oldest),
            "FifoQueue": queue.fifo,
            **queue.attributes.to_json(),
        }

    async def peek(self, name: str, limit: int = 50) -> list[dict[str, Any]]:
        """The queue's oldest messages as they are, without receiving them (no
        receive counted, no visibility changed): what the console browses.
        Each: MessageId, Body, MessageAttributes, SentTimestamp (epoch
        seconds), ReceiveCount, Visible (not in flight nor delayed), and
        DeadLetterQueueSource (the queue a redrive moved it from, if any)."""
        await self._queue(name)
        now = self.clock.time()
        rows = await self.reader.rows(
            "SELECT id, body, attributes, sent, receives, visible, source FROM queue_messages"
            " WHERE queue = ? ORDER BY seq LIMIT ?",
            (name, limit),
        )
        return [
            {
                "MessageId": message_id,
                "Body": body,
                "MessageAttributes": orjson.loads(attributes) if attributes else {},
                "SentTimestamp": sent,
                "ReceiveCount": receives,
                "Visible": visible <= now,
                "DeadLetterQueueSource": source,
            }
            for message_id, body, attributes, sent, receives, visible, source in rows
        ]

    # -- sending ------------------------------------------------------------

    async def send(
        self,
        queue_name: str,
        body: str,
        attributes: Mapping[str, Any] | None = None,
        *,
        delay_seconds: int | None = None,
        group_id: str | None = None,
        deduplication_id: str | None = None,
    ) -> SendResult:
        """SendMessage. Raises ``QueueError`` with SQS's code when SQS would refuse it."""
        entry = SendEntry(body, attributes or {}, delay_seconds, group_id, deduplication_id)
        sent, failed = await self._send(await self._queue(queue_name), [entry])
        if failed:
            raise QueueError(failed[0].code, failed[0].message)
        return sent[0]

    async def send_batch(
        self, queue_name: str, entries: Sequence[SendEntry]
    ) -> tuple[list[SendResult], list[BatchError]]:
        """SendMessageBatch: up to 10 entries; each succeeds or fails on its own."""
        queue = await self._queue(queue_name)
        _check_batch([entry.id for entry in entries])
        return await self._send(queue, entries, batch=True)

    async def _send(
        self, queue: _Queue, entries: Sequence[SendEntry], *, batch: bool = False
    ) -> tuple[list[SendResult], list[BatchError]]:
        """Each entry checked and made a row in one pass; a batch over SQS's
        size limit refused whole; then the rows stored."""
        now = self.clock.time()
        rows: list[tuple[SendEntry, tuple[Any, ...]]] = []
        failed: list[BatchError] = []
        total = 0
        for entry in entries:
            try:
                row, size = self._row(queue, entry, now)
            except QueueError as exc:
                failed.append(BatchError(entry.id, exc.code, exc.message))
                total += _entry_size(entry)
            else:
                rows.append((entry, row))
                total += size
        # SQS's limit of a whole batch is its largest message size, whatever
        # the queue's own (each entry is held to that one on its own).
        if batch and total > MAX_BATCH_BYTES:
            raise QueueError(
                "BatchRequestTooLong",
                f"Batch requests cannot be longer than {MAX_BATCH_BYTES} bytes."
                f" You have sent {total} bytes.",
            )
        if queue.fifo:
            sent = await self._insert_fifo(queue, rows, now)
        else:
            sent = await self._insert(queue, rows)
        return sent, failed

    def _row(self, queue: _Queue, entry: SendEntry, now: float) -> tuple[tuple[Any, ...], int]:
        """The entry's row, and its size in bytes (body and attributes)."""
        body = entry.body
        if not isinstance(body, str) or not body:
            raise QueueError("MissingParameter", "the message body must be a non-empty string")
        # Printable ASCII (most bodies: JSON) holds none of the characters SQS
        # refuses, known in two passes of C; anything else is searched.
        is_ascii = body.isascii()
        bad = None if is_ascii and body.isprintable() else _INVALID_BODY.search(body)
        if bad:
            raise QueueError(
                "InvalidMessageContents",
                f"the body holds the character U+{ord(bad.group()):04X}, which SQS does not allow",
            )
        encoded, attributes_size = _check_attributes(entry.attributes)
        size = (len(body) if is_ascii else len(body.encode())) + attributes_size
        limit = queue.attributes.maximum_message_size
        if size > limit:
            # SQS's words (recorded): body and attributes together, over the queue's limit.
            raise QueueError(
                "InvalidParameterValue",
                f"One or more parameters are invalid. Reason: Message must be shorter than"
                f" {limit} bytes.",
            )
        if queue.fifo or entry.delay_seconds is not None or entry.deduplication_id is not None:
            delay, dedup = self._delay_and_dedup(queue, entry)
        else:  # a standard queue's message as most are sent: nothing more to check
            delay, dedup = queue.attributes.delay_seconds, None
        message_id = _message_id(_RANDOM.hex32())
        row = (queue.name, message_id, body, encoded, now, now + delay, entry.group_id, dedup)
        return row, size

    def _delay_and_dedup(self, queue: _Queue, entry: SendEntry) -> tuple[int, str | None]:
        """The entry's delay and deduplication id, checked against its queue's kind."""
        delay = queue.attributes.delay_seconds
        if entry.delay_seconds is not None:
            if queue.fifo:
                # 0 is taken and means the queue's delay (AWS recorded); another is refused.
                if entry.delay_seconds != 0:
                    raise QueueError(
                        "InvalidParameterValue",
                        f"Value {entry.delay_seconds} for parameter DelaySeconds is invalid."
                        " Reason: The request include parameter that is not valid for this"
                        " queue type.",
                    )
            elif not 0 <= entry.delay_seconds <= 900:
                raise QueueError("InvalidParameterValue", "DelaySeconds must be from 0 to 900")
            else:
                delay = entry.delay_seconds
        dedup = entry.deduplication_id
        if queue.fifo:
            if not entry.group_id:
                raise QueueError(
                    "MissingParameter", "The request must contain the parameter MessageGroupId."
                )
            if dedup is None:
                if not queue.attributes.content_based_deduplication:
                    raise QueueError("InvalidParameterValue", NO_DEDUPLICATION)
                dedup = hashlib.sha256(entry.body.encode()).hexdigest()
        elif dedup is not None:
            raise QueueError(
                "InvalidParameterValue", "MessageDeduplicationId is only for FIFO queues"
            )
        return delay, dedup

    async def _insert(
        self, queue: _Queue, rows: list[tuple[SendEntry, tuple[Any, ...]]]
    ) -> list[SendResult]:
        if not rows:
            return []
        # One statement: all of the batch is stored, or none of it.
        flat: list[Any]
        if self._json_batches:
            # (a standard queue's rows: one queue, one sent time, no group)
            d = self.dialect
            insert = (
                "INSERT INTO queue_messages"
                " (queue, id, body, attributes, sent, visible, group_id, dedup_id)"
                f" SELECT ?, {d.json_item('r', 0, 'text')}, {d.json_item('r', 1, 'text')},"
                f" {d.json_item('r', 2, 'blob')}, ?, {d.json_item('r', 3, 'real')}, NULL, NULL"
                f" FROM {d.json_rows('r')}"
            )
            first = rows[0][1]
            flat = [
                first[0],
                first[4],
                orjson.dumps(
                    [
                        (row[1], row[2], None if row[3] is None else row[3].decode(), row[5])
                        for _, row in rows
                    ]
                ),
            ]
        else:
            values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * len(rows))
            flat = [value for _, row in rows for value in row]
            insert = (
                "INSERT INTO queue_messages"
                " (queue, id, body, attributes, sent, visible, group_id, dedup_id)"
                f" VALUES {values}"
            )
        if self._notify is not None:
            # Announced to the other runners waiting on the queue in the same
            # statement (PostgreSQL delivers it at its commit): no second trip.
            insert = f"WITH sent AS ({insert}) {self._notify}"
            flat.extend(self._announcement(queue.name, len(rows)))
        if self._json_batches:
            # PostgreSQL runs a statement awaited at once in this task (a task
            # to overlap with would cost more than making the results).
            results = [SendResult(entry.id, row[1], entry.body) for entry, row in rows]
            await self.grouped(insert, flat)
        else:
            stored = self.share(insert, flat)
            # Made while SQLite's thread stores them (told only once it has).
            results = [SendResult(entry.id, row[1], entry.body) for entry, row in rows]
            await stored
        self._wake(queue.name, len(rows))
        return results

    async def _insert_fifo(
        self, queue: _Queue, rows: list[tuple[SendEntry, tuple[Any, ...]]], now: float
    ) -> list[SendResult]:
        results = []
        stored = 0
        async with self.transaction() as db:
            if self.dialect.serialize is not None:
                # One send at a time per FIFO queue in the cluster: a message's
                # sequence number is taken in the order sends commit (a claim
                # never sees a later one of a group before an earlier one), and
                # two runners sending one deduplication id store it once.
                await db.execute(self.dialect.serialize, (f"queue send {queue.name}",))
            for entry, row in rows:
                dedup_id = row[7]
                found = await db.rows(
                    "SELECT message_id, seq FROM queue_dedup"
                    " WHERE queue = ? AND dedup_id = ? AND expires > ?",
                    (queue.name, dedup_id, now),
                )
                if found:  # a duplicate within five minutes: accepted, not stored again
                    message_id, seq = found[0]
                else:
                    inserted = await db.rows(
                        "INSERT INTO queue_messages"
                        " (queue, id, body, attributes, sent, visible, group_id, dedup_id)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
                        row,
                    )
                    message_id, seq = row[1], inserted[0][0]
                    stored += 1
                    await db.execute(
                        self.dialect.upsert(
                            "queue_dedup",
                            ("queue", "dedup_id", "expires", "message_id", "seq"),
                            ("queue", "dedup_id"),
                        ),
                        (queue.name, dedup_id, now + DEDUP_WINDOW, message_id, seq),
                    )
                results.append(SendResult(entry.id, message_id, entry.body, f"{seq:020d}"))
            if stored and self._notify is not None:
                await db.execute(self._notify, self._announcement(queue.name, stored))
        if stored:
            self._wake(queue.name, stored)
        return results

    # -- receiving ----------------------------------------------------------

    async def receive(
        self,
        queue_name: str,
        max_messages: int = 1,
        *,
        wait_time: float | None = None,
        visibility_timeout: int | None = None,
    ) -> list[Message]:
        """ReceiveMessage, with long polling: waits up to ``wait_time`` seconds
        (default: the queue's ``receive_wait_time_seconds``) for a message, and
        returns as soon as one is there."""
        queue = await self._queue(queue_name)
        if isinstance(max_messages, bool) or not 1 <= max_messages <= MAX_BATCH:
            raise QueueError(
                "InvalidParameterValue", f"MaxNumberOfMessages must be 1 to 10, not {max_messages}"
            )
        wait = queue.attributes.receive_wait_time_seconds if wait_time is None else wait_time
        if not 0 <= wait <= MAX_WAIT:
            raise QueueError(
                "InvalidParameterValue", f"WaitTimeSeconds must be 0 to 20, not {wait}"
            )
        timeout = queue.attributes.visibility_timeout
        if visibility_timeout is not None:
            if not 0 <= visibility_timeout <= 43_200:
                raise QueueError(
                    "InvalidParameterValue", "VisibilityTimeout must be 0 to 43200 seconds"
                )
            timeout = visibility_timeout
        deadline = self.clock.time() + wait
        key = (self._key, queue.name)
        # The wake-up this poll holds, when a notification woke it: until it
        # looks, the messages it wants are promised to it, and the other
        # polls do not claim them too (they would claim nothing).
        promise: asyncio.Future[None] | None = None
        if wait > 0:
            self._polls[queue.name] += 1  # the store keeps waiting on the queue meanwhile
        try:
            while True:
                # Listen before looking, so a send in between is not missed.
                woken = _WAKEUPS.wait(key, max_messages)
                try:
                    now = self.clock.time()
                    messages: list[Message] = []
                    waiting = self._waiting_since(queue.name)
                    try:
                        empty_until = None
                        if wait > 0 and waiting is not None:
                            empty_until = _WAKEUPS.known_empty(key, now, promise)
                        if empty_until is None:
                            messages, empty_until = await self._look(
                                queue, max_messages, timeout, waiting
                            )
                    finally:
                        _WAKEUPS.spent(key, promise)
                        promise = None
                    now = self.clock.time()
                    if messages or now >= deadline:
                        break
                    if empty_until is None:
                        # Not waiting on the queue all along while it looked:
                        # what the others sent meanwhile told nobody. Wait on
                        # it, and look again.
                        await self._stand_by(queue.name)
                        continue
                    until = min(deadline, empty_until)
                    timer = self.clock.call_later(until - now, functools.partial(_wake, woken))
                    try:
                        await woken
                    finally:
                        timer.cancel()
                finally:
                    if _WAKEUPS.forget(key, woken):
                        promise = woken
        finally:
            if promise is not None:
                # A send woke this poll while it claimed, and it is not looking
                # again: pass the wake-up on to a poll that will.
                _WAKEUPS.pass_on(key, promise)
            if wait > 0:
                self._poll_ended(queue.name)
        return messages

    async def _look(
        self, queue: _Queue, limit: int, timeout: int, waiting: int | None
    ) -> tuple[list[Message], float | None]:
        """Claim messages; when there are none, also until when none can be
        (the next one due to become visible, or the next check for what
        another process may have sent unannounced),
        recorded for the other polls of this process if the store waited on
        the queue (``waiting``, from ``_waiting_since``) all along; not
        waiting on it, nothing more (None)."""
        key = (self._key, queue.name)
        mark = _WAKEUPS.mark(key)
        messages = await self._claim_or_release(queue, limit, timeout)
        if messages:
            _WAKEUPS.took(key, mark, len(messages))
            return messages, None
        if waiting is None or self._waiting_since(queue.name) != waiting:
            return [], None
        now = self.clock.time()
        until = now + self._check
        due = await self._next_visible(queue, now)
        if due is not None:
            until = min(until, due)
        _WAKEUPS.seen_empty(key, mark, until)
        return [], until

    async def _claim_or_release(self, queue: _Queue, limit: int, timeout: int) -> list[Message]:
        """Claim messages; if the caller is cancelled meanwhile, the claim (which
        goes on in SQLite's thread) is undone, so no receive is used up unseen."""
        await self._expire_now_and_then(queue)
        if not queue.fifo:
            return await self._claim_gathered(queue, limit, timeout)
        token = _RANDOM.hex32()
        try:
            return await self._claim(queue, limit, timeout, token)
        except asyncio.CancelledError:
            # The connection's thread runs statements in order: this comes
            # after the claim, whether or not the claim has run yet.
            await asyncio.shield(self._release(queue, token))
            raise

    async def _release(self, queue: _Queue, token: str) -> None:
        # Grouped as the claim was: submitted after it, it runs after it.
        released = await self.grouped(
            "UPDATE queue_messages SET visible = ?, receives = receives - 1, receipt = NULL"
            " WHERE queue = ? AND receipt = ? RETURNING seq",
            (self.clock.time(), queue.name, token),
        )
        if released:
            await self._announce(queue.name, len(released))

    async def _claim_gathered(self, queue: _Queue, limit: int, timeout: int) -> list[Message]:
        """A standard queue's claim, in one statement with those of the
        receives of the queue (same visibility timeout) that come while it
        waits for its trip: concurrent consumers make one claim per trip.
        Each receive gets its own share of the rows, never another's."""
        attributes = queue.attributes
        gathering, share, index = self.gather(
            ("claim", queue.name, timeout, id(attributes)),
            functools.partial(_Claims, self, queue, timeout),
            limit,
        )
        try:
            rows = await share
        except asyncio.CancelledError:
            # Its share is claimed with the others': given back once known.
            await asyncio.shield(self._release_share(queue, gathering, index))
            raise
        assert isinstance(gathering, _Claims)
        return await self._claimed(queue, rows, gathering.token, gathering.dead_letter)

    async def _release_share(self, queue: _Queue, gathering: Gathering, index: int) -> None:
        """Give back what a cancelled receive's share of a gathered claim
        took (the others' stays theirs), once the claim has run."""
        assert isinstance(gathering, _Claims) and gathering.outcome is not None
        try:
            rows = await gathering.outcome
        except Exception:  # the claim failed: nothing was taken
            return
        share = gathering.split(rows)[index]
        seqs = [row[1] for row in share if row[0] == queue.name]
        if len(seqs) < len(share):
            await self._moved(queue, gathering.dead_letter, len(share) - len(seqs))
        if not seqs:
            return
        released = await self.grouped(
            "UPDATE queue_messages SET visible = ?, receives = receives - 1, receipt = NULL"
            f" WHERE seq IN ({self.dialect.marks(len(seqs))})"
            f" AND {self.dialect.unindexed('queue')} = ? AND receipt = ? RETURNING seq",
            (self.clock.time(), *seqs, queue.name, gathering.token),
        )
        if released:
            await self._announce(queue.name, len(released))

    async def _expire_now_and_then(self, queue: _Queue) -> None:
        """Retention also for queues no pipeline runs a target for: at most once
        a minute, a receive deletes what is past it."""
        now = self.clock.time()
        if now - self._expired.get(queue.name, -math.inf) >= EXPIRE_INTERVAL:
            self._expired[queue.name] = now
            await self.expire(queue.name)

    async def _claim(self, queue: _Queue, limit: int, timeout: int, token: str) -> list[Message]:
        now = self.clock.time()
        redrive = queue.attributes.redrive_policy
        dead_letter = queue.name
        max_receives = 1 << 62
        if redrive is not None:
            dead_letter, max_receives = redrive.dead_letter_queue, redrive.max_receive_count
        claim = Step(
            _claim_sql(self.dialect, queue.fifo, limit, redrive is not None),
            {
                "queue": queue.name,
                "now": now,
                "expiry": now - queue.attributes.message_retention_period,
                "max_receives": max_receives,
                "dead_letter": dead_letter,
                "fifo": queue.fifo,
                "until": now + timeout,
                "token": token,
            },
        )
        serialize = self.dialect.serialize
        if queue.fifo and serialize is not None:
            # One claim at a time per FIFO queue in the cluster: a claim that
            # skipped a group's locked first message would take its second
            # one. The lock is the transaction's: both statements, one trip.
            key = Step(serialize, (f"queue claim {queue.name}",))
            rows = (await self.batch([key, claim]))[1].rows
        else:
            rows = await self.grouped(claim.sql, claim.parameters)
        return await self._claimed(queue, sorted(rows, key=lambda row: row[1]), token, dead_letter)

    async def _claimed(
        self, queue: _Queue, rows: list[Row], token: str, dead_letter: str
    ) -> list[Message]:
        """The messages of a claim's ``rows`` (in order); those that moved to
        the dead-letter queue instead are announced there."""
        messages = []
        moved = 0
        for row in rows:
            if row[0] != queue.name:
                moved += 1
                continue
            messages.append(self._message(queue, row, token))
        if moved:
            await self._moved(queue, dead_letter, moved)
        return messages

    async def _moved(self, queue: _Queue, dead_letter: str, count: int) -> None:
        log.info("%d messages of queue %s moved to %s", count, queue.name, dead_letter)
        await self._announce(dead_letter, count)

    def _message(self, queue: _Queue, row: Row, token: str) -> Message:
        return Message.received(row, _receipt(row[1], token), queue.fifo)

    async def _next_visible(self, queue: _Queue, now: float) -> float | None:
        rows = await self.grouped(
            "SELECT min(visible) FROM queue_messages WHERE queue = ? AND visible > ?",
            (queue.name, now),
        )
        return rows[0][0] if rows else None

    # -- after receiving ----------------------------------------------------

    async def delete(self, queue_name: str, receipt_handle: str) -> None:
        """DeleteMessage. A handle from an earlier receive is accepted and does
        nothing, as SQS documents; a malformed one is ``ReceiptHandleIsInvalid``."""
        _, failed = await self.delete_batch(queue_name, [("0", receipt_handle)])
        if failed:
            raise QueueError(failed[0].code, failed[0].message)

    async def delete_batch(
        self, queue_name: str, entries: Sequence[tuple[str, str]]
    ) -> tuple[list[str], list[BatchError]]:
        """DeleteMessageBatch: ``(id, receipt handle)`` pairs, up to 10."""
        queue = await self._queue(queue_name)
        _check_batch([entry_id for entry_id, _ in entries])
        handles: list[tuple[int, str]] = []
        deleted: list[str] = []
        failed: list[BatchError] = []
        for entry_id, handle in entries:
            parsed = _receipt_parts(handle)
            if parsed is None:
                error = _invalid_receipt(handle)
                failed.append(BatchError(entry_id, error.code, error.message))
            else:
                handles.append(parsed)
                deleted.append(entry_id)
        if not handles:
            return deleted, failed
        if not queue.fifo:
            # On a standard queue an old handle is accepted and deletes nothing:
            # no row to return, no answer to wait for but the commit. One
            # statement with the DeleteMessageBatch calls on the queue that
            # come while it waits for its trip.
            _, done, _ = self.gather(
                ("delete", queue.name),
                functools.partial(_Deletes, self.dialect, queue.name),
                handles,
            )
            await done
            return deleted, failed
        deleting = _deleting(self.dialect, len(handles))
        parameters: list[int | str] = [seq for seq, _ in handles]
        parameters.append(queue.name)
        for pair in handles:
            parameters += pair
        # On a FIFO queue a handle expires with its visibility timeout (SQS then
        # refuses it): the rows deleted say which were still valid.
        rows = await self.grouped(
            f"{deleting} AND visible > ? RETURNING seq", [*parameters, self.clock.time()]
        )
        gone = {row[0] for row in rows}
        given = dict(entries)
        valid = [entry_id for entry_id, _ in entries if entry_id in deleted]
        deleted = []
        for entry_id, (seq, _) in zip(valid, handles, strict=True):
            if seq in gone:
                deleted.append(entry_id)
            else:
                failed.append(
                    BatchError(
                        entry_id,
                        "InvalidParameterValue",
                        f"Value {given[entry_id]} for parameter ReceiptHandle is invalid."
                        " Reason: The receipt handle has expired.",
                    )
                )
        return deleted, failed

    async def change_visibility(self, queue_name: str, receipt_handle: str, timeout: int) -> None:
        """ChangeMessageVisibility: the message becomes visible ``timeout`` seconds from now."""
        queue = await self._queue(queue_name)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not 0 <= timeout <= 43_200:
            raise QueueError(
                "InvalidParameterValue", "VisibilityTimeout must be 0 to 43200 seconds"
            )
        seq, token = _parse_receipt(receipt_handle)
        now = self.clock.time()
        async with self.transaction() as db:
            rows = await db.rows(
                "SELECT visible, receipt FROM queue_messages WHERE seq = ?"
                f" AND {self.dialect.unindexed('queue')} = ?{self.dialect.for_update}",
                (seq, queue.name),
            )
            if not rows or rows[0][1] != token:
                # SQS's answer for a deleted message (AWS-validated).
                raise QueueError(
                    "InvalidParameterValue",
                    f"Value {receipt_handle} for parameter ReceiptHandle is invalid. Reason:"
                    " Message does not exist or is not available for visibility timeout change.",
                )
            if rows[0][0] <= now and queue.fifo:
                # A standard queue takes the handle of a message whose timeout
                # has ended and that nobody received since (AWS recorded).
                raise QueueError(
                    "MessageNotInflight", "the message's visibility timeout has already ended"
                )
            await db.execute(
                "UPDATE queue_messages SET visible = ? WHERE seq = ?", (now + timeout, seq)
            )
            # Also a shorter timeout may make it visible before what the polls
            # waiting for this queue know: a notification tells them to look
            # again (the other runners' at this commit).
            changed = 1 if timeout == 0 else 0
            if self._notify is not None:
                await db.execute(self._notify, self._announcement(queue.name, changed))
        self._wake(queue.name, changed)

    # -- housekeeping and redrive -------------------------------------------

    async def expire(self, queue_name: str) -> int:
        """Delete messages older than the retention period, and old deduplication ids."""
        queue = await self._queue(queue_name)
        now = self.clock.time()
        done = await self.batch(  # one transaction in one trip
            [
                Step(
                    "DELETE FROM queue_messages WHERE queue = ? AND sent < ?",
                    (queue.name, now - queue.attributes.message_retention_period),
                ),
                Step("DELETE FROM queue_dedup WHERE queue = ? AND expires <= ?", (queue.name, now)),
                # Seconds gone by that count nothing any more (one a second
                # of claims, else).
                Step(
                    "DELETE FROM queue_hidden WHERE queue = ? AND second < ? AND messages = 0",
                    (queue.name, math.floor(now)),
                ),
            ]
        )
        return done[0].changed

    async def move_messages(
        self,
        dead_letter_queue: str,
        destination: str | None = None,
        *,
        rate: int = 500,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """StartMessageMoveTask, run to its end: move the messages in
        ``dead_letter_queue`` back to the queue each came from (or to
        ``destination``), at most ``rate`` per second. Messages in flight stay,
        and so do those whose source queue no longer exists; a message that
        fails again and returns meanwhile is not moved twice."""
        await self._queue(dead_letter_queue)
        if not 1 <= rate <= 500:
            raise QueueError("InvalidParameterValue", "the move rate must be 1 to 500 per second")
        if destination is not None:
            await self._queue(destination)
        now = self.clock.time()
        rows = await self.rows(
            "SELECT seq, source FROM queue_messages WHERE queue = ? AND visible <= ? ORDER BY seq",
            (dead_letter_queue, now),
        )
        if destination is None and any(source is None for _, source in rows):
            raise QueueError(
                "InvalidParameterValue",
                f"some messages in {dead_letter_queue!r} were not dead-lettered from a queue:"
                " name a destination",
            )
        seqs = [seq for seq, _ in rows]
        moved = 0
        chunk = min(rate, 100)
        started = self.clock.time()
        for offset in range(0, len(seqs), chunk):
            part = seqs[offset : offset + chunk]
            marks = self.dialect.marks(len(part))
            moved_rows = await self.rows(
                "UPDATE queue_messages SET queue = coalesce(?, source), source = NULL,"
                " receives = 0, first_receive = NULL, receipt = NULL, visible = ?"
                f" WHERE seq IN ({marks}) AND {self.dialect.unindexed('queue')} = ?"
                " AND visible <= ?"
                " AND EXISTS (SELECT 1 FROM queues WHERE name = coalesce(?, source))"
                " RETURNING queue",
                [
                    destination,
                    self.clock.time(),
                    *part,
                    dead_letter_queue,
                    self.clock.time(),
                    destination,
                ],
            )
            moved += len(moved_rows)
            for name, count in collections.Counter(row[0] for row in moved_rows).items():
                await self._announce(name, count)
            if progress is not None:
                progress(moved, len(seqs))
            # Keep to ``rate`` per second: the next chunk starts no earlier than due.
            due = started + (offset + chunk) / rate
            if offset + chunk < len(seqs) and due > self.clock.time():
                await sleep(self.clock, due - self.clock.time())
        return moved


class _Claims(Gathering):
    """The claims of concurrent receives of one standard queue, as one
    statement: each part a receive's limit, the statement's LIMIT their sum,
    one receipt token for all (a handle is the message's seq and the token:
    each still its own). The claimed rows, in the queue's order (seq), go
    to the parts in turn: each receive gets the next ``limit`` of them, so
    no two get the same message, and none more than it asked for."""

    def __init__(self, store: QueueStore, queue: _Queue, timeout: int) -> None:
        super().__init__()
        now = store.clock.time()
        self.dialect = store.dialect
        # Held: its id is in the store's key for this gathering (receives of
        # the queue with other attributes start their own).
        self.attributes = queue.attributes
        redrive = queue.attributes.redrive_policy
        self.redrive = redrive is not None
        self.dead_letter = queue.name if redrive is None else redrive.dead_letter_queue
        self.token = _RANDOM.hex32()
        self.parameters = {
            "queue": queue.name,
            "now": now,
            "expiry": now - queue.attributes.message_retention_period,
            "max_receives": 1 << 62 if redrive is None else redrive.max_receive_count,
            "dead_letter": self.dead_letter,
            "fifo": False,
            "until": now + timeout,
            "token": self.token,
        }
        self._shares: list[list[Row]] | None = None

    def statement(self) -> Step:
        limit = sum(self.parts)
        return Step(_claim_sql(self.dialect, False, limit, self.redrive), self.parameters)

    def split(self, rows: list[Row]) -> list[list[Row]]:
        if self._shares is None:  # (a cancelled receive's release asks again)
            ordered = sorted(rows, key=lambda row: row[1])
            self._shares = []
            start = 0
            for limit in self.parts:
                self._shares.append(ordered[start : start + limit])
                start += limit
        return self._shares


class _Deletes(Gathering):
    """The DeleteMessageBatch calls on one standard queue, as one statement:
    each part a call's (seq, receipt token) pairs. A message named by a part
    already in starts another statement: the statement matches each seq
    with one token, and both handles may not be the valid one."""

    def __init__(self, dialect: Dialect, queue_name: str) -> None:
        super().__init__()
        self.dialect = dialect
        self.queue_name = queue_name
        self._seqs: set[int] = set()

    def accepts(self, part: Any) -> bool:
        seqs = {seq for seq, _ in part}
        if not self._seqs.isdisjoint(seqs):
            return False
        self._seqs |= seqs
        return True

    def statement(self) -> Step:
        handles = [pair for part in self.parts for pair in part]
        parameters: list[int | str] = [seq for seq, _ in handles]
        parameters.append(self.queue_name)
        for pair in handles:
            parameters += pair
        return Step(_deleting(self.dialect, len(handles)), parameters)

    def split(self, rows: list[Row]) -> list[list[Row]]:
        return [[] for _ in self.parts]


_RETURNED = (
    " RETURNING queue, seq, id, body, attributes, sent, receives, first_receive,"
    " group_id, dedup_id, source"
)


@functools.cache
def _claim_sql(dialect: Dialect, fifo: bool, limit: int, redrive: bool) -> str:
    """The claim of up to ``limit`` messages of a queue, in one statement
    (made once per kind of queue and limit: a receive only binds it).

    With a redrive policy, a candidate received too often moves to the
    dead-letter queue instead (SQS's redrive), the others are claimed with a
    new receipt (only to a dead-letter queue that exists: a message moved
    elsewhere is lost). Without one, nothing moves: the statement assigns no
    ``queue`` nor ``sent``, so SQLite rewrites only the visibility index's
    entry of each claimed message, not every index holding those columns,
    and the counting trigger on moves does not run."""
    # PostgreSQL plans by statistics, which a queue's churn leaves stale (a
    # queue filled since the last ANALYZE has an empty table's): it then
    # reads the candidates through the sent index and sorts them all, a
    # hundred times the work of the visibility index's first rows. With
    # the unary plus, the sent index cannot serve the term and the claim
    # stays on the visibility index. (SQLite picks that one by itself for
    # a standard queue, and its FIFO claims do better by the sent index.)
    sent = "+sent" if dialect.name == "postgresql" else "sent"
    # The limit (1 to 10) is written into the statement, not bound: with
    # ``LIMIT $n`` PostgreSQL's generic plan of the prepared claim must
    # guess how many rows it takes, and it guesses a hash join over the
    # whole table; so it planned every claim anew (as long as the rest
    # of the claim takes to run). With the number, the generic plan is
    # the custom one, made once per connection.
    candidates = (
        "SELECT seq FROM queue_messages m WHERE queue = :queue AND visible <= :now"
        f" AND {sent} >= :expiry"
    )
    if fifo:
        # A group is blocked while one of its messages is in flight, or an
        # earlier one is not yet visible: its order holds.
        candidates += (
            " AND NOT EXISTS (SELECT 1 FROM queue_messages x INDEXED BY queue_messages_group"
            " WHERE x.queue = :queue"
            " AND x.group_id = m.group_id AND x.visible > :now"
            f" AND (x.receives > 0 OR x.seq < m.seq)) ORDER BY seq LIMIT {int(limit)}"
        )
    else:
        candidates += f" ORDER BY visible, seq LIMIT {int(limit)}"
    # Rows another runner's claim holds are passed over, not waited for
    # (PostgreSQL; SQLite's write lock lets one claim run at a time).
    candidates += dialect.skip_locked
    if not redrive:
        return (
            "UPDATE queue_messages SET visible = :until, receipt = :token,"
            " receives = receives + 1, first_receive = coalesce(first_receive, :now)"
            f" WHERE seq IN ({candidates}){_RETURNED}"
        )
    moving = (
        "(receives >= :max_receives AND EXISTS (SELECT 1 FROM queues WHERE name = :dead_letter))"
    )
    return (
        "UPDATE queue_messages SET"
        f" queue = CASE WHEN {moving} THEN :dead_letter ELSE queue END,"
        f" source = CASE WHEN {moving} THEN queue ELSE source END,"
        f" sent = CASE WHEN {moving} AND :fifo THEN :now ELSE sent END,"
        f" visible = CASE WHEN {moving} THEN :now ELSE :until END,"
        f" receipt = CASE WHEN {moving} THEN NULL ELSE :token END,"
        f" receives = CASE WHEN {moving} THEN receives ELSE receives + 1 END,"
        f" first_receive = CASE WHEN {moving} THEN first_receive"
        " ELSE coalesce(first_receive, :now) END"
        f" WHERE seq IN ({candidates}){_RETURNED}"
    )


@functools.cache
def _deleting(dialect: Dialect, count: int) -> str:
    """DeleteMessageBatch's statement for ``count`` handles: the seqs, the
    queue, then (seq, receipt token) pairs."""
    marks = dialect.marks(count)
    receipts = " ".join(["WHEN ? THEN ?"] * count)
    # Rows looked up by seq (the primary key), not by the queue's index.
    return (
        f"DELETE FROM queue_messages WHERE seq IN ({marks})"
        f" AND {dialect.unindexed('queue')} = ?"
        f" AND receipt = CASE seq {receipts} END"
    )


def _md5(body: str) -> str:
    return hashlib.md5(body.encode()).hexdigest()


def queue_arn(name: str) -> str:
    return f"arn:aws:sqs:{DEFAULT_REGION}:{DEFAULT_ACCOUNT}:{name}"


def _check_batch(ids: Sequence[str]) -> None:
    """Batch entry ids as SQS takes them: 1 to 10, distinct, each of 1 to 80
    letters, digits, '-' or '_'. Clients number their entries the same way
    batch after batch, so ids found good are remembered (a few hundred
    sets): most batches are checked by one lookup."""
    key = tuple(ids)
    with contextlib.suppress(TypeError):  # an id that is no string: _check_ids names it
        if key in _GOOD_BATCHES:
            return
    _check_ids(ids)
    if len(_GOOD_BATCHES) >= 512:
        _GOOD_BATCHES.clear()
    _GOOD_BATCHES.add(key)


#: Sets of batch entry ids found good (``_check_batch``).
_GOOD_BATCHES: set[tuple[str, ...]] = set()


def _check_ids(ids: Sequence[str]) -> None:
    if not ids:
        raise QueueError("EmptyBatchRequest", "the batch has no entries")
    if len(ids) > MAX_BATCH:
        raise QueueError(
            "TooManyEntriesInBatchRequest", f"a batch has at most 10 entries, not {len(ids)}"
        )
    for entry_id in ids:
        if not isinstance(entry_id, str) or not _BATCH_ID.fullmatch(entry_id):
            raise QueueError(
                "InvalidBatchEntryId",
                f"batch entry id {entry_id!r}: 1 to 80 letters, digits, '-' or '_'",
            )
    if len(set(ids)) != len(ids):
        raise QueueError("BatchEntryIdsNotDistinct", "two batch entries have the same id")
