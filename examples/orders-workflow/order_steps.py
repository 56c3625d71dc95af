"""The functions the orders workflow's Task states invoke (function resources).

Each prints one JSON line per call. What they do depends on the order, so
the sample events take every path:

- ``charge``: a card ending 0000 is declined (``CardDeclined``: the state
  machine's Catch sends the order to Refund); order o-3's first attempt
  finds the payment gateway busy (``PaymentGatewayBusy``: its Retry tries
  again after a second);
- ``reserve``: one line item of the Map; the SKU ``sold-out`` is out of
  stock (``OutOfStock``: the Map fails, the order is refunded);
- ``refund``: gives back what was charged (nothing when the charge failed).

A function's exception type is the Task's error name, as Lambda's is.
"""

from __future__ import annotations

import json
import sys
from typing import Any

_attempts: dict[str, int] = {}


class CardDeclined(Exception):
    pass


class PaymentGatewayBusy(Exception):
    pass


class OutOfStock(Exception):
    pass


def _say(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def charge(payment: dict[str, Any]) -> dict[str, Any]:
    order = payment["order"]
    _attempts[order] = attempt = _attempts.get(order, 0) + 1
    if payment["card"].endswith("0000"):
        _say(step="charge", order=order, attempt=attempt, result="declined")
        raise CardDeclined(f"card declined for order {order}")
    if order == "o-3" and attempt == 1:
        _say(step="charge", order=order, attempt=attempt, result="gateway busy")
        raise PaymentGatewayBusy("the payment gateway is busy; try again")
    _say(step="charge", order=order, attempt=attempt, result="charged")
    return {"charge_id": f"ch-{order}", "amount": payment["total"]}


async def reserve(request: dict[str, Any]) -> dict[str, Any]:
    line = request["line"]
    if line["sku"] == "sold-out":
        _say(step="reserve", order=request["order"], sku=line["sku"], result="out of stock")
        raise OutOfStock(f"{line['sku']} is out of stock")
    _say(step="reserve", order=request["order"], sku=line["sku"], qty=line["qty"])
    return {"sku": line["sku"], "qty": line["qty"], "bin": f"B-{len(line['sku'])}"}


async def refund(request: dict[str, Any]) -> dict[str, Any]:
    failure = request.get("failure") or {}
    charged = failure.get("Error") != "CardDeclined"  # a declined card took nothing
    amount = request["total"] if charged else 0
    _say(step="refund", order=request["order"], refunded=amount, why=failure.get("Error"))
    return {"refunded": amount}
