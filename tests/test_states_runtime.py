"""State machines where users meet them, on both engines: declared in YAML,
started by a rule's target, their tasks calling the runtime's resources,
durable across a restart, announced on the default bus and counted."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.clock import ManualClock, settle
from pipelines.config import build_runtime, load_config
from pipelines.errors import ConfigInvalid
from pipelines.runtime import Runtime
from plugins.queue.target import QueueTarget
from plugins.states.executions import ExecutionError, executions_of
from plugins.states.store import StatesStore

from .helpers import sql
from .recorder import plugin_manager

FLOW = {
    "StartAt": "Double",
    "States": {
        "Double": {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {"FunctionName": "double", "Payload": {"value.$": "$.detail.n"}},
            "ResultSelector": {"value.$": "$.Payload.value"},
            "Next": "Done",
        },
        "Done": {"Type": "Succeed"},
    },
}

RESOURCES = """
resources:
  double: {type: function, function: "tests.states_functions:double"}
  status: {type: queue}
"""
RULES = """
rules:
  changes:
    pattern: {source: [aws.states]}
    targets: [{id: q, resource: status}]
"""


async def _runtime(
    tmp_path: Path, state: str, extra: str, clock: ManualClock | None = None, runner: str = "r1"
) -> Runtime:
    path = tmp_path / "pipeline.yaml"
    path.write_text(RESOURCES + extra + RULES)
    shared = state.startswith("postgresql://")
    return await build_runtime(
        load_config([path]),
        state_path=state,
        clock=clock,
        plugins=plugin_manager(),
        runner=runner if shared else None,
    )


async def _received(runtime: Runtime, queue: str, count: int) -> list[Any]:
    target = runtime.resource(queue)
    assert isinstance(target, QueueTarget) and target.store is not None
    bodies: list[Any] = []
    for _ in range(200):
        for message in await target.store.receive(queue, 10):
            bodies.append(json.loads(message.body))
        if len(bodies) >= count:
            return bodies
        await asyncio.sleep(0.01)
    raise AssertionError(f"{queue}: {len(bodies)} messages, not {count}")


async def _only_execution(runtime: Runtime, machine: str) -> str:
    engine = executions_of(runtime)
    for _ in range(200):
        listed = await engine.list_executions(machine)
        if listed:
            assert len(listed) == 1
            return str(listed[0]["executionArn"])
        await asyncio.sleep(0.01)
    raise AssertionError(f"no execution of {machine}")


async def test_a_rule_starts_an_execution_announced_and_counted(
    tmp_path: Path, state_location: str
) -> None:
    (tmp_path / "flow.asl.json").write_text(json.dumps(FLOW))
    flow = "  flow: {type: state_machine, definition_file: flow.asl.json}\n"
    runtime = await _runtime(tmp_path, state_location, flow)
    runtime.bus().put_rule("orders", pattern={"source": ["shop"]})
    await runtime.bus().put_targets("orders", [{"id": "sfn", "resource": "flow"}])
    async with runtime:
        await runtime.put_events([{"Source": "shop", "DetailType": "order", "Detail": '{"n": 21}'}])
        arn = await _only_execution(runtime, "flow")
        engine = executions_of(runtime)
        record = await engine.wait_for(arn)
        assert (record.status, json.loads(record.output or "")) == ("SUCCEEDED", {"value": 42})
        changes = await _received(runtime, "status", 2)
        assert [c["detail"]["status"] for c in changes] == ["RUNNING", "SUCCEEDED"]
        end = changes[1]
        assert end["detail-type"] == "Step Functions Execution Status Change"
        assert end["source"] == "aws.states" and end["resources"] == [arn]
        assert end["detail"]["output"] == '{"value":42}'
        assert json.loads(end["detail"]["input"])["detail"] == {"n": 21}
        assert end["detail"]["stopDate"] >= end["detail"]["startDate"]
        metrics = await runtime.metrics.list_metrics("Pipelines/States")
        named = {m["MetricName"] for m in metrics}
        assert {"ExecutionsStarted", "ExecutionsSucceeded", "ExecutionTime"} <= named
        assert all(
            m["Dimensions"] == [{"Name": "StateMachineArn", "Value": engine.machines["flow"].arn}]
            for m in metrics
        )
        history = await engine.get_execution_history(arn)
        assert [e["type"] for e in history] == [
            "ExecutionStarted",
            "TaskStateEntered",
            "TaskScheduled",
            "TaskStarted",
            "TaskSucceeded",
            "TaskStateExited",
            "SucceedStateEntered",
            "SucceedStateExited",
            "ExecutionSucceeded",
        ]
        result = json.loads(history[4]["taskSucceededEventDetails"]["output"])
        assert result["StatusCode"] == 200 and result["Payload"] == {"value": 42}
    # the transitions went to the database: one row per event, in order
    rows = sql(state_location, "SELECT id FROM sfn_history WHERE execution = ? ORDER BY id", (arn,))
    assert [r[0] for r in rows] == list(range(1, 10))


WAITING = """
  slow:
    type: state_machine
    definition:
      StartAt: A
      States:
        A: {Type: Pass, Result: 1, ResultPath: $.a, Next: W}
        W: {Type: Wait, Seconds: 3600, Next: B}
        B: {Type: Pass, Result: 2, ResultPath: $.b, End: true}
"""


async def test_a_wait_resumed_after_a_restart_waits_only_what_is_left(
    tmp_path: Path, state_location: str
) -> None:
    clock = ManualClock(start=1_700_000_000.0)
    first = await _runtime(tmp_path, state_location, WAITING, clock)
    async with first:
        started = await executions_of(first).start_execution("slow", "{}")
        arn = started["executionArn"]
        # Its Wait entered and checkpointed first (the history shows what is
        # durable): on a loaded machine that takes a few turns of the loop.
        for _ in range(500):
            entered = await executions_of(first).get_execution_history(arn)
            if entered and entered[-1]["type"] == "WaitStateEntered":
                break
            await asyncio.sleep(0.01)
        await clock.advance(1000.0)
    assert entered[-1]["type"] == "WaitStateEntered"
    began = entered[-1]["timestamp"]
    # stopped gracefully: left RUNNING in its Wait, let go for the next runner
    second = await _runtime(tmp_path, state_location, WAITING, clock)
    async with second:
        engine = executions_of(second)
        for _ in range(100):  # resumed once the runtime runs
            if arn in engine.runs:
                break
            await asyncio.sleep(0.01)
        await clock.advance(began + 3599.0 - clock.time())
        assert (await engine.describe_execution(arn))["status"] == "RUNNING"
        await clock.advance(1.0)
        record = await asyncio.wait_for(engine.wait_for(arn), 5)
        assert record.status == "SUCCEEDED" and json.loads(record.output or "") == {"a": 1, "b": 2}
        history = await engine.get_execution_history(arn)
    types = [e["type"] for e in history]
    assert types.count("WaitStateEntered") == 1 and types.count("ExecutionStarted") == 1
    exited = next(e for e in history if e["type"] == "WaitStateExited")
    assert exited["timestamp"] == began + 3600.0
    assert [e["id"] for e in history] == list(range(1, len(history) + 1))


async def test_an_execution_whose_checkpoint_write_failed_is_resumed_by_its_runner(
    tmp_path: Path, state_location: str
) -> None:
    """A transition the database refuses (disk full, a table gone) ends the
    execution's task, not the execution: it stays RUNNING at its last
    checkpoint, held by this runner, which resumes it within a lease's time
    (as a runner taking over one whose owner died)."""
    clock = ManualClock(start=1_700_000_000.0)
    runtime = await _runtime(tmp_path, state_location, WAITING, clock)
    async with runtime:
        engine = executions_of(runtime)
        arn = (await engine.start_execution("slow", "{}"))["executionArn"]
        for _ in range(500):  # its Wait entered and checkpointed
            entered = await engine.get_execution_history(arn)
            if entered and entered[-1]["type"] == "WaitStateEntered":
                break
            await asyncio.sleep(0.01)
        sql(state_location, "ALTER TABLE sfn_history RENAME TO sfn_history_away")
        await clock.advance(3600.0)  # the Wait ends: the next transition is refused
        for _ in range(500):
            if arn not in engine.runs:
                break
            await asyncio.sleep(0.01)
        assert arn not in engine.runs
        assert (await engine.describe_execution(arn))["status"] == "RUNNING"
        sql(state_location, "ALTER TABLE sfn_history_away RENAME TO sfn_history")
        for _ in range(130):  # this runner looks every LEASE (60) seconds
            if arn in engine.runs:
                break
            await clock.advance(1.0)
        record = await asyncio.wait_for(engine.wait_for(arn), 5)
        history = await engine.get_execution_history(arn)
    assert record.status == "SUCCEEDED" and json.loads(record.output or "") == {"a": 1, "b": 2}
    types = [e["type"] for e in history]
    assert types.count("WaitStateEntered") == 1 and types.count("WaitStateExited") == 1
    assert [e["id"] for e in history] == list(range(1, len(history) + 1))


TOKENS = """
  approvals: {type: queue}
  approve:
    type: state_machine
    definition:
      StartAt: Ask
      States:
        Ask:
          Type: Task
          Resource: arn:aws:states:::sqs:sendMessage.waitForTaskToken
          Parameters:
            QueueUrl: http://localhost/000000000000/approvals
            MessageBody: {token.$: $$.Task.Token, order.$: $.order}
          HeartbeatSeconds: 600
          End: true
"""


async def test_a_task_token_is_answered_across_a_restart_and_its_message_sent_once(
    tmp_path: Path, state_location: str
) -> None:
    first = await _runtime(tmp_path, state_location, TOKENS)
    async with first:
        engine = executions_of(first)
        approved = (await engine.start_execution("approve", '{"order": 1}'))["executionArn"]
        rejected = (await engine.start_execution("approve", '{"order": 2}'))["executionArn"]
        asks = {m["order"]: m["token"] for m in await _received(first, "approvals", 2)}
        # the runner stops while both wait for their answer
    second = await _runtime(tmp_path, state_location, TOKENS)
    async with second:
        engine = executions_of(second)
        for _ in range(100):
            if approved in engine.runs and rejected in engine.runs:
                break
            await asyncio.sleep(0.01)
        await engine.send_task_heartbeat(asks[1])
        await engine.send_task_success(asks[1], '{"approved": true}')
        await engine.send_task_failure(asks[2], "Rejected", "not today")
        ok = await asyncio.wait_for(engine.wait_for(approved), 5)
        no = await asyncio.wait_for(engine.wait_for(rejected), 5)
        assert (ok.status, json.loads(ok.output or "")) == ("SUCCEEDED", {"approved": True})
        assert (no.status, no.error, no.cause) == ("FAILED", "Rejected", "not today")
        with pytest.raises(ExecutionError, match="TaskTimedOut"):
            await engine.send_task_success(asks[1], "{}")  # its task is over
        target = second.resource("approvals")
        assert isinstance(target, QueueTarget) and target.store is not None
        assert await target.store.receive("approvals", 10) == []  # each ask was sent once
        history = await engine.get_execution_history(approved)
    types = [e["type"] for e in history]
    assert types.count("TaskScheduled") == 1 and "TaskSubmitted" in types


CHILD = """
  child:
    type: state_machine
    definition:
      StartAt: C
      States:
        C:
          Type: Choice
          Choices:
            - And: [{Variable: $.fail, IsPresent: true}, {Variable: $.fail, BooleanEquals: true}]
              Next: Boom
          Default: Ok
        Ok: {Type: Pass, Parameters: {got.$: $.n}, End: true}
        Boom: {Type: Fail, Error: ChildFailed, Cause: asked to}
  parent:
    type: state_machine
    definition:
      StartAt: Run
      States:
        Run:
          Type: Task
          Resource: arn:aws:states:::states:startExecution.sync:2
          Parameters:
            StateMachineArn: arn:aws:states:us-east-1:000000000000:stateMachine:child
            Input.$: $
          OutputPath: $.Output
          Catch: [{ErrorEquals: [States.TaskFailed], ResultPath: $.error, Next: Caught}]
          End: true
        Caught: {Type: Pass, End: true}
"""


async def test_a_nested_execution_runs_to_its_end_for_its_parent(
    tmp_path: Path, state_location: str
) -> None:
    runtime = await _runtime(tmp_path, state_location, CHILD)
    async with runtime:
        engine = executions_of(runtime)
        good = await engine.start_execution("parent", '{"n": 5}')
        bad = await engine.start_execution("parent", '{"fail": true}')
        ok = await asyncio.wait_for(engine.wait_for(good["executionArn"]), 5)
        caught = await asyncio.wait_for(engine.wait_for(bad["executionArn"]), 5)
        assert json.loads(ok.output or "") == {"got": 5}
        error = json.loads(caught.output or "")["error"]
        assert error["Error"] == "States.TaskFailed"
        child = json.loads(error["Cause"])
        assert (child["Status"], child["Error"]) == ("FAILED", "ChildFailed")
        children = await engine.list_executions("child")
        assert len(children) == 2


async def test_a_stopped_execution_is_aborted(tmp_path: Path, state_location: str) -> None:
    runtime = await _runtime(tmp_path, state_location, WAITING)
    async with runtime:
        engine = executions_of(runtime)
        arn = (await engine.start_execution("slow", "{}"))["executionArn"]
        for _ in range(100):
            if (await engine.get_execution_history(arn))[-1:]:
                break
            await asyncio.sleep(0.01)
        await engine.stop_execution(arn, "Manual", "changed my mind")
        described = await engine.describe_execution(arn)
        assert (described["status"], described["error"]) == ("ABORTED", "Manual")
        history = await engine.get_execution_history(arn)
        assert history[-1]["type"] == "ExecutionAborted"
        assert history[-1]["executionAbortedEventDetails"]["cause"] == "changed my mind"
        changes = await _received(runtime, "status", 2)
        assert changes[-1]["detail"]["status"] == "ABORTED"


INTEGRATIONS = """
  outbox: {type: queue}
  seen: {type: queue}
  news:
    type: topic
    subscriptions: [{id: q, resource: seen, raw_message_delivery: true}]
  clicks: {type: stream}
  fan:
    type: state_machine
    definition:
      StartAt: Send
      States:
        Send:
          Type: Task
          Resource: arn:aws:states:::sqs:sendMessage
          Parameters: {QueueUrl: outbox, MessageBody: {hello.$: $.who}}
          ResultPath: $.sent
          Next: Publish
        Publish:
          Type: Task
          Resource: arn:aws:states:::sns:publish
          Parameters: {TopicArn: "arn:aws:sns:us-east-1:000000000000:news", Message.$: $.who}
          ResultPath: $.published
          Next: Record
        Record:
          Type: Task
          Resource: arn:aws:states:::aws-sdk:kinesis:putRecord
          Parameters: {StreamName: clicks, Data.$: $.who, PartitionKey: k}
          ResultPath: $.recorded
          Next: Put
        Put:
          Type: Task
          Resource: arn:aws:states:::events:putEvents
          Parameters:
            Entries: [{Source: flow, DetailType: said, Detail: {who.$: $.who}}]
          ResultPath: $.put
          Next: Missing
        Missing:
          Type: Task
          Resource: arn:aws:states:::sqs:sendMessage
          Parameters: {QueueUrl: nowhere, MessageBody: x}
          Catch: [{ErrorEquals: [States.ALL], ResultPath: $.missing, Next: Done}]
          End: true
        Done: {Type: Succeed}
"""


async def test_tasks_reach_queues_topics_streams_and_buses(
    tmp_path: Path, state_location: str
) -> None:
    runtime = await _runtime(tmp_path, state_location, INTEGRATIONS)
    runtime.bus().put_rule("said", pattern={"source": ["flow"]})
    await runtime.bus().put_targets("said", [{"id": "q", "resource": "outbox"}])
    async with runtime:
        engine = executions_of(runtime)
        arn = (await engine.start_execution("fan", '{"who": "ada"}'))["executionArn"]
        record = await asyncio.wait_for(engine.wait_for(arn), 10)
        assert record.status == "SUCCEEDED", record
        out = json.loads(record.output or "")
        assert out["sent"]["MessageId"] and out["published"]["MessageId"]
        assert out["recorded"]["ShardId"] and out["recorded"]["SequenceNumber"]
        assert out["put"]["FailedEntryCount"] == 0
        assert out["missing"]["Error"] == "SQS.ResourceNotFoundException"
        bodies = await _received(runtime, "outbox", 2)
        assert {"hello": "ada"} in bodies
        assert any(b.get("source") == "flow" and b["detail"] == {"who": "ada"} for b in bodies)
        seen = runtime.resource("seen")
        assert isinstance(seen, QueueTarget) and seen.store is not None
        assert [m.body for m in await seen.store.receive("seen", 10)] == ["ada"]


async def test_an_express_machine_runs_in_memory(tmp_path: Path, state_location: str) -> None:
    runtime = await _runtime(
        tmp_path,
        state_location,
        """
  quick:
    type: state_machine
    state_machine_type: EXPRESS
    definition: {StartAt: P, States: {P: {Type: Pass, Result: {ok: true}, End: true}}}
""",
    )
    async with runtime:
        engine = executions_of(runtime)
        answer = await engine.start_sync_execution("quick", "{}")
        assert (answer["status"], answer["output"]) == ("SUCCEEDED", '{"ok":true}')
        assert ":express:quick:" in answer["executionArn"]
    assert sql(state_location, "SELECT count(*) FROM sfn_executions") == [(0,)]


async def test_definition_problems_are_located_in_the_config(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        """resources:
  flow:
    type: state_machine
    definition:
      StartAt: A
      States:
        A: {Type: Pass, Next: Nowhere}
  other: {type: state_machine, definition_file: missing.asl.json}
  both: {type: state_machine, state_machine_type: FAST, definition: {StartAt: A}}
"""
    )
    with pytest.raises(ConfigInvalid) as raised:
        await build_runtime(load_config([path]), state_path=None, plugins=plugin_manager())
    lines = [str(problem) for problem in raised.value.problems]
    assert any(":7:" in line and "MISSING_TRANSITION_TARGET" in line for line in lines), lines
    assert any(":8:" in line and "missing.asl.json" in line for line in lines), lines
    assert any(":9:" in line and "FAST" in line for line in lines), lines


async def test_an_execution_of_a_runner_that_died_is_taken_over(
    tmp_path: Path, postgres_url: str
) -> None:
    clock = ManualClock(start=1_700_000_000.0)
    first = await _runtime(tmp_path, postgres_url, WAITING, clock, runner="web-1")
    async with first:
        arn = (await executions_of(first).start_execution("slow", "{}"))["executionArn"]
        await clock.advance(10.0)
    # as if web-1 had died holding it: its lease still running
    sql(postgres_url, "UPDATE sfn_executions SET owner = 'web-1', lease = ?", (clock.time() + 60,))
    second = await _runtime(tmp_path, postgres_url, WAITING, clock, runner="web-2")
    async with second:
        engine = executions_of(second)
        await settle()
        assert arn not in engine.runs  # web-1's lease holds
        await clock.advance(61.0)  # the lease ran out; web-2 looks every LEASE seconds
        for _ in range(100):
            if arn in engine.runs:
                break
            await clock.advance(1.0)
        assert arn in engine.runs
        async with StatesStore.existing(postgres_url) as store:
            assert (await store.owner(arn))[0] == "web-2"


async def test_a_standard_execution_fails_at_its_25000th_event_not_an_express_one(
    tmp_path: Path, state_location: str
) -> None:
    items = {
        "StartAt": "Each",
        "States": {
            "Each": {
                "Type": "Map",
                "ItemsPath": "$.items",
                "ItemProcessor": {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}},
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}],
                "End": True,
            },
            "Caught": {"Type": "Succeed"},
        },
    }
    definition = json.dumps(items)
    runtime = await _runtime(
        tmp_path,
        state_location,
        f"""
  big: {{type: state_machine, definition: {definition}}}
  quick: {{type: state_machine, state_machine_type: EXPRESS, definition: {definition}}}
""",
    )
    text = json.dumps({"items": list(range(6300))})  # 4 events an item, 6 around: 25,206
    async with runtime:
        engine = executions_of(runtime)
        started = await engine.start_execution("big", text, "e1")
        record = await engine.wait_for(started["executionArn"])
        assert (record.status, record.error) == ("FAILED", "States.Runtime")  # no Catch takes it
        history = await engine.get_execution_history(started["executionArn"])
        assert len(history) == 25_000 and history[-1]["type"] == "ExecutionFailed"
        assert history[-1]["id"] == 25_000
        answer = await engine.start_sync_execution("quick", text)
        assert answer["status"] == "SUCCEEDED"
        quick = await engine.get_execution_history(answer["executionArn"])
        assert len(quick) == 25_206


ENDINGS = """
  fails:
    type: state_machine
    definition: {StartAt: Refuse, States: {Refuse: {Type: Fail, Error: Nope, Cause: said no}}}
  late:
    type: state_machine
    definition:
      TimeoutSeconds: 10
      StartAt: Long
      States: {Long: {Type: Wait, Seconds: 60, End: true}}
  held:
    type: state_machine
    definition: {StartAt: Long, States: {Long: {Type: Wait, Seconds: 60, End: true}}}
"""


async def test_failed_timed_out_and_aborted_executions_are_counted(tmp_path: Path) -> None:
    clock = ManualClock(start=1_700_000_000.0)
    runtime = await _runtime(tmp_path, str(tmp_path / "state.db"), ENDINGS, clock)
    async with runtime:
        engine = executions_of(runtime)
        ended = {}
        for machine in ("fails", "late", "held"):
            ended[machine] = (await engine.start_execution(machine, "{}"))["executionArn"]
        for _ in range(500):  # the Waits entered (a few turns on a loaded machine)
            histories = [await engine.get_execution_history(ended[m]) for m in ("late", "held")]
            if all(h and h[-1]["type"] == "WaitStateEntered" for h in histories):
                break
            await asyncio.sleep(0.01)
        await engine.stop_execution(ended["held"], "Operator", "not needed")
        await clock.advance(11.0)
        statuses = {
            machine: (await asyncio.wait_for(engine.wait_for(arn), 5)).status
            for machine, arn in ended.items()
        }
        assert statuses == {"fails": "FAILED", "late": "TIMED_OUT", "held": "ABORTED"}
        metrics = await runtime.metrics.list_metrics("Pipelines/States")
    by_machine: dict[str, set[str]] = {}
    for metric in metrics:
        (dimension,) = metric["Dimensions"]
        by_machine.setdefault(dimension["Value"].rsplit(":", 1)[1], set()).add(metric["MetricName"])
    assert by_machine["fails"] >= {"ExecutionsStarted", "ExecutionsFailed", "ExecutionTime"}
    assert by_machine["late"] >= {"ExecutionsStarted", "ExecutionsTimedOut"}
    assert by_machine["held"] >= {"ExecutionsStarted", "ExecutionsAborted"}
    assert "ExecutionsSucceeded" not in set().union(*by_machine.values())
