"""Field index policies (CloudWatch Logs' PutIndexPolicy): the fields of a
log group whose values are extracted once, at ingest, so queries read a
column instead of the JSON message.

A policy document is ``{"Fields": ["requestId", ...]}``: 1 to 20 field names
of at most 100 characters (AWS's quotas). Each indexed field of a group gets
one of the 20 value columns of ``log_events`` (``f0`` ... ``f19``, its *slot*)
and the id from which events carry it (``since``): events written before the
field was indexed keep reading their JSON (AWS does not index them either).

The stored value is exactly what the reference evaluator discovers
(``insights.discover``), so SQL over it answers what Python would:

- a string as TEXT, an integer within 64 bits as INTEGER, a finite float as
  REAL; JSON's ``true``/``false`` as the strings Logs Insights shows;
- a missing field (or an object, an array, ``null``) as NULL;
- a value SQL cannot hold exactly (an integer past 64 bits, a string with a
  NUL, which SQLite's text functions stop at) as ``UNSURE`` (a BLOB): the
  reference code reads that event's message at query time.

Ingest also keeps, per indexed field, the SQL types its column has held
(``KINDS`` bits in ``log_index_fields.kinds``): what the planner must test for.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from pipelines.errors import LogsError
from plugins.logs.insights import discover

MAX_FIELDS = 20
MAX_FIELD_LENGTH = 100
SLOTS = tuple(f"f{i}" for i in range(MAX_FIELDS))
#: A value SQL cannot hold exactly: the reference code decides for that event.
UNSURE = b"\x00"
#: The SQL types a field's column has held (``log_index_fields.kinds``, a bit
#: each): a planner need not test for a type the column never held.
KINDS = {str: 1, int: 2, float: 4, bytes: 8}
ALL_KINDS = 15
_INT64 = (-(2**63), 2**63 - 1)
#: A top-level key read straight from the parsed object (no dots, no leading @):
#: discover's flattening gives exactly obj[key] for it.
_TOP_LEVEL = re.compile(r"[^.@][^.]*")


def parse_policy(document: str | Mapping[str, Any]) -> list[str]:
    """The fields of a policy document (JSON text or its object), checked
    against AWS's rules; InvalidParameterException otherwise."""
    if isinstance(document, str):
        try:
            document = orjson.loads(document)
        except orjson.JSONDecodeError:
            raise _invalid("the policy document is not JSON") from None
    if not isinstance(document, Mapping) or set(document) != {"Fields"}:
        raise _invalid('a policy document is {"Fields": [field names]}')
    fields = document["Fields"]
    if not isinstance(fields, list) or not 1 <= len(fields) <= MAX_FIELDS:
        raise _invalid(f"a policy indexes 1 to {MAX_FIELDS} fields")
    for name in fields:
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_FIELD_LENGTH:
            raise _invalid(f"a field name has 1 to {MAX_FIELD_LENGTH} characters, not {name!r}")
    if len(set(fields)) != len(fields):
        raise _invalid("a field is named twice in the policy")
    return list(fields)


def _invalid(message: str) -> LogsError:
    return LogsError("InvalidParameterException", message)


def assign_slots(fields: list[str], current: Mapping[str, int]) -> dict[str, int]:
    """Each field's slot: a field indexed already keeps its own (its values
    stay valid), a new one takes the lowest free slot."""
    kept = {name: slot for name, slot in current.items() if name in fields}
    free = iter(sorted(set(range(MAX_FIELDS)) - set(kept.values())))
    return {name: kept[name] if name in kept else next(free) for name in fields}


def sql_value(value: Any) -> Any:
    """A discovered value as the column holds it (see the module's notes)."""
    kind = type(value)
    if kind is str:
        return UNSURE if "\x00" in value else value
    if kind is int:
        return value if _INT64[0] <= value <= _INT64[1] else UNSURE
    if kind is float:
        return value if math.isfinite(value) else UNSURE
    return None


class Extractor:
    """The values of a group's indexed fields in one message, in slot order.

    Top-level names are read from one ``orjson.loads`` (what ``discover``
    would give for them, without flattening the whole message); other names
    (nested ``a.b``, ``@...``) and messages orjson refuses go through
    ``discover`` itself."""

    def __init__(self, slots: Mapping[str, int]) -> None:
        self.order = sorted(slots, key=slots.__getitem__)
        self.columns = [SLOTS[slots[name]] for name in self.order]
        self._simple = all(_TOP_LEVEL.fullmatch(name) for name in self.order)

    def values(self, message: str) -> tuple[Any, ...]:
        if self._simple and message[:1] == "{":
            try:
                obj = orjson.loads(message)
            except orjson.JSONDecodeError:
                pass
            else:
                return tuple(_top_level(obj.get(name)) for name in self.order)
        found = discover(message)
        return tuple(sql_value(found.get(name)) for name in self.order)

    def rows(self, messages: Iterable[str]) -> tuple[list[tuple[Any, ...]], list[int]]:
        """The values of each message, and per field the kinds they hold."""
        found = [self.values(m) for m in messages]
        kinds = [_kinds(column) for column in zip(*found, strict=True)]
        return found, kinds or [0] * len(self.order)


def _kinds(values: Iterable[Any]) -> int:
    bits = 0
    for kind in set(map(type, values)):
        bits |= KINDS.get(kind, 0)
    return bits


def _top_level(value: Any) -> Any:
    """discover's value for a top-level key holding ``value``: a bool as its
    word, a scalar as itself; an object, an array or null is not that field."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return sql_value(value)
