"""RedriveExecution on both engines: an ended STANDARD execution run again from
the state under way when it ended, durably, its history going on."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.api import ApiServer, served_services
from pipelines.clock import ManualClock
from pipelines.config import build_runtime, load_config
from pipelines.runtime import Runtime
from plugins.states.executions import ExecutionError, Executions, executions_of
from plugins.states.redrive import REDRIVE_LIMIT, not_redrivable
from plugins.states.store import ExecutionRecord

from . import states_recordings as rec
from .apiclient import aws_call, aws_refusal, boto
from .recorder import plugin_manager

PIPELINE = """
resources:
  flaky: {type: function, function: "tests.states_functions:flaky"}
  order:
    type: state_machine
    definition:
      StartAt: Prepare
      States:
        Prepare:
          Type: Pass
          Assign: {amount: 42}
          Next: Charge
        Charge:
          Type: Task
          Resource: arn:aws:lambda:us-east-1:000000000000:function:flaky
          Parameters: {"amount.$": "$amount", "gate.$": "$.gate", "calls.$": "$.calls"}
          Next: Settle
        Settle: {Type: Wait, Seconds: 60, Next: Done}
        Done: {Type: Succeed}
"""


async def _runtime(tmp_path: Path, state: str, clock: ManualClock) -> Runtime:
    path = tmp_path / "pipeline.yaml"
    path.write_text(PIPELINE)
    shared = state.startswith("postgresql://")
    return await build_runtime(
        load_config([path]),
        state_path=state,
        clock=clock,
        plugins=plugin_manager(),
        runner="r1" if shared else None,
    )


async def _ended(engine: Executions, arn: str) -> ExecutionRecord:
    return await asyncio.wait_for(engine.wait_for(arn), 10)


async def _in_wait(engine: Executions, arn: str) -> None:
    for _ in range(500):
        history = await engine.get_execution_history(arn)
        if history and history[-1]["type"] == "WaitStateEntered":
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{arn} never waited")


def _input(tmp_path: Path) -> str:
    return json.dumps({"gate": str(tmp_path / "gate"), "calls": str(tmp_path / "calls")})


async def test_a_failed_execution_redriven_from_its_failed_state_and_resumed_after_a_restart(
    tmp_path: Path, state_location: str
) -> None:
    clock = ManualClock(start=1_700_000_000.0)
    first = await _runtime(tmp_path, state_location, clock)
    async with first:
        engine = executions_of(first)
        arn = (await engine.start_execution("order", _input(tmp_path), "o-1"))["executionArn"]
        failed = await _ended(engine, arn)
        assert (failed.status, failed.error) == ("FAILED", "RuntimeError")
        assert (await engine.describe_execution(arn))["redriveCount"] == 0
        (tmp_path / "gate").touch()
        await clock.advance(30.0)
        answer = await engine.redrive_execution(arn)
        assert answer == {"redriveDate": clock.time()}
        # the redrive is durable before it answers; Charge runs again, then Settle waits
        await _in_wait(engine, arn)
        await clock.advance(5.0)
    # the runner stopped inside the redriven run's Wait: the next one resumes it
    second = await _runtime(tmp_path, state_location, clock)
    async with second:
        engine = executions_of(second)
        for _ in range(200):
            if arn in engine.runs:
                break
            await asyncio.sleep(0.01)
        await clock.advance(60.0)
        done = await _ended(engine, arn)
        assert done.status == "SUCCEEDED" and done.redrive_count == 1
        history = await engine.get_execution_history(arn)
        listed = await engine.list_executions("order")
    assert (tmp_path / "calls").read_text().count("call") == 2  # once failed, once redriven
    types = [e["type"] for e in history]
    assert types.count("PassStateEntered") == 1  # Prepare succeeded: not run again
    assert types.count("ExecutionStarted") == 1
    assert [e["id"] for e in history] == list(range(1, len(history) + 1))
    failed_at = types.index("ExecutionFailed")
    redriven = history[failed_at + 1]
    assert redriven["type"] == "ExecutionRedriven"
    assert redriven["executionRedrivenEventDetails"] == {"redriveCount": 1}
    assert redriven["previousEventId"] == history[failed_at]["id"]
    entered = history[failed_at + 2]
    assert (entered["type"], entered["previousEventId"]) == ("TaskStateEntered", redriven["id"])
    assert entered["stateEnteredEventDetails"]["name"] == "Charge"
    # the variable Prepare assigned is in scope in the redriven Charge
    scheduled = next(e for e in history[failed_at:] if e["type"] == "LambdaFunctionScheduled")
    assert json.loads(scheduled["lambdaFunctionScheduledEventDetails"]["input"])["amount"] == 42
    assert json.loads(done.output or "") == {"charged": 42}
    assert listed[0]["redriveCount"] == 1 and listed[0]["redriveDate"] == redriven["timestamp"]


async def test_what_cannot_be_redriven_and_an_aborted_execution_that_can(
    tmp_path: Path, state_location: str
) -> None:
    clock = ManualClock(start=1_700_000_000.0)
    (tmp_path / "gate").touch()
    runtime = await _runtime(tmp_path, state_location, clock)
    async with runtime:
        engine = executions_of(runtime)
        arn = (await engine.start_execution("order", _input(tmp_path), "o-2"))["executionArn"]
        await _in_wait(engine, arn)
        with pytest.raises(ExecutionError) as running:
            await engine.redrive_execution(arn)
        assert running.value.code == "ExecutionNotRedrivable"
        assert str(running.value.message) == "Execution is RUNNING and cannot be redriven"
        await engine.stop_execution(arn, "Stopped", "by a test")
        aborted = await engine.describe_execution(arn)
        assert aborted["status"] == "ABORTED"
        await engine.redrive_execution(arn, client_token="t-1")
        # the same client token answers the same redrive again
        again = await engine.redrive_execution(arn, client_token="t-1")
        await _in_wait(engine, arn)
        await clock.advance(60.0)
        done = await _ended(engine, arn)
        assert done.status == "SUCCEEDED" and done.redrive_count == 1
        assert again["redriveDate"] == clock.time() - 60.0
        with pytest.raises(ExecutionError) as succeeded:
            await engine.redrive_execution(arn)
        assert succeeded.value.message == "Execution is SUCCEEDED and cannot be redriven"
        with pytest.raises(ExecutionError) as missing:
            await engine.redrive_execution(arn + "-nope")
        assert missing.value.code == "ExecutionDoesNotExist"
        # failed, then left alone for more than 14 days
        (tmp_path / "gate").unlink()
        late = (await engine.start_execution("order", _input(tmp_path), "o-3"))["executionArn"]
        assert (await _ended(engine, late)).status == "FAILED"
        clock.jump(14 * 86_400 + 1.0)  # (no timer fired: a runner asleep for 14 days)
        with pytest.raises(ExecutionError) as expired:
            await engine.redrive_execution(late)
        assert expired.value.message == "Execution redrivable period exceeded"
        history = await engine.get_execution_history(arn)
    types = [e["type"] for e in history]
    # aborted inside its Wait: redriven, the Wait runs again; nothing before it does
    assert types.count("TaskStateEntered") == 1 and types.count("WaitStateEntered") == 2
    assert types.index("ExecutionAborted") + 1 == types.index("ExecutionRedriven")


def test_the_limits_of_a_redrive() -> None:
    def record(status: str, **more: Any) -> ExecutionRecord:
        values: dict[str, Any] = {
            "arn": "a", "machine": "m", "name": "n", "status": status, "input": "{}",
            "output": None, "error": None, "cause": None, "started": 0.0, "stopped": 10.0,
            "redrive_count": 0, "revision": 1, "role_arn": "", "parent": None,
            "checkpoint": None, "last_event": 5,
        }  # fmt: skip
        return ExecutionRecord(**{**values, **more})

    assert not_redrivable(record("FAILED"), 20.0, 5) is None
    assert not_redrivable(record("TIMED_OUT"), 20.0, 5) is None
    assert (
        not_redrivable(record("FAILED"), 20.0, 24_999) == "Execution history event limit exceeded"
    )
    assert (
        not_redrivable(record("FAILED", stopped=366 * 86_400.0), 366 * 86_400.0 + 1, 5)
        == "Execution has exceeded the max execution time"
    )
    limited = record("FAILED", redrive_count=REDRIVE_LIMIT)
    assert not_redrivable(limited, 20.0, 5) == "Execution redrive limit exceeded"


# -- over the API ------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A boto3 answer as the recordings show it (dates as "datetime", no metadata)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return "datetime" if hasattr(value, "isoformat") else value


async def test_recorded_failed_descriptions_and_a_redrive_over_the_api(tmp_path: Path) -> None:
    rec.require_recordings()
    runtime = Runtime(state_path=tmp_path / "state.db", plugins=plugin_manager())
    server = ApiServer(runtime, served_services(plugin_manager()), "127.0.0.1", 0)
    await server.start()
    try:
        async with runtime:
            sfn = boto("stepfunctions", server.url)
            role = "arn:aws:iam::000000000000:role/sfn"
            arns = {}
            for test, template in (
                ("test_state_fail", "raise_failure"),
                ("test_state_fail_empty", "raise_empty_failure"),
            ):
                definition = json.dumps(rec.template(f"base/statemachines/{template}.json5"))
                machine = await aws_call(
                    sfn, "create_state_machine", name=template, definition=definition, roleArn=role
                )
                started = await aws_call(
                    sfn, "start_execution", stateMachineArn=machine["stateMachineArn"], input="{}"
                )
                arn = arns[test] = started["executionArn"]
                await asyncio.wait_for(executions_of(runtime).wait_for(arn), 10)
                described = await aws_call(sfn, "describe_execution", executionArn=arn)
                recorded = rec.recording("v2/base/test_base.py", test)["describe_execution"]
                recorded = json.loads(json.dumps(recorded).replace("111111111111", "000000000000"))
                assert rec.differences(_plain(recorded), _plain(described)) == []
            arn = arns["test_state_fail"]
            redriven = await aws_call(sfn, "redrive_execution", executionArn=arn)
            await asyncio.sleep(0)
            await asyncio.wait_for(executions_of(runtime).wait_for(arn), 10)
            described = await aws_call(sfn, "describe_execution", executionArn=arn)
            assert (described["status"], described["redriveCount"]) == ("FAILED", 1)
            assert described["redriveDate"] == redriven["redriveDate"]
            assert described["redriveStatus"] == "REDRIVABLE"
            events = (await aws_call(sfn, "get_execution_history", executionArn=arn))["events"]
            assert [e["type"] for e in events] == [
                "ExecutionStarted", "FailStateEntered", "ExecutionFailed",
                "ExecutionRedriven", "FailStateEntered", "ExecutionFailed",
            ]  # fmt: skip
            machine_arn = described["stateMachineArn"]
            for redrive_filter, count in (("REDRIVEN", 1), ("NOT_REDRIVEN", 0)):
                listed = await aws_call(
                    sfn,
                    "list_executions",
                    stateMachineArn=machine_arn,
                    redriveFilter=redrive_filter,
                )
                assert [e["redriveCount"] for e in listed["executions"]] == [1] * count
            missing = await aws_refusal(sfn, "redrive_execution", executionArn=arn + "x")
            assert missing.response["Error"]["Code"] == "ExecutionDoesNotExist"
            express = arn.replace(":execution:", ":express:") + ":id"
            refused = await aws_refusal(sfn, "redrive_execution", executionArn=express)
            assert refused.response["Error"]["Code"] == "InvalidArn"
    finally:
        await server.close()
