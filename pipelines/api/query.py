"""AWS's query protocol by the service model: form parameters in, XML out.

Services such as SNS (and CloudWatch and SQS for older clients) take
``Action=Publish&TopicArn=...&MessageAttributes.entry.1.Name=...`` as a form
and answer XML. ``read_query`` rebuilds the nested parameters from the flat
names by walking the input shape (structures by member name, lists as
``.member.N`` or ``.N`` when flattened, maps as ``.entry.N.key``), then
checks them as the JSON protocols are checked; ``write_xml`` writes the
output shape inside ``<OpResponse><OpResult>`` with ``ResponseMetadata``;
``error_xml`` is the ``ErrorResponse``.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape

from botocore.model import OperationModel, Shape

from pipelines.api.errors import ApiError
from pipelines.api.wire import check_input

_MISSING: Any = object()


def _name(shape: Shape, default: str) -> str:
    return str(shape.serialization.get("name", default))


def _scalar(shape: Shape, text: str, where: str) -> Any:
    kind = shape.type_name
    try:
        if kind in ("integer", "long"):
            return int(text)
        if kind in ("float", "double"):
            return float(text)
    except ValueError:
        raise ApiError(
            "ValidationError", f"Value '{text}' at '{where}' is not a valid {kind}"
        ) from None
    if kind == "boolean":
        if text.lower() not in ("true", "false"):
            raise ApiError("ValidationError", f"Value '{text}' at '{where}' is not a boolean")
        return text.lower() == "true"
    return text


def _flattened_stem(prefix: str, member: Shape) -> str:
    """Where a flattened list's items are: botocore's query serializer names
    them by the member's XML name in place of the list's own last name
    (SQS's ``AttributeNames`` are ``AttributeName.1``, ``AttributeName.2``)."""
    item_name = member.serialization.get("name")
    if not item_name:
        return prefix
    head, dot, _ = prefix.rpartition(".")
    return f"{head}{dot}{item_name}"


def _read(shape: Shape, form: Mapping[str, str], prefix: str) -> Any:
    kind = shape.type_name
    if kind == "structure":
        found: dict[str, Any] = {}
        for member_name, member in shape.members.items():
            key = _name(member, member_name)
            value = _read(member, form, f"{prefix}.{key}" if prefix else key)
            if value is not _MISSING:
                found[member_name] = value
        return found if found or not prefix else _MISSING
    if kind == "list":
        member = shape.member
        if shape.serialization.get("flattened"):
            stem = _flattened_stem(prefix, member)
        else:
            stem = f"{prefix}.{_name(member, 'member')}"
        items = []
        index = 1
        while True:
            item = _read(member, form, f"{stem}.{index}")
            if item is _MISSING:
                break
            items.append(item)
            index += 1
        if items:
            return items
        return [] if prefix in form else _MISSING  # "Name=" is an empty list
    if kind == "map":
        key_name = _name(shape.key, "key")
        value_name = _name(shape.value, "value")
        stem = prefix if shape.serialization.get("flattened") else f"{prefix}.entry"
        entries: dict[str, Any] = {}
        index = 1
        while f"{stem}.{index}.{key_name}" in form:
            value = _read(shape.value, form, f"{stem}.{index}.{value_name}")
            entries[form[f"{stem}.{index}.{key_name}"]] = None if value is _MISSING else value
            index += 1
        return entries if entries else _MISSING
    if prefix not in form:
        return _MISSING
    return _scalar(shape, form[prefix], prefix)


def read_query(
    operation: OperationModel, form: Mapping[str, str], *, enums: bool = True
) -> dict[str, Any]:
    """The parameters of a query-protocol request, checked against the input
    shape (its enums too, unless ``enums`` is false)."""
    shape = operation.input_shape
    if shape is None:
        return {}
    raw = _read(shape, form, "")
    return check_input(shape, raw, validation_code="ValidationError", enums=enums)


def _iso(value: Any) -> str:
    when: dt.datetime
    if isinstance(value, dt.datetime):
        when = value
    elif isinstance(value, str):
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    else:
        when = dt.datetime.fromtimestamp(float(value), dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _xml(shape: Shape, value: Any, name: str, out: list[str]) -> None:
    kind = shape.type_name
    if kind == "structure":
        out.append(f"<{name}>")
        for member_name, member in shape.members.items():
            item = value.get(member_name) if isinstance(value, Mapping) else None
            if item is not None:
                _xml(member, item, _name(member, member_name), out)
        out.append(f"</{name}>")
    elif kind == "list":
        member = shape.member
        if shape.serialization.get("flattened"):
            for item in value:
                _xml(member, item, _name(member, name), out)
        else:
            out.append(f"<{name}>")
            for item in value:
                _xml(member, item, _name(member, "member"), out)
            out.append(f"</{name}>")
    elif kind == "map":
        key_name = _name(shape.key, "key")
        value_name = _name(shape.value, "value")
        flattened = shape.serialization.get("flattened")
        if not flattened:
            out.append(f"<{name}>")
        for key, item in value.items():
            out.append(f"<{name}>" if flattened else "<entry>")
            out.append(f"<{key_name}>{escape(str(key))}</{key_name}>")
            _xml(shape.value, item, value_name, out)
            out.append(f"</{name}>" if flattened else "</entry>")
        if not flattened:
            out.append(f"</{name}>")
    else:
        out.append(f"<{name}>{escape(_text(kind, value))}</{name}>")


def _text(kind: str, value: Any) -> str:
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "timestamp":
        return _iso(value)
    if kind == "blob":
        data = value.encode() if isinstance(value, str) else bytes(value)
        return base64.b64encode(data).decode()
    return str(value)


def write_xml(operation: OperationModel, value: Mapping[str, Any], request_id: str) -> bytes:
    """The XML answer of a query-protocol operation."""
    namespace = operation.service_model.metadata.get("xmlNamespace", "")
    out = [f'<{operation.name}Response xmlns="{namespace}">']
    shape = operation.output_shape
    if shape is not None:
        wrapper = shape.serialization.get("resultWrapper") or f"{operation.name}Result"
        _xml(shape, value, wrapper, out)
    out.append(f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>")
    out.append(f"</{operation.name}Response>")
    return "".join(out).encode()


def error_xml(
    error: ApiError, code: str, namespace: str, request_id: str, *, detail: bool = False
) -> bytes:
    """The ``ErrorResponse``; with ``detail`` an empty ``<Detail/>`` after the
    message, as SQS writes it (botocore shows it as ``Detail: None``)."""
    kind = "Sender" if error.sender_fault else "Receiver"
    # An error without a message has no Message element (CloudWatch's ResourceNotFound).
    message = f"<Message>{escape(error.message)}</Message>" if error.message else ""
    if detail:
        message += "<Detail/>"
    return (
        f'<ErrorResponse xmlns="{namespace}"><Error><Type>{kind}</Type>'
        f"<Code>{escape(code)}</Code>{message}</Error>"
        f"<RequestId>{request_id}</RequestId></ErrorResponse>"
    ).encode()
