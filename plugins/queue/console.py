"""The queues' pages of the web console (the ``register_console`` hook).

Every queue of the state database with its counts; a queue's oldest
messages browsed without receiving them (``QueueStore.peek``), with the
error a dead letter carries; redrive (``QueueStore.move_messages``,
StartMessageMoveTask's semantics: each message back to the queue it was
dead-lettered from, or to a queue named) and purge.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipelines.console.sections import (
    Action,
    Detail,
    Field,
    Listing,
    SectionError,
    SectionHost,
)
from pipelines.errors import QueueError
from plugins.queue.store import QueueStore

#: The destination choice meaning "each message's own source queue".
TO_SOURCE = "(the queue each message came from)"
SHOWN = 50


class QueueSection:
    name = "queues"
    title = "Queues"

    async def _store(self, host: SectionHost) -> QueueStore:
        return await host.store(QueueStore, where="the console's queues")

    async def listing(self, host: SectionHost) -> Listing:
        store = await self._store(host)
        names = await store.list_queues()
        feeds: dict[str, list[str]] = {}
        rows = []
        stats = {}
        for name in names:
            stats[name] = await store.stats(name)
            policy = stats[name].get("redrive_policy")
            if policy:
                feeds.setdefault(policy["dead_letter_queue"], []).append(name)
        for name in names:
            found = stats[name]
            rows.append(
                {
                    "Queue": name,
                    "Visible": found["ApproximateNumberOfMessages"],
                    "In flight": found["ApproximateNumberOfMessagesNotVisible"],
                    "Delayed": found["ApproximateNumberOfMessagesDelayed"],
                    "Oldest (s)": found["ApproximateAgeOfOldestMessage"],
                    "Dead letters go to": (found.get("redrive_policy") or {}).get(
                        "dead_letter_queue", ""
                    ),
                    "Dead-letter queue of": ", ".join(feeds.get(name, [])),
                }
            )
        columns = list(rows[0]) if rows else ["Queue"]
        return Listing(columns, rows, keys=names, empty="no queues in the state database")

    async def detail(self, host: SectionHost, key: str, params: Mapping[str, str]) -> Detail:
        store = await self._store(host)
        try:
            stats = await store.stats(key)
            messages = await store.peek(key, SHOWN)
            names = await store.list_queues()
        except QueueError as error:
            raise SectionError(str(error)) from None
        rows = [_message_row(message) for message in messages]
        columns = ["Message", "Sent", "Receives", "Visible", "From", "Rule", "Error", "Body"]
        others = [name for name in names if name != key]
        return Detail(
            title=f"Queue {key}",
            facts={
                "Visible": stats["ApproximateNumberOfMessages"],
                "In flight": stats["ApproximateNumberOfMessagesNotVisible"],
                "Delayed": stats["ApproximateNumberOfMessagesDelayed"],
                "Oldest message (s)": stats["ApproximateAgeOfOldestMessage"],
                "FIFO": stats["FifoQueue"],
                "Redrive policy": stats.get("redrive_policy") or "none",
            },
            tables=[(f"Oldest messages (up to {SHOWN}, not received)", Listing(columns, rows))],
            actions=[
                Action(
                    "redrive",
                    "Redrive",
                    fields=[
                        Field("destination", "Move to", TO_SOURCE, choices=[TO_SOURCE, *others])
                    ],
                    confirm=f"Move the visible messages of {key}?",
                ),
                Action("purge", "Purge", confirm=f"Delete every message in {key}?"),
            ],
        )

    async def act(self, host: SectionHost, key: str, action: str, params: Mapping[str, str]) -> str:
        store = await self._store(host)
        try:
            if action == "redrive":
                destination = params.get("destination") or TO_SOURCE
                moved = await store.move_messages(
                    key, None if destination == TO_SOURCE else destination
                )
                where = "their source queues" if destination == TO_SOURCE else destination
                return f"moved {moved} messages from {key} to {where}"
            if action == "purge":
                return f"purged {await store.purge(key)} messages from {key}"
        except QueueError as error:
            raise SectionError(f"{error.code}: {error}") from None
        raise SectionError(f"queues have no action {action!r}")


def _message_row(message: Mapping[str, Any]) -> dict[str, Any]:
    attributes = message["MessageAttributes"]
    error = " ".join(
        value
        for value in (_text(attributes, "ERROR_CODE"), _text(attributes, "ERROR_MESSAGE"))
        if value
    )
    from pipelines.console.html import when

    return {
        "Message": message["MessageId"],
        "Sent": when(message["SentTimestamp"]),
        "Receives": message["ReceiveCount"],
        "Visible": message["Visible"],
        "From": message["DeadLetterQueueSource"] or "",
        "Rule": _text(attributes, "RULE_NAME"),
        "Error": error,
        "Body": message["Body"],
    }


def _text(attributes: Mapping[str, Any], name: str) -> str:
    """A message attribute's text, as the queue target stores a dead letter's."""
    value = attributes.get(name)
    if isinstance(value, Mapping):
        return str(value.get("StringValue", ""))
    return "" if value is None else str(value)
