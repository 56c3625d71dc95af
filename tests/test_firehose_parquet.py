"""Record format conversion to Parquet: objects written by a delivery stream
read back with pyarrow; the OpenX JSON SerDe's rules; records the schema
cannot take in the error output; configuration problems located; a clear
refusal without pyarrow."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from plugins.firehose.parquet import BadValue, parse_conversion, parse_type, row_of
from plugins.firehose.spec import SpecError, parse_destination

from .test_firehose_delivery import START, Harness, destination

pq = pytest.importorskip("pyarrow.parquet")

COLUMNS = [
    {"Name": "customer", "Type": "string"},
    {"Name": "Views", "Type": "int"},
    {"Name": "price", "Type": "decimal(10,2)"},
    {"Name": "bot", "Type": "boolean"},
    {"Name": "seen", "Type": "timestamp"},
    {"Name": "tags", "Type": "array<string>"},
    {"Name": "device", "Type": "struct<kind:string,width:int>"},
    {"Name": "page_url", "Type": "string"},
]


def conversion(**serde: Any) -> dict[str, Any]:
    return {
        "Enabled": True,
        "SchemaConfiguration": {"Columns": COLUMNS},
        "InputFormatConfiguration": {"Deserializer": {"OpenXJsonSerDe": serde}},
        "OutputFormatConfiguration": {"Serializer": {"ParquetSerDe": {}}},
    }


def parquet_destination(**serde: Any) -> dict[str, Any]:
    return destination(
        Prefix="views/",
        BufferingHints={"IntervalInSeconds": 60, "SizeInMBs": 1},
        DataFormatConversionConfiguration=conversion(**serde),
    )


def files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


async def test_records_become_a_parquet_file_read_back_with_pyarrow(
    state_location: str, tmp_path: Path
) -> None:
    harness = Harness(
        state_location, tmp_path, parquet_destination(ColumnToJsonKeyMappings={"page_url": "url"})
    )
    stream = await harness.start()
    try:
        records = [
            {
                "CUSTOMER": "acme",  # case-insensitive keys
                "views": "3",  # a number as text: still an int
                "price": 9.5,
                "bot": False,
                "seen": "2023-11-14 22:13:20.250",
                "tags": ["a", "b"],
                "Device": {"Kind": "phone", "width": 390},
                "url": "/home",
                "extra": "ignored",
            },
            {"customer": "globex", "views": 7},  # missing fields are null
        ]
        await stream.put([json.dumps(r).encode() for r in records])
        await harness.advance(60)
        found = files(tmp_path / "out" / "lake")
        (key,) = found
        assert key.startswith("views/2023/11/14/22/clicks-1-") and key.endswith(".parquet"), key
        table = pq.read_table(found[key])
        assert table.column_names == [c["Name"].lower() for c in COLUMNS]
        rows = table.to_pylist()
        assert rows[0]["customer"] == "acme" and rows[0]["views"] == 3
        assert str(rows[0]["price"]) == "9.50" and rows[0]["bot"] is False
        assert rows[0]["seen"] == dt.datetime(2023, 11, 14, 22, 13, 20, 250000)
        assert rows[0]["tags"] == ["a", "b"]
        assert rows[0]["device"] == {"kind": "phone", "width": 390}
        assert rows[0]["page_url"] == "/home"
        assert rows[1] == {
            "customer": "globex",
            "views": 7,
            "price": None,
            "bot": None,
            "seen": None,
            "tags": None,
            "device": None,
            "page_url": None,
        }
        metadata = pq.ParquetFile(found[key]).metadata
        assert metadata.row_group(0).column(0).compression == "SNAPPY"  # AWS's default
        assert str(table.schema.field("views").type) == "int32"
    finally:
        await harness.stop()


async def test_records_the_schema_cannot_take_go_to_the_error_output(
    state_location: str, tmp_path: Path
) -> None:
    config = parquet_destination()
    config["DataFormatConversionConfiguration"]["OutputFormatConfiguration"]["Serializer"][
        "ParquetSerDe"
    ] = {"Compression": "GZIP"}
    harness = Harness(state_location, tmp_path, config)
    stream = await harness.start()
    try:
        bad = b'{"customer": "x", "views": "many"}'
        await stream.put([b'{"customer": "ok", "views": 1}', bad, b"not json"])
        await harness.advance(60)
        await harness.advance(60)  # the error output's own buffer
        found = files(tmp_path / "out" / "lake")
        (converted,) = [k for k in found if k.endswith(".parquet")]
        table = pq.read_table(found[converted])
        assert table.column("customer").to_pylist() == ["ok"]
        assert pq.ParquetFile(found[converted]).metadata.row_group(0).column(0).compression == (
            "GZIP"
        )
        (errors,) = [k for k in found if k.startswith("views/format-conversion-failed/")]
        lines = [json.loads(line) for line in found[errors].read_bytes().splitlines()]
        assert [base64.b64decode(e["rawData"]) for e in lines] == [bad, b"not json"]
        assert "column views" in lines[0]["errorMessage"]
        assert {e["errorCode"] for e in lines} == {"DataFormatConversion.MalformedData"}
        assert lines[0]["arrivalTimestamp"] == int(START * 1000)
        assert await stream.store.buffered("clicks") == (0, 0)
    finally:
        await harness.stop()


async def test_one_flush_writes_the_records_and_the_error_output_they_made(
    state_location: str, tmp_path: Path
) -> None:
    harness = Harness(state_location, tmp_path, parquet_destination())
    stream = await harness.start()
    try:
        await stream.put([b'{"customer": "ok", "views": 1}', b"not json"])
        await asyncio.wait_for(stream.flush(), 30)  # no time passes on the clock
        found = files(tmp_path / "out" / "lake")
        assert len([k for k in found if k.endswith(".parquet")]) == 1, list(found)
        (errors,) = [k for k in found if k.startswith("views/format-conversion-failed/")]
        (line,) = found[errors].read_bytes().splitlines()
        assert base64.b64decode(json.loads(line)["rawData"]) == b"not json"
        assert await stream.store.buffered("clicks") == (0, 0)
    finally:
        await harness.stop()


async def test_no_object_when_no_record_converts(state_location: str, tmp_path: Path) -> None:
    harness = Harness(state_location, tmp_path, parquet_destination())
    stream = await harness.start()
    try:
        await stream.put([b"[1, 2]"])
        await harness.advance(120)
        keys = list(files(tmp_path / "out" / "lake"))
        assert len(keys) == 1 and keys[0].startswith("views/format-conversion-failed/"), keys
    finally:
        await harness.stop()


def test_the_openx_serdes_options() -> None:
    insensitive = parse_conversion(conversion())
    assert row_of(b'{"Customer": 12, "VIEWS": 2.0}', insensitive)[:2] == ["12", 2]
    sensitive = parse_conversion(conversion(CaseInsensitive=False))
    assert row_of(b'{"Customer": "a", "customer": "b"}', sensitive)[0] == "b"
    dots = parse_conversion(conversion(ConvertDotsInJsonKeysToUnderscores=True))
    assert row_of(b'{"page.url": "/x"}', dots)[-1] == "/x"
    with pytest.raises(BadValue, match="column views"):
        row_of(b'{"views": 3000000000}', insensitive)  # out of an int's range
    with pytest.raises(BadValue, match="not a JSON object"):
        row_of(b"[]", insensitive)


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        (
            {"SchemaConfiguration": {"DatabaseName": "db", "TableName": "t"}},
            ("DataFormatConversionConfiguration", "SchemaConfiguration"),
            "no AWS Glue",
        ),
        (
            {"SchemaConfiguration": {"Columns": [{"Name": "a", "Type": "array<int"}]}},
            ("DataFormatConversionConfiguration", "SchemaConfiguration", "Columns", 0, "Type"),
            "expected >",
        ),
        (
            {"OutputFormatConfiguration": {"Serializer": {"OrcSerDe": {}}}},
            (
                "DataFormatConversionConfiguration",
                "OutputFormatConfiguration",
                "Serializer",
                "OrcSerDe",
            ),
            "ORC",
        ),
        (
            {"InputFormatConfiguration": {"Deserializer": {"HiveJsonSerDe": {}}}},
            (
                "DataFormatConversionConfiguration",
                "InputFormatConfiguration",
                "Deserializer",
                "HiveJsonSerDe",
            ),
            "OpenXJsonSerDe",
        ),
    ],
)
def test_conversion_problems_name_their_place(
    change: dict[str, Any], path: tuple[Any, ...], words: str
) -> None:
    config = destination(DataFormatConversionConfiguration={**conversion(), **change})
    with pytest.raises(SpecError) as caught:
        parse_destination(config)
    assert caught.value.path == path and words in caught.value.message


def test_compression_outside_parquet_is_refused() -> None:
    config = parquet_destination()
    config["CompressionFormat"] = "GZIP"
    with pytest.raises(SpecError) as caught:
        parse_destination(config)
    assert caught.value.path == ("CompressionFormat",)


def test_without_pyarrow_the_refusal_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(SpecError) as caught:
        parse_destination(parquet_destination())
    assert "pipelines[parquet]" in caught.value.message
    assert caught.value.path[:2] == (
        "DataFormatConversionConfiguration",
        "OutputFormatConfiguration",
    )


def test_hive_types_parse() -> None:
    kind = parse_type("map<string, array<struct<a:bigint,b:decimal(5,1)>>>")
    assert kind.kind == "map" and kind.items[1].items[0].names == ("a", "b")
    with pytest.raises(ValueError, match="unknown type"):
        parse_type("number")
