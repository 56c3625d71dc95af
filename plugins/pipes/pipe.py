"""The ``pipe`` resource type: EventBridge Pipes, point to point.

A pipe is a resource (declared under ``pipes:``, which the config turns into
resources of this type, or made by CreatePipe). While its desired state is
RUNNING it reads its source (``plugins.pipes.sources``) and, per batch:

1. **filters** the records (up to 5 event patterns, any of which lets a
   record through) on their view (an SQS body or Kinesis data parsed when it
   is JSON); filtered-out records count as done, and are deleted or
   checkpointed as AWS does;
2. **enriches** the batch (a function, or an EXPRESS state machine,
   synchronously; the batch as a JSON array, each record through the
   enrichment's input template); the answer's elements are the events for
   the target; an empty answer drops them; an error, or an answer that is no
   JSON, fails the whole batch (AWS has no partial failure for enrichment);
3. **delivers** to the target: a function or state machine gets the batch as
   one array (a function may answer ``batchItemFailures``; with our
   ``invoke_as: event_source_mapping``, as an imported SQS event source
   mapping has, a function gets Lambda's ``{"Records": [...]}`` instead); a bus gets
   PutEvents entries of 10; any other resource one delivery per event, in
   order for an ordered source. Each event goes through the target's input
   template.

The indexes that failed go back to the source, which leaves them for a
retry (a queue's visibility timeout and redrive, a stream's retries, bisect
and dead letters). For an ordered source, a failure fails every later record
of its group (a FIFO message group; for a stream, the rest of the batch), so
order holds across retries.

Nothing a pipe meets stops the runner: a source that cannot be read, a
resource of the wrong kind, a failing enrichment is its state
(``CurrentState`` ``START_FAILED`` with its reason) or its batch's failure,
logged and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from pipelines.clock import sleep
from pipelines.errors import ConfigError, DeliveryError, PipelinesError, Where
from pipelines.event import DEFAULT_ACCOUNT, DEFAULT_REGION, dump_json, parse_json
from pipelines.patterns import Matcher
from pipelines.targets import (
    Built,
    DeliveryContext,
    Target,
    TargetServices,
    TargetType,
    describe_error,
    underlying,
)
from plugins.function import FunctionTarget
from plugins.pipes.definition import (
    MAX_PATTERN_LENGTH,
    SETTINGS_TABLE,
    PipeSpec,
    bus_name,
    parse_pipe,
    resource_name,
)
from plugins.pipes.records import Item
from plugins.pipes.sources import (
    LogsSource,
    MqttSource,
    QueueSource,
    Source,
    StreamSource,
    WebhookSource,
)
from plugins.pipes.store import COUNTS, PipeStore
from plugins.pipes.template import InputTemplate, Reserved

log = logging.getLogger("plugins.pipes")

#: AWS's ``AWS/EventBridge/Pipes``, in the project's own namespace: PutMetricData
#: reserves ``AWS/`` (as the other services' metrics here, ``Pipelines/States``...).
NAMESPACE = "Pipelines/Pipes"
#: How often counts and metrics are written while the pipe runs.
FLUSH_EVERY = 5.0
#: How often a pipe reads its desired state (set by ``pipelines pipes
#: start|stop`` or by another runner's StartPipe / StopPipe).
WATCH_EVERY = 1.0
#: A pipe whose source task failed starts it again after this long (doubling).
RESTART_DELAY = 1.0
#: PutEvents entries per call to a bus target.
BUS_BATCH = 10
#: Deliveries of one batch under way at once to a target taking one event per call.
PARALLEL_DELIVERIES = 16
LOG_RANK = {"OFF": 0, "ERROR": 1, "INFO": 2, "TRACE": 3}
#: The setting the pipes API adds to the pipes it makes (``api``): not one a config gives.
ORIGIN = "__origin__"


def pipe_arn(name: str) -> str:
    return f"arn:aws:pipes:{DEFAULT_REGION}:{DEFAULT_ACCOUNT}:pipe/{name}"


class Resources(Protocol):
    """What resolving a pipe's source, enrichment and target needs: the
    runner's ``TargetServices`` when it starts, or the built resources when
    ``pipelines validate`` checks it (``PipeTarget.check_links``)."""

    def resource(self, name: str, *, where: str | None = None) -> Target: ...


class _Built:
    """A built pipeline's resources as ``Resources``."""

    def __init__(self, built: Built) -> None:
        self._built = built

    def resource(self, name: str, *, where: str | None = None) -> Target:
        return self._built.resource(name)


class StageFailed(Exception):
    """A stage failed for the whole batch (enrichment, or a target's whole call)."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.message = message


class Metrics:
    """The pipe's metric data, gathered in memory and put as statistic sets
    at each flush (one datum per batch would cost more than the batch)."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], list[float]] = {}

    def add(self, name: str, value: float, unit: str = "None") -> None:
        found = self.values.get((name, unit))
        if found is None:
            self.values[(name, unit)] = [1, value, value, value]
        else:
            found[0] += 1
            found[1] += value
            found[2] = min(found[2], value)
            found[3] = max(found[3], value)

    def flush(self, services: TargetServices, pipe: str) -> None:
        taken, self.values = self.values, {}
        for (name, unit), (count, total, low, high) in taken.items():
            try:
                services.put_metric_data(
                    NAMESPACE,
                    name,
                    {"PipeName": pipe},
                    statistic_values={
                        "SampleCount": count,
                        "Sum": total,
                        "Minimum": low,
                        "Maximum": high,
                    },
                    unit=unit,
                )
            except Exception as exc:  # the runtime stopping: the counts stay
                log.warning("pipe %s: metric %s not put: %s", pipe, name, exc)


class PipeTarget(Target):
    """One pipe (see the module's doc). Not a target of rules: ``deliver`` refuses."""

    def __init__(self, spec: PipeSpec, origin: str = "config") -> None:
        self.spec = spec
        self.name = spec.name
        self.origin = origin
        self.arn = pipe_arn(spec.name)
        self.desired_state = spec.desired_state
        self.current_state = "STOPPED"
        self.state_reason = ""
        self.counts = dict.fromkeys(COUNTS, 0)
        self._unsaved = dict.fromkeys(COUNTS, 0)
        self.metrics = Metrics()
        self.source: Source | None = None
        self.store: PipeStore | None = None
        self._services: TargetServices | None = None
        self._reading: asyncio.Task[None] | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._state_saved = ("", "")
        #: Why the pipe did not start, when its settings are the reason (the API refuses them).
        self.refusal: ConfigError | None = None
        #: The most events one call of its target takes (None: the whole batch).
        self.target_limit: int | None = None
        #: The filters, all at once (the engine's matcher: a record passes when one matches).
        self._matcher: Matcher | None = None
        if spec.filters:
            self._matcher = Matcher(max_pattern_length=MAX_PATTERN_LENGTH)
            for index, pattern in enumerate(spec.filters):
                self._matcher.add(str(index), pattern)

    # -- the resource's life ------------------------------------------------------

    def references(self) -> list[tuple[tuple[str | int, ...], str]]:
        return self.spec.references()

    def check_links(self, built: Built) -> None:
        """Its source's kind and batching, and its batch against what the
        enrichment and target take: what ``start`` would refuse (START_FAILED)."""
        resources = _Built(built)
        self._check_batching(resources, self._resolve_source(resources))
        self._check_invoke_as(resources)

    async def deliver(self, payload: Any, context: DeliveryContext) -> Any:
        raise DeliveryError(
            "NotATarget", f"pipe {self.name} reads its source; it takes no events", retryable=False
        )

    async def start(self, services: TargetServices) -> None:
        self._services = services
        if services.state_path is not None:
            self.store = await services.open_store(PipeStore, where=f"pipe {self.name}")
            if self.origin == "config":
                self.desired_state = await self.store.declare(
                    self.name, self.spec.settings, self.spec.desired_state
                )
            else:
                found = await self.store.get(self.name)
                if found is not None:
                    self.desired_state = found.desired_state
        self._flushing = services.spawn(self._flush_loop(services))
        if self.desired_state == "RUNNING":
            await self._begin(services)
        else:
            await self._set_state("STOPPED")

    async def stop(self) -> None:
        await self._end("STOPPED")
        if self._flushing is not None:
            self._flushing.cancel()
            await asyncio.gather(self._flushing, return_exceptions=True)
            self._flushing = None
        await self._flush()
        if self.store is not None:
            await self.store.close()
            self.store = None
        self._services = None

    async def set_desired(self, state: str) -> None:
        """StartPipe / StopPipe: saved, then applied (a pipe stopped keeps its place)."""
        async with self._lock:
            self.desired_state = state
            if self.store is not None:
                await self.store.set_desired(self.name, state)
            services = self._services
            if services is None:
                return
            if state == "RUNNING" and self._reading is None:
                await self._begin(services)
            elif state == "STOPPED":
                await self._end("STOPPED")

    async def _begin(self, services: TargetServices) -> None:
        """Open the source and read it; a problem is the pipe's state, not an error."""
        await self._set_state("STARTING")
        self.refusal = None
        try:
            source = self._resolve_source(services)
            self._check_batching(services, source)
            self._check_invoke_as(services)
            await source.open(services)
        except (PipelinesError, ConfigError) as exc:
            log.error("pipe %s did not start: %s", self.name, exc)
            if isinstance(exc, ConfigError):
                self.refusal = exc
            await self._set_state("START_FAILED", str(exc))
            return
        self.source = source
        self._reading = services.spawn(self._read(services, source))
        await self._set_state("RUNNING")

    def _check_invoke_as(self, services: Resources) -> None:
        """``invoke_as: event_source_mapping`` hands Lambda's event to a function:
        any other target has no such event."""
        if self.spec.invoke_as != "event_source_mapping":
            return
        target = None
        if bus_name(self.spec.target) is None:
            target = services.resource(
                resource_name(self.spec.target), where=f"pipe {self.name}.target"
            )
        if target is None or not isinstance(underlying(target), FunctionTarget):
            raise ConfigError(
                Where(f"pipe {self.name}") / "invoke_as",
                f"event_source_mapping is for a function target, not {self.spec.target}",
            )

    def _check_batching(self, services: Resources, source: Source) -> None:
        """A source's batch no larger than its enrichment and target take, as AWS
        refuses such a pipe (a target without a batch API takes batches of 1)."""
        from plugins.http.destination import ApiDestinationTarget

        where = Where(f"pipe {self.name}") / "source_parameters" / "batch_size"
        size = source.batch_size
        if self.spec.enrichment is not None:
            enrichment = services.resource(
                resource_name(self.spec.enrichment), where=f"pipe {self.name}.enrichment"
            )
            if isinstance(underlying(enrichment), ApiDestinationTarget) and size > 1:
                raise ConfigError(where, "an API destination enrichment takes no batches: give 1")
        if bus_name(self.spec.target) is not None:
            self.target_limit = BUS_BATCH
        else:
            target = services.resource(
                resource_name(self.spec.target), where=f"pipe {self.name}.target"
            )
            self.target_limit = batch_limit(target)
        if self.target_limit is not None and size > self.target_limit:
            raise ConfigError(
                where,
                f"is {size}; the target {self.spec.target} takes batches of at most"
                f" {self.target_limit}",
            )

    async def _end(self, state: str) -> None:
        reading, self._reading = self._reading, None
        if reading is not None:
            await self._set_state("STOPPING")
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
        source, self.source = self.source, None
        if source is not None:
            await source.close()
        await self._set_state(state)

    def _resolve_source(self, services: Resources) -> Source:
        from plugins.http.webhook import WebhookTarget
        from plugins.logs.target import LogGroupTarget
        from plugins.mqtt.target import MqttTarget
        from plugins.queue.target import QueueTarget
        from plugins.stream.target import StreamTarget

        name = resource_name(self.spec.source)
        where = f"pipe {self.name}.source"
        resource = underlying(services.resource(name, where=where))
        parameters = self.spec.source_parameters
        if isinstance(resource, QueueTarget):
            batch = parameters.batch_size or 0
            if batch > 10 and parameters.maximum_batching_window < 1:
                raise ConfigError(
                    Where(f"pipe {self.name}") / "source_parameters",
                    "a queue source's batch_size above 10 needs"
                    " maximum_batching_window_in_seconds of at least 1 (as AWS)",
                )
            return QueueSource(self.name, resource.queue, parameters)
        if isinstance(resource, StreamTarget):
            if parameters.starting_position is None:
                raise ConfigError(
                    Where(f"pipe {self.name}") / "source_parameters" / "starting_position",
                    "a stream source needs one: TRIM_HORIZON, LATEST or AT_TIMESTAMP",
                )
            return StreamSource(self.name, resource.stream, parameters)
        if isinstance(resource, LogGroupTarget):
            return LogsSource(self.name, resource.group, parameters)
        if isinstance(resource, MqttTarget):
            return MqttSource(self.name, name, parameters, resource.broker)
        if isinstance(resource, WebhookTarget):
            return WebhookSource(self.name, name, parameters, resource)
        raise ConfigError(
            Where(f"pipe {self.name}") / "source",
            f"{name} is not a queue, a stream, a log group, an MQTT connection or a webhook:"
            " a pipe reads one of those",
        )

    async def _read(self, services: TargetServices, source: Source) -> None:
        """The source's loop, begun again after an unexpected failure."""
        delay = RESTART_DELAY
        while True:
            try:
                await source.run(services, self.process)
                return
            except Exception as exc:
                log.exception(
                    "pipe %s: reading its source failed; again in %.0f s", self.name, delay
                )
                await self._log("ERROR", "ExecutionFailed", error=describe_error(exc))
                await sleep(services.clock, delay)
                delay = min(delay * 2, 60.0)

    async def _set_state(self, state: str, reason: str = "") -> None:
        self.current_state, self.state_reason = state, reason
        if self.store is not None and self._state_saved != (state, reason):
            try:
                await self.store.set_current(self.name, state, reason)
                self._state_saved = (state, reason)
            except Exception:
                log.exception("pipe %s: its state not saved", self.name)

    async def _flush_loop(self, services: TargetServices) -> None:
        """Counts and metrics every FLUSH_EVERY seconds; the desired state in
        the store every WATCH_EVERY (the store is where it is set)."""
        waited = 0.0
        while True:
            await sleep(services.clock, WATCH_EVERY)
            waited += WATCH_EVERY
            if waited >= FLUSH_EVERY:
                waited = 0.0
                await self._flush()
            await self._watch(services)

    async def _watch(self, services: TargetServices) -> None:
        if self.store is None:
            return
        try:
            found = await self.store.get(self.name)
        except Exception:
            log.exception("pipe %s: its desired state not read", self.name)
            return
        if found is None or found.desired_state == self.desired_state:
            return
        async with self._lock:
            self.desired_state = found.desired_state
            if found.desired_state == "RUNNING" and self._reading is None:
                await self._begin(services)
            elif found.desired_state == "STOPPED":
                await self._end("STOPPED")

    async def _flush(self) -> None:
        unsaved, self._unsaved = self._unsaved, dict.fromkeys(COUNTS, 0)
        if self._services is not None:
            self.metrics.flush(self._services, self.name)
        if self.store is None or not any(unsaved.values()):
            return
        try:
            await self.store.add_counts(self.name, unsaved)
        except Exception:
            log.exception("pipe %s: counts not saved", self.name)
            for key, value in unsaved.items():
                self._unsaved[key] += value

    def _count(self, key: str, number: int) -> None:
        if number:
            self.counts[key] += number
            self._unsaved[key] += number

    # -- one batch ------------------------------------------------------------------

    async def process(self, items: list[Item]) -> set[int]:
        """Filter, enrich, deliver ``items``: the indexes that failed."""
        services = self._services
        if services is None:
            return set(range(len(items)))
        began = time.perf_counter()
        self._count("received", len(items))
        self.metrics.add("Invocations", 1)
        self.metrics.add("EventCount", len(items))
        matcher = self._matcher
        kept = (
            [i for i, item in enumerate(items) if matcher.match(item.view)]
            if matcher is not None
            else list(range(len(items)))
        )
        self._count("filtered", len(items) - len(kept))
        if not kept:
            return set()
        chosen = [items[i] for i in kept]
        await self._log("INFO", "ExecutionStarted", size=len(chosen))
        try:
            failed_positions = await self._stages(services, chosen)
        except StageFailed as failure:
            failed_positions = set(range(len(chosen)))
            self.metrics.add("ExecutionFailed", 1)
            self.metrics.add(f"{failure.stage}StageFailed", 1)
            log.warning("pipe %s: %s stage failed: %s", self.name, failure.stage, failure.message)
            await self._log("ERROR", "ExecutionFailed", error=failure.message, stage=failure.stage)
        else:
            if failed_positions:
                self.metrics.add("ExecutionPartiallyFailed", 1)
                self.metrics.add("TargetStagePartiallyFailed", 1)
                await self._log("ERROR", "ExecutionPartiallyFailed", failed=len(failed_positions))
            else:
                await self._log("INFO", "ExecutionSucceeded", size=len(chosen))
        failed = {kept[position] for position in failed_positions}
        if failed and self.source is not None and self.source.ordered:
            failed = _in_order(items, failed, by_group=self.source.kind == "aws:sqs")
        done = len(kept) - len(failed & set(kept))
        self._count("failed", len(failed))
        self._count("delivered", done)
        self.metrics.add("Duration", (time.perf_counter() - began) * 1000, "Milliseconds")
        return failed

    async def _stages(self, services: TargetServices, chosen: list[Item]) -> set[int]:
        """Enrichment then target: positions in ``chosen`` that failed."""
        spec = self.spec
        templated = spec.enrichment_template is not None or spec.target_parameters.template
        ingested = datetime.now(UTC).isoformat(timespec="milliseconds") if templated else ""
        if self.spec.enrichment is not None:
            began = time.perf_counter()
            events = await self._enrich(services, chosen, ingested)
            self.metrics.add(
                "EnrichmentStageDuration", (time.perf_counter() - began) * 1000, "Milliseconds"
            )
            self._count("enriched", len(chosen))
            if not events:
                await self._log("INFO", "EnrichmentDropped", size=len(chosen))
                return set()
            limit = self.target_limit
            if limit is not None and len(events) > limit:
                raise StageFailed(
                    "Target",
                    f"the enrichment answered {len(events)} events; the target takes at most"
                    f" {limit} at once (AWS then does not invoke it)",
                )
            # Events map to records one to one only when the enrichment kept their number.
            aligned = len(events) == len(chosen)
            views = events
        else:
            events = [item.record for item in chosen]
            views = [item.view for item in chosen]
            aligned = True
        template = self.spec.target_parameters.template
        if template is not None:
            events = [
                self._fill(template, view, ingested, chosen[i].record if aligned else view)
                for i, view in enumerate(views)
            ]
        began = time.perf_counter()
        try:
            failed = await self._target(services, events, chosen, aligned)
        finally:
            self.metrics.add(
                "TargetStageDuration", (time.perf_counter() - began) * 1000, "Milliseconds"
            )
        if failed and not aligned:
            return set(range(len(chosen)))  # no event is one record's own
        return failed

    def _reserved(self, ingested: str, event: Any) -> Reserved:
        return Reserved(
            self.arn,
            self.name,
            self.source.arn if self.source is not None else self.spec.source,
            self.spec.enrichment or "",
            self.spec.target,
            ingested,
            event,
        )

    def _fill(self, template: InputTemplate, view: Any, ingested: str, event: Any) -> Any:
        try:
            return template.fill(view, self._reserved(ingested, event))
        except DeliveryError as exc:
            raise StageFailed("Target", exc.message) from None

    # -- enrichment -------------------------------------------------------------

    async def _enrich(
        self, services: TargetServices, chosen: list[Item], ingested: str
    ) -> list[Any]:
        from plugins.http.destination import ApiDestinationTarget
        from plugins.states.target import StateMachineTarget

        assert self.spec.enrichment is not None
        name = resource_name(self.spec.enrichment)
        template = self.spec.enrichment_template
        batch = [
            template.fill(item.view, self._reserved(ingested, item.record))
            if template is not None
            else item.record
            for item in chosen
        ]
        try:
            resource = services.resource(name, where=f"pipe {self.name}.enrichment")
            inner = underlying(resource)
            if isinstance(inner, FunctionTarget):
                return _events(await _invoke(resource, batch, self._context(chosen[0].identifier)))
            if isinstance(inner, StateMachineTarget):
                return await self._express(services, inner, batch)
            if isinstance(inner, ApiDestinationTarget):
                return await self._exchange(inner, batch, chosen)
        except StageFailed:
            raise
        except Exception as exc:
            raise StageFailed("Enrichment", describe_error(exc)) from None
        raise StageFailed(
            "Enrichment",
            f"{name} is a {type(inner).__name__}: an enrichment is a function,"
            " an EXPRESS state machine or an API destination",
        )

    async def _exchange(self, destination: Any, batch: list[Any], chosen: list[Item]) -> list[Any]:
        """An API destination's answers, one request per record (it takes no
        batches): each answer's JSON body is that record's events."""
        events: list[Any] = []
        for payload, item in zip(batch, chosen, strict=True):
            sent = await destination.exchange(payload, self._context(item.identifier, payload))
            if not sent.body.strip():
                continue
            try:
                events += _events(parse_json(sent.body))
            except ValueError:
                raise StageFailed(
                    "Enrichment", f"the API destination answered malformed JSON: {sent.text(80)}"
                ) from None
        return events

    async def _express(
        self, services: TargetServices, resource: Any, batch: list[Any]
    ) -> list[Any]:
        from plugins.states.executions import executions_of
        from plugins.states.store import EXPRESS

        machine = resource.machine
        if machine.machine_type != EXPRESS:
            raise StageFailed(
                "Enrichment", f"state machine {machine.name} is STANDARD: enrichment runs EXPRESS"
            )
        answer = await executions_of(services).start_sync_execution(
            machine.name, dump_json(batch).decode()
        )
        if answer.get("status") != "SUCCEEDED":
            raise StageFailed(
                "Enrichment",
                f"state machine {machine.name}: {answer.get('status')}"
                f" {answer.get('error', '')} {answer.get('cause', '')}".strip(),
            )
        output = answer.get("output")
        if output is None:
            return []
        try:
            return _events(parse_json(output))
        except ValueError:
            raise StageFailed("Enrichment", "the enrichment answered malformed JSON") from None

    # -- target -------------------------------------------------------------------

    def _context(self, identifier: str, event: Any = None, extra: Any = None) -> DeliveryContext:
        envelope = {
            "id": identifier,
            "source": f"Pipe {self.name}",
            "detail-type": f"Event from {self.source.kind if self.source else 'pipe'}",
            "resources": [self.arn],
            "detail": event,
        }
        return DeliveryContext(f"pipe {self.name}", "target", envelope, 1, None, extra)

    async def _target(
        self, services: TargetServices, events: list[Any], chosen: list[Item], aligned: bool
    ) -> set[int]:
        from plugins.states.target import StateMachineTarget

        bus = bus_name(self.spec.target)
        if bus is not None:
            return await self._to_bus(services, bus, events)
        name = resource_name(self.spec.target)
        try:
            resource = services.resource(name, where=f"pipe {self.name}.target")
        except PipelinesError as exc:
            raise StageFailed("Target", str(exc)) from None
        inner = underlying(resource)
        if isinstance(inner, FunctionTarget):
            # Lambda's event source mapping hands the records under "Records".
            payload = (
                {"Records": events} if self.spec.invoke_as == "event_source_mapping" else events
            )
            try:
                answer = await _invoke(resource, payload, self._context(chosen[0].identifier))
            except Exception as exc:
                raise StageFailed("Target", describe_error(exc)) from None
            return _item_failures(answer, chosen)
        if isinstance(inner, StateMachineTarget):
            try:
                await resource.deliver(events, self._context(chosen[0].identifier, events))
            except Exception as exc:
                raise StageFailed("Target", describe_error(exc)) from None
            return set()
        return await self._one_by_one(resource, events, chosen, aligned)

    async def _one_by_one(
        self, resource: Target, events: list[Any], chosen: list[Item], aligned: bool
    ) -> set[int]:
        """One delivery per event: in order for an ordered source (a failure
        ends the batch there), else several at once."""
        group = self.spec.target_parameters.message_group_id

        async def send(index: int, event: Any) -> bool:
            identifier = chosen[index].identifier if aligned else f"{chosen[0].identifier}#{index}"
            extra = None
            if group is not None:
                view = chosen[index].view if aligned else event
                extra = {"MessageGroupId": str(group.fill(view, self._reserved("", event)))}
            try:
                await resource.deliver(event, self._context(identifier, event, extra))
                return True
            except Exception as exc:
                log.warning("pipe %s: delivery failed: %s", self.name, describe_error(exc))
                return False

        if self.source is not None and self.source.ordered:
            for index, event in enumerate(events):
                if not await send(index, event):
                    return set(range(index, len(events)))
            return set()
        failed: set[int] = set()
        for start in range(0, len(events), PARALLEL_DELIVERIES):
            part = range(start, min(start + PARALLEL_DELIVERIES, len(events)))
            outcomes = await asyncio.gather(*(send(i, events[i]) for i in part))
            failed.update(i for i, ok in zip(part, outcomes, strict=True) if not ok)
        return failed

    async def _to_bus(self, services: TargetServices, bus: str, events: list[Any]) -> set[int]:
        parameters = self.spec.target_parameters
        failed: set[int] = set()
        for start in range(0, len(events), BUS_BATCH):
            part = events[start : start + BUS_BATCH]
            entries = [
                {
                    "Source": parameters.source or f"Pipe {self.name}",
                    "DetailType": parameters.detail_type
                    or f"Event from {self.source.kind if self.source else 'pipe'}",
                    "Detail": dump_json(event).decode()
                    if isinstance(event, Mapping)
                    else dump_json({"value": event}).decode(),
                    "Resources": [self.arn],
                }
                for event in part
            ]
            try:
                answer = await services.put_events(entries, default_bus=bus)
            except Exception as exc:
                raise StageFailed("Target", describe_error(exc)) from None
            for offset, entry in enumerate(answer.get("Entries", [])):
                if "ErrorCode" in entry:
                    failed.add(start + offset)
        return failed

    # -- logging ----------------------------------------------------------------

    async def _log(self, level: str, message_type: str, **details: Any) -> None:
        """A log record to the pipe's log group, at its level or above."""
        settings = self.spec.log
        if LOG_RANK[settings.level] < LOG_RANK[level] or settings.log_group is None:
            return
        services = self._services
        if services is None:
            return
        record = {
            "resourceArn": self.arn,
            "timestamp": int(services.clock.time() * 1000),
            "logLevel": level,
            "messageType": message_type,
            **details,
        }
        with contextlib.suppress(Exception):  # logging must not fail a batch
            group = services.resource(resource_name(settings.log_group))
            await group.deliver(record, DeliveryContext(self.name, "log", record))

    # -- what the API and the CLI show ------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "Name": self.name,
            "Arn": self.arn,
            "DesiredState": self.desired_state,
            "CurrentState": self.current_state,
            "StateReason": self.state_reason,
            "Counts": dict(self.counts),
        }


def batch_limit(resource: Target) -> int | None:
    """The most events one call of a target takes, as AWS's Pipes batch to
    it (None: the whole batch as one payload, a function's or a state
    machine's); a target without a batch API takes one."""
    from plugins.eventbus import EventBusTarget
    from plugins.firehose.target import FirehoseTarget
    from plugins.logs.target import LogGroupTarget
    from plugins.queue.target import QueueTarget
    from plugins.states.target import StateMachineTarget
    from plugins.stream.target import StreamTarget
    from plugins.topic.target import TopicTarget

    inner = underlying(resource)
    if isinstance(inner, FunctionTarget | StateMachineTarget):
        return None
    for kind, limit in (
        (LogGroupTarget, 10_000),
        (FirehoseTarget, 500),
        (StreamTarget, 500),
        (EventBusTarget, BUS_BATCH),
        (QueueTarget, 10),
        (TopicTarget, 10),
    ):
        if isinstance(inner, kind):
            return limit
    return 1


async def _invoke(resource: Target, payload: Any, context: DeliveryContext) -> Any:
    """A function's synchronous invocation: its answer (through a wrapper, its
    ``deliver``, which answers what the function does)."""
    if isinstance(resource, FunctionTarget):
        return await resource.invoke(payload, context)
    return await resource.deliver(payload, context)


def _events(answer: Any) -> list[Any]:
    """An enrichment's answer as the target's events: an array's elements, one
    object or value as one event, nothing (null, "", []) as none."""
    if answer is None or answer == "" or answer == []:
        return []
    try:
        dump_json(answer)
    except TypeError:
        raise StageFailed(
            "Enrichment", f"the enrichment answered {type(answer).__name__}, not JSON"
        ) from None
    return list(answer) if isinstance(answer, list) else [answer]


def _item_failures(answer: Any, chosen: list[Item]) -> set[int]:
    """A function's ``{"batchItemFailures": [{"itemIdentifier": id}]}`` as positions;
    an identifier that names no record of the batch fails all of it, as AWS."""
    if not isinstance(answer, Mapping) or "batchItemFailures" not in answer:
        return set()
    failures = answer["batchItemFailures"]
    if not failures:
        return set()
    positions = {item.identifier: i for i, item in enumerate(chosen)}
    found: set[int] = set()
    if not isinstance(failures, list):
        return set(range(len(chosen)))
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, Mapping) else None
        if identifier not in positions:
            return set(range(len(chosen)))
        found.add(positions[identifier])
    return found


def _in_order(items: list[Item], failed: set[int], *, by_group: bool) -> set[int]:
    """For an ordered source: after a failed record, every later one of its
    group fails too (the whole rest of a stream's batch)."""
    if not by_group:
        return set(range(min(failed), len(items)))
    stopped: set[str | None] = set()
    result: set[int] = set()
    for index, item in enumerate(items):
        if index in failed or item.group in stopped:
            stopped.add(item.group)
            result.add(index)
    return result


class PipeType(TargetType):
    name = "pipe"
    description = "EventBridge Pipes: a source read in batches, filtered, enriched, delivered"
    arn_template = "arn:aws:pipes:{region}:{account}:pipe/{name}"
    settings = SETTINGS_TABLE

    def create(self, name: str, config: Mapping[str, Any]) -> PipeTarget:
        origin = str(config.get(ORIGIN, "config"))
        settings = {k: v for k, v in config.items() if k != ORIGIN}
        return PipeTarget(parse_pipe(Where(f"pipe {name}"), name, settings), origin)
