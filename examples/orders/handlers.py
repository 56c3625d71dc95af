"""The functions the orders example routes events to (plain Python callables)."""

from __future__ import annotations

from typing import Any

from pipelines.errors import DeliveryError

shipped: list[Any] = []
audited: list[Any] = []
charged: list[Any] = []
dead_letters: list[dict[str, Any]] = []
charge_attempts: dict[str, int] = {}


def ship(payload: Any) -> None:
    """A sync function: runs in the target's worker threads."""
    shipped.append(payload)


async def audit(payload: Any) -> None:
    audited.append(payload)


async def charge(payload: Any) -> dict[str, Any]:
    """The payment service: declines card 0000 every time, and is down for
    order o-3's first attempt (a retry gets through)."""
    order = payload["order"]
    charge_attempts[order] = charge_attempts.get(order, 0) + 1
    if payload["card"].endswith("0000"):
        raise ValueError(f"card declined for order {order}")
    if order == "o-3" and charge_attempts[order] == 1:
        raise DeliveryError("ServiceUnavailable", "payments is down", retryable=True)
    charged.append(order)
    return {"charged": order}


async def dead_letter(event: Any, context: Any) -> None:
    """The dead-letter target: the original event with EventBridge's attributes."""
    dead_letters.append({"event_id": event["id"], **context.attributes})
