"""The event envelope and PutEvents entry validation."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from pipelines.errors import EventValidationError
from pipelines.event import (
    DEFAULT_MAX_ENTRY_SIZE,
    EntryLimits,
    ParsedDetail,
    entry_size,
    format_time,
    make_event,
    parse_time,
    validate_entries,
    validate_entry,
)

NOW = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)
GOOD = {"Source": "orders", "DetailType": "Order Placed", "Detail": '{"total": 5}'}


def test_valid_entry_becomes_an_eventbridge_event() -> None:
    event = validate_entry({**GOOD, "Resources": ["arn:x"]}, now=NOW)
    assert set(event) == {
        "version",
        "id",
        "detail-type",
        "source",
        "account",
        "time",
        "region",
        "resources",
        "detail",
    }
    assert event["version"] == "0"
    assert uuid.UUID(event["id"]).version == 4
    assert event["time"] == "2024-05-01T10:00:00Z"
    assert event["detail"] == {"total": 5}
    assert event["resources"] == ["arn:x"]
    assert (event["source"], event["detail-type"]) == ("orders", "Order Placed")


def test_time_is_rfc3339_utc_and_taken_from_the_entry() -> None:
    offset = datetime(2024, 5, 1, 12, 30, 15, 999, tzinfo=timezone(timedelta(hours=2)))
    assert validate_entry({**GOOD, "Time": offset}, now=NOW)["time"] == "2024-05-01T10:30:15Z"
    assert (
        validate_entry({**GOOD, "Time": "2024-05-01T10:30:15+02:00"})["time"]
        == "2024-05-01T08:30:15Z"
    )
    assert validate_entry({**GOOD, "Time": 0})["time"] == "1970-01-01T00:00:00Z"
    assert parse_time("2024-05-01T10:00:00Z") == NOW
    with pytest.raises(ValueError):
        format_time(datetime(2024, 1, 1))  # naive


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        (
            {"Source": None},
            "InvalidArgument",
            "Parameter Source is not valid. Reason: Source is a required argument.",
        ),
        (
            {"DetailType": ""},
            "InvalidArgument",
            "Parameter DetailType is not valid. Reason: DetailType is a required argument.",
        ),
        (
            {"Detail": None},
            "InvalidArgument",
            "Parameter Detail is not valid. Reason: Detail is a required argument.",
        ),
        ({"Detail": "[]"}, "MalformedDetail", "Detail is malformed."),
        ({"Detail": "{{}"}, "MalformedDetail", "Detail is malformed."),
        ({"Detail": '"text"'}, "MalformedDetail", "Detail is malformed."),
        ({"DetailType": "x" * 129}, "InvalidArgument", "DetailType is longer than 128 characters."),
        ({"Resources": "arn"}, "InvalidArgument", "Resources must be a list of strings."),
        (
            {"Resources": ["a" * 2049]},
            "InvalidArgument",
            "Resources[0] is longer than 2048 characters.",
        ),
        ({"Time": "yesterday"}, "InvalidArgument", "Parameter Time is not valid."),
        ({"EventBusName": "bad name!"}, "InvalidArgument", "is not an event bus name or ARN"),
        ({"Colour": "red"}, "InvalidArgument", "Unknown field 'Colour'"),
    ],
)
def test_bad_entries_get_eventbridge_codes(
    change: dict[str, object], code: str, message: str
) -> None:
    entry = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(EventValidationError) as caught:
        validate_entry(entry, index=3)
    assert caught.value.code == code
    assert message in caught.value.message
    assert str(caught.value).startswith("entry 3: ")


def test_size_is_computed_as_eventbridge_does() -> None:
    entry = {
        "Source": "é",
        "DetailType": "t",
        "Detail": '{"a":1}',
        "Resources": ["r1", "r2"],
        "Time": NOW,
    }
    assert entry_size(entry) == 14 + 2 + 1 + 7 + 2 + 2
    assert entry_size({k: v for k, v in entry.items() if k != "Time"}) == 14


def test_size_limit_is_configurable_and_defaults_to_one_mebibyte() -> None:
    assert DEFAULT_MAX_ENTRY_SIZE == 1_048_576
    detail = json.dumps({"blob": "x" * 100})
    entry = {**GOOD, "Detail": detail}
    size = entry_size(entry)
    validate_entry(entry, limits=EntryLimits(max_entry_size=size))
    with pytest.raises(EventValidationError, match="over the limit"):
        validate_entry(entry, limits=EntryLimits(max_entry_size=size - 1))


def test_nesting_depth_is_limited() -> None:
    deep = '{"a":' * 30 + "1" + "}" * 30
    validate_entry({**GOOD, "Detail": deep}, limits=EntryLimits(max_depth=30))
    with pytest.raises(EventValidationError, match="deeper than 29"):
        validate_entry({**GOOD, "Detail": deep}, limits=EntryLimits(max_depth=29))


def test_a_bad_entry_never_fails_the_others() -> None:
    results = validate_entries([GOOD, {**GOOD, "Detail": "nope"}, {"Source": "x"}, GOOD], now=NOW)
    assert [r.error_code for r in results] == [None, "MalformedDetail", "InvalidArgument", None]
    assert (
        results[0].event_id and results[3].event_id and results[0].event_id != results[3].event_id
    )
    assert results[1].as_dict() == {
        "ErrorCode": "MalformedDetail",
        "ErrorMessage": "Detail is malformed.",
    }
    assert results[0].as_dict() == {"EventId": results[0].event_id}


def test_detail_may_be_given_as_a_mapping() -> None:
    event = validate_entry({**GOOD, "Detail": {"n": 1}})
    assert event["detail"] == {"n": 1}
    assert make_event("s", "t")["detail"] == {}


# -- the usual shape's one-pass path and the careful path agree ---------------------
# An entry as SDKs send it (a dict of str) takes the one-pass path; the same
# entry behind a read-only Mapping takes the careful path. Both must give the
# same event, or the same error, word for word.

USUAL = [
    GOOD,
    {**GOOD, "Resources": ["arn:aws:shop:eu-west-1:1:order/1", "r2"]},
    {**GOOD, "EventBusName": "orders"},
    {**GOOD, "EventBusName": "arn:aws:events:eu-west-1:123456789012:event-bus/orders"},
    {**GOOD, "Detail": '{"a": {"b": [1, 2.5, "x", null, true]}, "ü": "é€😀"}'},
    {**GOOD, "Source": "ünïcode", "DetailType": "τύπος"},
    {**GOOD, "Detail": json.dumps({"n": 2**63 - 1, "m": -(2**63), "big": 123456789012345678})},
    {**GOOD, "Resources": []},
    {**GOOD, "Detail": '{"s": "\\ud800"}'},
]
REFUSED = [
    {**GOOD, "Source": ""},
    {**GOOD, "Source": 5},
    {**GOOD, "DetailType": "x" * 129},
    {**GOOD, "Detail": "[1]"},
    {**GOOD, "Detail": "{not json"},
    {**GOOD, "Detail": '{"n": 9223372036854775808}'},
    {**GOOD, "Detail": '{"n": 1e400}'},
    {**GOOD, "Detail": '{"s": "\ud800"}'},
    {**GOOD, "Detail": "[" * 300 + "]" * 300},
    {**GOOD, "Detail": '{"a": ' * 254 + "1" + "}" * 254},
    {**GOOD, "Resources": ["ok", 5]},
    {**GOOD, "Resources": ["r" * 2049]},
    {**GOOD, "Resources": "arn:x"},
    {**GOOD, "EventBusName": ""},
    {**GOOD, "EventBusName": "no spaces"},
    {**GOOD, "TraceHeader": ""},
    {**GOOD, "Detail": json.dumps({"pad": "x" * 2000})},
    {**GOOD, "Extra": 1},
]


def _without_id(event: dict[str, object]) -> dict[str, object]:
    return {key: value for key, value in event.items() if key != "id"}


@pytest.mark.parametrize("entry", USUAL)
def test_the_usual_shape_builds_the_event_the_careful_path_builds(entry: dict[str, object]) -> None:
    from types import MappingProxyType

    quick = validate_entry(entry, now=NOW)
    careful = validate_entry(MappingProxyType(entry), now=NOW)
    assert _without_id(quick) == _without_id(careful)
    assert quick["id"] != careful["id"]
    assert json.loads(json.dumps(quick["detail"])) == quick["detail"]


@pytest.mark.parametrize("entry", REFUSED)
def test_an_entry_refused_is_refused_alike_whichever_path_it_takes(
    entry: dict[str, object],
) -> None:
    from types import MappingProxyType

    limits = EntryLimits(max_entry_size=1024)
    with pytest.raises(EventValidationError) as quick:
        validate_entry(entry, index=3, limits=limits, now=NOW)
    with pytest.raises(EventValidationError) as careful:
        validate_entry(MappingProxyType(entry), index=3, limits=limits, now=NOW)
    assert (quick.value.code, quick.value.message, quick.value.index) == (
        careful.value.code,
        careful.value.message,
        careful.value.index,
    )


def test_the_event_does_not_share_the_callers_resources_list() -> None:
    resources = ["arn:a"]
    event = validate_entry({**GOOD, "Resources": resources}, now=NOW)
    resources.append("arn:b")
    assert event["resources"] == ["arn:a"]


def test_a_lone_surrogate_escape_goes_the_careful_way_and_is_kept() -> None:
    event = validate_entry({**GOOD, "Detail": '{"s": "a\\ud800b"}'}, now=NOW)
    assert event["detail"] == {"s": "a\ud800b"}


# -- a Detail that carries its parsed object (ParsedDetail) --------------------------


def test_a_parsed_detail_becomes_the_events_detail_without_being_read_again() -> None:
    value = {"a": {"b": [1, 2.5, "x", None, True]}, "ü": "é€😀"}
    text = ParsedDetail.of(value)
    assert type(text) is ParsedDetail and json.loads(text) == value
    event = validate_entry({**GOOD, "Detail": text}, now=NOW)
    assert event["detail"] is value  # taken, not parsed again
    plain = validate_entry({**GOOD, "Detail": str(text)}, now=NOW)
    assert _without_id(plain) == _without_id(event)


@pytest.mark.parametrize(
    "value",
    [
        {"n": 9223372036854775808},  # beyond 64 bits (orjson does not write it: a plain text)
        {"pad": "x" * 2000},  # over the entry limit below
        {"s": "a\ud800b"},  # a lone surrogate (dump_json's slow way: a plain text)
        {"a": {"a": {"a": {"a": 1}}}},  # deeper than the limit below
    ],
)
def test_a_parsed_detail_is_checked_as_its_text_would_be(value: dict[str, object]) -> None:
    limits = EntryLimits(max_entry_size=1024, max_depth=3)
    outcomes: list[object] = []
    text = ParsedDetail.of(value)
    for detail in (text, str(text)):
        try:
            event = validate_entry({**GOOD, "Detail": detail}, limits=limits, now=NOW)
        except EventValidationError as exc:
            outcomes.append((exc.code, exc.message))
        else:
            outcomes.append(_without_id(event))
    assert outcomes[0] == outcomes[1]
    if "s" not in value:  # each of the others is refused
        assert isinstance(outcomes[0], tuple)
