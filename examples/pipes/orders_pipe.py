"""The functions of examples/pipes: the pipe's enrichment (each order with its
customer's tier) and the nightly report the schedule asks for."""

from __future__ import annotations

import json
from typing import Any

#: The customers' tiers (a lookup a real enrichment would make).
TIERS = {"ann": "gold", "bob": "silver"}


def enrich(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """SQS records in, one enriched order per record out (same order)."""
    orders = [json.loads(record["body"]) for record in batch]
    return [{**order, "tier": TIERS.get(order["customer"], "standard")} for order in orders]


def report(request: dict[str, Any]) -> dict[str, Any]:
    """The nightly report's request as the schedule sent it (a real one would
    read the day's shipments and write the report somewhere)."""
    return {"report": request["report"], "for": request["for"], "status": "queued"}
