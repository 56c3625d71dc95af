"""Bus throughput and latency: put_events -> matching -> a no-op function target.

Throughput: with 1, 100 and 1,000 rules (each selective: an event matches
exactly one rule, which has one ``function`` target calling an async no-op),
a producer puts events in PutEvents-sized batches of 10 as fast as the bus
accepts them (backpressure paces it), and the clock stops when the last
event has been delivered. The peer, run in the same process over the same
events, is the least an asyncio pipeline can do: a bounded ``asyncio.Queue``
handing each event to one consumer that calls the same no-op. The ratio says
what validation, ids, matching, per-target queues and metrics cost on top.

Durable intake: with a state database, the same throughput run with
``durability: memory`` (answered at once) and with the durable intake (each
event committed before put_events answers, deleted once delivered), at 1 and
100 rules, in the same process; the ratio is what durability costs. With one
producer each call waits for its own commit (latency-bound); with 16 calls in
flight (as an endpoint serving many clients has) they share commits.

Latency: at a fixed offered load (default 5,000 events/s, batches of 10) with
100 rules, the time from ``put_events`` to the start of the target call,
p50 and p99.

    python bench/bench_bus.py [--events 50000] [--repeats 3] [--rate 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from pipelines.limits import Limits
from pipelines.process import tuned_process
from pipelines.runtime import Runtime

delivered = 0
latencies: list[float] = []
finished: asyncio.Event | None = None
expected = 0


async def noop(payload: Any) -> None:
    global delivered
    delivered += 1
    if delivered == expected and finished is not None:
        finished.set()


async def timed(payload: Any) -> None:
    latencies.append(time.perf_counter() - payload["detail"]["sent"])


def entries(count: int, rules: int) -> list[dict[str, Any]]:
    return [
        {
            "Source": "bench.shop",
            "DetailType": "Order Placed",
            "Detail": json.dumps({"store": f"s{n % rules}", "order": n, "total": n % 997}),
        }
        for n in range(count)
    ]


def build(
    rules: int, function: str, state: Path | None = None, durability: str = "durable"
) -> Runtime:
    runtime = Runtime(
        limits=Limits(intake_size=10_000, target_queue_size=1_000),
        state_path=state,
        durability=durability,
    )
    runtime.add_resource("noop", "function", {"function": function, "max_concurrency": 16})
    bus = runtime.bus()
    for n in range(rules):
        bus.put_rule(
            f"store-{n}", pattern={"source": ["bench.shop"], "detail": {"store": [f"s{n}"]}}
        )
    return runtime


async def bus_throughput(
    rules: int,
    batch: list[dict[str, Any]],
    state: Path | None = None,
    durability: str = "durable",
    producers: int = 1,
) -> float:
    global delivered, expected, finished
    runtime = build(rules, "__main__:noop", state, durability)
    for n in range(rules):
        await runtime.bus().put_targets(f"store-{n}", [{"id": "t", "resource": "noop"}])
    delivered, expected, finished = 0, len(batch), asyncio.Event()
    async with runtime:
        start = time.perf_counter()
        calls = [batch[offset : offset + 10] for offset in range(0, len(batch), 10)]

        async def produce(first: int) -> None:
            for call in calls[first::producers]:
                await runtime.put_events(call)

        await asyncio.gather(*(produce(first) for first in range(producers)))
        await finished.wait()
        elapsed = time.perf_counter() - start
    assert delivered == len(batch)
    return len(batch) / elapsed


async def queue_throughput(batch: list[dict[str, Any]]) -> float:
    """The peer: a bounded queue and one consumer calling the no-op."""
    global delivered, expected, finished
    queue: asyncio.Queue[Any] = asyncio.Queue(10_000)
    delivered, expected, finished = 0, len(batch), asyncio.Event()

    async def consume() -> None:
        while True:
            await noop(await queue.get())

    async with asyncio.TaskGroup() as group:
        consumer = group.create_task(consume())
        start = time.perf_counter()
        for entry in batch:
            await queue.put(entry)
        await finished.wait()
        elapsed = time.perf_counter() - start
        consumer.cancel()
    return len(batch) / elapsed


async def latency(rules: int, rate: float, seconds: float) -> tuple[float, float, int]:
    latencies.clear()
    runtime = build(rules, "__main__:timed")
    for n in range(rules):
        await runtime.bus().put_targets(f"store-{n}", [{"id": "t", "resource": "noop"}])
    loop = asyncio.get_running_loop()
    interval = 10 / rate
    count = int(rate * seconds) // 10
    async with runtime:
        start = loop.time()
        for tick in range(count):
            sent = time.perf_counter()
            await runtime.put_events(
                [
                    {
                        "Source": "bench.shop",
                        "DetailType": "Order Placed",
                        "Detail": json.dumps(
                            {"store": f"s{(tick * 10 + i) % rules}", "sent": sent}
                        ),
                    }
                    for i in range(10)
                ]
            )
            await asyncio.sleep(max(0.0, start + (tick + 1) * interval - loop.time()))
        await runtime.wait_until_idle()
    ordered = sorted(latencies)
    return ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99)], len(ordered)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rate", type=float, default=5_000)
    parser.add_argument("--seconds", type=float, default=4)
    args = parser.parse_args()
    gc.freeze()

    print(f"throughput: {args.events:,} events, batches of 10, medians of {args.repeats} runs")
    print(f"{'rules':>6} {'bus ev/s':>10} {'queue ev/s':>11} {'bus/queue':>9}")
    for rules in (1, 100, 1_000):
        batch = entries(args.events, rules)
        ours, peer = [], []
        for _ in range(args.repeats):
            ours.append(await bus_throughput(rules, batch))
            peer.append(await queue_throughput(batch))
        bus_rate, queue_rate = statistics.median(ours), statistics.median(peer)
        print(f"{rules:>6} {bus_rate:>10,.0f} {queue_rate:>11,.0f} {bus_rate / queue_rate:>9.2f}")

    print(f"\ndurable intake: state database, {args.events:,} events, medians of {args.repeats}")
    print(
        f"{'rules':>6} {'producers':>9} {'memory ev/s':>12} {'durable ev/s':>13}"
        f" {'durable/memory':>15}"
    )
    for rules in (1, 100):
        batch = entries(args.events, rules)
        for producers in (1, 16):
            memory, durable = [], []
            for _ in range(args.repeats):
                for mode, rates in (("memory", memory), ("durable", durable)):
                    with tempfile.TemporaryDirectory() as tmp:
                        state = Path(tmp) / "state.db"
                        rates.append(await bus_throughput(rules, batch, state, mode, producers))
            m_rate, d_rate = statistics.median(memory), statistics.median(durable)
            print(
                f"{rules:>6} {producers:>9} {m_rate:>12,.0f} {d_rate:>13,.0f}"
                f" {d_rate / m_rate:>15.2f}"
            )

    p50, p99, count = await latency(100, args.rate, args.seconds)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"\nlatency put->deliver, 100 rules, {args.rate:,.0f} ev/s offered, {count:,} events: "
        f"p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    with tuned_process():  # as the pipelines command runs a pipeline
        asyncio.run(main())
