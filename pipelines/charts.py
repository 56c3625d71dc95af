"""Charts of a metric's datapoints: in the terminal, and as a PNG.

``choose_period`` picks the period that gives a window as many points as
fit the terminal's width; ``text_chart`` draws them as columns of block
characters with the value axis labelled on the left and the time axis
below; ``write_png`` draws the same with matplotlib (an optional extra:
``pip install 'pipelines[charts]'``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.errors import PipelinesError
from pipelines.metrics import align_start

#: Periods chosen for a window (seconds): whole minutes, as the bus's own
#: metrics are kept, growing in steps a reader recognises.
NICE_PERIODS = (
    60,
    120,
    300,
    600,
    900,
    1_800,
    3_600,
    7_200,
    10_800,
    21_600,
    43_200,
    86_400,
)
#: GetMetricStatistics' limit on datapoints per request.
MAX_POINTS = 1_440
_BLOCKS = " ▁▂▃▄▅▆▇█"


def choose_period(window: float, columns: int) -> int:
    """The shortest period of ``NICE_PERIODS`` whose points over ``window``
    seconds fit in ``columns`` (and in GetMetricStatistics' 1,440), so a
    day on an 80-column terminal is drawn in half hours, not 1,440 minutes."""
    fitting = max(1, min(columns, MAX_POINTS))
    for period in NICE_PERIODS:
        if math.ceil(window / period) + 1 <= fitting:
            return period
    # Longer than NICE_PERIODS cover: whole days, as many as needed.
    days = math.ceil(window / NICE_PERIODS[-1] / max(fitting - 1, 1))
    return NICE_PERIODS[-1] * days


def slots(start: float, end: float, period: int) -> list[float]:
    """The periods' starts from ``start`` to ``end``, where GetMetricStatistics
    puts its datapoints: from the start time rounded down as CloudWatch
    rounds it (``align_start``), a period apart."""
    first = align_start(start, end)
    return [first + k * period for k in range(int((end - first) // period) + 1)]


def _value_label(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e6 or magnitude < 1e-3:
        return f"{value:.3g}"
    return f"{value:,.6g}" if magnitude < 1000 else f"{value:,.0f}"


def _time_label(moment: float, span: float) -> str:
    shown = datetime.fromtimestamp(moment, UTC)
    if span > 2 * 86_400:
        return shown.strftime("%m-%d %H:%M")
    return shown.strftime("%H:%M") if span > 120 else shown.strftime("%H:%M:%S")


def text_chart(
    times: Sequence[float],
    values: Sequence[float | None],
    *,
    height: int = 8,
    label: str = "",
) -> list[str]:
    """Lines of a column chart: a column per value (blank where None) rising
    from the smallest value (or 0) to the largest, the value axis labelled
    on the left, times (UTC) under the first, middle and last columns, and
    ``label`` above."""
    known = [v for v in values if v is not None]
    if not known or not times:
        return [f"{label}: no data" if label else "no data"]
    low = min(0.0, min(known))
    high = max(known)
    span = high - low or 1.0
    # Each value in eighths of a row, from the bottom; the smallest still
    # shows an eighth, so a value at the bottom differs from a gap.
    levels = [None if v is None else max(1, round((v - low) / span * height * 8)) for v in values]
    top, bottom = _value_label(high), _value_label(low)
    margin = max(len(top), len(bottom)) + 1
    lines = [label] if label else []
    for row in range(height, 0, -1):
        floor = (row - 1) * 8
        cells = []
        for level in levels:
            if level is None:
                cells.append(" ")
            else:
                cells.append(_BLOCKS[max(0, min(8, level - floor))])
        axis = top if row == height else (bottom if row == 1 else "")
        lines.append(f"{axis:>{margin}}┤{''.join(cells)}")
    width = len(values)
    lines.append(" " * margin + "└" + "─" * width)
    lines.append(" " * (margin + 1) + _time_axis(times, width))
    return lines


def _time_axis(times: Sequence[float], width: int) -> str:
    """Times under the first, middle and last columns, where they fit."""
    span = times[-1] - times[0]
    axis = [" "] * width
    marks = [0, width // 2, width - 1] if width > 1 else [0]
    taken = -1
    for index in marks:
        text = _time_label(times[index], span)
        place = min(max(index - len(text) // 2, 0), max(width - len(text), 0))
        if index == 0:
            place = 0
        if place <= taken or place + len(text) > max(width, len(text)):
            continue
        for offset, char in enumerate(text):
            if place + offset < len(axis):
                axis[place + offset] = char
            else:
                axis.append(char)
        taken = place + len(text)
    return "".join(axis).rstrip() + " UTC"


def draw(
    axes: Any,
    times: Sequence[float],
    values: Sequence[float | None],
    *,
    title: str,
    ylabel: str,
    span: tuple[float, float] | None = None,
) -> None:
    """``write_png``'s chart on matplotlib ``axes``; ``span``: the window
    asked for, in epoch seconds (else the first and last of ``times``)."""
    import matplotlib.dates as mdates

    # matplotlib's date numbers: days since its epoch, 1970-01-01 UTC (its
    # default since 3.3), the x axis then read as dates.
    moments = [t / 86_400 for t in times]
    shown = [math.nan if v is None else v for v in values]
    axes.plot(moments, shown, marker="." if len(shown) <= 120 else None, linewidth=1.5)
    axes.xaxis_date(UTC)
    if span is None and len(times) > 1:
        span = (times[0], times[-1])
    if span is not None:
        # The window asked for, whatever holds data: matplotlib's own limits
        # leave out the gaps, and around a lone datapoint they widen to years.
        axes.set_xlim(span[0] / 86_400, span[1] / 86_400)
    axes.set_title(title)
    axes.set_ylabel(ylabel)
    axes.set_xlabel("time (UTC)")
    axes.grid(True, alpha=0.3)
    locator = mdates.AutoDateLocator(tz=UTC)  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_locator(locator)
    formatter = mdates.ConciseDateFormatter(locator, tz=UTC)  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_formatter(formatter)


def write_png(
    path: Path,
    times: Sequence[float],
    values: Sequence[float | None],
    *,
    title: str,
    ylabel: str,
    span: tuple[float, float] | None = None,
) -> None:
    """The datapoints as a line chart in a PNG: a time axis in UTC over
    ``span`` (``draw``), the statistic's axis labelled, gaps where a period
    has no data."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: files only
        import matplotlib.pyplot as plt
    except ImportError:
        raise PipelinesError(
            "--png needs matplotlib: pip install 'pipelines[charts]' (or matplotlib)"
        ) from None
    figure, axes = plt.subplots(figsize=(10, 4), dpi=100)
    try:
        draw(axes, times, values, title=title, ylabel=ylabel, span=span)
        figure.tight_layout()
        try:
            figure.savefig(path, format="png")
        except OSError as error:
            raise PipelinesError(f"cannot write {path}: {error.strerror}") from None
    finally:
        plt.close(figure)
