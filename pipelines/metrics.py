"""The bus's own metrics, counted as EventBridge names them.

Counting happens on the hot path, so a counter is a dict entry keyed by
``(metric name, dimensions)`` where dimensions are a sorted tuple of
``(name, value)`` pairs; the rest of the system reads them through
``Metrics.snapshot`` or ``Metrics.value``. The metrics and alarms issue adds a
store that this feeds; the interface it reads is this one.
"""

from __future__ import annotations

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


class Counter:
    """One counter; the hot path increments ``value`` directly."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0


class Metrics:
    """Monotonic counters per (metric, dimensions)."""

    def __init__(self, namespace: str = NAMESPACE) -> None:
        self.namespace = namespace
        self._counters: dict[tuple[str, Dimensions], Counter] = {}

    def counter(self, name: str, dims: Dimensions) -> Counter:
        """The counter for (name, dims), created at zero; keep it to count cheaply."""
        key = (name, dims)
        found = self._counters.get(key)
        if found is None:
            found = self._counters[key] = Counter()
        return found

    def add(self, name: str, dims: Dimensions, value: float = 1.0) -> None:
        self.counter(name, dims).value += value

    def value(self, name: str, **dims: str) -> float:
        """The count for exactly these dimensions (0 when never counted)."""
        found = self._counters.get((name, dimensions(**dims)))
        return 0.0 if found is None else found.value

    def snapshot(self) -> list[Datapoint]:
        """Every counter that has counted, sorted by name and dimensions."""
        return [
            Datapoint(self.namespace, name, dims, counter.value)
            for (name, dims), counter in sorted(self._counters.items())
            if counter.value
        ]
