"""The runtime's tuning knobs, in one object.

    runtime = Runtime(limits=Limits(intake_size=50_000, drain_timeout=30))

Every default is what a runner uses unless told otherwise; the entry limits'
defaults are AWS's. Kept apart from ``Runtime`` so that the parts it composes
(buses, deliveries) read the one value they need without knowing the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.delivery import Backoff
from pipelines.event import EntryLimits


@dataclass(frozen=True, slots=True)
class Limits:
    """Sizes and time limits of a ``Runtime``."""

    #: Targets a rule may have (EventBridge's quota is 5).
    max_targets_per_rule: int = 5
    #: Events a bus holds accepted but not yet matched; put_events waits when full.
    intake_size: int = 10_000
    #: Jobs a rule target holds queued; the dispatcher waits when full.
    target_queue_size: int = 1_000
    #: Seconds ``stop()`` (and a replaced resource) waits for work in flight.
    drain_timeout: float = 10.0
    #: The delays between retries (equal jitter between base and cap).
    backoff: Backoff = field(default_factory=Backoff)
    #: In a cluster (a PostgreSQL state), how often a runner that does not
    #: fire the schedules or evaluate the alarms tries to take that role:
    #: about how long a dead leader's work waits for another runner.
    leader_check: float = 5.0
    #: PutEvents' per-entry size and nesting limits.
    entries: EntryLimits = field(default_factory=EntryLimits)

    def __post_init__(self) -> None:
        for name in ("max_targets_per_rule", "intake_size", "target_queue_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive integer, not {value!r}")
        if not self.leader_check > 0:
            raise ValueError(f"Limits.leader_check must be > 0, not {self.leader_check!r}")
        if not self.drain_timeout >= 0:
            raise ValueError(f"Limits.drain_timeout must be >= 0, not {self.drain_timeout!r}")
