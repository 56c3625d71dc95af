"""The metric store on a real SQLite file and on a real PostgreSQL
(``state_location``): CloudWatch's PutMetricData checks, GetMetricStatistics'
statistics and periods, flushing, rollup and retention."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.clock import ManualClock
from pipelines.errors import MetricError
from pipelines.metrics import (
    DISTINCT_LIMIT,
    NAMESPACE,
    STORE_VERSION,
    Metrics,
    MetricStore,
    align_start,
    dimensions,
)
from pipelines.store import backend_for, location_of

T0 = 1_700_000_040.0  # 2023-11-14T22:14:00Z, a minute boundary
NS = "Shop"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0 + 600)


@pytest.fixture
async def store(state_location: str, clock: ManualClock) -> AsyncIterator[MetricStore]:
    opened = await MetricStore.open(state_location, clock)
    try:
        yield opened
    finally:
        await opened.close()


async def stats(store: MetricStore, **options: Any) -> list[dict[str, Any]]:
    arguments: dict[str, Any] = {
        "start": T0,
        "end": T0 + 600,
        "period": 60,
        "statistics": ["SampleCount", "Sum", "Average", "Minimum", "Maximum"],
    }
    arguments.update(options)
    answer = await store.get_metric_statistics(NS, "Latency", {"Api": "put"}, **arguments)
    assert answer["Label"] == "Latency"
    points: list[dict[str, Any]] = answer["Datapoints"]
    return points


async def test_statistics_per_period_stamped_at_the_period_start(store: MetricStore) -> None:
    for offset, value in [(5, 10.0), (30, 30.0), (59, 20.0), (61, 7.0), (185, 1.0)]:
        store.put_metric_data(NS, "Latency", {"Api": "put"}, value=value, timestamp=T0 + offset)
    points = await stats(store)
    assert [p["Timestamp"] for p in points] == [
        "2023-11-14T22:14:00Z",
        "2023-11-14T22:15:00Z",
        "2023-11-14T22:17:00Z",
    ]
    first = points[0]
    assert (first["SampleCount"], first["Sum"], first["Minimum"], first["Maximum"]) == (
        3,
        60,
        10,
        30,
    )
    assert first["Average"] == 20
    assert points[1]["Sum"] == 7 and points[2]["Maximum"] == 1
    # Another metric (other dimensions) is another series.
    store.put_metric_data(NS, "Latency", {"Api": "get"}, value=500.0, timestamp=T0)
    assert (await stats(store))[0]["Maximum"] == 30
    # A 300-second period gathers the first five minutes.
    five = await stats(store, period=300, statistics=["Sum"])
    assert [p["Sum"] for p in five] == [68.0]


async def test_values_with_counts_and_percentiles(store: MetricStore) -> None:
    store.put_metric_data(
        NS, "Latency", {"Api": "put"}, values=[1, 2, 3, 100], counts=[50, 30, 18, 1], timestamp=T0
    )
    store.put_metric_data(NS, "Latency", {"Api": "put"}, value=4, timestamp=T0 + 1)
    (point,) = await stats(
        store,
        statistics=["SampleCount"],
        extended_statistics=["p50", "p80", "p98", "p99", "p99.5", "p100"],
    )
    assert point["SampleCount"] == 100
    # Nearest rank over 100 samples: 50 ones, 30 twos, 18 threes, a four, a hundred.
    assert point["ExtendedStatistics"] == {
        "p50": 1.0,
        "p80": 2.0,
        "p98": 3.0,
        "p99": 4.0,
        "p99.5": 100.0,
        "p100": 100.0,
    }


async def test_percentiles_unavailable_after_a_statistic_set_or_a_negative_value(
    store: MetricStore,
) -> None:
    store.put_metric_data(
        NS,
        "Latency",
        {"Api": "put"},
        statistic_values={"SampleCount": 4, "Sum": 10, "Minimum": 1, "Maximum": 4},
        timestamp=T0,
    )
    store.put_metric_data(NS, "Latency", {"Api": "put"}, value=-1, timestamp=T0 + 60)
    store.put_metric_data(
        NS,
        "Latency",
        {"Api": "put"},
        statistic_values={"SampleCount": 3, "Sum": 6, "Minimum": 2, "Maximum": 2},
        timestamp=T0 + 120,
    )
    points = await stats(store, statistics=["Sum"], extended_statistics=["p50"])
    assert [p["Sum"] for p in points] == [10, -1, 6]
    assert [p["ExtendedStatistics"] for p in points] == [{}, {}, {"p50": 2.0}]


async def test_many_distinct_values_are_binned_within_half_a_percent(store: MetricStore) -> None:
    values = [1.0 + i * 0.37 for i in range(3 * DISTINCT_LIMIT)]
    for start in range(0, len(values), 150):
        store.put_metric_data(NS, "Latency", {"Api": "put"}, values=values[start : start + 150])
        if start % 1500 == 0:
            await store.flush()  # merged from several rows as well as in memory
    now = store.clock.time()
    (point,) = await stats(
        store,
        start=now - 60,
        end=now + 60,
        statistics=["SampleCount", "Maximum"],
        extended_statistics=["p50", "p90"],
    )
    assert point["SampleCount"] == len(values) and point["Maximum"] == values[-1]
    ordered = sorted(values)
    for name, rank in (("p50", 50), ("p90", 90)):
        exact = ordered[math.ceil(rank / 100 * len(values)) - 1]
        assert point["ExtendedStatistics"][name] == pytest.approx(exact, rel=0.005)


async def test_high_resolution_data_and_short_periods(store: MetricStore) -> None:
    for second in range(0, 30):
        store.put_metric_data(
            NS, "Latency", {"Api": "put"}, value=second, timestamp=T0 + second, storage_resolution=1
        )
    store.put_metric_data(NS, "Latency", {"Api": "put"}, value=1000, timestamp=T0 + 70)
    points = await stats(store, period=10, start=T0, end=T0 + 120, statistics=["Sum"])
    # Standard-resolution data lands on its minute whatever the period.
    assert [(p["Timestamp"][-3:], p["Sum"]) for p in points] == [
        ("00Z", 45.0),
        ("10Z", 145.0),
        ("20Z", 245.0),
        ("00Z", 1000.0),
    ]


@pytest.mark.parametrize(
    ("options", "code", "fragment"),
    [
        ({"value": math.nan}, "InvalidParameterValue", "not supported"),
        ({"value": math.inf}, "InvalidParameterValue", "not supported"),
        ({"value": 2.0**361}, "InvalidParameterValue", "2^360"),
        ({"value": 1, "timestamp": T0 + 600 - 15 * 86_400}, "InvalidParameterValue", "two weeks"),
        ({"value": 1, "timestamp": T0 + 600 + 3 * 3_600}, "InvalidParameterValue", "two hours"),
        # past what a datetime holds: the message shows the seconds as given
        ({"value": 1, "timestamp": 1e30}, "InvalidParameterValue", "(1e+30 seconds from"),
        ({"value": 1, "timestamp": -(2**63)}, "InvalidParameterValue", "two weeks"),
        ({"value": 1, "unit": "Furlongs"}, "InvalidParameterValue", "Unit"),
        ({"value": 1, "storage_resolution": 30}, "InvalidParameterValue", "StorageResolution"),
        ({}, "InvalidParameterCombination", "must be specified"),
        ({"value": 1, "values": [1]}, "InvalidParameterCombination", "mutually exclusive"),
        ({"values": [1, 2], "counts": [1]}, "InvalidParameterValue", "same size"),
        ({"values": list(range(151))}, "InvalidParameterValue", "1 to 150"),
        ({"values": [1], "counts": [-1]}, "InvalidParameterValue", "Counts.member.1"),
        ({"values": [1, math.nan]}, "InvalidParameterValue", "Values.member.2"),
    ],
)
async def test_put_metric_data_refuses_what_cloudwatch_refuses(
    store: MetricStore, options: dict[str, Any], code: str, fragment: str
) -> None:
    with pytest.raises(MetricError) as caught:
        store.put_metric_data(NS, "Latency", {"Api": "put"}, **options)
    assert caught.value.code == code
    assert fragment in caught.value.message
    assert await stats(store) == []  # nothing of a refused datum is kept


async def test_a_misspelt_statistic_is_named_with_the_closest_one(store: MetricStore) -> None:
    with pytest.raises(MetricError) as caught:
        await stats(store, statistics=[], extended_statistics=["Summ"])
    assert caught.value.code == "InvalidParameterValue"
    assert caught.value.message.endswith(
        "not a percentile such as p99 or p99.9; did you mean 'Sum'?"
    )
    with pytest.raises(MetricError) as caught:
        await stats(store, statistics=[], extended_statistics=["q99"])
    assert caught.value.message.endswith("not a percentile such as p99 or p99.9")


async def test_metric_identity_is_checked(store: MetricStore) -> None:
    too_many = {f"d{i}": "x" for i in range(31)}
    with pytest.raises(MetricError, match="more than 30"):
        store.put_metric_data(NS, "Latency", too_many, value=1)
    with pytest.raises(MetricError, match="reserved"):
        store.put_metric_data("AWS/Events", "Latency", value=1)
    with pytest.raises(MetricError, match=r"Dimensions.member.1.Value"):
        store.put_metric_data(NS, "Latency", {"Api": ""}, value=1)
    with pytest.raises(MetricError, match="MetricName"):
        store.put_metric_data(NS, "x" * 256, value=1)


@pytest.mark.parametrize(
    ("options", "code", "fragment"),
    [
        ({"period": 7}, "InvalidParameterValue", "multiple of 60"),
        ({"period": 90}, "InvalidParameterValue", "multiple of 60"),
        ({"period": 1, "end": T0 + 1441}, "InvalidParameterCombination", "1441 datapoints"),
        ({"statistics": ["p99"]}, "InvalidParameterValue", "ExtendedStatistics"),
        ({"statistics": ["Median"]}, "InvalidParameterValue", "Median"),
        ({"statistics": [], "extended_statistics": ["p101"]}, "InvalidParameterValue", "p101"),
        ({"statistics": []}, "MissingParameter", "Statistics"),
        ({"end": T0}, "InvalidParameterValue", "less than the parameter EndTime"),
    ],
)
async def test_get_metric_statistics_refuses_what_cloudwatch_refuses(
    store: MetricStore, options: dict[str, Any], code: str, fragment: str
) -> None:
    with pytest.raises(MetricError) as caught:
        await stats(store, **options)
    assert caught.value.code == code
    assert fragment in caught.value.message


async def test_flushes_merge_into_one_row_per_metric_and_period(
    state_location: str, store: MetricStore, clock: ManualClock
) -> None:
    for value in (1.0, 5.0, 3.0):
        store.put_metric_data(NS, "Latency", {"Api": "put"}, value=value, timestamp=T0 + value)
        await store.flush()
    rows = await store.rows("SELECT time, count, sum, min, max FROM metric_data")
    assert rows == [(int(T0), 3.0, 9.0, 1.0, 5.0)]
    # A new store on the same database reads what the first one wrote.
    await store.close()
    reopened = await MetricStore.open(state_location, clock)
    try:
        (point,) = await stats(reopened, extended_statistics=["p50"])
    finally:
        await reopened.close()
    assert (point["SampleCount"], point["Maximum"]) == (3, 5)
    assert point["ExtendedStatistics"] == {"p50": 3.0}
    listed = await MetricStore.open(state_location, clock)
    try:
        assert await listed.list_metrics(NS) == [
            {
                "Namespace": NS,
                "MetricName": "Latency",
                "Dimensions": [{"Name": "Api", "Value": "put"}],
            }
        ]
    finally:
        await listed.close()


async def test_upkeep_rolls_up_old_seconds_and_drops_expired_rows(
    store: MetricStore, clock: ManualClock
) -> None:
    for second in (1, 2, 30):
        store.put_metric_data(
            NS, "Latency", {"Api": "put"}, value=second, timestamp=T0 + second, storage_resolution=1
        )
    store.put_metric_data(NS, "Latency", {"Api": "put"}, value=9, timestamp=T0 - 600)
    await store.flush()
    await clock.advance(4 * 3_600)
    await store.upkeep()
    rows = await store.rows("SELECT time, count, sum FROM metric_data ORDER BY time")
    assert rows == [(int(T0 - 600), 1.0, 9.0), (int(T0), 3.0, 33.0)]
    store.retention_days = 0.1  # 2.4 hours: the older row is 4 h 10 min old
    await clock.advance(0)
    await store.upkeep()
    assert await store.scalar("SELECT count(*) FROM metric_data") == 0


def test_start_time_is_rounded_down_by_age() -> None:
    now = 1_700_000_000.0
    assert align_start(now - 125, now) == (now - 125) // 60 * 60
    old = now - 20 * 86_400 + 17
    assert align_start(old, now) == old // 300 * 300
    ancient = now - 70 * 86_400 + 17
    assert align_start(ancient, now) == ancient // 3600 * 3600


async def test_cli_metrics_get_prints_datapoints_and_a_chart_on_a_terminal(
    tmp_path: Path, state_location: str
) -> None:
    import os
    import pty
    import subprocess
    import time

    from pipelines.clock import SystemClock

    from .helpers import pipelines_command

    now = time.time()
    store = await MetricStore.open(state_location, SystemClock())
    for minutes_ago, value in [(30, 1.0), (20, 9.0), (10, 5.0)]:
        store.put_metric_data(
            NS, "Latency", {"Api": "put"}, value=value, timestamp=now - minutes_ago * 60
        )
    await store.close()
    command = [*pipelines_command(), "metrics", "get", NS, "Latency", "-d", "Api=put"]
    command += ["--stat", "Maximum", "--since", "45m", "--state", state_location]
    piped = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    points = json.loads(piped.stdout)["Datapoints"]
    assert [point["Maximum"] for point in points] == [1.0, 9.0, 5.0]
    tabled = [*command, "--output", "table"]
    table = subprocess.run(tabled, capture_output=True, text=True, timeout=60, check=True)
    rows = [line.split() for line in table.stdout.splitlines()[2:]]  # under the header and rule
    assert rows == [
        [point["Timestamp"], value]
        for point, value in zip(points, ["1.0", "9.0", "5.0"], strict=True)
    ]
    assert "▁" not in table.stdout  # no chart when not on a terminal
    primary, secondary = pty.openpty()
    subprocess.run(tabled, stdout=secondary, timeout=60, check=True)
    os.close(secondary)
    shown = os.read(primary, 65536).decode()
    os.close(primary)
    lines = shown.splitlines()
    label = next(i for i, line in enumerate(lines) if line.startswith(f"{NS} Latency"))
    assert lines[label] == f"{NS} Latency Maximum per 1 min, last 45m"  # under the table
    chart = lines[label + 1 :]
    assert chart[0].startswith(" 9┤") and chart[-3].startswith(" 0┤")  # the value axis
    assert chart[-1].rstrip().endswith("UTC")  # the time axis
    columns = [row.split("┤")[1] for row in chart[:-2]]
    filled = [i for i in range(len(columns[-1])) if columns[-1][i] != " "]
    assert len(filled) == 3 and filled[1] - filled[0] == 10  # the three minutes, gaps between
    assert columns[0][filled[1]] == "█"  # 9, the largest, reaches the top
    missing = subprocess.run(
        [*command[:-2], "--state", str(tmp_path / "none.db"), "--since", "5m"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1
    assert "none.db does not exist: run the pipeline first" in missing.stderr
    assert not (tmp_path / "none.db").exists()
    quiet = subprocess.run([*command, "--since", "5m"], capture_output=True, text=True, timeout=60)
    assert quiet.returncode == 0 and "no data for Shop Latency in the last 5m" in quiet.stderr


async def test_a_flush_names_many_new_series_at_once(
    store: MetricStore, clock: ManualClock
) -> None:
    """A flush meeting hundreds of new series (a bus's first counts) gives
    each its own id, and the next flush finds the known ones and adds new ones."""
    for n in range(300):
        store.put_metric_data(NS, "Hits", {"Api": f"a{n}"}, value=n, timestamp=T0 + 5)
    await store.flush()
    for n in range(150, 450):
        store.put_metric_data(NS, "Hits", {"Api": f"a{n}"}, value=1000 + n, timestamp=T0 + 65)
    await store.flush()
    keys = [(NS, "Hits", (("Api", f"a{n}"),)) for n in range(450)]
    sums = await store.read_many(keys, int(T0) + 120, 60, 2, "Sum")
    for n, key in enumerate(keys):
        expected = [float(n) if n < 300 else None, 1000.0 + n if n >= 150 else None]
        assert sums[key] == expected, key
    series = await store.one("SELECT count(*), count(DISTINCT dimensions) FROM metric_series")
    assert series == (450, 450)


async def test_a_batch_is_refused_whole_and_names_the_datum_at_fault(store: MetricStore) -> None:
    good = {"name": "Latency", "dimensions": {"Api": "put"}, "value": 1.0, "timestamp": T0 + 5}
    with pytest.raises(MetricError) as caught:
        store.put_metric_batch(NS, [good, {"name": "Latency", "value": 2.0, "values": [1.0]}])
    assert caught.value.message == (
        "The parameters MetricData.member.2.Value and MetricData.member.2.Values are"
        " mutually exclusive and you have specified both."
    )
    assert await stats(store) == []  # the good datum was not kept either
    store.put_metric_batch(NS, [good, {**good, "value": 3.0}])
    (point,) = await stats(store)
    assert point["SampleCount"] == 2


async def test_data_in_several_units_is_one_datapoint_per_unit(store: MetricStore) -> None:
    # AWS's recorded answer (LocalStack's test_handle_different_units): one
    # datapoint per unit when no Unit is asked for.
    for value, unit in ((1.0, "Seconds"), (5.0, "Count"), (10.0, "None")):
        store.put_metric_data(NS, "Latency", {"Api": "put"}, value=value, unit=unit, timestamp=T0)
    points = await stats(store, statistics=["Average"])
    assert sorted((p["Unit"], p["Average"]) for p in points) == [
        ("Count", 5.0),
        ("None", 10.0),
        ("Seconds", 1.0),
    ]
    (counted,) = await stats(store, statistics=["Average"], unit="Count")
    assert counted["Average"] == 5.0


async def test_a_reopened_store_finds_old_series_among_new_ones(
    state_location: str, clock: ManualClock
) -> None:
    """New series are read back by id range, the ones that existed before the
    store opened (nothing cached) by key: a flush mixing both, in an order
    that is not the ids', gives every datapoint to its own series."""
    first = await MetricStore.open(state_location, clock)
    for n in range(0, 400, 2):  # the even ones exist before
        first.put_metric_data(NS, "Hits", {"Api": f"a{n}"}, value=n, timestamp=T0 + 5)
    await first.flush()
    await first.close()
    second = await MetricStore.open(state_location, clock)
    try:
        for n in reversed(range(400)):
            second.put_metric_data(NS, "Hits", {"Api": f"a{n}"}, value=1000 + n, timestamp=T0 + 5)
        await second.flush()
        keys = [(NS, "Hits", (("Api", f"a{n}"),)) for n in range(400)]
        sums = await second.read_many(keys, int(T0) + 60, 60, 1, "Sum")
        series = await second.one("SELECT count(*), count(DISTINCT dimensions) FROM metric_series")
    finally:
        await second.close()
    for n, key in enumerate(keys):
        assert sums[key] == [1000.0 + n + (n if n % 2 == 0 else 0)], key
    assert series == (400, 400)


async def test_new_series_get_their_own_ids_in_a_run_or_not(store: MetricStore) -> None:
    """New series are numbered in the order they were inserted when their ids
    follow the largest before, one after another; else (another writer's
    rows between them, a PostgreSQL sequence's gap) they are read back.
    Either way every datapoint reaches its own series."""
    if store.dialect.name == "sqlite":
        # Another writer's row after each of ours, as if their inserts interleaved.
        await store.execute(
            "CREATE TRIGGER interleave AFTER INSERT ON metric_series WHEN NEW.namespace = 'Shop'"
            " BEGIN INSERT INTO metric_series (namespace, name, dimensions)"
            " VALUES ('Other', NEW.name, NEW.dimensions); END"
        )
    else:  # a number taken and never used: a gap before ours
        await store.scalar("SELECT nextval(pg_get_serial_sequence('metric_series', 'id'))")
    for n in range(50):
        store.put_metric_data(NS, "Hits", {"Api": f"a{n}"}, value=n, timestamp=T0 + 5)
    await store.flush()
    if store.dialect.name == "sqlite":
        await store.execute("DROP TRIGGER interleave")
    for n in range(50, 100):  # in a run this time
        store.put_metric_data(NS, "Hits", {"Api": f"a{n}"}, value=n, timestamp=T0 + 5)
    await store.flush()
    # Read by the rows' series, not through the store's cache of ids.
    rows = await store.rows(
        "SELECT series.namespace, series.dimensions, data.sum FROM metric_data AS data"
        " JOIN metric_series AS series ON series.id = data.series"
    )
    expected = [(NS, json.dumps({"Api": f"a{n}"}, separators=(",", ":")), n) for n in range(100)]
    assert sorted(rows) == sorted(expected)


async def test_counters_and_put_data_of_one_minute_make_one_datapoint(
    store: MetricStore,
) -> None:
    """A harvest writes each counter's count as one sample of its minute:
    whole counts in one statement, a fractional or huge one and data put
    into the same series alongside; all merge into the minute's row, whose
    distribution is stored as bytes either way."""
    counters = store.counters = Metrics()
    dims = dimensions(EventBusName="default", RuleName="r")
    triggered = counters.counter("TriggeredRules", dims)
    odd = counters.counter("Odd", dims)
    huge = counters.counter("Huge", dims)
    triggered.add(2)
    odd.add(0.25)
    huge.add(2.0**60)
    store.put_metric_data(
        NAMESPACE, "TriggeredRules", dict(dims), value=7, unit="Count", timestamp=T0 + 5
    )
    await store.flush(harvest_time=T0 + 10)
    triggered.add(3)  # the same minute again: merged into its row
    odd.add(0.5)
    await store.flush(harvest_time=T0 + 20)
    triggered.add(1)  # the next minute
    await store.flush(harvest_time=T0 + 70)

    async def points(name: str) -> list[dict[str, Any]]:
        answer = await store.get_metric_statistics(
            NAMESPACE,
            name,
            dict(dims),
            start=T0,
            end=T0 + 120,
            period=60,
            statistics=["SampleCount", "Sum", "Minimum", "Maximum"],
            extended_statistics=["p50"],
        )
        found: list[dict[str, Any]] = answer["Datapoints"]
        return [{k: v for k, v in p.items() if k not in ("Timestamp", "Unit")} for p in found]

    def point(*values: float) -> dict[str, Any]:
        ordered = sorted(values)
        median = ordered[math.ceil(len(ordered) / 2) - 1]
        return {
            "SampleCount": len(values),
            "Sum": sum(values),
            "Minimum": ordered[0],
            "Maximum": ordered[-1],
            "ExtendedStatistics": {"p50": median},
        }

    assert await points("TriggeredRules") == [point(2, 7, 3), point(1)]
    assert await points("Odd") == [point(0.25, 0.5)]
    assert await points("Huge") == [point(2.0**60)]
    kinds = await store.rows("SELECT dist FROM metric_data")
    assert len(kinds) == 4 and all(isinstance(dist, bytes) for (dist,) in kinds)


async def test_a_failed_flush_keeps_counts_and_names_no_series_it_made(
    store: MetricStore,
) -> None:
    """A flush whose transaction fails writes nothing: its counts wait for
    the next, and series made in it are made again (their ids were never
    committed)."""
    counters = store.counters = Metrics()
    dims = dimensions(EventBusName="default", RuleName="r")
    counter = counters.counter("TriggeredRules", dims)
    counter.add()
    if store.dialect.name == "sqlite":
        refuse = (
            "CREATE TRIGGER refuse BEFORE INSERT ON metric_data"
            " BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        allow = "DROP TRIGGER refuse"
    else:
        refuse = "ALTER TABLE metric_data ADD CONSTRAINT refuse CHECK (sum < 0)"
        allow = "ALTER TABLE metric_data DROP CONSTRAINT refuse"
    await store.execute(refuse)
    with pytest.raises(Exception, match="refuse"):
        await store.flush(harvest_time=T0 + 10)
    assert await store.scalar("SELECT count(*) FROM metric_series") == 0
    await store.execute(allow)
    counter.add(2)
    await store.flush(harvest_time=T0 + 20)
    counter.add(4)  # its series now known: by the counter
    await store.flush(harvest_time=T0 + 30)
    answer = await store.get_metric_statistics(
        NAMESPACE,
        "TriggeredRules",
        dict(dims),
        start=T0,
        end=T0 + 60,
        period=60,
        statistics=["SampleCount", "Sum"],
    )
    (found,) = answer["Datapoints"]
    assert (found["SampleCount"], found["Sum"]) == (3, 7)
    assert await store.scalar("SELECT count(*) FROM metric_series") == 1


async def test_version_1_metric_tables_lose_the_time_index_and_keep_their_rows(
    state_location: str, clock: ManualClock
) -> None:
    """Version 1 indexed the rows by time alone; version 2 drops that index
    (each read names its series) and reads, rolls up and expires the same
    rows through the primary key."""
    location = location_of(state_location)
    raw = await backend_for(location).connect(location, create=True, functions={})
    try:
        await raw.script(
            "CREATE TABLE store_versions (store TEXT PRIMARY KEY, version INTEGER NOT NULL,"
            " applied REAL NOT NULL);"
            "CREATE TABLE metric_series (id INTEGER PRIMARY KEY, namespace TEXT NOT NULL,"
            " name TEXT NOT NULL, dimensions TEXT NOT NULL, UNIQUE (namespace, name, dimensions));"
            "CREATE TABLE metric_data (series INTEGER NOT NULL, time INTEGER NOT NULL,"
            " unit TEXT NOT NULL, count REAL NOT NULL, sum REAL NOT NULL, min REAL NOT NULL,"
            " max REAL NOT NULL, dist BLOB, PRIMARY KEY (series, time, unit)) WITHOUT ROWID;"
            "CREATE INDEX metric_data_time ON metric_data (time);"
        )
        await raw.execute("INSERT INTO store_versions VALUES ('metrics', 1, 0)")
        await raw.execute(
            "INSERT INTO metric_series (id, namespace, name, dimensions)"
            """ VALUES (1, 'Shop', 'Latency', '{"Api":"put"}')"""
        )
        for moment, value in ((T0 - 600, 9.0), (T0 + 1, 1.0), (T0 + 2, 2.0)):
            await raw.execute(
                "INSERT INTO metric_data VALUES (1, ?, 'None', 1, ?, ?, ?, ?)",
                (int(moment), value, value, value, f"[false,[[{value},1.0]]]".encode()),
            )
    finally:
        await raw.close()
    async with await MetricStore.open(state_location, clock) as store:
        version = "SELECT version FROM store_versions WHERE store = 'metrics'"
        assert await store.scalar(version) == STORE_VERSION == 2
        indexes = (
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = ?"
            if store.dialect.name == "sqlite"
            else "SELECT count(*) FROM pg_indexes WHERE indexname = ?"
        )
        assert await store.scalar(indexes, ("metric_data_time",)) == 0
        await clock.advance(4 * 3_600)
        await store.upkeep()  # the seconds of T0's minute rolled into it
        rows = await store.rows("SELECT time, count, sum FROM metric_data ORDER BY time")
        assert rows == [(int(T0 - 600), 1.0, 9.0), (int(T0), 2.0, 3.0)]
        (point,) = await stats(store, start=T0, end=T0 + 60, extended_statistics=["p50"])
        assert (point["SampleCount"], point["Sum"], point["ExtendedStatistics"]) == (
            2,
            3,
            {"p50": 1.0},
        )
