"""Our interpreter against executions recorded on real AWS.

Each case names a recording (LocalStack's test module and test id, whose
snapshot holds what AWS answered) and the definition that ran (a template
constant or path). The input is the one the recorded history starts with;
the whole history (event types, ids, previousEventId, details) and the
DescribeExecution fields recorded are compared with ours.

The cases are our own table; the recorded values are facts read from the
copy in tests/data/stepfunctions (see ``states_recordings``).
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from pipelines.clock import ManualClock
from plugins.states.definition import parse_definition, validate
from plugins.states.errors import DefinitionError
from plugins.states.history import MemoryLog
from plugins.states.interpreter import Execution, Interpreter, Outcome
from tests import states_recordings as rec

Json = Any

ACCOUNT = "111111111111"


@functools.cache
def _constants(area: str) -> dict[str, str]:
    """A templates module's constants: ``MAP_STATE`` -> ``scenarios/statemachines/map_state.json5``."""
    module = {
        "base": "base/base_templates.py",
        "scenarios": "scenarios/scenarios_templates.py",
        "intrinsic": "intrinsicfunctions/intrinsic_functions_templates.py",
        "context": "context_object/context_object_templates.py",
        "comment": "comment/comment_templates.py",
        "choice": "choiceoperators/choice_operators_templates.py",
    }[area]
    text = rec._show(f"templates/{module}")
    folder = module.rsplit("/", 1)[0]
    found = re.findall(
        r"(\w+): Final\[str\] = os\.path\.join\(\s*_THIS_FOLDER,\s*\"([^\"]+)\"", text
    )
    return {name: f"{folder}/{path}" for name, path in found}


@dataclass(frozen=True)
class Case:
    module: str
    test: str
    area: str
    template: str
    patch: Callable[[Json], Json] | None = None
    #: the recorded content's keys holding histories (None: every one it has)
    histories: tuple[str, ...] | None = None
    #: why this case does not pass yet (run, and expected to fail)
    known_gap: str | None = None
    #: the input the recorded test gave, where the recording replaced it (times by "date")
    input: str | None = None

    @property
    def id(self) -> str:
        return f"{self.module.rsplit('/', 1)[-1][:-3]}::{self.test}"

    @property
    def area_name(self) -> str:
        return self.module.split("/")[1]

    def definition(self) -> Json:
        # a template's path under templates/, or a constant of its templates module
        is_path = "/" in self.template
        path = self.template if is_path else _constants(self.area)[self.template]
        definition = rec.template(path)
        return self.patch(copy.deepcopy(definition)) if self.patch else definition


BASE = "v2/base/test_base.py"
SCEN = "v2/scenarios/test_base_scenarios.py"
B = "TestSnfBase::"
S = "TestBaseScenarios::"

CASES: list[Case] = [
    Case(BASE, B + "test_state_fail", "base", "BASE_RAISE_FAILURE"),
    Case(BASE, B + "test_state_fail_path", "base", "BASE_RAISE_FAILURE_PATH"),
    Case(BASE, B + "test_state_fail_intrinsic", "base", "BASE_RAISE_FAILURE_INTRINSIC"),
    Case(BASE, B + "test_state_fail_empty", "base", "RAISE_EMPTY_FAILURE"),
    Case(BASE, B + "test_state_pass_result", "base", "BASE_PASS_RESULT"),
    Case(
        BASE,
        B + "test_state_pass_result_jsonpaths",
        "base",
        "BASE_PASS_RESULT",
        patch=lambda d: rec.set_at(
            d,
            ["States", "State_1", "Result"],
            {"unsupported1.$": "$.jsonpath", "unsupported2.$": "$$"},
        ),
    ),
    Case(BASE, B + "test_decl_version_1_0", "base", "DECL_VERSION_1_0"),
    Case(BASE, B + "test_query_context_object_values", "base", "QUERY_CONTEXT_OBJECT_VALUES"),
    Case(
        BASE,
        B + "test_state_pass_result_null_input_output_paths",
        "base",
        "PASS_RESULT_NULL_INPUT_OUTPUT_PATHS",
    ),
    Case(
        BASE, B + "test_state_pass_regex_json_path_base", "base", "PASS_RESULT_REGEX_JSON_PATH_BASE"
    ),
    Case(SCEN, S + "test_parallel_state[PARALLEL_STATE]", "scenarios", "PARALLEL_STATE"),
    Case(
        SCEN,
        S + "test_parallel_state[PARALLEL_STATE_PARAMETERS]",
        "scenarios",
        "PARALLEL_STATE_PARAMETERS",
    ),
    Case(SCEN, S + "test_parallel_state_order", "scenarios", "PARALLEL_STATE_ORDER"),
    Case(SCEN, S + "test_parallel_state_fail", "scenarios", "PARALLEL_STATE_FAIL"),
    Case(SCEN, S + "test_parallel_state_nested", "scenarios", "PARALLEL_NESTED_NESTED"),
    Case(SCEN, S + "test_parallel_state_catch", "scenarios", "PARALLEL_STATE_CATCH"),
    Case(SCEN, S + "test_parallel_state_retry", "scenarios", "PARALLEL_STATE_RETRY"),
    Case(
        SCEN,
        S + "test_max_concurrency_path[max_concurrency_value0]",
        "scenarios",
        "MAX_CONCURRENCY",
    ),
    Case(SCEN, S + "test_max_concurrency_path[NoNumber]", "scenarios", "MAX_CONCURRENCY"),
    Case(SCEN, S + "test_max_concurrency_path[0]", "scenarios", "MAX_CONCURRENCY"),
    Case(SCEN, S + "test_max_concurrency_path[1]", "scenarios", "MAX_CONCURRENCY"),
    Case(SCEN, S + "test_map_state", "scenarios", "MAP_STATE"),
    Case(SCEN, S + "test_map_state_nested", "scenarios", "MAP_STATE_NESTED"),
    Case(
        SCEN, S + "test_map_state_no_processor_config", "scenarios", "MAP_STATE_NO_PROCESSOR_CONFIG"
    ),
    Case(SCEN, S + "test_map_state_legacy", "scenarios", "MAP_STATE_LEGACY"),
    Case(
        SCEN,
        S + "test_map_state_legacy_config_inline",
        "scenarios",
        "MAP_STATE_LEGACY_CONFIG_INLINE",
    ),
    Case(
        SCEN,
        S + "test_map_state_legacy_config_distributed",
        "scenarios",
        "MAP_STATE_LEGACY_CONFIG_DISTRIBUTED",
    ),
    Case(
        SCEN,
        S + "test_map_state_legacy_config_distributed_parameters",
        "scenarios",
        "MAP_STATE_LEGACY_CONFIG_DISTRIBUTED_PARAMETERS",
    ),
    Case(
        SCEN,
        S + "test_map_state_legacy_config_distributed_item_selector",
        "scenarios",
        "MAP_STATE_LEGACY_CONFIG_DISTRIBUTED_ITEM_SELECTOR",
    ),
    Case(
        SCEN,
        S + "test_map_state_legacy_config_inline_parameters",
        "scenarios",
        "MAP_STATE_LEGACY_CONFIG_INLINE_PARAMETERS",
    ),
    Case(
        SCEN,
        S + "test_map_state_legacy_config_inline_item_selector",
        "scenarios",
        "MAP_STATE_LEGACY_CONFIG_INLINE_ITEM_SELECTOR",
    ),
    Case(
        SCEN,
        S + "test_map_state_config_distributed_item_selector",
        "scenarios",
        "MAP_STATE_CONFIG_DISTRIBUTED_ITEM_SELECTOR",
    ),
    Case(
        SCEN,
        S + "test_map_state_config_distributed_item_selector_parameters",
        "scenarios",
        "MAP_STATE_CONFIG_DISTRIBUTED_ITEM_SELECTOR_PARAMETERS",
    ),
    Case(SCEN, S + "test_map_state_legacy_reentrant", "scenarios", "MAP_STATE_LEGACY_REENTRANT"),
    Case(
        SCEN,
        S + "test_map_state_config_distributed_reentrant",
        "scenarios",
        "MAP_STATE_CONFIG_DISTRIBUTED_REENTRANT",
    ),
    Case(
        SCEN,
        S + "test_map_state_config_distributed_parameters",
        "scenarios",
        "MAP_STATE_CONFIG_DISTRIBUTED_PARAMETERS",
    ),
    Case(
        SCEN,
        S + "test_map_state_config_inline_item_selector",
        "scenarios",
        "MAP_STATE_CONFIG_DISTRIBUTED_ITEM_SELECTOR",
    ),
    Case(
        SCEN,
        S + "test_map_state_config_inline_parameters",
        "scenarios",
        "MAP_STATE_CONFIG_INLINE_PARAMETERS",
    ),
    Case(
        SCEN,
        S + "test_map_state_item_selector[MAP_STATE_ITEM_SELECTOR]",
        "scenarios",
        "MAP_STATE_ITEM_SELECTOR",
    ),
    Case(
        SCEN,
        S + "test_map_state_item_selector_parameters",
        "scenarios",
        "MAP_STATE_ITEM_SELECTOR_PARAMETERS",
    ),
    Case(SCEN, S + "test_map_state_parameters_legacy", "scenarios", "MAP_STATE_PARAMETERS_LEGACY"),
    Case(
        SCEN,
        S + "test_map_state_item_selector_singleton",
        "scenarios",
        "MAP_STATE_ITEM_SELECTOR_SINGLETON",
    ),
    Case(
        SCEN,
        S + "test_map_state_parameters_singleton_legacy",
        "scenarios",
        "MAP_STATE_PARAMETERS_SINGLETON_LEGACY",
    ),
    Case(SCEN, S + "test_map_state_catch", "scenarios", "MAP_STATE_CATCH"),
    Case(SCEN, S + "test_map_state_catch_empty_fail", "scenarios", "MAP_STATE_CATCH_EMPTY_FAIL"),
    Case(SCEN, S + "test_map_state_catch_legacy", "scenarios", "MAP_STATE_CATCH_LEGACY"),
    Case(SCEN, S + "test_map_state_retry", "scenarios", "MAP_STATE_RETRY"),
    Case(
        SCEN,
        S + "test_map_state_retry_multiple_retriers",
        "scenarios",
        "MAP_STATE_RETRY_MULTIPLE_RETRIERS",
    ),
    Case(SCEN, S + "test_map_state_retry_legacy", "scenarios", "MAP_STATE_RETRY_LEGACY"),
    Case(SCEN, S + "test_map_state_break_condition", "scenarios", "MAP_STATE_BREAK_CONDITION"),
    Case(
        SCEN,
        S + "test_map_state_break_condition_legacy",
        "scenarios",
        "MAP_STATE_BREAK_CONDITION_LEGACY",
    ),
    Case(
        SCEN,
        S + "test_map_state_tolerated_failure_values[count_literal]",
        "scenarios",
        "MAP_STATE_TOLERATED_FAILURE_COUNT",
    ),
    Case(
        SCEN,
        S + "test_map_state_tolerated_failure_values[percentage_literal]",
        "scenarios",
        "MAP_STATE_TOLERATED_FAILURE_PERCENTAGE",
    ),
    *[
        Case(
            SCEN,
            S + f"test_map_state_tolerated_failure_count_path[{param}]",
            "scenarios",
            "MAP_STATE_TOLERATED_FAILURE_COUNT_PATH",
        )
        for param in ("tolerated_failure_count_value0", "NoNumber", "-1", "0", "1")
    ],
    *[
        Case(
            SCEN,
            S + f"test_map_state_tolerated_failure_percentage_path[{param}]",
            "scenarios",
            "MAP_STATE_TOLERATED_FAILURE_PERCENTAGE_PATH",
        )
        for param in (
            "tolerated_failure_percentage_value0",
            "NoNumber",
            "-1.1",
            "-1",
            "0",
            "1",
            "1.1",
            "100",
            "100.1",
        )
    ],
    Case(SCEN, S + "test_map_state_label", "scenarios", "MAP_STATE_LABEL"),
    Case(
        SCEN,
        S + "test_map_state_nested_config_distributed",
        "scenarios",
        "MAP_STATE_NESTED_CONFIG_DISTRIBUTED",
    ),
    Case(
        SCEN,
        S + "test_choice_unsorted_parameters_positive[CHOICE_STATE_UNSORTED_CHOICE_PARAMETERS]",
        "scenarios",
        "CHOICE_STATE_UNSORTED_CHOICE_PARAMETERS",
    ),
    Case(
        SCEN,
        S + "test_choice_unsorted_parameters_negative[CHOICE_STATE_UNSORTED_CHOICE_PARAMETERS]",
        "scenarios",
        "CHOICE_STATE_UNSORTED_CHOICE_PARAMETERS",
    ),
    Case(
        SCEN,
        S + "test_choice_aws_docs_scenario[CHOICE_STATE_AWS_SCENARIO]",
        "scenarios",
        "CHOICE_STATE_AWS_SCENARIO",
    ),
    Case(
        SCEN,
        S + "test_choice_singleton_composite[CHOICE_STATE_SINGLETON_COMPOSITE]",
        "scenarios",
        "CHOICE_STATE_SINGLETON_COMPOSITE",
    ),
]


INTR = "v2/intrinsic_functions/"
CASES += [
    Case(INTR + "test_array.py", "test_array_0", "intrinsic", "ARRAY_0"),
    Case(INTR + "test_array.py", "test_array_2", "intrinsic", "ARRAY_2"),
    Case(INTR + "test_array.py", "test_array_partition", "intrinsic", "ARRAY_PARTITION"),
    Case(INTR + "test_array.py", "test_array_contains", "intrinsic", "ARRAY_CONTAINS"),
    Case(INTR + "test_array.py", "test_array_range", "intrinsic", "ARRAY_RANGE"),
    *[
        Case(INTR + "test_array.py", f"{cls}::test_array_get_item", "intrinsic", "ARRAY_GET_ITEM")
        for cls in ("TestArray", "TestSfnIntrinsicFunctionsArray")
    ],
    *[
        Case(INTR + "test_array.py", f"{cls}::test_array_length", "intrinsic", "ARRAY_LENGTH")
        for cls in ("TestArray", "TestSfnIntrinsicFunctionsArray")
    ],
    # recorded with the ARRAY_LENGTH definition, as the recording's test ran it
    *[
        Case(INTR + "test_array.py", f"{cls}::test_array_unique", "intrinsic", "ARRAY_LENGTH")
        for cls in ("TestArray", "TestSfnIntrinsicFunctionsArray")
    ],
    Case(INTR + "test_generic.py", "test_format_1", "intrinsic", "FORMAT_1"),
    Case(INTR + "test_generic.py", "test_format_2", "intrinsic", "FORMAT_2"),
    Case(INTR + "test_generic.py", "test_context_json_path", "intrinsic", "FORMAT_CONTEXT_PATH"),
    Case(INTR + "test_generic.py", "test_nested_calls_1", "intrinsic", "NESTED_CALLS_1"),
    Case(INTR + "test_generic.py", "test_nested_calls_2", "intrinsic", "NESTED_CALLS_2"),
    Case(INTR + "test_generic.py", "test_escape_sequence", "intrinsic", "ESCAPE_SEQUENCE"),
    Case(INTR + "test_string_operations.py", "test_string_split", "intrinsic", "STRING_SPLIT"),
    Case(
        INTR + "test_string_operations.py",
        "test_string_split_context_object",
        "intrinsic",
        "STRING_SPLIT_CONTEXT_OBJECT",
    ),
    Case(INTR + "test_hash_calculations.py", "test_hash", "intrinsic", "HASH"),
    Case(INTR + "test_encode_decode.py", "test_base_64_encode", "intrinsic", "BASE_64_ENCODE"),
    Case(INTR + "test_encode_decode.py", "test_base_64_decode", "intrinsic", "BASE_64_DECODE"),
    Case(INTR + "test_json_manipulation.py", "test_string_to_json", "intrinsic", "STRING_TO_JSON"),
    Case(INTR + "test_json_manipulation.py", "test_json_to_string", "intrinsic", "JSON_TO_STRING"),
    Case(INTR + "test_json_manipulation.py", "test_json_merge", "intrinsic", "JSON_MERGE"),
    Case(
        INTR + "test_json_manipulation.py",
        "test_json_merge_escaped_argument",
        "intrinsic",
        "JSON_MERGE_ESCAPED_ARGUMENT",
    ),
    Case(INTR + "test_math_operations.py", "test_math_add", "intrinsic", "MATH_ADD"),
]


def _replace(placeholder: str, value: str) -> Callable[[Json], Json]:
    def patch(definition: Json) -> Json:
        loaded: Json = json.loads(json.dumps(definition).replace(placeholder, value))
        return loaded

    return patch


def _item_path(path: str) -> Callable[[Json], Json]:
    return lambda d: rec.set_at(d, ["States", "EntryState", "Parameters", "item.$"], path)


def _wait_until(timestamp: str) -> Callable[[Json], Json]:
    return lambda d: rec.set_at(d, ["States", "WaitUntil", "Timestamp"], timestamp)


CONTEXT = "v2/context_object/test_context_object.py"
WAIT = "v2/base/test_wait.py"
CO = "%CONTEXT_OBJECT_LITERAL_PLACEHOLDER%"
ARRAY_PATHS = (
    "$[*]",
    "$.items[*]",
    "$.items[1:]",
    "$.items[:1]",
    "$.item.items[*]",
    "$.item.items[1:]",
    "$.item.items[:1]",
    "$.item.items[1:5]",
    "$.items[*].itemValue",
    "$.items[1:].itemValue",
    "$.items[:1].itemValue",
    "$.item.items[1:5].itemValue",
)
INVALID_JSONPATH = (
    "INVALID_JSONPATH_IN_ERRORPATH",
    "INVALID_JSONPATH_IN_STRING_EXPR_JSONPATH",
    "INVALID_JSONPATH_IN_STRING_EXPR_CONTEXTPATH",
    "INVALID_JSONPATH_IN_CAUSEPATH",
    "INVALID_JSONPATH_IN_INPUTPATH",
    "INVALID_JSONPATH_IN_OUTPUTPATH",
    "INVALID_JSONPATH_IN_TIMEOUTSECONDSPATH",
    "INVALID_JSONPATH_IN_HEARTBEATSECONDSPATH",
)
WAIT_TIMESTAMPS = {
    "SECONDS": "2016-03-14T01:59:00Z",
    "NANOSECONDS": "2016-03-05T21:29:29.243167252Z",
}
CASES += [
    *[
        Case(
            BASE,
            f"test_json_path_array_access[{p}]",
            "base",
            "JSON_PATH_ARRAY_ACCESS",
            _item_path(p),
        )
        for p in ("$.items[0]", "$.items[10]")
    ],
    *[
        Case(
            BASE,
            f"test_json_path_array_wildcard_or_slice_with_no_input[{p}]",
            "base",
            "JSON_PATH_ARRAY_ACCESS",
            _item_path(p),
        )
        for p in ARRAY_PATHS
    ],
    *[
        Case(WAIT, f"test_base_wait_seconds_path[{p}]", "base", "WAIT_SECONDS_PATH")
        for p in ("-1", "0", "1", "1.5", "-1.5")
    ],
    *[
        Case(CONTEXT, f"test_{kind}_path[{literal}]", "context", template, _replace(CO, literal))
        for kind, template in (
            ("input", "CONTEXT_OBJECT_INPUT_PATH"),
            ("output", "CONTEXT_OBJECT_OUTPUT_PATH"),
        )
        for literal in ("$$", "$$.Execution.Input")
    ],
    Case(
        CONTEXT,
        "test_variable",
        "context",
        "CONTEXT_OBJECT_VARIABLE",
        _replace(CO, "$$.Execution.Input.input-value"),
    ),
    Case(
        CONTEXT,
        "test_items_path",
        "context",
        "CONTEXT_OBJECT_ITEMS_PATH",
        _replace(CO, "$$.Execution.Input.input-values"),
    ),
    Case(CONTEXT, "test_error_cause_path", "context", "CONTEXT_OBJECT_ERROR_CAUSE_PATH"),
    *[
        Case(
            SCEN, f"test_wait_timestamp[{name}]", "scenarios", "WAIT_TIMESTAMP", _wait_until(value)
        )
        for name, value in WAIT_TIMESTAMPS.items()
    ],
    # test_wait_timestamp_path is not ported: its recording replaced the input's timestamps
    *[
        Case(
            SCEN, f"test_invalid_jsonpath[{name if index < 3 else 'ST.' + name}]", "scenarios", name
        )
        for index, name in enumerate(INVALID_JSONPATH)
    ],
    *[
        Case(SCEN, f"test_escape_sequence_parsing[{name}]", "scenarios", name)
        for name in ("ESCAPE_SEQUENCES_STRING_LITERALS", "ESCAPE_SEQUENCES_JSONPATH")
    ],
]


async def _run(case: Case, input_text: str, clock: ManualClock) -> tuple[Outcome, MemoryLog]:
    machine = parse_definition(case.definition())
    name = "execution-name"
    machine_name = "machine-name"
    region = "us-east-1"
    execution = Execution(
        arn=f"arn:aws:states:{region}:{ACCOUNT}:execution:{machine_name}:{name}",
        name=name,
        state_machine_arn=f"arn:aws:states:{region}:{ACCOUNT}:stateMachine:{machine_name}",
        state_machine_name=machine_name,
        input_text=input_text,
        role_arn="arn:aws:iam::111111111111:role/snf-role",
        start_time=clock.time(),
    )
    log = MemoryLog()
    interpreter = Interpreter(machine, log=log, clock=clock)
    outcome = await rec.drive(clock, interpreter.run(execution))
    return outcome, log


def content_date(case: Case) -> str:
    return rec.recording_date(case.module, case.test)


def _describe(outcome: Outcome) -> dict[str, Json]:
    out: dict[str, Json] = {"status": outcome.status}
    if outcome.status == "SUCCEEDED":
        out["output"] = json.dumps(outcome.output)
    if outcome.error is not None:
        out["error"] = outcome.error
    if outcome.cause is not None:
        out["cause"] = outcome.cause
    return out


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
async def test_recorded_execution(case: Case) -> None:
    await check_recorded(case)


async def check_recorded(case: Case) -> None:
    """Run ``case``'s definition on each recorded input; compare history and outcome."""
    rec.require_recordings()
    content = rec.recording(case.module, case.test)
    problems: list[str] = []
    keys = case.histories or tuple(
        key for key in content if key == "get_execution_history" or key.startswith("exec_hist_resp")
    )
    assert keys, "the recording holds no history"
    for key in keys:
        recorded = content[key]["events"]
        clock = ManualClock(start=1_700_000_000.0)
        given = case.input if case.input is not None else rec.recorded_input(recorded)
        outcome, log = await _run(case, given, clock)
        ours = [event.to_aws() for event in log.events]
        if rec.before_map_run_change(content_date(case)):
            recorded = rec.map_run_exit_as_since_november_2024(recorded)
        parallel = any(event["type"] == "ParallelStateStarted" for event in recorded)
        problems += rec.history_differences(recorded, ours, parallel)
        described = content.get("describe_execution")
        if described is not None:
            recorded_fields = {
                k: described[k] for k in ("status", "output", "error", "cause") if k in described
            }
            problems += rec.differences(recorded_fields, _describe(outcome), "describe_execution")
    if case.known_gap:
        if not problems:
            pytest.fail(f"passes now: remove its known gap ({case.known_gap})")
        pytest.xfail(case.known_gap)
    assert not problems, "\n".join(problems[:20])


# -- Choice operators: tables of recorded (Variable, Value) -> which branch ran --------------

CHOICE_MODULES = {
    "test_boolean_equals.py": ("test_boolean_equals", "test_boolean_equals_path"),
    "test_is_operators.py": (
        "test_is_boolean",
        "test_is_null",
        "test_is_numeric",
        "test_is_present",
        "test_is_string",
    ),
    "test_numeric.py": tuple(
        f"test_numeric_{op}{path}"
        for op in (
            "equals",
            "greater_than",
            "greater_than_equals",
            "less_than",
            "less_than_equals",
        )
        for path in ("", "_path")
    ),
    "test_string_operators.py": tuple(
        f"test_string_{op}{path}"
        for op in ("equals", "greater_than", "greater_than_equals", "less_than", "less_than_equals")
        for path in ("", "_path")
    ),
    # test_timestamp_operators.py is not ported: its recording replaced every
    # timestamp of the inputs by "date", so the inputs cannot be rebuilt
}

CHOICE_CASES = [
    (f"v2/choice_operators/{module}", test)
    for module, tests in CHOICE_MODULES.items()
    for test in tests
]


def _operator(test: str) -> str:
    """``test_numeric_greater_than_path`` -> ``NumericGreaterThanPath``."""
    return "".join(word.capitalize() for word in test.removeprefix("test_").split("_"))


def _choice_definition(operator: str, literal: Json, use_literal: bool) -> Json:
    text = json.dumps(rec.template("choiceoperators/statemachines/template.json5"))
    text = text.replace("%ComparisonOperatorType%", operator)
    if use_literal:
        text = text.replace('"$.Value"', json.dumps(literal))
    return json.loads(text)


@pytest.mark.parametrize(("module", "test"), CHOICE_CASES, ids=[t for _, t in CHOICE_CASES])
async def test_recorded_choice_operator(module: str, test: str) -> None:
    rec.require_recordings()
    operator = _operator(test)
    use_literal = not operator.endswith("Path") or operator == "IsPresentPath"
    problems = []
    for index, case in enumerate(rec.recording(module, test)["cases"]):
        given = rec.decode(case["input"])
        definition = _choice_definition(operator, given["Value"], use_literal)
        machine = parse_definition(definition)
        clock = ManualClock()
        execution = Execution(
            arn="arn:aws:states:us-east-1:111111111111:execution:m:e",
            name="e",
            state_machine_arn="arn:aws:states:us-east-1:111111111111:stateMachine:m",
            state_machine_name="m",
            input_text=json.dumps(given),
            start_time=clock.time(),
        )
        outcome = await Interpreter(machine, clock=clock).run(execution)
        expected = rec.decode(case["output"])
        if isinstance(expected, list):
            expected = rec.decode(expected[0])
        if outcome.status != "SUCCEEDED" or outcome.output != expected:
            problems.append(f"case {index} {given}: recorded {expected}, got {outcome}")
    assert not problems, "\n".join(problems)


# -- definitions AWS refused or accepted ------------------------------------------------------

VALIDATION = "v2/test_sfn_api_validation.py"
VALIDATION_CASES = [
    ("test_validate_state_machine_definition_not_a_definition[EMPTY_STRING]", " "),
    ("test_validate_state_machine_definition_not_a_definition[EMPTY_DICT]", "{}"),
    *[
        (
            f"test_validate_state_machine_definition_type_{kind}[{name}]",
            f"validation/statemachines/{name.lower()}.json5",
        )
        for kind in ("standard", "express")
        for name in ("VALID_BASE_PASS", "INVALID_BASE_NO_STARTAT")
    ],
]


@pytest.mark.parametrize(
    ("test", "definition"), VALIDATION_CASES, ids=[t for t, _ in VALIDATION_CASES]
)
def test_recorded_validation(test: str, definition: str) -> None:
    """ValidateStateMachineDefinition's recorded diagnostics, field by field."""
    rec.require_recordings()
    recorded = rec.recording(VALIDATION, test)["validation_response"]["diagnostics"]
    text = json.dumps(rec.template(definition)) if definition.endswith(".json5") else definition
    ours = [problem.diagnostic() for problem in validate(text)]
    assert not rec.differences(recorded, ours)


@pytest.mark.parametrize(
    "name", ["NO_T", "NO_Z", "INVALID_DATE", "INVALID_TIME", "INVALID_ISO", "JSONATA"]
)
def test_recorded_invalid_wait_timestamp(name: str) -> None:
    """CreateStateMachine's recorded InvalidDefinition for a Wait state's bad Timestamp."""
    rec.require_recordings()
    recorded = rec.recording(SCEN, f"test_wait_timestamp_invalid[{name}]")["exception"]
    values = {
        "NO_T": "2016-12-05 21:29:29Z",
        "NO_Z": "2016-12-05T21:29:29",
        "INVALID_DATE": "2016-13-05T21:29:29Z",
        "INVALID_TIME": "2016-12-05T25:29:29Z",
        "INVALID_ISO": "05-12-2016T21:29:29Z",
        "JSONATA": "{% '2016-03-14T01:59:00Z' %}",
    }
    definition = _wait_until(values[name])(rec.template(_constants("scenarios")["WAIT_TIMESTAMP"]))
    with pytest.raises(DefinitionError) as caught:
        parse_definition(definition)
    assert recorded["exception_typename"] == "InvalidDefinition"
    assert recorded["exception_value"].endswith(f"CreateStateMachine operation: {caught.value}")
