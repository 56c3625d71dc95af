"""The CLI's output convention, on every command: ``--output json|jsonl|table``
(``-o``), the same data in each format, ``-c`` always ``--config``, and read
commands that refuse a missing state database in one line."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from pipelines.cli import cli

from .helpers import pipelines_command, run_cli

#: The commands that print no data (a status line at most), and why.
PRINT_NO_DATA = {
    "run": "runs a pipeline; its logs go to stderr",
    "validate": "problems on stderr, exit code 1; a status line when valid",
    "test": "a test report for a person; the exit code is the answer",
    "test-pattern": "prints true or false (JSON already); the exit code is the answer"
    " (--explain: the reasons for a person, -o json for them as data)",
    "top": "a live view for a person at a terminal; the control socket's stats are the data",
    "queue delete": "deletes; prints nothing",
    "stream delete": "deletes; prints nothing",
    "logs create": "creates; prints nothing",
    "logs retention": "sets a policy; prints nothing",
    "logs delete": "deletes; prints nothing",
    "schemas codegen": "writes generated source files (into a directory, or a zip to stdout)",
    "export": "prints a CloudFormation template (a document, not data); what is not exported on stderr",
}

#: Commands that print items as they come: JSON lines unless told otherwise.
STREAMING = {"tap", "stream read", "logs tail", "firehose objects"}


def commands(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    """Every command under ``group`` (plugins' too), by its path: "queue send"."""
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        assert command is not None
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            yield from commands(command, f"{path} ")
        else:
            yield path, command


def option(command: click.Command, flag: str) -> click.Option | None:
    for param in command.params:
        if isinstance(param, click.Option) and flag in param.opts + param.secondary_opts:
            return param
    return None


ALL = dict(commands(cli))


def test_the_tree_has_the_plugins_commands() -> None:
    assert {"queue send", "stream read", "logs tail", "topic publish", "archive list"} <= set(ALL)
    assert set(PRINT_NO_DATA) <= set(ALL)  # no stale exemption


@pytest.mark.parametrize("path", sorted(set(ALL) - set(PRINT_NO_DATA)))
def test_every_command_that_prints_data_takes_output(path: str) -> None:
    found = option(ALL[path], "--output")
    assert found is not None, f"pipelines {path} prints data: give it clikit.output_option"
    assert found.opts == ["--output", "-o"]
    assert isinstance(found.type, click.Choice)
    assert list(found.type.choices) == ["json", "jsonl", "table"]
    assert found.default == ("jsonl" if path in STREAMING else "json")


@pytest.mark.parametrize("path", sorted(ALL))
def test_short_c_is_config_and_short_o_is_output_everywhere(path: str) -> None:
    command = ALL[path]
    for flag, long in (("-c", "--config"), ("-o", "--output")):
        found = option(command, flag)
        assert found is None or long in found.opts, f"pipelines {path}: {flag} is not {long}"


# -- the same data in each format ------------------------------------------------


def cell(value: Any) -> str:
    """A value as a table shows it (what ``clikit.cell`` promises)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def shows(line: str, cells: list[str]) -> bool:
    """Whether a table line shows exactly ``cells``, in order, blank-separated."""
    pattern = r"\s+".join(re.escape(text) for text in cells if text)
    return re.fullmatch(pattern, line.strip()) is not None


def table_lines(stdout: str) -> list[str]:
    """A table's lines but the rule under its header."""
    return [line for line in stdout.splitlines() if line.strip() and set(line) - {"─", " "}]


def check_table(value: Any, stdout: str, column: str) -> None:
    """``stdout`` is ``value`` as a table: a list a row each (an object's keys
    as the header), an object a key/value row each."""
    lines = table_lines(stdout)
    if isinstance(value, dict):
        assert shows(lines[0], ["key", "value"])
        rows = [[key, cell(item)] for key, item in value.items()]
    elif value and isinstance(value[0], dict):
        assert shows(lines[0], list(value[0]))
        rows = [[cell(item) for item in element.values()] for element in value]
    else:
        assert shows(lines[0], [column])
        rows = [[cell(element)] for element in value]
    assert len(lines) == 1 + len(rows), stdout
    for line, row in zip(lines[1:], rows, strict=True):
        assert shows(line, row), (line, row)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state database with a queue, a stream and a log group, made with the CLI."""
    path = tmp_path_factory.mktemp("output") / "state.db"
    for command in (
        ["queue", "create", "orders"],
        ["queue", "create", "refunds"],
        ["queue", "send", "orders", '{"order": 1}', "second order"],
        ["stream", "create", "clicks", "--shards", "2"],
        ["stream", "put", "clicks", '{"page": "/"}', "plain text", "-k", "ann"],
        ["logs", "create", "app", "--retention-days", "7"],
        ["logs", "create", "web"],
    ):
        done = run_cli(*command, "--state", str(path))
        assert done.returncode == 0, (command, done.stderr)
    return path


@pytest.mark.parametrize(
    ("command", "column"),
    [
        (["queue", "list"], "QueueName"),
        (["logs", "filters", "app"], ""),
        (["plugins"], ""),
        (["stream", "describe", "clicks"], ""),
        (["stream", "read", "clicks"], ""),
        (["logs", "groups"], ""),
        (["schedule", "next", "rate(1 hour)", "-n", "3", "--after", "2024-05-01"], "Time"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else value,
)
def test_json_jsonl_and_table_print_the_same_data(
    state: Path, command: list[str], column: str
) -> None:
    where = [] if command[0] in ("schedule", "plugins") else ["--state", str(state)]

    def output(form: str) -> str:
        done = run_cli(*command, *where, "--output", form)
        assert done.returncode == 0, done.stderr
        return done.stdout

    document = json.loads(output("json"))
    assert len(document) >= 2, "too little to compare"
    lines = [json.loads(line) for line in output("jsonl").splitlines()]
    assert lines == (document if isinstance(document, list) else [document])
    check_table(document, output("table"), column)


def test_json_is_indented_and_jsonl_compact(state: Path) -> None:
    described = run_cli("stream", "describe", "clicks", "--state", str(state))
    assert described.stdout.startswith('{\n  "StreamName": "clicks",\n')
    listed = run_cli("queue", "list", "--state", str(state), "-o", "jsonl")
    assert listed.stdout == '"orders"\n"refunds"\n'
    empty = run_cli("stream", "read", "clicks", "--from", "latest", "--state", str(state))
    assert (empty.returncode, empty.stdout) == (0, "")  # no lines: none came


def test_a_streaming_commands_json_is_one_array(state: Path) -> None:
    read = run_cli("stream", "read", "clicks", "-o", "json", "--state", str(state))
    records = json.loads(read.stdout)
    assert [record["Data"] for record in records] == [{"page": "/"}, "plain text"]
    none = run_cli(
        "stream", "read", "clicks", "--from", "latest", "-o", "json", "--state", str(state)
    )
    assert json.loads(none.stdout) == []


# -- errors ---------------------------------------------------------------------------

#: A read command of each group, with the arguments it needs.
READS = [
    ["queue", "list"],
    ["queue", "stats", "q"],
    ["queue", "receive", "q"],
    ["queue", "send", "q", "body"],
    ["stream", "list"],
    ["stream", "describe", "s"],
    ["stream", "read", "s"],
    ["stream", "checkpoints", "s", "c"],
    ["logs", "groups"],
    ["logs", "tail", "g"],
    ["logs", "query", "g", "stats count()"],
    ["archive", "list"],
    ["replay", "status"],
    ["metrics", "list"],
    ["metrics", "get", "NS", "M"],
    ["alarms", "list"],
    ["alarms", "history"],
]


@pytest.mark.parametrize("command", READS, ids=" ".join)
def test_a_missing_state_database_is_one_line_and_creates_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    state = tmp_path / "data" / "state.db"
    done = run_cli(*command, "--state", str(state))
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == f"error: state database {state} does not exist: run the pipeline first\n"
    assert list(tmp_path.iterdir()) == []  # not the file, not its directory


def test_a_usage_error_is_one_line() -> None:
    done = run_cli("queue", "list", "--output", "yaml")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: Invalid value for")
    assert "(see pipelines queue list --help)" in done.stderr
    unknown = run_cli("nope")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1


def test_control_commands_take_the_config_with_c(tmp_path: Path) -> None:
    (tmp_path / "pipeline.yaml").write_text(f"state: {tmp_path / 'state.db'}\n")
    done = subprocess.run(
        [*pipelines_command(), "put", "-c", "pipeline.yaml", "{}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # No pipeline runs: the config's own socket (beside its state) is named.
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and str(tmp_path / "control.sock") in done.stderr
    both = run_cli("put", "-c", "a.yaml", "--control", "b.sock", "{}")
    assert both.returncode == 2 and "give --config or --control, not both" in both.stderr
