"""The built-in ``states`` plugin: state machines in the Amazon States Language.

This package holds the language core, run in memory:

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
  ``previousEventId``, written through an ``ExecutionLog``;
- ``tasks``: the ``TaskRunner`` a Task state calls its resource through;
- ``interpreter``: runs an execution, state by state.

The target type, the stepfunctions API and durable (STANDARD) executions
plug into these interfaces later; no hooks are registered yet.
"""
