"""CloudWatch Logs semantics of the log store, on a real SQLite file and a
ManualClock: groups and streams, PutLogEvents' rules, FilterLogEvents,
metric filters, subscription filters, retention and queries."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pipelines.clock import ManualClock
from pipelines.errors import FilterPatternError, LogsError
from pipelines.metrics import MetricStore
from plugins.logs.store import (
    DAY_MS,
    EVENT_OVERHEAD,
    MAX_BATCH_BYTES,
    LogStore,
    MetricTransformation,
)

NOW = 1_700_000_000_000  # the ManualClock's start, in ms
HOUR = 3_600_000


class Sink:
    """Records what metric filters publish (the metric store's signature)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, namespace: str, name: str, dimensions: Any = None, **options: Any) -> None:
        self.calls.append({"namespace": namespace, "name": name, "dims": dimensions, **options})

    def values(self, name: str) -> list[float]:
        return [v for c in self.calls if c["name"] == name for v in c["values"]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
async def store(state_location: str, clock: ManualClock, sink: Sink) -> AsyncIterator[LogStore]:
    opened = await LogStore.open(state_location, clock, sink)
    await opened.create_log_group("app")
    await opened.create_log_stream("app", "web")
    yield opened
    await opened.close()


def events(*messages: str, start: int = NOW, step: int = 1) -> list[dict[str, Any]]:
    return [{"timestamp": start + i * step, "message": m} for i, m in enumerate(messages)]


async def messages(store: LogStore, group: str = "app", pattern: str = "", **options: Any) -> list[str]:  # fmt: skip
    found = await store.filter_log_events(group, pattern, **options)
    return [e["message"] for e in found["events"]]


# -- groups and streams ----------------------------------------------------------


async def test_groups_are_described_with_their_retention(store: LogStore) -> None:
    await store.create_log_group("audit/payments", retention_days=30)
    groups = await store.describe_log_groups()
    assert [g["logGroupName"] for g in groups] == ["app", "audit/payments"]
    assert "retentionInDays" not in groups[0]  # never expires
    assert groups[1]["retentionInDays"] == 30
    assert groups[1]["arn"].endswith(":log-group:audit/payments:*")
    assert [g["logGroupName"] for g in await store.describe_log_groups("aud")] == ["audit/payments"]
    await store.put_retention_policy("audit/payments", None)
    assert "retentionInDays" not in (await store.describe_log_groups("aud"))[0]


@pytest.mark.parametrize("days", [0, 2, 10, 366, 3654, True, "7"])
async def test_retention_must_be_one_of_cloudwatchs_values(store: LogStore, days: Any) -> None:
    with pytest.raises(LogsError, match=r"retentionInDays .* is not one of") as caught:
        await store.put_retention_policy("app", days)
    assert caught.value.code == "InvalidParameterException"


async def test_names_follow_cloudwatchs_rules(store: LogStore) -> None:
    for bad in ("", "a b", "x" * 513, "a:b"):
        with pytest.raises(LogsError, match="log group name"):
            await store.create_log_group(bad)
    for bad in ("", "a:b", "a*b", "x" * 513):
        with pytest.raises(LogsError, match="log stream name"):
            await store.create_log_stream("app", bad)
    await store.create_log_stream("app", "x" * 512)
    await store.create_log_stream("app", "2026/11/23/[$LATEST]abc")


async def test_duplicates_and_missing_resources_are_refused(store: LogStore) -> None:
    with pytest.raises(LogsError) as caught:
        await store.create_log_group("app")
    assert caught.value.code == "ResourceAlreadyExistsException"
    await store.create_log_group("app", exist_ok=True)
    with pytest.raises(LogsError) as caught:
        await store.create_log_stream("app", "web")
    assert caught.value.code == "ResourceAlreadyExistsException"
    with pytest.raises(LogsError, match="log group does not exist: nope") as caught:
        await store.put_log_events("nope", "web", events("x"))
    assert caught.value.code == "ResourceNotFoundException"
    with pytest.raises(LogsError, match="log stream does not exist: app/api"):
        await store.put_log_events("app", "api", events("x"))


async def test_a_stream_records_its_first_and_last_event(store: LogStore) -> None:
    await store.put_log_events("app", "web", events("a", "b", start=NOW - 5000, step=1000))
    (web,) = await store.describe_log_streams("app")
    assert web["firstEventTimestamp"] == NOW - 5000
    assert web["lastEventTimestamp"] == NOW - 4000
    assert web["lastIngestionTime"] == NOW
    assert web["storedBytes"] == 2


async def test_deleting_a_group_deletes_its_events(store: LogStore) -> None:
    await store.put_log_events("app", "web", events("a"))
    await store.delete_log_group("app")
    await store.create_log_group("app")
    assert await messages(store) == []
    assert await store.describe_log_streams("app") == []


# -- PutLogEvents ----------------------------------------------------------------


async def test_put_accepts_a_batch_in_order(store: LogStore) -> None:
    answer = await store.put_log_events("app", "web", events("one", "two", "three"))
    assert answer == {
        "acceptedCount": 3,
        "rejectedCounts": {"tooNew": 0, "tooOld": 0, "expired": 0, "invalid": 0},
    }
    assert await messages(store) == ["one", "two", "three"]


async def test_put_refuses_more_than_10000_events(store: LogStore) -> None:
    await store.put_log_events("app", "web", events(*["m"] * 10_000, step=0))
    with pytest.raises(LogsError, match="1 to 10000 log events, not 10001"):
        await store.put_log_events("app", "web", events(*["m"] * 10_001, step=0))
    with pytest.raises(LogsError, match="not 0"):
        await store.put_log_events("app", "web", [])


async def test_the_batch_size_counts_26_bytes_per_event(store: LogStore) -> None:
    # Four events whose UTF-8 messages and overhead make exactly 1,048,576 bytes.
    body = (MAX_BATCH_BYTES - 4 * EVENT_OVERHEAD) // 4
    exact = ["é" * (body // 2)] * 4  # two bytes per character
    assert sum(len(m.encode()) + EVENT_OVERHEAD for m in exact) == MAX_BATCH_BYTES
    answer = await store.put_log_events("app", "web", events(*exact))
    assert answer["acceptedCount"] == 4
    with pytest.raises(LogsError, match="Upload too large: 1048577 bytes"):
        await store.put_log_events("app", "web", events(*exact[:3], exact[3] + "x"))


async def test_put_refuses_a_batch_out_of_order_or_over_24_hours(store: LogStore) -> None:
    with pytest.raises(LogsError, match=r"chronological order \(logEvents\[2\] is earlier"):
        await store.put_log_events(
            "app", "web", [*events("a", "b", start=NOW), *events("c", start=NOW - 1)]
        )
    spread = events("a", "b", start=NOW - 24 * HOUR - 1, step=24 * HOUR + 1)
    with pytest.raises(LogsError, match="cannot span more than 24 hours"):
        await store.put_log_events("app", "web", spread)
    assert await messages(store) == []  # nothing from the refused batches
    exactly_a_day = events("a", "b", start=NOW - 24 * HOUR, step=24 * HOUR)
    await store.put_log_events("app", "web", exactly_a_day)
    assert await messages(store) == ["a", "b"]


async def test_events_too_old_or_too_new_are_rejected_alone(store: LogStore) -> None:
    batch = [
        {"timestamp": NOW - 14 * DAY_MS - 1, "message": "too old"},
        {"timestamp": NOW - 14 * DAY_MS, "message": "fourteen days"},
        {"timestamp": NOW + 2 * HOUR, "message": "two hours ahead"},
        {"timestamp": NOW + 2 * HOUR + 1, "message": "too new"},
    ]
    with pytest.raises(LogsError, match="24 hours"):
        await store.put_log_events("app", "web", batch)  # the accepted ones span 14 days
    batch[1]["timestamp"] = NOW - 20 * HOUR
    answer = await store.put_log_events("app", "web", batch)
    assert answer["acceptedCount"] == 2
    assert answer["rejectedCounts"] == {"tooNew": 1, "tooOld": 1, "expired": 0, "invalid": 0}
    assert answer["rejectedLogEventsInfo"] == {
        "tooOldLogEventEndIndex": 1,
        "tooNewLogEventStartIndex": 3,
    }
    assert await messages(store) == ["fourteen days", "two hours ahead"]


async def test_events_older_than_the_retention_are_expired(store: LogStore) -> None:
    await store.put_retention_policy("app", 1)
    batch = events("expired", "kept", start=NOW - DAY_MS - 1, step=2)
    answer = await store.put_log_events("app", "web", batch)
    assert answer["rejectedCounts"]["expired"] == 1
    assert answer["rejectedLogEventsInfo"] == {"expiredLogEventEndIndex": 1}
    assert await messages(store) == ["kept"]


async def test_a_malformed_entry_fails_alone_with_its_index(store: LogStore) -> None:
    batch: list[Any] = [
        {"timestamp": NOW, "message": "good"},
        {"timestamp": NOW, "message": ""},
        {"message": "no time"},
        "not an object",
        {"timestamp": NOW + 1, "message": "also good"},
    ]
    answer = await store.put_log_events("app", "web", batch)
    assert answer["acceptedCount"] == 2
    assert answer["rejectedCounts"]["invalid"] == 3
    assert [e["index"] for e in answer["errors"]] == [1, 2, 3]
    assert "logEvents[1]: message must be a non-empty string" in answer["errors"][0]["message"]
    assert "logEvents[2]: timestamp must be milliseconds" in answer["errors"][1]["message"]


async def test_create_stream_makes_the_stream_on_demand(store: LogStore) -> None:
    await store.put_log_events("app", "new", events("x"), create_stream=True)
    assert [s["logStreamName"] for s in await store.describe_log_streams("app")] == ["new", "web"]


async def test_events_survive_reopening(state_location: str, clock: ManualClock) -> None:
    first = await LogStore.open(state_location, clock)
    await first.create_log_group("app")
    await first.put_log_events("app", "web", events("kept"), create_stream=True)
    await first.close()
    async with LogStore.existing(state_location) as again:
        assert await messages(again) == ["kept"]


# -- FilterLogEvents -------------------------------------------------------------


async def test_filter_by_pattern_time_range_and_stream(store: LogStore) -> None:
    await store.create_log_stream("app", "api")
    await store.put_log_events("app", "web", events("ERROR a", "INFO b", "ERROR c", step=1000))
    await store.put_log_events("app", "api", events("ERROR d", start=NOW + 500))
    assert await messages(store, pattern="ERROR") == ["ERROR a", "ERROR d", "ERROR c"]
    # Both ends are inclusive, as FilterLogEvents' are.
    assert await messages(store, start_time=NOW + 500, end_time=NOW + 2000) == [
        "ERROR d",
        "INFO b",
        "ERROR c",
    ]
    assert await messages(store, pattern="ERROR", stream_names=["api"]) == ["ERROR d"]
    assert await messages(store, stream_prefix="w", end_time=NOW) == ["ERROR a"]
    found = await store.filter_log_events("app", "ERROR", stream_names=["api"])
    (event,) = found["events"]
    assert event["logStreamName"] == "api"
    assert event["timestamp"] == NOW + 500
    assert event["ingestionTime"] == NOW


async def test_filter_pages_with_next_token(store: LogStore) -> None:
    await store.put_log_events("app", "web", events(*[f"m{i}" for i in range(2500)], step=0))
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        page = await store.filter_log_events("app", "", limit=1000, next_token=token)
        seen += [e["message"] for e in page["events"]]
        pages += 1
        token = page.get("nextToken")
        if token is None:
            break
    assert seen == [f"m{i}" for i in range(2500)]
    assert pages == 3
    # A selective pattern looks past many pages of non-matching events.
    assert await messages(store, pattern='"m2499"') == ["m2499"]


async def test_filter_refuses_a_bad_pattern_and_a_bad_token(store: LogStore) -> None:
    with pytest.raises(FilterPatternError) as caught:
        await store.filter_log_events("app", "{ $.a = ")
    assert caught.value.code == "InvalidParameterException"
    with pytest.raises(LogsError, match="nextToken"):
        await store.filter_log_events("app", next_token="garbage")


async def test_reads_skip_events_past_retention_and_expire_deletes_them(
    store: LogStore, clock: ManualClock
) -> None:
    await store.put_retention_policy("app", 1)
    await store.put_log_events("app", "web", events("old", start=NOW - 23 * HOUR))
    await store.put_log_events("app", "web", events("new"))
    clock.jump(2 * 3600)
    assert await messages(store) == ["new"]
    assert await store.expire() == 1
    await store.put_retention_policy("app", None)
    assert await messages(store) == ["new"]  # "old" is gone, not hidden


# -- metric filters --------------------------------------------------------------


async def test_a_metric_filter_counts_matching_events(store: LogStore, sink: Sink) -> None:
    count = MetricTransformation("Errors", "App", "1", unit="Count")
    await store.put_metric_filter("app", "errors", '{ $.level = "ERROR" }', count)
    batch = [
        json.dumps({"level": "ERROR", "latency": 120}),
        json.dumps({"level": "INFO", "latency": 5}),
        "ERROR but not JSON",
        json.dumps({"level": "ERROR", "latency": 80}),
    ]
    await store.put_log_events("app", "web", events(*batch))
    assert sink.values("Errors") == [1.0, 1.0]
    (call,) = sink.calls
    assert call["namespace"] == "App"
    assert call["unit"] == "Count"
    assert call["timestamp"] == (NOW // 60_000) * 60.0


async def test_metric_values_and_dimensions_come_from_fields(store: LogStore, sink: Sink) -> None:
    latency = MetricTransformation(
        "Latency", "App", "$.latency", dimensions={"Service": "$.service"}, unit="Milliseconds"
    )
    await store.put_metric_filter("app", "latency", "{ $.latency > 0 }", latency)
    batch = [
        json.dumps({"service": "cart", "latency": 120}),
        json.dumps({"service": "cart", "latency": 80}),
        json.dumps({"service": "search", "latency": 7.5}),
        json.dumps({"latency": 3}),  # no dimension value: nothing published
    ]
    await store.put_log_events("app", "web", events(*batch))
    published = {c["dims"]["Service"]: c["values"] for c in sink.calls}
    assert published == {"cart": [120.0, 80.0], "search": [7.5]}


async def test_default_value_is_published_for_events_that_do_not_match(
    store: LogStore, sink: Sink
) -> None:
    errors = MetricTransformation("Errors", "App", "1", default_value=0)
    await store.put_metric_filter("app", "errors", "ERROR", errors)
    await store.put_log_events("app", "web", events("ERROR x", "fine", "fine"))
    assert sorted(sink.values("Errors")) == [0.0, 0.0, 1.0]


async def test_space_delimited_metric_values(store: LogStore, sink: Sink) -> None:
    size = MetricTransformation("Bytes", "Web", "$bytes")
    await store.put_metric_filter("app", "bytes", "[ip, user, status = 4*, bytes]", size)
    await store.put_log_events(
        "app", "web", events("1.2.3.4 - 404 512", "1.2.3.4 - 200 9000", "1.2.3.4 - 403 10")
    )
    assert sink.values("Bytes") == [512.0, 10.0]


async def test_metric_filter_checks(store: LogStore) -> None:
    many = {"A": "$.a", "B": "$.b", "C": "$.c", "D": "$.d"}
    with pytest.raises(LogsError, match="at most 3 dimensions"):
        await store.put_metric_filter(
            "app", "f", "{ $.a = 1 }", MetricTransformation("M", "N", "1", dimensions=many)
        )
    with pytest.raises(LogsError, match="both dimensions and a defaultValue"):
        await store.put_metric_filter(
            "app",
            "f",
            "{ $.a = 1 }",
            MetricTransformation("M", "N", "1", default_value=0, dimensions={"A": "$.a"}),
        )
    with pytest.raises(LogsError):
        await store.put_metric_filter("app", "f", "ERROR", MetricTransformation("M", "N", "$.a"))
    with pytest.raises(LogsError, match="unit 'Parsecs' is not one of"):
        await store.put_metric_filter(
            "app", "f", "ERROR", MetricTransformation("M", "N", "1", unit="Parsecs")
        )
    with pytest.raises(LogsError):
        await store.put_metric_filter("app", "f", "ERROR", MetricTransformation("M", "N", "nan"))
    await store.put_metric_filter("app", "f", "ERROR", MetricTransformation("M", "N", "2"))
    (described,) = await store.describe_metric_filters("app")
    assert described["filterPattern"] == "ERROR"
    assert described["metricTransformations"] == [
        {"metricName": "M", "metricNamespace": "N", "metricValue": "2", "unit": "None"}
    ]
    assert (await store.describe_log_groups())[0]["metricFilterCount"] == 1
    await store.delete_metric_filter("app", "f")
    assert await store.describe_metric_filters("app") == []


# SQLite only until MetricStore runs on PostgreSQL (its port is under way
# apart): then drop this line and the test runs on both.
@pytest.mark.parametrize("state_location", ["sqlite"], indirect=True)
async def test_metric_filters_feed_the_metric_store(
    state_location: str, clock: ManualClock
) -> None:
    metrics = await MetricStore.open(state_location, clock)
    store = await LogStore.open(state_location, clock, metrics.put_metric_data)
    try:
        await store.create_log_group("app")
        errors = MetricTransformation("Errors", "App", "1", unit="Count")
        await store.put_metric_filter("app", "errors", '{ $.level = "ERROR" }', errors)
        lines = [json.dumps({"level": level}) for level in ["ERROR", "INFO", "ERROR", "ERROR"]]
        await store.put_log_events("app", "web", events(*lines), create_stream=True)
        minute = (NOW // 60_000) * 60
        answer = await metrics.get_metric_statistics(
            "App", "Errors", start=minute, end=minute + 60, period=60,
            statistics=["Sum", "SampleCount"],
        )  # fmt: skip
        (point,) = answer["Datapoints"]
        assert point["Sum"] == 3.0
        assert point["Unit"] == "Count"
    finally:
        await store.close()
        await metrics.close()


# -- subscription filters --------------------------------------------------------


async def test_a_subscription_forwards_matches_after_its_cursor(store: LogStore) -> None:
    await store.put_log_events("app", "web", events("ERROR before"))
    await store.put_subscription_filter("app", "errors", "ERROR", "sink")
    await store.create_log_stream("app", "api")
    await store.put_log_events("app", "web", events("ERROR one", "INFO two", "ERROR three"))
    await store.put_log_events("app", "api", events("ERROR four"))
    batch = await store.read_subscription("app", "errors")
    assert batch.scanned == 4
    web, api = batch.payloads
    assert web == {
        "messageType": "DATA_MESSAGE",
        "owner": store.account,
        "logGroup": "app",
        "logStream": "web",
        "subscriptionFilters": ["errors"],
        "logEvents": [
            {"id": web["logEvents"][0]["id"], "timestamp": NOW, "message": "ERROR one"},
            {"id": web["logEvents"][1]["id"], "timestamp": NOW + 2, "message": "ERROR three"},
        ],
    }
    assert [e["message"] for e in api["logEvents"]] == ["ERROR four"]
    # Not advanced: the same batch again (at least once).
    assert (await store.read_subscription("app", "errors")).payloads == batch.payloads
    await store.advance_subscription("app", "errors", batch.cursor)
    again = await store.read_subscription("app", "errors")
    assert again.payloads == [] and again.scanned == 0


async def test_a_subscription_reads_in_bounded_batches(store: LogStore) -> None:
    await store.put_subscription_filter("app", "all", "", "sink")
    await store.put_log_events("app", "web", events(*[f"m{i}" for i in range(25)]))
    seen = []
    while (batch := await store.read_subscription("app", "all", limit=10)).scanned:
        seen += [e["message"] for p in batch.payloads for e in p["logEvents"]]
        await store.advance_subscription("app", "all", batch.cursor)
    assert seen == [f"m{i}" for i in range(25)]


async def test_event_ids_are_never_reused_after_a_delete(store: LogStore) -> None:
    await store.put_subscription_filter("app", "all", "", "sink")
    await store.create_log_group("other")
    await store.put_log_events("other", "x", events("gone"), create_stream=True)
    batch = await store.read_subscription("app", "all")
    await store.advance_subscription("app", "all", batch.cursor)  # past "gone"'s id
    await store.delete_log_group("other")
    await store.put_log_events("app", "web", events("new"))
    payloads = (await store.read_subscription("app", "all")).payloads
    assert [e["message"] for p in payloads for e in p["logEvents"]] == ["new"]


async def test_at_most_two_subscription_filters_per_group(store: LogStore) -> None:
    await store.put_subscription_filter("app", "a", "", "q1")
    await store.put_subscription_filter("app", "b", "ERROR", "q2")
    await store.put_subscription_filter("app", "b", "WARN", "q2")  # replacing is fine
    with pytest.raises(LogsError, match="has 2 subscription filters already") as caught:
        await store.put_subscription_filter("app", "c", "", "q3")
    assert caught.value.code == "LimitExceededException"
    described = await store.describe_subscription_filters("app")
    assert [(d["filterName"], d["filterPattern"]) for d in described] == [
        ("a", ""),
        ("b", "WARN"),
    ]
    await store.delete_subscription_filter("app", "a")
    await store.put_subscription_filter("app", "c", "", "q3")


# -- queries ---------------------------------------------------------------------


async def test_query_counts_per_minute_within_the_time_range(store: LogStore) -> None:
    minute = (NOW // 60_000) * 60_000
    lines = events(*["x"] * 6, start=minute - 2 * 60_000, step=30_000)  # two per minute
    await store.put_log_events("app", "web", lines)
    result = await store.query("app", "stats count() by bin(1m)")
    assert sorted(int(r["count()"]) for r in result.rows) == [2, 2, 2]
    ranged = await store.query(
        "app", "stats count() as n", start_time=minute - 60_000, end_time=minute - 1
    )
    assert [int(r["n"]) for r in ranged.rows] == [2]


async def test_query_reads_json_fields_and_streams(store: LogStore) -> None:
    await store.create_log_stream("app", "api")
    await store.put_log_events("app", "web", events(json.dumps({"level": "ERROR", "ms": 5})))
    await store.put_log_events("app", "api", events(json.dumps({"level": "INFO", "ms": 7})))
    result = await store.query("app", 'filter level = "INFO" | fields @logStream, ms, @message')
    assert [(r["@logStream"], str(r["ms"])) for r in result.rows] == [("api", "7")]


# Queries whose commands before the first limit only order by time: the store
# reads just the events they keep (Query.head).
HEAD_QUERIES = [
    "sort @timestamp desc | limit 5",
    "sort @timestamp asc | limit 5",
    "sort @timestamp | limit 7",
    "limit 4",
    "fields @logStream | limit 4 | sort @message",
    "fields @timestamp, @logStream, @message | sort @timestamp desc | limit 6",
    "display @message | sort @timestamp desc | limit 5 | sort @message asc",
    "sort @timestamp desc | limit 100",
]


async def tied_events(store: LogStore) -> None:
    """Three events per millisecond over two streams: ties in time everywhere."""
    await store.create_log_stream("app", "api")
    for stream, first in (("web", 0), ("api", 100), ("web", 200)):
        lines = [{"timestamp": NOW + i // 3, "message": f"m{first + i}"} for i in range(30)]
        await store.put_log_events("app", stream, lines)


@pytest.mark.parametrize("text", HEAD_QUERIES)
@pytest.mark.parametrize("window", [{}, {"start_time": NOW + 2, "end_time": NOW + 6}])
async def test_a_query_kept_by_time_reads_only_its_events_with_the_same_result(
    store: LogStore, text: str, window: dict[str, int]
) -> None:
    await tied_events(store)
    # The oracle: the same query behind a filter that keeps every event, which
    # makes the store read all of them and leave the work to the query.
    everything = await store.query("app", f"filter ispresent(@timestamp) | {text}", **window)
    kept = await store.query("app", text, **window)
    assert kept.rows and kept.rows == everything.rows
    assert kept.fields == everything.fields
    assert kept.records_scanned == kept.records_matched == everything.records_scanned
    assert kept.records_scanned == (90 if not window else 45)


async def test_a_query_kept_by_time_of_an_empty_range_finds_nothing(store: LogStore) -> None:
    result = await store.query("app", "sort @timestamp desc | limit 20")
    assert (result.rows, result.records_scanned, result.records_matched) == ([], 0, 0)


# SQLite only: the plan read is SQLite's own (EXPLAIN QUERY PLAN).
@pytest.mark.parametrize("state_location", ["sqlite"], indirect=True)
async def test_a_query_kept_by_time_walks_the_time_index(
    store: LogStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await tied_events(store)
    statements: list[tuple[str, Any]] = []
    rows = store.rows

    async def recorded(sql: str, parameters: Any = ()) -> list[Any]:
        statements.append((sql, parameters))
        return await rows(sql, parameters)

    monkeypatch.setattr(store, "rows", recorded)
    for text in ("sort @timestamp desc | limit 20", "limit 20", "sort @timestamp asc | limit 3"):
        statements.clear()
        await store.query("app", text, start_time=NOW + 1)
        [(sql, parameters)] = [s for s in statements if "log_events" in s[0]]
        plan = await rows(f"EXPLAIN QUERY PLAN {sql}", parameters)
        details = [detail for _, _, _, detail in plan]
        # The events kept: found in the time index; read by row id; no scan.
        assert any("INDEX log_events_by_time (grp=? AND ts>?)" in d for d in details), details
        assert "SEARCH e USING INTEGER PRIMARY KEY (rowid=?)" in details, details
        assert not any(d.startswith("SCAN") for d in details), details
        # A full sort only of the rows read (the outer query), never of the range.
        assert all(parent == 0 for _, parent, _, d in plan if d == "USE TEMP B-TREE FOR ORDER BY")


# -- several runners on one database ---------------------------------------------


async def test_runners_putting_at_once_write_one_group_that_every_read_sees_whole(
    state_location: str, clock: ManualClock
) -> None:
    """Two runners (two stores on one database) put into one group at once,
    a stream of its own each and one they share, while a subscription is read
    and advanced through them: every event is in the group once, every query
    through either sees them all, and the subscription forwards each once.
    (That a group's ids follow its commits, so that no cursor skips an event
    committed late, rests on the group's row lock: this test does not force
    the interleaving that would show its absence.)"""
    runners = [await LogStore.open(state_location, clock) for _ in range(2)]
    try:
        await asyncio.gather(*(r.create_log_group("app", exist_ok=True) for r in runners))
        await runners[0].put_subscription_filter("app", "all", "", "sink")
        forwarded: list[str] = []
        done = asyncio.Event()

        async def put(n: int, runner: LogStore) -> None:
            for request in range(20):
                for stream in (f"own{n}", "shared"):
                    lines = [f"{n}-{stream}-{request}-{k} ERROR" for k in range(10)]
                    answer = await runner.put_log_events(
                        "app", stream, events(*lines), create_stream=True
                    )
                    assert answer["acceptedCount"] == 10

        async def follow() -> None:
            turn = 0
            while True:
                reader = runners[turn % 2]  # the cursor moves through either runner
                batch = await reader.read_subscription("app", "all", limit=7)
                forwarded.extend(e["message"] for p in batch.payloads for e in p["logEvents"])
                await reader.advance_subscription("app", "all", batch.cursor)
                turn += 1
                if done.is_set() and not batch.scanned:
                    return
                await asyncio.sleep(0)

        following = asyncio.ensure_future(follow())
        await asyncio.gather(*(put(n, runner) for n, runner in enumerate(runners)))
        done.set()
        await asyncio.wait_for(following, 30)

        everything = sorted(
            f"{n}-{stream}-{request}-{k} ERROR"
            for n in range(2)
            for stream in (f"own{n}", "shared")
            for request in range(20)
            for k in range(10)
        )
        assert sorted(forwarded) == everything
        for reader in runners:
            found = await reader.filter_log_events("app", "ERROR")
            assert sorted(e["message"] for e in found["events"]) == everything
            counted = await reader.query("app", "stats count() as n by @logStream")
            assert sorted((row["@logStream"], row["n"]) for row in counted.rows) == [
                ("own0", 200), ("own1", 200), ("shared", 400)
            ]  # fmt: skip
            streams = await reader.describe_log_streams("app")
            assert [s["logStreamName"] for s in streams] == ["own0", "own1", "shared"]
    finally:
        for runner in runners:
            await runner.close()


async def test_a_message_with_a_nul_reads_back_as_it_was_put(store: LogStore) -> None:
    # PostgreSQL's text holds no NUL: the store escapes it there (and its escape).
    odd = ["a\x00b", "\ue000", "\ue000\ue002", "x\ue000\x00\ue001"]
    await store.put_log_events("app", "web", events(*odd))
    assert await messages(store) == odd
    read = await store.get_log_events("app", "web", start_from_head=True)
    assert [e["message"] for e in read["events"]] == odd
    found = await store.query("app", "fields @message | sort @timestamp asc")
    assert [row["@message"] for row in found.rows] == odd
