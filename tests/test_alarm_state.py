"""CloudWatch's alarm state rule as a pure function: its documented tables
(evaluation range 5, newest on the right) and the rule around them."""

from __future__ import annotations

import pytest

from pipelines.alarms import evaluate_alarm_state, evaluation_range, judge
from pipelines.errors import MetricError

KEEP = "keep"  # "ignore" keeps the current state
TREATMENTS = ("missing", "ignore", "breaching", "notBreaching")


def points(row: str) -> list[float | None]:
    """'0 - X' -> [0.0 (not breaching), None (missing), 100.0 (breaching)]."""
    return [{"0": 0.0, "X": 100.0, "-": None}[c] for c in row.split()]


# CloudWatch's "Configuring how CloudWatch alarms treat missing data" tables:
# row, then the state for missing / ignore / breaching / notBreaching.
TABLES = [
    # Datapoints to alarm 3, evaluation periods 3.
    (3, 3, "0 - X - X", ("OK", "OK", "OK", "OK")),
    (3, 3, "0 - - - -", ("OK", "OK", "OK", "OK")),
    (3, 3, "- - - - -", ("INSUFFICIENT_DATA", KEEP, "ALARM", "OK")),
    (3, 3, "0 X X - X", ("ALARM", "ALARM", "ALARM", "ALARM")),
    (3, 3, "- - X - -", ("ALARM", KEEP, "ALARM", "OK")),
    # Datapoints to alarm 2, evaluation periods 3.
    (2, 3, "0 - X - X", ("ALARM", "ALARM", "ALARM", "ALARM")),
    (2, 3, "0 0 X 0 X", ("ALARM", "ALARM", "ALARM", "ALARM")),
    (2, 3, "0 - X - -", ("OK", "OK", "ALARM", "OK")),
    (2, 3, "- - - - 0", ("OK", "OK", "ALARM", "OK")),
    (2, 3, "- - - X -", ("ALARM", KEEP, "ALARM", "OK")),
]


@pytest.mark.parametrize("current", ["OK", "ALARM", "INSUFFICIENT_DATA"])
@pytest.mark.parametrize(("m", "n", "row", "expected"), TABLES)
def test_cloudwatch_documented_examples(
    m: int, n: int, row: str, expected: tuple[str, ...], current: str
) -> None:
    assert evaluation_range(n) == 5
    for treat, want in zip(TREATMENTS, expected, strict=True):
        got = evaluate_alarm_state(
            points(row),
            threshold=50,
            comparison_operator="GreaterThanThreshold",
            evaluation_periods=n,
            datapoints_to_alarm=m,
            treat_missing_data=treat,
            current_state=current,
        )
        assert got == (current if want == KEEP else want), (row, treat)


def test_the_newest_n_real_points_decide_when_there_are_enough() -> None:
    # Six real points: the oldest (breaching) ones fall outside the newest 3.
    row = [100.0, 100.0, 100.0, 0.0, 0.0, 0.0]
    state = evaluate_alarm_state(
        row, threshold=50, comparison_operator="GreaterThanThreshold", evaluation_periods=3
    )
    assert state == "OK"
    # Missing points are skipped, not filled, when N real ones exist.
    row = [100.0, None, 100.0, None, 100.0, None]
    verdict = judge(
        row,
        threshold=50,
        comparison_operator="GreaterThanThreshold",
        evaluation_periods=3,
        treat_missing_data="notBreaching",
    )
    assert (verdict.state, verdict.filled, [i for i, _ in verdict.counted]) == (
        "ALARM",
        0,
        [0, 2, 4],
    )


@pytest.mark.parametrize(
    ("operator", "value", "breaches"),
    [
        ("GreaterThanOrEqualToThreshold", 50.0, True),
        ("GreaterThanThreshold", 50.0, False),
        ("LessThanThreshold", 49.9, True),
        ("LessThanThreshold", 50.0, False),
        ("LessThanOrEqualToThreshold", 50.0, True),
        ("LessThanOrEqualToThreshold", 50.1, False),
    ],
)
def test_the_four_comparison_operators(operator: str, value: float, breaches: bool) -> None:
    state = evaluate_alarm_state(
        [value], threshold=50, comparison_operator=operator, evaluation_periods=1
    )
    assert state == ("ALARM" if breaches else "OK")


def test_filling_counts_every_real_point_in_the_range() -> None:
    # N = 4, M = 3, two real breaching points and breaching fill: 2 + 2 fills.
    verdict = judge(
        [None, 100.0, None, None, 100.0, None],
        threshold=50,
        comparison_operator="GreaterThanThreshold",
        evaluation_periods=4,
        datapoints_to_alarm=3,
        treat_missing_data="breaching",
    )
    assert (verdict.state, verdict.filled, verdict.breaches) == ("ALARM", 2, 4)


def test_unknown_operator_or_treatment_is_refused() -> None:
    with pytest.raises(MetricError, match="ComparisonOperator"):
        evaluate_alarm_state([1.0], threshold=1, comparison_operator="Above", evaluation_periods=1)
    with pytest.raises(MetricError, match="TreatMissingData"):
        evaluate_alarm_state(
            [1.0],
            threshold=1,
            comparison_operator="GreaterThanThreshold",
            evaluation_periods=1,
            treat_missing_data="zero",
        )
