"""Matcher throughput as rules grow, against moto's rule-by-rule EventPattern.

For N = 1, 10, 100, 1,000 and 10,000 rules (a mix of exact, prefix, numeric,
anything-but and wildcard rules over realistic order events, each rule
selective like a routing rule: about 1 event in 10,000 matches it, so
matches per event stay near N / 10,000), this times one
``Matcher`` holding all N rules and, in the same process over the same rules
and events, moto's ``EventPattern`` looped over every rule as moto's bus does.
It prints events/s for both, the ratio, and our cost at each N relative to
N = 10. It also checks that both find the same number of matches. The load
average is printed before and after.

    pip install -e '.[bench]'
    python bench/bench_patterns.py [--events 2000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from pipelines.patterns import Matcher

try:
    from moto.events.models import EventPattern
except ImportError:  # pragma: no cover - a benchmark extra
    sys.exit("moto is needed: pip install -e '.[bench]'")

SIZES = (1, 10, 100, 1_000, 10_000)
COUNTRIES = [f"C{n:03d}" for n in range(400)]
CUSTOMERS = 10_000
TENANTS = 10_000
STATUSES = ["PLACED", "PAID", "PACKED", "SHIPPED", "DELIVERED", "CANCELLED", "REFUNDED"]
TYPES = ["Order Placed", "Order Paid", "Order Shipped", "Order Cancelled"]


def make_events(count: int, rng: random.Random) -> list[dict[str, Any]]:
    events = []
    for number in range(count):
        tenant = f"t{rng.randrange(TENANTS)}"
        events.append(
            {
                "version": "0",
                "id": f"00000000-0000-4000-8000-{number:012d}",
                "detail-type": rng.choice(TYPES),
                "source": rng.choice(["com.shop.orders", "com.shop.payments"]),
                "account": "123456789012",
                "time": "2024-05-01T10:00:00Z",
                "region": "eu-west-1",
                "resources": [f"arn:aws:shop:eu-west-1:123456789012:order/{number}"],
                "detail": {
                    "orderId": f"ord-{number}",
                    "status": rng.choice(STATUSES),
                    "total": round(rng.uniform(0, 5000), 2),
                    "sku": f"SKU-{rng.randrange(100_000):05d}",
                    "path": f"/tenant/{tenant}/region/eu/orders/{number}",
                    "customer": {
                        "id": f"cust-{rng.randrange(CUSTOMERS)}",
                        "country": rng.choice(COUNTRIES),
                        "tier": rng.choice(["gold", "std"]),
                    },
                    "items": [
                        {"sku": f"SKU-{rng.randrange(100_000):05d}", "qty": rng.randrange(1, 5)}
                    ],
                },
            }
        )
    return events


def make_rule(number: int, rng: random.Random) -> dict[str, Any]:
    kind = number % 5
    customer = f"cust-{rng.randrange(CUSTOMERS)}"
    if kind == 0:
        return {"source": ["com.shop.orders"], "detail": {"customer": {"id": [customer]}}}
    if kind == 1:
        return {"detail": {"sku": [{"prefix": f"SKU-{rng.randrange(100_000):05d}"[:8]}]}}
    if kind == 2:
        low = round(rng.uniform(0, 5000), 2)
        return {"detail": {"total": [{"numeric": [">=", low, "<", low + 0.5]}]}}
    if kind == 3:
        return {
            "detail-type": [rng.choice(TYPES)],
            "detail": {
                "status": [{"anything-but": rng.sample(STATUSES, 2)}],
                "customer": {"id": [customer]},
            },
        }
    return {"detail": {"path": [{"wildcard": f"/tenant/t{rng.randrange(TENANTS)}/*/orders/*"}]}}


def per_event(
    fn: Callable[[dict[str, Any]], int], events: list[dict[str, Any]], repeats: int
) -> tuple[float, int]:
    """Median seconds per event over ``repeats`` passes, and the matches of one pass."""
    times = []
    total = 0
    for _ in range(repeats):
        start = time.perf_counter()
        total = sum(fn(event) for event in events)
        times.append((time.perf_counter() - start) / len(events))
    return statistics.median(times), total


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _ours(matcher: Matcher, event: dict[str, Any]) -> int:
    return len(matcher.match(event))


def _ours_json(matcher: Matcher, text_of: dict[int, bytes], event: dict[str, Any]) -> int:
    return len(matcher.match_json(text_of[id(event)]))


def _moto(loaded: list[Any], event: dict[str, Any]) -> int:
    # As moto's bus does: every rule's pattern, one after the other.
    return sum(1 for pattern in loaded if pattern.matches_event(event))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(20261123)
    events = make_events(args.events, rng)
    texts = [json.dumps(e).encode() for e in events]
    all_rules = [make_rule(n, rng) for n in range(max(SIZES))]

    print(
        f"{len(events):,} events, median of {args.repeats} passes; rows: N rules in one Matcher;"
        f" load average {load()}"
    )
    print(
        f"{'N':>7} {'ours ev/s':>11} {'json ev/s':>11} {'moto ev/s':>10} {'ratio':>8} "
        f"{'cost vs N=10':>13} {'matches/ev':>10}"
    )
    base = None
    for size in SIZES:
        rules = all_rules[:size]
        matcher = Matcher()
        for number, rule in enumerate(rules):
            matcher.add(f"r{number}", rule)
        matcher.match(events[0])  # build the index outside the timing
        matcher.match_json(texts[0])
        text_of = {id(e): t for e, t in zip(events, texts, strict=True)}
        ours, ours_matches = per_event(partial(_ours, matcher), events, args.repeats)
        ours_json, _ = per_event(partial(_ours_json, matcher, text_of), events, args.repeats)
        moto_match = partial(_moto, [EventPattern.load(json.dumps(rule)) for rule in rules])

        # moto is linear in N: time a sample small enough to finish, at least 50 events.
        sample = events[: max(50, min(len(events), 200_000 // size))]
        moto, moto_matches = per_event(moto_match, sample, max(1, args.repeats // 2))
        ours_on_sample = sum(len(matcher.match(e)) for e in sample)
        if base is None and size >= 10:
            base = ours
        relative = f"{ours / base:.2f}x" if base else "-"
        agree = "same" if ours_on_sample == moto_matches else f"{ours_on_sample}!={moto_matches}"
        print(
            f"{size:>7,} {1 / ours:>11,.0f} {1 / ours_json:>11,.0f} {1 / moto:>10,.0f} "
            f"{moto / ours:>7.1f}x {relative:>13} {ours_matches / len(events):>9.3f} ({agree})"
        )
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
