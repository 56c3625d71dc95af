"""AWS's pipes input templates: ``InputTemplate`` with ``<$.path>`` placeholders.

Unlike a rule target's input transformer (``pipelines.transform``), a pipe's
template names its paths inline (``<$.body.orderId>``) and its reserved
variables as ``<aws.pipes.pipe-name>`` and the like. The quoting rules are
EventBridge's, which ``pipelines.transform.render`` already keeps: a value
outside a JSON string goes in as JSON, a string inside one without its
quotes. A template that is JSON (an object, an array, a quoted string) gives
a JSON value; any other text is sent as it is, as AWS sends a template of
free text.

Paths read the record's *view*: an SQS body or a Kinesis record's data that
is JSON is parsed first (AWS's implicit body parsing), so ``<$.body.key>``
reaches into the message.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pipelines.errors import ConfigError, DeliveryError, Where
from pipelines.event import dump_json, parse_json
from pipelines.targets import JsonString
from pipelines.transform import Piece, compile_lookup, render, split_template

MAX_LENGTH = 8192
_PLACEHOLDER = re.compile(r"<(\$[^<>\s]*|aws\.pipes\.[A-Za-z0-9_.\-]+)>")
RESERVED = (
    "aws.pipes.pipe-arn",
    "aws.pipes.pipe-name",
    "aws.pipes.source-arn",
    "aws.pipes.enrichment-arn",
    "aws.pipes.target-arn",
    "aws.pipes.event.ingestion-time",
    "aws.pipes.event",
    "aws.pipes.event.json",
)


@dataclass(frozen=True)
class Reserved:
    """What the reserved variables say of one pipe and one event."""

    pipe_arn: str
    pipe_name: str
    source_arn: str
    enrichment_arn: str
    target_arn: str
    ingestion_time: str
    event: Any = None

    def value(self, name: str) -> Any:
        if name == "aws.pipes.event":
            return self.event
        if name == "aws.pipes.event.json":
            return dump_json(self.event).decode()
        return {
            "aws.pipes.pipe-arn": self.pipe_arn,
            "aws.pipes.pipe-name": self.pipe_name,
            "aws.pipes.source-arn": self.source_arn,
            "aws.pipes.enrichment-arn": self.enrichment_arn,
            "aws.pipes.target-arn": self.target_arn,
            "aws.pipes.event.ingestion-time": self.ingestion_time,
        }[name]


class InputTemplate:
    """A checked template; ``fill(view, reserved)`` gives the payload."""

    def __init__(
        self, text: str, pieces: list[Piece], readers: Mapping[str, Callable[[Any], Any]]
    ) -> None:
        self.text = text
        self._pieces = pieces
        self._readers = readers
        stripped = text.strip()
        self._structured = stripped[:1] in ("{", "[")
        #: A template that is one placeholder and nothing else (``<$.body>``):
        #: the value itself, whatever it is.
        self._alone = pieces[0][0] if len(pieces) == 1 and isinstance(pieces[0], tuple) else None

    @classmethod
    def parse(cls, where: Where, text: Any) -> InputTemplate:
        if not isinstance(text, str) or len(text) > MAX_LENGTH:
            raise ConfigError(where, f"must be text of at most {MAX_LENGTH} characters")
        pieces = split_template(text, _PLACEHOLDER)
        readers: dict[str, Callable[[Any], Any]] = {}
        for piece in pieces:
            if isinstance(piece, str):
                continue
            name = piece[0]
            if name.startswith("$"):
                readers[name] = compile_lookup(where, name)
            elif name not in RESERVED:
                raise ConfigError(
                    where, f"<{name}> is no reserved variable ({', '.join(RESERVED)})"
                )
        return cls(text, pieces, readers)

    def fill(self, view: Any, reserved: Reserved) -> Any:
        """The payload for one record (its view): a JSON value, or text."""
        values = {
            name: reserved.value(name) if name in RESERVED else self._readers[name](view)
            for piece in self._pieces
            if isinstance(piece, tuple)
            for name in (piece[0],)
        }
        if self._alone is not None:
            return values[self._alone]
        text = render(self._pieces, values, self._structured)
        try:
            value = parse_json(text)
        except (ValueError, RecursionError):
            if self._structured:
                raise DeliveryError(
                    "INVALID_JSON",
                    f"the input template produced invalid JSON: {text[:200]}",
                    retryable=False,
                ) from None
            return text
        return JsonString(value, text) if isinstance(value, str) else value
