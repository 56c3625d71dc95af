"""Logs Insights query subset (plugins/logs/insights.py): parsing, semantics, errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipelines.errors import QueryError
from plugins.logs.insights import QueryResult, discover, format_time, parse_query

T0 = 1_700_000_000_000  # 2023-11-14 22:13:20.000 UTC
MINUTE = 60_000


def event(
    ts: int, message: Any = "", stream: str = "s1", ingested: int | None = None
) -> dict[str, Any]:
    if not isinstance(message, str):
        message = json.dumps(message)
    return {
        "@timestamp": ts,
        "@logStream": stream,
        "@message": message,
        "@ingestionTime": ts + 1000 if ingested is None else ingested,
    }


def run(text: str, events: list[dict[str, Any]], log: str | None = None) -> QueryResult:
    """Run like the store does: only the columns the query asks for, ascending time."""
    query = parse_query(text)
    ordered = sorted(events, key=lambda e: e["@timestamp"])
    rows = [tuple(e[c] for c in query.columns) for e in ordered]
    return query.run(rows, log=log)


def values(result: QueryResult, name: str) -> list[Any]:
    return [row.get(name) for row in result.rows]


def error(text: str) -> QueryError:
    with pytest.raises(QueryError) as info:
        parse_query(text)
    return info.value


# -- columns the store must fetch


@pytest.mark.parametrize(
    ("text", "columns"),
    [
        ("stats count() by bin(1m)", ("@timestamp",)),
        ("stats count(*)", ()),
        ("filter @logStream = 'a' | stats count() by @logStream", ("@logStream",)),
        ("fields @timestamp, @message", ("@timestamp", "@message")),
        ("filter @logStream = 'a'", ("@timestamp", "@logStream", "@message")),
        ("stats max(@ingestionTime) by bin(1h)", ("@timestamp", "@ingestionTime")),
        ("stats avg(latency)", ("@message",)),
        ('parse @message "a=*" as a | stats count() by a', ("@message",)),
        ("fields @timestamp as t | stats count() by t", ("@timestamp",)),
    ],
)
def test_columns_are_minimal(text: str, columns: tuple[str, ...]) -> None:
    assert parse_query(text).columns == columns


def test_query_keeps_its_text() -> None:
    assert parse_query("stats count()").text == "stats count()"


# -- system fields, display and defaults


def test_timestamps_display_as_aws_shows_them() -> None:
    assert format_time(T0) == "2023-11-14 22:13:20.000"
    assert format_time(T0 + 7) == "2023-11-14 22:13:20.007"
    result = run(
        "fields @timestamp, @ingestionTime, @logStream", [event(T0 + 123, ingested=T0 + 2000)]
    )
    assert result.rows == [
        {
            "@timestamp": "2023-11-14 22:13:20.123",
            "@ingestionTime": "2023-11-14 22:13:22.000",
            "@logStream": "s1",
        }
    ]


def test_without_fields_rows_show_timestamp_and_message_newest_first() -> None:
    result = run("filter @logStream = 's1'", [event(T0, "old"), event(T0 + 1, "new")])
    assert result.fields == ["@timestamp", "@message"]
    assert values(result, "@message") == ["new", "old"]


def test_default_limit_is_10000() -> None:
    events = [event(T0 + i, str(i)) for i in range(10_001)]
    result = run("fields @message", events)
    assert len(result.rows) == 10_000
    assert result.rows[0]["@message"] == "10000"  # newest first
    assert result.records_matched == 10_001
    assert result.records_scanned == 10_001


def test_limit_without_sort_keeps_the_newest() -> None:
    events = [event(T0 + i, str(i)) for i in range(5)]
    assert values(run("fields @message | limit 2", events), "@message") == ["4", "3"]


def test_log_field_comes_from_run() -> None:
    result = run("fields @logStream, @log", [event(T0)], log="123456789012:app")
    assert result.rows == [{"@logStream": "s1", "@log": "123456789012:app"}]
    result = run("fields level, @log", [event(T0, {"level": "x"})], log="1:g")
    assert result.rows == [{"level": "x", "@log": "1:g"}]


def test_comments_newlines_and_backticks() -> None:
    text = """
        # find the errors
        fields `detail-type` as kind   # the type
        | filter `detail-type` = "Order Placed"
    """
    events = [event(T0, {"detail-type": "Order Placed"}), event(T0 + 1, {"detail-type": "Other"})]
    assert run(text, events).rows == [{"kind": "Order Placed"}]


# -- fields


def test_fields_aliases_and_arithmetic() -> None:
    events = [event(T0, {"a": 6, "b": "4", "name": "Bob"})]
    result = run(
        "fields a + b as sum, a * b - 1 as prod, a / b, 2 ^ 3 as p, 10 % 3 as m, toupper(name) as n",
        events,
    )
    assert result.fields == ["sum", "prod", "a / b", "p", "m", "n"]
    assert result.rows == [{"sum": 10, "prod": 23, "a / b": 1.5, "p": 8, "m": 1, "n": "BOB"}]


def test_arithmetic_on_missing_or_text_is_missing() -> None:
    result = run("fields a + 1 as x, b / 0 as y, a", [event(T0, {"a": "text", "b": 1})])
    assert result.rows == [{"a": "text"}]


def test_display_picks_the_final_columns() -> None:
    result = run("fields a, b | display b", [event(T0, {"a": 1, "b": 2})])
    assert result.fields == ["b"]
    assert result.rows == [{"b": 2}]


def test_scalar_functions() -> None:
    events = [event(T0, {"s": "  Hi ", "n": -2.5, "e": ""})]
    text = (
        "fields strlen(s) as l, trim(s) as t, tolower(s) as lo, abs(n) as a, ceil(n) as c,"
        " floor(n) as f, ispresent(zz) as p, isempty(e) as ie, isblank(s) as ib,"
        " concat(t, '!') as cc, coalesce(zz, n) as co"
    )
    assert run(text, events).rows == [
        {
            "l": 5, "t": "Hi", "lo": "  hi ", "a": 2.5, "c": -2, "f": -3, "p": "false",
            "ie": "true", "ib": "false", "cc": "Hi!", "co": -2.5,
        }
    ]  # fmt: skip


# -- filter


FILTER_EVENTS = [
    event(
        T0 + 0,
        {"range": 5000, "accountId": "123456789012", "level": "ERROR", "msg": "Exception: boom"},
    ),
    event(T0 + 1, {"range": "2500", "accountId": "123456789012", "level": "INFO", "msg": "ok"}),
    event(T0 + 2, {"range": 4000, "accountId": "999", "level": "WARN", "msg": "exception later"}),
    event(T0 + 3, {"level": "INFO"}),
]


def ids(text: str) -> list[int]:
    """Which FILTER_EVENTS a filter keeps (by index, oldest first)."""
    result = run(f"{text} | fields @timestamp | sort @timestamp asc", FILTER_EVENTS)
    return [FILTER_EVENTS_BY_TIME[row["@timestamp"]] for row in result.rows]


FILTER_EVENTS_BY_TIME = {format_time(e["@timestamp"]): i for i, e in enumerate(FILTER_EVENTS)}


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        # AWS's filter examples.
        ("filter (range>3000)", [0, 2]),
        ("filter (range>3000 and accountId=123456789012)", [0]),
        ("filter range > 2000", [0, 1, 2]),  # "2500" compares as a number
        ("filter range <= 2500", [1]),
        ("filter range >= 4000 and range < 5000", [2]),
        ("filter range = 5000 or level = 'WARN'", [0, 2]),
        ("filter level != 'INFO'", [0, 2]),
        ("filter not level = 'INFO'", [0, 2]),
        ("filter not (level = 'INFO' or range > 4500)", [2]),
        ("filter level = 'INFO' and (range < 3000 or range > 10000)", [1]),
        ("filter level = 'INFO' and range < 3000 or range > 4500", [0, 1]),  # and binds tighter
        ("filter msg like /Exception/", [0]),
        ("filter msg like /(?i)exception/", [0, 2]),
        ("filter msg like 'later'", [2]),
        ("filter msg not like /Exception/", [1, 2, 3]),  # negates: missing msg passes
        ("filter msg =~ /^exc/", [2]),
        ("filter level in ['ERROR', 'WARN']", [0, 2]),
        ("filter level not in ['ERROR', 'WARN']", [1, 3]),
        ("filter range in [2500, 4000]", [1, 2]),
        ("filter level != 1", [0, 1, 2, 3]),  # a number and a non-numeric string differ
        ("filter level = 1 or level < 1 or level > 1", []),
        ("filter @message like /accountId/", [0, 1, 2]),
        ("filter ispresent(range)", [0, 1, 2]),
        ("filter level = 'INFO' | filter ispresent(msg)", [1]),
        ("where level = 'WARN'", [2]),
    ],
)
def test_filter(text: str, kept: list[int]) -> None:
    assert ids(text) == kept


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("filter range > 0", [0, 1, 2]),  # missing range: comparison is false
        ("filter range != 5000", [1, 2]),  # ... in both directions
        ("filter not range = 5000", [1, 2, 3]),  # not negates it
        ("filter msg like /./", [0, 1, 2]),
        ("filter range in [5000]", [0]),
        ("filter range not in [5000]", [1, 2, 3]),
        ("filter nosuchfield = ''", []),
    ],
)
def test_filter_on_missing_fields(text: str, kept: list[int]) -> None:
    assert ids(text) == kept


def test_filter_counts_matched_records() -> None:
    result = run("filter level = 'INFO' | limit 1", FILTER_EVENTS)
    assert len(result.rows) == 1
    assert result.records_matched == 2
    assert result.records_scanned == 4


# -- JSON discovery


def test_json_fields_are_discovered_nested_and_in_arrays() -> None:
    message = {
        "eventName": "RunInstances",
        "userIdentity": {
            "type": "IAMUser",
            "sessionContext": {"attributes": {"mfaAuthenticated": False}},
        },
        "requestParameters": {
            "instancesSet": {"items": [{"instanceId": "i-1"}, {"instanceId": "i-2"}]}
        },
        "@version": 2,
        "empty": None,
    }
    flat = discover(json.dumps(message))
    assert flat == {
        "eventName": "RunInstances",
        "userIdentity.type": "IAMUser",
        "userIdentity.sessionContext.attributes.mfaAuthenticated": "false",
        "requestParameters.instancesSet.items.0.instanceId": "i-1",
        "requestParameters.instancesSet.items.1.instanceId": "i-2",
        "@@version": 2,
    }
    text = "filter userIdentity.type = 'IAMUser' | fields requestParameters.instancesSet.items.1.instanceId as id, @@version"
    assert run(text, [event(T0, message)]).rows == [{"id": "i-2", "@@version": 2}]


@pytest.mark.parametrize("message", ["plain text", "[1, 2]", "{not json", '"a string"', ""])
def test_non_json_messages_have_no_discovered_fields(message: str) -> None:
    assert discover(message) == {}
    assert run("fields a", [event(T0, message)]).rows == [{}]


def test_parsed_and_computed_fields_win_over_discovered_ones() -> None:
    result = run("fields 'mine' as a | fields a, b", [event(T0, {"a": "json", "b": 1})])
    assert result.rows == [{"a": "mine", "b": 1}]


# -- parse


def test_parse_glob_aws_example() -> None:
    text = 'parse @message "user=*, method:*, latency := *" as @user, @method, @latency | stats avg(@latency) by @method, @user'
    events = [
        event(T0, "user=ann, method:GET, latency := 30"),
        event(T0 + 1, "user=ann, method:GET, latency := 50"),
        event(T0 + 2, "user=bob, method:PUT, latency := 5"),
    ]
    result = run(text, events)
    assert result.fields == ["@method", "@user", "avg(@latency)"]
    assert result.rows == [
        {"@method": "GET", "@user": "ann", "avg(@latency)": 40.0},
        {"@method": "PUT", "@user": "bob", "avg(@latency)": 5.0},
    ]


def test_parse_regex_named_groups_aws_example() -> None:
    text = "parse @message /user=(?<user2>.*?), method:(?<method2>.*?), latency := (?<latency2>.*?)$/ | stats avg(latency2) by method2, user2"
    result = run(text, [event(T0, "user=ann, method:GET, latency := 30")])
    assert result.rows == [{"method2": "GET", "user2": "ann", "avg(latency2)": 30.0}]


def test_parse_without_a_match_leaves_fields_missing() -> None:
    result = run(
        'parse "[*] *" as level, text | sort @timestamp asc',
        [event(T0, "[ERROR] disk full"), event(T0 + 1, "no brackets")],
    )
    assert result.fields == ["@timestamp", "@message", "level", "text"]
    assert [(r.get("level"), r.get("text")) for r in result.rows] == [
        ("ERROR", "disk full"),
        (None, None),
    ]


def test_parse_glob_matches_anywhere_and_escapes_regex_characters() -> None:
    result = run(
        'parse @message "(id=*)." as id | fields id', [event(T0, "prefix (id=a.b). suffix")]
    )
    assert result.rows == [{"id": "a.b"}]


def test_parse_a_discovered_field() -> None:
    result = run(
        'parse path "/users/*/orders" as user | fields user',
        [event(T0, {"path": "/users/42/orders"})],
    )
    assert result.rows == [{"user": "42"}]


# -- stats


STATS_EVENTS = [
    event(T0 + 0, {"host": "a", "latency": 10}),
    event(T0 + 1, {"host": "b", "latency": "30"}),
    event(T0 + 2, {"host": "a", "latency": "n/a"}),
    event(T0 + 3, {"host": "a"}),
    event(T0 + 4, {"latency": 7}),
]


def test_count_forms() -> None:
    result = run(
        "stats count() as all1, count(*) as all2, count(latency) as withLatency", STATS_EVENTS
    )
    assert result.rows == [{"all1": 5, "all2": 5, "withLatency": 4}]


def test_several_aggregates_by_field_in_first_seen_order() -> None:
    result = run(
        "stats count(*), sum(latency), avg(latency), min(latency), max(latency) by host",
        STATS_EVENTS,
    )
    assert result.fields == [
        "host",
        "count(*)",
        "sum(latency)",
        "avg(latency)",
        "min(latency)",
        "max(latency)",
    ]
    assert result.rows == [
        {
            "host": "a",
            "count(*)": 3,
            "sum(latency)": 10,
            "avg(latency)": 10.0,
            "min(latency)": 10,
            "max(latency)": 10,
        },
        {
            "host": "b",
            "count(*)": 1,
            "sum(latency)": 30,
            "avg(latency)": 30.0,
            "min(latency)": 30,
            "max(latency)": 30,
        },
        {
            "count(*)": 1,
            "sum(latency)": 7,
            "avg(latency)": 7.0,
            "min(latency)": 7,
            "max(latency)": 7,
        },
    ]


def test_aggregate_of_no_numbers_is_missing() -> None:
    result = run("stats sum(nothing) as s, avg(nothing) as a, count(nothing) as c", STATS_EVENTS)
    assert result.rows == [{"c": 0}]


def test_stats_over_no_events() -> None:
    assert run("stats count() as n", []).rows == [{"n": 0}]
    assert run("stats count() by bin(1m)", []).rows == []


def test_aws_vpc_example_sum_sort_limit() -> None:
    events = [
        event(T0 + i, {"srcAddr": src, "dstAddr": dst, "packets": n})
        for i, (src, dst, n) in enumerate(
            [("1", "2", 10), ("1", "2", 5), ("3", "4", 100), ("5", "6", 1), ("3", "4", 1)]
        )
    ]
    text = "stats sum(packets) as packetsTransferred by srcAddr, dstAddr | sort packetsTransferred desc | limit 2"
    assert run(text, events).rows == [
        {"srcAddr": "3", "dstAddr": "4", "packetsTransferred": 101},
        {"srcAddr": "1", "dstAddr": "2", "packetsTransferred": 15},
    ]


def test_bin_groups_newest_first_and_splits_at_boundaries() -> None:
    start = T0 - T0 % MINUTE
    events = [event(start + ms) for ms in (0, 59_999, 60_000, 60_001, 3 * MINUTE + 5)]
    result = run("stats count() by bin(1m)", events)
    assert result.fields == ["bin(1m)", "count()"]
    assert result.rows == [
        {"bin(1m)": format_time(start + 3 * MINUTE), "count()": 1},
        {"bin(1m)": format_time(start + MINUTE), "count()": 2},
        {"bin(1m)": format_time(start), "count()": 2},
    ]
    assert result.records_matched == 5


def test_bin_with_a_filter_and_an_alias() -> None:
    start = T0 - T0 % 300_000
    events = [event(start + i * 100_000, {"ok": i % 2}) for i in range(7)]
    result = run("filter ok = 1 | stats count(*) as n by bin(5min) as period", events)
    assert result.rows == [
        {"period": format_time(start + 300_000), "n": 2},
        {"period": format_time(start), "n": 1},
    ]
    assert result.records_matched == 3


def test_bin_counts_unsorted_input_too() -> None:
    query = parse_query("stats count() by bin(1h)")
    rows = [(T0 + 3_600_000,), (T0,), (T0 + 3_600_001,)]
    assert [r["count()"] for r in query.run(rows).rows] == [2, 1]


@pytest.mark.parametrize(
    ("period", "ts", "floor"),
    [
        ("100ms", "2024-03-05 10:20:30.456", "2024-03-05 10:20:30.400"),
        ("2msec", "2024-03-05 10:20:30.457", "2024-03-05 10:20:30.456"),
        ("15s", "2024-03-05 10:20:44.999", "2024-03-05 10:20:30.000"),
        ("30secs", "2024-03-05 10:20:44.999", "2024-03-05 10:20:30.000"),
        ("5m", "2024-03-05 10:24:59.999", "2024-03-05 10:20:00.000"),
        ("10mins", "2024-03-05 10:29:00.000", "2024-03-05 10:20:00.000"),
        ("1minute", "2024-03-05 10:29:30.000", "2024-03-05 10:29:00.000"),
        ("1h", "2024-03-05 10:59:59.999", "2024-03-05 10:00:00.000"),
        ("2hrs", "2024-03-05 11:59:59.999", "2024-03-05 10:00:00.000"),
        ("1d", "2024-03-05 23:59:59.999", "2024-03-05 00:00:00.000"),
        ("1days", "2024-03-05 23:59:59.999", "2024-03-05 00:00:00.000"),
        ("1w", "2024-03-10 23:59:59.999", "2024-03-04 00:00:00.000"),  # Monday
        ("1week", "2024-03-04 00:00:00.000", "2024-03-04 00:00:00.000"),
        ("1mo", "2024-03-31 23:59:59.999", "2024-03-01 00:00:00.000"),
        ("2months", "2024-04-15 00:00:00.000", "2024-03-01 00:00:00.000"),
        ("1q", "2024-06-30 12:00:00.000", "2024-04-01 00:00:00.000"),
        ("1qtr", "2024-03-31 12:00:00.000", "2024-01-01 00:00:00.000"),
        ("1y", "2024-12-31 23:59:59.999", "2024-01-01 00:00:00.000"),
        ("1yrs", "2024-12-31 23:59:59.999", "2024-01-01 00:00:00.000"),
    ],
)
def test_bin_units(period: str, ts: str, floor: str) -> None:
    import datetime as dt

    parsed = dt.datetime.strptime(ts, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=dt.UTC)
    ms = int(parsed.timestamp() * 1000)
    assert format_time(ms) == ts
    result = run(f"stats count() by bin({period}) as b", [event(ms)])
    assert result.rows == [{"b": floor, "count()": 1}]
    # The same period as an expression in fields.
    assert run(f"fields bin({period}) as b", [event(ms)]).rows == [{"b": floor}]


def test_a_second_stats_aggregates_the_first() -> None:
    start = T0 - T0 % MINUTE
    events = [event(start + i * 20_000) for i in range(7)]  # 3, 3, 1 per minute
    text = "stats count(*) as n by bin(1m) as t | stats avg(n) as mean, max(n) as peak, min(t) as first"
    assert run(text, events).rows == [{"mean": 7 / 3, "peak": 3, "first": format_time(start)}]


def test_filter_and_sort_after_stats() -> None:
    text = "stats count() as n by host | filter n > 1 or host = 'b' | sort n asc"
    assert run(text, STATS_EVENTS).rows == [{"host": "b", "n": 1}, {"host": "a", "n": 3}]


# -- sort


def test_sort_several_keys_and_directions() -> None:
    events = [
        event(T0 + i, {"g": g, "v": v})
        for i, (g, v) in enumerate([("b", 1), ("a", 2), ("b", 3), ("a", 1)])
    ]
    result = run("sort g asc, v desc | fields g, v", events)
    assert [(r["g"], r["v"]) for r in result.rows] == [("a", 2), ("a", 1), ("b", 3), ("b", 1)]
    result = run("sort v | fields v", events)  # no direction: descending
    assert values(result, "v") == [3, 2, 1, 1]


def test_sort_puts_missing_values_last_both_ways() -> None:
    events = [event(T0, {"v": 2}), event(T0 + 1, {}), event(T0 + 2, {"v": 1})]
    assert values(run("sort v asc | fields v", events), "v") == [1, 2, None]
    assert values(run("sort v desc | fields v", events), "v") == [2, 1, None]


def test_sort_natural_order_aws_example() -> None:
    # The ascending order AWS documents for sort ("01" and "1" tie, so "1" is left out).
    expected = [
        "!:",
        "#",
        "*%04",
        "0#",
        "5A",
        "111A",
        "2345_",
        "@",
        "@_",
        "A",
        "A9876fghj",
        "a12345hfh",
        "0",
        "01",
        "2",
        "3",
    ]
    events = [event(T0 + i, {"v": v}) for i, v in enumerate(reversed(expected))]
    assert values(run("sort v asc | fields v", events), "v") == expected
    assert values(run("sort v desc | fields v", events), "v") == expected[::-1]


def test_sort_orders_digit_runs_by_length_then_value() -> None:
    events = [event(T0 + i, {"v": v}) for i, v in enumerate(["007x", "8x", "10x"])]
    assert values(run("sort v asc | fields v", events), "v") == ["8x", "10x", "007x"]


def test_sort_mixes_numbers_and_numeric_strings() -> None:
    events = [event(T0 + i, {"v": v}) for i, v in enumerate([10, "9", 100, "x"])]
    assert values(run("sort v asc | fields v", events), "v") == ["x", "9", 10, 100]


# -- limit


def test_limit() -> None:
    events = [event(T0 + i, str(i)) for i in range(5)]
    assert values(run("sort @timestamp asc | limit 2 | fields @message", events), "@message") == [
        "0",
        "1",
    ]
    assert len(run("limit 100000", events).rows) == 5


# -- errors


@pytest.mark.parametrize(
    ("text", "position", "phrase"),
    [
        ("", 0, "the query is empty"),
        ("  # only a comment", 18, "the query is empty"),
        ("fields a | | limit 1", 11, "expected a command"),
        ("fields a |", 10, "expected a command"),
        ("fields a | fitler b = 1", 11, "unknown command 'fitler'; did you mean 'filter'?"),
        ("dedup @logStream", 0, "command 'dedup' is not supported"),
        ("filter (a = 1", 7, "unbalanced '('"),
        ("filter ((a = 1) or b = 2", 7, "unbalanced '('"),
        ("filter a = 1)", 12, "unbalanced ')'"),
        ("stats count(", 11, "unbalanced '('"),
        ("fields strlenn(@message)", 7, "unknown function 'strlenn'; did you mean 'strlen'?"),
        ("filter nosuch(a)", 7, "unknown function 'nosuch'"),
        ("stats pct(latency, 50)", 6, "stats function 'pct' is not supported"),
        ("stats count() by bin(5x)", 21, "unknown time unit 'x'"),
        ("stats count() by bin(5)", 22, "bin() needs a unit"),
        ("stats count() by bin(0m)", 21, "greater than zero"),
        ("stats count() by bin(a)", 21, "bin() needs a period"),
        ("stats latency", 6, "stats needs an aggregate function"),
        ("stats count() by", 16, "expected a field"),
        ("filter sum(a) > 1", 7, "sum() can only be used in stats"),
        ("fields strlen(a, b)", 7, "strlen() takes 1 argument(s), got 2"),
        ("limit 0", 6, "positive whole number"),
        ("limit 100001", 6, "at most 100000"),
        ("limit 1.5", 6, "positive whole number"),
        ('parse @message "a=* b=*" as a', 28, "the pattern has 2 '*' but 1 name(s)"),
        ('parse @message "no stars" as a', 15, "at least one '*'"),
        ('parse @message "a=*"', 20, "expected 'as'"),
        ("parse @message /no groups/", 15, "named groups"),
        ("parse @message /(?<a>[/", 15, "invalid regular expression"),
        ("filter a like 3", 14, 'expected a /regex/ or a "string"'),
        ("filter a =~ 'x'", 12, "expected a /regex/"),
        ('filter a = "open', 11, "unterminated string"),
        ("filter a like /open", 14, "unterminated regular expression"),
        ("fields `open", 7, "unterminated `name`"),
        ("filter a = 1 b", 13, "unexpected 'b'"),
        ("filter a in [b]", 13, "only numbers and strings"),
        ("filter a = ;", 11, "unexpected character ';'"),
        ("filter", 6, "filter needs a condition"),
        (
            "stats count() as n | sort @timestamp",
            26,
            "field '@timestamp' is not available after stats",
        ),
        ("stats count() as n | stats count() by bin(1m)", 38, "not available after stats"),
    ],
)
def test_errors_name_the_problem_and_its_position(text: str, position: int, phrase: str) -> None:
    exc = error(text)
    assert exc.position == position, str(exc)
    assert phrase in str(exc)
    assert exc.query == text


def test_error_message_points_at_the_problem() -> None:
    exc = error("fields a | fitler b = 1")
    assert "MalformedQueryException" in str(exc)
    assert str(exc).endswith("fields a | fitler b = 1\n             ^")


# -- the sorted fast path (its speed is measured by bench/bench_logs.py)


def test_count_by_bin_over_many_sorted_rows_counts_each_bin() -> None:
    rows = [(T0 + i * 86,) for i in range(200_000)]  # ascending, 86 ms apart
    result = parse_query("stats count() by bin(1m)").run(rows)
    assert sum(r["count()"] for r in result.rows) == 200_000
    assert result.records_matched == result.records_scanned == 200_000
    # Each full minute holds the events whose time falls in it, whatever the fast path does.
    expected: dict[int, int] = {}
    for (ts,) in rows:
        expected[ts // 60_000] = expected.get(ts // 60_000, 0) + 1
    assert sorted(r["count()"] for r in result.rows) == sorted(expected.values())


# -- what the store may read alone: the first events in time order


@pytest.mark.parametrize(
    ("text", "head"),
    [
        ("sort @timestamp desc | limit 20", (20, True, False)),
        ("sort @timestamp asc | limit 3", (3, False, False)),
        ("fields @message | sort @timestamp | limit 3 | sort @message", (3, True, False)),
        ("limit 5", (5, True, True)),  # newest first, as rows without sort come
        ("limit 5 | sort @message", (5, False, False)),  # a later sort: as they come
        ("display @message, @logStream | limit 2", (2, True, True)),
    ],
)
def test_a_query_that_only_orders_by_time_before_its_limit_has_a_head(
    text: str, head: tuple[int, bool, bool]
) -> None:
    found = parse_query(text).head
    assert found is not None
    assert (found.limit, found.newest_first, found.ties_newest_first) == head


@pytest.mark.parametrize(
    "text",
    [
        "sort @timestamp desc",  # no limit
        "filter @message like /x/ | sort @timestamp desc | limit 20",
        "sort @message | limit 20",
        "sort @timestamp desc, @message | limit 20",
        "sort @message | sort @timestamp desc | limit 20",
        "fields @ingestionTime as @timestamp | sort @timestamp desc | limit 20",
        "parse @message '* *' as a, b | limit 20",
        "stats count() by bin(1m) | limit 20",
    ],
)
def test_a_query_that_may_keep_events_otherwise_has_no_head(text: str) -> None:
    assert parse_query(text).head is None


def test_a_head_run_alone_gives_the_same_rows_and_the_whole_ranges_counts() -> None:
    events = [event(T0 + i // 2, str(i)) for i in range(10)]  # two events per millisecond
    text = "sort @timestamp desc | limit 3"
    query = parse_query(text)
    # The head: newest time first, equal times oldest first: 8, 9 (T0+4), then 6 of 6, 7.
    kept = [(e["@timestamp"], e["@message"]) for e in events if e["@message"] in ("6", "8", "9")]
    alone = query.run(kept, total=10)
    assert alone.rows == run(text, events).rows
    assert values(alone, "@message") == ["8", "9", "6"]
    assert (alone.records_scanned, alone.records_matched) == (10, 10)
