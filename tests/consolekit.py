"""A real pipeline serving the web console, for the console's tests.

``start_console`` runs ``pipelines run CONFIG --api 127.0.0.1:0 --console``
in a subprocess (its stderr read by a thread, so its log never fills the
pipe) and returns its base URL and login link.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import pipelines_command

#: A payments function that declines totals over 1000.
FUNCTIONS = """
def charge(event, context=None):
    if event.get("total", 0) > 1000:
        raise ValueError(f"card declined for {event['total']}")
    return {"charged": event.get("total")}
"""

CONFIG = """
state: state.db
resources:
  payments: {type: function, function: "shopfunctions:charge"}
  work: {type: queue, redrive_policy: {dead_letter_queue: work-dlq, max_receive_count: 1}}
  work-dlq: {type: queue}
  declined: {type: queue}
  audit: {type: log_group, log_group: /shop/audit}
  clicks: {type: stream, shards: 2, partition_key_jmespath: id}
archives:
  everything: {bus: default}
rules:
  charge:
    description: orders are charged; what is declined goes to the queue "declined"
    pattern: {source: [shop], detail-type: [OrderPlaced]}
    targets:
      - id: payments
        resource: payments
        input_path: $.detail
        retry_policy: {maximum_retry_attempts: 0}
        dead_letter: declined
  audit:
    pattern: {source: [shop]}
    targets:
      - {id: log, resource: audit}
      - {id: work, resource: work}
      - {id: clicks, resource: clicks}
alarms:
  payments-declined:
    description: the shop counts declined payments (PutMetricData, 1-second resolution)
    namespace: Shop
    metric_name: Declined
    statistic: Sum
    period: 10
    evaluation_periods: 1
    threshold: 1
    comparison_operator: GreaterThanOrEqualToThreshold
    treat_missing_data: notBreaching
"""


@dataclass
class ConsoleRunner:
    process: subprocess.Popen[str]
    url: str
    login: str
    lines: list[str] = field(default_factory=list)

    @property
    def token(self) -> str:
        return self.login.rsplit("token=", 1)[1]

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        """GET a console path: (status, body)."""
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=30)
        assert code == 0, "\n".join(self.lines[-30:])


def start_console(
    directory: Path, config: str = CONFIG, listen: tuple[str, ...] = ("--api", "127.0.0.1:0")
) -> ConsoleRunner:
    (directory / "shopfunctions.py").write_text(FUNCTIONS)
    (directory / "pipeline.yaml").write_text(config)
    process = subprocess.Popen(
        [
            *pipelines_command(),
            "run",
            str(directory / "pipeline.yaml"),
            "--no-control",
            *listen,
            "--console",
        ],
        env=dict(os.environ),
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    lines: list[str] = []
    found: dict[str, str] = {}
    ready = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line.rstrip("\n"))
            login = re.search(r"console: (http://\S+)", line)
            if login:
                found["login"] = login.group(1)
            if "pipeline started" in line:
                ready.set()
        ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while not ready.wait(0.1):
        assert time.monotonic() < deadline, "\n".join(lines)
    assert "login" in found, "the runner logged no console link:\n" + "\n".join(lines)
    login = found["login"]
    return ConsoleRunner(process, login.split("/console/")[0], login, lines)
