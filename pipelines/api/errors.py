"""The errors the endpoint answers with, in AWS's codes.

An operation raises ``ApiError`` with the code AWS gives (the code names an
error shape of the service's model where one exists); the project's own
exceptions are translated here, so a service handler calling the library
need not catch them. Nothing reaches a client as a bare 500.
"""

from __future__ import annotations

from pipelines.errors import (
    CodedError,
    ConfigError,
    EventValidationError,
    NotRunningError,
    PatternError,
    ResourceNotFoundError,
)


class ApiError(Exception):
    """A request AWS would refuse: its error ``code``, ``message`` and HTTP ``status``.

    ``sender_fault`` is the query protocol's ``Type`` (Sender or Receiver).
    """

    def __init__(
        self, code: str, message: str, status: int = 400, *, sender_fault: bool = True
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.sender_fault = sender_fault


def validation(message: str) -> ApiError:
    return ApiError("ValidationException", message)


def not_implemented(service: str, operation: str) -> ApiError:
    return ApiError(
        "NotImplemented",
        f"{operation} of {service} is not implemented by pipelines (see docs/api.md for"
        " the operations it serves)",
        501,
        sender_fault=False,
    )


def translate(error: Exception) -> ApiError | None:
    """The AWS error for one of the library's exceptions, or None (a bug: 500)."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, PatternError):
        return ApiError("InvalidEventPatternException", str(error))
    if isinstance(error, CodedError):
        return ApiError(error.code, error.message)
    if isinstance(error, ResourceNotFoundError):
        return ApiError("ResourceNotFoundException", str(error))
    if isinstance(error, EventValidationError):
        return ApiError("ValidationException", error.message)
    if isinstance(error, ConfigError):
        return ApiError("ValidationException", str(error))
    if isinstance(error, NotRunningError):
        return ApiError(
            "ServiceUnavailable", "the pipeline is not running", 503, sender_fault=False
        )
    return None
