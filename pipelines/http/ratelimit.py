"""A token bucket: callers over the rate wait their turn; none is dropped."""

from __future__ import annotations

from pipelines.clock import Clock, sleep


class TokenBucket:
    """``rate`` acquisitions a second on average, ``burst`` at once at most.

    Each ``acquire`` takes the next free slot in time and sleeps until it
    comes, so callers are served in the order they asked and the rate holds
    however many wait (EventBridge's ``InvocationRateLimitPerSecond``: excess
    events wait, they are not dropped). Slots are computed (the generic cell
    rate algorithm: one "theoretical arrival time"), not polled: one timer
    per waiting caller, none while under the rate.
    """

    def __init__(self, rate: float, clock: Clock, burst: float = 1.0) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be above 0 and burst at least 1, not {rate!r}, {burst!r}")
        self.rate = rate
        self.clock = clock
        self.burst = burst
        self._interval = 1.0 / rate
        #: When the next call would be due if calls came exactly at the rate.
        self._due = clock.time()

    def reserve(self) -> float:
        """Take the next slot: how long to wait for it (0: now)."""
        now = self.clock.time()
        due = max(self._due, now)  # an idle bucket fills up again
        self._due = due + self._interval
        return max(0.0, due - (self.burst - 1) * self._interval - now)

    def try_take(self) -> float:
        """Take a slot if one is free now (0.0); else take nothing and say
        how long until one is (a webhook answers 429 with it)."""
        now = self.clock.time()
        due = max(self._due, now)
        wait = due - (self.burst - 1) * self._interval - now
        if wait > 0:
            return wait
        self._due = due + self._interval
        return 0.0

    async def acquire(self) -> None:
        """Wait for a slot."""
        delay = self.reserve()
        if delay > 0:
            await sleep(self.clock, delay)
