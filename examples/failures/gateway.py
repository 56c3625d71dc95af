"""The payment function of the failures example: it declines cards ending
0000, and the gateway times out for cards ending 9999."""

from __future__ import annotations

from typing import Any

from pipelines.errors import DeliveryError


def charge(payload: Any) -> dict[str, Any]:
    card = str(payload["card"])
    if card.endswith("0000"):
        raise DeliveryError("CardDeclined", f"card of order {payload['order']}", retryable=False)
    if card.endswith("9999"):
        raise DeliveryError("GatewayTimeout", "the payment gateway did not answer", retryable=False)
    return {"order": payload["order"], "charged": payload["total"]}
