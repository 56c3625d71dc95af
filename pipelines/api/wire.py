"""Reading requests and writing answers by the service model (AWS's JSON protocols).

``read_input`` turns a JSON body into the operation's parameters, checked as
AWS's front door checks them (required members, lengths, ranges, enums,
types), with every problem in one ``ValidationException`` worded as AWS
words it. ``write_output`` turns what an operation returned into its output
shape: only members the model has, timestamps as epoch seconds, blobs in
base64. Both walk botocore's shapes, so no operation is spelt by hand.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from botocore.model import ListShape, MapShape, Shape, StructureShape

from pipelines.api.errors import ApiError

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
        return f"'{orjson.dumps(value).decode()}'"
    return f"'{value}'"


def _kind(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "VALUE_NUMBER"
    return _JSON_KIND.get(type(value), type(value).__name__)


class _Reader:
    """One request's parameters walked against the input shape; problems kept."""

    def __init__(self, *, enums: bool = True) -> None:
        self.problems: list[str] = []
        self.enums = enums

    def fail(self, value: Any, path: str, constraint: str) -> None:
        self.problems.append(
            f"Value {_shown(value)} at '{path}' failed to satisfy constraint: {constraint}"
        )

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
            self.fail(value, path, f"Member must satisfy enum value set: [{', '.join(allowed)}]")
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
        try:
            raw = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise ApiError("SerializationException", f"the body is not JSON: {error}") from None
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
    enum values too unless ``enums`` is false."""
    reader = _Reader(enums=enums)
    params = reader.structure(shape, raw, "")
    if reader.problems:
        count = len(reader.problems)
        raise ApiError(
            validation_code,
            f"{count} validation error{'s' if count > 1 else ''} detected: "
            + "; ".join(reader.problems),
        )
    return params


def write_output(
    shape: Shape | None,
    value: Any,
    *,
    timestamp: Callable[[Any], Any] | None = None,
    blob: Callable[[bytes], Any] | None = None,
) -> Any:
    """``value`` as the JSON of ``shape``: model members only, AWS's encodings
    (timestamps as epoch seconds, blobs in base64; another protocol passes
    its own: CBOR's tag 1 and byte strings)."""
    return _Writer(timestamp or epoch_seconds, blob or _base64).write(shape, value)


class _Writer:
    def __init__(self, timestamp: Callable[[Any], Any], blob: Callable[[bytes], Any]) -> None:
        self.timestamp = timestamp
        self.blob = blob

    def write(self, shape: Shape | None, value: Any) -> Any:
        if shape is None or value is None:
            return {} if shape is None else None
        kind = shape.type_name
        if kind == "structure":
            if not isinstance(value, Mapping):
                return {}
            written = {}
            for name, member in shape.members.items():
                item = value.get(name)
                if item is not None:
                    written[name] = self.write(member, item)
            return written
        if kind == "list":
            return [self.write(shape.member, item) for item in value]
        if kind == "map":
            return {key: self.write(shape.value, item) for key, item in value.items()}
        if kind == "timestamp":
            return self.timestamp(value)
        if kind == "blob":
            return self.blob(value.encode() if isinstance(value, str) else bytes(value))
        return value


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def epoch_seconds(value: Any) -> float | int:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return float(value)
