"""Domain errors. The API layer maps each to a gRPC status code.

An error may name the request ``field`` it is about; the API then attaches a
``google.rpc.BadRequest`` field violation to the status, so clients in any
language can point at the field without parsing the message.
"""

from __future__ import annotations


class ConveyorError(Exception):
    """Base of the errors a user can act on.

    ``field`` names the request field at fault ("reason", "pipeline_path"),
    or is empty when the error is not about one field.
    """

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class InvalidArgument(ConveyorError):
    """The request or input is malformed (gRPC INVALID_ARGUMENT)."""


class NotFound(ConveyorError):
    """A run, stage, repository or ref does not exist (gRPC NOT_FOUND)."""


class FailedPrecondition(ConveyorError):
    """The operation does not fit the current state (gRPC FAILED_PRECONDITION)."""


class OutOfRange(ConveyorError):
    """A position past the end of something finished, e.g. a log offset (gRPC OUT_OF_RANGE)."""


class ResourceExhausted(ConveyorError):
    """A limit of the daemon is reached; retrying later may work (gRPC RESOURCE_EXHAUSTED).

    ``retry_after`` is the suggested delay in seconds, sent as ``google.rpc.RetryInfo``.
    """

    def __init__(self, message: str, *, retry_after: float = 1.0, field: str = "") -> None:
        super().__init__(message, field=field)
        self.retry_after = retry_after


class Unavailable(ConveyorError):
    """The daemon is shutting down (gRPC UNAVAILABLE)."""


class Unauthenticated(ConveyorError):
    """The caller could not be authenticated: no credentials, or a token that
    is unknown, malformed, expired or revoked (gRPC UNAUTHENTICATED).

    ``token_id`` names the token presented, when it is a known one (for the
    audit record).
    """

    def __init__(self, message: str, *, token_id: str = "") -> None:
        super().__init__(message)
        self.token_id = token_id


class PermissionDenied(ConveyorError):
    """The caller is known but its roles do not allow the call, or not on
    this target (another's run, a repository outside its folders)
    (gRPC PERMISSION_DENIED)."""
