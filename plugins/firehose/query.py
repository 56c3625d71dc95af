"""MetadataExtraction: partition keys from each record by a JQ query.

The query (``MetadataExtractionQuery``, ``JsonParsingEngine`` JQ-1.6) runs
through the ``jq`` binding (libjq). Most queries are an object of plain paths
(``{customer_id: .customer_id, device: .type.device}``): those are answered
by a JSON parse and dict lookups, which is 10 to 20 times faster than a
libjq call per record; ``tests/test_firehose_partitioning.py`` holds the
two to the same answers. Any other query goes through libjq.

A key's value is text: a string as it is, a number or true/false as JSON
writes it. A record that is not JSON, a query that fails or does not give an
object, and a key whose value is null, missing, an object or an array fail
the record's partitioning (it goes to the error output).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jq
import orjson

ENGINE = "JQ-1.6"

Keys = dict[str, str]

_SIMPLE = re.compile(
    r"^\s*\{\s*(?P<body>[A-Za-z_][A-Za-z0-9_]*\s*:\s*(?:\.[A-Za-z_][A-Za-z0-9_]*)+"
    r"(?:\s*,\s*[A-Za-z_][A-Za-z0-9_]*\s*:\s*(?:\.[A-Za-z_][A-Za-z0-9_]*)+)*)\s*\}\s*$"
)


class QueryFailed(ValueError):
    """A record's keys could not be extracted (the message says why)."""


def _key_text(name: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        raise QueryFailed(f"the query gave null for partition key {name!r}")
    if isinstance(value, dict | list):
        raise QueryFailed(f"the query gave an object or array for partition key {name!r}")
    if isinstance(value, bool):
        return "true" if value else "false"
    return _number_text(value)


def _number_text(value: int | float) -> str:
    """A number as key text, the same from libjq (which hands whole numbers
    over as Python ints) and from a JSON parse: jq's numbers are doubles, so
    an integer beyond 2**53 is the double it rounds to; a whole double below
    1e17 prints as an integer, any other in Python's shortest form."""
    number = float(value) if isinstance(value, int) and abs(value) > 2**53 else value
    if isinstance(number, float) and number.is_integer() and abs(number) < 1e17:
        return str(int(number))
    return repr(number) if isinstance(number, float) else str(number)


class MetadataQuery:
    """One compiled MetadataExtractionQuery: ``keys(data)`` gives a record's keys."""

    def __init__(self, text: str) -> None:
        self.text = text
        #: ``ValueError`` with libjq's message when it does not compile.
        self.program = jq.compile(text)
        self._paths = _simple_paths(text)
        self.keys: Callable[[bytes], Keys] = self._by_paths if self._paths else self._by_jq

    def _by_paths(self, data: bytes) -> Keys:
        try:
            record = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise QueryFailed("the record is not valid JSON") from None
        assert self._paths is not None
        keys: Keys = {}
        for name, path in self._paths:
            value = record
            for step in path:
                if isinstance(value, dict):
                    value = value.get(step)
                elif value is None:
                    break
                else:  # jq: "Cannot index <type> with <step>"
                    raise QueryFailed(f"the query failed: cannot index {_jq_type(value)}")
            keys[name] = _key_text(name, value)
        return keys

    def _by_jq(self, data: bytes) -> Keys:
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise QueryFailed("the record is not valid JSON (not UTF-8)") from None
        try:
            found = self.program.input_text(text).first()
        except (ValueError, StopIteration) as exc:
            raise QueryFailed(f"the query failed: {exc}") from None
        if not isinstance(found, dict):
            raise QueryFailed("the query did not give an object of partition keys")
        return {str(name): _key_text(str(name), value) for name, value in found.items()}

    def by_jq(self, data: bytes) -> Keys:
        """The keys as libjq gives them, whatever the query (for tests)."""
        return self._by_jq(data)


def _jq_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array"


def _simple_paths(text: str) -> list[tuple[str, list[str]]] | None:
    """An object of plain paths as (key, steps) pairs; None for any other query."""
    found = _SIMPLE.match(text)
    if found is None:
        return None
    pairs = []
    for item in found.group("body").split(","):
        name, _, path = item.partition(":")
        pairs.append((name.strip(), path.strip().split(".")[1:]))
    return pairs
