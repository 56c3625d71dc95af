"""``pipelines metrics get``'s chart: a period that fits the terminal, labelled
axes, and a PNG (matplotlib)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from pipelines.charts import choose_period, text_chart
from pipelines.clock import SystemClock
from pipelines.metrics import MetricStore
from tests.helpers import pipelines_command, run_cli
from tests.test_top import Terminal


def test_the_period_is_the_shortest_whose_points_fit() -> None:
    assert choose_period(3_600, 66) == 60  # an hour in minutes: 61 points
    assert choose_period(86_400, 66) == 1_800  # a day: 49 half hours, not 1,441 minutes
    assert choose_period(20 * 3_600, 186) == 600  # 121 ten-minute points
    assert choose_period(86_400, 5_000) == 120  # 1,441 minutes: one over the API's 1,440
    assert choose_period(86_400 - 60, 5_000) == 60  # a minute less fits
    assert choose_period(400 * 86_400, 80) == 6 * 86_400  # longer than days: several days


def test_text_chart_labels_its_axes_and_leaves_gaps() -> None:
    start = 1_764_806_400.0  # 2025-12-04 00:00 UTC
    times = [start + 60 * k for k in range(30)]
    values: list[float | None] = [float(k % 10) for k in range(30)]
    values[5] = None
    lines = text_chart(times, values, height=4, label="NS M Sum")
    assert lines[0] == "NS M Sum"
    rows = lines[1:5]
    assert rows[0].startswith(" 9┤") and rows[-1].startswith(" 0┤")
    assert all(len(row) == 3 + 30 for row in rows)
    assert all(row[3 + 5] == " " for row in rows)  # no data: a gap
    assert rows[-1][3 + 0] == "▁"  # the smallest value: the lowest block, not a gap
    assert rows[-1][3 + 9] == "█" and rows[0][3 + 9] == "█"  # the largest fills its column
    assert lines[5] == "  └" + "─" * 30
    assert lines[6].startswith("   00:00") and "00:29" in lines[6] and lines[6].endswith("UTC")
    assert text_chart([], [], label="x") == ["x: no data"]


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state.db"

    async def fill() -> None:
        store = await MetricStore.open(path, SystemClock())
        now = time.time()
        for minute in range(0, 24 * 60, 7):
            store.put_metric_data(
                "Shop", "Orders", {"Region": "eu"}, value=minute % 50, timestamp=now - 60 * minute
            )
        await store.close()

    asyncio.run(fill())
    return path


def test_a_day_on_a_terminal_is_drawn_within_its_width(state: Path) -> None:
    terminal = Terminal(
        [
            *pipelines_command(),
            "metrics",
            "get",
            "Shop",
            "Orders",
            "-d",
            "Region=eu",
            "--stat",
            "Sum",
            "--since",
            "1d",
            "--state",
            str(state),
            "-o",
            "table",
        ],
        columns=100,
    )
    try:
        terminal.wait_for(r"UTC\s*\n", seconds=60)
        assert terminal.process.wait(timeout=60) == 0
    finally:
        terminal.close()
    lines = terminal.shown.splitlines()
    label = next(i for i, line in enumerate(lines) if line.startswith("Shop Orders Sum"))
    assert "per 30 min, last 1d" in lines[label]
    chart = lines[label + 1 :]
    assert all(len(line) <= 100 for line in chart)
    assert chart[0].split("┤")[0].strip() != ""  # the largest value labels the top
    assert chart[-1].rstrip().endswith("UTC")


def test_png_draws_the_chart(state: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "orders.png"
    done = run_cli(
        "metrics",
        "get",
        "Shop",
        "Orders",
        "-d",
        "Region=eu",
        "--stat",
        "Sum",
        "--since",
        "1d",
        "--state",
        str(state),
        "--png",
        str(png),
        "-o",
        "json",
    )
    assert done.returncode == 0, done.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 5_000  # a drawn chart, not an empty canvas


def test_a_png_spans_the_window_asked_for_around_a_lone_datapoint() -> None:
    """matplotlib's own limits leave out the periods without data, and widen
    a lone datapoint's to years: the chart's time axis is the window."""
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipelines.charts import draw

    start = 1_764_900_000.0
    times = [start + 60 * n for n in range(60)]  # an hour of one-minute periods
    values: list[float | None] = [None] * 60
    values[30] = 4.0
    figure, axes = plt.subplots()
    try:
        draw(axes, times, values, title="t", ylabel="Sum")
        low, high = axes.get_xlim()
    finally:
        plt.close(figure)
    assert (low * 86_400, high * 86_400) == pytest.approx((times[0], times[-1]), abs=1e-3)
    # A window no longer than one period: one slot, the window given.
    figure, axes = plt.subplots()
    try:
        draw(axes, [start], [4.0], title="t", ylabel="Sum", span=(start - 600, start))
        low, high = axes.get_xlim()
    finally:
        plt.close(figure)
    assert (low * 86_400, high * 86_400) == pytest.approx((start - 600, start), abs=1e-3)
