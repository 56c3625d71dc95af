"""Callables the pipes tests name as functions (tests.pipes_functions:NAME)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

#: Every batch each function was given, in order.
batches: dict[str, list[Any]] = {}
#: Identifiers that fail once (then succeed): a function's partial failure.
fail_once: set[str] = set()
#: Identifiers that always fail.
fail_always: set[str] = set()


def _seen(name: str, batch: Any) -> None:
    batches.setdefault(name, []).append(batch)


def collect(batch: list[Any]) -> None:
    _seen("collect", batch)


#: What ``held`` waits for before it answers (a test sets it up and sets it).
gate: asyncio.Event | None = None


async def held(batch: list[Any]) -> None:
    """Takes the batch, then answers only once ``gate`` is set: a delivery under way."""
    _seen("held", batch)
    assert gate is not None
    await gate.wait()


def enrich(batch: list[Any]) -> list[Any]:
    """Each order with its customer's tier added."""
    _seen("enrich", batch)
    out = []
    for record in batch:
        order = json.loads(record["body"]) if "body" in record else record
        out.append({**order, "tier": "gold" if order.get("total", 0) >= 100 else "plain"})
    return out


def enrich_nothing(batch: list[Any]) -> list[Any]:
    _seen("enrich_nothing", batch)
    return []


def enrich_malformed(batch: list[Any]) -> Any:
    _seen("enrich_malformed", batch)
    return object()  # no JSON can say it


def partial(batch: list[Any]) -> dict[str, Any]:
    """Fails the records named in fail_once (once each) and fail_always, by
    their identifier or by their body: a body is known before the message is
    sent, so a running pipe cannot take it before the test marks it."""
    _seen("partial", batch)
    failures = []
    for record in batch:
        identifier = record.get("eventID") or record.get("messageId")
        names = {identifier, record.get("body")}
        if names & fail_always or names & fail_once:
            fail_once.difference_update(names)
            failures.append({"itemIdentifier": identifier})
    return {"batchItemFailures": failures}


def lambda_partial(event: dict[str, Any]) -> dict[str, Any]:
    """A handler written for Lambda's SQS event source mapping: the records
    under "Records", failures as ``partial`` fails them."""
    _seen("lambda_partial", event)
    return partial(event["Records"])


def fail_by_data(batch: list[Any]) -> dict[str, Any]:
    """Fails (whole batch) while it holds a record whose data says "poison"."""
    _seen("fail_by_data", batch)
    for record in batch:
        if json.loads(base64.b64decode(record["data"]))["kind"] == "poison":
            raise ValueError("poison in the batch")
    return {"batchItemFailures": []}


def fail_fifo(batch: list[Any]) -> dict[str, Any]:
    """Fails the first message whose body says fail."""
    _seen("fail_fifo", batch)
    for record in batch:
        if json.loads(record["body"]).get("fail"):
            return {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}
    return {"batchItemFailures": []}


def reset() -> None:
    batches.clear()
    fail_once.clear()
    fail_always.clear()


def fan_out(batch: list[Any]) -> list[Any]:
    """Eleven events for each record: more than a queue target takes at once."""
    _seen("fan_out", batch)
    return [{"copy": n} for _ in batch for n in range(11)]


def refuse_when_asked(batch: list[Any]) -> None:
    """Fails the batch when an event's detail says refuse."""
    _seen("refuse_when_asked", batch)
    if any(event["detail"].get("refuse") for event in batch):
        raise ValueError("refused as asked")
