"""What PutEvents accepts, storage can hold: archived, saved as a retry,
replayed and delivered with the same value (docs/delivery.md, "What PutEvents
accepts"). Whatever it cannot hold is refused per entry, never by the batch."""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.clock import ManualClock
from pipelines.errors import ConfigError, EventValidationError
from pipelines.event import (
    INT64_MAX,
    INT64_MIN,
    EntryLimits,
    dump_json,
    parse_json,
    reject_json_constant,
    validate_entry,
)
from pipelines.runtime import Runtime
from pipelines.transform import compile_transform
from plugins.queue.store import QueueStore

from .helpers import archived as archived_bodies
from .helpers import sql
from .recorder import Recorder, plugin_manager

PLUGINS = plugin_manager()
GOOD = {"Source": "shop", "DetailType": "t", "Detail": '{"ok": 1}'}
#: A lone surrogate, written as JSON's escape: valid JSON text.
SURROGATE = '{"a": "\\ud800", "b": ["x\\udfff", {"\\udbff": 1}]}'
SURROGATE_VALUE = {"a": "\ud800", "b": ["x\udfff", {"\udbff": 1}]}


def entry(detail: str) -> dict[str, Any]:
    return {**GOOD, "Detail": detail}


def nested(levels: int) -> str:
    """A Detail of ``levels`` nested objects."""
    return '{"a":' * (levels - 1) + "{}" + "}" * (levels - 1)


def recorder(runtime: Runtime, name: str) -> Recorder:
    target = runtime.resource(name)
    assert isinstance(target, Recorder)
    return target


def stored_details(state: Path | str, table: str, column: str) -> list[Any]:
    rows = sql(state, f"SELECT {column} FROM {table}")
    return [json.loads(row[0])["detail"] for row in rows]


async def archived(state: Path | str) -> Runtime:
    runtime = Runtime(state_path=state, plugins=PLUGINS)
    runtime.add_resource("sink", "recorder", {})
    bus = runtime.bus()
    bus.put_rule("all", pattern={"source": ["shop"]})
    await bus.put_targets("all", [{"id": "t", "resource": "sink"}])
    await runtime.archives.create_archive("all")
    return runtime


async def test_an_escaped_lone_surrogate_is_archived_and_replayed_as_it_was(
    state_location: str,
) -> None:
    state = state_location
    runtime = await archived(state)
    async with runtime:
        result = await runtime.put_events([GOOD, entry(SURROGATE), GOOD])
        await runtime.wait_until_idle()
        await runtime.replays.start("again", "all", 0, 4e9)
        async with asyncio.timeout(10):
            while (await runtime.replays.describe("again"))["State"] != "COMPLETED":
                await asyncio.sleep(0.01)
        await runtime.wait_until_idle()
    assert result["FailedEntryCount"] == 0
    assert [json.loads(body)["detail"] for body in archived_bodies(state)][1] == SURROGATE_VALUE
    details = [r.payload["detail"] for r in recorder(runtime, "sink").received]
    assert details == [{"ok": 1}, SURROGATE_VALUE, {"ok": 1}] * 2  # put, then replayed


async def test_what_storage_cannot_hold_fails_alone_with_malformed_detail(
    state_location: str,
) -> None:
    runtime = await archived(state_location)
    refused = [
        '{"n": 123456789012345678901234567890}',  # beyond EventBridge's 64-bit integers
        '{"n": 9223372036854775808}',
        '{"n": -9223372036854775809}',
        '{"x": 1e400}',  # no double holds it
        nested(254),
        nested(1000),
    ]
    async with runtime:
        result = await runtime.put_events([GOOD, *map(entry, refused), GOOD])
        await runtime.wait_until_idle()
        archive = await runtime.archives.describe_archive("all")
    outcomes = result["Entries"]
    assert "EventId" in outcomes[0] and "EventId" in outcomes[-1]
    assert [o.get("ErrorCode") for o in outcomes[1:-1]] == ["MalformedDetail"] * len(refused)
    messages = [o["ErrorMessage"] for o in outcomes[1:-1]]
    assert "64-bit" in messages[0] and "64-bit" in messages[1] and "64-bit" in messages[2]
    assert "out of range" in messages[3]
    assert "deeper than 253 levels" in messages[4] and "deeper than 253" in messages[5]
    assert archive["EventCount"] == 2
    assert len(recorder(runtime, "sink").received) == 2


async def test_the_edges_of_what_is_accepted_are_stored_exactly(state_location: str) -> None:
    state = state_location
    runtime = await archived(state)
    edges = [
        '{"n": 9223372036854775807, "m": -9223372036854775808}',
        '{"f": 1.7976931348623157e308, "g": 5e-324, "h": 0.1}',
        nested(253),
    ]
    async with runtime:
        result = await runtime.put_events([entry(text) for text in edges])
        await runtime.wait_until_idle()
    assert result["FailedEntryCount"] == 0
    expected = [json.loads(text) for text in edges]
    assert [json.loads(body)["detail"] for body in archived_bodies(state)] == expected
    assert [r.payload["detail"] for r in recorder(runtime, "sink").received] == expected


async def test_an_unstorable_retry_is_kept_across_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    clock = ManualClock()

    async def configured(fail: int) -> Runtime:
        runtime = Runtime(clock=clock, plugins=PLUGINS, seed=7, state_path=state)
        runtime.add_resource("flaky", "recorder", {"fail": fail})
        bus = runtime.bus()
        bus.put_rule("all", pattern={"source": ["shop"]})
        await bus.put_targets("all", [{"id": "t", "resource": "flaky"}])
        return runtime

    first = await configured(fail=-1)
    async with first:
        result = await first.put_events([entry(SURROGATE)])
        await clock.advance(0.1, quiet=first.wait_until_idle)
    assert result["FailedEntryCount"] == 0
    assert stored_details(state, "pending_deliveries", "event") == [SURROGATE_VALUE]
    second = await configured(fail=0)
    async with second:
        await clock.advance(600, quiet=second.wait_until_idle)
    [got] = recorder(second, "flaky").received
    assert got.payload["detail"] == SURROGATE_VALUE


async def test_a_queue_receives_the_event_and_a_transform_the_value(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    runtime = Runtime(state_path=state, plugins=PLUGINS)
    runtime.add_resource("events", "queue", {})
    runtime.add_resource("sink", "recorder", {})
    bus = runtime.bus()
    bus.put_rule("all", pattern={"source": ["shop"]})
    template = {"input_paths_map": {"a": "$.detail.a"}, "input_template": '{"got": <a>}'}
    await bus.put_targets(
        "all",
        [
            {"id": "q", "resource": "events"},
            {"id": "t", "resource": "sink", "input_transformer": template},
        ],
    )
    async with runtime:
        result = await runtime.put_events([entry(SURROGATE)])
        await runtime.wait_until_idle()
    assert result["FailedEntryCount"] == 0
    async with await QueueStore.open(state) as store:
        [message] = await store.receive("events", 10)
    assert json.loads(message.body)["detail"] == SURROGATE_VALUE
    [got] = recorder(runtime, "sink").received
    assert got.payload == {"got": "\ud800"}


def test_dump_json_takes_the_slow_way_only_for_what_orjson_refuses() -> None:
    assert dump_json({"a": "é", "n": 1}) == orjson.dumps({"a": "é", "n": 1})
    # Lone surrogates become their escapes; every other character stays UTF-8.
    assert dump_json({"\udbff": ["é\ud800"]}) == '{"\\udbff":["é\\ud800"]}'.encode()
    assert dump_json([2**70]) == b"[1180591620717411303424]"
    deep: Any = []
    for _ in range(300):
        deep = [deep]
    assert parse_json(dump_json(deep)) == deep
    for not_json in ({"x": {1, 2}}, [float("nan"), "\ud800"]):
        with pytest.raises(TypeError):
            dump_json(not_json)


def test_a_detail_given_as_an_object_is_held_as_its_json_text() -> None:
    event = validate_entry({**GOOD, "Detail": {"a": "\ud800", "t": (1, 2)}})
    assert event["detail"] == {"a": "\ud800", "t": [1, 2]}
    # orjson writes NaN as null: the event holds null too, not a NaN no store keeps.
    assert validate_entry({**GOOD, "Detail": {"f": float("nan")}})["detail"] == {"f": None}
    with pytest.raises(EventValidationError) as refused:
        validate_entry({**GOOD, "Detail": {"n": 2**64}})
    assert refused.value.code == "MalformedDetail"
    assert "64-bit" in refused.value.message


def test_a_depth_limit_storage_cannot_hold_is_refused() -> None:
    assert EntryLimits().max_depth == 253
    with pytest.raises(ValueError, match="max_depth"):
        EntryLimits(max_depth=1000)


def test_a_constant_input_must_read_back_as_it_was_written() -> None:
    assert compile_transform("t", {"input": '{"a": "\\ud800"}'})({}, "r", "arn", 0) == {
        "a": "\ud800"
    }
    with pytest.raises(ConfigError, match="beyond 64 bits"):
        compile_transform("t", {"input": '{"n": 123456789012345678901234567890}'})


# -- property: whatever a batch holds -------------------------------------------

#: Strings with lone surrogates too: a Detail carries them as JSON escapes.
TEXT = st.text(st.one_of(st.characters(), st.characters(categories=["Cs"])), max_size=6)
NUMBERS = st.one_of(
    st.integers(),
    st.sampled_from([INT64_MAX, INT64_MAX + 1, INT64_MIN, INT64_MIN - 1, 2**64, 10**30]),
    st.floats(allow_nan=False, allow_infinity=False),
)
VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBERS, TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=12,
)
#: Texts that are JSON, or nearly, at the edges of what an event holds.
EDGES = st.sampled_from(
    [
        '{"x": 1e400}',
        '{"x": -1e-400}',
        '{"n": 123456789012345678901234567890}',
        '{"n": -9223372036854775808, "m": 18446744073709551615}',
        '{"a": "\\ud800\\udc00\\udc00"}',
        '{"a": NaN}',
        '{"a": 1} []',
        "[]",
        '"\\ud800"',
        "\ufeff{}",
    ]
)


@st.composite
def deep(draw: st.DrawFn) -> dict[str, Any]:
    """An object nesting ``value`` about as deep as storage allows, or deeper."""
    value = draw(VALUES)
    for level in range(draw(st.sampled_from([0, 1, 249, 250, 251, 252, 253, 300]))):
        value = [value] if level % 2 else {"k": value}
    return {"deep": value}


DOCUMENTS = st.one_of(st.dictionaries(TEXT, VALUES, max_size=4), deep(), VALUES)
DETAILS = st.one_of(
    DOCUMENTS.map(json.dumps),  # lone surrogates escaped: valid JSON text
    DOCUMENTS.map(lambda doc: json.dumps(doc, ensure_ascii=False)),  # raw: not UTF-8
    DOCUMENTS.map(lambda doc: json.dumps(doc).encode()),
    DOCUMENTS,  # given as an object
    EDGES,
    st.binary(max_size=24),
    st.text(max_size=24),
)


def accepted_value(detail: Any) -> Any | None:
    """What an event holds of ``detail`` if PutEvents should accept it, else
    None: JSON text in UTF-8 that is an object, with 64-bit integers, finite
    numbers and at most 253 levels (docs/delivery.md). Read with the stdlib
    alone, independently of pipelines' parser."""
    try:
        if isinstance(detail, dict):
            text = json.dumps(detail, allow_nan=False)
        elif isinstance(detail, bytes):
            text = detail.decode("utf-8")
        elif isinstance(detail, str):
            text = detail.encode("utf-8").decode("utf-8")  # refuses raw surrogates
        else:
            return None
        value = json.loads(text, parse_constant=reject_json_constant)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) and holdable(value, 1) else None


def holdable(value: Any, depth: int) -> bool:
    if isinstance(value, dict | list):
        children = value.values() if isinstance(value, dict) else value
        return depth <= 253 and all(holdable(child, depth + 1) for child in children)
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return INT64_MIN <= value <= INT64_MAX
    return not isinstance(value, float) or math.isfinite(value)


async def fuzz_pipeline(state: Path, clock: ManualClock, *, fail: bool) -> Runtime:
    """An archive of everything, a queue, and a target that fails retryably
    (``fail``) so each event is saved as a retry; restarted with ``fail`` off,
    it delivers the retries."""
    runtime = Runtime(state_path=state, plugins=PLUGINS, clock=clock, seed=3)
    runtime.add_resource("events", "queue", {})
    runtime.add_resource("flaky", "recorder", {"fail": -1 if fail else 0})
    bus = runtime.bus()
    bus.put_rule("all", pattern={"source": ["fuzz"]})
    targets = [{"id": "q", "resource": "events"}, {"id": "f", "resource": "flaky"}]
    await bus.put_targets("all", targets)
    await runtime.archives.create_archive("all")
    return runtime


async def queued(state: Path, clock: ManualClock) -> list[Any]:
    bodies: list[Any] = []
    async with await QueueStore.open(state, clock) as store:  # the pipeline's time
        while batch := await store.receive("events", 10, wait_time=0):
            bodies += [json.loads(message.body) for message in batch]
    return bodies


def by_id(events: list[Any]) -> dict[str, Any]:
    return {event["id"]: event["detail"] for event in events}


async def put_stop_restart(state: Path, details: list[Any]) -> None:
    clock = ManualClock()
    entries = [{"Source": "fuzz", "DetailType": "t", "Detail": detail} for detail in details]
    first = await fuzz_pipeline(state, clock, fail=True)
    async with first:
        result = await first.put_events(entries)
        await clock.advance(0.1, quiet=first.wait_until_idle)
    expected = {}
    assert len(result["Entries"]) == len(details)
    for detail, outcome in zip(details, result["Entries"], strict=True):
        value = accepted_value(detail)
        if value is None:
            assert set(outcome) == {"ErrorCode", "ErrorMessage"}
            missing = detail is None  # EventBridge: "Detail is a required argument."
            code = "InvalidArgument" if missing else "MalformedDetail"
            assert outcome["ErrorCode"] == code, (detail, outcome)
        else:
            assert set(outcome) == {"EventId"}, (detail, outcome)
            expected[outcome["EventId"]] = value
    assert result["FailedEntryCount"] == len(details) - len(expected)
    assert by_id([json.loads(body) for body in archived_bodies(state)]) == expected
    assert by_id(await queued(state, clock)) == expected
    assert by_id(stored(state, "SELECT event FROM pending_deliveries")) == expected
    second = await fuzz_pipeline(state, clock, fail=False)
    async with second:
        await clock.advance(600, quiet=second.wait_until_idle)
    delivered = [r.payload for r in recorder(second, "flaky").received]
    assert len(delivered) == len(expected)
    assert by_id(delivered) == expected


def stored(state: Path, query: str) -> list[Any]:
    with sqlite3.connect(state) as db:
        return [json.loads(row[0]) for row in db.execute(query)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(DETAILS, min_size=1, max_size=5))
def test_every_accepted_entry_is_archived_queued_and_retried_as_it_was(details: list[Any]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(put_stop_restart(Path(directory) / "state.db", details))
