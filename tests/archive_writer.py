"""A pipeline process that archives events under load until it is killed.

``python -m tests.archive_writer STATE`` puts events from 8 concurrent
producers, 10 per call, and prints each call's accepted event ids as a JSON
line once ``put_events`` has returned. The crash test kills it with SIGKILL
and checks that every printed id is in the archive, once.
"""

from __future__ import annotations

import asyncio
import json
import sys

from pipelines.runtime import Runtime


async def produce(runtime: Runtime, producer: int) -> None:
    n = 0
    while True:
        entries = [
            {"Source": "load", "DetailType": "t", "Detail": json.dumps({"p": producer, "n": n + i})}
            for i in range(10)
        ]
        n += 10
        result = await runtime.put_events(entries)
        ids = [e["EventId"] for e in result["Entries"] if "EventId" in e]
        sys.stdout.write(json.dumps(ids) + "\n")
        sys.stdout.flush()


async def main(state: str) -> None:
    runtime = Runtime(state_path=state)
    await runtime.archives.create_archive("crash")
    async with runtime, asyncio.TaskGroup() as group:
        for producer in range(8):
            group.create_task(produce(runtime, producer))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
