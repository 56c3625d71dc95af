"""Bad templates: each problem is one line, at its template path and
file:line:column, never a traceback."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pipelines.cloudformation import TemplateInvalid, import_templates

from .helpers import run_cli


def problems(tmp_path: Path, text: str, **options: object) -> list[str]:
    template = tmp_path / "template.yaml"
    template.write_text(textwrap.dedent(text))
    with pytest.raises(TemplateInvalid) as caught:
        import_templates([template], **options)  # type: ignore[arg-type]
    return [str(p).replace(str(tmp_path) + "/", "") for p in caught.value.problems]


def test_a_ref_to_an_unknown_resource_names_its_path_and_line(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        Resources:
          OrderQueue:
            Type: AWS::SQS::Queue
            Properties:
              RedrivePolicy:
                deadLetterTargetArn: !GetAtt OrdersDLQ.Arn
                maxReceiveCount: 3
        """,
    )
    assert found == [
        "template.yaml:6:30: Resources.OrderQueue.Properties.RedrivePolicy.deadLetterTargetArn"
        ".Fn::GetAtt: refers to 'OrdersDLQ': no parameter or resource of that name"
    ]


def test_a_ref_to_an_unknown_parameter(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        Parameters:
          Stage: {Type: String, Default: dev}
        Resources:
          Queue:
            Type: AWS::SQS::Queue
            Properties:
              QueueName: !Sub "orders-${Stgae}"
        """,
    )
    assert found == [
        "template.yaml:7:18: Resources.Queue.Properties.QueueName.Fn::Sub: refers to 'Stgae':"
        " no parameter or resource of that name"
    ]


def test_a_circular_dependency_is_reported_with_its_loop(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        Resources:
          A:
            Type: AWS::SQS::Queue
            Properties:
              RedrivePolicy: {deadLetterTargetArn: !GetAtt B.Arn, maxReceiveCount: 1}
          B:
            Type: AWS::SQS::Queue
            DependsOn: [C]
          C:
            Type: AWS::SNS::Topic
            DependsOn: A
        """,
    )
    assert found == ["template.yaml:2:3: Resources.A: circular dependency: A -> B -> C -> A"]


def test_a_bad_property_is_located_at_its_path(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        Resources:
          OrderQueue:
            Type: AWS::SQS::Queue
            Properties:
              RedrivePolicy: {maxReceiveCount: 3}
        """,
    )
    assert found == [
        "template.yaml:5:7: Resources.OrderQueue.Properties.RedrivePolicy:"
        " a redrive policy names its deadLetterTargetArn"
    ]


def test_what_is_not_cloudformation_is_each_reported(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        AWSTemplateFormatVersion: "2010-09-09"
        Resource:
          Queue: {Type: AWS::SQS::Queue}
        """,
    )
    assert found == [
        "template.yaml:1:1: Resources: a template needs Resources: a mapping of at least one",
        "template.yaml:2:1: Resource: not a template section (AWSTemplateFormatVersion,"
        " Conditions, Description, Globals, Mappings, Metadata, Outputs, Parameters,"
        " Resources, Rules, Transform)",
    ]
    found = problems(
        tmp_path,
        """\
        Resources:
          Queue:
            Typo: AWS::SQS::Queue
          Topic:
            Type: AWS::SNS::Topic
            Propertys: {}
          Bad_Name:
            Type: AWS::SNS::Topic
        """,
    )
    assert found == [
        "template.yaml:2:3: Resources.Queue: a resource is a mapping with a Type",
        "template.yaml:6:5: Resources.Topic.Propertys: not a resource attribute (Condition,"
        " CreationPolicy, DeletionPolicy, DependsOn, Metadata, Properties, Type,"
        " UpdatePolicy, UpdateReplacePolicy)",
        "template.yaml:7:3: Resources.Bad_Name: a logical id is letters and digits only",
    ]


def test_yaml_and_json_syntax_and_unknown_tags(tmp_path: Path) -> None:
    assert problems(tmp_path, "Resources:\n  Q: {Type: AWS::SQS::Queue\n") == [
        "template.yaml:3:1: YAML syntax: while parsing a flow mapping expected ',' or '}',"
        " but got '<stream end>'"
    ]
    found = problems(tmp_path, "Resources:\n  Q:\n    Type: !Reff Other\n")
    assert found == ["template.yaml:3:11: !Reff is not a CloudFormation function"]
    template = tmp_path / "template.json"
    template.write_text('{"Resources": {"Q": {"Type": "AWS::SQS::Queue"}}')
    with pytest.raises(TemplateInvalid) as caught:
        import_templates([template])
    assert str(caught.value.problems[0]).startswith(f"{template}:1:")


def test_parameters_are_checked(tmp_path: Path) -> None:
    text = """\
        Parameters:
          Stage: {Type: String, AllowedValues: [dev, prod]}
          Size: {Type: Number, Default: big}
        Resources:
          Q: {Type: AWS::SQS::Queue}
        """
    assert problems(tmp_path, text) == [
        "template.yaml:2:3: Parameters.Stage: has no Default: give it with --parameter Stage=VALUE",
        "template.yaml:3:24: Parameters.Size.Default: 'big' is not a number",
    ]
    assert problems(tmp_path, text, parameters={"Stage": "test", "Size": "3"}) == [
        "template.yaml:2:3: Parameters.Stage: 'test' is not one of AllowedValues (dev, prod)"
    ]


def test_attributes_mappings_and_conditions(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        Mappings:
          Sizes: {dev: {Timeout: 30}}
        Conditions:
          Loop: !Not [!Condition Loop]
        Resources:
          Q:
            Type: AWS::SQS::Queue
            Properties:
              VisibilityTimeout: !FindInMap [Sizes, prod, Timeout]
          T:
            Type: AWS::SNS::Topic
            Condition: Loop
            Properties:
              TopicName: !GetAtt Q.Colour
        """,
    )
    assert found == [
        "template.yaml:4:3: Conditions.Loop: conditions refer to each other: Loop -> Loop",
        "template.yaml:9:26: Resources.Q.Properties.VisibilityTimeout.Fn::FindInMap:"
        " Mappings.Sizes has no key 'prod' (keys: dev)",
    ]


def test_an_import_of_an_export_no_stack_gives(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        Resources:
          Q:
            Type: AWS::SQS::Queue
            Properties: {QueueName: !ImportValue shared-name}
        """,
    )
    assert found == [
        "template.yaml:4:29: Resources.Q.Properties.QueueName.Fn::ImportValue: no stack given"
        " before this one exports 'shared-name' (exports: none); give the exporting template first"
    ]


def test_the_command_prints_each_problem_and_no_traceback(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(
        "Resources:\n  Q:\n    Type: AWS::SQS::Queue\n    Properties: {QueueName: !Ref Nope}\n"
        "  R:\n    Type: AWS::SQS::Queue\n    Properties: {QueueName: !Ref Nada}\n"
    )
    result = run_cli("import", str(template))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"{template}:4:29: Resources.Q.Properties.QueueName.Ref: refers to 'Nope':"
        " no parameter or resource of that name",
        f"{template}:7:29: Resources.R.Properties.QueueName.Ref: refers to 'Nada':"
        " no parameter or resource of that name",
    ]


def test_a_config_problem_is_located_in_the_template(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(
        textwrap.dedent(
            """\
            Resources:
              Q: {Type: AWS::SQS::Queue, Properties: {VisibilityTimeout: 99999}}
              R:
                Type: AWS::Events::Rule
                Properties:
                  EventPattern: {source: shop}
                  Targets: [{Id: q, Arn: !GetAtt Q.Arn}]
            """
        )
    )
    result = run_cli("import", str(template), "-w", str(tmp_path / "pipeline.yaml"))
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert any(line.startswith(f"{template}:2:") and "visibility_timeout" in line for line in lines)
    assert any(line.startswith(f"{template}:6:") and "source" in line for line in lines), lines
    assert not (tmp_path / "pipeline.yaml").exists()


def test_strict_makes_a_skipped_resource_an_error(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(
        "Resources:\n  Q: {Type: AWS::SQS::Queue}\n  Role:\n    Type: AWS::IAM::Role\n"
        "    Properties: {AssumeRolePolicyDocument: {}}\n"
    )
    assert run_cli("import", str(template)).returncode == 0
    strict = run_cli("import", str(template), "--strict")
    assert strict.returncode == 1
    assert strict.stderr.splitlines() == [
        f"{template}:3:3: Resources.Role (AWS::IAM::Role) is skipped:"
        " permissions are not enforced locally"
    ]


def test_what_is_folded_into_a_resource_with_a_problem_is_skipped_not_a_crash(
    tmp_path: Path,
) -> None:
    # A queue, a log group and a topic each with a bad property; an event
    # source mapping, a metric filter and a subscription folded into them.
    # Each bad property is one line (the topic's, read twice, too), and what
    # refers to them adds no KeyError.
    found = problems(
        tmp_path,
        """\
        Resources:
          Q: {Type: AWS::SQS::Queue, Properties: {VisibilityTimeout: abc}}
          F: {Type: AWS::Lambda::Function, Properties: {Runtime: python3.12, Handler: app.h,
              Code: {ZipFile: "def h(e, c): pass"}}}
          M: {Type: AWS::Lambda::EventSourceMapping,
              Properties: {EventSourceArn: !GetAtt Q.Arn, FunctionName: !Ref F}}
          L: {Type: AWS::Logs::LogGroup, Properties: {RetentionInDays: forever}}
          MF:
            Type: AWS::Logs::MetricFilter
            Properties:
              LogGroupName: !Ref L
              FilterPattern: ERROR
              MetricTransformations: [{MetricName: E, MetricNamespace: N, MetricValue: "1"}]
          T: {Type: AWS::SNS::Topic, Properties: {FifoTopic: maybe}}
        """,
    )
    assert found == [
        "template.yaml:2:43: Resources.Q.Properties.VisibilityTimeout: 'abc' is not a number",
        "template.yaml:7:47: Resources.L.Properties.RetentionInDays: 'forever' is not a number",
        "template.yaml:14:43: Resources.T.Properties.FifoTopic: 'maybe' is not true or false",
    ]


def test_a_sam_sqs_event_on_a_bad_queue_is_reported_by_the_command(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(
        textwrap.dedent(
            """\
            Transform: AWS::Serverless-2016-10-31
            Resources:
              Q: {Type: AWS::SQS::Queue, Properties: {RedrivePolicy: 7}}
              F:
                Type: AWS::Serverless::Function
                Properties:
                  Runtime: python3.12
                  Handler: app.handler
                  InlineCode: "def handler(event, context): pass"
                  Events:
                    Queued: {Type: SQS, Properties: {Queue: !GetAtt Q.Arn}}
            """
        )
    )
    result = run_cli("import", str(template))
    assert result.returncode == 1
    assert "unexpected" not in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"{template}:3:43: Resources.Q.Properties.RedrivePolicy:"
        " a redrive policy names its deadLetterTargetArn"
    ]
