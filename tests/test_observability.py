"""``/metrics``, ``/health`` and ``/ready``: a real runner scraped over HTTP,
its answer read with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipelines.api import ApiServer, served_services
from pipelines.observability import render_metrics, serve_observability
from pipelines.runtime import Runtime
from pipelines.targets import DeliveryContext, Target
from tests.observed import Pipeline

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample, by (name, labels)."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


TARGET = {"bus": "default", "rule": "orders"}


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    running = Pipeline(tmp_path, "--api", "127.0.0.1:0").start()
    try:
        yield running
        assert running.stop() == 0, running.log.read_text()
    finally:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait()


def scrape_until(pipeline: Pipeline, done: Any, seconds: float = 20.0) -> Samples:
    """Scrape until ``done(samples)`` holds (deliveries settle in the background)."""
    deadline = time.monotonic() + seconds
    while True:
        status, content_type, body = pipeline.get("/metrics")
        assert status == 200 and content_type.startswith("text/plain"), (status, body)
        samples = parse(body)
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


def test_metrics_show_each_rule_target_its_failures_and_retries(pipeline: Pipeline) -> None:
    pipeline.put("shop", 5)
    pipeline.put("refunds", 2)

    def settled(samples: Samples) -> bool:
        key = (
            "pipelines_target_delivered_total",
            frozenset(
                {
                    **TARGET,
                    "target": "sink",
                }.items()
            ),
        )
        return (
            samples.get(key) == 5
            and samples.get(
                (
                    "pipelines_target_pending_retries",
                    frozenset(
                        {
                            **TARGET,
                            "target": "charge",
                        }.items()
                    ),
                )
            )
            == 5
        )

    samples = scrape_until(pipeline, settled)
    sink = {
        **TARGET,
        "target": "sink",
    }
    charge = {
        **TARGET,
        "target": "charge",
    }
    # EventBridge's metrics, under their names, per bus and rule.
    assert (
        value(
            samples,
            "pipelines_eventbridge_metric_total",
            metric="MatchedEvents",
            bus="default",
            rule="orders",
        )
        == 5
    )
    assert (
        value(
            samples,
            "pipelines_eventbridge_metric_total",
            metric="MatchedEvents",
            bus="default",
            rule="refunds",
        )
        == 2
    )
    assert (
        value(
            samples, "pipelines_eventbridge_metric_total", metric="Events", bus="default", rule=""
        )
        == 7
    )
    # Per rule target: what was delivered, what failed and waits as a retry.
    assert value(samples, "pipelines_target_delivered_total", **sink) == 5
    assert (
        value(
            samples,
            "pipelines_target_delivered_total",
            bus="default",
            rule="refunds",
            target="sink",
        )
        == 2
    )
    assert value(samples, "pipelines_target_delivered_total", **charge) == 0
    assert value(samples, "pipelines_target_info", **charge, resource="charge") == 1
    assert value(samples, "pipelines_target_failed_attempts_total", **charge) >= 5
    assert value(samples, "pipelines_target_pending_retries", **charge) == 5
    assert value(samples, "pipelines_target_in_flight", **charge) == 0
    assert (
        value(samples, "pipelines_target_last_failure_timestamp_seconds", **charge)
        > time.time() - 60
    )
    assert (
        "pipelines_target_last_failure_timestamp_seconds",
        frozenset(sink.items()),
    ) not in samples
    # The latency histogram counted each delivered event once, in cumulative buckets.
    assert value(samples, "pipelines_target_delivery_latency_seconds_count", **sink) == 5
    assert (
        value(samples, "pipelines_target_delivery_latency_seconds_bucket", **sink, le="+Inf") == 5
    )
    assert (
        value(samples, "pipelines_target_delivery_latency_seconds_bucket", **sink, le="86400.0")
        == 5
    )
    assert 0 < value(samples, "pipelines_target_delivery_latency_seconds_sum", **sink) < 60
    # The queue resource reports its depth (Target.gauges).
    assert value(samples, "pipelines_queue_messages", resource="inbox", queue="inbox") == 5
    assert (
        value(samples, "pipelines_queue_messages_in_flight", resource="inbox", queue="inbox") == 0
    )
    # Alarm states: one sample per state, 1 for the current one.
    states = {
        state: value(samples, "pipelines_alarm_state", alarm="charge-failing", state=state)
        for state in ("OK", "ALARM", "INSUFFICIENT_DATA")
    }
    assert sorted(states.values()) == [0, 0, 1]
    assert value(samples, "pipelines_up") == 1 and value(samples, "pipelines_ready") == 1
    assert value(samples, "pipelines_bus_intake_events", bus="default") == 0


def test_openmetrics_when_asked(pipeline: Pipeline) -> None:
    status, content_type, body = pipeline.get(
        "/metrics", accept="application/openmetrics-text; version=1.0.0"
    )
    assert status == 200
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")


def test_health_and_ready_on_a_running_pipeline(pipeline: Pipeline) -> None:
    assert pipeline.get("/health")[0] == 200
    status, _, body = pipeline.get("/ready")
    assert status == 200 and "ready" in body
    request = urllib.request.Request(pipeline.url + "/metrics", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code in (405, 413)


class _Slow(Target):
    async def deliver(self, payload: Any, context: DeliveryContext) -> None:
        return None


async def _status(url: str) -> int:
    def get() -> int:
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as error:
            return error.code

    return await asyncio.to_thread(get)


async def test_ready_is_503_before_start_and_after_stop(tmp_path: Path) -> None:
    runtime = Runtime(state_path=tmp_path / "state.db")
    server = ApiServer(runtime, served_services())
    serve_observability(runtime)
    await server.start()
    try:
        assert await _status(server.url + "/ready") == 503
        assert await _status(server.url + "/health") == 200
        await runtime.start()
        assert await _status(server.url + "/ready") == 200
        await runtime.stop()
        assert await _status(server.url + "/ready") == 503
        assert await _status(server.url + "/metrics") == 200  # still answers, ready 0
    finally:
        await server.close()


async def test_target_stats_count_dead_letters_drops_and_retries_taken_away() -> None:
    from pipelines.snapshot import snapshot
    from tests.recorder import plugin_manager

    runtime = Runtime(plugins=plugin_manager())
    runtime.add_resource("refuses", "recorder", {"fail": -1, "retryable": False})
    runtime.add_resource("flaky", "recorder", {"fail": -1})
    runtime.add_resource("dlq", "recorder", {})
    bus = runtime.bus()
    bus.put_rule("r", pattern={"source": ["shop"]})
    await bus.put_targets(
        "r",
        [
            {"id": "lettered", "resource": "refuses", "dead_letter": "dlq"},
            {"id": "dropped", "resource": "refuses"},
            {"id": "retried", "resource": "flaky"},
        ],
    )
    async with runtime:
        await runtime.put_events([{"Source": "shop", "DetailType": "t", "Detail": "{}"}] * 2)
        await runtime.wait_until_idle()
        targets = {t["target"]: t for t in snapshot(runtime)["targets"]}
        assert targets["lettered"]["dead_lettered"] == 2 and targets["lettered"]["dropped"] == 0
        assert targets["dropped"]["dropped"] == 2 and targets["dropped"]["dead_lettered"] == 0
        assert targets["retried"]["pending_retries"] == 2
        assert targets["retried"]["failed_attempts"] == 2
        assert targets["retried"]["last_error"]["code"] == "TestFailure"
        await bus.remove_targets("r", ["retried"])  # its waiting retries go with it
        assert runtime.deliverer.retries.waiting() == []
        body, _ = await render_metrics(runtime)
    samples = parse(body.decode())
    labels = {"bus": "default", "rule": "r"}
    assert value(samples, "pipelines_target_dead_lettered_total", **labels, target="lettered") == 2
    assert value(samples, "pipelines_target_dropped_total", **labels, target="dropped") == 2
    assert (
        "pipelines_target_pending_retries",
        frozenset({**labels, "target": "retried"}.items()),
    ) not in samples
