"""Record format conversion: JSON records into Parquet files (pyarrow).

AWS's DataFormatConversionConfiguration names a deserializer (OpenX JSON
SerDe here; the Hive JSON SerDe is refused by name), a serializer
(ParquetSerDe here; ORC is refused by name) and a schema, which AWS reads
from an AWS Glue table. There is no Glue here: the schema is given inline,
as ``SchemaConfiguration.Columns`` (this project's addition): a list of
``{Name, Type}`` with Glue's (Hive's) type names: ``string``, ``varchar(n)``,
``char(n)``, ``tinyint``, ``smallint``, ``int``/``integer``, ``bigint``,
``float``, ``double``, ``decimal(p,s)``, ``boolean``, ``timestamp``, ``date``,
``binary``, ``array<T>``, ``map<K,V>``, ``struct<name:T,...>``.

The OpenX JSON SerDe's rules, as AWS documents its options:
``CaseInsensitive`` (default true: JSON keys matched to the columns,
which Glue keeps in lower case, whatever their case),
``ConvertDotsInJsonKeysToUnderscores`` (default false), and
``ColumnToJsonKeyMappings`` (a column read from another key). A field the
record lacks is null; a field not in the schema is ignored. A value that
cannot be the column's type (text in an ``int`` column) fails the record:
it goes to the error output as ``format-conversion-failed``
(``DataFormatConversion.MalformedData``: our name, AWS documents the
output type, not the code).

ParquetSerDe: ``Compression`` UNCOMPRESSED, GZIP, SNAPPY (AWS's default),
``EnableDictionaryCompression`` (default false), ``PageSizeBytes`` (default
1 MiB), ``WriterVersion`` V1 (default) or V2, ``BlockSizeBytes`` (default
256 MiB; a row group is written when its records' JSON reaches it, or at
65,536 rows, which bounds memory). pyarrow is optional (the ``parquet``
extra): a configuration asking for conversion without it is refused,
naming the extra.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import decimal
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import orjson

ERROR_TYPE = "format-conversion-failed"
ERROR_CODE = "DataFormatConversion.MalformedData"
COMPRESSIONS = ("UNCOMPRESSED", "GZIP", "SNAPPY")
DEFAULT_BLOCK = 256 * 1024 * 1024
DEFAULT_PAGE = 1024 * 1024
MIN_BLOCK, MIN_PAGE = 64 * 1024 * 1024, 64 * 1024
ROW_GROUP_ROWS = 65_536
_INTS = {"tinyint": 8, "smallint": 16, "int": 32, "integer": 32, "bigint": 64}
_TIMESTAMP_TEXT = re.compile(
    r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})?$"
)

Path = tuple[str | int, ...]


class ConversionError(ValueError):
    """A conversion configuration that cannot be used: ``path`` leads to the value."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


class BadValue(ValueError):
    """A record's value that cannot be its column's type."""


# -- types -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Type:
    """A Hive type: ``kind`` and, for the nested ones, their parts."""

    kind: str
    items: tuple[Type, ...] = ()
    names: tuple[str, ...] = ()  # a struct's fields
    precision: int = 0
    scale: int = 0


class _TypeReader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = re.findall(r"[A-Za-z_][A-Za-z0-9_]*|\d+|[<>(),:]", text)
        joined = "".join(self.tokens)
        if joined != re.sub(r"\s+", "", text):
            raise ValueError(f"type {text!r} has characters a type cannot have")
        self.at = 0

    def peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token.lower() != expected):
            raise ValueError(
                f"type {self.text!r}: expected {expected or 'more'} at token {self.at + 1}"
            )
        self.at += 1
        return token

    def read(self) -> Type:
        name = self.take().lower()
        if name in ("string", "boolean", "float", "double", "timestamp", "date", "binary"):
            return Type(name)
        if name in _INTS:
            return Type("integer" if name == "int" else name)
        if name in ("varchar", "char"):
            self.take("(")
            self.take()
            self.take(")")
            return Type("string")
        if name == "decimal":
            precision, scale = 10, 0
            if self.peek() == "(":
                self.take("(")
                precision = int(self.take())
                if self.peek() == ",":
                    self.take(",")
                    scale = int(self.take())
                self.take(")")
            if not 1 <= precision <= 38 or scale > precision:
                raise ValueError(
                    f"type {self.text!r}: decimal({precision},{scale}) is out of range"
                )
            return Type("decimal", precision=precision, scale=scale)
        if name == "array":
            self.take("<")
            item = self.read()
            self.take(">")
            return Type("array", (item,))
        if name == "map":
            self.take("<")
            key = self.read()
            self.take(",")
            value = self.read()
            self.take(">")
            return Type("map", (key, value))
        if name == "struct":
            self.take("<")
            names: list[str] = []
            items: list[Type] = []
            while True:
                names.append(self.take().lower())
                self.take(":")
                items.append(self.read())
                if self.peek() == ",":
                    self.take(",")
                    continue
                self.take(">")
                return Type("struct", tuple(items), tuple(names))
        raise ValueError(f"type {self.text!r}: unknown type {name!r}")


def parse_type(text: str) -> Type:
    reader = _TypeReader(text)
    found = reader.read()
    if reader.peek() is not None:
        raise ValueError(f"type {text!r}: unexpected {reader.peek()!r} after the type")
    return found


def _arrow_type(kind: Type) -> Any:
    import pyarrow as pa

    simple = {
        "string": pa.string(),
        "boolean": pa.bool_(),
        "float": pa.float32(),
        "double": pa.float64(),
        "timestamp": pa.timestamp("ms"),
        "date": pa.date32(),
        "binary": pa.binary(),
        "tinyint": pa.int8(),
        "smallint": pa.int16(),
        "integer": pa.int32(),
        "bigint": pa.int64(),
    }
    if kind.kind in simple:
        return simple[kind.kind]
    if kind.kind == "decimal":
        return pa.decimal128(kind.precision, kind.scale)
    if kind.kind == "array":
        return pa.list_(_arrow_type(kind.items[0]))
    if kind.kind == "map":
        return pa.map_(_arrow_type(kind.items[0]), _arrow_type(kind.items[1]))
    return pa.struct(
        [pa.field(n, _arrow_type(t)) for n, t in zip(kind.names, kind.items, strict=True)]
    )


# -- configuration ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: Type
    key: str  # the JSON key it is read from (already folded when case-insensitive)


@dataclass(frozen=True, slots=True)
class ParquetConversion:
    columns: tuple[Column, ...]
    case_insensitive: bool = True
    dots_to_underscores: bool = False
    compression: str = "SNAPPY"
    dictionary: bool = False
    page_size: int = DEFAULT_PAGE
    block_size: int = DEFAULT_BLOCK
    version: str = "1.0"

    def schema(self) -> Any:
        import pyarrow as pa

        return pa.schema([pa.field(c.name, _arrow_type(c.type)) for c in self.columns])


def _mapping(value: Any, path: Path) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConversionError(path, f"{path[-1]} must be an object")
    return value


def _flag(value: Any, path: Path, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConversionError(path, f"{path[-1]} must be true or false")
    return value


def _size(value: Any, path: Path, default: int, low: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConversionError(path, f"{path[-1]} must be a whole number of at least {low}")
    return value


def require_pyarrow() -> None:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise ConversionError(
            ("OutputFormatConfiguration", "Serializer", "ParquetSerDe"),
            "record format conversion to Parquet needs pyarrow, which is not installed"
            " (pip install 'pipelines[parquet]')",
        ) from None


def parse_conversion(config: Mapping[str, Any]) -> ParquetConversion:
    """Check a DataFormatConversionConfiguration (enabled) and parse it."""
    output = _mapping(config.get("OutputFormatConfiguration"), ("OutputFormatConfiguration",))
    serializer = _mapping(output.get("Serializer"), ("OutputFormatConfiguration", "Serializer"))
    where: Path = ("OutputFormatConfiguration", "Serializer")
    if "OrcSerDe" in serializer:
        raise ConversionError((*where, "OrcSerDe"), "conversion to ORC is not supported")
    if "ParquetSerDe" not in serializer:
        raise ConversionError(where, "the Serializer must be ParquetSerDe")
    parquet = _mapping(serializer["ParquetSerDe"], (*where, "ParquetSerDe"))
    where = (*where, "ParquetSerDe")
    compression = parquet.get("Compression", "SNAPPY")
    if compression not in COMPRESSIONS:
        raise ConversionError(
            (*where, "Compression"), f"Compression must be one of {', '.join(COMPRESSIONS)}"
        )
    version = parquet.get("WriterVersion", "V1")
    if version not in ("V1", "V2"):
        raise ConversionError((*where, "WriterVersion"), "WriterVersion must be V1 or V2")
    inputs = _mapping(config.get("InputFormatConfiguration"), ("InputFormatConfiguration",))
    deserializer = _mapping(
        inputs.get("Deserializer"), ("InputFormatConfiguration", "Deserializer")
    )
    if "HiveJsonSerDe" in deserializer:
        raise ConversionError(
            ("InputFormatConfiguration", "Deserializer", "HiveJsonSerDe"),
            "the Hive JSON SerDe is not supported: use OpenXJsonSerDe",
        )
    openx = _mapping(
        deserializer.get("OpenXJsonSerDe"),
        ("InputFormatConfiguration", "Deserializer", "OpenXJsonSerDe"),
    )
    openx_path: Path = ("InputFormatConfiguration", "Deserializer", "OpenXJsonSerDe")
    insensitive = _flag(openx.get("CaseInsensitive"), (*openx_path, "CaseInsensitive"), True)
    dots = _flag(
        openx.get("ConvertDotsInJsonKeysToUnderscores"),
        (*openx_path, "ConvertDotsInJsonKeysToUnderscores"),
        False,
    )
    mappings = _mapping(
        openx.get("ColumnToJsonKeyMappings"), (*openx_path, "ColumnToJsonKeyMappings")
    )
    columns = _columns(config, mappings, insensitive)
    require_pyarrow()
    return ParquetConversion(
        columns=columns,
        case_insensitive=insensitive,
        dots_to_underscores=dots,
        compression=compression,
        dictionary=_flag(
            parquet.get("EnableDictionaryCompression"),
            (*where, "EnableDictionaryCompression"),
            False,
        ),
        page_size=_size(
            parquet.get("PageSizeBytes"), (*where, "PageSizeBytes"), DEFAULT_PAGE, MIN_PAGE
        ),
        block_size=_size(
            parquet.get("BlockSizeBytes"), (*where, "BlockSizeBytes"), DEFAULT_BLOCK, MIN_BLOCK
        ),
        version="1.0" if version == "V1" else "2.6",
    )


def _columns(
    config: Mapping[str, Any], mappings: Mapping[str, Any], insensitive: bool
) -> tuple[Column, ...]:
    schema = _mapping(config.get("SchemaConfiguration"), ("SchemaConfiguration",))
    given = schema.get("Columns")
    path: Path = ("SchemaConfiguration", "Columns")
    if given is None:
        raise ConversionError(
            ("SchemaConfiguration",),
            "the schema must be given inline as SchemaConfiguration.Columns"
            " ([{Name, Type}, ...]): there is no AWS Glue here to read a table from",
        )
    if not isinstance(given, list) or not given:
        raise ConversionError(path, "Columns must be a non-empty list of {Name, Type}")
    columns: list[Column] = []
    seen: set[str] = set()
    for index, item in enumerate(given):
        if not isinstance(item, Mapping):
            raise ConversionError((*path, index), "a column must be an object {Name, Type}")
        name, text = item.get("Name"), item.get("Type")
        if not isinstance(name, str) or not name:
            raise ConversionError((*path, index, "Name"), "a column needs a Name")
        if not isinstance(text, str):
            raise ConversionError((*path, index, "Type"), "a column needs a Type")
        name = name.lower()  # Glue keeps column names in lower case
        if name in seen:
            raise ConversionError((*path, index, "Name"), f"column {name!r} is given twice")
        seen.add(name)
        try:
            kind = parse_type(text)
        except ValueError as exc:
            raise ConversionError((*path, index, "Type"), str(exc)) from None
        key = mappings.get(name, name)
        if not isinstance(key, str):
            raise ConversionError(
                (
                    "InputFormatConfiguration",
                    "Deserializer",
                    "OpenXJsonSerDe",
                    "ColumnToJsonKeyMappings",
                    name,
                ),
                "a mapping's JSON key must be text",
            )
        columns.append(Column(name, kind, key.lower() if insensitive else key))
    for name in mappings:
        if name.lower() not in seen:
            raise ConversionError(
                (
                    "InputFormatConfiguration",
                    "Deserializer",
                    "OpenXJsonSerDe",
                    "ColumnToJsonKeyMappings",
                    name,
                ),
                f"{name!r} is not a column of the schema",
            )
    return tuple(columns)


# -- values ----------------------------------------------------------------------------


def _fold(value: Any, conversion: ParquetConversion) -> Any:
    """A JSON object's keys as the SerDe matches them (lower case, dots)."""
    if isinstance(value, dict):
        folded = {}
        for key, item in value.items():
            if conversion.dots_to_underscores:
                key = key.replace(".", "_")
            if conversion.case_insensitive:
                key = key.lower()
            folded[key] = item
        return folded
    return value


def convert(value: Any, kind: Type, conversion: ParquetConversion) -> Any:
    """A JSON value as a ``kind`` column's value (None stays None); ``BadValue``
    when it cannot be one."""
    if value is None:
        return None
    name = kind.kind
    if name == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        return orjson.dumps(value).decode()
    if name in ("tinyint", "smallint", "integer", "bigint"):
        bits = 32 if name == "integer" else _INTS[name]
        number = _integer(value)
        if not -(2 ** (bits - 1)) <= number < 2 ** (bits - 1):
            raise BadValue(f"{value!r} is out of range for {name}")
        return number
    if name in ("float", "double"):
        if isinstance(value, bool):
            raise BadValue(f"{value!r} is not a number")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise BadValue(f"{value!r} is not a number") from None
        raise BadValue(f"{value!r} is not a number")
    if name == "decimal":
        amount: decimal.Decimal | None = None
        if not isinstance(value, bool):
            with contextlib.suppress(decimal.InvalidOperation):
                amount = decimal.Decimal(str(value))
        if amount is None or not amount.is_finite():
            raise BadValue(f"{value!r} is not a decimal")
        return amount.quantize(decimal.Decimal(1).scaleb(-kind.scale))
    if name == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise BadValue(f"{value!r} is not a boolean")
    if name == "timestamp":
        return _timestamp(value)
    if name == "date":
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value[:10])
            except ValueError:
                pass
        raise BadValue(f"{value!r} is not a date (yyyy-MM-dd)")
    if name == "binary":
        if isinstance(value, str):
            try:
                return base64.b64decode(value, validate=True)
            except ValueError:
                return value.encode()
        raise BadValue(f"{value!r} is not binary data")
    if name == "array":
        if not isinstance(value, list):
            raise BadValue(f"{value!r} is not an array")
        return [convert(item, kind.items[0], conversion) for item in value]
    if name == "map":
        if not isinstance(value, dict):
            raise BadValue(f"{value!r} is not an object")
        return [
            (convert(k, kind.items[0], conversion), convert(v, kind.items[1], conversion))
            for k, v in value.items()
        ]
    # struct
    if not isinstance(value, dict):
        raise BadValue(f"{value!r} is not an object")
    folded = _fold(value, conversion)
    return {
        field_name: convert(folded.get(field_name), field_type, conversion)
        for field_name, field_type in zip(kind.names, kind.items, strict=True)
    }


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise BadValue(f"{value!r} is not a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise BadValue(f"{value!r} is not a whole number")


def _timestamp(value: Any) -> dt.datetime:
    """Epoch milliseconds, or ISO/Hive text (``yyyy-MM-dd HH:mm:ss[.f]``, an offset)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value / 1000, dt.UTC).replace(tzinfo=None)
    if isinstance(value, str) and _TIMESTAMP_TEXT.match(value.strip()):
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
        return parsed
    raise BadValue(f"{value!r} is not a timestamp")


def row_of(data: bytes, conversion: ParquetConversion) -> list[Any]:
    """One record's values, column by column; ``BadValue`` when it cannot be a row."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadValue(f"the record is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise BadValue("the record is not a JSON object")
    folded = _fold(parsed, conversion)
    values = []
    for column in conversion.columns:
        try:
            values.append(convert(folded.get(column.key), column.type, conversion))
        except BadValue as exc:
            raise BadValue(f"column {column.name}: {exc}") from None
    return values


# -- the writer ------------------------------------------------------------------------


@dataclass
class ParquetWriter:
    """Writes records (JSON) as one Parquet file onto ``out``, a row group
    at a time; records that cannot be rows are kept in ``failed`` as
    (record, reason) for the error output."""

    conversion: ParquetConversion
    out: BinaryIO
    failed: list[tuple[bytes, str]] = field(default_factory=list)
    rows: int = 0
    _columns: list[list[Any]] = field(default_factory=list)
    _bytes: int = 0
    _writer: Any = None

    def __post_init__(self) -> None:
        import pyarrow.parquet as pq

        self._schema = self.conversion.schema()
        self._columns = [[] for _ in self.conversion.columns]
        self._writer = pq.ParquetWriter(
            self.out,
            self._schema,
            compression=self.conversion.compression.lower()
            if self.conversion.compression != "UNCOMPRESSED"
            else "none",
            use_dictionary=self.conversion.dictionary,
            data_page_size=self.conversion.page_size,
            version=self.conversion.version,
        )

    def write(self, data: bytes) -> None:
        """Records whose lengths are not known: one per line."""
        self.write_records([line for line in data.split(b"\n") if line.strip()])

    def write_records(self, records: Sequence[bytes]) -> None:
        for record in records:
            try:
                values = row_of(record, self.conversion)
            except BadValue as exc:
                self.failed.append((record, str(exc)))
                continue
            for column, value in zip(self._columns, values, strict=True):
                column.append(value)
            self.rows += 1
            self._bytes += len(record)
            if self._bytes >= self.conversion.block_size or len(self._columns[0]) >= ROW_GROUP_ROWS:
                self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if not self._columns[0]:
            return
        arrays = [
            pa.array(values, type=f.type)
            for values, f in zip(self._columns, self._schema, strict=True)
        ]
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self._schema))
        self._columns = [[] for _ in self.conversion.columns]
        self._bytes = 0

    def close(self) -> None:
        self._flush()
        self._writer.close()
