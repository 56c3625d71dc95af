"""The firehose plugin's CloudFormation mapping:
``AWS::KinesisFirehose::DeliveryStream`` <-> a ``firehose`` resource (its
``destination`` is AWS's ``ExtendedS3DestinationConfiguration`` as the
template gives it)."""

from __future__ import annotations

from typing import Any

from pipelines.cloudformation.intrinsics import Identity
from pipelines.cloudformation.mapping import (
    ConfigExport,
    ExportContext,
    ImportContext,
    Resource,
    Skip,
    TypeMapping,
    alias_keys,
    props,
)


def _name(resource: Resource) -> str:
    return resource.text("DeliveryStreamName") or resource.logical_id


def _identity(context: ImportContext, resource: Resource) -> Identity:
    name = _name(resource)
    arn = context.arn("firehose", f"deliverystream/{name}")
    context.alias("resources", name, *alias_keys(arn), name)
    return Identity(name, {"Arn": arn})


def _apply(context: ImportContext, resource: Resource) -> str:
    destination = resource.get("ExtendedS3DestinationConfiguration") or resource.get(
        "S3DestinationConfiguration"
    )
    if destination is None:
        others = [k for k in resource.properties if k.endswith("DestinationConfiguration")]
        raise Skip(
            f"only S3 destinations are delivered locally ({', '.join(others) or 'none given'})"
        )
    name = context.name("resources", resource, _name(resource))
    if resource.metadata.get("role_added") and isinstance(destination, dict):
        destination = {k: v for k, v in destination.items() if k != "RoleARN"}
    body: dict[str, Any] = {"type": "firehose", "destination": destination}
    if name != _name(resource):
        body["delivery_stream_name"] = _name(resource)
    source = resource.get("KinesisStreamSourceConfiguration")
    if isinstance(source, dict):
        body["kinesis_stream"] = context.resource(
            source.get("KinesisStreamARN"),
            resource.at("KinesisStreamSourceConfiguration", "KinesisStreamARN"),
        )
    tags = resource.get("Tags")
    if tags:
        body["tags"] = {str(t.get("Key")): str(t.get("Value")) for t in tags}
    key = (
        "ExtendedS3DestinationConfiguration"
        if "ExtendedS3DestinationConfiguration" in resource.properties
        else "S3DestinationConfiguration"
    )
    context.declare("resources", name, body, resource, {"destination": key})
    return f"delivery stream {name} (objects under the firehose resource's directory)"


def _export(context: ExportContext, name: str, body: dict[str, Any]) -> None:
    stream = str(body.get("delivery_stream_name", name))
    destination = dict(body.get("destination") or {})
    added = "RoleARN" not in destination
    destination.setdefault(
        "RoleARN",
        {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/pipelines-firehose"},
    )
    properties: dict[str, Any] = {
        "DeliveryStreamName": stream,
        "DeliveryStreamType": "KinesisStreamAsSource" if "kinesis_stream" in body else "DirectPut",
        "ExtendedS3DestinationConfiguration": destination,
    }
    if "kinesis_stream" in body:
        properties["KinesisStreamSourceConfiguration"] = {
            "KinesisStreamARN": context.ref_of(str(body["kinesis_stream"])),
            "RoleARN": destination["RoleARN"],
        }
    if body.get("tags"):
        properties["Tags"] = [{"Key": k, "Value": v} for k, v in body["tags"].items()]
    extra = {"Metadata": {"pipelines": {"role_added": True}}} if added else {}
    context.add(
        context.primaries[name], "AWS::KinesisFirehose::DeliveryStream", properties, **extra
    )


MAPPINGS = (
    TypeMapping(
        "AWS::KinesisFirehose::DeliveryStream",
        identity=_identity,
        apply=_apply,
        owner="firehose",
        properties=props(
            ("DeliveryStreamName", "resources.NAME"),
            ("ExtendedS3DestinationConfiguration", "destination (AWS's shape)"),
            ("S3DestinationConfiguration", "destination"),
            ("KinesisStreamSourceConfiguration", "kinesis_stream (the stream resource)"),
            ("Tags", "tags"),
        ),
        naming=("DeliveryStreamType", "DeliveryStreamEncryptionConfigurationInput"),
    ),
    ConfigExport(
        "firehose",
        _export,
        ("AWS::KinesisFirehose::DeliveryStream",),
        suffix="DeliveryStream",
        keys=("destination", "delivery_stream_name", "kinesis_stream", "tags"),
    ),
)
