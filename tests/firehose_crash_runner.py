"""A runner for the firehose crash test: puts numbered records into a
delivery stream as fast as it can (several puts at once) and prints each
acknowledged put's numbers, one line each, until it is killed.

    python -m tests.firehose_crash_runner STATE DIRECTORY
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from pipelines.runtime import Runtime
from plugins.firehose.target import FirehoseTarget

from .firehose_helpers import firehose_plugins

DESTINATION = {
    "BucketARN": "arn:aws:s3:::lake",
    "Prefix": "p=!{partitionKeyFromQuery:p}/",
    "ErrorOutputPrefix": "errors/!{firehose:error-output-type}/",
    "DynamicPartitioningConfiguration": {"Enabled": True},
    # Size 1 MiB: objects are written while records come in, so a kill may
    # land between an object's rename and its chunks' delete.
    "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 900},
    "ProcessingConfiguration": {
        "Enabled": True,
        "Processors": [
            {
                "Type": "MetadataExtraction",
                "Parameters": [
                    {"ParameterName": "MetadataExtractionQuery", "ParameterValue": "{p: .p}"}
                ],
            },
            {"Type": "AppendDelimiterToRecord"},
        ],
    },
}


def runtime(state: str, directory: str) -> Runtime:
    made = Runtime(state_path=Path(state), plugins=firehose_plugins())
    # A declared bucket: the stream finds its directory through the bucket plugin.
    made.add_resource("objects", "bucket", {"directory": f"{directory}/lake", "bucket": "lake"})
    made.add_resource("lake", "firehose", {"destination": DESTINATION})
    return made


async def putter(target: FirehoseTarget, first: int, step: int) -> None:
    n = first
    pad = "x" * 150
    while True:
        numbers = range(n, n + 50)
        records = [f'{{"p": "{i % 4}", "n": {i}, "pad": "{pad}"}}'.encode() for i in numbers]
        results = await target.put(records)
        acked = [str(i) for i, r in zip(numbers, results, strict=True) if r.record_id]
        sys.stdout.write(" ".join(acked) + "\n")
        sys.stdout.flush()
        n += step


async def main(state: str, directory: str) -> None:
    async with runtime(state, directory) as running:
        target = running.resource("lake")
        assert isinstance(target, FirehoseTarget)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await asyncio.gather(*(putter(target, k * 50, 200) for k in range(4)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
