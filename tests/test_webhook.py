"""Webhook sources: a real runner, real HTTP requests with curl, real signatures."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .apiclient import endpoint_of
from .helpers import SINK_MODULE, pipelines_command, run_cli

GITHUB_SECRET = "It's a Secret to Everybody"
STRIPE_SECRET = "whsec_test_secret"

PIPELINE = """
api: 127.0.0.1:0
state: state.db
resources:
  github:
    type: webhook
    path: /hooks/github
    source: github.com
    detail_type: <headers.x-github-event>
    detail: request
    verify: {scheme: github, secret: "${GITHUB_SECRET}"}
  stripe:
    type: webhook
    path: /hooks/stripe
    source: stripe.com
    detail_type: <body.type>
    verify: {scheme: stripe, secret: "${STRIPE_SECRET}"}
  forms:
    type: webhook
    path: /hooks/form
    source: forms
    max_body: 1024
    rate_limit_per_second: 2
    verify: {scheme: token, header: X-Token, secret: letmein}
  sink: {type: function, function: "sinkmod:record"}
rules:
  all:
    pattern: {source: [github.com, stripe.com, forms]}
    targets: [{id: t, resource: sink}]
"""


class Runner:
    def __init__(self, url: str, sink: Path) -> None:
        self.url = url
        self.sink = sink

    def events(self, count: int) -> list[dict[str, object]]:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.sink.exists():
                lines = self.sink.read_text().splitlines()
                if len(lines) >= count:
                    return [json.loads(line) for line in lines]
            time.sleep(0.02)
        raise AssertionError(f"fewer than {count} events reached the sink")


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    (tmp_path / "sinkmod.py").write_text(SINK_MODULE)
    sink = tmp_path / "sink.jsonl"
    env = {
        **os.environ,
        "GITHUB_SECRET": GITHUB_SECRET,
        "STRIPE_SECRET": STRIPE_SECRET,
        "SINK_FILE": str(sink),
    }
    process = subprocess.Popen(
        [*pipelines_command(), "run", "pipeline.yaml", "--no-control"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield Runner(endpoint_of(process), sink)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()


def curl(url: str, body: bytes, *headers: str, method: str = "POST") -> tuple[int, str]:
    """(status, body) of a request curl sends."""
    args = ["curl", "-s", "-X", method, "--data-binary", "@-", "-w", "\n%{http_code}", url]
    for header in headers:
        args += ["-H", header]
    done = subprocess.run(args, input=body, capture_output=True, timeout=30, check=True)
    text, _, status = done.stdout.decode().rpartition("\n")
    return int(status), text


def test_github_deliveries_are_verified_with_its_documented_example(runner: Runner) -> None:
    # GitHub's documentation: this secret and payload give this signature.
    signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    url = f"{runner.url}/hooks/github"
    status, text = curl(
        url, b"Hello, World!", f"X-Hub-Signature-256: {signature}", "X-GitHub-Event: push"
    )
    assert status == 200, text
    event_id = json.loads(text)["EventId"]
    bad = signature[:-1] + "0"
    status, text = curl(url, b"Hello, World!", f"X-Hub-Signature-256: {bad}")
    assert status == 401 and "does not match" in text
    status, text = curl(url, b"Hello, World!")
    assert status == 401 and "no x-hub-signature-256 header" in text
    (event,) = runner.events(1)
    assert (event["id"], event["source"], event["detail-type"]) == (event_id, "github.com", "push")
    detail = event["detail"]
    assert isinstance(detail, dict)
    assert detail["body"] == "Hello, World!"  # not JSON: kept as text
    assert detail["headers"]["x-github-event"] == "push"  # headers, for patterns


def stripe_header(body: bytes, stamp: int, secret: str = STRIPE_SECRET) -> str:
    """Stripe's documented scheme: HMAC-SHA256 over ``timestamp.body``, hex."""
    signed = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"Stripe-Signature: t={stamp},v1={signed},v0=ignored"


def test_stripe_signatures_and_their_timestamps(runner: Runner) -> None:
    url = f"{runner.url}/hooks/stripe"
    body = json.dumps({"id": "evt_1", "type": "charge.succeeded", "data": {"amount": 5}}).encode()
    now = int(time.time())
    status, text = curl(url, body, stripe_header(body, now), "Content-Type: application/json")
    assert status == 200, text
    status, text = curl(url, body, stripe_header(body, now - 3600))
    assert status == 401 and "timestamp" in text
    status, text = curl(url, body, stripe_header(body, now, secret="wrong"))
    assert status == 401
    (event,) = runner.events(1)
    assert (event["source"], event["detail-type"]) == ("stripe.com", "charge.succeeded")
    assert event["detail"] == {"id": "evt_1", "type": "charge.succeeded", "data": {"amount": 5}}


def test_limits_methods_and_bad_bodies_answer_clearly(runner: Runner) -> None:
    url = f"{runner.url}/hooks/form"
    token = "X-Token: letmein"
    status, text = curl(url, b"{}", token, method="GET")
    assert status == 405
    status, text = curl(url, b'{"pad": "' + b"x" * 2000 + b'"}', token)
    assert status == 413
    status, text = curl(url, b"[1, 2]", token)
    assert status == 400 and "not a JSON object" in text
    statuses = [curl(url, b'{"n": 1}', token)[0] for _ in range(4)]
    # Two a second, at most two at once: of four in a row, the later are refused.
    assert statuses[0] == 200 and 429 in statuses
    status, text = curl(url, b'{"n": 1}', "X-Token: guess")
    assert status in (401, 429)


def test_a_runner_without_an_http_port_refuses_webhooks(tmp_path: Path) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text(PIPELINE.replace("api: 127.0.0.1:0\n", ""))
    (tmp_path / "sinkmod.py").write_text(SINK_MODULE)
    done = run_cli(
        "run",
        str(config),
        "--no-control",
        env={**os.environ, "GITHUB_SECRET": "s", "STRIPE_SECRET": "s"},
    )
    assert done.returncode != 0
    assert (
        "resource 'github', resource 'stripe', resource 'forms' take HTTP requests"
        " on the runner's port" in done.stderr
    )
    assert "Traceback" not in done.stderr


DURABLE = """
api: 127.0.0.1:0
state: state.db
resources:
  hook: {type: webhook, path: /in, source: partner}
  sink: {type: function, function: "gatemod:record", timeout: 60}
rules:
  all:
    pattern: {source: [partner]}
    targets: [{id: t, resource: sink}]
"""

GATE_MODULE = """
import json, os, time

def record(payload):
    while os.path.exists(os.environ["GATE_FILE"]):
        time.sleep(0.01)
    with open(os.environ["SINK_FILE"], "a") as out:
        out.write(json.dumps(payload) + "\\n")
"""


def test_an_answered_webhook_survives_a_kill(tmp_path: Path) -> None:
    (tmp_path / "pipeline.yaml").write_text(DURABLE)
    (tmp_path / "gatemod.py").write_text(GATE_MODULE)
    gate, sink = tmp_path / "gate", tmp_path / "sink.jsonl"
    gate.touch()  # deliveries hang until it goes
    env = {**os.environ, "GATE_FILE": str(gate), "SINK_FILE": str(sink)}
    command = [*pipelines_command(), "run", "pipeline.yaml", "--no-control"]
    first = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = endpoint_of(first)
        status, text = curl(f"{url}/in", b'{"order": 42}', "Content-Type: application/json")
        assert status == 200, text
        event_id = json.loads(text)["EventId"]
        first.send_signal(signal.SIGKILL)  # answered, not delivered: only the intake has it
        first.wait(timeout=10)
    finally:
        first.kill()
    assert not sink.exists()
    gate.unlink()
    second = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        endpoint_of(second)
        deadline = time.monotonic() + 20
        while not (sink.exists() and sink.read_text().strip()):
            assert time.monotonic() < deadline, "the answered event was lost"
            time.sleep(0.05)
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
    finally:
        second.kill()
    (delivered,) = [json.loads(line) for line in sink.read_text().splitlines()]
    assert (delivered["id"], delivered["detail"]) == (event_id, {"order": 42})
