"""Hostile configs and arguments: every one is refused with one located line
and a non-zero exit, never a traceback, an unbounded expansion or a stack
overflow (issue 24, item 5).

The CLI cases run the real ``pipelines`` command in a subprocess on real
files; the property tests throw arbitrary bytes and text at ``check``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipelines.config import MAX_ALIAS_NODES, MAX_ALIASES, MAX_DEPTH, check, load_config
from pipelines.errors import ConfigInvalid, PipelinesError, Problem

from .helpers import pipelines_command, run_cli

#: A function resource and a rule to hang schedules on.
SCHEDULED = """
resources:
  s: {type: function, function: "os:getcwd"}
rules:
  r:
    schedule: %s
    targets: [{id: t, resource: s}]
"""


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused command prints on stderr (asserting it is one)."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def located(result: subprocess.CompletedProcess[str], path: Path) -> tuple[int, int, str]:
    """``file:line:column: message`` of a refused ``validate``: (line, column, message)."""
    line = one_line_error(result)
    match = re.fullmatch(re.escape(str(path)) + r":(\d+):(\d+): (.+)", line)
    assert match is not None, line
    return int(match.group(1)), int(match.group(2)), match.group(3)


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[Problem]:
    return asyncio.run(check([path]))


# -- aliases ------------------------------------------------------------------


def laughs(levels: int = 9) -> str:
    """The "billion laughs": each line nine aliases of the one before (9**9 x's)."""
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for previous, name in itertools.pairwise("abcdefghijklmnopqrstuvwxyz"[:levels]):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def merge_laughs(levels: int = 9) -> str:
    """The same with merge keys: each mapping merges the one before nine times."""
    lines = ["a: &a {" + ", ".join(f"k{i}: x" for i in range(9)) + "}"]
    for previous, name in itertools.pairwise("abcdefghijklmnopqrstuvwxyz"[:levels]):
        lines.append(f"{name}: &{name} {{<<: [" + ", ".join([f"*{previous}"] * 9) + "]}")
    return "\n".join(lines) + "\n"


def bounded_memory() -> None:
    """In the child: at most 1 GiB of address space (the bomb would need far more)."""
    limit = 1024 * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def validate_bounded(path: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        [*pipelines_command(), "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=bounded_memory,
    )
    return result, time.monotonic() - started


def test_the_billion_laughs_stops_at_the_alias_past_the_limit_quickly(tmp_path: Path) -> None:
    path = write(tmp_path, "bomb.yaml", laughs())
    assert len(path.read_bytes()) < 1024
    result, seconds = validate_bounded(path)
    # a..d and four of e's aliases add 8,289 + 66,429 nodes; f's first *e
    # (66,430 more) passes 100,000: line 6, column 8.
    assert located(result, path) == (
        6,
        8,
        f"alias *e: aliases expand to more than {MAX_ALIAS_NODES:,} nodes",
    )
    assert seconds < 20


def test_merge_keys_cannot_multiply_a_mapping_past_the_limit(tmp_path: Path) -> None:
    path = write(tmp_path, "merge-bomb.yaml", merge_laughs())
    result, seconds = validate_bounded(path)
    line, _, message = located(result, path)
    assert message.endswith(f": aliases expand to more than {MAX_ALIAS_NODES:,} nodes")
    assert message.startswith("alias *")
    assert line < 9
    assert seconds < 20


def test_more_alias_uses_than_the_limit_are_refused_at_the_first_too_many(
    tmp_path: Path,
) -> None:
    uses = "\n".join(f"  - *x  # {i}" for i in range(MAX_ALIASES + 5))
    path = write(tmp_path, "aliases.yaml", f"anchor: &x 1\nlist:\n{uses}\n")
    line, column, message = located(run_cli("validate", str(path)), path)
    assert (line, column) == (3 + MAX_ALIASES, 5)  # use number 1,001
    assert message == f"alias *x: more than {MAX_ALIASES:,} alias uses"


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "recursive.yaml", "rules: &r {r: {targets: [*r]}}\n")
    assert located(run_cli("validate", str(path)), path) == (
        1,
        26,
        "alias *r is used inside the node it names",
    )


def test_an_undefined_alias_is_still_a_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, "undefined.yaml", "rules: *nothing\n")
    line, column, message = located(run_cli("validate", str(path)), path)
    assert (line, column) == (1, 8)
    assert message == "YAML syntax: found undefined alias 'nothing'"


def test_aliases_within_the_limits_are_expanded(tmp_path: Path) -> None:
    uses = "\n".join(f"  - *x  # {i}" for i in range(MAX_ALIASES))
    path = write(tmp_path, "many.yaml", f"anchor: &x 1\nlist:\n{uses}\n")
    problems = problems_of(path)
    # Exactly the limit is allowed: only the unknown top-level keys are wrong.
    assert [p.message.split(":")[0] for p in problems] == ["anchor", "list"]


def test_merge_keys_let_a_mapping_override_what_it_merges(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "merge.yaml",
        textwrap.dedent(
            """
            resources:
              s: {type: function, function: "os:getcwd"}
            rules:
              first: &base
                pattern: {source: [shop]}
                targets: [{id: t, resource: s}]
              second: {<<: *base, pattern: {source: [other]}}
              third: {<<: [*base, {description: ignored, state: DISABLED}], description: kept}
            """
        ),
    )
    config = load_config([path])
    assert config.rules["second"]["pattern"] == {"source": ["other"]}
    assert config.rules["third"] == {
        "pattern": {"source": ["shop"]},
        "targets": [{"id": "t", "resource": "s"}],
        "description": "kept",
        "state": "DISABLED",
    }
    # The shared node is not changed by a merge: "first" is as written.
    assert config.rules["first"] == {
        "pattern": {"source": ["shop"]},
        "targets": [{"id": "t", "resource": "s"}],
    }
    assert problems_of(path) == []


def test_a_key_given_twice_in_one_mapping_is_still_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "twice.yaml", "rules: {<<: {x: {}}, r: {}, r: {}}\n")
    with pytest.raises(ConfigInvalid) as caught:
        load_config([path])
    assert [str(p) for p in caught.value.problems] == [f"{path}:1:29: 'r' is given twice"]


def test_a_merge_of_something_not_a_mapping_is_located(tmp_path: Path) -> None:
    path = write(tmp_path, "merge-scalar.yaml", "rules: {<<: 1}\n")
    assert located(run_cli("validate", str(path)), path) == (
        1,
        13,
        "<< merges a mapping or a list of mappings",
    )


# -- nesting ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "column"),
    [
        ("[" * 3000 + "]" * 3000, MAX_DEPTH + 1),
        # the key of mapping 100 is node 101
        ("{a: " * 3000 + "1" + "}" * 3000, 4 * MAX_DEPTH - 2),
        ("".join(" " * (2 * i) + "- \n" for i in range(2 * MAX_DEPTH)), 0),
    ],
    ids=["sequences", "flow mappings", "block sequences"],
)
def test_nesting_deeper_than_the_limit_is_located(tmp_path: Path, text: str, column: int) -> None:
    path = write(tmp_path, "deep.yaml", text + "\n")
    line, found_column, message = located(run_cli("validate", str(path)), path)
    assert message == f"nested deeper than {MAX_DEPTH} levels"
    if column:
        assert (line, found_column) == (1, column)
    else:
        assert line <= MAX_DEPTH + 1


def test_nesting_to_the_limit_is_read(tmp_path: Path) -> None:
    # 99 sequences around a scalar: the scalar is node 100 from the root.
    path = write(tmp_path, "deep-enough.yaml", "[" * (MAX_DEPTH - 1) + "x" + "]" * (MAX_DEPTH - 1))
    problems = problems_of(path)
    assert [p.message for p in problems] == [
        "a pipeline config is a mapping with resources and rules"
    ]


def test_aliases_cannot_stack_nesting_past_the_limit(tmp_path: Path) -> None:
    # Each anchor nests the one before 40 levels deeper: 3 of them pass 100.
    lines = ["a0: &a0 x"]
    for level in range(1, 4):
        lines.append(f"a{level}: &a{level} " + "[" * 40 + f"*a{level - 1}" + "]" * 40)
    path = write(tmp_path, "stacked.yaml", "\n".join(lines) + "\n")
    line, column, message = located(run_cli("validate", str(path)), path)
    assert (line, column) == (4, 49)
    assert message == f"alias *a2: nests the config deeper than {MAX_DEPTH} levels"


# -- bytes and characters ----------------------------------------------------------


def test_bytes_that_are_not_utf8_are_located(tmp_path: Path) -> None:
    path = write(tmp_path, "latin.yaml", b"resources:\n  x: \xff\xfe\n")
    assert located(run_cli("validate", str(path)), path) == (
        2,
        6,
        "not UTF-8: byte 0xff is not UTF-8 text (save the file as UTF-8)",
    )


def test_the_column_of_a_bad_byte_counts_characters(tmp_path: Path) -> None:
    # "é" and "€" are 2 and 3 bytes, one character each: the bad byte is column 10.
    path = write(tmp_path, "mixed.yaml", b"# ok\nname: \xc3\xa9\xe2\x82\xac \xe9\n")
    line, column, message = located(run_cli("validate", str(path)), path)
    assert (line, column) == (2, 10)
    assert message.startswith("not UTF-8: byte 0xe9")


def test_a_character_yaml_does_not_allow_is_located(tmp_path: Path) -> None:
    path = write(tmp_path, "nul.yaml", "rules: {}\nbuses: [a\x00]\n")
    assert located(run_cli("validate", str(path)), path) == (
        2,
        10,
        "YAML does not allow the character U+0000 in a file",
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1" + "0" * 5000, "is not a valid int: Exceeds the limit (4300 digits)"),
        ("2001-13-01", "'2001-13-01' is not a valid timestamp: month must be in 1..12"),
        ("!!int nine", "'nine' is not a valid int: invalid literal for int()"),
        ("!!binary 'abc'", "YAML: failed to decode base64 data: Incorrect padding"),
        ("!!python/name:os.system ''", "could not determine a constructor"),
    ],
)
def test_a_value_yaml_cannot_construct_is_located(tmp_path: Path, value: str, message: str) -> None:
    path = write(tmp_path, "value.yaml", f"rules: {{}}\nstate: {value}\n")
    line, column, found = located(run_cli("validate", str(path)), path)
    assert (line, column) == (2, 8)
    assert message in found
    assert len(found) < 200


def test_a_config_that_is_a_directory_is_one_line(tmp_path: Path) -> None:
    directory = tmp_path / "pipeline.yaml"
    directory.mkdir()
    result = run_cli("archive", "list", "--config", str(directory))
    assert one_line_error(result) == f"error: {directory}:1:1: cannot read: Is a directory"
    result = run_cli("validate", str(directory))
    assert "is a directory" in one_line_error(result)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_a_config_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "secret.yaml", "rules: {}\n")
    path.chmod(0)
    result = run_cli("archive", "list", "--config", str(path))
    assert one_line_error(result) == f"error: {path}:1:1: cannot read: Permission denied"


def test_a_device_without_end_is_not_read_without_end() -> None:
    result = run_cli("validate", "/dev/zero")
    assert one_line_error(result) == "/dev/zero:1:1: larger than 16 MiB: not a pipeline config"


def test_an_environment_value_is_typed_within_the_limits(tmp_path: Path) -> None:
    path = write(tmp_path, "env.yaml", "rules: {}\nstate: ${STATE}\n")
    deep = "[" * 3000 + "]" * 3000
    assert load_config([path], environ={"STATE": deep}).state == tmp_path / deep
    assert load_config([path], environ={"STATE": "false"}).state is None


# -- schedules ----------------------------------------------------------------


ABSURD_SCHEDULES = [
    (
        "rate(99999999999999999999 days)",
        "rate(99999999999999999999 days): the rate's value is at most 36500 days (100 years)",
    ),
    (
        "rate(1e400 minutes)",
        "rate(1e400 minutes): a rate is rate(value unit), as in rate(5 minutes)",
    ),
    (
        "rate(99999999999 minutes)",
        "rate(99999999999 minutes): the rate's value is at most 52560000 minutes (100 years)",
    ),
    (
        "rate(²2 hours)",
        "rate(²2 hours): a rate is rate(value unit), as in rate(5 minutes)",
    ),
    (
        "cron(0 0 * * ? 99999999999999999999)",
        "cron(0 0 * * ? 99999999999999999999): year: 99999999999999999999 is after 2099,"
        " the last year supported",
    ),
    (
        "cron(0 0 * * ? 2020-99999999999999999999)",
        "year: 99999999999999999999 is after 2099",
    ),
    (
        "cron(0/99999999999999999999999 0 * * ? 1970/²)",
        "year: step '²' in '1970/²' must be a positive integer",
    ),
    (
        "at(99999-01-01T00:00:00)",
        "at(99999-01-01T00:00:00): a one-time schedule is at(yyyy-mm-ddThh:mm:ss)",
    ),
    (
        "rate(" + "9" * 5000 + " days)",
        "an expression of 5011 characters failed to satisfy constraint:"
        " Member must have length less than or equal to 256",
    ),
]


@pytest.mark.parametrize(("expression", "message"), ABSURD_SCHEDULES)
def test_schedule_next_refuses_absurd_numbers_in_one_line(expression: str, message: str) -> None:
    line = one_line_error(run_cli("schedule", "next", expression))
    assert line.startswith("error: schedule.expression: ")
    assert message in line


@pytest.mark.parametrize(("expression", "message"), ABSURD_SCHEDULES)
def test_a_config_refuses_absurd_schedule_numbers_located(
    tmp_path: Path, expression: str, message: str
) -> None:
    path = write(tmp_path, "scheduled.yaml", SCHEDULED % f"'{expression}'")
    line, column, found = located(run_cli("validate", str(path)), path)
    assert (line, column) == (6, 5)  # the setting's key
    assert found.startswith("rules.r.schedule.expression: ")
    assert message in found


def test_times_past_what_a_datetime_holds_are_refused(tmp_path: Path) -> None:
    line = one_line_error(
        run_cli("schedule", "next", "at(9999-12-31T23:59:59)", "--tz", "Etc/GMT+12")
    )
    assert line.endswith(
        "9999-12-31T23:59:59 is outside the times a schedule can name"
        " (0001-01-02 to 9999-12-30 UTC)"
    )
    spec = "{expression: 'rate(1 day)', start_date: '9999-12-31T00:00:00'}"
    path = write(tmp_path, "late.yaml", SCHEDULED % spec)
    assert located(run_cli("validate", str(path)), path) == (
        6,
        43,  # the setting's key
        "rules.r.schedule.start_date: 9999-12-31T00:00:00+00:00 is outside the times a"
        " schedule can name (0001-01-02 to 9999-12-30 UTC)",
    )


def test_a_rate_stops_at_the_last_time_a_datetime_holds() -> None:
    result = run_cli(
        "schedule", "next", "rate(36500 days)", "--after", "9999-06-01T00:00:00", "-o", "jsonl"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # the next firing would be in the year 10099


# -- the last resort -------------------------------------------------------------

#: A script that adds a command raising ``sys.argv[1]`` to the CLI and runs
#: the CLI as the ``pipelines`` script does.
FAILING_COMMAND = """
import sys
from pipelines.cli import cli

wanted = sys.argv[1]

errors = {
    "RecursionError": RecursionError("maximum recursion depth exceeded"),
    "MemoryError": MemoryError(),
    "OSError": OSError(28, "No space left on device"),
    "UnicodeError": UnicodeDecodeError("utf-8", b"\\xff", 0, 1, "invalid start byte"),
    "RuntimeError": RuntimeError("a bug\\nover two lines"),
}

@cli.command("fail")
def fail() -> None:
    raise errors[wanted]

sys.argv = ["pipelines", "fail"]
cli()
"""


@pytest.mark.parametrize(
    ("error", "line"),
    [
        ("RecursionError", "RecursionError: maximum recursion depth exceeded"),
        ("MemoryError", "MemoryError"),
        ("OSError", "OSError: [Errno 28] No space left on device"),
        (
            "UnicodeError",
            "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 0:"
            " invalid start byte",
        ),
        ("RuntimeError", "RuntimeError: a bug over two lines"),
    ],
)
def test_an_unexpected_error_is_one_line_and_exit_1(error: str, line: str) -> None:
    environ = {k: v for k, v in os.environ.items() if k != "PIPELINES_DEBUG"}
    result = subprocess.run(
        [sys.executable, "-c", FAILING_COMMAND, error],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=environ,
    )
    assert result.returncode == 1
    assert one_line_error(result) == (
        f"error: unexpected {line} (set PIPELINES_DEBUG=1 to see the traceback)"
    )


def test_pipelines_debug_shows_the_traceback_of_an_unexpected_error() -> None:
    result = subprocess.run(
        [sys.executable, "-c", FAILING_COMMAND, "OSError"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PIPELINES_DEBUG": "1"},
    )
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.rstrip().endswith("OSError: [Errno 28] No space left on device")


# -- anything at all ---------------------------------------------------------------

#: Pieces of YAML that reach the loader's corners: anchors, aliases, merge
#: keys, tags, flow and block collections, odd scalars, config keys.
FRAGMENTS = st.sampled_from(
    [
        "&a ", "*a", "&b ", "*b", "<<: ", "<<: *a", "!!binary ", "!!int ", "!!float ",
        "!!timestamp ", "!!set ", "!!omap ", "!!python/tuple ", "? ", "- ", ": ", ", ",
        "[", "]", "{", "}", "\n", "\n  ", "\n    ", "'", '"', "#", "|\n  ", ">\n  ",
        "2001-13-01", "1" + "0" * 4400, "1e400", ".nan", "~", "yes", "0x1F", "190:20:30",
        "${HOME}", "${NOPE}", "${NOPE:-x}", "resources", "rules", "state", "buses",
        "archives", "alarms", "cluster", "type: function", "function: os:getcwd",
        "schedule: ", "rate(99999999999999999999 days)", "pattern: ", "targets: ",
        "id: t", "resource: s", "source", "detail", "\x00", "\ufeff", "\x85", "é",
    ]
)  # fmt: skip


def check_file(content: bytes) -> None:
    """``check`` on a file of ``content``: problems or none, or one of the
    project's own errors; never anything else."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "pipeline.yaml"
        path.write_bytes(content)
        try:
            problems = asyncio.run(check([path]))
        except PipelinesError:
            return
        assert isinstance(problems, list)
        for problem in problems:
            assert isinstance(problem, Problem)
            assert problem.file == str(path)
            assert problem.line >= 1
            assert problem.column >= 1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_as_a_config_are_problems_or_nothing(content: bytes) -> None:
    check_file(content)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_arbitrary_text_as_a_config_is_problems_or_nothing(text: str) -> None:
    check_file(text.encode("utf-8", "surrogatepass"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(FRAGMENTS, max_size=40))
@example(["${NOPE}", "!!timestamp "])  # PyYAML reading a failed match's groups (found in CI)
def test_yaml_pieces_as_a_config_are_problems_or_nothing(pieces: list[str]) -> None:
    check_file("".join(pieces).encode("utf-8"))


#: Any value YAML can hold: what a config's settings may be given.
YAML_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(),
        st.text(max_size=20),
        st.binary(max_size=8),
        st.datetimes(),
        st.dates(),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=10), children, max_size=4),
    ),
    max_leaves=12,
)
SETTING_NAMES = st.sampled_from(
    [
        "type", "function", "pattern", "schedule", "targets", "id", "resource", "bus",
        "input_path", "input", "input_transformer", "retry_policy", "dead_letter", "state",
        "description", "expression", "timezone", "start_date", "end_date", "rule",
        "metric", "threshold", "actions", "events", "subscribe", "topic", "fifo",
    ]
)  # fmt: skip
SETTINGS = st.dictionaries(SETTING_NAMES, YAML_VALUES, max_size=5)
TYPED_SETTINGS = st.builds(
    lambda kind, settings: {**settings, "type": kind},
    st.sampled_from(["function", "queue", "topic", "log", "stream", "mqtt", "nonsense"]),
    SETTINGS,
)
CONFIGS = st.fixed_dictionaries(
    {},
    optional={
        "resources": st.dictionaries(st.sampled_from(["s", "q", "t"]), TYPED_SETTINGS),
        "rules": st.dictionaries(
            st.sampled_from(["r", "s"]),
            st.builds(
                lambda settings, targets: {**settings, "targets": targets},
                SETTINGS,
                st.lists(SETTINGS, max_size=2),
            ),
        ),
        "archives": st.dictionaries(st.sampled_from(["a"]), SETTINGS),
        "alarms": st.dictionaries(st.sampled_from(["a", "b"]), SETTINGS),
        "buses": YAML_VALUES,
        "state": st.sampled_from([False, None]),
        "cluster": YAML_VALUES,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CONFIGS)
def test_configs_of_any_values_are_problems_or_nothing(config: dict[str, object]) -> None:
    check_file(yaml.safe_dump(config, allow_unicode=True).encode("utf-8", "surrogatepass"))
