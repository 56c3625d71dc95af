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
from collections.abc import Callable, Hashable, Sequence
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
    """One compiled MetadataExtractionQuery: ``keys(data)`` gives a record's keys.

    ``signature(data)`` gives them as a hashable value, cheaper to make
    per record (the plain-paths query: the keys' texts in the query's
    order, no dict; one key's text alone), which ``keys_of`` turns into
    the keys: a put groups its records by signature (``group``) and makes
    each group's keys once."""

    def __init__(self, text: str) -> None:
        self.text = text
        #: ``ValueError`` with libjq's message when it does not compile.
        self.program = jq.compile(text)
        self._paths = _simple_paths(text)
        self.keys: Callable[[bytes], Keys] = self._by_paths if self._paths else self._by_jq
        self.signature: Callable[[bytes], Hashable] = self._signature_by_jq
        self._names: tuple[str, ...] = ()
        self._step = ""  # the one field of a one-key, one-step query
        if self._paths is not None:
            self._names = tuple(name for name, _ in self._paths)
            if len(self._paths) == 1 and len(self._paths[0][1]) == 1:
                self._step = self._paths[0][1][0]
                self.signature = self._signature_of_one
            else:
                self.signature = self._signature_by_paths

    def keys_of(self, signature: Hashable) -> Keys:
        """The keys a ``signature`` stands for."""
        if self._step:
            assert isinstance(signature, str)
            return {self._names[0]: signature}
        if self._paths is not None:
            assert isinstance(signature, tuple)
            return dict(zip(self._names, signature, strict=True))
        assert isinstance(signature, frozenset)
        return dict(signature)

    def group(
        self, records: Sequence[bytes]
    ) -> tuple[dict[Hashable, list[int]], list[tuple[int, str]]]:
        """``records``' indexes by signature, and (index, why) of those whose
        keys fail: a put's partitioning in one loop."""
        groups: dict[Hashable, list[int]] = {}
        failed: list[tuple[int, str]] = []
        if self._step:
            # The common query ({key: .field}) inline: a parse and a lookup a record.
            loads, step, decode_error = orjson.loads, self._step, orjson.JSONDecodeError
            for index, data in enumerate(records):
                try:
                    record = loads(data)
                except decode_error:
                    failed.append((index, "the record is not valid JSON"))
                    continue
                value = record.get(step) if type(record) is dict else None
                if type(value) is not str:
                    try:
                        value = self._signature_of_record(record)
                    except QueryFailed as exc:
                        failed.append((index, str(exc)))
                        continue
                members = groups.get(value)
                if members is None:
                    groups[value] = [index]
                else:
                    members.append(index)
            return groups, failed
        signature = self.signature
        for index, data in enumerate(records):
            try:
                found = signature(data)
            except QueryFailed as exc:
                failed.append((index, str(exc)))
                continue
            members = groups.get(found)
            if members is None:
                groups[found] = [index]
            else:
                members.append(index)
        return groups, failed

    def _signature_of_one(self, data: bytes) -> Hashable:
        # The common query ({key: .field}): one parse, one lookup, no dict
        # made; anything unusual (not an object, a value not a string)
        # takes the general path, which says why it fails.
        try:
            record = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise QueryFailed("the record is not valid JSON") from None
        if type(record) is dict:
            value = record.get(self._step)
            if type(value) is str:
                return value
        return self._signature_of_record(record)

    def _signature_by_paths(self, data: bytes) -> Hashable:
        try:
            record = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise QueryFailed("the record is not valid JSON") from None
        return self._signature_of_record(record)

    def _signature_of_record(self, record: Any) -> Hashable:
        """A parsed record's signature, by the paths (a one-key query's: the text)."""
        assert self._paths is not None
        values = tuple(self._value(name, path, record) for name, path in self._paths)
        return values[0] if self._step else values

    def _signature_by_jq(self, data: bytes) -> Hashable:
        return frozenset(self._by_jq(data).items())

    def _by_paths(self, data: bytes) -> Keys:
        try:
            record = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise QueryFailed("the record is not valid JSON") from None
        assert self._paths is not None
        return {name: self._value(name, path, record) for name, path in self._paths}

    @staticmethod
    def _value(name: str, path: list[str], record: Any) -> str:
        value = record
        for step in path:
            if isinstance(value, dict):
                value = value.get(step)
            elif value is None:
                break
            else:  # jq: "Cannot index <type> with <step>"
                raise QueryFailed(f"the query failed: cannot index {_jq_type(value)}")
        return _key_text(name, value)

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
