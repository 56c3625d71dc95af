"""Export then import gives back an equivalent config: over every example's
config and over generated ones; cfn-lint validates every exported template."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.cloudformation import (
    config_data,
    dump_yaml,
    equivalent,
    export_config,
    import_templates,
)
from pipelines.config import load_config

EXAMPLES = Path(__file__).parent.parent / "examples"
CONFIGS = sorted(EXAMPLES.glob("*/pipeline.yaml"))
CFN_LINT = Path(sys.executable).with_name("cfn-lint")


def cfn_lint(*templates: Path) -> None:
    """cfn-lint over exported templates: no error and no warning."""
    found = subprocess.run(
        [str(CFN_LINT), "--format", "parseable", *map(str, templates)],
        capture_output=True,
        text=True,
    )
    assert found.returncode == 0, found.stdout + found.stderr


def without_skipped(data: dict[str, Any], skipped: list[tuple[str, str]]) -> dict[str, Any]:
    """The config less the whole parts the export said it could not write."""
    data = json.loads(json.dumps(data))
    for where, _ in reversed(skipped):  # a rule's later targets first
        section, _, name = where.partition(".")
        target = re.fullmatch(r"(.+)\.targets\[(\d+)\]", name)
        if section == "rules" and target:
            del data["rules"][target.group(1)]["targets"][int(target.group(2))]
        elif (
            section in ("resources", "rules", "archives", "alarms", "schedules") and "." not in name
        ):
            (data.get(section) or {}).pop(name, None)
    return data


def round_trip(
    data: dict[str, Any], directory: Path, out: Path
) -> tuple[dict[str, Any], Any, Path]:
    exported = export_config(data, directory=directory, template_directory=out)
    template = out / "template.yaml"
    template.write_text(dump_yaml(exported.template))
    imported = import_templates([template], directory=directory, write_code=False)
    return imported.config, exported, template


@pytest.mark.parametrize("path", CONFIGS, ids=[p.parent.name for p in CONFIGS])
def test_an_examples_config_round_trips(path: Path, tmp_path: Path) -> None:
    config = load_config([path], environ={"GITHUB_SECRET": "secret"})
    data = config_data(config)
    back, exported, template = round_trip(data, config.directory, tmp_path)
    expected = without_skipped(data, exported.skipped)
    assert equivalent(back, config.directory) == equivalent(expected, config.directory)
    again = import_templates([template], directory=config.directory, write_code=False)
    assert [row.resource for row in again.skipped if not row.generated] == []
    lint_later(template)


def test_what_has_no_equivalent_is_reported_not_dropped(tmp_path: Path) -> None:
    config = load_config([EXAMPLES / "webhooks" / "pipeline.yaml"], environ={"GITHUB_SECRET": "s"})
    exported = export_config(config_data(config), directory=config.directory)
    assert (
        "resources.github",
        "a webhook resource has no CloudFormation equivalent",
    ) in exported.skipped


def test_local_settings_and_names_ride_in_metadata(tmp_path: Path) -> None:
    data = {
        "resources": {
            "failures": {
                "type": "log_group",
                "log_group": "/pipelines/failed",
                "retention_days": 14,
            },
            "orders": {"type": "topic", "subject": "order event", "subscriptions": []},
        },
        "rules": {
            "r": {
                "schedule": {"expression": "rate(5 minutes)", "missed_runs": "fire_once"},
                "targets": [{"id": "t", "resource": "orders"}],
            }
        },
    }
    template = export_config(data, directory=tmp_path).template["Resources"]
    assert template["FailuresLogGroup"]["Metadata"] == {"pipelines": {"name": "failures"}}
    assert template["OrdersTopic"]["Metadata"] == {
        "pipelines": {"settings": {"subject": "order event"}}
    }
    assert template["RRule"]["Properties"]["ScheduleExpression"] == "rate(5 minutes)"
    back, _, _ = round_trip(data, tmp_path, tmp_path)
    assert equivalent(back) == equivalent(data)


def test_an_event_source_mapping_pipe_exports_as_one(tmp_path: Path) -> None:
    (tmp_path / "jobs.py").write_text("def work(event, context=None):\n    return None\n")
    data = {
        "resources": {
            "jobs": {"type": "queue"},
            "worker": {"type": "function", "function": "jobs:work"},
        },
        "pipes": {
            "work": {
                "source": "jobs",
                "target": "worker",
                "invoke_as": "event_source_mapping",
                "source_parameters": {"batch_size": 5, "maximum_batching_window_in_seconds": 2},
                "filters": [{"body": {"kind": ["job"]}}],
            },
            "plain": {"source": "jobs", "target": "worker"},
        },
    }
    template = export_config(data, directory=tmp_path).template["Resources"]
    [mapping] = [r for r in template.values() if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    assert mapping["Properties"]["BatchSize"] == 5
    assert mapping["Properties"]["MaximumBatchingWindowInSeconds"] == 2
    assert mapping["Properties"]["EventSourceArn"]["Fn::GetAtt"][1] == "Arn"
    assert mapping["Properties"]["FilterCriteria"] == {
        "Filters": [{"Pattern": '{"body": {"kind": ["job"]}}'}]
    }
    assert [r["Type"] for r in template.values()].count("AWS::Pipes::Pipe") == 1  # "plain"
    back, _, written = round_trip(data, tmp_path, tmp_path)
    lint_later(written)
    assert back["pipes"]["work"]["invoke_as"] == "event_source_mapping"
    assert "invoke_as" not in back["pipes"]["plain"]
    assert equivalent(back, tmp_path) == equivalent(data, tmp_path)


# -- generated configs ----------------------------------------------------------------

NAMES = st.from_regex(r"[a-z][a-z0-9]{0,6}(-[a-z0-9]{1,4})?", fullmatch=True)
PATTERNS = st.fixed_dictionaries(
    {
        "source": st.lists(
            st.sampled_from(["shop", "shop.orders", "billing"]), min_size=1, max_size=2, unique=True
        )
    },
    optional={"detail": st.fixed_dictionaries({"total": st.just([{"numeric": [">", 100]}])})},
)


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(NAMES, min_size=4, max_size=9, unique=True))
    kinds = draw(
        st.lists(
            st.sampled_from(["queue", "function", "topic", "stream", "log_group", "state_machine"]),
            min_size=len(names),
            max_size=len(names),
        )
    )
    kinds[0], kinds[1] = "queue", "function"  # something to target, something to consume
    resources: dict[str, Any] = {}
    queues = [n for n, k in zip(names, kinds, strict=True) if k == "queue"]
    functions = [n for n, k in zip(names, kinds, strict=True) if k == "function"]
    for name, kind in zip(names, kinds, strict=True):
        body: dict[str, Any] = {"type": kind}
        if kind == "queue":
            body.update(
                draw(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "visibility_timeout": st.integers(0, 43200),
                            "delay_seconds": st.integers(0, 900),
                        },
                    )
                )
            )
            others = [q for q in queues if q != name]
            if others and draw(st.booleans()):
                body["redrive_policy"] = {
                    "dead_letter_queue": draw(st.sampled_from(others)),
                    "max_receive_count": draw(st.integers(1, 1000)),
                }
        elif kind == "function":
            body["function"] = f"handlers_{name.replace('-', '_')}:run"
            body.update(draw(st.fixed_dictionaries({}, optional={"timeout": st.integers(1, 900)})))
        elif kind == "topic":
            body["subscriptions"] = [
                {
                    "id": f"s{i}",
                    "resource": target,
                    **draw(
                        st.fixed_dictionaries(
                            {},
                            optional={
                                "filter_policy": st.just({"kind": ["order"]}),
                                "raw_message_delivery": st.just(True),
                            },
                        )
                    ),
                }
                for i, target in enumerate(
                    draw(st.lists(st.sampled_from(queues + functions), max_size=3))
                )
            ]
            if draw(st.booleans()):
                body["subject"] = "news"
        elif kind == "stream":
            body.update(draw(st.fixed_dictionaries({}, optional={"shards": st.integers(1, 8)})))
            chosen = draw(st.lists(st.sampled_from(functions), max_size=2, unique=True))
            if chosen:
                body["consumers"] = {
                    f"c{i}": {"target": f, "batch_size": 10} for i, f in enumerate(chosen)
                }
        elif kind == "log_group":
            body["retention_days"] = draw(st.sampled_from([1, 7, 14, 30]))
            if draw(st.booleans()):
                body["metric_filters"] = {
                    "errors": {
                        "pattern": "ERROR",
                        "metric_name": "Errors",
                        "metric_namespace": "App",
                        "metric_value": 1,
                    }
                }
        elif kind == "state_machine":
            body["definition"] = {"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}
        resources[name] = body
    buses = draw(st.lists(st.sampled_from(["audit", "billing"]), unique=True, max_size=2))
    rules: dict[str, Any] = {}
    targets = [n for n in names if resources[n]["type"] != "log_group"]
    for index in range(draw(st.integers(0, 3))):
        rule: dict[str, Any] = (
            {"pattern": draw(PATTERNS)} if draw(st.booleans()) else {"schedule": "rate(5 minutes)"}
        )
        if buses and "pattern" in rule and draw(st.booleans()):
            rule["bus"] = draw(st.sampled_from(buses))
        target: dict[str, Any] = {"id": "t1", "resource": draw(st.sampled_from(targets))}
        target.update(
            draw(
                st.sampled_from(
                    [
                        {},
                        {"input_path": "$.detail"},
                        {"input": '{"fixed": true}'},
                        {
                            "input_transformer": {
                                "input_paths_map": {"s": "$.source"},
                                "input_template": '{"s": <s>}',
                            }
                        },
                    ]
                )
            )
        )
        if draw(st.booleans()):
            target["retry_policy"] = {"maximum_retry_attempts": draw(st.integers(0, 185))}
        if draw(st.booleans()):
            target["dead_letter"] = draw(st.sampled_from(queues))
        rule["targets"] = [target]
        if draw(st.booleans()):
            rule["state"] = "DISABLED"
        rules[f"rule-{index}"] = rule
    data: dict[str, Any] = {"resources": resources}
    if buses:
        data["buses"] = buses
    if rules:
        data["rules"] = rules
    if draw(st.booleans()):
        data["archives"] = {"everything": {"pattern": {"source": ["shop"]}, "retention_days": 7}}
    if draw(st.booleans()):
        data["alarms"] = {
            "failing": {
                "namespace": "Pipelines/Events",
                "metric_name": "FailedInvocations",
                "period": 60,
                "evaluation_periods": 1,
                "threshold": 1,
                "statistic": "Sum",
                "actions": {"alarm": [queues[0]]},
            },
            "unhealthy": {"rule": "ALARM(failing)"},
        }
    if draw(st.booleans()):
        data["pipes"] = {
            "feedpipe0": {  # a name NAMES cannot make
                "source": queues[0],
                "target": draw(st.sampled_from(functions)),
                "source_parameters": {"batch_size": draw(st.integers(1, 10))},
                **draw(
                    st.fixed_dictionaries(
                        {}, optional={"filters": st.just([{"body": {"kind": ["a"]}}])}
                    )
                ),
            }
        }
    if draw(st.booleans()):
        resources["hookdest0"] = {  # a name NAMES cannot make
            "type": "api_destination",
            "endpoint": "https://example.com/*",
            "connection": {
                "authorization_type": "API_KEY",
                "api_key": {"name": "X-Key", "value": "k"},
            },
        }
    if draw(st.booleans()):
        data["schemas"] = {
            "registries": {
                "shop": {
                    "description": "what the shop puts",
                    "schemas": {
                        "shop@Order": {
                            "type": "JSONSchemaDraft4",
                            "content": {"type": "object", "required": ["detail"]},
                        }
                    },
                }
            },
            "discoverers": ["default", *buses[:1]],
            **draw(st.fixed_dictionaries({}, optional={"discovery": st.just({"queue": 64})})),
        }
    if draw(st.booleans()):
        data["schedule_groups"] = {"reports": {}}
        data["schedules"] = {
            "reports/nightly": {
                "expression": "cron(0 2 * * ? *)",
                "timezone": "Europe/Berlin",
                "target": {"resource": draw(st.sampled_from(targets)), "input": '{"n": 1}'},
            }
        }
    return data


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=configs())
def test_generated_configs_round_trip(
    data: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    out = tmp_path_factory.mktemp("roundtrip")
    back, exported, template = round_trip(data, out, out)
    assert exported.skipped == []
    assert equivalent(back, out) == equivalent(data, out)
    lint_later(template)


LINTED: list[Path] = []


def lint_later(template: Path) -> None:
    copy = LINT_DIRECTORY[0] / f"{len(LINTED)}.yaml"
    copy.write_text(template.read_text())
    LINTED.append(copy)


LINT_DIRECTORY: list[Path] = []


@pytest.fixture(autouse=True, scope="module")
def _lint_together(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """cfn-lint every exported template of this module in one run at its end
    (a process per template takes minutes on a busy machine)."""
    LINT_DIRECTORY.append(tmp_path_factory.mktemp("linted"))
    yield
    if LINTED:
        cfn_lint(*LINTED)


def test_cfn_lint_catches_what_cloudformation_refuses(tmp_path: Path) -> None:
    template = tmp_path / "bad.yaml"
    template.write_text(
        "Resources:\n  Q:\n    Type: AWS::SQS::Queue\n    Properties: {VisibilityTimeout: lots, Colour: red}\n"
    )
    with pytest.raises(AssertionError, match="Colour"):
        cfn_lint(template)


def test_an_export_adds_what_delivering_needs_on_aws(tmp_path: Path) -> None:
    data = {
        "resources": {
            "jobs": {"type": "queue"},
            "dlq": {"type": "queue"},
            "work": {"type": "function", "function": "work:run"},
            "news": {"type": "topic", "subscriptions": [{"id": "w", "resource": "work"}]},
            "flow": {
                "type": "state_machine",
                "definition": {"StartAt": "A", "States": {"A": {"Type": "Succeed"}}},
            },
        },
        "rules": {
            "r": {
                "pattern": {"source": ["shop"]},
                "targets": [
                    {"id": "q", "resource": "jobs", "dead_letter": "dlq"},
                    {"id": "f", "resource": "flow"},
                ],
            }
        },
    }
    resources = export_config(data, directory=tmp_path).template["Resources"]
    jobs = resources["JobsQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert jobs == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": {"Fn::GetAtt": ["JobsQueue", "Arn"]},
            "Condition": {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["RRule", "Arn"]}}},
        }
    ]
    assert "DlqQueuePolicy" in resources
    assert resources["NewsTopicWorkFunctionPermission"]["Properties"] == {
        "Action": "lambda:InvokeFunction",
        "FunctionName": {"Ref": "WorkFunction"},
        "Principal": "sns.amazonaws.com",
        "SourceArn": {"Ref": "NewsTopic"},
    }
    targets = resources["RRule"]["Properties"]["Targets"]
    assert "RoleArn" not in targets[0]
    assert targets[1]["RoleArn"] == {"Fn::GetAtt": ["PipelinesEventsRole", "Arn"]}
    assert resources["FlowStateMachine"]["Properties"]["RoleArn"] == {
        "Fn::GetAtt": ["PipelinesStatesRole", "Arn"]
    }
    back, _, template = round_trip(data, tmp_path, tmp_path)
    assert equivalent(back) == equivalent(data)
    rows = import_templates([template], directory=tmp_path, write_code=False).rows
    generated = {row.resource for row in rows if row.generated}
    assert generated == {
        "JobsQueuePolicy",
        "DlqQueuePolicy",
        "NewsTopicWorkFunctionPermission",
        "PipelinesEventsRole",
        "PipelinesStatesRole",
    }
    lint_later(template)
