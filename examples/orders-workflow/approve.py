"""The approver: answers the orders workflow's approval requests.

Each request is a message on the `approvals` queue holding the order and
the task token its execution waits on. This script takes them from the
queue (in the pipeline's state database, as ``pipelines queue receive``
does), answers each token with SendTaskSuccess (``{"approved": ..., "by":
..., "reason": ...}``) and deletes the message.

SendTaskSuccess goes to the running pipeline through its control socket
(the stepfunctions operation the AWS endpoint serves, run in the runner:
the waiting task goes on at once). With the pipeline stopped, the answer
is written into its state database instead, and found when it runs again.
From elsewhere, with the pipeline's ``api`` endpoint on, the same answer
is ``aws stepfunctions send-task-success --task-token ... --task-output ...``
(or boto3's ``send_task_success``).

    python examples/orders-workflow/approve.py [--reject o-3 ...] [--by ada]
        [--count N] [--wait SECONDS]

It stops once it has answered ``--count`` requests (default: when the queue
has stayed empty for ``--wait`` seconds, 5 by default), and prints one JSON
line per answer.
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
from pipelines.config import load_config
from pipelines.control import aws, default_socket
from pipelines.errors import ControlError
from plugins.queue.store import QueueStore
from plugins.states.store import StatesStore

HERE = Path(__file__).resolve().parent


async def send_task_success(socket: Path, state: Any, token: str, output: str) -> str:
    """SendTaskSuccess through the running pipeline, else into its state
    database; how it went: "answered", "kept" (no pipeline runs) or an error."""
    try:
        await aws(
            socket, "stepfunctions", "SendTaskSuccess", {"taskToken": token, "output": output}
        )
        return "answered"
    except ControlError as error:
        if "not running" not in str(error) and "no pipeline" not in str(error):
            return str(error)
    async with StatesStore.existing(state) as states:
        kept = await states.answer_token(token, output, None, None)
    return "kept" if kept else "its task no longer waits"


async def approve(
    socket: Path, state: Any, rejected: set[str], by: str, count: int | None, wait: float
) -> int:
    answered = 0
    async with QueueStore.existing(state) as queues:
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
                how = await send_task_success(socket, state, request["token"], json.dumps(answer))
                if how not in ("answered", "kept"):
                    print(f"order {order}: {how}", file=sys.stderr)
                await queues.delete("approvals", message.receipt_handle)
                print(json.dumps({"order": order, **answer, "sent": how}), flush=True)
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
    socket = default_socket(load_config([Path(args.config)]))
    asyncio.run(approve(socket, state, set(args.reject), args.by, args.count, args.wait))


if __name__ == "__main__":
    main()
