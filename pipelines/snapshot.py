"""A running pipeline's numbers at one moment, as plain data.

``snapshot`` reads what the runtime keeps in memory anyway (EventBridge's
counters per bus and rule, each rule target's ``TargetStats``, queue and
retry sizes, alarm states): nothing is counted for it, and taking one costs
a walk over the rules and targets. ``resource_gauges`` asks each running
resource what it reports about itself (``Target.gauges``: a queue's depth, a
stream consumer's lag). ``pipelines top`` (through the control socket's
``stats``), ``/metrics`` (``pipelines.observability``) and the web console
read these.

Counters are totals since the runtime started; a viewer computes rates from
two snapshots (``time`` is the runtime clock's).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from pipelines import metrics as m
from pipelines.runtime import Runtime
from pipelines.targets import Gauge

log = logging.getLogger("pipelines.snapshot")

#: Seconds a scrape waits for the resources' gauges.
GAUGE_TIMEOUT = 1.0

#: The per-rule counters a snapshot carries, by EventBridge's names.
RULE_COUNTERS = (
    m.MATCHED_EVENTS,
    m.TRIGGERED_RULES,
    m.INVOCATIONS,
    m.FAILED_INVOCATIONS,
    m.DEAD_LETTER_INVOCATIONS,
    m.THROTTLED_RULES,
)


def snapshot(runtime: Runtime) -> dict[str, Any]:
    """Buses, rules, rule targets and alarms with their counts now (JSON-ready)."""
    by_dims: dict[tuple[str, m.Dimensions], float] = {
        (name, dims): value for name, dims, value in runtime.counters.counts()
    }
    buses = []
    rules = []
    targets = []
    for bus in runtime.buses():
        bus_dims = m.dimensions(EventBusName=bus.name)
        buses.append(
            {
                "bus": bus.name,
                "events": by_dims.get((m.EVENTS, bus_dims), 0.0),
                "matched": by_dims.get((m.MATCHED_EVENTS, bus_dims), 0.0),
                "intake": bus.intake_depth,
            }
        )
        for rule in bus.list_rules():
            dims = m.dimensions(EventBusName=bus.name, RuleName=rule["Name"])
            counts = {name: by_dims.get((name, dims), 0.0) for name in RULE_COUNTERS}
            rules.append({"bus": bus.name, "rule": rule["Name"], "state": rule["State"], **counts})
        for delivery in bus.deliveries():
            stats = delivery.stats
            last = stats.last_error
            targets.append(
                {
                    "bus": bus.name,
                    "rule": delivery.rule,
                    "target": delivery.target_id,
                    "resource": delivery.resource,
                    "delivered": stats.delivered,
                    "failed_attempts": stats.failed_attempts,
                    "dead_lettered": stats.dead_lettered,
                    "dropped": stats.dropped,
                    "in_flight": len(delivery.in_flight),
                    "queued": len(delivery.queue),
                    "pending_retries": stats.waiting,
                    "last_error": None
                    if last is None
                    else {"code": last.code, "message": last.message, "at": last.at},
                    "latency_sum": stats.latency_sum,
                }
            )
    alarms = [
        {"alarm": alarm["AlarmName"], "state": alarm["StateValue"]}
        for alarm in runtime.alarms.describe_alarms()
    ]
    return {
        "time": runtime.clock.time(),
        "running": runtime.running,
        "buses": buses,
        "rules": rules,
        "targets": targets,
        "alarms": alarms,
    }


async def resource_gauges(
    runtime: Runtime, timeout: float = GAUGE_TIMEOUT
) -> list[tuple[str, Gauge]]:
    """Each running resource's ``gauges()``, as (resource name, gauge), all
    asked at once; a resource that fails or takes over ``timeout`` seconds
    is left out (and logged), so one slow store cannot stall a scrape."""
    if not runtime.running:
        return []
    names = runtime.resource_names()
    calls = [asyncio.ensure_future(runtime.resource(name).gauges()) for name in names]
    if not calls:
        return []
    try:
        done, _ = await asyncio.wait(calls, timeout=timeout)
    finally:
        # Owned here: none outlives the scrape (cancelled too when it is).
        for call in calls:
            call.cancel()
        await asyncio.wait(calls)
    found: list[tuple[str, Gauge]] = []
    for name, call in zip(names, calls, strict=True):
        if call not in done:
            log.warning("resource %s took over %.1f s for its gauges: left out", name, timeout)
            continue
        error = call.exception()
        if error is not None:
            log.warning("resource %s could not report its gauges: %s", name, error)
            continue
        gauges: Sequence[Gauge] = call.result()
        found += [(name, gauge) for gauge in gauges]
    return found
