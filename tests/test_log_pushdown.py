"""Logs Insights queries with filters and stats in SQL (plugins/logs/pushdown.py):
the same answers as the reference evaluator, on a real SQLite file."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pipelines.clock import ManualClock
from plugins.logs.insights import discover, parse_query
from plugins.logs.pushdown import plan, release, required_globs, required_literal
from plugins.logs.store import LogStore

NOW = 1_700_000_000_000

# Every kind of message the two JSON readers must agree on (or leave to Python).
MESSAGES = [
    {"level": "ERROR", "ms": 5, "path": "/orders/12", "status": 500, "svc": "a"},
    {"level": "INFO", "ms": "7", "path": "/orders/405", "status": "200", "svc": "b"},
    {"level": "INFO", "ms": 7, "path": "/users/4", "status": 200, "svc": "a"},
    {"level": "WARN", "ms": None, "svc": None},
    {"level": True, "ms": False, "svc": "true"},
    {"level": {"nested": 1}, "ms": [1, 2], "svc": ["x"]},
    {"level": "", "ms": "", "svc": ""},
    {"level": "info", "ms": "  12 ", "svc": "b"},
    {"level": "INFO", "ms": "1e3", "status": "abc", "svc": "c"},
    {"level": "INFO", "ms": "nan", "svc": "c"},
    {"level": "ERROR", "ms": -3, "status": 404, "svc": 1},
    {"level": "ERROR", "ms": 0, "status": 500, "svc": "1"},
    "plain text line ms=5 level=ERROR",
    "[1, 2, 3]",
    '"just a string"',
    "{not json",
    '{"level":"DEBUG","level":"ERROR","ms":1}',  # duplicate key: the last one counts
    '{"level":"\\u0045RROR","ms":2}',  # an escaped key or value
    '{"l\\u0065vel":"ERROR","ms":3}',
    '{"level":"INFO","ms":12345678901234567890}',  # past 64 bits
    '{"level":"INFO","ms":1e400}',  # past a double: infinity
    '{"level":"INFO","ms":4}\x00tail',  # SQLite stops at the NUL
    '{"level":"INFO", "ms": 9, "svc": "b", "note": "level"}',
    '  {"level":"ERROR","ms":11}  ',
    '{"level":"ERROR","ms":"\\ud800"}',  # a lone surrogate
    '{"level":"INFO","ms":9223372036854775807,"status":-9223372036854775809}',  # 64-bit edges
    '{"level":"INFO","ms":2.5,"status":200.0,"svc":"a\\u0000b"}',  # floats; an escaped NUL
    '{"a":{"b":1},"a.b":2,"@x":3,"level":"ERROR"}',  # dotted names that collide; an @ key
    '{"level":null,"ms":true,"status":false}',
    {"level": "INFO", "path": "/orders/412\n", "ms": 12},  # regex $ before a final newline
]

QUERIES = [
    'filter level = "ERROR"',
    'filter level != "ERROR"',
    "filter level = 'true'",
    "filter ms > 4",
    "filter ms >= 7 and ms <= 12",
    "filter ms < 0 or ms = '7'",
    "filter ms != 5",
    "filter ms = 1000",
    "filter 5 < ms",
    "filter not ms > 4",
    "filter status = 500",
    "filter status = '200'",
    "filter status != 200",
    "filter status > 'a'",
    "filter svc = 1",
    "filter level like /RR/",
    "filter level not like /^I/",
    "filter level like 'NF'",
    "filter path like /orders\\/4\\d\\d$/",
    "filter path like /^\\/orders\\/\\d\\d$/",
    "filter ms like /^1.$/",
    "filter ms like /^1/",
    "filter ms =~ /\\d/",
    "filter @message like /ERROR/",
    "filter @message like 'level'",
    "filter ms in [5, 7, '12']",
    "filter level not in ['INFO', 'ERROR']",
    "filter ispresent(ms)",
    "filter not ispresent(svc)",
    "filter @logStream = 'web' and level = 'INFO'",
    "filter @timestamp > 1700000000005",
    'filter level = "ERROR" | fields @timestamp, ms, path',
    'filter level = "INFO" | sort @timestamp desc | limit 3',
    'filter level = "INFO" | limit 2',
    "filter ms > 0 | filter ms + 1 > 6",
    "stats count() by level",
    "stats count(*) as n, count(ms) as m by svc",
    "stats sum(ms), avg(ms), min(ms), max(ms)",
    "stats sum(ms), avg(ms), min(ms), max(ms) by level",
    "filter level = 'INFO' | stats avg(ms) as a, count() as n",
    "filter level = 'nothing' | stats avg(ms) as a, count() as n",
    "filter level = 'nothing' | stats count() by svc",
    "stats count() by bin(1m)",
    "stats count() by bin(1s), level",
    "stats count() by @logStream",
    "stats max(@timestamp) by svc",
    "stats avg(status) by level | sort level asc",
    "filter path like /orders/ | stats count() by path | sort path",
    "stats count() as n by svc | filter n > 1",
    "filter `a.b` = 1",
    "filter status = 200 | stats count() by `a.b`",
]

#: The field index policies the comparisons run under: none, every field the
#: queries read (set before the events, or after half of them: older events
#: keep reading their JSON).
INDEXED = ["level", "ms", "path", "status", "svc", "a.b", "@@x"]
POLICIES = ["none", "before", "halfway"]


async def filled(location: str | Path, policy: str) -> LogStore:
    opened = await LogStore.open(location, ManualClock(NOW / 1000 + 60))
    await opened.create_log_group("app")
    for stream in ("web", "api"):
        await opened.create_log_stream("app", stream)
    if policy == "before":
        await opened.put_index_policy("app", {"Fields": INDEXED})
    lines = [m if isinstance(m, str) else json.dumps(m) for m in MESSAGES]
    for stream, part in (("web", lines[::2]), ("api", lines[1::2])):
        # Two events per millisecond: ties in time between streams and groups.
        batch = [{"timestamp": NOW + i, "message": m} for i, m in enumerate(part)]
        await opened.put_log_events("app", stream, batch)
        if policy == "halfway":
            await opened.put_index_policy("app", {"Fields": INDEXED})
    return opened


@pytest.fixture(params=POLICIES)
async def store(state_location: str, request: pytest.FixtureRequest) -> AsyncIterator[LogStore]:
    opened = await filled(state_location, request.param)
    yield opened
    await opened.close()


@pytest.fixture
async def oracle(
    store: LogStore, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[LogStore]:
    """Where the reference answers come from: the SQLite store itself, or,
    for a PostgreSQL one (which answers in Python after reading the range:
    no pushdown there), a SQLite store with the same events, so that the
    two engines are held to the same answers."""
    if isinstance(store.path, Path):
        yield store
        return
    policy = request.node.callspec.params["store"]
    opened = await filled(tmp_path / "reference.db", policy)
    yield opened
    await opened.close()


@pytest.mark.parametrize("text", QUERIES)
async def test_sql_gives_the_reference_answer(store: LogStore, oracle: LogStore, text: str) -> None:
    ours = await store.query("app", text)
    reference = await oracle.query("app", text, pushdown=False)
    assert ours.fields == reference.fields
    assert ours.rows == reference.rows
    assert (ours.records_matched, ours.records_scanned) == (
        reference.records_matched,
        reference.records_scanned,
    )


@pytest.mark.parametrize("text", QUERIES[:8])
async def test_sql_gives_the_reference_answer_in_a_time_window(
    store: LogStore, oracle: LogStore, text: str
) -> None:
    window = {"start_time": NOW + 3, "end_time": NOW + 9}
    ours = await store.query("app", text, **window)
    reference = await oracle.query("app", text, pushdown=False, **window)
    assert (ours.rows, ours.records_matched, ours.records_scanned) == (
        reference.rows,
        reference.records_matched,
        reference.records_scanned,
    )


@pytest.mark.parametrize(
    "text",
    [
        'filter level = "ERROR"',
        "filter ms > 4 | fields ms",
        "stats count() by level",
        "filter path like /orders/ | stats avg(ms)",
        "stats count() by bin(5m)",
    ],
)
def test_the_queries_the_issue_names_are_planned(text: str) -> None:
    planned = plan(parse_query(text))
    assert planned is not None
    release(planned.slots)


@pytest.mark.parametrize(
    "text",
    [
        "fields @timestamp | sort @timestamp desc | limit 20",  # the head path
        "filter ms + 1 > 2",  # arithmetic
        "filter `a.b` = 1",  # a dotted name: several JSON spellings (unless indexed)
        "filter a = b",  # two fields
        "parse @message 'x=*' as x | stats count() by x",
        "stats count() by bin(1w)",  # calendar bins
    ],
)
def test_what_sql_cannot_answer_exactly_is_not_planned(text: str) -> None:
    assert plan(parse_query(text)) is None


async def test_floats_in_a_sum_fall_back_to_python(store: LogStore) -> None:
    await store.put_log_events(
        "app",
        "web",
        [{"timestamp": NOW + 50 + i, "message": json.dumps({"ms": 0.1})} for i in range(3)],
    )
    ours = await store.query("app", "stats sum(ms) as s")
    reference = await store.query("app", "stats sum(ms) as s", pushdown=False)
    assert ours.rows == reference.rows


async def test_an_integer_sum_past_64_bits_falls_back_to_python(store: LogStore) -> None:
    await store.create_log_group("big")
    big = json.dumps({"ms": 2**62})
    await store.put_log_events(
        "big", "web", [{"timestamp": NOW + i, "message": big} for i in range(4)], create_stream=True
    )
    ours = await store.query("big", "filter ms > 100 | stats sum(ms) as s")
    assert ours.rows == [{"s": 2**64}]


def test_a_number_past_a_double_is_discovered_as_infinity() -> None:
    assert discover('{"a": 1e400, "b": "x"}') == {"a": float("inf"), "b": "x"}
    assert discover('{"a": NaN}') == {}
    assert discover('{"a": "\\ud800", "b": 1e400}') == {}  # a lone surrogate: no fields


@pytest.mark.parametrize(
    ("source", "literal"),
    [
        (r"orders\/4\d\d$", "orders/4"),
        ("abc", "abc"),
        ("ab?c", "a"),
        ("ab*cd", "cd"),
        ("ab+cd", "ab"),
        ("a{2}bc", "bc"),
        ("[abc]xyz", "xyz"),
        (r"[\]x]yz", "yz"),
        ("a|b", ""),
        ("(ab)c", ""),
        (r"\d+\.\d+", "."),
        ("^ERROR: ", "ERROR: "),
    ],
)
def test_a_regex_required_literal_is_in_every_match(source: str, literal: str) -> None:
    assert required_literal(source) == literal


@pytest.mark.parametrize(
    ("source", "globs"),
    [
        (r"orders\/4\d\d$", ["*orders/4??", "*orders/4??\n"]),
        ("^ERR.R", ["ERR?R*"]),
        (r"a[*?]b\*", ["*a?b[*]*"]),
        ("ab+c", []),
        ("a|b", []),
        (r"\bword", []),
        ("(?i)abc", []),
    ],
)
def test_a_fixed_width_regex_gives_globs(source: str, globs: list[str]) -> None:
    assert required_globs(re.compile(source)) == globs


@pytest.mark.parametrize("source", [r"orders\/4\d\d$", "^a.c", r"\d\d", "x[^y]z$", r"\.\*"])
def test_every_text_the_regex_matches_passes_its_globs(source: str) -> None:
    texts = [
        "orders/412", "orders/412\n", "/api/orders/4x9", "abc", "a\nc", "a\u00e9c", "\u0663\u0664",
        "xyz", "x\nz", "x\u00e9z\n", ".*", "orders/4123", "abcd", "12", "", "\n",
    ]  # fmt: skip
    pattern = re.compile(source)
    globs = required_globs(pattern)
    assert globs
    with sqlite3.connect(":memory:") as db:
        for text in texts:
            passes = any(db.execute("SELECT ? GLOB ?", (text, g)).fetchone()[0] for g in globs)
            assert passes or pattern.search(text) is None, (source, text)
