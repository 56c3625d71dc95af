"""Running a pipeline config: what ``pipelines run`` does, as a function.

``run_pipeline`` builds the runtime from a checked config, starts it, and
either feeds it events from JSON lines (exiting once everything is delivered)
or runs until ``stop`` is set (the CLI sets it on SIGINT or SIGTERM). Then it
stops gracefully: intake closed, in-flight work drained within
``shutdown_timeout``, the rest persisted to the state database.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipelines.clock import Clock
from pipelines.config import PipelineConfig, build_runtime
from pipelines.runtime import Runtime

log = logging.getLogger("pipelines.runner")

BATCH = 10  # PutEvents' limit


@dataclass
class RunReport:
    """What a run did with its input: entries put, and the failed ones by line."""

    put: int = 0
    failed: list[tuple[int, str, str]] = field(default_factory=list)  # (line, code, message)


async def run_pipeline(
    config: PipelineConfig,
    *,
    events: Iterable[str] | None = None,
    stop: asyncio.Event | None = None,
    shutdown_timeout: float = 10.0,
    clock: Clock | None = None,
) -> RunReport:
    """Run ``config`` until ``stop`` is set, or until ``events`` (JSON lines, each
    a PutEvents entry) are all delivered. Raises ``ConfigInvalid`` before
    starting anything when the config has problems."""
    stop = stop or asyncio.Event()
    runtime = await build_runtime(config, clock=clock, drain_timeout=shutdown_timeout)
    report = RunReport()
    await runtime.start()
    rules = sum(len(bus.list_rules()) for bus in runtime.buses())
    log.info(
        "pipeline started: %d rules on %d buses, state %s",
        rules,
        len(runtime.buses()),
        config.state or "none (in memory)",
    )
    try:
        if events is None:
            await stop.wait()
        else:
            async with asyncio.TaskGroup() as group:
                feeding = group.create_task(_feed(runtime, events, report))
                waiting = group.create_task(stop.wait())
                await asyncio.wait([feeding, waiting], return_when=asyncio.FIRST_COMPLETED)
                feeding.cancel()
                waiting.cancel()
    finally:
        log.info("stopping: draining for up to %.0f s", shutdown_timeout)
        await runtime.stop(shutdown_timeout)
        log.info("stopped")
    return report


async def _feed(runtime: Runtime, lines: Iterable[str], report: RunReport) -> None:
    batch: list[tuple[int, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            report.failed.append((number, "InvalidJSON", exc.msg))
            continue
        batch.append((number, entry))
        if len(batch) == BATCH:
            await _put(runtime, batch, report)
            batch = []
    if batch:
        await _put(runtime, batch, report)
    await _delivered(runtime)


async def _put(runtime: Runtime, batch: list[tuple[int, Any]], report: RunReport) -> None:
    entries = [entry if isinstance(entry, dict) else {"Invalid": entry} for _, entry in batch]
    result = await runtime.put_events(entries)
    for (number, _), outcome in zip(batch, result["Entries"], strict=True):
        if "ErrorCode" in outcome:
            report.failed.append((number, outcome["ErrorCode"], outcome["ErrorMessage"]))
        else:
            report.put += 1


async def _delivered(runtime: Runtime) -> None:
    """Until nothing is queued, in flight or waiting for a retry."""
    while True:
        await runtime.wait_until_idle(timeout=None)
        if not len(runtime.deliverer.retries):
            return
        await asyncio.sleep(0.05)
