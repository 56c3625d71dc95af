"""What a target type provides, as plugins implement it.

A ``TargetType`` (registered through the ``register_targets`` hook) checks a
target's configuration and creates ``Target`` instances. A bus starts its
targets when it starts, calls ``deliver`` once per payload, and stops them
when it stops. ``deliver`` raises ``DeliveryError`` saying whether a retry may
help; any other exception counts as a retryable failure. A target whose
calls end by a callback of its own (a PUBACK) may also implement
``deliver_nowait``: the bus then starts each attempt with it and hears the
outcome through ``done``, with no awaited call per payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from pipelines import settings
from pipelines.clock import sleep
from pipelines.errors import (
    CodedError,
    ConfigError,
    DeliveryError,
    PipelinesError,
    PluginError,
    Where,
)
from pipelines.event import dump_json
from pipelines.settings import Flag, Number, Settings
from pipelines.store import Location, Store, Upkeep

if TYPE_CHECKING:
    from pipelines.clock import Clock
    from pipelines.policy import Caller
    from pipelines.routes import Routes

log = logging.getLogger("pipelines.targets")

StoreT = TypeVar("StoreT", bound=Store)
T = TypeVar("T")


_NOTHING: Mapping[str, Any] = MappingProxyType({})


class JsonString(str):
    """A payload that is a JSON string: the ``str`` is its value, ``json`` the JSON
    text EventBridge hands a target for it (quotes included, as rendered).

    A rule target's input (``input``, ``input_path``, ``input_transformer``)
    that is a JSON string arrives as one: Python code sees the string, a target
    that writes text sends ``payload_text(payload)``, which is what AWS puts in
    an SQS message body (``"baz"``, not ``baz``).
    """

    json: str

    def __new__(cls, value: str, text: str | None = None) -> JsonString:
        made = super().__new__(cls, value)
        made.json = dump_json(value).decode() if text is None else text
        return made

    def __reduce__(self) -> tuple[Any, ...]:
        return (JsonString, (str(self), self.json))


def payload_text(payload: Any) -> str:
    """The text a target writing text (a message body, a record, a log line) sends:
    a ``JsonString``'s JSON text, any other string as it is, anything else as JSON."""
    if isinstance(payload, JsonString):
        return payload.json
    if isinstance(payload, str):
        return payload
    return dump_json(payload).decode()


class DeliveryContext:
    """Where a payload comes from: handed to ``Target.deliver`` with it.

    Treat it as read-only. (A plain slotted class: one is built per delivery
    attempt, and a frozen dataclass is three times slower to build.)
    """

    __slots__ = ("attempt", "attributes", "event", "extra", "rule_arn", "rule_name", "target_id")

    def __init__(
        self,
        rule_name: str,
        target_id: str,
        event: Mapping[str, Any],
        attempt: int = 1,
        attributes: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
        rule_arn: str | None = None,
    ) -> None:
        self.rule_name = rule_name
        self.target_id = target_id
        self.event = event
        self.attempt = attempt
        #: Message attributes: a dead letter's RULE_NAME, ERROR_CODE, ... (strings).
        self.attributes: Mapping[str, str] = _NOTHING if attributes is None else attributes
        self.extra: Mapping[str, Any] = _NOTHING if extra is None else extra
        #: The rule's ARN (its bus's account and name): a bus forwarding to
        #: another puts as that account (bus permissions).
        self.rule_arn = rule_arn

    def __repr__(self) -> str:
        return (
            f"DeliveryContext(rule_name={self.rule_name!r}, target_id={self.target_id!r}, "
            f"attempt={self.attempt}, attributes={dict(self.attributes)!r})"
        )


class Built(Protocol):
    """A pipeline as built from its config, before it runs: what
    ``Target.check_links`` looks at (the runtime is one)."""

    def resource(self, name: str) -> Target: ...

    def bus_names(self) -> list[str]: ...


class TargetServices(Protocol):
    """What the runtime offers a target while it runs (handed to ``Target.start``)."""

    @property
    def clock(self) -> Clock:
        """The runtime's clock: use it for every time-based decision."""
        ...

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run background work as a task owned by the runtime's task group."""
        ...

    def resource(self, name: str, *, where: str | None = None) -> Target:
        """Another target resource by name (a destination); raises
        ``ResourceNotFoundError``, its message prefixed with ``where`` if given."""
        ...

    @property
    def state_path(self) -> Location | None:
        """The runtime's state database (a SQLite file or a PostgreSQL URL),
        for targets that keep durable state there (queues, topics); None when
        the runtime has none."""
        ...

    @property
    def runner(self) -> str | None:
        """This runner's name in a cluster (a PostgreSQL state shared by
        several runners), once started; None for the one runner of a file."""
        ...

    async def put_events(
        self,
        entries: Iterable[Mapping[str, Any]],
        *,
        default_bus: str = "default",
        settled: Callable[[int], None] | None = None,
        caller: Caller | None = None,
        forwarded_by: str | None = None,
        accepted: Callable[[], None] | None = None,
        held: Collection[int] = (),
    ) -> dict[str, Any]:
        """PutEvents, for a resource that is also a source (an MQTT
        subscription): see ``Runtime.put_events``. ``settled(index)`` reports
        each accepted entry once every delivery of it is safe; ``held``: the
        entries whose message the source keeps until then (it sends them
        again otherwise), which get no durable intake row. Raises
        ``NotRunningError`` once the runtime stops taking events. ``caller``:
        the account a source puts as (its ``account`` setting; None: the
        runtime's own); ``forwarded_by``: the rule ARN of a bus forwarding;
        ``accepted()``: every entry is taken in (or failed), the call now
        waits for the durable intake's commit."""
        ...

    def put_metric_data(
        self,
        namespace: str,
        name: str,
        dimensions: Mapping[str, str] | None = None,
        **options: Any,
    ) -> None:
        """PutMetricData into the runtime's metric store, which its alarms
        read: see ``pipelines.metrics.MetricStore.put_metric_data``."""
        ...

    @property
    def routes(self) -> Routes:
        """The paths served on the runner's HTTP port besides AWS's APIs: a
        source taking requests (a webhook) adds its handler in ``start`` and
        removes it in ``stop`` (``pipelines.routes``)."""
        ...

    @property
    def cluster_group(self) -> str | None:
        """The config's ``cluster.group``: sources share their subscriptions
        with the other runners of this group (None outside a cluster)."""
        ...

    def tap(
        self, observe: Callable[[str, dict[str, Any]], None]
    ) -> contextlib.AbstractContextManager[None]:
        """Call ``observe(bus_name, event)`` for every event a bus dispatches,
        while in the ``with`` block (``Runtime.tap``): quick, never blocking."""
        ...

    def screen(
        self, bus: str, screen: Callable[[dict[str, Any], int], bool | frozenset[str]]
    ) -> contextlib.AbstractContextManager[None]:
        """Have ``screen`` look at each event put on ``bus`` before it is
        accepted, while in the ``with`` block (``Runtime.screen``, ``bus.Screen``)."""
        ...

    def watch_rules(
        self, bus: str, rules: Iterable[str]
    ) -> contextlib.AbstractContextManager[Callable[[Mapping[str, Any]], list[str]]]:
        """Which of ``rules`` of ``bus`` an event matches, as they are when
        asked, while in the ``with`` block (``Runtime.watch_rules``)."""
        ...

    def bus_names(self) -> list[str]:
        """The names of the runtime's buses."""
        ...

    async def open_store(self, store_type: type[StoreT], *args: Any, where: str) -> StoreT:
        """Open ``store_type`` (a ``pipelines.store.Store``) on the runtime's
        state database with the runtime's clock (``args`` follow it); the
        target closes it in ``stop``. ``PipelinesError`` beginning with
        ``where`` when the runtime has no state database. See ``open_state_store``."""
        ...

    def upkeep(self, upkeep: Upkeep) -> asyncio.Task[None]:
        """Run a store's periodic ``upkeep`` (retention) as a task owned by the
        runtime, on its clock: cancelled when the runtime stops; a target
        stopped before (a reload) cancels it in ``stop``. See ``run_upkeep``."""
        ...


async def open_state_store(
    services: TargetServices,
    store_type: type[StoreT],
    *args: Any,
    where: str,
    migrate: bool = True,
) -> StoreT:
    """``TargetServices.open_store`` for every implementation of it (a
    command that is not a runner passes ``migrate=False``: ``Store.open``)."""
    if services.state_path is None:
        raise PipelinesError(
            f"{where}: it is kept in the state database;"
            " give the runtime a state_path (a config always has one)"
        )
    return await store_type.open(services.state_path, services.clock, *args, migrate=migrate)


def run_upkeep(services: TargetServices, upkeep: Upkeep) -> asyncio.Task[None]:
    """``TargetServices.upkeep`` for every implementation of it."""
    return services.spawn(upkeep.run(services.clock))


def started(value: T | None, where: str) -> T:
    """What a target's ``start`` made (its store, the services), for
    ``deliver``: delivering before ``start`` or after ``stop`` is the same
    retryable ``NotRunning`` error from every target (the bus retries it;
    a reload swaps targets while deliveries are under way)."""
    if value is None:
        raise DeliveryError("NotRunning", f"{where} is not running", retryable=True)
    return value


@dataclass(frozen=True, slots=True)
class Gauge:
    """A value a resource reports about itself when asked (``Target.gauges``):
    a queue's depth, a stream consumer's lag. Served on ``/metrics`` as
    ``pipelines_<name>`` with the resource's name as the ``resource`` label
    besides ``labels``."""

    #: Lower-case words joined by ``_``, its unit last (``queue_messages``,
    #: ``stream_iterator_age_seconds``); one name keeps one meaning and one
    #: set of label names across resources.
    name: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)
    #: One line saying what it measures (Prometheus's HELP).
    help: str = ""


#: ``Target.deliver_nowait``'s callback: None when the attempt succeeded, else why it
#: failed (a ``DeliveryError``, or any exception: retryable).
Done = Callable[[BaseException | None], None]


def awaitable_done() -> tuple[asyncio.Future[None], Done]:
    """A future and a ``Done`` that settles it (once; a second call, or one
    after the future was cancelled, is ignored): how a target implementing
    ``deliver_nowait`` awaits one of its own attempts in ``deliver``."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def done(error: BaseException | None) -> None:
        if future.done():
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    return future, done


class Target(ABC):
    """One configured target, alive between ``start`` and ``stop``."""

    #: How many deliveries of one rule target may run at once.
    concurrency: int = 16
    #: Whether the class implements ``deliver_nowait`` (set for each subclass): the
    #: bus's rule targets then start their attempts with it.
    delivers_nowait: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.delivers_nowait = cls.deliver_nowait is not Target.deliver_nowait

    #: It serves requests on the runner's HTTP port (a webhook): a runner
    #: without one (no ``api``) refuses to start it.
    serves_http: bool = False

    async def start(self, services: TargetServices) -> None:  # noqa: B027 - optional hook
        """Acquire what delivery needs (connections, imports). Called once."""

    async def drain(self, timeout: float) -> None:  # noqa: B027 - optional hook
        """Finish background work (an internal queue) within ``timeout`` seconds.

        Called at shutdown after the runtime has stopped intake and drained its
        own deliveries, while the runtime's task group still runs; report what
        cannot be finished in time.
        """

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Release it. Called once, after the last ``deliver`` has returned."""

    def accept(self, where: Where, parameters: Mapping[str, Any]) -> None:
        """Check a rule target's parameters for this resource (``http_parameters``,
        already checked for shape) when a rule names it: raise ``ConfigError``
        at ``where / key``. A target that reads none takes none."""
        for key in parameters:
            raise ConfigError(where / key, "is not taken by this target's resource type")

    async def gauges(self) -> Sequence[Gauge]:
        """What it reports about itself at each scrape of ``/metrics`` (and to
        ``pipelines top``): the depth of a queue it keeps, a consumer's lag.
        Called only while it runs, at most once a scrape; keep it to a read
        (one query at most): a scrape waits for it, for up to a second. The
        engine's own numbers (deliveries, retries, errors) need nothing here."""
        return ()

    def references(self) -> Iterable[tuple[tuple[str | int, ...], str]]:
        """The other resources its settings name, each as (path within its
        settings, name): ``pipelines validate`` reports a name that is not
        declared at that path, with its line and column."""
        return ()

    def check_links(self, built: Built) -> None:  # noqa: B027 - optional hook
        """Check what its settings ask of the resources and buses they name
        (a resource's kind, its limits; that a bus exists), once every
        resource is built and each name in ``references`` is declared: raise
        ``ConfigError`` at the setting. ``pipelines validate`` calls it, so
        such a problem is found before a run."""

    @abstractmethod
    async def deliver(self, payload: Any, context: DeliveryContext) -> Any:
        """Deliver one payload; raise ``DeliveryError`` on failure."""

    def deliver_nowait(self, payload: Any, context: DeliveryContext, done: Done) -> None:
        """Optional: start delivering one payload, without waiting for its
        outcome, and call ``done(None)`` once it is delivered or
        ``done(error)`` once it failed, exactly once, on the event loop's
        thread (within this call itself if the outcome is known at once).
        Never block: what cannot go out now waits inside the target, in
        order; the bus keeps at most ``concurrency`` attempts of a rule
        target under way. Raising here fails the attempt (``done`` is then
        not called). A target implementing it still implements ``deliver``
        (every other caller awaits that), usually as this and a future.
        The bus's rule targets use it when the class defines it: an
        attempt then costs no task step of its own, and a target whose
        outcome comes in a later packet (an MQTT PUBACK) keeps its window
        full back to back."""
        raise NotImplementedError(f"{type(self).__name__} does not implement deliver_nowait")


class TargetType(ABC):
    """A kind of target (``function``, ``queue``, ...), provided by a plugin."""

    #: The name configs use in ``type:``; unique across plugins.
    name: str
    #: One line for ``pipelines plugins``.
    description: str = ""
    #: The settings ``create`` accepts, as the table it checks them with:
    #: ``pipelines schema`` publishes it, so the two agree.
    settings: Settings | None = None
    #: For a type without ``settings``: the JSON Schema of a resource's
    #: settings (``properties`` and ``required``; ``type`` is added).
    #: None for both: the settings are not described, and any are allowed there.
    settings_schema: Mapping[str, Any] | None = None
    #: How AWS names a resource of this kind, with ``{region}``, ``{account}``
    #: and ``{name}`` (``arn:aws:sqs:{region}:{account}:{name}``): what API
    #: clients give as a rule target's ``Arn``. None: the type is the
    #: project's own, named ``arn:pipelines:<type>:{region}:{account}:{name}``.
    arn_template: str | None = None
    #: Settings naming a file: a config resolves a relative path against its
    #: own directory before ``create`` sees it (a state machine's definition_file).
    file_settings: tuple[str, ...] = ()

    def arn(self, name: str, region: str, account: str) -> str:
        """The ARN of the resource ``name`` of this type."""
        template = self.arn_template or f"arn:pipelines:{self.name}:{{region}}:{{account}}:{{name}}"
        return template.format(region=region, account=account, name=name)

    def described_settings(self) -> Mapping[str, Any] | None:
        """What ``pipelines schema`` says of its settings (None: not described)."""
        if self.settings is not None:
            return self.settings.properties()
        return self.settings_schema

    @abstractmethod
    def create(self, name: str, config: Mapping[str, Any]) -> Target:
        """Validate ``config`` and return the target resource ``name``.

        Raise ``ConfigError`` naming the field. No I/O here: ``Target.start`` does it.
        """


@dataclass(frozen=True, slots=True)
class LazyTargetType:
    """A target type registered by its name alone: its module is imported, and
    ``factory`` (``"package.module:attribute"``, a ``TargetType`` subclass or
    a function of no arguments returning one) called, the first time a config,
    the schema or the API looks the type up by name (``target_types()[name]``).
    A command that never meets the type (``pipelines validate`` of a config
    without it, ``pipelines --help``) never imports its implementation."""

    name: str
    factory: str

    def load(self) -> TargetType:
        """The target type: ``factory`` imported and called, checked to be a
        ``TargetType`` of this name."""
        module_name, _, attribute = self.factory.partition(":")
        made = getattr(importlib.import_module(module_name), attribute)()
        if not isinstance(made, TargetType):
            raise PluginError(f"target type {self.name!r}: {self.factory} made {made!r}")
        if made.name != self.name:
            raise PluginError(
                f"target type {self.name!r}: {self.factory} made the type {made.name!r}"
            )
        return made


def key_text(found: Any) -> str | None:
    """A JMESPath result used as a key (a FIFO group id, a partition key): a
    non-empty string or a number, as text; None for anything else (missing,
    empty, true/false, an object or a list)."""
    if isinstance(found, bool) or not isinstance(found, str | int | float) or found == "":
        return None
    return str(found)


def flag_setting(
    where: Where | str, config: Mapping[str, Any], key: str, default: bool | None
) -> bool | None:
    """A true/false setting (None only when that is the default), named when it is not."""
    return Flag(default).check(Where.of(where) / key, config.get(key, default))


def number_setting(
    where: Where | str,
    config: Mapping[str, Any],
    key: str,
    default: float,
    low: float,
    high: float,
    *,
    integer: bool = False,
) -> float:
    """A numeric setting within [low, high], with a message naming it when it is not.
    (A setting declared in a ``Settings`` table is read with ``Settings.number``.)"""
    return Number(default, low, high, integer).check(
        Where.of(where) / key, config.get(key, default)
    )


def check_keys(where: Where | str, config: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Reject unknown keys, every one of them, suggesting the closest allowed one."""
    settings.check_keys(Where.of(where), config, allowed)


def describe_error(exc: BaseException) -> str:
    """An error as one log line: "code: message" when it has a code."""
    if isinstance(exc, DeliveryError | CodedError):
        return f"{exc.code}: {exc.message}"
    return str(exc) if isinstance(exc, PipelinesError) else repr(exc)


async def hand_over(
    services: TargetServices,
    resource: str,
    event: Mapping[str, Any],
    *,
    source: str,
    name: str,
    where: str,
    maximum_retry_attempts: int = -1,
) -> bool:
    """Deliver ``event`` to the target ``resource`` as an event source mapping
    does (a stream's consumer, a log group's subscription): retried with
    exponential backoff and jitter (1 s doubling to 60 s) until it is taken,
    or until ``maximum_retry_attempts`` retries (-1: no limit) have failed.
    ``source`` and ``name`` are the delivery context's rule name and target id.
    True when it was delivered, False when it was given up."""
    attempt = 0
    while True:
        attempt += 1
        context = DeliveryContext(source, name, event, attempt)
        try:
            target = services.resource(resource, where=where)
            await target.deliver(event, context)
            return True
        except Exception as exc:
            error = describe_error(exc)
            if 0 <= maximum_retry_attempts < attempt:
                log.error("%s: batch given up after %d attempts: %s", where, attempt, error)
                return False
            delay = min(2.0 ** (attempt - 1), 60.0) * random.uniform(0.5, 1.0)
            log.warning("%s: attempt %d failed (%s); again in %.1f s", where, attempt, error, delay)
            await sleep(services.clock, delay)


def underlying(resource: Target) -> Target:
    """The resource under a wrapper that delivers through it (``pipelines
    test`` wraps each resource in one, its ``inner``, to record what it takes)."""
    inner = getattr(resource, "inner", None)
    while isinstance(inner, Target):
        resource, inner = inner, getattr(inner, "inner", None)
    return resource
