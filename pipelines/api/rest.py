"""AWS's REST-JSON protocol by the service model: the operation from the
method and path, members from the URI, query string, headers and body.

A rest-json service (scheduler, pipes, schemas, lambda) names no operation
in a header: each operation has an HTTP method and a ``requestUri`` template
(``/schedules/{Name}``, a greedy ``{Key+}``, literal query parameters such as
``?List=ALL``), and each input member says where it travels (``location``:
uri, querystring, header, headers (a prefix), or the JSON body; one member
may be the whole body, the shape's ``payload``). ``RestRoutes`` finds the
operation, ``read_rest`` gathers the members (strings converted to the
member's type) and checks them with ``wire.check_input`` like every other
protocol's request; ``write_rest`` puts an answer's members back where the
output shape says (headers, the status code, the body or its payload).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import email.utils
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson
from botocore.model import OperationModel, ServiceModel, Shape, StructureShape

from pipelines.api.errors import ApiError
from pipelines.api.wire import check_input, epoch_seconds, json_body, write_output

PROTOCOL = "rest-json"
_LABEL = re.compile(r"\{([^}]+?)(\+?)\}")


@dataclass(frozen=True, slots=True)
class _Route:
    operation: str
    method: str
    path: re.Pattern[str]
    #: Literal query parameters of the template (``?List=ALL``): required to match.
    query: tuple[tuple[str, str | None], ...]
    #: How specific the template is: more literal text wins (``/tags/x`` over ``/{Name}``).
    weight: tuple[int, int]


def _route(op: OperationModel) -> _Route:
    template = op.http.get("requestUri", "/")
    path_part, _, query_part = template.partition("?")
    pattern = ""
    literal = 0
    position = 0
    for found in _LABEL.finditer(path_part):
        text = path_part[position : found.start()]
        pattern += re.escape(text)
        literal += len(text)
        # A greedy label takes slashes; any other one segment (never empty).
        pattern += f"(?P<{_group(found.group(1))}>{'.+' if found.group(2) else '[^/]+'})"
        position = found.end()
    tail = path_part[position:]
    pattern += re.escape(tail)
    literal += len(tail)
    if pattern.endswith("/") and len(pattern) > 1:
        pattern = pattern[:-1]
    query: list[tuple[str, str | None]] = []
    for item in filter(None, query_part.split("&")):
        name, equals, value = item.partition("=")
        query.append((name, value if equals else None))
    return _Route(
        op.name,
        op.http.get("method", "POST").upper(),
        re.compile(pattern + "/?"),
        tuple(query),
        (len(query), literal),
    )


def _group(label: str) -> str:
    # A label is a member's name (letters, digits): a regex group name as is.
    return re.sub(r"\W", "_", label)


class RestRoutes:
    """A rest-json service's operations by method and path."""

    def __init__(self, model: ServiceModel) -> None:
        routes = [_route(model.operation_model(name)) for name in model.operation_names]
        # Most specific first: literal query parameters, then literal path text.
        self._routes = sorted(routes, key=lambda route: route.weight, reverse=True)

    def find(
        self, method: str, path: str, query: Mapping[str, str]
    ) -> tuple[str, dict[str, str]] | None:
        """The operation a request is for and its raw (percent-encoded) URI
        labels, or None when no template matches its path."""
        return self._find(method.upper(), path, query, any_method=False)

    def _find(
        self, method: str, path: str, query: Mapping[str, str], *, any_method: bool
    ) -> tuple[str, dict[str, str]] | None:
        for route in self._routes:
            if route.method != method and not any_method:
                continue
            found = route.path.fullmatch(path)
            if found is None:
                continue
            if any(
                name not in query or (value is not None and query[name] != value)
                for name, value in route.query
            ):
                continue
            return route.operation, found.groupdict()
        return None

    def allowed(self, path: str, query: Mapping[str, str]) -> bool:
        """Whether some operation has this path under another method."""
        return self._find("", path, query, any_method=True) is not None


@functools.cache
def routes_of(model: ServiceModel) -> RestRoutes:
    return RestRoutes(model)


def operation_of(
    model: ServiceModel, method: str, raw_path: str, query: Mapping[str, str]
) -> tuple[str, dict[str, str]]:
    """The operation of a rest-json request and its URI labels; AWS's
    ``UnknownOperationException`` (404) when no template matches."""
    path = raw_path.partition("?")[0] or "/"
    found = routes_of(model).find(method, path, query)
    if found is None:
        raise ApiError(
            "UnknownOperationException",
            f"{model.service_name} has no operation for {method} {path}",
            405 if routes_of(model).allowed(path, query) else 404,
        )
    return found


class _Multi:
    """What ``read_rest`` needs of a request's query string and headers:
    every value of a name (aiohttp's MultiDict has ``getall``)."""

    def __init__(self, items: Any) -> None:
        self.items = items

    def all(self, name: str) -> list[str]:
        getall = getattr(self.items, "getall", None)
        if getall is not None:
            return [str(value) for value in getall(name, [])]
        value = self.items.get(name)
        return [] if value is None else [str(value)]


def read_rest(
    op: OperationModel,
    labels: Mapping[str, str],
    query: Any,
    headers: Any,
    body: bytes,
    *,
    validation_code: str = "ValidationException",
    enums: bool = True,
) -> dict[str, Any]:
    """The parameters of a rest-json request to ``op``, checked against its
    input shape like any protocol's (``wire.check_input``). ``labels`` are
    the raw URI labels ``operation_of`` found; ``query`` and ``headers`` are
    the request's (multi-)mappings."""
    shape = op.input_shape
    if shape is None:
        return {}
    raw = _body(shape, body)
    query_values, header_values = _Multi(query), _Multi(headers)
    for name, member in shape.members.items():
        where = member.serialization.get("location")
        wire_name = member.serialization.get("name", name)
        if where == "uri":
            value = labels.get(_group(wire_name))
            if value is not None:
                raw[name] = _scalar(member, unquote(value), "iso8601")
        elif where == "querystring":
            value = _from_query(member, wire_name, query_values, query)
            if value is not None:
                raw[name] = value
        elif where == "header":
            found = header_values.all(wire_name)
            if found:
                raw[name] = _from_header(member, found)
        elif where == "headers":
            prefix = wire_name.lower()
            values = {
                key[len(prefix) :]: str(value)
                for key, value in _items(headers)
                if key.lower().startswith(prefix)
            }
            if values:
                raw[name] = values
    return check_input(shape, raw, validation_code=validation_code, enums=enums)


def _items(mapping: Any) -> list[tuple[str, Any]]:
    return list(mapping.items())


def _body(shape: StructureShape, body: bytes) -> dict[str, Any]:
    """The members the body carries: the payload member, or the JSON object's."""
    payload = shape.serialization.get("payload")
    if payload is not None:
        member = shape.members[payload]
        if member.type_name in ("blob", "string"):
            if not body:
                return {}
            # A blob arrives as its bytes (the readers take bytes as CBOR's).
            return {
                payload: body if member.type_name == "blob" else body.decode("utf-8", "replace")
            }
        return {payload: json_body(body)} if body.strip() else {}
    raw = json_body(body) if body.strip() else {}
    if not isinstance(raw, dict):
        raise ApiError("SerializationException", "the body is not a JSON object")
    # Members that travel elsewhere are not read from the body; one with a
    # ``locationName`` travels under it (the schemas service's ``tags``).
    named = {
        member.serialization.get("name", name): name
        for name, member in shape.members.items()
        if "location" not in member.serialization
    }
    return {named[key]: value for key, value in raw.items() if key in named}


def _from_query(member: Shape, wire_name: str, values: _Multi, query: Any) -> Any:
    if member.type_name == "list":
        found = values.all(wire_name)
        return [_scalar(member.member, item, "iso8601") for item in found] if found else None
    if member.type_name == "map":
        # A map in the query string takes every parameter not otherwise named.
        return {key: str(value) for key, value in _items(query)} or None
    found = values.all(wire_name)
    return _scalar(member, found[0], "iso8601") if found else None


def _from_header(member: Shape, values: list[str]) -> Any:
    if member.type_name == "list":
        items = [item.strip() for value in values for item in value.split(",")]
        return [_scalar(member.member, item, "rfc822") for item in items]
    value = ",".join(values)
    if member.type_name == "string" and member.serialization.get("jsonvalue"):
        try:
            return orjson.loads(base64.b64decode(value))
        except (binascii.Error, ValueError):
            return value  # the check refuses it, naming the member
    return _scalar(member, value, "rfc822")


def _scalar(shape: Shape, text: str, default_format: str) -> Any:
    """A string from the URI, query or a header as the shape's type; text
    that is not one is kept as text, so the check refuses it by its member's
    name as AWS does (``STRING_VALUE can not be converted to Integer``)."""
    kind = shape.type_name
    if kind in ("integer", "long"):
        try:
            return int(text)
        except ValueError:
            return text
    if kind in ("float", "double"):
        try:
            return float(text)
        except ValueError:
            return text
    if kind == "boolean":
        lowered = text.lower()
        return {"true": True, "false": False}.get(lowered, text)
    if kind == "timestamp":
        return _timestamp(text, shape.serialization.get("timestampFormat", default_format))
    if kind == "blob":
        return text  # base64, as the JSON body carries it
    return text


def _timestamp(text: str, form: str) -> Any:
    try:
        return float(text)
    except ValueError:
        pass
    if form == "rfc822" or not text[:4].isdigit():
        try:
            return email.utils.parsedate_to_datetime(text).timestamp()
        except (TypeError, ValueError):
            return text
    return text  # ISO 8601: the reader parses it, or refuses it by name


def write_rest(
    op: OperationModel, result: Mapping[str, Any]
) -> tuple[int, dict[str, str], bytes | None]:
    """An answer of ``op``: its status (``http.responseCode``, or a
    ``statusCode`` member's value), the headers its members travel in and
    the body (the payload member, or the JSON of the body members; None:
    no body)."""
    status = int(op.http.get("responseCode", 200))
    shape = op.output_shape
    headers: dict[str, str] = {}
    if shape is None:
        return status, headers, None
    body_members: dict[str, Any] = {}
    for name, member in shape.members.items():
        value = result.get(name)
        if value is None:
            continue
        where = member.serialization.get("location")
        wire_name = member.serialization.get("name", name)
        if where == "statusCode":
            status = int(value)
        elif where == "header":
            headers[wire_name] = _header_text(member, value)
        elif where == "headers":
            for key, item in value.items():
                headers[f"{wire_name}{key}"] = str(item)
        else:
            body_members[name] = value
    payload = shape.serialization.get("payload")
    if payload is not None:
        member = shape.members[payload]
        value = body_members.get(payload)
        if value is None:
            return status, headers, None
        if member.type_name == "blob":
            return status, headers, value.encode() if isinstance(value, str) else bytes(value)
        if member.type_name == "string":
            return status, headers, str(value).encode()
        return status, headers, orjson.dumps(write_output(member, value, wire_names=True))
    return status, headers, orjson.dumps(write_output(shape, body_members, wire_names=True))


def _header_text(member: Shape, value: Any) -> str:
    kind = member.type_name
    if kind == "timestamp":
        form = member.serialization.get("timestampFormat", "rfc822")
        seconds = epoch_seconds(value)
        if form == "iso8601":
            return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat().replace("+00:00", "Z")
        if form == "unixTimestamp":
            return str(seconds)
        return email.utils.formatdate(seconds, usegmt=True)
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "list":
        return ",".join(str(item) for item in value)
    if kind == "string" and member.serialization.get("jsonvalue"):
        return base64.b64encode(orjson.dumps(value)).decode()
    if kind == "blob":
        data = value.encode() if isinstance(value, str) else bytes(value)
        return base64.b64encode(data).decode()
    return str(value)


def error_body(model: ServiceModel, shape_name: str, message: str) -> bytes:
    """A rest-json error's body: the message under the member name the
    error shape gives it (``Message`` in the scheduler's, ``message`` in
    most), which botocore reads either way."""
    member = "message"
    if shape_name in model.shape_names:
        shape = model.shape_for(shape_name)
        if isinstance(shape, StructureShape) and "Message" in shape.members:
            member = "Message"
    return orjson.dumps({member: message})
