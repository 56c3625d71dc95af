"""The ``state_machine`` target type: a resource that is a state machine.

    resources:
      orders-flow:
        type: state_machine
        definition_file: orders.asl.json     # or definition: {StartAt: ..., States: ...}
        state_machine_type: STANDARD         # or EXPRESS; default STANDARD
        role_arn: arn:aws:iam::000000000000:role/orders   # optional

A rule's target naming it starts an execution with the event (or the
target's transformed input) as its input, named after the delivery (the
same name on the delivery's retries, so a retry after a start that did
happen finds that execution instead of starting a second one). The
definition is checked when the config is (every problem located: at its
YAML node for an inline definition, with its JSON pointer for a file); a
relative ``definition_file`` is read from the config's directory.

Tasks of its executions call the runtime's other resources
(``plugins.states.integrations``); its executions are kept and resumed by
the runtime's ``Executions`` (``plugins.states.executions``).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.errors import ConfigError, DeliveryError, Problems, Where
from pipelines.event import DEFAULT_ACCOUNT, DEFAULT_REGION
from pipelines.settings import Settings, Shape
from pipelines.targets import DeliveryContext, Target, TargetServices, TargetType, payload_text
from plugins.states.definition import StateMachine, validate
from plugins.states.errors import DefinitionError
from plugins.states.executions import ExecutionError, Executions, Machine, machine_arn
from plugins.states.store import EXPRESS, STANDARD
from plugins.states.tasks import TaskRunner

SETTINGS_TABLE = Settings(
    {
        "definition": Shape(
            {"type": ["object", "string"]},
            "the state machine's definition (Amazon States Language): a mapping,"
            " or its JSON text (kept as written, as CreateStateMachine keeps it)",
        ),
        "definition_file": Shape(
            {"type": "string"},
            "a .asl.json file holding the definition, relative to the config's directory",
        ),
        "state_machine_type": Shape(
            {"enum": [STANDARD, EXPRESS], "default": STANDARD},
            "STANDARD (durable in the state database) or EXPRESS (in memory)",
        ),
        "role_arn": Shape({"type": "string"}, "the role its context object names"),
    }
)
#: Codes of a start that will never succeed as it is.
_REFUSALS = {"InvalidExecutionInput", "InvalidName", "StateMachineDoesNotExist"}


class StateMachineTarget(Target):
    concurrency = 16

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.where = f"state machine {machine.name}"
        self.engine: Executions | None = None

    async def start(self, services: TargetServices) -> None:
        engine = await Executions.attach(services, durable=self.machine.machine_type == STANDARD)
        try:
            await engine.add_machine(self.machine)
        except BaseException:
            await engine.detach()
            raise
        self.engine = engine

    def mock_tasks(self, mock_file: str | Path, case: str, machine: str | None = None) -> list[str]:
        """Answer this machine's Task states with the mocked responses of test
        case ``case`` of a Step Functions Local mock file (``plugins.states.mocking``),
        for the state machine named ``machine`` there (default: this resource's
        name), before the runtime starts. What it returns fills, as executions
        run, with what a test must report (a state invoked past its responses).
        ``MockConfigError`` when the file or the case cannot be used."""
        from plugins.states.mocking import MockedTasks, load_mock_config, mock_test_case

        chosen = mock_test_case(load_mock_config(mock_file), machine or self.machine.name, case)
        problems: list[str] = []

        def tasks(real: TaskRunner) -> TaskRunner:
            return MockedTasks(chosen, real, problems=problems)

        self.machine.tasks = tasks
        return problems

    def activity(self) -> Any:
        """What changes while its runtime's executions make progress (config tests)."""
        return None if self.engine is None else self.engine.activity()

    async def drain(self, timeout: float) -> None:
        if self.engine is not None:
            await self.engine.remove_machine(self.machine, timeout)

    async def stop(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            await engine.remove_machine(self.machine, 0.0)
            await engine.detach()

    async def deliver(self, payload: Any, context: DeliveryContext) -> Any:
        engine = self.engine
        if engine is None:
            raise DeliveryError("NotRunning", f"{self.where} is not running", retryable=True)
        key = f"{context.event.get('id')}/{context.rule_name}/{context.target_id}"
        if context.attributes:
            key += "/dead-letter"
        name = str(uuid.UUID(bytes=hashlib.sha256(key.encode()).digest()[:16], version=4))
        try:
            started = await engine.start_execution(self.machine.name, payload_text(payload), name)
        except ExecutionError as error:
            raise DeliveryError(
                error.code, error.message, retryable=error.code not in _REFUSALS
            ) from None
        return started["executionArn"]


class StateMachineType(TargetType):
    name = "state_machine"
    description = "A Step Functions state machine: each delivery starts an execution"
    arn_template = "arn:aws:states:{region}:{account}:stateMachine:{name}"
    settings = SETTINGS_TABLE
    file_settings = ("definition_file",)

    def create(self, name: str, config: Mapping[str, Any]) -> StateMachineTarget:
        where = Where(f"target {name}")
        problems = Problems()
        with problems:
            SETTINGS_TABLE.check_keys(where, config)
        kind = config.get("state_machine_type", STANDARD)
        with problems:
            if kind not in (STANDARD, EXPRESS):
                raise ConfigError(
                    where / "state_machine_type", f"must be STANDARD or EXPRESS, not {kind!r}"
                )
        role = config.get("role_arn", f"arn:aws:iam::{DEFAULT_ACCOUNT}:role/{name}")
        with problems:
            if not isinstance(role, str) or not role:
                raise ConfigError(where / "role_arn", "must be a role's ARN")
        text: str | None = None
        with problems:
            text = _definition(where, config, problems)
        problems.raise_any()
        assert text is not None
        from plugins.states.definition import parse_definition

        program: StateMachine = parse_definition(text)
        machine = Machine(
            name, machine_arn(name, DEFAULT_REGION, DEFAULT_ACCOUNT), kind, role, text, program
        )
        return StateMachineTarget(machine)


def _definition(where: Where, config: Mapping[str, Any], problems: Problems) -> str | None:
    """The definition's JSON text, every problem of it added to ``problems``."""
    inline = config.get("definition")
    file = config.get("definition_file")
    if (inline is None) == (file is None):
        raise ConfigError(where, "give definition (inline) or definition_file, one of them")
    if isinstance(inline, str):
        errors = validate(inline)
        for error in errors:
            at = f" at {error.location}" if error.location else ""
            problems.add(ConfigError(where / "definition", f"{_said(error)}{at}"))
        return None if errors else inline
    if inline is not None:
        if not isinstance(inline, Mapping):
            raise ConfigError(
                where / "definition", "must be a mapping (StartAt, States, ...) or its JSON text"
            )
        errors = validate(dict(inline))
        for error in errors:
            problems.add(ConfigError(_pointed(where / "definition", inline, error), _said(error)))
        return None if errors else json.dumps(inline)
    if not isinstance(file, str) or not file:
        raise ConfigError(where / "definition_file", "must be a file's path")
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(where / "definition_file", f"cannot read {file}: {exc}") from None
    errors = validate(text)
    for error in errors:
        at = f" at {error.location}" if error.location else ""
        problems.add(ConfigError(where / "definition_file", f"{file}{at}: {_said(error)}"))
    return None if errors else text


def _said(error: DefinitionError) -> str:
    return f"{error.code}: {error.message}"


def _pointed(where: Where, document: Any, error: DefinitionError) -> Where:
    """The place of a JSON pointer inside an inline definition (its YAML node)."""
    node = document
    for token in (error.location or "").strip("/").split("/"):
        if not token:
            continue
        key: str | int = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list) and isinstance(key, str) and key.isdigit():
            key = int(key)
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return where / key  # the field is missing: the nearest node is its parent's
        where = where / key
    return where
