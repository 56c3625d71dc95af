"""Process-wide settings that only the ``pipelines`` command applies to itself.

The library never changes interpreter state: an application that embeds a
``Runtime`` keeps its own thread switch interval and ``sys.path``. The CLI
owns its process, so it tunes it for a runner with ``tuned_process``.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

#: CPython's thread switch interval (default 5 ms) while the CLI runs a
#: pipeline. SQLite statements run on their connections' threads, and each time one
#: comes back it waits for the GIL; while the event loop is busy that wait
#: lasts the whole interval. Measured with bench/bench_archive.py: archiving
#: goes from about 35,000 to 60,000 events/s at 0.2 ms.
SWITCH_INTERVAL = 0.0002

#: The garbage collector's youngest-generation threshold (CPython's default
#: is 700) while the CLI runs a pipeline. Every event allocates a few dozen
#: containers (entry, event, detail, jobs, settlements) that reference
#: counting frees a little later; at 700 the collector runs a young
#: collection every few dozen events and promotes whatever is in flight at
#: that moment, so the older generations fill with events that are freed soon
#: after and full collections follow. Measured with bench/bench_mqtt.py (one
#: runner, QoS 0, 50,000 events, heap frozen after the start): garbage
#: collection took 225 ms of the run at 700 (seven full collections), 22 ms
#: at 50,000, and throughput went up by about a sixth. A young collection
#: walks only what is still alive, so its pause stays short; cycles wait
#: longer to be freed, bounded by the same count.
YOUNG_THRESHOLD = 50_000


@contextlib.contextmanager
def tuned_process(
    import_paths: Iterable[Path] = (), *, switch_interval: float | None = SWITCH_INTERVAL
) -> Iterator[None]:
    """While in the block: ``import_paths`` first on ``sys.path`` (a config's
    directory, so its ``function: module:name`` references import from next to
    it), the switch interval at most ``switch_interval`` and the collector's
    young threshold at least ``YOUNG_THRESHOLD``; all put back after, and what
    ``settle_heap`` froze meanwhile thawed."""
    added = [str(p.resolve()) for p in import_paths]
    added = [p for i, p in enumerate(added) if p not in sys.path and p not in added[:i]]
    before = sys.getswitchinterval()
    thresholds = gc.get_threshold()
    sys.path[:0] = added
    if switch_interval is not None and before > switch_interval:
        sys.setswitchinterval(switch_interval)
    if thresholds[0] < YOUNG_THRESHOLD:
        gc.set_threshold(YOUNG_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.unfreeze()  # what ``settle_heap`` froze is the collector's again
        gc.set_threshold(*thresholds)
        sys.setswitchinterval(before)
        for path in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(path)


def settle_heap(*, collect: bool = False) -> None:
    """Take every object alive now out of the garbage collector's full
    collections (``gc.freeze``): call it in ``tuned_process``'s block once
    the runtime has started, and again (``collect``) after a reload.

    What a start builds (10,000 scheduled rules: about 110,000 tracked
    objects) lives as long as the pipeline, yet each full collection walks
    all of it: 40-90 ms each, one in the first minute and about one a
    minute after (bench/bench_schedule.py). Frozen objects are still freed
    by their reference counts (a deleted rule's are: measured, 10,000 rules
    deleted left no cycle behind), only a cycle among them would stay, and
    at most once, since nothing new is frozen until the next call. A reload
    thaws first and ``collect``s, so what it replaced is collected before
    the new heap is frozen. ``tuned_process`` thaws everything at its end.
    """
    if collect:
        gc.unfreeze()
        gc.collect()
    gc.freeze()
