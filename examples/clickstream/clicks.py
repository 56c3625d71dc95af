"""The consumers of examples/clickstream: each gets a batch of Kinesis records
as Lambda would hand them ({"Records": [{"kinesis": {"data": base64...}}]})."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any


def _views(event: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(base64.b64decode(r["kinesis"]["data"])) for r in event["Records"]]


def _append(consumer: str, views: list[dict[str, Any]]) -> None:
    out = Path(os.environ.get("CLICKSTREAM_OUT", ".pipelines/clickstream"))
    out.mkdir(parents=True, exist_ok=True)
    with (out / f"{consumer}.jsonl").open("a") as file:
        for view in views:
            file.write(json.dumps(view) + "\n")


def dashboard(event: dict[str, Any]) -> dict[str, int]:
    views = _views(event)
    _append("dashboard", views)
    return {"counted": len(views)}


def warehouse(event: dict[str, Any]) -> dict[str, int]:
    time.sleep(0.1)  # a bulk load takes its time
    views = _views(event)
    _append("warehouse", views)
    return {"loaded": len(views)}
