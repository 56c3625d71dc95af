"""A delivery stream's destination as configured, checked and parsed once.

The configuration is AWS's own ``ExtendedS3DestinationConfiguration`` (the
API's and CloudFormation's shape; a config file gives the same object under
``destination:``), so one checker serves both: ``parse_destination`` raises
``SpecError`` with the path of the value at fault, which the API words as
InvalidArgumentException and a config file locates at its line and column.
``describe_destination`` is DescribeDeliveryStream's view of it, defaults
filled in as AWS fills them (LocalStack's recording of an AWS answer:
CloudWatchLoggingOptions, EncryptionConfiguration, S3BackupMode, the
S3DestinationDescription beside the extended one).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import math
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from plugins.bucket.lookup import bucket_name
from plugins.bucket.objects import BucketError
from plugins.firehose.formats import EXTENSIONS, FORMATS
from plugins.firehose.prefixes import (
    Prefix,
    PrefixError,
    check_prefixes,
    error_prefix_for,
    parse_prefix,
)
from plugins.firehose.query import ENGINE, MetadataQuery

if TYPE_CHECKING:
    from plugins.firehose.endpoint import HttpEndpoint
    from plugins.firehose.parquet import ParquetConversion

MIB = 1024 * 1024
#: BufferingHints' defaults and ranges (botocore's model).
DEFAULT_SIZE_MB = 5
DEFAULT_INTERVAL = 300
SIZE_RANGE = (1, 128)
INTERVAL_RANGE = (0, 900)
#: The Lambda processor's buffer (ProcessorParameter BufferSizeInMBs and
#: BufferIntervalInSeconds) and retries (NumberOfRetries), as AWS documents them.
LAMBDA_SIZE_RANGE = (0.2, 3.0)
LAMBDA_DEFAULT_SIZE = 1.0
LAMBDA_INTERVAL_RANGE = (60, 900)
LAMBDA_DEFAULT_INTERVAL = 60
LAMBDA_RETRIES_RANGE = (0, 300)
LAMBDA_DEFAULT_RETRIES = 3
DEFAULT_RETRY_DURATION = 300
PROCESSOR_TYPES = (
    "RecordDeAggregation",
    "Decompression",
    "CloudWatchLogProcessing",
    "Lambda",
    "MetadataExtraction",
    "AppendDelimiterToRecord",
)
#: Processors this project runs; the others are refused by name.
SUPPORTED_PROCESSORS = ("Lambda", "MetadataExtraction", "AppendDelimiterToRecord")
_EXTENSION = re.compile(r"^$|\.[0-9a-z!\-_.*'()]+$")

Path = tuple[str | int, ...]


class SpecError(ValueError):
    """A destination AWS (or this project) would refuse: ``path`` leads to the value."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


@dataclass(frozen=True, slots=True)
class LambdaProcessor:
    function: str  # the function resource's name
    arn: str
    retries: int
    buffer_size: int  # bytes
    buffer_interval: float


@dataclass(frozen=True, slots=True)
class Destination:
    """What delivery needs of an ExtendedS3DestinationConfiguration."""

    bucket: str
    prefix: Prefix
    error_prefix: Prefix
    buffer_size: int  # bytes
    buffer_interval: float  # seconds
    compression: str
    extension: str
    zone: zoneinfo.ZoneInfo | None
    partitioning: bool
    processor: LambdaProcessor | None
    query: MetadataQuery | None
    delimiter: bytes | None
    #: An HTTP endpoint destination: the records go there, the bucket and
    #: prefixes above are its S3Configuration (the backup).
    http: HttpEndpoint | None = None
    #: Record format conversion (Parquet).
    conversion: ParquetConversion | None = None

    @property
    def keeps_records(self) -> bool:
        """Whether buffered chunks keep each record's length (``sizes``):
        an HTTP request and a Parquet row need records, not bytes."""
        return self.http is not None or self.conversion is not None


def bucket_of(arn: Any) -> str:
    if isinstance(arn, str) and arn.startswith("arn:"):
        with contextlib.suppress(BucketError):
            return bucket_name(arn)
    raise SpecError(("BucketARN",), f"BucketARN {arn!r} is not an S3 bucket's ARN")


def function_name(arn: str) -> str:
    """The function resource a LambdaArn names: an ARN's function name
    (without a version or alias), or a plain name."""
    if arn.startswith("arn:"):
        parts = arn.split(":")
        if len(parts) < 7 or parts[2] != "lambda" or parts[5] != "function":
            raise ValueError(f"{arn!r} is not a Lambda function's ARN")
        return parts[6]
    return arn


def _number(
    value: Any, path: Path, low: float, high: float, *, whole: bool = True, name: str = ""
) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    except OverflowError:  # an int past a float's range: out of range below
        number = math.inf
    if (
        number is None
        or math.isnan(number)
        or (whole and math.isfinite(number) and number != int(number))
    ):
        raise SpecError(path, f"{name or path[-1]} must be a number, not {value!r}")
    if not low <= number <= high:
        raise SpecError(path, f"{name or path[-1]} must be between {low:g} and {high:g}")
    return number


def _mapping(value: Any, path: Path) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(path, f"{path[-1]} must be an object")
    return value


def _enabled(given: Mapping[str, Any], path: Path, default: bool = False) -> bool:
    """A configuration's ``Enabled``: a boolean, as AWS's API takes it (the
    string "false" would otherwise count as true)."""
    value = given.get("Enabled", default)
    if not isinstance(value, bool):
        raise SpecError((*path, "Enabled"), f"Enabled must be true or false, not {value!r}")
    return value


def _list(value: Any, path: Path) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpecError(path, f"{path[-1]} must be a list")
    return value


def _text(value: Any, path: Path) -> str:
    """A string setting, or "" when not given (a list or mapping would
    otherwise be written out as its repr)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SpecError(path, f"{path[-1]} must be a string, not {value!r}")
    return value


def parse_destination(config: Mapping[str, Any]) -> Destination:
    """Check an ExtendedS3DestinationConfiguration and parse it."""
    bucket = bucket_of(config.get("BucketARN"))
    hints = _mapping(config.get("BufferingHints"), ("BufferingHints",))
    size = _number(
        hints.get("SizeInMBs", DEFAULT_SIZE_MB), ("BufferingHints", "SizeInMBs"), *SIZE_RANGE
    )
    interval = _number(
        hints.get("IntervalInSeconds", DEFAULT_INTERVAL),
        ("BufferingHints", "IntervalInSeconds"),
        *INTERVAL_RANGE,
    )
    compression = config.get("CompressionFormat", "UNCOMPRESSED")
    if compression not in FORMATS:
        raise SpecError(
            ("CompressionFormat",),
            f"CompressionFormat {compression!r} is not one of {', '.join(FORMATS)}",
        )
    extension = config.get("FileExtension")
    if extension is not None and (
        not isinstance(extension, str) or not _EXTENSION.match(extension)
    ):
        raise SpecError(("FileExtension",), f"FileExtension {extension!r} is not a file extension")
    zone = None
    if config.get("CustomTimeZone") not in (None, "", "UTC"):
        try:
            zone = zoneinfo.ZoneInfo(str(config["CustomTimeZone"]))
        # "Europe" (a directory of the zone database) or a name too long for
        # a file is an OSError from the lookup.
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            raise SpecError(
                ("CustomTimeZone",), f"CustomTimeZone {config['CustomTimeZone']!r} is unknown"
            ) from None
    _unsupported(config)
    dynamic = _mapping(
        config.get("DynamicPartitioningConfiguration"), ("DynamicPartitioningConfiguration",)
    )
    partitioning = _enabled(dynamic, ("DynamicPartitioningConfiguration",))
    if partitioning and interval == 0:
        raise SpecError(
            ("BufferingHints", "IntervalInSeconds"),
            "zero buffering (IntervalInSeconds 0) is not available with dynamic partitioning",
        )
    processor, query, delimiter = _processors(config, partitioning)
    prefix, error_prefix = _prefixes(config, partitioning, query, processor)
    conversion = _conversion(config)
    if conversion is not None and compression != "UNCOMPRESSED":
        raise SpecError(
            ("CompressionFormat",),
            "with record format conversion CompressionFormat must be UNCOMPRESSED"
            " (the compression is inside the Parquet file)",
        )
    return Destination(
        bucket=bucket,
        prefix=prefix,
        error_prefix=error_prefix,
        buffer_size=int(size * MIB),
        buffer_interval=interval,
        compression=compression,
        extension=(
            (".parquet" if conversion is not None else EXTENSIONS[compression])
            if extension is None
            else extension
        ),
        zone=zone,
        partitioning=partitioning,
        processor=processor,
        query=query,
        delimiter=delimiter,
        conversion=conversion,
    )


def _conversion(config: Mapping[str, Any]) -> ParquetConversion | None:
    given = _mapping(
        config.get("DataFormatConversionConfiguration"), ("DataFormatConversionConfiguration",)
    )
    if not _enabled(given, ("DataFormatConversionConfiguration",), bool(given)):
        return None
    from plugins.firehose.parquet import ConversionError, parse_conversion

    try:
        return parse_conversion(given)
    except ConversionError as exc:
        raise SpecError(("DataFormatConversionConfiguration", *exc.path), exc.message) from None


#: Where a stored stream's destination is, by the configuration's key.
EXTENDED_S3 = "ExtendedS3DestinationConfiguration"
HTTP_ENDPOINT = "HttpEndpointDestinationConfiguration"


def destination_key(config: Mapping[str, Any]) -> str:
    """The key of a stored stream's (CreateDeliveryStream's) destination."""
    return HTTP_ENDPOINT if HTTP_ENDPOINT in config else EXTENDED_S3


def destination_of(config: Mapping[str, Any]) -> Destination:
    """A stored stream's destination, whichever kind it is."""
    if HTTP_ENDPOINT in config:
        return parse_http_destination(config[HTTP_ENDPOINT])
    return parse_destination(config[EXTENDED_S3])


def parse_http_destination(config: Mapping[str, Any]) -> Destination:
    """Check an HttpEndpointDestinationConfiguration and parse it: the
    endpoint, its buffering and processing, and its S3Configuration (the
    bucket failed or all records are backed up to)."""
    from plugins.firehose import endpoint as http

    try:
        parsed_endpoint = http.parse_endpoint(config)
    except http.EndpointSpecError as exc:
        raise SpecError(exc.path, exc.message) from None
    backup = config.get("S3Configuration")
    if not isinstance(backup, Mapping):
        raise SpecError(("S3Configuration",), "S3Configuration (the backup bucket) is required")
    for key in ("ProcessingConfiguration", "DynamicPartitioningConfiguration"):
        if key in backup:
            raise SpecError(("S3Configuration", key), f"S3Configuration takes no {key}")
    try:
        s3 = parse_destination(backup)
    except SpecError as exc:
        raise SpecError(("S3Configuration", *exc.path), exc.message) from None
    hints = _mapping(config.get("BufferingHints"), ("BufferingHints",))
    size = _number(
        hints.get("SizeInMBs", http.DEFAULT_SIZE_MB),
        ("BufferingHints", "SizeInMBs"),
        *http.SIZE_RANGE,
    )
    interval = _number(
        hints.get("IntervalInSeconds", http.DEFAULT_INTERVAL),
        ("BufferingHints", "IntervalInSeconds"),
        *http.INTERVAL_RANGE,
    )
    processor, _, delimiter = _processors(config, False)
    return replace(
        s3,
        buffer_size=int(size * MIB),
        buffer_interval=interval,
        processor=processor,
        delimiter=delimiter,
        http=parsed_endpoint,
    )


def _unsupported(config: Mapping[str, Any]) -> None:
    """What AWS takes and this project does not do yet: refused by name."""
    if config.get("S3BackupMode", "Disabled") != "Disabled":
        raise SpecError(("S3BackupMode",), "S3 backup of source records is not supported yet")


def _parameters(processor: Mapping[str, Any], path: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for index, parameter in enumerate(_list(processor.get("Parameters"), (*path, "Parameters"))):
        where = (*path, "Parameters", index)
        if not isinstance(parameter, Mapping):
            raise SpecError(where, "a processor parameter must be an object")
        name, value = parameter.get("ParameterName"), parameter.get("ParameterValue")
        if not isinstance(name, str) or not isinstance(value, str):
            raise SpecError(where, "a processor parameter needs ParameterName and ParameterValue")
        if name in found:
            raise SpecError(where, f"parameter {name} is given twice")
        found[name] = value
    return found


def _processors(
    config: Mapping[str, Any], partitioning: bool
) -> tuple[LambdaProcessor | None, MetadataQuery | None, bytes | None]:
    processing = _mapping(config.get("ProcessingConfiguration"), ("ProcessingConfiguration",))
    if not _enabled(processing, ("ProcessingConfiguration",)):
        return None, None, None
    processor: LambdaProcessor | None = None
    query: MetadataQuery | None = None
    delimiter: bytes | None = None
    processors = _list(processing.get("Processors"), ("ProcessingConfiguration", "Processors"))
    for index, item in enumerate(processors):
        path: Path = ("ProcessingConfiguration", "Processors", index)
        if not isinstance(item, Mapping):
            raise SpecError(path, "a processor must be an object")
        kind = item.get("Type")
        if kind not in PROCESSOR_TYPES:
            raise SpecError((*path, "Type"), f"unknown processor type {kind!r}")
        if kind not in SUPPORTED_PROCESSORS:
            raise SpecError((*path, "Type"), f"the {kind} processor is not supported yet")
        parameters = _parameters(item, path)
        if kind == "Lambda":
            if processor is not None:
                raise SpecError(path, "only one Lambda processor may be given")
            processor = _lambda(parameters, path)
        elif kind == "MetadataExtraction":
            if not partitioning:
                raise SpecError(
                    path, "the MetadataExtraction processor needs dynamic partitioning enabled"
                )
            query = _query(parameters, path)
        else:
            delimiter = _delimiter(parameters, path)
    return processor, query, delimiter


def _lambda(parameters: Mapping[str, str], path: Path) -> LambdaProcessor:
    where = (*path, "Parameters")
    allowed = {"LambdaArn", "NumberOfRetries", "RoleArn", "BufferSizeInMBs"}
    allowed.add("BufferIntervalInSeconds")
    for name in parameters:
        if name not in allowed:
            raise SpecError(where, f"the Lambda processor takes no parameter {name}")
    arn = parameters.get("LambdaArn")
    if not arn:
        raise SpecError(where, "the Lambda processor needs the parameter LambdaArn")
    try:
        name = function_name(arn)
    except ValueError as exc:
        raise SpecError(where, str(exc)) from None
    retries = _number(
        parameters.get("NumberOfRetries", LAMBDA_DEFAULT_RETRIES),
        where,
        *LAMBDA_RETRIES_RANGE,
        name="NumberOfRetries",
    )
    size = _number(
        parameters.get("BufferSizeInMBs", LAMBDA_DEFAULT_SIZE),
        where,
        *LAMBDA_SIZE_RANGE,
        whole=False,
        name="BufferSizeInMBs",
    )
    interval = _number(
        parameters.get("BufferIntervalInSeconds", LAMBDA_DEFAULT_INTERVAL),
        where,
        *LAMBDA_INTERVAL_RANGE,
        name="BufferIntervalInSeconds",
    )
    return LambdaProcessor(name, arn, int(retries), int(size * MIB), interval)


def _query(parameters: Mapping[str, str], path: Path) -> MetadataQuery:
    where = (*path, "Parameters")
    text = parameters.get("MetadataExtractionQuery")
    if not text:
        raise SpecError(where, "MetadataExtraction needs the parameter MetadataExtractionQuery")
    engine = parameters.get("JsonParsingEngine", ENGINE)
    if engine != ENGINE:
        raise SpecError(where, f"JsonParsingEngine must be {ENGINE}, not {engine!r}")
    try:
        return MetadataQuery(text)
    except ValueError as exc:
        raise SpecError(
            where, f"MetadataExtractionQuery {text!r} does not compile: {exc}"
        ) from None


def _delimiter(parameters: Mapping[str, str], path: Path) -> bytes:
    text = parameters.get("Delimiter")
    if text is None:
        return b"\n"
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SpecError((*path, "Parameters"), "Delimiter must be base64") from None


def _prefixes(
    config: Mapping[str, Any],
    partitioning: bool,
    query: MetadataQuery | None,
    processor: LambdaProcessor | None,
) -> tuple[Prefix, Prefix]:
    try:
        prefix = parse_prefix("Prefix", _text(config.get("Prefix"), ("Prefix",)))
        given = _text(config.get("ErrorOutputPrefix"), ("ErrorOutputPrefix",))
        error = parse_prefix("ErrorOutputPrefix", given) if given else None
        check_prefixes(
            prefix,
            error,
            partitioning=partitioning,
            query=query is not None,
            lambda_keys=processor is not None,
        )
    except PrefixError as exc:
        raise SpecError((exc.field,), exc.message) from None
    # The default error prefix is made of Prefix as given (before the hour
    # is added): <Prefix><error-output-type>/yyyy/MM/dd/HH/.
    error = error.with_default_time() if error is not None else error_prefix_for(prefix)
    if not partitioning:
        prefix = prefix.with_default_time()
    return prefix, error


def describe_destination(config: Mapping[str, Any], parsed: Destination) -> dict[str, Any]:
    """One entry of DescribeDeliveryStream's Destinations, defaults filled in."""
    hints = {
        "SizeInMBs": parsed.buffer_size // MIB,
        "IntervalInSeconds": int(parsed.buffer_interval),
    }
    common: dict[str, Any] = {
        "RoleARN": config.get("RoleARN", ""),
        "BucketARN": config["BucketARN"],
        "BufferingHints": hints,
        "CompressionFormat": parsed.compression,
        "EncryptionConfiguration": config.get(
            "EncryptionConfiguration", {"NoEncryptionConfig": "NoEncryption"}
        ),
        "CloudWatchLoggingOptions": config.get("CloudWatchLoggingOptions", {"Enabled": False}),
    }
    for key in ("Prefix", "ErrorOutputPrefix"):
        if config.get(key) is not None:
            common[key] = config[key]
    extended: dict[str, Any] = {**common, "S3BackupMode": config.get("S3BackupMode", "Disabled")}
    for key in ("ProcessingConfiguration", "FileExtension", "CustomTimeZone"):
        if config.get(key) is not None:
            extended[key] = config[key]
    if config.get("DynamicPartitioningConfiguration") is not None:
        dynamic = dict(config["DynamicPartitioningConfiguration"])
        dynamic.setdefault("RetryOptions", {"DurationInSeconds": DEFAULT_RETRY_DURATION})
        extended["DynamicPartitioningConfiguration"] = dynamic
    if config.get("DataFormatConversionConfiguration") is not None:
        extended["DataFormatConversionConfiguration"] = config["DataFormatConversionConfiguration"]
    return {
        "DestinationId": "destinationId-000000000001",
        "S3DestinationDescription": common,
        "ExtendedS3DestinationDescription": extended,
    }


def describe_http_destination(config: Mapping[str, Any], parsed: Destination) -> dict[str, Any]:
    """DescribeDeliveryStream's entry of an HTTP endpoint destination: its
    settings with defaults filled in (the access key is not shown, as AWS
    does not), the backup bucket's S3 description."""
    http = parsed.http
    assert http is not None
    endpoint: dict[str, Any] = {"Url": http.url}
    if http.name is not None:
        endpoint["Name"] = http.name
    backup = config["S3Configuration"]
    s3 = describe_destination(backup, parse_destination(backup))["S3DestinationDescription"]
    described: dict[str, Any] = {
        "EndpointConfiguration": endpoint,
        "BufferingHints": {
            "SizeInMBs": parsed.buffer_size // MIB,
            "IntervalInSeconds": int(parsed.buffer_interval),
        },
        "CloudWatchLoggingOptions": config.get("CloudWatchLoggingOptions", {"Enabled": False}),
        "RequestConfiguration": {
            "ContentEncoding": "GZIP" if http.gzip else "NONE",
            **(
                {"CommonAttributes": config["RequestConfiguration"]["CommonAttributes"]}
                if http.attributes
                else {}
            ),
        },
        "RetryOptions": {"DurationInSeconds": int(http.retry_duration)},
        "S3BackupMode": "AllData" if http.backup_all else "FailedDataOnly",
        "S3DestinationDescription": s3,
    }
    for key in ("RoleARN", "ProcessingConfiguration"):
        if config.get(key) is not None:
            described[key] = config[key]
    return {
        "DestinationId": "destinationId-000000000001",
        "HttpEndpointDestinationDescription": described,
    }


def extended_from_plain(config: Mapping[str, Any]) -> dict[str, Any]:
    """An S3DestinationConfiguration (the older shape) as the extended one."""
    return dict(config)
