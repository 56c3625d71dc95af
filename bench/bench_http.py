"""API destinations' delivery rate against a bare client, and the rate limit's accuracy.

A local HTTP server runs in a subprocess (aiohttp, answering 200 to every
request, keep-alive). In this process, alternating, ``--repeats`` times:

- **ours**: a pipeline (a state database, the durable intake) whose one rule
  sends every event to an ``api_destination`` on that server (API_KEY
  connection, a path parameter and a header read from the event, the
  default retry policy); ``--events`` events of about 300 bytes are put in
  batches of 10 by 8 producer tasks and timed until the last is delivered;
- **bare**: an aiohttp client session of the same pool size posting the same
  bodies (the events as EventBridge would send them) from as many tasks as
  the destination's concurrency: what the client library does alone.

Target: ours at least 0.5x bare's requests/s. Then the rate limit:
``invocation_rate_limit_per_second: 50`` (``--rate``) for 10 s (``--seconds``)
of events offered far faster than that; the delivered rate is printed with
its error (target: within 5% of 50/s).

Then webhooks: a pipeline in this process serving a ``webhook`` source with
GitHub's HMAC verification (a state database, the durable intake, no rule:
the figure is verification and intake) on an endpoint,
and ``--connections`` keep-alive connections posting signed 400-byte pushes;
printed beside the same client against the bare server (the client's
ceiling).

Figures are medians; the load average is printed beside them.

    python bench/bench_http.py [--events 5000] [--repeats 3] [--rate 50] [--seconds 10]
        [--connections 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from pipelines.config import build_runtime, load_config

SERVER = """
import sys
from aiohttp import web

count = 0

async def answer(request):
    global count
    await request.read()
    count += 1
    return web.Response(body=b'{"ok": true}', content_type="application/json")

async def counted(request):
    return web.Response(text=str(count))

app = web.Application()
app.router.add_get("/count", counted)
app.router.add_route("*", "/{tail:.*}", answer)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""

CONFIG = """
state: {state}
resources:
  hook:
    type: api_destination
    endpoint: {url}/orders/*
    invocation_rate_limit_per_second: {rate}
    connection: {{authorization_type: API_KEY, api_key: {{name: x-api-key, value: bench}}}}
rules:
  bench:
    pattern: {{source: [bench]}}
    targets:
      - id: hook
        resource: hook
        http_parameters:
          path_parameter_values: [$.detail.order]
          header_parameters: {{x-order: $.detail.order}}
"""


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def entries(count: int) -> list[dict[str, Any]]:
    detail = {"order": "o-1", "lines": [{"sku": f"sku-{n}", "qty": n} for n in range(8)]}
    return [
        {"Source": "bench", "DetailType": "Order", "Detail": json.dumps({**detail, "n": n})}
        for n in range(count)
    ]


async def count_at(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/count") as answer:
        return int(await answer.text())


async def ours(url: str, count: int, rate: int = 10_000) -> float:
    """Events delivered a second through the pipeline."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "pipeline.yaml"
        state = Path(directory) / "state.db"
        path.write_text(CONFIG.format(state=state, url=url, rate=rate))
        runtime = await build_runtime(load_config([path]))
        await runtime.start()
        try:
            before = await count_at(url)
            batch = entries(count)
            started = time.perf_counter()
            await produce(runtime, batch)
            while runtime.deliverer.outcomes.delivered < count:
                await asyncio.sleep(0.002)
            elapsed = time.perf_counter() - started
            assert await count_at(url) - before >= count
        finally:
            await runtime.stop()
    return count / elapsed


async def produce(runtime: Any, batch: list[dict[str, Any]], producers: int = 8) -> None:
    """Put ``batch`` in tens from ``producers`` tasks, as several clients would
    (their intake commits are shared): the producer is not what is measured."""
    tens = [batch[at : at + 10] for at in range(0, len(batch), 10)]

    async def producer(share: list[list[dict[str, Any]]]) -> None:
        for entries_ in share:
            await runtime.put_events(entries_)

    await asyncio.gather(*(producer(tens[n::producers]) for n in range(producers)))


async def bare(url: str, count: int, concurrency: int = 32) -> float:
    """The same requests from a bare aiohttp session: the client library's rate."""
    bodies = [
        json.dumps(
            {
                "version": "0",
                "id": str(n),
                "detail-type": "Order",
                "source": "bench",
                "detail": json.loads(entry["Detail"]),
            }
        ).encode()
        for n, entry in enumerate(entries(count))
    ]
    headers = {"Content-Type": "application/json; charset=utf-8", "x-api-key": "bench"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        queue = iter(bodies)

        async def worker() -> None:
            for body in queue:
                async with session.post(f"{url}/orders/o-1", data=body, headers=headers) as answer:
                    await answer.read()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return count / (time.perf_counter() - started)


async def rate_limit(url: str, rate: int, seconds: float) -> float:
    """Deliveries a second at ``rate`` while events are offered far faster."""
    count = int(rate * seconds)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "pipeline.yaml"
        path.write_text(CONFIG.format(state=Path(directory) / "s.db", url=url, rate=rate))
        runtime = await build_runtime(load_config([path]))
        await runtime.start()
        try:
            batch = entries(count + 1)
            await runtime.put_events(batch[:1])  # the first delivery opens the connection
            while runtime.deliverer.outcomes.delivered < 1:
                await asyncio.sleep(0.001)
            started = time.perf_counter()
            for at in range(1, count + 1, 10):
                await runtime.put_events(batch[at : at + 10])
            while runtime.deliverer.outcomes.delivered < count + 1:
                await asyncio.sleep(0.001)
            elapsed = time.perf_counter() - started
        finally:
            await runtime.stop()
    return count / elapsed


WEBHOOK_CONFIG = """
state: {state}
resources:
  hook:
    type: webhook
    path: /hook
    source: github.com
    detail_type: <headers.x-github-event>
    verify: {{scheme: github, secret: bench-secret}}
"""


async def post_signed(url: str, count: int, connections: int) -> float:
    """Signed pushes posted a second (each answered 200)."""
    import hashlib
    import hmac

    bodies = []
    for n in range(count):
        body = json.dumps({"ref": "refs/heads/main", "n": n, "pad": "x" * 350}).encode()
        signature = hmac.new(b"bench-secret", body, hashlib.sha256).hexdigest()
        bodies.append(
            (
                body,
                {
                    "X-Hub-Signature-256": f"sha256={signature}",
                    "X-GitHub-Event": "push",
                    "Content-Type": "application/json",
                },
            )
        )
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        queue = iter(bodies)

        async def worker() -> None:
            for body, headers in queue:
                async with session.post(url, data=body, headers=headers) as answer:
                    await answer.read()
                    assert answer.status == 200, answer.status

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return count / (time.perf_counter() - started)


async def webhooks(count: int, connections: int) -> float:
    from pipelines.api import ApiServer, served_services

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "pipeline.yaml"
        path.write_text(WEBHOOK_CONFIG.format(state=Path(directory) / "s.db"))
        runtime = await build_runtime(load_config([path]))
        server = ApiServer(runtime, served_services(), "127.0.0.1", 0)
        await server.start()
        try:
            async with runtime:
                return await post_signed(f"{server.url}/hook", count, connections)
        finally:
            await server.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rate", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8)
    options = parser.parse_args()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    try:
        wait_for_port(port)
        url = f"http://127.0.0.1:{port}"
        await bare(url, 200)  # warm both up
        await ours(url, 200)
        ratios, our_rates, bare_rates = [], [], []
        for _ in range(options.repeats):
            ours_rate = await ours(url, options.events)
            bare_rate = await bare(url, options.events)
            our_rates.append(ours_rate)
            bare_rates.append(bare_rate)
            ratios.append(ours_rate / bare_rate)
            print(
                f"  ours {ours_rate:,.0f}/s  bare {bare_rate:,.0f}/s"
                f"  ratio {ours_rate / bare_rate:.2f}x  (load {load()})"
            )
        print(
            f"api_destination deliveries: ours {statistics.median(our_rates):,.0f}/s,"
            f" bare aiohttp {statistics.median(bare_rates):,.0f}/s,"
            f" median ratio {statistics.median(ratios):.2f}x (target >= 0.5x)  load {load()}"
        )
        hooks, ceilings = [], []
        for _ in range(options.repeats):
            hooks.append(await webhooks(options.events, options.connections))
            ceilings.append(await post_signed(f"{url}/hook", options.events, options.connections))
        print(
            f"webhooks with HMAC verification: {statistics.median(hooks):,.0f} events/s accepted"
            f" (the same client against the bare server: {statistics.median(ceilings):,.0f}/s)"
            f"  load {load()}"
        )
        measured = await rate_limit(url, options.rate, options.seconds)
        error = abs(measured - options.rate) / options.rate
        print(
            f"rate limit {options.rate}/s over {options.seconds:g} s: delivered {measured:.2f}/s,"
            f" error {error:.1%} (target within 5%)  load {load()}"
        )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    asyncio.run(main())
