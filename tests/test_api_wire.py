"""The endpoint's request reader: the reader compiled per shape answers as the
walk does (``wire.walk_input``, the reference that words AWS's refusals),
whatever the request holds; and answers are written by the output shape."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import re
from typing import Any

import pytest
from botocore.model import ListShape, MapShape, Shape, StructureShape
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.api.errors import ApiError
from pipelines.api.models import service_model
from pipelines.api.wire import check_input, walk_input, write_output

#: Operations whose input shapes hold every kind the reader knows: lengths,
#: ranges, enums, patterns, blobs, timestamps, maps, nested lists.
OPERATIONS = [
    ("kinesis", "PutRecords"),
    ("kinesis", "GetShardIterator"),
    ("events", "PutEvents"),
    ("events", "PutTargets"),
    ("cloudwatch", "PutMetricData"),
    ("cloudwatch", "PutMetricAlarm"),
    ("logs", "PutLogEvents"),
    ("sqs", "SendMessageBatch"),
    ("sqs", "ReceiveMessage"),
]

#: What a client may send where the shape wants something else.
_JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.just([]),
    st.just({}),
)


def _mostly(valid: st.SearchStrategy[Any], edges: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` 9 times in 10, else ``edges`` (just out of bounds, or in)."""
    return st.integers(0, 9).flatmap(lambda n: edges if n == 0 else valid)


def _numbers(shape: Shape, whole: bool) -> st.SearchStrategy[Any]:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    edges = [n for bound in (low, high) if bound is not None for n in (bound - 1, bound, bound + 1)]
    floats = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
    valid = st.integers(
        int(low) if low is not None else -(10**6), int(high) if high is not None else 10**6
    )
    # Off the bounds or not whole more often than other values: numbers are fewer.
    return st.one_of(
        valid,
        valid.map(float),
        st.sampled_from(edges or [0]),
        floats,
        st.sampled_from([edge + 0.5 for edge in edges or [0]]),
    )


def _strings(shape: Shape) -> st.SearchStrategy[Any]:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    edges: list[st.SearchStrategy[Any]] = [st.text(max_size=12)]
    if high is not None and high < 300:
        edges.append(st.integers(max(high - 1, 0), high + 1).map(lambda n: "a" * n))
    if low is not None:
        edges.append(st.integers(max(low - 1, 0), low + 1).map(lambda n: "1" * n))
    valid: st.SearchStrategy[Any] = st.text(min_size=low or 0, max_size=min(high or 12, 12))
    pattern = shape.metadata.get("pattern")
    if pattern is not None:
        with contextlib.suppress(re.error):  # Java's classes Python does not read
            valid = st.from_regex(re.compile(pattern), fullmatch=True)
    if shape.metadata.get("enum"):
        valid = st.sampled_from(shape.metadata["enum"])
    return _mostly(valid, st.one_of(edges))


def values(shape: Shape, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values for ``shape``: mostly of its kind (in and out of its bounds),
    sometimes of another."""
    kind = shape.type_name
    fitting: st.SearchStrategy[Any]
    if depth > 4:
        return _JUNK
    if kind == "structure":
        assert isinstance(shape, StructureShape)
        members = {name: values(member, depth + 1) for name, member in shape.members.items()}
        fitting = st.fixed_dictionaries({}, optional=members)
        required = {name: members[name] for name in shape.required_members}
        others = {name: found for name, found in members.items() if name not in required}
        fitting = _mostly(st.fixed_dictionaries(required, optional=others), fitting)
    elif kind == "list":
        assert isinstance(shape, ListShape)
        low = shape.metadata.get("min") or 0
        items = values(shape.member, depth + 1)
        fitting = _mostly(st.lists(items, min_size=low, max_size=low + 3), st.lists(items))
    elif kind == "map":
        assert isinstance(shape, MapShape)
        fitting = st.dictionaries(_strings(shape.key), values(shape.value, depth + 1), max_size=3)
    elif kind == "string":
        fitting = _strings(shape)
    elif kind in ("integer", "long"):
        fitting = _numbers(shape, whole=True)
    elif kind in ("float", "double"):
        fitting = _numbers(shape, whole=False)
    elif kind == "boolean":
        fitting = st.booleans()
    elif kind == "timestamp":
        fitting = st.one_of(
            st.integers(0, 2**31),
            st.floats(0, 2e9),
            st.just("2024-01-02T03:04:05Z"),
            st.just(dt.datetime(2024, 1, 2, tzinfo=dt.UTC)),
        )
    elif kind == "blob":
        fitting = _mostly(
            st.binary(max_size=6).map(lambda b: base64.b64encode(b).decode()),
            st.one_of(st.binary(max_size=6), st.just("not base64!")),
        )
    else:
        fitting = _JUNK
    # Mostly the shape's kind: a value of another kind refuses the whole request.
    return st.integers(0, 49).flatmap(lambda n: _JUNK if n == 0 else fitting)


def outcome(read: Any, shape: StructureShape, raw: Any, enums: bool) -> Any:
    try:
        return "read", read(shape, raw, validation_code="ValidationException", enums=enums)
    except ApiError as error:
        return "refused", error.code, error.message


@pytest.mark.parametrize(("service", "operation"), OPERATIONS)
@pytest.mark.parametrize("enums", [True, False])
def test_the_compiled_reader_answers_as_the_walk(service: str, operation: str, enums: bool) -> None:
    shape = service_model(service).operation_model(operation).input_shape
    assert shape is not None

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(values(shape))
    def agree(raw: Any) -> None:
        expected = outcome(walk_input, shape, raw, enums)
        assert outcome(check_input, shape, raw, enums) == expected
        if expected[0] == "read":  # the same types too (1.0 read as 1 where whole)
            found = check_input(shape, raw, enums=enums)
            assert repr(found) == repr(expected[1])

    agree()


def test_a_refusal_names_each_problem_as_aws_does() -> None:
    shape = service_model("kinesis").operation_model("PutRecords").input_shape
    assert shape is not None
    raw = {"StreamName": "bad name!", "Records": [{"Data": "", "PartitionKey": ""}]}
    with pytest.raises(ApiError) as refused:
        check_input(shape, raw)
    assert refused.value.code == "ValidationException"
    assert refused.value.message == (
        "2 validation errors detected: Value 'bad name!' at 'streamName' failed to satisfy"
        " constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+; Value ''"
        " at 'records.1.member.partitionKey' failed to satisfy constraint: Member must have"
        " length greater than or equal to 1"
    )


def test_answers_hold_the_output_shape_members_only() -> None:
    model = service_model("kinesis")
    shape = model.operation_model("GetRecords").output_shape
    answer = {
        "Records": [
            {
                "SequenceNumber": "1",
                "Data": b"\x00hi",
                "PartitionKey": "k",
                "ApproximateArrivalTimestamp": dt.datetime(2024, 1, 2, tzinfo=dt.UTC),
                "Extra": 1,
            },
            None,
        ],
        "MillisBehindLatest": 0,
        "NextShardIterator": None,
        "Unknown": "dropped",
    }
    assert write_output(shape, answer) == {
        "Records": [
            {
                "SequenceNumber": "1",
                "ApproximateArrivalTimestamp": 1704153600.0,
                "Data": "AGhp",
                "PartitionKey": "k",
            },
            None,
        ],
        "MillisBehindLatest": 0,
    }
    assert write_output(None, answer) == {}
    assert write_output(shape, None) is None
    assert write_output(shape, "not a mapping") == {}


def test_a_refused_list_holding_cbor_values_is_shown() -> None:
    """CBOR brings byte strings and integer keys, which JSON does not spell:
    a refusal that shows such a value words it, and is no server error."""
    shape = service_model("kinesis").operation_model("PutRecords").input_shape
    assert shape is not None
    record = {"Data": b"\x00", "PartitionKey": "k", 7: "?"}
    with pytest.raises(ApiError) as refused:
        check_input(shape, {"Records": [record] * 501})
    assert refused.value.code == "ValidationException"
    assert """Value '[{"Data":"AA==","PartitionKey":"k","7":"?"},""" in refused.value.message
    with pytest.raises(ApiError) as refused:  # shown as Python writes it, then refused
        check_input(shape, {"Records": [record] * 500 + [2**70]})
    assert refused.value.code == "SerializationException"
