"""Every exception pipelines raises on purpose, in one place.

Each carries a message a user can act on: what is wrong and where (a JSON path
in a pattern, the entry index in a batch, a file:line:column in a config).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'pattern'?"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(word, sorted(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_setting(key: str, allowed: Iterable[str]) -> str:
    """The message for a misspelt or unsupported key, listing what is allowed."""
    allowed = sorted(allowed)
    return f"unknown setting (allowed: {', '.join(allowed)}){did_you_mean(key, allowed)}"


class PipelinesError(Exception):
    """Base class of all errors raised by pipelines."""


class PatternError(PipelinesError, ValueError):
    """An event pattern is invalid.

    ``reason`` is worded as AWS's ``InvalidEventPatternException`` words it
    (for example "Empty arrays are not allowed"); ``path`` is the JSON path of
    the offending part of the pattern (``$`` for the whole pattern).
    """

    def __init__(self, reason: str, path: str = "$") -> None:
        self.reason = reason
        self.path = path
        super().__init__(f"Event pattern is not valid. Reason: {reason} (at {path})")


class EventValidationError(PipelinesError, ValueError):
    """An event or a PutEvents entry is invalid.

    ``code`` is the PutEvents error code (``InvalidArgument``,
    ``MalformedDetail``, ...); ``index`` is the entry's position in its batch
    when there is one.
    """

    def __init__(self, code: str, message: str, index: int | None = None) -> None:
        self.code = code
        self.message = message
        self.index = index
        where = f"entry {index}: " if index is not None else ""
        super().__init__(f"{where}{code}: {message}")


#: Where a value is within the node being checked: keys and list indexes,
#: ``("retry_policy", "maximum_event_age")`` or ``("subscriptions", 0, "id")``.
Path = tuple[str | int, ...]


def path_label(path: Path) -> str:
    """``("targets", 0, "id")`` -> ``targets[0].id``: a path as people write it."""
    text = ""
    for token in path:
        text += f"[{token}]" if isinstance(token, int) else f".{token}" if text else token
    return text


@dataclass(frozen=True, slots=True)
class Where:
    """What a check is about: ``subject`` names the node for people ("target
    orders", "bus default rule r"), ``path`` leads from it to the value.

    ``where / "timeout"`` is the place of a setting of it. Only ``str()``
    turns it into text ("target orders.timeout"), for messages that stand
    alone; a config locates the path at its YAML node instead.
    """

    subject: str
    path: Path = ()

    @classmethod
    def of(cls, where: Where | str) -> Where:
        """A place given as text (by a caller written before paths) is a subject."""
        return where if isinstance(where, Where) else cls(where)

    def __truediv__(self, key: str | int) -> Where:
        return Where(self.subject, (*self.path, key))

    def __str__(self) -> str:
        label = path_label(self.path)
        if not label:
            return self.subject
        return f"{self.subject}{label}" if label.startswith("[") else f"{self.subject}.{label}"


class ConfigError(PipelinesError, ValueError):
    """A configuration value is invalid.

    ``path`` locates it within the node that was checked (``("timeout",)`` for
    a target's setting); ``subject`` names that node for messages that stand
    alone, as ``where`` ("target orders.timeout"). A caller that knows where
    the node sits adds its own path in front with ``prefixed``.

    A plain string for ``where`` is a subject with an empty path (what a
    plugin written before paths gives).
    """

    def __init__(self, where: Where | str, message: str) -> None:
        self.location = Where.of(where)
        self.message = message
        super().__init__(f"{self.location}: {message}")

    @property
    def subject(self) -> str:
        return self.location.subject

    @property
    def path(self) -> Path:
        return self.location.path

    @property
    def where(self) -> str:
        return str(self.location)

    @property
    def errors(self) -> tuple[ConfigError, ...]:
        """Each problem it reports: itself (``ConfigErrors`` holds several)."""
        return (self,)

    def prefixed(self, path: Path) -> ConfigError:
        """The same problem, its path below ``path`` (the node's place in a larger one)."""
        return ConfigError(Where(self.subject, (*path, *self.path)), self.message)


class ConfigErrors(ConfigError):
    """Several problems found in one node, each its own ``ConfigError`` in
    ``errors``, in the order they were checked. As a ``ConfigError`` it is
    the first of them; its text lists them all, one a line."""

    def __init__(self, errors: Iterable[ConfigError]) -> None:
        self._errors = tuple(one for error in errors for one in error.errors)
        if not self._errors:
            raise ValueError("ConfigErrors needs at least one error")
        first = self._errors[0]
        super().__init__(first.location, first.message)
        self.args = ("\n".join(str(error) for error in self._errors),)

    @property
    def errors(self) -> tuple[ConfigError, ...]:
        return self._errors

    def prefixed(self, path: Path) -> ConfigError:
        return ConfigErrors(error.prefixed(path) for error in self._errors)


class Problems:
    """Collects the ``ConfigError``s of one node's checks, so that one bad
    setting does not hide the next: run each check in ``with problems:``,
    then ``raise_any()`` once every setting has been looked at.

    A value a failed check should have produced is left unset; nothing may
    use it before ``raise_any()`` (which raises when a check failed).
    """

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def __enter__(self) -> Problems:
        return self

    def __exit__(self, kind: object, exc: BaseException | None, traceback: object) -> bool:
        if isinstance(exc, ConfigError):
            self.errors.extend(exc.errors)
            return True  # recorded: go on with the next check
        return False

    def add(self, error: ConfigError) -> None:
        self.errors.extend(error.errors)

    def raise_any(self) -> None:
        """Raise what was found: the error itself when there is one."""
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise ConfigErrors(self.errors)


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem in a config file, at a 1-based line and column."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class ConfigInvalid(PipelinesError):
    """A pipeline config has problems; ``problems`` lists every one, in order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.column))
        super().__init__("\n".join(map(str, self.problems)))


class PluginError(PipelinesError):
    """A plugin could not be loaded or registered something invalid."""


class DeliveryError(PipelinesError):
    """Delivering a payload to a target failed.

    ``retryable`` says whether the retry policy applies (a timeout, a broker
    that is down) or the event goes straight to the dead-letter target (a
    payload the target can never accept). ``code`` is a short name such as
    ``Timeout`` or ``FunctionError``, recorded as the dead letter's ERROR_CODE.
    """

    def __init__(
        self, code: str, message: str, *, retryable: bool, retry_after: float | None = None
    ) -> None:
        self.code = code
        self.message = message
        self.retryable = retryable
        #: Seconds the target asked to wait before the next attempt (an HTTP
        #: ``Retry-After``): the retry waits at least this long; a negative
        #: value ends retrying (EventBridge's rule for API destinations).
        self.retry_after = retry_after
        super().__init__(f"{code}: {message}")


class ResourceNotFoundError(PipelinesError, LookupError):
    """A bus, rule, target or resource named in a call does not exist."""


class NotRunningError(PipelinesError):
    """The runtime is not running (not started yet, or stopping): it accepts no events."""


class ControlError(PipelinesError):
    """The control channel of a running pipeline cannot be used: none is
    running, the socket is taken, or the request was refused."""


class StateError(PipelinesError):
    """The state database cannot be opened or written (unreadable, not a
    database, no space, a directory that cannot be created)."""


class CodedError(PipelinesError):
    """A request an AWS API would refuse: its error ``code`` and ``message``,
    shown as "code: message"."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class QueueError(CodedError):
    """A queue or topic request SQS or SNS would refuse, with their error ``code``
    (``QueueDoesNotExist``, ``ReceiptHandleIsInvalid``, ``InvalidParameterValue``...)."""


class StreamError(CodedError):
    """A stream request Kinesis would refuse, with its error ``code``
    (``ResourceNotFoundException``, ``InvalidArgumentException``,
    ``ExpiredIteratorException``, ``ProvisionedThroughputExceededException``...)."""


class ReplayError(CodedError):
    """A replay request EventBridge would refuse, with its error ``code``
    (``ResourceAlreadyExistsException``, ``IllegalStatusException``,
    ``ValidationException``)."""


class MetricError(CodedError, ValueError):
    """A metric or alarm request CloudWatch would refuse, with its error ``code``
    (``InvalidParameterValue``, ``InvalidParameterCombination``,
    ``MissingParameter``, ``ResourceNotFound``, ``LimitExceeded``)."""


class AlarmRuleError(MetricError):
    """A composite alarm's rule expression is invalid; ``position`` is the
    0-based character offset of the problem in ``rule``."""

    def __init__(self, message: str, rule: str, position: int) -> None:
        self.rule = rule
        self.position = position
        pointer = f"\n  {rule}\n  {' ' * position}^"
        super().__init__(
            "InvalidParameterValue", f"AlarmRule: {message} at position {position}{pointer}"
        )


class LogsError(CodedError, ValueError):
    """A log group request CloudWatch Logs would refuse, with its error ``code``
    (``ResourceNotFoundException``, ``ResourceAlreadyExistsException``,
    ``InvalidParameterException``, ``LimitExceededException``)."""


class FilterPatternError(LogsError):
    """A filter pattern is invalid; ``position`` is the 0-based character
    offset of the problem in ``pattern``."""

    def __init__(self, message: str, pattern: str, position: int) -> None:
        self.pattern = pattern
        self.position = position
        pointer = f"\n  {pattern}\n  {' ' * position}^"
        super().__init__(
            "InvalidParameterException",
            f"Invalid filter pattern: {message} at position {position}{pointer}",
        )


class QueryError(LogsError):
    """A Logs Insights query is invalid; ``position`` is the 0-based character
    offset of the problem in ``query``."""

    def __init__(self, message: str, query: str, position: int) -> None:
        self.query = query
        self.position = position
        pointer = f"\n  {query}\n  {' ' * position}^"
        super().__init__("MalformedQueryException", f"{message} at position {position}{pointer}")
