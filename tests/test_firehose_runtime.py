"""Delivery streams as resources of a running pipeline: a rule target, the
Lambda processor through a function resource, a Kinesis stream as source,
config problems located, metrics under Firehose's names."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.errors import ConfigError
from pipelines.runtime import Runtime
from plugins.firehose.target import FirehoseTarget, FirehoseType
from plugins.stream.store import StreamStore

from . import firehose_functions
from .firehose_helpers import delimited, firehose_plugins, lines, objects
from .helpers import eventually

PLUGINS = firehose_plugins()


def lambda_destination(function: str, **more: Any) -> dict[str, Any]:
    return {
        "BucketARN": "arn:aws:s3:::lake",
        "RoleARN": "arn:aws:iam::1:role/r",
        "Prefix": "by-customer/!{partitionKeyFromLambda:customer}/",
        "ErrorOutputPrefix": "failed/!{firehose:error-output-type}/",
        "DynamicPartitioningConfiguration": {"Enabled": True},
        "BufferingHints": {"IntervalInSeconds": 60, "SizeInMBs": 1},
        "ProcessingConfiguration": {
            "Enabled": True,
            "Processors": [
                {
                    "Type": "Lambda",
                    "Parameters": [
                        {
                            "ParameterName": "LambdaArn",
                            "ParameterValue": f"arn:aws:lambda:us-east-1:123456789012:function:{function}",
                        },
                        {"ParameterName": "NumberOfRetries", "ParameterValue": "2"},
                    ],
                },
                {"Type": "AppendDelimiterToRecord", "Parameters": []},
            ],
        },
        **more,
    }


def firehose_of(runtime: Runtime, name: str) -> FirehoseTarget:
    target = runtime.resource(name)
    assert isinstance(target, FirehoseTarget)
    return target


async def test_events_from_a_rule_become_objects(tmp_path: Path) -> None:
    runtime = Runtime(state_path=tmp_path / "state.db", plugins=PLUGINS)
    runtime.add_resource(
        "lake",
        "firehose",
        {
            "destination": delimited("events", "events/", 900, 5, CompressionFormat="GZIP"),
        },
    )
    runtime.bus().put_rule("all", pattern={"source": ["shop"]})
    await runtime.bus().put_targets("all", [{"id": "f", "resource": "lake"}])
    async with runtime:
        entries = [
            {"Source": "shop", "DetailType": "click", "Detail": json.dumps({"n": n})}
            for n in range(50)
        ]
        await runtime.put_events(entries)
        await runtime.wait_until_idle()
        target = firehose_of(runtime, "lake")
        assert target.stream is not None
        await target.stream.flush()
        found = objects(tmp_path / "buckets" / "events", "GZIP")
        assert len(found) == 1 and next(iter(found)).endswith(".gz")
        events = [json.loads(line) for line in lines(found)]
        assert sorted(e["detail"]["n"] for e in events) == list(range(50))
        stats = runtime.metrics
        await stats.flush()
        names = {m["MetricName"] for m in await stats.list_metrics(namespace="Pipelines/Firehose")}
        assert {
            "IncomingRecords",
            "IncomingBytes",
            "DeliveryToS3.Records",
            "DeliveryToS3.Success",
        } <= names


async def test_the_lambda_processor_transforms_drops_fails_and_keys(tmp_path: Path) -> None:
    firehose_functions.CALLS.clear()
    runtime = Runtime(state_path=tmp_path / "state.db", plugins=PLUGINS)
    runtime.add_resource(
        "shape", "function", {"function": "tests.firehose_functions:upper_and_key"}
    )
    runtime.add_resource(
        "lake",
        "firehose",
        {"destination": lambda_destination("shape")},
    )
    async with runtime:
        target = firehose_of(runtime, "lake")
        sent = [
            {"customer": "c1", "name": "ann"},
            {"customer": "c2", "name": "bob"},
            {"customer": "c1", "bot": True},
            {"customer": "c2", "bad": True},
        ]
        results = await target.put([json.dumps(s).encode() for s in sent])
        assert all(r.record_id for r in results)
        assert target.stream is not None
        await target.stream.flush()  # the processor's batch and the partitions it made
    found = objects(tmp_path / "buckets" / "lake")
    by_prefix = {key.rsplit("/", 1)[0]: data for key, data in found.items()}
    assert json.loads(by_prefix["by-customer/c1"]) == {"customer": "c1", "name": "ANN"}
    assert json.loads(by_prefix["by-customer/c2"]) == {"customer": "c2", "name": "BOB"}
    failed_key = next(k for k in by_prefix if k.startswith("failed/processing-failed/"))
    (failure,) = [json.loads(line) for line in by_prefix[failed_key].splitlines()]
    assert failure["errorCode"] == "Lambda.ProcessingFailedStatus"
    assert json.loads(base64.b64decode(failure["rawData"])) == {"customer": "c2", "bad": True}
    assert failure["lambdaArn"].endswith(":function:shape") and failure["attemptsMade"] == 1
    (event,) = firehose_functions.CALLS
    assert set(event) == {"invocationId", "deliveryStreamArn", "region", "records"}
    assert event["deliveryStreamArn"].endswith(":deliverystream/lake")
    assert set(event["records"][0]) == {"recordId", "approximateArrivalTimestamp", "data"}


async def test_a_failing_function_is_retried_then_its_records_go_to_the_error_output(
    tmp_path: Path,
) -> None:
    firehose_functions.CALLS.clear()
    runtime = Runtime(state_path=tmp_path / "state.db", plugins=PLUGINS)
    runtime.add_resource(
        "broken", "function", {"function": "tests.firehose_functions:always_fails"}
    )
    runtime.add_resource(
        "lake",
        "firehose",
        {"destination": lambda_destination("broken")},
    )
    async with runtime:
        target = firehose_of(runtime, "lake")
        await target.put([b'{"customer": "c1"}', b'{"customer": "c2"}'])
        assert target.stream is not None
        await target.stream.flush()  # the attempts and the error output they made
    assert len(firehose_functions.CALLS) == 3  # NumberOfRetries 2: three attempts
    failures = [json.loads(line) for line in lines(objects(tmp_path / "buckets" / "lake"))]
    assert [f["errorCode"] for f in failures] == ["Lambda.FunctionError"] * 2
    assert all(f["attemptsMade"] == 3 and "broken" in f["errorMessage"] for f in failures)


async def test_a_kinesis_stream_is_read_into_the_delivery_stream(tmp_path: Path) -> None:
    runtime = Runtime(state_path=tmp_path / "state.db", plugins=PLUGINS)
    runtime.add_resource("clicks", "stream", {"shards": 2})
    runtime.add_resource(
        "lake",
        "firehose",
        {
            "destination": {
                "BucketARN": "arn:aws:s3:::lake",
                "BufferingHints": {"IntervalInSeconds": 0, "SizeInMBs": 1},
                "ProcessingConfiguration": {
                    "Enabled": True,
                    "Processors": [{"Type": "AppendDelimiterToRecord"}],
                },
            },
            "kinesis_stream": "clicks",
        },
    )
    async with runtime:
        async with await StreamStore.open(tmp_path / "state.db") as streams:
            await streams.put_records(
                "clicks", [{"Data": f"r{n}".encode(), "PartitionKey": f"k{n}"} for n in range(20)]
            )

        def arrived() -> bool:
            return len(lines(objects(tmp_path / "buckets" / "lake"))) == 20

        await eventually(arrived, 15)
        target = firehose_of(runtime, "lake")
        with pytest.raises(Exception, match="takes no PutRecord"):
            from pipelines.targets import DeliveryContext

            await target.deliver("x", DeliveryContext("r", "t", {}))
    assert sorted(lines(objects(tmp_path / "buckets" / "lake"))) == sorted(
        f"r{n}".encode() for n in range(20)
    )


def test_settings_problems_name_their_place() -> None:
    with pytest.raises(ConfigError) as caught:
        FirehoseType().create(
            "lake",
            {
                "destination": {
                    "BucketARN": "arn:aws:s3:::lake",
                    "Prefix": "x/!{partitionKeyFromQuery:k}/",
                    "ErrorOutputPrefix": "e/!{firehose:error-output-type}/",
                    "DynamicPartitioningConfiguration": {"Enabled": True},
                    "BufferingHints": {"SizeInMBs": 200},
                }
            },
        )
    (problem,) = caught.value.errors
    assert problem.path == ("destination", "BufferingHints", "SizeInMBs")
    assert "between 1 and 128" in str(problem)


async def config_problem(path: Path, stream: str) -> str:
    """The one problem building a runtime from a config reports: the
    firehose resource ``lake`` (``stream``: its lines after its type)."""
    from pipelines.config import build_runtime, load_config
    from pipelines.errors import ConfigInvalid

    path.write_text("resources:\n  lake:\n    type: firehose\n" + stream)
    with pytest.raises(ConfigInvalid) as caught:
        await build_runtime(load_config([path]), state_path=None, plugins=PLUGINS)
    (problem,) = [str(p) for p in caught.value.problems]
    return problem


async def test_a_config_problem_is_located_at_its_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    problem = await config_problem(
        path,
        "    destination:\n"
        "      BucketARN: arn:aws:s3:::lake\n"
        "      Prefix: 'x/!{partition:k}/'\n"
        "      ErrorOutputPrefix: 'e/!{firehose:error-output-type}/'\n",
    )
    assert problem.startswith(f"{path}:6:7: resources.lake.destination.Prefix: ")
    assert "unknown namespace 'partition'" in problem


async def test_a_stream_writes_into_a_declared_bucket(tmp_path: Path) -> None:
    # One bucket concept: a bucket resource is where a delivery stream writes;
    # the old stream-level `directory` setting is refused where it is written.
    from pipelines.config import build_runtime, load_config

    path = tmp_path / "pipeline.yaml"
    problem = await config_problem(
        path,
        "    directory: old\n    destination: {BucketARN: 'arn:aws:s3:::lake'}\n",
    )
    assert problem.startswith(f"{path}:4:5: resources.lake.directory: ")
    assert "is a `bucket` resource now" in problem
    path.write_text(
        "resources:\n"
        "  objects: {type: bucket, directory: data/lake, bucket: lake}\n"
        "  stream:\n"
        "    type: firehose\n"
        "    delivery_stream_name: lake\n"
        "    destination:\n"
        "      BucketARN: 'arn:aws:s3:::lake'\n"
        "      BufferingHints: {IntervalInSeconds: 0}\n"
    )
    runtime = await build_runtime(
        load_config([path]), state_path=tmp_path / "state.db", plugins=PLUGINS
    )
    async with runtime:
        await firehose_of(runtime, "stream").put([b"one"])
        await eventually(lambda: lines(objects(tmp_path / "data" / "lake")) == [b"one"])
    assert not (tmp_path / "buckets").exists()
