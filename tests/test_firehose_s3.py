"""Buckets in an S3-compatible object store, against a real S3 API served
locally by moto's server (a subprocess): a delivery stream's objects
uploaded there (credentials from the config's ``${VAR}``s), listed by
``pipelines firehose objects``' function, a store that is down leaving the
records buffered, the bucket lookup's reads and writes (a state machine's
ItemReader and ResultWriter use them), settings' problems located."""

from __future__ import annotations

import asyncio
import gzip
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.config import build_runtime, load_config
from pipelines.errors import ConfigError
from plugins.bucket.lookup import Buckets
from plugins.bucket.objects import BucketError
from plugins.bucket.remote import RemoteBucket, S3Settings
from plugins.bucket.target import BucketType
from plugins.firehose.objects import delivered
from plugins.firehose.target import FirehoseTarget

from .firehose_helpers import firehose_plugins

boto3 = pytest.importorskip("boto3")
KEY, SECRET = "AKIAMOTOTEST", "moto-secret"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 API on a free local port, for the module's tests."""
    server = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if server is None:
        pytest.skip("moto's server is not installed (pip install 'moto[server]')")
    port = free_port()
    process = subprocess.Popen(
        [server, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto's server did not start"
                assert process.poll() is None, "moto's server exited"
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def client(url: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
    )


@pytest.fixture
def bucket(s3_endpoint: str, request: pytest.FixtureRequest) -> str:
    """A new bucket in the store, named for the test."""
    name = "t-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    client(s3_endpoint).create_bucket(Bucket=name)
    return name


CONFIG = """
state: {state}
resources:
  lake:
    type: bucket
    bucket: {bucket}
    s3:
      endpoint_url: {url}
      region: us-east-1
      access_key_id: ${{LAKE_KEY}}
      secret_access_key: ${{LAKE_SECRET}}
      addressing_style: path
  clicks:
    type: firehose
    destination:
      BucketARN: arn:aws:s3:::{bucket}
      Prefix: "customer=!{{partitionKeyFromQuery:customer}}/"
      ErrorOutputPrefix: "errors/!{{firehose:error-output-type}}/"
      CompressionFormat: GZIP
      BufferingHints: {{SizeInMBs: 1, IntervalInSeconds: 900}}
      DynamicPartitioningConfiguration: {{Enabled: true}}
      ProcessingConfiguration:
        Enabled: true
        Processors:
          - Type: MetadataExtraction
            Parameters:
              - {{ParameterName: MetadataExtractionQuery, ParameterValue: "{{customer: .customer}}"}}
              - {{ParameterName: JsonParsingEngine, ParameterValue: JQ-1.6}}
          - Type: AppendDelimiterToRecord
"""


def write_config(tmp_path: Path, url: str, bucket: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(CONFIG.format(state=tmp_path / "state.db", bucket=bucket, url=url))
    return path


async def test_a_delivery_stream_uploads_its_objects_to_the_store(
    tmp_path: Path, s3_endpoint: str, bucket: str
) -> None:
    path = write_config(tmp_path, s3_endpoint, bucket)
    config = load_config([path], environ={"LAKE_KEY": KEY, "LAKE_SECRET": SECRET})
    runtime = await build_runtime(config, plugins=firehose_plugins())
    async with runtime:
        lake = runtime.resource("lake")
        assert isinstance(lake.place, RemoteBucket)  # type: ignore[attr-defined]
        settings = lake.place.settings  # type: ignore[attr-defined]
        assert (settings.access_key_id, settings.secret_access_key) == (KEY, SECRET)
        target = runtime.resource("clicks")
        assert isinstance(target, FirehoseTarget) and target.stream is not None
        sent = [json.dumps({"customer": c, "n": n}).encode() for n in range(20) for c in "ab"]
        results = await target.put(sent)
        assert all(r.record_id for r in results)
        await target.stream.flush()
    s3 = client(s3_endpoint)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(k.split("/")[0] for k in keys) == ["customer=a", "customer=b"]
    for key in keys:
        assert key.endswith(".gz") and "/clicks-1-" in key, key
        body = gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        customer = key.split("/")[0].removeprefix("customer=")
        rows = [json.loads(line) for line in body.splitlines()]
        assert [r["n"] for r in rows] == list(range(20)) and {r["customer"] for r in rows} == {
            customer
        }
    assert not list(tmp_path.glob("buckets"))  # nothing written locally
    # The CLI's listing reads the store.
    from plugins.bucket.lookup import buckets_of_config

    record_config = {
        "ExtendedS3DestinationConfiguration": config.resources["clicks"]["destination"]
    }
    listed = delivered("clicks", record_config, buckets_of_config(config, tmp_path / "state.db"))
    assert sorted(item["Key"] for item in listed) == sorted(keys)
    assert all(item["Path"].startswith(f"s3://{bucket}/") for item in listed)


async def test_a_store_that_is_down_keeps_the_records_buffered(tmp_path: Path) -> None:
    path = write_config(tmp_path, f"http://127.0.0.1:{free_port()}", "down")
    config = load_config([path], environ={"LAKE_KEY": KEY, "LAKE_SECRET": SECRET})
    runtime = await build_runtime(config, plugins=firehose_plugins())
    async with runtime:
        target = runtime.resource("clicks")
        assert isinstance(target, FirehoseTarget) and target.stream is not None
        await target.put([b'{"customer": "a"}'])
        await asyncio.wait_for(target.stream.flush(), 60)  # the attempt fails
        assert target.store is not None
        assert (await target.store.buffered("clicks"))[0] == 1  # kept for the retry
        assert target.stream.delivered_objects == []


async def test_the_bucket_lookup_reads_writes_and_lists_a_remote_bucket(
    s3_endpoint: str, bucket: str
) -> None:
    remote = RemoteBucket(
        bucket,
        S3Settings(s3_endpoint, "us-east-1", KEY, SECRET, addressing_style="path"),
    )
    buckets = Buckets({bucket: remote})
    await buckets.put_object(f"arn:aws:s3:::{bucket}", "in/items.json", b"[1, 2]")
    await buckets.put_object(bucket, "in/more.json", b"[3]")
    assert await buckets.get_object(bucket, "in/items.json") == b"[1, 2]"
    listed = await buckets.list_objects(bucket, "in/")
    assert [o.key for o in listed] == ["in/items.json", "in/more.json"]
    assert listed[0].size == 6 and listed[0].etag and listed[0].etag.startswith('"')
    with pytest.raises(BucketError, match="does not exist"):
        await buckets.get_object(bucket, "in/missing.json")
    with pytest.raises(BucketError, match="object store, not a directory"):
        buckets.directory(bucket)


@pytest.mark.parametrize(
    ("settings", "where", "words"),
    [
        ({"directory": "d", "s3": {}}, "target lake.s3", "not both"),
        ({"s3": {"endpoint": "x"}}, "target lake.s3.endpoint", "unknown setting"),
        ({"s3": {"addressing_style": "sideways"}}, "target lake.s3.addressing_style", "one of"),
        ({"s3": {"endpoint_url": "ftp://x"}}, "target lake.s3.endpoint_url", "http://"),
        ({"s3": {"access_key_id": "k"}}, "target lake.s3.access_key_id", "together"),
        ({}, "target lake.directory", "or give s3"),
    ],
)
def test_bucket_settings_problems_are_located(
    settings: dict[str, Any], where: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        BucketType().create("lake", settings)
    text = str(caught.value)
    assert where in text and words in text, text


def test_a_remote_bucket_is_a_place_not_a_directory() -> None:
    made = BucketType().create("lake", {"bucket": "lake-bucket", "s3": {"region": "eu-west-1"}})
    assert isinstance(made.place, RemoteBucket) and made.place.settings.region == "eu-west-1"
