"""Failed deliveries are seen, and ``run --input`` returns however long the
retry policy: the CLI in a real subprocess."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from tests.helpers import run_cli

FAILING = """
def boom(payload):
    raise RuntimeError("card service down")
"""

CONFIG = """
state: state.db
resources:
  charge: {type: function, function: "failing:boom"}
rules:
  orders:
    pattern: {source: [shop]}
    targets:
      - id: charge
        resource: charge
        # EventBridge's defaults: 185 attempts over 24 hours.
        retry_policy: {maximum_retry_attempts: 185, maximum_event_age: 86400}
"""


def pipeline(tmp_path: Path, events: int) -> tuple[Path, Path]:
    (tmp_path / "failing.py").write_text(FAILING)
    config = tmp_path / "pipeline.yaml"
    config.write_text(CONFIG)
    lines = [
        json.dumps({"Source": "shop", "DetailType": "o", "Detail": json.dumps({"n": n})})
        for n in range(events)
    ]
    (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n")
    return config, tmp_path / "events.jsonl"


def test_a_target_that_always_fails_is_logged_and_the_run_returns(tmp_path: Path) -> None:
    config, events = pipeline(tmp_path, 40)
    began = time.monotonic()
    result = run_cli("run", str(config), "--input", str(events), "--max-wait", "1")
    took = time.monotonic() - began
    assert result.returncode == 0, result.stderr
    assert took < 50  # not the 24 hours of the retry policy
    warnings = [line for line in result.stderr.splitlines() if "delivery failed" in line]
    # Each names the rule, target, attempt and the error; a storm is limited.
    assert warnings and len(warnings) <= 5 * 2
    first = warnings[0]
    assert "rule orders target charge" in first and "attempt 1" in first
    assert "RuntimeError: card service down" in first
    assert "Traceback" not in result.stderr  # the user's traceback is for --log-level debug
    # What the limit held back is counted, not hidden.
    assert "more failed attempts not logged" in result.stderr
    summary = [line for line in result.stderr.splitlines() if line.startswith("run: ")]
    assert summary == [
        "run: 40 events put: delivered 0, dead-lettered 0, dropped 0, waiting as retries 40"
    ]
    with sqlite3.connect(tmp_path / "state.db") as db:
        [(saved,)] = db.execute("SELECT count(*) FROM pending_deliveries")
    assert saved == 40  # saved for the next run, not lost


def test_the_traceback_is_logged_at_debug(tmp_path: Path) -> None:
    config, events = pipeline(tmp_path, 1)
    result = run_cli(
        "run", str(config), "--input", str(events), "--max-wait", "0", "--log-level", "debug"
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" in result.stderr and 'raise RuntimeError("card service down")' in (
        result.stderr
    )
