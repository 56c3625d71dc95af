"""Functions for the firehose tests' Lambda processors (Firehose's record contract)."""

from __future__ import annotations

import base64
import json
from typing import Any

CALLS: list[dict[str, Any]] = []


def _decoded(record: dict[str, Any]) -> Any:
    return json.loads(base64.b64decode(record["data"]))


def upper_and_key(event: dict[str, Any]) -> dict[str, Any]:
    """Upper-cases ``name``, keys by ``customer``, drops bots, fails ``bad`` records."""
    CALLS.append(event)
    out = []
    for record in event["records"]:
        body = _decoded(record)
        if body.get("bot"):
            out.append({"recordId": record["recordId"], "result": "Dropped", "data": ""})
            continue
        if body.get("bad"):
            out.append(
                {
                    "recordId": record["recordId"],
                    "result": "ProcessingFailed",
                    "data": record["data"],
                }
            )
            continue
        body["name"] = str(body.get("name", "")).upper()
        out.append(
            {
                "recordId": record["recordId"],
                "result": "Ok",
                "data": base64.b64encode(json.dumps(body).encode()).decode(),
                "metadata": {"partitionKeys": {"customer": str(body["customer"])}},
            }
        )
    return {"records": out}


def always_fails(event: dict[str, Any]) -> dict[str, Any]:
    CALLS.append(event)
    raise RuntimeError("the function is broken")


def forgets_records(event: dict[str, Any]) -> dict[str, Any]:
    """Answers only the first record."""
    first = event["records"][0]
    return {"records": [{"recordId": first["recordId"], "result": "Ok", "data": first["data"]}]}
