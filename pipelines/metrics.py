"""The bus's own metrics, counted as EventBridge names them.

Counting happens on the hot path, so a counter is a dict entry keyed by
``(metric name, dimensions)`` where dimensions are a sorted tuple of
``(name, value)`` pairs; the rest of the system reads them through
``Metrics.snapshot`` or ``Metrics.value``. The metrics and alarms issue adds a
store that this feeds; the interface it reads is this one.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

NAMESPACE = "Pipelines/Events"

Dimensions = tuple[tuple[str, str], ...]

# EventBridge's metric names, as the bus records them.
EVENTS = "Events"
MATCHED_EVENTS = "MatchedEvents"
TRIGGERED_RULES = "TriggeredRules"
INVOCATIONS = "Invocations"
INVOCATION_ATTEMPTS = "InvocationAttempts"
SUCCESSFUL_INVOCATION_ATTEMPTS = "SuccessfulInvocationAttempts"
RETRY_INVOCATION_ATTEMPTS = "RetryInvocationAttempts"
FAILED_INVOCATIONS = "FailedInvocations"
DEAD_LETTER_INVOCATIONS = "DeadLetterInvocations"
INVOCATIONS_SENT_TO_DLQ = "InvocationsSentToDlq"
INVOCATIONS_FAILED_TO_BE_SENT_TO_DLQ = "InvocationsFailedToBeSentToDlq"
THROTTLED_RULES = "ThrottledRules"


def dimensions(**values: str) -> Dimensions:
    return tuple(sorted(values.items()))


@dataclass(frozen=True, slots=True)
class Datapoint:
    namespace: str
    name: str
    dimensions: Dimensions
    value: float


class Metrics:
    """Monotonic counters per (metric, dimensions)."""

    def __init__(self, namespace: str = NAMESPACE) -> None:
        self.namespace = namespace
        self._counts: defaultdict[tuple[str, Dimensions], float] = defaultdict(float)

    def add(self, name: str, dims: Dimensions, value: float = 1.0) -> None:
        self._counts[(name, dims)] += value

    def value(self, name: str, **dims: str) -> float:
        """The count for exactly these dimensions (0 when never counted)."""
        return self._counts.get((name, dimensions(**dims)), 0.0)

    def snapshot(self) -> list[Datapoint]:
        """Every counter's current value, sorted by name and dimensions."""
        return [
            Datapoint(self.namespace, name, dims, value)
            for (name, dims), value in sorted(self._counts.items())
        ]
