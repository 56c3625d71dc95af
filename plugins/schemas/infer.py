"""A schema inferred from events, in AWS's two shapes, and its fingerprint.

What schema discovery and GetDiscoveredSchema produce. An event's structure
is read into a *shape*: a JSON Schema tree (draft 4 keywords, inline) where
an object lists every key it has as ``properties`` and ``required``, an
array its items' merged shape, a string ``type: string`` (with ``format:
date-time`` when it is an RFC 3339 time, as AWS marks ``time``), a number
``type: number`` (AWS's discovered schemas do not tell integers apart), a
boolean ``type: boolean``. Shapes of several events of one type *merge*: the
union of the properties, ``required`` those every event had.

Rendered as AWS's discovered schemas are:

- ``OpenApi3``: ``openapi: 3.0.0``, ``info`` (``version: 1.0.0``, ``title``
  the detail type in PascalCase), ``paths: {}``, and every object under
  ``components.schemas``: ``AWSEvent`` (the envelope, with
  ``x-amazon-events-source`` and ``x-amazon-events-detail-type``, its
  ``detail`` a ``$ref`` to the component named by the title), each nested
  object a component named after its key in PascalCase;
- ``JSONSchemaDraft4``: the envelope at the root (``$schema`` draft-04,
  ``title: AWSEvent``), the same components under ``definitions``.

``export_draft4`` is ExportSchema: an OpenAPI 3 document rewritten as a
JSONSchema Draft 4 one.

The fingerprint is the shape's structure alone (keys and types, never
values): discovery compares it with those already seen for the same
(source, detail-type) and does nothing more when it matches.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

OPENAPI, DRAFT4 = "OpenApi3", "JSONSchemaDraft4"
TYPES = (OPENAPI, DRAFT4)
DRAFT4_URI = "http://json-schema.org/draft-04/schema#"
ENVELOPE = "AWSEvent"
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
_WORD = re.compile(r"[A-Za-z0-9]+")

Shape = dict[str, Any]
#: Items of an array the fingerprint looks at, at most.
SAMPLE = 4


def shape_of(value: Any) -> Shape:
    """The structure of one JSON value."""
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int | float):
        return {"type": "number"}
    if isinstance(value, str):
        return (
            {"type": "string", "format": "date-time"}
            if _TIME.fullmatch(value)
            else {"type": "string"}
        )
    if isinstance(value, Mapping):
        keys = sorted(str(k) for k in value)
        return {
            "type": "object",
            "required": keys,
            "properties": {k: shape_of(value[k]) for k in keys},
        }
    if isinstance(value, list):
        items: Shape | None = None
        for item in value:
            found = shape_of(item)
            items = found if items is None else merge(items, found)
        # An empty array says nothing of its items: AWS writes an object.
        return {"type": "array", "items": items if items is not None else {"type": "object"}}
    return {}  # null: any value


def merge(old: Shape, new: Shape) -> Shape:
    """One shape both values fit, as far as their types agree: objects keep
    every property either has (required: those both require), arrays merge
    their items; where types differ the first seen stays (AWS's too keeps one
    type per field)."""
    if not old:
        return new
    if not new or old.get("type") != new.get("type"):
        return old
    if old.get("type") == "object":
        # An object of unknown keys (an empty array's items, or read back so
        # from a rendered schema) says nothing: the other shape stands as it
        # is, its `required` kept. Merged as an object without keys, two
        # empty arrays would become a component and drop every `required`:
        # a new version for events of an unchanged structure.
        if "properties" not in new:
            return old
        if "properties" not in old:
            return new
        properties = dict(old.get("properties", {}))
        for key, shape in new.get("properties", {}).items():
            properties[key] = merge(properties[key], shape) if key in properties else shape
        required = sorted(set(old.get("required", ())) & set(new.get("required", ())))
        return {
            "type": "object",
            "required": required,
            "properties": dict(sorted(properties.items())),
        }
    if old.get("type") == "array":
        return {"type": "array", "items": merge(old.get("items", {}), new.get("items", {}))}
    if old.get("format") != new.get("format"):
        return {"type": old["type"]}  # a time in one event, free text in another
    return old


def fingerprint(value: Any) -> int:
    """A hash of the value's structure (keys and types, not values). Keys in
    another order make another fingerprint: only a miss, which the merge
    then finds to be the same schema."""
    return hash(_structure(value))


def _looks_like_time(text: str) -> bool:
    # The regular expression only for what could be one (most strings are not).
    return len(text) >= 20 and text[10:11] == "T" and _TIME.fullmatch(text) is not None


def _structure(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return tuple([(key, _structure(item)) for key, item in value.items()])
    if kind is str:
        return "t" if _looks_like_time(value) else "s"
    if kind is list:
        # A sample of the items (the first, the last, and evenly between: at
        # most SAMPLE): a list of records whose later items add a field is a
        # new shape, most likely seen; walking every item of long arrays
        # would cost discovery most of its time. A shape found new is then
        # merged from every item (``shape_of``).
        count = len(value)
        if count > SAMPLE:
            step = (count - 1) / (SAMPLE - 1)
            value = [value[round(n * step)] for n in range(SAMPLE)]
        return ("[", frozenset([_structure(item) for item in value]))
    if kind is bool:
        return "b"
    if kind is int or kind is float:
        return "n"
    if isinstance(value, Mapping):
        return _structure(dict(value))
    return "0"


def pascal(text: str) -> str:
    """AWS's component and class names: the words of ``text``, each capitalised
    (``Order Placed`` -> ``OrderPlaced``, ``line-items`` -> ``LineItems``)."""
    words = _WORD.findall(text)
    name = "".join(w[:1].upper() + w[1:] for w in words) or "Event"
    return name if not name[0].isdigit() else f"N{name}"


def schema_name(source: str, detail_type: str) -> str:
    """AWS's name of a discovered schema: ``source@DetailType``."""
    return f"{source}@{pascal(detail_type)}"


def _components(root: Shape, root_name: str, detail_name: str) -> dict[str, Shape]:
    """Every object of the event's shape as a named component (its place
    left as ``{"$ref": name}``, given its prefix by ``_refs``): the root as
    ``root_name``, its ``detail`` as ``detail_name``, any other object by its
    key in PascalCase (``_2``, ``_3``... when a name is taken)."""
    components: dict[str, Shape] = {}

    def place(shape: Shape, name: str) -> Shape:
        # An object of unknown keys (an empty array's items) stays inline, as AWS's.
        if shape.get("type") == "object" and "properties" in shape:
            unique, n = name, 1
            while unique in components:
                n += 1
                unique = f"{name}_{n}"
            components[unique] = {}  # reserved before its children take names
            components[unique] = walk(shape, unique == root_name)
            return {"$ref": unique}
        if shape.get("type") == "array":
            return {"type": "array", "items": place(shape.get("items", {}), name)}
        return dict(shape)

    def walk(shape: Shape, root: bool) -> Shape:
        made: Shape = {"type": "object"}
        if shape.get("required"):
            made["required"] = list(shape["required"])
        made["properties"] = {
            k: place(v, detail_name if root and k == "detail" else pascal(k))
            for k, v in shape.get("properties", {}).items()
        }
        return made

    place(root, root_name)
    return components


def render(source: str, detail_type: str, event_shape: Shape, kind: str) -> dict[str, Any]:
    """The discovered schema of one event type from its merged event shape.
    JSON that is no event (neither source nor detail-type) is rendered as AWS
    renders it: its root is the component ``Event``, without the envelope's
    extensions."""
    if not source and not detail_type:
        named = _components(event_shape or {"type": "object"}, "Event", "Detail")
        if kind == OPENAPI:
            return {
                "openapi": "3.0.0",
                "info": {"version": "1.0.0", "title": "Event"},
                "paths": {},
                "components": {"schemas": _refs(named, "#/components/schemas/")},
            }
        definitions = _refs(named, "#/definitions/")
        root = definitions.pop("Event")
        return {"$schema": DRAFT4_URI, "title": "Event", "definitions": definitions, **root}
    title = pascal(detail_type)
    shape = dict(event_shape)
    properties = dict(shape.get("properties", {}))
    if properties.get("detail", {}).get("type") != "object":
        properties["detail"] = {"type": "object"}
    shape["properties"] = properties
    named = _components(shape, ENVELOPE, title)
    envelope = named[ENVELOPE]
    # AWS's extension keys sit between required and properties.
    named[ENVELOPE] = {
        "type": "object",
        **({"required": envelope["required"]} if "required" in envelope else {}),
        "x-amazon-events-detail-type": detail_type,
        "x-amazon-events-source": source,
        "properties": envelope["properties"],
    }
    if kind == OPENAPI:
        return {
            "openapi": "3.0.0",
            "info": {"version": "1.0.0", "title": title},
            "paths": {},
            "components": {"schemas": _refs(named, "#/components/schemas/")},
        }
    definitions = _refs(named, "#/definitions/")
    root = definitions.pop(ENVELOPE)
    return {"$schema": DRAFT4_URI, "title": ENVELOPE, "definitions": definitions, **root}


def _refs(value: Any, prefix: str) -> Any:
    """Each ``$ref`` made by ``_components`` (a bare name) given its prefix."""
    if isinstance(value, dict):
        return {
            k: (prefix + v if k == "$ref" and "/" not in v else _refs(v, prefix))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_refs(v, prefix) for v in value]
    return value


def discovered(events: Sequence[Mapping[str, Any]], kind: str) -> dict[str, Any]:
    """The schema AWS's discovery would give events of one type (GetDiscoveredSchema)."""
    shape: Shape = {}
    for event in events:
        shape = merge(shape, shape_of(event))
    first = events[0] if events else {}
    return render(str(first.get("source", "")), str(first.get("detail-type", "")), shape, kind)


def export_draft4(document: Mapping[str, Any]) -> dict[str, Any]:
    """ExportSchema: an OpenAPI 3 schema as a JSONSchema Draft 4 one. The root
    is its ``AWSEvent`` component (else the one named by ``info.title``, else
    the first); the others become ``definitions``; ``$ref``s follow them;
    OpenAPI's own ``nullable`` is dropped."""
    components = dict(document.get("components", {}).get("schemas", {}))
    if not components:
        return {"$schema": DRAFT4_URI, "type": "object"}
    title = document.get("info", {}).get("title")
    root_name = (
        ENVELOPE
        if ENVELOPE in components
        else title
        if title in components
        else next(iter(components))
    )
    moved = _rewrite(copy.deepcopy(components))
    root = moved.pop(root_name)
    made: dict[str, Any] = {"$schema": DRAFT4_URI, "title": root_name}
    if moved:
        made["definitions"] = moved
    made.update(root)
    return made


def _rewrite(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (
                v.replace("#/components/schemas/", "#/definitions/", 1)
                if k == "$ref" and isinstance(v, str)
                else _rewrite(v)
            )
            for k, v in value.items()
            if k != "nullable"
        }
    if isinstance(value, list):
        return [_rewrite(v) for v in value]
    return value


def dumps(document: Any) -> str:
    """Schema content as the registry stores and answers it."""
    return orjson.dumps(document).decode()
