"""The functions the YAML orders pipeline routes to: each prints a JSON line."""

from __future__ import annotations

import json
import sys
from typing import Any

from pipelines.errors import DeliveryError

_attempts: dict[str, int] = {}


def _say(**fields: Any) -> None:
    # One write per line: ship runs in worker threads, and print() writes the
    # newline separately, so lines from two threads could run together.
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def audit(order: dict[str, Any]) -> None:
    _say(step="audit", order=order["order"], total=order["total"])


def ship(request: dict[str, Any]) -> None:
    """A plain function: it runs in the target's worker threads."""
    _say(step="ship", **request)


async def charge(order: dict[str, Any]) -> None:
    """Declines cards ending 0000 (for good: not retryable); the payment
    service is down for the first attempt of order o-3 (retryable)."""
    number = order["order"]
    _attempts[number] = _attempts.get(number, 0) + 1
    if order["card"].endswith("0000"):
        raise DeliveryError("CardDeclined", f"card declined for order {number}", retryable=False)
    if number == "o-3" and _attempts[number] == 1:
        raise DeliveryError("ServiceUnavailable", "payments is down", retryable=True)
    _say(step="charge", order=number, attempt=_attempts[number])
