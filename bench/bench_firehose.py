"""Firehose throughput: records per second (200-byte JSON) from PutRecordBatch
through buffering, dynamic partitioning by one key (a MetadataExtraction
query) and GZIP into local files, against a bare loop doing the same work.

- ``put`` (in process): ``FirehoseTarget.put`` in batches of 500, what the
  PutRecordBatch operation calls once the request is read; ``--clients``
  puts at once (their chunks share commits).
- ``http``: the same through the AWS endpoint: raw PutRecordBatch requests
  (JSON 1.1, base64 records, bodies encoded beforehand and untimed) from
  ``--clients`` concurrent aiohttp sessions.

- ``put with Lambda``: ``put`` with a Lambda processor (a ``function``
  resource, ``transform`` below: Firehose's record contract, each record
  Ok with its customer as partition key, its data as it came) instead of
  the MetadataExtraction query; the prefix names ``partitionKeyFromLambda``.
  Its peer, ``bare loop + function``, is the bare loop calling the same
  function on the same invocation events (base64 records of 3 MiB, the
  processor's buffer) and partitioning by the keys it answers.

All end with a flush, so every record is in a file when the clock stops;
``--size`` MiB buffers (default 8) make objects go out while records come in.
The peer, in the same run: a bare loop over the same records that parses
each one (orjson) for its key, appends it with a newline to the key's
buffer and, when a buffer reaches the same size, compresses it with the
same zlib gzip stream at the same level and writes the file. No durability,
no store, no HTTP. Ratios are ours / peer.

Each figure is the best of ``--repeats`` runs of its case, run back to back
(the ± is their spread), beside the load average before and after.

Memory: records put with buffers that never fill (128 MiB, 900 s), the
process's traced allocations (tracemalloc) before and after, per MiB
buffered: the buffers' chunk bookkeeping and the chunks held in memory as
stored (GZIP: compressed), besides the store.

    python bench/bench_firehose.py [--records 200000] [--repeats 3] [--size 8] [--clients 4]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from pipelines.api import ApiServer, served_services
from pipelines.runtime import Runtime
from plugins.firehose.formats import GZIP_LEVEL
from plugins.firehose.target import FirehoseTarget

ROOT = Path(__file__).resolve().parent.parent
# For the tests' plugin manager only, then off the path again: run as
# ``python bench/bench_firehose.py`` the checkout's root is not on the path
# (its tests are no installed package), and pipelines and plugins come from
# the path as given (PYTHONPATH=/path/to/base measures the base's code).
sys.path.insert(0, str(ROOT))
from tests.firehose_helpers import firehose_plugins  # noqa: E402 - the tests' plugins

sys.path.remove(str(ROOT))

CUSTOMERS = 10
BATCH = 500


def records(count: int) -> list[bytes]:
    made = []
    for n in range(count):
        body = {"customer": f"c{n % CUSTOMERS}", "n": n, "page": "/products/42", "ua": "bench"}
        text = orjson.dumps(body)
        made.append(text[:-1] + b',"pad":"' + b"x" * (200 - len(text) - 9) + b'"}')
    return made


def transform(event: dict[str, Any]) -> dict[str, Any]:
    """The Lambda processor of the transformation variant."""
    answered = []
    for record in event["records"]:
        customer = orjson.loads(base64.b64decode(record["data"]))["customer"]
        answered.append(
            {
                "recordId": record["recordId"],
                "result": "Ok",
                "data": record["data"],
                "metadata": {"partitionKeys": {"customer": customer}},
            }
        )
    return {"records": answered}


#: The Lambda processor's buffer (its maximum, as a busy stream would set it).
LAMBDA_BUFFER_MB = 3


def with_lambda(size_mb: int, interval: int) -> dict[str, Any]:
    return {
        **destination(size_mb, interval),
        "Prefix": "customer=!{partitionKeyFromLambda:customer}/",
        "ProcessingConfiguration": {
            "Enabled": True,
            "Processors": [
                {
                    "Type": "Lambda",
                    "Parameters": [
                        {"ParameterName": "LambdaArn", "ParameterValue": "transform"},
                        {
                            "ParameterName": "BufferSizeInMBs",
                            "ParameterValue": str(LAMBDA_BUFFER_MB),
                        },
                    ],
                },
                {"Type": "AppendDelimiterToRecord"},
            ],
        },
    }


def destination(size_mb: int, interval: int) -> dict[str, Any]:
    return {
        "BucketARN": "arn:aws:s3:::bench",
        "Prefix": "customer=!{partitionKeyFromQuery:customer}/",
        "ErrorOutputPrefix": "errors/!{firehose:error-output-type}/",
        "CompressionFormat": "GZIP",
        "BufferingHints": {"SizeInMBs": size_mb, "IntervalInSeconds": interval},
        "DynamicPartitioningConfiguration": {"Enabled": True},
        "ProcessingConfiguration": {
            "Enabled": True,
            "Processors": [
                {
                    "Type": "MetadataExtraction",
                    "Parameters": [
                        {
                            "ParameterName": "MetadataExtractionQuery",
                            "ParameterValue": "{customer: .customer}",
                        },
                        {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"},
                    ],
                },
                {"Type": "AppendDelimiterToRecord"},
            ],
        },
    }


def bare(
    data: list[bytes], directory: Path, size: int, function: Callable[..., Any] | None = None
) -> None:
    buffers: dict[str, list[bytes]] = {}
    sizes: dict[str, int] = {}
    written = 0

    def write(key: str) -> None:
        nonlocal written
        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        folder = directory / f"customer={key}"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"object-{written}.gz", "wb") as out:
            for piece in buffers[key]:
                out.write(compressor.compress(piece))
            out.write(compressor.flush())
        written += 1
        buffers[key] = []
        sizes[key] = 0

    def keyed() -> Any:
        if function is None:
            for record in data:
                yield orjson.loads(record)["customer"], record
            return
        limit = LAMBDA_BUFFER_MB * 1024 * 1024
        start = 0
        while start < len(data):
            end, taken = start, 0
            while end < len(data) and taken < limit:
                taken += len(data[end])
                end += 1
            event = {
                "invocationId": "bench",
                "records": [
                    {"recordId": str(i), "data": base64.b64encode(data[i]).decode()}
                    for i in range(start, end)
                ],
            }
            for answer in function(event)["records"]:
                key = answer["metadata"]["partitionKeys"]["customer"]
                yield key, base64.b64decode(answer["data"])
            start = end

    for key, record in keyed():
        buffers.setdefault(key, []).append(record + b"\n")
        sizes[key] = sizes.get(key, 0) + len(record) + 1
        if sizes[key] >= size:
            write(key)
    for key in list(buffers):
        if buffers[key]:
            write(key)


async def pipeline(
    root: Path, size_mb: int, interval: int, *, lambda_processor: bool = False
) -> tuple[Runtime, ApiServer, FirehoseTarget]:
    plugins = firehose_plugins()
    runtime = Runtime(state_path=root / "state.db", plugins=plugins)
    if lambda_processor:
        runtime.add_resource("transform", "function", {"function": f"{__name__}:transform"})
    made = (with_lambda if lambda_processor else destination)(size_mb, interval)
    runtime.add_resource("bench", "firehose", {"destination": made})
    server = ApiServer(runtime, served_services(plugins), "127.0.0.1", 0)
    await server.start()
    await runtime.start()
    target = runtime.resource("bench")
    assert isinstance(target, FirehoseTarget)
    return runtime, server, target


async def run_put(
    data: list[bytes], root: Path, size_mb: int, clients: int, *, lambda_processor: bool = False
) -> float:
    runtime, server, target = await pipeline(root, size_mb, 900, lambda_processor=lambda_processor)
    try:
        batches = [data[i : i + BATCH] for i in range(0, len(data), BATCH)]
        started = time.perf_counter()

        async def client(k: int) -> None:
            for batch in batches[k::clients]:
                results = await target.put(batch)
                assert all(r.record_id for r in results)

        await asyncio.gather(*(client(k) for k in range(clients)))
        assert target.stream is not None
        await target.stream.flush()
        took = time.perf_counter() - started
        # Every record partitioned (by the query or the function): none in the error output.
        assert not (root / "buckets" / "bench" / "errors").exists()
        assert (root / "buckets" / "bench" / "customer=c0").is_dir()
        return took
    finally:
        await runtime.stop()
        await server.close()


async def run_http(data: list[bytes], root: Path, size_mb: int, clients: int) -> float:
    runtime, server, target = await pipeline(root, size_mb, 900)
    headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "Firehose_20150804.PutRecordBatch",
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/firehose/"
        "aws4_request, SignedHeaders=host, Signature=0",
    }
    bodies = [
        orjson.dumps(
            {
                "DeliveryStreamName": "bench",
                "Records": [{"Data": base64.b64encode(r).decode()} for r in data[i : i + BATCH]],
            }
        )
        for i in range(0, len(data), BATCH)
    ]
    try:
        async with aiohttp.ClientSession() as session:
            started = time.perf_counter()

            async def client(k: int) -> None:
                for body in bodies[k::clients]:
                    async with session.post(server.url, data=body, headers=headers) as answer:
                        found = await answer.json(content_type=None)
                        assert answer.status == 200 and found["FailedPutCount"] == 0, found

            await asyncio.gather(*(client(k) for k in range(clients)))
            assert target.stream is not None
            await target.stream.flush()
            return time.perf_counter() - started
    finally:
        await runtime.stop()
        await server.close()


async def memory(data: list[bytes], root: Path) -> tuple[float, float]:
    """(bytes of memory per buffered MiB, MiB buffered)."""
    runtime, server, target = await pipeline(root, 128, 900)
    try:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(0, len(data), BATCH):
            await target.put(data[i : i + BATCH])
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        buffered = sum(len(r) + 1 for r in data) / (1024 * 1024)
        return (after - before) / buffered, buffered
    finally:
        await runtime.stop()
        await server.close()


def timed(work: Callable[[Path], Awaitable[float] | float], repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        root = Path(tempfile.mkdtemp(prefix="bench-firehose-"))
        try:
            found = work(root)
            if asyncio.iscoroutine(found):
                found = asyncio.run(found)
            assert isinstance(found, float)
            seconds.append(found)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=8, help="buffer size in MiB")
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    data = records(args.records)
    size = args.size * 1024 * 1024
    print(
        f"{args.records:,} records of {len(data[0])} bytes, {CUSTOMERS} partitions, GZIP,"
        f" {args.size} MiB buffers, {args.clients} clients, best of {args.repeats}"
    )
    print(f"load average before: {os.getloadavg()}")

    def peer(root: Path) -> float:
        started = time.perf_counter()
        bare(data, root, size)
        return time.perf_counter() - started

    def peer_with_function(root: Path) -> float:
        started = time.perf_counter()
        bare(data, root, size, transform)
        return time.perf_counter() - started

    figures = {
        "bare loop (peer)": timed(peer, args.repeats),
        "put (in process)": timed(
            lambda root: run_put(data, root, args.size, args.clients), args.repeats
        ),
        "PutRecordBatch over HTTP": timed(
            lambda root: run_http(data, root, args.size, args.clients), args.repeats
        ),
        "bare loop + function (peer)": timed(peer_with_function, args.repeats),
        "put with Lambda (in process)": timed(
            lambda root: run_put(data, root, args.size, args.clients, lambda_processor=True),
            args.repeats,
        ),
    }
    peers = {
        name: args.records / min(figures[name])
        for name in ("bare loop (peer)", "bare loop + function (peer)")
    }
    for name, seconds in figures.items():
        rate = args.records / min(seconds)
        spread = statistics.pstdev([args.records / s for s in seconds])
        peer_name = (
            "bare loop + function (peer)"
            if "function" in name or "Lambda" in name
            else ("bare loop (peer)")
        )
        print(
            f"{name:30} {rate:12,.0f} records/s (±{spread:,.0f})"
            f"  ratio {rate / peers[peer_name]:.2f} (to {peer_name})"
        )
    root = Path(tempfile.mkdtemp(prefix="bench-firehose-"))
    try:
        per_mib, buffered = asyncio.run(memory(data, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"memory: {per_mib:,.0f} bytes per buffered MiB ({buffered:.1f} MiB buffered)")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
