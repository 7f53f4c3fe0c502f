"""Domain exceptions raised by the client instead of raw `grpc.RpcError`s."""

from __future__ import annotations

import grpc

# Status codes whose details the daemon writes for humans: shown as they are.
_PASS_THROUGH = frozenset(
    {
        "NOT_FOUND",
        "INVALID_ARGUMENT",
        "FAILED_PRECONDITION",
        "ALREADY_EXISTS",
        "OUT_OF_RANGE",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "ABORTED",
    }
)


class ConveyorError(Exception):
    """A call to the daemon failed; `code_name` is the gRPC status code name."""

    def __init__(self, code_name: str, details: str) -> None:
        self.code_name = code_name
        self.details = details
        super().__init__(self.message)

    @property
    def message(self) -> str:
        if self.code_name in _PASS_THROUGH and self.details:
            return self.details
        readable = self.code_name.lower().replace("_", " ")
        return f"{readable}: {self.details}" if self.details else readable

    def __str__(self) -> str:
        return self.message


class DaemonUnavailable(ConveyorError):
    """The daemon cannot be reached at `address` (not running, wrong address...)."""

    def __init__(self, address: str, details: str = "") -> None:
        self.address = address
        super().__init__("UNAVAILABLE", details)

    @property
    def message(self) -> str:
        return (
            f"cannot reach the Conveyor daemon at {self.address}: is conveyord running?"
            " (set CONVEYOR_ADDRESS or --address)"
        )


class CommandError(Exception):
    """A CLI command failed before or without talking to the daemon."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        self.exit_code = exit_code
        super().__init__(message)


def translate_rpc_error(exc: grpc.RpcError, address: str) -> ConveyorError:
    """The domain exception for a failed call."""
    # Raised errors are `grpc.Call`s; be lenient with anything else.
    code_fn = getattr(exc, "code", None)
    details_fn = getattr(exc, "details", None)
    code = code_fn() if callable(code_fn) else None
    details = (details_fn() if callable(details_fn) else None) or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        return DaemonUnavailable(address, str(details))
    name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    return ConveyorError(name, str(details))
