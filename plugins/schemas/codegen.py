"""Code bindings: typed classes for a schema version, in Python and TypeScript,
as the zip GetCodeBindingSource answers.

Languages by AWS's names: ``Python36`` (dataclasses, one per object of the
schema, with ``from_dict``/``to_dict``, and the EventBridge envelope
``AWSEvent`` whose ``detail`` is the schema's detail class; a
``marshaller`` module turns an event (a dict, or its JSON text) into an
``AWSEvent`` and back) and ``TypeScript3`` (an interface per object, the
``AWSEvent`` envelope, and a ``Marshaller`` reading and writing JSON).
``Java8`` and ``Go1`` are AWS's too and are not made here
(``BadRequestException`` names the two that are).

Why our own generator and not datamodel-code-generator or
json-schema-to-typescript: what is generated is AWS's binding (the
envelope, the marshaller, the zip's layout), not a bare model of one JSON
Schema, so either tool's output would be rewritten around anyway;
datamodel-code-generator brings black, isort, jinja2, genson and inflect
into a server's dependencies for the part we keep (the classes), and
json-schema-to-typescript needs Node.js at run time on every runner. The
schemas registered here are JSON Schema's core keywords (type, properties,
required, items, $ref, enum), which map to classes directly; anything else
(``oneOf``, ``patternProperties``...) is typed as ``Any`` / ``unknown``.
The Python output passes ``mypy --strict``, the TypeScript ``tsc --strict``
(tests).

Code is generated from the version's JSONSchema Draft 4 form
(``infer.export_draft4`` for an OpenAPI 3 one).
"""

from __future__ import annotations

import io
import keyword
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from plugins.schemas.infer import DRAFT4, ENVELOPE, export_draft4, pascal

PYTHON, TYPESCRIPT = "Python36", "TypeScript3"
LANGUAGES = (PYTHON, TYPESCRIPT)
#: AWS's other languages: refused with a message naming the ones made here.
AWS_ONLY = ("Java8", "Go1")
_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")

#: The envelope's fields, as every event has them (in the order AWS lists them).
ENVELOPE_FIELDS: dict[str, dict[str, Any]] = {
    "version": {"type": "string"},
    "id": {"type": "string"},
    "detail-type": {"type": "string"},
    "source": {"type": "string"},
    "account": {"type": "string"},
    "time": {"type": "string", "format": "date-time"},
    "region": {"type": "string"},
    "resources": {"type": "array", "items": {"type": "string"}},
}


@dataclass
class Field:
    key: str  # the JSON key
    schema: dict[str, Any]
    required: bool


@dataclass
class Model:
    name: str
    fields: list[Field] = field(default_factory=list)


def models(kind: str, content: str) -> list[Model]:
    """The classes of a schema version, the envelope ``AWSEvent`` last."""
    document = orjson.loads(content)
    schema = export_draft4(document) if kind != DRAFT4 else document
    definitions: dict[str, Any] = dict(schema.get("definitions", {}))
    names = {name: pascal(name) for name in definitions}
    made: list[Model] = []
    for name, body in definitions.items():
        if isinstance(body, dict) and body.get("type", "object") == "object":
            made.append(_model(names[name], body))
    properties = schema.get("properties", {})
    if "detail" in properties:  # an AWSEvent: the envelope is the root
        root = _model(ENVELOPE, schema)
        have = {f.key for f in root.fields}
        for key, value in ENVELOPE_FIELDS.items():
            if key not in have:
                root.fields.append(Field(key, value, False))
    else:  # the schema describes the detail only: the envelope wraps it
        detail_name = pascal(str(schema.get("title") or "Detail"))
        if detail_name == ENVELOPE:
            detail_name = "Detail"
        made.append(_model(detail_name, schema))
        root = Model(
            ENVELOPE,
            [Field(k, v, True) for k, v in ENVELOPE_FIELDS.items()]
            + [Field("detail", {"$ref": f"#/definitions/{detail_name}"}, True)],
        )
        names[detail_name] = detail_name
    made.append(root)
    for model in made:
        for f in model.fields:
            f.schema = _renamed(f.schema, names)
    # Objects written inline (with properties) become classes of their own.
    taken = {m.name for m in made}
    detail = pascal(str(schema.get("x-amazon-events-detail-type") or "Detail"))
    hoisted: list[Model] = []
    for model in made:
        for f in model.fields:
            name = detail if model is root and f.key == "detail" else pascal(f.key)
            f.schema = _hoist(f.schema, name, taken, hoisted)
    return hoisted + made


def _hoist(schema: Any, name: str, taken: set[str], hoisted: list[Model]) -> Any:
    """``schema`` with an inline object that has properties made a class
    (``hoisted``, named ``name`` or ``name_2``...), and a ``$ref`` to it."""
    if not isinstance(schema, dict):
        return schema
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        return {**schema, "items": _hoist(schema["items"], name, taken, hoisted)}
    if schema.get("type") != "object" or not isinstance(schema.get("properties"), dict):
        return schema
    unique, n = name, 1
    while unique in taken:
        n += 1
        unique = f"{name}_{n}"
    taken.add(unique)
    model = _model(unique, schema)
    for f in model.fields:
        f.schema = _hoist(f.schema, pascal(f.key), taken, hoisted)
    hoisted.append(model)
    return {"$ref": unique}


def _model(name: str, body: Mapping[str, Any]) -> Model:
    required = set(body.get("required", ()))
    return Model(
        name,
        [
            Field(str(key), value if isinstance(value, dict) else {}, key in required)
            for key, value in body.get("properties", {}).items()
        ],
    )


def _renamed(schema: Any, names: Mapping[str, str]) -> Any:
    """``$ref``s naming the classes the definitions became."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            target = ref.removeprefix("#/definitions/")
            return {"$ref": names.get(target, pascal(target))}
        return {k: _renamed(v, names) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_renamed(v, names) for v in schema]
    return schema


# -- Python ------------------------------------------------------------------------------


def _snake(key: str) -> str:
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key)
    text = re.sub(r"[^A-Za-z0-9_]", "_", text).lower().strip("_") or "field"
    if text[0].isdigit():
        text = f"f_{text}"
    return f"{text}_" if keyword.iskeyword(text) else text


def _py_type(schema: Mapping[str, Any]) -> str:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return ref
    kind = schema.get("type")
    if kind == "string":
        return "str"
    if kind == "integer":
        return "int"
    if kind == "number":
        return "float"
    if kind == "boolean":
        return "bool"
    if kind == "array":
        return f"list[{_py_type(schema.get('items', {}))}]"
    if kind == "object":
        return "dict[str, Any]"
    return "Any"


def _py_read(schema: Mapping[str, Any], value: str) -> str:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return f"{ref}.from_dict({value})"
    if schema.get("type") == "array":
        item = _py_read(schema.get("items", {}), "item")
        return value if item == "item" else f"[{item} for item in {value}]"
    if schema.get("type") == "number":
        return f"float({value})"  # JSON's 1 is a number too
    return value


def _py_write(schema: Mapping[str, Any], value: str) -> str:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return f"{value}.to_dict()"
    if schema.get("type") == "array":
        item = _py_write(schema.get("items", {}), "item")
        return value if item == "item" else f"[{item} for item in {value}]"
    return value


def python_source(model_list: list[Model]) -> str:
    lines = [
        '"""Classes of an event schema, made by pipelines (the Python36 code binding)."""',
        "",
        "from __future__ import annotations",
        "",
        "from dataclasses import dataclass",
        "from typing import Any",
        "",
    ]
    for model in model_list:
        ordered = [f for f in model.fields if f.required] + [
            f for f in model.fields if not f.required
        ]
        names = _unique([_snake(f.key) for f in ordered])
        lines += ["", "@dataclass", f"class {model.name}:"]
        if not ordered:
            lines.append("    pass")
        for f, name in zip(ordered, names, strict=True):
            kind = _py_type(f.schema)
            lines.append(
                f"    {name}: {kind}" if f.required else f"    {name}: {kind} | None = None"
            )
        lines += [
            "",
            "    @classmethod",
            f"    def from_dict(cls, data: dict[str, Any]) -> {model.name}:",
            "        return cls(",
        ]
        for f, name in zip(ordered, names, strict=True):
            key = repr(f.key)
            if f.required:
                lines.append(f"            {name}={_py_read(f.schema, f'data[{key}]')},")
            else:
                read = _py_read(f.schema, f"data[{key}]")
                lines.append(f"            {name}={read} if data.get({key}) is not None else None,")
        lines += ["        )", "", "    def to_dict(self) -> dict[str, Any]:"]
        lines.append("        data: dict[str, Any] = {}")
        for f, name in zip(ordered, names, strict=True):
            key = repr(f.key)
            written = _py_write(f.schema, f"self.{name}")
            if f.required:
                lines.append(f"        data[{key}] = {written}")
            else:
                lines.append(f"        if self.{name} is not None:")
                lines.append(f"            data[{key}] = {written}")
        lines.append("        return data")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


MARSHALLER_PY = '''"""An event (its dict or JSON text) to an AWSEvent and back."""

from __future__ import annotations

import json
from typing import Any

from .models import AWSEvent


def unmarshall(event: dict[str, Any] | str | bytes) -> AWSEvent:
    data: dict[str, Any] = json.loads(event) if isinstance(event, str | bytes) else event
    return AWSEvent.from_dict(data)


def marshall(event: AWSEvent) -> dict[str, Any]:
    return event.to_dict()
'''


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    made = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        made.append(name if not count else f"{name}_{count + 1}")
    return made


# -- TypeScript ----------------------------------------------------------------------------


def _ts_type(schema: Mapping[str, Any]) -> str:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return ref
    kind = schema.get("type")
    if kind == "string":
        return "string"
    if kind in ("integer", "number"):
        return "number"
    if kind == "boolean":
        return "boolean"
    if kind == "array":
        item = _ts_type(schema.get("items", {}))
        return f"{item}[]" if _IDENTIFIER.fullmatch(item) else f"Array<{item}>"
    if kind == "object":
        return "Record<string, unknown>"
    return "unknown"


def typescript_source(model_list: list[Model]) -> str:
    lines = [
        "// Interfaces of an event schema, made by pipelines (the TypeScript3 code binding).",
        "",
    ]
    for model in model_list:
        lines.append(f"export interface {model.name} {{")
        for f in model.fields:
            key = f.key if _IDENTIFIER.fullmatch(f.key) else orjson.dumps(f.key).decode()
            optional = "" if f.required else "?"
            lines.append(f"  {key}{optional}: {_ts_type(f.schema)};")
        lines += ["}", ""]
    lines += [
        "export class Marshaller {",
        "  static unmarshal(text: string): AWSEvent {",
        "    return JSON.parse(text) as AWSEvent;",
        "  }",
        "",
        "  static marshal(event: AWSEvent): string {",
        "    return JSON.stringify(event);",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


# -- the zip ---------------------------------------------------------------------------------


def package_path(schema_name: str) -> str:
    """Where a schema's binding goes in the zip: ``schema/<source>/<detail>``,
    each part a valid package name (``shop@OrderPlaced`` ->
    ``schema/shop/orderplaced``)."""
    source, _, detail = schema_name.partition("@")
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", source.lower()) if p]
    parts.append(re.sub(r"[^A-Za-z0-9]+", "_", (detail or "event").lower()).strip("_") or "event")
    return "/".join(["schema", *(f"p{p}" if p[0].isdigit() else p for p in parts)])


def binding_zip(language: str, schema_name: str, kind: str, content: str) -> bytes:
    """The zip GetCodeBindingSource answers."""
    model_list = models(kind, content)
    base = package_path(schema_name)
    files: dict[str, str] = {}
    if language == PYTHON:
        files[f"{base}/models.py"] = python_source(model_list)
        files[f"{base}/marshaller.py"] = MARSHALLER_PY
        files[f"{base}/__init__.py"] = (
            "from .marshaller import marshall, unmarshall\n"
            f"from .models import {', '.join(m.name for m in model_list)}\n\n"
            f"__all__ = {sorted(['marshall', 'unmarshall', *(m.name for m in model_list)])!r}\n"
        )
        # Every directory on the way a package, so ``schema.shop...`` imports.
        parts = base.split("/")
        for depth in range(1, len(parts)):
            files.setdefault("/".join([*parts[:depth], "__init__.py"]), "")
    elif language == TYPESCRIPT:
        files[f"{base}/index.ts"] = typescript_source(model_list)
    else:
        raise ValueError(language)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as made:
        for path, text in sorted(files.items()):
            made.writestr(zipfile.ZipInfo(path, (2020, 1, 1, 0, 0, 0)), text)
    return buffer.getvalue()
