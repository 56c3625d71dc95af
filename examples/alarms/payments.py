"""The payment function of the alarms example: it declines cards ending 0000."""

from __future__ import annotations

from typing import Any

from pipelines.errors import DeliveryError


def charge(payload: Any) -> dict[str, Any]:
    if str(payload["card"]).endswith("0000"):
        # Not retryable: each declined order is one failed invocation at once.
        raise DeliveryError("CardDeclined", f"card of order {payload['order']}", retryable=False)
    return {"order": payload["order"], "charged": payload["total"]}
