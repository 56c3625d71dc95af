"""The schema registry's arms of ``bench_bus.py --schemas`` (issue 32's
measure: what discovery and validation cost the bus): the 20-field schema
and each arm's ``schemas`` settings. ``bench_bus`` runs them, alternately
in one process over its realistic workload (100 rules of
``bench_patterns``' mix, order events padded to 0.2-1 KB, one no-op
``function`` target per rule, the durable intake, 16 producers putting
batches of 10):

- ``plain``: no ``schemas`` resource;
- ``discovery``: a ``schemas`` resource with a discoverer on the bus (its
  tap queues events, its task fingerprints them and writes a version when a
  structure is new);
- ``validation``: a ``schemas`` resource requiring every event's (source,
  detail-type) on the bus to match a registered JSONSchema Draft 4 version
  of 20 typed fields (the envelope's 8, the detail's 12, ``items`` checked
  item by item), every event valid;
- ``rule-validation``: the same requirement on every tenth rule instead
  (10 of 100): an event pays each of those rules' pattern test, and the
  validation once per rule it matches.

The targets: at most 10% for discovery and 30% for validation.

    python bench/bench_bus.py --schemas [--events 20000] [--repeats 3]
    python bench/bench_schemas.py [...]        # the same
"""

from __future__ import annotations

import sys
from typing import Any

import bench_patterns

from pipelines.pluginmanager import get_plugin_manager

STRING, NUMBER = {"type": "string"}, {"type": "number"}
#: 20 typed fields: the envelope's 8 and the detail's 12.
ORDER_SCHEMA = {
    "$schema": "http://json-schema.org/draft-04/schema#",
    "type": "object",
    "required": ["version", "id", "detail-type", "source", "account", "time", "region", "detail"],
    "properties": {
        "version": STRING,
        "id": STRING,
        "detail-type": STRING,
        "source": STRING,
        "account": STRING,
        "time": STRING,
        "region": STRING,
        "resources": {"type": "array", "items": STRING},
        "detail": {
            "type": "object",
            "required": ["orderId", "status", "total", "customer", "items"],
            "properties": {
                "orderId": STRING,
                "status": STRING,
                "total": NUMBER,
                "sku": STRING,
                "path": STRING,
                "customer": {
                    "type": "object",
                    "required": ["id"],
                    "properties": {"id": STRING, "country": STRING, "tier": STRING},
                },
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["sku", "qty"],
                        "properties": {"sku": STRING, "qty": NUMBER},
                    },
                },
            },
        },
    },
}


def plugins() -> Any:
    """The installed plugins, with the schemas plugin even before it is installed."""
    import plugins.schemas as schemas_plugin

    manager = get_plugin_manager()
    if manager.get_plugin("schemas") is None and not manager.is_registered(schemas_plugin):
        manager.register(schemas_plugin, name="schemas")
    return manager


#: The arms, in the order they run.
KINDS = ("plain", "discovery", "validation", "rule-validation")
#: ``rule-validation``: every this many rules has the requirement.
EVERY = 10


def schemas_settings(kind: str, rules: int = 100) -> dict[str, Any] | None:
    """The ``schemas`` resource's settings of one arm (None: no resource)."""
    if kind == "discovery":
        return {"discoverers": ["default"]}
    if kind not in ("validation", "rule-validation"):
        return None
    types = [
        {"source": source, "detail_type": detail_type, "schema": "shop/orders"}
        for source in ("com.shop.orders", "com.shop.payments")
        for detail_type in bench_patterns.TYPES
    ]
    if kind == "validation":
        require = types
    else:  # bench_bus names its rules rule-N
        require = [
            {**each, "rule": f"rule-{number}"}
            for number in range(0, rules, EVERY)
            for each in types
        ]
    return {
        "registries": {"shop": {"schemas": {"orders": {"content": ORDER_SCHEMA}}}},
        "require": require,
    }


if __name__ == "__main__":
    import bench_bus

    sys.argv.insert(1, "--schemas")
    bench_bus.main()
