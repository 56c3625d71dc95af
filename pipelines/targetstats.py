"""What one rule target has done: outcomes, the last error, delivery latency.

EventBridge's own metrics (``pipelines.metrics``) are per rule; an operator
also needs them per rule target: which target fails, what it said last, how
long its events take. Each ``Delivery`` holds a ``TargetStats`` its workers
update in place: plain integer additions and, per delivered event, one
bisection into a fixed table of histogram buckets, so the hot path pays
almost nothing and a scrape (``pipelines.observability``, ``pipelines top``)
reads the numbers as they are.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

#: Upper bounds (seconds) of the delivery latency histogram's buckets: from
#: an event's ingestion to its delivery, retries included (the last bucket,
#: +Inf, is implicit). From a millisecond to a day (retries may take that),
#: about five times apart: few buckets keep a scrape of many targets cheap.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001,
    0.005,
    0.025,
    0.1,
    0.5,
    2.5,
    10.0,
    60.0,
    300.0,
    3_600.0,
    86_400.0,
)


@dataclass(frozen=True, slots=True)
class LastError:
    """The latest failed attempt of a rule target."""

    code: str
    message: str
    #: When it failed (epoch seconds, the runtime's clock).
    at: float


class TargetStats:
    """Counts of one rule target since its delivery was made (a reload that
    keeps the target keeps them)."""

    __slots__ = (
        "dead_lettered",
        "delivered",
        "dropped",
        "failed_attempts",
        "last_error",
        "latency_buckets",
        "latency_sum",
        "waiting",
    )

    def __init__(self) -> None:
        #: Events delivered.
        self.delivered = 0
        #: Attempts that failed (each retry that fails counts again).
        self.failed_attempts = 0
        #: Events given up and sent to (or tried on) the dead-letter target.
        self.dead_lettered = 0
        #: Events given up without a dead-letter target (or whose dead letter failed).
        self.dropped = 0
        #: Retries waiting for their next attempt (in the retry scheduler).
        self.waiting = 0
        self.last_error: LastError | None = None
        #: Delivered events per latency bucket (the last: over every bound).
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0

    def delivered_after(self, seconds: float) -> None:
        """An event delivered ``seconds`` after its ingestion."""
        self.delivered += 1
        self.latency_sum += seconds
        self.latency_buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def failed(self, code: str, message: str, at: float) -> None:
        self.failed_attempts += 1
        self.last_error = LastError(code, message, at)

    def cumulative_buckets(self) -> list[tuple[float, int]]:
        """(upper bound, events at or under it), +Inf last: Prometheus's shape."""
        total = 0
        found = []
        bounds = (*LATENCY_BUCKETS, float("inf"))
        for bound, count in zip(bounds, self.latency_buckets, strict=True):
            total += count
            found.append((bound, total))
        return found
