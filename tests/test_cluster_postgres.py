"""A cluster on one PostgreSQL database: three `pipelines run` processes share
the state. 10,000 events are put through their AWS endpoints (boto3), round
robin, into a rule whose target is a queue; three consumers receive from the
queue, each through another runner's endpoint; ten one-time schedules fire
while it runs. The runner leading the schedules is killed (SIGKILL) midway
and restarted under its name, as a supervisor would.

Every acknowledged event reaches the queue at least once; a message is held
by one consumer at a time; each schedule run fires exactly once (one event
id, whichever runner fired it)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import botocore.exceptions

from .apiclient import boto
from .helpers import pipelines_command

TOTAL = 10_000
SCHEDULES = 10
RUNNERS = ("r1", "r2", "r3")

CONFIG = """
state: ${CLUSTER_STATE}
resources:
  orders: {type: queue, visibility_timeout: 60}
  ticks: {type: queue}
rules:
  orders:
    pattern: {source: [shop]}
    targets: [{id: q, resource: orders, input_path: $.detail}]
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Cluster:
    def __init__(self, directory: Path, url: str) -> None:
        self.directory = directory
        self.config = directory / "pipeline.yaml"
        self.url = url
        self.ports = {name: _free_port() for name in RUNNERS}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def endpoint(self, runner: str) -> str:
        return f"http://127.0.0.1:{self.ports[runner]}"

    def log(self, runner: str) -> str:
        return (self.directory / f"{runner}.log").read_text()

    def start(self, runner: str) -> None:
        log = self.directory / f"{runner}.log"
        offset = log.stat().st_size if log.exists() else 0
        self.processes[runner] = subprocess.Popen(
            [
                *pipelines_command(),
                "run",
                str(self.config),
                "--runner",
                runner,
                "--api",
                f"127.0.0.1:{self.ports[runner]}",
                "--no-control",
            ],
            env={**os.environ, "CLUSTER_STATE": self.url},
            stdout=subprocess.DEVNULL,
            stderr=log.open("ab"),
        )
        deadline = time.monotonic() + 30
        while "pipeline started" not in log.read_text()[offset:]:
            assert self.processes[runner].poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)

    def leader(self) -> str | None:
        """The runner that last said it leads the schedules (and still runs)."""
        for runner in RUNNERS:
            process = self.processes.get(runner)
            alive = process is not None and process.poll() is None
            if alive and "now leads the cluster's scheduler" in self.log(runner):
                return runner
        return None

    def stop_all(self) -> dict[str, int]:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        return {name: p.wait(timeout=60) for name, p in self.processes.items()}


class Producer:
    """Puts the events round robin through the runners' endpoints; an event
    counts as acknowledged once a PutEvents answer gave it an EventId."""

    def __init__(self, cluster: Cluster) -> None:
        self.clients = {
            r: boto("events", cluster.endpoint(r), retries={"max_attempts": 1}) for r in RUNNERS
        }
        self.acknowledged: set[int] = set()
        self.refused = 0

    def run(self) -> None:
        turn = 0
        for first in range(0, TOTAL, 10):
            left = list(range(first, first + 10))
            while left:
                runner = RUNNERS[turn % len(RUNNERS)]
                turn += 1
                entries = [
                    {"Source": "shop", "DetailType": "Order", "Detail": json.dumps({"n": n})}
                    for n in left
                ]
                try:
                    answer = self.clients[runner].put_events(Entries=entries)
                except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                    self.refused += 1  # that runner is down: the next one takes them
                    continue
                kept = []
                for n, entry in zip(left, answer["Entries"], strict=True):
                    if "EventId" in entry:
                        self.acknowledged.add(n)
                    else:
                        kept.append(n)
                left = kept


class Consumer:
    """Receives through one runner's SQS endpoint, deleting what it got."""

    def __init__(self, cluster: Cluster, runner: str, holds: dict[str, list[Any]]) -> None:
        self.cluster = cluster
        self.runner = runner
        self.holds = holds
        self.lock = threading.Lock()
        self.seen: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        client = boto("sqs", self.cluster.endpoint(self.runner), retries={"max_attempts": 1})
        url = None
        while not self.stop.is_set():
            try:
                if url is None:
                    url = client.get_queue_url(QueueName="orders")["QueueUrl"]
                got = client.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
                ).get("Messages", [])
                start = time.monotonic()
                for message in got:
                    with self.lock:
                        self.holds[message["MessageId"]].append((self.runner, start))
                    self.seen.append(json.loads(message["Body"])["n"])
                if got:
                    client.delete_message_batch(
                        QueueUrl=url,
                        Entries=[
                            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                            for i, m in enumerate(got)
                        ],
                    )
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                time.sleep(0.2)  # its runner is down: wait for the restart


def _schedules(config: Path, first: float) -> None:
    """Ten one-time schedules, 2 s apart from ``first``, each to ``ticks``."""
    text = config.read_text()
    for i in range(SCHEDULES):
        moment = datetime.fromtimestamp(first + 2 * i, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        text += (
            f"  tick-{i}:\n"
            f'    schedule: "at({moment})"\n'
            "    targets: [{id: t, resource: ticks}]\n"
        )
    config.write_text(text)


def _drain(endpoint: str, queue: str) -> list[dict[str, Any]]:
    client = boto("sqs", endpoint)
    url = client.get_queue_url(QueueName=queue)["QueueUrl"]
    found: list[dict[str, Any]] = []
    while True:
        got = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        messages = got.get("Messages", [])
        if not messages:
            return found
        found += [json.loads(m["Body"]) for m in messages]
        client.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ],
        )


def test_three_runners_on_postgresql_share_queue_schedules_and_lose_nothing(
    postgres_url: str, tmp_path: Path
) -> None:
    cluster = Cluster(tmp_path, postgres_url)
    cluster.config.write_text(CONFIG)
    first_tick = time.time() + 12
    _schedules(cluster.config, first_tick)
    holds: dict[str, list[Any]] = defaultdict(list)
    consumers = {r: Consumer(cluster, r, holds) for r in RUNNERS}
    threads: list[threading.Thread] = []
    try:
        for runner in RUNNERS:
            cluster.start(runner)
        producer = Producer(cluster)
        threads = [threading.Thread(target=c.run) for c in consumers.values()]
        putting = threading.Thread(target=producer.run)
        for thread in [putting, *threads]:
            thread.start()
        deadline = time.monotonic() + 60
        while len(producer.acknowledged) < TOTAL // 2:
            assert time.monotonic() < deadline, "the puts did not get going"
            time.sleep(0.02)
        # Kill the runner firing the schedules, between two of their runs.
        while time.time() < first_tick + 5:
            time.sleep(0.05)
        leader = cluster.leader()
        assert leader is not None, "no runner said it leads the schedules"
        cluster.processes[leader].kill()
        cluster.processes[leader].wait()
        time.sleep(1)
        cluster.start(leader)
        putting.join(timeout=180)
        assert not putting.is_alive()
        deadline = time.monotonic() + 120
        while not producer.acknowledged <= {n for c in consumers.values() for n in c.seen}:
            assert time.monotonic() < deadline, "acknowledged events missing from the queue"
            time.sleep(0.1)
        while time.time() < first_tick + 2 * SCHEDULES + 8:
            time.sleep(0.1)
    finally:
        for consumer in consumers.values():
            consumer.stop.set()
        for thread in threads:
            thread.join(timeout=30)
        ticks = _drain(cluster.endpoint("r1"), "ticks") if cluster.processes else []
        codes = cluster.stop_all()
    assert codes == dict.fromkeys(RUNNERS, 0), codes
    assert len(producer.acknowledged) == TOTAL
    # A message held by two consumers at once would show as one message id
    # received twice within its visibility timeout (60 s, longer than the test).
    twice = {m: h for m, h in holds.items() if len(h) > 1}
    assert twice == {}, list(twice.items())[:5]
    # Each schedule run once: one event id per rule, whoever fired it (an
    # event may arrive twice, at least once, with the same id).
    fired: dict[str, set[str]] = defaultdict(set)
    for event in ticks:
        rule = event["resources"][0].rsplit("/", 1)[1]
        fired[rule].add(event["id"])
    assert {rule: len(ids) for rule, ids in fired.items()} == {
        f"tick-{i}": 1 for i in range(SCHEDULES)
    }
