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


class ConfigError(PipelinesError, ValueError):
    """A configuration value is invalid; ``where`` names it (``target function.timeout``)."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}")


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

    def __init__(self, code: str, message: str, *, retryable: bool) -> None:
        self.code = code
        self.message = message
        self.retryable = retryable
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
