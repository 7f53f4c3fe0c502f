"""Domain errors. The API layer maps each to a gRPC status code."""

from __future__ import annotations


class ConveyorError(Exception):
    """Base of the errors a user can act on."""


class InvalidArgument(ConveyorError):
    """The request or input is malformed (gRPC INVALID_ARGUMENT)."""


class NotFound(ConveyorError):
    """A run, stage, repository or ref does not exist (gRPC NOT_FOUND)."""


class FailedPrecondition(ConveyorError):
    """The operation does not fit the current state (gRPC FAILED_PRECONDITION)."""


class Unavailable(ConveyorError):
    """The daemon is shutting down (gRPC UNAVAILABLE)."""
