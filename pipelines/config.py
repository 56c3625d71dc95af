"""Declarative pipelines: YAML files -> a checked config -> a ``Runtime``.

    state: .pipelines/state.db        # default; relative to the (first) file
    account: "000000000000"           # the account that owns the buses (the default)
    buses: [audit]                    # extra buses; "default" always exists
                                      # (or a mapping: audit: {policy: ..., account: ...})
    resources:
      report: {type: function, function: "handlers:report"}
    rules:
      nightly:
        schedule: {expression: "cron(0 2 * * ? *)", timezone: Europe/Berlin}
        targets: [{id: report, resource: report}]
      big-orders:
        bus: default
        pattern: {source: [shop], detail: {total: [{numeric: [">", 100]}]}}
        targets: [{id: t1, resource: report, retry_policy: {maximum_retry_attempts: 3}}]

Every problem is reported as ``file:line:column: message``: YAML syntax,
unknown keys (with a "did you mean"), wrong types, dangling references, and
whatever the runtime's own checks reject (patterns, schedules, target
settings), each located at the YAML node it concerns. Problems are collected,
not stopped at: one bad rule does not hide the next.

Plain strings may use ``${VAR}`` and ``${VAR:-default}`` from the environment;
an unquoted value is typed after substitution (``port: ${PORT}`` is a number).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pipelines.alarm_rules import parse_alarm_rule
from pipelines.alarms import parse_alarm
from pipelines.bus import Bus, RuleTarget
from pipelines.clock import Clock
from pipelines.errors import (
    AlarmRuleError,
    CodedError,
    ConfigError,
    ConfigErrors,
    ConfigInvalid,
    PatternError,
    Problem,
    ResourceNotFoundError,
    Where,
    did_you_mean,
    path_label,
    unknown_setting,
)
from pipelines.event import DEFAULT_ACCOUNT
from pipelines.policy import VERSION, BusPolicy
from pipelines.process import tuned_process
from pipelines.runtime import DEFAULT_BUS, DURABILITIES, Runtime
from pipelines.store import Location, is_url
from pipelines.targets import check_keys

if TYPE_CHECKING:
    from pipelines.api.server import ApiSettings

TOP_KEYS = {
    "account",
    "state",
    "durability",
    "api",
    "buses",
    "resources",
    "rules",
    "archives",
    "alarms",
    "cluster",
    "schedules",
    "schedule_groups",
    "pipes",
    "state_machines",
    "schemas",
}
#: The resource a ``cluster`` section becomes: the runners' shared intake.
CLUSTER_RESOURCE = "cluster"
#: The resource ``schedules`` and ``schedule_groups`` become (the scheduler plugin's type).
SCHEDULER_RESOURCE = "scheduler"
#: The resource a ``schemas`` section becomes (the schemas plugin's type).
SCHEMAS_RESOURCE = "schemas"
#: Sections each of whose entries is a resource of one type, named by its
#: key: ``pipes: {p: {...}}`` is ``resources: {p: {type: pipe, ...}}``. The
#: type's settings are the entry's, checked by the same table; problems are
#: located in the section (``resource_path``).
RESOURCE_SECTIONS = {"pipes": "pipe", "state_machines": "state_machine"}
_GROUP = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
#: An AWS Organizations id (o-...), an access key's ``org``.
_ORG = re.compile(r"o-[a-z0-9]{10,32}")
RULE_KEYS = {"bus", "pattern", "schedule", "state", "description", "targets", "require"}
DEFAULT_STATE = ".pipelines/state.db"
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

Path_ = tuple[str | int, ...]


@dataclass
class PipelineConfig:
    """The merged, syntax-checked declaration of one pipeline."""

    files: list[Path]
    state: Location | None
    buses: list[str] = field(default_factory=list)
    #: ``account``: the account that owns the buses it declares.
    account: str = DEFAULT_ACCOUNT
    #: Each bus's declared owner, where not ``account`` (``buses: NAME: account``).
    bus_accounts: dict[str, str] = field(default_factory=dict)
    #: Each bus's declared policy (``buses: NAME: policy`` or ``statements``).
    bus_policies: dict[str, BusPolicy] = field(default_factory=dict)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    archives: dict[str, dict[str, Any]] = field(default_factory=dict)
    alarms: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: EventBridge Scheduler's schedules (``name`` or ``group/name``) and groups.
    schedules: dict[str, dict[str, Any]] = field(default_factory=dict)
    schedule_groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: ``pipes``: each is also a resource of type ``pipe`` (``resources``).
    pipes: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The resources top-level sections became (``schemas``, ``scheduler``):
    #: name -> the path their settings are written under, so that a problem
    #: is labelled as the file has it (``schemas.require[0].bus``).
    section_paths: dict[str, Path_] = field(default_factory=dict)
    #: Nodes written in one place and checked in another: a rule's
    #: ``require`` entry is the ``schemas`` section's ``require[N]`` (the
    #: path checked -> the path written), so its problems point to the rule.
    aliases: dict[Path_, Path_] = field(default_factory=dict)
    #: ``state_machines``: each is also a resource of type ``state_machine``.
    state_machines: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: ``cluster.group``: the runners that share subscriptions (None: alone).
    cluster_group: str | None = None
    #: ``durable`` (answer puts once in the state database) or ``memory``.
    durability: str = "durable"
    #: ``api``: where and how ``pipelines run`` serves AWS's APIs, or None.
    api: ApiSettings | None = None
    #: Where each node was declared: path -> (file, line, column), 1-based.
    positions: dict[Path_, tuple[str, int, int]] = field(default_factory=dict)
    #: How to read it again for a reload, when not from ``files`` as YAML
    #: configs (a config made from CloudFormation templates).
    reread: Callable[[], PipelineConfig] | None = field(default=None, repr=False, compare=False)

    @property
    def directory(self) -> Path:
        return self.files[0].parent

    def at(self, path: Path_, message: str) -> Problem:
        return locate(self.positions, path, str(self.files[0]), message)

    def problems_of(self, base: Path_, exc: ConfigError) -> list[Problem]:
        """Each problem of a check of the node at ``base``, at its own position."""
        if not self.aliases:
            return located_errors(self.positions, base, str(self.files[0]), exc)
        problems = []
        for error in exc.prefixed(base).errors:
            path = self.written(error.path)
            problems.append(self.at(path, f"{label(path)}: {error.message}"))
        return problems

    def written(self, path: Path_) -> Path_:
        """Where the node checked at ``path`` is written (``aliases``)."""
        for length in range(len(path), 0, -1):
            alias = self.aliases.get(path[:length])
            if alias is not None:
                return (*alias, *path[length:])
        return path


API_KEYS = {"listen", "access_keys", "tls", "console"}


def _api(
    config: PipelineConfig,
    declared: Any,
    positions: Mapping[Path_, tuple[str, int, int]],
    file: str,
) -> list[Problem]:
    """``api: HOST:PORT``, or a mapping: ``listen``, ``access_keys`` (KEY:
    {secret, account}: signatures are then checked), ``tls`` ({certificate, key})."""
    from pipelines.api.server import ApiSettings, parse_listen
    from pipelines.api.sigv4 import AccessKey

    problems: list[Problem] = []

    def problem(path: Path_, message: str) -> None:
        problems.append(locate(positions, ("api", *path), file, f"api: {message}"))

    listen = declared if not isinstance(declared, dict) else declared.get("listen", ":0")
    if isinstance(declared, dict):
        for key in declared:
            if key not in API_KEYS:
                problem((key,), f"{key!r}: {unknown_setting(str(key), API_KEYS)}")
    host, port = "127.0.0.1", 0
    try:
        if not isinstance(listen, str | int) or isinstance(listen, bool):
            raise ValueError(f"{listen!r} is not HOST:PORT")
        host, port = parse_listen(str(listen))
    except ValueError as error:
        problem(("listen",) if isinstance(declared, dict) else (), str(error))
    keys: dict[str, AccessKey] = {}
    raw_keys = declared.get("access_keys") or {} if isinstance(declared, dict) else {}
    if not isinstance(raw_keys, dict):
        problem(("access_keys",), "must map access key ids to {secret, account}")
        raw_keys = {}
    for key_id, entry in raw_keys.items():
        secret = entry.get("secret") if isinstance(entry, dict) else None
        account = str(entry.get("account", DEFAULT_ACCOUNT)) if isinstance(entry, dict) else ""
        if not isinstance(secret, str) or not secret:
            problem(
                ("access_keys", key_id), "needs a secret (use ${VAR} to keep it out of the file)"
            )
        elif not (len(account) == 12 and account.isdigit()):
            problem(("access_keys", key_id, "account"), f"{account!r} is not a 12-digit account")
        else:
            org = entry.get("org")
            if org is not None and not (isinstance(org, str) and re.fullmatch(_ORG, org)):
                problem(("access_keys", key_id, "org"), f"{org!r} is not an organization id")
            else:
                keys[str(key_id)] = AccessKey(secret, account, org)
    tls = declared.get("tls") if isinstance(declared, dict) else None
    certificate = key = None
    if tls is not None:
        if not isinstance(tls, dict) or not tls.get("certificate") or not tls.get("key"):
            problem(("tls",), "needs certificate and key (PEM files)")
        else:
            certificate = config.directory / str(tls["certificate"])
            key = config.directory / str(tls["key"])
            for name, path in (("certificate", certificate), ("key", key)):
                if not path.is_file():
                    problem(("tls", name), f"{path} is not a file")
    console = declared.get("console", False) if isinstance(declared, dict) else False
    if not isinstance(console, bool):
        problem(("console",), "must be true or false (serve the web console on this port)")
    if not problems:
        config.api = ApiSettings(host, port, keys, certificate, key, console=console is True)
    return problems


def locate(
    positions: Mapping[Path_, tuple[str, int, int]], path: Path_, file: str, message: str
) -> Problem:
    """A problem at ``path``, or at its nearest declared ancestor (else ``file``'s start)."""
    while path not in positions and path:
        path = path[:-1]
    return Problem(*positions.get(path, (file, 1, 1)), message)


def located_errors(
    positions: Mapping[Path_, tuple[str, int, int]], base: Path_, file: str, exc: ConfigError
) -> list[Problem]:
    """The problems of a check of the node at ``base``: each error's path is
    relative to that node, and its message is labelled with the full path
    (``rules.r.targets[0].id: ...``), as ``pipelines validate`` prints it."""
    problems = []
    for error in exc.prefixed(base).errors:
        problems.append(
            locate(positions, error.path, file, f"{label(error.path)}: {error.message}")
        )
    return problems


# -- loading ----------------------------------------------------------------


#: Limits on what a config file may make the loader build, so that a hostile
#: file fails with a located error instead of exhausting memory or the stack.
#:
#: An alias repeats the node its anchor names, so nine short lines of aliases
#: (the "billion laughs") stand for a billion nodes. A real pipeline repeats a
#: few shared blocks (retry policies, patterns) with aliases: dozens of uses,
#: each of tens of nodes, far below both limits.
MAX_ALIASES = 1_000
#: The nodes aliases add, each use counting every node under its anchor.
MAX_ALIAS_NODES = 100_000
#: PyYAML composes (and this loader builds) nested nodes recursively: 3,000
#: levels exhaust Python's stack. A config's deepest part, a pattern on a
#: nested detail field or an input template, is a dozen levels or so.
MAX_DEPTH = 100
#: Larger than any config a person or a generator writes; it keeps a device
#: such as /dev/zero, given as a config, from being read without end.
MAX_FILE_BYTES = 16 * 1024 * 1024

_MERGE_TAG = "tag:yaml.org,2002:merge"
Pair = tuple[yaml.Node, yaml.Node]


class _Refused(Exception):
    """A file past one of the limits: the message, at a YAML mark."""

    def __init__(self, message: str, mark: Any) -> None:
        super().__init__(message)
        self.message = message
        # PyYAML's pure-Python and C marks both have 0-based line and column.
        self.line: int = mark.line + 1 if mark else 1
        self.column: int = mark.column + 1 if mark else 1


class _Composer(yaml.SafeLoader):
    """PyYAML's safe composer, refusing a node tree past the limits while it
    composes it (before anything is expanded or built).

    Each node's expanded size and height (aliases counted as the nodes they
    stand for) are known once it is composed, so an alias is weighed when it
    is used, against the nodes aliases added so far and the depth it is at.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.depth = 0
        self.aliases = 0
        self.alias_nodes = 0
        #: id(node) -> (nodes it expands to, its height), once composed.
        self.measured: dict[int, tuple[int, int]] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            self._weigh_alias(event)
            return self._composed(parent, index)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        node = self._composed(parent, index)
        self.depth -= 1
        self.measured[id(node)] = self._measure(node)
        return node

    def _composed(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        node = super().compose_node(parent, index)
        assert node is not None  # PyYAML composes a node for every node event
        return node

    def _measure(self, node: yaml.Node) -> tuple[int, int]:
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            return 1, 1
        sizes = [self.measured[id(child)] for child in children]
        return 1 + sum(size for size, _ in sizes), 1 + max((h for _, h in sizes), default=0)

    def _weigh_alias(self, event: yaml.AliasEvent) -> None:
        anchored = self.anchors.get(event.anchor)
        if anchored is None:
            return  # PyYAML reports the undefined alias
        name = f"alias *{event.anchor}"
        measured = self.measured.get(id(anchored))
        if measured is None:  # its anchor's node is still being composed
            raise _Refused(f"{name} is used inside the node it names", event.start_mark)
        size, height = measured
        self.aliases += 1
        self.alias_nodes += size
        if self.aliases > MAX_ALIASES:
            raise _Refused(f"{name}: more than {MAX_ALIASES:,} alias uses", event.start_mark)
        if self.alias_nodes > MAX_ALIAS_NODES:
            raise _Refused(
                f"{name}: aliases expand to more than {MAX_ALIAS_NODES:,} nodes",
                event.start_mark,
            )
        if self.depth + height > MAX_DEPTH:
            raise _Refused(
                f"{name}: nests the config deeper than {MAX_DEPTH} levels", event.start_mark
            )


def compose(text: str) -> yaml.Node | None:
    """YAML text as a node tree, within the limits. Raises ``yaml.YAMLError``
    (syntax, a character YAML does not allow) or ``_Refused``."""
    composer = _Composer(text)
    try:
        return composer.get_single_node()
    finally:
        composer.dispose()


class _Loader:
    """Builds plain data from a YAML node tree, recording each node's position."""

    def __init__(self, file: str, environ: Mapping[str, str]) -> None:
        self.file = file
        self.environ = environ
        self.positions: dict[Path_, tuple[str, int, int]] = {}
        self.problems: list[Problem] = []
        self._constructor = yaml.SafeLoader("")

    def where(self, node: yaml.Node) -> tuple[str, int, int]:
        return (self.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.positions[path] = self.where(node)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            items = [self.build(item, (*path, index)) for index, item in enumerate(node.value)]
            # An item without a value keeps its place: the positions count it.
            return [None if item is _UNBUILT else item for item in items]
        value = self._construct(node)
        if isinstance(node, yaml.ScalarNode) and isinstance(value, str) and "${" in value:
            return self._substitute(node, value)
        return value

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict[Any, Any]:
        own, merged = self._pairs(node)
        chosen: dict[Any, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in own:
            key = self._key(key_node)
            if key is _UNBUILT:
                continue
            if key in chosen:
                self.problems.append(Problem(*self.where(key_node), f"{key!r} is given twice"))
                continue
            chosen[key] = (key_node, value_node)
        for key_node, value_node in merged:
            key = self._key(key_node)
            if key is not _UNBUILT and key not in chosen:  # the first merged wins
                chosen[key] = (key_node, value_node)
        result: dict[Any, Any] = {}
        for key, (key_node, value_node) in chosen.items():
            value = self.build(value_node, (*path, key))
            if value is not _UNBUILT:  # its problem says why; nothing follows from it
                result[key] = value
            # A setting's problems point at its key: the line a user edits.
            self.positions[(*path, key)] = self.where(key_node)
        return result

    def _pairs(self, node: yaml.MappingNode) -> tuple[list[Pair], list[Pair]]:
        """A mapping's own pairs, and those its merge keys (``<<: *base``) bring,
        in the order that decides: a mapping's own keys win over merged ones,
        the first mapping merged wins over later ones (YAML's merge key).

        PyYAML's ``flatten_mapping`` would do this by changing the node, which an
        alias shares: a second use would see the merged keys as its own."""
        own: list[Pair] = []
        merged: list[Pair] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                own.append((key_node, value_node))
                continue
            sources = (
                value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            )
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    self.problems.append(
                        Problem(*self.where(source), "<< merges a mapping or a list of mappings")
                    )
                    continue
                inner_own, inner_merged = self._pairs(source)
                merged += inner_own + inner_merged
        return own, merged

    def _key(self, node: yaml.Node) -> Any:
        key = self._construct(node, deep=True)
        if key is _UNBUILT:
            return key
        if not isinstance(key, str | int) or isinstance(key, bool):
            self.problems.append(Problem(*self.where(node), "a key must be a string"))
            return _UNBUILT
        return key

    def _construct(self, node: yaml.Node, *, deep: bool = False) -> Any:
        """PyYAML's value for a node, or ``_UNBUILT`` with a problem when it has
        none: a tag it cannot construct, 2001-13-01, an int of 5,000 digits."""
        try:
            return self._constructor.construct_object(node, deep=deep)
        except yaml.MarkedYAMLError as exc:
            self.problems.append(_marked(self.file, exc, "YAML:"))
        except Exception as exc:
            # PyYAML's constructors fail on an explicit tag's odd value with
            # whatever Python raises (``!!float ''``: IndexError); each is
            # this value's problem alone.
            text = node.value if isinstance(node, yaml.ScalarNode) else _tag(node)
            shown = text if len(text) <= 40 else text[:37] + "..."
            reason = str(exc).split(";")[0]  # not Python's advice on its own limits
            self.problems.append(
                Problem(*self.where(node), f"{shown!r} is not a valid {_tag(node)}: {reason}")
            )
        return _UNBUILT

    def _check_unclosed(self, node: yaml.ScalarNode, text: str) -> None:
        """A ``${`` that no ``}`` follows is a reference left open (``${PORT``),
        not text to keep: it would reach the pipeline as it is written. One
        that a ``}`` closes but that is not a variable (``${AWS::Region}``)
        stays text."""
        rest = _VARIABLE.sub("", text)
        start = rest.find("${")
        if start >= 0 and "}" not in rest[start:]:
            shown = rest[start : start + 30]
            self.problems.append(
                Problem(
                    *self.where(node),
                    f"{shown!r} has no closing brace: write ${{NAME}} or ${{NAME:-default}}",
                )
            )

    def _substitute(self, node: yaml.ScalarNode, text: str) -> Any:
        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            value = self.environ.get(name)
            if value is None or (value == "" and default is not None):
                if default is None:
                    self.problems.append(
                        Problem(
                            *self.where(node),
                            f"environment variable {name} is not set"
                            f" (give a default with ${{{name}:-value}})",
                        )
                    )
                    return ""
                return default
            return value

        substituted = _VARIABLE.sub(replace, text)
        self._check_unclosed(node, text)
        if node.style is None:  # unquoted: type the result as YAML would
            return _typed(substituted)
        return substituted


#: What ``_Loader._construct`` returns for a node that has no value.
_UNBUILT: Any = object()


def _tag(node: yaml.Node) -> str:
    """``tag:yaml.org,2002:timestamp`` -> ``timestamp``."""
    return str(node.tag).rpartition(":")[2] or str(node.tag)


def _typed(text: str) -> Any:
    """An unquoted substituted value typed as YAML would type it: a scalar
    (``8080`` is a number); anything else (a mapping, bad YAML) stays text."""
    try:
        node = compose(text)
        if isinstance(node, yaml.ScalarNode):
            typed = yaml.SafeLoader("").construct_object(node)
            if typed is None or isinstance(typed, str | int | float | bool):
                return typed
    except (
        yaml.YAMLError,
        _Refused,
        ValueError,
        OverflowError,
        TypeError,
        IndexError,
        AttributeError,
    ):
        # PyYAML indexes an empty tagged scalar (`!!float ` after substitution)
        # and reads a group of a failed match (`!!timestamp `).
        pass
    return text


def _marked(file: str, exc: yaml.MarkedYAMLError, kind: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    problem = " ".join(part for part in (exc.context, exc.problem) if part)
    return Problem(file, line, column, f"{kind} {problem}")


def _read(path: Path) -> str | Problem:
    """A config file's text, or the one problem that keeps it from being read:
    the file cannot be opened, is too large, or is not UTF-8."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return Problem(str(path), 1, 1, f"cannot read: {exc.strerror or exc}")
    if len(data) > MAX_FILE_BYTES:
        return Problem(
            str(path), 1, 1, f"larger than {MAX_FILE_BYTES // 2**20} MiB: not a pipeline config"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _not_utf8(path, data, exc.start)


def _not_utf8(path: Path, data: bytes, start: int) -> Problem:
    """Where the first byte that is not UTF-8 is (its column counted in the
    characters before it on its line, which decode: it is the first bad one)."""
    before = data[:start]
    line_start = before.rfind(b"\n") + 1
    column = len(before[line_start:].decode("utf-8")) + 1
    return Problem(
        str(path),
        before.count(b"\n") + 1,
        column,
        f"not UTF-8: byte 0x{data[start]:02x} is not UTF-8 text (save the file as UTF-8)",
    )


def _character_problem(file: str, text: str, exc: yaml.reader.ReaderError) -> Problem:
    """A character YAML does not allow (a NUL, a control character), located."""
    before = text[: exc.position]
    line_start = before.rfind("\n") + 1
    # PyYAML gives the character's code point when it read text, not bytes.
    code = exc.character if isinstance(exc.character, int) else ord(exc.character)
    return Problem(
        file,
        before.count("\n") + 1,
        exc.position - line_start + 1,
        f"YAML does not allow the character U+{code:04X} in a file",
    )


def load_yaml(path: Path, environ: Mapping[str, str]) -> tuple[Any, _Loader]:
    """A YAML file as plain data, with its loader (node positions and problems)."""
    loader = _Loader(str(path), environ)
    text = _read(path)
    if isinstance(text, Problem):
        loader.problems.append(text)
        return None, loader
    try:
        node = compose(text)
    except yaml.MarkedYAMLError as exc:
        loader.problems.append(_marked(str(path), exc, "YAML syntax:"))
        return None, loader
    except yaml.reader.ReaderError as exc:
        loader.problems.append(_character_problem(str(path), text, exc))
        return None, loader
    except _Refused as exc:
        loader.problems.append(Problem(str(path), exc.line, exc.column, exc.message))
        return None, loader
    if node is None:
        return {}, loader
    data = loader.build(node, ())
    return (None if data is _UNBUILT else data), loader


@dataclass(frozen=True)
class Document:
    """One config's data as read, with the position of each node: a YAML
    file's, or (``pipelines run --cloudformation``) the template nodes a
    config made from templates came from."""

    file: str
    data: Any
    positions: Mapping[Path_, tuple[str, int, int]]


def load_config(
    paths: Sequence[str | Path] | str | Path, *, environ: Mapping[str, str] | None = None
) -> PipelineConfig:
    """Read and merge YAML files; raise ``ConfigInvalid`` listing every problem.

    This checks syntax and the config's shape. ``build_runtime`` checks the
    rest (references, patterns, schedules, target settings).
    """
    files = [Path(p) for p in ([paths] if isinstance(paths, str | Path) else paths)]
    if not files:
        raise ConfigInvalid([Problem("-", 1, 1, "no config file given")])
    problems: list[Problem] = []
    documents = []
    for path in files:
        data, loader = load_yaml(path, os.environ if environ is None else environ)
        problems += loader.problems
        if data is not None:
            documents.append(Document(loader.file, data, loader.positions))
    return config_from_documents(files, documents, problems)


def config_from_documents(
    files: Sequence[Path], documents: Sequence[Document], problems: Sequence[Problem] = ()
) -> PipelineConfig:
    """Merge config documents already read (``load_config``'s, or a config
    made from CloudFormation templates) and check their shape, as
    ``load_config`` does; raise ``ConfigInvalid`` listing every problem."""
    config = PipelineConfig(files=list(files), state=None)
    problems = list(problems)
    state: Any = DEFAULT_STATE
    clusters: list[Any] = []
    schemas: list[Any] = []
    for loader in documents:
        data = loader.data
        config.positions.update(
            {k: v for k, v in loader.positions.items() if k not in config.positions}
        )
        problems += _merge(config, data, loader)
        if isinstance(data, dict) and "state" in data:
            state = data["state"]
        if isinstance(data, dict) and "durability" in data:
            if data["durability"] in DURABILITIES:
                config.durability = data["durability"]
            else:
                problems.append(
                    locate(
                        loader.positions,
                        ("durability",),
                        loader.file,
                        f"durability must be {' or '.join(DURABILITIES)},"
                        f" not {data['durability']!r}",
                    )
                )
        if isinstance(data, dict) and data.get("api") is not None:
            problems += _api(config, data["api"], loader.positions, loader.file)
        if isinstance(data, dict) and data.get("cluster") is not None:
            clusters.append(data["cluster"])
        if isinstance(data, dict) and data.get("schemas") is not None:
            schemas.append(data["schemas"])
    problems += _cluster(config, clusters)
    problems += _schemas(config, schemas)
    problems += _scheduler(config)
    problems += _section_resources(config)
    if state is None or state is False:
        config.state = None
    elif isinstance(state, str) and is_url(state):
        config.state = state  # PostgreSQL: the runners of a cluster share it
    elif isinstance(state, str) and state:
        config.state = config.directory / state
    else:
        problems.append(
            config.at(
                ("state",),
                "state must be a file path, a postgresql:// URL (or false for none)",
            )
        )
    if problems:
        raise ConfigInvalid(problems)
    return config


def _merge(config: PipelineConfig, data: Any, loader: _Loader | Document) -> list[Problem]:
    def at(path: Path_, message: str) -> Problem:
        return locate(loader.positions, path, loader.file, message)

    if not isinstance(data, dict):
        return [at((), "a pipeline config is a mapping with resources and rules")]
    problems = []
    try:
        check_keys(Where("config"), data, TOP_KEYS)
    except ConfigError as exc:
        problems += located_errors(loader.positions, (), loader.file, exc)
    problems += _buses(config, data.get("buses") or [], loader.positions, loader.file)
    if "account" in data:
        account = str(data["account"])
        if len(account) == 12 and account.isdigit():
            config.account = account
        else:
            problems.append(at(("account",), f"account: {account!r} is not a 12-digit account"))
    for section in (
        "resources",
        "rules",
        "archives",
        "alarms",
        "schedules",
        "schedule_groups",
        *RESOURCE_SECTIONS,
    ):
        declared = data.get(section) or {}
        if not isinstance(declared, dict):
            problems.append(at((section,), f"{section} is a mapping of names to declarations"))
            continue
        merged: dict[str, dict[str, Any]] = getattr(config, section)
        for name, body in declared.items():
            if name in merged:
                first = config.at((section, name), "")
                problems.append(
                    at(
                        (section, name),
                        f"{_singular(section)} {name!r} is already declared at"
                        f" {first.file}:{first.line}:{first.column}",
                    )
                )
            elif not isinstance(body, dict) and not (section == "schedule_groups" and body is None):
                problems.append(
                    at((section, name), f"{_singular(section)} {name!r} must be a mapping")
                )
            else:
                merged[str(name)] = body or {}  # a schedule group may be just its name
    return problems


BUS_KEYS = {"policy", "statements", "account"}


def _buses(
    config: PipelineConfig,
    buses: Any,
    positions: Mapping[Path_, tuple[str, int, int]],
    file: str,
) -> list[Problem]:
    """``buses``: a list of names, or a mapping of names to settings (or null):
    ``policy`` (a policy document, or its JSON text), ``statements`` (its
    statements alone), ``account`` (the owner, when not the config's)."""
    if isinstance(buses, list) and all(isinstance(b, str) for b in buses):
        buses = dict.fromkeys(buses)
    if not isinstance(buses, dict):
        return [locate(positions, ("buses",), file, "buses is a list of bus names, or a mapping")]
    problems: list[Problem] = []
    for name, settings in buses.items():
        name = str(name)
        if name not in config.buses and name != DEFAULT_BUS:
            config.buses.append(name)
        if settings is None:
            continue
        problems += _bus_settings(config, name, settings, positions, file)
    return problems


def _bus_settings(
    config: PipelineConfig,
    name: str,
    settings: Any,
    positions: Mapping[Path_, tuple[str, int, int]],
    file: str,
) -> list[Problem]:
    path: Path_ = ("buses", name)
    if not isinstance(settings, dict):
        return [locate(positions, path, file, f"buses.{name}: a mapping (policy, account)")]
    try:
        check_keys(Where(f"buses.{name}"), settings, BUS_KEYS)
        if "policy" in settings and "statements" in settings:
            raise ConfigError(Where(f"buses.{name}", ("statements",)), "give policy or statements")
    except ConfigError as exc:
        return located_errors(positions, path, file, exc)
    problems: list[Problem] = []
    if "account" in settings:
        account = str(settings["account"])
        if len(account) == 12 and account.isdigit():
            config.bus_accounts[name] = account
        else:
            problems.append(
                locate(
                    positions,
                    (*path, "account"),
                    file,
                    f"buses.{name}.account: {account!r} is not a 12-digit account",
                )
            )
    key = "policy" if "policy" in settings else "statements" if "statements" in settings else None
    if key is not None:
        given = settings[key]
        if key == "statements":
            given = {"Version": VERSION, "Statement": given}
        try:
            config.bus_policies[name] = BusPolicy.parse(Where(f"buses.{name}"), given)
        except ConfigError as exc:
            # A statements list is the document's Statement: its paths start there.
            base = (*path, key) if key == "policy" else path
            relative = exc if key == "policy" else _statements_path(exc)
            problems += located_errors(positions, base, file, relative)
        except CodedError as exc:  # over the size limit
            problems.append(locate(positions, (*path, key), file, f"buses.{name}.{key}: {exc}"))
    return problems


def _statements_path(exc: ConfigError) -> ConfigError:
    """An error in a document made of a ``statements`` list, at that list's path."""
    errors = [
        ConfigError(
            Where(error.subject, ("statements", *error.path[1:])),
            error.message,
        )
        if error.path[:1] == ("Statement",)
        else ConfigError(Where(error.subject, ("statements", *error.path)), error.message)
        for error in exc.errors
    ]
    return ConfigErrors(errors)


def apply_bus_policies(runtime: Runtime, config: PipelineConfig) -> None:
    """Each declared bus policy, in force where it changed (a reload) or is new.

    The declaration a bus had is compared, not its policy in force: a policy
    made through the API stays until the config declares a different one."""
    for bus in runtime.buses():
        declared = config.bus_policies.get(bus.name, BusPolicy())
        if declared.text() != bus.declared_policy.text():
            bus.declared_policy = bus.policy = declared


def _cluster(config: PipelineConfig, clusters: list[Any]) -> list[Problem]:
    """A ``cluster`` section becomes the resource ``cluster``: a source of its
    ``type`` (default mqtt) subscribed to the group's intake topic, whose
    messages are PutEvents entries. Every source of the config then shares its
    subscriptions with the group's other runners."""
    if not clusters:
        return []
    if len(clusters) > 1:
        return [config.at(("cluster",), "cluster is declared in more than one file")]
    declared = clusters[0]
    if not isinstance(declared, dict):
        return [config.at(("cluster",), "cluster is a mapping with group, broker, ...")]
    group = declared.get("group")
    if not isinstance(group, str) or not _GROUP.fullmatch(group):
        return [
            config.at(
                ("cluster", "group"),
                "cluster.group: the name the runners share, 1 to 64 letters, digits, . _ -",
            )
        ]
    if CLUSTER_RESOURCE in config.resources:
        return [
            config.at(
                ("resources", CLUSTER_RESOURCE),
                f"resources.{CLUSTER_RESOURCE}: the name is taken by the cluster section",
            )
        ]
    settings = {k: v for k, v in declared.items() if k not in ("group", "topic", "bus")}
    settings.setdefault("type", "mqtt")
    topic = declared.get("topic", f"pipelines/{group}/events")
    subscription = {"topic": topic, "qos": 1, "format": "entries"}
    if "bus" in declared:
        subscription["bus"] = declared["bus"]
    settings["subscribe"] = [subscription, *(settings.get("subscribe") or [])]
    config.resources[CLUSTER_RESOURCE] = settings
    config.cluster_group = group
    # Its problems point into the cluster section.
    for path, position in list(config.positions.items()):
        if path[:1] == ("cluster",):
            config.positions[("resources", CLUSTER_RESOURCE, *path[1:])] = position
    return []


def _schemas(config: PipelineConfig, sections: list[Any]) -> list[Problem]:
    """A ``schemas`` section (registries, discoverers, require, discovery)
    becomes the resource ``schemas`` (the schemas plugin's type), its
    problems located in the section; the rules' ``require`` entries join its
    ``require``, each with its rule and bus, their problems located in the rule."""
    problems, of_rules = _rule_requirements(config)
    if not sections and not of_rules:
        return problems
    if len(sections) > 1:
        return [config.at(("schemas",), "schemas is declared in more than one file")]
    declared = sections[0] if sections else {}
    if not isinstance(declared, dict):
        return [config.at(("schemas",), "schemas is a mapping: registries, discoverers, require")]
    if of_rules:
        own = declared.get("require") or []
        if not isinstance(own, list):  # (the plugin says so)
            return problems
        declared = {**declared, "require": [*own, *(entry for _, entry in of_rules)]}
        for offset, (written, _) in enumerate(of_rules):
            config.aliases[("schemas", "require", len(own) + offset)] = written
    if SCHEMAS_RESOURCE in config.resources:
        return [
            config.at(
                ("resources", SCHEMAS_RESOURCE),
                f"resources.{SCHEMAS_RESOURCE}: the name is taken by the schemas section",
            )
        ]
    config.resources[SCHEMAS_RESOURCE] = {**declared, "type": "schemas"}
    config.section_paths[SCHEMAS_RESOURCE] = ("schemas",)
    for path, position in list(config.positions.items()):
        if path[:1] == ("schemas",):
            config.positions[("resources", SCHEMAS_RESOURCE, *path[1:])] = position
    return problems


def _rule_requirements(config: PipelineConfig) -> tuple[list[Problem], list[tuple[Path_, Any]]]:
    """The rules' ``require`` entries (a mapping, or a list of them), each
    as the ``schemas`` resource takes it (with ``rule`` and ``bus``) and
    where it is written; and the problems only the rule can see."""
    problems: list[Problem] = []
    found: list[tuple[Path_, Any]] = []
    for name, rule in config.rules.items():
        declared = rule.get("require") if isinstance(rule, dict) else None
        if declared is None:
            continue
        path: Path_ = ("rules", name, "require")
        if "pattern" not in rule:
            problems.append(
                config.at(path, f"{label(path)}: only a rule with an event pattern can require")
            )
            continue
        entries = [(path, declared)] if isinstance(declared, dict) else None
        if isinstance(declared, list):
            entries = [((*path, index), entry) for index, entry in enumerate(declared)]
        if entries is None:
            problems.append(config.at(path, f"{label(path)}: a requirement, or a list of them"))
            continue
        for written, entry in entries:
            taken = {"bus", "rule"}.intersection(entry) if isinstance(entry, dict) else set()
            for key in sorted(taken):
                at = (*written, key)
                problems.append(
                    config.at(at, f"{label(at)}: a rule's requirement is for the rule, on its bus")
                )
            if taken:
                continue
            if isinstance(entry, dict):
                entry = {**entry, "rule": name, "bus": rule_bus(rule)}
            found.append((written, entry))
    return problems, found


def _scheduler(config: PipelineConfig) -> list[Problem]:
    """``schedules`` and ``schedule_groups`` become the resource ``scheduler``
    (EventBridge Scheduler, the scheduler plugin's type), their problems
    located in those sections."""
    if not config.schedules and not config.schedule_groups:
        return []
    if SCHEDULER_RESOURCE in config.resources:
        return [
            config.at(
                ("resources", SCHEDULER_RESOURCE),
                f"resources.{SCHEDULER_RESOURCE}: the name is taken by the schedules section",
            )
        ]
    config.resources[SCHEDULER_RESOURCE] = {
        "type": "scheduler",
        "schedules": config.schedules,
        "schedule_groups": {name: body or {} for name, body in config.schedule_groups.items()},
    }
    config.section_paths[SCHEDULER_RESOURCE] = ()  # its settings are the sections themselves
    for path, position in list(config.positions.items()):
        if path[:1] in (("schedules",), ("schedule_groups",)):
            config.positions[("resources", SCHEDULER_RESOURCE, *path)] = position
    return []


def _section_resources(config: PipelineConfig) -> list[Problem]:
    """Each entry of a ``RESOURCE_SECTIONS`` section becomes a resource of
    the section's type; a name some other declaration took is a problem at
    the entry, naming where the other is."""
    problems = []
    #: Each name taken: the section that declares it.
    taken: dict[str, str] = dict.fromkeys(config.resources, "resources")
    for section, type_name in RESOURCE_SECTIONS.items():
        declared: dict[str, dict[str, Any]] = getattr(config, section)
        for name, body in declared.items():
            path: Path_ = (section, name)
            if name in taken:
                first = config.at((taken[name], name), "")
                problems.append(
                    config.at(
                        path,
                        f"{label(path)}: a {_singular(taken[name])} of this name is declared at"
                        f" {first.file}:{first.line}:{first.column}",
                    )
                )
            elif "type" in body:
                problems.append(
                    config.at(
                        (*path, "type"),
                        f"{label(path)}.type: a {_singular(section)} has none"
                        f" (the section makes it a {type_name})",
                    )
                )
            else:
                config.resources[name] = {**body, "type": type_name}
                taken[name] = section
    return problems


def _singular(section: str) -> str:
    """``state_machines`` -> ``state machine``: one entry of a section, in a message."""
    return section.removesuffix("s").replace("_", " ")


def resource_path(config: PipelineConfig, name: str) -> Path_:
    """Where the resource ``name`` is declared: under ``resources``, a
    ``RESOURCE_SECTIONS`` section (``pipes``, ``state_machines``), or as a
    top-level section (``schemas``; ``schedules`` and ``schedule_groups``)."""
    for section in RESOURCE_SECTIONS:
        if name in getattr(config, section):
            return (section, name)
    return config.section_paths.get(name, ("resources", name))


def start_problems(config: PipelineConfig, exc: ConfigError) -> list[Problem] | None:
    """A declared resource's refusal to start (``resource NAME`` and a path in
    its settings: a requirement naming a schema the registry lacks) as
    problems placed where the file writes that setting; None when the error
    is about anything else."""
    name = exc.subject.removeprefix("resource ")
    if name == exc.subject or name not in config.resources:
        return None
    return config.problems_of(resource_path(config, name), exc)


# -- building ---------------------------------------------------------------


def _tokens(suffix: str) -> Iterator[str | int]:
    """``.retry_policy.maximum_retry_attempts`` / ``[1].id`` -> path tokens."""
    for match in re.finditer(r"\.([^.\[]+)|\[(\d+)\]", suffix):
        yield match.group(1) if match.group(1) is not None else int(match.group(2))


#: ``("rules", "r", "targets", 0, "id")`` -> ``rules.r.targets[0].id``.
label = path_label


def _problems(config: PipelineConfig, base: Path_, exc: Exception) -> list[Problem]:
    """Locate a runtime check's errors under ``base``, the node it checked."""
    if isinstance(exc, PatternError):
        tokens = list(_tokens(exc.path[1:]))  # "$.detail.a[0]" -> detail, a, 0
        return [config.at((*base, *tokens), f"{label(base)}: {exc}")]
    if isinstance(exc, ConfigError):
        return config.problems_of(base, exc)
    return [config.at(base, str(exc))]


async def build_runtime(
    config: PipelineConfig,
    *,
    clock: Clock | None = None,
    state_path: str | Path | bool | None = True,
    **options: Any,
) -> Runtime:
    """A ``Runtime`` with the config's resources, buses and rules (not started).

    ``state_path=True`` uses the config's ``state``; pass a path or None to
    override it (tests). Raises ``ConfigInvalid`` listing every problem.

    A function target's ``module:function`` is looked up beside the config
    while this builds (``sys.path`` is put back after); starting the runtime
    imports it, so a caller that starts it outside a runner (``run_pipeline``,
    ``pipelines test``) puts the config's directory on its path itself.
    """
    state = config.state if state_path is True else state_path
    options.setdefault("durability", config.durability)
    options.setdefault("account", config.account)
    runtime = Runtime(state_path=state or None, clock=clock, **options)
    runtime.cluster_group = config.cluster_group
    with tuned_process([config.directory], switch_interval=None):
        problems = _add_resources(runtime, config)
    for bus in config.buses:
        try:
            runtime.create_bus(bus, account=config.bus_accounts.get(bus))
        except ConfigError as exc:
            problems.append(config.at(("buses",), str(exc)))
    problems += _resource_references(runtime, config)  # (check_links sees the buses)
    if DEFAULT_BUS in config.bus_accounts:
        problems.append(
            config.at(
                ("buses", DEFAULT_BUS, "account"),
                "buses.default.account: the default bus is the config's account's (set account)",
            )
        )
    apply_bus_policies(runtime, config)
    for name, declared in config.rules.items():
        problems += await _add_rule(runtime, config, str(name), declared)
    for name, declared in config.archives.items():
        problems += await _add_archive(runtime, config, str(name), declared)
    problems += await add_alarms(runtime, config, config.alarms)
    if config.archives and config.state is None:
        problems.append(
            config.at(("state",), "archives keep their events in the state database: set state")
        )
    if problems:
        raise ConfigInvalid(problems)
    return runtime


def resource_settings(
    runtime: Runtime, directory: Path, declared: Mapping[str, Any]
) -> dict[str, Any]:
    """A declared resource's settings for its type: its ``type`` left out, and
    each setting its type names a file (``TargetType.file_settings``) that is
    relative made relative to the config's ``directory``."""
    settings = {k: v for k, v in declared.items() if k != "type"}
    target_type = runtime.target_types.get(str(declared.get("type")))
    for key in getattr(target_type, "file_settings", ()):
        value = settings.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            settings[key] = str(directory / value)
    return settings


def _add_resources(runtime: Runtime, config: PipelineConfig) -> list[Problem]:
    problems: list[Problem] = []
    for name, declared in config.resources.items():
        path = resource_path(config, name)
        settings = resource_settings(runtime, config.directory, declared)
        type_name = declared.get("type")
        if not isinstance(type_name, str):
            problems.append(
                config.at(path, f"resources.{name}: 'type' is required (a target type)")
            )
            continue
        try:
            runtime.add_resource(name, type_name, settings)
        except ConfigError as exc:
            problems += _problems(config, path, exc)
    return problems


async def _add_archive(
    runtime: Runtime, config: PipelineConfig, name: str, declared: dict[str, Any]
) -> list[Problem]:
    path: Path_ = ("archives", name)
    try:
        await runtime.archives.create_archive(name, declared)
    except PatternError as exc:
        return _problems(config, (*path, "pattern"), exc)
    except ConfigError as exc:
        return _problems(config, path, exc)
    except ResourceNotFoundError:
        return [_no_bus(config, path, declared.get("bus"))]
    return []


async def add_alarms(
    runtime: Runtime, config: PipelineConfig, declared: Mapping[str, dict[str, Any]]
) -> list[Problem]:
    """Put the declared alarms: metric alarms, then each composite alarm once
    the alarms its rule names are in (whatever their order in the file)."""
    problems: list[Problem] = []
    waiting: dict[str, dict[str, Any]] = {}
    failed: set[str] = set()  # a composite over one of these says nothing more
    for name, body in declared.items():
        if "rule" in body:
            waiting[str(name)] = body
            continue
        found = await _add_alarm(runtime, config, str(name), body)
        problems += found
        failed.update([str(name)] if found else [])
    while waiting:
        ready = [
            name for name, body in waiting.items() if not _children(body) & set(waiting) - {name}
        ]
        if not ready:  # none can go first: a loop, said of each alarm on it
            cycle = _alarm_loop(waiting)
            for name in cycle[:-1]:
                waiting.pop(name)
                failed.add(name)
                problems.append(
                    config.at(
                        ("alarms", name, "rule"),
                        f"alarms.{name}.rule: composite alarms refer to each other in a loop:"
                        f" {' -> '.join(cycle)}",
                    )
                )
            continue
        for name in ready:
            body = waiting.pop(name)
            if _children(body) & failed:
                failed.add(name)  # its own problems only: not that a child is missing
                problems += _check_alone(runtime, config, name, body, set(declared))
                continue
            found = await _add_alarm(runtime, config, name, body)
            problems += found
            failed.update([name] if found else [])
    return problems


def _alarm_loop(waiting: Mapping[str, Any]) -> list[str]:
    """A loop among ``waiting`` composite alarms, each of which names another
    of them: its names, the first again at the end."""
    path = [next(iter(waiting))]
    while True:
        following = sorted(_children(waiting[path[-1]]) & set(waiting))[0]
        if following in path:
            return [*path[path.index(following) :], following]
        path.append(following)


def _check_alone(
    runtime: Runtime,
    config: PipelineConfig,
    name: str,
    declared: dict[str, Any],
    names: set[str],
) -> list[Problem]:
    """The problems of a composite alarm over an alarm that failed, short of
    putting it: its settings, its actions' resources, children never declared."""
    path: Path_ = ("alarms", name)
    absent = sorted(_children(declared) - names - set(runtime.alarms.names()))
    if absent:
        return [
            config.at((*path, "rule"), f"{label(path)}.rule: no alarm named {absent[0]!r} exists")
        ]
    try:
        runtime.alarms.check_resources(parse_alarm(name, declared))
    except (ConfigError, ResourceNotFoundError) as exc:
        return _alarm_problems(runtime, config, name, declared, exc)
    return []


def _children(body: Mapping[str, Any]) -> set[str]:
    rule = body.get("rule")
    if not isinstance(rule, str):  # not a rule: the alarm's own check says so
        return set()
    try:
        return set(parse_alarm_rule(rule).names)
    except AlarmRuleError:
        return set()


async def _add_alarm(
    runtime: Runtime, config: PipelineConfig, name: str, declared: dict[str, Any]
) -> list[Problem]:
    try:
        await runtime.alarms.put_declared(name, declared)
    except (ConfigError, ResourceNotFoundError) as exc:
        return _alarm_problems(runtime, config, name, declared, exc)
    return []


def _alarm_problems(
    runtime: Runtime,
    config: PipelineConfig,
    name: str,
    declared: Mapping[str, Any],
    exc: ConfigError | ResourceNotFoundError,
) -> list[Problem]:
    """Where an alarm's error belongs: the setting, its bus, or its actions
    (what is missing when its bus is there)."""
    path: Path_ = ("alarms", name)
    if isinstance(exc, ConfigError):
        return _problems(config, path, exc)
    bus = declared.get("bus", DEFAULT_BUS)
    if bus not in {known.name for known in runtime.buses()}:
        return [_no_bus(config, path, bus)]
    return [config.at((*path, "actions"), f"{label(path)}.actions: {exc}")]


def _no_bus(config: PipelineConfig, path: Path_, bus: Any) -> Problem:
    """A rule or archive declared on a bus the config does not declare."""
    return config.at((*path, "bus"), f"{label(path)}.bus: no bus {bus!r} (declare it under buses)")


def rule_bus(declared: Mapping[str, Any]) -> Any:
    """The bus a declared rule is on: ``default`` unless it names one."""
    return declared.get("bus", DEFAULT_BUS)


def put_declared_rule(bus: Bus, name: str, declared: Mapping[str, Any]) -> None:
    """PutRule from a rule's declaration (its targets are put separately)."""
    bus.put_rule(
        name,
        pattern=declared.get("pattern"),
        schedule=declared.get("schedule"),
        state=declared.get("state", "ENABLED"),
        description=declared.get("description", ""),
    )


async def _add_rule(
    runtime: Runtime, config: PipelineConfig, name: str, declared: dict[str, Any]
) -> list[Problem]:
    """Put a rule and its targets, reporting every problem of the rule and of
    each target (a bad pattern does not hide a target's unknown resource)."""
    path: Path_ = ("rules", name)
    problems: list[Problem] = []
    try:
        check_keys(Where(f"rules.{name}"), declared, RULE_KEYS)
    except ConfigError as exc:
        problems += _problems(config, path, exc)
    bus_name = rule_bus(declared)
    bus: Bus | None = None
    if not isinstance(bus_name, str):  # a list is no name (nor a dict key)
        problems.append(config.at((*path, "bus"), f"{label(path)}.bus: a bus name"))
    else:
        try:
            bus = runtime.bus(bus_name)
        except ResourceNotFoundError:
            problems.append(_no_bus(config, path, bus_name))
    # A misspelt pattern or schedule is reported as an unknown key: that the
    # rule then has neither would be the same problem again.
    misspelt = problems and "pattern" not in declared and "schedule" not in declared
    put = False
    if bus is not None and not misspelt:
        try:
            put_declared_rule(bus, name, declared)
            put = True
        except (ConfigError, PatternError) as exc:
            base = (*path, "pattern") if isinstance(exc, PatternError) else path
            problems += _problems(config, base, exc)
    targets = declared.get("targets") or []
    if not isinstance(targets, list):
        return [
            *problems,
            config.at((*path, "targets"), f"rules.{name}.targets: a list of targets"),
        ]
    seen: set[str] = set()
    for index, target in enumerate(targets):
        target_id = target.get("id") if isinstance(target, dict) else None
        # Only a string is an id (the target's own check says so of a list).
        if isinstance(target_id, str) and target_id in seen:
            problems.append(
                config.at(
                    (*path, "targets", index, "id"),
                    f"rules.{name}.targets[{index}].id: {target_id!r} is given twice",
                )
            )
            continue
        if isinstance(target_id, str):
            seen.add(target_id)
        found, ready = _target_problems(runtime, config, (*path, "targets", index), target)
        problems += found
        if put and bus is not None and ready:
            try:
                await bus.put_targets(name, [target])
            except ConfigError as exc:
                problems += _problems(config, (*path, "targets", index), exc)
    return problems


def _target_problems(
    runtime: Runtime, config: PipelineConfig, where: Path_, target: Any
) -> tuple[list[Problem], bool]:
    """A rule target's own problems, checked without a rule to put it in (its
    settings, the resources it names), and whether it can be put: not when
    a resource it names is declared but invalid either (that resource's own
    problem says why)."""
    problems: list[Problem] = []
    try:
        RuleTarget.parse(Where(label(where)), target)
    except ConfigError as exc:
        problems += _problems(config, where, exc)
    references = _references(runtime, config, where, target)
    return problems + (references or []), not problems and references is None


def _resource_references(runtime: Runtime, config: PipelineConfig) -> list[Problem]:
    """Resources named in other resources' settings (destinations, subscriptions)."""
    problems = []
    built = set(runtime.resource_names())
    for name in built:
        resource = runtime.resource(name)
        unknown = [
            _unknown_resource(config, (*resource_path(config, name), *where), referenced)
            for where, referenced in resource.references()
            if referenced not in config.resources
        ]
        problems += unknown
        if unknown or any(named not in built for _, named in resource.references()):
            continue  # (a named resource with problems of its own: those say why)
        try:
            resource.check_links(runtime)
        except ConfigError as exc:
            problems += _problems(config, resource_path(config, name), exc)
    return problems


def _unknown_resource(config: PipelineConfig, path: Path_, name: str) -> Problem:
    path = config.written(path)
    hint = did_you_mean(name, config.resources)
    known = ", ".join(sorted(config.resources)) or "none declared"
    return config.at(path, f"{label(path)}: no resource named {name!r} (resources: {known}){hint}")


def _references(
    runtime: Runtime, config: PipelineConfig, where: Path_, target: Any
) -> list[Problem] | None:
    """Problems with a target's resource names, or None when they all exist.

    A name declared but invalid is not reported again here (its own problem
    is), but the target is skipped."""
    if not isinstance(target, dict):
        return None
    problems: list[Problem] = []
    skip = False
    for key in ("resource", "dead_letter"):
        name = target.get(key)
        if not isinstance(name, str):
            continue
        if name not in config.resources:
            problems.append(_unknown_resource(config, (*where, key), name))
        elif name not in runtime.resource_names():
            skip = True
    return problems if problems or skip else None


async def check(
    paths: list[str | Path], *, environ: Mapping[str, str] | None = None
) -> list[Problem]:
    """Every problem of a pipeline config (what ``pipelines validate`` prints)."""
    try:
        config = load_config(paths, environ=environ)
        await build_runtime(config, state_path=None)
    except ConfigInvalid as exc:
        return exc.problems
    return []
