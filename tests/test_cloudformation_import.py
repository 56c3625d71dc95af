"""Importing templates: intrinsic functions, parameters, conditions,
several stacks, SAM's transform, and what each type becomes."""

from __future__ import annotations

import base64
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pipelines.cloudformation import import_templates
from pipelines.cloudformation.importer import Imported


def imported(tmp_path: Path, text: str, name: str = "stack.yaml", **options: Any) -> Imported:
    template = tmp_path / name
    template.write_text(textwrap.dedent(text))
    return import_templates([template], **options)


def outputs(result: Imported) -> dict[str, Any]:
    return {o.name: o.value for o in result.outputs}


def test_intrinsic_functions_resolve_as_cloudformation_does(tmp_path: Path) -> None:
    result = imported(
        tmp_path,
        """\
        Parameters:
          Names: {Type: CommaDelimitedList, Default: "a,b,c"}
          Size: {Type: Number, Default: 3}
        Mappings:
          Regions: {us-east-1: {Short: use1}}
        Resources:
          Queue:
            Type: AWS::SQS::Queue
            Properties: {QueueName: !Sub "${AWS::StackName}-${AWS::Region}-q"}
        Outputs:
          Sub: {Value: !Sub "${AWS::AccountId}/${AWS::Partition}/${Queue.QueueName}/${!Literal}"}
          SubList: {Value: !Sub ["${A}-${B}", {A: one, B: !Ref Size}]}
          Join: {Value: !Join [":", [x, !Select [1, !Ref Names], !GetAtt Queue.Arn]]}
          Split: {Value: !Select [2, !Split ["/", "p/q/r"]]}
          Map: {Value: !FindInMap [Regions, !Ref "AWS::Region", Short]}
          Url: {Value: !Ref Queue}
          Attr: {Value: !GetAtt [Queue, QueueUrl]}
          Azs: {Value: !Select [0, !GetAZs ""]}
          B64: {Value: !Base64 "hello"}
          Json: {Value: {"Fn::ToJsonString": {a: [1, 2]}}}
          Length: {Value: {"Fn::Length": !Ref Names}}
        """,
    )
    assert outputs(result) == {
        "Sub": "000000000000/aws/stack-us-east-1-q/${Literal}",
        "SubList": "one-3",
        "Join": "x:b:arn:aws:sqs:us-east-1:000000000000:stack-us-east-1-q",
        "Split": "r",
        "Map": "use1",
        "Url": "https://sqs.us-east-1.amazonaws.com/000000000000/stack-us-east-1-q",
        "Attr": "https://sqs.us-east-1.amazonaws.com/000000000000/stack-us-east-1-q",
        "Azs": "us-east-1a",
        "B64": base64.b64encode(b"hello").decode(),
        "Json": '{"a":[1,2]}',
        "Length": 3,
    }


def test_conditions_choose_values_and_resources(tmp_path: Path) -> None:
    text = """\
        Parameters:
          Stage: {Type: String, Default: dev, AllowedValues: [dev, prod]}
          Region2: {Type: String, Default: eu}
        Conditions:
          IsProd: !Equals [!Ref Stage, prod]
          IsEu: !Equals [eu, !Ref Region2]
          ProdInEu: !And [!Condition IsProd, !Condition IsEu]
          NotProd: !Not [!Condition IsProd]
          Either: !Or [!Condition IsProd, !Condition IsEu]
        Resources:
          Queue:
            Type: AWS::SQS::Queue
            Properties:
              QueueName: q
              VisibilityTimeout: !If [IsProd, 60, 30]
              DelaySeconds: !If [NotProd, !Ref "AWS::NoValue", 5]
          ProdTopic:
            Type: AWS::SNS::Topic
            Condition: ProdInEu
        Outputs:
          Either: {Value: !If [Either, "yes", "no"]}
          Prod: {Value: !Ref ProdTopic, Condition: ProdInEu}
        """
    dev = imported(tmp_path, text)
    assert dev.config["resources"] == {"q": {"type": "queue", "visibility_timeout": 30}}
    assert [r.detail for r in dev.rows if r.resource == "ProdTopic"] == [
        "condition ProdInEu is false"
    ]
    assert outputs(dev) == {"Either": "yes"}
    prod = imported(tmp_path, text, parameters={"Stage": "prod"})
    assert prod.config["resources"]["q"] == {
        "type": "queue",
        "visibility_timeout": 60,
        "delay_seconds": 5,
    }
    assert prod.config["resources"]["ProdTopic"]["type"] == "topic"
    assert outputs(prod)["Prod"] == "arn:aws:sns:us-east-1:000000000000:ProdTopic"


def test_an_export_of_one_stack_is_imported_by_the_next(tmp_path: Path) -> None:
    (tmp_path / "shared.yaml").write_text(
        textwrap.dedent(
            """\
            Resources:
              Dlq: {Type: AWS::SQS::Queue, Properties: {QueueName: shared-dlq}}
            Outputs:
              DlqArn:
                Value: !GetAtt Dlq.Arn
                Export: {Name: !Sub "${AWS::StackName}-dlq"}
            """
        )
    )
    (tmp_path / "app.yaml").write_text(
        textwrap.dedent(
            """\
            Resources:
              Work:
                Type: AWS::SQS::Queue
                Properties:
                  QueueName: work
                  RedrivePolicy: {deadLetterTargetArn: !ImportValue shared-dlq, maxReceiveCount: 2}
            """
        )
    )
    result = import_templates([tmp_path / "shared.yaml", tmp_path / "app.yaml"])
    assert result.config["resources"]["work"]["redrive_policy"] == {
        "dead_letter_queue": "shared-dlq",
        "max_receive_count": 2,
    }
    assert [o.export for o in result.outputs] == ["shared-dlq"]


def test_depends_on_orders_resources_and_rows_keep_the_templates_order(tmp_path: Path) -> None:
    result = imported(
        tmp_path,
        """\
        Resources:
          Rule:
            Type: AWS::Events::Rule
            Properties:
              ScheduleExpression: rate(5 minutes)
              Targets: [{Id: t, Arn: !GetAtt Queue.Arn}]
          Queue:
            Type: AWS::SQS::Queue
            DependsOn: Topic
          Topic: {Type: AWS::SNS::Topic}
        """,
    )
    assert [row.resource for row in result.rows] == ["Rule", "Queue", "Topic"]
    assert list(result.config["resources"]) == ["Topic", "Queue"]  # dependencies first
    assert result.config["rules"]["Rule"]["targets"] == [{"id": "t", "resource": "Queue"}]


def test_each_type_becomes_its_config(tmp_path: Path) -> None:
    result = imported(
        tmp_path,
        """\
        Resources:
          Bus: {Type: AWS::Events::EventBus, Properties: {Name: audit}}
          Archive:
            Type: AWS::Events::Archive
            Properties: {SourceArn: !GetAtt Bus.Arn, RetentionDays: 7, EventPattern: {source: [x]}}
          Stream: {Type: AWS::Kinesis::Stream, Properties: {Name: clicks, ShardCount: 2}}
          Fn:
            Type: AWS::Lambda::Function
            Properties:
              FunctionName: reader
              Runtime: python3.12
              Handler: index.handler
              Code: {ZipFile: "def handler(event, context=None):\\n    return event\\n"}
          Mapping:
            Type: AWS::Lambda::EventSourceMapping
            Properties:
              EventSourceArn: !GetAtt Stream.Arn
              FunctionName: !Ref Fn
              StartingPosition: LATEST
              BatchSize: 50
          Logs: {Type: AWS::Logs::LogGroup, Properties: {LogGroupName: /app/errors, RetentionInDays: 7}}
          Metric:
            Type: AWS::Logs::MetricFilter
            Properties:
              LogGroupName: !Ref Logs
              FilterPattern: ERROR
              MetricTransformations:
                - {MetricName: Errors, MetricNamespace: App, MetricValue: "1", Dimensions: [{Key: k, Value: $.k}]}
          Subscription:
            Type: AWS::Logs::SubscriptionFilter
            Properties: {LogGroupName: !Ref Logs, FilterPattern: "", DestinationArn: !GetAtt Fn.Arn}
          Alarm:
            Type: AWS::CloudWatch::Alarm
            Properties:
              AlarmName: errors
              Namespace: App
              MetricName: Errors
              Statistic: Sum
              Period: 60
              EvaluationPeriods: 1
              Threshold: 1
              ComparisonOperator: GreaterThanOrEqualToThreshold
              AlarmActions: [!GetAtt Fn.Arn]
          Composite:
            Type: AWS::CloudWatch::CompositeAlarm
            Properties: {AlarmName: bad, AlarmRule: !Sub "ALARM(\\"${Alarm.Arn}\\") OR ALARM(other)"}
          Connection:
            Type: AWS::Events::Connection
            Properties:
              Name: chat
              AuthorizationType: API_KEY
              AuthParameters: {ApiKeyAuthParameters: {ApiKeyName: X-Key, ApiKeyValue: secret}}
          Destination:
            Type: AWS::Events::ApiDestination
            Properties:
              ConnectionArn: !GetAtt Connection.Arn
              InvocationEndpoint: https://example.com/hook
              HttpMethod: PUT
              InvocationRateLimitPerSecond: 5
        """,
        directory=tmp_path,
    )
    resources = result.config["resources"]
    assert result.config["buses"] == ["audit"]
    assert result.config["archives"] == {
        "Archive": {"bus": "audit", "pattern": {"source": ["x"]}, "retention_days": 7}
    }
    assert resources["clicks"] == {
        "type": "stream",
        "shards": 2,
        "consumers": {"Mapping": {"target": "reader", "batch_size": 50, "start": "latest"}},
    }
    assert resources["reader"] == {
        "type": "function",
        "function": "inline_functions.reader:handler",
    }
    assert (tmp_path / "inline_functions" / "reader.py").read_text().endswith("return event\n")
    assert resources["Logs"] == {
        "type": "log_group",
        "log_group": "/app/errors",
        "retention_days": 7,
        "metric_filters": {
            "Metric": {
                "pattern": "ERROR",
                "metric_name": "Errors",
                "metric_namespace": "App",
                "metric_value": 1,
                "dimensions": {"k": "$.k"},
            }
        },
        "subscription_filters": {"Subscription": {"target": "reader"}},
    }
    assert result.config["alarms"]["errors"]["actions"] == {"alarm": ["reader"]}
    assert result.config["alarms"]["bad"] == {"rule": 'ALARM("errors") OR ALARM(other)'}
    assert resources["Destination"] == {
        "type": "api_destination",
        "endpoint": "https://example.com/hook",
        "connection": "chat",
        "http_method": "PUT",
        "invocation_rate_limit_per_second": 5,
    }
    assert resources["chat"]["api_key"] == {"name": "X-Key", "value": "secret"}


def test_the_sam_transform_expands_functions_events_and_state_machines(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "machine.asl.json").write_text(
        json.dumps(
            {"StartAt": "Go", "States": {"Go": {"Type": "Task", "Resource": "${Fn}", "End": True}}}
        )
    )
    result = imported(
        tmp_path,
        """\
        Transform: AWS::Serverless-2016-10-31
        Globals:
          Function: {Runtime: python3.11, Timeout: 7}
        Resources:
          Queue: {Type: AWS::SQS::Queue, Properties: {QueueName: jobs}}
          Stream: {Type: AWS::Kinesis::Stream, Properties: {ShardCount: 1}}
          Logs: {Type: AWS::Logs::LogGroup, Properties: {LogGroupName: app}}
          Worker:
            Type: AWS::Serverless::Function
            Properties:
              CodeUri: src/
              Handler: jobs.work
              EventInvokeConfig: {MaximumRetryAttempts: 1}
              Events:
                Jobs: {Type: SQS, Properties: {Queue: !GetAtt Queue.Arn, BatchSize: 5}}
                Clicks: {Type: Kinesis, Properties: {Stream: !GetAtt Stream.Arn, StartingPosition: TRIM_HORIZON}}
                Later:
                  Type: ScheduleV2
                  Properties: {ScheduleExpression: rate(1 hour), Input: '{"a": 1}'}
                Lines: {Type: CloudWatchLogs, Properties: {LogGroupName: !Ref Logs, FilterPattern: ERROR}}
          Machine:
            Type: AWS::Serverless::StateMachine
            Properties:
              DefinitionUri: machine.asl.json
              DefinitionSubstitutions: {Fn: !GetAtt Worker.Arn}
              Events:
                Hourly: {Type: Schedule, Properties: {Schedule: rate(1 hour)}}
        """,
        directory=tmp_path,
    )
    config = result.config
    assert config["resources"]["Worker"] == {
        "type": "function",
        "function": "src.jobs:work",
        "timeout": 7,
        "async_invoke": {"maximum_retry_attempts": 1},
    }
    assert config["pipes"]["WorkerJobs"] == {
        "source": "jobs",
        "target": "Worker",
        "invoke_as": "event_source_mapping",  # Lambda's {"Records": [...]}, not Pipes' array
        "source_parameters": {"batch_size": 5},
    }
    assert config["resources"]["Stream"]["consumers"] == {"WorkerClicks": {"target": "Worker"}}
    assert config["schedules"]["WorkerLater"]["target"] == {
        "resource": "Worker",
        "input": '{"a": 1}',
    }
    assert config["resources"]["app"]["subscription_filters"] == {
        "WorkerLines": {"target": "Worker", "pattern": "ERROR"}
    }
    assert "Machine" not in config["resources"]  # in its section, as docs/states.md shows
    machine = config["state_machines"]["Machine"]
    assert "type" not in machine
    assert machine["definition"]["States"]["Go"]["Resource"] == (
        "arn:aws:lambda:us-east-1:000000000000:function:Worker"
    )
    assert config["rules"]["MachineHourly"]["targets"][0]["resource"] == "Machine"
    assert {r.resource: r.status for r in result.rows}["WorkerJobs"] == "runs"


def test_other_runtimes_and_code_elsewhere_are_skipped_never_faked(tmp_path: Path) -> None:
    result = imported(
        tmp_path,
        """\
        Resources:
          Node:
            Type: AWS::Lambda::Function
            Properties: {Runtime: nodejs20.x, Handler: index.handler, Code: {ZipFile: "x"}}
          Java:
            Type: AWS::Lambda::Function
            Properties: {Runtime: java21, Handler: a.B::handle, Code: {S3Bucket: b, S3Key: k}}
          FromS3:
            Type: AWS::Lambda::Function
            Properties: {Runtime: python3.12, Handler: app.h, Code: {S3Bucket: b, S3Key: k}}
          Permission:
            Type: AWS::Lambda::Permission
            Properties: {Action: lambda:InvokeFunction, FunctionName: !Ref Node, Principal: sns.amazonaws.com}
          Table: {Type: AWS::DynamoDB::Table}
        """,
    )
    assert {r.resource: (r.status, r.detail) for r in result.rows} == {
        "Node": (
            "skipped",
            "runtime nodejs20.x: only Python functions run locally (as a function resource)",
        ),
        "Java": (
            "skipped",
            "runtime java21: only Python functions run locally (as a function resource)",
        ),
        "FromS3": (
            "skipped",
            "code in S3 or an image is not fetched locally: give ZipFile, or CodeUri (SAM)",
        ),
        "Permission": ("skipped", "permissions are not enforced locally"),
        "Table": ("skipped", "AWS::DynamoDB::Table has no local equivalent"),
    }
    assert "resources" not in result.config


def test_a_json_template_is_read_too(tmp_path: Path) -> None:
    template = tmp_path / "stack.json"
    template.write_text(
        json.dumps(
            {
                "Resources": {
                    "Topic": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": "news"}},
                    "Q": {"Type": "AWS::SQS::Queue"},
                    "Sub": {
                        "Type": "AWS::SNS::Subscription",
                        "Properties": {
                            "TopicArn": {"Ref": "Topic"},
                            "Protocol": "sqs",
                            "Endpoint": {"Fn::GetAtt": ["Q", "Arn"]},
                            "FilterPolicy": {"kind": ["a"]},
                        },
                    },
                }
            }
        )
    )
    result = import_templates([template])
    assert result.config["resources"]["news"]["subscriptions"] == [
        {"id": "Sub", "resource": "Q", "filter_policy": {"kind": ["a"]}}
    ]


@pytest.mark.parametrize("value", ["prod", "dev"])
def test_parameter_overrides_replace_defaults(tmp_path: Path, value: str) -> None:
    result = imported(
        tmp_path,
        """\
        Parameters:
          Stage: {Type: String, Default: dev, AllowedPattern: "[a-z]+"}
        Resources:
          Q: {Type: AWS::SQS::Queue, Properties: {QueueName: !Sub "q-${Stage}"}}
        """,
        parameters={"Stage": value},
    )
    assert list(result.config["resources"]) == [f"q-{value}"]


def test_the_schema_registry_types_become_the_schemas_section(tmp_path: Path) -> None:
    from .helpers import run_cli

    result = imported(
        tmp_path,
        """\
        Resources:
          Bus: {Type: AWS::Events::EventBus, Properties: {Name: orders}}
          Registry:
            Type: AWS::EventSchemas::Registry
            Properties: {RegistryName: shop, Description: What the shop puts}
          OrderSchema:
            Type: AWS::EventSchemas::Schema
            Properties:
              RegistryName: !GetAtt Registry.RegistryName
              SchemaName: shop@OrderPlaced
              Type: JSONSchemaDraft4
              Content: '{"type": "object", "required": ["detail"]}'
          Discoverer:
            Type: AWS::EventSchemas::Discoverer
            Properties: {SourceArn: !GetAtt Bus.Arn}
          Policy:
            Type: AWS::EventSchemas::RegistryPolicy
            Properties: {RegistryName: shop, Policy: {}}
        """,
    )
    assert result.config["schemas"] == {
        "registries": {
            "shop": {
                "description": "What the shop puts",
                "schemas": {
                    "shop@OrderPlaced": {
                        "type": "JSONSchemaDraft4",
                        "content": {"type": "object", "required": ["detail"]},
                    }
                },
            }
        },
        "discoverers": ["orders"],
    }
    assert {r.resource: r.status for r in result.rows} == {
        "Bus": "runs",
        "Registry": "runs",
        "OrderSchema": "mapped",
        "Discoverer": "mapped",
        "Policy": "skipped",
    }
    checked = run_cli("import", str(tmp_path / "stack.yaml"), "-w", str(tmp_path / "pipeline.yaml"))
    assert checked.returncode == 0, checked.stderr
