"""What the schema registry costs the bus: throughput with discovery on and
with validation against a 20-field schema, against the same bus without
either, in one run.

The workload is ``bench_bus``'s realistic case (100 rules of
``bench_patterns``' mix, order events padded to 0.2-1 KB, one no-op
``function`` target per rule, a state database with the durable intake, 16
producers putting batches of 10). Three configurations run alternately,
``--repeats`` times each, in one process:

- ``plain``: no ``schemas`` resource;
- ``discovery``: a ``schemas`` resource with a discoverer on the bus (its
  tap queues events, its task fingerprints them and writes a version when a
  structure is new);
- ``validation``: a ``schemas`` resource requiring every event's (source,
  detail-type) to match a registered JSONSchema Draft 4 version of 20 typed
  fields (the envelope's 8, the detail's 12, ``items`` checked item by item),
  every event valid.

Printed: the load average, then per configuration the median events/s and
CPU µs per event (``process_time``, every thread), and each one's cost
against ``plain`` (1 - throughput ratio, and the CPU ratio). The issue's
targets are at most 10% for discovery and 30% for validation.

    python bench/bench_schemas.py [--events 20000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_bus
import bench_patterns

from pipelines.limits import Limits
from pipelines.pluginmanager import get_plugin_manager
from pipelines.process import tuned_process
from pipelines.runtime import Runtime

STRING, NUMBER = {"type": "string"}, {"type": "number"}
#: 20 typed fields: the envelope's 8 and the detail's 12.
ORDER_SCHEMA = {
    "$schema": "http://json-schema.org/draft-04/schema#",
    "type": "object",
    "required": ["version", "id", "detail-type", "source", "account", "time", "region", "detail"],
    "properties": {
        "version": STRING,
        "id": STRING,
        "detail-type": STRING,
        "source": STRING,
        "account": STRING,
        "time": STRING,
        "region": STRING,
        "resources": {"type": "array", "items": STRING},
        "detail": {
            "type": "object",
            "required": ["orderId", "status", "total", "customer", "items"],
            "properties": {
                "orderId": STRING,
                "status": STRING,
                "total": NUMBER,
                "sku": STRING,
                "path": STRING,
                "customer": {
                    "type": "object",
                    "required": ["id"],
                    "properties": {"id": STRING, "country": STRING, "tier": STRING},
                },
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["sku", "qty"],
                        "properties": {"sku": STRING, "qty": NUMBER},
                    },
                },
            },
        },
    },
}


def plugins() -> Any:
    """The installed plugins, with the schemas plugin even before it is installed."""
    import plugins.schemas as schemas_plugin

    manager = get_plugin_manager()
    if manager.get_plugin("schemas") is None and not manager.is_registered(schemas_plugin):
        manager.register(schemas_plugin, name="schemas")
    return manager


def schemas_settings(kind: str) -> dict[str, Any] | None:
    if kind == "discovery":
        return {"discoverers": ["default"]}
    if kind == "validation":
        require = [
            {"source": source, "detail_type": detail_type, "schema": "shop/orders"}
            for source in ("com.shop.orders", "com.shop.payments")
            for detail_type in bench_patterns.TYPES
        ]
        return {
            "registries": {"shop": {"schemas": {"orders": {"content": ORDER_SCHEMA}}}},
            "require": require,
        }
    return None


async def run(
    kind: str, entries: list[dict[str, Any]], patterns: list[Any], jobs: int, producers: int
) -> tuple[float, float, dict[str, Any]]:
    """Events/s and CPU µs per event for one configuration, and what the
    schemas resource saw (events looked at, dropped)."""
    with tempfile.TemporaryDirectory() as tmp:
        runtime = Runtime(
            limits=Limits(intake_size=10_000, target_queue_size=1_000),
            state_path=Path(tmp) / "state.db",
            plugins=plugins(),
        )
        runtime.add_resource("noop", "function", {"function": "bench_bus:noop"})
        settings = schemas_settings(kind)
        if settings is not None:
            runtime.add_resource("schemas", "schemas", settings)
        bus = runtime.bus()
        for number, pattern in enumerate(patterns):
            bus.put_rule(f"rule-{number}", pattern=pattern)
            await bus.put_targets(f"rule-{number}", [{"id": "t", "resource": "noop"}])
        bench_bus.delivered, bench_bus.expected = 0, jobs
        bench_bus.finished = asyncio.Event()
        seen: dict[str, Any] = {}
        async with runtime:
            calls = [entries[offset : offset + 10] for offset in range(0, len(entries), 10)]

            async def produce(first: int) -> None:
                for call in calls[first::producers]:
                    answer = await runtime.put_events(call)
                    assert not answer["FailedEntryCount"], answer

            start, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(produce(first) for first in range(producers)))
            await bench_bus.finished.wait()
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
            if settings is not None:
                resource: Any = runtime.resource("schemas")
                if resource.discovery is not None:
                    seen = {
                        "looked": resource.discovery.looked,
                        "dropped": resource.discovery.dropped,
                    }
    assert bench_bus.delivered == jobs
    count = len(entries)
    return count / elapsed, cpu * 1e6 / count, seen


async def main(args: argparse.Namespace) -> None:
    entries, patterns = bench_bus.realistic(args.events, 100, 40)
    jobs = bench_bus.expected_jobs(entries, patterns)
    kinds = ("plain", "discovery", "validation")
    rates: dict[str, list[float]] = {k: [] for k in kinds}
    cpus: dict[str, list[float]] = {k: [] for k in kinds}
    print(f"load before: {bench_bus.load()}")
    print(f"{args.events} events, {jobs} deliveries, {args.repeats} repeats, alternating")
    for repeat in range(args.repeats):
        for kind in kinds:
            gc.collect()
            rate, cpu, seen = await run(kind, entries, patterns, jobs, args.producers)
            rates[kind].append(rate)
            cpus[kind].append(cpu)
            extra = f"  {seen}" if seen else ""
            print(
                f"  #{repeat + 1} {kind:<10} {rate:9.0f} events/s  {cpu:7.1f} µs CPU/event{extra}"
            )
    print(f"load after: {bench_bus.load()}")
    base_rate = statistics.median(rates["plain"])
    base_cpu = statistics.median(cpus["plain"])
    print(f"{'':<11}{'events/s':>10}{'µs CPU/ev':>11}{'cost (rate)':>13}{'CPU ratio':>11}")
    for kind in kinds:
        rate, cpu = statistics.median(rates[kind]), statistics.median(cpus[kind])
        cost = 1 - rate / base_rate
        print(f"{kind:<11}{rate:>10.0f}{cpu:>11.1f}{cost:>12.1%}{cpu / base_cpu:>11.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--producers", type=int, default=16)
    with tuned_process():
        asyncio.run(main(parser.parse_args()))
