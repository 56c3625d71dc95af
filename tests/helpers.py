from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipelines.patterns import Matcher, compile_pattern


def pipelines_command() -> list[str]:
    """The installed console script, next to this interpreter when in a venv."""
    script = Path(sys.executable).with_name("pipelines")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipelines"]


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*pipelines_command(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def verdict(pattern: Any, event: Any) -> bool:
    """Pattern.matches on the event, asserting both Matcher entry points agree with it."""
    matched = compile_pattern(pattern).matches(event)
    matcher = Matcher()
    matcher.add("r", pattern)
    expected = ["r"] if matched else []
    assert matcher.match(event) == expected
    assert matcher.match_json(json.dumps(event)) == expected
    return matched
