"""A state machine's definition: parsed into typed states and checked.

``parse_definition`` takes the definition's JSON text (or the decoded dict)
and returns a ``StateMachine``, or raises the first ``DefinitionError``;
``validate`` returns every problem found, each with AWS's diagnostic code and
the JSON pointer of the field (``/States/Choose/Choices/0/Next``), as
ValidateStateMachineDefinition reports them.

Both query languages are read: JSONPath (the default) and JSONata, for the
whole machine (top-level ``QueryLanguage``) or one state. A JSONata state
takes ``Arguments``, ``Output``, ``Items``, ``Condition`` and ``{% ... %}``
expressions in place of the JSONPath fields (InputPath, Parameters,
ResultSelector, ResultPath, OutputPath and the ``...Path`` fields), which are
refused there as fields Step Functions does not support, as it refuses any
unknown field; ``Assign`` (workflow variables) is read in both. A Map's
ItemReader and ResultWriter are checked here (``_item_reader``,
``_result_writer``) and run by ``plugins.states.itemio``; a reader or writer
resource or input type it does not run is refused with ``UnsupportedFeature``
naming the field, rather than run half right.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from plugins.states import intrinsics, jsonata_mode, paths, variables
from plugins.states.errors import BUILT_IN, DefinitionError

Json = Any
SCHEMA = "SCHEMA_VALIDATION_FAILED"

STATE_TYPES = ("Task", "Wait", "Pass", "Succeed", "Fail", "Choice", "Parallel", "Map")

JSONPATH = "JSONPath"
JSONATA = "JSONata"


class UnsupportedFeature(DefinitionError):
    """A valid definition using a part of the language this build does not run yet."""

    def __init__(self, what: str, location: str) -> None:
        super().__init__("UNSUPPORTED_FEATURE", f"{what} is not supported yet", location)


# -- the typed definition ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Retrier:
    error_equals: tuple[str, ...]
    interval_seconds: int = 1
    max_attempts: int = 3
    backoff_rate: float = 2.0
    max_delay_seconds: int | None = None
    jitter_strategy: str = "NONE"


@dataclass(frozen=True, slots=True)
class Catcher:
    error_equals: tuple[str, ...]
    next: str
    #: None discards the error output (the state's input goes on unchanged)
    result_path: str | None = "$"
    #: the catcher's Assign (both languages) and Output (JSONata)
    assign: dict[str, Json] | None = None
    output: Json = None
    has_output: bool = False


@dataclass(frozen=True, slots=True)
class Comparison:
    """``Variable`` compared by ``operator`` with ``value`` (or the value at ``value``, a path)."""

    variable: str
    operator: str
    value: Json
    next: str | None = None
    #: a top-level rule's Assign, bound when the rule is the one taken
    assign: dict[str, Json] | None = None
    output: Json = None
    has_output: bool = False


@dataclass(frozen=True, slots=True)
class Compound:
    """And, Or (``rules`` all or any) or Not (one rule)."""

    operator: str
    rules: tuple[Rule, ...]
    next: str | None = None
    assign: dict[str, Json] | None = None
    output: Json = None
    has_output: bool = False


@dataclass(frozen=True, slots=True)
class Condition:
    """A JSONata choice rule: ``Condition`` (a ``{% %}`` expression or a boolean)."""

    condition: Json
    next: str | None = None
    assign: dict[str, Json] | None = None
    output: Json = None
    has_output: bool = False


Rule = Comparison | Compound | Condition


@dataclass(slots=True, kw_only=True)
class State:
    name: str
    type: str
    location: str
    comment: str | None = None
    next: str | None = None
    end: bool = False
    input_path: str | None = "$"
    output_path: str | None = "$"
    query_language: str = JSONPATH
    #: Assign (None when absent): in JSONPath mode keys may end in ``.$``
    assign: dict[str, Json] | None = None
    #: Output (JSONata mode)
    output: Json = None
    has_output: bool = False

    @property
    def jsonata(self) -> bool:
        return self.query_language == JSONATA


@dataclass(slots=True, kw_only=True)
class PassState(State):
    #: the Result field, or ``NO_RESULT`` when absent (the input passes through)
    result: Json = None
    has_result: bool = False
    parameters: Json = None
    has_parameters: bool = False
    result_path: str | None = "$"


@dataclass(slots=True, kw_only=True)
class HandlingState(State):
    """A state with Parameters, ResultSelector, ResultPath, Retry and Catch."""

    parameters: Json = None
    has_parameters: bool = False
    result_selector: Json = None
    has_result_selector: bool = False
    result_path: str | None = "$"
    retry: tuple[Retrier, ...] = ()
    catch: tuple[Catcher, ...] = ()
    #: Arguments (JSONata mode)
    arguments: Json = None
    has_arguments: bool = False


@dataclass(slots=True, kw_only=True)
class TaskState(HandlingState):
    resource: str = ""
    timeout_seconds: int | None = None
    timeout_seconds_path: str | None = None
    heartbeat_seconds: int | None = None
    heartbeat_seconds_path: str | None = None
    credentials: Json = None
    #: TimeoutSeconds and HeartbeatSeconds given as ``{% %}`` expressions (JSONata mode)
    timeout_seconds_expression: str | None = None
    heartbeat_seconds_expression: str | None = None


@dataclass(slots=True, kw_only=True)
class ChoiceState(State):
    choices: tuple[Rule, ...] = ()
    default: str | None = None


@dataclass(slots=True, kw_only=True)
class WaitState(State):
    seconds: int | None = None
    timestamp: str | None = None
    seconds_path: str | None = None
    timestamp_path: str | None = None
    #: Seconds or Timestamp given as a ``{% %}`` expression (JSONata mode)
    seconds_expression: str | None = None
    timestamp_expression: str | None = None


@dataclass(slots=True, kw_only=True)
class SucceedState(State):
    pass


@dataclass(slots=True, kw_only=True)
class FailState(State):
    error: str | None = None
    error_path: str | None = None
    cause: str | None = None
    cause_path: str | None = None


@dataclass(slots=True, kw_only=True)
class ParallelState(HandlingState):
    branches: tuple[Program, ...] = ()


@dataclass(slots=True, kw_only=True)
class MapState(HandlingState):
    processor: Program | None = None
    mode: str = "INLINE"
    execution_type: str | None = None
    items_path: str = "$"
    #: ItemSelector, or the deprecated Parameters of a Map (the same thing)
    item_selector: Json = None
    has_item_selector: bool = False
    max_concurrency: int = 0
    max_concurrency_path: str | None = None
    tolerated_failure_count: int | None = None
    tolerated_failure_count_path: str | None = None
    tolerated_failure_percentage: float | None = None
    tolerated_failure_percentage_path: str | None = None
    item_batcher: Json = None
    label: str | None = None
    #: ItemReader and ResultWriter as written (checked; run by ``plugins.states.itemio``)
    item_reader: Json = None
    result_writer: Json = None
    #: Items (JSONata mode): an array (whose strings may be expressions) or an expression
    items: Json = None
    has_items: bool = False
    #: the numeric fields given as ``{% %}`` expressions (JSONata mode)
    max_concurrency_expression: str | None = None
    tolerated_failure_count_expression: str | None = None
    tolerated_failure_percentage_expression: str | None = None


@dataclass(slots=True)
class Program:
    """StartAt and States: a whole machine, a Parallel branch or a Map's processor."""

    start_at: str
    states: dict[str, State]
    location: str
    comment: str | None = None


@dataclass(slots=True)
class StateMachine:
    program: Program
    timeout_seconds: int | None = None
    version: str | None = None
    comment: str | None = None
    query_language: str = "JSONPath"
    source: Json = field(default=None, repr=False)


# -- parsing and checking --------------------------------------------------------------


def parse_definition(definition: str | dict[str, Json]) -> StateMachine:
    """The typed machine of ``definition``; raises its first ``DefinitionError``."""
    checker = _Checker()
    machine = checker.machine(definition)
    if checker.problems:
        raise checker.problems[0]
    assert machine is not None
    return machine


def validate(definition: str | dict[str, Json]) -> list[DefinitionError]:
    """Every problem of ``definition`` (empty when it is valid)."""
    checker = _Checker()
    checker.machine(definition)
    return checker.problems


_COMMON = ("Type", "Comment", "QueryLanguage", "Assign", "Output")

#: Fields only a JSONPath state has; a JSONata state refuses them as unknown fields.
JSONPATH_ONLY = frozenset(
    {
        "InputPath",
        "OutputPath",
        "Parameters",
        "ResultSelector",
        "ResultPath",
        "Result",
        "TimeoutSecondsPath",
        "HeartbeatSecondsPath",
        "SecondsPath",
        "TimestampPath",
        "ErrorPath",
        "CausePath",
        "ItemsPath",
        "MaxConcurrencyPath",
        "ToleratedFailureCountPath",
        "ToleratedFailurePercentagePath",
    }
)
#: Fields only a JSONata state has.
JSONATA_ONLY = frozenset({"Arguments", "Output", "Items"})
_FLOW = ("Next", "End")
_IO = ("InputPath", "OutputPath")
_HANDLING = ("Parameters", "ResultSelector", "ResultPath", "Retry", "Catch")

_ALLOWED: dict[str, tuple[str, ...]] = {
    "Pass": (*_COMMON, *_FLOW, *_IO, "Parameters", "Result", "ResultPath"),
    # Assign and Output are in _COMMON: every state but Fail has them
    "Task": (
        *_COMMON,
        *_FLOW,
        *_IO,
        *_HANDLING,
        "Resource",
        "TimeoutSeconds",
        "TimeoutSecondsPath",
        "HeartbeatSeconds",
        "HeartbeatSecondsPath",
        "Credentials",
        "Arguments",
    ),
    "Choice": (*_COMMON, *_IO, "Choices", "Default"),
    "Wait": (*_COMMON, *_FLOW, *_IO, "Seconds", "Timestamp", "SecondsPath", "TimestampPath"),
    "Succeed": (*_COMMON, *_IO),
    "Fail": ("Type", "Comment", "QueryLanguage", "Error", "ErrorPath", "Cause", "CausePath"),
    "Parallel": (*_COMMON, *_FLOW, *_IO, *_HANDLING, "Branches", "Arguments"),
    "Map": (
        *_COMMON,
        *_FLOW,
        *_IO,
        *_HANDLING,
        "ItemProcessor",
        "Iterator",
        "ItemsPath",
        "Items",
        "ItemSelector",
        "ItemReader",
        "ItemBatcher",
        "ResultWriter",
        "MaxConcurrency",
        "MaxConcurrencyPath",
        "ToleratedFailureCount",
        "ToleratedFailureCountPath",
        "ToleratedFailurePercentage",
        "ToleratedFailurePercentagePath",
        "Label",
        "Arguments",
    ),
}

_STRING_OPS = (
    "StringEquals",
    "StringLessThan",
    "StringGreaterThan",
    "StringLessThanEquals",
    "StringGreaterThanEquals",
)
_NUMERIC_OPS = (
    "NumericEquals",
    "NumericLessThan",
    "NumericGreaterThan",
    "NumericLessThanEquals",
    "NumericGreaterThanEquals",
)
_TIMESTAMP_OPS = (
    "TimestampEquals",
    "TimestampLessThan",
    "TimestampGreaterThan",
    "TimestampLessThanEquals",
    "TimestampGreaterThanEquals",
)
_IS_OPS = ("IsNull", "IsPresent", "IsNumeric", "IsString", "IsBoolean", "IsTimestamp")

#: Every comparison operator and the JSON type of its value ("path" for the ...Path forms).
OPERATORS: dict[str, str] = {
    **{op: "string" for op in _STRING_OPS},
    "StringMatches": "string",
    **{op: "number" for op in _NUMERIC_OPS},
    "BooleanEquals": "boolean",
    **{op: "timestamp" for op in _TIMESTAMP_OPS},
    **{op: "boolean" for op in _IS_OPS},
    **{
        op + "Path": "path"
        for op in (*_STRING_OPS, *_NUMERIC_OPS, "BooleanEquals", *_TIMESTAMP_OPS)
    },
}

_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def is_timestamp(text: Json) -> bool:
    """An RFC 3339 timestamp with an upper-case T and a zone, as Choice and Wait take."""
    if not isinstance(text, str) or not _TIMESTAMP.match(text):
        return False
    from plugins.states.choice import parse_timestamp

    return parse_timestamp(text) is not None


def _pointer(location: str, key: str | int) -> str:
    key_text = str(key).replace("~", "~0").replace("/", "~1")
    return f"{location.rstrip('/')}/{key_text}"


def _allowed(kind: str, language: str) -> tuple[str, ...]:
    other = JSONATA_ONLY if language == JSONPATH else JSONPATH_ONLY
    return tuple(name for name in _ALLOWED[kind] if name not in other)


class _Checker:
    def __init__(self) -> None:
        self.problems: list[DefinitionError] = []
        #: the machine's QueryLanguage, each state's default
        self.language = JSONPATH

    def problem(self, message: str, location: str | None, code: str = SCHEMA) -> None:
        self.problems.append(DefinitionError(code, message, location))

    # -- the top --------------------------------------------------------------

    def machine(self, definition: str | dict[str, Json]) -> StateMachine | None:
        source = definition
        if isinstance(definition, str):
            if not definition.strip():
                self.problem("Definition must be a valid JSON object", None)
                return None
            try:
                source = json.loads(definition)
            except ValueError as error:
                self.problem(f"{error}", None, "INVALID_JSON_DESCRIPTION")
                return None
        if not isinstance(source, dict):
            self.problem("Definition must be a valid JSON object", None)
            return None
        language = source.get("QueryLanguage", JSONPATH)
        if language not in (JSONPATH, JSONATA):
            self.problem(
                "The field 'QueryLanguage' should have one of these values: [JSONPath, JSONata]",
                "/QueryLanguage",
            )
        else:
            self.language = language
        self.unknown_fields(
            source,
            ("StartAt", "States", "Comment", "Version", "TimeoutSeconds", "QueryLanguage"),
            "/",
        )
        timeout = source.get("TimeoutSeconds")
        if "TimeoutSeconds" in source:
            self.integer(timeout, "/TimeoutSeconds", low=0)
        version = source.get("Version")
        if version is not None and version != "1.0":
            self.problem("The field 'Version' should have one of these values: [1.0]", "/Version")
        program = self.program(source, "/")
        if program is None:
            return None
        self.reachable(program)
        return StateMachine(
            program=program,
            timeout_seconds=timeout if isinstance(timeout, int) else None,
            version=version,
            comment=source.get("Comment"),
            query_language=self.language,
            source=source,
        )

    def program(self, node: Json, location: str) -> Program | None:
        missing = [name for name in ("States", "StartAt") if name not in node]
        if missing:
            self.problem(f"These fields are required: [{', '.join(missing)}]", location)
            return None
        start_at, states = node["StartAt"], node["States"]
        if not isinstance(start_at, str):
            self.problem(
                "The value for the field 'StartAt' must be a STRING", _pointer(location, "StartAt")
            )
            return None
        if not isinstance(states, dict):
            self.problem(
                "The value for the field 'States' must be an OBJECT", _pointer(location, "States")
            )
            return None
        if not states:
            self.problem("Value cannot be empty", _pointer(location, "States"))
            return None
        parsed: dict[str, State] = {}
        states_at = _pointer(location, "States")
        for name, body in states.items():
            state = self.state(name, body, _pointer(states_at, name))
            if state is not None:
                parsed[name] = state
        if start_at not in states:
            self.problem(
                f"Missing 'Next' target: {start_at}",
                _pointer(location, "StartAt"),
                "MISSING_TRANSITION_TARGET",
            )
        for state in parsed.values():
            self.targets(state, states)
        if not any(s.end or s.type in ("Succeed", "Fail") for s in parsed.values()):
            self.problem("Workflow has no terminal state", location, "MISSING_END_STATE")
        return Program(start_at, parsed, location, node.get("Comment"))

    def targets(self, state: State, states: dict[str, Json]) -> None:
        wanted: list[tuple[str, str]] = []
        if state.next is not None:
            wanted.append((state.next, _pointer(state.location, "Next")))
        if isinstance(state, ChoiceState):
            for index, rule in enumerate(state.choices):
                if rule.next is not None:
                    at = _pointer(_pointer(state.location, "Choices"), index)
                    wanted.append((rule.next, _pointer(at, "Next")))
            if state.default is not None:
                wanted.append((state.default, _pointer(state.location, "Default")))
        if isinstance(state, HandlingState):
            for index, catcher in enumerate(state.catch):
                at = _pointer(_pointer(state.location, "Catch"), index)
                wanted.append((catcher.next, _pointer(at, "Next")))
        for target, at in wanted:
            if target not in states:
                self.problem(f"Missing 'Next' target: {target}", at, "MISSING_TRANSITION_TARGET")

    def reachable(self, program: Program) -> None:
        """Every state must be reachable from StartAt (in each branch and processor too)."""
        seen: set[str] = set()
        todo = [program.start_at]
        while todo:
            name = todo.pop()
            if name in seen or name not in program.states:
                continue
            seen.add(name)
            todo.extend(_successors(program.states[name]))
        for name, state in program.states.items():
            if name not in seen:
                self.problem(
                    f'State "{name}" is not reachable', state.location, "MISSING_TRANSITION_TARGET"
                )
            if isinstance(state, ParallelState):
                for branch in state.branches:
                    self.reachable(branch)
            if isinstance(state, MapState) and state.processor is not None:
                self.reachable(state.processor)

    # -- one state ----------------------------------------------------------------

    def state(self, name: str, body: Json, location: str) -> State | None:
        if len(name) > 80:
            self.problem(
                "State names must be at most 80 characters", location, "INVALID_STATE_NAME"
            )
        if not isinstance(body, dict):
            self.problem("The value for the state must be an OBJECT", location)
            return None
        kind = body.get("Type")
        if "Type" not in body:
            self.problem("These fields are required: [Type]", location)
            return None
        if kind not in STATE_TYPES:
            self.problem(
                f"The field 'Type' should have one of these values: [{', '.join(STATE_TYPES)}]",
                _pointer(location, "Type"),
            )
            return None
        language = body.get("QueryLanguage", self.language)
        if language not in (JSONPATH, JSONATA):
            self.problem(
                "The field 'QueryLanguage' should have one of these values: [JSONPath, JSONata]",
                _pointer(location, "QueryLanguage"),
            )
            language = self.language
        elif language == JSONPATH and self.language == JSONATA:
            self.problem(
                "'QueryLanguage' can not be 'JSONPath' if set to 'JSONata' for whole state machine",
                location,
            )
        self.unknown_fields(body, _allowed(kind, language), location)
        common: dict[str, Json] = {
            "name": name,
            "type": kind,
            "location": location,
            "comment": body.get("Comment"),
            "query_language": language,
        }
        if "Assign" in body and "Assign" in _ALLOWED[kind]:
            common["assign"] = self.assign(body["Assign"], _pointer(location, "Assign"), language)
        if "Output" in body and language == JSONATA and "Output" in _ALLOWED[kind]:
            common["output"] = body["Output"]
            common["has_output"] = True
            self.expressions(body["Output"], _pointer(location, "Output"))
        if kind not in ("Fail",) and language == JSONPATH:
            common["input_path"] = self.optional_path(body, "InputPath", location)
            common["output_path"] = self.optional_path(body, "OutputPath", location)
        if kind not in ("Choice", "Succeed", "Fail"):
            common.update(self.flow(body, location))
        else:
            for forbidden in _FLOW:
                if forbidden in body:
                    self.problem(
                        f'The field "{forbidden}" is not supported by Step Functions',
                        _pointer(location, forbidden),
                    )
        builder = getattr(self, f"_{kind.lower()}")
        state: State = builder(body, location, common)
        return state

    def flow(self, body: dict[str, Json], location: str) -> dict[str, Json]:
        has_next, end = "Next" in body, body.get("End", False)
        if "End" in body and not isinstance(end, bool):
            self.problem(
                "The value for the field 'End' must be a BOOLEAN", _pointer(location, "End")
            )
        if has_next and end is True:
            self.problem("Only one of 'Next' or 'End' may be set", location)
        elif not has_next and end is not True:
            self.problem("These fields are required: [Next, End]", location)
        nxt = body.get("Next")
        if has_next and not isinstance(nxt, str):
            self.problem(
                "The value for the field 'Next' must be a STRING", _pointer(location, "Next")
            )
            nxt = None
        return {"next": nxt, "end": end is True}

    def _pass(self, body: dict[str, Json], location: str, common: dict[str, Json]) -> PassState:
        if common["query_language"] == JSONATA:
            return PassState(**common)
        return PassState(
            **common,
            result=body.get("Result"),
            has_result="Result" in body,
            parameters=self.template(body, "Parameters", location),
            has_parameters="Parameters" in body,
            result_path=self.optional_path(body, "ResultPath", location, result_path=True),
        )

    def handling(self, body: dict[str, Json], location: str, language: str) -> dict[str, Json]:
        if language == JSONATA:
            if "Arguments" in body:
                self.expressions(body["Arguments"], _pointer(location, "Arguments"))
            return {
                "arguments": body.get("Arguments"),
                "has_arguments": "Arguments" in body,
                "retry": self.retriers(body.get("Retry", []), _pointer(location, "Retry")),
                "catch": self.catchers(
                    body.get("Catch", []), _pointer(location, "Catch"), language
                ),
            }
        return {
            "parameters": self.template(body, "Parameters", location),
            "has_parameters": "Parameters" in body,
            "result_selector": self.template(body, "ResultSelector", location),
            "has_result_selector": "ResultSelector" in body,
            "result_path": self.optional_path(body, "ResultPath", location, result_path=True),
            "retry": self.retriers(body.get("Retry", []), _pointer(location, "Retry")),
            "catch": self.catchers(body.get("Catch", []), _pointer(location, "Catch"), language),
        }

    def _task(self, body: dict[str, Json], location: str, common: dict[str, Json]) -> TaskState:
        resource = body.get("Resource")
        if "Resource" not in body:
            self.problem("These fields are required: [Resource]", location)
        elif not isinstance(resource, str) or not resource:
            self.problem(
                "The value for the field 'Resource' must be a STRING",
                _pointer(location, "Resource"),
            )
        for pair in (
            ("TimeoutSeconds", "TimeoutSecondsPath"),
            ("HeartbeatSeconds", "HeartbeatSecondsPath"),
        ):
            if all(name in body for name in pair):
                self.problem(f"Only one of '{pair[0]}' or '{pair[1]}' may be set", location)
        language = common["query_language"]
        expressions: dict[str, str | None] = {}
        for name in ("TimeoutSeconds", "HeartbeatSeconds"):
            value = body.get(name)
            if language == JSONATA and jsonata_mode.is_expression(value):
                self.expressions(value, _pointer(location, name))
                expressions[name] = value
            elif name in body:
                self.integer(value, _pointer(location, name), low=1)
        if language == JSONATA and isinstance(body.get("Credentials"), dict):
            self.expressions(body["Credentials"], _pointer(location, "Credentials"))
        timeout, heartbeat = body.get("TimeoutSeconds"), body.get("HeartbeatSeconds")
        if isinstance(timeout, int) and isinstance(heartbeat, int) and heartbeat >= timeout:
            self.problem(
                "The value of 'HeartbeatSeconds' must be smaller than 'TimeoutSeconds'",
                _pointer(location, "HeartbeatSeconds"),
            )
        credentials = body.get("Credentials")
        if "Credentials" in body and (
            not isinstance(credentials, dict)
            or not any(k in credentials for k in ("RoleArn", "RoleArn.$"))
        ):
            self.problem(
                "The field 'RoleArn' is required but was missing", _pointer(location, "Credentials")
            )
        return TaskState(
            **common,
            **self.handling(body, location, language),
            resource=resource if isinstance(resource, str) else "",
            timeout_seconds_expression=expressions.get("TimeoutSeconds"),
            heartbeat_seconds_expression=expressions.get("HeartbeatSeconds"),
            timeout_seconds=timeout if isinstance(timeout, int) else None,
            timeout_seconds_path=self.optional_path(body, "TimeoutSecondsPath", location, None),
            heartbeat_seconds=heartbeat if isinstance(heartbeat, int) else None,
            heartbeat_seconds_path=self.optional_path(body, "HeartbeatSecondsPath", location, None),
            credentials=credentials,
        )

    def _choice(self, body: dict[str, Json], location: str, common: dict[str, Json]) -> ChoiceState:
        choices = body.get("Choices")
        at = _pointer(location, "Choices")
        rules: list[Rule] = []
        if "Choices" not in body:
            self.problem("These fields are required: [Choices]", location)
        elif not isinstance(choices, list):
            self.problem("The value for the field 'Choices' must be an ARRAY", at)
        elif not choices:
            self.problem("Value cannot be empty", at)
        else:
            for index, node in enumerate(choices):
                rule = self.rule(
                    node, _pointer(at, index), top=True, language=common["query_language"]
                )
                if rule is not None:
                    rules.append(rule)
        default = body.get("Default")
        if default is not None and not isinstance(default, str):
            self.problem(
                "The value for the field 'Default' must be a STRING", _pointer(location, "Default")
            )
            default = None
        return ChoiceState(**common, choices=tuple(rules), default=default)

    def rule(self, node: Json, location: str, top: bool, language: str = JSONPATH) -> Rule | None:
        if not isinstance(node, dict):
            self.problem("The value for a choice rule must be an OBJECT", location)
            return None
        nxt = node.get("Next")
        if top and not isinstance(nxt, str):
            self.problem("These fields are required: [Next]", location)
        if not top:
            for name in ("Next", "Assign"):
                if name in node:
                    self.problem(
                        f'The field "{name}" is not supported by Step Functions',
                        _pointer(location, name),
                    )
        assign = None
        if top and "Assign" in node:
            assign = self.assign(node["Assign"], _pointer(location, "Assign"), language)
        if language == JSONATA:
            self.unknown_fields(
                node, ("Next", "Comment", "Assign", "Condition", "Output"), location
            )
            if "Condition" not in node:
                self.problem("These fields are required: [Condition]", location)
                return None
            condition = node["Condition"]
            at = _pointer(location, "Condition")
            if jsonata_mode.is_expression(condition):
                self.expressions(condition, at)
            elif not isinstance(condition, bool):
                self.problem(
                    "The value for the field 'Condition' must be a BOOLEAN or a JSONata expression",
                    at,
                )
            if "Output" in node:
                self.expressions(node["Output"], _pointer(location, "Output"))
            return Condition(
                condition, nxt, assign, node.get("Output"), has_output="Output" in node
            )
        compound = [k for k in ("And", "Or", "Not") if k in node]
        operators = [k for k in node if k in OPERATORS]
        allowed = {"Next", "Comment", "Variable", "Assign", *compound, *operators}
        self.unknown_fields(node, tuple(allowed), location, rule=True)
        if len(compound) + len(operators) != 1:
            self.problem(
                "A choice rule must have exactly one comparison operator or And, Or, Not", location
            )
            return None
        if compound:
            kind = compound[0]
            inner = node[kind]
            at = _pointer(location, kind)
            if "Variable" in node:
                self.problem('The field "Variable" is not supported by Step Functions', location)
            if kind == "Not":
                rule = self.rule(inner, at, top=False)
                return Compound("Not", (rule,) if rule else (), nxt if top else None, assign)
            if not isinstance(inner, list) or not inner:
                self.problem("Value cannot be empty", at)
                return None
            rules = [self.rule(n, _pointer(at, i), top=False) for i, n in enumerate(inner)]
            return Compound(kind, tuple(r for r in rules if r), nxt if top else None, assign)
        operator = operators[0]
        variable = node.get("Variable")
        if "Variable" not in node:
            self.problem("These fields are required: [Variable]", location)
            return None
        self.path(variable, _pointer(location, "Variable"))
        value = node[operator]
        at = _pointer(location, operator)
        kind = OPERATORS[operator]
        if kind == "path":
            self.path(value, at)
        elif kind == "timestamp":
            if not is_timestamp(value):
                self.problem("String does not match RFC3339 timestamp", at)
        elif not _json_type_is(value, kind):
            self.problem(f"The value for the field '{operator}' must be a {kind.upper()}", at)
        return Comparison(str(variable), operator, value, nxt if top else None, assign)

    def _wait(self, body: dict[str, Json], location: str, common: dict[str, Json]) -> WaitState:
        given = [k for k in ("Seconds", "Timestamp", "SecondsPath", "TimestampPath") if k in body]
        if len(given) != 1:
            self.problem(
                "Exactly one of 'Seconds', 'Timestamp', 'SecondsPath' or 'TimestampPath' "
                "must be set",
                location,
            )
        jsonata = common["query_language"] == JSONATA
        seconds = body.get("Seconds")
        seconds_expression = timestamp_expression = None
        if jsonata and jsonata_mode.is_expression(seconds):
            self.expressions(seconds, _pointer(location, "Seconds"))
            seconds_expression, seconds = seconds, None
        elif "Seconds" in body:
            self.integer(seconds, _pointer(location, "Seconds"), low=0, high=99_999_999)
        timestamp = body.get("Timestamp")
        if jsonata and jsonata_mode.is_expression(timestamp):
            self.expressions(timestamp, _pointer(location, "Timestamp"))
            timestamp_expression, timestamp = timestamp, None
        elif "Timestamp" in body and not is_timestamp(timestamp):
            self.problem(
                "String does not match RFC3339 timestamp",
                _pointer(location, "Timestamp"),
            )
        return WaitState(
            **common,
            seconds_expression=seconds_expression,
            timestamp_expression=timestamp_expression,
            seconds=seconds if isinstance(seconds, int) else None,
            timestamp=timestamp if isinstance(timestamp, str) else None,
            seconds_path=self.optional_path(body, "SecondsPath", location, None),
            timestamp_path=self.optional_path(body, "TimestampPath", location, None),
        )

    def _succeed(
        self, body: dict[str, Json], location: str, common: dict[str, Json]
    ) -> SucceedState:
        return SucceedState(**common)

    def _fail(self, body: dict[str, Json], location: str, common: dict[str, Json]) -> FailState:
        for pair in (("Error", "ErrorPath"), ("Cause", "CausePath")):
            if all(name in body for name in pair):
                self.problem(f"Only one of '{pair[0]}' or '{pair[1]}' may be set", location)
            value = body.get(pair[0])
            if pair[0] in body and not isinstance(value, str):
                self.problem(
                    f"The value for the field '{pair[0]}' must be a STRING",
                    _pointer(location, pair[0]),
                )
            if common["query_language"] == JSONATA:
                self.expressions(value, _pointer(location, pair[0]))
            else:
                self.reference(body, pair[1], location)
        common["input_path"] = "$"
        common["output_path"] = "$"
        return FailState(
            **common,
            error=body.get("Error"),
            error_path=body.get("ErrorPath"),
            cause=body.get("Cause"),
            cause_path=body.get("CausePath"),
        )

    def _parallel(
        self, body: dict[str, Json], location: str, common: dict[str, Json]
    ) -> ParallelState:
        at = _pointer(location, "Branches")
        branches = body.get("Branches")
        programs: list[Program] = []
        if "Branches" not in body:
            self.problem("These fields are required: [Branches]", location)
        elif not isinstance(branches, list):
            self.problem("The value for the field 'Branches' must be an ARRAY", at)
        elif not branches:
            self.problem("Value cannot be empty", at)
        else:
            for index, branch in enumerate(branches):
                where = _pointer(at, index)
                if not isinstance(branch, dict):
                    self.problem("The value for a branch must be an OBJECT", where)
                    continue
                self.unknown_fields(
                    branch, ("StartAt", "States", "Comment", "QueryLanguage"), where
                )
                program = self.program(branch, where)
                if program is not None:
                    programs.append(program)
        return ParallelState(
            **common,
            **self.handling(body, location, common["query_language"]),
            branches=tuple(programs),
        )

    def _map(self, body: dict[str, Json], location: str, common: dict[str, Json]) -> MapState:
        language = common["query_language"]
        jsonata = language == JSONATA
        if "ItemReader" in body:
            self._item_reader(body["ItemReader"], _pointer(location, "ItemReader"), jsonata)
        if "ResultWriter" in body:
            self._result_writer(body["ResultWriter"], _pointer(location, "ResultWriter"), jsonata)
        if "ItemProcessor" in body and "Iterator" in body:
            self.problem("Only one of 'ItemProcessor' or 'Iterator' may be set", location)
        key = "ItemProcessor" if "ItemProcessor" in body else "Iterator"
        node = body.get(key)
        at = _pointer(location, key)
        processor: Program | None = None
        mode, execution_type = "INLINE", None
        if key not in body:
            self.problem("These fields are required: [ItemProcessor]", location)
        elif not isinstance(node, dict):
            self.problem(f"The value for the field '{key}' must be an OBJECT", at)
        else:
            self.unknown_fields(node, ("StartAt", "States", "Comment", "ProcessorConfig"), at)
            config = node.get("ProcessorConfig", {})
            if not isinstance(config, dict):
                self.problem(
                    "The value for the field 'ProcessorConfig' must be an OBJECT",
                    _pointer(at, "ProcessorConfig"),
                )
                config = {}
            mode = config.get("Mode", "INLINE")
            if mode not in ("INLINE", "DISTRIBUTED"):
                self.problem(
                    "The field 'Mode' should have one of these values: [INLINE, DISTRIBUTED]",
                    _pointer(_pointer(at, "ProcessorConfig"), "Mode"),
                )
            execution_type = config.get("ExecutionType")
            processor = self.program(node, at)
        for distributed_only in ("ItemReader", "ResultWriter"):
            if distributed_only in body and mode == "INLINE":
                self.problem(
                    f"The field '{distributed_only}' is only supported in DISTRIBUTED mode",
                    _pointer(location, distributed_only),
                )
        if "ItemSelector" in body and "Parameters" in body:
            self.problem("Only one of 'ItemSelector' or 'Parameters' may be set", location)
        selector_key = "ItemSelector" if "ItemSelector" in body else "Parameters"
        handling = self.handling(body, location, language)
        if not jsonata:
            handling["parameters"], handling["has_parameters"] = None, False
        expressions: dict[str, str] = {}
        for name in ("MaxConcurrency", "ToleratedFailureCount", "ToleratedFailurePercentage"):
            if jsonata and jsonata_mode.is_expression(body.get(name)):
                self.expressions(body[name], _pointer(location, name))
                expressions[name] = body[name]
        for name in ("MaxConcurrency", "ToleratedFailureCount"):
            if name in body and name not in expressions:
                self.integer(body[name], _pointer(location, name), low=0)
        if jsonata:
            items = body.get("Items")
            if "Items" in body and not (
                isinstance(items, list) or jsonata_mode.is_expression(items)
            ):
                self.problem(
                    "The value for the field 'Items' must be an ARRAY or a JSONata expression",
                    _pointer(location, "Items"),
                )
            if "Items" in body:
                self.expressions(items, _pointer(location, "Items"))
            if "ItemSelector" in body:
                self.expressions(body["ItemSelector"], _pointer(location, "ItemSelector"))
        percentage = body.get("ToleratedFailurePercentage")
        if "ToleratedFailurePercentage" in expressions:
            percentage = None
        elif "ToleratedFailurePercentage" in body and (
            not _json_type_is(percentage, "number") or not 0 <= float(percentage or 0) <= 100
        ):
            self.problem(
                "The value for the field 'ToleratedFailurePercentage' must be a number "
                "between 0 and 100",
                _pointer(location, "ToleratedFailurePercentage"),
            )
        label = body.get("Label")
        if label is not None:
            self.label(label, _pointer(location, "Label"))
        return MapState(
            **common,
            **handling,
            processor=processor,
            mode=mode if isinstance(mode, str) else "INLINE",
            execution_type=execution_type,
            items_path=self.optional_path(body, "ItemsPath", location) or "$",
            item_selector=body.get("ItemSelector")
            if jsonata
            else self.template(body, selector_key, location),
            has_item_selector=selector_key in body,
            items=body.get("Items"),
            has_items="Items" in body,
            max_concurrency_expression=expressions.get("MaxConcurrency"),
            tolerated_failure_count_expression=expressions.get("ToleratedFailureCount"),
            tolerated_failure_percentage_expression=expressions.get("ToleratedFailurePercentage"),
            max_concurrency=body.get("MaxConcurrency", 0)
            if "MaxConcurrency" not in expressions
            else 0,
            max_concurrency_path=self.optional_path(body, "MaxConcurrencyPath", location, None),
            tolerated_failure_count=None
            if "ToleratedFailureCount" in expressions
            else body.get("ToleratedFailureCount"),
            tolerated_failure_count_path=self.optional_path(
                body, "ToleratedFailureCountPath", location, None
            ),
            tolerated_failure_percentage=percentage,
            tolerated_failure_percentage_path=self.optional_path(
                body, "ToleratedFailurePercentagePath", location, None
            ),
            item_batcher=body.get("ItemBatcher"),
            label=label,
            item_reader=body.get("ItemReader"),
            result_writer=body.get("ResultWriter"),
        )

    # -- a Distributed Map's ItemReader and ResultWriter ----------------------------

    def _item_reader(self, node: Json, location: str, jsonata: bool) -> None:
        from plugins.states import itemio

        if not isinstance(node, dict):
            self.problem("The value for the field 'ItemReader' must be an OBJECT", location)
            return
        given = "Arguments" if jsonata else "Parameters"
        self.unknown_fields(node, ("Resource", given, "ReaderConfig"), location)
        resource = node.get("Resource")
        if not isinstance(resource, str):
            self.problem("These fields are required: [Resource]", location)
        elif resource not in itemio.READERS:
            self.problems.append(
                UnsupportedFeature(
                    f"the ItemReader resource '{resource}' (supported: "
                    f"{', '.join(itemio.READERS)})",
                    _pointer(location, "Resource"),
                )
            )
        self._io_parameters(node, given, location, jsonata)
        config = node.get("ReaderConfig", {})
        at = _pointer(location, "ReaderConfig")
        if not isinstance(config, dict):
            self.problem("The value for the field 'ReaderConfig' must be an OBJECT", at)
            return
        self.unknown_fields(
            config,
            (
                "InputType",
                "CSVHeaderLocation",
                "CSVHeaders",
                "CSVDelimiter",
                "MaxItems",
                *(() if jsonata else ("MaxItemsPath",)),
                "Transformation",
                "ManifestType",
                "ItemsPointer",
            ),
            at,
        )
        # newer fields AWS takes that this build does not run: refused by name
        for name, value in (
            ("Transformation", "LOAD_AND_FLATTEN"),
            ("ManifestType", "ATHENA_DATA"),
            ("ItemsPointer", None),
        ):
            if name in config and (value is None or config[name] == value):
                self.problems.append(
                    UnsupportedFeature(
                        f"ReaderConfig's {name} {config[name]!r}", _pointer(at, name)
                    )
                )
        input_type = config.get("InputType")
        if resource == itemio.GET_OBJECT and "InputType" not in config:
            self.problem("These fields are required: [InputType]", at)
        if input_type == "PARQUET":
            self.problems.append(
                UnsupportedFeature("ItemReader's InputType PARQUET", _pointer(at, "InputType"))
            )
        elif input_type is not None and input_type not in itemio.INPUT_TYPES:
            self.problem(
                "The field 'InputType' should have one of these values: "
                f"[{', '.join(itemio.INPUT_TYPES)}]",
                _pointer(at, "InputType"),
            )
        location_value = config.get("CSVHeaderLocation")
        if location_value is not None and location_value not in ("FIRST_ROW", "GIVEN"):
            self.problem(
                "The field 'CSVHeaderLocation' should have one of these values: [FIRST_ROW, GIVEN]",
                _pointer(at, "CSVHeaderLocation"),
            )
        headers = config.get("CSVHeaders")
        if location_value == "GIVEN" and "CSVHeaders" not in config:
            self.problem("These fields are required: [CSVHeaders]", at)
        if headers is not None and not (
            isinstance(headers, list) and all(isinstance(h, str) for h in headers)
        ):
            self.problem(
                "The value for the field 'CSVHeaders' must be an ARRAY of STRING",
                _pointer(at, "CSVHeaders"),
            )
        delimiter = config.get("CSVDelimiter")
        if delimiter is not None and delimiter not in itemio.CSV_DELIMITERS:
            self.problem(
                "The field 'CSVDelimiter' should have one of these values: "
                f"[{', '.join(itemio.CSV_DELIMITERS)}]",
                _pointer(at, "CSVDelimiter"),
            )
        if "MaxItems" in config and "MaxItemsPath" in config:
            self.problem("Only one of 'MaxItems' or 'MaxItemsPath' may be set", at)
        most = config.get("MaxItems")
        if jsonata and jsonata_mode.is_expression(most):
            self.expressions(most, _pointer(at, "MaxItems"))
        elif "MaxItems" in config:
            self.integer(most, _pointer(at, "MaxItems"), low=0, high=itemio.MAX_ITEMS)
        if "MaxItemsPath" in config:
            self.path(config["MaxItemsPath"], _pointer(at, "MaxItemsPath"))

    def _result_writer(self, node: Json, location: str, jsonata: bool) -> None:
        from plugins.states import itemio

        if not isinstance(node, dict):
            self.problem("The value for the field 'ResultWriter' must be an OBJECT", location)
            return
        given = "Arguments" if jsonata else "Parameters"
        self.unknown_fields(node, ("Resource", given, "WriterConfig"), location)
        resource = node.get("Resource")
        if "Resource" not in node and "WriterConfig" not in node:
            self.problem("These fields are required: [Resource] or [WriterConfig]", location)
        if "Resource" in node and resource != itemio.PUT_OBJECT:
            self.problem(
                f"The field 'Resource' should have the value '{itemio.PUT_OBJECT}'",
                _pointer(location, "Resource"),
            )
        if "Resource" in node and given not in node:
            self.problem(f"These fields are required: [{given}]", location)
        self._io_parameters(node, given, location, jsonata)
        config = node.get("WriterConfig", {})
        at = _pointer(location, "WriterConfig")
        if not isinstance(config, dict):
            self.problem("The value for the field 'WriterConfig' must be an OBJECT", at)
            return
        self.unknown_fields(config, ("Transformation", "OutputType"), at)
        for name, allowed in (
            ("Transformation", itemio.TRANSFORMATIONS),
            ("OutputType", itemio.OUTPUT_TYPES),
        ):
            if name in config and config[name] not in allowed:
                self.problem(
                    f"The field '{name}' should have one of these values: [{', '.join(allowed)}]",
                    _pointer(at, name),
                )

    def _io_parameters(
        self, node: dict[str, Json], given: str, location: str, jsonata: bool
    ) -> None:
        if given not in node:
            return
        at = _pointer(location, given)
        if jsonata:
            if not (isinstance(node[given], dict) or jsonata_mode.is_expression(node[given])):
                self.problem(f"The value for the field '{given}' must be an OBJECT", at)
            self.expressions(node[given], at)
        elif not isinstance(node[given], dict):
            self.problem(f"The value for the field '{given}' must be an OBJECT", at)
        else:
            self.template_fields(node[given], at)

    def label(self, label: Json, location: str) -> None:
        if not isinstance(label, str) or not label:
            self.problem("Value cannot be empty", location, "INVALID_LABEL_NAME")
        elif len(label) > 40:
            self.problem("Label must be at most 40 characters", location, "INVALID_LABEL_NAME")
        elif re.search(r"[\s<>{}\[\]?*\"#%\\^|~`$&,;:/\x00-\x1f\x7f-\x9f]", label):
            self.problem(
                "Label contains a character that is not allowed", location, "INVALID_LABEL_NAME"
            )

    # -- Retry and Catch ---------------------------------------------------------

    def retriers(self, node: Json, location: str) -> tuple[Retrier, ...]:
        if not isinstance(node, list):
            self.problem("The value for the field 'Retry' must be an ARRAY", location)
            return ()
        out = []
        for index, item in enumerate(node):
            at = _pointer(location, index)
            if not isinstance(item, dict):
                self.problem("The value for a retrier must be an OBJECT", at)
                continue
            self.unknown_fields(
                item,
                (
                    "ErrorEquals",
                    "IntervalSeconds",
                    "MaxAttempts",
                    "BackoffRate",
                    "MaxDelaySeconds",
                    "JitterStrategy",
                    "Comment",
                ),
                at,
            )
            errors = self.error_equals(item, at, last=index == len(node) - 1)
            if "IntervalSeconds" in item:
                self.integer(
                    item["IntervalSeconds"], _pointer(at, "IntervalSeconds"), low=1, high=99_999_999
                )
            if "MaxAttempts" in item:
                self.integer(
                    item["MaxAttempts"], _pointer(at, "MaxAttempts"), low=0, high=99_999_999
                )
            if "MaxDelaySeconds" in item:
                self.integer(
                    item["MaxDelaySeconds"], _pointer(at, "MaxDelaySeconds"), low=1, high=31_622_401
                )
            rate = item.get("BackoffRate", 2.0)
            if not _json_type_is(rate, "number") or rate < 1.0:
                self.problem(
                    "The value for the field 'BackoffRate' must be a number greater than "
                    "or equal to 1.0",
                    _pointer(at, "BackoffRate"),
                )
                rate = 2.0
            jitter = item.get("JitterStrategy", "NONE")
            if jitter not in ("FULL", "NONE"):
                self.problem(
                    "The field 'JitterStrategy' should have one of these values: [FULL, NONE]",
                    _pointer(at, "JitterStrategy"),
                )
                jitter = "NONE"
            out.append(
                Retrier(
                    errors,
                    _int_or(item.get("IntervalSeconds"), 1),
                    _int_or(item.get("MaxAttempts"), 3),
                    float(rate),
                    item.get("MaxDelaySeconds")
                    if isinstance(item.get("MaxDelaySeconds"), int)
                    else None,
                    jitter,
                )
            )
        return tuple(out)

    def catchers(self, node: Json, location: str, language: str = JSONPATH) -> tuple[Catcher, ...]:
        if not isinstance(node, list):
            self.problem("The value for the field 'Catch' must be an ARRAY", location)
            return ()
        out = []
        for index, item in enumerate(node):
            at = _pointer(location, index)
            if not isinstance(item, dict):
                self.problem("The value for a catcher must be an OBJECT", at)
                continue
            own = "Output" if language == JSONATA else "ResultPath"
            self.unknown_fields(item, ("ErrorEquals", "Next", own, "Comment", "Assign"), at)
            errors = self.error_equals(item, at, last=index == len(node) - 1)
            nxt = item.get("Next")
            if not isinstance(nxt, str):
                self.problem("These fields are required: [Next]", at)
                continue
            assign = None
            if "Assign" in item:
                assign = self.assign(item["Assign"], _pointer(at, "Assign"), language)
            if language == JSONATA:
                if "Output" in item:
                    self.expressions(item["Output"], _pointer(at, "Output"))
                out.append(
                    Catcher(
                        errors,
                        nxt,
                        assign=assign,
                        output=item.get("Output"),
                        has_output="Output" in item,
                    )
                )
                continue
            out.append(
                Catcher(
                    errors,
                    nxt,
                    self.optional_path(item, "ResultPath", at, result_path=True),
                    assign=assign,
                )
            )
        return tuple(out)

    def error_equals(self, item: dict[str, Json], location: str, last: bool) -> tuple[str, ...]:
        errors = item.get("ErrorEquals")
        at = _pointer(location, "ErrorEquals")
        if "ErrorEquals" not in item:
            self.problem("These fields are required: [ErrorEquals]", location)
            return ()
        if not isinstance(errors, list) or not all(isinstance(e, str) for e in errors):
            self.problem("The value for the field 'ErrorEquals' must be an ARRAY of STRING", at)
            return ()
        if not errors:
            self.problem("Value cannot be empty", at)
        for index, name in enumerate(errors):
            http_status = name.startswith("States.Http.StatusCode.")  # an HTTP Task's
            if name.startswith("States.") and name not in BUILT_IN and not http_status:
                self.problem(
                    f"The error name '{name}' is not a known States error", _pointer(at, index)
                )
        if "States.ALL" in errors and (len(errors) > 1 or not last):
            self.problem(
                "States.ALL must appear alone in ErrorEquals, in the last retrier or catcher", at
            )
        return tuple(errors)

    # -- variables and JSONata ----------------------------------------------------

    def assign(self, node: Json, location: str, language: str) -> dict[str, Json] | None:
        """An Assign field: an object of variable names (JSONPath: ``name.$`` for a path)."""
        if not isinstance(node, dict):
            self.problem("The value for the field 'Assign' must be an OBJECT", location)
            return None
        seen: dict[str, str] = {}
        for key, value in node.items():
            at = _pointer(location, key)
            name = key
            if language == JSONPATH and key.endswith(".$"):
                name = key[:-2]
                if isinstance(value, str) and intrinsics.is_intrinsic(value):
                    self.intrinsic(value, at)
                else:
                    self.path(value, at)
            elif language == JSONATA:
                self.expressions(value, at)
            else:
                self.template_fields(value, at)
            problem = variables.name_problem(name)
            if problem is not None:
                self.problem(problem, at, "INVALID_VARIABLE_NAME")
            elif name in seen:
                self.problem(
                    f"The variable '{name}' is assigned twice in one Assign "
                    f"('{seen[name]}' and '{key}')",
                    at,
                )
            seen.setdefault(name, key)
        return node

    def expressions(self, template: Json, location: str) -> None:
        """Every ``{% %}`` string of ``template`` must be a JSONata expression that parses."""
        for text, at in jsonata_mode.expressions(template, location):
            problem = jsonata_mode.syntax_problem(text)
            if problem is not None:
                self.problem(
                    f"The value for the field '{at.rsplit('/', 1)[-1]}' must be a valid JSONata "
                    f"expression: {problem}",
                    at,
                )

    # -- field helpers -------------------------------------------------------------

    def unknown_fields(
        self, node: dict[str, Json], allowed: tuple[str, ...], location: str, rule: bool = False
    ) -> None:
        for key in node:
            if key not in allowed and not (rule and key in OPERATORS):
                self.problem(
                    f'The field "{key}" is not supported by Step Functions', _pointer(location, key)
                )

    def integer(self, value: Json, location: str, low: int, high: int | None = None) -> None:
        field_name = location.rsplit("/", 1)[-1]
        if not isinstance(value, int) or isinstance(value, bool):
            self.problem(f"The value for the field '{field_name}' must be an INTEGER", location)
        elif value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            self.problem(f"The value for the field '{field_name}' must be {bound}", location)

    def path(self, value: Json, location: str) -> None:
        field_name = location.rsplit("/", 1)[-1]
        if not isinstance(value, str):
            self.problem(f"The value for the field '{field_name}' must be a STRING", location)
            return
        try:
            paths.parse(value)
        except paths.PathError:
            self.problem(
                f"The value for the field '{field_name}' must be a valid JSONPath", location
            )

    def optional_path(
        self,
        body: dict[str, Json],
        name: str,
        location: str,
        default: str | None = "$",
        *,
        result_path: bool = False,
    ) -> str | None:
        if name not in body:
            return default
        value = body[name]
        at = _pointer(location, name)
        if value is None:
            return None
        self.path(value, at)
        if result_path and isinstance(value, str):
            try:
                parsed = paths.parse(value)
            except paths.PathError:
                return default
            if parsed.context or parsed.variable is not None or not parsed.definite:
                self.problem(f"The value for the field '{name}' must be a valid ReferencePath", at)
        return value if isinstance(value, str) else default

    def reference(self, body: dict[str, Json], name: str, location: str) -> None:
        """ErrorPath and CausePath: a path or an intrinsic function."""
        if name not in body:
            return
        value = body[name]
        at = _pointer(location, name)
        if isinstance(value, str) and intrinsics.is_intrinsic(value):
            self.intrinsic(value, at)
        else:
            self.path(value, at)

    def intrinsic(self, value: str, location: str) -> None:
        try:
            intrinsics.parse(value)
        except intrinsics.IntrinsicSyntaxError as error:
            field_name = location.rsplit("/", 1)[-1]
            self.problem(
                f"The value for the field '{field_name}' must be a valid JSONPath or a valid "
                f"intrinsic function call: {error}",
                location,
            )

    def template(self, body: dict[str, Json], name: str, location: str) -> Json:
        if name not in body:
            return None
        value = body[name]
        self.template_fields(value, _pointer(location, name))
        return value

    def template_fields(self, value: Json, location: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                at = _pointer(location, key)
                if key.endswith(".$"):
                    if isinstance(item, str) and intrinsics.is_intrinsic(item):
                        self.intrinsic(item, at)
                    else:
                        self.path(item, at)
                else:
                    self.template_fields(item, at)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self.template_fields(item, _pointer(location, index))


def _successors(state: State) -> list[str]:
    out = [state.next] if state.next else []
    if isinstance(state, ChoiceState):
        out += [rule.next for rule in state.choices if rule.next]
        if state.default:
            out.append(state.default)
    if isinstance(state, HandlingState):
        out += [catcher.next for catcher in state.catch]
    return out


def _json_type_is(value: Json, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return False


def _int_or(value: Json, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def express_problems(definition: str | dict[str, Json]) -> list[DefinitionError]:
    """What an EXPRESS machine may not have, worded as CreateStateMachine
    refuses it (recorded): a ``.waitForTaskToken`` or ``.sync`` integration,
    or an activity, in any Task of the machine, its branches and iterators."""
    try:
        document = json.loads(definition) if isinstance(definition, str) else definition
    except ValueError:
        return []
    problems: list[DefinitionError] = []

    def walk(node: Json, location: str) -> None:
        states = node.get("States") if isinstance(node, dict) else None
        if not isinstance(states, dict):
            return
        for name, state in states.items():
            if not isinstance(state, dict):
                continue
            here = _pointer(f"{location}/States", name)
            resource = state.get("Resource")
            if state.get("Type") == "Task" and isinstance(resource, str):
                what = None
                if resource.endswith(".waitForTaskToken"):
                    # AWS's message has two spaces before "at" here
                    what = "'.waitForTaskToken' service integration "
                elif re.search(r"\.sync(:2)?$", resource):
                    what = "'.sync' service integration"
                elif re.match(r"arn:[^:]+:states:[^:]*:[^:]*:activity:", resource):
                    what = "Activity ARN"
                if what is not None:
                    problems.append(
                        DefinitionError(
                            SCHEMA,
                            f"Express state machine does not support {what}",
                            f"{here}/Resource",
                        )
                    )
            for index, branch in enumerate(state.get("Branches") or []):
                walk(branch, f"{here}/Branches/{index}")
            for key in ("ItemProcessor", "Iterator"):
                if isinstance(state.get(key), dict):
                    walk(state[key], f"{here}/{key}")

    walk(document, "")
    return problems
