"""The ``state_machines:`` section: each entry a ``state_machine`` resource,
its problems named and placed as the file writes them, usable wherever a
resource is (rule targets, pipes, schedules, nested executions), reloaded,
published in the schema, and exported and imported as AWS's state machines.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from pipelines.clock import ManualClock
from pipelines.cloudformation import config_data, config_for_run, equivalent
from pipelines.config import build_runtime, load_config
from pipelines.errors import ConfigInvalid
from pipelines.reload import reload
from pipelines.runtime import Runtime
from pipelines.schema import config_schema
from plugins.queue.target import QueueTarget
from plugins.states.executions import executions_of
from plugins.states.target import SETTINGS_TABLE

from .helpers import run_cli
from .recorder import plugin_manager

FLOW = {
    "StartAt": "Send",
    "States": {
        "Send": {
            "Type": "Task",
            "Resource": "arn:aws:states:::sqs:sendMessage",
            "Parameters": {"QueueUrl": "out", "MessageBody": {"n.$": "$.n"}},
            "ResultPath": None,
            "End": True,
        }
    },
}
FLOW_ARN = "arn:aws:states:us-east-1:000000000000:stateMachine:flow"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


async def received(runtime: Runtime, queue: str, count: int) -> list[Any]:
    target = runtime.resource(queue)
    assert isinstance(target, QueueTarget) and target.store is not None
    bodies: list[Any] = []
    for _ in range(500):
        for message in await target.store.receive(queue, 10):
            bodies.append(json.loads(message.body))
            await target.store.delete(queue, message.receipt_handle)  # (not seen twice)
        if len(bodies) >= count:
            return bodies
        await asyncio.sleep(0.01)
    raise AssertionError(f"{queue}: {len(bodies)} messages, not {count}")


# -- validate ----------------------------------------------------------------


def test_validate_names_and_places_definition_problems_as_the_section_writes_them(
    tmp_path: Path,
) -> None:
    bad = {"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "Gone"}}}
    write(tmp_path / "bad.asl.json", json.dumps(bad))
    config = write(
        tmp_path / "pipeline.yaml",
        """\
resources:
  out: {type: queue}
state_machines:
  inline:
    definition:
      StartAt: A
      States:
        A: {Type: Pass, Next: Nowhere}
  from-file:
    definition_file: bad.asl.json
  odd:
    definition: {StartAt: A, States: {A: {Type: Succeed}}}
    state_machine_typ: EXPRESS
""",
    )
    result = run_cli("validate", str(config))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = (result.stderr + result.stdout).splitlines()
    assert any(
        line.startswith(f"{config}:8:25: state_machines.inline.definition.States.A.Next: ")
        and "MISSING_TRANSITION_TARGET" in line
        for line in lines
    ), lines
    assert any(
        line.startswith(f"{config}:10:5: state_machines.from-file.definition_file: ")
        and "bad.asl.json at /States/A/Next: MISSING_TRANSITION_TARGET" in line
        for line in lines
    ), lines
    assert any(
        line.startswith(f"{config}:13:5: state_machines.odd.state_machine_typ: ")
        and "state_machine_type" in line  # the "did you mean"
        for line in lines
    ), lines
    assert not any("resources." in line for line in lines), lines


def test_a_name_in_both_resources_and_state_machines_is_a_located_error(tmp_path: Path) -> None:
    first = write(tmp_path / "a.yaml", "resources:\n  out: {type: queue}\n  flow: {type: queue}\n")
    second = write(
        tmp_path / "b.yaml",
        """\
state_machines:
  flow: {definition: {StartAt: A, States: {A: {Type: Succeed}}}}
  typed:
    type: state_machine
    definition: {StartAt: A, States: {A: {Type: Succeed}}}
""",
    )
    result = run_cli("validate", str(first), str(second))
    assert result.returncode == 1
    lines = (result.stderr + result.stdout).splitlines()
    assert (
        f"{second}:2:3: state_machines.flow: a resource of this name is declared at {first}:3:3"
        in (lines)
    ), lines
    assert any(line.startswith(f"{second}:4:5: state_machines.typed.type: ") for line in lines)


# -- running -----------------------------------------------------------------


async def test_a_section_machine_is_a_rule_target_a_pipe_enrichment_and_a_nested_execution(
    tmp_path: Path,
) -> None:
    write(tmp_path / "flow.asl.json", json.dumps(FLOW))
    config = load_config(
        write(
            tmp_path / "pipeline.yaml",
            f"""\
resources:
  out: {{type: queue}}
  orders: {{type: queue}}
  tagged: {{type: queue}}
  parent:                      # the resource form, naming a section machine by ARN
    type: state_machine
    definition:
      StartAt: Run
      States:
        Run:
          Type: Task
          Resource: arn:aws:states:::states:startExecution.sync:2
          Parameters: {{StateMachineArn: {FLOW_ARN}, Input: {{n: 7}}}}
          End: true
state_machines:
  flow: {{definition_file: flow.asl.json}}
  tagger:
    state_machine_type: EXPRESS
    definition:
      QueryLanguage: JSONata
      StartAt: Tag
      States:
        Tag:
          Type: Pass
          Output: "{{% $map($states.input, function($r) {{ {{'id': $parse($r.body).id, 'tagged': true}} }}) %}}"
          End: true
pipes:
  p: {{source: orders, enrichment: tagger, target: tagged}}
rules:
  new-orders:
    pattern: {{source: [shop]}}
    targets: [{{id: sfn, resource: flow, input_path: $.detail}}]
""",
        )
    )
    runtime = await build_runtime(
        config, state_path=tmp_path / "state.db", plugins=plugin_manager()
    )
    async with runtime:
        engine = executions_of(runtime)
        assert engine.machines["flow"].arn == FLOW_ARN
        await runtime.put_events([{"Source": "shop", "DetailType": "o", "Detail": '{"n": 21}'}])
        assert await received(runtime, "out", 1) == [{"n": 21}]
        [started] = await engine.list_executions("flow")
        done = await asyncio.wait_for(engine.wait_for(started["executionArn"]), 10)
        assert done.status == "SUCCEEDED"
        parent = await engine.start_execution("parent", "{}")
        finished = await asyncio.wait_for(engine.wait_for(parent["executionArn"]), 10)
        assert finished.status == "SUCCEEDED", finished
        assert await received(runtime, "out", 1) == [{"n": 7}]
        orders = runtime.resource("orders")
        assert isinstance(orders, QueueTarget) and orders.store is not None
        from plugins.queue.store import SendEntry

        _, failed = await orders.store.send_batch("orders", [SendEntry('{"id": 5}', id="1")])
        assert not failed
        assert await received(runtime, "tagged", 1) == [{"id": 5, "tagged": True}]


async def test_a_schedule_starts_a_section_machine_by_name_and_by_arn(tmp_path: Path) -> None:
    start = datetime(2026, 1, 5, 9, 0, tzinfo=UTC).timestamp()
    config = load_config(
        write(
            tmp_path / "pipeline.yaml",
            f"""\
resources:
  out: {{type: queue}}
state_machines:
  flow: {{definition: {json.dumps(FLOW)}}}
schedules:
  by-name: {{expression: "at(2026-01-05T09:05:00)", target: {{resource: flow, input: '{{"n": 1}}'}}}}
  by-arn: {{expression: "at(2026-01-05T09:06:00)", target: {{arn: "{FLOW_ARN}", input: '{{"n": 2}}'}}}}
""",
        )
    )
    runtime = await build_runtime(
        config, clock=ManualClock(start), state_path=tmp_path / "state.db", plugins=plugin_manager()
    )
    clock = runtime.clock
    assert isinstance(clock, ManualClock)
    async with runtime:
        # Each run's execution ends before time moves on (a jump past its
        # lease would have this runner give it up).
        await clock.advance(5 * 60 + 1)
        assert await received(runtime, "out", 1) == [{"n": 1}]
        await clock.advance(60)
        assert await received(runtime, "out", 1) == [{"n": 2}]
        names = [e["stateMachineArn"] for e in await executions_of(runtime).list_executions("flow")]
    assert names == [FLOW_ARN, FLOW_ARN]


async def test_a_reload_replaces_a_changed_section_machine(tmp_path: Path) -> None:
    text = """\
resources:
  out: {type: queue}
state_machines:
  flow:
    definition:
      StartAt: Send
      States:
        Send:
          Type: Task
          Resource: arn:aws:states:::sqs:sendMessage
          Parameters: {QueueUrl: out, MessageBody: {version: VERSION}}
          End: true
"""
    path = tmp_path / "pipeline.yaml"
    current = load_config(write(path, text.replace("VERSION", "1")))
    runtime = await build_runtime(
        current, state_path=tmp_path / "state.db", plugins=plugin_manager()
    )
    async with runtime:
        engine = executions_of(runtime)
        await engine.start_execution("flow", "{}")
        assert await received(runtime, "out", 1) == [{"version": 1}]
        broken = load_config(write(path, text.replace("VERSION", "1").replace("End", "Ending")))
        with pytest.raises(ConfigInvalid) as refused:  # refused, and flow goes on as it was
            await reload(runtime, current, broken)
        assert all(p.message.startswith("state_machines.flow.") for p in refused.value.problems)
        new = load_config(write(path, text.replace("VERSION", "2")))
        summary = await reload(runtime, current, new)
        assert summary.changed == ["state machine flow"]  # as the file writes it
        await executions_of(runtime).start_execution("flow", "{}")
        assert await received(runtime, "out", 1) == [{"version": 2}]


# -- schema ------------------------------------------------------------------


def test_the_schema_describes_the_section_with_the_types_settings(tmp_path: Path) -> None:
    schema = config_schema(plugin_manager())
    entry = schema["properties"]["state_machines"]["additionalProperties"]
    assert set(entry["properties"]) == set(SETTINGS_TABLE.properties()["properties"])
    assert entry["additionalProperties"] is False
    validator = jsonschema.Draft202012Validator(schema)
    good = {
        "state_machines": {"f": {"definition_file": "f.asl.json", "state_machine_type": "EXPRESS"}}
    }
    assert list(validator.iter_errors(good)) == []
    for bad in (
        {"f": {"definition_file": "f.asl.json", "type": "state_machine"}},
        {"f": {"definition_file": "f.asl.json", "state_machine_type": "FAST"}},
    ):
        assert list(validator.iter_errors({"state_machines": bad})), bad
    printed = run_cli("schema")
    assert printed.returncode == 0, printed.stderr
    published = json.loads(printed.stdout)["properties"]["state_machines"]
    assert "definition" in published["additionalProperties"]["properties"]


# -- CloudFormation ----------------------------------------------------------


def test_export_and_import_round_trip_the_section(tmp_path: Path) -> None:
    write(tmp_path / "flow.asl.json", json.dumps(FLOW))
    config = write(
        tmp_path / "pipeline.yaml",
        """\
resources:
  out: {type: queue}
  legacy: {type: state_machine, definition: {StartAt: A, States: {A: {Type: Succeed}}}}
state_machines:
  flow: {definition_file: flow.asl.json, role_arn: "arn:aws:iam::000000000000:role/flow"}
  quick:
    state_machine_type: EXPRESS
    definition: {StartAt: P, States: {P: {Type: Pass, End: true}}}
rules:
  r:
    pattern: {source: [shop]}
    targets: [{id: a, resource: flow}, {id: b, resource: quick}, {id: c, resource: legacy}]
""",
    )
    template = tmp_path / "out" / "template.yaml"
    template.parent.mkdir()
    exported = run_cli("export", str(config), "-w", str(template))
    assert exported.returncode == 0, exported.stderr
    resources = yaml.safe_load(template.read_text())["Resources"]
    machines = {
        body["Properties"]["StateMachineName"]: body["Properties"]
        for body in resources.values()
        if body["Type"] == "AWS::StepFunctions::StateMachine"
    }
    assert set(machines) == {"flow", "quick", "legacy"}
    assert machines["flow"]["Definition"] == FLOW  # the file, read
    assert machines["flow"]["RoleArn"] == "arn:aws:iam::000000000000:role/flow"
    assert machines["quick"]["StateMachineType"] == "EXPRESS"
    targets = resources["RRule"]["Properties"]["Targets"]
    assert [t["Arn"] for t in targets] == [
        {"Ref": "FlowStateMachine"},
        {"Ref": "QuickStateMachine"},
        {"Ref": "LegacyStateMachine"},
    ]
    back = tmp_path / "out" / "pipeline.yaml"
    imported = run_cli("import", str(template), "-w", str(back))
    assert imported.returncode == 0, imported.stderr
    data = yaml.safe_load(back.read_text())
    # The documented form: every state machine in the section, none a resource.
    assert set(data["state_machines"]) == {"flow", "quick", "legacy"}
    assert all(body.get("type") != "state_machine" for body in data["resources"].values())
    assert run_cli("validate", str(back)).returncode == 0
    original = config_data(load_config([config]))
    assert equivalent(config_data(load_config([back])), back.parent) == equivalent(
        original, config.parent
    )


def test_a_templates_bad_definition_is_placed_in_the_template(tmp_path: Path) -> None:
    template = write(
        tmp_path / "template.yaml",
        """\
Resources:
  Flow:
    Type: AWS::StepFunctions::StateMachine
    Properties:
      StateMachineName: flow
      RoleArn: arn:aws:iam::000000000000:role/r
      Definition:
        StartAt: A
        States:
          A: {Type: Pass, Next: Gone}
""",
    )
    config, _ = config_for_run([template])
    assert "flow" in config.state_machines
    with pytest.raises(ConfigInvalid) as raised:
        asyncio.run(build_runtime(config, state_path=None, plugins=plugin_manager()))
    [problem] = [p for p in raised.value.problems if "MISSING_TRANSITION_TARGET" in p.message]
    assert (problem.file, problem.line) == (str(template), 10), problem
    assert problem.message.startswith("state_machines.flow.definition.States.A.Next: ")
