"""Prefixes, Java time patterns, AWS's prefix rules, the destination's
checks, and MetadataExtraction's fast path held to libjq."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugins.firehose.prefixes import PrefixError, check_prefixes, compile_pattern, parse_prefix
from plugins.firehose.query import MetadataQuery, QueryFailed
from plugins.firehose.spec import SpecError, parse_destination

WHEN = datetime(2018, 8, 27, 10, 30, 5, 123000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("yyyy/MM/dd/HH/", "2018/08/27/10/"),
        ("yy-M-d H:m:s", "18-8-27 10:30:5"),
        ("'year='yyyy'/month='MM", "year=2018/month=08"),
        ("MMM MMMM EEE EEEE a", "Aug August Mon Monday AM"),
        ("D SSS hh", "239 123 10"),
        ("'it''s'", "it's"),
    ],
)
def test_java_patterns(pattern: str, expected: str) -> None:
    assert compile_pattern(pattern)(WHEN) == expected


@pytest.mark.parametrize("pattern", ["yyyy-qq", "[yyyy]", "'open"])
def test_java_patterns_refused(pattern: str) -> None:
    with pytest.raises(ValueError):
        compile_pattern(pattern)


def test_the_guide_examples_evaluate_as_documented() -> None:
    # From the developer guide's table "Prefix and ErrorOutputPrefix examples".
    prefix = parse_prefix(
        "Prefix",
        "myPrefix/year=!{timestamp:yyyy}/month=!{timestamp:MM}/day=!{timestamp:dd}/hour=!{timestamp:HH}/",
    )
    assert (
        prefix.render(datetime(2018, 7, 6, 23, tzinfo=UTC))
        == "myPrefix/year=2018/month=07/day=06/hour=23/"
    )
    error = parse_prefix(
        "ErrorOutputPrefix",
        "myErrorPrefix/!{timestamp:'year='yyyy'/month='MM'/day='dd'/hour='HH}/!{firehose:error-output-type}",
    )
    rendered = error.render(datetime(2018, 7, 6, 23, tzinfo=UTC), error_type="processing-failed")
    assert rendered == "myErrorPrefix/year=2018/month=07/day=06/hour=23/processing-failed"
    random = parse_prefix("Prefix", "rand=!{firehose:random-string}/").render(WHEN)
    assert len(random) == len("rand=/") + 11


def test_a_prefix_without_a_timestamp_gets_the_hour_appended() -> None:
    assert parse_prefix("Prefix", "logs/").with_default_time().render(WHEN) == "logs/2018/08/27/10/"
    assert parse_prefix("Prefix", "").with_default_time().render(WHEN) == "2018/08/27/10/"


def test_unknown_namespaces_and_stray_openers_are_refused() -> None:
    with pytest.raises(PrefixError, match="unknown namespace 'time'"):
        parse_prefix("Prefix", "x/!{time:yyyy}/")
    with pytest.raises(PrefixError, match="unknown firehose value 'nope'"):
        parse_prefix("Prefix", "!{firehose:nope}")
    with pytest.raises(PrefixError, match="may appear only"):
        parse_prefix("Prefix", "x/!{timestamp:yyyy")
    with pytest.raises(PrefixError, match="not a valid timestamp"):
        parse_prefix("Prefix", "!{timestamp:qq}")


def rules(prefix: str, error: str | None, **flags: bool) -> None:
    check_prefixes(
        parse_prefix("Prefix", prefix),
        None if error is None else parse_prefix("ErrorOutputPrefix", error),
        partitioning=flags.get("partitioning", False),
        query=flags.get("query", False),
        lambda_keys=flags.get("lambda_keys", False),
    )


def test_aws_prefix_rules() -> None:
    rules("plain/", None)  # no expressions: no ErrorOutputPrefix needed
    with pytest.raises(PrefixError, match="cannot be null when Prefix contains expressions"):
        rules("!{timestamp:yyyy}/", None)
    with pytest.raises(PrefixError, match=re.escape("must contain !{firehose:error-output-type}")):
        rules("!{timestamp:yyyy}/", "errors/!{timestamp:yyyy}/")
    with pytest.raises(
        PrefixError, match=re.escape("Prefix cannot contain !{firehose:error-output-type}")
    ):
        rules("!{firehose:error-output-type}/", "e/!{firehose:error-output-type}")
    with pytest.raises(PrefixError, match="dynamic partitioning is not enabled"):
        rules("!{partitionKeyFromQuery:k}/", "e/!{firehose:error-output-type}")
    with pytest.raises(PrefixError, match="at least one"):
        rules("plain/", "e/!{firehose:error-output-type}", partitioning=True, query=True)
    with pytest.raises(PrefixError, match="no MetadataExtraction processor"):
        rules("!{partitionKeyFromQuery:k}/", "e/!{firehose:error-output-type}", partitioning=True)
    with pytest.raises(PrefixError, match="no Lambda processor"):
        rules("!{partitionKeyFromLambda:k}/", "e/!{firehose:error-output-type}", partitioning=True)
    rules(
        "!{partitionKeyFromLambda:k}/",
        "e/!{firehose:error-output-type}",
        partitioning=True,
        lambda_keys=True,
    )


def base(**more: Any) -> dict[str, Any]:
    return {"BucketARN": "arn:aws:s3:::lake", **more}


@pytest.mark.parametrize(
    ("config", "path", "words"),
    [
        (
            base(BufferingHints={"SizeInMBs": 0}),
            ("BufferingHints", "SizeInMBs"),
            "between 1 and 128",
        ),
        (
            base(BufferingHints={"IntervalInSeconds": 901}),
            ("BufferingHints", "IntervalInSeconds"),
            "between 0 and 900",
        ),
        ({"BucketARN": "lake"}, ("BucketARN",), "not an S3 bucket's ARN"),
        (base(CompressionFormat="BZIP2"), ("CompressionFormat",), "is not one of"),
        (base(FileExtension="gz"), ("FileExtension",), "not a file extension"),
        (base(CustomTimeZone="Mars/Olympus"), ("CustomTimeZone",), "unknown"),
        (base(CustomTimeZone="Europe"), ("CustomTimeZone",), "unknown"),
        (
            base(BufferingHints={"SizeInMBs": float("inf")}),
            ("BufferingHints", "SizeInMBs"),
            "between 1 and 128",
        ),
        (
            base(BufferingHints={"SizeInMBs": float("nan")}),
            ("BufferingHints", "SizeInMBs"),
            "must be a number",
        ),
        (
            base(BufferingHints={"IntervalInSeconds": 10**400}),
            ("BufferingHints", "IntervalInSeconds"),
            "between 0 and 900",
        ),
        (
            base(ProcessingConfiguration={"Enabled": True, "Processors": 5}),
            ("ProcessingConfiguration", "Processors"),
            "must be a list",
        ),
        (
            base(
                ProcessingConfiguration={
                    "Enabled": True,
                    "Processors": [{"Type": "Lambda", "Parameters": 5}],
                }
            ),
            ("ProcessingConfiguration", "Processors", 0, "Parameters"),
            "must be a list",
        ),
        (
            base(ProcessingConfiguration={"Enabled": "false", "Processors": []}),
            ("ProcessingConfiguration", "Enabled"),
            "must be true or false",
        ),
        (
            base(DynamicPartitioningConfiguration={"Enabled": 1}),
            ("DynamicPartitioningConfiguration", "Enabled"),
            "must be true or false",
        ),
        (
            base(DataFormatConversionConfiguration={"Enabled": "no"}),
            ("DataFormatConversionConfiguration", "Enabled"),
            "must be true or false",
        ),
        (base(Prefix={"a": 1}), ("Prefix",), "must be a string"),
        (base(ErrorOutputPrefix=["e/"]), ("ErrorOutputPrefix",), "must be a string"),
        (base(CustomTimeZone="x" * 300), ("CustomTimeZone",), "unknown"),
        (
            base(
                ProcessingConfiguration={"Enabled": True, "Processors": [{"Type": "Decompression"}]}
            ),
            ("ProcessingConfiguration", "Processors", 0, "Type"),
            "not supported yet",
        ),
        (
            base(
                Prefix="!{partitionKeyFromQuery:k}/",
                ErrorOutputPrefix="e/!{firehose:error-output-type}",
                DynamicPartitioningConfiguration={"Enabled": True},
                ProcessingConfiguration={
                    "Enabled": True,
                    "Processors": [
                        {
                            "Type": "MetadataExtraction",
                            "Parameters": [
                                {
                                    "ParameterName": "MetadataExtractionQuery",
                                    "ParameterValue": "{k: .a |}",
                                }
                            ],
                        }
                    ],
                },
            ),
            ("ProcessingConfiguration", "Processors", 0, "Parameters"),
            "does not compile",
        ),
        (
            base(
                Prefix="!{partitionKeyFromLambda:k}/",
                ErrorOutputPrefix="e/!{firehose:error-output-type}",
                DynamicPartitioningConfiguration={"Enabled": True},
                BufferingHints={"IntervalInSeconds": 0},
            ),
            ("BufferingHints", "IntervalInSeconds"),
            "zero buffering",
        ),
        (
            base(
                ProcessingConfiguration={
                    "Enabled": True,
                    "Processors": [{"Type": "Lambda", "Parameters": []}],
                }
            ),
            ("ProcessingConfiguration", "Processors", 0, "Parameters"),
            "needs the parameter LambdaArn",
        ),
        (
            base(DataFormatConversionConfiguration={"Enabled": True}),
            ("DataFormatConversionConfiguration", "OutputFormatConfiguration", "Serializer"),
            "ParquetSerDe",
        ),
    ],
)
def test_destination_problems_name_their_place(
    config: dict[str, Any], path: tuple[Any, ...], words: str
) -> None:
    with pytest.raises(SpecError) as caught:
        parse_destination(config)
    assert caught.value.path == path
    assert words in caught.value.message


SIMPLE = MetadataQuery("{customer: .customer, device: .type.device}")
ONE = MetadataQuery("{customer: .customer}")
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
)
records = st.fixed_dictionaries(
    {},
    optional={
        "customer": values,
        "type": st.one_of(values, st.fixed_dictionaries({}, optional={"device": values})),
    },
)


@settings(max_examples=300, deadline=None)
@given(records)
def test_the_fast_path_agrees_with_libjq(record: dict[str, Any]) -> None:
    data = json.dumps(record).encode()
    try:
        fast: Any = SIMPLE.keys(data)
    except QueryFailed:
        fast = "failed"
    try:
        slow: Any = SIMPLE.by_jq(data)
    except QueryFailed:
        slow = "failed"
    assert fast == slow
    # A put groups records by signature: the same keys, or the same failure.
    for query in (SIMPLE, ONE):
        try:
            signed: Any = query.keys_of(query.signature(data))
        except QueryFailed:
            signed = "failed"
        groups, failed = query.group([b"[]", data])
        assert failed[0][0] == 0
        grouped: Any = "failed" if failed[1:] else query.keys_of(next(iter(groups)))
        assert grouped == signed
        try:
            expected: Any = query.by_jq(data)
        except QueryFailed:
            expected = "failed"
        assert signed == expected


def test_signatures_stand_for_the_keys_whatever_the_path() -> None:
    general = MetadataQuery('{kind: (.kind // "none")}')  # libjq
    for query in (ONE, SIMPLE, general):
        for data in (b'{"customer": "a", "type": {"device": 3}, "kind": "x"}', b"{}"):
            try:
                keys: Any = query.keys(data)
            except QueryFailed:
                keys = "failed"
            try:
                signed: Any = query.keys_of(query.signature(data))
            except QueryFailed:
                signed = "failed"
            assert signed == keys
    assert ONE.signature(b'{"customer": "a"}') == ONE.signature(b'{"n": 1, "customer": "a"}')
    assert ONE.signature(b'{"customer": "a"}') != ONE.signature(b'{"customer": "b"}')
    with pytest.raises(QueryFailed, match="not valid JSON"):
        ONE.signature(b"{nope")
    with pytest.raises(QueryFailed, match="null"):
        ONE.signature(b'{"customer": null}')
    assert ONE.keys_of(ONE.signature(b'{"customer": 7}')) == {"customer": "7"}


def test_a_put_is_grouped_in_one_pass() -> None:
    records = [b'{"customer": "a"}', b"nope", b'{"customer": "b"}', b'{"customer": "a"}', b"{}"]
    two = MetadataQuery("{customer: .customer, again: .customer}")
    for query in (ONE, two, MetadataQuery("{customer: (.customer | ascii_downcase)}")):
        groups, failed = query.group(records)
        assert [query.keys_of(found)["customer"] for found in groups] == ["a", "b"]
        assert list(groups.values()) == [[0, 3], [2]]
        assert [index for index, _ in failed] == [1, 4]
        assert failed[0][1] == "the record is not valid JSON" or "parse error" in failed[0][1]


def test_a_query_that_is_not_plain_paths_goes_through_libjq() -> None:
    query = MetadataQuery('{year: .ts | strftime("%Y"), kind: (.kind // "none")}')
    assert query.keys(b'{"ts": 1565382027}') == {"year": "2019", "kind": "none"}
    with pytest.raises(QueryFailed):
        query.keys(b"[1, 2]")
