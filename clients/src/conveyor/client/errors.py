"""Domain exceptions raised by the client instead of raw `grpc.RpcError`s.

The daemon sends the gRPC rich error model: a `google.rpc.Status` in the
`grpc-status-details-bin` trailer with `BadRequest` field violations and
`RetryInfo`. The client reads them when `googleapis-common-protos` is
installed (it is not a dependency of the client); without it, errors carry
the status message only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """A request field the daemon rejected, and why."""

    field: str
    description: str


class ConveyorError(Exception):
    """A call to the daemon failed; `code_name` is the gRPC status code name.

    `field_violations` lists the request fields at fault and `retry_after`
    the delay (seconds) the daemon suggests before retrying, when it sent
    them.
    """

    def __init__(
        self,
        code_name: str,
        details: str,
        *,
        field_violations: tuple[FieldViolation, ...] = (),
        retry_after: float | None = None,
    ) -> None:
        self.code_name = code_name
        self.details = details
        self.field_violations = field_violations
        self.retry_after = retry_after
        super().__init__(self.message)

    @property
    def message(self) -> str:
        if self.code_name in _PASS_THROUGH and self.details:
            text = self.details
        else:
            readable = self.code_name.lower().replace("_", " ")
            text = f"{readable}: {self.details}" if self.details else readable
        for violation in self.field_violations:
            if violation.description and violation.description not in text:
                text += f"\n  {violation.field}: {violation.description}"
        if self.retry_after is not None and "retry" not in text:
            text += f" (retry in {self.retry_after:g}s)"
        return text

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


def _status_details(exc: grpc.RpcError) -> tuple[tuple[FieldViolation, ...], float | None]:
    """The field violations and retry delay of a rich error status, if any
    (and if `googleapis-common-protos` is installed to decode them)."""
    trailing = getattr(exc, "trailing_metadata", None)
    metadata: Any = trailing() if callable(trailing) else None
    blob = next((value for key, value in metadata or () if key == _DETAILS_KEY), None)
    if not isinstance(blob, bytes):
        return (), None
    try:
        from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
    except ImportError:
        return (), None
    try:
        status = status_pb2.Status.FromString(blob)
    except Exception:  # a malformed trailer is not worth failing over
        return (), None
    violations: list[FieldViolation] = []
    retry_after: float | None = None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            retry_after = info.retry_delay.ToNanoseconds() / 1e9
    return tuple(violations), retry_after


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
    violations, retry_after = _status_details(exc)
    return ConveyorError(name, str(details), field_violations=violations, retry_after=retry_after)
