"""Config unit tests (``pipelines test``): the library's run_tests and the CLI."""

from __future__ import annotations

import textwrap
from pathlib import Path

from pipelines.testing import discover, run_tests

from .helpers import run_cli

ROOT = Path(__file__).resolve().parent.parent

PIPELINE = """
resources:
  warehouse: {type: function, function: "shopmod:ship"}
  payments: {type: function, function: "shopmod:charge"}
  failed: {type: function, function: "shopmod:ship"}
rules:
  big-orders:
    pattern: {source: [shop], detail: {total: [{numeric: [">", 100]}]}}
    targets:
      - {id: ship, resource: warehouse, input_path: $.detail}
  all-orders:
    pattern: {source: [shop]}
    targets:
      - id: charge
        resource: payments
        input_transformer:
          input_paths_map: {order: $.detail.order}
          input_template: '{"charge": <order>}'
        retry_policy: {maximum_retry_attempts: 2}
        dead_letter: failed
"""

SHOP = """
def ship(payload):
    return payload

def charge(payload):
    if payload["charge"] == 13:
        raise RuntimeError("unlucky order")
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def project(tmp_path: Path, tests: str) -> Path:
    write(tmp_path, "pipeline.yaml", PIPELINE)
    write(tmp_path, "shopmod.py", SHOP)
    return write(tmp_path, "pipeline.test.yaml", tests)


async def test_passing_tests_cover_payloads_patterns_mocks_and_dead_letters(
    tmp_path: Path,
) -> None:
    project(
        tmp_path,
        """
        config: pipeline.yaml
        tests:
          - name: a big order is shipped and charged
            input:
              - {Source: shop, DetailType: order, Detail: {order: 1, total: 150}}
              - {Source: shop, DetailType: order, Detail: {order: 2, total: 50}}
            expect:
              warehouse: [{order: 1, total: 150}]
              payments:
                - {charge: 2}
                - pattern: {charge: [{numeric: ["<", 2]}]}
              failed: []
          - name: a charge that keeps failing is dead-lettered after its retries
            run_for: 600
            input:
              - {Source: shop, DetailType: order, Detail: {order: 13, total: 10}}
            expect:
              payments: []
              failed:
                - pattern: {detail: {order: [13]}}
                  attributes: {ERROR_CODE: FunctionError, RETRY_ATTEMPTS: "2"}
          - name: a mocked payment service that refuses at once
            mocks:
              payments: {fail: card declined, code: Declined, retryable: false}
            input:
              - {Source: shop, DetailType: order, Detail: {order: 7, total: 10}}
            expect:
              failed:
                - pattern: {detail: {order: [7]}}
                  attributes: {ERROR_CODE: Declined, ERROR_MESSAGE: card declined}
        """,
    )
    results = await run_tests(tmp_path)
    assert [(r.name, r.failures) for r in results] == [
        ("a big order is shipped and charged", []),
        ("a charge that keeps failing is dead-lettered after its retries", []),
        ("a mocked payment service that refuses at once", []),
    ]


async def test_failures_are_located_and_shown_as_a_diff(tmp_path: Path) -> None:
    file = project(
        tmp_path,
        """
        config: pipeline.yaml
        tests:
          - name: wrong expectations
            input:
              - {Source: shop, DetailType: order, Detail: {order: 1, total: 150}}
              - {Source: shop, DetailType: order, Detail: "not json"}
            expect:
              warehouse: [{order: 1, total: 151}]
              payments: []
              nowhere: []
          - name: a test with a typo
            inptu: []
        """,
    )
    wrong, typo = await run_tests(file)
    assert not wrong.passed and not typo.passed
    assert wrong.failures == [
        f"{file}:10:7: expect.nowhere: no resource named 'nowhere'",
        f"{file}:6:9: input[1]: MalformedDetail: Detail is malformed.",
        f"{file}:8:7: warehouse: expected 1, accepted 1 (1 missing, 1 unexpected)\n"
        '  - {"order": 1, "total": 151}\n'
        '  + {"order": 1, "total": 150}',
        f"{file}:9:7: payments: expected 0, accepted 1 (0 missing, 1 unexpected)\n"
        '  + {"charge": 1}',
    ]
    assert typo.failures == [
        f"{file}:12:5: tests[1].inptu: unknown setting (allowed: environment, expect, input,"
        " mocks, name, now, run_for, state_machines); did you mean 'input'?"
    ]


async def test_a_misspelt_key_of_the_test_file_is_located_with_a_hint(tmp_path: Path) -> None:
    file = project(tmp_path, "config: pipeline.yaml\ntest:\n  - {name: a, expect: {}}\n")
    (result,) = await run_tests(file)
    assert result.name == "(test file)"
    assert result.failures == [
        f"{file}:2:1: test: unknown setting (allowed: config, mock_config, tests); did you mean 'tests'?",
        f"{file}:1:1: tests: a list of tests is required",
    ]


async def test_a_config_with_problems_fails_its_tests_with_the_config_positions(
    tmp_path: Path,
) -> None:
    file = project(
        tmp_path,
        """
        config: pipeline.yaml
        tests:
          - name: anything
            environment: {}
            expect: {}
        """,
    )
    write(tmp_path, "pipeline.yaml", PIPELINE.replace("resource: warehouse", "resource: wh"))
    (result,) = await run_tests(file)
    assert len(result.failures) == 1
    assert result.failures[0].startswith(
        f"{tmp_path / 'pipeline.yaml'}:9:20: rules.big-orders.targets[0].resource:"
        " no resource named 'wh'"
    )


def test_discover_finds_test_files_and_skips_environments(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".venv").mkdir()
    for path in ("a/x.test.yaml", "a/b/y.test.yaml", ".venv/z.test.yaml", "a/pipeline.yaml"):
        (tmp_path / path).write_text("")
    assert discover(tmp_path) == [tmp_path / "a/x.test.yaml", tmp_path / "a/b/y.test.yaml"]


def test_cli_runs_the_examples_tests() -> None:
    done = run_cli("test", str(ROOT / "examples"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].endswith(" passed, 0 failed")
    assert "pipeline.test.yaml::the nightly report runs at 02:00 Berlin time" in done.stdout
    assert "alarms/pipeline.test.yaml::a declined card raises the alarm" in done.stdout


def test_cli_exit_codes_for_failures_and_no_tests(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
        config: pipeline.yaml
        tests:
          - name: fails
            input: [{Source: shop, DetailType: order, Detail: {order: 1, total: 5}}]
            expect: {warehouse: [{order: 1}]}
        """,
    )
    failed = run_cli("test", str(tmp_path))
    assert failed.returncode == 1
    assert "pipeline.test.yaml::fails FAILED" in failed.stdout
    assert failed.stdout.splitlines()[-1] == "0 passed, 1 failed"
    empty = tmp_path / "empty"
    empty.mkdir()
    none = run_cli("test", str(empty))
    assert none.returncode == 1
    assert "no test files (*.test.yaml)" in none.stderr


async def test_overlapping_matchers_pair_up_in_any_order(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
        config: pipeline.yaml
        tests:
          - name: a wide pattern listed before an exact payload it also accepts
            mocks: {payments: {}}
            input:
              - {Source: shop, DetailType: order, Detail: {order: 1, total: 5}}
              - {Source: shop, DetailType: order, Detail: {order: 2, total: 5}}
            expect:
              payments:
                - pattern: {charge: [1, 2]}
                - {charge: 1}
        """,
    )
    (result,) = await run_tests(tmp_path)
    assert result.failures == []
