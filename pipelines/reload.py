"""Reloading a running pipeline: a changed config applied to the live runtime.

``pipelines run`` calls ``reload`` on SIGHUP, or with ``--watch`` when a config
file changes. The new config is checked in full first, as ``validate`` does;
when it has a problem it is refused and the running pipeline is untouched.
Otherwise only the difference is applied, in place, and intake never stops:

1. resources that are new or changed are made and started together (one may
   name another); if one fails to start, nothing has changed. A changed
   resource is replaced: rule targets move to the new one, the old one
   finishes its calls in flight and stops;
2. rules that are gone, and targets that are gone from a rule, stop receiving
   events; what they had matched, queued or in flight is delivered (within
   ``drain_timeout``) while the rest applies; their retries not yet due are
   dropped and logged, as RemoveTargets does;
3. new buses are created; new and changed rules are put (PutRule,
   PutTargets). A target that stays (same rule, same id) keeps its queue and
   its retries;
4. resources and buses that are gone are deleted.

The state database cannot change while running (restart for that), and
Python modules already imported (function targets) are not imported again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.config import (
    RESOURCE_SECTIONS,
    PipelineConfig,
    add_alarms,
    apply_bus_policies,
    build_runtime,
    put_declared_rule,
    resource_path,
    resource_settings,
    rule_bus,
)
from pipelines.delivery import Delivery
from pipelines.errors import ConfigInvalid, Problem
from pipelines.runtime import Runtime


@dataclass
class ReloadSummary:
    """What a reload changed, as ``kind name`` labels (``rule orders``)."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [
            f"{verb}: {', '.join(items)}"
            for verb, items in (
                ("added", self.added),
                ("changed", self.changed),
                ("removed", self.removed),
            )
            if items
        ]
        return "; ".join(parts) or "no changes"


def _label(config: PipelineConfig, name: str) -> str:
    """A resource as the file writes it: ``pipe orders`` for an entry of
    ``pipes:``, ``state machine checkout`` of ``state_machines:``, else
    ``resource NAME``."""
    written = resource_path(config, name)
    section = str(written[0]) if written else ""
    kind = RESOURCE_SECTIONS.get(section, "resource").replace("_", " ")
    return f"{kind} {name}"


async def check_reload(runtime: Runtime, current: PipelineConfig, new: PipelineConfig) -> None:
    """Raise ``ConfigInvalid`` when ``new`` cannot replace ``current`` in ``runtime``."""
    problems: list[Problem] = []
    if _resolved(new) != _resolved(current):
        problems.append(
            new.at(
                ("state",),
                f"state: the state database cannot change while the pipeline runs"
                f" (it is {current.state or 'none'}); restart to use another",
            )
        )
    if new.cluster_group != current.cluster_group:
        problems.append(
            new.at(
                ("cluster", "group"),
                f"cluster.group cannot change while the pipeline runs (it is"
                f" {current.cluster_group or 'none'}); restart to join another group",
            )
        )
    try:
        await build_runtime(new, state_path=None, plugins=runtime.plugins)
    except ConfigInvalid as exc:
        problems += exc.problems
    if problems:
        raise ConfigInvalid(problems)


def _resolved(config: PipelineConfig) -> Any:
    state = config.state
    return state.resolve() if isinstance(state, Path) else state


async def reload(
    runtime: Runtime, current: PipelineConfig, new: PipelineConfig, *, drain_timeout: float = 10.0
) -> ReloadSummary:
    """Apply ``new`` to ``runtime``, which runs ``current``. Raises ``ConfigInvalid``
    (and changes nothing) when ``new`` has problems."""
    await check_reload(runtime, current, new)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + drain_timeout
    summary = ReloadSummary()

    def remaining() -> float:
        return max(deadline - loop.time(), 0.0)

    put: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, declared in new.resources.items():
        previous = current.resources.get(name)
        if previous == declared:
            continue
        put[name] = (declared["type"], resource_settings(runtime, new.directory, declared))
        (summary.added if previous is None else summary.changed).append(_label(new, name))

    # Resources first: one that fails to start leaves everything as it was.
    await runtime.put_resources(put, timeout=remaining())
    detached = await _detach(runtime, current, new, summary)
    async with asyncio.TaskGroup() as group:
        # Removed targets deliver what they hold while the new rules apply.
        group.create_task(runtime.retire(detached, timeout=remaining()))
        for bus_name in new.buses:
            if bus_name not in current.buses:
                runtime.create_bus(bus_name, account=new.bus_accounts.get(bus_name))
                summary.added.append(f"bus {bus_name}")
        apply_bus_policies(runtime, new)  # bus permissions: a changed declaration is in force
        await _put_rules(runtime, current, new, summary)
    # Before resources go: an alarm's actions may use one.
    await _put_alarms(runtime, current, new, summary)
    # Latest declared first: a section's entries (a pipe) are merged after the
    # resources they use, so a pipe stops before its source and target go.
    for name in reversed(current.resources):
        if name not in new.resources:
            await runtime.delete_resource(name, timeout=remaining())
            summary.removed.append(_label(current, name))
    await _put_archives(runtime, current, new, summary)
    for bus_name in current.buses:
        if bus_name not in new.buses:
            await runtime.delete_bus(bus_name, timeout=remaining())
            summary.removed.append(f"bus {bus_name}")
    return summary


async def _put_alarms(
    runtime: Runtime, current: PipelineConfig, new: PipelineConfig, summary: ReloadSummary
) -> None:
    """New and changed alarms are put (a changed one keeps its state, as
    PutMetricAlarm's update does); dropped ones are deleted, each composite
    before the alarms its rule names."""
    changed = {n: d for n, d in new.alarms.items() if current.alarms.get(n) != d}
    problems = await add_alarms(runtime, new, changed)
    if problems:  # check_reload built the same config: only a bug gets here
        raise ConfigInvalid(problems)
    for name in changed:
        (summary.changed if name in current.alarms else summary.added).append(f"alarm {name}")
    dropped = [n for n in current.alarms if n not in new.alarms]
    while dropped:
        named = set().union(*(runtime.alarms.children(n) for n in dropped))
        leaves = [n for n in dropped if n not in named] or dropped
        for name in leaves:
            await runtime.alarms.delete_alarms([name])
            summary.removed.append(f"alarm {name}")
            dropped.remove(name)


async def _put_archives(
    runtime: Runtime, current: PipelineConfig, new: PipelineConfig, summary: ReloadSummary
) -> None:
    """New and changed archives apply to events put from now on; one dropped
    from the config stops archiving and keeps its events (still replayable)."""
    for name, declared in new.archives.items():
        previous = current.archives.get(name)
        if previous != declared:
            await runtime.archives.create_archive(name, declared)
            (summary.added if previous is None else summary.changed).append(f"archive {name}")
    for name in current.archives:
        if name not in new.archives:
            await runtime.archives.disable_archive(name)
            summary.removed.append(f"archive {name}")


async def _put_rules(
    runtime: Runtime, current: PipelineConfig, new: PipelineConfig, summary: ReloadSummary
) -> None:
    for name, declared in new.rules.items():
        previous = current.rules.get(name)
        if previous == declared:
            continue
        bus = runtime.bus(rule_bus(declared))
        put_declared_rule(bus, name, declared)
        await bus.put_targets(name, declared.get("targets") or [])
        moved = previous is not None and rule_bus(previous) != rule_bus(declared)
        (summary.added if previous is None or moved else summary.changed).append(f"rule {name}")


def _ids(declared: dict[str, Any]) -> list[str]:
    return [str(target["id"]) for target in declared.get("targets") or []]


async def _detach(
    runtime: Runtime, current: PipelineConfig, new: PipelineConfig, summary: ReloadSummary
) -> list[Delivery]:
    """Take gone targets off their rules and delete gone rules; return the
    deliveries still holding work, to retire once drained."""
    detached: list[Delivery] = []
    for name, previous in current.rules.items():
        declared = new.rules.get(name)
        bus = runtime.bus(rule_bus(previous))
        if declared is None or rule_bus(declared) != rule_bus(previous):
            detached += bus.detach_targets(name, _ids(previous))
            await bus.delete_rule(name)
            if declared is None:
                summary.removed.append(f"rule {name}")
            continue
        gone = [i for i in _ids(previous) if i not in _ids(declared)]
        if gone:
            detached += bus.detach_targets(name, gone)
    return detached
