"""The AWS endpoint's request rate over HTTP, against moto's server and in-process calls.

A pipeline runs as ``pipelines run CONFIG --api 127.0.0.1:PORT`` in a
subprocess (a state database, the durable intake, one rule sending the
benchmark's events to a queue); moto's server (``moto_server``) runs in
another subprocess, set up alike (the same rule and a queue target). The
load comes from this process: ``--connections`` (default 8) keep-alive
connections of one aiohttp client session, each sending requests one after
another, the bodies built once (JSON as boto3 sends it, a fixed SigV4
``Authorization`` header: neither server checks signatures).

Cases (``--cases``):

- ``sqs``: cycles of SendMessageBatch (10 messages of 200 bytes),
  ReceiveMessage (up to 10) and DeleteMessageBatch (what was received) on a
  standard queue, each connection one cycle after another;
- ``kinesis``: PutRecords of 10 records of 200 bytes to a stream of 4 shards;
- ``put_events``: PutEvents of 10 entries of about 300 bytes each, routed
  (each event matches the rule and goes to the queue) and unrouted (no rule
  matches: the intake alone). moto's server is given fewer requests
  (``--moto-share``, and a tenth of that when routed: its queue delivery
  slows as the queue grows); rates are per second, so the ratios hold.

Peers, in the same run and alternating with it:

- moto's server doing the same requests (target: the project at least 10x
  moto's requests/s);
- the same pipeline in this process, ``Runtime.put_events`` from as many
  tasks as there are connections (target: PutEvents over HTTP at least 0.3x
  its events/s);
- a bare aiohttp server answering every request with a fixed body, in a
  subprocess: what this client can send at most (the ceiling of the figures
  above, printed so a result near it is read as the client's limit).

Figures are medians over ``--repeats``; the load average is printed beside
them. The bare server runs in every case; the in-process peer only with
``put_events``, so ``--cases kinesis`` measures the Kinesis case alone.

    pip install -e '.[bench]'
    python bench/bench_api.py [--requests 4000] [--repeats 3] [--connections 8]
        [--cases put_events,sqs,kinesis]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.util
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import boto3

from pipelines.config import build_runtime, load_config
from pipelines.process import tuned_process

AUTHORIZATION = (
    "AWS4-HMAC-SHA256 Credential=AKIDBENCH/20261204/us-east-1/{service}/aws4_request,"
    " SignedHeaders=host;x-amz-date, Signature=" + "0" * 64
)
CONFIG = """
state: state.db
resources:
  sink: {type: queue}
  work: {type: queue}
  clicks: {type: stream, shards: 4}
rules:
  bench:
    pattern: {source: [bench]}
    targets: [{id: q, resource: sink}]
"""
BARE_SERVER = """
import sys
from aiohttp import web

async def answer(request):
    await request.read()
    return web.Response(body=b'{"FailedEntryCount": 0, "Entries": []}',
                        content_type="application/x-amz-json-1.1")

app = web.Application()
app.router.add_route("*", "/{tail:.*}", answer)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def entries(batch: int) -> list[dict[str, Any]]:
    detail = {"order": "o-1", "lines": [{"sku": f"sku-{n}", "qty": n} for n in range(8)]}
    return [
        {"Source": "bench", "DetailType": "Order", "Detail": json.dumps(detail)}
        for _ in range(batch)
    ]


def wait_for_port(port: int, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Servers:
    """The three HTTP servers of a run, in subprocesses."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir()
        (directory / "pipeline.yaml").write_text(CONFIG)
        self.processes: list[subprocess.Popen[str]] = []
        pipelines = Path(sys.executable).with_name("pipelines")
        log = directory / "runner.log"
        with log.open("w") as output:
            runner = subprocess.Popen(
                [
                    *(str(pipelines), "run", str(directory / "pipeline.yaml")),
                    *("--no-control", "--api", "127.0.0.1:0"),
                ],
                stderr=output,
                text=True,
            )
        self.processes.append(runner)
        self.project = self._reported_url(runner, log)
        moto_port = free_port()
        moto = Path(sys.executable).with_name("moto_server")
        self.processes.append(
            subprocess.Popen(
                [str(moto), "-H", "127.0.0.1", "-p", str(moto_port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        self.moto = f"http://127.0.0.1:{moto_port}"
        bare_port = free_port()
        self.processes.append(subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(bare_port)]))
        self.bare = f"http://127.0.0.1:{bare_port}"
        wait_for_port(moto_port)
        wait_for_port(bare_port)
        self._set_up_moto()

    @staticmethod
    def _reported_url(runner: subprocess.Popen[str], log: Path) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and runner.poll() is None:
            found = re.search(r"AWS endpoint: (http://\S+)", log.read_text())
            if found is not None:
                return found.group(1)
            time.sleep(0.05)
        raise RuntimeError(f"the runner did not start: {log.read_text()!r}")

    def _set_up_moto(self) -> None:
        options: dict[str, Any] = {
            "endpoint_url": self.moto,
            "region_name": "us-east-1",
            "aws_access_key_id": "AKIDBENCH",
            "aws_secret_access_key": "x",
        }
        queue = boto3.client("sqs", **options).create_queue(QueueName="sink")["QueueUrl"]
        events = boto3.client("events", **options)
        events.put_rule(Name="bench", EventPattern='{"source": ["bench"]}')
        arn = "arn:aws:sqs:us-east-1:123456789012:" + queue.rsplit("/", 1)[-1]
        events.put_targets(Rule="bench", Targets=[{"Id": "q", "Arn": arn}])
        boto3.client("sqs", **options).create_queue(QueueName="work")
        boto3.client("kinesis", **options).create_stream(StreamName="clicks", ShardCount=4)

    def close(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


async def drive(url: str, body: bytes, headers: dict[str, str], count: int, lanes: int) -> float:
    """Requests per second sending ``count`` requests over ``lanes`` connections."""
    connector = aiohttp.TCPConnector(limit=lanes)
    failures = 0
    async with aiohttp.ClientSession(connector=connector) as session:

        async def lane(share: int) -> None:
            nonlocal failures
            for _ in range(share):
                async with session.post(url, data=body, headers=headers) as answer:
                    await answer.read()
                    failures += answer.status != 200

        await lane(1)  # connect and warm up
        started = time.perf_counter()
        await asyncio.gather(*(lane(count // lanes) for _ in range(lanes)))
        elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{failures} requests to {url} failed")
    return (count // lanes * lanes) / elapsed


def _json_headers(target: str, version: str, service: str) -> dict[str, str]:
    return {
        "X-Amz-Target": target,
        "Content-Type": f"application/x-amz-json-{version}",
        "X-Amz-Date": "20261204T000000Z",
        "Authorization": AUTHORIZATION.format(service=service),
    }


async def sqs_cycles(url: str, account: str, cycles: int, lanes: int) -> float:
    """Requests per second of SendMessageBatch (10) + ReceiveMessage (10) +
    DeleteMessageBatch cycles on the queue ``work``, each lane one after another."""
    queue_url = f"{url}/{account}/work"
    body = "m" * 200
    send = json.dumps(
        {
            "QueueUrl": queue_url,
            "Entries": [{"Id": str(n), "MessageBody": body} for n in range(10)],
        }
    ).encode()
    receive = json.dumps(
        {"QueueUrl": queue_url, "MaxNumberOfMessages": 10, "VisibilityTimeout": 60}
    ).encode()
    target = "AmazonSQS.{}"
    requests = 0
    connector = aiohttp.TCPConnector(limit=lanes)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def call(operation: str, data: bytes) -> Any:
            nonlocal requests
            headers = _json_headers(target.format(operation), "1.0", "sqs")
            async with session.post(url, data=data, headers=headers) as answer:
                found = await answer.read()
                if answer.status != 200:
                    raise RuntimeError(f"{operation} to {url}: {answer.status} {found[:200]!r}")
            requests += 1
            return json.loads(found)

        async def lane(share: int) -> None:
            for _ in range(share):
                await call("SendMessageBatch", send)
                got = (await call("ReceiveMessage", receive)).get("Messages", [])
                if got:
                    handles = [
                        {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
                        for n, m in enumerate(got)
                    ]
                    await call(
                        "DeleteMessageBatch",
                        json.dumps({"QueueUrl": queue_url, "Entries": handles}).encode(),
                    )

        await lane(1)
        requests = 0
        started = time.perf_counter()
        await asyncio.gather(*(lane(cycles // lanes) for _ in range(lanes)))
        elapsed = time.perf_counter() - started
    return requests / elapsed


async def kinesis_puts(url: str, count: int, lanes: int) -> float:
    """Requests per second of PutRecords (10 records of 200 bytes) to ``clicks``."""
    data = base64.b64encode(b"c" * 200).decode()
    body = json.dumps(
        {
            "StreamName": "clicks",
            "Records": [{"Data": data, "PartitionKey": f"user-{n}"} for n in range(10)],
        }
    ).encode()
    headers = _json_headers("Kinesis_20131202.PutRecords", "1.1", "kinesis")
    return await drive(url, body, headers, count, lanes)


async def in_process(directory: Path, batch: list[dict[str, Any]], count: int, lanes: int) -> float:
    """Events per second through ``Runtime.put_events`` on the same config."""
    (directory / "pipeline.yaml").write_text(CONFIG)
    runtime = await build_runtime(load_config([directory / "pipeline.yaml"]))
    async with runtime:

        async def lane(share: int) -> None:
            for _ in range(share):
                result = await runtime.put_events(batch)
                assert result["FailedEntryCount"] == 0

        await lane(1)
        started = time.perf_counter()
        await asyncio.gather(*(lane(count // lanes) for _ in range(lanes)))
        elapsed = time.perf_counter() - started
    return (count // lanes * lanes) * len(batch) / elapsed


async def main(args: argparse.Namespace) -> None:
    routed = entries(10)
    bodies = {
        "routed": json.dumps({"Entries": routed}).encode(),
        "unrouted": json.dumps({"Entries": [{**e, "Source": "other"} for e in routed]}).encode(),
    }
    headers = {
        "X-Amz-Target": "AWSEvents.PutEvents",
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Date": "20261204T000000Z",
        "Authorization": AUTHORIZATION.format(service="events"),
    }
    figures: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        servers = Servers(Path(scratch) / "served")
        try:
            for repeat in range(args.repeats):
                own = Path(scratch) / f"inproc-{repeat}"
                own.mkdir()
                runs: dict[str, Callable[[], Any]] = {
                    "bare": lambda: drive(
                        servers.bare, bodies["routed"], headers, args.requests, args.connections
                    ),
                }
                if "put_events" in args.cases:
                    runs["in-process"] = lambda directory=own: in_process(  # type: ignore[misc]
                        directory, routed, args.requests, args.connections
                    )
                for kind, body in bodies.items() if "put_events" in args.cases else ():
                    runs[f"project {kind}"] = lambda body=body: drive(  # type: ignore[misc]
                        servers.project, body, headers, args.requests, args.connections
                    )
                    # moto's queue delivery slows as its queue grows: fewer requests.
                    runs[f"moto {kind}"] = lambda body=body, kind=kind: drive(  # type: ignore[misc]
                        servers.moto,
                        body,
                        headers,
                        args.requests // (args.moto_share * (10 if kind == "routed" else 1)),
                        args.connections,
                    )
                if "sqs" in args.cases:
                    runs["project sqs"] = lambda: sqs_cycles(
                        servers.project, "000000000000", args.requests // 3, args.connections
                    )
                    runs["moto sqs"] = lambda: sqs_cycles(
                        servers.moto,
                        "123456789012",
                        args.requests // 3 // args.moto_share,
                        args.connections,
                    )
                if "kinesis" in args.cases:
                    runs["project kinesis"] = lambda: kinesis_puts(
                        servers.project, args.requests, args.connections
                    )
                    runs["moto kinesis"] = lambda: kinesis_puts(
                        servers.moto, args.requests // args.moto_share, args.connections
                    )
                for name, run in runs.items():
                    figures.setdefault(name, []).append(await run())
                    print(
                        f"  repeat {repeat + 1} {name}: {figures[name][-1]:,.0f}/s  (load {load()})"
                    )
        finally:
            servers.close()
    median = {name: statistics.median(values) for name, values in figures.items()}
    print(f"\n{args.connections} connections (load {load()})")
    print(f"  bare aiohttp      {median['bare']:>8,.0f} requests/s (this client's ceiling)")
    if "put_events" in args.cases:
        put_events_summary(median, list(bodies))
    for case, what in (
        ("sqs", "SendMessageBatch + ReceiveMessage + DeleteMessageBatch, 10 messages each"),
        ("kinesis", "PutRecords, 10 records of 200 bytes"),
    ):
        if f"project {case}" in median:
            project, moto = median[f"project {case}"], median[f"moto {case}"]
            print(
                f"  {case:<9} project {project:>8,.0f} requests/s, moto {moto:>8,.1f}"
                f" requests/s: {project / moto:,.1f}x (target 10x)  [{what}]"
            )


def put_events_summary(median: dict[str, float], kinds: list[str]) -> None:
    """The PutEvents figures: routed and unrouted against moto, and the peers."""
    print("  put_events, 10 entries per request")
    for kind in kinds:
        project, moto = median[f"project {kind}"], median[f"moto {kind}"]
        print(
            f"  {kind:<9} project {project:>8,.0f} requests/s ({project * 10:>8,.0f} events/s),"
            f" moto {moto:>8,.1f} requests/s: {project / moto:,.1f}x (target 10x)"
        )
    print(f"  in process        {median['in-process']:>8,.0f} events/s (routed)")
    print(
        "  HTTP / in process (events/s, routed): "
        f"{median['project routed'] * 10 / median['in-process']:.2f}x (target 0.3x)"
    )
    print(
        "  project / client ceiling (requests/s, routed): "
        f"{median['project routed'] / median['bare']:.2f}x"
    )


def moto_server_missing() -> str | None:
    """Why moto's server cannot run here, or None."""
    if not Path(sys.executable).with_name("moto_server").exists():
        return f"moto_server is not beside {sys.executable}"
    if importlib.util.find_spec("flask") is None:
        return "moto's server needs flask (moto[server])"
    return None


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--moto-share", type=int, default=4, help="moto gets requests / this many requests"
    )
    parser.add_argument(
        "--cases",
        default="put_events,sqs,kinesis",
        help="comma-separated: put_events, sqs, kinesis",
    )
    args = parser.parse_args()
    missing = moto_server_missing()
    if missing:
        parser.exit(1, f"{missing}: pip install -e '.[bench]' installs moto's server\n")
    return args


if __name__ == "__main__":
    with tuned_process():
        asyncio.run(main(arguments()))
