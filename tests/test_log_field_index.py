"""Field index policies (plugins/logs/fieldindex.py): the API, what ingest
extracts (exactly what the reference discovers), queries that read no JSON,
and a version-1 state database upgraded in place."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pipelines.clock import ManualClock
from pipelines.errors import LogsError
from plugins.logs.fieldindex import SLOTS, UNSURE, Extractor, assign_slots, sql_value
from plugins.logs.insights import discover, parse_query
from plugins.logs.pushdown import Indexed, plan, release
from plugins.logs.store import LogStore
from tests.test_log_pushdown import MESSAGES

NOW = 1_700_000_000_000
LINES = [m if isinstance(m, str) else json.dumps(m) for m in MESSAGES]


#: The tests of what ingest extracts and queries read from the value columns
#: run on SQLite only: on PostgreSQL queries are not pushed down into SQL (the
#: reference evaluator reads the messages) and ingest extracts nothing.
sqlite_only = pytest.mark.parametrize("state_location", ["sqlite"], indirect=True)


@pytest.fixture
async def store(state_location: str) -> AsyncIterator[LogStore]:
    opened = await LogStore.open(state_location, ManualClock(NOW / 1000 + 60))
    await opened.create_log_group("app")
    await opened.create_log_stream("app", "web")
    yield opened
    await opened.close()


@pytest.mark.parametrize(
    "names", [["level", "ms", "status", "svc"], ["a.b", "@@x", "level"], ["ms"]]
)
def test_the_extracted_values_are_what_the_reference_discovers(names: list[str]) -> None:
    extractor = Extractor({name: i for i, name in enumerate(names)})
    for line in LINES:
        found = discover(line)
        assert extractor.values(line) == tuple(sql_value(found.get(n)) for n in names), line


def test_values_sql_cannot_hold_exactly_are_marked() -> None:
    assert sql_value(2**63) is UNSURE
    assert sql_value(2**63 - 1) == 2**63 - 1
    assert sql_value("a\x00b") is UNSURE
    assert sql_value(float("inf")) is UNSURE
    assert sql_value(None) is None


def test_a_field_kept_keeps_its_slot_and_new_ones_take_free_slots() -> None:
    assert assign_slots(["b", "c"], {"a": 0, "b": 1}) == {"b": 1, "c": 0}


async def test_put_describe_delete(store: LogStore) -> None:
    answer = await store.put_index_policy("app", '{"Fields": ["requestId", "level"]}')
    policy = answer["indexPolicy"]
    assert json.loads(policy["policyDocument"]) == {"Fields": ["requestId", "level"]}
    assert policy["logGroupIdentifier"] == store.arn("app")
    described = await store.describe_index_policies(["app"])
    assert described["indexPolicies"] == [policy]
    await store.delete_index_policy("app")
    assert (await store.describe_index_policies(["app"]))["indexPolicies"] == []
    with pytest.raises(LogsError, match="no field index policy"):
        await store.delete_index_policy("app")
    with pytest.raises(LogsError, match="does not exist"):
        await store.put_index_policy("nope", {"Fields": ["a"]})


@pytest.mark.parametrize(
    "document",
    [
        "not json",
        {"Fields": []},
        {"Fields": [f"f{i}" for i in range(21)]},
        {"Fields": ["x" * 101]},
        {"Fields": ["a", "a"]},
        {"Fields": ["a"], "Other": 1},
        {"Fields": [1]},
    ],
)
async def test_policies_outside_aws_rules_are_refused(store: LogStore, document: object) -> None:
    with pytest.raises(LogsError) as refused:
        await store.put_index_policy("app", document)  # type: ignore[arg-type]
    assert refused.value.code == "InvalidParameterException"


@sqlite_only
async def test_ingest_writes_the_indexed_values_beside_the_message(store: LogStore) -> None:
    await store.put_index_policy("app", {"Fields": ["level", "ms"]})
    batch = [{"timestamp": NOW + i, "message": m} for i, m in enumerate(LINES)]
    await store.put_log_events("app", "web", batch)
    rows = await store.rows("SELECT message, f0, f1 FROM log_events ORDER BY id")
    for message, level, ms in rows:
        found = discover(message)
        assert (level, ms) == (sql_value(found.get("level")), sql_value(found.get("ms")))
        # The SQL type is the value's kind: typeof() decides in the queries.
        assert type(ms) is type(sql_value(found.get("ms")))


@sqlite_only
async def test_queries_on_indexed_fields_read_no_json(store: LogStore) -> None:
    indexed = {"level": Indexed("f0", 1), "ms": Indexed("f1", 1), "path": Indexed("f2", 1)}
    for text in [
        'filter level = "ERROR" | fields @timestamp, ms',
        "stats count(), avg(ms) by level",
        r"filter path like /orders\/4\d\d$/ | stats avg(ms)",
    ]:
        planned = plan(parse_query(text), indexed=indexed)
        assert planned is not None
        sql = planned.where + " ".join(planned.inner)
        assert planned.kind is None and "->>" not in sql and "json" not in sql, text
        release(planned.slots)
    # An index set after events were written: those read their JSON, and only those.
    planned = plan(parse_query('filter level = "ERROR"'), indexed={"level": Indexed("f0", 7)})
    assert planned is not None and planned.kind is not None
    assert planned.kind.startswith("(CASE WHEN e.id >= 7 THEN 1")
    release(planned.slots)


async def test_a_dropped_field_reused_slot_does_not_read_old_values(store: LogStore) -> None:
    await store.put_index_policy("app", {"Fields": ["level"]})
    await store.put_log_events("app", "web", [{"timestamp": NOW, "message": '{"level":"A"}'}])
    await store.put_index_policy("app", {"Fields": ["svc"]})  # takes level's slot f0
    line = '{"level":"B","svc":"A"}'
    await store.put_log_events("app", "web", [{"timestamp": NOW + 1, "message": line}])
    for text in ['filter svc = "A"', 'filter level = "A"', "stats count() by svc"]:
        ours = await store.query("app", text)
        reference = await store.query("app", text, pushdown=False)
        assert (ours.rows, ours.records_matched) == (reference.rows, reference.records_matched)
    assert len((await store.query("app", 'filter svc = "A"')).rows) == 1


async def test_a_version_1_database_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE store_versions (store TEXT PRIMARY KEY, version INTEGER NOT NULL,
                                         applied REAL NOT NULL);
            INSERT INTO store_versions VALUES ('logs', 1, 0);
            CREATE TABLE log_groups (id INTEGER PRIMARY KEY AUTOINCREMENT,
                name TEXT NOT NULL UNIQUE, created INTEGER NOT NULL, retention_days INTEGER);
            CREATE TABLE log_events (id INTEGER PRIMARY KEY AUTOINCREMENT,
                grp INTEGER NOT NULL, stream INTEGER NOT NULL, ts INTEGER NOT NULL,
                ingested INTEGER NOT NULL, message TEXT NOT NULL);
            INSERT INTO log_groups VALUES (1, 'app', 0, NULL);
            """
        )
    store = await LogStore.open(path, ManualClock(NOW / 1000 + 60))
    try:
        await store.create_log_stream("app", "web")
        await store.put_log_events("app", "web", [{"timestamp": NOW, "message": '{"a":1}'}])
        await store.put_index_policy("app", {"Fields": ["a"]})
        await store.put_log_events("app", "web", [{"timestamp": NOW + 1, "message": '{"a":2}'}])
        assert await store.scalar("SELECT version FROM store_versions WHERE store = 'logs'") == 2
        columns = {row[1] for row in await store.rows("PRAGMA table_info(log_events)")}
        assert set(SLOTS) <= columns
        result = await store.query("app", "stats sum(a) as s, count() as n")
        assert result.rows == [{"s": 3, "n": 2}]
    finally:
        await store.close()


@sqlite_only
async def test_a_column_of_one_type_is_read_as_it_is_until_another_type_comes(
    store: LogStore,
) -> None:
    await store.put_index_policy("app", {"Fields": ["svc", "ms"]})
    lines = [json.dumps({"svc": f"s{i % 3}", "ms": i}) for i in range(9)] + ["not json"]
    await store.put_log_events(
        "app", "web", [{"timestamp": NOW + i, "message": m} for i, m in enumerate(lines)]
    )
    text = "stats count() as n, avg(ms) as a, max(ms) as m by svc"
    planned = plan(parse_query(text), indexed=await store._indexed(1))
    assert planned is not None
    assert planned.inner == ["e.f0", "e.f1"] and planned.checks == []
    release(planned.slots)
    for more in [
        '{"svc": 1.5, "ms": 2.5}',
        '{"svc": "s1", "ms": "7"}',
        '{"ms": 9223372036854775808}',
    ]:
        ours = await store.query("app", text)
        reference = await store.query("app", text, pushdown=False)
        assert ours.rows == reference.rows
        await store.put_log_events("app", "web", [{"timestamp": NOW + 20, "message": more}])
    kinds = dict(await store.rows("SELECT field, kinds FROM log_index_fields"))
    assert kinds == {"svc": 1 | 4, "ms": 2 | 4 | 1 | 8}
    ours = await store.query("app", text)
    assert ours.rows == (await store.query("app", text, pushdown=False)).rows
