"""The log groups' pages of the web console (the ``register_console`` hook).

Every log group of the state database; a group's newest events, filtered
with a CloudWatch filter pattern (``filterpattern``, as FilterLogEvents
and ``pipelines logs tail --filter`` read it) over the last minutes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from pipelines.console.html import when
from pipelines.console.sections import Detail, Field, Listing, SectionError, SectionHost
from pipelines.errors import LogsError
from plugins.logs.store import MAX_FILTER_EVENTS, LogStore

SHOWN = 100


class LogSection:
    name = "logs"
    title = "Log groups"

    async def _store(self, host: SectionHost) -> LogStore:
        return await host.store(LogStore, where="the console's log groups")

    async def listing(self, host: SectionHost) -> Listing:
        store = await self._store(host)
        groups = await store.describe_log_groups()
        rows = [
            {
                "Log group": group["logGroupName"],
                "Stored bytes": group["storedBytes"],
                "Retention (days)": group.get("retentionInDays", "forever"),
                "Metric filters": group["metricFilterCount"],
            }
            for group in groups
        ]
        columns = list(rows[0]) if rows else ["Log group"]
        keys = [group["logGroupName"] for group in groups]
        return Listing(columns, rows, keys=keys, empty="no log groups in the state database")

    async def detail(self, host: SectionHost, key: str, params: Mapping[str, str]) -> Detail:
        store = await self._store(host)
        pattern = params.get("filter", "")
        since = params.get("minutes") or "60"
        try:
            minutes = float(since)
        except ValueError:
            raise SectionError(f"minutes: {since!r} is not a number") from None
        start = int((time.time() - minutes * 60) * 1000)
        try:
            found = await store.filter_log_events(
                key, pattern, start_time=start, limit=MAX_FILTER_EVENTS
            )
        except LogsError as error:
            raise SectionError(f"{error}") from None
        events = found["events"][-SHOWN:]
        rows = [
            {
                "Time (UTC)": when(event["timestamp"] / 1000),
                "Stream": event["logStreamName"],
                "Message": event["message"],
            }
            for event in reversed(events)
        ]
        return Detail(
            title=f"Log group {key}",
            facts={"Events found": len(found["events"]), "Shown": len(rows)},
            search=[
                Field("filter", "Filter pattern", pattern),
                Field("minutes", "Last minutes", since),
            ],
            tables=[
                (
                    f"Newest events (up to {SHOWN}), newest first",
                    Listing(["Time (UTC)", "Stream", "Message"], rows, empty="no events match"),
                )
            ],
        )

    async def act(self, host: SectionHost, key: str, action: str, params: Mapping[str, str]) -> str:
        raise SectionError(f"log groups have no action {action!r}")
