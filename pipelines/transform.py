"""What a rule target receives: the event, or a transformation of it.

A target declares at most one of:

- ``input``: a constant JSON value (or JSON text), sent instead of the event;
- ``input_path``: a JSONPath (EventBridge's subset: ``$``, ``.name``,
  ``['name']``, ``[index]``) selecting part of the event;
- ``input_transformer``: ``input_paths_map`` (variable -> JSONPath) and an
  ``input_template`` with ``<variable>`` placeholders, substituted with
  EventBridge's quoting rules (see ``render``);
- ``input_jmespath`` (beyond AWS): a JMESPath expression over the event.

``compile_transform`` checks the declaration once and returns a function
``(event, rule_name, ingestion_time) -> payload`` for the delivery hot path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import jmespath
import jmespath.exceptions
import orjson

from pipelines.errors import ConfigError
from pipelines.event import DEFAULT_ACCOUNT, DEFAULT_REGION

Transform = Callable[[dict[str, Any], str, float], Any]

MAX_INPUT_PATHS = 100
_STEP = re.compile(r"\.([A-Za-z0-9_\-$@]+)|\['((?:[^'\\]|\\.)*)'\]|\[(\d+)\]")
_PLACEHOLDER = re.compile(r"<([A-Za-z0-9_.\-]+)>")
_VARIABLE = re.compile(r"[A-Za-z0-9_\-]+")
RESERVED = (
    "aws.events.rule-arn",
    "aws.events.rule-name",
    "aws.events.event",
    "aws.events.event.json",
    "aws.events.event.ingestion-time",
)
_MISSING = object()


def _identity(event: dict[str, Any], rule: str, ingested: float) -> Any:
    return event


def compile_transform(where: str, config: Mapping[str, Any]) -> Transform:
    """The payload function a target's declaration asks for (the event when none)."""
    given = [
        key
        for key in ("input", "input_path", "input_transformer", "input_jmespath")
        if config.get(key) is not None
    ]
    if len(given) > 1:
        raise ConfigError(where, f"give at most one of {', '.join(given)}")
    if not given:
        return _identity
    key = given[0]
    value = config[key]
    if key == "input":
        return _constant(f"{where}.input", value)
    if key == "input_path":
        path = compile_path(f"{where}.input_path", value)
        return lambda event, rule, ingested: _missing_to_none(path(event))
    if key == "input_jmespath":
        return _jmespath(f"{where}.input_jmespath", value)
    return compile_input_transformer(f"{where}.input_transformer", value)


def _constant(where: str, value: Any) -> Transform:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ConfigError(where, f"is not valid JSON text: {exc}") from None
    frozen = orjson.dumps(value)
    # Each delivery gets its own copy, so a target that mutates it harms no other.
    return lambda event, rule, ingested: orjson.loads(frozen)


def _jmespath(where: str, expression: Any) -> Transform:
    if not isinstance(expression, str):
        raise ConfigError(where, "must be a JMESPath expression")
    try:
        compiled = jmespath.compile(expression)
    except jmespath.exceptions.ParseError as exc:
        raise ConfigError(where, f"is not a valid JMESPath expression: {exc}") from None
    return lambda event, rule, ingested: compiled.search(event)


def compile_path(where: str, path: Any) -> Callable[[Any], Any]:
    """A function reading ``path`` from an event; it returns ``_MISSING`` where nothing is."""
    if not isinstance(path, str) or not path.startswith("$"):
        raise ConfigError(where, f"{path!r} is not a JSONPath starting with '$'")
    steps: list[str | int] = []
    position = 1
    while position < len(path):
        step = _STEP.match(path, position)
        if step is None:
            raise ConfigError(
                where,
                f"{path!r} is not supported at character {position + 1}: use .name, "
                "['name'] or [index] (EventBridge's JSONPath subset has no wildcards or filters)",
            )
        name, quoted, index = step.groups()
        if name is not None:
            steps.append(name)
        elif quoted is not None:
            steps.append(re.sub(r"\\(.)", r"\1", quoted))
        else:
            steps.append(int(index))
        position = step.end()

    def read(event: Any) -> Any:
        value = event
        for step in steps:
            if isinstance(step, int):
                if not isinstance(value, list) or step >= len(value):
                    return _MISSING
                value = value[step]
            else:
                if not isinstance(value, dict) or step not in value:
                    return _MISSING
                value = value[step]
        return value

    return read


def _missing_to_none(value: Any) -> Any:
    return None if value is _MISSING else value


def compile_input_transformer(where: str, config: Any) -> Transform:
    if not isinstance(config, Mapping):
        raise ConfigError(where, "must be a mapping with input_paths_map and input_template")
    unknown = set(config) - {"input_paths_map", "input_template"}
    if unknown:
        raise ConfigError(f"{where}.{sorted(unknown)[0]}", "unknown setting")
    paths = config.get("input_paths_map") or {}
    template = config.get("input_template")
    if not isinstance(paths, Mapping):
        raise ConfigError(f"{where}.input_paths_map", "must map variable names to JSONPaths")
    if len(paths) > MAX_INPUT_PATHS:
        raise ConfigError(f"{where}.input_paths_map", f"has more than {MAX_INPUT_PATHS} entries")
    if not isinstance(template, str) or not template:
        raise ConfigError(f"{where}.input_template", "is required: a text with <variables>")
    readers: dict[str, Callable[[Any], Any]] = {}
    for name, path in paths.items():
        if not isinstance(name, str) or not _VARIABLE.fullmatch(name):
            raise ConfigError(
                f"{where}.input_paths_map.{name}",
                "a variable name is letters, digits, '-' and '_'",
            )
        if name.startswith("aws.") or name in RESERVED:
            raise ConfigError(f"{where}.input_paths_map.{name}", "'aws.' names are reserved")
        readers[name] = compile_path(f"{where}.input_paths_map.{name}", path)
    pieces = _split(template)
    for piece in pieces:
        if isinstance(piece, tuple) and piece[0] not in readers and piece[0] not in RESERVED:
            raise ConfigError(
                f"{where}.input_template",
                f"<{piece[0]}> is neither in input_paths_map nor a reserved variable",
            )

    def transform(event: dict[str, Any], rule: str, ingested: float) -> Any:
        values = {name: read(event) for name, read in readers.items()}
        text = render(pieces, values, event, rule, ingested)
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return text  # a plain-text template (for a queue or a log line)

    return transform


Piece = str | tuple[str, bool]


def _split(template: str) -> list[Piece]:
    """Literal text and placeholders, each marked with whether it sits inside a JSON string."""
    pieces: list[Piece] = []
    in_string = False
    escaped = False
    literal: list[str] = []
    position = 0
    while position < len(template):
        char = template[position]
        if char == "<":
            found = _PLACEHOLDER.match(template, position)
            if found is not None:
                if literal:
                    pieces.append("".join(literal))
                    literal = []
                pieces.append((found.group(1), in_string))
                position = found.end()
                continue
        literal.append(char)
        if escaped:
            escaped = False
        elif char == "\\" and in_string:
            escaped = True
        elif char == '"':
            in_string = not in_string
        position += 1
    if literal:
        pieces.append("".join(literal))
    return pieces


def render(
    pieces: list[Piece], values: dict[str, Any], event: dict[str, Any], rule: str, ingested: float
) -> str:
    """Substitute placeholders.

    Inside a JSON string (``"<name>"``) a string value goes in without its
    quotes, escaped for the string; anything else goes in as its JSON text,
    escaped. Outside a string the value goes in as JSON (strings quoted). A
    path that is not in the event gives ``null`` outside strings and nothing
    inside them.
    """
    out: list[str] = []
    for piece in pieces:
        if isinstance(piece, str):
            out.append(piece)
            continue
        name, in_string = piece
        value = values[name] if name in values else _reserved(name, event, rule, ingested)
        if in_string:
            if value is _MISSING:
                continue
            text = value if isinstance(value, str) else orjson.dumps(value).decode()
            out.append(orjson.dumps(text).decode()[1:-1])
        elif value is _MISSING:
            out.append("null")
        elif isinstance(value, _Raw):
            out.append(value.text)
        else:
            out.append(orjson.dumps(value).decode())
    return "".join(out)


class _Raw(str):
    """Text inserted as it is (already JSON)."""

    @property
    def text(self) -> str:
        return str(self)


def _reserved(name: str, event: dict[str, Any], rule: str, ingested: float) -> Any:
    if name == "aws.events.rule-name":
        return rule
    if name == "aws.events.rule-arn":
        return f"arn:aws:events:{DEFAULT_REGION}:{DEFAULT_ACCOUNT}:rule/{rule}"
    if name == "aws.events.event.ingestion-time":
        return datetime.fromtimestamp(ingested, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    if name == "aws.events.event":
        return _Raw(orjson.dumps(event).decode())
    # aws.events.event.json: the event as JSON text, to be used inside a string.
    return orjson.dumps(event).decode()
