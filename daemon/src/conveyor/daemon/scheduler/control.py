"""The handle the scheduler keeps on each queued or running run."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from conveyor.daemon.errors import FailedPrecondition
from conveyor.daemon.records import RunStatus


def already_finished(run_id: str, status: RunStatus) -> FailedPrecondition:
    """The answer to cancelling a run whose final status is ``status``."""
    return FailedPrecondition(f"run {run_id} already finished ({status.value}); nothing to cancel")


@dataclass
class RunControl:
    """Cancellation and the final decision of one run.

    Every call happens in the trio thread, and none waits, so a cancel and
    the decision of the final status (:meth:`decide`) are atomic with
    respect to each other: a cancel accepted before the decision makes the
    run end cancelled; one that comes after is refused.
    """

    run_id: str
    group: str
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    finished: trio.Event = field(default_factory=trio.Event)
    #: Set once the run left the queue.
    started: bool = False
    #: Why the run is being stopped, and what to record it as.
    cancel_reason: str = ""
    cancel_status: RunStatus | None = None
    #: The final status and reason, once decided; nothing changes them afterwards.
    final_status: RunStatus | None = None
    final_reason: str = ""

    def cancel(self, reason: str, status: RunStatus = RunStatus.CANCELLED) -> bool:
        """Stop the run, to be recorded as ``status`` with ``reason``.

        Returns False, and changes nothing, when the final status is already
        decided. The first reason wins, except that a cancellation replaces a
        pending interruption (a user's cancel during shutdown).
        """
        if self.final_status is not None:
            return False
        if self.cancel_status is None or (
            status is RunStatus.CANCELLED and self.cancel_status is RunStatus.INTERRUPTED
        ):
            self.cancel_status = status
            self.cancel_reason = reason
        self.cancel_scope.cancel()
        return True

    def decide(self, status: RunStatus, reason: str) -> tuple[RunStatus, str]:
        """Fix the run's final status: ``status``, unless a cancellation was
        accepted first, which then wins (a pending shutdown interruption
        does not: a run that got to the end keeps its result). Returns what
        to record."""
        if self.final_status is None:
            if self.cancel_status is RunStatus.CANCELLED:
                status, reason = self.cancel_status, self.cancel_reason
            self.final_status, self.final_reason = status, reason
        return self.final_status, self.final_reason


def is_cancellation(exc: BaseException) -> bool:
    """True for ``trio.Cancelled``, bare or grouped by nurseries (and nothing else)."""
    if isinstance(exc, trio.Cancelled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(is_cancellation(inner) for inner in exc.exceptions)
    return False
