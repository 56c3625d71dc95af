"""MQTT messages to PutEvents entries, and topic templates for publishing."""

from __future__ import annotations

import base64
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from pipelines.errors import ConfigError, Where
from pipelines.event import ParsedDetail, parse_json
from pipelines.templates import PathTemplate


class Received(NamedTuple):
    """What a subscription hands on: the parts of a message an entry needs.
    A named tuple: one is made per message read, in about half the time of a
    frozen dataclass."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    user_properties: tuple[tuple[str, str], ...] = ()


def decode_payload(payload: bytes) -> tuple[Any, str]:
    """(value, encoding): parsed JSON, else UTF-8 text, else base64."""
    try:
        return parse_json(payload), "json"
    except (UnicodeDecodeError, ValueError, RecursionError):
        pass
    try:
        return payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(payload).decode("ascii"), "base64"


def event_entry(
    message: Received, source: str, detail_type: str, bus: str, metadata_key: str | None
) -> dict[str, Any]:
    """A message as an event: a JSON object payload is the detail itself;
    anything else is ``{"payload": ..., "encoding": json|utf-8|base64}``.
    The topic is the event's one resource; QoS, retain and user properties go
    under ``detail[metadata_key]`` unless the payload has that key itself."""
    value, encoding = decode_payload(message.payload)
    detail = value if isinstance(value, dict) else {"payload": value, "encoding": encoding}
    if metadata_key is not None and metadata_key not in detail:
        detail[metadata_key] = {
            "topic": message.topic,
            "qos": message.qos,
            "retain": message.retain,
            "user_properties": dict(message.user_properties),
        }
    return {
        "Source": source,
        "DetailType": detail_type,
        "Detail": ParsedDetail.of(detail),  # validated as text, not parsed again
        "Resources": [message.topic],
        "EventBusName": bus,
    }


def entries_of(message: Received, bus: str) -> list[Any]:
    """The ``entries`` format (a cluster's shared intake): the payload is one
    PutEvents entry, as ``pipelines put`` takes, or a list of them."""
    value, encoding = decode_payload(message.payload)
    if encoding != "json":
        return [None]  # fails alone: put_events reports it
    entries = value if isinstance(value, list) else [value]
    return [
        {"EventBusName": bus, **entry} if isinstance(entry, dict) else entry for entry in entries
    ]


@dataclass(frozen=True)
class TopicTemplate:
    """A publish topic with ``<path>`` placeholders filled from the event."""

    template: PathTemplate

    @property
    def text(self) -> str:
        return self.template.text

    @classmethod
    def parse(cls, where: Where, text: Any) -> TopicTemplate:
        template = PathTemplate.parse(where, text, "the topic to publish to")
        literal = template.literal
        if "+" in literal or "#" in literal or "\0" in literal:
            raise ConfigError(where, f"{text!r}: a topic to publish to has no + or # wildcard")
        return cls(template)

    def render(self, event: Mapping[str, Any]) -> str:
        if self.fixed is not None:  # no placeholder: the same topic for every event
            return self.fixed
        return self.template.render(event, "InvalidTopic", "topic", _topic_level)

    @functools.cached_property
    def fixed(self) -> str | None:
        """The topic when it has no placeholder, else None."""
        parts = self.template.parts
        return parts[0] if len(parts) == 1 and isinstance(parts[0], str) else None


def _topic_level(text: str) -> str | None:
    if not text or any(c in text for c in "+#/\0"):
        return f"{text!r}, which cannot be one topic level (empty, or has + # /)"
    return None


def topic_matches(pattern: str, topic: str) -> bool:
    """Whether a topic filter (``+`` one level, ``#`` the rest) takes a topic.
    A filter starting with a wildcard does not take a ``$`` topic (MQTT 5,
    section 4.7.2)."""
    if topic.startswith("$") and pattern[:1] in ("+", "#"):
        return False
    wanted = pattern.split("/")
    levels = topic.split("/")
    for index, level in enumerate(wanted):
        if level == "#":
            return True  # also the parent level: "a/#" takes "a"
        if index >= len(levels) or (level != "+" and level != levels[index]):
            return False
    return len(wanted) == len(levels)
