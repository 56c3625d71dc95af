"""``pipelines topic ...``: a config's topics on the command line.

Topics are declared in a pipeline's config. ``list`` shows them with their
subscriptions; ``publish`` publishes one message through a topic, in this
process, against the pipeline's state database (running or not): queue
subscribers get it in their queue, function subscribers are called here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import click

from pipelines.clikit import echo_output, output_option, parse_pairs
from pipelines.clock import Clock, SystemClock
from pipelines.config import load_config
from pipelines.errors import (
    DeliveryError,
    NotRunningError,
    PipelinesError,
    ResourceNotFoundError,
)
from pipelines.event import new_event_id
from pipelines.metrics import MetricStore
from pipelines.pluginmanager import target_types
from pipelines.routes import Routes
from pipelines.store import Location, Upkeep
from pipelines.targets import DeliveryContext, StoreT, Target, open_state_store, run_upkeep
from plugins.topic.target import TopicTarget, message_attribute


def declared_topics(config_file: str | Path) -> dict[str, dict[str, Any]]:
    """The topic resources a config declares, by resource name, as declared."""
    config = load_config([config_file])
    return {
        name: dict(declared)
        for name, declared in config.resources.items()
        if declared.get("type") == "topic"
    }


class _Services:
    """What the targets of a one-off publish need from a runtime."""

    def __init__(self, state_path: Location | None, resources: Mapping[str, Target]) -> None:
        self.clock: Clock = SystemClock()
        self.state_path = state_path
        self._resources = resources
        self._tasks: set[asyncio.Task[Any]] = set()
        self._metrics: MetricStore | None = None
        #: No HTTP port: a one-off publish serves nothing.
        self.routes = Routes()
        #: Not a runner of a cluster.
        self.runner: str | None = None

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def resource(self, name: str, *, where: str | None = None) -> Target:
        return self._resources[name]

    cluster_group = None  # a one-off publish is no member of a cluster

    # A one-off publish has no buses: nothing to tap or screen.
    def tap(self, observe: Callable[[str, dict[str, Any]], None]) -> AbstractContextManager[None]:
        return contextlib.nullcontext()

    def screen(
        self, bus: str, screen: Callable[[dict[str, Any], int], bool | frozenset[str]]
    ) -> AbstractContextManager[None]:
        return contextlib.nullcontext()

    def watch_rules(
        self, bus: str, rules: Iterable[str]
    ) -> AbstractContextManager[Callable[[Mapping[str, Any]], list[str]]]:
        raise ResourceNotFoundError(f"Event bus {bus} does not exist.")

    def bus_names(self) -> list[str]:
        return []

    async def open_store(self, store_type: type[StoreT], *args: Any, where: str) -> StoreT:
        # A command, not a runner: older tables are refused, not migrated.
        return await open_state_store(self, store_type, *args, where=where, migrate=False)

    def upkeep(self, upkeep: Upkeep) -> asyncio.Task[None]:
        return run_upkeep(self, upkeep)

    async def open_metrics(self) -> None:
        """The state database's metric store, for what targets publish (a log
        group's metric filters), as a runtime has one."""
        if self.state_path is not None:
            self._metrics = await MetricStore.open(self.state_path, self.clock, migrate=False)

    def put_metric_data(
        self,
        namespace: str,
        name: str,
        dimensions: Mapping[str, str] | None = None,
        **options: Any,
    ) -> None:
        if self._metrics is None:
            raise NotRunningError("a one-off publish without a state database keeps no metrics")
        self._metrics.put_metric_data(namespace, name, dimensions, **options)

    async def put_events(self, entries: Any, **options: Any) -> dict[str, Any]:
        raise NotRunningError("a one-off publish takes no events from sources")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._metrics is not None:
            await self._metrics.close()  # writes what was published


async def publish(
    config_file: str | Path,
    topic: str,
    message: str,
    attributes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Publish ``message`` through topic resource ``topic`` of a config, with
    the resources it delivers to (and only those), on the config's state
    database. Returns the MessageId and the subscriptions it matched."""
    config = load_config([config_file])
    types = target_types()
    needed = [topic]
    resources: dict[str, Target] = {}
    while needed:
        name = needed.pop()
        if name in resources:
            continue
        declared = config.resources.get(name)
        if declared is None:
            raise PipelinesError(f"{config_file}: no resource named {name!r}")
        settings = {k: v for k, v in declared.items() if k != "type"}
        resources[name] = types[str(declared.get("type"))].create(name, settings)
        needed.extend(referenced for _, referenced in resources[name].references())
    target = resources[topic]
    if not isinstance(target, TopicTarget):
        raise PipelinesError(f"{config_file}: resource {topic!r} is not a topic")
    # The config's subscriptions only: those the API added name resources
    # this one-off publish has not made.
    target.state.persisted = False
    services = _Services(config.state, resources)
    started: list[Target] = []
    try:
        await services.open_metrics()
        for resource in resources.values():
            await resource.start(services)
            started.append(resource)
        typed = {}
        for name, value in (attributes or {}).items():
            found = message_attribute(value)
            if found is not None:
                typed[name] = found
        event = {"id": new_event_id(), "source": "pipelines.topic.publish"}
        context = DeliveryContext("publish", "cli", event)
        try:
            message_id = await target.publish(message, typed, context)
        except DeliveryError as exc:
            raise PipelinesError(f"topic {topic}: {exc.message}") from None
        return {"MessageId": message_id, "Subscriptions": target.matching(message, typed)}
    finally:
        for resource in reversed(started):
            await resource.drain(10)
            await resource.stop()
        await services.close()


@click.group("topic")
def topic_group() -> None:
    """SNS-style topics declared in a pipeline's config."""


CONFIG_OPTION = click.option(
    "--config", "-c", default="pipeline.yaml", show_default=True, help="The pipeline's config."
)


@topic_group.command("list")
@CONFIG_OPTION
@output_option
def list_command(config: str, output: str) -> None:
    """List the topics and their subscriptions."""
    topics = [
        {
            "Topic": declared.get("topic", name),
            "Subscriptions": [dict(s) for s in declared.get("subscriptions") or []],
        }
        for name, declared in declared_topics(config).items()
    ]
    echo_output(topics, output)


@topic_group.command("publish")
@click.argument("topic")
@click.argument("message")
@click.option(
    "--attribute", "-a", "attributes", multiple=True, help="KEY=VALUE (JSON values typed)."
)
@CONFIG_OPTION
@output_option
def publish_command(
    topic: str, message: str, attributes: tuple[str, ...], config: str, output: str
) -> None:
    """Publish MESSAGE through TOPIC (a resource of the config); print its
    MessageId and the subscriptions it matched."""
    given = parse_pairs(attributes, "--attribute")
    echo_output(asyncio.run(publish(config, topic, message, given)), output)
