"""``pipelines stream ...``: the stream API (``StreamStore``) on the command line.

Each command opens the state database of a pipeline (running or not: SQLite
lets both use it at once; only ``create`` makes a new one), calls one
``StreamStore`` method and prints its answer as ``--output`` says
(``pipelines.clikit``); ``read`` prints each record as it comes, a JSON
line each by default.
"""

from __future__ import annotations

import base64
import os
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import jmespath
import jmespath.exceptions
import orjson

from pipelines import clikit
from pipelines.clikit import (
    echo_output,
    output_option,
    printing_items,
    state_options,
    streaming_output_option,
    until_signalled,
)
from pipelines.errors import StreamError
from pipelines.targets import key_text
from plugins.stream.store import (
    DEFAULT_RECORD_SIZE,
    MAX_PUT_RECORDS,
    MAX_PUT_REQUEST_BYTES,
    MIN_RETENTION_HOURS,
    Record,
    StreamStore,
    shard_id,
)

T = TypeVar("T")


def with_store(
    config: str | None,
    state: str | None,
    call: Callable[[StreamStore], Awaitable[T]],
    *,
    create: bool = False,
) -> T:
    return clikit.with_store(StreamStore, config, state, call, create=create)


def shard_argument(value: str) -> str:
    """A shard id, also given as its number: ``3`` is ``shardId-000000000003``."""
    return shard_id(int(value)) if value.isdigit() else value


class StartPosition(click.ParamType[str | float, str | float]):
    """``--from``: what ``StreamStore.consume(start=...)`` takes."""

    name = "position"
    _NUMBER = re.compile(r"\d+(\.\d*)?")

    def convert(
        self, value: str | float, param: click.Parameter | None, ctx: click.Context | None
    ) -> str | float:
        if not isinstance(value, str):
            return value  # already converted
        word = value.strip().lower().replace("-", "_")
        if word in ("trim_horizon", "latest"):
            return word
        if len(value) == 56 and value.isdigit():
            return value  # a sequence number
        if self._NUMBER.fullmatch(value):
            return float(value)
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            self.fail(
                f"{value!r} is not trim-horizon, latest, a sequence number (56 digits),"
                " an ISO 8601 time or seconds since the epoch",
                param,
                ctx,
            )
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()


def record_json(record: Record) -> dict[str, Any]:
    """A record as ``read`` prints it: Data is the JSON value when the bytes
    are JSON, else their UTF-8 text, else base64 (with DataEncoding)."""
    arrival = datetime.fromtimestamp(int(record.arrival * 1000) / 1000, UTC)
    printed: dict[str, Any] = {
        "SequenceNumber": record.sequence_number,
        "ShardId": record.shard_id,
        "PartitionKey": record.partition_key,
        "ApproximateArrivalTimestamp": arrival.isoformat(timespec="milliseconds").replace(
            "+00:00", "Z"
        ),
    }
    try:
        printed["Data"] = orjson.loads(record.data)
    except orjson.JSONDecodeError:
        try:
            printed["Data"] = record.data.decode("utf-8")
        except UnicodeDecodeError:
            printed["Data"] = base64.b64encode(record.data).decode("ascii")
            printed["DataEncoding"] = "base64"
    return printed


@click.group("stream")
def stream_group() -> None:
    """Durable streams with Kinesis' semantics, in a pipeline's state database."""


@stream_group.command("create")
@click.argument("name")
@click.option("--shards", type=int, default=1, show_default=True, help="Shard count.")
@click.option(
    "--retention-hours",
    type=int,
    default=None,
    metavar="H",
    help=f"How long records are kept (default {MIN_RETENTION_HOURS}).",
)
@click.option(
    "--max-record-size",
    type=int,
    default=None,
    metavar="BYTES",
    help=f"Data and partition key of one record (default {DEFAULT_RECORD_SIZE}).",
)
@click.option(
    "--write-limits/--no-write-limits",
    default=None,
    help="Per-shard write limits (1000 records, 1 MiB a second; default off).",
)
@click.option(
    "--update", is_flag=True, help="If NAME exists, apply the settings given (not --shards) to it."
)
@state_options
@output_option
def create_command(
    name: str,
    shards: int,
    retention_hours: int | None,
    max_record_size: int | None,
    write_limits: bool | None,
    update: bool,
    config: str | None,
    state: str | None,
    output: str,
) -> None:
    """Create stream NAME; print its description."""
    described = with_store(
        config,
        state,
        lambda store: store.create_stream(
            name,
            shards,
            retention_hours=retention_hours,
            max_record_size=max_record_size,
            write_limits=write_limits,
            update=update,
        ),
        create=True,
    )
    echo_output(described, output)


@stream_group.command("delete")
@click.argument("name")
@state_options
def delete_command(name: str, config: str | None, state: str | None) -> None:
    """Delete stream NAME with its records and checkpoints."""
    with_store(config, state, lambda store: store.delete_stream(name))


@stream_group.command("list")
@state_options
@output_option
def list_command(config: str | None, state: str | None, output: str) -> None:
    """List the streams' names."""
    names = with_store(config, state, lambda store: store.list_streams())
    echo_output(names, output, column="StreamName")


@stream_group.command("describe")
@click.argument("name")
@state_options
@output_option
def describe_command(name: str, config: str | None, state: str | None, output: str) -> None:
    """Print stream NAME's description: settings and shards (as DescribeStream)."""
    echo_output(with_store(config, state, lambda store: store.describe_stream(name)), output)


def read_bytes(source: str) -> bytes:
    """The bytes of file ``source`` (- for stdin): records are bytes, not text."""
    try:
        return sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise click.UsageError(f"cannot read {source}: {exc.strerror}") from None


def _partition_keys(
    key: str | None, key_path: str | None
) -> Callable[[int, bytes], tuple[str | None, str | None]]:
    """(partition key, None) or (None, why not) for record ``index``'s data."""
    if (key is None) == (key_path is None):
        raise click.UsageError("give --partition-key or --partition-key-path (one of them)")
    if key is not None:
        return lambda index, data: (key, None)
    assert key_path is not None
    try:
        expression = jmespath.compile(key_path)
    except jmespath.exceptions.JMESPathError as exc:
        raise click.BadParameter(str(exc), param_hint="--partition-key-path") from None

    def from_json(index: int, data: bytes) -> tuple[str | None, str | None]:
        try:
            found = expression.search(orjson.loads(data))
        except orjson.JSONDecodeError as exc:
            return None, f"record {index}: not JSON (--partition-key-path reads JSON): {exc}"
        except jmespath.exceptions.JMESPathError as exc:
            return None, f"record {index}: --partition-key-path failed: {exc}"
        key = key_text(found)
        if key is None:
            return None, f"record {index}: --partition-key-path gave {found!r}, not a string"
        return key, None

    return from_json


@stream_group.command("put")
@click.argument("name")
@click.argument("data", nargs=-1)
@click.option(
    "--input", "input_path", default=None, help="A file of records, one per line (- stdin)."
)
@click.option("--partition-key", "-k", default=None, help="The partition key of every record.")
@click.option(
    "--partition-key-path",
    default=None,
    metavar="JMESPATH",
    help="Take each record's partition key from it (JSON) with this JMESPath expression.",
)
@click.option(
    "--explicit-hash-key", default=None, metavar="H", help="Route by this hash key (a decimal)."
)
@state_options
@output_option
def put_command(
    name: str,
    data: tuple[str, ...],
    input_path: str | None,
    partition_key: str | None,
    partition_key_path: str | None,
    explicit_hash_key: str | None,
    config: str | None,
    state: str | None,
    output: str,
) -> None:
    """Put each DATA (@file reads one from a file), or each non-empty line of
    --input, as a record of stream NAME. Prints a list with an answer per
    record: its Index and SequenceNumber and ShardId, or ErrorCode and
    ErrorMessage; exit 1 when a record failed."""
    keys = _partition_keys(partition_key, partition_key_path)
    records = [read_bytes(item[1:]) if item.startswith("@") else os.fsencode(item) for item in data]
    if input_path is not None:
        records.extend(line for line in read_bytes(input_path).splitlines() if line.strip())
    if not records:
        raise click.UsageError("give at least one DATA, or --input")

    # Each record: its PutRecords entry, or why it has none (it fails alone).
    prepared: list[dict[str, Any] | str] = []
    for index, record in enumerate(records):
        key, problem = keys(index, record)
        if key is None:
            prepared.append(problem or f"record {index}: no partition key")
            continue
        entry: dict[str, Any] = {"Data": record, "PartitionKey": key}
        if explicit_hash_key is not None:
            entry["ExplicitHashKey"] = explicit_hash_key
        prepared.append(entry)

    async def put(store: StreamStore, printer: clikit.ItemPrinter) -> bool:
        """Send PutRecords requests of up to 500 records and 5 MiB, printing
        each record's answer in input order; True if any failed."""
        failed = False
        batch: list[int] = []  # the indexes of one request's records and of failures among them
        entries: list[dict[str, Any]] = []
        size = 0

        async def send() -> None:
            nonlocal failed, size
            answers = iter((await store.put_records(name, entries))["Records"] if entries else [])
            for index in batch:
                item = prepared[index]
                if isinstance(item, str):
                    answer = {"ErrorCode": "InvalidArgumentException", "ErrorMessage": item}
                else:
                    answer = next(answers)
                failed = failed or "ErrorCode" in answer
                printer.write({"Index": index, **answer})
            batch.clear()
            entries.clear()
            size = 0

        for index, item in enumerate(prepared):
            if isinstance(item, dict):
                item_size = len(item["Data"]) + len(item["PartitionKey"].encode())
                if len(entries) == MAX_PUT_RECORDS or (
                    entries and size + item_size > MAX_PUT_REQUEST_BYTES
                ):
                    await send()
                entries.append(item)
                size += item_size
            batch.append(index)
        await send()
        return failed

    # Each request's answers are printed before the next is sent: a long
    # --input shows its progress, and is not held in memory twice.
    with printing_items(output) as printer:
        failed = with_store(config, state, lambda store: put(store, printer))
    if failed:
        raise SystemExit(1)


@stream_group.command("read")
@click.argument("name")
@click.option(
    "--from",
    "start",
    type=StartPosition(),
    default="trim_horizon",
    metavar="POSITION",
    help="trim-horizon (default: the oldest record kept), latest (only what comes next),"
    " a sequence number (that record and all later ones), or a time: ISO 8601 (UTC unless"
    " it says) or seconds since the epoch. A --consumer with checkpoints resumes instead.",
)
@click.option("--follow", "-f", is_flag=True, help="Keep waiting for records until interrupted.")
@click.option(
    "--limit", "-n", type=click.IntRange(min=1), default=None, help="Stop after N records."
)
@click.option(
    "--consumer",
    default=None,
    help="Read as this named consumer: resume from, and save, its checkpoints.",
)
@state_options
@streaming_output_option
def read_command(
    name: str,
    start: str | float,
    follow: bool,
    limit: int | None,
    consumer: str | None,
    config: str | None,
    state: str | None,
    output: str,
) -> None:
    """Print the records of stream NAME as they are read, in order per shard
    (a parent shard's before its children's), until caught up or, with
    --follow, until interrupted (Ctrl-C, SIGTERM)."""

    async def read(store: StreamStore) -> None:
        reader = store.consume(
            name, consumer, start=start, batch=min(limit or 1000, 1000), follow=follow
        )

        async def pump() -> None:
            with printing_items(output, live=True) as printer:
                async for record in reader:
                    if not printer.write(record_json(record)) or printer.count == limit:
                        return

        try:
            await until_signalled(pump())
        finally:
            await reader.aclose()  # saves a consumer's checkpoints

    with_store(config, state, read)


@stream_group.command("split")
@click.argument("name")
@click.argument("shard", type=shard_argument)
@click.option(
    "--at",
    "hash_key",
    default=None,
    metavar="HASHKEY",
    help="The second child's first hash key (default: the middle of SHARD's range).",
)
@state_options
@output_option
def split_command(
    name: str,
    shard: str,
    hash_key: str | None,
    config: str | None,
    state: str | None,
    output: str,
) -> None:
    """Split open SHARD (shardId-000000000000, or 0) of stream NAME in two;
    print the list of the children's ids."""

    async def split(store: StreamStore) -> list[str]:
        at: str | int | None = hash_key
        if at is None:
            for found in await store.list_shards(name):
                if found["ShardId"] == shard:
                    low = int(found["HashKeyRange"]["StartingHashKey"])
                    high = int(found["HashKeyRange"]["EndingHashKey"])
                    at = low + (high - low + 1) // 2
            if at is None:
                raise StreamError(
                    "ResourceNotFoundException", f"shard {shard} not found in stream {name}"
                )
        return await store.split_shard(name, shard, at)

    echo_output(with_store(config, state, split), output, column="ShardId")


@stream_group.command("merge")
@click.argument("name")
@click.argument("shard", type=shard_argument)
@click.argument("adjacent", type=shard_argument)
@state_options
@output_option
def merge_command(
    name: str, shard: str, adjacent: str, config: str | None, state: str | None, output: str
) -> None:
    """Merge open shards SHARD and ADJACENT (their hash key ranges meet) of
    stream NAME into one; print the child's id (ShardId)."""
    child = with_store(config, state, lambda store: store.merge_shards(name, shard, adjacent))
    echo_output({"StreamName": name, "ShardId": child}, output)


@stream_group.command("trim")
@click.argument("name")
@state_options
@output_option
def trim_command(name: str, config: str | None, state: str | None, output: str) -> None:
    """Delete stream NAME's records older than its retention period; print how many (Trimmed)."""
    trimmed = with_store(config, state, lambda store: store.trim(name))
    echo_output({"StreamName": name, "Trimmed": trimmed}, output)


@stream_group.command("checkpoints")
@click.argument("name")
@click.argument("consumer")
@state_options
@output_option
def checkpoints_command(
    name: str, consumer: str, config: str | None, state: str | None, output: str
) -> None:
    """Print where CONSUMER of stream NAME stands in each shard (by shard id)."""
    echo_output(with_store(config, state, lambda store: store.checkpoints(name, consumer)), output)


@stream_group.command("consumers")
@click.argument("name")
@state_options
@output_option
def consumers_command(name: str, config: str | None, state: str | None, output: str) -> None:
    """List the consumers with checkpoints in stream NAME."""
    consumers = with_store(config, state, lambda store: store.consumers(name))
    echo_output(consumers, output, column="Consumer")
