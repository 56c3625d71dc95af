"""Composite alarm rules: CloudWatch's documented examples, precedence, alarm
names and ARNs, every parse error with its position, and dependency cycles."""

from __future__ import annotations

import pytest

from pipelines.alarm_rules import (
    MAX_NESTING,
    MAX_RULE_LENGTH,
    AlarmRule,
    find_cycle,
    parse_alarm_rule,
)
from pipelines.errors import AlarmRuleError


def holds(text: str, **states: str) -> bool:
    return parse_alarm_rule(text).evaluate(states)


# The three examples in PutCompositeAlarm's AlarmRule documentation.
def test_documented_examples() -> None:
    both = "ALARM(CPUUtilizationTooHigh) AND ALARM(DiskReadOpsTooHigh)"
    assert holds(both, CPUUtilizationTooHigh="ALARM", DiskReadOpsTooHigh="ALARM")
    assert not holds(both, CPUUtilizationTooHigh="ALARM", DiskReadOpsTooHigh="OK")

    quiet = "ALARM(CPUUtilizationTooHigh) AND NOT ALARM(DeploymentInProgress)"
    assert holds(quiet, CPUUtilizationTooHigh="ALARM", DeploymentInProgress="OK")
    assert not holds(quiet, CPUUtilizationTooHigh="ALARM", DeploymentInProgress="ALARM")

    grouped = (
        "(ALARM(CPUUtilizationTooHigh) OR ALARM(DiskReadOpsTooHigh)) AND OK(NetworkOutTooHigh)"
    )
    assert holds(grouped, DiskReadOpsTooHigh="ALARM", NetworkOutTooHigh="OK")
    assert not holds(grouped, DiskReadOpsTooHigh="ALARM", NetworkOutTooHigh="ALARM")


def test_and_binds_tighter_than_or() -> None:
    # a OR (b AND c) is true here; (a OR b) AND c would be false.
    assert holds("ALARM(a) OR ALARM(b) AND ALARM(c)", a="ALARM", b="OK", c="OK")
    # And with the OR on the right: (a AND b) OR c is true; a AND (b OR c) false.
    assert holds("ALARM(a) AND ALARM(b) OR ALARM(c)", a="OK", b="OK", c="ALARM")


def test_not_binds_tighter_than_and() -> None:
    # (NOT a) AND b is false here; NOT (a AND b) would be true.
    assert not holds("NOT ALARM(a) AND ALARM(b)", a="ALARM", b="OK")
    assert holds("NOT (ALARM(a) AND ALARM(b))", a="ALARM", b="OK")


def test_parentheses_override_precedence() -> None:
    assert not holds("(ALARM(a) OR ALARM(b)) AND ALARM(c)", a="ALARM", b="OK", c="OK")
    assert holds("((ALARM(a)))", a="ALARM")


def test_not_chains_cancel_in_pairs() -> None:
    assert not holds("NOT TRUE")
    assert holds("NOT NOT TRUE")
    assert holds("NOT(NOT(NOT FALSE))")


def test_true_and_false() -> None:
    assert holds("TRUE")
    assert not holds("FALSE")
    assert holds("FALSE OR TRUE")
    assert not holds("TRUE AND FALSE")
    assert parse_alarm_rule("TRUE OR FALSE").names == frozenset()


def test_each_state_function_matches_only_its_state() -> None:
    for function in ("OK", "ALARM", "INSUFFICIENT_DATA"):
        for state in ("OK", "ALARM", "INSUFFICIENT_DATA"):
            assert holds(f"{function}(a)", a=state) is (function == state)


def test_missing_alarm_counts_as_insufficient_data() -> None:
    assert holds("INSUFFICIENT_DATA(a)")
    assert not holds("OK(a)")
    assert not holds("ALARM(a)")
    assert holds("NOT ALARM(a)")


def test_quoted_names_keep_spaces_and_parentheses() -> None:
    rule = parse_alarm_rule('ALARM("disk (root) full") AND OK("net out")')
    assert rule.names == frozenset({"disk (root) full", "net out"})
    assert rule.evaluate({"disk (root) full": "ALARM", "net out": "OK"})
    assert not rule.evaluate({"disk (root) full": "OK", "net out": "OK"})


def test_bare_names_and_blanks() -> None:
    rule = parse_alarm_rule("  ALARM ( cpu-high.1 )\tAND\nOK(my alarm)  ")
    assert rule.names == frozenset({"cpu-high.1", "my alarm"})
    # Keywords need no blanks around parentheses.
    assert parse_alarm_rule("NOT(ALARM(a))AND(OK(b))").names == frozenset({"a", "b"})
    # A word that merely starts with a keyword is not that keyword.
    with pytest.raises(AlarmRuleError) as caught:
        parse_alarm_rule("TRUE ORACLE")
    assert caught.value.position == 5


def test_arn_refers_to_its_alarm_name() -> None:
    rule = parse_alarm_rule(
        "ALARM(arn:aws:cloudwatch:us-east-1:123456789012:alarm:cpu high) OR "
        'OK("arn:aws-cn:cloudwatch:cn-north-1:123456789012:alarm:disk:root")'
    )
    assert rule.names == frozenset({"cpu high", "disk:root"})
    assert rule.evaluate({"cpu high": "ALARM"})
    assert not rule.evaluate({"cpu high": "OK", "disk:root": "ALARM"})


def test_names_are_collected_once() -> None:
    rule = parse_alarm_rule('ALARM(a) OR OK(a) OR INSUFFICIENT_DATA("b") OR ALARM(c)')
    assert rule.names == frozenset({"a", "b", "c"})


def test_rules_with_the_same_text_are_equal() -> None:
    assert parse_alarm_rule("ALARM(a)") == parse_alarm_rule("ALARM(a)")
    assert parse_alarm_rule("ALARM(a)") != parse_alarm_rule("ALARM(a) ")


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("", 0, "the rule is empty"),
        (" \n\t", 0, "the rule is empty"),
        ("ALRM(a)", 0, "unknown function 'ALRM' (expected ALARM, OK or INSUFFICIENT_DATA)"),
        (
            "TRUE AND Alarm (a)",
            9,
            "unknown function 'Alarm' (expected ALARM, OK or INSUFFICIENT_DATA; keywords are upper case)",
        ),
        (
            "ALARM(a) and ALARM(b)",
            9,
            "expected AND, OR or the end of the rule, found 'and' (keywords are upper case)",
        ),
        ("ALARM(a) ALARM(b)", 9, "expected AND, OR or the end of the rule, found 'ALARM'"),
        ("ALARM(a) && ALARM(b)", 9, "expected AND, OR or the end of the rule, found '&'"),
        ("ALARM(a))", 8, "unmatched ')': expected AND, OR or the end of the rule"),
        ("NOT (ALARM(a)", 13, "expected ')' to close the '(' at position 4"),
        ("((TRUE) FOO)", 8, "expected AND, OR or ')' to close the '(' at position 0, found 'FOO'"),
        ("ALARM(a", 7, "expected ')' to close the '(' at position 5"),
        ('OK("a" b)', 7, "expected ')' to close the '(' at position 2, found 'b'"),
        ("ALARM(a) AND", 12, "found the end of the rule"),
        ("ALARM(a) OR NOT", 15, "found the end of the rule"),
        (
            "()",
            1,
            "expected ALARM(...), OK(...), INSUFFICIENT_DATA(...), TRUE, FALSE, NOT or '(', found ')'",
        ),
        ("AND TRUE", 0, "found 'AND'"),
        ("true", 0, "found 'true' (keywords are upper case)"),
        ("ALARM a", 6, "expected '(' after ALARM, found 'a'"),
        ("ALARM()", 6, "empty alarm name"),
        ("ALARM(   )", 9, "empty alarm name"),
        ('OK("")', 3, "empty alarm name"),
        ("ALARM(arn:aws:cloudwatch:us-east-1:123456789012:alarm:)", 6, "empty alarm name"),
        ('ALARM("abc)', 6, "the '\"' that starts this alarm name is never closed"),
        ("ALARM(a(b))", 7, "an unquoted alarm name cannot contain '('"),
        ('ALARM(a"b")', 7, "a '\"' may only open a quoted alarm name"),
        ("ALARM(arn:aws:sns:us-east-1:123456789012:topic)", 6, "not a CloudWatch alarm ARN"),
    ],
)
def test_errors_point_at_the_problem(text: str, position: int, fragment: str) -> None:
    with pytest.raises(AlarmRuleError) as caught:
        parse_alarm_rule(text)
    error = caught.value
    assert error.position == position
    assert error.rule == text
    assert error.code == "InvalidParameterValue"
    assert fragment in str(error)
    assert f"at position {position}" in str(error)


def test_length_limit() -> None:
    # ALARM("...") around a name filling the rest of the allowance.
    name = "n" * (MAX_RULE_LENGTH - len('ALARM("")'))
    longest = f'ALARM("{name}")'
    assert len(longest) == MAX_RULE_LENGTH == 10240
    assert parse_alarm_rule(longest).names == frozenset({name})

    with pytest.raises(AlarmRuleError) as caught:
        parse_alarm_rule(longest + " ")
    assert caught.value.position == MAX_RULE_LENGTH
    assert "the rule is 10241 characters long; the maximum is 10240" in str(caught.value)


def test_long_rules_stay_within_the_recursion_limit() -> None:
    many_nots = "NOT " * 2000 + "FALSE"
    assert not holds(many_nots)
    assert holds("NOT " + many_nots)

    # 1100 operands: deeper than the recursion limit if nested pairwise.
    long_and = " AND ".join(["TRUE"] * 1100)
    assert len(long_and) <= MAX_RULE_LENGTH
    assert holds(long_and)
    assert not holds(long_and + " AND FALSE")

    terms = [f"ALARM(a{i})" for i in range(600)]
    assert holds(" OR ".join(terms), a599="ALARM")
    assert not holds(" OR ".join(terms))
    assert not holds(" AND ".join(terms), **{f"a{i}": "ALARM" for i in range(599)})


def test_nesting_limit() -> None:
    deepest = "(" * MAX_NESTING + "TRUE" + ")" * MAX_NESTING
    assert holds(deepest)
    with pytest.raises(AlarmRuleError) as caught:
        parse_alarm_rule("(" + deepest + ")")
    assert caught.value.position == MAX_NESTING
    assert f"parentheses nest more than {MAX_NESTING} deep" in str(caught.value)


def rules(**texts: str) -> dict[str, AlarmRule]:
    return {name: parse_alarm_rule(text) for name, text in texts.items()}


def test_cycle_of_a_rule_naming_itself() -> None:
    assert find_cycle(rules(a="ALARM(cpu) OR ALARM(a)")) == ["a", "a"]


def test_cycle_of_three() -> None:
    graph = rules(a="ALARM(b) AND OK(cpu)", b="NOT ALARM(c)", c="OK(disk) OR INSUFFICIENT_DATA(a)")
    assert find_cycle(graph) == ["a", "b", "c", "a"]


def test_cycle_reached_from_outside_it() -> None:
    graph = rules(top="ALARM(x)", x="ALARM(y) OR ALARM(cpu)", y="ALARM(x)")
    assert find_cycle(graph) == ["x", "y", "x"]


def test_acyclic_graph_has_no_cycle() -> None:
    # A diamond: d is reached twice, which is not a loop; metric alarms
    # (cpu, disk) have no rules and end every path.
    graph = rules(
        a="ALARM(b) AND ALARM(c)",
        b="ALARM(d) OR ALARM(cpu)",
        c="OK(d)",
        d="ALARM(disk) OR ALARM(cpu)",
    )
    assert find_cycle(graph) is None
    assert find_cycle({}) is None


def test_long_chain_without_recursion() -> None:
    graph = rules(**{f"c{i}": f"ALARM(c{i + 1})" for i in range(3000)})
    assert find_cycle(graph) is None
    graph["c3000"] = parse_alarm_rule("ALARM(c0)")
    cycle = find_cycle(graph)
    assert cycle is not None
    assert cycle[0] == cycle[-1] == "c0"
    assert len(cycle) == 3002
