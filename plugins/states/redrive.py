"""RedriveExecution's rules: which ended executions may run again, and from where.

A STANDARD execution that ended FAILED, TIMED_OUT or ABORTED can be
redriven (``Executions.redrive_execution``): it runs again under the same ARN,
from the top-level state that was under way when it ended (``redrive_point``:
that state's name, the input it entered with and the variables then in
scope, kept as the ended execution's checkpoint), with the same definition
revision; the states that succeeded before it are not run again. Its history
goes on: an ``ExecutionRedriven`` event (``redriveCount``), then the state
entered again. The machine's TimeoutSeconds counts from the redrive.

What AWS refuses (``ExecutionNotRedrivable``, with the reason DescribeExecution
gives as ``redriveStatusReason``): a RUNNING or SUCCEEDED execution; one that
ended more than 14 days ago; one open for more than a year in all; one whose
history would pass 24,999 events; and (``REDRIVE_LIMIT``) one redriven 1,000
times already.
"""

from __future__ import annotations

from typing import Any

from plugins.states.history import Checkpoint
from plugins.states.store import RUNNING, SUCCEEDED, ExecutionRecord, StatesStore

#: Days after its end during which an execution can be redriven (AWS's redrivable period).
REDRIVABLE_DAYS = 14
#: An execution open longer than this in all is not redriven (AWS: one year).
MAX_OPEN_SECONDS = 365 * 24 * 3600
#: A redriven execution's history must have room for ExecutionRedriven and one more event.
HISTORY_LIMIT = 24_999
#: How many times one execution may be redriven.
REDRIVE_LIMIT = 1_000
#: How many of an execution's last client tokens answer again, and for how long (AWS's).
KEPT_TOKENS = 10
TOKEN_SECONDS = 15 * 60

REDRIVABLE = "REDRIVABLE"
NOT_REDRIVABLE = "NOT_REDRIVABLE"


def not_redrivable(record: ExecutionRecord, now: float, events: int) -> str | None:
    """Why ``record`` cannot be redriven now (AWS's ``redriveStatusReason``), or None."""
    if record.status in (RUNNING, SUCCEEDED):
        return f"Execution is {record.status} and cannot be redriven"
    stopped = record.stopped if record.stopped is not None else now
    if now - stopped > REDRIVABLE_DAYS * 86_400:
        return "Execution redrivable period exceeded"
    if now - record.started > MAX_OPEN_SECONDS:
        return "Execution has exceeded the max execution time"
    if events >= HISTORY_LIMIT:
        return "Execution history event limit exceeded"
    if record.redrive_count >= REDRIVE_LIMIT:
        return "Execution redrive limit exceeded"
    return None


def redrive_status(record: ExecutionRecord, now: float, events: int) -> dict[str, Any]:
    """DescribeExecution's ``redriveStatus`` and, when not redrivable, its reason."""
    reason = not_redrivable(record, now, events)
    if reason is None:
        return {"redriveStatus": REDRIVABLE}
    return {"redriveStatus": NOT_REDRIVABLE, "redriveStatusReason": reason}


async def redrive_fields(store: StatesStore, record: ExecutionRecord) -> dict[str, Any]:
    """DescribeExecution's redrive fields: status, reason, and when it was
    last redriven (epoch seconds), for the API and ``pipelines sfn describe``."""
    out = redrive_status(record, store.clock.time(), record.last_event)
    if record.redrive_count:
        date = (await store.redrive_dates([record.arn])).get(record.arn)
        if date is not None:
            out["redriveDate"] = date
    return out


def redrive_point(under_way: Checkpoint | None) -> dict[str, Any] | None:
    """What an ended execution keeps of the state under way (its checkpoint column)."""
    if under_way is None:
        return None
    return {
        "nextState": under_way.next_state,
        "input": under_way.input,
        "variables": under_way.variables,
    }


def resumed_at(point: Any, start_at: str, input_value: Any, event_id: int) -> Checkpoint:
    """The checkpoint a redrive runs from: the kept point (a checkpoint written while
    it ran, or the state under way when it ended), else the machine's start; the
    history goes on after the ExecutionRedriven event ``event_id``."""
    if isinstance(point, dict) and "nextState" in point:
        return Checkpoint(
            point["nextState"],
            point.get("input"),
            event_id,
            event_id,
            variables=dict(point.get("variables") or {}),
        )
    return Checkpoint(start_at, input_value, event_id, event_id)
