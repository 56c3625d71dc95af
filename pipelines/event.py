"""The EventBridge event envelope and validation of PutEvents entries.

An event on a bus is a plain ``dict`` in EventBridge's envelope::

    {"version": "0", "id": "<uuid4>", "detail-type": "...", "source": "...",
     "account": "123456789012", "time": "2024-01-02T03:04:05Z",
     "region": "us-east-1", "resources": [...], "detail": {...}}

Plain dicts keep events cheap to match and to serialise; this module is the one
place that builds and checks them.

``validate_entry`` checks one PutEvents entry as EventBridge does and returns
either the event or an ``EventValidationError`` with a per-entry error code, so
a bad entry never fails the others in its batch (``validate_entries``).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

from pipelines.errors import EventValidationError

#: EventBridge's per-entry size limit: 1 MB since January 2026 (was 256 KB).
#: AWS publishes no exact byte count; we read it as 1 MiB, as SQS does.
DEFAULT_MAX_ENTRY_SIZE = 1_048_576
#: How deep a Detail may nest. EventBridge processes 1000 levels; we take what
#: storage holds: orjson writes 254 levels (and stops with TypeError beyond),
#: and an event's envelope is one level above its Detail. A deeper Detail is
#: refused as MalformedDetail (docs/delivery.md, "What PutEvents accepts").
DEFAULT_MAX_DEPTH = 253
#: EventBridge's JSON integers are 64-bit signed (the PutEvents reference).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Time counts as a flat 14 bytes in EventBridge's entry size.
TIME_SIZE = 14
MAX_DETAIL_TYPE_LENGTH = 128
MAX_RESOURCE_LENGTH = 2048
MAX_TRACE_HEADER_LENGTH = 500
DEFAULT_ACCOUNT = "000000000000"
#: AWS's usual default region: ARNs must name a real-looking region (EventBridge's
#: own EventBusName pattern refuses ``arn:aws:events:local:...``).
DEFAULT_REGION = "us-east-1"

_BUS_NAME = re.compile(
    r"(arn:aws[\w-]*:events:[a-z]+-[a-z]+-[\w-]+:[0-9]{12}:event-bus/)?[.\-_A-Za-z0-9]+"
)
_ENTRY_FIELDS = frozenset(
    {"Source", "DetailType", "Detail", "Resources", "Time", "EventBusName", "TraceHeader"}
)

Event = dict[str, Any]


@dataclass(frozen=True, slots=True)
class EntryLimits:
    """Limits applied to PutEvents entries; the defaults are AWS's."""

    max_entry_size: int = DEFAULT_MAX_ENTRY_SIZE
    max_depth: int = DEFAULT_MAX_DEPTH

    def __post_init__(self) -> None:
        # Deeper than storage can write, an accepted event could not be archived or retried.
        if not 1 <= self.max_depth <= DEFAULT_MAX_DEPTH:
            raise ValueError(
                f"EntryLimits.max_depth must be 1 to {DEFAULT_MAX_DEPTH}, not {self.max_depth!r}"
            )


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with second precision, as EventBridge writes ``time``."""
    global _last_formatted
    last, text = _last_formatted
    if moment is last:  # the entries of one PutEvents share their moment
        return text
    if moment.tzinfo is None:
        raise ValueError("event time must be timezone-aware")
    text = _format_second(int(moment.timestamp() // 1))
    _last_formatted = (moment, text)
    return text


#: The moment ``format_time`` formatted last, and its text.
_last_formatted: tuple[datetime | None, str] = (None, "")


def format_epoch(seconds: float, timespec: str = "auto") -> str:
    """Epoch seconds as ISO 8601 UTC with a ``Z`` (``timespec`` as ``isoformat``'s:
    "auto" shows a fraction only when there is one). The year has four digits,
    which strftime's ``%Y`` does not give before 1000 on glibc."""
    return (
        datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None).isoformat(timespec=timespec) + "Z"
    )


def format_time_ms(seconds: float) -> str:
    """Epoch seconds as ISO 8601 UTC with milliseconds (``2024-01-02T03:04:05.678Z``),
    as Lambda's invocation records and ``aws.events.event.ingestion-time`` read."""
    return format_epoch(seconds, "milliseconds")


@lru_cache(maxsize=64)
def _format_second(second: int) -> str:
    # Events put in the same second share the text: formatting is slow on the hot path.
    return format_epoch(second)


def parse_time(value: str) -> datetime:
    """Parse an RFC 3339 timestamp (``Z`` or an offset) into an aware datetime."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an RFC 3339 timestamp: {value!r}") from None
    if moment.tzinfo is None or "T" not in text.upper():
        raise ValueError(f"not an RFC 3339 timestamp with a time zone: {value!r}")
    return moment


def reject_json_constant(name: str) -> Any:
    """``parse_constant`` for ``json.loads``: NaN and Infinity are not JSON."""
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: str | bytes) -> Any:
    """Parse JSON text with orjson, falling back to ``json`` where orjson refuses
    valid JSON (a lone surrogate's escape, a number beyond a double, nesting
    deeper than 1024 levels). Raises ValueError (or RecursionError) on text that
    is not JSON. What ``dump_json`` wrote of an accepted event reads back equal.

    orjson reads an integer beyond 64 bits as a float: exact only for the
    integers events can hold (``validate_entry`` refuses the others)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw, parse_constant=reject_json_constant)


def dump_json(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON: the one way events and payloads are
    written for storage (archives, retries, queue, stream and log targets).

    orjson first; only what it refuses although JSON carries it goes the slow
    way: a string with a lone surrogate (an escape in the Detail it came
    from), an integer beyond 64 bits, nesting deeper than 254 levels. Raises
    TypeError for a value that is not JSON (NaN included, in the slow way)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return _dump_slowly(value)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _dump_slowly(value: Any) -> bytes:
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (ValueError, RecursionError) as exc:
        raise TypeError(f"not storable as JSON: {exc}") from None
    # UTF-8 has no lone surrogates: JSON's escape for them is the faithful text
    # (a parser reads back the same string); every other character stays as is.
    return _LONE_SURROGATE.sub(lambda found: f"\\u{ord(found[0]):04x}", text).encode()


_ids = random.Random(os.urandom(32))
if hasattr(os, "register_at_fork"):  # a forked child must not repeat its parent's ids
    os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(32)))


def new_event_id() -> str:
    """A random (version 4) UUID, as EventBridge's event ids are.

    Drawn from a generator seeded from the OS (and reseeded in a forked
    child), which is several times faster than ``uuid.uuid4``; ids need to
    be unique, not unpredictable. 16 random bytes in hex, then the version
    digit (4) and the RFC 4122 variant (a digit of 8-b, from two random bits).
    """
    text = _ids.randbytes(16).hex()
    return f"{text[:8]}-{text[8:12]}-4{text[13:16]}-{_VARIANT[text[16]]}{text[17:20]}-{text[20:]}"


#: A random hex digit's two low bits as the variant's digit (10xx: 8, 9, a, b).
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


# -- bus permissions: the one-hop rule of bus-to-bus forwarding --


def forwarded_event_id() -> str:
    """The id of an event a bus forwarded to another bus: a random UUID of
    version 8 (RFC 9562's custom version) instead of 4. EventBridge does not
    forward an event received from another bus to a third one; the id says
    so wherever the event goes (the intake, archives, a restart, a replay)
    without a field AWS's events do not have."""
    text = new_event_id()
    return f"{text[:14]}8{text[15:]}"


def is_forwarded(event_id: object) -> bool:
    """Whether an event's id is a forwarded event's (``forwarded_event_id``)."""
    return isinstance(event_id, str) and len(event_id) == 36 and event_id[14] == "8"


def make_event(
    source: str,
    detail_type: str,
    detail: Mapping[str, Any] | None = None,
    *,
    resources: Iterable[str] = (),
    time: datetime | None = None,
    account: str = DEFAULT_ACCOUNT,
    region: str = DEFAULT_REGION,
    event_id: str | None = None,
) -> Event:
    """Build an event in EventBridge's envelope (no validation: see ``validate_entry``)."""
    return {
        "version": "0",
        "id": event_id or new_event_id(),
        "detail-type": detail_type,
        "source": source,
        "account": account,
        "time": format_time(time or datetime.now(UTC)),
        "region": region,
        "resources": list(resources),
        "detail": dict(detail or {}),
    }


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """True when ``value`` nests objects/arrays deeper than ``limit`` levels.

    Iterative, so a hostile document cannot exhaust the interpreter's stack.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Iterable[Any] = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _invalid(field: str, reason: str, index: int | None) -> EventValidationError:
    return EventValidationError(
        "InvalidArgument", f"Parameter {field} is not valid. Reason: {reason}", index
    )


def _required_string(entry: Mapping[str, Any], field: str, index: int | None) -> str:
    value = entry.get(field)
    if value is None or value == "":
        raise _invalid(field, f"{field} is a required argument.", index)
    if not isinstance(value, str):
        raise _invalid(field, f"{field} must be a string.", index)
    return value


def _detail(
    entry: Mapping[str, Any], index: int | None, max_depth: int
) -> tuple[dict[str, Any], int]:
    """The parsed Detail and its size in bytes (as EventBridge counts it)."""
    raw = entry.get("Detail")
    if raw is None:
        raise _invalid("Detail", "Detail is a required argument.", index)
    if isinstance(raw, Mapping):
        # A caller handing us an object: it stands for its JSON text, read back
        # as any Detail is, so the event holds exactly what storage will hold.
        try:
            raw_bytes = dump_json(dict(raw))
        except TypeError as exc:
            raise _malformed(str(exc), index) from None
    elif isinstance(raw, str):
        raw_bytes = raw.encode("utf-8", "surrogatepass")
    elif isinstance(raw, bytes | bytearray):
        raw_bytes = bytes(raw)
    else:
        raise _malformed("", index)
    try:
        parsed = _parse_detail(raw_bytes)
    except _Unstorable as exc:
        raise _malformed(str(exc), index) from None
    except RecursionError:
        raise _malformed(f"It nests deeper than {max_depth} levels.", index) from None
    except ValueError:
        raise _malformed("", index) from None
    if not isinstance(parsed, dict):
        raise _malformed("", index)  # AWS words it so (recorded: test_put_event_malformed_detail)
    # Cheap first: a text with no more brackets than the limit cannot nest deeper.
    if raw_bytes.count(b"{") + raw_bytes.count(b"[") > max_depth and json_depth_exceeds(
        parsed, max_depth
    ):
        raise _malformed(f"It nests deeper than {max_depth} levels.", index)
    return parsed, len(raw_bytes)


def _malformed(reason: str, index: int | None) -> EventValidationError:
    message = f"Detail is malformed. {reason}" if reason else "Detail is malformed."
    return EventValidationError("MalformedDetail", message, index)


class _Unstorable(ValueError):
    """A number in a Detail that is JSON but that an event cannot hold."""


#: Maps each digit to "d" and every other byte to " ": only a run of 19 "d"s
#: can write an integer outside (or at the edge of) 64 bits.
_DIGITS = bytes(ord("d") if byte in b"0123456789" else ord(" ") for byte in range(256))
_LONG_DIGITS = b"d" * 19
#: ``_DIGITS`` that also marks each ``{`` and ``[`` (as ``{``): one pass over a
#: Detail's text finds both a long digit run and how deeply it may nest.
_DIGITS_AND_OPENINGS = bytes(
    ord("d") if byte in b"0123456789" else ord("{") if byte in b"{[" else ord(" ")
    for byte in range(256)
)


def _parse_detail(raw: bytes) -> Any:
    """A Detail's value, exact: orjson reads integers past 64 bits as floats
    without a word, so text with a 19-digit run (rare: a time or an id has
    fewer) goes to ``json``, whose hooks refuse what an event cannot hold."""
    if _LONG_DIGITS not in raw.translate(_DIGITS):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # a lone surrogate's escape, a number past a double, or not JSON
    # Strict UTF-8, as JSON text is (json alone would also guess UTF-16 and -32).
    return json.loads(
        raw.decode("utf-8"),
        parse_int=_int64,
        parse_float=_finite,
        parse_constant=reject_json_constant,
    )


def _int64(text: str) -> int:
    # 20 characters write every 64-bit integer: a longer one is out of range
    # without converting it (Python refuses over 4300 digits anyway).
    value = int(text) if len(text) <= 20 else None
    if value is None or not INT64_MIN <= value <= INT64_MAX:
        shown = text if len(text) <= 30 else f"{text[:27]}..."
        raise _Unstorable(f"Integer {shown} is outside the 64-bit range EventBridge accepts.")
    return value


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # JSON has no infinity to write it back as
        shown = text if len(text) <= 30 else f"{text[:27]}..."
        raise _Unstorable(f"Number {shown} is out of range of a double.")
    return value


def _resources(entry: Mapping[str, Any], index: int | None) -> list[str]:
    value = entry.get("Resources")
    if value is None:
        return []
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise _invalid("Resources", "Resources must be a list of strings.", index)
    resources = list(value)
    for position, item in enumerate(resources):
        if not isinstance(item, str):
            raise _invalid("Resources", f"Resources[{position}] must be a string.", index)
        if len(item) > MAX_RESOURCE_LENGTH:
            raise _invalid(
                "Resources",
                f"Resources[{position}] is longer than {MAX_RESOURCE_LENGTH} characters.",
                index,
            )
    return resources


def _time(entry: Mapping[str, Any], index: int | None, now: datetime) -> datetime:
    value = entry.get("Time")
    if value is None:
        return now
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise _invalid("Time", "Time must carry a time zone.", index)
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise _invalid("Time", f"{value!r} is out of range.", index) from None
    if isinstance(value, str):
        try:
            return parse_time(value)
        except ValueError as exc:
            raise _invalid("Time", str(exc), index) from None
    raise _invalid("Time", "Time must be an RFC 3339 string, a datetime or epoch seconds.", index)


def entry_size(entry: Mapping[str, Any], *, detail_size: int | None = None) -> int:
    """EventBridge's size of a PutEvents entry, in bytes.

    14 bytes for Time if present, plus the UTF-8 bytes of Source, DetailType,
    Detail and each Resource. Nothing else counts. ``detail_size`` saves
    encoding Detail again when the caller already knows it.
    """
    size = TIME_SIZE if entry.get("Time") is not None else 0
    for field in ("Source", "DetailType"):
        value = entry.get(field)
        if isinstance(value, str):
            size += len(value.encode("utf-8", "surrogatepass"))
    detail = entry.get("Detail")
    if detail_size is not None:
        size += detail_size
    elif isinstance(detail, str):
        size += len(detail.encode("utf-8", "surrogatepass"))
    elif isinstance(detail, bytes | bytearray):
        size += len(detail)
    elif isinstance(detail, Mapping):
        size += len(dump_json(dict(detail)))
    for resource in entry.get("Resources") or ():
        if isinstance(resource, str):
            size += len(resource.encode("utf-8", "surrogatepass"))
    return size


def validate_entry(
    entry: Mapping[str, Any],
    *,
    index: int | None = None,
    limits: EntryLimits = EntryLimits(),
    now: datetime | None = None,
    account: str = DEFAULT_ACCOUNT,
    region: str = DEFAULT_REGION,
) -> Event:
    """Check one PutEvents entry and return the event it puts on the bus.

    Raises ``EventValidationError`` with EventBridge's code (``InvalidArgument``
    or ``MalformedDetail``) and a message naming the field; ``index`` is
    carried into the error so batch callers can report which entry failed.
    """
    moment = now or datetime.now(UTC)
    usual = _usual_event(entry, limits, moment, account, region)
    if usual is not None:
        return usual
    if not isinstance(entry, Mapping):
        raise EventValidationError("InvalidArgument", "Each entry must be an object.", index)
    if not _ENTRY_FIELDS.issuperset(entry):
        unknown = sorted(set(entry) - _ENTRY_FIELDS)
        raise EventValidationError(
            "InvalidArgument",
            f"Unknown field {unknown[0]!r}; an entry has {', '.join(sorted(_ENTRY_FIELDS))}.",
            index,
        )
    source = _required_string(entry, "Source", index)
    detail_type = _required_string(entry, "DetailType", index)
    if len(detail_type) > MAX_DETAIL_TYPE_LENGTH:
        raise _invalid(
            "DetailType",
            f"DetailType is longer than {MAX_DETAIL_TYPE_LENGTH} characters.",
            index,
        )
    detail, detail_size = _detail(entry, index, limits.max_depth)
    resources = _resources(entry, index)
    bus = entry.get("EventBusName")
    if bus is not None and (
        not isinstance(bus, str) or not 1 <= len(bus) <= 1600 or not _BUS_NAME.fullmatch(bus)
    ):
        raise _invalid("EventBusName", f"{bus!r} is not an event bus name or ARN.", index)
    trace = entry.get("TraceHeader")
    if trace is not None and (
        not isinstance(trace, str) or not 1 <= len(trace) <= MAX_TRACE_HEADER_LENGTH
    ):
        raise _invalid(
            "TraceHeader", f"TraceHeader must be 1 to {MAX_TRACE_HEADER_LENGTH} characters.", index
        )
    size = entry_size(entry, detail_size=detail_size)
    if size > limits.max_entry_size:
        raise _invalid(
            "Entry",
            f"Entry size {size} bytes is over the limit of {limits.max_entry_size} bytes.",
            index,
        )
    moment = _time(entry, index, moment)
    return make_event(
        source,
        detail_type,
        detail,
        resources=resources,
        time=moment,
        account=account,
        region=region,
    )


class ParsedDetail(str):
    """An entry's Detail text that carries the object it was written from, so
    the usual path (``_usual_event``) checks the text but does not parse it
    again: for a producer that builds the detail itself (the MQTT source
    parses a payload, adds its metadata and writes the text). The object
    becomes the event's detail: the producer must not keep or change it.
    Any other path reads the text as usual (it is a ``str``)."""

    value: dict[str, Any]

    @classmethod
    def of(cls, value: dict[str, Any]) -> str:
        """The Detail text of ``value``. Only orjson's own writing carries the
        object: what it writes reads back equal (what ``dump_json`` writes
        the slow way, a lone surrogate or a huge integer, is a plain text,
        read as any other)."""
        try:
            text = orjson.dumps(value).decode()
        except TypeError:
            return dump_json(value).decode()
        parsed = cls(text)
        parsed.value = value
        return parsed


#: The fields of an entry in PutEvents' usual shape (``_usual_event``).
_USUAL_FIELDS = frozenset({"Source", "DetailType", "Detail", "Resources", "EventBusName"})


def _usual_event(
    entry: object, limits: EntryLimits, now: datetime, account: str, region: str
) -> Event | None:
    """The event of an entry in the shape SDKs send (exact dict and str types,
    Detail as JSON text, no Time or TraceHeader), checked in one pass with
    every rule ``validate_entry`` applies; None for any other entry, valid or
    not, which the careful path then checks (and words the error of).

    About half the cost of the careful path: no ABC checks, no second encoding
    for the size, one dict for the event (the parsed Detail is not copied)."""
    if type(entry) is not dict or not _USUAL_FIELDS.issuperset(entry):
        return None
    source, detail_type, raw = entry.get("Source"), entry.get("DetailType"), entry.get("Detail")
    if type(source) is not str or type(detail_type) is not str:
        return None
    kind = type(raw)
    if not isinstance(raw, str) or (kind is not str and kind is not ParsedDetail):
        return None
    if not source or not detail_type or len(detail_type) > MAX_DETAIL_TYPE_LENGTH:
        return None
    resources = entry.get("Resources")
    bus = entry.get("EventBusName")
    if bus is not None and not (
        type(bus) is str and 1 <= len(bus) <= 1600 and _BUS_NAME.fullmatch(bus)
    ):
        return None
    try:
        # Strict UTF-8: a lone surrogate (which only the careful path's
        # surrogatepass encodes) raises here and goes the careful way.
        text = raw.encode()
        size = len(source.encode()) + len(detail_type.encode()) + len(text)
        if resources is None:
            resources = []
        elif type(resources) is list:
            resources = list(resources)  # the caller's list stays the caller's
            for resource in resources:
                if type(resource) is not str or len(resource) > MAX_RESOURCE_LENGTH:
                    return None
                size += len(resource.encode())
        else:
            return None
        scanned = text.translate(_DIGITS_AND_OPENINGS)
        if size > limits.max_entry_size or _LONG_DIGITS in scanned:
            return None
        # A ParsedDetail's object is what its text reads as: not read again.
        detail = raw.value if isinstance(raw, ParsedDetail) else orjson.loads(text)
    except (UnicodeEncodeError, orjson.JSONDecodeError):
        return None
    if type(detail) is not dict or scanned.count(b"{") > limits.max_depth:
        return None
    return {
        "version": "0",
        "id": new_event_id(),
        "detail-type": detail_type,
        "source": source,
        "account": account,
        "time": format_time(now),
        "region": region,
        "resources": resources,
        "detail": detail,
    }


@dataclass(frozen=True, slots=True)
class EntryResult:
    """One PutEvents result entry: ``event_id`` on success, else the error."""

    event: Event | None = None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def event_id(self) -> str | None:
        return None if self.event is None else str(self.event["id"])

    def as_dict(self) -> dict[str, str]:
        if self.event is not None:
            return {"EventId": str(self.event["id"])}
        return {"ErrorCode": self.error_code or "", "ErrorMessage": self.error_message or ""}


def validate_entries(
    entries: Iterable[Mapping[str, Any]],
    *,
    limits: EntryLimits = EntryLimits(),
    now: datetime | None = None,
    account: str = DEFAULT_ACCOUNT,
    region: str = DEFAULT_REGION,
) -> list[EntryResult]:
    """Validate a batch; each entry succeeds or fails on its own."""
    results = []
    moment = now or datetime.now(UTC)
    for index, entry in enumerate(entries):
        try:
            event = validate_entry(
                entry, index=index, limits=limits, now=moment, account=account, region=region
            )
        except EventValidationError as exc:
            results.append(EntryResult(error_code=exc.code, error_message=exc.message))
        else:
            results.append(EntryResult(event=event))
    return results
