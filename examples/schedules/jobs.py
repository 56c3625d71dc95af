"""The jobs the schedules example runs: each prints one JSON line to stdout."""

from __future__ import annotations

import json
import sys
from typing import Any


def emit(kind: str, **fields: Any) -> None:
    # One write per line: jobs run in worker threads, and print() writes the
    # newline separately, so lines from two threads could run together.
    sys.stdout.write(json.dumps({"job": kind, **fields}) + "\n")
    sys.stdout.flush()


def nightly_report(request: dict[str, Any]) -> dict[str, Any]:
    """Would build the report for the day before ``request["scheduled"]``."""
    emit("report", scheduled=request["scheduled"])
    return {"built": request["report"]}


def heartbeat(scheduled_time: str) -> None:
    emit("heartbeat", scheduled=scheduled_time)


def dead_letter(event: dict[str, Any], context: Any) -> None:
    emit(
        "dead-letter", rule=context.attributes["RULE_NAME"], error=context.attributes["ERROR_CODE"]
    )
