"""YAML pipeline configs: loading, problems located as file:line:column,
environment substitution, merging, and the CLI's validate and run (real
subprocesses, real signals)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipelines.clock import ManualClock
from pipelines.config import build_runtime, check, load_config
from pipelines.errors import ConfigInvalid
from pipelines.process import tuned_process

from .helpers import SINK_MODULE, SINK_PIPELINE, pipelines_command, run_cli

ROOT = Path(__file__).resolve().parent.parent
SCHEDULES = ROOT / "examples" / "schedules" / "pipeline.yaml"


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


async def problems_of(*paths: Path, environ: dict[str, str] | None = None) -> list[str]:
    return [str(p) for p in await check(list(paths), environ=environ or {})]


async def test_the_schedules_example_is_valid() -> None:
    assert await problems_of(SCHEDULES) == []


async def test_problems_are_located_and_all_reported(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "bad.yaml",
        """
        resources:
          sink:
            type: function
            function: os:getcwd
            timout: 5
        rules:
          orders:
            pattern: {source: [shop]}
            targets:
              - id: a
                resource: sinc
          nightly:
            schedule: cron(0 12 * * * *)
          typo:
            shedule: rate(1 minute)
        """,
    )
    f = str(config)
    assert await problems_of(config) == [
        f"{f}:5:5: resources.sink.timout: unknown setting (allowed: async_invoke, function,"
        " max_concurrency, timeout); did you mean 'timeout'?",
        f"{f}:11:9: rules.orders.targets[0].resource: no resource named 'sinc'"
        " (resources: sink); did you mean 'sink'?",
        f"{f}:13:5: rules.nightly.schedule.expression: cron(0 12 * * * *): give one of"
        " day-of-month and day-of-week, and '?' in the other (for example cron(0 12 * * ? *)"
        " or cron(0 12 ? * MON *))",
        f"{f}:15:5: rules.typo.shedule: unknown setting (allowed: bus, description, pattern,"
        " require, schedule, state, targets); did you mean 'schedule'?",
    ]


async def test_pattern_and_setting_problems_point_into_the_value(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "p.yaml",
        """
        resources:
          sink: {type: function, function: "os:getcwd"}
          dlq: {type: function, function: "os:getcwd"}
        rules:
          big:
            pattern:
              detail:
                total: [{numeric: [">", "x"]}]
            targets: [{id: t, resource: sink}]
          retried:
            pattern: {source: [a]}
            targets:
              - id: t
                resource: sink
                retry_policy:
                  maximum_retry_attempts: 500
                dead_letter: dlq
        """,
    )
    problems = await problems_of(config)
    assert problems[0].startswith(f"{config}:8:18: rules.big.pattern: Event pattern is not valid.")
    assert "Value of > must be numeric (at $.detail.total[0].numeric)" in problems[0]
    assert problems[1] == (
        f"{config}:16:11: rules.retried.targets[0].retry_policy.maximum_retry_attempts:"
        " must be between 0 and 185, not 500"
    )


async def test_yaml_syntax_errors_have_line_and_column(tmp_path: Path) -> None:
    config = write(tmp_path, "s.yaml", "rules:\n  r: {pattern: [\n")
    [problem] = await problems_of(config)
    assert problem.startswith(f"{config}:3:1: YAML syntax:")


async def test_environment_substitution_types_plain_values(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "env.yaml",
        """
        state: ${STATE_FILE:-pipeline.db}
        resources:
          sink:
            type: function
            function: ${FUNCTION}
            timeout: ${TIMEOUT}
            max_concurrency: "${CONCURRENCY:-2}"
        """,
    )
    loaded = load_config(config, environ={"FUNCTION": "os:getcwd", "TIMEOUT": "7"})
    assert loaded.state == tmp_path / "pipeline.db"
    assert loaded.resources["sink"] == {
        "type": "function",
        "function": "os:getcwd",
        "timeout": 7,
        "max_concurrency": "2",  # quoted: stays a string
    }
    with pytest.raises(ConfigInvalid) as caught:
        load_config(config, environ={})
    assert [str(p) for p in caught.value.problems] == [
        f"{config}:5:15: environment variable FUNCTION is not set"
        " (give a default with ${FUNCTION:-value})",
        f"{config}:6:14: environment variable TIMEOUT is not set"
        " (give a default with ${TIMEOUT:-value})",
    ]


def test_a_reference_left_open_is_refused_and_braced_text_is_kept(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "open.yaml",
        """
        resources:
          sink:
            type: function
            function: os:getcwd
            timeout: ${TIMEOUT
            description: "${AWS::Region} stays ${NOTE:-text}"
        """,
    )
    with pytest.raises(ConfigInvalid) as caught:
        load_config(config, environ={"TIMEOUT": "7"})
    assert [str(p) for p in caught.value.problems] == [
        f"{config}:5:14: '${{TIMEOUT' has no closing brace: write ${{NAME}} or ${{NAME:-default}}"
    ]
    config.write_text(config.read_text().replace("${TIMEOUT", "${TIMEOUT}"))
    loaded = load_config(config, environ={"TIMEOUT": "7"})
    assert loaded.resources["sink"]["timeout"] == 7
    assert loaded.resources["sink"]["description"] == "${AWS::Region} stays text"


def test_a_substitution_that_leaves_an_empty_tagged_scalar_is_text(tmp_path: Path) -> None:
    # Found by the hostile-input property: PyYAML raised IndexError on "!!float ".
    for tag in ("!!float", "!!int"):
        config = tmp_path / f"{tag[2:]}.yaml"
        config.write_text(f"state: ${{EMPTY}}{tag} \n")
        assert load_config(config, environ={"EMPTY": ""}).state == tmp_path / tag
        with pytest.raises(ConfigInvalid) as caught:
            load_config(config, environ={})
        assert [str(p) for p in caught.value.problems] == [
            f"{config}:1:8: environment variable EMPTY is not set"
            " (give a default with ${EMPTY:-value})"
        ]


async def test_files_merge_and_a_name_declared_twice_is_reported(tmp_path: Path) -> None:
    first = write(
        tmp_path,
        "a.yaml",
        """
        resources:
          sink: {type: function, function: "os:getcwd"}
        """,
    )
    second = write(
        tmp_path,
        "b.yaml",
        """
        rules:
          r: {schedule: rate(1 hour), targets: [{id: t, resource: sink}]}
        """,
    )
    assert await problems_of(first, second) == []
    loaded = load_config([first, second])
    assert set(loaded.resources) == {"sink"} and set(loaded.rules) == {"r"}
    assert loaded.state == tmp_path / ".pipelines" / "state.db"
    third = write(tmp_path, "c.yaml", "resources:\n  sink: {type: function, function: 'x:y'}\n")
    assert await problems_of(first, third) == [
        f"{third}:2:3: resource 'sink' is already declared at {first}:2:3"
    ]


async def test_the_schedules_example_fires_on_berlin_time(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # 2026-03-28 00:30 UTC; Berlin moves to summer time on 2026-03-29.
    clock = ManualClock(datetime(2026, 3, 28, 0, 30, tzinfo=UTC).timestamp())
    config = load_config(SCHEDULES)
    runtime = await build_runtime(config, clock=clock, state_path=None)
    capsys.readouterr()
    # Embedded, not run by a runner: the caller puts the config's directory on the path.
    with tuned_process([config.directory], switch_interval=None):
        async with runtime:
            for _ in range(50):
                await clock.advance(3600)
            await runtime.wait_until_idle()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    reports = [line["scheduled"] for line in lines if line["job"] == "report"]
    beats = [line for line in lines if line["job"] == "heartbeat"]
    # 02:00 CET on the 28th; 02:00 does not exist on the 29th; 02:00 CEST on the 30th.
    assert reports == ["2026-03-28T01:00:00Z", "2026-03-30T00:00:00Z"]
    assert len(beats) == 50 * 60 + 1


def test_cli_validate_reports_problems_and_exit_codes(tmp_path: Path) -> None:
    ok = run_cli("validate", str(SCHEDULES))
    assert ok.returncode == 0, ok.stderr
    bad = write(tmp_path, "bad.yaml", "rules:\n  r:\n    patern: {source: [a]}\n")
    failed = run_cli("validate", str(bad))
    assert failed.returncode == 1
    assert failed.stderr.splitlines() == [
        f"{bad}:3:5: rules.r.patern: unknown setting (allowed: bus, description, pattern,"
        " require, schedule, state, targets); did you mean 'pattern'?"
    ]


@pytest.mark.parametrize(
    ("module", "reference", "message"),
    [
        (
            None,
            "shipping_handlers:ship",
            "no module named 'shipping_handlers': put it next to the config file,"
            " or install the package that provides it",
        ),
        ("shipping", "shipping:shipp", "'shipping' has no attribute 'shipp'"),
    ],
    ids=["no module", "no such function"],
)
def test_cli_validate_locates_a_function_that_cannot_be_found(
    tmp_path: Path, module: str | None, reference: str, message: str
) -> None:
    # Found without running the module: validate and run say the same.
    if module is not None:
        write(tmp_path, f"{module}.py", "def ship(event):\n    return event\n")
    config = write(
        tmp_path,
        "pipeline.yaml",
        f"""
        resources:
          sink:
            type: function
            function: {reference}
        """,
    )
    for command in ("validate", "run"):
        failed = run_cli(command, str(config))
        assert failed.returncode == 1, command
        assert failed.stderr.splitlines()[-1] == (
            f"{config}:4:5: resources.sink.function: {message}"
        ), command
        assert "Traceback" not in failed.stderr


def test_cli_run_with_input_delivers_and_reports_bad_lines(tmp_path: Path) -> None:
    write(tmp_path, "sinkmod.py", SINK_MODULE)
    config = write(tmp_path, "pipeline.yaml", SINK_PIPELINE)
    events = tmp_path / "events.jsonl"
    events.write_text(
        "\n".join(
            [
                json.dumps({"Source": "shop", "DetailType": "o", "Detail": json.dumps({"n": 1})}),
                json.dumps({"Source": "shop", "DetailType": "o", "Detail": json.dumps({"n": 2})}),
                json.dumps({"Source": "shop", "DetailType": "o", "Detail": "not json"}),
                "{broken",
                json.dumps({"Source": "shop", "DetailType": "o", "Detail": json.dumps({"n": 3})}),
                "[1, 2]",
            ]
        )
    )
    sink = tmp_path / "sink.jsonl"
    done = subprocess.run(
        [*pipelines_command(), "run", str(config), "--input", str(events)],
        env={**os.environ, "SINK_FILE": str(sink)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert f"{events}:3: MalformedDetail: Detail is malformed." in done.stderr
    assert f"{events}:4: InvalidJSON:" in done.stderr
    assert f"{events}:6: InvalidArgument: Each entry must be an object." in done.stderr
    delivered = [json.loads(line) for line in sink.read_text().splitlines()]
    assert sorted(d["n"] for d in delivered) == [1, 2, 3]
    assert (tmp_path / ".pipelines" / "state.db").exists()


def test_cli_run_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [*pipelines_command(), "run", str(SCHEDULES), "--log-format", "json"],
        env={**os.environ, "PIPELINES_STATE": str(tmp_path / "state.db")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = json.loads(process.stdout.readline())  # the heartbeat fires at once
        assert first["job"] == "heartbeat"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    logged = [json.loads(line) for line in stderr.splitlines()]
    messages = [line["message"] for line in logged]
    assert messages[0].startswith("pipeline started: 2 rules")
    assert messages[-1] == "stopped"
    assert all(line["level"] == "info" for line in logged)
    # The heartbeat's mark was written: a restart keeps the rate's phase.
    assert (tmp_path / "state.db").stat().st_size > 0


def test_cli_run_refuses_an_invalid_config_before_starting(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", "rules:\n  r: {schedule: 'rate(0 minutes)'}\n")
    started = time.monotonic()
    failed = run_cli("run", str(bad))
    assert failed.returncode == 1
    assert failed.stderr.startswith(f"{bad}:2:7: rules.r.schedule.expression: rate(0 minutes):")
    assert "Traceback" not in failed.stderr
    assert not (tmp_path / ".pipelines").exists()
    assert time.monotonic() - started < 30


def test_cli_run_reports_an_unusable_state_database_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "junk.db").write_bytes(b"this is not an SQLite database, not at all" * 10)
    config = write(tmp_path, "p.yaml", "state: junk.db\nrules: {}\n")
    failed = run_cli("run", str(config), "--no-control")
    assert failed.returncode == 1
    assert failed.stderr.splitlines() == [
        f"error: state database {tmp_path / 'junk.db'}: file is not a database;"
        " point state at another file, or move this one away if it is not a pipelines database"
    ]
    (tmp_path / "file").write_text("")
    blocked = write(tmp_path, "q.yaml", "state: file/state.db\nrules: {}\n")
    failed = run_cli("run", str(blocked), "--no-control")
    assert failed.returncode == 1
    assert failed.stderr.startswith(f"error: state database {tmp_path / 'file' / 'state.db'}:")
    assert "Traceback" not in failed.stderr


def test_cli_run_input_missing_empty_and_from_a_fifo(tmp_path: Path) -> None:
    write(tmp_path, "sinkmod.py", SINK_MODULE)
    config = write(tmp_path, "p.yaml", SINK_PIPELINE)
    missing = run_cli("run", str(config), "--input", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 1
    assert (
        missing.stderr
        == f"error: cannot read {tmp_path / 'nope.jsonl'}: No such file or directory\n"
    )
    with open(os.devnull) as nothing:  # stdin that is a device, not a pipe
        empty = subprocess.run(
            [*pipelines_command(), "run", str(config), "--input", "-"],
            stdin=nothing,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert empty.returncode == 0, empty.stderr
    # A FIFO is read as lines arrive: the first event is delivered while the
    # writer still holds the FIFO open.
    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    sink = tmp_path / "sink.jsonl"
    process = subprocess.Popen(
        [*pipelines_command(), "run", str(config), "--input", str(fifo)],
        env={**os.environ, "SINK_FILE": str(sink)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with open(fifo, "w") as writer:
            writer.write(json.dumps({"Source": "shop", "DetailType": "t", "Detail": '{"n": 1}'}))
            writer.write("\n")
            writer.flush()
            deadline = time.monotonic() + 20
            while not (sink.exists() and sink.read_text()):
                assert time.monotonic() < deadline, "the first event waited for the writer"
                time.sleep(0.02)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
    assert [json.loads(line) for line in sink.read_text().splitlines()] == [{"n": 1}]


async def test_archive_problems_are_located(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "a.yaml",
        """
        archives:
          typo: {patern: {source: [a]}}
          bad-pattern:
            pattern:
              source: shop
          nowhere: {bus: audit}
          slow: {durability: sometimes}
        """,
    )
    problems = await problems_of(config)
    assert problems[0].startswith(
        f"{config}:2:10: archives.typo.patern: unknown setting (allowed: bus, description,"
    )
    assert problems[0].endswith("did you mean 'pattern'?")
    assert problems[1].startswith(f"{config}:5:7: archives.bad-pattern.pattern:")
    assert problems[2] == (
        f"{config}:6:13: archives.nowhere.bus: no bus 'audit' (declare it under buses)"
    )
    assert problems[3].startswith(f"{config}:7:10: archives.slow.durability: must be 'normal'")
    stateless = write(tmp_path, "s.yaml", "state: false\narchives: {all: {}}\n")
    assert await problems_of(stateless) == [
        f"{stateless}:1:1: archives keep their events in the state database: set state"
    ]


async def test_alarm_problems_are_located(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "a.yaml",
        """
        resources:
          pager: {type: function, function: "os:getcwd"}
        alarms:
          slow:
            namespace: Shop
            metric_name: Latency
            period: 45
            evaluation_periods: 1
            threshold: 100
          typo: {namespace: Shop, metric_name: L, period: 60, evaluation_periods: 1, threshold: 1, treshold: 2}
          both: {rule: "ALARM(slow) AND ALARM(missing)"}
          broken: {rule: "ALARM(slow) AND"}
          paging:
            rule: ALARM(slow)
            actions: {alarm: [nobody]}
          first: {rule: "ALARM(second)"}
          second: {rule: "OK(slow)"}
          ying: {rule: "ALARM(yang) OR ALARM(slow)"}
          yang: {rule: "ALARM(ying)"}
          above: {rule: "ALARM(yang)"}
        """,
    )
    problems = await problems_of(config)
    assert problems == [
        f"{config}:7:5: alarms.slow.period: must be 10, 20, 30 or a multiple of 60 (seconds)",
        f"{config}:10:92: alarms.typo.treshold: unknown setting (allowed: actions,"
        " actions_enabled, bus, comparison_operator, datapoints_to_alarm, description,"
        " dimensions, evaluation_periods, metric_name, namespace, period, statistic,"
        " threshold, treat_missing_data); did you mean 'threshold'?",
        f"{config}:11:10: alarms.both.rule: no alarm named 'missing' exists",
        f"{config}:12:12: alarms.broken.rule: AlarmRule: expected ALARM(...), OK(...),"
        " INSUFFICIENT_DATA(...), TRUE, FALSE, NOT or '(', found the end of the rule at"
        " position 15\n"
        "  ALARM(slow) AND\n"
        "                 ^",
        f"{config}:15:5: alarms.paging.actions: alarm paging actions: no resource named"
        " 'nobody' (resources: pager)",
        # A loop, declared at once: said of each alarm on it (one that only
        # names an alarm of the loop has no problem of its own).
        f"{config}:18:10: alarms.ying.rule: composite alarms refer to each other in a loop:"
        " ying -> yang -> ying",
        f"{config}:19:10: alarms.yang.rule: composite alarms refer to each other in a loop:"
        " ying -> yang -> ying",
    ]
