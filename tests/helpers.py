from __future__ import annotations

import subprocess
import sys
from pathlib import Path


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
