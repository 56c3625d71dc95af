"""The permissions an exported template needs to run on AWS.

Locally nothing is authorised, so a config says nothing about it; on AWS,
EventBridge cannot send to a queue without the queue's policy allowing
it, nor invoke a function without a ``Lambda::Permission``, nor start a
state machine without a role. After the export, this walks the template's
resources and adds what each delivery needs, scoped to its source by
``aws:SourceArn`` where AWS allows it:

- rules: a queue policy statement (their targets and dead-letter queues),
  a topic policy statement, a function permission; a role for the targets
  that take one (state machines, streams, delivery streams, API
  destinations, buses);
- SNS subscriptions: a queue policy statement, a function permission;
- log subscription filters: a function permission;
- a role each for state machines, schedules, pipes and delivery streams,
  where the config names none.

Each added resource's ``Metadata.pipelines.generated`` says it was made
here: ``pipelines import`` reports it skipped ("permissions are not
enforced locally") and ``--strict`` does not count it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

GENERATED = {"pipelines": {"generated": True}}
_FUNCTIONS = {"AWS::Serverless::Function", "AWS::Lambda::Function"}
#: Rule targets that need the rule's role, and what the role must allow.
_ROLE_TARGETS = {
    "AWS::StepFunctions::StateMachine": "states:StartExecution",
    "AWS::Kinesis::Stream": "kinesis:PutRecord",
    "AWS::KinesisFirehose::DeliveryStream": "firehose:PutRecord",
    "AWS::Events::ApiDestination": "events:InvokeApiDestination",
    "AWS::Events::EventBus": "events:PutEvents",
}
#: What a role each service assumes may do (their targets are many: `*`).
_SERVICE_ACTIONS = {
    "events": sorted(set(_ROLE_TARGETS.values())),
    "states": [
        "lambda:InvokeFunction",
        "sqs:SendMessage",
        "sns:Publish",
        "events:PutEvents",
        "kinesis:PutRecord",
        "states:StartExecution",
    ],
    "scheduler": [
        "lambda:InvokeFunction",
        "sqs:SendMessage",
        "sns:Publish",
        "events:PutEvents",
        "kinesis:PutRecord",
        "firehose:PutRecord",
        "states:StartExecution",
    ],
    "pipes": [
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:SendMessage",
        "kinesis:DescribeStream",
        "kinesis:DescribeStreamSummary",
        "kinesis:GetRecords",
        "kinesis:GetShardIterator",
        "kinesis:ListShards",
        "kinesis:ListStreams",
        "kinesis:PutRecord",
        "lambda:InvokeFunction",
        "states:StartExecution",
        "states:StartSyncExecution",
        "events:PutEvents",
        "sns:Publish",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    ],
    "firehose": [
        "s3:AbortMultipartUpload",
        "s3:GetBucketLocation",
        "s3:GetObject",
        "s3:ListBucket",
        "s3:ListBucketMultipartUploads",
        "s3:PutObject",
        "lambda:InvokeFunction",
        "lambda:GetFunctionConfiguration",
        "kinesis:DescribeStream",
        "kinesis:GetShardIterator",
        "kinesis:GetRecords",
        "kinesis:ListShards",
    ],
}
#: Where each service's placeholder role is, by resource type.
_ROLE_PROPERTIES = {
    "AWS::StepFunctions::StateMachine": ("states", ("RoleArn",)),
    "AWS::Scheduler::Schedule": ("scheduler", ("Target", "RoleArn")),
    "AWS::Pipes::Pipe": ("pipes", ("RoleArn",)),
    "AWS::KinesisFirehose::DeliveryStream": (
        "firehose",
        ("ExtendedS3DestinationConfiguration", "RoleARN"),
    ),
}
_PLACEHOLDER = ":role/pipelines-"


def _logical(value: Any) -> str | None:
    if isinstance(value, dict) and "Ref" in value:
        return str(value["Ref"])
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return str(value["Fn::GetAtt"][0])
    return None


class _Permissions:
    def __init__(self, resources: dict[str, Any]) -> None:
        self.resources = resources
        self.queue_statements: dict[str, list[Any]] = defaultdict(list)
        self.topic_statements: dict[str, list[Any]] = defaultdict(list)
        self.added: dict[str, Any] = {}
        self.roles: dict[str, str] = {}

    def kind(self, logical: str | None) -> str | None:
        body = self.resources.get(logical or "")
        return str(body.get("Type")) if isinstance(body, dict) else None

    def deliver(self, source: str, service: str, arn: Any) -> None:
        """``service`` (on behalf of ``source``) sends to what ``arn`` names."""
        target = _logical(arn)
        kind = self.kind(target)
        source_arn = (
            {"Ref": source}
            if self.kind(source) == "AWS::SNS::Topic"
            else {"Fn::GetAtt": [source, "Arn"]}
        )
        if target is None or kind is None:
            return
        if kind == "AWS::SQS::Queue":
            self.queue_statements[target].append(
                {
                    "Effect": "Allow",
                    "Principal": {"Service": f"{service}.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": {"Fn::GetAtt": [target, "Arn"]},
                    "Condition": {"ArnEquals": {"aws:SourceArn": source_arn}},
                }
            )
        elif kind == "AWS::SNS::Topic":
            self.topic_statements[target].append(
                {
                    "Effect": "Allow",
                    "Principal": {"Service": f"{service}.amazonaws.com"},
                    "Action": "sns:Publish",
                    "Resource": {"Ref": target},
                    "Condition": {"ArnEquals": {"aws:SourceArn": source_arn}},
                }
            )
        elif kind in _FUNCTIONS:
            self.added[f"{source}{target}Permission"] = {
                "Type": "AWS::Lambda::Permission",
                "Metadata": GENERATED,
                "Properties": {
                    "Action": "lambda:InvokeFunction",
                    "FunctionName": {"Ref": target},
                    "Principal": f"{service}.amazonaws.com",
                    "SourceArn": source_arn,
                },
            }

    def role(self, service: str) -> dict[str, Any]:
        """A role ``service`` assumes, made once per template."""
        logical = self.roles.get(service)
        if logical is None:
            logical = self.roles[service] = f"Pipelines{service.capitalize()}Role"
            self.added[logical] = {
                "Type": "AWS::IAM::Role",
                "Metadata": GENERATED,
                "Properties": {
                    "AssumeRolePolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {"Service": f"{service}.amazonaws.com"},
                                "Action": "sts:AssumeRole",
                            }
                        ],
                    },
                    "Policies": [
                        {
                            "PolicyName": f"pipelines-{service}",
                            "PolicyDocument": {
                                "Version": "2012-10-17",
                                "Statement": [
                                    {
                                        "Effect": "Allow",
                                        "Action": _SERVICE_ACTIONS[service],
                                        "Resource": "*",
                                    }
                                ],
                            },
                        }
                    ],
                },
            }
        return {"Fn::GetAtt": [logical, "Arn"]}


def add_permissions(resources: dict[str, Any]) -> None:
    """Add to an exported template's ``resources`` what delivering needs on AWS."""
    permissions = _Permissions(resources)
    for logical, body in list(resources.items()):
        kind, properties = body.get("Type"), body.get("Properties") or {}
        if kind == "AWS::Events::Rule":
            for target in properties.get("Targets") or []:
                permissions.deliver(logical, "events", target.get("Arn"))
                dead = (target.get("DeadLetterConfig") or {}).get("Arn")
                if dead is not None:
                    permissions.deliver(logical, "events", dead)
                if permissions.kind(_logical(target.get("Arn"))) in _ROLE_TARGETS:
                    target["RoleArn"] = permissions.role("events")
        elif kind == "AWS::SNS::Subscription":
            topic = _logical(properties.get("TopicArn"))
            if topic is not None:
                permissions.deliver(topic, "sns", properties.get("Endpoint"))
        elif kind == "AWS::Logs::SubscriptionFilter":
            group = _logical(properties.get("LogGroupName"))
            if group is not None:
                permissions.deliver(group, "logs", properties.get("DestinationArn"))
        if kind in _ROLE_PROPERTIES:
            service, path = _ROLE_PROPERTIES[kind]
            holder = properties
            for key in path[:-1]:
                holder = holder.get(key) or {}
            if _PLACEHOLDER in str(holder.get(path[-1], "")):
                holder[path[-1]] = permissions.role(service)
    for queue, statements in permissions.queue_statements.items():
        permissions.added[f"{queue}Policy"] = {
            "Type": "AWS::SQS::QueuePolicy",
            "Metadata": GENERATED,
            "Properties": {
                "Queues": [{"Ref": queue}],
                "PolicyDocument": {"Version": "2012-10-17", "Statement": statements},
            },
        }
    for topic, statements in permissions.topic_statements.items():
        permissions.added[f"{topic}Policy"] = {
            "Type": "AWS::SNS::TopicPolicy",
            "Metadata": GENERATED,
            "Properties": {
                "Topics": [{"Ref": topic}],
                "PolicyDocument": {"Version": "2012-10-17", "Statement": statements},
            },
        }
    for logical, body in permissions.added.items():
        name = logical
        number = 2
        while name in resources:
            name = f"{logical}{number}"
            number += 1
        resources[name] = body
