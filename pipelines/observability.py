"""``/metrics``, ``/health`` and ``/ready`` on the runner's HTTP port.

The runner serves them wherever it serves HTTP (``--api HOST:PORT`` or the
config's ``api``), through ``Runtime.routes`` like a webhook's path, so the
one aiohttp server answers them beside AWS's APIs and the web console can
add its own paths the same way. A runner with only its control socket serves
no HTTP: ``pipelines top`` reads the same numbers over the socket.

- ``/health``: 200 while the process serves requests (liveness).
- ``/ready``: 200 once the runtime has started (state database, stores and
  targets open, events taken), 503 before and once it stops.
- ``/metrics``: Prometheus's text format (OpenMetrics when asked for), made
  by the official ``prometheus_client`` from ``RuntimeCollector``, which reads
  the runtime's own counters at scrape time: the hot path counts nothing
  more for it.

What is exported (every name prefixed ``pipelines_``):

=========================================  ==========================================
``eventbridge_metric_total``               EventBridge's metrics (``metric`` label:
                                           ``MatchedEvents``, ``Invocations``,
                                           ``FailedInvocations``...), per ``bus``, ``rule``
``bus_intake_events``                      events accepted, not yet matched, per bus
``target_info``                            1 per rule target (``bus``, ``rule``,
                                           ``target``), its ``resource`` as a label
``target_delivered_total`` etc.            per rule target (``bus``, ``rule``, ``target``):
                                           delivered, failed attempts, dead-lettered, dropped
``target_in_flight``, ``target_queued``,   gauges per rule target
``target_pending_retries``
``target_last_failure_timestamp_seconds``  when its last attempt failed
``target_delivery_latency_seconds``        histogram: ingestion to delivery
``alarm_state``                            1 for each alarm's state, 0 for the others
``<gauge>``                                what resources report (``Target.gauges``):
                                           ``queue_messages``, ``stream_iterator_age_seconds``...
``up``, ``ready``                          1 / whether the runtime runs
=========================================  ==========================================
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from pipelines.routes import HttpRequest, HttpResponse, Routes
from pipelines.runtime import Runtime
from pipelines.snapshot import resource_gauges
from pipelines.targets import Gauge
from pipelines.targetstats import LATENCY_BUCKETS

PREFIX = "pipelines_"
METRICS_PATH = "/metrics"
HEALTH_PATH = "/health"
READY_PATH = "/ready"
#: The three alarm states, each a sample of ``alarm_state``.
ALARM_STATES = ("OK", "ALARM", "INSUFFICIENT_DATA")
_TARGET_LABELS = ["bus", "rule", "target"]


class RuntimeCollector(Collector):
    """The runtime's numbers as Prometheus metric families, read when collected.

    ``gauges`` are the resources' own (``snapshot.resource_gauges``), gathered
    by the caller beforehand since ``collect`` cannot await.
    """

    def __init__(self, runtime: Runtime, gauges: Iterable[tuple[str, Gauge]] = ()) -> None:
        self.runtime = runtime
        self.gauges = list(gauges)

    def collect(self) -> Iterator[Metric]:
        runtime = self.runtime
        yield GaugeMetricFamily(f"{PREFIX}up", "The runner serves (always 1).", value=1)
        yield GaugeMetricFamily(
            f"{PREFIX}ready", "1 once the runtime takes events.", value=int(runtime.running)
        )
        yield self._eventbridge()
        intake = GaugeMetricFamily(
            f"{PREFIX}bus_intake_events", "Events accepted, not yet matched.", labels=["bus"]
        )
        for bus in runtime.buses():
            intake.add_metric([bus.name], bus.intake_depth)
        yield intake
        yield from self._targets()
        yield self._alarms()
        yield from _resource_families(self.gauges)

    def _eventbridge(self) -> Metric:
        family = CounterMetricFamily(
            f"{PREFIX}eventbridge_metric",
            "EventBridge's metrics (the metric label) per bus and rule, since the runner started.",
            labels=["metric", "bus", "rule"],
        )
        for name, dims, value in sorted(self.runtime.counters.counts()):
            labels = dict(dims)
            family.add_metric(
                [name, labels.get("EventBusName", ""), labels.get("RuleName", "")], value
            )
        return family

    def _targets(self) -> Iterator[Metric]:
        """Per rule target. Built sample by sample with one label dict per
        target (``add_metric`` makes one per sample): a scrape of many targets
        is most of what /metrics costs."""
        prefix = f"{PREFIX}target_"

        def family(kind: Callable[..., Metric], name: str, text: str) -> Metric:
            return kind(f"{prefix}{name}", text, labels=_TARGET_LABELS)

        info = GaugeMetricFamily(
            f"{prefix}info",
            "The resource each rule target delivers to (always 1).",
            labels=[*_TARGET_LABELS, "resource"],
        )
        delivered = family(CounterMetricFamily, "delivered", "Events delivered.")
        failed = family(
            CounterMetricFamily,
            "failed_attempts",
            "Delivery attempts that failed (retries count again).",
        )
        dead = family(
            CounterMetricFamily,
            "dead_lettered",
            "Events given up and sent to the dead-letter target.",
        )
        dropped = family(
            CounterMetricFamily,
            "dropped",
            "Events given up without a dead letter (or it failed).",
        )
        in_flight = family(GaugeMetricFamily, "in_flight", "Deliveries under way.")
        queued = family(GaugeMetricFamily, "queued", "Jobs waiting in the target's queue.")
        pending = family(
            GaugeMetricFamily, "pending_retries", "Retries waiting for their next attempt."
        )
        last_failure = family(
            GaugeMetricFamily,
            "last_failure_timestamp_seconds",
            "When its last failed attempt failed.",
        )
        latency = family(
            HistogramMetricFamily,
            "delivery_latency_seconds",
            "From an event's ingestion to its delivery, retries included.",
        )
        bucket, count, total = (
            f"{prefix}delivery_latency_seconds{suffix}" for suffix in ("_bucket", "_count", "_sum")
        )
        bounds = [_bound(bound) for bound in (*LATENCY_BUCKETS, float("inf"))]
        for bus in self.runtime.buses():
            for delivery in bus.deliveries():
                labels = {"bus": bus.name, "rule": delivery.rule, "target": delivery.target_id}
                stats = delivery.stats
                info.add_sample(f"{prefix}info", {**labels, "resource": delivery.resource}, 1)
                delivered.add_sample(f"{prefix}delivered_total", labels, stats.delivered)
                failed.add_sample(f"{prefix}failed_attempts_total", labels, stats.failed_attempts)
                dead.add_sample(f"{prefix}dead_lettered_total", labels, stats.dead_lettered)
                dropped.add_sample(f"{prefix}dropped_total", labels, stats.dropped)
                in_flight.add_sample(f"{prefix}in_flight", labels, len(delivery.in_flight))
                queued.add_sample(f"{prefix}queued", labels, len(delivery.queue))
                pending.add_sample(f"{prefix}pending_retries", labels, stats.waiting)
                if stats.last_error is not None:
                    last_failure.add_sample(
                        f"{prefix}last_failure_timestamp_seconds", labels, stats.last_error.at
                    )
                cumulative = 0
                for bound, events in zip(bounds, stats.latency_buckets, strict=True):
                    cumulative += events
                    latency.add_sample(bucket, {**labels, "le": bound}, cumulative)
                latency.add_sample(count, labels, cumulative)
                latency.add_sample(total, labels, stats.latency_sum)
        yield from (info, delivered, failed, dead, dropped, in_flight, queued, pending)
        yield from (last_failure, latency)

    def _alarms(self) -> Metric:
        family = GaugeMetricFamily(
            f"{PREFIX}alarm_state",
            "1 for the alarm's current state, 0 for the others.",
            labels=["alarm", "state"],
        )
        for alarm in self.runtime.alarms.describe_alarms():
            for state in ALARM_STATES:
                family.add_metric([alarm["AlarmName"], state], float(alarm["StateValue"] == state))
        return family


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def _resource_families(gauges: list[tuple[str, Gauge]]) -> Iterator[Metric]:
    """The resources' gauges, a family per name; ``resource`` names who reported."""
    by_name: dict[str, list[tuple[str, Gauge]]] = {}
    for resource, gauge in gauges:
        by_name.setdefault(gauge.name, []).append((resource, gauge))
    for name, found in sorted(by_name.items()):
        label_names = ["resource", *sorted({key for _, g in found for key in g.labels})]
        family = GaugeMetricFamily(
            f"{PREFIX}{name}", found[0][1].help or name.replace("_", " "), labels=label_names
        )
        for resource, gauge in found:
            values = [resource, *(gauge.labels.get(key, "") for key in label_names[1:])]
            family.add_metric(values, gauge.value)
        yield family


class _Collected(Collector):
    """Families already collected, for the encoder to write."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


async def render_metrics(runtime: Runtime, accept: str = "") -> tuple[bytes, str]:
    """The ``/metrics`` body and its content type (``accept``: the request's
    Accept header, which may ask for OpenMetrics).

    The runtime is read on the event loop (its structures change there);
    the text is then written by prometheus_client's encoder in a worker
    thread, from those values alone: encoding is most of a scrape's cost
    (about 15 µs a sample, 2,700 samples for 100 rule targets) and would
    otherwise hold the loop that long."""
    gauges = await resource_gauges(runtime)
    families = list(RuntimeCollector(runtime, gauges).collect())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collected(families))
    encode, content_type = choose_encoder(accept)
    return await asyncio.to_thread(encode, registry), content_type


def serve_observability(runtime: Runtime, routes: Routes | None = None) -> Callable[[], None]:
    """Serve ``/metrics``, ``/health`` and ``/ready`` for ``runtime`` on the
    HTTP port its ``routes`` belong to; the function returned removes them."""
    routes = routes if routes is not None else runtime.routes

    async def metrics(request: HttpRequest) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return _method_not_allowed()
        body, content_type = await render_metrics(runtime, request.headers.get("accept", ""))
        return HttpResponse(200, body, {"Content-Type": content_type})

    async def health(request: HttpRequest) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return _method_not_allowed()
        return _json(200, {"status": "live"})

    async def ready(request: HttpRequest) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return _method_not_allowed()
        if runtime.running:
            return _json(200, {"status": "ready"})
        return _json(503, {"status": "not ready", "reason": _not_ready(runtime)})

    removers = [
        routes.add(METRICS_PATH, metrics, max_body=0),
        routes.add(HEALTH_PATH, health, max_body=0),
        routes.add(READY_PATH, ready, max_body=0),
    ]

    def remove() -> None:
        for remover in removers:
            remover()

    return remove


def _not_ready(runtime: Runtime) -> str:
    try:
        runtime.metrics  # noqa: B018 - open only between start and stop
    except Exception:
        return "starting or stopping: the state database and stores are not open"
    return "starting: targets and intake are not open yet, or stopping"


def _json(status: int, value: dict[str, Any]) -> HttpResponse:
    return HttpResponse(status, orjson.dumps(value), {"Content-Type": "application/json"})


def _method_not_allowed() -> HttpResponse:
    return HttpResponse(405, b'{"message":"GET only"}', {"Allow": "GET, HEAD"})
