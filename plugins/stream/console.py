"""The streams' pages of the web console (the ``register_console`` hook).

Every stream of the state database with its shards; a stream's shards and
its records of the last minutes (each open shard read from a time, as
GetShardIterator AT_TIMESTAMP reads), without a consumer's checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from pipelines.console.html import when
from pipelines.console.sections import Detail, Field, Listing, SectionError, SectionHost
from pipelines.errors import StreamError
from plugins.stream.store import StreamStore

SHOWN = 100


class StreamSection:
    name = "streams"
    title = "Streams"

    async def _store(self, host: SectionHost) -> StreamStore:
        return await host.store(StreamStore, where="the console's streams")

    async def listing(self, host: SectionHost) -> Listing:
        store = await self._store(host)
        rows = []
        names = await store.list_streams()
        for name in names:
            described = await store.describe_stream(name)
            rows.append(
                {
                    "Stream": name,
                    "Open shards": described["OpenShardCount"],
                    "Shards listed": len(described["Shards"]),
                    "Retention (h)": described["RetentionPeriodHours"],
                    "Mode": described["StreamModeDetails"]["StreamMode"],
                }
            )
        columns = list(rows[0]) if rows else ["Stream"]
        return Listing(columns, rows, keys=names, empty="no streams in the state database")

    async def detail(self, host: SectionHost, key: str, params: Mapping[str, str]) -> Detail:
        store = await self._store(host)
        since = params.get("minutes") or "15"
        try:
            minutes = float(since)
        except ValueError:
            raise SectionError(f"minutes: {since!r} is not a number") from None
        try:
            described = await store.describe_stream(key)
            records = await _recent(store, key, described["Shards"], time.time() - minutes * 60)
        except StreamError as error:
            raise SectionError(str(error)) from None
        shards = [
            {
                "Shard": shard["ShardId"],
                "Hash keys": f"{shard['HashKeyRange']['StartingHashKey']}"
                f"–{shard['HashKeyRange']['EndingHashKey']}",
                "Open": "EndingSequenceNumber" not in shard["SequenceNumberRange"],
                "Parent": shard.get("ParentShardId", ""),
            }
            for shard in described["Shards"]
        ]
        return Detail(
            title=f"Stream {key}",
            facts={
                "Open shards": described["OpenShardCount"],
                "Retention (h)": described["RetentionPeriodHours"],
                "Largest record (bytes)": described["MaxRecordSizeInBytes"],
            },
            search=[Field("minutes", "Records of the last minutes", since)],
            tables=[
                ("Shards", Listing(["Shard", "Hash keys", "Open", "Parent"], shards)),
                (
                    f"Newest records (up to {SHOWN})",
                    Listing(
                        ["Arrived", "Shard", "Partition key", "Sequence number", "Data"],
                        records,
                        empty="no records in that time",
                    ),
                ),
            ],
        )

    async def act(self, host: SectionHost, key: str, action: str, params: Mapping[str, str]) -> str:
        raise SectionError(f"streams have no action {action!r}")


async def _recent(
    store: StreamStore, name: str, shards: list[dict[str, Any]], since: float
) -> list[dict[str, Any]]:
    """The newest ``SHOWN`` records since ``since``, over every shard, newest first."""
    found: list[dict[str, Any]] = []
    for shard in shards:
        iterator: str | None = await store.get_shard_iterator(
            name, shard["ShardId"], "AT_TIMESTAMP", timestamp=since
        )
        # Read to the end of the shard, keeping its newest: a page at a time.
        kept: list[dict[str, Any]] = []
        while iterator is not None:
            page = await store.get_records(iterator)
            kept = (kept + page["Records"])[-SHOWN:]
            if not page["Records"] or not page["MillisBehindLatest"]:
                break
            iterator = page["NextShardIterator"]
        for record in kept:
            found.append(
                {
                    "Arrived": when(record["ApproximateArrivalTimestamp"]),
                    "at": record["ApproximateArrivalTimestamp"],
                    "Shard": shard["ShardId"],
                    "Partition key": record["PartitionKey"],
                    "Sequence number": record["SequenceNumber"],
                    "Data": bytes(record["Data"]).decode("utf-8", errors="replace"),
                }
            )
    found.sort(key=lambda row: row["at"], reverse=True)
    return found[:SHOWN]
