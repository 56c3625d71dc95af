"""TestState over HTTP (boto3 against the endpoint), held to AWS's recorded answers.

Every case below is one TestState request of LocalStack's AWS-validated
``v2/test_state`` tests, rebuilt from the recorded test (its template, input,
inspection level, mock, configuration); its expected answer is the recording,
read from the copy in tests/data/stepfunctions (``tests/states_recordings.py``).
Task states without a mock call this runtime's function resources (``hello``
answers what the recorded Lambda answered). JSON text (``output`` and each
``inspectionData`` step) is compared decoded; Lambda's ``SdkHttpMetadata`` and
``SdkResponseMetadata`` are left out on both sides (LocalStack skips them too).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from pipelines.api import ApiServer, served_services
from pipelines.config import build_runtime, load_config
from pipelines.runtime import Runtime

from . import states_recordings as rec
from .apiclient import aws_call, aws_refusal, boto
from .recorder import plugin_manager

PLUGINS = plugin_manager()
ROLE = "arn:aws:iam::000000000000:role/sfn"
T = "test_state/statemachines/"
SCENARIOS = "v2/test_state/test_test_state_scenarios.py"
CONFIGURATION = "v2/test_state/test_state_configuration.py"
MOCKS = "v2/test_state/test_test_state_mock_scenarios.py"
MACHINES = "v2/test_state/test_test_state_machine_scenarios.py"
CONTEXT = "v2/test_state/test_state_context_object.py"
VALIDATION = "v2/test_state/test_state_mock_validation.py"

HELLO = json.dumps({"Value": "HelloWorld"})
NESTED = json.dumps(
    {
        "initialData": {"fieldFromInput": "value from input", "otherField": "other"},
        "unrelatedData": {"someOtherField": 1234},
    }
)
VALUES = json.dumps({"Values": ["first", "second", "third"]})
MOCK_ERROR = {"errorOutput": {"error": "MockException", "cause": "Mock the cause of the error."}}
MOCK_ERROR_2 = {"errorOutput": {"error": "MockException", "cause": "Mock the error cause."}}
LEVELS = ("INFO", "DEBUG", "TRACE")
_FULL_CONTEXT = {
    "Execution": {
        "Id": "arn:aws:states:::execution:MyStateMachine:execution-name-12345",
        "Input": {
            "input-value": 0,
            "message": "test data",
            "values": ["charizard", "pikachu", "bulbasaur"],
        },
        "Name": "execution-name-12345",
        "RoleArn": "arn:aws:iam:::role/StepFunctionsRole",
        "StartTime": "2025-01-15T10:30:00.000Z",
    },
    "State": {"EnteredTime": "2025-01-15T10:30:01.500Z", "Name": "MyTaskState", "RetryCount": 0},
    "StateMachine": {
        "Id": "arn:aws:states:::stateMachine:MyStateMachine",
        "Name": "MyStateMachine",
    },
}
FULL_CONTEXT = json.dumps(_FULL_CONTEXT)
TASK_CONTEXT = json.dumps(_FULL_CONTEXT | {"Task": {"Token": "abcd123"}})

Request = dict[str, Any]


def tpl(name: str) -> dict[str, Any]:
    return rec.template(f"{T}{name}.json5")


def definition(name: str, **changes: Any) -> str:
    body = tpl(name)
    body.update(changes)
    return json.dumps(body)


def context_state(template: str, literal: str) -> str:
    """The ``TestState`` state of a context-object template, its placeholder filled."""
    machine = rec.template(f"context_object/statemachines/{template}.json5")
    text = json.dumps(machine["States"]["TestState"])
    return text.replace("%CONTEXT_OBJECT_LITERAL_PLACEHOLDER%", literal)


# -- the recorded requests: (module, test, recorded key, request) ---------------------------

Case = tuple[str, str, str, Callable[[], Request]]
CASES: list[Case] = []


def case(module: str, test: str, key: str, request: Callable[[], Request]) -> None:
    CASES.append((module, test, key, request))


_BASE = [
    ("BASE_PASS_STATE", "base_pass_state", HELLO),
    ("BASE_RESULT_PASS_STATE", "base_result_pass_state", HELLO),
    ("IO_PASS_STATE", "io_pass_state", NESTED),
    ("IO_RESULT_PASS_STATE", "io_result_pass_state", NESTED),
    ("BASE_FAIL_STATE", "base_fail_state", HELLO),
    ("BASE_SUCCEED_STATE", "base_succeed_state", HELLO),
    ("BASE_CHOICE_STATE", "base_choice_state", json.dumps({"type": "Private", "value": 22})),
]
for _level in LEVELS:
    for _id, _name, _input in _BASE:
        case(
            SCENARIOS,
            f"test_base_inspection_level_{_level.lower()}[{_id}]",
            "test_case_response",
            lambda n=_name, i=_input, lv=_level: {
                "definition": definition(n),
                "roleArn": ROLE,
                "input": i,
                "inspectionLevel": lv,
            },
        )
    case(
        SCENARIOS,
        f"test_base_lambda_task_state[{_level}]",
        "test_case_response",
        lambda lv=_level: {
            "definition": definition(
                "base_lambda_task_state",
                Resource="arn:aws:lambda:us-east-1:000000000000:function:hello",
            ),
            "roleArn": ROLE,
            "input": json.dumps({"inputData": "HelloWorld"}),
            "inspectionLevel": lv,
        },
    )
    case(
        SCENARIOS,
        f"test_base_lambda_service_task_state[{_level}]",
        "test_case_response",
        lambda lv=_level: {
            "definition": definition("base_lambda_service_task_state"),
            "roleArn": ROLE,
            "input": json.dumps({"FunctionName": "identity", "Payload": None}),
            "inspectionLevel": lv,
        },
    )
    for _key in ("test_catch_mock_exception_response", "catch_task_failed_response"):
        case(
            SCENARIOS,
            f"test_state_task_catch_error[{_level}]",
            _key,
            lambda lv=_level, k=_key: {
                "definition": definition("base_task_state_catch"),
                "roleArn": ROLE,
                "input": HELLO,
                "inspectionLevel": lv,
                "mock": MOCK_ERROR
                if k.startswith("test_catch")
                else {"errorOutput": {"error": "States.TaskFailed", "cause": "The task failed."}},
            },
        )

_NUMBER = "{% $variable := 1 %}"  # EvaluateJsonataTemplate.JSONATA_NUMBER_EXPRESSION
_MAP_FIELDS = {
    "MAX_CONCURRENCY": "MaxConcurrency",
    "TOLERATED_FAILURE_PERCENTAGE": "ToleratedFailurePercentage",
    "TOLERATED_FAILURE_COUNT": "ToleratedFailureCount",
}
for _id, _field in _MAP_FIELDS.items():
    for _test in [f"test_base_map_state_inspect_trace[{_id}]"] + [
        f"test_base_map_state_inspect[{_id}-{lv}]" for lv in LEVELS
    ]:
        case(
            SCENARIOS,
            _test,
            "test_case_response",
            lambda f=_field, t=_test: {
                "definition": definition("base_map_state", **{f: _NUMBER}),
                "roleArn": ROLE,
                "input": json.dumps({"Values": [1, 2, 3]}),
                "inspectionLevel": "TRACE" if "trace[" in t else t.rsplit("-", 1)[1][:-1],
                "mock": {"result": json.dumps([1, 1, 1])},
            },
        )

_BLOG = [
    ("small_purchase_approval_required_response", "Approval Required", {"cost": 9}, None),
    ("large_purchase_approval_required_response", "Approval Required", {"cost": 10}, None),
    (
        "large_purchase_ask_for_approval_response",
        "Ask for Approval",
        {"cost": 10},
        '{"approval": true }',
    ),
    (
        "check_approval_granted_response",
        "Check Approval",
        {"approval": True, "approval_code": "2387462", "approved_by": "Mary"},
        None,
    ),
    ("check_approval_denied_response", "Check Approval", {"approval": False}, None),
]


def _blog(state: str, given: Any, mock: str | None) -> Request:
    machine = tpl("localstack_blogpost_scenario_state_machine")
    machine["States"]["Ask for Approval"]["Arguments"]["ApiEndpoint"] = (
        "example.execute-api.us-east-1.amazonaws.com"
    )
    request: Request = {
        "definition": json.dumps(machine),
        "input": json.dumps(given),
        "stateName": state,
        "inspectionLevel": "TRACE",
    }
    if mock is not None:
        request["mock"] = {"result": mock}
    return request


for _key, _state, _given, _mock in _BLOG:
    case(
        SCENARIOS,
        "test_localstack_blogpost_scenario",
        _key,
        lambda s=_state, g=_given, m=_mock: _blog(s, g, m),
    )
case(
    SCENARIOS,
    "test_base_lambda_service_task_state_no_role_arn_validation",
    "validation_exception",
    lambda: {
        "definition": definition("base_lambda_service_task_state"),
        "input": json.dumps({"FunctionName": "identity", "Payload": None}),
        "inspectionLevel": "TRACE",
    },
)
for _id, _template, _variables in [
    ("base_expressions", "base_expr", {"var_input_value": "test_value", "var_constant_1": 10}),
    ("empty_variables", "base_literals", {}),
]:
    case(
        SCENARIOS,
        f"test_state_with_variables[{_id}]",
        "test_case_response",
        lambda t=_template, v=_variables: {
            "definition": json.dumps(rec.template(f"outputdecl/statemachines/{t}.json5")),
            "stateName": "State0",
            "input": json.dumps({"input_values": [1, 2, 3]}),
            "variables": json.dumps(v),
            "inspectionLevel": "TRACE",
        },
    )

# -- stateConfiguration ----------------------------------------------------------------------

for _level in LEVELS:
    for _id, _name in [
        ("BASE_MAP_STATE", "base_map_state"),
        ("BASE_MAP_STATE_CATCH", "base_map_state_catch"),
        ("BASE_MAP_STATE_RETRY", "base_map_state_retry"),
        ("MAP_TASK_STATE", "map_task_state"),
    ]:
        for _key, _failures, _result in [
            ("below_tolerated_failure", 0, [1, 1, 1]),
            ("exceeds_tolerated_failure", 2, [0, 0, 1]),
        ]:
            case(
                CONFIGURATION,
                f"test_map_state_failure_count[{_level}-{_id}]",
                _key,
                lambda n=_name, lv=_level, f=_failures, r=_result: {
                    "definition": definition(n),
                    "roleArn": ROLE,
                    "input": VALUES,
                    "stateConfiguration": {"mapIterationFailureCount": f},
                    "inspectionLevel": lv,
                    "mock": {"result": json.dumps(r)},
                },
            )
    case(
        CONFIGURATION,
        f"test_map_state_error_caused_by_state[{_level}]",
        "test_case_response",
        lambda lv=_level: {
            "definition": definition("base_map_state"),
            "roleArn": ROLE,
            "input": json.dumps({"Values": [1, 1, 1]}),
            "stateConfiguration": {"errorCausedByState": "TestState"},
            "inspectionLevel": lv,
            "mock": MOCK_ERROR,
        },
    )
    for _key, _failures in [("below_tolerated_failure", 0), ("exceeds_tolerated_failure", 2)]:
        case(
            CONFIGURATION,
            f"test_state_configuration_map_iteration_failure_count_with_state_error[{_level}]",
            _key,
            lambda lv=_level, f=_failures: {
                "definition": definition("base_map_state"),
                "roleArn": ROLE,
                "input": VALUES,
                "stateConfiguration": {
                    "mapIterationFailureCount": f,
                    "errorCausedByState": "TestState",
                },
                "inspectionLevel": lv,
                "mock": MOCK_ERROR_2,
            },
        )
    for _key, _failures in [("below_tolerated_failure", 0), ("exceeds_tolerated_failure", 2)]:
        case(
            CONFIGURATION,
            f"test_state_machine_with_state_error[{_level}]",
            _key,
            lambda lv=_level, f=_failures: {
                "definition": definition("base_map_state_machine"),
                "stateName": "State0",
                "roleArn": ROLE,
                "input": VALUES,
                "stateConfiguration": {
                    "mapIterationFailureCount": f,
                    "errorCausedByState": "HandleItem",
                },
                "inspectionLevel": lv,
                "mock": MOCK_ERROR_2,
            },
        )
    case(
        CONFIGURATION,
        f"test_state_machine_configuration_map_iteration_item_reader[{_level}]",
        "test_case_response",
        lambda lv=_level: {
            "definition": definition("map_item_reader_state_machine"),
            "stateName": "State0",
            "roleArn": ROLE,
            "input": json.dumps({"Bucket": "test-bucket", "Key": "test-key"}),
            "stateConfiguration": {"mapItemReaderData": json.dumps([1, 2, 3])},
            "inspectionLevel": lv,
            "mock": {"result": json.dumps([1, 4, 9])},
        },
    )
    for _key, _failures in [("below_tolerated_failure", 0), ("exceeds_tolerated_failure", 2)]:
        case(
            CONFIGURATION,
            f"test_state_machine_configuration_item_reader_with_error[{_level}]",
            _key,
            lambda lv=_level, f=_failures: {
                "definition": definition("map_item_reader_state_machine"),
                "stateName": "State0",
                "roleArn": ROLE,
                "input": json.dumps({"Bucket": "test-bucket", "Key": "test-key"}),
                "stateConfiguration": {
                    "mapIterationFailureCount": f,
                    "errorCausedByState": "HandleItem",
                    "mapItemReaderData": json.dumps([1, 2, 3]),
                },
                "inspectionLevel": lv,
                "mock": MOCK_ERROR_2,
            },
        )
for _level in ("DEBUG", "TRACE"):
    for _key, _count in [
        ("below_tolerated_retry_count_with_backoff", 4),
        ("exceeds_tolerated_retry_count", 5),
    ]:
        case(
            CONFIGURATION,
            f"test_state_configuration_retrier_retry_count[{_level}]",
            _key,
            lambda lv=_level, c=_count: {
                "definition": definition("base_task_state_retry"),
                "roleArn": ROLE,
                "input": VALUES,
                "stateConfiguration": {"retrierRetryCount": c},
                "inspectionLevel": lv,
                "mock": MOCK_ERROR,
            },
        )

# -- mocks -------------------------------------------------------------------------------------

case(
    MOCKS,
    "test_base_lambda_service_task_mock_is_not_json_string",
    "validation-exception",
    lambda: {
        "definition": definition("base_lambda_service_task_state"),
        "input": json.dumps({"FunctionName": "f", "Payload": None}),
        "inspectionLevel": "INFO",
        "mock": {"result": "not JSON string", "fieldValidationMode": "NONE"},
    },
)
case(
    MOCKS,
    "test_base_lambda_service_task_mock_success",
    "test_case_response",
    lambda: {
        "definition": definition("base_lambda_service_task_state"),
        "input": json.dumps({"FunctionName": "f", "Payload": None}),
        "inspectionLevel": "INFO",
        "mock": {
            "result": json.dumps(
                {"Payload": "function output", "SdkHttpMetadata": {"HttpStatusCode": 200}}
            )
        },
    },
)
for _id, _name in [
    ("base", "base_dynamodb_service_task_state"),
    ("io", "io_dynamodb_service_task_state"),
    ("io_output_path", "io_output_path_dynamodb_service_task_state"),
]:
    case(
        MOCKS,
        f"test_io_dynamodb_service_task_mock_success[{_id}]",
        "test_case_response",
        lambda n=_name: {
            "definition": definition(n),
            "input": json.dumps(
                {"TableName": "table", "Item": {"data": {"S": "HelloWorld"}, "id": {"S": "id1"}}}
            ),
            "inspectionLevel": "INFO",
            "mock": {"result": json.dumps({"SdkHttpMetadata": {"HttpStatusCode": 200}})},
        },
    )
case(
    MOCKS,
    "test_put_events_mock_success",
    "test_case_response",
    lambda: {
        "definition": definition("base_events_put_events"),
        "input": json.dumps(
            {"Entries": [{"Detail": "detail", "DetailType": "detail_type", "Source": "source"}]}
        ),
        "inspectionLevel": "INFO",
        "mock": {"result": json.dumps({"Entries": [{"EventId": "a-long-uid"}]})},
    },
)
case(
    MOCKS,
    "test_send_sqs_message_success",
    "test_case_response",
    lambda: {
        "definition": definition("base_sqs_send_message"),
        "input": json.dumps({"QueueUrl": "queue_url", "MessageBody": "message_body"}),
        "inspectionLevel": "INFO",
        "mock": {"result": json.dumps({"MD5OfMessageBody": "md5", "MessageId": "a-long-uid"})},
    },
)
case(
    MOCKS,
    "test_sfn_start_execution_success",
    "test_case_response",
    lambda: {
        "definition": definition("base_sfn_start_execution"),
        "input": json.dumps(
            {
                "stateMachineArn": "arn:aws:states:us-east-1:000000000000:stateMachine:TargetStateMachine",
                "targetInput": None,
                "name": "TestStartTarget",
            }
        ),
        "inspectionLevel": "INFO",
        "mock": {
            "result": json.dumps(
                {
                    "ExecutionArn": "arn:aws:states:us-east-1:000000000000:execution:"
                    "TargetStateMachine:TestStartTarget",
                    "StartDate": "2025-01-01T00:00:00",
                }
            )
        },
    },
)
_PARALLEL = [{"branch1": "result"}, {"branch2": "result"}]
for _level in LEVELS:
    for _test, _name, _input in [
        ("test_base_parallel_state_mock_success", "base_parallel_state", {"key": "value"}),
        (
            "test_io_parallel_state_mock_success",
            "io_parallel_state",
            {"parallelInput": {"data": "input_value"}},
        ),
        (
            "test_io_jsonata_parallel_state_mock_success",
            "io_jsonata_parallel_state",
            {"parallelInput": {"data": "input_value"}},
        ),
    ]:
        case(
            MOCKS,
            f"{_test}[{_level}]",
            "test_case_response",
            lambda n=_name, i=_input, lv=_level: {
                "definition": definition(n),
                "input": json.dumps(i),
                "inspectionLevel": lv,
                "mock": {"result": json.dumps(_PARALLEL)},
            },
        )

# -- stateName in a whole machine ---------------------------------------------------------------

for _level in LEVELS:
    for _id, _name, _state in [
        ("BASE_PASS_STATE_MACHINE", "base_pass_state_machine", "State0"),
        ("BASE_FAIL_STATE_MACHINE", "base_fail_state_machine", "State0"),
        ("BASE_MAP_STATE_MACHINE", "base_map_state_machine", "HandleItem"),
    ]:
        case(
            MACHINES,
            f"test_base_state_name[{_level}-{_id}]",
            "test_case_response",
            lambda n=_name, s=_state, lv=_level: {
                "definition": definition(n),
                "stateName": s,
                "input": HELLO,
                "inspectionLevel": lv,
            },
        )
    for _state in ("State0", "State1"):
        case(
            MACHINES,
            f"test_base_state_name_multi_state[{_level}-{_state}]",
            "test_case_response",
            lambda s=_state, lv=_level: {
                "definition": definition("base_multi_state_machine"),
                "stateName": s,
                "input": HELLO,
                "inspectionLevel": lv,
            },
        )
for _id, _state in [("dne", "dne"), ("invalid", '"invalid"')]:
    case(
        MACHINES,
        f"test_base_state_name_validation_failures[{_id}]",
        "exception",
        lambda s=_state: {
            "definition": definition("base_pass_state_machine"),
            "stateName": s,
            "input": HELLO,
            "inspectionLevel": "INFO",
        },
    )
case(
    MACHINES,
    "test_state_name_invalid_state_definition",
    "validation_exception",
    lambda: {
        "definition": definition("base_invalid_state_definition"),
        "stateName": "ExistingButInvalidState",
        "input": HELLO,
        "inspectionLevel": "INFO",
    },
)

# -- the context object ---------------------------------------------------------------------

_LITERALS = {
    "ALL": "$$",
    "EXECUTION_INPUT": "$$.Execution.Input",
    "EXECUTION_INPUT_VALUES": "$$.Execution.Input.values",
}
for _id, _literal in _LITERALS.items():
    case(
        CONTEXT,
        f"test_state_task_context_object[{_id}]",
        "test_case_response",
        lambda lit=_literal: {
            "definition": context_state("context_object_result_selector", lit),
            "input": json.dumps(
                {"FunctionName": "lambda_function_name", "Payload": {"input-value": 0}}
            ),
            "inspectionLevel": "TRACE",
            "context": FULL_CONTEXT,
            "mock": {"result": json.dumps({"pokemon": ["charizard", "pikachu", "bulbasaur"]})},
        },
    )
    case(
        CONTEXT,
        f"test_state_map_context_object[{_id}]",
        "test_case_response",
        lambda lit=_literal: {
            "definition": context_state("context_object_items_path", lit),
            "input": json.dumps(["fire", "electricity", "grass"]),
            "inspectionLevel": "TRACE",
            "context": FULL_CONTEXT,
            "mock": {"result": json.dumps(["CHARIZARD", "PIKACHU", "BULBASAUR"])},
        },
    )


def _wait_task() -> Request:
    state = tpl("io_sqs_service_task_wait")
    state["Parameters"]["QueueUrl"] = "https://sqs.us-east-1.amazonaws.com/000000000000/test-queue"
    return {
        "definition": json.dumps(state),
        "inspectionLevel": "TRACE",
        "context": TASK_CONTEXT,
        "mock": {"result": json.dumps({"pokemon": ["charizard", "pikachu", "bulbasaur"]})},
    }


case(CONTEXT, "test_state_wait_task_context_object", "test_case_response", _wait_task)
for _id, _template, _context in [
    ("TOKEN_TASK_NOT_SYNC", "context_object_result_selector", TASK_CONTEXT),
    ("INVALID_STATE_PASS", "context_object_input_path", FULL_CONTEXT),
]:
    case(
        CONTEXT,
        f"test_state_context_object_invalid_states[{_id}]",
        "exception",
        lambda t=_template, c=_context: {
            "definition": context_state(t, "$$"),
            "input": json.dumps(["fire", "electricity", "grass"]),
            "inspectionLevel": "TRACE",
            "context": c,
            "mock": {"result": json.dumps({"pokemon": ["CHARIZARD", "PIKACHU", "BULBASAUR"]})},
        },
    )
for _id, _context_object in [
    ("INVALID_EXECUTION_ID_TYPE", {"Execution": {"Id": 1}}),
    ("INVALID_MAP", {"Map": {}}),
    ("INVALID_EXECUTION_FIELD", {"Execution": {"pokemon": "squirtle"}}),
    ("INVALID_FIELD", {"Pokedex": {}}),
]:
    case(
        CONTEXT,
        f"test_state_context_object_validation_failures[{_id}]",
        "exception",
        lambda c=_context_object: {
            "definition": definition("base_sfn_start_execution"),
            "input": json.dumps(
                {"stateMachineArn": "arn", "targetInput": None, "name": "exec_name"}
            ),
            "inspectionLevel": "TRACE",
            "context": json.dumps(c),
            "mock": {"result": json.dumps({"ExecutionArn": "exec_arn", "StartDate": "2025-01-01"})},
        },
    )
for _id, _context_object in [
    ("EMPTY_OBJECTS", {"Execution": {}, "State": {}, "StateMachine": {}}),
    ("EMPTY", {}),
]:
    case(
        CONTEXT,
        f"test_state_context_object_edge_cases[{_id}]",
        "test_case_response",
        lambda c=_context_object: {
            "definition": context_state("context_object_result_selector", "$$"),
            "input": json.dumps(
                {"FunctionName": "lambda_function_name", "Payload": {"input-value": 0}}
            ),
            "inspectionLevel": "TRACE",
            "context": json.dumps(c),
            "mock": {"result": json.dumps({"pokemon": "pikachu"})},
        },
    )

# -- what TestState refuses ---------------------------------------------------------------------

for _mock_id, _mock_value in [
    ("mock_result", {"result": json.dumps({"mock": "the unmockable"})}),
    ("mock_error_output", {"errorOutput": {"error": "Error", "cause": "Cause"}}),
]:
    for _id, _name in [
        ("PassState", "base_pass_state"),
        ("FailState", "base_fail_state"),
        ("SucceedState", "base_succeed_state"),
    ]:
        case(
            VALIDATION,
            f"test_state_type_does_not_accept_mock[{_mock_id}-{_id}]",
            "validation_exception",
            lambda n=_name, m=_mock_value: {
                "definition": definition(n),
                "inspectionLevel": "TRACE",
                "mock": m,
            },
        )
for _id, _name in [
    ("MapState", "base_map_state"),
    ("MapTaskState", "map_task_state"),
    ("ParallelState", "base_parallel_state"),
]:
    case(
        VALIDATION,
        f"test_state_type_requires_mock[{_id}]",
        "validation_exception",
        lambda n=_name: {"definition": definition(n), "inspectionLevel": "TRACE"},
    )
_VALIDATIONS: list[tuple[str, Callable[[], Request]]] = [
    (
        "test_both_mock_result_and_mock_error_output_are_set",
        lambda: {
            "definition": definition("base_lambda_service_task_state"),
            "inspectionLevel": "TRACE",
            "mock": {
                "result": json.dumps({"mock": "response"}),
                "errorOutput": {"error": "Error", "cause": "Cause"},
            },
        },
    ),
    (
        "test_reveal_secrets_is_true_and_mock_result_is_set",
        lambda: {
            "definition": definition("base_lambda_service_task_state"),
            "inspectionLevel": "TRACE",
            "mock": {"result": json.dumps({"mock": "response"})},
            "revealSecrets": True,
        },
    ),
    (
        "test_mock_result_is_not_array_on_map_state_without_result_writer",
        lambda: {
            "definition": definition("base_map_state"),
            "inspectionLevel": "TRACE",
            "mock": {"result": json.dumps({"mock": "array is expected"})},
        },
    ),
    (
        "test_mock_result_is_not_object_on_map_state_with_result_writer",
        lambda: {
            "definition": definition("base_map_state_result_writer"),
            "inspectionLevel": "TRACE",
            "mock": {"result": json.dumps(["object is expected"])},
        },
    ),
    (
        "test_mock_result_is_not_array_on_parallel_state",
        lambda: {
            "definition": definition("base_parallel_state"),
            "inspectionLevel": "TRACE",
            "mock": {"result": json.dumps({"mock": "array is expected"})},
        },
    ),
    (
        "test_mock_result_array_size_mismatch_on_parallel_state",
        lambda: {
            "definition": definition("base_parallel_state"),
            "inspectionLevel": "TRACE",
            "mock": {"result": json.dumps([{"branch1": "result"}])},
        },
    ),
    (
        "test_parallel_state_empty_branches",
        lambda: {
            "definition": json.dumps({"Type": "Parallel", "Branches": [], "End": True}),
            "inspectionLevel": "TRACE",
            "mock": {"result": json.dumps([])},
        },
    ),
    (
        "test_map_iteration_failure_count_without_mock",
        lambda: {
            "definition": definition("base_map_state"),
            "roleArn": ROLE,
            "stateConfiguration": {"mapIterationFailureCount": 0},
        },
    ),
    (
        "test_map_iteration_failure_count_exceeds_mock_result_items",
        lambda: {
            "definition": definition("base_map_state"),
            "roleArn": ROLE,
            "input": json.dumps({"Values": [1, 1, 1]}),
            "stateConfiguration": {"mapIterationFailureCount": 4},
            "mock": {"result": json.dumps([1, 1, 1])},
        },
    ),
]
for _test, _request in _VALIDATIONS:
    case(VALIDATION, _test, "validation_exception", _request)


# -- running them ---------------------------------------------------------------------------------

RESOURCES = """
resources:
  hello: {type: function, function: "tests.states_functions:hello"}
  identity: {type: function, function: "tests.states_functions:identity"}
"""


@pytest.fixture
async def endpoint(tmp_path: Path) -> AsyncIterator[tuple[Runtime, ApiServer]]:
    config = tmp_path / "pipeline.yaml"
    config.write_text(RESOURCES)
    runtime = await build_runtime(
        load_config([config]), state_path=tmp_path / "state.db", plugins=PLUGINS
    )
    server = ApiServer(runtime, served_services(PLUGINS), "127.0.0.1", 0)
    await server.start()
    try:
        async with runtime:
            yield runtime, server
    finally:
        await server.close()


_LEFT_OUT = frozenset({"ResponseMetadata", "SdkHttpMetadata", "SdkResponseMetadata"})


def _plain(value: Any) -> Any:
    """An answer as compared: JSON text decoded, what neither side compares left out."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in _LEFT_OUT:
                continue
            if key == "output":
                item = rec.decode(item)
            if key == "inspectionData" and isinstance(item, dict):
                item = {k: rec.decode(v) for k, v in item.items()}
            out[key] = _plain(item)
        return out
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _recorded(module: str, test: str, key: str) -> Any:
    recorded = rec.recording(module, test)[key]
    return json.loads(json.dumps(recorded).replace("111111111111", "000000000000"))


@pytest.mark.parametrize(
    ("module", "test", "key", "request_of"),
    CASES,
    ids=[f"{test}:{key}" for _, test, key, _ in CASES],
)
async def test_recorded_test_state(
    endpoint: tuple[Runtime, ApiServer],
    module: str,
    test: str,
    key: str,
    request_of: Callable[[], Request],
) -> None:
    rec.require_recordings()
    _, server = endpoint
    sfn = boto("stepfunctions", server.url, inject_host_prefix=False)  # TestState: sync-HOST on AWS
    recorded = _recorded(module, test, key)
    request = request_of()
    if "exception_typename" in recorded:  # recorded as botocore's exception's text
        error = await aws_refusal(sfn, "test_state", **request)
        assert isinstance(error, botocore.exceptions.ClientError)
        assert error.response["Error"]["Code"] == recorded["exception_typename"]
        assert rec.differences(recorded["exception_value"], str(error)) == []
        return
    if "Error" in recorded:
        refusal = (await aws_refusal(sfn, "test_state", **request)).response
        assert refusal["Error"]["Code"] == recorded["Error"]["Code"]
        assert refusal["Error"]["Message"] == recorded["Error"]["Message"]
        assert refusal["ResponseMetadata"]["HTTPStatusCode"] == 400
        return
    answer = await aws_call(sfn, "test_state", **request)
    differences = rec.differences(_plain(recorded), _plain(answer))
    assert differences == [], differences


def test_every_recorded_case_is_listed_once() -> None:
    assert len({(m, t, k) for m, t, k, _ in CASES}) == len(CASES)
