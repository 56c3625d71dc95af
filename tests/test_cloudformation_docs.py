"""docs/cloudformation.md's tables are the registered mappings'."""

from __future__ import annotations

from pathlib import Path

from pipelines.cloudformation.docs import render
from pipelines.cloudformation.registry import build_registry

DOC = Path(__file__).parent.parent / "docs" / "cloudformation.md"


def test_the_docs_tables_match_the_mappings() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert render(text) == text, (
        "run: python -m pipelines.cloudformation.docs docs/cloudformation.md"
    )


def test_every_type_the_issue_names_is_mapped_or_skipped_with_a_reason() -> None:
    registry = build_registry()
    for kind in [
        "AWS::Events::EventBus",
        "AWS::Events::Rule",
        "AWS::Events::Archive",
        "AWS::Events::Connection",
        "AWS::Events::ApiDestination",
        "AWS::SQS::Queue",
        "AWS::SNS::Topic",
        "AWS::SNS::Subscription",
        "AWS::Kinesis::Stream",
        "AWS::KinesisFirehose::DeliveryStream",
        "AWS::Logs::LogGroup",
        "AWS::Logs::MetricFilter",
        "AWS::Logs::SubscriptionFilter",
        "AWS::CloudWatch::Alarm",
        "AWS::CloudWatch::CompositeAlarm",
        "AWS::StepFunctions::StateMachine",
        "AWS::Scheduler::Schedule",
        "AWS::Scheduler::ScheduleGroup",
        "AWS::Lambda::Function",
        "AWS::Lambda::EventSourceMapping",
        "AWS::Pipes::Pipe",
        "AWS::EventSchemas::Registry",
        "AWS::EventSchemas::Schema",
        "AWS::EventSchemas::Discoverer",
    ]:
        mapping = registry.find(kind)
        assert mapping is not None and mapping.apply is not None, kind
    for kind in ["AWS::IAM::Role", "AWS::IAM::ManagedPolicy", "AWS::SQS::QueuePolicy"]:
        mapping = registry.find(kind)
        assert mapping is not None and mapping.reason == "permissions are not enforced locally"


def test_a_type_registered_twice_names_both() -> None:
    import pytest

    from pipelines.cloudformation.mapping import TypeMapping
    from pipelines.cloudformation.registry import Registry
    from pipelines.errors import PluginError

    registry = Registry()
    registry.register(TypeMapping("Acme::A::B", reason="x"), "one")
    with pytest.raises(PluginError, match="'Acme::A::B' is registered by both 'one' and 'two'"):
        registry.register(TypeMapping("Acme::A::B", reason="y"), "two")
