"""API destinations and connections against a real local HTTP server."""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.clock import ManualClock
from pipelines.config import build_runtime, load_config
from pipelines.http.ratelimit import TokenBucket
from pipelines.metrics import MetricStore
from pipelines.runtime import Runtime
from plugins.http.destination import _compiled, burst

from .httpserver import Answer, ScriptedServer
from .recorder import Recorder, plugin_manager


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    made = await ScriptedServer().start()
    try:
        yield made
    finally:
        await made.close()


async def running(tmp_path: Path, text: str, **options: Any) -> Runtime:
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    options.setdefault("state_path", None)
    runtime = await build_runtime(load_config([path]), plugins=plugin_manager(), **options)
    await runtime.start()
    return runtime


def event(**detail: Any) -> dict[str, Any]:
    import json

    return {"Source": "shop", "DetailType": "order", "Detail": json.dumps(detail)}


API_KEY_PIPELINE = """
resources:
  hook:
    type: api_destination
    endpoint: {url}/orders/*/items/*
    http_method: PUT
    connection:
      authorization_type: API_KEY
      api_key: {{name: x-api-key, value: s3cret-key}}
      parameters:
        header: {{x-team: payments}}
        query: {{source: pipelines}}
        body: {{added: yes-from-connection}}
rules:
  orders:
    pattern: {{source: [shop]}}
    targets:
      - id: t
        resource: hook
        http_parameters:
          path_parameter_values: [$.detail.order, fixed]
          header_parameters: {{x-order: $.detail.order, x-static: plain}}
          query_string_parameters: {{region: $.detail.region, missing: $.detail.nothing}}
"""


async def test_an_api_destination_sends_the_event_as_eventbridge_does(
    tmp_path: Path, server: ScriptedServer
) -> None:
    runtime = await running(tmp_path, API_KEY_PIPELINE.format(url=server.url))
    try:
        await runtime.put_events([event(order="A/1", region="eu")])
        (seen,) = await server.wait_for(1)
    finally:
        await runtime.stop()
    assert seen.method == "PUT"
    assert seen.raw_path == "/orders/A%2F1/items/fixed"  # a path value is one segment
    assert seen.query == {"region": "eu", "source": "pipelines"}  # absent values are not sent
    headers = seen.headers
    assert headers["x-api-key"] == "s3cret-key"
    assert headers["x-team"] == "payments"
    assert (headers["x-order"], headers["x-static"]) == ("A/1", "plain")
    assert headers["user-agent"] == "Amazon/EventBridge/ApiDestinations"
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert headers["range"] == "bytes=0-1048575"
    body = seen.json()
    assert body["source"] == "shop" and body["detail"] == {"order": "A/1", "region": "eu"}
    assert body["added"] == "yes-from-connection"


BASIC_PIPELINE = """
resources:
  creds:
    type: connection
    authorization_type: BASIC
    basic: {{username: ada, password: pa55}}
  hook:
    type: api_destination
    endpoint: {url}/hook
    connection: creds
rules:
  orders:
    pattern: {{source: [shop]}}
    targets:
      - id: t
        resource: hook
        input_transformer:
          input_paths_map: {{order: $.detail.order}}
          input_template: '"order <order> placed"'
"""


async def test_a_named_basic_connection_and_a_string_payload(
    tmp_path: Path, server: ScriptedServer
) -> None:
    runtime = await running(tmp_path, BASIC_PIPELINE.format(url=server.url))
    try:
        await runtime.put_events([event(order="B2")])
        (seen,) = await server.wait_for(1)
    finally:
        await runtime.stop()
    assert seen.method == "POST"
    assert seen.headers["authorization"] == "Basic " + base64.b64encode(b"ada:pa55").decode()
    assert seen.body == b'"order B2 placed"'  # the JSON string, as EventBridge sends it


OAUTH_PIPELINE = """
resources:
  creds:
    type: connection
    authorization_type: OAUTH_CLIENT_CREDENTIALS
    oauth:
      authorization_endpoint: {url}/token
      http_method: POST
      client_id: client
      client_secret: secret
      parameters: {{body: {{scope: orders}}}}
  hook:
    type: api_destination
    endpoint: {url}/secure/hook
    connection: creds
  dead: {{type: recorder}}
rules:
  orders:
    pattern: {{source: [shop]}}
    targets:
      - id: t
        resource: hook
        dead_letter: dead
        retry_policy: {{maximum_retry_attempts: 0}}
"""


async def test_oauth_tokens_are_fetched_once_cached_and_refreshed_on_a_401(
    tmp_path: Path, server: ScriptedServer
) -> None:
    runtime = await running(tmp_path, OAUTH_PIPELINE.format(url=server.url))
    try:
        await runtime.put_events([event(n=1)])
        await server.wait_for(1)
        await runtime.put_events([event(n=2)])
        await server.wait_for(2)
        assert server.tokens_issued == 1  # the second delivery used the cached token
        server.revoke()  # the endpoint now refuses token-1
        await runtime.put_events([event(n=3)])
        seen = await server.wait_for(4)
        await asyncio.sleep(0.05)
    finally:
        await runtime.stop()
    assert [r.headers["authorization"] for r in seen] == [
        "Bearer token-1",
        "Bearer token-1",
        "Bearer token-1",  # refused with 401 ...
        "Bearer token-2",  # ... so a new token, and the request again
    ]
    assert server.tokens_issued == 2
    token_request = server.token_requests[0]
    assert token_request.method == "POST"
    assert b"grant_type=client_credentials" in token_request.body
    assert b"scope=orders" in token_request.body
    dead = runtime.resource("dead")
    assert isinstance(dead, Recorder) and dead.received == []  # nothing failed for good


async def test_retry_after_is_honoured_and_5xx_are_retried(
    tmp_path: Path, server: ScriptedServer
) -> None:
    clock = ManualClock()
    server.script(
        "/hook",
        [Answer(429, "slow down", {"Retry-After": "30"}), Answer(503, "busy"), Answer(200)],
    )
    text = BASIC_PIPELINE.format(url=server.url)
    runtime = await running(tmp_path, text, clock=clock)
    try:
        await runtime.put_events([event(order="C3")])
        await server.wait_for(1)
        # Backoff alone would retry within a second; the answer asked for 30.
        for _ in range(29):
            await clock.advance(1.0)
            await asyncio.sleep(0.01)
        assert len(server.requests) == 1
        await clock.advance(1.5)
        await server.wait_for(2)  # the 503: retried after the backoff
        await clock.advance(2.0)
        await server.wait_for(3)
    finally:
        await runtime.stop()
    assert [r.body for r in server.requests] == [b'"order C3 placed"'] * 3


DEAD_LETTER_PIPELINE = """
resources:
  hook:
    type: api_destination
    endpoint: {url}/hook
    timeout: 0.3
    connection: {{authorization_type: API_KEY, api_key: {{name: k, value: topsecret}}}}
  other: {{type: recorder}}
  dead: {{type: recorder}}
rules:
  orders:
    pattern: {{source: [shop]}}
    targets:
      - {{id: t, resource: hook, dead_letter: dead, retry_policy: {{maximum_retry_attempts: 0}}}}
      - {{id: o, resource: other}}
"""


async def test_a_4xx_goes_to_the_dead_letter_at_once_with_the_status_and_body(
    tmp_path: Path, server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.script("/hook", [Answer(400, '{"message": "order id missing"}')])
    caplog.set_level(logging.DEBUG)
    runtime = await running(tmp_path, DEAD_LETTER_PIPELINE.format(url=server.url))
    dead = runtime.resource("dead")
    assert isinstance(dead, Recorder)
    try:
        await runtime.put_events([event(n=1)])
        for _ in range(200):
            if dead.received:
                break
            await asyncio.sleep(0.01)
    finally:
        await runtime.stop()
    assert len(server.requests) == 1  # not retried
    attributes = dead.received[0].context.attributes
    assert attributes["ERROR_CODE"] == "HTTPStatus400"
    assert "400" in attributes["ERROR_MESSAGE"]
    assert "order id missing" in attributes["ERROR_MESSAGE"]
    assert "topsecret" not in caplog.text  # the key was sent, never logged


async def test_a_hanging_destination_times_out_and_blocks_no_other_target(
    tmp_path: Path, server: ScriptedServer
) -> None:
    server.script("/hook", [Answer(200, delay=5.0)])
    runtime = await running(tmp_path, DEAD_LETTER_PIPELINE.format(url=server.url))
    other, dead = runtime.resource("other"), runtime.resource("dead")
    assert isinstance(other, Recorder) and isinstance(dead, Recorder)
    try:
        await runtime.put_events([event(n=i) for i in range(3)])
        for _ in range(300):
            if len(other.received) == 3 and len(dead.received) == 3:
                break
            await asyncio.sleep(0.01)
    finally:
        await runtime.stop(timeout=1)
    assert len(other.received) == 3
    assert {r.context.attributes["ERROR_CODE"] for r in dead.received} == {"Timeout"}


async def test_garbage_answers_fail_alone(tmp_path: Path, server: ScriptedServer) -> None:
    # A 200 with a body that is not JSON is still a delivery (AWS reads the status).
    server.script("/hook", [Answer(200, "\x00\xff not json" * 10000)])
    runtime = await running(tmp_path, DEAD_LETTER_PIPELINE.format(url=server.url))
    dead = runtime.resource("dead")
    assert isinstance(dead, Recorder)
    try:
        await runtime.put_events([event(n=1), event(n=2)])
        await server.wait_for(2)
        await asyncio.sleep(0.05)
    finally:
        await runtime.stop()
    assert dead.received == []


async def test_the_token_bucket_spaces_calls_at_the_rate_and_drops_none() -> None:
    clock = ManualClock()
    bucket = TokenBucket(50, clock)
    waits = [bucket.reserve() for _ in range(100)]
    assert waits[0] == 0
    # Each call's slot is 1/50 s after the one before: 100 calls span 99/50 s.
    assert waits[-1] == pytest.approx(99 / 50, abs=1e-5)
    assert all(b - a == pytest.approx(1 / 50, abs=1e-5) for a, b in itertools.pairwise(waits))
    await clock.advance(10)  # idle: the bucket is full again
    assert bucket.reserve() == 0


def test_a_burst_lets_that_many_through_at_once() -> None:
    clock = ManualClock()
    bucket = TokenBucket(10, clock, burst=5)
    assert [bucket.reserve() for _ in range(6)] == [0, 0, 0, 0, 0, pytest.approx(0.1, abs=1e-5)]


def test_a_destination_s_rate_limit_lets_one_millisecond_of_requests_go_at_once() -> None:
    # Up to 1000/s every request has its slot (the rate to the request);
    # faster, a millisecond's worth goes at once, and the rate still holds.
    assert [burst(rate) for rate in (1, 50, 300, 1000)] == [1.0, 1.0, 1.0, 1.0]
    assert burst(5000) == 5.0 and burst(10_000) == 10.0
    clock = ManualClock()
    bucket = TokenBucket(10_000, clock, burst=burst(10_000))
    waits = [bucket.reserve() for _ in range(10_010)]
    assert waits[:10] == [0.0] * 10 and waits[10] > 0
    # 10,010 requests at once: the last goes 1 s after the first ten (to
    # the float rounding of 10,000 slots added to an epoch time).
    assert waits[-1] == pytest.approx(1.0, rel=0.005)


def test_path_values_are_one_segment_each_whether_constant_or_read() -> None:
    endpoint = "http://h/a/*/b/*/c/*"
    given = {
        "path_parameter_values": ["x y", "$.detail.id", "$.detail.missing"],
        "header_parameters": {"x-c": "constant\r\nline", "x-r": "$.detail.id"},
        "query_string_parameters": {"q": "$.detail.n", "k": "v"},
    }
    compiled = _compiled(endpoint, given)
    event = {"detail": {"id": "A/1~ok", "n": 3}}
    assert compiled.url_for(event) == "http://h/a/x%20y/b/A%2F1~ok/c/"
    assert compiled.headers["x-c"] == "constant  line"  # no line break reaches a header
    assert compiled.headers["User-Agent"] == "Amazon/EventBridge/ApiDestinations"
    assert [name for name, _ in compiled.read_headers] == ["x-r"]
    assert dict(compiled.query) == {"k": "v"}
    assert compiled.read_query[0][1](event) == "3"  # a number is sent as its JSON
    # No parameters: the endpoint as it is.
    assert _compiled("http://h/fixed", {}).url_for(event) == "http://h/fixed"


async def test_answers_are_counted_by_status_code_per_destination(
    tmp_path: Path, server: ScriptedServer
) -> None:
    server.script("/hook", [Answer(200), Answer(200), Answer(400), Answer(200)])
    text = DEAD_LETTER_PIPELINE.format(url=server.url)
    runtime = await running(tmp_path, text, state_path=tmp_path / "state.db")
    try:
        for n in range(4):  # one at a time: the answers go in the scripted order
            await runtime.put_events([event(n=n)])
            await server.wait_for(n + 1)
        await asyncio.sleep(0.05)
    finally:
        await runtime.stop()
    counted = {}
    async with MetricStore.existing(tmp_path / "state.db", runtime.clock) as store:
        for status in ("200", "400"):
            found = await store.get_metric_statistics(
                "Pipelines/ApiDestinations",
                "Responses",
                {"ApiDestination": "hook", "StatusCode": status},
                start=runtime.clock.time() - 3600,
                end=runtime.clock.time() + 3600,
                period=60,
                statistics=["Sum"],
            )
            counted[status] = sum(point["Sum"] for point in found["Datapoints"])
    assert counted == {"200": 3, "400": 1}


TLS_PIPELINE = """
resources:
  trusted:
    type: api_destination
    endpoint: {url}/hook
    tls: {{ca_file: {ca}}}
    connection: {{authorization_type: API_KEY, api_key: {{name: k, value: v}}}}
  untrusted:
    type: api_destination
    endpoint: {url}/hook
    connection: {{authorization_type: API_KEY, api_key: {{name: k, value: v}}}}
  dead: {{type: recorder}}
rules:
  r:
    pattern: {{source: [shop]}}
    targets:
      - {{id: a, resource: trusted}}
      - {{id: b, resource: untrusted, dead_letter: dead, retry_policy: {{maximum_retry_attempts: 0}}}}
"""


async def test_tls_is_verified_and_a_ca_file_adds_a_private_authority(tmp_path: Path) -> None:
    import ssl

    from .mosquitto import make_certificates

    certificates = make_certificates(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates.server_cert, certificates.server_key)
    server = await ScriptedServer().start(tls=context)
    text = TLS_PIPELINE.format(url=server.url, ca=certificates.ca)
    runtime = await running(tmp_path, text)
    dead = runtime.resource("dead")
    assert isinstance(dead, Recorder)
    try:
        await runtime.put_events([event(n=1)])
        await server.wait_for(1)
        for _ in range(300):
            if dead.received:
                break
            await asyncio.sleep(0.01)
    finally:
        await runtime.stop()
        await server.close()
    assert len(server.requests) == 1  # only the destination trusting the CA got through
    (refused,) = dead.received
    assert refused.context.attributes["ERROR_CODE"] == "ConnectionError"
    assert "certificate" in refused.context.attributes["ERROR_MESSAGE"].lower()
