"""``pipelines pipes ...``: the pipes of a pipeline's state database.

``list`` and ``describe`` read ``PipeStore`` (the pipeline running or not):
each pipe's desired and current state and its counts (received, filtered
out, enriched, delivered, failed), which a running pipe adds to every few
seconds. ``start`` and ``stop`` set the desired state there; a running pipe
reads it within a second (``plugins.pipes.pipe.WATCH_EVERY``), on every
runner of a cluster, and it holds across restarts.
"""

from __future__ import annotations

from typing import Any

import click

from pipelines import clikit
from pipelines.clikit import echo_output, output_option, state_options
from pipelines.errors import PipelinesError
from plugins.pipes.store import PipeRecord, PipeStore

COLUMNS = (
    "Name",
    "DesiredState",
    "CurrentState",
    "Received",
    "FilteredOut",
    "Enriched",
    "Delivered",
    "Failed",
)


def describe(record: PipeRecord) -> dict[str, Any]:
    """What ``pipelines pipes describe`` prints of a pipe."""
    return {
        **record.summary(),
        "StateReason": record.state_reason,
        "Settings": record.settings,
        "CreationTime": record.created,
        "LastModifiedTime": record.modified,
    }


async def pipe_record(store: PipeStore, name: str) -> PipeRecord:
    found = await store.get(name)
    if found is None:
        known = ", ".join(record.name for record in await store.pipes()) or "none"
        raise PipelinesError(f"no pipe named {name!r} (pipes: {known})")
    return found


async def set_desired_state(store: PipeStore, name: str, state: str) -> PipeRecord:
    """StartPipe / StopPipe on the state database: the pipe's desired state."""
    await pipe_record(store, name)
    await store.set_desired(name, state)
    return await pipe_record(store, name)


@click.group("pipes")
def pipes_group() -> None:
    """EventBridge Pipes of a pipeline: states and counts, start and stop."""


@pipes_group.command("list")
@click.option("--prefix", default="", help="Only pipes whose name starts with this.")
@state_options
@output_option
def list_command(prefix: str, config: str | None, state: str | None, output: str) -> None:
    """List the pipes with their states and counts."""
    records = clikit.with_store(PipeStore, config, state, lambda store: store.pipes(prefix))
    echo_output([record.summary() for record in records], output, columns=COLUMNS)


@pipes_group.command("describe")
@click.argument("name")
@state_options
@output_option
def describe_command(name: str, config: str | None, state: str | None, output: str) -> None:
    """A pipe's settings, states and counts."""
    record = clikit.with_store(PipeStore, config, state, lambda store: pipe_record(store, name))
    echo_output(describe(record), output)


def _set(name: str, wanted: str, config: str | None, state: str | None, output: str) -> None:
    record = clikit.with_store(
        PipeStore, config, state, lambda store: set_desired_state(store, name, wanted)
    )
    echo_output(record.summary(), output)


@pipes_group.command("start")
@click.argument("name")
@state_options
@output_option
def start_command(name: str, config: str | None, state: str | None, output: str) -> None:
    """Set pipe NAME's desired state to RUNNING (a running pipeline starts it within a second)."""
    _set(name, "RUNNING", config, state, output)


@pipes_group.command("stop")
@click.argument("name")
@state_options
@output_option
def stop_command(name: str, config: str | None, state: str | None, output: str) -> None:
    """Set pipe NAME's desired state to STOPPED (a running pipeline stops it within a second)."""
    _set(name, "STOPPED", config, state, output)
