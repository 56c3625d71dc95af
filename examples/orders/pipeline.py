"""An order pipeline: rules route order events to function targets.

- every order goes to ``audit`` (its detail only, via ``input_path``);
- orders over 100 go to ``ship``, transformed by an ``input_transformer``;
- every order is charged by ``charge``, which retries failures (at most
  twice) and sends what still fails to the ``dead-letters`` target.

Run it: ``python examples/orders/pipeline.py``. It prints one JSON document
with what each target received, the dead letters and the bus's metrics. The
backoff is shortened (0.1 to 0.5 s) so the example finishes in a second.
"""

from __future__ import annotations

import asyncio
import json
import sys

import handlers

from pipelines.delivery import Backoff
from pipelines.limits import Limits
from pipelines.runtime import Runtime

ORDERS = [
    {"order": "o-1", "total": 250, "card": "4111-1111"},
    {"order": "o-2", "total": 40, "card": "5500-0000"},
    {"order": "o-3", "total": 120, "card": "4000-1234"},
]


async def main() -> dict[str, object]:
    runtime = Runtime(limits=Limits(backoff=Backoff(base=0.1, cap=0.5)))
    runtime.add_resource("audit", "function", {"function": "handlers:audit"})
    runtime.add_resource("ship", "function", {"function": "handlers:ship", "timeout": 5})
    runtime.add_resource("charge", "function", {"function": "handlers:charge"})
    runtime.add_resource("dead-letters", "function", {"function": "handlers:dead_letter"})

    bus = runtime.bus()
    orders = {"source": ["shop.orders"], "detail-type": ["OrderPlaced"]}
    bus.put_rule("audit-all", pattern=orders, description="every order, for the audit log")
    await bus.put_targets(
        "audit-all", [{"id": "audit", "resource": "audit", "input_path": "$.detail"}]
    )

    bus.put_rule("ship-large", pattern={**orders, "detail": {"total": [{"numeric": [">", 100]}]}})
    await bus.put_targets(
        "ship-large",
        [
            {
                "id": "ship",
                "resource": "ship",
                "input_transformer": {
                    "input_paths_map": {"order": "$.detail.order", "total": "$.detail.total"},
                    "input_template": (
                        '{"ship": <order>, "value": <total>, "why": "<aws.events.rule-name>"}'
                    ),
                },
            }
        ],
    )

    bus.put_rule("charge-all", pattern=orders)
    await bus.put_targets(
        "charge-all",
        [
            {
                "id": "charge",
                "resource": "charge",
                "input_path": "$.detail",
                "retry_policy": {"maximum_retry_attempts": 2, "maximum_event_age": 60},
                "dead_letter": "dead-letters",
            }
        ],
    )

    async with runtime:
        result = await runtime.put_events(
            [
                {"Source": "shop.orders", "DetailType": "OrderPlaced", "Detail": json.dumps(order)}
                for order in ORDERS
            ]
            + [{"Source": "shop.orders", "DetailType": "OrderPlaced", "Detail": "not json"}]
        )
        # Wait for the retries: the dead letter is the last thing to arrive.
        async with asyncio.timeout(10):
            while not handlers.dead_letters:
                await asyncio.sleep(0.05)
            await runtime.wait_until_idle()

    metrics = {
        f"{point.name} {dict(point.dimensions).get('RuleName', '(bus)')}": point.value
        for point in runtime.counters.snapshot()
    }
    return {
        "put_events": result,
        "audited": handlers.audited,
        "shipped": handlers.shipped,
        "charged": handlers.charged,
        "charge_attempts": handlers.charge_attempts,
        "dead_letters": handlers.dead_letters,
        "metrics": metrics,
    }


if __name__ == "__main__":
    json.dump(asyncio.run(main()), sys.stdout, indent=2)
    print()
