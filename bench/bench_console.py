"""The cost of an open web console on bus throughput.

``bench_bus``'s realistic case (100 rules of ``bench_patterns``' mix, the
durable intake, 16 producers putting batches of 10 in the same process),
with the AWS endpoint serving the console (``pipelines.console``) in the
runner's event loop, as ``pipelines run --console`` does, and a client in
another process (as a browser is) doing, alternately with the others in
each repeat:

- ``none``: no console request at all (the peer every ratio is against);
- ``rules 0.5 Hz``: the rules page's table as htmx polls it (every 2 s),
  each poll a sample of every rule's counters;
- ``rules 10 Hz``: the same twenty times as often (twenty open tabs);
- ``tap``: the live tap open (server-sent events: every dispatched event
  seen by the tap's observer, the newest 25 of each quarter second encoded
  and written to the browser).

The cases run in turn, each repeat starting with the next one. Printed:
events/s and CPU µs per event (this process: the bus and the
console's handlers) per case, medians of ``--repeats`` runs, the ratio
against ``none``, the requests the client made, and the load average.

    python bench/bench_console.py [--events 30000] [--repeats 5] [--rules 100]
        [--producers 16]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import bench_bus
import orjson

from pipelines.api import ApiServer, served_services
from pipelines.console.app import Console, registered_sections
from pipelines.limits import Limits
from pipelines.process import tuned_process
from pipelines.runtime import Runtime

#: The client: polls a page at a rate, or reads the tap's stream, until stdin closes.
CLIENT = textwrap.dedent(
    """
    import http.client, sys, threading, time, urllib.request
    url, token, mode, rate = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    headers = {"Authorization": "Bearer " + token}
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    requests = 0
    if mode == "rules":
        while not done.is_set():
            request = urllib.request.Request(url + "/console/rules.part", headers=headers)
            with urllib.request.urlopen(request) as answer:
                answer.read()
            requests += 1
            done.wait(1 / rate)
    elif mode == "tap":
        host = url.split("//")[1]
        connection = http.client.HTTPConnection(host, timeout=60)
        connection.request("GET", "/console/tap.events", headers=headers)
        answer = connection.getresponse()
        requests = 1
        def read():
            while True:
                line = answer.readline()
                if not line:
                    return
                if line.startswith(b"data: "):
                    counts[0] += 1
        counts = [0]
        threading.Thread(target=read, daemon=True).start()
        done.wait()
        print(f"events {counts[0]}", file=sys.stderr)
    print(requests, flush=True)
    """
)

CASES = {
    "none": None,
    "rules 0.5 Hz": ("rules", 0.5),
    "rules 10 Hz": ("rules", 10.0),
    "tap": ("tap", 0.0),
}


async def run(
    entries: list[dict[str, Any]], patterns: list[Any], jobs: int, producers: int, case: Any
) -> tuple[float, float, str]:
    """Events/s, CPU µs per event, and what the client did."""
    with tempfile.TemporaryDirectory() as tmp:
        runtime = Runtime(
            limits=Limits(intake_size=10_000, target_queue_size=1_000),
            state_path=Path(tmp) / "state.db",
        )
        runtime.add_resource("noop", "function", {"function": "bench_bus:noop"})
        bus = runtime.bus()
        for number, pattern in enumerate(patterns):
            bus.put_rule(f"rule-{number}", pattern=pattern)
            await bus.put_targets(f"rule-{number}", [{"id": "t", "resource": "noop"}])
        bench_bus.delivered, bench_bus.expected = 0, jobs
        bench_bus.finished = asyncio.Event()
        endpoint = ApiServer(runtime, served_services())
        console = Console(runtime, registered_sections())
        endpoint.keeping.value("console", lambda: console, close=Console.close, stop=Console.stop)
        endpoint.mount("/console", console.handle)
        await endpoint.start()
        client = None
        try:
            async with runtime:
                if case is not None:
                    mode, rate = case
                    client = subprocess.Popen(
                        [
                            sys.executable,
                            "-c",
                            CLIENT,
                            endpoint.url,
                            console.token,
                            mode,
                            str(rate),
                        ],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                    await asyncio.sleep(0.5)  # connected, its first request answered
                calls = [entries[offset : offset + 10] for offset in range(0, len(entries), 10)]

                async def produce(first: int) -> None:
                    for call in calls[first::producers]:
                        answer = await runtime.put_events(call)
                        assert not answer["FailedEntryCount"], answer

                start, cpu = time.perf_counter(), time.process_time()
                await asyncio.gather(*(produce(first) for first in range(producers)))
                await bench_bus.finished.wait()
                elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
                did = ""
                if client is not None:
                    out, err = await asyncio.to_thread(client.communicate, "", 30)
                    did = f"{out.strip()} requests {err.strip()}".strip()
        finally:
            if client is not None and client.poll() is None:
                client.kill()
            await endpoint.close()
    assert bench_bus.delivered == jobs
    return len(entries) / elapsed, cpu * 1e6 / len(entries), did


async def unit_costs(patterns: list[Any]) -> tuple[float, float, float]:
    """CPU µs of one rules-table request (through HTTP, client included: an
    upper bound), of the tap's observer per event, and of one tap tick's
    write of 25 events, in this process, with the benchmark's 100 rules."""
    import aiohttp

    from pipelines.console.app import TAP_SHOWN

    runtime = Runtime()
    runtime.add_resource("noop", "function", {"function": "bench_bus:noop"})
    for number, pattern in enumerate(patterns):
        runtime.bus().put_rule(f"rule-{number}", pattern=pattern)
        await runtime.bus().put_targets(f"rule-{number}", [{"id": "t", "resource": "noop"}])
    endpoint = ApiServer(runtime, served_services())
    console = Console(runtime, {})
    endpoint.mount("/console", console.handle)
    await endpoint.start()
    try:
        async with runtime, aiohttp.ClientSession() as session:
            headers = {"Authorization": f"Bearer {console.token}"}
            cpu = time.process_time()
            for _ in range(200):
                async with session.get(endpoint.url + "/console/rules.part", headers=headers) as a:
                    await a.read()
            request = (time.process_time() - cpu) * 1e6 / 200
    finally:
        await endpoint.close()
    import collections

    shown: collections.deque[dict[str, Any]] = collections.deque(maxlen=TAP_SHOWN)
    seen = 0
    event = {"source": "shop", "detail": {"n": 1}}

    def observe(bus: str, event: dict[str, Any]) -> None:  # as Console._tap_events's
        nonlocal seen
        seen += 1
        shown.append({"bus": bus, "event": event})

    cpu = time.process_time()
    for _ in range(200_000):
        observe("default", event)
    observer = (time.process_time() - cpu) * 1e6 / 200_000
    entries, _ = bench_bus.realistic(TAP_SHOWN, 1, 40)
    items = [{"bus": "default", "event": entry} for entry in entries]
    cpu = time.process_time()
    for _ in range(2_000):
        b"".join(b"data: " + orjson.dumps(item) + b"\n\n" for item in items)
    tick = (time.process_time() - cpu) * 1e6 / 2_000
    return request, observer, tick


async def main(args: argparse.Namespace) -> None:
    entries, patterns = bench_bus.realistic(args.events, args.rules, 40)
    jobs = bench_bus.expected_jobs(entries, patterns)
    print(
        f"console cost: {len(entries):,} events, {args.rules} rules, durable intake,"
        f" {args.producers} producers; medians of {args.repeats} alternating runs"
    )
    warm = entries[:2_000]
    await run(warm, patterns, bench_bus.expected_jobs(warm, patterns), args.producers, None)
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in CASES}
    names = list(CASES)
    for repeat in range(args.repeats):
        line = []
        # Each repeat starts with another case: no case always runs first.
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            case = CASES[name]
            rate, cpu, did = await run(entries, patterns, jobs, args.producers, case)
            figures[name].append((rate, cpu))
            line.append(f"{name} {rate:,.0f} ev/s" + (f" ({did})" if did else ""))
        print("  run: " + ", ".join(line))
    rate = {k: statistics.median(r for r, _ in v) for k, v in figures.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in figures.items()}
    print(f"{'':>14} {'ev/s':>8} {'CPU µs/ev':>10} {'ev/s vs none':>13} {'CPU vs none':>12}")
    for name in CASES:
        print(
            f"{name:>14} {rate[name]:>8,.0f} {cpu[name]:>10.1f}"
            f" {rate[name] / rate['none']:>13.3f} {cpu[name] / cpu['none']:>12.3f}"
        )
    request, observer, tick = await unit_costs(patterns)
    busy = 1e6  # CPU µs per second of a saturated bus (one core)
    print(
        f"unit costs (CPU): a rules-table request {request:,.0f} µs, the tap's observer"
        f" {observer:.2f} µs per event, a tap tick (25 events encoded) {tick:,.0f} µs"
    )
    print(
        "so, against a saturated bus's CPU: rules at 0.5 Hz"
        f" {request * 0.5 / busy:.2%}, at 10 Hz {request * 10 / busy:.2%};"
        f" the tap {observer / cpu['none'] + tick * 4 / busy:.2%}"
        f" (observer {observer:.2f} of {cpu['none']:.1f} µs per event, 4 ticks a second)"
    )
    print(f"load average: {bench_bus.load()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--producers", type=int, default=16)
    arguments = parser.parse_args()
    gc.freeze()
    with tuned_process():
        asyncio.run(main(arguments))
