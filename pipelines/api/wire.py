"""Reading requests and writing answers by the service model (AWS's JSON protocols).

``read_input`` turns a JSON body into the operation's parameters, checked as
AWS's front door checks them (required members, lengths, ranges, enums,
types), with every problem in one ``ValidationException`` worded as AWS
words it. ``write_output`` turns what an operation returned into its output
shape: only members the model has, timestamps as epoch seconds, blobs in
base64. Both follow botocore's shapes, so no operation is spelt by hand.

Each shape's reader and writer are made once, the first time the shape is
used (a function per shape that knows its members and constraints), so a
request pays for its values, not for looking the shape up again at each
one. A request the compiled reader does not take is read again by the
walk (``walk_input``), which keeps each value's path and words AWS's
refusals; ``tests/test_api_wire.py`` holds the two to the same answers.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, cast

import orjson
from botocore.model import ListShape, MapShape, Shape, StructureShape

from pipelines.api.errors import ApiError


def json_body(body: bytes) -> Any:
    """A request's JSON body; ``SerializationException`` when it is not JSON,
    naming the first byte that is not UTF-8 when that is why (orjson's own
    message speaks of surrogates)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as bad:
            at = bad.start
            raise ApiError(
                "SerializationException",
                f"the body is not UTF-8: byte 0x{body[at]:02x} at offset {at}",
            ) from None
        raise ApiError("SerializationException", f"the body is not JSON: {error}") from None


# What AWS calls each JSON type in a SerializationException's message.
_JSON_KIND = {str: "STRING_VALUE", bool: "BOOLEAN_VALUE", list: "START_ARRAY", dict: "START_OBJECT"}
_JSON_KIND.update({bytes: "BYTE_STRING", dt.datetime: "TIMESTAMP"})  # CBOR's own types


def _member_path(path: str, name: str) -> str:
    # AWS's validation messages name members in lowerCamelCase, joined by dots.
    member = name[:1].lower() + name[1:]
    return f"{path}.{member}" if path else member


def _shown(value: Any) -> str:
    # AWS quotes every value but null (a list as its own toString: ours is JSON).
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, list | dict):
        try:
            text = orjson.dumps(value, default=_plain, option=orjson.OPT_NON_STR_KEYS)
        except TypeError:  # what JSON cannot spell (a CBOR integer past 64 bits)
            return f"'{value}'"
        return f"'{text.decode()}'"
    return f"'{value}'"


def _plain(value: Any) -> str:
    # CBOR's values in a list or map shown as JSON: a byte string as base64, as
    # JSON carries blobs; anything else as its text.
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return str(value)


def _kind(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "VALUE_NUMBER"
    return _JSON_KIND.get(type(value), type(value).__name__)


#: AWS's validation messages list an enum's values in an order of their own
#: (a hash set's, not the model's); these are the orders recorded from AWS, by
#: shape name and value set. Any other enum is listed in the model's order.
_RECORDED_ENUM_ORDER: dict[tuple[str, frozenset[str]], str] = {
    (name, frozenset(values)): ", ".join(values)
    for name, values in (
        # stepfunctions ListExecutions' statusFilter (test_sfn_api.snapshot.json)
        (
            "ExecutionStatus",
            ["SUCCEEDED", "TIMED_OUT", "PENDING_REDRIVE", "ABORTED", "FAILED", "RUNNING"],
        ),
        # cloudwatch SetAlarmState's stateValue (test_cloudwatch.snapshot.json)
        ("StateValue", ["INSUFFICIENT_DATA", "ALARM", "OK"]),
        # events CreateApiDestination's httpMethod
        # (test_api_destinations_and_connection.snapshot.json)
        (
            "ApiDestinationHttpMethod",
            ["HEAD", "POST", "PATCH", "DELETE", "PUT", "GET", "OPTIONS"],
        ),
    )
}


def _enum_listed(shape: Shape, allowed: list[str]) -> str:
    recorded = _RECORDED_ENUM_ORDER.get((shape.name, frozenset(allowed)))
    return recorded if recorded is not None else ", ".join(allowed)


class _Reader:
    """One request's parameters walked against the input shape; problems kept."""

    def __init__(self, *, enums: bool = True) -> None:
        self.problems: list[str] = []
        self.enums = enums

    def fail(self, value: Any, path: str, constraint: str) -> None:
        self.problems.append(constraint_failed(value, path, constraint))

    def read(self, shape: Shape, value: Any, path: str) -> Any:
        kind = shape.type_name
        if kind == "structure":
            return self.structure(shape, value, path)
        if kind == "list":
            return self.list(shape, value, path)
        if kind == "map":
            return self.map(shape, value, path)
        if kind == "string":
            return self.string(shape, value, path)
        if kind in ("integer", "long"):
            return self.number(shape, value, path, whole=True)
        if kind in ("float", "double"):
            return self.number(shape, value, path, whole=False)
        if kind == "boolean":
            if not isinstance(value, bool):
                raise _wrong_type(value, path, "Boolean")
            return value
        if kind == "timestamp":
            return self.timestamp(value, path)
        if kind == "blob":
            return self.blob(value, path)
        return value

    def structure(self, shape: StructureShape, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _wrong_type(value, path, "structure")
        read: dict[str, Any] = {}
        members = shape.members
        for name in shape.required_members:
            if value.get(name) is None:
                self.fail(None, _member_path(path, name), "Member must not be null")
        for name, item in value.items():
            member = members.get(name)
            if member is None or item is None:
                continue  # AWS ignores members it does not know
            read[name] = self.read(member, item, _member_path(path, name))
        return read

    def list(self, shape: ListShape, value: Any, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise _wrong_type(value, path, "list")
        self.length(shape, value, path, len(value))
        return [
            self.read(shape.member, item, f"{path}.{index}.member")
            for index, item in enumerate(value, 1)
        ]

    def map(self, shape: MapShape, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _wrong_type(value, path, "map")
        self.length(shape, value, path, len(value))
        return {
            self.read(shape.key, key, f"{path}.key"): self.read(shape.value, item, f"{path}.value")
            for key, item in value.items()
        }

    def string(self, shape: Shape, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise _wrong_type(value, path, "String")
        self.length(shape, value, path, len(value))
        allowed = shape.metadata.get("enum") if self.enums else None
        if allowed and value not in allowed:
            listed = _enum_listed(shape, allowed)
            self.fail(value, path, f"Member must satisfy enum value set: [{listed}]")
        pattern = shape.metadata.get("pattern")
        if pattern is not None:
            compiled = _pattern(pattern)
            if compiled is not None and compiled.fullmatch(value) is None:
                self.fail(value, path, f"Member must satisfy regular expression pattern: {pattern}")
        return value

    def number(self, shape: Shape, value: Any, path: str, *, whole: bool) -> int | float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _wrong_type(value, path, "Integer" if whole else "Double")
        if whole and isinstance(value, float):
            if not value.is_integer():
                raise _wrong_type(value, path, "Integer")
            value = int(value)
        low, high = shape.metadata.get("min"), shape.metadata.get("max")
        if low is not None and value < low:
            self.fail(value, path, f"Member must have value greater than or equal to {low}")
        if high is not None and value > high:
            self.fail(value, path, f"Member must have value less than or equal to {high}")
        number: int | float = value
        return number

    def length(self, shape: Shape, value: Any, path: str, size: int) -> None:
        low, high = shape.metadata.get("min"), shape.metadata.get("max")
        if low is not None and size < low:
            self.fail(value, path, f"Member must have length greater than or equal to {low}")
        if high is not None and size > high:
            self.fail(value, path, f"Member must have length less than or equal to {high}")

    def timestamp(self, value: Any, path: str) -> float:
        if isinstance(value, dt.datetime):  # CBOR's tag 1
            return value.timestamp()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                pass
        raise _wrong_type(value, path, "Timestamp")

    def blob(self, value: Any, path: str) -> bytes:
        if isinstance(value, bytes):  # CBOR's byte string
            return value
        if isinstance(value, str):
            try:
                return base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                pass
        raise ApiError("SerializationException", f"'{path}' is not valid base64")


@functools.cache
def _pattern(pattern: str) -> re.Pattern[str] | None:
    """A model's pattern (Java's syntax, matched whole), or None where Python's
    ``re`` reads it otherwise (``\\p{...}`` classes): then it is not checked."""
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _wrong_type(value: Any, path: str, wanted: str) -> ApiError:
    return ApiError(
        "SerializationException",
        f"{_kind(value)} can not be converted to {wanted} (at '{path}')",
    )


class _Refused(Exception):
    """The fast reader met a value it does not take: the walk reads it."""


#: A compiled reader of one shape: the value read, or ``_Refused``.
_Read = Callable[[Any], Any]


@functools.cache
def _fast_reader(shape: StructureShape, enums: bool) -> _Read:
    """A reader of ``shape`` made once, for requests that pass every check.

    It applies exactly the walk's checks (``_Reader``), and reads what the
    walk reads, but builds no member paths and keeps no problems: anything
    it does not take (a failed constraint, an unexpected type, a timestamp
    as text) raises ``_Refused``, and the walk then reads the request again
    and words what is wrong, as AWS does. So the usual request is read once,
    without the walk's per-value dispatch on the shape's kind."""
    return _compile(shape, enums, {})


def _compile(shape: Shape, enums: bool, made: dict[str, _Read]) -> _Read:
    # By shape name: a recursive shape's members refer back to it (a name's
    # constraints are the same wherever it is used: they are the shape's own).
    found = made.get(shape.name)
    if found is not None:
        return found
    later: list[_Read] = []
    made[shape.name] = lambda value: later[0](value)  # until it is made
    reader = _compile_kind(shape, enums, made)
    later.append(reader)
    made[shape.name] = reader
    return reader


def _compile_kind(shape: Shape, enums: bool, made: dict[str, _Read]) -> _Read:
    kind = shape.type_name
    if kind == "structure":
        return _structure_reader(cast(StructureShape, shape), enums, made)
    if kind == "list":
        return _list_reader(cast(ListShape, shape), enums, made)
    if kind == "map":
        return _map_reader(cast(MapShape, shape), enums, made)
    if kind == "string":
        return _string_reader(shape, enums)
    if kind in ("integer", "long", "float", "double"):
        return _number_reader(shape, whole=kind in ("integer", "long"))
    if kind == "boolean":
        return _boolean
    if kind == "timestamp":
        return _timestamp
    if kind == "blob":
        return _blob
    return _as_is


def _refuse() -> NoReturn:
    raise _Refused


def _as_is(value: Any) -> Any:
    return value


def _boolean(value: Any) -> bool:
    if type(value) is not bool:
        _refuse()
    return value


def _timestamp(value: Any) -> float:
    kind = type(value)
    if kind is not float and kind is not int:
        _refuse()  # text and datetimes: the walk reads them
    return float(value)


def _blob(value: Any) -> bytes:
    if type(value) is bytes:
        return value
    if type(value) is not str:
        _refuse()
    try:  # base64.b64decode(value, validate=True) without its wrapping
        return binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):  # not base64, or not ASCII
        _refuse()


def _bounds(shape: Shape) -> tuple[Any, Any]:
    return shape.metadata.get("min"), shape.metadata.get("max")


def _structure_reader(shape: StructureShape, enums: bool, made: dict[str, _Read]) -> _Read:
    required = tuple(shape.required_members)
    members = {name: _compile(member, enums, made) for name, member in shape.members.items()}
    get = members.get

    def read(value: Any) -> dict[str, Any]:
        if type(value) is not dict:
            _refuse()
        for name in required:
            if value.get(name) is None:
                _refuse()
        read: dict[str, Any] = {}
        for name, item in value.items():
            member = get(name)
            if member is not None and item is not None:
                read[name] = member(item)
        return read

    return read


def _sized(low: Any, high: Any) -> Callable[[int], bool]:
    """Whether a length (or a value) is within ``low`` and ``high``."""
    if low is None and high is None:
        return lambda size: True
    if high is None:
        return lambda size: size >= low
    if low is None:
        return lambda size: size <= high
    return lambda size: low <= size <= high


def _list_reader(shape: ListShape, enums: bool, made: dict[str, _Read]) -> _Read:
    item = _compile(shape.member, enums, made)
    within = _sized(*_bounds(shape))

    def read(value: Any) -> list[Any]:
        if type(value) is not list or not within(len(value)):
            _refuse()
        return [item(each) for each in value]

    return read


def _map_reader(shape: MapShape, enums: bool, made: dict[str, _Read]) -> _Read:
    key = _compile(shape.key, enums, made)
    item = _compile(shape.value, enums, made)
    within = _sized(*_bounds(shape))

    def read(value: Any) -> dict[Any, Any]:
        if type(value) is not dict or not within(len(value)):
            _refuse()
        return {key(name): item(each) for name, each in value.items()}

    return read


def _string_reader(shape: Shape, enums: bool) -> _Read:
    low, high = _bounds(shape)
    allowed = shape.metadata.get("enum") if enums else None
    allowed = frozenset(allowed) if allowed else None
    pattern = shape.metadata.get("pattern")
    compiled = _pattern(pattern) if pattern is not None else None
    if low is None and high is None and allowed is None and compiled is None:
        return _string
    within = _sized(low, high)

    def read(value: Any) -> str:
        if (
            type(value) is not str
            or not within(len(value))
            or (allowed is not None and value not in allowed)
            or (compiled is not None and compiled.fullmatch(value) is None)
        ):
            _refuse()
        return value

    return read


def _string(value: Any) -> str:
    if type(value) is not str:
        _refuse()
    return value


def _number_reader(shape: Shape, *, whole: bool) -> _Read:
    within = _sized(*_bounds(shape))

    def read(value: Any) -> int | float:
        kind = type(value)
        if kind is float:
            if whole:
                if not value.is_integer():
                    _refuse()
                value = int(value)
        elif kind is not int:
            _refuse()  # bool among them: the walk words it
        if not within(value):
            _refuse()
        number: int | float = value
        return number

    return read


def read_input(
    shape: StructureShape | None,
    body: bytes,
    *,
    validation_code: str = "ValidationException",
    enums: bool = True,
) -> dict[str, Any]:
    """The parameters of a JSON-protocol request, checked against ``shape``
    (a refusal's code is ``validation_code``; enums are checked unless
    ``enums`` is false: a service that does not check them)."""
    if not body.strip():
        raw: Any = {}
    else:
        raw = json_body(body)
    if shape is None:
        return {}
    return check_input(shape, raw, validation_code=validation_code, enums=enums)


def check_input(
    shape: StructureShape,
    raw: Any,
    *,
    validation_code: str = "ValidationException",
    enums: bool = True,
) -> dict[str, Any]:
    """``raw`` (JSON's types) checked against ``shape``: every problem in one
    error, AWS's ``validation_code`` (query services say ``ValidationError``);
    enum values too unless ``enums`` is false.

    Read by a reader compiled for the shape; what it does not take goes to
    ``walk_input``, the reference, which words what is wrong (a property
    test holds the two to the same answers)."""
    try:
        params: dict[str, Any] = _fast_reader(shape, enums)(raw)
    except _Refused:
        return walk_input(shape, raw, validation_code=validation_code, enums=enums)
    return params


def walk_input(
    shape: StructureShape,
    raw: Any,
    *,
    validation_code: str = "ValidationException",
    enums: bool = True,
) -> dict[str, Any]:
    """``check_input`` by walking the shape value by value, each value's path
    at hand: slower, and the one that words refusals as AWS does."""
    reader = _Reader(enums=enums)
    params = reader.structure(shape, raw, "")
    if reader.problems:
        raise validation_failed(reader.problems, validation_code)
    return params


def constraint_failed(value: Any, path: str, constraint: str) -> str:
    """One of a refusal's problems in AWS's words: the value at ``path``
    (a member path: ``records.2.member.partitionKey``) and what it breaks."""
    return f"Value {_shown(value)} at '{path}' failed to satisfy constraint: {constraint}"


def validation_failed(problems: Sequence[str], code: str = "ValidationException") -> ApiError:
    """AWS's refusal of a request's members: how many problems, then each."""
    count = len(problems)
    return ApiError(
        code,
        f"{count} validation error{'s' if count > 1 else ''} detected: " + "; ".join(problems),
    )


def write_output(
    shape: Shape | None,
    value: Any,
    *,
    timestamp: Callable[[Any], Any] | None = None,
    blob: Callable[[bytes], Any] | None = None,
    wire_names: bool = False,
) -> Any:
    """``value`` as the JSON of ``shape``: model members only, AWS's encodings
    (timestamps as epoch seconds, blobs in base64; another protocol passes
    its own: CBOR's tag 1 and byte strings). ``wire_names``: each member
    under its ``locationName`` where it has one (REST-JSON's bodies: the
    schemas service's ``Tags`` travel as ``tags``)."""
    if shape is None:
        return {}
    if value is None:
        return None
    write = _writer(shape, timestamp or epoch_seconds, blob or _base64, wire_names)
    return value if write is None else write(value)


#: A compiled writer of one shape (None: a value is written as it is).
_Write = Callable[[Any], Any] | None


@functools.cache
def _writer(
    shape: Shape,
    timestamp: Callable[[Any], Any],
    blob: Callable[[bytes], Any],
    wire_names: bool = False,
) -> _Write:
    """The writer of ``shape``, made once per shape and encodings: each
    structure's members and each value's conversion are looked up when it
    is made, not for every value written."""
    return _compile_writer(shape, timestamp, blob, {}, wire_names)


def _compile_writer(
    shape: Shape,
    timestamp: Callable[[Any], Any],
    blob: Callable[[bytes], Any],
    made: dict[str, _Write],
    wire_names: bool = False,
) -> _Write:
    if shape.name in made:
        return made[shape.name]
    kind = shape.type_name
    if kind == "timestamp":
        return timestamp
    if kind == "blob":
        return lambda value: blob(value.encode() if isinstance(value, str) else bytes(value))
    if kind not in ("structure", "list", "map"):
        return None
    later: list[_Write] = []
    made[shape.name] = lambda value: later[0](value) if later[0] is not None else value
    if kind == "structure":
        write = _structure_writer(cast(StructureShape, shape), timestamp, blob, made, wire_names)
    elif kind == "list":
        item = _compile_writer(cast(ListShape, shape).member, timestamp, blob, made, wire_names)
        write = _list_writer(item)
    else:
        item = _compile_writer(cast(MapShape, shape).value, timestamp, blob, made, wire_names)
        write = _map_writer(item)
    later.append(write)
    made[shape.name] = write
    return write


def _structure_writer(
    shape: StructureShape,
    timestamp: Callable[[Any], Any],
    blob: Callable[[bytes], Any],
    made: dict[str, _Write],
    wire_names: bool = False,
) -> Callable[[Any], Any]:
    plan = tuple(
        (
            name,
            member.serialization.get("name", name) if wire_names else name,
            _compile_writer(member, timestamp, blob, made, wire_names),
        )
        for name, member in shape.members.items()
    )

    def write(value: Any) -> dict[str, Any]:
        if type(value) is not dict and not isinstance(value, Mapping):
            return {}
        written = {}
        for name, wire_name, member in plan:
            item = value.get(name)
            if item is not None:
                written[wire_name] = item if member is None else member(item)
        return written

    return write


def _list_writer(item: _Write) -> Callable[[Any], Any]:
    if item is None:
        return list
    return lambda value: [None if each is None else item(each) for each in value]


def _map_writer(item: _Write) -> Callable[[Any], Any]:
    if item is None:
        return dict
    return lambda value: {key: None if each is None else item(each) for key, each in value.items()}


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def epoch_seconds(value: Any) -> float | int:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return float(value)
