"""The HTTP endpoint destination against a real local HTTP server (aiohttp):
Firehose's request (body, headers, gzip), only a 200 with the request's
requestId counting, retries with AWS's backoff under one requestId, and the
S3 backup (failed records past the retry duration, or all records)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from pipelines.errors import ConfigError, Where
from pipelines.http.client import HttpClient
from plugins.firehose.delivery import DeliveryStream, Identity
from plugins.firehose.spec import destination_of
from plugins.firehose.store import FirehoseStore
from plugins.firehose.target import check_settings

from .firehose_helpers import objects
from .test_firehose_delivery import START, Harness, record

ARN = "arn:aws:firehose:us-east-1:1:deliverystream/clicks"


@dataclass
class Endpoint:
    """A local HTTP endpoint: ``answer`` decides each reply; requests kept."""

    url: str = ""
    requests: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # each body's length, decompressed
    answer: Callable[[dict[str, Any], int], tuple[int, Any]] = lambda body, n: (
        200,
        {"requestId": body["requestId"], "timestamp": 1},
    )

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()  # aiohttp undoes a Content-Encoding: gzip
        body = json.loads(raw)
        self.sizes.append(len(raw))
        self.requests.append((dict(request.headers), body))
        status, answer = self.answer(body, len(self.requests))
        return web.json_response(answer, status=status)


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    found = Endpoint()
    app = web.Application()
    app.router.add_post("/ingest", found.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    found.url = f"http://127.0.0.1:{port}/ingest"
    try:
        yield found
    finally:
        await runner.cleanup()


def http_config(url: str, **more: Any) -> dict[str, Any]:
    return {
        "EndpointConfiguration": {"Url": url, "Name": "collector", "AccessKey": "s3cret"},
        "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 60},
        "RequestConfiguration": {
            "CommonAttributes": [{"AttributeName": "env", "AttributeValue": "test"}]
        },
        "RetryOptions": {"DurationInSeconds": 30},
        "S3Configuration": {
            "BucketARN": "arn:aws:s3:::backup",
            "RoleARN": "arn:aws:iam::1:role/r",
        },
        **more,
    }


class HttpHarness(Harness):
    """The delivery harness with an HTTP endpoint destination and a real client."""

    def __init__(self, location: str, root: Path, config: dict[str, Any]) -> None:
        super().__init__(location, root, config)
        self.client = HttpClient(timeout=5.0)

    async def start(self) -> DeliveryStream:
        self.store = await FirehoseStore.open(self.location, self.clock)
        request = {
            "DeliveryStreamType": "DirectPut",
            "HttpEndpointDestinationConfiguration": self.config,
        }
        found = await self.store.find("clicks") or await self.store.create(
            "clicks", request, {}, made_by_api=True
        )
        identity = Identity("clicks", ARN, found.version, found.created, "us-east-1")

        async def post(url: str, headers: Any, body: bytes) -> tuple[int, bytes]:
            sent = await self.client.send("POST", url, headers=headers, body=body)
            return sent.status, sent.body

        self.stream = DeliveryStream(
            identity,
            destination_of(request),
            self.store,
            self.clock,
            lambda bucket: self.root / bucket,
            metric=lambda name, value, unit: self.metrics.append((name, value)),
            post=post,
        )
        await self.stream.load()
        self.task = asyncio.create_task(self.stream.run())
        return self.stream

    async def settle(self) -> None:
        for _ in range(20):  # real HTTP round trips between the clock's steps
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        await super().stop()
        await self.client.close()


def decoded(body: dict[str, Any]) -> list[bytes]:
    return [base64.b64decode(item["data"]) for item in body["records"]]


async def test_records_are_posted_with_firehoses_request_contract(
    state_location: str, tmp_path: Path, endpoint: Endpoint
) -> None:
    harness = HttpHarness(state_location, tmp_path, http_config(endpoint.url))
    stream = await harness.start()
    try:
        sent = [record("a", n) for n in range(5)]
        await stream.put(sent[:3])
        await stream.put(sent[3:])
        await harness.advance(60)
        assert len(endpoint.requests) == 1
        headers, body = endpoint.requests[0]
        assert decoded(body) == sent
        assert body["requestId"] == headers["X-Amz-Firehose-Request-Id"]
        assert body["timestamp"] == int((START + 60) * 1000)
        assert headers["X-Amz-Firehose-Protocol-Version"] == "1.0"
        assert headers["X-Amz-Firehose-Access-Key"] == "s3cret"
        assert headers["X-Amz-Firehose-Source-Arn"] == ARN
        assert json.loads(headers["X-Amz-Firehose-Common-Attributes"]) == {
            "commonAttributes": {"env": "test"}
        }
        assert headers["Content-Type"] == "application/json"
        assert "Content-Encoding" not in headers
        assert await stream.store.buffered("clicks") == (0, 0)
        assert objects(tmp_path / "out") == {}  # FailedDataOnly: nothing backed up
        metrics = dict(harness.metrics)
        assert metrics["DeliveryToHttpEndpoint.Records"] == 5
        assert metrics["DeliveryToHttpEndpoint.Bytes"] == sum(map(len, sent))
        assert metrics["DeliveryToHttpEndpoint.Success"] == 1
        assert metrics["DeliveryToHttpEndpoint.DataFreshness"] == 60
    finally:
        await harness.stop()


async def test_a_gzip_request_and_all_data_backed_up(
    state_location: str, tmp_path: Path, endpoint: Endpoint
) -> None:
    config = http_config(
        endpoint.url,
        RequestConfiguration={"ContentEncoding": "GZIP"},
        S3BackupMode="AllData",
    )
    config["S3Configuration"]["Prefix"] = "all/"
    harness = HttpHarness(state_location, tmp_path, config)
    stream = await harness.start()
    try:
        sent = [record("a", n) for n in range(50)]
        await stream.put(sent)
        await harness.advance(60)
        headers, body = endpoint.requests[0]
        assert headers["Content-Encoding"] == "gzip" and decoded(body) == sent
        # What went over the wire was compressed.
        assert int(headers["Content-Length"]) < endpoint.sizes[0] / 2
        backed = objects(tmp_path / "out" / "backup")
        assert list(backed.values()) == [b"".join(sent)]
        (key,) = backed
        assert key.startswith("all/2023/11/14/22/clicks-1-2023-11-14-22-13-20-"), key
    finally:
        await harness.stop()


async def test_a_200_with_another_request_id_is_not_a_delivery(
    state_location: str, tmp_path: Path, endpoint: Endpoint
) -> None:
    endpoint.answer = lambda body, n: (200, {"requestId": "not-it", "timestamp": 1})
    config = http_config(endpoint.url, RetryOptions={"DurationInSeconds": 0})
    harness = HttpHarness(state_location, tmp_path, config)
    stream = await harness.start()
    try:
        sent = [record("a", 1)]
        await stream.put(sent)
        await harness.advance(60)
        assert len(endpoint.requests) == 1  # a retry duration of 0: no retry
        await harness.advance(60)  # the backup's buffer interval
        found = objects(tmp_path / "out" / "backup")
        (key,) = found
        assert key.startswith("http-endpoint-failed/2023/11/14/22/clicks-1-"), key
        error = json.loads(found[key])
        assert error["errorCode"] == "HttpEndpoint.InvalidResponseFromDestination"
        assert "not-it" in error["errorMessage"]
        assert base64.b64decode(error["rawData"]) == sent[0]
        assert error["attemptsMade"] == 1
        assert await stream.store.buffered("clicks") == (0, 0)
    finally:
        await harness.stop()


async def test_a_500_then_a_200_is_retried_after_the_backoff_under_one_request_id(
    state_location: str, tmp_path: Path, endpoint: Endpoint
) -> None:
    def answer(body: dict[str, Any], n: int) -> tuple[int, Any]:
        if n == 1:
            return 500, {"requestId": body["requestId"], "errorMessage": "busy"}
        return 200, {"requestId": body["requestId"], "timestamp": 1}

    endpoint.answer = answer
    harness = HttpHarness(state_location, tmp_path, http_config(endpoint.url))
    stream = await harness.start()
    try:
        sent = [record("a", n) for n in range(2)]
        await stream.put(sent)
        await harness.advance(60)
        assert len(endpoint.requests) == 1
        await harness.advance(0.8)  # the first retry: 1 s ± 15 %
        assert len(endpoint.requests) == 1
        await harness.advance(0.4)
        assert len(endpoint.requests) == 2
        (_, b1), (h2, b2) = endpoint.requests
        assert b1["requestId"] == b2["requestId"] == h2["X-Amz-Firehose-Request-Id"]
        assert decoded(b2) == sent
        assert await stream.store.buffered("clicks") == (0, 0)
        successes = [v for name, v in harness.metrics if name == "DeliveryToHttpEndpoint.Success"]
        assert successes == [0, 1]
        await harness.advance(120)
        assert objects(tmp_path / "out") == {}
    finally:
        await harness.stop()


async def test_an_endpoint_down_past_the_retry_duration_backs_the_records_up(
    state_location: str, tmp_path: Path, unused_tcp_port: int
) -> None:
    config = http_config(
        f"http://127.0.0.1:{unused_tcp_port}/ingest", RetryOptions={"DurationInSeconds": 10}
    )
    harness = HttpHarness(state_location, tmp_path, config)
    stream = await harness.start()
    try:
        sent = [record("a", n) for n in range(3)]
        await stream.put(sent)
        await harness.advance(60)
        await harness.advance(9)  # backoff 1, 2, 4 s...: still within 10 s
        assert objects(tmp_path / "out") == {}
        assert await stream.store.buffered("clicks") == (3, sum(map(len, sent)))
        await harness.advance(2)  # the last attempt at 10 s fails too
        await harness.advance(60)
        found = objects(tmp_path / "out" / "backup")
        (key,) = found
        assert key.startswith("http-endpoint-failed/"), key
        errors = [json.loads(line) for line in found[key].splitlines()]
        assert [base64.b64decode(e["rawData"]) for e in errors] == sent
        assert {e["errorCode"] for e in errors} == {"HttpEndpoint.ConnectionFailed"}
        assert errors[0]["attemptsMade"] >= 4
        assert errors[0]["arrivalTimestamp"] == int(START * 1000)
        assert await stream.store.buffered("clicks") == (0, 0)
    finally:
        await harness.stop()


async def test_a_413_is_not_retried(
    state_location: str, tmp_path: Path, endpoint: Endpoint
) -> None:
    endpoint.answer = lambda body, n: (413, {"requestId": body["requestId"]})
    harness = HttpHarness(state_location, tmp_path, http_config(endpoint.url))
    stream = await harness.start()
    try:
        await stream.put([record("a", 1)])
        await harness.advance(60)
        await harness.advance(60)
        assert len(endpoint.requests) == 1
        (data,) = objects(tmp_path / "out" / "backup").values()
        assert json.loads(data)["errorCode"] == "HttpEndpoint.DestinationException"
    finally:
        await harness.stop()


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        (
            {"BufferingHints": {"SizeInMBs": 65}},
            "http_endpoint.BufferingHints.SizeInMBs",
            "between 1 and 64",
        ),
        (
            {"EndpointConfiguration": {"Url": "ftp://x"}},
            "http_endpoint.EndpointConfiguration.Url",
            "http(s) URL",
        ),
        (
            {"RetryOptions": {"DurationInSeconds": 7201}},
            "http_endpoint.RetryOptions.DurationInSeconds",
            "7200",
        ),
        ({"S3BackupMode": "Sometimes"}, "http_endpoint.S3BackupMode", "FailedDataOnly or AllData"),
        ({"S3Configuration": None}, "http_endpoint.S3Configuration", "required"),
    ],
)
def test_a_bad_http_endpoint_configuration_is_located(
    change: dict[str, Any], where: str, message: str
) -> None:
    config = {**http_config("https://example.com/in"), **change}
    with pytest.raises(ConfigError) as caught:
        check_settings(Where("target clicks"), {"http_endpoint": config})
    text = str(caught.value)
    assert where in text and message in text, text


async def test_a_declared_stream_posts_through_the_projects_http_client(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    from pipelines.runtime import Runtime
    from plugins.firehose.target import FirehoseTarget

    from .firehose_helpers import firehose_plugins

    runtime = Runtime(state_path=tmp_path / "state.db", plugins=firehose_plugins())
    runtime.add_resource("to-http", "firehose", {"http_endpoint": http_config(endpoint.url)})
    runtime.bus().put_rule("all", pattern={"source": ["shop"]})
    await runtime.bus().put_targets("all", [{"id": "h", "resource": "to-http"}])
    async with runtime:
        await runtime.put_events(
            [
                {"Source": "shop", "DetailType": "click", "Detail": json.dumps({"n": n})}
                for n in range(3)
            ]
        )
        await runtime.wait_until_idle()
        target = runtime.resource("to-http")
        assert isinstance(target, FirehoseTarget) and target.stream is not None
        await target.stream.flush()
    ((headers, body),) = endpoint.requests
    sent = [json.loads(data) for data in decoded(body)]
    assert sorted(event["detail"]["n"] for event in sent) == [0, 1, 2]
    assert headers["X-Amz-Firehose-Source-Arn"].endswith(":deliverystream/to-http")
    assert target._client is None  # closed with the resource


def test_a_stream_needs_one_destination() -> None:
    both = {"http_endpoint": http_config("https://x.example/in"), "destination": {}}
    with pytest.raises(ConfigError, match="give destination or http_endpoint, not both"):
        check_settings(Where("target s"), both)
    with pytest.raises(ConfigError, match=r"destination: .*\(or give http_endpoint\)"):
        check_settings(Where("target s"), {})


def test_an_http_endpoint_stream_exports_to_cloudformation_and_back(tmp_path: Path) -> None:
    import subprocess
    import sys

    from pipelines.cloudformation import dump_yaml, export_config, import_templates

    config = http_config("https://collector.example.com/in")
    del config["S3Configuration"]["RoleARN"]  # the export adds the roles AWS requires
    data = {"resources": {"to-http": {"type": "firehose", "http_endpoint": config}}}
    exported = export_config(data, directory=tmp_path)
    (resource,) = exported.template["Resources"].values()
    assert resource["Type"] == "AWS::KinesisFirehose::DeliveryStream"
    properties = resource["Properties"]
    assert (
        properties["HttpEndpointDestinationConfiguration"]["EndpointConfiguration"]
        == (config["EndpointConfiguration"])
    )
    template = tmp_path / "template.yaml"
    template.write_text(dump_yaml(exported.template))
    lint = Path(sys.executable).with_name("cfn-lint")
    if lint.exists():
        found = subprocess.run(
            [str(lint), "--format", "parseable", str(template)], capture_output=True, text=True
        )
        assert found.returncode == 0, found.stdout + found.stderr
    back = import_templates([template], directory=tmp_path, write_code=False).config
    assert (
        back["resources"]["to-http"]["http_endpoint"]["EndpointConfiguration"]
        == (config["EndpointConfiguration"])
    )
