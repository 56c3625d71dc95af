"""A Distributed Map's ItemReader and ResultWriter over local files.

AWS reads a Distributed Map's items from S3 and writes its results there.
This project has no S3: a *bucket* is a local directory (the ``bucket``
plugin: a ``bucket`` resource, else ``<state dir>/buckets/<name>``), and
an object's key is its path under that directory, so an AWS definition
runs unchanged:

- ``arn:aws:states:::s3:getObject`` (``Bucket``, ``Key``) with
  ``ReaderConfig.InputType`` JSON (the file is an array), JSONL (one value a
  line), CSV (``CSVHeaderLocation`` FIRST_ROW or GIVEN with ``CSVHeaders``,
  ``CSVDelimiter``) or MANIFEST (an S3 Inventory ``manifest.json``: its CSV
  files, gzipped or not, read from its destination bucket);
- ``arn:aws:states:::s3:listObjectsV2`` (``Bucket``, ``Prefix``): one item
  per file, ``{Etag, Key, LastModified, Size, StorageClass}``;
- ``MaxItems``/``MaxItemsPath`` (0: all, at most 100,000,000);
- ``arn:aws:states:::s3:putObject`` as a ResultWriter (``Bucket``,
  ``Prefix``): ``PREFIX/RUN-ID/manifest.json`` and ``SUCCEEDED_0.json`` /
  ``FAILED_0.json``, as AWS lays them out; ``WriterConfig`` (Transformation
  NONE, COMPACT or FLATTEN; OutputType JSON or JSONL).

Reading and writing go through an ``ItemSource`` (``LocalBuckets`` maps
names to directories; the runtime's ``RuntimeItems``, in
``plugins.states.buckets``, uses the bucket plugin's lookup). Failures are
``States.ItemReaderFailed`` and ``States.ResultWriterFailed`` with AWS's
causes where a recording shows them. Files are read and written on a
worker thread, never in the loop.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from plugins.bucket.lookup import Buckets
from plugins.bucket.objects import BucketError, ObjectInfo
from plugins.bucket.objects import iso_millis as _iso
from plugins.states.errors import ITEM_READER_FAILED, RESULT_WRITER_FAILED, StatesError

Json = Any

GET_OBJECT = "arn:aws:states:::s3:getObject"
LIST_OBJECTS = "arn:aws:states:::s3:listObjectsV2"
PUT_OBJECT = "arn:aws:states:::s3:putObject"
#: Ours (AWS has no queue reader): a queue's messages as items, each deleted
#: once its iteration succeeded.
RECEIVE_MESSAGE = "arn:aws:states:::sqs:receiveMessage"
READERS = (GET_OBJECT, LIST_OBJECTS, RECEIVE_MESSAGE)
INPUT_TYPES = ("CSV", "JSON", "JSONL", "MANIFEST")
CSV_DELIMITERS = {"COMMA": ",", "PIPE": "|", "SEMICOLON": ";", "SPACE": " ", "TAB": "\t"}
TRANSFORMATIONS = ("NONE", "COMPACT", "FLATTEN")
OUTPUT_TYPES = ("JSON", "JSONL")
#: AWS reads at most this many items, whatever MaxItems says.
MAX_ITEMS = 100_000_000


class ItemSource(Protocol):
    """Where a Distributed Map's items are read and its results written."""

    async def get_object(self, bucket: str, key: str) -> bytes: ...

    async def list_objects(self, bucket: str, prefix: str) -> list[ObjectInfo]: ...

    async def put_object(self, bucket: str, key: str, body: bytes) -> None: ...

    async def receive_messages(
        self, queue: str, most: int, visibility_timeout: int | None
    ) -> list[Json]: ...

    async def delete_messages(self, queue: str, receipt_handles: Sequence[str]) -> None: ...


class NoQueues:
    """A source without queues (buckets only)."""

    async def receive_messages(
        self, queue: str, most: int, visibility_timeout: int | None
    ) -> list[Json]:
        raise BucketError(f"no queue named '{queue}' in this runtime")

    async def delete_messages(self, queue: str, receipt_handles: Sequence[str]) -> None:
        raise BucketError(f"no queue named '{queue}' in this runtime")


class LocalBuckets(Buckets, NoQueues):
    """Buckets that are directories: ``{bucket name: directory}``, no other."""


class NoItemSource(LocalBuckets):
    """The source of an interpreter given none: every bucket is unknown."""

    def __init__(self) -> None:
        super().__init__({})


# -- reading items ------------------------------------------------------------------------


def reader_failed(cause: str) -> StatesError:
    return StatesError(ITEM_READER_FAILED, cause)


async def read_items(
    source: ItemSource, resource: str, parameters: Json, config: Mapping[str, Json], most: int
) -> list[Json]:
    """The items an ItemReader gives: at most ``most`` (MaxItems) are used."""
    if not isinstance(parameters, Mapping):
        raise reader_failed("The ItemReader's Parameters must be an object")
    if resource == RECEIVE_MESSAGE:
        return await _messages(source, parameters, most)
    bucket = parameters.get("Bucket")
    if not isinstance(bucket, str) or not bucket:
        raise reader_failed("The ItemReader's Parameters must name a Bucket")
    try:
        if resource == LIST_OBJECTS:
            prefix = parameters.get("Prefix", "")
            listed = await source.list_objects(bucket, prefix if isinstance(prefix, str) else "")
            return [info.item() for info in listed]
        key = parameters.get("Key")
        if not isinstance(key, str) or not key:
            raise reader_failed("The ItemReader's Parameters must name a Key")
        body = await source.get_object(bucket, key)
        input_type = config.get("InputType", "JSON")
        if input_type == "MANIFEST":
            return await _manifest_items(source, body)
        return parse_items(body, input_type, config)
    except BucketError as error:
        raise reader_failed(str(error)) from None


def queue_name(url: str) -> str:
    """A queue's name from its URL (its last part), ARN or the name."""
    return url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]


async def _messages(source: ItemSource, parameters: Mapping[str, Json], most: int) -> list[Json]:
    """Up to ``most`` messages received from the queue (as ReceiveMessage gives
    them), until it has none visible; each stays invisible for VisibilityTimeout."""
    url = parameters.get("QueueUrl")
    if not isinstance(url, str) or not url:
        raise reader_failed("The ItemReader's Parameters must name a QueueUrl")
    visibility = parameters.get("VisibilityTimeout")
    if visibility is not None and (isinstance(visibility, bool) or not isinstance(visibility, int)):
        raise reader_failed("VisibilityTimeout must be an integer")
    try:
        return await source.receive_messages(queue_name(url), most, visibility)
    except BucketError as error:
        raise reader_failed(str(error)) from None


async def delete_messages(source: ItemSource, parameters: Json, items: Sequence[Json]) -> None:
    """Delete the messages of the iterations that succeeded (a failed one's
    message is seen again once its visibility timeout passes)."""
    handles = [item["ReceiptHandle"] for item in items if isinstance(item, Mapping)]
    if handles and isinstance(parameters, Mapping):
        try:
            await source.delete_messages(queue_name(str(parameters.get("QueueUrl"))), handles)
        except BucketError as error:
            raise reader_failed(f"the queue's messages were not deleted: {error}") from None


def parse_items(body: bytes, input_type: str, config: Mapping[str, Json]) -> list[Json]:
    """A file's items by its InputType: JSON, JSONL or CSV."""
    text = _text(body)
    if input_type == "JSON":
        try:
            value = json.loads(text)
        except ValueError as error:
            raise reader_failed(f"The file is not valid JSON: {error}") from None
        if not isinstance(value, list):
            raise reader_failed("Attempting to map over non-iterable node.")
        return value
    if input_type == "JSONL":
        items = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except ValueError as error:
                raise reader_failed(f"Line {number} is not valid JSON: {error}") from None
        return items
    if input_type == "CSV":
        return csv_items(text, config)
    raise reader_failed(f"InputType {input_type} is not supported")


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise reader_failed(f"The file is not UTF-8 text: {error}") from None


def csv_items(text: str, config: Mapping[str, Json]) -> list[Json]:
    """CSV rows as objects of their column's header: every value a string, a
    short row's missing fields "" and a long row's extra fields dropped (as
    AWS's recordings show), keys in sorted order (as AWS writes them)."""
    delimiter = CSV_DELIMITERS.get(config.get("CSVDelimiter", "COMMA"), ",")
    rows = [row for row in csv.reader(io.StringIO(text), delimiter=delimiter) if row]
    if config.get("CSVHeaderLocation", "FIRST_ROW") == "GIVEN":
        headers = list(config.get("CSVHeaders") or [])
    else:
        headers, rows = (rows[0], rows[1:]) if rows else ([], [])
    if len(set(headers)) != len(headers):
        raise reader_failed("CSV headers cannot contain duplicates.")
    order = sorted(range(len(headers)), key=lambda index: headers[index])
    return [{headers[i]: row[i] if i < len(row) else "" for i in order} for row in rows]


async def _manifest_items(source: ItemSource, body: bytes) -> list[Json]:
    """An S3 Inventory report: its CSV files' rows, named by its fileSchema."""
    try:
        manifest = json.loads(_text(body))
        destination = str(manifest["destinationBucket"]).removeprefix("arn:aws:s3:::")
        schema = [name.strip() for name in str(manifest["fileSchema"]).split(",")]
        files = [str(entry["key"]) for entry in manifest["files"]]
        file_format = manifest.get("fileFormat", "CSV")
    except (ValueError, KeyError, TypeError) as error:
        raise reader_failed(f"The manifest is not an S3 Inventory manifest: {error}") from None
    if file_format != "CSV":
        raise reader_failed(f"Inventory files in {file_format} are not supported (CSV only)")
    items: list[Json] = []
    for key in files:
        data = await source.get_object(destination, key)
        if key.endswith(".gz"):
            try:
                data = await asyncio.to_thread(gzip.decompress, data)
            except (OSError, EOFError) as error:
                raise reader_failed(f"{key} is not gzip: {error}") from None
        for row in csv.reader(io.StringIO(_text(data))):
            if row:
                items.append(dict(zip(schema, row, strict=False)))
    return items


def max_items(value: Json) -> int:
    """MaxItems as read: a negative one fails the reader, 0 means all."""
    if value < 0:
        raise reader_failed("field MaxItems must be positive")
    return min(int(value), MAX_ITEMS) or MAX_ITEMS


# -- writing results ----------------------------------------------------------------------


@dataclass(slots=True)
class ChildRun:
    """One iteration of a Distributed Map, described as the child execution AWS runs."""

    name: str
    input: Json
    start: float
    stop: float = 0.0
    output: Json = None
    error: str | None = None
    cause: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None

    def record(self, execution_arn: str, machine_arn: str) -> dict[str, Json]:
        """Its entry in SUCCEEDED_n.json or FAILED_n.json."""
        out: dict[str, Json] = {
            "ExecutionArn": execution_arn,
            "Input": _dump(self.input),
            "InputDetails": {"Included": True},
            "Name": self.name,
        }
        if self.succeeded:
            out["Output"] = _dump(self.output)
            out["OutputDetails"] = {"Included": True}
        else:
            if self.error:
                out["Error"] = self.error
            if self.cause is not None:
                out["Cause"] = self.cause
        out.update(
            {
                "RedriveCount": 0,
                "StartDate": _iso(self.start),
                "StateMachineArn": machine_arn,
                "Status": "SUCCEEDED" if self.succeeded else "FAILED",
                "StopDate": _iso(self.stop),
            }
        )
        return out


def _dump(value: Json) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def transformed(
    config: Mapping[str, Json], runs: Sequence[ChildRun], records: Sequence[Json], exporting: bool
) -> list[Json]:
    """The results as WriterConfig's Transformation makes them: NONE (each
    child's record; the default when exporting), COMPACT (each output; the
    default otherwise), FLATTEN (outputs, arrays flattened one level). A
    failed child's record is always kept whole."""
    mode = config.get("Transformation", "NONE" if exporting else "COMPACT")
    if mode == "NONE":
        return list(records)
    out: list[Json] = []
    for run, record in zip(runs, records, strict=True):
        if not run.succeeded:
            out.append(record)
        elif mode == "FLATTEN" and isinstance(run.output, list):
            out.extend(run.output)
        else:
            out.append(run.output)
    return out


def encoded(values: Sequence[Json], output_type: str) -> bytes:
    if output_type == "JSONL":
        return "".join(_dump(value) + "\n" for value in values).encode()
    return _dump(list(values)).encode()


async def write_results(
    source: ItemSource,
    parameters: Json,
    config: Mapping[str, Json],
    run_arn: str,
    runs: Sequence[ChildRun],
    records: Sequence[Json],
) -> dict[str, Json]:
    """Export a Map Run's results (``s3:putObject``): the files, then the
    manifest naming them; the state's result names the manifest."""
    if not isinstance(parameters, Mapping) or not isinstance(parameters.get("Bucket"), str):
        raise StatesError(RESULT_WRITER_FAILED, "The ResultWriter's Parameters must name a Bucket")
    bucket = parameters["Bucket"]
    prefix = str(parameters.get("Prefix", "")).strip("/")
    run_id = run_arn.rsplit(":", 1)[-1]
    folder = f"{prefix}/{run_id}" if prefix else run_id
    output_type = config.get("OutputType", "JSON")
    succeeded = [i for i, run in enumerate(runs) if run.succeeded]
    failed = [i for i, run in enumerate(runs) if not run.succeeded]
    kept = transformed(config, [runs[i] for i in succeeded], [records[i] for i in succeeded], True)
    files: dict[str, list[Json]] = {"FAILED": [], "PENDING": [], "SUCCEEDED": []}
    try:
        for status, values in (("SUCCEEDED", kept), ("FAILED", [records[i] for i in failed])):
            if not values:
                continue
            key = f"{folder}/{status}_0.json"
            body = encoded(values, output_type)
            await source.put_object(bucket, key, body)
            files[status].append({"Key": key, "Size": len(body)})
        manifest = {"DestinationBucket": bucket, "MapRunArn": run_arn, "ResultFiles": files}
        await source.put_object(bucket, f"{folder}/manifest.json", _dump(manifest).encode())
    except BucketError as error:
        raise StatesError(RESULT_WRITER_FAILED, str(error)) from None
    return {
        "MapRunArn": run_arn,
        "ResultWriterDetails": {"Bucket": bucket, "Key": f"{folder}/manifest.json"},
    }
