"""Structured error places: a ConfigError carries the path of the value it
is about, callers prefix it with the node's own place, and ``pipelines
validate`` reports every problem of a node, each at its own line and column."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pipelines.config import check
from pipelines.errors import ConfigError, ConfigErrors, Problems, Where, path_label

from .helpers import run_cli


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


async def problems_of(path: Path) -> list[str]:
    return [str(p) for p in await check([path], environ={})]


# -- the error API ----------------------------------------------------------------


def test_a_place_is_a_subject_and_a_path() -> None:
    where = Where("target orders") / "async_invoke" / "on_failure"
    assert where.path == ("async_invoke", "on_failure")
    assert str(where) == "target orders.async_invoke.on_failure"
    assert str(Where("target t") / "subscriptions" / 2 / "id") == "target t.subscriptions[2].id"
    assert str(Where("bus b rule r")) == "bus b rule r"
    assert path_label(("rules", "r", "targets", 0, "id")) == "rules.r.targets[0].id"


def test_a_config_error_keeps_its_text_and_exposes_its_path() -> None:
    error = ConfigError(Where("target t1") / "timeout", "must be a number, not 'x'")
    assert str(error) == "target t1.timeout: must be a number, not 'x'"
    assert (error.subject, error.path, error.where) == (
        "target t1",
        ("timeout",),
        "target t1.timeout",
    )
    assert error.errors == (error,)
    # A plain string (a plugin written before paths) is a subject: an empty path.
    legacy = ConfigError("target t1.timeout", "bad")
    assert (legacy.subject, legacy.path, str(legacy)) == (
        "target t1.timeout",
        (),
        "target t1.timeout: bad",
    )


def test_prefixing_puts_the_nodes_place_in_front() -> None:
    error = ConfigError(Where("target q") / "redrive_policy" / "max_receive_count", "too big")
    moved = error.prefixed(("resources", "q"))
    assert moved.path == ("resources", "q", "redrive_policy", "max_receive_count")
    assert moved.message == "too big"
    assert error.path == ("redrive_policy", "max_receive_count")  # the original is unchanged


def test_problems_collects_each_check_and_raises_them_together() -> None:
    where = Where("target t")
    problems = Problems()
    with problems:
        raise ConfigError(where / "a", "first")
    with problems:
        pass  # a check that passes adds nothing
    with problems:
        raise ConfigErrors([ConfigError(where / "b", "second"), ConfigError(where / "c", "third")])
    with pytest.raises(ConfigErrors) as caught:
        problems.raise_any()
    assert [(e.path, e.message) for e in caught.value.errors] == [
        (("a",), "first"),
        (("b",), "second"),
        (("c",), "third"),
    ]
    # As one ConfigError it is the first problem; its text lists them all.
    assert caught.value.where == "target t.a"
    assert str(caught.value).splitlines() == [
        "target t.a: first",
        "target t.b: second",
        "target t.c: third",
    ]
    prefixed = caught.value.prefixed(("resources", "t"))
    assert [e.path for e in prefixed.errors] == [
        ("resources", "t", "a"),
        ("resources", "t", "b"),
        ("resources", "t", "c"),
    ]


def test_one_problem_is_raised_as_itself_and_none_raises_nothing() -> None:
    Problems().raise_any()
    problems = Problems()
    error = ConfigError(Where("x") / "y", "bad")
    problems.add(error)
    with pytest.raises(ConfigError) as caught:
        problems.raise_any()
    assert caught.value is error


def test_other_exceptions_pass_through_problems() -> None:
    problems = Problems()
    with pytest.raises(KeyError), problems:
        raise KeyError("not a config problem")
    assert problems.errors == []


# -- every problem of a node, in file order ----------------------------------------


async def test_a_resource_reports_an_unknown_setting_and_a_bad_timeout(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "p.yaml",
        """
        resources:
          sink:
            type: function
            function: os:getcwd
            timout: 5
            max_concurrency: 0
            timeout: fast
        """,
    )
    f = str(config)
    assert await problems_of(config) == [
        f"{f}:5:5: resources.sink.timout: unknown setting (allowed: async_invoke, function,"
        " max_concurrency, timeout); did you mean 'timeout'?",
        f"{f}:6:5: resources.sink.max_concurrency: must be between 1 and 1000, not 0",
        f"{f}:7:5: resources.sink.timeout: must be a number, not 'fast'",
    ]


async def test_a_rule_reports_a_bad_pattern_and_an_unknown_target_resource(
    tmp_path: Path,
) -> None:
    config = write(
        tmp_path,
        "p.yaml",
        """
        resources:
          sink: {type: function, function: "os:getcwd"}
        rules:
          orders:
            pattern: {source: []}
            colour: blue
            targets:
              - id: a
                resource: sinc
              - id: b
                resource: sink
                retry_policy: {maximum_retry_attempts: 999, maximum_event_age: 10}
        """,
    )
    f = str(config)
    problems = await problems_of(config)
    assert problems[0].startswith(f"{f}:5:15: rules.orders.pattern: Event pattern is not valid.")
    assert problems[1:] == [
        f"{f}:6:5: rules.orders.colour: unknown setting (allowed: bus, description, pattern,"
        " require, schedule, state, targets)",
        f"{f}:9:9: rules.orders.targets[0].resource: no resource named 'sinc'"
        " (resources: sink); did you mean 'sink'?",
        f"{f}:12:24: rules.orders.targets[1].retry_policy.maximum_retry_attempts:"
        " must be between 0 and 185, not 999",
        f"{f}:12:53: rules.orders.targets[1].retry_policy.maximum_event_age:"
        " must be between 60 and 86400, not 10",
    ]


async def test_nested_settings_report_each_problem_at_its_key(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "p.yaml",
        """
        resources:
          fanout:
            type: topic
            subscriptions:
              - {id: a, resource: fanout, raw_message_delivery: maybe}
              - {resource: fanout, maximum_retry_attempts: -1}
          q:
            type: queue
            visibility_timeout: 99999
            delay_seconds: -1
        """,
    )
    f = str(config)
    assert await problems_of(config) == [
        f"{f}:5:35: resources.fanout.subscriptions[0].raw_message_delivery:"
        " must be true or false, not 'maybe'",
        f"{f}:6:9: resources.fanout.subscriptions[1].id: is required: a name for the subscription",
        f"{f}:6:28: resources.fanout.subscriptions[1].maximum_retry_attempts:"
        " must be between 0 and 185, not -1",
        f"{f}:9:5: resources.q.visibility_timeout:"
        " visibility_timeout must be an integer from 0 to 43200, not 99999",
        f"{f}:10:5: resources.q.delay_seconds: delay_seconds must be an integer from 0 to 900, not -1",
    ]


async def test_a_misspelt_pattern_is_one_problem_not_two(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "p.yaml",
        """
        rules:
          r:
            patern: {source: [a]}
        """,
    )
    problems = await problems_of(config)
    assert len(problems) == 1
    assert "rules.r.patern: unknown setting" in problems[0]


def test_validate_prints_every_problem_of_a_node(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "p.yaml",
        """
        resources:
          s:
            type: stream
            shards: 0
            consumers:
              c: {target: s, batch_size: 0, start: middle}
        """,
    )
    done = run_cli("validate", str(config))
    assert done.returncode != 0
    f = str(config)
    assert done.stderr.splitlines() == [
        f"{f}:4:5: resources.s.shards: must be between 1 and 1000, not 0",
        f"{f}:6:22: resources.s.consumers.c.batch_size: must be between 1 and 10000, not 0",
        f"{f}:6:37: resources.s.consumers.c.start: must be trim_horizon or latest, not 'middle'",
    ]
    assert "Traceback" not in done.stderr
