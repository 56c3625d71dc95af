"""The built-in ``states`` plugin: state machines in the Amazon States Language.

The language core, run in memory:

- ``definition``: a definition's JSON parsed into typed states and checked
  with ValidateStateMachineDefinition's located, AWS-worded diagnostics;
- ``paths``: the JSONPath data flow (InputPath, Parameters, ResultSelector,
  ResultPath, OutputPath), reference paths, the context object ``$$`` and
  variables ``$name``;
- ``variables``: workflow variables (``Assign``): scopes, names, limits;
- ``jsonata_mode``: JSONata mode's ``{% %}`` expressions on jsonata-python,
  ``$states`` and AWS's added functions;
- ``intrinsics``: the ``States.*`` intrinsic functions;
- ``choice``: Choice rules evaluated against a state's input;
- ``errors``: the built-in error names and how Retry and Catch match them;
- ``history``: the execution's events with AWS's types, ids and
  ``previousEventId``, written through an ``ExecutionLog``, and the
  ``Checkpoint`` a durable log keeps;
- ``tasks``: the ``TaskRunner`` a Task state calls its resource through;
- ``interpreter``: runs an execution, state by state.

Executions in a runtime:

- ``store``: state machines, executions, history and task tokens in the
  state database (SQLite or PostgreSQL);
- ``executions``: the runtime's executions: STANDARD ones durable and
  resumed after a restart (one runner each in a cluster, by lease),
  EXPRESS ones in memory; status-change events and metrics; the functions
  the API calls (start, describe, list, history, stop, SendTask*);
- ``integrations``: the ``TaskRunner`` calling the runtime's resources
  (``http_task``: ``http:invoke`` through a connection);
- ``itemio``: a Distributed Map's ItemReader and ResultWriter over buckets
  (the ``bucket`` plugin's directories);
- ``buckets``: ``RuntimeItems``, the runtime's buckets and queues as items;
- ``target``: the ``state_machine`` target type.

Where users reach them:

- ``api``: the stepfunctions API on the runner's AWS endpoint
  (``register_services``);
- ``cli``: ``pipelines sfn ...`` (``register_commands``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pipelines.clikit import LazyCommand
from pipelines.hookspecs import hookimpl
from pipelines.targets import LazyTargetType

if TYPE_CHECKING:
    import click

    from pipelines.api.services import Service
    from pipelines.store import Store


@hookimpl
def register_targets(register: Callable[[LazyTargetType], None]) -> None:
    # By name: the implementation is imported when a config uses the type.
    register(LazyTargetType("state_machine", "plugins.states.target:StateMachineType"))


@hookimpl
def register_stores(register: Callable[[type[Store]], None]) -> None:
    from plugins.states.store import StatesStore

    register(StatesStore)


@hookimpl
def register_services(register: Callable[[Service], None]) -> None:
    from plugins.states.api import stepfunctions

    register(stepfunctions)


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(
        LazyCommand(
            "sfn",
            "plugins.states.cli:sfn_group",
            "State machines (Step Functions) and their executions.",
        )
    )
