"""A real ``pipelines run`` subprocess to observe: a target that always
fails, one that delivers, a queue; its HTTP port and control socket."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from pipelines.control import put_events
from tests.helpers import SINK_MODULE, pipelines_command

FAILING = """
def boom(payload):
    raise RuntimeError("card service down")
"""

CONFIG = """
state: state.db
resources:
  sink: {type: function, function: "sinkmod:record"}
  charge: {type: function, function: "failing:boom"}
  inbox: {type: queue}
rules:
  orders:
    pattern: {source: [shop]}
    targets:
      - {id: sink, resource: sink}
      - id: charge
        resource: charge
        retry_policy: {maximum_retry_attempts: 185, maximum_event_age: 86400}
      - {id: inbox, resource: inbox}
  refunds:
    pattern: {source: [refunds]}
    targets: [{id: sink, resource: sink}]
alarms:
  charge-failing:
    namespace: Pipelines/Events
    metric_name: FailedInvocations
    dimensions: {EventBusName: default, RuleName: orders}
    statistic: Sum
    period: 60
    evaluation_periods: 1
    threshold: 1
    comparison_operator: GreaterThanOrEqualToThreshold
"""


class Pipeline:
    """``pipelines run`` in a subprocess, its log in a file (a pipe it could fill)."""

    def __init__(self, tmp_path: Path, *args: str, config: str = CONFIG) -> None:
        (tmp_path / "sinkmod.py").write_text(SINK_MODULE)
        (tmp_path / "failing.py").write_text(FAILING)
        self.config = tmp_path / "pipeline.yaml"
        self.config.write_text(config)
        self.sink = tmp_path / "sink.jsonl"
        self.log = tmp_path / "runner.log"
        self.control = tmp_path / "control.sock"
        env = {**os.environ, "SINK_FILE": str(self.sink)}
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [
                    *pipelines_command(),
                    "run",
                    str(self.config),
                    "--control",
                    str(self.control),
                    *args,
                ],
                env=env,
                stderr=log,
                stdout=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
            )
        self.url = ""

    def wait_for(self, text: str, seconds: float = 30.0) -> re.Match[str]:
        """The first match of ``text`` (a regex) in the runner's log, once there."""
        deadline = time.monotonic() + seconds
        while True:
            found = re.search(text, self.log.read_text())
            if found:
                return found
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, f"{text!r} not logged:\n{self.log.read_text()}"
            time.sleep(0.05)

    def start(self) -> Pipeline:
        """Wait until it runs (and its endpoint's URL, when it serves one)."""
        self.wait_for("pipeline started")
        found = re.search(r"AWS endpoint: (http://\S+)", self.log.read_text())
        self.url = found.group(1) if found else ""
        return self

    def put(self, source: str, count: int) -> None:
        """``count`` events from ``source``, through the control socket."""
        entries = [
            {"Source": source, "DetailType": "t", "Detail": json.dumps({"n": n})}
            for n in range(count)
        ]
        result = asyncio.run(put_events(self.control, entries))
        assert result["FailedEntryCount"] == 0, result

    def get(self, path: str, accept: str | None = None) -> tuple[int, str, str]:
        """(status, content type, body) of a GET on its HTTP port."""
        request = urllib.request.Request(self.url + path)
        if accept is not None:
            request.add_header("Accept", accept)
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, answer.headers["Content-Type"], answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.headers["Content-Type"], error.read().decode()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise
        return self.process.returncode
