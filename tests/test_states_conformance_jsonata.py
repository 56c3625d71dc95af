"""Variables (``Assign``) and JSONata mode against executions recorded on real AWS.

The same comparison as ``test_states_conformance`` (whole history, event by
event, and DescribeExecution's fields), over the recordings that exercise
workflow variables and JSONata and need no other AWS service. Each case
names the recording and the definition that ran: a template path, changed as
the recorded test changed it. The recorded values are facts read from the
copy in tests/data/stepfunctions (``states_recordings``); the table is ours.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from plugins.states.definition import validate
from tests import states_recordings as rec
from tests.test_states_conformance import Case, check_recorded

Json = Any

ASSIGN_BASE = "v2/assign/test_assign_base.py"
ASSIGN_REF = "v2/assign/test_assign_reference_variables.py"
QL_BASE = "v2/query_language/test_base_query_language.py"
QL_MIXED = "v2/query_language/test_mixed_query_language.py"
OUTPUT = "v2/outputdecl/test_output.py"
INTR = "v2/intrinsic_functions/"

A = "assign/statemachines/"
QL = "querylanguage/statemachines/"
OUT = "outputdecl/statemachines/"


def _path(name: str, folder: str = A) -> str:
    return f"{folder}{name.lower()}.json5"


def _set_output(value: Json) -> Callable[[Json], Json]:
    def patch(definition: Json) -> Json:
        definition["States"]["State0"]["Output"] = value
        return definition

    return patch


ASSIGN_CASES: list[Case] = [
    *[
        Case(ASSIGN_BASE, f"test_base_cases[{name}]", "assign", _path(name))
        for name in ("BASE_EMPTY", "BASE_CONSTANT_LITERALS", "BASE_PATHS", "BASE_VAR")
    ],
    Case(ASSIGN_BASE, "test_base_cases[BASE_SCOPE_MAP]", "assign", _path("BASE_SCOPE_MAP")),
    Case(
        ASSIGN_BASE,
        "test_base_parallel_cases[BASE_SCOPE_PARALLEL]",
        "assign",
        _path("BASE_SCOPE_PARALLEL"),
    ),
    *[
        Case(
            ASSIGN_BASE,
            f"test_assign_in_choice[{name}]",
            "assign",
            _path("CHOICE_CONDITION_JSONATA"),
        )
        for name in ("CONDITION_TRUE", "CONDITION_FALSE")
    ],
    *[
        Case(ASSIGN_REF, f"test_reference_assign[{name}]", "assign", _path(name))
        for name in (
            "BASE_REFERENCE_IN_PARAMETERS",
            "BASE_REFERENCE_IN_CHOICE",
            "BASE_REFERENCE_IN_WAIT",
            "BASE_REFERENCE_IN_ITERATOR_OUTER_SCOPE",
            "BASE_REFERENCE_IN_INPUTPATH",
            "BASE_REFERENCE_IN_OUTPUTPATH",
            "BASE_REFERENCE_IN_INTRINSIC_FUNCTION",
            "BASE_REFERENCE_IN_FAIL",
        )
    ],
    *[
        Case(ASSIGN_REF, f"test_undefined_reference[{name}]", "assign", _path(name))
        for name in (
            "BASE_UNDEFINED_OUTPUT",
            "BASE_UNDEFINED_OUTPUT_FIELD",
            "BASE_UNDEFINED_OUTPUT_MULTIPLE_STATES",
            "BASE_UNDEFINED_ASSIGN",
            "BASE_UNDEFINED_ARGUMENTS",
            "BASE_UNDEFINED_ARGUMENTS_FIELD",
        )
    ],
    *[
        Case(ASSIGN_REF, f"test_assign_from_value[{name}]", "assign", _path(name))
        for name in (
            "BASE_ASSIGN_FROM_PARAMETERS",
            "BASE_ASSIGN_FROM_RESULT",
            "BASE_ASSIGN_FROM_INTRINSIC_FUNCTION",
        )
    ],
    Case(
        ASSIGN_REF,
        "test_state_assign_evaluation_order[BASE_EVALUATION_ORDER_PASS_STATE]",
        "assign",
        _path("BASE_EVALUATION_ORDER_PASS_STATE"),
    ),
    *[
        Case(
            ASSIGN_REF,
            f"test_assign_in_choice_state[{name}]",
            "assign",
            _path("BASE_ASSIGN_IN_CHOICE"),
        )
        for name in ("CORRECT", "INCORRECT")
    ],
    Case(ASSIGN_REF, "test_assign_in_wait_state", "assign", _path("BASE_ASSIGN_IN_WAIT")),
    *[
        Case(ASSIGN_REF, f"test_reference_in_map_state[{name}]", "assign", _path(name))
        for name in (
            "MAP_STATE_REFERENCE_IN_INTRINSIC_FUNCTION",
            "MAP_STATE_REFERENCE_IN_ITEMS_PATH",
            "MAP_STATE_REFERENCE_IN_MAX_CONCURRENCY_PATH",
            "MAP_STATE_REFERENCE_IN_TOLERATED_FAILURE_PATH",
            "MAP_STATE_REFERENCE_IN_ITEM_SELECTOR",
        )
    ],
]

QUERY_LANGUAGE_CASES: list[Case] = [
    Case(
        QL_BASE, "test_base_query_language_field[JSON_PATH]", "ql", _path("BASE_PASS_JSONPATH", QL)
    ),
    Case(QL_BASE, "test_base_query_language_field[JSONATA]", "ql", _path("BASE_PASS_JSONATA", QL)),
    Case(
        QL_BASE,
        "test_query_language_field_override[JSONATA_OVERRIDE]",
        "ql",
        _path("BASE_PASS_JSONATA_OVERRIDE", QL),
    ),
    Case(
        QL_BASE,
        "test_query_language_field_override[JSONATA_OVERRIDE_DEFAULT]",
        "ql",
        _path("BASE_PASS_JSONATA_OVERRIDE_DEFAULT", QL),
    ),
    *[
        Case(QL_MIXED, f"test_variable_sampling[{name}]", "ql", _path(template, QL))
        for name, template in (
            ("JSONATA_ASSIGN_JSONPATH_REF", "JSONATA_ASSIGN_JSONPATH_REFERENCE"),
            ("JSONPATH_ASSIGN_JSONATA_REF", "JSONPATH_ASSIGN_JSONATA_REFERENCE"),
        )
    ],
    *[
        Case(QL_MIXED, f"test_output_to_state[{name}]", "ql", _path(name, QL))
        for name in ("JSONATA_OUTPUT_TO_JSONPATH", "JSONPATH_OUTPUT_TO_JSONATA")
    ],
]

OUTPUT_VALUES: dict[str, Json] = {
    "NULL": None,
    "INT": 0,
    "FLOAT": 0.1,
    "BOOL": True,
    "STR_LIT": "string literal",
    "JSONATA_EXPR": "{% $states.input %}",
    "LIST_EMPY": [],
    "LIST_RICH": [
        None,
        0,
        0.1,
        True,
        "string",
        [],
        "$nosuchvar",
        "$.no.such.path",
        "{% $states.input %}",
        {"key": "{% true %}"},
    ],
}

OUTPUT_CASES: list[Case] = [
    *[
        Case(OUTPUT, f"test_base_cases[{name}]", "output", _path(name, OUT))
        for name in ("BASE_EMPTY", "BASE_LITERALS", "BASE_EXPR", "BASE_DIRECT_EXPR")
    ],
    *[
        Case(
            OUTPUT,
            f"test_base_output_any_non_dict[{name}]",
            "output",
            _path("BASE_OUTPUT_ANY", OUT),
            _set_output(value),
        )
        for name, value in OUTPUT_VALUES.items()
    ],
    *[
        Case(
            OUTPUT,
            f"test_output_in_choice[{name}]",
            "output",
            _path("CHOICE_CONDITION_JSONATA", OUT),
        )
        for name in ("CONDITION_TRUE", "CONDITION_FALSE")
    ],
]

INTRINSIC_CASES: list[Case] = [
    Case(
        INTR + "test_array_jsonata.py",
        "test_array_partition",
        "intrinsic",
        "intrinsicfunctions/statemachines/array/array_partition_jsonata.json5",
    ),
    Case(
        INTR + "test_array_jsonata.py",
        "test_array_range",
        "intrinsic",
        "intrinsicfunctions/statemachines/array/array_range_jsonata.json5",
    ),
    Case(
        INTR + "test_json_manipulation_jsonata.py",
        "test_parse",
        "intrinsic",
        "intrinsicfunctions/statemachines/json_manipulation/parse_jsonata.json5",
    ),
    Case(
        INTR + "test_math_operations_jsonata.py",
        "test_math_random_seeded",
        "intrinsic",
        "intrinsicfunctions/statemachines/math_operations/math_random_seeded_jsonata.json5",
    ),
]

SCEN = "v2/scenarios/test_base_scenarios.py"


def _replace_text(old: str, new: str) -> Callable[[Json], Json]:
    """The definition's JSON text with ``old`` replaced, as the recorded test changed it."""

    def patch(definition: Json) -> Json:
        changed: Json = json.loads(json.dumps(definition).replace(old, new))
        return changed

    return patch


def _items_expression(literal: str) -> Callable[[Json], Json]:
    return _replace_text("_tbd_", "{% " + literal + " %}")


ITEMS_FAIL = {
    "number": "1",
    "string": "'string'",
    "boolean": "true",
    "object": "{'foo': 'bar'}",
    "null": "null",
}
ITEMS_VALUES = {
    "number": "1",
    "string": '"string"',
    "boolean": "true",
    "object": '{"foo": "bar"}',
    "null": "null",
}
#: The recorded test's Timestamp inputs (the recording replaced each by "date").
WAIT_TIMESTAMPS = {
    "SECONDS": "2016-03-14T01:59:00Z",
    "NANOSECONDS": "2016-03-05T21:29:29.243167252Z",
    "NO_T": "2016-12-05 21:29:29Z",
    "NO_Z": "2016-12-05T21:29:29",
    "INVALID_DATE": "2016-13-05T21:29:29Z",
    "INVALID_TIME": "2016-12-05T25:29:29Z",
    "INVALID_ISO": "05-12-2016T21:29:29Z",
}

SCENARIO_CASES: list[Case] = [
    Case(
        SCEN,
        "test_map_state_item_selector[MAP_STATE_ITEM_SELECTOR_JSONATA]",
        "scenarios",
        "MAP_STATE_ITEM_SELECTOR_JSONATA",
    ),
    *[
        Case(
            SCEN,
            f"test_map_state_items_eval_jsonata_fail[{name}]",
            "scenarios",
            "MAP_STATE_ITEMS_LITERAL",
            _items_expression(literal),
        )
        for name, literal in {**ITEMS_FAIL, "function": "$fn := function($x){$x}"}.items()
    ],
    *[
        Case(
            SCEN,
            f"test_map_state_items_eval_jsonata[{name}]",
            "scenarios",
            "MAP_STATE_ITEMS_LITERAL",
            _items_expression(literal),
        )
        for name, literal in (("empty", "[]"), ("singleton", "[0]"), ("mixed", "[1, 'two', 3]"))
    ],
    *[
        Case(
            SCEN,
            f"test_map_state_items_eval_jsonata_variable_sampling_fail[{name}]",
            "scenarios",
            "MAP_STATE_ITEMS_VARIABLE",
            _items_expression(literal),
        )
        for name, literal in ITEMS_FAIL.items()
    ],
    *[
        Case(SCEN, f"test_map_state_items_input_types[{name}]", "scenarios", "MAP_STATE_ITEMS")
        for name in ITEMS_VALUES
    ],
    *[
        Case(SCEN, f"test_map_state_items_input_array[{name}]", "scenarios", "MAP_STATE_ITEMS")
        for name in ("empty", "singleton", "mixed")
    ],
    *[
        Case(
            SCEN,
            f"test_map_state_items_variable_sampling[{name}]",
            "scenarios",
            "MAP_STATE_ITEMS_VARIABLE",
            _replace_text('"_tbd_"', literal),
        )
        for name, literal in ITEMS_VALUES.items()
    ],
    *[
        Case(
            SCEN,
            f"test_choice_unsorted_parameters_{sign}[CHOICE_STATE_UNSORTED_CHOICE_PARAMETERS_JSONATA]",
            "scenarios",
            "CHOICE_STATE_UNSORTED_CHOICE_PARAMETERS_JSONATA",
        )
        for sign in ("positive", "negative")
    ],
    Case(
        SCEN,
        "test_choice_condition_constant_jsonata",
        "scenarios",
        "CHOICE_CONDITION_CONSTANT_JSONATA",
    ),
    Case(
        SCEN,
        "test_choice_aws_docs_scenario[CHOICE_STATE_AWS_SCENARIO_JSONATA]",
        "scenarios",
        "CHOICE_STATE_AWS_SCENARIO_JSONATA",
    ),
    *[
        Case(SCEN, f"test_choice_singleton_composite[{name}]", "scenarios", name)
        for name in (
            "CHOICE_STATE_SINGLETON_COMPOSITE_JSONATA",
            "CHOICE_STATE_SINGLETON_COMPOSITE_LITERAL_JSONATA",
        )
    ],
    *[
        Case(
            SCEN,
            f"test_wait_timestamp_jsonata[{name}]",
            "scenarios",
            "WAIT_TIMESTAMP_JSONATA",
            input=json.dumps({"TimestampValue": value}),
        )
        for name, value in WAIT_TIMESTAMPS.items()
    ],
    Case(SCEN, "test_wait_seconds_jsonata", "scenarios", "WAIT_SECONDS_JSONATA"),
    Case(SCEN, "test_fail_error_jsonata", "scenarios", "RAISE_FAILURE_ERROR_JSONATA"),
    Case(SCEN, "test_fail_cause_jsonata", "scenarios", "RAISE_FAILURE_CAUSE_JSONATA"),
    *[
        Case(SCEN, f"test_escape_sequence_parsing[{name}]", "scenarios", name)
        for name in (
            "ESCAPE_SEQUENCES_JSONATA_COMPARISON_OUTPUT",
            "ESCAPE_SEQUENCES_JSONATA_COMPARISON_ASSIGN",
        )
    ],
]

EVAL = "v2/evaluate_jsonata/test_base_evaluate_expressions.py"
EVAL_MAP = "evaluatejsonata/statemachines/base_map.json5"
EVAL_PASS = "evaluatejsonata/statemachines/base_pass.json5"


def _update_start(fields: dict[str, Json]) -> Callable[[Json], Json]:
    def patch(definition: Json) -> Json:
        definition["States"]["Start"].update(fields)
        return definition

    return patch


NUMBER = "{% $variable := 1 %}"
STATE_INPUT = "{% $states.input.input_value %}"
EVAL_MAP_FIELDS: dict[str, dict[str, Json]] = {
    "ITEMS": {"Items": [1, '{% $number("2") %}', 3]},
    "ITEMS_DOUBLE_QUOTES": {"Items": [1, "{% $number('2') %}", 3]},
    "MAX_CONCURRENCY": {"MaxConcurrency": NUMBER},
    "TOLERATED_FAILURE_PERCENTAGE": {"ToleratedFailurePercentage": NUMBER},
    "TOLERATED_FAILURE_COUNT": {"ToleratedFailureCount": NUMBER},
}
EVAL_REGEX = {
    "BASE": r'{% $contains("hello$world", /^hello\$/) %}',
    "BASE_FALSE": r'{% $contains("hello$world", /^hello\ /) %}',
    "BASE_SINGLE_QUOTE": r"{% $contains('hello$world', /^hello\$/) %}",
    "BASE_SINGLE_QUOTE_FALSE": r"{% $contains('hello$world', /^hello\ /) %}",
}
EVAL_CASES: list[Case] = [
    *[
        Case(EVAL, f"test_base_map[{name}]", "eval", EVAL_MAP, _update_start(fields))
        for name, fields in EVAL_MAP_FIELDS.items()
    ],
    *[
        Case(
            EVAL,
            f"test_base_map_from_input[{name}]",
            "eval",
            EVAL_MAP,
            _update_start({field: STATE_INPUT}),
        )
        for name, field in (
            ("ITEMS", "Items"),
            ("MAX_CONCURRENCY", "MaxConcurrency"),
            ("TOLERATED_FAILURE_PERCENTAGE", "ToleratedFailurePercentage"),
            ("TOLERATED_FAILURE_COUNT", "ToleratedFailureCount"),
        )
    ],
    *[
        Case(
            EVAL,
            f"test_base_jsonata_regular_expressions[{name}]",
            "eval",
            EVAL_PASS,
            _update_start({"Output": expression}),
        )
        for name, expression in EVAL_REGEX.items()
    ],
    Case(
        EVAL,
        "test_merge_with_dynamic_args",
        "eval",
        EVAL_PASS,
        _update_start({"Output": "{% $merge([$states.input.part1, $states.input.part2]) %}"}),
    ),
]

CASES = [
    *ASSIGN_CASES,
    *QUERY_LANGUAGE_CASES,
    *OUTPUT_CASES,
    *INTRINSIC_CASES,
    *SCENARIO_CASES,
    *EVAL_CASES,
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
async def test_recorded_execution(case: Case) -> None:
    await check_recorded(case)


# -- definitions AWS refused or accepted --------------------------------------------------

VALIDATION = "v2/test_sfn_api_validation.py"
VALIDATION_CASES = [
    f"test_validate_state_machine_definition_type_{kind}[{name}]"
    for kind in ("standard", "express")
    for name in ("VALID_QUERY_LANGUAGE_PASS", "INVALID_DOWNGRADE_QUERY_LANGUAGE")
]


@pytest.mark.parametrize("test", VALIDATION_CASES)
def test_recorded_validation(test: str) -> None:
    """ValidateStateMachineDefinition's recorded diagnostics for query languages."""
    rec.require_recordings()
    name = test.split("[", 1)[1].rstrip("]")
    recorded = rec.recording(VALIDATION, test)["validation_response"]["diagnostics"]
    definition = rec.template(f"validation/statemachines/{name.lower()}.json5")
    ours = [problem.diagnostic() for problem in validate(json.dumps(definition))]
    assert not rec.differences(recorded, ours), (recorded, ours)
