"""pipelines import, export and run --cloudformation, as a user runs them."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import yaml

from .helpers import run_cli

DATA = Path(__file__).parent.parent / "examples" / "cloudformation"
EXAMPLES = Path(__file__).parent.parent / "examples"


def test_import_writes_a_config_that_validates_and_reports_every_resource(tmp_path: Path) -> None:
    shutil.copytree(DATA / "sns-fanout", tmp_path / "app")
    config = tmp_path / "app" / "pipeline.yaml"
    result = run_cli("import", str(tmp_path / "app" / "template.yaml"), "-w", str(config))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {row["resource"]: row["status"] for row in report["resources"]} == {
        "OrderTopic": "runs",
        "BigOrdersQueue": "runs",
        "EuOrdersQueue": "runs",
        "RefundsQueue": "runs",
        "BigOrdersSubscription": "mapped",
        "EuOrdersSubscription": "mapped",
        "RefundsSubscription": "mapped",
        "EmailSubscription": "skipped",
        "FanOutQueuePolicy": "skipped",
    }
    assert report["outputs"] == [
        {
            "template": str(tmp_path / "app" / "template.yaml"),
            "name": "TopicArn",
            "value": "arn:aws:sns:us-east-1:000000000000:orders",
            "export": None,
        }
    ]
    assert run_cli("validate", str(config)).returncode == 0
    assert yaml.safe_load(config.read_text())["resources"]["orders"]["type"] == "topic"
    table = run_cli(
        "import", str(tmp_path / "app" / "template.yaml"), "-w", str(config), "-o", "table"
    )
    assert (
        "EmailSubscription" in table.stdout
        and "email subscriptions are not delivered" in table.stdout
    )


def test_import_to_stdout_keeps_the_report_on_stderr(tmp_path: Path) -> None:
    result = run_cli(
        "import", str(DATA / "rule-to-sqs" / "template.yaml"), "--parameter", "Stage=prod"
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert config["buses"] == ["orders-prod"]
    assert config["resources"]["template-orders-prod"]["visibility_timeout"] == 120
    assert "EventBridgeToQueuePolicy" in result.stderr
    bad = run_cli("import", str(DATA / "rule-to-sqs" / "template.yaml"), "--parameter", "Stage=qa")
    assert bad.returncode == 1
    assert "Parameters.Stage: 'qa' is not one of AllowedValues (dev, prod)" in bad.stderr
    unknown = run_cli(
        "import", str(DATA / "rule-to-sqs" / "template.yaml"), "--parameter", "Stag=qa"
    )
    assert "--parameter Stag: no template declares it" in unknown.stderr


def test_export_writes_a_template_import_reads_back(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES / "orders", tmp_path / "orders")
    (tmp_path / "orders" / "cfn").mkdir()
    template = tmp_path / "orders" / "cfn" / "template.yaml"
    result = run_cli("export", str(tmp_path / "orders" / "pipeline.yaml"), "-w", str(template))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    written = yaml.safe_load(template.read_text())
    assert written["Transform"] == "AWS::Serverless-2016-10-31"
    function = written["Resources"]["ChargeFunction"]["Properties"]
    assert (function["CodeUri"], function["Handler"]) == ("..", "shop.charge")
    imported = tmp_path / "orders" / "imported.yaml"
    back = run_cli("import", str(template), "-w", str(imported), "--strict")
    assert back.returncode == 0, back.stderr
    assert yaml.safe_load(imported.read_text())["resources"]["charge"] == {
        "type": "function",
        "function": "shop:charge",
    }
    assert run_cli("validate", str(imported)).returncode == 0
    as_json = tmp_path / "orders" / "cfn" / "template.json"
    assert (
        run_cli("export", str(tmp_path / "orders" / "pipeline.yaml"), "-w", str(as_json)).returncode
        == 0
    )
    assert json.loads(as_json.read_text()) == written


def test_export_lists_what_has_no_equivalent(tmp_path: Path) -> None:
    result = run_cli("export", str(EXAMPLES / "iot" / "pipeline.yaml"))
    assert result.returncode == 0
    assert "not exported: resources." in result.stderr
    assert "a mqtt resource has no CloudFormation equivalent" in result.stderr
    strict = run_cli("export", str(EXAMPLES / "iot" / "pipeline.yaml"), "--strict")
    assert strict.returncode == 1
    assert "have no CloudFormation equivalent" in strict.stderr


def test_run_reports_a_bad_template_at_its_line(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(
        textwrap.dedent(
            """\
            Resources:
              Rule:
                Type: AWS::Events::Rule
                Properties:
                  EventPattern: {source: [shop]}
                  Targets: [{Id: t, Arn: !GetAtt Queue.Arn}]
            """
        )
    )
    result = run_cli("run", str(template), "--cloudformation", "--no-control")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"{template}:6:30: Resources.Rule.Properties.Targets[0].Arn.Fn::GetAtt:"
        " refers to 'Queue': no parameter or resource of that name"
    )


def test_run_takes_several_stacks_and_their_exports(tmp_path: Path) -> None:
    (tmp_path / "shared.yaml").write_text(
        "Resources:\n  Q: {Type: AWS::SQS::Queue, Properties: {QueueName: shared}}\n"
        "Outputs:\n  Arn: {Value: !GetAtt Q.Arn, Export: {Name: shared-arn}}\n"
    )
    (tmp_path / "app.yaml").write_text(
        "Resources:\n  R:\n    Type: AWS::Events::Rule\n    Properties:\n"
        "      EventPattern: {source: [shop]}\n"
        "      Targets: [{Id: q, Arn: !ImportValue shared-arn}]\n"
    )
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"Source": "shop", "DetailType": "x", "Detail": "{}"}) + "\n")
    result = run_cli(
        "run",
        str(tmp_path / "shared.yaml"),
        str(tmp_path / "app.yaml"),
        "--cloudformation",
        "--no-control",
        "--input",
        str(events),
    )
    assert result.returncode == 0, result.stderr
    assert "output Arn: arn:aws:sqs:us-east-1:000000000000:shared" in result.stderr
    received = run_cli(
        "queue", "receive", "shared", "--state", str(tmp_path / ".pipelines" / "state.db")
    )
    assert json.loads(json.loads(received.stdout)[0]["Body"])["source"] == "shop"


def test_an_exported_example_runs_as_a_template(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES / "fanout", tmp_path / "fanout")
    template = tmp_path / "fanout" / "template.yaml"
    assert (
        run_cli(
            "export", str(tmp_path / "fanout" / "pipeline.yaml"), "-w", str(template)
        ).returncode
        == 0
    )
    result = run_cli(
        "run",
        str(template),
        "--cloudformation",
        "--no-control",
        "--input",
        str(tmp_path / "fanout" / "events.jsonl"),
    )
    assert result.returncode == 0, result.stderr
    state = str(tmp_path / "fanout" / ".pipelines" / "state.db")
    received = json.loads(
        run_cli("queue", "receive", "big-orders", "--state", state, "-n", "10").stdout
    )
    assert received and all(json.loads(m["Body"])["source"] == "shop.orders" for m in received)


def test_import_warns_of_text_a_config_would_substitute(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(
        "Resources:\n  Q: {Type: AWS::SQS::Queue}\n  R:\n    Type: AWS::Events::Rule\n"
        "    Properties:\n      EventPattern: {source: [shop]}\n"
        '      Targets: [{Id: q, Arn: !GetAtt Q.Arn, Input: !Sub \'{"x": "${!HOME}"}\'}]\n'
    )
    result = run_cli("import", str(template))
    assert result.returncode == 0, result.stderr
    assert "warning: rules.R.targets[0].input holds ${...}" in result.stderr
