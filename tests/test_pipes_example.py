"""examples/pipes, run as a user runs it: real subprocesses of the CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from .helpers import pipelines_command
from .test_pipes_cli import environment

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "pipes"


def test_orders_are_piped_through_a_filter_and_an_enrichment_to_a_stream(
    tmp_path: Path,
) -> None:
    config = str(EXAMPLE / "pipeline.yaml")
    env = {**environment(tmp_path), "PIPELINES_STATE": str(tmp_path / "state.db")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*pipelines_command(), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert cli("validate", config).returncode == 0
    tested = cli("test", str(EXAMPLE))
    assert tested.returncode == 0, tested.stdout + tested.stderr

    def shipped() -> list[Any]:
        read = cli("stream", "read", "shipments", "-c", config, "--from", "trim-horizon")
        assert read.returncode == 0, read.stderr
        return [json.loads(line)["Data"] for line in read.stdout.splitlines()]

    runner = subprocess.Popen(
        [*pipelines_command(), "run", config], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert runner.stderr is not None
        assert "pipeline started" in runner.stderr.readline()
        put = cli("put", "-c", config, "--input", str(EXAMPLE / "events.jsonl"))
        assert put.returncode == 0, put.stderr
        deadline = time.monotonic() + 30
        while len(shipped()) < 2:
            assert time.monotonic() < deadline, "the pipe delivered nothing in time"
            time.sleep(0.2)
    finally:
        runner.send_signal(signal.SIGTERM)
        runner.communicate(timeout=30)
    assert runner.returncode == 0
    assert sorted(shipped(), key=lambda order: order["order"]) == [
        {"order": "o-1", "total": 250, "customer": "ann", "tier": "gold", "pipe": "orders-to-shipments"},
        {"order": "o-3", "total": 120, "customer": "cy", "tier": "standard", "pipe": "orders-to-shipments"},
    ]  # fmt: skip
    [listed] = json.loads(cli("pipes", "list", "-c", config).stdout)
    assert (listed["Received"], listed["FilteredOut"], listed["Enriched"]) == (3, 1, 2)
    assert (listed["Delivered"], listed["Failed"]) == (2, 0)
    # Nothing is left in the queue: a message went once the stream had it.
    stats = cli("queue", "stats", "orders", "-c", config)
    assert stats.returncode == 0, stats.stderr
    counts = json.loads(stats.stdout)
    assert counts["ApproximateNumberOfMessages"] == 0
    assert counts["ApproximateNumberOfMessagesNotVisible"] == 0
