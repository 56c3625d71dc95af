"""The firehose plugin's CloudFormation mapping:
``AWS::KinesisFirehose::DeliveryStream`` <-> a ``firehose`` resource (its
``destination`` is AWS's ``ExtendedS3DestinationConfiguration`` as the
template gives it, its ``http_endpoint`` the ``HttpEndpointDestinationConfiguration``)."""

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
    setting = "destination"
    if destination is None and resource.get("HttpEndpointDestinationConfiguration") is not None:
        destination, setting = resource.get("HttpEndpointDestinationConfiguration"), "http_endpoint"
    if destination is None:
        others = [k for k in resource.properties if k.endswith("DestinationConfiguration")]
        raise Skip(
            "only S3 and HTTP endpoint destinations are delivered here"
            f" ({', '.join(others) or 'none given'})"
        )
    name = context.name("resources", resource, _name(resource))
    if resource.metadata.get("role_added") and isinstance(destination, dict):
        destination = {k: v for k, v in destination.items() if k != "RoleARN"}
    if resource.metadata.get("backup_role_added") and isinstance(destination, dict):
        backup = destination.get("S3Configuration")
        if isinstance(backup, dict):
            backup = {k: v for k, v in backup.items() if k != "RoleARN"}
            destination = {**destination, "S3Configuration": backup}
    body: dict[str, Any] = {"type": "firehose", setting: destination}
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
    key = next(
        k
        for k in (
            "ExtendedS3DestinationConfiguration",
            "S3DestinationConfiguration",
            "HttpEndpointDestinationConfiguration",
        )
        if k in resource.properties
    )
    context.declare("resources", name, body, resource, {setting: key})
    return f"delivery stream {name} (objects under the firehose resource's directory)"


def _export(context: ExportContext, name: str, body: dict[str, Any]) -> None:
    stream = str(body.get("delivery_stream_name", name))
    http = "http_endpoint" in body
    destination = dict(body.get("http_endpoint" if http else "destination") or {})
    conversion = destination.get("DataFormatConversionConfiguration") or {}
    if "Columns" in (conversion.get("SchemaConfiguration") or {}):
        # AWS reads the schema from a Glue table; the inline columns have no
        # place in the template. Nothing may refer to the stream then.
        context.primaries.pop(name, None)
        context.skip(
            f"resources.{name}",
            "its record format conversion's schema is inline (SchemaConfiguration.Columns);"
            " on AWS it is an AWS Glue table's",
        )
        return
    added = "RoleARN" not in destination
    destination.setdefault(
        "RoleARN",
        {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/pipelines-firehose"},
    )
    properties: dict[str, Any] = {
        "DeliveryStreamName": stream,
        "DeliveryStreamType": "KinesisStreamAsSource" if "kinesis_stream" in body else "DirectPut",
        (
            "HttpEndpointDestinationConfiguration" if http else "ExtendedS3DestinationConfiguration"
        ): destination,
    }
    if "kinesis_stream" in body:
        properties["KinesisStreamSourceConfiguration"] = {
            "KinesisStreamARN": context.ref_of(str(body["kinesis_stream"])),
            "RoleARN": destination["RoleARN"],
        }
    if body.get("tags"):
        properties["Tags"] = [{"Key": k, "Value": v} for k, v in body["tags"].items()]
    kept: dict[str, Any] = {"role_added": True} if added else {}
    backup = destination.get("S3Configuration")
    if http and isinstance(backup, dict) and "RoleARN" not in backup:
        # AWS requires the backup bucket's role too.
        destination["S3Configuration"] = {**backup, "RoleARN": destination["RoleARN"]}
        kept["backup_role_added"] = True
    extra = {"Metadata": {"pipelines": kept}} if kept else {}
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
            ("HttpEndpointDestinationConfiguration", "http_endpoint (AWS's shape)"),
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
        keys=("destination", "http_endpoint", "delivery_stream_name", "kinesis_stream", "tags"),
    ),
)
