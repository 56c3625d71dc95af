"""A pipe's declaration: its settings as a config writes them, checked once.

A pipe is declared under ``pipes:`` (each becomes a resource of type
``pipe``) or made by CreatePipe; both arrive here as the same mapping, the
API's CamelCase names in snake_case (``source_parameters.batch_size`` is
``SourceParameters.SqsQueueParameters.BatchSize``, or the Kinesis one, by
the source's kind). Ranges are AWS's (the Pipes API reference); a value out
of range is a ``ConfigError`` at its path, which a config turns into
``file:line:column`` and the API into a ``ValidationException``.

Resources are named by name or by ARN (the name is the ARN's last segment);
whether a name is a queue or a stream is known once the runtime runs, so the
kind of source decides at start which source parameters apply.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines.errors import ConfigError, PatternError, Problems, Where
from pipelines.patterns import Pattern, compile_pattern
from pipelines.settings import Number, Settings, Shape
from plugins.pipes.template import InputTemplate

#: FilterCriteria.Filters: at most 5, each pattern at most 4096 characters.
MAX_FILTERS = 5
MAX_PATTERN_LENGTH = 4096
STATES = ("RUNNING", "STOPPED")
STARTING_POSITIONS = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")
LOG_LEVELS = ("OFF", "ERROR", "INFO", "TRACE")
#: A bus as a target: ``bus:NAME`` or the bus's ARN.
BUS_PREFIX = "bus:"

SOURCE_TABLE = Settings(
    {
        "batch_size": Number(None, 1, 10_000, integer=True, description="default 10 (queue), 100"),
        "maximum_batching_window_in_seconds": Number(0, 0, 300, integer=True),
        "starting_position": Shape({"enum": list(STARTING_POSITIONS)}, "streams: required"),
        "starting_position_timestamp": Shape(
            {"type": "number"}, "AT_TIMESTAMP: seconds since the epoch"
        ),
        "parallelization_factor": Number(1, 1, 10, integer=True),
        "maximum_record_age_in_seconds": Number(-1, -1, 604_800, integer=True),
        "maximum_retry_attempts": Number(-1, -1, 10_000, integer=True),
        "on_partial_batch_item_failure": Shape({"enum": ["AUTOMATIC_BISECT"]}),
        "topic": Shape({"type": "string"}, "MQTT sources: the topic filter (default #)"),
        "qos": Shape({"enum": [0, 1, 2], "default": 1}, "MQTT sources: the subscription's QoS"),
        "dead_letter_config": Shape(
            {"type": "object", "properties": {"arn": {"type": "string"}}},
            "streams: where records given up go (a queue or topic resource)",
        ),
    }
)
TEMPLATE_TABLE = Settings(
    {"input_template": Shape({"type": "string", "maxLength": 8192}, "AWS's pipes template")}
)
TARGET_TABLE = Settings(
    {
        "input_template": Shape({"type": "string", "maxLength": 8192}, "AWS's pipes template"),
        "message_group_id": Shape(
            {"type": "string"}, "FIFO queue targets: the message group (may be <$.path>)"
        ),
        "source": Shape({"type": "string"}, "bus targets: the events' source"),
        "detail_type": Shape({"type": "string"}, "bus targets: the events' detail-type"),
    }
)
LOG_TABLE = Settings(
    {
        "level": Shape({"enum": list(LOG_LEVELS), "default": "OFF"}),
        "log_group": Shape({"type": "string"}, "a log_group resource (name or ARN)"),
        "include_execution_data": Shape({"type": "array", "items": {"enum": ["ALL"]}}),
    }
)
#: ``invoke_as``: how a function target gets its batch: Pipes' JSON array, or
#: as Lambda's event source mapping hands it, ``{"Records": [...]}``.
INVOKE_AS = ("pipe", "event_source_mapping")
SETTINGS_TABLE = Settings(
    {
        "source": Shape({"type": "string"}, "a queue or stream resource (name or ARN)"),
        "source_parameters": Shape(SOURCE_TABLE.schema()),
        "filters": Shape(
            {"type": "array", "maxItems": MAX_FILTERS, "items": {"type": ["object", "string"]}},
            "event patterns over the source record; a record passes when one matches",
        ),
        "enrichment": Shape(
            {"type": "string"}, "a function, EXPRESS state machine or API destination"
        ),
        "enrichment_parameters": Shape(TEMPLATE_TABLE.schema()),
        "target": Shape({"type": "string"}, "any resource (name or ARN), or bus:NAME"),
        "target_parameters": Shape(TARGET_TABLE.schema()),
        "desired_state": Shape({"enum": list(STATES), "default": "RUNNING"}),
        "description": Shape({"type": "string", "maxLength": 512}),
        "log_configuration": Shape(LOG_TABLE.schema()),
        "tags": Shape({"type": "object", "additionalProperties": {"type": "string"}}),
        "role_arn": Shape({"type": "string"}, "kept and shown; nothing is authorised by it"),
        "invoke_as": Shape(
            {"enum": list(INVOKE_AS), "default": "pipe"},
            "ours, not AWS's: event_source_mapping hands a function target Lambda's"
            ' {"Records": [...]} (an imported SQS event source mapping)',
        ),
    },
    required=("source", "target"),
)


def resource_name(reference: str) -> str:
    """The resource a name or an ARN names: an ARN's last segment
    (``arn:aws:sqs:us-east-1:000000000000:orders`` -> ``orders``,
    ``...:stream/clicks`` -> ``clicks``, ``...:function:enrich`` -> ``enrich``)."""
    if not reference.startswith("arn:"):
        return reference
    resource = reference.split(":", 5)[-1].removesuffix(":*")  # a log group's ARN may end so
    return resource.replace(":", "/").rsplit("/", 1)[-1]


def bus_name(reference: str) -> str | None:
    """The bus a target names (``bus:NAME`` or an event bus ARN), or None."""
    if reference.startswith(BUS_PREFIX):
        return reference[len(BUS_PREFIX) :]
    parts = reference.split(":", 5)
    if len(parts) == 6 and parts[2] == "events" and parts[5].startswith("event-bus/"):
        return parts[5].split("/", 1)[1]
    return None


@dataclass(frozen=True)
class SourceParameters:
    batch_size: int | None = None  # None: the source kind's default
    maximum_batching_window: int = 0
    starting_position: str | None = None
    starting_position_timestamp: float | None = None
    parallelization_factor: int = 1
    maximum_record_age: int = -1
    maximum_retry_attempts: int = -1
    bisect: bool = False
    dead_letter: str | None = None  # a resource name or ARN
    topic: str | None = None  # MQTT sources
    qos: int = 1


@dataclass(frozen=True)
class TargetParameters:
    template: InputTemplate | None = None
    message_group_id: InputTemplate | None = None
    source: str | None = None
    detail_type: str | None = None


@dataclass(frozen=True)
class LogSettings:
    level: str = "OFF"
    log_group: str | None = None
    include_execution_data: bool = False


@dataclass(frozen=True)
class PipeSpec:
    """A checked pipe: what ``parse_pipe`` makes of its settings."""

    name: str
    source: str
    target: str
    source_parameters: SourceParameters = SourceParameters()
    #: The filters' patterns as given (JSON text), and compiled.
    filter_texts: tuple[str, ...] = ()
    filters: tuple[Pattern, ...] = ()
    enrichment: str | None = None
    enrichment_template: InputTemplate | None = None
    target_parameters: TargetParameters = TargetParameters()
    desired_state: str = "RUNNING"
    description: str = ""
    log: LogSettings = LogSettings()
    tags: dict[str, str] = field(default_factory=dict)
    role_arn: str = ""
    #: "event_source_mapping": a function target gets ``{"Records": batch}``.
    invoke_as: str = "pipe"
    #: The settings as given, for DescribePipe and the store.
    settings: Mapping[str, Any] = field(default_factory=dict)

    def references(self) -> list[tuple[tuple[str | int, ...], str]]:
        """The resources it names, each with the setting naming it."""
        found: list[tuple[tuple[str | int, ...], str]] = [(("source",), self.source)]
        if bus_name(self.target) is None:
            found.append((("target",), self.target))
        if self.enrichment is not None:
            found.append((("enrichment",), self.enrichment))
        dead = self.source_parameters.dead_letter
        if dead is not None:
            found.append((("source_parameters", "dead_letter_config", "arn"), dead))
        if self.log.log_group is not None:
            found.append((("log_configuration", "log_group"), self.log.log_group))
        return [(path, resource_name(reference)) for path, reference in found]


def _mapping(where: Where, value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(where, "must be a mapping")
    return value


def _reference(where: Where, value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 1600:
        raise ConfigError(where, f"must name {what} (a resource's name or ARN)")
    return value


def _enum(where: Where, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(where, f"must be one of {', '.join(allowed)}, not {value!r}")
    return str(value)


def _template(where: Where, value: Any) -> InputTemplate | None:
    return None if value is None else InputTemplate.parse(where, value)


def parse_source(where: Where, config: Any) -> SourceParameters:
    given = _mapping(where, config)
    problems = Problems()
    with problems:
        SOURCE_TABLE.check_keys(where, given)
    numbers: dict[str, int | None] = {}
    for key in (
        "batch_size",
        "maximum_batching_window_in_seconds",
        "parallelization_factor",
        "maximum_record_age_in_seconds",
        "maximum_retry_attempts",
    ):
        with problems:
            numbers[key] = int(SOURCE_TABLE.number(where, given, key)) if key in given else None
    position = given.get("starting_position")
    with problems:
        if position is not None:
            _enum(where / "starting_position", position, STARTING_POSITIONS)
    stamp = given.get("starting_position_timestamp")
    with problems:
        if stamp is not None and (isinstance(stamp, bool) or not isinstance(stamp, int | float)):
            raise ConfigError(
                where / "starting_position_timestamp", "must be seconds since the epoch"
            )
        if position == "AT_TIMESTAMP" and stamp is None:
            raise ConfigError(
                where / "starting_position_timestamp", "is required with AT_TIMESTAMP"
            )
    bisect = given.get("on_partial_batch_item_failure")
    with problems:
        if bisect is not None:
            _enum(where / "on_partial_batch_item_failure", bisect, ("AUTOMATIC_BISECT",))
    dead_letter = None
    with problems:
        dead = _mapping(where / "dead_letter_config", given.get("dead_letter_config"))
        for key in dead:
            if key != "arn":
                raise ConfigError(where / "dead_letter_config" / key, "unknown setting (arn)")
        if "arn" in dead:
            dead_letter = _reference(
                where / "dead_letter_config" / "arn", dead["arn"], "a resource"
            )
    topic = given.get("topic")
    with problems:
        if topic is not None and (not isinstance(topic, str) or not topic):
            raise ConfigError(where / "topic", "must be an MQTT topic filter")
    qos = given.get("qos", 1)
    with problems:
        if qos not in (0, 1, 2) or isinstance(qos, bool):
            raise ConfigError(where / "qos", f"must be 0, 1 or 2, not {qos!r}")
    problems.raise_any()
    record_age = numbers["maximum_record_age_in_seconds"]
    if record_age is not None and 0 <= record_age < 60:
        raise ConfigError(
            where / "maximum_record_age_in_seconds", "must be -1 (forever) or 60 to 604800"
        )
    return SourceParameters(
        batch_size=numbers["batch_size"],
        maximum_batching_window=numbers["maximum_batching_window_in_seconds"] or 0,
        starting_position=position,
        starting_position_timestamp=None if stamp is None else float(stamp),
        parallelization_factor=numbers["parallelization_factor"] or 1,
        maximum_record_age=-1 if record_age is None else record_age,
        maximum_retry_attempts=-1
        if numbers["maximum_retry_attempts"] is None
        else numbers["maximum_retry_attempts"],
        bisect=bisect is not None,
        dead_letter=dead_letter,
        topic=topic,
        qos=int(qos),
    )


def parse_filters(where: Where, given: Any) -> tuple[tuple[str, ...], tuple[Pattern, ...]]:
    if given is None:
        return (), ()
    if not isinstance(given, list):
        raise ConfigError(where, "must be a list of event patterns")
    if len(given) > MAX_FILTERS:
        raise ConfigError(where, f"has {len(given)} patterns; a pipe takes at most {MAX_FILTERS}")
    problems = Problems()
    texts: list[str] = []
    patterns: list[Pattern] = []
    for index, pattern in enumerate(given):
        here = where / index
        with problems:
            if isinstance(pattern, str):
                text = pattern
            elif isinstance(pattern, Mapping):
                text = json.dumps(pattern, separators=(",", ":"))
            else:
                raise ConfigError(here, "must be an event pattern (a mapping or its JSON text)")
            try:
                patterns.append(compile_pattern(text, max_length=MAX_PATTERN_LENGTH))
            except PatternError as exc:
                raise ConfigError(here, str(exc)) from None
            texts.append(text)
    problems.raise_any()
    return tuple(texts), tuple(patterns)


def parse_target(where: Where, config: Any) -> TargetParameters:
    given = _mapping(where, config)
    TARGET_TABLE.check_keys(where, given)
    problems = Problems()
    made: dict[str, Any] = {}
    for key in ("input_template", "message_group_id"):
        with problems:
            made[key] = _template(where / key, given.get(key))
    for key in ("source", "detail_type"):
        with problems:
            value = given.get(key)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(where / key, "must be a non-empty string")
            made[key] = value
    problems.raise_any()
    return TargetParameters(
        made["input_template"],
        made["message_group_id"],
        made["source"],
        made["detail_type"],
    )


def parse_log(where: Where, config: Any) -> LogSettings:
    given = _mapping(where, config)
    LOG_TABLE.check_keys(where, given)
    level = _enum(where / "level", given.get("level", "OFF"), LOG_LEVELS)
    group = given.get("log_group")
    if group is not None:
        _reference(where / "log_group", group, "a log_group resource")
    data = given.get("include_execution_data") or []
    if not isinstance(data, list) or any(item != "ALL" for item in data):
        raise ConfigError(where / "include_execution_data", "must be [] or [ALL]")
    return LogSettings(level, group, bool(data))


def parse_pipe(where: Where, name: str, config: Mapping[str, Any]) -> PipeSpec:
    """Check a pipe's settings: every problem, each at its path."""
    problems = Problems()
    with problems:
        SETTINGS_TABLE.check_keys(where, config)
    made: dict[str, Any] = {}
    for key, what in (("source", "its source"), ("target", "its target")):
        with problems:
            made[key] = _reference(where / key, config.get(key), what)
    with problems:
        made["enrichment"] = (
            None
            if config.get("enrichment") is None
            else _reference(where / "enrichment", config["enrichment"], "its enrichment")
        )
    with problems:
        made["source_parameters"] = parse_source(
            where / "source_parameters", config.get("source_parameters")
        )
    with problems:
        made["filters"] = parse_filters(where / "filters", config.get("filters"))
    with problems:
        enrichment = _mapping(where / "enrichment_parameters", config.get("enrichment_parameters"))
        TEMPLATE_TABLE.check_keys(where / "enrichment_parameters", enrichment)
        made["enrichment_template"] = _template(
            where / "enrichment_parameters" / "input_template", enrichment.get("input_template")
        )
    with problems:
        made["target_parameters"] = parse_target(
            where / "target_parameters", config.get("target_parameters")
        )
    with problems:
        made["desired_state"] = _enum(
            where / "desired_state", config.get("desired_state", "RUNNING"), STATES
        )
    with problems:
        made["invoke_as"] = _enum(where / "invoke_as", config.get("invoke_as", "pipe"), INVOKE_AS)
    with problems:
        made["log"] = parse_log(where / "log_configuration", config.get("log_configuration"))
    description = config.get("description", "")
    with problems:
        if not isinstance(description, str) or len(description) > 512:
            raise ConfigError(where / "description", "must be text of at most 512 characters")
    tags = config.get("tags") or {}
    with problems:
        if not isinstance(tags, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
        ):
            raise ConfigError(where / "tags", "must map tag keys to text values")
    role = config.get("role_arn", "")
    with problems:
        if not isinstance(role, str):
            raise ConfigError(where / "role_arn", "must be an IAM role's ARN")
    problems.raise_any()
    texts, patterns = made["filters"]
    return PipeSpec(
        name=name,
        source=made["source"],
        target=made["target"],
        source_parameters=made["source_parameters"],
        filter_texts=texts,
        filters=patterns,
        enrichment=made["enrichment"],
        enrichment_template=made["enrichment_template"],
        target_parameters=made["target_parameters"],
        desired_state=made["desired_state"],
        description=description,
        log=made["log"],
        tags=dict(tags),
        role_arn=role,
        invoke_as=made["invoke_as"],
        settings=dict(config),
    )
