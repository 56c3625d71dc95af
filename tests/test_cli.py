"""The pipelines CLI, run as a real subprocess."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines import __version__

from .helpers import run_cli

EVENT = {
    "id": "1",
    "source": "orders",
    "detail-type": "Order Placed",
    "account": "123456789012",
    "region": "us-east-1",
    "time": "2024-05-01T10:00:00Z",
    "detail": {"total": 250, "currency": "EUR"},
}


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_help_lists_commands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "test-pattern" in result.stdout


def test_pattern_true() -> None:
    pattern = {"source": ["orders"], "detail": {"total": [{"numeric": [">", 100]}]}}
    result = run_cli("test-pattern", "--pattern", json.dumps(pattern), "--event", json.dumps(EVENT))
    assert (result.returncode, result.stdout.strip()) == (0, "true")


def test_pattern_false() -> None:
    pattern = {"detail": {"currency": [{"anything-but": "EUR"}]}}
    result = run_cli("test-pattern", "-p", json.dumps(pattern), "-e", json.dumps(EVENT))
    assert (result.returncode, result.stdout.strip()) == (1, "false")


def test_pattern_and_event_from_files(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text(json.dumps({"detail": {"currency": [{"prefix": "EU"}]}}))
    (tmp_path / "e.json").write_text(json.dumps(EVENT))
    result = run_cli(
        "test-pattern", "--pattern", f"@{tmp_path / 'p.json'}", "--event", f"@{tmp_path / 'e.json'}"
    )
    assert (result.returncode, result.stdout.strip()) == (0, "true")


def test_event_from_stdin() -> None:
    result = run_cli(
        "test-pattern", "-p", '{"source": ["orders"]}', "-e", "@-", stdin=json.dumps(EVENT)
    )
    assert (result.returncode, result.stdout.strip()) == (0, "true")


def test_invalid_pattern_exits_2_with_the_reason_and_path() -> None:
    result = run_cli("test-pattern", "-p", '{"detail": {"total": []}}', "-e", json.dumps(EVENT))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Empty arrays are not allowed" in result.stderr
    assert "$.detail.total" in result.stderr


def test_invalid_event_exits_2() -> None:
    result = run_cli("test-pattern", "-p", '{"source": ["orders"]}', "-e", '{"source": "orders"}')
    assert result.returncode == 2
    assert "Parameter Event is not valid." in result.stderr


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("test-pattern", "-p", f"@{tmp_path / 'nope.json'}", "-e", "{}")
    assert result.returncode == 2
    assert "cannot read" in result.stderr
