"""The stepfunctions API over HTTP: boto3 against an ApiServer on a real port.

Expected answers are AWS's, as LocalStack's AWS-validated snapshot tests
recorded them (``test_sfn_api``, ``test_sfn_api_express``), read from the
copy in tests/data/stepfunctions (``tests/states_recordings.py``): ARNs,
names and dates are placeholders there, which match any value of ours.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from pipelines.api import ApiServer, served_services
from pipelines.runtime import Runtime

from . import states_recordings as rec
from .apiclient import aws_call, aws_refusal, boto
from .recorder import plugin_manager

PLUGINS = plugin_manager()
API = "v2/test_sfn_api.py"
EXPRESS_API = "v2/test_sfn_api_express.py"
ROLE = "arn:aws:iam::000000000000:role/sfn"
#: BaseTemplate.BASE_PASS_RESULT, the definition the recorded tests create
PASS = {
    "Comment": "BASE_PASS_RESULT",
    "StartAt": "State_1",
    "States": {"State_1": {"Type": "Pass", "Result": {"Arg1": "argument1"}, "End": True}},
}
WAIT = {
    "StartAt": "State_1",
    "States": {"State_1": {"Type": "Wait", "Seconds": 3600, "End": True}},
}


class Api:
    def __init__(self, runtime: Runtime, server: ApiServer) -> None:
        self.runtime = runtime
        self.server = server
        # StartSyncExecution's host is sync-HOST on AWS: a local endpoint is not
        self.sfn = boto("stepfunctions", server.url, inject_host_prefix=False)
        self.events = boto("events", server.url)

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        return await aws_call(self.sfn, operation, **params)

    async def error(self, operation: str, **params: Any) -> dict[str, Any]:
        response: dict[str, Any] = (await aws_refusal(self.sfn, operation, **params)).response
        return response

    async def machine(self, name: str, definition: Any = PASS, **more: Any) -> str:
        made = await self.call(
            "create_state_machine",
            name=name,
            definition=json.dumps(definition),
            roleArn=ROLE,
            **more,
        )
        arn: str = made["stateMachineArn"]
        return arn

    async def ended(self, arn: str) -> dict[str, Any]:
        deadline = time.monotonic() + 20
        while True:
            described = await self.call("describe_execution", executionArn=arn)
            if described["status"] != "RUNNING":
                return described
            assert time.monotonic() < deadline, f"{arn} still running"
            await asyncio.sleep(0.05)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    runtime = Runtime(state_path=tmp_path / "state.db", plugins=PLUGINS)
    server = ApiServer(runtime, served_services(PLUGINS), "127.0.0.1", 0)
    await server.start()
    try:
        async with runtime:
            yield Api(runtime, server)
    finally:
        await server.close()


def _same(recorded: Any, ours: Any) -> None:
    """Ours matches the recorded answer (placeholders match anything; dates too)."""
    # the recordings' account, as LocalStack's snapshots write it, is ours here
    recorded = json.loads(json.dumps(_plain(recorded)).replace("111111111111", "000000000000"))
    ours = _plain(ours)
    assert not rec.differences(recorded, ours), rec.differences(recorded, ours)


def _billed_by_the_rule(answer: dict[str, Any]) -> None:
    """Express bills the execution's duration rounded up to 100 ms, at least
    100 (the dates are given to the millisecond: a millisecond each way)."""
    billed = answer["billingDetails"]["billedDurationInMilliseconds"]
    took = (answer["stopDate"] - answer["startDate"]).total_seconds() * 1000
    assert billed >= 100 and billed % 100 == 0, billed
    assert took <= billed + 2, (took, billed)
    assert billed == 100 or took > billed - 100 - 2, (took, billed)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _plain(v)
            for k, v in value.items()
            if k not in ("ResponseMetadata", "HTTPHeaders", "HTTPStatusCode")
        }
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return "datetime"
    return value


def _definition_decoded(answer: dict[str, Any]) -> dict[str, Any]:
    out = dict(answer)
    if isinstance(out.get("definition"), str):
        out["definition"] = json.loads(out["definition"])
    return out


def _recorded_error(recorded: dict[str, Any], ours: dict[str, Any]) -> None:
    _same(recorded["Error"], ours["Error"])
    assert (
        ours["ResponseMetadata"]["HTTPStatusCode"] == recorded["ResponseMetadata"]["HTTPStatusCode"]
    )


def _exception_value(recorded: dict[str, Any], error: botocore.exceptions.ClientError) -> None:
    assert recorded["exception_typename"] == error.response["Error"]["Code"]
    assert rec.differences(recorded["exception_value"], str(error)) == []


# -- state machines -------------------------------------------------------------------------


async def test_recorded_create_describe_and_delete(api: Api) -> None:
    rec.require_recordings()
    recorded = rec.recording(API, "test_create_exact_duplicate_sm")
    made = await api.call(
        "create_state_machine", name="pass", definition=json.dumps(PASS), roleArn=ROLE
    )
    _same(recorded["creation_resp_1"], made)
    arn = made["stateMachineArn"]
    described = _definition_decoded(await api.call("describe_state_machine", stateMachineArn=arn))
    _same(recorded["describe_resp_1"], described)
    again = await api.call(
        "create_state_machine", name="pass", definition=json.dumps(PASS), roleArn=ROLE
    )
    _same(recorded["creation_resp_2"], again)
    assert again["stateMachineArn"] == arn
    _same(recorded["describe_resp_1_2"], described)
    deleted = rec.recording(API, "test_create_delete_valid_sm")["deletion_resp_1"]
    _same(deleted, await api.call("delete_state_machine", stateMachineArn=arn))
    assert await api.call("list_state_machines") == {"stateMachines": []}
    nonexistent = rec.recording(API, "test_delete_nonexistent_sm")["deletion_resp_1"]
    _same(nonexistent, await api.call("delete_state_machine", stateMachineArn=arn + "x"))


async def test_recorded_create_refusals(api: Api) -> None:
    rec.require_recordings()
    invalid = rec.recording(API, "test_create_delete_invalid_sm")["invalid_definition_1"]
    no_states = {"StartAt": "State_1"}
    _recorded_error(
        invalid,
        await api.error(
            "create_state_machine", name="bad", definition=json.dumps(no_states), roleArn=ROLE
        ),
    )
    arn = await api.machine("taken")
    other = {**PASS, "Comment": "another"}
    for test, key, definition in (
        ("test_create_duplicate_sm_name", "already_exists_1", other),
        # the same definition written otherwise is another definition
        ("test_create_duplicate_definition_format_sm", "already_exists_1", None),
    ):
        recorded = rec.recording(API, test)[key]
        text = json.dumps(definition) if definition else json.dumps(PASS, indent=2)
        error = await api.error("create_state_machine", name="taken", definition=text, roleArn=ROLE)
        _recorded_error(recorded, error)
        assert arn in error["Error"]["Message"]


@pytest.mark.parametrize(
    ("test", "template"),
    [
        (
            "test_illegal_callbacks[WAIT_FOR_TASK_TOKEN]",
            ("Publish", "arn:aws:states:::sns:publish.waitForTaskToken"),
        ),
        (
            "test_illegal_callbacks[SYNC]",
            ("StartExecution", "arn:aws:states:::states:startExecution.sync"),
        ),
        (
            "test_illegal_activity_task",
            ("ActivityTask", "arn:aws:states:us-east-1:000000000000:activity:act"),
        ),
    ],
)
async def test_recorded_express_refusals(api: Api, test: str, template: tuple[str, str]) -> None:
    """An EXPRESS machine refuses callbacks, .sync and activities (the states
    are named as in the recorded tests' templates)."""
    rec.require_recordings()
    recorded = rec.recording(EXPRESS_API, test)["creation_error"]
    state, resource = template
    definition = {
        "StartAt": state,
        "States": {state: {"Type": "Task", "Resource": resource, "End": True}},
    }
    error = await api.error(
        "create_state_machine",
        name="express",
        definition=json.dumps(definition),
        roleArn=ROLE,
        type="EXPRESS",
    )
    _recorded_error(recorded, error)
    # the STANDARD type takes it
    await api.machine("standard", definition)


async def test_recorded_express_describe_and_sync_execution(api: Api) -> None:
    rec.require_recordings()
    recorded = rec.recording(EXPRESS_API, "test_create_describe_delete")
    arn = await api.machine("fast", type="EXPRESS")
    _same(
        recorded["describe_response"],
        _definition_decoded(await api.call("describe_state_machine", stateMachineArn=arn)),
    )
    sync = rec.recording(EXPRESS_API, "test_start_sync_execution")["start_execution_sync_response"]
    ours = await api.call("start_sync_execution", stateMachineArn=arn, input="{}")
    _billed_by_the_rule(ours)
    # The billed figure depends on how long this run took: its rule is checked
    # above; the recorded answer's shape and every other field are checked here.
    recorded_billing = sync["billingDetails"]["billedDurationInMilliseconds"]
    ours["billingDetails"]["billedDurationInMilliseconds"] = recorded_billing
    _same(sync, ours)
    history = rec.recording(EXPRESS_API, "test_start_async_describe_history_execution")
    _recorded_error(
        history["list_executions_error"], await api.error("list_executions", stateMachineArn=arn)
    )
    started = await api.call("start_execution", stateMachineArn=arn, input="{}")
    for key, operation in (
        ("describe_execution_error", "describe_execution"),
        ("stop_execution_error", "stop_execution"),
        ("get_execution_history_error", "get_execution_history"),
    ):
        _recorded_error(
            history[key], await api.error(operation, executionArn=started["executionArn"])
        )
    standard = await api.machine("slow")
    refused = rec.recording(API, "test_start_sync_execution")["start_sync_execution_error"]
    _recorded_error(refused, await api.error("start_sync_execution", stateMachineArn=standard))
    _same(
        recorded["deletion_response"], await api.call("delete_state_machine", stateMachineArn=arn)
    )


async def test_recorded_updates(api: Api) -> None:
    rec.require_recordings()
    recorded = rec.recording(API, "test_create_update_state_machine_base_definition")
    arn = await api.machine("grow")
    _same(
        recorded["describe_resp_t0"],
        _definition_decoded(await api.call("describe_state_machine", stateMachineArn=arn)),
    )
    for step in (1, 2):
        definition = json.loads(json.dumps(PASS))
        definition["States"]["State_1"]["Result"]["Arg1"] = f"AfterUpdate{step}"
        key = "update_state_machine_res" if step == 1 else "update_state_machine_res_t2"
        updated = await api.call(
            "update_state_machine", stateMachineArn=arn, definition=json.dumps(definition)
        )
        _same(recorded[key], updated)
        described = _definition_decoded(
            await api.call("describe_state_machine", stateMachineArn=arn)
        )
        _same(recorded[f"describe_resp_t{step}"], described)
        assert described["revisionId"] == updated["revisionId"]
        started = await api.call("start_execution", stateMachineArn=arn)
        assert json.loads((await api.ended(started["executionArn"]))["output"]) == {
            "Arg1": f"AfterUpdate{step}"
        }
    none = rec.recording(API, "test_create_update_state_machine_base_update_none")
    _recorded_error(
        none["missing_required_parameter"],
        await api.error("update_state_machine", stateMachineArn=arn),
    )


async def test_recorded_role_update(api: Api) -> None:
    rec.require_recordings()
    recorded = rec.recording(API, "test_create_update_state_machine_base_role_arn")
    arn = await api.machine("roles")
    for step in (1, 2):
        role = f"arn:aws:iam::000000000000:role/sfn-{step}"
        updated = await api.call("update_state_machine", stateMachineArn=arn, roleArn=role)
        _same(recorded[f"update_state_machine_res_t{step}"], updated)
        described = await api.call("describe_state_machine", stateMachineArn=arn)
        assert described["roleArn"] == role
        assert (
            rec.differences(
                _plain(recorded[f"describe_resp_t{step}"])["revisionId"], described["revisionId"]
            )
            == []
        )


async def test_recorded_machine_lookups(api: Api) -> None:
    rec.require_recordings()
    arn = await api.machine("exists")
    missing = arn.replace("exists", "nonexistent")
    error = await aws_refusal(api.sfn, "describe_state_machine", stateMachineArn=missing)
    recorded = rec.recording(API, "test_describe_nonexistent_sm")["describe_nonexistent_sm"]
    assert str(error) == recorded.replace("sm_nonexistent_arn", missing)
    for test, operation, params in (
        (
            "test_describe_invalid_arn_sm",
            "describe_state_machine",
            {"stateMachineArn": "not_a_valid_arn"},
        ),
        (
            "test_list_execution_invalid_arn",
            "list_executions",
            {"stateMachineArn": "invalid_state_machine_arn"},
        ),
        (
            "test_describe_execution_invalid_arn",
            "describe_execution",
            {"executionArn": "invalid_state_machine_arn"},
        ),
        (
            "test_get_execution_history_invalid_arn",
            "get_execution_history",
            {"executionArn": "invalid_state_machine_arn"},
        ),
    ):
        _exception_value(
            rec.recording(API, test)["exception"], await aws_refusal(api.sfn, operation, **params)
        )
    recorded_list = rec.recording(API, "test_list_execution_no_such_state_machine")["exception"]
    error = await aws_refusal(api.sfn, "list_executions", stateMachineArn=missing)
    assert recorded_list["exception_typename"] == "StateMachineDoesNotExist"
    assert str(error) == recorded_list["exception_value"].replace("ssm_nonexistent_arn", missing)
    execution = arn.replace(":stateMachine:", ":execution:") + ":nobody"
    for test, operation in (
        ("test_describe_execution_no_such_state_machine", "describe_execution"),
        ("test_get_execution_history_no_such_execution", "get_execution_history"),
    ):
        recorded = rec.recording(API, test)["exception"]
        error = await aws_refusal(api.sfn, operation, executionArn=execution)
        assert recorded["exception_typename"] == error.response["Error"]["Code"]
        assert str(error) == recorded["exception_value"].replace("invalid_execution_arn", execution)


async def test_recorded_punctuation_in_names(api: Api) -> None:
    rec.require_recordings()
    recorded = rec.recording(API, "test_describe_sm_arn_containing_punctuation")
    arn = await api.machine("state.machine_with-punctuation")
    _same(
        recorded["describe_resp"],
        _definition_decoded(await api.call("describe_state_machine", stateMachineArn=arn)),
    )
    recorded = rec.recording(API, "test_describe_execution_arn_containing_punctuation")
    started = await api.call("start_execution", stateMachineArn=arn, name="execution.name_-x")
    _same(recorded["exec_resp"], started)
    _same(recorded["describe_execution"], await api.ended(started["executionArn"]))


async def test_recorded_list_state_machines_pages(api: Api) -> None:
    rec.require_recordings()
    recorded = rec.recording(API, "test_list_sms_pagination")
    arns = [await api.machine(f"statemachine_{i}") for i in range(13)]
    first = await api.call("list_state_machines", maxResults=10)
    second = await api.call("list_state_machines", maxResults=10, nextToken=first["nextToken"])
    assert "nextToken" not in second
    _same(recorded["list-state-machines-page-1"], first["stateMachines"])
    _same(recorded["list-state-machines-page-2"], second["stateMachines"])
    assert [m["stateMachineArn"] for m in first["stateMachines"] + second["stateMachines"]] == arns
    _recorded_error(
        recorded["list-state-machines-invalid-param-too-large"],
        await api.error("list_state_machines", maxResults=1001),
    )
    error = await api.error("list_state_machines", nextToken="x" * 1025)
    assert error["Error"]["Message"] == recorded[
        "list-state-machines-invalid-param-long-nextToken"
    ]["Error"]["Message"].replace("<invalid_token_1025_chars>", "x" * 1025)
    assert len((await api.call("list_state_machines", maxResults=0))["stateMachines"]) == 13


# -- executions -------------------------------------------------------------------------------


async def test_recorded_start_list_history(api: Api) -> None:
    rec.require_recordings()
    recorded = rec.recording(API, "test_start_execution")
    arn = await api.machine("run")
    started = await api.call("start_execution", stateMachineArn=arn)
    _same(recorded["exec_resp"], started)
    await api.ended(started["executionArn"])
    _same(recorded["exec_list_resp"], await api.call("list_executions", stateMachineArn=arn))
    history = await api.call("get_execution_history", executionArn=started["executionArn"])
    _same(recorded["exec_hist_resp"], history)
    reverse = rec.recording(API, "test_get_execution_history_reversed")
    _same(reverse["get_execution_history_reverseOrder[False]"], history)
    _same(
        reverse["get_execution_history_reverseOrder[True]"],
        await api.call(
            "get_execution_history", executionArn=started["executionArn"], reverseOrder=True
        ),
    )
    described = rec.recording(API, "test_describe_execution")["describe_execution"]
    _same(described, await api.call("describe_execution", executionArn=started["executionArn"]))
    for_execution = rec.recording(API, "test_describe_state_machine_for_execution")
    _same(
        for_execution["describe_resp"],
        _definition_decoded(
            await api.call(
                "describe_state_machine_for_execution", executionArn=started["executionArn"]
            )
        ),
    )


async def test_recorded_start_input_refusals(api: Api) -> None:
    rec.require_recordings()
    recorded = rec.recording(API, "test_invalid_start_execution_input")
    arn = await api.machine("inputs")
    for key, given in (
        ("start_exec_str_inp", "not some json"),
        ("start_exec_not_json_inp", "{'not': 'json'"),
        ("start_res_empty", ""),
    ):
        _recorded_error(
            recorded[key], await api.error("start_execution", stateMachineArn=arn, input=given)
        )
    for key, given in (
        ("start_res_num", "2"),
        ("start_res_str", '"some text"'),
        ("start_res_null", "null"),
    ):
        _same(recorded[key], await api.call("start_execution", stateMachineArn=arn, input=given))
    deleted = rec.recording(API, "test_invalid_start_execution_arn")["start_exec_of_deleted"]
    gone = arn.replace(":inputs", ":statemachine_invalid_inputs")
    error = await api.error("start_execution", stateMachineArn=gone)
    _recorded_error(deleted, error)


async def test_recorded_stop_and_idempotent_start(api: Api) -> None:
    rec.require_recordings()
    recorded = rec.recording(API, "test_stop_execution")
    arn = await api.machine("waits", WAIT)
    started = await api.call("start_execution", stateMachineArn=arn)
    _same(recorded["exec_resp"], started)
    await asyncio.sleep(0.3)  # the Wait state entered and checkpointed
    _same(
        recorded["stop_res"], await api.call("stop_execution", executionArn=started["executionArn"])
    )
    history = await api.call("get_execution_history", executionArn=started["executionArn"])
    _same(recorded["exec_hist_resp"], history)
    idempotent = rec.recording(API, "test_start_execution_idempotent")
    once = await api.call("start_execution", stateMachineArn=arn, name="once", input="{}")
    again = await api.call("start_execution", stateMachineArn=arn, name="once", input="{}")
    _same(idempotent["exec_resp_idempotent"], again)
    assert again["executionArn"] == once["executionArn"]
    _recorded_error(
        idempotent["start_exec_already_exists"],
        await api.error("start_execution", stateMachineArn=arn, name="once", input='{"other": 1}'),
    )
    _same(
        idempotent["stop_res"], await api.call("stop_execution", executionArn=once["executionArn"])
    )


async def test_recorded_status_filter(api: Api) -> None:
    rec.require_recordings()
    recorded = rec.recording(API, "test_state_machine_status_filter")
    arn = await api.machine("filtered")
    _same(recorded["list_before_execution"], await api.call("list_executions", stateMachineArn=arn))
    started = await api.call("start_execution", stateMachineArn=arn)
    await api.ended(started["executionArn"])
    _same(
        recorded["list_succeeded_when_complete"],
        await api.call("list_executions", stateMachineArn=arn, statusFilter="SUCCEEDED"),
    )
    _same(
        recorded["list_running_when_complete"],
        await api.call("list_executions", stateMachineArn=arn, statusFilter="RUNNING"),
    )


async def test_recorded_status_filter_refusal(api: Api) -> None:
    rec.require_recordings()
    recorded = rec.recording(API, "test_state_machine_status_filter")["list_executions_filter_exc"]
    arn = await api.machine("filtered")
    _recorded_error(
        recorded, await api.error("list_executions", stateMachineArn=arn, statusFilter="succeeded")
    )


async def test_list_executions_without_a_machine_is_a_validation_error(api: Api) -> None:
    # The model requires neither stateMachineArn nor mapRunArn (one of them is).
    refused = await api.error("list_executions")
    assert refused["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert refused["Error"]["Code"] == "ValidationException"
    assert "Value null at 'stateMachineArn'" in refused["Error"]["Message"]
    assert await api.call("list_state_machines")  # the endpoint goes on


async def test_recorded_list_executions_pages(api: Api) -> None:
    rec.require_recordings()
    recorded = rec.recording(API, "test_list_executions_pagination")
    arn = await api.machine("many")
    arns = []
    for _ in range(13):
        started = await api.call("start_execution", stateMachineArn=arn, input="{}")
        await api.ended(started["executionArn"])
        arns.append(started["executionArn"])
    first = await api.call("list_executions", stateMachineArn=arn, maxResults=10)
    second = await api.call(
        "list_executions", stateMachineArn=arn, maxResults=3, nextToken=first["nextToken"]
    )
    page_1 = dict(first, nextToken="<next-token>")
    # the recording replaced nextToken's value by a key placeholder
    assert set(page_1) == set(recorded["list-executions-page-1"]) - {"ResponseMetadata"}
    _same(recorded["list-executions-page-1"]["executions"], first["executions"])
    _same(recorded["list-executions-page-2"], second)
    assert [e["executionArn"] for e in first["executions"] + second["executions"]] == arns[::-1]
    _recorded_error(
        recorded["list-executions-invalid-param-too-large"],
        await api.error("list_executions", stateMachineArn=arn, maxResults=1001),
    )
    error = await api.error("list_executions", stateMachineArn=arn, nextToken="x" * 3097)
    assert error["Error"]["Message"] == recorded["list-executions-invalid-param-long-nextToken"][
        "Error"
    ]["Message"].replace("<invalid_token_3097_chars>", "x" * 3097)
    everything = await api.call("list_executions", stateMachineArn=arn, maxResults=0)
    assert len(everything["executions"]) == 13 and "nextToken" not in everything
    _same(recorded["deletion_resp"], await api.call("delete_state_machine", stateMachineArn=arn))


# -- beyond the recordings ----------------------------------------------------------------------


async def test_a_rule_starts_a_machine_made_through_the_api(api: Api) -> None:
    """put_events → a rule → the API's machine: ListExecutions and its history show it."""
    arn = await api.machine(
        "orders",
        {
            "StartAt": "Keep",
            "States": {"Keep": {"Type": "Pass", "InputPath": "$.detail", "End": True}},
        },
    )
    await aws_call(api.events, "put_rule", Name="to-flow", EventPattern='{"source": ["shop"]}')
    await aws_call(api.events, "put_targets", Rule="to-flow", Targets=[{"Id": "flow", "Arn": arn}])
    await aws_call(
        api.events,
        "put_events",
        Entries=[{"Source": "shop", "DetailType": "order", "Detail": '{"order": 7}'}],
    )
    deadline = time.monotonic() + 20
    while not (listed := (await api.call("list_executions", stateMachineArn=arn))["executions"]):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    described = await api.ended(listed[0]["executionArn"])
    assert json.loads(described["output"]) == {"order": 7}
    events = (await api.call("get_execution_history", executionArn=described["executionArn"]))[
        "events"
    ]
    assert [e["type"] for e in events] == [
        "ExecutionStarted",
        "PassStateEntered",
        "PassStateExited",
        "ExecutionSucceeded",
    ]
    refused = await api.error("delete_state_machine", stateMachineArn=arn)
    assert refused["Error"]["Code"] == "ValidationException"
    assert "rule to-flow target flow" in refused["Error"]["Message"]
    lean = await api.call(
        "get_execution_history", executionArn=described["executionArn"], includeExecutionData=False
    )
    assert "input" not in lean["events"][0]["executionStartedEventDetails"]


async def test_task_tokens_and_tags(api: Api) -> None:
    wait = {
        "StartAt": "Ask",
        "States": {
            "Ask": {
                "Type": "Task",
                "Resource": "arn:aws:states:::events:putEvents.waitForTaskToken",
                "Parameters": {
                    "Entries": [
                        {"Source": "ask", "DetailType": "t", "Detail": {"token.$": "$$.Task.Token"}}
                    ]
                },
                "End": True,
            }
        },
    }
    arn = await api.machine("asks", wait, tags=[{"key": "team", "value": "shop"}])
    await aws_call(api.events, "put_rule", Name="tokens", EventPattern='{"source": ["ask"]}')
    await api.call("tag_resource", resourceArn=arn, tags=[{"key": "env", "value": "test"}])
    await api.call("untag_resource", resourceArn=arn, tagKeys=["team"])
    assert (await api.call("list_tags_for_resource", resourceArn=arn))["tags"] == [
        {"key": "env", "value": "test"}
    ]
    missing = await api.error("list_tags_for_resource", resourceArn=arn + "x")
    assert missing["Error"]["Code"] == "ResourceNotFound"
    started = await api.call("start_execution", stateMachineArn=arn)
    deadline = time.monotonic() + 20
    token = None
    while token is None:
        assert time.monotonic() < deadline
        for event in (
            await api.call("get_execution_history", executionArn=started["executionArn"])
        )["events"]:
            if event["type"] == "TaskScheduled":
                token = json.loads(event["taskScheduledEventDetails"]["parameters"])["Entries"][0][
                    "Detail"
                ]["token"]
        await asyncio.sleep(0.05)
    await api.call("send_task_heartbeat", taskToken=token)
    await api.call("send_task_success", taskToken=token, output='{"approved": true}')
    assert json.loads((await api.ended(started["executionArn"]))["output"]) == {"approved": True}
    gone = await api.error("send_task_failure", taskToken=token, error="late")
    assert gone["Error"]["Code"] == "TaskTimedOut"


async def test_validate_definition(api: Api) -> None:
    ok = await api.call("validate_state_machine_definition", definition=json.dumps(PASS))
    assert ok == {"result": "OK", "diagnostics": [], "truncated": False}
    bad = {"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "B"}}}
    failed = await api.call(
        "validate_state_machine_definition", definition=json.dumps(bad), maxResults=1
    )
    assert failed["result"] == "FAIL" and failed["truncated"] is True
    assert failed["diagnostics"] == [
        {
            "severity": "ERROR",
            "code": "MISSING_TRANSITION_TARGET",
            "message": "Missing 'Next' target: B",
            "location": "/States/A/Next",
        }
    ]


async def test_a_machine_made_through_the_api_is_a_resource_again_after_a_restart(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.db"
    for run in range(2):
        runtime = Runtime(state_path=state, plugins=PLUGINS)
        server = ApiServer(runtime, served_services(PLUGINS), "127.0.0.1", 0)
        await server.start()
        try:
            async with runtime:
                api = Api(runtime, server)
                if run == 0:
                    arn = await api.machine("kept", tags=[{"key": "team", "value": "shop"}])
                    assert "kept" in runtime.resource_names()
                    continue
                assert "kept" not in runtime.resource_names()  # until the first request
                listed = await api.call("list_state_machines")
                assert [m["stateMachineArn"] for m in listed["stateMachines"]] == [arn]
                assert runtime.resource_arn("kept") == arn
                started = await api.call("start_execution", stateMachineArn=arn)
                assert (await api.ended(started["executionArn"]))["status"] == "SUCCEEDED"
                tags = await api.call("list_tags_for_resource", resourceArn=arn)
                assert tags["tags"] == [{"key": "team", "value": "shop"}]
        finally:
            await server.close()
