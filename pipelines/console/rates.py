"""Rates of the runtime's counters, from samples taken as the console asks.

No task samples in the background: each look at the rules page is a sample
(time, every counter's value), and a rate is the change since the oldest
sample of the last ``window`` seconds over the time between them. A
console nobody looks at costs nothing; one polled every two seconds gives
rates over the last ten.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping

Key = tuple[str, str, str]  # (metric, bus, rule)


class Rates:
    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self._samples: collections.deque[tuple[float, dict[Key, float]]] = collections.deque()

    def sample(self, now: float, values: Mapping[Key, float]) -> dict[Key, float]:
        """Record ``values`` at ``now``; each key's rate per second since the
        oldest sample within the window (none for the first sample)."""
        while len(self._samples) > 1 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()
        rates: dict[Key, float] = {}
        if self._samples:
            then, old = self._samples[0]
            if now - then > 0.5:  # two looks at once would divide by almost nothing
                for key, value in values.items():
                    rates[key] = max(value - old.get(key, 0.0), 0.0) / (now - then)
        if not self._samples or now - self._samples[-1][0] >= 0.5:
            self._samples.append((now, dict(values)))
        return rates
