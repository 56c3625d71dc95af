"""``pipelines firehose ...``: delivery streams on the command line.

``list`` and ``describe`` read the state database (running or not);
``put`` buffers records as PutRecordBatch does (the running pipeline takes
them up within a second, or at its next start); ``flush`` asks the running
pipeline to write every buffer out now and waits until it has.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import click

from pipelines import clikit
from pipelines.clikit import (
    echo_output,
    output_option,
    printing_items,
    state_options,
    streaming_output_option,
    until_signalled,
)
from pipelines.errors import PipelinesError
from plugins.bucket.lookup import Buckets, buckets_of_config, default_root
from plugins.firehose.api import describe
from plugins.firehose.delivery import buffer_records
from plugins.firehose.objects import delivered
from plugins.firehose.store import FirehoseStore


@click.group("firehose")
def firehose_group() -> None:
    """Delivery streams (Kinesis Data Firehose) of a pipeline."""


@firehose_group.command("list")
@state_options
@output_option
def list_command(config: str | None, state: str | None, output: str) -> None:
    """List the delivery streams with what each buffers."""

    async def run(store: FirehoseStore) -> list[dict[str, Any]]:
        found = []
        for record in await store.streams():
            records, size = await store.buffered(record.name)
            found.append(
                {
                    "DeliveryStreamName": record.name,
                    "DeliveryStreamType": record.config.get("DeliveryStreamType", "DirectPut"),
                    "VersionId": str(record.version),
                    "BufferedRecords": records,
                    "BufferedBytes": size,
                }
            )
        return found

    echo_output(clikit.with_store(FirehoseStore, config, state, run), output)


@firehose_group.command("describe")
@click.argument("name")
@state_options
@output_option
def describe_command(name: str, config: str | None, state: str | None, output: str) -> None:
    """Print delivery stream NAME as DescribeDeliveryStream does."""

    async def run(store: FirehoseStore) -> dict[str, Any]:
        return describe(await store.get(name))

    echo_output(clikit.with_store(FirehoseStore, config, state, run), output)


@firehose_group.command("put")
@click.argument("name")
@click.argument("data", nargs=-1)
@click.option(
    "--input", "input_path", default=None, help="A file of records, one per line (- stdin)."
)
@state_options
@output_option
def put_command(
    name: str,
    data: tuple[str, ...],
    input_path: str | None,
    config: str | None,
    state: str | None,
    output: str,
) -> None:
    """Buffer records (each DATA argument, or each line of --input) into NAME."""
    records = [item.encode() for item in data]
    if input_path is not None:
        text = sys.stdin.buffer.read() if input_path == "-" else Path(input_path).read_bytes()
        records += [line for line in text.splitlines() if line]
    if not records:
        raise click.UsageError("give DATA or --input")

    async def run(store: FirehoseStore) -> dict[str, Any]:
        results = await buffer_records(store, name, records)
        responses = [
            {"RecordId": r.record_id}
            if r.error_code is None
            else {"ErrorCode": r.error_code, "ErrorMessage": r.error_message}
            for r in results
        ]
        failed = sum(1 for r in results if r.error_code is not None)
        return {"FailedPutCount": failed, "RequestResponses": responses}

    echo_output(clikit.with_store(FirehoseStore, config, state, run), output)


@firehose_group.command("flush")
@click.argument("name")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait.")
@state_options
@output_option
def flush_command(
    name: str, timeout: float, config: str | None, state: str | None, output: str
) -> None:
    """Have the running pipeline write every buffer of NAME out now."""

    async def run(store: FirehoseStore) -> dict[str, Any]:
        requested = await store.request_flush(name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = await store.get(name)
            if record.flushed == requested:
                records, size = await store.buffered(name)
                return {
                    "DeliveryStreamName": name,
                    "BufferedRecords": records,
                    "BufferedBytes": size,
                }
            await asyncio.sleep(0.1)
        raise PipelinesError(
            f"delivery stream {name} was not flushed within {timeout:g} s: is its pipeline running?"
        )

    echo_output(clikit.with_store(FirehoseStore, config, state, run), output)


@firehose_group.command("objects")
@click.argument("name")
@click.option("--follow", is_flag=True, help="Go on printing objects as they are written.")
@click.option("--poll", type=float, default=0.5, show_default=True, help="Seconds between looks.")
@state_options
@streaming_output_option
def objects_command(
    name: str, follow: bool, poll: float, config: str | None, state: str | None, output: str
) -> None:
    """Print the objects delivery stream NAME has written (Bucket, Key, Size,
    LastModified, Path), oldest first; with --follow, then each new one as it
    appears, until interrupted (Ctrl-C, SIGTERM)."""
    buckets = _buckets(config, state)

    async def run(store: FirehoseStore) -> None:
        record = await store.get(name)

        async def pump() -> None:
            seen: set[str] = set()
            with printing_items(output, live=follow) as printer:
                while True:
                    found = await asyncio.to_thread(delivered, name, record.config, buckets)
                    for item in found:
                        if item["Path"] not in seen:
                            seen.add(item["Path"])
                            printer.write(item)
                    if not follow:
                        return
                    await asyncio.sleep(poll)

        await until_signalled(pump())

    clikit.with_store(FirehoseStore, config, state, run)


def _buckets(config: str | None, state: str | None) -> Buckets:
    """The buckets the pipeline's config declares (when it is known: --config,
    or pipeline.yaml without --state), the others in their default place."""
    from pipelines.config import load_config

    location = clikit.state_path(config, state)
    path = Path(config) if config is not None else Path("pipeline.yaml")
    if config is None and (state is not None or not path.exists()):
        return Buckets({}, default_root(location))
    return buckets_of_config(load_config([path]), location)
