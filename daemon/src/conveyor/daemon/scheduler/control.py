"""The handle the scheduler keeps on each queued or running run."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from conveyor.daemon.records import RunStatus


@dataclass
class RunControl:
    run_id: str
    group: str
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    finished: trio.Event = field(default_factory=trio.Event)
    #: Set once the run left the queue.
    started: bool = False
    #: Why the run is being stopped, and what to record it as.
    cancel_reason: str = ""
    cancel_status: RunStatus | None = None

    def cancel(self, reason: str, status: RunStatus = RunStatus.CANCELLED) -> None:
        if self.cancel_status is None:
            self.cancel_status = status
            self.cancel_reason = reason
        self.cancel_scope.cancel()


def is_cancellation(exc: BaseException) -> bool:
    """True for ``trio.Cancelled``, bare or grouped by nurseries (and nothing else)."""
    if isinstance(exc, trio.Cancelled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(is_cancellation(inner) for inner in exc.exceptions)
    return False
