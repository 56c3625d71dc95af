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
``(event, rule_name, rule_arn, ingestion_time) -> payload`` for the delivery
hot path. docs/delivery.md lists the quoting rules and where we chose
behaviour AWS leaves undocumented.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import jmespath
import jmespath.exceptions

from pipelines.errors import ConfigError, DeliveryError, Problems, Where
from pipelines.event import dump_json, format_time_ms, parse_json
from pipelines.targets import JsonString, check_keys

Transform = Callable[[dict[str, Any], str, str, float], Any]

MAX_INPUT_PATHS = 100
MAX_TEMPLATE_LENGTH = 8192
MAX_PATH_LENGTH = 256
_STEP = re.compile(r"\.([A-Za-z0-9_\-$@/]+|\*)|\['((?:[^'\\]|\\.)*)'\]|\[(\d+)\]|\[(\*)\]")
_PLACEHOLDER = re.compile(r"<([A-Za-z0-9_.\-]+)>")
_VARIABLE = re.compile(r"[A-Za-z0-9_\-]{1,256}")
RESERVED = (
    "aws.events.rule-arn",
    "aws.events.rule-name",
    "aws.events.event",
    "aws.events.event.json",
    "aws.events.event.ingestion-time",
)
_WHOLE_EVENT = ("aws.events.event", "aws.events.event.json")
#: <aws.events.event>'s keys as AWS delivers them (recorded: test_events_inputs.snapshot.json).
_EVENT_KEYS = {"detail-type": "detailType"}
_EVENT_ORDER = ("id", "account", "detailType", "time", "source", "region", "resources", "version")
_MISSING = object()


def _identity(event: dict[str, Any], rule: str, rule_arn: str, ingested: float) -> Any:
    return event


def compile_transform(where: Where | str, config: Mapping[str, Any]) -> Transform:
    """The payload function a target's declaration asks for (the event when none)."""
    where = Where.of(where)
    given = [
        key
        for key in ("input", "input_path", "input_transformer", "input_jmespath")
        if config.get(key) is not None
    ]
    if len(given) > 1:
        # AWS: "Only one of Input, InputPath, or InputTransformer must be provided".
        raise ConfigError(
            where,
            "only one of input, input_path, input_transformer or input_jmespath may be given,"
            f" not {' and '.join(given)}",
        )
    if not given:
        return _identity
    key = given[0]
    value = config[key]
    if key == "input":
        return _constant(where / "input", value)
    if key == "input_path":
        path = compile_path(where / "input_path", value)
        return lambda event, rule, rule_arn, ingested: _json_value(path(event))
    if key == "input_jmespath":
        return _jmespath(where / "input_jmespath", value)
    return compile_input_transformer(where / "input_transformer", value)


def _constant(where: Where, value: Any) -> Transform:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ConfigError(where, f"is not valid JSON text: {exc}") from None
    try:
        frozen = dump_json(value)
    except TypeError as exc:
        raise ConfigError(where, f"is not JSON: {exc}") from None
    # Read back as deliveries will: a huge integer comes back a float, NaN null.
    if parse_json(frozen) != value:
        raise ConfigError(where, "holds an integer beyond 64 bits, NaN or Infinity")
    if isinstance(value, str):  # immutable: one copy serves every delivery
        text = JsonString(value, frozen.decode())
        return lambda event, rule, rule_arn, ingested: text
    # Each delivery gets its own copy, so a target that mutates it harms no other.
    return lambda event, rule, rule_arn, ingested: parse_json(frozen)


def _jmespath(where: Where, expression: Any) -> Transform:
    if not isinstance(expression, str):
        raise ConfigError(where, "must be a JMESPath expression")
    try:
        compiled = jmespath.compile(expression)
    except jmespath.exceptions.ParseError as exc:
        raise ConfigError(where, f"is not a valid JMESPath expression: {exc}") from None

    def search(event: dict[str, Any], rule: str, rule_arn: str, ingested: float) -> Any:
        try:
            return compiled.search(event)
        except jmespath.exceptions.JMESPathError as exc:
            # The same event fails the same way every time: no point retrying.
            raise DeliveryError(
                "TransformationError", f"input_jmespath failed: {exc}", retryable=False
            ) from None

    return search


def compile_path(where: Where, path: Any) -> Callable[[Any], Any]:
    """A function reading ``path`` from an event; it returns ``_MISSING`` where nothing is.

    A wildcard (``[*]`` or ``.*``) fans out over an array's items or an
    object's values and yields the list of what the rest of the path finds.
    """
    if not isinstance(path, str) or not path.startswith("$"):
        raise ConfigError(where, f"{path!r} is not a JSONPath starting with '$'")
    if len(path) > MAX_PATH_LENGTH:
        raise ConfigError(where, f"is longer than {MAX_PATH_LENGTH} characters")
    steps: list[str | int | None] = []  # None is a wildcard
    position = 1
    while position < len(path):
        step = _STEP.match(path, position)
        if step is None:
            raise ConfigError(
                where,
                f"{path!r} is not supported at character {position + 1}: use .name, "
                "['name'], [index] or a wildcard [*] (no filters or slices)",
            )
        name, quoted, index, _ = step.groups()
        if name is not None:
            steps.append(None if name == "*" else name)
        elif quoted is not None:
            steps.append(re.sub(r"\\(.)", r"\1", quoted))
        elif index is not None:
            steps.append(int(index))
        else:
            steps.append(None)
        position = step.end()
    return lambda event: _read(event, steps, 0)


def compile_lookup(where: Where, path: Any) -> Callable[[Any], Any]:
    """``compile_path`` whose function gives None where nothing is (an
    API destination's dynamic header: absent, it is not sent)."""
    read = compile_path(where, path)

    def lookup(event: Any) -> Any:
        found = read(event)
        return None if found is _MISSING else found

    return lookup


def _read(value: Any, steps: list[str | int | None], start: int) -> Any:
    for position in range(start, len(steps)):
        step = steps[position]
        if step is None:
            items = value if isinstance(value, list) else None
            if isinstance(value, dict):
                items = list(value.values())
            if items is None:
                return _MISSING
            found = (_read(item, steps, position + 1) for item in items)
            return [item for item in found if item is not _MISSING]
        if isinstance(step, int):
            if not isinstance(value, list) or step >= len(value):
                return _MISSING
        elif not isinstance(value, dict) or step not in value:
            return _MISSING
        value = value[step]
    return value


def _json_value(value: Any) -> Any:
    """What an input path selected, as a payload: nothing is ``None``; a string is
    a ``JsonString`` (AWS's SQS body for ``$.detail.name`` is ``"baz"``, quoted)."""
    if value is _MISSING:
        return None
    return JsonString(value) if isinstance(value, str) else value


def compile_input_transformer(where: Where, config: Any) -> Transform:
    if not isinstance(config, Mapping):
        raise ConfigError(where, "must be a mapping with input_paths_map and input_template")
    check_keys(where, config, {"input_paths_map", "input_template"})
    paths = config.get("input_paths_map") or {}
    template = config.get("input_template")
    if not isinstance(paths, Mapping):
        raise ConfigError(where / "input_paths_map", "must map variable names to JSONPaths")
    if len(paths) > MAX_INPUT_PATHS:
        raise ConfigError(where / "input_paths_map", f"has more than {MAX_INPUT_PATHS} entries")
    if not isinstance(template, str) or not 1 <= len(template) <= MAX_TEMPLATE_LENGTH:
        raise ConfigError(
            where / "input_template", f"is required: 1 to {MAX_TEMPLATE_LENGTH} characters"
        )
    readers: dict[str, Callable[[Any], Any]] = {}
    for name, path in paths.items():
        here = where / "input_paths_map" / name
        if not isinstance(name, str) or not _VARIABLE.fullmatch(name):
            raise ConfigError(here, "a variable name is 1 to 256 letters, digits, '-' and '_'")
        readers[name] = compile_path(here, path)
    pieces = split_template(template)
    for piece in pieces:
        if isinstance(piece, str):
            continue
        name, in_string = piece
        if name not in readers and name not in RESERVED:
            raise ConfigError(
                where / "input_template",
                f"contains invalid placeholder {name}: it is neither in input_paths_map "
                "nor a reserved aws.events variable",
            )
        if in_string and name in _WHOLE_EVENT:
            raise ConfigError(
                where / "input_template",
                f"<{name}> can only be the value of a JSON field, not part of a string",
            )
    structured = template.lstrip()[:1] in ("{", "[")
    reserved = {piece[0] for piece in pieces if isinstance(piece, tuple) and piece[0] in RESERVED}

    def transform(event: dict[str, Any], rule: str, rule_arn: str, ingested: float) -> Any:
        values = {name: read(event) for name, read in readers.items()}
        for name in reserved:
            values[name] = _reserved(name, event, rule, rule_arn, ingested)
        text = render(pieces, values, structured)
        try:
            value = parse_json(text)
        except (ValueError, RecursionError):
            if structured:
                raise DeliveryError(
                    "INVALID_JSON",
                    f"the input template produced invalid JSON: {text[:200]}",
                    retryable=False,
                ) from None
            return text  # text that is not JSON (lines, plain text): sent as it is
        # A string template ("... <name> ..."): AWS sends the rendered text, quotes included.
        return JsonString(value, text) if isinstance(value, str) else value

    return transform


Piece = str | tuple[str, bool]


def split_template(template: str, placeholder: re.Pattern[str] = _PLACEHOLDER) -> list[Piece]:
    """Literal text and placeholders (``placeholder``'s first group), each
    marked with whether it sits inside a JSON string: an input transformer's
    template, or (with its own placeholders) a pipe's input template."""
    pieces: list[Piece] = []
    in_string = False
    escaped = False
    literal: list[str] = []
    position = 0
    while position < len(template):
        char = template[position]
        if char == "<":
            found = placeholder.match(template, position)
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


def render(pieces: list[Piece], values: dict[str, Any], structured: bool = False) -> str:
    """Substitute placeholders with EventBridge's quoting rules.

    Outside a JSON string a value goes in as JSON: strings get quotes,
    objects, arrays, numbers and booleans do not. Inside a JSON string
    (``"... <name> ..."``) a string goes in without quotes and an object or
    array loses its internal quotes (``{"a":"b"}`` -> ``{a:b}``), as AWS
    documents and delivers for a string template. In a ``structured``
    template (a JSON object or array) an object or array inside a string is
    an error (``INVALID_JSON``): AWS delivers nothing for
    ``{"payload": "<payload>"}``. A path missing from the event gives an
    empty string (``""`` outside a string), as AWS does. Where AWS leaves
    values unescaped, we escape them, so a value holding a quote cannot
    break the JSON.
    """
    out: list[str] = []
    for piece in pieces:
        if isinstance(piece, str):
            out.append(piece)
            continue
        name, in_string = piece
        value = values[name]
        if value is _MISSING:
            value = ""
        if not in_string:
            out.append(dump_json(value).decode())
        elif isinstance(value, str):
            out.append(dump_json(value).decode()[1:-1])
        elif isinstance(value, dict | list):
            if structured:
                raise DeliveryError(
                    "INVALID_JSON",
                    f"the input template puts the object or array <{name}> inside a JSON string"
                    " of a JSON template; AWS delivers nothing for that (give it as a field's"
                    " value, or use a string template)",
                    retryable=False,
                )
            text = dump_json(value).decode().replace('"', "")
            out.append(dump_json(text).decode()[1:-1])
        else:
            out.append(dump_json(value).decode())
    return "".join(out)


def _reserved(name: str, event: dict[str, Any], rule: str, rule_arn: str, ingested: float) -> Any:
    if name == "aws.events.rule-name":
        return rule
    if name == "aws.events.rule-arn":
        return rule_arn
    if name == "aws.events.event.ingestion-time":
        return format_time_ms(ingested)
    if name == "aws.events.event":
        # The original event without its detail, as AWS delivers it: detail-type
        # named detailType, in AWS's order; a key of no envelope follows as it is.
        known = {_EVENT_KEYS.get(key, key): key for key in event if key != "detail"}
        ordered = {key: event[known[key]] for key in _EVENT_ORDER if key in known}
        return ordered | {key: event[old] for key, old in known.items() if key not in ordered}
    return event  # aws.events.event.json: the whole event


#: A rule target's parameters for its target's type, as EventBridge's
#: PutTargets has them (``HttpParameters`` for API destinations): the
#: resource checks them (``Target.accept``) and reads them at each delivery
#: from ``DeliveryContext.extra``.
TARGET_PARAMETERS = ("http_parameters",)
HTTP_PARAMETER_KEYS = ("path_parameter_values", "header_parameters", "query_string_parameters")
#: An HTTP header's name (RFC 9110's token), as HttpParameters allows it.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-zA-Z]{1,512}")
#: A static value: printable ASCII (a dynamic value is a JSONPath, ``$.detail.id``).
_HEADER_VALUE = re.compile(r"[\x20-\x7E]{0,512}")


def check_target_parameters(where: Where, key: str, value: Any) -> Mapping[str, Any]:
    """A rule target's ``key`` (one of ``TARGET_PARAMETERS``) checked for its
    shape; which resources take it is theirs to say (``Target.accept``)."""
    if key != "http_parameters":
        raise ConfigError(where, f"{key!r} is not a target parameter")
    if not isinstance(value, Mapping):
        raise ConfigError(where, "must be a mapping of " + ", ".join(HTTP_PARAMETER_KEYS))
    problems = Problems()
    with problems:
        check_keys(where, value, HTTP_PARAMETER_KEYS)
    path_values = value.get("path_parameter_values", [])
    if not isinstance(path_values, list) or not all(isinstance(v, str) for v in path_values):
        problems.add(ConfigError(where / "path_parameter_values", "must be a list of strings"))
    else:
        for index, item in enumerate(path_values):
            with problems:
                _check_value(where / "path_parameter_values" / index, item)
    for kind in ("header_parameters", "query_string_parameters"):
        given = value.get(kind, {})
        if not isinstance(given, Mapping):
            problems.add(ConfigError(where / kind, "must be a mapping of names to values"))
            continue
        for name, item in given.items():
            at = where / kind / str(name)
            if kind == "header_parameters" and not _HEADER_NAME.fullmatch(str(name)):
                problems.add(ConfigError(at, f"{name!r} is not a header name"))
            if not isinstance(item, str):
                problems.add(ConfigError(at, f"must be a string, not {item!r}"))
                continue
            with problems:
                _check_value(at, item)
    problems.raise_any()
    return value


def _check_value(where: Where, value: str) -> None:
    """A static value of printable text, or a JSONPath into the event."""
    if value.startswith("$"):
        compile_path(where, value)
    elif not _HEADER_VALUE.fullmatch(value):
        raise ConfigError(where, "must be at most 512 printable ASCII characters or a JSONPath")
