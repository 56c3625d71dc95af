"""The approver: answers the orders workflow's approval requests.

Each request is a message on the `approvals` queue holding the order and
the task token its execution waits on. This script takes them from the
queue, answers each token with SendTaskSuccess (``{"approved": ..., "by":
..., "reason": ...}``) and deletes the message. The answer goes into the
pipeline's state database (the one pipeline.yaml names, or
``$PIPELINES_STATE``), where the running state machine finds it within a
second; given while the pipeline is stopped, it is found when it runs again.

    python examples/orders-workflow/approve.py [--reject o-3 ...] [--by ada]
        [--count N] [--wait SECONDS]

It stops once it has answered ``--count`` requests (default: when the queue
has stayed empty for ``--wait`` seconds, 5 by default), and prints one JSON
line per answer.

(Once the stepfunctions API is served on the AWS endpoint, the same answer
is ``aws stepfunctions send-task-success --task-token ... --task-output
...``, or boto3's ``send_task_success``, from anywhere.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from pipelines.clikit import state_database
from plugins.queue.store import QueueStore
from plugins.states.store import StatesStore

HERE = Path(__file__).resolve().parent


async def approve(state: Any, rejected: set[str], by: str, count: int | None, wait: float) -> int:
    answered = 0
    async with (
        QueueStore.existing(state) as queues,
        StatesStore.existing(state) as states,
    ):
        quiet_since = time.monotonic()
        while count is None or answered < count:
            messages = await queues.receive("approvals", 10, wait_time=0)
            if not messages:
                if count is None and time.monotonic() - quiet_since > wait:
                    break
                await asyncio.sleep(0.2)
                continue
            quiet_since = time.monotonic()
            for message in messages:
                request = json.loads(message.body)
                order = request["order"]
                approved = order not in rejected
                answer = {"approved": approved, "by": by}
                if not approved:
                    answer["reason"] = f"{by} rejected order {order}"
                if not await states.answer_token(request["token"], json.dumps(answer), None, None):
                    print(f"order {order}: its task no longer waits", file=sys.stderr)
                await queues.delete("approvals", message.receipt_handle)
                print(json.dumps({"order": order, **answer}), flush=True)
                answered += 1
    return answered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", default=str(HERE / "pipeline.yaml"))
    parser.add_argument("--reject", action="append", default=[], metavar="ORDER")
    parser.add_argument("--by", default="ada")
    parser.add_argument("--count", type=int)
    parser.add_argument("--wait", type=float, default=5.0)
    args = parser.parse_args()
    state = state_database(args.config, None)
    asyncio.run(approve(state, set(args.reject), args.by, args.count, args.wait))


if __name__ == "__main__":
    main()
