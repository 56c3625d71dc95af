"""The hooks a pipelines plugin may implement.

A plugin is a module or package named in the ``pipelines`` entry point group::

    [project.entry-points.pipelines]
    my_targets = "my_package.plugin"

and decorates its functions with ``hookimpl``::

    from pipelines.hookspecs import hookimpl

    @hookimpl
    def register_targets(register):
        register(MyTargetType())

Built-in plugins (``plugins/``) register through the same entry point group.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from pipelines.api.services import ApiHost, Service
    from pipelines.console.sections import Section
    from pipelines.store import Store
    from pipelines.targets import LazyTargetType, TargetType

hookspec = pluggy.HookspecMarker("pipelines")
hookimpl = pluggy.HookimplMarker("pipelines")


@hookspec
def register_targets(register: Callable[[TargetType | LazyTargetType], None]) -> None:
    """Register target types: the kinds of thing a rule can deliver events to.

    Called once, when the plugin manager first collects target types (before
    any bus starts). ``register`` takes one ``pipelines.targets.TargetType``
    per call; call it once for each type the plugin provides. A type's
    ``name`` must be unique across all plugins, or loading fails naming both
    plugins. Every command collects them, so prefer registering a
    ``pipelines.targets.LazyTargetType`` (the type's name and
    ``"module:Class"``): the type's module is then imported only when a
    config or the API uses the type.

    Must return None; what counts is the calls to ``register``.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``pipelines`` command line.

    Called once per process, the first time the command line meets a command
    name it does not have built in (or lists its commands for ``--help``).
    ``cli`` is the top-level ``click.Group``: add to it with ``@cli.command()``,
    ``@cli.group()`` or ``cli.add_command``. Prefer one group named after the
    plugin (``pipelines queue ...``); a name already taken is not replaced.
    Every command of the CLI but a built-in one calls this, so add a
    ``pipelines.clikit.LazyCommand`` (the command's name, ``"module:group"``
    and its help's first sentence): its module is then imported only when
    the command runs, not to list it in ``pipelines --help``.
    Keep each command a thin layer over a public function of the plugin, and
    raise ``PipelinesError`` for what the user must fix: it is printed as one
    line. ``pipelines.clikit`` has the rest: ``state_options`` and
    ``with_store`` (a pipeline's state database), ``output_option`` and
    ``echo_output`` (``--output json|jsonl|table``, as every command prints).

    Must return None; what counts is the commands added to ``cli``.
    """


@hookspec
def register_services(register: Callable[[Service], None]) -> None:
    """Serve an AWS service's operations on the runner's AWS endpoint (``--api``).

    Called once, when an endpoint starts. ``register`` takes one
    ``pipelines.api.services.Service`` per call: botocore's name of the
    service (``sqs``, ``kinesis``...) and its operations, each an async
    function of a ``Call`` (the runtime, the region and account of the
    request) and the request's parameters, read and checked against the
    operation's input shape in botocore's model. An operation returns a
    mapping in the output shape's member names, or raises
    ``pipelines.api.errors.ApiError`` with AWS's error code. The engine
    parses HTTP and the wire protocols; a plugin never does. An operation the
    model has and no plugin serves answers AWS's error shape, ``NotImplemented``
    (501). Several plugins may serve one service, each its own operations
    (the http plugin adds connections and API destinations to the engine's
    events service); an operation registered twice is an error naming both.

    Must return None; what counts is the calls to ``register``.
    """


@hookspec
def register_stores(register: Callable[[type[Store]], None]) -> None:
    """Name the durable stores the plugin keeps in a pipeline's state database.

    Called when ``pipelines state info`` or ``pipelines state migrate`` looks
    at a state database. ``register`` takes one ``pipelines.store.Store``
    subclass per call (the class, not an instance): its ``name``, ``version``
    and ``migrate`` are how the state's tables of that store are reported and
    brought forward. A store opens (and migrates) its tables by itself when a
    runner uses it; registering it lets an operator see and migrate them
    before starting the new version, and lets ``info`` name a version this
    pipelines does not know.

    Must return None; what counts is the calls to ``register``.
    """


@hookspec
def register_restorers(register: Callable[[Callable[[ApiHost], Awaitable[None]]], None]) -> None:
    """Make again, when a runtime starts, the resources a plugin keeps in its
    state database (those its API made: a pipe made by CreatePipe).

    Called once per start of a runtime that has a state database, once it
    takes events and its config's resources run. ``register`` takes one
    async function per call; each is awaited with the runtime (an
    ``ApiHost``: ``open_store``, ``put_resource``, ``resource_names``...).
    An exception is logged, naming the plugin; the runtime goes on.

    Must return None; what counts is the calls to ``register``.
    """


@hookspec
def register_console(register: Callable[[Section], None]) -> None:
    """Add a section of pages to the runner's web console (``run --console``).

    Called once, when a console starts. ``register`` takes one
    ``pipelines.console.sections.Section`` per call: a name (its path,
    ``/console/s/NAME``), a title, and async methods answering data (a
    ``Listing`` of items, an item's ``Detail``, an action's outcome) that the
    console draws; a plugin never writes HTML or reads HTTP. A section reads
    its store through its ``SectionHost`` (opened on the runtime's state
    database once). A name registered twice is an error naming both plugins.

    Must return None; what counts is the calls to ``register``.
    """


@hookspec
def register_cloudformation(register: Callable[[object], None]) -> None:
    """Map CloudFormation resource types to a config, and config parts back.

    Called when ``pipelines import``, ``export`` or ``run --cloudformation``
    first needs the mappings. ``register`` takes one
    ``pipelines.cloudformation.mapping.TypeMapping`` (a CloudFormation type:
    what its ``Ref`` and ``Fn::GetAtt`` give, and how its properties become
    config) or ``ConfigExport`` (a target type or config section: the
    template resources it becomes) per call. A type registered twice is an
    error naming both plugins. See docs/cloudformation.md.

    Must return None; what counts is the calls to ``register``.
    """
